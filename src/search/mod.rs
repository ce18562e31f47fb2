//! Search over the published entries: the in-memory spatial index, the on-disk text index, the
//! query engine and its API, all derived from the database and checkable against it.

pub mod engine;
pub mod hours;
pub mod routes;
pub mod spatial;
pub mod text;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use chrono::DateTime;
use chrono_tz::Tz;

use crate::app::AppState;
use crate::db::{self, Pool};
use crate::error::Result;
use crate::import::Reference;
use crate::services::cache::Cached;
use crate::services::ServiceId;
use crate::territory::Locator;
use engine::{Context, Page, SearchQuery};
use hours::HoursEvaluator;
use spatial::SpatialIndex;
use text::{TextFilter, TextIndex};

/// Runs `query`: its words through the text index, narrowed there by the query's circle,
/// typologies and territory, then everything else on the spatial index. CPU work: call it off
/// the async threads.
pub fn run(
    text: &TextIndex,
    index: &SpatialIndex,
    locator: &Locator,
    hours: &HoursEvaluator,
    query: &SearchQuery,
) -> anyhow::Result<Page> {
    let hits: Option<Vec<_>> = match &query.text {
        Some(q) => {
            let filter = TextFilter {
                circle: query.near.zip(query.radius_m),
                typologies: query.typologies.clone(),
                territory: query.territory.as_ref().map(engine::Territory::token),
            };
            Some(text.search_within(q, &filter, None)?)
        }
        None => None,
    };
    Ok(Context {
        locator,
        hours,
        text_hits: hits.as_deref(),
    }
    .run(index, query))
}

/// A page of results with its entries read: what the API and the citizen pages render.
pub struct Results {
    pub page: Page,
    /// The page's entries by id (an entry withdrawn since the index was built is absent).
    pub entries: std::collections::HashMap<ServiceId, Arc<Cached>>,
    /// The moment the opening states are computed at (`open_at`, else now).
    pub at: DateTime<Tz>,
}

/// Runs `query` on the server's indexes (off the async threads unless it is a cheap nearest
/// query) and reads the page's entries through the entry cache.
pub async fn answer(state: &AppState, query: &SearchQuery, now: DateTime<Tz>) -> Result<Results> {
    let reference = state.reference.clone();
    let index = state.search_index();
    let hours = state.hours.clone();
    let text = state.text.clone();
    let version = index.version.clone();
    // The nearest few without words take microseconds: not worth a trip to the blocking pool.
    let cheap = query.text.is_none() && query.near.is_some() && query.radius_m.is_none();
    let page = if cheap {
        run(&text, &index.spatial, &reference.locator, &hours, query)?
    } else {
        let run_query = query.clone();
        tokio::task::spawn_blocking(move || {
            run(
                &text,
                &index.spatial,
                &reference.locator,
                &hours,
                &run_query,
            )
        })
        .await
        .map_err(anyhow::Error::from)??
    };
    let ids: Vec<_> = page.found.iter().map(|f| f.id.clone()).collect();
    let entries = state
        .service_cache
        .get_many(&state.pool, version.as_deref(), &ids)
        .await?
        .into_iter()
        .map(|s| (s.service.id.clone(), s))
        .collect();
    Ok(Results {
        page,
        entries,
        at: query.open_at.unwrap_or(now),
    })
}

/// Beside the text index: the data version it was built at.
const TEXT_DATA_VERSION_FILE: &str = "proximites-data-version";

/// Rebuilds the text index in `dir` from the database when it is behind it (another data
/// version, or not the `published` number of documents), or always with `force`. True when it
/// rebuilt.
pub async fn bring_text_up_to_date(
    pool: &Pool,
    reference: &Reference,
    text: &TextIndex,
    dir: &Path,
    published: u64,
    force: bool,
) -> anyhow::Result<bool> {
    let version = db::fact(pool, "data_version").await?;
    // Another process (an import, `check --repair`) may have brought it up to date already.
    text.reload()?;
    let marker = dir.join(TEXT_DATA_VERSION_FILE);
    let built_at = std::fs::read_to_string(&marker).ok();
    if !force && built_at == version && text.doc_count() == published {
        return Ok(false);
    }
    text.sync_from_db(pool, &reference.taxonomy, &reference.locator)
        .await?;
    std::fs::write(&marker, version.as_deref().unwrap_or_default())?;
    tracing::info!(documents = text.doc_count(), "text index rebuilt");
    Ok(true)
}

/// Records that the text index in `dir` is at data `version` (after an incremental change, so
/// that a restart does not rebuild it).
pub fn mark_text_version(dir: &Path, version: Option<&str>) -> anyhow::Result<()> {
    std::fs::write(
        dir.join(TEXT_DATA_VERSION_FILE),
        version.unwrap_or_default(),
    )?;
    Ok(())
}

/// Every difference between the search indexes and the database, in words (empty when they
/// agree): the spatial index as this process builds it, and the text index on disk in `dir`.
pub async fn check(pool: &Pool, dir: &Path) -> anyhow::Result<Vec<String>> {
    let spatial = spatial::load(pool).await?;
    let mut found = spatial::check(pool, &spatial).await?;
    let owned = dir.to_owned();
    let text = tokio::task::spawn_blocking(move || TextIndex::open_or_create(&owned)).await??;
    let published: HashSet<String> =
        sqlx::query_as::<_, (String,)>("SELECT id FROM services WHERE status = 'published'")
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect();
    let indexed = text.ids()?;
    let missing: Vec<&String> = published.difference(&indexed).collect();
    let extra: Vec<&String> = indexed.difference(&published).collect();
    for (ids, what) in [
        (missing, "absente de l'index texte"),
        (extra, "dans l'index texte mais pas publiée"),
    ] {
        for id in ids.iter().take(20) {
            found.push(format!("fiche {id} {what}"));
        }
        if ids.len() > 20 {
            found.push(format!("… et {} autres fiches {what}", ids.len() - 20));
        }
    }
    let version = db::fact(pool, "data_version").await?;
    let built_at = std::fs::read_to_string(dir.join(TEXT_DATA_VERSION_FILE)).ok();
    if built_at != version {
        found.push(format!(
            "index texte construit à la version {} des données, la base est à la version {}",
            built_at.as_deref().unwrap_or("(aucune)"),
            version.as_deref().unwrap_or("(aucune)")
        ));
    }
    Ok(found)
}
