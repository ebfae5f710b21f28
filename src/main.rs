//! The churnwatch binary: parses the command line, sets up logging and
//! hands over to one library call. Errors get their context here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use churnwatch::config::Config;
use churnwatch::engine::event::Ts;
use churnwatch::replay::{ReplayOptions, replay};

#[derive(Parser)]
#[command(name = "churnwatch", version, about = "Streaming churn alerts for key customers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay JSON-lines event files in event time; alerts to stdout.
    Replay {
        /// Config file (TOML); built-in defaults without it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// After the input, advance the watermark to this RFC 3339 time.
        #[arg(long, value_parser = parse_ts)]
        until: Option<Ts>,
        /// Write rejected lines with their reasons to this JSON-lines file.
        #[arg(long)]
        dead_letter: Option<PathBuf>,
        /// Input files in order; `-` reads standard input.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
}

fn parse_ts(s: &str) -> Result<Ts, String> {
    Ts::parse_rfc3339(s).ok_or_else(|| format!("`{s}` is not an RFC 3339 timestamp with offset"))
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    match path {
        Some(p) => Config::load(p).with_context(|| format!("loading config {}", p.display())),
        None => Ok(Config::default()),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("churnwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Replay {
            config,
            until,
            dead_letter,
            inputs,
        } => {
            let config = load_config(config.as_ref())?;
            let options = ReplayOptions {
                inputs,
                until,
                dead_letter,
                now: Ts(chrono::Utc::now().timestamp_millis()),
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            let mut err = std::io::stderr();
            let summary = replay(&config, &options, &mut out, &mut err).context("replay failed")?;
            eprintln!("{summary}");
            Ok(())
        }
    }
}
