//! The citizen web interface: server-rendered pages that work without JavaScript (search,
//! entries, life events, home), the widget communes embed, and the security headers that keep
//! every page free of third parties. Scripts and styles come from `frontend/`.

pub mod assets;
pub mod entry;
pub mod home;
pub mod layout;
pub mod life_events;
pub mod search;
pub mod tiles;
pub mod widget;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::error::Result;
use crate::reports::FormToken;
use crate::search::engine::Territory;
use crate::search::hours::Lang;
use crate::state::AppState;
use crate::taxonomy::life_events::LifeEvents;

/// What the pages need beyond the rest of the application state.
pub struct Web {
    /// Signs the report forms (see `reports::FormToken`).
    pub form_token: FormToken,
    pub life_events: LifeEvents,
    /// The base map's tile source, proxied and cached; `None` draws commune boundaries instead.
    pub tiles: Option<tiles::TileProxy>,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home::home))
        .route("/recherche", get(search::search_page))
        .route("/services/{id}", get(entry::entry_page))
        .route("/services/{id}/signaler", post(entry::report))
        .route("/evenements-de-vie", get(life_events::index))
        .route("/evenements-de-vie/{code}", get(life_events::event))
        .route("/embed", get(search::embed_page))
        .route("/embed/theme.css", get(widget::theme_css))
        .route("/widget.js", get(widget::loader))
        .route("/integrer", get(widget::generator))
        .route("/tuiles/{z}/{x}/{y}", get(tiles::tile))
        .route("/assets/{name}", get(assets::serve))
        .layer(middleware::from_fn(security_headers))
}

/// A territory as people type it: `kind:code`, or a commune, EPCI or département by name
/// or code, resolved to `kind:code`.
pub async fn resolve_territory(state: &AppState, typed: &str) -> Result<Option<(String, String)>> {
    let locator = &state.reference.locator;
    let areas = crate::territory::store::named_areas(&state.store).await?;
    if let Ok(territory) = Territory::parse(typed, locator) {
        let name = match &territory {
            Territory::Commune(code) => locator.commune(code).map(|c| c.name.clone()),
            Territory::Epci(code) => area_name(&areas, "epci", code),
            Territory::Departement(code) => area_name(&areas, "departement", code),
            Territory::Region(code) => area_name(&areas, "region", code),
        };
        return Ok(Some((
            typed.to_owned(),
            name.unwrap_or_else(|| typed.to_owned()),
        )));
    }
    let folded = crate::text::fold(typed);
    if let Some((kind, code, name)) = areas
        .into_iter()
        .find(|(_, code, name)| code == typed || crate::text::fold(name) == folded)
    {
        return Ok(Some((format!("{kind}:{code}"), name)));
    }
    Ok(search::resolve_place(state, typed)
        .map(|c| (format!("commune:{}", c.insee_code), c.name.clone())))
}

fn area_name(areas: &[(String, String, String)], kind: &str, code: &str) -> Option<String> {
    areas
        .iter()
        .find(|(k, c, _)| k == kind && c == code)
        .map(|(_, _, name)| name.clone())
}

/// `lang` from a query string: English only when asked for.
pub fn lang_of(query: Option<&str>) -> Lang {
    query
        .into_iter()
        .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()))
        .find(|(k, _)| k == "lang")
        .and_then(|(_, v)| Lang::from_code(&v))
        .unwrap_or_default()
}

/// The request's path and query without `lang`: what the language switch links to.
pub fn path_without_lang(uri: &axum::http::Uri) -> String {
    let kept: Vec<(String, String)> = uri
        .query()
        .into_iter()
        .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()))
        .filter(|(k, _)| k != "lang")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), encode_query(&kept))
    }
}

/// `key=value&…`, form-encoded.
pub fn encode_query<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k.as_ref(), v.as_ref());
    }
    query.finish()
}

/// The same headers on every HTML page of the other routers (OGC pages, « Données SIG »,
/// monitoring, guides' HTML), and `nosniff` on every response, where the route set none of its
/// own (issue 17: HTML outside the citizen and contributor pages had no policy); HSTS on every
/// response when the instance is reached over https (its configured public URL).
pub async fn default_security_headers(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if state.public_url.starts_with("https://") {
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let headers = response.headers_mut();
    if html && !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        page_headers(headers, false);
    }
    if !headers.contains_key(header::X_CONTENT_TYPE_OPTIONS) {
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    response
}

/// The content security policy of our pages: our own origin only, framed by any site when
/// `embeddable`, else only by ours.
fn policy(embeddable: bool) -> String {
    let frame_ancestors = if embeddable { "*" } else { "'self'" };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; font-src 'self'; frame-src 'self'; form-action 'self'; \
         base-uri 'none'; frame-ancestors {frame_ancestors}"
    )
}

/// The content security policy of every response: our own origin only. The widget's routes may
/// be framed by any site; every other page only by ours (the generator's preview).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let embeddable = request.uri().path().starts_with("/embed");
    let mut response = next.run(request).await;
    page_headers(response.headers_mut(), embeddable);
    response
}

/// The headers of our pages: their content security policy, `nosniff`, no referrer, and
/// framing by our own pages only unless `embeddable`.
fn page_headers(headers: &mut axum::http::HeaderMap, embeddable: bool) {
    if let Ok(value) = HeaderValue::from_str(&policy(embeddable)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Links followed from a page (directions, websites) tell nobody where the citizen came from.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !embeddable {
        headers.insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
    }
}
