//! Bulk updates from the contributors' pages, through the router: the upload is checked first
//! (to create, changed field by field, unchanged, left out), wrong rows are shown row by row
//! and nothing is written; "Appliquer" writes the very file checked, in one transaction, recorded
//! in the history as an import by that person; another person cannot apply it.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use proximites::accounts::Role;
use tower::ServiceExt;

use common::accounts::{organisation, signed_in};
use common::{database, Fixture};

const HEADER: &str = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description";

struct Page {
    status: StatusCode,
    html: String,
}

async fn send(router: &axum::Router, request: Request<Body>) -> Page {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Page {
        status,
        html: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Sends the upload form as a browser does (multipart), with `file` named `file_name`.
async fn upload(
    router: &axum::Router,
    cookie: &str,
    csrf: &str,
    file_name: &str,
    file: &str,
) -> Page {
    let boundary = "----proximites-test-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"fichier\"; filename=\"{file_name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{file}\r\n--{boundary}--\r\n"
    );
    let request = Request::builder()
        .method(Method::POST)
        .uri("/espace/import")
        .header("cookie", cookie)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap();
    send(router, request).await
}

async fn post_form(router: &axum::Router, uri: &str, cookie: &str, pairs: &[(&str, &str)]) -> Page {
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(proximites::web::encode_query(pairs)))
        .unwrap();
    send(router, request).await
}

async fn get(router: &axum::Router, uri: &str, cookie: &str) -> Page {
    let request = Request::builder()
        .uri(uri)
        .header("cookie", cookie)
        .body(Body::empty())
        .unwrap();
    send(router, request).await
}

/// The "Appliquer" form's action in a checked upload's page.
fn apply_action(html: &str) -> String {
    let start = html
        .find("action=\"/espace/import/")
        .expect("an Appliquer form")
        + 8;
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// (source_ref, name, status) of every entry of the organisation named `source`.
async fn entries(store: &proximites::db::Store, source: &str) -> Vec<(String, String, String)> {
    proximites::on_engine!(&store, |db| sqlx::query_as(
        "SELECT s.source_ref, s.name, s.status FROM services s JOIN organisations o
         ON o.id = s.source_id WHERE o.name = $1 ORDER BY s.source_ref",
    )
    .bind(source)
    .fetch_all(db)
    .await)
    .unwrap()
}

fn row(source_ref: &str, name: &str, phone: &str) -> String {
    format!("{source_ref},mairie,{name},,,,63300,3.1133,45.8937,{phone},,,,,")
}

#[tokio::test]
async fn a_bulk_update_is_checked_then_applied_from_the_pages() {
    let (dir, store, reference) = database(false).await;
    let riom = organisation(&store, "Ville de Riom", "commune", "commune:63300").await;
    let other = organisation(&store, "Autre", "other", "commune:63300").await;
    let (cookie, csrf) = signed_in(&store, &riom.id, "admin@riom.example.fr", Role::Admin).await;
    let (other_cookie, other_csrf) =
        signed_in(&store, &other.id, "x@autre.example.fr", Role::Admin).await;
    let f = Fixture::serve(dir, store, reference).await;
    let router = &f.router;
    let store = &f.state.store;

    // The form: a labelled file field.
    let form = get(router, "/espace/import", &cookie).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(
        form.html.contains("<label for=\"fichier\"")
            && form.html.contains("enctype=\"multipart/form-data\""),
        "{}",
        form.html
    );

    // A first file: three entries to create; nothing written before "Appliquer".
    let first = format!(
        "{HEADER}\n{}\n{}\n{}\n",
        row("a", "Mairie de Riom", "04 73 33 79 00"),
        row("b", "Mairie annexe", ""),
        row("c", "Salle du conseil", "")
    );
    let checked = upload(router, &cookie, &csrf, "riom.csv", &first).await;
    assert_eq!(checked.status, StatusCode::OK, "{}", checked.html);
    assert!(
        checked.html.contains("3 fiches à créer"),
        "{}",
        checked.html
    );
    assert!(entries(store, "Ville de Riom").await.is_empty());
    let apply = apply_action(&checked.html);
    // Another person cannot apply it (nor learn whether it exists).
    let refused = post_form(router, &apply, &other_cookie, &[("csrf", &other_csrf)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let applied = post_form(router, &apply, &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.html);
    assert!(applied.html.contains("3 fiches créées"), "{}", applied.html);
    assert_eq!(entries(store, "Ville de Riom").await.len(), 3);
    // Applied once: the same form again is refused.
    let again = post_form(router, &apply, &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);

    // A second file: a unchanged, b renamed with a phone, d new, c left out.
    let second = format!(
        "{HEADER}\n{}\n{}\n{}\n",
        row("a", "Mairie de Riom", "04 73 33 79 00"),
        row("b", "Mairie annexe du Moulin", "04 73 00 00 01"),
        row("d", "Maison des services", "")
    );
    let checked = upload(router, &cookie, &csrf, "riom.csv", &second).await;
    assert_eq!(checked.status, StatusCode::OK, "{}", checked.html);
    let html = &checked.html;
    for expected in [
        "1 fiche à créer",
        "1 fiche à modifier",
        "1 fiche inchangée",
        "1 fiche publiée absente du fichier",
        "name=\"confirmer\"",
        "<del>Mairie annexe</del>",
        "<ins>Mairie annexe du Moulin</ins>",
        "<ins>+33473000001</ins>",
        "Salle du conseil",
        "name=\"retirer\"",
    ] {
        assert!(html.contains(expected), "{expected} missing in {html}");
    }
    let applied = post_form(
        router,
        &apply_action(html),
        &cookie,
        &[("csrf", &csrf), ("retirer", "1"), ("confirmer", "1")],
    )
    .await;
    assert!(
        applied.html.contains("1 fiche créée")
            && applied.html.contains("1 modifiée")
            && applied.html.contains("1 retirée")
            && applied.html.contains("1 confirmée"),
        "{}",
        applied.html
    );
    assert_eq!(
        entries(store, "Ville de Riom").await,
        vec![
            ("a".into(), "Mairie de Riom".into(), "published".into()),
            (
                "b".into(),
                "Mairie annexe du Moulin".into(),
                "published".into()
            ),
            ("c".into(), "Salle du conseil".into(), "withdrawn".into()),
            ("d".into(), "Maison des services".into(), "published".into()),
        ]
    );
    // « a », unchanged, is confirmed by the import (the campaigns count it as reviewed).
    let (a_verified, a_action): (Option<chrono::DateTime<chrono::Utc>>, String) = proximites::on_engine!(&store, |db| sqlx::query_as(
        "SELECT s.verified_at, h.action FROM services s JOIN service_history h ON h.service_id = s.id
         WHERE s.source_ref = 'a' ORDER BY h.id DESC LIMIT 1",
    )
    .fetch_one(db).await)
    .unwrap();
    assert!(a_verified.is_some());
    assert_eq!(a_action, "confirmed");

    // The history says: an import, by this person, with each field's change.
    let (b_id,): (String,) = proximites::on_engine!(&store, |db| sqlx::query_as(
        "SELECT id FROM services WHERE source_ref = 'b'"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    let history = get(
        router,
        &format!("/espace/fiches/{b_id}/historique"),
        &cookie,
    )
    .await;
    assert!(
        history.html.contains("riom.csv") && history.html.contains("admin@riom.example.fr"),
        "{}",
        history.html
    );
    let (action, via, started_by): (String, String, String) = proximites::on_engine!(&store, |db| sqlx::query_as(
        "SELECT h.action, h.via, i.started_by FROM service_history h JOIN imports i ON i.id = h.actor_id
         WHERE h.service_id = $1 ORDER BY h.id DESC LIMIT 1",
    )
    .bind(&b_id)
    .fetch_one(db).await)
    .unwrap();
    assert_eq!((action.as_str(), via.as_str()), ("updated", "import"));
    assert!(started_by.starts_with("user:usr-"), "{started_by}");

    // Wrong rows: each shown with its line and field, linked from the summary; nothing kept.
    let wrong = format!(
        "{HEADER}\n{}\n{}\nz,mairie,Ailleurs,,,,03083,3.35,46.34,,,,,,\n",
        row("a", "Mairie de Riom", "04 73 33 79 00"),
        "e,mairie,Sans lieu,,,,63300,abc,45.89,,,,,,"
    );
    let before = entries(store, "Ville de Riom").await;
    let refused = upload(router, &cookie, &csrf, "riom.csv", &wrong).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let html = &refused.html;
    assert!(
        html.contains("href=\"#ligne-3\"")
            && html.contains("id=\"ligne-3\"")
            && html.contains("id=\"ligne-4\"")
            && html.contains("hors du territoire"),
        "{html}"
    );
    assert!(
        !html.contains("/appliquer"),
        "no Appliquer for a wrong file"
    );
    assert_eq!(entries(store, "Ville de Riom").await, before);

    // GeoJSON, the other format.
    let geojson = r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"source_ref":"f","typology":"mairie","name":"Mairie GeoJSON","insee_code":"63300"},"geometry":{"type":"Point","coordinates":[3.1133,45.8937]}}]}"#;
    let checked = upload(router, &cookie, &csrf, "riom.geojson", geojson).await;
    assert_eq!(checked.status, StatusCode::OK, "{}", checked.html);
    assert!(
        checked.html.contains("1 fiche à créer")
            && checked.html.contains("3 fiches publiées absentes"),
        "{}",
        checked.html
    );

    // A file over the limit: told next to the file field.
    let huge = upload(router, &cookie, &csrf, "enorme.csv", &"x".repeat(33 << 20)).await;
    assert_eq!(huge.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        huge.html.contains("id=\"fichier-erreur\"") && huge.html.contains("trop gros"),
        "{}",
        huge.html
    );

    // A forged form (no CSRF token) is refused.
    let forged = upload(router, &cookie, "", "riom.csv", &first).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // Files checked and never applied are kept a few per person: a newer one pushes the
    // oldest out.
    let mut applies = Vec::new();
    for _ in 0..proximites::espace::bulk::PENDING_PER_PERSON + 2 {
        let checked = upload(router, &cookie, &csrf, "riom.geojson", geojson).await;
        assert_eq!(checked.status, StatusCode::OK);
        applies.push(apply_action(&checked.html));
    }
    let (kept,): (i64,) = proximites::on_engine!(&store, |db| sqlx::query_as(
        "SELECT COUNT(*) FROM pending_uploads"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    // The other person's pending files: none.
    assert_eq!(kept, proximites::espace::bulk::PENDING_PER_PERSON);
    let pushed_out = post_form(router, &applies[0], &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(pushed_out.status, StatusCode::FORBIDDEN);
    let newest = post_form(router, applies.last().unwrap(), &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(newest.status, StatusCode::OK, "{}", newest.html);
}
