//! Imports through the library on a fresh SQLite file each: formats, classification, atomicity,
//! and the taxonomy rules that protect existing entries.

use proximites::import::{self, ImportOptions, ImportReport, Input, Reference};
use proximites::{boot, db, taxonomy};

mod common;

const HEADER: &str = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description";

struct Fixture {
    store: db::Store,
    reference: Reference,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = common::new_store(dir.path(), "import.db").await;
    let reference = boot::prepare(&store, false).await.unwrap();
    Fixture {
        store,
        reference,
        _dir: dir,
    }
}

impl Fixture {
    async fn import(&self, name: &str, text: &str, options: ImportOptions) -> ImportReport {
        import::import(
            &self.store,
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
        let (n,): (i64,) = proximites::on_engine!(&self.store, |db| sqlx::query_as(
            "SELECT COUNT(*) FROM services"
        )
        .fetch_one(db)
        .await)
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
        proximites::on_engine!(&f.store, |db| sqlx::query_as(
            "SELECT insee_code, typology_code FROM services WHERE source_ref = 'b1'"
        )
        .fetch_one(db)
        .await)
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

    let (id_before,): (String,) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT id FROM services WHERE source_ref = 'p1'"
    )
    .fetch_one(db)
    .await)
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
    let (id_after, name): (String, String) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT id, name FROM services WHERE source_ref = 'p1'"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    assert_eq!(id_before, id_after, "an update keeps the entry's id");
    assert!(name.starts_with("Piscine"));
    // What a first load into an empty directory leaves (on PostgreSQL, one `COPY` into the table
    // emptied of its keys, the history and log written from it) is what a load row by row does.
    let history: Vec<(String, String, String)> =
        proximites::on_engine!(&f.store, |db| sqlx::query_as(
            "SELECT s.source_ref, h.action, h.actor_kind FROM service_history h
             JOIN services s ON s.id = h.service_id ORDER BY s.source_ref, h.id"
        )
        .fetch_all(db)
        .await)
        .unwrap();
    let history: Vec<(&str, &str, &str)> = history
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        history,
        [
            ("b1", "created", "import"),
            ("p1", "created", "import"),
            ("p1", "updated", "import")
        ],
        "one creation per entry, before its later versions"
    );
    let log: Vec<(String, String)> = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT s.source_ref, l.kind FROM change_log l JOIN services s ON s.id = l.entry_id
         ORDER BY l.seq"
    )
    .fetch_all(db)
    .await)
    .unwrap();
    let mut created: Vec<&str> = log
        .iter()
        .filter(|(_, kind)| kind == "created")
        .map(|(r, _)| r.as_str())
        .collect();
    created.sort_unstable();
    assert_eq!(created, ["b1", "p1"]);
    assert_eq!(
        log.last().map(|(r, k)| (r.as_str(), k.as_str())),
        Some(("p1", "changed"))
    );
    // The keys are back: a copied row, a reference or an id taken twice, an unknown commune,
    // a report on an entry that does not exist are all refused.
    for statement in [
        "INSERT INTO services SELECT * FROM services WHERE source_ref = 'p1'",
        "UPDATE services SET source_ref = 'b1' WHERE source_ref = 'p1'",
        "UPDATE services SET id = (SELECT id FROM services WHERE source_ref = 'b1')
         WHERE source_ref = 'p1'",
        "UPDATE services SET insee_code = '99999' WHERE source_ref = 'p1'",
        "INSERT INTO reports (id, service_id, organisation_id, message, status, created_at)
         SELECT 'r1', 'nope', source_id, 'x', 'open', created_at FROM services
         WHERE source_ref = 'p1'",
    ] {
        let refused = proximites::on_engine!(&f.store, |db| sqlx::query(statement)
            .execute(db)
            .await
            .map(|_| ()));
        assert!(refused.is_err(), "{statement} was accepted");
    }

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
    // Strict: hours that do not read refuse the row instead of flagging it.
    let strict = || ImportOptions {
        strict: true,
        ..Default::default()
    };
    let report = f.import("bad.csv", &text, strict()).await;
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
                ..strict()
            },
        )
        .await;
    assert!(skipping.committed);
    assert_eq!((skipping.created, skipping.rejected), (2, 4));
    assert_eq!(f.count().await, 2);
}

/// The quality flags of an entry as stored: (code, field, value).
async fn flags_of(f: &Fixture, source_ref: &str) -> Vec<(String, String, Option<String>)> {
    let (quality,): (Option<String>,) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT quality FROM services WHERE source_ref = $1"
    )
    .bind(source_ref)
    .fetch_one(db)
    .await)
    .unwrap();
    let flags: Vec<serde_json::Value> = quality
        .map(|q| serde_json::from_str(&q).unwrap())
        .unwrap_or_default();
    flags
        .iter()
        .map(|flag| {
            (
                flag["code"].as_str().unwrap().to_owned(),
                flag["field"].as_str().unwrap().to_owned(),
                flag["value"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn doubtful_rows_are_kept_with_quality_flags_and_the_unusable_rejected() {
    let f = fixture().await;
    // Riom's town hall, placed by its source in Vichy 40 km away, with a phone and hours that
    // do not read; Mozac's without a point; coordinates swapped; a point in Berlin, no commune.
    let moved =
        "q1,mairie,Mairie de Riom,,63200,,63300,3.4264,46.1277,04 73 38 99 999,,,Lundi 8h-12h,,";
    let no_point = "q2,mairie,Mairie de Mozac,,6320,,63245,,,,pas-un-courriel,,,peut-être,";
    let swapped = "x1,mairie,Mairie,,,,63300,45.8937,3.1130,,,,,,";
    let nowhere = "x2,mairie,Mairie,,,,,13.40,52.52,,,,,,";
    let text = csv(&[POOL, moved, no_point, swapped, nowhere]);
    let options = || ImportOptions {
        skip_invalid: true,
        ..Default::default()
    };
    let report = f.import("doutes.csv", &text, options()).await;
    assert!(report.committed, "{report:?}");
    assert_eq!(
        (report.created, report.rejected, report.flagged),
        (3, 2, 2),
        "{report:?}"
    );
    let warned = |line: u64, field: &str, words: &str| {
        report
            .warnings
            .iter()
            .any(|w| w.row == Some(line) && w.field == field && w.message.contains(words))
    };
    // The line a person sees (header = line 1) and the field, with what and by how much.
    assert!(
        warned(
            3,
            "insee_code",
            "km de Riom (63300), dans la commune de Vichy (03310)"
        ),
        "{:?}",
        report.warnings
    );
    assert!(warned(3, "phone", ""), "{:?}", report.warnings);
    assert!(
        warned(3, "opening_hours", "horaires illisibles"),
        "{:?}",
        report.warnings
    );
    assert!(
        warned(4, "lon", "ne donne pas de position"),
        "{:?}",
        report.warnings
    );
    assert!(warned(4, "postcode", "6320"), "{:?}", report.warnings);
    assert!(
        warned(4, "email", "pas-un-courriel"),
        "{:?}",
        report.warnings
    );
    assert!(warned(4, "wheelchair", ""), "{:?}", report.warnings);
    let rejected = |line: u64, field: &str| {
        report
            .errors
            .iter()
            .any(|e| e.row == Some(line) && e.field == field)
    };
    assert!(
        rejected(5, "lat") && rejected(6, "lon"),
        "{:?}",
        report.errors
    );

    // The source's text is kept in the flag; the entry stands at its commune's centre.
    let flags = flags_of(&f, "q1").await;
    let codes: Vec<&str> = flags.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(
        codes,
        [
            "position_outside_commune",
            "phone_unreadable",
            "hours_unreadable"
        ]
    );
    assert_eq!(flags[0].2.as_deref(), Some("lon=3.4264, lat=46.1277"));
    assert_eq!(flags[1].2.as_deref(), Some("04 73 38 99 999"));
    assert_eq!(flags[2].2.as_deref(), Some("Lundi 8h-12h"));
    let (insee, lon, lat, phones, hours): (String, f64, f64, String, Option<String>) =
        proximites::on_engine!(&f.store, |db| sqlx::query_as(
            "SELECT insee_code, lon, lat, phones, opening_hours FROM services WHERE source_ref = 'q1'",
        )
        .fetch_one(db).await)
        .unwrap();
    assert_eq!(insee, "63300");
    assert!((lon - 3.13270).abs() < 1e-6 && (lat - 45.89431).abs() < 1e-6);
    assert_eq!((phones.as_str(), hours), ("[]", None));
    let codes: Vec<String> = flags_of(&f, "q2").await.into_iter().map(|f| f.0).collect();
    assert_eq!(
        codes,
        [
            "position_missing",
            "postcode_invalid",
            "email_invalid",
            "wheelchair_unknown"
        ]
    );
    assert!(
        flags_of(&f, "p1").await.is_empty(),
        "a clean entry has none"
    );

    // The same file again changes nothing: each record is known by its digest as it came,
    // without being validated again, and its stored flags are still reported.
    let (digests,): (i64,) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT COUNT(source_digest) FROM services WHERE source_ref LIKE 'q%'"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    assert_eq!(digests, 2);
    let again = f.import("doutes.csv", &text, options()).await;
    assert_eq!((again.unchanged, again.updated, again.flagged), (3, 0, 2));
    assert_eq!(again.warnings, report.warnings);
    // Strict, the doubtful rows are refused (another way to validate: validated again).
    let strict = f
        .import(
            "doutes.csv",
            &text,
            ImportOptions {
                strict: true,
                dry_run: true,
                ..Default::default()
            },
        )
        .await;
    assert_eq!((strict.rejected, strict.flagged), (4, 0), "{strict:?}");
    let (journal,): (i64,) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT flagged_count FROM imports ORDER BY finished_at DESC LIMIT 1"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    assert_eq!(journal, 2);
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
    let (organisations,): (i64,) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT COUNT(*) FROM organisations"
    )
    .fetch_one(db)
    .await)
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
    let (insee, phones): (String, String) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT insee_code, phones FROM services WHERE source_ref = 'g2'"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    assert_eq!(
        (insee.as_str(), phones.as_str()),
        ("63113", r#"["+33473426363"]"#)
    );

    let scdl = "COLL_NOM;COLL_SIRET;EQUIP_UID;EQUIP_THEME;EQUIP_TYPE;EQUIP_NOM;ADRESSE;CP;COMMUNE;EQUIP_LAT;EQUIP_LONG;EQUIP_OUVERTURE\n\
                Ville de Riom;21630300300011;E1;Social;Pôle emploi;Agence France Travail;Rue;63200;Riom;45.8937;3.1130;Mo-Fr 08:30-16:30\n\
                Ville de Riom;21630300300011;E2;Sport;Piscine;Piscine municipale;Rue;63200;Riom;45.8940;3.1135;\n";
    let report = import::import(
        &f.store,
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
    let (typology,): (String,) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT typology_code FROM services WHERE source_ref = 'E1'"
    )
    .fetch_one(db)
    .await)
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
    let (hours, verified): (String, Option<chrono::DateTime<chrono::Utc>>) =
        proximites::on_engine!(&f.store, |db| sqlx::query_as(
            "SELECT opening_hours, verified_at FROM services"
        )
        .fetch_one(db)
        .await)
        .unwrap();
    assert_eq!(hours, "Mo-Fr 08:30-12:00");
    assert!(verified.unwrap().to_rfc3339().starts_with("2026-10-01"));
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
    taxonomy::store::sync(&f.store.clone(), &retired)
        .await
        .unwrap();
    let with_retired = Reference {
        taxonomy: std::sync::Arc::new(retired.clone()),
        locator: f.reference.locator.clone(),
    };
    let second_pool = POOL.replace("p1,", "p2,");
    let report = import::import(
        &f.store,
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
    let error = taxonomy::store::sync(&f.store.clone(), &removed)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "typology_in_use");
    let (still_there,): (i64,) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT COUNT(*) FROM typologies"
    )
    .fetch_one(db)
    .await)
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
    let summary = proximites::territory::store::load_reference(&f.store.clone(), &files)
        .await
        .unwrap();
    assert_eq!((summary.communes, summary.boundaries), (1, 0));
    let (population, has_boundary): (i64, bool) =
        proximites::on_engine!(&f.store, |db| sqlx::query_as(
            "SELECT population, boundary IS NOT NULL FROM communes WHERE insee_code = '63300'",
        )
        .fetch_one(db)
        .await)
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
    let summary = proximites::territory::store::load_reference(&f.store.clone(), &files)
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
            &self.store,
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
        let (status,): (String,) = proximites::on_engine!(&self.store, |db| sqlx::query_as(
            "SELECT status FROM services WHERE source_ref = $1"
        )
        .bind(source_ref)
        .fetch_one(db)
        .await)
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
    // Riom's town hall placed by the source in Vichy, as the national file places Gex's in
    // Vénissieux: kept, at Riom's centre, flagged.
    records.push(
        serde_json::json!({"id": "riom-a-vichy", "nom": "Mairie - Riom",
        "pivot": [{"type_service_local": "mairie"}], "code_insee_commune": "63300",
        "adresse": [{"type_adresse": "Adresse", "longitude": "3.4264", "latitude": "46.1277"}]}),
    );
    let first = f.harvest(bulk_shape(&records)).await;
    assert!(first.committed, "{:?}", first.errors);
    assert_eq!(first.source, "Annuaire de l'administration (DILA)");
    // Every usable record comes in, those whose point lies outside their commune (the
    // source's geocoding) with a quality flag.
    assert_eq!(
        (first.created, first.rejected),
        (n + 1, 2),
        "{:?}",
        first.errors
    );
    assert!(
        first.warnings.iter().any(|w| w.row == Some(n + 5)
            && w.field == "insee_code"
            && w.message
                .contains("de Riom (63300), dans la commune de Vichy (03310)")),
        "{:?}",
        first.warnings
    );
    assert_eq!(
        flags_of(&f, "riom-a-vichy").await[0].0,
        "position_outside_commune"
    );
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
    let actions: Vec<(String,)> = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT h.action FROM service_history h
           JOIN services s ON s.id = h.service_id WHERE s.source_ref = $1 ORDER BY h.id",
    )
    .bind(&renamed)
    .fetch_all(db)
    .await)
    .unwrap();
    let actions: Vec<String> = actions.into_iter().map(|(a,)| a).collect();
    assert_eq!(actions.join(","), "created,updated");
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
    let store = db::Store::connect(dir.path().join("t.db").to_str().unwrap())
        .await
        .unwrap();
    let (n,): (i64,) =
        proximites::on_engine!(&store, |db| sqlx::query_as("SELECT COUNT(*) FROM services")
            .fetch_one(db)
            .await)
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
        let store = db::Store::connect(db.to_str().unwrap()).await.unwrap();
        boot::prepare(&store, true).await.unwrap();
        store.close().await;
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
            &f.store,
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
    let (town_halls,): (i64,) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT COUNT(*) FROM services WHERE typology_code = 'mairie' AND status = 'published'",
    )
    .fetch_one(db)
    .await)
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

/// Lambert-93 (or the `epsg` system's) coordinates of WGS84 points, by PROJ's own `cs2cs`: the
/// reference the BPE reader's reprojection is checked against.
fn cs2cs(epsg: u32, points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    use std::io::Write;
    let mut child = std::process::Command::new("cs2cs")
        .args(["-f", "%.3f", "EPSG:4326", &format!("EPSG:{epsg}")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cs2cs (PROJ's proj-bin) is installed by .ci/run");
    {
        let mut input = child.stdin.take().unwrap();
        for (lon, lat) in points {
            // EPSG:4326 takes latitude first.
            writeln!(input, "{lat} {lon}").unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut parts = line.split_whitespace();
            let x: f64 = parts.next().unwrap().parse().unwrap();
            let y: f64 = parts.next().unwrap().parse().unwrap();
            (x, y)
        })
        .collect()
}

const BPE_HEADER: &str =
    "NOMRS;CNOMRS;NUMVOIE;INDREP;TYPVOIE;LIBVOIE;CADR;CODPOS;DEPCOM;DEP;TYPEQU;SIRET;LAMBERT_X;LAMBERT_Y;QUALITE_XY;EPSG;LIBCOM;AN";

/// One BPE row: name, street, postcode, commune, type, SIRET, coordinates, EPSG, town.
#[allow(clippy::too_many_arguments)]
fn bpe_row(
    name: &str,
    street: (&str, &str, &str),
    postcode: &str,
    depcom: &str,
    typequ: &str,
    siret: &str,
    xy: Option<(f64, f64)>,
    epsg: &str,
    town: &str,
) -> String {
    let (x, y) = xy.map_or((String::new(), String::new()), |(x, y)| {
        (format!("{x:.2}"), format!("{y:.2}"))
    });
    format!(
        "{name};;{};;{};{};;{postcode};{depcom};{};{typequ};{siret};{x};{y};Bonne;{epsg};{town};2024",
        street.0,
        street.1,
        street.2,
        &depcom[..if depcom.starts_with("97") { 3 } else { 2 }]
    )
}

impl Fixture {
    async fn harvest_bpe(&self, name: &str, bytes: Vec<u8>) -> ImportReport {
        import::harvest(
            &self.store,
            &self.reference,
            import::National::Bpe,
            Input::Bytes {
                name: name.into(),
                bytes,
            },
            false,
            false,
        )
        .await
        .unwrap()
    }

    async fn position_of(&self, source_ref: &str) -> (f64, f64, String) {
        proximites::on_engine!(&self.store, |db| sqlx::query_as(
            "SELECT lon, lat, status FROM services WHERE source_ref = $1"
        )
        .bind(source_ref)
        .fetch_one(db)
        .await)
        .unwrap()
    }
}

/// A BPE file of Riom's town hall alone, with `siret`, placed `east_m` metres east of the
/// Annuaire's point (Lambert-93).
fn riom_town_hall_bpe(siret: &str, east_m: f64) -> String {
    let riom = cs2cs(2154, &[(3.1133, 45.8937)])[0];
    format!(
        "{BPE_HEADER}\n{}\n",
        bpe_row(
            "MAIRIE",
            ("5", "R", "DE L HOTEL DE VILLE"),
            "63200",
            "63300",
            "A129",
            siret,
            Some((riom.0 + east_m, riom.1)),
            "2154",
            "Riom",
        )
    )
}

/// A BPE file of 200 town halls in Lambert-93, overseas rows in their UTM zones, a pharmacy
/// with its SIRET, rows without coordinates, types no typology takes and a swapped row: each
/// placed within 1 m of PROJ's cs2cs; a year later, rows moved a little, one gone, one new and
/// the pharmacy moved far, each matched and reported as it was; a zip holding the CSV reads
/// alike; an unknown EPSG or a file without TYPEQU writes nothing.
#[tokio::test]
async fn bpe_harvests_reproject_and_match_rows_across_years() {
    let f = fixture().await;
    let text = include_str!("../data/demo/mairies-auvergne.csv");
    let halls: Vec<(String, String, f64, f64)> = csv::Reader::from_reader(text.as_bytes())
        .records()
        .take(200)
        .map(|row| {
            let row = row.unwrap();
            (
                row[0].to_owned(),
                row[1].to_owned(),
                row[4].parse().unwrap(),
                row[5].parse().unwrap(),
            )
        })
        .collect();
    let lambert = cs2cs(2154, &halls.iter().map(|h| (h.2, h.3)).collect::<Vec<_>>());
    // Riom's pharmacy; Saint-Denis (La Réunion) and Fort-de-France (Martinique) town halls.
    let pharmacy = (3.1130, 45.8937);
    let pharmacy_xy = cs2cs(2154, &[pharmacy])[0];
    let reunion = (55.4481, -20.8789);
    let reunion_xy = cs2cs(2975, &[reunion])[0];
    let martinique = (-61.0702, 14.6036);
    let martinique_xy = cs2cs(5490, &[martinique])[0];

    let year = |moved_m: f64, drop_first: bool, pharmacy_xy: (f64, f64), extra: bool| {
        let mut rows = vec![BPE_HEADER.to_owned()];
        for (i, (code, town, _, _)) in halls.iter().enumerate() {
            if drop_first && i == 0 {
                continue;
            }
            let (x, y) = lambert[i];
            rows.push(bpe_row(
                "MAIRIE",
                ("1", "PL", "DE LA MAIRIE"),
                "",
                code,
                "A129",
                "",
                Some((x + moved_m, y)),
                "2154",
                town,
            ));
        }
        rows.push(bpe_row(
            "PHARMACIE DU MARTRAY",
            ("4", "R", "DU COMMERCE"),
            "63200",
            "63300",
            "D307",
            "12345678900012",
            Some(pharmacy_xy),
            "2154",
            "Riom",
        ));
        rows.push(bpe_row(
            "MAIRIE",
            ("2", "R", "DE PARIS"),
            "97400",
            "97411",
            "A129",
            "",
            Some(reunion_xy),
            "2975",
            "Saint-Denis",
        ));
        rows.push(bpe_row(
            "",
            ("", "", ""),
            "97200",
            "97209",
            "A129",
            "",
            Some(martinique_xy),
            "5490",
            "Fort-de-France",
        ));
        // Published without coordinates: placed at the commune's centre, flagged.
        rows.push(bpe_row(
            "",
            ("", "", ""),
            "",
            "63113",
            "D307",
            "",
            None,
            "",
            "Clermont-Ferrand",
        ));
        rows.push(bpe_row(
            "",
            ("", "", ""),
            "",
            "63113",
            "F307",
            "",
            None,
            "",
            "Clermont-Ferrand",
        ));
        // Types no typology takes: a bank, a hairdresser.
        rows.push(bpe_row(
            "BANQUE",
            ("", "", ""),
            "",
            "63113",
            "A203",
            "",
            Some(lambert[0]),
            "2154",
            "",
        ));
        rows.push(bpe_row(
            "COIFFURE",
            ("", "", ""),
            "",
            "63113",
            "A501",
            "",
            Some(lambert[0]),
            "2154",
            "",
        ));
        // X and Y swapped (the first year only: a rejected row names no entry, and nothing is
        // withdrawn while there is one).
        if !extra {
            rows.push(bpe_row(
                "MAIRIE",
                ("", "", ""),
                "",
                &halls[1].0,
                "A129",
                "",
                Some((lambert[1].1, lambert[1].0)),
                "2154",
                "",
            ));
        }
        if extra {
            rows.push(bpe_row(
                "MEDIATHEQUE",
                ("", "", ""),
                "",
                "63300",
                "F307",
                "",
                Some(pharmacy_xy),
                "2154",
                "Riom",
            ));
        }
        rows.join("\r\n") + "\r\n"
    };

    let first = f
        .harvest_bpe(
            "bpe24_ensemble_xy.csv",
            year(0.0, false, pharmacy_xy, false).into_bytes(),
        )
        .await;
    assert!(first.committed, "{:?}", first.errors);
    assert_eq!(first.source, "INSEE Base permanente des équipements (BPE)");
    assert_eq!(first.created, 205, "{:?}", first.errors);
    assert_eq!(first.rejected, 1);
    // The swapped row, named by the line a person sees (header = 1, CRLF endings).
    let swapped_line = 2 + 200 + 5 + 2;
    assert!(
        first
            .errors
            .iter()
            .any(|e| e.row == Some(swapped_line as u64) && e.message.contains("inversées")),
        "{:?}",
        first.errors
    );
    let unmapped = first.unmapped.clone().unwrap();
    assert_eq!(unmapped.records, 2);
    assert_eq!(unmapped.by_type.get("A203"), Some(&1));
    let matching = first.matching.clone().unwrap();
    assert_eq!(
        (
            matching.new,
            matching.by_siret,
            matching.by_position,
            matching.without_coordinates
        ),
        (205, 0, 0, 2)
    );
    // The rows without coordinates, and the few town halls the source places outside their
    // commune.
    let without: Vec<u64> = first
        .warnings
        .iter()
        .filter(|w| w.message.contains("ne donne pas de position"))
        .filter_map(|w| w.row)
        .collect();
    assert_eq!(without, [2 + 200 + 3, 2 + 200 + 4], "{:?}", first.warnings);
    assert!((2..12).contains(&first.flagged), "{:?}", first.warnings);

    // Every position within 1 m of where PROJ puts it, overseas too.
    let metres = |a: (f64, f64), b: (f64, f64)| {
        let (dx, dy) = (
            (a.0 - b.0).to_radians() * 6_371_000.0 * a.1.to_radians().cos(),
            (a.1 - b.1).to_radians() * 6_371_000.0,
        );
        (dx * dx + dy * dy).sqrt()
    };
    let stored: Vec<(String, f64, f64)> = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT source_ref, lon, lat FROM services"
    )
    .fetch_all(db)
    .await)
    .unwrap();
    let near = |p: (f64, f64)| {
        stored
            .iter()
            .any(|(_, lon, lat)| metres((*lon, *lat), p) < 1.0)
    };
    for hall in &halls {
        // The few town halls the source places outside their commune stand at its centre.
        let (code, _, lon, lat) = hall;
        let flagged: (Option<String>,) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
            "SELECT quality FROM services WHERE insee_code = $1 AND typology_code = 'mairie'",
        )
        .bind(code)
        .fetch_one(db)
        .await)
        .unwrap();
        assert!(flagged.0.is_some() || near((*lon, *lat)), "{hall:?}");
    }
    assert!(near(pharmacy) && near(reunion) && near(martinique));
    let (name, street): (String, Option<String>) =
        proximites::on_engine!(&f.store, |db| sqlx::query_as(
            "SELECT name, street FROM services WHERE insee_code = '97209'"
        )
        .fetch_one(db)
        .await)
        .unwrap();
    assert_eq!((name.as_str(), street), ("Mairie — Fort-de-France", None));
    let (street,): (Option<String>,) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT street FROM services WHERE source_ref LIKE 'siret:%'"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    assert_eq!(street.as_deref(), Some("4 Rue DU COMMERCE"));

    // The same file in a zip changes nothing.
    let zipped = {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file(
            "bpe24_ensemble_xy.csv",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(year(0.0, false, pharmacy_xy, false).as_bytes())
            .unwrap();
        zip.finish().unwrap().into_inner()
    };
    let again = f.harvest_bpe("bpe24_ensemble_xy_csv.zip", zipped).await;
    assert_eq!(
        (
            again.created,
            again.updated,
            again.unchanged,
            again.withdrawn
        ),
        (0, 0, 205, 0),
        "{:?}",
        again.errors
    );

    // A year later: town halls geocoded 30 m east, the first one gone, the pharmacy moved
    // 2 km (same SIRET), a new library.
    let first_ref = stored
        .iter()
        .find(|(_, lon, lat)| metres((*lon, *lat), (halls[0].2, halls[0].3)) < 1.0)
        .map(|(r, _, _)| r.clone())
        .unwrap();
    let moved_pharmacy = (pharmacy_xy.0 + 2_000.0, pharmacy_xy.1);
    let next = f
        .harvest_bpe(
            "bpe25_ensemble_xy.csv",
            year(30.0, true, moved_pharmacy, true).into_bytes(),
        )
        .await;
    assert!(next.committed, "{:?}", next.errors);
    let matching = next.matching.clone().unwrap();
    assert_eq!(
        (matching.by_siret, matching.by_position, matching.new),
        (1, 203, 1),
        "{matching:?}"
    );
    assert_eq!((next.created, next.withdrawn), (1, 1));
    assert_eq!(f.position_of(&first_ref).await.2, "withdrawn");
    let (lon, lat, status) = f.position_of("siret:12345678900012:D307").await;
    assert_eq!(status, "published");
    assert!((metres((lon, lat), pharmacy) - 2_000.0).abs() < 20.0);

    // An unknown system, or a file without TYPEQU: nothing is written.
    let before = f.count().await;
    let unknown = year(0.0, false, pharmacy_xy, false).replacen(";2154;", ";27572;", 1);
    let report = f.harvest_bpe("bpe-epsg.csv", unknown.into_bytes()).await;
    assert!(!report.committed);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.field == "EPSG" && e.row == Some(2) && e.message.contains("27572")),
        "{:?}",
        report.errors
    );
    let headless = f
        .harvest_bpe(
            "bpe-sans-type.csv",
            "DEPCOM;NOMRS\n63113;MAIRIE\n".as_bytes().to_vec(),
        )
        .await;
    assert!(!headless.committed);
    assert!(
        headless.errors[0].message.contains("TYPEQU"),
        "{:?}",
        headless.errors
    );
    assert_eq!(f.count().await, before);
}

/// The data·inclusion services file beside the structures: each structure's entry names the
/// services it offers (JSON or CSV alike) and is reached through their contact when it has
/// none of its own; a services file that does not read writes nothing.
#[tokio::test]
async fn data_inclusion_services_describe_their_structures() {
    let f = fixture().await;
    let structures = r#"[
        {"source": "dora", "id": "caf-riom", "nom": "CAF du Puy-de-Dôme - Riom", "code_insee": "63300",
         "longitude": 3.1133, "latitude": 45.8937, "reseaux_porteurs": ["caf"]},
        {"source": "dora", "id": "ml-riom", "nom": "Mission locale Riom Limagne", "code_insee": "63300",
         "longitude": 3.1150, "latitude": 45.8940, "telephone": "04 73 64 00 00",
         "description": "Accueil des 16-25 ans.", "reseaux_porteurs": ["mission-locale"]}
    ]"#;
    let services_json = r#"{"items": [
        {"source": "dora", "id": "s1", "structure_id": "caf-riom", "nom": "Prime d'activité"},
        {"source": "dora", "id": "s2", "structure_id": "caf-riom", "nom": "Aide au logement",
         "telephone": "32 30", "courriel": "contact@caf63.example"},
        {"source": "dora", "id": "s3", "structure_id": "caf-riom", "nom": "Accès aux droits"},
        {"source": "dora", "id": "s4", "structure_id": "ml-riom", "nom": "Garantie jeunes"},
        {"source": "soliguide", "id": "s5", "structure_id": "caf-riom", "nom": "Autre source"},
        {"source": "dora", "id": "s6", "structure_id": "ailleurs", "nom": "Sans structure"}
    ]}"#;
    let services_csv = "source,id,structure_id,nom,telephone,courriel\n\
        dora,s1,caf-riom,Prime d'activité,,\n\
        dora,s2,caf-riom,Aide au logement,32 30,contact@caf63.example\n\
        dora,s3,caf-riom,Accès aux droits,,\n\
        dora,s4,ml-riom,Garantie jeunes,,\n";
    let harvest = |services: Option<(&str, &str)>| {
        import::harvest_with(
            &f.store,
            &f.reference,
            import::National::DataInclusion,
            Input::Bytes {
                name: "structures.json".into(),
                bytes: structures.as_bytes().to_vec(),
            },
            services.map(|(name, text)| Input::Bytes {
                name: name.into(),
                bytes: text.as_bytes().to_vec(),
            }),
            false,
            false,
        )
    };
    let first = harvest(Some(("services.json", services_json)))
        .await
        .unwrap();
    assert!(first.committed && first.created == 2, "{first:?}");
    let summary = first.data_inclusion_services.clone().unwrap();
    assert_eq!((summary.services, summary.structures_with_services), (6, 2));
    let entry = |source_ref: &'static str| {
        let store = f.store.clone();
        async move {
            let row: (String, String, Option<String>) =
                proximites::on_engine!(&store, |db| sqlx::query_as(
                    "SELECT description, phones, email FROM services WHERE source_ref = $1",
                )
                .bind(source_ref)
                .fetch_one(db)
                .await)
                .unwrap();
            row
        }
    };
    let (description, phones, email) = entry("caf-riom").await;
    assert_eq!(
        description,
        "Services proposés : Accès aux droits ; Aide au logement ; Prime d'activité."
    );
    assert_eq!(
        phones, r#"["3230"]"#,
        "the structure is reached through its services"
    );
    assert_eq!(email.as_deref(), Some("contact@caf63.example"));
    let (description, phones, _) = entry("ml-riom").await;
    assert_eq!(
        description,
        "Accueil des 16-25 ans.\n\nServices proposés : Garantie jeunes."
    );
    assert_eq!(phones, r#"["+33473640000"]"#, "its own phone first");

    let csv = harvest(Some(("services.csv", services_csv))).await.unwrap();
    assert_eq!((csv.unchanged, csv.updated), (2, 0), "{csv:?}");
    let without = harvest(None).await.unwrap();
    assert_eq!(without.updated, 2, "{without:?}");

    let journal = || async {
        let (n,): (i64,) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
            "SELECT COUNT(*) FROM imports"
        )
        .fetch_one(db)
        .await)
        .unwrap();
        n
    };
    let before = journal().await;
    let unreadable = harvest(Some(("services.json", r#"{"structures": 3}"#)))
        .await
        .unwrap();
    assert!(!unreadable.committed);
    assert_eq!(
        unreadable.errors[0].field, "services.file",
        "{:?}",
        unreadable.errors
    );
    assert_eq!(journal().await, before, "nothing written");
}

/// A town hall the BPE harvested, claimed by its commune, is still recognised the next year
/// when its row moved a little (a new key): left to the commune, neither created again nor
/// flagged as dropped.
#[tokio::test]
async fn a_claimed_bpe_entry_is_matched_the_next_year() {
    use proximites::accounts::store as accounts;
    let f = fixture().await;
    let file = |moved_m: f64| riom_town_hall_bpe("", moved_m).into_bytes();
    let first = f.harvest_bpe("bpe.csv", file(0.0)).await;
    assert_eq!(first.created, 1, "{first:?}");
    let (id, origin_ref): (String, String) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT id, source_ref FROM services"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    let commune = accounts::create_organisation(
        &f.store,
        &accounts::NewOrganisation {
            name: "Ville de Riom".into(),
            kind: "commune".into(),
            territory: proximites::accounts::Territory(vec![proximites::accounts::Area::parse(
                "commune:63300",
            )
            .unwrap()]),
            ..accounts::NewOrganisation::default()
        },
    )
    .await
    .unwrap();
    let (_, token) = accounts::create_token(&f.store, &commune.id, "script")
        .await
        .unwrap();
    let actor = accounts::actor_for_token(&f.store.clone(), &token)
        .await
        .unwrap()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let live = std::sync::Arc::new(
        proximites::search::live::LiveIndexes::open(&f.store, f.reference.clone(), dir.path())
            .await
            .unwrap(),
    );
    let entries = proximites::services::write::Entries {
        store: &f.store,
        reference: &f.reference,
        live: &live,
    };
    proximites::services::claims::claim(
        entries,
        &actor,
        proximites::services::history::Via::Api,
        &id,
    )
    .await
    .unwrap();
    let next_year = f.harvest_bpe("bpe.csv", file(30.0)).await;
    assert_eq!(
        (
            next_year.claimed,
            next_year.created,
            next_year.claims_dropped,
            next_year.withdrawn
        ),
        (1, 0, 0, 0),
        "{next_year:?}"
    );
    let (claimed_ref,): (String,) = proximites::on_engine!(&f.store, |db| sqlx::query_as(
        "SELECT origin_ref FROM claims"
    )
    .fetch_one(db)
    .await)
    .unwrap();
    assert_eq!(claimed_ref, origin_ref);
    assert_eq!(f.count().await, 1);
}

/// The Annuaire and the BPE give Riom's town hall the same SIRET, the BPE 2 km from the
/// Annuaire's point: one service, the BPE's entry hidden behind the Annuaire's; harvesting both
/// files again (their records recognised unchanged) keeps it so.
#[tokio::test]
async fn the_same_siret_from_two_sources_is_one_service() {
    let f = fixture().await;
    const SIRET: &str = "21630300300011";
    let dila = bulk_shape(&[serde_json::json!({
        "id": "riom-dila", "nom": "Mairie - Riom", "siret": SIRET,
        "pivot": [{"type_service_local": "mairie"}], "code_insee_commune": "63300",
        "adresse": [{"type_adresse": "Adresse", "longitude": "3.1133", "latitude": "45.8937"}]})]);
    let bpe = riom_town_hall_bpe("216 303 003 00011", 2000.0);
    let statuses = || async {
        proximites::on_engine!(&f.store, |db| sqlx::query_as::<
            _,
            (String, String, Option<String>),
        >(
            "SELECT source_ref, status, siret FROM services ORDER BY source_ref",
        )
        .fetch_all(db)
        .await)
        .unwrap()
    };
    for round in 0..2 {
        let first = f.harvest(dila.clone()).await;
        assert!(first.committed, "{first:?}");
        let second = f.harvest_bpe("bpe.csv", bpe.clone().into_bytes()).await;
        assert!(second.committed, "{second:?}");
        if round == 1 {
            assert_eq!((first.unchanged, second.unchanged), (1, 1), "{second:?}");
        }
        assert_eq!(
            statuses().await,
            [
                ("riom-dila".into(), "published".into(), Some(SIRET.into())),
                (
                    format!("siret:{SIRET}:A129"),
                    "duplicate".into(),
                    Some(SIRET.into())
                ),
            ],
            "round {round}"
        );
    }
}
