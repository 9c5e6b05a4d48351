//! The benchmark's SRC side of SIP over UDP: INVITE (multipart SDP + RFC 7865 metadata, two
//! PCMU streams) at a given rate, ACK, RTP start and stop through the sender, BYE after the
//! call's duration, with RFC 3261 retransmissions (T1 doubling) and the time of every answer.
//!
//! It is a load generator, not an SRC: no authentication, no re-INVITE, no TCP, no CANCEL.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::BenchError;
use super::rtp::SenderCmd;
use crate::clock;
use crate::replay::timer::{GIVE_UP, Retransmit};
use crate::sip::Message;

/// RTP stops this long before the BYE, so every packet sent is in before the call ends.
const RTP_TAIL: Duration = Duration::from_millis(100);

/// What happened to one call.
#[derive(Debug, Clone, Default)]
pub struct CallOutcome {
    pub call_id: String,
    pub invite_sent: Option<Instant>,
    pub answered: Option<Instant>,
    pub invite_status: u16,
    pub bye_sent: Option<Instant>,
    pub bye_answered: Option<Instant>,
    pub bye_status: u16,
    /// The gateway ended the call itself (its own BYE).
    pub gateway_bye: bool,
}

/// Schedule of the calls.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub calls: usize,
    /// Calls started per second.
    pub rate: f64,
    /// How long each call lasts from its 200 OK to its BYE.
    pub duration: Duration,
    /// Distinguishes the Call-IDs of runs.
    pub run: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Invite,
    RetransmitInvite,
    StopRtp,
    Bye,
    RetransmitBye,
}

struct Call {
    out: CallOutcome,
    from_tag: String,
    to_tag: String,
    remote_target: String,
    invite: Vec<u8>,
    bye: Vec<u8>,
    /// Retransmission schedule of the request in flight (the INVITE, then the BYE).
    rtx: Retransmit,
    provisional: bool,
}

/// Drives all calls of `plan` against `gateway`; streams `2i` and `2i + 1` of the sender carry
/// call `i`. Returns when every call has ended or given up.
pub fn run_calls(plan: Plan, gateway: SocketAddr, sender: &mpsc::Sender<SenderCmd>) -> Result<Vec<CallOutcome>, BenchError> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(BenchError::io("bind the SIP socket"))?;
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
    let local = socket.local_addr().map_err(BenchError::io("SIP socket address"))?;
    let mut calls: Vec<Call> = (0..plan.calls)
        .map(|i| {
            let call_id = call_id(plan.run, i);
            Call {
                out: CallOutcome { call_id, ..Default::default() },
                from_tag: format!("src{i}"),
                to_tag: String::new(),
                remote_target: format!("sip:srs@{gateway}"),
                invite: Vec::new(),
                bye: Vec::new(),
                rtx: Retransmit::new(true, false),
                provisional: false,
            }
        })
        .collect();
    let by_id: HashMap<String, usize> = calls.iter().enumerate().map(|(i, c)| (c.out.call_id.clone(), i)).collect();
    let start = clock::now();
    let mut queue: BinaryHeap<Reverse<(Instant, usize, Action)>> = BinaryHeap::new();
    for i in 0..plan.calls {
        queue.push(Reverse((start + Duration::from_secs_f64(i as f64 / plan.rate), i, Action::Invite)));
    }
    let mut finished = 0usize;
    let mut buf = vec![0u8; 65_536];
    // Every call has ended by then, unless the gateway stopped answering.
    let deadline = start + Duration::from_secs_f64(plan.calls as f64 / plan.rate) + plan.duration + GIVE_UP * 2;
    while finished < plan.calls {
        let now = clock::now();
        if now > deadline {
            break;
        }
        while let Some(Reverse((at, i, action))) = queue.peek().copied() {
            if at > now {
                break;
            }
            queue.pop();
            let c = &mut calls[i];
            match action {
                Action::Invite => {
                    c.invite = invite(&c.out.call_id, &c.from_tag, local, gateway, i).into_bytes();
                    send(&socket, &c.invite, gateway);
                    c.out.invite_sent = Some(now);
                    c.rtx = Retransmit::new(true, false);
                    queue.push(Reverse((now + c.rtx.next().unwrap_or(GIVE_UP), i, Action::RetransmitInvite)));
                }
                Action::RetransmitInvite if c.out.invite_status == 0 && !c.provisional => {
                    let sent = c.out.invite_sent.unwrap_or(now);
                    match retransmit(&socket, &c.invite, gateway, &mut c.rtx, sent, now) {
                        Some(at) => queue.push(Reverse((at, i, Action::RetransmitInvite))),
                        None => {
                            c.out.invite_status = 408;
                            finished += 1;
                        }
                    }
                }
                Action::StopRtp => {
                    for s in [2 * i, 2 * i + 1] {
                        let _ = sender.send(SenderCmd::Stop { id: s as u32 });
                    }
                    queue.push(Reverse((now + RTP_TAIL, i, Action::Bye)));
                }
                Action::Bye if !c.out.gateway_bye => {
                    c.bye = bye(c, local).into_bytes();
                    send(&socket, &c.bye, gateway);
                    c.out.bye_sent = Some(now);
                    c.rtx = Retransmit::new(false, false);
                    queue.push(Reverse((now + c.rtx.next().unwrap_or(GIVE_UP), i, Action::RetransmitBye)));
                }
                Action::RetransmitBye if c.out.bye_status == 0 => {
                    let sent = c.out.bye_sent.unwrap_or(now);
                    match retransmit(&socket, &c.bye, gateway, &mut c.rtx, sent, now) {
                        Some(at) => queue.push(Reverse((at, i, Action::RetransmitBye))),
                        None => {
                            c.out.bye_status = 408;
                            finished += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        let wait = queue.peek().map_or(Duration::from_millis(50), |Reverse((at, _, _))| at.saturating_duration_since(clock::now()));
        let _ = socket.set_read_timeout(Some(wait.clamp(Duration::from_micros(200), Duration::from_millis(50))));
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(_) => continue, // timeout
        };
        let at = clock::now();
        let Ok(msg) = Message::parse(&buf[..n]) else { continue };
        let Some(&i) = by_id.get(msg.call_id()) else { continue };
        let c = &mut calls[i];
        if let Some(method) = msg.method() {
            // A request from the gateway: its BYE (RTP timeout) or anything else gets 200.
            send(&socket, &msg.response(200, "OK", None).to_bytes(), from);
            if method == "BYE" && c.out.bye_status == 0 && !c.out.gateway_bye {
                c.out.gateway_bye = true;
                for s in [2 * i, 2 * i + 1] {
                    let _ = sender.send(SenderCmd::Stop { id: s as u32 });
                }
                finished += 1;
            }
            continue;
        }
        let status = msg.status().unwrap_or(0);
        match msg.cseq() {
            Some((_, "INVITE")) if status < 200 => c.provisional = true,
            Some((_, "INVITE")) => {
                if c.out.invite_status != 0 {
                    // A retransmitted 2xx: our ACK was lost.
                    if (200..300).contains(&status) && c.out.answered.is_some() {
                        send(&socket, ack(c, local).as_bytes(), gateway);
                    }
                    continue;
                }
                c.out.invite_status = status;
                c.out.answered = Some(at);
                if !(200..300).contains(&status) {
                    finished += 1;
                    continue;
                }
                c.to_tag = msg.tag("To").unwrap_or("").to_string();
                if let Some(contact) = msg.header("Contact") {
                    c.remote_target = crate::sip::message::name_addr_uri(contact).to_string();
                }
                send(&socket, ack(c, local).as_bytes(), gateway);
                let ports = answer_ports(&msg);
                for (k, dest) in ports.iter().take(2).enumerate() {
                    if let Some(dest) = dest {
                        let _ = sender.send(SenderCmd::Start { id: (2 * i + k) as u32, dest: *dest });
                    }
                }
                queue.push(Reverse((at + plan.duration, i, Action::StopRtp)));
            }
            Some((_, "BYE")) if c.out.bye_status == 0 && status >= 200 => {
                c.out.bye_status = status;
                c.out.bye_answered = Some(at);
                finished += 1;
            }
            _ => {}
        }
    }
    Ok(calls.into_iter().map(|c| c.out).collect())
}

/// The Call-ID of call `i` of run `run` of this process.
pub fn call_id(run: usize, i: usize) -> String {
    format!("bench-{}-{run}-{i}@127.0.0.1", std::process::id())
}

/// One retransmission of a request first sent at `sent`, on the schedule the replay tool uses
/// (`replay::timer`, RFC 3261 Timers A/E): the next wake-up, or `None` once 64·T1 have passed
/// and the transaction gives up.
fn retransmit(socket: &UdpSocket, bytes: &[u8], to: SocketAddr, rtx: &mut Retransmit, sent: Instant, now: Instant) -> Option<Instant> {
    if now.duration_since(sent) >= GIVE_UP {
        return None;
    }
    send(socket, bytes, to);
    rtx.fired();
    // After the last retransmission, wake at the give-up time.
    Some(sent + rtx.next().unwrap_or(GIVE_UP))
}

fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    let _ = socket.send_to(bytes, to);
}

/// The answer's RTP destination per m-line (`None` for a refused one).
fn answer_ports(msg: &Message) -> Vec<Option<SocketAddrV4>> {
    let body = String::from_utf8_lossy(&msg.body);
    let mut ip: Option<IpAddr> = None;
    let mut out = Vec::new();
    for line in body.lines().map(str::trim) {
        if let Some(a) = line.strip_prefix("c=IN IP4 ") {
            ip = a.trim().parse().ok().or(ip);
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            let port: u16 = m.split(' ').next().and_then(|p| p.parse().ok()).unwrap_or(0);
            out.push(port);
        }
    }
    let ip = match ip {
        Some(IpAddr::V4(a)) if !a.is_unspecified() => a,
        _ => [127, 0, 0, 1].into(),
    };
    out.into_iter().map(|p| (p != 0).then(|| SocketAddrV4::new(ip, p))).collect()
}

fn invite(call_id: &str, from_tag: &str, local: SocketAddr, gateway: SocketAddr, i: usize) -> String {
    let sdp = format!(
        "v=0\r\no=bench {i} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\na=label:1\r\n\
         m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\na=label:2\r\n"
    );
    let metadata = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\r\n\
         <datamode>complete</datamode>\r\n\
         <session session_id=\"YmVuY2hTZXNz{i:08}\"><sipSessionID>{call_id}</sipSessionID></session>\r\n\
         <participant participant_id=\"YmVuY2hDYWxsZXI{i:08}\"><nameID aor=\"sip:+1555{i:07}@src.example.com\"/></participant>\r\n\
         <participant participant_id=\"YmVuY2hBZ2VudA{i:08}\"><nameID aor=\"sip:agent{i}@pbx.example.com\"/></participant>\r\n\
         <stream stream_id=\"c3RyZWFtMQ{i:08}\" session_id=\"YmVuY2hTZXNz{i:08}\"><label>1</label></stream>\r\n\
         <stream stream_id=\"c3RyZWFtMg{i:08}\" session_id=\"YmVuY2hTZXNz{i:08}\"><label>2</label></stream>\r\n\
         <participantstreamassoc participant_id=\"YmVuY2hDYWxsZXI{i:08}\"><send>c3RyZWFtMQ{i:08}</send><recv>c3RyZWFtMg{i:08}</recv></participantstreamassoc>\r\n\
         <participantstreamassoc participant_id=\"YmVuY2hBZ2VudA{i:08}\"><send>c3RyZWFtMg{i:08}</send><recv>c3RyZWFtMQ{i:08}</recv></participantstreamassoc>\r\n\
         </recording>\r\n"
    );
    let body = format!(
        "--benchBoundary\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n\
         --benchBoundary\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{metadata}\r\n\
         --benchBoundary--\r\n"
    );
    format!(
        "INVITE sip:srs@{gateway} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{from_tag}-inv;rport\r\n\
         From: <sip:src@{local}>;tag={from_tag}\r\n\
         To: <sip:srs@{gateway}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\n\
         Contact: <sip:src@{local}>;+sip.src\r\n\
         Require: siprec\r\n\
         Content-Type: multipart/mixed;boundary=benchBoundary\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn ack(c: &Call, local: SocketAddr) -> String {
    format!(
        "ACK {} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{}-ack;rport\r\nFrom: <sip:src@{local}>;tag={}\r\n\
         To: <sip:srs@127.0.0.1>;tag={}\r\nCall-ID: {}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        c.remote_target, c.from_tag, c.from_tag, c.to_tag, c.out.call_id
    )
}

fn bye(c: &Call, local: SocketAddr) -> String {
    format!(
        "BYE {} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{}-bye;rport\r\nFrom: <sip:src@{local}>;tag={}\r\n\
         To: <sip:srs@127.0.0.1>;tag={}\r\nCall-ID: {}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        c.remote_target, c.from_tag, c.from_tag, c.to_tag, c.out.call_id
    )
}
