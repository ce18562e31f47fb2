//! The persisted full-text index of published entries (tantivy): French stemming, accent and
//! case folding, as-you-type prefixes of the last word and one typo forgiven in long words.
//!
//! Derived from the database, never the reference: `sync_from_db` rebuilds it whole, `upsert`
//! and `remove` follow single writes. The directory holds a `proximites-text-version` file; an
//! index written with other fields or analyzers ([`SCHEMA_VERSION`]) is deleted and recreated
//! empty on open, to be filled again from the database.
//!
//! Fields:
//! - `id`: the entry's [`ServiceId`], raw, stored and fast (read back for every hit);
//! - `name`, `commune`, `address` (street, postcode, city), `description`: analysed by "fr"
//!   (words, lower case, accents folded, French stop words removed, Snowball French stemmer,
//!   each word's stem remembered by the analyser);
//! - `prefixes`: every prefix of 2 to 15 characters of each folded word of the name and
//!   commune ("fr_prefix"), for the word being typed;
//! - `words`: the folded, unstemmed words of the name and commune ("fr_raw"), for
//!   typo-tolerant (Levenshtein 1) matching;
//! - the typology's French and English labels and synonyms are not indexed with each entry:
//!   they are looked up in memory ([`TypologyWords`]) and matched by the entry's `t:` token;
//! - `place`: raw tokens saying where the entry is and what it is, so that a query's place,
//!   territory and typologies narrow the word matches inside the index rather than after it:
//!   `t:TYPOLOGY`, `c:INSEE`, `e:SIREN`, `d:DEPARTEMENT`, `r:REGION`, and one grid cell per
//!   level (`gLEVEL:X:Y`, squares of 0.01° to 2.56° of longitude and latitude);
//! - `key_hi`, `key_lo`: the id's two halves as numbers (fast fields), read for every hit
//!   without a dictionary look-up.
//!
//! A query matches an entry when each of its words does (stop words aside): the word stemmed in
//! any analysed field, or, for the last word, as a prefix, or, for a word of 5 characters or
//! more found nowhere as it is typed, within one edit of a word. Scores are BM25, name matches
//! weighted ×3; the place tokens only filter, but for the `t:` token of a typology whose words
//! a query word matches, which scores as that word would.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rustc_hash::{FxHashMap, FxHashSet};

use tantivy::collector::TopDocs;
use tantivy::columnar::{Column, StrColumn};
use tantivy::directory::MmapDirectory;
use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, Query, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, NgramTokenizer, RemoveLongFilter, SimpleTokenizer,
    StopWordFilter, TextAnalyzer, Token, TokenFilter, TokenStream, Tokenizer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::spatial::IdKey;
use crate::db::Store;
use crate::import::Reference;
use crate::services::{Service, ServiceId};
use crate::spatial::{BBox, LonLat};
use crate::taxonomy::Taxonomy;
use crate::territory::{InseeCode, Locator};

/// The version of the fields and analyzers: bump it with any change to them, and indexes written
/// before are rebuilt.
pub const SCHEMA_VERSION: u32 = 5;

/// The file of the index directory holding the [`SCHEMA_VERSION`] it was written with.
pub const VERSION_FILE: &str = "proximites-text-version";

/// The memory of the one writer, split between its threads: small for single writes, large for
/// rebuilds, where fewer, larger segments mean fewer merges.
const WRITER_MEMORY_BYTES: usize = 50_000_000;
const REBUILD_MEMORY_BYTES: usize = 800_000_000;

/// Sizes of the grid cells of the `place` field, in degrees, finest first (level 0).
const CELL_DEGREES: [f64; 5] = [0.01, 0.04, 0.16, 0.64, 2.56];

/// At most this many cells stand for a query's circle: the finest level that covers it with no
/// more is taken; a circle larger than that is not narrowed by cells.
const MAX_QUERY_CELLS: i64 = 25;

/// Words longer than this (in bytes) are not indexed by "fr".
const MAX_WORD_BYTES: usize = 40;

/// Prefix lengths indexed for the word being typed, in characters.
const MIN_PREFIX: usize = 2;
const MAX_PREFIX: usize = 15;

/// Query words this long or longer also match words one edit away.
const FUZZY_MIN_CHARS: usize = 5;

/// Weight of name matches against the other fields.
const NAME_BOOST: f32 = 3.0;

/// Weight of a typo match (a constant 1 before the boost) against BM25 matches.
const FUZZY_BOOST: f32 = 0.5;

/// The analysed fields of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub id: Field,
    pub key_hi: Field,
    pub key_lo: Field,
    pub place: Field,
    pub name: Field,
    pub commune: Field,
    pub address: Field,
    pub description: Field,
    pub prefixes: Field,
    pub words: Field,
}

impl Fields {
    /// The stemmed text fields with their weight.
    fn stemmed(&self) -> [(Field, f32); 4] {
        [
            (self.name, NAME_BOOST),
            (self.commune, 1.0),
            (self.address, 1.0),
            (self.description, 1.0),
        ]
    }
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let analysed = |tokenizer: &str, record: IndexRecordOption| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(tokenizer)
                .set_index_option(record),
        )
    };
    let fr = analysed("fr", IndexRecordOption::WithFreqs);
    let fields = Fields {
        id: builder.add_text_field("id", STRING | STORED | FAST),
        key_hi: builder.add_u64_field("key_hi", FAST),
        key_lo: builder.add_u64_field("key_lo", FAST),
        place: builder.add_text_field("place", STRING),
        name: builder.add_text_field("name", fr.clone()),
        commune: builder.add_text_field("commune", fr.clone()),
        address: builder.add_text_field("address", fr.clone()),
        description: builder.add_text_field("description", fr),
        prefixes: builder.add_text_field(
            "prefixes",
            analysed("fr_prefix", IndexRecordOption::WithFreqs),
        ),
        words: builder.add_text_field("words", analysed("fr_raw", IndexRecordOption::Basic)),
    };
    (builder.build(), fields)
}

/// "fr": words, lower case, accents folded, French stop words removed, French stems.
fn fr_analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .dynamic();
    let builder = match StopWordFilter::new(Language::French) {
        Some(stop_words) => builder.filter_dynamic(stop_words),
        None => builder,
    };
    builder.filter_dynamic(MemoStemmer).build()
}

/// Words stemmed remembered at most by each analyser (a writer thread's): the distinct words of
/// the names and addresses of a national directory, a few hundred thousand.
const STEMS_MAX: usize = 1_000_000;

/// The French Snowball stemmer (the one tantivy's `Stemmer` filter runs) with a memory of the
/// words it stemmed: names and addresses repeat the same words (rue, mairie, a commune's name)
/// millions of times in a national build, and stemming was a sixth of its time.
#[derive(Clone)]
struct MemoStemmer;

impl TokenFilter for MemoStemmer {
    type Tokenizer<T: Tokenizer> = MemoStemmerFilter<T>;

    fn transform<T: Tokenizer>(self, tokenizer: T) -> MemoStemmerFilter<T> {
        MemoStemmerFilter {
            inner: tokenizer,
            stems: FxHashMap::default(),
        }
    }
}

#[derive(Clone)]
struct MemoStemmerFilter<T> {
    inner: T,
    stems: FxHashMap<String, String>,
}

impl<T: Tokenizer> Tokenizer for MemoStemmerFilter<T> {
    type TokenStream<'a> = MemoStemmerStream<'a, T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        MemoStemmerStream {
            tail: self.inner.token_stream(text),
            stems: &mut self.stems,
            stemmer: rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::French),
        }
    }
}

struct MemoStemmerStream<'a, T> {
    tail: T,
    stems: &'a mut FxHashMap<String, String>,
    stemmer: rust_stemmers::Stemmer,
}

impl<T: TokenStream> TokenStream for MemoStemmerStream<'_, T> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        let token = self.tail.token_mut();
        if let Some(stem) = self.stems.get(&token.text) {
            token.text.clear();
            token.text.push_str(stem);
            return true;
        }
        let stem = self.stemmer.stem(&token.text).into_owned();
        if self.stems.len() >= STEMS_MAX {
            self.stems.clear();
        }
        let word = std::mem::replace(&mut token.text, stem.clone());
        self.stems.insert(word, stem);
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

/// "fr_raw": words, lower case, accents folded; nothing removed, nothing stemmed.
fn raw_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// "fr_prefix": the prefixes of one value, fed one folded word at a time.
fn prefix_analyzer() -> anyhow::Result<TextAnalyzer> {
    Ok(
        TextAnalyzer::builder(NgramTokenizer::prefix_only(MIN_PREFIX, MAX_PREFIX)?)
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .build(),
    )
}

fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// The first `n` characters of `word`.
fn truncate_chars(word: &str, n: usize) -> &str {
    word.char_indices().nth(n).map_or(word, |(i, _)| &word[..i])
}

/// What the index holds of an entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TextDoc {
    pub id: ServiceId,
    pub name: String,
    /// The name of the entry's commune.
    pub commune: String,
    /// Street, postcode and city.
    pub address: String,
    pub description: String,
    /// The typology code.
    pub typology: String,
    pub location: LonLat,
    /// The entry's commune and the territories holding it, as `place` tokens (`c:63113`…).
    pub territories: Vec<String>,
}

/// The `place` token of a territory: `kind` is `c` (commune), `e` (EPCI), `d` (département) or
/// `r` (région).
pub fn territory_token(kind: char, code: &str) -> String {
    format!("{kind}:{code}")
}

fn typology_token(code: &str) -> String {
    format!("t:{code}")
}

/// The `place` token of the cell of `level` holding `p`.
fn cell_token(level: usize, p: LonLat) -> String {
    let size = CELL_DEGREES[level];
    format!(
        "g{level}:{}:{}",
        (p.lon / size).floor() as i64,
        (p.lat / size).floor() as i64
    )
}

/// The position of `p` on a Z-order (Morton) curve over the globe, 2^20 steps a side (about
/// 40 m): points close on the curve are close on the ground.
fn z_order(p: LonLat) -> u64 {
    let scale = |value: f64, low: f64, span: f64| -> u64 {
        (((value - low) / span).clamp(0.0, 1.0) * f64::from((1u32 << 20) - 1)) as u64
    };
    let spread = |mut v: u64| -> u64 {
        // Puts a zero bit between each bit of the 20-bit value.
        v &= 0xF_FFFF;
        v = (v | (v << 16)) & 0x0000_FFFF_0000_FFFF;
        v = (v | (v << 8)) & 0x00FF_00FF_00FF_00FF;
        v = (v | (v << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
        v = (v | (v << 2)) & 0x3333_3333_3333_3333;
        (v | (v << 1)) & 0x5555_5555_5555_5555
    };
    spread(scale(p.lon, -180.0, 360.0)) | (spread(scale(p.lat, -90.0, 180.0)) << 1)
}

/// The cells of the finest level that cover the circle of `radius_m` around `center` in at most
/// [`MAX_QUERY_CELLS`] cells; `None` when even the coarsest needs more.
fn cells_covering(center: LonLat, radius_m: f64) -> Option<Vec<String>> {
    // A little wider than the circle: the box's metres per degree are rounded.
    let bbox = BBox::new(center.lon, center.lat, center.lon, center.lat)
        .expanded_m(radius_m * 1.01 + 10.0);
    for (level, size) in CELL_DEGREES.iter().enumerate() {
        let (x0, x1) = (
            (bbox.min_lon / size).floor() as i64,
            (bbox.max_lon / size).floor() as i64,
        );
        let (y0, y1) = (
            (bbox.min_lat / size).floor() as i64,
            (bbox.max_lat / size).floor() as i64,
        );
        if (x1 - x0 + 1) * (y1 - y0 + 1) <= MAX_QUERY_CELLS {
            return Some(
                (x0..=x1)
                    .flat_map(|x| (y0..=y1).map(move |y| format!("g{level}:{x}:{y}")))
                    .collect(),
            );
        }
    }
    None
}

/// What narrows a text query besides its words, matched on the `place` tokens.
#[derive(Debug, Clone, Default)]
pub struct TextFilter {
    /// Only entries within this many metres of the point (the cells around it, then the exact
    /// distance, which the caller checks).
    pub circle: Option<(LonLat, f64)>,
    /// Only entries of these typologies.
    pub typologies: Option<Vec<String>>,
    /// Only entries in this territory (a token of [`territory_token`]).
    pub territory: Option<String>,
}

/// The labels and synonyms a typology is found under (its code when unknown).
fn typology_labels(taxonomy: &Taxonomy, code: &str) -> String {
    match taxonomy.typology(code) {
        Some(t) => std::iter::once(&t.label_fr)
            .chain([&t.label_en])
            .chain(&t.synonyms)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ; "),
        None => code.to_owned(),
    }
}

#[allow(clippy::too_many_arguments)]
fn make_doc(
    id: ServiceId,
    name: &str,
    typology: &str,
    insee_code: &InseeCode,
    location: LonLat,
    address: [Option<&str>; 3],
    description: Option<&str>,
    locator: &Locator,
) -> TextDoc {
    let commune = locator.commune(insee_code);
    let mut territories = vec![territory_token('c', insee_code.as_str())];
    if let Some(c) = commune {
        territories.push(territory_token('d', &c.departement_code));
        territories.push(territory_token('r', &c.region_code));
        if let Some(siren) = &c.epci_siren {
            territories.push(territory_token('e', siren));
        }
    }
    TextDoc {
        id,
        name: name.to_owned(),
        typology: typology.to_owned(),
        location,
        territories,
        commune: commune.map(|c| c.name.clone()).unwrap_or_default(),
        address: address
            .into_iter()
            .flatten()
            .filter(|part| !part.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        description: description.unwrap_or_default().to_owned(),
    }
}

/// The index document of an entry.
pub fn doc_for(service: &Service, locator: &Locator) -> TextDoc {
    let c = &service.content;
    make_doc(
        service.id.clone(),
        &c.name,
        &c.typology,
        &c.insee_code,
        c.location,
        [
            c.street.as_deref(),
            c.postcode.as_deref(),
            c.city.as_deref(),
        ],
        c.description.as_deref(),
        locator,
    )
}

/// The analyser a writer makes documents with.
pub struct Analysis {
    raw: TextAnalyzer,
}

impl Analysis {
    fn new(index: &TextIndex) -> anyhow::Result<Self> {
        Ok(Self {
            raw: index.analyzer("fr_raw")?,
        })
    }
}

/// The full-text index. Cheap to clone: every clone shares the same index.
///
/// The directory's writer (tantivy locks it against a second, in any process) is held by the
/// one applier of the change log of the process that serves ([`TextWriter`]); whole builds
/// (`rebuild`, `check --repair`) take one of their own, in turns on `writing`.
#[derive(Clone)]
pub struct TextIndex {
    index: Index,
    reader: IndexReader,
    writing: Arc<Mutex<()>>,
    fields: Fields,
    /// The changes handed to the writer since its last commit, searchable already (see
    /// [`Recent`]).
    recent: Arc<Mutex<Recent>>,
    typology_words: Arc<TypologyWords>,
}

/// The words of each typology's labels and synonyms, in memory rather than indexed with each
/// of its entries (about 28 words a typology against 4 in an entry's name: most of the tokens of
/// a national index). A query word that is a stem of a typology's words, the beginning of one
/// (the word being typed), or one edit away from one (a typo) finds the typology's entries
/// through their `t:` token.
#[derive(Debug, Default)]
struct TypologyWords {
    /// Folded words and the typology each is a word of, in order.
    words: Vec<(String, String)>,
    /// The typologies each "fr" stem of their words belongs to.
    stems: FxHashMap<String, BTreeSet<String>>,
}

impl TypologyWords {
    fn new(taxonomy: &Taxonomy) -> Self {
        let (mut raw, mut fr) = (raw_analyzer(), fr_analyzer());
        let mut words = Vec::new();
        let mut stems: FxHashMap<String, BTreeSet<String>> = FxHashMap::default();
        for t in &taxonomy.typologies {
            let labels = typology_labels(taxonomy, &t.code);
            words.extend(
                tokens(&mut raw, &labels)
                    .into_iter()
                    .map(|word| (word, t.code.clone())),
            );
            for stem in tokens(&mut fr, &labels) {
                stems.entry(stem).or_default().insert(t.code.clone());
            }
        }
        words.sort_unstable();
        words.dedup();
        Self { words, stems }
    }

    /// The typologies one of whose words has the stem `stem`.
    fn with_stem(&self, stem: &str) -> BTreeSet<&str> {
        self.stems
            .get(stem)
            .map(|codes| codes.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The typologies one of whose words starts with `prefix`, each once.
    fn starting_with(&self, prefix: &str) -> BTreeSet<&str> {
        let first = self
            .words
            .partition_point(|(word, _)| word.as_str() < prefix);
        self.words[first..]
            .iter()
            .take_while(|(word, _)| word.starts_with(prefix))
            .map(|(_, code)| code.as_str())
            .collect()
    }

    /// The typologies one of whose words is `word` or one edit from it (a letter changed,
    /// added, removed, or two swapped), as the index's typo tolerance counts.
    fn within_one_edit(&self, word: &str) -> BTreeSet<&str> {
        self.words
            .iter()
            .filter(|(known, _)| strsim::osa_distance(known, word) <= 1)
            .map(|(_, code)| code.as_str())
            .collect()
    }
}

/// The near-real-time side of the index: a commit to disk costs several file syncs, so the one
/// applier of the change log commits about once a second, and meanwhile also writes the
/// entries it changed into a small index in memory. Queries hide the committed documents of
/// those entries and ask the small index instead, committing it first when it changed since
/// (a commit in memory, paid by the first query that needs it, not by the write).
#[derive(Default)]
struct Recent {
    /// Every entry changed (or removed) since the last commit to disk.
    changed: Arc<FxHashSet<IdKey>>,
    /// The small index's writer and reader, made at the first change.
    memory: Option<(IndexWriter, IndexReader)>,
    /// Whether the small index holds changes its reader does not show yet.
    dirty: bool,
}

/// The memory of the small index's one writer thread (tantivy's minimum).
const MEMORY_WRITER_BYTES: usize = 15_000_000;

impl Recent {
    /// The small index, made when missing.
    fn memory(&mut self) -> anyhow::Result<&mut IndexWriter> {
        if self.memory.is_none() {
            let index = Index::create_in_ram(schema().0);
            register_analyzers(&index)?;
            let writer = index.writer_with_num_threads(1, MEMORY_WRITER_BYTES)?;
            let reader = index
                .reader_builder()
                .reload_policy(ReloadPolicy::Manual)
                .try_into()?;
            self.memory = Some((writer, reader));
        }
        Ok(&mut self.memory.as_mut().expect("made above").0)
    }

    /// The changed entries and a searcher of what they say now (`None` when nothing changed
    /// since the last commit to disk).
    fn view(&mut self) -> anyhow::Result<Option<(Arc<FxHashSet<IdKey>>, tantivy::Searcher)>> {
        let Some((writer, reader)) = self.memory.as_mut() else {
            return Ok(None);
        };
        if self.dirty {
            writer.commit()?;
            reader.reload()?;
            self.dirty = false;
        }
        Ok(Some((self.changed.clone(), reader.searcher())))
    }
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex")
            .field("docs", &self.doc_count())
            .finish_non_exhaustive()
    }
}

/// Registers the analyzers the schema names.
fn register_analyzers(index: &Index) -> anyhow::Result<()> {
    index.tokenizers().register("fr", fr_analyzer());
    index.tokenizers().register("fr_raw", raw_analyzer());
    index.tokenizers().register("fr_prefix", prefix_analyzer()?);
    Ok(())
}

/// Whether `dir` holds a text index of another version (or a half-created one) to delete; an
/// error when it holds files that are not an index at all, which are never deleted.
fn stale(dir: &Path) -> anyhow::Result<bool> {
    let version = std::fs::read_to_string(dir.join(VERSION_FILE)).ok();
    if version.as_deref().map(str::trim) == Some(SCHEMA_VERSION.to_string().as_str()) {
        return Ok(false);
    }
    if version.is_some() || dir.join("meta.json").exists() {
        return Ok(true);
    }
    if std::fs::read_dir(dir)?.next().is_some() {
        anyhow::bail!(
            "{} : ce répertoire n'est pas un index texte de Proximités (ni meta.json ni {VERSION_FILE}) ; il n'est pas effacé",
            dir.display()
        );
    }
    Ok(false)
}

impl TextIndex {
    /// Opens the index in `dir`, creating the directory and an empty index when missing, and
    /// recreating it empty when it was written with another [`SCHEMA_VERSION`]; its queries
    /// find the typologies of `taxonomy` by the beginning of their words.
    pub fn open_or_create(dir: &Path, taxonomy: &Taxonomy) -> anyhow::Result<TextIndex> {
        Self::open(dir, TypologyWords::new(taxonomy))
    }

    /// The same, for what the index holds (its entries, its position) rather than for queries,
    /// which do not find typologies by the beginning of their words.
    pub fn open_to_inspect(dir: &Path) -> anyhow::Result<TextIndex> {
        Self::open(dir, TypologyWords::default())
    }

    fn open(dir: &Path, typology_words: TypologyWords) -> anyhow::Result<TextIndex> {
        let context = |what: &str| format!("index texte {} : {what}", dir.display());
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("{} : {e}", context("création")))?;
        if stale(dir)? {
            tracing::info!(dir = %dir.display(), "text index of another version: rebuilt empty");
            std::fs::remove_dir_all(dir)
                .and_then(|()| std::fs::create_dir_all(dir))
                .map_err(|e| anyhow::anyhow!("{} : {e}", context("suppression")))?;
        }
        let (schema, fields) = schema();
        let directory = MmapDirectory::open(dir)
            .map_err(|e| anyhow::anyhow!("{} : {e}", context("ouverture")))?;
        let index = Index::open_or_create(directory, schema)
            .map_err(|e| anyhow::anyhow!("{} : {e}", context("ouverture")))?;
        register_analyzers(&index)?;
        // Written once the index exists: a crash before leaves a directory rebuilt next time.
        std::fs::write(dir.join(VERSION_FILE), format!("{SCHEMA_VERSION}\n"))
            .map_err(|e| anyhow::anyhow!("{} : {e}", context("version")))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(TextIndex {
            index,
            reader,
            writing: Arc::default(),
            fields,
            recent: Arc::default(),
            typology_words: Arc::new(typology_words),
        })
    }

    /// The number of entries in the index (as of the last commit).
    /// Sees the commits made since the reader was opened, by another process too (the command
    /// line imports while a server runs).
    pub fn reload(&self) -> anyhow::Result<()> {
        Ok(self.reader.reload()?)
    }

    pub fn doc_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn fields(&self) -> Fields {
        self.fields
    }

    fn analyzer(&self, name: &str) -> anyhow::Result<TextAnalyzer> {
        self.index
            .tokenizers()
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("analyseur « {name} » non enregistré"))
    }

    fn document(&self, doc: &TextDoc, analysis: &mut Analysis) -> TantivyDocument {
        let f = &self.fields;
        let mut out = TantivyDocument::default();
        out.add_text(f.id, doc.id.as_str());
        if let Some((hi, lo)) = IdKey::of(&doc.id).and_then(IdKey::to_numbers) {
            out.add_u64(f.key_hi, hi);
            out.add_u64(f.key_lo, lo);
        }
        out.add_text(f.place, typology_token(&doc.typology));
        for token in &doc.territories {
            out.add_text(f.place, token);
        }
        for level in 0..CELL_DEGREES.len() {
            out.add_text(f.place, cell_token(level, doc.location));
        }
        out.add_text(f.name, &doc.name);
        out.add_text(f.commune, &doc.commune);
        out.add_text(f.address, &doc.address);
        out.add_text(f.description, &doc.description);
        // The typology's words are not indexed with each entry: see [`TypologyWords`].
        let name_words = tokens(&mut analysis.raw, &doc.name);
        let commune = tokens(&mut analysis.raw, &doc.commune);
        let folded: BTreeSet<&str> = name_words
            .iter()
            .chain(&commune)
            .map(String::as_str)
            .collect();
        out.add_text(
            f.words,
            folded.iter().copied().collect::<Vec<_>>().join(" "),
        );
        // One value per word: "fr_prefix" makes the prefixes of a whole value.
        for word in folded {
            out.add_text(f.prefixes, word);
        }
        out
    }

    /// The change-log position the last commit brought the index to (`None` for an index
    /// written before the log, or empty): what the next catch-up starts after.
    pub fn position(&self) -> Option<i64> {
        self.index
            .load_metas()
            .ok()?
            .payload
            .and_then(|p| p.trim().parse().ok())
    }

    /// Forgets the changes a dropped writer had made searchable and never committed.
    pub(crate) fn forget_recent(&self) {
        *self.recent.lock().unwrap_or_else(PoisonError::into_inner) = Recent::default();
    }

    /// Opens the directory's one writer (tantivy locks it against a second, in any process)
    /// for a long-lived applier of the change log; it stays open until dropped.
    pub fn writer(&self) -> anyhow::Result<TextWriter> {
        let writer: IndexWriter = self.index.writer(WRITER_MEMORY_BYTES).map_err(|e| {
            anyhow::anyhow!("index texte : écriture impossible (un autre processus écrit ?) : {e}")
        })?;
        Ok(TextWriter {
            analysis: Analysis::new(self)?,
            writer,
            index: self.clone(),
        })
    }

    /// Runs `change` on a writer of its own, then commits at change-log `position` and makes
    /// it visible; rolls back on failure.
    fn write(
        &self,
        memory_bytes: usize,
        threads: Option<usize>,
        position: Option<i64>,
        change: impl FnOnce(&mut IndexWriter, &mut Analysis) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut analysis = Analysis::new(self)?;
        let _turn = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let opened = match threads {
            Some(threads) => self.index.writer_with_num_threads(threads, memory_bytes),
            None => self.index.writer(memory_bytes),
        };
        let mut writer: IndexWriter = opened.map_err(|e| {
            anyhow::anyhow!("index texte : écriture impossible (un autre processus écrit ?) : {e}")
        })?;
        if threads.is_some() {
            // A build writes each segment once: merging them while adding only rewrites them.
            writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        }
        let done = change(&mut writer, &mut analysis).and_then(|()| {
            let mut prepared = writer.prepare_commit()?;
            if let Some(position) = position {
                prepared.set_payload(&position.to_string());
            }
            Ok(prepared.commit().map(drop)?)
        });
        if let Err(error) = done {
            if let Err(rollback) = writer.rollback() {
                tracing::warn!(%rollback, "text index rollback failed");
            }
            return Err(error);
        }
        // Waits for the writer's threads and releases the directory's lock.
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        Ok(())
    }

    /// Replaces the whole content of the index with `docs`, in one commit at change-log
    /// `position`, on every core.
    pub fn rebuild(
        &self,
        docs: impl Iterator<Item = TextDoc>,
        position: Option<i64>,
    ) -> anyhow::Result<()> {
        // As many writer threads as cores: one more built faster in some runs, slower in
        // others, and made more segments, which every query then reads (3 million entries:
        // « pharmacie » within 5 km 259 µs p50 with 4 segments, 355 µs with 6).
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        self.write(
            REBUILD_MEMORY_BYTES,
            Some(threads),
            position,
            |writer, analysis| {
                writer.delete_all_documents()?;
                for doc in docs {
                    writer.add_document(self.document(&doc, analysis))?;
                }
                Ok(())
            },
        )
    }

    /// Adds or replaces these entries, in one commit.
    pub fn upsert(&self, docs: &[TextDoc]) -> anyhow::Result<()> {
        self.write(WRITER_MEMORY_BYTES, None, None, |writer, analysis| {
            for doc in docs {
                writer.delete_term(Term::from_field_text(self.fields.id, doc.id.as_str()));
                writer.add_document(self.document(doc, analysis))?;
            }
            Ok(())
        })
    }

    /// Removes these entries (unknown ids are ignored), in one commit.
    pub fn remove(&self, ids: &[ServiceId]) -> anyhow::Result<()> {
        self.write(WRITER_MEMORY_BYTES, None, None, |writer, _| {
            for id in ids {
                writer.delete_term(Term::from_field_text(self.fields.id, id.as_str()));
            }
            Ok(())
        })
    }

    /// Whether `term` is in the index as it is (in any segment).
    fn known(searcher: &tantivy::Searcher, term: &Term) -> anyhow::Result<bool> {
        for segment in searcher.segment_readers() {
            if segment
                .inverted_index(term.field())?
                .get_term_info(term)?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The entries of typology `code`, scored as a word matching them all would be (the fewer
    /// entries it has, the more it weighs), times `boost`.
    fn typology_query(&self, code: &str, boost: f32) -> Box<dyn Query> {
        let term = Term::from_field_text(self.fields.place, &typology_token(code));
        Box::new(BoostQuery::new(
            Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
            boost,
        ))
    }

    /// The query of `q` (see the module documentation); `None` when it has no word to look for.
    fn query(&self, searcher: &tantivy::Searcher, q: &str) -> anyhow::Result<Option<BooleanQuery>> {
        let f = &self.fields;
        let mut stem = self.analyzer("fr")?;
        let words = tokens(&mut self.analyzer("fr_raw")?, q);
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (i, word) in words.iter().enumerate() {
            let last = i + 1 == words.len();
            let chars = word.chars().count();
            let stemmed = tokens(&mut stem, word).into_iter().next();
            let mut either: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            // Typo tolerance walks the whole dictionary: only for a word found nowhere as typed.
            let mut found_as_typed = Self::known(searcher, &Term::from_field_text(f.words, word))?;
            if let Some(stemmed) = &stemmed {
                for (field, boost) in f.stemmed() {
                    let term = Term::from_field_text(field, stemmed);
                    if !found_as_typed && field == f.name {
                        found_as_typed = Self::known(searcher, &term)?;
                    }
                    let term = TermQuery::new(term, IndexRecordOption::WithFreqs);
                    either.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(Box::new(term), boost)),
                    ));
                }
                for code in self.typology_words.with_stem(stemmed) {
                    found_as_typed = true;
                    either.push((Occur::Should, self.typology_query(code, 1.0)));
                }
            }
            let prefix = last && chars >= MIN_PREFIX;
            if prefix {
                let typed = truncate_chars(word, MAX_PREFIX);
                let term = Term::from_field_text(f.prefixes, typed);
                found_as_typed = found_as_typed || Self::known(searcher, &term)?;
                either.push((
                    Occur::Should,
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                ));
                for code in self.typology_words.starting_with(typed) {
                    found_as_typed = true;
                    either.push((Occur::Should, self.typology_query(code, 1.0)));
                }
            }
            if chars >= FUZZY_MIN_CHARS && !found_as_typed {
                let fuzzy = FuzzyTermQuery::new(Term::from_field_text(f.words, word), 1, true);
                either.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(fuzzy), FUZZY_BOOST)),
                ));
                for code in self.typology_words.within_one_edit(word) {
                    either.push((Occur::Should, self.typology_query(code, FUZZY_BOOST)));
                }
            }
            if either.is_empty() {
                // A stop word (or a lone letter) inside the query.
                continue;
            }
            // A stop word or a single letter being typed narrows nothing down: it only adds
            // to the score of the entries it starts a word of.
            let occur = if stemmed.is_some() && (!last || prefix) {
                Occur::Must
            } else {
                Occur::Should
            };
            clauses.push((occur, Box::new(BooleanQuery::new(either))));
        }
        Ok((!clauses.is_empty()).then(|| BooleanQuery::new(clauses)))
    }

    /// The `place` clauses of `filter`: each must match, none adds to the score.
    fn filter_clauses(&self, filter: &TextFilter) -> Vec<(Occur, Box<dyn Query>)> {
        let any_of = |tokens: Vec<String>| -> (Occur, Box<dyn Query>) {
            let terms: Vec<(Occur, Box<dyn Query>)> = tokens
                .into_iter()
                .map(|token| {
                    let term = Term::from_field_text(self.fields.place, &token);
                    let query: Box<dyn Query> =
                        Box::new(TermQuery::new(term, IndexRecordOption::Basic));
                    (Occur::Should, query)
                })
                .collect();
            (
                Occur::Must,
                Box::new(ConstScoreQuery::new(
                    Box::new(BooleanQuery::new(terms)),
                    0.0,
                )),
            )
        };
        let mut clauses = Vec::new();
        if let Some(cells) = filter
            .circle
            .and_then(|(center, radius_m)| cells_covering(center, radius_m))
        {
            clauses.push(any_of(cells));
        }
        if let Some(typologies) = &filter.typologies {
            clauses.push(any_of(
                typologies.iter().map(|t| typology_token(t)).collect(),
            ));
        }
        if let Some(territory) = &filter.territory {
            clauses.push(any_of(vec![territory.clone()]));
        }
        clauses
    }

    /// The entries matching `q` with their BM25 score: the best `limit`, best first, or all of
    /// them in no particular order. An empty query (or one of stop words only) finds nothing.
    pub fn search(&self, q: &str, limit: Option<usize>) -> anyhow::Result<Vec<(IdKey, f32)>> {
        self.search_within(q, &TextFilter::default(), limit)
    }

    /// As [`TextIndex::search`], among the entries `filter` lets through (the circle by its
    /// cells: some matches may lie a little outside it).
    pub fn search_within(
        &self,
        q: &str,
        filter: &TextFilter,
        limit: Option<usize>,
    ) -> anyhow::Result<Vec<(IdKey, f32)>> {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .view()?;
        let searcher = self.reader.searcher();
        let Some(words) = self.query(&searcher, q)? else {
            return Ok(Vec::new());
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, Box::new(words))];
        clauses.extend(self.filter_clauses(filter));
        let query = BooleanQuery::new(clauses);
        let Some((changed, memory)) = recent else {
            return self.hits(&searcher, &query, limit);
        };
        // The committed documents of changed entries may be among the best: ask for as many
        // more as there are changed entries, then drop them.
        let wider = limit.map(|l| l.saturating_add(changed.len()));
        let mut found = self.hits(&searcher, &query, wider)?;
        found.retain(|(key, _)| !changed.contains(key));
        found.extend(self.hits(&memory, &query, limit)?);
        if let Some(limit) = limit {
            found.sort_by(|a, b| b.1.total_cmp(&a.1));
            found.truncate(limit);
        }
        Ok(found)
    }

    /// The entries `searcher` finds for `query`: the best `limit`, or every one unordered.
    fn hits(
        &self,
        searcher: &tantivy::Searcher,
        query: &BooleanQuery,
        limit: Option<usize>,
    ) -> anyhow::Result<Vec<(IdKey, f32)>> {
        let hits: Vec<(f32, tantivy::DocAddress)> = match limit {
            Some(0) => return Ok(Vec::new()),
            Some(limit) => searcher.search(query, &TopDocs::with_limit(limit))?,
            // Every match, unordered: a top-k heap as large as the index would cost far more.
            None => searcher.search(query, &AllScored)?,
        };
        let mut columns: Vec<Option<KeyColumns>> = vec![None; searcher.segment_readers().len()];
        let mut found = Vec::with_capacity(hits.len());
        for (score, address) in hits {
            let columns = match &mut columns[address.segment_ord as usize] {
                Some(columns) => columns,
                slot => {
                    slot.insert(self.key_columns(searcher.segment_reader(address.segment_ord))?)
                }
            };
            if let Some(key) = columns.key(address.doc_id)? {
                found.push((key, score));
            }
        }
        Ok(found)
    }

    fn key_columns(&self, segment: &tantivy::SegmentReader) -> anyhow::Result<KeyColumns> {
        let fast = segment.fast_fields();
        Ok(KeyColumns {
            hi: fast.u64("key_hi")?,
            lo: fast.u64("key_lo")?,
            id: self.id_column(segment)?,
            text: String::new(),
        })
    }

    fn id_column(&self, segment: &tantivy::SegmentReader) -> anyhow::Result<StrColumn> {
        segment
            .fast_fields()
            .str("id")?
            .ok_or_else(|| anyhow::anyhow!("index texte : colonne id absente"))
    }

    /// Every id in the index, to compare with the database.
    pub fn ids(&self) -> anyhow::Result<HashSet<String>> {
        let searcher = self.reader.searcher();
        let mut ids = HashSet::with_capacity(searcher.num_docs() as usize);
        let mut id = String::new();
        for segment in searcher.segment_readers() {
            let column = self.id_column(segment)?;
            for doc in segment.doc_ids_alive() {
                if read_id(&column, doc, &mut id)? {
                    ids.insert(id.clone());
                }
            }
        }
        Ok(ids)
    }

    /// Rebuilds the index from the published entries of the database (on blocking threads).
    pub async fn sync_from_db(
        &self,
        store: &Store,
        reference: &Reference,
    ) -> crate::error::Result<()> {
        // Read before the rows: a write landing between is applied again from the log, which
        // is harmless (an upsert of what the index holds already).
        let position = crate::db::log_head(store).await?;
        let started = std::time::Instant::now();
        let expected = crate::services::store::published_count(store).await?;
        let read = reference.clone();
        let docs = crate::services::store::for_each_published_text(
            store,
            Vec::with_capacity(usize::try_from(expected).unwrap_or(0)),
            move |docs, row| {
                let insee_code = InseeCode::parse(row.insee_code)
                    .map_err(|e| anyhow::anyhow!("fiche {} : {e}", row.id))?;
                docs.push(make_doc(
                    ServiceId(row.id.to_owned()),
                    row.name,
                    row.typology,
                    &insee_code,
                    LonLat::new(row.lon, row.lat),
                    [row.street, row.postcode, row.city],
                    row.description,
                    &read.locator,
                ));
                Ok(())
            },
        )
        .await?;
        let read_ms = started.elapsed().as_millis() as u64;
        let index = self.clone();
        let count = docs.len();
        tokio::task::spawn_blocking(move || {
            let mut docs = docs;
            // Entries of one typology, and within it neighbours, get neighbouring document
            // numbers: a query on a typology's words, or narrowed to a few cells, then reads a
            // few stretches of each word's postings rather than the whole of them.
            docs.sort_unstable_by(|a, b| {
                a.typology
                    .cmp(&b.typology)
                    .then_with(|| z_order(a.location).cmp(&z_order(b.location)))
            });
            index.rebuild(docs.into_iter(), Some(position))
        })
        .await
        .map_err(anyhow::Error::from)??;
        tracing::info!(
            entries = count,
            read_ms,
            ms = started.elapsed().as_millis() as u64,
            "text index built"
        );
        Ok(())
    }
}

/// The directory's writer held by the one applier of the change log: changes go in as they
/// come, searchable at once through the small index in memory (see [`Recent`]) and durable at
/// [`TextWriter::commit`].
pub struct TextWriter {
    writer: IndexWriter,
    analysis: Analysis,
    index: TextIndex,
}

impl TextWriter {
    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.index
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds or replaces these entries; with `searchable_soon`, in the small index too (a few
    /// entries: a write), else only in the writer (a batch the caller commits at once).
    pub fn upsert(&mut self, docs: &[TextDoc], searchable_soon: bool) -> anyhow::Result<()> {
        let id = self.index.fields.id;
        let mut memory = Vec::with_capacity(if searchable_soon { docs.len() } else { 0 });
        for doc in docs {
            self.writer
                .delete_term(Term::from_field_text(id, doc.id.as_str()));
            let document = self.index.document(doc, &mut self.analysis);
            if searchable_soon {
                memory.push((doc.id.clone(), document.clone()));
            }
            self.writer.add_document(document)?;
        }
        if !memory.is_empty() {
            let mut recent = self.recent();
            let writer = recent.memory()?;
            for (service, document) in &memory {
                writer.delete_term(Term::from_field_text(id, service.as_str()));
                writer.add_document(document.clone())?;
            }
            let changed = Arc::make_mut(&mut recent.changed);
            changed.extend(memory.iter().filter_map(|(service, _)| IdKey::of(service)));
            recent.dirty = true;
        }
        Ok(())
    }

    /// Removes these entries (unknown ids are ignored), as [`TextWriter::upsert`] adds.
    pub fn remove(&mut self, ids: &[ServiceId], searchable_soon: bool) -> anyhow::Result<()> {
        let id = self.index.fields.id;
        for service in ids {
            self.writer
                .delete_term(Term::from_field_text(id, service.as_str()));
        }
        if searchable_soon && !ids.is_empty() {
            let mut recent = self.recent();
            let writer = recent.memory()?;
            for service in ids {
                writer.delete_term(Term::from_field_text(id, service.as_str()));
            }
            let changed = Arc::make_mut(&mut recent.changed);
            changed.extend(ids.iter().filter_map(IdKey::of));
            recent.dirty = true;
        }
        Ok(())
    }

    /// Entries changed since the last commit.
    pub fn uncommitted(&self) -> usize {
        self.recent().changed.len()
    }

    /// Makes every change so far visible and durable, recording change-log `position` in the
    /// same commit, and empties the small index; rolls the changes back on failure.
    pub fn commit(&mut self, position: i64) -> anyhow::Result<()> {
        let committed = (|| -> anyhow::Result<()> {
            let mut prepared = self.writer.prepare_commit()?;
            prepared.set_payload(&position.to_string());
            prepared.commit()?;
            Ok(())
        })();
        if let Err(error) = committed {
            if let Err(rollback) = self.writer.rollback() {
                tracing::warn!(%rollback, "text index rollback failed");
            }
            return Err(error);
        }
        self.index.reader.reload()?;
        *self.recent() = Recent::default();
        Ok(())
    }
}

/// The id columns of one segment: the numbers first, the text for an id they cannot hold.
#[derive(Clone)]
struct KeyColumns {
    hi: Column<u64>,
    lo: Column<u64>,
    id: StrColumn,
    text: String,
}

impl KeyColumns {
    fn key(&mut self, doc: tantivy::DocId) -> anyhow::Result<Option<IdKey>> {
        if let (Some(hi), Some(lo)) = (self.hi.first(doc), self.lo.first(doc)) {
            if let Some(key) = IdKey::from_numbers(hi, lo) {
                return Ok(Some(key));
            }
        }
        Ok(if read_id(&self.id, doc, &mut self.text)? {
            IdKey::new(&self.text)
        } else {
            None
        })
    }
}

/// Reads the id of `doc` into `out`; false when the document has none.
fn read_id(column: &StrColumn, doc: tantivy::DocId, out: &mut String) -> anyhow::Result<bool> {
    out.clear();
    match column.ords().first(doc) {
        Some(ord) => Ok(column.ord_to_str(ord, out)?),
        None => Ok(false),
    }
}

/// Collects every matching document with its score, in no particular order.
struct AllScored;

impl tantivy::collector::Collector for AllScored {
    type Fruit = Vec<(f32, tantivy::DocAddress)>;
    type Child = AllScoredInSegment;

    fn for_segment(
        &self,
        segment: tantivy::SegmentOrdinal,
        _reader: &tantivy::SegmentReader,
    ) -> tantivy::Result<AllScoredInSegment> {
        Ok(AllScoredInSegment {
            segment,
            hits: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(&self, fruits: Vec<Self::Fruit>) -> tantivy::Result<Self::Fruit> {
        Ok(fruits.into_iter().flatten().collect())
    }
}

struct AllScoredInSegment {
    segment: tantivy::SegmentOrdinal,
    hits: Vec<(f32, tantivy::DocAddress)>,
}

impl tantivy::collector::SegmentCollector for AllScoredInSegment {
    type Fruit = Vec<(f32, tantivy::DocAddress)>;

    fn collect(&mut self, doc: tantivy::DocId, score: tantivy::Score) {
        self.hits
            .push((score, tantivy::DocAddress::new(self.segment, doc)));
    }

    fn harvest(self) -> Self::Fruit {
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    fn id(n: u32) -> ServiceId {
        ServiceId(format!("{n:016}"))
    }

    /// Test entry `n`, placed (for the `place` tokens) at the commune's rough position.
    fn doc(n: u32, name: &str, typology: &str, commune: &str) -> TextDoc {
        let (location, insee) = match commune {
            "Riom" => (LonLat::new(3.113, 45.894), "63300"),
            "Mozac" => (LonLat::new(3.093, 45.893), "63245"),
            "Thiers" => (LonLat::new(3.548, 45.856), "63430"),
            "Issoire" => (LonLat::new(3.249, 45.544), "63178"),
            "Châtel-Guyon" => (LonLat::new(3.064, 45.922), "63103"),
            _ => (LonLat::new(3.087, 45.778), "63113"),
        };
        TextDoc {
            id: id(n),
            name: name.to_owned(),
            commune: commune.to_owned(),
            address: format!("1 place de la République 63200 {commune}"),
            description: String::new(),
            typology: typology.to_owned(),
            location,
            territories: vec![territory_token('c', insee), territory_token('d', "63")],
        }
    }

    fn sample() -> Vec<TextDoc> {
        vec![
            doc(
                1,
                "École Jules-Ferry",
                "ecole-elementaire",
                "Clermont-Ferrand",
            ),
            doc(
                2,
                "Préfecture du Puy-de-Dôme",
                "prefecture",
                "Clermont-Ferrand",
            ),
            doc(3, "Mairie de Riom", "mairie", "Riom"),
            doc(4, "Mairie de Mozac", "mairie", "Mozac"),
            doc(5, "Médiathèque de Riom", "mediatheque", "Riom"),
            doc(6, "Piscine municipale", "piscine", "Châtel-Guyon"),
            doc(7, "Pharmacie du centre", "pharmacie", "Thiers"),
            doc(8, "Agence d'Issoire", "anpe", "Issoire"),
        ]
    }

    fn filled() -> (tempfile::TempDir, TextIndex) {
        let dir = tempfile::tempdir().unwrap();
        let index = TextIndex::open_or_create(dir.path(), &Taxonomy::embedded().unwrap()).unwrap();
        index.rebuild(sample().into_iter(), None).unwrap();
        (dir, index)
    }

    /// The ids found for `q`, best first.
    fn found(index: &TextIndex, q: &str) -> Vec<u32> {
        index
            .search(q, Some(100))
            .unwrap()
            .into_iter()
            .map(|(id, _)| id.as_str().parse().unwrap())
            .collect()
    }

    #[test]
    fn folds_stems_prefixes_and_forgives_typos() {
        let (_dir, index) = filled();
        assert_eq!(index.doc_count(), 8);
        assert_eq!(found(&index, "ecole"), [1]);
        assert_eq!(found(&index, "prefecture"), [2]);
        assert_eq!(found(&index, "PRÉFECTURE puy de dome"), [2]);
        assert_eq!(found(&index, "piscines"), [6], "plural, stemmed");
        assert_eq!(found(&index, "pisc"), [6], "prefix of the last word");
        assert_eq!(found(&index, "piscine chat"), [6], "prefix of the commune");
        assert_eq!(found(&index, "pharmacei"), [7], "one transposition");
        assert_eq!(found(&index, "france travail"), [8], "typology synonym");
        assert_eq!(found(&index, "employment"), [8], "English label");
        // Words of a typology only, not of the entry's name, looked up in memory.
        assert_eq!(found(&index, "issoire chom"), [8], "prefix of a synonym");
        assert_eq!(
            found(&index, "France Trav"),
            [8],
            "prefix of a synonym's word"
        );
        assert_eq!(
            found(&index, "riom biblio"),
            [5],
            "prefix of a label's word"
        );
        assert_eq!(found(&index, "chômage issoire"), [8], "stem of a synonym");
        assert_eq!(found(&index, "bibliotheqeu"), [5], "typo in a synonym");
        assert_eq!(found(&index, "pisc riom"), Vec::<u32>::new(), "every word");
        assert!(index.search("", None).unwrap().is_empty());
        assert!(index.search(" de la ", None).unwrap().is_empty());
        assert_eq!(index.search("mairie", Some(1)).unwrap().len(), 1);
    }

    #[test]
    fn name_matches_rank_first() {
        let (_dir, index) = filled();
        let hits = found(&index, "mairie riom");
        assert_eq!(hits.first(), Some(&3), "{hits:?}");
        let hits = index.search("riom", Some(10)).unwrap();
        assert_eq!(hits.len(), 2, "{hits:?}");
        assert_eq!(
            index.search("riom", None).unwrap().len(),
            2,
            "unlimited: every match"
        );
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1));
        // As-you-type: the word being typed narrows, a stop word at the end does not.
        assert_eq!(found(&index, "mairie mo"), [4]);
        assert_eq!(found(&index, "mairie de").len(), 2);
    }

    #[test]
    fn persists_upserts_removes_and_rebuilds_on_version_change() {
        let (dir, index) = filled();
        let mut renamed = sample().remove(6);
        renamed.name = "Grande pharmacie".into();
        index.upsert(&[renamed]).unwrap();
        assert_eq!(index.doc_count(), 8);
        assert_eq!(found(&index, "grande"), [7]);
        assert!(
            found(&index, "pharmacie centre").is_empty(),
            "old name gone"
        );
        index.remove(&[id(6)]).unwrap();
        assert!(found(&index, "piscine").is_empty());
        assert_eq!(index.doc_count(), 7);
        let ids = index.ids().unwrap();
        assert_eq!(ids.len(), 7);
        assert!(ids.contains(id(1).as_str()) && !ids.contains(id(6).as_str()));
        drop(index);

        let index = TextIndex::open_or_create(dir.path(), &Taxonomy::embedded().unwrap()).unwrap();
        assert_eq!(index.doc_count(), 7, "persisted");
        assert_eq!(found(&index, "ecole"), [1]);
        drop(index);

        std::fs::write(dir.path().join(VERSION_FILE), "0\n").unwrap();
        let index = TextIndex::open_or_create(dir.path(), &Taxonomy::embedded().unwrap()).unwrap();
        assert_eq!(index.doc_count(), 0, "rebuilt empty");
        let version = std::fs::read_to_string(dir.path().join(VERSION_FILE)).unwrap();
        assert_eq!(version.trim(), SCHEMA_VERSION.to_string());
    }

    #[tokio::test]
    async fn syncs_the_published_entries_of_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::db::Store::connect(dir.path().join("test.db").to_str().unwrap())
            .await
            .unwrap();
        crate::boot::prepare(&store, true).await.unwrap();
        let taxonomy = Taxonomy::embedded().unwrap();
        let locator = Locator::new(
            crate::territory::ReferenceFiles::embedded()
                .unwrap()
                .communes,
        );
        let index =
            TextIndex::open_or_create(&dir.path().join("text"), &Taxonomy::embedded().unwrap())
                .unwrap();
        let started = std::time::Instant::now();
        let reference = Reference {
            taxonomy: std::sync::Arc::new(taxonomy),
            locator: std::sync::Arc::new(locator),
        };
        index.sync_from_db(&store, &reference).await.unwrap();
        eprintln!(
            "synced {} entries in {:?}",
            index.doc_count(),
            started.elapsed()
        );
        let published: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM services WHERE status = 'published'")
                .fetch_all(store.sqlite().unwrap())
                .await
                .unwrap();
        let published: HashSet<String> = published.into_iter().map(|(id,)| id).collect();
        assert_eq!(published.len(), 1283);
        assert_eq!(index.ids().unwrap(), published);

        let started = std::time::Instant::now();
        let hits = index.search("mairie riom", Some(10)).unwrap();
        eprintln!(
            "« mairie riom » : {} hits in {:?}",
            hits.len(),
            started.elapsed()
        );
        let (insee,): (String,) = sqlx::query_as("SELECT insee_code FROM services WHERE id = $1")
            .bind(hits[0].0.as_str())
            .fetch_one(store.sqlite().unwrap())
            .await
            .unwrap();
        assert_eq!(insee, "63300");
        let all = index.search("mairie", None).unwrap();
        assert_eq!(all.len(), 1283);
    }

    #[test]
    fn never_deletes_a_foreign_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("precious.txt"), "keep").unwrap();
        let error = TextIndex::open_or_create(dir.path(), &Taxonomy::embedded().unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains("n'est pas un index texte"), "{error}");
        assert!(dir.path().join("precious.txt").exists());
    }

    #[test]
    fn documents_of_entries_carry_commune_and_address() {
        let locator = Locator::new(
            crate::territory::ReferenceFiles::embedded()
                .unwrap()
                .communes,
        );
        let doc = make_doc(
            id(1),
            "Mairie",
            "mairie",
            &InseeCode::parse("63300").unwrap(),
            LonLat::new(3.113, 45.894),
            [Some("Place de l'Hôtel de Ville"), Some("63200"), None],
            None,
            &locator,
        );
        assert_eq!(doc.commune, "Riom");
        assert_eq!(doc.address, "Place de l'Hôtel de Ville 63200");
        assert_eq!(doc.typology, "mairie");
        for token in ["c:63300", "d:63", "r:84", "e:200070753"] {
            assert!(
                doc.territories.iter().any(|t| t == token),
                "{token}: {:?}",
                doc.territories
            );
        }
    }

    #[test]
    fn place_typology_and_territory_narrow_the_words() {
        let (_dir, index) = filled();
        let within = |q: &str, filter: TextFilter| -> Vec<u32> {
            let mut ids: Vec<u32> = index
                .search_within(q, &filter, None)
                .unwrap()
                .into_iter()
                .map(|(id, _)| id.as_str().parse().unwrap())
                .collect();
            ids.sort_unstable();
            ids
        };
        let riom = LonLat::new(3.113, 45.894);
        assert_eq!(within("mairie", TextFilter::default()), [3, 4]);
        let near_riom = TextFilter {
            circle: Some((riom, 5_000.0)),
            ..TextFilter::default()
        };
        assert_eq!(within("mairie", near_riom.clone()), [3, 4]);
        assert_eq!(
            within("pharmacie", near_riom),
            Vec::<u32>::new(),
            "Thiers is 34 km away"
        );
        let around_thiers = TextFilter {
            circle: Some((LonLat::new(3.55, 45.86), 2_000.0)),
            ..TextFilter::default()
        };
        assert_eq!(within("pharmacie", around_thiers), [7]);
        // Large circles fall back to coarser cells, and past them to no cell at all.
        for radius in [50_000.0, 400_000.0, 3_000_000.0] {
            let filter = TextFilter {
                circle: Some((riom, radius)),
                ..TextFilter::default()
            };
            assert_eq!(within("riom", filter), [3, 5], "{radius}");
        }
        let towns = TextFilter {
            typologies: Some(vec!["mediatheque".into(), "piscine".into()]),
            ..TextFilter::default()
        };
        assert_eq!(within("riom", towns), [5]);
        let in_mozac = TextFilter {
            territory: Some(territory_token('c', "63245")),
            ..TextFilter::default()
        };
        assert_eq!(within("mairie", in_mozac), [4]);
        let nothing = TextFilter {
            typologies: Some(Vec::new()),
            ..TextFilter::default()
        };
        assert_eq!(within("mairie", nothing), Vec::<u32>::new());
    }

    #[test]
    fn cells_cover_the_circle_with_few_terms() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..500 {
            let center = LonLat::new(rng.gen_range(-5.0..9.0), rng.gen_range(42.0..51.0));
            let radius = rng.gen_range(10.0..200_000.0);
            let cells = cells_covering(center, radius).unwrap();
            assert!(cells.len() as i64 <= MAX_QUERY_CELLS);
            let level: usize = cells[0][1..cells[0].find(':').unwrap()].parse().unwrap();
            // Points on the circle's edge fall in one of the cells.
            for k in 0..16 {
                // The point `radius` away on bearing k × 22.5° (great-circle destination).
                let bearing = k as f64 * std::f64::consts::PI / 8.0;
                let delta = radius / crate::spatial::EARTH_RADIUS_M;
                let (lat1, lon1) = (center.lat.to_radians(), center.lon.to_radians());
                let lat2 =
                    (lat1.sin() * delta.cos() + lat1.cos() * delta.sin() * bearing.cos()).asin();
                let lon2 = lon1
                    + (bearing.sin() * delta.sin() * lat1.cos())
                        .atan2(delta.cos() - lat1.sin() * lat2.sin());
                let edge = LonLat::new(lon2.to_degrees(), lat2.to_degrees());
                assert!((edge.distance_m(center) - radius).abs() < 1.0);
                assert!(
                    cells.contains(&cell_token(level, edge)),
                    "{center:?} {radius} {edge:?}"
                );
            }
        }
        assert!(cells_covering(LonLat::new(3.0, 45.0), 5_000_000.0).is_none());
    }

    #[test]
    fn z_order_keeps_neighbours_together() {
        let riom = z_order(LonLat::new(3.113, 45.894));
        let mozac = z_order(LonLat::new(3.093, 45.893));
        let lille = z_order(LonLat::new(3.06, 50.63));
        assert!(riom.abs_diff(mozac) < riom.abs_diff(lille));
        assert_eq!(z_order(LonLat::new(-180.0, -90.0)), 0);
        assert_eq!(z_order(LonLat::new(180.0, 90.0)), (1 << 40) - 1);
    }

    #[test]
    fn ids_round_trip_through_numbers() {
        for _ in 0..100 {
            let id = ServiceId::generate();
            let key = IdKey::of(&id).unwrap();
            let (hi, lo) = key.to_numbers().unwrap();
            assert_eq!(IdKey::from_numbers(hi, lo), Some(key));
        }
        assert_eq!(
            IdKey::new("0000000000000000").unwrap().to_numbers(),
            Some((0, 0))
        );
        assert!(IdKey::new("AAAAAAAAAAAAAAAA")
            .unwrap()
            .to_numbers()
            .is_none());
        assert!(IdKey::from_numbers(1 << 40, 0).is_none());
    }
}
