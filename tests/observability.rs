//! What an operator sees of the real gateway binary: `/metrics`, `/health` and `/ready` on the
//! `service.http_listen` address, JSON logs with the call's identifiers, and the audit record
//! written with each recording (beside it with the local sink, in the spool with Tethr). Calls
//! are the project's captures replayed with `siprec-gateway replay` at speed 1.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use support::gateway::{self, Gateway, log_field};
use support::tethr::{Behaviour, Canned, TethrStandIn};

/// A guard against hanging; every wait ends earlier when things work.
const WAIT: Duration = Duration::from_secs(20);

/// `GET path` over HTTP/1.1 with `Connection: close`: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP listener");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// The value of the sample `name` (with its labels, as rendered) in a Prometheus page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_count_a_replayed_call() {
    let gw = Gateway::start("[service]\nhttp_listen = \"127.0.0.1:0\"\n");
    let http = gw.http_addr();
    let (status, before) = get(http, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(sample(&before, "siprec_calls_started_total"), None, "nothing counted yet:\n{before}");

    gateway::replay("siprec-2stream-udp.pcap", gw.udp_addr(), false);
    gw.wait_for_recording(1, WAIT);
    let (status, page) = get(http, "/metrics");
    assert_eq!(status, 200);
    let value = |name: &str| sample(&page, name).unwrap_or_else(|| panic!("{name} missing:\n{page}"));
    assert_eq!(value("siprec_calls_started_total"), 1.0);
    assert_eq!(value("siprec_calls_total{end_reason=\"bye\",outcome=\"recorded\"}"), 1.0);
    assert_eq!(value("siprec_calls_active"), 0.0);
    assert_eq!(value("siprec_streams_total"), 2.0);
    // pcaps/README.md: 350 + 250 packets, none lost.
    assert_eq!(value("siprec_rtp_packets_received_total{codec=\"PCMU\"}"), 600.0);
    assert_eq!(value("siprec_rtp_packets_lost_total{codec=\"PCMU\"}"), 0.0);
    // About 7 s of two 16-bit channels at 8 kHz.
    let bytes = value("siprec_audio_bytes_written_total");
    assert!((200_000.0..260_000.0).contains(&bytes), "{bytes} bytes written");
    // 100 Trying and 200 OK to the INVITE, 200 OK to the BYE.
    assert!(value("siprec_sip_responses_total{code=\"200\"}") >= 2.0);
    assert_eq!(value("siprec_deliveries_total{outcome=\"delivered\"}"), 1.0);
    assert_eq!(value("siprec_spool_recordings{state=\"pending\"}"), 0.0);
    assert!(page.contains("# HELP siprec_calls_total"), "{page}");
}

#[test]
fn ready_turns_503_on_sigterm_while_a_call_goes_on() {
    let gw = Gateway::start("[service]\nhttp_listen = \"127.0.0.1:0\"\nshutdown_grace = \"60s\"\n");
    let http = gw.http_addr();
    assert_eq!(get(http, "/ready"), (200, "ready\n".to_owned()));
    let mut replay = gateway::spawn_replay("siprec-2stream-udp.pcap", gw.udp_addr());
    gw.wait_for_log("recording started", WAIT);

    gw.sigterm();
    gw.wait_for_log("shutting down", WAIT);
    // The drain flag is set as the shutdown is noticed, before that line is logged.
    assert_eq!(get(http, "/ready").0, 503);
    assert_eq!(get(http, "/health").0, 200, "the process still runs and serves its call");
    let (_, page) = get(http, "/metrics");
    assert_eq!(sample(&page, "siprec_calls_active"), Some(1.0), "{page}");
    let _ = replay.kill();
    let _ = replay.wait();
}

#[test]
fn json_logs_parse_line_by_line_and_carry_the_call() {
    let gw = Gateway::start("[service]\nlog_format = \"json\"\n");
    gateway::replay("siprec-2stream-udp.pcap", gw.udp_addr(), false);
    gw.wait_for_log("recording delivered", WAIT);
    let log = gw.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let message = |v: &Value| v["message"].as_str().unwrap_or_default().to_owned();
    let about_the_call = |needle: &str| {
        lines
            .iter()
            .find(|v| message(v).contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} line:\n{log}"))
    };
    // replay gives the call a Call-ID of its own; the recording's name is derived from it.
    let started = about_the_call("recording started");
    let call_id = started["span"]["call_id"].as_str().expect("call_id in the call's span");
    assert!(call_id.ends_with("@replay"), "{started}");
    let session = started["span"]["session"].as_str().expect("session in the call's span");
    assert!(!session.is_empty() && session == started["session"], "{started}");
    for needle in ["BYE from the SRC", "recording finished"] {
        let line = about_the_call(needle);
        assert_eq!(line["span"]["call_id"], call_id, "{needle}: {line}");
        assert_eq!(line["span"]["session"], session, "{needle}: {line}");
        assert!(line["level"].is_string() && line["timestamp"].is_string(), "{line}");
    }
    assert_eq!(log_field(&about_the_call("recording delivered").to_string(), "session_id"), Some(call_id));
}

#[test]
fn local_sink_writes_the_audit_record_beside_the_recording() {
    let gw = Gateway::start("");
    gateway::replay("siprec-2stream-udp.pcap", gw.udp_addr(), false);
    let rec = gw.wait_for_recording(1, WAIT);
    let path = gw.output_dir().join(format!("{}.audit.json", rec.name));
    let audit: Value = serde_json::from_slice(&std::fs::read(&path).expect("audit.json beside the WAV")).expect("JSON");

    assert_eq!(audit["sessionId"], rec.info["sessionId"]);
    assert_eq!(audit["recording"], rec.name.as_str());
    assert_eq!(audit["endReason"], "bye");
    let time = |key: &str| -> jiff::Timestamp {
        let text = audit[key].as_str().unwrap_or_else(|| panic!("{key} missing: {audit:#}"));
        assert!(text.ends_with('Z') && text.len() == 24, "{key}: {text} is ISO-8601 with ms");
        text.parse().expect("timestamp")
    };
    let (invite, answered, ack, ended) = (time("inviteReceived"), time("answered"), time("ack"), time("ended"));
    assert!(invite <= answered && answered <= ack && ack < ended, "{audit:#}");
    assert_eq!(audit["answered"], rec.info["startTime"]);
    assert_eq!(audit["ended"], rec.info["endTime"]);
    let duration = audit["durationSec"].as_f64().expect("durationSec");
    assert!((duration - rec.wav.seconds()).abs() < 0.001, "{duration} vs the WAV's {}", rec.wav.seconds());
    let packets: Vec<u64> = (0..2).map(|c| audit["streams"][c]["packets"].as_u64().expect("packets")).collect();
    assert_eq!(packets, [350, 250]);
    assert_eq!(audit["streams"][0]["lost"], 0);
    assert_eq!(audit["streams"][1]["codec"], "PCMU");
    assert_eq!(audit["delivery"]["outcome"], "delivered");
    let wav = gw.output_dir().join(format!("{}.wav", rec.name));
    assert_eq!(audit["delivery"]["path"], wav.display().to_string());
    assert!(gw.spool_leftovers().is_empty(), "{:?}", gw.spool_leftovers());
}

/// `[tethr]` for the stand-in.
fn tethr_config(standin: &TethrStandIn, behaviour: &Behaviour, extra: &str) -> String {
    format!(
        "[tethr]\nurl = {:?}\nclient_id = {:?}\nclient_secret = {:?}\n{extra}",
        standin.url(),
        behaviour.client_id,
        behaviour.client_secret
    )
}

/// The `audit.json` of the only recording in `spool/<state>/`.
fn spool_audit(gw: &Gateway, state: &str) -> Value {
    let dir = gw.spool_dir().join(state);
    let entries: Vec<_> = std::fs::read_dir(&dir).expect("spool state dir").flatten().collect();
    assert_eq!(entries.len(), 1, "one recording in {state}/: {:?}", gw.spool_leftovers());
    let path = entries[0].path().join("audit.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("JSON")
}

#[tokio::test]
async fn audit_record_kept_with_a_delivered_recording_names_tethrs_call_id() {
    let behaviour = Behaviour::default();
    let standin = TethrStandIn::start(behaviour.clone()).await;
    let config = tethr_config(&standin, &behaviour, "retention = \"1d\"\n");
    let gw = tokio::task::spawn_blocking(move || {
        let gw = Gateway::start(&config);
        gateway::replay("siprec-2stream-udp.pcap", gw.udp_addr(), false);
        gw.wait_for_log("recording delivered", WAIT);
        gw
    })
    .await
    .expect("harness thread");
    let uploads = standin.uploads();
    assert_eq!(uploads.len(), 1);
    let audit = spool_audit(&gw, "delivered");
    assert_eq!(audit["delivery"]["outcome"], "delivered", "{audit:#}");
    assert_eq!(audit["delivery"]["callId"], uploads[0].call_id.as_str());
    assert_eq!(audit["sessionId"], uploads[0].info["sessionId"]);
    assert_eq!(audit["streams"][1]["packets"], 250);
}

#[tokio::test]
async fn audit_record_of_a_refused_recording_says_why() {
    let behaviour = Behaviour::with_canned([Canned::with_body(400, "{\"error\":\"direction is invalid\"}")]);
    let standin = TethrStandIn::start(behaviour.clone()).await;
    let config = tethr_config(&standin, &behaviour, "");
    let gw = tokio::task::spawn_blocking(move || {
        let mut gw = Gateway::start(&config);
        gateway::replay("siprec-2stream-udp.pcap", gw.udp_addr(), false);
        gw.wait_for_log("moving it to failed/", WAIT);
        // A clean stop waits until this run's recordings are delivered or in failed/.
        gw.sigterm();
        assert!(gw.wait_exit(WAIT).success());
        gw
    })
    .await
    .expect("harness thread");
    let audit = spool_audit(&gw, "failed");
    assert_eq!(audit["delivery"]["outcome"], "failed", "{audit:#}");
    let reason = audit["delivery"]["reason"].as_str().expect("reason");
    assert!(reason.contains("400"), "{reason}");
    assert_eq!(audit["endReason"], "bye");
}
