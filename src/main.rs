//! The `proximites` binary: parses the command line and runs the chosen subcommand.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use proximites::cli::{BenchCommand, Cli, Command, CoverageFormat, TerritoryCommand};
use proximites::import::{self, ImportOptions, Input};
use proximites::{app, bench, boot, coverage, db, search, synth, territory};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("erreur / error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let started = std::time::Instant::now();
            // Installed before the demo import and the first request are counted.
            proximites::metrics::handle();
            // Held while serving: a restore refuses to replace the file under a running server.
            let _serving = db::hold_serving(&cli.database_url)?;
            let store =
                db::Store::connect_with(&cli.database_url, db::Checkpoints::Background).await?;
            tracing::info!(ms = started.elapsed().as_millis() as u64, "database open");
            let reference = boot::prepare(&store, !args.no_demo).await?;
            tracing::info!(ms = started.elapsed().as_millis() as u64, "reference ready");
            if let Some(dir) = &args.data_dir {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!("{} : création impossible ({e})", dir.display())
                })?;
            }
            let (text_dir, exports_dir) =
                db::derived_paths(&cli.database_url, args.data_dir.as_deref());
            let mut state = app::AppState::build_with(
                store,
                reference,
                &text_dir,
                Some(search::live::BACKGROUND_TEXT_BUILD_ABOVE),
            )
            .await?;
            state
                .live
                .set_cache_staleness(std::time::Duration::from_secs(args.cache_staleness));
            state.layers = std::sync::Arc::new(proximites::export::Layers::new(
                exports_dir,
                args.licence.licence(),
            ));
            if let Some(url) = &args.geocoder_url {
                state.geocoder = Some(proximites::territory::geocoder::Geocoder::new(url)?);
                tracing::info!(%url, "address geocoder configured");
            }
            if let Some(url) = &args.tile_url {
                let proxy = proximites::web::tiles::TileProxy::new(url, &args.tile_attribution)?;
                state = state.with_tiles(proxy);
                tracing::info!(%url, "base map tiles configured");
            }
            if let Some(configured) = &args.public_url {
                let public_url = proximites::directory::public_url(Some(configured))
                    .map_err(anyhow::Error::msg)?;
                state = state.with_public_url(&public_url);
            } else if !args.listen.ip().is_loopback() {
                tracing::warn!(
                    "--public-url non configurée : les liens envoyés commencent par {} / \
                     no --public-url: links sent start with it",
                    state.public_url
                );
            }
            state.admission = std::sync::Arc::new(proximites::admission::Admission {
                proxies: proximites::admission::TrustedProxies::parse(&args.trusted_proxy)
                    .map_err(anyhow::Error::msg)?,
                heavy: proximites::admission::HeavyGate::new(
                    args.heavy_concurrency,
                    args.heavy_per_client,
                ),
                connections: proximites::admission::Gate::new(
                    args.max_connections
                        .unwrap_or_else(proximites::admission::default_max_connections),
                    args.connections_per_peer,
                ),
                head_timeout: std::time::Duration::from_secs(args.head_timeout.max(1)),
            });
            let mailer = args
                .smtp_url
                .as_deref()
                .map(|url| proximites::mail::Mailer::parse(url, &args.mail_from))
                .transpose()?;
            let mail = tokio::spawn(proximites::mail::run(
                state.store.clone(),
                mailer,
                state.public_url.to_string(),
                std::time::Duration::from_secs(args.mail_interval.max(1)),
            ));
            let duplicates = tokio::spawn(proximites::services::duplicates::follow(
                state.store.clone(),
                state.reference.taxonomy.clone(),
                state.live.clone(),
                std::time::Duration::from_secs(args.duplicates_every.max(1)),
            ));
            let served = app::serve(state, args.listen).await;
            mail.abort();
            duplicates.abort();
            served?;
        }
        Command::Admin(command) => {
            let store = db::Store::connect(&cli.database_url).await?;
            let reference = boot::prepare(&store, false).await?;
            admin(&store, &reference, command).await?;
        }
        Command::Import(args) => {
            let store = db::Store::connect(&cli.database_url).await?;
            let reference = boot::prepare(&store, false).await?;
            let report = import::import(
                &store,
                &reference,
                Input::File(args.file),
                ImportOptions {
                    source: args.source,
                    dry_run: args.dry_run,
                    skip_invalid: args.skip_invalid,
                    strict: args.strict,
                    progress: std::io::stderr().is_terminal(),
                    ..ImportOptions::default()
                },
            )
            .await?;
            print_import_report(&store, &report, args.report.as_deref()).await?;
            let failed = report.rejected > 0 && !(args.skip_invalid && report.committed);
            return Ok(if failed {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            });
        }
        Command::Harvest(args) => {
            let store = db::Store::connect(&cli.database_url).await?;
            let reference = boot::prepare(&store, false).await?;
            let progress = std::io::stderr().is_terminal();
            let national = match args.source {
                proximites::cli::HarvestSource::Dila => import::National::Dila,
                proximites::cli::HarvestSource::DataInclusion => import::National::DataInclusion,
                proximites::cli::HarvestSource::Bpe => import::National::Bpe,
            };
            if args.services.is_some() && national != import::National::DataInclusion {
                anyhow::bail!(
                    "--services ne vaut que pour data-inclusion / only for data-inclusion"
                );
            }
            let report = import::harvest_with(
                &store,
                &reference,
                national,
                Input::File(args.file),
                args.services.map(Input::File),
                args.dry_run,
                progress,
            )
            .await?;
            print_import_report(&store, &report, args.report.as_deref()).await?;
            if report.committed {
                println!(
                    "  retirées de la source / withdrawn from the source {}",
                    report.withdrawn
                );
            } else if args.dry_run {
                println!(
                    "  à retirer de la source / to withdraw from the source {}",
                    report.missing.len()
                );
            }
            if let Some(unmapped) = &report.unmapped {
                println!(
                    "  sans typologie / without a typology {} : {}",
                    unmapped.records,
                    unmapped
                        .by_type
                        .iter()
                        .map(|(kind, n)| format!("{kind} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if let Some(services) = &report.data_inclusion_services {
                println!(
                    "  services lus / services read {} · structures qui en proposent / structures offering some {}",
                    services.services, services.structures_with_services
                );
            }
            if let Some(matching) = &report.matching {
                println!(
                    "  rapprochées / matched : par SIRET {} · par position {} · nouvelles {} · sans coordonnées {}",
                    matching.by_siret, matching.by_position, matching.new, matching.without_coordinates
                );
            }
            let failed = !report.committed && !args.dry_run;
            return Ok(if failed {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            });
        }
        Command::Backup { file } => {
            refuse_postgres(&cli.database_url, "backup")?;
            let pool = db::connect(&cli.database_url).await?;
            let started = std::time::Instant::now();
            let size = db::backup(&pool, &file).await?;
            println!(
                "sauvegarde / backup {} : {:.1} Mo en {:.1} s",
                file.display(),
                size as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
        }
        Command::Migrate => {
            let applied = match db::Engine::of(&cli.database_url) {
                db::Engine::Postgres => {
                    let pool = db::connect_postgres(&cli.database_url).await?;
                    db::applied_migration(&pool).await?
                }
                db::Engine::Sqlite => {
                    let pool = db::connect(&cli.database_url).await?;
                    db::applied_migration(&pool).await?
                }
            };
            println!(
                "{} : migration {applied} / at migration {applied}",
                db::redacted(&cli.database_url)
            );
        }
        Command::Restore { file } => {
            refuse_postgres(&cli.database_url, "restore")?;
            let restored = db::restore(&cli.database_url, &file).await?;
            println!(
                "restaurée / restored : {} fiches, migration {}{} ; les index se reconstruisent au prochain démarrage / indexes rebuild at the next start",
                restored.entries,
                restored.migration,
                restored.previous.map_or(String::new(), |p| format!(
                    " ; l'ancienne base est gardée / the previous database is kept : {}",
                    p.display()
                ))
            );
        }
        Command::Synth(args) => {
            let written = tokio::task::spawn_blocking(move || {
                synth::write_file_in(&args.output, args.count, args.seed, &args.departement)
            })
            .await??;
            println!("{written} fiches générées / entries generated");
        }
        Command::Duplicates(args) => {
            use proximites::services::duplicates::{refresh, Precedence};
            let store = db::Store::connect(&cli.database_url).await?;
            let reference = boot::prepare(&store, false).await?;
            if let Some(text) = &args.precedence {
                let precedence = Precedence::parse(text).map_err(anyhow::Error::msg)?;
                precedence.save(&store).await?;
            }
            let precedence = Precedence::load(&store).await?;
            let pass = refresh(&store, &reference.taxonomy, None).await?;
            println!(
                "ordre des sources / precedence : contributeurs, {}\n{} fiches examinées · {} groupes · {} masquées ({} nouvelles) · {} affichées à nouveau",
                precedence.to_text(),
                pass.candidates,
                pass.groups,
                pass.hidden,
                pass.newly_hidden,
                pass.shown_again
            );
        }
        Command::Check(args) => {
            let store = db::Store::connect(&cli.database_url).await?;
            let reference = boot::prepare(&store, false).await?;
            let (text_dir, _) = db::derived_paths(&cli.database_url, args.data_dir.as_deref());
            for line in search::log_report(&store, &text_dir).await? {
                println!("{line}");
            }
            let differences = search::check(&store, &text_dir).await?;
            for difference in &differences {
                println!("  {difference}");
            }
            if differences.is_empty() {
                println!("index à jour / indexes match the database");
            } else if args.repair {
                // Fails while a server holds the text index: that server applies the log itself.
                let live = search::live::LiveIndexes::open(&store, reference, &text_dir).await?;
                live.rebuild_all(&store).await?;
                drop(live);
                let left = search::check(&store, &text_dir).await?;
                println!(
                    "{} écarts réparés / differences repaired, {} restants / left",
                    differences.len(),
                    left.len()
                );
                if !left.is_empty() {
                    return Ok(ExitCode::FAILURE);
                }
            } else {
                println!(
                    "{} écarts / differences (--repair pour réparer / to repair)",
                    differences.len()
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Export(args) => {
            let store = db::Store::connect(&cli.database_url).await?;
            let reference = boot::prepare(&store, false).await?;
            let started = std::time::Instant::now();
            let count =
                proximites::export::routes::export_to_file(&store, &reference, &args).await?;
            eprintln!(
                "{count} fiches écrites dans {} en {:.1} s",
                args.output.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Command::Coverage(args) => {
            let store = db::Store::connect(&cli.database_url).await?;
            let reference = boot::prepare(&store, false).await?;
            let request = coverage::Request::parse(
                &coverage::RawRequest {
                    area: &args.within,
                    typologies: args.typology.iter().map(String::as_str).collect(),
                    themes: args.theme.iter().map(String::as_str).collect(),
                    thresholds: Some(&args.thresholds),
                    gap_threshold: args.gap_threshold,
                    compare: !args.no_compare,
                },
                &reference.taxonomy,
                &reference.locator,
            )
            .map_err(|e| anyhow::anyhow!(proximites::error::Problem::from(&e).detail))?;
            let position = db::log_head(&store).await?;
            let spatial = search::spatial::load(&store).await?;
            let index = std::sync::Arc::new(search::engine::SearchIndex {
                spatial,
                version: Some(position.to_string()),
                position,
            });
            let output = args.output.clone();
            let format = args.format;
            let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
                let report = coverage::Coverage::default()
                    .report(&index, &reference.locator, &reference.taxonomy, &request)
                    .map_err(|e| anyhow::anyhow!(proximites::error::Problem::from(&e).detail))?;
                coverage::write_file(&report, &output, format == CoverageFormat::Json)?;
                Ok(coverage::summary(&report))
            })
            .await??;
            println!("{summary}");
        }
        Command::Directory(args) => {
            let store = db::Store::connect(&cli.database_url).await?;
            let reference = boot::prepare(&store, false).await?;
            let summary = directory_command(&store, &reference, args).await?;
            println!("{summary}");
        }
        Command::Bench(BenchCommand::Directory {
            within,
            typology,
            format,
            runs,
            demo,
            output,
        }) => {
            let figures = bench::directory(bench::DirectoryBench {
                database_url: cli.database_url.clone(),
                within,
                typologies: typology,
                format,
                runs,
                demo,
                output,
            })
            .await?;
            println!("{figures}");
        }
        Command::Bench(BenchCommand::Live {
            patches,
            confirm_clients,
            confirms,
            search_clients,
            baseline_seconds,
            imports,
            no_text_build,
        }) => {
            let figures = bench::live::live(bench::live::LiveBench {
                database: cli
                    .database_url
                    .strip_prefix("sqlite://")
                    .unwrap_or(&cli.database_url)
                    .into(),
                patches,
                confirm_clients,
                confirms,
                search_clients,
                baseline_seconds,
                imports,
                text_build: !no_text_build,
            })
            .await?;
            println!("{figures}");
        }
        Command::Bench(BenchCommand::Coverage { departement, runs }) => {
            let figures = bench::coverage(&cli.database_url, &departement, runs).await?;
            println!("{figures}");
        }
        Command::Bench(BenchCommand::Export {
            rows,
            seed,
            database,
            gdal_features,
            runs,
        }) => {
            let figures = bench::export(bench::ExportBench {
                rows,
                seed,
                database,
                gdal_features,
                runs,
            })
            .await?;
            println!("{figures}");
        }
        Command::Bench(BenchCommand::Campaign {
            rows,
            seed,
            organisations,
        }) => {
            println!("{}", bench::campaign(rows, seed, organisations).await?);
        }
        Command::Bench(BenchCommand::Import { rows, seed }) => {
            println!("{}", bench::import(rows, seed).await?);
        }
        Command::Bench(BenchCommand::Search {
            rows,
            seed,
            queries,
            database,
            csv,
            json,
        }) => {
            let figures = bench::search(bench::SearchBench {
                rows,
                seed,
                queries,
                database,
                csv,
                json,
            })
            .await?;
            println!("{figures}");
        }
        Command::Territory(TerritoryCommand::Import { dir }) => {
            let store = db::Store::connect(&cli.database_url).await?;
            boot::prepare(&store, false).await?;
            let files =
                tokio::task::spawn_blocking(move || territory::ReferenceFiles::read_dir(&dir))
                    .await??;
            let summary = territory::store::load_reference(&store, &files).await?;
            println!(
                "régions {} · départements {} · EPCI {} · communes {} (dont {} avec contour / with boundary)",
                summary.regions, summary.departements, summary.epcis, summary.communes, summary.boundaries
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `proximites directory`: the guide written whole or not at all; wrong choices, an unreadable
/// logo or an empty selection end with the message and a non-zero exit, writing nothing.
async fn directory_command(
    store: &db::Store,
    reference: &proximites::import::Reference,
    args: proximites::cli::DirectoryArgs,
) -> anyhow::Result<String> {
    use proximites::directory::{self, jobs, Choices, RawChoices};
    // The user's mistakes in the words the pages use; a fault with its cause, which the person
    // at the terminal runs the instance and needs to read.
    let detail = |e: proximites::error::Error| {
        if e.status().is_server_error() {
            anyhow::anyhow!("{e}")
        } else {
            anyhow::anyhow!(proximites::error::Problem::from(&e).detail)
        }
    };
    let public_url = directory::public_url(Some(&args.public_url)).map_err(anyhow::Error::msg)?;
    let logo = match &args.logo {
        Some(path) => Some(directory::read_logo(path).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let raw = RawChoices {
        territory: args.within.clone(),
        themes: args.theme.clone(),
        typologies: args.typology.clone(),
        group: Some(args.group.clone()),
        format: Some(args.format.clone()),
        title: args.title.clone(),
        date: args.date.clone(),
        publisher: args.publisher.clone(),
        color: args.color.clone(),
        lang: Some(args.lang.clone()),
    };
    let today = search::hours::paris_now().date_naive();
    let choices = Choices::parse(&raw, logo, &reference.taxonomy, &reference.locator, today)
        .map_err(detail)?;
    if let Some(logo) = choices.logo.clone() {
        tokio::task::spawn_blocking(move || directory::render::check_logo(&logo))
            .await?
            .map_err(|e| detail(jobs::render_error(e)))?;
    }
    let version = db::data_version(store).await?.unwrap_or_default();
    let key = choices.key(&version, &public_url);
    let hours = std::sync::Arc::new(search::hours::HoursEvaluator::new());
    let prepared = jobs::prepare(store, reference, hours, choices, &public_url, key)
        .await
        .map_err(detail)?;
    let output = tokio::task::spawn_blocking(move || jobs::render(&prepared, &|_, _| {}))
        .await?
        .map_err(detail)?;
    directory::write_atomically(&args.output, &output.pdf)?;
    if let Some(path) = &args.html {
        directory::write_atomically(path, output.html.as_bytes())?;
    }
    let conformance = match &output.conformance {
        directory::render::Conformance::PdfUa1 => "PDF/UA-1".to_owned(),
        directory::render::Conformance::Tagged { ua_refused } => {
            format!("PDF balisé / tagged (PDF/UA-1 refusé / refused : {ua_refused})")
        }
    };
    Ok(format!(
        "{} : {} pages, {} fiches / entries, {conformance}, {:.2} s",
        args.output.display(),
        output.pages,
        output.entries,
        output.millis as f64 / 1000.0
    ))
}

/// The operator's commands: each prints one line a script can read (an id, a link, a token).
async fn admin(
    store: &db::Store,
    reference: &import::Reference,
    command: proximites::cli::AdminCommand,
) -> anyhow::Result<()> {
    use proximites::accounts::{store, Area, Role, Territory};
    use proximites::cli::{AdminCommand, InviteRole};
    let fields = |error: proximites::error::Error| match error {
        proximites::error::Error::Invalid(errors) => anyhow::anyhow!(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")),
        other => anyhow::anyhow!(other.to_string()),
    };
    match command {
        AdminCommand::CreateOperator { email, .. } => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            let id = store::create_operator(store, &email, password)
                .await
                .map_err(fields)?;
            println!("{id}");
        }
        AdminCommand::CreateOrganisation {
            name,
            kind,
            territory,
            siren,
            typologies,
            referent_name,
            referent_email,
            referent_phone,
            convention_start,
            convention_end,
        } => {
            let areas = territory
                .iter()
                .map(|code| Area::parse(code))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| anyhow::anyhow!("champ « territory » : {m}"))?;
            let new = store::NewOrganisation {
                name,
                kind,
                siren,
                territory: Territory(areas),
                typologies,
                referent_name,
                referent_email,
                referent_phone,
                convention_start,
                convention_end,
            };
            if let Some(error) = new.check_reference(reference).into_iter().next() {
                anyhow::bail!("{error}");
            }
            let organisation = store::create_organisation(store, &new)
                .await
                .map_err(fields)?;
            println!("{}", organisation.id);
        }
        AdminCommand::Invite {
            organisation,
            email,
            role,
            public_url,
        } => {
            let role = match role {
                InviteRole::Admin => Role::Admin,
                InviteRole::Editor => Role::Editor,
            };
            let secret = store::invite(store, &organisation, &email, role)
                .await
                .map_err(fields)?;
            println!(
                "{}/espace/invitation/{secret}",
                public_url.trim_end_matches('/')
            );
        }
        AdminCommand::CreateCampaign { name, start, end } => {
            let campaign = proximites::espace::campaigns::create(store, &name, &start, &end)
                .await
                .map_err(fields)?;
            println!("{}", campaign.id);
        }
        AdminCommand::CreateToken {
            organisation, name, ..
        } => {
            let created = match organisation {
                Some(organisation) => store::create_token(store, &organisation, &name).await,
                None => store::create_operator_token(store, &name).await,
            };
            let (_, token) = created.map_err(fields)?;
            println!("{token}");
        }
    }
    Ok(())
}

/// Prints an import's errors and summary, writes its JSON report when asked, and after a commit
/// folds the write-ahead log into the database and says where the change log stands.
async fn print_import_report(
    store: &db::Store,
    report: &import::ImportReport,
    json: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    for error in &report.errors {
        println!("  {error}");
    }
    // The whole list is in the JSON report: a national file may flag thousands of rows.
    const WARNINGS_SHOWN: usize = 20;
    for warning in report.warnings.iter().take(WARNINGS_SHOWN) {
        println!("  à vérifier / to check: {warning}");
    }
    if report.warnings.len() > WARNINGS_SHOWN {
        println!(
            "  … et {} autres points à vérifier (--report) / and {} more to check",
            report.warnings.len() - WARNINGS_SHOWN,
            report.warnings.len() - WARNINGS_SHOWN
        );
    }
    println!("{}", report.summary());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)?;
    }
    if report.committed {
        // Folds the write-ahead log into the database file: the next start reads one file
        // rather than replaying a log as large as the import.
        db::checkpoint(store).await?;
        // The indexes follow the change log the import wrote: a running server applies it
        // within a second, otherwise the next `serve` does.
        println!(
            "journal des changements à la ligne / change log at row {} : un serveur en marche l'applique, sinon le prochain démarrage / a running server applies it, else the next start",
            db::log_head(store).await?
        );
    }
    Ok(())
}

/// `backup` and `restore` copy a SQLite file; a PostgreSQL database is the DBA's tools' to copy.
fn refuse_postgres(url: &str, command: &str) -> anyhow::Result<()> {
    if db::Engine::of(url) == db::Engine::Postgres {
        anyhow::bail!(
            "`{command}` copie un fichier SQLite ; sauvegardez une base PostgreSQL avec pg_dump -Fc \
             (ou pg_basebackup et l'archivage des WAL), restaurez-la avec pg_restore : les \
             répertoires de données des instances se reconstruisent seuls / `{command}` copies a \
             SQLite file: back up PostgreSQL with pg_dump -Fc (or pg_basebackup and WAL \
             archiving), restore with pg_restore; the instances' data directories rebuild"
        );
    }
    Ok(())
}
