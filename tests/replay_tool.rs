//! End-to-end tests of the replay tool: `replay::run` plays the SRC side of the captures in
//! `pcaps/` against sipp acting as the SRS (scenarios in `tests/sipp/`). sipp answers each m-line
//! with the port of a UDP socket this test binds; the test counts the RTP that arrives there.
//!
//! Needs `sipp` on PATH (Debian package `sip-tester`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;

use siprec_gateway::replay::{self, ReplayError, ReplayOptions, Transport};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

const LOCALHOST: &str = "127.0.0.1";

fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A free UDP port for sipp's SIP socket: bound by us first so the kernel picks it, then released.
fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind((LOCALHOST, 0)).expect("bind");
    s.local_addr().expect("local addr").port()
}

/// sipp running one UAS call; the thread returns its exit status and output.
struct Sipp {
    addr: SocketAddr,
    done: JoinHandle<Output>,
}

impl Sipp {
    fn start(scenario: &str, media_ports: &[u16]) -> Sipp {
        let port = free_udp_port();
        let mut cmd = Command::new("sipp");
        cmd.arg("-sf")
            .arg(repo_path(&format!("tests/sipp/{scenario}")))
            .args([
                "-i",
                LOCALHOST,
                "-mi",
                LOCALHOST,
                "-p",
                &port.to_string(),
                "-t",
                "u1",
            ])
            .args(["-m", "1", "-nostdin", "-timeout", "60s", "-timeout_error"]);
        for (k, p) in media_ports.iter().enumerate() {
            cmd.arg("-key")
                .arg(format!("port_{}", char::from(b'a' + k as u8)))
                .arg(p.to_string());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .current_dir(std::env::temp_dir())
            .spawn()
            .expect("sipp is installed (Debian package sip-tester)");
        let done = std::thread::spawn(move || child.wait_with_output().expect("wait for sipp"));
        Sipp {
            addr: SocketAddr::new(LOCALHOST.parse().unwrap(), port),
            done,
        }
    }

    /// Waits for sipp to finish its one call; panics with its output if the call failed.
    fn finish(self) {
        let out = self.done.join().expect("sipp thread");
        assert!(
            out.status.success(),
            "sipp failed: {:?}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A UDP socket counting the datagrams that reach it.
struct Counter {
    port: u16,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<u64>,
}

impl Counter {
    async fn bind() -> Counter {
        let socket = UdpSocket::bind((LOCALHOST, 0))
            .await
            .expect("bind media socket");
        let port = socket.local_addr().unwrap().port();
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut n = 0;
            loop {
                tokio::select! {
                    r = socket.recv(&mut buf) => { r.expect("recv"); n += 1; }
                    _ = stopped.notified() => break,
                }
            }
            // Everything the replay sent is queued by now (loopback delivers during send).
            while socket.try_recv(&mut buf).is_ok() {
                n += 1;
            }
            n
        });
        Counter { port, stop, task }
    }

    async fn count(self) -> u64 {
        self.stop.notify_one();
        self.task.await.expect("counter task")
    }
}

struct Outcome {
    report: replay::ReplayReport,
    received: Vec<u64>,
    ports: Vec<u16>,
}

/// Replays `capture` over UDP at speed 4 against sipp answering with `answered` media sockets
/// and `refused` extra m-lines on port 0.
async fn replay_against_sipp(
    capture: &str,
    scenario: &str,
    answered: usize,
    refused: usize,
) -> Outcome {
    let mut counters = Vec::new();
    for _ in 0..answered {
        counters.push(Counter::bind().await);
    }
    let mut ports: Vec<u16> = counters.iter().map(|c| c.port).collect();
    ports.extend(std::iter::repeat_n(0, refused));
    let sipp = Sipp::start(scenario, &ports);
    let opts = ReplayOptions {
        pcap: repo_path(&format!("pcaps/{capture}")),
        target: sipp.addr,
        transport: Transport::Udp,
        speed: 4.0,
    };
    let report = replay::run(&opts).await.expect("replay ran");
    let mut received = Vec::new();
    for c in counters {
        received.push(c.count().await);
    }
    sipp.finish();
    Outcome {
        report,
        received,
        ports,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_capture_replay_sends_each_stream_to_its_answered_port() {
    let out = replay_against_sipp("siprec-2stream-udp.pcap", "srs_2stream_pcmu.xml", 2, 0).await;
    assert_eq!(out.report.invite_status, 200);
    assert_eq!(out.report.bye_status, Some(200));
    assert!(out.report.succeeded());
    assert_eq!(out.report.streams, 2);
    assert_eq!(out.report.answered_ports, out.ports);
    // pcaps/README.md: stream 1 350 packets, stream 2 250 (paused 2 s).
    assert_eq!(out.received, [350, 250]);
    assert_eq!(out.report.rtp_packets_sent, 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pcapng_capture_replays_over_udp_with_the_same_media() {
    let out = replay_against_sipp("siprec-2stream-tcp.pcapng", "srs_2stream_pcmu.xml", 2, 0).await;
    assert!(out.report.succeeded(), "{:?}", out.report);
    assert_eq!(out.received, [350, 250]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_answered_on_port_zero_is_skipped() {
    let out =
        replay_against_sipp("siprec-3stream-sll-frag.pcap", "srs_3stream_pcma.xml", 2, 1).await;
    assert!(out.report.succeeded(), "{:?}", out.report);
    assert_eq!(out.report.streams, 3);
    assert_eq!(out.report.answered_ports[2], 0);
    // pcaps/README.md: streams of 300, 200 (paused 2 s) and 300 packets; the third is refused.
    assert_eq!(out.received, [300, 200]);
    assert_eq!(out.report.rtp_packets_sent, 500);
}

#[tokio::test]
async fn bad_speed_and_missing_capture_are_errors() {
    let mut opts = ReplayOptions {
        pcap: repo_path("pcaps/siprec-2stream-udp.pcap"),
        target: "127.0.0.1:9".parse().unwrap(),
        transport: Transport::Udp,
        speed: 0.0,
    };
    assert!(matches!(
        replay::run(&opts).await,
        Err(ReplayError::Speed(_))
    ));
    opts.speed = 1.0;
    opts.pcap = repo_path("pcaps/does-not-exist.pcap");
    assert!(matches!(
        replay::run(&opts).await,
        Err(ReplayError::Read { .. })
    ));
}

/// A minimal SRS on TCP (sipp's TCP mode cannot be told apart from "not listening yet" without
/// polling): 100 and a recvonly 200 answering with `ports` for the INVITE, 200 for the BYE.
/// Returns the requests it received.
async fn tcp_srs(listener: tokio::net::TcpListener, ports: Vec<u16>) -> Vec<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut stream, _) = listener.accept().await.expect("accept");
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    loop {
        let text = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length:"))
                    .map_or(0, |v| v.trim().parse().expect("Content-Length"));
                if buf.len() >= end + 4 + len {
                    break String::from_utf8(buf.drain(..end + 4 + len).collect()).expect("UTF-8");
                }
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "replay closed the connection early; saw {seen:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        seen.push(text.lines().next().unwrap_or_default().to_string());
        let copy: String = text
            .lines()
            .filter(|l| {
                ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                    .iter()
                    .any(|h| l.starts_with(h))
            })
            .map(|l| {
                if l.starts_with("To:") && !l.contains("tag=") {
                    format!("{l};tag=gw1\r\n")
                } else {
                    format!("{l}\r\n")
                }
            })
            .collect();
        let reply = |status: &str, body: &str| {
            let ctype = if body.is_empty() {
                ""
            } else {
                "Content-Type: application/sdp\r\n"
            };
            format!(
                "SIP/2.0 {status}\r\n{copy}{ctype}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        if text.starts_with("INVITE ") {
            let mut sdp = String::from(
                "v=0\r\no=GW 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n",
            );
            for p in &ports {
                sdp.push_str(&format!("m=audio {p} RTP/AVP 0\r\na=recvonly\r\n"));
            }
            let out = reply("100 Trying", "") + &reply("200 OK", &sdp);
            stream.write_all(out.as_bytes()).await.expect("write");
        } else if text.starts_with("BYE ") {
            stream
                .write_all(reply("200 OK", "").as_bytes())
                .await
                .expect("write");
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_transport_replay_runs_the_dialog_on_one_connection() {
    let counters = [Counter::bind().await, Counter::bind().await];
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0))
        .await
        .expect("bind");
    let target = listener.local_addr().unwrap();
    let srs = tokio::spawn(tcp_srs(listener, counters.iter().map(|c| c.port).collect()));
    let opts = ReplayOptions {
        pcap: repo_path("pcaps/siprec-2stream-udp.pcap"),
        target,
        transport: Transport::Tcp,
        speed: 4.0,
    };
    let report = replay::run(&opts).await.expect("replay ran");
    let seen = srs.await.expect("srs task");
    assert!(report.succeeded(), "{report:?}");
    let methods: Vec<_> = seen.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(methods, ["INVITE", "ACK", "BYE"]);
    let [a, b] = counters;
    assert_eq!([a.count().await, b.count().await], [350, 250]);
}
