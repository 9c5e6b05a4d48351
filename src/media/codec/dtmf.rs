//! RFC 4733 telephone-event payloads: the parser, and a detector that turns a stream of event
//! packets into one [`Digit`] per key press.
//!
//! A sender repeats each event in many packets: all with the event's start timestamp, with a
//! growing duration, and the last one (E bit set) usually three times (RFC 4733 §2.5.1.4). An
//! event longer than the 16-bit duration field is sent as segments, each with a new timestamp
//! one full segment later (§2.5.1.3). The detector reports each event once, when it ends, with
//! its start timestamp and total duration; an event whose end packets were all lost is reported
//! when the next event starts or at [`DtmfDetector::finish`].
//!
//! Sans-IO: timestamps are the packets' RTP timestamps (the caller maps them to call time with
//! the stream's clock rate). Redundant event blocks (RFC 2198) are not read: only the first.

/// Why a telephone-event payload could not be read.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtmfError {
    /// The payload is shorter than the 4-byte event block (RFC 4733 §2.3).
    #[error("telephone-event payload of {0} bytes, need 4")]
    Short(usize),
}

/// One RFC 4733 §2.3 event block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventBlock {
    /// Event code (§3.2: 0-9 digits, 10 `*`, 11 `#`, 12-15 A-D, 16 flash).
    pub event: u8,
    /// E bit: this packet ends the event.
    pub end: bool,
    /// Power level in -dBm0 (0-63).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

impl EventBlock {
    /// Reads the first event block of a payload; trailing bytes are ignored.
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        let [event, flags, d0, d1, ..] = *payload else {
            return Err(DtmfError::Short(payload.len()));
        };
        Ok(EventBlock {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }
}

/// One detected event (a key press).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digit {
    /// Event code (see [`EventBlock::event`]).
    pub event: u8,
    /// RTP timestamp at which the event started.
    pub start: u32,
    /// Total duration in RTP timestamp units (all segments).
    pub duration: u32,
    /// Power level of the last packet seen, in -dBm0.
    pub volume: u8,
}

impl Digit {
    /// The DTMF symbol of events 0-15 (`0`-`9`, `*`, `#`, `A`-`D`); `None` for flash and the
    /// other tones of RFC 4734.
    pub fn symbol(&self) -> Option<char> {
        b"0123456789*#ABCD"
            .get(usize::from(self.event))
            .map(|&b| char::from(b))
    }
}

/// The event being received.
#[derive(Debug, Clone, Copy)]
struct Pending {
    event: u8,
    start: u32,
    /// Timestamp of the current segment.
    segment: u32,
    /// Duration units in the segments before the current one.
    before: u32,
    /// Duration of the current segment so far.
    duration: u16,
    volume: u8,
}

impl Pending {
    fn digit(&self) -> Digit {
        Digit {
            event: self.event,
            start: self.start,
            duration: self.before + u32::from(self.duration),
            volume: self.volume,
        }
    }
}

/// Turns the telephone-event packets of one stream into digits (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct DtmfDetector {
    pending: Option<Pending>,
    /// Segment timestamp of the last reported event: its retransmitted end packets, and
    /// anything older, are ignored.
    done: Option<u32>,
}

/// `a` is at or before `b` in RTP timestamp order (modulo 2^32, RFC 3550 §5.1).
fn not_after(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) >= 0
}

/// Whether a packet at `timestamp` starts the segment after `p`'s current one: it begins where
/// that segment had got to (or a little later, if its last updates were lost), at most one full
/// segment on, and the current segment was long enough to be a segment rather than a key press
/// whose end packets were lost.
fn is_next_segment(p: &Pending, timestamp: u32) -> bool {
    let delta = timestamp.wrapping_sub(p.segment);
    p.duration >= 0x8000 && (u32::from(p.duration)..=0xffff).contains(&delta)
}

impl DtmfDetector {
    /// A detector that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one telephone-event packet (`timestamp` from its RTP header) and calls `emit` for
    /// each event that this packet completes (at most two: a pending event without an end,
    /// superseded by a new event that is already ended).
    pub fn push(
        &mut self,
        timestamp: u32,
        payload: &[u8],
        mut emit: impl FnMut(Digit),
    ) -> Result<(), DtmfError> {
        let block = EventBlock::parse(payload)?;
        if self.done.is_some_and(|d| not_after(timestamp, d)) {
            return Ok(()); // a retransmitted end, or a late packet of a reported event
        }
        match &mut self.pending {
            Some(p) if p.segment == timestamp => {
                // The same segment again: a duration update (ignore one that arrives late).
                p.duration = p.duration.max(block.duration);
                p.volume = block.volume;
            }
            Some(p) if p.event == block.event && is_next_segment(p, timestamp) => {
                // RFC 4733 §2.5.1.3: the next segment of a long event.
                p.before += timestamp.wrapping_sub(p.segment);
                p.segment = timestamp;
                p.duration = block.duration;
                p.volume = block.volume;
            }
            Some(p) if not_after(timestamp, p.segment) => return Ok(()), // reordered, older
            slot => {
                if let Some(old) = slot.take() {
                    emit(old.digit());
                }
                *slot = Some(Pending {
                    event: block.event,
                    start: timestamp,
                    segment: timestamp,
                    before: 0,
                    duration: block.duration,
                    volume: block.volume,
                });
            }
        }
        if block.end
            && let Some(p) = self.pending.take()
        {
            self.done = Some(p.segment);
            emit(p.digit());
        }
        Ok(())
    }

    /// Reports the event still in progress, if any (call at the end of the stream or on an SSRC
    /// change: its end packets will not come).
    pub fn finish(&mut self) -> Option<Digit> {
        let p = self.pending.take()?;
        self.done = Some(p.segment);
        Some(p.digit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(event: u8, end: bool, volume: u8, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [event, (u8::from(end) << 7) | volume, d[0], d[1]]
    }

    fn run(packets: &[(u32, [u8; 4])]) -> Vec<Digit> {
        let mut det = DtmfDetector::new();
        let mut out = Vec::new();
        for (ts, p) in packets {
            det.push(*ts, p, |d| out.push(d)).unwrap();
        }
        out.extend(det.finish());
        out
    }

    #[test]
    fn parses_event_block_fields() {
        assert_eq!(
            EventBlock::parse(&[11, 0x8a, 0x03, 0x20, 0xff]).unwrap(),
            EventBlock {
                event: 11,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(EventBlock::parse(&[1, 2, 3]), Err(DtmfError::Short(3)));
    }

    #[test]
    fn one_digit_per_event_with_retransmitted_end_packets() {
        let ts = 160_000;
        let mut packets: Vec<_> = (1..=5u16)
            .map(|i| (ts, packet(5, false, 10, i * 160)))
            .collect();
        packets.extend([(ts, packet(5, true, 10, 960)); 3]);
        // The next key, 1 s later.
        packets.extend([
            (ts + 8000, packet(11, false, 12, 160)),
            (ts + 8000, packet(11, true, 12, 480)),
        ]);
        packets.extend([(ts + 8000, packet(11, true, 12, 480)); 2]);
        let digits = run(&packets);
        assert_eq!(
            digits,
            [
                Digit {
                    event: 5,
                    start: ts,
                    duration: 960,
                    volume: 10
                },
                Digit {
                    event: 11,
                    start: ts + 8000,
                    duration: 480,
                    volume: 12
                }
            ]
        );
        assert_eq!(
            digits
                .iter()
                .map(|d| d.symbol().unwrap())
                .collect::<String>(),
            "5#"
        );
    }

    #[test]
    fn long_event_across_segments_is_one_digit() {
        // 10 s of `0` at 8 kHz = 80,000 units: one full segment of 65,535, then the rest.
        let ts = u32::MAX - 1000; // and across the timestamp wrap
        let mut packets: Vec<_> = (1..=409u16)
            .map(|i| (ts, packet(0, false, 8, i * 160)))
            .collect();
        packets.push((ts, packet(0, false, 8, 65535)));
        let seg2 = ts.wrapping_add(65535);
        packets.extend((1..90u16).map(|i| (seg2, packet(0, false, 8, i * 160))));
        packets.extend([(seg2, packet(0, true, 8, 14465)); 3]);
        assert_eq!(
            run(&packets),
            [Digit {
                event: 0,
                start: ts,
                duration: 80_000,
                volume: 8
            }]
        );
    }

    #[test]
    fn lost_end_packets_reported_when_next_event_starts_or_at_finish() {
        let digits = run(&[
            (1000, packet(1, false, 10, 160)),
            (1000, packet(1, false, 10, 320)),
            (5000, packet(2, false, 10, 160)),
            (5000, packet(2, false, 10, 320)),
        ]);
        assert_eq!(
            digits,
            [
                Digit {
                    event: 1,
                    start: 1000,
                    duration: 320,
                    volume: 10
                },
                Digit {
                    event: 2,
                    start: 5000,
                    duration: 320,
                    volume: 10
                }
            ]
        );
    }

    #[test]
    fn late_packets_of_a_reported_event_are_ignored() {
        let digits = run(&[
            (1000, packet(7, false, 10, 160)),
            (1000, packet(7, true, 10, 640)),
            (1000, packet(7, false, 10, 480)), // reordered update after the end
            (5000, packet(8, true, 10, 400)),  // first seen packet already ends it
            (1000, packet(7, true, 10, 640)),  // end retransmission arriving very late
        ]);
        assert_eq!(
            digits
                .iter()
                .map(|d| (d.event, d.start, d.duration))
                .collect::<Vec<_>>(),
            [(7, 1000, 640), (8, 5000, 400)]
        );
    }

    #[test]
    fn same_key_pressed_twice_is_two_digits() {
        let digits = run(&[
            (1000, packet(3, true, 10, 800)),
            (1000, packet(3, true, 10, 800)),
            (3000, packet(3, false, 10, 160)),
            (3000, packet(3, true, 10, 800)),
        ]);
        assert_eq!(digits.len(), 2);
        assert_eq!((digits[1].start, digits[1].symbol()), (3000, Some('3')));
    }

    #[test]
    fn flash_has_no_symbol() {
        assert_eq!(
            Digit {
                event: 16,
                start: 0,
                duration: 0,
                volume: 0
            }
            .symbol(),
            None
        );
    }
}
