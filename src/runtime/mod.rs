//! The runtime: binds the sockets, starts the media thread and the delivery worker, and runs
//! the signalling task that drives the sans-IO cores. It moves bytes and timers and decides
//! nothing the cores can decide.
//!
//! One call's path: a transport task frames an INVITE → the signalling task feeds it to
//! [`sip::Endpoint`] → on `Event::Invite` it parses the offer ([`siprec`]), plans the channels
//! ([`session`]), binds RTP ports, creates the call's spool directory and WAV, answers 200 and
//! hands the sockets and file to the media thread → on BYE (or RTP timeout, or shutdown) the media
//! thread finishes the WAV, a finalize task builds `info` ([`mapping`]), moves the call to
//! `pending/` and the delivery worker takes it from there.

pub mod at_rest;
mod finalize;
pub mod media;
pub mod ops;
pub mod rx;
pub mod tls;
pub mod transport;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::clock::{self, Epoch};
use crate::config::{Config, ListenTransport};
use crate::limits::{AllowList, LogGate};
use crate::delivery::{self, DeliveryHandle, SettingsDecision, Sink, Spool, TethrSettings};
use crate::mapping;
use crate::media::ports::PortAllocator;
use crate::session::{self, EndReason, Phase, Session};
use crate::sip::{DialogId, Endpoint, EndpointConfig, Event, Message, Peer, Transmit, Transport, TxKey};
use crate::siprec::{self, MetadataOutcome, OfferLimits, sdp};
use media::{CallSetup, Command, MediaEvent, MediaHandle, StreamSetup};
use transport::Inbound;

/// How long shutdown waits for the delivery worker to hand over this run's recordings.
const DELIVERY_DRAIN: Duration = Duration::from_secs(10);

/// Errors that stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A listener could not be bound.
    #[error("cannot listen on {transport}:{addr}: {source}")]
    Bind { transport: &'static str, addr: SocketAddr, source: std::io::Error },
    /// The spool directory is unusable.
    #[error("spool: {0}")]
    Spool(#[from] delivery::SpoolError),
    /// The config names a Tethr secret that cannot be read.
    #[error("config: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The media thread could not start.
    #[error("media thread: {0}")]
    Media(std::io::Error),
    /// The TLS certificate, key or client CA could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    /// The spool or output directory could not be given the recordings' mode and group.
    #[error("{0}")]
    AtRest(#[from] at_rest::AtRestError),
}

/// Runs the gateway until `shutdown` resolves, then drains: new INVITEs get 503, active calls
/// have `service.shutdown_grace` to end, then are ended with BYE and finalized.
///
/// `config_path` is the file the config came from: on SIGHUP it is read again and the Tethr
/// credentials in it (a rotated secret, or its file) replace the old ones without dropping
/// calls or uploads. Other keys need a restart.
pub async fn run(config: Config, config_path: Option<PathBuf>, shutdown: impl Future<Output = ()>) -> Result<(), RuntimeError> {
    let config = Arc::new(config);
    media::raise_fd_limit();
    // Before anything is written: recordings are readable by the service (and output.group) only.
    at_rest::prepare(&config)?;
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(4096);
    let mut udp = Vec::new();
    let mut tasks = JoinSet::new();
    let limits = &config.limits;
    let streams = transport::StreamGuard::new(
        limits.max_connections_per_source,
        transport::StreamLimits { idle_timeout: limits.tcp_idle_timeout, message_timeout: limits.tcp_message_timeout },
    );
    let tls = match config.sip.listen.iter().any(|l| l.transport == ListenTransport::Tls) {
        true => Some(Arc::new(tls::TlsContext::new(&config.sip)?)),
        false => None,
    };
    // Stream connection ids: above the UDP listener indexes, one block of 2^32 per listener.
    let mut stream_listeners = 0u64;
    for l in &config.sip.listen {
        match l.transport {
            ListenTransport::Udp => {
                let sock = transport::bind_udp(l.addr)
                    .map_err(|source| RuntimeError::Bind { transport: "udp", addr: l.addr, source })?;
                let sock = Arc::new(sock);
                let addr = sock.local_addr().unwrap_or(l.addr);
                info!(transport = "udp", %addr, "SIP listening");
                tasks.spawn(transport::udp_reader(udp.len() as u64, sock.clone(), in_tx.clone()));
                udp.push(sock);
            }
            ListenTransport::Tcp | ListenTransport::Tls => {
                let (name, tls) = match l.transport {
                    ListenTransport::Tls => ("tls", tls.clone()),
                    _ => ("tcp", None),
                };
                let listener = TcpListener::bind(l.addr)
                    .await
                    .map_err(|source| RuntimeError::Bind { transport: name, addr: l.addr, source })?;
                let addr = listener.local_addr().unwrap_or(l.addr);
                info!(transport = name, %addr, mutual_tls = tls.is_some() && config.sip.tls_client_ca.is_some(), "SIP listening");
                stream_listeners += 1;
                let first_conn = stream_listeners << 32;
                tasks.spawn(transport::stream_acceptor(listener, tls, first_conn, streams.clone(), in_tx.clone()));
            }
        }
    }
    drop(in_tx);
    let http = match config.service.http_listen {
        Some(addr) => {
            let listener = ops::bind(addr).await.map_err(|source| RuntimeError::Bind { transport: "http", addr, source })?;
            info!(transport = "http", addr = %listener.local_addr().unwrap_or(addr), "HTTP listening: /metrics, /health, /ready");
            Some(listener)
        }
        None => None,
    };

    let spool = Spool::open(&config.spool.dir)?;
    // Recordings a stopped gateway left in active/ go to pending/ before the worker scans it.
    let finishing = Arc::new(delivery::Finishing::from_config(&config));
    let (recovering, recover_with) = (spool.clone(), finishing.clone());
    let _ = tokio::task::spawn_blocking(move || delivery::recover(&recovering, &recover_with)).await;
    let sink = match &config.tethr {
        Some(t) => {
            info!(url = %t.url, "delivering recordings to Tethr");
            Sink::Tethr(TethrSettings::from_config(t)?)
        }
        None => {
            info!(dir = %config.output.dir.display(), "no [tethr] configured: writing recordings to the local directory");
            if !config.output.retention.is_zero() {
                tasks.spawn(at_rest::retention_task(config.output.dir.clone(), config.output.retention));
            }
            Sink::Local { dir: config.output.dir.clone() }
        }
    };
    let (stop_delivery_tx, stop_delivery_rx) = oneshot::channel::<()>();
    let (delivery, delivery_task) = delivery::start(Spool::open(&config.spool.dir)?, sink, async move {
        let _ = stop_delivery_rx.await;
    });

    // Registered here, before "taking calls" is logged, so a SIGHUP sent as soon as the gateway
    // says it is up cannot meet the default action (terminate).
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => {
            tasks.spawn(reload_on_sighup(hup, config_path, delivery.clone(), tls.clone()));
        }
        Err(e) => warn!(error = %e, "cannot handle SIGHUP; credentials and certificates reload only on restart"),
    }
    tasks.spawn(watch_disk(spool.clone(), config.spool.min_free, delivery.clone()));
    let readiness = Arc::new(ops::Readiness::default());
    if let Some(listener) = http {
        match ops::recorder() {
            Some(handle) => {
                let (spool, min_free, delivery) = (spool.clone(), config.spool.min_free, delivery.clone());
                tasks.spawn(ops::serve(listener, ops::Ops { handle, readiness: readiness.clone(), spool, min_free, delivery }));
            }
            None => warn!("another metrics recorder is installed; the HTTP listener is not served"),
        }
    }

    let (media_tx, media_rx) = mpsc::unbounded_channel();
    let (media, media_thread) = media::start(media_tx).map_err(RuntimeError::Media)?;

    let seed = clock::wall_now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut endpoint = Endpoint::new(EndpointConfig { user_agent: config.sip.user_agent.clone(), max_update_body: config.metadata.max_size }, seed);
    let allow = AllowList::new(&config.limits.allow_from);
    if !config.limits.options_from_anyone {
        endpoint.set_options_from(allow.clone());
    }
    let mut sig = Signalling {
        endpoint,
        allow,
        refusals: LogGate::default(),
        ports: PortAllocator::new(config.media.rtp_ports),
        config: config.clone(),
        epoch: Epoch::now(),
        udp,
        conns: HashMap::new(),
        sessions: HashMap::new(),
        keys: HashMap::new(),
        media,
        spool: Arc::new(spool),
        delivery,
        finishing,
        finalizing: JoinSet::new(),
        draining: false,
        finished: 0,
        next_key: 1,
        rng: fastrand::Rng::with_seed(seed ^ 0x5eed),
    };
    // /ready answers 503 from the instant the drain starts.
    let draining = readiness.clone();
    let shutdown = async move {
        shutdown.await;
        draining.set_draining();
    };
    readiness.set_serving();
    info!("taking calls");
    sig.run(in_rx, media_rx, shutdown).await;

    // Give the delivery worker a moment to hand over what this run finished (the local sink
    // is immediate); whatever is not delivered stays in pending/ for the next start.
    let mut stats = sig.delivery.stats();
    let finished = sig.finished;
    let handed_over = stats.wait_for(|s| s.delivered + s.failed >= finished);
    if tokio::time::timeout(DELIVERY_DRAIN, handed_over).await.is_err() {
        warn!("recordings not yet delivered stay in the spool's pending/ and go out at the next start");
    }
    sig.media.send(Command::Stop);
    let _ = tokio::task::spawn_blocking(move || media_thread.join()).await;
    let _ = stop_delivery_tx.send(());
    let _ = delivery_task.await;
    tasks.abort_all();
    info!("stopped");
    Ok(())
}

struct Live {
    key: u64,
    session: Session,
    /// The call's span (`call_id`, `session`): everything logged about the call is inside it.
    span: tracing::Span,
    /// For the audit record: when the INVITE came and when the ACK did.
    invite_at: Instant,
    ack_at: Option<Instant>,
}

struct Signalling {
    config: Arc<Config>,
    endpoint: Endpoint,
    /// `limits.allow_from`; `None` = anyone may open sessions.
    allow: Option<AllowList>,
    /// One refusal log line per source per 10 s.
    refusals: LogGate,
    epoch: Epoch,
    udp: Vec<Arc<UdpSocket>>,
    conns: HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>,
    sessions: HashMap<DialogId, Live>,
    keys: HashMap<u64, DialogId>,
    ports: PortAllocator,
    media: MediaHandle,
    spool: Arc<Spool>,
    delivery: DeliveryHandle,
    /// Layout, format and mapping rules for finishing recordings.
    finishing: Arc<delivery::Finishing>,
    finalizing: JoinSet<()>,
    draining: bool,
    /// Recordings finalized into pending/ by this run (counted when their finalize task starts).
    finished: u64,
    next_key: u64,
    rng: fastrand::Rng,
}

fn sleep_until(t: Option<Instant>) -> tokio::time::Sleep {
    let t = t.unwrap_or_else(|| clock::now() + Duration::from_secs(3600));
    tokio::time::sleep_until(tokio::time::Instant::from_std(t))
}

impl Signalling {
    async fn run(
        &mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut media_events: mpsc::UnboundedReceiver<MediaEvent>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut drain_deadline: Option<Instant> = None;
        // limits.max_call_duration is checked once a second; the recording is cut at the limit.
        let mut duration_check = tokio::time::interval(Duration::from_secs(1));
        duration_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let timer = sleep_until(self.endpoint.poll_timeout());
            let drain_timer = sleep_until(drain_deadline);
            tokio::select! {
                biased;
                _ = &mut shutdown, if !self.draining => {
                    self.draining = true;
                    self.endpoint.set_draining(true);
                    let grace = self.config.service.shutdown_grace;
                    info!(active_calls = self.sessions.len(), grace_s = grace.as_secs(), "shutting down: new calls get 503, active calls may finish");
                    drain_deadline = Some(clock::now() + grace);
                }
                _ = drain_timer, if drain_deadline.is_some() => {
                    drain_deadline = None;
                    let now = clock::now();
                    let ids: Vec<DialogId> = self.sessions.keys().cloned().collect();
                    if !ids.is_empty() {
                        warn!(calls = ids.len(), "grace period over: ending active calls");
                    }
                    for id in ids {
                        self.endpoint.send_bye(now, &id);
                        self.end_call(&id, EndReason::Shutdown, now);
                    }
                }
                Some(msg) = inbound.recv() => self.on_inbound(msg),
                Some(ev) = media_events.recv() => self.on_media(ev),
                Some(_) = self.finalizing.join_next(), if !self.finalizing.is_empty() => {}
                _ = timer => self.endpoint.handle_timeout(clock::now()),
                _ = duration_check.tick() => self.end_overlong_calls(),
            }
            self.pump().await;
            ops::set_active(self.sessions.len(), self.sessions.values().map(|l| l.session.plans.len()).sum());
            if self.draining && self.sessions.is_empty() && self.finalizing.is_empty() {
                break;
            }
        }
    }

    fn on_inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::Message { peer, bytes } => self.endpoint.handle_message(clock::now(), peer, &bytes),
            Inbound::Opened { conn, tx } => {
                self.conns.insert(conn, tx);
            }
            Inbound::Closed { conn } => {
                self.conns.remove(&conn);
            }
        }
    }

    fn on_media(&mut self, ev: MediaEvent) {
        match ev {
            MediaEvent::RtpTimeout { key, last } => {
                let Some(id) = self.keys.get(&key).cloned() else { return };
                let span = self.span_of(Some(&id));
                let _in_call = span.enter();
                let timeout = self.config.media.rtp_timeout;
                info!(call_id = %id.call_id, timeout_s = timeout.as_secs(), "no RTP for media.rtp_timeout: ending the call with BYE");
                self.endpoint.send_bye(clock::now(), &id);
                self.end_call(&id, EndReason::RtpTimeout, last);
            }
        }
    }

    /// Sends what the endpoint wants sent and acts on its events, until both are empty.
    async fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.endpoint.poll_transmit() {
                progressed = true;
                self.transmit(t).await;
            }
            while let Some(ev) = self.endpoint.poll_event() {
                progressed = true;
                self.on_event(ev);
            }
            if !progressed {
                return;
            }
        }
    }

    async fn transmit(&mut self, t: Transmit) {
        ops::count_sent(&t.bytes);
        match t.peer.transport {
            Transport::Udp => {
                let Some(sock) = t.peer.conn.and_then(|i| self.udp.get(i as usize)) else { return };
                if let Err(e) = sock.send_to(&t.bytes, t.dest).await {
                    debug!(dest = %t.dest, error = %e, "udp send failed");
                }
            }
            Transport::Tcp | Transport::Tls => match t.peer.conn.and_then(|c| self.conns.get(&c)) {
                Some(tx) => {
                    let _ = tx.send(t.bytes);
                }
                None => debug!(dest = %t.dest, "tcp connection gone; message not sent"),
            },
        }
    }

    fn on_event(&mut self, ev: Event) {
        let now = clock::now();
        let span = self.span_of(event_dialog(&ev));
        let _in_call = span.enter();
        match ev {
            Event::Invite { tx, request, peer } => self.on_invite(tx, &request, peer),
            Event::ReInvite { tx, dialog, request } => self.on_reinvite(&tx, &dialog, &request),
            Event::Ack { dialog } => {
                if let Some(live) = self.sessions.get_mut(&dialog) {
                    live.session.phase = Phase::Confirmed;
                    live.ack_at.get_or_insert(now);
                    debug!(call_id = %dialog.call_id, "ACK: session confirmed");
                }
            }
            Event::Bye { dialog, request } => {
                info!(call_id = %dialog.call_id, "BYE from the SRC");
                // RFC 7866 §9.1 lets the final metadata (participants leaving) ride on the BYE.
                let md = self.request_metadata(&request);
                self.metadata_update(&dialog, "BYE", &request, md, now);
                self.end_call(&dialog, EndReason::Bye, now);
            }
            Event::InDialog { dialog, request } => {
                let via = if request.method() == Some("INFO") { "INFO" } else { "UPDATE" };
                let md = self.request_metadata(&request);
                self.metadata_update(&dialog, via, &request, md, now);
            }
            Event::AckTimeout { dialog } => {
                warn!(call_id = %dialog.call_id, "no ACK for our 200 OK within 64*T1: ending the call");
                self.endpoint.send_bye(now, &dialog);
                self.end_call(&dialog, EndReason::NoAck, now);
            }
            Event::SessionExpired { dialog } => {
                warn!(call_id = %dialog.call_id, "session timer expired without a refresh (RFC 4028): ending the call");
                self.endpoint.send_bye(now, &dialog);
                self.end_call(&dialog, EndReason::SessionExpired, now);
            }
            Event::Cancelled { .. } => info!("INVITE cancelled before it was answered; nothing recorded"),
            Event::ByeDone { dialog, code } => debug!(call_id = %dialog.call_id, ?code, "our BYE completed"),
            Event::Rejected { peer, code, reason } => match code {
                // A flood of bad requests from one source makes one line per 10 s.
                Some(code) => {
                    if let Some(held) = self.refusals.admit(peer.remote.ip(), now) {
                        info!(remote = %peer.remote, code, %reason, also_refused = held, "request refused");
                    }
                }
                None => debug!(remote = %peer.remote, %reason, "message dropped"),
            },
        }
    }

    /// The span of the call on `dialog`, or none.
    fn span_of(&self, dialog: Option<&DialogId>) -> tracing::Span {
        dialog.and_then(|d| self.sessions.get(d)).map_or_else(tracing::Span::none, |l| l.span.clone())
    }

    fn limits(&self) -> OfferLimits {
        OfferLimits { max_metadata_bytes: self.config.metadata.max_size }
    }

    fn refuse(&mut self, tx: &TxKey, code: u16, reason: &str, extra: Vec<(String, String)>) {
        self.endpoint.respond_invite(clock::now(), tx, code, reason, extra, None);
    }

    /// The address the answer's c= line carries.
    fn media_address(&self, peer: &Peer) -> IpAddr {
        if let Some(a) = self.config.media.advertised_address {
            return a;
        }
        if !peer.local.ip().is_unspecified() {
            return peer.local.ip();
        }
        transport::local_ip_toward(peer.remote).unwrap_or(peer.local.ip())
    }

    /// Ends, with BYE, the calls that reached `limits.max_call_duration`; each recording ends
    /// exactly at the limit.
    fn end_overlong_calls(&mut self) {
        let (now, max) = (clock::now(), self.config.limits.max_call_duration);
        let overlong: Vec<(DialogId, Instant)> = self
            .sessions
            .iter()
            .filter(|(_, l)| now.saturating_duration_since(l.session.t0) >= max)
            .map(|(id, l)| (id.clone(), l.session.t0 + max))
            .collect();
        for (id, end) in overlong {
            info!(call_id = %id.call_id, max_s = max.as_secs(), "call reached limits.max_call_duration: ending it with BYE");
            self.endpoint.send_bye(now, &id);
            self.end_call(&id, EndReason::MaxDuration, end);
        }
    }

    /// Logs an admission refusal, at most one line per source per 10 s.
    fn log_refusal(&mut self, remote: SocketAddr, code: u16, reason: &str) {
        if let Some(held) = self.refusals.admit(remote.ip(), clock::now()) {
            warn!(%remote, code, reason, also_refused = held, "INVITE refused");
        }
    }

    fn on_invite(&mut self, tx: TxKey, request: &Message, peer: Peer) {
        let call_id = request.call_id().to_string();
        let invite_at = clock::now();
        let span = info_span!("call", call_id = %call_id, session = tracing::field::Empty);
        let _g = span.enter();
        if self.allow.as_ref().is_some_and(|a| !a.contains(peer.remote.ip())) {
            self.log_refusal(peer.remote, 403, "source not in limits.allow_from");
            ops::count_refusal("not_allowed", 403);
            return self.refuse(&tx, 403, "Forbidden", Vec::new());
        }
        if self.sessions.len() >= self.config.limits.max_calls {
            self.log_refusal(peer.remote, 503, "limits.max_calls reached");
            ops::count_refusal("max_calls", 503);
            return self.refuse(&tx, 503, "Service Unavailable", vec![("Retry-After".into(), "10".into())]);
        }
        if self.draining {
            info!("shutting down: INVITE refused with 503");
            ops::count_refusal("draining", 503);
            return self.refuse(&tx, 503, "Service Unavailable", vec![("Retry-After".into(), "30".into())]);
        }
        if !self.spool.has_room(self.config.spool.min_free) {
            ops::count_refusal("disk_full", 503);
            return self.refuse(&tx, 503, "Service Unavailable", vec![("Retry-After".into(), "60".into())]);
        }
        let offer = match siprec::parse_offer(request.header("Content-Type"), &request.body, &self.limits()) {
            Ok(o) => o,
            Err(e) => {
                let r = session::refusal_for(&e);
                warn!(code = r.code, detail = %r.detail, "SIPREC offer refused");
                ops::count_refusal("offer", r.code);
                return self.refuse(&tx, r.code, r.reason, Vec::new());
            }
        };
        if let MetadataOutcome::Invalid { error, .. } = &offer.metadata {
            warn!(%error, "recording metadata unreadable; recording the call anyway");
        }
        let plans = match session::plan_streams_with(&offer.sdp, self.config.media.max_streams, self.config.media.srtp) {
            Ok(p) => p,
            Err(r) => {
                warn!(code = r.code, detail = %r.detail, "SIPREC offer refused");
                ops::count_refusal("media", r.code);
                return self.refuse(&tx, r.code, r.reason, Vec::new());
            }
        };
        let address = self.media_address(&peer);
        let mut sockets = Vec::with_capacity(plans.len());
        for _ in &plans {
            match self.bind_pair(address.is_ipv6()) {
                Some(s) => sockets.push(s),
                None => {
                    for (p, _, _) in &sockets {
                        self.ports.release(*p);
                    }
                    error!(
                        in_use = self.ports.in_use(),
                        capacity = self.ports.capacity(),
                        "no free RTP port pair in media.rtp_ports: INVITE refused with 503"
                    );
                    ops::count_refusal("no_rtp_ports", 503);
                    return self.refuse(&tx, 503, "Service Unavailable", vec![("Retry-After".into(), "5".into())]);
                }
            }
        }
        let ports: Vec<u16> = sockets.iter().map(|s| s.0).collect();
        let name = self.unique_name(&call_id);
        span.record("session", name.as_str());
        let sip_headers = session::carried_headers(request, &self.config.metadata.carry_headers);
        let mut record = session::CallRecord {
            session_id: call_id.clone(),
            // Set once the 200 OK is sent.
            start_unix_ms: 0,
            offer_content_type: request.header("Content-Type").map(str::to_string),
            // SDES keys stay out of the spool: recovery does not need them.
            offer_body: crate::media::srtp::redact_inline_keys(&String::from_utf8_lossy(&request.body)).into_owned(),
            updates: Vec::new(),
            sip_headers: sip_headers.clone(),
            request_uri: request.request_uri().map(str::to_string),
            invite_headers: request.headers.clone(),
        };
        let metadata = vec![mapping::MetadataChange { at_ms: 0, via: "INVITE", outcome: offer.metadata }];
        let skipped = self.settings_say_skip(&metadata, &record, &plans);
        let path = self.spool.active_dir(&name).join(delivery::CAPTURE_FILE);
        let file = match &skipped {
            // Answered like any call, but no audio is stored.
            Some(_) => Ok(None),
            None => std::fs::create_dir_all(self.spool.active_dir(&name))
                .and_then(|_| std::fs::File::create(&path))
                .map(Some),
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                for p in &ports {
                    self.ports.release(*p);
                }
                error!(path = %path.display(), error = %e, "cannot create the recording file: INVITE refused with 500");
                ops::count_refusal("spool_error", 500);
                return self.refuse(&tx, 500, "Server Internal Error", vec![("Retry-After".into(), "5".into())]);
            }
        };
        let answer_id = self.rng.u64(1..u64::MAX / 2);
        let answers = session::media_answers(&offer.sdp, &plans, &ports);
        let sdp_answer = sdp::build_answer(&offer.sdp, &answers, address, answer_id, 1);
        let contact = contact_header(&peer, address);
        let t0 = clock::now();
        let Some(dialog) = self.endpoint.respond_invite(
            t0,
            &tx,
            200,
            "OK",
            vec![("Contact".into(), contact)],
            Some(("application/sdp".into(), sdp_answer.clone().into_bytes())),
        ) else {
            // The INVITE was answered meanwhile (CANCEL): undo.
            for p in &ports {
                self.ports.release(*p);
            }
            let _ = std::fs::remove_dir_all(self.spool.active_dir(&name));
            return;
        };
        ops::count_call_started();
        let key = self.next_key;
        self.next_key += 1;
        let streams = plans
            .iter()
            .zip(sockets)
            .map(|(plan, (_, rtp, rtcp))| StreamSetup::for_plan(plan, rtp, rtcp, self.config.media.relatch_after))
            .collect();
        // `[recording] sample_rate`, or the highest rate among the call's streams (a stream at a
        // lower rate is resampled; one that a re-INVITE moves to a higher rate is downsampled).
        // Spare channels for m-lines a re-INVITE may add (a WAV cannot gain one mid-call).
        let channels = plans.len() + self.config.media.spare_streams;
        let rate = match self.config.recording.sample_rate {
            0 => plans.iter().map(|p| p.codec.codec.audio_rate()).max().unwrap_or(8000),
            r => r,
        };
        self.media.send(Command::Add(Box::new(CallSetup {
            key,
            span: span.clone(),
            t0,
            rate,
            dtmf_in_metadata: self.config.media.dtmf_in_metadata,
            window: self.config.media.reorder_window,
            rtp_timeout: self.config.media.rtp_timeout,
            file,
            path,
            channels,
            streams,
        })));
        let labels: Vec<&str> = plans.iter().map(|p| p.label.as_deref().unwrap_or("-")).collect();
        record.start_unix_ms = self.epoch.wall_of(t0).duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        match &skipped {
            None => {
                let codecs: Vec<&str> = plans.iter().map(|p| p.codec_name()).collect();
                let srtp = plans.iter().filter(|p| p.srtp.is_some()).count();
                info!(session = %name, streams = plans.len(), labels = ?labels, codecs = ?codecs, srtp, rate, ports = ?ports, remote = %peer.remote, "recording started");
                self.save_record(&name, &record);
                self.journal(&name, delivery::JournalEvent::Recorded, format!("call_id={call_id} streams={}", plans.len()));
            }
            Some(reason) => {
                // The reason names the agent (personal data): debug only; the journal has it too.
                debug!(%reason, "recording settings decision");
                info!(session = %name, "Tethr's recording settings exclude this call: answered, nothing stored");
                self.journal(&name, delivery::JournalEvent::Skipped, format!("call_id={call_id} {reason}"));
            }
        }
        let session = Session {
            session_id: call_id,
            name,
            t0,
            plans,
            ports,
            answer_version: 1,
            answer_id,
            last_answer: sdp_answer,
            metadata,
            sip_headers,
            notes: Vec::new(),
            phase: Phase::Answered,
            record,
            skipped,
            capacity: channels,
        };
        self.keys.insert(key, dialog.clone());
        self.sessions.insert(dialog, Live { key, session, span: span.clone(), invite_at, ack_at: None });
    }

    /// Writes the call's `call.json` (off the signalling task: it fsyncs).
    fn save_record(&self, name: &str, record: &session::CallRecord) {
        let Ok(bytes) = serde_json::to_vec_pretty(record) else { return };
        let (spool, name) = (self.spool.clone(), name.to_string());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = spool.write_active(&name, delivery::CALL_FILE, &bytes) {
                warn!(error = %e, "cannot write call.json; a crash during this call would lose its info");
            }
        });
    }

    /// Takes the recording metadata an in-dialog request carries (a multipart body with a
    /// metadata part, or a bare metadata document), if any: kept in `call.json` with when and how
    /// it came, and applied to the call's current metadata.
    fn metadata_update(&mut self, dialog: &DialogId, via: &'static str, request: &Message, md: MetadataOutcome, now: Instant) {
        let Some(live) = self.sessions.get_mut(dialog) else { return };
        let s = &mut live.session;
        if matches!(md, MetadataOutcome::Absent) {
            return;
        }
        debug!(via, "recording metadata update");
        let at_ms = now.saturating_duration_since(s.t0).as_millis() as u64;
        s.record.updates.push(session::RecordedUpdate {
            via: via.to_string(),
            at_ms,
            content_type: request.header("Content-Type").map(str::to_string),
            body: crate::media::srtp::redact_inline_keys(&String::from_utf8_lossy(&request.body)).into_owned(),
        });
        s.take_metadata(at_ms, via, md);
        let (name, record) = (s.name.clone(), s.record.clone());
        self.save_record(&name, &record);
    }

    /// The recording metadata an in-dialog request carries (`Absent` if none).
    fn request_metadata(&self, request: &Message) -> MetadataOutcome {
        siprec::metadata_update(request.header("Content-Type"), &request.body, &self.limits())
    }

    /// With `tethr.honour_recording_settings`, whether Tethr's recording settings exclude the
    /// call whose agent the metadata names (`Some(reason)`). An unknown agent is recorded.
    fn settings_say_skip(&self, changes: &[mapping::MetadataChange], record: &session::CallRecord, plans: &[session::StreamPlan]) -> Option<String> {
        if !self.config.tethr.as_ref().is_some_and(|t| t.honour_recording_settings) {
            return None;
        }
        let streams: Vec<_> = plans.iter().map(|p| p.summary(Default::default())).collect();
        let at = std::time::SystemTime::UNIX_EPOCH;
        let ctx = session::SummaryContext {
            t0: clock::now(),
            start: at,
            end: at,
            layout: self.finishing.layout,
            rules: &self.finishing.rules,
            audio_format: "wav",
            end_reason: "",
            notes: &[],
        };
        let candidates = mapping::agent_identifiers(&record.summary(changes, &streams, ctx));
        if candidates.is_empty() {
            return None;
        }
        match self.delivery.recording_settings().decide(&candidates) {
            SettingsDecision::Skip { reason } => Some(reason),
            SettingsDecision::Record | SettingsDecision::NotInUse => None,
        }
    }

    /// Appends a line to the spool journal (off the signalling task).
    fn journal(&self, name: &str, event: delivery::JournalEvent, detail: String) {
        let (spool, name) = (self.spool.clone(), name.to_string());
        tokio::task::spawn_blocking(move || spool.journal(&name, event, &detail));
    }

    /// Binds an RTP socket on an even port and RTCP on the next one.
    fn bind_pair(&mut self, v6: bool) -> Option<(u16, std::net::UdpSocket, std::net::UdpSocket)> {
        // Same family as the address the answer advertises, unless configured.
        let ip = self.config.media.bind_address.unwrap_or(if v6 {
            IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED)
        });
        let candidates: Vec<u16> = self.ports.candidates().take(64).collect();
        for port in candidates {
            let Ok(rtp) = std::net::UdpSocket::bind(SocketAddr::new(ip, port)) else { continue };
            let Ok(rtcp) = std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1)) else { continue };
            if rtp.set_nonblocking(true).is_err() || rtcp.set_nonblocking(true).is_err() {
                continue;
            }
            media::size_rtp_buffer(&rtp);
            self.ports.take(port);
            return Some((port, rtp, rtcp));
        }
        None
    }

    /// The call's file name, made unique if a recording of that name is still in the spool.
    fn unique_name(&self, call_id: &str) -> String {
        let base = session::file_name(call_id);
        let taken = |n: &str| {
            self.spool.active_dir(n).exists()
                || self.spool.pending_dir(n).exists()
                || self.sessions.values().any(|l| l.session.name == n)
        };
        if !taken(&base) {
            return base;
        }
        (2..).map(|i| format!("{base}-{i}")).find(|n| !taken(n)).unwrap_or(base)
    }

    fn on_reinvite(&mut self, tx: &TxKey, dialog: &DialogId, request: &Message) {
        let limits = self.limits();
        if !self.sessions.contains_key(dialog) {
            return self.refuse(tx, 481, "Call/Transaction Does Not Exist", Vec::new());
        }
        let bare_metadata = request
            .header("Content-Type")
            .map(siprec::multipart::mime_type)
            .is_some_and(|t| t.starts_with("application/rs-metadata"));
        if request.body.iter().all(u8::is_ascii_whitespace) || bare_metadata {
            // RFC 3261 §14.2: a re-INVITE without an offer (a session refresh, or metadata only)
            // gets our current SDP as the offer in the 200; the media does not change.
            if bare_metadata {
                let md = self.request_metadata(request);
                self.metadata_update(dialog, "re-INVITE", request, md, clock::now());
            }
            let Some(s) = self.sessions.get(dialog).map(|l| &l.session) else { return };
            let body = s.last_answer.clone().into_bytes();
            self.endpoint.respond_invite(clock::now(), tx, 200, "OK", Vec::new(), Some(("application/sdp".into(), body)));
            return;
        }
        let mut offer = match siprec::parse_offer(request.header("Content-Type"), &request.body, &limits) {
            Ok(o) => o,
            Err(e) => {
                let r = session::refusal_for(&e);
                warn!(call_id = %dialog.call_id, code = r.code, detail = %r.detail, "re-INVITE refused; the call goes on");
                return self.refuse(tx, r.code, r.reason, Vec::new());
            }
        };
        let md = std::mem::replace(&mut offer.metadata, MetadataOutcome::Absent);
        self.metadata_update(dialog, "re-INVITE", request, md, clock::now());
        let policy = self.config.media.srtp;
        let relatch_after = self.config.media.relatch_after;
        let Some(live) = self.sessions.get_mut(dialog) else { return };
        let key = live.key;
        let s = &mut live.session;
        // Same ports and channels for the m-lines we record; hold, resume, codec, key and address
        // changes go to the media thread; a new m-line takes a spare channel, if any is left
        // (session::replan).
        let mut r = session::replan(&mut s.plans, &s.ports, &offer.sdp, policy, s.capacity);
        let address = self
            .config
            .media
            .advertised_address
            .or_else(|| answer_address(&s.last_answer))
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if !r.changes.is_empty() {
            let held: Vec<bool> = r.changes.iter().map(|c| c.held).collect();
            info!(held = ?held, "re-INVITE: streams updated");
            self.media.send(Command::Update { key, changes: std::mem::take(&mut r.changes) });
        }
        let added: Vec<session::StreamPlan> = r.added.iter().filter_map(|&k| s.plans.get(k).cloned()).collect();
        let mut bound = Vec::with_capacity(added.len());
        for _ in &added {
            match self.bind_pair(address.is_ipv6()) {
                Some(pair) => bound.push(pair),
                None => break,
            }
        }
        let Some(live) = self.sessions.get_mut(dialog) else { return };
        let s = &mut live.session;
        for (plan, (port, rtp, rtcp)) in added.iter().zip(bound) {
            s.ports.push(port);
            if let Some(a) = r.answers.get_mut(plan.mline) {
                a.port = port;
            }
            info!(channel = plan.channel, codec = plan.codec_name(), port, "re-INVITE added a stream: recorded on a spare channel");
            let setup = StreamSetup::for_plan(plan, rtp, rtcp, relatch_after);
            self.media.send(Command::AddStream { key, stream: Box::new(setup) });
        }
        // No port for the rest: refused, and forgotten.
        if s.plans.len() > s.ports.len() {
            warn!("no free RTP port pair for a stream a re-INVITE added: refused with port 0");
            for p in s.plans.drain(s.ports.len()..) {
                if let Some(a) = r.answers.get_mut(p.mline) {
                    *a = sdp::MediaAnswer { port: 0, codec: None, crypto: None };
                }
            }
        }
        let answers = r.answers;
        let mut text = sdp::build_answer(&offer.sdp, &answers, address, s.answer_id, s.answer_version);
        if text != s.last_answer {
            s.answer_version += 1;
            text = sdp::build_answer(&offer.sdp, &answers, address, s.answer_id, s.answer_version);
            s.last_answer = text.clone();
        }
        self.endpoint.respond_invite(clock::now(), tx, 200, "OK", Vec::new(), Some(("application/sdp".into(), text.into_bytes())));
    }

    /// Ends a recording at `end`: the media thread finishes the WAV, then a task builds `info`,
    /// moves the call to `pending/` and queues it for delivery.
    fn end_call(&mut self, id: &DialogId, reason: EndReason, end: Instant) {
        let Some(mut live) = self.sessions.remove(id) else { return };
        self.keys.remove(&live.key);
        live.session.end(reason);
        for p in &live.session.ports {
            self.ports.release(*p);
        }
        // Metadata updates may have named the agent since the INVITE: decide again.
        let excluded_late = live.session.skipped.is_none();
        if excluded_late {
            let s = &live.session;
            live.session.skipped = self.settings_say_skip(&s.metadata, &s.record, &s.plans);
        }
        ops::count_call_ended(reason.as_str(), live.session.skipped.is_none());
        let (done_tx, done_rx) = oneshot::channel();
        self.media.send(Command::End { key: live.key, end, done: done_tx });
        if let Some(reason) = live.session.skipped.clone() {
            if excluded_late {
                // Recorded until now: discard what was written once the media thread let go.
                debug!(%reason, "recording settings decision");
                info!(session = %live.session.name, "Tethr's recording settings exclude this call: its recording is discarded");
                self.journal(&live.session.name, delivery::JournalEvent::Skipped, reason);
                let dir = self.spool.active_dir(&live.session.name);
                self.finalizing.spawn(async move {
                    let _ = done_rx.await;
                    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
                });
            }
            return;
        }
        self.finished += 1;
        let job = finalize::Job {
            session: live.session,
            reason,
            end,
            times: finalize::AuditTimes { invite: live.invite_at, ack: live.ack_at, end },
            epoch: self.epoch,
            spool: self.spool.clone(),
            delivery: self.delivery.clone(),
            finishing: self.finishing.clone(),
        };
        self.finalizing.spawn(finalize::run(job, done_rx).instrument(live.span));
    }
}

/// The dialog an endpoint event is about, if any.
fn event_dialog(ev: &Event) -> Option<&DialogId> {
    match ev {
        Event::ReInvite { dialog, .. }
        | Event::Ack { dialog }
        | Event::Bye { dialog, .. }
        | Event::InDialog { dialog, .. }
        | Event::AckTimeout { dialog }
        | Event::SessionExpired { dialog }
        | Event::ByeDone { dialog, .. } => Some(dialog),
        _ => None,
    }
}

/// On SIGHUP, reads the config file again, hands the Tethr credentials to the delivery worker
/// (a secret rotated in the file, in its secret file or in the environment) and reloads the TLS
/// certificate, key and client CA of the `tls:` listeners.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    config_path: Option<PathBuf>,
    delivery: DeliveryHandle,
    tls: Option<Arc<tls::TlsContext>>,
) {
    while hup.recv().await.is_some() {
        let Some(path) = &config_path else {
            info!("SIGHUP: no config file to read again (started without --config)");
            continue;
        };
        let config = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                error!(config = %path.display(), error = %e, "SIGHUP: config not reloaded, the old credentials and certificate stay");
                continue;
            }
        };
        // The TLS certificate and key (a renewal) apply to connections accepted from now on.
        if let Some(tls) = &tls {
            match tls.reload(&config.sip) {
                Ok(()) => info!("SIGHUP: TLS certificate and key reloaded"),
                Err(e) => error!(error = %e, "SIGHUP: TLS files not reloaded, the old certificate stays"),
            }
        }
        match config.tethr.as_ref().map(TethrSettings::from_config).transpose() {
            Ok(Some(settings)) => {
                info!(config = %path.display(), "SIGHUP: Tethr credentials reloaded");
                delivery.reload(settings);
            }
            Ok(None) => info!("SIGHUP: no [tethr] table; nothing to reload"),
            Err(e) => error!(config = %path.display(), error = %e, "SIGHUP: config not reloaded, the old credentials stay"),
        }
    }
}

/// How often the spool's free space is measured for the heartbeat's status.
const DISK_CHECK: Duration = Duration::from_secs(30);

/// Keeps the delivery worker's heartbeat status in step with the spool's free space: below
/// `spool.min_free` is Error (new calls are refused), below twice it a Warning.
async fn watch_disk(spool: Spool, min_free: u64, delivery: DeliveryHandle) {
    if min_free == 0 {
        return;
    }
    loop {
        let s = spool.clone();
        if let Ok(Ok(free)) = tokio::task::spawn_blocking(move || s.free_bytes()).await {
            delivery.set_disk_full(free < min_free);
            delivery.set_disk_warning(free < min_free.saturating_mul(2));
        }
        tokio::time::sleep(DISK_CHECK).await;
    }
}

/// `Contact` of our answers: where in-dialog requests reach us.
fn contact_header(peer: &Peer, address: IpAddr) -> String {
    let host = match address {
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    };
    // RFC 5630 §3.1.3: over TLS, a sips: URI so in-dialog requests come back over TLS.
    let (scheme, transport) = match peer.transport {
        Transport::Udp => ("sip", ""),
        Transport::Tcp => ("sip", ";transport=tcp"),
        Transport::Tls => ("sips", ";transport=tls"),
    };
    format!("<{scheme}:siprec-gateway@{host}:{}{transport}>", peer.local.port())
}

/// The c= address of an answer we gave before.
fn answer_address(answer: &str) -> Option<IpAddr> {
    answer.lines().find_map(|l| l.strip_prefix("c=IN IP4 ").or_else(|| l.strip_prefix("c=IN IP6 ")))?.trim().parse().ok()
}

