//! Issue 4 tried as a new user would: the real gateway (local sink, default
//! `agent-customer` layout) receives INVITEs shaped like each vendor family's (the bodies of
//! `tests/fixtures/metadata/`, with the headers that vendor sends), RTP on every stream with
//! a distinct tone per stream, the vendor's metadata updates and a BYE; each test then
//! checks the `info` a contact-center analyst would fill in by hand (contacts with type,
//! channel, number, names and reference, each side's tone on its channel, direction,
//! masterCallId, numberDialed) against the rules docs/mapping.md documents.
//!
//! Most calls are signalled from here over UDP (tests/support/sip_client.rs): several
//! fixtures cannot be written as a sipp scenario (bare-LF bodies, a Content-Length shorter
//! than the body, part headers without a space after the colon, which sipp's CRLF rewriting
//! would repair), updates must be sent between known stretches of audio, and the test must
//! know each answered RTP port and codec to send a tone on every stream (sipp 3.6 plays audio
//! to the first m-line only). The `sipp_as_*` tests send the same INVITEs with sipp as the
//! SRC's signalling (a scenario written per fixture at test time) while the test plays the
//! media to the ports the gateway logs.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use siprec_gateway::media::g711;
use siprec_gateway::sip::Message;
use support::audio::ulaw_tone;
use support::gateway::{Gateway, Recording};
use support::sip_client::UdpPeer;
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(30);
/// Tone per recorded stream, in m-line order.
const TONES: [f64; 4] = [440.0, 1000.0, 700.0, 1300.0];
const PACKET: Duration = Duration::from_millis(20);

/// A fixture body: its Content-Type, the Content-Length its SRC declared (if it lies) and the
/// body bytes (see tests/fixtures/metadata/README.md).
struct Fixture {
    content_type: String,
    declared_len: Option<usize>,
    body: String,
}

fn fixture(name: &str) -> Fixture {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metadata").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (head, body) = text.split_once("\n\n").expect("fixture header block");
    let mut content_type = String::new();
    let mut declared_len = None;
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("Content-Type:") {
            content_type = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("Content-Length:") {
            declared_len = Some(v.trim().parse().expect("Content-Length"));
        }
    }
    Fixture { content_type, declared_len, body: body.to_owned() }
}

/// A bare metadata body written here (for updates no fixture has).
fn bare(content_type: &str, body: &str) -> Fixture {
    Fixture { content_type: content_type.to_owned(), declared_len: None, body: body.replace('\n', "\r\n") }
}

/// `seconds` of a `freq` tone at 16 kHz, G.722-encoded (64 kbit/s, the mode RTP carries).
fn g722_tone(freq: f64, amplitude: f64, seconds: f64) -> Vec<u8> {
    let samples: Vec<i16> = (0..(seconds * 16000.0) as usize)
        .map(|i| (amplitude * (std::f64::consts::TAU * freq * i as f64 / 16000.0).sin()) as i16)
        .collect();
    ezk_g722::libg722::encoder::Encoder::new(ezk_g722::libg722::Bitrate::Mode1_64000, false, false).encode(&samples)
}

fn ulaw_decode(b: u8) -> i16 {
    let mut out = [0i16; 1];
    g711::decode(g711::Law::Mu, &[b], &mut out);
    out[0]
}

fn rtp(pt: u8, seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A stream we send RTP on: its own socket, SSRC and tone.
struct Stream {
    socket: UdpSocket,
    to: SocketAddr,
    ssrc: u32,
    pt: u8,
    audio: Vec<u8>,
    seq: u16,
}

/// One recording call from the test's SRC.
struct Src {
    peer: UdpPeer,
    call_id: String,
    to: String,
    cseq: u32,
    streams: Vec<Stream>,
}

impl Src {
    /// Sends the INVITE (vendor headers plus the fixture's body), expects 200, ACKs, and opens
    /// one RTP source per answered audio m-line (tone `TONES[i]`).
    async fn call(gw: &Gateway, call_id: &str, from: &str, headers: &[(&str, &str)], fx: &Fixture) -> Src {
        let peer = UdpPeer::bind(gw.udp_addr()).await;
        let mut extra = String::new();
        for (n, v) in headers {
            extra.push_str(&format!("{n}: {v}\r\n"));
        }
        let local = peer.local;
        let invite = format!(
            "INVITE sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-inv-{call_id};rport\r\n\
             Max-Forwards: 70\r\nFrom: {from};tag=src-{call_id}\r\nTo: <sip:srs@127.0.0.1>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:src@{local}>;+sip.src\r\n{extra}\
             Content-Type: {}\r\nContent-Length: {}\r\n\r\n{}",
            fx.content_type,
            fx.declared_len.unwrap_or(fx.body.len()),
            fx.body
        );
        peer.send(&invite).await;
        let ok = peer.final_response().await;
        assert_eq!(ok.status(), Some(200), "INVITE answered {:?}\n{}", ok.status(), String::from_utf8_lossy(&ok.body));
        let to = ok.header("To").expect("To").to_owned();
        let mut src = Src { peer, call_id: call_id.to_owned(), to, cseq: 1, streams: Vec::new() };
        src.ack(1).await;
        // Port and payload type of each answered audio m-line.
        let ports: Vec<(u16, u8)> = String::from_utf8_lossy(&ok.body)
            .lines()
            .filter_map(|l| {
                let mut f = l.strip_prefix("m=audio ")?.split(' ');
                Some((f.next()?.parse().ok()?, f.nth(1)?.parse().ok()?))
            })
            .collect();
        for (i, (port, pt)) in ports.into_iter().enumerate() {
            let mut audio = ulaw_tone(TONES[i], 12000.0, 5.0);
            match pt {
                // The gateway chose PCMA: re-encode the tone.
                8 => {
                    for b in &mut audio {
                        *b = g711::encode::alaw(ulaw_decode(*b));
                    }
                }
                // G.722 (Webex and BroadWorks offer it first): 16 kHz audio, 160 bytes per
                // 20 ms like G.711.
                9 => audio = g722_tone(TONES[i], 12000.0, 5.0),
                _ => {}
            }
            src.streams.push(Stream {
                socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
                to: SocketAddr::from(([127, 0, 0, 1], port)),
                ssrc: 0x1000 + i as u32,
                pt,
                audio,
                seq: 0,
            });
        }
        src
    }

    async fn ack(&self, cseq: u32) {
        let req = self.request("ACK", cseq, None);
        self.peer.send(&req).await;
    }

    fn request(&self, method: &str, cseq: u32, body: Option<&Fixture>) -> String {
        let (local, call_id, to) = (self.peer.local, &self.call_id, &self.to);
        let body_headers = match body {
            Some(fx) => format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n\r\n{}",
                fx.content_type,
                fx.declared_len.unwrap_or(fx.body.len()),
                fx.body
            ),
            None => "Content-Length: 0\r\n\r\n".to_owned(),
        };
        format!(
            "{method} sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{method}-{cseq}-{call_id};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:src@example.com>;tag=src-{call_id}\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:src@{local}>;+sip.src\r\n{body_headers}"
        )
    }

    /// Sends an in-dialog request and returns the final response (ACKing a re-INVITE's).
    async fn send(&mut self, method: &str, body: Option<&Fixture>) -> Message {
        self.cseq += 1;
        let req = self.request(method, self.cseq, body);
        self.peer.send(&req).await;
        let resp = self.peer.final_response().await;
        if method == "INVITE" {
            self.ack(self.cseq).await;
        }
        resp
    }

    /// `packets` × 20 ms of RTP on the streams `which` (indexes of answered m-lines).
    async fn rtp(&mut self, which: &[usize], packets: usize) {
        let mut tick = tokio::time::interval(PACKET);
        for _ in 0..packets {
            tick.tick().await;
            for &i in which {
                let s = &mut self.streams[i];
                let at = usize::from(s.seq) * 160 % (s.audio.len() - 160);
                let p = rtp(s.pt, s.seq, s.ssrc, &s.audio[at..at + 160]);
                s.socket.send_to(&p, s.to).await.unwrap();
                s.seq += 1;
            }
        }
    }

    async fn bye(mut self, body: Option<&Fixture>) {
        let resp = self.send("BYE", body).await;
        assert_eq!(resp.status(), Some(200));
    }
}

/// The contact of `kind` (`agent`/`customer`).
fn contact<'a>(rec: &'a Recording, kind: &str) -> &'a Value {
    let contacts = rec.info["contacts"].as_array().expect("contacts");
    contacts.iter().find(|c| c["type"] == kind).unwrap_or_else(|| panic!("no {kind} contact: {:#}", rec.info))
}

/// Asserts the WAV has as many channels as contacts (Tethr quarantines otherwise) and that
/// channel `ch` carries `tone` (the stream's) from `from` to `to` seconds.
fn assert_channel_tone(rec: &Recording, ch: usize, tone: f64, from: f64, to: f64) {
    let contacts = rec.info["contacts"].as_array().expect("contacts").len();
    assert_eq!(usize::from(rec.wav.spec.channels), contacts, "channels vs contacts: {:#}", rec.info);
    let c = rec.wav.channel(ch);
    // Per 100 ms window: a phase jump where the timeline slips a few samples lowers the share
    // at exactly `tone` over a long span although every window holds the tone.
    let windows: Vec<(f64, f64)> = (0..((to - from) * 10.0).round() as usize)
        .map(|w| {
            let t = from + w as f64 / 10.0;
            (t, c.tone_share(tone, t, t + 0.1))
        })
        .collect();
    let good = windows.iter().filter(|(_, s)| *s > 0.8).count();
    assert!(
        // A window may hold a slip (on a loaded machine the sender's packets can bunch up
        // and the timeline re-anchors): a fifth of them, and at least one, may be impure.
        good + (windows.len() / 5).max(1) >= windows.len(),
        "channel {ch} from {from} to {to} s: {good} of {} windows at {tone} Hz: {windows:?}\n{:#}",
        windows.len(),
        rec.info
    );
}

fn assert_no_tone(rec: &Recording, ch: usize, tone: f64, from: f64, to: f64) {
    let share = rec.wav.channel(ch).tone_share(tone, from, to);
    assert!(share < 0.1, "channel {ch} from {from} to {to} s carries {tone} Hz ({:.0}%)", share * 100.0);
}

/// The fields an analyst checks, compared as JSON (absent fields as null).
#[track_caller]
fn assert_fields(rec: &Recording, direction: &str, master: &str, dialed: Option<&str>) {
    let i = &rec.info;
    assert_eq!(i["direction"], direction, "{i:#}");
    assert_eq!(i["masterCallId"], master, "{i:#}");
    assert_eq!(i["numberDialed"].as_str(), dialed, "{i:#}");
    assert_eq!(rec.first_null(), None, "Tethr wants absent fields, not null");
}

#[track_caller]
fn assert_contact(rec: &Recording, kind: &str, channel: usize, phone: Option<&str>, reference: Option<&str>) {
    let c = contact(rec, kind);
    assert_eq!(c["channel"], channel, "{kind}: {:#}", rec.info);
    assert_eq!(c["phoneNumber"].as_str(), phone, "{kind}: {:#}", rec.info);
    assert_eq!(c["referenceId"].as_str(), reference, "{kind}: {:#}", rec.info);
}

const ORACLE_UUI: &str = "00FA08004762BD69FA4805;encoding=hex";

#[tokio::test]
async fn oracle_acme_inbound_call_from_a_carrier_realm() {
    // The operator says which Oracle realm is the carrier's (docs/mapping.md, Oracle example).
    let gw = Gateway::start("[mapping]\nexternal_realms = [\"peerCarrierA\"]\n");
    let fx = fixture("oracle-acme.body");
    let mut src = Src::call(
        &gw,
        "oracle-1@test",
        "<sip:+15550160@sbc.example.com>",
        &[
            ("User-Agent", "Oracle ESBC"),
            ("Require", "siprec"),
            ("User-to-User", ORACLE_UUI),
            ("X-Genesys-CallUUID", "GENESYS0001"),
        ],
        &fx,
    )
    .await;
    src.rtp(&[0, 1], 50).await;
    src.bye(None).await;
    let rec = gw.wait_for_recording(1, WAIT);
    // The caller (callingParty, carrier realm) is the customer and sends label 739440565
    // (stream 0); the contact center's number is the agent side.
    assert_contact(&rec, "customer", 1, Some("+15550160"), None);
    assert_contact(&rec, "agent", 0, Some("+18005550100"), None);
    assert_channel_tone(&rec, 0, TONES[1], 0.3, 0.8);
    assert_channel_tone(&rec, 1, TONES[0], 0.3, 0.8);
    // The apkt:ucid is the Avaya UCID in its UUI hex form: shown as its 20 digits, the same
    // masterCallId an Avaya SBCE's User-to-User header gives for that call.
    let ucid = "00071252771778010117";
    assert_fields(&rec, "Inbound", ucid, Some("8005550100"));
    assert_eq!(rec.info["metaData"]["sipHeaders"]["User-to-User"], ORACLE_UUI);
}

#[tokio::test]
async fn cisco_cube_rfc7865_with_a_gtd_part() {
    let gw = Gateway::start("");
    let fx = fixture("cisco-cube.body");
    let mut src = Src::call(
        &gw,
        "cube-1@test",
        "<sip:cube@192.0.2.20>",
        &[
            ("User-Agent", "Cisco-SIPGateway/IOS-17.6.1"),
            ("Require", "siprec"),
            ("Cisco-Gucid", "0123456789ABCDEF0123456789ABCDEF"),
            ("Session-ID", "c0ffee00c0ffee00c0ffee00c0ffee01;remote=facade00facade00facade00facade02"),
        ],
        &fx,
    )
    .await;
    src.rtp(&[0, 1], 50).await;
    src.bye(None).await;
    let rec = gw.wait_for_recording(1, WAIT);
    // 3302 is an extension: the agent, on channel 0 with its stream (label 2).
    assert_contact(&rec, "agent", 0, Some("3302"), Some("3302"));
    assert_contact(&rec, "customer", 1, Some("+15550177"), None);
    assert_channel_tone(&rec, 0, TONES[1], 0.3, 0.8);
    assert_channel_tone(&rec, 1, TONES[0], 0.3, 0.8);
    // RFC 7865 does not say who called: Unknown, documented. Cisco-Gucid ties the legs.
    assert_fields(&rec, "Unknown", "0123456789ABCDEF0123456789ABCDEF", None);
    assert_eq!(rec.info["metaData"]["mapping"]["masterCallIdSource"], "header:Cisco-Gucid");
}

#[tokio::test]
async fn avaya_sbce_dummy_participant_is_replaced_by_the_callee() {
    let gw = Gateway::start("");
    let mut src = Src::call(
        &gw,
        "asbce-1@test",
        "<sip:ASBCE@asbce.example.com>",
        &[("User-Agent", "Avaya SBCE"), ("User-to-User", ORACLE_UUI), ("Require", "siprec")],
        &fixture("avaya-sbce.body"),
    )
    .await;
    src.rtp(&[0, 1], 40).await;
    // The SBCE learns the callee and replaces its own dummy participant.
    let resp = src.send("UPDATE", Some(&fixture("avaya-sbce-update.body"))).await;
    assert_eq!(resp.status(), Some(200));
    src.rtp(&[0, 1], 40).await;
    src.bye(None).await;
    let rec = gw.wait_for_recording(1, WAIT);
    // Stream label 20 carried the callee (4402, an extension) all along: the whole stream is
    // the agent's, and the dummy sip:ASBCE is nobody's contact.
    assert_contact(&rec, "agent", 0, Some("4402"), Some("4402"));
    assert_contact(&rec, "customer", 1, Some("5550123456"), None);
    assert_channel_tone(&rec, 0, TONES[1], 0.2, 0.7);
    assert_channel_tone(&rec, 0, TONES[1], 1.0, 1.5);
    assert_channel_tone(&rec, 1, TONES[0], 0.2, 1.5);
    assert_fields(&rec, "Unknown", "00071252771778010117", None);
    assert_eq!(rec.info["metaData"]["mapping"]["masterCallIdSource"], "uui-ucid");
}

#[tokio::test]
async fn broadworks_acd_call_is_inbound_mono_with_the_queue_number_dialed() {
    let gw = Gateway::start("");
    let mut src = Src::call(
        &gw,
        "bw-acd-1@test",
        "<sip:5550104725@bw.example.com>",
        &[
            ("User-Agent", "BroadWorks"),
            ("Accept", "application/sdp, application/rs-metadata+xml, application/x-broadworks-call-center+xml"),
            ("Recv-Info", ""),
            ("Require", "siprec"),
        ],
        &fixture("broadworks-acd.body"),
    )
    .await;
    src.rtp(&[0], 50).await;
    src.bye(None).await;
    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.wav.spec.channels, 1, "one mixed stream: mono");
    assert_contact(&rec, "agent", 0, Some("5550104725"), Some("5550104725@bw.example.com"));
    assert_channel_tone(&rec, 0, TONES[0], 0.3, 0.8);
    // termCall: the user received the call, dialed through the ACD's number.
    assert_fields(&rec, "Inbound", "1234567:1", Some("+15550104220"));
}

#[tokio::test]
async fn webex_outbound_call_names_the_webex_user() {
    let gw = Gateway::start("");
    let mut src = Src::call(
        &gw,
        "webex-1@test",
        "<sip:+15550107500@webex.example.com>",
        &[("User-Agent", "Cisco-Webex-Calling"), ("Require", "siprec")],
        &fixture("webex-outbound.body"),
    )
    .await;
    src.rtp(&[0, 1], 50).await;
    src.bye(None).await;
    let rec = gw.wait_for_recording(1, WAIT);
    // origCall from the user (8105, the calling party): outbound, no numberDialed; the user
    // id is what Tethr's recording settings list.
    assert_contact(&rec, "agent", 0, Some("8105"), Some("5550108105@webex.example.com"));
    assert_contact(&rec, "customer", 1, Some("+15550166424"), None);
    assert_channel_tone(&rec, 0, TONES[0], 0.3, 0.8);
    assert_channel_tone(&rec, 1, TONES[1], 0.3, 0.8);
    assert_fields(&rec, "Outbound", "tracking-4711:1", None);
}

#[tokio::test]
async fn metaswitch_mixed_stream_gives_a_mono_file_with_one_contact() {
    let gw = Gateway::start("");
    let mut src = Src::call(
        &gw,
        "msw-1@test",
        "<sip:5550100320@cfs.example.com>",
        &[("User-Agent", "Metaswitch CFS"), ("Require", "siprec")],
        &fixture("metaswitch.body"),
    )
    .await;
    src.rtp(&[0], 50).await;
    src.bye(None).await;
    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.wav.spec.channels, 1);
    assert_eq!(rec.info["contacts"].as_array().unwrap().len(), 1, "{:#}", rec.info);
    assert_contact(&rec, "agent", 0, Some("5550100320"), Some("+15550100320"));
    assert_channel_tone(&rec, 0, TONES[0], 0.3, 0.8);
    // Terminating call of the recorded party; the dialed digits are its own number.
    assert_fields(&rec, "Inbound", "TVNXLXNlc3MtMDE=", None);
    let parts = rec.info["metaData"]["participants"].as_array().unwrap();
    assert!(parts.iter().any(|p| p["side"] == "customer" && p["channel"] == 0 && p["contact"] == false), "{parts:#?}");
}

#[tokio::test]
async fn ribbon_call_ends_with_a_partial_bye() {
    let gw = Gateway::start("[mapping]\ninternal_numbers = [\"5550108500-5550108599\"]\n");
    let mut src = Src::call(
        &gw,
        "ribbon-1@test",
        "<sip:sbc@192.0.2.82>",
        &[("User-Agent", "Ribbon SBC"), ("Require", "siprec")],
        &fixture("ribbon-sonus.body"),
    )
    .await;
    src.rtp(&[0, 1], 50).await;
    // RFC 7866 §9.1: the last metadata (both participants leave) rides on the BYE.
    src.bye(Some(&fixture("ribbon-sonus-bye.body"))).await;
    let rec = gw.wait_for_recording(1, WAIT);
    // 8500 (in the configured range) sends label 2 and is the caller named in fromhdr.
    let agent = contact(&rec, "agent");
    assert_eq!(agent["firstName"], "Extension", "{:#}", rec.info);
    assert_contact(&rec, "agent", 0, Some("5550108500"), None);
    assert_contact(&rec, "customer", 1, Some("8005550123"), None);
    assert_channel_tone(&rec, 0, TONES[1], 0.3, 0.8);
    assert_channel_tone(&rec, 1, TONES[0], 0.3, 0.8);
    assert_fields(&rec, "Outbound", "4990206", None);
    let history = rec.info["metaData"]["metadataHistory"].as_array().unwrap();
    let bye = history.last().unwrap();
    assert_eq!(bye["via"], "BYE", "{history:#?}");
    assert_eq!(bye["changes"].as_array().unwrap().iter().filter(|c| c["event"] == "left").count(), 2, "{bye:#}");
    // The 1970 disassociate-times are not believed: both leave when the BYE arrived, after
    // the last packet (the media and signalling tasks may see the two within a few ms).
    let last = rec.stream(0)["lastPacketMs"].as_u64().unwrap();
    for p in rec.info["metaData"]["participants"].as_array().unwrap() {
        assert!(p["leftMs"].as_u64().is_some_and(|l| l + 100 >= last), "last packet {last} ms: {p:#}");
    }
    let notes = rec.info["metaData"]["mapping"]["notes"].to_string();
    assert!(notes.contains("outside the time its update arrived"), "{notes}");
}

#[tokio::test]
async fn audiocodes_legacy_bare_lf_body_with_genesys_uuid() {
    let gw = Gateway::start("");
    let fx = fixture("audiocodes-legacy.body");
    assert!(!fx.body.contains('\r'), "the fixture is bare LF");
    let mut src = Src::call(
        &gw,
        "ac-1@test",
        "<sip:+15550170001@192.0.2.110>",
        &[("User-Agent", "Mediant SW/v.7.40A"), ("X-Genesys-CallUUID", "00GENESYSUUID0000000000000000AB")],
        &fx,
    )
    .await;
    src.rtp(&[0, 1], 50).await;
    src.bye(None).await;
    let rec = gw.wait_for_recording(1, WAIT);
    assert_contact(&rec, "agent", 0, Some("6001"), Some("6001"));
    assert_contact(&rec, "customer", 1, Some("+15550170001"), None);
    assert_channel_tone(&rec, 0, TONES[1], 0.3, 0.8);
    assert_channel_tone(&rec, 1, TONES[0], 0.3, 0.8);
    assert_fields(&rec, "Unknown", "00GENESYSUUID0000000000000000AB", None);
}

#[tokio::test]
async fn opensips_minimal_document_pairs_participants_with_streams() {
    let gw = Gateway::start("");
    let mut src = Src::call(
        &gw,
        "osips-1@test",
        "<sip:recorder@198.51.100.7>",
        &[("User-Agent", "OpenSIPS (3.4.0 (x86_64/linux))")],
        &fixture("opensips-minimal.body"),
    )
    .await;
    src.rtp(&[0, 1], 50).await;
    src.bye(None).await;
    let rec = gw.wait_for_recording(1, WAIT);
    // Nothing tells the sides apart: the first participant is guessed to be the agent.
    let agent = contact(&rec, "agent");
    assert_eq!(agent["phoneNumber"], "0700111222", "{:#}", rec.info);
    // OpenSIPS puts the display name's parameters in the name: they are not part of it.
    assert_eq!(agent["firstName"], "tester", "{:#}", rec.info);
    assert_channel_tone(&rec, 0, TONES[0], 0.3, 0.8);
    assert_channel_tone(&rec, 1, TONES[1], 0.3, 0.8);
    assert_fields(&rec, "Unknown", "5e1f0c2d9b8a7f6e5d4c3b2a19081726@198.51.100.7", None);
    let notes = rec.info["metaData"]["mapping"]["notes"].to_string();
    assert!(notes.contains("a guess"), "{notes}");
}

#[tokio::test]
async fn chime_video_streams_are_ignored() {
    let gw = Gateway::start("[mapping]\ninternal_domains = [\"biloxi.example.com\"]\n");
    let mut src = Src::call(
        &gw,
        "chime-1@test",
        "<sip:vc@voiceconnector.example.com>",
        &[("User-Agent", "Amazon Chime Voice Connector")],
        &fixture("chime.body"),
    )
    .await;
    assert_eq!(src.streams.len(), 2, "two audio m-lines answered");
    src.rtp(&[0, 1], 50).await;
    src.bye(None).await;
    let rec = gw.wait_for_recording(1, WAIT);
    // Bob (internal domain) is the agent with label 98; Alice the customer with 96.
    assert_eq!(rec.wav.spec.channels, 2);
    assert_eq!(contact(&rec, "agent")["firstName"], "Bob");
    assert_eq!(contact(&rec, "customer")["firstName"], "Alice");
    assert_channel_tone(&rec, 0, TONES[1], 0.3, 0.8);
    assert_channel_tone(&rec, 1, TONES[0], 0.3, 0.8);
    assert_fields(&rec, "Unknown", "Q0hJTUUtZ3JvdXA=", None);
    let warnings = rec.info["metaData"]["mapping"]["warnings"].to_string();
    assert!(warnings.contains("97") && warnings.contains("99"), "{warnings}");
}

#[tokio::test]
async fn cisco_network_based_recording_without_metadata() {
    let gw = Gateway::start("");
    let sdp = "v=0\r\no=CiscoSystemsSIP-GW-UserAgent 1 1 IN IP4 127.0.0.1\r\ns=SIP Call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n\
               m=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n";
    let fx = Fixture { content_type: "application/sdp".into(), declared_len: None, body: sdp.into() };
    let mut src = Src::call(
        &gw,
        "nbr-1@test",
        "<sip:2164485925@ccf.example.org>",
        &[
            ("User-Agent", "Cisco-SIPGateway/IOS-15.6.2"),
            ("X-Cisco-Recording-Participant", "<sip:2164485925@ccf.example.org>;media-index=\"0\""),
            ("X-Cisco-Recording-Participant", "<sip:20053@10.144.106.41>;media-index=\"1\""),
            ("Cisco-Gucid", "FEDCBA9876543210FEDCBA9876543210"),
        ],
        &fx,
    )
    .await;
    src.rtp(&[0, 1], 50).await;
    src.bye(None).await;
    let rec = gw.wait_for_recording(1, WAIT);
    assert_contact(&rec, "agent", 0, Some("20053"), Some("20053"));
    assert_contact(&rec, "customer", 1, Some("2164485925"), None);
    assert_channel_tone(&rec, 0, TONES[1], 0.3, 0.8);
    assert_channel_tone(&rec, 1, TONES[0], 0.3, 0.8);
    assert_fields(&rec, "Unknown", "FEDCBA9876543210FEDCBA9876543210", None);
    assert_eq!(rec.info["metaData"]["gateway"]["metadata"], "absent");
}

/// A transfer on the customer side: the first caller leaves, a second one takes the
/// customer stream (partial metadata in a re-INVITE with the same SDP).
const TRANSFER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>partial</datamode>
  <participant participant_id="par-cust2">
    <nameID aor="sip:+15550199@carrier.example.net"><name>Casey Second</name></nameID>
  </participant>
  <participantsessionassoc participant_id="par-cust" session_id="ses-7865-b2"/>
  <participant participant_id="par-cust"><disassociate-time>2026-03-02T14:06:00Z</disassociate-time></participant>
  <participantstreamassoc participant_id="par-cust2">
    <send>str-cust</send>
    <recv>str-agent</recv>
  </participantstreamassoc>
</recording>
"#;

#[tokio::test]
async fn reinvite_transfer_moves_the_customer_stream_to_a_new_caller() {
    let gw = Gateway::start("");
    let invite = fixture("rfc7865-complete.body");
    let mut src = Src::call(&gw, "xfer-1@test", "<sip:sbc@192.0.2.10>", &[("Require", "siprec")], &invite).await;
    src.rtp(&[0, 1], 40).await;
    // Same SDP (a new version), partial metadata.
    let boundary = "rfc7865-boundary";
    let sdp = invite.body.split(&format!("--{boundary}")).nth(1).expect("sdp part").replace(" 1 IN IP4", " 2 IN IP4");
    let body = format!(
        "--{boundary}{sdp}--{boundary}\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{}--{boundary}--\r\n",
        TRANSFER.replace('\n', "\r\n")
    );
    let reinvite = Fixture { content_type: invite.content_type.clone(), declared_len: None, body };
    let resp = src.send("INVITE", Some(&reinvite)).await;
    assert_eq!(resp.status(), Some(200));
    src.rtp(&[0, 1], 60).await;
    src.bye(None).await;
    let rec = gw.wait_for_recording(1, WAIT);
    assert_contact(&rec, "agent", 0, Some("2101"), Some("2101"));
    // The second caller talked longest: the customer contact; both are on channel 1.
    assert_contact(&rec, "customer", 1, Some("+15550199"), None);
    assert_channel_tone(&rec, 0, TONES[1], 0.2, 2.0);
    assert_channel_tone(&rec, 1, TONES[0], 0.2, 2.0);
    let parts = rec.info["metaData"]["participants"].as_array().unwrap();
    let first = parts.iter().find(|p| p["participantId"] == "par-cust").expect("first caller");
    assert_eq!((first["side"].as_str(), first["channel"].as_u64()), (Some("customer"), Some(1)), "{first:#}");
    assert!(first["leftMs"].as_u64().is_some(), "{first:#}");
    let history = rec.info["metaData"]["metadataHistory"].as_array().unwrap();
    let changes = history[1]["changes"].to_string();
    assert_eq!(history[1]["via"], "re-INVITE");
    assert!(changes.contains("stream-moved") && changes.contains("par-cust2"), "{changes}");
    assert_fields(&rec, "Unknown", "grp-7865-a1", None);
}

/// A supervisor barges in: a partial document in a bare UPDATE body, sending on the third
/// m-line the INVITE offered for that purpose.
const BARGE_IN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>partial</datamode>
  <participant participant_id="par-super">
    <nameID aor="sip:2900@pbx.example.com"><name>Sam Supervisor</name></nameID>
  </participant>
  <stream stream_id="str-super" session_id="ses-7865-b2"><label>3</label></stream>
  <participantstreamassoc participant_id="par-super">
    <send>str-super</send>
    <recv>str-cust</recv>
  </participantstreamassoc>
</recording>
"#;

#[tokio::test]
async fn update_with_a_bare_body_mixes_a_barging_supervisor_on_the_agent_side() {
    let gw = Gateway::start("");
    let mut invite = fixture("rfc7865-complete.body");
    invite.body = invite.body.replacen(
        "a=label:2\r\n",
        "a=label:2\r\nm=audio 40004 RTP/AVP 0\r\na=sendonly\r\na=label:3\r\n",
        1,
    );
    let mut src = Src::call(&gw, "barge-1@test", "<sip:sbc@192.0.2.10>", &[], &invite).await;
    assert_eq!(src.streams.len(), 3);
    src.rtp(&[0, 1], 50).await;
    let resp = src.send("UPDATE", Some(&bare("application/rs-metadata+xml", BARGE_IN))).await;
    assert_eq!(resp.status(), Some(200));
    src.rtp(&[0, 1, 2], 50).await;
    src.bye(None).await;
    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.wav.spec.channels, 2, "{:#}", rec.info);
    assert_contact(&rec, "agent", 0, Some("2101"), Some("2101"));
    assert_contact(&rec, "customer", 1, Some("+15550142"), None);
    // Before the barge-in the agent channel is the agent alone; after, agent and supervisor.
    assert_channel_tone(&rec, 0, TONES[1], 0.2, 0.9);
    assert_no_tone(&rec, 0, TONES[2], 0.2, 0.9);
    let ch0 = rec.wav.channel(0);
    let (a, s) = (ch0.tone_share(TONES[1], 1.3, 1.9), ch0.tone_share(TONES[2], 1.3, 1.9));
    assert!(a > 0.3 && s > 0.3, "agent {a:.2} and supervisor {s:.2} mixed on channel 0\n{:#}", rec.info);
    assert_channel_tone(&rec, 1, TONES[0], 0.2, 1.9);
    assert_no_tone(&rec, 1, TONES[2], 1.3, 1.9);
    let parts = rec.info["metaData"]["participants"].as_array().unwrap();
    let sup = parts.iter().find(|p| p["participantId"] == "par-super").expect("supervisor listed");
    assert_eq!((sup["side"].as_str(), sup["channel"].as_u64(), sup["contact"].as_bool()), (Some("agent"), Some(0), Some(false)));
    let history = rec.info["metaData"]["metadataHistory"].as_array().unwrap();
    assert_eq!(history[1]["via"], "UPDATE");
    assert!(history[1]["changes"].to_string().contains("joined"), "{history:#?}");
}

#[tokio::test]
async fn broken_xml_is_recorded_and_kept_raw() {
    let gw = Gateway::start("");
    let fx = fixture("broken-xml.body");
    let mut src = Src::call(&gw, "broken-1@test", "<sip:sbc@192.0.2.143>", &[], &fx).await;
    src.rtp(&[0, 1], 50).await;
    src.bye(None).await;
    let rec = gw.wait_for_recording(1, WAIT);
    assert_channel_tone(&rec, 0, TONES[1], 0.3, 0.8);
    assert_channel_tone(&rec, 1, TONES[0], 0.3, 0.8);
    // 5107 is an extension: the agent; the caller is the customer (callingParty): inbound.
    assert_contact(&rec, "agent", 0, Some("5107"), Some("5107"));
    assert_contact(&rec, "customer", 1, Some("+15550111111"), None);
    assert_eq!(rec.info["direction"], "Inbound", "{:#}", rec.info);
    let gwm = &rec.info["metaData"]["gateway"];
    let raw = gwm["metadataRaw"].as_str().unwrap_or_else(|| panic!("raw document kept: {gwm:#}"));
    assert!(raw.contains("<name>Smith < Sons & Co</name>"), "{raw}");
    assert!(gwm["metadataWarnings"].as_array().is_some_and(|w| !w.is_empty()), "{gwm:#}");
}

#[tokio::test]
async fn metadata_over_max_size_gets_413_on_invite_and_on_update() {
    let gw = Gateway::start("[metadata]\nmax_size = 1024\n");
    let big = fixture("rfc7865-complete.body");
    assert!(big.body.len() > 1024);
    let peer = UdpPeer::bind(gw.udp_addr()).await;
    let local = peer.local;
    let invite = format!(
        "INVITE sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-big;rport\r\nMax-Forwards: 70\r\n\
         From: <sip:src@example.com>;tag=big\r\nTo: <sip:srs@127.0.0.1>\r\nCall-ID: big-1@test\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:src@{local}>\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n{}",
        big.content_type,
        big.body.len(),
        big.body
    );
    peer.send(&invite).await;
    assert_eq!(peer.final_response().await.status(), Some(413));

    let mut src = Src::call(&gw, "big-2@test", "<sip:src@example.com>", &[], &fixture("ribbon-sonus-bye.body").sdp_only()).await;
    let resp = src.send("UPDATE", Some(&bare("application/rs-metadata+xml", &fixture("rfc7865-update-joins.body").body.repeat(2)))).await;
    assert_eq!(resp.status(), Some(413));
    src.rtp(&[0], 10).await;
    src.bye(None).await;
    gw.wait_for_recording(1, WAIT);
}

impl Fixture {
    /// A plain one-stream SDP offer (for calls whose metadata comes later).
    fn sdp_only(&self) -> Fixture {
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\na=label:1\r\n";
        Fixture { content_type: "application/sdp".into(), declared_len: None, body: sdp.into() }
    }
}

/// The same calls with sipp as the SRC's signalling: a scenario written here for the fixture
/// (sipp sends the vendor's headers and the body, ACKs, holds the call for `hold_ms` and sends
/// the BYE); the test plays the SRC's media, one tone per stream, to the ports the gateway
/// logs with "recording started".
fn sipp_scenario(headers: &[(&str, &str)], fx: &Fixture, hold_ms: u64) -> String {
    let mut extra = String::new();
    for (n, v) in headers {
        extra.push_str(&format!("      {n}: {v}\n"));
    }
    assert!(!fx.body.contains("]]>") && !fx.body.contains('['), "the body fits a sipp CDATA message");
    let body = fx.body.replace("\r\n", "\n");
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="vendor INVITE">
  <send retrans="500">
    <![CDATA[

      INVITE sip:srs@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[pid]-inv-[call_number]
      From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SRC[call_number]
      To: <sip:srs@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Max-Forwards: 70
      Contact: <sip:src@[local_ip]:[local_port]>;+sip.src
{extra}      Content-Type: {}
      Content-Length: [len]

{body}
    ]]>
  </send>
  <recv response="100" optional="true" />
  <recv response="200" rtd="true" />
  <send>
    <![CDATA[

      ACK sip:srs@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SRC[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="{hold_ms}" />
  <send retrans="500">
    <![CDATA[

      BYE sip:srs@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:src@[local_ip]:[local_port]>;tag=[pid]SRC[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true" />
</scenario>
"#,
        fx.content_type
    )
}

/// Runs the fixture's call with sipp signalling and the test's RTP (PCMU, 1 s per stream).
async fn sipp_call(gw: &Gateway, headers: &[(&str, &str)], fx: &Fixture) -> Recording {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("vendor_invite.xml");
    std::fs::write(&scenario, sipp_scenario(headers, fx, 1600)).expect("write scenario");
    let sipp = support::sipp::SippCall::new(scenario.to_str().expect("utf-8 path")).start(gw.udp_addr());
    let line = gw.wait_for_log("recording started", WAIT);
    // `ports=[20000, 20002]`: a list with blanks, which log_field would cut.
    let list = line
        .split_once("ports=[")
        .and_then(|(_, rest)| rest.split_once(']'))
        .unwrap_or_else(|| panic!("no ports= in {line}"))
        .0;
    let ports: Vec<u16> = list
        .split(',')
        .map(|p| p.trim().parse().expect("port"))
        .collect();
    let mut streams = Vec::new();
    for (i, port) in ports.into_iter().enumerate() {
        streams.push(Stream {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            to: SocketAddr::from(([127, 0, 0, 1], port)),
            ssrc: 0x2000 + i as u32,
            pt: 0,
            audio: ulaw_tone(TONES[i], 12000.0, 5.0),
            seq: 0,
        });
    }
    let mut tick = tokio::time::interval(PACKET);
    for _ in 0..50 {
        tick.tick().await;
        for s in &mut streams {
            let at = usize::from(s.seq) * 160 % (s.audio.len() - 160);
            let p = rtp(s.pt, s.seq, s.ssrc, &s.audio[at..at + 160]);
            s.socket.send_to(&p, s.to).await.unwrap();
            s.seq += 1;
        }
    }
    tokio::task::spawn_blocking(move || sipp.finish()).await.expect("sipp thread");
    gw.wait_for_recording(1, WAIT)
}

#[tokio::test]
async fn sipp_as_cisco_cube() {
    let gw = Gateway::start("");
    let headers = [
        ("User-Agent", "Cisco-SIPGateway/IOS-17.6.1"),
        ("Require", "siprec"),
        ("Cisco-Gucid", "0123456789ABCDEF0123456789ABCDEF"),
    ];
    let rec = sipp_call(&gw, &headers, &fixture("cisco-cube.body")).await;
    assert_contact(&rec, "agent", 0, Some("3302"), Some("3302"));
    assert_contact(&rec, "customer", 1, Some("+15550177"), None);
    assert_channel_tone(&rec, 0, TONES[1], 0.3, 0.8);
    assert_channel_tone(&rec, 1, TONES[0], 0.3, 0.8);
    assert_fields(&rec, "Unknown", "0123456789ABCDEF0123456789ABCDEF", None);
}

#[tokio::test]
async fn sipp_as_oracle_sbc() {
    let gw = Gateway::start("[mapping]\nexternal_realms = [\"peerCarrierA\"]\n");
    let headers = [("User-Agent", "Oracle ESBC"), ("Require", "siprec"), ("User-to-User", ORACLE_UUI)];
    let rec = sipp_call(&gw, &headers, &fixture("oracle-acme.body")).await;
    assert_contact(&rec, "customer", 1, Some("+15550160"), None);
    assert_contact(&rec, "agent", 0, Some("+18005550100"), None);
    assert_channel_tone(&rec, 0, TONES[1], 0.3, 0.8);
    assert_channel_tone(&rec, 1, TONES[0], 0.3, 0.8);
    assert_fields(&rec, "Inbound", "00071252771778010117", Some("8005550100"));
}
