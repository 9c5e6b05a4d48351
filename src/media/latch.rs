//! RTP source latching, pure: a stream takes its packets from the first source address it
//! hears (NAT-friendly: the SRC's advertised address is not trusted), and ignores every other
//! source, so nobody can inject audio into a recording by guessing its port. Only when the
//! latched source has been silent for `media.relatch_after` (an SBC failover to its mate) does
//! another source take over. Time comes in as an argument; the media thread logs the verdicts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the latched source: use it.
    Accept,
    /// The stream's first packet: latched to its source now.
    Latched,
    /// The latched source was silent for `relatch_after`; this new source took over from `from`.
    Relatched { from: SocketAddr },
    /// From another source while the latched one is alive: ignore it (counted).
    Foreign,
}

/// The latch of one stream.
#[derive(Debug, Clone)]
pub struct Latch {
    /// The source and when it was last heard.
    source: Option<(SocketAddr, Instant)>,
    foreign: u64,
    /// Silence of the latched source after which another source may take over.
    relatch_after: Duration,
}

impl Latch {
    pub fn new(relatch_after: Duration) -> Self {
        Latch { source: None, foreign: 0, relatch_after }
    }

    /// Judges a packet from `from` arriving at `now`.
    pub fn admit(&mut self, from: SocketAddr, now: Instant) -> Verdict {
        let relatch_after = self.relatch_after;
        match &mut self.source {
            None => {
                self.source = Some((from, now));
                Verdict::Latched
            }
            Some((src, last)) if *src == from => {
                *last = now;
                Verdict::Accept
            }
            Some((src, last)) if now.saturating_duration_since(*last) >= relatch_after => {
                let old = *src;
                *src = from;
                *last = now;
                Verdict::Relatched { from: old }
            }
            Some(_) => {
                self.foreign += 1;
                Verdict::Foreign
            }
        }
    }

    /// Cache hints for [`Latch::admit`] (`media::prefetch`).
    pub fn prefetch(&self) {
        crate::media::prefetch::read(&self.source);
        crate::media::prefetch::read(&self.foreign);
        crate::media::prefetch::read(&self.relatch_after);
    }

    /// Forgets the source, so the next packet latches (a re-INVITE moved the SRC's address:
    /// waiting `relatch_after` would cost audio). The foreign count is kept.
    pub fn reset(&mut self) {
        self.source = None;
    }

    /// Packets ignored because they came from another source than the latched one.
    pub fn foreign(&self) -> u64 {
        self.foreign
    }

    /// The source the stream is latched to.
    pub fn source(&self) -> Option<SocketAddr> {
        self.source.map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELATCH: Duration = Duration::from_secs(2);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_source_latches_and_others_are_ignored_while_it_speaks() {
        let mut latch = Latch::new(RELATCH);
        let t0 = crate::clock::now();
        let (sbc, intruder) = (addr("192.0.2.1:4000"), addr("203.0.113.9:4000"));
        assert_eq!(latch.admit(sbc, t0), Verdict::Latched);
        for i in 1..=50u32 {
            let t = t0 + Duration::from_millis(20) * i;
            assert_eq!(latch.admit(intruder, t), Verdict::Foreign);
            assert_eq!(latch.admit(sbc, t), Verdict::Accept);
        }
        assert_eq!(latch.foreign(), 50);
        assert_eq!(latch.source(), Some(sbc));
    }

    #[test]
    fn another_port_of_the_same_host_is_another_source() {
        let mut latch = Latch::new(RELATCH);
        let t0 = crate::clock::now();
        latch.admit(addr("192.0.2.1:4000"), t0);
        assert_eq!(latch.admit(addr("192.0.2.1:4002"), t0), Verdict::Foreign);
    }

    #[test]
    fn failover_relatches_after_the_latched_source_fell_silent() {
        let mut latch = Latch::new(RELATCH);
        let t0 = crate::clock::now();
        let (primary, mate) = (addr("192.0.2.1:4000"), addr("192.0.2.2:4000"));
        latch.admit(primary, t0);
        assert_eq!(latch.admit(mate, t0 + RELATCH - Duration::from_millis(1)), Verdict::Foreign);
        assert_eq!(latch.admit(mate, t0 + RELATCH), Verdict::Relatched { from: primary });
        // Now the old source is the foreign one.
        assert_eq!(latch.admit(primary, t0 + RELATCH + Duration::from_millis(20)), Verdict::Foreign);
        assert_eq!(latch.admit(mate, t0 + RELATCH + Duration::from_millis(20)), Verdict::Accept);
        assert_eq!(latch.foreign(), 2);
    }
}
