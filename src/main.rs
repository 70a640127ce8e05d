//! The `ripple` command line: run the pipeline, verify stores against the source, generate load,
//! check a config. This is the only place `anyhow` is used: below it, errors are typed.

use anyhow::Context;
use clap::{Parser, Subcommand};
use ripple::config::Config;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ripple",
    version,
    about = "Keeps stores in step with PostgreSQL through Debezium and Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the configured topics and apply every change to the sinks.
    Run {
        #[arg(long, short, default_value = "ripple.toml", env = "RIPPLE_CONFIG")]
        config: PathBuf,
        /// Exit once every assigned partition is caught up and nothing new arrived for this many
        /// milliseconds (for demos, tests and benchmarks).
        #[arg(long)]
        exit_when_idle_ms: Option<u64>,
    },
    /// Compare the source tables with each sink and report differences; exit code 0 only if equal.
    Verify {
        #[arg(long, short, default_value = "ripple.toml", env = "RIPPLE_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        args: ripple::verify::VerifyArgs,
    },
    /// Re-drive a dead-letter topic once the cause is fixed: each record is applied again to the
    /// sinks that route its original topic (or to the one sink that rejected it).
    Replay {
        #[arg(long, short, default_value = "ripple.toml", env = "RIPPLE_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        args: ripple::replay::ReplayArgs,
    },
    /// Write the seed workload (card transactions) into the source database.
    Loadgen(ripple::loadgen::LoadgenArgs),
    /// Validate a config and print it with defaults filled in and secrets masked.
    CheckConfig {
        #[arg(long, short, default_value = "ripple.toml", env = "RIPPLE_CONFIG")]
        config: PathBuf,
    },
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("invalid config {}", path.display()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RIPPLE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Run {
            config,
            exit_when_idle_ms,
        } => {
            let report = ripple::dashboard::verify_report_path(&config);
            let config = load(&config)?;
            let engine = ripple::Engine::builder(config)
                .verify_report(Some(report))
                .exit_when_idle(exit_when_idle_ms.map(std::time::Duration::from_millis))
                .build()
                .await?;
            let summary = engine.run(ripple::shutdown_signal()).await?;
            println!("{summary}");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Verify { config, args } => {
            let report_path = ripple::dashboard::verify_report_path(&config);
            let config = load(&config)?;
            let report = ripple::verify::run(&config, &args).await?;
            print!("{report}");
            // Left for the dashboard's sync panel; a read-only directory only costs the panel.
            if let Ok(mut json) = serde_json::to_value(&report) {
                json["finished_at"] = chrono::Utc::now().timestamp_millis().into();
                json["all_equal"] = report.all_equal().into();
                if let Err(e) = std::fs::write(&report_path, json.to_string()) {
                    tracing::debug!(error = %e, path = %report_path.display(), "verify report not kept");
                }
            }
            Ok(if report.all_equal() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
        Command::Replay { config, args } => {
            let config = load(&config)?;
            let summary = ripple::replay::run(config, &args).await?;
            println!("{summary}");
            Ok(if summary.undecodable == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
        Command::Loadgen(args) => {
            let summary = ripple::loadgen::run(&args).await?;
            println!("{summary}");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => {
            let config = load(&config)?;
            print!("{}", config.to_masked_toml());
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}
