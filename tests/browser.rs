//! The citizen pages and the widget, and the printed directories' pages of the contributor
//! space, in a real browser: the built server on a loopback port, `frontend/tests/*.mjs`
//! driving Debian's Chromium with playwright-core and axe-core.

mod common;

use common::binary::{browser_script, spawn_server};

#[tokio::test(flavor = "multi_thread")]
async fn citizen_pages_and_widget_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(dir.path(), None, true).await;
    browser_script(&server, "citizen.mjs", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn printed_directory_pages_in_chromium() {
    // An operator signed in, in the database the server then opens.
    let (dir, store, _reference) = common::database(true).await;
    let both = store.clone();
    let operator = proximites::accounts::store::create_operator(
        &both,
        "region@example.fr",
        "un mot de passe assez long",
    )
    .await
    .unwrap();
    let (session, _) = proximites::accounts::store::open_session(&both, &operator)
        .await
        .unwrap();
    store.close().await;
    let server = spawn_server(dir.path(), Some(&dir.path().join("test.db")), true).await;
    browser_script(&server, "directory.mjs", &[session]).await;
}
