//! The `bench` subcommand: reproducible speed measurements on generated data, as the README reports.

pub mod live;

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::import::{self, ImportOptions, Input};
use crate::{boot, db, synth};

/// Generates `rows` entries, imports them into a new SQLite file and reports the rate. The timed
/// part is the import alone, from reading the file to the committed, checkpointed database.
pub async fn import(rows: u64, seed: u64) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("entries.csv");
    generate(&file, rows, seed).await?;
    let size_mb = std::fs::metadata(&file)?.len() as f64 / 1e6;
    let database = dir.path().join("bench.db");
    let pool = db::connect(database.to_str().unwrap_or("bench.db")).await?;
    let store = crate::db::Store::Sqlite(pool.clone());
    let reference = boot::prepare(&store, false).await?;

    let started = Instant::now();
    import_all(&store, &reference, file, rows).await?;
    pool.close().await;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(format!(
        "import: {rows} rows ({size_mb:.0} MB) in {elapsed:.2} s = {:.0} rows/s (seed {seed})",
        rows as f64 / elapsed
    ))
}

/// Writes `rows` generated entries (from `seed`) to `file`, off the async threads.
async fn generate(file: &std::path::Path, rows: u64, seed: u64) -> anyhow::Result<()> {
    let path = file.to_owned();
    tokio::task::spawn_blocking(move || synth::write_file(&path, rows, seed)).await??;
    Ok(())
}

/// Imports `file`, which must create exactly `rows` entries.
async fn import_all(
    store: &db::Store,
    reference: &import::Reference,
    file: PathBuf,
    rows: u64,
) -> anyhow::Result<()> {
    let report = import::import(
        store,
        reference,
        Input::File(file),
        ImportOptions::default(),
    )
    .await?;
    anyhow::ensure!(
        report.committed && report.created == rows,
        "import incomplete: {}",
        report.summary()
    );
    Ok(())
}

/// The database at `database` (a SQLite file, or a `postgres://` URL; a new SQLite file in
/// `dir` when none) holding `rows` generated entries: reused when it holds them already, filled
/// from `csv` or from entries generated with `seed` when it is empty, refused when it holds
/// another count. Also gives its address.
async fn generated_database(
    dir: &std::path::Path,
    database: Option<PathBuf>,
    rows: u64,
    seed: u64,
    csv: Option<PathBuf>,
) -> anyhow::Result<(db::Store, import::Reference, String)> {
    let database = database.unwrap_or_else(|| dir.join("bench.db"));
    let url = database.to_str().unwrap_or("bench.db").to_owned();
    let store = crate::db::Store::connect(&url).await?;
    let reference = boot::prepare(&store, false).await?;
    let published = crate::services::store::published_count(&store).await?;
    if published != rows {
        anyhow::ensure!(
            published == 0,
            "{} holds {published} entries, not {rows}: give another --database",
            database.display(),
        );
        let file = match csv {
            Some(file) => file,
            None => {
                let file = dir.join("entries.csv");
                generate(&file, rows, seed).await?;
                file
            }
        };
        import_all(&store, &reference, file, rows).await?;
        db::checkpoint(&store).await?;
    }
    Ok((store, reference, url))
}

/// The process's anonymous resident memory: what it owns, without the pages of the database file
/// SQLite maps (the OS page cache, shared and given back under pressure).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn percentiles(mut micros: Vec<f64>) -> (f64, f64) {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

/// What `bench search` runs on and where it reports.
#[derive(Debug, Clone, Default)]
pub struct SearchBench {
    pub rows: u64,
    pub seed: u64,
    pub queries: usize,
    /// Keep the database here, and reuse it when it already holds `rows` published entries.
    pub database: Option<PathBuf>,
    /// Import this file (from `proximites synth`) instead of generating one.
    pub csv: Option<PathBuf>,
    /// Also write the figures here as JSON.
    pub json: Option<PathBuf>,
}

/// Latency percentiles of one query, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
}

/// The figures of `bench search`.
#[derive(Debug, Clone, Serialize)]
pub struct SearchFigures {
    pub rows: usize,
    pub queries: usize,
    pub seed: u64,
    /// Spatial index from the database, ready to answer, seconds.
    pub build_s: f64,
    /// Then its tree of all entries, built while the server already answers, seconds.
    pub complete_s: f64,
    /// Resident memory the spatial index added, per entry.
    pub bytes_per_entry: f64,
    /// Text index rebuild from the database, seconds (0 when the persisted one was current).
    pub text_build_s: f64,
    /// (a) the 10 nearest of one typology.
    pub a: Latency,
    /// (b) everything within 5 km, first page of 100 and total.
    pub b: Latency,
    /// (c) words within 5 km.
    pub c: Latency,
    /// (d) words alone.
    pub d: Latency,
}

/// Builds (or reuses) a database of `rows` generated entries, builds the search indexes from
/// it, then times in-process queries at random points of metropolitan France: (a) the 10
/// nearest of one typology, (b) everything within 5 km, (c) words within 5 km, (d) words alone.
pub async fn search(bench: SearchBench) -> anyhow::Result<SearchFigures> {
    use rand::{Rng, SeedableRng};

    use crate::search::engine::SearchParams;
    use crate::search::hours::HoursEvaluator;

    let dir = tempfile::tempdir()?;
    let (store, reference, url) = generated_database(
        dir.path(),
        bench.database.clone(),
        bench.rows,
        bench.seed,
        bench.csv.clone(),
    )
    .await?;

    let before = resident_bytes();
    let started = Instant::now();
    let spatial = crate::search::spatial::load(&store).await?;
    let build_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let spatial = tokio::task::spawn_blocking(move || {
        spatial.complete();
        spatial
    })
    .await?;
    let complete_s = started.elapsed().as_secs_f64();
    let bytes_per_entry =
        resident_bytes().saturating_sub(before) as f64 / spatial.len().max(1) as f64;

    let text_dir = db::derived_paths(&url, None).0;
    let started = Instant::now();
    let owned = text_dir.clone();
    let taxonomy = reference.taxonomy.clone();
    let text = tokio::task::spawn_blocking(move || {
        crate::search::text::TextIndex::open_or_create(&owned, &taxonomy)
    })
    .await??;
    // Reused while it is at the log's head with every entry; built (and timed) otherwise.
    let head = db::log_head(&store).await?;
    let rebuilt = text.position() != Some(head) || text.doc_count() != spatial.len() as u64;
    if rebuilt {
        text.sync_from_db(&store, &reference).await?;
    }
    let text_build_s = if rebuilt {
        started.elapsed().as_secs_f64()
    } else {
        0.0
    };

    let hours = HoursEvaluator::default();
    let now = crate::search::hours::paris_now();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(bench.seed);
    let queries = bench.queries;
    let mut time = |params: &dyn Fn(f64, f64) -> SearchParams| -> anyhow::Result<Latency> {
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
        let (p50_us, p99_us) = percentiles(micros);
        Ok(Latency { p50_us, p99_us })
    };
    let a = time(&|lon, lat| SearchParams {
        near: Some(format!("{lon},{lat}")),
        typology: Some("pharmacie".into()),
        limit: Some(10),
        ..SearchParams::default()
    })?;
    let b = time(&|lon, lat| SearchParams {
        near: Some(format!("{lon},{lat}")),
        radius: Some(5_000.0),
        limit: Some(100),
        ..SearchParams::default()
    })?;
    let c = time(&|lon, lat| SearchParams {
        q: Some("pharmacie".into()),
        near: Some(format!("{lon},{lat}")),
        radius: Some(5_000.0),
        ..SearchParams::default()
    })?;
    let d = time(&|_, _| SearchParams {
        q: Some("piscine municipale".into()),
        ..SearchParams::default()
    })?;
    let figures = SearchFigures {
        rows: spatial.len(),
        queries,
        seed: bench.seed,
        build_s,
        complete_s,
        bytes_per_entry,
        text_build_s,
        a,
        b,
        c,
        d,
    };
    if let Some(path) = &bench.json {
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)?;
    }
    Ok(figures)
}

impl std::fmt::Display for SearchFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = |l: &Latency| format!("p50 {:.1} µs, p99 {:.1} µs", l.p50_us, l.p99_us);
        writeln!(
            f,
            "search over {} entries ({} queries each, seed {}):",
            self.rows, self.queries, self.seed
        )?;
        writeln!(
            f,
            "  spatial index build from the database {:.2} s (then {:.2} s more in the background for the all-entries tree), ~{:.0} bytes resident per entry; text index build {}",
            self.build_s,
            self.complete_s,
            self.bytes_per_entry,
            if self.text_build_s > 0.0 {
                format!("{:.1} s", self.text_build_s)
            } else {
                "reused (persisted)".to_owned()
            }
        )?;
        writeln!(f, "  (a) 10 nearest of one typology: {}", line(&self.a))?;
        writeln!(
            f,
            "  (b) everything within 5 km (first page of 100, total counted): {}",
            line(&self.b)
        )?;
        writeln!(f, "  (c) « pharmacie » within 5 km: {}", line(&self.c))?;
        write!(f, "  (d) « piscine municipale » alone: {}", line(&self.d))
    }
}

/// Times coverage on the database at `url` (its entries as they are; the database is only
/// read, besides the schema and taxonomy sync every command does): all of France, every
/// commune × every typology, from a cold cache; one département alone (no comparisons), cold;
/// the same département with its comparisons once France is cached. Every run is reported.
pub async fn coverage(url: &str, departement: &str, runs: usize) -> anyhow::Result<String> {
    use std::sync::Arc;

    use crate::coverage::{Area, Coverage, Request, DEFAULT_THRESHOLDS_M};
    use crate::search::engine::{SearchIndex, Territory};

    let pool = db::connect(url).await?;

    let store = crate::db::Store::Sqlite(pool.clone());
    let reference = boot::prepare(&store, false).await?;
    let position = db::log_head(&store).await?;
    let started = Instant::now();
    let spatial = crate::search::spatial::load(&store).await?;
    let load_s = started.elapsed().as_secs_f64();
    let entries = spatial.len();
    let index = Arc::new(SearchIndex {
        spatial,
        version: Some(position.to_string()),
        position,
    });
    let typologies: Vec<String> = reference
        .taxonomy
        .typologies
        .iter()
        .map(|t| t.code.clone())
        .collect();
    let request = |area: Area, compare: bool| Request {
        area,
        typologies: typologies.clone(),
        themes: Vec::new(),
        thresholds_m: DEFAULT_THRESHOLDS_M.to_vec(),
        gap_threshold_m: DEFAULT_THRESHOLDS_M[2],
        compare,
    };
    let departement_area = Area::Territory(Territory::Departement(departement.to_owned()));
    let france = request(Area::France, true);
    let alone = request(departement_area.clone(), false);
    let compared = request(departement_area, true);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let departement = departement.to_owned();
    let lines = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut france_s = Vec::new();
        let mut alone_ms = Vec::new();
        let mut warm_ms = Vec::new();
        let mut communes = (0, 0);
        let mut frame_ms = Vec::new();
        let seconds = |started: Instant| started.elapsed().as_secs_f64();
        let fail = |e: crate::error::Error| anyhow::anyhow!("{e}");
        for _ in 0..runs.max(1) {
            let cold = Coverage::default();
            let t = Instant::now();
            let report = cold
                .report(&index, &reference.locator, &reference.taxonomy, &france)
                .map_err(fail)?;
            france_s.push(seconds(t));
            communes.0 = report.territory.communes;
            drop(report);
            let fresh = Coverage::default();
            let t = Instant::now();
            fresh.frame(&index, &reference.locator);
            frame_ms.push(seconds(t) * 1e3);
            let t = Instant::now();
            let report = Coverage::default()
                .report(&index, &reference.locator, &reference.taxonomy, &alone)
                .map_err(fail)?;
            alone_ms.push(seconds(t) * 1e3);
            communes.1 = report.territory.communes;
            let t = Instant::now();
            let report = cold
                .report(&index, &reference.locator, &reference.taxonomy, &compared)
                .map_err(fail)?;
            warm_ms.push(seconds(t) * 1e3);
            std::hint::black_box(report);
        }
        let list = |values: &[f64], unit: &str| {
            values
                .iter()
                .map(|v| format!("{v:.2} {unit}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Ok(vec![
            format!(
                "coverage over {entries} entries ({} typologies, {workers} threads; spatial index loaded in {load_s:.1} s):",
                typologies.len()
            ),
            format!(
                "  reference points of every commune (town halls), once per data version: {}",
                list(&frame_ms, "ms")
            ),
            format!(
                "  France, {} communes × every typology, cold: {}",
                communes.0,
                list(&france_s, "s")
            ),
            format!(
                "  département {departement} alone ({} communes × every typology), cold: {}",
                communes.1,
                list(&alone_ms, "ms")
            ),
            format!(
                "  département {departement} with département, région and France comparisons, France cached: {}",
                list(&warm_ms, "ms")
            ),
        ])
    })
    .await??;
    Ok(lines.join("\n"))
}

/// What `bench directory` times.
pub struct DirectoryBench {
    pub database_url: String,
    pub within: String,
    pub typologies: Vec<String>,
    pub format: String,
    pub runs: usize,
    pub demo: bool,
    pub output: Option<PathBuf>,
}

/// Times printed directories on an existing database: each run selects the entries (SQL),
/// composes the guide (hours, QR codes, indexes), lays it out with Typst and writes the PDF,
/// as `proximites directory` does; reports each run, the pages, and the peak memory.
pub async fn directory(bench: DirectoryBench) -> anyhow::Result<String> {
    use crate::directory::{self, jobs, Choices, RawChoices};

    let pool = db::connect(&bench.database_url).await?;

    let store = crate::db::Store::Sqlite(pool.clone());
    let reference = boot::prepare(&store, bench.demo).await?;
    let public_url = directory::public_url(None).map_err(anyhow::Error::msg)?;
    let raw = RawChoices {
        territory: bench.within.clone(),
        typologies: bench.typologies.clone(),
        format: Some(bench.format.clone()),
        date: Some("2026-11-24".into()),
        ..RawChoices::default()
    };
    let today = crate::search::hours::paris_now().date_naive();
    let choices = Choices::parse(&raw, None, &reference.taxonomy, &reference.locator, today)
        .map_err(|e| anyhow::anyhow!(crate::error::Problem::from(&e).detail))?;
    let hours = std::sync::Arc::new(crate::search::hours::HoursEvaluator::new());
    let mut lines = Vec::new();
    for run in 1..=bench.runs.max(1) {
        let started = Instant::now();
        let prepared = jobs::prepare(
            &store,
            &reference,
            hours.clone(),
            choices.clone(),
            &public_url,
            format!("bench-{run}"),
        )
        .await
        .map_err(|e| anyhow::anyhow!(crate::error::Problem::from(&e).detail))?;
        let selected_s = started.elapsed().as_secs_f64();
        let output = tokio::task::spawn_blocking(move || jobs::render(&prepared, &|_, _| {}))
            .await?
            .map_err(|e| anyhow::anyhow!(crate::error::Problem::from(&e).detail))?;
        let total_s = started.elapsed().as_secs_f64();
        lines.push(format!(
            "run {run}: {} entries, {} pages, {:.1} MB PDF — selection {selected_s:.2} s, total {total_s:.2} s",
            output.entries,
            output.pages,
            output.pdf.len() as f64 / 1e6
        ));
        if let Some(path) = &bench.output {
            directory::write_atomically(path, &output.pdf)?;
        }
    }
    let peak_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    lines.push(format!(
        "directory {} {:?} ({}): peak resident memory (VmHWM, mapped database included) {} MiB",
        bench.within,
        bench.typologies,
        bench.format,
        peak_kb / 1024
    ));
    Ok(lines.join("\n"))
}

/// What `bench export` measures.
pub struct ExportBench {
    pub rows: usize,
    pub seed: u64,
    /// Keep (and reuse) the database here.
    pub database: Option<PathBuf>,
    /// Features GDAL reads to the end through the OGC API.
    pub gdal_features: u64,
    /// Timed repetitions of each page request.
    pub runs: usize,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Builds (or reuses) a database of `rows` generated entries, serves it on a loopback port, and
/// times: the GeoPackage with R-tree of every entry (in process, WGS84 and Lambert-93), the full
/// GeoJSON download over HTTP (cold: built and cached; warm: streamed from the cache), an OGC
/// items page first and deep in the collection, and GDAL's `ogr2ogr` reading features through
/// the OGC API to the end.
pub async fn export(bench: ExportBench) -> anyhow::Result<String> {
    use crate::export::crs::Crs;
    use crate::export::formats::{self, About, Format};
    use crate::export::{store, Licence, Selection};

    let dir = tempfile::tempdir()?;
    let (store, reference, url) = generated_database(
        dir.path(),
        bench.database.clone(),
        bench.rows as u64,
        bench.seed,
        None,
    )
    .await?;
    let mut report = vec![format!(
        "export bench: {} entries (seed {}), {} cores",
        bench.rows,
        bench.seed,
        std::thread::available_parallelism().map_or(1, usize::from)
    )];

    for crs in [Crs::Crs84, Crs::Lambert93] {
        let path = dir.path().join(format!("bench-{}.gpkg", crs.epsg()));
        let started = Instant::now();
        let (owned_reference, target) = (reference.clone(), path.clone());
        let count = store::with_connection(&store, move |handle| {
            let lookup = store::lookup(handle, &owned_reference)?;
            let about = About {
                title: "bench".into(),
                licence: Licence::default(),
                sources: store::publishing_sources(handle)?,
                generated: chrono::Utc::now(),
            };
            formats::write_file(
                handle,
                &lookup,
                &Selection::default(),
                &about,
                Format::GeoPackage,
                crs,
                &target,
            )
        })
        .await?;
        report.push(format!(
            "GeoPackage with R-tree, EPSG:{}: {count} features in {:.2} s ({:.0} MB)",
            crs.epsg(),
            started.elapsed().as_secs_f64(),
            std::fs::metadata(&path)?.len() as f64 / 1e6
        ));
        std::fs::remove_file(&path)?;
    }

    let text_dir = db::text_index_dir(&url);
    let started = Instant::now();
    let state = crate::state::AppState::build(store.clone(), reference.clone(), &text_dir).await?;
    report.push(format!(
        "server state (search and text indexes) ready in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = crate::app::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();

    // The full GeoJSON: the first request builds the cached file, the next ones stream it.
    let download = |url: String| {
        let client = client.clone();
        async move {
            let started = Instant::now();
            let mut response = client.get(&url).send().await?.error_for_status()?;
            let mut bytes = 0usize;
            while let Some(chunk) = response.chunk().await? {
                bytes += chunk.len();
            }
            anyhow::Ok((bytes, started.elapsed().as_secs_f64()))
        }
    };
    let geojson = format!("{base}/api/v1/export/services.geojson");
    let (bytes, cold) = download(geojson.clone()).await?;
    let mut rates = Vec::new();
    for _ in 0..bench.runs.max(1) {
        let (_, seconds) = download(geojson.clone()).await?;
        rates.push(bytes as f64 / 1e6 / seconds);
    }
    report.push(format!(
        "full GeoJSON over HTTP: {:.0} MB; first request (file built) {cold:.2} s; then median {:.0} MB/s (runs: {})",
        bytes as f64 / 1e6,
        median(rates.clone()),
        rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
    ));

    // OGC pages: the first, and one deep in the collection (keyset cursor: same cost).
    let deep_at = (bench.rows * 9 / 10).saturating_sub(1);
    let (deep_cursor,): (String,) = crate::on_engine!(&store, |pool| {
        sqlx::query_as(
            "SELECT id FROM services WHERE status = 'published' ORDER BY id LIMIT 1 OFFSET $1",
        )
        .bind(i64::try_from(deep_at)?)
        .fetch_one(pool)
        .await?
    });
    let page = |cursor: Option<&str>| {
        let url = match cursor {
            Some(c) => format!("{base}/ogc/collections/services/items?limit=1000&cursor={c}"),
            None => format!("{base}/ogc/collections/services/items?limit=1000"),
        };
        download(url)
    };
    let (_, cold_first) = page(None).await?;
    let mut first = Vec::new();
    let mut deep = Vec::new();
    for _ in 0..bench.runs.max(1) {
        first.push(page(None).await?.1 * 1e3);
        deep.push(page(Some(&deep_cursor)).await?.1 * 1e3);
    }
    let (first, deep) = (median(first), median(deep));
    report.push(format!(
        "OGC items, 1,000 features a page: first page {first:.0} ms, page at entry {deep_at} {deep:.0} ms (ratio {:.2}); first request of all (exact count made) {:.0} ms",
        deep / first,
        cold_first * 1e3
    ));

    // GDAL reading through the OGC API to the end (or to `gdal_features`).
    let gdal = bench.gdal_features.min(bench.rows as u64).to_string();
    let endpoint = format!("OAPIF:{base}/ogc");
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("ogr2ogr")
            // Into GDAL's memory driver: reading is measured, not writing a file.
            .args(["-f", "Memory", "read", &endpoint, "services"])
            .args(["-oo", "PAGE_SIZE=10000", "-limit", &gdal])
            .stdout(std::process::Stdio::null())
            .status()
    })
    .await??;
    anyhow::ensure!(status.success(), "ogr2ogr failed");
    report.push(format!(
        "GDAL ogr2ogr reading {} features through the OGC API (pages of 10,000): {:.2} s",
        bench.gdal_features.min(bench.rows as u64),
        started.elapsed().as_secs_f64()
    ));
    Ok(report.join("\n"))
}

/// Times the campaign pages' queries on `rows` generated entries shared by `organisations`
/// organisations: the operator's progress (every organisation), one organisation's, and a
/// contributor's list filtered on « à revoir » (its first 200 and the count). A tenth of the
/// entries is confirmed and a twentieth updated by a person during the campaign.
pub async fn campaign(rows: u64, seed: u64, organisations: u64) -> anyhow::Result<String> {
    use crate::accounts::store::{create_organisation, NewOrganisation};
    use crate::accounts::{Area, Territory};
    use crate::espace::campaigns;
    use crate::services::store::{list, ListFilter};

    let dir = tempfile::tempdir()?;
    let database = dir.path().join("bench.db");
    let pool = db::connect(database.to_str().unwrap_or("bench.db")).await?;
    let store = crate::db::Store::Sqlite(pool.clone());
    let reference = boot::prepare(&store, false).await?;
    let organisations = organisations.max(1);
    let per = rows / organisations;
    let mut first = None;
    for i in 0..organisations {
        let name = format!("Organisation {i}");
        let organisation = create_organisation(
            &store,
            &NewOrganisation {
                name: name.clone(),
                kind: "other".into(),
                territory: Territory(vec![
                    Area::parse("departement:63").map_err(anyhow::Error::msg)?
                ]),
                ..NewOrganisation::default()
            },
        )
        .await?;
        first.get_or_insert(organisation.id);
        let file = dir.path().join(format!("org-{i}.csv"));
        generate(&file, per, seed + i).await?;
        let report = import::import(
            &store,
            &reference,
            Input::File(file.clone()),
            ImportOptions {
                source: Some(name),
                ..ImportOptions::default()
            },
        )
        .await?;
        anyhow::ensure!(report.committed, "import incomplete: {}", report.summary());
        std::fs::remove_file(file)?;
    }
    let today = chrono::Utc::now().date_naive();
    let campaign = campaigns::create(
        &store,
        "Bench",
        &(today - chrono::Days::new(10)).to_string(),
        &(today + chrono::Days::new(20)).to_string(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The imports were made before the campaign, as a directory's first load is.
    sqlx::query("UPDATE service_history SET at = $1")
        .bind(chrono::Utc::now() - chrono::Duration::days(200))
        .execute(&pool)
        .await?;
    let now = chrono::Utc::now();
    sqlx::query("UPDATE services SET verified_at = $1 WHERE rowid % 10 = 0")
        .bind(now)
        .execute(&pool)
        .await?;
    sqlx::query(
        "INSERT INTO service_history (service_id, id, at, actor_kind, actor_id, via, action, changes)
         SELECT id, 'bench' || id, $1, 'user', 'usr-bench', 'page', 'updated', '{}'
         FROM services WHERE rowid % 20 = 1",
    )
    .bind(now)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE").execute(&pool).await?;
    let first = first.unwrap_or_default();
    let mut lines = vec![format!(
        "campaign: {} entries, {organisations} organisations (seed {seed})",
        per * organisations
    )];
    let ms = |started: Instant| started.elapsed().as_secs_f64() * 1e3;
    for run in 1..=3 {
        let started = Instant::now();
        let all = campaigns::progress(&store, &campaign, None).await?;
        let every = ms(started);
        let started = Instant::now();
        let one = campaigns::progress(&store, &campaign, Some(&first)).await?;
        let own = ms(started);
        let started = Instant::now();
        let (listed, total) = list(
            &store,
            &ListFilter {
                organisation: Some(first.clone()),
                review: Some(campaign.window()),
                review_state: Some("to_review".into()),
                ..ListFilter::default()
            },
            now - chrono::Duration::days(183),
            200,
        )
        .await?;
        let listing = ms(started);
        let reviewed: i64 = all.iter().map(|p| p.reviewed).sum();
        let updated: i64 = one.iter().map(|p| p.updated).sum();
        lines.push(format!(
            "run {run}: progress of every organisation {every:.0} ms ({reviewed} reviewed) · of one {own:.0} ms ({updated} updated) · its list « à revoir » {listing:.0} ms ({} shown of {total})",
            listed.len()
        ));
    }
    pool.close().await;
    Ok(lines.join("\n"))
}
