//! The database, whichever its engine (SQLite embedded, PostgreSQL for several instances): URL
//! parsing, connections and their settings, migrations, transactions, the instance facts and
//! the change log's head.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::ConnectOptions;

use crate::error::Result;

/// The embedded engine (SQLite), which the SQLite-only paths (its C API, backups) name.
pub type Db = sqlx::Sqlite;
pub type Pool = sqlx::Pool<Db>;

/// Who folds SQLite's write-ahead log back into the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoints {
    /// The connection whose commit fills the log past 1,000 pages, in that commit: right for
    /// the command line.
    OnCommit,
    /// A server's background task ([`checkpoint_passive`]): a checkpoint syncs the file to
    /// disk, which no request should wait for.
    Background,
}

/// The database engines a URL may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `sqlite://PATH`, `sqlite:PATH` or a plain path: the embedded default.
    Sqlite,
    /// `postgres://…` or `postgresql://…`: PostgreSQL 15 or later, for several instances.
    Postgres,
}

impl Engine {
    /// A statement taking `$1` (a text key) that makes transactions on the same key wait for
    /// each other until they end: PostgreSQL's transaction-level advisory lock. None on SQLite,
    /// whose writing transactions wait for each other anyway.
    pub fn key_lock(self) -> Option<&'static str> {
        match self {
            Engine::Sqlite => None,
            Engine::Postgres => Some("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"),
        }
    }

    pub fn of(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Engine::Postgres
        } else {
            Engine::Sqlite
        }
    }
}

/// The database whichever its engine: what a store function written for both engines takes.
/// Its SQL runs on each engine's own driver (so that dates, booleans and blobs are each
/// engine's native types) through [`on_engine!`], which compiles the same statement for both.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(Pool),
    Postgres(sqlx::PgPool),
}

/// A lock held by [`Store::exclusively`], until [`Exclusive::release`]; dropped without it (an
/// error), its connection is closed, which releases it once the runtime closes it.
pub struct Exclusive {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    key: String,
}

impl Exclusive {
    /// Releases the lock now (the caller may go on to block its thread, on which a closing
    /// connection would wait).
    pub async fn release(mut self) -> Result<()> {
        if let Some(mut conn) = self.conn.take() {
            sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(&self.key)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.conn {
            conn.close_on_drop();
        }
    }
}

/// A transaction on a [`Store`], on a connection it owns; run statements in it with
/// [`in_tx!`]. Dropped without [`Tx::commit`] (an error, a refused change), its connection is
/// closed rather than handed back to the pool, which rolls the transaction back at once.
pub struct Tx {
    conn: Option<TxConn>,
    /// Whether this transaction took its turn on the change log (see [`order_log`]).
    log_ordered: bool,
}

/// Transactions waiting for a connection of the pool now: what `/metrics` reports as the pool's
/// waiting. (sqlx keeps the queue of single statements to itself; a transaction, which holds its
/// connection for several statements, is where a pool runs short first.)
static TRANSACTIONS_WAITING: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

pub fn transactions_waiting() -> i64 {
    TRANSACTIONS_WAITING.load(std::sync::atomic::Ordering::Relaxed)
}

/// One transaction counted in [`TRANSACTIONS_WAITING`] until dropped (also when its request is
/// abandoned meanwhile), and how long it waited.
struct WaitingForConnection(std::time::Instant);

impl WaitingForConnection {
    fn start() -> Self {
        TRANSACTIONS_WAITING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(std::time::Instant::now())
    }
}

impl Drop for WaitingForConnection {
    fn drop(&mut self) {
        TRANSACTIONS_WAITING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        metrics::histogram!("proximites_db_connection_wait_seconds")
            .record(self.0.elapsed().as_secs_f64());
    }
}

/// The connection a [`Tx`] owns.
enum TxConn {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    /// One of its own, set for a bulk load (see `services::store::bulk_writer`).
    SqliteOwn(sqlx::SqliteConnection),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

/// The engine's own connection of a [`Tx`], for [`in_tx!`].
pub enum ConnRef<'a> {
    Sqlite(&'a mut sqlx::SqliteConnection),
    Postgres(&'a mut sqlx::PgConnection),
}

/// Runs `$body` with `$db` bound to the engine's own pool, compiled once per engine: the same
/// SQL (with `$1`-style parameters, which both engines read) and the same binds.
#[macro_export]
macro_rules! on_engine {
    ($store:expr, |$db:ident| $body:expr) => {
        match $store {
            $crate::db::Store::Sqlite($db) => $body,
            $crate::db::Store::Postgres($db) => $body,
        }
    };
}

/// Runs `$body` with `$conn` bound to the engine's own connection (`&mut SqliteConnection` or
/// `&mut PgConnection`) inside the transaction `$tx` (a `&mut Tx`), compiled once per engine.
#[macro_export]
macro_rules! in_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $crate::db::Tx::conn($tx) {
            $crate::db::ConnRef::Sqlite($conn) => $body,
            $crate::db::ConnRef::Postgres($conn) => $body,
        }
    };
}

impl Store {
    /// Opens and migrates the database at `url`, whichever its engine.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Ok(match Engine::of(url) {
            Engine::Sqlite => Store::Sqlite(connect(url).await?),
            Engine::Postgres => Store::Postgres(connect_postgres(url).await?),
        })
    }

    /// [`Store::connect`], with the checkpoints of `checkpoints` on SQLite.
    pub async fn connect_with(url: &str, checkpoints: Checkpoints) -> anyhow::Result<Self> {
        Ok(match Engine::of(url) {
            Engine::Sqlite => Store::Sqlite(connect_with(url, checkpoints).await?),
            Engine::Postgres => Store::Postgres(connect_postgres(url).await?),
        })
    }

    /// The SQLite pool of a SQLite database (its tests' own SQL); an error on PostgreSQL.
    pub fn sqlite(&self) -> Result<&Pool> {
        match self {
            Store::Sqlite(pool) => Ok(pool),
            Store::Postgres(_) => Err(crate::error::Error::Internal(anyhow::anyhow!(
                "une base SQLite est attendue / a SQLite database is expected"
            ))),
        }
    }

    /// Holds the session-level lock `key` on PostgreSQL until the guard is dropped (its
    /// connection closed), so that instances starting together on a new database prepare it
    /// one after the other; nothing on SQLite, whose writing transactions wait for each other.
    pub async fn exclusively(&self, key: &str) -> Result<Option<Exclusive>> {
        let Store::Postgres(pool) = self else {
            return Ok(None);
        };
        let mut conn = pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(&mut *conn)
            .await?;
        Ok(Some(Exclusive {
            conn: Some(conn),
            key: key.to_owned(),
        }))
    }

    /// Closes every connection, waiting for those in use to come back.
    pub async fn close(&self) {
        on_engine!(self, |pool| pool.close().await)
    }

    /// The pool's connections: open, and idle among them.
    pub fn connections(&self) -> (u32, u32) {
        on_engine!(self, |pool| (
            pool.size(),
            u32::try_from(pool.num_idle()).unwrap_or(u32::MAX)
        ))
    }

    pub fn engine(&self) -> Engine {
        match self {
            Store::Sqlite(_) => Engine::Sqlite,
            Store::Postgres(_) => Engine::Postgres,
        }
    }

    pub async fn begin(&self) -> Result<Tx> {
        self.begin_with("BEGIN").await
    }

    /// A transaction that will write: on SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so that another process writing meanwhile makes it wait its turn rather
    /// than fail when a read transaction would be upgraded; PostgreSQL's rows locks need none.
    pub async fn begin_writing(&self) -> Result<Tx> {
        self.begin_with("BEGIN IMMEDIATE").await
    }

    async fn begin_with(&self, sqlite_begin: &'static str) -> Result<Tx> {
        let waiting = WaitingForConnection::start();
        let conn = match self {
            Store::Sqlite(pool) => TxConn::Sqlite(pool.acquire().await?),
            Store::Postgres(pool) => TxConn::Postgres(pool.acquire().await?),
        };
        drop(waiting);
        Tx::open(conn, sqlite_begin).await
    }

    /// A writing transaction on a connection of its own (a bulk load's, with its settings).
    pub async fn begin_own(conn: sqlx::SqliteConnection) -> Result<Tx> {
        Tx::open(TxConn::SqliteOwn(conn), "BEGIN IMMEDIATE").await
    }

    /// What a statement that takes rows for this instance adds after its row selection, so
    /// that another instance taking at the same time skips them instead of waiting for them:
    /// PostgreSQL's row locks. SQLite serialises writers, so it needs none.
    pub fn skip_locked(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "",
            Store::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        }
    }
}

impl Tx {
    async fn open(mut conn: TxConn, sqlite_begin: &'static str) -> Result<Self> {
        match &mut conn {
            TxConn::Sqlite(c) => sqlx::query(sqlite_begin)
                .execute(&mut **c)
                .await
                .map(drop)?,
            TxConn::SqliteOwn(c) => sqlx::query(sqlite_begin).execute(c).await.map(drop)?,
            TxConn::Postgres(c) => sqlx::query("BEGIN").execute(&mut **c).await.map(drop)?,
        }
        Ok(Tx {
            conn: Some(conn),
            log_ordered: false,
        })
    }

    pub fn engine(&self) -> Engine {
        match self.conn {
            Some(TxConn::Postgres(_)) => Engine::Postgres,
            _ => Engine::Sqlite,
        }
    }

    /// The engine's own connection, inside the transaction (see [`in_tx!`]).
    pub fn conn(&mut self) -> ConnRef<'_> {
        // Only `commit`, `rollback` and `drop`, which consume the transaction, take it.
        match self.conn.as_mut().expect("transaction already finished") {
            TxConn::Sqlite(c) => ConnRef::Sqlite(c),
            TxConn::SqliteOwn(c) => ConnRef::Sqlite(c),
            TxConn::Postgres(c) => ConnRef::Postgres(c),
        }
    }

    pub async fn commit(mut self) -> Result<()> {
        self.end("COMMIT").await
    }

    pub async fn rollback(mut self) -> Result<()> {
        self.end("ROLLBACK").await
    }

    async fn end(&mut self, statement: &'static str) -> Result<()> {
        let result = match self.conn() {
            ConnRef::Sqlite(c) => sqlx::query(statement).execute(c).await.map(drop),
            ConnRef::Postgres(c) => sqlx::query(statement).execute(c).await.map(drop),
        };
        if result.is_ok() {
            // Ended: the connection goes back to the pool.
            self.conn = None;
        }
        Ok(result?)
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        // Closing the connection rolls its transaction back.
        match self.conn.take() {
            Some(TxConn::Sqlite(mut c)) => c.close_on_drop(),
            Some(TxConn::Postgres(mut c)) => c.close_on_drop(),
            Some(TxConn::SqliteOwn(c)) => drop(c),
            None => {}
        }
    }
}

/// `url` with its password (user-info part or `password=` option) replaced, for messages and
/// logs: a database URL is often pasted from a secrets store.
pub fn redacted(url: &str) -> String {
    let mut shown = url.to_owned();
    if let Some(scheme_end) = shown.find("://") {
        let rest = &shown[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let (from, to) = (scheme_end + 3 + colon + 1, scheme_end + 3 + at);
                shown.replace_range(from..to, "***");
            }
        }
    }
    if let Some(query) = shown.find('?') {
        let (head, options) = shown.split_at(query + 1);
        let options: Vec<String> = options
            .split('&')
            .map(|option| match option.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => option.to_owned(),
            })
            .collect();
        shown = format!("{head}{}", options.join("&"));
    }
    shown
}

/// The schema's migrations for `engine`, from the one set in `migrations/`. The files are
/// written in the portable SQL their header describes; for PostgreSQL, the few SQLite names
/// without a PostgreSQL meaning are translated ([`postgres_dialect`]), and the checksums are
/// those of the translated text, which is what a PostgreSQL database ran.
pub fn migrator(engine: Engine) -> sqlx::migrate::Migrator {
    let portable = sqlx::migrate!("./migrations");
    match engine {
        Engine::Sqlite => portable,
        Engine::Postgres => sqlx::migrate::Migrator {
            migrations: portable
                .migrations
                .iter()
                .map(|m| {
                    sqlx::migrate::Migration::new(
                        m.version,
                        m.description.clone(),
                        m.migration_type,
                        std::borrow::Cow::Owned(postgres_dialect(&m.sql)),
                        m.no_tx,
                    )
                })
                .collect(),
            ..portable
        },
    }
}

/// A portable migration as PostgreSQL reads it: `BLOB` is `BYTEA`; `INTEGER` is `BIGINT` (the
/// code reads every integer as 64 bits, as SQLite stores them), and an `INTEGER PRIMARY KEY`
/// (SQLite's row id, numbered by the engine) an identity column.
pub fn postgres_dialect(portable: &str) -> String {
    let mut out = String::with_capacity(portable.len() + 64);
    for line in portable.split_inclusive('\n') {
        let (code, comment) = match line.find("--") {
            Some(at) => line.split_at(at),
            None => (line, ""),
        };
        let code = replace_word(
            code,
            "INTEGER PRIMARY KEY",
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        );
        let code = replace_word(&code, "INTEGER", "BIGINT");
        let code = replace_word(&code, "BLOB", "BYTEA");
        out.push_str(&code);
        out.push_str(comment);
    }
    out
}

/// `text` with each occurrence of `word` (not inside a longer identifier) replaced.
fn replace_word(text: &str, word: &str, by: &str) -> String {
    let is_identifier = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(is_identifier) || after.is_some_and(is_identifier) {
            out.push_str(word);
        } else {
            out.push_str(by);
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// Opens and migrates the PostgreSQL database at `url` (`postgres://USER[:PASSWORD]@HOST/DB`,
/// `?host=/socket/dir` for a unix socket). Its password is never shown.
pub async fn connect_postgres(url: &str) -> anyhow::Result<sqlx::PgPool> {
    let options = sqlx::postgres::PgConnectOptions::from_str(url)
        .map_err(|e| anyhow::anyhow!("DATABASE_URL invalide « {} » : {e}", redacted(url)))?
        .application_name("proximites")
        // A statement waits at most this long for a lock (a national load holds the entries'
        // table; writers take turns on the change log), like SQLite's busy timeout, then
        // answers 503 instead of holding its connection.
        .options([("lock_timeout", "30s")])
        .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "ouverture de la base « {} » impossible : {e}",
                redacted(url)
            )
        })?;
    migrator(Engine::Postgres).run(&pool).await?;
    Ok(pool)
}

/// The last migration applied to the database of `pool`, whichever its engine.
pub async fn applied_migration<'e, E>(executor: E) -> anyhow::Result<i64>
where
    E: sqlx::Executor<'e>,
    i64: sqlx::Type<E::Database> + for<'r> sqlx::Decode<'r, E::Database>,
    for<'q> <E::Database as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, E::Database>,
    (i64,): for<'r> sqlx::FromRow<'r, <E::Database as sqlx::Database>::Row>,
{
    let (version,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(executor)
            .await?;
    Ok(version)
}

/// Opens (creating the file when missing) and migrates the database at `url`: a `sqlite://PATH` URL
/// or a plain file path.
pub async fn connect(url: &str) -> anyhow::Result<Pool> {
    connect_with(url, Checkpoints::OnCommit).await
}

/// [`connect`], with the checkpoints of `checkpoints`.
pub async fn connect_with(url: &str, checkpoints: Checkpoints) -> anyhow::Result<Pool> {
    if Engine::of(url) == Engine::Postgres {
        anyhow::bail!(
            "« {} » : cette commande ne travaille que sur un fichier SQLite / this command works on a SQLite file only",
            redacted(url)
        );
    }
    let url = if url.contains("://") || url.starts_with("sqlite:") {
        url.to_owned()
    } else {
        format!("sqlite://{url}")
    };
    let options = SqliteConnectOptions::from_str(&url)
        .map_err(|e| anyhow::anyhow!("DATABASE_URL invalide « {url} » : {e}"))?
        .create_if_missing(true)
        // WAL lets readers go on while an import writes; NORMAL is durable at each checkpoint and
        // never corrupts the file.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        // Larger pages: a quarter of the WAL frames and B-tree pages to write for the same rows.
        .page_size(16384)
        .busy_timeout(Duration::from_secs(30))
        .pragma("cache_size", "-65536")
        // Reads map the file (up to SQLite's 2 GB cap) instead of copying pages into each
        // connection's cache with a system call: the OS page cache is shared by all of them.
        .pragma("mmap_size", "2147418112")
        .pragma("temp_store", "memory")
        .pragma(
            "wal_autocheckpoint",
            if checkpoints == Checkpoints::Background {
                "0"
            } else {
                "1000"
            },
        )
        // A million-row commit takes seconds by design: not worth a warning on the terminal.
        .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        // A request that cannot get a connection in this time is told to come back (503), not
        // left hanging: heavy requests are admitted by `admission` so that this stays rare.
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| anyhow::anyhow!("ouverture de la base « {url} » impossible : {e}"))?;
    migrator(Engine::Sqlite).run(&pool).await?;
    Ok(pool)
}

/// Copies what it can of the write-ahead log into the database file without waiting for
/// anyone (a server's background checkpoint); the log is reused from its start once all of it
/// was copied.
pub async fn checkpoint_passive(store: &Store) -> Result<()> {
    if let Store::Sqlite(pool) = store {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Copies the write-ahead log into the database file and empties it.
pub async fn checkpoint(store: &Store) -> Result<()> {
    if let Store::Sqlite(pool) = store {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// The SQLite file of `url` (a `sqlite://PATH` URL or a plain path).
pub fn sqlite_path(url: &str) -> std::path::PathBuf {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    std::path::PathBuf::from(path.split('?').next().unwrap_or(path))
}

/// The directory of the derived on-disk indexes of the database at `url`: `PATH.text` beside
/// the SQLite file `PATH`.
pub fn text_index_dir(url: &str) -> std::path::PathBuf {
    let mut path = sqlite_path(url).into_os_string();
    path.push(".text");
    path.into()
}

/// Where an instance keeps what it derives from the database at `url`: the text index and the
/// whole-directory exports, in `data_dir` when given (`DIR/text`, `DIR/exports`), else beside
/// the SQLite file (`PATH.text`, `PATH.exports`).
pub fn derived_paths(
    url: &str,
    data_dir: Option<&std::path::Path>,
) -> (std::path::PathBuf, std::path::PathBuf) {
    match data_dir {
        Some(dir) => (dir.join("text"), dir.join("exports")),
        // No file to sit beside: the working directory.
        None if Engine::of(url) == Engine::Postgres => (
            std::path::PathBuf::from("proximites.text"),
            std::path::PathBuf::from("proximites.exports"),
        ),
        None => {
            let text = text_index_dir(url);
            let exports = text.with_extension("exports");
            (text, exports)
        }
    }
}

/// What every derived directory of a database is named after: `PATH.text` (the text index),
/// `PATH.exports` (whole-directory files). They rebuild from the database when missing.
fn derived_dirs(url: &str) -> [std::path::PathBuf; 2] {
    let (text, exports) = derived_paths(url, None);
    [text, exports]
}

/// A server's hold on its database: a shared lock on `PATH.serve.lock`, so that a restore
/// (which needs it exclusive) never replaces the file under a running server. Several servers
/// may share one database; the lock goes with the process.
pub fn hold_serving(url: &str) -> anyhow::Result<Option<std::fs::File>> {
    if Engine::of(url) == Engine::Postgres {
        // Restores of PostgreSQL are the DBA's tools', which know their own locks.
        return Ok(None);
    }
    serve_lock(url, libc::LOCK_SH)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("verrou de service de la base : {e}"))
}

fn serve_lock(url: &str, kind: libc::c_int) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let mut path = sqlite_path(url).into_os_string();
    path.push(".serve.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::path::PathBuf::from(path))?;
    // SAFETY: flock on a descriptor this function owns; released when the file is closed.
    if unsafe { libc::flock(file.as_raw_fd(), kind | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Writes a consistent copy of the database to `target` while servers and imports go on
/// (SQLite's `VACUUM INTO`: one read transaction, a compacted file), into a temporary file
/// beside it renamed over `target` once complete and synced. Returns its size in bytes.
pub async fn backup(pool: &Pool, target: &std::path::Path) -> anyhow::Result<u64> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".proximites-backup-")
        .tempfile_in(dir)?
        .into_temp_path();
    // VACUUM INTO wants to create the file itself.
    std::fs::remove_file(&temp)?;
    sqlx::query("VACUUM INTO $1")
        .bind(temp.to_string_lossy().into_owned())
        .execute(pool)
        .await
        .map_err(|e| anyhow::anyhow!("sauvegarde impossible : {e}"))?;
    std::fs::File::open(&temp)?.sync_all()?;
    let size = std::fs::metadata(&temp)?.len();
    temp.persist(target)
        .map_err(|e| anyhow::anyhow!("{} : écriture impossible ({e})", target.display()))?;
    Ok(size)
}

/// What a restore put back.
#[derive(Debug)]
pub struct Restored {
    pub entries: i64,
    pub migration: i64,
    /// Where the replaced database was moved (none when there was none).
    pub previous: Option<std::path::PathBuf>,
}

/// Puts the backup `file` in place of the database at `url`, which no server may be using:
/// the backup is checked whole first (SQLite's integrity check, Proximités' migrations), copied
/// beside the database and renamed over it; the replaced file is kept as `PATH.before-restore`
/// and the derived directories are removed, to be rebuilt by the next start.
pub async fn restore(url: &str, file: &std::path::Path) -> anyhow::Result<Restored> {
    let _exclusive = serve_lock(url, libc::LOCK_EX).map_err(|_| {
        anyhow::anyhow!(
            "un serveur utilise cette base : arrêtez-le avant de la restaurer / a server is using this database: stop it first"
        )
    })?;
    let (entries, migration) = verify(file).await?;
    let path = sqlite_path(url);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_owned();
    let staged = tempfile::Builder::new()
        .prefix(".proximites-restore-")
        .tempfile_in(&dir)?;
    std::fs::copy(file, staged.path())?;
    staged.as_file().sync_all()?;
    let previous = if path.exists() {
        let mut kept = path.clone().into_os_string();
        kept.push(".before-restore");
        let kept = std::path::PathBuf::from(kept);
        std::fs::rename(&path, &kept)?;
        Some(kept)
    } else {
        None
    };
    for suffix in ["-wal", "-shm"] {
        let mut log = path.clone().into_os_string();
        log.push(suffix);
        let _ = std::fs::remove_file(std::path::PathBuf::from(log));
    }
    staged
        .persist(&path)
        .map_err(|e| anyhow::anyhow!("{} : écriture impossible ({e})", path.display()))?;
    for derived in derived_dirs(url) {
        if derived.exists() {
            std::fs::remove_dir_all(&derived)?;
        }
    }
    Ok(Restored {
        entries,
        migration,
        previous,
    })
}

/// Checks that `file` is a whole Proximités database: returns its entries and last migration.
async fn verify(file: &std::path::Path) -> anyhow::Result<(i64, i64)> {
    let not_ours = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "{} n'est pas une sauvegarde de Proximités lisible : {e}",
            file.display()
        )
    };
    if !file.is_file() {
        return Err(not_ours(&"fichier absent"));
    }
    let options = SqliteConnectOptions::new()
        .filename(file)
        .read_only(true)
        .create_if_missing(false);
    let mut conn = sqlx::ConnectOptions::connect(&options)
        .await
        .map_err(|e| not_ours(&e))?;
    let (check,): (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| not_ours(&e))?;
    if check != "ok" {
        return Err(not_ours(&check));
    }
    let (migration,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| not_ours(&e))?;
    let (entries,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM services")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| not_ours(&e))?;
    Ok((entries, migration))
}

/// An instant as the change log stores it: on SQLite, RFC 3339 text in UTC to the microsecond,
/// fixed width, so that stamps order as text (see `services::store::log_stamp`); on PostgreSQL a
/// `timestamptz`.
#[derive(Debug, Clone, Copy)]
pub struct Stamp(pub chrono::DateTime<chrono::Utc>);

/// A day as instants compare with it: on SQLite the text `YYYY-MM-DD`, which orders before
/// every instant of that day stored as ISO-8601 text; on PostgreSQL, its first instant in UTC.
#[derive(Debug, Clone, Copy)]
pub struct Day(pub chrono::NaiveDate);

impl sqlx::Type<sqlx::Sqlite> for Stamp {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Sqlite> for Stamp {
    fn encode_by_ref(
        &self,
        buf: &mut Vec<sqlx::sqlite::SqliteArgumentValue<'q>>,
    ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        let text = self.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        <String as sqlx::Encode<'q, sqlx::Sqlite>>::encode(text, buf)
    }
}

impl sqlx::Type<sqlx::Postgres> for Stamp {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <chrono::DateTime<chrono::Utc> as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for Stamp {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <chrono::DateTime<chrono::Utc> as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl sqlx::Type<sqlx::Sqlite> for Day {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Sqlite> for Day {
    fn encode_by_ref(
        &self,
        buf: &mut Vec<sqlx::sqlite::SqliteArgumentValue<'q>>,
    ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <String as sqlx::Encode<'q, sqlx::Sqlite>>::encode(
            self.0.format("%Y-%m-%d").to_string(),
            buf,
        )
    }
}

impl sqlx::Type<sqlx::Postgres> for Day {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <chrono::DateTime<chrono::Utc> as sqlx::Type<sqlx::Postgres>>::type_info()
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for Day {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        let first = self.0.and_time(chrono::NaiveTime::MIN).and_utc();
        <chrono::DateTime<chrono::Utc> as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&first, buf)
    }
}

/// A query builder for the engine of `_db` (a pool or a connection), so that the same building
/// code compiles for both engines in [`on_engine!`] and [`in_tx!`].
pub fn builder<'a, DB: sqlx::Database>(
    _db: &impl EngineOf<DB>,
    init: impl Into<String>,
) -> sqlx::QueryBuilder<'a, DB> {
    sqlx::QueryBuilder::new(init)
}

/// What names an engine: its pool or its connection.
pub trait EngineOf<DB> {}
impl<DB: sqlx::Database> EngineOf<DB> for sqlx::Pool<DB> {}
impl<DB: sqlx::Database> EngineOf<DB> for &sqlx::Pool<DB> {}
impl EngineOf<sqlx::Sqlite> for &mut sqlx::SqliteConnection {}
impl EngineOf<sqlx::Postgres> for &mut sqlx::PgConnection {}

/// Taken by every transaction that appends to the change log, before it does: on PostgreSQL,
/// whose sequence hands out numbers at insert and not at commit, writers of the log take turns
/// until their commit, so that rows become visible in the order of their numbers and a
/// follower reading past its position never skips one committed later; the commit also wakes
/// the instances that `LISTEN` (see `search::live`). SQLite's writers already take turns.
pub async fn order_log(tx: &mut Tx) -> Result<()> {
    if tx.log_ordered {
        return Ok(());
    }
    if let ConnRef::Postgres(conn) = tx.conn() {
        order_log_on(conn).await?;
    }
    tx.log_ordered = true;
    Ok(())
}

/// [`order_log`] on the connection of a PostgreSQL transaction.
pub async fn order_log_on(conn: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(7046520190), pg_notify('proximites_changes', '')")
        .execute(conn)
        .await?;
    Ok(())
}

/// The channel on which PostgreSQL tells the instances that the change log grew.
pub const CHANGES_CHANNEL: &str = "proximites_changes";

/// Facts: `demo_loaded` marks a database that received the demo once, `form_secret` signs
/// forms, `log_pruned_through` is the last change-log row pruned.
pub async fn fact(store: &Store, key: &str) -> Result<Option<String>> {
    let row: Option<(String,)> = on_engine!(store, |db| {
        sqlx::query_as("SELECT value FROM instance_facts WHERE key = $1")
            .bind(key)
            .fetch_optional(db)
            .await?
    });
    Ok(row.map(|(v,)| v))
}

/// `fact` within the caller's transaction.
pub async fn fact_in(tx: &mut Tx, key: &str) -> Result<Option<String>> {
    let row: Option<(String,)> = in_tx!(tx, |conn| {
        sqlx::query_as("SELECT value FROM instance_facts WHERE key = $1")
            .bind(key)
            .fetch_optional(conn)
            .await?
    });
    Ok(row.map(|(v,)| v))
}

const SET_FACT: &str = "INSERT INTO instance_facts (key, value) VALUES ($1, $2)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value";

pub async fn set_fact(store: &Store, key: &str, value: &str) -> Result<()> {
    on_engine!(store, |db| {
        sqlx::query(SET_FACT)
            .bind(key)
            .bind(value)
            .execute(db)
            .await
            .map(drop)?
    });
    Ok(())
}

/// `set_fact` within the caller's transaction.
pub async fn set_fact_in(tx: &mut Tx, key: &str, value: &str) -> Result<()> {
    in_tx!(tx, |conn| {
        sqlx::query(SET_FACT)
            .bind(key)
            .bind(value)
            .execute(conn)
            .await
            .map(drop)?
    });
    Ok(())
}

/// The fact under `key`, `proposed` written first when there is none: of several instances
/// proposing at once on a new database, the first written is everyone's.
pub async fn fact_or_propose(store: &Store, key: &str, proposed: &str) -> Result<String> {
    on_engine!(store, |db| {
        sqlx::query(
            "INSERT INTO instance_facts (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(proposed)
        .execute(db)
        .await
        .map(drop)?
    });
    fact(store, key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("fait {key} absent après son écriture").into())
}

const LOG_HEAD: &str = "SELECT MAX(seq) FROM change_log";

/// The last sequence number of the change log (0 before any write): the data version. Every
/// committed write to entries moves it (see `services::store::log_change`), so caches key on
/// it.
pub async fn log_head(store: &Store) -> Result<i64> {
    let (head,): (Option<i64>,) =
        on_engine!(store, |db| sqlx::query_as(LOG_HEAD).fetch_one(db).await?);
    Ok(head.unwrap_or(0))
}

/// `log_head` within the caller's transaction.
pub async fn log_head_in(tx: &mut Tx) -> Result<i64> {
    let (head,): (Option<i64>,) =
        in_tx!(tx, |conn| sqlx::query_as(LOG_HEAD).fetch_one(conn).await?);
    Ok(head.unwrap_or(0))
}

/// When the entries last changed (RFC 3339, UTC): the change log's last row, or the latest
/// update of an entry once the log was pruned; `None` for an empty directory.
pub async fn last_change(store: &Store) -> Result<Option<String>> {
    let (at,): (Option<chrono::DateTime<chrono::Utc>>,) = on_engine!(store, |db| {
        sqlx::query_as(
            "SELECT COALESCE((SELECT MAX(at) FROM change_log), (SELECT MAX(updated_at) FROM services))",
        )
        .fetch_one(db)
        .await?
    });
    Ok(at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
}

/// The data version as the caches key on it: the change log's head, as text.
pub async fn data_version(store: &Store) -> Result<Option<String>> {
    Ok(Some(log_head(store).await?.to_string()))
}

/// Reads through SQLite's C API on a connection lent by sqlx: sqlx copies each row into values
/// of its own and hands it over from its connection thread (about 10 µs a row), which makes
/// loads of millions of rows, or of every commune at each start, take seconds; here each row's
/// texts are borrowed from SQLite where they lie.
pub mod raw {
    use std::ffi::{c_int, CStr};
    use std::ptr::NonNull;

    use libsqlite3_sys as ffi;
    use sqlx::sqlite::LockedSqliteHandle;

    use super::Pool;

    /// A prepared statement, finalized when dropped.
    pub struct Statement {
        pub raw: NonNull<ffi::sqlite3_stmt>,
    }

    impl Drop for Statement {
        fn drop(&mut self) {
            // SAFETY: `raw` came from sqlite3_prepare_v2 and is finalized once, here.
            unsafe {
                ffi::sqlite3_finalize(self.raw.as_ptr());
            }
        }
    }

    /// Prepares `sql` on the connection `db`.
    pub(crate) fn prepare(db: *mut ffi::sqlite3, sql: &CStr) -> anyhow::Result<Statement> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: `db` is a live connection whose lock the caller holds; `sql` is NUL-terminated.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut raw, std::ptr::null_mut())
        };
        match NonNull::new(raw) {
            Some(raw) if rc == ffi::SQLITE_OK => Ok(Statement { raw }),
            _ => anyhow::bail!("préparation de la requête : {}", error_message(db)),
        }
    }

    /// The connection's last error, in SQLite's words.
    pub(crate) fn error_message(db: *mut ffi::sqlite3) -> String {
        // SAFETY: sqlite3_errmsg returns a NUL-terminated string owned by the connection.
        unsafe {
            CStr::from_ptr(ffi::sqlite3_errmsg(db))
                .to_string_lossy()
                .into_owned()
        }
    }

    /// The text of column `i` of the current row; `None` for NULL.
    ///
    /// # Safety
    /// `stmt` must be a statement positioned on a row (the last step returned SQLITE_ROW); the
    /// text lives until the next step, reset or finalize, which the caller's borrow must not
    /// outlive.
    pub unsafe fn column_text<'r>(
        stmt: *mut ffi::sqlite3_stmt,
        i: c_int,
    ) -> anyhow::Result<Option<&'r str>> {
        // sqlite3_column_text before sqlite3_column_bytes, as SQLite asks, so the length is the
        // UTF-8 one.
        let text = ffi::sqlite3_column_text(stmt, i);
        if text.is_null() {
            return Ok(None);
        }
        let len = usize::try_from(ffi::sqlite3_column_bytes(stmt, i))?;
        Ok(Some(std::str::from_utf8(std::slice::from_raw_parts(
            text, len,
        ))?))
    }

    /// The current row of a statement being stepped: its columns, borrowed until the next step.
    pub struct Row<'s> {
        stmt: *mut ffi::sqlite3_stmt,
        _statement: std::marker::PhantomData<&'s Statement>,
    }

    impl Row<'_> {
        /// Column `i` as text; `None` for NULL.
        pub fn text(&self, i: c_int) -> anyhow::Result<Option<&str>> {
            // SAFETY: the row is current while `self` lives (see `each_row`), and the text is
            // borrowed no longer than `self`.
            unsafe { column_text(self.stmt, i) }
        }

        /// Column `i` as text, which must not be NULL.
        pub fn required_text(&self, i: c_int) -> anyhow::Result<&str> {
            self.text(i)?
                .ok_or_else(|| anyhow::anyhow!("colonne {i} vide"))
        }

        /// Column `i` as a number (0.0 for NULL).
        pub fn real(&self, i: c_int) -> f64 {
            // SAFETY: the row is current while `self` lives.
            unsafe { ffi::sqlite3_column_double(self.stmt, i) }
        }

        /// Column `i` as an integer (0 for NULL).
        pub fn integer(&self, i: c_int) -> i64 {
            // SAFETY: the row is current while `self` lives.
            unsafe { ffi::sqlite3_column_int64(self.stmt, i) }
        }
    }

    /// Steps every row of `sql` (a statement without parameters), from one statement, hence
    /// one snapshot of the database, handing each to `each`; returns how many rows. Stops at
    /// the first error `each` returns; `what` names the read in SQLite's errors.
    pub fn each_row(
        handle: &mut LockedSqliteHandle<'_>,
        sql: &CStr,
        what: &str,
        mut each: impl FnMut(&Row<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        let db = handle.as_raw_handle().as_ptr();
        let statement = prepare(db, sql)?;
        let row = Row {
            stmt: statement.raw.as_ptr(),
            _statement: std::marker::PhantomData,
        };
        let mut count = 0;
        loop {
            // SAFETY: a statement of this locked connection, stepped only here.
            match unsafe { ffi::sqlite3_step(row.stmt) } {
                ffi::SQLITE_ROW => {}
                ffi::SQLITE_DONE => break,
                _ => anyhow::bail!("{what} : {}", error_message(db)),
            }
            each(&row)?;
            count += 1;
        }
        Ok(count)
    }

    /// [`each_row`] on a connection of `pool`, on a blocking thread, into `state`, which it
    /// hands back.
    pub async fn fold_rows<S: Send + 'static>(
        pool: &Pool,
        sql: &'static CStr,
        what: &'static str,
        state: S,
        mut each: impl FnMut(&mut S, &Row<'_>) -> anyhow::Result<()> + Send + 'static,
    ) -> crate::error::Result<S> {
        let mut conn = pool.acquire().await?;
        let runtime = tokio::runtime::Handle::current();
        let state = tokio::task::spawn_blocking(move || -> anyhow::Result<S> {
            let mut handle = runtime.block_on(conn.lock_handle())?;
            let mut state = state;
            each_row(&mut handle, sql, what, |row| each(&mut state, row))?;
            Ok(state)
        })
        .await
        .map_err(anyhow::Error::from)??;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_in_database_urls() {
        assert_eq!(
            redacted("postgres://annuaire:s3cr%40t@db.example.fr:5432/proximites"),
            "postgres://annuaire:***@db.example.fr:5432/proximites"
        );
        assert_eq!(
            redacted("postgresql://annuaire@/proximites?host=/run/postgresql&password=s3cret"),
            "postgresql://annuaire@/proximites?host=/run/postgresql&password=***"
        );
        assert_eq!(redacted("sqlite://proximites.db"), "sqlite://proximites.db");
        assert_eq!(Engine::of("postgresql://a@b/c"), Engine::Postgres);
        assert_eq!(Engine::of("annuaire.db"), Engine::Sqlite);
    }

    #[test]
    fn migrations_read_as_postgresql_keep_their_comments_and_identifiers() {
        let portable =
            "CREATE TABLE t (\n    seq INTEGER PRIMARY KEY, -- an INTEGER PRIMARY KEY\n    \
                        n INTEGER NOT NULL,\n    blob_size INTEGER,\n    content BLOB\n);\n";
        assert_eq!(
            postgres_dialect(portable),
            "CREATE TABLE t (\n    seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, -- an \
             INTEGER PRIMARY KEY\n    n BIGINT NOT NULL,\n    blob_size BIGINT,\n    content BYTEA\n);\n"
        );
        // Every migration changes for PostgreSQL only where SQLite's names were.
        for migration in migrator(Engine::Postgres).migrations.iter() {
            assert!(
                !migration.sql.contains(" BLOB"),
                "{}",
                migration.description
            );
        }
    }
}
