//! Turns decoded capture payloads into a replay plan: the SRC's SIP requests and each stream's
//! RTP, with times relative to the first INVITE.
//!
//! The SRC is the sender of the first INVITE that carries SDP (RFC 7866 §7.1: the SRC initiates the
//! recording session). Its requests to the SRS in that dialog are kept in order (retransmissions
//! and ACKs dropped: the live side makes its own); the SRS's responses are only read for their SDP
//! answers, which map each RTP flow to its m-line by destination port. Pure: no I/O, no clock.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::capture::Payload;
use super::rewrite::branch;
use crate::sip::Message;
use crate::siprec::sdp::SessionDescription;
use crate::siprec::{self, OfferLimits};

/// Why a capture holds nothing to replay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// No INVITE with an SDP body anywhere in the capture.
    #[error("the capture holds no INVITE with SDP")]
    NoInvite,
    /// The INVITE lacks the Call-ID or CSeq needed to follow its dialog.
    #[error("the INVITE has no Call-ID or CSeq")]
    BadInvite,
}

/// One SIP request to send, `at` after the INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRequest {
    pub at: Duration,
    pub message: Message,
}

/// One RTP packet of the stream on m-line `mline`, `at` after the INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRtp {
    pub at: Duration,
    pub mline: usize,
    pub payload: Vec<u8>,
}

/// What the replay sends, in capture order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The SRC's requests; the first is the initial INVITE (at zero).
    pub requests: Vec<PlannedRequest>,
    /// RTP from the SRC's media addresses, sorted by time.
    pub rtp: Vec<PlannedRtp>,
    /// Most m-lines in any offer: one local RTP socket each.
    pub streams: usize,
    /// When the captured 200 OK answered the INVITE (time origin for media pacing).
    pub answered_at: Option<Duration>,
    pub src: SocketAddr,
    pub srs: SocketAddr,
}

impl Plan {
    /// Packets per m-line.
    pub fn rtp_per_stream(&self) -> Vec<usize> {
        let mut counts = vec![0; self.streams];
        for p in &self.rtp {
            if let Some(c) = counts.get_mut(p.mline) {
                *c += 1;
            }
        }
        counts
    }
}

/// An SDP answer seen in the capture, and when.
struct Answer {
    ts: Duration,
    sdp: SessionDescription,
}

/// The SDP a message carries, alone or as the SDP part of a SIPREC multipart body (RFC 7866
/// §9.1), read with the gateway's own offer parser. `None` without a Content-Type, without an
/// SDP body, or when the SDP does not parse.
pub fn sdp_of(m: &Message) -> Option<SessionDescription> {
    // The metadata is only passed on as captured, never judged: no size limit.
    let limits = OfferLimits {
        max_metadata_bytes: usize::MAX,
    };
    siprec::parse_offer(Some(m.header("Content-Type")?), &m.body, &limits)
        .ok()
        .map(|offer| offer.sdp)
}

/// Builds the plan from a capture's payloads (as `capture::read_capture` returns them).
pub fn build(payloads: &[Payload]) -> Result<Plan, PlanError> {
    // Lenient on purpose: the capture is replayed as it is, and a message the gateway would
    // refuse is the gateway's to refuse.
    let sip: Vec<(usize, &Payload, Message)> = payloads
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p, Message::parse_unchecked(&p.data).ok()?)))
        .collect();
    let (_, first, invite) = sip
        .iter()
        .find(|(_, _, m)| m.method() == Some("INVITE") && sdp_of(m).is_some())
        .ok_or(PlanError::NoInvite)?;
    let call_id = invite
        .header("Call-ID")
        .ok_or(PlanError::BadInvite)?
        .to_string();
    invite.cseq().ok_or(PlanError::BadInvite)?;
    let (src, srs, t0) = (first.src, first.dst, first.ts);
    let in_call = |m: &Message| m.header("Call-ID") == Some(call_id.as_str());

    let mut requests: Vec<PlannedRequest> = Vec::new();
    let mut seen = HashSet::new();
    let mut answers: Vec<Answer> = Vec::new();
    let mut answered_at = None;
    let mut media_ips: HashSet<IpAddr> = HashSet::from([src.ip()]);
    let mut bye_at = None;
    let mut streams = 0;
    let invite_cseq = invite.cseq().map(|(n, _)| n);
    for (_, p, m) in sip.iter().filter(|(_, p, m)| p.ts >= t0 && in_call(m)) {
        if m.method().is_some() && p.dst == srs {
            let method = m.method().unwrap_or_default();
            // ACKs are generated live; a CANCEL could only target the captured transaction.
            if method == "ACK" || method == "CANCEL" {
                continue;
            }
            // Retransmissions share the transaction key (RFC 3261 §17.2.3).
            let key = (
                m.cseq().map(|(n, _)| n),
                method.to_string(),
                branch(m).map(str::to_string),
            );
            if !seen.insert(key) {
                continue;
            }
            if let Some(sdp) = sdp_of(m) {
                streams = streams.max(sdp.media.len());
                media_ips.extend(sdp.media.iter().filter_map(|md| md.connection_or(&sdp)));
            }
            if method == "BYE" && bye_at.is_none() {
                bye_at = Some(p.ts);
            }
            requests.push(PlannedRequest {
                at: p.ts - t0,
                message: m.clone(),
            });
        } else if m.method().is_none() && p.src == srs {
            let ok = m.status().is_some_and(|s| (200..300).contains(&s));
            if ok && m.cseq().is_some_and(|(_, meth)| meth == "INVITE") {
                if answered_at.is_none() && m.cseq().map(|(n, _)| n) == invite_cseq {
                    answered_at = Some(p.ts - t0);
                }
                if let Some(sdp) = sdp_of(m) {
                    answers.push(Answer { ts: p.ts, sdp });
                }
            }
        }
    }

    let sip_payloads: HashSet<usize> = sip.iter().map(|(i, _, _)| *i).collect();
    let mut rtp = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        if p.ts < t0
            || bye_at.is_some_and(|b| p.ts >= b)
            || !media_ips.contains(&p.src.ip())
            || sip_payloads.contains(&i)
            || !looks_like_rtp(&p.data)
        {
            continue;
        }
        // The answer in force when the packet was sent; its m-line whose port (and address, when
        // the answer names one) is the packet's destination.
        let Some(answer) = answers.iter().rev().find(|a| a.ts <= p.ts) else {
            continue;
        };
        let mline = answer.sdp.media.iter().position(|md| {
            md.port != 0
                && md.port == p.dst.port()
                && md
                    .connection_or(&answer.sdp)
                    .is_none_or(|a| a == p.dst.ip() || a == srs.ip())
        });
        if let Some(mline) = mline {
            rtp.push(PlannedRtp {
                at: p.ts - t0,
                mline,
                payload: p.data.clone(),
            });
        }
    }
    rtp.sort_by_key(|r| r.at);
    Ok(Plan {
        requests,
        rtp,
        streams,
        answered_at,
        src,
        srs,
    })
}

/// RTP version 2, long enough for the fixed header, and not RTCP (RFC 5761 §4: PT 64-95 with the
/// marker bit is where RTCP packet types 192-223 land).
fn looks_like_rtp(data: &[u8]) -> bool {
    data.len() >= 12 && data[0] >> 6 == 2 && !(192..=223).contains(&data[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::capture::{read_capture, tests::fixture};

    fn plan(name: &str) -> Plan {
        build(&read_capture(&fixture(name)).unwrap()).unwrap()
    }

    #[test]
    fn udp_capture_plan_has_src_requests_and_streams_by_mline() {
        let p = plan("siprec-2stream-udp.pcap");
        assert_eq!(p.src, "10.0.0.10:5060".parse().unwrap());
        assert_eq!(p.srs, "10.0.0.20:5060".parse().unwrap());
        let methods: Vec<_> = p
            .requests
            .iter()
            .map(|r| r.message.method().unwrap())
            .collect();
        assert_eq!(methods, ["INVITE", "BYE"]);
        assert_eq!(p.requests[0].at, Duration::ZERO);
        assert_eq!(p.streams, 2);
        assert_eq!(p.rtp_per_stream(), [350, 250]);
        assert_eq!(p.answered_at, Some(Duration::from_millis(30)));
        // Stream 2 (m-line 1) pauses for 2 s from 3 s into the media.
        let gaps: Vec<_> = p
            .rtp
            .iter()
            .filter(|r| r.mline == 1)
            .map(|r| r.at)
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|d| *d > Duration::from_millis(100))
            .collect();
        assert_eq!(gaps.len(), 1);
        assert!(
            gaps[0].abs_diff(Duration::from_millis(2020)) < Duration::from_millis(1),
            "{gaps:?}"
        );
    }

    #[test]
    fn tcp_capture_plan_matches_the_udp_one() {
        let p = plan("siprec-2stream-tcp.pcapng");
        assert_eq!(p.requests.len(), 2);
        assert_eq!(p.rtp_per_stream(), [350, 250]);
        assert!(sdp_of(&p.requests[0].message).is_some());
    }

    #[test]
    fn sll_fragmented_capture_plan_has_three_streams_without_rtcp() {
        let p = plan("siprec-3stream-sll-frag.pcap");
        assert_eq!(p.streams, 3);
        assert_eq!(p.rtp_per_stream(), [300, 200, 300]);
        assert!(
            p.rtp.iter().all(|r| r.payload[1] & 0x7f == 8),
            "PCMA only, no RTCP"
        );
    }

    #[test]
    fn retransmitted_invite_and_srs_requests_are_not_replayed() {
        let mut payloads = read_capture(&fixture("siprec-2stream-udp.pcap")).unwrap();
        let invite = payloads
            .iter()
            .position(|p| p.data.starts_with(b"INVITE"))
            .unwrap();
        let mut again = payloads[invite].clone();
        again.ts += Duration::from_millis(500);
        payloads.insert(invite + 1, again);
        // A BYE from the SRS towards the SRC is the SRS's business, not the SRC's.
        let bye = payloads
            .iter()
            .position(|p| p.data.starts_with(b"BYE"))
            .unwrap();
        let mut reverse = payloads[bye].clone();
        std::mem::swap(&mut reverse.src, &mut reverse.dst);
        payloads.insert(bye, reverse);
        let p = build(&payloads).unwrap();
        assert_eq!(p.requests.len(), 2);
    }

    #[test]
    fn sdp_of_reads_the_sdp_part_of_a_compact_form_multipart_offer() {
        let offer = "INVITE sip:srs@10.0.0.20 SIP/2.0\r\n\
            c: multipart/mixed;boundary=\"b1\"\r\n\r\n\
            --b1\r\nContent-Type: application/sdp\r\n\r\n\
            v=0\r\nc=IN IP4 10.0.0.10\r\nm=audio 2000 RTP/AVP 0\r\n\
            m=audio 2002 RTP/AVP 0\r\nc=IN IP4 10.0.0.11\r\n\
            \r\n--b1\r\nContent-Type: application/rs-metadata+xml\r\n\r\n<recording/>\r\n--b1--\r\n";
        let m = Message::parse_unchecked(offer.as_bytes()).unwrap();
        let sdp = sdp_of(&m).unwrap();
        let media: Vec<_> = sdp
            .media
            .iter()
            .map(|md| (md.port, md.connection_or(&sdp)))
            .collect();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(media, [(2000, ip("10.0.0.10")), (2002, ip("10.0.0.11"))]);
        let mut bare = m.clone();
        bare.headers.clear();
        assert_eq!(sdp_of(&bare), None, "no Content-Type, no SDP");
    }

    #[test]
    fn capture_without_invite_is_refused() {
        let payloads = read_capture(&fixture("siprec-2stream-udp.pcap")).unwrap();
        let rtp_only: Vec<_> = payloads
            .into_iter()
            .filter(|p| looks_like_rtp(&p.data))
            .collect();
        assert_eq!(build(&rtp_only), Err(PlanError::NoInvite));
    }
}
