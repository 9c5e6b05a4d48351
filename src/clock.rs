//! The one place that reads the clocks.
//!
//! Protocol cores never read time themselves: the runtime reads it here and passes it in as a
//! value (`Instant` for intervals and deadlines, `SystemTime` for the wall-clock timestamps that
//! end up in `info`). `clippy.toml` forbids `Instant::now`/`SystemTime::now` everywhere else.

use std::time::{Instant, SystemTime};

/// Monotonic now, for deadlines and durations.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock now, for timestamps reported to operators and to Tethr.
#[allow(clippy::disallowed_methods)]
pub fn wall_now() -> SystemTime {
    SystemTime::now()
}

/// A pair of readings taken together, so a monotonic instant can be turned into wall time.
#[derive(Debug, Clone, Copy)]
pub struct Epoch {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Epoch {
    pub fn now() -> Self {
        Epoch { mono: now(), wall: wall_now() }
    }

    /// Wall time of a monotonic instant (saturating at the epoch for instants before it).
    pub fn wall_of(&self, t: Instant) -> SystemTime {
        match t.checked_duration_since(self.mono) {
            Some(d) => self.wall + d,
            None => self.wall - self.mono.duration_since(t),
        }
    }
}
