//! The database connection: URL parsing, SQLite settings, migrations, and the instance facts table.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::ConnectOptions;

use crate::error::Result;

/// The database engine. Only the store modules and this one name it, so that PostgreSQL can follow.
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

/// Opens (creating the file when missing) and migrates the database at `url`: a `sqlite://PATH` URL
/// or a plain file path.
pub async fn connect(url: &str) -> anyhow::Result<Pool> {
    connect_with(url, Checkpoints::OnCommit).await
}

/// [`connect`], with the checkpoints of `checkpoints`.
pub async fn connect_with(url: &str, checkpoints: Checkpoints) -> anyhow::Result<Pool> {
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
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// Copies what it can of the write-ahead log into the database file without waiting for
/// anyone (a server's background checkpoint); the log is reused from its start once all of it
/// was copied.
pub async fn checkpoint_passive(pool: &Pool) -> Result<()> {
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(pool)
        .await?;
    Ok(())
}

/// Copies the write-ahead log into the database file and empties it.
pub async fn checkpoint(pool: &Pool) -> Result<()> {
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(pool)
        .await?;
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
pub fn hold_serving(url: &str) -> anyhow::Result<std::fs::File> {
    serve_lock(url, libc::LOCK_SH)
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

/// Facts: `demo_loaded` marks a database that received the demo once, `form_secret` signs
/// forms, `log_pruned_through` is the last change-log row pruned.
pub async fn fact(pool: &Pool, key: &str) -> Result<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT value FROM instance_facts WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|(v,)| v))
}

pub async fn set_fact<'e, E>(executor: E, key: &str, value: &str) -> Result<()>
where
    E: sqlx::Executor<'e, Database = Db>,
{
    sqlx::query(
        "INSERT INTO instance_facts (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(value)
    .execute(executor)
    .await?;
    Ok(())
}

/// The fact under `key`, `proposed` written first when there is none: of several instances
/// proposing at once on a new database, the first written is everyone's.
pub async fn fact_or_propose(pool: &Pool, key: &str, proposed: &str) -> Result<String> {
    sqlx::query(
        "INSERT INTO instance_facts (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(proposed)
    .execute(pool)
    .await?;
    let (value,): (String,) = sqlx::query_as("SELECT value FROM instance_facts WHERE key = $1")
        .bind(key)
        .fetch_one(pool)
        .await?;
    Ok(value)
}

/// `fact` within the caller's transaction.
pub async fn fact_in(conn: &mut sqlx::SqliteConnection, key: &str) -> Result<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT value FROM instance_facts WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(v,)| v))
}

/// The last sequence number of the change log (0 before any write): the data version. Every
/// committed write to entries moves it (the log's triggers), so caches key on it.
pub async fn log_head<'e, E>(executor: E) -> Result<i64>
where
    E: sqlx::Executor<'e, Database = Db>,
{
    let (head,): (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM change_log")
        .fetch_one(executor)
        .await?;
    Ok(head.unwrap_or(0))
}

/// When the entries last changed (RFC 3339, UTC): the change log's last row, or the latest
/// update of an entry once the log was pruned; `None` for an empty directory.
pub async fn last_change(pool: &Pool) -> Result<Option<String>> {
    let (at,): (Option<chrono::DateTime<chrono::Utc>>,) = sqlx::query_as(
        "SELECT COALESCE((SELECT MAX(at) FROM change_log), (SELECT MAX(updated_at) FROM services))",
    )
    .fetch_one(pool)
    .await?;
    Ok(at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
}

/// The data version as the caches key on it: the change log's head, as text.
pub async fn data_version<'e, E>(executor: E) -> Result<Option<String>>
where
    E: sqlx::Executor<'e, Database = Db>,
{
    Ok(Some(log_head(executor).await?.to_string()))
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
