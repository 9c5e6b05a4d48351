//! SIPREC offer parsing against the vendor-shaped bodies in `tests/fixtures/offers/`
//! (format described in that directory's README), plus a no-panic sweep over truncated and
//! corrupted copies of every fixture.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use siprec_gateway::siprec::metadata::Metadata;
use siprec_gateway::siprec::sdp::{self, AudioCodec, ChosenCodec, Direction, MediaAnswer};
use siprec_gateway::siprec::{MetadataOutcome, Offer, OfferError, OfferLimits, parse_offer};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/offers")
}

/// Splits a fixture file into its Content-Type value and the body bytes.
fn load(name: &str) -> (String, Vec<u8>) {
    split_fixture(&std::fs::read(fixtures_dir().join(name)).unwrap())
}

fn split_fixture(file: &[u8]) -> (String, Vec<u8>) {
    let header_end = file.iter().position(|&b| b == b'\n').unwrap();
    let header = std::str::from_utf8(&file[..header_end]).unwrap().trim_end();
    let content_type = header.strip_prefix("Content-Type: ").unwrap().to_owned();
    let rest = &file[header_end + 1..];
    let body = rest
        .strip_prefix(b"\r\n")
        .or_else(|| rest.strip_prefix(b"\n"))
        .unwrap();
    (content_type, body.to_vec())
}

fn offer(name: &str) -> Offer {
    let (ct, body) = load(name);
    parse_offer(Some(&ct), &body, &OfferLimits::default()).unwrap()
}

fn metadata(offer: &Offer) -> &Metadata {
    match &offer.metadata {
        MetadataOutcome::Parsed(md) => md,
        other => panic!("metadata not parsed: {other:?}"),
    }
}

fn labels(offer: &Offer) -> Vec<Option<&str>> {
    offer.sdp.media.iter().map(|m| m.label.as_deref()).collect()
}

fn sender_id<'a>(md: &'a Metadata, label: &str) -> Option<&'a str> {
    md.participant_sending_label(label).map(|p| p.id.as_str())
}

fn codec(pt: u8, codec: AudioCodec, te: Option<u8>) -> Option<ChosenCodec> {
    Some(ChosenCodec {
        payload_type: pt,
        codec,
        telephone_event: te,
        comfort_noise: None,
    })
}

#[test]
fn cube_three_parts_maps_each_label_to_its_speaker() {
    let offer = offer("cube-style-three-parts.sip");
    assert_eq!(labels(&offer), [Some("1"), Some("2")]);
    for m in &offer.sdp.media {
        assert_eq!(m.choose_codec(), codec(0, AudioCodec::Pcmu, Some(101)));
        assert_eq!(m.direction, Direction::SendOnly);
    }
    assert_eq!(
        offer.sdp.media[1].connection_or(&offer.sdp),
        Some(IpAddr::V4(Ipv4Addr::new(10, 20, 30, 41)))
    );
    let md = metadata(&offer);
    assert_eq!(
        md.sip_session_id(),
        Some("0a1b2c3d4e5f60718293a4b5c6d7e8f9;remote=f9e8d7c6b5a4938271605f4e3d2c1b0a")
    );
    let caller = md.participant_sending_label("1").unwrap();
    assert_eq!(
        (caller.aor.as_deref(), caller.name.as_deref()),
        (Some("sip:4101@10.99.0.5"), None)
    );
    let callee = md.participant_sending_label("2").unwrap();
    assert_eq!(
        (callee.aor.as_deref(), callee.name.as_deref()),
        (Some("sip:4102@10.99.0.5"), Some("4102"))
    );
    assert!(md.warnings.is_empty(), "{:?}", md.warnings);
}

#[test]
fn acme_legacy_namespace_sends_inside_participants() {
    let offer = offer("acme-style-legacy-ns.sip");
    assert_eq!(labels(&offer), [Some("50331649"), Some("50331650")]);
    let md = metadata(&offer);
    assert_eq!(md.sessions[0].id, "c2Vzc2lvbi1vcmFjbGUtMQ==");
    assert_eq!(md.sip_session_id(), None);
    let caller = md.participant_sending_label("50331649").unwrap();
    assert_eq!(caller.aor.as_deref(), Some("sip:5550142@172.20.9.9"));
    assert_eq!(sender_id(md, "50331650"), Some("cGFydC1vcmFjbGUtY2FsbGVl"));
    assert_eq!(
        md.streams[1].session_ref.as_deref(),
        Some("c2Vzc2lvbi1vcmFjbGUtMQ==")
    );
}

#[test]
fn broadworks_mangled_metadata_is_invalid_but_audio_is_kept() {
    let offer = offer("broadworks-style-mangled-metadata-first.sip");
    assert_eq!(offer.sdp.connection, None, "masked X.X.X.X address");
    assert_eq!(offer.sdp.media.len(), 1);
    // G.722 (PT 9) is offered after PCMA: the best quality decoded wins.
    assert_eq!(
        offer.sdp.media[0].choose_codec(),
        codec(9, AudioCodec::G722, Some(101))
    );
    let MetadataOutcome::Invalid { error, raw } = &offer.metadata else {
        panic!("{:?}", offer.metadata)
    };
    assert!(error.contains("malformed"), "{error}");
    assert!(
        raw.starts_with("<recording_metadata xmlns=\"urn:ietf:params:xml:ns:siprec\">complete")
    );
}

#[test]
fn avaya_datamode_pcma_with_telephone_event_97() {
    let offer = offer("avaya-style-datamode.sip");
    assert_eq!(labels(&offer), [Some("10"), Some("20")]);
    for m in &offer.sdp.media {
        assert_eq!(m.choose_codec(), codec(8, AudioCodec::Pcma, Some(97)));
    }
    let md = metadata(&offer);
    assert_eq!(md.sessions[0].id, "01AB0900815E5D6EDBBD52");
    assert_eq!(sender_id(md, "10"), Some("7b3ee839cb1cd459ec2f"));
    assert_eq!(sender_id(md, "20"), Some("00112233445566778899"));
}

#[test]
fn ribbon_prefixed_bare_lf_media_level_connection() {
    let offer = offer("ribbon-style-prefixed-lf.sip");
    assert_eq!(offer.sdp.connection, None);
    let media_addr = IpAddr::V4(Ipv4Addr::new(172, 31, 200, 77));
    assert!(
        offer
            .sdp
            .media
            .iter()
            .all(|m| m.connection_or(&offer.sdp) == Some(media_addr))
    );
    let md = metadata(&offer);
    assert_eq!(md.group_id.as_deref(), Some("Z3JvdXAtcmliYm9uLTAwMQ=="));
    assert_eq!(
        md.sessions[0].group_ref.as_deref(),
        Some("Z3JvdXAtcmliYm9uLTAwMQ==")
    );
    // The calling desk sends on label 2 here, not 1: labels carry no meaning on their own.
    let desk = md.participant_sending_label("2").unwrap();
    assert_eq!(desk.name.as_deref(), Some("Desk 3100"));
    assert_eq!(desk.aor.as_deref(), Some("3125553100@172.31.9.1"));
    let other = md.participant_sending_label("1").unwrap();
    assert_eq!(
        (other.id.as_str(), other.name.as_deref()),
        ("cGFydC1yaWJib24tQg==", None)
    );
}

#[test]
fn opensips_without_connection_or_streams() {
    let offer = offer("opensips-style-no-streams.sip");
    assert!(
        offer
            .sdp
            .media
            .iter()
            .all(|m| m.connection_or(&offer.sdp).is_none())
    );
    assert_eq!(
        offer.sdp.media[0].choose_codec(),
        codec(0, AudioCodec::Pcmu, Some(101))
    );
    assert_eq!(
        offer.sdp.media[1].choose_codec(),
        codec(8, AudioCodec::Pcma, Some(101))
    );
    let md = metadata(&offer);
    assert_eq!(md.participants.len(), 2);
    assert!(md.streams.is_empty());
    assert_eq!(md.participant_sending_label("1"), None);
    assert_eq!(
        md.sip_session_id(),
        Some("77aa1c0d9e8f7a6b5c4d3e2f1a0b9c8d@198.18.5.20")
    );
}

#[test]
fn rfc7865_audio_video_offer_answer_rejects_video() {
    let offer = offer("rfc7865-style-audio-video.sip");
    let md = metadata(&offer);
    assert_eq!(md.group_id.as_deref(), Some("R3JvdXBJZEZvclRlc3Q="));
    assert_eq!(
        md.participant_sending_label("96").unwrap().name.as_deref(),
        Some("Carol")
    );
    assert_eq!(
        md.participant_sending_label("97").unwrap().name.as_deref(),
        Some("Dave")
    );
    assert_eq!(
        md.participant_sending_label("98").unwrap().name.as_deref(),
        Some("Carol")
    );

    let answers: Vec<MediaAnswer> = offer
        .sdp
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| MediaAnswer {
            port: 30000 + 2 * i as u16,
            codec: m.choose_codec(),
            crypto: None,
        })
        .collect();
    assert_eq!(answers[2].codec, None);
    let answer = sdp::build_answer(
        &offer.sdp,
        &answers,
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)),
        5,
        6,
    );
    let m_lines: Vec<&str> = answer.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(
        m_lines,
        [
            "m=audio 30000 RTP/AVP 0",
            "m=audio 30002 RTP/AVP 0",
            "m=video 0 RTP/AVPF 96"
        ]
    );
    assert!(answer.contains("a=label:97\r\na=recvonly\r\n"));
}

#[test]
fn cube_inactive_streams_are_answered_inactive() {
    let offer = offer("cube-style-inactive.sip");
    assert!(
        offer
            .sdp
            .media
            .iter()
            .all(|m| m.direction == Direction::Inactive)
    );
    let chosen = offer.sdp.media[0].choose_codec();
    let cn = Some(ChosenCodec { comfort_noise: Some(19), ..codec(0, AudioCodec::Pcmu, None).unwrap() });
    assert_eq!(chosen, cn);
    let answers = [
        MediaAnswer {
            port: 4000,
            codec: chosen,
            crypto: None,
        },
        MediaAnswer {
            port: 4002,
            codec: chosen,
            crypto: None,
        },
    ];
    let answer = sdp::build_answer(&offer.sdp, &answers, IpAddr::V4(Ipv4Addr::LOCALHOST), 1, 1);
    assert_eq!(answer.matches("a=inactive\r\n").count(), 2, "{answer}");
    assert!(!answer.contains("recvonly"));
    let md = metadata(&offer);
    assert_eq!(md.streams.len(), 2);
    assert_eq!(md.participant_sending_label("1"), None);
}

#[test]
fn audiocodes_bare_lf_without_close_delimiter() {
    let offer = offer("audiocodes-style-lf-no-close.sip");
    assert_eq!(labels(&offer), [Some("a_leg"), Some("b_leg")]);
    assert_eq!(
        offer.sdp.media[1].choose_codec(),
        codec(8, AudioCodec::Pcma, Some(101))
    );
    let md = metadata(&offer);
    assert_eq!(
        md.group_id.as_deref(),
        Some("00000000-0000-0000-0000-00000000a001")
    );
    let a = md.participant_sending_label("a_leg").unwrap();
    assert_eq!(
        (a.id.as_str(), a.aor.as_deref()),
        ("ac-part-1", Some("2125550111@192.168.77.10"))
    );
    assert_eq!(a.receives, ["ac-stream-b"]);
    assert_eq!(sender_id(md, "b_leg"), Some("ac-part-2"));
}

#[test]
fn broadworks_draft_namespace_mixed_stream() {
    let offer = offer("broadworks-style-draft-ns.sip");
    assert_eq!(
        offer.sdp.media[0].choose_codec(),
        codec(0, AudioCodec::Pcmu, Some(101))
    );
    let md = metadata(&offer);
    assert_eq!(
        md.group_id.as_deref(),
        Some("urn:uuid:6a1d0e2f-0000-4000-8000-00000000c002")
    );
    // Both parties send the one mixed stream; the first listed is returned.
    assert_eq!(
        md.participant_sending_label("1").unwrap().aor.as_deref(),
        Some("sip:AGENT_LINE")
    );
    assert_eq!(md.participants[1].sends, md.participants[0].sends);
}

#[test]
fn plain_sdp_has_absent_metadata() {
    let offer = offer("plain-sdp.sip");
    assert_eq!(offer.metadata, MetadataOutcome::Absent);
    assert_eq!(offer.sdp.media.len(), 1);
    assert_eq!(offer.sdp.media[0].direction, Direction::SendRecv);
}

#[test]
fn metadata_above_limit_is_rejected_before_parsing() {
    let (ct, body) = load("cube-style-three-parts.sip");
    let err = parse_offer(
        Some(&ct),
        &body,
        &OfferLimits {
            max_metadata_bytes: 512,
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, OfferError::MetadataTooLarge { size, limit: 512 } if size > 512),
        "{err:?}"
    );
}

/// Every fixture, and every prefix and a set of deterministic corruptions of it, goes through
/// `parse_offer` without panicking. A prefix cut inside the SDP may still parse (the missing
/// close delimiter is tolerated), so only the absence of panics is asserted for them.
#[test]
fn truncated_and_corrupted_fixtures_never_panic() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sip"))
        .collect();
    names.sort();
    assert!(names.len() >= 11, "fixtures missing: {names:?}");

    let limits = OfferLimits::default();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut calls = 0usize;
    for path in &names {
        let (ct, body) = split_fixture(&std::fs::read(path).unwrap());
        assert!(
            parse_offer(Some(&ct), &body, &limits).is_ok(),
            "{} must parse",
            path.display()
        );
        for end in 0..body.len() {
            let _ = parse_offer(Some(&ct), &body[..end], &limits);
            let _ = parse_offer(None, &body[..end], &limits);
            calls += 2;
        }
        // Overwrite a few bytes with characters that matter to the parsers.
        const NASTY: &[u8] = b"<>/=:;\"'&-\r\n \0\xff\xc3x0";
        for _ in 0..300 {
            let mut copy = body.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(copy.len());
                copy[at] = NASTY[rng.below(NASTY.len())];
            }
            let _ = parse_offer(Some(&ct), &copy, &limits);
            calls += 1;
        }
    }
    assert!(calls > 10_000);
}

/// Tiny deterministic generator so the sweep is the same on every run.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}
