//! The recording-session rules (sans-IO): what to answer to an offer, which m-lines become
//! channels, what a call's file is called, which headers travel into `info`, and the life of
//! one recording session (`Answered → Confirmed → Ending`).
//!
//! The runtime's signalling task asks these functions and keeps one [`Session`] per dialog; it
//! does the binding, sending and writing.

use std::time::{Instant, SystemTime};

use crate::config::{SrtpPolicy, header_pattern_matches};
use crate::media::srtp::{self, CryptoOffer, KeyMaterial};
use crate::sip::Message;
use crate::media::timeline::StreamStats;
use crate::siprec::sdp::{self, ChosenCodec, Direction, MediaAnswer, MediaDescription, SessionDescription};
use crate::mapping::{CallSummary, ChannelSummary, LayoutKind, MappingRules, MetadataChange};
use crate::siprec::{self, MetadataOutcome, OfferError, OfferLimits};

/// A SIP final response the offer calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    /// For the log: what exactly was wrong.
    pub detail: String,
}

/// The response an unusable offer gets (RFC 3261 §21.4, RFC 7866 §6.1).
pub fn refusal_for(e: &OfferError) -> Refusal {
    let (code, reason) = match e {
        OfferError::NoSdp | OfferError::BadSdp(_) => (488, "Not Acceptable Here"),
        OfferError::Multipart(_) => (400, "Bad Request"),
        OfferError::MetadataTooLarge { .. } => (413, "Request Entity Too Large"),
        OfferError::UnsupportedContentType(_) => (415, "Unsupported Media Type"),
    };
    Refusal { code, reason, detail: e.to_string() }
}

/// One recorded stream: the m-line it came from, its channel, and its codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPlan {
    pub mline: usize,
    pub channel: usize,
    pub label: Option<String>,
    pub codec: ChosenCodec,
    /// Whether the stream was ever offered in a direction that carries audio (a stream offered
    /// `a=inactive` and never activated makes no channel). Set once a re-INVITE activates it.
    pub active: bool,
    /// Whether the latest offer puts the stream on hold: `a=inactive`/`a=recvonly` from the SRC,
    /// `c=0.0.0.0` (RFC 2543 hold), or port 0 in a re-INVITE. Nothing is expected while held.
    pub held: bool,
    /// The SRC's address for the stream as offered (a change re-opens the RTP latch).
    pub remote: Option<std::net::SocketAddr>,
    /// SDES keys of an `RTP/SAVP` stream: the SRC's (to decrypt) and ours (for the answer).
    pub srtp: Option<SrtpPlan>,
}

/// The SDES keys of one SRTP stream (RFC 4568). Debug output never shows a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpPlan {
    /// The offer's line we use (its key decrypts the SRC's packets).
    pub offer: CryptoOffer,
    /// Our key, for the answer only: the recorder never sends.
    pub ours: KeyMaterial,
}

impl SrtpPlan {
    /// Our `a=crypto` value (same tag and suite as the offer).
    pub fn answer_line(&self) -> String {
        self.offer.answer_line(&self.ours)
    }
}

impl StreamPlan {
    pub fn codec_name(&self) -> &'static str {
        self.codec.codec.encoding_name()
    }

    /// The stream as the mapping sees it, with what the media thread counted.
    pub fn summary(&self, stats: StreamStats) -> ChannelSummary {
        ChannelSummary { label: self.label.clone(), codec: self.codec_name(), stats, active: self.active, media: Default::default() }
    }
}

/// Whether an m-line's profile is SRTP (`RTP/SAVP`, `RTP/SAVPF`), plain RTP, or neither.
fn profile(m: &MediaDescription) -> Option<bool> {
    let p = m.protocol.to_ascii_uppercase();
    match p.as_str() {
        "RTP/AVP" | "RTP/AVPF" => Some(false),
        "RTP/SAVP" | "RTP/SAVPF" => Some(true),
        _ => None,
    }
}

/// Whether the offer puts `m` on hold (nothing flows from the SRC to us).
fn on_hold(m: &MediaDescription, offer: &SessionDescription) -> bool {
    // RFC 3264 §8.4 (a=inactive / a=recvonly from the sender), RFC 2543's c=0.0.0.0.
    matches!(m.direction, Direction::Inactive | Direction::RecvOnly)
        || m.connection_or(offer).is_some_and(|ip| ip.is_unspecified())
}

/// How an m-line's transport is to be taken under `policy`: `Err(())` refuses the line,
/// `Ok(None)` is plain RTP, `Ok(Some(..))` SRTP with the offer's chosen key (`keep`, the
/// stream's current keys, when the offer repeats its key: RFC 4568 §7.1.4).
fn transport(m: &MediaDescription, policy: SrtpPolicy, keep: Option<&SrtpPlan>) -> Result<Option<SrtpPlan>, ()> {
    match (profile(m), policy) {
        (None, _) | (Some(false), SrtpPolicy::Require) | (Some(true), SrtpPolicy::Refuse) => Err(()),
        (Some(false), _) => Ok(None),
        (Some(true), _) => {
            let values: Vec<&str> = m.crypto.iter().map(String::as_str).collect();
            let offer = srtp::choose(&values).ok_or(())?;
            // RFC 4568 §7.1.4: the same key and parameters keep our key (and the receiver).
            if let Some(old) = keep.filter(|k| k.offer.same_context(&offer) && k.offer.tag == offer.tag) {
                return Ok(Some(old.clone()));
            }
            let ours = KeyMaterial::generate(offer.suite).map_err(|_| ())?;
            Ok(Some(SrtpPlan { offer, ours }))
        }
    }
}

/// Which m-lines we record: every audio m-line with a port and a codec we decode becomes a
/// channel, in m-line order (plain RTP or SRTP as `media.srtp` allows; see
/// [`plan_streams_with`]). None at all, or more than `max_streams`, is refused with 488.
pub fn plan_streams(offer: &SessionDescription, max_streams: usize) -> Result<Vec<StreamPlan>, Refusal> {
    plan_streams_with(offer, max_streams, SrtpPolicy::Accept)
}

/// [`plan_streams`] under an SRTP policy: `RTP/SAVP` lines need a usable `a=crypto`
/// ([`srtp::choose`]) and are refused (port 0) under `refuse`; plain lines are refused under
/// `require`.
pub fn plan_streams_with(offer: &SessionDescription, max_streams: usize, policy: SrtpPolicy) -> Result<Vec<StreamPlan>, Refusal> {
    plan(offer, max_streams, policy, true)
}

/// The channels a recording made from `offer` has, without reading SDES keys (for recovering a
/// recording whose `call.json` has its keys redacted).
pub fn recorded_streams(offer: &SessionDescription) -> Result<Vec<StreamPlan>, Refusal> {
    plan(offer, usize::MAX, SrtpPolicy::Accept, false)
}

fn plan(offer: &SessionDescription, max_streams: usize, policy: SrtpPolicy, with_keys: bool) -> Result<Vec<StreamPlan>, Refusal> {
    let mut plans = Vec::new();
    let mut srtp_refused = false;
    for (i, m) in offer.media.iter().enumerate() {
        if m.port == 0 {
            continue;
        }
        let Some(codec) = m.choose_codec() else { continue };
        let srtp = if with_keys {
            match transport(m, policy, None) {
                Ok(s) => s,
                Err(()) => {
                    srtp_refused |= profile(m).is_some();
                    continue;
                }
            }
        } else if profile(m).is_some() {
            None
        } else {
            continue;
        };
        let held = on_hold(m, offer);
        let remote = m.connection_or(offer).map(|ip| std::net::SocketAddr::new(ip, m.port));
        let active = m.direction != Direction::Inactive;
        plans.push(StreamPlan { mline: i, channel: plans.len(), label: m.label.clone(), codec, active, held, remote, srtp });
    }
    if plans.is_empty() {
        let name = match policy {
            SrtpPolicy::Accept => "accept",
            SrtpPolicy::Require => "require",
            SrtpPolicy::Refuse => "refuse",
        };
        let why = if srtp_refused { format!(" under media.srtp = {name}, or no usable a=crypto") } else { String::new() };
        return Err(Refusal {
            code: 488,
            reason: "Not Acceptable Here",
            detail: format!("no RTP audio stream with a codec we decode ({}){why}", sdp::DECODED_CODECS),
        });
    }
    if plans.len() > max_streams {
        return Err(Refusal {
            code: 488,
            reason: "Not Acceptable Here",
            detail: format!("{} streams offered, limit media.max_streams = {max_streams}", plans.len()),
        });
    }
    Ok(plans)
}

/// The per-m-line answer given the ports bound for the planned streams (`ports[i]` for
/// `plans[i]`); every other m-line is refused with port 0.
pub fn media_answers(offer: &SessionDescription, plans: &[StreamPlan], ports: &[u16]) -> Vec<MediaAnswer> {
    (0..offer.media.len())
        .map(|i| match plans.iter().position(|p| p.mline == i) {
            Some(k) => MediaAnswer {
                port: ports.get(k).copied().unwrap_or(0),
                codec: Some(plans[k].codec),
                crypto: plans[k].srtp.as_ref().map(SrtpPlan::answer_line),
            },
            None => MediaAnswer { port: 0, codec: None, crypto: None },
        })
        .collect()
}

/// What a re-INVITE changes for one recorded stream (the media thread applies it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChange {
    pub channel: usize,
    pub codec: ChosenCodec,
    pub held: bool,
    /// The SRC's offered address moved: the RTP latch takes the next source.
    pub moved: bool,
    pub srtp: SrtpChange,
}

/// The SRTP part of a [`StreamChange`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrtpChange {
    /// Same key and parameters (RFC 4568 §7.1.4): keep the receiver with its ROC and replay
    /// state (also: still plain RTP).
    Keep,
    /// A new key or suite: a new receiver.
    New(CryptoOffer),
    /// Plain RTP from now on.
    Off,
}

/// Applies a re-INVITE's offer to the call's streams (RFC 3264 §8): the answer per m-line and
/// what changes per recorded stream. Streams keep their channel, port and timeline; a stream
/// whose line is now unusable (port 0, no codec we decode, a transport `policy` refuses) is
/// answered with port 0 and held. A new m-line takes one of the capture's spare channels
/// (`capacity` = the capture's channel count, `media.spare_streams` more than the INVITE's
/// streams); with none left it gets port 0: a WAV cannot gain a channel mid-call.
pub fn replan(
    plans: &mut Vec<StreamPlan>,
    ports: &[u16],
    offer: &SessionDescription,
    policy: SrtpPolicy,
    capacity: usize,
) -> Reinvite {
    let mut changes = Vec::new();
    let mut added = Vec::new();
    let answers = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let refused = MediaAnswer { port: 0, codec: None, crypto: None };
            let Some(k) = plans.iter().position(|p| p.mline == i) else {
                // A new m-line: a spare capture channel if one is left. Its port is bound by
                // the caller, who fills it into the answer.
                if plans.len() >= capacity || m.port == 0 {
                    return refused;
                }
                let Some(codec) = m.choose_codec() else { return refused };
                let Ok(srtp) = transport(m, policy, None) else { return refused };
                let held = on_hold(m, offer);
                let remote = m.connection_or(offer).map(|ip| std::net::SocketAddr::new(ip, m.port));
                let crypto = srtp.as_ref().map(SrtpPlan::answer_line);
                added.push(plans.len());
                plans.push(StreamPlan { mline: i, channel: plans.len(), label: m.label.clone(), codec, active: !held, held, remote, srtp });
                return MediaAnswer { port: 0, codec: Some(codec), crypto };
            };
            let plan = &mut plans[k];
            let usable = (m.port != 0)
                .then(|| m.choose_codec())
                .flatten()
                .and_then(|codec| transport(m, policy, plan.srtp.as_ref()).ok().map(|srtp| (codec, srtp)));
            let Some((codec, srtp)) = usable else {
                plan.held = true;
                changes.push(StreamChange { channel: plan.channel, codec: plan.codec, held: true, moved: false, srtp: SrtpChange::Keep });
                return refused;
            };
            let srtp_change = match (&plan.srtp, &srtp) {
                (Some(old), Some(new)) if old == new => SrtpChange::Keep,
                (None, None) => SrtpChange::Keep,
                (_, Some(new)) => SrtpChange::New(new.offer.clone()),
                (Some(_), None) => SrtpChange::Off,
            };
            let remote = m.connection_or(offer).map(|ip| std::net::SocketAddr::new(ip, m.port));
            let held = on_hold(m, offer);
            let moved = !held && remote.is_some() && remote != plan.remote;
            if !held {
                plan.remote = remote;
            }
            plan.held = held;
            plan.active |= !held;
            plan.codec = codec;
            plan.srtp = srtp;
            changes.push(StreamChange { channel: plan.channel, codec, held, moved, srtp: srtp_change });
            MediaAnswer { port: ports.get(k).copied().unwrap_or(0), codec: Some(codec), crypto: plan.srtp.as_ref().map(SrtpPlan::answer_line) }
        })
        .collect();
    Reinvite { answers, changes, added }
}

/// What [`replan`] decided for a re-INVITE.
#[derive(Debug)]
pub struct Reinvite {
    /// The answer per m-line (an added stream's port still 0: the caller binds it).
    pub answers: Vec<MediaAnswer>,
    /// What changes on the streams recorded so far.
    pub changes: Vec<StreamChange>,
    /// Indexes into the plans of the streams the offer added (each on a spare channel).
    pub added: Vec<usize>,
}

/// The file-system name of a recording: the sessionId with every character outside
/// `A-Z a-z 0-9 . _ -` replaced by `_` (and never `.`/`..` or empty).
pub fn file_name(session_id: &str) -> String {
    let s: String = session_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    // The spool refuses names that are empty or start with a dot (hidden, `..`).
    if s.is_empty() || s.starts_with('.') { format!("_{s}") } else { s }
}

/// The INVITE headers `patterns` select, under the names as received, in order.
pub fn carried_headers(request: &Message, patterns: &[String]) -> Vec<(String, String)> {
    request
        .headers
        .iter()
        .filter(|(n, _)| patterns.iter().any(|p| header_pattern_matches(p, n)))
        .cloned()
        .collect()
}

/// What the gateway knows about a call when it starts recording, written next to the audio as
/// `call.json` so that a recording cut short by a crash can still be finalized with its `info`
/// (the offer is kept as received and parsed again; metadata updates are appended).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallRecord {
    pub session_id: String,
    /// Wall time of the 200 OK (the WAV's first sample), milliseconds since the Unix epoch.
    pub start_unix_ms: u64,
    /// The INVITE's Content-Type and body.
    pub offer_content_type: Option<String>,
    pub offer_body: String,
    /// Metadata bodies that arrived later (re-INVITE, UPDATE, INFO, BYE), in order.
    #[serde(default)]
    pub updates: Vec<RecordedUpdate>,
    pub sip_headers: Vec<(String, String)>,
    /// The INVITE's Request-URI and every header as received (the mapping's rules may name
    /// any of them; identities come from headers when there is no metadata).
    #[serde(default)]
    pub request_uri: Option<String>,
    #[serde(default)]
    pub invite_headers: Vec<(String, String)>,
}

impl CallRecord {
    /// Every metadata document the call received, parsed again from what is kept here: the
    /// INVITE's first (possibly `Absent`), then each update in order. Used alike when a call
    /// ends and when an interrupted one is recovered, so both give the same `info`.
    pub fn metadata_changes(&self, limits: &OfferLimits) -> Vec<MetadataChange> {
        let first = siprec::parse_offer(self.offer_content_type.as_deref(), self.offer_body.as_bytes(), limits)
            .map_or(MetadataOutcome::Absent, |o| o.metadata);
        let updates = self.updates.iter().filter_map(|u| {
            let outcome = siprec::metadata_update(u.content_type.as_deref(), u.body.as_bytes(), limits);
            (!matches!(outcome, MetadataOutcome::Absent)).then(|| MetadataChange { at_ms: u.at_ms, via: via_name(&u.via), outcome })
        });
        std::iter::once(MetadataChange { at_ms: 0, via: "INVITE", outcome: first }).chain(updates).collect()
    }

    /// The facts `mapping::build_info` needs, from this record and what the caller adds.
    pub fn summary<'a>(&'a self, changes: &'a [MetadataChange], streams: &'a [ChannelSummary], ctx: SummaryContext<'a>) -> CallSummary<'a> {
        CallSummary {
            session_id: &self.session_id,
            t0: ctx.t0,
            start: ctx.start,
            end: ctx.end,
            streams,
            metadata: changes,
            layout: ctx.layout,
            rules: ctx.rules,
            audio_format: ctx.audio_format,
            request_uri: self.request_uri.as_deref(),
            from: self.header("From"),
            to: self.header("To"),
            sip_headers: &self.sip_headers,
            all_headers: &self.invite_headers,
            end_reason: ctx.end_reason,
            notes: ctx.notes,
        }
    }

    /// The value of an INVITE header (first of that name, case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.invite_headers.iter().find(|(n, _)| crate::sip::message::header_is(n, name)).map(|(_, v)| v.as_str())
    }
}

/// What [`CallRecord::summary`] needs beyond the record.
#[derive(Debug, Clone, Copy)]
pub struct SummaryContext<'a> {
    pub t0: Instant,
    pub start: SystemTime,
    pub end: SystemTime,
    pub layout: LayoutKind,
    pub rules: &'a MappingRules,
    pub audio_format: &'a str,
    pub end_reason: &'a str,
    pub notes: &'a [String],
}

/// The method names `MetadataChange::via` takes.
fn via_name(via: &str) -> &'static str {
    ["re-INVITE", "UPDATE", "INFO", "BYE"].into_iter().find(|v| v.eq_ignore_ascii_case(via)).unwrap_or("UPDATE")
}

/// A request that carried recording metadata after the INVITE, as kept in `call.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "UpdateForm")]
pub struct RecordedUpdate {
    /// The method that carried it: `re-INVITE`, `UPDATE`, `INFO` or `BYE`.
    pub via: String,
    /// When it arrived, in milliseconds after the 200 OK (the recording's first sample).
    pub at_ms: u64,
    pub content_type: Option<String>,
    pub body: String,
}

/// `call.json` written by earlier versions kept an update as `[content_type, body]`.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum UpdateForm {
    Current { via: String, at_ms: u64, content_type: Option<String>, body: String },
    Pair(Option<String>, String),
}

impl From<UpdateForm> for RecordedUpdate {
    fn from(f: UpdateForm) -> Self {
        match f {
            UpdateForm::Current { via, at_ms, content_type, body } => Self { via, at_ms, content_type, body },
            UpdateForm::Pair(content_type, body) => Self { via: "update".into(), at_ms: 0, content_type, body },
        }
    }
}

/// Why a recording ended, as reported in `metaData.gateway.endReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The SRC sent BYE.
    Bye,
    /// No RTP on any stream for `media.rtp_timeout`.
    RtpTimeout,
    /// The gateway shut down.
    Shutdown,
    /// Our 2xx was never acknowledged.
    NoAck,
    /// The SRC's RFC 4028 session refresh never came (or ours failed).
    SessionExpired,
    /// The gateway stopped while recording (found in the spool at the next start).
    Interrupted,
    /// The call reached `limits.max_call_duration`; the gateway ended it with BYE.
    MaxDuration,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Bye => "bye",
            EndReason::RtpTimeout => "rtp-timeout",
            EndReason::Shutdown => "shutdown",
            EndReason::NoAck => "no-ack",
            EndReason::SessionExpired => "session-expired",
            EndReason::Interrupted => "interrupted",
            EndReason::MaxDuration => "max-duration",
        }
    }
}

/// Where a recording session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// 200 OK sent, ACK not yet seen.
    Answered,
    /// ACK seen.
    Confirmed,
    /// Ended; the recording is being finalized.
    Ending(EndReason),
}

/// One recording session as the signalling task keeps it.
#[derive(Debug)]
pub struct Session {
    pub session_id: String,
    pub name: String,
    /// When the 200 OK was sent: the recording's time zero.
    pub t0: Instant,
    pub plans: Vec<StreamPlan>,
    pub ports: Vec<u16>,
    pub answer_version: u64,
    pub answer_id: u64,
    pub last_answer: String,
    /// Every metadata document the call received, as parsed when it came, in order: the
    /// INVITE's first (possibly `Absent`). `call.json` keeps the same as text for recovery.
    pub metadata: Vec<MetadataChange>,
    pub sip_headers: Vec<(String, String)>,
    pub notes: Vec<String>,
    pub phase: Phase,
    /// What `call.json` holds.
    pub record: CallRecord,
    /// Why no audio is stored for this call (Tethr's recording settings exclude its agent).
    pub skipped: Option<String>,
    /// Channels of the capture: the INVITE's streams plus `media.spare_streams`.
    pub capacity: usize,
}

impl Session {
    /// Records that the session ended; returns false if it had already ended (the first reason
    /// wins).
    pub fn end(&mut self, reason: EndReason) -> bool {
        if let Phase::Ending(_) = self.phase {
            return false;
        }
        self.phase = Phase::Ending(reason);
        true
    }

    /// Takes a metadata document an in-dialog request carried, `at_ms` after the 200 OK; a
    /// broken one is also noted. `Absent` (no metadata in the request) is no change.
    pub fn take_metadata(&mut self, at_ms: u64, via: &'static str, outcome: MetadataOutcome) {
        match &outcome {
            MetadataOutcome::Absent => return,
            MetadataOutcome::Invalid { error, .. } => self.notes.push(format!("metadata update ignored: {error}")),
            MetadataOutcome::Parsed(_) => {}
        }
        self.metadata.push(MetadataChange { at_ms, via, outcome });
    }

    /// The metadata the call stands on now: the last document that parsed, else the INVITE's
    /// (possibly invalid or absent).
    pub fn current_metadata(&self) -> &MetadataOutcome {
        const ABSENT: MetadataOutcome = MetadataOutcome::Absent;
        self.metadata
            .iter()
            .rev()
            .map(|c| &c.outcome)
            .find(|o| matches!(o, MetadataOutcome::Parsed(_)))
            .or_else(|| self.metadata.first().map(|c| &c.outcome))
            .unwrap_or(&ABSENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::siprec::sdp;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 10000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=label:1\r\na=sendonly\r\n\
m=video 10002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=label:v\r\na=sendonly\r\n\
m=audio 10004 RTP/AVP 8\r\na=label:2\r\na=sendonly\r\n";

    #[test]
    fn audio_mlines_become_channels_in_order_and_video_is_refused() {
        let offer = sdp::parse(OFFER).unwrap();
        let plans = plan_streams(&offer, 16).unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!((plans[0].mline, plans[0].channel, plans[0].label.as_deref()), (0, 0, Some("1")));
        assert_eq!((plans[1].mline, plans[1].channel, plans[1].codec_name()), (2, 1, "PCMA"));
        let answers = media_answers(&offer, &plans, &[30000, 30002]);
        assert_eq!(answers.iter().map(|a| a.port).collect::<Vec<_>>(), vec![30000, 0, 30002]);
        assert_eq!(plan_streams(&offer, 1).unwrap_err().code, 488);
    }

    #[test]
    fn srtp_line_without_a_usable_key_is_refused() {
        let offer = sdp::parse(&OFFER.replace("10004 RTP/AVP 8", "10004 RTP/SAVP 8")).unwrap();
        let plans = plan_streams(&offer, 16).unwrap();
        assert_eq!(plans.iter().map(|p| p.mline).collect::<Vec<_>>(), vec![0]);
    }

    const KEY: &str = "AES_CM_128_HMAC_SHA1_80 inline:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH";

    fn savp_offer() -> SessionDescription {
        sdp::parse(&OFFER.replace("10004 RTP/AVP 8\r\n", &format!("10004 RTP/SAVP 8\r\na=crypto:2 {KEY}\r\n"))).unwrap()
    }

    #[test]
    fn srtp_policy_decides_which_lines_are_recorded() {
        let offer = savp_offer();
        let mlines = |policy| plan_streams_with(&offer, 16, policy).map(|p| p.iter().map(|p| (p.mline, p.srtp.is_some())).collect::<Vec<_>>());
        assert_eq!(mlines(SrtpPolicy::Accept).unwrap(), vec![(0, false), (2, true)]);
        assert_eq!(mlines(SrtpPolicy::Require).unwrap(), vec![(2, true)]);
        assert_eq!(mlines(SrtpPolicy::Refuse).unwrap(), vec![(0, false)]);
        let only_srtp = sdp::parse(&format!("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 10004 RTP/SAVP 0\r\na=crypto:1 {KEY}\r\n")).unwrap();
        let r = plan_streams_with(&only_srtp, 16, SrtpPolicy::Refuse).unwrap_err();
        assert_eq!(r.code, 488);
        assert!(r.detail.contains("media.srtp"), "{}", r.detail);
    }

    #[test]
    fn srtp_answer_has_our_own_key_with_the_offers_tag() {
        let offer = savp_offer();
        let plans = plan_streams(&offer, 16).unwrap();
        let answers = media_answers(&offer, &plans, &[30000, 30002]);
        let crypto = answers[2].crypto.as_deref().unwrap();
        assert!(crypto.starts_with("2 AES_CM_128_HMAC_SHA1_80 inline:"), "{crypto}");
        assert!(!crypto.contains("BwcHBwcH"), "our key, not the SRC's");
        let text = sdp::build_answer(&offer, &answers, "192.0.2.9".parse().unwrap(), 1, 1);
        assert!(text.contains(&format!("m=audio 30002 RTP/SAVP 8\r\na=rtpmap:8 PCMA/8000\r\na=label:2\r\na=crypto:{crypto}\r\n")), "{text}");
        assert!(!format!("{:?}{:?}", answers[2], plans[1]).contains(&crypto[33..]), "Debug shows no key");
    }

    fn reinvite(plans: &mut Vec<StreamPlan>, text: &str) -> (Vec<MediaAnswer>, Vec<StreamChange>) {
        let r = replan(plans, &[30000, 30002], &sdp::parse(text).unwrap(), SrtpPolicy::Accept, 2);
        (r.answers, r.changes)
    }

    #[test]
    fn hold_and_resume_by_reinvite() {
        let mut plans = plan_streams(&sdp::parse(OFFER).unwrap(), 16).unwrap();
        // a=inactive on the first stream, c=0.0.0.0 on the second (RFC 2543 hold).
        let held = OFFER.replacen("a=label:1\r\na=sendonly", "a=label:1\r\na=inactive", 1).replace("m=audio 10004 RTP/AVP 8\r\n", "m=audio 10004 RTP/AVP 8\r\nc=IN IP4 0.0.0.0\r\n");
        let (answers, changes) = reinvite(&mut plans, &held);
        assert_eq!(changes.iter().map(|c| (c.channel, c.held)).collect::<Vec<_>>(), vec![(0, true), (1, true)]);
        assert_eq!(answers.iter().map(|a| a.port).collect::<Vec<_>>(), vec![30000, 0, 30002], "held streams keep their ports");
        let text = sdp::build_answer(&sdp::parse(&held).unwrap(), &answers, "192.0.2.9".parse().unwrap(), 1, 2);
        assert_eq!(text.matches("a=inactive").count(), 1, "{text}");
        assert_eq!(text.matches("a=recvonly").count(), 1, "sendonly to a null address: still recvonly\n{text}");
        let (_, changes) = reinvite(&mut plans, OFFER);
        assert!(changes.iter().all(|c| !c.held && !c.moved && c.srtp == SrtpChange::Keep), "{changes:?}");
        assert!(plans.iter().all(|p| p.active && !p.held));
    }

    #[test]
    fn reinvite_changes_codec_address_and_refuses_new_mlines() {
        let mut plans = plan_streams(&sdp::parse(OFFER).unwrap(), 16).unwrap();
        let text = format!("{}m=audio 10006 RTP/AVP 0\r\na=label:3\r\n", OFFER.replace("10004 RTP/AVP 8", "10008 RTP/AVP 9"));
        let (answers, changes) = reinvite(&mut plans, &text);
        assert_eq!(answers.iter().map(|a| a.port).collect::<Vec<_>>(), vec![30000, 0, 30002, 0]);
        assert_eq!((changes[1].codec.codec, changes[1].moved), (sdp::AudioCodec::G722, true));
        assert_eq!(plans[1].codec_name(), "G722");
        // The line disabled (port 0): answered port 0 and held until it comes back.
        let (answers, changes) = reinvite(&mut plans, &OFFER.replace("10004 RTP/AVP 8", "0 RTP/AVP 8"));
        assert_eq!((answers[2].port, changes[1].held), (0, true));
    }

    #[test]
    fn new_mline_takes_a_spare_channel() {
        let mut plans = plan_streams(&sdp::parse(OFFER).unwrap(), 16).unwrap();
        let text = format!("{OFFER}m=audio 10006 RTP/AVP 0\r\na=label:3\r\na=sendonly\r\n");
        let r = replan(&mut plans, &[30000, 30002], &sdp::parse(&text).unwrap(), SrtpPolicy::Accept, 3);
        assert_eq!(r.added, vec![2]);
        assert_eq!((plans[2].mline, plans[2].channel, plans[2].label.as_deref(), plans[2].active), (3, 2, Some("3"), true));
        assert!(r.answers[3].codec.is_some());
        // Offered again: the same stream, no second channel.
        let r = replan(&mut plans, &[30000, 30002, 30004], &sdp::parse(&text).unwrap(), SrtpPolicy::Accept, 3);
        assert!(r.added.is_empty());
        assert_eq!(r.answers[3].port, 30004);
    }

    #[test]
    fn srtp_receiver_is_kept_when_the_reinvite_repeats_the_key() {
        let offer = savp_offer();
        let mut plans = plan_streams(&offer, 16).unwrap();
        let ours = plans[1].srtp.clone().unwrap().ours;
        let text = OFFER.replace("10004 RTP/AVP 8\r\n", &format!("10004 RTP/SAVP 8\r\na=crypto:2 {KEY}\r\n"));
        let (_, changes) = reinvite(&mut plans, &text);
        assert_eq!(changes[1].srtp, SrtpChange::Keep);
        assert_eq!(plans[1].srtp.as_ref().unwrap().ours, ours, "our key kept (RFC 4568 §7.1.4)");
        let (_, changes) = reinvite(&mut plans, &text.replace("inline:BwcH", "inline:CwcH"));
        assert!(matches!(changes[1].srtp, SrtpChange::New(_)));
        let (_, changes) = reinvite(&mut plans, OFFER);
        assert_eq!(changes[1].srtp, SrtpChange::Off);
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_name("a1b2@192.0.2.1"), "a1b2_192.0.2.1");
        assert_eq!(file_name("../etc/passwd"), "_.._etc_passwd");
        assert_eq!(file_name(".."), "_..");
        assert_eq!(file_name("ok-1_2.x"), "ok-1_2.x");
    }

    #[test]
    fn headers_carried_by_pattern_as_received() {
        let m = Message::parse(
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\n\
To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nX-Genesys-CallUUID: u1\r\nUser-to-User: 00ab;encoding=hex\r\n\
x-other: v\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let h = carried_headers(&m, &["X-*".to_string(), "user-to-user".to_string()]);
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["X-Genesys-CallUUID", "User-to-User", "x-other"]);
    }
}
