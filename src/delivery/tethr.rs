//! The Tethr HTTP client: token, archive upload, call status, and the plain JSON requests the
//! heartbeat and the recording settings use.
//!
//! `POST {url}/Token` (OAuth2 client credentials, form-urlencoded) yields a bearer token that is
//! cached until 60 s before `expires_in`. One refresh is in flight at a time for every request
//! of a client: the cache sits behind an async mutex held while a new token is fetched, so
//! uploads running at once wait for that one request instead of each asking for a token.
//! `POST {url}/callCapture/v1/archive` carries a multipart/form-data body with exactly two parts,
//! `info` (the recording's info.json) and `data` (its WAV, streamed from disk), and a
//! Content-Length, since no Tethr client sends chunked uploads (tethr-api-facts §1, §2.2).
//!
//! Traffic can go through an HTTP proxy (HTTPS by CONNECT) and trust an extra CA bundle on top
//! of the system's roots. The client secret and the tokens never appear in an error message:
//! response bodies are scrubbed of both before anyone sees them.
//!
//! Each upload or status query ends in a [`policy::Outcome`]; what to do about it (retry,
//! refresh the token, give up) is the policy's business, not this module's.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio_util::io::ReaderStream;

use super::Attempt;
use super::policy::{Outcome, SessionStatus};
use super::recording_settings::SettingsFilter;
use super::spool::{AUDIO_FILE, AUDIO_KINDS, INFO_FILE, audio_in};
use crate::clock;
use crate::config::{ConfigError, TethrConfig};

/// Tokens are treated as expired this long before the server says, so one never runs out in
/// flight.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// Response bodies are kept (for logs and error.json) up to this size.
const BODY_LIMIT: usize = 64 * 1024;
/// Secrets shorter than this are not scrubbed from bodies: replacing a two-letter string
/// everywhere would mangle the text and protect nothing.
const SCRUB_MIN_LEN: usize = 6;
/// How many recently issued tokens are remembered for scrubbing.
const SCRUB_TOKENS: usize = 8;

/// A secret string (the client secret). Debug and Display print `[redacted]`, so it cannot leak
/// into logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where and how to deliver to Tethr: everything `[tethr]` configures.
#[derive(Debug, Clone)]
pub struct TethrSettings {
    /// Base URL of the instance, e.g. `https://example.audio.tethr.com`.
    pub url: String,
    /// The API user's client id.
    pub client_id: String,
    /// The API user's client secret.
    pub client_secret: Secret,
    /// The file the secret was read from; the worker re-reads it when it changes.
    pub client_secret_file: Option<PathBuf>,
    /// Timeout of one whole request, upload included.
    pub timeout: Duration,
    /// First retry delay after a failed attempt.
    pub retry_initial: Duration,
    /// Cap on the retry delay.
    pub retry_max: Duration,
    /// Age after which a recording still not delivered goes to `failed/`; None: never.
    pub max_age: Option<Duration>,
    /// Uploads in flight at once (at least 1).
    pub concurrency: usize,
    /// How long delivered recordings stay in `spool/delivered/`; zero: removed at once.
    pub retention: Duration,
    /// HTTP proxy URL for all requests (HTTPS through it by CONNECT).
    pub proxy: Option<String>,
    /// PEM file of extra CA certificates to trust besides the system's.
    pub ca_bundle: Option<PathBuf>,
    /// Heartbeat interval; None: no heartbeats.
    pub heartbeat_interval: Option<Duration>,
    /// `Name` sent in heartbeats.
    pub instance_name: String,
    /// Present when `/sources/v1/recordingSettings` decides which calls are recorded.
    pub recording_settings: Option<RecordingSettingsConfig>,
}

/// How the recording settings are fetched and applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSettingsConfig {
    /// How often the list is fetched again.
    pub interval: Duration,
    /// Which entries of the list apply to this gateway.
    pub filter: SettingsFilter,
}

impl TethrSettings {
    /// Settings with the defaults of docs/configuration.md: a 5 min timeout (as in Tethr's
    /// SDKs), retries from 1 s doubling to 5 min for up to 7 days, two uploads at once,
    /// heartbeats every 60 s named after the host, no proxy, no recording settings.
    pub fn new(url: impl Into<String>, client_id: impl Into<String>, client_secret: Secret) -> TethrSettings {
        TethrSettings {
            url: url.into(),
            client_id: client_id.into(),
            client_secret,
            client_secret_file: None,
            timeout: Duration::from_secs(300),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_age: Some(Duration::from_secs(7 * 86_400)),
            concurrency: 2,
            retention: Duration::ZERO,
            proxy: None,
            ca_bundle: None,
            heartbeat_interval: Some(Duration::from_secs(60)),
            instance_name: host_name(),
            recording_settings: None,
        }
    }

    /// Settings from a validated `[tethr]` table, the secret read from wherever it points
    /// (the config, the secret file, or the environment).
    pub fn from_config(cfg: &TethrConfig) -> Result<TethrSettings, ConfigError> {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        Ok(TethrSettings {
            url: cfg.url.clone(),
            client_id: cfg.client_id.clone(),
            client_secret: Secret::new(cfg.secret()?),
            client_secret_file: cfg.client_secret_file.clone(),
            timeout: cfg.timeout,
            retry_initial: cfg.retry_initial,
            retry_max: cfg.retry_max,
            max_age: nonzero(cfg.max_age),
            concurrency: cfg.concurrency.max(1),
            retention: cfg.retention,
            proxy: cfg.proxy.clone(),
            ca_bundle: cfg.ca_bundle.clone(),
            heartbeat_interval: nonzero(cfg.heartbeat_interval),
            instance_name: cfg.instance_name.clone().unwrap_or_else(host_name),
            recording_settings: cfg.honour_recording_settings.then(|| RecordingSettingsConfig {
                interval: cfg.recording_settings_interval,
                filter: SettingsFilter {
                    ref_type: cfg.recording_settings_ref_type.clone(),
                    source: cfg.recording_settings_source.clone(),
                },
            }),
        })
    }
}

/// The host name (Tethr expects one heartbeat name per API user; the SDKs send the machine
/// name), from the kernel, else /etc/hostname, else "siprec-gateway".
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "siprec-gateway".to_owned())
}

/// An error talking to Tethr other than an HTTP status on an upload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TethrError {
    /// The HTTP client could not be built (TLS set-up, proxy URL).
    #[error("cannot build the HTTP client: {}", error_chain(.0))]
    Client(#[source] reqwest::Error),
    /// The extra CA bundle could not be read or holds no certificate.
    #[error("CA bundle {}: {reason}", path.display())]
    CaBundle {
        /// The configured file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The request did not get an answer (connect, TLS, timeout, reset).
    #[error("{}", error_chain(.0))]
    Transport(#[source] reqwest::Error),
    /// The token endpoint answered with a non-2xx status.
    #[error("token request refused: HTTP {status}: {body}")]
    TokenStatus {
        /// The HTTP status.
        status: u16,
        /// The response body, truncated and scrubbed of secrets.
        body: String,
    },
    /// The token endpoint's reply was not a usable bearer token.
    #[error("unusable token reply: {0}")]
    TokenReply(String),
    /// A JSON request (status, heartbeat, recording settings) was answered with a non-2xx status.
    #[error("{path} answered HTTP {status}: {body}")]
    Status {
        /// The endpoint path.
        path: &'static str,
        /// The HTTP status.
        status: u16,
        /// The response body, truncated and scrubbed of secrets.
        body: String,
    },
    /// A 2xx reply whose body is not what the API describes.
    #[error("{path} reply is not usable: {reason}")]
    Reply {
        /// The endpoint path.
        path: &'static str,
        /// Why it could not be read.
        reason: String,
    },
}

/// `{"access_token","token_type","expires_in"}` from `/Token`.
#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    token_type: String,
    expires_in: u64,
}

/// Parses the token reply; `token_type` must be bearer in any case (the SDKs insist on
/// lowercase, which is stricter than OAuth2 needs, RFC 6749 §5.1).
fn parse_token_reply(body: &[u8]) -> Result<(String, Duration), TethrError> {
    let reply: TokenReply = serde_json::from_slice(body).map_err(|e| TethrError::TokenReply(e.to_string()))?;
    if !reply.token_type.eq_ignore_ascii_case("bearer") {
        return Err(TethrError::TokenReply(format!(
            "token_type {:?} is not bearer",
            reply.token_type
        )));
    }
    if reply.access_token.is_empty() {
        return Err(TethrError::TokenReply("empty access_token".into()));
    }
    Ok((reply.access_token, Duration::from_secs(reply.expires_in)))
}

/// The cached bearer token, until when it may be used, and which fetch it came from.
#[derive(Default)]
struct TokenCache {
    token: Option<(String, Instant)>,
    /// Incremented for every token stored, so a 401 only discards the token it was given for,
    /// not one a concurrent request has just fetched.
    generation: u64,
}

impl TokenCache {
    /// The token and its generation, if it is still good at `now`.
    fn get(&self, now: Instant) -> Option<(&str, u64)> {
        self.token
            .as_ref()
            .filter(|(_, until)| now < *until)
            .map(|(t, _)| (t.as_str(), self.generation))
    }

    /// Stores a token obtained by a request sent at `requested_at`; returns its generation.
    fn store(&mut self, token: String, expires_in: Duration, requested_at: Instant) -> u64 {
        let until = requested_at + expires_in.saturating_sub(TOKEN_MARGIN);
        self.token = Some((token, until));
        self.generation += 1;
        self.generation
    }

    /// Forgets the token if it is still the one of `generation`.
    fn discard(&mut self, generation: u64) {
        if self.generation == generation {
            self.token = None;
        }
    }
}

/// The status of one call session, from `/callCapture/v1/status`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallSessionStatus {
    /// The sessionId asked about.
    #[serde(alias = "SessionId")]
    pub session_id: String,
    /// `InProgress`, `Concluded`, `Complete`, `NotFound`, `Excluded`, …
    #[serde(alias = "Status")]
    pub status: String,
    /// Tethr's callId, once it has one.
    #[serde(default, alias = "CallId")]
    pub call_id: Option<String>,
    /// The call's length, when Tethr reports it.
    #[serde(default, alias = "DurationSec")]
    pub duration_sec: Option<f64>,
}

#[derive(Deserialize)]
struct StatusReply {
    #[serde(default, alias = "CallSessions", rename = "callSessions")]
    call_sessions: Vec<CallSessionStatus>,
}

/// What Tethr's status list says about `session_id`.
fn session_status(sessions: &[CallSessionStatus], session_id: &str) -> SessionStatus {
    match sessions.iter().find(|s| s.session_id == session_id) {
        None => SessionStatus::NotFound,
        Some(s) if s.status.eq_ignore_ascii_case("NotFound") => SessionStatus::NotFound,
        Some(s) if s.status.eq_ignore_ascii_case("Excluded") => SessionStatus::Excluded,
        Some(s) => SessionStatus::Received {
            status: s.status.clone(),
            call_id: s.call_id.clone().filter(|id| !id.is_empty()),
        },
    }
}

/// The answer to a request: status, Retry-After and the scrubbed body.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Reply {
    fn into_error(self, path: &'static str) -> TethrError {
        TethrError::Status {
            path,
            status: self.status.as_u16(),
            body: lossy(&self.body),
        }
    }
}

/// One Tethr instance: the HTTP client, the settings it was built from and the cached token.
pub struct TethrClient {
    http: reqwest::Client,
    settings: TethrSettings,
    token: tokio::sync::Mutex<TokenCache>,
    /// Recently issued tokens, to scrub from response bodies.
    issued: Mutex<Vec<String>>,
    /// The token endpoint refused the credentials on the latest try.
    credentials_refused: AtomicBool,
}

impl TethrClient {
    /// Builds the client with the settings' timeout, proxy and extra CA bundle. Installs the
    /// ring crypto provider if the process has none yet (reqwest would otherwise panic).
    pub fn new(settings: TethrSettings) -> Result<TethrClient, TethrError> {
        // Err only means another provider is installed already, which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(30).min(settings.timeout))
            // A redirected POST would turn into a GET; a redirect here means a wrong URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("siprec-gateway/", env!("CARGO_PKG_VERSION")));
        if let Some(proxy) = &settings.proxy {
            builder = builder.proxy(reqwest::Proxy::all(proxy).map_err(TethrError::Client)?);
        }
        if let Some(path) = &settings.ca_bundle {
            let bad = |reason: String| TethrError::CaBundle {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(error_chain(&e)))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(TethrError::Client)?;
        Ok(TethrClient {
            http,
            settings,
            token: tokio::sync::Mutex::new(TokenCache::default()),
            issued: Mutex::new(Vec::new()),
            credentials_refused: AtomicBool::new(false),
        })
    }

    /// The settings this client was built from.
    pub fn settings(&self) -> &TethrSettings {
        &self.settings
    }

    /// Whether the token endpoint refused the credentials the last time it was asked.
    pub fn credentials_refused(&self) -> bool {
        self.credentials_refused.load(Ordering::Relaxed)
    }

    /// Forgets the cached token if it is still the one of `generation` (after a 401).
    pub async fn forget_token(&self, generation: u64) {
        self.token.lock().await.discard(generation);
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.settings.url.trim_end_matches('/'))
    }

    /// `text` with the client secret and every recently issued token replaced by
    /// `[redacted]`, for anything that may be logged or written to the spool.
    fn scrub(&self, text: String) -> String {
        let issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = text;
        for secret in issued.iter().map(String::as_str).chain([self.settings.client_secret.expose()]) {
            if secret.len() >= SCRUB_MIN_LEN && text.contains(secret) {
                text = text.replace(secret, "[redacted]");
            }
        }
        text
    }

    /// A valid token and its generation: the cached one, or a new one from `/Token`. Requests
    /// running at once wait here for a single refresh.
    async fn token(&self) -> Result<(String, u64), TethrError> {
        let mut cache = self.token.lock().await;
        let now = clock::now();
        if let Some((token, generation)) = cache.get(now) {
            return Ok((token.to_owned(), generation));
        }
        let result = self.fetch_token().await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("siprec_tethr_token_fetches_total", "outcome" => outcome).increment(1);
        self.credentials_refused.store(
            matches!(result, Err(TethrError::TokenStatus { status: 400 | 401 | 403, .. })),
            Ordering::Relaxed,
        );
        let (token, expires_in) = result?;
        {
            let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
            if issued.len() == SCRUB_TOKENS {
                issued.remove(0);
            }
            issued.push(token.clone());
        }
        let generation = cache.store(token.clone(), expires_in, now);
        tracing::debug!(expires_in = expires_in.as_secs(), "fetched a Tethr access token");
        Ok((token, generation))
    }

    async fn fetch_token(&self) -> Result<(String, Duration), TethrError> {
        let body = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            form_encode(&self.settings.client_id),
            form_encode(self.settings.client_secret.expose())
        );
        let resp = self
            .http
            .post(self.endpoint("Token"))
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(TethrError::Transport)?;
        let status = resp.status();
        let body = read_limited(resp).await.map_err(TethrError::Transport)?;
        if !status.is_success() {
            return Err(TethrError::TokenStatus {
                status: status.as_u16(),
                body: self.scrub(lossy(&body)),
            });
        }
        parse_token_reply(&body)
    }

    /// Sends one authorized request with an optional JSON body; the reply's body is scrubbed.
    /// Returns the reply and the generation of the token used.
    async fn send_once(
        &self,
        method: Method,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<(Reply, u64), TethrError> {
        let (token, generation) = self.token().await?;
        let mut request = self.http.request(method, self.endpoint(path)).bearer_auth(&token);
        if let Some(json) = json {
            request = request.json(json);
        }
        let resp = request.send().await.map_err(TethrError::Transport)?;
        Ok((self.reply(resp).await.map_err(TethrError::Transport)?, generation))
    }

    /// Reads a response into a [`Reply`] with its body scrubbed.
    async fn reply(&self, resp: reqwest::Response) -> Result<Reply, reqwest::Error> {
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let body = read_limited(resp).await?;
        let body = if body.is_empty() {
            body
        } else {
            self.scrub(lossy(&body)).into_bytes()
        };
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }

    /// An authorized JSON request, sent again once with a new token after a 401. Any status
    /// comes back as a [`Reply`]; the caller decides what a non-2xx means.
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> Result<Reply, TethrError> {
        let (reply, generation) = self.send_once(method.clone(), path, json).await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return Ok(reply);
        }
        self.forget_token(generation).await;
        Ok(self.send_once(method, path, json).await?.0)
    }

    /// `POST /callCapture/v1/status` for several sessions at once (the `status` command).
    pub async fn call_status(&self, session_ids: &[String]) -> Result<Vec<CallSessionStatus>, TethrError> {
        const PATH: &str = "callCapture/v1/status";
        let body = serde_json::json!({ "CallSessionIds": session_ids });
        let reply = self.request(Method::POST, PATH, Some(&body)).await?;
        if !reply.status.is_success() {
            return Err(reply.into_error(PATH));
        }
        let parsed: StatusReply = serde_json::from_slice(&reply.body).map_err(|e| TethrError::Reply {
            path: PATH,
            reason: e.to_string(),
        })?;
        Ok(parsed.call_sessions)
    }

    /// Asks `/status` about one recording's session, as one step of its delivery: 401 and the
    /// other failures are the policy's to handle.
    pub async fn check_status(&self, session_id: &str) -> Attempt {
        const PATH: &str = "callCapture/v1/status";
        let body = serde_json::json!({ "CallSessionIds": [session_id] });
        let (reply, generation) = match self.send_once(Method::POST, PATH, Some(&body)).await {
            Ok(sent) => sent,
            Err(e) => return self.request_failed(e),
        };
        if !reply.status.is_success() {
            return Attempt {
                outcome: Outcome::HttpStatus {
                    code: reply.status.as_u16(),
                    retry_after: reply.retry_after,
                },
                detail: format!("status query answered {}", reply.status),
                body: lossy(&reply.body),
                token_generation: Some(generation),
            };
        }
        match serde_json::from_slice::<StatusReply>(&reply.body) {
            Ok(parsed) => Attempt {
                outcome: Outcome::Status(session_status(&parsed.call_sessions, session_id)),
                detail: String::new(),
                body: String::new(),
                token_generation: Some(generation),
            },
            // A 2xx we cannot read says nothing about the call; ask again later.
            Err(e) => Attempt {
                outcome: Outcome::Transport { maybe_sent: true },
                detail: format!("status reply is not usable: {e}"),
                body: lossy(&reply.body),
                token_generation: Some(generation),
            },
        }
    }

    /// An Attempt for a request that got no HTTP answer (or no token).
    fn request_failed(&self, e: TethrError) -> Attempt {
        let outcome = match &e {
            TethrError::Transport(e) => Outcome::Transport {
                maybe_sent: !e.is_connect(),
            },
            _ => Outcome::TokenUnavailable,
        };
        if self.credentials_refused() {
            tracing::error!(error = %e, "Tethr refused the client credentials; recordings wait in pending/");
        }
        Attempt {
            outcome,
            detail: self.scrub(e.to_string()),
            body: String::new(),
            token_generation: None,
        }
    }

    /// One attempt to archive the recording in `dir` (a `pending/<name>` directory).
    pub async fn upload(&self, dir: &Path, name: &str) -> Attempt {
        let info_path = dir.join(INFO_FILE);
        let info = match tokio::fs::read(&info_path).await {
            Ok(info) => info,
            Err(e) => return Attempt::local_trouble(&info_path, e),
        };
        // The rendered audio's kind names the `data` part's type, which `info.audio.format` matches.
        let (audio_path, kind) = audio_in(dir).unwrap_or_else(|| (dir.join(AUDIO_FILE), AUDIO_KINDS[0].1));
        let (audio, len) = match open_with_len(&audio_path).await {
            Ok(opened) => opened,
            Err(e) => return Attempt::local_trouble(&audio_path, e),
        };
        let (token, generation) = match self.token().await {
            Ok(token) => token,
            // Whatever went wrong with the token, the upload itself was not sent.
            Err(e) => {
                let mut attempt = self.request_failed(e);
                attempt.outcome = Outcome::TokenUnavailable;
                return attempt;
            }
        };
        // Both parts have a known length, so reqwest sends a Content-Length, not chunks.
        let info_part = match Part::bytes(info).mime_str("application/json; charset=utf-8") {
            Ok(part) => part,
            Err(e) => return self.request_failed(TethrError::Transport(e)),
        };
        let data_part = Part::stream_with_length(reqwest::Body::wrap_stream(ReaderStream::new(audio)), len)
            .file_name(format!("{name}.{}", kind.extension));
        let data_part = match data_part.mime_str(kind.content_type) {
            Ok(part) => part,
            Err(e) => return self.request_failed(TethrError::Transport(e)),
        };
        let form = Form::new().part("info", info_part).part("data", data_part);
        let sent = self
            .http
            .post(self.endpoint("callCapture/v1/archive"))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await;
        let reply = match sent {
            Ok(resp) => self.reply(resp).await,
            Err(e) => Err(e),
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => return self.request_failed(TethrError::Transport(e)),
        };
        let status = reply.status;
        if status.is_success() {
            let call_id = serde_json::from_slice::<serde_json::Value>(&reply.body)
                .ok()
                .and_then(|v| v.get("callId").and_then(|id| id.as_str()).map(str::to_owned));
            if call_id.is_none() {
                // Tethr took it (2xx); sending it again would duplicate the sessionId.
                tracing::warn!(
                    recording = %name,
                    status = status.as_u16(),
                    "Tethr accepted the upload without a callId in its reply"
                );
            }
            return Attempt {
                outcome: Outcome::Delivered { call_id },
                detail: String::new(),
                body: lossy(&reply.body),
                token_generation: Some(generation),
            };
        }
        Attempt {
            outcome: Outcome::HttpStatus {
                code: status.as_u16(),
                retry_after: reply.retry_after,
            },
            detail: format!("archive upload answered {status}"),
            body: lossy(&reply.body),
            token_generation: Some(generation),
        }
    }
}

async fn open_with_len(path: &Path) -> std::io::Result<(tokio::fs::File, u64)> {
    let file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    Ok((file, len))
}

/// Reads at most [`BODY_LIMIT`] bytes of a response body; the rest is not read.
async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = BODY_LIMIT - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == BODY_LIMIT {
            break;
        }
    }
    Ok(body)
}

/// A body as text for logs and error.json (a cut may have split a UTF-8 sequence).
pub(crate) fn lossy(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// `Retry-After` in delta-seconds (RFC 9110 §10.2.3). The HTTP-date form is ignored and the
/// normal backoff applies.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// An error with its sources, e.g. "error sending request: connection refused".
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// application/x-www-form-urlencoded encoding of one value (WHATWG URL §5.2): unreserved bytes
/// as they are, space as `+`, everything else percent-encoded.
fn form_encode(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 0xf)] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        let settings = TethrSettings::new("https://x", "id", s);
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert_eq!(settings.client_secret.expose(), "hunter2");
    }

    #[test]
    fn token_type_is_accepted_in_any_case() {
        let (token, ttl) =
            parse_token_reply(br#"{"access_token":"t","token_type":"Bearer","expires_in":1799}"#).unwrap();
        assert_eq!((token.as_str(), ttl), ("t", Duration::from_secs(1799)));
        assert!(parse_token_reply(br#"{"access_token":"t","token_type":"BEARER","expires_in":1}"#).is_ok());
    }

    #[test]
    fn non_bearer_or_malformed_token_replies_are_refused() {
        for body in [
            &br#"{"access_token":"t","token_type":"mac","expires_in":1799}"#[..],
            br#"{"access_token":"","token_type":"bearer","expires_in":1799}"#,
            br#"{"access_token":"t","token_type":"bearer"}"#,
            b"<html>",
        ] {
            assert!(matches!(parse_token_reply(body), Err(TethrError::TokenReply(_))));
        }
    }

    #[test]
    fn token_is_reused_until_60_seconds_before_expiry() {
        let t0 = clock::now(); // an arbitrary origin: only differences matter
        let mut cache = TokenCache::default();
        assert_eq!(cache.get(t0), None);
        let generation = cache.store("tok".into(), Duration::from_secs(1799), t0);
        assert_eq!(cache.get(t0 + Duration::from_secs(1738)), Some(("tok", generation)));
        assert_eq!(cache.get(t0 + Duration::from_secs(1739)), None);
    }

    #[test]
    fn a_401_discards_only_the_token_it_was_given_for() {
        let t0 = clock::now();
        let mut cache = TokenCache::default();
        let old = cache.store("old".into(), Duration::from_secs(1799), t0);
        let new = cache.store("new".into(), Duration::from_secs(1799), t0);
        cache.discard(old);
        assert_eq!(cache.get(t0), Some(("new", new)), "a concurrent refresh is kept");
        cache.discard(new);
        assert_eq!(cache.get(t0), None);
    }

    #[test]
    fn a_token_shorter_than_the_margin_is_not_reused() {
        let t0 = clock::now();
        let mut cache = TokenCache::default();
        cache.store("tok".into(), Duration::from_secs(30), t0);
        assert_eq!(cache.get(t0), None);
    }

    #[test]
    fn form_values_are_percent_encoded() {
        assert_eq!(form_encode("api-user_1.x"), "api-user_1.x");
        assert_eq!(form_encode("s3cr&t=+/% é"), "s3cr%26t%3D%2B%2F%25+%C3%A9");
    }

    #[test]
    fn retry_after_reads_delta_seconds_only() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, " 120 ".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn status_reply_is_read_per_session() {
        let reply: StatusReply = serde_json::from_str(
            r#"{"callSessions":[
                {"status":"Concluded","callId":"bbsnblthl","sessionId":"a"},
                {"status":"NotFound","sessionId":"b"},
                {"Status":"Excluded","SessionId":"c","durationSec":12.5}]}"#,
        )
        .unwrap();
        let s = &reply.call_sessions;
        assert_eq!(
            session_status(s, "a"),
            SessionStatus::Received {
                status: "Concluded".into(),
                call_id: Some("bbsnblthl".into())
            }
        );
        assert_eq!(session_status(s, "b"), SessionStatus::NotFound);
        assert_eq!(session_status(s, "c"), SessionStatus::Excluded);
        assert_eq!(session_status(s, "absent"), SessionStatus::NotFound);
        assert_eq!(s[2].duration_sec, Some(12.5));
    }

    #[test]
    fn scrub_removes_the_secret_and_issued_tokens() {
        let client = TethrClient::new(TethrSettings::new("http://x", "id", Secret::new("sekrit-value"))).unwrap();
        client.issued.lock().unwrap().push("tok-abcdef123".into());
        assert_eq!(
            client.scrub("bad token \"Bearer tok-abcdef123\" for sekrit-value".into()),
            "bad token \"Bearer [redacted]\" for [redacted]"
        );
    }

    #[test]
    fn nonsense_tethr_keys_are_refused_naming_the_key() {
        let base = "[tethr]\nurl = \"https://x.audio.tethr.com\"\nclient_id = \"id\"\nclient_secret = \"s\"\n";
        for (extra, key) in [
            ("concurrency = 0", "tethr.concurrency"),
            ("proxy = \"socks5://p:1080\"", "tethr.proxy"),
            ("ca_bundle = \"/nonexistent/ca.pem\"", "tethr.ca_bundle"),
            ("retry_initial = \"10m\"", "tethr.retry_initial"),
            ("instance_name = \" \"", "tethr.instance_name"),
        ] {
            let e = crate::config::Config::from_toml(&format!("{base}{extra}\n")).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
    }

    #[test]
    fn settings_from_config_map_zero_to_off() {
        let cfg = crate::config::Config::from_toml(
            "[tethr]\nurl = \"https://x.audio.tethr.com\"\nclient_id = \"id\"\nclient_secret = \"s\"\n\
             max_age = \"0s\"\nheartbeat_interval = \"0s\"\ninstance_name = \"gw-1\"\n\
             honour_recording_settings = true\nrecording_settings_ref_type = \"Agent\"\n",
        )
        .unwrap();
        let s = TethrSettings::from_config(cfg.tethr.as_ref().unwrap()).unwrap();
        assert_eq!((s.max_age, s.heartbeat_interval), (None, None));
        assert_eq!(s.instance_name, "gw-1");
        let rs = s.recording_settings.unwrap();
        assert_eq!(rs.interval, Duration::from_secs(300));
        assert_eq!(rs.filter.ref_type.as_deref(), Some("Agent"));
        let defaults = crate::config::Config::from_toml(
            "[tethr]\nurl = \"https://x.audio.tethr.com\"\nclient_id = \"id\"\nclient_secret = \"s\"\n",
        )
        .unwrap();
        let d = TethrSettings::from_config(defaults.tethr.as_ref().unwrap()).unwrap();
        assert_eq!(d.max_age, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!((d.concurrency, d.retention), (2, Duration::ZERO));
        assert_eq!(d.heartbeat_interval, Some(Duration::from_secs(60)));
        assert!(!d.instance_name.is_empty());
        assert!(d.recording_settings.is_none());
    }
}
