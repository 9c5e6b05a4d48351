//! `siprec-gateway`: command line. Parses arguments, sets up logging, loads the config and
//! hands over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use siprec_gateway::config::Config;
use siprec_gateway::{replay, runtime};
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
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    Tcp,
}

fn init_tracing() {
    let filter = EnvFilter::try_from_env("SIPREC_GATEWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
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
            init_tracing();
            let config = match config {
                Some(path) => Config::load(&path).with_context(|| format!("{}", path.display()))?,
                None => Config::default(),
            };
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(runtime::run(config, shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Replay { pcap, target, transport, speed } => {
            init_tracing();
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
    }
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
