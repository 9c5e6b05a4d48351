//! The retry decision for one recording: a pure state machine, no I/O, no clock.
//!
//! The worker reports what one delivery attempt did ([`Outcome`]) together with `now` and a
//! jitter value it drew; [`Attempts::decide`] answers what to do next ([`Decision`]). Nothing
//! here sends, sleeps or reads time, so the tests below run on simulated instants.
//!
//! It does not decide *which* recording goes next (the worker orders its queue by due time) and
//! it never gives up on trouble that may pass: 5xx, 408, 429, timeouts and connection errors are
//! retried without limit, because a recording is only ever dropped by delivering it.

use std::time::{Duration, Instant};

/// How much of a backoff delay jitter may take off, so recordings that failed together (Tethr
/// down for an hour) do not all come back in the same instant.
const JITTER_FRACTION: f64 = 0.25;

/// What one delivery attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sink has the recording. `call_id` is Tethr's `callId` when the reply carried one.
    Delivered { call_id: Option<String> },
    /// The server answered with a status other than 2xx. `retry_after` is the `Retry-After`
    /// header in delta-seconds form (RFC 9110 §10.2.3), when present.
    HttpStatus { code: u16, retry_after: Option<Duration> },
    /// No answer: connection refused or reset, timeout, TLS failure, or local I/O trouble that
    /// may pass (a full or read-only output disk).
    Transport,
    /// No access token could be had (the token endpoint failed or refused the credentials). The
    /// recording is not at fault, so it waits for the credentials to be fixed.
    TokenUnavailable,
    /// The recording cannot be sent as it is (its info.json or audio.wav is missing); no retry
    /// can change that.
    Unsendable { reason: String },
}

/// What the worker does next with the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delivered: remove it from the spool.
    Done,
    /// Permanently refused: move it to `failed/` with this reason.
    Fail { reason: String },
    /// Keep it in `pending/` and try again at this instant.
    RetryAt(Instant),
    /// Drop the cached token, fetch a new one and try again at once.
    RefreshTokenAndRetry,
}

/// Backoff bounds: the first delay, doubled after each failure up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Cap on any backoff delay (a server's Retry-After may ask for longer and is honoured).
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `failures` (1-based), before jitter.
    fn base_delay(&self, failures: u32) -> Duration {
        // 2^31 × any non-zero initial already exceeds any sane cap; clamping the exponent keeps
        // the multiplication from overflowing.
        let factor = 1u32 << failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// The retry state of one recording.
#[derive(Debug, Clone, Default)]
pub struct Attempts {
    /// Failed attempts since the last success; drives the exponential backoff.
    failures: u32,
    /// Whether the previous attempt was a 401 answered by refreshing the token, so a second
    /// 401 in a row means the credentials themselves are refused.
    refreshed_after_401: bool,
}

impl Attempts {
    /// Decides what follows `outcome`. `jitter` is a value in `[0, 1)` drawn by the caller (the
    /// tests pass fixed values); it shortens a backoff delay by up to a quarter.
    pub fn decide(&mut self, backoff: &Backoff, outcome: &Outcome, now: Instant, jitter: f64) -> Decision {
        let after_401 = std::mem::take(&mut self.refreshed_after_401);
        match outcome {
            Outcome::Delivered { .. } => Decision::Done,
            Outcome::Unsendable { reason } => Decision::Fail { reason: reason.clone() },
            Outcome::Transport | Outcome::TokenUnavailable => self.retry(backoff, None, now, jitter),
            Outcome::HttpStatus { code, retry_after } => match code {
                200..=299 => Decision::Done,
                // §1 of the Tethr facts: a 401 usually means the token was revoked; the SDKs
                // drop it and expect the caller to retry once.
                401 if !after_401 => {
                    self.refreshed_after_401 = true;
                    Decision::RefreshTokenAndRetry
                }
                401 => Decision::Fail {
                    reason: "401 Unauthorized again after a token refresh".into(),
                },
                // RFC 9110 §15.5.9 (408), RFC 6585 §4 (429), §15.6 (5xx): the request may be
                // repeated later.
                408 | 429 | 500..=599 => self.retry(backoff, *retry_after, now, jitter),
                // 403 and other 4xx: the request itself is refused, and sending it again will
                // not change that (§9 of the Tethr facts). 1xx/3xx are not valid final answers
                // to this POST either.
                _ => Decision::Fail {
                    reason: format!("HTTP {code}"),
                },
            },
        }
    }

    /// Failed attempts so far (since the last success).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn retry(&mut self, backoff: &Backoff, retry_after: Option<Duration>, now: Instant, jitter: f64) -> Decision {
        self.failures = self.failures.saturating_add(1);
        let delay = match retry_after {
            // The server said when; honour it exactly, even above our cap.
            Some(after) => after,
            None => {
                let jitter = if jitter.is_finite() {
                    jitter.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                backoff
                    .base_delay(self.failures)
                    .mul_f64(1.0 - JITTER_FRACTION * jitter)
            }
        };
        Decision::RetryAt(now + delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(300),
    };

    /// An arbitrary origin for simulated time; only differences matter.
    fn t0() -> Instant {
        crate::clock::now()
    }

    fn status(code: u16) -> Outcome {
        Outcome::HttpStatus {
            code,
            retry_after: None,
        }
    }

    /// Feeds `outcome` `n` times on simulated time, each retry happening exactly when asked,
    /// and returns the delays between attempts.
    fn delays(attempts: &mut Attempts, outcome: &Outcome, n: usize, jitter: f64) -> Vec<Duration> {
        let mut now = t0();
        (0..n)
            .map(|_| match attempts.decide(&BACKOFF, outcome, now, jitter) {
                Decision::RetryAt(at) => {
                    let delay = at - now;
                    now = at;
                    delay
                }
                other => panic!("expected a retry, got {other:?}"),
            })
            .collect()
    }

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn backoff_doubles_then_caps_at_retry_max() {
        let got = delays(&mut Attempts::default(), &Outcome::Transport, 12, 0.0);
        assert_eq!(got, secs(&[1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]));
    }

    #[test]
    fn server_errors_back_off_like_transport_errors() {
        let got = delays(&mut Attempts::default(), &status(503), 4, 0.0);
        assert_eq!(got, secs(&[1, 2, 4, 8]));
    }

    #[test]
    fn jitter_shortens_by_at_most_a_quarter_and_never_exceeds_the_cap() {
        let got = delays(&mut Attempts::default(), &Outcome::Transport, 11, 0.999_999);
        for (delay, base) in got.iter().zip(secs(&[1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300])) {
            assert!(*delay <= base && *delay >= base.mul_f64(0.75), "{delay:?} vs {base:?}");
            assert!(*delay < base, "jitter 0.999 must shorten {base:?}");
        }
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        assert_eq!(
            delays(&mut Attempts::default(), &Outcome::Transport, 1, f64::NAN),
            secs(&[1])
        );
        assert_eq!(
            delays(&mut Attempts::default(), &Outcome::Transport, 1, 7.0),
            vec![Duration::from_millis(750)]
        );
    }

    #[test]
    fn retry_after_is_honoured_even_above_the_cap() {
        let mut a = Attempts::default();
        let ask = |secs| Outcome::HttpStatus {
            code: 429,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(delays(&mut a, &ask(7), 1, 0.5), secs(&[7]));
        assert_eq!(delays(&mut a, &ask(3600), 1, 0.5), secs(&[3600]));
        // Without the header a 429 backs off from where the failures left it (third failure).
        assert_eq!(delays(&mut a, &status(429), 1, 0.0), secs(&[4]));
    }

    #[test]
    fn retry_after_on_503_is_honoured() {
        let outcome = Outcome::HttpStatus {
            code: 503,
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(delays(&mut Attempts::default(), &outcome, 1, 0.0), secs(&[30]));
    }

    #[test]
    fn first_401_refreshes_the_token_and_a_second_in_a_row_fails() {
        let now = t0();
        let mut a = Attempts::default();
        assert_eq!(
            a.decide(&BACKOFF, &status(401), now, 0.0),
            Decision::RefreshTokenAndRetry
        );
        assert!(matches!(
            a.decide(&BACKOFF, &status(401), now, 0.0),
            Decision::Fail { .. }
        ));
    }

    #[test]
    fn a_401_after_other_trouble_refreshes_again() {
        let now = t0();
        let mut a = Attempts::default();
        assert_eq!(
            a.decide(&BACKOFF, &status(401), now, 0.0),
            Decision::RefreshTokenAndRetry
        );
        assert!(matches!(
            a.decide(&BACKOFF, &status(503), now, 0.0),
            Decision::RetryAt(_)
        ));
        assert_eq!(
            a.decide(&BACKOFF, &status(401), now, 0.0),
            Decision::RefreshTokenAndRetry
        );
    }

    #[test]
    fn client_errors_and_403_fail_without_retry() {
        let now = t0();
        for code in [400, 403, 404, 409, 413, 415, 422, 302] {
            let decision = Attempts::default().decide(&BACKOFF, &status(code), now, 0.0);
            assert_eq!(
                decision,
                Decision::Fail {
                    reason: format!("HTTP {code}")
                },
                "status {code}"
            );
        }
    }

    #[test]
    fn request_timeout_408_is_retried() {
        assert_eq!(delays(&mut Attempts::default(), &status(408), 1, 0.0), secs(&[1]));
    }

    #[test]
    fn token_trouble_is_retried_not_failed() {
        assert_eq!(
            delays(&mut Attempts::default(), &Outcome::TokenUnavailable, 3, 0.0),
            secs(&[1, 2, 4])
        );
    }

    #[test]
    fn delivered_is_done_and_unsendable_fails() {
        let now = t0();
        let mut a = Attempts::default();
        let _ = delays(&mut a, &Outcome::Transport, 3, 0.0);
        let delivered = Outcome::Delivered {
            call_id: Some("bbsnbcbe3".into()),
        };
        assert_eq!(a.decide(&BACKOFF, &delivered, now, 0.0), Decision::Done);
        let unsendable = Outcome::Unsendable {
            reason: "info.json missing".into(),
        };
        assert_eq!(
            a.decide(&BACKOFF, &unsendable, now, 0.0),
            Decision::Fail {
                reason: "info.json missing".into()
            }
        );
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let b = Backoff {
            initial: Duration::from_secs(u64::MAX / 2),
            max: Duration::from_secs(300),
        };
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(300));
    }
}
