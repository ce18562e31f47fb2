//! Bulk downloads: `GET /api/v1/export/services.{geojson,gpkg,fgb,csv,scdl.csv}` with the
//! selection in the query; the whole directory is served from a file built once per data
//! version, any other selection is streamed (GeoJSON, CSV) or built in a temporary file
//! (GeoPackage, FlatGeobuf).

use std::io::Write;

use crate::http::Path;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;

use super::crs::Crs;
use super::formats::{self, About, Format};
use super::{store, Selection};
use crate::error::{Error, FieldError, Result};
use crate::import::Reference;
use crate::state::AppState;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/export/{file}", get(download))
        .route(
            "/api/v1/export/data-inclusion/{file}",
            get(super::data_inclusion::download),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            crate::admission::heavy,
        ))
        .route("/catalogue", get(super::catalogue::catalogue))
}

/// Query pairs of a request, in order.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Comma-separated values of every occurrence of a parameter.
pub fn list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Narrows `selection` by a theme code, checked against the taxonomy.
pub fn with_theme(
    selection: Selection,
    reference: &Reference,
    theme: &str,
) -> Result<Selection, FieldError> {
    if reference.taxonomy.theme(theme).is_none() {
        return Err(FieldError::new(
            "theme",
            format!("thème inconnu « {theme} »"),
        ));
    }
    Ok(selection.theme(reference, theme))
}

/// Narrows `selection` by typology codes, each checked against the taxonomy.
pub fn with_typologies(
    selection: Selection,
    reference: &Reference,
    field: &str,
    codes: Vec<String>,
) -> Result<Selection, FieldError> {
    if let Some(unknown) = codes
        .iter()
        .find(|c| reference.taxonomy.typology(c).is_none())
    {
        return Err(FieldError::new(
            field,
            format!("typologie inconnue « {unknown} »"),
        ));
    }
    Ok(selection.typologies(codes))
}

/// Ends the parsing of a request's selection: narrowed by the typologies it named, or every
/// error found.
pub fn finish_selection(
    mut selection: Selection,
    reference: &Reference,
    typologies: Vec<String>,
    mut errors: Vec<FieldError>,
) -> Result<Selection> {
    if !typologies.is_empty() {
        match with_typologies(
            std::mem::take(&mut selection),
            reference,
            "typology",
            typologies,
        ) {
            Ok(s) => selection = s,
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(Error::InvalidParameters(errors));
    }
    Ok(selection)
}

/// The selection, format and CRS of a download request.
fn parse_request(
    reference: &Reference,
    file: &str,
    pairs: &[(String, String)],
) -> Result<(Selection, Format, Crs)> {
    let format = file
        .strip_prefix("services.")
        .and_then(Format::parse)
        .ok_or_else(|| Error::not_found("export", file))?;
    let (selection, crs) = parse_selection(reference, pairs, Some(format))?;
    Ok((selection, format, crs))
}

/// The selection of a download (`theme`, `typology`, `in`), and its CRS when the download is a
/// GIS layer in `format` (`crs`); every wrong parameter is named.
pub fn parse_selection(
    reference: &Reference,
    pairs: &[(String, String)],
    format: Option<Format>,
) -> Result<(Selection, Crs)> {
    let mut errors = Vec::new();
    let mut selection = Selection::default();
    let mut crs = Crs::Crs84;
    let mut typologies = Vec::new();
    for (name, value) in pairs {
        let outcome = match (name.as_str(), format) {
            ("theme", _) => {
                with_theme(std::mem::take(&mut selection), reference, value).map(|s| selection = s)
            }
            ("typology", _) => {
                typologies.extend(list(value));
                Ok(())
            }
            ("in", _) => crate::search::engine::Territory::parse(value, &reference.locator)
                .map(|t| selection = std::mem::take(&mut selection).territory(reference, &t))
                .map_err(|m| FieldError::new("in", m)),
            ("crs", Some(format)) => Crs::parse(value)
                .and_then(|c| {
                    if format.accepts(c) {
                        crs = c;
                        Ok(())
                    } else {
                        Err(format!(
                            "{} ne s'écrit pas en {} ({})",
                            format.label(),
                            c.label(),
                            if format == Format::GeoJson {
                                "RFC 7946 : WGS84 seulement"
                            } else {
                                "WGS84 s'y écrit en CRS84, longitude d'abord"
                            }
                        ))
                    }
                })
                .map_err(|m| FieldError::new("crs", m)),
            (other, Some(_)) => Err(FieldError::new(
                other,
                "paramètre inconnu (theme, typology, in, crs)",
            )),
            (other, None) => Err(FieldError::new(
                other,
                "paramètre inconnu (theme, typology, in)",
            )),
        };
        if let Err(e) = outcome {
            errors.push(e);
        }
    }
    let selection = finish_selection(selection, reference, typologies, errors)?;
    Ok((selection, crs))
}

/// Each parameter's error, as named on the command line.
fn command_line_error(error: Error) -> anyhow::Error {
    match error {
        Error::InvalidParameters(errors) => anyhow::anyhow!(errors
            .iter()
            .map(|e| format!("--{} : {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join(" ; ")),
        other => anyhow::Error::from(other),
    }
}

/// `proximites export`: the selection of `args` written to its output file; returns the count.
pub async fn export_to_file(
    db_store: &crate::db::Store,
    reference: &Reference,
    args: &crate::cli::ExportArgs,
) -> anyhow::Result<u64> {
    use crate::cli::ExportFormat;
    let mut pairs = Vec::new();
    if let Some(theme) = &args.theme {
        pairs.push(("theme".to_owned(), theme.clone()));
    }
    for typology in &args.typology {
        pairs.push(("typology".to_owned(), typology.clone()));
    }
    if let Some(territory) = &args.territory {
        pairs.push(("in".to_owned(), territory.clone()));
    }
    let format = match args.format {
        ExportFormat::Geojson => Format::GeoJson,
        ExportFormat::Gpkg => Format::GeoPackage,
        ExportFormat::Fgb => Format::FlatGeobuf,
        ExportFormat::Csv => Format::Csv,
        ExportFormat::Scdl => Format::Scdl,
        ExportFormat::DataInclusion => {
            if args.crs.is_some() {
                anyhow::bail!("--crs : data·inclusion s'écrit en WGS84 seulement");
            }
            let (selection, _) =
                parse_selection(reference, &pairs, None).map_err(command_line_error)?;
            return super::data_inclusion::export_to_dir(
                db_store,
                reference,
                selection,
                &args.public_url,
                &args.output,
            )
            .await;
        }
    };
    if let Some(crs) = &args.crs {
        pairs.push(("crs".to_owned(), crs.clone()));
    }
    let (selection, format, crs) = parse_request(
        reference,
        &format!("services.{}", format.extension()),
        &pairs,
    )
    .map_err(command_line_error)?;
    let reference = reference.clone();
    let licence = args.licence.licence();
    let path = args.output.clone();
    store::with_connection(db_store, move |handle| {
        let lookup = store::lookup(handle, &reference)?;
        let about = About {
            title: "Proximités — services publics".into(),
            licence,
            sources: store::publishing_sources(handle)?,
            generated: Utc::now(),
        };
        formats::write_file(handle, &lookup, &selection, &about, format, crs, &path)
    })
    .await
    .map_err(anyhow::Error::from)
}

const CHUNK: usize = 256 * 1024;

/// The body of a file, read 256 KiB at a time; `keep` lives as long as the body (a temporary
/// file removed once sent).
pub async fn file_body(
    path: &std::path::Path,
    keep: impl Send + Sync + 'static,
) -> Result<(Body, u64)> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(anyhow::Error::from)?;
    let length = file.metadata().await.map_err(anyhow::Error::from)?.len();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK);
    let stream = tokio_stream::StreamExt::map(stream, move |chunk| {
        let _ = &keep;
        chunk
    });
    Ok((Body::from_stream(stream), length))
}

fn download_headers(format: Format, crs: Crs, licence_url: &str, name: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |key: header::HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(key, value);
        }
    };
    put(header::CONTENT_TYPE, format.media_type().to_owned());
    put(
        header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{name}\""),
    );
    put(header::LINK, format!("<{licence_url}>; rel=\"license\""));
    put(
        header::HeaderName::from_static("content-crs"),
        format!("<{}>", crs.uri()),
    );
    put(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".to_owned());
    headers
}

/// Downloads the published entries of a selection.
///
/// `file` is `services.geojson`, `services.gpkg`, `services.fgb`, `services.csv` (the project's
/// import format) or `services.scdl.csv` (SCDL « Équipements »). The licence is in each file
/// (CSV: in the `Link: rel="license"` header).
#[utoipa::path(
    get,
    path = "/api/v1/export/{file}",
    tag = "export",
    params(
        ("file" = String, Path, description = "services.geojson, services.gpkg, services.fgb, services.csv ou services.scdl.csv"),
        ("theme" = Option<String>, Query, description = "Code de thème"),
        ("typology" = Option<String>, Query, description = "Codes de typologie, séparés par des virgules"),
        ("in" = Option<String>, Query, description = "Territoire : commune:CODE, epci:SIREN, departement:CODE ou region:CODE"),
        ("crs" = Option<String>, Query, description = "EPSG:2154 (Lambert-93), EPSG:5490, EPSG:2972, EPSG:2975, EPSG:4471 ; WGS84 par défaut (GeoJSON : WGS84 seulement)"),
    ),
    responses(
        (status = 200, description = "Le fichier"),
        (status = 400, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
    )
)]
pub(crate) async fn download(
    State(state): State<AppState>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let pairs = query_pairs(query.as_deref());
    let (selection, format, crs) = parse_request(&state.reference, &file, &pairs)?;
    let name = format!(
        "proximites-services{}.{}",
        if crs.is_projected() {
            format!("-epsg{}", crs.epsg())
        } else {
            String::new()
        },
        format.extension()
    );
    let headers = download_headers(format, crs, &state.layers.licence.url, &name);
    if selection.is_whole() {
        let version = state.live.settled_version();
        let path = state
            .layers
            .whole_file(&state.store, &state.reference, &version, format, crs)
            .await?;
        let (body, length) = file_body(&path, ()).await?;
        let mut response = (headers, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        return Ok(response);
    }
    let reference = state.reference.clone();
    let licence = state.layers.licence.clone();
    // Every selection is written to a file first and sent from it: the database connection is
    // given back as soon as the file is written, never held while a slow client reads.
    let dir = state.layers.dir.clone();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(anyhow::Error::from)?;
    let temp = tempfile::Builder::new()
        .prefix(".selection-")
        .tempfile_in(&dir)
        .map_err(anyhow::Error::from)?
        .into_temp_path();
    let target = temp.to_path_buf();
    store::with_connection(&state.store, move |handle| {
        let lookup = store::lookup(handle, &reference)?;
        let about = About {
            title: "Proximités — services publics (sélection)".into(),
            licence,
            sources: store::publishing_sources(handle)?,
            generated: Utc::now(),
        };
        let out = || -> anyhow::Result<_> {
            Ok(std::io::BufWriter::with_capacity(
                CHUNK,
                std::fs::File::create(&target)?,
            ))
        };
        let finish = |mut out: std::io::BufWriter<std::fs::File>, count: u64| {
            out.flush()?;
            Ok(count)
        };
        match format {
            Format::GeoPackage => {
                // SQLite wants to create the file itself.
                std::fs::remove_file(&target)?;
                formats::write_gpkg(handle, &lookup, &selection, &about, crs, &target)
            }
            Format::FlatGeobuf => {
                let mut file = out()?;
                let count =
                    formats::write_fgb(handle, &lookup, &selection, &about, crs, &mut file)?;
                finish(file, count)
            }
            Format::GeoJson => {
                let mut file = out()?;
                let count = formats::write_geojson(handle, &lookup, &selection, &about, &mut file)?;
                finish(file, count)
            }
            Format::Csv | Format::Scdl => {
                let mut file = out()?;
                let scdl = format == Format::Scdl;
                let count = formats::write_csv(handle, &lookup, &selection, scdl, crs, &mut file)?;
                finish(file, count)
            }
        }
    })
    .await?;
    let path = temp.to_path_buf();
    let (body, length) = file_body(&path, temp).await?;
    let mut response = (headers, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(response)
}
