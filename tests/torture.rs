//! RFC 4475 (SIP torture tests) and RFC 5118 (IPv6 torture tests) against the endpoint, on
//! simulated time: each message in `tests/fixtures/torture/` (our own reproductions, see the
//! README there) is fed to a fresh [`Endpoint`] the way the runtime would, and what goes out is
//! compared with what the RFC expects of a UAS that is an SRS. Messages whose point is in the
//! body are also run through the SIPREC offer parser.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Instant;

use siprec_gateway::session;
use siprec_gateway::sip::endpoint::ACCEPT;
use siprec_gateway::sip::message::ParseError;
use siprec_gateway::sip::{Endpoint, EndpointConfig, Event, Message, Peer, Transmit, Transport};
use siprec_gateway::siprec::sdp::{self, MediaAnswer};
use siprec_gateway::siprec::{self, OfferError, OfferLimits};

/// What the RFC expects of us for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exactly one response with this code, and nothing else.
    Answer(u16),
    /// A dialog-creating INVITE handed to the TU (`Event::Invite`) after 100 Trying.
    Invite,
    /// Nothing sent (responses matching no transaction, unanswerable garbage).
    Discard,
}

use Expect::*;

/// Every fixture and its expected treatment, with the RFC section it reproduces.
const CASES: &[(&str, Expect)] = &[
    // RFC 4475 §3.1.1: valid messages, read through their quirks and served.
    ("rfc4475-wsinv.sip", Answer(481)),         // 3.1.1.1: To-tagged, no such dialog
    ("rfc4475-intmeth.sip", Answer(501)),       // 3.1.1.2: unknown method
    ("rfc4475-esc01.sip", Invite),              // 3.1.1.3
    ("rfc4475-escnull.sip", Answer(405)),       // 3.1.1.4: REGISTER is not ours
    ("rfc4475-esc02.sip", Answer(501)),         // 3.1.1.5: RE%47IST%45R is not REGISTER
    ("rfc4475-lwsdisp.sip", Answer(200)),       // 3.1.1.6
    ("rfc4475-longreq.sip", Invite),            // 3.1.1.7
    ("rfc4475-dblreq.sip", Answer(405)),        // 3.1.1.8: the INVITE after it is ignored
    ("rfc4475-semiuri.sip", Answer(200)),       // 3.1.1.9
    ("rfc4475-transports.sip", Answer(200)),    // 3.1.1.10
    ("rfc4475-mpart01.sip", Answer(405)),       // 3.1.1.11: MESSAGE is not ours
    ("rfc4475-unreason.sip", Discard),          // 3.1.1.12: a response to nothing of ours
    ("rfc4475-noreason.sip", Discard),          // 3.1.1.13
    // RFC 4475 §3.1.2: invalid messages.
    ("rfc4475-badinv01.sip", Answer(400)),      // 3.1.2.1
    ("rfc4475-clerr.sip", Answer(400)),         // 3.1.2.2
    ("rfc4475-ncl.sip", Answer(400)),           // 3.1.2.3
    ("rfc4475-scalar02.sip", Answer(400)),      // 3.1.2.4
    ("rfc4475-scalarlg.sip", Discard),          // 3.1.2.5
    ("rfc4475-quotbal.sip", Answer(400)),       // 3.1.2.6
    ("rfc4475-ltgtruri.sip", Answer(400)),      // 3.1.2.7
    ("rfc4475-lwsruri.sip", Answer(400)),       // 3.1.2.8
    ("rfc4475-lwsstart.sip", Answer(400)),      // 3.1.2.9
    ("rfc4475-trws.sip", Answer(400)),          // 3.1.2.10
    ("rfc4475-escruri.sip", Answer(400)),       // 3.1.2.11
    ("rfc4475-baddate.sip", Invite),            // 3.1.2.12: Date is not ours to judge
    ("rfc4475-regbadct.sip", Answer(400)),      // 3.1.2.13
    ("rfc4475-badaspec.sip", Answer(400)),      // 3.1.2.14
    ("rfc4475-baddn.sip", Answer(400)),         // 3.1.2.15
    ("rfc4475-badvers.sip", Answer(505)),       // 3.1.2.16
    ("rfc4475-mismatch01.sip", Answer(400)),    // 3.1.2.17
    ("rfc4475-mismatch02.sip", Answer(501)),    // 3.1.2.18
    ("rfc4475-bigcode.sip", Discard),           // 3.1.2.19
    // RFC 4475 §3.2: transaction identifier.
    ("rfc4475-badbranch.sip", Answer(200)),     // 3.2.1: falls back to RFC 2543 matching
    // RFC 4475 §3.3: application-layer semantics.
    ("rfc4475-insuf.sip", Answer(400)),         // 3.3.1
    ("rfc4475-unkscm.sip", Answer(416)),        // 3.3.2
    ("rfc4475-novelsc.sip", Answer(416)),       // 3.3.3
    ("rfc4475-unksm2.sip", Answer(405)),        // 3.3.4: we are no registrar
    ("rfc4475-bext01.sip", Answer(420)),        // 3.3.5
    ("rfc4475-invut.sip", Invite),              // 3.3.6: 415 is the TU's (see below)
    ("rfc4475-regaut01.sip", Answer(405)),      // 3.3.7
    ("rfc4475-multi01.sip", Answer(400)),       // 3.3.8
    ("rfc4475-mcl01.sip", Answer(400)),         // 3.3.9
    ("rfc4475-bcast.sip", Discard),             // 3.3.10
    ("rfc4475-zeromf.sip", Answer(200)),        // 3.3.11: an endpoint serves OPTIONS at zero
    ("rfc4475-cparam01.sip", Answer(405)),      // 3.3.12
    ("rfc4475-cparam02.sip", Answer(405)),      // 3.3.13
    ("rfc4475-regescrt.sip", Answer(405)),      // 3.3.14
    ("rfc4475-sdp01.sip", Answer(406)),         // 3.3.15
    // RFC 4475 §3.4: backward compatibility.
    ("rfc4475-inv2543.sip", Invite),            // 3.4.1
    // RFC 5118.
    ("rfc5118-ipv6-good.sip", Answer(405)),                    // 4.1: parsed, REGISTER refused
    ("rfc5118-ipv6-bad.sip", Answer(400)),                     // 4.2
    ("rfc5118-port-ambiguous.sip", Answer(405)),               // 4.3
    ("rfc5118-port-unambiguous.sip", Answer(405)),             // 4.4
    ("rfc5118-via-received-param-with-delim.sip", Answer(481)), // 4.5: parsed, no such dialog
    ("rfc5118-via-received-param-no-delim.sip", Answer(200)),  // 4.5
    ("rfc5118-ipv6-in-sdp.sip", Invite),                       // 4.6
    ("rfc5118-mult-ip-in-header.sip", Answer(481)),            // 4.7: parsed, no such dialog
    ("rfc5118-mult-ip-in-sdp.sip", Invite),                    // 4.8
    ("rfc5118-ipv4-mapped-ipv6.sip", Invite),                  // 4.9
    ("rfc5118-ipv6-bug-abnf-3-colons.sip", Answer(400)),       // 4.10
    ("rfc5118-ipv6-correct-abnf-2-colons.sip", Answer(200)),   // 4.10
];

fn load(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torture").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The peer a message arrives from: the transport and address family of its top Via (TCP for
/// TCP, UDP for everything else, responses over UDP).
fn peer_for(bytes: &[u8]) -> Peer {
    let top = Message::parse_unchecked(bytes).ok().and_then(|m| {
        let via = m.top_via()?;
        Some((via.transport.eq_ignore_ascii_case("TCP"), via.host.contains(':')))
    });
    let (tcp, v6) = top.unwrap_or((false, false));
    let (remote, local): (SocketAddr, SocketAddr) = if v6 {
        ("[2001:db8::b:2]:40100".parse().unwrap(), "[2001:db8::a1]:5060".parse().unwrap())
    } else {
        ("198.51.100.1:40100".parse().unwrap(), "203.0.113.10:5060".parse().unwrap())
    };
    Peer { transport: if tcp { Transport::Tcp } else { Transport::Udp }, remote, local, conn: Some(1) }
}

struct Outcome {
    sent: Vec<Transmit>,
    events: Vec<Event>,
}

impl Outcome {
    fn texts(&self) -> Vec<String> {
        self.sent.iter().map(|t| String::from_utf8_lossy(&t.bytes).into_owned()).collect()
    }

    fn status_lines(&self) -> Vec<String> {
        self.texts().iter().map(|t| t.lines().next().unwrap_or("").to_string()).collect()
    }
}

/// Feeds `bytes` to a fresh endpoint at `now` and collects what comes out.
fn feed(bytes: &[u8], now: Instant) -> (Endpoint, Outcome) {
    let mut ep = Endpoint::new(EndpointConfig { user_agent: "siprec-gateway-test".into(), max_update_body: 64 * 1024 }, 4475);
    ep.handle_message(now, peer_for(bytes), bytes);
    let sent = std::iter::from_fn(|| ep.poll_transmit()).collect();
    let events = std::iter::from_fn(|| ep.poll_event()).collect();
    (ep, Outcome { sent, events })
}

fn check(name: &str, expect: Expect) -> Result<(), String> {
    let bytes = load(name);
    let (_, out) = feed(&bytes, siprec_gateway::clock::now());
    let lines = out.status_lines();
    match expect {
        Answer(code) => {
            let [line] = lines.as_slice() else { return Err(format!("expected one {code}, sent {lines:?}")) };
            // Unchecked: an answer to a request without From/To/Call-ID lacks them too.
            let got = Message::parse_unchecked(&out.sent[0].bytes).map_err(|e| format!("our {line:?} does not parse: {e}"))?;
            if got.status() != Some(code) {
                return Err(format!("expected {code}, sent {line:?}"));
            }
            // A refusal says why, for the SBC's logs and ours.
            if code == 400 && !line.contains("Bad Request (") {
                return Err(format!("400 without a reason: {line:?}"));
            }
            if code >= 300 && !out.events.iter().any(|e| matches!(e, Event::Rejected { code: Some(c), .. } if *c == code)) {
                return Err(format!("no Rejected event for {code}: {:?}", out.events));
            }
        }
        Invite => {
            if lines != ["SIP/2.0 100 Trying"] {
                return Err(format!("expected 100 Trying only, sent {lines:?}"));
            }
            if !matches!(out.events.as_slice(), [Event::Invite { .. }]) {
                return Err(format!("expected Event::Invite, got {:?}", out.events));
            }
        }
        Discard => {
            if !lines.is_empty() {
                return Err(format!("expected nothing sent, sent {lines:?}"));
            }
            if out.events.iter().any(|e| !matches!(e, Event::Rejected { code: None, .. })) {
                return Err(format!("expected no event but a drop, got {:?}", out.events));
            }
        }
    }
    Ok(())
}

#[test]
fn every_torture_message_gets_the_rfc_answer() {
    let failures: Vec<String> =
        CASES.iter().filter_map(|(name, expect)| check(name, *expect).err().map(|e| format!("{name}: {e}"))).collect();
    assert!(failures.is_empty(), "{} of {} fixtures failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
}

#[test]
fn every_fixture_in_the_directory_has_a_case() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torture");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sip"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CASES.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    // RFC 4475 has 49 messages, RFC 5118 twelve.
    assert_eq!(listed.iter().filter(|n| n.starts_with("rfc4475-")).count(), 49);
    assert_eq!(listed.iter().filter(|n| n.starts_with("rfc5118-")).count(), 12);
}

/// The request a fixture holds, parsed strictly.
fn request(name: &str) -> Message {
    Message::parse(&load(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn wsinv_fields_are_read_through_the_whitespace() {
    let m = request("rfc4475-wsinv.sip");
    assert_eq!(m.tag("To"), Some("77ab12x"));
    assert_eq!(m.tag("From"), Some("4c9zz1"));
    assert_eq!(m.cseq(), Some((12, "INVITE")));
    assert_eq!(m.header("Max-Forwards"), Some("0057"));
    assert_eq!(m.header("Subject"), Some(""));
    assert_eq!(m.header("OddNewHeader"), Some("first part second part"));
    let via = m.top_via().unwrap();
    assert_eq!((via.transport, via.host, via.branch()), ("UDP", "198.51.100.5", Some("old73kd9")));
    let second: Vec<_> = m.headers_named("Via").nth(1).unwrap().split(',').collect();
    assert_eq!(second.len(), 2);
    assert_eq!(m.body.len(), m.header("Content-Length").unwrap().parse::<usize>().unwrap());
    assert!(m.check_request().is_ok());
    // The 481 goes back along the top Via (no rport: its port, 5060 by default).
    let (_, out) = feed(&load("rfc4475-wsinv.sip"), siprec_gateway::clock::now());
    assert_eq!(out.sent[0].dest, "198.51.100.1:5060".parse().unwrap());
}

#[test]
fn intmeth_odd_characters_survive_into_the_501() {
    let (_, out) = feed(&load("rfc4475-intmeth.sip"), siprec_gateway::clock::now());
    let answer = Message::parse(&out.sent[0].bytes).unwrap();
    assert_eq!(answer.call_id(), "intmeth.w0rd%ZQ-!.*_+'@w0rd`~)(><:\\/\"][?}{");
    assert_eq!(answer.tag("From"), Some("_tag~2'+`*%!-."));
    assert_eq!(answer.cseq(), Some((271828, "~odd.Method-42_*+`.%also'!")));
    assert!(answer.header("Allow").is_some_and(|a| a.contains("INVITE")));
}

#[test]
fn dblreq_second_request_in_the_datagram_is_ignored() {
    let (ep, out) = feed(&load("rfc4475-dblreq.sip"), siprec_gateway::clock::now());
    assert_eq!(out.status_lines(), ["SIP/2.0 405 Method Not Allowed"]);
    assert!(out.events.iter().all(|e| !matches!(e, Event::Invite { .. })));
    assert_eq!(ep.dialog_count(), 0);
    assert!(request("rfc4475-dblreq.sip").body.is_empty());
}

#[test]
fn content_length_problems_are_named_in_the_400() {
    for (name, err) in [
        ("rfc4475-clerr.sip", ParseError::BodyTruncated),
        ("rfc4475-ncl.sip", ParseError::BadContentLength),
        ("rfc4475-mcl01.sip", ParseError::BadContentLength),
    ] {
        assert_eq!(Message::parse(&load(name)), Err(err), "{name}");
        let (_, out) = feed(&load(name), siprec_gateway::clock::now());
        assert!(out.status_lines()[0].contains(&err.to_string()), "{name}: {:?}", out.status_lines());
    }
    // Over a stream the framing fails, so the transport closes the connection.
    for name in ["rfc4475-ncl.sip", "rfc4475-mcl01.sip"] {
        assert_eq!(siprec_gateway::sip::message::frame(&load(name)), Err(ParseError::BadContentLength), "{name}");
    }
}

#[test]
fn multi01_repeated_single_value_headers_400() {
    assert_eq!(request("rfc4475-multi01.sip").check_request(), Err(ParseError::DuplicateHeader("Call-ID")));
}

#[test]
fn insuf_is_answered_along_its_via_without_from_to_or_call_id() {
    let (_, out) = feed(&load("rfc4475-insuf.sip"), siprec_gateway::clock::now());
    let answer = Message::parse_unchecked(&out.sent[0].bytes).unwrap();
    assert_eq!(answer.status(), Some(400));
    assert_eq!(answer.cseq(), Some((193943, "INVITE")));
    assert!(out.texts()[0].contains("missing or bad mandatory header"));
}

#[test]
fn badvers_505_and_mismatch02_501() {
    let (_, out) = feed(&load("rfc4475-badvers.sip"), siprec_gateway::clock::now());
    assert_eq!(out.status_lines(), ["SIP/2.0 505 Version Not Supported"]);
    let (_, out) = feed(&load("rfc4475-mismatch02.sip"), siprec_gateway::clock::now());
    assert!(out.texts()[0].contains("\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO\r\n"));
    assert_eq!(request("rfc4475-mismatch01.sip").check_request(), Err(ParseError::CSeqMismatch));
}

#[test]
fn bext01_lists_the_required_tags_it_does_not_support() {
    let (_, out) = feed(&load("rfc4475-bext01.sip"), siprec_gateway::clock::now());
    let answer = Message::parse(&out.sent[0].bytes).unwrap();
    assert_eq!(answer.header("Unsupported"), Some("noOneSupportsThis, noOneSupportsThisEither"));
}

#[test]
fn sdp01_406_carries_a_399_warning() {
    let (_, out) = feed(&load("rfc4475-sdp01.sip"), siprec_gateway::clock::now());
    let answer = Message::parse(&out.sent[0].bytes).unwrap();
    assert!(answer.header("Warning").is_some_and(|w| w.starts_with("399 203.0.113.10:5060 \"")), "{answer:?}");
}

/// RFC 4475 §3.3.6: the endpoint hands the INVITE over; the offer parser finds no type it
/// supports, the runtime's refusal is 415, and the endpoint adds Accept to it (§21.4.13).
#[test]
fn invut_unknown_content_type_refused_415_with_accept() {
    let now = siprec_gateway::clock::now();
    let (mut ep, out) = feed(&load("rfc4475-invut.sip"), now);
    let [Event::Invite { tx, request, .. }] = out.events.as_slice() else { panic!("{:?}", out.events) };
    let err = siprec::parse_offer(request.header("Content-Type"), &request.body, &OfferLimits::default()).unwrap_err();
    assert!(matches!(&err, OfferError::UnsupportedContentType(t) if t == "application/noonesformat"), "{err:?}");
    let refusal = session::refusal_for(&err);
    assert_eq!((refusal.code, refusal.reason), (415, "Unsupported Media Type"));
    ep.respond_invite(now, tx, refusal.code, refusal.reason, Vec::new(), None);
    let answer = Message::parse(&ep.poll_transmit().unwrap().bytes).unwrap();
    assert_eq!(answer.status(), Some(415));
    assert_eq!(answer.header("Accept"), Some(ACCEPT));
}

/// The INVITEs the endpoint accepts carry offers the SIPREC parser reads.
#[test]
fn accepted_invites_carry_readable_offers() {
    for name in ["rfc4475-esc01.sip", "rfc4475-longreq.sip", "rfc4475-baddate.sip", "rfc4475-inv2543.sip"] {
        let m = request(name);
        let offer = siprec::parse_offer(m.header("Content-Type"), &m.body, &OfferLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(session::plan_streams(&offer.sdp, 4).is_ok(), "{name}");
    }
}

#[test]
fn inv2543_retransmission_is_absorbed_and_the_call_can_be_answered() {
    let now = siprec_gateway::clock::now();
    let bytes = load("rfc4475-inv2543.sip");
    let (mut ep, out) = feed(&bytes, now);
    let [Event::Invite { tx, .. }] = out.events.as_slice() else { panic!("{:?}", out.events) };
    // No branch, no From tag, no Content-Length, no Max-Forwards: still one transaction.
    ep.handle_message(now, peer_for(&bytes), &bytes);
    assert_eq!(String::from_utf8(ep.poll_transmit().unwrap().bytes).unwrap().lines().next(), Some("SIP/2.0 100 Trying"));
    assert!(ep.poll_event().is_none());
    let dialog = ep.respond_invite(now, tx, 200, "OK", Vec::new(), None).expect("dialog created");
    assert_eq!(dialog.remote_tag, "");
    let blank = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert_eq!(request("rfc4475-inv2543.sip").body, &bytes[blank + 4..], "the body runs to the end of the datagram");
}

#[test]
fn rfc5118_bracketed_references_are_read() {
    let m = request("rfc5118-mult-ip-in-header.sip");
    let vias: Vec<_> = m.headers_named("Via").collect();
    assert_eq!(vias.len(), 3);
    let top = m.top_via().unwrap();
    assert_eq!((top.host, top.port), ("2001:db8::b:2", Some(6060)));
    // The 481 goes to the source address and the top Via's port.
    let (_, out) = feed(&load("rfc5118-mult-ip-in-header.sip"), siprec_gateway::clock::now());
    assert_eq!(out.sent[0].dest, "[2001:db8::b:2]:6060".parse().unwrap());

    let m = request("rfc5118-ipv4-mapped-ipv6.sip");
    assert_eq!(m.top_via().unwrap().sent_by(), "[::ffff:198.51.100.11]:19824");
    assert_eq!(m.request_uri(), Some("sip:recorder@srs.example.net"));
    assert_eq!(request("rfc5118-port-ambiguous.sip").request_uri(), Some("sip:[2001:db8::a1:5080]"));
    for name in ["rfc5118-ipv6-bad.sip", "rfc5118-ipv6-bug-abnf-3-colons.sip"] {
        assert_eq!(request(name).check_request(), Err(ParseError::BadRequestUri), "{name}");
    }
    let m = request("rfc5118-via-received-param-with-delim.sip");
    assert_eq!(siprec_gateway::sip::message::param(m.top_via().unwrap().params, "received"), Some("[2001:db8::b:ff]"));
}

#[test]
fn rfc5118_sdp_addresses_and_the_ipv6_answer() {
    let m = request("rfc5118-ipv6-in-sdp.sip");
    let offer = siprec::parse_offer(m.header("Content-Type"), &m.body, &OfferLimits::default()).unwrap();
    let v6: IpAddr = "2001:db8::c0".parse().unwrap();
    assert_eq!(offer.sdp.media[0].connection_or(&offer.sdp), Some(v6));
    let plans = session::plan_streams(&offer.sdp, 4).unwrap();
    let answers = session::media_answers(&offer.sdp, &plans, &[32000]);
    let ours = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xa1));
    let answer = sdp::build_answer(&offer.sdp, &answers, ours, 7, 1);
    assert!(answer.contains("\r\nc=IN IP6 2001:db8::a1\r\n"), "{answer}");
    assert!(answer.contains(" IN IP6 2001:db8::a1\r\n"), "o= line: {answer}");
    assert!(answer.contains("\r\nm=audio 32000 RTP/AVP 0"), "{answer}");

    let m = request("rfc5118-mult-ip-in-sdp.sip");
    let offer = siprec::parse_offer(m.header("Content-Type"), &m.body, &OfferLimits::default()).unwrap();
    assert_eq!(offer.sdp.media[0].connection_or(&offer.sdp), Some("198.51.100.2".parse().unwrap()));
    assert_eq!(offer.sdp.media[1].connection_or(&offer.sdp), Some("2001:db8::2".parse().unwrap()));
    // Only the refused video is at the IPv6 address; the recorded audio stream is IPv4.
    assert_eq!(session::plan_streams(&offer.sdp, 4).unwrap().len(), 1);

    let m = request("rfc5118-ipv4-mapped-ipv6.sip");
    let offer = siprec::parse_offer(m.header("Content-Type"), &m.body, &OfferLimits::default()).unwrap();
    assert_eq!(offer.sdp.media[0].connection_or(&offer.sdp), Some("::ffff:198.51.100.3".parse().unwrap()));
    let answer = sdp::build_answer(&offer.sdp, &vec![MediaAnswer { port: 0, codec: None, crypto: None }; 2], ours, 7, 1);
    assert!(answer.contains("\r\nm=audio 0 "), "{answer}");
}
