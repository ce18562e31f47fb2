//! The outbox over a real SMTP server (Debian's python3-aiosmtpd, started by the test): the
//! campaign e-mails reach the référent; with the SMTP server stopped they stay in the outbox,
//! and go out once it is back; two instances sending from the one outbox send each e-mail once.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::binary::{command, database_url, spawn_server_with, AsUrl, KillOnDrop};

fn admin(dir: &Path, db: &str, args: &[&str]) -> String {
    let output = command(dir)
        .args(["--database-url", db, "admin"])
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

/// A debugging SMTP server on `port` printing what it receives; its output so far.
fn smtp_server(port: u16) -> (KillOnDrop, Arc<Mutex<String>>) {
    // Debian's Python, where python3-aiosmtpd is installed (not a python3 of another install
    // earlier in PATH).
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut child = Command::new(python)
        .args([
            "-u",
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m aiosmtpd (apt-get install python3-aiosmtpd; .ci/run does it)");
    let stdout = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let writer = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            writer.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    // Ready when it accepts connections.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "aiosmtpd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (KillOnDrop(child), seen)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The outbox: dedupe key, when sent, attempts, last error.
type Sent = Option<chrono::DateTime<chrono::Utc>>;

async fn outbox(db: &str) -> Vec<(String, Sent, i64, Option<String>)> {
    let store = proximites::db::Store::connect(db).await.unwrap();
    let rows = proximites::on_engine!(&store, |pool| sqlx::query_as(
        "SELECT dedupe_key, sent_at, attempts, last_error FROM outbox ORDER BY dedupe_key",
    )
    .fetch_all(pool)
    .await
    .unwrap());
    store.close().await;
    rows
}

/// How many messages the debugging server printed (one banner each).
fn messages(text: &str) -> usize {
    text.matches("---------- MESSAGE FOLLOWS ----------")
        .count()
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_mails_go_through_the_outbox_and_wait_while_smtp_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mail.db").as_url();
    campaign_mails_on(dir.path(), &db).await;
}

/// The same with both instances on PostgreSQL: each campaign e-mail, reminders included, is
/// enqueued and sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_mails_go_out_once_from_two_instances_on_postgresql() {
    let cluster = common::postgres::Cluster::start();
    let db = cluster.database("mail").await;
    let dir = tempfile::tempdir().unwrap();
    campaign_mails_on(dir.path(), &db).await;
}

/// Two instances on `db` sending campaign e-mails through a real SMTP server, which stops and
/// comes back.
async fn campaign_mails_on(dir: &Path, db: &str) {
    let organisation = admin(
        dir,
        db,
        &[
            "create-organisation",
            "--name",
            "Clermont Auvergne Métropole",
            "--kind",
            "epci",
            "--territory",
            "epci:246300701",
            "--referent-name",
            "Claire Dupont",
            "--referent-email",
            "referente@example.fr",
            "--referent-phone",
            "04 73 00 00 00",
            "--convention-start",
            "2026-01-01",
            "--convention-end",
            "2028-12-31",
        ],
    );
    let token = admin(
        dir,
        db,
        &[
            "create-token",
            "--organisation",
            &organisation,
            "--name",
            "sig",
        ],
    );
    let port = free_port();
    let (smtp, received) = smtp_server(port);
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    // Two instances on the one database, each with its own derived indexes, both sending:
    // each e-mail still goes out once.
    let data_dir = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let instance = async |name: &str| {
        spawn_server_with(
            dir,
            Some(db),
            false,
            &[
                "--smtp-url",
                &smtp_url,
                "--mail-interval",
                "1",
                "--data-dir",
                &data_dir(name),
            ],
        )
        .await
    };
    let server = instance("instance-a").await;
    let twin = instance("instance-b").await;
    let client = reqwest::Client::new();
    let created = client
        .post(server.url("/api/v1/services"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"typology": "mairie", "name": "Mairie annexe", "lon": 3.0870, "lat": 45.7772}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // A campaign in its last week: the start e-mail and the reminder.
    let today = chrono::Utc::now().date_naive();
    let end = (today + chrono::Days::new(3)).to_string();
    admin(
        dir,
        db,
        &[
            "create-campaign",
            "--name",
            "Automne",
            "--start",
            &today.to_string(),
            "--end",
            &end,
        ],
    );
    wait_for("two e-mails sent", async || {
        outbox(db)
            .await
            .iter()
            .filter(|(_, sent, _, _)| sent.is_some())
            .count()
            == 2
    })
    .await;
    // Another round or two: the reminders are not enqueued nor sent again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(outbox(db).await.len(), 2);
    let text = received.lock().unwrap().clone();
    assert_eq!(messages(&text), 2, "{text}");
    assert!(text.matches("referente@example.fr").count() >= 2, "{text}");
    // Bodies are quoted-printable: « = » reads « =3D »; French first, then English.
    assert!(
        text.contains("a_revoir") && text.contains("/espace/campagnes"),
        "{text}"
    );
    let (bonjour, hello) = (text.find("Bonjour").unwrap(), text.find("Hello").unwrap());
    assert!(bonjour < hello, "{text}");

    // The SMTP server stops: new e-mails wait, tried and kept.
    drop(smtp);
    admin(
        dir,
        db,
        &[
            "create-campaign",
            "--name",
            "Hiver",
            "--start",
            &today.to_string(),
            "--end",
            &end,
        ],
    );
    wait_for("failed attempts", async || {
        outbox(db).await.iter().any(|(key, sent, attempts, error)| {
            key.starts_with("campaign:") && sent.is_none() && *attempts >= 2 && error.is_some()
        })
    })
    .await;
    let waiting: Vec<_> = outbox(db)
        .await
        .into_iter()
        .filter(|(_, sent, _, _)| sent.is_none())
        .collect();
    assert_eq!(
        waiting.len(),
        2,
        "both of the new campaign's e-mails are kept"
    );

    // Back up on the same port: sending resumes, nothing was lost.
    let (_smtp, received) = smtp_server(port);
    wait_for("all e-mails sent", async || {
        outbox(db)
            .await
            .iter()
            .all(|(_, sent, _, _)| sent.is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(outbox(db).await.len(), 4);
    // Exactly the two that waited: none lost, none sent twice.
    let text = received.lock().unwrap().clone();
    assert_eq!(messages(&text), 2, "{text}");
    assert!(
        text.contains("Hiver") && !text.contains("Automne"),
        "{text}"
    );
    drop((server, twin));
}

/// Two instances' sending rounds at the same moment, on two pools of the one database: each
/// e-mail is taken by one of them and sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rounds_at_once_send_each_e_mail_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("twice.db");
    let url = database_url(&db);
    let (a, b) = (
        proximites::db::Store::connect(&url).await.unwrap(),
        proximites::db::Store::connect(&url).await.unwrap(),
    );
    let mut tx = a.begin().await.unwrap();
    for n in 0..6 {
        proximites::mail::enqueue(
            &mut tx,
            &format!("test:{n}"),
            "referente@example.fr",
            &format!("Message {n}"),
            "Bonjour",
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let port = free_port();
    let (_smtp, received) = smtp_server(port);
    let mailer = proximites::mail::Mailer::parse(
        &format!("smtp://127.0.0.1:{port}"),
        "Proximités <ne-pas-repondre@example.fr>",
    )
    .unwrap();
    let (sent_a, sent_b) = tokio::join!(
        proximites::mail::send_pending(&a, &mailer),
        proximites::mail::send_pending(&b, &mailer)
    );
    assert_eq!(sent_a.unwrap() + sent_b.unwrap(), 6);
    let deadline = Instant::now() + Duration::from_secs(10);
    while messages(&received.lock().unwrap()) < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = received.lock().unwrap().clone();
    assert_eq!(messages(&text), 6, "{text}");
    for n in 0..6 {
        assert_eq!(text.matches(&format!("Message {n}")).count(), 1, "{text}");
    }
}
