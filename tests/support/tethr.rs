//! An in-test stand-in for Tethr: the token, Archived Call Upload, call status, heartbeat and
//! recording settings endpoints, serving real HTTP (or HTTPS with the test CA under
//! tests/fixtures/tls/) on 127.0.0.1, checking each request against the API contract
//! (tethr-api-facts §1–5), and failing on cue.
//!
//! It is stricter than we know Tethr to be where our own rules are stricter (Content-Length
//! required, durations within 50 ms, no JSON nulls), so a test that passes here sends what we
//! promise. A request that breaks the contract gets a 400 with the reason, and the reason is
//! recorded in `rejections()`. Faults are scripted per archive request ([`Canned`]): a status
//! (with Retry-After and a body), hanging, or storing the call and then dropping the connection
//! without an answer. `/status` reports stored calls as `Concluded`. It does not implement the
//! v2 API.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::serve::{IncomingStream, Listener};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::either::Either;

/// Every wait on the stand-in gives up (and fails the test) after this long.
pub const WAIT: Duration = Duration::from_secs(30);

/// What the stand-in does with a valid archive request, after reading its whole body.
#[derive(Debug, Clone)]
pub enum Canned {
    /// Answer with this status without storing the call. `body` may contain `{token}`, which
    /// is replaced by the bearer token the request carried (to test that it is scrubbed).
    Status {
        status: u16,
        retry_after: Option<u64>,
        body: Option<String>,
    },
    /// Never answer and store nothing: the client times out.
    Hang,
    /// Store the call, then close the connection without answering.
    StoreThenDrop,
    /// Store the call, then never answer.
    StoreThenHang,
}

impl From<u16> for Canned {
    fn from(status: u16) -> Canned {
        Canned::Status {
            status,
            retry_after: None,
            body: None,
        }
    }
}

impl Canned {
    /// `status` with a `Retry-After: secs`.
    pub fn retry_after(status: u16, secs: u64) -> Canned {
        Canned::Status {
            status,
            retry_after: Some(secs),
            body: None,
        }
    }

    /// `status` with this body.
    pub fn with_body(status: u16, body: &str) -> Canned {
        Canned::Status {
            status,
            retry_after: None,
            body: Some(body.to_owned()),
        }
    }
}

/// How the stand-in behaves at start; the `set_*`/`push_*` methods change it while it runs.
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
    /// HTTP statuses for the first `/status` queries, before real answers.
    pub status_canned: Vec<u16>,
    /// Sessions `/status` reports with a fixed status (e.g. `Excluded`), whatever was stored.
    pub status_overrides: Vec<(String, String)>,
    /// What `/callCapture/v1/monitor` answers (204, or 404 for "not supported").
    pub monitor_status: u16,
    /// The `/sources/v1/recordingSettings` list; None answers 500.
    pub recording_settings: Option<Value>,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            client_id: "api-user".into(),
            client_secret: "s3cr&t=+/% é".into(),
            expires_in: 1799,
            token_type: "bearer".into(),
            canned: Vec::new(),
            status_canned: Vec::new(),
            status_overrides: Vec::new(),
            monitor_status: 204,
            recording_settings: Some(json!([])),
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

/// An upload the stand-in accepted (stored).
#[derive(Debug, Clone)]
pub struct ReceivedUpload {
    /// The `info` part.
    pub info: Value,
    /// The `data` part.
    pub wav: Vec<u8>,
    /// The callId it answered (or would have answered) with.
    pub call_id: String,
    /// The audio's length, reported as `durationSec` by `/status`.
    pub seconds: f64,
}

#[derive(Default)]
struct Record {
    client_secret: String,
    canned: VecDeque<Canned>,
    status_canned: VecDeque<u16>,
    status_overrides: HashMap<String, String>,
    monitor_status: u16,
    recording_settings: Option<Value>,
    /// Tokens issued and not revoked.
    tokens: HashSet<String>,
    /// Every token ever issued.
    issued: Vec<String>,
    token_requests: usize,
    archive_requests: usize,
    status_queries: Vec<Vec<String>>,
    heartbeats: Vec<Value>,
    settings_requests: usize,
    uploads: Vec<ReceivedUpload>,
    rejections: Vec<String>,
    tls_failures: usize,
}

struct Shared {
    behaviour: Behaviour,
    record: Mutex<Record>,
    /// Bumped on every request and change, for waiting without sleeping.
    events: watch::Sender<u64>,
}

impl Shared {
    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the record and wakes the waiters.
    fn update<T>(&self, f: impl FnOnce(&mut Record) -> T) -> T {
        let out = f(&mut self.record());
        self.events.send_modify(|n| *n += 1);
        out
    }

    fn reject(&self, status: StatusCode, reason: String) -> Response {
        self.update(|r| r.rejections.push(reason.clone()));
        (status, reason).into_response()
    }

    /// The bearer token of a request if it is one the stand-in issued and did not revoke.
    fn bearer<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let token = header_str(headers, header::AUTHORIZATION).strip_prefix("Bearer ")?;
        self.record().tokens.contains(token).then_some(token)
    }
}

/// A connection that can be cut from a handler: once `kill` is set, writes fail, so the
/// server drops the connection instead of answering.
struct Conn {
    inner: Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>,
    kill: Arc<AtomicBool>,
}

fn killed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection cut by the stand-in",
    )
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.kill.load(Ordering::Relaxed) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.kill.load(Ordering::Relaxed) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts TCP, and TLS on top when configured; records failed handshakes.
struct StandInListener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
}

impl Listener for StandInListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                continue;
            };
            let inner = match &self.tls {
                None => Either::Left(tcp),
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(tls) => Either::Right(tls),
                    Err(_) => {
                        self.shared.update(|r| r.tls_failures += 1);
                        continue;
                    }
                },
            };
            let conn = Conn {
                inner,
                kill: Arc::new(AtomicBool::new(false)),
            };
            return (conn, peer);
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// The connection a request came on, to cut it.
#[derive(Clone)]
struct Cut(Arc<AtomicBool>);

impl Connected<IncomingStream<'_, StandInListener>> for Cut {
    fn connect_info(stream: IncomingStream<'_, StandInListener>) -> Cut {
        Cut(stream.io().kill.clone())
    }
}

/// The test CA and server certificate (tests/fixtures/tls/README.md).
fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(file)
}

/// The PEM file of the CA that signed the HTTPS stand-in's certificate.
pub fn test_ca_pem() -> PathBuf {
    fixture("ca.pem")
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(fixture("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The running stand-in. Dropping it stops the server.
pub struct TethrStandIn {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TethrStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TethrStandIn {
    /// Starts the stand-in over plain HTTP on 127.0.0.1 with an ephemeral port.
    pub async fn start(behaviour: Behaviour) -> TethrStandIn {
        Self::start_on(behaviour, false).await
    }

    /// Starts the stand-in over HTTPS with the test certificate for `localhost`.
    pub async fn start_tls(behaviour: Behaviour) -> TethrStandIn {
        Self::start_on(behaviour, true).await
    }

    async fn start_on(behaviour: Behaviour, tls: bool) -> TethrStandIn {
        let record = Record {
            client_secret: behaviour.client_secret.clone(),
            canned: behaviour.canned.iter().cloned().collect(),
            status_canned: behaviour.status_canned.iter().copied().collect(),
            status_overrides: behaviour.status_overrides.iter().cloned().collect(),
            monitor_status: behaviour.monitor_status,
            recording_settings: behaviour.recording_settings.clone(),
            ..Record::default()
        };
        let shared = Arc::new(Shared {
            behaviour,
            record: Mutex::new(record),
            events: watch::Sender::new(0),
        });
        let app = Router::new()
            .route("/Token", any(token))
            .route("/callCapture/v1/archive", any(archive))
            .route("/callCapture/v1/status", any(status))
            .route("/callCapture/v1/monitor", any(monitor))
            .route("/sources/v1/recordingSettings", any(recording_settings))
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = StandInListener {
            tcp,
            tls: tls.then(tls_acceptor),
            shared: shared.clone(),
        };
        let server = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<Cut>())
                .await
                .unwrap();
        });
        TethrStandIn {
            addr,
            tls,
            shared,
            server,
        }
    }

    /// The base URL to configure the client with.
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Uploads stored so far (answered or not).
    pub fn uploads(&self) -> Vec<ReceivedUpload> {
        self.shared.record().uploads.clone()
    }

    /// Canned archive answers not yet used.
    pub fn canned_left(&self) -> usize {
        self.shared.record().canned.len()
    }

    /// Requests to `/Token` so far, valid or not.
    pub fn token_requests(&self) -> usize {
        self.shared.record().token_requests
    }

    /// Every token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.record().issued.clone()
    }

    /// Requests to the archive endpoint so far, whatever their answer.
    pub fn archive_requests(&self) -> usize {
        self.shared.record().archive_requests
    }

    /// The sessionIds of each valid `/status` query so far.
    pub fn status_queries(&self) -> Vec<Vec<String>> {
        self.shared.record().status_queries.clone()
    }

    /// The bodies of the heartbeats received so far.
    pub fn heartbeats(&self) -> Vec<Value> {
        self.shared.record().heartbeats.clone()
    }

    /// Requests for the recording settings so far.
    pub fn settings_requests(&self) -> usize {
        self.shared.record().settings_requests
    }

    /// TLS handshakes that failed (the client refused the certificate).
    pub fn tls_failures(&self) -> usize {
        self.shared.record().tls_failures
    }

    /// Why requests were refused as breaking the contract (canned answers are not listed).
    pub fn rejections(&self) -> Vec<String> {
        self.shared.record().rejections.clone()
    }

    /// Accepts only this client secret from now on (a rotation); issued tokens stay valid.
    pub fn set_client_secret(&self, secret: &str) {
        self.shared.update(|r| r.client_secret = secret.to_owned());
    }

    /// Revokes every token issued so far.
    pub fn revoke_tokens(&self) {
        self.shared.update(|r| r.tokens.clear());
    }

    /// Adds canned answers for the next archive requests, after those still queued.
    pub fn push_canned(&self, canned: impl IntoIterator<Item = impl Into<Canned>>) {
        self.shared
            .update(|r| r.canned.extend(canned.into_iter().map(Into::into)));
    }

    /// Drops the archive answers still queued: from now on every upload succeeds.
    pub fn heal(&self) {
        self.shared.update(|r| r.canned.clear());
    }

    /// What `/callCapture/v1/monitor` answers from now on.
    pub fn set_monitor_status(&self, status: u16) {
        self.shared.update(|r| r.monitor_status = status);
    }

    /// The recording settings list from now on (None: answer 500).
    pub fn set_recording_settings(&self, list: Option<Value>) {
        self.shared.update(|r| r.recording_settings = list);
    }

    /// Waits until `done` holds for the stand-in, or panics after [`WAIT`] naming `what`.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&TethrStandIn) -> bool) {
        let mut events = self.shared.events.subscribe();
        let waited = tokio::time::timeout(WAIT, async {
            loop {
                if done(self) {
                    return;
                }
                if events.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        if waited.is_err() {
            panic!("the Tethr stand-in did not see {what} within {WAIT:?}");
        }
    }

    /// Waits until at least `n` uploads were stored.
    pub async fn wait_for_uploads(&self, n: usize) {
        self.wait_until(&format!("{n} uploads"), |s| s.uploads().len() >= n)
            .await;
    }

    /// Waits until at least `n` archive requests arrived.
    pub async fn wait_for_archive_requests(&self, n: usize) {
        self.wait_until(&format!("{n} archive requests"), |s| {
            s.archive_requests() >= n
        })
        .await;
    }
}

async fn token(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.update(|r| r.token_requests += 1);
    if method != Method::POST {
        return shared.reject(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("/Token: method {method}"),
        );
    }
    if header_str(&headers, header::CONTENT_TYPE).split(';').next()
        != Some("application/x-www-form-urlencoded")
    {
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
    let secret = shared.record().client_secret.clone();
    if field("client_id") != Some(b.client_id.as_str())
        || field("client_secret") != Some(secret.as_str())
    {
        // A real server refuses without saying more; this one echoes what it got, so a test
        // can check the gateway scrubs it.
        return shared.reject(
            StatusCode::UNAUTHORIZED,
            format!("/Token: wrong client_id or client_secret in {body:?}"),
        );
    }
    let access_token = format!("tok-{:016x}", fastrand::u64(..));
    shared.update(|r| {
        r.tokens.insert(access_token.clone());
        r.issued.push(access_token.clone());
    });
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
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The refusal of a JSON endpoint request without a valid bearer token, if it has none.
fn unauthorized(shared: &Shared, path: &str, headers: &HeaderMap) -> Option<Response> {
    match shared.bearer(headers) {
        Some(_) => None,
        None => Some(shared.reject(
            StatusCode::UNAUTHORIZED,
            format!("{path}: no valid bearer token"),
        )),
    }
}

async fn status(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const PATH: &str = "/callCapture/v1/status";
    if method != Method::POST {
        return shared.reject(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{PATH}: method {method}"),
        );
    }
    if let Some(refused) = unauthorized(&shared, PATH, &headers) {
        return refused;
    }
    if !header_str(&headers, header::CONTENT_TYPE).starts_with("application/json") {
        return shared.reject(
            StatusCode::BAD_REQUEST,
            format!("{PATH}: content-type is not JSON"),
        );
    }
    let ids: Option<Vec<String>> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| serde_json::from_value(v.get("CallSessionIds")?.clone()).ok());
    let Some(ids) = ids else {
        return shared.reject(
            StatusCode::BAD_REQUEST,
            format!("{PATH}: body is not {{\"CallSessionIds\":[…]}}"),
        );
    };
    let (canned, sessions) = shared.update(|r| {
        r.status_queries.push(ids.clone());
        let canned = r.status_canned.pop_front();
        let sessions: Vec<Value> = ids
            .iter()
            .map(|id| {
                let stored = r.uploads.iter().find(|u| u.info["sessionId"] == id.as_str());
                match (r.status_overrides.get(id), stored) {
                    (Some(status), _) => json!({"sessionId": id, "status": status}),
                    (None, Some(u)) => json!({"sessionId": id, "status": "Concluded", "callId": u.call_id, "durationSec": u.seconds}),
                    (None, None) => json!({"sessionId": id, "status": "NotFound"}),
                }
            })
            .collect();
        (canned, sessions)
    });
    if let Some(code) = canned {
        let status = StatusCode::from_u16(code).unwrap();
        return (status, format!("canned {status}")).into_response();
    }
    axum::Json(json!({ "callSessions": sessions })).into_response()
}

async fn monitor(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const PATH: &str = "/callCapture/v1/monitor";
    if method != Method::POST {
        return shared.reject(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{PATH}: method {method}"),
        );
    }
    if let Some(refused) = unauthorized(&shared, PATH, &headers) {
        return refused;
    }
    let Ok(beat) = serde_json::from_slice::<Value>(&body) else {
        return shared.reject(StatusCode::BAD_REQUEST, format!("{PATH}: body is not JSON"));
    };
    let well_formed = matches!(beat["Status"].as_u64(), Some(0 | 1 | 10 | 20 | 30))
        && beat["TimeStamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.parse::<jiff::Timestamp>().is_ok())
        && beat["Name"].as_str().is_some_and(|n| !n.is_empty())
        && beat["SoftwareVersion"]
            .as_str()
            .is_some_and(|v| !v.is_empty());
    if !well_formed {
        return shared.reject(
            StatusCode::BAD_REQUEST,
            format!("{PATH}: malformed heartbeat {beat}"),
        );
    }
    let answer = shared.update(|r| {
        r.heartbeats.push(beat);
        r.monitor_status
    });
    StatusCode::from_u16(answer).unwrap().into_response()
}

async fn recording_settings(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    const PATH: &str = "/sources/v1/recordingSettings";
    if method != Method::GET {
        return shared.reject(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{PATH}: method {method}"),
        );
    }
    if let Some(refused) = unauthorized(&shared, PATH, &headers) {
        return refused;
    }
    match shared.update(|r| {
        r.settings_requests += 1;
        r.recording_settings.clone()
    }) {
        Some(list) => axum::Json(list).into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "settings unavailable").into_response(),
    }
}

async fn archive(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(cut): ConnectInfo<Cut>,
    req: Request,
) -> Response {
    shared.update(|r| r.archive_requests += 1);
    let response = check_and_answer(&shared, &cut, req).await;
    response.unwrap_or_else(|(status, reason)| shared.reject(status, reason))
}

/// Validates an archive request; Err is (status, reason) for a contract violation.
async fn check_and_answer(
    shared: &Shared,
    cut: &Cut,
    req: Request,
) -> Result<Response, (StatusCode, String)> {
    let bad = |reason: String| (StatusCode::BAD_REQUEST, reason);
    if req.method() != Method::POST {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("archive: method {}", req.method()),
        ));
    }
    let headers = req.headers().clone();
    let Some(token) = shared.bearer(&headers).map(str::to_owned) else {
        // Read the body first: answering while the client still sends would make the 401
        // arrive as a reset connection, depending on timing.
        let _ = axum::body::to_bytes(req.into_body(), usize::MAX).await;
        let auth = header_str(&headers, header::AUTHORIZATION);
        return Err((
            StatusCode::UNAUTHORIZED,
            format!("archive: not a valid bearer token: {auth:?}"),
        ));
    };
    if !headers.contains_key(header::CONTENT_LENGTH) {
        return Err(bad("archive: no Content-Length".into()));
    }
    if header_str(&headers, header::TRANSFER_ENCODING).contains("chunked") {
        return Err(bad("archive: chunked transfer coding".into()));
    }
    if !header_str(&headers, header::CONTENT_TYPE).starts_with("multipart/form-data") {
        return Err(bad(
            "archive: content-type is not multipart/form-data".into()
        ));
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
            "info" | "data" => {
                return Err(bad(format!(
                    "archive: part {name} has content-type {content_type:?}"
                )));
            }
            other => return Err(bad(format!("archive: unexpected part {other:?}"))),
        };
        if slot.replace(bytes).is_some() {
            return Err(bad(format!("archive: part {name} sent twice")));
        }
    }
    let (Some(info), Some(data)) = (info, data) else {
        return Err(bad("archive: parts info and data are both required".into()));
    };
    let info: Value =
        serde_json::from_slice(&info).map_err(|e| bad(format!("info: not JSON: {e}")))?;
    let wav = hound::WavReader::new(Cursor::new(&data[..]))
        .map_err(|e| bad(format!("data: not a WAV: {e}")))?;
    let spec = wav.spec();
    let seconds = f64::from(wav.duration()) / f64::from(spec.sample_rate);
    check_info(&info, spec.channels, seconds).map_err(|e| bad(format!("info: {e}")))?;

    let canned = shared.update(|r| r.canned.pop_front());
    let store = || {
        let call_id = format!("call{:08x}", fastrand::u32(..));
        shared.update(|r| {
            r.uploads.push(ReceivedUpload {
                info: info.clone(),
                wav: data.to_vec(),
                call_id: call_id.clone(),
                seconds,
            })
        });
        call_id
    };
    match canned {
        None => {
            let call_id = store();
            Ok(axum::Json(json!({ "callId": call_id })).into_response())
        }
        Some(Canned::Status {
            status,
            retry_after,
            body,
        }) => {
            if status == 401 {
                shared.update(|r| r.tokens.remove(&token));
            }
            let status = StatusCode::from_u16(status).unwrap();
            let body = body.map_or_else(
                || format!("canned {status}"),
                |b| b.replace("{token}", &token),
            );
            let mut response = (status, body).into_response();
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, secs.into());
            }
            Ok(response)
        }
        Some(Canned::Hang) => std::future::pending().await,
        Some(Canned::StoreThenHang) => {
            store();
            std::future::pending().await
        }
        Some(Canned::StoreThenDrop) => {
            store();
            // The answer cannot be written: the server closes the connection instead.
            cut.0.store(true, Ordering::Relaxed);
            Ok(axum::Json(json!({ "callId": "never-sent" })).into_response())
        }
    }
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
    if !matches!(
        direction,
        Some("Inbound" | "Outbound" | "Internal" | "Unknown")
    ) {
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
    let Some(value) = info.get(key) else {
        return Ok(None);
    };
    let text = value.as_str().ok_or(format!("{key} is not a string"))?;
    if !text.ends_with('Z') {
        return Err(format!("{key} {text:?} is not UTC with Z"));
    }
    text.parse()
        .map(Some)
        .map_err(|e| format!("{key} {text:?}: {e}"))
}

/// The JSON path of the first null in `value`, if any.
fn find_null(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Null => Some(path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_null(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| find_null(v, &format!("{path}.{k}"))),
        _ => None,
    }
}

/// A recording finished into a spool's `pending/`, as the recorder would leave it.
pub struct Recording {
    /// The spool directory name.
    pub name: String,
    /// Its info.json.
    pub info: Vec<u8>,
    /// Its audio.wav.
    pub wav: Vec<u8>,
}

impl Recording {
    /// The sessionId in its info.
    pub fn session_id(&self) -> String {
        format!("rs-{}", self.name)
    }
}

const SAMPLE_RATE: u32 = 8000;

/// A 16-bit PCM WAV: a different tone on each channel.
pub fn wav_bytes(channels: u16, seconds: f64) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
    let frames = (seconds * f64::from(SAMPLE_RATE)) as u32;
    for n in 0..frames {
        for ch in 0..channels {
            let freq = 300.0 + 200.0 * f64::from(ch);
            let v =
                (2.0 * std::f64::consts::PI * freq * f64::from(n) / f64::from(SAMPLE_RATE)).sin();
            writer.write_sample((v * 8000.0) as i16).unwrap();
        }
    }
    writer.finalize().unwrap();
    out.into_inner()
}

/// info.json as the recorder would write it for a SIPREC call.
pub fn info_json(session_id: &str, seconds: f64, direction: &str) -> Vec<u8> {
    let start: jiff::Timestamp = "2025-03-04T10:15:30.250Z".parse().unwrap();
    let end = start + jiff::SignedDuration::from_secs_f64(seconds);
    let info = json!({
        "sessionId": session_id,
        "masterCallId": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6@sbc.example.com",
        "startTime": start.to_string(),
        "endTime": end.to_string(),
        "direction": direction,
        "audio": {"format": "wav"},
        "contacts": [
            {"type": "agent", "channel": 0, "referenceId": "1001", "phoneNumber": "+15555550100"},
            {"type": "customer", "channel": 1, "phoneNumber": "+15555550199"}
        ],
        "metaData": {"siprec": {"callId": "a84b4c76e66710@pc33.example.com", "ucid": "00001234567890"}}
    });
    serde_json::to_vec_pretty(&info).unwrap()
}

/// Records a call into `active/<name>/` of the spool at `root` and finishes it into
/// `pending/`, with sessionId `rs-<name>`.
pub fn record(spool: &siprec_gateway::delivery::Spool, name: &str, direction: &str) -> Recording {
    let seconds = 1.5;
    let wav = wav_bytes(2, seconds);
    let info = info_json(&format!("rs-{name}"), seconds, direction);
    std::fs::create_dir_all(spool.active_dir(name)).unwrap();
    std::fs::write(
        spool
            .active_dir(name)
            .join(siprec_gateway::delivery::AUDIO_FILE),
        &wav,
    )
    .unwrap();
    spool.finish(name, &info).unwrap();
    Recording {
        name: name.to_owned(),
        info,
        wav,
    }
}

/// Checks that the stand-in stored each recording exactly once, byte for byte.
pub fn assert_received(stand_in: &TethrStandIn, recordings: &[&Recording]) {
    let uploads = stand_in.uploads();
    assert_eq!(uploads.len(), recordings.len(), "one upload per recording");
    for rec in recordings {
        let expected: Value = serde_json::from_slice(&rec.info).unwrap();
        let got: Vec<_> = uploads
            .iter()
            .filter(|u| u.info["sessionId"] == expected["sessionId"])
            .collect();
        assert_eq!(
            got.len(),
            1,
            "{} stored exactly once",
            expected["sessionId"]
        );
        assert_eq!(got[0].info, expected, "info is exactly info.json");
        assert!(got[0].wav == rec.wav, "data is exactly audio.wav");
        assert!(!got[0].call_id.is_empty());
    }
}

/// A delivery worker (the library's, not the binary) with a shutdown switch.
pub struct DeliveryWorker {
    pub handle: siprec_gateway::delivery::DeliveryHandle,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl DeliveryWorker {
    /// Starts `delivery::start` on the spool.
    pub fn start(
        spool: &siprec_gateway::delivery::Spool,
        sink: siprec_gateway::delivery::Sink,
    ) -> DeliveryWorker {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (handle, task) = siprec_gateway::delivery::start(spool.clone(), sink, async move {
            let _ = stopped.await;
        });
        DeliveryWorker { handle, task, stop }
    }

    /// Waits until the worker's counters satisfy `done`, or panics after [`WAIT`]. Tests
    /// expecting deliveries wait for delivered + failed, so a refusal fails the test at once.
    pub async fn wait(
        &self,
        done: impl FnMut(&siprec_gateway::delivery::DeliveryStats) -> bool,
    ) -> siprec_gateway::delivery::DeliveryStats {
        let mut stats = self.handle.stats();
        let result = tokio::time::timeout(WAIT, stats.wait_for(done)).await;
        *result
            .expect("the delivery worker did not get there in time")
            .unwrap()
    }

    /// Stops the worker (as at shutdown) and waits for it.
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the worker stops")
            .unwrap();
    }
}

/// Installs the process's TLS provider (the binary does this in main).
pub fn install_crypto() {
    // Err only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Tethr settings for the stand-in: fast retries, no heartbeats (tests that want them set an
/// interval), the behaviour's credentials.
pub fn settings(
    stand_in: &TethrStandIn,
    behaviour: &Behaviour,
) -> siprec_gateway::delivery::TethrSettings {
    use siprec_gateway::delivery::{Secret, TethrSettings};
    TethrSettings {
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
        heartbeat_interval: None,
        instance_name: "test-gateway".into(),
        ..TethrSettings::new(
            stand_in.url(),
            behaviour.client_id.clone(),
            Secret::new(behaviour.client_secret.clone()),
        )
    }
}
