//! The modules written for both engines ([`proximites::db::Store`]), run on both: a SQLite file
//! and a private PostgreSQL cluster (`common::postgres`). What several instances share and
//! take must hold when they take at the same moment: rate limits count every attempt, and an
//! e-mail or a guide to render is taken by one instance only. The start of every command (the
//! taxonomy and the territory reference) gives the same reference on both, and a session opened
//! through one instance is known to the other, as is a checked upload kept for its "Appliquer".
//! A first load into an empty directory takes the fast way on PostgreSQL only when it waits
//! for nobody.

mod common;

use std::time::Duration;

use chrono::Utc;
use proximites::db::Store;
use proximites::on_engine;
use proximites::rate_limits::{record, take, within, Limit};

/// Two handles on one SQLite file and two on one PostgreSQL database of `cluster`, as two
/// instances have.
async fn both_engines(
    dir: &std::path::Path,
    cluster: &common::postgres::Cluster,
    name: &str,
) -> [(Store, Store); 2] {
    let sqlite = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
    let postgres = cluster.database(name).await;
    let mut pairs = Vec::new();
    for url in [sqlite, postgres] {
        let first = Store::connect(&url).await.unwrap();
        let second = Store::connect(&url).await.unwrap();
        pairs.push((first, second));
    }
    pairs.try_into().unwrap()
}

async fn count(store: &Store, sql: &str) -> i64 {
    let (n,): (i64,) = on_engine!(store, |db| sqlx::query_as(sql).fetch_one(db).await.unwrap());
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_count_over_their_window_and_prune_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::postgres::Cluster::start();
    for (store, _) in both_engines(dir.path(), &cluster, "limits").await {
        let engine = format!("{:?}", store.engine());
        let hour = Limit::new("report:192.0.2.1", 2, Duration::from_secs(3_600));
        let mut tx = store.begin().await.unwrap();
        assert!(take(&mut tx, &hour).await.unwrap(), "{engine}");
        assert!(take(&mut tx, &hour).await.unwrap(), "{engine}");
        assert!(!take(&mut tx, &hour).await.unwrap(), "{engine}");
        tx.commit().await.unwrap();
        assert!(!within(&store, std::slice::from_ref(&hour)).await.unwrap());
        // A refused attempt is not counted.
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM rate_events").await,
            2,
            "{engine}"
        );
        let other = Limit::new("report:192.0.2.2", 2, Duration::from_secs(3_600));
        assert!(within(&store, &[other]).await.unwrap(), "{engine}");
        // Attempts past every window are deleted by the next one.
        on_engine!(&store, |db| sqlx::query("UPDATE rate_events SET at = $1")
            .bind(Utc::now() - chrono::Duration::hours(2))
            .execute(db)
            .await
            .unwrap()
            .rows_affected());
        assert!(within(&store, std::slice::from_ref(&hour)).await.unwrap());
        record(&store, std::slice::from_ref(&hour)).await.unwrap();
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM rate_events").await,
            1,
            "{engine}"
        );
    }
}

/// Twenty attempts at once from two instances against a limit of five: five pass, on SQLite
/// (whose writers wait for each other) as on PostgreSQL (the limit's key locked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_at_the_same_moment_from_two_instances_are_all_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::postgres::Cluster::start();
    for (first, second) in both_engines(dir.path(), &cluster, "race").await {
        let engine = format!("{:?}", first.engine());
        let attempts = (0..20).map(|n| {
            let store = if n % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tokio::spawn(async move {
                let limit = Limit::new("login:ip:192.0.2.9", 5, Duration::from_secs(900));
                let mut tx = store.begin().await.unwrap();
                let allowed = take(&mut tx, &limit).await.unwrap();
                // Held a moment: the other attempts run meanwhile.
                tokio::time::sleep(Duration::from_millis(5)).await;
                tx.commit().await.unwrap();
                allowed
            })
        });
        let mut allowed = 0;
        for attempt in attempts.collect::<Vec<_>>() {
            allowed += usize::from(attempt.await.unwrap());
        }
        assert_eq!(allowed, 5, "{engine}");
        assert_eq!(
            count(&first, "SELECT COUNT(*) FROM rate_events").await,
            5,
            "{engine}"
        );
    }
}

/// Two instances taking e-mails to send at the same moment: each e-mail is taken once, and
/// one given back (its sending failed) is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_take_the_same_e_mail() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::postgres::Cluster::start();
    for (first, second) in both_engines(dir.path(), &cluster, "outbox").await {
        let engine = format!("{:?}", first.engine());
        for n in 0..250 {
            on_engine!(&first, |db| sqlx::query(
                "INSERT INTO outbox (id, dedupe_key, recipient, subject, body, created_at) \
                 VALUES ($1, $1, 'referente@example.fr', 'Objet', 'Bonjour', $2)"
            )
            .bind(format!("mail-{n:03}"))
            .bind(Utc::now())
            .execute(db)
            .await
            .unwrap()
            .rows_affected());
        }
        let mut taken = Vec::new();
        loop {
            let (a, b) = tokio::join!(
                proximites::mail::take_round(&first),
                proximites::mail::take_round(&second)
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            if a.is_empty() && b.is_empty() {
                break;
            }
            taken.extend(a.into_iter().chain(b).map(|(id, ..)| id));
        }
        let mut distinct = taken.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!((taken.len(), distinct.len()), (250, 250), "{engine}");
        // A lease that lapsed (its instance died): taken again, once.
        on_engine!(&first, |db| sqlx::query(
            "UPDATE outbox SET claimed_until = $1 WHERE id = 'mail-007'"
        )
        .bind(Utc::now() - chrono::Duration::seconds(1))
        .execute(db)
        .await
        .unwrap()
        .rows_affected());
        let (a, b) = tokio::join!(
            proximites::mail::take_round(&first),
            proximites::mail::take_round(&second)
        );
        let again: Vec<String> = a
            .unwrap()
            .into_iter()
            .chain(b.unwrap())
            .map(|t| t.0)
            .collect();
        assert_eq!(again, ["mail-007"], "{engine}");
    }
}

/// Two instances' renderers looking for guides at the same moment: each guide is taken by one,
/// and one whose render's lease lapsed (its instance died) is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_renderers_never_take_the_same_guide() {
    use proximites::directory::jobs::take_next;
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::postgres::Cluster::start();
    for (first, second) in both_engines(dir.path(), &cluster, "guides").await {
        let engine = format!("{:?}", first.engine());
        for n in 0..12 {
            on_engine!(&first, |db| {
                sqlx::query(
                "INSERT INTO guide_jobs (id, cache_key, owner, choices, public_url, stage, \
                 progress, created_at) VALUES ($1, $1, 'operator', '{}', 'http://x', 'queued', 0, $2)"
            )
            .bind(format!("job-{n:02}"))
            .bind(Utc::now())
            .execute(db)
            .await
            .unwrap()
            .rows_affected()
            });
        }
        let mut taken = Vec::new();
        loop {
            let (a, b) = tokio::join!(take_next(&first, "a"), take_next(&second, "b"));
            let (a, b) = (a.unwrap(), b.unwrap());
            if a.is_none() && b.is_none() {
                break;
            }
            taken.extend(a.into_iter().chain(b).map(|job| job.id().to_owned()));
        }
        let mut distinct = taken.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!((taken.len(), distinct.len()), (12, 12), "{engine}");
        on_engine!(&first, |db| sqlx::query(
            "UPDATE guide_jobs SET lease_until = $1 WHERE id = 'job-03'"
        )
        .bind(Utc::now() - chrono::Duration::seconds(1))
        .execute(db)
        .await
        .unwrap()
        .rows_affected());
        let (a, b) = tokio::join!(take_next(&first, "a"), take_next(&second, "b"));
        let again: Vec<String> = a
            .unwrap()
            .into_iter()
            .chain(b.unwrap())
            .map(|job| job.id().to_owned())
            .collect();
        assert_eq!(again, ["job-03"], "{engine}");
    }
}

/// The start of every command, written for both engines: the embedded taxonomy synced and the
/// embedded territory loaded into a new database, then read back into the in-memory reference;
/// a second start loads nothing again. Both engines give the same reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_loads_alike_on_both_engines() {
    use proximites::spatial::LonLat;
    use proximites::territory::locator::Located;
    use proximites::territory::InseeCode;
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::postgres::Cluster::start();
    let mut seen = Vec::new();
    for (store, _) in both_engines(dir.path(), &cluster, "reference").await {
        let engine = format!("{:?}", store.engine());
        let reference = proximites::boot::prepare_reference(&store).await.unwrap();
        let again = proximites::boot::prepare_reference(&store).await.unwrap();
        assert_eq!(reference.locator.len(), again.locator.len(), "{engine}");
        let riom = reference
            .locator
            .commune(&InseeCode::parse("63300").unwrap())
            .unwrap();
        let at_clermont = match reference.locator.locate(LonLat::new(3.0870, 45.7772)) {
            Located::Inside(commune) => format!("inside {}", commune.name),
            Located::Approximately(commune) => format!("near {}", commune.name),
            Located::Nowhere => "nowhere".to_owned(),
        };
        seen.push((
            reference.locator.len(),
            reference
                .locator
                .communes()
                .filter(|c| c.boundary.is_some())
                .count(),
            reference.taxonomy.typologies.len(),
            count(&store, "SELECT COUNT(*) FROM typologies").await,
            count(&store, "SELECT COUNT(*) FROM epcis").await,
            (
                riom.name.clone(),
                riom.postcodes.clone(),
                riom.population,
                riom.epci_siren.clone(),
            ),
            at_clermont,
        ));
    }
    assert!(seen[0].0 > 30_000 && seen[0].1 > 1_000, "{:?}", seen[0]);
    assert_eq!(seen[0].6, "inside Clermont-Ferrand");
    assert_eq!(seen[0], seen[1]);
}

/// Sign-in and sessions, written for both engines: an operator created through one instance
/// signs in through the other; a session opened on one is known to the other with its CSRF
/// secret; signing in again ends the previous session, and signing out ends it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_shared_by_instances_on_both_engines() {
    use proximites::accounts::store::{
        check_login, close_session, create_operator, open_session, session,
    };
    use proximites::accounts::Role;
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::postgres::Cluster::start();
    for (first, second) in both_engines(dir.path(), &cluster, "sessions").await {
        let engine = format!("{:?}", first.engine());
        let password = "le mot de passe de la région";
        let id = create_operator(&first, "region@example.fr", password)
            .await
            .unwrap();
        let actor = check_login(&second, " Region@Example.fr", password)
            .await
            .unwrap()
            .expect(&engine);
        assert_eq!(actor.role, Role::Operator, "{engine}");
        assert!(
            check_login(&second, "region@example.fr", "pas le bon mot de passe")
                .await
                .unwrap()
                .is_none()
        );
        let (secret, csrf) = open_session(&first, &id).await.unwrap();
        let (actor, known_csrf) = session(&second, &secret).await.unwrap().expect(&engine);
        assert_eq!((actor.role, known_csrf), (Role::Operator, csrf), "{engine}");
        let (renewed, _) = open_session(&second, &id).await.unwrap();
        assert!(
            session(&first, &secret).await.unwrap().is_none(),
            "{engine}"
        );
        assert!(
            session(&first, &renewed).await.unwrap().is_some(),
            "{engine}"
        );
        close_session(&first, &renewed).await.unwrap();
        assert!(
            session(&second, &renewed).await.unwrap().is_none(),
            "{engine}"
        );
    }
}

/// A checked bulk-upload file kept for its "Appliquer", written for both engines: kept through
/// one instance, applied through the other (only by the person who uploaded it); a person keeps
/// their latest three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_plans_are_kept_for_any_instance_on_both_engines() {
    use proximites::espace::bulk::{forget_plan, keep_plan, kept_plan, PENDING_PER_PERSON};
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::postgres::Cluster::start();
    for (first, second) in both_engines(dir.path(), &cluster, "plans").await {
        let engine = format!("{:?}", first.engine());
        on_engine!(&first, |db| sqlx::query(
            "INSERT INTO organisations (id, name, kind, created_at, territory) \
             VALUES ('org-riom', 'Ville de Riom', 'commune', $1, '[\"commune:63300\"]')"
        )
        .bind(Utc::now())
        .execute(db)
        .await
        .unwrap()
        .rows_affected());
        let user = proximites::accounts::store::create_operator(
            &first,
            "region@example.fr",
            "le mot de passe de la région",
        )
        .await
        .unwrap();
        let bytes = "id,typologie,nom\nr1,mairie,Mairie de Riom\n".as_bytes();
        let id = keep_plan(&first, "org-riom", &user, "riom.csv", bytes)
            .await
            .unwrap();
        let kept = kept_plan(&second, &id, &user)
            .await
            .unwrap()
            .expect(&engine);
        assert_eq!(
            kept,
            ("org-riom".to_owned(), "riom.csv".to_owned(), bytes.to_vec()),
            "{engine}"
        );
        assert!(kept_plan(&second, &id, "usr-other")
            .await
            .unwrap()
            .is_none());
        for n in 0..PENDING_PER_PERSON {
            keep_plan(&second, "org-riom", &user, &format!("{n}.csv"), bytes)
                .await
                .unwrap();
        }
        assert!(
            kept_plan(&first, &id, &user).await.unwrap().is_none(),
            "{engine}"
        );
        assert_eq!(
            count(&first, "SELECT COUNT(*) FROM pending_uploads").await,
            PENDING_PER_PERSON,
            "{engine}"
        );
        let last = keep_plan(&first, "org-riom", &user, "last.csv", bytes)
            .await
            .unwrap();
        forget_plan(&second, &last).await.unwrap();
        assert!(
            kept_plan(&first, &last, &user).await.unwrap().is_none(),
            "{engine}"
        );
    }
}

/// An instance follows another's writes on PostgreSQL woken by `LISTEN`, and by polling while
/// its notification connection is down: each write is searchable on it within a second, the
/// listener killed by the server (`pg_terminate_backend`) or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_other_instance_through_listen_and_polling_when_it_drops() {
    let cluster = common::postgres::Cluster::start();
    let url = cluster.database("follow").await;
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::connect(&url).await.unwrap();
    let reference = proximites::boot::prepare(&writer, false).await.unwrap();
    let reader_store = Store::connect(&url).await.unwrap();
    let reader = proximites::app::AppState::build(
        reader_store.clone(),
        reference.clone(),
        &dir.path().join("text"),
    )
    .await
    .unwrap();
    let follower = tokio::spawn(proximites::search::live::follow(
        reader.live.clone(),
        reader_store.clone(),
    ));
    let router = proximites::app::router(reader.clone());
    let listeners = async || {
        count(
            &writer,
            "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'",
        )
        .await
    };
    for _ in 0..50 {
        if listeners().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listeners().await, 1, "the follower does not listen");
    let write_and_find = async |name: &str| {
        let csv = format!(
            "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description\n\
             {name},piscine,Piscine {name},,,,63113,3.08,45.77,,,,,,\n"
        );
        let report = proximites::import::import(
            &writer,
            &reference,
            proximites::import::Input::Bytes {
                name: format!("{name}.csv"),
                bytes: csv.into_bytes(),
            },
            proximites::import::ImportOptions {
                source: Some("Riom".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(report.committed, "{report:?}");
        let written = std::time::Instant::now();
        loop {
            let (_, _, body) = common::get(&router, &format!("/api/v1/services?q={name}")).await;
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if body["total"] == 1 {
                return written.elapsed();
            }
            assert!(
                written.elapsed() < Duration::from_secs(5),
                "{name} not found by the other instance"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let woken = write_and_find("zqnotifiee").await;
    assert!(woken < Duration::from_secs(1), "{woken:?}");
    // The server drops the notification connection: polling takes over at once.
    assert_eq!(
        count(
            &writer,
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
        )
        .await,
        1
    );
    let polled = write_and_find("zqinterrogee").await;
    assert!(polled < Duration::from_secs(1), "{polled:?}");
    // And listening again a moment later.
    let mut again = false;
    for _ in 0..50 {
        if listeners().await == 1 {
            again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again, "the follower does not listen again");
    let woken = write_and_find("zqrevenue").await;
    assert!(woken < Duration::from_secs(1), "{woken:?}");
    follower.abort();
}

/// A statement that waits too long for a lock (PostgreSQL's `lock_timeout`, SQLite's busy
/// timeout) is an overload to retry, 503 `server_busy`, not an internal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_waited_for_too_long_is_a_503_on_both_engines() {
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::postgres::Cluster::start();
    let [(sqlite, _), (postgres, _)] = both_engines(dir.path(), &cluster, "locks").await;
    // PostgreSQL: the entries' table locked by a load, a reader giving up after 100 ms.
    let Store::Postgres(pool) = &postgres else {
        unreachable!()
    };
    let mut load = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE services IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *load)
        .await
        .unwrap();
    let mut reader = pool.acquire().await.unwrap();
    sqlx::query("SET lock_timeout = '100ms'")
        .execute(&mut *reader)
        .await
        .unwrap();
    let waited = sqlx::query("SELECT COUNT(*) FROM services")
        .execute(&mut *reader)
        .await
        .unwrap_err();
    let error = proximites::error::Error::from(waited);
    assert_eq!(error.status(), 503, "{error:?}");
    assert_eq!(error.code(), "server_busy");
    load.rollback().await.unwrap();
    // SQLite: the write lock held by another connection past a 100 ms busy timeout.
    let Store::Sqlite(pool) = &sqlite else {
        unreachable!()
    };
    let mut writer = pool.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *writer)
        .await
        .unwrap();
    let url = format!("sqlite://{}", dir.path().join("locks.db").display());
    let mut other = url
        .parse::<sqlx::sqlite::SqliteConnectOptions>()
        .unwrap()
        .busy_timeout(Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    let waited = sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap_err();
    let error = proximites::error::Error::from(waited);
    assert_eq!(error.status(), 503, "{error:?}");
    sqlx::query("ROLLBACK").execute(&mut *writer).await.unwrap();
    other.close().await.unwrap();
}

/// Two instances started at the same moment on a new PostgreSQL database: one loads the
/// reference and the demo, the other finds them done; both start, and the demo is there once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_starting_together_prepare_a_new_database_once() {
    let cluster = common::postgres::Cluster::start();
    let url = cluster.database("together").await;
    let (first, second) = (
        Store::connect(&url).await.unwrap(),
        Store::connect(&url).await.unwrap(),
    );
    let (a, b) = tokio::join!(
        proximites::boot::prepare(&first, true),
        proximites::boot::prepare(&second, true)
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(count(&first, "SELECT COUNT(*) FROM services").await, 1283);
    assert_eq!(count(&first, "SELECT COUNT(*) FROM imports").await, 1);
    // What makes them take turns: the second holder of the lock waits for the first.
    let held = first.exclusively("proximites:prepare").await.unwrap();
    let waiting = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let _second = second.exclusively("proximites:prepare").await.unwrap();
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    held.unwrap().release().await.unwrap();
    let waited = waiting.await.unwrap();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
}

/// A first import into an empty directory on PostgreSQL empties the entries' table of its keys
/// and truncates it (a new file under it) only when nobody uses it or a table referencing it;
/// otherwise it loads the plain way, without waiting. Either way the entries, their history,
/// their change log and every key are there after the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_load_on_postgresql_empties_the_table_only_when_nobody_uses_it() {
    let cluster = common::postgres::Cluster::start();
    for busy in [false, true] {
        let url = cluster
            .database(if busy { "load_busy" } else { "load_free" })
            .await;
        let store = Store::connect(&url).await.unwrap();
        let reference = proximites::boot::prepare(&store, false).await.unwrap();
        let Store::Postgres(pool) = &store else {
            unreachable!()
        };
        let file_of_the_table = async || -> i64 {
            sqlx::query_scalar(
                "SELECT relfilenode::bigint FROM pg_class WHERE oid = 'services'::regclass",
            )
            .fetch_one(pool)
            .await
            .unwrap()
        };
        let keys = async || -> i64 {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_constraint
                 WHERE conrelid = 'services'::regclass OR confrelid = 'services'::regclass",
            )
            .fetch_one(pool)
            .await
            .unwrap()
        };
        let (file_before, keys_before) = (file_of_the_table().await, keys().await);
        // Someone reading the reports, a table that references the entries, meanwhile.
        let mut reader = pool.begin().await.unwrap();
        if busy {
            sqlx::query("SELECT COUNT(*) FROM reports")
                .execute(&mut *reader)
                .await
                .unwrap();
        }
        let report = tokio::time::timeout(
            Duration::from_secs(20),
            proximites::import::import(
                &store,
                &reference,
                proximites::import::Input::Bytes {
                    name: "riom.csv".into(),
                    bytes: "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description\n\
                            p1,piscine,Piscine de Riom,,,,,3.1130,45.8937,,,,,,\n\
                            b1,bibliotheque,Médiathèque de Riom,,,,,3.1140,45.8950,,,,,,\n"
                        .into(),
                },
                proximites::import::ImportOptions {
                    source: Some("Ville de Riom".into()),
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("the import waited for the reader")
        .unwrap();
        assert!(report.committed && report.created == 2, "{report:?}");
        reader.rollback().await.unwrap();
        assert_eq!(
            file_of_the_table().await != file_before,
            !busy,
            "busy: {busy}: truncated only when nobody used the tables"
        );
        assert_eq!(keys().await, keys_before, "busy: {busy}: every key is back");
        assert!(keys_before >= 10, "{keys_before} keys on and to services");
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM service_history WHERE action = 'created'"
            )
            .await,
            2
        );
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM change_log WHERE kind = 'created'"
            )
            .await,
            2
        );
        store.close().await;
    }
}
