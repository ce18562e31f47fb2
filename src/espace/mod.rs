//! The contributors' pages (`/espace/…`): login, invitations, the organisation's entries with
//! filters, the edit form, withdrawal, confirmation, history and restore. The only pages that
//! set a cookie (the session's, scoped to `/espace`); every form carries a CSRF token.

pub mod bulk;
pub mod campaigns;
pub mod claims;
pub mod duplicates;
pub mod organisation;
pub mod pages;
pub mod settings;
pub mod team;

use std::collections::HashMap;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use sha2::{Digest, Sha256};

use crate::accounts::{store, Actor};
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::web::assets;

/// The session cookie's name; its path keeps it away from the citizen pages.
pub const SESSION_COOKIE: &str = "proximites_session";
/// The cookie the login form's token is bound to: a token fetched by someone else is worth
/// nothing in another browser (login CSRF).
pub const LOGIN_COOKIE: &str = "proximites_connexion";

/// A new binding for a login form: the cookie that carries it and the purpose its token signs.
pub fn login_binding(headers: &HeaderMap) -> (HeaderValue, String) {
    let nonce = crate::accounts::new_secret();
    let secure = if secure(headers) { "; Secure" } else { "" };
    let cookie = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={nonce}; Path=/espace/connexion; HttpOnly; SameSite=Strict; Max-Age={ANONYMOUS_FORM_SECONDS}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""));
    (cookie, login_purpose(&nonce))
}

/// What the token of the login form shown with the binding cookie `nonce` signs.
pub fn login_purpose(nonce: &str) -> String {
    format!("login:{nonce}")
}

/// The purpose a login form sent with `headers` must have been signed for (none without the
/// binding cookie: such a token never checks).
pub fn sent_login_purpose(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, LOGIN_COOKIE)
        .filter(|nonce| !nonce.is_empty())
        .map(login_purpose)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/espace", get(pages::entries))
        .route(
            "/espace/connexion",
            get(pages::login_form).post(pages::login),
        )
        .route("/espace/deconnexion", post(pages::logout))
        .route("/espace/commune", get(pages::commune_at))
        .route("/espace/engagements", get(organisation::commitments))
        .route(
            "/espace/campagnes",
            get(campaigns::campaigns_page).post(campaigns::create_campaign),
        )
        .route("/espace/signalements", get(organisation::report_queue))
        .route(
            "/espace/signalements/{id}",
            post(organisation::set_report_status),
        )
        .route("/espace/organisation/export", get(organisation::export))
        .route("/espace/equipe", get(team::team_page).post(team::invite))
        .route("/espace/equipe/jetons", post(team::create_token))
        .route("/espace/organisations", get(settings::list))
        .route(
            "/espace/organisations/nouvelle",
            get(settings::new_form).post(settings::create),
        )
        .route(
            "/espace/organisations/{id}",
            get(settings::settings).post(settings::save),
        )
        .route(
            "/espace/equipe/jetons/{id}/revoquer",
            post(team::revoke_token),
        )
        .route(
            "/espace/import",
            get(bulk::upload_form)
                .post(bulk::check_upload)
                .layer(axum::extract::DefaultBodyLimit::max(bulk::MAX_UPLOAD)),
        )
        .route(
            "/espace/import/{upload}/appliquer",
            post(bulk::apply_upload),
        )
        .route("/espace/horaires", get(pages::hours_fragment))
        .route(
            "/espace/invitation/{secret}",
            get(pages::invitation_form).post(pages::accept_invitation),
        )
        .route(
            "/espace/invitation/{secret}/confirmer",
            post(pages::join_by_invitation),
        )
        .route(
            "/espace/fiches/nouvelle",
            get(pages::new_entry_form).post(pages::create_entry),
        )
        .route(
            "/espace/fiches/{id}",
            get(pages::edit_form).post(pages::save_entry),
        )
        .route("/espace/fiches/{id}/confirmer", post(pages::confirm_entry))
        .route("/espace/fiches/{id}/revendiquer", post(claims::claim_entry))
        .route("/espace/fiches/{id}/liberer", post(claims::release_entry))
        .route("/espace/doublons", get(duplicates::groups_page))
        .route("/espace/doublons/decision", post(duplicates::decide))
        .route("/espace/doublons/detection", post(duplicates::detect))
        .route(
            "/espace/fiches/{id}/suggestions/{field}/accepter",
            post(claims::accept_suggestion),
        )
        .route(
            "/espace/fiches/{id}/suggestions/{field}/ignorer",
            post(claims::dismiss_suggestion),
        )
        .route("/espace/fiches/{id}/retirer", post(pages::withdraw_entry))
        .route("/espace/fiches/{id}/historique", get(pages::history_page))
        .route(
            "/espace/fiches/{id}/historique/{change}/restaurer",
            post(pages::restore_entry),
        )
        .layer(axum::middleware::from_fn(no_store))
        .layer(axum::middleware::from_fn(crate::web::security_headers))
}

/// Pages of a session are never kept by a browser's or a proxy's cache.
pub async fn no_store(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The signed-in person and the CSRF secret of the session.
pub struct Session {
    pub actor: Actor,
    pub csrf: String,
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The session of the request, if any.
pub async fn session(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>> {
    let Some(secret) = cookie_value(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    Ok(store::session(&state.store, secret)
        .await?
        .map(|(actor, csrf)| Session { actor, csrf }))
}

/// The session, or the way to the login page.
pub async fn require(state: &AppState, headers: &HeaderMap) -> Result<Session, Response> {
    match session(state, headers).await {
        Ok(Some(session)) => Ok(session),
        Ok(None) => Err(Redirect::to("/espace/connexion").into_response()),
        Err(error) => Err(error.into_response()),
    }
}

/// The session and the fields of a form it sent, its CSRF token checked: otherwise the way to
/// the login page, or a refusal page with `back` as the way back.
pub async fn signed_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    back: Option<(&str, &str)>,
) -> Result<(Session, HashMap<String, String>), Response> {
    let session = require(state, headers).await?;
    let form = form_fields(body);
    match check_csrf(&session, &form) {
        Ok(()) => Ok((session, form)),
        Err(error) => Err(refused_page(error, Some(&session), back)),
    }
}

/// A refused action as a page: the problem's words with its status, and the way back (a link
/// and its text). A server fault stays a problem document that says nothing inside.
pub fn refused_page(
    error: Error,
    session: Option<&Session>,
    back: Option<(&str, &str)>,
) -> Response {
    let status = error.status();
    if status == axum::http::StatusCode::INTERNAL_SERVER_ERROR {
        return error.into_response();
    }
    let detail = crate::error::Problem::from(&error).detail;
    let body = html! {
        p role="alert" { (detail) }
        @if let Some((href, text)) = back {
            p { a href=(href) { (text) } }
        }
    };
    (status, page("Action impossible", session, body)).into_response()
}

/// Whether the request came over TLS (directly or through a proxy that says so).
fn secure(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` of a new session (or of its end, with `None`).
pub fn session_cookie(headers: &HeaderMap, secret: Option<&str>) -> HeaderValue {
    let secure = if secure(headers) { "; Secure" } else { "" };
    let value = match secret {
        Some(secret) => format!(
            "{SESSION_COOKIE}={secret}; Path=/espace; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            store::SESSION_HOURS * 3600
        ),
        None => {
            format!("{SESSION_COOKIE}=; Path=/espace; HttpOnly; SameSite=Lax; Max-Age=0{secure}")
        }
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Checks the CSRF token a form of the session sent.
pub fn check_csrf(session: &Session, form: &HashMap<String, String>) -> Result<()> {
    let sent = form.get("csrf").map(String::as_str).unwrap_or_default();
    if !sent.is_empty() && constant_eq(sent.as_bytes(), session.csrf.as_bytes()) {
        Ok(())
    } else {
        Err(Error::Forbidden {
            code: "csrf",
            detail: "formulaire expiré ou venu d'ailleurs : rechargez la page / form expired"
                .into(),
        })
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How long a form shown before login (login, invitation) may be sent back.
const ANONYMOUS_FORM_SECONDS: i64 = 2 * 3600;

/// The CSRF token of a form shown without a session: the moment it was shown, signed with the
/// instance's secret and the form's purpose.
pub fn anonymous_token(state: &AppState, purpose: &str, now: i64) -> String {
    format!("{now}.{}", sign(state, purpose, now))
}

fn sign(state: &AppState, purpose: &str, issued: i64) -> String {
    let mut h = Sha256::new();
    h.update(state.web.form_token.issue(issued).as_bytes());
    h.update(purpose.as_bytes());
    hex::encode(&h.finalize()[..16])
}

pub fn check_anonymous_token(
    state: &AppState,
    purpose: &str,
    form: &HashMap<String, String>,
    now: i64,
) -> Result<()> {
    let valid = form
        .get("csrf")
        .and_then(|t| t.split_once('.'))
        .and_then(|(issued, signature)| Some((issued.parse::<i64>().ok()?, signature)))
        .is_some_and(|(issued, signature)| {
            (0..=ANONYMOUS_FORM_SECONDS).contains(&(now - issued))
                && constant_eq(
                    signature.as_bytes(),
                    sign(state, purpose, issued).as_bytes(),
                )
        });
    if valid {
        Ok(())
    } else {
        Err(Error::Forbidden {
            code: "csrf",
            detail: "formulaire expiré ou venu d'ailleurs : rechargez la page / form expired"
                .into(),
        })
    }
}

/// A form body as field → value (the last one wins).
pub fn form_fields(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The « Organisation » choice of the operator's forms, with its error message when it has one.
pub fn organisation_select(organisations: &[(String, String)], error: Option<&str>) -> Markup {
    html! {
        p {
            label for="organisation" { "Organisation" }
            select #organisation name="organisation" required
                aria-invalid=[error.map(|_| "true")]
                aria-describedby=[error.map(|_| "organisation-erreur")] {
                @for (id, name) in organisations { option value=(id) { (name) } }
            }
            @if let Some(m) = error { span.error #organisation-erreur { (m) } }
        }
    }
}

/// The frame of a contributor page: French, the session's person and the logout button.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    page_with_script(title, session, None, body)
}

/// The frame, with one of the embedded scripts (the pages work without it).
pub fn page_with_script(
    title: &str,
    session: Option<&Session>,
    script: Option<&str>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="fr" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Espace contributeurs — Proximités" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(assets::url("site.css"));
                link rel="stylesheet" href=(assets::url("map.css"));
                script src=(assets::url("espace.js")) defer {}
                @if let Some(script) = script { script src=(assets::url(script)) defer {} }
            }
            body {
                a.skip href="#contenu" { "Aller au contenu" }
                header.site-header {
                    div.wrap {
                        a.brand href="/espace" {
                            "Proximités"
                            span.tagline { " · espace contributeurs" }
                        }
                        @if let Some(session) = session {
                            nav aria-label="Menu de l'espace" {
                                ul {
                                    li { a href="/espace" { "Mes fiches" } }
                                    li { a href="/espace/fiches/nouvelle" { "Nouvelle fiche" } }
                                    li { a href="/espace/import" { "Mise à jour en masse" } }
                                    li { a href="/espace/signalements" { "Signalements" } }
                                    li { a href="/espace/engagements" { "Engagements" } }
                                    li { a href="/espace/campagnes" { "Campagnes" } }
                                    li { a href="/espace/annuaires/nouveau" { "Annuaires imprimés" } }
                                    li { a href="/espace/equipe" { "Équipe" } }
                                    li { a href="/espace/organisations" { "Organisation" @if session.actor.organisation_id().is_none() { "s" } } }
                                    @if session.actor.organisation_id().is_none() {
                                        li { a href="/espace/doublons" { "Doublons" } }
                                    }
                                    li {
                                        form method="post" action="/espace/deconnexion" {
                                            input type="hidden" name="csrf" value=(session.csrf);
                                            button type="submit" { "Se déconnecter (" (who(&session.actor)) ")" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                main #contenu tabindex="-1" {
                    div.wrap {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        }
    }
}

fn who(actor: &Actor) -> String {
    match &actor.kind {
        crate::accounts::ActorKind::User { email, .. } => email.clone(),
        crate::accounts::ActorKind::Token { name, .. } => name.clone(),
    }
}
