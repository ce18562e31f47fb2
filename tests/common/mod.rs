//! What the integration tests share: a request through the router, and generated entries
//! imported into a test database.

#![allow(dead_code)] // Each test file uses its own part.

pub mod accounts;
pub mod binary;
pub mod postgres;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proximites::app::{self, AppState};
use proximites::db::Store;
use proximites::import::{self, ImportOptions, Input, Reference};
use proximites::{boot, synth};
use tower::ServiceExt;

/// A server's state and router on a database in a temporary directory.
pub struct Fixture {
    pub router: axum::Router,
    pub state: AppState,
    pub _dir: tempfile::TempDir,
}

/// A new database in a temporary directory, prepared, with the Auvergne demo when `demo`.
pub async fn database(demo: bool) -> (tempfile::TempDir, Store, Reference) {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path(), "test.db").await;
    let reference = boot::prepare(&store, demo).await.unwrap();
    (dir, store, reference)
}

/// Whether this run of the storage tests is on PostgreSQL (`PROXIMITES_TEST_ENGINE=postgres`,
/// as the second pass of `.ci/run`) rather than on SQLite files.
pub fn on_postgres() -> bool {
    std::env::var("PROXIMITES_TEST_ENGINE").is_ok_and(|engine| engine == "postgres")
}

/// A new, migrated database: the SQLite file `name` in `dir`, or a new database of the shared
/// PostgreSQL cluster when [`on_postgres`].
pub async fn new_store(dir: &std::path::Path, name: &str) -> Store {
    let url = if on_postgres() {
        postgres::fresh_database().await
    } else {
        format!("sqlite://{}", dir.join(name).display())
    };
    std::fs::write(dir.join("database.url"), &url).unwrap();
    Store::connect(&url).await.unwrap()
}

/// The URL of the database [`new_store`] made in `dir`, for the commands a test runs on it.
pub fn url_of(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("database.url")).expect("a database made by new_store")
}

impl Fixture {
    /// The server's state on `store`, its indexes built, and its router.
    pub async fn serve(dir: tempfile::TempDir, store: Store, reference: Reference) -> Fixture {
        let state = AppState::build(store, reference, &dir.path().join("text"))
            .await
            .unwrap();
        Fixture {
            router: app::router(state.clone()),
            state,
            _dir: dir,
        }
    }
}

/// GET `uri` through `router`: status, content type and body.
pub async fn get(router: &axum::Router, uri: &str) -> (StatusCode, String, Vec<u8>) {
    let response = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, content_type, bytes.to_vec())
}

/// Imports `count` entries generated from `seed` in the communes of `departements`.
pub async fn import_generated(
    store: &Store,
    reference: &Reference,
    departements: &[&str],
    count: u64,
    seed: u64,
) {
    let communes: Vec<_> = reference
        .locator
        .communes()
        .filter(|c| departements.contains(&c.departement_code.as_str()))
        .cloned()
        .collect();
    let mut generated = Vec::new();
    synth::write(&mut generated, &reference.taxonomy, &communes, count, seed).unwrap();
    let report = import::import(
        store,
        reference,
        Input::Bytes {
            name: "synth.csv".into(),
            bytes: generated,
        },
        ImportOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        report.committed,
        "{:?}",
        &report.errors[..report.errors.len().min(3)]
    );
}

/// A Python virtual environment under `target/NAME` with `requirement` installed from PyPI
/// (once: a marker file remembers it); returns the environment's directory.
pub fn pypi_environment(name: &str, requirement: &str) -> std::path::PathBuf {
    use std::process::Command;
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(name);
    let marker = target.join(format!(".installed-{requirement}"));
    if !marker.exists() {
        let venv = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&target)
            .status()
            .expect("python3 (Debian: python3-venv)");
        assert!(venv.success(), "python3 -m venv failed");
        let pip = Command::new(target.join("bin/pip"))
            .args(["install", "--quiet", requirement])
            .status()
            .expect("pip");
        assert!(pip.success(), "pip install {requirement} failed");
        std::fs::write(&marker, "").unwrap();
    }
    target
}
