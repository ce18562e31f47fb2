//! Every parser of outside text, fed generated input (issue 17): files' rows (project CSV,
//! SCDL CSV, GeoJSON), CQL2 filters, opening hours and service-public.fr hours, closures, and
//! the query strings of every search, OGC and monitoring endpoint through the router. None
//! may panic; the endpoints answer below 500 whatever they are sent.

mod common;

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proximites::export::cql2::{self, Queryable, Subject};
use proximites::export::crs::Crs;
use proximites::import::formats;

/// Text that looks like the format it is fed to: its words, separators and quotes, and any
/// character besides.
fn shaped(words: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(words).prop_map(str::to_owned),
            2 => "[0-9.,;:\"' ()\\-\\n]{1,4}",
            1 => "\\PC{1,4}",
            1 => "[\\x00-\\x7f]{1,4}",
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

const CSV_WORDS: &[&str] = &[
    "source_ref,typology,name,description,street,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair\n",
    "COLL_NOM,COLL_SIRET,EQUIP_UID,EQUIP_THEME,EQUIP_TYPE,EQUIP_NOM,ADRESSE,CODE_POSTAL,COMMUNE,CODE_INSEE,LATITUDE,LONGITUDE\n",
    "mairie", "Mairie de Riom", "63300", "3.1133", "45.8937", "Mo-Fr 08:00-12:00", "yes",
    "\"", ",", ";", "\n", "\r\n", "\u{feff}",
];

const GEOJSON_WORDS: &[&str] = &[
    "{\"type\":\"FeatureCollection\",\"features\":[",
    "{\"type\":\"Feature\",\"properties\":{",
    "\"geometry\":{\"type\":\"Point\",\"coordinates\":[",
    "\"name\":",
    "\"typology\":",
    "\"mairie\"",
    "3.08",
    "45.77",
    "1e308",
    "-0",
    "null",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "\"",
];

const CQL2_WORDS: &[&str] = &[
    "name",
    "commune",
    "typology",
    "theme",
    "updated_at",
    "departement",
    "epci",
    "wheelchair",
    " AND ",
    " OR ",
    "NOT ",
    " LIKE ",
    " BETWEEN ",
    " IN ",
    " IS NULL",
    " IS NOT NULL",
    "=",
    "<>",
    "<",
    ">=",
    "'63113'",
    "'%mairie%'",
    "'_'",
    "TIMESTAMP('2026-01-01T00:00:00Z')",
    "DATE('2026-01-01')",
    "S_INTERSECTS(geometry,",
    "S_WITHIN(",
    "S_DISJOINT(",
    "S_CONTAINS(",
    "POINT(3.08 45.77)",
    "POLYGON((3 45,4 45,4 46,3 45))",
    "MULTIPOINT((3 45),(4 46))",
    "BBOX(2.9,45.6,3.3,45.9)",
    "geometry",
    "(",
    ")",
    ",",
    "TRUE",
    "FALSE",
    "1e999",
    "-",
];

const HOURS_WORDS: &[&str] = &[
    "Mo", "Tu", "We", "Th", "Fr", "Sa", "Su", "PH", "SH", "off", "closed", "-", ",", ";", " ",
    "08:00", "12:00", "24:00", "25:99", "00:00", "+", "week ", "01", "Jan", "Dec", "easter",
    "sunrise", "[1]", "[-1]", "\"", "||",
];

struct Entry;

impl Subject for Entry {
    fn text(&self, property: Queryable) -> Option<&str> {
        match property {
            Queryable::Name => Some("Mairie de Clermont-Ferrand"),
            Queryable::Commune => Some("63113"),
            Queryable::Typology => Some("mairie"),
            _ => None,
        }
    }

    fn updated_at(&self) -> Option<DateTime<Utc>> {
        Some(Utc::now())
    }

    fn point(&self) -> (f64, f64) {
        (3.08, 45.77)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn csv_files_are_read_without_panicking(text in shaped(CSV_WORDS)) {
        let bytes = text.as_bytes();
        let _ = formats::read_project_csv(bytes, bytes, |_| true);
        let _ = formats::read_scdl_csv(bytes, bytes, |_| true);
        let _ = formats::detect("fichier.csv", bytes);
    }

    #[test]
    fn geojson_files_are_read_without_panicking(text in shaped(GEOJSON_WORDS)) {
        let _ = formats::read_geojson(text.as_bytes(), |_| true);
    }

    #[test]
    fn cql2_filters_parse_and_evaluate_without_panicking(text in shaped(CQL2_WORDS)) {
        for crs in [Crs::Crs84, Crs::Epsg4326, Crs::Lambert93] {
            if let Ok(filter) = cql2::parse(&text, crs) {
                let _ = filter.matches(&Entry);
            }
        }
    }

    #[test]
    fn opening_hours_are_read_without_panicking(text in shaped(HOURS_WORDS)) {
        let _ = proximites::services::hours::normalize(&text);
        let _ = proximites::services::hours::from_service_public_json(&text);
    }
}

/// The router of a server on the demo, made once for all cases.
fn router() -> &'static (tokio::runtime::Runtime, axum::Router) {
    static ROUTER: OnceLock<(tokio::runtime::Runtime, axum::Router)> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let router = runtime.block_on(async {
            let (dir, store, reference) = common::database(true).await;
            let fixture = common::Fixture::serve(dir, store, reference).await;
            // The directory lives as long as the process.
            std::mem::forget(fixture._dir);
            fixture.router
        });
        (runtime, router)
    })
}

/// A query string of known parameter names and generated values.
fn query() -> impl Strategy<Value = String> {
    let names = prop::sample::select(
        &[
            "q",
            "near",
            "radius",
            "in",
            "theme",
            "typology",
            "open_now",
            "open_at",
            "wheelchair",
            "sort",
            "limit",
            "cursor",
            "lieu",
            "page",
            "f",
            "bbox",
            "bbox-crs",
            "crs",
            "datetime",
            "filter",
            "filter-lang",
            "filter-crs",
            "offset",
            "territoire",
            "couleur",
            "titre",
            "lang",
            "carte",
            "typologies",
            "themes",
            "annee",
            "lon",
            "lat",
            "x",
            "y",
        ][..],
    );
    let values = prop_oneof![
        "\\PC{0,12}",
        "[0-9.,\\-]{0,20}",
        Just("commune:63113".to_owned()),
        Just("departement:63".to_owned()),
        Just("3.08,45.77".to_owned()),
        Just("2026-02-30T25:61".to_owned()),
        Just("+262142-12-31T00:00:00Z".to_owned()),
        Just("9".repeat(40)),
        Just("-1".to_owned()),
        Just("NaN".to_owned()),
    ];
    prop::collection::vec((names, values), 0..6).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

const ENDPOINTS: &[&str] = &[
    "/api/v1/services",
    "/api/v1/places",
    "/api/v1/boundaries",
    "/api/v1/typologies",
    "/recherche",
    "/embed",
    "/integrer",
    "/embed/theme.css",
    "/",
    "/evenements-de-vie/naissance",
    "/ogc/collections",
    "/ogc/collections/services",
    "/ogc/collections/services/items",
    "/ogc/collections/services/queryables",
    "/veille",
    "/veille/departement:63",
    "/api/v1/territories/departement:63/coverage",
    "/donnees-sig",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_search_ogc_and_monitoring_query_string_answers_below_500(
        endpoint in prop::sample::select(ENDPOINTS),
        query in query(),
    ) {
        use tower::ServiceExt;
        let (runtime, router) = router();
        let uri = format!("{endpoint}?{query}");
        let status = runtime.block_on(async {
            let request = axum::http::Request::builder()
                .uri(&uri)
                .body(axum::body::Body::empty())
                .unwrap();
            router.clone().oneshot(request).await.unwrap().status()
        });
        prop_assert!(status.as_u16() < 500, "{} answered {}", uri, status);
    }
}
