//! The contributors' pages in a real browser: an organisation and an invitation made with the
//! `admin` command line, the built server on a loopback port, and `frontend/tests/espace.mjs`
//! driving Debian's Chromium with playwright-core and axe-core.

mod common;

use common::binary::{browser_script, command, database_url, spawn_server};

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
    browser_script(&server, "espace.mjs", &[path]).await;
}
