//! What the real gateway binary records: the project's captures replayed against it at
//! speed 1 with `siprec-gateway replay` (see pcaps/README.md for what each holds), and calls
//! from sipp that the gateway itself ends (RTP timeout, shutdown drain). Each test starts its
//! own gateway and reads the WAV and info it writes to the local output directory.
//!
//! Needs `sipp` on PATH for the tests that use it (Debian package `sip-tester`).

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use support::audio::ulaw_tone;
use support::gateway::{self, Gateway, Recording, log_field, log_time};
use support::sipp::SippCall;

/// A guard against hanging; every wait ends earlier when things work.
const WAIT: Duration = Duration::from_secs(20);
/// Tones in the captures: 12000/32767 peak, so this RMS (pcaps/README.md: about -11.7 dBFS).
const CAPTURE_RMS: f64 = 12000.0 / std::f64::consts::SQRT_2;
/// How far a pause edge in the WAV may be from where the capture puts it.
const EDGE_TOLERANCE: f64 = 0.040;

#[track_caller]
fn assert_close(what: &str, got: f64, expected: f64, tolerance: f64) {
    assert!(
        (got - expected).abs() <= tolerance,
        "{what}: {got:.3} s, expected {expected:.3} ± {tolerance:.3} s"
    );
}

/// Replays `capture` against a fresh gateway and returns the gateway, the Call-ID the
/// replay used (from the gateway's log of the BYE) and the recording.
fn record_capture(capture: &str, tcp: bool, config: &str) -> (Gateway, String, Recording) {
    let gw = Gateway::start(config);
    let target = if tcp { gw.tcp_addr() } else { gw.udp_addr() };
    let replay_log = gateway::replay(capture, target, tcp);
    let transport = if tcp {
        "transport=Tcp"
    } else {
        "transport=Udp"
    };
    assert!(
        replay_log.contains(transport),
        "replay did not use {transport}:\n{replay_log}"
    );
    let bye = gw.wait_for_log("BYE from the SRC", WAIT);
    let call_id = log_field(&bye, "call_id")
        .expect("call_id in the BYE log line")
        .to_owned();
    let rec = gw.wait_for_recording(1, WAIT);
    (gw, call_id, rec)
}

/// The checks every replayed capture passes: length, info fields, contacts, stream 1's tone.
fn check_common(capture: &str, call_id: &str, rec: &Recording, channels: usize, media_s: f64) {
    let info = &rec.info;
    assert_eq!(rec.wav.spec.sample_rate, 8000);
    assert_eq!(rec.wav.channels.len(), channels, "one channel per stream");
    let wav_s = rec.wav.seconds();
    assert_close(
        "WAV length against endTime - startTime",
        wav_s,
        rec.info_seconds(),
        0.020,
    );
    // The BYE comes about 50 ms after the last packet, which ends ~0.06 s after the INVITE.
    assert!(
        wav_s > media_s && wav_s < media_s + 0.3,
        "WAV lasts {wav_s:.3} s for {media_s} s of media"
    );

    assert_eq!(rec.first_null(), None, "{info:#}");
    assert_eq!(
        info["sessionId"], call_id,
        "sessionId is the recording session's Call-ID"
    );
    assert_eq!(rec.name, siprec_gateway::session::file_name(call_id));
    assert_eq!(
        info["masterCallId"],
        gateway::capture_sip_session_id(capture),
        "from the metadata's sipSessionID"
    );
    assert_eq!(info["audio"]["format"], "wav");
    assert_eq!(info["direction"], "Unknown");
    let contacts = info["contacts"].as_array().expect("contacts");
    assert_eq!(contacts.len(), 2, "customer and agent: {info:#}");
    assert_eq!(
        (
            &contacts[0]["type"],
            &contacts[0]["channel"],
            &contacts[0]["phoneNumber"]
        ),
        (&"agent".into(), &0.into(), &"+15551230001".into())
    );
    assert_eq!(
        (
            &contacts[1]["type"],
            &contacts[1]["channel"],
            &contacts[1]["phoneNumber"]
        ),
        (&"customer".into(), &1.into(), &"+15559870002".into())
    );
    // Neither party is internal nor named by vendor data: the SRC's first is taken as the
    // agent, and info says it was a guess (docs/mapping.md).
    let notes = info["metaData"]["mapping"]["notes"].to_string();
    assert!(notes.contains("guess"), "{info:#}");
    assert_eq!(info["metaData"]["gateway"]["endReason"], "bye");

    // Stream 1: 440 Hz from 0.060 s (capture time from the INVITE) to the end of the media.
    let ch0 = rec.wav.channel(0);
    assert_close(
        "channel 0 starts",
        ch0.first_sound().expect("channel 0 has sound"),
        0.060,
        EDGE_TOLERANCE,
    );
    ch0.assert_tone("channel 0", 440.0, CAPTURE_RMS, 0.1, media_s);
}

/// Stream 2: 1000 Hz from 0.063 s, silent for 2.0 s from 3.063 s (pcaps/README.md: the pause
/// begins 3.0 s into the stream), then 1000 Hz again to the end of the media.
fn check_paused_stream(rec: &Recording, channel: usize, media_s: f64) {
    let ch = rec.wav.channel(channel);
    let name = format!("channel {channel}");
    assert_close(
        &format!("{name} starts"),
        ch.first_sound().expect("sound"),
        0.063,
        EDGE_TOLERANCE,
    );
    let pauses = ch.silent_spans(0.5);
    let inner: Vec<_> = pauses.iter().filter(|(_, end)| *end < media_s).collect();
    assert_eq!(
        inner.len(),
        1,
        "{name}: one pause in the media, found silent spans {pauses:?}"
    );
    let (from, to) = *inner[0];
    assert_close(&format!("{name} pause start"), from, 3.063, EDGE_TOLERANCE);
    assert_close(&format!("{name} pause end"), to, 5.063, EDGE_TOLERANCE);
    ch.assert_tone(&name, 1000.0, CAPTURE_RMS, 0.1, from - 0.01);
    ch.assert_tone(&name, 1000.0, CAPTURE_RMS, to + 0.01, media_s);
}

#[test]
fn udp_capture_is_recorded_tone_for_tone() {
    let capture = "siprec-2stream-udp.pcap";
    let (_gw, call_id, rec) = record_capture(capture, false, "");
    check_common(capture, &call_id, &rec, 2, 7.0);
    check_paused_stream(&rec, 1, 7.0);
    assert_eq!(
        (&rec.stream(0)["packets"], &rec.stream(1)["packets"]),
        (&350.into(), &250.into())
    );
}

#[test]
fn tcp_capture_replayed_over_tcp_is_recorded_tone_for_tone() {
    let capture = "siprec-2stream-tcp.pcapng";
    let (_gw, call_id, rec) = record_capture(capture, true, "");
    check_common(capture, &call_id, &rec, 2, 7.0);
    check_paused_stream(&rec, 1, 7.0);
    assert_eq!(
        (&rec.stream(0)["packets"], &rec.stream(1)["packets"]),
        (&350.into(), &250.into())
    );
}

#[test]
fn fragmented_three_stream_capture_gives_three_channels() {
    let capture = "siprec-3stream-sll-frag.pcap";
    // One channel per stream: the layout that keeps the third stream apart.
    let (_gw, call_id, rec) = record_capture(capture, false, "[recording]\nlayout = \"per-stream\"\n");
    check_common(capture, &call_id, &rec, 3, 6.0);
    check_paused_stream(&rec, 1, 6.0);
    let ch2 = rec.wav.channel(2);
    assert_close(
        "channel 2 starts",
        ch2.first_sound().expect("sound"),
        0.066,
        EDGE_TOLERANCE,
    );
    ch2.assert_tone("channel 2", 1500.0, CAPTURE_RMS, 0.1, 6.0);
    for (c, codec) in [(0, "PCMA"), (1, "PCMA"), (2, "PCMA")] {
        assert_eq!(rec.stream(c)["codec"], codec);
    }
}

#[test]
fn call_without_rtp_for_rtp_timeout_is_ended_with_bye_at_the_last_packet() {
    let gw = Gateway::start("[media]\nrtp_timeout = \"2s\"\n");
    let sipp = SippCall::new("src_wait_for_bye.xml")
        .file("audio.ulaw", ulaw_tone(700.0, 12000.0, 1.0))
        .start(gw.udp_addr());
    let done = sipp.finish();
    assert!(
        done.messages()
            .iter()
            .any(|m| m.received && m.text.starts_with("BYE ")),
        "sipp got no BYE:\n{}",
        done.describe()
    );
    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(
        rec.info["metaData"]["gateway"]["endReason"], "rtp-timeout",
        "{:#}",
        rec.info
    );

    // The recording ends at the last packet, not at the BYE.
    let last_packet = rec.stream(0)["lastPacketMs"]
        .as_f64()
        .expect("lastPacketMs")
        / 1000.0;
    assert_close(
        "endTime - startTime against the last packet",
        rec.info_seconds(),
        last_packet,
        0.030,
    );
    assert!(
        (0.9..1.6).contains(&last_packet),
        "1 s of audio was sent; last packet at {last_packet:.3} s"
    );

    // The BYE was sent rtp_timeout after the last packet.
    let started = log_time(&gw.wait_for_log("recording started", WAIT));
    let timed_out = log_time(&gw.wait_for_log("no RTP for media.rtp_timeout", WAIT));
    let after_last = timed_out.duration_since(started).as_secs_f64() - last_packet;
    assert!(
        (1.95..2.5).contains(&after_last),
        "BYE {after_last:.3} s after the last packet, rtp_timeout is 2 s"
    );

    // The WAV ends where info says the recording ends: the silence between the last packet
    // and the timeout is not part of the call.
    assert_close(
        "WAV length against endTime - startTime",
        rec.wav.seconds(),
        rec.info_seconds(),
        0.020,
    );
}

/// Sends a SIPREC INVITE from a plain UDP socket and returns the final status code (the
/// non-2xx is ACKed).
fn invite_final_status(target: SocketAddr) -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let local = sock.local_addr().expect("local addr");
    let sdp = "v=0\r\no=SRC 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\na=label:1\r\n";
    let metadata = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
                    <recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"><datamode>complete</datamode></recording>\r\n";
    let body = format!(
        "--b1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--b1\r\n\
         Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{metadata}--b1--\r\n"
    );
    let common = format!(
        "Via: SIP/2.0/UDP {local};branch=z9hG4bK-drain-1\r\nFrom: <sip:src@{local}>;tag=drain1\r\n\
         Call-ID: drain-second-call@{local}\r\nMax-Forwards: 70\r\n"
    );
    let invite = format!(
        "INVITE sip:srs@{target} SIP/2.0\r\n{common}To: <sip:srs@{target}>\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:src@{local}>;+sip.src\r\nRequire: siprec\r\n\
         Content-Type: multipart/mixed;boundary=b1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.send_to(invite.as_bytes(), target)
        .expect("send INVITE");
    let mut buf = vec![0u8; 65536];
    loop {
        let n = sock
            .recv(&mut buf)
            .expect("a response to the INVITE within 5 s");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let code: u16 = text
            .get(8..11)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not a response: {text}"));
        if code < 200 {
            continue;
        }
        let to = text
            .lines()
            .find(|l| l.starts_with("To:"))
            .expect("To in the response");
        let ack = format!(
            "ACK sip:srs@{target} SIP/2.0\r\n{common}{to}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send_to(ack.as_bytes(), target).expect("send ACK");
        return code;
    }
}

#[test]
fn sigterm_drains_refuses_new_calls_ends_active_ones_and_exits_0() {
    let mut gw = Gateway::start("[service]\nshutdown_grace = \"1s\"\n[recording]\nlayout = \"per-stream\"\n");
    let sipp = SippCall::new("src_wait_for_bye.xml")
        .file("audio.ulaw", ulaw_tone(700.0, 12000.0, 5.0))
        .start(gw.udp_addr());
    gw.wait_for_log("recording started", WAIT);

    gw.sigterm();
    gw.wait_for_log("shutting down", WAIT);
    assert_eq!(
        invite_final_status(gw.udp_addr()),
        503,
        "a new INVITE while draining"
    );

    // After the grace period the gateway ends the active call with BYE, which sipp answers.
    let done = sipp.finish();
    assert!(
        done.messages()
            .iter()
            .any(|m| m.received && m.text.starts_with("BYE ")),
        "{}",
        done.describe()
    );
    let status = gw.wait_exit(WAIT);
    assert!(status.success(), "gateway exited with {status}");
    let drain = log_time(&gw.wait_for_log("shutting down", WAIT));
    let grace_over = log_time(&gw.wait_for_log("grace period over", WAIT));
    let grace = grace_over.duration_since(drain).as_secs_f64();
    assert!(
        (0.95..1.5).contains(&grace),
        "active calls ended {grace:.3} s after SIGTERM, grace is 1 s"
    );

    let finished = gw.wait_for_log("recording finished", WAIT);
    let name = log_field(&finished, "session").expect("session in the log line");
    assert_eq!(log_field(&finished, "reason"), Some("shutdown"));
    let rec = gw.read_recording(name);
    assert_eq!(rec.info["metaData"]["gateway"]["endReason"], "shutdown");
    assert_close("WAV length", rec.wav.seconds(), rec.info_seconds(), 0.020);
    assert!(
        rec.wav.channel(0).rms(0.2, 0.8) > 1000.0,
        "channel 0 has the audio sent before the drain"
    );
    assert_eq!(
        gw.spool_leftovers(),
        Vec::<String>::new(),
        "nothing left in the spool"
    );
}
