//! Contributors: the write API over HTTP (tokens, ETags, history, restore, bulk), the
//! permission rules for every role, action and organisation, and search seeing each write.

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use proximites::accounts::store::{self, NewOrganisation};
use proximites::accounts::{can, Action, Actor, ActorKind, Area, Role, Target, Territory};
use proximites::error::Error;
use proximites::import::{self, ImportOptions, Input};
use proximites::services::history::Via;
use proximites::services::write;
use proximites::territory::InseeCode;
use serde_json::{json, Value};
use tower::ServiceExt;

use common::accounts::signed_in;
use common::{database, Fixture};

/// Clermont Auvergne Métropole's SIREN: Clermont-Ferrand (63113) is in it, Riom (63300) is not.
const CLERMONT_METROPOLE: &str = "epci:246300701";

struct Sent {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

async fn send(
    router: &axum::Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Sent {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body)),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Sent {
        status,
        headers,
        json,
    }
}

fn etag(sent: &Sent) -> String {
    sent.headers
        .get("etag")
        .expect("an ETag header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Two organisations, each with a token: the métropole and Riom.
struct World {
    f: Fixture,
    metropole: String,
    riom: String,
    metropole_token: String,
    riom_token: String,
}

async fn world() -> World {
    let (dir, store, reference) = database(true).await;
    let metropole = store::create_organisation(
        &store,
        &NewOrganisation {
            name: "Clermont Auvergne Métropole".into(),
            kind: "epci".into(),
            siren: Some("246300701".into()),
            territory: Territory(vec![Area::parse(CLERMONT_METROPOLE).unwrap()]),
            ..NewOrganisation::default()
        },
    )
    .await
    .unwrap();
    let riom = store::create_organisation(
        &store,
        &NewOrganisation {
            name: "Ville de Riom".into(),
            kind: "commune".into(),
            siren: None,
            territory: Territory(vec![Area::parse("commune:63300").unwrap()]),
            ..NewOrganisation::default()
        },
    )
    .await
    .unwrap();
    let (_, metropole_token) = store::create_token(&store, &metropole.id, "script")
        .await
        .unwrap();
    let (_, riom_token) = store::create_token(&store, &riom.id, "script")
        .await
        .unwrap();
    World {
        f: Fixture::serve(dir, store, reference).await,
        metropole: metropole.id,
        riom: riom.id,
        metropole_token,
        riom_token,
    }
}

fn clermont_entry(name: &str) -> String {
    json!({
        "typology": "mairie",
        "name": name,
        "lon": 3.0870,
        "lat": 45.7772,
        "phone": "04 73 42 63 63",
        "opening_hours": "Mo-Fr 08:30-17:00",
    })
    .to_string()
}

async fn search_ids(router: &axum::Router, q: &str) -> Vec<String> {
    let found = send(
        router,
        Method::GET,
        &format!("/api/v1/services?q={}", q.replace(' ', "+")),
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.json);
    found.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn history_rows(store: &proximites::db::Store) -> i64 {
    let (n,): (i64,) = proximites::on_engine!(&store, |db| sqlx::query_as(
        "SELECT COUNT(*) FROM service_history"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    n
}

#[tokio::test]
async fn create_change_withdraw_through_the_api_and_search_sees_each_write() {
    let w = world().await;
    let router = &w.f.router;
    let token = Some(w.metropole_token.as_str());

    // No token, a wrong token: 401 problem details.
    let anonymous = send(
        router,
        Method::POST,
        "/api/v1/services",
        None,
        &[],
        Some(clermont_entry("x")),
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.json["code"], "authentication_required");
    let wrong = send(
        router,
        Method::POST,
        "/api/v1/services",
        Some("pxm_nope"),
        &[],
        Some(clermont_entry("x")),
    )
    .await;
    assert_eq!(wrong.json["code"], "invalid_token");

    let created = send(
        router,
        Method::POST,
        "/api/v1/services",
        token,
        &[],
        Some(clermont_entry("Maison Zébulon des services")),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json);
    let id = created.json["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.json["commune"]["insee_code"], "63113",
        "the commune comes from the point"
    );
    assert_eq!(created.json["source"]["id"], w.metropole.as_str());
    assert_eq!(
        created.headers["location"].to_str().unwrap(),
        format!("/api/v1/services/{id}")
    );
    // Search sees it at once: text and place.
    assert_eq!(search_ids(router, "zébulon").await, vec![id.clone()]);
    let near = send(
        router,
        Method::GET,
        "/api/v1/services?near=3.0870,45.7772&typology=mairie&limit=1",
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(near.json["items"][0]["id"], id.as_str());

    // The public read gives the ETag; PATCH needs it.
    let read = send(
        router,
        Method::GET,
        &format!("/api/v1/services/{id}"),
        None,
        &[],
        None,
    )
    .await;
    let tag = etag(&read);
    assert_eq!(tag, etag(&created));
    let uri = format!("/api/v1/services/{id}");
    let patch = json!({"name": "Maison Quetzalcoatl des services"}).to_string();
    let without = send(router, Method::PATCH, &uri, token, &[], Some(patch.clone())).await;
    assert_eq!(without.status, StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(without.json["code"], "if_match_required");
    let changed = send(
        router,
        Method::PATCH,
        &uri,
        token,
        &[("if-match", &tag)],
        Some(patch),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.json);
    assert_eq!(changed.json["name"], "Maison Quetzalcoatl des services");
    assert_ne!(etag(&changed), tag);
    assert!(search_ids(router, "zébulon").await.is_empty());
    assert_eq!(search_ids(router, "quetzalcoatl").await, vec![id.clone()]);

    // Moving the point finds the commune again; a point outside the territory is refused.
    let moved = send(
        router,
        Method::PATCH,
        &uri,
        token,
        &[("if-match", &etag(&changed))],
        Some(json!({"lon": 3.1143, "lat": 45.7569}).to_string()),
    )
    .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.json);
    assert_eq!(moved.json["commune"]["insee_code"], "63014");
    let to_riom = send(
        router,
        Method::PATCH,
        &uri,
        token,
        &[("if-match", &etag(&moved))],
        Some(json!({"lon": 3.1133, "lat": 45.8937}).to_string()),
    )
    .await;
    assert_eq!(to_riom.status, StatusCode::FORBIDDEN, "{}", to_riom.json);
    assert_eq!(to_riom.json["code"], "forbidden");

    // Field-level errors, nothing written.
    let before = history_rows(&w.f.state.store).await;
    let bad = send(
        router,
        Method::PATCH,
        &uri,
        token,
        &[("if-match", &etag(&moved))],
        Some(json!({"email": "pas une adresse", "typology": "nope", "colour": "red"}).to_string()),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.json);
    let fields: Vec<&str> = bad.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["colour"], "unknown fields are refused first");
    let bad = send(
        router,
        Method::PATCH,
        &uri,
        token,
        &[("if-match", &etag(&moved))],
        Some(json!({"email": "pas une adresse", "typology": "nope"}).to_string()),
    )
    .await;
    let mut fields: Vec<&str> = bad.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["email", "typology"]);
    let not_json = send(
        router,
        Method::PATCH,
        &uri,
        token,
        &[("if-match", &etag(&moved))],
        Some("{".into()),
    )
    .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(history_rows(&w.f.state.store).await, before);

    // Confirm sets verified_at; withdraw unpublishes and search forgets it.
    let confirmed = send(
        router,
        Method::POST,
        &format!("{uri}/confirm"),
        token,
        &[],
        None,
    )
    .await;
    assert_eq!(confirmed.status, StatusCode::OK);
    assert!(confirmed.json["verified_at"].is_string());
    let withdrawn = send(router, Method::DELETE, &uri, token, &[], None).await;
    assert_eq!(withdrawn.status, StatusCode::OK, "{}", withdrawn.json);
    assert_eq!(withdrawn.json["status"], "withdrawn");
    assert!(search_ids(router, "quetzalcoatl").await.is_empty());
    assert_eq!(
        send(router, Method::GET, &uri, None, &[], None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // The history lists every change, newest first, with who and how.
    let history = send(
        router,
        Method::GET,
        &format!("{uri}/history"),
        token,
        &[],
        None,
    )
    .await;
    assert_eq!(history.status, StatusCode::OK);
    let actions: Vec<&str> = history.json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["withdrawn", "confirmed", "updated", "updated", "created"]
    );
    let rename = &history.json["changes"][3];
    assert_eq!(rename["via"], "api");
    assert_eq!(rename["actor"]["kind"], "token");
    assert_eq!(rename["actor"]["label"], "script");
    assert_eq!(
        rename["changes"]["name"]["old"],
        "Maison Zébulon des services"
    );
    assert_eq!(
        rename["changes"]["name"]["new"],
        "Maison Quetzalcoatl des services"
    );

    // Restoring the version before the withdrawal publishes it again, where it was.
    let change = history.json["changes"][0]["id"].as_str().unwrap();
    let restored = send(
        router,
        Method::POST,
        &format!("{uri}/history/{change}/restore"),
        token,
        &[],
        None,
    )
    .await;
    assert_eq!(restored.status, StatusCode::OK, "{}", restored.json);
    assert_eq!(restored.json["status"], "published");
    assert_eq!(search_ids(router, "quetzalcoatl").await, vec![id.clone()]);
    // Restoring the version before the rename brings the first name back.
    let rename_id = rename["id"].as_str().unwrap();
    let renamed_back = send(
        router,
        Method::POST,
        &format!("{uri}/history/{rename_id}/restore"),
        token,
        &[],
        None,
    )
    .await;
    assert_eq!(renamed_back.json["name"], "Maison Zébulon des services");
    assert_eq!(search_ids(router, "zébulon").await, vec![id.clone()]);
    let creation = history.json["changes"][4]["id"].as_str().unwrap();
    let nothing = send(
        router,
        Method::POST,
        &format!("{uri}/history/{creation}/restore"),
        token,
        &[],
        None,
    )
    .await;
    assert_eq!(nothing.status, StatusCode::CONFLICT);
    assert_eq!(nothing.json["code"], "nothing_to_restore");

    // The indexes are what the database says.
    // The text index's changes held in memory are committed (a server does it every second).
    w.f.state
        .live
        .commit_text(std::time::Duration::ZERO)
        .await
        .unwrap();
    let problems = proximites::search::check(&w.f.state.store, w.f.state.live.dir())
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test]
async fn two_editors_saving_the_same_entry_the_second_is_told_and_nothing_is_lost() {
    let w = world().await;
    let router = &w.f.router;
    let token = Some(w.metropole_token.as_str());
    let created = send(
        router,
        Method::POST,
        "/api/v1/services",
        token,
        &[],
        Some(clermont_entry("Guichet unique")),
    )
    .await;
    let uri = format!("/api/v1/services/{}", created.json["id"].as_str().unwrap());
    let tag = etag(&created);
    let first = json!({"phone": "04 73 00 00 01"}).to_string();
    let second = json!({"email": "guichet@example.fr"}).to_string();
    // Both sent at once, with the ETag each read.
    let condition = [("if-match", tag.as_str())];
    let (a, b) = tokio::join!(
        send(router, Method::PATCH, &uri, token, &condition, Some(first)),
        send(
            router,
            Method::PATCH,
            &uri,
            token,
            &condition,
            Some(second.clone())
        ),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::PRECONDITION_FAILED]);
    let (won, lost) = if a.status == StatusCode::OK {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(lost.json["code"], "stale_etag");
    // The winner's change is there; the loser reads again and applies its own on top.
    let now = send(router, Method::GET, &uri, None, &[], None).await;
    assert_eq!(now.json, won.json);
    let retried = send(
        router,
        Method::PATCH,
        &uri,
        token,
        &[("if-match", &etag(&now))],
        Some(json!({"phone": "04 73 00 00 01", "email": "guichet@example.fr"}).to_string()),
    )
    .await;
    assert_eq!(retried.status, StatusCode::OK);
    assert_eq!(retried.json["phones"][0]["e164"], "+33473000001");
    assert_eq!(retried.json["email"], "guichet@example.fr");
    // The stale ETag stays refused.
    let stale = send(
        router,
        Method::PATCH,
        &uri,
        token,
        &[("if-match", &tag)],
        Some(json!({"name": "x"}).to_string()),
    )
    .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn another_organisations_entries_and_ids_give_nothing() {
    let w = world().await;
    let router = &w.f.router;
    let created = send(
        router,
        Method::POST,
        "/api/v1/services",
        Some(&w.metropole_token),
        &[],
        Some(clermont_entry("Point info")),
    )
    .await;
    let id = created.json["id"].as_str().unwrap().to_owned();
    let uri = format!("/api/v1/services/{id}");
    let tag = etag(&created);
    let riom = Some(w.riom_token.as_str());
    // Every action of Riom's token on the métropole's entry, and on an id that does not exist:
    // the same 403, word for word.
    let unknown = "/api/v1/services/0000000000000000";
    let attempts: Vec<(Method, String, Option<String>)> = vec![
        (
            Method::PATCH,
            uri.clone(),
            Some(json!({"name": "pris"}).to_string()),
        ),
        (Method::DELETE, uri.clone(), None),
        (Method::POST, format!("{uri}/confirm"), None),
        (Method::GET, format!("{uri}/history"), None),
        (
            Method::POST,
            format!("{uri}/history/0000000000000000/restore"),
            None,
        ),
        (
            Method::PATCH,
            unknown.into(),
            Some(json!({"name": "pris"}).to_string()),
        ),
        (Method::DELETE, unknown.into(), None),
        (Method::GET, format!("{unknown}/history"), None),
        (
            Method::GET,
            "/api/v1/services/not-an-id/history".into(),
            None,
        ),
    ];
    let mut details = Vec::new();
    for (method, uri, body) in attempts {
        let sent = send(
            router,
            method.clone(),
            &uri,
            riom,
            &[("if-match", &tag)],
            body,
        )
        .await;
        assert_eq!(
            sent.status,
            StatusCode::FORBIDDEN,
            "{method} {uri}: {}",
            sent.json
        );
        assert_eq!(sent.headers["content-type"], "application/problem+json");
        details.push(sent.json["detail"].clone());
    }
    details.dedup();
    assert_eq!(details.len(), 1, "every refusal reads the same");
    // Creating for another organisation or outside one's territory: refused too.
    let for_other = send(router, Method::POST, "/api/v1/services", riom, &[], Some(json!({"organisation_id": w.metropole, "typology": "mairie", "name": "x", "lon": 3.0870, "lat": 45.7772}).to_string())).await;
    assert_eq!(for_other.status, StatusCode::FORBIDDEN);
    let outside = send(
        router,
        Method::POST,
        "/api/v1/services",
        riom,
        &[],
        Some(clermont_entry("Hors territoire")),
    )
    .await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN);
    // Bulk for another organisation: refused; the entry is untouched.
    let bulk = send(
        router,
        Method::POST,
        &format!("/api/v1/services/bulk?organisation={}", w.metropole),
        riom,
        &[],
        Some(String::new()),
    )
    .await;
    assert_eq!(bulk.status, StatusCode::FORBIDDEN);
    let still = send(router, Method::GET, &uri, None, &[], None).await;
    assert_eq!(etag(&still), tag);
    // The public API stays read-only without a token.
    let anonymous = send(router, Method::DELETE, &uri, None, &[], None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    // A revoked token stops working.
    let (token_id, token) = store::create_token(&w.f.state.store, &w.metropole, "old")
        .await
        .unwrap();
    assert!(
        store::revoke_token(&w.f.state.store, &w.metropole, &token_id)
            .await
            .unwrap()
    );
    let revoked = send(
        router,
        Method::POST,
        &format!("{uri}/confirm"),
        Some(&token),
        &[],
        None,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
}

fn actor(role: Role, organisation: Option<(&str, &str)>, token: bool) -> Actor {
    Actor {
        kind: if token {
            ActorKind::Token {
                id: "tok-t".into(),
                name: "t".into(),
            }
        } else {
            ActorKind::User {
                id: format!("usr-{}", role.as_str()),
                email: "p@example.fr".into(),
            }
        },
        role,
        organisation: organisation
            .map(|(id, area)| (id.to_owned(), Territory(vec![Area::parse(area).unwrap()]))),
    }
}

/// Every role × every action × own or other organisation (and, for entries, inside or outside
/// the territory): the expected answer of the rules, from one table.
#[tokio::test]
async fn permission_matrix() {
    let (_dir, _pool, reference) = database(false).await;
    let clermont = reference
        .locator
        .commune(&InseeCode::parse("63113").unwrap())
        .unwrap()
        .clone();
    let riom = reference
        .locator
        .commune(&InseeCode::parse("63300").unwrap())
        .unwrap()
        .clone();
    let operator = actor(Role::Operator, None, false);
    let admin = actor(Role::Admin, Some(("org-a", CLERMONT_METROPOLE)), false);
    let editor = actor(Role::Editor, Some(("org-a", CLERMONT_METROPOLE)), false);
    let token = actor(Role::Editor, Some(("org-a", CLERMONT_METROPOLE)), true);
    // (action, target, [operator, admin, editor, token])
    let own_in = Target::Entry {
        organisation: "org-a",
        commune: Some(&clermont),
    };
    let own_out = Target::Entry {
        organisation: "org-a",
        commune: Some(&riom),
    };
    let own_entry = Target::Entry {
        organisation: "org-a",
        commune: None,
    };
    let other_in = Target::Entry {
        organisation: "org-b",
        commune: Some(&clermont),
    };
    let other_entry = Target::Entry {
        organisation: "org-b",
        commune: None,
    };
    let own = Target::Organisation("org-a");
    let other = Target::Organisation("org-b");
    let all = [true, true, true, true];
    let operator_only = [true, false, false, false];
    let table: Vec<(Action, Target, [bool; 4])> = vec![
        (Action::CreateEntry, own_in, all),
        (Action::CreateEntry, own_out, operator_only),
        (Action::CreateEntry, other_in, operator_only),
        (Action::UpdateEntry, own_in, all),
        (Action::UpdateEntry, own_out, operator_only),
        (Action::UpdateEntry, other_in, operator_only),
        (Action::RestoreEntry, own_in, all),
        (Action::RestoreEntry, other_in, operator_only),
        (Action::ReadEntry, own_entry, all),
        (Action::ReadEntry, other_entry, operator_only),
        (Action::WithdrawEntry, own_entry, all),
        (Action::WithdrawEntry, other_entry, operator_only),
        (Action::ConfirmEntry, own_entry, all),
        (Action::ConfirmEntry, other_entry, operator_only),
        (Action::BulkUpsert, own, all),
        (Action::BulkUpsert, other, operator_only),
        (Action::ExportOrganisation, own, all),
        (Action::ExportOrganisation, other, operator_only),
        (Action::ManageOrganisation, own, [true, true, false, false]),
        (Action::ManageOrganisation, other, operator_only),
        (Action::CreateOrganisation, Target::Platform, operator_only),
        (Action::SetConvention, own, operator_only),
        (Action::SetConvention, other, operator_only),
        (Action::ManageCampaigns, Target::Platform, operator_only),
        (Action::ManageCampaigns, own, operator_only),
        (Action::WithdrawOrganisation, own, operator_only),
        (Action::WithdrawOrganisation, other, operator_only),
    ];
    for (action, target, expected) in table {
        for (who, allowed) in [&operator, &admin, &editor, &token]
            .into_iter()
            .zip(expected)
        {
            let answer = can(who, action, target);
            assert_eq!(
                answer.is_ok(),
                allowed,
                "{:?} {action:?} {target:?}",
                who.kind
            );
            if let Err(error) = answer {
                assert!(matches!(
                    error,
                    Error::Forbidden {
                        code: "forbidden",
                        ..
                    }
                ));
                assert_eq!(error.status(), StatusCode::FORBIDDEN);
            }
        }
    }
}

/// The same rules through the write paths the pages use, for people of each role: what is
/// allowed is written and recorded as made on a page by that person; what is not changes nothing.
#[tokio::test]
async fn write_paths_follow_the_rules_for_each_role() {
    let w = world().await;
    let state = &w.f.state;
    let metropole = Some((w.metropole.as_str(), CLERMONT_METROPOLE));
    let riom = Some((w.riom.as_str(), "commune:63300"));
    let people = [
        ("operator", actor(Role::Operator, None, false), [true, true]),
        ("admin", actor(Role::Admin, metropole, false), [true, false]),
        (
            "editor",
            actor(Role::Editor, metropole, false),
            [true, false],
        ),
        (
            "riom editor",
            actor(Role::Editor, riom, false),
            [false, true],
        ),
    ];
    for (who, person, [on_metropole, on_riom]) in people {
        for (organisation, allowed, lon, lat) in [
            (&w.metropole, on_metropole, 3.0870, 45.7772),
            (&w.riom, on_riom, 3.1133, 45.8937),
        ] {
            let fields = json!({"organisation_id": organisation, "typology": "mairie", "name": format!("Créée par {who}"), "lon": lon, "lat": lat});
            let created = write::create(
                state,
                &person,
                Via::Page,
                write::NewEntry {
                    fields: fields.as_object().unwrap().clone(),
                },
            )
            .await;
            assert_eq!(created.is_ok(), allowed, "{who} creates for {organisation}");
            // Each organisation's own entry, made by the operator, then acted on by `person`.
            let operator = actor(Role::Operator, None, false);
            let fields = json!({"organisation_id": organisation, "typology": "mairie", "name": "Fiche", "lon": lon, "lat": lat});
            let entry = write::create(
                state,
                &operator,
                Via::Page,
                write::NewEntry {
                    fields: fields.as_object().unwrap().clone(),
                },
            )
            .await
            .unwrap()
            .service;
            let id = entry.id.to_string();
            let tag = write::etag(&entry);
            let patch = json!({"name": "Renommée"}).as_object().unwrap().clone();
            let updated = write::update(state, &person, Via::Page, &id, Some(&tag), &patch).await;
            assert_eq!(
                updated.is_ok(),
                allowed,
                "{who} updates an entry of {organisation}"
            );
            let confirmed = write::confirm(state, &person, Via::Page, &id).await;
            assert_eq!(confirmed.is_ok(), allowed, "{who} confirms");
            let history = write::history_of(state, &person, &id).await;
            assert_eq!(history.is_ok(), allowed, "{who} reads the history");
            let withdrawn = write::withdraw(state, &person, Via::Page, &id, None).await;
            assert_eq!(withdrawn.is_ok(), allowed, "{who} withdraws");
            let (_, changes) = write::history_of(state, &operator, &id).await.unwrap();
            if allowed {
                assert_eq!(changes.len(), 4);
                assert!(changes[..3]
                    .iter()
                    .all(|c| c.via == Via::Page && c.actor.kind == "user"));
                assert_eq!(
                    changes[2].changes.as_ref().unwrap()["name"]["new"],
                    "Renommée"
                );
            } else {
                assert_eq!(changes.len(), 1, "only the creation");
                assert!(matches!(updated, Err(Error::Forbidden { .. })));
            }
        }
    }
}

#[tokio::test]
async fn imports_record_history_and_bulk_upserts_stay_in_the_territory() {
    let w = world().await;
    let router = &w.f.router;
    let state = &w.f.state;
    let csv = |name: &str| {
        format!(
            "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description\nA1,mairie,{name},,,,,3.0870,45.7772,04 73 42 63 63,,,,,\nA2,bibliotheque,Médiathèque de Jaude,,,,,3.0830,45.7760,,,,,,\n"
        )
    };
    // A command-line style import: compact rows for the creations.
    let report = import::import(
        &state.store,
        &state.reference,
        Input::Bytes {
            name: "metropole.csv".into(),
            bytes: csv("Mairie annexe").into_bytes(),
        },
        ImportOptions {
            source: Some("Clermont Auvergne Métropole".into()),
            ..ImportOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(report.committed && report.created == 2, "{report:?}");
    state.refresh_search().await.unwrap();
    let (id,): (String,) = proximites::on_engine!(&state.store, |db| sqlx::query_as(
        "SELECT id FROM services WHERE source_ref = 'A1' AND source_id = $1"
    )
    .bind(&w.metropole)
    .fetch_one(db)
    .await)
    .unwrap();
    // The same file through the API with one name changed: an update with old and new values.
    let token = Some(w.metropole_token.as_str());
    let dry = send(
        router,
        Method::POST,
        "/api/v1/services/bulk?dry_run=true",
        token,
        &[],
        Some(csv("Mairie annexe Xylophone")),
    )
    .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.json);
    assert_eq!(
        (
            dry.json["updated"].as_u64(),
            dry.json["committed"].as_bool()
        ),
        (Some(1), Some(false))
    );
    // The dry run details the change, field by field.
    let changed = &dry.json["plan"]["changed"][0];
    assert_eq!(
        changed["changes"]["name"]["new"], "Mairie annexe Xylophone",
        "{}",
        dry.json
    );
    assert_eq!(
        dry.json["plan"]["unchanged"].as_array().map(Vec::len),
        Some(1)
    );
    // A file over the limit: a problem details, not a cut-off read.
    let huge = send(
        router,
        Method::POST,
        "/api/v1/services/bulk?dry_run=true",
        token,
        &[],
        Some("x".repeat(33 << 20)),
    )
    .await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(huge.json["code"], "file_too_large");
    let bulk = send(
        router,
        Method::POST,
        "/api/v1/services/bulk",
        token,
        &[],
        Some(csv("Mairie annexe Xylophone")),
    )
    .await;
    assert_eq!(bulk.status, StatusCode::OK, "{}", bulk.json);
    assert_eq!(
        (
            bulk.json["updated"].as_u64(),
            bulk.json["unchanged"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(search_ids(router, "xylophone").await, vec![id.clone()]);
    let history = send(
        router,
        Method::GET,
        &format!("/api/v1/services/{id}/history"),
        token,
        &[],
        None,
    )
    .await;
    let changes = history.json["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{}", history.json);
    assert_eq!(changes[0]["via"], "import");
    assert_eq!(changes[0]["action"], "updated");
    // The import, and who sent it.
    assert_eq!(changes[0]["actor"]["label"], "envoi.csv (script)");
    assert_eq!(changes[0]["changes"]["name"]["old"], "Mairie annexe");
    assert_eq!(
        changes[0]["changes"]["name"]["new"],
        "Mairie annexe Xylophone"
    );
    assert_eq!(changes[0]["previous"]["name"], "Mairie annexe");
    assert_eq!(changes[1]["action"], "created");
    assert_eq!(changes[1]["actor"]["label"], "metropole.csv");
    assert!(changes[1]["changes"].is_null(), "a created row is compact");
    let (started_by,): (Option<String>,) =
        proximites::on_engine!(&state.store, |db| sqlx::query_as(
            "SELECT started_by FROM imports WHERE file_name = 'envoi.csv'"
        )
        .fetch_one(db)
        .await)
        .unwrap();
    assert!(started_by.unwrap().starts_with("token:tok-"));
    // The import's change can be undone like any other.
    let change = changes[0]["id"].as_str().unwrap();
    let restored = send(
        router,
        Method::POST,
        &format!("/api/v1/services/{id}/history/{change}/restore"),
        token,
        &[],
        None,
    )
    .await;
    assert_eq!(restored.json["name"], "Mairie annexe");

    // Riom's upload of a row in Clermont is refused whole, naming the row and the field.
    let before = history_rows(&state.store).await;
    let riom_file = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description\nR1,mairie,Mairie de Riom,,,,,3.1133,45.8937,,,,,,\nR2,mairie,Ailleurs,,,,,3.0870,45.7772,,,,,,\n";
    let refused = send(
        router,
        Method::POST,
        "/api/v1/services/bulk",
        Some(&w.riom_token),
        &[],
        Some(riom_file.into()),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.json
    );
    assert_eq!(refused.json["errors"][0]["row"], 3);
    assert_eq!(refused.json["errors"][0]["field"], "insee_code");
    assert_eq!(
        history_rows(&state.store).await,
        before,
        "nothing half-written"
    );
}

/// What a re-import must give back of an entry: name, typology, point, phones, hours, access.
type Stored = (
    String,
    String,
    f64,
    f64,
    String,
    Option<String>,
    String,
    Option<String>,
);

/// Reads `name` from a ZIP.
fn unzip(bytes: &[u8], name: &str) -> Vec<u8> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut file = archive.by_name(name).unwrap();
    let mut out = Vec::new();
    file.read_to_end(&mut out).unwrap();
    out
}

async fn send_raw(
    router: &axum::Router,
    method: Method,
    uri: &str,
    token: &str,
) -> (StatusCode, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

/// Convention art. 6: export, withdraw (nothing of it stays public), re-import the export into
/// an empty instance (the same entries), and the operator's undo.
#[tokio::test]
async fn restitution_round_trip_and_withdrawal() {
    let w = world().await;
    let router = &w.f.router;
    let token = Some(w.metropole_token.as_str());
    let mut ids = Vec::new();
    for (name, lon, lat, hours) in [
        ("Maison Aldébaran", 3.0870, 45.7772, "Mo-Fr 08:30-12:00"),
        ("Point Bételgeuse", 3.1143, 45.7569, ""),
    ] {
        let created = send(router, Method::POST, "/api/v1/services", token, &[], Some(json!({"typology": "mairie", "name": name, "lon": lon, "lat": lat, "phone": "04 73 42 63 63;04 73 00 00 00", "opening_hours": hours, "wheelchair": "limited", "wheelchair_note": "rampe"}).to_string())).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.json);
        ids.push(created.json["id"].as_str().unwrap().to_owned());
    }
    // One withdrawn by the organisation itself before it leaves: not given back as published.
    let gone = send(
        router,
        Method::POST,
        "/api/v1/services",
        token,
        &[],
        Some(clermont_entry("Ancien guichet")),
    )
    .await;
    let gone_uri = format!("/api/v1/services/{}", gone.json["id"].as_str().unwrap());
    send(router, Method::DELETE, &gone_uri, token, &[], None).await;

    let (status, zip) = send_raw(
        router,
        Method::GET,
        &format!("/api/v1/organisations/{}/export", w.metropole),
        &w.metropole_token,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let csv = String::from_utf8(unzip(&zip, "entries.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let geojson: Value = serde_json::from_slice(&unzip(&zip, "entries.geojson")).unwrap();
    assert_eq!(geojson["features"].as_array().unwrap().len(), 2);
    let history: Value = serde_json::from_slice(&unzip(&zip, "history.json")).unwrap();
    assert_eq!(history[&ids[0]][0]["action"], "created");
    let settings: Value = serde_json::from_slice(&unzip(&zip, "organisation.json")).unwrap();
    assert_eq!(settings["territory"], json!([CLERMONT_METROPOLE]));
    // Another organisation cannot take it.
    let (status, _) = send_raw(
        router,
        Method::GET,
        &format!("/api/v1/organisations/{}/export", w.metropole),
        &w.riom_token,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The withdrawal is the operator's: the organisation's own token is refused.
    let (status, _) = send_raw(
        router,
        Method::POST,
        &format!("/api/v1/organisations/{}/withdraw", w.metropole),
        &w.metropole_token,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, operator) = store::create_operator_token(&w.f.state.store, "région")
        .await
        .unwrap();
    let (status, body) = send_raw(
        router,
        Method::POST,
        &format!("/api/v1/organisations/{}/withdraw", w.metropole),
        &operator,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let withdrawal: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(withdrawal["entries"], 2);
    for id in &ids {
        let public = send(
            router,
            Method::GET,
            &format!("/api/v1/services/{id}"),
            None,
            &[],
            None,
        )
        .await;
        assert_eq!(public.status, StatusCode::NOT_FOUND);
        let page = send(
            router,
            Method::GET,
            &format!("/services/{id}"),
            None,
            &[],
            None,
        )
        .await;
        assert_eq!(page.status, StatusCode::NOT_FOUND);
    }
    assert!(search_ids(router, "aldébaran").await.is_empty());
    assert!(search_ids(router, "bételgeuse").await.is_empty());
    for page in [
        "/embed?q=aldebaran&territory=epci:246300701",
        "/recherche?q=aldebaran",
    ] {
        let (status, _, body) = common::get(router, page).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !String::from_utf8_lossy(&body).contains("Aldébaran"),
            "{page} shows it"
        );
    }
    // The organisation's token is refused now; the export still gives everything back.
    let refused = send(
        router,
        Method::POST,
        &format!("/api/v1/services/{}/confirm", ids[0]),
        token,
        &[],
        None,
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let (status, after) = send_raw(
        router,
        Method::GET,
        &format!("/api/v1/organisations/{}/export", w.metropole),
        &operator,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unzip(&after, "entries.csv"), csv.as_bytes());

    // Re-imported into an empty instance: the same entries.
    let (_dir, store, reference) = database(false).await;
    let report = import::import(
        &store,
        &reference,
        Input::Bytes {
            name: "entries.csv".into(),
            bytes: csv.clone().into_bytes(),
        },
        ImportOptions {
            source: Some("Clermont Auvergne Métropole".into()),
            ..ImportOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(report.committed && report.created == 2, "{report:?}");
    let original: Vec<Stored> = proximites::on_engine!(&w.f.state.store, |db| sqlx::query_as(
        "SELECT name, typology_code, lon, lat, phones, opening_hours, wheelchair, wheelchair_note FROM services WHERE source_id = $1 AND name <> 'Ancien guichet' ORDER BY name",
    )
    .bind(&w.metropole)
    .fetch_all(db).await)
    .unwrap();
    let copied: Vec<Stored> = proximites::on_engine!(&store, |db| sqlx::query_as(
        "SELECT name, typology_code, lon, lat, phones, opening_hours, wheelchair, wheelchair_note FROM services ORDER BY name",
    )
    .fetch_all(db).await)
    .unwrap();
    assert_eq!(copied, original);

    // The operator undoes it: everything is back, search included.
    let operation = withdrawal["id"].as_str().unwrap();
    let (status, _) = send_raw(
        router,
        Method::POST,
        &format!("/api/v1/organisations/withdrawals/{operation}/undo"),
        &operator,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(search_ids(router, "aldébaran").await, vec![ids[0].clone()]);
    let confirmed = send(
        router,
        Method::POST,
        &format!("/api/v1/services/{}/confirm", ids[0]),
        token,
        &[],
        None,
    )
    .await;
    assert_eq!(confirmed.status, StatusCode::OK);
    let withdrawn_alone = send(router, Method::GET, &gone_uri, None, &[], None).await;
    assert_eq!(
        withdrawn_alone.status,
        StatusCode::NOT_FOUND,
        "an entry withdrawn before stays withdrawn"
    );
    // The text index's changes held in memory are committed (a server does it every second).
    w.f.state
        .live
        .commit_text(std::time::Duration::ZERO)
        .await
        .unwrap();
    let problems = proximites::search::check(&w.f.state.store, w.f.state.live.dir())
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

/// Who acts in the matrix over HTTP.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    /// The platform operator's API token.
    Operator,
    /// The métropole's admin, signed in on the pages.
    Admin,
    /// The métropole's editor, signed in on the pages.
    Editor,
    /// The métropole's API token.
    Token,
    /// Nobody: no token on the API, no session on the pages.
    Anonymous,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    Create,
    Patch,
    Delete,
    Confirm,
    History,
    Bulk,
    Export,
    /// The organisation's withdrawal (convention art. 6).
    Withdraw,
}

/// The credentials of the matrix's actors.
struct Credentials {
    operator_token: String,
    admin: (String, String),
    editor: (String, String),
}

/// A request to the router: (status, Location header).
async fn raw(
    router: &axum::Router,
    method: Method,
    uri: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (StatusCode, Option<String>) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (response.status(), location)
}

/// A fresh published entry of `organisation` (made by the operator), at its place.
async fn fresh_entry(w: &World, organisation: &str) -> proximites::services::Service {
    let (lon, lat) = if organisation == w.metropole {
        (3.0870, 45.7772)
    } else {
        (3.1133, 45.8937)
    };
    let fields = json!({"organisation_id": organisation, "typology": "mairie", "name": "Fiche de la matrice", "lon": lon, "lat": lat});
    write::create(
        &w.f.state,
        &actor(Role::Operator, None, false),
        Via::Page,
        write::NewEntry {
            fields: fields.as_object().unwrap().clone(),
        },
    )
    .await
    .unwrap()
    .service
}

const MATRIX_CSV: &str = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description\nm1,mairie,Mairie de la matrice,,,,,LON,LAT,,,,,,\n";

/// Performs `act` as `who` on the métropole's (`own`) or Riom's things, over the API (tokens,
/// or nobody with `pages == false`) or the pages (people, or nobody with `pages == true`).
async fn perform(
    w: &World,
    c: &Credentials,
    who: Who,
    act: Act,
    own: bool,
    pages: bool,
) -> (StatusCode, Option<String>) {
    let router = &w.f.router;
    let organisation = if own { &w.metropole } else { &w.riom };
    let (lon, lat) = if own {
        ("3.0870", "45.7772")
    } else {
        ("3.1133", "45.8937")
    };
    let entry = fresh_entry(w, organisation).await;
    let id = entry.id.to_string();
    let tag = write::etag(&entry);
    if !pages {
        let mut headers: Vec<(&str, String)> = Vec::new();
        match who {
            Who::Operator => {
                headers.push(("authorization", format!("Bearer {}", c.operator_token)))
            }
            Who::Token => headers.push(("authorization", format!("Bearer {}", w.metropole_token))),
            _ => {}
        }
        let json_body = |value: Value| value.to_string().into_bytes();
        let with = |name: &'static str, value: String| {
            let mut h = headers.clone();
            h.push((name, value));
            h
        };
        return match act {
            Act::Create => {
                let h = with("content-type", "application/json".into());
                let body = json!({"organisation_id": organisation, "typology": "mairie", "name": "Créée", "lon": lon.parse::<f64>().unwrap(), "lat": lat.parse::<f64>().unwrap()});
                raw(
                    router,
                    Method::POST,
                    "/api/v1/services",
                    &h,
                    json_body(body),
                )
                .await
            }
            Act::Patch => {
                let mut h = with("content-type", "application/json".into());
                h.push(("if-match", tag.clone()));
                raw(
                    router,
                    Method::PATCH,
                    &format!("/api/v1/services/{id}"),
                    &h,
                    json_body(json!({"name": "Renommée"})),
                )
                .await
            }
            Act::Delete => {
                let h = with("if-match", tag.clone());
                raw(
                    router,
                    Method::DELETE,
                    &format!("/api/v1/services/{id}"),
                    &h,
                    Vec::new(),
                )
                .await
            }
            Act::Confirm => {
                raw(
                    router,
                    Method::POST,
                    &format!("/api/v1/services/{id}/confirm"),
                    &headers,
                    Vec::new(),
                )
                .await
            }
            Act::History => {
                raw(
                    router,
                    Method::GET,
                    &format!("/api/v1/services/{id}/history"),
                    &headers,
                    Vec::new(),
                )
                .await
            }
            Act::Bulk => {
                let h = with("content-type", "text/csv".into());
                let csv = MATRIX_CSV.replace("LON", lon).replace("LAT", lat);
                raw(
                    router,
                    Method::POST,
                    &format!("/api/v1/services/bulk?organisation={organisation}"),
                    &h,
                    csv.into_bytes(),
                )
                .await
            }
            Act::Export => {
                raw(
                    router,
                    Method::GET,
                    &format!("/api/v1/organisations/{organisation}/export"),
                    &headers,
                    Vec::new(),
                )
                .await
            }
            Act::Withdraw => {
                let answer = raw(
                    router,
                    Method::POST,
                    &format!("/api/v1/organisations/{organisation}/withdraw"),
                    &headers,
                    Vec::new(),
                )
                .await;
                if answer.0 == StatusCode::OK {
                    // Undone at once, so that the next cases find the organisation as it was.
                    let (operation,): (String,) =
                        proximites::on_engine!(&w.f.state.store, |db| sqlx::query_as(
                            "SELECT id FROM organisation_withdrawals WHERE undone_at IS NULL",
                        )
                        .fetch_one(db)
                        .await)
                        .unwrap();
                    let undo = raw(
                        router,
                        Method::POST,
                        &format!("/api/v1/organisations/withdrawals/{operation}/undo"),
                        &headers,
                        Vec::new(),
                    )
                    .await;
                    assert_eq!(undo.0, StatusCode::OK);
                }
                answer
            }
        };
    }
    let (cookie, csrf) = match who {
        Who::Admin => c.admin.clone(),
        Who::Editor => c.editor.clone(),
        _ => (String::new(), String::new()),
    };
    let mut headers: Vec<(&str, String)> =
        vec![("content-type", "application/x-www-form-urlencoded".into())];
    if !cookie.is_empty() {
        headers.push(("cookie", cookie));
    }
    let form = |pairs: &[(&str, &str)]| proximites::web::encode_query(pairs).into_bytes();
    match act {
        Act::Create => {
            let body = form(&[
                ("csrf", &csrf),
                ("organisation_id", organisation),
                ("typology", "mairie"),
                ("name", "Créée"),
                ("lon", lon),
                ("lat", lat),
                ("wheelchair", "unknown"),
            ]);
            raw(
                router,
                Method::POST,
                "/espace/fiches/nouvelle",
                &headers,
                body,
            )
            .await
        }
        Act::Patch => {
            let body = form(&[
                ("csrf", &csrf),
                ("etag", &tag),
                ("typology", "mairie"),
                ("name", "Renommée"),
                ("lon", lon),
                ("lat", lat),
                ("wheelchair", "unknown"),
            ]);
            raw(
                router,
                Method::POST,
                &format!("/espace/fiches/{id}"),
                &headers,
                body,
            )
            .await
        }
        Act::Delete => {
            raw(
                router,
                Method::POST,
                &format!("/espace/fiches/{id}/retirer"),
                &headers,
                form(&[("csrf", &csrf)]),
            )
            .await
        }
        Act::Confirm => {
            raw(
                router,
                Method::POST,
                &format!("/espace/fiches/{id}/confirmer"),
                &headers,
                form(&[("csrf", &csrf)]),
            )
            .await
        }
        Act::History => {
            raw(
                router,
                Method::GET,
                &format!("/espace/fiches/{id}/historique"),
                &headers,
                Vec::new(),
            )
            .await
        }
        Act::Bulk => {
            let boundary = "matrix-boundary";
            let csv = MATRIX_CSV.replace("LON", lon).replace("LAT", lat);
            let body = format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"organisation\"\r\n\r\n{organisation}\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"fichier\"; filename=\"m.csv\"\r\n\r\n{csv}\r\n--{boundary}--\r\n"
            );
            headers[0].1 = format!("multipart/form-data; boundary={boundary}");
            raw(
                router,
                Method::POST,
                "/espace/import",
                &headers,
                body.into_bytes(),
            )
            .await
        }
        // The page exports the session's own organisation: it names none.
        Act::Export => {
            raw(
                router,
                Method::GET,
                "/espace/organisation/export",
                &headers,
                Vec::new(),
            )
            .await
        }
        Act::Withdraw => unreachable!("no page withdraws an organisation"),
    }
}

/// The permission matrix over HTTP, through the API and the pages as each actor reaches them:
/// operator (API token), organisation admin and editor (pages), the organisation's API token,
/// and anonymous (both) × create, patch, delete, confirm, history, bulk, export, withdraw ×
/// own or other organisation. A refusal is a 403 (401 or the login page without credentials)
/// and leaves the entry as it was.
#[tokio::test]
async fn permission_matrix_over_http() {
    let w = world().await;
    let store = &w.f.state.store;
    let (_, operator_token) = store::create_operator_token(store, "matrice")
        .await
        .unwrap();
    let c = Credentials {
        operator_token,
        editor: signed_in(
            store,
            &w.metropole,
            "redac@metropole.example.fr",
            Role::Editor,
        )
        .await,
        admin: signed_in(
            store,
            &w.metropole,
            "admin@metropole.example.fr",
            Role::Admin,
        )
        .await,
    };
    let acts = [
        Act::Create,
        Act::Patch,
        Act::Delete,
        Act::Confirm,
        Act::History,
        Act::Bulk,
        Act::Export,
        Act::Withdraw,
    ];
    let mut checked = 0;
    for who in [
        Who::Operator,
        Who::Admin,
        Who::Editor,
        Who::Token,
        Who::Anonymous,
    ] {
        for act in acts {
            for own in [true, false] {
                let surfaces: &[bool] = match who {
                    Who::Operator | Who::Token => &[false],
                    Who::Admin | Who::Editor => &[true],
                    Who::Anonymous => &[false, true],
                };
                for &pages in surfaces {
                    if pages && (act == Act::Withdraw || (act == Act::Export && !own)) {
                        // No page withdraws an organisation; the export page names no other.
                        continue;
                    }
                    let allowed = match who {
                        Who::Operator => true,
                        Who::Anonymous => false,
                        Who::Token => own && act != Act::Withdraw,
                        Who::Admin | Who::Editor => own,
                    };
                    let before: i64 = proximites::on_engine!(&store, |db| sqlx::query_scalar(
                        "SELECT COUNT(*) FROM service_history"
                    )
                    .fetch_one(db)
                    .await)
                    .unwrap();
                    let (status, location) = perform(&w, &c, who, act, own, pages).await;
                    let case =
                        format!("{who:?} {act:?} own={own} pages={pages}: {status} {location:?}");
                    let expected = match (allowed, pages, act) {
                        (false, false, _) if who == Who::Anonymous => StatusCode::UNAUTHORIZED,
                        (false, true, _) if who == Who::Anonymous => StatusCode::SEE_OTHER,
                        (false, _, _) => StatusCode::FORBIDDEN,
                        (true, false, Act::Create) => StatusCode::CREATED,
                        (true, false, _) => StatusCode::OK,
                        (true, true, Act::History | Act::Bulk | Act::Export) => StatusCode::OK,
                        (true, true, _) => StatusCode::SEE_OTHER,
                    };
                    assert_eq!(status, expected, "{case}");
                    if who == Who::Anonymous && pages {
                        assert_eq!(location.as_deref(), Some("/espace/connexion"), "{case}");
                    }
                    if !allowed {
                        // Refused: nothing recorded beyond the test's own fresh entry.
                        let after: i64 = proximites::on_engine!(&store, |db| sqlx::query_scalar(
                            "SELECT COUNT(*) FROM service_history"
                        )
                        .fetch_one(db)
                        .await)
                        .unwrap();
                        assert_eq!(after, before + 1, "{case} wrote something");
                    }
                    checked += 1;
                }
            }
        }
    }
    // 5 actors × 8 actions × 2 organisations, anonymous on both surfaces (16 more), less what
    // no page offers to admin, editor and anonymous (withdraw ×2, another's export): 3 × 3.
    assert_eq!(checked, 5 * 8 * 2 + 16 - 3 * 3, "every case ran");
}
