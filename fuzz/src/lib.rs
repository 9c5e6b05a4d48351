//! The fuzz targets' bodies, one function per target, each taking the raw input bytes.
//!
//! Shared by the cargo-fuzz binaries in `fuzz/fuzz_targets/` (nightly, libFuzzer) and by the
//! stable test `tests/fuzz_corpus.rs`, which includes this file with `#[path]` and replays every
//! corpus and regression input through it on each `cargo test`. Each function runs a parser the
//! way the gateway runs it on network input and panics only when the parser panics or a
//! property the gateway relies on fails (a message we serialize must parse again and serialize
//! to the same bytes; an SDP answer we write must parse; a timeline must hand out exactly the
//! call's length). It does no I/O and reads no clock other than one base instant.
//!
//! Paths name `siprec_gateway::` rather than `crate::` so that both includers can use it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use siprec_gateway::media::g711::{self, Law};
use siprec_gateway::media::timeline::{RtpMeta, Timeline};
use siprec_gateway::sip::message::{self, Framed, MAX_MESSAGE_SIZE, Message};
use siprec_gateway::siprec::sdp::{self, MediaAnswer};
use siprec_gateway::siprec::{OfferLimits, metadata, metadata_update, multipart, parse_offer};

/// Names of the targets, as in `fuzz/Cargo.toml` and the directories under `fuzz/corpus/`.
pub const TARGETS: [&str; 6] = ["sip_message", "multipart", "sdp", "metadata", "offer", "rtp"];

/// The entry point of target `name`.
pub fn entry(name: &str) -> Option<fn(&[u8])> {
    Some(match name {
        "sip_message" => sip_message,
        "multipart" => multipart,
        "sdp" => sdp,
        "metadata" => metadata,
        "offer" => offer,
        "rtp" => rtp,
        _ => return None,
    })
}

/// A SIP message as the transports see it: framed from a stream (TCP/TLS), and whole as a UDP
/// datagram. A message that parses must survive `to_bytes` → `parse` unchanged, frame as one
/// message, and have a response that parses.
pub fn sip_message(data: &[u8]) {
    match message::frame(data) {
        Ok(Some(Framed::KeepAlive(n))) => assert!(n > 0 && n <= data.len(), "keep-alive of {n} bytes"),
        Ok(Some(Framed::Message(n))) => {
            assert!(n <= data.len(), "framed {n} of {} bytes", data.len());
            sip_datagram(&data[..n]);
        }
        Ok(None) | Err(_) => {}
    }
    sip_datagram(data);
}

fn sip_datagram(data: &[u8]) {
    // What the endpoint reads of a request it can only answer with 400 or 505.
    if let Ok(msg) = Message::parse_unchecked(data) {
        read_headers(&msg);
    }
    let Ok(msg) = Message::parse(data) else { return };
    let _ = msg.check_request();
    read_headers(&msg);

    let wire = msg.to_bytes();
    if wire.len() > MAX_MESSAGE_SIZE {
        return; // `to_bytes` may add a Content-Length and ": " separators to a full datagram
    }
    let again = Message::parse(&wire).unwrap_or_else(|e| panic!("serialized message does not parse: {e}"));
    // The same message, but for the Content-Length that `to_bytes` writes itself.
    let fields = |m: &Message| {
        let headers: Vec<_> = m
            .headers
            .iter()
            .filter(|(n, _)| !message::header_is(n, "Content-Length"))
            .cloned()
            .collect();
        (m.start.clone(), headers, String::from_utf8_lossy(&m.body).into_owned())
    };
    assert_eq!(fields(&again), fields(&msg), "serialize → parse changed the message");
    assert_eq!(
        message::frame(&wire),
        Ok(Some(Framed::Message(wire.len()))),
        "serialized message does not frame"
    );

    if msg.method().is_some() {
        let response = msg.response(400, "Bad Request", Some("fz1")).to_bytes();
        if response.len() <= MAX_MESSAGE_SIZE
            && let Err(e) = Message::parse(&response)
        {
            panic!("our response to a parsed request does not parse: {e}");
        }
    }
}

/// The header accessors the endpoint and the session layer call on every request.
fn read_headers(msg: &Message) {
    let _ = (msg.call_id(), msg.cseq(), msg.status(), msg.request_uri());
    let _ = (msg.tag("From"), msg.tag("To"));
    let _ = msg.option_tags("Require").count() + msg.option_tags("Supported").count();
    if let Some(via) = msg.top_via() {
        let sent_by = via.sent_by();
        let _ = (via.branch(), via.has_rport(), message::split_host_port(&sent_by));
    }
    for contact in msg.headers_named("Contact").flat_map(message::split_list) {
        let uri = message::name_addr_uri(contact);
        let _ = (message::name_addr_display(contact), message::strip_sip_scheme(uri));
        let _ = message::param(message::name_addr_params(contact), "expires");
    }
    if let Some(se) = msg.header("Session-Expires") {
        let _ = message::param(se, "refresher");
    }
}

/// A multipart body: first line the Content-Type value, the rest the body (see [`split_input`]).
pub fn multipart(data: &[u8]) {
    let (content_type, body) = split_input(data);
    let Ok(parts) = multipart::split(content_type.as_deref().unwrap_or_default(), body) else {
        return;
    };
    for part in &parts {
        let _ = (part.header("content-type"), part.header("content-disposition"));
        let _ = part.body.len();
    }
}

/// An SDP body, read as the offer parser reads it (lossy UTF-8), planned into channels, and
/// answered. Our answer must parse and keep one m-line per offered m-line, labels included.
pub fn sdp(data: &[u8]) {
    let Ok(offer) = sdp::parse(&String::from_utf8_lossy(data)) else {
        return;
    };
    let _ = siprec_gateway::session::plan_streams(&offer, 8);
    let answers: Vec<MediaAnswer> = offer
        .media
        .iter()
        .zip((20_000u16..).step_by(2))
        .map(|(m, port)| {
            let _ = m.connection_or(&offer);
            MediaAnswer {
                port,
                codec: m.choose_codec(),
                crypto: None,
            }
        })
        .collect();
    let text = sdp::build_answer(&offer, &answers, IpAddr::V4(Ipv4Addr::LOCALHOST), 1, 1);
    let answer = sdp::parse(&text).unwrap_or_else(|e| panic!("our answer does not parse: {e}\n{text}"));
    assert_eq!(
        answer.media.len(),
        offer.media.len(),
        "answer has another m-line count\n{text}"
    );
    for (a, o) in answer.media.iter().zip(&offer.media) {
        assert_eq!(a.media, o.media, "answer changed a media type\n{text}");
        if a.port != 0 {
            assert_eq!(a.label, o.label, "answer changed a label\n{text}");
        }
    }
}

/// An `application/rs-metadata+xml` document, and the lookups the mapping makes.
pub fn metadata(data: &[u8]) {
    let _ = metadata::tree::parse(data);
    let Ok(md) = metadata::parse_metadata(data) else { return };
    let _ = md.sip_session_id();
    for stream in &md.streams {
        if let Some(label) = &stream.label {
            let _ = md.participant_sending_label(label);
        }
    }
}

/// A recording INVITE's body with its Content-Type (see [`split_input`]), as an initial offer
/// and as an in-dialog metadata update.
pub fn offer(data: &[u8]) {
    let (content_type, body) = split_input(data);
    let limits = OfferLimits::default();
    let _ = parse_offer(content_type.as_deref(), body, &limits);
    let _ = metadata_update(content_type.as_deref(), body, &limits);
}

/// Splits an input in the format of `tests/fixtures/offers/*.sip`: a first line holding the
/// Content-Type value (an optional `Content-Type: ` prefix is removed; an empty line means no
/// Content-Type), then the body, with one blank line before it removed if present.
pub fn split_input(data: &[u8]) -> (Option<String>, &[u8]) {
    let (line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches('\r');
    let value = line.strip_prefix("Content-Type: ").unwrap_or(line);
    let content_type = (!value.is_empty()).then(|| value.to_owned());
    let body = rest
        .strip_prefix(b"\r\n")
        .or_else(|| rest.strip_prefix(b"\n"))
        .unwrap_or(rest);
    (content_type, body)
}

/// Room for decoded samples per packet, as in the media thread.
const MAX_SAMPLES: usize = 4096;

/// RTP packets placed on a call's timeline the way the media thread does it. Input: one byte of
/// channel count, one of reorder window, then records of `[gap: u16 LE][flags][len: u16 LE]
/// [len bytes of datagram]`: the packet arrives `gap & 0xfff` ms after the previous one, on
/// channel `flags % channels`; flag bit 7 runs the periodic write-out after it. Every datagram
/// goes through `rtp_types`; payload type 8 is decoded as A-law, any other as µ-law. At the end
/// the call is finished, which must hand out exactly the frames from its start to its end.
pub fn rtp(data: &[u8]) {
    let [channels, window, ref records @ ..] = *data else {
        return;
    };
    let channels = usize::from(channels % 4) + 1;
    let window = Duration::from_millis(20 + u64::from(window));
    let t0 = siprec_gateway::clock::now();
    let mut timeline = Timeline::new(t0, 8000, channels, window);
    let mut now = t0;
    let mut samples_out = 0usize;
    let mut count = |chunk: &[i16]| -> Result<(), ()> {
        assert_eq!(chunk.len() % channels, 0, "a chunk of partial frames");
        samples_out += chunk.len();
        Ok(())
    };
    let mut pcm = [0i16; MAX_SAMPLES];
    let mut rest = records;
    while let [g0, g1, flags, l0, l1, ref tail @ ..] = *rest {
        now += Duration::from_millis(u64::from(u16::from_le_bytes([g0, g1]) & 0x0fff));
        let len = usize::from(u16::from_le_bytes([l0, l1])).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        if let Ok(pkt) = rtp_types::RtpPacket::parse(datagram) {
            let law = if pkt.payload_type() == 8 { Law::A } else { Law::Mu };
            let n = g711::decode(law, pkt.payload(), &mut pcm);
            let meta = RtpMeta {
                ssrc: pkt.ssrc(),
                seq: pkt.sequence_number(),
                timestamp: pkt.timestamp(),
                marker: pkt.marker_bit(),
            };
            timeline.place(usize::from(flags) % channels, now, meta, &pcm[..n]);
        }
        if flags & 0x80 != 0 {
            let _ = timeline.advance(now, &mut count);
        }
    }
    let end = now + Duration::from_millis(20);
    let _ = timeline.finish(end, &mut count);
    assert_eq!(
        timeline.frames_written(),
        timeline.frames_at(end),
        "finish did not reach the call's end"
    );
    assert_eq!(
        samples_out as u64,
        timeline.frames_written() * channels as u64,
        "frames handed out ≠ frames written"
    );
}
