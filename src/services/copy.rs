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
use super::{Phone, ServiceId, Status};

/// The columns an import writes, in the order of every `COPY` of entries.
const COLUMNS: &str = "id, typology_code, name, description, street, postcode, city, insee_code,
    lon, lat, phones, email, website, opening_hours, closures, wheelchair, wheelchair_note,
    verified_at, content_hash, source_id, source_ref, status, created_at, updated_at, quality,
    source_digest, siret";

/// Rows held before they are sent: about 20 MB of text.
const BATCH_ROWS: usize = 20_000;

/// Writes entries of one source within the transaction open on the caller's connection.
pub struct CopyWriter {
    import_id: String,
    /// The change log's stamp of every row of this import: when it started.
    stamp: String,
    new_rows: String,
    updated_rows: String,
    /// The ids of `updated_rows`, whose previous versions the history needs.
    updated_ids: Vec<String>,
    /// The updated rows themselves, for their history once the previous versions are read.
    updates: Vec<(Upsert, String)>,
    history: String,
    log: String,
    digests: String,
    pending: usize,
    temporary_tables: bool,
    /// The foreign keys and indexes dropped for a load into an empty directory.
    dropped: Option<Dropped>,
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

impl CopyWriter {
    pub fn new(import_id: &str) -> Self {
        Self {
            import_id: import_id.to_owned(),
            stamp: super::store::log_stamp(chrono::Utc::now()),
            new_rows: String::new(),
            updated_rows: String::new(),
            updated_ids: Vec::new(),
            updates: Vec::new(),
            history: String::new(),
            log: String::new(),
            digests: String::new(),
            pending: 0,
            temporary_tables: false,
            dropped: None,
        }
    }

    /// Creates (`row.is_new`) or updates one entry of `source_id`, stamped `now` (RFC 3339),
    /// with its history and change-log rows; sent with the batch.
    pub async fn write(
        &mut self,
        conn: &mut PgConnection,
        source_id: &str,
        row: &Upsert,
        now: &str,
    ) -> anyhow::Result<()> {
        let c = &row.content;
        let phones = serde_json::to_string(&c.phones.iter().map(Phone::e164).collect::<Vec<_>>())?;
        let closures = serde_json::to_string(&c.closures)?;
        let verified_at = row
            .verified_at
            .map(|v| v.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let quality = super::quality::to_stored(&c.quality);
        let (lon, lat) = (c.location.lon.to_string(), c.location.lat.to_string());
        let target = if row.is_new {
            &mut self.new_rows
        } else {
            &mut self.updated_rows
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
                Some(source_id),
                Some(&row.source_ref),
                Some("published"),
                Some(now),
                Some(now),
                quality.as_deref(),
                row.source_digest.as_deref(),
                row.siret.as_deref(),
            ],
        );
        if row.is_new {
            self.record(row, now, None)?;
        } else {
            self.updated_ids.push(row.id.as_str().to_owned());
            self.updates.push((row.clone(), now.to_owned()));
        }
        let kind = if row.is_new { "created" } else { "changed" };
        line(
            &mut self.log,
            &[Some(row.id.as_str()), Some(kind), Some(&self.stamp)],
        );
        self.pending += 1;
        if self.pending >= BATCH_ROWS {
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

    /// Records the source digest of an entry whose record is unchanged (no history, no change
    /// log: nothing a reader sees changes).
    pub async fn set_source_digest(
        &mut self,
        conn: &mut PgConnection,
        id: &str,
        digest: &str,
        siret: Option<&str>,
    ) -> anyhow::Result<()> {
        line(&mut self.digests, &[Some(id), Some(digest), siret]);
        self.pending += 1;
        if self.pending >= BATCH_ROWS {
            self.flush(conn).await?;
        }
        Ok(())
    }

    /// The history row of `row`, written at `now`, whose previous version is `previous`.
    fn record(
        &mut self,
        row: &Upsert,
        now: &str,
        previous: Option<&Version>,
    ) -> anyhow::Result<()> {
        let history_id = ServiceId::generate();
        let (action, changed, previous_json) = super::bulk::import_history(row, previous)?;
        line(
            &mut self.history,
            &[
                Some(row.id.as_str()),
                Some(history_id.as_str()),
                Some(now),
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

    /// Sends what was gathered.
    pub async fn flush(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        self.pending = 0;
        if !self.new_rows.is_empty() {
            copy(
                conn,
                &format!("COPY services ({COLUMNS}) FROM STDIN"),
                &mut self.new_rows,
            )
            .await?;
        }
        if !self.updated_rows.is_empty() {
            self.write_updates(conn).await?;
        }
        if !self.digests.is_empty() {
            self.temporary_tables(conn).await?;
            copy(conn, "COPY import_digests FROM STDIN", &mut self.digests).await?;
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
        if !self.history.is_empty() {
            copy(
                conn,
                "COPY service_history (service_id, id, at, actor_kind, actor_id, via, action,
                 changes, previous) FROM STDIN",
                &mut self.history,
            )
            .await?;
        }
        if !self.log.is_empty() {
            copy(
                conn,
                "COPY change_log (entry_id, kind, at) FROM STDIN",
                &mut self.log,
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
        .bind(&self.updated_ids)
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
        let updates = std::mem::take(&mut self.updates);
        for (row, now) in &updates {
            let before = previous.get(row.id.as_str()).ok_or_else(|| {
                anyhow::anyhow!(
                    "écriture de « {} » : la fiche a changé pendant l'import",
                    row.source_ref
                )
            })?;
            self.record(row, now, Some(before))?;
        }
        let expected = self.updated_ids.len() as u64;
        self.updated_ids.clear();
        copy(
            conn,
            &format!("COPY import_rows ({COLUMNS}) FROM STDIN"),
            &mut self.updated_rows,
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
