//! The live indexes (issue 14): every write reaches the spatial and text indexes through the
//! change log. A property test drives random writes through the real write path and compares
//! the indexes with a brute-force reading of the database; other tests prune the log under an
//! index, and run a server beside command-line writers and a killed process.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use proximites::accounts::{Actor, ActorKind, Role};
use proximites::search::live;
use proximites::services::history::Via;
use proximites::services::write::{self, NewEntry};
use proximites::services::ServiceId;
use proximites::spatial::LonLat;
use serde_json::{json, Map, Value};

use common::binary::{self, command, database_url, spawn_server, spawn_server_with};
use common::Fixture;

/// Words of the entries' names: four letters (no typo matching), no common prefix, found in
/// no typology, commune or other label.
const WORDS: [&str; 6] = ["zork", "bliq", "vexu", "kulp", "dwyn", "fopj"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        organisation: usize,
        typology: usize,
        commune: usize,
        word: usize,
    },
    Rename {
        entry: usize,
        word: usize,
    },
    Move {
        entry: usize,
        commune: usize,
    },
    Retype {
        entry: usize,
        typology: usize,
    },
    Withdraw {
        entry: usize,
    },
    Restore {
        entry: usize,
    },
    WithdrawOrganisation {
        organisation: usize,
    },
    UndoOrganisation {
        organisation: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..4usize, 0..6usize, 0..WORDS.len()).prop_map(
            |(organisation, typology, commune, word)| Op::Create { organisation, typology, commune, word }
        ),
        2 => (any::<usize>(), 0..WORDS.len()).prop_map(|(entry, word)| Op::Rename { entry, word }),
        2 => (any::<usize>(), 0..6usize).prop_map(|(entry, commune)| Op::Move { entry, commune }),
        1 => (any::<usize>(), 0..4usize).prop_map(|(entry, typology)| Op::Retype { entry, typology }),
        1 => any::<usize>().prop_map(|entry| Op::Withdraw { entry }),
        1 => any::<usize>().prop_map(|entry| Op::Restore { entry }),
        1 => (0..2usize).prop_map(|organisation| Op::WithdrawOrganisation { organisation }),
        1 => (0..2usize).prop_map(|organisation| Op::UndoOrganisation { organisation }),
    ]
}

/// The world the operations act on: the server's state, two organisations, a few communes and
/// typologies, and the entries created so far.
struct World {
    fixture: Fixture,
    operator: Actor,
    organisations: Vec<String>,
    /// Withdrawal operations not undone yet, by organisation.
    withdrawals: Vec<Option<String>>,
    communes: Vec<LonLat>,
    typologies: Vec<String>,
    entries: Vec<ServiceId>,
}

fn fields(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

impl World {
    async fn new() -> World {
        let (dir, store, reference) = common::database(false).await;
        let mut organisations = Vec::new();
        for name in ["Commune de Zork", "Commune de Bliq"] {
            let organisation =
                common::accounts::organisation(&store, name, "commune", "departement:63").await;
            organisations.push(organisation.id);
        }
        let communes: Vec<LonLat> = reference
            .locator
            .communes()
            .filter(|c| c.departement_code == "63")
            .take(6)
            .map(|c| c.centroid)
            .collect();
        let typologies = ["mairie", "piscine", "pharmacie", "mediatheque"]
            .map(str::to_owned)
            .to_vec();
        let fixture = Fixture::serve(dir, store, reference).await;
        World {
            fixture,
            operator: Actor {
                kind: ActorKind::User {
                    id: "operator".into(),
                    email: "region@example.fr".into(),
                },
                role: Role::Operator,
                organisation: None,
            },
            withdrawals: vec![None; organisations.len()],
            organisations,
            communes,
            typologies,
            entries: Vec::new(),
        }
    }

    fn entry(&self, n: usize) -> Option<String> {
        (!self.entries.is_empty()).then(|| self.entries[n % self.entries.len()].to_string())
    }

    async fn etag(&self, id: &str) -> String {
        let service = proximites::services::store::get(
            &self.fixture.state.store,
            &ServiceId::parse(id).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
        write::etag(&service)
    }

    /// Applies `op` through the write path; refusals that a user would get too (an organisation
    /// already withdrawn, an entry of a withdrawn organisation) are part of the game.
    async fn apply(&mut self, op: &Op) {
        let state = &self.fixture.state;
        let actor = &self.operator;
        match *op {
            Op::Create {
                organisation,
                typology,
                commune,
                word,
            } => {
                let at = self.communes[commune];
                let new = NewEntry {
                    fields: fields(&[
                        ("organisation_id", json!(self.organisations[organisation])),
                        ("typology", json!(self.typologies[typology])),
                        ("name", json!(format!("Lieu {}", WORDS[word]))),
                        (
                            "lon",
                            json!(at.lon + 0.0001 * (self.entries.len() % 7) as f64),
                        ),
                        ("lat", json!(at.lat)),
                    ]),
                };
                let written = write::create(state, actor, Via::Api, new)
                    .await
                    .unwrap_or_else(|e| panic!("{op:?}: {e}"));
                self.entries.push(written.service.id);
            }
            Op::Rename { entry, word } => {
                let Some(id) = self.entry(entry) else { return };
                let tag = self.etag(&id).await;
                let change = fields(&[("name", json!(format!("Lieu {}", WORDS[word])))]);
                let _ = write::update(state, actor, Via::Api, &id, Some(&tag), &change).await;
            }
            Op::Move { entry, commune } => {
                let Some(id) = self.entry(entry) else { return };
                let tag = self.etag(&id).await;
                let at = self.communes[commune];
                let change = fields(&[("lon", json!(at.lon)), ("lat", json!(at.lat - 0.0001))]);
                let _ = write::update(state, actor, Via::Api, &id, Some(&tag), &change).await;
            }
            Op::Retype { entry, typology } => {
                let Some(id) = self.entry(entry) else { return };
                let tag = self.etag(&id).await;
                let change = fields(&[("typology", json!(self.typologies[typology]))]);
                let _ = write::update(state, actor, Via::Api, &id, Some(&tag), &change).await;
            }
            Op::Withdraw { entry } => {
                let Some(id) = self.entry(entry) else { return };
                let _ = write::withdraw(state, actor, Via::Api, &id, None).await;
            }
            Op::Restore { entry } => {
                let Some(id) = self.entry(entry) else { return };
                let changes = proximites::services::history::of_entry(
                    &state.store,
                    &ServiceId::parse(&id).unwrap(),
                )
                .await
                .unwrap();
                if let Some(withdrawal) = changes.iter().find(|c| c.action == "withdrawn") {
                    let _ = write::restore(state, actor, Via::Api, &id, &withdrawal.id).await;
                }
            }
            Op::WithdrawOrganisation { organisation } => {
                if self.withdrawals[organisation].is_none() {
                    let done = proximites::restitution::withdraw_organisation(
                        state,
                        actor,
                        &self.organisations[organisation],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{op:?}: {e}"));
                    self.withdrawals[organisation] = Some(done.id);
                }
            }
            Op::UndoOrganisation { organisation } => {
                if let Some(operation) = self.withdrawals[organisation].take() {
                    proximites::restitution::undo_withdrawal(state, actor, &operation)
                        .await
                        .unwrap_or_else(|e| panic!("{op:?}: {e}"));
                }
            }
        }
    }

    /// The published entries as the database holds them: id, typology, point, name.
    async fn published(&self) -> Vec<(String, String, LonLat, String)> {
        let rows: Vec<(String, String, f64, f64, String)> =
            proximites::on_engine!(&self.fixture.state.store, |db| sqlx::query_as(
                "SELECT id, typology_code, lon, lat, name FROM services WHERE status = 'published'",
            )
            .fetch_all(db)
            .await)
            .unwrap();
        rows.into_iter()
            .map(|(id, t, lon, lat, name)| (id, t, LonLat::new(lon, lat), name))
            .collect()
    }

    /// The indexes answer as a brute-force reading of the database does.
    async fn check(&self) -> Result<(), TestCaseError> {
        let state = &self.fixture.state;
        let index = state.search_index();
        let problems = proximites::search::spatial::check(&state.store, &index.spatial)
            .await
            .unwrap();
        prop_assert!(problems.is_empty(), "{:?}", problems);
        let published = self.published().await;
        prop_assert_eq!(index.spatial.len(), published.len());
        for from in self
            .communes
            .iter()
            .map(|c| LonLat::new(c.lon + 0.003, c.lat))
        {
            // Nearest: the same distances, in order, as sorting every entry.
            for typology in [None, Some(self.typologies[0].as_str())] {
                let filter = typology.map(|t| vec![t]);
                let hits = index.spatial.nearest(from, filter.as_deref(), 5, None);
                let mut expected: Vec<f64> = published
                    .iter()
                    .filter(|e| typology.is_none_or(|t| e.1 == t))
                    .map(|e| from.distance_m(e.2))
                    .collect();
                expected.sort_by(f64::total_cmp);
                expected.truncate(5);
                let got: Vec<f64> = hits.iter().map(|h| h.distance_m).collect();
                prop_assert_eq!(got.len(), expected.len());
                for (g, e) in got.iter().zip(&expected) {
                    prop_assert!((g - e).abs() < 0.01, "nearest {:?} vs {:?}", got, expected);
                }
            }
            // Radius: the same set, away from the boundary.
            let radius = 5_000.0;
            let got: BTreeSet<String> = index
                .spatial
                .within_radius(from, radius, None)
                .iter()
                .map(|h| h.id.to_string())
                .collect();
            let expected: BTreeSet<String> = published
                .iter()
                .filter(|e| from.distance_m(e.2) <= radius)
                .map(|e| e.0.clone())
                .collect();
            prop_assert_eq!(got, expected);
        }
        // Territory: each commune's entries, from the index and from the database.
        let by_commune: Vec<(String, String)> = proximites::on_engine!(&state.store, |db| sqlx::query_as(
            "SELECT insee_code, id FROM services WHERE status = 'published' ORDER BY insee_code, id",
        )
        .fetch_all(db).await)
        .unwrap();
        let mut from_index: Vec<(String, String)> = index
            .spatial
            .entries(None)
            .map(|p| (p.insee_code().to_owned(), p.id().to_string()))
            .collect();
        from_index.sort();
        prop_assert_eq!(from_index, by_commune);
        // Words: each name word finds exactly the entries whose name holds it.
        for word in WORDS {
            let got: BTreeSet<String> = state
                .live
                .text()
                .search(word, None)
                .unwrap()
                .into_iter()
                .map(|(id, _)| id.to_string())
                .collect();
            let expected: BTreeSet<String> = published
                .iter()
                .filter(|e| e.3.split(' ').any(|w| w == word))
                .map(|e| e.0.clone())
                .collect();
            prop_assert_eq!(got, expected, "word {}", word);
        }
        Ok(())
    }
}

/// Random sequences of creations, renamings, moves, retypings, withdrawals, restorations and
/// organisation withdrawals with their undoing, through the real write path: after each
/// sequence the indexes answer as the database does. Sequences follow one another on the same
/// database, so later ones start from what earlier ones left; the spatial index's changes are
/// folded into its base on the way (a small threshold would hide that path, so many
/// sequences are run rather than long ones).
#[test]
fn random_writes_keep_the_indexes_equal_to_the_database() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let world = tokio::sync::Mutex::new(runtime.block_on(World::new()));
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..25), |ops| {
            runtime.block_on(async {
                let mut world = world.lock().await;
                for op in &ops {
                    world.apply(op).await;
                }
                world.check().await
            })
        })
        .unwrap();
}

/// An index whose position the log was pruned past is rebuilt once, and says so; later
/// catch-ups apply the log again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_pruned_past_the_index_forces_one_rebuild() {
    let (dir, store, reference) = common::database(false).await;
    let text_dir = dir.path().join("text");
    let live = live::LiveIndexes::open(&store, reference.clone(), &text_dir)
        .await
        .unwrap();
    let before = live.positions();
    // Another process writes (no live indexes of its own), then the log is pruned whole.
    common::import_generated(&store, &reference, &["15"], 300, 4).await;
    let pruned = live::prune_log(&store, Duration::ZERO).await.unwrap();
    assert_eq!(pruned, 299, "every row but the last, the data version");
    let first = live.catch_up(&store).await.unwrap();
    assert!(first.rebuilt, "{first:?}");
    assert_eq!(first.position, 300);
    assert_eq!(live.search_index().spatial.len(), 300);
    assert_eq!(live.text().doc_count(), 300);
    let again = live.catch_up(&store).await.unwrap();
    assert!(!again.rebuilt && again.rows == 0, "{again:?}");
    // The next write is applied from the log.
    common::import_generated(&store, &reference, &["43"], 10, 5).await;
    let next = live.catch_up(&store).await.unwrap();
    assert!(!next.rebuilt && next.rows == 10, "{next:?}");
    assert_eq!(live.search_index().spatial.len(), 310);
    assert!(before.spatial < next.position);
    assert!(live.commit_text(Duration::ZERO).await.unwrap());
    let problems = proximites::search::check(&store, &text_dir).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

/// A CSV of `count` entries named after `word`, in Puy-de-Dôme.
fn csv(prefix: &str, word: &str, count: usize) -> String {
    let mut csv = String::from("source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description\n");
    for n in 0..count {
        csv.push_str(&format!(
            "{prefix}{n},pharmacie,Pharmacie {word} {n},,,,63113,{},{},,,,,,\n",
            3.08 + (n % 50) as f64 * 0.0002,
            45.77 + (n / 50) as f64 * 0.0002
        ));
    }
    csv
}

/// Runs `proximites --database-url DB ARGS…` in `dir`; fails with its output unless it succeeds.
fn cli(dir: &std::path::Path, db: &std::path::Path, args: &[&str]) -> String {
    let output = command(dir)
        .args(["--database-url", &database_url(db)])
        .args(args)
        .output()
        .expect("run proximites");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{args:?}: {text}");
    text
}

/// The `total` of a search of the server.
async fn total(server: &binary::Server, query: &str) -> u64 {
    let answer: Value = reqwest::get(server.url(&format!("/api/v1/services?{query}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["total"].as_u64().unwrap_or(0)
}

/// Waits until the server's search for `word` finds `expected` entries; the time it took.
async fn searchable(server: &binary::Server, word: &str, expected: u64) -> Duration {
    let started = Instant::now();
    loop {
        if total(server, &format!("q={word}&limit=1")).await == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "« {word} » not found {expected} times; server log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server beside two command-line writers: each import is searchable on the server within
/// a second or two (the log applied, no rebuild), and `check` finds no difference at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_follows_imports_of_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let mut server = spawn_server(dir.path(), Some(&db), false).await;
    let first = dir.path().join("first.csv");
    let second = dir.path().join("second.csv");
    std::fs::write(&first, csv("a", "zorglub", 120)).unwrap();
    std::fs::write(&second, csv("b", "brindille", 80)).unwrap();
    let importing = |file: &std::path::Path, source: &str| {
        let (dir, db, file, source) = (
            dir.path().to_owned(),
            db.clone(),
            file.to_owned(),
            source.to_owned(),
        );
        std::thread::spawn(move || {
            cli(
                &dir,
                &db,
                &["import", file.to_str().unwrap(), "--source", &source],
            )
        })
    };
    // Two writer processes at once, while the server serves.
    let a = importing(&first, "Pharmacies A");
    let b = importing(&second, "Pharmacies B");
    a.join().unwrap();
    b.join().unwrap();
    let waited = searchable(&server, "zorglub", 120).await;
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    searchable(&server, "brindille", 80).await;
    // Again: updates of entries the server already holds.
    std::fs::write(&first, csv("a", "zorglub", 150)).unwrap();
    importing(&first, "Pharmacies A").join().unwrap();
    searchable(&server, "zorglub", 150).await;
    let health: Value = reqwest::get(server.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["caught_up"], true, "{health}");
    assert_eq!(health["indexes"]["spatial"], 230, "{health}");
    let log = server.log();
    assert!(!log.contains("rebuilt"), "no rebuild expected:\n{log}");
    server.terminate(Duration::from_secs(10));
    let report = cli(dir.path(), &db, &["check"]);
    assert!(report.contains("index à jour"), "{report}");
    assert!(report.contains("retard / lag 0"), "{report}");
}

/// A server killed between a write's commit and its index update: at the next start the
/// indexes catch up from the log, without a full rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_after_its_commit_catches_up_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("killed.db");
    let file = dir.path().join("seed.csv");
    std::fs::write(&file, csv("s", "semis", 40)).unwrap();
    cli(
        dir.path(),
        &db,
        &["import", file.to_str().unwrap(), "--source", "Semis"],
    );
    let token = cli(
        dir.path(),
        &db,
        &["admin", "create-token", "--operator", "--name", "ops"],
    )
    .lines()
    .next()
    .unwrap()
    .trim()
    .to_owned();
    let server = spawn_server_with(dir.path(), Some(&db), false, &[]).await;
    searchable(&server, "semis", 40).await;
    drop(server);
    // The same server, told to die right after the commit of its next write.
    let mut killed = command(dir.path());
    killed
        .env("PROXIMITES_ABORT_AFTER_COMMIT", "1")
        .args([
            "--database-url",
            &database_url(&db),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-demo",
        ])
        .stderr(std::process::Stdio::piped());
    let server = binary::spawn(killed).await;
    let (id,): (String,) = {
        let store = proximites::db::Store::connect(db.to_str().unwrap())
            .await
            .unwrap();
        let row = proximites::on_engine!(&store, |db| sqlx::query_as(
            "SELECT id FROM services WHERE source_ref = 's7'"
        )
        .fetch_one(db)
        .await)
        .unwrap();
        store.close().await;
        row
    };
    let client = reqwest::Client::new();
    let read = client
        .get(server.url(&format!("/api/v1/services/{id}")))
        .send()
        .await
        .unwrap();
    let etag = read.headers()["etag"].to_str().unwrap().to_owned();
    // The connection dies with the process: no answer.
    let answer = client
        .patch(server.url(&format!("/api/v1/services/{id}")))
        .bearer_auth(&token)
        .header("if-match", etag)
        .json(&json!({"name": "Pharmacie renommée quenouille"}))
        .send()
        .await;
    assert!(answer.is_err(), "{answer:?}");
    drop(server);
    // The write is in the database; the text index never saw it.
    let report = command(dir.path())
        .args(["--database-url", &database_url(&db), "check"])
        .output()
        .unwrap();
    assert!(!report.status.success());
    let server = spawn_server(dir.path(), Some(&db), false).await;
    searchable(&server, "quenouille", 1).await;
    let log = server.log();
    assert!(
        !log.contains("rebuilt"),
        "caught up from the log, no rebuild:\n{log}"
    );
}

/// A server on a new database may build its text index while it answers: searches by place
/// answer at once, searches by words and `/readyz` say 503 (with `Retry-After`) until the
/// follower has built it, then everything answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_text_index_is_built_while_the_server_answers() {
    use tower::ServiceExt;
    let (dir, store, reference) = common::database(false).await;
    common::import_generated(&store, &reference, &["15"], 300, 4).await;
    let state = proximites::app::AppState::build_with(
        store.clone(),
        reference,
        &dir.path().join("text"),
        Some(0),
    )
    .await
    .unwrap();
    let router = proximites::app::router(state.clone());
    let get = |uri: String| {
        let router = router.clone();
        async move {
            let response = router
                .oneshot(
                    axum::http::Request::get(uri)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = response.status();
            let retry_after = response.headers().get("retry-after").cloned();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (status, retry_after, json)
        }
    };
    let (name,): (String,) = proximites::on_engine!(&store, |db| sqlx::query_as(
        "SELECT name FROM services LIMIT 1"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    let words = format!(
        "/api/v1/services?q={}",
        proximites::web::encode_query(&[("x", name.as_str())])
            .trim_start_matches("x=")
            .to_owned()
    );
    let (status, retry_after, json) = get(words.clone()).await;
    assert_eq!(status, 503, "{json}");
    assert_eq!(json["code"], "text_index_building");
    assert!(retry_after.is_some());
    let (status, _, json) = get("/api/v1/services?near=2.44,44.93".into()).await;
    assert_eq!(status, 200, "{json}");
    assert!(json["total"].as_u64().unwrap() > 0, "{json}");
    let (status, _, json) = get("/readyz".into()).await;
    assert_eq!(status, 503, "{json}");

    // What the server's follower does at its first tick.
    let built = state.live.catch_up(&store).await.unwrap();
    assert!(built.rebuilt, "{built:?}");
    let (status, _, json) = get(words).await;
    assert_eq!(status, 200, "{json}");
    assert!(json["total"].as_u64().unwrap() > 0, "{json}");
    let (status, _, json) = get("/readyz".into()).await;
    assert_eq!(status, 200, "{json}");
}
