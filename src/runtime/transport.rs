//! SIP transports: UDP sockets and TCP/TLS listeners that turn bytes into framed messages for
//! the signalling task, and carry its answers back.
//!
//! UDP datagrams are read whole into a 64 KiB buffer (a 20 KB SIPREC INVITE arrives as one
//! datagram after the kernel reassembles its fragments). TCP and TLS are framed by
//! Content-Length, many messages per connection, answers on the same connection; a connection
//! whose buffered bytes exceed the largest message is closed, and so is one idle for
//! `limits.tcp_idle_timeout` or stalled mid-message for `limits.tcp_message_timeout`. Each
//! source may hold `limits.max_connections_per_source` connections. The TLS handshake itself
//! is `tls`'s configuration; this module does not decide who may record.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::tls::TlsContext;
use crate::clock;
use crate::limits::{ConnectionCount, LogGate};
use crate::sip::message::{self, Framed, MAX_MESSAGE_SIZE};
use crate::sip::{Peer, Transport};

/// What the transports hand the signalling task.
#[derive(Debug)]
pub enum Inbound {
    Message { peer: Peer, bytes: Vec<u8> },
    /// A TCP connection opened: its writer.
    Opened { conn: u64, tx: mpsc::UnboundedSender<Vec<u8>> },
    Closed { conn: u64 },
}

/// The address of this host that `remote` would be reached from (the kernel's route choice),
/// used where a socket is bound to the unspecified address.
pub fn local_ip_toward(remote: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if remote.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(remote).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// Binds a UDP SIP socket with a large receive buffer (bursts of retransmissions after an SBC
/// failover must not be dropped by the kernel).
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(e) = s.set_recv_buffer_size(4 * 1024 * 1024) {
        debug!(error = %e, "cannot raise SIP socket receive buffer");
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Reads datagrams from `socket` (the `index`th UDP listener) until the channel closes.
pub async fn udp_reader(index: u64, socket: Arc<UdpSocket>, tx: mpsc::Sender<Inbound>) {
    let bound = match socket.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut buf = vec![0u8; 65_536];
    let mut routes: HashMap<IpAddr, IpAddr> = HashMap::new();
    loop {
        let (n, remote) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors surface here on Linux; they do not end the listener.
                debug!(error = %e, "udp recv error");
                continue;
            }
        };
        let local_ip = if bound.ip().is_unspecified() {
            *routes.entry(remote.ip()).or_insert_with(|| local_ip_toward(remote).unwrap_or(bound.ip()))
        } else {
            bound.ip()
        };
        let peer =
            Peer { transport: Transport::Udp, remote, local: SocketAddr::new(local_ip, bound.port()), conn: Some(index) };
        if tx.send(Inbound::Message { peer, bytes: buf[..n].to_vec() }).await.is_err() {
            return;
        }
    }
}

/// Limits on stream (TCP and TLS) connections, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// A connection with no byte for this long is closed.
    pub idle_timeout: Duration,
    /// A connection holding part of a message with no byte more for this long is closed
    /// (slow-loris); also the time a TLS handshake may take.
    pub message_timeout: Duration,
}

/// State shared by every stream listener: open connections per source and the refusal log gate.
#[derive(Debug)]
pub struct StreamGuard {
    counts: Mutex<ConnectionCount>,
    gate: Mutex<LogGate>,
    limits: StreamLimits,
}

impl StreamGuard {
    pub fn new(max_per_source: usize, limits: StreamLimits) -> Arc<Self> {
        Arc::new(StreamGuard {
            counts: Mutex::new(ConnectionCount::new(max_per_source)),
            gate: Mutex::new(LogGate::default()),
            limits,
        })
    }

    /// Whether a refusal concerning `source` may be logged now (one line per source per 10 s);
    /// `Some(n)`: `n` refusals were held back since the last line.
    fn may_log(&self, source: IpAddr) -> Option<u64> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner()).admit(source, clock::now())
    }
}

/// Releases a connection's place in the per-source count when the connection ends.
struct Counted {
    guard: Arc<StreamGuard>,
    source: IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.guard.counts.lock().unwrap_or_else(|e| e.into_inner()).close(self.source);
    }
}

/// Accepts TCP connections, or TLS ones when `tls` is given; connection ids start at
/// `first_conn` and grow. A source already holding `limits.max_connections_per_source`
/// connections has the new one closed at once.
pub async fn stream_acceptor(
    listener: TcpListener,
    tls: Option<Arc<TlsContext>>,
    first_conn: u64,
    guard: Arc<StreamGuard>,
    tx: mpsc::Sender<Inbound>,
) {
    let mut next = first_conn;
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let admitted = guard.counts.lock().unwrap_or_else(|e| e.into_inner()).try_open(remote.ip());
                if !admitted {
                    if let Some(held) = guard.may_log(remote.ip()) {
                        warn!(%remote, also_refused = held, "connection closed: limits.max_connections_per_source reached for this source");
                    }
                    drop(stream);
                    continue;
                }
                let counted = Counted { guard: guard.clone(), source: remote.ip() };
                debug!(%remote, conn = next, tls = tls.is_some(), "stream connection");
                tokio::spawn(serve(stream, remote, next, tls.clone(), counted, tx.clone()));
                next += 1;
            }
            Err(e) => {
                warn!(error = %e, "tcp accept failed");
                // EMFILE and friends: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs one accepted connection: the TLS handshake when `tls` is given (bounded by
/// `limits.tcp_message_timeout`), then the framing loop. `counted` holds its place in the
/// per-source count until it ends.
async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    conn: u64,
    tls: Option<Arc<TlsContext>>,
    counted: Counted,
    tx: mpsc::Sender<Inbound>,
) {
    let guard = counted.guard.clone();
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else { return };
    let Some(tls) = tls else {
        let peer = Peer { transport: Transport::Tcp, remote, local, conn: Some(conn) };
        return stream_connection(stream, peer, &guard, tx).await;
    };
    match tokio::time::timeout(guard.limits.message_timeout, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => {
            let peer = Peer { transport: Transport::Tls, remote, local, conn: Some(conn) };
            stream_connection(stream, peer, &guard, tx).await;
        }
        // A client without an acceptable certificate (mutual TLS), or not speaking TLS.
        Ok(Err(e)) => {
            if let Some(held) = guard.may_log(remote.ip()) {
                info!(%remote, error = %e, also_refused = held, "TLS handshake refused");
            }
        }
        Err(_) => {
            if let Some(held) = guard.may_log(remote.ip()) {
                info!(%remote, also_refused = held, "TLS handshake not finished within limits.tcp_message_timeout: connection closed");
            }
        }
    }
    drop(counted);
}

/// Frames SIP messages off one TCP or TLS connection (`peer` says which) and writes what the
/// signalling task sends back, until either side closes or a limit closes it.
async fn stream_connection<S>(stream: S, peer: Peer, guard: &StreamGuard, tx: mpsc::Sender<Inbound>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let limits = guard.limits;
    let (remote, conn) = (peer.remote, peer.conn.unwrap_or_default());
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
    let pong = wtx.clone();
    if tx.send(Inbound::Opened { conn, tx: wtx }).await.is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(bytes) = wrx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
            // TLS buffers a record until flushed.
            if wr.flush().await.is_err() {
                break;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        // SBCs keep idle connections for reuse, so the idle limit is long; a connection that
        // stopped in the middle of a message is holding our memory for nothing.
        let idle = buf.is_empty();
        let wait = if idle { limits.idle_timeout } else { limits.message_timeout };
        let n = match tokio::time::timeout(wait, rd.read(&mut chunk)).await {
            // Idle connections end rarely (minutes apart); stalled ones may be an attack.
            Err(_) if idle => {
                info!(%remote, transport = ?peer.transport, reason = "no bytes for limits.tcp_idle_timeout", "closing connection");
                break;
            }
            Err(_) => {
                if let Some(held) = guard.may_log(remote.ip()) {
                    let reason = "partial message not completed within limits.tcp_message_timeout";
                    info!(%remote, transport = ?peer.transport, reason, also_refused = held, "closing connection");
                }
                break;
            }
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match message::frame(&buf) {
                Ok(Some(Framed::KeepAlive(k))) => {
                    // RFC 5626 §3.5.1: a double CRLF ping gets a single CRLF pong.
                    if buf[..k].windows(4).any(|w| w == b"\r\n\r\n") {
                        let _ = pong.send(b"\r\n".to_vec());
                    }
                    buf.drain(..k);
                }
                Ok(Some(Framed::Message(len))) => {
                    let bytes: Vec<u8> = buf.drain(..len).collect();
                    if tx.send(Inbound::Message { peer, bytes }).await.is_err() {
                        break 'read;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    info!(%remote, error = %e, "closing connection: unframeable SIP stream");
                    break 'read;
                }
            }
        }
        if buf.len() > MAX_MESSAGE_SIZE {
            break;
        }
    }
    writer.abort();
    let _ = tx.send(Inbound::Closed { conn }).await;
}
