//! `siprec-gateway replay`: plays the SRC side of a SIPREC capture against a running gateway.
//!
//! The capture (pcap/pcapng) is decoded (`capture`), the SRC's requests and RTP are picked out and
//! tied to m-lines (`plan`), and then replayed live (`session`) at the captured pace divided by
//! `speed`: each request rewritten into a fresh dialog from our sockets (`rewrite`), retransmitted
//! over UDP on the RFC 3261 timers (`timer`), and each stream's RTP payloads sent unchanged to
//! the address and port the gateway's answer gives for that m-line.
//!
//! This is a test and demo tool, not an SRC implementation: it follows the capture rather than
//! negotiating (no offer/answer checks beyond reading ports, no RTCP, no SRTP, no authentication,
//! no CANCEL), and it is not used by the recording server itself.

mod capture;
mod plan;
mod rewrite;
mod session;
pub(crate) mod timer;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use capture::CaptureError;
pub use plan::PlanError;

/// How SIP reaches the gateway (the capture's own SIP transport does not matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to replay, where, and how fast.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub pcap: PathBuf,
    pub target: SocketAddr,
    pub transport: Transport,
    /// Pace divisor: 2.0 plays twice as fast as captured.
    pub speed: f64,
}

/// The outcome of one replay. Success means `invite_status == 200 && bye_status == Some(200)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Final status of the initial INVITE.
    pub invite_status: u16,
    /// Final status of the BYE, `None` when no BYE was sent (INVITE refused).
    pub bye_status: Option<u16>,
    /// m-lines in the offer.
    pub streams: usize,
    pub rtp_packets_sent: u64,
    /// The gateway's answered port per m-line (0: stream refused).
    pub answered_ports: Vec<u16>,
}

impl ReplayReport {
    /// The contract of the CLI's exit status: INVITE answered 200 and BYE answered 200.
    pub fn succeeded(&self) -> bool {
        self.invite_status == 200 && self.bye_status == Some(200)
    }
}

/// Why a replay could not run to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// `--speed` is not a finite number above zero.
    #[error("speed must be a positive number, got {0}")]
    Speed(f64),
    /// The capture file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The capture file could not be decoded.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The capture holds no SIPREC session to replay.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Socket trouble towards the gateway.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// No final response within 64·T1 (RFC 3261 Timer B/F).
    #[error("no final response to {method} within 32 s")]
    Timeout { method: String },
    /// The gateway closed the TCP connection.
    #[error("the gateway closed the connection")]
    Closed,
    /// The gateway ended the recording session with its own BYE before the replay finished.
    #[error("the gateway sent BYE before the replay finished")]
    GatewayBye,
}

/// Replays `opts.pcap` against `opts.target`. Returns the report when the signalling ran its
/// course (check `succeeded()`), an error when it could not.
pub async fn run(opts: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    if !(opts.speed.is_finite() && opts.speed > 0.0) {
        return Err(ReplayError::Speed(opts.speed));
    }
    // Reading and decoding a capture of a few MB takes milliseconds: no need to leave the runtime.
    let bytes = std::fs::read(&opts.pcap).map_err(|source| ReplayError::Read {
        path: opts.pcap.clone(),
        source,
    })?;
    let plan = plan::build(&capture::read_capture(&bytes)?)?;
    tracing::info!(
        capture = %opts.pcap.display(),
        streams = plan.streams,
        requests = plan.requests.len(),
        rtp_per_stream = ?plan.rtp_per_stream(),
        "replaying SRC side of capture"
    );
    session::replay(plan, opts).await
}
