//! The contributors' pages through the router: invitation, login (rate-limited), session cookie
//! scoped to `/espace`, CSRF on every form, editing with errors next to fields, the concurrent
//! edit told to the second editor, history and restore; and no cookie on citizen pages.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use proximites::accounts::store::{self, NewOrganisation};
use proximites::accounts::{Area, Role, Territory};
use tower::ServiceExt;

use common::accounts::{operator_signed_in, organisation, signed_in};
use common::{database, Fixture};

struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    html: String,
}

async fn request(
    router: &axum::Router,
    method: Method,
    uri: &str,
    cookie: Option<&str>,
    form: Option<&[(&str, &str)]>,
    extra: &[(&str, &str)],
) -> Page {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(cookie) = cookie {
        builder = builder.header("cookie", cookie);
    }
    for (k, v) in extra {
        builder = builder.header(*k, *v);
    }
    let request = match form {
        Some(pairs) => builder
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(proximites::web::encode_query(pairs))),
        None => builder.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Page {
        status,
        headers,
        html: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// The value of the hidden field `name` in the (first) form of `html`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..start + html[start..].find('"').unwrap()].replace("&quot;", "\"")
}

fn session_cookie(page: &Page) -> String {
    let set = page.headers["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn an_invited_editor_signs_in_and_maintains_the_entries() {
    let (dir, store, reference) = database(true).await;
    let organisation = organisation(
        &store,
        "Clermont Auvergne Métropole",
        "epci",
        "epci:246300701",
    )
    .await;
    let secret = store::invite(&store, &organisation.id, "redac@example.fr", Role::Editor)
        .await
        .unwrap();
    let f = Fixture::serve(dir, store, reference).await;
    let router = &f.router;

    // The citizen pages set no cookie, with or without one sent.
    for path in [
        "/",
        "/recherche?q=mairie",
        "/evenements-de-vie",
        "/integrer",
    ] {
        let page = request(router, Method::GET, path, None, None, &[]).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(
            !page.headers.contains_key("set-cookie"),
            "{path} sets a cookie"
        );
    }

    // Without a session the pages send to the login.
    let anonymous = request(router, Method::GET, "/espace", None, None, &[]).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers["location"], "/espace/connexion");

    // The invitation: the password must be long enough and typed twice the same.
    let invitation = format!("/espace/invitation/{secret}");
    let form = request(router, Method::GET, &invitation, None, None, &[]).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(
        form.html.contains("redac@example.fr") && form.html.contains("Clermont Auvergne Métropole")
    );
    let csrf = hidden(&form.html, "csrf");
    let short = request(
        router,
        Method::POST,
        &invitation,
        None,
        Some(&[
            ("csrf", &csrf),
            ("password", "court"),
            ("confirmation", "court"),
        ]),
        &[],
    )
    .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(short.html.contains("12 caractères"));
    let forged = request(
        router,
        Method::POST,
        &invitation,
        None,
        Some(&[
            ("csrf", "1.abc"),
            ("password", "un mot de passe long"),
            ("confirmation", "un mot de passe long"),
        ]),
        &[],
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let accepted = request(
        router,
        Method::POST,
        &invitation,
        None,
        Some(&[
            ("csrf", &csrf),
            ("password", "un mot de passe long"),
            ("confirmation", "un mot de passe long"),
        ]),
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER, "{}", accepted.html);
    let set = accepted.headers["set-cookie"].to_str().unwrap().to_owned();
    for part in ["Path=/espace", "HttpOnly", "SameSite=Lax", "Secure"] {
        assert!(set.contains(part), "{set} lacks {part}");
    }
    // Used once only.
    let again = request(router, Method::GET, &invitation, None, None, &[]).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);

    // Login: a wrong password is refused, and too many are stopped before the check.
    let login = request(router, Method::GET, "/espace/connexion", None, None, &[]).await;
    let csrf = hidden(&login.html, "csrf");
    let login_set = login.headers["set-cookie"].to_str().unwrap();
    for part in ["Path=/espace/connexion", "HttpOnly", "SameSite=Strict"] {
        assert!(login_set.contains(part), "{login_set} lacks {part}");
    }
    let login_cookie = login_set.split(';').next().unwrap().to_owned();
    // The token is bound to the browser it was shown in: without its cookie, or with another
    // browser's, it is refused (login CSRF); so is a form sent from another site.
    let other_browser = request(router, Method::GET, "/espace/connexion", None, None, &[]).await;
    let other_cookie = other_browser.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let credentials = [
        ("csrf", csrf.as_str()),
        ("email", "REDAC@example.fr"),
        ("password", "un mot de passe long"),
    ];
    for cookie in [None, Some(other_cookie.as_str())] {
        let replayed = request(
            router,
            Method::POST,
            "/espace/connexion",
            cookie,
            Some(&credentials),
            &[],
        )
        .await;
        assert_eq!(replayed.status, StatusCode::FORBIDDEN, "{cookie:?}");
        assert!(replayed.headers.get("set-cookie").is_some());
    }
    for (header, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "https://evil.example"),
        ("origin", "null"),
    ] {
        let forged = request(
            router,
            Method::POST,
            "/espace/connexion",
            Some(&login_cookie),
            Some(&credentials),
            &[(header, value), ("host", "annuaire.example.fr")],
        )
        .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "{header}: {value}");
        assert!(forged.html.contains("cross_site_form"), "{}", forged.html);
    }
    for _ in 0..proximites::accounts::LOGIN_FAILURES {
        let wrong = request(
            router,
            Method::POST,
            "/espace/connexion",
            Some(&login_cookie),
            Some(&[
                ("csrf", &csrf),
                ("email", "intrus@example.fr"),
                ("password", "devine"),
            ]),
            &[],
        )
        .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    }
    let limited = request(
        router,
        Method::POST,
        "/espace/connexion",
        Some(&login_cookie),
        Some(&[
            ("csrf", &csrf),
            ("email", "intrus@example.fr"),
            ("password", "devine"),
        ]),
        &[],
    )
    .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let signed_in = request(
        router,
        Method::POST,
        "/espace/connexion",
        Some(&login_cookie),
        Some(&[
            ("csrf", &csrf),
            ("email", "REDAC@example.fr"),
            ("password", "un mot de passe long"),
        ]),
        &[],
    )
    .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.html
    );
    let cookie = session_cookie(&signed_in);
    assert!(
        !set.contains(cookie.split('=').nth(1).unwrap()),
        "a login renews the session"
    );
    // The older session ended with the new login.
    let old = request(
        router,
        Method::GET,
        "/espace",
        Some(set.split(';').next().unwrap()),
        None,
        &[],
    )
    .await;
    assert_eq!(old.status, StatusCode::SEE_OTHER);
    let cookie = Some(cookie.as_str());

    // A new entry: errors next to their fields, then created.
    let new = request(
        router,
        Method::GET,
        "/espace/fiches/nouvelle",
        cookie,
        None,
        &[],
    )
    .await;
    assert_eq!(new.status, StatusCode::OK);
    assert_eq!(new.headers["cache-control"], "no-store");
    let csrf = hidden(&new.html, "csrf");
    let mut fields = vec![
        ("csrf", csrf.as_str()),
        ("typology", "mairie"),
        ("name", "Maison du Zéphyr"),
        ("lon", "3.0870"),
        ("lat", "45.7772"),
        ("email", "faux"),
    ];
    let invalid = request(
        router,
        Method::POST,
        "/espace/fiches/nouvelle",
        cookie,
        Some(&fields),
        &[],
    )
    .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        invalid.html.contains("id=\"email-erreur\""),
        "{}",
        invalid.html
    );
    assert!(invalid.html.contains("aria-invalid=\"true\""));
    fields.pop();
    let without_csrf: Vec<_> = fields[1..].to_vec();
    let refused = request(
        router,
        Method::POST,
        "/espace/fiches/nouvelle",
        cookie,
        Some(&without_csrf),
        &[],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let created = request(
        router,
        Method::POST,
        "/espace/fiches/nouvelle",
        cookie,
        Some(&fields),
        &[],
    )
    .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.html);
    let edit_path = created.headers["location"]
        .to_str()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let id = edit_path.rsplit('/').next().unwrap().to_owned();

    // It is in the list, and in the public search at once.
    let list = request(router, Method::GET, "/espace?nom=zéphyr", cookie, None, &[]).await;
    assert!(list.html.contains("Maison du Zéphyr"));
    let search = request(
        router,
        Method::GET,
        "/api/v1/services?q=zephyr",
        None,
        None,
        &[],
    )
    .await;
    assert!(search.html.contains(&id));

    // Two editors open the form; the first saves, the second is told and loses nothing.
    let form = request(router, Method::GET, &edit_path, cookie, None, &[]).await;
    assert!(form.html.contains("Aperçu des horaires"));
    let etag = hidden(&form.html, "etag");
    let csrf = hidden(&form.html, "csrf");
    let base = [
        ("csrf", csrf.as_str()),
        ("etag", etag.as_str()),
        ("typology", "mairie"),
        ("lon", "3.0870"),
        ("lat", "45.7772"),
    ];
    let mut first = base.to_vec();
    first.extend([
        ("name", "Maison du Zéphyr"),
        ("opening_hours", "Mo-Fr 09:00-12:00"),
    ]);
    let saved = request(router, Method::POST, &edit_path, cookie, Some(&first), &[]).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.html);
    let mut second = base.to_vec();
    second.extend([("name", "Maison du Zéphyr et des Alizés")]);
    let stale = request(router, Method::POST, &edit_path, cookie, Some(&second), &[]).await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert!(stale.html.contains("Quelqu'un a enregistré cette fiche"));
    assert!(
        stale.html.contains("Maison du Zéphyr et des Alizés"),
        "the typed values stay in the form"
    );

    // Withdraw, then restore from the history page.
    let withdrawn = request(
        router,
        Method::POST,
        &format!("{edit_path}/retirer"),
        cookie,
        Some(&[("csrf", &csrf)]),
        &[],
    )
    .await;
    assert_eq!(withdrawn.status, StatusCode::SEE_OTHER);
    let public = request(
        router,
        Method::GET,
        &format!("/services/{id}"),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(public.status, StatusCode::NOT_FOUND);
    let history = request(
        router,
        Method::GET,
        &format!("{edit_path}/historique"),
        cookie,
        None,
        &[],
    )
    .await;
    assert!(
        history.html.contains("retrait")
            && history.html.contains("modification")
            && history.html.contains("création")
    );
    assert!(history.html.contains("redac@example.fr"));
    assert!(
        history.html.contains("— → Mo-Fr 09:00-12:00"),
        "{}",
        history.html
    );
    let restore = history
        .html
        .split("action=\"")
        .nth(2)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert!(restore.ends_with("/restaurer"), "{restore}");
    let restored = request(
        router,
        Method::POST,
        &restore,
        cookie,
        Some(&[("csrf", &csrf)]),
        &[],
    )
    .await;
    assert_eq!(restored.status, StatusCode::SEE_OTHER);
    let public = request(
        router,
        Method::GET,
        &format!("/services/{id}"),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(public.status, StatusCode::OK);

    // Another organisation's entry (a demo town hall) gives the same refusal as no entry.
    let (demo,): (String,) = proximites::on_engine!(&f.state.store, |db| sqlx::query_as(
        "SELECT id FROM services WHERE source_id <> $1 LIMIT 1"
    )
    .bind(&organisation.id)
    .fetch_one(db)
    .await)
    .unwrap();
    let other = request(
        router,
        Method::GET,
        &format!("/espace/fiches/{demo}"),
        cookie,
        None,
        &[],
    )
    .await;
    let missing = request(
        router,
        Method::GET,
        "/espace/fiches/0000000000000000",
        cookie,
        None,
        &[],
    )
    .await;
    assert_eq!(
        (other.status, missing.status),
        (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN)
    );
    assert_eq!(other.html, missing.html);

    // Logging out ends the session.
    let out = request(
        router,
        Method::POST,
        "/espace/deconnexion",
        cookie,
        Some(&[("csrf", &csrf)]),
        &[],
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let after = request(router, Method::GET, "/espace", cookie, None, &[]).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn commitments_reports_queue_and_export_pages() {
    let (dir, store, reference) = database(false).await;
    let riom = store::create_organisation(
        &store,
        &NewOrganisation {
            name: "Ville de Riom".into(),
            kind: "commune".into(),
            territory: Territory(vec![
                Area::parse("commune:63300").unwrap(),
                Area::parse("commune:63113").unwrap(),
            ]),
            typologies: vec!["mairie".into(), "pharmacie".into()],
            referent_email: Some("referente@riom.example.fr".into()),
            ..NewOrganisation::default()
        },
    )
    .await
    .unwrap();
    let other = organisation(&store, "Autre", "other", "departement:03").await;
    let (cookie, csrf) = signed_in(&store, &riom.id, "admin@riom.example.fr", Role::Admin).await;
    let (other_cookie, other_csrf) =
        signed_in(&store, &other.id, "x@autre.example.fr", Role::Editor).await;
    let f = Fixture::serve(dir, store, reference).await;
    let router = &f.router;
    let operator = proximites::accounts::Actor {
        kind: proximites::accounts::ActorKind::User {
            id: "usr-op".into(),
            email: "op@example.fr".into(),
        },
        role: Role::Operator,
        organisation: None,
    };
    let fields = serde_json::json!({"organisation_id": riom.id, "typology": "mairie", "name": "Mairie de Riom", "lon": 3.1133, "lat": 45.8937});
    let entry = proximites::services::write::create(
        &f.state,
        &operator,
        proximites::services::history::Via::Page,
        proximites::services::write::NewEntry {
            fields: fields.as_object().unwrap().clone(),
        },
    )
    .await
    .unwrap()
    .service;

    // Commitments: the town hall is there; Clermont lacks one; no pharmacy anywhere.
    let page = request(
        router,
        Method::GET,
        "/espace/engagements",
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.html;
    let mairie = &html[html.find("(mairie)").unwrap()..];
    let mairie = &mairie[..mairie.find("</tr>").unwrap()];
    assert!(
        mairie.contains("<td>1</td>")
            && mairie.contains("1 commune")
            && mairie.contains("Clermont-Ferrand"),
        "{mairie}"
    );
    let pharmacie = &html[html.find("(pharmacie)").unwrap()..];
    let pharmacie = &pharmacie[..pharmacie.find("</tr>").unwrap()];
    assert!(
        pharmacie.contains("<td>0</td>") && pharmacie.contains("2 communes"),
        "{pharmacie}"
    );
    // Clermont's town hall harvested from a national source: counted, as citizens see it.
    let harvested = proximites::import::import(
        &f.state.store,
        &f.state.reference,
        proximites::import::Input::Bytes {
            name: "annuaire.csv".into(),
            bytes: "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description\nm-63113,mairie,Mairie de Clermont-Ferrand,,,,63113,3.0863,45.7797,,,,,,\n".into(),
        },
        proximites::import::ImportOptions {
            source: Some("Annuaire de l'administration (DILA)".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(harvested.created, 1, "{harvested:?}");
    let page = request(
        router,
        Method::GET,
        "/espace/engagements",
        Some(&cookie),
        None,
        &[],
    )
    .await;
    let html = page.html;
    let mairie = &html[html.find("(mairie)").unwrap()..];
    let mairie = &mairie[..mairie.find("</tr>").unwrap()];
    assert!(
        mairie.contains("<td>2</td><td>1</td>") && mairie.contains("aucune"),
        "{mairie}"
    );

    // A citizen report reaches the queue; the admin moves it on; another organisation cannot.
    let token = f
        .state
        .web
        .form_token
        .issue(proximites::reports::unix_now() - 30);
    let sent = request(
        router,
        Method::POST,
        &format!("/services/{}/signaler", entry.id),
        None,
        Some(&[
            ("message", "Le numéro a changé"),
            ("email", ""),
            ("jeton", &token),
            ("site", ""),
        ]),
        &[],
    )
    .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.html);
    let (report,): (String,) = proximites::on_engine!(&f.state.store, |db| sqlx::query_as(
        "SELECT id FROM reports WHERE service_id = $1"
    )
    .bind(entry.id.as_str())
    .fetch_one(db)
    .await)
    .unwrap();
    // The référent is told, through the outbox, once, French first.
    let mails: Vec<(String, String, String)> =
        proximites::on_engine!(&f.state.store, |db| sqlx::query_as(
            "SELECT dedupe_key, recipient, body FROM outbox"
        )
        .fetch_all(db)
        .await)
        .unwrap();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].0, format!("report:{report}"));
    assert_eq!(mails[0].1, "referente@riom.example.fr");
    assert!(
        mails[0].2.contains("Le numéro a changé")
            && mails[0].2.find("Bonjour") < mails[0].2.find("Hello"),
        "{}",
        mails[0].2
    );
    let queue = request(
        router,
        Method::GET,
        "/espace/signalements?statut=new",
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert!(queue.html.contains("Le numéro a changé") && queue.html.contains("Mairie de Riom"));
    let elsewhere = request(
        router,
        Method::GET,
        "/espace/signalements",
        Some(&other_cookie),
        None,
        &[],
    )
    .await;
    assert!(!elsewhere.html.contains("Le numéro a changé"));
    let uri = format!("/espace/signalements/{report}");
    let refused = request(
        router,
        Method::POST,
        &uri,
        Some(&other_cookie),
        Some(&[("csrf", &other_csrf), ("statut", "rejected")]),
        &[],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let moved = request(
        router,
        Method::POST,
        &uri,
        Some(&cookie),
        Some(&[("csrf", &csrf), ("statut", "in_progress")]),
        &[],
    )
    .await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER);
    let (status,): (String,) = proximites::on_engine!(&f.state.store, |db| sqlx::query_as(
        "SELECT status FROM reports WHERE id = $1"
    )
    .bind(&report)
    .fetch_one(db)
    .await)
    .unwrap();
    assert_eq!(status, "in_progress");

    // The restitution button gives the ZIP.
    let zip = request(
        router,
        Method::GET,
        "/espace/organisation/export",
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert_eq!(zip.status, StatusCode::OK);
    assert_eq!(zip.headers["content-type"], "application/zip");

    // The admin invites from the pages: the link goes by e-mail (outbox), not onto the page;
    // a person of another organisation (an editor) may not invite.
    let team = request(
        router,
        Method::GET,
        "/espace/equipe",
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert!(
        team.html.contains("Inviter une personne") && team.html.contains("admin@riom.example.fr")
    );
    let wrong = request(
        router,
        Method::POST,
        "/espace/equipe",
        Some(&cookie),
        Some(&[
            ("csrf", &csrf),
            ("email", "pas-une-adresse"),
            ("role", "editor"),
        ]),
        &[],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(wrong.html.contains("href=\"#email\"") && wrong.html.contains("aria-invalid=\"true\""));
    let invited = request(
        router,
        Method::POST,
        "/espace/equipe",
        Some(&cookie),
        Some(&[
            ("csrf", &csrf),
            ("email", "Nouvelle@Riom.example.fr"),
            ("role", "editor"),
        ]),
        &[],
    )
    .await;
    assert_eq!(invited.status, StatusCode::OK, "{}", invited.html);
    assert!(
        invited.html.contains("invitation en attente")
            && !invited.html.contains("/espace/invitation/")
    );
    let (recipient, body): (String, String) =
        proximites::on_engine!(&f.state.store, |db| sqlx::query_as(
            "SELECT recipient, body FROM outbox WHERE dedupe_key LIKE 'invitation:%'"
        )
        .fetch_one(db)
        .await)
        .unwrap();
    assert_eq!(recipient, "nouvelle@riom.example.fr");
    let link = body
        .split_whitespace()
        .find(|w| w.contains("/espace/invitation/"))
        .unwrap();
    let path = &link[link.find("/espace/").unwrap()..];
    let form = request(router, Method::GET, path, None, None, &[]).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.html.contains("nouvelle@riom.example.fr"));
    let refused = request(
        router,
        Method::POST,
        "/espace/equipe",
        Some(&other_cookie),
        Some(&[
            ("csrf", &other_csrf),
            ("email", "x@y.example.fr"),
            ("role", "admin"),
        ]),
        &[],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // API tokens from the same page: a name is required; the secret is shown once, works, its
    // last use is shown; revoked, it no longer works; another organisation cannot revoke it.
    let unnamed = request(
        router,
        Method::POST,
        "/espace/equipe/jetons",
        Some(&cookie),
        Some(&[("csrf", &csrf), ("name", " ")]),
        &[],
    )
    .await;
    assert_eq!(unnamed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        unnamed
            .html
            .contains(&format!("id=\"jeton-nom-{}-erreur\"", riom.id)),
        "{}",
        unnamed.html
    );
    let created = request(
        router,
        Method::POST,
        "/espace/equipe/jetons",
        Some(&cookie),
        Some(&[("csrf", &csrf), ("name", "SIG de la ville")]),
        &[],
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.html);
    let at = created
        .html
        .find("value=\"pxm_")
        .expect("the token, shown once")
        + 7;
    let secret = created.html[at..at + created.html[at..].find('"').unwrap()].to_owned();
    let used = request(
        router,
        Method::POST,
        "/api/v1/services/bulk?dry_run=true",
        None,
        None,
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("content-type", "text/csv"),
        ],
    )
    .await;
    assert_ne!(used.status, StatusCode::UNAUTHORIZED, "{}", used.html);
    let team = request(
        router,
        Method::GET,
        "/espace/equipe",
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert!(!team.html.contains(&secret), "never shown again");
    let row = &team.html[team.html.find("SIG de la ville").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(!row.contains("jamais"), "its last use is shown: {row}");
    let at = row.find("/espace/equipe/jetons/").unwrap();
    let revoke = &row[at..at + row[at..].find('"').unwrap()];
    let foreign = request(
        router,
        Method::POST,
        revoke,
        Some(&other_cookie),
        Some(&[("csrf", &other_csrf)]),
        &[],
    )
    .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let revoked = request(
        router,
        Method::POST,
        revoke,
        Some(&cookie),
        Some(&[("csrf", &csrf)]),
        &[],
    )
    .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    let refused = request(
        router,
        Method::POST,
        "/api/v1/services/bulk?dry_run=true",
        None,
        None,
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("content-type", "text/csv"),
        ],
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let team = request(
        router,
        Method::GET,
        "/espace/equipe",
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert!(team.html.contains("révoqué le"));
}

#[tokio::test]
async fn the_operator_sets_a_campaign_and_follows_its_progress() {
    use proximites::services::{history::Via, write};
    let (dir, store, reference) = database(false).await;
    let metropole = organisation(
        &store,
        "Clermont Auvergne Métropole",
        "epci",
        "epci:246300701",
    )
    .await;
    let (operator_cookie, operator_csrf) = operator_signed_in(&store).await;
    let (editor_cookie, editor_csrf) =
        signed_in(&store, &metropole.id, "e@example.fr", Role::Editor).await;
    let f = Fixture::serve(dir, store, reference).await;
    let router = &f.router;
    let editor = proximites::accounts::store::session(
        &f.state.store,
        editor_cookie.split('=').nth(1).unwrap(),
    )
    .await
    .unwrap()
    .unwrap()
    .0;
    let mut ids = Vec::new();
    for name in ["Un", "Deux", "Trois"] {
        let fields = serde_json::json!({"typology": "mairie", "name": format!("Mairie annexe {name}"), "lon": 3.0870, "lat": 45.7772});
        let written = write::create(
            &f.state,
            &editor,
            Via::Page,
            write::NewEntry {
                fields: fields.as_object().unwrap().clone(),
            },
        )
        .await
        .unwrap();
        ids.push(written.service);
    }

    // As if imported before the campaign, never confirmed since.
    proximites::on_engine!(&f.state.store, |db| sqlx::query(
        "UPDATE services SET verified_at = NULL"
    )
    .execute(db)
    .await
    .map(|r| r.rows_affected()))
    .unwrap();
    let ids: Vec<_> = proximites::services::store::get_many(
        &f.state.store,
        &ids.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    let mut ids = ids;
    ids.sort_by(|a, b| a.content.name.cmp(&b.content.name));
    let today = chrono::Utc::now().date_naive();
    let start = (today - chrono::Days::new(1)).to_string();
    let end = (today + chrono::Days::new(30)).to_string();
    let refused = request(
        router,
        Method::POST,
        "/espace/campagnes",
        Some(&editor_cookie),
        Some(&[
            ("csrf", &editor_csrf),
            ("name", "Printemps"),
            ("starts_on", &start),
            ("ends_on", &end),
        ]),
        &[],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let invalid = request(
        router,
        Method::POST,
        "/espace/campagnes",
        Some(&operator_cookie),
        Some(&[
            ("csrf", &operator_csrf),
            ("name", "Printemps"),
            ("starts_on", &end),
            ("ends_on", "demain"),
        ]),
        &[],
    )
    .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(invalid.html.contains("id=\"ends_on-erreur\""));
    let created = request(
        router,
        Method::POST,
        "/espace/campagnes",
        Some(&operator_cookie),
        Some(&[
            ("csrf", &operator_csrf),
            ("name", "Campagne de printemps"),
            ("starts_on", &start),
            ("ends_on", &end),
        ]),
        &[],
    )
    .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER);

    // One confirmed, one updated, one left to review.
    write::confirm(&f.state, &editor, Via::Page, ids[0].id.as_str())
        .await
        .unwrap();
    let patch = serde_json::json!({"phone": "04 73 00 00 00"});
    write::update(
        &f.state,
        &editor,
        Via::Page,
        ids[1].id.as_str(),
        Some(&write::etag(&ids[1])),
        patch.as_object().unwrap(),
    )
    .await
    .unwrap();
    let page = request(
        router,
        Method::GET,
        "/espace/campagnes",
        Some(&operator_cookie),
        None,
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let row = &page.html[page
        .html
        .find("<th scope=\"row\">Clermont Auvergne Métropole")
        .unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains("<td>3</td><td>1</td><td>1</td><td>1</td><td>66 %</td>"),
        "{row}"
    );
    assert!(page
        .html
        .contains("Avancement d'ensemble : <strong>66 %</strong>"));
    // The editor sees its own organisation's progress, without the form.
    let own = request(
        router,
        Method::GET,
        "/espace/campagnes",
        Some(&editor_cookie),
        None,
        &[],
    )
    .await;
    assert!(own.html.contains("66 %") && !own.html.contains("Nouvelle campagne"));
}

#[tokio::test]
async fn organisations_are_set_from_the_pages() {
    let (dir, store, reference) = database(false).await;
    let riom = organisation(&store, "Ville de Riom", "commune", "commune:63300").await;
    let (operator, operator_csrf) = operator_signed_in(&store).await;
    let (admin, admin_csrf) =
        signed_in(&store, &riom.id, "admin@riom.example.fr", Role::Admin).await;
    let (editor, editor_csrf) =
        signed_in(&store, &riom.id, "e@riom.example.fr", Role::Editor).await;
    let f = Fixture::serve(dir, store, reference).await;
    let router = &f.router;

    // The operator creates one: every wrong field said next to it, nothing written.
    let form = request(
        router,
        Method::GET,
        "/espace/organisations/nouvelle",
        Some(&operator),
        None,
        &[],
    )
    .await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.html.contains("<label for=\"territory\">"));
    let wrong = request(
        router,
        Method::POST,
        "/espace/organisations/nouvelle",
        Some(&operator),
        Some(&[
            ("csrf", &operator_csrf),
            ("name", "Clermont Auvergne Métropole"),
            ("kind", "epci"),
            ("siren", "2463"),
            ("territory", "epci:999999999"),
            ("typologies", "mairie, licorne"),
            ("referent_email", "pas-une-adresse"),
        ]),
        &[],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["siren", "territory", "typologies", "referent_email"] {
        assert!(
            wrong.html.contains(&format!("id=\"{field}-erreur\""))
                && wrong.html.contains(&format!("href=\"#{field}\"")),
            "{field}: {}",
            wrong.html
        );
    }
    assert!(
        wrong.html.contains("value=\"mairie, licorne\""),
        "what was typed is kept"
    );
    let created = request(
        router,
        Method::POST,
        "/espace/organisations/nouvelle",
        Some(&operator),
        Some(&[
            ("csrf", &operator_csrf),
            ("name", "Clermont Auvergne Métropole"),
            ("kind", "epci"),
            ("siren", "246300701"),
            ("territory", "epci:246300701"),
            ("typologies", "mairie, bibliotheque"),
            ("convention_start", "2026-01-01"),
            ("convention_end", "2028-12-31"),
            ("referent_name", "Claire Dupont"),
            ("referent_email", "Referente@Clermont.example.fr"),
        ]),
        &[],
    )
    .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.html);
    let location = created.headers["location"].to_str().unwrap().to_owned();
    let id = location
        .trim_start_matches("/espace/organisations/")
        .trim_end_matches("?enregistree=1")
        .to_owned();
    let stored = store::organisation(&f.state.store, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.typologies, vec!["mairie", "bibliotheque"]);
    assert_eq!(
        stored.referent_email.as_deref(),
        Some("referente@clermont.example.fr")
    );
    assert_eq!(
        stored.convention_end,
        chrono::NaiveDate::from_ymd_opt(2028, 12, 31)
    );

    // Riom's admin changes its référent only; the convention stays the operator's.
    let page = request(
        router,
        Method::GET,
        &format!("/espace/organisations/{}", riom.id),
        Some(&admin),
        None,
        &[],
    )
    .await;
    assert!(
        page.html.contains(
            "id=\"territory\" name=\"territory\" type=\"text\" value=\"commune:63300\" readonly"
        ),
        "{}",
        page.html
    );
    let saved = request(
        router,
        Method::POST,
        &format!("/espace/organisations/{}", riom.id),
        Some(&admin),
        Some(&[
            ("csrf", &admin_csrf),
            ("territory", "departement:63"),
            ("referent_name", "Jean Martin"),
            ("referent_email", "jean.martin@riom.example.fr"),
            ("referent_phone", "04 73 33 79 00"),
        ]),
        &[],
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.html);
    let stored = store::organisation(&f.state.store, &riom.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.territory, vec!["commune:63300"]);
    assert_eq!(
        stored.referent_email.as_deref(),
        Some("jean.martin@riom.example.fr")
    );
    // Its editor reads, cannot change; another organisation's settings give nothing.
    let read = request(
        router,
        Method::GET,
        &format!("/espace/organisations/{}", riom.id),
        Some(&editor),
        None,
        &[],
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(!read
        .html
        .contains("<form method=\"post\" action=\"/espace/organisations/"));
    let refused = request(
        router,
        Method::POST,
        &format!("/espace/organisations/{}", riom.id),
        Some(&editor),
        Some(&[("csrf", &editor_csrf), ("referent_name", "X")]),
        &[],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    for uri in [
        format!("/espace/organisations/{id}"),
        "/espace/organisations/nouvelle".to_owned(),
    ] {
        let other = request(router, Method::GET, &uri, Some(&admin), None, &[]).await;
        assert_eq!(other.status, StatusCode::FORBIDDEN, "{uri}");
    }
    // The operator changes the convention.
    let changed = request(
        router,
        Method::POST,
        &format!("/espace/organisations/{}", riom.id),
        Some(&operator),
        Some(&[
            ("csrf", &operator_csrf),
            ("name", "Ville de Riom"),
            ("kind", "commune"),
            ("territory", "commune:63300, commune:63113"),
            ("typologies", "mairie"),
            ("referent_email", "jean.martin@riom.example.fr"),
        ]),
        &[],
    )
    .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.html);
    let stored = store::organisation(&f.state.store, &riom.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.territory, vec!["commune:63300", "commune:63113"]);
    assert_eq!(stored.typologies, vec!["mairie"]);
}

#[tokio::test]
async fn the_contributors_routes_are_in_the_openapi_document() {
    let (dir, store, reference) = database(false).await;
    let f = Fixture::serve(dir, store, reference).await;
    let doc = request(
        &f.router,
        Method::GET,
        "/api/v1/openapi.json",
        None,
        None,
        &[],
    )
    .await;
    let doc: serde_json::Value = serde_json::from_str(&doc.html).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/espace/import", "get"),
        ("/espace/import", "post"),
        ("/espace/import/{upload}/appliquer", "post"),
        ("/espace/equipe", "get"),
        ("/espace/equipe", "post"),
        ("/espace/equipe/jetons", "post"),
        ("/espace/equipe/jetons/{id}/revoquer", "post"),
        ("/espace/organisations", "get"),
        ("/espace/organisations/nouvelle", "get"),
        ("/espace/organisations/nouvelle", "post"),
        ("/espace/organisations/{id}", "get"),
        ("/espace/organisations/{id}", "post"),
        ("/espace/campagnes", "get"),
        ("/espace/campagnes", "post"),
        ("/api/v1/services/bulk", "post"),
        ("/api/v1/organisations/{id}/export", "get"),
        ("/api/v1/organisations/{id}/withdraw", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    let bulk = &paths["/api/v1/services/bulk"]["post"]["parameters"];
    for name in [
        "dry_run",
        "withdraw_missing",
        "confirm_unchanged",
        "organisation",
    ] {
        assert!(
            bulk.as_array().unwrap().iter().any(|p| p["name"] == name),
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_organisation_name_is_taken_once() {
    use proximites::error::Error;
    let (_dir, store, _) = database(false).await;
    let riom = organisation(&store, "Ville de Riom", "commune", "commune:63300").await;
    let volvic = organisation(&store, "Ville de Volvic", "commune", "commune:63470").await;
    let named = |name: &str| NewOrganisation {
        name: name.into(),
        kind: "commune".into(),
        territory: Territory(vec![Area::parse("commune:63470").unwrap()]),
        ..NewOrganisation::default()
    };
    let taken = |result: proximites::error::Result<_>| {
        matches!(
            result,
            Err(Error::Conflict {
                code: "organisation_exists",
                ..
            })
        )
    };
    // Created or renamed onto a name in use (spaces around it aside): a conflict.
    assert!(taken(
        store::create_organisation(&store, &named(" Ville de Riom ")).await
    ));
    assert!(taken(
        store::update_organisation(&store, &volvic.id, &named("Ville de Riom")).await
    ));
    // A free name is written and read back; the other organisation is untouched.
    let renamed = store::update_organisation(&store, &volvic.id, &named("Commune de Volvic"))
        .await
        .unwrap();
    assert_eq!(renamed.name, "Commune de Volvic");
    assert_eq!(renamed.created_at, volvic.created_at);
    let riom_now = store::organisation(&store, &riom.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(riom_now.name, "Ville de Riom");
}

/// The demo's town halls come from the DILA reader, which keeps those whose point lies outside
/// their commune with a quality flag: the operator finds them under « À vérifier », sees why
/// on the entry's page and in its JSON, and a correction of the position settles the flag
/// while an edit of another field keeps it; the monitoring page gives the share per source.
#[tokio::test]
async fn flagged_entries_are_listed_to_check_and_settled_by_a_correction() {
    use proximites::services::{history::Via, write};
    let (dir, store, reference) = database(true).await;
    let (cookie, _) = operator_signed_in(&store).await;
    let f = Fixture::serve(dir, store, reference).await;
    let router = &f.router;
    let flagged: Vec<(String, String, String)> =
        proximites::on_engine!(&f.state.store, |db| sqlx::query_as(
            "SELECT id, insee_code, quality FROM services WHERE quality IS NOT NULL ORDER BY name",
        )
        .fetch_all(db)
        .await)
        .unwrap();
    let n = flagged.len();
    assert!((10..200).contains(&n), "{n} flagged demo town halls");

    for filter in ["signalee", "position_outside_commune"] {
        let list = request(
            router,
            Method::GET,
            &format!("/espace?qualite={filter}"),
            Some(&cookie),
            None,
            &[],
        )
        .await;
        assert_eq!(list.status, StatusCode::OK);
        assert!(
            list.html.contains(&format!("{n} fiches")),
            "{filter}: {}",
            list.html
        );
        assert!(list.html.contains("Position hors de la commune"));
    }
    let none = request(
        router,
        Method::GET,
        "/espace?qualite=phone_unreadable",
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert!(none.html.contains("0 fiche"), "{}", none.html);

    let (id, insee_code, stored) = &flagged[0];
    let flags: serde_json::Value = serde_json::from_str(stored).unwrap();
    let message = flags[0]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("en attendant une correction"), "{message}");
    let page = request(
        router,
        Method::GET,
        &format!("/espace/fiches/{id}"),
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert!(page.html.contains("id=\"a-verifier\""), "{}", page.html);
    let json = request(
        router,
        Method::GET,
        &format!("/api/v1/services/{id}"),
        None,
        None,
        &[],
    )
    .await;
    let entry: serde_json::Value = serde_json::from_str(&json.html).unwrap();
    assert_eq!(entry["quality"][0]["code"], "position_outside_commune");
    assert_eq!(entry["quality"][0]["field"], "insee_code");

    let operator =
        proximites::accounts::store::session(&f.state.store, cookie.split('=').nth(1).unwrap())
            .await
            .unwrap()
            .unwrap()
            .0;
    let quality_of = |id: String| {
        let store = f.state.store.clone();
        async move {
            let (quality,): (Option<String>,) =
                proximites::on_engine!(&store, |db| sqlx::query_as(
                    "SELECT quality FROM services WHERE id = $1"
                )
                .bind(id)
                .fetch_one(db)
                .await)
                .unwrap();
            quality
        }
    };
    let update = |fields: serde_json::Value| {
        let (state, operator, id) = (f.state.clone(), operator.clone(), id.clone());
        async move {
            let service = proximites::services::store::get(
                &state.store,
                &proximites::services::ServiceId::parse(&id).unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
            let etag = write::etag(&service);
            write::update(
                &state,
                &operator,
                Via::Page,
                &id,
                Some(&etag),
                fields.as_object().unwrap(),
            )
            .await
            .unwrap();
        }
    };
    update(serde_json::json!({"description": "Accueil au rez-de-chaussée"})).await;
    assert!(
        quality_of(id.clone()).await.is_some(),
        "another field keeps the doubt"
    );
    let commune = f
        .state
        .reference
        .locator
        .commune(&proximites::territory::InseeCode::parse(insee_code).unwrap())
        .unwrap()
        .clone();
    update(serde_json::json!({"lon": commune.centroid.lon + 0.0001, "lat": commune.centroid.lat, "insee_code": insee_code})).await;
    assert_eq!(
        quality_of(id.clone()).await,
        None,
        "a placed point settles it"
    );

    let department = &insee_code[..2];
    let monitoring = request(
        router,
        Method::GET,
        &format!("/veille/departement:{department}?typology=mairie"),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(monitoring.status, StatusCode::OK);
    assert!(
        monitoring.html.contains("Qualité des données par source")
            && monitoring
                .html
                .contains("Annuaire de l'administration (DILA)"),
        "{}",
        monitoring.html
    );
}

/// A town hall record of the Annuaire de l'administration (bulk shape), in `insee`.
fn dila_record(
    id: &str,
    insee: &str,
    name: &str,
    phone: &str,
    lon: f64,
    lat: f64,
) -> serde_json::Value {
    serde_json::json!({
        "id": id, "nom": name,
        "pivot": [{"type_service_local": "mairie", "code_insee_commune": [insee]}],
        "code_insee_commune": insee,
        "adresse": [{"type_adresse": "Adresse", "numero_voie": "10 rue Philippe-Marcombes",
            "code_postal": "63000", "nom_commune": "Clermont-Ferrand", "pays": "France",
            "longitude": lon.to_string(), "latitude": lat.to_string()}],
        "telephone": [{"valeur": phone, "description": ""}],
    })
}

async fn harvest_dila(
    store: &proximites::db::Store,
    reference: &proximites::import::Reference,
    records: &[serde_json::Value],
) -> proximites::import::ImportReport {
    proximites::import::harvest(
        store,
        reference,
        proximites::import::National::Dila,
        proximites::import::Input::Bytes {
            name: "dila.json".into(),
            bytes: serde_json::json!({ "service": records })
                .to_string()
                .into_bytes(),
        },
        false,
        false,
    )
    .await
    .unwrap()
}

/// A commune claims the town hall the Annuaire harvested (not another commune's); its edits
/// survive the next harvests, which show what the source says differently as suggestions to
/// accept or dismiss; an entry the source drops is flagged, not withdrawn; the operator
/// releases the claim and the source's values come back.
#[tokio::test]
async fn a_commune_claims_its_harvested_town_hall_and_reviews_the_suggestions() {
    let (dir, store, reference) = database(false).await;
    let clermont = dila_record(
        "dila-clermont",
        "63113",
        "Mairie - Clermont-Ferrand",
        "04 73 42 63 63",
        3.0863,
        45.7797,
    );
    let riom = dila_record(
        "dila-riom",
        "63300",
        "Mairie - Riom",
        "04 73 38 99 99",
        3.1130,
        45.8937,
    );
    let first = harvest_dila(&store, &reference, &[clermont.clone(), riom.clone()]).await;
    assert_eq!(first.created, 2, "{first:?}");
    let org = organisation(
        &store,
        "Ville de Clermont-Ferrand",
        "commune",
        "commune:63113",
    )
    .await;
    let (cookie, csrf) = signed_in(&store, &org.id, "mairie@clermont.example", Role::Admin).await;
    let (operator, operator_csrf) = operator_signed_in(&store).await;
    let (_, token) = store::create_token(&store, &org.id, "script")
        .await
        .unwrap();
    let f = Fixture::serve(dir, store, reference).await;
    let router = &f.router;
    let id_of = |source_ref: &'static str| {
        let store = f.state.store.clone();
        async move {
            let (id,): (String,) = proximites::on_engine!(&store, |db| sqlx::query_as(
                "SELECT service_id FROM claims WHERE origin_ref = $1
                 UNION SELECT id FROM services WHERE source_ref = $1",
            )
            .bind(source_ref)
            .fetch_one(db)
            .await)
            .unwrap();
            id
        }
    };
    let clermont_id = id_of("dila-clermont").await;
    let riom_id = id_of("dila-riom").await;

    // « Mes fiches » is empty but lists the town hall of its territory to claim.
    let list = request(router, Method::GET, "/espace", Some(&cookie), None, &[]).await;
    let claimable = &list.html[list
        .html
        .find("id=\"a-revendiquer\"")
        .expect("claimable section")..];
    assert!(
        claimable.contains("Mairie - Clermont-Ferrand"),
        "{claimable}"
    );
    assert!(!claimable.contains("Mairie - Riom"), "{claimable}");
    assert!(claimable.contains(&format!("/espace/fiches/{clermont_id}/revendiquer")));
    let refused = request(
        router,
        Method::POST,
        &format!("/espace/fiches/{riom_id}/revendiquer"),
        Some(&cookie),
        Some(&[("csrf", &csrf)]),
        &[],
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "another commune's town hall"
    );
    let claimed = request(
        router,
        Method::POST,
        &format!("/espace/fiches/{clermont_id}/revendiquer"),
        Some(&cookie),
        Some(&[("csrf", &csrf)]),
        &[],
    )
    .await;
    assert_eq!(claimed.status, StatusCode::SEE_OTHER, "{}", claimed.html);
    let public = request(
        router,
        Method::GET,
        &format!("/api/v1/services/{clermont_id}"),
        None,
        None,
        &[],
    )
    .await;
    let entry: serde_json::Value = serde_json::from_str(&public.html).unwrap();
    assert_eq!(
        entry["source"]["name"], "Ville de Clermont-Ferrand",
        "the commune signs it now"
    );
    let again = request(
        router,
        Method::POST,
        &format!("/api/v1/services/{clermont_id}/claim"),
        None,
        None,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.html);
    assert!(again.html.contains("already_claimed"), "{}", again.html);

    // The commune changes the phone; the source changes name, phone and adds a web site.
    let commune_actor = proximites::accounts::store::actor_for_token(&f.state.store, &token)
        .await
        .unwrap()
        .unwrap();
    let mut fields = serde_json::Map::new();
    fields.insert("phone".into(), "04 73 42 00 00".into());
    let current = proximites::services::store::get(
        &f.state.store,
        &proximites::services::ServiceId::parse(&clermont_id).unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    proximites::services::write::update(
        &f.state,
        &commune_actor,
        proximites::services::history::Via::Api,
        &clermont_id,
        Some(&proximites::services::write::etag(&current)),
        &fields,
    )
    .await
    .unwrap();
    let mut changed = clermont.clone();
    changed["nom"] = "Hôtel de ville de Clermont-Ferrand".into();
    changed["telephone"][0]["valeur"] = "04 73 42 63 00".into();
    changed["site_internet"] =
        serde_json::json!([{"libelle": "", "valeur": "https://clermont-ferrand.fr"}]);
    let second = harvest_dila(
        &f.state.store,
        &f.state.reference,
        &[changed.clone(), riom.clone()],
    )
    .await;
    assert_eq!(
        (
            second.claimed,
            second.suggested,
            second.updated,
            second.created,
            second.withdrawn
        ),
        (1, 1, 0, 0, 0),
        "{second:?}"
    );
    let suggestions = |store: proximites::db::Store, id: String| async move {
        let rows: Vec<(String, String, bool)> = proximites::on_engine!(&store, |db| sqlx::query_as(
            "SELECT field, value, dismissed_at IS NOT NULL FROM suggestions WHERE service_id = $1 ORDER BY field",
        )
        .bind(id)
        .fetch_all(db).await)
        .unwrap();
        rows
    };
    assert_eq!(
        suggestions(f.state.store.clone(), clermont_id.clone()).await,
        [
            (
                "name".to_owned(),
                "Hôtel de ville de Clermont-Ferrand".to_owned(),
                false
            ),
            ("phone".to_owned(), "+33473426300".to_owned(), false),
            (
                "website".to_owned(),
                "https://clermont-ferrand.fr/".to_owned(),
                false
            ),
        ]
    );
    let kept = proximites::services::store::get(&f.state.store, &current.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.content.name, "Mairie - Clermont-Ferrand",
        "the harvest left the entry alone"
    );
    assert_eq!(kept.content.phones[0].e164(), "+33473420000");

    // The entry's page shows them; the commune takes the name and keeps its phone.
    let page = request(
        router,
        Method::GET,
        &format!("/espace/fiches/{clermont_id}"),
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert!(
        page.html.contains("id=\"suggestions\"")
            && page.html.contains("Hôtel de ville de Clermont-Ferrand"),
        "{}",
        page.html
    );
    for (field, action) in [("name", "accepter"), ("phone", "ignorer")] {
        let done = request(
            router,
            Method::POST,
            &format!("/espace/fiches/{clermont_id}/suggestions/{field}/{action}"),
            Some(&cookie),
            Some(&[("csrf", &csrf)]),
            &[],
        )
        .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{field}: {}", done.html);
    }
    let api = request(
        router,
        Method::GET,
        &format!("/api/v1/services/{clermont_id}/suggestions"),
        None,
        None,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    let view: serde_json::Value = serde_json::from_str(&api.html).unwrap();
    assert_eq!(view["claim"]["origin_ref"], "dila-clermont", "{view}");
    let fields: Vec<(&str, bool)> = view["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["field"].as_str().unwrap(), s["dismissed_at"].is_null()))
        .collect();
    assert_eq!(
        fields,
        [("website", true), ("phone", false)],
        "pending first, then dismissed"
    );
    let renamed = proximites::services::store::get(&f.state.store, &current.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.content.name, "Hôtel de ville de Clermont-Ferrand");
    assert_eq!(renamed.content.phones[0].e164(), "+33473420000");

    // The same file again changes nothing: the dismissed phone stays dismissed.
    let third = harvest_dila(
        &f.state.store,
        &f.state.reference,
        &[changed.clone(), riom.clone()],
    )
    .await;
    assert_eq!(
        (third.claimed, third.suggested, third.updated),
        (1, 0, 0),
        "{third:?}"
    );

    // The source drops it: flagged, still published, listed « à vérifier ».
    let dropped = harvest_dila(
        &f.state.store,
        &f.state.reference,
        std::slice::from_ref(&riom),
    )
    .await;
    assert_eq!(
        (dropped.claims_dropped, dropped.withdrawn),
        (1, 0),
        "{dropped:?}"
    );
    let flagged = proximites::services::store::get(&f.state.store, &current.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(flagged.status.as_str(), "published");
    assert_eq!(
        flagged.content.quality[0].code.as_str(),
        "dropped_by_source"
    );
    let list = request(
        router,
        Method::GET,
        "/espace?qualite=dropped_by_source",
        Some(&cookie),
        None,
        &[],
    )
    .await;
    assert!(
        list.html.contains("Hôtel de ville de Clermont-Ferrand"),
        "{}",
        list.html
    );
    let confirmed = request(
        router,
        Method::POST,
        &format!("/espace/fiches/{clermont_id}/confirmer"),
        Some(&cookie),
        Some(&[("csrf", &csrf)]),
        &[],
    )
    .await;
    assert_eq!(confirmed.status, StatusCode::SEE_OTHER);
    let settled = proximites::services::store::get(&f.state.store, &current.id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        settled.content.quality.is_empty(),
        "the commune says the service still exists"
    );

    // The operator releases the claim; the next harvest writes the source's values again.
    let contributor_release = request(
        router,
        Method::DELETE,
        &format!("/api/v1/services/{clermont_id}/claim"),
        None,
        None,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(contributor_release.status, StatusCode::FORBIDDEN);
    let released = request(
        router,
        Method::POST,
        &format!("/espace/fiches/{clermont_id}/liberer"),
        Some(&operator),
        Some(&[("csrf", &operator_csrf)]),
        &[],
    )
    .await;
    assert_eq!(released.status, StatusCode::SEE_OTHER, "{}", released.html);
    let back = harvest_dila(&f.state.store, &f.state.reference, &[changed, riom]).await;
    assert_eq!(
        (back.updated, back.created, back.claimed),
        (1, 0, 0),
        "{back:?}"
    );
    let source_again = proximites::services::store::get(&f.state.store, &current.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        source_again.source_name,
        "Annuaire de l'administration (DILA)"
    );
    assert_eq!(source_again.content.phones[0].e164(), "+33473426300");
    let actions: Vec<(String,)> = proximites::on_engine!(&f.state.store, |db| sqlx::query_as(
        "SELECT action FROM service_history WHERE service_id = $1 ORDER BY id",
    )
    .bind(&clermont_id)
    .fetch_all(db)
    .await)
    .unwrap();
    let actions = actions
        .into_iter()
        .map(|(a,)| a)
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        actions,
        "created,claimed,updated,updated,dropped_by_source,confirmed,released,updated"
    );
}

/// Entries of `source` in the project's CSV: (source_ref, typology, name, lon, lat, insee).
async fn import_as(
    store: &proximites::db::Store,
    reference: &proximites::import::Reference,
    source: &str,
    rows: &[(&str, &str, &str, f64, f64, &str)],
) -> proximites::import::ImportReport {
    let mut text = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description\n".to_owned();
    for (source_ref, typology, name, lon, lat, insee) in rows {
        text.push_str(&format!(
            "{source_ref},{typology},{name},,,,{insee},{lon},{lat},,,,,,\n"
        ));
    }
    proximites::import::import(
        store,
        reference,
        proximites::import::Input::Bytes {
            name: "entries.csv".into(),
            bytes: text.into_bytes(),
        },
        proximites::import::ImportOptions {
            source: Some(source.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// The same town hall from the Annuaire and from its commune is one group: the commune's entry
/// is shown, the Annuaire's hidden (kept, updated by its harvests, still hidden); between two
/// national sources the order of precedence decides, and can be changed; neighbouring
/// pharmacies of different names are two services. The operator separates, shows another,
/// merges, and every later detection follows.
#[tokio::test]
async fn duplicates_across_sources_show_one_entry_and_the_operator_decides() {
    use proximites::services::duplicates::{refresh, Precedence};
    let (dir, store, reference) = database(false).await;
    const BPE: &str = "INSEE Base permanente des équipements (BPE)";
    let clermont = dila_record(
        "dila-clermont",
        "63113",
        "Mairie - Clermont-Ferrand",
        "04 73 42 63 63",
        3.0863,
        45.7797,
    );
    let riom = dila_record(
        "dila-riom",
        "63300",
        "Mairie - Riom",
        "04 73 38 99 99",
        3.1130,
        45.8937,
    );
    harvest_dila(&store, &reference, &[clermont.clone(), riom.clone()]).await;
    let commune = import_as(
        &store,
        &reference,
        "Ville de Clermont-Ferrand",
        &[
            (
                "hdv",
                "mairie",
                "Hôtel de ville de Clermont-Ferrand",
                3.0870,
                45.7798,
                "63113",
            ),
            (
                "ph1",
                "pharmacie",
                "Pharmacie du Centre",
                3.0880,
                45.7790,
                "63113",
            ),
        ],
    )
    .await;
    let pass = commune
        .duplicates
        .clone()
        .unwrap_or_else(|| panic!("{commune:?}"));
    assert_eq!(
        (pass.groups, pass.hidden, pass.newly_hidden),
        (1, 1, 1),
        "{pass:?}"
    );
    let bpe = import_as(
        &store,
        &reference,
        BPE,
        &[
            ("A-riom", "mairie", "Mairie", 3.1138, 45.8939, "63300"),
            (
                "D-gare",
                "pharmacie",
                "Pharmacie de la Gare",
                3.0884,
                45.7792,
                "63113",
            ),
        ],
    )
    .await;
    assert_eq!(
        bpe.duplicates.clone().unwrap().groups,
        2,
        "{:?}",
        bpe.duplicates
    );
    let status = |source_ref: &'static str| {
        let store = store.clone();
        async move {
            let (id, status): (String, String) =
                proximites::on_engine!(&store, |db| sqlx::query_as(
                    "SELECT id, status FROM services WHERE source_ref = $1"
                )
                .bind(source_ref)
                .fetch_one(db)
                .await)
                .unwrap();
            (id, status)
        }
    };
    let (dila_clermont, s) = status("dila-clermont").await;
    assert_eq!(s, "duplicate", "the commune's own entry comes first");
    assert_eq!(status("hdv").await.1, "published");
    let (dila_riom, s) = status("dila-riom").await;
    assert_eq!(s, "published", "the Annuaire before the BPE");
    let (bpe_riom, s) = status("A-riom").await;
    assert_eq!(s, "duplicate");
    assert_eq!(status("ph1").await.1, "published");
    assert_eq!(status("D-gare").await.1, "published", "another pharmacy");

    // The Annuaire changes the hidden town hall: updated, still hidden.
    let mut changed = clermont.clone();
    changed["telephone"][0]["valeur"] = "04 73 42 63 00".into();
    let again = harvest_dila(&store, &reference, &[changed, riom.clone()]).await;
    assert_eq!((again.updated, again.unchanged), (1, 1), "{again:?}");
    assert_eq!(status("dila-clermont").await.1, "duplicate");

    // The operator puts the BPE first: Riom's group turns round.
    Precedence::parse("bpe,dila")
        .unwrap()
        .save(&store)
        .await
        .unwrap();
    let turned = refresh(&store, &reference.taxonomy, None).await.unwrap();
    assert_eq!(
        (turned.newly_hidden, turned.shown_again),
        (1, 1),
        "{turned:?}"
    );
    assert_eq!(status("A-riom").await.1, "published");
    Precedence::default().save(&store).await.unwrap();
    refresh(&store, &reference.taxonomy, None).await.unwrap();

    let (operator, csrf) = operator_signed_in(&store).await;
    let f = Fixture::serve(dir, store, reference).await;
    let router = &f.router;
    let hidden = request(
        router,
        Method::GET,
        &format!("/api/v1/services/{dila_clermont}"),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(
        hidden.status,
        StatusCode::TEMPORARY_REDIRECT,
        "citizens see one town hall"
    );
    let hdv = status_in(&f, "hdv").await;
    assert_eq!(
        hidden.headers["location"],
        format!("/api/v1/services/{}", hdv.0)
    );
    let page = request(
        router,
        Method::GET,
        &format!("/services/{dila_clermont}?lang=en"),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(page.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        page.headers["location"],
        format!("/services/{}?lang=en", hdv.0)
    );
    let list = request(
        router,
        Method::GET,
        "/espace/doublons",
        Some(&operator),
        None,
        &[],
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.html.contains("2 groupes"), "{}", list.html);
    assert!(list.html.contains("Hôtel de ville de Clermont-Ferrand") && list.html.contains(BPE));
    let decide = |decision: &'static str, a: String, b: String| {
        let operator = operator.clone();
        let csrf = csrf.clone();
        async move {
            let page = request(
                router,
                Method::POST,
                "/espace/doublons/decision",
                Some(&operator),
                Some(&[
                    ("csrf", &csrf),
                    ("decision", decision),
                    ("a", &a),
                    ("b", &b),
                ]),
                &[],
            )
            .await;
            assert_eq!(
                page.status,
                StatusCode::SEE_OTHER,
                "{decision}: {}",
                page.html
            );
            page.headers["location"].to_str().unwrap().to_owned()
        }
    };
    let done = decide("separer", dila_clermont.clone(), hdv.0.clone()).await;
    assert!(
        done.contains("groupes=1") && done.contains("affichees=1"),
        "{done}"
    );
    assert_eq!(status_in(&f, "dila-clermont").await.1, "published");
    decide("afficher", bpe_riom.clone(), bpe_riom.clone()).await;
    assert_eq!(status_in(&f, "A-riom").await.1, "published");
    assert_eq!(status_in(&f, "dila-riom").await.1, "duplicate");
    let (ph1, _) = status_in(&f, "ph1").await;
    let (gare, _) = status_in(&f, "D-gare").await;
    decide("fusionner", ph1, gare).await;
    assert_eq!(
        status_in(&f, "D-gare").await.1,
        "duplicate",
        "merged: the commune's is shown"
    );
    // The entry shown for Riom is withdrawn by a person: the Annuaire's comes back at once.
    let (_, operator_token) = store::create_operator_token(&f.state.store, "script")
        .await
        .unwrap();
    let operator_actor = store::actor_for_token(&f.state.store, &operator_token)
        .await
        .unwrap()
        .unwrap();
    proximites::services::write::withdraw(
        &f.state,
        &operator_actor,
        proximites::services::history::Via::Api,
        &bpe_riom,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        status_in(&f, "dila-riom").await.1,
        "published",
        "citizens keep Riom's town hall"
    );
    // Every decision holds at the next detection.
    let later = refresh(
        &f.state.store,
        &f.state.reference.taxonomy,
        Some(&f.state.live),
    )
    .await
    .unwrap();
    assert_eq!(
        (later.groups, later.newly_hidden, later.shown_again),
        (1, 0, 0),
        "{later:?}"
    );
    // An entry typed by a person runs no pass itself: the server's follower groups it.
    let follower = tokio::spawn(proximites::services::duplicates::follow(
        f.state.store.clone(),
        f.state.reference.taxonomy.clone(),
        f.state.live.clone(),
        std::time::Duration::from_millis(50),
    ));
    let (organisation,): (String,) = proximites::on_engine!(&f.state.store, |db| sqlx::query_as(
        "SELECT id FROM organisations WHERE name = 'Ville de Clermont-Ferrand'"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    let mut fields = serde_json::Map::new();
    for (k, v) in [
        ("organisation_id", organisation.as_str()),
        ("typology", "mairie"),
        ("name", "Hôtel de ville de Riom"),
        ("lon", "3.1131"),
        ("lat", "45.8938"),
    ] {
        fields.insert(k.into(), v.into());
    }
    let typed = proximites::services::write::create(
        &f.state,
        &operator_actor,
        proximites::services::history::Via::Api,
        proximites::services::write::NewEntry { fields },
    )
    .await
    .unwrap();
    let mut waited = 0;
    while status_in(&f, "dila-riom").await.1 != "duplicate" {
        assert!(
            waited < 200,
            "the follower groups the typed entry within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    follower.abort();
    let (shown,): (String,) = proximites::on_engine!(&f.state.store, |db| sqlx::query_as(
        "SELECT d.shown_id FROM duplicates d JOIN services s ON s.id = d.service_id
         WHERE s.source_ref = 'dila-riom'",
    )
    .fetch_one(db)
    .await)
    .unwrap();
    assert_eq!(
        shown,
        typed.service.id.to_string(),
        "the commune's entry is shown"
    );
    assert_eq!(
        proximites::services::duplicates::check(&f.state.store)
            .await
            .unwrap(),
        Vec::<String>::new(),
        "statuses and groups agree"
    );
    let refused = request(
        router,
        Method::POST,
        "/espace/doublons/decision",
        Some(&operator),
        Some(&[
            ("csrf", &csrf),
            ("decision", "fusionner"),
            ("a", &dila_riom),
            ("b", "zzzzzzzzzzzzzzzz"),
        ]),
        &[],
    )
    .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    let _ = dila_riom;
}

async fn status_in(f: &Fixture, source_ref: &str) -> (String, String) {
    proximites::on_engine!(&f.state.store, |db| sqlx::query_as(
        "SELECT id, status FROM services WHERE source_ref = $1"
    )
    .bind(source_ref)
    .fetch_one(db)
    .await)
    .unwrap()
}
