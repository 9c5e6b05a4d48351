//! An in-test stand-in for Tethr's token and Archived Call Upload endpoints, serving real HTTP
//! on 127.0.0.1 and checking each request against the API contract (tethr-api-facts §1, §2).
//!
//! It is stricter than we know Tethr to be where our own rules are stricter (Content-Length
//! required, durations within 50 ms, no JSON nulls), so a test that passes here sends what we
//! promise. A request that breaks the contract gets a 400 with the reason, and the reason is
//! recorded in `rejections()`. It does not implement `/status`, heartbeats or the v2 API.

use std::collections::{HashSet, VecDeque};
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use tokio::sync::watch;

/// A scripted answer to an archive request that passed validation.
#[derive(Debug, Clone, Copy)]
pub struct Canned {
    /// The HTTP status to answer with.
    pub status: u16,
    /// A `Retry-After` value in seconds, if any.
    pub retry_after: Option<u64>,
}

impl From<u16> for Canned {
    fn from(status: u16) -> Canned {
        Canned {
            status,
            retry_after: None,
        }
    }
}

/// How the stand-in behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// The client id it accepts.
    pub client_id: String,
    /// The client secret it accepts.
    pub client_secret: String,
    /// `expires_in` of issued tokens, seconds.
    pub expires_in: u64,
    /// `token_type` of issued tokens.
    pub token_type: String,
    /// Answers for the first valid archive requests, in order; after them, success. A canned
    /// 401 also revokes the token that was used, as a real revocation would.
    pub canned: Vec<Canned>,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            client_id: "api-user".into(),
            client_secret: "s3cr&t=+/% é".into(),
            expires_in: 1799,
            token_type: "bearer".into(),
            canned: Vec::new(),
        }
    }
}

impl Behaviour {
    /// The default behaviour with these canned answers first.
    pub fn with_canned(canned: impl IntoIterator<Item = impl Into<Canned>>) -> Behaviour {
        Behaviour {
            canned: canned.into_iter().map(Into::into).collect(),
            ..Behaviour::default()
        }
    }
}

/// An upload the stand-in accepted.
#[derive(Debug, Clone)]
pub struct ReceivedUpload {
    /// The `info` part.
    pub info: Value,
    /// The `data` part.
    pub wav: Vec<u8>,
    /// The callId it answered with.
    pub call_id: String,
}

#[derive(Default)]
struct Record {
    canned: VecDeque<Canned>,
    /// Tokens issued and not revoked.
    tokens: HashSet<String>,
    token_requests: usize,
    archive_requests: usize,
    uploads: Vec<ReceivedUpload>,
    rejections: Vec<String>,
}

struct Shared {
    behaviour: Behaviour,
    record: Mutex<Record>,
    /// Count of accepted uploads, for waiting without sleeping.
    uploaded: watch::Sender<usize>,
    /// Count of archive requests of any kind.
    archived: watch::Sender<usize>,
}

impl Shared {
    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap()
    }

    fn reject(&self, status: StatusCode, reason: String) -> Response {
        self.record().rejections.push(reason.clone());
        (status, reason).into_response()
    }
}

/// The running stand-in. Dropping it stops the server.
pub struct TethrStandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TethrStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TethrStandIn {
    /// Starts the stand-in on 127.0.0.1 with an ephemeral port.
    pub async fn start(behaviour: Behaviour) -> TethrStandIn {
        let record = Record {
            canned: behaviour.canned.iter().copied().collect(),
            ..Record::default()
        };
        let shared = Arc::new(Shared {
            behaviour,
            record: Mutex::new(record),
            uploaded: watch::Sender::new(0),
            archived: watch::Sender::new(0),
        });
        let app = Router::new()
            .route("/Token", any(token))
            .route("/callCapture/v1/archive", any(archive))
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TethrStandIn { addr, shared, server }
    }

    /// The base URL to configure the client with.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Uploads accepted so far.
    pub fn uploads(&self) -> Vec<ReceivedUpload> {
        self.shared.record().uploads.clone()
    }

    /// Requests to `/Token` so far, valid or not.
    pub fn token_requests(&self) -> usize {
        self.shared.record().token_requests
    }

    /// Requests to the archive endpoint so far, whatever their answer.
    pub fn archive_requests(&self) -> usize {
        self.shared.record().archive_requests
    }

    /// Why requests were refused as breaking the contract (canned answers are not listed).
    pub fn rejections(&self) -> Vec<String> {
        self.shared.record().rejections.clone()
    }

    /// Waits until at least `n` uploads were accepted.
    pub async fn wait_for_uploads(&self, n: usize) {
        let mut rx = self.shared.uploaded.subscribe();
        rx.wait_for(|count| *count >= n).await.unwrap();
    }

    /// Waits until at least `n` archive requests arrived.
    pub async fn wait_for_archive_requests(&self, n: usize) {
        let mut rx = self.shared.archived.subscribe();
        rx.wait_for(|count| *count >= n).await.unwrap();
    }
}

async fn token(State(shared): State<Arc<Shared>>, method: Method, headers: HeaderMap, body: Bytes) -> Response {
    shared.record().token_requests += 1;
    if method != Method::POST {
        return shared.reject(StatusCode::METHOD_NOT_ALLOWED, format!("/Token: method {method}"));
    }
    if header_str(&headers, header::CONTENT_TYPE).split(';').next() != Some("application/x-www-form-urlencoded") {
        return shared.reject(
            StatusCode::BAD_REQUEST,
            "/Token: content-type is not form-urlencoded".into(),
        );
    }
    let Ok(body) = std::str::from_utf8(&body) else {
        return shared.reject(StatusCode::BAD_REQUEST, "/Token: body is not UTF-8".into());
    };
    let form = parse_form(body);
    let field = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    if field("grant_type") != Some("client_credentials") {
        return shared.reject(
            StatusCode::BAD_REQUEST,
            "/Token: grant_type is not client_credentials".into(),
        );
    }
    let b = &shared.behaviour;
    if field("client_id") != Some(b.client_id.as_str()) || field("client_secret") != Some(b.client_secret.as_str()) {
        return shared.reject(
            StatusCode::UNAUTHORIZED,
            "/Token: wrong client_id or client_secret".into(),
        );
    }
    let access_token = format!("tok-{:016x}", fastrand::u64(..));
    shared.record().tokens.insert(access_token.clone());
    axum::Json(json!({"access_token": access_token, "token_type": b.token_type, "expires_in": b.expires_in}))
        .into_response()
}

/// Decodes an application/x-www-form-urlencoded body (`+` is space, `%XX` a byte).
fn parse_form(body: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
            match (bytes[i], hex) {
                (b'+', _) => out.push(b' '),
                (b'%', Some(byte)) => {
                    out.push(byte);
                    i += 2;
                }
                (b, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn archive(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    shared.record().archive_requests += 1;
    shared.archived.send_modify(|n| *n += 1);
    let response = check_and_answer(&shared, req).await;
    response.unwrap_or_else(|(status, reason)| shared.reject(status, reason))
}

/// Validates an archive request; Err is (status, reason) for a contract violation.
async fn check_and_answer(shared: &Shared, req: Request) -> Result<Response, (StatusCode, String)> {
    let bad = |reason: String| (StatusCode::BAD_REQUEST, reason);
    if req.method() != Method::POST {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("archive: method {}", req.method()),
        ));
    }
    let headers = req.headers().clone();
    let auth = header_str(&headers, header::AUTHORIZATION);
    let token = auth.strip_prefix("Bearer ").unwrap_or("");
    if !shared.record().tokens.contains(token) {
        return Err((
            StatusCode::UNAUTHORIZED,
            format!("archive: not a valid bearer token: {auth:?}"),
        ));
    }
    if !headers.contains_key(header::CONTENT_LENGTH) {
        return Err(bad("archive: no Content-Length".into()));
    }
    if header_str(&headers, header::TRANSFER_ENCODING).contains("chunked") {
        return Err(bad("archive: chunked transfer coding".into()));
    }
    if !header_str(&headers, header::CONTENT_TYPE).starts_with("multipart/form-data") {
        return Err(bad("archive: content-type is not multipart/form-data".into()));
    }
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| bad(format!("archive: {e}")))?;
    let (mut info, mut data) = (None, None);
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| bad(format!("archive: multipart: {e}")))?
    {
        let name = field.name().unwrap_or("").to_owned();
        let content_type = field.content_type().unwrap_or("").to_owned();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| bad(format!("archive: part {name}: {e}")))?;
        let slot = match name.as_str() {
            "info" if content_type.starts_with("application/json") => &mut info,
            "data" if content_type == "audio/wav" => &mut data,
            "info" | "data" => return Err(bad(format!("archive: part {name} has content-type {content_type:?}"))),
            other => return Err(bad(format!("archive: unexpected part {other:?}"))),
        };
        if slot.replace(bytes).is_some() {
            return Err(bad(format!("archive: part {name} sent twice")));
        }
    }
    let (Some(info), Some(data)) = (info, data) else {
        return Err(bad("archive: parts info and data are both required".into()));
    };
    let info: Value = serde_json::from_slice(&info).map_err(|e| bad(format!("info: not JSON: {e}")))?;
    let wav = hound::WavReader::new(Cursor::new(&data[..])).map_err(|e| bad(format!("data: not a WAV: {e}")))?;
    let spec = wav.spec();
    let seconds = f64::from(wav.duration()) / f64::from(spec.sample_rate);
    check_info(&info, spec.channels, seconds).map_err(|e| bad(format!("info: {e}")))?;

    let canned = shared.record().canned.pop_front();
    if let Some(canned) = canned {
        if canned.status == 401 {
            shared.record().tokens.remove(token);
        }
        let status = StatusCode::from_u16(canned.status).unwrap();
        let mut response = (status, format!("canned {status}")).into_response();
        if let Some(secs) = canned.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        return Ok(response);
    }
    let call_id = format!("call{:08x}", fastrand::u32(..));
    shared.record().uploads.push(ReceivedUpload {
        info,
        wav: data.to_vec(),
        call_id: call_id.clone(),
    });
    shared.uploaded.send_modify(|n| *n += 1);
    Ok(axum::Json(json!({ "callId": call_id })).into_response())
}

/// Checks the `info` JSON against the contract, given the WAV's channel count and duration.
fn check_info(info: &Value, wav_channels: u16, wav_seconds: f64) -> Result<(), String> {
    if let Some(path) = find_null(info, "$") {
        return Err(format!("null value at {path}"));
    }
    match info.get("sessionId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => {}
        _ => return Err("sessionId must be a non-empty string".into()),
    }
    let start = utc_time(info, "startTime")?.ok_or("startTime is required")?;
    if let Some(end) = utc_time(info, "endTime")? {
        let reported = end.duration_since(start).as_secs_f64();
        if (reported - wav_seconds).abs() > 0.050 {
            return Err(format!(
                "endTime - startTime = {reported:.3}s but the WAV lasts {wav_seconds:.3}s"
            ));
        }
    }
    let direction = info.get("direction").and_then(Value::as_str);
    if !matches!(direction, Some("Inbound" | "Outbound" | "Internal" | "Unknown")) {
        return Err(format!(
            "direction {direction:?} is not Inbound|Outbound|Internal|Unknown"
        ));
    }
    if info.pointer("/audio/format").and_then(Value::as_str) != Some("wav") {
        return Err("audio.format must be \"wav\"".into());
    }
    let contacts = info
        .get("contacts")
        .and_then(Value::as_array)
        .ok_or("contacts must be an array")?;
    let (mut channels, mut types) = (HashSet::new(), HashSet::new());
    for contact in contacts {
        let kind = contact
            .get("type")
            .and_then(Value::as_str)
            .ok_or("contact without a string type")?;
        let channel = contact
            .get("channel")
            .and_then(Value::as_u64)
            .ok_or("contact without an integer channel")?;
        if channel >= u64::from(wav_channels) {
            return Err(format!(
                "contact channel {channel} but the WAV has {wav_channels} channels"
            ));
        }
        if !channels.insert(channel) {
            return Err(format!("two contacts on channel {channel}"));
        }
        if !types.insert(kind.to_owned()) {
            return Err(format!("two contacts of type {kind:?}"));
        }
    }
    Ok(())
}

/// `info[key]` as a UTC ISO-8601 time ending in `Z`; Ok(None) when absent.
fn utc_time(info: &Value, key: &str) -> Result<Option<jiff::Timestamp>, String> {
    let Some(value) = info.get(key) else { return Ok(None) };
    let text = value.as_str().ok_or(format!("{key} is not a string"))?;
    if !text.ends_with('Z') {
        return Err(format!("{key} {text:?} is not UTC with Z"));
    }
    text.parse().map(Some).map_err(|e| format!("{key} {text:?}: {e}"))
}

/// The JSON path of the first null in `value`, if any.
fn find_null(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Null => Some(path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_null(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| find_null(v, &format!("{path}.{k}"))),
        _ => None,
    }
}
