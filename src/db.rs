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

/// The directory of the derived on-disk indexes of the database at `url`: `PATH.text` beside
/// the SQLite file `PATH`.
pub fn text_index_dir(url: &str) -> std::path::PathBuf {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = path.split('?').next().unwrap_or(path);
    std::path::PathBuf::from(format!("{path}.text"))
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
