//! Admission-control building blocks, pure: the source allow-list (CIDR blocks), a per-source
//! gate that lets one log line through per interval (so a flood cannot flood the log), and the
//! per-source connection count. The runtime decides when to consult them; nothing here does
//! I/O or reads the clock (time comes in as an argument).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};

/// How often one source may cause a refusal log line.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// An address block, `"192.0.2.0/24"`, `"2001:db8::/32"`, or a bare address (a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True when `ip` lies in the block. An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, as
    /// a dual-stack socket reports IPv4 peers) is matched as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }
}

/// True when the first `prefix` bits of `a` and `b` are equal.
fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[whole] & mask) == (b[whole] & mask)
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| format!("`{s}` is not an address or ADDRESS/PREFIX"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("`{s}`: prefix must be 0-{max}"))?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The sources that may open sessions (`limits.allow_from`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowList {
    blocks: Vec<Cidr>,
}

impl AllowList {
    /// `None` when `blocks` is empty: everyone is allowed, there is no list to consult.
    pub fn new(blocks: &[Cidr]) -> Option<AllowList> {
        (!blocks.is_empty()).then(|| AllowList { blocks: blocks.to_vec() })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }
}

/// Lets one log line per source through per [`LOG_INTERVAL`]; counts what it held back, so
/// the line that goes through can say how many refusals it stands for.
#[derive(Debug, Default)]
pub struct LogGate {
    /// Per source: when its last line went out, and refusals since.
    last: HashMap<IpAddr, (Instant, u64)>,
}

/// Sources remembered before old entries are swept (bounds memory under a spoofed flood).
const GATE_SWEEP: usize = 4096;

impl LogGate {
    /// `Some(n)` when a line for `source` may be written now; `n` refusals were held back since
    /// the previous line. `None`: stay quiet.
    pub fn admit(&mut self, source: IpAddr, now: Instant) -> Option<u64> {
        if self.last.len() >= GATE_SWEEP {
            self.last.retain(|_, (t, _)| now.saturating_duration_since(*t) < LOG_INTERVAL);
        }
        match self.last.get_mut(&source) {
            Some((t, held)) if now.saturating_duration_since(*t) < LOG_INTERVAL => {
                *held += 1;
                None
            }
            Some((t, held)) => {
                let n = *held;
                *t = now;
                *held = 0;
                Some(n)
            }
            None => {
                self.last.insert(source, (now, 0));
                Some(0)
            }
        }
    }
}

/// Open stream connections per source, against `limits.max_connections_per_source`.
#[derive(Debug)]
pub struct ConnectionCount {
    max: usize,
    open: HashMap<IpAddr, usize>,
}

impl ConnectionCount {
    pub fn new(max: usize) -> Self {
        ConnectionCount { max, open: HashMap::new() }
    }

    /// Counts a new connection from `source`; false (and not counted) when it already has
    /// the most allowed.
    pub fn try_open(&mut self, source: IpAddr) -> bool {
        let n = self.open.entry(source).or_insert(0);
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    /// A connection counted by [`ConnectionCount::try_open`] closed.
    pub fn close(&mut self, source: IpAddr) {
        if let Some(n) = self.open.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open.remove(&source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks_match_their_addresses_only() {
        let net: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(net.contains(ip("192.0.2.77")));
        assert!(!net.contains(ip("192.0.3.1")));
        assert!(net.contains(ip("::ffff:192.0.2.9")), "an IPv4-mapped peer is its IPv4 address");
        let odd: Cidr = "10.1.128.0/17".parse().unwrap();
        assert!(odd.contains(ip("10.1.200.1")));
        assert!(!odd.contains(ip("10.1.127.255")));
        let host: Cidr = "::1".parse().unwrap();
        assert!(host.contains(ip("::1")) && !host.contains(ip("::2")) && !host.contains(ip("127.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.5")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
    }

    #[test]
    fn bad_cidrs_are_refused_with_the_text() {
        for bad in ["192.0.2.0/33", "2001:db8::/129", "example.com", "1.2.3.4/x", ""] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.contains(bad.trim()), "{e}");
        }
    }

    #[test]
    fn empty_allow_list_means_everyone() {
        assert!(AllowList::new(&[]).is_none());
        let list = AllowList::new(&["192.0.2.0/24".parse().unwrap(), "::1".parse().unwrap()]).unwrap();
        assert!(list.contains(ip("::1")) && list.contains(ip("192.0.2.1")) && !list.contains(ip("127.0.0.1")));
    }

    #[test]
    fn log_gate_lets_one_line_per_source_per_interval() {
        let mut gate = LogGate::default();
        let t0 = crate::clock::now();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        assert_eq!(gate.admit(a, t0), Some(0));
        assert_eq!(gate.admit(b, t0), Some(0), "another source has its own budget");
        for i in 1..100 {
            assert_eq!(gate.admit(a, t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(gate.admit(a, t0 + LOG_INTERVAL), Some(99), "the next line counts what was held back");
        assert_eq!(gate.admit(a, t0 + LOG_INTERVAL + Duration::from_secs(1)), None);
    }

    #[test]
    fn connection_count_caps_each_source() {
        let mut c = ConnectionCount::new(2);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        assert!(c.try_open(a) && c.try_open(a));
        assert!(!c.try_open(a), "third connection from one source");
        assert!(c.try_open(b));
        c.close(a);
        assert!(c.try_open(a), "a closed connection frees its place");
    }
}
