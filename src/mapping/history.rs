//! Replays the metadata a call received (INVITE, then each update) into who sent which
//! recorded stream over which span of the call, and a readable change log.
//!
//! Each document is merged into the state so far with [`Metadata::merge`] (RFC 7865 §8.2);
//! the difference between the state before and after a document is what happened at that
//! moment: a participant joined or left, a stream moved, a participant went on hold (its
//! `send` emptied) or came back. Streams are followed by their SDP label, resolved to the
//! recorded stream (plan order), so a complete update that renames stream ids but keeps the
//! labels changes nothing. It reads no clock: times are the changes' `at_ms`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::rules::{MappingRules, TIME_TOLERANCE_MS};
use super::{ChannelSummary, MetadataChange};
use crate::siprec::MetadataOutcome;
use crate::siprec::metadata::{DataMode, MdParticipant, Metadata};

/// A recorded stream carrying a participant's voice from `from_ms` to `to_ms` (`None`: to
/// the end of the call), in ms since the 200 OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub stream: usize,
    pub from_ms: u64,
    pub to_ms: Option<u64>,
}

impl Span {
    pub fn length(&self, end_ms: u64) -> u64 {
        self.to_ms.unwrap_or(end_ms).saturating_sub(self.from_ms)
    }
}

/// One participant over the whole call.
#[derive(Debug, Clone)]
pub(crate) struct Track {
    /// The participant as last described.
    pub p: MdParticipant,
    pub joined_ms: u64,
    pub left_ms: Option<u64>,
    /// Closed and open spans, in the order they began.
    pub spans: Vec<Span>,
    /// Streams it sends now, with when it began to.
    open: BTreeMap<usize, u64>,
}

impl Track {
    /// A participant that sends `streams` for the whole call (headers-only identities).
    pub fn whole_call(p: MdParticipant, streams: &[usize]) -> Track {
        Track {
            p,
            joined_ms: 0,
            left_ms: None,
            spans: streams.iter().map(|&stream| Span { stream, from_ms: 0, to_ms: None }).collect(),
            open: BTreeMap::new(),
        }
    }

    fn close(&mut self, stream: usize, at: u64) {
        if let Some(from) = self.open.remove(&stream)
            && let Some(span) =
                self.spans.iter_mut().rev().find(|s| s.stream == stream && s.from_ms == from && s.to_ms.is_none())
        {
            span.to_ms = Some(at.max(from));
        }
    }

    fn start(&mut self, stream: usize, at: u64) {
        self.open.insert(stream, at);
        self.spans.push(Span { stream, from_ms: at, to_ms: None });
    }

    /// Total time it sent audio on any stream.
    pub fn audio_ms(&self, end_ms: u64) -> u64 {
        self.spans.iter().map(|s| s.length(end_ms)).sum()
    }
}

/// What the replay found.
#[derive(Debug, Default)]
pub(crate) struct History<'a> {
    /// The documents that parsed, in order of arrival.
    pub docs: Vec<&'a Metadata>,
    /// Everything merged: the state at the end of the call.
    pub merged: Option<Metadata>,
    pub tracks: Vec<Track>,
    /// `metaData.metadataHistory`.
    pub log: Vec<Value>,
    /// Guesses and repairs.
    pub notes: Vec<String>,
    /// Where metadata and SDP disagree.
    pub warnings: Vec<String>,
    /// Recorded streams the metadata calls `mixed`.
    pub mixed: BTreeSet<usize>,
}

/// Replays `changes` against the recorded `streams`. `start` is the 200 OK's wall time and
/// `end_ms` the call's length.
pub(crate) fn replay<'a>(
    changes: &'a [MetadataChange],
    streams: &[ChannelSummary],
    start: SystemTime,
    end_ms: u64,
    rules: &MappingRules,
) -> History<'a> {
    let mut h = History::default();
    let start_ts = jiff::Timestamp::try_from(start).ok();
    let mut prev_at = 0;
    let mut untrusted_time = false;
    for (i, change) in changes.iter().enumerate() {
        let at = change.at_ms.min(end_ms).max(prev_at);
        let mut entry = Map::new();
        entry.insert("atMs".into(), json!(at));
        entry.insert("via".into(), json!(change.via));
        match &change.outcome {
            MetadataOutcome::Absent => {
                entry.insert("metadata".into(), json!("absent"));
            }
            MetadataOutcome::Invalid { error, raw } => {
                entry.insert("metadata".into(), json!("invalid"));
                entry.insert("error".into(), json!(error));
                // The INVITE's document is kept in gateway.metadataRaw.
                if i > 0 {
                    entry.insert("raw".into(), json!(raw));
                }
            }
            MetadataOutcome::Parsed(doc) => {
                entry.insert("metadata".into(), json!("parsed"));
                // Read with repairs: the update as received (the INVITE's is in
                // gateway.metadataRaw).
                if let Some(raw) = doc.raw.as_ref().filter(|_| i > 0) {
                    entry.insert("raw".into(), json!(raw));
                }
                entry.insert(
                    "dataMode".into(),
                    json!(if doc.data_mode == DataMode::Partial { "partial" } else { "complete" }),
                );
                h.docs.push(doc);
                let merged = h.merged.get_or_insert_with(|| {
                    if doc.data_mode == DataMode::Partial {
                        h.notes.push(format!(
                            "the first metadata ({} at {at} ms) is a partial update: read as the whole state",
                            change.via
                        ));
                    }
                    Metadata::default()
                });
                merged.merge(doc);
                let mut time = |ts: Option<jiff::Timestamp>| match (ts, start_ts) {
                    (Some(ts), Some(s)) if rules.metadata_times && i > 0 => {
                        let ms = i64::try_from(ts.duration_since(s).as_millis()).unwrap_or(i64::MAX);
                        // Both bounds fit i64: they are at most end_ms, a call's length.
                        let (lo, hi) = (prev_at as i64, at as i64);
                        if ms >= lo - TIME_TOLERANCE_MS && ms <= hi + TIME_TOLERANCE_MS {
                            ms.clamp(lo, hi) as u64
                        } else {
                            untrusted_time = true;
                            at
                        }
                    }
                    _ => at,
                };
                let events = apply(&mut h.tracks, merged, streams, i == 0, at, &mut time);
                if i > 0 || !events.is_empty() {
                    entry.insert("changes".into(), Value::Array(events));
                }
            }
        }
        h.log.push(Value::Object(entry));
        prev_at = at;
    }
    if untrusted_time {
        h.notes.push(format!(
            "a metadata time lies more than {TIME_TOLERANCE_MS} ms outside the time its update arrived (the SRC's clock?): changes take effect on arrival"
        ));
    }
    for t in &mut h.tracks {
        t.open.clear();
    }
    h.mixed = mixed_streams(&h.docs, streams);
    h.warnings = disagreements(&h.docs, streams);
    drop_placeholders(&mut h);
    pair_by_order(&mut h, streams);
    h
}

/// Whether a participant is the SRC standing in for a party it does not know yet: the Avaya
/// SBCE names itself (`sip:ASBCE@...`) as the callee until a later complete document gives
/// the real one.
fn is_placeholder(p: &MdParticipant) -> bool {
    p.aor.as_deref().and_then(super::identity::user_part).is_some_and(|u| u.eq_ignore_ascii_case("ASBCE"))
}

/// Removes placeholder participants. What a placeholder sent on a stream belongs to whoever
/// sends that stream next (the party it stood for): that party's span is extended back over
/// the placeholder's. A stream nobody takes over is left to the layout's rule for streams
/// nobody is known to send.
fn drop_placeholders(h: &mut History<'_>) {
    let Some(first) = h.tracks.iter().position(|t| is_placeholder(&t.p)) else { return };
    let placeholder = h.tracks.remove(first);
    for span in &placeholder.spans {
        let end = span.to_ms.unwrap_or(u64::MAX);
        let next = h
            .tracks
            .iter_mut()
            .flat_map(|t| t.spans.iter_mut())
            .filter(|s| s.stream == span.stream && s.from_ms >= end)
            .min_by_key(|s| s.from_ms);
        if let Some(next) = next {
            next.from_ms = span.from_ms;
        }
    }
    h.notes.push(format!(
        "participant {} is the SRC's placeholder (Avaya SBCE): left out, its streams are the next sender's",
        placeholder.p.id
    ));
    drop_placeholders(h);
}

/// Brings the tracks in line with the merged state `md` at `at` ms; returns the events.
fn apply(
    tracks: &mut Vec<Track>,
    md: &Metadata,
    streams: &[ChannelSummary],
    initial: bool,
    at: u64,
    time: &mut impl FnMut(Option<jiff::Timestamp>) -> u64,
) -> Vec<Value> {
    let mut events = Vec::new();
    let mut stopped: Vec<(usize, String)> = Vec::new();
    let mut started: Vec<(usize, String)> = Vec::new();
    let mut listed = BTreeSet::new();
    for p in &md.participants {
        listed.insert(p.id.as_str());
        let (idx, is_new) = match tracks.iter().position(|t| t.p.id == p.id) {
            Some(idx) => (idx, false),
            None => {
                let joined = if initial { 0 } else { time(p.associated) };
                if !initial {
                    events.push(json!({ "event": "joined", "participant": p.id }));
                }
                tracks.push(Track {
                    p: p.clone(),
                    joined_ms: joined,
                    left_ms: None,
                    spans: Vec::new(),
                    open: BTreeMap::new(),
                });
                (tracks.len() - 1, true)
            }
        };
        let t = &mut tracks[idx];
        t.p = p.clone();
        let active = p.disassociated.is_none() || p.associated.zip(p.disassociated).is_some_and(|(a, d)| a > d);
        if !active {
            if t.left_ms.is_none() {
                let left = if initial { 0 } else { time(p.disassociated) };
                for s in t.open.keys().copied().collect::<Vec<_>>() {
                    t.close(s, left);
                    // A transfer: whoever takes this stream over in the same document got it
                    // from the party that left.
                    stopped.push((s, p.id.clone()));
                }
                t.left_ms = Some(left);
                if !initial {
                    events.push(json!({ "event": "left", "participant": p.id }));
                }
            }
            continue;
        }
        if t.left_ms.take().is_some() && !initial {
            events.push(json!({ "event": "rejoined", "participant": p.id }));
        }
        let now: BTreeSet<usize> = sent_streams(md, p, streams);
        let before: BTreeSet<usize> = t.open.keys().copied().collect();
        // A participant that joined in this update sends from when it joined.
        let from = if is_new { t.joined_ms } else { at };
        for &s in before.difference(&now) {
            t.close(s, at);
            stopped.push((s, p.id.clone()));
        }
        for &s in now.difference(&before) {
            t.start(s, from);
            started.push((s, p.id.clone()));
        }
        if !initial && !before.is_empty() && now.is_empty() {
            events.push(json!({ "event": "hold", "participant": p.id }));
        } else if !initial && !is_new && before.is_empty() && !now.is_empty() {
            // Back from hold, or sending for the first time (a participant announced early).
            let event = if t.spans.len() > now.len() { "resumed" } else { "sending" };
            events.push(json!({ "event": event, "participant": p.id }));
        }
    }
    // RFC 7865 §8.2: a complete document replaces the state; whoever it leaves out is gone.
    for t in tracks.iter_mut().filter(|t| t.left_ms.is_none() && !listed.contains(t.p.id.as_str())) {
        for s in t.open.keys().copied().collect::<Vec<_>>() {
            t.close(s, at);
            stopped.push((s, t.p.id.clone()));
        }
        t.left_ms = Some(at);
        events.push(json!({ "event": "left", "participant": t.p.id, "why": "no longer listed" }));
    }
    if !initial {
        for (s, to) in &started {
            if let Some((_, from)) = stopped.iter().find(|(x, _)| x == s) {
                let label = streams.get(*s).and_then(|c| c.label.as_deref()).unwrap_or("");
                events.push(json!({ "event": "stream-moved", "label": label, "from": from, "to": to }));
            }
        }
    }
    events
}

/// The recorded streams (plan indexes) participant `p` sends in `md`, through the stream's
/// `<label>` and the m-line's `a=label`.
fn sent_streams(md: &Metadata, p: &MdParticipant, streams: &[ChannelSummary]) -> BTreeSet<usize> {
    p.sends
        .iter()
        .filter_map(|id| md.streams.iter().find(|s| &s.id == id))
        // A stream with a disassociate-time has ended (unless associated again since).
        .filter(|s| s.disassociated.is_none() || s.associated.zip(s.disassociated).is_some_and(|(a, d)| a > d))
        .filter_map(|s| s.label.as_deref())
        .filter_map(|label| streams.iter().position(|c| c.label.as_deref().map(str::trim) == Some(label.trim())))
        .collect()
}

fn mixed_streams(docs: &[&Metadata], streams: &[ChannelSummary]) -> BTreeSet<usize> {
    docs.iter()
        .flat_map(|md| &md.streams)
        .filter(|s| s.mode.as_deref().is_some_and(|m| m.trim().eq_ignore_ascii_case("mixed")))
        .filter_map(|s| s.label.as_deref())
        .filter_map(|l| streams.iter().position(|c| c.label.as_deref().map(str::trim) == Some(l.trim())))
        .collect()
}

/// Labels the metadata describes that no m-line carries, and m-lines the metadata does not
/// describe (only when the metadata describes streams at all: many SRCs send none).
fn disagreements(docs: &[&Metadata], streams: &[ChannelSummary]) -> Vec<String> {
    let described: BTreeSet<&str> =
        docs.iter().flat_map(|md| &md.streams).filter_map(|s| s.label.as_deref()).map(str::trim).collect();
    if described.is_empty() {
        return Vec::new();
    }
    let offered: BTreeSet<&str> = streams.iter().filter_map(|c| c.label.as_deref()).map(str::trim).collect();
    let mut w: Vec<String> =
        described.difference(&offered).map(|l| format!("metadata stream label {l} has no recorded m-line")).collect();
    for (i, c) in streams.iter().enumerate() {
        match c.label.as_deref().map(str::trim) {
            None => w.push(format!("recorded stream {i} has no a=label: the metadata cannot say whose it is")),
            Some(l) if !described.contains(l) => {
                w.push(format!("recorded stream {i} (a=label {l}) is not described by the metadata"))
            }
            Some(_) => {}
        }
    }
    w
}

/// When the metadata names participants but ties none of them to a recorded stream (no
/// `<stream>`, no association elements, or labels that match no m-line) and there are as many
/// participants as usable streams, pairs them in order: the SRC's first participant with the
/// first m-line. A guess, noted.
fn pair_by_order(h: &mut History<'_>, streams: &[ChannelSummary]) {
    if h.tracks.is_empty() || h.tracks.iter().any(|t| !t.spans.is_empty()) {
        return;
    }
    let usable: Vec<usize> = (0..streams.len()).filter(|&i| streams[i].usable()).collect();
    let present: Vec<usize> = (0..h.tracks.len()).filter(|&i| h.tracks[i].left_ms.is_none()).collect();
    if usable.len() != present.len() {
        return;
    }
    for (&t, &s) in present.iter().zip(&usable) {
        let track = &mut h.tracks[t];
        track.spans.push(Span { stream: s, from_ms: track.joined_ms, to_ms: None });
    }
    h.notes.push("the metadata ties no participant to a recorded stream: participants were paired with the streams in order (a guess)".into());
}
