//! Hostile clients against the server on a loopback port (issue 17): slow readers, costly
//! filters and queries, forged headers, guessing passwords behind a proxy. Each case failed on
//! the code before it was fixed.

mod common;

use std::time::{Duration, Instant};

use common::binary::{spawn_server_with, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A database of the demo and `extra` generated entries in the Puy-de-Dôme, closed for a
/// server to open.
async fn database_with(extra: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, pool, reference) = common::database(true).await;
    if extra > 0 {
        common::import_generated(&pool, &reference, &["63"], extra, 17).await;
    }
    pool.close().await;
    let db = dir.path().join("test.db");
    (dir, db)
}

/// Opens a connection that asks for `path`, reads the answer's head and then nothing more, with
/// a small receive buffer so that the server's writes block early.
async fn slow_reader(server: &Server, path: &str) -> tokio::net::TcpStream {
    let address: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "connection closed"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

/// Eight anonymous clients that start a large download and never read it used to hold all the
/// database connections: `/healthz` and every other request waited 30 s and answered 500. Now
/// the file is written first and the connection given back; a client past its share of heavy
/// requests is told to come back (429 with `Retry-After`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_hold_no_database_connection() {
    let (dir, db) = database_with(30_000).await;
    let server = spawn_server_with(
        dir.path(),
        Some(&db),
        false,
        &["--heavy-per-client", "8", "--heavy-concurrency", "4"],
    )
    .await;
    let path = "/api/v1/export/services.geojson?in=departement:63";
    let client = reqwest::Client::new();
    let mut readers = Vec::new();
    for _ in 0..8 {
        readers.push(slow_reader(&server, path).await);
    }
    // The client's share is taken: one more is refused at once.
    let refused = client.get(server.url(path)).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "5");
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_heavy_requests");
    let started = Instant::now();
    let health = client
        .get(server.url("/healthz"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "/healthz took {:?} beside slow readers",
        started.elapsed()
    );
    // Requests that read the database are served too.
    for path in [
        "/api/v1/services?q=mairie",
        "/ogc/collections/services/items?limit=5",
        "/recherche?q=mairie",
    ] {
        let answer = client
            .get(server.url(path))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().as_u16() < 500,
            "{path}: {}",
            answer.status()
        );
    }
    // Once the slow readers leave, their places are given back.
    drop(readers);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = client.get(server.url(path)).send().await.unwrap();
        if answer.status() == 200 {
            assert!(answer.bytes().await.unwrap().len() > 1_000_000);
            break;
        }
        assert!(Instant::now() < deadline, "places never given back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Links and snippets never start with what a client put in `Host` or `X-Forwarded-*`; behind
/// a configured trusted proxy, its forwarded host is used when valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_never_echo_a_forged_host() {
    let (dir, db) = database_with(0).await;
    let server = spawn_server_with(dir.path(), Some(&db), false, &[]).await;
    let client = reqwest::Client::new();
    let forged = |path: &str| {
        client
            .get(server.url(path))
            .header("host", "evil.example")
            .header("x-forwarded-proto", "javascript")
            .header("x-forwarded-host", "evil.example")
    };
    for path in [
        "/ogc?f=json",
        "/ogc/collections?f=json",
        "/ogc/collections/services/items?limit=1",
        "/integrer?territoire=commune:63113",
        "/donnees-sig",
    ] {
        let body = forged(path).send().await.unwrap().text().await.unwrap();
        assert!(
            !body.contains("evil.example"),
            "{path} echoes the forged host"
        );
        assert!(!body.contains("javascript://"), "{path}");
        assert!(
            body.contains("http://127.0.0.1:8080"),
            "{path}: no link to the default public URL"
        );
    }
    // A loopback Host (a server tried on this machine) is followed.
    let own = client
        .get(server.url("/ogc?f=json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(own.contains(&server.base), "{own}");
    drop(server);

    // Configured: always the public URL.
    let server = spawn_server_with(
        dir.path(),
        Some(&db),
        false,
        &["--public-url", "https://annuaire.example.fr"],
    )
    .await;
    let body = client
        .get(server.url("/ogc?f=json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("https://annuaire.example.fr/ogc/collections"));
    assert!(!body.contains(&server.base));
    drop(server);

    // Behind a trusted proxy: what it forwards, when valid.
    let server = spawn_server_with(
        dir.path(),
        Some(&db),
        false,
        &["--trusted-proxy", "127.0.0.1"],
    )
    .await;
    let body = client
        .get(server.url("/ogc?f=json"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "sig.example.fr")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("https://sig.example.fr/ogc/collections"),
        "{body}"
    );
    let body = client
        .get(server.url("/ogc?f=json"))
        .header("x-forwarded-host", "a@evil.example/x")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!body.contains("evil.example"));
}

/// The login form's token, from the page.
async fn login_token(client: &reqwest::Client, server: &Server) -> String {
    let form = client
        .get(server.url("/espace/connexion"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = form.find(marker).unwrap() + marker.len();
    form[start..start + form[start..].find('"').unwrap()].to_owned()
}

/// Behind a reverse proxy every client used to share the proxy's address: five failures by
/// anyone locked every contributor out. With `--trusted-proxy`, failures count per forwarded
/// address and per account, with separate thresholds; a forwarded address from an untrusted
/// peer is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limits_key_on_the_account_and_the_forwarded_address() {
    let (dir, db) = database_with(0).await;
    {
        let pool = proximites::db::connect(db.to_str().unwrap()).await.unwrap();
        proximites::accounts::store::create_operator(
            &pool,
            "region@example.fr",
            "le mot de passe de la région",
        )
        .await
        .unwrap();
        pool.close().await;
    }
    let server = spawn_server_with(
        dir.path(),
        Some(&db),
        false,
        &["--trusted-proxy", "127.0.0.0/8"],
    )
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Someone guesses the password of an account that does not exist, from one address.
    for _ in 0..proximites::accounts::LOGIN_FAILURES {
        assert_eq!(
            attempt(&client, &server, "198.51.100.1", "x@example.fr", "faux").await,
            401
        );
    }
    assert_eq!(
        attempt(&client, &server, "198.51.100.1", "x@example.fr", "faux").await,
        429
    );
    // The operator, from another address behind the same proxy, signs in.
    assert_eq!(
        attempt(
            &client,
            &server,
            "198.51.100.2",
            "region@example.fr",
            "le mot de passe de la région"
        )
        .await,
        303
    );
    // And from the guesser's address too: its threshold is per address, larger.
    assert_eq!(
        attempt(
            &client,
            &server,
            "198.51.100.1",
            "region@example.fr",
            "le mot de passe de la région"
        )
        .await,
        303
    );
}

/// One login through the proxy for `from`: the answer's status.
async fn attempt(
    client: &reqwest::Client,
    server: &Server,
    from: &str,
    email: &str,
    password: &str,
) -> u16 {
    let token = login_token(client, server).await;
    client
        .post(server.url("/espace/connexion"))
        .header("x-forwarded-for", from)
        .form(&[
            ("csrf", token.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A 20 KB filter of ORed `LIKE` patterns used to cost seconds of CPU per request while holding
/// a connection; now its work is counted and past the budget it is refused with a 400 that
/// says why. An over-long text query is refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costly_filters_and_queries_are_refused_within_their_budget() {
    let (dir, db) = database_with(30_000).await;
    let server = spawn_server_with(dir.path(), Some(&db), false, &[]).await;
    let client = reqwest::Client::new();
    let pattern = "'%a%e%i%o%u%a%e%i%o%u%a%e%i%o%u%y'";
    let mut filter = format!("name LIKE {pattern}");
    while filter.len() < 19_000 {
        filter.push_str(&format!(" OR name LIKE {pattern}"));
    }
    let costly = client
        .get(server.url("/ogc/collections/services/items"))
        .query(&[("filter", filter.as_str()), ("limit", "10")])
        .send()
        .await
        .unwrap();
    assert_eq!(costly.status(), 400);
    let problem: serde_json::Value = costly.json().await.unwrap();
    assert_eq!(problem["code"], "filter_too_costly", "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("trop coûteux"));
    // An ordinary filter is answered.
    let fine = client
        .get(server.url("/ogc/collections/services/items"))
        .query(&[
            ("filter", "name LIKE '%mairie%' OR commune = '63113'"),
            ("limit", "10"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);

    let words = vec!["mairie"; 6_000].join(" ");
    for path in ["/api/v1/services", "/recherche"] {
        let long = client
            .get(server.url(path))
            .query(&[("q", words.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(long.status(), 400, "{path}");
        let body = long.text().await.unwrap();
        assert!(body.contains("recherche trop longue"), "{path}: {body}");
    }
}
