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
        args: VerifyFlags,
    },
    /// Write every row of the source tables into one or more sinks, from a fresh read of the
    /// source, through each sink's versioned write path (a sink or route added later): a change
    /// arriving meanwhile still wins.
    Backfill {
        #[arg(long, short, default_value = "ripple.toml", env = "RIPPLE_CONFIG")]
        config: PathBuf,
        /// The sink to fill (repeatable).
        #[arg(long = "sink", value_name = "NAME", required = true)]
        sinks: Vec<String>,
        /// A source table to write, as SCHEMA.TABLE (repeatable). Default: every source table the
        /// sink's routes give it.
        #[arg(long = "table", value_name = "SCHEMA.TABLE")]
        tables: Vec<String>,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-drive a dead-letter topic once the cause is fixed: each record is applied again to the
    /// sinks that route its original topic (or to the one sink that rejected it).
    Replay {
        #[arg(long, short, default_value = "ripple.toml", env = "RIPPLE_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        args: ReplayFlags,
    },
    /// Write the seed workload (card transactions) into the source database.
    Loadgen(LoadgenFlags),
    /// Validate a config and print it with defaults filled in and secrets masked.
    CheckConfig {
        #[arg(long, short, default_value = "ripple.toml", env = "RIPPLE_CONFIG")]
        config: PathBuf,
    },
}

/// `ripple verify` flags.
#[derive(clap::Args, Debug, Clone)]
struct VerifyFlags {
    /// A source table to check, as SCHEMA.TABLE (repeatable; a bare TABLE means public.TABLE).
    /// Names are exact and case-sensitive; double-quote a part that contains a dot. Default: every
    /// source table the replica also has, outside the system schemas and schemas named `_ripple*`.
    #[arg(long = "table", value_name = "SCHEMA.TABLE")]
    tables: Vec<String>,
    /// Check only this sink (repeatable). Default: every sink verify can read back (postgres, redis,
    /// elasticsearch).
    #[arg(long = "sink", value_name = "NAME")]
    sinks: Vec<String>,
    /// Sample keys shown for each kind of difference (missing, extra, different).
    #[arg(long, value_name = "N", default_value_t = 5)]
    samples: usize,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Memory one comparison may hold, in MiB, whatever the table's size (chunks of rows read
    /// and compared, the ids read again to name rows only a sink has).
    #[arg(long, value_name = "MIB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(8..))]
    max_memory_mb: u64,
    /// Rewrite every row found different, missing or extra from a fresh read of the source,
    /// through each sink's versioned write path (a change arriving meanwhile still wins), then
    /// compare again; the report is the second comparison, with what the repair did.
    #[arg(long)]
    repair: bool,
    /// Live verification, for a system where changes never stop: each difference is read again
    /// (after 1 s, then doubling) until it agrees or --settle-s is spent, and only what still
    /// differs is reported.
    #[arg(long)]
    live: bool,
    /// With --live: how long differences may take to agree, in seconds.
    #[arg(long, value_name = "S", default_value_t = 60, requires = "live")]
    settle_s: u64,
}

impl From<VerifyFlags> for ripple::verify::VerifyArgs {
    fn from(f: VerifyFlags) -> Self {
        Self {
            tables: f.tables,
            sinks: f.sinks,
            samples: f.samples,
            json: f.json,
            max_memory_mb: f.max_memory_mb as usize,
            repair: f.repair,
            settle: f.live.then(|| std::time::Duration::from_secs(f.settle_s)),
            routed_only: false,
            backfill: false,
        }
    }
}

/// `ripple replay` flags: one of --dead-letter, --topic and --file.
#[derive(clap::Args, Debug, Clone)]
struct ReplayFlags {
    /// The dead-letter topic to re-drive, from its beginning to its current end.
    #[arg(
        long = "dead-letter",
        value_name = "TOPIC",
        required_unless_present_any = ["topic", "file"],
        conflicts_with_all = ["topic", "file"]
    )]
    dead_letter: Option<String>,
    /// A file of recorded records to re-apply, one JSON object a line as `kcat -C -J` prints
    /// them: `topic`, `partition`, `offset`, and `key` / `payload` as text (null for none), or
    /// `key_base64` / `payload_base64` for binary (Avro) records.
    #[arg(long, value_name = "PATH", conflicts_with = "topic")]
    file: Option<PathBuf>,
    /// A change topic to re-apply, from `--from-offset` / `--from-timestamp` (default: its
    /// beginning) to its current end.
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// With --topic: start every partition at this offset.
    #[arg(
        long,
        value_name = "N",
        requires = "topic",
        conflicts_with = "from_timestamp"
    )]
    from_offset: Option<i64>,
    /// With --topic: start every partition at its first record at or after this time
    /// (RFC 3339, e.g. 2026-11-25T18:00:00Z).
    #[arg(long, value_name = "TIME", requires = "topic", value_parser = parse_time)]
    from_timestamp: Option<i64>,
    /// Apply only to this sink (repeatable).
    #[arg(long = "sink", value_name = "NAME")]
    sinks: Vec<String>,
    /// How long reading a topic may wait for its next record before its end (brokers down or
    /// slow), in seconds, before the replay gives up.
    #[arg(long, value_name = "S", default_value_t = ripple::replay::DEFAULT_READ_TIMEOUT.as_secs())]
    read_timeout_s: u64,
}

impl From<ReplayFlags> for ripple::replay::ReplayOptions {
    fn from(f: ReplayFlags) -> Self {
        use ripple::replay::{Input, Start};
        let input = match (f.dead_letter, f.file, f.topic) {
            (Some(topic), _, _) => Input::DeadLetters(topic),
            (None, Some(path), _) => Input::File(path),
            (None, None, topic) => Input::Topic {
                topic: topic.expect("clap requires one of the three"),
                start: match (f.from_offset, f.from_timestamp) {
                    (Some(o), _) => Start::Offset(o),
                    (None, Some(ms)) => Start::Time(ms),
                    (None, None) => Start::Beginning,
                },
            },
        };
        Self {
            input,
            sinks: f.sinks,
            read_timeout: std::time::Duration::from_secs(f.read_timeout_s),
        }
    }
}

/// An RFC 3339 time as milliseconds since the epoch.
fn parse_time(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-11-25T18:00:00Z: {e}"))
}

/// `ripple loadgen` flags; the defaults are `LoadgenArgs::default()`'s.
#[derive(clap::Args, Debug, Clone)]
struct LoadgenFlags {
    /// The source PostgreSQL.
    #[arg(
        long,
        env = "RIPPLE_SOURCE_URL",
        default_value = "postgres://postgres@127.0.0.1:15432/app"
    )]
    url: String,
    /// Table name, in schema `public`.
    #[arg(long, default_value = "transactions")]
    table: String,
    /// Drop the table first, for a fresh start.
    #[arg(long)]
    drop: bool,
    /// Create the table, replica identity, audit columns and triggers where missing.
    #[arg(long)]
    setup: bool,
    /// Changes to write (inserts + updates + deletes + truncates); 0 only sets up.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Changes per second; 0 writes as fast as the database takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Same seed and same starting table: same changes (the table's existing keys are mixed into
    /// the seed, so running again on a filled table inserts new keys).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Percentages of inserts, updates and deletes.
    #[arg(long, default_value = "60,30,10", value_parser = ripple::loadgen::parse_mix)]
    mix: ripple::loadgen::Mix,
    /// Send every update to the table's first N keys (an update-heavy load on hot keys).
    #[arg(long, value_name = "N")]
    hot_keys: Option<usize>,
    /// Truncate the table once, after this many changes (the truncate counts as one change).
    #[arg(long)]
    truncate_after: Option<u64>,
    /// Changes per source transaction.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
}

impl From<LoadgenFlags> for ripple::loadgen::LoadgenArgs {
    fn from(f: LoadgenFlags) -> Self {
        Self {
            url: f.url,
            table: f.table,
            drop: f.drop,
            setup: f.setup,
            count: f.count,
            rate: f.rate,
            seed: f.seed,
            mix: f.mix,
            hot_keys: f.hot_keys,
            truncate_after: f.truncate_after,
            batch: f.batch,
        }
    }
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
            let report = ripple::verify::run(&config, &args.into()).await?;
            print!("{report}");
            ripple::verify::background::write_report(&report_path, &report);
            Ok(if report.all_equal() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
        Command::Backfill {
            config,
            sinks,
            tables,
            json,
        } => {
            let config = load(&config)?;
            let args = ripple::verify::VerifyArgs {
                sinks,
                tables,
                json,
                backfill: true,
                ..Default::default()
            };
            let report = ripple::verify::run(&config, &args).await?;
            print!("{report}");
            Ok(if report.all_equal() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
        Command::Replay { config, args } => {
            let config = load(&config)?;
            let summary = ripple::replay::run(config, &args.into()).await?;
            println!("{summary}");
            Ok(if summary.undecodable == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
        Command::Loadgen(args) => {
            let summary = ripple::loadgen::run(&args.into()).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenFlags,
    }

    #[test]
    fn loadgen_flags_have_the_documented_defaults() {
        let cli = Cli::try_parse_from(["loadgen", "--url", "postgres://x@h/db"]).unwrap();
        let a: ripple::loadgen::LoadgenArgs = cli.args.into();
        assert_eq!(a.table, "transactions");
        assert_eq!((a.count, a.rate, a.seed, a.batch), (10_000, 0, 42, 100));
        assert_eq!(a.mix, ripple::loadgen::Mix::default());
        assert_eq!(a.truncate_after, None);
        assert!(!a.drop && !a.setup);
        let cli = Cli::try_parse_from([
            "loadgen",
            "--url",
            "u",
            "--table",
            "t2",
            "--drop",
            "--setup",
            "--count",
            "5",
            "--rate",
            "7",
            "--seed",
            "9",
            "--mix",
            "20,40,40",
            "--truncate-after",
            "3",
            "--batch",
            "2",
        ])
        .unwrap();
        let a: ripple::loadgen::LoadgenArgs = cli.args.into();
        assert_eq!(
            (
                a.table.as_str(),
                a.count,
                a.rate,
                a.seed,
                a.truncate_after,
                a.batch
            ),
            ("t2", 5, 7, 9, Some(3), 2)
        );
        assert!(a.drop && a.setup);
        assert!(Cli::try_parse_from(["loadgen", "--batch", "0"]).is_err());
        assert!(Cli::try_parse_from(["loadgen", "--mix", "1,2,3"]).is_err());
    }

    /// The library's defaults are the CLI's.
    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["loadgen"]).unwrap();
        let (a, d): (ripple::loadgen::LoadgenArgs, _) =
            (cli.args.into(), ripple::loadgen::LoadgenArgs::default());
        assert_eq!(format!("{a:?}"), format!("{d:?}"));
        #[derive(Parser)]
        struct Verify {
            #[command(flatten)]
            args: VerifyFlags,
        }
        let v: ripple::verify::VerifyArgs = Verify::try_parse_from(["verify"]).unwrap().args.into();
        assert_eq!(
            format!("{v:?}"),
            format!("{:?}", ripple::verify::VerifyArgs::default())
        );
    }
}
