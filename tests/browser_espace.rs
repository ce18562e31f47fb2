//! The contributors' pages in a real browser: an organisation and an invitation made with the
//! `admin` command line, the built server on a loopback port, and `frontend/tests/espace.mjs`
//! driving Debian's Chromium with playwright-core and axe-core.

mod common;

use std::process::Command;

use common::binary::{command, database_url, spawn_server};

fn admin(dir: &std::path::Path, db: &std::path::Path, args: &[&str]) -> String {
    let output = command(dir)
        .args(["--database-url", &database_url(db), "admin"])
        .args(args)
        .output()
        .expect("run proximites admin");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn contributor_pages_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (.ci/run does it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("espace.db");
    let organisation = admin(
        dir.path(),
        &db,
        &[
            "create-organisation",
            "--name",
            "Clermont Auvergne Métropole",
            "--kind",
            "epci",
            "--territory",
            "epci:246300701",
        ],
    );
    let link = admin(
        dir.path(),
        &db,
        &[
            "invite",
            "--organisation",
            &organisation,
            "--email",
            "redaction@example.fr",
            "--role",
            // The admin sees every page whole (invitations, tokens).
            "admin",
        ],
    );
    let path = link
        .strip_prefix(proximites::app::DEFAULT_PUBLIC_URL)
        .expect("the default public URL")
        .to_owned();
    let server = spawn_server(dir.path(), Some(&db), true).await;
    let frontend = concat!(env!("CARGO_MANIFEST_DIR"), "/frontend");
    let output = tokio::task::spawn_blocking({
        let base = server.base.clone();
        move || {
            Command::new("node")
                .arg("tests/espace.mjs")
                .arg(base)
                .arg(path)
                .env("CHROMIUM", chromium)
                .current_dir(frontend)
                .output()
                .expect("run node")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser tests failed:\n{stdout}\n{stderr}\n--- server log ---\n{}",
        server.log()
    );
}
