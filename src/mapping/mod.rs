//! From what the gateway knows about a finished recording to Tethr's `info` JSON and the
//! channel layout of the uploaded audio.
//!
//! Pure: the runtime gathers the facts into a [`CallSummary`] (the recorded streams, every
//! metadata document the call received, the INVITE's headers, the `[mapping]` rules);
//! [`build_info`] replays the metadata (`history`), puts each participant on the agent or the
//! customer side (`parties`), lays the recorded streams out on output channels (`layout`),
//! picks the ids (`ids`) and writes the JSON that is uploaded (or written next to the audio
//! by the local sink). It reads no clock and does no I/O; rendering the audio from the
//! [`Layout`] is `media::render`'s. Field names are exactly Tethr's; fields with no value are
//! left out, never sent as null. The rules are written down in docs/mapping.md.

mod history;
mod identity;
mod ids;
mod layout;
mod parties;
pub mod rules;

use std::time::{Instant, SystemTime};

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::{debug, warn};

pub use identity::{phone_number, split_name};
pub use rules::MappingRules;

use crate::media::timeline::StreamStats;
use crate::siprec::MetadataOutcome;
use history::History;
use parties::{Party, Side, Sides};

/// One recorded stream (one capture channel), in plan (m-line) order.
#[derive(Debug, Clone)]
pub struct ChannelSummary {
    /// The m-line's `a=label`.
    pub label: Option<String>,
    /// Codec name as negotiated (`PCMU`, `PCMA`).
    pub codec: &'static str,
    pub stats: StreamStats,
    /// Whether the stream was ever offered in a direction that carries audio (not
    /// `a=inactive` throughout the call).
    pub active: bool,
    /// Codec, SRTP and DTMF counters of the media thread.
    pub media: crate::media::StreamMedia,
}

impl ChannelSummary {
    /// A stream offered inactive and never activated, that carried no packet, makes no
    /// channel.
    pub(crate) fn usable(&self) -> bool {
        self.active || self.stats.packets > 0
    }
}

/// One metadata document as the call received it, in order.
#[derive(Debug, Clone)]
pub struct MetadataChange {
    /// Milliseconds since the 200 OK (`t0`); 0 for the INVITE's.
    pub at_ms: u64,
    /// The request that carried it: `INVITE`, `re-INVITE`, `UPDATE`, `INFO` or `BYE`.
    pub via: &'static str,
    /// As parsed, not merged.
    pub outcome: MetadataOutcome,
}

/// `[recording] layout`: how recorded streams become the uploaded file's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayoutKind {
    /// Channel 0 the agent side, channel 1 the customer side (mono for one mixed stream).
    #[default]
    AgentCustomer,
    /// One channel per recorded stream.
    PerStream,
}

impl LayoutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LayoutKind::AgentCustomer => "agent-customer",
            LayoutKind::PerStream => "per-stream",
        }
    }
}

/// Everything `info` and the layout are built from.
#[derive(Debug, Clone)]
pub struct CallSummary<'a> {
    /// The recording session's SIP Call-ID.
    pub session_id: &'a str,
    /// When the 200 OK was sent, as a monotonic instant (stream times are reported relative to
    /// it) and as wall time.
    pub t0: Instant,
    pub start: SystemTime,
    pub end: SystemTime,
    /// The recorded streams, in plan order (capture channel order).
    pub streams: &'a [ChannelSummary],
    /// Every metadata document, in order; the first is the INVITE's (possibly `Absent`).
    pub metadata: &'a [MetadataChange],
    pub layout: LayoutKind,
    pub rules: &'a MappingRules,
    /// Tethr's `audio.format` of the uploaded file (`wav`, `mp3`, `opus`).
    pub audio_format: &'a str,
    /// The INVITE's Request-URI, From and To (full header values).
    pub request_uri: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    /// INVITE headers selected by `metadata.carry_headers`, as received.
    pub sip_headers: &'a [(String, String)],
    /// Every header of the INVITE, as received (for `header:` sources and header identities).
    pub all_headers: &'a [(String, String)],
    /// Why the recording ended (`session::EndReason::as_str`).
    pub end_reason: &'a str,
    /// The gateway's own notes (problems met on the way).
    pub notes: &'a [String],
}

/// The upload's output channels, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    pub channels: Vec<OutChannel>,
}

/// One output channel: the recorded streams mixed into it, each over a span of the call.
/// No source: a silent channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutChannel {
    pub sources: Vec<SourceSpan>,
}

/// Recorded stream `stream` (capture channel, plan order) from `from_ms` to `to_ms` (ms since
/// the 200 OK; `None`: to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceSpan {
    pub stream: usize,
    pub from_ms: u64,
    pub to_ms: Option<u64>,
}

/// [`build_info`]'s result.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// Tethr's `info` object.
    pub info: Value,
    /// The channels of the file to upload; `info.contacts` matches it.
    pub layout: Layout,
}

/// ISO-8601 UTC with milliseconds and `Z`, as Tethr's examples show.
pub fn iso8601(t: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// What the rules made of the call's participants.
struct Analysis<'a> {
    history: History<'a>,
    sides: Sides,
    hints: parties::Hints<'a>,
    direction: (&'static str, String),
    end_ms: u64,
    /// Where the identities came from, when not from metadata.
    identity_note: Option<String>,
}

fn analyse<'a>(s: &'a CallSummary<'a>) -> Analysis<'a> {
    let end_ms = u64::try_from(s.end.duration_since(s.start).unwrap_or_default().as_millis()).unwrap_or(u64::MAX);
    let mut history = history::replay(s.metadata, s.streams, s.start, end_ms, s.rules);
    let mut tracks = std::mem::take(&mut history.tracks);
    let mut identity_note = None;
    if tracks.is_empty() {
        tracks = parties::cisco_participants(s.all_headers, s.streams.len());
        if !tracks.is_empty() {
            identity_note = Some("participants from X-Cisco-Recording-Participant headers (no metadata)".to_owned());
        }
    }
    let hints = parties::Hints::from_docs(&history.docs);
    let mut sides = parties::classify(tracks, &history.docs, &hints, s.rules);
    let origin = parties::originator(&sides, &hints, s.rules);
    let direction = parties::direction(&sides, origin);
    parties::split_internal(&mut sides, origin.map(|(o, _)| o));
    Analysis { history, sides, hints, direction, end_ms, identity_note }
}

/// The identifiers of the participant the mapping makes the agent (vendor user id, AOR, its
/// number, user parts), for matching against Tethr's recording settings. Empty when no agent
/// is known. Only the metadata, headers and rules of `s` matter: at INVITE time, pass the
/// INVITE's metadata alone and any times.
pub fn agent_identifiers(s: &CallSummary<'_>) -> Vec<String> {
    let a = analyse(s);
    let Some(i) = parties::primary(&a.sides, Side::Agent, a.end_ms) else { return Vec::new() };
    let vendor_user = a.hints.recorded_user.filter(|_| a.sides.recorded == Some(i));
    parties::identifiers(&a.sides.parties[i], vendor_user)
}

/// Builds Tethr's `info` object and the layout of the file to upload.
pub fn build_info(s: &CallSummary<'_>) -> Mapped {
    let a = analyse(s);
    let built = layout::build(s.layout, s.streams, &a.sides, &a.history.mixed, a.end_ms);
    let mut notes: Vec<String> = a.identity_note.iter().cloned().collect();
    notes.extend(a.history.notes.iter().cloned());
    notes.extend(a.sides.notes.iter().cloned());
    notes.extend(built.notes.iter().cloned());
    for w in &a.history.warnings {
        warn!(warning = %w, "recording metadata and SDP disagree");
    }

    // Contacts: one per channel, one per type.
    let mut contacts = Vec::new();
    let mut contact_of: Vec<Option<usize>> = vec![None; a.sides.parties.len()];
    let mut used = [false, false];
    for (ch, side) in built.sides.iter().enumerate() {
        let Some(side) = *side else { continue };
        if std::mem::replace(&mut used[side as usize], true) {
            continue;
        }
        let party = match s.layout {
            LayoutKind::PerStream => built.layout.channels[ch]
                .sources
                .first()
                .and_then(|src| layout::stream_sender(&a.sides, src.stream, a.end_ms)),
            LayoutKind::AgentCustomer => parties::primary(&a.sides, side, a.end_ms),
        };
        if let Some(p) = party {
            contact_of[p] = Some(ch);
        }
        contacts.push(contact(
            ch,
            side,
            party.map(|p| &a.sides.parties[p]),
            a.sides.recorded == party,
            &a.hints,
            s.rules,
        ));
    }
    if contacts.len() < built.layout.channels.len() {
        notes.push(format!(
            "{} channels but Tethr takes one contact per type: channels without a contact are described in metaData.participants",
            built.layout.channels.len()
        ));
    }

    let mut info = Map::new();
    info.insert("sessionId".into(), json!(s.session_id));
    let master = ids::master_call_id(&s.rules.master_call_id, &a.history.docs, s.all_headers, s.session_id);
    if let Some((id, _)) = &master {
        info.insert("masterCallId".into(), json!(id));
    }
    info.insert("startTime".into(), json!(iso8601(s.start)));
    info.insert("endTime".into(), json!(iso8601(s.end)));
    let (direction, direction_reason) = &a.direction;
    info.insert("direction".into(), json!(direction));
    let mut dialed_source = None;
    if *direction == "Inbound" {
        let agent = parties::primary(&a.sides, Side::Agent, a.end_ms).and_then(|p| a.sides.parties[p].aor());
        let facts = ids::DialedFacts {
            vendor_dialed: a.hints.dialed,
            vendor_called: a.hints.called,
            called_party: agent,
            station: a.hints.recorded_user,
            request_uri: s.request_uri,
            headers: s.all_headers,
            docs: &a.history.docs,
        };
        match ids::number_dialed(s.rules, &facts) {
            Some(Ok((n, src))) => {
                info.insert("numberDialed".into(), json!(n));
                dialed_source = Some(src);
            }
            Some(Err(why)) => notes.push(why),
            None => {}
        }
    }
    info.insert("audio".into(), json!({ "format": s.audio_format }));
    info.insert("contacts".into(), Value::Array(contacts));

    let mut meta = Map::new();
    meta.insert("sipHeaders".into(), headers_json(s.sip_headers));
    let participants: Vec<Value> = a
        .sides
        .parties
        .iter()
        .enumerate()
        .map(|(i, p)| participant_json(p, contact_of[i], channel_of(p, &built.layout), s.streams))
        .collect();
    if !participants.is_empty() {
        meta.insert("participants".into(), Value::Array(participants));
    }
    if let Some(md) = &a.history.merged
        && !md.extensions.is_empty()
    {
        let data: Vec<Value> = md
            .extensions
            .iter()
            .map(|e| {
                let mut o = Map::new();
                o.insert("vendor".into(), json!(e.vendor));
                if let Some(p) = &e.parent {
                    o.insert("parent".into(), json!(p));
                }
                o.insert("data".into(), e.data.clone());
                Value::Object(o)
            })
            .collect();
        meta.insert("vendorData".into(), Value::Array(data));
    }
    if let Some(rc) = recorded_call(&a.history) {
        meta.insert("recordedCall".into(), rc);
    }
    let mut src = Map::new();
    if let Some(f) = s.from {
        src.insert("from".into(), json!(f));
    }
    for (key, header) in [("userAgent", "User-Agent"), ("contact", "Contact")] {
        if let Some(v) = ids::header(s.all_headers, header) {
            src.insert(key.into(), json!(v));
        }
    }
    if !src.is_empty() {
        meta.insert("src".into(), Value::Object(src));
    }
    let mut mapping = Map::new();
    mapping.insert("layout".into(), json!(s.layout.as_str()));
    mapping.insert("direction".into(), json!(direction_reason));
    if let Some((_, src)) = &master {
        mapping.insert("masterCallIdSource".into(), json!(src));
    }
    if let Some(src) = dialed_source {
        mapping.insert("numberDialedSource".into(), json!(src));
    }
    if !notes.is_empty() {
        mapping.insert("notes".into(), json!(notes));
    }
    if !a.history.warnings.is_empty() {
        mapping.insert("warnings".into(), json!(a.history.warnings));
    }
    meta.insert("mapping".into(), Value::Object(mapping));
    if !a.history.log.is_empty() {
        meta.insert("metadataHistory".into(), Value::Array(a.history.log.clone()));
    }
    meta.insert("gateway".into(), gateway_json(s, &built.layout, &built.sides, &a.history));
    info.insert("metaData".into(), Value::Object(meta));
    debug!(
        direction = *direction,
        participants = a.sides.parties.len(),
        channels = built.layout.channels.len(),
        guessed = a.sides.guessed,
        "mapped the call to Tethr info"
    );
    Mapped { info: Value::Object(info), layout: built.layout }
}

/// A contact: type and channel, and what is known of the party.
fn contact(
    channel: usize,
    side: Side,
    party: Option<&Party>,
    recorded: bool,
    hints: &parties::Hints<'_>,
    rules: &MappingRules,
) -> Value {
    let mut c = Map::new();
    c.insert("type".into(), json!(side.as_str()));
    c.insert("channel".into(), json!(channel));
    let Some(p) = party else { return Value::Object(c) };
    let number = p.number();
    if let Some(n) = &number {
        c.insert("phoneNumber".into(), json!(n));
    }
    let reference = rules.reference_id.iter().find_map(|src| match src {
        rules::ReferenceSource::VendorUser => hints.recorded_user.filter(|_| recorded).map(str::to_owned),
        rules::ReferenceSource::Extension => number.clone().filter(|n| rules.is_extension(n)),
        rules::ReferenceSource::Aor => p.aor().map(str::to_owned),
    });
    if let Some(r) = reference {
        c.insert("referenceId".into(), json!(r));
    }
    let (first, last) = p.track.p.name.as_deref().map(split_name).unwrap_or((None, None));
    if let Some(f) = first {
        c.insert("firstName".into(), json!(f));
    }
    if let Some(l) = last {
        c.insert("lastName".into(), json!(l));
    }
    Value::Object(c)
}

/// The first output channel that carries any of the party's audio.
fn channel_of(p: &Party, layout: &Layout) -> Option<usize> {
    layout.channels.iter().position(|ch| {
        ch.sources.iter().any(|src| {
            p.track.spans.iter().any(|sp| {
                sp.stream == src.stream
                    && sp.from_ms < src.to_ms.unwrap_or(u64::MAX)
                    && src.from_ms < sp.to_ms.unwrap_or(u64::MAX)
            })
        })
    })
}

fn participant_json(p: &Party, contact: Option<usize>, channel: Option<usize>, streams: &[ChannelSummary]) -> Value {
    let mut o = Map::new();
    o.insert("participantId".into(), json!(p.track.p.id));
    o.insert("side".into(), json!(p.side.as_str()));
    o.insert("rule".into(), json!(p.rule));
    if let Some(ch) = channel {
        o.insert("channel".into(), json!(ch));
    }
    o.insert("contact".into(), json!(contact.is_some()));
    if let Some(a) = &p.track.p.aor {
        o.insert("aor".into(), json!(a));
    }
    if let Some(n) = &p.track.p.name {
        o.insert("name".into(), json!(n));
    }
    if let Some(r) = &p.realm {
        o.insert("realm".into(), json!(r));
    }
    let mut labels: Vec<&str> = Vec::new();
    for sp in &p.track.spans {
        if let Some(l) = streams.get(sp.stream).and_then(|c| c.label.as_deref())
            && !labels.contains(&l)
        {
            labels.push(l);
        }
    }
    if !labels.is_empty() {
        o.insert("labels".into(), json!(labels));
    }
    if p.track.joined_ms > 0 {
        o.insert("joinedMs".into(), json!(p.track.joined_ms));
    }
    if let Some(l) = p.track.left_ms {
        o.insert("leftMs".into(), json!(l));
    }
    Value::Object(o)
}

/// The carried headers; a repeated header becomes an array.
fn headers_json(headers: &[(String, String)]) -> Value {
    let mut out = Map::new();
    for (name, value) in headers {
        match out.get_mut(name) {
            Some(Value::Array(a)) => a.push(json!(value)),
            Some(v) => *v = json!([v.take(), value]),
            None => {
                out.insert(name.clone(), json!(value));
            }
        }
    }
    Value::Object(out)
}

/// The recorded call's ids from every document: group, sessions, SIP session ids, vendor
/// call ids.
fn recorded_call(h: &History<'_>) -> Option<Value> {
    let mut rc = Map::new();
    let mut push_unique = |key: &str, v: &str| {
        let list = rc.entry(key).or_insert_with(|| json!([]));
        if let Value::Array(a) = list
            && !a.iter().any(|x| x == v)
        {
            a.push(json!(v));
        }
    };
    for d in &h.docs {
        if let Some(g) = &d.group_id {
            push_unique("groupIds", g);
        }
        for s in &d.sessions {
            push_unique("sessionIds", &s.id);
            for id in &s.sip_session_ids {
                push_unique("sipSessionIds", id);
            }
        }
    }
    let mut vendor = Map::new();
    for (name, id) in h.docs.iter().flat_map(|d| &d.vendor.call_ids) {
        vendor.entry(name.clone()).or_insert_with(|| json!(id));
    }
    if !vendor.is_empty() {
        rc.insert("vendorCallIds".into(), Value::Object(vendor));
    }
    (!rc.is_empty()).then_some(Value::Object(rc))
}

fn ms_since(t0: Instant, t: Option<Instant>) -> Option<u64> {
    t.map(|t| u64::try_from(t.saturating_duration_since(t0).as_millis()).unwrap_or(u64::MAX))
}

/// `metaData.gateway`: the gateway's own account of the recording.
fn gateway_json(s: &CallSummary<'_>, layout: &Layout, sides: &[Option<Side>], h: &History<'_>) -> Value {
    let streams: Vec<Value> = s
        .streams
        .iter()
        .enumerate()
        .map(|(i, ch)| {
            let mut st = Map::new();
            st.insert("stream".into(), json!(i));
            if let Some(l) = &ch.label {
                st.insert("label".into(), json!(l));
            }
            st.insert("codec".into(), json!(ch.codec));
            st.insert("packets".into(), json!(ch.stats.packets));
            st.insert("lost".into(), json!(ch.stats.lost));
            st.insert("late".into(), json!(ch.stats.late));
            st.insert("duplicates".into(), json!(ch.stats.duplicates));
            st.insert("reanchors".into(), json!(ch.stats.reanchors));
            st.insert("driftInserted".into(), json!(ch.stats.drift_inserted));
            st.insert("driftDropped".into(), json!(ch.stats.drift_dropped));
            st.insert("foreign".into(), json!(ch.stats.foreign));
            st.insert("silent".into(), json!(ch.stats.packets == 0));
            let m = &ch.media;
            st.insert("unknownPayloadTypes".into(), json!(m.unknown_payloads));
            st.insert("comfortNoise".into(), json!(m.comfort_noise));
            st.insert("telephoneEvents".into(), json!(m.telephone_events));
            if m.rejected > 0 {
                st.insert("rejected".into(), json!(m.rejected));
            }
            if m.codec_changes > 0 {
                st.insert("codecChanges".into(), json!(m.codec_changes));
            }
            if let Some((suite, srtp)) = &m.srtp {
                st.insert(
                    "srtp".into(),
                    json!({
                        "suite": suite,
                        "decrypted": srtp.decrypted,
                        "authFailures": srtp.auth_failures,
                        "replayed": srtp.replayed,
                        "malformed": srtp.malformed,
                        "rtcpDecrypted": srtp.rtcp_decrypted,
                    }),
                );
            }
            if let Some(digits) = &m.dtmf {
                let digits: Vec<Value> = digits
                    .iter()
                    .map(|d| json!({ "digit": d.digit.to_string(), "atMs": d.at_ms, "durationMs": d.duration_ms }))
                    .collect();
                st.insert("dtmf".into(), Value::Array(digits));
            }
            if !ch.usable() {
                st.insert("inactive".into(), json!(true));
            }
            let channels: Vec<usize> = (0..layout.channels.len())
                .filter(|&c| layout.channels[c].sources.iter().any(|src| src.stream == i))
                .collect();
            st.insert("channels".into(), json!(channels));
            if let Some(ms) = ms_since(s.t0, ch.stats.first_at) {
                st.insert("firstPacketMs".into(), json!(ms));
            }
            if let Some(ms) = ms_since(s.t0, ch.stats.last_at) {
                st.insert("lastPacketMs".into(), json!(ms));
            }
            Value::Object(st)
        })
        .collect();
    let channels: Vec<Value> = layout
        .channels
        .iter()
        .enumerate()
        .map(|(c, ch)| {
            let mut o = Map::new();
            o.insert("channel".into(), json!(c));
            if let Some(side) = sides.get(c).copied().flatten() {
                o.insert("side".into(), json!(side.as_str()));
            }
            let sources: Vec<Value> = ch
                .sources
                .iter()
                .map(|src| {
                    let mut so = Map::new();
                    so.insert("stream".into(), json!(src.stream));
                    so.insert("fromMs".into(), json!(src.from_ms));
                    if let Some(t) = src.to_ms {
                        so.insert("toMs".into(), json!(t));
                    }
                    Value::Object(so)
                })
                .collect();
            o.insert("sources".into(), Value::Array(sources));
            Value::Object(o)
        })
        .collect();

    let mut gw = Map::new();
    gw.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    gw.insert("endReason".into(), json!(s.end_reason));
    gw.insert("streams".into(), Value::Array(streams));
    gw.insert("channels".into(), Value::Array(channels));
    match s.metadata.first().map(|c| &c.outcome) {
        None | Some(MetadataOutcome::Absent) => {
            gw.insert("metadata".into(), json!("absent"));
        }
        Some(MetadataOutcome::Parsed(doc)) => {
            gw.insert("metadata".into(), json!("parsed"));
            // Read with repairs: the document as received, for the record.
            if let Some(raw) = &doc.raw {
                gw.insert("metadataRaw".into(), json!(raw));
            }
        }
        Some(MetadataOutcome::Invalid { error, raw }) => {
            gw.insert("metadata".into(), json!("invalid"));
            gw.insert("metadataError".into(), json!(error));
            gw.insert("metadataRaw".into(), json!(raw));
        }
    }
    let mut warnings: Vec<&str> = Vec::new();
    for w in h.docs.iter().flat_map(|d| &d.warnings) {
        if !warnings.contains(&w.as_str()) {
            warnings.push(w);
        }
    }
    if !warnings.is_empty() {
        gw.insert("metadataWarnings".into(), json!(warnings));
    }
    if !s.notes.is_empty() {
        gw.insert("notes".into(), json!(s.notes));
    }
    Value::Object(gw)
}

#[cfg(test)]
mod tests;
