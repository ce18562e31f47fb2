//! The search API against brute force on generated data, through the real router.

use std::collections::HashSet;

use axum::http::StatusCode;
use proximites::import::{self, ImportOptions, Input};
use proximites::spatial::LonLat;
use serde_json::Value;

mod common;
use common::Fixture;

/// The Auvergne demo, 4,000 generated entries in Auvergne, and a few hand-made ones.
async fn fixture() -> Fixture {
    let (dir, store, reference) = common::database(true).await;
    common::import_generated(&store, &reference, &["03", "15", "43", "63"], 4_000, 5).await;
    let extra = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description\n\
                 e1,ecole-elementaire,École Jules-Ferry,,,,63300,3.1140,45.8950,,,,,yes,\n\
                 p1,prefecture,Préfecture du Puy-de-Dôme,,,,63113,3.0870,45.7790,,,,\"Mo-Fr 08:30-12:00,13:30-16:30; PH off\",,\n";
    let report = import::import(
        &store,
        &reference,
        Input::Bytes {
            name: "extra.csv".into(),
            bytes: extra.as_bytes().to_vec(),
        },
        ImportOptions::default(),
    )
    .await
    .unwrap();
    assert!(report.committed, "{report:?}");
    Fixture::serve(dir, store, reference).await
}

impl Fixture {
    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let (status, _, body) = common::get(&self.router, uri).await;
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// Every published (id, typology, lon, lat, departement) of the database.
    async fn rows(&self) -> Vec<(String, String, f64, f64, String)> {
        proximites::on_engine!(&self.state.store, |db| sqlx::query_as(
            "SELECT s.id, s.typology_code, s.lon, s.lat, c.departement_code FROM services s
             JOIN communes c ON c.insee_code = s.insee_code WHERE s.status = 'published'",
        )
        .fetch_all(db)
        .await)
        .unwrap()
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn nearest_and_radius_equal_brute_force() {
    let f = fixture().await;
    let rows = f.rows().await;
    let from = LonLat::new(3.1, 45.8);
    let mut by_distance: Vec<(f64, String, String)> = rows
        .iter()
        .map(|(id, typology, lon, lat, _)| {
            (
                from.distance_m(LonLat::new(*lon, *lat)),
                id.clone(),
                typology.clone(),
            )
        })
        .collect();
    by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));

    let (status, page) = f
        .get("/api/v1/services?near=3.1,45.8&typology=mairie&limit=10")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let expected: Vec<String> = by_distance
        .iter()
        .filter(|r| r.2 == "mairie")
        .take(10)
        .map(|r| r.1.clone())
        .collect();
    assert_eq!(ids(&page), expected);
    let distances: Vec<f64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["distance_m"].as_f64().unwrap())
        .collect();
    assert!(distances.windows(2).all(|w| w[0] <= w[1]));

    let (_, page) = f
        .get("/api/v1/services?near=3.1,45.8&radius=5000&limit=100")
        .await;
    let within: Vec<String> = by_distance
        .iter()
        .filter(|r| r.0 <= 5000.0)
        .map(|r| r.1.clone())
        .collect();
    assert!(within.len() > 100, "the radius holds more than a page");
    assert_eq!(page["total"], within.len());
    assert_eq!(ids(&page), within[..100]);
}

#[tokio::test]
async fn territory_filters_are_exact_and_paging_returns_each_entry_once() {
    let f = fixture().await;
    let rows = f.rows().await;
    let expected: HashSet<String> = rows
        .iter()
        .filter(|r| r.4 == "15")
        .map(|r| r.0.clone())
        .collect();
    assert!(expected.len() > 100);
    for base in [
        "/api/v1/services?in=departement:15&limit=37",
        "/api/v1/services?in=departement:15&near=2.44,44.93&limit=37",
    ] {
        let mut seen = Vec::new();
        let mut uri = base.to_owned();
        loop {
            let (status, page) = f.get(&uri).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert_eq!(page["total"], expected.len());
            seen.extend(ids(&page));
            match page["next"].as_str() {
                Some(cursor) => uri = format!("{base}&cursor={cursor}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), expected.len(), "{base}: no entry twice");
        assert_eq!(seen.into_iter().collect::<HashSet<_>>(), expected, "{base}");
    }
}

#[tokio::test]
async fn words_find_names_typologies_and_communes() {
    let f = fixture().await;
    let (_, page) = f.get("/api/v1/services?q=mairie%20riom").await;
    assert_eq!(page["items"][0]["name"], "Mairie de Riom");
    let (_, page) = f.get("/api/v1/services?q=ecole%20jules").await;
    assert_eq!(page["items"][0]["name"], "École Jules-Ferry");
    let (_, page) = f
        .get("/api/v1/services?q=prefecture&in=commune:63113")
        .await;
    assert!(!ids(&page).is_empty());
    assert_eq!(page["items"][0]["name"], "Préfecture du Puy-de-Dôme");
    let (_, page) = f
        .get("/api/v1/services?q=france%20travail&in=departement:63")
        .await;
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["typology"]["code"] == "anpe"),
        "a synonym finds the typology"
    );
}

impl Fixture {
    /// Every item of every page of `uri`, following the cursors.
    async fn all_pages(&self, uri: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut next = uri.to_owned();
        loop {
            let (status, page) = self.get(&next).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next"].as_str() {
                Some(cursor) => next = format!("{uri}&cursor={cursor}"),
                None => return items,
            }
        }
    }
}

#[tokio::test]
async fn words_within_a_radius_equal_the_words_filtered_by_distance() {
    let f = fixture().await;
    for (q, typology) in [
        ("mairie", ""),
        ("ecole", ""),
        ("pharmacie", "&typology=pharmacie"),
    ] {
        // The words alone, nearest first: no cell narrows them.
        let everywhere = f
            .all_pages(&format!(
                "/api/v1/services?q={q}&near=3.1,45.8&limit=100{typology}"
            ))
            .await;
        assert!(everywhere.len() > 20, "{q}: {}", everywhere.len());
        for radius in [800.0, 5_000.0, 30_000.0, 150_000.0] {
            let expected: Vec<&str> = everywhere
                .iter()
                .filter(|i| i["distance_m"].as_f64().unwrap() <= radius)
                .map(|i| i["id"].as_str().unwrap())
                .collect();
            let (_, first) = f
                .get(&format!(
                    "/api/v1/services?q={q}&near=3.1,45.8&radius={radius}&limit=100{typology}"
                ))
                .await;
            assert_eq!(first["total"], expected.len(), "{q} within {radius} m");
            let within = f
                .all_pages(&format!(
                    "/api/v1/services?q={q}&near=3.1,45.8&radius={radius}&limit=100{typology}"
                ))
                .await;
            let found: Vec<&str> = within.iter().map(|i| i["id"].as_str().unwrap()).collect();
            assert_eq!(found, expected, "{q} within {radius} m");
        }
    }
}

#[tokio::test]
async fn each_item_is_the_entry_with_its_distance_and_state() {
    let f = fixture().await;
    for _ in 0..2 {
        // Twice: the second page comes from the entries kept in memory.
        let (status, page) = f
            .get("/api/v1/services?near=3.1,45.8&limit=5&typology=mairie,piscine")
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["items"].as_array().unwrap().len(), 5);
        for item in page["items"].as_array().unwrap() {
            let (status, entry) = f
                .get(&format!(
                    "/api/v1/services/{}",
                    item["id"].as_str().unwrap()
                ))
                .await;
            assert_eq!(status, StatusCode::OK);
            let mut item = item.as_object().unwrap().clone();
            assert!(item.remove("distance_m").unwrap().as_f64().unwrap() >= 0.0);
            assert!(item.contains_key("open_now") && item.contains_key("next_change"));
            item.remove("open_now");
            item.remove("next_change");
            assert_eq!(Value::Object(item), entry);
        }
        assert!(page["next"].is_string());
        assert!(page["total"].as_u64().unwrap() > 5);
    }
    let (_, page) = f.get("/api/v1/services?q=zzzzzzzz").await;
    assert_eq!(
        page,
        serde_json::json!({"items": [], "next": null, "total": 0})
    );
}

#[tokio::test]
async fn open_at_knows_public_holidays() {
    let f = fixture().await;
    let uri =
        |at: &str| format!("/api/v1/services?q=prefecture%20puy&in=commune:63113&open_at={at}");
    let (_, page) = f.get(&uri("2026-07-13T10:00")).await;
    assert_eq!(page["items"][0]["name"], "Préfecture du Puy-de-Dôme");
    assert_eq!(page["items"][0]["open_now"], true);
    let (_, page) = f.get(&uri("2026-07-14T10:00")).await;
    assert_eq!(page["total"], 0, "closed on 14 July");
    let (_, page) = f
        .get("/api/v1/services?q=prefecture%20puy&in=commune:63113&wheelchair=yes")
        .await;
    assert_eq!(page["total"], 0);
    let (_, page) = f.get("/api/v1/services?q=jules&wheelchair=yes").await;
    assert_eq!(page["total"], 1);
}

#[tokio::test]
async fn bad_parameters_are_named() {
    let f = fixture().await;
    let (status, problem) = f.get("/api/v1/services?near=abc&radius=-3&in=pays:fr&typology=boulangerie&limit=500&open_at=demain&cursor=zz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["code"], "invalid_parameter");
    let fields: HashSet<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for field in [
        "near", "radius", "in", "typology", "limit", "open_at", "cursor",
    ] {
        assert!(fields.contains(field), "{field} not named: {problem}");
    }
}

#[tokio::test]
async fn the_index_follows_imports() {
    let f = fixture().await;
    let (_, before) = f
        .get("/api/v1/services?typology=piscine&in=commune:15014")
        .await;
    let csv = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description\n\
               n1,piscine,Piscine d'Aurillac,,,,15014,2.4440,44.9260,,,,,,\n";
    import::import(
        &f.state.store,
        &f.state.reference,
        Input::Bytes {
            name: "n.csv".into(),
            bytes: csv.as_bytes().to_vec(),
        },
        ImportOptions {
            source: Some("Ville d'Aurillac".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(f.state.refresh_search().await.unwrap());
    let (_, after) = f
        .get("/api/v1/services?typology=piscine&in=commune:15014")
        .await;
    assert_eq!(
        after["total"].as_u64().unwrap(),
        before["total"].as_u64().unwrap() + 1
    );
    assert!(
        !f.state.refresh_search().await.unwrap(),
        "nothing to do when the data did not change"
    );
}

#[tokio::test]
async fn overseas_departements_are_searched_like_the_others() {
    let (dir, store, reference) = common::database(false).await;
    // Two town halls in La Réunion, one each in Guadeloupe, Guyane and Mayotte, at their
    // communes' reference points.
    let mut csv = String::from("source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description\n");
    let towns = [
        ("97411", "mairie"),
        ("97415", "mairie"),
        ("97120", "mairie"),
        ("97302", "mairie"),
        ("97611", "pharmacie"),
    ];
    for (code, typology) in towns {
        let commune = reference
            .locator
            .commune(&proximites::territory::InseeCode::parse(code).unwrap())
            .unwrap();
        csv.push_str(&format!(
            "{code},{typology},{} de {},,,,{code},{:.6},{:.6},,,,,,\n",
            if typology == "mairie" {
                "Mairie"
            } else {
                "Pharmacie"
            },
            commune.name,
            commune.centroid.lon,
            commune.centroid.lat
        ));
    }
    let report = import::import(
        &store,
        &reference,
        Input::Bytes {
            name: "outre-mer.csv".into(),
            bytes: csv.into_bytes(),
        },
        ImportOptions::default(),
    )
    .await
    .unwrap();
    assert!(report.committed && report.created == 5, "{report:?}");
    let f = Fixture::serve(dir, store, reference).await;
    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["commune"]["insee_code"].as_str().unwrap().to_owned())
            .collect()
    };

    // Nearest first from Saint-Denis de La Réunion: its own town hall, then Saint-Paul's.
    let (status, page) = f
        .get("/api/v1/services?near=55.45,-20.88&typology=mairie&limit=2")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(names(&page), ["97411", "97415"]);
    let rows = f.rows().await;
    let saint_paul = rows
        .iter()
        .find(|r| page["items"][1]["id"] == r.0.as_str())
        .unwrap();
    let expected = LonLat::new(55.45, -20.88).distance_m(LonLat::new(saint_paul.2, saint_paul.3));
    assert!((page["items"][1]["distance_m"].as_f64().unwrap() - expected).abs() < 0.1);

    let (_, page) = f.get("/api/v1/services?in=departement:974").await;
    assert_eq!(page["total"], 2);
    let (_, page) = f.get("/api/v1/services?in=region:01").await;
    assert_eq!(names(&page), ["97120"], "Guadeloupe is région 01");
    let (_, page) = f.get("/api/v1/services?q=mairie&in=departement:973").await;
    assert_eq!(names(&page), ["97302"]);
    let (_, page) = f
        .get("/api/v1/services?q=pharmacie&near=45.23,-12.78&radius=20000")
        .await;
    assert_eq!(names(&page), ["97611"], "words and radius in Mayotte");
    let (_, page) = f
        .get("/api/v1/services?near=45.23,-12.78&radius=20000")
        .await;
    assert_eq!(page["total"], 1);
}
