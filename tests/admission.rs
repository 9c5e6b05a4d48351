//! Admission control and drain against the real binary, with plain UDP and TCP sockets: the
//! source allow-list, the call limit, connections per source, idle and slow-loris TCP
//! connections, and OPTIONS answered 503 while the gateway drains.

mod support;

use std::time::Duration;

use support::gateway::Gateway;
use support::sip_client::{UdpPeer, connect_tcp, in_dialog, invite, options};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_source_outside_allow_from_gets_403_and_options_still_200_by_default() {
    let gw = Gateway::start("[limits]\nallow_from = [\"192.0.2.0/24\", \"::1\"]\n");
    let src = UdpPeer::bind(gw.udp_addr()).await;
    for i in 0..5 {
        src.send(&invite("UDP", src.local, &format!("denied-{i}@test"))).await;
        assert_eq!(src.final_response().await.status(), Some(403));
    }
    src.send(&options("UDP", src.local, "anyone")).await;
    assert_eq!(src.final_response().await.status(), Some(200));
    // Five refusals, one log line (the rest are held back for 10 s).
    let log = gw.log();
    assert_eq!(log.matches("source not in limits.allow_from").count(), 1, "{log}");
    assert!(!log.contains("recording started"), "{log}");
}

#[tokio::test]
async fn options_from_outside_allow_from_gets_403_when_not_for_anyone() {
    let gw = Gateway::start("[limits]\nallow_from = [\"192.0.2.0/24\"]\noptions_from_anyone = false\n");
    let src = UdpPeer::bind(gw.udp_addr()).await;
    src.send(&options("UDP", src.local, "denied")).await;
    assert_eq!(src.final_response().await.status(), Some(403));
}

#[tokio::test]
async fn an_allowed_source_records_as_usual() {
    let gw = Gateway::start("[limits]\nallow_from = [\"127.0.0.0/8\"]\n");
    let src = UdpPeer::bind(gw.udp_addr()).await;
    let call_id = "allowed@test";
    src.send(&invite("UDP", src.local, call_id)).await;
    let ok = src.final_response().await;
    assert_eq!(ok.status(), Some(200));
    src.send(&in_dialog("ACK", 1, "UDP", src.local, call_id, &ok)).await;
    src.send(&in_dialog("BYE", 2, "UDP", src.local, call_id, &ok)).await;
    assert_eq!(src.final_response().await.status(), Some(200));
    assert_eq!(gw.wait_for_recording(1, WAIT).info["sessionId"], call_id);
}

#[tokio::test]
async fn a_call_above_max_calls_gets_503_with_retry_after_and_the_first_goes_on() {
    let gw = Gateway::start("[limits]\nmax_calls = 1\n");
    let src = UdpPeer::bind(gw.udp_addr()).await;
    src.send(&invite("UDP", src.local, "first@test")).await;
    let ok = src.final_response().await;
    assert_eq!(ok.status(), Some(200));
    src.send(&in_dialog("ACK", 1, "UDP", src.local, "first@test", &ok)).await;

    src.send(&invite("UDP", src.local, "second@test")).await;
    let busy = src.final_response().await;
    assert_eq!(busy.status(), Some(503));
    assert!(busy.header("Retry-After").is_some(), "503 without Retry-After");
    gw.wait_for_log("limits.max_calls reached", WAIT);

    src.send(&in_dialog("BYE", 2, "UDP", src.local, "first@test", &ok)).await;
    assert_eq!(src.final_response().await.status(), Some(200));
    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.info["sessionId"], "first@test");
    assert_eq!(rec.info["metaData"]["gateway"]["endReason"], "bye");
}

#[tokio::test]
async fn connections_above_the_per_source_limit_are_closed_at_accept() {
    let gw = Gateway::start("[limits]\nmax_connections_per_source = 2\n");
    let mut a = connect_tcp(gw.tcp_addr()).await.unwrap();
    let mut b = connect_tcp(gw.tcp_addr()).await.unwrap();
    let mut c = connect_tcp(gw.tcp_addr()).await.unwrap();
    c.closed_within(WAIT).await.expect("third connection from one source");
    gw.wait_for_log("limits.max_connections_per_source", WAIT);
    for peer in [&mut a, &mut b] {
        peer.send(&options("TCP", peer.local, &peer.local.port().to_string())).await.unwrap();
        assert_eq!(peer.final_response().await.unwrap().status(), Some(200));
    }
    // A closed connection frees its place (once the gateway has seen the close).
    drop(a);
    let status = loop {
        let mut d = connect_tcp(gw.tcp_addr()).await.unwrap();
        d.send(&options("TCP", d.local, "d")).await.unwrap();
        if let Ok(m) = d.final_response().await {
            break m.status();
        }
    };
    assert_eq!(status, Some(200));
}

#[tokio::test]
async fn a_half_sent_message_is_closed_after_tcp_message_timeout_but_a_keepalive_connection_lives() {
    let gw = Gateway::start("[limits]\ntcp_message_timeout = \"1s\"\ntcp_idle_timeout = \"3s\"\n");
    let mut loris = connect_tcp(gw.tcp_addr()).await.unwrap();
    let mut sbc = connect_tcp(gw.tcp_addr()).await.unwrap();
    let t0 = siprec_gateway::clock::now();
    loris.send("OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP").await.unwrap();
    loris.closed_within(Duration::from_secs(5)).await.expect("slow-loris connection");
    assert!(siprec_gateway::clock::now() - t0 >= Duration::from_millis(900), "closed before tcp_message_timeout");
    gw.wait_for_log("tcp_message_timeout", WAIT);

    // Keep-alives (RFC 5626 double CRLF) count as traffic: past tcp_idle_timeout it is alive.
    for _ in 0..4 {
        sbc.send("\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    sbc.send(&options("TCP", sbc.local, "alive")).await.unwrap();
    assert_eq!(sbc.final_response().await.unwrap().status(), Some(200));
    // Then silence: closed after the idle timeout.
    sbc.closed_within(Duration::from_secs(6)).await.expect("idle connection");
    gw.wait_for_log("tcp_idle_timeout", WAIT);
}

#[tokio::test]
async fn options_get_503_while_draining_so_the_sbc_moves_new_calls_elsewhere() {
    drain_answers_options_503(Gateway::sigterm).await;
}

#[tokio::test]
async fn sigint_drains_like_sigterm() {
    drain_answers_options_503(Gateway::sigint).await;
}

/// With a call in progress, `signal` starts the drain: OPTIONS and new INVITEs get 503, the
/// call goes on to its BYE, and the gateway exits once it is recorded.
async fn drain_answers_options_503(signal: fn(&Gateway)) {
    let mut gw = Gateway::start("[service]\nshutdown_grace = \"30s\"\n");
    let src = UdpPeer::bind(gw.udp_addr()).await;
    src.send(&options("UDP", src.local, "before")).await;
    assert_eq!(src.final_response().await.status(), Some(200));
    // A call in progress keeps the gateway draining rather than gone.
    let call_id = "draining@test";
    src.send(&invite("UDP", src.local, call_id)).await;
    let ok = src.final_response().await;
    assert_eq!(ok.status(), Some(200));
    src.send(&in_dialog("ACK", 1, "UDP", src.local, call_id, &ok)).await;

    signal(&gw);
    gw.wait_for_log("shutting down", WAIT);
    src.send(&options("UDP", src.local, "during")).await;
    let answer = src.final_response().await;
    assert_eq!(answer.status(), Some(503));
    assert!(answer.header("Retry-After").is_some());
    src.send(&invite("UDP", src.local, "late@test")).await;
    assert_eq!(src.final_response().await.status(), Some(503));

    src.send(&in_dialog("BYE", 2, "UDP", src.local, call_id, &ok)).await;
    assert_eq!(src.final_response().await.status(), Some(200));
    assert!(gw.wait_exit(WAIT).success());
    assert_eq!(gw.read_recording(&siprec_gateway::session::file_name(call_id)).info["sessionId"], call_id);
}

#[tokio::test]
async fn a_flood_from_a_source_not_allowed_changes_nothing_for_a_call_in_progress() {
    let gw = Gateway::start("[limits]\nallow_from = [\"127.0.0.1\"]\n");
    let src = UdpPeer::bind(gw.udp_addr()).await;
    let call_id = "under-flood@test";
    src.send(&invite("UDP", src.local, call_id)).await;
    let ok = src.final_response().await;
    assert_eq!(ok.status(), Some(200));
    src.send(&in_dialog("ACK", 1, "UDP", src.local, call_id, &ok)).await;

    // Another loopback address: not in allow_from.
    let flood = tokio::net::UdpSocket::bind("127.0.0.2:0").await.expect("bind 127.0.0.2");
    let flood_addr = flood.local_addr().unwrap();
    for i in 0..300 {
        let text = invite("UDP", flood_addr, &format!("flood-{i}@test"));
        flood.send_to(text.as_bytes(), gw.udp_addr()).await.unwrap();
        flood.send_to(b"\x00\x01garbage\r\n\r\n", gw.udp_addr()).await.unwrap();
    }
    // The flood has been handled once the last INVITE's 403 is here. Our receive buffer may
    // overflow with answers, so that INVITE is retransmitted (it gets its 403 again) until then.
    let last = invite("UDP", flood_addr, "flood-299@test");
    let mut buf = vec![0u8; 65536];
    let mut status = None;
    for _ in 0..20 {
        flood.send_to(last.as_bytes(), gw.udp_addr()).await.unwrap();
        let deadline = tokio::time::Instant::from_std(siprec_gateway::clock::now() + Duration::from_secs(1));
        while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, flood.recv_from(&mut buf)).await {
            let m = siprec_gateway::sip::Message::parse(&buf[..n]).unwrap();
            if m.call_id() == "flood-299@test" && m.status().is_some_and(|c| c >= 200) {
                status = m.status();
                break;
            }
        }
        if status.is_some() {
            break;
        }
    }
    assert_eq!(status, Some(403));

    src.send(&in_dialog("BYE", 2, "UDP", src.local, call_id, &ok)).await;
    assert_eq!(src.final_response().await.status(), Some(200));
    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.info["sessionId"], call_id);
    assert_eq!(rec.info["metaData"]["gateway"]["endReason"], "bye");
    let log = gw.log();
    assert_eq!(log.matches("source not in limits.allow_from").count(), 1, "one line for the whole flood:\n{log}");
    assert_eq!(log.matches("recording started").count(), 1, "{log}");
}
