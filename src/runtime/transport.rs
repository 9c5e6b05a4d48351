//! SIP transports: UDP sockets and TCP listeners that turn bytes into framed messages for the
//! signalling task, and carry its answers back.
//!
//! UDP datagrams are read whole into a 64 KiB buffer (a 20 KB SIPREC INVITE arrives as one
//! datagram after the kernel reassembles its fragments). TCP is framed by Content-Length, many
//! messages per connection, answers on the same connection; a connection whose buffered bytes
//! exceed the largest message is closed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

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

/// Accepts TCP connections; connection ids start at `first_conn` and grow.
pub async fn tcp_acceptor(listener: TcpListener, first_conn: u64, tx: mpsc::Sender<Inbound>) {
    let mut next = first_conn;
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let conn = next;
                next += 1;
                debug!(%remote, conn, "tcp connection");
                tokio::spawn(tcp_connection(stream, remote, conn, tx.clone()));
            }
            Err(e) => {
                warn!(error = %e, "tcp accept failed");
                // EMFILE and friends: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn tcp_connection(stream: TcpStream, remote: SocketAddr, conn: u64, tx: mpsc::Sender<Inbound>) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else { return };
    let (mut rd, mut wr) = stream.into_split();
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
        }
    });
    let peer = Peer { transport: Transport::Tcp, remote, local, conn: Some(conn) };
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
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
                    info!(%remote, error = %e, "closing tcp connection: unframeable SIP stream");
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
