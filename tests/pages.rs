//! The citizen pages through the router: what they answer without a browser (status, security
//! headers, the report form and its spam protection, the OpenAPI entries, the script budgets).

mod common;

use std::io::Write;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::Fixture;
use tower::ServiceExt;

async fn demo() -> Fixture {
    let (dir, store, reference) = common::database(true).await;
    Fixture::serve(dir, store, reference).await
}

async fn first_town_hall(fixture: &Fixture) -> String {
    let (_, _, body) =
        common::get(&fixture.router, "/api/v1/services?q=mairie%20riom&limit=1").await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    json["items"][0]["id"].as_str().unwrap().to_owned()
}

async fn post_form(
    fixture: &Fixture,
    uri: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Option<String>, String) {
    let body = serde_urlencoded::to_string(form).unwrap();
    let response = fixture
        .router
        .clone()
        .oneshot(
            Request::post(uri)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        location,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

async fn headers_of(fixture: &Fixture, uri: &str) -> axum::http::HeaderMap {
    let response = fixture
        .router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.headers().clone()
}

#[tokio::test]
async fn pages_answer_in_both_languages_and_unknown_entries_are_a_page_too() {
    let fixture = demo().await;
    for (uri, needle) in [
        ("/", "Les services publics près de chez vous"),
        ("/?lang=en", "Public services near you"),
        ("/recherche?q=mairie&lieu=63200", "services trouvés"),
        ("/recherche?q=mairie&lieu=Riom&lang=en", "services found"),
        ("/evenements-de-vie", "Je perds un proche"),
        ("/evenements-de-vie/deces?lieu=Riom", "Mairie de Riom"),
        ("/integrer?territoire=epci:200070753", "Riom Limagne"),
    ] {
        let (status, content_type, body) = common::get(&fixture.router, uri).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(
            content_type.starts_with("text/html"),
            "{uri}: {content_type}"
        );
        assert!(body.contains(needle), "{uri} lacks « {needle} »");
    }
    let (status, _, body) = common::get(&fixture.router, "/services/0000000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("Page introuvable"));
    let (status, _, body) = common::get(&fixture.router, "/recherche?theme=licorne").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("thème inconnu « licorne »"));
}

#[tokio::test]
async fn only_the_widget_may_be_framed_by_other_sites() {
    let fixture = demo().await;
    let embed = headers_of(&fixture, "/embed?territory=epci:200070753").await;
    let policy = embed[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(policy.contains("frame-ancestors *"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!embed.contains_key(header::X_FRAME_OPTIONS));
    assert!(!embed.contains_key(header::SET_COOKIE));
    for uri in ["/", "/recherche", "/integrer"] {
        let page = headers_of(&fixture, uri).await;
        let policy = page[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains("frame-ancestors 'self'"), "{uri}: {policy}");
        assert!(policy.contains("default-src 'none'"), "{uri}: {policy}");
        assert_eq!(page[header::X_FRAME_OPTIONS], "SAMEORIGIN");
        assert!(
            !page.contains_key(header::SET_COOKIE),
            "{uri} sets a cookie"
        );
    }
}

/// HTML served by the other routers (OGC pages, « Données SIG », monitoring) carries the same
/// policy as the citizen pages, and every answer `nosniff` (issue 17).
#[tokio::test]
async fn html_outside_the_citizen_pages_has_the_same_policy() {
    let fixture = demo().await;
    for uri in [
        "/ogc?f=html",
        "/ogc/collections?f=html",
        "/donnees-sig",
        "/veille",
        "/veille/departement:63",
    ] {
        let (status, content_type, _) = common::get(&fixture.router, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(
            content_type.starts_with("text/html"),
            "{uri}: {content_type}"
        );
        let page = headers_of(&fixture, uri).await;
        let policy = page[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains("default-src 'none'"), "{uri}: {policy}");
        assert!(policy.contains("frame-ancestors 'self'"), "{uri}: {policy}");
        assert_eq!(page[header::X_FRAME_OPTIONS], "SAMEORIGIN", "{uri}");
        assert_eq!(page[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
        assert_eq!(page[header::REFERRER_POLICY], "no-referrer", "{uri}");
    }
    for uri in ["/api/v1/typologies", "/ogc/collections", "/healthz"] {
        let answer = headers_of(&fixture, uri).await;
        assert_eq!(answer[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
        assert!(
            !answer.contains_key(header::CONTENT_SECURITY_POLICY),
            "{uri}: JSON"
        );
        assert!(
            !answer.contains_key(header::STRICT_TRANSPORT_SECURITY),
            "{uri}: not over https"
        );
    }
    // Reached over https (its public URL), every answer asks browsers to stay on https.
    let https = proximites::app::router(
        fixture
            .state
            .clone()
            .with_public_url("https://annuaire.example.fr"),
    );
    for uri in ["/", "/ogc?f=html", "/api/v1/typologies"] {
        let response = https
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            response.headers()[header::STRICT_TRANSPORT_SECURITY],
            "max-age=31536000",
            "{uri}"
        );
    }
}

#[tokio::test]
async fn a_report_is_kept_for_the_entrys_organisation_and_robots_are_turned_away() {
    let fixture = demo().await;
    let id = first_town_hall(&fixture).await;
    let uri = format!("/services/{id}/signaler");
    let shown_earlier = proximites::reports::unix_now() - 30;
    let token = fixture.state.web.form_token.issue(shown_earlier);

    // A person: some seconds after the form was shown.
    let (status, location, _) = post_form(
        &fixture,
        &uri,
        &[
            ("message", "Le numéro de téléphone a changé"),
            ("email", ""),
            ("jeton", &token),
            ("site", ""),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location.unwrap(),
        format!("/services/{id}?signalement=merci#signaler")
    );
    let (_, _, page) = common::get(
        &fixture.router,
        &format!("/services/{id}?signalement=merci"),
    )
    .await;
    assert!(String::from_utf8_lossy(&page).contains("votre signalement a été transmis"));
    let stored: Vec<(String, String, String)> = proximites::on_engine!(&fixture.state.store, |db| sqlx::query_as(
        "SELECT r.message, r.status, o.name FROM reports r JOIN organisations o ON o.id = r.organisation_id WHERE r.service_id = $1",
    )
    .bind(&id)
    .fetch_all(db).await)
    .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, "Le numéro de téléphone a changé");
    assert_eq!(stored[0].1, "new");
    assert_eq!(stored[0].2, "Annuaire de l'administration (DILA)");

    // A robot: the hidden field filled in, or the form posted the moment it was shown.
    let fresh = fixture
        .state
        .web
        .form_token
        .issue(proximites::reports::unix_now());
    for form in [
        vec![
            ("message", "Buy now!"),
            ("jeton", token.as_str()),
            ("site", "http://spam.example"),
        ],
        vec![
            ("message", "Trop rapide pour être vrai"),
            ("jeton", fresh.as_str()),
            ("site", ""),
        ],
        vec![("message", "Jeton forgé"), ("jeton", "1.00"), ("site", "")],
    ] {
        let (status, _, page) = post_form(&fixture, &uri, &form).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form:?}");
        assert!(page.contains("rechargez la page"), "{form:?}");
    }
    // A person's mistakes, each next to its field, with what was typed kept.
    let (status, _, page) = post_form(
        &fixture,
        &uri,
        &[
            ("message", "x"),
            ("email", "pas-une-adresse"),
            ("jeton", &token),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("id=\"r-message-erreur\""));
    assert!(page.contains("id=\"r-email-erreur\""));
    assert!(page.contains("value=\"pas-une-adresse\""));
    let count: i64 = proximites::on_engine!(&fixture.state.store, |db| sqlx::query_scalar(
        "SELECT COUNT(*) FROM reports"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    assert_eq!(count, 1, "nothing stored from the refused forms");
}

#[tokio::test]
async fn boundaries_are_served_for_the_map_base() {
    let fixture = demo().await;
    let (status, content_type, body) = common::get(
        &fixture.router,
        "/api/v1/boundaries?bbox=3.05,45.85,3.15,45.93",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/geo+json");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let names: Vec<_> = json["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Riom"), "{names:?}");
    let (status, _, _) = common::get(&fixture.router, "/api/v1/boundaries?bbox=3,45").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn every_page_is_in_the_openapi_document() {
    let fixture = demo().await;
    let (_, _, body) = common::get(&fixture.router, "/api/v1/openapi.json").await;
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for path in [
        "/",
        "/recherche",
        "/embed",
        "/services/{id}",
        "/services/{id}/signaler",
        "/evenements-de-vie",
        "/evenements-de-vie/{code}",
        "/integrer",
        "/widget.js",
        "/embed/theme.css",
        "/tuiles/{z}/{x}/{y}",
        "/api/v1/boundaries",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

fn gzipped_size(bytes: &[u8]) -> usize {
    let mut gzip = std::process::Command::new("gzip")
        .arg("-9c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    gzip.stdin.take().unwrap().write_all(bytes).unwrap();
    gzip.wait_with_output().unwrap().stdout.len()
}

#[tokio::test]
async fn the_loader_and_the_widget_script_stay_within_their_budgets() {
    let fixture = demo().await;
    let (status, content_type, loader) = common::get(&fixture.router, "/widget.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/javascript"));
    let loader_gz = gzipped_size(&loader);
    assert!(
        loader_gz <= 2_048,
        "widget.js is {loader_gz} bytes gzipped (budget 2 KB)"
    );
    // The embed page without the map loads app.js only.
    let (_, _, page) = common::get(&fixture.router, "/embed").await;
    let page = String::from_utf8_lossy(&page);
    let scripts: Vec<&str> = page
        .match_indices("<script src=\"")
        .map(|(i, _)| {
            let rest = &page[i + 13..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    assert_eq!(scripts.len(), 1, "{scripts:?}");
    let (_, _, app) = common::get(&fixture.router, &scripts[0].replace("&amp;", "&")).await;
    let app_gz = gzipped_size(&app);
    assert!(
        app_gz <= 30 * 1_024,
        "embed JavaScript is {app_gz} bytes gzipped (budget 30 KB)"
    );
}

#[tokio::test]
async fn base_map_tiles_come_through_the_server_and_are_fetched_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    // A tile source on loopback that counts what it serves.
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let source = axum::Router::new().route(
        "/{z}/{x}/{y}",
        axum::routing::get(
            move |axum::extract::Path((z, x, y)): axum::extract::Path<(u8, u32, String)>| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    (
                        [(header::CONTENT_TYPE, "image/png")],
                        format!("tile {z}/{x}/{y}"),
                    )
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, source).await.unwrap() });

    let (dir, store, reference) = common::database(true).await;
    let state = proximites::app::AppState::build(store, reference, &dir.path().join("text"))
        .await
        .unwrap();
    let proxy = proximites::web::tiles::TileProxy::new(
        &format!("http://{address}/{{z}}/{{x}}/{{y}}.png"),
        "© test",
    )
    .unwrap();
    let router = proximites::app::router(state.with_tiles(proxy));

    for _ in 0..3 {
        let (status, content_type, body) = common::get(&router, "/tuiles/5/16/11.png").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "image/png");
        assert_eq!(body, b"tile 5/16/11.png");
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        1,
        "fetched once, then from the cache"
    );
    let (status, _, _) = common::get(&router, "/tuiles/2/9/0.png").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "outside the world");
    // The map is told to use the proxy, with the source's credit.
    let (_, _, page) = common::get(&router, "/recherche?q=mairie").await;
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains("data-tiles=\"/tuiles/{z}/{x}/{y}\""),
        "{page}"
    );
    assert!(page.contains("data-attribution=\"© test\""));
}

/// Every GET route the OpenAPI document lists (every public endpoint is in it), walked with
/// sample parameters, as JSON and as HTML where it has both: each answer is `nosniff`, and
/// each HTML answer carries the pages' policy — framable by other sites only for the widget.
#[tokio::test]
async fn every_route_of_the_api_document_answers_with_the_security_headers() {
    use utoipa::OpenApi;
    let fixture = demo().await;
    let entry = first_town_hall(&fixture).await;
    let sample = |name: &str| -> String {
        match name {
            "id" | "feature" => entry.clone(),
            "code" => "naissance".into(),
            "territory" => "departement:63".into(),
            "insee" => "63113".into(),
            "collection" => "services".into(),
            "file" => "services.csv".into(),
            "z" | "x" | "y" => "0".into(),
            "name" => "site.css".into(),
            _ => "inconnu".into(),
        }
    };
    let document = proximites::app::ApiDoc::openapi();
    let mut html_pages = 0;
    for (path, item) in &document.paths.paths {
        if item.get.is_none() {
            continue;
        }
        let mut uri = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            uri.push('/');
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => uri.push_str(&sample(name)),
                None => uri.push_str(part),
            }
        }
        if uri.is_empty() {
            uri.push('/');
        }
        for variant in [uri.clone(), format!("{uri}?f=html")] {
            let response = fixture
                .router
                .clone()
                .oneshot(Request::get(&variant).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let headers = response.headers();
            assert_eq!(
                headers
                    .get(header::X_CONTENT_TYPE_OPTIONS)
                    .map(|v| v.to_str().unwrap()),
                Some("nosniff"),
                "{variant}"
            );
            let html = headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.to_str().unwrap().starts_with("text/html"));
            if !html {
                continue;
            }
            html_pages += 1;
            let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(policy.contains("default-src 'none'"), "{variant}: {policy}");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{variant}");
            if variant.starts_with("/embed") {
                assert!(policy.contains("frame-ancestors *"), "{variant}: {policy}");
            } else {
                assert!(
                    policy.contains("frame-ancestors 'self'"),
                    "{variant}: {policy}"
                );
                assert_eq!(headers[header::X_FRAME_OPTIONS], "SAMEORIGIN", "{variant}");
            }
        }
    }
    assert!(html_pages >= 20, "only {html_pages} HTML answers walked");
}
