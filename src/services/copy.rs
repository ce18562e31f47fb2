//! Bulk writes of entries on PostgreSQL (imports): rows gathered in batches and sent with
//! `COPY … FROM STDIN`, what [`super::bulk::BulkWriter`] does on SQLite one row at a time.
//!
//! New entries go straight into `services` (binary `COPY`), with their history and change-log
//! rows. Updated ones go through a temporary table, from which one `UPDATE … FROM` per batch
//! writes them (after their previous versions are read, for the history). A first load into an
//! empty directory streams every row through one `COPY` into the table emptied of its indexes,
//! and writes the history and change log from the loaded table ([`Sink::Fresh`]).

use chrono::{DateTime, SubsecRound as _, Utc};
use sqlx::postgres::{PgArgumentBuffer, PgConnection, PgCopyIn, Postgres};
use sqlx::{Encode, Row as _};

use super::history::Version;
use super::store::Upsert;
use super::{ServiceId, Status};

/// The columns an import writes, in the order of every `COPY` of entries.
const COLUMNS: &str = "id, typology_code, name, description, street, postcode, city, insee_code,
    lon, lat, phones, email, website, opening_hours, closures, wheelchair, wheelchair_note,
    verified_at, content_hash, source_id, source_ref, status, created_at, updated_at, quality,
    source_digest, siret";

/// Rows held before they are sent: about 5 MB.
const BATCH_ROWS: usize = 5_000;

/// What opens a binary `COPY`: its signature, no flags, no header extension.
const BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// What ends a binary `COPY`: a row of -1 fields.
const BINARY_TRAILER: [u8; 2] = (-1i16).to_be_bytes();

/// Rows in PostgreSQL's binary `COPY` format, each value written by sqlx's own encoder of its
/// type (the same bytes as a bound parameter): PostgreSQL parses no text, a third of its time in
/// a load.
#[derive(Debug, Default)]
struct BinaryRows {
    buffer: PgArgumentBuffer,
}

impl BinaryRows {
    /// Starts a row of `fields` values.
    fn row(&mut self, fields: i16) {
        self.buffer.extend_from_slice(&fields.to_be_bytes());
    }

    /// Appends one value of the current row: its length (-1 for NULL), then its bytes.
    fn value<'q, T: Encode<'q, Postgres>>(&mut self, value: &T) -> anyhow::Result<()> {
        let at = self.buffer.len();
        self.buffer.extend_from_slice(&[0; 4]);
        let null = value
            .encode_by_ref(&mut self.buffer)
            .map_err(|error| anyhow::anyhow!(error))?
            .is_null();
        let length = if null {
            -1
        } else {
            i32::try_from(self.buffer.len() - at - 4)?
        };
        self.buffer[at..at + 4].copy_from_slice(&length.to_be_bytes());
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// The rows as a whole `COPY` stream, header and trailer included; emptied.
    fn take_stream(&mut self) -> Vec<u8> {
        let mut stream = Vec::with_capacity(BINARY_HEADER.len() + self.buffer.len() + 2);
        stream.extend_from_slice(BINARY_HEADER);
        stream.extend_from_slice(&self.buffer);
        stream.extend_from_slice(&BINARY_TRAILER);
        self.buffer.clear();
        stream
    }
}

/// Writes entries of one source within the transaction open on the caller's connection.
pub struct CopyWriter {
    formatter: Formatter,
    /// What was formatted and not sent yet.
    lines: Lines,
    temporary_tables: bool,
    /// The keys and indexes dropped for a load into an empty directory.
    dropped: Option<Dropped>,
}

/// Turns the rows of an import into `COPY` rows (binary for new entries, text for the rest):
/// pure, so that it runs on another thread while PostgreSQL takes the previous ones.
#[derive(Debug, Clone)]
pub struct Formatter {
    import_id: String,
    /// The change log's stamp of every row of this import: when it started.
    stamp: DateTime<Utc>,
    /// `stamp` as the change log's text.
    stamp_text: String,
    source_id: String,
    /// When the import wrote its rows, to the second.
    now: DateTime<Utc>,
    /// `now` as RFC 3339 text.
    now_text: String,
    /// A load into an empty directory: only the entries' rows are made here, their history and
    /// change log come from the loaded table.
    fresh: bool,
}

/// Rows of an import in `COPY` formats, waiting to be sent.
#[derive(Debug, Default)]
pub struct Lines {
    new_rows: BinaryRows,
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
        if self.new_rows.is_empty() {
            std::mem::swap(&mut self.new_rows, &mut other.new_rows);
        } else {
            self.new_rows
                .buffer
                .extend_from_slice(&other.new_rows.buffer);
            other.new_rows.buffer.clear();
        }
        for (to, from) in [
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

/// What a load into an empty directory dropped, to make again in this order: the table's
/// constraints and indexes, then the foreign keys of the tables that reference it.
struct Dropped {
    /// `(name, definition)` of the primary key, unique and foreign-key constraints of `services`.
    constraints: Vec<(String, String)>,
    /// `CREATE INDEX` statements of the other indexes of `services`.
    indexes: Vec<String>,
    /// `(table, name, definition)` of the foreign keys that reference `services`.
    references: Vec<(String, String, String)>,
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
        lines.rows += 1;
        if row.is_new {
            self.new_row(&mut lines.new_rows, row)?;
            if !self.fresh {
                self.record(lines, row, None)?;
                self.log(lines, row, "created");
            }
            return Ok(());
        }
        let c = &row.content;
        let super::bulk::StoredTexts {
            phones,
            closures,
            verified_at,
            quality,
        } = super::bulk::StoredTexts::of(row)?;
        let (lon, lat) = (c.location.lon.to_string(), c.location.lat.to_string());
        line(
            &mut lines.updated_rows,
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
                Some(&self.now_text),
                Some(&self.now_text),
                quality.as_deref(),
                row.source_digest.as_deref(),
                row.siret.as_deref(),
            ],
        );
        lines.updated_ids.push(row.id.as_str().to_owned());
        lines.updates.push(row.clone());
        self.log(lines, row, "changed");
        Ok(())
    }

    /// The row of a new entry, in the order of [`COLUMNS`], with what both engines store.
    fn new_row(&self, rows: &mut BinaryRows, row: &Upsert) -> anyhow::Result<()> {
        let c = &row.content;
        let super::bulk::StoredTexts {
            phones,
            closures,
            quality,
            ..
        } = super::bulk::StoredTexts::of(row)?;
        rows.row(27);
        rows.value(&row.id.as_str())?;
        rows.value(&c.typology)?;
        rows.value(&c.name)?;
        rows.value(&c.description)?;
        rows.value(&c.street)?;
        rows.value(&c.postcode)?;
        rows.value(&c.city)?;
        rows.value(&c.insee_code.as_str())?;
        rows.value(&c.location.lon)?;
        rows.value(&c.location.lat)?;
        rows.value(&phones)?;
        rows.value(&c.email)?;
        rows.value(&c.website)?;
        rows.value(&c.opening_hours)?;
        rows.value(&closures)?;
        rows.value(&c.wheelchair.as_str())?;
        rows.value(&c.wheelchair_note)?;
        // Stored to the second, as the text of the other writers.
        rows.value(&row.verified_at.map(|at| at.trunc_subsecs(0)))?;
        rows.value(&row.digest)?;
        rows.value(&self.source_id)?;
        rows.value(&row.source_ref)?;
        rows.value(&"published")?;
        rows.value(&self.now)?;
        rows.value(&self.now)?;
        rows.value(&quality)?;
        rows.value(&row.source_digest)?;
        rows.value(&row.siret)
    }

    /// The change-log row of `row`.
    fn log(&self, lines: &mut Lines, row: &Upsert, kind: &str) {
        line(
            &mut lines.log,
            &[Some(row.id.as_str()), Some(kind), Some(&self.stamp_text)],
        );
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
                Some(&self.now_text),
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

/// Where the formatted rows of an import go.
pub enum Sink<'c> {
    /// One `COPY` of every new entry into the emptied table, open until [`Sink::close`].
    Fresh(PgCopyIn<&'c mut PgConnection>),
    /// Batches of statements on the connection.
    Batches(&'c mut PgConnection),
}

impl Sink<'_> {
    /// Takes formatted `lines`.
    pub async fn send(&mut self, writer: &mut CopyWriter, mut lines: Lines) -> anyhow::Result<()> {
        match self {
            Sink::Fresh(copy) => {
                // The directory was empty when the load began, and is locked since.
                anyhow::ensure!(
                    lines.updated_rows.is_empty() && lines.digests.is_empty(),
                    "écriture des fiches : une fiche a été créée pendant l'import"
                );
                copy.send(&lines.new_rows.buffer[..]).await?;
            }
            Sink::Batches(conn) => {
                writer.lines.append(&mut lines);
                if writer.lines.rows >= BATCH_ROWS {
                    writer.flush(conn).await?;
                }
            }
        }
        Ok(())
    }

    /// Ends the `COPY` of a fresh load (the caller then calls [`CopyWriter::finish`]).
    pub async fn close(self) -> anyhow::Result<()> {
        if let Sink::Fresh(mut copy) = self {
            copy.send(&BINARY_TRAILER[..]).await?;
            copy.finish().await?;
        }
        Ok(())
    }
}

impl CopyWriter {
    /// A writer of the import `import_id` of the source `source_id`, its rows stamped `now`.
    pub fn new(import_id: &str, source_id: &str, now: DateTime<Utc>) -> Self {
        let stamp = Utc::now();
        let now = now.trunc_subsecs(0);
        Self {
            formatter: Formatter {
                import_id: import_id.to_owned(),
                stamp,
                stamp_text: super::store::log_stamp(stamp),
                source_id: source_id.to_owned(),
                now,
                now_text: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                fresh: false,
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

    /// Readies the load, and says where its rows go.
    ///
    /// Into an empty directory (a first national harvest), `services` is emptied of its
    /// constraints and indexes, and of the foreign keys that reference it (their tables are empty
    /// too), then truncated: every row goes through one binary `COPY … FREEZE`, the indexes are
    /// built once sorted and the keys checked once by [`CopyWriter::finish`], in the same
    /// transaction: a third less time; and rows written frozen are not written again by their
    /// first readers. The tables stay locked until the commit (nothing to read in them yet);
    /// when another transaction uses one at that moment, the load goes the plain way instead.
    pub async fn open<'c>(&mut self, conn: &'c mut PgConnection) -> anyhow::Result<Sink<'c>> {
        if !self.empty_the_table(conn).await? {
            return Ok(Sink::Batches(conn));
        }
        self.formatter.fresh = true;
        let mut copy = conn
            .copy_in_raw(&format!(
                "COPY services ({COLUMNS}) FROM STDIN WITH (FORMAT binary, FREEZE)"
            ))
            .await?;
        copy.send(BINARY_HEADER).await?;
        Ok(Sink::Fresh(copy))
    }

    /// Drops the constraints and indexes of an empty `services` and truncates it, when nobody
    /// uses it or a table referencing it; false when it holds entries or is in use.
    async fn empty_the_table(&mut self, conn: &mut PgConnection) -> anyhow::Result<bool> {
        let (empty,): (bool,) = sqlx::query_as("SELECT NOT EXISTS (SELECT 1 FROM services)")
            .fetch_one(&mut *conn)
            .await?;
        if !empty {
            return Ok(false);
        }
        let references: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid)
             FROM pg_constraint WHERE confrelid = 'services'::regclass AND contype = 'f'
             ORDER BY 1, 2",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut tables: Vec<&str> = references.iter().map(|(t, ..)| t.as_str()).collect();
        tables.dedup();
        tables.push("services");
        // Only if nobody uses them now: otherwise the plain load, rather than a wait.
        sqlx::query("SAVEPOINT fast_load")
            .execute(&mut *conn)
            .await?;
        let locked = sqlx::query(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE NOWAIT",
            tables.join(", ")
        ))
        .execute(&mut *conn)
        .await;
        if locked.is_err() {
            sqlx::query("ROLLBACK TO SAVEPOINT fast_load")
                .execute(&mut *conn)
                .await?;
            return Ok(false);
        }
        sqlx::query("RELEASE SAVEPOINT fast_load")
            .execute(&mut *conn)
            .await?;
        // The primary key and unique constraints first: the foreign keys need them back.
        let constraints: Vec<(String, String)> = sqlx::query_as(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
             WHERE conrelid = 'services'::regclass AND contype IN ('p', 'u', 'f')
             ORDER BY contype = 'f', contype <> 'p', conname",
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
        for (table, name, _) in &references {
            sqlx::query(&format!("ALTER TABLE {table} DROP CONSTRAINT \"{name}\""))
                .execute(&mut *conn)
                .await?;
        }
        for (name, _) in constraints.iter().rev() {
            sqlx::query(&format!("ALTER TABLE services DROP CONSTRAINT \"{name}\""))
                .execute(&mut *conn)
                .await?;
        }
        for (name, _) in &indexes {
            sqlx::query(&format!("DROP INDEX \"{name}\""))
                .execute(&mut *conn)
                .await?;
        }
        // A table truncated in this transaction takes frozen rows.
        sqlx::query("TRUNCATE services").execute(&mut *conn).await?;
        self.dropped = Some(Dropped {
            constraints,
            indexes: indexes
                .into_iter()
                .map(|(_, definition)| definition)
                .collect(),
            references,
        });
        Ok(true)
    }

    /// Sends what is left; after a fresh load, writes the history and change log of the loaded
    /// entries and makes again what [`CopyWriter::open`] dropped.
    pub async fn finish(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        self.flush(conn).await?;
        let Some(Dropped {
            constraints,
            indexes,
            references,
        }) = self.dropped.take()
        else {
            return Ok(());
        };
        let formatter = &self.formatter;
        // Every entry of the table is one this load created. The creation's history row takes
        // the entry's own id: unique per entry, and made before any later version's.
        sqlx::query(
            "INSERT INTO service_history (service_id, id, at, actor_kind, actor_id, via, action)
             SELECT id, id, $1, 'import', $2, 'import', 'created' FROM services",
        )
        .bind(formatter.now)
        .bind(&formatter.import_id)
        .execute(&mut *conn)
        .await?;
        // The table's order is the load's (no other scan can run: it is locked).
        sqlx::query(
            "INSERT INTO change_log (entry_id, kind, at) SELECT id, 'created', $1 FROM services",
        )
        .bind(formatter.stamp)
        .execute(&mut *conn)
        .await?;
        for (name, definition) in &constraints {
            sqlx::query(&format!(
                "ALTER TABLE services ADD CONSTRAINT \"{name}\" {definition}"
            ))
            .execute(&mut *conn)
            .await?;
        }
        for definition in &indexes {
            sqlx::query(definition).execute(&mut *conn).await?;
        }
        for (table, name, definition) in &references {
            sqlx::query(&format!(
                "ALTER TABLE {table} ADD CONSTRAINT \"{name}\" {definition}"
            ))
            .execute(&mut *conn)
            .await?;
        }
        // The planner's figures for the queries that follow (the duplicates' pass first).
        sqlx::query("ANALYZE services").execute(&mut *conn).await?;
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
                &format!("COPY services ({COLUMNS}) FROM STDIN WITH (FORMAT binary)"),
                &self.lines.new_rows.take_stream(),
            )
            .await?;
        }
        if !self.lines.updated_rows.is_empty() {
            self.write_updates(conn).await?;
        }
        if !self.lines.digests.is_empty() {
            self.temporary_tables(conn).await?;
            copy_lines(
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
            copy_lines(
                conn,
                "COPY service_history (service_id, id, at, actor_kind, actor_id, via, action,
                 changes, previous) FROM STDIN",
                &mut self.lines.history,
            )
            .await?;
        }
        if !self.lines.log.is_empty() {
            copy_lines(
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
        copy_lines(
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

/// Runs `statement` (a `COPY … FROM STDIN` of text) with `lines`, then empties them.
async fn copy_lines(
    conn: &mut PgConnection,
    statement: &str,
    lines: &mut String,
) -> anyhow::Result<()> {
    copy(conn, statement, lines.as_bytes()).await?;
    lines.clear();
    Ok(())
}

/// Runs `statement` (a `COPY … FROM STDIN`) with `data`, in its format.
async fn copy(conn: &mut PgConnection, statement: &str, data: &[u8]) -> anyhow::Result<()> {
    let mut copy = conn.copy_in_raw(statement).await?;
    if let Err(error) = copy.send(data).await {
        let _ = copy.abort("envoi interrompu").await;
        return Err(error.into());
    }
    copy.finish().await?;
    Ok(())
}
