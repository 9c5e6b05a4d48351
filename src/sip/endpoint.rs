//! The sans-IO SIP user-agent server of the recording server.
//!
//! It owns the server transactions (RFC 3261 §17.2, with the RFC 6026 Accepted state), the
//! dialogs the SRS takes part in, the 2xx retransmission of §13.3.1.4 and the client transactions
//! of the BYE and refresh UPDATE the gateway sends itself. It answers what needs no application decision (100
//! Trying, OPTIONS, CANCEL, BYE, UPDATE/INFO; 400/505 for malformed requests, 501/405 for methods
//! we do not serve, 420, 416, 406, 422, 481, 483 and 500) and hands the rest to the
//! transaction user as [`Event`]s. It keeps the RFC 4028 session timer of each dialog (see
//! [`super::timer`]): it answers 422, puts Session-Expires in its 2xx, sends the refresh UPDATE
//! when it is the refresher and reports a session whose refresh never came. It decides nothing
//! about recording.
//!
//! Drive it like str0m/quinn: call `handle_*` with `now`, then drain [`Endpoint::poll_transmit`]
//! and [`Endpoint::poll_event`], and wake at [`Endpoint::poll_timeout`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{self, Message, ParseError, StartLine, Via};
use super::timer::{self, Agreed, Refresher, Running};
use crate::limits::AllowList;

/// RFC 3261 §17.1.1.1 timer values.
pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
pub const T4: Duration = Duration::from_secs(5);

/// The option tags this SRS supports (RFC 7866 §6.1.1 `siprec`, RFC 4028 `timer`).
pub const SUPPORTED: &[&str] = &["siprec", "timer"];
/// Methods we take part in.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO";
/// What an OPTIONS probe is told we accept.
pub const ACCEPT: &str = "application/sdp, multipart/mixed, application/rs-metadata+xml, application/rs-metadata";

/// Methods that exist but that an SRS does not serve: 405 rather than 501 (§8.2.1).
const KNOWN_NOT_ALLOWED: &[&str] =
    &["REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "PUBLISH", "REFER", "PRACK"];

/// Transport of a connection or datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    /// SIP over TLS on a stream (RFC 3261 §26.2); framed like TCP.
    Tls,
}

impl Transport {
    pub fn reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
    fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// Where a message came from and how to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    /// Source address of the message.
    pub remote: SocketAddr,
    /// Our address it arrived on (as the runtime best knows it).
    pub local: SocketAddr,
    /// The stream connection it arrived on, for stream transports.
    pub conn: Option<u64>,
}

/// Bytes for the runtime to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub peer: Peer,
    /// Destination (for stream transports the runtime writes to `peer.conn` instead).
    pub dest: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Identifies a server transaction (§17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxKey {
    branch: String,
    sent_by: String,
    method: String,
}

/// Identifies a dialog (§12): Call-ID, our tag, their tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

/// What the transaction user must know or decide.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A dialog-creating INVITE; answer it with [`Endpoint::respond_invite`]. 100 Trying is sent.
    Invite { tx: TxKey, request: Message, peer: Peer },
    /// An INVITE inside a dialog; answer it with [`Endpoint::respond_invite`].
    ReInvite { tx: TxKey, dialog: DialogId, request: Message },
    /// The ACK for our 2xx arrived: the session is confirmed.
    Ack { dialog: DialogId },
    /// The INVITE was CANCELled before we answered it: 487 was sent, nothing may be recorded.
    Cancelled { tx: TxKey },
    /// The SRC ended the session. 200 was sent; the dialog is gone.
    Bye { dialog: DialogId, request: Message },
    /// UPDATE or INFO inside a dialog, answered 200 (what they carry is the TU's to read).
    InDialog { dialog: DialogId, request: Message },
    /// No ACK came for our 2xx within 64·T1 (§13.3.1.4): the TU should end the session with BYE.
    AckTimeout { dialog: DialogId },
    /// The session timer ran out (RFC 4028 §10): the SRC's refresh never came, or our own
    /// refresh was answered 408/481 or timed out. The TU should end the session with BYE.
    SessionExpired { dialog: DialogId },
    /// Our BYE was answered (`Some(code)`) or timed out (`None`).
    ByeDone { dialog: DialogId, code: Option<u16> },
    /// A message was refused or dropped; for logs and counters.
    Rejected { peer: Peer, code: Option<u16>, reason: String },
}

/// Settings of the endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// `User-Agent` / `Server` header value.
    pub user_agent: String,
    /// Largest body of an in-dialog UPDATE or INFO: a larger one is answered 413 (RFC 3261
    /// §21.4.14) and not handed to the TU. SIPREC sends metadata updates this way (RFC 7866
    /// §9.1), so the runtime sets it from `metadata.max_size`.
    pub max_update_body: usize,
}

#[derive(Debug)]
enum InviteState {
    /// Waiting for the TU; `last` is the latest provisional response, resent on retransmission.
    Proceeding { last: Vec<u8> },
    /// Non-2xx final sent: retransmitted over UDP until ACK (Timer G), give up at Timer H.
    Completed { response: Vec<u8>, next: Option<Instant>, interval: Duration, giveup: Instant },
    /// 2xx sent (RFC 6026): absorb INVITE retransmissions by resending the 2xx until Timer L.
    Accepted { response: Vec<u8>, until: Instant },
    /// ACK for a non-2xx received; absorb ACK retransmissions until Timer I.
    Confirmed { until: Instant },
}

#[derive(Debug)]
struct InviteTx {
    peer: Peer,
    request: Message,
    to_tag: String,
    dialog: Option<DialogId>,
    /// The session timer the request asked for, confirmed in our 2xx.
    timer: Option<Agreed>,
    state: InviteState,
}

#[derive(Debug)]
struct NonInviteTx {
    peer: Peer,
    response: Vec<u8>,
    until: Instant,
}

/// What a request we sent was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Bye,
    /// A session-refresh UPDATE (RFC 4028 §7.4, we are the refresher).
    Refresh,
}

#[derive(Debug)]
struct ClientTx {
    kind: ClientKind,
    dialog: DialogId,
    peer: Peer,
    dest: SocketAddr,
    request: Vec<u8>,
    next: Option<Instant>,
    interval: Duration,
    giveup: Instant,
}

#[derive(Debug)]
enum DialogState {
    /// 2xx sent, retransmitted until ACK (§13.3.1.4).
    WaitAck { response: Vec<u8>, next: Option<Instant>, interval: Duration, deadline: Instant },
    Confirmed,
}

#[derive(Debug)]
struct Dialog {
    peer: Peer,
    dest: SocketAddr,
    /// Their From (with their tag) and our To (with our tag), verbatim, for requests we send.
    remote_header: String,
    local_header: String,
    remote_target: String,
    route_set: Vec<String>,
    remote_cseq: u32,
    local_cseq: u32,
    state: DialogState,
    /// A re-INVITE is being answered: a second one gets 500 (§14.2).
    reinvite_pending: bool,
    /// Our Contact as given in the 2xx, for the requests we send (RFC 3311 §5.1: UPDATE).
    local_contact: Option<String>,
    /// RFC 4028 session timer, if one was agreed.
    timer: Option<Running>,
}

/// The sans-IO SIP UAS. See the module documentation.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    invites: HashMap<TxKey, InviteTx>,
    non_invites: HashMap<TxKey, NonInviteTx>,
    clients: HashMap<String, ClientTx>,
    dialogs: HashMap<DialogId, Dialog>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Source of tags and branches; seeded so tests are reproducible.
    rng: fastrand::Rng,
    /// Shutting down: OPTIONS probes get 503 so the SBC sends new calls elsewhere.
    draining: bool,
    /// Sources whose out-of-dialog OPTIONS get 200; `None` = anyone. Others get 403.
    options_from: Option<AllowList>,
}

/// Where a response to a request goes (§18.2.2, RFC 3581 rport).
fn response_dest(peer: &Peer, via: Option<&Via<'_>>) -> SocketAddr {
    if peer.transport.reliable() {
        return peer.remote;
    }
    match via {
        Some(v) if !v.has_rport() => SocketAddr::new(peer.remote.ip(), v.port.unwrap_or(5060)),
        _ => peer.remote,
    }
}

fn tx_key(msg: &Message) -> Option<TxKey> {
    let via = msg.top_via()?;
    let method = match msg.method()? {
        "ACK" => "INVITE",
        m => m,
    };
    let branch = match via.branch() {
        Some(b) if b.starts_with("z9hG4bK") && b.len() > "z9hG4bK".len() => b.to_string(),
        // RFC 2543 peers: no magic cookie, fall back to the request's identity (§17.2.3). A bare
        // cookie identifies nothing either (RFC 4475 §3.2.1 allows this fallback).
        _ => format!("{}|{}|{}", msg.call_id(), msg.tag("From").unwrap_or(""), msg.cseq()?.0),
    };
    Some(TxKey { branch, sent_by: via.sent_by(), method: method.to_string() })
}

/// True unless an Accept header lists media ranges and none covers application/sdp (§20.1:
/// no Accept means application/sdp; an empty one is read the same way, leniently).
fn accepts_sdp(msg: &Message) -> bool {
    let mut ranges = msg.headers_named("Accept").flat_map(message::split_list).peekable();
    if ranges.peek().is_none() {
        return true;
    }
    ranges.any(|r| {
        let mime = r.split(';').next().unwrap_or("").trim();
        ["application/sdp", "application/*", "*/*"].iter().any(|m| m.eq_ignore_ascii_case(mime))
    })
}

impl Endpoint {
    pub fn new(config: EndpointConfig, seed: u64) -> Self {
        Endpoint {
            config,
            invites: HashMap::new(),
            non_invites: HashMap::new(),
            clients: HashMap::new(),
            dialogs: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rng: fastrand::Rng::with_seed(seed),
            draining: false,
            options_from: None,
        }
    }

    /// While draining, out-of-dialog OPTIONS are answered 503 with `Retry-After`, so an SBC's
    /// OPTIONS ping marks this SRS down and new calls go to the next one.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Only sources in `allowed` get 200 to an out-of-dialog OPTIONS; others get 403.
    /// `None` answers anyone.
    pub fn set_options_from(&mut self, allowed: Option<AllowList>) {
        self.options_from = allowed;
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Number of dialogs alive (for limits and drain).
    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    /// The earliest deadline at which [`Endpoint::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let inv = self.invites.values().filter_map(|t| match &t.state {
            InviteState::Proceeding { .. } => None,
            InviteState::Completed { next, giveup, .. } => Some(next.map_or(*giveup, |n| n.min(*giveup))),
            InviteState::Accepted { until, .. } | InviteState::Confirmed { until } => Some(*until),
        });
        let non = self.non_invites.values().map(|t| t.until);
        let cli = self.clients.values().map(|c| c.next.map_or(c.giveup, |n| n.min(c.giveup)));
        let dlg = self.dialogs.values().filter_map(|d| match &d.state {
            DialogState::WaitAck { next, deadline, .. } => Some(next.map_or(*deadline, |n| n.min(*deadline))),
            DialogState::Confirmed => None,
        });
        let timers = self.dialogs.values().filter_map(|d| d.timer.and_then(|t| t.next_deadline()));
        inv.chain(non).chain(cli).chain(dlg).chain(timers).min()
    }

    fn random_token(&mut self) -> String {
        format!("{:016x}", self.rng.u64(..))
    }

    fn send(&mut self, peer: Peer, dest: SocketAddr, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit { peer, dest, bytes });
    }

    /// Sends a response to `request` that needs no transaction state (stateless 4xx/5xx).
    fn reply(&mut self, peer: Peer, request: &Message, mut response: Message) {
        response.push_header("Server", self.config.user_agent.clone());
        let dest = response_dest(&peer, request.top_via().as_ref());
        self.send(peer, dest, response.to_bytes());
    }

    /// Answers a non-INVITE request and keeps the answer to absorb retransmissions (Timer J).
    fn reply_non_invite(&mut self, now: Instant, key: TxKey, peer: Peer, request: &Message, mut response: Message) {
        response.push_header("Server", self.config.user_agent.clone());
        let bytes = response.to_bytes();
        let dest = response_dest(&peer, request.top_via().as_ref());
        self.send(peer, dest, bytes.clone());
        let until = if peer.transport.reliable() { now } else { now + 64 * T1 };
        self.non_invites.insert(key, NonInviteTx { peer, response: bytes, until });
    }

    fn reject(&mut self, peer: Peer, request: &Message, code: u16, reason: &str, extra: &[(&str, String)]) {
        let mut resp = request.response(code, reason, Some("srs-reject"));
        for (n, v) in extra {
            resp.push_header(n, v.clone());
        }
        self.reply(peer, request, resp);
        self.events.push_back(Event::Rejected { peer, code: Some(code), reason: reason.to_string() });
    }

    /// Feeds one received message (a datagram, or one framed message of a stream).
    pub fn handle_message(&mut self, now: Instant, peer: Peer, bytes: &[u8]) {
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => return self.handle_malformed(peer, bytes, e),
        };
        match msg.start {
            StartLine::Response { code, .. } => self.handle_response(now, code, &msg),
            StartLine::Request { .. } => self.handle_request(now, peer, msg),
        }
    }

    /// RFC 3261 §8.2 / §18.3: a request we can still address (it has a Via to answer along)
    /// gets 400, or 505 for another SIP version (§21.5.7), even without From/To/Call-ID
    /// (RFC 4475 §3.3.1); responses, ACKs and anything else are dropped.
    fn handle_malformed(&mut self, peer: Peer, bytes: &[u8], err: ParseError) {
        let (code, reason) = match err {
            ParseError::UnsupportedVersion => (505, "Version Not Supported".to_string()),
            e => (400, format!("Bad Request ({e})")),
        };
        if let Ok(m) = Message::parse_unchecked(bytes)
            && m.method().is_some_and(|x| x != "ACK")
            && m.top_via().is_some()
        {
            let resp = m.response(code, &reason, Some("srs-reject"));
            self.reply(peer, &m, resp);
            self.events.push_back(Event::Rejected { peer, code: Some(code), reason });
            return;
        }
        self.events.push_back(Event::Rejected { peer, code: None, reason: format!("dropped: {err}") });
    }

    fn handle_response(&mut self, now: Instant, code: u16, msg: &Message) {
        let Some(branch) = msg.top_via().and_then(|v| v.branch().map(str::to_string)) else { return };
        if code < 200 {
            if let Some(c) = self.clients.get_mut(&branch) {
                // §17.1.2.2: a provisional response stops retransmission at T2 pace; keep it simple
                // and stop retransmitting, the final response or Timer F ends the transaction.
                c.next = None;
            }
            return;
        }
        let Some(c) = self.clients.remove(&branch) else { return };
        match c.kind {
            ClientKind::Bye => self.events.push_back(Event::ByeDone { dialog: c.dialog, code: Some(code) }),
            ClientKind::Refresh => self.refresh_answered(now, c, code, msg),
        }
    }

    /// RFC 4028 §7.2: a 2xx to our refresh restarts the timer (with the interval it confirms);
    /// 408/481 mean the dialog is gone (RFC 5057 §5.1); any other refusal leaves the call up
    /// without a session timer, since we have no other way to refresh.
    fn refresh_answered(&mut self, now: Instant, c: ClientTx, code: u16, msg: &Message) {
        let Some(d) = self.dialogs.get_mut(&c.dialog) else { return };
        let Some(t) = d.timer.as_mut() else { return };
        if (200..300).contains(&code) {
            if let Some(seconds) = msg.header("Session-Expires").and_then(|v| v.split(';').next()?.trim().parse().ok()) {
                t.agreed.interval = seconds;
            }
            *t = Running::start(t.agreed, now);
        } else if code == 408 || code == 481 {
            d.timer = None;
            self.events.push_back(Event::SessionExpired { dialog: c.dialog });
        } else {
            d.timer = None;
            let reason = format!("our session refresh UPDATE was answered {code}: session timer off");
            self.events.push_back(Event::Rejected { peer: c.peer, code: Some(code), reason });
        }
    }

    fn handle_request(&mut self, now: Instant, peer: Peer, msg: Message) {
        let Some(key) = tx_key(&msg) else {
            return self.handle_malformed(peer, &msg.to_bytes(), ParseError::MissingHeader("Via"));
        };
        // Methods are case-sensitive (§7.1): `invite` is an unknown method.
        let method = msg.method().unwrap_or_default().to_string();

        if method == "ACK" {
            return self.handle_ack(now, key, &msg);
        }
        // A retransmission of a request whose transaction we have: resend the last answer.
        if let Some(tx) = self.invites.get(&key) {
            let resend = match &tx.state {
                InviteState::Proceeding { last } => Some(last.clone()),
                InviteState::Completed { response, .. } | InviteState::Accepted { response, .. } => {
                    Some(response.clone())
                }
                InviteState::Confirmed { .. } => None,
            };
            if let Some(bytes) = resend {
                let dest = response_dest(&tx.peer, msg.top_via().as_ref());
                let p = tx.peer;
                self.send(p, dest, bytes);
            }
            return;
        }
        if let Some(tx) = self.non_invites.get(&key) {
            let (p, bytes) = (tx.peer, tx.response.clone());
            let dest = response_dest(&p, msg.top_via().as_ref());
            self.send(p, dest, bytes);
            return;
        }
        // §8.2.1: an unknown method is 501 whatever else is wrong with the request; RFC 4475
        // §3.1.2.18 prefers it to 400 when the CSeq method does not match either.
        if !ALLOW.split(", ").any(|m| m == method) && !KNOWN_NOT_ALLOWED.contains(&method.as_str()) {
            return self.reject(peer, &msg, 501, "Not Implemented", &[("Allow", ALLOW.to_string())]);
        }
        if let Err(e) = msg.check_request() {
            return self.reject(peer, &msg, 400, &format!("Bad Request ({e})"), &[]);
        }
        if method == "CANCEL" {
            return self.handle_cancel(now, key, peer, &msg);
        }
        // RFC 3261 §8.2.2.3: option tags we do not support → 420 with Unsupported (RFC 4475
        // §3.3.5; Proxy-Require is for proxies and ignored).
        let unsupported: Vec<&str> =
            msg.option_tags("Require").filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t))).collect();
        if !unsupported.is_empty() {
            let list = unsupported.join(", ");
            return self.reject(peer, &msg, 420, "Bad Extension", &[("Unsupported", list)]);
        }
        // §8.2.2.1: we serve sip: and sips: only (RFC 4475 §3.3.2, §3.3.3).
        if msg.request_uri().is_some_and(|u| message::strip_sip_scheme(u).is_none()) {
            return self.reject(peer, &msg, 416, "Unsupported URI Scheme", &[]);
        }
        // An INVITE with no hops left is refused as a proxy would (§16.3): it is looping. OPTIONS
        // at zero is how a UAS is probed and is answered (RFC 4475 §3.3.11: an endpoint
        // processes it). An unreadable value counts as absent (§3.1.2.4).
        let hops = msg.header("Max-Forwards").and_then(|v| v.trim().parse::<u32>().ok());
        if hops == Some(0) && method != "OPTIONS" {
            return self.reject(peer, &msg, 483, "Too Many Hops", &[]);
        }
        if msg.tag("To").is_some() {
            return self.handle_in_dialog(now, key, peer, msg, &method);
        }
        match method.as_str() {
            "INVITE" => self.new_invite(key, peer, msg),
            "OPTIONS" if self.options_from.as_ref().is_some_and(|a| !a.contains(peer.remote.ip())) => {
                self.reject(peer, &msg, 403, "Forbidden (source not in limits.allow_from)", &[]);
            }
            "OPTIONS" if self.draining => {
                self.reject(peer, &msg, 503, "Service Unavailable (shutting down)", &[("Retry-After", "30".to_string())]);
            }
            "OPTIONS" => {
                let mut resp = msg.response(200, "OK", Some(&self.random_token()));
                resp.push_header("Allow", ALLOW);
                resp.push_header("Accept", ACCEPT);
                resp.push_header("Supported", SUPPORTED.join(", "));
                self.reply_non_invite(now, key, peer, &msg, resp);
            }
            "BYE" | "UPDATE" | "INFO" => {
                let resp = msg.response(481, "Call/Transaction Does Not Exist", Some("srs-reject"));
                self.reply_non_invite(now, key, peer, &msg, resp);
                self.events.push_back(Event::Rejected { peer, code: Some(481), reason: format!("{method} outside a dialog") });
            }
            _ => self.reject(peer, &msg, 405, "Method Not Allowed", &[("Allow", ALLOW.to_string())]),
        }
    }

    fn new_invite(&mut self, key: TxKey, peer: Peer, msg: Message) {
        // Our answer is always SDP: an INVITE that does not accept it gets 406 with a 399
        // warning (RFC 3261 §21.4.7, RFC 4475 §3.3.15).
        if !accepts_sdp(&msg) {
            let warning = format!("399 {} \"the answer would be application/sdp, which Accept excludes\"", peer.local);
            return self.reject(peer, &msg, 406, "Not Acceptable", &[("Warning", warning)]);
        }
        // RFC 4028 §9: a session interval below our minimum gets 422 with Min-SE.
        let Ok(timer) = timer::negotiate(&msg) else {
            return self.reject(peer, &msg, 422, "Session Interval Too Small", &[("Min-SE", timer::MIN_SE.to_string())]);
        };
        let to_tag = self.random_token();
        self.open_invite_tx(key.clone(), peer, &msg, to_tag, None, timer);
        self.events.push_back(Event::Invite { tx: key, request: msg, peer });
    }

    /// Answers an INVITE with 100 Trying at once (§17.2.1: the SRC stops retransmitting while
    /// we set up media) and opens its server transaction in Proceeding.
    fn open_invite_tx(
        &mut self,
        key: TxKey,
        peer: Peer,
        msg: &Message,
        to_tag: String,
        dialog: Option<DialogId>,
        timer: Option<Agreed>,
    ) {
        let mut trying = msg.response(100, "Trying", None);
        trying.push_header("Server", self.config.user_agent.clone());
        let bytes = trying.to_bytes();
        let dest = response_dest(&peer, msg.top_via().as_ref());
        self.send(peer, dest, bytes.clone());
        let state = InviteState::Proceeding { last: bytes };
        self.invites.insert(key, InviteTx { peer, request: msg.clone(), to_tag, dialog, timer, state });
    }

    fn handle_ack(&mut self, now: Instant, key: TxKey, msg: &Message) {
        // ACK for a non-2xx final response belongs to the INVITE transaction (§17.2.1).
        if let Some(tx) = self.invites.get_mut(&key)
            && let InviteState::Completed { .. } = tx.state {
                let until = if tx.peer.transport.reliable() { now } else { now + T4 };
                tx.state = InviteState::Confirmed { until };
                return;
            }
        // ACK for a 2xx is its own transaction inside the dialog (§13.2.2.4).
        let Some(id) = self.dialog_id_of(msg) else { return };
        if let Some(d) = self.dialogs.get_mut(&id)
            && let DialogState::WaitAck { .. } = d.state {
                d.state = DialogState::Confirmed;
                self.events.push_back(Event::Ack { dialog: id });
            }
    }

    fn dialog_id_of(&self, msg: &Message) -> Option<DialogId> {
        Some(DialogId {
            call_id: msg.call_id().to_string(),
            local_tag: msg.tag("To")?.to_string(),
            remote_tag: msg.tag("From").unwrap_or("").to_string(),
        })
    }

    fn handle_cancel(&mut self, now: Instant, key: TxKey, peer: Peer, msg: &Message) {
        let invite_key = TxKey { method: "INVITE".to_string(), ..key.clone() };
        let Some(tx) = self.invites.get_mut(&invite_key) else {
            let resp = msg.response(481, "Call/Transaction Does Not Exist", Some("srs-reject"));
            return self.reply_non_invite(now, key, peer, msg, resp);
        };
        let proceeding = matches!(tx.state, InviteState::Proceeding { .. });
        let to_tag = tx.to_tag.clone();
        let resp = msg.response(200, "OK", Some(&to_tag));
        self.reply_non_invite(now, key, peer, msg, resp);
        if proceeding {
            // §9.2: the INVITE is answered 487; a 200 racing the CANCEL wins (nothing to do).
            self.respond_invite(now, &invite_key, 487, "Request Terminated", Vec::new(), None);
            self.events.push_back(Event::Cancelled { tx: invite_key });
        }
    }

    fn handle_in_dialog(&mut self, now: Instant, key: TxKey, peer: Peer, msg: Message, method: &str) {
        let Some(id) = self.dialog_id_of(&msg) else { return };
        let Some(dialog) = self.dialogs.get_mut(&id) else {
            let resp = msg.response(481, "Call/Transaction Does Not Exist", None);
            self.reply_non_invite(now, key, peer, &msg, resp);
            self.events.push_back(Event::Rejected { peer, code: Some(481), reason: format!("{method} for an unknown dialog") });
            return;
        };
        let cseq = msg.cseq().map_or(0, |c| c.0);
        // §12.2.2: a lower CSeq than the last one is out of order → 500.
        if cseq <= dialog.remote_cseq {
            let resp = msg.response(500, "Server Internal Error (CSeq out of order)", None);
            return self.reply_non_invite(now, key, peer, &msg, resp);
        }
        dialog.remote_cseq = cseq;
        // RFC 4028 §9: a refresh (re-INVITE or UPDATE) negotiates the timer afresh.
        let refresh = matches!(method, "INVITE" | "UPDATE").then(|| timer::negotiate(&msg));
        if let Some(Err(timer::TooSmall)) = refresh {
            let mut resp = msg.response(422, "Session Interval Too Small", None);
            resp.push_header("Min-SE", timer::MIN_SE.to_string());
            return self.reply_non_invite(now, key, peer, &msg, resp);
        }
        let timer = refresh.and_then(Result::ok).flatten();
        match method {
            "INVITE" => {
                if dialog.reinvite_pending {
                    // §14.2: a second INVITE while one is being answered → 500 with a
                    // Retry-After between 0 and 10 s. (491 is for glare with an INVITE of our
                    // own, which the gateway never sends.)
                    let mut resp = msg.response(500, "Server Internal Error (re-INVITE in progress)", None);
                    resp.push_header("Retry-After", self.rng.u32(0..=10).to_string());
                    return self.reply(peer, &msg, resp);
                }
                dialog.reinvite_pending = true;
                self.open_invite_tx(key.clone(), peer, &msg, id.local_tag.clone(), Some(id.clone()), timer);
                self.events.push_back(Event::ReInvite { tx: key, dialog: id, request: msg });
            }
            "BYE" => {
                let resp = msg.response(200, "OK", None);
                self.reply_non_invite(now, key, peer, &msg, resp);
                self.dialogs.remove(&id);
                self.events.push_back(Event::Bye { dialog: id, request: msg });
            }
            "UPDATE" | "INFO" if msg.body.len() > self.config.max_update_body => {
                let resp = msg.response(413, "Request Entity Too Large", None);
                self.reply_non_invite(now, key, peer, &msg, resp);
                let reason = format!("{method} body of {} bytes over the limit of {}", msg.body.len(), self.config.max_update_body);
                self.events.push_back(Event::Rejected { peer, code: Some(413), reason });
            }
            "UPDATE" | "INFO" => {
                let mut resp = msg.response(200, "OK", None);
                if method == "UPDATE" {
                    // The 2xx to an UPDATE is a refresh: it restarts (or ends) the timer.
                    dialog.timer = timer.map(|t| Running::start(t, now));
                    resp.headers.extend(timer.map(|t| t.response_headers()).unwrap_or_default());
                }
                self.reply_non_invite(now, key, peer, &msg, resp);
                self.events.push_back(Event::InDialog { dialog: id, request: msg });
            }
            "OPTIONS" => {
                let mut resp = msg.response(200, "OK", None);
                resp.push_header("Allow", ALLOW);
                resp.push_header("Accept", ACCEPT);
                self.reply_non_invite(now, key, peer, &msg, resp);
            }
            m if KNOWN_NOT_ALLOWED.contains(&m) => {
                self.reject(peer, &msg, 405, "Method Not Allowed", &[("Allow", ALLOW.to_string())])
            }
            _ => self.reject(peer, &msg, 501, "Not Implemented", &[("Allow", ALLOW.to_string())]),
        }
    }

    /// Sends the final (or a provisional) response to an INVITE. A 2xx to a dialog-creating INVITE
    /// creates the dialog, whose id is returned. `headers` are added (Contact, …); `body` is
    /// `(content type, bytes)`. The endpoint adds what the protocol asks of it: Supported and the
    /// session timer (RFC 4028 §9) on a 2xx, Accept on a 415 (RFC 3261 §21.4.13).
    pub fn respond_invite(
        &mut self,
        now: Instant,
        tx: &TxKey,
        code: u16,
        reason: &str,
        headers: Vec<(String, String)>,
        body: Option<(String, Vec<u8>)>,
    ) -> Option<DialogId> {
        let ua = self.config.user_agent.clone();
        let t = self.invites.get_mut(tx)?;
        if !matches!(t.state, InviteState::Proceeding { .. }) {
            return None; // already answered (e.g. CANCELled): the first final response wins
        }
        let mut resp = t.request.response(code, reason, Some(&t.to_tag));
        if (101..300).contains(&code) {
            // RFC 3261 §12.1.1: a response that establishes a dialog carries the request's
            // Record-Route values, in order, so the SRC's ACK and BYE take the proxies' path.
            let rr: Vec<(String, String)> =
                t.request.headers.iter().filter(|(n, _)| message::header_is(n, "Record-Route")).cloned().collect();
            resp.headers.extend(rr);
        }
        resp.headers.extend(headers);
        let success = (200..300).contains(&code);
        if success {
            if resp.header("Supported").is_none() {
                resp.push_header("Supported", SUPPORTED.join(", "));
            }
            resp.headers.extend(t.timer.map(|a| a.response_headers()).unwrap_or_default());
        }
        if code == 415 && resp.header("Accept").is_none() {
            resp.push_header("Accept", ACCEPT);
        }
        resp.push_header("Server", ua);
        if let Some((ct, b)) = body {
            resp.push_header("Content-Type", ct);
            resp.body = b;
        }
        let bytes = resp.to_bytes();
        let peer = t.peer;
        let dest = response_dest(&peer, t.request.top_via().as_ref());
        let reliable = peer.transport.reliable();
        let mut created = None;
        if code < 200 {
            t.state = InviteState::Proceeding { last: bytes.clone() };
        } else if code < 300 {
            t.state = InviteState::Accepted { response: bytes.clone(), until: now + 64 * T1 };
            match t.dialog.clone() {
                Some(id) => {
                    if let Some(d) = self.dialogs.get_mut(&id) {
                        d.reinvite_pending = false;
                        // RFC 4028 §10: the 2xx to a refresh restarts (or ends) the timer.
                        d.timer = t.timer.map(|a| Running::start(a, now));
                        d.state = DialogState::WaitAck {
                            response: bytes.clone(),
                            next: (!reliable).then(|| now + T1),
                            interval: T1,
                            deadline: now + 64 * T1,
                        };
                    }
                }
                None => {
                    let req = &t.request;
                    let id = DialogId {
                        call_id: req.call_id().to_string(),
                        local_tag: t.to_tag.clone(),
                        remote_tag: req.tag("From").unwrap_or("").to_string(),
                    };
                    let local_header = resp.header("To").unwrap_or("").to_string();
                    let dialog = Dialog {
                        peer,
                        dest,
                        remote_header: req.header("From").unwrap_or("").to_string(),
                        local_header,
                        remote_target: req
                            .header("Contact")
                            .map(|c| message::name_addr_uri(c).to_string())
                            .unwrap_or_else(|| message::name_addr_uri(req.header("From").unwrap_or("")).to_string()),
                        // §12.1.1: the UAS route set is the Record-Route list in order.
                        route_set: req.headers_named("Record-Route").flat_map(message::split_list).map(String::from).collect(),
                        remote_cseq: req.cseq().map_or(0, |c| c.0),
                        local_cseq: self.rng.u32(1..10_000),
                        state: DialogState::WaitAck {
                            response: bytes.clone(),
                            next: (!reliable).then(|| now + T1),
                            interval: T1,
                            deadline: now + 64 * T1,
                        },
                        reinvite_pending: false,
                        local_contact: resp.header("Contact").map(str::to_string),
                        timer: t.timer.map(|a| Running::start(a, now)),
                    };
                    t.dialog = Some(id.clone());
                    self.dialogs.insert(id.clone(), dialog);
                    created = Some(id);
                }
            }
        } else {
            if let Some(d) = t.dialog.as_ref().and_then(|id| self.dialogs.get_mut(id)) {
                d.reinvite_pending = false;
            }
            t.state = InviteState::Completed {
                response: bytes.clone(),
                next: (!reliable).then(|| now + T1),
                interval: T1,
                giveup: now + 64 * T1,
            };
        }
        self.send(peer, dest, bytes);
        created
    }

    /// Ends a dialog from our side with BYE (rtp timeout, shutdown, no ACK, session expired).
    pub fn send_bye(&mut self, now: Instant, id: &DialogId) {
        let Some(mut d) = self.dialogs.remove(id) else { return };
        let req = self.dialog_request(&mut d, id, "BYE");
        self.send_request(now, ClientKind::Bye, id, &d, req);
    }

    /// RFC 4028 §7.4 as the refresher: an UPDATE without a body carrying the session interval
    /// (RFC 3311 §5.1: with our Contact, it being a target refresh request).
    fn send_refresh(&mut self, now: Instant, id: &DialogId) {
        let Some(mut d) = self.dialogs.remove(id) else { return };
        if let Some(agreed) = d.timer.map(|t| t.agreed) {
            let mut req = self.dialog_request(&mut d, id, "UPDATE");
            if let Some(contact) = &d.local_contact {
                req.push_header("Contact", contact.clone());
            }
            req.push_header("Session-Expires", agreed.refresh_header());
            req.push_header("Supported", SUPPORTED.join(", "));
            self.send_request(now, ClientKind::Refresh, id, &d, req);
        }
        self.dialogs.insert(id.clone(), d);
    }

    /// A request inside dialog `d` with the next local CSeq (§12.2.1.1).
    fn dialog_request(&mut self, d: &mut Dialog, id: &DialogId, method: &str) -> Message {
        d.local_cseq += 1;
        let mut req = Message {
            start: StartLine::Request { method: method.into(), uri: d.remote_target.clone() },
            headers: Vec::new(),
            body: Vec::new(),
        };
        let host = match d.peer.local {
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
            SocketAddr::V4(a) => a.to_string(),
        };
        let branch = format!("z9hG4bK{}", self.random_token());
        req.push_header("Via", format!("SIP/2.0/{} {host};branch={branch};rport", d.peer.transport.via_name()));
        req.push_header("Max-Forwards", "70");
        req.push_header("From", d.local_header.clone());
        req.push_header("To", d.remote_header.clone());
        req.push_header("Call-ID", id.call_id.clone());
        req.push_header("CSeq", format!("{} {method}", d.local_cseq));
        for r in &d.route_set {
            req.push_header("Route", r.clone());
        }
        req.push_header("User-Agent", self.config.user_agent.clone());
        req
    }

    /// Sends `req` and keeps its client transaction (Timer E retransmission on UDP, Timer F).
    fn send_request(&mut self, now: Instant, kind: ClientKind, id: &DialogId, d: &Dialog, req: Message) {
        let Some(branch) = req.top_via().and_then(|v| v.branch().map(str::to_string)) else { return };
        let bytes = req.to_bytes();
        let reliable = d.peer.transport.reliable();
        self.send(d.peer, d.dest, bytes.clone());
        self.clients.insert(
            branch,
            ClientTx {
                kind,
                dialog: id.clone(),
                peer: d.peer,
                dest: d.dest,
                request: bytes,
                next: (!reliable).then(|| now + T1),
                interval: T1,
                giveup: now + 64 * T1,
            },
        );
    }

    /// Runs every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut sends = Vec::new();
        self.invites.retain(|_, t| match &mut t.state {
            InviteState::Proceeding { .. } => true,
            InviteState::Completed { response, next, interval, giveup } => {
                if now >= *giveup {
                    return false; // Timer H: no ACK for our error response; nothing more to do
                }
                if let Some(n) = next.filter(|n| now >= *n) {
                    sends.push((t.peer, response_dest(&t.peer, t.request.top_via().as_ref()), response.clone()));
                    // RFC 3261 §17.2.1 Timer G: doubles up to T2.
                    *interval = (*interval * 2).min(T2);
                    *next = Some(n + *interval);
                }
                true
            }
            InviteState::Accepted { until, .. } | InviteState::Confirmed { until } => now < *until,
        });
        for (peer, dest, bytes) in sends.drain(..) {
            self.send(peer, dest, bytes);
        }
        self.non_invites.retain(|_, t| now < t.until);

        let mut timed_out = Vec::new();
        for (id, d) in self.dialogs.iter_mut() {
            if let DialogState::WaitAck { response, next, interval, deadline } = &mut d.state {
                if now >= *deadline {
                    timed_out.push(id.clone());
                    continue;
                }
                if let Some(n) = next.filter(|n| now >= *n) {
                    sends.push((d.peer, d.dest, response.clone()));
                    // §13.3.1.4: the 2xx interval starts at T1 and doubles up to T2.
                    *interval = (*interval * 2).min(T2);
                    *next = Some(n + *interval);
                }
            }
        }
        for (peer, dest, bytes) in sends.drain(..) {
            self.send(peer, dest, bytes);
        }
        for id in timed_out {
            // Keep the dialog so the TU can end it with BYE.
            if let Some(d) = self.dialogs.get_mut(&id) {
                d.state = DialogState::Confirmed;
            }
            self.events.push_back(Event::AckTimeout { dialog: id });
        }

        let mut expired = Vec::new();
        let mut refresh = Vec::new();
        for (id, d) in self.dialogs.iter_mut() {
            let Some(t) = d.timer.as_mut() else { continue };
            match t.agreed.refresher {
                // RFC 4028 §10: the SRC's refresh did not come; the session is over.
                Refresher::Uac if now >= t.give_up_at() => {
                    d.timer = None;
                    expired.push(id.clone());
                }
                Refresher::Uas if !t.refreshing && now >= t.refresh_at() => {
                    t.refreshing = true;
                    refresh.push(id.clone());
                }
                _ => {}
            }
        }
        for id in refresh {
            self.send_refresh(now, &id);
        }
        self.events.extend(expired.into_iter().map(|dialog| Event::SessionExpired { dialog }));

        let mut done = Vec::new();
        for (branch, c) in self.clients.iter_mut() {
            if now >= c.giveup {
                done.push(branch.clone());
                continue;
            }
            if let Some(n) = c.next.filter(|n| now >= *n) {
                // RFC 3261 §17.1.2.2 Timer E: doubles up to T2.
                self.transmits.push_back(Transmit { peer: c.peer, dest: c.dest, bytes: c.request.clone() });
                c.interval = (c.interval * 2).min(T2);
                c.next = Some(n + c.interval);
            }
        }
        for b in done {
            let Some(c) = self.clients.remove(&b) else { continue };
            match c.kind {
                ClientKind::Bye => self.events.push_back(Event::ByeDone { dialog: c.dialog, code: None }),
                // Timer F on our refresh: the SRC is gone (RFC 4028 §10).
                ClientKind::Refresh => {
                    if let Some(d) = self.dialogs.get_mut(&c.dialog) {
                        d.timer = None;
                        self.events.push_back(Event::SessionExpired { dialog: c.dialog });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(t: Transport) -> Peer {
        Peer {
            transport: t,
            remote: "192.0.2.1:5070".parse().unwrap(),
            local: "192.0.2.10:5060".parse().unwrap(),
            conn: None,
        }
    }

    fn invite(branch: &str) -> String {
        invite_with(branch, "")
    }

    /// The dialog-creating INVITE with `extra` header lines.
    fn invite_with(branch: &str, extra: &str) -> String {
        format!(
            "INVITE sip:srs@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch={branch}\r\n\
Max-Forwards: 70\r\nFrom: <sip:src@192.0.2.1>;tag=src1\r\nTo: <sip:srs@192.0.2.10>\r\n\
Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:src@192.0.2.1:5070>;+sip.src\r\nRequire: siprec\r\n{extra}\
Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"
        )
    }

    fn request(method: &str, branch: &str, to_tag: Option<&str>, cseq: u32) -> String {
        let to = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} sip:srs@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch={branch}\r\n\
From: <sip:src@192.0.2.1>;tag=src1\r\nTo: <sip:srs@192.0.2.10>{to}\r\nCall-ID: c1\r\n\
CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    }

    fn ep() -> Endpoint {
        Endpoint::new(EndpointConfig { user_agent: "test".into(), max_update_body: 1024 }, 7)
    }

    fn drain(ep: &mut Endpoint) -> Vec<String> {
        std::iter::from_fn(|| ep.poll_transmit())
            .map(|t| String::from_utf8(t.bytes).unwrap().lines().next().unwrap().to_string())
            .collect()
    }

    fn accept(ep: &mut Endpoint, now: Instant) -> (TxKey, DialogId) {
        accept_invite(ep, now, &invite("z9hG4bK1"))
    }

    fn accept_invite(ep: &mut Endpoint, now: Instant, invite: &str) -> (TxKey, DialogId) {
        ep.handle_message(now, peer(Transport::Udp), invite.as_bytes());
        let Some(Event::Invite { tx, .. }) = ep.poll_event() else { panic!("no invite") };
        let id = ep.respond_invite(now, &tx, 200, "OK", vec![], Some(("application/sdp".into(), b"v=0\r\n".to_vec())));
        (tx, id.unwrap())
    }

    #[test]
    fn invite_gets_100_then_200() {
        let mut ep = ep();
        let now = crate::clock::now();
        accept(&mut ep, now);
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]);
    }

    #[test]
    fn ack_lost_2xx_retransmitted_then_bye() {
        let mut ep = ep();
        let t0 = crate::clock::now();
        accept(&mut ep, t0);
        drain(&mut ep);
        let mut sent_at = Vec::new();
        let mut now = t0;
        while let Some(deadline) = ep.poll_timeout() {
            now = deadline;
            ep.handle_timeout(now);
            for line in drain(&mut ep) {
                assert_eq!(line, "SIP/2.0 200 OK");
                sent_at.push((now - t0).as_millis());
            }
            if let Some(Event::AckTimeout { .. }) = ep.poll_event() {
                break;
            }
        }
        // RFC 3261 §13.3.1.4: T1, then doubling to T2 = 4 s, until 64·T1 = 32 s.
        assert_eq!(sent_at, vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
        assert_eq!((now - t0).as_millis(), 32_000);
        // The TU then ends the session with BYE.
        let id = ep.dialogs.keys().next().cloned().unwrap();
        ep.send_bye(now, &id);
        let bye = String::from_utf8(ep.poll_transmit().unwrap().bytes).unwrap();
        assert!(bye.starts_with("BYE sip:src@192.0.2.1:5070 SIP/2.0\r\n"), "{bye}");
        assert!(bye.contains("From: <sip:srs@192.0.2.10>;tag="));
        assert!(bye.contains("To: <sip:src@192.0.2.1>;tag=src1"));
    }

    #[test]
    fn ack_stops_retransmission() {
        let mut ep = ep();
        let t0 = crate::clock::now();
        let (_, id) = accept(&mut ep, t0);
        drain(&mut ep);
        ep.handle_message(t0 + T1 / 2, peer(Transport::Udp), request("ACK", "z9hG4bK2", Some(&id.local_tag), 1).as_bytes());
        assert!(matches!(ep.poll_event(), Some(Event::Ack { .. })));
        ep.handle_timeout(t0 + 10 * T1);
        assert!(drain(&mut ep).is_empty());
    }

    #[test]
    fn retransmitted_invite_after_200() {
        let mut ep = ep();
        let t0 = crate::clock::now();
        accept(&mut ep, t0);
        drain(&mut ep);
        ep.handle_message(t0, peer(Transport::Udp), invite("z9hG4bK1").as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 200 OK"]);
        assert!(ep.poll_event().is_none(), "a retransmission is not a new call");
    }

    #[test]
    fn cancel_before_accept_487() {
        let mut ep = ep();
        let now = crate::clock::now();
        ep.handle_message(now, peer(Transport::Udp), invite("z9hG4bK1").as_bytes());
        let Some(Event::Invite { tx, .. }) = ep.poll_event() else { panic!() };
        ep.handle_message(now, peer(Transport::Udp), request("CANCEL", "z9hG4bK1", None, 1).as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 100 Trying", "SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"]);
        assert!(matches!(ep.poll_event(), Some(Event::Cancelled { .. })));
        // The TU's late 200 is not sent: the INVITE is already answered.
        assert!(ep.respond_invite(now, &tx, 200, "OK", vec![], None).is_none());
        assert!(drain(&mut ep).is_empty());
        // The ACK for the 487 ends the retransmission of the 487.
        ep.handle_message(now, peer(Transport::Udp), request("ACK", "z9hG4bK1", Some("x"), 1).as_bytes());
        ep.handle_timeout(now + 10 * T1);
        assert!(drain(&mut ep).is_empty());
    }

    #[test]
    fn cancel_racing_the_200() {
        let mut ep = ep();
        let now = crate::clock::now();
        let (_, _id) = accept(&mut ep, now);
        drain(&mut ep);
        ep.handle_message(now, peer(Transport::Udp), request("CANCEL", "z9hG4bK1", None, 1).as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 200 OK"]);
        assert!(ep.poll_event().is_none());
        assert_eq!(ep.dialog_count(), 1);
    }

    #[test]
    fn record_route_copied_into_the_200() {
        let mut ep = ep();
        let now = crate::clock::now();
        let inv = invite("z9hG4bK1").replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRecord-Route: <sip:p1.example;lr>\r\nRecord-Route: <sip:p2.example;lr>\r\n",
        );
        ep.handle_message(now, peer(Transport::Udp), inv.as_bytes());
        let Some(Event::Invite { tx, .. }) = ep.poll_event() else { panic!("no invite") };
        ep.poll_transmit();
        ep.respond_invite(now, &tx, 200, "OK", vec![], None);
        let ok = String::from_utf8(ep.poll_transmit().unwrap().bytes).unwrap();
        let rr: Vec<&str> = ok.lines().filter(|l| l.starts_with("Record-Route:")).collect();
        assert_eq!(rr, vec!["Record-Route: <sip:p1.example;lr>", "Record-Route: <sip:p2.example;lr>"], "{ok}");
    }

    #[test]
    fn bye_answered_and_dialog_removed() {
        let mut ep = ep();
        let now = crate::clock::now();
        let (_, id) = accept(&mut ep, now);
        drain(&mut ep);
        ep.handle_message(now, peer(Transport::Udp), request("BYE", "z9hG4bK3", Some(&id.local_tag), 2).as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 200 OK"]);
        assert!(matches!(ep.poll_event(), Some(Event::Bye { .. })));
        // Retransmitted BYE is absorbed with the same answer.
        ep.handle_message(now, peer(Transport::Udp), request("BYE", "z9hG4bK3", Some(&id.local_tag), 2).as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 200 OK"]);
        assert!(ep.poll_event().is_none());
        assert_eq!(ep.dialog_count(), 0);
    }

    #[test]
    fn options_get_503_while_draining_and_403_from_outside_the_allow_list() {
        let mut ep = ep();
        let now = crate::clock::now();
        let options = |b: &str| request("OPTIONS", b, None, 1);
        ep.set_draining(true);
        ep.handle_message(now, peer(Transport::Udp), options("z9hG4bKd1").as_bytes());
        let out = drain_full(&mut ep);
        assert!(out[0].starts_with("SIP/2.0 503") && out[0].contains("Retry-After: 30\r\n"), "{}", out[0]);
        ep.set_draining(false);
        let elsewhere = AllowList::new(&["198.51.100.0/24".parse().unwrap()]);
        ep.set_options_from(elsewhere);
        ep.handle_message(now, peer(Transport::Udp), options("z9hG4bKd2").as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 403 Forbidden (source not in limits.allow_from)"]);
        ep.set_options_from(AllowList::new(&["192.0.2.0/24".parse().unwrap()]));
        ep.handle_message(now, peer(Transport::Udp), options("z9hG4bKd3").as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 200 OK"]);
    }

    #[test]
    fn our_bye_over_tls_says_tls_in_its_via() {
        let mut ep = ep();
        let now = crate::clock::now();
        ep.handle_message(now, peer(Transport::Tls), invite("z9hG4bK1").as_bytes());
        let Some(Event::Invite { tx, .. }) = ep.poll_event() else { panic!("no invite") };
        let id = ep.respond_invite(now, &tx, 200, "OK", vec![], Some(("application/sdp".into(), b"v=0\r\n".to_vec()))).unwrap();
        drain(&mut ep);
        ep.send_bye(now, &id);
        let bye = drain_full(&mut ep).pop().unwrap();
        assert!(bye.starts_with("BYE ") && bye.contains("\r\nVia: SIP/2.0/TLS 192.0.2.10:5060;"), "{bye}");
    }

    #[test]
    fn request_on_unknown_dialog_481() {
        let mut ep = ep();
        ep.handle_message(crate::clock::now(), peer(Transport::Udp), request("BYE", "z9hG4bK9", Some("nope"), 2).as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 481 Call/Transaction Does Not Exist"]);
    }

    #[test]
    fn cseq_out_of_order_500() {
        let mut ep = ep();
        let now = crate::clock::now();
        let (_, id) = accept(&mut ep, now);
        drain(&mut ep);
        ep.handle_message(now, peer(Transport::Udp), request("INFO", "z9hG4bK4", Some(&id.local_tag), 5).as_bytes());
        ep.handle_message(now, peer(Transport::Udp), request("INFO", "z9hG4bK5", Some(&id.local_tag), 4).as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 200 OK", "SIP/2.0 500 Server Internal Error (CSeq out of order)"]);
    }

    #[test]
    fn options_unknown_method_and_require() {
        let mut ep = ep();
        let now = crate::clock::now();
        ep.handle_message(now, peer(Transport::Udp), request("OPTIONS", "z9hG4bKo", None, 1).as_bytes());
        ep.handle_message(now, peer(Transport::Udp), request("FOO", "z9hG4bKf", None, 1).as_bytes());
        ep.handle_message(now, peer(Transport::Udp), request("REGISTER", "z9hG4bKr", None, 1).as_bytes());
        let inv = invite("z9hG4bKq").replace("Require: siprec", "Require: siprec, 100rel, timer");
        ep.handle_message(now, peer(Transport::Udp), inv.as_bytes());
        let out: Vec<String> = std::iter::from_fn(|| ep.poll_transmit()).map(|t| String::from_utf8(t.bytes).unwrap()).collect();
        assert!(out[0].starts_with("SIP/2.0 200 OK") && out[0].contains("Allow: INVITE") && out[0].contains("Supported: siprec, timer"));
        assert!(out[1].starts_with("SIP/2.0 501"));
        assert!(out[2].starts_with("SIP/2.0 405"));
        assert!(out[3].starts_with("SIP/2.0 420") && out[3].contains("Unsupported: 100rel\r\n"), "{}", out[3]);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn max_forwards_zero_483() {
        let mut ep = ep();
        let now = crate::clock::now();
        let mf0 = invite("z9hG4bKm").replace("Max-Forwards: 70", "Max-Forwards: 0");
        ep.handle_message(now, peer(Transport::Udp), mf0.as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 483 Too Many Hops"]);
        assert!(matches!(ep.poll_event(), Some(Event::Rejected { code: Some(483), .. })));
        // A leading-zero count is not zero, and OPTIONS at zero probes the UAS itself.
        let mf = invite("z9hG4bKn").replace("Max-Forwards: 70", "Max-Forwards: 0068");
        ep.handle_message(now, peer(Transport::Udp), mf.as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 100 Trying"]);
        let options = request("OPTIONS", "z9hG4bKo", None, 1).replace("Content-Length", "Max-Forwards: 0\r\nContent-Length");
        ep.handle_message(now, peer(Transport::Udp), options.as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 200 OK"]);
    }

    #[test]
    fn malformed_request_gets_400_and_garbage_is_dropped() {
        let mut ep = ep();
        let now = crate::clock::now();
        let bad = invite("z9hG4bK1").replace("Content-Length: 5", "Content-Length: 500");
        ep.handle_message(now, peer(Transport::Udp), bad.as_bytes());
        assert!(drain(&mut ep)[0].starts_with("SIP/2.0 400 Bad Request"));
        ep.handle_message(now, peer(Transport::Udp), b"\x00\x01garbage");
        assert!(drain(&mut ep).is_empty());
    }

    #[test]
    fn response_goes_to_via_port_without_rport() {
        let mut ep = ep();
        let mut p = peer(Transport::Udp);
        p.remote = "192.0.2.1:40000".parse().unwrap();
        ep.handle_message(crate::clock::now(), p, request("OPTIONS", "z9hG4bKo", None, 1).as_bytes());
        assert_eq!(ep.poll_transmit().unwrap().dest, "192.0.2.1:5070".parse().unwrap());
    }

    #[test]
    fn our_bye_retransmitted_until_answered() {
        let mut ep = ep();
        let t0 = crate::clock::now();
        let (_, id) = accept(&mut ep, t0);
        ep.handle_message(t0, peer(Transport::Udp), request("ACK", "z9hG4bK2", Some(&id.local_tag), 1).as_bytes());
        drain(&mut ep);
        ep.poll_event();
        ep.send_bye(t0, &id);
        let bye = String::from_utf8(ep.poll_transmit().unwrap().bytes).unwrap();
        ep.handle_timeout(t0 + T1);
        assert_eq!(drain(&mut ep), vec![bye.lines().next().unwrap().to_string()]);
        let branch = bye.split("branch=").nth(1).unwrap().split(';').next().unwrap();
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\nFrom: a;tag=1\r\nTo: b;tag=2\r\nCall-ID: c1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        ep.handle_message(t0 + T1, peer(Transport::Udp), ok.as_bytes());
        assert!(matches!(ep.poll_event(), Some(Event::ByeDone { code: Some(200), .. })));
        assert_eq!(ep.poll_timeout(), Some(t0 + 64 * T1), "only the accepted INVITE tx remains");
    }
    /// Every transmitted message in full.
    fn drain_full(ep: &mut Endpoint) -> Vec<String> {
        std::iter::from_fn(|| ep.poll_transmit()).map(|t| String::from_utf8(t.bytes).unwrap()).collect()
    }

    /// An in-dialog request from the SRC with `extra` header lines.
    fn in_dialog(method: &str, branch: &str, id: &DialogId, cseq: u32, extra: &str) -> String {
        request(method, branch, Some(&id.local_tag), cseq).replace("Content-Length", &format!("{extra}Content-Length"))
    }

    /// Runs every timer up to `until`, returning the events that came out.
    fn run_until(ep: &mut Endpoint, until: Instant) -> Vec<Event> {
        while let Some(t) = ep.poll_timeout().filter(|t| *t <= until) {
            ep.handle_timeout(t);
        }
        std::iter::from_fn(|| ep.poll_event()).collect()
    }

    #[test]
    fn second_reinvite_while_one_pending_500_with_retry_after() {
        let mut ep = ep();
        let now = crate::clock::now();
        let (_, id) = accept(&mut ep, now);
        ep.handle_message(now, peer(Transport::Udp), in_dialog("ACK", "z9hG4bK2", &id, 1, "").as_bytes());
        drain(&mut ep);
        while ep.poll_event().is_some() {}
        ep.handle_message(now, peer(Transport::Udp), in_dialog("INVITE", "z9hG4bK3", &id, 2, "").as_bytes());
        let Some(Event::ReInvite { tx, .. }) = ep.poll_event() else { panic!("no re-INVITE event") };
        ep.handle_message(now, peer(Transport::Udp), in_dialog("INVITE", "z9hG4bK4", &id, 3, "").as_bytes());
        let out = drain_full(&mut ep);
        assert!(out[0].starts_with("SIP/2.0 100 Trying"));
        // RFC 3261 §14.2: 500 with a Retry-After of 0 to 10 s.
        assert!(out[1].starts_with("SIP/2.0 500 "), "{}", out[1]);
        let retry: u32 = Message::parse(out[1].as_bytes()).unwrap().header("Retry-After").unwrap().parse().unwrap();
        assert!(retry <= 10);
        assert!(ep.poll_event().is_none(), "the second re-INVITE reaches no one");
        // Once the first is answered, the next re-INVITE is served again.
        ep.respond_invite(now, &tx, 200, "OK", vec![], None);
        ep.handle_message(now, peer(Transport::Udp), in_dialog("INVITE", "z9hG4bK5", &id, 4, "").as_bytes());
        assert!(matches!(ep.poll_event(), Some(Event::ReInvite { .. })));
    }

    #[test]
    fn bye_before_ack() {
        let mut ep = ep();
        let t0 = crate::clock::now();
        let (_, id) = accept(&mut ep, t0);
        drain(&mut ep);
        ep.handle_timeout(t0 + T1);
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 200 OK"], "the 2xx is being retransmitted");
        ep.handle_message(t0 + T1, peer(Transport::Udp), in_dialog("BYE", "z9hG4bKb", &id, 2, "").as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 200 OK"]);
        assert!(matches!(ep.poll_event(), Some(Event::Bye { .. })));
        assert_eq!(ep.dialog_count(), 0);
        // No more 2xx retransmissions and no ACK timeout for the ended dialog.
        let events = run_until(&mut ep, t0 + 128 * T1);
        assert!(drain(&mut ep).is_empty());
        assert!(events.is_empty(), "{events:?}");
        // The late ACK is absorbed silently.
        ep.handle_message(t0 + 2 * T1, peer(Transport::Udp), in_dialog("ACK", "z9hG4bK2", &id, 1, "").as_bytes());
        assert!(drain(&mut ep).is_empty() && ep.poll_event().is_none());
    }

    #[test]
    fn rfc2543_invite_without_branch_matches_its_retransmission_and_cancel() {
        let mut ep = ep();
        let now = crate::clock::now();
        let old = invite("x").replace(";branch=x", "");
        ep.handle_message(now, peer(Transport::Udp), old.as_bytes());
        assert!(matches!(ep.poll_event(), Some(Event::Invite { .. })));
        ep.handle_message(now, peer(Transport::Udp), old.as_bytes());
        assert!(ep.poll_event().is_none(), "retransmission absorbed");
        let cancel = request("CANCEL", "x", None, 1).replace(";branch=x", "");
        ep.handle_message(now, peer(Transport::Udp), cancel.as_bytes());
        assert_eq!(
            drain(&mut ep),
            vec!["SIP/2.0 100 Trying", "SIP/2.0 100 Trying", "SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"]
        );
        assert!(matches!(ep.poll_event(), Some(Event::Cancelled { .. })));
    }

    #[test]
    fn session_expires_below_min_se_422() {
        let mut ep = ep();
        let now = crate::clock::now();
        ep.handle_message(now, peer(Transport::Udp), invite_with("z9hG4bK1", "Supported: timer\r\nSession-Expires: 60\r\n").as_bytes());
        let out = drain_full(&mut ep);
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with("SIP/2.0 422 Session Interval Too Small\r\n"), "{}", out[0]);
        assert!(out[0].contains("\r\nMin-SE: 90\r\n"));
        assert!(matches!(ep.poll_event(), Some(Event::Rejected { code: Some(422), .. })));
        // A refresh asking for too little gets 422 too, and the timer is untouched.
        let (_, id) = accept_invite(&mut ep, now, &invite_with("z9hG4bK2", "Supported: timer\r\nSession-Expires: 90\r\n"));
        drain(&mut ep);
        ep.handle_message(now, peer(Transport::Udp), in_dialog("UPDATE", "z9hG4bK3", &id, 2, "Session-Expires: 30\r\n").as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 422 Session Interval Too Small"]);
        let events = run_until(&mut ep, now + Duration::from_secs(60));
        assert!(events.iter().any(|e| matches!(e, Event::SessionExpired { .. })), "{events:?}");
    }

    #[test]
    fn session_timer_confirmed_in_200_with_uac_refresher() {
        let mut ep = ep();
        let now = crate::clock::now();
        accept_invite(&mut ep, now, &invite_with("z9hG4bK1", "Supported: timer\r\nSession-Expires: 1800\r\nMin-SE: 90\r\n"));
        let ok = drain_full(&mut ep).pop().unwrap();
        assert!(ok.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(ok.contains("\r\nSession-Expires: 1800;refresher=uac\r\n"), "{ok}");
        assert!(ok.contains("\r\nRequire: timer\r\n"));
        assert!(ok.contains("\r\nSupported: siprec, timer\r\n"));
        // Without Session-Expires there is no timer and no Require.
        let mut ep2 = self::ep();
        accept(&mut ep2, now);
        let ok = drain_full(&mut ep2).pop().unwrap();
        assert!(!ok.contains("Session-Expires") && !ok.contains("Require"), "{ok}");
    }

    #[test]
    fn session_expired_without_refresh() {
        let mut ep = ep();
        let t0 = crate::clock::now();
        let (_, id) = accept_invite(&mut ep, t0, &invite_with("z9hG4bK1", "k: timer\r\nx: 300\r\n"));
        ep.handle_message(t0, peer(Transport::Udp), in_dialog("ACK", "z9hG4bK2", &id, 1, "").as_bytes());
        drain(&mut ep);
        while ep.poll_event().is_some() {}
        // RFC 4028 §10: BYE at expiry - min(32 s, 300/3 s) = 268 s.
        assert!(run_until(&mut ep, t0 + Duration::from_millis(267_999)).is_empty());
        assert_eq!(ep.poll_timeout(), Some(t0 + Duration::from_secs(268)));
        let events = run_until(&mut ep, t0 + Duration::from_secs(268));
        assert!(matches!(events.as_slice(), [Event::SessionExpired { dialog }] if *dialog == id), "{events:?}");
        assert_eq!(ep.poll_timeout(), None, "reported once");
        ep.send_bye(t0 + Duration::from_secs(268), &id);
        assert!(drain(&mut ep)[0].starts_with("BYE sip:src@192.0.2.1:5070 SIP/2.0"));
    }

    #[test]
    fn oversized_update_body_gets_413_and_no_event() {
        let mut ep = ep();
        let now = crate::clock::now();
        let (_, id) = accept(&mut ep, now);
        drain(&mut ep);
        while ep.poll_event().is_some() {}
        let body = "x".repeat(1025);
        let update = in_dialog("UPDATE", "z9hG4bK3", &id, 2, "Content-Type: application/rs-metadata+xml\r\n")
            .replace("Content-Length: 0\r\n\r\n", &format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        ep.handle_message(now, peer(Transport::Udp), update.as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 413 Request Entity Too Large".to_string()]);
        assert!(matches!(ep.poll_event(), Some(Event::Rejected { code: Some(413), .. })));
        // At the limit it is taken.
        let body = "x".repeat(1024);
        let update = in_dialog("UPDATE", "z9hG4bK4", &id, 3, "Content-Type: application/rs-metadata+xml\r\n")
            .replace("Content-Length: 0\r\n\r\n", &format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        ep.handle_message(now, peer(Transport::Udp), update.as_bytes());
        assert_eq!(drain(&mut ep), vec!["SIP/2.0 200 OK".to_string()]);
        assert!(matches!(ep.poll_event(), Some(Event::InDialog { .. })));
    }

    #[test]
    fn session_refresh_by_update_resets_timer() {
        let mut ep = ep();
        let t0 = crate::clock::now();
        let (_, id) = accept_invite(&mut ep, t0, &invite_with("z9hG4bK1", "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n"));
        ep.handle_message(t0, peer(Transport::Udp), in_dialog("ACK", "z9hG4bK2", &id, 1, "").as_bytes());
        drain(&mut ep);
        while ep.poll_event().is_some() {}
        let t1 = t0 + Duration::from_secs(60);
        ep.handle_message(t1, peer(Transport::Udp), in_dialog("UPDATE", "z9hG4bK3", &id, 2, "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n").as_bytes());
        let ok = drain_full(&mut ep).pop().unwrap();
        assert!(ok.starts_with("SIP/2.0 200 OK\r\n") && ok.contains("Session-Expires: 120;refresher=uac\r\n"), "{ok}");
        assert!(matches!(ep.poll_event(), Some(Event::InDialog { .. })));
        // 120 s less 32 s after the refresh, not after the INVITE.
        assert!(run_until(&mut ep, t1 + Duration::from_millis(87_999)).is_empty());
        let events = run_until(&mut ep, t1 + Duration::from_secs(88));
        assert!(matches!(events.as_slice(), [Event::SessionExpired { .. }]), "{events:?}");
    }

    #[test]
    fn session_refresh_by_reinvite_resets_timer() {
        let mut ep = ep();
        let t0 = crate::clock::now();
        let (_, id) = accept_invite(&mut ep, t0, &invite_with("z9hG4bK1", "Supported: timer\r\nSession-Expires: 90\r\n"));
        ep.handle_message(t0, peer(Transport::Udp), in_dialog("ACK", "z9hG4bK2", &id, 1, "").as_bytes());
        drain(&mut ep);
        while ep.poll_event().is_some() {}
        let t1 = t0 + Duration::from_secs(45);
        ep.handle_message(t1, peer(Transport::Udp), in_dialog("INVITE", "z9hG4bK3", &id, 2, "Supported: timer\r\nSession-Expires: 600\r\n").as_bytes());
        let Some(Event::ReInvite { tx, .. }) = ep.poll_event() else { panic!("no re-INVITE") };
        ep.respond_invite(t1, &tx, 200, "OK", vec![], Some(("application/sdp".into(), b"v=0\r\n".to_vec())));
        let ok = drain_full(&mut ep).pop().unwrap();
        assert!(ok.contains("Session-Expires: 600;refresher=uac\r\n") && ok.contains("Require: timer\r\n"), "{ok}");
        ep.handle_message(t1, peer(Transport::Udp), in_dialog("ACK", "z9hG4bK4", &id, 2, "").as_bytes());
        let events = run_until(&mut ep, t1 + Duration::from_secs(567));
        assert!(events.iter().all(|e| !matches!(e, Event::SessionExpired { .. })), "{events:?}");
        let events = run_until(&mut ep, t1 + Duration::from_secs(568));
        assert!(matches!(events.as_slice(), [Event::SessionExpired { .. }]), "{events:?}");
    }

    #[test]
    fn uas_refresher_sends_update_at_half_interval() {
        let mut ep = ep();
        let t0 = crate::clock::now();
        // No Supported: timer (a proxy inserted Session-Expires): we refresh, without Require.
        let inv = invite_with("z9hG4bK1", "Session-Expires: 200\r\n");
        ep.handle_message(t0, peer(Transport::Udp), inv.as_bytes());
        let Some(Event::Invite { tx, .. }) = ep.poll_event() else { panic!() };
        let contact = ("Contact".to_string(), "<sip:srs@192.0.2.10:5060>".to_string());
        let id = ep.respond_invite(t0, &tx, 200, "OK", vec![contact], None).unwrap();
        let ok = drain_full(&mut ep).pop().unwrap();
        assert!(ok.contains("Session-Expires: 200;refresher=uas\r\n") && !ok.contains("Require"), "{ok}");
        ep.handle_message(t0, peer(Transport::Udp), in_dialog("ACK", "z9hG4bK2", &id, 1, "").as_bytes());
        while ep.poll_event().is_some() {}
        run_until(&mut ep, t0 + Duration::from_secs(100));
        let update = drain_full(&mut ep).pop().unwrap();
        assert!(update.starts_with("UPDATE sip:src@192.0.2.1:5070 SIP/2.0\r\n"), "{update}");
        assert!(update.contains("Session-Expires: 200;refresher=uas\r\n"));
        assert!(update.contains("Contact: <sip:srs@192.0.2.10:5060>\r\n"));
        let m = Message::parse(update.as_bytes()).unwrap();
        assert_eq!(m.cseq().map(|c| c.1), Some("UPDATE"));
        // The SRC answers 200: the next refresh is due half an interval later.
        let answer = m.response(200, "OK", None).to_bytes();
        let t1 = t0 + Duration::from_secs(101);
        ep.handle_message(t1, peer(Transport::Udp), &answer);
        assert_eq!(ep.poll_timeout(), Some(t1 + Duration::from_secs(100)));
        // The next one goes unanswered: Timer F ends the session.
        let events = run_until(&mut ep, t1 + Duration::from_secs(100) + 64 * T1);
        assert!(matches!(events.as_slice(), [Event::SessionExpired { .. }]), "{events:?}");
    }

    #[test]
    fn refresh_refused_481_expires_the_session() {
        let mut ep = ep();
        let t0 = crate::clock::now();
        let (_, id) = accept_invite(&mut ep, t0, &invite_with("z9hG4bK1", "Supported: timer\r\nSession-Expires: 100;refresher=uas\r\n"));
        drain(&mut ep);
        ep.handle_message(t0, peer(Transport::Udp), in_dialog("ACK", "z9hG4bK2", &id, 1, "").as_bytes());
        while ep.poll_event().is_some() {}
        run_until(&mut ep, t0 + Duration::from_secs(50));
        let update = drain_full(&mut ep).pop().unwrap();
        let m = Message::parse(update.as_bytes()).unwrap();
        ep.handle_message(t0 + Duration::from_secs(50), peer(Transport::Udp), &m.response(481, "Gone", None).to_bytes());
        assert!(matches!(ep.poll_event(), Some(Event::SessionExpired { .. })));
    }

    #[test]
    fn ipv6_peer_gets_answers_and_bye_with_bracketed_hosts() {
        let mut ep = ep();
        let now = crate::clock::now();
        let p6 = Peer {
            transport: Transport::Udp,
            remote: "[2001:db8::1]:40000".parse().unwrap(),
            local: "[2001:db8::10]:5060".parse().unwrap(),
            conn: None,
        };
        let inv = invite("z9hG4bK1")
            .replace("192.0.2.1:5070;branch", "[2001:db8::1]:5070;branch")
            .replace("<sip:src@192.0.2.1:5070>", "<sip:src@[2001:db8::1]:5070>");
        ep.handle_message(now, p6, inv.as_bytes());
        let Some(Event::Invite { tx, .. }) = ep.poll_event() else { panic!("IPv6 INVITE not accepted") };
        // No rport: the answer goes to the source address and the Via port (§18.2.2).
        assert_eq!(ep.poll_transmit().unwrap().dest, "[2001:db8::1]:5070".parse().unwrap());
        let id = ep.respond_invite(now, &tx, 200, "OK", vec![], None).unwrap();
        drain(&mut ep);
        ep.send_bye(now, &id);
        let bye = String::from_utf8(ep.poll_transmit().unwrap().bytes).unwrap();
        assert!(bye.starts_with("BYE sip:src@[2001:db8::1]:5070 SIP/2.0\r\n"), "{bye}");
        assert!(bye.contains("Via: SIP/2.0/UDP [2001:db8::10]:5060;branch=z9hG4bK"), "{bye}");
    }
}
