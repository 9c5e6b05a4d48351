//! RFC 3261 §17.1 client-transaction retransmission schedule, as pure arithmetic on offsets from
//! the first transmission. The async driver (`session`) turns offsets into deadlines; this module
//! never reads a clock.

use std::time::Duration;

/// RFC 3261 §17.1.1.1: RTT estimate.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.2.2: cap on the non-INVITE retransmit interval.
pub const T2: Duration = Duration::from_secs(4);
/// Timer B / Timer F: 64·T1, after which the transaction gives up.
pub const GIVE_UP: Duration = Duration::from_secs(32);

/// When the next retransmission of one request is due.
#[derive(Debug, Clone)]
pub struct Retransmit {
    invite: bool,
    proceeding: bool,
    interval: Duration,
    next: Option<Duration>,
}

impl Retransmit {
    /// Over a reliable transport nothing is retransmitted (RFC 3261 §17.1.1.2, §17.1.2.2).
    pub fn new(invite: bool, reliable: bool) -> Retransmit {
        Retransmit {
            invite,
            proceeding: false,
            interval: T1,
            next: (!reliable).then_some(T1),
        }
    }

    /// Offset of the next retransmission, if any is due before giving up.
    pub fn next(&self) -> Option<Duration> {
        self.next.filter(|n| *n < GIVE_UP)
    }

    /// The retransmission at `next()` has been sent. Timer A doubles without bound; Timer E
    /// doubles up to T2, and stays at T2 once a provisional response arrived.
    pub fn fired(&mut self) {
        self.interval = if self.invite {
            self.interval * 2
        } else if self.proceeding {
            T2
        } else {
            (self.interval * 2).min(T2)
        };
        self.next = self.next.map(|n| n + self.interval);
    }

    /// A 1xx arrived: an INVITE stops retransmitting (§17.1.1.2 "Proceeding"), a non-INVITE
    /// continues every T2 (§17.1.2.2).
    pub fn provisional(&mut self) {
        self.proceeding = true;
        if self.invite {
            self.next = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firings(mut r: Retransmit, provisional_after: Option<usize>) -> Vec<f64> {
        let mut out = Vec::new();
        while let Some(n) = r.next() {
            out.push(n.as_secs_f64());
            r.fired();
            if provisional_after == Some(out.len()) {
                r.provisional();
            }
        }
        out
    }

    #[test]
    fn invite_over_udp_retransmits_on_timer_a_until_32_s() {
        assert_eq!(
            firings(Retransmit::new(true, false), None),
            [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
        );
    }

    #[test]
    fn invite_stops_retransmitting_after_a_provisional() {
        assert_eq!(firings(Retransmit::new(true, false), Some(2)), [0.5, 1.5]);
    }

    #[test]
    fn bye_over_udp_retransmits_on_timer_e_capped_at_t2() {
        assert_eq!(
            firings(Retransmit::new(false, false), None),
            [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        );
    }

    #[test]
    fn non_invite_in_proceeding_retransmits_every_t2() {
        assert_eq!(
            firings(Retransmit::new(false, false), Some(1))[..4],
            [0.5, 1.5, 5.5, 9.5]
        );
    }

    #[test]
    fn nothing_is_retransmitted_over_tcp() {
        assert_eq!(Retransmit::new(true, true).next(), None);
        assert_eq!(Retransmit::new(false, true).next(), None);
    }
}
