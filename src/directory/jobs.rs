//! Making guides: the selection from the database, the rendering (one at a time per instance, on
//! a blocking thread, fed by a queue in the database that every instance takes from), and the
//! results kept by data version and choices so that the same guide is never computed twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rustc_hash::FxHashSet;
use serde::Serialize;
use utoipa::ToSchema;

use super::content::{self, Sources};
use super::render::{self, Conformance, RenderError};
use super::{store, Choices};
use crate::coverage::Area;
use crate::db::Store;
use crate::error::{Error, FieldError, Problem, Result};
use crate::import::Reference;
use crate::search::engine::Territory;
use crate::search::hours::HoursEvaluator;
use crate::services::Service;
use crate::{in_tx, on_engine};

/// Finished guides kept in memory; the oldest go first.
const KEPT: usize = 16;
/// Guides waiting or under way, whoever asked: each holds its entries in memory until made.
pub const MAX_QUEUED: usize = 8;
/// Guides one organisation (or the operator) may have waiting or under way.
pub const MAX_QUEUED_PER_OWNER: usize = 2;
/// What a refused request is told to wait, in seconds: about a guide's time.
const RETRY_AFTER: u64 = 60;
/// The largest guide made: about 6,000 A5 pages, a few minutes and a gigabyte of memory
/// (see the README's figures); beyond it a printed booklet is no longer a useful object.
pub const MAX_ENTRIES: usize = 50_000;

/// What a guide needs once chosen: its entries read from the database and the names around.
pub struct Prepared {
    pub choices: Choices,
    pub services: Vec<Service>,
    pub territory_name: Option<String>,
    pub public_url: String,
    pub reference: Reference,
    pub hours: Arc<HoursEvaluator>,
    /// The cache key, also the PDF's document identifier.
    pub key: String,
}

/// Reads what `choices` select: the published entries of their typologies in their communes.
/// An empty selection is a clear error (422), never an empty booklet.
pub async fn prepare(
    store: &Store,
    reference: &Reference,
    hours: Arc<HoursEvaluator>,
    choices: Choices,
    public_url: &str,
    key: String,
) -> Result<Prepared> {
    let db_store = store;
    let territory_name = match &choices.area {
        Area::Territory(Territory::Epci(code)) => {
            store::territory_name(db_store, "epci", code).await?
        }
        Area::Territory(Territory::Departement(code)) => {
            store::territory_name(db_store, "departement", code).await?
        }
        Area::Territory(Territory::Region(code)) => {
            store::territory_name(db_store, "region", code).await?
        }
        _ => None,
    };
    let communes: FxHashSet<&str> = content::communes_of(&choices.area, &reference.locator)
        .into_iter()
        .map(|c| c.insee_code.as_str())
        .collect();
    let typologies = choices.typology_codes(&reference.taxonomy);
    let services = store::published_in(db_store, &typologies, &communes).await?;
    if services.is_empty() {
        return Err(Error::Invalid(vec![FieldError::new(
            "selection",
            format!(
                "aucune fiche publiée pour ces thèmes et typologies sur {} : rien à imprimer / \
                 no published entry for these themes and typologies in this territory",
                territory_name.clone().unwrap_or_else(|| choices.area.id())
            ),
        )]));
    }
    if services.len() > MAX_ENTRIES {
        return Err(Error::Invalid(vec![FieldError::new(
            "selection",
            format!(
                "{} fiches : un annuaire imprimé en compte au plus {MAX_ENTRIES} ; choisissez \
                 moins de thèmes ou un territoire plus petit / too many entries for a printed \
                 directory",
                services.len()
            ),
        )]));
    }
    Ok(Prepared {
        choices,
        services,
        territory_name,
        public_url: public_url.to_owned(),
        reference: reference.clone(),
        hours,
        key,
    })
}

/// A made guide.
pub struct Output {
    pub pdf: Vec<u8>,
    pub html: String,
    pub pages: usize,
    pub entries: usize,
    pub conformance: Conformance,
    pub millis: u64,
}

/// Where a render is, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Queued,
    Composing,
    LayingOut,
    Writing,
    Done,
    Failed,
}

impl Stage {
    pub fn progress(self) -> f32 {
        match self {
            Stage::Queued => 0.0,
            Stage::Composing => 0.1,
            Stage::LayingOut => 0.25,
            Stage::Writing => 0.85,
            Stage::Done | Stage::Failed => 1.0,
        }
    }
}

/// Renders a prepared guide: CPU work, to be run off the async threads. `report` hears each
/// stage with the progress made (the layout's share moves volume by volume).
pub fn render(prepared: &Prepared, report: &dyn Fn(Stage, f32)) -> Result<Output> {
    let started = Instant::now();
    let stage = |stage: Stage| report(stage, stage.progress());
    stage(Stage::Composing);
    let sources = Sources {
        taxonomy: &prepared.reference.taxonomy,
        locator: &prepared.reference.locator,
        hours: &prepared.hours,
        territory_name: prepared.territory_name.clone(),
        public_url: &prepared.public_url,
    };
    let guide = content::build(&prepared.choices, &prepared.services, &sources)?;
    let html = super::html::guide(&guide).into_string();
    tracing::debug!(
        entries = guide.entry_count,
        ms = started.elapsed().as_millis() as u64,
        "guide composed"
    );
    stage(Stage::LayingOut);
    let (from, to) = (Stage::LayingOut.progress(), Stage::Writing.progress());
    let pdf = render::pdf(
        &guide,
        prepared.choices.logo.as_ref(),
        &prepared.key,
        &|done| report(Stage::LayingOut, from + (to - from) * done),
    )
    .map_err(render_error)?;
    stage(Stage::Writing);
    Ok(Output {
        pdf: pdf.bytes,
        html,
        pages: pdf.pages,
        entries: guide.entry_count,
        conformance: pdf.conformance,
        millis: started.elapsed().as_millis() as u64,
    })
}

/// A logo that does not decode is the user's to fix (422); any other layout failure is ours.
pub fn render_error(error: RenderError) -> Error {
    match error {
        RenderError::Logo(m) => Error::Invalid(vec![FieldError::new("logo", m)]),
        RenderError::Layout(m) => Error::Internal(anyhow::anyhow!("mise en page : {m}")),
    }
}

/// The state of a job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobStatus {
    pub id: String,
    pub stage: Stage,
    /// From 0 to 1.
    pub progress: f32,
    /// Jobs before this one in the queue (0 when it is being rendered or done).
    pub queue_position: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<usize>,
    /// `pdf/ua-1` or `tagged`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conformance: Option<String>,
    /// Why PDF/UA-1 was not met, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conformance_note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub render_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// The failure, as problem details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
    /// True when the answer came from the cache (same data version and choices).
    pub cached: bool,
}

/// Guides prepared by this instance and not yet taken by its renderer: the entries already
/// read, kept a short while (another instance may take the job, and reads them itself).
type PreparedHere = HashMap<String, (Prepared, Instant)>;

/// How long a render holds its job without news: renewed every [`REPORT_EVERY`] while it goes
/// on, so that only a dead instance lets it lapse.
const LEASE: std::time::Duration = std::time::Duration::from_secs(60);
/// How often a render under way writes where it stands (and renews its lease).
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// How often an idle renderer looks for a guide queued by another instance.
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Renders begun before a guide is failed: an instance died under each.
const MAX_ATTEMPTS: i64 = 3;
/// Stages of a guide not finished.
const PENDING: &str = "('queued', 'composing', 'laying_out', 'writing')";
/// Stages of a guide being rendered.
const UNDER_WAY: &str = "('composing', 'laying_out', 'writing')";

/// The queue and the cache of guides, in the database: a guide is queued by the instance that
/// received the request, rendered by whichever instance takes it first, and served by any. Each
/// instance renders one at a time: a guide takes a core and up to hundreds of megabytes, and a
/// second one would only slow both down.
pub struct Directories {
    store: Store,
    wake: Arc<tokio::sync::Notify>,
    prepared: Arc<Mutex<PreparedHere>>,
}

/// What a renderer needs to take jobs, and to read a foreign job's entries itself.
#[derive(Clone)]
pub struct Renderer {
    /// The queue and the entries.
    pub store: Store,
    pub reference: Reference,
    pub hours: Arc<HoursEvaluator>,
}

impl Directories {
    /// Starts this instance's renderer on the current Tokio runtime.
    pub fn start(renderer: Renderer) -> Self {
        let wake = Arc::new(tokio::sync::Notify::new());
        let prepared: Arc<Mutex<PreparedHere>> = Arc::default();
        let store = renderer.store.clone();
        tokio::spawn(render_loop(
            renderer,
            format!(
                "{}-{}",
                std::process::id(),
                crate::services::ServiceId::generate()
            ),
            wake.clone(),
            prepared.clone(),
        ));
        Self {
            store,
            wake,
            prepared,
        }
    }

    /// The job already made or under way for `key`, if any (a cache hit). A failure is not
    /// kept as an answer: the same choices may be tried again.
    pub async fn find(&self, key: &str) -> Result<Option<JobStatus>> {
        let id: Option<(String,)> = on_engine!(&self.store, |db| sqlx::query_as(
            "SELECT id FROM guide_jobs WHERE cache_key = $1 AND stage <> 'failed' \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(key)
        .fetch_optional(db)
        .await?);
        match id {
            Some((id,)) => Ok(read_status(&self.store, &id, true).await?),
            None => Ok(None),
        }
    }

    /// Whether `owner` may queue one more guide: `429` past its own share, `503` when the
    /// queue is full; checked before the entries are read.
    pub async fn admit(&self, owner: &str) -> Result<()> {
        let sql = pending_counts_sql();
        let (mine, all): (i64, i64) = on_engine!(&self.store, |db| sqlx::query_as(&sql)
            .bind(owner)
            .fetch_one(db)
            .await?);
        within_bounds(mine as usize, all as usize)
    }

    /// Queues a prepared guide for `owner` and says where it stands, within the bounds of
    /// [`Directories::admit`] (checked again in the transaction that queues it, after its row
    /// is written: two instances queueing at once are counted one after the other). `raw` and
    /// `logo` are the choices as received: what another instance renders it from.
    pub async fn submit(
        &self,
        prepared: Prepared,
        raw: &super::RawChoices,
        logo: Option<&[u8]>,
        owner: &str,
    ) -> Result<JobStatus> {
        let id = format!("{}", crate::services::ServiceId::generate());
        let mut raw = raw.clone();
        // The edition date as chosen now: a render on another day prints the same.
        raw.date = Some(prepared.choices.date.to_string());
        let choices = serde_json::to_string(&raw).map_err(anyhow::Error::from)?;
        let mut tx = self.store.begin().await?;
        // The job's row first, then the counts with it: two instances queueing at once wait
        // for each other (SQLite's writers; PostgreSQL's lock on the queue's key).
        let key_lock = tx.engine().key_lock();
        let counts = pending_counts_sql();
        let (mine, all): (i64, i64) = in_tx!(&mut tx, |conn| {
            if let Some(lock) = key_lock {
                sqlx::query(lock)
                    .bind("guide_jobs")
                    .execute(&mut *conn)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO guide_jobs (id, cache_key, owner, choices, logo, public_url, stage, \
                 progress, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7)",
            )
            .bind(&id)
            .bind(&prepared.key)
            .bind(owner)
            .bind(&choices)
            .bind(logo)
            .bind(&prepared.public_url)
            .bind(chrono::Utc::now())
            .execute(&mut *conn)
            .await?;
            sqlx::query_as(&counts)
                .bind(owner)
                .fetch_one(&mut *conn)
                .await?
        });
        // The counts include this job.
        within_bounds(mine as usize - 1, all as usize - 1)?;
        tx.commit().await?;
        self.lock().insert(id.clone(), (prepared, Instant::now()));
        self.wake.notify_one();
        read_status(&self.store, &id, false)
            .await?
            .ok_or_else(|| Error::not_found("annuaire", id))
    }

    pub async fn status(&self, id: &str) -> Result<Option<JobStatus>> {
        read_status(&self.store, id, false).await
    }

    /// The finished guide of job `id`, as PDF or HTML: `Ok(None)` while it is not ready, the
    /// job's own error when it failed, 404 when there is no such job.
    pub async fn output(&self, id: &str, part: Part) -> Result<Option<Vec<u8>>> {
        let columns = match part {
            Part::Pdf => "pdf, NULL",
            Part::Html => "NULL, html",
        };
        let sql = format!("SELECT stage, {columns}, error FROM guide_jobs WHERE id = $1");
        let row: Option<OutputRow> = on_engine!(&self.store, |db| sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(db)
            .await?);
        let Some((stage, pdf, html, error)) = row else {
            return Err(Error::not_found("annuaire", id));
        };
        if let Some(problem) = error {
            return Err(replay(&problem));
        }
        Ok((stage == "done")
            .then(|| pdf.or(html.map(String::into_bytes)))
            .flatten())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PreparedHere> {
        self.prepared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A job's stage, its PDF or its HTML, and its failure.
type OutputRow = (String, Option<Vec<u8>>, Option<String>, Option<String>);

/// What of a finished guide to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Pdf,
    Html,
}

/// A job's stored failure, answered again: the user's to fix (422, with its fields) as it
/// was, anything else as an internal error.
fn replay(problem: &str) -> Error {
    match serde_json::from_str::<Problem>(problem) {
        Ok(problem) if problem.status == 422 && !problem.errors.is_empty() => {
            Error::Invalid(problem.errors)
        }
        Ok(problem) => Error::Internal(anyhow::anyhow!("{}", problem.detail)),
        Err(error) => Error::Internal(anyhow::anyhow!("échec illisible : {error}")),
    }
}

/// Counts the guides not finished, `$1`'s and everyone's (as 64-bit integers on both engines).
fn pending_counts_sql() -> String {
    format!(
        "SELECT CAST(COALESCE(SUM(CASE WHEN owner = $1 THEN 1 ELSE 0 END), 0) AS BIGINT), \
         COUNT(*) FROM guide_jobs WHERE stage IN {PENDING}"
    )
}

/// Whether one more guide may be queued when its owner has `mine` and everyone `all` waiting
/// or under way.
fn within_bounds(mine: usize, all: usize) -> Result<()> {
    if mine >= MAX_QUEUED_PER_OWNER {
        return Err(Error::TooManyRequests {
            code: "too_many_guides",
            detail: format!(
                "{MAX_QUEUED_PER_OWNER} annuaires de votre organisation sont déjà en \
                 préparation : attendez qu'ils soient prêts / {MAX_QUEUED_PER_OWNER} guides of \
                 your organisation are already being made"
            ),
            retry_after: RETRY_AFTER,
        });
    }
    if all >= MAX_QUEUED {
        return Err(Error::Busy {
            code: "guide_queue_full",
            detail: "la file des annuaires imprimés est pleine : réessayez dans une minute / \
                     the queue of printed guides is full, retry in a minute"
                .into(),
            retry_after: RETRY_AFTER,
        });
    }
    Ok(())
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Queued => "queued",
        Stage::Composing => "composing",
        Stage::LayingOut => "laying_out",
        Stage::Writing => "writing",
        Stage::Done => "done",
        Stage::Failed => "failed",
    }
}

fn stage_named(name: &str) -> Stage {
    match name {
        "queued" => Stage::Queued,
        "composing" => Stage::Composing,
        "laying_out" => Stage::LayingOut,
        "writing" => Stage::Writing,
        "done" => Stage::Done,
        _ => Stage::Failed,
    }
}

type StatusRow = (
    String,
    f64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    chrono::DateTime<chrono::Utc>,
);

async fn read_status(store: &Store, id: &str, cached: bool) -> Result<Option<JobStatus>> {
    let row: Option<StatusRow> = on_engine!(store, |db| sqlx::query_as(
        "SELECT stage, progress, pages, entries, conformance, conformance_note, render_ms, \
         error, created_at FROM guide_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?);
    let Some((stage, progress, pages, entries, conformance, note, millis, error, created)) = row
    else {
        return Ok(None);
    };
    let stage = stage_named(&stage);
    let queue_position = if stage == Stage::Queued {
        let (before,): (i64,) = on_engine!(store, |db| sqlx::query_as(
            "SELECT COUNT(*) FROM guide_jobs WHERE stage = 'queued' \
             AND (created_at < $1 OR (created_at = $1 AND id < $2))",
        )
        .bind(created)
        .bind(id)
        .fetch_one(db)
        .await?);
        before as usize
    } else {
        0
    };
    let done = stage == Stage::Done;
    Ok(Some(JobStatus {
        id: id.to_owned(),
        stage,
        progress: progress as f32,
        queue_position,
        pages: pages.map(|n| n as usize),
        entries: entries.map(|n| n as usize),
        conformance,
        conformance_note: note,
        render_ms: millis.map(|n| n as u64),
        pdf: done.then(|| format!("/api/v1/directories/{id}/guide.pdf")),
        html: done.then(|| format!("/api/v1/directories/{id}/guide.html")),
        error: error.and_then(|e| serde_json::from_str(&e).ok()),
        cached,
    }))
}

/// A job taken by an instance's renderer.
#[derive(sqlx::FromRow)]
pub struct Taken {
    id: String,
    cache_key: String,
    choices: String,
    logo: Option<Vec<u8>>,
    public_url: String,
    attempts: i64,
}

impl Taken {
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Takes the oldest guide queued, or one whose render's lease lapsed, for `worker`. On
/// PostgreSQL a job another instance is taking is skipped (`FOR UPDATE SKIP LOCKED`); SQLite
/// serialises the statements. The outer condition is checked again on the row as updated, so
/// that a job is never taken twice.
pub async fn take_next(store: &Store, worker: &str) -> Result<Option<Taken>> {
    let now = chrono::Utc::now();
    let free = format!("(stage = 'queued' OR (stage IN {UNDER_WAY} AND lease_until < $3))");
    let sql = format!(
        "UPDATE guide_jobs SET stage = 'composing', progress = $1, worker = $2, \
         lease_until = $4, attempts = attempts + 1 \
         WHERE id = (SELECT id FROM guide_jobs WHERE {free} ORDER BY created_at, id LIMIT 1{}) \
         AND {free} \
         RETURNING id, cache_key, choices, logo, public_url, attempts",
        store.skip_locked()
    );
    Ok(on_engine!(store, |db| sqlx::query_as::<_, Taken>(&sql)
        .bind(Stage::Composing.progress() as f64)
        .bind(worker)
        .bind(now)
        .bind(now + chrono::Duration::from_std(LEASE).unwrap_or_default())
        .fetch_optional(db)
        .await?))
}

/// Whether a guide waits for a renderer (a read, before trying to take one).
async fn any_free(store: &Store) -> Result<bool> {
    let sql = format!(
        "SELECT id FROM guide_jobs WHERE stage = 'queued' \
         OR (stage IN {UNDER_WAY} AND lease_until < $1) LIMIT 1"
    );
    let found: Option<(String,)> = on_engine!(store, |db| sqlx::query_as(&sql)
        .bind(chrono::Utc::now())
        .fetch_optional(db)
        .await?);
    Ok(found.is_some())
}

/// This instance's renderer: takes guides one at a time, when woken by a guide queued here or
/// every [`LOOK_EVERY`] for those queued elsewhere.
async fn render_loop(
    renderer: Renderer,
    worker: String,
    wake: Arc<tokio::sync::Notify>,
    prepared: Arc<Mutex<PreparedHere>>,
) {
    loop {
        let next = match any_free(&renderer.store).await {
            Ok(true) => take_next(&renderer.store, &worker).await,
            Ok(false) => Ok(None),
            Err(error) => Err(error),
        };
        match next {
            Ok(Some(job)) => {
                let here = prepared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&job.id)
                    .map(|(p, _)| p);
                let id = job.id.clone();
                if let Err(error) = run(&renderer, &worker, job, here).await {
                    tracing::warn!(job = %id, %error, "guide not recorded");
                }
            }
            Ok(None) => {
                prepared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|_, (_, at)| at.elapsed() < LEASE * 10);
                let _ = tokio::time::timeout(LOOK_EVERY, wake.notified()).await;
            }
            Err(error) => {
                tracing::warn!(%error, "guide queue not read");
                tokio::time::sleep(LOOK_EVERY).await;
            }
        }
    }
}

/// Renders a job taken by `worker` (its entries read again unless prepared here) and records
/// the guide or the failure. Where it stands is written every [`REPORT_EVERY`], renewing the
/// lease; a job another instance took since (this one's lease lapsed) is not overwritten.
async fn run(renderer: &Renderer, worker: &str, job: Taken, here: Option<Prepared>) -> Result<()> {
    let store = &renderer.store;
    let result = if job.attempts > MAX_ATTEMPTS {
        Err(Error::Internal(anyhow::anyhow!(
            "rendu interrompu {MAX_ATTEMPTS} fois (instance arrêtée pendant le rendu)"
        )))
    } else {
        match here {
            Some(prepared) => Ok(prepared),
            None => prepare_again(renderer, &job).await,
        }
    };
    let result = match result {
        Ok(prepared) => {
            let progress = Arc::new(Mutex::new((Stage::Composing, Stage::Composing.progress())));
            let heard = progress.clone();
            let mut rendering = tokio::task::spawn_blocking(move || {
                render(&prepared, &|stage, done| {
                    *heard.lock().unwrap_or_else(PoisonError::into_inner) = (stage, done);
                })
            });
            let mut every = tokio::time::interval(REPORT_EVERY);
            loop {
                tokio::select! {
                    finished = &mut rendering => {
                        break finished.unwrap_or_else(|panic| {
                            Err(Error::Internal(anyhow::anyhow!("rendu interrompu : {panic}")))
                        });
                    }
                    _ = every.tick() => {
                        let (stage, done) = *progress.lock().unwrap_or_else(PoisonError::into_inner);
                        on_engine!(store, |db| sqlx::query(
                            "UPDATE guide_jobs SET stage = $1, progress = $2, lease_until = $3 \
                             WHERE id = $4 AND worker = $5",
                        )
                        .bind(stage_name(stage))
                        .bind(done as f64)
                        .bind(chrono::Utc::now() + chrono::Duration::from_std(LEASE).unwrap_or_default())
                        .bind(&job.id)
                        .bind(worker)
                        .execute(db)
                        .await.map(drop)?);
                    }
                }
            }
        }
        Err(error) => Err(error),
    };
    let id = &job.id;
    match result {
        Ok(output) => {
            tracing::info!(job = %id, pages = output.pages, entries = output.entries, ms = output.millis, "guide rendered");
            let (conformance, note) = match output.conformance {
                Conformance::PdfUa1 => ("pdf/ua-1", None),
                Conformance::Tagged { ua_refused } => ("tagged", Some(ua_refused)),
            };
            on_engine!(store, |db| sqlx::query(
                "UPDATE guide_jobs SET stage = 'done', progress = 1, pages = $1, entries = $2, \
                 conformance = $3, conformance_note = $4, render_ms = $5, pdf = $6, html = $7, \
                 finished_at = $8, lease_until = NULL WHERE id = $9 AND worker = $10",
            )
            .bind(output.pages as i64)
            .bind(output.entries as i64)
            .bind(conformance)
            .bind(note)
            .bind(output.millis as i64)
            .bind(&output.pdf)
            .bind(&output.html)
            .bind(chrono::Utc::now())
            .bind(id)
            .bind(worker)
            .execute(db)
            .await
            .map(drop)?);
        }
        Err(error) => {
            if error.status().is_server_error() {
                tracing::error!(job = %id, error = ?error, "guide failed");
            }
            let problem =
                serde_json::to_string(&Problem::from(&error)).map_err(anyhow::Error::from)?;
            on_engine!(store, |db| sqlx::query(
                "UPDATE guide_jobs SET stage = 'failed', progress = 1, error = $1, \
                 finished_at = $2, lease_until = NULL WHERE id = $3 AND worker = $4",
            )
            .bind(problem)
            .bind(chrono::Utc::now())
            .bind(id)
            .bind(worker)
            .execute(db)
            .await
            .map(drop)?);
        }
    }
    // The oldest finished guides go: their data version is past, and a PDF weighs megabytes.
    on_engine!(store, |db| sqlx::query(&format!(
        "DELETE FROM guide_jobs WHERE stage NOT IN {PENDING} AND id NOT IN \
         (SELECT id FROM guide_jobs WHERE stage NOT IN {PENDING} \
          ORDER BY finished_at DESC, id DESC LIMIT {KEPT})"
    ))
    .execute(db)
    .await
    .map(drop)?);
    Ok(())
}

/// A job queued by another instance: its choices parsed again and its entries read here.
async fn prepare_again(renderer: &Renderer, job: &Taken) -> Result<Prepared> {
    let raw: super::RawChoices = serde_json::from_str(&job.choices).map_err(anyhow::Error::from)?;
    let today = crate::search::hours::paris_now().date_naive();
    let choices = Choices::parse(
        &raw,
        job.logo.clone(),
        &renderer.reference.taxonomy,
        &renderer.reference.locator,
        today,
    )?;
    prepare(
        &renderer.store,
        &renderer.reference,
        renderer.hours.clone(),
        choices,
        &job.public_url,
        job.cache_key.clone(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_per_owner_and_overall() {
        let refused = within_bounds(MAX_QUEUED_PER_OWNER, MAX_QUEUED_PER_OWNER).unwrap_err();
        assert_eq!(refused.status().as_u16(), 429);
        assert_eq!(refused.retry_after(), Some(RETRY_AFTER));
        assert!(within_bounds(0, MAX_QUEUED_PER_OWNER).is_ok());
        assert!(within_bounds(MAX_QUEUED_PER_OWNER - 1, MAX_QUEUED - 1).is_ok());
        let refused = within_bounds(0, MAX_QUEUED).unwrap_err();
        assert_eq!(refused.status().as_u16(), 503);
        assert_eq!(refused.code(), "guide_queue_full");
    }

    #[test]
    fn stages_are_stored_by_name() {
        for stage in [
            Stage::Queued,
            Stage::Composing,
            Stage::LayingOut,
            Stage::Writing,
            Stage::Done,
            Stage::Failed,
        ] {
            assert_eq!(stage_named(stage_name(stage)), stage);
            assert_eq!(
                serde_json::to_value(stage).unwrap(),
                serde_json::Value::from(stage_name(stage))
            );
        }
    }
}
