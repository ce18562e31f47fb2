//! The `proximites` binary: parses the command line and runs the chosen subcommand.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use proximites::cli::{BenchCommand, Cli, Command, TerritoryCommand};
use proximites::import::{self, ImportOptions, Input};
use proximites::{app, bench, boot, db, synth, territory};

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
            let pool = db::connect(&cli.database_url).await?;
            let reference = boot::prepare(&pool, !args.no_demo).await?;
            let text_dir = db::text_index_dir(&cli.database_url);
            let state = app::AppState::build(pool, reference, &text_dir).await?;
            app::serve(state, args.listen).await?;
        }
        Command::Import(args) => {
            let pool = db::connect(&cli.database_url).await?;
            let reference = boot::prepare(&pool, false).await?;
            let report = import::import(
                &pool,
                &reference,
                Input::File(args.file),
                ImportOptions {
                    source: args.source,
                    dry_run: args.dry_run,
                    skip_invalid: args.skip_invalid,
                    progress: std::io::stderr().is_terminal(),
                },
            )
            .await?;
            for error in &report.errors {
                println!("  {error}");
            }
            println!("{}", report.summary());
            if let Some(path) = args.report {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
            }
            let failed = report.rejected > 0 && !(args.skip_invalid && report.committed);
            return Ok(if failed {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            });
        }
        Command::Synth(args) => {
            let written = tokio::task::spawn_blocking(move || {
                synth::write_file(&args.output, args.count, args.seed)
            })
            .await??;
            println!("{written} fiches générées / entries generated");
        }
        Command::Bench(BenchCommand::Import { rows, seed }) => {
            println!("{}", bench::import(rows, seed).await?);
        }
        Command::Bench(BenchCommand::Search {
            rows,
            seed,
            queries,
        }) => {
            println!("{}", bench::search(rows, seed, queries).await?);
        }
        Command::Territory(TerritoryCommand::Import { dir }) => {
            let pool = db::connect(&cli.database_url).await?;
            boot::prepare(&pool, false).await?;
            let files =
                tokio::task::spawn_blocking(move || territory::ReferenceFiles::read_dir(&dir))
                    .await??;
            let summary = territory::store::load_reference(&pool, &files).await?;
            println!(
                "régions {} · départements {} · EPCI {} · communes {} (dont {} avec contour / with boundary)",
                summary.regions, summary.departements, summary.epcis, summary.communes, summary.boundaries
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
