//! The instance's DCAT catalogue (`GET /catalogue`, JSON-LD, DCAT-AP): the directory as one
//! dataset with every download as a distribution, and the APIs as data services, so that
//! data.gouv.fr (or any DCAT harvester) can list the instance without conversion.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::data_inclusion;
use super::formats::Format;

/// The data·inclusion schema's page on schema.data.gouv.fr, which its files conform to.
const DATA_INCLUSION_SCHEMA: &str =
    "https://schema.data.gouv.fr/gip-inclusion/data-inclusion-schema/";
use crate::admission::PublicBase;
use crate::error::Result;
use crate::state::AppState;

/// The JSON-LD context: DCAT, DCTERMS, FOAF and vCard terms as DCAT-AP names them.
fn context() -> Value {
    json!({
        "dcat": "http://www.w3.org/ns/dcat#",
        "dct": "http://purl.org/dc/terms/",
        "foaf": "http://xmlns.com/foaf/0.1/",
        "xsd": "http://www.w3.org/2001/XMLSchema#",
        "dct:modified": {"@type": "xsd:dateTime"},
        "dct:issued": {"@type": "xsd:dateTime"},
        "dcat:accessURL": {"@type": "@id"},
        "dcat:downloadURL": {"@type": "@id"},
        "dcat:endpointURL": {"@type": "@id"},
        "dcat:endpointDescription": {"@type": "@id"},
        "dcat:landingPage": {"@type": "@id"},
        "dct:license": {"@type": "@id"},
        "dct:conformsTo": {"@type": "@id"},
        "dcat:mediaType": {"@type": "@id"},
        "dct:format": {"@type": "@id"},
        "dcat:servesDataset": {"@type": "@id"},
    })
}

/// An IANA media type as the IRI DCAT-AP asks for.
fn media_type(kind: &str) -> String {
    format!("https://www.iana.org/assignments/media-types/{kind}")
}

/// The catalogue of this instance, its links starting with `base`, last modified `modified`.
pub fn document(state: &AppState, base: &str, modified: &str) -> Value {
    let licence = &state.layers.licence;
    let dataset = format!("{base}/catalogue#services");
    let publisher = json!({
        "@type": "foaf:Agent",
        "foaf:name": "Opérateur de l'instance Proximités",
        "foaf:homepage": {"@id": format!("{base}/")},
    });
    // One download: its URL, title, description, IANA media type, EU file type, and the
    // schema it conforms to when it follows one.
    let distribution = |url: String,
                        title: String,
                        description: String,
                        kind: &str,
                        file_type: &str,
                        conforms_to: Option<&str>| {
        let mut d = json!({
            "@id": format!("{url}#distribution"),
            "@type": "dcat:Distribution",
            "dct:title": title,
            "dct:description": description,
            "dcat:accessURL": url,
            "dcat:downloadURL": url,
            "dcat:mediaType": media_type(kind),
            "dct:format": format!("http://publications.europa.eu/resource/authority/file-type/{}", file_type.to_uppercase()),
            "dct:license": licence.url,
            "dct:modified": modified,
        });
        if let Some(schema) = conforms_to {
            d["dct:conformsTo"] = json!(schema);
        }
        d
    };
    let mut distributions: Vec<Value> = [
        (Format::GeoJson, "GeoJSON", "RFC 7946, WGS84"),
        (
            Format::GeoPackage,
            "GPKG",
            "OGC GeoPackage, WGS84 ou Lambert-93",
        ),
        (
            Format::FlatGeobuf,
            "FlatGeobuf",
            "FlatGeobuf, WGS84 ou Lambert-93",
        ),
        (Format::Csv, "CSV", "CSV, format d'import Proximités"),
        (Format::Scdl, "CSV", "CSV, schéma SCDL « Équipements »"),
    ]
    .into_iter()
    .map(|(format, label, description)| {
        distribution(
            format!("{base}/api/v1/export/services.{}", format.extension()),
            format!("Services publics — {description}"),
            format!("Toutes les fiches publiées, {description}."),
            format.media_type(),
            label,
            None,
        )
    })
    .collect();
    distributions.extend(data_inclusion::FILES.into_iter().map(|(table, encoding)| {
        let what = match table {
            data_inclusion::Table::Structures => "structures",
            data_inclusion::Table::Services => "services",
        };
        let (kind, label) = match encoding {
            data_inclusion::Encoding::Json => ("application/json", "JSON"),
            data_inclusion::Encoding::Csv => ("text/csv", "CSV"),
        };
        distribution(
            format!(
                "{base}/api/v1/export/data-inclusion/{}",
                data_inclusion::file_name(table, encoding)
            ),
            format!("Services publics — {what} data·inclusion ({label})"),
            format!("Les fiches publiées comme {what} du schéma data·inclusion 1.x, en {label}."),
            kind,
            label,
            Some(DATA_INCLUSION_SCHEMA),
        )
    }));
    // One API: where it answers, where it is described, the standard it follows.
    let data_service =
        |id: String, title: &str, endpoint: String, description: String, conforms_to: &str| {
            json!({
                "@id": id,
                "@type": "dcat:DataService",
                "dct:title": title,
                "dcat:endpointURL": endpoint,
                "dcat:endpointDescription": description,
                "dct:conformsTo": conforms_to,
                "dct:license": licence.url,
                "dcat:servesDataset": dataset,
            })
        };
    let services = vec![
        data_service(
            format!("{base}/ogc"),
            "OGC API – Features",
            format!("{base}/ogc"),
            format!("{base}/ogc/api"),
            "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
        ),
        data_service(
            format!("{base}/api/v1"),
            "API de recherche et d'écriture Proximités",
            format!("{base}/api/v1/services"),
            format!("{base}/api/v1/openapi.json"),
            "https://spec.openapis.org/oas/v3.1.0",
        ),
        data_service(
            format!("{base}/hsds/"),
            "Open Referral HSDS 3.0 (lecture)",
            format!("{base}/hsds/"),
            format!("{base}/api/v1/openapi.json"),
            "https://docs.openreferral.org/en/latest/hsds/",
        ),
    ];
    json!({
        "@context": context(),
        "@id": format!("{base}/catalogue"),
        "@type": "dcat:Catalog",
        "dct:title": "Proximités — catalogue des données",
        "dct:description": "Les données publiées par cette instance de Proximités, annuaire géolocalisé des services publics : téléchargements et API.",
        "dct:language": {"@id": "http://publications.europa.eu/resource/authority/language/FRA"},
        "dct:publisher": publisher,
        "dct:license": licence.url,
        "dct:modified": modified,
        "foaf:homepage": {"@id": format!("{base}/donnees-sig")},
        "dcat:dataset": [{
            "@id": dataset,
            "@type": "dcat:Dataset",
            "dct:identifier": dataset,
            "dct:title": "Services publics de proximité",
            "dct:description": "Les services publics du territoire (mairies, santé, emploi, social, culture…) : nom, typologie, adresse, coordonnées WGS84, téléphone, horaires, accessibilité, source et date de mise à jour de chaque fiche.",
            "dcat:keyword": ["services publics", "annuaire", "proximité", "équipements"],
            "dct:publisher": publisher,
            "dct:license": licence.url,
            "dct:modified": modified,
            "dct:spatial": {"@id": "http://publications.europa.eu/resource/authority/country/FRA"},
            "dct:accrualPeriodicity": {"@id": "http://publications.europa.eu/resource/authority/frequency/CONT"},
            "dcat:landingPage": format!("{base}/donnees-sig"),
            "dcat:distribution": distributions,
        }],
        "dcat:service": services,
    })
}

/// The DCAT catalogue of the instance (JSON-LD, DCAT-AP): the directory as a dataset with each
/// download as a distribution, the OGC API and the JSON API as data services. For harvesters
/// such as data.gouv.fr.
#[utoipa::path(get, path = "/catalogue", tag = "export",
    responses((status = 200, description = "Catalogue DCAT (JSON-LD)", content_type = "application/ld+json")))]
pub(crate) async fn catalogue(
    State(state): State<AppState>,
    PublicBase(base): PublicBase,
) -> Result<Response> {
    let modified = crate::db::last_change(&state.store)
        .await?
        .unwrap_or_else(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let body = document(&state, &base, &modified);
    Ok((
        [
            (header::CONTENT_TYPE, "application/ld+json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body.to_string(),
    )
        .into_response())
}
