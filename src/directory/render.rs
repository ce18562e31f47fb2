//! Typst as a library: a closed world (the layout, the guide's data as JSON and the logo as
//! virtual files, fonts held in memory, no other file and no network) compiled into a tagged
//! PDF, and the cover alone into SVG for previews.

use std::sync::OnceLock;

use typst::diag::{FileError, FileResult, SourceDiagnostic};
use typst::foundations::{Bytes, Datetime, Smart};
use typst::syntax::{FileId, RootedPath, Source, VirtualPath, VirtualRoot};
use typst::text::{Font, FontBook};
use typst::utils::LazyHash;
use typst::{Library, LibraryExt, World};
use typst_layout::PagedDocument;

use super::content::Guide;
use super::Logo;

/// The layout, compiled into the binary.
const TEMPLATE: &str = include_str!("guide.typ");
/// Where the cover ends in the layout: a cover preview is the layout up to here.
const BODY_MARK: &str = "// --- body ---";

/// Sans-serif fonts read from the system when present (Debian's `fonts-dejavu-core`): large,
/// open letters for readers with poor sight. Without them the embedded Libertinus Serif of
/// `typst-assets` is used; every font used is embedded in the PDF either way.
const SYSTEM_FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Oblique.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-BoldOblique.ttf",
];

struct Fonts {
    book: LazyHash<FontBook>,
    fonts: Vec<Font>,
}

fn fonts() -> &'static Fonts {
    static FONTS: OnceLock<Fonts> = OnceLock::new();
    FONTS.get_or_init(|| {
        let mut fonts: Vec<Font> = Vec::new();
        for path in SYSTEM_FONTS {
            if let Ok(data) = std::fs::read(path) {
                fonts.extend(Font::iter(Bytes::new(data)));
            }
        }
        for data in typst_assets::fonts() {
            fonts.extend(Font::iter(Bytes::new(data)));
        }
        Fonts {
            book: LazyHash::new(FontBook::from_fonts(&fonts)),
            fonts,
        }
    })
}

/// Whether the sans-serif system fonts were found (the README and the report say which).
pub fn has_system_fonts() -> bool {
    fonts()
        .fonts
        .iter()
        .any(|f| f.info().family == "DejaVu Sans")
}

fn library() -> &'static LazyHash<Library> {
    static LIBRARY: OnceLock<LazyHash<Library>> = OnceLock::new();
    LIBRARY.get_or_init(|| LazyHash::new(Library::builder().build()))
}

fn file_id(path: &str) -> FileId {
    // Interned once per path for the life of the process: the same few paths serve every guide.
    RootedPath::new(
        VirtualRoot::Project,
        VirtualPath::new(path).expect("a valid virtual path"),
    )
    .intern()
}

struct GuideWorld {
    main: Source,
    data: Bytes,
    qr: Bytes,
    qr_id: FileId,
    logo: Option<(FileId, Bytes)>,
    data_id: FileId,
    today: Datetime,
}

impl World for GuideWorld {
    fn library(&self) -> &LazyHash<Library> {
        library()
    }

    fn book(&self) -> &LazyHash<FontBook> {
        &fonts().book
    }

    fn main(&self) -> FileId {
        self.main.id()
    }

    fn source(&self, id: FileId) -> FileResult<Source> {
        if id == self.main.id() {
            Ok(self.main.clone())
        } else {
            Err(FileError::AccessDenied)
        }
    }

    fn file(&self, id: FileId) -> FileResult<Bytes> {
        if id == self.data_id {
            return Ok(self.data.clone());
        }
        if id == self.qr_id {
            return Ok(self.qr.clone());
        }
        match &self.logo {
            Some((logo_id, bytes)) if *logo_id == id => Ok(bytes.clone()),
            // Nothing else exists: no file of the machine is ever read by a layout.
            _ => Err(FileError::AccessDenied),
        }
    }

    fn font(&self, index: usize) -> Option<Font> {
        fonts().fonts.get(index).cloned()
    }

    fn today(&self, _offset: Option<typst::foundations::Duration>) -> Option<Datetime> {
        Some(self.today)
    }
}

/// Why a layout failed: the logo could not be read (the user's fault), or anything else.
#[derive(Debug)]
pub enum RenderError {
    Logo(String),
    Layout(String),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::Logo(m) | RenderError::Layout(m) => f.write_str(m),
        }
    }
}

fn world(guide: &Guide, logo: Option<&Logo>, cover_only: bool) -> Result<GuideWorld, RenderError> {
    let data = serde_json::to_vec(guide).map_err(|e| RenderError::Layout(e.to_string()))?;
    // A layout being worked on can be tried without rebuilding the binary.
    let template = match std::env::var_os("PROXIMITES_GUIDE_TEMPLATE") {
        Some(path) => std::borrow::Cow::Owned(
            std::fs::read_to_string(&path).map_err(|e| RenderError::Layout(e.to_string()))?,
        ),
        None => std::borrow::Cow::Borrowed(TEMPLATE),
    };
    let template = if cover_only {
        template
            .split_once(BODY_MARK)
            .map_or(&*template, |(cover, _)| cover)
    } else {
        &*template
    };
    let date = chrono::NaiveDate::parse_from_str(&guide.date_iso, "%Y-%m-%d")
        .map_err(|e| RenderError::Layout(e.to_string()))?;
    use chrono::Datelike;
    let today = Datetime::from_ymd(date.year(), date.month() as u8, date.day() as u8)
        .ok_or_else(|| RenderError::Layout("date hors limites".into()))?;
    Ok(GuideWorld {
        main: Source::new(file_id("/main.typ"), template.to_owned()),
        data: Bytes::new(data),
        data_id: file_id("/data.json"),
        qr: Bytes::new(guide.qr_pixels.clone()),
        qr_id: file_id("/qr.bin"),
        logo: logo.map(|l| {
            (
                file_id(&format!("/{}", l.file_name())),
                Bytes::new(l.bytes.clone()),
            )
        }),
        today,
    })
}

fn compile(world: &GuideWorld) -> Result<PagedDocument, RenderError> {
    typst::compile::<PagedDocument>(world)
        .output
        .map_err(|errors| RenderError::Layout(diagnostics(&errors[..])))
}

/// Checks that the logo decodes as an image, by laying it out alone (a few milliseconds).
pub fn check_logo(logo: &Logo) -> Result<(), RenderError> {
    let path = format!("/{}", logo.file_name());
    let world = GuideWorld {
        main: Source::new(
            file_id("/logo-check.typ"),
            format!("#image(\"{path}\", width: 2cm, alt: \"logo\")"),
        ),
        data: Bytes::new(Vec::new()),
        data_id: file_id("/data.json"),
        qr: Bytes::new(Vec::new()),
        qr_id: file_id("/qr.bin"),
        logo: Some((file_id(&path), Bytes::new(logo.bytes.clone()))),
        today: Datetime::from_ymd(2000, 1, 1).expect("a valid date"),
    };
    compile(&world).map(|_| ()).map_err(|e| {
        RenderError::Logo(format!(
            "le logo n'a pas pu être lu comme image / the logo could not be read as an image ({e})"
        ))
    })
}

fn diagnostics(errors: &[SourceDiagnostic]) -> String {
    errors
        .iter()
        .map(|e| {
            let hints: Vec<&str> = e.hints.iter().map(|h| h.v.as_str()).collect();
            if hints.is_empty() {
                e.message.to_string()
            } else {
                format!("{} ({})", e.message, hints.join("; "))
            }
        })
        .collect::<Vec<_>>()
        .join(" ; ")
}

/// Which accessibility standard a PDF meets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conformance {
    /// PDF/UA-1, validated by Typst's exporter.
    PdfUa1,
    /// Tagged PDF; PDF/UA-1 validation refused the document for the reason given.
    Tagged { ua_refused: String },
}

/// A laid-out guide.
pub struct Pdf {
    pub bytes: Vec<u8>,
    pub pages: usize,
    pub conformance: Conformance,
}

/// Lays out the whole guide and writes it as a tagged PDF, PDF/UA-1 when it validates.
///
/// With `PROXIMITES_TYPST_TIMING=FILE`, Typst's timing events (each layout iteration, the PDF
/// export…) are written to FILE as Chrome trace JSON.
pub fn pdf(guide: &Guide, logo: Option<&Logo>, ident: &str) -> Result<Pdf, RenderError> {
    let started = std::time::Instant::now();
    let timing = std::env::var_os("PROXIMITES_TYPST_TIMING");
    if timing.is_some() {
        typst_timing::enable();
    }
    let world = world(guide, logo, false)?;
    let document = compile(&world);
    // Typst memoizes every layout step for the next compilation, which a guide never reuses:
    // gigabytes for a large guide, released before the PDF is written.
    release_memory();
    let document = document?;
    let pages = document.pages().len();
    tracing::debug!(
        pages,
        ms = started.elapsed().as_millis() as u64,
        "guide laid out"
    );
    let written = write_pdf(&document, ident);
    drop(document);
    release_memory();
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "guide written");
    if let Some(path) = timing {
        let file = std::fs::File::create(&path).map_err(|e| RenderError::Layout(e.to_string()))?;
        typst_timing::export_json(std::io::BufWriter::new(file), |_| (String::new(), 0))
            .map_err(RenderError::Layout)?;
        typst_timing::disable();
    }
    written.map(|(bytes, conformance)| Pdf {
        bytes,
        pages,
        conformance,
    })
}

/// Empties Typst's memoization caches and gives the freed memory back to the system.
fn release_memory() {
    typst::comemo::evict(0);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the heap to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn write_pdf(document: &PagedDocument, ident: &str) -> Result<(Vec<u8>, Conformance), RenderError> {
    let options = |standards| typst_pdf::PdfOptions {
        ident: Smart::Custom(ident.to_owned()),
        standards,
        tagged: true,
        ..Default::default()
    };
    let ua = typst_pdf::PdfStandards::new(&[typst_pdf::PdfStandard::Ua_1])
        .map_err(|e| RenderError::Layout(e.message().to_string()))?;
    match typst_pdf::pdf(document, &options(ua)) {
        Ok(bytes) => Ok((bytes, Conformance::PdfUa1)),
        Err(errors) => {
            let ua_refused = diagnostics(&errors);
            tracing::warn!(%ua_refused, "PDF/UA-1 refused, writing a tagged PDF");
            let bytes = typst_pdf::pdf(document, &options(Default::default()))
                .map_err(|e| RenderError::Layout(diagnostics(&e)))?;
            Ok((bytes, Conformance::Tagged { ua_refused }))
        }
    }
}

/// The cover alone, as SVG.
pub fn cover_svg(guide: &Guide, logo: Option<&Logo>) -> Result<String, RenderError> {
    let world = world(guide, logo, true)?;
    let document = compile(&world)?;
    let page = document
        .pages()
        .first()
        .ok_or_else(|| RenderError::Layout("couverture vide".into()))?;
    Ok(typst_svg::svg(page, &typst_svg::SvgOptions::default()))
}
