//! The gateway's TOML configuration: typed values, a default for every key, unknown keys
//! rejected. Every key is documented in docs/configuration.md; keep the two in step.
//!
//! Loading is pure apart from reading the file and, for the Tethr client secret, an optional
//! secret file or environment variable, so that no secret has to be written in the config.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Environment variable that can carry the Tethr client secret.
pub const SECRET_ENV: &str = "SIPREC_GATEWAY_TETHR_CLIENT_SECRET";

/// Why a configuration was refused. Each message names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// TOML syntax, an unknown key or a value of the wrong type (the message names the key).
    #[error("{0}")]
    Parse(String),
    /// A value that parsed but makes no sense.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub output: OutputConfig,
    pub spool: SpoolConfig,
    pub tethr: Option<TethrConfig>,
    pub metadata: MetadataConfig,
    pub recording: RecordingConfig,
    pub mapping: crate::mapping::MappingRules,
    pub service: ServiceConfig,
    pub limits: LimitsConfig,
}

/// `[recording]`: what the delivered audio looks like.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// `agent-customer` (two channels: agent side, customer side) or `per-stream`.
    pub layout: crate::mapping::LayoutKind,
    /// `wav`, `wav-ulaw`, `mp3` or `opus` (the last two need the cargo features of the same
    /// name). Checked against this build at start.
    pub format: FormatName,
    /// The recording's sample rate in Hz; 0 = the highest rate among the call's streams.
    pub sample_rate: u32,
}

/// A `[recording] format` value as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct FormatName(pub String);

impl Default for FormatName {
    fn default() -> Self {
        FormatName("wav".into())
    }
}

/// `media.srtp`: what is done with SRTP (`RTP/SAVP` with SDES `a=crypto`) offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SrtpPolicy {
    /// SRTP and plain RTP streams are both recorded.
    #[default]
    Accept,
    /// Only SRTP streams are recorded; plain RTP m-lines are refused (port 0).
    Require,
    /// SRTP m-lines are refused (port 0); an offer with nothing else gets 488.
    Refuse,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// `udp:ADDR:PORT` / `tcp:ADDR:PORT` / `tls:ADDR:PORT` listeners.
    pub listen: Vec<Listen>,
    /// Server / User-Agent header.
    pub user_agent: String,
    /// PEM certificate chain of the TLS listeners (read again on SIGHUP).
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key of the TLS listeners (read again on SIGHUP).
    pub tls_private_key: Option<PathBuf>,
    /// PEM CA bundle: when set, TLS clients must present a certificate it signed (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: vec![
                Listen { transport: ListenTransport::Udp, addr: SocketAddr::from(([0, 0, 0, 0], 5060)) },
                Listen { transport: ListenTransport::Tcp, addr: SocketAddr::from(([0, 0, 0, 0], 5060)) },
            ],
            user_agent: format!("siprec-gateway/{}", env!("CARGO_PKG_VERSION")),
            tls_certificate: None,
            tls_private_key: None,
            tls_client_ca: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Even ports carry RTP, port+1 RTCP.
    pub rtp_ports: PortRange,
    /// Address put in the answer's c= line; default: the address the INVITE arrived on.
    pub advertised_address: Option<IpAddr>,
    /// Address RTP sockets bind to; default: the unspecified address of the advertised
    /// address's family (`0.0.0.0` or `::`).
    pub bind_address: Option<IpAddr>,
    /// No packet on any stream of a call for this long ends the call.
    #[serde(deserialize_with = "de_duration")]
    pub rtp_timeout: Duration,
    /// How far behind the wall clock audio is written, so reordered packets land in place.
    #[serde(deserialize_with = "de_duration")]
    pub reorder_window: Duration,
    /// Most m-lines we record in one call; an offer with more gets 488.
    pub max_streams: usize,
    /// Capture channels kept free at the INVITE for m-lines a re-INVITE adds (a WAV cannot
    /// gain a channel mid-call); unused ones are dropped from the delivered file.
    pub spare_streams: usize,
    /// A stream latched to one RTP source takes another source only after the first has
    /// been silent this long (an SBC failover).
    #[serde(deserialize_with = "de_duration")]
    pub relatch_after: Duration,
    /// What is done with SRTP offers.
    pub srtp: SrtpPolicy,
    /// Whether DTMF digits (RFC 4733 telephone-events) are listed with their times in
    /// `info.metaData`. Off by default: digits can be card numbers.
    pub dtmf_in_metadata: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_ports: PortRange { first: 20000, last: 29999 },
            advertised_address: None,
            bind_address: None,
            rtp_timeout: Duration::from_secs(120),
            reorder_window: Duration::from_millis(60),
            max_streams: 16,
            spare_streams: 0,
            relatch_after: Duration::from_secs(2),
            srtp: SrtpPolicy::Accept,
            dtmf_in_metadata: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    pub dir: PathBuf,
    /// Group that may read recordings: files 0640 and directories 0750 owned by it; unset =
    /// 0600/0700, the service user only.
    pub group: Option<String>,
    /// The local sink deletes recordings older than this; 0 = keep them forever.
    #[serde(deserialize_with = "de_duration")]
    pub retention: Duration,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig { dir: PathBuf::from("./recordings"), group: None, retention: Duration::ZERO }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Free space (bytes) below which new INVITEs get 503; 0 = no floor. Written as a size:
    /// `"1GiB"`, `"500MiB"`, `"0"`.
    #[serde(deserialize_with = "de_size")]
    pub min_free: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig { dir: PathBuf::from("./spool"), min_free: 1 << 30 }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TethrConfig {
    /// `https://INSTANCE.audio.tethr.com`
    pub url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// Watched for changes (every 10 s): a rotated secret is picked up without a restart.
    pub client_secret_file: Option<PathBuf>,
    /// Timeout of one whole request (the upload included).
    #[serde(default = "default_upload_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    #[serde(default = "default_retry_initial", deserialize_with = "de_duration")]
    pub retry_initial: Duration,
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub retry_max: Duration,
    /// A recording not delivered this long after its first attempt goes to `failed/`; 0 = never.
    #[serde(default = "default_max_age", deserialize_with = "de_duration")]
    pub max_age: Duration,
    /// Uploads in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How long a delivered recording is kept in `spool/delivered/`; 0 = removed at once.
    #[serde(default = "zero_duration", deserialize_with = "de_duration")]
    pub retention: Duration,
    /// HTTP proxy for all Tethr traffic (HTTPS goes through it with CONNECT).
    pub proxy: Option<String>,
    /// Extra trusted CA certificates (PEM), added to the system's roots.
    pub ca_bundle: Option<PathBuf>,
    /// Interval of `/callCapture/v1/monitor` heartbeats; 0 = none.
    #[serde(default = "default_heartbeat_interval", deserialize_with = "de_duration")]
    pub heartbeat_interval: Duration,
    /// `Name` in heartbeats; default: the host name.
    pub instance_name: Option<String>,
    /// Send only the calls Tethr's `/sources/v1/recordingSettings` allows.
    #[serde(default)]
    pub honour_recording_settings: bool,
    #[serde(default = "default_recording_settings_interval", deserialize_with = "de_duration")]
    pub recording_settings_interval: Duration,
    /// Only recording settings with this `refType` apply (case-insensitive).
    pub recording_settings_ref_type: Option<String>,
    /// Only recording settings with this `source` apply (case-insensitive).
    pub recording_settings_source: Option<String>,
}

impl fmt::Debug for TethrConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TethrConfig")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .field("client_secret_file", &self.client_secret_file)
            .field("timeout", &self.timeout)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .field("max_age", &self.max_age)
            .field("concurrency", &self.concurrency)
            .field("retention", &self.retention)
            .field("proxy", &self.proxy)
            .field("ca_bundle", &self.ca_bundle)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("instance_name", &self.instance_name)
            .field("honour_recording_settings", &self.honour_recording_settings)
            .field("recording_settings_interval", &self.recording_settings_interval)
            .field("recording_settings_ref_type", &self.recording_settings_ref_type)
            .field("recording_settings_source", &self.recording_settings_source)
            .finish()
    }
}

fn default_upload_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}
fn default_max_age() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_concurrency() -> usize {
    2
}
fn zero_duration() -> Duration {
    Duration::ZERO
}
fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_recording_settings_interval() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    /// INVITE headers copied into `metaData.sipHeaders`; `*` matches any run of characters.
    pub carry_headers: Vec<String>,
    /// Largest recording metadata document accepted (bigger → 413).
    pub max_size: usize,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig { carry_headers: vec!["X-*".into(), "User-to-User".into()], max_size: 64 * 1024 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// On SIGTERM/SIGINT, how long active calls may go on before they are ended and finalized.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
    /// Address of the HTTP listener serving `/metrics`, `/health` and `/ready`; none when
    /// unset (a fixed default port would collide between instances on one host).
    pub http_listen: Option<SocketAddr>,
    /// `text` (human, the default) or `json` (one object per line).
    pub log_format: LogFormat,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig { shutdown_grace: Duration::from_secs(30), http_listen: None, log_format: LogFormat::Text }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, the event's and the current span's fields flattened in.
    Json,
}

/// `[limits]`: admission control. Every refusal is logged with its reason.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Sources (CIDR blocks or addresses) that may open sessions; empty = anyone.
    pub allow_from: Vec<crate::limits::Cidr>,
    /// Whether an OPTIONS from a source outside `allow_from` gets 200 (true) or 403.
    pub options_from_anyone: bool,
    /// Concurrent calls; more get 503 with Retry-After.
    pub max_calls: usize,
    /// A call this long is ended with BYE and finalized.
    #[serde(deserialize_with = "de_duration")]
    pub max_call_duration: Duration,
    /// Open TCP/TLS connections per source address; more are closed at accept.
    pub max_connections_per_source: usize,
    /// A TCP/TLS connection that carries no byte this long is closed.
    #[serde(deserialize_with = "de_duration")]
    pub tcp_idle_timeout: Duration,
    /// A TCP/TLS connection holding part of a message that gets no byte more for this long is
    /// closed (slow-loris).
    #[serde(deserialize_with = "de_duration")]
    pub tcp_message_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            allow_from: Vec::new(),
            options_from_anyone: true,
            max_calls: 1000,
            max_call_duration: Duration::from_secs(4 * 3600),
            max_connections_per_source: 64,
            tcp_idle_timeout: Duration::from_secs(15 * 60),
            tcp_message_timeout: Duration::from_secs(30),
        }
    }
}

/// Transport of a SIP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenTransport {
    Udp,
    Tcp,
    Tls,
}

/// One `udp:0.0.0.0:5060` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub transport: ListenTransport,
    pub addr: SocketAddr,
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (t, addr) = s.split_once(':').ok_or_else(|| format!("`{s}` is not TRANSPORT:ADDRESS:PORT"))?;
        let transport = match t.to_ascii_lowercase().as_str() {
            "udp" => ListenTransport::Udp,
            "tcp" => ListenTransport::Tcp,
            "tls" => ListenTransport::Tls,
            other => return Err(format!("unknown transport `{other}` (udp, tcp or tls)")),
        };
        let addr = addr.parse().map_err(|e| format!("`{addr}`: {e}"))?;
        Ok(Listen { transport, addr })
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// An inclusive range of UDP ports, `"20000-29999"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s.split_once('-').ok_or_else(|| format!("`{s}` is not FIRST-LAST"))?;
        let first: u16 = a.trim().parse().map_err(|e| format!("`{a}`: {e}"))?;
        let last: u16 = b.trim().parse().map_err(|e| format!("`{b}`: {e}"))?;
        if first == 0 || last <= first {
            return Err(format!("`{s}` must be FIRST-LAST with 0 < FIRST < LAST"));
        }
        Ok(PortRange { first, last })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses `"120s"`, `"60ms"`, `"5m"`, `"1h"`, `"7d"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| format!("`{s}` needs a unit (ms, s, m, h, d)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("`{s}` is not a duration"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "d" => Ok(Duration::from_secs(n * 86_400)),
        u => Err(format!("unknown unit `{u}` in `{s}` (ms, s, m, h, d)")),
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// Parses a size in bytes: `"0"`, `"4096"`, `"500MiB"`, `"2GiB"`, `"1.5GiB"`, `"10GB"`
/// (B, KiB, MiB, GiB, TiB are powers of 1024; KB, MB, GB, TB powers of 1000; case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("`{s}` is not a size (e.g. \"500MiB\", \"2GiB\")"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        u => return Err(format!("unknown unit `{u}` in `{s}` (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")),
    };
    let bytes = n * factor as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("`{s}` is too large"));
    }
    Ok(bytes as u64)
}

/// A size given as a string (`"1GiB"`) or a plain number of bytes.
fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::from_toml(&text)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.sip.listen.is_empty() {
            return Err(ConfigError::Invalid { key: "sip.listen", reason: "at least one listener is needed".into() });
        }
        let r = self.media.rtp_ports;
        if (u32::from(r.last) - u32::from(r.first)) < 3 {
            return Err(ConfigError::Invalid { key: "media.rtp_ports", reason: "needs at least two even/odd pairs".into() });
        }
        if self.media.rtp_timeout.is_zero() {
            return Err(ConfigError::Invalid { key: "media.rtp_timeout", reason: "must be more than 0".into() });
        }
        if self.media.reorder_window > Duration::from_millis(1000) {
            return Err(ConfigError::Invalid { key: "media.reorder_window", reason: "at most 1000ms".into() });
        }
        if self.media.spare_streams > 16 {
            return Err(ConfigError::Invalid { key: "media.spare_streams", reason: "at most 16".into() });
        }
        if self.media.max_streams == 0 {
            return Err(ConfigError::Invalid { key: "media.max_streams", reason: "must be at least 1".into() });
        }
        self.validate_tls()?;
        self.validate_limits()?;
        self.mapping.validate().map_err(|reason| ConfigError::Invalid { key: "mapping", reason })?;
        match crate::media::render::Format::from_config(&self.recording.format.0) {
            None => {
                return Err(ConfigError::Invalid { key: "recording.format", reason: "one of wav, wav-ulaw, mp3, opus".into() });
            }
            Some(f) if !f.available() => {
                return Err(ConfigError::Invalid {
                    key: "recording.format",
                    reason: format!(
                        "this build cannot write {}: build with `--features {}`",
                        f.config_name(),
                        f.cargo_feature().unwrap_or_default()
                    ),
                });
            }
            Some(_) => {}
        }
        if !(self.recording.sample_rate == 0 || (8000..=48000).contains(&self.recording.sample_rate)) {
            return Err(ConfigError::Invalid { key: "recording.sample_rate", reason: "0 (per call) or 8000 to 48000".into() });
        }
        if let Some(g) = &self.output.group
            && !matches!(nix::unistd::Group::from_name(g), Ok(Some(_)))
        {
            return Err(ConfigError::Invalid { key: "output.group", reason: format!("no group named `{g}` on this host") });
        }
        if let Some(t) = &self.tethr {
            if !(t.url.starts_with("https://") || t.url.starts_with("http://")) {
                return Err(ConfigError::Invalid { key: "tethr.url", reason: "must start with https://".into() });
            }
            if t.client_id.trim().is_empty() {
                return Err(ConfigError::Invalid { key: "tethr.client_id", reason: "must not be empty".into() });
            }
            if t.client_secret.is_some() && t.client_secret_file.is_some() {
                return Err(ConfigError::Invalid {
                    key: "tethr.client_secret",
                    reason: "give client_secret or client_secret_file, not both".into(),
                });
            }
            if t.timeout.is_zero() {
                return Err(ConfigError::Invalid { key: "tethr.timeout", reason: "must be more than 0".into() });
            }
            if t.retry_initial.is_zero() || t.retry_max < t.retry_initial {
                return Err(ConfigError::Invalid {
                    key: "tethr.retry_initial",
                    reason: "must be more than 0 and at most retry_max".into(),
                });
            }
            if t.concurrency == 0 {
                return Err(ConfigError::Invalid { key: "tethr.concurrency", reason: "must be at least 1".into() });
            }
            if t.honour_recording_settings && t.recording_settings_interval.is_zero() {
                return Err(ConfigError::Invalid {
                    key: "tethr.recording_settings_interval",
                    reason: "must be more than 0".into(),
                });
            }
            if let Some(p) = &t.proxy
                && !(p.starts_with("http://") || p.starts_with("https://"))
            {
                return Err(ConfigError::Invalid { key: "tethr.proxy", reason: "must start with http:// or https://".into() });
            }
            if let Some(path) = &t.ca_bundle
                && let Err(e) = std::fs::metadata(path)
            {
                return Err(ConfigError::Invalid { key: "tethr.ca_bundle", reason: format!("{}: {e}", path.display()) });
            }
            if let Some(name) = &t.instance_name
                && name.trim().is_empty()
            {
                return Err(ConfigError::Invalid { key: "tethr.instance_name", reason: "must not be empty".into() });
            }
            t.secret()?;
        }
        Ok(())
    }
}

impl Config {
    /// TLS listeners need a certificate and a key; every TLS file named must exist.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let sip = &self.sip;
        let files = [
            ("sip.tls_certificate", &sip.tls_certificate),
            ("sip.tls_private_key", &sip.tls_private_key),
            ("sip.tls_client_ca", &sip.tls_client_ca),
        ];
        if sip.listen.iter().any(|l| l.transport == ListenTransport::Tls) {
            for (key, path) in &files[..2] {
                if path.is_none() {
                    return Err(ConfigError::Invalid { key, reason: "a tls: listener needs it".into() });
                }
            }
        }
        for (key, path) in files {
            if let Some(p) = path
                && let Err(e) = std::fs::metadata(p)
            {
                return Err(ConfigError::Invalid { key, reason: format!("{}: {e}", p.display()) });
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let positive = [
            ("limits.max_call_duration", l.max_call_duration),
            ("limits.tcp_idle_timeout", l.tcp_idle_timeout),
            ("limits.tcp_message_timeout", l.tcp_message_timeout),
        ];
        for (key, d) in positive {
            if d.is_zero() {
                return Err(ConfigError::Invalid { key, reason: "must be more than 0".into() });
            }
        }
        if l.max_calls == 0 {
            return Err(ConfigError::Invalid { key: "limits.max_calls", reason: "must be at least 1".into() });
        }
        if l.max_connections_per_source == 0 {
            return Err(ConfigError::Invalid { key: "limits.max_connections_per_source", reason: "must be at least 1".into() });
        }
        Ok(())
    }
}

impl TethrConfig {
    /// The client secret from the config, the secret file, or the environment, in that order.
    pub fn secret(&self) -> Result<String, ConfigError> {
        if let Some(s) = &self.client_secret {
            return Ok(s.clone());
        }
        if let Some(p) = &self.client_secret_file {
            let s = std::fs::read_to_string(p).map_err(|e| ConfigError::Invalid {
                key: "tethr.client_secret_file",
                reason: format!("cannot read {}: {e}", p.display()),
            })?;
            return Ok(s.trim().to_string());
        }
        match std::env::var(SECRET_ENV) {
            Ok(s) if !s.is_empty() => Ok(s),
            _ => Err(ConfigError::Invalid {
                key: "tethr.client_secret",
                reason: format!("missing: set client_secret, client_secret_file or {SECRET_ENV}"),
            }),
        }
    }
}

/// True when `name` matches `pattern` (case-insensitive, `*` = any run of characters).
pub fn header_pattern_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((c, rest)) => n.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_min_free_takes_sizes() {
        assert_eq!(Config::default().spool.min_free, 1 << 30);
        let min_free = |v: &str| Config::from_toml(&format!("[spool]\nmin_free = {v}\n")).map(|c| c.spool.min_free);
        assert_eq!(min_free("\"500MiB\"").unwrap(), 500 << 20);
        assert_eq!(min_free("\"2GiB\"").unwrap(), 2 << 30);
        assert_eq!(min_free("\"1.5 GiB\"").unwrap(), 3 << 29);
        assert_eq!(min_free("\"10GB\"").unwrap(), 10_000_000_000);
        assert_eq!(min_free("\"0\"").unwrap(), 0);
        assert_eq!(min_free("4096").unwrap(), 4096);
        let err = min_free("\"5 parsecs\"").unwrap_err().to_string();
        assert!(err.contains("min_free") && err.contains("parsecs"), "{err}");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.sip.listen.len(), 2);
        assert_eq!(c.media.rtp_ports, PortRange { first: 20000, last: 29999 });
        assert_eq!(c.media.rtp_timeout, Duration::from_secs(120));
        assert_eq!(c.output.dir, PathBuf::from("./recordings"));
        assert!(c.tethr.is_none());
    }

    #[test]
    fn issue_example_parses() {
        let c = Config::from_toml(
            r#"
[sip]
listen = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
[media]
rtp_ports = "20000-29999"
advertised_address = "192.0.2.10"
rtp_timeout = "120s"
[output]
dir = "./recordings"
[spool]
dir = "./spool"
[tethr]
url = "https://example.audio.tethr.com"
client_id = "id"
client_secret = "s3cret"
[metadata]
carry_headers = ["X-*", "User-to-User"]
"#,
        )
        .unwrap();
        assert_eq!(c.media.advertised_address, Some("192.0.2.10".parse().unwrap()));
        let t = c.tethr.unwrap();
        assert_eq!(t.secret().unwrap(), "s3cret");
        assert!(!format!("{t:?}").contains("s3cret"), "secret must not show in Debug");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::from_toml("[media]\nrtp_portz = \"1-2\"\n").unwrap_err().to_string();
        assert!(e.contains("rtp_portz"), "{e}");
        let e = Config::from_toml("[media]\nrtp_timeout = \"12 parsecs\"\n").unwrap_err().to_string();
        assert!(e.contains("rtp_timeout"), "{e}");
        let e = Config::from_toml("[sip]\nlisten = [\"sctp:1.2.3.4:5\"]\n").unwrap_err().to_string();
        assert!(e.contains("listen") && e.contains("sctp"), "{e}");
    }

    #[test]
    fn service_keys_parse_and_default_off() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.service.http_listen, None);
        assert_eq!(c.service.log_format, LogFormat::Text);
        let c = Config::from_toml("[service]\nhttp_listen = \"127.0.0.1:9090\"\nlog_format = \"json\"\n").unwrap();
        assert_eq!(c.service.http_listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(c.service.log_format, LogFormat::Json);
        let e = Config::from_toml("[service]\nlog_format = \"xml\"\n").unwrap_err().to_string();
        assert!(e.contains("log_format") || e.contains("xml"), "{e}");
    }

    #[test]
    fn limits_have_defaults_and_take_cidrs() {
        let d = Config::from_toml("").unwrap();
        assert!(d.limits.allow_from.is_empty() && d.limits.options_from_anyone);
        assert_eq!(d.limits.max_calls, 1000);
        assert_eq!(d.limits.max_call_duration, Duration::from_secs(4 * 3600));
        assert_eq!(d.limits.max_connections_per_source, 64);
        assert_eq!(d.limits.tcp_idle_timeout, Duration::from_secs(900));
        assert_eq!(d.limits.tcp_message_timeout, Duration::from_secs(30));
        assert_eq!(d.media.relatch_after, Duration::from_secs(2));
        assert_eq!(d.output.retention, Duration::ZERO);
        let c = Config::from_toml("[limits]\nallow_from = [\"192.0.2.0/24\", \"::1\"]\nmax_calls = 3\n").unwrap();
        assert_eq!(c.limits.allow_from.len(), 2);
        let e = Config::from_toml("[limits]\nallow_from = [\"192.0.2.0/40\"]\n").unwrap_err().to_string();
        assert!(e.contains("allow_from") && e.contains("192.0.2.0/40"), "{e}");
        let e = Config::from_toml("[limits]\nmax_calls = 0\n").unwrap_err().to_string();
        assert!(e.contains("limits.max_calls"), "{e}");
    }

    #[test]
    fn tls_listener_needs_certificate_and_key() {
        let e = Config::from_toml("[sip]\nlisten = [\"tls:0.0.0.0:5061\"]\n").unwrap_err().to_string();
        assert!(e.contains("sip.tls_certificate"), "{e}");
        let e = Config::from_toml("[sip]\nlisten = [\"tls:0.0.0.0:5061\"]\ntls_certificate = \"/nonexistent/cert.pem\"\ntls_private_key = \"/nonexistent/key.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sip.tls_certificate") && e.contains("/nonexistent/cert.pem"), "{e}");
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
        let ok = format!("[sip]\nlisten = [\"tls:0.0.0.0:5061\"]\ntls_certificate = \"{fixtures}/server.pem\"\ntls_private_key = \"{fixtures}/server.key\"\n");
        assert_eq!(Config::from_toml(&ok).unwrap().sip.listen[0].transport, ListenTransport::Tls);
    }

    #[test]
    fn output_group_must_exist() {
        let e = Config::from_toml("[output]\ngroup = \"no-such-group-siprec\"\n").unwrap_err().to_string();
        assert!(e.contains("output.group") && e.contains("no-such-group-siprec"), "{e}");
        assert!(Config::from_toml("[output]\ngroup = \"root\"\n").is_ok());
    }

    #[test]
    fn header_patterns() {
        assert!(header_pattern_matches("X-*", "x-genesys-id"));
        assert!(header_pattern_matches("User-to-User", "user-to-user"));
        assert!(!header_pattern_matches("X-*", "Via"));
        assert!(header_pattern_matches("*", "anything"));
    }
}
