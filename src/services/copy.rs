//! Bulk writes of entries on PostgreSQL (imports): rows gathered in batches and sent with
//! `COPY … FROM STDIN`, what [`super::bulk::BulkWriter`] does on SQLite one row at a time.
//!
//! New entries go straight into `services`, with their history and change-log rows. Updated
//! ones go through a temporary table, from which one `UPDATE … FROM` per batch writes them
//! (after their previous versions are read, for the history).

use sqlx::postgres::PgConnection;
use sqlx::Row as _;

use super::history::Version;
use super::store::Upsert;
use super::{ServiceId, Status};

/// The columns an import writes, in the order of every `COPY` of entries.
const COLUMNS: &str = "id, typology_code, name, description, street, postcode, city, insee_code,
    lon, lat, phones, email, website, opening_hours, closures, wheelchair, wheelchair_note,
    verified_at, content_hash, source_id, source_ref, status, created_at, updated_at, quality,
    source_digest, siret";

/// Rows held before they are sent: about 5 MB of text.
const BATCH_ROWS: usize = 5_000;

/// Writes entries of one source within the transaction open on the caller's connection.
pub struct CopyWriter {
    formatter: Formatter,
    /// What was formatted and not sent yet.
    lines: Lines,
    temporary_tables: bool,
    /// The foreign keys and indexes dropped for a load into an empty directory.
    dropped: Option<Dropped>,
}

/// Turns the rows of an import into `COPY` text: pure, so that it runs on another thread while
/// PostgreSQL takes the previous lines.
#[derive(Debug, Clone)]
pub struct Formatter {
    import_id: String,
    /// The change log's stamp of every row of this import: when it started.
    stamp: String,
    source_id: String,
    /// When the import wrote its rows (RFC 3339).
    now: String,
}

/// Rows of an import as `COPY` text, waiting to be sent.
#[derive(Debug, Default)]
pub struct Lines {
    new_rows: String,
    updated_rows: String,
    /// The ids of `updated_rows`, whose previous versions the history needs.
    updated_ids: Vec<String>,
    /// The updated rows themselves, for their history once the previous versions are read.
    updates: Vec<Upsert>,
    history: String,
    log: String,
    digests: String,
    rows: usize,
}

impl Lines {
    /// Appends `other`, emptied.
    fn append(&mut self, other: &mut Lines) {
        for (to, from) in [
            (&mut self.new_rows, &mut other.new_rows),
            (&mut self.updated_rows, &mut other.updated_rows),
            (&mut self.history, &mut other.history),
            (&mut self.log, &mut other.log),
            (&mut self.digests, &mut other.digests),
        ] {
            if to.is_empty() {
                std::mem::swap(to, from);
            } else {
                to.push_str(from);
                from.clear();
            }
        }
        self.updated_ids.append(&mut other.updated_ids);
        self.updates.append(&mut other.updates);
        self.rows += std::mem::take(&mut other.rows);
    }
}

/// What a load into an empty directory dropped, to make again: (name, definition) each.
struct Dropped {
    foreign_keys: Vec<(String, String)>,
    indexes: Vec<(String, String)>,
}

/// Appends `value` to a `COPY` text line: `\N` for none, else the text with the format's
/// escapes.
fn field(line: &mut String, value: Option<&str>) {
    match value {
        None => line.push_str("\\N"),
        Some(text) => {
            for c in text.chars() {
                match c {
                    '\\' => line.push_str("\\\\"),
                    '\n' => line.push_str("\\n"),
                    '\r' => line.push_str("\\r"),
                    '\t' => line.push_str("\\t"),
                    c => line.push(c),
                }
            }
        }
    }
}

/// Appends the fields of a `COPY` text line, tab-separated, ended by a newline.
fn line(buffer: &mut String, fields: &[Option<&str>]) {
    for (i, value) in fields.iter().enumerate() {
        if i > 0 {
            buffer.push('\t');
        }
        field(buffer, *value);
    }
    buffer.push('\n');
}

impl Formatter {
    /// Creates (`row.is_new`) or updates one entry, with its history and change-log rows.
    pub fn upsert(&self, lines: &mut Lines, row: &Upsert) -> anyhow::Result<()> {
        let c = &row.content;
        let super::bulk::StoredTexts {
            phones,
            closures,
            verified_at,
            quality,
        } = super::bulk::StoredTexts::of(row)?;
        let (lon, lat) = (c.location.lon.to_string(), c.location.lat.to_string());
        let target = if row.is_new {
            &mut lines.new_rows
        } else {
            &mut lines.updated_rows
        };
        line(
            target,
            &[
                Some(row.id.as_str()),
                Some(&c.typology),
                Some(&c.name),
                c.description.as_deref(),
                c.street.as_deref(),
                c.postcode.as_deref(),
                c.city.as_deref(),
                Some(c.insee_code.as_str()),
                Some(&lon),
                Some(&lat),
                Some(&phones),
                c.email.as_deref(),
                c.website.as_deref(),
                c.opening_hours.as_deref(),
                Some(&closures),
                Some(c.wheelchair.as_str()),
                c.wheelchair_note.as_deref(),
                verified_at.as_deref(),
                Some(&row.digest),
                Some(&self.source_id),
                Some(&row.source_ref),
                Some("published"),
                Some(&self.now),
                Some(&self.now),
                quality.as_deref(),
                row.source_digest.as_deref(),
                row.siret.as_deref(),
            ],
        );
        if row.is_new {
            self.record(lines, row, None)?;
        } else {
            lines.updated_ids.push(row.id.as_str().to_owned());
            lines.updates.push(row.clone());
        }
        let kind = if row.is_new { "created" } else { "changed" };
        line(
            &mut lines.log,
            &[Some(row.id.as_str()), Some(kind), Some(&self.stamp)],
        );
        lines.rows += 1;
        Ok(())
    }

    /// Records the source digest of an entry whose record is unchanged (no history, no change
    /// log: nothing a reader sees changes).
    pub fn source_digest(&self, lines: &mut Lines, id: &str, digest: &str, siret: Option<&str>) {
        line(&mut lines.digests, &[Some(id), Some(digest), siret]);
        lines.rows += 1;
    }

    /// The history row of `row`, whose previous version is `previous`.
    fn record(
        &self,
        lines: &mut Lines,
        row: &Upsert,
        previous: Option<&Version>,
    ) -> anyhow::Result<()> {
        let history_id = ServiceId::generate();
        let (action, changed, previous_json) = super::bulk::import_history(row, previous)?;
        line(
            &mut lines.history,
            &[
                Some(row.id.as_str()),
                Some(history_id.as_str()),
                Some(&self.now),
                Some("import"),
                Some(&self.import_id),
                Some("import"),
                Some(action),
                changed.as_deref(),
                previous_json.as_deref(),
            ],
        );
        Ok(())
    }
}

impl CopyWriter {
    /// A writer of the import `import_id` of the source `source_id`, its rows stamped `now`
    /// (RFC 3339).
    pub fn new(import_id: &str, source_id: &str, now: &str) -> Self {
        Self {
            formatter: Formatter {
                import_id: import_id.to_owned(),
                stamp: super::store::log_stamp(chrono::Utc::now()),
                source_id: source_id.to_owned(),
                now: now.to_owned(),
            },
            lines: Lines::default(),
            temporary_tables: false,
            dropped: None,
        }
    }

    /// What formats this import's rows, to run elsewhere.
    pub fn formatter(&self) -> Formatter {
        self.formatter.clone()
    }

    /// Takes formatted `lines`, and sends what was gathered once it is a batch.
    pub async fn send(&mut self, conn: &mut PgConnection, mut lines: Lines) -> anyhow::Result<()> {
        self.lines.append(&mut lines);
        if self.lines.rows >= BATCH_ROWS {
            self.flush(conn).await?;
        }
        Ok(())
    }

    /// Readies the load: into an empty directory (a first national harvest), the foreign keys
    /// and secondary indexes of `services` are dropped for the load and made again by
    /// [`CopyWriter::finish`], in the same transaction: one validation pass and one sorted index
    /// build instead of three lookups and two index insertions per row, a third of the load's
    /// time. The table is then locked until the commit (nothing to read in it yet); when another
    /// transaction is reading it at that moment, the load goes the plain way instead.
    pub async fn begin(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        let (empty,): (bool,) = sqlx::query_as("SELECT NOT EXISTS (SELECT 1 FROM services)")
            .fetch_one(&mut *conn)
            .await?;
        if !empty {
            return Ok(());
        }
        // Only if nobody reads the table now: otherwise the plain load, rather than a wait.
        sqlx::query("SAVEPOINT fast_load")
            .execute(&mut *conn)
            .await?;
        let locked = sqlx::query("LOCK TABLE services IN ACCESS EXCLUSIVE MODE NOWAIT")
            .execute(&mut *conn)
            .await;
        if locked.is_err() {
            sqlx::query("ROLLBACK TO SAVEPOINT fast_load")
                .execute(&mut *conn)
                .await?;
            return Ok(());
        }
        sqlx::query("RELEASE SAVEPOINT fast_load")
            .execute(&mut *conn)
            .await?;
        let foreign_keys: Vec<(String, String)> = sqlx::query_as(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
             WHERE conrelid = 'services'::regclass AND contype = 'f'",
        )
        .fetch_all(&mut *conn)
        .await?;
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = 'services'
             AND indexname NOT IN (SELECT conname FROM pg_constraint
                                   WHERE conrelid = 'services'::regclass)",
        )
        .fetch_all(&mut *conn)
        .await?;
        for (name, _) in &foreign_keys {
            sqlx::query(&format!("ALTER TABLE services DROP CONSTRAINT \"{name}\""))
                .execute(&mut *conn)
                .await?;
        }
        for (name, _) in &indexes {
            sqlx::query(&format!("DROP INDEX \"{name}\""))
                .execute(&mut *conn)
                .await?;
        }
        self.dropped = Some(Dropped {
            foreign_keys,
            indexes,
        });
        Ok(())
    }

    /// Sends what is left, and makes again what [`CopyWriter::begin`] dropped.
    pub async fn finish(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        self.flush(conn).await?;
        if let Some(Dropped {
            foreign_keys,
            indexes,
        }) = self.dropped.take()
        {
            for (_, definition) in &indexes {
                sqlx::query(definition).execute(&mut *conn).await?;
            }
            for (name, definition) in &foreign_keys {
                sqlx::query(&format!(
                    "ALTER TABLE services ADD CONSTRAINT \"{name}\" {definition}"
                ))
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }

    /// Sends what was gathered.
    pub async fn flush(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        if self.lines.rows == 0 {
            return Ok(());
        }
        self.lines.rows = 0;
        if !self.lines.new_rows.is_empty() {
            copy(
                conn,
                &format!("COPY services ({COLUMNS}) FROM STDIN"),
                &mut self.lines.new_rows,
            )
            .await?;
        }
        if !self.lines.updated_rows.is_empty() {
            self.write_updates(conn).await?;
        }
        if !self.lines.digests.is_empty() {
            self.temporary_tables(conn).await?;
            copy(
                conn,
                "COPY import_digests FROM STDIN",
                &mut self.lines.digests,
            )
            .await?;
            sqlx::query(
                "UPDATE services s SET source_digest = d.source_digest, siret = d.siret
                 FROM import_digests d WHERE s.id = d.id",
            )
            .execute(&mut *conn)
            .await?;
            sqlx::query("TRUNCATE import_digests")
                .execute(&mut *conn)
                .await?;
        }
        if !self.lines.history.is_empty() {
            copy(
                conn,
                "COPY service_history (service_id, id, at, actor_kind, actor_id, via, action,
                 changes, previous) FROM STDIN",
                &mut self.lines.history,
            )
            .await?;
        }
        if !self.lines.log.is_empty() {
            copy(
                conn,
                "COPY change_log (entry_id, kind, at) FROM STDIN",
                &mut self.lines.log,
            )
            .await?;
        }
        Ok(())
    }

    /// The temporary tables updates go through, made once per import and dropped at its end.
    async fn temporary_tables(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        if !self.temporary_tables {
            sqlx::query(&format!(
                "CREATE TEMPORARY TABLE import_rows ON COMMIT DROP AS
                 SELECT {COLUMNS} FROM services WITH NO DATA"
            ))
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "CREATE TEMPORARY TABLE import_digests ON COMMIT DROP AS
                 SELECT id, source_digest, siret FROM services WITH NO DATA",
            )
            .execute(&mut *conn)
            .await?;
            self.temporary_tables = true;
        }
        Ok(())
    }

    /// Reads the previous versions of the updated entries (for their history), then writes
    /// them in one statement.
    async fn write_updates(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        self.temporary_tables(conn).await?;
        let rows = sqlx::query(
            "SELECT id, typology_code, name, description, street, postcode, city, insee_code,
             lon, lat, phones, email, website, opening_hours, closures, wheelchair,
             wheelchair_note, status, verified_at, quality FROM services WHERE id = ANY($1)",
        )
        .bind(&self.lines.updated_ids)
        .fetch_all(&mut *conn)
        .await?;
        let mut previous = rustc_hash::FxHashMap::default();
        for row in &rows {
            let status: String = row.try_get(17)?;
            let version = Version {
                typology: row.try_get(1)?,
                name: row.try_get(2)?,
                description: row.try_get(3)?,
                street: row.try_get(4)?,
                postcode: row.try_get(5)?,
                city: row.try_get(6)?,
                insee_code: row.try_get(7)?,
                lon: row.try_get(8)?,
                lat: row.try_get(9)?,
                phones: serde_json::from_str(row.try_get(10)?)?,
                email: row.try_get(11)?,
                website: row.try_get(12)?,
                opening_hours: row.try_get(13)?,
                closures: serde_json::from_str(row.try_get(14)?)?,
                wheelchair: row.try_get(15)?,
                wheelchair_note: row.try_get(16)?,
                status: Status::parse(&status).unwrap_or(Status::Published),
                verified_at: row.try_get(18)?,
                quality: super::quality::from_stored(row.try_get(19)?),
            };
            previous.insert(row.try_get::<String, _>(0)?, version);
        }
        let updates = std::mem::take(&mut self.lines.updates);
        for row in &updates {
            let before = previous.get(row.id.as_str()).ok_or_else(|| {
                anyhow::anyhow!(
                    "écriture de « {} » : la fiche a changé pendant l'import",
                    row.source_ref
                )
            })?;
            self.formatter.record(&mut self.lines, row, Some(before))?;
        }
        let expected = self.lines.updated_ids.len() as u64;
        self.lines.updated_ids.clear();
        copy(
            conn,
            &format!("COPY import_rows ({COLUMNS}) FROM STDIN"),
            &mut self.lines.updated_rows,
        )
        .await?;
        let updated = sqlx::query(
            "UPDATE services s SET typology_code = u.typology_code, name = u.name,
             description = u.description, street = u.street, postcode = u.postcode,
             city = u.city, insee_code = u.insee_code, lon = u.lon, lat = u.lat,
             phones = u.phones, email = u.email, website = u.website,
             opening_hours = u.opening_hours, closures = u.closures, wheelchair = u.wheelchair,
             wheelchair_note = u.wheelchair_note,
             verified_at = COALESCE(u.verified_at, s.verified_at), content_hash = u.content_hash,
             status = CASE WHEN s.status = 'duplicate' THEN 'duplicate' ELSE 'published' END,
             updated_at = u.updated_at, quality = u.quality, source_digest = u.source_digest,
             siret = u.siret
             FROM import_rows u
             WHERE s.id = u.id AND s.source_id = u.source_id AND s.source_ref = u.source_ref",
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        sqlx::query("TRUNCATE import_rows")
            .execute(&mut *conn)
            .await?;
        if updated != expected {
            anyhow::bail!("écriture des fiches : une fiche a changé pendant l'import");
        }
        Ok(())
    }
}

/// Runs `statement` (a `COPY … FROM STDIN`) with `data` (text format), which it empties.
async fn copy(conn: &mut PgConnection, statement: &str, data: &mut String) -> anyhow::Result<()> {
    let mut copy = conn.copy_in_raw(statement).await?;
    if let Err(error) = copy.send(data.as_bytes()).await {
        let _ = copy.abort("envoi interrompu").await;
        return Err(error.into());
    }
    copy.finish().await?;
    data.clear();
    Ok(())
}
