//! `proximites bench live`: the live indexes on a large directory, as an operator meets them —
//! single PATCHes over HTTP under a search load, many clients confirming entries at once,
//! command-line imports while the server runs, and a full text index build.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::{percentiles, resident_bytes};
use crate::{boot, db};

/// What `bench live` runs.
pub struct LiveBench {
    /// The database, filled beforehand (`benches/search.sh` makes one of three million entries).
    pub database: PathBuf,
    /// Sequential single-entry PATCHes timed under the search load.
    pub patches: usize,
    /// Concurrent clients confirming entries, and how many confirmations in all.
    pub confirm_clients: usize,
    pub confirms: usize,
    /// Concurrent clients of the search load, and seconds of search load without writes.
    pub search_clients: usize,
    pub baseline_seconds: u64,
    /// Sizes of the command-line imports run while the server serves.
    pub imports: Vec<u64>,
    /// Also time a full text index build into a scratch directory.
    pub text_build: bool,
}

/// The search load's phases: latencies are kept by phase.
const WARMING: u8 = 0;
const BASELINE: u8 = 1;
const WRITING: u8 = 2;
const STOPPED: u8 = 3;

fn milliseconds(micros: &[f64]) -> String {
    if micros.is_empty() {
        return "none".into();
    }
    let (p50, p99) = percentiles(micros.to_vec());
    format!(
        "p50 {:.2} ms, p99 {:.2} ms ({} requests)",
        p50 / 1e3,
        p99 / 1e3,
        micros.len()
    )
}

pub async fn live(bench: LiveBench) -> anyhow::Result<String> {
    let url = bench.database.to_str().unwrap_or("bench.db").to_owned();
    let pool = db::connect_with(&url, db::Checkpoints::Background).await?;
    let store = crate::db::Store::Sqlite(pool.clone());
    let reference = boot::prepare(&store, false).await?;
    let entries = crate::services::store::published_count(&store).await?;
    anyhow::ensure!(
        entries > 0,
        "{url} holds no entry: fill it first (benches/search.sh)"
    );
    let mut report = vec![format!("bench live on {url}: {entries} published entries")];

    let text_dir = db::text_index_dir(&url);
    let started = Instant::now();
    let state = crate::state::AppState::build(store.clone(), reference.clone(), &text_dir).await?;
    state.live.set_cache_staleness(Duration::from_secs(30));
    report.push(format!(
        "server state ready in {:.1} s (indexes caught up with the change log)",
        started.elapsed().as_secs_f64()
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = crate::app::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    tokio::spawn(crate::search::live::follow(
        state.live.clone(),
        store.clone(),
    ));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let (_, token) = crate::accounts::store::create_operator_token(
        &store,
        &format!("bench live {}", crate::services::ServiceId::generate()),
    )
    .await?;

    let wanted = (bench.patches + bench.confirms).min(entries as usize);
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM services WHERE status = 'published' ORDER BY random() LIMIT $1",
    )
    .bind(wanted as i64)
    .fetch_all(&pool)
    .await?;

    // The search load: the 10 nearest pharmacies at a random point of metropolitan France,
    // query (a) of the search benchmark, from several clients at once.
    let phase = Arc::new(AtomicU8::new(WARMING));
    let latencies: Arc<Mutex<[Vec<f64>; 3]>> = Arc::default();
    let mut load = Vec::new();
    for client_number in 0..bench.search_clients {
        let (client, base, phase, latencies) = (
            client.clone(),
            base.clone(),
            phase.clone(),
            latencies.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(client_number as u64);
            loop {
                let now = phase.load(Ordering::Relaxed);
                if now == STOPPED {
                    break;
                }
                let lon = -1.5 + rng.gen::<f64>() * 9.0;
                let lat = 43.5 + rng.gen::<f64>() * 6.0;
                let started = Instant::now();
                let answered = client
                    .get(format!(
                        "{base}/api/v1/services?near={lon:.4},{lat:.4}&typology=pharmacie&limit=10"
                    ))
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status);
                if let Ok(response) = answered {
                    let _ = response.bytes().await;
                    let micros = started.elapsed().as_secs_f64() * 1e6;
                    if let Ok(mut kept) = latencies.lock() {
                        kept[usize::from(now)].push(micros);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase.store(BASELINE, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(bench.baseline_seconds)).await;
    phase.store(WRITING, Ordering::Relaxed);

    // Single PATCHes, one after the other, each of a description (the GET of its ETag is not
    // timed).
    let mut patch_micros = Vec::with_capacity(bench.patches);
    for (n, id) in ids.iter().take(bench.patches).enumerate() {
        let read = client
            .get(format!("{base}/api/v1/services/{id}"))
            .send()
            .await?
            .error_for_status()?;
        let etag = read
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("*")
            .to_owned();
        let started = Instant::now();
        client
            .patch(format!("{base}/api/v1/services/{id}"))
            .bearer_auth(&token)
            .header("if-match", etag)
            .json(&serde_json::json!({"description": format!("Description revue par le banc, passage {n}")}))
            .send()
            .await?
            .error_for_status()?;
        patch_micros.push(started.elapsed().as_secs_f64() * 1e6);
    }
    phase.store(STOPPED, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    let searched = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    report.push(format!(
        "search (a) over HTTP, {} clients, without writes: {}",
        bench.search_clients,
        milliseconds(&searched[usize::from(BASELINE)])
    ));
    report.push(format!(
        "search (a) over HTTP, {} clients, during the PATCHes: {}",
        bench.search_clients,
        milliseconds(&searched[usize::from(WRITING)])
    ));
    report.push(format!(
        "single-entry PATCH over HTTP under that search load: {}",
        milliseconds(&patch_micros)
    ));

    // « Rien n'a changé » from many clients at once, each on entries of its own.
    let confirm_ids: Arc<Vec<String>> = Arc::new(ids.iter().skip(bench.patches).cloned().collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..bench.confirm_clients {
        let (client, base, token, ids, next, failed) = (
            client.clone(),
            base.clone(),
            token.clone(),
            confirm_ids.clone(),
            next.clone(),
            failed.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut micros = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(n) else { break };
                let started = Instant::now();
                let answered = client
                    .post(format!("{base}/api/v1/services/{id}/confirm"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status);
                if answered.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                micros.push(started.elapsed().as_secs_f64() * 1e6);
            }
            micros
        }));
    }
    let mut confirm_micros = Vec::new();
    for task in clients {
        confirm_micros.extend(task.await?);
    }
    let seconds = started.elapsed().as_secs_f64();
    report.push(format!(
        "confirmations, {} clients: {} in {seconds:.1} s, {:.0} writes/s, {}{}",
        bench.confirm_clients,
        confirm_micros.len(),
        confirm_micros.len() as f64 / seconds,
        milliseconds(&confirm_micros),
        if failed.load(Ordering::Relaxed) {
            " (some failed)"
        } else {
            ""
        }
    ));

    // Command-line imports while the server runs: the command's time, then until the server's
    // indexes show every row, and the server's memory.
    let scratch = tempfile::tempdir()?;
    let communes: Vec<_> = reference
        .locator
        .communes()
        .filter(|c| c.departement_code == "63")
        .cloned()
        .collect();
    for (n, &rows) in bench.imports.iter().enumerate() {
        let file = scratch.path().join(format!("import-{rows}.csv"));
        let mut csv = Vec::new();
        crate::synth::write(
            &mut csv,
            &reference.taxonomy,
            &communes,
            rows,
            1_000 + n as u64,
        )?;
        std::fs::write(&file, csv)?;
        let rss_before = resident_bytes();
        let source = format!(
            "Banc import {rows} {}",
            crate::services::ServiceId::generate()
        );
        let started = Instant::now();
        let output = tokio::process::Command::new(std::env::current_exe()?)
            .args(["--database-url", &url, "import"])
            .arg(&file)
            .args(["--source", &source])
            .output()
            .await?;
        let command_s = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            output.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let head = db::log_head(&store).await?;
        let ended = Instant::now();
        let mut peak = resident_bytes();
        loop {
            let positions = state.live.positions();
            peak = peak.max(resident_bytes());
            if positions.spatial >= head && positions.text >= head {
                break;
            }
            anyhow::ensure!(
                ended.elapsed() < Duration::from_secs(600),
                "the server did not apply the import in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let searchable_s = ended.elapsed().as_secs_f64();
        report.push(format!(
            "import of {rows} rows while serving: command {command_s:.2} s, searchable {searchable_s:.2} s after it ended ({:.2} s in all); server anonymous RSS {:.0} → peak {:.0} MiB (+{:.1} %)",
            command_s + searchable_s,
            rss_before as f64 / 1048576.0,
            peak as f64 / 1048576.0,
            (peak as f64 / rss_before.max(1) as f64 - 1.0) * 100.0
        ));
    }

    if bench.text_build {
        let dir = scratch.path().join("text");
        let owned = dir.clone();
        let taxonomy = reference.taxonomy.clone();
        let text = tokio::task::spawn_blocking(move || {
            crate::search::text::TextIndex::open_or_create(&owned, &taxonomy)
        })
        .await??;
        let started = Instant::now();
        text.sync_from_db(&store, &reference).await?;
        report.push(format!(
            "full text index build: {} entries in {:.1} s",
            text.doc_count(),
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(report.join("\n"))
}
