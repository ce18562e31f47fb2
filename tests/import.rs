//! Imports through the library on a fresh SQLite file each: formats, classification, atomicity,
//! and the taxonomy rules that protect existing entries.

use proximites::import::{self, ImportOptions, ImportReport, Input, Reference};
use proximites::{boot, db, taxonomy};

const HEADER: &str = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description";

struct Fixture {
    pool: db::Pool,
    reference: Reference,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pool = db::connect(dir.path().join("import.db").to_str().unwrap())
        .await
        .unwrap();
    let reference = boot::prepare(&pool, false).await.unwrap();
    Fixture {
        pool,
        reference,
        _dir: dir,
    }
}

impl Fixture {
    async fn import(&self, name: &str, text: &str, options: ImportOptions) -> ImportReport {
        import::import(
            &self.pool,
            &self.reference,
            Input::Bytes {
                name: name.into(),
                bytes: text.as_bytes().to_vec(),
            },
            ImportOptions {
                source: options.source.or(Some("Ville de Riom".into())),
                ..options
            },
        )
        .await
        .unwrap()
    }

    async fn count(&self) -> i64 {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM services")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        n
    }
}

fn csv(rows: &[&str]) -> String {
    let mut text = format!("{HEADER}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    text
}

const POOL: &str = "p1,piscine,Centre aquatique Béatrice-Hess,Rue de l'Industrie,63200,Riom,63300,3.1130,45.8937,04 73 38 00 00,,https://www.riom.fr,Mo-Su 10:00-20:00,yes,";
const LIBRARY: &str = "b1,Médiathèque,Médiathèque Jean-Pierre-Chaput,,63200,,,3.1140,45.8950,,,,,,";

#[tokio::test]
async fn creates_then_updates_then_leaves_unchanged() {
    let f = fixture().await;
    let report = f
        .import("riom.csv", &csv(&[POOL, LIBRARY]), ImportOptions::default())
        .await;
    assert!(report.committed, "{report:?}");
    assert_eq!(
        (
            report.created,
            report.updated,
            report.unchanged,
            report.rejected
        ),
        (2, 0, 0, 0)
    );
    let (insee, typology): (String, String) =
        sqlx::query_as("SELECT insee_code, typology_code FROM services WHERE source_ref = 'b1'")
            .fetch_one(&f.pool)
            .await
            .unwrap();
    assert_eq!(
        (insee.as_str(), typology.as_str()),
        ("63300", "mediatheque"),
        "commune from the point, typology from its label"
    );

    let again = f
        .import("riom.csv", &csv(&[POOL, LIBRARY]), ImportOptions::default())
        .await;
    assert_eq!((again.created, again.updated, again.unchanged), (0, 0, 2));

    let (id_before,): (String,) = sqlx::query_as("SELECT id FROM services WHERE source_ref = 'p1'")
        .fetch_one(&f.pool)
        .await
        .unwrap();
    let renamed = POOL.replace("Centre aquatique", "Piscine");
    let changed = f
        .import(
            "riom.csv",
            &csv(&[&renamed, LIBRARY]),
            ImportOptions::default(),
        )
        .await;
    assert_eq!(
        (changed.created, changed.updated, changed.unchanged),
        (0, 1, 1)
    );
    let (id_after, name): (String, String) =
        sqlx::query_as("SELECT id, name FROM services WHERE source_ref = 'p1'")
            .fetch_one(&f.pool)
            .await
            .unwrap();
    assert_eq!(id_before, id_after, "an update keeps the entry's id");
    assert!(name.starts_with("Piscine"));

    // Another source may use the same source_ref: the key is (source, source_ref).
    let other = f
        .import(
            "autre.csv",
            &csv(&[POOL]),
            ImportOptions {
                source: Some("Clermont Auvergne Métropole".into()),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(other.created, 1);
    assert_eq!(f.count().await, 3);
}

#[tokio::test]
async fn one_bad_row_rejects_the_file_and_names_every_error() {
    let f = fixture().await;
    let swapped = "x1,mairie,Mairie,,,,63300,45.8937,3.1130,,,,,,";
    let outside = "x2,mairie,Mairie,,,,,13.40,52.52,,,,,,";
    let duplicate = POOL.replace("Béatrice-Hess", "bis");
    let broken_hours = "x3,mairie,Mairie de Riom,,,,63300,3.1130,45.8937,,,,Lundi 8h-12h,,";
    let text = csv(&[POOL, swapped, outside, &duplicate, broken_hours, LIBRARY]);
    let report = f.import("bad.csv", &text, ImportOptions::default()).await;
    assert!(!report.committed);
    assert_eq!(report.rejected, 4);
    assert_eq!(f.count().await, 0, "nothing is written");
    let found = |line: u64, field: &str, words: &str| {
        report
            .errors
            .iter()
            .any(|e| e.row == Some(line) && e.field == field && e.message.contains(words))
    };
    assert!(found(3, "lat", "inversées"), "{:?}", report.errors);
    assert!(found(4, "lon", "hors de France"), "{:?}", report.errors);
    assert!(
        found(5, "source_ref", "déjà ligne 2"),
        "{:?}",
        report.errors
    );
    assert!(
        found(6, "opening_hours", "horaires illisibles"),
        "{:?}",
        report.errors
    );

    let skipping = f
        .import(
            "bad.csv",
            &text,
            ImportOptions {
                skip_invalid: true,
                ..Default::default()
            },
        )
        .await;
    assert!(skipping.committed);
    assert_eq!((skipping.created, skipping.rejected), (2, 4));
    assert_eq!(f.count().await, 2);
}

#[tokio::test]
async fn a_dry_run_writes_nothing() {
    let f = fixture().await;
    let report = f
        .import(
            "riom.csv",
            &csv(&[POOL, LIBRARY]),
            ImportOptions {
                dry_run: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!((report.created, report.committed), (2, false));
    assert_eq!(f.count().await, 0);
    let (organisations,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM organisations")
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(organisations, 0, "not even the source is created");
}

#[tokio::test]
async fn geojson_and_scdl_files() {
    let f = fixture().await;
    let geojson = r#"{"type":"FeatureCollection","features":[
        {"type":"Feature","geometry":{"type":"Point","coordinates":[3.1130,45.8937]},
         "properties":{"source_ref":"g1","typology":"piscine","name":"Piscine","insee_code":"63300","wheelchair":"limited"}},
        {"type":"Feature","geometry":{"type":"Point","coordinates":[3.0863,45.7797]},
         "properties":{"source_ref":"g2","typology":"mairie","name":"Mairie de Clermont-Ferrand","phone":"+33 4 73 42 63 63"}}]}"#;
    let report = f
        .import("equipements.geojson", geojson, ImportOptions::default())
        .await;
    assert!(report.committed, "{report:?}");
    assert_eq!(report.created, 2);
    let (insee, phones): (String, String) =
        sqlx::query_as("SELECT insee_code, phones FROM services WHERE source_ref = 'g2'")
            .fetch_one(&f.pool)
            .await
            .unwrap();
    assert_eq!(
        (insee.as_str(), phones.as_str()),
        ("63113", r#"["+33473426363"]"#)
    );

    let scdl = "COLL_NOM;COLL_SIRET;EQUIP_UID;EQUIP_THEME;EQUIP_TYPE;EQUIP_NOM;ADRESSE;CP;COMMUNE;EQUIP_LAT;EQUIP_LONG;EQUIP_OUVERTURE\n\
                Ville de Riom;21630300300011;E1;Social;Pôle emploi;Agence France Travail;Rue;63200;Riom;45.8937;3.1130;Mo-Fr 08:30-16:30\n\
                Ville de Riom;21630300300011;E2;Sport;Piscine;Piscine municipale;Rue;63200;Riom;45.8940;3.1135;\n";
    let report = import::import(
        &f.pool,
        &f.reference,
        Input::Bytes {
            name: "equipements.csv".into(),
            bytes: scdl.as_bytes().to_vec(),
        },
        ImportOptions::default(),
    )
    .await
    .unwrap();
    assert!(report.committed, "{report:?}");
    assert_eq!(
        report.source, "Ville de Riom",
        "the SCDL file names its source"
    );
    let (typology,): (String,) =
        sqlx::query_as("SELECT typology_code FROM services WHERE source_ref = 'E1'")
            .fetch_one(&f.pool)
            .await
            .unwrap();
    assert_eq!(typology, "anpe", "EQUIP_TYPE mapped through the synonyms");
}

#[tokio::test]
async fn service_public_json_hours_are_converted() {
    let f = fixture().await;
    let text = format!(
        "{HEADER},opening_hours_json,verified_at\nm1,mairie,Mairie de Riom,,,,63300,3.1130,45.8937,,,,,,,\"[[\"\"lundi\"\",\"\"vendredi\"\",[[\"\"08:30:00\"\",\"\"12:00:00\"\"]]]]\",2026-10-01\n"
    );
    let report = f.import("m.csv", &text, ImportOptions::default()).await;
    assert!(report.committed, "{report:?}");
    let (hours, verified): (String, Option<String>) =
        sqlx::query_as("SELECT opening_hours, verified_at FROM services")
            .fetch_one(&f.pool)
            .await
            .unwrap();
    assert_eq!(hours, "Mo-Fr 08:30-12:00");
    assert!(verified.unwrap().starts_with("2026-10-01"));
}

#[tokio::test]
async fn retired_typologies_and_removed_typologies() {
    let f = fixture().await;
    f.import("riom.csv", &csv(&[POOL]), ImportOptions::default())
        .await;

    let mut retired = (*f.reference.taxonomy).clone();
    retired
        .typologies
        .iter_mut()
        .find(|t| t.code == "piscine")
        .unwrap()
        .retired = true;
    taxonomy::store::sync(&f.pool, &retired).await.unwrap();
    let with_retired = Reference {
        taxonomy: std::sync::Arc::new(retired.clone()),
        locator: f.reference.locator.clone(),
    };
    let second_pool = POOL.replace("p1,", "p2,");
    let report = import::import(
        &f.pool,
        &with_retired,
        Input::Bytes {
            name: "riom.csv".into(),
            bytes: csv(&[&POOL.replace("Béatrice", "B."), &second_pool]).into_bytes(),
        },
        ImportOptions {
            source: Some("Ville de Riom".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.rejected, 1, "{report:?}");
    assert!(report.errors[0].row == Some(3) && report.errors[0].message.contains("retirée"));

    let mut removed = retired;
    removed.typologies.retain(|t| t.code != "piscine");
    let error = taxonomy::store::sync(&f.pool, &removed).await.unwrap_err();
    assert_eq!(error.code(), "typology_in_use");
    let (still_there,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM typologies")
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(still_there, 175, "the refused sync changed nothing");
}

#[tokio::test]
async fn territory_files_load_and_keep_finer_boundaries() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("regions.csv", "code,name\n84,Auvergne-Rhône-Alpes\n");
    write(
        "departements.csv",
        "code,name,region_code\n63,Puy-de-Dôme,84\n",
    );
    write(
        "epci.csv",
        "siren,name,kind\n200070407,Riom Limagne et Volcans,CA\n",
    );
    // Riom with a new population and no boundary file: the shipped boundary must stay.
    write(
        "communes.csv",
        "insee_code,name,kind,department_code,region_code,epci_siren,population,postcodes,centroid_lon,centroid_lat,min_lon,min_lat,max_lon,max_lat\n\
         63300,Riom,COM,63,84,200070407,19999,63200,3.1130,45.8937,3.05,45.85,3.17,45.93\n",
    );
    let files = proximites::territory::ReferenceFiles::read_dir(dir.path()).unwrap();
    let summary = proximites::territory::store::load_reference(&f.pool, &files)
        .await
        .unwrap();
    assert_eq!((summary.communes, summary.boundaries), (1, 0));
    let (population, has_boundary): (i64, bool) = sqlx::query_as(
        "SELECT population, boundary IS NOT NULL FROM communes WHERE insee_code = '63300'",
    )
    .fetch_one(&f.pool)
    .await
    .unwrap();
    assert_eq!((population, has_boundary), (19999, true));

    // A boundary file in the directory is attached by insee_code.
    write(
        "communes-test.geojson",
        r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"insee_code":"63300"},
            "geometry":{"type":"Polygon","coordinates":[[[3.05,45.85],[3.17,45.85],[3.17,45.93],[3.05,45.93],[3.05,45.85]]]}}]}"#,
    );
    let files = proximites::territory::ReferenceFiles::read_dir(dir.path()).unwrap();
    assert_eq!(
        files.communes[0].boundary.as_ref().map(|b| b.0.len()),
        Some(1)
    );
    let summary = proximites::territory::store::load_reference(&f.pool, &files)
        .await
        .unwrap();
    assert_eq!(summary.boundaries, 1);

    // A missing file is named.
    std::fs::remove_file(dir.path().join("epci.csv")).unwrap();
    let error = proximites::territory::ReferenceFiles::read_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(error.contains("epci.csv"), "{error}");
}

/// One rule of service-public.fr's JSON hours: first and last day, opening intervals.
type HoursRule = (String, String, Vec<(String, String)>);

/// DILA records (bulk shape) of the first `n` demo town halls: the real addresses, positions,
/// phones and hours of `data/demo`, written as the Annuaire de l'administration publishes them.
fn dila_town_halls(n: usize) -> Vec<serde_json::Value> {
    use serde_json::json;
    let text = include_str!("../data/demo/mairies-auvergne.csv");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    reader
        .records()
        .take(n)
        .enumerate()
        .map(|(i, row)| {
            let row = row.unwrap();
            let (street, place) = row[3].split_once(" | ").unwrap_or((&row[3], ""));
            let (postcode, city) = place.split_once(' ').unwrap_or(("", place));
            let rules: Vec<HoursRule> = serde_json::from_str(&row[10]).unwrap_or_default();
            let ranges: Vec<serde_json::Value> = rules
                .iter()
                .map(|(from, to, slots)| {
                    let slot = |k: usize, end: bool| {
                        slots
                            .get(k)
                            .map(|s| if end { s.1.clone() } else { s.0.clone() })
                            .unwrap_or_default()
                    };
                    json!({
                        "nom_jour_debut": from, "nom_jour_fin": to,
                        "valeur_heure_debut_1": slot(0, false), "valeur_heure_fin_1": slot(0, true),
                        "valeur_heure_debut_2": slot(1, false), "valeur_heure_fin_2": slot(1, true),
                        "commentaire": "",
                    })
                })
                .collect();
            let mut record = json!({
                "id": format!("00000000-0000-4000-8000-{i:012}"),
                "nom": format!("Mairie - {}", &row[1]),
                "pivot": [{"type_service_local": "mairie", "code_insee_commune": [&row[0]]}],
                "code_insee_commune": &row[0],
                "adresse": [{"type_adresse": "Adresse", "numero_voie": street,
                    "code_postal": postcode, "nom_commune": city, "pays": "France",
                    "longitude": &row[4], "latitude": &row[5], "accessibilite": "ACC"}],
                "plage_ouverture": ranges,
                "date_modification": "2026-11-30 10:00:00",
            });
            if !row[6].is_empty() {
                record["telephone"] = json!([{"valeur": &row[6], "description": ""}]);
            }
            if !row[7].is_empty() {
                record["adresse_courriel"] = json!([&row[7]]);
            }
            if !row[8].is_empty() {
                record["site_internet"] = json!([{"libelle": "", "valeur": &row[8]}]);
            }
            record
        })
        .collect()
}

/// The explore API's export of the same records: a list, nested fields as JSON text.
fn explore_shape(records: &[serde_json::Value]) -> String {
    let nested = [
        "pivot",
        "adresse",
        "telephone",
        "adresse_courriel",
        "site_internet",
        "plage_ouverture",
    ];
    let list: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let mut r = r.as_object().unwrap().clone();
            for key in nested {
                if let Some(value) = r.get(key).cloned() {
                    r.insert(key.into(), serde_json::Value::String(value.to_string()));
                }
            }
            serde_json::Value::Object(r)
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

fn bulk_shape(records: &[serde_json::Value]) -> String {
    serde_json::json!({ "service": records }).to_string()
}

impl Fixture {
    async fn harvest(&self, text: String) -> ImportReport {
        import::harvest(
            &self.pool,
            &self.reference,
            import::National::Dila,
            Input::Bytes {
                name: "dila-local.json".into(),
                bytes: text.into_bytes(),
            },
            false,
            false,
        )
        .await
        .unwrap()
    }

    async fn status_of(&self, source_ref: &str) -> String {
        let (status,): (String,) =
            sqlx::query_as("SELECT status FROM services WHERE source_ref = ?")
                .bind(source_ref)
                .fetch_one(&self.pool)
                .await
                .unwrap();
        status
    }
}

/// A harvest of the Annuaire de l'administration treats the file as the source's whole state:
/// every usable record comes in under the DILA's name, unusable ones are reported by index and
/// field, unmapped types are counted; the same file again (bulk or explore shape) changes
/// nothing; records gone, renamed and moved are withdrawn (kept, restorable) and updated in
/// their history; the original file brings the withdrawn one back.
#[tokio::test]
async fn dila_harvests_follow_the_source() {
    let f = fixture().await;
    let mut records = dila_town_halls(300);
    let n = records.len() as u64;
    records.push(
        serde_json::json!({"id": "bad-commune", "nom": "Mairie - Nulle part",
        "pivot": [{"type_service_local": "mairie"}], "code_insee_commune": "99999",
        "adresse": [{"type_adresse": "Adresse", "longitude": "3.0", "latitude": "45.0"}]}),
    );
    records.push(serde_json::json!({"id": "no-name", "nom": "",
        "pivot": [{"type_service_local": "mairie"}], "code_insee_commune": "63113",
        "adresse": [{"type_adresse": "Adresse", "longitude": "3.08", "latitude": "45.77"}]}));
    for i in 0..2 {
        records.push(
            serde_json::json!({"id": format!("unmapped-{i}"), "nom": "Guichet",
            "pivot": [{"type_service_local": "type_inconnu"}], "code_insee_commune": "63113"}),
        );
    }
    let first = f.harvest(bulk_shape(&records)).await;
    assert!(first.committed, "{:?}", first.errors);
    assert_eq!(first.source, "Annuaire de l'administration (DILA)");
    assert_eq!(first.created + first.rejected, n + 2, "{:?}", first.errors);
    // A few real town halls lie outside the commune they name (the source's geocoding): they
    // are reported until quality flags take them in.
    assert!(first.created >= n - 10, "{:?}", first.errors);
    let unmapped = first.unmapped.clone().unwrap();
    assert_eq!(unmapped.records, 2);
    assert_eq!(unmapped.by_type.get("type_inconnu"), Some(&2));
    let named = |row: u64, field: &str| {
        first
            .errors
            .iter()
            .any(|e| e.row == Some(row) && e.field == field)
    };
    assert!(named(n + 1, "insee_code"), "{:?}", first.errors);
    assert!(named(n + 2, "name"), "{:?}", first.errors);

    for (label, text) in [
        ("bulk", bulk_shape(&records)),
        ("explore", explore_shape(&records)),
    ] {
        let again = f.harvest(text).await;
        assert_eq!(
            (again.created, again.updated, again.withdrawn),
            (0, 0, 0),
            "{label}"
        );
        assert_eq!(again.unchanged, first.created, "{label}");
    }

    let mut changed = records.clone();
    let gone = changed.remove(0)["id"].as_str().unwrap().to_owned();
    changed[0]["nom"] = "Mairie - nouveau nom".into();
    let moved_lat: f64 = changed[1]["adresse"][0]["latitude"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    changed[1]["adresse"][0]["latitude"] = format!("{:.6}", moved_lat + 0.001).into();
    let renamed = changed[0]["id"].as_str().unwrap().to_owned();
    let third = f.harvest(bulk_shape(&changed)).await;
    assert_eq!((third.updated, third.withdrawn, third.created), (2, 1, 0));
    assert_eq!(f.status_of(&gone).await, "withdrawn");
    let (actions,): (String,) = sqlx::query_as(
        "SELECT group_concat(action, ',') FROM (SELECT h.action FROM service_history h
           JOIN services s ON s.id = h.service_id WHERE s.source_ref = ? ORDER BY h.id)",
    )
    .bind(&renamed)
    .fetch_one(&f.pool)
    .await
    .unwrap();
    assert_eq!(actions, "created,updated");
    let back = f.harvest(bulk_shape(&records)).await;
    assert_eq!(back.updated, 3, "{back:?}");
    assert_eq!(f.status_of(&gone).await, "published");
}

/// `proximites harvest dila` reads the bulk file as downloaded (`.tar.bz2`); a truncated
/// archive is refused with a message and nothing written.
#[tokio::test]
async fn dila_harvest_command_reads_the_bulk_archive() {
    let dir = tempfile::tempdir().unwrap();
    let records = dila_town_halls(40);
    let json = bulk_shape(&records);
    let mut archive = Vec::new();
    {
        let encoder = bzip2::write::BzEncoder::new(&mut archive, bzip2::Compression::default());
        let mut builder = tar::Builder::new(encoder);
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(
                &mut header,
                "2026-12-05-data.gouv_local.json",
                json.as_bytes(),
            )
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }
    let bin = env!("CARGO_BIN_EXE_proximites");
    let url = format!("sqlite://{}", dir.path().join("h.db").display());
    let file = dir.path().join("dila.tar.bz2");
    std::fs::write(&file, &archive).unwrap();
    let report = dir.path().join("report.json");
    let output = std::process::Command::new(bin)
        .args(["--database-url", &url, "harvest", "dila"])
        .arg(&file)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(report["created"].as_u64().unwrap() >= 38, "{report}");
    assert!(
        stdout.contains("retirées de la source / withdrawn from the source 0"),
        "{stdout}"
    );

    let truncated = dir.path().join("truncated.tar.bz2");
    std::fs::write(&truncated, &archive[..archive.len() / 2]).unwrap();
    let fresh = format!("sqlite://{}", dir.path().join("t.db").display());
    let output = std::process::Command::new(bin)
        .args(["--database-url", &fresh, "harvest", "dila"])
        .arg(&truncated)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("archive .tar.bz2 illisible"), "{stdout}");
    let pool = db::connect(dir.path().join("t.db").to_str().unwrap())
        .await
        .unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM services")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

/// data·inclusion structures read back: the directory's own export (`proximites export
/// --format data-inclusion` on the demo) harvested into a new database gives one town hall per
/// structure, and its CSV twin then changes nothing.
#[tokio::test]
async fn data_inclusion_structures_harvest_back() {
    let source_dir = tempfile::tempdir().unwrap();
    let db = source_dir.path().join("demo.db");
    {
        let pool = db::connect(db.to_str().unwrap()).await.unwrap();
        boot::prepare(&pool, true).await.unwrap();
        pool.close().await;
    }
    let out = source_dir.path().join("di");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_proximites"))
        .args(["--database-url", &format!("sqlite://{}", db.display())])
        .args(["export", "--format", "data-inclusion", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = std::fs::read_to_string(out.join("structures.json")).unwrap();
    let structures: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();

    let f = fixture().await;
    let harvest = |name: &str, text: String| {
        import::harvest(
            &f.pool,
            &f.reference,
            import::National::DataInclusion,
            Input::Bytes {
                name: name.into(),
                bytes: text.into_bytes(),
            },
            false,
            false,
        )
    };
    let first = harvest("structures.json", json).await.unwrap();
    assert!(
        first.committed,
        "{:?}",
        &first.errors[..first.errors.len().min(3)]
    );
    assert_eq!(first.source, "data·inclusion");
    assert_eq!(
        first.created,
        structures.len() as u64,
        "{:?}",
        first.unmapped
    );
    assert_eq!(first.rejected, 0);
    let (town_halls,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM services WHERE typology_code = 'mairie' AND status = 'published'",
    )
    .fetch_one(&f.pool)
    .await
    .unwrap();
    assert_eq!(town_halls as usize, structures.len());
    let csv = std::fs::read_to_string(out.join("structures.csv")).unwrap();
    let again = harvest("structures.csv", csv).await.unwrap();
    assert_eq!(
        (again.created, again.updated, again.withdrawn),
        (0, 0, 0),
        "{again:?}"
    );
    assert_eq!(again.unchanged, first.created);
}
