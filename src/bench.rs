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

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn percentiles(mut micros: Vec<f64>) -> (f64, f64) {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Generates and imports `rows` entries, builds the search indexes from the database, then times
/// in-process queries at random points of metropolitan France: (a) the 10 nearest of one
/// typology, (b) everything within 5 km, (c) words within 5 km, (d) words alone.
pub async fn search(rows: u64, seed: u64, queries: usize) -> anyhow::Result<String> {
    use rand::{Rng, SeedableRng};

    use crate::search::engine::SearchParams;
    use crate::search::hours::HoursEvaluator;

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("entries.csv");
    let path = file.clone();
    tokio::task::spawn_blocking(move || synth::write_file(&path, rows, seed)).await??;
    let database = dir.path().join("bench.db");
    let pool = db::connect(database.to_str().unwrap_or("bench.db")).await?;
    let reference = boot::prepare(&pool, false).await?;
    import::import(
        &pool,
        &reference,
        Input::File(file),
        ImportOptions::default(),
    )
    .await?;

    let before = resident_bytes();
    let started = Instant::now();
    let spatial = crate::search::spatial::load(&pool).await?;
    let build_s = started.elapsed().as_secs_f64();
    let per_entry = resident_bytes().saturating_sub(before) as f64 / spatial.len().max(1) as f64;

    let text_dir = dir.path().join("text");
    let started = Instant::now();
    let text = crate::search::text::TextIndex::open_or_create(&text_dir)?;
    text.sync_from_db(&pool, &reference.taxonomy, &reference.locator)
        .await?;
    let text_build_s = started.elapsed().as_secs_f64();

    let hours = HoursEvaluator::default();
    let now = crate::search::hours::paris_now();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut time = |params: &dyn Fn(f64, f64) -> SearchParams| -> anyhow::Result<(f64, f64)> {
        let mut micros = Vec::with_capacity(queries);
        for _ in 0..queries {
            let (lon, lat) = (rng.gen_range(-1.5..7.5), rng.gen_range(43.5..49.5));
            let query = params(lon, lat)
                .parse(&reference.taxonomy, &reference.locator, now)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let t = Instant::now();
            // The words go through the text index, as the API does, inside the timing.
            let page = crate::search::run(&text, &spatial, &reference.locator, &hours, &query)?;
            micros.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(page);
        }
        Ok(percentiles(micros))
    };
    let (a50, a99) = time(&|lon, lat| SearchParams {
        near: Some(format!("{lon},{lat}")),
        typology: Some("pharmacie".into()),
        limit: Some(10),
        ..SearchParams::default()
    })?;
    let (b50, b99) = time(&|lon, lat| SearchParams {
        near: Some(format!("{lon},{lat}")),
        radius: Some(5_000.0),
        limit: Some(100),
        ..SearchParams::default()
    })?;
    let (c50, c99) = time(&|lon, lat| SearchParams {
        q: Some("pharmacie".into()),
        near: Some(format!("{lon},{lat}")),
        radius: Some(5_000.0),
        ..SearchParams::default()
    })?;
    let (d50, d99) = time(&|_, _| SearchParams {
        q: Some("piscine municipale".into()),
        ..SearchParams::default()
    })?;
    Ok(format!(
        "search over {} entries ({queries} queries each):\n  spatial index build from the database {build_s:.2} s, ~{per_entry:.0} bytes resident per entry; text index build {text_build_s:.1} s\n  (a) 10 nearest of one typology: p50 {a50:.1} µs, p99 {a99:.1} µs\n  (b) everything within 5 km (first page of 100, total counted): p50 {b50:.1} µs, p99 {b99:.1} µs\n  (c) « pharmacie » within 5 km: p50 {c50:.1} µs, p99 {c99:.1} µs\n  (d) « piscine municipale » alone: p50 {d50:.1} µs, p99 {d99:.1} µs",
        spatial.len()
    ))
}
