//! The citizen pages and the widget, and the printed directories' pages of the contributor
//! space, in a real browser: the built server on a loopback port, `frontend/tests/*.mjs`
//! driving Debian's Chromium with playwright-core and axe-core.

mod common;

use std::process::Command;

use common::binary::spawn_server;

#[tokio::test(flavor = "multi_thread")]
async fn citizen_pages_and_widget_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (.ci/run does it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(dir.path(), None, true).await;
    let frontend = concat!(env!("CARGO_MANIFEST_DIR"), "/frontend");
    let output = tokio::task::spawn_blocking({
        let base = server.base.clone();
        move || {
            Command::new("node")
                .arg("tests/citizen.mjs")
                .arg(base)
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

#[tokio::test(flavor = "multi_thread")]
async fn printed_directory_pages_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (.ci/run does it)"
    );
    // An operator signed in, in the database the server then opens.
    let (dir, pool, _reference) = common::database(true).await;
    let operator = proximites::accounts::store::create_operator(
        &pool,
        "region@example.fr",
        "un mot de passe assez long",
    )
    .await
    .unwrap();
    let (session, _) = proximites::accounts::store::open_session(&pool, &operator)
        .await
        .unwrap();
    pool.close().await;
    let server = spawn_server(dir.path(), Some(&dir.path().join("test.db")), true).await;
    let frontend = concat!(env!("CARGO_MANIFEST_DIR"), "/frontend");
    let output = tokio::task::spawn_blocking({
        let base = server.base.clone();
        move || {
            Command::new("node")
                .arg("tests/directory.mjs")
                .arg(base)
                .arg(session)
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
