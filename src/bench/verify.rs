//! Checks the benchmark's output files: each call's `<name>.wav` and `<name>.json` exist, the
//! WAV is whole (RIFF and data sizes match the file), its length matches the call's start and
//! end, and every packet sent is found, sample for sample, at its place in its channel.
//!
//! A packet's place: the stream's first packet found in the channel fixes the offset (the
//! gateway anchors a stream on its first packet's arrival); packet `k` must then be at
//! `offset + 160·k`.

use std::path::Path;

use serde::Serialize;

use super::rtp::{PACKET_SAMPLES, expected_samples};
use super::sip::CallOutcome;
use crate::session::file_name;

/// How far a file's length may stray from what the SRC saw of the call (seconds): the gateway
/// stamps the call's end when its signalling task handles the BYE, which can be a few
/// milliseconds after the BYE arrived on a busy machine.
const SRC_TOLERANCE: f64 = 0.020;

/// Totals over the files checked.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Checks {
    pub files_ok: u64,
    pub files_missing: u64,
    pub files_truncated: u64,
    /// Files whose length differs from the call's start and end.
    pub bad_duration: u64,
    /// Packets the sender sent for the recorded calls.
    pub packets_sent: u64,
    /// Packets whose audio is at its place.
    pub packets_written: u64,
    /// Packets whose place is silence.
    pub packets_missing: u64,
    /// Packets whose place lies (partly) before the recording's start (the 200 OK), cut.
    pub packets_before_start: u64,
    /// Packets whose place holds other audio (misplaced or corrupted).
    pub packets_wrong: u64,
    /// The gateway's own counters (`metaData.gateway.streams`).
    pub gateway_packets: u64,
    pub gateway_lost: u64,
    pub gateway_late: u64,
    /// Largest distance (samples) of a packet from its nominal place (timeline slips).
    pub max_slip: u64,
}

/// Samples a packet is recognised by (its head: a backward slip may overwrite its tail).
const HEAD_SAMPLES: usize = 64;
/// How far from its nominal place a packet may be and still count as at its place: 20 ms, the
/// issue's bound on channels' drift against each other.
const SLIP_LIMIT: i64 = 160;

impl Checks {
    pub fn add(&mut self, o: &Checks) {
        self.files_ok += o.files_ok;
        self.files_missing += o.files_missing;
        self.files_truncated += o.files_truncated;
        self.bad_duration += o.bad_duration;
        self.packets_sent += o.packets_sent;
        self.packets_written += o.packets_written;
        self.packets_missing += o.packets_missing;
        self.packets_before_start += o.packets_before_start;
        self.packets_wrong += o.packets_wrong;
        self.gateway_packets += o.gateway_packets;
        self.gateway_lost += o.gateway_lost;
        self.gateway_late += o.gateway_late;
        self.max_slip = self.max_slip.max(o.max_slip);
    }

    /// Every file present and whole, every packet at its place, nothing lost or late.
    pub fn perfect(&self) -> bool {
        self.files_missing == 0
            && self.files_truncated == 0
            && self.bad_duration == 0
            && self.packets_written + self.packets_before_start == self.packets_sent
            && self.gateway_lost == 0
            && self.gateway_late == 0
    }
}

/// The samples of a whole, 16-bit PCM WAV, or None if it is not whole.
fn read_wav(bytes: &[u8]) -> Option<(u16, Vec<i16>)> {
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    if bytes.get(0..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" || u32_at(4)? as usize + 8 != bytes.len() {
        return None;
    }
    let mut at = 12;
    let mut channels = 0u16;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32_at(at + 4)? as usize;
        let body = at + 8;
        if id == b"fmt " {
            channels = u16::from_le_bytes(bytes.get(body + 2..body + 4)?.try_into().ok()?);
        } else if id == b"data" {
            if body + len != bytes.len() || channels == 0 {
                return None;
            }
            let samples = bytes[body..].chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
            return Some((channels, samples));
        }
        at = body + len + (len & 1);
    }
    None
}

/// Checks call `index`'s files in `dir`; `sent` is the packets sent on each of its two streams,
/// whose tags are `2·index` and `2·index + 1`. The text says what is wrong, if anything.
pub fn check_call(dir: &Path, index: usize, call: &CallOutcome, sent: [u32; 2]) -> (Checks, Option<String>) {
    let mut c = Checks { packets_sent: u64::from(sent[0]) + u64::from(sent[1]), ..Checks::default() };
    let name = file_name(&call.call_id);
    let (Ok(wav), Ok(json)) = (std::fs::read(dir.join(format!("{name}.wav"))), std::fs::read(dir.join(format!("{name}.json")))) else {
        c.files_missing = 1;
        c.packets_missing = c.packets_sent;
        return (c, Some(format!("{name}: .wav or .json missing")));
    };
    let Some((channels, samples)) = read_wav(&wav) else {
        c.files_truncated = 1;
        c.packets_missing = c.packets_sent;
        return (c, Some(format!("{name}.wav: not a whole WAV")));
    };
    let info: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
    for ch in 0..2 {
        let st = &info["metaData"]["gateway"]["streams"][ch];
        c.gateway_packets += st["packets"].as_u64().unwrap_or(0);
        c.gateway_lost += st["lost"].as_u64().unwrap_or(0);
        c.gateway_late += st["late"].as_u64().unwrap_or(0);
    }

    // Length: the info's end − start (ms), and within what the SRC saw of the call.
    let nch = usize::from(channels);
    let frames = samples.len() / nch;
    let secs = frames as f64 / 8000.0;
    let info_secs = (|| {
        let t = |k: &str| info[k].as_str()?.parse::<jiff::Timestamp>().ok();
        Some(t("endTime")?.duration_since(t("startTime")?).as_secs_f64())
    })();
    let seen = match (call.answered, call.bye_sent, call.invite_sent, call.bye_answered) {
        (Some(a), Some(b), Some(i), Some(ba)) => Some((b.saturating_duration_since(a).as_secs_f64(), ba.saturating_duration_since(i).as_secs_f64())),
        _ => None,
    };
    let duration_ok = info_secs.is_some_and(|d| (d - secs).abs() <= 0.002)
        && seen.is_none_or(|(lo, hi)| secs >= lo - SRC_TOLERANCE && secs <= hi + SRC_TOLERANCE);
    let mut problem = None;
    if !duration_ok || nch != 2 {
        c.bad_duration = 1;
        problem = Some(format!("{name}.wav: {nch} channels, {secs:.4} s; info says {info_secs:?} s, the SRC saw between {seen:?} s"));
    }
    c.files_ok = 1;

    for (ch, n) in sent.into_iter().enumerate().take(nch) {
        let tag = (2 * index + ch) as u32;
        let chan: Vec<i16> = samples.iter().skip(ch).step_by(nch).copied().collect();
        let Some(offset) = find_offset(&chan, tag, n) else {
            c.packets_missing += u64::from(n);
            continue;
        };
        let mut exp = [0i16; PACKET_SAMPLES];
        let before = c.packets_written;
        // The timeline may slip a stream by a few samples at packet boundaries (clock drift, or
        // an anchor packet that came late: media::timeline): each packet is looked for near
        // where the previous one was found, by its head (a backward slip overwrites a packet's
        // tail with the next one), within SLIP_LIMIT of its nominal place.
        let mut shift = 0i64;
        let mut first_bad = None;
        for k in 0..n {
            expected_samples(tag, k, &mut exp);
            let nominal = offset + k as i64 * PACKET_SAMPLES as i64;
            let head = &exp[..HEAD_SAMPLES];
            // Nearest to the previous packet's shift first.
            let found = std::iter::once(shift)
                .chain((1..=2 * SLIP_LIMIT).flat_map(|d| [shift - d, shift + d]))
                .filter(|sh| sh.abs() <= SLIP_LIMIT)
                .find(|&sh| usize::try_from(nominal + sh).ok().and_then(|a| chan.get(a..a + HEAD_SAMPLES)).is_some_and(|g| g == head));
            match found {
                Some(sh) => {
                    shift = sh;
                    c.max_slip = c.max_slip.max(sh.unsigned_abs());
                    c.packets_written += 1;
                }
                // Audio from before the 200 OK (the first packet is sent on it, and carries the 20 ms
                // before it) is not in the recording, which starts then.
                None if nominal + shift < 0 => c.packets_before_start += 1,
                None => {
                    if first_bad.is_none() {
                        let anywhere = chan.windows(HEAD_SAMPLES).position(|w| w == head);
                        first_bad = Some((k, nominal + shift, anywhere));
                    }
                    match usize::try_from(nominal + shift).ok().and_then(|a| chan.get(a..a + PACKET_SAMPLES)) {
                        Some(g) if g.iter().all(|s| *s == 0) => c.packets_missing += 1,
                        Some(_) => c.packets_wrong += 1,
                        None => c.packets_missing += 1,
                    }
                }
            }
        }
        if first_bad.is_some() && problem.is_none() {
            let first = first_bad.map_or_else(String::new, |(k, at, found)| format!(", packet {k} not at {at} (found at {found:?})"));
            problem = Some(format!("{name}.wav channel {ch}: {} of {n} packets at their place{first}", c.packets_written - before));
        }
    }
    (c, problem)
}

/// Where packet 0 of stream `tag` would be, from the first of its packets found in `chan`.
fn find_offset(chan: &[i16], tag: u32, sent: u32) -> Option<i64> {
    let mut exp = [0i16; PACKET_SAMPLES];
    for k in 0..sent.min(50) {
        expected_samples(tag, k, &mut exp);
        if let Some(at) = chan.windows(PACKET_SAMPLES).position(|w| w[0] == exp[0] && w == exp) {
            return Some(at as i64 - i64::from(k) * PACKET_SAMPLES as i64);
        }
    }
    None
}
