//! The delivery decision for one recording: a pure state machine, no I/O, no clock.
//!
//! The worker asks [`Attempts::next_request`] what to send (an upload, or first a `/status`
//! query), reports what that request did ([`Outcome`]) together with `now` and a jitter value it
//! drew, and [`Attempts::decide`] answers what to do next ([`Decision`]). Nothing here sends,
//! sleeps or reads time, so the tests below run on simulated instants.
//!
//! The rule that keeps a flaky network from creating duplicate calls in Tethr: after an upload
//! whose body may have reached Tethr without an answer (a timeout, a connection closed after
//! sending, a 5xx), the next attempt first asks `POST /callCapture/v1/status` for the session;
//! only `NotFound` (or a reply that does not list the session) leads to sending it again
//! (tethr-api-facts §9, §11.4). A recording resumed from a previous run with attempts on record
//! is treated the same way, since that run may have died mid-upload.
//!
//! It does not decide *which* recording goes next (the worker orders its queue by due time). It
//! never gives up on trouble that may pass (5xx, 408, 429, timeouts, connection errors) except
//! when the optional maximum age is reached.

use std::time::{Duration, Instant, SystemTime};

use crate::clock::Epoch;

/// How much of a backoff delay jitter may take off, so recordings that failed together (Tethr
/// down for an hour) do not all come back in the same instant.
const JITTER_FRACTION: f64 = 0.25;

/// Which request the worker sends next for a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `POST /callCapture/v1/status` for the recording's sessionId.
    Status,
    /// The archive upload (or the copy, for the local sink).
    Upload,
}

/// What Tethr's `/status` said about the recording's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatus {
    /// `NotFound`, or the session is absent from the reply: Tethr does not have it.
    NotFound,
    /// `Excluded`: Tethr was told not to take this session; nothing is to be sent.
    Excluded,
    /// Any other status (`InProgress`, `Concluded`, `Complete`, or one we do not know): the call
    /// reached Tethr.
    Received {
        /// The status as Tethr spelled it.
        status: String,
        /// Tethr's callId, when the reply carried one.
        call_id: Option<String>,
    },
}

/// What one request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sink has the recording. `call_id` is Tethr's `callId` when the reply carried one.
    Delivered { call_id: Option<String> },
    /// The answer to a `/status` query about the recording's session.
    Status(SessionStatus),
    /// The server answered with a status other than 2xx. `retry_after` is the `Retry-After`
    /// header in delta-seconds form (RFC 9110 §10.2.3), when present.
    HttpStatus { code: u16, retry_after: Option<Duration> },
    /// No answer: timeout, connection reset, TLS failure, or local I/O trouble that may pass.
    /// `maybe_sent` is false only when the request certainly never left (the connection was
    /// never established).
    Transport { maybe_sent: bool },
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
    /// Tethr has it (from the upload's answer or from `/status`): it is delivered.
    Done,
    /// Tethr excluded the session: done, nothing to send.
    Excluded,
    /// `/status` said Tethr does not have it: upload now.
    Upload,
    /// Permanently refused, or too old: move it to `failed/` with this reason.
    Fail { reason: String },
    /// Keep it in `pending/` and try again at this instant.
    RetryAt(Instant),
    /// Drop the cached token, fetch a new one and send the same request again at once.
    RefreshTokenAndRetry,
    /// The credentials are refused (403, or 401 after a new token): keep it in `pending/` and
    /// make no attempt until the credentials are reloaded or the process restarts.
    Stop { reason: String },
}

/// Retry bounds: the first delay, doubled after each failure up to `max`, and an optional age
/// after which a recording still not delivered is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Cap on any backoff delay (a server's Retry-After may ask for longer and is honoured).
    pub max: Duration,
    /// Time since the first attempt after which a failure moves the recording to `failed/`
    /// instead of scheduling another attempt. None: never.
    pub max_age: Option<Duration>,
}

impl RetryPolicy {
    /// The delay before retry number `failures` (1-based), before jitter.
    fn base_delay(&self, failures: u32) -> Duration {
        // 2^31 × any non-zero initial already exceeds any sane cap; clamping the exponent keeps
        // the multiplication from overflowing.
        let factor = 1u32 << failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// The delivery state of one recording.
#[derive(Debug, Clone, Default)]
pub struct Attempts {
    /// Failed requests since the last success; drives the exponential backoff.
    failures: u32,
    /// Whether the previous request was answered 401 and the token refreshed, so a second 401
    /// in a row means the credentials themselves are refused.
    refreshed_after_401: bool,
    /// An upload may have reached Tethr without an answer: ask `/status` before sending again.
    unconfirmed: bool,
    /// Wall time of the first attempt; the maximum age counts from here.
    first_attempt: Option<SystemTime>,
}

impl Attempts {
    /// The state of a recording a previous run already tried `attempts` times, first at
    /// `first_attempt` (from its `state.json`). Such a run may have died mid-upload, so the
    /// first request is a `/status` query.
    pub fn resumed(attempts: u32, first_attempt: Option<SystemTime>) -> Attempts {
        Attempts {
            failures: attempts,
            refreshed_after_401: false,
            unconfirmed: attempts > 0,
            first_attempt,
        }
    }

    /// The request to send next.
    pub fn next_request(&self) -> Request {
        if self.unconfirmed { Request::Status } else { Request::Upload }
    }

    /// Failed requests so far (since the last success).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Wall time of the first attempt, once one was decided on.
    pub fn first_attempt(&self) -> Option<SystemTime> {
        self.first_attempt
    }

    /// Decides what follows `outcome` of `request`. `jitter` is a value in `[0, 1)` drawn by the
    /// caller (the tests pass fixed values); it shortens a backoff delay by up to a quarter.
    pub fn decide(
        &mut self,
        policy: &RetryPolicy,
        request: Request,
        outcome: &Outcome,
        now: Epoch,
        jitter: f64,
    ) -> Decision {
        self.first_attempt.get_or_insert(now.wall);
        let after_401 = std::mem::take(&mut self.refreshed_after_401);
        match outcome {
            Outcome::Delivered { .. } => Decision::Done,
            Outcome::Status(SessionStatus::NotFound) => {
                self.unconfirmed = false;
                Decision::Upload
            }
            Outcome::Status(SessionStatus::Excluded) => Decision::Excluded,
            Outcome::Status(SessionStatus::Received { .. }) => Decision::Done,
            Outcome::Unsendable { reason } => Decision::Fail { reason: reason.clone() },
            Outcome::Transport { maybe_sent } => {
                if request == Request::Upload && *maybe_sent {
                    self.unconfirmed = true;
                }
                self.retry(policy, None, now, jitter)
            }
            Outcome::TokenUnavailable => self.retry(policy, None, now, jitter),
            Outcome::HttpStatus { code, retry_after } => match code {
                // A 2xx without a usable body: Tethr took it; sending again would duplicate it.
                200..=299 => Decision::Done,
                // tethr-api-facts §1: a 401 usually means the token was revoked; the SDKs drop
                // it and expect the caller to retry once.
                401 if !after_401 => {
                    self.refreshed_after_401 = true;
                    Decision::RefreshTokenAndRetry
                }
                401 => Decision::Stop {
                    reason: "Tethr answered 401 again with a new token: the credentials are refused".into(),
                },
                // §9: the API user lacks a role or feature; nothing changes until it is reconfigured.
                403 => Decision::Stop {
                    reason: "Tethr answered 403 Forbidden: the API user lacks permission".into(),
                },
                // RFC 9110 §15.5.9 (408), RFC 6585 §4 (429): the request was not processed and
                // may be repeated later.
                408 | 429 => self.retry(policy, *retry_after, now, jitter),
                // RFC 9110 §15.6: a 5xx after the body was sent may still have stored it.
                500..=599 => {
                    if request == Request::Upload {
                        self.unconfirmed = true;
                    }
                    self.retry(policy, *retry_after, now, jitter)
                }
                // The status endpoint is refused or missing on this instance: whether Tethr has
                // the call cannot be learnt, and holding it forever would lose it, so it is sent.
                _ if request == Request::Status => {
                    self.unconfirmed = false;
                    Decision::Upload
                }
                // Other 4xx: the request itself is refused, and sending it again will not change
                // that (§9). 1xx/3xx are not valid final answers to this POST either.
                _ => Decision::Fail {
                    reason: format!("HTTP {code}"),
                },
            },
        }
    }

    fn retry(&mut self, policy: &RetryPolicy, retry_after: Option<Duration>, now: Epoch, jitter: f64) -> Decision {
        self.failures = self.failures.saturating_add(1);
        if let (Some(max_age), Some(first)) = (policy.max_age, self.first_attempt) {
            let age = now.wall.duration_since(first).unwrap_or_default();
            if age >= max_age {
                return Decision::Fail {
                    reason: format!(
                        "not delivered within max_age ({}s) after {} failed attempts",
                        max_age.as_secs(),
                        self.failures
                    ),
                };
            }
        }
        let delay = match retry_after {
            // The server said when; honour it exactly, even above our cap.
            Some(after) => after,
            None => {
                let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
                policy.base_delay(self.failures).mul_f64(1.0 - JITTER_FRACTION * jitter)
            }
        };
        Decision::RetryAt(now.mono + delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(300),
        max_age: None,
    };

    /// An arbitrary origin for simulated time; only differences matter.
    fn t0() -> Epoch {
        Epoch::now()
    }

    fn later(now: Epoch, by: Duration) -> Epoch {
        Epoch {
            mono: now.mono + by,
            wall: now.wall + by,
        }
    }

    fn status(code: u16) -> Outcome {
        Outcome::HttpStatus {
            code,
            retry_after: None,
        }
    }

    const RESET: Outcome = Outcome::Transport { maybe_sent: true };
    const REFUSED: Outcome = Outcome::Transport { maybe_sent: false };

    /// Feeds `outcome` to upload after upload `n` times on simulated time, each retry happening
    /// exactly when asked, and returns the delays between attempts.
    fn delays(attempts: &mut Attempts, outcome: &Outcome, n: usize, jitter: f64) -> Vec<Duration> {
        let mut now = t0();
        (0..n)
            .map(|_| match attempts.decide(&POLICY, Request::Upload, outcome, now, jitter) {
                Decision::RetryAt(at) => {
                    let delay = at - now.mono;
                    now = later(now, delay);
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
        let got = delays(&mut Attempts::default(), &REFUSED, 12, 0.0);
        assert_eq!(got, secs(&[1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]));
    }

    #[test]
    fn server_errors_back_off_like_transport_errors() {
        let got = delays(&mut Attempts::default(), &status(503), 4, 0.0);
        assert_eq!(got, secs(&[1, 2, 4, 8]));
    }

    #[test]
    fn jitter_shortens_by_at_most_a_quarter_and_never_exceeds_the_cap() {
        let got = delays(&mut Attempts::default(), &REFUSED, 11, 0.999_999);
        for (delay, base) in got.iter().zip(secs(&[1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300])) {
            assert!(*delay <= base && *delay >= base.mul_f64(0.75), "{delay:?} vs {base:?}");
            assert!(*delay < base, "jitter 0.999 must shorten {base:?}");
        }
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        assert_eq!(delays(&mut Attempts::default(), &REFUSED, 1, f64::NAN), secs(&[1]));
        assert_eq!(
            delays(&mut Attempts::default(), &REFUSED, 1, 7.0),
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
        assert_eq!(a.next_request(), Request::Upload, "a 429 was not stored: no status check");
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
    fn a_fresh_recording_is_uploaded_without_a_status_check() {
        assert_eq!(Attempts::default().next_request(), Request::Upload);
    }

    #[test]
    fn after_a_timeout_or_5xx_the_next_attempt_asks_status_first() {
        for outcome in [RESET, status(500), status(503), status(504)] {
            let mut a = Attempts::default();
            assert!(matches!(
                a.decide(&POLICY, Request::Upload, &outcome, t0(), 0.0),
                Decision::RetryAt(_)
            ));
            assert_eq!(a.next_request(), Request::Status, "after {outcome:?}");
        }
    }

    #[test]
    fn a_connection_that_was_never_made_needs_no_status_check() {
        let mut a = Attempts::default();
        a.decide(&POLICY, Request::Upload, &REFUSED, t0(), 0.0);
        assert_eq!(a.next_request(), Request::Upload);
    }

    #[test]
    fn status_not_found_uploads_at_once_and_then_uploads_again_next_time() {
        let mut a = Attempts::default();
        a.decide(&POLICY, Request::Upload, &status(502), t0(), 0.0);
        let not_found = Outcome::Status(SessionStatus::NotFound);
        assert_eq!(a.decide(&POLICY, Request::Status, &not_found, t0(), 0.0), Decision::Upload);
        assert_eq!(a.next_request(), Request::Upload);
    }

    #[test]
    fn status_received_or_excluded_means_nothing_is_sent_again() {
        for (s, expected) in [
            ("InProgress", Decision::Done),
            ("Concluded", Decision::Done),
            ("Complete", Decision::Done),
        ] {
            let mut a = Attempts::resumed(1, None);
            assert_eq!(a.next_request(), Request::Status);
            let received = Outcome::Status(SessionStatus::Received {
                status: s.into(),
                call_id: Some("bbsnblthl".into()),
            });
            assert_eq!(a.decide(&POLICY, Request::Status, &received, t0(), 0.0), expected);
        }
        let mut a = Attempts::resumed(1, None);
        let excluded = Outcome::Status(SessionStatus::Excluded);
        assert_eq!(a.decide(&POLICY, Request::Status, &excluded, t0(), 0.0), Decision::Excluded);
    }

    #[test]
    fn a_failed_status_query_is_retried_and_asked_again() {
        let mut a = Attempts::resumed(2, None);
        for outcome in [RESET, REFUSED, status(503), Outcome::TokenUnavailable] {
            assert!(matches!(
                a.decide(&POLICY, Request::Status, &outcome, t0(), 0.0),
                Decision::RetryAt(_)
            ));
            assert_eq!(a.next_request(), Request::Status);
        }
    }

    #[test]
    fn a_status_endpoint_refusing_the_query_leads_to_an_upload() {
        let mut a = Attempts::resumed(1, None);
        assert_eq!(a.decide(&POLICY, Request::Status, &status(404), t0(), 0.0), Decision::Upload);
        assert_eq!(a.next_request(), Request::Upload);
    }

    #[test]
    fn a_recording_resumed_with_attempts_on_record_asks_status_and_keeps_its_backoff() {
        let mut a = Attempts::resumed(3, None);
        assert_eq!(a.next_request(), Request::Status);
        assert_eq!(delays(&mut a, &REFUSED, 1, 0.0), secs(&[8]));
        assert_eq!(Attempts::resumed(0, None).next_request(), Request::Upload);
    }

    #[test]
    fn first_401_refreshes_the_token_and_a_second_in_a_row_stops() {
        let now = t0();
        let mut a = Attempts::default();
        assert_eq!(
            a.decide(&POLICY, Request::Upload, &status(401), now, 0.0),
            Decision::RefreshTokenAndRetry
        );
        assert!(matches!(
            a.decide(&POLICY, Request::Upload, &status(401), now, 0.0),
            Decision::Stop { .. }
        ));
    }

    #[test]
    fn a_401_after_other_trouble_refreshes_again() {
        let now = t0();
        let mut a = Attempts::default();
        assert_eq!(
            a.decide(&POLICY, Request::Upload, &status(401), now, 0.0),
            Decision::RefreshTokenAndRetry
        );
        assert!(matches!(
            a.decide(&POLICY, Request::Upload, &status(503), now, 0.0),
            Decision::RetryAt(_)
        ));
        assert_eq!(
            a.decide(&POLICY, Request::Status, &status(401), now, 0.0),
            Decision::RefreshTokenAndRetry
        );
    }

    #[test]
    fn forbidden_stops_the_recording_without_failing_it() {
        for request in [Request::Upload, Request::Status] {
            let decision = Attempts::default().decide(&POLICY, request, &status(403), t0(), 0.0);
            assert!(matches!(decision, Decision::Stop { ref reason } if reason.contains("403")), "{decision:?}");
        }
    }

    #[test]
    fn client_errors_fail_without_retry() {
        let now = t0();
        for code in [400, 404, 409, 413, 415, 422, 302] {
            let decision = Attempts::default().decide(&POLICY, Request::Upload, &status(code), now, 0.0);
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
        let _ = delays(&mut a, &REFUSED, 3, 0.0);
        let delivered = Outcome::Delivered {
            call_id: Some("bbsnbcbe3".into()),
        };
        assert_eq!(a.decide(&POLICY, Request::Upload, &delivered, now, 0.0), Decision::Done);
        let unsendable = Outcome::Unsendable {
            reason: "info.json missing".into(),
        };
        assert_eq!(
            a.decide(&POLICY, Request::Upload, &unsendable, now, 0.0),
            Decision::Fail {
                reason: "info.json missing".into()
            }
        );
    }

    #[test]
    fn a_recording_older_than_max_age_fails_at_its_next_failure() {
        let policy = RetryPolicy {
            max_age: Some(Duration::from_secs(7 * 86_400)),
            ..POLICY
        };
        let start = t0();
        let mut a = Attempts::default();
        assert!(matches!(
            a.decide(&policy, Request::Upload, &status(503), start, 0.0),
            Decision::RetryAt(_)
        ));
        assert_eq!(a.first_attempt(), Some(start.wall));
        let almost = later(start, Duration::from_secs(7 * 86_400 - 1));
        assert!(matches!(
            a.decide(&policy, Request::Status, &status(503), almost, 0.0),
            Decision::RetryAt(_)
        ));
        let week = later(start, Duration::from_secs(7 * 86_400));
        let decision = a.decide(&policy, Request::Status, &status(503), week, 0.0);
        assert!(matches!(decision, Decision::Fail { ref reason } if reason.contains("max_age")), "{decision:?}");
    }

    #[test]
    fn max_age_counts_from_the_first_attempt_of_a_previous_run() {
        let policy = RetryPolicy {
            max_age: Some(Duration::from_secs(60)),
            ..POLICY
        };
        let now = t0();
        let mut a = Attempts::resumed(5, Some(now.wall - Duration::from_secs(61)));
        assert!(matches!(
            a.decide(&policy, Request::Status, &RESET, now, 0.0),
            Decision::Fail { .. }
        ));
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let b = RetryPolicy {
            initial: Duration::from_secs(u64::MAX / 2),
            max: Duration::from_secs(300),
            max_age: None,
        };
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(300));
    }
}
