//! Placement of each stream's audio on the call's one timeline (sans-IO).
//!
//! The timeline starts when the 200 OK is sent (`t0`) and counts samples at the recording's
//! rate. A stream's first packet anchors its RTP timestamp to its arrival time (the packet's
//! audio ends when it arrives); later packets land at `anchor + (timestamp − anchor timestamp)`,
//! so network jitter does not move audio around. Each channel buffers a fixed ring of samples
//! ahead of the write frontier, which trails the wall clock by the reorder window: packets that
//! arrive out of order inside the window land at their place, later ones are counted and dropped.
//! Samples no packet covered stay zero, so a quiet, lost or not-yet-started stream is silence and
//! every channel keeps in step with the wall clock.
//!
//! Re-anchoring on arrival time (never a gap or overlap beyond one packet) happens on an SSRC
//! change, and when a packet's place strays more than [`RESYNC`] from its arrival (a timestamp
//! jump, an SBC failover) or falls behind the frontier although it is the newest packet (the
//! sender's clock drifted slow). Finer drift correction is the media issue's.
//!
//! Per packet nothing is allocated: rings and the output buffer are sized once per call.

use std::time::{Duration, Instant};

/// A packet whose place differs from its arrival by more than this re-anchors the stream.
pub const RESYNC: Duration = Duration::from_millis(500);
/// Samples buffered per channel ahead of the frontier.
pub const RING: Duration = Duration::from_secs(2);
/// Samples (all channels) handed out per call of the output closure.
const CHUNK_SAMPLES: usize = 2048;

/// Counters of one stream, reported in `info.metaData`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Packets placed (fully or in part).
    pub packets: u64,
    /// Packets that arrived after their place had been written, dropped.
    pub late: u64,
    /// Times the stream was re-anchored on arrival time.
    pub reanchors: u64,
    /// Sequence numbers skipped (lost or never sent), counted from the highest seen.
    pub lost: u64,
    /// Arrival of the first and of the last packet.
    pub first_at: Option<Instant>,
    pub last_at: Option<Instant>,
    /// Packets from another source than the latched one, ignored (`media::latch`; counted by
    /// the media thread, not by the timeline).
    pub foreign: u64,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    ssrc: u32,
    /// Extended timestamp and timeline position of the anchor packet.
    ts: i64,
    pos: i64,
    /// Unwrapping state: the last timestamp and its extension.
    last_ts: u32,
    last_ext_ts: i64,
    /// Highest extended sequence number seen.
    last_seq: u16,
    max_ext_seq: i64,
    cur_ext_seq: i64,
}

#[derive(Debug)]
struct Channel {
    ring: Box<[i16]>,
    /// RTP clock rate of the stream's current codec.
    clock_rate: u32,
    anchor: Option<Anchor>,
    stats: StreamStats,
}

/// One call's timeline. See the module documentation.
#[derive(Debug)]
pub struct Timeline {
    t0: Instant,
    rate: u32,
    window: i64,
    ring_len: i64,
    resync: i64,
    /// Next frame to be handed out.
    frontier: i64,
    channels: Vec<Channel>,
}

/// RTP header fields the timeline needs.
#[derive(Debug, Clone, Copy)]
pub struct RtpMeta {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
}

impl Timeline {
    /// A timeline starting at `t0` with `channels` channels at `rate` Hz, writing `window` behind
    /// the wall clock.
    pub fn new(t0: Instant, rate: u32, channels: usize, window: Duration) -> Self {
        let ring_len = samples(RING, rate).max(samples(window + RESYNC, rate) * 2);
        let channels = (0..channels)
            .map(|_| Channel {
                ring: vec![0; ring_len as usize].into_boxed_slice(),
                clock_rate: rate,
                anchor: None,
                stats: StreamStats::default(),
            })
            .collect::<Vec<_>>();
        Timeline {
            t0,
            rate,
            window: samples(window, rate),
            ring_len,
            resync: samples(RESYNC, rate),
            frontier: 0,
            channels,
        }
    }

    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    pub fn stats(&self, channel: usize) -> Option<StreamStats> {
        self.channels.get(channel).map(|c| c.stats)
    }

    /// Frames handed out so far.
    pub fn frames_written(&self) -> u64 {
        self.frontier as u64
    }

    /// Sets the RTP clock rate of a channel's codec (8000 for G.711).
    pub fn set_clock_rate(&mut self, channel: usize, clock_rate: u32) {
        if let Some(c) = self.channels.get_mut(channel)
            && c.clock_rate != clock_rate {
                c.clock_rate = clock_rate;
                c.anchor = None; // positions from the old clock no longer apply
            }
    }

    /// Frames from the start of the timeline to `t`.
    pub fn frames_at(&self, t: Instant) -> u64 {
        self.position_of(t) as u64
    }

    fn position_of(&self, t: Instant) -> i64 {
        samples(t.saturating_duration_since(self.t0), self.rate)
    }

    /// Places one packet's decoded samples (at the recording's rate) on `channel`.
    pub fn place(&mut self, channel: usize, now: Instant, rtp: RtpMeta, pcm: &[i16]) {
        let arrival = self.position_of(now);
        let (frontier, ring_len, resync, rate) = (self.frontier, self.ring_len, self.resync, self.rate);
        let Some(ch) = self.channels.get_mut(channel) else { return };
        let n = pcm.len() as i64;
        if n == 0 || n > ring_len / 2 {
            return;
        }
        ch.stats.first_at.get_or_insert(now);
        ch.stats.last_at = Some(now);

        // Where the packet belongs according to its timestamp, if the stream is anchored.
        let mut placed = None;
        if let Some(a) = ch.anchor.as_mut().filter(|a| a.ssrc == rtp.ssrc) {
            // RFC 3550 §A.1-style unwrapping of the 16-bit sequence and 32-bit timestamp.
            let seq_delta = i64::from(rtp.seq.wrapping_sub(a.last_seq) as i16);
            let ext_seq = a.cur_ext_seq + seq_delta;
            let ts_delta = i64::from(rtp.timestamp.wrapping_sub(a.last_ts) as i32);
            let ext_ts = a.last_ext_ts + ts_delta;
            let pos = a.pos + (ext_ts - a.ts) * i64::from(rate) / i64::from(ch.clock_rate);
            let newest = ext_seq > a.max_ext_seq;
            let strayed = (pos - (arrival - n)).abs() > resync;
            let behind = pos < frontier;
            if !(strayed || (behind && newest)) {
                if newest {
                    ch.stats.lost += (ext_seq - a.max_ext_seq - 1).max(0) as u64;
                    a.max_ext_seq = ext_seq;
                }
                a.last_seq = rtp.seq;
                a.cur_ext_seq = ext_seq;
                a.last_ts = rtp.timestamp;
                a.last_ext_ts = ext_ts;
                placed = Some(pos);
            } else if !newest {
                // An old packet that strayed or is late: drop it, keep the anchor.
                ch.stats.late += 1;
                return;
            }
        }
        let pos = match placed {
            Some(p) => p,
            None => {
                // (Re-)anchor: the packet's audio ends at its arrival.
                if ch.anchor.is_some() {
                    ch.stats.reanchors += 1;
                }
                let pos = (arrival - n).max(frontier);
                ch.anchor = Some(Anchor {
                    ssrc: rtp.ssrc,
                    ts: i64::from(rtp.timestamp),
                    pos,
                    last_ts: rtp.timestamp,
                    last_ext_ts: i64::from(rtp.timestamp),
                    last_seq: rtp.seq,
                    max_ext_seq: i64::from(rtp.seq),
                    cur_ext_seq: i64::from(rtp.seq),
                });
                pos
            }
        };
        // Only what lies between the frontier and the end of the ring can be stored.
        let start = pos.max(frontier);
        let end = (pos + n).min(frontier + ring_len);
        if start >= end {
            ch.stats.late += 1;
            return;
        }
        if start > pos {
            ch.stats.late += 1; // partly late: its head was already written
        }
        ch.stats.packets += 1;
        let src = &pcm[(start - pos) as usize..(end - pos) as usize];
        let at = start.rem_euclid(ring_len) as usize;
        let first = src.len().min(ch.ring.len() - at);
        ch.ring[at..at + first].copy_from_slice(&src[..first]);
        ch.ring[..src.len() - first].copy_from_slice(&src[first..]);
    }

    /// Hands out every frame that is now older than the reorder window, as interleaved chunks.
    pub fn advance<E>(&mut self, now: Instant, sink: impl FnMut(&[i16]) -> Result<(), E>) -> Result<(), E> {
        let target = self.position_of(now) - self.window;
        self.emit_until(target, sink)
    }

    /// Hands out everything up to `end` (the call's end), silence included, so the recording is
    /// exactly `end − t0` long. Audio placed beyond `end` is discarded.
    pub fn finish<E>(&mut self, end: Instant, sink: impl FnMut(&[i16]) -> Result<(), E>) -> Result<(), E> {
        let target = self.position_of(end);
        self.emit_until(target, sink)
    }

    fn emit_until<E>(&mut self, target: i64, mut sink: impl FnMut(&[i16]) -> Result<(), E>) -> Result<(), E> {
        let nch = self.channels.len();
        if nch == 0 {
            self.frontier = self.frontier.max(target);
            return Ok(());
        }
        // On the stack, so it is in cache on every call's turn (a buffer per call would not be).
        let mut buf = [0i16; CHUNK_SAMPLES];
        let chunk_frames = (CHUNK_SAMPLES / nch).max(1);
        while self.frontier < target {
            let frames = ((target - self.frontier) as usize).min(chunk_frames);
            // The frames lie in at most two runs of the ring: copy them slice-wise (this runs
            // for every sample of every call) and clear them for the next turn of the ring.
            let at = self.frontier.rem_euclid(self.ring_len) as usize;
            let first = at..(at + frames).min(self.ring_len as usize);
            let second = 0..frames - first.len();
            let Some(out) = buf.get_mut(..frames * nch) else { return Ok(()) }; // > 2048 channels
            let (head, tail) = out.split_at_mut(first.len() * nch);
            for (out, run) in [(head, first), (tail, second)] {
                if let [a, b] = &mut self.channels[..] {
                    // Two channels, the usual call: one pass that interleaves both.
                    for ((frame, x), y) in out.chunks_exact_mut(2).zip(&a.ring[run.clone()]).zip(&b.ring[run.clone()]) {
                        frame[0] = *x;
                        frame[1] = *y;
                    }
                } else {
                    for (c, ch) in self.channels.iter().enumerate() {
                        for (frame, s) in out.chunks_exact_mut(nch).zip(&ch.ring[run.clone()]) {
                            frame[c] = *s;
                        }
                    }
                }
                for ch in &mut self.channels {
                    ch.ring[run.clone()].fill(0);
                }
            }
            self.frontier += frames as i64;
            sink(&buf[..frames * nch])?;
        }
        Ok(())
    }
}

/// Whole samples in `d` at `rate` (floor).
pub fn samples(d: Duration, rate: u32) -> i64 {
    (d.as_nanos() * u128::from(rate) / 1_000_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A packet of 160 samples all equal to `v`.
    fn pkt(v: i16) -> [i16; 160] {
        [v; 160]
    }

    fn meta(seq: u16, ts: u32) -> RtpMeta {
        RtpMeta { ssrc: 1, seq, timestamp: ts, marker: false }
    }

    fn collect(tl: &mut Timeline, end: Instant) -> Vec<i16> {
        let mut out = Vec::new();
        tl.finish(end, |s| {
            out.extend_from_slice(s);
            Ok::<(), ()>(())
        })
        .unwrap();
        out
    }

    #[test]
    fn two_streams_aligned_with_silence_before_late_start() {
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 2, 60 * MS);
        // Stream 0 from the start, stream 1 starts 1 s later.
        for i in 0..100u16 {
            let at = t0 + (u32::from(i) + 1) * 20 * MS;
            tl.place(0, at, meta(i, 1000 + u32::from(i) * 160), &pkt(100));
            if i >= 50 {
                tl.place(1, at, meta(i, 5000 + u32::from(i) * 160), &pkt(200));
            }
        }
        let out = collect(&mut tl, t0 + 2000 * MS);
        assert_eq!(out.len(), 2 * 16000);
        let ch0: Vec<i16> = out.iter().step_by(2).copied().collect();
        let ch1: Vec<i16> = out.iter().skip(1).step_by(2).copied().collect();
        assert!(ch0.iter().all(|s| *s == 100));
        assert!(ch1[..8000].iter().all(|s| *s == 0), "silence before stream 1 starts");
        assert!(ch1[8000..].iter().all(|s| *s == 200));
    }

    #[test]
    fn reordered_packets_inside_window_land_in_place() {
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        tl.place(0, t0 + 20 * MS, meta(0, 0), &pkt(1));
        // seq 2 arrives before seq 1
        tl.place(0, t0 + 40 * MS, meta(2, 320), &pkt(3));
        tl.place(0, t0 + 45 * MS, meta(1, 160), &pkt(2));
        let out = collect(&mut tl, t0 + 60 * MS);
        assert_eq!(&out[..160], &pkt(1));
        assert_eq!(&out[160..320], &pkt(2));
        assert_eq!(&out[320..480], &pkt(3));
        assert_eq!(tl.stats(0).unwrap().late, 0);
    }

    #[test]
    fn late_packet_dropped_and_gap_is_silence() {
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        tl.place(0, t0 + 20 * MS, meta(0, 0), &pkt(1));
        tl.place(0, t0 + 60 * MS, meta(2, 320), &pkt(3));
        let mut written = Vec::new();
        tl.advance(t0 + 200 * MS, |s| {
            written.extend_from_slice(s);
            Ok::<(), ()>(())
        })
        .unwrap();
        // seq 1 arrives long after its place was written.
        tl.place(0, t0 + 200 * MS, meta(1, 160), &pkt(2));
        written.extend(collect(&mut tl, t0 + 200 * MS));
        assert_eq!(&written[160..320], &[0; 160], "lost packet is silence");
        assert_eq!(tl.stats(0).unwrap().late, 1);
        assert_eq!(tl.stats(0).unwrap().lost, 1);
        assert_eq!(written.len(), 1600);
    }

    #[test]
    fn rtp_seq_and_timestamp_wrap() {
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        let mut seq: u16 = 65530;
        let mut ts: u32 = u32::MAX - 3 * 160 + 1;
        for i in 0..20u32 {
            tl.place(0, t0 + (i + 1) * 20 * MS, meta(seq, ts), &pkt(5));
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
        }
        let out = collect(&mut tl, t0 + 400 * MS);
        assert!(out.iter().all(|s| *s == 5));
        let st = tl.stats(0).unwrap();
        assert_eq!((st.packets, st.late, st.lost, st.reanchors), (20, 0, 0, 0));
    }

    #[test]
    fn ssrc_change_reanchors_without_gap() {
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        for i in 0..10u32 {
            tl.place(0, t0 + (i + 1) * 20 * MS, meta(i as u16, i * 160), &pkt(1));
        }
        for i in 10..20u32 {
            let m = RtpMeta { ssrc: 2, seq: 40_000 + i as u16, timestamp: 9_999_999 + i * 160, marker: i == 10 };
            tl.place(0, t0 + (i + 1) * 20 * MS, m, &pkt(2));
        }
        let out = collect(&mut tl, t0 + 400 * MS);
        assert!(out[..1600].iter().all(|s| *s == 1));
        assert!(out[1600..].iter().all(|s| *s == 2));
        assert_eq!(tl.stats(0).unwrap().reanchors, 1);
    }

    #[test]
    fn timestamp_jump_reanchors_on_arrival() {
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        tl.place(0, t0 + 20 * MS, meta(0, 0), &pkt(1));
        tl.place(0, t0 + 40 * MS, meta(1, 8_000_000), &pkt(2));
        tl.place(0, t0 + 60 * MS, meta(2, 8_000_160), &pkt(3));
        let out = collect(&mut tl, t0 + 60 * MS);
        assert_eq!(out.len(), 480);
        assert_eq!(&out[160..320], &pkt(2));
        assert_eq!(&out[320..], &pkt(3));
    }

    #[test]
    fn pause_keeps_channels_in_step() {
        // Stream sends 1 s, pauses 1 s (no packets), resumes with timestamps that continue as if
        // time had passed (silence suppression): the resumed audio lands 2 s in.
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        let mut out = Vec::new();
        for i in (0..50u32).chain(100..150) {
            let at = t0 + (i + 1) * 20 * MS;
            tl.place(0, at, meta(i as u16, i * 160), &pkt(9));
            tl.advance(at, |s| {
                out.extend_from_slice(s);
                Ok::<(), ()>(())
            })
            .unwrap();
        }
        out.extend(collect(&mut tl, t0 + 3000 * MS));
        assert_eq!(out.len(), 24000);
        assert!(out[..8000].iter().all(|s| *s == 9));
        assert!(out[8000..16000].iter().all(|s| *s == 0));
        assert!(out[16000..24000].iter().all(|s| *s == 9));
    }

    #[test]
    fn drifting_slow_sender_is_reanchored_not_dropped() {
        // Sender clock 1 % slow: timestamps advance 158.4 per 20 ms of real time.
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        for i in 0..500u32 {
            let ts = (f64::from(i) * 158.4) as u32;
            tl.place(0, t0 + (i + 1) * 20 * MS, meta(i as u16, ts), &pkt(4));
            tl.advance(t0 + (i + 1) * 20 * MS, |_| Ok::<(), ()>(())).unwrap();
        }
        let st = tl.stats(0).unwrap();
        assert_eq!(st.late, 0);
        assert!(st.reanchors >= 1);
    }
}
