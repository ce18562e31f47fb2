//! The operator's command line as scripts run it (`proximites admin …`), then the real server on
//! a loopback port: the printed invitation link opens, the printed token writes, search sees it.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use common::binary::{command, database_url, spawn_server};
use serde_json::{json, Value};

/// Runs `proximites --database-url DB admin ARGS…` with `stdin`: (success, stdout, stderr).
fn admin(dir: &Path, db: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let url = database_url(db);
    let mut child = command(dir)
        .args(["--database-url", &url, "admin"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run proximites admin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_commands_print_what_scripts_read_and_the_server_honours_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("contrib.db");

    let (ok, operator, stderr) = admin(
        dir.path(),
        &db,
        &[
            "create-operator",
            "--email",
            "region@example.fr",
            "--password-stdin",
        ],
        "le mot de passe de la région\n",
    );
    assert!(ok, "{stderr}");
    assert!(operator.starts_with("usr-"), "{operator}");
    let (ok, _, stderr) = admin(
        dir.path(),
        &db,
        &[
            "create-operator",
            "--email",
            "x@example.fr",
            "--password-stdin",
        ],
        "court\n",
    );
    assert!(
        !ok && stderr.contains("password") && stderr.contains("12 caractères"),
        "{stderr}"
    );

    let (ok, organisation, stderr) = admin(
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
            "--siren",
            "246300701",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    assert!(
        organisation.starts_with("org-") && !organisation.contains('\n'),
        "{organisation}"
    );
    let (ok, _, stderr) = admin(
        dir.path(),
        &db,
        &[
            "create-organisation",
            "--name",
            "Mauvaise",
            "--kind",
            "planete",
            "--territory",
            "epci:12",
            "--siren",
            "12",
        ],
        "",
    );
    assert!(!ok, "a wrong organisation is refused");
    assert!(
        stderr.contains("territory") && stderr.contains("9 chiffres"),
        "{stderr}"
    );
    let (ok, _, stderr) = admin(
        dir.path(),
        &db,
        &[
            "create-organisation",
            "--name",
            "Fantôme",
            "--kind",
            "epci",
            "--territory",
            "epci:999999999",
        ],
        "",
    );
    assert!(!ok && stderr.contains("aucune commune"), "{stderr}");

    let (ok, link, stderr) = admin(
        dir.path(),
        &db,
        &[
            "invite",
            "--organisation",
            &organisation,
            "--email",
            "referente@example.fr",
            "--role",
            "admin",
            "--public-url",
            "https://proximites.example.fr/",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    assert!(
        link.starts_with("https://proximites.example.fr/espace/invitation/"),
        "{link}"
    );
    let (ok, _, stderr) = admin(
        dir.path(),
        &db,
        &[
            "invite",
            "--organisation",
            "org-inconnue",
            "--email",
            "a@example.fr",
            "--role",
            "editor",
        ],
        "",
    );
    assert!(!ok && stderr.contains("org-inconnue"), "{stderr}");

    let (ok, token, stderr) = admin(
        dir.path(),
        &db,
        &[
            "create-token",
            "--organisation",
            &organisation,
            "--name",
            "sig",
        ],
        "",
    );
    assert!(ok, "{stderr}");
    assert!(token.starts_with("pxm_") && token.len() > 60, "{token}");
    let (ok, operator_token, stderr) = admin(
        dir.path(),
        &db,
        &["create-token", "--operator", "--name", "région"],
        "",
    );
    assert!(ok && operator_token.starts_with("pxm_"), "{stderr}");
    let (ok, _, _) = admin(
        dir.path(),
        &db,
        &["create-token", "--name", "sans organisation"],
        "",
    );
    assert!(!ok, "a token names its organisation, or --operator");
    // Only its hash is stored.
    let store = sqlx::SqlitePool::connect(&database_url(&db)).await.unwrap();
    let (stored,): (String,) =
        sqlx::query_as("SELECT token_hash FROM api_tokens WHERE organisation_id IS NOT NULL")
            .fetch_one(&store)
            .await
            .unwrap();
    assert!(!stored.contains(&token[4..]));
    store.close().await;

    let server = spawn_server(dir.path(), Some(&db), true).await;
    let client = reqwest::Client::new();
    // The link printed opens the invitation page (on whatever host serves it).
    let path = link.trim_start_matches("https://proximites.example.fr");
    let invitation = client.get(server.url(path)).send().await.unwrap();
    assert_eq!(invitation.status(), 200);
    assert!(invitation.headers().get("set-cookie").is_none());
    assert!(invitation
        .text()
        .await
        .unwrap()
        .contains("referente@example.fr"));

    // The token writes; search sees the entry in the same instant.
    let created = client
        .post(server.url("/api/v1/services"))
        .bearer_auth(&token)
        .json(&json!({"typology": "mairie", "name": "Maison Ornithorynque", "lon": 3.0870, "lat": 45.7772}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", server.log());
    let etag = created.headers()["etag"].to_str().unwrap().to_owned();
    let entry: Value = created.json().await.unwrap();
    let id = entry["id"].as_str().unwrap();
    let found: Value = client
        .get(server.url("/api/v1/services?q=ornithorynque"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"][0]["id"], id);
    let read = client
        .get(server.url(&format!("/api/v1/services/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(read.headers()["etag"].to_str().unwrap(), etag);
    // Writing without a token: 401; the public API stays read-only.
    let anonymous = client
        .delete(server.url(&format!("/api/v1/services/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );

    // The operator signs in over HTTP and sees every organisation's entries.
    let (csrf, login_cookie) = common::binary::login_form(&client, &server).await;
    let csrf = csrf.as_str();
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = no_redirect
        .post(server.url("/espace/connexion"))
        .header("cookie", &login_cookie)
        .form(&[
            ("csrf", csrf),
            ("email", "region@example.fr"),
            ("password", "le mot de passe de la région"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303, "{}", server.log());
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let list = no_redirect
        .get(server.url("/espace?nom=ornithorynque"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("Maison Ornithorynque") && list.contains("Clermont Auvergne Métropole"));
}
