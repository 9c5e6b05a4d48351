//! A minimal hand-driven SIP peer for the tests that need what sipp cannot do here: TLS (with
//! or without a client certificate), several connections from one source, half-written
//! messages. It writes requests as text and reads responses with the crate's own framing and
//! parser; every read has a deadline so a silent gateway fails the test instead of hanging it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use siprec_gateway::sip::message::{self, Framed, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// How long a read waits for the gateway.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `tests/fixtures/tls/<name>`.
pub fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// The harness's `[sip]` for a gateway with a TLS listener, plus `extra` lines in `[sip]`.
pub fn tls_config(extra: &str) -> String {
    format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\n\
         tls_certificate = {:?}\ntls_private_key = {:?}\n{extra}\n",
        tls_fixture("server.pem"),
        tls_fixture("server.key"),
    )
}

/// A TLS client trusting the test CA, presenting `client.pem` when `with_cert`.
pub fn tls_connector(with_cert: bool) -> TlsConnector {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(tls_fixture("ca.pem")).expect("ca.pem") {
        roots.add(cert.expect("ca.pem cert")).expect("add root");
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = if with_cert {
        let certs = CertificateDer::pem_file_iter(tls_fixture("client.pem"))
            .expect("client.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("client cert");
        let key = PrivateKeyDer::from_pem_file(tls_fixture("client.key")).expect("client.key");
        builder
            .with_client_auth_cert(certs, key)
            .expect("client auth")
    } else {
        builder.with_no_client_auth()
    };
    TlsConnector::from(Arc::new(config))
}

/// One stream connection (TCP or TLS) to the gateway.
pub struct StreamPeer<S> {
    stream: S,
    buf: Vec<u8>,
    /// Our side of the connection (for Via and Contact).
    pub local: SocketAddr,
    /// `"TCP"` or `"TLS"`, for Via.
    pub via: &'static str,
}

/// Connects over TLS with the test CA (and the client certificate when `with_cert`).
pub async fn connect_tls(
    addr: SocketAddr,
    with_cert: bool,
) -> std::io::Result<StreamPeer<tokio_rustls::client::TlsStream<TcpStream>>> {
    let tcp = TcpStream::connect(addr).await?;
    let local = tcp.local_addr()?;
    let name = ServerName::try_from("localhost").expect("server name");
    let stream = tls_connector(with_cert).connect(name, tcp).await?;
    Ok(StreamPeer {
        stream,
        buf: Vec::new(),
        local,
        via: "TLS",
    })
}

/// Connects over plain TCP.
pub async fn connect_tcp(addr: SocketAddr) -> std::io::Result<StreamPeer<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    let local = stream.local_addr()?;
    Ok(StreamPeer {
        stream,
        buf: Vec::new(),
        local,
        via: "TCP",
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin> StreamPeer<S> {
    pub async fn send(&mut self, text: &str) -> std::io::Result<()> {
        self.stream.write_all(text.as_bytes()).await?;
        self.stream.flush().await
    }

    /// The next whole SIP message (keep-alives skipped). Err on close, error or timeout.
    pub async fn read(&mut self) -> std::io::Result<Message> {
        let mut chunk = [0u8; 8192];
        loop {
            match message::frame(&self.buf) {
                Ok(Some(Framed::KeepAlive(k))) => {
                    self.buf.drain(..k);
                    continue;
                }
                Ok(Some(Framed::Message(len))) => {
                    let bytes: Vec<u8> = self.buf.drain(..len).collect();
                    return Message::parse(&bytes)
                        .map_err(|e| std::io::Error::other(format!("{e:?}")));
                }
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(format!("{e:?}"))),
            }
            let n = tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut chunk))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no message from the gateway")
                })??;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next final response (1xx skipped).
    pub async fn final_response(&mut self) -> std::io::Result<Message> {
        loop {
            let m = self.read().await?;
            if m.status().is_some_and(|c| c >= 200) {
                return Ok(m);
            }
        }
    }

    /// Waits for the gateway to close the connection: Ok(()) on end of stream (or reset);
    /// Err if something else arrives or `within` passes.
    pub async fn closed_within(&mut self, within: Duration) -> Result<(), String> {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(within, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Ok(()),
            Ok(Ok(n)) => Err(format!("got {n} bytes instead of a close")),
            Err(_) => Err(format!("still open after {within:?}")),
        }
    }
}

/// A UDP SIP peer.
pub struct UdpPeer {
    socket: UdpSocket,
    pub local: SocketAddr,
    target: SocketAddr,
}

impl UdpPeer {
    pub async fn bind(target: SocketAddr) -> UdpPeer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let local = socket.local_addr().expect("local addr");
        UdpPeer {
            socket,
            local,
            target,
        }
    }

    pub async fn send(&self, text: &str) {
        self.socket
            .send_to(text.as_bytes(), self.target)
            .await
            .expect("send");
    }

    pub async fn read(&self) -> Message {
        let mut buf = vec![0u8; 65536];
        let (n, _) = tokio::time::timeout(READ_TIMEOUT, self.socket.recv_from(&mut buf))
            .await
            .expect("no datagram from the gateway")
            .expect("recv");
        Message::parse(&buf[..n]).expect("parse")
    }

    /// The next final response (1xx skipped).
    pub async fn final_response(&self) -> Message {
        loop {
            let m = self.read().await;
            if m.status().is_some_and(|c| c >= 200) {
                return m;
            }
        }
    }
}

/// An out-of-dialog OPTIONS from `local` over `via` (`"UDP"`, `"TCP"`, `"TLS"`).
pub fn options(via: &str, local: SocketAddr, branch: &str) -> String {
    format!(
        "OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{via} {local};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:sbc@example.com>;tag=o{branch}\r\nTo: <sip:srs@example.com>\r\n\
         Call-ID: options-{branch}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A two-stream PCMU INVITE (plain SDP, labels 1 and 2) with Call-ID `call_id`.
pub fn invite(via: &str, local: SocketAddr, call_id: &str) -> String {
    let scheme = if via == "TLS" { "sips" } else { "sip" };
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n\
               m=audio 40002 RTP/AVP 0\r\na=label:2\r\na=sendonly\r\n";
    format!(
        "INVITE {scheme}:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{via} {local};branch=z9hG4bK-inv-{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:src@example.com>;tag=src-{call_id}\r\nTo: <sip:srs@example.com>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <{scheme}:src@{local};transport={}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        via.to_ascii_lowercase(),
        sdp.len()
    )
}

/// An in-dialog request (`ACK` or `BYE`) for the call `invite(…, call_id)` answered by `ok`.
pub fn in_dialog(
    method: &str,
    cseq: u32,
    via: &str,
    local: SocketAddr,
    call_id: &str,
    ok: &Message,
) -> String {
    let to = ok.header("To").expect("To in 200");
    let target = ok.header("Contact").expect("Contact in 200");
    let uri = target
        .trim()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or("");
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{via} {local};branch=z9hG4bK-{method}-{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:src@example.com>;tag=src-{call_id}\r\nTo: {to}\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// 200 OK to a request the gateway sent (its BYE).
pub fn ok_to(request: &Message) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for v in request.headers_named(name) {
            out.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}
