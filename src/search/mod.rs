//! Search over the published entries: the in-memory spatial index, the on-disk text index, the
//! query engine and its API, all derived from the database and checkable against it.

pub mod engine;
pub mod hours;
pub mod live;
pub mod routes;
pub mod spatial;
pub mod text;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use chrono::DateTime;
use chrono_tz::Tz;

use crate::db::{self, Store};
use crate::error::Result;
use crate::on_engine;
use crate::services::cache::Cached;
use crate::services::ServiceId;
use crate::state::AppState;
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
    if query.text.is_some() {
        state.live.words_searchable()?;
    }
    let reference = state.reference.clone();
    let index = state.search_index();
    let hours = state.hours.clone();
    let text = state.live.text().clone();
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
        .live
        .service_cache
        .get_many(&state.store, version.as_deref(), &ids)
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

/// Every difference between the search indexes and the database, in words (empty when they
/// agree): the spatial index as this process builds it, and the text index on disk in `dir`.
pub async fn check(store: &Store, dir: &Path) -> anyhow::Result<Vec<String>> {
    let spatial = spatial::load(store).await?;
    let mut found = spatial::check(store, &spatial).await?;
    let owned = dir.to_owned();
    let text = tokio::task::spawn_blocking(move || TextIndex::open_to_inspect(&owned)).await??;
    let published: HashSet<String> = on_engine!(store, |db| sqlx::query_as::<_, (String,)>(
        "SELECT id FROM services WHERE status = 'published'"
    )
    .fetch_all(db)
    .await)?
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
    // The groups of duplicates are derived from the statuses too.
    found.extend(crate::services::duplicates::check(store).await?);
    let head = db::log_head(store).await?;
    match text.position() {
        Some(position) if position >= head => {}
        position => found.push(format!(
            "index texte à la position {} du journal des changements, la base à {head} / text index at change-log position {}, database at {head}",
            position.map_or("(aucune)".into(), |p| p.to_string()),
            position.map_or("(none)".into(), |p| p.to_string()),
        )),
    }
    Ok(found)
}

/// Where the change log stands and each index that reported its position (a server records
/// its own every minute), with its lag, one line each: what `check` prints first.
pub async fn log_report(store: &Store, dir: &Path) -> anyhow::Result<Vec<String>> {
    let head = db::log_head(store).await?;
    let pruned = db::fact(store, "log_pruned_through")
        .await?
        .unwrap_or_else(|| "0".into());
    let mut lines = vec![format!(
        "journal des changements / change log: dernière ligne / head {head}, élagué jusqu'à / pruned through {pruned}"
    )];
    let owned = dir.to_owned();
    let text = tokio::task::spawn_blocking(move || TextIndex::open_to_inspect(&owned)).await??;
    let position = text.position().unwrap_or(0);
    lines.push(format!(
        "index texte {} : position {position}, retard / lag {}",
        dir.display(),
        (head - position).max(0)
    ));
    let recorded: Vec<(String, i64, String)> = on_engine!(store, |db| sqlx::query_as(
        "SELECT name, seq, CAST(updated_at AS TEXT) FROM index_positions ORDER BY name",
    )
    .fetch_all(db)
    .await)?;
    for (name, seq, at) in recorded {
        lines.push(format!(
            "index de serveur / server index {name} : position {seq} au / at {at}, retard / lag {}",
            (head - seq).max(0)
        ));
    }
    Ok(lines)
}
