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
use super::sip::{self, SipMessage};

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
    pub message: SipMessage,
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

/// An SDP answer seen in the capture: when, and the (address, port) of each m-line.
struct Answer {
    ts: Duration,
    media: Vec<sip::MediaLine>,
}

/// Builds the plan from a capture's payloads (as `capture::read_capture` returns them).
pub fn build(payloads: &[Payload]) -> Result<Plan, PlanError> {
    let sip: Vec<(usize, &Payload, SipMessage)> = payloads
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((i, p, SipMessage::parse(&p.data)?)))
        .collect();
    let (_, first, invite) = sip
        .iter()
        .find(|(_, _, m)| m.method() == Some("INVITE") && m.has_sdp())
        .ok_or(PlanError::NoInvite)?;
    let call_id = invite.call_id().ok_or(PlanError::BadInvite)?.to_string();
    invite.cseq().ok_or(PlanError::BadInvite)?;
    let (src, srs, t0) = (first.src, first.dst, first.ts);
    let in_call = |m: &SipMessage| m.call_id() == Some(call_id.as_str());

    let mut requests: Vec<PlannedRequest> = Vec::new();
    let mut seen = HashSet::new();
    let mut answers: Vec<Answer> = Vec::new();
    let mut answered_at = None;
    let mut media_ips: HashSet<IpAddr> = HashSet::from([src.ip()]);
    let mut bye_at = None;
    let mut streams = 0;
    let invite_cseq = invite.cseq().map(|(n, _)| n);
    for (_, p, m) in sip.iter().filter(|(_, p, m)| p.ts >= t0 && in_call(m)) {
        if m.is_request() && p.dst == srs {
            let method = m.method().unwrap_or_default();
            // ACKs are generated live; a CANCEL could only target the captured transaction.
            if method == "ACK" || method == "CANCEL" {
                continue;
            }
            // Retransmissions share the transaction key (RFC 3261 §17.2.3).
            let key = (
                m.cseq().map(|(n, _)| n),
                method.to_string(),
                m.top_via_branch().map(str::to_string),
            );
            if !seen.insert(key) {
                continue;
            }
            if let Some(sdp) = m.sdp() {
                let media = sip::media_lines(sdp);
                streams = streams.max(media.len());
                media_ips.extend(media.iter().filter_map(|ml| ml.addr));
            }
            if method == "BYE" && bye_at.is_none() {
                bye_at = Some(p.ts);
            }
            requests.push(PlannedRequest {
                at: p.ts - t0,
                message: m.clone(),
            });
        } else if !m.is_request() && p.src == srs {
            let ok = m.status().is_some_and(|s| (200..300).contains(&s));
            if ok && m.cseq().is_some_and(|(_, meth)| meth == "INVITE") {
                if answered_at.is_none() && m.cseq().map(|(n, _)| n) == invite_cseq {
                    answered_at = Some(p.ts - t0);
                }
                if let Some(sdp) = m.sdp() {
                    answers.push(Answer {
                        ts: p.ts,
                        media: sip::media_lines(sdp),
                    });
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
        let mline = answer.media.iter().position(|ml| {
            ml.port != 0
                && ml.port == p.dst.port()
                && ml.addr.is_none_or(|a| a == p.dst.ip() || a == srs.ip())
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
        assert!(p.requests[0].message.has_sdp());
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
    fn capture_without_invite_is_refused() {
        let payloads = read_capture(&fixture("siprec-2stream-udp.pcap")).unwrap();
        let rtp_only: Vec<_> = payloads
            .into_iter()
            .filter(|p| looks_like_rtp(&p.data))
            .collect();
        assert_eq!(build(&rtp_only), Err(PlanError::NoInvite));
    }
}
