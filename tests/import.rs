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
