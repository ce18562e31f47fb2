//! The API fuzzed by schemathesis (PyPI), as issue 17 asks: every operation of the published
//! OpenAPI documents (`/api/v1/openapi.json`, and the OGC API's `/ogc/api`) called with
//! generated valid and invalid input against the server on a loopback port. No answer may be a
//! 5xx, nor have a status, content type or body its document does not describe.
//!
//! schemathesis is installed on first use into `target/schemathesis` (a Python virtual
//! environment, the version pinned below).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::binary::spawn_server;

const VERSION: &str = "4.32.5";

/// The schemathesis command, installed when missing.
fn schemathesis() -> PathBuf {
    common::pypi_environment("schemathesis", &format!("schemathesis=={VERSION}"))
        .join("bin/schemathesis")
}

/// Runs schemathesis on the document at `schema`; panics with its report when it finds a
/// failure.
fn run(program: &Path, schema: &str, dir: &Path) {
    let output = Command::new(program)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .args([
            "run",
            schema,
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "30",
            // A redirect is an answer of its own (to the login page): checked, not followed.
            "--max-redirects",
            "0",
            "--workers",
            "2",
            "--no-color",
        ])
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures on {schema}:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_apis_hold_under_fuzzing() {
    let program = tokio::task::spawn_blocking(schemathesis).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(dir.path(), None, true).await;
    for schema in ["/api/v1/openapi.json", "/ogc/api"] {
        let (program, url, dir) = (program.clone(), server.url(schema), dir.path().to_owned());
        tokio::task::spawn_blocking(move || run(&program, &url, &dir))
            .await
            .unwrap();
    }
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
}
