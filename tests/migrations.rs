//! A database migrated by a release that shipped migrations 0001–0003 (as main has them) opens
//! with this one: sqlx checks the checksums of the migrations already applied, so those files
//! must never change, and 0004 moves its data along (an organisation's API tokens survive the
//! table's rebuild; the operator's tokens have no organisation).

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
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    Migrator::new(shipped.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO organisations (id, name, kind, created_at, territory)
         VALUES ('org-1', 'Ville de Riom', 'commune', '2026-01-01T00:00:00Z', '[\"commune:63300\"]')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, name, organisation_id, created_at, last_used_at)
         VALUES ('tok-1', 'abc', 'sig', 'org-1', '2026-01-02T00:00:00Z', '2026-01-03T00:00:00Z')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    // This release's migrations on that file: 0001–0003 recognised as applied, 0004 run.
    let pool = proximites::db::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("the previous release's database opens");
    let kept: (String, String, Option<String>) = sqlx::query_as(
        "SELECT name, organisation_id, last_used_at FROM api_tokens WHERE id = 'tok-1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        kept,
        (
            "sig".into(),
            "org-1".into(),
            Some("2026-01-03T00:00:00Z".into())
        )
    );
    sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, name, organisation_id, created_at)
         VALUES ('tok-2', 'def', 'région', NULL, '2026-01-04T00:00:00Z')",
    )
    .execute(&pool)
    .await
    .expect("an operator token has no organisation");
    let duplicate = sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, name, created_at) VALUES ('tok-3', 'abc', 'x', '2026-01-04')",
    )
    .execute(&pool)
    .await;
    assert!(duplicate.is_err(), "token hashes stay unique");
    for table in [
        "campaigns",
        "outbox",
        "organisation_withdrawals",
        "pending_uploads",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    pool.close().await;
}
