//! The GIS layers with real clients: GDAL's `ogrinfo`/`ogr2ogr` (Debian gdal-bin) against the
//! server on a loopback port, the downloads opened by GDAL (and GeoPackages checked by GDAL's
//! validator), coordinates checked against PROJ's `cs2cs` (proj-bin), and the OGC API's
//! answers to good and bad requests over HTTP.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use common::Fixture;
use proximites::export::crs::Crs;
use proximites::export::FIELDS;
use serde_json::Value;

/// The demo served on a loopback port: (fixture, base URL).
async fn served() -> (Fixture, String) {
    let (dir, store, reference) = common::database(true).await;
    let fixture = Fixture::serve(dir, store, reference).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = fixture.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (fixture, format!("http://{address}"))
}

async fn published(fixture: &Fixture, condition: &str) -> u64 {
    let (n,): (i64,) = proximites::on_engine!(&fixture.state.store, |db| sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM services WHERE status = 'published' {condition}"
    ))
    .fetch_one(db)
    .await)
    .unwrap();
    u64::try_from(n).unwrap()
}

/// Runs a command off the runtime (it calls back into the server): its stdout; panics with its
/// stderr when it fails.
async fn run(program: &str, args: Vec<String>) -> String {
    let shown = format!("{program} {}", args.join(" "));
    let output = tokio::task::spawn_blocking({
        let program = program.to_owned();
        move || Command::new(program).args(args).output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{shown}: {e} (paquets Debian gdal-bin et proj-bin requis)"));
    assert!(
        output.status.success(),
        "{shown}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn feature_count(ogrinfo: &str) -> u64 {
    ogrinfo
        .lines()
        .find_map(|l| l.strip_prefix("Feature Count: "))
        .unwrap_or_else(|| panic!("no feature count in {ogrinfo}"))
        .trim()
        .parse()
        .unwrap()
}

/// `id → (lon, lat)` of every published entry, from the database.
async fn positions(fixture: &Fixture) -> HashMap<String, (f64, f64)> {
    let rows: Vec<(String, f64, f64)> =
        proximites::on_engine!(&fixture.state.store, |db| sqlx::query_as(
            "SELECT id, lon, lat FROM services WHERE status = 'published'"
        )
        .fetch_all(db)
        .await)
        .unwrap();
    rows.into_iter()
        .map(|(id, lon, lat)| (id, (lon, lat)))
        .collect()
}

/// PROJ's positions of WGS84 points in `epsg`, through `cs2cs` (EPSG:4326 takes latitude first).
async fn cs2cs(epsg: u32, points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let input: String = points
        .iter()
        .map(|(lon, lat)| format!("{lat:.9} {lon:.9}\n"))
        .collect();
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("cs2cs")
            .args(["-f", "%.4f", "EPSG:4326", &format!("EPSG:{epsg}")])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cs2cs (paquet Debian proj-bin)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut parts = line.split_whitespace().map(|v| v.parse::<f64>().unwrap());
            (parts.next().unwrap(), parts.next().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reprojection_matches_cs2cs_to_the_centimetre() {
    let cases: [(Crs, &[(f64, f64)]); 5] = [
        (
            Crs::Lambert93,
            &[
                (3.0863, 45.7797),
                (-4.4861, 48.3904),
                (7.7521, 48.5734),
                (9.45, 42.7),
                (2.3522, 48.8566),
                (-1.7, 43.4),
            ],
        ),
        (
            Crs::Antilles,
            &[
                (-61.5331, 16.2411),
                (-61.0742, 14.6161),
                (-63.0501, 18.0708),
            ],
        ),
        (
            Crs::Guyane,
            &[(-52.3265, 4.9372), (-54.03, 5.5), (-51.7, 3.9)],
        ),
        (Crs::Reunion, &[(55.4481, -20.8789), (55.7, -21.3)]),
        (Crs::Mayotte, &[(45.2279, -12.7806), (45.1, -12.98)]),
    ];
    for (crs, points) in cases {
        let expected = cs2cs(crs.epsg(), points).await;
        assert_eq!(expected.len(), points.len());
        for (&(lon, lat), (ex, ey)) in points.iter().zip(expected) {
            let (x, y) = crs.project(lon, lat).unwrap();
            assert!(
                (x - ex).abs() < 0.01 && (y - ey).abs() < 0.01,
                "{crs:?} ({lon}, {lat}): ours ({x:.4}, {y:.4}), PROJ ({ex:.4}, {ey:.4})"
            );
            let (back_lon, back_lat) = crs.unproject(x, y).unwrap();
            assert!((back_lon - lon).abs() < 1e-8 && (back_lat - lat).abs() < 1e-8);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gdal_lists_the_collections_and_reads_every_feature() {
    let (fixture, base) = served().await;
    let total = published(&fixture, "").await;
    assert!(total > 1_000);
    let endpoint = format!("OAPIF:{base}/ogc");

    let layers = run("ogrinfo", strings(&["-ro", "-q", &endpoint])).await;
    assert!(layers.contains("services"), "{layers}");
    for theme in &fixture.state.reference.taxonomy.themes {
        assert!(
            layers.contains(&theme.code),
            "{} missing: {layers}",
            theme.code
        );
    }
    let summary = run("ogrinfo", strings(&["-ro", "-so", &endpoint, "services"])).await;
    assert_eq!(feature_count(&summary), total, "numberMatched");
    // The fields come from the collection's schema (`describedBy`), typed.
    for field in &proximites::export::FIELDS[1..] {
        let kind = if *field == "updated_at" {
            "DateTime"
        } else {
            "String"
        };
        assert!(
            summary.contains(&format!("{field}: {kind}")),
            "{field}: {kind} missing: {summary}"
        );
    }

    // Every feature, read to the end in pages of 500, then counted in the copy GDAL wrote.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.gpkg");
    run(
        "ogr2ogr",
        strings(&[
            "-f",
            "GPKG",
            copy.to_str().unwrap(),
            &endpoint,
            "services",
            "-oo",
            "PAGE_SIZE=500",
        ]),
    )
    .await;
    let copied = run(
        "ogrinfo",
        strings(&["-ro", "-so", copy.to_str().unwrap(), "services"]),
    )
    .await;
    assert_eq!(feature_count(&copied), total);
    let distinct = run(
        "ogrinfo",
        strings(&[
            "-ro",
            "-q",
            copy.to_str().unwrap(),
            "-sql",
            "SELECT COUNT(DISTINCT id) AS n FROM services",
        ]),
    )
    .await;
    assert!(
        distinct.contains(&format!("n (Integer) = {total}")),
        "{distinct}"
    );

    // A CQL2 filter GDAL builds from -where and sends to the server.
    let puy = published(
        &fixture,
        "AND typology_code = 'mairie' AND insee_code IN (SELECT insee_code FROM communes WHERE departement_code = '63')",
    )
    .await;
    assert!(puy > 0);
    let filtered = run(
        "ogrinfo",
        strings(&[
            "-ro",
            "-al",
            "-q",
            &endpoint,
            "services",
            "-oo",
            "PAGE_SIZE=10000",
            "-where",
            "typology = 'mairie' AND departement = '63'",
        ]),
    )
    .await;
    assert_eq!(filtered.matches("OGRFeature(services)").count() as u64, puy);
}

/// QGIS (Debian's python3-qgis, headless) given the endpoint as a technician pastes it: the
/// layer is valid, counts every published entry and reads each once, with the fields of the
/// schema, in pages of the API document's default `limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qgis_loads_the_layer_and_counts_every_feature() {
    let (fixture, base) = served().await;
    let total = published(&fixture, "").await;
    let runtime = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/qgis/read_layer.py");
    let endpoint = format!("{base}/ogc");
    let output = tokio::task::spawn_blocking(move || {
        // Debian's interpreter, which holds python3-qgis (not a python3 earlier in PATH).
        Command::new("/usr/bin/python3")
            .arg(script)
            .args([endpoint.as_str(), "services"])
            .env("QT_QPA_PLATFORM", "offscreen")
            .env("XDG_RUNTIME_DIR", runtime.path())
            .env("HOME", runtime.path())
            .output()
    })
    .await
    .unwrap()
    .expect("/usr/bin/python3 (paquet Debian python3-qgis requis)");
    assert!(
        output.status.success(),
        "QGIS: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("QGIS printed {stdout}: {e}"));
    assert_eq!(seen["valid"], true, "{seen}");
    assert_eq!(seen["feature_count"], total, "{seen}");
    assert_eq!(seen["read"], total, "{seen}");
    assert_eq!(seen["crs"], "EPSG:4326", "{seen}");
    let fields: Vec<&str> = seen["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for field in &FIELDS {
        assert!(
            fields.contains(field),
            "{field} missing from QGIS's fields: {seen}"
        );
    }
    let position = positions(&fixture).await;
    let first = &seen["first"];
    let (lon, lat) = position[first["id"].as_str().unwrap()];
    assert!((first["x"].as_f64().unwrap() - lon).abs() < 1e-6, "{seen}");
    assert!((first["y"].as_f64().unwrap() - lat).abs() < 1e-6, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gdal_reads_every_feature_in_lambert93_as_cs2cs_places_them() {
    let (fixture, base) = served().await;
    let total = published(&fixture, "").await;
    let layer = format!(
        "OAPIF:{base}/ogc/collections/services?crs=http://www.opengis.net/def/crs/EPSG/0/2154"
    );
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("l93.csv");
    run(
        "ogr2ogr",
        strings(&[
            "-f",
            "CSV",
            csv.to_str().unwrap(),
            &layer,
            "-oo",
            "PAGE_SIZE=400",
            "-lco",
            "GEOMETRY=AS_XY",
            "-select",
            "id",
        ]),
    )
    .await;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&csv)
        .unwrap();
    let mut read: Vec<(String, f64, f64)> = Vec::new();
    for record in reader.records() {
        let record = record.unwrap();
        read.push((
            record[2].to_owned(),
            record[0].parse().unwrap(),
            record[1].parse().unwrap(),
        ));
    }
    assert_eq!(read.len() as u64, total);
    let ids: HashSet<&str> = read.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len() as u64, total, "no feature twice");
    let positions = positions(&fixture).await;
    let wgs84: Vec<(f64, f64)> = read.iter().map(|r| positions[&r.0]).collect();
    let expected = cs2cs(2154, &wgs84).await;
    for ((id, x, y), (ex, ey)) in read.iter().zip(expected) {
        assert!(
            (x - ex).abs() <= 0.01 && (y - ey).abs() <= 0.01,
            "{id}: served ({x}, {y}), PROJ ({ex}, {ey})"
        );
    }
}

async fn download(
    base: &str,
    path: &str,
    dir: &Path,
    name: &str,
) -> (reqwest::header::HeaderMap, std::path::PathBuf) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let headers = response.headers().clone();
    let file = dir.join(name);
    std::fs::write(&file, response.bytes().await.unwrap()).unwrap();
    (headers, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_download_opens_in_gdal_with_its_count_fields_and_crs() {
    let (fixture, base) = served().await;
    let total = published(&fixture, "").await;
    let in_63 = published(
        &fixture,
        "AND insee_code IN (SELECT insee_code FROM communes WHERE departement_code = '63')",
    )
    .await;
    assert!(in_63 > 0 && in_63 < total);
    let dir = tempfile::tempdir().unwrap();
    let validator = [
        "/usr/lib/python3/dist-packages/osgeo_utils/samples/validate_gpkg.py",
        "/usr/share/doc/python3-gdal/examples/validate_gpkg.py",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("validate_gpkg.py (paquet Debian python3-gdal)");
    for (query, count, epsg) in [
        ("", total, 4326),
        ("?crs=EPSG:2154", total, 2154),
        (
            "?in=departement:63&crs=http://www.opengis.net/def/crs/EPSG/0/2154",
            in_63,
            2154,
        ),
        ("?in=departement:63", in_63, 4326),
    ] {
        for ext in ["geojson", "gpkg", "fgb", "csv", "scdl.csv"] {
            if ext == "geojson" && epsg != 4326 {
                let response =
                    reqwest::get(format!("{base}/api/v1/export/services.geojson{query}"))
                        .await
                        .unwrap();
                assert_eq!(response.status(), 400, "GeoJSON is WGS84 only");
                continue;
            }
            let name = format!("{}-{epsg}.{ext}", count);
            let (headers, file) = download(
                &base,
                &format!("/api/v1/export/services.{ext}{query}"),
                dir.path(),
                &name,
            )
            .await;
            assert!(headers["link"]
                .to_str()
                .unwrap()
                .contains("rel=\"license\""));
            let path = file.to_str().unwrap().to_owned();
            let mut args = strings(&["-ro", "-so", "-al", &path]);
            if ext.ends_with("csv") {
                let (x, y) = if ext == "csv" {
                    ("lon", "lat")
                } else {
                    ("EQUIP_LONG", "EQUIP_LAT")
                };
                args.extend(strings(&[
                    "-oo",
                    &format!("X_POSSIBLE_NAMES={x}"),
                    "-oo",
                    &format!("Y_POSSIBLE_NAMES={y}"),
                ]));
            }
            let info = run("ogrinfo", args).await;
            assert_eq!(feature_count(&info), count, "{ext}{query}");
            if !ext.ends_with("csv") {
                assert!(
                    info.contains(&format!("ID[\"EPSG\",{epsg}]")),
                    "{ext}{query}: {info}"
                );
                for field in &FIELDS[1..] {
                    assert!(
                        info.contains(&format!("\n{field}: ")),
                        "{ext}{query}: {field} missing"
                    );
                }
            } else if epsg != 4326 {
                assert!(
                    info.contains("\nx: ") && info.contains("\ny: "),
                    "{ext}{query}"
                );
            }
            if ext == "gpkg" {
                let validated = run("python3", vec![validator.to_owned(), path.clone()]).await;
                assert!(validated.trim().is_empty(), "{validated}");
                assert!(info.contains("Licence Ouverte"), "licence in gpkg_contents");
                // The R-tree written in bulk is one SQLite itself finds consistent, and GDAL's
                // spatial filter through it finds what a scan finds.
                let check = run(
                    "ogrinfo",
                    strings(&[
                        "-ro",
                        "-q",
                        &path,
                        "-sql",
                        "SELECT rtreecheck('rtree_services_geom') AS r",
                    ]),
                )
                .await;
                assert!(check.contains("r (String) = ok"), "{check}");
                if epsg == 4326 {
                    let in_box = published(
                        &fixture,
                        &format!("{} AND lon BETWEEN 3.0 AND 3.2 AND lat BETWEEN 45.7 AND 45.9", if count == total { "" } else { "AND insee_code IN (SELECT insee_code FROM communes WHERE departement_code = '63')" }),
                    )
                    .await;
                    let spat = run(
                        "ogrinfo",
                        strings(&[
                            "-ro", "-so", &path, "services", "-spat", "3.0", "45.7", "3.2", "45.9",
                        ]),
                    )
                    .await;
                    assert_eq!(feature_count(&spat), in_box);
                }
            }
            if ext == "geojson" {
                let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
                assert!(doc["licence"]["name"]
                    .as_str()
                    .unwrap()
                    .contains("Licence Ouverte"));
                assert!(!doc["sources"].as_array().unwrap().is_empty());
            }
        }
    }
    // The Lambert-93 GeoPackage's positions are PROJ's, to the centimetre.
    let (_, file) = download(
        &base,
        "/api/v1/export/services.gpkg?crs=EPSG:2154",
        dir.path(),
        "check.gpkg",
    )
    .await;
    let csv = dir.path().join("check.csv");
    run(
        "ogr2ogr",
        strings(&[
            "-f",
            "CSV",
            csv.to_str().unwrap(),
            file.to_str().unwrap(),
            "-lco",
            "GEOMETRY=AS_XY",
            "-select",
            "id",
        ]),
    )
    .await;
    let positions = positions(&fixture).await;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(&csv)
        .unwrap();
    let rows: Vec<(String, f64, f64)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[2].to_owned(),
                r[0].parse().unwrap(),
                r[1].parse().unwrap(),
            )
        })
        .collect();
    let expected = cs2cs(
        2154,
        &rows.iter().map(|r| positions[&r.0]).collect::<Vec<_>>(),
    )
    .await;
    for ((id, x, y), (ex, ey)) in rows.iter().zip(expected) {
        assert!(
            (x - ex).abs() <= 0.01 && (y - ey).abs() <= 0.01,
            "{id}: ({x}, {y}) vs ({ex}, {ey})"
        );
    }
}

async fn get_json(
    base: &str,
    path: &str,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&body)));
    (status, headers, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ogc_api_answers_as_the_standard_asks() {
    let (fixture, base) = served().await;
    let total = published(&fixture, "").await;

    let (status, _, landing) = get_json(&base, "/ogc").await;
    assert_eq!(status, 200);
    let rels: Vec<&str> = landing["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["rel"].as_str().unwrap())
        .collect();
    for rel in ["service-desc", "service-doc", "conformance", "data"] {
        assert!(rels.contains(&rel), "{rel}");
    }
    let (_, _, conformance) = get_json(&base, "/ogc/conformance").await;
    let classes = conformance["conformsTo"].to_string();
    for class in [
        "conf/core",
        "conf/geojson",
        "conf/html",
        "conf/oas30",
        "ogcapi-features-2/1.0/conf/crs",
        "cql2-text",
        "features-filter",
    ] {
        assert!(classes.contains(class), "{class}");
    }
    let (_, headers, api) = get_json(&base, "/ogc/api").await;
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .contains("openapi"));
    assert_eq!(api["openapi"], "3.0.3");
    assert_eq!(
        api["components"]["parameters"]["limit"]["schema"]["maximum"],
        10_000
    );
    let parameters = api["paths"]["/collections/services/items"]["get"]["parameters"].to_string();
    for name in [
        "limit",
        "typology",
        "commune",
        "departement",
        "epci",
        "filter",
        "crs",
    ] {
        assert!(
            parameters.contains(&format!("#/components/parameters/{name}")),
            "{name}"
        );
    }
    let (_, _, main_doc) = get_json(&base, "/api/v1/openapi.json").await;
    for path in [
        "/ogc",
        "/ogc/conformance",
        "/ogc/api",
        "/ogc/collections",
        "/ogc/collections/{collection}",
        "/ogc/collections/{collection}/items",
        "/ogc/collections/{collection}/items/{feature}",
        "/ogc/collections/{collection}/queryables",
        "/ogc/collections/{collection}/schema",
        "/donnees-sig",
        "/api/v1/export/{file}",
    ] {
        assert!(
            main_doc["paths"][path].is_object(),
            "{path} missing from /api/v1/openapi.json"
        );
    }
    let (_, _, collections) = get_json(&base, "/ogc/collections").await;
    let services = &collections["collections"][0];
    assert_eq!(services["id"], "services");
    assert_eq!(services["itemType"], "feature");
    assert_eq!(services["storageCrs"], Crs::Crs84.uri());
    assert!(services["crs"].to_string().contains("EPSG/0/2154"));
    assert_eq!(
        services["extent"]["spatial"]["bbox"][0]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // Pages by cursor, to the end: each feature once, the count exact on every page.
    let mut seen = HashSet::new();
    let mut url = format!("{base}/ogc/collections/services/items?limit=300");
    let mut pages = 0;
    loop {
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-crs"],
            format!("<{}>", Crs::Crs84.uri())
        );
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let link_header = response
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_owned());
        let page: Value = response.json().await.unwrap();
        assert_eq!(page["numberMatched"], total);
        assert!(page["timeStamp"].is_string());
        let features = page["features"].as_array().unwrap();
        assert_eq!(page["numberReturned"], features.len());
        for feature in features {
            assert!(seen.insert(feature["id"].as_str().unwrap().to_owned()));
        }
        pages += 1;
        let next = page["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == "next");
        match next {
            Some(next) => {
                let href = next["href"].as_str().unwrap().to_owned();
                assert!(link_header.unwrap().contains(&href));
                url = href;
            }
            None => {
                assert!(link_header.is_none());
                break;
            }
        }
    }
    assert_eq!(seen.len() as u64, total);
    assert_eq!(pages, total.div_ceil(300));

    // A limit past the maximum is clamped, not refused.
    let (status, _, page) = get_json(&base, "/ogc/collections/services/items?limit=50000").await;
    assert_eq!(status, 200);
    assert_eq!(page["numberReturned"], total.min(10_000));

    // Filters by property, by box (in Lambert-93 too) and by CQL2 agree with the database.
    let in_63 = published(
        &fixture,
        "AND insee_code IN (SELECT insee_code FROM communes WHERE departement_code = '63')",
    )
    .await;
    let in_box = published(
        &fixture,
        "AND lon BETWEEN 3.0 AND 3.2 AND lat BETWEEN 45.7 AND 45.9",
    )
    .await;
    for (query, expected) in [
        ("departement=63", in_63),
        ("filter=departement%3D%2763%27&filter-lang=cql2-text", in_63),
        ("bbox=3.0,45.7,3.2,45.9", in_box),
        ("bbox=45.7,3.0,45.9,3.2&bbox-crs=EPSG:4326", in_box),
        (
            "filter=S_INTERSECTS(geometry,BBOX(3.0,45.7,3.2,45.9))",
            in_box,
        ),
    ] {
        let (_, _, page) = get_json(
            &base,
            &format!("/ogc/collections/services/items?limit=1&{query}"),
        )
        .await;
        assert_eq!(page["numberMatched"], expected, "{query}");
    }
    let (_, headers, page) = get_json(
        &base,
        "/ogc/collections/services/items?limit=3&crs=EPSG:4326",
    )
    .await;
    assert_eq!(
        headers["content-crs"],
        "<http://www.opengis.net/def/crs/EPSG/0/4326>"
    );
    let first = &page["features"][0];
    let (lon, lat) = positions(&fixture).await[first["id"].as_str().unwrap()];
    assert!(
        (first["geometry"]["coordinates"][0].as_f64().unwrap() - lat).abs() < 1e-6,
        "latitude first"
    );
    assert!((first["geometry"]["coordinates"][1].as_f64().unwrap() - lon).abs() < 1e-6);

    // A theme's collection holds its theme's entries only.
    let theme = &fixture.state.reference.taxonomy.themes[0].code;
    let of_theme = published(
        &fixture,
        &format!("AND typology_code IN (SELECT code FROM typologies WHERE theme_code = '{theme}')"),
    )
    .await;
    let (status, _, page) =
        get_json(&base, &format!("/ogc/collections/{theme}/items?limit=1")).await;
    assert_eq!(status, 200);
    assert_eq!(page["numberMatched"], of_theme);

    // One feature, and its queryables.
    let id = first["id"].as_str().unwrap();
    let (status, _, feature) =
        get_json(&base, &format!("/ogc/collections/services/items/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(feature["id"], id);
    let (status, _, _) = get_json(&base, "/ogc/collections/services/items/0000000000000000").await;
    assert_eq!(status, 404);
    let (_, _, queryables) = get_json(&base, "/ogc/collections/services/queryables").await;
    assert!(queryables["properties"]["typology"]["enum"].is_array());
    assert_eq!(
        queryables["properties"]["geometry"]["x-ogc-role"],
        "primary-geometry"
    );
    // The features' schema names every property, the ones pages leave out when empty too.
    let (status, _, schema) = get_json(&base, "/ogc/collections/services/schema").await;
    assert_eq!(status, 200);
    let properties = schema["properties"]["properties"]["properties"]
        .as_object()
        .unwrap();
    let named: Vec<&str> = properties.keys().map(String::as_str).collect();
    assert_eq!(named.len(), FIELDS.len() - 1, "{named:?}");
    for field in &FIELDS[1..] {
        assert!(properties.contains_key(*field), "{field} not in the schema");
    }
    assert_eq!(properties["updated_at"]["format"], "date-time");
    let (_, _, collection) = get_json(&base, "/ogc/collections/services").await;
    let described = collection["links"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["rel"] == "describedBy" && l["href"].as_str().unwrap().ends_with("/schema"));
    assert!(described, "{collection}");
    // Every property is on every feature, null when empty: QGIS 3.22 ignores the schema and
    // learns the fields from a sample page.
    assert_eq!(
        first["properties"].as_object().unwrap().len(),
        FIELDS.len() - 1,
        "{first}"
    );

    // Bad input is a 400 naming the parameter, never a 500.
    for bad in [
        "limit=0", "limit=abc", "bbox=1,2,3", "bbox=4,45,3,46", "crs=EPSG:3857", "unknown=1",
        "typology=nope", "commune=99999", "departement=999", "epci=1", "cursor=../x",
        "datetime=hier", "filter=typology%3D", "filter=nope%3D%27x%27", "filter-lang=cql2-json&filter=x",
        "filter=S_INTERSECTS(geometry,POLYGON((0%200,1%201,0%200)))", "f=xml",
        "filter=((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((typology%3D%27x%27",
    ] {
        let (status, headers, problem) = get_json(&base, &format!("/ogc/collections/services/items?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {problem}");
        assert!(headers["content-type"].to_str().unwrap().contains("problem+json"));
        assert!(!problem["errors"][0]["field"].as_str().unwrap().is_empty(), "{bad}");
    }
    let (status, _, _) = get_json(&base, "/ogc/collections/nope/items").await;
    assert_eq!(status, 404);

    // JSON for */*, HTML when asked; ETag and If-None-Match; gzip when accepted.
    let client = reqwest::Client::new();
    let items = format!("{base}/ogc/collections/services/items?limit=5");
    let response = client
        .get(&items)
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/geo+json");
    let etag = response.headers()["etag"].clone();
    let response = client
        .get(&items)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    let response = client
        .get(&items)
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_ne!(response.headers()["etag"], etag);
    let html = response.text().await.unwrap();
    assert!(html.contains("<html lang=\"fr\">") && html.contains("<main") && html.contains("<h1>"));
    let response = client
        .get(&items)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let response = client
        .get(format!("{base}/donnees-sig"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(
        page.contains(&format!("{base}/ogc"))
            && page.contains("ogr2ogr")
            && page.contains("QGIS")
            && page.contains("ArcGIS")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_export_command_writes_a_whole_file_or_none() {
    let (dir, store, reference) = common::database(true).await;
    let (n,): (i64,) = proximites::on_engine!(&store, |db| sqlx::query_as(
        "SELECT COUNT(*) FROM services WHERE status = 'published' AND insee_code IN (SELECT insee_code FROM communes WHERE departement_code = '63')",
    )
    .fetch_one(db).await)
    .unwrap();
    drop(reference);
    store.close().await;
    let out = dir.path().join("puy.gpkg");
    let bin = env!("CARGO_BIN_EXE_proximites");
    let url = common::url_of(dir.path());
    let status = Command::new(bin)
        .args([
            "--database-url",
            &url,
            "export",
            "--format",
            "gpkg",
            "--in",
            "departement:63",
            "--crs",
            "EPSG:2154",
            "-o",
            out.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let info = run(
        "ogrinfo",
        strings(&["-ro", "-so", out.to_str().unwrap(), "services"]),
    )
    .await;
    assert_eq!(feature_count(&info), u64::try_from(n).unwrap());
    assert!(info.contains("ID[\"EPSG\",2154]"));

    let csv = dir.path().join("all.csv");
    let status = Command::new(bin)
        .args([
            "--database-url",
            &url,
            "export",
            "--format",
            "csv",
            "-o",
            csv.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let sidecar = std::fs::read_to_string(dir.path().join("all.csv.licence.txt")).unwrap();
    assert!(sidecar.contains("Licence Ouverte"));

    let bad = dir.path().join("bad.gpkg");
    let output = Command::new(bin)
        .args([
            "--database-url",
            &url,
            "export",
            "--format",
            "gpkg",
            "--typology",
            "nope",
            "-o",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("nope"));
    assert!(!bad.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".proximites-export-")
        })
        .collect();
    assert!(leftovers.is_empty());
}

/// A selection over more communes than SQLite binds in one statement (34,912 here; the limit
/// is 32,766) counts and lists the same entries as SQL does, its communes tested row by row;
/// a short list is still bound (issue 17: an IN list past the variable limit answered 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selections_of_every_commune_are_not_bound_in_sql() {
    use proximites::export::{store, Selection};
    let (_dir, store, reference) = common::database(true).await;
    let everywhere = Selection::default().communes(&reference, |_| true);
    assert!(everywhere.communes.as_ref().unwrap().len() > 32_766);
    assert!(everywhere.needs_row_test());
    let puy = Selection::default().communes(&reference, |c| c.departement_code == "63");
    assert!(!puy.needs_row_test(), "464 communes are bound");
    for (selection, sql) in [
        (
            everywhere,
            "SELECT COUNT(*) FROM services WHERE status = 'published'",
        ),
        (
            puy,
            "SELECT COUNT(*) FROM services WHERE status = 'published' AND insee_code LIKE '63%'",
        ),
    ] {
        let (expected,): (i64,) =
            proximites::on_engine!(&store, |db| sqlx::query_as(sql).fetch_one(db).await).unwrap();
        let reference = reference.clone();
        let (counted, listed) = store::with_connection(&store, move |handle| {
            let lookup = store::lookup(handle, &reference)?;
            let counted = store::count(handle, &lookup, &selection)?;
            let mut listed = 0u64;
            store::scan(handle, &lookup, &selection, store::Order::Storage, |_| {
                listed += 1;
                Ok(true)
            })?;
            Ok((counted, listed))
        })
        .await
        .unwrap();
        assert_eq!((counted, listed), (expected as u64, expected as u64));
    }
}

/// The `next` link of an items page, if any.
fn next_link(page: &Value) -> Option<String> {
    page["links"]
        .as_array()?
        .iter()
        .find(|l| l["rel"] == "next")
        .and_then(|l| l["href"].as_str())
        .map(str::to_owned)
}

/// Every page of a sorted collection, following `next` links: (features' ids, their values of
/// `property`).
async fn sorted_pages(base: &str, query: &str, property: &str) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let mut next = Some(format!("{base}/ogc/collections/services/items?{query}"));
    while let Some(url) = next.take() {
        let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        for feature in page["features"].as_array().unwrap() {
            seen.push((
                feature["id"].as_str().unwrap().to_owned(),
                feature["properties"][property]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
        next = next_link(&page);
    }
    seen
}

/// `sortby` (OGC API – Features part 8): each property, either way, paged to the end with
/// exact, stable pages (every entry once, in order, ties broken by id); a write between two
/// pages moves nothing already seen; wrong keys and a cursor of another sort are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sorted_pages_are_exact_to_the_end() {
    let (fixture, base) = served().await;
    let total = published(&fixture, "AND insee_code LIKE '63%'").await as usize;
    for (sortby, property, descending) in [
        ("name", "name", false),
        ("-name", "name", true),
        ("typology", "typology", false),
        ("-updated_at", "updated_at", true),
        ("commune,-name", "commune", false),
    ] {
        let seen = sorted_pages(
            &base,
            &format!("departement=63&limit=97&sortby={sortby}"),
            property,
        )
        .await;
        assert_eq!(seen.len(), total, "{sortby}");
        let ids: HashSet<&String> = seen.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), total, "{sortby}: an entry seen twice");
        for pair in seen.windows(2) {
            let (a, b) = (&pair[0].1, &pair[1].1);
            if descending {
                assert!(a >= b, "{sortby}: {a} before {b}");
            } else {
                assert!(a <= b, "{sortby}: {a} before {b}");
            }
        }
    }
    // A write between pages: the next page starts exactly after the last one seen.
    let url = format!("{base}/ogc/collections/services/items?departement=63&limit=50&sortby=name");
    let first: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let next = next_link(&first).unwrap();
    let last_name = first["features"][49]["properties"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    proximites::on_engine!(&fixture.state.store, |db| sqlx::query("UPDATE services SET name = 'AAAA déplacée' WHERE id = (SELECT id FROM services WHERE insee_code LIKE '63%' AND status = 'published' ORDER BY name DESC LIMIT 1)")
        .execute(db).await.map(|r| r.rows_affected()))
        .unwrap();
    let second: Value = reqwest::get(&next).await.unwrap().json().await.unwrap();
    let following = second["features"][0]["properties"]["name"]
        .as_str()
        .unwrap();
    assert!(
        following >= last_name.as_str(),
        "{following} after {last_name}"
    );
    // Refusals name the parameter.
    for (query, field) in [
        ("sortby=description", "sortby"),
        ("sortby=name,-name", "sortby"),
        ("sortby=name&cursor=zz", "cursor"),
    ] {
        let (status, _, problem) =
            get_json(&base, &format!("/ogc/collections/services/items?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(problem.to_string().contains(field), "{query}: {problem}");
    }
    // A cursor of pages by id is not one of sorted pages.
    let by_id: Value = reqwest::get(format!("{base}/ogc/collections/services/items?limit=5"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_cursor = next_link(&by_id)
        .unwrap()
        .split("cursor=")
        .nth(1)
        .unwrap()
        .to_owned();
    let (status, _, _) = get_json(
        &base,
        &format!("/ogc/collections/services/items?sortby=name&cursor={id_cursor}"),
    )
    .await;
    assert_eq!(status, 400);
}

/// OWSLib (PyPI), as a GIS script uses it, pages the collection sorted by name both ways to its
/// end: every published entry once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owslib_pages_a_sorted_collection_to_its_end() {
    let (fixture, base) = served().await;
    let total = published(&fixture, "").await as usize;
    let python = tokio::task::spawn_blocking(|| {
        common::pypi_environment("owslib", "OWSLib==0.35.0").join("bin/python")
    })
    .await
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/owslib/page_sorted.py");
    for order in ["asc", "desc"] {
        let out = run(
            python.to_str().unwrap(),
            strings(&[script, &format!("{base}/ogc"), "name", order, "400"]),
        )
        .await;
        let mut lines = out.lines();
        assert_eq!(
            lines.next().unwrap().parse::<usize>().unwrap(),
            total,
            "{order}"
        );
        let rows: Vec<(&str, &str)> = lines.map(|l| l.split_once('\t').unwrap()).collect();
        let ids: HashSet<&str> = rows.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), total, "{order}: an entry seen twice");
        for pair in rows.windows(2) {
            let (a, b) = (pair[0].1, pair[1].1);
            assert!(
                if order == "asc" { a <= b } else { a >= b },
                "{order}: {a} then {b}"
            );
        }
    }
}

/// The DCAT catalogue, read as JSON-LD by pyld (PyPI) with DCAT-AP's mandatory properties
/// checked on the expanded terms; every distribution it lists downloads, every service answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dcat_catalogue_lists_every_download_and_api() {
    let (_fixture, base) = served().await;
    let answer = reqwest::get(format!("{base}/catalogue")).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/ld+json");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("catalogue.jsonld");
    std::fs::write(&file, answer.bytes().await.unwrap()).unwrap();
    let python = tokio::task::spawn_blocking(|| {
        common::pypi_environment("pyld", "PyLD==2.0.4").join("bin/python")
    })
    .await
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dcat/check_catalogue.py");
    let out = run(
        python.to_str().unwrap(),
        strings(&[script, file.to_str().unwrap()]),
    )
    .await;
    let lines: Vec<(&str, &str)> = out.lines().map(|l| l.split_once('\t').unwrap()).collect();
    assert_eq!(
        lines.iter().filter(|(k, _)| *k == "distribution").count(),
        9,
        "{out}"
    );
    assert_eq!(
        lines.iter().filter(|(k, _)| *k == "service").count(),
        3,
        "{out}"
    );
    for (_, url) in lines {
        assert!(url.starts_with(&base), "{url}");
        let status = reqwest::get(url).await.unwrap().status();
        assert_eq!(status, 200, "{url}");
    }
    let page = reqwest::get(format!("{base}/donnees-sig"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("href=\"/catalogue\""));
}

/// The python of the PyPI package `data-inclusion-schema` (installed on first use), and the
/// script that reads files with its models.
async fn data_inclusion_reader() -> (String, &'static str) {
    let python = tokio::task::spawn_blocking(|| {
        common::pypi_environment("data-inclusion", "data-inclusion-schema==1.0.10")
            .join("bin/python")
    })
    .await
    .unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data_inclusion/validate.py"
    );
    (python.to_str().unwrap().to_owned(), script)
}

/// The directory as data·inclusion structures and services, in JSON and CSV: every record
/// accepted by the schema's own pydantic models (`data-inclusion-schema` from PyPI), every
/// service attached to a structure written, entries left out counted; the crosswalk's
/// référentiels are the package's own; a selection narrows both tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_inclusion_files_pass_the_schemas_own_models() {
    let (dir, store, reference) = common::database(true).await;
    // Beside the demo's town halls, entries of every typology.
    common::import_generated(&store, &reference, &["03", "63"], 2_000, 18).await;
    let fixture = Fixture::serve(dir, store, reference).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = fixture.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let total = published(&fixture, "").await;
    let (python, script) = data_inclusion_reader().await;
    let crosswalk = concat!(env!("CARGO_MANIFEST_DIR"), "/taxonomy/data-inclusion.toml");
    let out = run(&python, strings(&[script, "referentiels", crosswalk])).await;
    assert_eq!(out.trim(), "ok");

    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut structure_ids = std::collections::HashSet::new();
    for file in [
        "structures.json",
        "services.json",
        "structures.csv",
        "services.csv",
    ] {
        // Twice: built, then served from the whole-directory cache with the same counts.
        let mut bodies = Vec::new();
        let mut counts = Vec::new();
        for _ in 0..2 {
            let answer = client
                .get(format!("{base}/api/v1/export/data-inclusion/{file}"))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200, "{file}");
            let header =
                |name: &str| -> u64 { answer.headers()[name].to_str().unwrap().parse().unwrap() };
            counts.push((header("x-written"), header("x-left-out")));
            bodies.push(answer.bytes().await.unwrap());
        }
        assert_eq!(counts[0], counts[1], "{file}");
        assert_eq!(bodies[0], bodies[1], "{file}");
        let (written, left_out) = counts[0];
        let body = &bodies[0];
        let table = file.split('.').next().unwrap();
        if table == "structures" {
            assert_eq!(written + left_out, total, "{file}");
            assert!(written > 1_000, "{file}: {written}");
        } else {
            assert!(written > 100, "{file}: {written}");
            assert!(written + left_out < total, "{file}");
        }
        let path = dir.path().join(file);
        std::fs::write(&path, body).unwrap();
        let out = run(&python, strings(&[script, table, path.to_str().unwrap()])).await;
        assert_eq!(out.trim().parse::<u64>().unwrap(), written, "{file}: {out}");
        if file == "structures.json" {
            let records: Vec<Value> = serde_json::from_slice(body).unwrap();
            for record in &records {
                let id = record["id"].as_str().unwrap();
                let own = id.strip_prefix("proximites--").unwrap();
                assert_eq!(
                    record["lien_source"].as_str().unwrap(),
                    format!("{base}/services/{own}")
                );
                structure_ids.insert(id.to_owned());
            }
            assert!(records
                .iter()
                .any(|r| r["reseaux_porteurs"] == serde_json::json!(["communes"])));
        }
        if file == "services.json" {
            let records: Vec<Value> = serde_json::from_slice(body).unwrap();
            for record in &records {
                let structure = record["structure_id"].as_str().unwrap();
                assert!(structure_ids.contains(structure), "{structure}");
                assert!(!record["thematiques"].as_array().unwrap().is_empty());
            }
            // A town hall's service is open to its commune's people.
            let town_hall = records
                .iter()
                .find(|r| {
                    r["thematiques"][0]
                        == "difficultes-administratives-ou-juridiques--accompagnement-aux-demarches-administratives"
                        && r["zone_eligibilite"].is_array()
                })
                .expect("a town hall");
            assert_eq!(town_hall["zone_eligibilite"][0], town_hall["code_insee"]);
        }
    }

    // A selection narrows the tables, and a wrong parameter is named. The services of a
    // typology open to a département's people name its département.
    let (typology,): (String,) = proximites::on_engine!(&fixture.state.store, |db| sqlx::query_as(
        "SELECT typology_code FROM services WHERE status = 'published'
           AND typology_code IN ('caf', 'cpam', 'mdph', 'adil', 'cidf', 'conseil-general')
         GROUP BY 1 ORDER BY COUNT(*) DESC LIMIT 1",
    )
    .fetch_one(db)
    .await)
    .unwrap();
    let answer = client
        .get(format!(
            "{base}/api/v1/export/data-inclusion/services.json?typology={typology}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let records: Vec<Value> = answer.json().await.unwrap();
    let of_typology = published(&fixture, &format!("AND typology_code = '{typology}'")).await;
    assert_eq!(records.len() as u64, of_typology);
    assert!(of_typology > 0);
    assert!(records.iter().all(|r| {
        let zone = r["zone_eligibilite"][0].as_str().unwrap();
        zone.len() == 2 && r["code_insee"].as_str().unwrap().starts_with(zone)
    }));
    let answer = client
        .get(format!(
            "{base}/api/v1/export/data-inclusion/services.json?crs=EPSG:2154"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let problem: Value = answer.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "crs");
    let answer = client
        .get(format!("{base}/api/v1/export/data-inclusion/services.xml"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
}

/// `proximites export --format data-inclusion` writes the four files into a directory, each
/// read by the schema's models, the links starting with `--public-url`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_inclusion_export_command_writes_four_files() {
    let (dir, store, reference) = common::database(true).await;
    drop(reference);
    store.close().await;
    let out = dir.path().join("data-inclusion");
    let bin = env!("CARGO_BIN_EXE_proximites");
    let url = common::url_of(dir.path());
    let output = Command::new(bin)
        .args([
            "--database-url",
            &url,
            "export",
            "--format",
            "data-inclusion",
            "--in",
            "departement:63",
            "--public-url",
            "https://annuaire.example.fr/",
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (python, script) = data_inclusion_reader().await;
    for file in [
        "structures.json",
        "services.json",
        "structures.csv",
        "services.csv",
    ] {
        let path = out.join(file);
        let table = file.split('.').next().unwrap();
        let counted = run(&python, strings(&[script, table, path.to_str().unwrap()])).await;
        assert!(counted.trim().parse::<u64>().unwrap() > 0, "{file}");
    }
    let structures: Vec<Value> =
        serde_json::from_slice(&std::fs::read(out.join("structures.json")).unwrap()).unwrap();
    assert!(structures
        .iter()
        .all(|s| s["code_insee"].as_str().unwrap().starts_with("63")
            && s["lien_source"]
                .as_str()
                .unwrap()
                .starts_with("https://annuaire.example.fr/services/")));
    let output = Command::new(bin)
        .args([
            "--database-url",
            &url,
            "export",
            "--format",
            "data-inclusion",
            "--crs",
            "EPSG:2154",
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--crs"));
}

/// The HSDS 3.0 read API: every answer read with the HSDS JSON schemas (committed from Open
/// Referral's repository, `jsonschema` from PyPI with formats checked); pages cover the
/// directory exactly; filters by taxonomy term, organization, update and words count what SQL
/// counts; ids lead back to their entries; wrong parameters are named.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hsds_answers_pass_the_hsds_schemas() {
    use proximites::hsds::{self, ids};
    let (dir, store, reference) = common::database(true).await;
    common::import_generated(&store, &reference, &["63"], 800, 21).await;
    let fixture = Fixture::serve(dir, store, reference).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = fixture.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let answer = client.get(&url).send().await.unwrap();
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap();
            (status, body)
        }
    };
    let mut checks: Vec<(String, Value)> = Vec::new();
    let total = published(&fixture, "").await;

    let (status, about) = get("/hsds/".into()).await;
    assert_eq!(status, 200);
    assert_eq!(about["version"], "3.0");
    let openapi = reqwest::get(about["openapi_url"].as_str().unwrap())
        .await
        .unwrap();
    let openapi: Value = openapi.json().await.unwrap();
    assert!(openapi["paths"]["/hsds/services/{id}"].is_object());

    // Every page, by id: each service once, the counts exact.
    let mut seen = HashSet::new();
    let mut page = 1;
    loop {
        let (status, body) = get(format!("/hsds/services?per_page=500&page={page}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["total_items"], total);
        assert_eq!(body["page_number"], page);
        assert_eq!(body["first_page"], page == 1);
        for service in body["contents"].as_array().unwrap() {
            assert!(seen.insert(service["id"].as_str().unwrap().to_owned()));
            if page == 1 && seen.len() <= 50 {
                checks.push(("service_list.json".into(), service.clone()));
            }
        }
        if body["last_page"] == true {
            assert_eq!(body["total_pages"], page);
            break;
        }
        page += 1;
    }
    assert_eq!(seen.len() as u64, total);
    let (_, beyond) = get(format!("/hsds/services?per_page=500&page={}", page + 1)).await;
    assert_eq!(beyond["empty"], true);
    assert_eq!(beyond["size"], 0);

    // Fully nested services, read one by one too, their ids leading back to the entries.
    let (_, full) = get("/hsds/services?full=true&per_page=200".into()).await;
    let full = full["contents"].as_array().unwrap().clone();
    assert!(full
        .iter()
        .any(|s| !s["schedules"].as_array().unwrap().is_empty()));
    assert!(full
        .iter()
        .any(|s| !s["phones"].as_array().unwrap().is_empty()));
    for service in &full {
        checks.push(("service.json".into(), service.clone()));
        let location = &service["service_at_locations"][0]["location"];
        assert!(location["latitude"].is_f64(), "{service}");
        assert_eq!(service["organization"]["id"], service["organization_id"]);
        assert!(service["attributes"][0]["taxonomy_term"]["name"].is_string());
    }
    for service in full.iter().take(10) {
        let id = service["id"].as_str().unwrap();
        let (status, one) = get(format!("/hsds/services/{id}")).await;
        assert_eq!(status, 200);
        assert_eq!(&one, service);
        let entry = ids::entry_id(&uuid::Uuid::parse_str(id).unwrap(), ids::Kind::Service).unwrap();
        let (name,): (String,) = proximites::on_engine!(&fixture.state.store, |db| sqlx::query_as(
            "SELECT name FROM services WHERE id = $1"
        )
        .bind(&entry)
        .fetch_one(db)
        .await)
        .unwrap();
        assert_eq!(one["name"], name);
        assert!(one["url"].as_str().unwrap().ends_with(&entry));
    }

    // The taxonomy: themes on top, typologies under them; a term narrows the services.
    let (_, taxonomies) = get("/hsds/taxonomies".into()).await;
    assert_eq!(taxonomies["total_items"], 1);
    let taxonomy = taxonomies["contents"][0].clone();
    let (status, same) = get(format!(
        "/hsds/taxonomies/{}",
        taxonomy["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!((status, &same), (200, &taxonomy));
    checks.push(("taxonomy.json".into(), taxonomy));
    let (_, themes) = get("/hsds/taxonomy_terms?top_only=true".into()).await;
    assert_eq!(themes["total_items"], 5);
    let (_, all_terms) = get("/hsds/taxonomy_terms?per_page=500".into()).await;
    assert_eq!(all_terms["total_items"], 180);
    for term in all_terms["contents"].as_array().unwrap() {
        checks.push(("taxonomy_term.json".into(), term.clone()));
    }
    let theme = hsds::theme_term_id("services-publics");
    let (_, under) = get(format!(
        "/hsds/taxonomy_terms?parent_id={theme}&per_page=500"
    ))
    .await;
    assert_eq!(under["total_items"], 88);
    let mairie = hsds::typology_term_id("mairie");
    let (_, town_halls) = get(format!("/hsds/services?taxonomy_term_id={mairie}")).await;
    assert_eq!(
        town_halls["total_items"],
        published(&fixture, "AND typology_code = 'mairie'").await
    );
    let in_theme = published(
        &fixture,
        "AND typology_code IN (SELECT code FROM typologies WHERE theme_code = 'services-publics')",
    )
    .await;
    let (_, public) = get(format!("/hsds/services?taxonomy_term_id={theme}")).await;
    assert_eq!(public["total_items"], in_theme);
    let (_, foreign) = get(format!(
        "/hsds/services?taxonomy_term_id={}",
        uuid::Uuid::nil()
    ))
    .await;
    assert_eq!(foreign["total_items"], 0);

    // Organizations, and the services of one.
    let (source, count): (String, i64) =
        proximites::on_engine!(&fixture.state.store, |db| sqlx::query_as(
            "SELECT source_id, COUNT(*) FROM services WHERE status = 'published'
         GROUP BY 1 ORDER BY 2 DESC LIMIT 1",
        )
        .fetch_one(db)
        .await)
        .unwrap();
    let organization = ids::of_organisation(&source);
    let (_, organizations) = get("/hsds/organizations".into()).await;
    for item in organizations["contents"].as_array().unwrap() {
        checks.push(("organization_list.json".into(), item.clone()));
    }
    let (status, nested) = get(format!("/hsds/organizations/{organization}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        nested["services"].as_array().unwrap().len() as i64,
        count.min(1_000)
    );
    checks.push(("organization.json".into(), nested));
    let (_, theirs) = get(format!("/hsds/services?organization_id={organization}")).await;
    assert_eq!(theirs["total_items"], count);

    // Words, updates, the minimal shape.
    let (_, found) = get("/hsds/services?search=mairie&per_page=5".into()).await;
    assert!(found["total_items"].as_u64().unwrap() > 5);
    assert_eq!(found["size"], 5);
    let first = found["contents"][0]["name"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(first.contains("mairie"), "{first}");
    let (_, narrowed) = get(format!(
        "/hsds/services?search=mairie&organization_id={organization}&per_page=500"
    ))
    .await;
    assert!(narrowed["contents"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["organization_id"] == serde_json::json!(organization)));
    let (_, later) = get("/hsds/services?modified_after=2200-01-01".into()).await;
    assert_eq!(later["total_items"], 0);
    let (_, since) = get("/hsds/services?modified_after=2000-01-01T00:00:00Z".into()).await;
    assert_eq!(since["total_items"], total);
    let (_, minimal) = get("/hsds/services?minimal=true&per_page=3".into()).await;
    let item = minimal["contents"][0].as_object().unwrap();
    assert_eq!(item.len(), 2);
    assert!(item["modified_date"].is_string());

    // Wrong requests are named, unknown ids are not found.
    let (status, problem) = get("/hsds/services?per_page=0&colour=red".into()).await;
    assert_eq!(status, 400);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["per_page", "colour"]);
    for path in [
        "/hsds/services/not-a-uuid".to_owned(),
        format!("/hsds/services/{}", uuid::Uuid::nil()),
        format!("/hsds/organizations/{}", uuid::Uuid::nil()),
        format!("/hsds/taxonomy_terms/{}", uuid::Uuid::nil()),
    ] {
        let (status, _) = get(path.clone()).await;
        assert_eq!(status, 404, "{path}");
    }

    let checked = checks.len();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&checks).unwrap()).unwrap();
    let python = tokio::task::spawn_blocking(|| {
        common::pypi_environment("jsonschema", "jsonschema[format]==4.23.0").join("bin/python")
    })
    .await
    .unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hsds");
    let out = run(
        python.to_str().unwrap(),
        strings(&[
            &format!("{dir}/validate.py"),
            &format!("{dir}/schema"),
            file.path().to_str().unwrap(),
        ]),
    )
    .await;
    assert_eq!(out.trim().parse::<usize>().unwrap(), checked, "{out}");
}

/// The tile (column, row) of WebMercatorQuad holding a WGS84 point at `zoom`, and its bounds
/// in Web Mercator metres (left, bottom, right, top): written here apart from the server's.
fn web_mercator_tile(lon: f64, lat: f64, zoom: u32) -> ((u32, u32), [f64; 4]) {
    let n = f64::from(1u32 << zoom);
    let lat_rad = lat.to_radians();
    let col = ((lon + 180.0) / 360.0 * n).floor() as u32;
    let row = ((1.0 - (lat_rad.tan() + 1.0 / lat_rad.cos()).ln() / std::f64::consts::PI) / 2.0 * n)
        .floor() as u32;
    let half = 20_037_508.342_789_244;
    let size = 2.0 * half / n;
    let left = -half + f64::from(col) * size;
    let top = half - f64::from(row) * size;
    ((col, row), [left, top - size, left + size, top])
}

/// How many published entries (of `condition`) lie in a tile's bounds, read from SQL.
async fn entries_in_tile(fixture: &Fixture, bounds: [f64; 4], condition: &str) -> u64 {
    let rows: Vec<(f64, f64)> = proximites::on_engine!(&fixture.state.store, |db| sqlx::query_as(
        &format!("SELECT lon, lat FROM services WHERE status = 'published' {condition}")
    )
    .fetch_all(db)
    .await)
    .unwrap();
    let radius = 6_378_137.0_f64;
    rows.into_iter()
        .filter(|(lon, lat)| {
            let x = radius * lon.to_radians();
            let y = radius
                * (std::f64::consts::FRAC_PI_4 + lat.to_radians() / 2.0)
                    .tan()
                    .ln();
            x >= bounds[0] && x < bounds[2] && y > bounds[1] && y <= bounds[3]
        })
        .count() as u64
}

/// Vector tiles (OGC API – Tiles, MVT): GDAL's MVT driver reads a tile of a town and counts
/// every entry SQL places in it, filters narrow it, a tile of a whole region carries clusters
/// whose counts add up to its entries, the tiling scheme and tilesets are described, and QGIS
/// renders the tile layer from its URL template.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vector_tiles_are_read_by_gdal_and_qgis() {
    let (dir, store, reference) = common::database(true).await;
    common::import_generated(&store, &reference, &["63"], 2_500, 31).await;
    let fixture = Fixture::serve(dir, store, reference).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = fixture.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let files = tempfile::tempdir().unwrap();
    let tiles = format!("{base}/ogc/collections/services/tiles/WebMercatorQuad");
    let fetch = |zoom: u32, (col, row): (u32, u32), query: &str| {
        let url = format!("{tiles}/{zoom}/{row}/{col}{query}");
        let path = files
            .path()
            .join(format!("{zoom}-{row}-{col}-{}.mvt", query.len()));
        async move {
            let answer = reqwest::get(&url).await.unwrap();
            assert_eq!(answer.status(), 200, "{url}");
            assert_eq!(
                answer.headers()["content-type"],
                "application/vnd.mapbox-vector-tile"
            );
            std::fs::write(&path, answer.bytes().await.unwrap()).unwrap();
            path
        }
    };
    let open = |zoom: u32, (col, row): (u32, u32)| {
        vec![
            "-oo".to_owned(),
            format!("Z={zoom}"),
            "-oo".to_owned(),
            format!("X={col}"),
            "-oo".to_owned(),
            format!("Y={row}"),
        ]
    };
    // Clermont-Ferrand at zoom 12: each entry, with its name.
    let (tile, bounds) = web_mercator_tile(3.087, 45.777, 12);
    let expected = entries_in_tile(&fixture, bounds, "").await;
    assert!(expected > 3, "{expected}");
    let path = fetch(12, tile, "").await;
    let mut args = strings(&["-ro", "-so"]);
    args.extend(open(12, tile));
    args.extend(strings(&[path.to_str().unwrap(), "services"]));
    let info = run("ogrinfo", args).await;
    assert_eq!(feature_count(&info), expected, "{info}");
    assert!(info.contains("name: String"), "{info}");
    // Narrowed to town halls.
    let town_halls = entries_in_tile(&fixture, bounds, "AND typology_code = 'mairie'").await;
    assert!(town_halls > 0 && town_halls < expected);
    let path = fetch(12, tile, "?typology=mairie").await;
    let mut args = strings(&["-ro", "-so"]);
    args.extend(open(12, tile));
    args.extend(strings(&[path.to_str().unwrap(), "services"]));
    assert_eq!(feature_count(&run("ogrinfo", args).await), town_halls);

    // Auvergne at zoom 6: more than a map shows one by one, so clusters that add up.
    let (region, region_bounds) = web_mercator_tile(3.087, 45.777, 6);
    let in_region = entries_in_tile(&fixture, region_bounds, "").await;
    assert!(in_region > 2_000, "{in_region}");
    let path = fetch(6, region, "").await;
    assert!(std::fs::metadata(&path).unwrap().len() < 500_000);
    let mut args = strings(&["-f", "GeoJSON", "/vsistdout/"]);
    args.extend(open(6, region));
    args.extend(strings(&[path.to_str().unwrap(), "clusters"]));
    let clusters: Value = serde_json::from_str(&run("ogr2ogr", args).await).unwrap();
    let features = clusters["features"].as_array().unwrap();
    assert!(features.len() > 10 && features.len() <= 4096);
    let counted: u64 = features
        .iter()
        .map(|f| f["properties"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, in_region);
    // Narrowed to a département, the same tile is clustered from the live index: the same sums.
    let in_departement = entries_in_tile(
        &fixture,
        region_bounds,
        "AND insee_code IN (SELECT insee_code FROM communes WHERE departement_code = '63')",
    )
    .await;
    assert!(in_departement > 2_000 && in_departement < in_region);
    let path = fetch(6, region, "?departement=63").await;
    let mut args = strings(&["-f", "GeoJSON", "/vsistdout/"]);
    args.extend(open(6, region));
    args.extend(strings(&[path.to_str().unwrap(), "clusters"]));
    let clusters: Value = serde_json::from_str(&run("ogr2ogr", args).await).unwrap();
    let counted: u64 = clusters["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["properties"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, in_departement);

    // The tiling scheme, the tilesets, the conformance; wrong requests.
    let tilesets: Value = reqwest::get(format!("{base}/ogc/collections/services/tiles"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let template = tilesets["tilesets"][0]["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "item")
        .unwrap()["href"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        template,
        format!("{tiles}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}")
    );
    let scheme: Value = reqwest::get(format!("{base}/ogc/tileMatrixSets/WebMercatorQuad"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(scheme["tileMatrices"].as_array().unwrap().len(), 23);
    let conformance: Value = reqwest::get(format!("{base}/ogc/conformance?f=json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(conformance["conformsTo"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt"));
    for (path, status) in [
        (format!("{tiles}/23/0/0"), 404),
        (format!("{tiles}/6/64/0"), 404),
        (format!("{tiles}/6/22/32?typology=nope"), 400),
        (
            format!("{base}/ogc/collections/services/tiles/WorldCRS84Quad/0/0/0"),
            404,
        ),
    ] {
        assert_eq!(
            reqwest::get(&path).await.unwrap().status(),
            status,
            "{path}"
        );
    }

    // QGIS renders the tile layer from the template; the ocean stays blank.
    let runtime = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/qgis/render_tiles.py");
    let qgis_template = format!("{tiles}/{{z}}/{{y}}/{{x}}");
    let render = |extent: [f64; 4]| {
        let (script, template, home) = (
            script.clone(),
            qgis_template.clone(),
            runtime.path().to_owned(),
        );
        async move {
            let output = tokio::task::spawn_blocking(move || {
                Command::new("/usr/bin/python3")
                    .arg(script)
                    .arg(template)
                    .args(extent.map(|v| v.to_string()))
                    .env("QT_QPA_PLATFORM", "offscreen")
                    .env("XDG_RUNTIME_DIR", &home)
                    .env("HOME", &home)
                    .output()
            })
            .await
            .unwrap()
            .expect("/usr/bin/python3 (paquet Debian python3-qgis requis)");
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
                .unwrap_or_else(|e| {
                    panic!(
                        "QGIS printed {stdout}{}: {e}",
                        String::from_utf8_lossy(&output.stderr)
                    )
                });
            seen
        }
    };
    let seen = render(bounds).await;
    assert_eq!(seen["valid"], true, "{seen}");
    assert!(seen["painted"].as_u64().unwrap() > 0, "{seen}");
    let (_, ocean) = web_mercator_tile(-30.0, 45.0, 12);
    let seen = render(ocean).await;
    assert_eq!(seen["painted"], 0, "{seen}");
}
