//! A database migrated by a release that shipped migrations 0001–0003 (as main has them) opens
//! with this one: sqlx checks the checksums of the migrations already applied, so those files
//! must never change, and 0004 moves its data along (an organisation's API tokens survive the
//! table's rebuild; the operator's tokens have no organisation). The same migrations make the
//! same schema on PostgreSQL.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::migrate::Migrator;

#[tokio::test]
async fn a_database_of_the_previous_release_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = dir.path().join("migrations");
    std::fs::create_dir(&shipped).unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for file in [
        "0001_schema.sql",
        "0002_reports.sql",
        "0003_contributors.sql",
    ] {
        std::fs::copy(here.join(file), shipped.join(file)).unwrap();
    }
    let db = dir.path().join("old.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let store = sqlx::SqlitePool::connect(&url).await.unwrap();
    Migrator::new(shipped.as_path())
        .await
        .unwrap()
        .run(&store)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO organisations (id, name, kind, created_at, territory)
         VALUES ('org-1', 'Ville de Riom', 'commune', '2026-01-01T00:00:00Z', '[\"commune:63300\"]')",
    )
    .execute(&store)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, name, organisation_id, created_at, last_used_at)
         VALUES ('tok-1', 'abc', 'sig', 'org-1', '2026-01-02T00:00:00Z', '2026-01-03T00:00:00Z')",
    )
    .execute(&store)
    .await
    .unwrap();
    store.close().await;

    // This release's migrations on that file: 0001–0003 recognised as applied, 0004 run.
    let store = proximites::db::Store::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("the previous release's database opens");
    let kept: (String, String, Option<String>) =
        proximites::on_engine!(&store, |db| sqlx::query_as(
            "SELECT name, organisation_id, last_used_at FROM api_tokens WHERE id = 'tok-1'",
        )
        .fetch_one(db)
        .await)
        .unwrap();
    assert_eq!(
        kept,
        (
            "sig".into(),
            "org-1".into(),
            Some("2026-01-03T00:00:00Z".into())
        )
    );
    proximites::on_engine!(&store, |db| sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, name, organisation_id, created_at)
         VALUES ('tok-2', 'def', 'région', NULL, '2026-01-04T00:00:00Z')",
    )
    .execute(db)
    .await
    .map(|r| r.rows_affected()))
    .expect("an operator token has no organisation");
    let duplicate = proximites::on_engine!(&store, |db| {
        sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, name, created_at) VALUES ('tok-3', 'abc', 'x', '2026-01-04')",
    )
    .execute(db).await.map(|r| r.rows_affected())
    });
    assert!(duplicate.is_err(), "token hashes stay unique");
    for table in [
        "campaigns",
        "outbox",
        "organisation_withdrawals",
        "pending_uploads",
    ] {
        let n: i64 = proximites::on_engine!(&store, |db| sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table}"
        ))
        .fetch_one(db)
        .await)
        .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    store.close().await;
}

/// Tables, and for each its columns with their type and whether they take NULL.
type Schema = BTreeMap<String, Vec<(String, String, bool)>>;

/// A SQLite declared type under PostgreSQL's name for the same values.
fn as_postgres(declared: &str) -> String {
    match declared.to_uppercase().as_str() {
        "INTEGER" | "BIGINT" => "bigint",
        "TEXT" => "text",
        "DOUBLE PRECISION" => "double precision",
        "BOOLEAN" => "boolean",
        "TIMESTAMPTZ" => "timestamp with time zone",
        "DATE" => "date",
        "BLOB" => "bytea",
        other => panic!("type SQLite sans équivalent : {other}"),
    }
    .to_owned()
}

fn migrate(dir: &Path, url: &str) -> String {
    let output = common::binary::command(dir)
        .args(["--database-url", url, "migrate"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `proximites migrate` on a new PostgreSQL database and on a new SQLite file: the same tables,
/// columns, types and nullability; a second run changes nothing; the password is never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migrations_make_the_same_schema_on_postgresql() {
    let cluster = common::postgres::Cluster::start();
    let url = cluster
        .database("schema")
        .await
        .replace("proximites@", "proximites:motdepasse@");
    let dir = tempfile::tempdir().unwrap();
    let last = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
        .unwrap()
        .count();
    for _ in 0..2 {
        let said = migrate(dir.path(), &url);
        assert!(said.contains(&format!("migration {last} ")), "{said}");
        assert!(
            !said.contains("motdepasse") && said.contains("proximites:***@"),
            "{said}"
        );
    }
    let sqlite = dir.path().join("schema.db");
    migrate(dir.path(), &format!("sqlite://{}", sqlite.display()));

    let store = sqlx::PgPool::connect(&url).await.unwrap();
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns WHERE table_schema = 'public' \
         AND table_name <> '_sqlx_migrations' ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&store)
    .await
    .unwrap();
    let mut on_postgres = Schema::new();
    for (table, column, kind, nullable) in rows {
        on_postgres
            .entry(table)
            .or_default()
            .push((column, kind, nullable == "YES"));
    }

    let lite = sqlx::SqlitePool::connect(&format!("sqlite://{}", sqlite.display()))
        .await
        .unwrap();
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&lite)
    .await
    .unwrap();
    let mut on_sqlite = Schema::new();
    for (table,) in tables {
        let columns: Vec<(String, String, bool, i64)> = sqlx::query_as(&format!(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info('{table}') ORDER BY cid"
        ))
        .fetch_all(&lite)
        .await
        .unwrap();
        on_sqlite.insert(
            table,
            columns
                .into_iter()
                // A primary key's columns take no NULL on PostgreSQL (SQLite lets a TEXT key
                // be NULL unless told; the code never writes one).
                .map(|(name, kind, not_null, pk)| (name, as_postgres(&kind), !not_null && pk == 0))
                .collect(),
        );
    }
    assert_eq!(on_sqlite.len(), 29, "{:?}", on_sqlite.keys());
    assert_eq!(on_postgres, on_sqlite);
}
