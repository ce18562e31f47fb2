//! Making guides: the selection from the database, the rendering (one at a time, on a blocking
//! thread, fed by a queue), and the results kept by data version and choices so that the same
//! guide is never computed twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rustc_hash::FxHashSet;
use serde::Serialize;
use utoipa::ToSchema;

use super::content::{self, Sources};
use super::render::{self, Conformance, RenderError};
use super::{store, Choices};
use crate::coverage::Area;
use crate::db::Pool;
use crate::error::{Error, FieldError, Problem, Result};
use crate::import::Reference;
use crate::search::engine::Territory;
use crate::search::hours::HoursEvaluator;
use crate::services::Service;

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
    pool: &Pool,
    reference: &Reference,
    hours: Arc<HoursEvaluator>,
    choices: Choices,
    public_url: &str,
    key: String,
) -> Result<Prepared> {
    let territory_name = match &choices.area {
        Area::Territory(Territory::Epci(code)) => store::territory_name(pool, "epci", code).await?,
        Area::Territory(Territory::Departement(code)) => {
            store::territory_name(pool, "departement", code).await?
        }
        Area::Territory(Territory::Region(code)) => {
            store::territory_name(pool, "region", code).await?
        }
        _ => None,
    };
    let communes: FxHashSet<&str> = content::communes_of(&choices.area, &reference.locator)
        .into_iter()
        .map(|c| c.insee_code.as_str())
        .collect();
    let typologies = choices.typology_codes(&reference.taxonomy);
    let services = store::published_in(pool, &typologies, &communes).await?;
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

struct Job {
    key: String,
    /// Who asked (an organisation id, `operator`), for the per-owner bound of the queue.
    owner: String,
    stage: Stage,
    /// From 0 to 1: the stage's share, and within the layout the volumes done.
    progress: f32,
    output: Option<Arc<Output>>,
    error: Option<Arc<Error>>,
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<String, Job>,
    /// Job ids by cache key.
    by_key: HashMap<String, String>,
    /// Ids of jobs waiting, in order.
    queue: VecDeque<String>,
    /// Finished jobs, oldest first, for eviction.
    finished: VecDeque<String>,
}

/// The queue and the cache of guides. One render at a time: a guide takes a core and up to
/// hundreds of megabytes, and a second one would only slow both down.
pub struct Directories {
    inner: Arc<Mutex<Inner>>,
    sender: tokio::sync::mpsc::UnboundedSender<(String, Prepared)>,
}

impl Directories {
    /// Starts the worker on the current Tokio runtime.
    pub fn start() -> Self {
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(String, Prepared)>();
        let state = inner.clone();
        tokio::spawn(async move {
            while let Some((id, prepared)) = receiver.recv().await {
                let worker_state = state.clone();
                let job_id = id.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let set_stage = |stage: Stage, progress: f32| {
                        let mut inner = worker_state.lock().unwrap_or_else(PoisonError::into_inner);
                        inner.queue.retain(|queued| queued != &job_id);
                        if let Some(job) = inner.jobs.get_mut(&job_id) {
                            job.stage = stage;
                            job.progress = progress;
                        }
                    };
                    render(&prepared, &set_stage)
                })
                .await
                .unwrap_or_else(|panic| {
                    Err(Error::Internal(anyhow::anyhow!(
                        "rendu interrompu : {panic}"
                    )))
                });
                let mut inner = state.lock().unwrap_or_else(PoisonError::into_inner);
                inner.queue.retain(|queued| queued != &id);
                if let Some(job) = inner.jobs.get_mut(&id) {
                    match result {
                        Ok(output) => {
                            tracing::info!(job = %id, pages = output.pages, entries = output.entries, ms = output.millis, "guide rendered");
                            job.stage = Stage::Done;
                            job.progress = 1.0;
                            job.output = Some(Arc::new(output));
                        }
                        Err(error) => {
                            if error.status().is_server_error() {
                                tracing::error!(job = %id, error = ?error, "guide failed");
                            }
                            job.stage = Stage::Failed;
                            job.progress = 1.0;
                            job.error = Some(Arc::new(error));
                        }
                    }
                }
                inner.finished.push_back(id);
                while inner.finished.len() > KEPT {
                    if let Some(old) = inner.finished.pop_front() {
                        if let Some(job) = inner.jobs.remove(&old) {
                            inner.by_key.remove(&job.key);
                        }
                    }
                }
            }
        });
        Self { inner, sender }
    }

    /// The job already made or under way for `key`, if any (a cache hit).
    pub fn find(&self, key: &str) -> Option<JobStatus> {
        let inner = self.lock();
        let id = inner.by_key.get(key)?;
        // A failure is not kept as an answer: the same choices may be tried again.
        let job = inner.jobs.get(id)?;
        if job.stage == Stage::Failed {
            return None;
        }
        Some(status(&inner, id, job, true))
    }

    /// Whether `owner` may queue one more guide: `429` past its own share, `503` when the
    /// queue is full; checked before the entries are read.
    pub fn admit(&self, owner: &str) -> Result<()> {
        within_bounds(&self.lock(), owner)
    }

    /// Queues a prepared guide for `owner` and says where it stands, within the bounds of
    /// [`Directories::admit`] (checked again under the lock of the insertion).
    pub fn submit(&self, prepared: Prepared, owner: &str) -> Result<JobStatus> {
        let id = format!("{}", crate::services::ServiceId::generate());
        let mut inner = self.lock();
        within_bounds(&inner, owner)?;
        inner.by_key.insert(prepared.key.clone(), id.clone());
        inner.jobs.insert(
            id.clone(),
            Job {
                owner: owner.to_owned(),
                key: prepared.key.clone(),

                stage: Stage::Queued,
                progress: Stage::Queued.progress(),
                output: None,
                error: None,
            },
        );
        inner.queue.push_back(id.clone());
        let answer = status(&inner, &id, &inner.jobs[&id], false);
        drop(inner);
        if self.sender.send((id.clone(), prepared)).is_err() {
            let mut inner = self.lock();
            if let Some(job) = inner.jobs.get_mut(&id) {
                job.stage = Stage::Failed;
                job.error = Some(Arc::new(Error::Internal(anyhow::anyhow!(
                    "file de rendu arrêtée"
                ))));
            }
        }
        Ok(answer)
    }

    pub fn status(&self, id: &str) -> Option<JobStatus> {
        let inner = self.lock();
        let job = inner.jobs.get(id)?;
        Some(status(&inner, id, job, false))
    }

    /// The finished guide of job `id`: `Ok(None)` while it is not ready, the job's own error
    /// when it failed, 404 when there is no such job.
    pub fn output(&self, id: &str) -> Result<Option<Arc<Output>>, Arc<Error>> {
        let inner = self.lock();
        let Some(job) = inner.jobs.get(id) else {
            return Err(Arc::new(Error::not_found("annuaire", id)));
        };
        if let Some(error) = &job.error {
            return Err(error.clone());
        }
        Ok(job.output.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `owner` may queue one more guide, seen from `inner`.
fn within_bounds(inner: &Inner, owner: &str) -> Result<()> {
    let pending: Vec<&Job> = inner
        .jobs
        .values()
        .filter(|job| !matches!(job.stage, Stage::Done | Stage::Failed))
        .collect();
    if pending.iter().filter(|job| job.owner == owner).count() >= MAX_QUEUED_PER_OWNER {
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
    if pending.len() >= MAX_QUEUED {
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

fn status(inner: &Inner, id: &str, job: &Job, cached: bool) -> JobStatus {
    let output = job.output.as_deref();
    JobStatus {
        id: id.to_owned(),
        stage: job.stage,
        progress: job.progress,
        queue_position: inner.queue.iter().position(|q| q == id).unwrap_or(0),
        pages: output.map(|o| o.pages),
        entries: output.map(|o| o.entries),
        conformance: output.map(|o| match o.conformance {
            Conformance::PdfUa1 => "pdf/ua-1".to_owned(),
            Conformance::Tagged { .. } => "tagged".to_owned(),
        }),
        conformance_note: output.and_then(|o| match &o.conformance {
            Conformance::PdfUa1 => None,
            Conformance::Tagged { ua_refused } => Some(ua_refused.clone()),
        }),
        render_ms: output.map(|o| o.millis),
        pdf: output.map(|_| format!("/api/v1/directories/{id}/guide.pdf")),
        html: output.map(|_| format!("/api/v1/directories/{id}/guide.html")),
        error: job.error.as_deref().map(Problem::from),
        cached,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(owner: &str, stage: Stage) -> Job {
        Job {
            owner: owner.into(),
            key: String::new(),
            stage,
            progress: 0.0,
            output: None,
            error: None,
        }
    }

    #[test]
    fn the_queue_is_bounded_per_owner_and_overall() {
        let mut inner = Inner::default();
        for n in 0..MAX_QUEUED_PER_OWNER {
            inner
                .jobs
                .insert(format!("a{n}"), job("org-a", Stage::Queued));
        }
        // Finished guides do not count.
        inner
            .jobs
            .insert("a-done".into(), job("org-a", Stage::Done));
        inner
            .jobs
            .insert("a-failed".into(), job("org-a", Stage::Failed));
        let refused = within_bounds(&inner, "org-a").unwrap_err();
        assert_eq!(refused.status().as_u16(), 429);
        assert_eq!(refused.retry_after(), Some(RETRY_AFTER));
        assert!(within_bounds(&inner, "org-b").is_ok());
        for n in inner.jobs.len()..MAX_QUEUED + 2 {
            inner
                .jobs
                .insert(format!("o{n}"), job(&format!("org-{n}"), Stage::LayingOut));
        }
        let refused = within_bounds(&inner, "org-new").unwrap_err();
        assert_eq!(refused.status().as_u16(), 503);
        assert_eq!(refused.code(), "guide_queue_full");
    }
}
