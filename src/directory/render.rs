//! Typst as a library: a closed world (the layout, the guide's data as JSON and the logo as
//! virtual files, fonts held in memory, no other file and no network) compiled volume by volume
//! into tagged PDFs that [`super::join`] makes one, and the cover alone into SVG for previews.

use std::sync::OnceLock;

use rustc_hash::FxHashMap;
use serde::Serialize;
use typst::diag::{FileError, FileResult, SourceDiagnostic};
use typst::foundations::{Bytes, Content, Datetime, Label, Selector, Smart, Value};
use typst::introspection::Introspector;
use typst::syntax::{FileId, RootedPath, Source, VirtualPath, VirtualRoot};
use typst::text::{Font, FontBook};
use typst::utils::LazyHash;
use typst::utils::PicoStr;
use typst::{Library, LibraryExt, World};
use typst_layout::PagedDocument;

use super::content::{Block, Guide, IndexLine};
use super::{join, Logo};

/// The layout, compiled into the binary.
const TEMPLATE: &str = include_str!("guide.typ");

/// How many entries a body volume holds: Typst keeps a volume's pages in memory (about 150 KB
/// an entry with the passes' caches), so this bounds a guide's memory whatever its size. The
/// 20,000-entry benchmark fits in 1 GB with it; a smaller guide is one volume.
pub const VOLUME_ENTRIES: usize = 2_500;

/// How many lines of the alphabetical index a volume holds, per entry of a body volume: an
/// index line is about a quarter of an entry's weight in layout.
const INDEX_LINES_PER_ENTRY: usize = 4;

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

fn world(volume: &Volume<'_>, logo: Option<&Logo>, qr: &Bytes) -> Result<GuideWorld, RenderError> {
    let guide = volume.guide;
    let data = serde_json::to_vec(volume).map_err(|e| RenderError::Layout(e.to_string()))?;
    // A layout being worked on can be tried without rebuilding the binary.
    let template = match std::env::var_os("PROXIMITES_GUIDE_TEMPLATE") {
        Some(path) => {
            std::fs::read_to_string(&path).map_err(|e| RenderError::Layout(e.to_string()))?
        }
        None => TEMPLATE.to_owned(),
    };
    let date = chrono::NaiveDate::parse_from_str(&guide.date_iso, "%Y-%m-%d")
        .map_err(|e| RenderError::Layout(e.to_string()))?;
    use chrono::Datelike;
    let today = Datetime::from_ymd(date.year(), date.month() as u8, date.day() as u8)
        .ok_or_else(|| RenderError::Layout("date hors limites".into()))?;
    Ok(GuideWorld {
        main: Source::new(file_id("/main.typ"), template),
        data: Bytes::new(data),
        data_id: file_id("/data.json"),
        qr: qr.clone(),
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

/// Which part of the guide a volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Part {
    Front,
    Body,
    /// A part of the alphabetical index, before the back.
    Index,
    /// The end of the alphabetical index, the index by commune, notes and back cover.
    Back,
}

/// A line of the contents.
#[derive(Debug, Serialize)]
struct TocLine {
    level: u8,
    body: String,
    target: usize,
    /// Unknown while the front is laid out first, to learn its length.
    page: Option<usize>,
}

/// A line of the alphabetical index, its page numbers known.
#[derive(Debug, Serialize)]
struct IndexRow<'a> {
    letter: &'a str,
    term: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    /// An entry's page.
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<String>,
    /// A synonym's typology and the pages of its entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    typology_label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pages: Option<String>,
}

#[derive(Debug, Serialize)]
struct CommuneRow<'a> {
    name: &'a str,
    pages: String,
}

/// The targets of the headings that are not in the body.
#[derive(Debug, Clone, Copy, Serialize)]
struct FixedTargets {
    useful: usize,
    index: usize,
    names: usize,
    communes: usize,
}

/// What the layout reads as `data.json` for one volume: the guide's identity and fixed texts,
/// and this volume's own part.
#[derive(Serialize)]
struct Volume<'a> {
    #[serde(flatten)]
    guide: &'a Guide,
    part: Part,
    cover_only: bool,
    /// The number printed on the volume's first page.
    first_page: usize,
    /// The section a body volume starts inside of, for its first pages' running head.
    running_head: Option<String>,
    /// How many digits the guide's last page number can have: the contents' and index's
    /// number boxes are that wide, so a line's height never depends on its number.
    page_digits: usize,
    /// Whether this index or back volume opens the alphabetical index.
    index_first: bool,
    targets: FixedTargets,
    toc: Vec<TocLine>,
    blocks: Vec<&'a Block>,
    index_names: Vec<IndexRow<'a>>,
    index_communes: Vec<CommuneRow<'a>>,
}

impl<'a> Volume<'a> {
    fn new(guide: &'a Guide, part: Part, first_page: usize) -> Self {
        Volume {
            guide,
            part,
            cover_only: false,
            first_page,
            running_head: None,
            page_digits: page_digits(guide),
            index_first: true,
            targets: fixed_targets(guide),
            toc: Vec::new(),
            blocks: Vec::new(),
            index_names: Vec::new(),
            index_communes: Vec::new(),
        }
    }
}

/// The digits of an upper bound of the page count: no heading, entry or index line takes more
/// than a page, and the front, notes and back cover a few.
fn page_digits(guide: &Guide) -> usize {
    let bound = 32 + 2 * guide.blocks.len() + guide.index_names.len() + guide.index_communes.len();
    bound.to_string().len()
}

fn fixed_targets(guide: &Guide) -> FixedTargets {
    let last = guide
        .blocks
        .iter()
        .filter_map(|b| match b {
            Block::Heading { target, .. } => *target,
            Block::Entry(_) => None,
        })
        .max()
        .unwrap_or(0);
    FixedTargets {
        useful: 0,
        index: last + 1,
        names: last + 2,
        communes: last + 3,
    }
}

fn heading_body(text: &str, mark: Option<&str>) -> String {
    match mark {
        Some(mark) => format!("{mark} · {text}"),
        None => text.to_owned(),
    }
}

/// A body volume: a run of the guide's blocks, and the headings it repeats when it starts
/// inside a section.
#[derive(Debug)]
struct BodyPlan {
    blocks: std::ops::Range<usize>,
    running_head: Option<String>,
    /// The open headings repeated, « (suite) », before the first block.
    repeated: Vec<Block>,
}

/// Cuts the body into volumes of about `per_volume` entries, at a heading when one comes
/// before half as many again, between two entries otherwise.
fn plan_body(guide: &Guide, per_volume: usize) -> Vec<BodyPlan> {
    let blocks = &guide.blocks;
    let mut plans = Vec::new();
    let mut start = 0;
    let mut entries = 0;
    // The latest heading of each level, by index.
    let mut open: [Option<usize>; 3] = [None; 3];
    let plan_from = |start: usize, end: usize, open: [Option<usize>; 3]| {
        let first_level = match &blocks[start] {
            Block::Heading { level, .. } => *level as usize,
            Block::Entry(_) => 4,
        };
        let heading = |i: Option<usize>| match i.map(|i| &blocks[i]) {
            Some(Block::Heading {
                level,
                text,
                mark,
                anchor,
                ..
            }) => Some((*level, text.as_str(), mark.as_deref(), anchor.as_str())),
            _ => None,
        };
        let running_head = if first_level > 1 {
            heading(open[0]).map(|(_, text, mark, _)| heading_body(text, mark))
        } else {
            None
        };
        // PDF/UA wants each volume to open with a level-1 heading, and readers too.
        let repeated = (1..first_level.min(4))
            .filter_map(|level| heading(open[level - 1]))
            .map(|(level, text, mark, anchor)| Block::Heading {
                level,
                text: format!("{text} {}", guide.texts.continued),
                mark: mark.map(str::to_owned),
                anchor: anchor.to_owned(),
                target: None,
            })
            .collect();
        BodyPlan {
            blocks: start..end,
            running_head,
            repeated,
        }
    };
    let mut opened_at_start = open;
    for (i, block) in blocks.iter().enumerate() {
        let cut = match block {
            Block::Heading { .. } => entries >= per_volume,
            Block::Entry(_) => entries >= per_volume + per_volume / 2,
        };
        if cut && i > start {
            plans.push(plan_from(start, i, opened_at_start));
            start = i;
            entries = 0;
            opened_at_start = open;
        }
        match block {
            Block::Heading { level, .. } => {
                let level = (*level as usize).clamp(1, 3);
                open[level - 1] = Some(i);
                open[level..].iter_mut().for_each(|o| *o = None);
            }
            Block::Entry(_) => entries += 1,
        }
    }
    if start < blocks.len() {
        plans.push(plan_from(start, blocks.len(), opened_at_start));
    }
    plans
}

/// Page numbers as runs: « 3–5, 9 ».
fn page_runs(pages: &mut Vec<usize>) -> String {
    pages.sort_unstable();
    pages.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < pages.len() {
        let start = pages[i];
        while i + 1 < pages.len() && pages[i + 1] == pages[i] + 1 {
            i += 1;
        }
        out.push(if pages[i] == start {
            start.to_string()
        } else {
            format!("{start}–{}", pages[i])
        });
        i += 1;
    }
    out.join(", ")
}

/// A volume laid out and written.
struct Written {
    pdf: Vec<u8>,
    pages: usize,
    conformance: Conformance,
}

/// Where the laid-out volume put the headings the contents point to, and the entries.
#[derive(Default)]
struct Found {
    /// Page (in the whole guide) of each target.
    targets: FxHashMap<usize, usize>,
    entries: FxHashMap<String, usize>,
}

fn label(name: &str) -> Label {
    Label::new(PicoStr::intern(name)).expect("a label is never empty")
}

fn find(document: &PagedDocument, first_page: usize, targets: &[usize], found: &mut Found) {
    let introspector = document.introspector();
    let page = |content: &Content| {
        content
            .location()
            .and_then(|l| introspector.position(l))
            .map(|p| p.page.get() + first_page - 1)
    };
    for &target in targets {
        if let Ok(heading) = introspector.query_label(label(&format!("t{target}"))) {
            if let Some(page) = page(heading) {
                found.targets.insert(target, page);
            }
        }
    }
    for entry in introspector.query(&Selector::Label(label("entry"))).iter() {
        if let (Ok(Value::Str(id)), Some(page)) = (entry.get_by_name("value"), page(entry)) {
            found.entries.insert(id.as_str().to_owned(), page);
        }
    }
}

/// Lays out one volume and writes it as a tagged PDF (PDF/UA-1 when `ua` and it validates),
/// noting where its targets and entries fell.
fn volume(
    volume: &Volume<'_>,
    logo: Option<&Logo>,
    qr: &Bytes,
    ident: &str,
    ua: bool,
    targets: &[usize],
    found: &mut Found,
) -> Result<Written, RenderError> {
    let world = world(volume, logo, qr)?;
    let document = compile(&world);
    // Typst memoizes every layout step for the next compilation, which a guide never reuses:
    // gigabytes for a large guide, released before the PDF is written.
    release_memory();
    let document = document?;
    find(&document, volume.first_page, targets, found);
    let pages = document.pages().len();
    let written = write_pdf(&document, ident, ua);
    drop(document);
    release_memory();
    let (pdf, conformance) = written?;
    Ok(Written {
        pdf,
        pages,
        conformance,
    })
}

/// Lays out the whole guide and writes it as one tagged PDF, PDF/UA-1 when every volume
/// validates.
///
/// With `PROXIMITES_TYPST_TIMING=FILE`, Typst's timing events (each layout iteration, the PDF
/// export…) are written to FILE as Chrome trace JSON.
pub fn pdf(
    guide: &Guide,
    logo: Option<&Logo>,
    ident: &str,
    progress: &dyn Fn(f32),
) -> Result<Pdf, RenderError> {
    // Fewer entries a volume use less memory and join more volumes (the tests use 4).
    let per_volume = std::env::var("PROXIMITES_GUIDE_VOLUME_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(VOLUME_ENTRIES);
    pdf_in_volumes(guide, logo, ident, per_volume, progress)
}

/// [`pdf`] with body volumes of `per_volume` entries; `progress` hears the share of the volumes
/// laid out, from 0 to 1.
fn pdf_in_volumes<'a>(
    guide: &'a Guide,
    logo: Option<&Logo>,
    ident: &str,
    per_volume: usize,
    progress: &dyn Fn(f32),
) -> Result<Pdf, RenderError> {
    let started = std::time::Instant::now();
    let timing = std::env::var_os("PROXIMITES_TYPST_TIMING");
    if timing.is_some() {
        typst_timing::enable();
    }
    let qr = Bytes::new(guide.qr_pixels.clone());
    let no_codes = Bytes::new(Vec::new());
    let fixed = fixed_targets(guide);
    let toc_depth = if guide.group == "theme" { 2 } else { 1 };
    let mut toc = vec![(1, guide.texts.useful_numbers.to_owned(), fixed.useful)];
    for block in &guide.blocks {
        if let Block::Heading {
            level,
            text,
            mark,
            target: Some(target),
            ..
        } = block
        {
            if *level <= toc_depth {
                toc.push((*level, heading_body(text, mark.as_deref()), *target));
            }
        }
    }
    toc.push((1, guide.texts.index.to_owned(), fixed.index));
    if toc_depth >= 2 {
        toc.push((2, guide.texts.index_names.to_owned(), fixed.names));
        toc.push((2, guide.texts.index_communes.to_owned(), fixed.communes));
    }
    let front = |found: Option<&Found>| {
        let mut front = Volume::new(guide, Part::Front, 1);
        front.toc = toc
            .iter()
            .map(|(level, body, target)| TocLine {
                level: *level,
                body: body.clone(),
                target: *target,
                page: found.and_then(|f| f.targets.get(target).copied()),
            })
            .collect();
        front
    };
    // The front's length first: its contents' lines keep their height whatever their numbers
    // (their number boxes are as wide as the longest number can be), so the front laid out
    // again with its numbers has that length; should it not, the rest follows it once more.
    let mut in_front = Found::default();
    let mut front_pages = volume(
        &front(None),
        logo,
        &no_codes,
        ident,
        true,
        &[fixed.useful],
        &mut in_front,
    )?
    .pages;
    // Everything after the front: the body volumes, the index volumes, the back.
    let rest = |front_pages: usize| -> Result<(Vec<Written>, Found, usize), RenderError> {
        // The useful numbers are in the front, where the first layout found them.
        let mut found = Found {
            targets: in_front.targets.clone(),
            entries: FxHashMap::default(),
        };
        let mut volumes = Vec::new();
        let mut next_page = front_pages + 1;
        let plans = plan_body(guide, per_volume);
        let bodies_count = plans.len();
        let index_parts = guide
            .index_names
            .len()
            .div_ceil((per_volume * INDEX_LINES_PER_ENTRY).max(1))
            .max(1);
        // The front twice, the body volumes, the index volumes with the back.
        let steps = (bodies_count + 2 + index_parts) as f32;
        for (done, plan) in plans.into_iter().enumerate() {
            let mut body = Volume::new(guide, Part::Body, next_page);
            body.running_head = plan.running_head.clone();
            body.blocks = plan
                .repeated
                .iter()
                .chain(&guide.blocks[plan.blocks.clone()])
                .collect();
            let targets: Vec<usize> = body
                .blocks
                .iter()
                .filter_map(|b| match b {
                    Block::Heading { target, .. } => *target,
                    Block::Entry(_) => None,
                })
                .collect();
            let written = volume(&body, logo, &qr, ident, true, &targets, &mut found)?;
            tracing::debug!(
                first_page = next_page,
                pages = written.pages,
                ms = started.elapsed().as_millis() as u64,
                "guide volume laid out"
            );
            next_page += written.pages;
            volumes.push(written);
            progress((done + 2) as f32 / steps);
        }

        // The indexes, every page now known.
        let mut typology_pages: FxHashMap<&str, Vec<usize>> = FxHashMap::default();
        let mut commune_pages: FxHashMap<&str, Vec<usize>> = FxHashMap::default();
        for block in &guide.blocks {
            if let Block::Entry(entry) = block {
                if let Some(&page) = found.entries.get(&entry.id) {
                    typology_pages
                        .entry(&entry.typology_code)
                        .or_default()
                        .push(page);
                    commune_pages
                        .entry(&entry.insee_code)
                        .or_default()
                        .push(page);
                }
            }
        }
        // The alphabetical index in volumes too, the last one with the rest of the back.
        let entry_pages = std::mem::take(&mut found.entries);
        let index_row = |line: &'a IndexLine| IndexRow {
            letter: &line.letter,
            term: &line.term,
            detail: line.detail.as_deref(),
            page: line
                .id
                .as_ref()
                .map(|id| entry_pages.get(id).map_or(String::new(), usize::to_string)),
            typology_label: line.typology_label.as_deref(),
            pages: line.typology.as_ref().map(|code| {
                page_runs(
                    &mut typology_pages
                        .get(code.as_str())
                        .cloned()
                        .unwrap_or_default(),
                )
            }),
        };
        let lines = guide.index_names.len();
        let per_index = (per_volume * INDEX_LINES_PER_ENTRY).max(1);
        let parts = lines.div_ceil(per_index).max(1);
        for part in 0..parts {
            let last = part + 1 == parts;
            let mut index = Volume::new(
                guide,
                if last { Part::Back } else { Part::Index },
                next_page,
            );
            index.index_first = part == 0;
            if part > 0 {
                index.running_head = Some(guide.texts.index.to_owned());
            }
            let range = part * per_index..((part + 1) * per_index).min(lines);
            index.index_names = guide.index_names[range].iter().map(index_row).collect();
            let mut targets = Vec::new();
            if part == 0 {
                targets.extend([fixed.index, fixed.names]);
            }
            if last {
                targets.push(fixed.communes);
                index.index_communes = guide
                    .index_communes
                    .iter()
                    .map(|c| CommuneRow {
                        name: &c.name,
                        pages: page_runs(
                            &mut commune_pages
                                .get(c.code.as_str())
                                .cloned()
                                .unwrap_or_default(),
                        ),
                    })
                    .collect();
            }
            let written = volume(&index, logo, &no_codes, ident, true, &targets, &mut found)?;
            next_page += written.pages;
            volumes.push(written);
            progress((bodies_count + 2 + part) as f32 / steps);
        }
        Ok((volumes, found, next_page))
    };
    let mut attempts = 0;
    let (rest, front, next_page, refused) = loop {
        let (rest, mut found, next_page) = rest(front_pages)?;
        // The front again with its page numbers, claiming PDF/UA only if every volume holds it.
        let refused = rest.iter().find_map(|w| match &w.conformance {
            Conformance::Tagged { ua_refused } => Some(ua_refused.clone()),
            Conformance::PdfUa1 => None,
        });
        let front = volume(
            &front(Some(&found)),
            logo,
            &no_codes,
            ident,
            refused.is_none(),
            &[],
            &mut found,
        )?;
        if front.pages == front_pages {
            break (rest, front, next_page, refused);
        }
        attempts += 1;
        if attempts == 3 {
            return Err(RenderError::Layout(format!(
                "le sommaire ne trouve pas sa longueur ({front_pages} → {} pages)",
                front.pages
            )));
        }
        tracing::debug!(
            from = front_pages,
            to = front.pages,
            "contents' length changed, laid out again"
        );
        front_pages = front.pages;
    };
    let conformance = match (refused, &front.conformance) {
        (Some(ua_refused), _) => Conformance::Tagged { ua_refused },
        (None, conformance) => conformance.clone(),
    };
    let bookmarks: Vec<join::Bookmark> = toc_bookmarks(guide, fixed);
    let mut volumes = vec![front.pdf];
    volumes.extend(rest.into_iter().map(|w| w.pdf));
    let pages = next_page - 1;
    let bytes = join::join(&volumes, &bookmarks).map_err(RenderError::Layout)?;
    tracing::debug!(
        pages,
        volumes = volumes.len(),
        ms = started.elapsed().as_millis() as u64,
        "guide written"
    );
    if let Some(path) = timing {
        let file = std::fs::File::create(&path).map_err(|e| RenderError::Layout(e.to_string()))?;
        typst_timing::export_json(std::io::BufWriter::new(file), |_| (String::new(), 0))
            .map_err(RenderError::Layout)?;
        typst_timing::disable();
    }
    Ok(Pdf {
        bytes,
        pages,
        conformance,
    })
}

/// The PDF's bookmarks: the useful numbers, the sections of levels 1 and 2, the indexes.
fn toc_bookmarks(guide: &Guide, fixed: FixedTargets) -> Vec<join::Bookmark> {
    let mark = |level: u8, title: String, target: usize| join::Bookmark {
        level,
        title,
        destination: format!("t{target}"),
    };
    let mut bookmarks = vec![mark(1, guide.texts.useful_numbers.to_owned(), fixed.useful)];
    for block in &guide.blocks {
        if let Block::Heading {
            level,
            text,
            mark: theme,
            target: Some(target),
            ..
        } = block
        {
            bookmarks.push(mark(*level, heading_body(text, theme.as_deref()), *target));
        }
    }
    bookmarks.push(mark(1, guide.texts.index.to_owned(), fixed.index));
    bookmarks.push(mark(2, guide.texts.index_names.to_owned(), fixed.names));
    bookmarks.push(mark(
        2,
        guide.texts.index_communes.to_owned(),
        fixed.communes,
    ));
    bookmarks
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

fn write_pdf(
    document: &PagedDocument,
    ident: &str,
    ua: bool,
) -> Result<(Vec<u8>, Conformance), RenderError> {
    let options = |standards| typst_pdf::PdfOptions {
        ident: Smart::Custom(ident.to_owned()),
        standards,
        tagged: true,
        ..Default::default()
    };
    if !ua {
        let bytes = typst_pdf::pdf(document, &options(Default::default()))
            .map_err(|e| RenderError::Layout(diagnostics(&e)))?;
        return Ok((
            bytes,
            Conformance::Tagged {
                ua_refused: "un autre volume / another volume".into(),
            },
        ));
    }
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
    let mut front = Volume::new(guide, Part::Front, 1);
    front.cover_only = true;
    let world = world(&front, logo, &Bytes::new(Vec::new()))?;
    let document = compile(&world)?;
    let page = document
        .pages()
        .first()
        .ok_or_else(|| RenderError::Layout("couverture vide".into()))?;
    let svg = typst_svg::svg(page, &typst_svg::SvgOptions::default());
    drop(document);
    // A preview's memoized layouts are of no use to the next one (another logo, other
    // words): kept, they grew by hundreds of megabytes a preview until a guide was made.
    release_memory();
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::super::content::{texts, Entry};
    use super::*;
    use crate::search::hours::Lang;

    fn heading(level: u8, text: &str) -> Block {
        Block::Heading {
            level,
            text: text.into(),
            mark: None,
            anchor: text.into(),
            target: (level <= 2).then_some(level as usize),
        }
    }

    fn entry(name: &str) -> Block {
        Block::Entry(Box::new(Entry {
            id: name.into(),
            name: name.into(),
            typology: String::new(),
            typology_code: String::new(),
            insee_code: String::new(),
            commune: String::new(),
            address: Vec::new(),
            phones: Vec::new(),
            email: None,
            website: None,
            hours: Vec::new(),
            holidays_closed: false,
            access: String::new(),
            verified: String::new(),
            url: String::new(),
            qr: None,
        }))
    }

    fn guide(blocks: Vec<Block>) -> Guide {
        Guide {
            lang: "fr",
            format: "a5",
            group: "theme",
            title: String::new(),
            territory: String::new(),
            publisher: String::new(),
            date: String::new(),
            date_iso: "2026-11-24".into(),
            accent: String::new(),
            accent_text: String::new(),
            logo: None,
            communes: Vec::new(),
            entry_count: 0,
            themes: Vec::new(),
            online_url: String::new(),
            online_qr: String::new(),
            emergency: Vec::new(),
            blocks,
            index_names: Vec::new(),
            index_communes: Vec::new(),
            texts: texts(Lang::Fr),
            qr_pixels: Vec::new(),
        }
    }

    fn texts_of(blocks: &[Block]) -> Vec<String> {
        blocks
            .iter()
            .map(|b| match b {
                Block::Heading { level, text, .. } => format!("h{level} {text}"),
                Block::Entry(e) => e.name.clone(),
            })
            .collect()
    }

    #[test]
    fn volumes_cut_at_headings_and_repeat_the_open_ones() {
        let g = guide(vec![
            heading(1, "Santé"),
            heading(2, "Pharmacie"),
            heading(3, "Riom"),
            entry("a"),
            entry("b"),
            heading(3, "Volvic"),
            entry("c"),
            entry("d"),
            entry("e"),
            entry("f"),
            heading(1, "Social"),
            entry("g"),
        ]);
        let plans = plan_body(&g, 2);
        let ranges: Vec<_> = plans.iter().map(|p| p.blocks.clone()).collect();
        // At the heading after two entries; between entries once three have passed.
        assert_eq!(ranges, vec![0..5, 5..9, 9..12]);
        assert_eq!(plans[0].running_head, None);
        assert!(plans[0].repeated.is_empty());
        // Starting at a level-3 heading: the headings above come again, « (suite) ».
        assert_eq!(plans[1].running_head.as_deref(), Some("Santé"));
        assert_eq!(
            texts_of(&plans[1].repeated),
            vec!["h1 Santé (suite)", "h2 Pharmacie (suite)"]
        );
        // Starting between entries: levels 1 to 3 come again, none a target.
        assert_eq!(
            texts_of(&plans[2].repeated),
            vec![
                "h1 Santé (suite)",
                "h2 Pharmacie (suite)",
                "h3 Volvic (suite)"
            ]
        );
        assert!(plans[2]
            .repeated
            .iter()
            .all(|b| matches!(b, Block::Heading { target: None, .. })));
        // Every block once, in order.
        assert_eq!(plans.last().unwrap().blocks.end, g.blocks.len());
        assert!(plans
            .windows(2)
            .all(|w| w[0].blocks.end == w[1].blocks.start));
        // A small guide is one volume.
        assert_eq!(plan_body(&g, VOLUME_ENTRIES).len(), 1);
    }

    #[test]
    fn page_numbers_read_as_runs() {
        assert_eq!(page_runs(&mut vec![9, 3, 4, 5, 5, 12, 11]), "3–5, 9, 11–12");
        assert_eq!(page_runs(&mut vec![7]), "7");
        assert_eq!(page_runs(&mut Vec::new()), "");
    }
}
