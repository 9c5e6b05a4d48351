//! Placement of each stream's audio on the call's one timeline (sans-IO).
//!
//! The timeline starts when the 200 OK is sent (`t0`) and counts samples at the recording's
//! rate. A stream's first packet anchors its RTP timestamp to its arrival time (the packet's
//! audio ends when it arrives); later packets land at `anchor + (timestamp − anchor timestamp)`
//! converted from the codec's RTP clock to the recording's rate, so network jitter does not move
//! audio around. The channels share a fixed ring of frames ahead of the write frontier, which
//! trails the wall clock by the reorder window: packets that arrive out of order inside the
//! window land at their place, later ones are counted (`late`) and dropped; a packet received
//! twice is counted (`duplicates`) and dropped. Samples no packet covered stay zero: a lost
//! packet is written as **silence (no packet-loss concealment)**, and a quiet or not-yet-started
//! stream is silence too, so every channel keeps its length and stays in step with the others.
//!
//! **Drift.** An SRC's RTP clock is never exactly ours (±0.1 % is common, 0.5 % is seen: 18 s
//! an hour). Each stream tracks the lag between a packet's arrival and the end of its place: a
//! leaky minimum over its newest packets, which follows any fall at once and rises by at most
//! 1/64 of the arrival time elapsed, faster than a slow clock, while jitter, which only adds
//! delay, hardly raises it. When that minimum strays more than [`DRIFT_DEADBAND`] from zero,
//! the anchor is slipped at the next packet boundary by one sample in 160 (1/8000 s per 20 ms
//! packet, at any rate): forward for a slow sender (the samples inserted repeat the packet's
//! first, so no click), backward for a fast one (the packet overwrites the previous one's last
//! samples). That follows a skew of up to 0.6 % (1/160); each step is a phase jump of 125 µs,
//! inaudible in speech and small enough to leave a steady tone a tone, and a steady drift
//! becomes a trickle of them. A backward
//! slip is taken whole where silence precedes the packet (a pause in the talk or a lost packet:
//! nothing audible is dropped), and during [`SETTLE`] after an anchor (the anchor packet may
//! itself have been delayed): then what was placed since the anchor moves back with it, so the
//! packets read in one burst with a late anchor keep their audio. During the call's first
//! [`SETTLE`] nothing becomes final: a new call's first packets, which may wait in their socket
//! while the call is set up, land at their places however late they are read. Forward slips are always stepped: a late packet may be jitter. A
//! slow sender silent for long (DTX) may come back up to 0.5 % of the pause late, which the steps
//! then absorb; past the reorder window the late run below re-anchors it. No floating point per
//! packet; an integer division only while correcting, and for an RTP clock that does not divide
//! the recording's rate (Opus recorded at 16 kHz).
//!
//! **Stalls do not move audio.** A stall (of our machine or of the network) delivers a run of
//! packets late and then in a burst: their lags are large, so the minimum ignores them, and the
//! ones whose place was already written are dropped as late. Only packets that are late for
//! [`LATE_STREAK`] of arrival time in a row (the path's delay grew for good, or the timestamps
//! went back) re-anchor the stream.
//!
//! **Re-anchoring** on arrival time (never a gap or overlap beyond one packet) happens on an SSRC
//! change, a restart of the sequence numbers (RFC 3550 §A.1), a packet landing more than the
//! reorder window (at least 40 ms; with the marker bit, RFC 3550 §5.1: [`MARKER_JUMP`]) ahead
//! of the stream's earliest arrivals, the late run above, a codec clock change
//! ([`Timeline::set_clock_rate`]) and a resume from hold ([`Timeline::set_held`]).
//!
//! **Memory.** The call's channels share one ring of interleaved frames, the layout of the
//! recording itself: a packet's samples are written into their channel's slots, and what is
//! final is handed out as slices of the ring, at least [`FLUSH_BYTES`] at a time, so the writer
//! passes them to the file as they are (one `write` per second of a call, no copy in between) and
//! each sample crosses memory three times (placed, written out, cleared) whatever the channel
//! count. The frontier (before which packets are late) still moves on every
//! [`Timeline::advance`]; only the handing out waits for a full chunk.
//!
//! Channels can be added mid-call ([`Timeline::add_channel`]); from then on the frames handed
//! out are one sample wider. Per packet nothing is allocated: the ring is sized once per call
//! (and once per added channel), and placing a packet costs a few integer operations besides
//! copying its samples. Not done here: packet-loss concealment, decoding,
//! resampling (the caller passes samples at the recording's rate), RTCP.

use std::time::{Duration, Instant};

/// Audio buffered ahead of the frontier (at least; see [`Timeline::new`]).
pub const RING: Duration = Duration::from_secs(2);
/// Final audio is handed out once this many bytes of it (16-bit samples, all channels) have
/// gathered, and at the end: large writes, few system calls, no copy into a write buffer. The
/// kernel's cost per byte written falls with the write's size (ext4 on Linux 6.18: 0.75 ms per
/// MB in 16 KB writes, 0.5 in 32 KB, 0.38 in 64 KB); 32 KiB is one second of a two-channel
/// 8 kHz call (two seconds of a mono one, half a second at 16 kHz), as much as a crash could
/// cost on top of the reorder window. The ring holds it on top of [`RING`].
pub const FLUSH_BYTES: usize = 32 * 1024;
/// Newest packets late for this long of arrival time in a row re-anchor the stream. A stall's
/// burst arrives within a few wake-ups, far inside it.
pub const LATE_STREAK: Duration = Duration::from_millis(250);
/// A marker-bit packet landing more than this ahead of the stream's earliest arrivals re-anchors
/// (without the marker bit, the reorder window is the limit).
pub const MARKER_JUMP: Duration = Duration::from_millis(20);
/// Deviation of a stream's earliest arrivals from their places left uncorrected: one media
/// wake-up (`runtime::rx::CADENCE`), so that the quantization of arrival times alone never
/// slips a stream whose clock is ours (each slip is an audible phase jump in a steady tone).
pub const DRIFT_DEADBAND: Duration = Duration::from_millis(5);
/// For this long after (re-)anchoring, an arrival earlier than its place moves the anchor at once.
pub const SETTLE: Duration = Duration::from_secs(1);
/// Without the marker bit, a packet landing more than the reorder window, and at least this,
/// ahead of the stream's earliest arrivals re-anchors.
const MIN_JUMP: Duration = Duration::from_millis(40);
/// After an SSRC change, stragglers of the previous source are dropped for this long.
const SWITCH_GRACE: Duration = Duration::from_millis(200);
/// The lag minimum rises by at most 1/2^LEAK_SHIFT of the arrival time elapsed (1.6 %: a clock
/// up to 1 % slow is followed; a stall raises it by 1.6 % of the stall, 1.6 ms for 100 ms,
/// inside the deadband).
const LEAK_SHIFT: u32 = 6;
/// RFC 3550 §A.1: larger sequence jumps are a restart, believed when the next packet follows.
const MAX_DROPOUT: i64 = 3000;
const MAX_MISORDER: i64 = 100;

/// Counters of one stream, reported in `info.metaData`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Packets placed (fully or in part).
    pub packets: u64,
    /// Packets dropped because their place had been written (or its head cut: also counted in
    /// `packets`), or because they fit neither the sequence numbers (RFC 3550 §A.1) nor the
    /// timestamps of the stream, or came from the source it just switched away from.
    pub late: u64,
    /// Packets received a second time, dropped.
    pub duplicates: u64,
    /// Times the stream was re-anchored on arrival time.
    pub reanchors: u64,
    /// Sequence numbers that never arrived (RFC 3550 §6.4.1: late and reordered packets arrived).
    pub lost: u64,
    /// Samples inserted and dropped to follow the sender's clock drift.
    pub drift_inserted: u64,
    pub drift_dropped: u64,
    /// Arrival of the first and of the last packet.
    pub first_at: Option<Instant>,
    pub last_at: Option<Instant>,
    /// Packets from another source than the latched one, ignored (`media::latch`; counted by
    /// the media thread, not by the timeline).
    pub foreign: u64,
}

/// RTP header fields the timeline needs.
#[derive(Debug, Clone, Copy)]
pub struct RtpMeta {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
}

/// Sequence-number state of the current source (RFC 3550 §A.1).
#[derive(Debug, Clone, Copy)]
struct Seq {
    ssrc: u32,
    /// Extended sequence number of the first packet and of the highest seen.
    first: i64,
    max: i64,
    /// Bit i: `max − i` was received.
    seen: u128,
    /// The sequence number that confirms a far jump as a restart.
    probation: Option<u16>,
}

impl Seq {
    fn new(rtp: RtpMeta) -> Self {
        let ext = i64::from(rtp.seq);
        Seq { ssrc: rtp.ssrc, first: ext, max: ext, seen: 1, probation: None }
    }
}

/// Where a packet stands in its stream's sequence.
enum Order {
    Newest,
    Older,
    Dropped,
}

/// Mapping of one source's timestamps to the timeline, with the drift tracker.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// Extended timestamp of the anchor and its position (moved by drift corrections).
    ts: i64,
    pos: i64,
    /// The newest packet's timestamp and its extension: the reference for unwrapping.
    top_ts: u32,
    top_ext: i64,
    /// Leaky minimum of the newest packets' lag (arrival − end of their place), in samples.
    base: i64,
    /// End of the newest packet's place.
    top_end: i64,
    /// Arrival of the anchor packet, of the newest packet, and of the first of the current
    /// run of late newest packets.
    since: i64,
    last: i64,
    late_since: Option<i64>,
}

impl Anchor {
    fn new(ts: u32, pos: i64, n: i64, arrival: i64) -> Self {
        let ext = i64::from(ts);
        let (since, last, late_since) = (arrival, arrival, None);
        Anchor { ts: ext, pos, top_ts: ts, top_ext: ext, base: 0, top_end: pos + n, since, last, late_since }
    }
}

#[derive(Debug)]
struct Channel {
    /// Recording samples per RTP tick, as the reduced fraction `num / den`.
    num: i64,
    den: i64,
    seq: Option<Seq>,
    anchor: Option<Anchor>,
    /// The source switched away from, and the position until which its packets are dropped.
    prev_ssrc: Option<(u32, i64)>,
    /// The next newest packet re-anchors.
    resync: bool,
    held: bool,
    stats: StreamStats,
}

impl Channel {
    fn new() -> Self {
        Channel {
            num: 1,
            den: 1,
            seq: None,
            anchor: None,
            prev_ssrc: None,
            resync: false,
            held: false,
            stats: StreamStats::default(),
        }
    }

    /// Sorts the packet by sequence number: counts loss and duplicates, follows SSRC changes
    /// and sequence restarts (which re-anchor).
    fn order(&mut self, rtp: RtpMeta, arrival: i64, grace: i64) -> Order {
        let stats = &mut self.stats;
        let s = match self.seq.as_mut() {
            Some(s) if s.ssrc == rtp.ssrc => s,
            current => {
                if let Some((old, until)) = self.prev_ssrc
                    && old == rtp.ssrc
                    && arrival < until
                {
                    stats.late += 1; // a straggler of the source we switched away from
                    return Order::Dropped;
                }
                self.prev_ssrc = current.map(|s| (s.ssrc, arrival + grace));
                self.seq = Some(Seq::new(rtp));
                self.resync = true;
                return Order::Newest;
            }
        };
        let ext = s.max + i64::from(rtp.seq.wrapping_sub(s.max as u16) as i16);
        let ahead = ext - s.max;
        if (1..=MAX_DROPOUT).contains(&ahead) {
            stats.lost += (ahead - 1) as u64;
            s.seen = s.seen.checked_shl(ahead as u32).unwrap_or(0) | 1;
            s.max = ext;
            s.probation = None;
            Order::Newest
        } else if (0..=MAX_MISORDER).contains(&-ahead) {
            let bit = 1u128 << -ahead; // MAX_MISORDER < 128
            if s.seen & bit != 0 {
                stats.duplicates += 1;
                return Order::Dropped;
            }
            s.seen |= bit;
            if ext > s.first {
                stats.lost = stats.lost.saturating_sub(1); // counted when it was skipped
            }
            Order::Older
        } else if s.probation == Some(rtp.seq) {
            *s = Seq::new(rtp); // the source restarted its numbering
            self.resync = true;
            Order::Newest
        } else {
            s.probation = Some(rtp.seq.wrapping_add(1));
            stats.late += 1;
            Order::Dropped
        }
    }
}

/// The timeline's durations in samples at its rate, computed once.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Frames in the ring.
    ring_len: i64,
    /// Final frames gathered before they are handed out.
    flush: i64,
    window: i64,
    late_streak: i64,
    jump: i64,
    marker_jump: i64,
    deadband: i64,
    settle: i64,
    grace: i64,
}

/// One call's timeline. See the module documentation.
#[derive(Debug)]
pub struct Timeline {
    t0: Instant,
    rate: u32,
    limits: Limits,
    /// Frames before it are final: a packet for them is late.
    frontier: i64,
    /// Frames handed out (at most `frontier`); the ring holds `emitted .. emitted + ring_len`.
    emitted: i64,
    /// `ring_len` frames of `channels.len()` interleaved samples.
    ring: Box<[i16]>,
    channels: Vec<Channel>,
}

impl Timeline {
    /// A timeline starting at `t0` with `channels` channels at `rate` Hz, writing `window` behind
    /// the wall clock.
    pub fn new(t0: Instant, rate: u32, channels: usize, window: Duration) -> Self {
        let rate = rate.max(1);
        let s = |d: Duration| samples(d, rate);
        let flush = (FLUSH_BYTES / (2 * channels.max(1))) as i64;
        let limits = Limits {
            ring_len: s(RING).max(s(window) * 2 + s(Duration::from_secs(1))).max(2) + flush,
            flush,
            window: s(window),
            late_streak: s(LATE_STREAK),
            jump: s(window.max(MIN_JUMP)),
            marker_jump: s(MARKER_JUMP),
            deadband: s(DRIFT_DEADBAND),
            settle: s(SETTLE),
            grace: s(SWITCH_GRACE),
        };
        let ring = vec![0; limits.ring_len as usize * channels].into_boxed_slice();
        let channels = (0..channels).map(|_| Channel::new()).collect();
        Timeline { t0, rate, limits, frontier: 0, emitted: 0, ring, channels }
    }

    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// Adds a silent channel (a stream added mid-call) and returns its index. Allocates a wider
    /// ring and moves the buffered frames into it. Every frame handed out from now on carries one more sample: the output must be
    /// able to take it (a WAV cannot change its channel count; size the timeline for every
    /// stream the call may carry instead).
    pub fn add_channel(&mut self) -> usize {
        let nch = self.channels.len();
        let mut ring = vec![0; self.limits.ring_len as usize * (nch + 1)].into_boxed_slice();
        if nch > 0 {
            for (to, from) in ring.chunks_exact_mut(nch + 1).zip(self.ring.chunks_exact(nch)) {
                to[..nch].copy_from_slice(from);
            }
        }
        self.ring = ring;
        self.channels.push(Channel::new());
        nch
    }

    pub fn stats(&self, channel: usize) -> Option<StreamStats> {
        self.channels.get(channel).map(|c| c.stats)
    }

    /// Frames handed out so far.
    pub fn frames_written(&self) -> u64 {
        self.emitted as u64
    }

    /// Sets the RTP clock rate of a channel's codec (8000 for G.711 and G.722, 48000 for Opus);
    /// the samples placed are at the recording's rate whatever the clock. A change re-anchors
    /// the stream at its next packet. A rate of 0 is ignored.
    pub fn set_clock_rate(&mut self, channel: usize, clock_rate: u32) {
        let Some(c) = self.channels.get_mut(channel) else { return };
        if clock_rate == 0 {
            return;
        }
        let g = gcd(self.rate, clock_rate);
        let (num, den) = (i64::from(self.rate / g), i64::from(clock_rate / g));
        if (num, den) != (c.num, c.den) {
            (c.num, c.den) = (num, den);
            c.resync = c.anchor.is_some(); // positions from the old clock no longer apply
        }
    }

    /// Marks a channel's stream as on hold (nothing is expected) or resumed. Packets that come
    /// while held are placed as usual; the first packet after a resume re-anchors on its
    /// arrival, as SRCs often restart their timestamps then. Their sequence numbers may
    /// restart too: the first packet after a resume starts the numbering afresh rather than
    /// being held back as a possible stray (RFC 3550 §A.1's probation).
    pub fn set_held(&mut self, channel: usize, held: bool) {
        let Some(c) = self.channels.get_mut(channel) else { return };
        if c.held && !held && c.anchor.is_some() {
            c.resync = true;
            c.seq = None;
        }
        c.held = held;
    }

    /// Cache hints (`media::prefetch`) for placing a packet soon: the timeline's own fields.
    pub fn prefetch_header(&self) {
        use crate::media::prefetch::read;
        read(&self.t0);
        read(&self.rate);
        read(&self.channels);
        read(&self.ring);
        read(&self.limits.ring_len);
        read(&self.limits.grace);
        read(&self.frontier);
        read(&self.emitted);
    }

    /// ... then `channel`'s state (its sequence numbers, anchor and counters) ...
    pub fn prefetch_channel(&self, channel: usize) {
        use crate::media::prefetch::read;
        if let Some(ch) = self.channels.get(channel) {
            // Every field: a hint covers one cache line, and the layout is the compiler's.
            read(&ch.num);
            read(&ch.den);
            read(&ch.seq);
            read(&ch.anchor);
            read(&ch.prev_ssrc);
            read(&ch.resync);
            read(&ch.held);
            read(&ch.stats.packets);
            read(&ch.stats.late);
            read(&ch.stats.first_at);
            read(&ch.stats.last_at);
        }
    }

    /// ... then the ring slots a packet of `samples` following the channel's newest will fill.
    pub fn prefetch_place(&self, channel: usize, samples: usize) {
        let Some(a) = self.channels.get(channel).and_then(|c| c.anchor.as_ref()) else { return };
        let (nch, ring_len) = (self.channels.len(), self.limits.ring_len);
        let at = a.top_end.max(self.frontier).rem_euclid(ring_len) as usize;
        let frames = samples.min(ring_len as usize - at);
        if let Some(slots) = self.ring.get(at * nch + channel..(at + frames) * nch) {
            crate::media::prefetch::write_all(slots);
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
        let (frontier, emitted, lim, nch) = (self.frontier, self.emitted, self.limits, self.channels.len());
        let Self { ring, channels, .. } = self;
        let Some(ch) = channels.get_mut(channel) else { return };
        // The ring holds `emitted .. emitted + ring_len`; packets before the frontier are late.
        let room = Room { frontier, end: emitted + lim.ring_len, ring_len: lim.ring_len, nch, channel };
        let n = pcm.len() as i64;
        if n == 0 || n > lim.ring_len / 2 {
            return;
        }
        ch.stats.first_at.get_or_insert(now);
        ch.stats.last_at = Some(now);
        let newest = match ch.order(rtp, arrival, lim.grace) {
            Order::Newest => true,
            Order::Older => false,
            Order::Dropped => return,
        };

        // Where the packet belongs according to its timestamp, if the stream is anchored.
        let (num, den) = (ch.num, ch.den);
        let mut placed = None;
        if let Some(a) = ch.anchor.as_mut().filter(|_| !ch.resync) {
            let ext_ts = a.top_ext + i64::from(rtp.timestamp.wrapping_sub(a.top_ts) as i32);
            let ticks = (ext_ts - a.ts).saturating_mul(num);
            let pos = a.pos + if den == 1 { ticks } else { ticks.div_euclid(den) };
            let lag = arrival - (pos + n);
            let jump = if rtp.marker { lim.marker_jump } else { lim.jump };
            if !newest {
                if lag < a.base - jump {
                    ch.stats.late += 1; // fits the timestamps of no recent packet
                    return;
                }
                placed = Some(pos);
            } else {
                // The lag minimum may have risen with the time elapsed since the last packet.
                let allowance = a.base + ((arrival - a.last).max(0) >> LEAK_SHIFT);
                let late_for = if pos < frontier {
                    arrival - *a.late_since.get_or_insert(arrival)
                } else {
                    a.late_since = None;
                    0
                };
                if lag >= a.base - jump && late_for < lim.late_streak {
                    a.base = allowance.min(lag);
                    let slip = drift_step(a, pos - a.top_end, arrival, n, lim);
                    if slip > 0 {
                        ch.stats.drift_inserted += slip as u64;
                        // Fill the inserted samples with the packet's first one: no click.
                        room.fill(ring, pos..pos + slip, pcm[0]);
                    } else if slip < 0 && arrival - a.since < lim.settle {
                        // The anchor packet was read late (it waited in the socket while the
                        // call was being set up, or the media thread was busy): what was placed
                        // since moves back with the anchor, so the packets read together with
                        // it keep their audio rather than being written over by this one.
                        room.shift(ring, a.pos..a.top_end, slip);
                    } else if slip < 0 {
                        ch.stats.drift_dropped += slip.unsigned_abs();
                    }
                    a.pos += slip;
                    a.base -= slip;
                    a.top_ts = rtp.timestamp;
                    a.top_ext = ext_ts;
                    a.top_end = pos + slip + n;
                    a.last = arrival;
                    placed = Some(pos + slip);
                }
            }
        }
        let pos = match placed {
            Some(p) => p,
            None if !newest => {
                ch.stats.late += 1; // an older packet cannot anchor
                return;
            }
            None => {
                // (Re-)anchor: the packet's audio ends at its arrival.
                if ch.anchor.is_some() {
                    ch.stats.reanchors += 1;
                }
                let pos = (arrival - n).max(frontier);
                ch.anchor = Some(Anchor::new(rtp.timestamp, pos, n, arrival));
                ch.resync = false;
                pos
            }
        };
        // Only what lies between the frontier and the end of the ring can be stored.
        let start = pos.max(frontier);
        let end = (pos + n).min(room.end);
        // Audio from before t0 (sent before our 200 OK) is not recorded, and is not late.
        if start >= end {
            if end > 0 {
                ch.stats.late += 1;
            }
            return;
        }
        if start > pos.max(0) {
            ch.stats.late += 1; // partly late: its head was already final
        }
        ch.stats.packets += 1;
        room.put(ring, start, &pcm[(start - pos) as usize..(end - pos) as usize]);
    }

    /// Takes a packet of the stream that carries no audio (an RFC 4733 event, comfort noise)
    /// into its sequence numbering, so the numbers it uses are not counted lost. Places
    /// nothing, counts nothing as a packet and never moves the anchor; a packet from another
    /// source than the stream's (some SRCs send events with their own SSRC) is ignored.
    pub fn account(&mut self, channel: usize, now: Instant, rtp: RtpMeta) {
        let (arrival, grace) = (self.position_of(now), self.limits.grace);
        let Some(ch) = self.channels.get_mut(channel) else { return };
        if ch.seq.as_ref().is_some_and(|s| s.ssrc == rtp.ssrc) {
            let _ = ch.order(rtp, arrival, grace);
        }
    }

    /// Makes every frame older than the reorder window final, and hands the final frames out
    /// (as interleaved slices of the ring) once at least [`FLUSH_BYTES`] of them have gathered.
    pub fn advance<E>(&mut self, now: Instant, sink: impl FnMut(&[i16]) -> Result<(), E>) -> Result<(), E> {
        let target = self.position_of(now) - self.limits.window;
        // During the call's first SETTLE nothing becomes final: the first packets may have
        // waited in their socket while the call was being set up (or the media thread was
        // busy), and the first packets read on time then move them back to their places.
        if target < self.limits.settle {
            return Ok(());
        }
        self.frontier = self.frontier.max(target);
        if self.frontier - self.emitted < self.limits.flush {
            return Ok(());
        }
        self.emit_until(self.frontier, sink)
    }

    /// Hands out everything up to `end` (the call's end), silence included, so the recording is
    /// exactly `end − t0` long (unless more was handed out already). Audio placed beyond `end`
    /// is discarded.
    pub fn finish<E>(&mut self, end: Instant, sink: impl FnMut(&[i16]) -> Result<(), E>) -> Result<(), E> {
        let target = self.position_of(end);
        self.frontier = self.frontier.max(target);
        self.emit_until(target, sink)
    }

    fn emit_until<E>(&mut self, target: i64, mut sink: impl FnMut(&[i16]) -> Result<(), E>) -> Result<(), E> {
        let nch = self.channels.len();
        if nch == 0 {
            self.emitted = self.emitted.max(target);
            return Ok(());
        }
        let ring_len = self.limits.ring_len;
        while self.emitted < target {
            // At most up to the ring's end: the frames are one slice of it.
            let at = self.emitted.rem_euclid(ring_len);
            let frames = (target - self.emitted).min(ring_len - at);
            let run = &mut self.ring[at as usize * nch..(at + frames) as usize * nch];
            self.emitted += frames;
            let r = sink(run);
            // Cleared for the ring's next turn.
            run.fill(0);
            r?;
        }
        Ok(())
    }
}

/// Where one packet may write in the ring: from the frontier to the ring's end, in its
/// channel's slots.
#[derive(Debug, Clone, Copy)]
struct Room {
    frontier: i64,
    end: i64,
    ring_len: i64,
    nch: usize,
    channel: usize,
}

impl Room {
    /// Writes `src` from position `start` (within the room) into the channel's slots.
    fn put(&self, ring: &mut [i16], start: i64, src: &[i16]) {
        let at = start.rem_euclid(self.ring_len) as usize;
        let first = src.len().min(self.ring_len as usize - at);
        let (nch, c) = (self.nch, self.channel);
        for (run_at, run) in [(at, &src[..first]), (0, &src[first..])] {
            let frames = &mut ring[run_at * nch..(run_at + run.len()) * nch];
            if nch == 1 {
                frames.copy_from_slice(run);
            } else {
                for (frame, s) in frames.chunks_exact_mut(nch).zip(run) {
                    frame[c] = *s;
                }
            }
        }
    }

    /// Moves the channel's samples in `range` back by `-by` (`by` ≤ 0) and clears what they
    /// leave; samples that would land before the frontier are dropped (that audio is final).
    fn shift(&self, ring: &mut [i16], range: std::ops::Range<i64>, by: i64) {
        let slot = |p: i64| p.rem_euclid(self.ring_len) as usize * self.nch + self.channel;
        let (start, end) = (range.start.max(self.frontier), range.end.min(self.end));
        for p in start..end {
            if p + by >= self.frontier {
                ring[slot(p + by)] = ring[slot(p)];
            }
        }
        for p in (end + by).max(start)..end {
            ring[slot(p)] = 0;
        }
    }

    /// Writes `value` over `range`, where it lies within the room.
    fn fill(&self, ring: &mut [i16], range: std::ops::Range<i64>, value: i16) {
        for p in range.start.max(self.frontier)..range.end.min(self.end) {
            ring[p.rem_euclid(self.ring_len) as usize * self.nch + self.channel] = value;
        }
    }
}

/// The anchor slip (samples, + inserts, − drops) after a newest packet updated the lag
/// minimum; `silence` is how many unwritten samples precede the packet's place.
fn drift_step(a: &Anchor, silence: i64, arrival: i64, n: i64, lim: Limits) -> i64 {
    let err = a.base;
    if err < -lim.deadband {
        if arrival - a.since < lim.settle {
            return err; // the anchor packet came late: follow the earliest arrival at once
        }
        if silence > 0 {
            return err.max(-silence); // drop only silence
        }
    }
    if err.abs() <= lim.deadband {
        return 0;
    }
    // One sample per 160: 1/8000 s per 20 ms packet whatever the rate.
    (n / 160).max(1) * err.signum()
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// Whole samples in `d` at `rate` (floor). Integer-only: `d` is split into seconds and
/// nanoseconds (the product of the latter with a `u32` rate fits a `u64`).
pub fn samples(d: Duration, rate: u32) -> i64 {
    let whole = d.as_secs().saturating_mul(u64::from(rate));
    let part = u64::from(d.subsec_nanos()) * u64::from(rate) / 1_000_000_000;
    whole.saturating_add(part).min(i64::MAX as u64) as i64
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

    fn advance_into(tl: &mut Timeline, now: Instant, out: &mut Vec<i16>) {
        tl.advance(now, |s| {
            out.extend_from_slice(s);
            Ok::<(), ()>(())
        })
        .unwrap();
    }

    /// Packets `seqs` of a 20 ms G.711 stream sent on time, each arriving as its audio ends
    /// (seq i at `(i + 1) × 20 ms`), with the timeline advanced after each: the media thread.
    fn steady(tl: &mut Timeline, t0: Instant, seqs: impl Iterator<Item = u32>, v: i16, out: &mut Vec<i16>) {
        for i in seqs {
            let at = t0 + (i + 1) * 20 * MS;
            tl.place(0, at, meta(i as u16, i * 160), &pkt(v));
            advance_into(tl, at, out);
        }
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
        tl.place(0, t0 + 60 * MS, meta(2, 320), &pkt(3));
        tl.place(0, t0 + 65 * MS, meta(1, 160), &pkt(2));
        let out = collect(&mut tl, t0 + 60 * MS);
        assert_eq!(&out[..160], &pkt(1));
        assert_eq!(&out[160..320], &pkt(2));
        assert_eq!(&out[320..480], &pkt(3));
        let st = tl.stats(0).unwrap();
        assert_eq!((st.late, st.lost, st.packets), (0, 0, 3), "a reordered packet is not lost");
    }

    #[test]
    fn late_packet_dropped_and_its_gap_is_silence() {
        // After the call's first second (SETTLE), in which nothing becomes final.
        let t0 = crate::clock::now();
        let s = t0 + 1000 * MS;
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        tl.place(0, s + 20 * MS, meta(0, 0), &pkt(1));
        tl.place(0, s + 60 * MS, meta(2, 320), &pkt(3));
        assert_eq!(tl.stats(0).unwrap().lost, 1);
        let mut written = Vec::new();
        advance_into(&mut tl, s + 200 * MS, &mut written);
        // seq 1 arrives long after its place was final.
        tl.place(0, s + 200 * MS, meta(1, 160), &pkt(2));
        written.extend(collect(&mut tl, s + 200 * MS));
        assert_eq!(&written[8160..8320], &[0; 160], "a packet that never came in time is silence");
        let st = tl.stats(0).unwrap();
        assert_eq!((st.late, st.lost, st.reanchors), (1, 0, 0), "late, not lost: it arrived");
        assert_eq!(written.len(), 9600);
    }

    #[test]
    fn duplicates_dropped_and_counted() {
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        tl.place(0, t0 + 20 * MS, meta(0, 0), &pkt(1));
        tl.place(0, t0 + 40 * MS, meta(1, 160), &pkt(2));
        tl.place(0, t0 + 41 * MS, meta(1, 160), &pkt(9)); // the newest again
        tl.place(0, t0 + 42 * MS, meta(0, 0), &pkt(9)); // an older one again
        tl.place(0, t0 + 80 * MS, meta(3, 480), &pkt(4));
        tl.place(0, t0 + 81 * MS, meta(2, 320), &pkt(3)); // reordered, not a duplicate
        tl.place(0, t0 + 82 * MS, meta(2, 320), &pkt(9)); // ... but now it is
        let out = collect(&mut tl, t0 + 80 * MS);
        for (i, v) in [1, 2, 3, 4].into_iter().enumerate() {
            assert_eq!(&out[i * 160..(i + 1) * 160], &pkt(v));
        }
        let st = tl.stats(0).unwrap();
        assert_eq!((st.packets, st.duplicates, st.late, st.lost), (4, 3, 0, 0));
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
    fn reorder_across_the_wrap_lands_in_place() {
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        let (seq0, ts0) = (65534u16, u32::MAX - 159);
        let m = |i: u16| meta(seq0.wrapping_add(i), ts0.wrapping_add(u32::from(i) * 160));
        tl.place(0, t0 + 20 * MS, m(0), &pkt(1));
        tl.place(0, t0 + 60 * MS, m(2), &pkt(3)); // seq 0, ts 160: both wrapped
        tl.place(0, t0 + 62 * MS, m(1), &pkt(2)); // seq 65535, ts u32::MAX − 159 + 160
        let out = collect(&mut tl, t0 + 60 * MS);
        assert_eq!(out, [pkt(1), pkt(2), pkt(3)].concat());
        let st = tl.stats(0).unwrap();
        assert_eq!((st.packets, st.late, st.lost, st.reanchors), (3, 0, 0, 0));
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
    fn stragglers_of_the_previous_source_are_dropped() {
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        for i in 0..10u32 {
            tl.place(0, t0 + (i + 1) * 20 * MS, meta(i as u16, i * 160), &pkt(1));
        }
        let b = |i: u32| RtpMeta { ssrc: 2, seq: 500 + i as u16, timestamp: 7_000 + i * 160, marker: false };
        tl.place(0, t0 + 220 * MS, b(0), &pkt(2));
        tl.place(0, t0 + 221 * MS, meta(10, 1600), &pkt(9)); // the old source, reordered across the switch
        tl.place(0, t0 + 240 * MS, b(1), &pkt(2));
        let out = collect(&mut tl, t0 + 240 * MS);
        assert!(out[..1600].iter().all(|s| *s == 1));
        assert!(out[1600..].iter().all(|s| *s == 2), "the straggler neither lands nor re-anchors");
        let st = tl.stats(0).unwrap();
        assert_eq!((st.reanchors, st.late), (1, 1));
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
    fn marker_bit_timestamp_jump_reanchors_on_arrival() {
        // A 30 ms jump: inside the reorder window, so only the marker bit gives it away.
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        let mut out = Vec::new();
        steady(&mut tl, t0, 0..10, 1, &mut out);
        for i in 10..20u32 {
            let m = RtpMeta { ssrc: 1, seq: i as u16, timestamp: i * 160 + 240, marker: i == 10 };
            let at = t0 + (i + 1) * 20 * MS;
            tl.place(0, at, m, &pkt(2));
            advance_into(&mut tl, at, &mut out);
        }
        out.extend(collect(&mut tl, t0 + 400 * MS));
        assert!(out[..1600].iter().all(|s| *s == 1));
        assert!(out[1600..].iter().all(|s| *s == 2), "no gap, no overlap");
        assert_eq!(tl.stats(0).unwrap().reanchors, 1);
    }

    #[test]
    fn backward_timestamp_jump_reanchors_after_a_late_run() {
        // Timestamps go back 2 s with the sequence going on: every packet is late until the
        // late run re-anchors the stream.
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        let mut out = Vec::new();
        steady(&mut tl, t0, 0..100, 1, &mut out);
        for i in 100..200u32 {
            let at = t0 + (i + 1) * 20 * MS;
            tl.place(0, at, meta(i as u16, i * 160 - 16_000), &pkt(2));
            advance_into(&mut tl, at, &mut out);
        }
        out.extend(collect(&mut tl, t0 + 4000 * MS));
        let st = tl.stats(0).unwrap();
        assert_eq!(st.reanchors, 1);
        // Late while the run lasted (250 ms: 13 packets), then in place again.
        assert_eq!(st.late, 13);
        assert!(out[16000 + 13 * 160..].iter().all(|s| *s == 2));
    }

    #[test]
    fn sequence_restart_is_believed_on_the_second_packet() {
        // RFC 3550 §A.1: a far jump of the sequence numbers is a restart once the next follows.
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        let mut out = Vec::new();
        steady(&mut tl, t0, 0..10, 1, &mut out);
        for i in 10..20u32 {
            let at = t0 + (i + 1) * 20 * MS;
            tl.place(0, at, meta(30_000 + i as u16, i * 160), &pkt(2));
            advance_into(&mut tl, at, &mut out);
        }
        out.extend(collect(&mut tl, t0 + 400 * MS));
        let st = tl.stats(0).unwrap();
        assert_eq!((st.lost, st.late, st.reanchors, st.packets), (0, 1, 1, 19));
        assert!(out[..1600].iter().all(|s| *s == 1));
        assert!(out[1600..1760].iter().all(|s| *s == 0), "the unconfirmed packet is dropped");
        assert!(out[1760..].iter().all(|s| *s == 2));
    }

    #[test]
    fn pause_keeps_channels_in_step() {
        // Stream sends 1 s, pauses 1 s (no packets), resumes with timestamps that continue as if
        // time had passed (silence suppression) and the marker bit: the resumed audio lands 2 s in.
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        let mut out = Vec::new();
        steady(&mut tl, t0, 0..50u32, 9, &mut out);
        for j in 0..50u32 {
            let at = t0 + 2020 * MS + j * 20 * MS;
            tl.place(0, at, RtpMeta { marker: j == 0, ..meta(50 + j as u16, (100 + j) * 160) }, &pkt(9));
            advance_into(&mut tl, at, &mut out);
        }
        out.extend(collect(&mut tl, t0 + 3000 * MS));
        assert_eq!(tl.stats(0).unwrap().reanchors, 0);
        assert_eq!(out.len(), 24000);
        assert!(out[..8000].iter().all(|s| *s == 9));
        assert!(out[8000..16000].iter().all(|s| *s == 0));
        assert!(out[16000..24000].iter().all(|s| *s == 9));
    }

    #[test]
    fn packets_queued_before_the_first_read_keep_their_places() {
        // The first packets wait in the socket until the media thread first reads it (up to
        // 180 ms here: a busy media thread registers a new call's sockets late); later ones are
        // seen at 5 ms wake-ups. Every packet's audio must be at its place, bar what lies
        // before t0.
        for (delay, phase) in [(0u32, 0u32), (7, 1), (18, 3), (25, 4), (44, 2), (97, 1), (180, 3)] {
            let t0 = crate::clock::now();
            let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
            let mut out = Vec::new();
            let sent = |i: u32| 1 + i * 20; // ms after t0; packet i is the 20 ms before
            let seen = |ms: u32| ms.max(delay).div_ceil(5) * 5 + phase;
            let mut wake = 0;
            for i in 0..200u32 {
                let at = seen(sent(i));
                if at > wake {
                    advance_into(&mut tl, t0 + wake * MS, &mut out);
                    wake = at;
                }
                tl.place(0, t0 + at * MS, meta(i as u16, i * 160), &[i as i16 + 1; 160]);
            }
            out.extend(collect(&mut tl, t0 + 4020 * MS));
            // Packet i covers [8 + 160 i - 160, 8 + 160 i) samples (1 ms = 8 samples after t0),
            // seen up to a wake-up (5 ms, plus the phase) later. Each must start within that of its place, and
            // keep most of its samples.
            for i in 1..200usize {
                let nominal = 8 + 160 * i - 160;
                let start = out.iter().position(|s| *s == i as i16 + 1);
                let count = out.iter().filter(|s| **s == i as i16 + 1).count();
                let off = start.map(|s| s as i64 - nominal as i64);
                assert!(off.is_some_and(|o| (0..=64).contains(&o)) && count >= 150, "delay {delay}, phase {phase}: packet {i} off {off:?} count {count}");
            }
            // The first packet's audio from before t0 is cut, and is not counted late.
            let st = tl.stats(0).unwrap();
            assert_eq!((st.late, st.lost), (0, 0), "delay {delay}, phase {phase}");
        }
    }

    #[test]
    fn packets_without_audio_are_not_counted_lost() {
        // Packets 0-4 audio, 5-7 RFC 4733 events (same SSRC), 8-9 audio; then an event from
        // another SSRC, which must not disturb the stream.
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        for i in 0..10u32 {
            let at = t0 + (i + 1) * 20 * MS;
            if (5..8).contains(&i) {
                tl.account(0, at, meta(i as u16, 800));
            } else {
                tl.place(0, at, meta(i as u16, i * 160), &pkt(1));
            }
        }
        tl.account(0, t0 + 220 * MS, RtpMeta { ssrc: 99, seq: 5000, timestamp: 0, marker: true });
        tl.place(0, t0 + 220 * MS, meta(10, 1600), &pkt(1));
        let st = tl.stats(0).unwrap();
        assert_eq!((st.packets, st.lost, st.late, st.duplicates, st.reanchors), (8, 0, 0, 0, 0), "{st:?}");
    }

    #[test]
    fn jittered_start_overwrites_at_most_one_packet() {
        // Arrivals jittered (a tenth of them by up to 40 ms) and seen at 5 ms wake-ups; the
        // timeline advanced every 20 ms.
        for seed in 1..200u64 {
            let mut r = Rng(seed);
            let t0 = crate::clock::now();
            let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
            let mut out = Vec::new();
            let phase = (r.unit() * 5.0) as u32;
            let mut last_seen = 0;
            let mut next_tick = 20;
            for i in 0..100u32 {
                let sent = 1 + i * 20;
                let jitter = if r.unit() < 0.1 { (r.unit() * 40.0) as u32 } else { (r.unit() * 6.0) as u32 };
                // Seen at the next wake-up, never before an earlier packet.
                let seen = ((sent + jitter).div_ceil(5) * 5 + phase).max(last_seen);
                last_seen = seen;
                while next_tick <= seen {
                    advance_into(&mut tl, t0 + next_tick * MS, &mut out);
                    next_tick += 20;
                }
                let rtp = RtpMeta { ssrc: 7, seq: i as u16, timestamp: 23_757 + i * 160, marker: i == 0 };
                tl.place(0, t0 + seen * MS, rtp, &[i as i16 + 1; 160]);
            }
            out.extend(collect(&mut tl, t0 + 2100 * MS));
            // A correction may overwrite what the late first packets brought, never more than
            // one packet's worth (no gap or overlap beyond one packet).
            let kept: usize = (1..100).map(|i| out.iter().filter(|s| **s == i as i16 + 1).count()).sum();
            assert!(kept >= 99 * 160 - 160, "seed {seed}: {} samples overwritten; {:?}", 99 * 160 - kept, tl.stats(0));
        }
    }

    #[test]
    fn delayed_first_packet_is_corrected_by_the_next_ones() {
        // The anchor packet comes 30 ms late; the next ones on time move the anchor back at
        // once (during SETTLE), with the late packet's audio, rather than keeping 30 ms of
        // delay for the whole call.
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        let mut out = Vec::new();
        tl.place(0, t0 + 50 * MS, meta(0, 0), &pkt(1));
        for i in 1..50u32 {
            let at = t0 + (i + 1) * 20 * MS;
            tl.place(0, at, meta(i as u16, i * 160), &pkt(i as i16 + 1));
            advance_into(&mut tl, at, &mut out);
        }
        out.extend(collect(&mut tl, t0 + 1000 * MS));
        for (i, p) in out.chunks(160).enumerate() {
            assert!(p.iter().all(|s| *s == i as i16 + 1), "packet {i} at its place");
        }
        let st = tl.stats(0).unwrap();
        assert_eq!((st.reanchors, st.drift_dropped, st.late), (0, 0, 0), "the late packet's audio moved back with the anchor");
    }

    #[test]
    fn talkspurt_after_a_long_pause_keeps_its_place() {
        // 20 s of silence suppression, then a talkspurt with the marker bit whose timestamps
        // account for the pause: no re-anchoring, the audio lands 21 s in.
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        let mut out = Vec::new();
        steady(&mut tl, t0, 0..50u32, 1, &mut out);
        advance_into(&mut tl, t0 + 21_000 * MS, &mut out); // the writes go on
        for j in 0..50u32 {
            let at = t0 + 21_020 * MS + j * 20 * MS;
            tl.place(0, at, RtpMeta { marker: j == 0, ..meta(50 + j as u16, (1050 + j) * 160) }, &pkt(2));
            advance_into(&mut tl, at, &mut out);
        }
        out.extend(collect(&mut tl, t0 + 22_000 * MS));
        assert!(out[..8000].iter().all(|s| *s == 1));
        assert!(out[8000..168_000].iter().all(|s| *s == 0));
        assert!(out[168_000..].iter().all(|s| *s == 2));
        let st = tl.stats(0).unwrap();
        assert_eq!((st.reanchors, st.drift_inserted, st.drift_dropped), (0, 0, 0));
    }

    #[test]
    fn slow_sender_is_corrected_not_dropped() {
        // Sender clock 0.5 % slow: timestamps advance 159.2 per 20 ms of real time.
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        for i in 0..3000u32 {
            let ts = (f64::from(i) * 159.2) as u32;
            tl.place(0, t0 + (i + 1) * 20 * MS, meta(i as u16, ts), &pkt(4));
            tl.advance(t0 + (i + 1) * 20 * MS, |_| Ok::<(), ()>(())).unwrap();
        }
        let st = tl.stats(0).unwrap();
        assert_eq!((st.late, st.reanchors, st.drift_dropped), (0, 0, 0));
        // 60 s at 0.5 %: 2,400 samples, less what the deadband holds (5 ms: 40).
        assert!((2_350..=2_400).contains(&st.drift_inserted), "{st:?}");
    }

    #[test]
    fn held_stream_reanchors_on_resume() {
        // After the hold the SRC resumes with timestamps that ignore the 3 s it was silent:
        // placed by them, the audio would be 3 s late and dropped.
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        let mut out = Vec::new();
        steady(&mut tl, t0, 0..50, 1, &mut out);
        tl.set_held(0, true);
        advance_into(&mut tl, t0 + 4000 * MS, &mut out);
        tl.set_held(0, false);
        for i in 0..50u32 {
            let at = t0 + 4000 * MS + (i + 1) * 20 * MS;
            tl.place(0, at, meta(50 + i as u16, (50 + i) * 160), &pkt(2));
            advance_into(&mut tl, at, &mut out);
        }
        out.extend(collect(&mut tl, t0 + 5000 * MS));
        assert!(out[..8000].iter().all(|s| *s == 1));
        assert!(out[8000..32000].iter().all(|s| *s == 0), "silence while held");
        assert!(out[32000..40000].iter().all(|s| *s == 2), "resumed audio at its arrival");
        let st = tl.stats(0).unwrap();
        assert_eq!((st.reanchors, st.late, st.lost), (1, 0, 0));
    }

    #[test]
    fn final_audio_is_handed_out_in_large_slices_and_packets_are_late_by_the_frontier() {
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 2, 60 * MS);
        let mut sizes = Vec::new();
        let mut out = Vec::new();
        for i in 0..200u32 {
            let at = t0 + (i + 1) * 20 * MS;
            tl.place(0, at, meta(i as u16, i * 160), &pkt(1));
            if i != 150 {
                tl.place(1, at, meta(i as u16, i * 160), &pkt(2));
            }
            // One or two slices (at the ring's end) per hand-out.
            let mut frames = 0;
            tl.advance(at, |s| {
                frames += s.len() / 2;
                out.extend_from_slice(s);
                Ok::<(), ()>(())
            })
            .unwrap();
            if frames > 0 {
                sizes.push(frames);
            }
            if i == 160 {
                // Its place (frames 24,000 to 24,160) is final though not yet handed out.
                tl.place(1, at, meta(150, 150 * 160), &pkt(9));
            }
        }
        let flush = FLUSH_BYTES / 4;
        assert!(sizes.iter().all(|n| *n >= flush), "{sizes:?}");
        assert!(sizes.len() <= 4, "one hand-out per 1.024 s at most: {sizes:?}");
        assert_eq!(tl.frames_written() as usize, sizes.iter().sum::<usize>());
        out.extend(collect(&mut tl, t0 + 4000 * MS));
        assert_eq!(out.len(), 2 * 32000);
        let ch1: Vec<i16> = out.iter().skip(1).step_by(2).copied().collect();
        assert!(ch1[24000..24160].iter().all(|s| *s == 0), "the late packet is not placed");
        assert!(ch1[..24000].iter().chain(&ch1[24160..]).all(|s| *s == 2));
        assert_eq!(tl.stats(1).unwrap().late, 1);
    }

    #[test]
    fn late_reanchor_burst_moves_back_across_the_ring_end_on_its_channel_only() {
        // Two channels. At 3 s stream 1 switches source; the new source's first two packets
        // are read together, 22 and 2 ms late, where the ring wraps (24,192 frames), with the
        // frontier well past t0. The first is moved back with the anchor; channel 0's samples,
        // interleaved with the moved ones, stay as they are.
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 2, 60 * MS);
        assert_eq!(tl.limits.ring_len, 24192, "the wrap this test is about");
        let mut out = Vec::new();
        for i in 0..200u32 {
            let at = t0 + (i + 1) * 20 * MS;
            tl.place(0, at, meta(i as u16, i * 160), &pkt(1));
            match i {
                0..150 => tl.place(1, at, meta(i as u16, i * 160), &pkt(2)),
                150 => {} // read with the next one
                151 => {
                    let late = at + 2 * MS;
                    for k in [150u32, 151] {
                        tl.place(1, late, RtpMeta { ssrc: 9, seq: 7000 + k as u16, timestamp: 90_000 + k * 160, marker: k == 150 }, &pkt(3));
                    }
                }
                _ => tl.place(1, at, RtpMeta { ssrc: 9, seq: 7000 + i as u16, timestamp: 90_000 + i * 160, marker: false }, &pkt(3)),
            }
            advance_into(&mut tl, at, &mut out);
        }
        out.extend(collect(&mut tl, t0 + 4000 * MS));
        assert_eq!(out.len(), 2 * 32000);
        let ch = |c: usize| out.iter().skip(c).step_by(2).copied().collect::<Vec<i16>>();
        assert!(ch(0).iter().all(|s| *s == 1), "channel 0 untouched by the move");
        let ch1 = ch(1);
        // The new source is 16 samples (2 ms, inside the drift deadband) late from then on.
        assert!(ch1[..24000].iter().all(|s| *s == 2));
        assert!(ch1[24000..24016].iter().all(|s| *s == 0));
        assert!(ch1[24016..].iter().all(|s| *s == 3), "both burst packets kept, across the wrap");
        let st = tl.stats(1).unwrap();
        assert_eq!((st.reanchors, st.late, st.drift_dropped), (1, 0, 0));
    }

    #[test]
    fn finish_cuts_final_audio_not_yet_handed_out_at_the_end() {
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        let mut out = Vec::new();
        steady(&mut tl, t0, 0..100, 3, &mut out);
        // The call ended at 1.5 s (e.g. at its last packet, found by the RTP timeout), though
        // 1.94 s are final.
        assert!(out.len() <= 12000);
        out.extend(collect(&mut tl, t0 + 1500 * MS));
        assert_eq!(out.len(), 12000);
        assert!(out.iter().all(|s| *s == 3));
    }

    #[test]
    fn added_channel_starts_at_its_place() {
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 8000, 1, 60 * MS);
        let mut out = Vec::new();
        steady(&mut tl, t0, 0..50, 1, &mut out);
        // What was handed out stays mono; final frames not yet handed out widen with the ring.
        let mono = out.len();
        assert!(mono <= 8000 - 480, "at most one second less the reorder window: {mono}");
        assert_eq!(tl.add_channel(), 1);
        for i in 50..100u32 {
            let at = t0 + (i + 1) * 20 * MS;
            tl.place(0, at, meta(i as u16, i * 160), &pkt(1));
            tl.place(1, at, RtpMeta { ssrc: 7, seq: i as u16, timestamp: 123 + i * 160, marker: false }, &pkt(2));
            advance_into(&mut tl, at, &mut out);
        }
        out.extend(collect(&mut tl, t0 + 2000 * MS));
        assert!(out[..mono].iter().all(|s| *s == 1));
        let stereo = &out[mono..];
        assert_eq!(stereo.len(), 2 * (16000 - mono));
        assert!(stereo.iter().step_by(2).all(|s| *s == 1));
        let ch1: Vec<i16> = stereo.iter().skip(1).step_by(2).copied().collect();
        // Its first packet arrives at 1,020 ms: it covers frames 8,000 to 8,160.
        assert!(ch1[..8000 - mono].iter().all(|s| *s == 0), "silent until its first packet");
        assert!(ch1[8000 - mono..].iter().all(|s| *s == 2));
    }

    #[test]
    fn rtp_clock_differs_from_the_recording_rate() {
        // (rate, RTP clock, ticks per 20 ms, samples per 20 ms): G.722 and G.711 resampled to
        // 16 kHz, Opus at 16 kHz, Opus at 44.1 kHz (a ratio of 147/160).
        for (rate, clock, ticks, n) in [(16000, 8000, 160u32, 320usize), (16000, 48000, 960, 320), (44100, 48000, 960, 882)] {
            let t0 = crate::clock::now();
            let mut tl = Timeline::new(t0, rate, 1, 60 * MS);
            tl.set_clock_rate(0, clock);
            let mut out = Vec::new();
            let ramp: Vec<i16> = (1..=n as i16).collect();
            for i in 0..100u32 {
                let at = t0 + (i + 1) * 20 * MS;
                tl.place(0, at, meta(i as u16, 1_000_000 + i * ticks), &ramp);
                advance_into(&mut tl, at, &mut out);
            }
            out.extend(collect(&mut tl, t0 + 2000 * MS));
            assert_eq!(out.len(), 2 * n * 50, "{rate}/{clock}");
            for (i, p) in out.chunks(n).enumerate() {
                assert_eq!(p, &ramp[..], "{rate}/{clock}: packet {i} in place, no gap or overlap");
            }
        }
    }

    #[test]
    fn clock_rate_change_reanchors_at_the_next_packet() {
        // G.711 at 8 kHz, then a re-INVITE to L16 at 16 kHz recorded at 16 kHz.
        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, 16000, 1, 60 * MS);
        tl.set_clock_rate(0, 8000);
        let mut out = Vec::new();
        for i in 0..100u32 {
            let at = t0 + (i + 1) * 20 * MS;
            if i == 50 {
                tl.set_clock_rate(0, 16000);
            }
            let (ts, v) = if i < 50 { (i * 160, 1) } else { (i * 320 + 77, 2) };
            tl.place(0, at, meta(i as u16, ts), &[v; 320]);
            advance_into(&mut tl, at, &mut out);
        }
        out.extend(collect(&mut tl, t0 + 2000 * MS));
        assert!(out[..16000].iter().all(|s| *s == 1));
        assert!(out[16000..].iter().all(|s| *s == 2));
        assert_eq!(tl.stats(0).unwrap().reanchors, 1);
    }

    /// Deterministic xorshift64* generator: seeded loss, jitter and duplication.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A simulated SRC stream.
    #[derive(Clone, Copy)]
    struct Sender {
        /// Its clock runs `1 + skew` times as fast as ours.
        skew: f64,
        /// RTP clock, ticks and recording-rate samples per packet.
        clock: u32,
        ticks: u32,
        samples: usize,
        /// Our time of its first sample, seconds.
        start: f64,
        ssrc: u32,
        seq0: u16,
        ts0: u32,
    }

    impl Sender {
        /// 20 ms G.711 at 8 kHz starting at `start`, with its clock `skew` off ours.
        fn g711(skew: f64, start: f64, ssrc: u32) -> Self {
            let s = ssrc as u16;
            Sender { skew, clock: 8000, ticks: 160, samples: 160, start, ssrc, seq0: 65_000u16.wrapping_add(s), ts0: u32::MAX - 100_000 * ssrc }
        }
    }

    /// The network and the host.
    struct Net<'a> {
        /// Base one-way delay (s); chance of a packet being lost or duplicated.
        base: f64,
        loss: f64,
        dup: f64,
        /// Extra delay of a packet sent at `t` (s).
        jitter: &'a dyn Fn(&mut Rng, f64) -> f64,
        /// Machine stalls (µs): the media thread neither receives nor writes.
        stalls: &'a [(u64, u64)],
        /// Packets taken per wake-up at most (one `recvmmsg` per socket).
        drain: usize,
    }

    impl Net<'_> {
        fn clean() -> Net<'static> {
            Net { base: 0.03, loss: 0.0, dup: 0.0, jitter: &|_, _| 0.0, stalls: &[], drain: usize::MAX }
        }
    }

    /// What came out of a simulated call.
    #[derive(Debug)]
    struct Report {
        /// Per channel: packets sent, distinct packets received, arrivals (duplicates included).
        sent: Vec<u64>,
        distinct: Vec<u64>,
        arrivals: Vec<u64>,
        stats: Vec<StreamStats>,
        /// Per channel, over samples after `settle`: least and greatest offset (samples) of a
        /// sample's place from where its send time and the base delay put it.
        lo: Vec<i64>,
        hi: Vec<i64>,
        /// Greatest offset before `settle`, and greatest difference between channels' offsets
        /// at one frame, after it.
        early: Vec<i64>,
        apart: i64,
        frames: i64,
    }

    /// Checks each frame handed out: every sample carries `1 + (its expected place mod 32767)`.
    struct Check<'a> {
        nch: usize,
        frame: i64,
        settle: i64,
        report: &'a mut Report,
    }

    impl Check<'_> {
        fn take(&mut self, chunk: &[i16]) -> Result<(), ()> {
            for f in chunk.chunks_exact(self.nch) {
                let (mut lo, mut hi, mut all) = (i64::MAX, i64::MIN, true);
                for (c, v) in f.iter().enumerate() {
                    if *v <= 0 {
                        all = false;
                        continue;
                    }
                    let e = (self.frame - i64::from(*v - 1)).rem_euclid(32767);
                    let e = if e > 16383 { e - 32767 } else { e };
                    if self.frame < self.settle {
                        self.report.early[c] = self.report.early[c].max(e.abs());
                        continue;
                    }
                    self.report.lo[c] = self.report.lo[c].min(e);
                    self.report.hi[c] = self.report.hi[c].max(e);
                    (lo, hi) = (lo.min(e), hi.max(e));
                }
                if all && self.frame >= self.settle {
                    self.report.apart = self.report.apart.max(hi - lo);
                }
                self.frame += 1;
            }
            Ok(())
        }
    }

    /// Runs a call of `secs` seconds recorded at `rate` through the timeline as the media
    /// thread drives it (a wake-up every 5 ms, a write every 20 ms), on simulated time.
    fn simulate(rate: u32, senders: &[Sender], secs: f64, seed: u64, net: &Net, settle: f64) -> Report {
        let mut rng = Rng(seed);
        let nch = senders.len();
        let mut report = Report {
            sent: vec![0; nch],
            distinct: vec![0; nch],
            arrivals: vec![0; nch],
            stats: vec![],
            lo: vec![i64::MAX; nch],
            hi: vec![i64::MIN; nch],
            early: vec![0; nch],
            apart: 0,
            frames: 0,
        };
        // (arrival s, channel, packet index)
        let mut events = Vec::new();
        for (c, s) in senders.iter().enumerate() {
            let per_sample = 1.0 / (f64::from(rate) * (1.0 + s.skew));
            for j in 0u64.. {
                let end = s.start + ((j + 1) * s.samples as u64) as f64 * per_sample;
                if end > secs - 0.2 {
                    break;
                }
                report.sent[c] += 1;
                if rng.unit() < net.loss {
                    continue;
                }
                report.distinct[c] += 1;
                let at = end + net.base + (net.jitter)(&mut rng, end);
                events.push((at, c, j));
                if rng.unit() < net.dup {
                    events.push((at + rng.unit() * 0.03, c, j));
                }
            }
        }
        events.sort_by(|a, b| a.0.total_cmp(&b.0));

        let t0 = crate::clock::now();
        let mut tl = Timeline::new(t0, rate, nch, 60 * MS);
        for (c, s) in senders.iter().enumerate() {
            tl.set_clock_rate(c, s.clock);
        }
        let mut check = Check { nch, frame: 0, settle: (settle * f64::from(rate)) as i64, report: &mut report };
        let mut pcm = vec![0i16; senders.iter().map(|s| s.samples).max().unwrap_or(0)];
        let (mut next, mut next_write) = (0, 20_000u64);
        for w in (5_000..(secs * 1e6) as u64).step_by(5_000) {
            if net.stalls.iter().any(|&(a, b)| w > a && w < b) {
                continue;
            }
            let now = t0 + Duration::from_micros(w);
            let mut taken = 0;
            while let Some(&(at, c, j)) = events.get(next)
                && at * 1e6 <= w as f64 + 0.5 // not later for a rounding error
                && taken < net.drain
            {
                let s = &senders[c];
                let per_sample = 1.0 / (f64::from(rate) * (1.0 + s.skew));
                let k0 = j * s.samples as u64;
                for (x, v) in pcm[..s.samples].iter_mut().enumerate() {
                    let expected = ((s.start + net.base + (k0 + x as u64) as f64 * per_sample) * f64::from(rate)) as i64;
                    *v = (expected.rem_euclid(32767) + 1) as i16;
                }
                let meta = RtpMeta {
                    ssrc: s.ssrc,
                    seq: s.seq0.wrapping_add(j as u16),
                    timestamp: s.ts0.wrapping_add((j as u32).wrapping_mul(s.ticks)),
                    marker: false,
                };
                tl.place(c, now, meta, &pcm[..s.samples]);
                check.report.arrivals[c] += 1;
                next += 1;
                taken += 1;
            }
            if w >= next_write {
                tl.advance(now, |chunk| check.take(chunk)).unwrap();
                next_write = w + 20_000;
            }
        }
        tl.finish(t0 + Duration::from_secs_f64(secs), |chunk| check.take(chunk)).unwrap();
        report.frames = check.frame;
        report.stats = (0..nch).filter_map(|c| tl.stats(c)).collect();
        report
    }

    /// Offsets in milliseconds at `rate`.
    fn ms(samples: i64, rate: u32) -> f64 {
        samples as f64 * 1000.0 / f64::from(rate)
    }

    #[test]
    fn seeded_loss_jitter_reorder_and_duplicates_land_in_place() {
        // 2 % loss, 1 % duplicates, jitter (half the packets within 2 ms, 5 % up to 80 ms):
        // packets reorder; those over the window are late.
        let jitter = |r: &mut Rng, _| match r.unit() {
            x if x < 0.5 => r.unit() * 0.002,
            x if x < 0.95 => r.unit() * 0.03,
            _ => r.unit() * 0.08,
        };
        let net = Net { loss: 0.02, dup: 0.01, jitter: &jitter, ..Net::clean() };
        let senders = [Sender::g711(0.0, 0.0, 1), Sender::g711(0.0, 0.3, 2)];
        let r = simulate(8000, &senders, 600.0, 7, &net, 2.0);
        assert_eq!(r.frames, 600 * 8000, "the recording is the call's length");
        for c in 0..2 {
            let st = r.stats[c];
            // Every arrival is accounted for (a packet whose head was late counts in both).
            assert!(st.packets + st.duplicates <= r.arrivals[c] && r.arrivals[c] <= st.packets + st.late + st.duplicates, "{st:?}");
            assert_eq!(st.lost, r.sent[c] - r.distinct[c], "lost = never arrived");
            assert_eq!(st.duplicates, r.arrivals[c] - r.distinct[c]);
            assert_eq!(st.reanchors, 0);
            assert!(st.late > 0, "the test has late packets");
            // Settled, the audio stays within 12 ms of its place: the 5 ms at which arrivals are
            // seen (the wake-ups), the drift deadband and a step.
            assert!(r.lo[c] >= -16 && r.hi[c] <= 96, "channel {c}: {} ..= {} samples", r.lo[c], r.hi[c]);
        }
    }

    /// A call of `secs` with the given streams, moderate jitter and 1 % loss. Asserts every
    /// channel within 20 ms of the wall clock and of the others after the first 2 s (the
    /// offsets include up to 5 ms for arrivals being seen at the next wake-up), and prints them.
    fn in_step(rate: u32, senders: &[Sender], secs: f64, seed: u64) {
        let net = Net { loss: 0.01, jitter: &|r: &mut Rng, _| if r.unit() < 0.7 { r.unit() * 0.003 } else { r.unit() * 0.03 }, ..Net::clean() };
        let r = simulate(rate, senders, secs, seed, &net, 2.0);
        assert_eq!(r.frames as f64, secs * f64::from(rate));
        for (c, (s, st)) in senders.iter().zip(&r.stats).enumerate() {
            let (lo, hi) = (ms(r.lo[c], rate), ms(r.hi[c], rate));
            println!(
                "{rate} Hz, RTP clock {}, skew {:+.1} %: offset {lo:+.2} ..= {hi:+.2} ms; inserted {}, dropped {}, late {}",
                s.clock,
                s.skew * 100.0,
                st.drift_inserted,
                st.drift_dropped,
                st.late
            );
            assert_eq!(st.reanchors, 0);
            assert!(lo >= -20.0 && hi <= 20.0, "channel {c}: {r:?}");
        }
        println!("channels apart at most {:.2} ms", ms(r.apart, rate));
        assert!(ms(r.apart, rate) <= 20.0, "{r:?}");
    }

    #[test]
    fn clock_drift_up_to_half_a_percent_stays_in_step_over_an_hour() {
        let skews = [0.001, -0.001, 0.005, -0.005, 0.0];
        let senders: Vec<Sender> = skews.iter().zip(1..).map(|(&skew, i)| Sender::g711(skew, 0.07 * f64::from(i), i)).collect();
        in_step(8000, &senders, 3600.0, 11);
    }

    #[test]
    fn drifting_wideband_streams_stay_in_step() {
        // Recorded at 16 kHz: G.722 (RTP clock 8000), Opus (48000), G.711 resampled (8000).
        let g722 = Sender { clock: 8000, ticks: 160, samples: 320, ..Sender::g711(0.005, 0.0, 1) };
        let opus = Sender { clock: 48000, ticks: 960, samples: 320, ..Sender::g711(-0.005, 0.1, 2) };
        let g711 = Sender { clock: 8000, ticks: 160, samples: 320, ..Sender::g711(0.001, 0.2, 3) };
        in_step(16000, &[g722, opus, g711], 600.0, 13);
    }

    /// Streams on time with no jitter, so that any movement of the audio shows.
    fn still(net: &Net) -> Report {
        let senders = [Sender::g711(0.0, 0.0, 1), Sender::g711(0.0, 0.25, 2)];
        simulate(8000, &senders, 60.0, 3, net, 1.0)
    }

    /// Asserts that the audio landed exactly where it does without the stall.
    fn assert_unmoved(r: &Report) {
        let calm = still(&Net::clean());
        for c in 0..2 {
            let (st, calm_st) = (r.stats[c], calm.stats[c]);
            assert_eq!((st.reanchors, st.drift_inserted, st.drift_dropped), (0, 0, 0), "channel {c}: {st:?}");
            assert_eq!((calm_st.reanchors, calm_st.drift_inserted, calm_st.drift_dropped), (0, 0, 0));
            assert_eq!((r.lo[c], r.hi[c]), (calm.lo[c], calm.hi[c]), "channel {c} moved");
        }
    }

    #[test]
    fn machine_stall_does_not_move_audio() {
        // The media thread stalls 100 ms: every packet of the stall arrives at once after it.
        let r = still(&Net { stalls: &[(30_000_000, 30_100_000)], ..Net::clean() });
        assert_unmoved(&r);
        assert_eq!(r.stats[0].late + r.stats[1].late, 0, "written after the burst");
    }

    #[test]
    fn machine_stall_drained_over_several_wakeups_does_not_move_audio() {
        // As above, but the burst is read two packets per wake-up, with writes in between: the
        // oldest packets come too late and are dropped (what re-anchored streams before).
        let r = still(&Net { stalls: &[(30_000_000, 30_100_000)], drain: 2, ..Net::clean() });
        assert_unmoved(&r);
        assert!(r.stats[0].late + r.stats[1].late > 0);
    }

    #[test]
    fn network_stall_drops_late_packets_without_moving_audio() {
        // The network holds 100 ms of packets and delivers them together; our writes go on.
        let held = |_: &mut Rng, t: f64| if (30.0..30.1).contains(&t) { 30.1 - t } else { 0.0 };
        let r = still(&Net { jitter: &held, ..Net::clean() });
        assert_unmoved(&r);
        for st in &r.stats {
            // Those whose places were written while the network held them: two or three,
            // depending on the stream's phase against the 20 ms writes.
            assert!((2..=3).contains(&st.late), "{st:?}");
        }
    }

    #[test]
    fn lasting_delay_increase_reanchors_once() {
        // The path's delay grows by 200 ms for good at 30 s: late until the late run re-anchors.
        let longer = |_: &mut Rng, t: f64| if t >= 30.0 { 0.2 } else { 0.0 };
        let r = still(&Net { jitter: &longer, ..Net::clean() });
        for st in &r.stats {
            assert_eq!(st.reanchors, 1, "{st:?}");
        }
        assert!(r.lo[0] == 0 && (1600..=1601).contains(&r.hi[0]), "the audio follows the delay: {r:?}");
    }

    /// Cost of placing a packet: 1M packets of 20 ms on two channels, written every 20 ms, less
    /// the cost of the writes alone. `cargo test --release placement_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn placement_cost() {
        let n = 1_000_000u32;
        let pcm = [7i16; 160];
        let run = |placing: bool| {
            let t0 = crate::clock::now();
            let mut tl = Timeline::new(t0, 8000, 2, 60 * MS);
            let start = crate::clock::now();
            for i in 0..n / 2 {
                let at = t0 + 20 * (i + 1) * MS;
                if placing {
                    for c in 0..2 {
                        let m = RtpMeta { ssrc: c as u32, seq: i as u16, timestamp: i.wrapping_mul(160), marker: false };
                        tl.place(c, at, m, std::hint::black_box(&pcm));
                    }
                }
                tl.advance(at, |c| {
                    std::hint::black_box(c);
                    Ok::<(), ()>(())
                })
                .unwrap();
            }
            assert_eq!(tl.stats(0).unwrap().late, 0);
            crate::clock::now() - start
        };
        // The least of several runs: the machine is shared.
        let (with, without) = (0..7).map(|_| (run(true), run(false))).fold((Duration::MAX, Duration::MAX), |(a, b), (x, y)| (a.min(x), b.min(y)));
        let per = |d: Duration| d.as_nanos() as f64 / f64::from(n);
        println!("place {:.1} ns/packet (place + write {:.1})", per(with) - per(without), per(with));
    }
}
