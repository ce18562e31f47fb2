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
    let mut distributions: Vec<Value> = [
        (Format::GeoJson, "GeoJSON", "RFC 7946, WGS84"),
        (Format::GeoPackage, "GPKG", "OGC GeoPackage, WGS84 ou Lambert-93"),
        (Format::FlatGeobuf, "FlatGeobuf", "FlatGeobuf, WGS84 ou Lambert-93"),
        (Format::Csv, "CSV", "CSV, format d'import Proximités"),
        (Format::Scdl, "CSV", "CSV, schéma SCDL « Équipements »"),
    ]
    .into_iter()
    .map(|(format, label, description)| {
        let url = format!("{base}/api/v1/export/services.{}", format.extension());
        json!({
            "@id": format!("{url}#distribution"),
            "@type": "dcat:Distribution",
            "dct:title": format!("Services publics — {description}"),
            "dct:description": format!("Toutes les fiches publiées, {description}."),
            "dcat:accessURL": url,
            "dcat:downloadURL": url,
            "dcat:mediaType": media_type(format.media_type()),
            "dct:format": format!("http://publications.europa.eu/resource/authority/file-type/{}", label.to_uppercase()),
            "dct:license": licence.url,
            "dct:modified": modified,
        })
    })
    .collect();
    distributions.extend(data_inclusion::FILES.into_iter().map(|(table, encoding)| {
        let file = data_inclusion::file_name(table, encoding);
        let url = format!("{base}/api/v1/export/data-inclusion/{file}");
        let what = match table {
            data_inclusion::Table::Structures => "structures",
            data_inclusion::Table::Services => "services",
        };
        let (kind, label) = match encoding {
            data_inclusion::Encoding::Json => ("application/json", "JSON"),
            data_inclusion::Encoding::Csv => ("text/csv", "CSV"),
        };
        json!({
            "@id": format!("{url}#distribution"),
            "@type": "dcat:Distribution",
            "dct:title": format!("Services publics — {what} data·inclusion ({label})"),
            "dct:description": format!("Les fiches publiées comme {what} du schéma data·inclusion 1.x, en {label}."),
            "dcat:accessURL": url,
            "dcat:downloadURL": url,
            "dcat:mediaType": media_type(kind),
            "dct:format": format!("http://publications.europa.eu/resource/authority/file-type/{label}"),
            "dct:conformsTo": DATA_INCLUSION_SCHEMA,
            "dct:license": licence.url,
            "dct:modified": modified,
        })
    }));
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
        "dcat:service": [
            {
                "@id": format!("{base}/ogc"),
                "@type": "dcat:DataService",
                "dct:title": "OGC API – Features",
                "dcat:endpointURL": format!("{base}/ogc"),
                "dcat:endpointDescription": format!("{base}/ogc/api"),
                "dct:conformsTo": "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
                "dct:license": licence.url,
                "dcat:servesDataset": dataset,
            },
            {
                "@id": format!("{base}/api/v1"),
                "@type": "dcat:DataService",
                "dct:title": "API de recherche et d'écriture Proximités",
                "dcat:endpointURL": format!("{base}/api/v1/services"),
                "dcat:endpointDescription": format!("{base}/api/v1/openapi.json"),
                "dct:conformsTo": "https://spec.openapis.org/oas/v3.1.0",
                "dct:license": licence.url,
                "dcat:servesDataset": dataset,
            },
            {
                "@id": format!("{base}/hsds/"),
                "@type": "dcat:DataService",
                "dct:title": "Open Referral HSDS 3.0 (lecture)",
                "dcat:endpointURL": format!("{base}/hsds/"),
                "dcat:endpointDescription": format!("{base}/api/v1/openapi.json"),
                "dct:conformsTo": "https://docs.openreferral.org/en/latest/hsds/",
                "dct:license": licence.url,
                "dcat:servesDataset": dataset,
            },
        ],
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
    let modified = crate::db::last_change(&state.pool)
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
