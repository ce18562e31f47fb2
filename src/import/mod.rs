//! Imports of entries from files: streaming read, validation, classification (created, updated,
//! unchanged) and an all-or-nothing write in one transaction.

pub mod bpe;
pub mod data_inclusion;
pub mod dila;
pub mod formats;
pub mod records;

use rustc_hash::FxHashMap as HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{ConnRef, Store, Tx};
use crate::error::FieldError;
use crate::lock;
use crate::services::bulk::BulkWriter;
use crate::services::claims;
use crate::services::copy::CopyWriter;
use crate::services::store::{self, Known, Upsert};
use crate::services::turn::WriteTurn;
use crate::{in_tx, on_engine};

/// Rows handed from the validating thread to the writing thread at a time.
const BATCH: usize = 1_000;
use crate::services::{Draft, ServiceId, Validator};
use crate::taxonomy::Taxonomy;
use crate::territory::Locator;
use formats::{FileError, Format, Record};

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The contributing organisation; defaults to the file's own (SCDL `COLL_NOM`) or its name.
    pub source: Option<String>,
    /// Validate and count, write nothing.
    pub dry_run: bool,
    /// Import the valid rows and report the others, instead of rejecting the whole file.
    pub skip_invalid: bool,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
    /// Who started it ("user:ID", "token:ID"), for the import journal; none from the command line.
    pub started_by: Option<String>,
    /// Rows whose commune is outside this territory are rejected (a contributor's upload).
    pub territory: Option<crate::accounts::Territory>,
    /// Keep the ids of the written entries in the report (to update the indexes after a small
    /// upload without rebuilding them).
    pub collect_ids: bool,
    /// Keep each row's outcome (and the content of those to write) and the source's published
    /// entries the file leaves out, in the report: the plan a dry run shows.
    pub plan: bool,
    /// Withdraw, in the import's transaction, the source's published entries the file leaves
    /// out (only when no row is rejected: a row that cannot be read names no entry).
    pub withdraw_missing: bool,
    /// Confirm (« rien n'a changé »: verified_at now) the entries the file leaves unchanged, in
    /// the import's transaction: a contributor who sends its whole list reviews it.
    pub confirm_unchanged: bool,
    /// The live indexes of the server importing (an upload), brought up to date after the
    /// commit; the command line leaves that to a running server or the next `serve`.
    pub live: Option<Arc<crate::search::live::LiveIndexes>>,
    /// The file's format, when the caller knows it (a harvest); guessed from the name and
    /// header otherwise.
    pub format: Option<Format>,
    /// Refuse a row whose position, phone, e-mail, web site, hours, postcode or accessibility
    /// is doubtful, instead of keeping it with a quality flag.
    pub strict: bool,
    /// What the data·inclusion services file says each structure offers (a harvest of
    /// data·inclusion structures).
    pub data_inclusion_services: Option<Arc<data_inclusion::Services>>,
}

/// What an import does (or would do) with one row of the file.
#[derive(Debug, Clone)]
pub struct PlannedRow {
    /// The line (CSV) or feature number (GeoJSON) in the file.
    pub row: u64,
    pub source_ref: String,
    /// The entry it updates or leaves unchanged; a creation's is chosen when written.
    pub id: Option<ServiceId>,
    /// What is written: none when the row is unchanged.
    pub write: Option<(crate::services::Content, Option<DateTime<Utc>>)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub file: String,
    pub format: Option<Format>,
    pub source: String,
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// Rows kept with a quality flag (each flag is a warning).
    pub flagged: u64,
    /// Whether anything was written: false for a dry run or a rejected file.
    pub committed: bool,
    pub errors: Vec<FieldError>,
    /// What is doubtful in the rows kept: one per quality flag, with the line and field.
    pub warnings: Vec<FieldError>,
    /// Published entries of the source the file leaves out, withdrawn when asked for
    /// (`ImportOptions::withdraw_missing`).
    pub withdrawn: u64,
    /// Unchanged entries confirmed (`ImportOptions::confirm_unchanged`).
    pub confirmed: u64,
    /// The entries the file leaves unchanged (`ImportOptions::confirm_unchanged`).
    #[serde(skip)]
    pub unchanged_ids: Vec<ServiceId>,
    /// The entries created, updated or withdrawn, when asked for (`ImportOptions::collect_ids`).
    #[serde(skip)]
    pub written: Vec<ServiceId>,
    /// Each valid row's outcome, in the file's order (`ImportOptions::plan`).
    #[serde(skip)]
    pub plan: Vec<PlannedRow>,
    /// The source's published entries the file leaves out, as (source_ref, id), by source_ref
    /// (`ImportOptions::plan` or `withdraw_missing`).
    #[serde(skip)]
    pub missing: Vec<(String, ServiceId)>,
    /// Rejected rows that named no entry (unreadable, or without `source_ref`): while there is
    /// one, nothing is withdrawn, since it may be any entry.
    #[serde(skip)]
    pub unnamed_rejected: u64,
    /// Records of a national source whose type no typology takes, by type (a harvest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unmapped: Option<records::Unmapped>,
    /// How the rows of a source without lasting ids were matched to earlier entries (BPE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matching: Option<bpe::Matching>,
    /// Records of entries an organisation claimed: their fields are left to it.
    pub claimed: u64,
    /// Claimed entries whose suggestions the file changes (what the source says differently).
    pub suggested: u64,
    /// Claimed entries the source no longer lists, flagged (never withdrawn).
    pub claims_dropped: u64,
    /// The suggestions to store, per claimed entry whose suggestions change.
    #[serde(skip)]
    pub suggestion_changes: Vec<(ServiceId, Vec<(String, String)>)>,
    /// Claimed entries the file leaves out that were listed before; and those it lists again.
    #[serde(skip)]
    pub dropped_claims: Vec<ServiceId>,
    #[serde(skip)]
    pub listed_again: Vec<ServiceId>,
    /// The services file of a data·inclusion harvest: services read, structures given some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_inclusion_services: Option<data_inclusion::ServicesSummary>,
    /// The detection of duplicates across sources run after the commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<crate::services::duplicates::Pass>,
}

impl ImportReport {
    /// The summary printed at the end of an import, in French then English.
    pub fn summary(&self) -> String {
        let mut summary = self.counts();
        if self.claimed > 0 || self.claims_dropped > 0 {
            summary.push_str(&format!(
                "\n  fiches revendiquées (laissées à leur organisation) {} · suggestions nouvelles pour {} · plus publiées par la source {}",
                self.claimed, self.suggested, self.claims_dropped
            ));
        }
        if let Some(pass) = self
            .duplicates
            .as_ref()
            .filter(|p| p.groups > 0 || p.shown_again > 0)
        {
            summary.push_str(&format!(
                "\n  doublons entre sources : {} groupes, {} fiches masquées ({} nouvelles), {} affichées à nouveau",
                pass.groups, pass.hidden, pass.newly_hidden, pass.shown_again
            ));
        }
        summary
    }

    fn counts(&self) -> String {
        let head = format!(
            "{} ({}, source « {} »)",
            self.file,
            self.format.map_or("format inconnu", Format::label),
            self.source
        );
        if self.committed {
            format!(
                "{head} : importé / imported\n  lignes {} · créées {} · mises à jour {} · inchangées {} · rejetées {} · à vérifier {}",
                self.rows, self.created, self.updated, self.unchanged, self.rejected, self.flagged
            )
        } else {
            let why = if self.rejected > 0 {
                "rejeté, rien n'est écrit / rejected, nothing written"
            } else {
                "vérifié, rien n'est écrit (--dry-run) / checked, nothing written"
            };
            format!(
                "{head} : {why}\n  lignes {} · à créer {} · à mettre à jour {} · inchangées {} · rejetées {} · à vérifier {}",
                self.rows, self.created, self.updated, self.unchanged, self.rejected, self.flagged
            )
        }
    }
}

/// Where an import's rows come from.
pub enum Input {
    File(std::path::PathBuf),
    /// An in-memory CSV or GeoJSON text, with a name to report (the embedded demo, uploads).
    Bytes {
        name: String,
        bytes: Vec<u8>,
    },
}

impl Input {
    fn name(&self) -> String {
        match self {
            Input::File(path) => path.display().to_string(),
            Input::Bytes { name, .. } => name.clone(),
        }
    }
}

/// The reference data an import validates against.
#[derive(Clone)]
pub struct Reference {
    pub taxonomy: Arc<Taxonomy>,
    pub locator: Arc<Locator>,
}

fn parse_verified_at(value: &str) -> Result<Option<DateTime<Utc>>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if let Ok(instant) = crate::dates::parse_instant(v) {
        return Ok(Some(instant));
    }
    crate::dates::parse_date(v).map(|d| Some(d.and_hms_opt(12, 0, 0).unwrap_or_default().and_utc()))
}

/// The CPU side of an import, run on a blocking thread: validates rows and classifies them
/// against what the database holds, and hands batches of writes to the async writer.
struct Classifier<'a> {
    validator: Validator<'a>,
    known: HashMap<String, Known>,
    /// The source's records that organisations claimed, by source_ref: left to them.
    claimed: HashMap<String, claims::Claimed>,
    /// source_ref → line where it was first seen in this file, for rows of no known entry
    /// (a known entry keeps its own, `Known::seen_at`: no copy of millions of keys).
    seen: HashMap<String, u64>,
    batch: Vec<Write>,
    writes: tokio::sync::mpsc::Sender<Vec<Write>>,
    writer_gone: bool,
    report: ImportReport,
    options: ImportOptions,
    /// How rows are validated (format, strictness), part of each record's digest.
    rules: String,
}

/// Counts a row kept with quality flags, and reports each flag as a warning at `line`.
fn warn(report: &mut ImportReport, flags: &[crate::services::quality::QualityFlag], line: u64) {
    if flags.is_empty() {
        return;
    }
    report.flagged += 1;
    report.warnings.extend(flags.iter().map(|flag| FieldError {
        row: Some(line),
        field: flag.field.clone(),
        message: flag.message.clone(),
    }));
}

/// The error of a record whose `source_ref` an earlier line of the file already gave.
fn twice(source_ref: &str, first: u64) -> FieldError {
    FieldError::new(
        "source_ref",
        format!("« {source_ref} » apparaît deux fois (déjà ligne {first})"),
    )
}

/// What the classifier hands the writer.
enum Write {
    /// An entry to create or update (boxed: a digest is far smaller).
    Upsert(Box<Upsert>),
    /// The digest of an unchanged record to remember (see `Draft::raw_digest`), with the
    /// SIRET it gives.
    SourceDigest(ServiceId, String, Option<String>),
}

impl Classifier<'_> {
    /// The source reference of each published entry by the digest its record was stored with:
    /// a record of that digest is unchanged without being read (see `Draft::raw_digest`).
    /// Empty for an upload bound to a territory, which checks every record's commune; claimed
    /// entries are left out, their records compared with what the contributor made of them.
    fn unchanged_by_digest(&self) -> HashMap<String, String> {
        if self.options.territory.is_some() {
            return HashMap::default();
        }
        self.known
            .iter()
            .filter(|(source_ref, k)| k.published && !self.claimed.contains_key(*source_ref))
            .filter_map(|(source_ref, k)| Some((k.source_digest.clone()?, source_ref.clone())))
            .collect()
    }

    /// Nothing more is worth writing once the import is known to be rolled back.
    fn writing(&self) -> bool {
        !self.options.dry_run
            && !self.writer_gone
            && (self.options.skip_invalid || self.report.rejected == 0)
    }

    fn reject(&mut self, errors: impl IntoIterator<Item = FieldError>, line: u64) {
        self.report.rejected += 1;
        self.report
            .errors
            .extend(errors.into_iter().map(|e| FieldError {
                row: Some(line),
                ..e
            }));
        if !self.writing() {
            self.batch.clear();
        }
    }

    fn record(&mut self, (line, draft): Record) -> bool {
        self.report.rows += 1;
        let draft: Draft = match draft {
            Ok(d) => d,
            Err(e) => {
                self.report.unnamed_rejected += 1;
                self.reject([e], line);
                return true;
            }
        };
        let source_ref = draft.source_ref.trim().to_owned();
        if source_ref.is_empty() {
            self.report.unnamed_rejected += 1;
            self.reject(
                [FieldError::new(
                    "source_ref",
                    "identifiant source_ref manquant",
                )],
                line,
            );
            return true;
        }
        if self.claimed.contains_key(&source_ref) {
            self.claimed_record(&source_ref, &draft, line);
            return true;
        }
        let first_seen = match self.known.get_mut(&source_ref) {
            Some(k) if k.seen_at > 0 => Some(k.seen_at),
            Some(k) => {
                k.seen_at = line;
                None
            }
            None => match self.seen.entry(source_ref.clone()) {
                std::collections::hash_map::Entry::Occupied(first) => Some(*first.get()),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(line);
                    None
                }
            },
        };
        if let Some(first) = first_seen {
            self.reject([twice(&source_ref, first)], line);
            return true;
        }
        let known = self.known.get(&source_ref);
        // A record as the source gave it last time is unchanged without validating it again
        // (not an upload bound to a territory: that is checked on the validated commune).
        let raw_digest = self
            .options
            .territory
            .is_none()
            .then(|| draft.raw_digest(&self.rules));
        if let (Some(k), Some(raw)) = (known, &raw_digest) {
            if k.published
                && draft.verified_at.trim().is_empty()
                && k.source_digest.as_deref() == Some(raw.as_str())
            {
                let flags = crate::services::quality::from_stored(k.quality.as_deref());
                warn(&mut self.report, &flags, line);
                self.report.unchanged += 1;
                if self.options.confirm_unchanged {
                    self.report.unchanged_ids.push(k.id.clone());
                }
                if self.options.plan {
                    self.report.plan.push(PlannedRow {
                        row: line,
                        source_ref,
                        id: Some(k.id.clone()),
                        write: None,
                    });
                }
                return true;
            }
        }
        let content = self.validator.content(&draft, known.is_some());
        let verified_at = parse_verified_at(&draft.verified_at);
        let (content, verified_at) = match (content, verified_at) {
            (Ok(c), Ok(v)) => (c, v),
            (content, verified_at) => {
                let mut errors = content.err().unwrap_or_default();
                if let Err(m) = verified_at {
                    errors.push(FieldError::new("verified_at", m));
                }
                self.reject(errors, line);
                return true;
            }
        };
        if let Some(territory) = &self.options.territory {
            let inside = self
                .validator
                .locator()
                .commune(&content.insee_code)
                .is_some_and(|c| territory.contains(c));
            if !inside {
                self.reject(
                    [FieldError::new(
                        "insee_code",
                        format!(
                            "la commune {} est hors du territoire de l'organisation",
                            content.insee_code
                        ),
                    )],
                    line,
                );
                return true;
            }
        }
        warn(&mut self.report, &content.quality, line);
        let digest = content.digest();
        if self.options.plan {
            let unchanged =
                known.is_some_and(|k| k.digest == digest && k.published && verified_at.is_none());
            self.report.plan.push(PlannedRow {
                row: line,
                source_ref: source_ref.clone(),
                id: known.map(|k| k.id.clone()),
                write: (!unchanged).then(|| (content.clone(), verified_at)),
            });
        }
        let (id, is_new) = match known {
            Some(k) if k.digest == digest && k.published && verified_at.is_none() => {
                self.report.unchanged += 1;
                if self.options.confirm_unchanged {
                    self.report.unchanged_ids.push(k.id.clone());
                }
                if let Some(raw) = raw_digest.filter(|raw| k.source_digest.as_ref() != Some(raw)) {
                    self.push(Write::SourceDigest(k.id.clone(), raw, draft.valid_siret()));
                }
                return true;
            }
            Some(k) => {
                self.report.updated += 1;
                (k.id.clone(), false)
            }
            None => {
                self.report.created += 1;
                (ServiceId::generate(), true)
            }
        };
        self.push(Write::Upsert(Box::new(Upsert {
            id,
            is_new,
            source_ref,
            digest,
            content,
            verified_at,
            source_digest: raw_digest,
            siret: draft.valid_siret(),
        })));
        true
    }

    /// A record of an entry an organisation claimed: its fields stay the organisation's, and
    /// what the record says differently becomes the entry's suggestions.
    fn claimed_record(&mut self, source_ref: &str, draft: &Draft, line: u64) {
        let Some(claimed) = self.claimed.get_mut(source_ref) else {
            return;
        };
        if claimed.seen_at > 0 {
            let first = claimed.seen_at;
            self.reject([twice(source_ref, first)], line);
            return;
        }
        claimed.seen_at = line;
        self.report.claimed += 1;
        if claimed.dropped {
            self.report.listed_again.push(claimed.id.clone());
        }
        // A record that does not read suggests nothing; the entry is still the source's.
        if let Ok(content) = self.validator.content(draft, true) {
            let mut proposed = claims::proposals(&claimed.content, &content);
            let mut stored = claimed.suggested.clone();
            proposed.sort();
            stored.sort();
            if proposed != stored {
                self.report.suggested += 1;
                self.report
                    .suggestion_changes
                    .push((claimed.id.clone(), proposed));
            }
        }
    }

    /// Hands a write to the writer, in batches, while the import may still commit.
    fn push(&mut self, write: Write) {
        if self.writing() {
            self.batch.push(write);
            if self.batch.len() >= BATCH {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() || !self.writing() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        if self.writes.blocking_send(batch).is_err() {
            self.writer_gone = true;
        }
    }
}

/// An input opened for reading: its first bytes (to detect the format) and a reader from the start.
struct Opened {
    reader: Box<dyn Read + Send>,
    head: Vec<u8>,
    name: String,
    format: Format,
}

const HEAD_LEN: usize = 8192;

fn open(
    input: Input,
    forced: Option<Format>,
    progress: &indicatif::ProgressBar,
) -> Result<Opened, FileError> {
    let unreadable =
        |e: std::io::Error| FileError(FieldError::new("file", format!("lecture impossible : {e}")));
    let (reader, head, name): (Box<dyn Read + Send>, Vec<u8>, String) = match input {
        Input::File(path) => {
            let file = std::fs::File::open(&path).map_err(unreadable)?;
            progress.set_length(file.metadata().map(|m| m.len()).unwrap_or(0));
            let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
            let head = {
                use std::io::BufRead;
                let buf = reader.fill_buf().map_err(unreadable)?;
                buf[..buf.len().min(HEAD_LEN)].to_vec()
            };
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (Box::new(progress.wrap_read(reader)), head, name)
        }
        Input::Bytes { name, bytes } => {
            progress.set_length(bytes.len() as u64);
            let head = bytes[..bytes.len().min(HEAD_LEN)].to_vec();
            (
                Box::new(progress.wrap_read(std::io::Cursor::new(bytes))),
                head,
                name,
            )
        }
    };
    let format = forced.unwrap_or_else(|| formats::detect(&name, &head));
    Ok(Opened {
        reader,
        head,
        name,
        format,
    })
}

/// What a reader found beside the records: what no typology takes (a national source), how
/// rows were matched to earlier entries (the BPE).
#[derive(Default)]
struct ReadSummary {
    unmapped: Option<records::Unmapped>,
    matching: Option<bpe::Matching>,
    services: Option<data_inclusion::ServicesSummary>,
}

/// What an import needs of a source's earlier entries (see [`load_known`]).
struct Loaded {
    known: HashMap<String, Known>,
    previous: bpe::Previous,
    claimed: HashMap<String, claims::Claimed>,
}

/// The entries of the source `source_id` (none for a new source): by key, for the BPE also by
/// place, and those organisations claimed, which the BPE's rows are matched to like the others.
async fn load_known(
    store: &Store,
    source_id: Option<&str>,
    matched_by_place: bool,
) -> crate::error::Result<Loaded> {
    let Some(id) = source_id else {
        return Ok(Loaded {
            known: HashMap::default(),
            previous: bpe::Previous::default(),
            claimed: HashMap::default(),
        });
    };
    let (known, mut previous) = store::known_for_source(store, id, matched_by_place).await?;
    let claimed = claims::claimed_from(store, id).await?;
    if matched_by_place {
        // A row of a claimed entry is matched like any earlier one (by its key, or by type,
        // commune and position), then left to the organisation that signs it.
        for (origin_ref, entry) in &claimed {
            previous.add(
                origin_ref,
                &entry.content.typology,
                entry.content.insee_code.as_str(),
                entry.content.location,
            );
        }
    }
    Ok(Loaded {
        known,
        previous,
        claimed,
    })
}

/// Reads the opened input with the reader its format needs, pushing records to `each`.
fn read_opened(
    opened: Opened,
    reference: &Reference,
    previous: impl FnOnce() -> Result<bpe::Previous, FileError>,
    services: Option<&data_inclusion::Services>,
    recognise: dila::Recognise<'_>,
    each: impl FnMut(Record) -> bool,
) -> Result<ReadSummary, FileError> {
    let Opened {
        reader,
        head,
        format,
        ..
    } = opened;
    let taxonomy = &reference.taxonomy;
    let unmapped = |u| ReadSummary {
        unmapped: Some(u),
        ..ReadSummary::default()
    };
    match format {
        Format::ProjectCsv => {
            formats::read_project_csv(reader, &head, each).map(|()| ReadSummary::default())
        }
        Format::ScdlCsv => {
            formats::read_scdl_csv(reader, &head, each).map(|_| ReadSummary::default())
        }
        Format::GeoJson => formats::read_geojson(reader, each).map(|()| ReadSummary::default()),
        Format::Dila => {
            dila::read(reader, &head, &dila::pivot_map(taxonomy), recognise, each).map(unmapped)
        }
        Format::DataInclusion => {
            data_inclusion::read(reader, &head, taxonomy, services, each).map(|(u, services)| {
                ReadSummary {
                    unmapped: Some(u),
                    services,
                    ..ReadSummary::default()
                }
            })
        }
        Format::Bpe => {
            bpe::read(reader, &head, taxonomy, &reference.locator, previous, each).map(|(u, m)| {
                ReadSummary {
                    unmapped: Some(u),
                    matching: Some(m),
                    ..ReadSummary::default()
                }
            })
        }
    }
}

/// Records handed from the reading thread to the classifying one at a time.
const RECORDS_PER_HANDOVER: usize = 256;

/// Runs `read` (a file's reader, which calls the function it is given with each record) on a
/// thread of its own while `each` takes the records on this one, in the file's order: parsing
/// and validating a file overlap, on two cores instead of one. When `each` answers false, the
/// reader is told to stop.
fn read_beside(
    read: impl FnOnce(&mut dyn FnMut(Record) -> bool) -> Result<ReadSummary, FileError> + Send,
    mut each: impl FnMut(Record) -> bool,
) -> Result<ReadSummary, FileError> {
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<Record>>(16);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut chunk = Vec::with_capacity(RECORDS_PER_HANDOVER);
            let mut taken = true;
            let result = read(&mut |record| {
                chunk.push(record);
                if chunk.len() >= RECORDS_PER_HANDOVER {
                    let full =
                        std::mem::replace(&mut chunk, Vec::with_capacity(RECORDS_PER_HANDOVER));
                    taken = sender.send(full).is_ok();
                }
                taken
            });
            if !chunk.is_empty() {
                let _ = sender.send(chunk);
            }
            result
        });
        'records: for chunk in receiver {
            for record in chunk {
                if !each(record) {
                    break 'records;
                }
            }
        }
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// What an import does to an entry beside writing its rows.
#[derive(Clone, Copy)]
enum Change {
    /// Unpublish an entry the file leaves out.
    Withdraw,
    /// Confirm an entry the file leaves unchanged.
    Confirm,
}

/// Withdraws or confirms an entry, in the import's transaction, recorded in its history as the
/// import's doing; false when there was nothing to do.
async fn change_in_import(
    tx: &mut Tx,
    id: &ServiceId,
    import_id: &str,
    at: DateTime<Utc>,
    change: Change,
) -> crate::error::Result<bool> {
    use crate::services::turn::{set_version, Author};
    use crate::services::Status;
    let Some(current) = store::get_in(tx, id).await? else {
        return Ok(false);
    };
    let (status, verified_at, action) = match change {
        Change::Withdraw => (Status::Withdrawn, current.verified_at, "withdrawn"),
        Change::Confirm => (current.status, Some(at), "confirmed"),
    };
    let author = Author {
        kind: "import",
        id: import_id,
        via: crate::services::history::Via::Import,
    };
    let changed = set_version(
        tx,
        &current,
        &current.content,
        status,
        verified_at,
        &author,
        action,
        at,
    )
    .await?;
    Ok(changed.is_some())
}

/// The national sources a harvest reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum National {
    /// The Annuaire de l'administration (DILA).
    Dila,
    /// data·inclusion structures.
    DataInclusion,
    /// The INSEE Base permanente des équipements.
    Bpe,
}

impl National {
    pub const ALL: [National; 3] = [National::Dila, National::DataInclusion, National::Bpe];

    /// The name its entries are signed with (convention art. 2: the source is named).
    pub fn source(self) -> &'static str {
        match self {
            National::Dila => dila::SOURCE,
            National::DataInclusion => data_inclusion::SOURCE,
            National::Bpe => bpe::SOURCE,
        }
    }

    fn format(self) -> Format {
        match self {
            National::Dila => Format::Dila,
            National::DataInclusion => Format::DataInclusion,
            National::Bpe => Format::Bpe,
        }
    }
}

/// Harvests a national source: the file is the source's whole current state. Entries are
/// created, updated field by field (in their history) or left unchanged; those the source no
/// longer lists are withdrawn (restorable, never deleted); records that cannot be used are left
/// out and reported, and records of types no typology takes are counted. One transaction, like
/// an import.
pub async fn harvest(
    store: &Store,
    reference: &Reference,
    national: National,
    input: Input,
    dry_run: bool,
    progress: bool,
) -> crate::error::Result<ImportReport> {
    harvest_with(store, reference, national, input, None, dry_run, progress).await
}

/// [`harvest`], with the data·inclusion services file beside its structures (`services`):
/// read first, whole (names and contacts only); a file that does not read writes nothing.
pub async fn harvest_with(
    store: &Store,
    reference: &Reference,
    national: National,
    input: Input,
    services: Option<Input>,
    dry_run: bool,
    progress: bool,
) -> crate::error::Result<ImportReport> {
    let services = match services {
        None => None,
        Some(services) => {
            let name = services.name();
            let read = tokio::task::spawn_blocking(move || {
                let opened = open(
                    services,
                    Some(Format::DataInclusion),
                    &indicatif::ProgressBar::hidden(),
                )?;
                data_inclusion::read_services(opened.reader, &opened.head)
            })
            .await
            .map_err(anyhow::Error::from)?;
            match read {
                Ok(found) => Some(Arc::new(found)),
                Err(FileError(error)) => {
                    return Ok(ImportReport {
                        file: name,
                        rejected: 1,
                        errors: vec![FieldError {
                            field: format!("services.{}", error.field),
                            ..error
                        }],
                        ..ImportReport::default()
                    })
                }
            }
        }
    };
    import(
        store,
        reference,
        input,
        ImportOptions {
            source: Some(national.source().to_owned()),
            format: Some(national.format()),
            dry_run,
            skip_invalid: true,
            withdraw_missing: true,
            progress,
            data_inclusion_services: services,
            ..ImportOptions::default()
        },
    )
    .await
}

/// Imports one file (or in-memory text) of entries. The whole import is one transaction: a
/// rejected file, a dry run or a killed process leaves the database as it was.
pub async fn import(
    store: &Store,
    reference: &Reference,
    input: Input,
    options: ImportOptions,
) -> crate::error::Result<ImportReport> {
    let file_name = input.name();
    let began = std::time::Instant::now();
    let progress = if options.progress {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} · {per_sec} · reste {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let opening_progress = progress.clone();
    let forced = options.format;
    let opened = tokio::task::spawn_blocking(move || open(input, forced, &opening_progress))
        .await
        .map_err(anyhow::Error::from)?;
    let opened = match opened {
        Ok(opened) => opened,
        Err(FileError(error)) => {
            return Ok(ImportReport {
                file: file_name,
                rejected: 1,
                errors: vec![error],
                ..ImportReport::default()
            })
        }
    };

    // The source must be known before classifying: SCDL files name it in their rows.
    let source_name = options
        .source
        .clone()
        .or_else(|| {
            (opened.format == Format::ScdlCsv)
                .then(|| {
                    formats::read_scdl_csv(&opened.head[..], &opened.head, |_| false)
                        .ok()
                        .flatten()
                })
                .flatten()
        })
        .unwrap_or_else(|| {
            Path::new(&opened.name)
                .file_stem()
                .map_or_else(|| "import".to_owned(), |s| s.to_string_lossy().into_owned())
        });
    let existing_source: Option<(String,)> = on_engine!(store, |db| sqlx::query_as(
        "SELECT id FROM organisations WHERE name = $1"
    )
    .bind(&source_name)
    .fetch_optional(db)
    .await)?;
    // What earlier imports of the source made is read while the file starts being read (the
    // BPE's rows are parsed and reprojected meanwhile: a third of a re-harvest's time).
    let (loaded_tx, loaded_rx) = std::sync::mpsc::sync_channel::<crate::error::Result<Loaded>>(1);
    {
        let store = store.clone();
        let source_id = existing_source.map(|(id,)| id);
        let matched_by_place = opened.format == Format::Bpe;
        tokio::spawn(async move {
            let clock = std::time::Instant::now();
            let loaded = load_known(&store, source_id.as_deref(), matched_by_place).await;
            tracing::debug!(elapsed = ?clock.elapsed(), "earlier entries of the source loaded");
            let _ = loaded_tx.send(loaded);
        });
    }
    let (writes, mut batches) = tokio::sync::mpsc::channel::<Vec<Write>>(32);
    let rules = format!(
        "{}|{}",
        opened.format.label(),
        if options.strict { "strict" } else { "flags" }
    );
    let reference_taxonomy = reference.taxonomy.clone();
    let reference = reference.clone();
    let classifier_options = options.clone();
    let report = ImportReport {
        file: file_name.clone(),
        format: Some(opened.format),
        source: source_name.clone(),
        ..ImportReport::default()
    };
    let reading = tokio::task::spawn_blocking(move || {
        let validator = Validator::new(&reference.taxonomy, &reference.locator);
        let validator = if classifier_options.strict {
            validator
        } else {
            validator.with_quality_flags()
        };
        let mut classifier = Classifier {
            validator: if opened.format == Format::ScdlCsv {
                validator.with_loose_typologies()
            } else {
                validator
            },
            known: HashMap::default(),
            claimed: HashMap::default(),
            seen: HashMap::default(),
            batch: Vec::with_capacity(BATCH),
            writes,
            writer_gone: false,
            report,
            options: classifier_options,
            rules,
        };
        let services = classifier.options.data_inclusion_services.clone();
        // The source's known and claimed entries, once loaded, until the classifier takes them
        // (the BPE's reader waits for them on its own thread).
        let waiting = std::sync::Mutex::new(None);
        let load_error = std::sync::Mutex::new(None);
        let (waiting_ref, load_error_ref) = (&waiting, &load_error);
        let wait = move || match loaded_rx.recv() {
            Ok(Ok(Loaded {
                known,
                previous,
                claimed,
            })) => {
                *lock(waiting_ref) = Some((known, claimed));
                Ok(previous)
            }
            Ok(Err(error)) => {
                *lock(load_error_ref) = Some(error);
                Err(FileError(FieldError::new(
                    "file",
                    "lecture de la base impossible / database not read",
                )))
            }
            Err(_) => Err(FileError(FieldError::new(
                "file",
                "lecture de la base interrompue / database read cut short",
            ))),
        };
        let result = if opened.format == Format::Bpe {
            read_beside(
                |each| {
                    read_opened(
                        opened,
                        &reference,
                        wait,
                        services.as_deref(),
                        &|_| None,
                        each,
                    )
                },
                |record| {
                    if let Some((known, claimed)) = lock(&waiting).take() {
                        classifier.known = known;
                        classifier.claimed = claimed;
                    }
                    classifier.record(record)
                },
            )
        } else {
            wait().and_then(|_| {
                if let Some((known, claimed)) = lock(&waiting).take() {
                    classifier.known = known;
                    classifier.claimed = claimed;
                }
                let by_digest = classifier.unchanged_by_digest();
                let rules = classifier.rules.clone();
                let recognise = |digest: &str| {
                    let stored = Draft {
                        source_digest: Some(digest.to_owned()),
                        ..Draft::default()
                    }
                    .raw_digest(&rules);
                    by_digest.get(&stored).cloned()
                };
                read_beside(
                    |each| {
                        read_opened(
                            opened,
                            &reference,
                            || Ok(bpe::Previous::default()),
                            services.as_deref(),
                            &recognise,
                            each,
                        )
                    },
                    |record| classifier.record(record),
                )
            })
        };
        // A file whose rows were all of other types never handed the entries over.
        if let Some((known, claimed)) = lock(&waiting).take() {
            classifier.known = known;
            classifier.claimed = claimed;
        }
        if let Some(error) = lock(&load_error).take() {
            return Err(error);
        }
        classifier.flush();
        let unreadable = result.is_err();
        match result {
            Ok(summary) => {
                classifier.report.unmapped = summary.unmapped;
                classifier.report.matching = summary.matching;
                classifier.report.data_inclusion_services = summary.services;
            }
            Err(FileError(error)) => {
                classifier.report.rejected += 1;
                classifier.report.errors.push(error);
            }
        }
        if classifier.options.plan || classifier.options.withdraw_missing {
            let mut missing: Vec<_> = classifier
                .known
                .iter()
                .filter(|(_, k)| k.published && k.seen_at == 0)
                .map(|(source_ref, k)| (source_ref.clone(), k.id.clone()))
                .collect();
            missing.sort_by(|a, b| a.0.cmp(&b.0));
            classifier.report.missing = missing;
            let mut dropped: Vec<ServiceId> = classifier
                .claimed
                .values()
                .filter(|c| c.seen_at == 0 && !c.dropped)
                .map(|c| c.id.clone())
                .collect();
            dropped.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            if classifier.report.unnamed_rejected == 0 {
                classifier.report.claims_dropped = dropped.len() as u64;
            }
            classifier.report.dropped_claims = dropped;
        }
        Ok((classifier.report, unreadable))
    });

    let started_at = Utc::now();
    let import_id = format!("imp-{}", ServiceId::generate());
    let writer_import_id = import_id.clone();
    let collect_ids = options.collect_ids;
    let mut turn = WriteTurn::begin_bulk(store, options.live.as_ref()).await?;
    let runtime = tokio::runtime::Handle::current();
    let writing = tokio::task::spawn_blocking(move || -> crate::error::Result<_> {
        let mut written = Vec::new();
        let organisation =
            runtime.block_on(store::organisation_named(turn.conn(), &source_name))?;
        // Second precision: a third less to write per row than nanoseconds.
        let now = started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match turn.conn().conn() {
            ConnRef::Sqlite(conn) => {
                let handle = runtime.block_on(conn.lock_handle())?;
                let mut bulk = BulkWriter::new(handle, &writer_import_id)?;
                while let Some(batch) = batches.blocking_recv() {
                    for write in &batch {
                        match write {
                            Write::Upsert(row) => {
                                bulk.write(&organisation.id, row, &now)?;
                                if collect_ids {
                                    written.push(row.id.clone());
                                }
                            }
                            Write::SourceDigest(id, digest, siret) => {
                                bulk.set_source_digest(id.as_str(), digest, siret.as_deref())?;
                            }
                        }
                    }
                }
            }
            ConnRef::Postgres(conn) => runtime.block_on(async {
                crate::db::order_log_on(conn).await?;
                let mut bulk = CopyWriter::new(&writer_import_id, &organisation.id, started_at);
                // Not before the first batch: the source's entries are read (on another
                // connection) before any row is classified, and the load may lock them.
                let Some(first) = batches.recv().await else {
                    return bulk.finish(conn).await;
                };
                let mut sink = bulk.open(conn).await?;
                // Each batch is formatted on a blocking thread while the previous one is sent:
                // PostgreSQL takes rows while the next ones are made.
                let mut formatting: Option<tokio::task::JoinHandle<anyhow::Result<_>>> = None;
                let mut next_batch = Some(first);
                while let Some(batch) = match next_batch.take() {
                    Some(batch) => Some(batch),
                    None => batches.recv().await,
                } {
                    if collect_ids {
                        written.extend(batch.iter().filter_map(|write| match write {
                            Write::Upsert(row) => Some(row.id.clone()),
                            Write::SourceDigest(..) => None,
                        }));
                    }
                    let formatter = bulk.formatter();
                    let next = tokio::task::spawn_blocking(move || {
                        let mut lines = crate::services::copy::Lines::default();
                        for write in &batch {
                            match write {
                                Write::Upsert(row) => formatter.upsert(&mut lines, row)?,
                                Write::SourceDigest(id, digest, siret) => formatter.source_digest(
                                    &mut lines,
                                    id.as_str(),
                                    digest,
                                    siret.as_deref(),
                                ),
                            }
                        }
                        anyhow::Ok(lines)
                    });
                    if let Some(previous) = formatting.replace(next) {
                        sink.send(&mut bulk, previous.await??).await?;
                    }
                }
                if let Some(previous) = formatting {
                    sink.send(&mut bulk, previous.await??).await?;
                }
                sink.close().await?;
                bulk.finish(conn).await
            })?,
        }
        Ok((turn, organisation, written))
    });
    let (mut report, unreadable) = reading.await.map_err(anyhow::Error::from)??;
    progress.finish_and_clear();
    let clock = std::time::Instant::now();
    // A failed write dropped the connection, which rolls the transaction back.
    let (mut turn, organisation, written) = writing.await.map_err(anyhow::Error::from)??;
    // A file that cannot be read to its end is never half-imported, even with --skip-invalid.
    let commit = !unreadable && !options.dry_run && (options.skip_invalid || report.rejected == 0);
    if !commit {
        turn.rollback().await?;
        return Ok(report);
    }
    let mut written = written;
    if options.withdraw_missing && report.unnamed_rejected == 0 {
        for (_, id) in &report.missing {
            change_in_import(turn.conn(), id, &import_id, started_at, Change::Withdraw).await?;
            if collect_ids {
                written.push(id.clone());
            }
        }
        report.withdrawn = report.missing.len() as u64;
        for id in &report.dropped_claims {
            claims::set_dropped(
                turn.conn(),
                id,
                &organisation.name,
                true,
                &import_id,
                started_at,
            )
            .await?;
            if collect_ids {
                written.push(id.clone());
            }
        }
    }
    for id in &report.listed_again {
        claims::set_dropped(
            turn.conn(),
            id,
            &organisation.name,
            false,
            &import_id,
            started_at,
        )
        .await?;
        if collect_ids {
            written.push(id.clone());
        }
    }
    for (id, proposed) in &report.suggestion_changes {
        claims::set_suggestions(turn.conn(), id, proposed, started_at).await?;
    }
    if options.confirm_unchanged {
        for id in &report.unchanged_ids {
            if change_in_import(turn.conn(), id, &import_id, started_at, Change::Confirm).await? {
                report.confirmed += 1;
                if collect_ids {
                    written.push(id.clone());
                }
            }
        }
    }
    in_tx!(turn.conn(), |conn| sqlx::query(
        "INSERT INTO imports (id, source_id, file_name, format, started_at, finished_at,
         created_count, updated_count, unchanged_count, rejected_count, started_by, flagged_count)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&import_id)
    .bind(&organisation.id)
    .bind(&file_name)
    .bind(report.format.map_or("unknown", Format::label))
    .bind(started_at)
    .bind(Utc::now())
    .bind(report.created as i64)
    .bind(report.updated as i64)
    .bind(report.unchanged as i64)
    .bind(report.rejected as i64)
    .bind(&options.started_by)
    .bind(report.flagged as i64)
    .execute(conn)
    .await
    .map(|r| r.rows_affected()))?;
    tracing::debug!(elapsed = ?clock.elapsed(), "rows written");
    turn.commit().await?;
    tracing::debug!(elapsed = ?clock.elapsed(), "committed");
    report.committed = true;
    report.written = written;
    if report.created + report.updated + report.withdrawn > 0 {
        // The same service may now come from two sources (or no longer).
        let pass =
            crate::services::duplicates::refresh(store, &reference_taxonomy, options.live.as_ref())
                .await?;
        report.duplicates = Some(pass);
    }
    crate::metrics::record_import(&report, began.elapsed().as_secs_f64());
    Ok(report)
}
