//! Coverage through the real router against brute force over the database, and the
//! `proximites coverage` command writing its CSV.

use std::path::Path;
use std::process::Command;

use axum::http::StatusCode;
use proximites::spatial::LonLat;
use proximites::territory::InseeCode;
use serde_json::Value;

mod common;
use common::Fixture;

const HEADER: &str = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description";

/// The Auvergne demo (its town halls are the reference points) and 1,500 generated entries in
/// Puy-de-Dôme and Allier.
async fn fixture() -> Fixture {
    let (dir, store, reference) = common::database(true).await;
    common::import_generated(&store, &reference, &["03", "63"], 1_500, 9).await;
    Fixture::serve(dir, store, reference).await
}

impl Fixture {
    async fn get(&self, uri: &str) -> (StatusCode, String, Vec<u8>) {
        common::get(&self.router, uri).await
    }

    async fn json(&self, uri: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.get(uri).await;
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// Every published (id, typology, insee_code, lon, lat).
    async fn rows(&self) -> Vec<(String, String, String, f64, f64)> {
        proximites::on_engine!(&self.state.store, |db| sqlx::query_as(
            "SELECT id, typology_code, insee_code, lon, lat FROM services WHERE status = 'published'",
        )
        .fetch_all(db).await)
        .unwrap()
    }
}

#[tokio::test]
async fn departement_coverage_equals_brute_force_over_the_database() {
    let f = fixture().await;
    let rows = f.rows().await;
    let (status, report) = f
        .json("/api/v1/territories/departement:63/coverage?typology=pharmacie,piscine&thresholds=10000,3000")
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["thresholds_m"], serde_json::json!([3000.0, 10000.0]));
    let communes = report["communes"].as_array().unwrap();
    let in_63 = f
        .state
        .reference
        .locator
        .communes()
        .filter(|c| c.departement_code == "63")
        .count();
    assert_eq!(communes.len(), in_63);
    // Every commune of the demo has its town hall.
    assert_eq!(
        report["territory"]["town_halls"].as_u64().unwrap() as usize,
        in_63
    );
    for (at, typology) in ["pharmacie", "piscine"].iter().enumerate() {
        let mut entries_in_63 = 0;
        let mut with_entry = std::collections::HashSet::new();
        for (_, t, code, _, _) in &rows {
            if t == typology && code.starts_with("63") {
                entries_in_63 += 1;
                with_entry.insert(code.clone());
            }
        }
        let subject = &report["subjects"][at];
        assert_eq!(subject["code"], *typology);
        assert_eq!(subject["indicators"]["entries"], entries_in_63);
        assert_eq!(
            subject["indicators"]["communes_with_entry"]
                .as_u64()
                .unwrap() as usize,
            with_entry.len()
        );
        for row in communes {
            let code = row["insee_code"].as_str().unwrap();
            // The reference point is the commune's town hall, from the database (the one
            // nearest its centroid: generated data adds more).
            let centroid = f
                .state
                .reference
                .locator
                .commune(&InseeCode::parse(code).unwrap())
                .unwrap()
                .centroid;
            let hall = rows
                .iter()
                .filter(|r| r.1 == "mairie" && r.2 == code)
                .map(|r| LonLat::new(r.3, r.4))
                .min_by(|a, b| centroid.distance_m(*a).total_cmp(&centroid.distance_m(*b)))
                .unwrap();
            let nearest = rows
                .iter()
                .filter(|r| r.1 == *typology)
                .map(|r| hall.distance_m(LonLat::new(r.3, r.4)))
                .min_by(f64::total_cmp)
                .unwrap();
            let got = row["nearest"][at]["distance_m"].as_f64().unwrap();
            assert!(
                (got - nearest).abs() < 0.5,
                "{code} {typology}: {got} vs {nearest}"
            );
        }
        let levels: Vec<&str> = subject["comparisons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["level"].as_str().unwrap())
            .collect();
        assert_eq!(levels, ["region", "france"]);
    }

    let (status, kind, body) = f
        .get("/api/v1/territories/departement:63/coverage?typology=pharmacie&format=csv")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("text/csv"), "{kind}");
    let text = String::from_utf8(body).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("insee_code,name,population,distance_m,nearest_id,reference")
    );
    assert_eq!(lines.count(), in_63);
    let clermont = text.lines().find(|l| l.starts_with("63113,")).unwrap();
    assert!(
        clermont.starts_with("63113,Clermont-Ferrand,"),
        "{clermont}"
    );
}

#[tokio::test]
async fn bad_coverage_requests_are_named() {
    let f = fixture().await;
    for (uri, status, field) in [
        (
            "/api/v1/territories/departement:63/coverage?typology=nope",
            400,
            Some("typology"),
        ),
        (
            "/api/v1/territories/departement:63/coverage",
            400,
            Some("typology"),
        ),
        (
            "/api/v1/territories/departement:63/coverage?theme=nope",
            400,
            Some("theme"),
        ),
        (
            "/api/v1/territories/departement:63/coverage?typology=pharmacie&thresholds=x",
            400,
            Some("thresholds"),
        ),
        (
            "/api/v1/territories/departement:63/coverage?typology=pharmacie&format=xml",
            400,
            Some("format"),
        ),
        (
            "/api/v1/territories/communes:/coverage?typology=pharmacie",
            400,
            Some("territory"),
        ),
        (
            "/api/v1/territories/canton:1/coverage?typology=pharmacie",
            400,
            Some("territory"),
        ),
        (
            "/api/v1/territories/departement:99/coverage?typology=pharmacie",
            404,
            None,
        ),
        (
            "/api/v1/territories/communes:63113,99999/coverage?typology=pharmacie",
            404,
            None,
        ),
    ] {
        let (got, problem) = f.json(uri).await;
        assert_eq!(got.as_u16(), status, "{uri}: {problem}");
        match field {
            Some(field) => {
                assert_eq!(problem["code"], "invalid_parameter", "{uri}");
                assert_eq!(problem["errors"][0]["field"], field, "{uri}: {problem}");
            }
            None => assert_eq!(problem["code"], "not_found", "{uri}"),
        }
    }
    // A typology France has no entry of: null distances, and said so.
    let index = f.state.search_index();
    let absent = f
        .state
        .reference
        .taxonomy
        .typologies
        .iter()
        .find(|t| index.spatial.count(Some(&[t.code.as_str()])) == 0)
        .expect("a typology without entries")
        .code
        .clone();
    let (status, report) = f
        .json(&format!(
            "/api/v1/territories/communes:63113,63300/coverage?typology={absent}&compare=false"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let subject = &report["subjects"][0];
    assert_eq!(subject["no_entry_in_france"], true);
    assert!(subject["message"]
        .as_str()
        .unwrap()
        .contains("aucune fiche"));
    assert!(report["communes"][0]["nearest"][0]["distance_m"].is_null());
    assert!(subject["comparisons"].as_array().unwrap().is_empty());

    let (_, doc) = f.json("/api/v1/openapi.json").await;
    let path = &doc["paths"]["/api/v1/territories/{territory}/coverage"]["get"];
    let names: Vec<&str> = path["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "territory",
        "typology",
        "theme",
        "thresholds",
        "gap_threshold",
        "compare",
        "format",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_proximites");

fn run(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_command_writes_a_csv_and_nothing_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");
    let url = format!("sqlite://{}", db.display());
    // Riom's town hall, and one pharmacy in Clermont-Ferrand, 12.8 km from it.
    let entries = dir.path().join("entries.csv");
    std::fs::write(
        &entries,
        format!(
            "{HEADER}\n\
             m1,mairie,Mairie de Riom,,,,63300,3.1130,45.8937,,,,,,\n\
             p1,pharmacie,Pharmacie du centre,,,,63113,3.0863,45.7797,,,,,,\n"
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = run(
        dir.path(),
        &["--database-url", &url, "import", entries.to_str().unwrap()],
    );
    assert!(ok, "{stdout}\n{stderr}");

    let out = dir.path().join("out.csv");
    let (ok, stdout, stderr) = run(
        dir.path(),
        &[
            "--database-url",
            &url,
            "coverage",
            "--in",
            "communes:63300,63113",
            "--typology",
            "pharmacie",
            "--format",
            "csv",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("communes:63300,63113"), "{stdout}");
    let csv = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "insee_code,name,population,distance_m,nearest_id,reference"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with("63113,Clermont-Ferrand,"), "{csv}");
    let riom: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(riom[0], "63300");
    assert_eq!(riom[5], "town_hall");
    let expected = LonLat::new(3.1130, 45.8937).distance_m(LonLat::new(3.0863, 45.7797));
    let got: f64 = riom[3].parse().unwrap();
    assert!((got - expected).abs() < 0.5, "{got} vs {expected}");

    // JSON too.
    let json = dir.path().join("out.json");
    let (ok, _, stderr) = run(
        dir.path(),
        &[
            "--database-url",
            &url,
            "coverage",
            "--in",
            "commune:63300",
            "--theme",
            "action-sociale-sante",
            "--format",
            "json",
            "-o",
            json.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["subjects"][0]["kind"], "theme");

    // An error writes nothing, and leaves an existing file as it was.
    let (ok, _, stderr) = run(
        dir.path(),
        &[
            "--database-url",
            &url,
            "coverage",
            "--in",
            "departement:63",
            "--typology",
            "nope",
            "--format",
            "csv",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("typologie inconnue"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), csv);
    let fresh = dir.path().join("never.csv");
    let (ok, _, stderr) = run(
        dir.path(),
        &[
            "--database-url",
            &url,
            "coverage",
            "--in",
            "departement:99",
            "--typology",
            "pharmacie",
            "-o",
            fresh.to_str().unwrap(),
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("departement:99"), "{stderr}");
    assert!(!fresh.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The monitoring page of one commune, checked by hand: its town hall, its contributor's
/// freshness once the entry is confirmed, and the entries created and withdrawn in a period.
#[tokio::test]
async fn the_monitoring_page_tells_freshness_and_change_for_a_commune_checked_by_hand() {
    let (dir, store, reference) = common::database(true).await;
    // Riom's town hall confirmed today; Mozac's withdrawn today.
    let now = chrono::Utc::now();
    proximites::on_engine!(&store, |db| sqlx::query(
        "UPDATE services SET verified_at = $1 WHERE name = 'Mairie de Riom'"
    )
    .bind(now)
    .execute(db)
    .await
    .map(|r| r.rows_affected()))
    .unwrap();
    proximites::on_engine!(&store, |db| sqlx::query(
        "UPDATE services SET status = 'withdrawn', updated_at = $1 WHERE name = 'Mairie de Mozac'",
    )
    .bind(now)
    .execute(db)
    .await
    .map(|r| r.rows_affected()))
    .unwrap();
    let fixture = Fixture::serve(dir, store, reference).await;
    // Riom's town hall moved 80 m by the operator through the write path: recorded in its history.
    let riom: String = proximites::on_engine!(&fixture.state.store, |db| sqlx::query_scalar(
        "SELECT id FROM services WHERE name = 'Mairie de Riom'"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    let service = proximites::services::store::get(
        &fixture.state.store,
        &proximites::services::ServiceId::parse(&riom).unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    let operator = proximites::accounts::Actor {
        kind: proximites::accounts::ActorKind::User {
            id: "operator-1".into(),
            email: "operateur@region.example".into(),
        },
        role: proximites::accounts::Role::Operator,
        organisation: None,
    };
    let fields = serde_json::json!({ "lon": service.content.location.lon + 0.001 });
    proximites::services::write::update(
        &fixture.state,
        &operator,
        proximites::services::history::Via::Api,
        &riom,
        Some(&proximites::services::write::etag(&service)),
        fields.as_object().unwrap(),
    )
    .await
    .unwrap();

    let (status, _, page) = fixture
        .get("/veille/communes:63300,63245?typology=mairie")
        .await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8(page).unwrap();
    // Freshness: Riom's confirmed, Mozac's withdrawn so not counted: 1 of 1.
    assert!(
        page.contains("<th scope=\"row\">Annuaire de l'administration (DILA)</th><td>1</td><td>1</td><td>100,0 %</td>"),
        "{}",
        &page[page.find("fraicheur").unwrap()..][..800]
    );
    // Change over the last six months (the demo was loaded today): 2 created, 1 withdrawn, 1 moved.
    assert!(page.contains(
        "<strong>2</strong> fiches créées, <strong>1</strong> retirées, <strong>1</strong> déplacées."
    ));
    assert!(page.contains("<th scope=\"row\">Riom (63300)</th><td>1</td><td>0</td><td>1</td>"));
    // A period before the demo existed: nothing.
    let (_, _, page) = fixture
        .get("/veille/communes:63300,63245?typology=mairie&du=2020-01-01&au=2020-12-31")
        .await;
    assert!(String::from_utf8(page)
        .unwrap()
        .contains("<strong>0</strong> fiches créées, <strong>0</strong> retirées, <strong>0</strong> déplacées."));
    // Bad input: said next to its field, a 400; an unknown territory is a 404 page.
    let (status, _, page) = fixture
        .get("/veille/commune:63300?typology=licorne&au=demain")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("licorne") && page.contains("AAAA-MM-JJ"));
    let (status, _, _) = fixture.get("/veille/departement:00").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_monitoring_chooser_finds_territories_by_name_or_as_the_api_writes_them() {
    let (dir, store, reference) = common::database(true).await;
    let fixture = Fixture::serve(dir, store, reference).await;
    for (typed, target) in [
        ("Puy-de-D%C3%B4me", "/veille/departement:63?typology=mairie"),
        (
            "communes%3A63113%2C63300",
            "/veille/communes:63113,63300?typology=mairie",
        ),
        ("Riom", "/veille/commune:63300?typology=mairie"),
    ] {
        let response = tower::ServiceExt::oneshot(
            fixture.router.clone(),
            axum::http::Request::get(format!("/veille?territoire={typed}&typology=mairie"))
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{typed}");
        assert_eq!(response.headers()["location"], target, "{typed}");
    }
    let (status, _, _) = fixture.get("/veille?territoire=Atlantide").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
