//! Read API of the taxonomy: themes, typologies and their published entry counts.

use crate::http::Path;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Taxonomy, Typology};
use crate::error::{Error, Problem, Result};
use crate::http::Query;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/themes", get(list_themes))
        .route("/api/v1/typologies", get(list_typologies))
        .route("/api/v1/typologies/{code}", get(get_typology))
}

#[derive(Serialize, ToSchema)]
pub struct Label {
    pub code: String,
    pub label_fr: String,
    pub label_en: String,
}

#[derive(Serialize, ToSchema)]
pub struct GroupView {
    pub code: String,
    /// The enclosing group for a sub-group.
    pub parent: Option<String>,
    pub position: i64,
    pub label_fr: String,
    pub label_en: String,
}

#[derive(Serialize, ToSchema)]
pub struct ThemeView {
    pub code: String,
    pub position: i64,
    pub label_fr: String,
    pub label_en: String,
    pub typology_count: usize,
    pub published_count: i64,
    pub groups: Vec<GroupView>,
}

#[derive(Serialize, ToSchema)]
pub struct TypologyView {
    pub code: String,
    pub label_fr: String,
    pub label_en: String,
    pub theme: Label,
    /// The groups from the theme down: one or two levels.
    pub groups: Vec<Label>,
    pub synonyms: Vec<String>,
    /// DILA Annuaire de l'administration pivot type codes.
    pub pivot: Vec<String>,
    /// INSEE BPE `TYPEQU` codes.
    pub bpe: Vec<String>,
    pub note: Option<String>,
    pub retired: bool,
    pub published_count: i64,
}

fn label(code: &str, fr: &str, en: &str) -> Label {
    Label {
        code: code.to_owned(),
        label_fr: fr.to_owned(),
        label_en: en.to_owned(),
    }
}

fn typology_view(taxonomy: &Taxonomy, t: &Typology, published_count: i64) -> TypologyView {
    let theme = taxonomy.theme(&t.theme).map_or_else(
        || label(&t.theme, &t.theme, &t.theme),
        |th| label(&th.code, &th.label_fr, &th.label_en),
    );
    let mut groups = Vec::new();
    let mut next = taxonomy.group(&t.group);
    while let Some(g) = next {
        groups.insert(0, label(&g.code, &g.label_fr, &g.label_en));
        next = g.parent.as_deref().and_then(|p| taxonomy.group(p));
    }
    TypologyView {
        code: t.code.clone(),
        label_fr: t.label_fr.clone(),
        label_en: t.label_en.clone(),
        theme,
        groups,
        synonyms: t.synonyms.clone(),
        pivot: t.pivot.clone(),
        bpe: t.bpe.clone(),
        note: t.note.clone(),
        retired: t.retired,
        published_count,
    }
}

/// The five themes of Annexe 1 with their groups.
#[utoipa::path(get, path = "/api/v1/themes", tag = "taxonomy",
    responses((status = 200, body = Vec<ThemeView>)))]
async fn list_themes(State(state): State<AppState>) -> Result<Json<Vec<ThemeView>>> {
    let taxonomy = &state.reference.taxonomy;
    let counts = state
        .published_counts
        .get(&state.store, state.live.settled_version())
        .await?;
    let mut themes: Vec<ThemeView> = taxonomy
        .themes
        .iter()
        .map(|theme| ThemeView {
            code: theme.code.clone(),
            position: theme.position,
            label_fr: theme.label_fr.clone(),
            label_en: theme.label_en.clone(),
            typology_count: theme.typology_count,
            published_count: taxonomy
                .typologies
                .iter()
                .filter(|t| t.theme == theme.code)
                .map(|t| counts.get(&t.code).copied().unwrap_or(0))
                .sum(),
            groups: taxonomy
                .groups
                .iter()
                .filter(|g| g.theme == theme.code)
                .map(|g| GroupView {
                    code: g.code.clone(),
                    parent: g.parent.clone(),
                    position: g.position,
                    label_fr: g.label_fr.clone(),
                    label_en: g.label_en.clone(),
                })
                .collect(),
        })
        .collect();
    themes.sort_by_key(|t| t.position);
    Ok(Json(themes))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TypologyFilter {
    /// Only the typologies of this theme (its code).
    theme: Option<String>,
}

/// The 175 typologies, in the annex's order, with their published entry counts.
#[utoipa::path(get, path = "/api/v1/typologies", tag = "taxonomy", params(TypologyFilter),
    responses((status = 200, body = Vec<TypologyView>), (status = 400, body = Problem)))]
async fn list_typologies(
    State(state): State<AppState>,
    Query(filter): Query<TypologyFilter>,
) -> Result<Json<Vec<TypologyView>>> {
    let taxonomy = &state.reference.taxonomy;
    if let Some(theme) = &filter.theme {
        if taxonomy.theme(theme).is_none() {
            return Err(Error::BadRequest {
                code: "unknown_theme",
                detail: format!("thème inconnu « {theme} » (voir GET /api/v1/themes)"),
            });
        }
    }
    let counts = state
        .published_counts
        .get(&state.store, state.live.settled_version())
        .await?;
    Ok(Json(
        taxonomy
            .typologies
            .iter()
            .filter(|t| filter.theme.as_ref().is_none_or(|theme| &t.theme == theme))
            .map(|t| typology_view(taxonomy, t, counts.get(&t.code).copied().unwrap_or(0)))
            .collect(),
    ))
}

/// One typology by its stable code.
#[utoipa::path(get, path = "/api/v1/typologies/{code}", tag = "taxonomy",
    params(("code" = String, Path, description = "Stable typology code, e.g. `mairie`")),
    responses((status = 200, body = TypologyView), (status = 404, body = Problem)))]
async fn get_typology(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Json<TypologyView>> {
    let taxonomy = &state.reference.taxonomy;
    let typology = taxonomy
        .typology(&code)
        .ok_or_else(|| Error::not_found("typologie", &code))?;
    let counts = state
        .published_counts
        .get(&state.store, state.live.settled_version())
        .await?;
    Ok(Json(typology_view(
        taxonomy,
        typology,
        counts.get(&code).copied().unwrap_or(0),
    )))
}
