//! RTP port allocation from the configured range (sans-IO).
//!
//! Hands out even ports (RTP) whose odd neighbour carries RTCP, round-robin so a port just
//! released is not reused at once (late packets of an ended call must not land in a new one).
//! Whether a port can really be bound is the runtime's to find out: it asks for candidates until
//! one binds and reports which it took.

use std::collections::HashSet;

use crate::config::PortRange;

/// Allocator state.
#[derive(Debug)]
pub struct PortAllocator {
    first: u16,
    last: u16,
    next: u16,
    in_use: HashSet<u16>,
}

impl PortAllocator {
    pub fn new(range: PortRange) -> Self {
        let first = range.first + (range.first % 2);
        PortAllocator { first, last: range.last, next: first, in_use: HashSet::new() }
    }

    /// Even ports with a free odd neighbour inside the range that are not in use.
    pub fn capacity(&self) -> usize {
        usize::from(self.last.saturating_sub(self.first)).div_ceil(2)
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// Free candidates in round-robin order, at most one full turn of the range.
    pub fn candidates(&self) -> impl Iterator<Item = u16> + '_ {
        let n = self.capacity();
        let start = usize::from((self.next - self.first) / 2);
        (0..n)
            .map(move |i| self.first + (((start + i) % n) * 2) as u16)
            .filter(move |p| !self.in_use.contains(p) && *p < self.last)
    }

    /// Marks `port` (and port+1) as taken.
    pub fn take(&mut self, port: u16) {
        self.in_use.insert(port);
        let next = port.saturating_add(2);
        self.next = if next >= self.last { self.first } else { next };
    }

    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_ports_round_robin_and_release() {
        let mut a = PortAllocator::new(PortRange { first: 20001, last: 20009 });
        assert_eq!(a.candidates().collect::<Vec<_>>(), vec![20002, 20004, 20006, 20008]);
        a.take(20002);
        a.take(20004);
        assert_eq!(a.candidates().next(), Some(20006));
        a.release(20002);
        assert_eq!(a.candidates().collect::<Vec<_>>(), vec![20006, 20008, 20002]);
        a.take(20006);
        a.take(20008);
        a.take(20002);
        assert_eq!(a.candidates().next(), None);
    }
}
