//! The live half of the replay: sockets, pacing, client transactions and RTP sending.
//!
//! One SIP connection (a connected UDP socket or a TCP stream) and one UDP socket per m-line. The
//! SIP sequence runs in the caller's task; RTP runs in a spawned task that reads each m-line's
//! destination from a watch channel, so a re-INVITE answer can move a stream. Time comes from
//! `crate::clock`; all protocol decisions are in the pure modules next to this one.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::plan::{self, Plan, PlannedRtp};
use super::rewrite::{self, Identity, branch};
use super::timer::{GIVE_UP, Retransmit};
use super::{ReplayError, ReplayOptions, ReplayReport, Transport};
use crate::sip::Message;
use crate::sip::message::{self, Framed};

/// Large enough for any UDP datagram.
const RECV_BUFFER: usize = 65_535;

fn now() -> Instant {
    Instant::from_std(crate::clock::now())
}

fn is_2xx(m: &Message) -> bool {
    m.status().is_some_and(|s| (200..300).contains(&s))
}

/// Runs the plan against the gateway.
pub async fn replay(plan: Plan, opts: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    let speed = opts.speed;
    let at = |origin: Instant, offset: Duration| origin + offset.div_f64(speed);
    let mut sig = Signalling::connect(opts.target, opts.transport).await?;
    let mut sockets = Vec::with_capacity(plan.streams);
    for _ in 0..plan.streams {
        sockets.push(UdpSocket::bind(SocketAddr::new(sig.local.ip(), 0)).await?);
    }
    let ports = sockets
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut id = Identity::fresh(sig.local, opts.transport);
    let mut requests = plan.requests.into_iter();
    let Some(first) = requests.next() else {
        // plan::build always puts the INVITE first; an empty plan cannot be built.
        return Err(ReplayError::Plan(super::PlanError::NoInvite));
    };

    let t0 = now();
    let invite = rewrite::request(&first.message, &id, &rewrite::new_branch(), &ports);
    let answer = sig.transact(&invite).await?;
    let invite_status = answer.status().unwrap_or(0);
    if !is_2xx(&answer) {
        sig.send(&rewrite::ack(&invite, &answer, &id)).await?;
        tracing::warn!(status = invite_status, "gateway refused the INVITE");
        return Ok(ReplayReport {
            invite_status,
            bye_status: None,
            streams: plan.streams,
            rtp_packets_sent: 0,
            answered_ports: vec![],
        });
    }
    id.learn_dialog(&answer);
    sig.ack(&invite, &answer, &id).await?;
    let dests = destinations(&answer, opts.target.ip(), plan.streams);
    let answered_ports: Vec<u16> = dests.iter().map(|d| d.map_or(0, |a| a.port())).collect();
    tracing::info!(status = invite_status, ports = ?answered_ports, "INVITE answered");

    // Media keeps its captured distance from the answer: if the live answer came later than the
    // captured one, everything after it shifts by the difference.
    let captured_answer = at(t0, plan.answered_at.unwrap_or_default());
    let origin = t0 + now().saturating_duration_since(captured_answer);
    let last_rtp = plan.rtp.last().map(|r| r.at);
    let (dest_tx, dest_rx) = watch::channel(dests);
    let mut rtp = Some(tokio::spawn(send_rtp(
        sockets, plan.rtp, dest_rx, origin, speed,
    )));
    let mut rtp_sent = 0;

    let mut bye_status = None;
    let invite_cseq = invite.cseq().map_or(1, |(n, _)| n);
    let mut pending: Vec<(Duration, Message)> = requests.map(|r| (r.at, r.message)).collect();
    if !pending.iter().any(|(_, m)| m.method() == Some("BYE")) {
        // A capture cut before the hang-up still ends with one, right after the last media.
        let max_cseq = pending
            .iter()
            .filter_map(|(_, m)| m.cseq())
            .map(|(n, _)| n)
            .max()
            .unwrap_or(invite_cseq);
        let after = last_rtp
            .unwrap_or_default()
            .max(pending.last().map_or(Duration::ZERO, |(t, _)| *t));
        pending.push((
            after + Duration::from_millis(20),
            rewrite::bye(&first.message, max_cseq + 1, &id),
        ));
    }
    for (offset, captured) in pending {
        let method = captured.method().unwrap_or_default().to_string();
        sig.idle_until(at(origin, offset)).await?;
        if method == "BYE"
            && let Some(task) = rtp.take()
        {
            // All media goes out before the session ends, even if sending ran late.
            rtp_sent = join_rtp(task).await;
        }
        let msg = rewrite::request(&captured, &id, &rewrite::new_branch(), &ports);
        let resp = sig.transact(&msg).await?;
        let status = resp.status().unwrap_or(0);
        match method.as_str() {
            "INVITE" => {
                sig.ack(&msg, &resp, &id).await?;
                if !is_2xx(&resp) {
                    tracing::warn!(
                        status,
                        "gateway refused a re-INVITE; media continues as before"
                    );
                } else if plan::sdp_of(&resp).is_some() {
                    // The receiver is gone only once the replay itself is done.
                    let _ = dest_tx.send(destinations(&resp, opts.target.ip(), ports.len()));
                }
            }
            "BYE" => {
                bye_status = Some(status);
                break;
            }
            _ if !is_2xx(&resp) => tracing::warn!(status, method, "gateway refused a request"),
            _ => {}
        }
    }
    if let Some(task) = rtp.take() {
        rtp_sent = join_rtp(task).await;
    }
    tracing::info!(
        invite_status,
        ?bye_status,
        rtp_packets_sent = rtp_sent,
        "replay finished"
    );
    Ok(ReplayReport {
        invite_status,
        bye_status,
        streams: ports.len(),
        rtp_packets_sent: rtp_sent,
        answered_ports,
    })
}

async fn join_rtp(task: JoinHandle<u64>) -> u64 {
    task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "RTP task failed");
        0
    })
}

/// Where each m-line's RTP goes per the gateway's answer: its `c=` address (the gateway's own
/// address when the answer names none) and port. Port 0 or a `0.0.0.0` hold address (RFC 3264
/// §8.4) means nothing is sent for that stream.
fn destinations(answer: &Message, gateway: IpAddr, streams: usize) -> Vec<Option<SocketAddr>> {
    let Some(sdp) = plan::sdp_of(answer) else {
        return vec![None; streams];
    };
    (0..streams)
        .map(|k| {
            let md = sdp.media.get(k)?;
            let ip = md.connection_or(&sdp).unwrap_or(gateway);
            (md.port != 0 && !ip.is_unspecified()).then(|| SocketAddr::new(ip, md.port))
        })
        .collect()
}

/// Sends every packet's payload unchanged at its paced time; returns how many went out.
async fn send_rtp(
    sockets: Vec<UdpSocket>,
    packets: Vec<PlannedRtp>,
    dests: watch::Receiver<Vec<Option<SocketAddr>>>,
    origin: Instant,
    speed: f64,
) -> u64 {
    let mut sent = 0u64;
    let mut warned = false;
    for p in packets {
        sleep_until(origin + p.at.div_f64(speed)).await;
        let dest = dests.borrow().get(p.mline).copied().flatten();
        let (Some(dest), Some(socket)) = (dest, sockets.get(p.mline)) else {
            continue;
        };
        match socket.send_to(&p.payload, dest).await {
            Ok(_) => sent += 1,
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(error = %e, %dest, "RTP send failed (further failures not logged)");
            }
            Err(_) => {}
        }
    }
    sent
}

enum Writer {
    Udp(Arc<UdpSocket>),
    Tcp(OwnedWriteHalf),
}

/// The SIP connection to the gateway, with its reader task.
struct Signalling {
    writer: Writer,
    inbox: mpsc::Receiver<Message>,
    reader: JoinHandle<()>,
    local: SocketAddr,
    /// The last 2xx ACK, re-sent when the gateway retransmits its 2xx (RFC 3261 §13.2.2.4).
    last_ack: Option<(u32, Message)>,
}

impl Drop for Signalling {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

enum Event {
    Message(Option<Message>),
    Timer,
}

impl Signalling {
    async fn connect(target: SocketAddr, transport: Transport) -> Result<Signalling, ReplayError> {
        let (tx, inbox) = mpsc::channel(64);
        let unspecified: IpAddr = if target.is_ipv4() {
            [0, 0, 0, 0].into()
        } else {
            [0u16; 8].into()
        };
        let (writer, reader, local) = match transport {
            Transport::Udp => {
                let socket = UdpSocket::bind(SocketAddr::new(unspecified, 0)).await?;
                // Connecting picks the route, so local_addr() is the address the gateway sees.
                socket.connect(target).await?;
                let socket = Arc::new(socket);
                let local = socket.local_addr()?;
                (
                    Writer::Udp(socket.clone()),
                    tokio::spawn(read_udp(socket, tx)),
                    local,
                )
            }
            Transport::Tcp => {
                let stream = TcpStream::connect(target).await?;
                let local = stream.local_addr()?;
                let (read, write) = stream.into_split();
                (Writer::Tcp(write), tokio::spawn(read_tcp(read, tx)), local)
            }
        };
        tracing::info!(%local, %target, ?transport, "connected to gateway");
        Ok(Signalling {
            writer,
            inbox,
            reader,
            local,
            last_ack: None,
        })
    }

    async fn send(&mut self, msg: &Message) -> Result<(), ReplayError> {
        let bytes = msg.to_bytes();
        match &mut self.writer {
            Writer::Udp(s) => {
                s.send(&bytes).await?;
            }
            Writer::Tcp(w) => w.write_all(&bytes).await?,
        }
        Ok(())
    }

    async fn ack(
        &mut self,
        invite: &Message,
        response: &Message,
        id: &Identity,
    ) -> Result<(), ReplayError> {
        let ack = rewrite::ack(invite, response, id);
        self.send(&ack).await?;
        if is_2xx(response) {
            self.last_ack = invite.cseq().map(|(n, _)| (n, ack));
        }
        Ok(())
    }

    async fn next_event(&mut self, deadline: Instant) -> Event {
        tokio::select! {
            m = self.inbox.recv() => Event::Message(m),
            _ = sleep_until(deadline) => Event::Timer,
        }
    }

    /// Sends `request` and waits for its final response, retransmitting over UDP.
    async fn transact(&mut self, request: &Message) -> Result<Message, ReplayError> {
        let method = request.method().unwrap_or_default().to_string();
        let our_branch = branch(request).map(str::to_string);
        let reliable = matches!(self.writer, Writer::Tcp(_));
        let mut timer = Retransmit::new(method == "INVITE", reliable);
        let start = now();
        self.send(request).await?;
        loop {
            let deadline = start + timer.next().unwrap_or(GIVE_UP);
            match self.next_event(deadline).await {
                Event::Message(None) => return Err(ReplayError::Closed),
                Event::Message(Some(m)) if m.method().is_some() => self.answer_request(&m).await?,
                Event::Message(Some(m)) => {
                    let ours = branch(&m) == our_branch.as_deref()
                        && m.cseq().is_some_and(|(_, meth)| meth == method);
                    match m.status() {
                        Some(s) if ours && s < 200 => timer.provisional(),
                        Some(_) if ours => return Ok(m),
                        _ => self.stray_response(&m).await?,
                    }
                }
                Event::Timer if now() >= start + GIVE_UP => {
                    tracing::error!(%method, "no final response within 32 s, giving up");
                    return Err(ReplayError::Timeout { method });
                }
                Event::Timer => {
                    tracing::debug!(%method, "retransmitting");
                    self.send(request).await?;
                    timer.fired();
                }
            }
        }
    }

    /// Waits until `deadline`, still answering whatever the gateway sends meanwhile.
    async fn idle_until(&mut self, deadline: Instant) -> Result<(), ReplayError> {
        loop {
            match self.next_event(deadline).await {
                Event::Timer => return Ok(()),
                Event::Message(None) => return Err(ReplayError::Closed),
                Event::Message(Some(m)) if m.method().is_some() => self.answer_request(&m).await?,
                Event::Message(Some(m)) => self.stray_response(&m).await?,
            }
        }
    }

    /// A retransmitted 2xx to the INVITE means our ACK was lost: send it again.
    async fn stray_response(&mut self, m: &Message) -> Result<(), ReplayError> {
        let retransmitted_2xx = is_2xx(m)
            && m.cseq().is_some_and(|(n, meth)| {
                meth == "INVITE" && self.last_ack.as_ref().is_some_and(|(c, _)| *c == n)
            });
        if let (true, Some((_, ack))) = (retransmitted_2xx, self.last_ack.clone()) {
            self.send(&ack).await?;
        }
        Ok(())
    }

    /// Requests from the gateway: BYE ends the replay, OPTIONS is answered, the rest refused.
    async fn answer_request(&mut self, m: &Message) -> Result<(), ReplayError> {
        match m.method() {
            Some("ACK") => Ok(()),
            Some("BYE") => {
                self.send(&m.response(200, "OK", None)).await?;
                tracing::warn!("gateway ended the session");
                Err(ReplayError::GatewayBye)
            }
            Some("OPTIONS") => self.send(&m.response(200, "OK", None)).await,
            _ => self.send(&m.response(501, "Not Implemented", None)).await,
        }
    }
}

async fn read_udp(socket: Arc<UdpSocket>, tx: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                if let Ok(m) = Message::parse_unchecked(&buf[..n])
                    && tx.send(m).await.is_err()
                {
                    return;
                }
            }
            // An ICMP port-unreachable from an earlier send (gateway not up yet): the UDP
            // retransmissions will try again.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::debug!("gateway port unreachable");
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIP socket receive failed");
                return;
            }
        }
    }
}

async fn read_tcp(mut read: tokio::net::tcp::OwnedReadHalf, tx: mpsc::Sender<Message>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; RECV_BUFFER];
    loop {
        let n = match read.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "SIP connection read failed");
                return;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let len = match message::frame(&buf) {
                Ok(Some(Framed::KeepAlive(n))) => {
                    buf.drain(..n);
                    continue;
                }
                Ok(Some(Framed::Message(n))) => n,
                Ok(None) => break,
                Err(e) => {
                    // Without framing nothing further on the connection can be read.
                    tracing::warn!(error = %e, "unframeable SIP from the gateway");
                    return;
                }
            };
            let frame: Vec<u8> = buf.drain(..len).collect();
            if let Ok(m) = Message::parse_unchecked(&frame)
                && tx.send(m).await.is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_ports_map_to_mlines_with_refused_and_held_streams_skipped() {
        let answer = Message::parse_unchecked(
            b"SIP/2.0 200 OK\r\nContent-Type: application/sdp\r\n\r\n\
              v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 0 RTP/AVP 0\r\n\
              m=audio 4004 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4006 RTP/AVP 0\r\nc=IN IP4 192.0.2.9\r\n",
        )
        .unwrap();
        let d = destinations(&answer, "198.51.100.1".parse().unwrap(), 5);
        assert_eq!(
            d,
            [
                Some("192.0.2.1:4000".parse().unwrap()),
                None,
                None,
                Some("192.0.2.9:4006".parse().unwrap()),
                None
            ]
        );
    }

    #[test]
    fn answer_without_sdp_sends_no_media() {
        let answer = Message::parse_unchecked(b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n").unwrap();
        assert_eq!(
            destinations(&answer, "198.51.100.1".parse().unwrap(), 2),
            [None, None]
        );
    }

    #[test]
    fn response_to_gateway_bye_copies_the_dialog_headers() {
        let bye = Message::parse(
            b"BYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP gw;branch=z9hG4bK1\r\nf: <sip:g>;tag=1\r\nTo: <sip:s>;tag=2\r\nCall-ID: c\r\nCSeq: 5 BYE\r\nMax-Forwards: 70\r\n\r\n",
        )
        .unwrap();
        let r = bye.response(200, "OK", None);
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.headers.len(), 5);
        assert_eq!(r.cseq(), Some((5, "BYE")));
        assert_eq!(branch(&r), Some("z9hG4bK1"));
        assert_eq!(r.tag("To"), Some("2"));
    }
}
