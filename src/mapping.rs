//! From what the gateway knows about a finished recording to Tethr's `info` JSON.
//!
//! Pure: the runtime gathers the facts into a [`CallSummary`]; [`build_info`] turns them into
//! the JSON object that is uploaded (or written next to the WAV by the local sink). Field names
//! are exactly Tethr's; fields with no value are left out, never sent as null. The rules are
//! written down in docs/mapping.md.

use std::time::{Instant, SystemTime};

use serde_json::{Map, Value, json};

use crate::media::timeline::StreamStats;
use crate::siprec::MetadataOutcome;
use crate::siprec::metadata::{MdParticipant, Metadata};

/// One channel of the recording (one recorded stream, in m-line order).
#[derive(Debug, Clone)]
pub struct ChannelSummary {
    /// The m-line's `a=label`.
    pub label: Option<String>,
    /// Codec name as negotiated (`PCMU`, `PCMA`).
    pub codec: &'static str,
    pub stats: StreamStats,
}

/// Everything `info` is built from.
#[derive(Debug, Clone)]
pub struct CallSummary<'a> {
    /// The recording session's SIP Call-ID.
    pub session_id: &'a str,
    /// When the 200 OK was sent, as a monotonic instant (stream times are reported relative to it)
    /// and as wall time.
    pub t0: Instant,
    pub start: SystemTime,
    pub end: SystemTime,
    pub channels: &'a [ChannelSummary],
    pub metadata: &'a MetadataOutcome,
    /// INVITE headers selected by `metadata.carry_headers`, as received.
    pub sip_headers: &'a [(String, String)],
    /// Why the recording ended (`session::EndReason::as_str`).
    pub end_reason: &'a str,
    /// The gateway's own notes (problems met on the way).
    pub notes: &'a [String],
}

/// ISO-8601 UTC with milliseconds and `Z`, as Tethr's examples show.
pub fn iso8601(t: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The user part of an AOR as a phone number: `sip:+15551234567@x` → `+15551234567`,
/// `tel:+1-555-123` → `+1555123`, `sip:4711@pbx` → `4711`; `None` when it is not a number.
pub fn phone_number(aor: &str) -> Option<String> {
    let aor = aor.trim().trim_start_matches('<').trim_end_matches('>');
    let rest = ["sips:", "sip:", "tel:"]
        .iter()
        .find_map(|s| aor.get(..s.len()).filter(|p| p.eq_ignore_ascii_case(s)).map(|_| &aor[s.len()..]))
        .unwrap_or(aor);
    let user = rest.split('@').next()?.split(';').next()?;
    let mut out = String::with_capacity(user.len());
    for (i, c) in user.chars().enumerate() {
        match c {
            '+' if i == 0 => out.push(c),
            '0'..='9' => out.push(c),
            // RFC 3966 visual separators.
            '-' | '.' | '(' | ')' | ' ' => {}
            _ => return None,
        }
    }
    out.chars().any(|c| c.is_ascii_digit()).then_some(out)
}

/// `John Doe` → (`John`, `Doe`); `Doe, John` → (`John`, `Doe`); `Agent` → (`Agent`, none).
pub fn split_name(name: &str) -> (Option<String>, Option<String>) {
    let name = name.trim().trim_matches('"').trim();
    if name.is_empty() {
        return (None, None);
    }
    if let Some((last, first)) = name.split_once(',') {
        let (f, l) = (first.trim(), last.trim());
        return ((!f.is_empty()).then(|| f.to_string()), (!l.is_empty()).then(|| l.to_string()));
    }
    match name.rsplit_once(' ') {
        Some((first, last)) => (Some(first.trim().to_string()), Some(last.trim().to_string())),
        None => (Some(name.to_string()), None),
    }
}

/// Contact types in the order known participants are met on the channels (docs/mapping.md:
/// the first recorded party is the caller, which in a contact center's inbound traffic is the
/// customer; the second is the agent). Tethr takes one contact per type.
const CONTACT_TYPES: [&str; 2] = ["customer", "agent"];

fn contact(channel: usize, kind: &str, p: &MdParticipant) -> Value {
    let mut c = Map::new();
    c.insert("type".into(), json!(kind));
    c.insert("channel".into(), json!(channel));
    if let Some(n) = p.aor.as_deref().and_then(phone_number) {
        c.insert("phoneNumber".into(), json!(n));
    }
    if let Some(aor) = &p.aor {
        c.insert("referenceId".into(), json!(aor));
    }
    let (first, last) = p.name.as_deref().map(split_name).unwrap_or((None, None));
    if let Some(f) = first {
        c.insert("firstName".into(), json!(f));
    }
    if let Some(l) = last {
        c.insert("lastName".into(), json!(l));
    }
    Value::Object(c)
}

/// The identifiers of the participant the mapping makes the `agent` (AOR, its number, its
/// user part), for matching against Tethr's recording settings. Empty when no agent is known.
pub fn agent_identifiers(metadata: &MetadataOutcome, labels: &[Option<String>]) -> Vec<String> {
    let MetadataOutcome::Parsed(md) = metadata else { return Vec::new() };
    let agent = labels
        .iter()
        .filter_map(|l| l.as_deref().and_then(|l| md.participant_sending_label(l)))
        .nth(CONTACT_TYPES.iter().position(|t| *t == "agent").unwrap_or(1));
    let Some(aor) = agent.and_then(|p| p.aor.as_deref()) else { return Vec::new() };
    let mut ids = vec![aor.to_string()];
    if let Some(n) = phone_number(aor) {
        ids.push(n);
    }
    let user = aor.split_once(':').map_or(aor, |(_, r)| r).split(['@', ';']).next().unwrap_or("");
    if !user.is_empty() && !ids.iter().any(|i| i == user) {
        ids.push(user.to_string());
    }
    ids
}

fn master_call_id(md: Option<&Metadata>, session_id: &str) -> String {
    md.and_then(|m| {
        m.group_id
            .clone()
            .or_else(|| m.sip_session_id().map(str::to_string))
            .or_else(|| m.sessions.first().map(|s| s.id.clone()))
    })
    .filter(|s| !s.trim().is_empty())
    .unwrap_or_else(|| session_id.to_string())
}

fn ms_since(t0: Instant, t: Option<Instant>) -> Option<u64> {
    t.map(|t| t.saturating_duration_since(t0).as_millis() as u64)
}

/// Builds Tethr's `info` object.
pub fn build_info(s: &CallSummary<'_>) -> Value {
    let md = match s.metadata {
        MetadataOutcome::Parsed(m) => Some(m),
        _ => None,
    };
    let mut info = Map::new();
    info.insert("sessionId".into(), json!(s.session_id));
    info.insert("masterCallId".into(), json!(master_call_id(md, s.session_id)));
    info.insert("startTime".into(), json!(iso8601(s.start)));
    info.insert("endTime".into(), json!(iso8601(s.end)));
    info.insert("direction".into(), json!("Unknown"));
    info.insert("audio".into(), json!({ "format": "wav" }));

    let mut contacts = Vec::new();
    let mut participants = Vec::new();
    for (channel, ch) in s.channels.iter().enumerate() {
        let Some(p) = md.zip(ch.label.as_deref()).and_then(|(m, l)| m.participant_sending_label(l)) else {
            continue;
        };
        if let Some(kind) = CONTACT_TYPES.get(contacts.len()) {
            contacts.push(contact(channel, kind, p));
        }
        let mut pj = Map::new();
        pj.insert("channel".into(), json!(channel));
        pj.insert("participantId".into(), json!(p.id));
        if let Some(a) = &p.aor {
            pj.insert("aor".into(), json!(a));
        }
        if let Some(n) = &p.name {
            pj.insert("name".into(), json!(n));
        }
        participants.push(Value::Object(pj));
    }
    info.insert("contacts".into(), Value::Array(contacts));

    let mut headers = Map::new();
    for (name, value) in s.sip_headers {
        match headers.get_mut(name) {
            Some(Value::Array(a)) => a.push(json!(value)),
            Some(v) => *v = json!([v.take(), value]),
            None => {
                headers.insert(name.clone(), json!(value));
            }
        }
    }

    let streams: Vec<Value> = s
        .channels
        .iter()
        .enumerate()
        .map(|(i, ch)| {
            let mut st = Map::new();
            st.insert("channel".into(), json!(i));
            if let Some(l) = &ch.label {
                st.insert("label".into(), json!(l));
            }
            st.insert("codec".into(), json!(ch.codec));
            st.insert("packets".into(), json!(ch.stats.packets));
            st.insert("lost".into(), json!(ch.stats.lost));
            st.insert("late".into(), json!(ch.stats.late));
            st.insert("reanchors".into(), json!(ch.stats.reanchors));
            st.insert("foreign".into(), json!(ch.stats.foreign));
            st.insert("silent".into(), json!(ch.stats.packets == 0));
            if let Some(ms) = ms_since(s.t0, ch.stats.first_at) {
                st.insert("firstPacketMs".into(), json!(ms));
            }
            if let Some(ms) = ms_since(s.t0, ch.stats.last_at) {
                st.insert("lastPacketMs".into(), json!(ms));
            }
            Value::Object(st)
        })
        .collect();

    let mut gw = Map::new();
    gw.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    gw.insert("endReason".into(), json!(s.end_reason));
    gw.insert("streams".into(), Value::Array(streams));
    if !participants.is_empty() {
        gw.insert("participants".into(), Value::Array(participants));
    }
    match s.metadata {
        MetadataOutcome::Absent => {
            gw.insert("metadata".into(), json!("absent"));
        }
        MetadataOutcome::Parsed(m) => {
            gw.insert("metadata".into(), json!("parsed"));
            if !m.warnings.is_empty() {
                gw.insert("metadataWarnings".into(), json!(m.warnings));
            }
        }
        MetadataOutcome::Invalid { error, raw } => {
            gw.insert("metadata".into(), json!("invalid"));
            gw.insert("metadataError".into(), json!(error));
            gw.insert("metadataRaw".into(), json!(raw));
        }
    }
    if !s.notes.is_empty() {
        gw.insert("notes".into(), json!(s.notes));
    }
    let mut meta = Map::new();
    meta.insert("sipHeaders".into(), Value::Object(headers));
    meta.insert("gateway".into(), Value::Object(gw));
    info.insert("metaData".into(), Value::Object(meta));
    Value::Object(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::siprec::metadata::{MdSession, MdStream};
    use std::time::Duration;

    fn participant(id: &str, aor: &str, name: Option<&str>, sends: &str) -> MdParticipant {
        MdParticipant {
            id: id.into(),
            aor: Some(aor.into()),
            name: name.map(Into::into),
            sends: vec![sends.into()],
            receives: vec![],
            ..MdParticipant::default()
        }
    }

    fn metadata() -> Metadata {
        Metadata {
            group_id: None,
            sessions: vec![MdSession { id: "sess-b64".into(), sip_session_ids: vec!["orig-call@sbc".into()], group_ref: None, ..MdSession::default() }],
            participants: vec![
                participant("p1", "sip:+15551234567@carrier.example", Some("Pat Caller"), "s1"),
                participant("p2", "sip:4711@pbx.example", Some("Doe, Jane"), "s2"),
            ],
            streams: vec![
                MdStream { id: "s1".into(), label: Some("1".into()), session_ref: None, ..MdStream::default() },
                MdStream { id: "s2".into(), label: Some("2".into()), session_ref: None, ..MdStream::default() },
            ],
            warnings: vec![],
            ..Metadata::default()
        }
    }

    fn has_null(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Array(a) => a.iter().any(has_null),
            Value::Object(o) => o.values().any(has_null),
            _ => false,
        }
    }

    #[test]
    fn two_party_call_maps_contacts_and_ids() {
        let t0 = crate::clock::now();
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        let chans = vec![
            ChannelSummary { label: Some("1".into()), codec: "PCMU", stats: StreamStats::default() },
            ChannelSummary { label: Some("2".into()), codec: "PCMU", stats: StreamStats::default() },
        ];
        let md = MetadataOutcome::Parsed(metadata());
        let headers = vec![("X-Ucid".to_string(), "a".to_string()), ("X-Ucid".to_string(), "b".to_string())];
        let info = build_info(&CallSummary {
            session_id: "rs-1@sbc",
            t0,
            start,
            end: start + Duration::from_millis(61_500),
            channels: &chans,
            metadata: &md,
            sip_headers: &headers,
            end_reason: "bye",
            notes: &[],
        });
        assert_eq!(info["sessionId"], "rs-1@sbc");
        assert_eq!(info["masterCallId"], "orig-call@sbc");
        assert_eq!(info["startTime"], "2025-11-24T16:00:00.123Z");
        assert_eq!(info["endTime"], "2025-11-24T16:01:01.623Z");
        assert_eq!(info["direction"], "Unknown");
        assert_eq!(info["audio"]["format"], "wav");
        assert_eq!(info["contacts"][0]["type"], "customer");
        assert_eq!(info["contacts"][0]["channel"], 0);
        assert_eq!(info["contacts"][0]["phoneNumber"], "+15551234567");
        assert_eq!(info["contacts"][0]["firstName"], "Pat");
        assert_eq!(info["contacts"][1]["type"], "agent");
        assert_eq!(info["contacts"][1]["phoneNumber"], "4711");
        assert_eq!(info["contacts"][1]["firstName"], "Jane");
        assert_eq!(info["contacts"][1]["lastName"], "Doe");
        assert_eq!(info["metaData"]["sipHeaders"]["X-Ucid"], json!(["a", "b"]));
        assert_eq!(info["metaData"]["gateway"]["streams"][1]["silent"], true);
        assert!(!has_null(&info));
    }

    #[test]
    fn no_metadata_falls_back_to_session_id() {
        let info = build_info(&CallSummary {
            session_id: "x",
            t0: crate::clock::now(),
            start: SystemTime::UNIX_EPOCH,
            end: SystemTime::UNIX_EPOCH,
            channels: &[],
            metadata: &MetadataOutcome::Invalid { error: "bad xml".into(), raw: "<x".into() },
            sip_headers: &[],
            end_reason: "bye",
            notes: &[],
        });
        assert_eq!(info["masterCallId"], "x");
        assert_eq!(info["contacts"], json!([]));
        assert_eq!(info["metaData"]["gateway"]["metadataError"], "bad xml");
    }

    #[test]
    fn agent_identifiers_follow_the_contact_rule() {
        let md = MetadataOutcome::Parsed(metadata());
        let ids = agent_identifiers(&md, &[Some("1".into()), Some("2".into())]);
        assert_eq!(ids, vec!["sip:4711@pbx.example".to_string(), "4711".to_string()]);
        assert!(agent_identifiers(&md, &[Some("1".into())]).is_empty(), "one party: no agent known");
        assert!(agent_identifiers(&MetadataOutcome::Absent, &[Some("1".into())]).is_empty());
    }

    #[test]
    fn phone_numbers_and_names() {
        assert_eq!(phone_number("sip:+1 (555) 123-4567@x;user=phone").as_deref(), Some("+15551234567"));
        assert_eq!(phone_number("tel:+44-20-7946-0000").as_deref(), Some("+442079460000"));
        assert_eq!(phone_number("sips:4711@pbx").as_deref(), Some("4711"));
        assert_eq!(phone_number("sip:alice@example.com"), None);
        assert_eq!(split_name("Mary Ann Smith"), (Some("Mary Ann".into()), Some("Smith".into())));
        assert_eq!(split_name("Agent"), (Some("Agent".into()), None));
        assert_eq!(split_name("  "), (None, None));
    }
}
