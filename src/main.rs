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
#[command(
    name = "churnwatch",
    version = env!("CHURNWATCH_VERSION"),
    about = "Streaming churn alerts for key customers"
)]
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
        /// Exit 3 when more lines than this are rejected: a count (`10`)
        /// or a share of the lines read (`0.5%`). Without it, only a
        /// replay that applies nothing from a non-empty input exits 3.
        #[arg(long)]
        max_rejected: Option<churnwatch::replay::MaxRejected>,
        #[command(flatten)]
        input: InputArgs,
    },
    /// Consume the input topics as one member of a consumer group.
    Run {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Bootstrap servers, overriding `kafka.brokers`.
        #[arg(long)]
        brokers: Option<String>,
    },
    /// The whole pipeline on an in-process Kafka with a synthetic population.
    Demo {
        /// Seed of the synthetic population.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Number of customers.
        #[arg(long, default_value_t = 3000)]
        customers: usize,
        /// Simulated days per wall-clock second.
        #[arg(long, default_value_t = 5.0)]
        speed: f64,
        /// Stop after this long (e.g. `30s`); default: until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Fit the BG/NBD model of the risk score on purchase histories; prints
    /// a `[risk.model]` fragment for the config.
    Fit {
        /// Config file (TOML); built-in defaults without it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Fit on the history up to this RFC 3339 time (default: all of it).
        #[arg(long, value_parser = parse_ts)]
        until: Option<Ts>,
        /// Also write the fragment to this file.
        #[arg(long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        input: InputArgs,
    },
    /// Measure alerts and the risk score against what happened after a cut.
    Evaluate {
        /// The cut T (RFC 3339): state is taken here.
        #[arg(long, value_parser = parse_ts)]
        cut: Ts,
        /// Churned = no purchase in (T, T + horizon], e.g. `90d`.
        #[arg(long, value_parser = humantime::parse_duration)]
        horizon: std::time::Duration,
        /// Config file (TOML); built-in defaults without it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Write one JSON line per customer here.
        #[arg(long)]
        scores: Option<PathBuf>,
        /// Write a self-contained HTML report here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Print the figures as one JSON object instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        input: InputArgs,
    },
    /// Validate a config and show what its mappings make of sample
    /// records: the first events, then every reject and skip reason with
    /// an example.
    Check {
        /// Config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Events to print.
        #[arg(long, default_value_t = 5)]
        sample: usize,
        /// Records of a mapped topic, as TOPIC=FILE (repeatable).
        #[arg(long = "input", value_name = "TOPIC=FILE", value_parser = parse_input)]
        mapped: Vec<(String, PathBuf)>,
        /// Also check the cluster (topics, partition counts, cleanup
        /// policies) without joining the group; without a value, at
        /// `kafka.brokers`.
        #[arg(long, value_name = "BROKERS", num_args = 0..=1, default_missing_value = "")]
        brokers: Option<String>,
        /// Native JSON-lines files.
        inputs: Vec<PathBuf>,
    },
    /// Write a synthetic population as JSON lines, or produce it to Kafka.
    Generate {
        /// Number of customers.
        #[arg(long, default_value_t = 10_000)]
        customers: usize,
        /// Simulated days.
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Stop after this many events (whole days are not cut otherwise).
        #[arg(long)]
        max_events: Option<u64>,
        /// Seed: the same seed gives the same events.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Day 0 (RFC 3339); default 2026-01-01T00:00:00Z.
        #[arg(long, value_parser = parse_ts)]
        start: Option<Ts>,
        /// Output file (`-` for stdout, the default).
        #[arg(long, default_value = "-")]
        output: PathBuf,
        /// Produce to this Kafka instead of writing lines (topics from the config).
        #[arg(long)]
        brokers: Option<String>,
        /// Config file naming the topics (with --brokers).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Plant churn with a known answer in this share (0..1) of the
        /// customers: they stop, fade or lose rep contact first, on a day in
        /// the middle half of the simulated days.
        #[arg(long, default_value_t = 0.0)]
        planted_churn: f64,
        /// Write who churns, how and when as JSON lines to this file.
        #[arg(long)]
        truth: Option<PathBuf>,
        /// Kind of population: `established` (settled customers, the
        /// default) or `young` (purchase-heavy, still climbing the ranks).
        #[arg(long, value_enum, default_value_t)]
        shape: churnwatch::generate::Shape,
    },
}

fn parse_ts(s: &str) -> Result<Ts, String> {
    Ts::parse_rfc3339(s).ok_or_else(|| format!("`{s}` is not an RFC 3339 timestamp with offset"))
}

/// Where history comes from: native files and mapped topic files.
#[derive(clap::Args, Debug)]
struct InputArgs {
    /// Records of a topic mapped by the config's `[[inputs]]` entry for it,
    /// as TOPIC=FILE (repeatable); all inputs are merged in event time.
    #[arg(long = "input", value_name = "TOPIC=FILE", value_parser = parse_input)]
    mapped: Vec<(String, PathBuf)>,
    /// Native JSON-lines files, read in order as one stream; `-` reads
    /// standard input.
    #[arg(required_unless_present = "mapped")]
    inputs: Vec<PathBuf>,
}

fn parse_input(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((topic, file)) if !topic.is_empty() && !file.is_empty() => {
            Ok((topic.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("`{s}` is not TOPIC=FILE")),
    }
}

/// The command ran, but its input was not good enough to call it a
/// success: exit code 3, apart from failures (1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Shortfall(String);

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    match path {
        Some(p) => Config::load(p).with_context(|| format!("loading config {}", p.display())),
        None => Ok(Config::default()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGTERM handler; Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}

impl Command {
    /// The config file the command reads, if any.
    fn config(&self) -> Option<&PathBuf> {
        match self {
            Command::Replay { config, .. }
            | Command::Fit { config, .. }
            | Command::Evaluate { config, .. }
            | Command::Generate { config, .. } => config.as_ref(),
            Command::Run { config, .. } | Command::Check { config, .. } => Some(config),
            Command::Demo { .. } => None,
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs start as the config says; a config that does not load is
    // reported by the command itself, logged with the defaults.
    let log = cli
        .command
        .config()
        .and_then(|p| Config::load(p).ok())
        .map(|c| c.log)
        .unwrap_or_default();
    churnwatch::log::init(&log);
    let (message, code) = match run(cli) {
        Ok(()) => return ExitCode::SUCCESS,
        Err(e) if e.is::<Shortfall>() => (e.to_string(), ExitCode::from(3)),
        Err(e) => (chain(&e), ExitCode::FAILURE),
    };
    match log.format {
        // A log reader parses every line.
        churnwatch::config::LogFormat::Json => tracing::error!("{message}"),
        churnwatch::config::LogFormat::Text => eprintln!("churnwatch: {message}"),
    }
    code
}

/// The error and its causes, `: `-separated, leaving out a cause whose
/// text the message before it already carries (librdkafka's errors repeat
/// their source in their own text).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !last.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        last = text;
    }
    out
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Replay {
            config,
            until,
            dead_letter,
            max_rejected,
            input,
        } => {
            let config = load_config(config.as_ref())?;
            let options = ReplayOptions {
                inputs: input.inputs,
                mapped: input.mapped,
                until,
                dead_letter,
                now: Ts(chrono::Utc::now().timestamp_millis()),
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            let mut err = std::io::stderr();
            let summary = replay(&config, &options, &mut out, &mut err).context("replay failed")?;
            eprintln!("{summary}");
            match summary.shortfall(max_rejected) {
                Some(why) => Err(Shortfall(why).into()),
                None => Ok(()),
            }
        }
        Command::Fit {
            config,
            until,
            output,
            input,
        } => {
            let config = load_config(config.as_ref())?;
            let now = Ts(chrono::Utc::now().timestamp_millis());
            let settings = config.engine_settings();
            let (engine, outcomes) = churnwatch::replay::state_at(
                &config,
                &settings,
                &input.inputs,
                &input.mapped,
                until,
                now,
                |_| {},
            )
            .context("reading the history")?;
            let at = until.or(engine.watermark()).unwrap_or(now);
            let fit = churnwatch::evaluate::fit_engine(engine.store(), at)
                .with_context(|| format!("fitting BG/NBD (input: {outcomes})"))?;
            let m = &fit.model;
            eprintln!(
                "fit: {} customers up to {at} (input: {outcomes}): r = {:.4}, alpha = {:.4}, a = {:.4}, b = {:.4}, log-likelihood {:.2}",
                fit.customers, m.r, m.alpha, m.a, m.b, fit.log_likelihood
            );
            let fragment = fit.toml(&format!("up to {at}"));
            print!("{fragment}");
            if let Some(path) = output {
                std::fs::write(&path, &fragment)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        Command::Evaluate {
            cut,
            horizon,
            config,
            scores,
            report,
            json,
            input,
        } => {
            let config = load_config(config.as_ref())?;
            let options = churnwatch::evaluate::EvaluateOptions {
                inputs: input.inputs,
                mapped: input.mapped,
                cut,
                horizon,
                scores,
                report,
                now: Ts(chrono::Utc::now().timestamp_millis()),
            };
            let e = churnwatch::evaluate::evaluate(&config, &options).context("evaluate failed")?;
            if e.input_ends
                .is_none_or(|t| t.0 < cut.0 + horizon.as_millis() as i64)
            {
                eprintln!(
                    "evaluate: warning: the input ends before cut + horizon; customers may be labelled churned for want of data"
                );
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&e).context("encoding the figures")?
                );
            } else {
                print!("{}", e.text());
            }
            Ok(())
        }
        Command::Run { config, brokers } => {
            let config_path = config;
            let config = load_config(Some(&config_path))?;
            let brokers = brokers.unwrap_or_else(|| config.kafka.brokers.clone());
            let report = runtime()?
                .block_on(churnwatch::pipeline::run(
                    &config,
                    &brokers,
                    churnwatch::pipeline::Wiring {
                        // A per-process seed: crafted ids cannot collide.
                        store: churnwatch::engine::store::Store::seeded(rand::random()),
                        config_path: Some(config_path),
                        ..Default::default()
                    },
                    shutdown_signal(),
                ))
                .context("run failed")?;
            eprintln!(
                "run: {} events applied, {} rejected, {} alerts",
                report.applied, report.rejected, report.alerts
            );
            Ok(())
        }
        Command::Demo {
            seed,
            customers,
            speed,
            duration,
        } => {
            let options = churnwatch::demo::DemoOptions {
                seed,
                customers,
                speed,
                start: Ts::parse_rfc3339("2026-01-01T00:00:00Z").unwrap_or_default(),
            };
            let stop = async move {
                match duration {
                    Some(d) => tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = shutdown_signal() => {}
                    },
                    None => shutdown_signal().await,
                }
            };
            let summary = runtime()?
                .block_on(churnwatch::demo::run(
                    options,
                    |line| println!("{line}"),
                    stop,
                ))
                .context("demo failed")?;
            println!(
                "demo: {} simulated days, {} events produced, {} applied, {} rejected (dead-lettered), {} alerts: {:?}",
                summary.simulated_days,
                summary.events,
                summary.report.applied,
                summary.report.rejected,
                summary.report.alerts,
                summary.alerts
            );
            Ok(())
        }
        Command::Check {
            config,
            sample,
            mapped,
            brokers,
            inputs,
        } => {
            let config = load_config(Some(&config))?;
            for w in &config.webhooks {
                w.signing_key()
                    .map_err(|why| anyhow::anyhow!("webhook `{}`: {why}", w.name))
                    .context("check failed")?;
            }
            let stdout = std::io::stdout();
            churnwatch::check::check(&config, &inputs, &mapped, sample, &mut stdout.lock())
                .context("check failed")?;
            if let Some(brokers) = brokers {
                let brokers = match brokers.is_empty() {
                    true => config.kafka.brokers.clone(),
                    false => brokers,
                };
                let lines = runtime()?
                    .block_on(churnwatch::kafka::check::cluster(
                        &config.kafka,
                        &config.topics(),
                        &brokers,
                    ))
                    .context("check failed")?;
                for line in lines {
                    println!("{line}");
                }
            }
            Ok(())
        }
        Command::Generate {
            customers,
            days,
            max_events,
            seed,
            start,
            output,
            brokers,
            config,
            planted_churn,
            truth,
            shape,
        } => {
            use churnwatch::generate::{Planted, Population, PopulationOptions};
            let config = load_config(config.as_ref())?;
            anyhow::ensure!(
                (0.0..=1.0).contains(&planted_churn),
                "--planted-churn must be between 0 and 1"
            );
            let mut population = Population::new(PopulationOptions {
                customers,
                seed,
                start: start
                    .unwrap_or(Ts::parse_rfc3339("2026-01-01T00:00:00Z").unwrap_or_default()),
                shape,
            });
            if planted_churn > 0.0 {
                population = population.plant(Planted {
                    share: planted_churn,
                    from_day: days / 4,
                    to_day: days * 3 / 4,
                    seed,
                });
            }
            if let Some(path) = &truth {
                let n = churnwatch::generate::write_truth(&population, path)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("generate: {n} churning customers in {}", path.display());
            }
            let limit = max_events.unwrap_or(u64::MAX);
            let written = match brokers {
                Some(b) => runtime()?
                    .block_on(churnwatch::generate::produce(
                        &config.kafka,
                        &b,
                        population,
                        days,
                        limit,
                    ))
                    .context("producing the population")?,
                None => churnwatch::generate::write(population, days, limit, &output)
                    .with_context(|| format!("writing {}", output.display()))?,
            };
            eprintln!("generate: {written} events");
            Ok(())
        }
    }
}
