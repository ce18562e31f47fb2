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
    let (dir, store, reference) = common::database(true).await;
    if extra > 0 {
        common::import_generated(&store, &reference, &["63"], extra, 17).await;
    }
    store.close().await;
    let db = dir.path().join("test.db");
    (dir, db)
}

/// The address a server listens on.
fn socket_address(server: &Server) -> std::net::SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// Opens a connection that asks for `path`, reads the answer's head and then nothing more, with
/// a small receive buffer so that the server's writes block early.
async fn slow_reader(server: &Server, path: &str) -> tokio::net::TcpStream {
    let address = socket_address(server);
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

/// Behind a reverse proxy every client used to share the proxy's address: five failures by
/// anyone locked every contributor out. With `--trusted-proxy`, failures count per forwarded
/// address and per account, with separate thresholds; a forwarded address from an untrusted
/// peer is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limits_key_on_the_account_and_the_forwarded_address() {
    let (dir, db) = database_with(0).await;
    {
        let store = proximites::db::Store::connect(db.to_str().unwrap())
            .await
            .unwrap();
        proximites::accounts::store::create_operator(
            &store.clone(),
            "region@example.fr",
            "le mot de passe de la région",
        )
        .await
        .unwrap();
        store.close().await;
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
    let (token, cookie) = common::binary::login_form(client, server).await;
    client
        .post(server.url("/espace/connexion"))
        .header("cookie", cookie)
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

/// A form POST through the router: status and body.
async fn post_form(
    router: &axum::Router,
    uri: &str,
    cookie: &str,
    pairs: &[(&str, &str)],
) -> (u16, String) {
    use tower::ServiceExt;
    let request = axum::http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(proximites::web::encode_query(pairs)))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get_page(router: &axum::Router, uri: &str, cookie: &str) -> (u16, String) {
    use tower::ServiceExt;
    let request = axum::http::Request::builder()
        .uri(uri)
        .header("cookie", cookie)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// (organisation id, role) of the account of `email`.
async fn account(store: &proximites::db::Store, email: &str) -> (Option<String>, String) {
    proximites::on_engine!(&store, |db| sqlx::query_as(
        "SELECT organisation_id, role FROM users WHERE email = $1"
    )
    .bind(email)
    .fetch_one(db)
    .await)
    .unwrap()
}

/// Accepting an invitation used to move any existing account of the invited address into the
/// inviting organisation (another organisation's admin, the operator) and replace its password.
/// Now the link alone never changes an account: its holder confirms signed in, and an
/// operator's account never moves.
#[tokio::test]
async fn an_invitation_never_moves_an_existing_account_by_itself() {
    use common::accounts;
    use proximites::accounts::store;
    use proximites::accounts::Role;
    let (dir, store, reference) = common::database(true).await;
    let clermont = accounts::organisation(&store, "Clermont", "commune", "commune:63113").await;
    let riom = accounts::organisation(&store, "Riom", "commune", "commune:63300").await;
    let (admin_cookie, admin_csrf) =
        accounts::signed_in(&store, &clermont.id, "admin@clermont.fr", Role::Admin).await;
    let (other_cookie, other_csrf) =
        accounts::signed_in(&store, &riom.id, "someone@riom.fr", Role::Editor).await;
    let (operator_cookie, operator_csrf) = accounts::operator_signed_in(&store).await;
    let fixture = common::Fixture::serve(dir, store.clone(), reference).await;
    let router = &fixture.router;

    // Riom invites Clermont's admin: the link alone does nothing to the account.
    let secret = store::invite(&store, &riom.id, "admin@clermont.fr", Role::Editor)
        .await
        .unwrap();
    let refused = store::accept_invitation(&store, &secret, "un tout autre mot de passe")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "account_exists");
    assert_eq!(
        account(&store, "admin@clermont.fr").await,
        (Some(clermont.id.clone()), "admin".to_owned())
    );
    assert!(
        store::check_login(&store.clone(), "admin@clermont.fr", "un mot de passe long")
            .await
            .unwrap()
            .is_some()
    );
    let link = format!("/espace/invitation/{secret}");
    let (status, page) = get_page(router, &link, "").await;
    assert_eq!(status, 200);
    assert!(page.contains("Un compte existe déjà") && !page.contains("name=\"password\""));
    // Someone else, signed in, cannot confirm it.
    let confirm = format!("{link}/confirmer");
    let (status, page) = post_form(router, &confirm, &other_cookie, &[("csrf", &other_csrf)]).await;
    assert_eq!(status, 403, "{page}");
    assert_eq!(
        account(&store, "someone@riom.fr").await.0,
        Some(riom.id.clone())
    );
    // The holder sees what confirming does, and confirms.
    let (_, page) = get_page(router, &link, &admin_cookie).await;
    assert!(
        page.contains("Clermont") && page.contains("quitte la précédente"),
        "{page}"
    );
    let (status, _) = post_form(router, &confirm, &admin_cookie, &[("csrf", "forged")]).await;
    assert_eq!(status, 403);
    let (status, _) = post_form(router, &confirm, &admin_cookie, &[("csrf", &admin_csrf)]).await;
    assert_eq!(status, 303);
    assert_eq!(
        account(&store, "admin@clermont.fr").await,
        (Some(riom.id.clone()), "editor".to_owned())
    );
    // Used once.
    let (status, _) = post_form(router, &confirm, &admin_cookie, &[("csrf", &admin_csrf)]).await;
    assert_eq!(status, 403);

    // The operator's address invited: never moved, never demoted.
    let secret = store::invite(&store, &clermont.id, "region@example.fr", Role::Admin)
        .await
        .unwrap();
    let link = format!("/espace/invitation/{secret}");
    let (_, page) = get_page(router, &link, &operator_cookie).await;
    assert!(page.contains("opérateur"), "{page}");
    let (status, page) = post_form(
        router,
        &format!("{link}/confirmer"),
        &operator_cookie,
        &[("csrf", &operator_csrf)],
    )
    .await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("opérateur"));
    assert_eq!(
        account(&store, "region@example.fr").await,
        (None, "operator".to_owned())
    );
}

/// The resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The most memory the server may hold during the load test: the demo and 30,000 generated
/// entries, their indexes and caches, with every bound above in force.
const LOAD_MEMORY_BOUND: u64 = 400 * 1024 * 1024;

/// A minute of mixed anonymous traffic at a fixed rate (searches, pages, the widget, OGC
/// pages with and without filters, downloads of a selection, costly filters and over-long
/// queries among them): no request fails — refusals are the documented 4xx — and the server's
/// memory stays under [`LOAD_MEMORY_BOUND`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_mixed_anonymous_traffic() {
    const RATE_PER_SECOND: u64 = 40;
    const SECONDS: u64 = 60;
    let (dir, db) = database_with(30_000).await;
    let mut server = spawn_server_with(
        dir.path(),
        Some(&db),
        false,
        // One address sends everything here: its share of heavy requests is the server's.
        &["--heavy-per-client", "4", "--heavy-concurrency", "4"],
    )
    .await;
    let pid = server.process.0.id();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let words = vec!["mairie"; 300].join(" ");
    let mut costly = String::from("name LIKE '%a%e%i%o%u%a%e%i%o%u%y'");
    while costly.len() < 19_000 {
        costly.push_str(" OR name LIKE '%a%e%i%o%u%a%e%i%o%u%y'");
    }
    let costly = url::form_urlencoded::byte_serialize(costly.as_bytes()).collect::<String>();
    // Light requests in turn; heavy ones (a download, a filtered OGC page) a few times a
    // second, a filter past its budget every ten seconds.
    let light: Vec<String> = vec![
        "/api/v1/services?q=mairie&near=3.08,45.77".into(),
        "/api/v1/services?in=departement:63&typology=mairie&limit=100".into(),
        "/recherche?q=pharmacie&lieu=Clermont-Ferrand".into(),
        "/".into(),
        "/embed?territoire=commune:63113".into(),
        "/api/v1/places?q=riom".into(),
        "/ogc/collections/services/items?limit=100&bbox=2.9,45.6,3.3,45.9".into(),
        "/healthz".into(),
        format!("/api/v1/services?q={}", words.replace(' ', "+")),
        "/api/v1/services?near=999,999".into(),
        "/services/inexistant".into(),
    ];
    let path_of = |n: u64| -> String {
        match (n % 400, n % 40) {
            (7, _) => format!("/ogc/collections/services/items?limit=10&filter={costly}"),
            (_, 19) => "/api/v1/export/services.csv?in=commune:63113".into(),
            (_, 3 | 23) => {
                "/ogc/collections/services/items?limit=50&filter=commune%3D%2763113%27".into()
            }
            _ => light[n as usize % light.len()].clone(),
        }
    };
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SECOND));
    let mut requests = tokio::task::JoinSet::new();
    let mut peak = 0;
    for n in 0..RATE_PER_SECOND * SECONDS {
        ticker.tick().await;
        if n % RATE_PER_SECOND == 0 {
            peak = peak.max(resident_bytes(pid));
        }
        let path = path_of(n);
        let (client, url) = (client.clone(), server.url(&path));
        requests.spawn(async move {
            let answer = client.get(&url).send().await;
            match answer {
                Ok(answer) => {
                    let status = answer.status().as_u16();
                    let read = answer.bytes().await.map(|b| b.len());
                    (path, Ok(status), read.is_ok())
                }
                Err(error) => (path, Err(error.to_string()), false),
            }
        });
    }
    let mut statuses: std::collections::BTreeMap<String, Vec<u16>> = Default::default();
    while let Some(done) = requests.join_next().await {
        let (path, status, read) = done.unwrap();
        let status = status.unwrap_or_else(|e| panic!("{path}: {e}\n{}", server.log()));
        assert!(read, "{path}: body cut");
        statuses.entry(path).or_default().push(status);
    }
    peak = peak.max(resident_bytes(pid));
    let elapsed = started.elapsed();
    for (path, seen) in &statuses {
        let refused = path.contains("filter=name")
            || path.contains("mairie+mairie")
            || path.contains("999,999");
        let expected: u16 = if refused {
            400
        } else if path.contains("inexistant") {
            404
        } else {
            200
        };
        assert!(seen.iter().all(|s| *s == expected), "{path}: {seen:?}");
    }
    assert!(
        peak < LOAD_MEMORY_BOUND,
        "resident memory reached {} MB",
        peak >> 20
    );
    eprintln!(
        "{} requests in {elapsed:?}, peak resident memory {} MB",
        RATE_PER_SECOND * SECONDS,
        peak >> 20
    );
    assert_eq!(server.terminate(Duration::from_secs(20)).code(), Some(0));
}

/// A client that never finishes its request's head used to keep its connection open for as
/// long as it liked; now it is disconnected after the head timeout. One address cannot hold
/// more than its share of connections; the next one is closed at once, and others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_requests_and_connection_floods_are_cut() {
    let (dir, db) = database_with(0).await;
    let server = spawn_server_with(
        dir.path(),
        Some(&db),
        false,
        &["--head-timeout", "2", "--connections-per-peer", "8"],
    )
    .await;
    let address = socket_address(&server);
    let ends_within = |mut stream: tokio::net::TcpStream, limit: Duration| async move {
        let mut rest = Vec::new();
        tokio::time::timeout(limit, stream.read_to_end(&mut rest))
            .await
            .is_ok()
    };
    // Half a head, then nothing.
    let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    assert!(
        ends_within(slow, Duration::from_secs(10)).await,
        "never cut"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));

    // Eight idle connections take this address's share: a ninth is closed unanswered.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ninth = tokio::net::TcpStream::connect(address).await.unwrap();
    let _ = ninth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), ninth.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // Their places come back as they close.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}
