//! Delivery of finished recordings from the spool to a sink (a local directory or Tethr).
//!
//! The recorder writes into `active/<name>/`; [`Spool::finish`] makes the recording durable and
//! moves it to `pending/<name>/`; [`DeliveryHandle::enqueue`] tells the worker started by
//! [`start`] about it. The worker delivers recordings one at a time, earliest due first, so one
//! waiting for its retry time never blocks the others. What happens after an attempt is decided
//! by the pure [`policy`]: done (the spool directory is removed), retry later (it stays in
//! `pending/`), or refused (it moves to `failed/` with an `error.json`). A recording is never
//! deleted before a sink has it, and whatever is left in `pending/` at shutdown is queued again
//! on the next start.
//!
//! This module does not write audio, build info.json, or decide what a recording is called.

mod local;
pub mod policy;
mod spool;
mod tethr;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::clock;
use policy::{Attempts, Backoff, Decision, Outcome};
use spool::FailureRecord;
pub use spool::{AUDIO_FILE, CALL_FILE, DeliveryState, ERROR_FILE, INFO_FILE, STATE_FILE, Spool, SpoolError};
use tethr::TethrClient;
pub use tethr::{Secret, TethrError, TethrSettings};

/// Retry bounds for the local sink, whose failures (a full disk) pass when an operator acts.
const LOCAL_BACKOFF: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(300),
};

/// Where finished recordings go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// `<dir>/<name>.wav` and `<dir>/<name>.json` (the json is exactly info.json).
    Local {
        /// The output directory; created if missing.
        dir: PathBuf,
    },
    /// Tethr's Archived Call Upload API.
    Tethr(TethrSettings),
}

/// Counters of what the worker has done, for health reporting and for tests to wait on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Recordings a sink accepted.
    pub delivered: u64,
    /// Recordings moved to `failed/`.
    pub failed: u64,
    /// Attempts that failed and were scheduled again.
    pub retries: u64,
}

/// The way to hand recordings to the delivery worker.
#[derive(Debug, Clone)]
pub struct DeliveryHandle {
    tx: mpsc::UnboundedSender<String>,
    stats: watch::Receiver<DeliveryStats>,
}

impl DeliveryHandle {
    /// Queues `pending/<name>` for delivery. If the worker has stopped, the recording stays in
    /// `pending/` and is delivered after the next start.
    pub fn enqueue(&self, name: String) {
        if let Err(mpsc::error::SendError(name)) = self.tx.send(name) {
            tracing::warn!(recording = %name, "delivery worker is not running; the recording stays in pending/");
        }
    }

    /// The worker's counters; `wait_for` on the receiver waits for a condition without polling.
    pub fn stats(&self) -> watch::Receiver<DeliveryStats> {
        self.stats.clone()
    }
}

/// Spawns the delivery worker on the current tokio runtime. It first queues everything already
/// in `pending/` (recordings left by a previous run are never lost), then serves
/// [`DeliveryHandle::enqueue`]. Returns when `shutdown` resolves, leaving whatever is not
/// delivered in `pending/`; an upload in flight at that moment is abandoned and sent again on the
/// next start.
pub fn start(
    spool: Spool,
    sink: Sink,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (DeliveryHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (stats_tx, stats_rx) = watch::channel(DeliveryStats::default());
    let (driver, backoff) = match sink {
        Sink::Local { dir } => (Driver::Local(dir), LOCAL_BACKOFF),
        Sink::Tethr(settings) => {
            let backoff = Backoff {
                initial: settings.retry_initial,
                max: settings.retry_max,
            };
            match TethrClient::new(settings) {
                Ok(client) => (Driver::Tethr(Box::new(client)), backoff),
                Err(e) => {
                    tracing::error!(error = %e, "cannot set up the Tethr client; recordings wait in pending/");
                    (Driver::Unavailable(e.to_string()), backoff)
                }
            }
        }
    };
    let worker = Worker {
        spool,
        driver,
        backoff,
        queue: Vec::new(),
        rng: fastrand::Rng::new(),
        stats: stats_tx,
    };
    let task = tokio::spawn(worker.run(rx, shutdown));
    (DeliveryHandle { tx, stats: stats_rx }, task)
}

/// What one attempt did, with the details for logs and error.json.
pub(crate) struct Attempt {
    /// The outcome the policy decides on.
    pub outcome: Outcome,
    /// Human-readable description of a failure (empty on success).
    pub detail: String,
    /// The response body, truncated to 64 KiB (empty when there was none).
    pub body: String,
}

impl Attempt {
    fn delivered(call_id: Option<String>) -> Attempt {
        Attempt {
            outcome: Outcome::Delivered { call_id },
            detail: String::new(),
            body: String::new(),
        }
    }

    /// A spool file could not be read: missing means the recording is incomplete and cannot be
    /// sent; anything else may pass.
    fn local_trouble(path: &Path, e: io::Error) -> Attempt {
        let detail = format!("{}: {e}", path.display());
        let outcome = if e.kind() == io::ErrorKind::NotFound {
            Outcome::Unsendable { reason: detail.clone() }
        } else {
            Outcome::Transport
        };
        Attempt {
            outcome,
            detail,
            body: String::new(),
        }
    }
}

/// The sink as the worker drives it.
enum Driver {
    Local(PathBuf),
    Tethr(Box<TethrClient>),
    /// The Tethr client could not be built; every attempt fails and is retried.
    Unavailable(String),
}

impl Driver {
    async fn deliver(&mut self, dir: &Path, name: &str) -> Attempt {
        match self {
            Driver::Local(out) => {
                let (dir, out, name) = (dir.to_path_buf(), out.clone(), name.to_owned());
                match tokio::task::spawn_blocking(move || local::deliver(&dir, &out, &name)).await {
                    Ok(Ok(())) => Attempt::delivered(None),
                    Ok(Err(local::LocalError::Missing(path))) => {
                        let reason = format!("{} is missing", path.display());
                        Attempt {
                            outcome: Outcome::Unsendable { reason: reason.clone() },
                            detail: reason,
                            body: String::new(),
                        }
                    }
                    Ok(Err(e)) => Attempt {
                        outcome: Outcome::Transport,
                        detail: e.to_string(),
                        body: String::new(),
                    },
                    Err(e) => Attempt {
                        outcome: Outcome::Transport,
                        detail: e.to_string(),
                        body: String::new(),
                    },
                }
            }
            Driver::Tethr(client) => client.upload(dir, name).await,
            Driver::Unavailable(reason) => Attempt {
                outcome: Outcome::Transport,
                detail: reason.clone(),
                body: String::new(),
            },
        }
    }

    fn forget_token(&mut self) {
        if let Driver::Tethr(client) = self {
            client.forget_token();
        }
    }
}

/// A queued recording.
struct Entry {
    name: String,
    due: Instant,
    attempts: Attempts,
}

struct Worker {
    spool: Spool,
    driver: Driver,
    backoff: Backoff,
    /// Queued recordings in arrival order; the earliest due goes next, ties in arrival order.
    queue: Vec<Entry>,
    rng: fastrand::Rng,
    stats: watch::Sender<DeliveryStats>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<String>, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || spool.pending()).await {
            Ok(Ok(names)) => {
                if !names.is_empty() {
                    tracing::info!(count = names.len(), "queueing recordings left in pending/");
                }
                for name in names {
                    self.add(name);
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot list pending/; its recordings wait for the next start"),
            Err(e) => tracing::error!(error = %e, "listing pending/ failed; its recordings wait for the next start"),
        }
        let mut accepting = true;
        loop {
            let next_due = self.queue.iter().map(|e| e.due).min();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                msg = rx.recv(), if accepting => match msg {
                    Some(name) => self.add(name),
                    // Every handle is gone; keep working through the queue until shutdown.
                    None => accepting = false,
                },
                () = sleep_until(next_due) => {
                    let Some(entry) = self.take_due(clock::now()) else { continue };
                    // Shutdown abandons an attempt in flight, but once one has finished its
                    // result is acted on, so a delivered recording is not sent again.
                    let finished = tokio::select! {
                        biased;
                        finished = self.attempt(entry) => finished,
                        () = &mut shutdown => break,
                    };
                    if let Some((entry, session_id, attempt, decision)) = finished {
                        self.settle(entry, &session_id, attempt, decision).await;
                    }
                }
            }
        }
        tracing::info!(
            queued = self.queue.len(),
            "delivery worker stopped; undelivered recordings stay in pending/"
        );
    }

    /// Queues a recording to go as soon as possible, unless it is queued already.
    fn add(&mut self, name: String) {
        if !self.queue.iter().any(|e| e.name == name) {
            self.queue.push(Entry {
                name,
                due: clock::now(),
                attempts: Attempts::default(),
            });
        }
    }

    /// Takes the earliest-due entry out of the queue if it is due at `now`.
    fn take_due(&mut self, now: Instant) -> Option<Entry> {
        let (index, entry) = self.queue.iter().enumerate().min_by_key(|(i, e)| (e.due, *i))?;
        (entry.due <= now).then(|| self.queue.remove(index))
    }

    /// Attempts one recording, twice when a 401 calls for a new token. None when the recording
    /// has gone from `pending/`.
    async fn attempt(&mut self, mut entry: Entry) -> Option<(Entry, String, Attempt, Decision)> {
        let dir = self.spool.pending_dir(&entry.name);
        if !tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
            tracing::warn!(recording = %entry.name, "recording is no longer in pending/; dropped from the queue");
            return None;
        }
        let session_id = session_id(&dir).await.unwrap_or_default();
        loop {
            let attempt = self.driver.deliver(&dir, &entry.name).await;
            let jitter = self.rng.f64();
            match entry
                .attempts
                .decide(&self.backoff, &attempt.outcome, clock::now(), jitter)
            {
                Decision::RefreshTokenAndRetry => {
                    tracing::info!(recording = %entry.name, session_id = %session_id,
                        "Tethr answered 401; retrying once with a new token");
                    self.driver.forget_token();
                }
                decision => return Some((entry, session_id, attempt, decision)),
            }
        }
    }

    /// Acts on the final decision about an attempt.
    async fn settle(&mut self, mut entry: Entry, session_id: &str, attempt: Attempt, decision: Decision) {
        let name = entry.name.clone();
        match decision {
            Decision::Done => {
                let call_id = match &attempt.outcome {
                    Outcome::Delivered { call_id: Some(id) } => id.as_str(),
                    _ => "",
                };
                let spool = self.spool.clone();
                let removed = tokio::task::spawn_blocking(move || spool.remove_pending(&entry.name)).await;
                if let Some(e) = removed
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .err()
                {
                    tracing::error!(recording = %name, error = %e,
                        "delivered, but it could not be removed from pending/ and will be sent again on the next start");
                }
                tracing::info!(recording = %name, session_id = %session_id, call_id, "recording delivered");
                self.stats.send_modify(|s| s.delivered += 1);
            }
            Decision::RetryAt(at) => {
                let retry_in = at.saturating_duration_since(clock::now());
                tracing::warn!(recording = %name, session_id = %session_id, error = %attempt.detail,
                    failures = entry.attempts.failures(), retry_in = ?retry_in, "delivery failed; will retry");
                entry.due = at;
                self.queue.push(entry);
                self.stats.send_modify(|s| s.retries += 1);
            }
            Decision::Fail { reason } => self.fail(&name, session_id, &attempt, reason).await,
            // attempt() handles refreshes itself and never returns this.
            Decision::RefreshTokenAndRetry => {}
        }
    }

    /// Moves a refused recording to `failed/` with its error.json.
    async fn fail(&mut self, name: &str, session_id: &str, attempt: &Attempt, reason: String) {
        let status = match attempt.outcome {
            Outcome::HttpStatus { code, .. } => Some(code),
            _ => None,
        };
        let error = if attempt.detail.is_empty() || attempt.detail == reason {
            reason
        } else {
            format!("{reason}: {}", attempt.detail)
        };
        let time = jiff::Timestamp::try_from(clock::wall_now())
            .map(|t| t.to_string())
            .unwrap_or_default();
        let record = FailureRecord {
            status,
            error,
            body: attempt.body.clone(),
            time,
        };
        tracing::error!(recording = %name, session_id = %session_id, status, error = %record.error,
            "recording refused; moving it to failed/ (see its error.json)");
        let (spool, owned) = (self.spool.clone(), name.to_owned());
        let moved = tokio::task::spawn_blocking(move || spool.fail(&owned, &record)).await;
        match moved {
            Ok(Ok(_)) => self.stats.send_modify(|s| s.failed += 1),
            Ok(Err(e)) => tracing::error!(recording = %name, error = %e,
                "cannot move the refused recording to failed/; it stays in pending/ until the next start"),
            Err(e) => tracing::error!(recording = %name, error = %e,
                "cannot move the refused recording to failed/; it stays in pending/ until the next start"),
        }
    }
}

/// Sleeps until `due`, or forever when nothing is queued.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await,
        None => std::future::pending().await,
    }
}

/// The `sessionId` from a recording's info.json, for logs.
async fn session_id(dir: &Path) -> Option<String> {
    let info = tokio::fs::read(dir.join(INFO_FILE)).await.ok()?;
    let value: serde_json::Value = serde_json::from_slice(&info).ok()?;
    value.get("sessionId")?.as_str().map(str::to_owned)
}
