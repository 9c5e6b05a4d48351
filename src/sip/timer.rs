//! RFC 4028 session timers, the UAS side: what a request asks for, what we answer, and when a
//! session whose refreshes stopped is over.
//!
//! Pure functions and values; the endpoint keeps one [`Running`] timer per dialog and turns its
//! deadlines into a refresh UPDATE (when we are the refresher) or `Event::SessionExpired`
//! (when the SRC is and its refresh never came). Nothing here sends or reads the clock.

use std::time::{Duration, Instant};

use super::message::{self, Message};

/// The smallest session interval we accept, in seconds: RFC 4028 §4's floor. A request asking
/// for less is answered 422 with `Min-SE: 90`. Not configurable: there is no reason for an
/// SRS to ask SRCs for rarer refreshes.
pub const MIN_SE: u32 = 90;

/// Who sends the refreshes (RFC 4028 §4 `refresher` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The SRC (the UAC of the dialog-creating INVITE).
    Uac,
    /// The gateway.
    Uas,
}

impl Refresher {
    fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// The session timer agreed for a dialog by one INVITE or UPDATE transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// Session interval in seconds.
    pub interval: u32,
    pub refresher: Refresher,
    /// The UAC listed `timer` in Supported or Require.
    pub uac_supports: bool,
}

/// The request's Session-Expires is below [`MIN_SE`]: answer 422 with `Min-SE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSmall;

/// Reads Session-Expires (compact `x`), its `refresher` and Supported/Require `timer` from a
/// request (RFC 4028 §9). `Ok(None)`: no session timer for this transaction (no
/// Session-Expires, or one we cannot read: leniency costs nothing here, RTP timeouts still end
/// dead calls). We never shorten the interval and never ask for a timer the UAC did not ask
/// for. The refresher is the one the request names; else the SRC when it supports timers (it
/// is the side that knows whether the call is alive); else us, since a UAC without the
/// extension cannot refresh (§9).
pub fn negotiate(request: &Message) -> Result<Option<Agreed>, TooSmall> {
    let Some(value) = request.header("Session-Expires") else { return Ok(None) };
    let (seconds, params) = value.split_once(';').map_or((value, ""), |(s, p)| (s, p));
    let Ok(interval) = seconds.trim().parse::<u32>() else { return Ok(None) };
    if interval < MIN_SE {
        return Err(TooSmall);
    }
    let uac_supports = request
        .option_tags("Supported")
        .chain(request.option_tags("Require"))
        .any(|t| t.eq_ignore_ascii_case("timer"));
    let asked = message::param(&format!(";{params}"), "refresher").map(str::to_ascii_lowercase);
    let refresher = match asked.as_deref() {
        _ if !uac_supports => Refresher::Uas,
        Some("uas") => Refresher::Uas,
        _ => Refresher::Uac,
    };
    Ok(Some(Agreed { interval, refresher, uac_supports }))
}

impl Agreed {
    /// The headers of the 2xx that confirms this timer (RFC 4028 §9): Session-Expires with the
    /// refresher, and `Require: timer` whenever the UAC understands it (a MUST when the UAC
    /// refreshes).
    pub fn response_headers(&self) -> Vec<(String, String)> {
        let mut h = vec![(
            "Session-Expires".to_string(),
            format!("{};refresher={}", self.interval, self.refresher.as_str()),
        )];
        if self.uac_supports {
            h.push(("Require".to_string(), "timer".to_string()));
        }
        h
    }

    /// The Session-Expires value of a refresh we send ourselves.
    pub fn refresh_header(&self) -> String {
        format!("{};refresher=uas", self.interval)
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.interval))
    }
}

/// A dialog's session timer since its last successful refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    pub agreed: Agreed,
    /// When the 2xx of the last refresh (or of the INVITE) was sent or received.
    pub since: Instant,
    /// Our refresh is in flight (refresher = UAS).
    pub refreshing: bool,
}

impl Running {
    pub fn start(agreed: Agreed, now: Instant) -> Running {
        Running { agreed, since: now, refreshing: false }
    }

    /// The next instant this timer has work, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.agreed.refresher {
            Refresher::Uac => Some(self.give_up_at()),
            Refresher::Uas if self.refreshing => None,
            Refresher::Uas => Some(self.refresh_at()),
        }
    }

    /// When the side that does not refresh ends the session (RFC 4028 §10): before the
    /// expiry, by the smaller of 32 s and a third of the interval.
    pub fn give_up_at(&self) -> Instant {
        let interval = self.agreed.interval();
        self.since + interval - (interval / 3).min(Duration::from_secs(32))
    }

    /// When we refresh as the refresher: half the interval (RFC 4028 §10 recommends it).
    pub fn refresh_at(&self) -> Instant {
        self.since + self.agreed.interval() / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &str) -> Message {
        let text = format!(
            "INVITE sip:srs@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-t\r\n\
From: <sip:src@192.0.2.1>;tag=a\r\nTo: <sip:srs@192.0.2.10>\r\nCall-ID: t1\r\nCSeq: 1 INVITE\r\n{extra}\
Content-Length: 0\r\n\r\n"
        );
        Message::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn src_supporting_timers_refreshes_unless_it_names_us() {
        let a = negotiate(&request("Supported: timer\r\nSession-Expires: 1800\r\n")).unwrap().unwrap();
        assert_eq!((a.interval, a.refresher), (1800, Refresher::Uac));
        assert_eq!(a.response_headers()[0].1, "1800;refresher=uac");
        assert_eq!(a.response_headers()[1], ("Require".to_string(), "timer".to_string()));
        let a = negotiate(&request("k: timer\r\nx: 600;refresher=uas\r\n")).unwrap().unwrap();
        assert_eq!((a.interval, a.refresher), (600, Refresher::Uas));
    }

    #[test]
    fn src_without_timer_support_leaves_the_refreshes_to_us_without_require() {
        let a = negotiate(&request("Session-Expires: 300;refresher=uac\r\n")).unwrap().unwrap();
        assert_eq!(a.refresher, Refresher::Uas);
        assert_eq!(a.response_headers().len(), 1, "no Require: timer for a UAC without the extension");
    }

    #[test]
    fn interval_below_min_se_is_too_small_and_none_asked_is_none() {
        assert_eq!(negotiate(&request("Session-Expires: 89\r\n")), Err(TooSmall));
        assert_eq!(negotiate(&request("Supported: timer\r\n")), Ok(None));
        assert_eq!(negotiate(&request("Session-Expires: soon\r\n")), Ok(None));
    }

    #[test]
    fn deadlines_follow_rfc4028_section_10() {
        let t0 = crate::clock::now();
        let uac = Agreed { interval: 1800, refresher: Refresher::Uac, uac_supports: true };
        // 1800 s: give up 32 s before the expiry. 90 s: a third of it, 30 s, before.
        assert_eq!(Running::start(uac, t0).give_up_at() - t0, Duration::from_secs(1768));
        let short = Agreed { interval: 90, ..uac };
        assert_eq!(Running::start(short, t0).next_deadline(), Some(t0 + Duration::from_secs(60)));
        let uas = Agreed { refresher: Refresher::Uas, ..uac };
        let mut r = Running::start(uas, t0);
        assert_eq!(r.next_deadline(), Some(t0 + Duration::from_secs(900)));
        r.refreshing = true;
        assert_eq!(r.next_deadline(), None);
    }
}
