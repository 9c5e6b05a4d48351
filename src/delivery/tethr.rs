//! The Tethr sink: one upload attempt to the Archived Call Upload API.
//!
//! `POST {url}/Token` (OAuth2 client credentials, form-urlencoded) yields a bearer token that is
//! cached until `expires_in − 45 s`, the margin all three Tethr SDKs use. `POST
//! {url}/callCapture/v1/archive` then carries a multipart/form-data body with exactly two parts,
//! `info` (the recording's info.json) and `data` (its WAV, streamed from disk), and a
//! Content-Length, since no Tethr client sends chunked uploads (tethr-api-facts §1, §2.2).
//!
//! Each attempt ends in a [`policy::Outcome`]; what to do about it (retry, refresh the token,
//! give up) is the policy's business, not this module's. It does not check `/status` before a
//! retry and does not send heartbeats.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use tokio_util::io::ReaderStream;

use super::Attempt;
use super::policy::Outcome;
use super::spool::{AUDIO_FILE, INFO_FILE};
use crate::clock;

/// Tokens are treated as expired this long before the server says, so one never runs out
/// in flight (the SDKs' margin).
const TOKEN_MARGIN: Duration = Duration::from_secs(45);
/// Response bodies are kept (for logs and error.json) up to this size.
const BODY_LIMIT: usize = 64 * 1024;

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

/// Where and how to upload to Tethr.
#[derive(Debug, Clone)]
pub struct TethrSettings {
    /// Base URL of the instance, e.g. `https://example.audio.tethr.com`.
    pub url: String,
    /// The API user's client id.
    pub client_id: String,
    /// The API user's client secret.
    pub client_secret: Secret,
    /// Timeout of one whole request, upload included.
    pub timeout: Duration,
    /// First retry delay after a failed attempt.
    pub retry_initial: Duration,
    /// Cap on the retry delay.
    pub retry_max: Duration,
}

impl TethrSettings {
    /// Settings with the default timeout (5 min, as in Tethr's SDKs) and retry bounds (1 s
    /// doubling to 5 min).
    pub fn new(url: impl Into<String>, client_id: impl Into<String>, client_secret: Secret) -> TethrSettings {
        TethrSettings {
            url: url.into(),
            client_id: client_id.into(),
            client_secret,
            timeout: Duration::from_secs(300),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// An error talking to Tethr other than an HTTP status on the upload itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TethrError {
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The request did not get an answer (connect, TLS, timeout, reset).
    #[error("{}", error_chain(.0))]
    Transport(#[source] reqwest::Error),
    /// The token endpoint answered with a non-2xx status.
    #[error("token request refused: HTTP {status}: {body}")]
    TokenStatus {
        /// The HTTP status.
        status: u16,
        /// The response body, truncated.
        body: String,
    },
    /// The token endpoint's reply was not a usable bearer token.
    #[error("unusable token reply: {0}")]
    TokenReply(String),
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

/// The cached bearer token and until when it may be used.
#[derive(Default)]
struct TokenCache {
    token: Option<(String, Instant)>,
}

impl TokenCache {
    /// The token, if it is still good at `now`.
    fn get(&self, now: Instant) -> Option<&str> {
        self.token
            .as_ref()
            .filter(|(_, until)| now < *until)
            .map(|(t, _)| t.as_str())
    }

    /// Stores a token obtained by a request sent at `requested_at`.
    fn store(&mut self, token: String, expires_in: Duration, requested_at: Instant) {
        let until = requested_at + expires_in.saturating_sub(TOKEN_MARGIN);
        self.token = Some((token, until));
    }

    fn clear(&mut self) {
        self.token = None;
    }
}

/// One Tethr instance: the HTTP client and the cached token.
pub struct TethrClient {
    http: reqwest::Client,
    settings: TethrSettings,
    token: TokenCache,
}

impl TethrClient {
    /// Builds the client. Installs the ring crypto provider if the process has none yet
    /// (reqwest would otherwise panic).
    pub fn new(settings: TethrSettings) -> Result<TethrClient, TethrError> {
        // Err only means another provider is installed already, which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(30).min(settings.timeout))
            // A redirected POST would turn into a GET; a redirect here means a wrong URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("siprec-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(TethrError::Client)?;
        Ok(TethrClient {
            http,
            settings,
            token: TokenCache::default(),
        })
    }

    /// Forgets the cached token, so the next attempt fetches a new one (after a 401).
    pub fn forget_token(&mut self) {
        self.token.clear();
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.settings.url.trim_end_matches('/'))
    }

    /// A valid token: the cached one, or a new one from `/Token`.
    async fn token(&mut self) -> Result<String, TethrError> {
        let now = clock::now();
        if let Some(token) = self.token.get(now) {
            return Ok(token.to_owned());
        }
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
                body: lossy(&body),
            });
        }
        let (token, expires_in) = parse_token_reply(&body)?;
        self.token.store(token.clone(), expires_in, now);
        tracing::debug!(expires_in = expires_in.as_secs(), "fetched a Tethr access token");
        Ok(token)
    }

    /// One attempt to archive the recording in `dir` (a `pending/<name>` directory).
    pub async fn upload(&mut self, dir: &Path, name: &str) -> Attempt {
        let info_path = dir.join(INFO_FILE);
        let info = match tokio::fs::read(&info_path).await {
            Ok(info) => info,
            Err(e) => return Attempt::local_trouble(&info_path, e),
        };
        let audio_path = dir.join(AUDIO_FILE);
        let (audio, len) = match open_with_len(&audio_path).await {
            Ok(opened) => opened,
            Err(e) => return Attempt::local_trouble(&audio_path, e),
        };
        let token = match self.token().await {
            Ok(token) => token,
            Err(e) => {
                if matches!(
                    e,
                    TethrError::TokenStatus {
                        status: 400 | 401 | 403,
                        ..
                    }
                ) {
                    tracing::error!(error = %e, "Tethr refused the client credentials; recordings wait in pending/");
                }
                return Attempt {
                    outcome: Outcome::TokenUnavailable,
                    detail: e.to_string(),
                    body: String::new(),
                };
            }
        };
        // Both parts have a known length, so reqwest sends a Content-Length, not chunks.
        let info_part = match Part::bytes(info).mime_str("application/json; charset=utf-8") {
            Ok(part) => part,
            Err(e) => return transport(&e),
        };
        let data_part = Part::stream_with_length(reqwest::Body::wrap_stream(ReaderStream::new(audio)), len)
            .file_name(format!("{name}.wav"));
        let data_part = match data_part.mime_str("audio/wav") {
            Ok(part) => part,
            Err(e) => return transport(&e),
        };
        let form = Form::new().part("info", info_part).part("data", data_part);
        let sent = self
            .http
            .post(self.endpoint("callCapture/v1/archive"))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => return transport(&e),
        };
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let body = match read_limited(resp).await {
            Ok(body) => body,
            Err(e) => return transport(&e),
        };
        if status.is_success() {
            let call_id = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("callId").and_then(|id| id.as_str()).map(str::to_owned));
            if call_id.is_none() {
                // Tethr took it (2xx); sending it again would duplicate the sessionId.
                tracing::warn!(
                    status = status.as_u16(),
                    "Tethr accepted the upload without a callId in its reply"
                );
            }
            return Attempt {
                outcome: Outcome::Delivered { call_id },
                detail: String::new(),
                body: lossy(&body),
            };
        }
        Attempt {
            outcome: Outcome::HttpStatus {
                code: status.as_u16(),
                retry_after,
            },
            detail: format!("archive upload answered {status}"),
            body: lossy(&body),
        }
    }
}

fn transport(e: &reqwest::Error) -> Attempt {
    Attempt {
        outcome: Outcome::Transport,
        detail: error_chain(e),
        body: String::new(),
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
fn lossy(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// `Retry-After` in delta-seconds (RFC 9110 §10.2.3). The HTTP-date form is ignored and the
/// normal backoff applies.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// An error with its sources, e.g. "error sending request: connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
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
    fn token_is_reused_until_45_seconds_before_expiry() {
        let t0 = clock::now(); // an arbitrary origin: only differences matter
        let mut cache = TokenCache::default();
        assert_eq!(cache.get(t0), None);
        cache.store("tok".into(), Duration::from_secs(1799), t0);
        assert_eq!(cache.get(t0 + Duration::from_secs(1753)), Some("tok"));
        assert_eq!(cache.get(t0 + Duration::from_secs(1754)), None);
        cache.clear();
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
}
