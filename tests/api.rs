//! The read API through the real router, on a fresh SQLite file holding the Auvergne demo.

use axum::http::StatusCode;
use proximites::app::{self, AppState};
use proximites::boot;
use serde_json::Value;

mod common;

async fn spawn_app() -> (axum::Router, AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = common::new_store(dir.path(), "test.db").await;
    let reference = boot::prepare(&store, true).await.unwrap();
    let state = AppState::build(store, reference, &dir.path().join("text"))
        .await
        .unwrap();
    (app::router(state.clone()), state, dir)
}

async fn get(router: &axum::Router, uri: &str) -> (StatusCode, String, Value) {
    let (status, content_type, body) = common::get(router, uri).await;
    (
        status,
        content_type,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn typologies_follow_the_annex() {
    let (router, _, _dir) = spawn_app().await;
    let (status, _, typologies) = get(&router, "/api/v1/typologies").await;
    assert_eq!(status, StatusCode::OK);
    let typologies = typologies.as_array().unwrap();
    assert_eq!(typologies.len(), 175);
    for (theme, expected) in [
        ("services-publics", 88),
        ("action-sociale-sante", 28),
        ("sports-loisirs", 27),
        ("enseignement-education", 20),
        ("vie-pratique", 12),
    ] {
        let n = typologies
            .iter()
            .filter(|t| t["theme"]["code"] == theme)
            .count();
        assert_eq!(n, expected, "{theme}");
        let (_, _, filtered) = get(&router, &format!("/api/v1/typologies?theme={theme}")).await;
        assert_eq!(filtered.as_array().unwrap().len(), expected);
    }
    let mairie = typologies.iter().find(|t| t["code"] == "mairie").unwrap();
    assert_eq!(
        mairie["published_count"], 1283,
        "every demo town hall is published"
    );

    let (status, _, anpe) = get(&router, "/api/v1/typologies/anpe").await;
    assert_eq!(status, StatusCode::OK);
    assert!(anpe["synonyms"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "France Travail"));

    let (_, _, themes) = get(&router, "/api/v1/themes").await;
    let themes = themes.as_array().unwrap();
    assert_eq!(themes.len(), 5);
    assert_eq!(themes[0]["code"], "services-publics");
    assert_eq!(themes[0]["published_count"], 1283);
}

#[tokio::test]
async fn bad_requests_are_problem_details() {
    let (router, _, _dir) = spawn_app().await;
    for (uri, status, code) in [
        (
            "/api/v1/typologies/boulangerie",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/api/v1/typologies?theme=cuisine",
            StatusCode::BAD_REQUEST,
            "unknown_theme",
        ),
        ("/api/v1/communes/99999", StatusCode::NOT_FOUND, "not_found"),
        (
            "/api/v1/communes/abc",
            StatusCode::BAD_REQUEST,
            "invalid_insee_code",
        ),
        (
            "/api/v1/services/0123456789abcdef",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/api/v1/services/../../etc",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        ("/nulle-part", StatusCode::NOT_FOUND, "not_found"),
    ] {
        let (got, content_type, problem) = get(&router, uri).await;
        assert_eq!(got, status, "{uri}");
        assert_eq!(content_type, "application/problem+json", "{uri}");
        assert_eq!(problem["code"], code, "{uri}");
        assert_eq!(problem["status"], status.as_u16(), "{uri}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn communes_and_entries_read_back() {
    let (router, state, _dir) = spawn_app().await;
    let (status, _, commune) = get(&router, "/api/v1/communes/63113").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(commune["name"], "Clermont-Ferrand");
    assert_eq!(commune["departement"]["name"], "Puy-de-Dôme");
    assert_eq!(commune["epci"]["siren"], "246300701");
    assert_eq!(commune["boundary"]["type"], "Polygon");
    assert_eq!(commune["published_services"], 1);

    let (id,): (String,) = proximites::on_engine!(&state.store, |db| sqlx::query_as(
        "SELECT id FROM services WHERE source_ref = 'mairie-03001'"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    let (status, _, entry) = get(&router, &format!("/api/v1/services/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(entry["name"], "Mairie de Abrest");
    assert_eq!(entry["typology"]["code"], "mairie");
    assert_eq!(entry["commune"]["insee_code"], "03001");
    assert_eq!(entry["address"]["postcode"], "03200");
    assert_eq!(entry["phones"][0]["e164"], "+33470986912");
    assert_eq!(entry["phones"][0]["display"], "04 70 98 69 12");
    assert_eq!(entry["opening_hours"], "Mo-Fr 08:30-12:00,13:30-17:30");
    assert_eq!(
        entry["source"]["name"],
        "Annuaire de l'administration (DILA)"
    );
    assert_eq!(entry["status"], "published");

    proximites::on_engine!(&state.store, |db| sqlx::query(
        "UPDATE services SET status = 'withdrawn' WHERE id = $1"
    )
    .bind(&id)
    .execute(db)
    .await
    .map(|r| r.rows_affected()))
    .unwrap();
    let (status, _, _) = get(&router, &format!("/api/v1/services/{id}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "withdrawn entries are not public"
    );
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document() {
    let (router, _, _dir) = spawn_app().await;
    let (status, _, doc) = get(&router, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/healthz",
        "/api/v1/openapi.json",
        "/api/v1/themes",
        "/api/v1/typologies",
        "/api/v1/typologies/{code}",
        "/api/v1/communes/{insee}",
        "/api/v1/services/{id}",
        "/api/v1/places",
        "/api/v1/services",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
        let concrete = path
            .replace("{code}", "mairie")
            .replace("{insee}", "63113")
            .replace("{id}", "0123456789abcdef");
        let (status, _, _) = get(&router, &concrete).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}

#[tokio::test]
async fn a_second_boot_changes_nothing() {
    let (_, state, _dir) = spawn_app().await;
    boot::prepare(&state.store, true).await.unwrap();
    let (n,): (i64,) = proximites::on_engine!(&state.store, |db| sqlx::query_as(
        "SELECT COUNT(*) FROM services"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    assert_eq!(n, 1283, "the demo is loaded once");
    let (n,): (i64,) = proximites::on_engine!(&state.store, |db| sqlx::query_as(
        "SELECT COUNT(*) FROM typologies"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    assert_eq!(n, 175);
}

#[tokio::test]
async fn published_counts_follow_each_import() {
    let (router, state, _dir) = spawn_app().await;
    let (_, _, before) = get(&router, "/api/v1/typologies/piscine").await;
    assert_eq!(before["published_count"], 0);
    let csv = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description\n\
               p1,piscine,Piscine de Riom,,,,63300,3.1130,45.8937,,,,,,\n";
    let report = proximites::import::import(
        &state.store,
        &state.reference,
        proximites::import::Input::Bytes {
            name: "p.csv".into(),
            bytes: csv.as_bytes().to_vec(),
        },
        proximites::import::ImportOptions::default(),
    )
    .await
    .unwrap();
    assert!(report.committed);
    // The import wrote the change log, as another process would; the server applies it (every
    // 250 ms when serving) and its caches follow.
    state.refresh_search().await.unwrap();
    let (_, _, after) = get(&router, "/api/v1/typologies/piscine").await;
    assert_eq!(
        after["published_count"], 1,
        "the cached counts see the new data version"
    );
}

#[tokio::test]
async fn places_find_communes_by_name_postcode_or_code() {
    let (router, _, _dir) = spawn_app().await;
    let (status, _, places) = get(&router, "/api/v1/places?q=chatel-guyon").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(places[0]["name"], "Châtel-Guyon");
    assert_eq!(places[0]["kind"], "commune");
    assert!(places[0]["point"]["lon"].as_f64().is_some());
    let (_, _, places) = get(&router, "/api/v1/places?q=63200&limit=50").await;
    assert!(places
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "Riom"));
    let (_, _, places) = get(&router, "/api/v1/places?q=RIOM").await;
    assert_eq!(places[0]["insee_code"], "63300");
    let (status, _, problem) = get(&router, "/api/v1/places").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
}

/// A stand-in for the IGN Géoplateforme geocoder on a loopback port: answers `/geocodage/search`
/// in its shape and remembers the query strings it was sent; `/broken/search` fails.
async fn fake_geocoder() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::extract::RawQuery;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new()
        .route(
            "/geocodage/search",
            axum::routing::get(move |RawQuery(query): RawQuery| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(query.unwrap_or_default());
                    axum::Json(serde_json::json!({
                        "type": "FeatureCollection",
                        "features": [
                            {"type": "Feature",
                             "geometry": {"type": "Point", "coordinates": [3.1131, 45.8935]},
                             "properties": {"label": "12 Rue de la République 63200 Riom",
                                 "score": 0.93, "type": "housenumber", "citycode": "63300",
                                 "postcode": "63200", "city": "Riom", "housenumber": "12"}},
                            {"type": "Feature",
                             "geometry": {"type": "Point", "coordinates": [3.1129, 45.8941]},
                             "properties": {"label": "Rue de la République 63200 Riom",
                                 "score": 0.81, "type": "street", "citycode": "63300",
                                 "postcode": "63200", "city": "Riom"}},
                            {"type": "Feature", "geometry": null, "properties": {"label": "sans point"}}
                        ]
                    }))
                }
            }),
        )
        .route(
            "/broken/search",
            axum::routing::get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), seen)
}

#[tokio::test]
async fn addresses_go_through_the_configured_geocoder_only() {
    let (router, mut state, _dir) = spawn_app().await;
    let (status, content_type, problem) =
        get(&router, "/api/v1/geocode?q=12+rue+de+la+republique").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "none configured by default");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["code"], "geocoder_not_configured");
    let (status, _, places) = get(&router, "/api/v1/places?q=riom").await;
    assert_eq!(status, StatusCode::OK, "communes are found offline");
    assert_eq!(places[0]["insee_code"], "63300");

    let (base, seen) = fake_geocoder().await;
    state.geocoder =
        Some(proximites::territory::geocoder::Geocoder::new(&format!("{base}/geocodage")).unwrap());
    let router = app::router(state.clone());
    let (status, _, addresses) = get(
        &router,
        "/api/v1/geocode?q=12%20rue%20de%20la%20R%C3%A9publique%20Riom&limit=3&near=3.11,45.89",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{addresses}");
    let addresses = addresses.as_array().unwrap();
    assert_eq!(
        addresses.len(),
        2,
        "the feature without a point is left out"
    );
    assert_eq!(addresses[0]["label"], "12 Rue de la République 63200 Riom");
    assert_eq!(addresses[0]["kind"], "housenumber");
    assert_eq!(addresses[0]["insee_code"], "63300");
    assert_eq!(addresses[0]["point"]["lon"], 3.1131);
    assert_eq!(addresses[1]["kind"], "street");
    let sent = seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    for part in [
        "q=12+rue+de+la+R%C3%A9publique+Riom",
        "limit=3",
        "index=address",
        "lon=3.11",
        "lat=45.89",
    ] {
        assert!(sent[0].contains(part), "{part} not in {}", sent[0]);
    }

    let (status, _, problem) = get(&router, "/api/v1/geocode?q=ab&limit=99&near=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["q", "limit", "near"]);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "bad input never reaches the geocoder"
    );

    state.geocoder =
        Some(proximites::territory::geocoder::Geocoder::new(&format!("{base}/broken")).unwrap());
    let router = app::router(state.clone());
    let (status, _, problem) = get(&router, "/api/v1/geocode?q=12+rue+de+la+republique").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(problem["code"], "geocoder_unavailable");
}

/// `/readyz` answers 200 while every write older than 2 s is searchable, 503 `not_ready` with
/// `Retry-After` while the indexes lag behind an older one, and 200 again once they apply it
/// (nothing follows the log in this test but the explicit catch-up).
#[tokio::test]
async fn readiness_follows_the_index_lag() {
    let (router, state, _dir) = spawn_app().await;
    let (status, _, ready) = get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["lag"], 0);
    let old = proximites::db::Stamp(chrono::Utc::now() - chrono::Duration::seconds(10));
    proximites::on_engine!(&state.store, |db| sqlx::query(
        "INSERT INTO change_log (entry_id, kind, at) VALUES ('0000000000000000', 'changed', $1)",
    )
    .bind(old)
    .execute(db)
    .await
    .map(|r| r.rows_affected()))
    .unwrap();
    let response = tower::ServiceExt::oneshot(
        router.clone(),
        axum::http::Request::get("/readyz")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "not_ready", "{problem}");
    state.live.catch_up(&state.store).await.unwrap();
    let (status, _, ready) = get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["lag"], 0);
}

/// `/metrics` is Prometheus text that the official Python client (PyPI `prometheus-client`)
/// parses: requests by route template and status with latency histograms, the change log and
/// the indexes' lag, the outbox, imports and the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text() {
    // As `serve` does: installed before the demo's import is counted.
    proximites::metrics::handle();
    let (router, _state, dir) = spawn_app().await;
    for _ in 0..3 {
        get(&router, "/api/v1/typologies/mairie").await;
    }
    get(&router, "/api/v1/typologies/nope").await;
    let (status, content_type, body) = common::get(&router, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = String::from_utf8(body).unwrap();
    for expected in [
        r#"proximites_http_requests_total{route="/api/v1/typologies/{code}",method="GET",status="200"}"#,
        r#"status="404""#,
        "proximites_http_request_duration_seconds_bucket{",
        "proximites_change_log_head ",
        "proximites_index_lag_rows ",
        "proximites_outbox_pending ",
        r#"proximites_db_pool_connections{state="idle"}"#,
        "proximites_db_pool_waiting_transactions ",
        r#"proximites_import_rows_total{outcome="created"}"#,
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let python = tokio::task::spawn_blocking(|| {
        common::pypi_environment("prometheus-client", "prometheus-client==0.21.1")
            .join("bin/python")
    })
    .await
    .unwrap();
    let output = std::process::Command::new(python)
        .args([
            "-c",
            "import sys; from prometheus_client.parser import text_string_to_metric_families as p; \
             families = list(p(open(sys.argv[1]).read())); \
             print(len(families), sum(len(f.samples) for f in families))",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed = String::from_utf8_lossy(&output.stdout);
    let families: usize = parsed.split_whitespace().next().unwrap().parse().unwrap();
    assert!(families >= 8, "{parsed}");
}
