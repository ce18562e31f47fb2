//! The HSDS 3.0 read API: `/hsds/`, services, organizations, taxonomies and taxonomy terms,
//! paged as HSDS pages are (`total_items`, `total_pages`, `page_number`, `size`, `first_page`,
//! `last_page`, `empty`, `contents`).

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::ids::{self, Kind};
use super::{store, Organisation, Term};
use crate::admission::PublicBase;
use crate::error::{Error, FieldError, Result};
use crate::export::{store as rows, Selection};
use crate::http::{open_json, Path};
use crate::state::AppState;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/hsds/services", get(services))
        .route("/hsds/organizations/{id}", get(organization))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            crate::admission::heavy_when_scanning,
        ))
        .route("/hsds", get(about))
        .route("/hsds/", get(about))
        .route("/hsds/services/{id}", get(service))
        .route("/hsds/organizations", get(organizations))
        .route("/hsds/taxonomies", get(taxonomies))
        .route("/hsds/taxonomies/{id}", get(taxonomy))
        .route("/hsds/taxonomy_terms", get(taxonomy_terms))
        .route("/hsds/taxonomy_terms/{id}", get(taxonomy_term))
}

/// Services per page unless asked otherwise, and at most.
pub const DEFAULT_PER_PAGE: u64 = 50;
pub const MAX_PER_PAGE: u64 = 500;
/// Services nested in an organization (`/hsds/organizations/{id}`); the others are paged by
/// `/hsds/services?organization_id=`.
pub const MAX_NESTED_SERVICES: usize = 1_000;

/// The query parameters of an HSDS list, parsed; each endpoint names those it takes.
#[derive(Debug, Default)]
struct Params {
    search: Option<String>,
    page: u64,
    per_page: u64,
    taxonomy_term_id: Option<Uuid>,
    taxonomy_id: Option<Uuid>,
    organization_id: Option<Uuid>,
    parent_id: Option<Uuid>,
    modified_after: Option<DateTime<Utc>>,
    full: bool,
    minimal: bool,
    top_only: bool,
}

impl Params {
    fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self> {
        let mut params = Params {
            page: 1,
            per_page: DEFAULT_PER_PAGE,
            ..Params::default()
        };
        let mut errors = Vec::new();
        for (name, value) in crate::export::routes::query_pairs(raw) {
            if !allowed.contains(&name.as_str()) {
                errors.push(FieldError::new(
                    &name,
                    format!("paramètre inconnu ({})", allowed.join(", ")),
                ));
                continue;
            }
            let value = value.trim();
            let number = |low: u64, high: u64| -> Result<u64, String> {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (low..=high).contains(n))
                    .ok_or_else(|| format!("un entier de {low} à {high} / an integer"))
            };
            let uuid = || Uuid::parse_str(value).map_err(|_| "un UUID / a UUID".to_owned());
            let boolean = || match value {
                "true" | "1" | "" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err("true ou false".to_owned()),
            };
            let outcome: Result<(), String> = match name.as_str() {
                "search" => crate::search::engine::check_query_length(value).map(|()| {
                    params.search = Some(value.to_owned()).filter(|v| !v.is_empty());
                }),
                "page" => number(1, 1_000_000_000).map(|n| params.page = n),
                "per_page" => number(1, MAX_PER_PAGE).map(|n| params.per_page = n),
                "taxonomy_term_id" => uuid().map(|u| params.taxonomy_term_id = Some(u)),
                "taxonomy_id" => uuid().map(|u| params.taxonomy_id = Some(u)),
                "organization_id" => uuid().map(|u| params.organization_id = Some(u)),
                "parent_id" => uuid().map(|u| params.parent_id = Some(u)),
                "modified_after" => crate::dates::parse_instant(value)
                    .or_else(|_| {
                        crate::dates::parse_date(value)
                            .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
                    })
                    .map(|at| params.modified_after = Some(at))
                    .map_err(|_| {
                        "une date RFC 3339 (2026-01-31T08:00:00Z) ou un jour (2026-01-31)"
                            .to_owned()
                    }),
                "full" | "full_service" => boolean().map(|b| params.full |= b),
                "minimal" => boolean().map(|b| params.minimal = b),
                "top_only" => boolean().map(|b| params.top_only = b),
                "format" => match value {
                    "json" | "" => Ok(()),
                    _ => Err("json seulement / json only".to_owned()),
                },
                _ => Ok(()),
            };
            if let Err(message) = outcome {
                errors.push(FieldError::new(&name, message));
            }
        }
        if !errors.is_empty() {
            return Err(Error::InvalidParameters(errors));
        }
        Ok(params)
    }

    fn offset(&self) -> u64 {
        (self.page - 1).saturating_mul(self.per_page)
    }

    /// The HSDS page of `contents` out of `total` items.
    fn page(&self, total: u64, contents: Vec<Value>) -> Value {
        let total_pages = total.div_ceil(self.per_page).max(1);
        json!({
            "total_items": total,
            "total_pages": total_pages,
            "page_number": self.page,
            "size": contents.len(),
            "first_page": self.page == 1,
            "last_page": self.page >= total_pages,
            "empty": contents.is_empty(),
            "contents": contents,
        })
    }

    /// `items` paged in memory (taxonomies and their terms: a few hundred at most).
    fn page_of(&self, items: Vec<Value>) -> Value {
        let total = items.len() as u64;
        let contents = items
            .into_iter()
            .skip(usize::try_from(self.offset()).unwrap_or(usize::MAX))
            .take(usize::try_from(self.per_page).unwrap_or(usize::MAX))
            .collect();
        self.page(total, contents)
    }
}

/// What this API is: the HSDS version, the profile and where its OpenAPI document is.
#[utoipa::path(get, path = "/hsds/", tag = "hsds",
    responses((status = 200, description = "Version HSDS, profil et document OpenAPI", content_type = "application/json")))]
pub(crate) async fn about(PublicBase(base): PublicBase) -> Response {
    open_json(&json!({
        "version": super::VERSION,
        "profile": "https://docs.openreferral.org/en/latest/hsds/",
        "openapi_url": format!("{base}/api/v1/openapi.json"),
    }))
}

/// Reads, off the async threads, the services whose ids are `ids`, in that order; fully nested
/// when `full`. Returns each with its organisation id.
async fn services_by_ids(
    state: &AppState,
    base: &str,
    ids: Vec<String>,
    full: bool,
) -> Result<Vec<Value>> {
    let mut found = read_services(
        state,
        base,
        Selection {
            ids: Some(ids.clone()),
            ..Selection::default()
        },
        None,
        full,
    )
    .await?
    .into_iter()
    .map(|(id, source, value)| (id, (source, value)))
    .collect::<HashMap<_, _>>();
    let ordered: Vec<(String, Value)> = ids.iter().filter_map(|id| found.remove(id)).collect();
    attach_organisations(state, ordered, full).await
}

/// Reads the services of `selection` (a numbered page of it when `window` is given) as
/// (entry id, organisation id, JSON).
async fn read_services(
    state: &AppState,
    base: &str,
    selection: Selection,
    window: Option<(std::sync::Arc<rows::Anchors>, u64, u64)>,
    full: bool,
) -> Result<Vec<(String, String, Value)>> {
    let reference = state.reference.clone();
    let hours = state.hours.clone();
    let version = state.search_index().version.clone();
    let known_lookup = state.layers.cached_lookup(&version);
    let base = base.to_owned();
    let (found, lookup) = rows::with_connection(&state.store, move |handle| {
        let lookup = match known_lookup {
            Some(lookup) => lookup,
            None => std::sync::Arc::new(rows::lookup(handle, &reference)?),
        };
        let today = Utc::now().date_naive();
        let cx = super::Context {
            base: &base,
            taxonomy: &reference.taxonomy,
            hours: &hours,
            today,
        };
        let mut found = Vec::new();
        let mut each = |row: &crate::export::Row<'_>| {
            let value = if full {
                super::service_full(row, None, &cx)
            } else {
                super::service_summary(row, &base)
            };
            found.push((row.id.to_owned(), row.source_id.to_owned(), value));
            Ok(true)
        };
        match window {
            Some((anchors, offset, limit)) => rows::numbered_page(
                handle, &lookup, &selection, &anchors, offset, limit, &mut each,
            )?,
            None => rows::scan(
                handle,
                &lookup,
                &selection,
                rows::Order::Id { after: None },
                &mut each,
            )?,
        }
        Ok((found, lookup))
    })
    .await?;
    state.layers.keep_lookup(&version, lookup);
    Ok(found)
}

/// Nests each fully read service's organization (read in one query for the page).
async fn attach_organisations(
    state: &AppState,
    services: Vec<(String, Value)>,
    full: bool,
) -> Result<Vec<Value>> {
    if !full {
        return Ok(services.into_iter().map(|(_, v)| v).collect());
    }
    let sources: Vec<&str> = services.iter().map(|(s, _)| s.as_str()).collect();
    let organisations = store::by_ids(&state.store, &sources).await?;
    Ok(services
        .into_iter()
        .map(|(source, mut value)| {
            if let Some(organisation) = organisations.get(&source) {
                value["organization"] = organisation.json();
            }
            value
        })
        .collect())
}

/// The services, a page at a time: by id, or by relevance with `search`; narrowed by a
/// taxonomy term (a typology, or a theme and all its typologies), the taxonomy, an organization
/// or a last update.
#[utoipa::path(
    get,
    path = "/hsds/services",
    tag = "hsds",
    params(
        ("search" = Option<String>, Query, description = "Recherche en texte libre (16 mots au plus)"),
        ("page" = Option<u64>, Query, description = "Numéro de page, à partir de 1"),
        ("per_page" = Option<u64>, Query, description = "Services par page (50 par défaut, 500 au plus)"),
        ("taxonomy_term_id" = Option<String>, Query, description = "UUID d'un terme : une typologie, ou un thème et ses typologies"),
        ("taxonomy_id" = Option<String>, Query, description = "UUID de la taxonomie"),
        ("organization_id" = Option<String>, Query, description = "UUID d'une organisation"),
        ("modified_after" = Option<String>, Query, description = "Modifiés à cet instant (RFC 3339) ou ce jour, ou après"),
        ("full" = Option<bool>, Query, description = "Services entièrement imbriqués"),
        ("minimal" = Option<bool>, Query, description = "Seulement id et modified_date"),
        ("format" = Option<String>, Query, description = "json"),
    ),
    responses(
        (status = 200, description = "Page HSDS de services", content_type = "application/json"),
        (status = 400, body = crate::error::Problem),
    )
)]
pub(crate) async fn services(
    State(state): State<AppState>,
    PublicBase(base): PublicBase,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let params = Params::parse(
        query.as_deref(),
        &[
            "search",
            "page",
            "per_page",
            "taxonomy_term_id",
            "taxonomy_id",
            "organization_id",
            "modified_after",
            "full",
            "minimal",
            "format",
        ],
    )?;
    let taxonomy = &state.reference.taxonomy;
    let mut selection = Selection::default();
    // A filter naming nothing of this instance matches nothing.
    let mut matches_nothing = params
        .taxonomy_id
        .is_some_and(|t| t != super::taxonomy_id());
    if let Some(term) = params.taxonomy_term_id {
        match super::term_by_id(taxonomy, &term) {
            Some(term) => selection = selection.typologies(term.typologies(taxonomy)),
            None => matches_nothing = true,
        }
    }
    if let Some(organisation) = params.organization_id {
        match ids::organisation_id(&organisation) {
            Some(id) => selection.sources = Some(vec![id]),
            None => matches_nothing = true,
        }
    }
    if let Some(after) = params.modified_after {
        selection.updated_since = Some(after.format("%Y-%m-%dT%H:%M:%S").to_string());
    }
    if matches_nothing {
        return Ok(open_json(&params.page(0, Vec::new())));
    }
    let (total, contents) = match &params.search {
        Some(words) => search_page(&state, &base, &params, words, selection).await?,
        None => {
            // Counted with the anchors of its numbered pages, once per data version.
            let version = state.live.settled_version();
            let key = format!("hsds|{}", selection.key());
            let anchors = match state.layers.cached_anchors(&version, &key) {
                Some(anchors) => anchors,
                None => {
                    let counted = selection.clone();
                    let anchors = std::sync::Arc::new(
                        rows::with_connection(&state.store, move |handle| {
                            rows::anchors(handle, &counted)
                        })
                        .await?,
                    );
                    state.layers.keep_anchors(&version, key, anchors.clone());
                    anchors
                }
            };
            let total = anchors.total;
            let full = params.full && !params.minimal;
            let found = read_services(
                &state,
                &base,
                selection,
                Some((anchors, params.offset(), params.per_page)),
                full,
            )
            .await?;
            let services = attach_organisations(
                &state,
                found.into_iter().map(|(_, s, v)| (s, v)).collect(),
                full,
            )
            .await?;
            (total, services)
        }
    };
    let contents = if params.minimal {
        contents
            .into_iter()
            .map(|s| json!({"id": s["id"], "modified_date": s["last_modified"]}))
            .collect()
    } else {
        contents
    };
    Ok(open_json(&params.page(total, contents)))
}

/// A page of the services matching `words`, best first: the text index ranks them, SQL keeps
/// those of the organization or update asked for. Returns (total, page).
async fn search_page(
    state: &AppState,
    base: &str,
    params: &Params,
    words: &str,
    selection: Selection,
) -> Result<(u64, Vec<Value>)> {
    state.live.words_searchable()?;
    let text = state.live.text().clone();
    let filter = crate::search::text::TextFilter {
        circle: None,
        typologies: selection.typologies.clone(),
        territory: None,
    };
    let q = words.to_owned();
    let hits = tokio::task::spawn_blocking(move || text.search_within(&q, &filter, None))
        .await
        .map_err(anyhow::Error::from)??;
    // Best score first; equal scores by id, so that pages do not overlap.
    let mut hits = hits;
    hits.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| a.0.as_str().cmp(b.0.as_str()))
    });
    let mut ranked: Vec<String> = hits.iter().map(|(id, _)| id.as_str().to_owned()).collect();
    if selection.sources.is_some() || selection.updated_since.is_some() {
        // Kept in rank order: SQL only says which hits pass.
        let reference = state.reference.clone();
        let candidates = ranked.clone();
        let narrowing = selection.clone();
        let passing = rows::with_connection(&state.store, move |handle| {
            let lookup = rows::lookup(handle, &reference)?;
            let mut passing = std::collections::HashSet::new();
            for chunk in candidates.chunks(crate::export::MAX_BOUND_LIST) {
                let narrowed = Selection {
                    ids: Some(chunk.to_vec()),
                    ..narrowing.clone()
                };
                rows::scan(handle, &lookup, &narrowed, rows::Order::Storage, |row| {
                    passing.insert(row.id.to_owned());
                    Ok(true)
                })?;
            }
            Ok(passing)
        })
        .await?;
        ranked.retain(|id| passing.contains(id));
    }
    let total = ranked.len() as u64;
    let page: Vec<String> = ranked
        .into_iter()
        .skip(usize::try_from(params.offset()).unwrap_or(usize::MAX))
        .take(usize::try_from(params.per_page).unwrap_or(usize::MAX))
        .collect();
    let full = params.full && !params.minimal;
    Ok((total, services_by_ids(state, base, page, full).await?))
}

/// One service, fully nested: its organization, location, address, phones, schedules and
/// taxonomy term.
#[utoipa::path(
    get,
    path = "/hsds/services/{id}",
    tag = "hsds",
    params(("id" = String, Path, description = "UUID du service")),
    responses(
        (status = 200, description = "Service HSDS entièrement imbriqué", content_type = "application/json"),
        (status = 404, body = crate::error::Problem),
    )
)]
pub(crate) async fn service(
    State(state): State<AppState>,
    PublicBase(base): PublicBase,
    Path(id): Path<String>,
) -> Result<Response> {
    let entry = Uuid::parse_str(&id)
        .ok()
        .and_then(|u| ids::entry_id(&u, Kind::Service))
        .ok_or_else(|| Error::not_found("service", &id))?;
    let found = services_by_ids(&state, &base, vec![entry], true).await?;
    let service = found
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found("service", &id))?;
    Ok(open_json(&service))
}

/// The contributing organisations, a page at a time, by name.
#[utoipa::path(
    get,
    path = "/hsds/organizations",
    tag = "hsds",
    params(
        ("search" = Option<String>, Query, description = "Partie du nom"),
        ("page" = Option<u64>, Query, description = "Numéro de page, à partir de 1"),
        ("per_page" = Option<u64>, Query, description = "Organisations par page (50 par défaut, 500 au plus)"),
        ("full" = Option<bool>, Query, description = "Accepté ; les services ne sont imbriqués que dans /hsds/organizations/{id}"),
        ("full_service" = Option<bool>, Query, description = "Idem"),
        ("format" = Option<String>, Query, description = "json"),
    ),
    responses(
        (status = 200, description = "Page HSDS d'organisations", content_type = "application/json"),
        (status = 400, body = crate::error::Problem),
    )
)]
pub(crate) async fn organizations(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let params = Params::parse(
        query.as_deref(),
        &[
            "search",
            "page",
            "per_page",
            "full",
            "full_service",
            "format",
        ],
    )?;
    let (total, found) = store::page(
        &state.store,
        params.search.as_deref(),
        params.offset(),
        params.per_page,
    )
    .await?;
    let contents = found.iter().map(Organisation::json).collect();
    Ok(open_json(&params.page(total, contents)))
}

/// One organisation with its services (id, name, status, update; the first
/// `MAX_NESTED_SERVICES`, all of them through `/hsds/services?organization_id=`).
#[utoipa::path(
    get,
    path = "/hsds/organizations/{id}",
    tag = "hsds",
    params(
        ("id" = String, Path, description = "UUID de l'organisation"),
        ("full_service" = Option<bool>, Query, description = "Services entièrement imbriqués"),
    ),
    responses(
        (status = 200, description = "Organisation HSDS avec ses services", content_type = "application/json"),
        (status = 404, body = crate::error::Problem),
    )
)]
pub(crate) async fn organization(
    State(state): State<AppState>,
    PublicBase(base): PublicBase,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let params = Params::parse(query.as_deref(), &["full_service", "format"])?;
    let organisation_id = Uuid::parse_str(&id)
        .ok()
        .and_then(|u| ids::organisation_id(&u))
        .ok_or_else(|| Error::not_found("organisation", &id))?;
    let organisation = store::by_id(&state.store, &organisation_id)
        .await?
        .ok_or_else(|| Error::not_found("organisation", &id))?;
    let found = read_services(
        &state,
        &base,
        Selection {
            sources: Some(vec![organisation_id.clone()]),
            ..Selection::default()
        },
        Some((std::sync::Arc::default(), 0, MAX_NESTED_SERVICES as u64)),
        params.full,
    )
    .await?;
    let mut body = organisation.json();
    body["services"] = found
        .into_iter()
        .map(|(_, _, service)| {
            if params.full {
                service
            } else {
                json!({
                    "id": service["id"],
                    "organization_id": service["organization_id"],
                    "name": service["name"],
                    "status": service["status"],
                    "last_modified": service["last_modified"],
                })
            }
        })
        .collect();
    Ok(open_json(&body))
}

/// The taxonomies: one, the convention's themes and typologies.
#[utoipa::path(
    get,
    path = "/hsds/taxonomies",
    tag = "hsds",
    params(
        ("search" = Option<String>, Query, description = "Partie du nom"),
        ("page" = Option<u64>, Query, description = "Numéro de page"),
        ("per_page" = Option<u64>, Query, description = "Taxonomies par page"),
        ("format" = Option<String>, Query, description = "json"),
    ),
    responses(
        (status = 200, description = "Page HSDS de taxonomies", content_type = "application/json"),
        (status = 400, body = crate::error::Problem),
    )
)]
pub(crate) async fn taxonomies(
    PublicBase(base): PublicBase,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let params = Params::parse(query.as_deref(), &["search", "page", "per_page", "format"])?;
    let taxonomy = super::taxonomy(&base);
    let kept = params.search.as_deref().is_none_or(|s| {
        crate::text::fold(taxonomy["name"].as_str().unwrap_or_default())
            .contains(&crate::text::fold(s))
    });
    Ok(open_json(&params.page_of(if kept {
        vec![taxonomy]
    } else {
        Vec::new()
    })))
}

#[utoipa::path(
    get,
    path = "/hsds/taxonomies/{id}",
    tag = "hsds",
    params(("id" = String, Path, description = "UUID de la taxonomie")),
    responses(
        (status = 200, description = "Taxonomie HSDS", content_type = "application/json"),
        (status = 404, body = crate::error::Problem),
    )
)]
pub(crate) async fn taxonomy(
    PublicBase(base): PublicBase,
    Path(id): Path<String>,
) -> Result<Response> {
    match Uuid::parse_str(&id) {
        Ok(uuid) if uuid == super::taxonomy_id() => Ok(open_json(&super::taxonomy(&base))),
        _ => Err(Error::not_found("taxonomie", id)),
    }
}

/// The taxonomy's terms: the 5 themes, then the 175 typologies (each under its theme).
#[utoipa::path(
    get,
    path = "/hsds/taxonomy_terms",
    tag = "hsds",
    params(
        ("search" = Option<String>, Query, description = "Partie du nom ou du code"),
        ("page" = Option<u64>, Query, description = "Numéro de page"),
        ("per_page" = Option<u64>, Query, description = "Termes par page (50 par défaut)"),
        ("taxonomy_id" = Option<String>, Query, description = "UUID de la taxonomie"),
        ("top_only" = Option<bool>, Query, description = "Seulement les thèmes"),
        ("parent_id" = Option<String>, Query, description = "Les typologies d'un thème"),
        ("format" = Option<String>, Query, description = "json"),
    ),
    responses(
        (status = 200, description = "Page HSDS de termes", content_type = "application/json"),
        (status = 400, body = crate::error::Problem),
    )
)]
pub(crate) async fn taxonomy_terms(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let params = Params::parse(
        query.as_deref(),
        &[
            "search",
            "page",
            "per_page",
            "taxonomy_id",
            "top_only",
            "parent_id",
            "format",
        ],
    )?;
    let taxonomy = &state.reference.taxonomy;
    let search = params.search.as_deref().map(crate::text::fold);
    let ours = params.taxonomy_id.is_none_or(|t| t == super::taxonomy_id());
    let items = super::terms(taxonomy)
        .into_iter()
        .filter(|_| ours)
        .filter(|term| !params.top_only || term.parent_id().is_none())
        .filter(|term| params.parent_id.is_none_or(|p| term.parent_id() == Some(p)))
        .filter(|term: &Term<'_>| {
            search.as_deref().is_none_or(|s| {
                crate::text::fold(term.name()).contains(s) || term.code().contains(s)
            })
        })
        .map(|term| term.json(taxonomy))
        .collect();
    Ok(open_json(&params.page_of(items)))
}

#[utoipa::path(
    get,
    path = "/hsds/taxonomy_terms/{id}",
    tag = "hsds",
    params(("id" = String, Path, description = "UUID du terme")),
    responses(
        (status = 200, description = "Terme HSDS", content_type = "application/json"),
        (status = 404, body = crate::error::Problem),
    )
)]
pub(crate) async fn taxonomy_term(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response> {
    let taxonomy = &state.reference.taxonomy;
    Uuid::parse_str(&id)
        .ok()
        .and_then(|uuid| super::term_by_id(taxonomy, &uuid))
        .map(|term| open_json(&term.json(taxonomy)))
        .ok_or_else(|| Error::not_found("terme", id))
}
