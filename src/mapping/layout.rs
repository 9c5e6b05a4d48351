//! Which recorded streams make up each output channel, over which spans of the call.
//!
//! `agent-customer`: channel 0 carries the streams sent by agent-side participants, channel
//! 1 those of the customer side, each stream only while a participant of that side sends it
//! (a participant on hold, or gone, sends nothing; a side with no audio is silent). One
//! usable stream that is mixed (the metadata says `mixed`, several participants send it, or
//! nobody is known to) makes a mono file. `per-stream`: one channel per usable stream, whole
//! call. A stream offered inactive that never carried a packet is not usable and makes no
//! channel.

use std::collections::BTreeMap;

use super::parties::{Side, Sides};
use super::{ChannelSummary, Layout, LayoutKind, OutChannel, SourceSpan};

/// The layout and what each channel is.
#[derive(Debug)]
pub(crate) struct Built {
    pub layout: Layout,
    /// The side each channel stands for (`None`: a per-stream channel nobody is known to send).
    pub sides: Vec<Option<Side>>,
    pub notes: Vec<String>,
}

/// End of an open interval.
const OPEN: u64 = u64::MAX;

/// The party (index) that sent stream `s` longest.
pub(crate) fn stream_sender(sides: &Sides, s: usize, end_ms: u64) -> Option<usize> {
    (0..sides.parties.len())
        .map(|i| {
            (i, sides.parties[i].track.spans.iter().filter(|x| x.stream == s).map(|x| x.length(end_ms)).sum::<u64>())
        })
        .filter(|&(i, _)| sides.parties[i].track.spans.iter().any(|x| x.stream == s))
        .max_by_key(|&(i, len)| (len, std::cmp::Reverse(i)))
        .map(|(i, _)| i)
}

pub(crate) fn build(
    kind: LayoutKind,
    streams: &[ChannelSummary],
    sides: &Sides,
    mixed: &std::collections::BTreeSet<usize>,
    end_ms: u64,
) -> Built {
    let usable: Vec<usize> = (0..streams.len()).filter(|&i| streams[i].usable()).collect();
    let mut notes = Vec::new();
    if usable.len() < streams.len() {
        notes.push(format!(
            "{} stream(s) offered inactive never carried audio: no channel",
            streams.len() - usable.len()
        ));
    }
    let whole = |stream| SourceSpan { stream, from_ms: 0, to_ms: None };
    if kind == LayoutKind::PerStream {
        let mut taken = [false, false];
        let mut channel_sides = Vec::new();
        for &s in &usable {
            let side = stream_sender(sides, s, end_ms).map(|p| sides.parties[p].side);
            channel_sides.push(side);
            if let Some(side) = side {
                taken[side as usize] = true;
            }
        }
        let layout = Layout { channels: usable.iter().map(|&s| OutChannel { sources: vec![whole(s)] }).collect() };
        if layout.channels.is_empty() {
            notes.push("no usable stream: one silent channel".into());
            return Built { layout: Layout { channels: vec![OutChannel::default()] }, sides: vec![None], notes };
        }
        return Built { layout, sides: channel_sides, notes };
    }

    if let [only] = usable[..] {
        let senders = sides.parties.iter().filter(|p| p.track.spans.iter().any(|x| x.stream == only)).count();
        if mixed.contains(&only) || senders != 1 {
            let side = if sides.parties.iter().any(|p| p.side == Side::Agent) || sides.parties.is_empty() {
                Side::Agent
            } else {
                Side::Customer
            };
            notes.push("one mixed stream carries the whole call: a mono file with one contact".into());
            return Built {
                layout: Layout { channels: vec![OutChannel { sources: vec![whole(only)] }] },
                sides: vec![Some(side)],
                notes,
            };
        }
    }

    // Per side, per stream: the intervals a participant of that side sent it.
    let mut per_side: [BTreeMap<usize, Vec<(u64, u64)>>; 2] = [BTreeMap::new(), BTreeMap::new()];
    for p in &sides.parties {
        for span in p.track.spans.iter().filter(|x| usable.contains(&x.stream)) {
            let to = span.to_ms.unwrap_or(OPEN);
            if to > span.from_ms {
                per_side[p.side as usize].entry(span.stream).or_default().push((span.from_ms, to));
            }
        }
    }
    let attributed = |s: &usize| per_side.iter().any(|m| m.contains_key(s));
    let unattributed: Vec<usize> = usable.iter().copied().filter(|s| !attributed(s)).collect();
    for s in &unattributed {
        // The side with fewer streams takes it (the agent side on a tie): with no identities
        // at all, the first stream is the agent's and the second the customer's.
        let side = if per_side[Side::Customer as usize].len() < per_side[Side::Agent as usize].len() {
            Side::Customer
        } else {
            Side::Agent
        };
        per_side[side as usize].insert(*s, vec![(0, OPEN)]);
        notes.push(format!(
            "nobody is known to send recorded stream {s}: put on the {} channel (a guess)",
            side.as_str()
        ));
    }
    for m in &mut per_side {
        for iv in m.values_mut() {
            *iv = union(std::mem::take(iv));
        }
    }
    // A stream both sides send at the same moment is a mix: it stays on the agent channel so
    // the audio is not heard twice.
    let [agent, customer] = &mut per_side;
    for (s, iv) in customer.iter_mut() {
        if let Some(a) = agent.get(s) {
            let before = iv.clone();
            *iv = subtract(&before, a);
            if *iv != before {
                notes.push(format!(
                    "recorded stream {s} is sent by both sides at once (mixed): kept on the agent channel"
                ));
            }
        }
    }
    customer.retain(|_, iv| !iv.is_empty());
    let channel = |m: &BTreeMap<usize, Vec<(u64, u64)>>| OutChannel {
        sources: m
            .iter()
            .flat_map(|(&stream, iv)| {
                iv.iter().map(move |&(from, to)| SourceSpan {
                    stream,
                    from_ms: from,
                    to_ms: (to != OPEN).then_some(to),
                })
            })
            .collect(),
    };
    let layout = Layout { channels: vec![channel(&per_side[0]), channel(&per_side[1])] };
    Built { layout, sides: vec![Some(Side::Agent), Some(Side::Customer)], notes }
}

/// Sorted, merged intervals.
fn union(mut iv: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    iv.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(iv.len());
    for (from, to) in iv {
        match out.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => out.push((from, to)),
        }
    }
    out
}

/// `a` minus `b` (both sorted and merged).
fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(mut from, to) in a {
        for &(bf, bt) in b {
            if bt <= from || bf >= to {
                continue;
            }
            if bf > from {
                out.push((from, bf));
            }
            from = from.max(bt);
        }
        if from < to {
            out.push((from, to));
        }
    }
    out
}
