//! The command line and the configuration it carries: every option, its environment fallback and default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Proximités: annuaire géolocalisé des services publics / geolocated directory of public services.
#[derive(Debug, Parser)]
#[command(name = "proximites", version, about)]
pub struct Cli {
    /// Database: `sqlite://PATH` (the file is created when missing) or a plain path; or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (`?host=/socket/dir` for a unix socket).
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        default_value = "sqlite://proximites.db"
    )]
    pub database_url: String,

    /// Log filter, in `tracing` syntax (`info`, `proximites=debug,tower_http=info`…).
    #[arg(
        long,
        global = true,
        env = "RUST_LOG",
        default_value = "info,tantivy=warn"
    )]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the web application and the API (a new database gets the Auvergne demo).
    Serve(ServeArgs),
    /// Import entries from a CSV (project or SCDL « Équipements ») or GeoJSON file.
    Import(ImportArgs),
    /// Harvest a national source: the file is the source's whole current state (entries
    /// created, updated field by field, unchanged, or withdrawn from the source), in one
    /// transaction; only records that cannot be used are left out, and reported.
    Harvest(HarvestArgs),
    /// Find the same service given by several sources (same typology within 150 m, similar
    /// names): one entry of each group is shown to citizens (a contributor's first, then the
    /// national sources in the order of precedence), the others are hidden and kept. Runs
    /// after every import and harvest; this runs it now, or sets the order first.
    Duplicates(DuplicatesArgs),
    /// Write a realistic generated file of entries in the project's CSV, for benchmarks.
    Synth(SynthArgs),
    /// Manage the territory reference (communes, EPCI, départements, régions).
    #[command(subcommand)]
    Territory(TerritoryCommand),
    /// Compare the search indexes with the database and report every difference.
    Check(CheckArgs),
    /// Write a consistent copy of the SQLite database to FILE while servers and imports go on
    /// (replaced only once complete).
    Backup {
        /// The copy to write.
        file: PathBuf,
    },
    /// Apply the schema's migrations to the database (SQLite, or PostgreSQL 15 or later) and
    /// say which it is at: run it before restarting instances one at a time on a new release.
    Migrate,
    /// Put a backup in place of the SQLite database (no server may be using it): checked
    /// whole first; the replaced file is kept as PATH.before-restore; the indexes rebuild at
    /// the next start.
    Restore {
        /// The backup to put back.
        file: PathBuf,
    },
    /// Coverage of a territory: distance from each commune to the nearest published entry of
    /// typologies or themes, and the indicators drawn from it, as CSV or JSON.
    Coverage(CoverageArgs),
    /// A printed directory: a tagged PDF booklet (A5 or A4) of a territory's published entries
    /// of some themes or typologies, and optionally the same as an HTML page.
    Directory(DirectoryArgs),
    /// Write the published entries (all, or a theme, typologies, a territory) as a GIS file:
    /// GeoJSON, GeoPackage, FlatGeobuf, CSV (import format) or SCDL CSV.
    Export(ExportArgs),
    /// Measure speed on generated data (figures reported in the README).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Contributors: operators, organisations, invitations, API tokens (the platform
    /// operator's commands; scripts rely on what they print).
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a platform operator (or set its password), the password read from standard input.
    CreateOperator {
        #[arg(long)]
        email: String,
        /// Read the password from the first line of standard input (required: a password on
        /// the command line would show in the process list and the shell history).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Create an organisation and print its id.
    CreateOrganisation {
        #[arg(long)]
        name: String,
        /// commune, epci, departement, region, state, association or other.
        #[arg(long)]
        kind: String,
        /// Its territory: `commune:CODE`, `epci:SIREN` or `departement:CODE`; repeat the option
        /// or separate with commas for several.
        #[arg(long, required = true, value_delimiter = ',')]
        territory: Vec<String>,
        #[arg(long)]
        siren: Option<String>,
        /// Typology codes it commits to maintain (Annexe 2), comma-separated.
        #[arg(long, value_delimiter = ',')]
        typologies: Vec<String>,
        /// Its référent (convention art. 2): name, e-mail (campaign and report e-mails go there), phone.
        #[arg(long)]
        referent_name: Option<String>,
        #[arg(long)]
        referent_email: Option<String>,
        #[arg(long)]
        referent_phone: Option<String>,
        /// The convention's first and last days (AAAA-MM-JJ).
        #[arg(long)]
        convention_start: Option<chrono::NaiveDate>,
        #[arg(long)]
        convention_end: Option<chrono::NaiveDate>,
    },
    /// Set a review campaign (first and last days, AAAA-MM-JJ) and print its id.
    CreateCampaign {
        #[arg(long)]
        name: String,
        #[arg(long)]
        start: String,
        #[arg(long)]
        end: String,
    },
    /// Invite a person to an organisation and print the invitation link.
    Invite {
        #[arg(long)]
        organisation: String,
        #[arg(long)]
        email: String,
        #[arg(long, value_enum)]
        role: InviteRole,
        /// The address the link starts with.
        #[arg(long, env = "PROXIMITES_PUBLIC_URL", default_value = crate::app::DEFAULT_PUBLIC_URL)]
        public_url: String,
    },
    /// Create an API token for an organisation's scripts (or, with `--operator`, the platform
    /// operator's) and print it (shown once only).
    CreateToken {
        #[arg(
            long,
            required_unless_present = "operator",
            conflicts_with = "operator"
        )]
        organisation: Option<String>,
        /// A token of the platform operator (every organisation, organisation withdrawals).
        #[arg(long)]
        operator: bool,
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InviteRole {
    Admin,
    Editor,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Import N generated rows into a new SQLite file and report rows per second.
    Import {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Import N generated rows, build the search indexes and time in-process queries.
    Search {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 2_000)]
        queries: usize,
        /// Keep the database (and its text index) at this path, and reuse it when it already
        /// holds the N entries.
        #[arg(long)]
        database: Option<PathBuf>,
        /// Import this file from `proximites synth` instead of generating one.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Also write the figures to this file as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Time printed directories on the --database-url given: selection, composition, layout
    /// and PDF, in process, with the peak memory.
    Directory {
        /// The territory (see `directory --in`).
        #[arg(long = "in", default_value = "region:84")]
        within: String,
        /// Typology codes (none: every typology).
        #[arg(long)]
        typology: Vec<String>,
        #[arg(long, default_value = "a5")]
        format: String,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Load the Auvergne demo (1,283 town halls) into the database first, when it never was.
        #[arg(long)]
        demo: bool,
        /// Keep the last PDF here.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Import N generated rows (or reuse --database), then time the GIS exports: GeoPackage
    /// with R-tree, the full GeoJSON over HTTP, OGC pages first and deep, GDAL reading the OGC
    /// API.
    Export {
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Keep the database at this path, and reuse it when it already holds the N entries.
        #[arg(long)]
        database: Option<PathBuf>,
        /// Features GDAL reads through the OGC API.
        #[arg(long, default_value_t = 100_000)]
        gdal_features: u64,
        /// Timed repetitions of each HTTP measure.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Time the campaign pages' queries (progress, the list « à revoir ») on N generated entries.
    Campaign {
        #[arg(long, default_value_t = 300_000)]
        rows: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many organisations share the entries.
        #[arg(long, default_value_t = 10)]
        organisations: u64,
    },
    /// The live indexes on the --database-url given (benches/search.sh fills one with three
    /// million entries): single PATCHes over HTTP under a search load, many clients confirming
    /// entries, command-line imports while the server runs, a full text index build.
    Live {
        #[arg(long, default_value_t = 1_000)]
        patches: usize,
        #[arg(long, default_value_t = 64)]
        confirm_clients: usize,
        #[arg(long, default_value_t = 10_000)]
        confirms: usize,
        #[arg(long, default_value_t = 4)]
        search_clients: usize,
        #[arg(long, default_value_t = 15)]
        baseline_seconds: u64,
        /// Rows of each command-line import (repeat the option).
        #[arg(long = "import", default_values_t = [1_000u64, 100_000])]
        imports: Vec<u64>,
        /// Skip the full text index build.
        #[arg(long)]
        no_text_build: bool,
    },
    /// Time coverage on an existing database: all of France (every commune × every typology)
    /// and one département.
    Coverage {
        /// The département timed on its own.
        #[arg(long, default_value = "63")]
        departement: String,
        /// Repeat each measure this many times and report every run.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, env = "PROXIMITES_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where this instance keeps what it derives from the database (DIR/text, DIR/exports):
    /// each of several instances on one database needs its own. Default: beside the SQLite
    /// file (PATH.text, PATH.exports).
    #[arg(long, env = "PROXIMITES_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Start on an empty directory instead of loading the Auvergne town halls into a new database.
    #[arg(long, env = "PROXIMITES_NO_DEMO")]
    pub no_demo: bool,

    /// An address geocoder shaped like the IGN Géoplateforme's (`https://data.geopf.fr/geocodage`),
    /// which the server queries for `/api/v1/geocode`; none by default (communes only).
    #[arg(long, env = "PROXIMITES_GEOCODER_URL")]
    pub geocoder_url: Option<String>,

    /// A base-map tile source (`https://…/{z}/{x}/{y}.png`), fetched and cached by the server so
    /// that citizens' browsers call no third party; none by default: the map draws the communes.

    #[arg(long, env = "PROXIMITES_TILE_URL")]
    pub tile_url: Option<String>,

    /// The credit the tile source asks for, shown on the map.
    #[arg(
        long,
        env = "PROXIMITES_TILE_ATTRIBUTION",
        default_value = "© les contributeurs d'OpenStreetMap"
    )]
    pub tile_attribution: String,

    /// The address people reach this instance at, which the links it sends, the OGC API's
    /// links, the widget's snippets and the QR codes of printed guides start with. Without it,
    /// links follow a trusted proxy's `X-Forwarded-Host`, or a loopback `Host`, and otherwise
    /// start with http://127.0.0.1:8080: set it on any server reached from elsewhere.
    #[arg(long, env = "PROXIMITES_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// The SMTP server the outbox is sent through (`smtp://host:port`); without it e-mails wait
    /// in the outbox.
    #[arg(long, env = "PROXIMITES_SMTP_URL")]
    pub smtp_url: Option<String>,

    /// The sender of the e-mails.
    #[arg(
        long,
        env = "PROXIMITES_MAIL_FROM",
        default_value = "Proximités <ne-pas-repondre@proximites.localhost>"
    )]
    pub mail_from: String,

    /// Seconds between two rounds of the outbox (campaign e-mails due, messages to send).
    #[arg(long, env = "PROXIMITES_MAIL_INTERVAL", default_value_t = 60)]
    pub mail_interval: u64,

    /// Seconds between two detections of duplicates across sources while entries change (an
    /// entry typed in a form is grouped with the harvested one within that time; imports and
    /// harvests run it themselves).
    #[arg(long, env = "PROXIMITES_DUPLICATES_EVERY", default_value_t = 300)]
    pub duplicates_every: u64,

    /// Seconds a committed change may take to reach the caches of whole-directory products
    /// (GIS files, OGC counts, coverage, published counts, printed guides), so that a stream
    /// of small writes does not rebuild them after each one. Searches, entries and pages show
    /// a change at once. 0: rebuilt after every change.
    #[arg(long, env = "PROXIMITES_CACHE_STALENESS", default_value_t = 30)]
    pub cache_staleness: u64,

    /// Reverse proxies (addresses or CIDR networks, repeatable or comma-separated) whose
    /// `X-Forwarded-For` and `X-Forwarded-Proto` are believed; from anyone else they are
    /// ignored. Login and report limits and the per-client limits key on the address found.
    #[arg(long, env = "PROXIMITES_TRUSTED_PROXY")]
    pub trusted_proxy: Vec<String>,

    /// Heavy requests (exports of a selection, filtered or sorted OGC pages, cover previews)
    /// served at once; more get 503 and `Retry-After`.
    #[arg(long, env = "PROXIMITES_HEAVY_CONCURRENCY", default_value_t = crate::admission::DEFAULT_HEAVY_CONCURRENCY)]
    pub heavy_concurrency: usize,

    /// Heavy requests one client address may have running, bodies still being read included;
    /// more get 429 and `Retry-After`.
    #[arg(long, env = "PROXIMITES_HEAVY_PER_CLIENT", default_value_t = crate::admission::DEFAULT_HEAVY_PER_CLIENT)]
    pub heavy_per_client: usize,

    /// Open connections the server holds at most (more are closed at once); by default what
    /// the process's file descriptors allow, less a margin.
    #[arg(long, env = "PROXIMITES_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Open connections one address may hold (trusted proxies excepted).
    #[arg(long, env = "PROXIMITES_CONNECTIONS_PER_PEER", default_value_t = crate::admission::DEFAULT_CONNECTIONS_PER_PEER)]
    pub connections_per_peer: usize,

    /// Seconds a client has to send a request's head (and to start the next one on a kept
    /// connection) before it is disconnected.
    #[arg(long, env = "PROXIMITES_HEAD_TIMEOUT", default_value_t = crate::admission::DEFAULT_HEAD_TIMEOUT_SECONDS)]
    pub head_timeout: u64,
    #[command(flatten)]
    pub licence: LicenceArgs,
}

/// The licence the directory's data is published under, carried in every download.
#[derive(Debug, Args)]
pub struct LicenceArgs {
    #[arg(
        long,
        env = "PROXIMITES_LICENCE_NAME",
        default_value = "Licence Ouverte / Open Licence version 2.0"
    )]
    pub licence_name: String,
    #[arg(
        long,
        env = "PROXIMITES_LICENCE_URL",
        default_value = "https://www.etalab.gouv.fr/licence-ouverte-open-licence/"
    )]
    pub licence_url: String,
}

impl LicenceArgs {
    pub fn licence(&self) -> crate::export::Licence {
        crate::export::Licence {
            name: self.licence_name.clone(),
            url: self.licence_url.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Geojson,
    Gpkg,
    Fgb,
    Csv,
    Scdl,
    /// data·inclusion schema 1.x: `structures.json`, `services.json`, `structures.csv` and
    /// `services.csv` written into the `--output` directory.
    DataInclusion,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// A theme code.
    #[arg(long)]
    pub theme: Option<String>,
    /// Typology codes, comma-separated or repeated.
    #[arg(long)]
    pub typology: Vec<String>,
    /// A territory: commune:CODE, epci:SIREN, departement:CODE or region:CODE.
    #[arg(long = "in")]
    pub territory: Option<String>,
    /// The CRS: EPSG:2154 (Lambert-93), EPSG:5490, EPSG:2972, EPSG:2975, EPSG:4471; WGS84 by
    /// default (GeoJSON is WGS84 only).
    #[arg(long)]
    pub crs: Option<String>,
    /// The file to write (replaced only once complete); for data-inclusion, the directory.
    #[arg(short, long)]
    pub output: PathBuf,
    /// The public address of the online directory, which data·inclusion's `lien_source` links
    /// lead to.
    #[arg(long, env = "PROXIMITES_PUBLIC_URL", default_value = crate::app::DEFAULT_PUBLIC_URL)]
    pub public_url: String,
    #[command(flatten)]
    pub licence: LicenceArgs,
}

/// The national sources `proximites harvest` reads.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum HarvestSource {
    /// Annuaire de l'administration, « Base de données locales » (DILA): the bulk `.tar.bz2`,
    /// its `…-data.gouv_local.json`, or the explore API's JSON export.
    Dila,
    /// data·inclusion structures (schema 1.x), JSON or CSV: those of a network the crosswalk
    /// maps to a typology.
    DataInclusion,
    /// INSEE Base permanente des équipements: the CSV (`;`-separated) or the zip holding it,
    /// positions reprojected from Lambert-93 or the overseas UTM zones; rows matched to the
    /// entries of earlier years by SIRET, else by type, commune and position.
    Bpe,
}

#[derive(Debug, Args)]
pub struct DuplicatesArgs {
    /// The order of the national sources, kept for every later pass: `dila,data-inclusion,bpe`
    /// by default (entries signed by a contributor always come first).
    #[arg(long)]
    pub precedence: Option<String>,
}

#[derive(Debug, Args)]
pub struct HarvestArgs {
    #[arg(value_enum)]
    pub source: HarvestSource,
    /// The file as published.
    pub file: PathBuf,
    /// Read and count, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the full report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// data·inclusion only: the services file published with the structures (JSON or CSV);
    /// each structure's entry names the services it offers and takes their contact when it
    /// has none.
    #[arg(long)]
    pub services: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file: `.csv` (project or SCDL header), `.geojson` or `.json`.
    pub file: PathBuf,

    /// The contributing organisation the entries are attributed to (default: the SCDL `COLL_NOM`,
    /// else the file name).
    #[arg(long)]
    pub source: Option<String>,

    /// Validate and count without writing anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Import the valid rows and report the invalid ones instead of rejecting the whole file.
    #[arg(long)]
    pub skip_invalid: bool,

    /// Refuse a row whose position (outside its commune, missing), phone, e-mail, web site,
    /// hours, postcode or accessibility is doubtful, instead of importing it with a quality
    /// flag to check.
    #[arg(long)]
    pub strict: bool,

    /// Also write the full report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Number of entries to generate.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,

    /// Seed: the same seed gives the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Output CSV file.
    #[arg(short, long)]
    pub output: PathBuf,

    /// Only communes of this département (repeatable): a dense territory for benchmarks.
    #[arg(long)]
    pub departement: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum TerritoryCommand {
    /// Load reference files from DIR: communes.csv, epci.csv, departements.csv, regions.csv and
    /// commune boundaries in *.geojson.
    Import { dir: PathBuf },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rebuild the indexes from the database when they differ from it.
    #[arg(long)]
    pub repair: bool,
    /// The data directory of the instance whose text index to check (`serve --data-dir`).
    #[arg(long, env = "PROXIMITES_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Output format of `coverage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CoverageFormat {
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct CoverageArgs {
    /// The territory: `departement:63`, `region:84`, `epci:246300701`, `commune:63113`,
    /// `communes:63113,63300` or `france`.
    #[arg(long = "in")]
    pub within: String,

    /// A typology code, measured on its own; repeat for several (or comma-separate).
    #[arg(long)]
    pub typology: Vec<String>,

    /// A theme code, measured as the nearest entry of any of its typologies; repeatable.
    #[arg(long)]
    pub theme: Vec<String>,

    /// Distance thresholds in metres, comma-separated.
    #[arg(long, default_value = "5000,10000,20000")]
    pub thresholds: String,

    /// Communes farther than this many metres are the gaps (default: the largest threshold).
    #[arg(long)]
    pub gap_threshold: Option<f64>,

    /// The territory alone, without its département, région and France (faster).
    #[arg(long)]
    pub no_compare: bool,

    #[arg(long, value_enum, default_value = "csv")]
    pub format: CoverageFormat,

    /// The file to write; written whole or not at all.
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct DirectoryArgs {
    /// The territory: `commune:63113`, `epci:246300701`, `departement:63`, `region:84` or
    /// `communes:63113,63300`.
    #[arg(long = "in")]
    pub within: String,

    /// A theme code (all its typologies); repeatable or comma-separated. None: every theme.
    #[arg(long)]
    pub theme: Vec<String>,

    /// A typology code; repeatable or comma-separated.
    #[arg(long)]
    pub typology: Vec<String>,

    /// Sections by `theme` (then typology and commune) or by `commune` (then theme).
    #[arg(long, default_value = "theme")]
    pub group: String,

    /// `a5` (a folded booklet, pages by multiples of 4) or `a4`.
    #[arg(long, default_value = "a5")]
    pub format: String,

    /// The title on the cover (default « Guide des services publics »).
    #[arg(long)]
    pub title: Option<String>,

    /// The edition date, YYYY-MM-DD (default today).
    #[arg(long)]
    pub date: Option<String>,

    /// The publishing body (default: the territory's name).
    #[arg(long)]
    pub publisher: Option<String>,

    /// The publisher's logo: a PNG or SVG file of 2 MB at most.
    #[arg(long)]
    pub logo: Option<PathBuf>,

    /// Accent colour, #RRGGBB.
    #[arg(long)]
    pub color: Option<String>,

    /// Language of the fixed texts: fr or en.
    #[arg(long, default_value = "fr")]
    pub lang: String,

    /// Also write the guide as an accessible HTML page to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,

    /// The public address of the online directory, which the QR codes lead to.
    #[arg(long, env = "PROXIMITES_PUBLIC_URL", default_value = crate::app::DEFAULT_PUBLIC_URL)]
    pub public_url: String,

    /// The PDF to write; written whole or not at all.
    #[arg(short, long)]
    pub output: PathBuf,
}
