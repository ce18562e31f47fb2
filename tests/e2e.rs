//! End-to-end tests of the built `proximites` binary: `serve` over real HTTP, `import` and `synth`
//! as a user runs them, and the SQLite file they leave behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use common::binary::{command, database_url, spawn_server, AsUrl, KillOnDrop};
use serde_json::Value;

/// The project CSV header.
const HEADER: &str = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description";

/// Runs the CLI to its end: (status, stdout, stderr).
fn run_cli(dir: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let output = command(dir).args(args).output().expect("run proximites");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

/// `proximites import FILE --database-url DB [extra…]`.
fn import(
    dir: &Path,
    db: &(impl AsUrl + ?Sized),
    file: &Path,
    extra: &[&str],
) -> (ExitStatus, String, String) {
    let url = db.as_url();
    let mut args = vec!["--database-url", &url, "import", path_str(file)];
    args.extend_from_slice(extra);
    run_cli(dir, &args)
}

/// The counts line of an import summary, without its indent: `lignes N · créées N · …`.
/// A new API token of the platform operator, made as a script makes it (`admin create-token`).
fn operator_token(dir: &Path, db: &(impl AsUrl + ?Sized), name: &str) -> String {
    let (status, token, stderr) = run_cli(
        dir,
        &[
            "--database-url",
            &db.as_url(),
            "admin",
            "create-token",
            "--operator",
            "--name",
            name,
        ],
    );
    assert!(status.success(), "{stderr}");
    token.trim().to_owned()
}

/// Imports into `db`, for the source « Riom », one swimming store of Clermont-Ferrand named
/// `name`, under the reference `reference` (written to `DIR/REFERENCE.csv` first).
fn import_pool(dir: &Path, db: &(impl AsUrl + ?Sized), reference: &str, name: &str) {
    let file = dir.join(format!("{reference}.csv"));
    std::fs::write(
        &file,
        format!("{HEADER}\n{reference},piscine,{name},,,,63113,3.08,45.77,,,,,,\n"),
    )
    .unwrap();
    let (status, stdout, stderr) = import(dir, db, &file, &["--source", "Riom"]);
    assert!(status.success(), "{stdout}{stderr}");
}

fn summary(stdout: &str) -> &str {
    stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("lignes "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"))
}

/// `proximites synth` into `dir/name`.
fn synth(dir: &Path, count: u64, seed: u64, name: &str) -> PathBuf {
    let file = dir.join(name);
    let (status, stdout, stderr) = run_cli(
        dir,
        &[
            "synth",
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
            "-o",
            path_str(&file),
        ],
    );
    assert!(status.success(), "synth failed: {stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{count} fiches générées")),
        "{stdout}"
    );
    file
}

/// GET → (status, content type, JSON body or Null).
async fn get(client: &reqwest::Client, url: &str) -> (u16, String, Value) {
    let response = client.get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

async fn open_db(db: &Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&database_url(db))
        .await
        .expect("open the test database")
}

async fn count_services(db: &Path) -> i64 {
    let store = open_db(db).await;
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM services")
        .fetch_one(&store)
        .await
        .expect("count services");
    store.close().await;
    n
}

async fn service_id(store: &sqlx::SqlitePool, source_ref: &str) -> String {
    sqlx::query_scalar("SELECT id FROM services WHERE source_ref = ?")
        .bind(source_ref)
        .fetch_one(store)
        .await
        .unwrap_or_else(|e| panic!("no entry {source_ref}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_on_a_fresh_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server(dir.path(), None, true).await;
    assert!(
        dir.path().join("proximites.db").is_file(),
        "the default database is created in the working directory"
    );
    let client = reqwest::Client::new();

    let (status, _, health) = get(&client, &server.url("/healthz")).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");

    let (status, _, typologies) = get(&client, &server.url("/api/v1/typologies")).await;
    assert_eq!(status, 200);
    let typologies = typologies.as_array().expect("an array of typologies");
    assert_eq!(typologies.len(), 175);
    for (theme, expected) in [
        ("services-publics", 88),
        ("action-sociale-sante", 28),
        ("sports-loisirs", 27),
        ("enseignement-education", 20),
        ("vie-pratique", 12),
    ] {
        let n = typologies
            .iter()
            .filter(|t| t["theme"]["code"] == theme)
            .count();
        assert_eq!(n, expected, "typologies of {theme}");
    }
    let mairie = typologies
        .iter()
        .find(|t| t["code"] == "mairie")
        .expect("the mairie typology");
    assert_eq!(mairie["published_count"], 1283, "the Auvergne town halls");

    let (status, _, mairie) = get(&client, &server.url("/api/v1/typologies/mairie")).await;
    assert_eq!(status, 200);
    assert_eq!(mairie["code"], "mairie");

    let (status, _, openapi) = get(&client, &server.url("/api/v1/openapi.json")).await;
    assert_eq!(status, 200);
    assert!(openapi["paths"]["/api/v1/services/{id}"].is_object());

    let status = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "graceful shutdown on SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_then_read_back_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.db");
    let server = spawn_server(dir.path(), Some(&db), false).await;
    let client = reqwest::Client::new();

    let file = dir.path().join("ville.csv");
    std::fs::write(
        &file,
        format!(
            "{HEADER}\n\
             test-pharmacie,pharmacie,Pharmacie de Jaude,12 place de Jaude,63000,Clermont-Ferrand,63113,3.0863,45.7797,,,,,,\n\
             test-piscine,piscine,Piscine de Riom,Avenue de la Piscine,63200,Riom,,3.1130,45.8937,,,,,,\n\
             test-poste,bureau-poste,Bureau de poste de Jaude,1 rue du Maréchal Foch,63000,Clermont-Ferrand,63113,3.0836,45.7772,04 73 00 00 00,,,\"Mo-Fr 09:00-12:00,14:00-17:00\",,\n"
        ),
    )
    .unwrap();

    let (status, stdout, stderr) = import(dir.path(), &db, &file, &["--source", "Ville de Test"]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "{} (CSV Proximités, source « Ville de Test ») : importé / imported",
            file.display()
        )),
        "{stdout}"
    );
    assert_eq!(
        summary(&stdout),
        "lignes 3 · créées 3 · mises à jour 0 · inchangées 0 · rejetées 0 · à vérifier 0"
    );

    let store = open_db(&db).await;
    let pharmacie = service_id(&store, "test-pharmacie").await;
    let piscine = service_id(&store, "test-piscine").await;
    let poste = service_id(&store, "test-poste").await;
    store.close().await;

    for (id, source_ref, name, typology, insee) in [
        (
            &pharmacie,
            "test-pharmacie",
            "Pharmacie de Jaude",
            "pharmacie",
            "63113",
        ),
        (
            &piscine,
            "test-piscine",
            "Piscine de Riom",
            "piscine",
            "63300",
        ),
        (
            &poste,
            "test-poste",
            "Bureau de poste de Jaude",
            "bureau-poste",
            "63113",
        ),
    ] {
        assert_eq!(id.len(), 16, "id {id}");
        let (status, _, service) =
            get(&client, &server.url(&format!("/api/v1/services/{id}"))).await;
        assert_eq!(status, 200, "{source_ref}: {service}");
        assert_eq!(service["id"], id.as_str());
        assert_eq!(service["name"], name);
        assert_eq!(service["typology"]["code"], typology);
        assert_eq!(service["commune"]["insee_code"], insee, "{source_ref}");
        assert_eq!(service["source"]["name"], "Ville de Test");
        assert_eq!(service["source"]["reference"], source_ref);
        assert_eq!(service["status"], "published");
    }
    let (_, _, poste) = get(&client, &server.url(&format!("/api/v1/services/{poste}"))).await;
    assert_eq!(poste["phones"][0]["display"], "04 73 00 00 00");
    assert!(poste["opening_hours"]
        .as_str()
        .is_some_and(|h| h.contains("09:00-12:00")));

    let (status, _, riom) = get(&client, &server.url("/api/v1/communes/63300")).await;
    assert_eq!(status, 200);
    assert_eq!(riom["published_services"], 1);

    let (status, content_type, problem) =
        get(&client, &server.url("/api/v1/services/0000000000000000")).await;
    assert_eq!(status, 404);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["code"], "not_found");

    let (status, stdout, stderr) = import(dir.path(), &db, &file, &["--source", "Ville de Test"]);
    assert!(status.success(), "{stdout}{stderr}");
    assert_eq!(
        summary(&stdout),
        "lignes 3 · créées 0 · mises à jour 0 · inchangées 3 · rejetées 0 · à vérifier 0"
    );
    assert_eq!(count_services(&db).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_one_bad_row_is_rejected_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.db");
    let file = synth(dir.path(), 2000, 3, "communes.csv");

    // A copy of a valid metropolitan row, lon and lat swapped, appended as the last line.
    let mut text = std::fs::read_to_string(&file).unwrap();
    assert!(text.ends_with('\n'));
    let record = csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(Result::unwrap)
        .find(|r| {
            let lon: f64 = r[7].parse().unwrap();
            let lat: f64 = r[8].parse().unwrap();
            (-5.0..10.0).contains(&lon) && (41.0..52.0).contains(&lat)
        })
        .expect("a row in metropolitan France");
    let mut fields: Vec<String> = record.iter().map(str::to_owned).collect();
    fields.swap(7, 8);
    fields[0] = "swapped-coordinates".to_owned();
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&fields).unwrap();
    let line = text.bytes().filter(|&b| b == b'\n').count() + 1;
    text.push_str(std::str::from_utf8(&writer.into_inner().unwrap()).unwrap());
    std::fs::write(&file, text).unwrap();

    let (status, stdout, stderr) = import(dir.path(), &db, &file, &[]);
    assert_eq!(status.code(), Some(2), "{stdout}{stderr}");
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("ligne "))
        .collect();
    assert_eq!(errors.len(), 1, "{stdout}");
    assert!(
        errors[0].starts_with(&format!("  ligne {line}, champ « lat » : ")),
        "{stdout}"
    );
    assert!(errors[0].contains("inversées"), "{stdout}");
    assert_eq!(
        summary(&stdout),
        "lignes 2001 · à créer 2000 · à mettre à jour 0 · inchangées 0 · rejetées 1 · à vérifier 0"
    );
    assert_eq!(count_services(&db).await, 0, "nothing of a rejected file");

    let (status, stdout, stderr) = import(dir.path(), &db, &file, &["--skip-invalid"]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("ligne {line}, champ « lat »")));
    assert_eq!(
        summary(&stdout),
        "lignes 2001 · créées 2000 · mises à jour 0 · inchangées 0 · rejetées 1 · à vérifier 0"
    );
    assert_eq!(count_services(&db).await, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_35000_row_file_imports_with_a_correct_summary() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.db");
    let file = synth(dir.path(), 35_000, 5, "france.csv");
    let report_file = dir.path().join("r.json");

    let (status, stdout, stderr) = import(
        dir.path(),
        &db,
        &file,
        &["--report", path_str(&report_file)],
    );
    assert!(status.success(), "{stdout}{stderr}");
    assert_eq!(
        summary(&stdout),
        "lignes 35000 · créées 35000 · mises à jour 0 · inchangées 0 · rejetées 0 · à vérifier 0"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();
    assert_eq!(report["file"], path_str(&file));
    assert_eq!(report["format"], "project_csv");
    assert_eq!(report["source"], "france");
    assert_eq!(report["rows"], 35_000);
    assert_eq!(report["created"], 35_000);
    assert_eq!(report["updated"], 0);
    assert_eq!(report["unchanged"], 0);
    assert_eq!(report["rejected"], 0);
    assert_eq!(report["committed"], true);
    assert_eq!(report["errors"], serde_json::json!([]));
    assert_eq!(count_services(&db).await, 35_000);

    let (status, stdout, stderr) = import(dir.path(), &db, &file, &[]);
    assert!(status.success(), "{stdout}{stderr}");
    assert_eq!(
        summary(&stdout),
        "lignes 35000 · créées 0 · mises à jour 0 · inchangées 35000 · rejetées 0 · à vérifier 0"
    );
    assert_eq!(count_services(&db).await, 35_000);

    // The command line writes the database and its change log only: `check` reports the text
    // index's lag (the first import's 35,000 rows), which a server, or `--repair`, applies.
    let url = database_url(&db);
    let (status, stdout, stderr) = run_cli(dir.path(), &["--database-url", &url, "check"]);
    assert!(!status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("journal des changements / change log: dernière ligne / head 35000"),
        "{stdout}"
    );
    assert!(stdout.contains("retard / lag 35000"), "{stdout}");
    let (status, stdout, stderr) =
        run_cli(dir.path(), &["--database-url", &url, "check", "--repair"]);
    assert!(status.success(), "{stdout}{stderr}");
    let (status, stdout, stderr) = run_cli(dir.path(), &["--database-url", &url, "check"]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("index à jour"), "{stdout}");
    assert!(stdout.contains("retard / lag 0"), "{stdout}");

    // An entry withdrawn behind the indexes' back is reported, then repaired.
    let store = open_db(&db).await;
    sqlx::query("UPDATE services SET status = 'withdrawn' WHERE source_ref = 'synth-5-7'")
        .execute(&store)
        .await
        .unwrap();
    store.close().await;
    let (status, stdout, _) = run_cli(dir.path(), &["--database-url", &url, "check"]);
    assert!(!status.success());
    assert!(
        stdout.contains("dans l'index texte mais pas publiée"),
        "{stdout}"
    );
    let (status, stdout, stderr) =
        run_cli(dir.path(), &["--database-url", &url, "check", "--repair"]);
    assert!(status.success(), "{stdout}{stderr}");
    let (status, stdout, _) = run_cli(dir.path(), &["--database-url", &url, "check"]);
    assert!(
        status.success() && stdout.contains("index à jour"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_import_leaves_the_database_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.db");
    let seed = synth(dir.path(), 2000, 3, "seed.csv");
    let (status, stdout, stderr) = import(dir.path(), &db, &seed, &[]);
    assert!(status.success(), "{stdout}{stderr}");
    assert_eq!(count_services(&db).await, 2000);
    let indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'services' ORDER BY name";
    let store = open_db(&db).await;
    let indexes_before: Vec<String> = sqlx::query_scalar(indexes).fetch_all(&store).await.unwrap();
    store.close().await;

    let big = synth(dir.path(), 400_000, 9, "big.csv");
    let url = database_url(&db);
    let mut import_process = KillOnDrop(
        command(dir.path())
            .args(["--database-url", &url, "import", path_str(&big)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the import"),
    );
    // Waiting for the process: a debug build needs well over 1.5 s for 400,000 rows.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Some(status) = import_process.0.try_wait().unwrap() {
        panic!("the import ended ({status}) before it could be killed: make the file larger");
    }
    import_process.0.kill().unwrap();
    let status = import_process.0.wait().unwrap();
    assert!(!status.success());

    assert_eq!(
        count_services(&db).await,
        2000,
        "the killed import is undone"
    );
    let store = open_db(&db).await;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&store)
        .await
        .unwrap();
    assert_eq!(integrity, "ok");
    let indexes_after: Vec<String> = sqlx::query_scalar(indexes).fetch_all(&store).await.unwrap();
    assert_eq!(indexes_after, indexes_before, "the indexes are all there");
    store.close().await;

    let (status, stdout, stderr) = import(dir.path(), &db, &seed, &[]);
    assert!(status.success(), "{stdout}{stderr}");
    assert_eq!(
        summary(&stdout),
        "lignes 2000 · créées 0 · mises à jour 0 · inchangées 2000 · rejetées 0 · à vérifier 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_files_are_reported_by_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.db");
    let valid = "ok-1,mairie,Mairie de Clermont-Ferrand,10 rue Philippe Marcombes,63000,Clermont-Ferrand,63113,3.0863,45.7797,,,,,,\n";

    let misspelt = dir.path().join("misspelt.csv");
    std::fs::write(
        &misspelt,
        format!("{}\n{valid}", HEADER.replace("typology", "typologie")),
    )
    .unwrap();
    let (status, stdout, stderr) = import(dir.path(), &db, &misspelt, &[]);
    assert_eq!(status.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.contains("ligne 1"), "{stdout}");
    assert!(stdout.contains("colonne 2"), "{stdout}");
    assert!(stdout.contains("typologie"), "{stdout}");
    assert_eq!(count_services(&db).await, 0);

    let latin1 = dir.path().join("latin1.csv");
    let mut bytes = format!("{HEADER}\n{valid}").into_bytes();
    bytes.extend_from_slice(b"ok-2,mairie,Mairie de Riom,5 place Jean-Baptiste Laurent,63200,Riom,63300,3.1130,45.8937,,,,,,Pr\xe9fecture\n");
    std::fs::write(&latin1, bytes).unwrap();
    let (status, stdout, stderr) = import(dir.path(), &db, &latin1, &[]);
    assert_eq!(status.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.contains("ligne 3"), "{stdout}");
    assert!(stdout.contains("UTF-8"), "{stdout}");
    assert_eq!(count_services(&db).await, 0);

    let unknown = dir.path().join("unknown.csv");
    std::fs::write(
        &unknown,
        format!("{HEADER}\n{valid}ok-3,boulangerie,Boulangerie du Centre,,63000,Clermont-Ferrand,63113,3.0850,45.7790,,,,,,\n"),
    )
    .unwrap();
    let (status, stdout, stderr) = import(dir.path(), &db, &unknown, &[]);
    assert_eq!(status.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.contains("ligne 3, champ « typology »"), "{stdout}");
    assert!(stdout.contains("boulangerie"), "{stdout}");
    assert_eq!(count_services(&db).await, 0);
}

/// Everything a bulk update writes, as one text: the entries, their history, the import journal.
async fn written_state(db: &str) -> (i64, String, i64, i64) {
    let store = proximites::db::Store::connect(db).await.unwrap();
    let count = async |sql: &str| -> i64 {
        proximites::on_engine!(&store, |pool| sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await
            .unwrap())
    };
    let rows: Vec<(String,)> = proximites::on_engine!(&store, |pool| sqlx::query_as(
        "SELECT id || ':' || content_hash || ':' || status FROM services ORDER BY id"
    )
    .fetch_all(pool)
    .await
    .unwrap());
    let digest = rows.into_iter().map(|(r,)| r).collect::<Vec<_>>().join(",");
    let state = (
        count("SELECT COUNT(*) FROM services").await,
        digest,
        count("SELECT COUNT(*) FROM service_history").await,
        count("SELECT COUNT(*) FROM imports").await,
    );
    store.close().await;
    state
}

/// Whether a transaction is writing entries: on SQLite, another connection holds the write
/// lock; on PostgreSQL, a writer holds the change log's advisory lock (`db::order_log`).
async fn write_locked(db: &str) -> bool {
    use sqlx::{ConnectOptions, Connection};
    if db.starts_with("postgres") {
        let Ok(mut conn) = sqlx::PgConnection::connect(db).await else {
            return false;
        };
        let locked: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap_or(false);
        let _ = conn.close().await;
        return locked;
    }
    let options: sqlx::sqlite::SqliteConnectOptions = db.parse().unwrap();
    let Ok(mut conn) = options.busy_timeout(Duration::ZERO).connect().await else {
        return false;
    };
    let locked = sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .is_err();
    if !locked {
        let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
    }
    let _ = conn.close().await;
    locked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_during_a_bulk_update_leaves_the_data_as_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(&dir.path().join("test.db"));
    killed_during_a_bulk_update(dir.path(), &db).await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_during_a_bulk_update_on_postgresql_leaves_the_data_as_before_it() {
    let cluster = common::postgres::Cluster::start();
    let db = cluster.database("killed").await;
    let dir = tempfile::tempdir().unwrap();
    killed_during_a_bulk_update(dir.path(), &db).await;
}

/// A server on `db` killed (SIGKILL) while a bulk update's transaction is open: the data is as
/// before it, and the server restarted on it sees the entries as they were.
async fn killed_during_a_bulk_update(dir: &Path, db: &str) {
    let url = db.to_owned();
    let (status, organisation, stderr) = run_cli(
        dir,
        &[
            "--database-url",
            &url,
            "admin",
            "create-organisation",
            "--name",
            "Région test",
            "--kind",
            "region",
            "--territory",
            "departement:63",
        ],
    );
    assert!(status.success(), "{stderr}");
    let token = operator_token(dir, db, "sig");
    let organisation = organisation.trim().to_owned();
    let mut server = common::binary::spawn_server_with(dir, Some(db), false, &[]).await;
    let client = reqwest::Client::new();
    let bulk = server.url(&format!(
        "/api/v1/services/bulk?organisation={organisation}"
    ));
    let seed = std::fs::read(synth(dir, 2000, 3, "seed.csv")).unwrap();
    let seeded = client
        .post(&bulk)
        .bearer_auth(&token)
        .body(seed.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(seeded.status(), 200, "{}", seeded.text().await.unwrap());
    let before = written_state(db).await;
    assert_eq!(before.0, 2000);

    // A bulk update of 150,000 rows, killed (SIGKILL) while its transaction is open.
    let big = std::fs::read(synth(dir, 150_000, 9, "big.csv")).unwrap();
    let request = tokio::spawn(client.post(&bulk).bearer_auth(&token).body(big).send());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !write_locked(db).await {
        assert!(
            !request.is_finished(),
            "the bulk update ended before it could be killed: make the file larger"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the bulk update never started writing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.process.0.kill().unwrap();
    server.process.0.wait().unwrap();
    assert!(request.await.unwrap().is_err(), "the request got no answer");

    assert_eq!(
        written_state(db).await,
        before,
        "the data is as before the bulk update"
    );
    if !db.starts_with("postgres") {
        let store = open_db(Path::new(db.trim_start_matches("sqlite://"))).await;
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&store)
            .await
            .unwrap();
        assert_eq!(integrity, "ok");
        store.close().await;
    }

    // The server starts again on it, and sees the entries as they were.
    let server = common::binary::spawn_server_with(dir, Some(db), false, &[]).await;
    let checked = client
        .post(server.url(&format!(
            "/api/v1/services/bulk?organisation={organisation}&dry_run=true"
        )))
        .bearer_auth(&token)
        .body(seed)
        .send()
        .await
        .unwrap();
    let report: Value = checked.json().await.unwrap();
    assert_eq!(report["unchanged"], 2000, "{report}");
    assert_eq!(report["plan"]["missing"].as_array().map(Vec::len), Some(0));
}

/// `proximites backup` copies the database while a server serves it (what is written after is
/// not in the copy); `proximites restore` refuses while a server runs or a file that is not a
/// backup, then puts the copy back (the replaced file kept aside, the text index removed), and
/// the restarted server searches what the copy holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_serving_and_restore_after() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    let url = database_url(&db);
    import_pool(dir.path(), &db, "b1", "Piscine de la sauvegarde");
    let mut server = spawn_server(dir.path(), Some(&db), false).await;
    let copy = dir.path().join("copies/backup.db");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let (status, stdout, stderr) = run_cli(
        dir.path(),
        &["--database-url", &url, "backup", path_str(&copy)],
    );
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("sauvegarde / backup"), "{stdout}");
    assert_eq!(count_services(&copy).await, 1);
    // Written after the copy: not in it.
    import_pool(dir.path(), &db, "l1", "Piscine d'après la sauvegarde");
    let (status, stdout, stderr) = run_cli(
        dir.path(),
        &["--database-url", &url, "restore", path_str(&copy)],
    );
    assert!(!status.success(), "{stdout}");
    assert!(stderr.contains("un serveur utilise cette base"), "{stderr}");
    assert!(server.terminate(Duration::from_secs(10)).success());

    let not_a_backup = dir.path().join("nothing.db");
    std::fs::write(&not_a_backup, b"not a database").unwrap();
    let (status, _, stderr) = run_cli(
        dir.path(),
        &["--database-url", &url, "restore", path_str(&not_a_backup)],
    );
    assert!(!status.success());
    assert!(
        stderr.contains("n'est pas une sauvegarde de Proximités lisible"),
        "{stderr}"
    );
    assert_eq!(
        count_services(&db).await,
        2,
        "a refused restore changes nothing"
    );

    let (status, stdout, stderr) = run_cli(
        dir.path(),
        &["--database-url", &url, "restore", path_str(&copy)],
    );
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("1 fiches"), "{stdout}");
    assert!(dir.path().join("p.db.before-restore").is_file());
    assert!(!dir.path().join("p.db.text").exists());
    assert_eq!(count_services(&db).await, 1);

    let server = spawn_server(dir.path(), Some(&db), false).await;
    let client = reqwest::Client::new();
    let (_, _, found) = get(&client, &server.url("/api/v1/services?q=piscine")).await;
    let names: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Piscine de la sauvegarde"]);
}

/// Two instances on one database, each with its own data directory, behind nginx configured by
/// `deploy/nginx.conf` itself (only its ports changed): reads go through; an import by a third
/// process is searchable on both; a contributor signed in through nginx is known to both; failed
/// sign-ins on both count together; a guide queued through one is served by the other, and one
/// queued elsewhere is rendered by them; under a constant read load, one instance killed and
/// restarted: every read through nginx succeeds (nginx retries on the other), and the
/// restarted instance catches up from the change log without a rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(&dir.path().join("shared.db"));
    two_instances_behind_nginx_on(dir.path(), &db).await;
}

/// The same on PostgreSQL: two instances on one database of a private cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgresql_behind_nginx() {
    let cluster = common::postgres::Cluster::start();
    let db = cluster.database("shared").await;
    let dir = tempfile::tempdir().unwrap();
    two_instances_behind_nginx_on(dir.path(), &db).await;
}

/// Two instances on the database `db` behind the shipped nginx configuration, `dir` holding
/// what they derive: sessions, limits, guides and writes are shared, and one instance killed
/// under a constant read load fails no request.
async fn two_instances_behind_nginx_on(dir: &Path, db: &str) {
    let nginx_binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("nginx (paquet Debian nginx-light requis)");
    import_pool(dir, db, "p1", "Piscine de départ");
    let data = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (data_a, data_b) = (data("instance-a"), data("instance-b"));
    let mut a = common::binary::spawn_server_with(
        dir,
        Some(db),
        false,
        &["--data-dir", &data_a, "--trusted-proxy", "127.0.0.1/32"],
    )
    .await;
    let b = common::binary::spawn_server_with(
        dir,
        Some(db),
        false,
        &["--data-dir", &data_b, "--trusted-proxy", "127.0.0.1/32"],
    )
    .await;
    assert!(Path::new(&data_a).join("text").is_dir() && Path::new(&data_b).join("text").is_dir());
    let port_of = |base: &str| base.rsplit(':').next().unwrap().to_owned();
    let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let front_port = front.local_addr().unwrap().port();
    drop(front);
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf"))
            .unwrap()
            .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", port_of(&a.base)))
            .replace("127.0.0.1:8082", &format!("127.0.0.1:{}", port_of(&b.base)))
            .replace("listen 80;", &format!("listen 127.0.0.1:{front_port};"));
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {p}/body;\n proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fastcgi;\n uwsgi_temp_path {p}/uwsgi;\n scgi_temp_path {p}/scgi;\n\
             {shipped}\n}}\n",
            p = prefix.display()
        ),
    )
    .unwrap();
    let _nginx = common::binary::StopOnDrop(
        std::process::Command::new(nginx_binary)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    let front = format!("http://127.0.0.1:{front_port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if client.get(format!("{front}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        up,
        "nginx did not start: {}",
        std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default()
    );
    for _ in 0..10 {
        let (status, _, _) = get(&client, &format!("{front}/api/v1/typologies/piscine")).await;
        assert_eq!(status, 200);
    }

    // A write by another process: searchable on both instances.
    import_pool(dir, db, "p2", "Piscine des deux instances");
    for server in [&a, &b] {
        let url = server.url("/api/v1/services?q=deux%20instances");
        let mut found = false;
        for _ in 0..50 {
            let (_, _, body) = get(&client, &url).await;
            if body["total"] == 1 {
                found = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(found, "not searchable on {}: {}", server.base, server.log());
    }

    // What the instances share, whichever one answers: a contributor's session, the sign-in
    // limits, and the printed guides (queued by one, rendered by either, served by both).
    let mut create = command(dir)
        .args([
            "--database-url",
            db,
            "admin",
            "create-operator",
            "--email",
            "ops@example.fr",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut create.stdin.take().unwrap(),
        b"une phrase de passe assez longue\n",
    )
    .unwrap();
    let created = create.wait_with_output().unwrap();
    assert!(created.status.success(), "{created:?}");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = async |base: &str, email: &str, password: &str| {
        let (csrf, cookie) = common::binary::login_form_at(&browser, base).await;
        browser
            .post(format!("{base}/espace/connexion"))
            .header("cookie", cookie)
            .form(&[("email", email), ("password", password), ("csrf", &csrf)])
            .send()
            .await
            .unwrap()
    };
    let signed = sign_in(&front, "ops@example.fr", "une phrase de passe assez longue").await;
    assert_eq!(signed.status(), 303);
    let session = signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("proximites_session="))
        .expect("session cookie");
    for base in [&a.base, &b.base, &front] {
        let page = browser
            .get(format!("{base}/espace"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "the session is not known at {base}");
    }
    // Failed sign-ins spread over both instances count together.
    for n in 0..5 {
        let base = if n % 2 == 0 { &a.base } else { &b.base };
        let refused = sign_in(base, "intrus@example.fr", "pas le bon mot de passe").await;
        assert_eq!(refused.status(), 401, "attempt {n} at {base}");
    }
    for base in [&a.base, &b.base] {
        let limited = sign_in(base, "intrus@example.fr", "pas le bon mot de passe").await;
        assert_eq!(limited.status(), 429, "at {base}");
    }

    let token = operator_token(dir, db, "guides");
    let queued = client
        .post(a.url("/api/v1/directories"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"territory": "commune:63113", "typologies": ["piscine"], "title": "Les piscines de Riom"}))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), 202);
    let job: Value = queued.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let done = async |server: &common::binary::Server, id: &str| {
        for _ in 0..600 {
            let (status, _, job) =
                get(&client, &server.url(&format!("/api/v1/directories/{id}"))).await;
            assert_eq!(status, 200, "{job}");
            assert_ne!(job["stage"], "failed", "{job}");
            if job["stage"] == "done" {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("guide {id} not made: {}", server.log());
    };
    let made = done(&b, &id).await;
    assert_eq!(made["entries"], 2, "{made}");
    let pdf = client
        .get(b.url(&format!("/api/v1/directories/{id}/guide.pdf")))
        .send()
        .await
        .unwrap();
    assert_eq!(pdf.status(), 200);
    assert!(pdf.bytes().await.unwrap().starts_with(b"%PDF"));
    // The same choices through the other instance: the guide already made.
    let again: Value = client
        .post(b.url("/api/v1/directories"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"territory": "commune:63113", "typologies": ["piscine"], "title": "Les piscines de Riom"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (again["id"].as_str(), &again["cached"]),
        (Some(id.as_str()), &Value::Bool(true))
    );
    // A guide queued by some other instance (a row in the queue, nothing in any memory): one
    // of these two renders it from its choices.
    let store = proximites::db::Store::connect(db).await.unwrap();
    proximites::on_engine!(&store, |pool| sqlx::query(
        "INSERT INTO guide_jobs (id, cache_key, owner, choices, public_url, stage, progress, created_at) \
         VALUES ('job-elsewhere', 'key-elsewhere', 'operator', $1, 'http://127.0.0.1:8080', 'queued', 0, $2)",
    )
    .bind(serde_json::json!({"territory": "commune:63113", "typologies": ["piscine"], "date": "2026-12-01"}).to_string())
    .bind(chrono::Utc::now())
    .execute(pool)
    .await
    .map(drop))
    .unwrap();
    store.close().await;
    let made = done(&a, "job-elsewhere").await;
    assert_eq!(made["entries"], 2, "{made}");
    let html = client
        .get(format!(
            "{front}/api/v1/directories/job-elsewhere/guide.html"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(html.status(), 200);
    assert!(html
        .text()
        .await
        .unwrap()
        .contains("Piscine des deux instances"));

    // A constant read load through nginx, 20 requests a second for 30 s, during which one
    // instance is killed and, once an entry was written on the other, restarted: no request
    // fails, and the restarted instance catches up from the change log (the entry written
    // while it was down is found) without rebuilding its indexes from the database.
    let load_url = format!("{front}/api/v1/services?q=piscine");
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut requests = Vec::new();
        for _ in 0..600 {
            tick.tick().await;
            let (client, url) = (client.clone(), load_url.clone());
            requests.push(tokio::spawn(async move {
                match client
                    .get(&url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                {
                    Ok(answer) if answer.status() == 200 => None,
                    Ok(answer) => Some(answer.status().to_string()),
                    Err(error) => Some(error.to_string()),
                }
            }));
        }
        let mut failures = Vec::new();
        for request in requests {
            failures.extend(request.await.unwrap());
        }
        failures
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _ = a.process.0.kill();
    let _ = a.process.0.wait();
    let store = proximites::db::Store::connect(db).await.unwrap();
    let (riom,): (String,) = proximites::on_engine!(&store, |pool| sqlx::query_as(
        "SELECT id FROM organisations WHERE name = 'Riom'"
    )
    .fetch_one(pool)
    .await)
    .unwrap();
    store.close().await;
    let written = client
        .post(b.url("/api/v1/services"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"organisation_id": riom, "typology": "piscine", "name": "Piscine du redémarrage", "lon": 3.08, "lat": 45.77}))
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 201, "{}", written.text().await.unwrap());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let a = common::binary::spawn_server_with(
        dir,
        Some(db),
        false,
        &["--data-dir", &data_a, "--trusted-proxy", "127.0.0.1/32"],
    )
    .await;
    let mut caught_up = false;
    for _ in 0..50 {
        let (_, _, body) = get(&client, &a.url("/api/v1/services?q=redemarrage")).await;
        if body["total"] == 1 {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        caught_up,
        "the restarted instance did not catch up: {}",
        a.log()
    );
    assert!(
        !a.log().contains("from the database"),
        "the restarted instance rebuilt its indexes: {}",
        a.log()
    );
    let failures = load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of 600 reads failed: {failures:?}",
        failures.len()
    );
    for server in [&a, &b] {
        let (status, _, ready) = get(&client, &server.url("/readyz")).await;
        assert_eq!(status, 200, "{ready}");
    }
}

/// `proximites backup` taken while a contributor's writes go on through the API: once restored,
/// the database holds every write answered before the backup started, `proximites check` finds
/// the indexes the server rebuilt consistent with it, and nothing is half-written (each entry
/// written is whole, with its history and change-log rows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writes_run_holds_every_write_committed_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    let url = database_url(&db);
    import_pool(dir.path(), &db, "w0", "Piscine d'avant");
    let token = operator_token(dir.path(), &db, "w");
    let store = open_db(&db).await;
    let (riom,): (String,) = sqlx::query_as("SELECT id FROM organisations WHERE name = 'Riom'")
        .fetch_one(&store)
        .await
        .unwrap();
    store.close().await;
    let mut server = spawn_server(dir.path(), Some(&db), false).await;

    // One write after the other, each noted with when its answer came.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, url, token) = (stop.clone(), server.url("/api/v1/services"), token.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answered = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 2_000 {
                n += 1;
                let name = format!("Écriture {n}");
                let written = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"organisation_id": riom, "typology": "piscine", "name": name, "lon": 3.08, "lat": 45.77}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(written.status(), 201);
                answered.push((name, std::time::Instant::now()));
            }
            answered
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let copy = dir.path().join("copy.db");
    let backup_started = std::time::Instant::now();
    let (status, stdout, stderr) = {
        let (dir, url, copy) = (dir.path().to_owned(), url.clone(), copy.clone());
        tokio::task::spawn_blocking(move || {
            run_cli(&dir, &["--database-url", &url, "backup", path_str(&copy)])
        })
        .await
        .unwrap()
    };
    assert!(status.success(), "{stdout}{stderr}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = writer.await.unwrap();
    let before: Vec<&str> = answered
        .iter()
        .filter(|(_, at)| *at < backup_started)
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        before.len() >= 5 && answered.len() > before.len(),
        "writes before the backup: {}, in all: {}",
        before.len(),
        answered.len()
    );
    assert!(server.terminate(Duration::from_secs(10)).success());

    let (status, stdout, stderr) = run_cli(
        dir.path(),
        &["--database-url", &url, "restore", path_str(&copy)],
    );
    assert!(status.success(), "{stdout}{stderr}");
    let store = open_db(&db).await;
    let names: Vec<(String,)> = sqlx::query_as("SELECT name FROM services")
        .fetch_all(&store)
        .await
        .unwrap();
    let names: std::collections::HashSet<String> = names.into_iter().map(|(n,)| n).collect();
    for name in &before {
        assert!(
            names.contains(*name),
            "{name} answered before the backup, missing from it"
        );
    }
    // Each entry the copy holds is whole: its creation in the history and in the change log.
    let (entries, created, logged): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM services WHERE name LIKE 'Écriture %'), \
         (SELECT COUNT(*) FROM service_history h JOIN services s ON s.id = h.service_id \
          WHERE s.name LIKE 'Écriture %' AND h.action = 'created'), \
         (SELECT COUNT(DISTINCT entry_id) FROM change_log c JOIN services s ON s.id = c.entry_id \
          WHERE s.name LIKE 'Écriture %')",
    )
    .fetch_one(&store)
    .await
    .unwrap();
    store.close().await;
    assert_eq!((created, logged), (entries, entries));

    // The restarted server rebuilds its indexes from the copy; `check` finds them consistent.
    let mut server = spawn_server(dir.path(), Some(&db), false).await;
    let client = reqwest::Client::new();
    let (_, _, found) = get(&client, &server.url("/api/v1/services?q=ecriture&limit=1")).await;
    assert_eq!(found["total"], entries, "{found}");
    assert!(server.terminate(Duration::from_secs(10)).success());
    let (status, stdout, stderr) = run_cli(dir.path(), &["--database-url", &url, "check"]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("indexes match the database"), "{stdout}");
}
