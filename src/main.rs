//! `siprec-gateway`: command line. Parses arguments, sets up logging, loads the config and
//! hands over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use siprec_gateway::config::{Config, LogFormat};
use siprec_gateway::delivery::{self, Spool};
use siprec_gateway::{clock, replay, runtime};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "siprec-gateway", version, about = "SIPREC recording server that delivers calls to Tethr")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway in the foreground, logging to stderr. Without --config it listens on UDP
    /// and TCP 0.0.0.0:5060 and writes finished calls to ./recordings.
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Measure the media path's capacity (see src/bench/).
    Bench(siprec_gateway::bench::BenchOptions),
    /// Validate a config file; exits non-zero with a message naming the bad key.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Play the SRC side of a SIPREC capture against a running gateway.
    Replay {
        /// pcap or pcapng file
        pcap: PathBuf,
        /// The gateway's SIP address
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, value_enum, default_value_t = TransportArg::Udp)]
        transport: TransportArg,
        /// Playback speed factor (2.0 = twice as fast)
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Inspect and act on the spool (works while the gateway runs).
    Spool {
        /// The gateway's config (for spool.dir); default ./spool
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: SpoolAction,
    },
    /// Ask Tethr what became of calls: one line per sessionId with its status, callId and
    /// durationSec (when Tethr knows them).
    Status {
        /// The gateway's config (for [tethr])
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// sessionIds as sent in info.json (`spool list`, the journal, the delivery log line)
        #[arg(required = true)]
        session_ids: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SpoolAction {
    /// Every recording in the spool: state, sessionId, age, attempts, next attempt, last error.
    List,
    /// Move failed recordings back to pending/ (a running gateway sends them within 30 s).
    Retry {
        /// The recording's name in failed/
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        name: Option<String>,
        /// Every recording in failed/
        #[arg(long)]
        failed: bool,
    },
    /// Remove the delivered recordings kept for tethr.retention.
    Purge,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    Tcp,
}

/// Logs to stderr, filtered by `SIPREC_GATEWAY_LOG` (default `info`), as text or as one JSON
/// object per line (`service.log_format`), with the current span's fields (a call's `call_id`
/// and `session`) on every line.
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SIPREC_GATEWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One process-wide TLS provider (ring), installed before any TLS client exists.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("siprec-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::CheckConfig { config } => {
            Config::load(&config).with_context(|| format!("{}", config.display()))?;
            println!("{}: ok", config.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Serve { config } => {
            // The config first: it says how to log. Its errors go to stderr through main.
            let config_path = config;
            let config = match &config_path {
                Some(path) => Config::load(path).with_context(|| format!("{}", path.display()))?,
                None => Config::default(),
            };
            init_tracing(config.service.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(runtime::run(config, config_path, shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench(opts) => {
            let ok = siprec_gateway::bench::run(&opts)?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::Replay { pcap, target, transport, speed } => {
            init_tracing(LogFormat::Text);
            anyhow::ensure!(speed > 0.0 && speed.is_finite(), "--speed must be a positive number");
            let opts = replay::ReplayOptions {
                pcap,
                target,
                transport: match transport {
                    TransportArg::Udp => replay::Transport::Udp,
                    TransportArg::Tcp => replay::Transport::Tcp,
                },
                speed,
            };
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = rt.block_on(replay::run(&opts))?;
            println!(
                "INVITE {} · BYE {} · {} streams · {} RTP packets sent · answered ports {:?}",
                report.invite_status,
                report.bye_status.map_or("-".to_string(), |c| c.to_string()),
                report.streams,
                report.rtp_packets_sent,
                report.answered_ports
            );
            Ok(if report.succeeded() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::Spool { config, action } => spool_command(config, action),
        Cmd::Status { config, session_ids } => status_command(config, &session_ids),
    }
}

/// `status SESSION_ID…`: Tethr's `/callCapture/v1/status` for each, with the gateway's
/// credentials, proxy and CA bundle.
fn status_command(config: Option<PathBuf>, session_ids: &[String]) -> anyhow::Result<ExitCode> {
    let config = match config {
        Some(path) => Config::load(&path).with_context(|| format!("{}", path.display()))?,
        None => Config::default(),
    };
    let tethr = config.tethr.as_ref().context("the config has no [tethr] table")?;
    let settings = delivery::TethrSettings::from_config(tethr)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let statuses = rt.block_on(delivery::status::query(settings, session_ids))?;
    for s in &statuses {
        println!("{}", delivery::status::line(s));
    }
    Ok(ExitCode::SUCCESS)
}

/// `spool list|retry|purge` on the spool the config names.
fn spool_command(config: Option<PathBuf>, action: SpoolAction) -> anyhow::Result<ExitCode> {
    let config = match config {
        Some(path) => Config::load(&path).with_context(|| format!("{}", path.display()))?,
        None => Config::default(),
    };
    let dir = &config.spool.dir;
    anyhow::ensure!(dir.is_dir(), "spool directory {} (spool.dir) does not exist", dir.display());
    let spool = Spool::open(dir)?;
    match action {
        SpoolAction::List => {
            print!("{}", delivery::render_table(&spool.list()?, clock::wall_now()));
        }
        SpoolAction::Retry { name, failed } => {
            let names = match name {
                Some(name) => vec![name],
                None if failed => spool.names_in("failed")?,
                None => Vec::new(),
            };
            for name in &names {
                spool.retry(name).with_context(|| format!("retry {name}"))?;
                println!("{name}: moved back to pending/");
            }
            println!("{} recording(s) re-queued; a running gateway picks them up within 30 s", names.len());
        }
        SpoolAction::Purge => {
            let n = spool.purge()?;
            println!("{n} delivered recording(s) removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
