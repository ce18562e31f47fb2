//! The `bench` subcommand: reproducible speed measurements on generated data, as the README reports.

use std::time::Instant;

use crate::import::{self, ImportOptions, Input};
use crate::{boot, db, synth};

/// Generates `rows` entries, imports them into a new SQLite file and reports the rate. The timed
/// part is the import alone, from reading the file to the committed, checkpointed database.
pub async fn import(rows: u64, seed: u64) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("entries.csv");
    let path = file.clone();
    tokio::task::spawn_blocking(move || synth::write_file(&path, rows, seed)).await??;
    let size_mb = std::fs::metadata(&file)?.len() as f64 / 1e6;
    let database = dir.path().join("bench.db");
    let pool = db::connect(database.to_str().unwrap_or("bench.db")).await?;
    let reference = boot::prepare(&pool, false).await?;

    let started = Instant::now();
    let report = import::import(
        &pool,
        &reference,
        Input::File(file),
        ImportOptions::default(),
    )
    .await?;
    pool.close().await;
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.committed && report.created == rows,
        "import incomplete: {}",
        report.summary()
    );
    Ok(format!(
        "import: {rows} rows ({size_mb:.0} MB) in {elapsed:.2} s = {:.0} rows/s (seed {seed})",
        rows as f64 / elapsed
    ))
}
