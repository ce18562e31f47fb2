//! The HTML side of the OGC API (`f=html`) and the « Données SIG » page: simple, accessible
//! pages (one `<h1>`, a skip link, tables with headers and captions).

use axum::extract::State;
use axum::response::Html;
use maud::{html, Markup};
use serde_json::Value;

use crate::admission::PublicBase;
use crate::export::crs::Crs;
use crate::export::formats::Format;
use crate::export::FIELDS;
use crate::state::AppState;

/// The page around a body, in the site's layout (its stylesheet styles `.gis` tables).
fn page(lang: &str, title: &str, body: Markup) -> Markup {
    let lang = crate::search::hours::Lang::from_code(lang).unwrap_or_default();
    crate::web::layout::page(
        &crate::web::layout::Chrome {
            lang,
            title,
            path: "/donnees-sig",
            current: None,
        },
        html! {
            nav.gis-nav aria-label="Données SIG" {
                a href="/donnees-sig" { "Données SIG" } " · "
                a href="/ogc?f=html" { "OGC API" } " · "
                a href="/ogc/collections?f=html" { "Collections" }
            }
            h1 { (title) }
            div.gis { (body) }
        },
    )
}

fn links_list(doc: &Value) -> Markup {
    html! {
        ul {
            @for l in doc["links"].as_array().into_iter().flatten() {
                li {
                    a href=(l["href"].as_str().unwrap_or_default()) { (l["title"].as_str().unwrap_or_default()) }
                    " (" (l["rel"].as_str().unwrap_or_default()) ", " (l["type"].as_str().unwrap_or_default()) ")"
                }
            }
        }
    }
}

pub fn landing(doc: &Value) -> Markup {
    page(
        "fr",
        "OGC API – Features",
        html! {
            p { (doc["description"].as_str().unwrap_or_default()) }
            h2 { "Liens" }
            (links_list(doc))
        },
    )
}

pub fn conformance(doc: &Value) -> Markup {
    page(
        "fr",
        "Classes de conformité",
        html! {
            ul {
                @for class in doc["conformsTo"].as_array().into_iter().flatten() {
                    li { code { (class.as_str().unwrap_or_default()) } }
                }
            }
        },
    )
}

fn collection_section(c: &Value, heading: bool) -> Markup {
    let id = c["id"].as_str().unwrap_or_default();
    html! {
        @if heading {
            h2 { a href={ "/ogc/collections/" (id) "?f=html" } { (c["title"].as_str().unwrap_or_default()) } }
        }
        p { (c["description"].as_str().unwrap_or_default()) }
        p { "Identifiant : " code { (id) } }
        p { a href={ "/ogc/collections/" (id) "/items?f=html" } { "Parcourir les entités" } }
        h3 { "Téléchargements" }
        ul {
            @for l in c["links"].as_array().into_iter().flatten().filter(|l| l["rel"] == "enclosure") {
                li { a href=(l["href"].as_str().unwrap_or_default()) { (l["title"].as_str().unwrap_or_default()) } }
            }
        }
    }
}

pub fn collections(doc: &Value) -> Markup {
    page(
        "fr",
        "Collections",
        html! {
            @for c in doc["collections"].as_array().into_iter().flatten() {
                section { (collection_section(c, true)) }
            }
        },
    )
}

pub fn collection(doc: &Value) -> Markup {
    page(
        "fr",
        doc["title"].as_str().unwrap_or_default(),
        html! {
            (collection_section(doc, false))
            h2 { "Systèmes de coordonnées proposés" }
            ul {
                @for crs in Crs::ALL {
                    li { (crs.label()) " — " code { (crs.uri()) } }
                }
            }
        },
    )
}

pub fn items(
    collection: &super::Collection,
    features: &[Value],
    matched: u64,
    crs: Crs,
    next: Option<&str>,
) -> Markup {
    page(
        "fr",
        &format!("Entités : {}", collection.title),
        html! {
            p { (matched) " entités correspondent ; " (features.len()) " sur cette page. Coordonnées : " (crs.label()) "." }
            table {
                caption { "Entités de la page" }
                thead {
                    tr {
                        th scope="col" { "Nom" }
                        th scope="col" { "Typologie" }
                        th scope="col" { "Commune (INSEE)" }
                        th scope="col" { "Coordonnées" }
                    }
                }
                tbody {
                    @for f in features {
                        tr {
                            th scope="row" {
                                a href={ "/ogc/collections/" (collection.id) "/items/" (f["id"].as_str().unwrap_or_default()) "?f=html" } {
                                    (f["properties"]["name"].as_str().unwrap_or_default())
                                }
                            }
                            td { (f["properties"]["typology_label"].as_str().unwrap_or_default()) }
                            td { (f["properties"]["city"].as_str().unwrap_or_default()) " (" (f["properties"]["insee_code"].as_str().unwrap_or_default()) ")" }
                            td { (f["geometry"]["coordinates"].to_string()) }
                        }
                    }
                }
            }
            @if let Some(next) = next {
                p { a href=(next) rel="next" { "Page suivante" } }
            }
        },
    )
}

pub fn feature(collection: &super::Collection, feature: &Value, crs: Crs) -> Markup {
    let name = feature["properties"]["name"].as_str().unwrap_or_default();
    page(
        "fr",
        name,
        html! {
            p { "Collection : " a href={ "/ogc/collections/" (collection.id) "?f=html" } { (collection.title) } }
            table {
                caption { "Propriétés" }
                tbody {
                    tr { th scope="row" { "id" } td { (feature["id"].as_str().unwrap_or_default()) } }
                    @for field in &FIELDS[1..] {
                        tr { th scope="row" { (field) } td { (feature["properties"][field].as_str().unwrap_or("")) } }
                    }
                    tr { th scope="row" { "Position (" (crs.label()) ")" } td { (feature["geometry"]["coordinates"].to_string()) } }
                }
            }
        },
    )
}

/// « Données SIG »: how to use the layers in QGIS, ArcGIS and GDAL.
#[utoipa::path(get, path = "/donnees-sig", tag = "ogc", responses((status = 200, description = "Page HTML « Données SIG »")))]
pub(crate) async fn gis_page(
    State(state): State<AppState>,
    PublicBase(base): PublicBase,
) -> Html<String> {
    let endpoint = format!("{base}/ogc");
    let licence = &state.layers.licence;
    let themes = super::collections(&state.reference);
    let markup = page(
        "fr",
        "Données SIG",
        html! {
            p {
                "Les services publics de l'annuaire sont publiés en couches pour votre système d'information géographique, "
                "au standard OGC API – Features, en WGS84 ou en Lambert-93 (EPSG:2154) et dans les systèmes des outre-mer. "
                "Données sous " a href=(licence.url) { (licence.name) } "."
            }
            p {
                "Le " a href="/catalogue" { "catalogue DCAT" } " (JSON-LD) de l'instance liste ces données et ces API pour les moissonneurs comme data.gouv.fr."
            }
            h2 { "Adresse du service" }
            p { "À coller dans votre logiciel :" }
            pre { code { (endpoint) } }
            p { "Une couche par thème, et la couche " code { "services" } " qui les réunit toutes ; le nombre d'entités est donné exactement, jusqu'à 10 000 entités par page." }
            h2 { "QGIS" }
            ol {
                li { "Menu " strong { "Couche › Ajouter une couche › Ajouter une couche WFS / OGC API – Features" } "." }
                li { "Bouton " strong { "Nouveau" } " ; nom : " code { "Proximités" } " ; URL : " code { (endpoint) } " ; version : " strong { "OGC API – Features" } "." }
                li { "Bouton " strong { "Connexion" } ", choisir la couche, puis dans " strong { "Système de coordonnées de référence" } " : " code { "EPSG:2154" } " pour le Lambert-93." }
                li { "Bouton " strong { "Ajouter" } "." }
            }
            h2 { "ArcGIS Pro" }
            ol {
                li { "Onglet " strong { "Insérer" } ", " strong { "Connexions › Serveur › Nouveau serveur OGC API" } "." }
                li { "URL du serveur : " code { (endpoint) } ", puis " strong { "OK" } "." }
                li { "Dans le volet " strong { "Catalogue" } ", ouvrir " strong { "Serveurs" } " et glisser la collection sur la carte." }
            }
            h2 { "GDAL / ogr2ogr" }
            p { "Toute la couche dans un GeoPackage en Lambert-93 :" }
            pre { code { "ogr2ogr -f GPKG services.gpkg OAPIF:" (endpoint) " services -t_srs EPSG:2154 -oo PAGE_SIZE=10000" } }
            p { "Avant GDAL 3.7, " code { "-oo PAGE_SIZE=10000" } " évite les pages de 10 entités ; les versions suivantes lisent la taille maximale dans la définition de l'API." }
            p { "Les coordonnées calculées par le serveur en Lambert-93 (sans reprojection locale) :" }
            pre { code { "ogr2ogr -f GPKG services-l93.gpkg \"OAPIF:" (endpoint) "/collections/services?crs=http://www.opengis.net/def/crs/EPSG/0/2154\" -a_srs EPSG:2154 -oo PAGE_SIZE=10000" } }
            p { "Un filtre CQL2, par exemple les mairies du Puy-de-Dôme :" }
            pre { code { "ogr2ogr -f GPKG mairies-63.gpkg \"OAPIF:" (endpoint) "/collections/services\" -where \"typology = 'mairie' AND departement = '63'\"" } }
            h2 { "Téléchargements" }
            p { "Fichiers complets, produits une fois par version des données. Ajoutez " code { "?crs=EPSG:2154" } " pour le Lambert-93 (sauf GeoJSON, toujours en WGS84), "
                code { "theme=" } ", " code { "typology=" } " ou " code { "in=departement:63" } " pour une sélection." }
            table {
                caption { "Téléchargements par couche" }
                thead {
                    tr {
                        th scope="col" { "Couche" }
                        @for format in Format::ALL { th scope="col" { (format.label()) } }
                    }
                }
                tbody {
                    @for c in &themes {
                        tr {
                            th scope="row" { (c.title) }
                            @for format in Format::ALL {
                                td {
                                    a href={ "/api/v1/export/services." (format.extension()) @if let Some(theme) = &c.theme { "?theme=" (theme) } } {
                                        (format.extension()) span.visually-hidden { " — " (c.title) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p { "Les fichiers CSV ne contiennent que les données : la licence et les sources sont dans l'en-tête HTTP " code { "Link" } " et, pour la ligne de commande " code { "proximites export" } ", dans le fichier " code { "FICHIER.licence.txt" } " écrit à côté." }
        },
    );
    Html(markup.into_string())
}
