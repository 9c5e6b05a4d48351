//! Delivery of finished recordings from the spool to a sink (a local directory or Tethr).
//!
//! The recorder writes into `active/<name>/`; [`Spool::finish`] makes the recording durable and
//! moves it to `pending/<name>/`; [`DeliveryHandle::enqueue`] tells the worker started by
//! [`start`] about it. The worker keeps a queue ordered by due time and runs up to
//! `tethr.concurrency` attempts at once, so one waiting for its retry time never blocks the
//! others. What happens after each request is decided by the pure [`policy`]: delivered (the
//! directory is removed, or kept in `delivered/` for the retention), ask Tethr's `/status`
//! first, retry later (it stays in `pending/`), stop until the credentials change (403), or
//! refused (it moves to `failed/` with an `error.json`). A recording is never deleted before a
//! sink has it.
//!
//! Progress is durable: `pending/<name>/state.json` is written before every upload and after
//! every decision, so attempts and the maximum age survive a restart, and a recording that was
//! being uploaded when the gateway died is checked with `/status` before it is sent again.
//! Whatever is in `pending/` is queued at start and by a rescan every 30 s (which is how
//! `spool retry` reaches a running gateway).
//!
//! With Tethr as the sink the worker also runs the heartbeat ([`heartbeat`]) and, when
//! configured, the recording settings fetch ([`recording_settings`]), and reloads the
//! credentials on [`DeliveryHandle::reload`] or when the secret file changes.
//!
//! This module does not write audio, build info.json, or decide what a recording is called.

pub mod audit;
mod delivered;
mod heartbeat;
mod inventory;
mod journal;
mod local;
pub mod policy;
pub mod recording_settings;
mod produce;
mod recover;
mod spool;
pub mod status;
mod tethr;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::{self, Epoch};
use crate::mapping::iso8601;
pub use delivered::{DELIVERED_FILE, DeliveredRecord};
use heartbeat::Health;
pub use heartbeat::HeartbeatStatus;
pub use inventory::{EntryState, SpoolEntry, render_table};
pub use journal::{JOURNAL_FILE, JournalEvent};
use policy::{Attempts, Decision, Outcome, Request, RetryPolicy, SessionStatus};
pub use recording_settings::{RecordingSetting, RecordingSettingsHandle, SettingsDecision, SettingsFilter};
pub use recover::{INTERRUPTED_NOTE, RecoverError, RecoveryReport, WavShape, recover, repair_wav};
use spool::FailureRecord;
pub use produce::{Finishing, ProduceError, Produced, produce};
pub use spool::{AUDIO_FILE, AUDIO_KINDS, CALL_FILE, CAPTURE_FILE, DeliveryState, audio_in, ERROR_FILE, INFO_FILE, STATE_FILE, Spool, SpoolError};
use tethr::TethrClient;
pub use tethr::{CallSessionStatus, RecordingSettingsConfig, Secret, TethrError, TethrSettings, host_name};

/// Retry bounds for the local sink, whose failures (a full disk) pass when an operator acts.
const LOCAL_POLICY: RetryPolicy = RetryPolicy {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(300),
    max_age: None,
};
/// How often `pending/` is scanned for recordings the worker does not know (`spool retry`).
const RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// How often the secret file's modification time is checked.
const SECRET_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// How long shutdown waits for the heartbeat task to send Offline.
const AUX_STOP_LIMIT: Duration = Duration::from_secs(6);

/// Where finished recordings go.
// Built once at start and moved into the worker: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
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
    /// Recordings a sink has (uploaded, found at Tethr by `/status`, or excluded by Tethr).
    pub delivered: u64,
    /// Recordings moved to `failed/`.
    pub failed: u64,
    /// Attempts that failed and were scheduled again.
    pub retries: u64,
    /// Recordings stopped because the credentials were refused (403, or 401 twice).
    pub stopped: u64,
    /// Credential reloads applied.
    pub reloads: u64,
}

enum Command {
    Enqueue(String),
    Reload(Box<TethrSettings>),
}

/// The way to hand recordings to the delivery worker and to tell it about the world.
#[derive(Debug, Clone)]
pub struct DeliveryHandle {
    tx: mpsc::UnboundedSender<Command>,
    stats: watch::Receiver<DeliveryStats>,
    health: Arc<Health>,
    recording_settings: RecordingSettingsHandle,
}

impl DeliveryHandle {
    /// Queues `pending/<name>` for delivery. If the worker has stopped, the recording stays in
    /// `pending/` and is delivered after the next start.
    pub fn enqueue(&self, name: String) {
        if let Err(mpsc::error::SendError(Command::Enqueue(name))) = self.tx.send(Command::Enqueue(name)) {
            tracing::warn!(recording = %name, "delivery worker is not running; the recording stays in pending/");
        }
    }

    /// Replaces the Tethr settings (a rotated secret, a new proxy…) without a restart: the
    /// cached token is dropped, uploads in flight finish with the old settings, and recordings
    /// stopped by a 403/401 are resumed. The intervals of heartbeats and recording settings
    /// and the concurrency keep their values from the start. Ignored with the local sink.
    pub fn reload(&self, settings: TethrSettings) {
        let _ = self.tx.send(Command::Reload(Box::new(settings)));
    }

    /// The spool's disk is near its free-space floor (heartbeat Warning) or not.
    pub fn set_disk_warning(&self, low: bool) {
        self.health.disk_warning.store(low, Ordering::Relaxed);
    }

    /// The spool's disk is below its floor and new calls are refused (heartbeat Error) or not.
    pub fn set_disk_full(&self, full: bool) {
        self.health.disk_full.store(full, Ordering::Relaxed);
    }

    /// The status the next heartbeat will report.
    pub fn health(&self) -> HeartbeatStatus {
        self.health.status()
    }

    /// Whether to record a call, per Tethr's recording settings (always Record when they are
    /// not honoured).
    pub fn recording_settings(&self) -> RecordingSettingsHandle {
        self.recording_settings.clone()
    }

    /// The worker's counters; `wait_for` on the receiver waits for a condition without polling.
    pub fn stats(&self) -> watch::Receiver<DeliveryStats> {
        self.stats.clone()
    }
}

/// Spawns the delivery worker on the current tokio runtime. It first queues everything already
/// in `pending/` (recordings left by a previous run are never lost), then serves the handle.
/// Returns when `shutdown` resolves, leaving whatever is not delivered in `pending/`; uploads
/// in flight at that moment are abandoned and checked with `/status` on the next start, and a
/// last Offline heartbeat is sent.
pub fn start(
    spool: Spool,
    sink: Sink,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (DeliveryHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (stats_tx, stats_rx) = watch::channel(DeliveryStats::default());
    let health = Arc::new(Health::default());
    let (aux_stop, _) = watch::channel(false);
    let mut worker = Worker {
        spool,
        driver: Driver::Local(PathBuf::new()),
        policy: LOCAL_POLICY,
        concurrency: 1,
        retention: Duration::ZERO,
        queue: Vec::new(),
        in_flight: JoinSet::new(),
        in_flight_names: HashMap::new(),
        stopped: Vec::new(),
        rng: fastrand::Rng::new(),
        stats: stats_tx,
        health: health.clone(),
        tethr: None,
        client_tx: None,
        aux: Vec::new(),
        aux_stop,
        secret_mtime: None,
        recording_settings: RecordingSettingsHandle::off(),
    };
    match sink {
        Sink::Local { dir } => worker.driver = Driver::Local(dir),
        Sink::Tethr(settings) => {
            worker.concurrency = settings.concurrency.max(1);
            worker.recording_settings =
                RecordingSettingsHandle::with_filter(settings.recording_settings.as_ref().map(|r| r.filter.clone()));
            worker.secret_mtime = settings.client_secret_file.as_deref().and_then(mtime);
            worker.driver = Driver::Unavailable("the Tethr client is not set up".into());
            worker.use_settings(settings);
        }
    }
    let handle = DeliveryHandle {
        tx,
        stats: stats_rx,
        health,
        recording_settings: worker.recording_settings.clone(),
    };
    let task = tokio::spawn(worker.run(rx, shutdown));
    (handle, task)
}

/// What one request did, with the details for logs, state.json and error.json.
pub(crate) struct Attempt {
    /// The outcome the policy decides on.
    pub outcome: Outcome,
    /// Human-readable description of a failure (empty on success).
    pub detail: String,
    /// The response body, truncated to 64 KiB and scrubbed of secrets (empty when none).
    pub body: String,
    /// Which cached token the request used, so a 401 discards only that one.
    pub token_generation: Option<u64>,
}

impl Attempt {
    fn plain(outcome: Outcome, detail: String) -> Attempt {
        Attempt {
            outcome,
            detail,
            body: String::new(),
            token_generation: None,
        }
    }

    /// A spool file could not be read: missing means the recording is incomplete and cannot be
    /// sent; anything else may pass.
    fn local_trouble(path: &Path, e: io::Error) -> Attempt {
        let detail = format!("{}: {e}", path.display());
        let outcome = if e.kind() == io::ErrorKind::NotFound {
            Outcome::Unsendable { reason: detail.clone() }
        } else {
            Outcome::Transport { maybe_sent: false }
        };
        Attempt::plain(outcome, detail)
    }
}

/// The sink as an attempt drives it; cheap to clone into each attempt's task.
#[derive(Clone)]
enum Driver {
    Local(PathBuf),
    Tethr(Arc<TethrClient>),
    /// The Tethr client could not be built; every attempt fails and is retried.
    Unavailable(String),
}

impl Driver {
    async fn deliver(&self, dir: &Path, name: &str) -> Attempt {
        match self {
            Driver::Local(out) => {
                let (dir, out, name) = (dir.to_path_buf(), out.clone(), name.to_owned());
                match tokio::task::spawn_blocking(move || local::deliver(&dir, &out, &name)).await {
                    Ok(Ok(())) => Attempt::plain(Outcome::Delivered { call_id: None }, String::new()),
                    Ok(Err(local::LocalError::Missing(path))) => {
                        let reason = format!("{} is missing", path.display());
                        Attempt::plain(Outcome::Unsendable { reason: reason.clone() }, reason)
                    }
                    Ok(Err(e)) => Attempt::plain(Outcome::Transport { maybe_sent: false }, e.to_string()),
                    Err(e) => Attempt::plain(Outcome::Transport { maybe_sent: false }, e.to_string()),
                }
            }
            Driver::Tethr(client) => client.upload(dir, name).await,
            Driver::Unavailable(reason) => Attempt::plain(Outcome::Transport { maybe_sent: false }, reason.clone()),
        }
    }

    async fn check_status(&self, session_id: &str) -> Attempt {
        match self {
            Driver::Tethr(client) => client.check_status(session_id).await,
            // A directory has no memory of half-done copies: local delivery is idempotent.
            Driver::Local(_) => Attempt::plain(Outcome::Status(SessionStatus::NotFound), String::new()),
            Driver::Unavailable(reason) => Attempt::plain(Outcome::Transport { maybe_sent: false }, reason.clone()),
        }
    }

    async fn forget_token(&self, generation: Option<u64>) {
        if let (Driver::Tethr(client), Some(generation)) = (self, generation) {
            client.forget_token(generation).await;
        }
    }
}

/// A queued recording.
struct Entry {
    name: String,
    due: Instant,
    attempts: Attempts,
    /// What `state.json` says; rewritten before each upload and after each decision.
    state: DeliveryState,
}

/// An attempt that ran to a decision.
struct Finished {
    entry: Entry,
    session_id: String,
    attempt: Attempt,
    decision: Decision,
}

struct Worker {
    spool: Spool,
    driver: Driver,
    policy: RetryPolicy,
    concurrency: usize,
    retention: Duration,
    /// Recordings waiting for their due time, in arrival order; the earliest due goes next.
    queue: Vec<Entry>,
    in_flight: JoinSet<Option<Finished>>,
    in_flight_names: HashMap<tokio::task::Id, String>,
    /// Recordings held because the credentials were refused, until a reload.
    stopped: Vec<Entry>,
    rng: fastrand::Rng,
    stats: watch::Sender<DeliveryStats>,
    health: Arc<Health>,
    /// The current Tethr settings (None with the local sink).
    tethr: Option<TethrSettings>,
    /// The current client for the heartbeat and recording settings tasks.
    client_tx: Option<watch::Sender<Arc<TethrClient>>>,
    aux: Vec<JoinHandle<()>>,
    aux_stop: watch::Sender<bool>,
    /// Last seen modification time of the secret file.
    secret_mtime: Option<SystemTime>,
    recording_settings: RecordingSettingsHandle,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let start = tokio::time::Instant::from_std(clock::now());
        let mut rescan = tokio::time::interval_at(start + RESCAN_INTERVAL, RESCAN_INTERVAL);
        let mut secret_check = tokio::time::interval_at(start + SECRET_CHECK_INTERVAL, SECRET_CHECK_INTERVAL);
        for ticker in [&mut rescan, &mut secret_check] {
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let found = self.rescan().await;
        if found > 0 {
            tracing::info!(count = found, "queueing recordings left in pending/");
        }
        let mut accepting = true;
        loop {
            self.launch_due();
            let next_due = if self.in_flight.len() < self.concurrency {
                self.queue.iter().map(|e| e.due).min()
            } else {
                None
            };
            let watch_secret = self.tethr.as_ref().is_some_and(|s| s.client_secret_file.is_some());
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => match joined {
                    Ok((id, finished)) => {
                        self.in_flight_names.remove(&id);
                        if let Some(finished) = finished {
                            self.settle(finished).await;
                        }
                    }
                    Err(e) => {
                        // The recording stays in pending/; the next rescan queues it again.
                        let name = self.in_flight_names.remove(&e.id()).unwrap_or_default();
                        tracing::error!(recording = %name, error = %e, "delivery attempt failed unexpectedly");
                    }
                },
                msg = rx.recv(), if accepting => match msg {
                    Some(Command::Enqueue(name)) => self.add(name).await,
                    Some(Command::Reload(settings)) => self.reload(*settings),
                    // Every handle is gone; keep working through the queue until shutdown.
                    None => accepting = false,
                },
                () = sleep_until(next_due) => {}
                _ = rescan.tick() => {
                    self.rescan().await;
                }
                _ = secret_check.tick(), if watch_secret => self.check_secret_file().await,
            }
        }
        // Abandoned uploads were recorded in state.json before they started, so the next start
        // asks Tethr's /status before sending them again.
        self.in_flight.abort_all();
        let _ = self.aux_stop.send(true);
        for task in self.aux.drain(..) {
            let _ = tokio::time::timeout(AUX_STOP_LIMIT, task).await;
        }
        tracing::info!(
            queued = self.queue.len() + self.in_flight_names.len() + self.stopped.len(),
            "delivery worker stopped; undelivered recordings stay in pending/"
        );
    }

    /// Whether the worker already has `name` (queued, in flight or stopped).
    fn knows(&self, name: &str) -> bool {
        self.queue.iter().chain(&self.stopped).any(|e| e.name == name)
            || self.in_flight_names.values().any(|n| n == name)
    }

    /// Queues a recording to go as soon as possible, unless the worker has it already. Its
    /// `state.json`, if a previous run left one, carries the attempts over.
    async fn add(&mut self, name: String) {
        if self.knows(&name) {
            return;
        }
        let spool = self.spool.clone();
        let owned = name.clone();
        let state = tokio::task::spawn_blocking(move || spool.read_state(&owned))
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let first = state.first_attempt.as_deref().and_then(parse_time);
        self.queue.push(Entry {
            name,
            due: clock::now(),
            attempts: Attempts::resumed(state.attempts, first),
            state,
        });
    }

    /// Queues every recording in `pending/` the worker does not know, and removes kept
    /// deliveries older than the retention. Returns how many were queued.
    async fn rescan(&mut self) -> usize {
        let spool = self.spool.clone();
        let retention = self.retention;
        let listed = tokio::task::spawn_blocking(move || {
            if !retention.is_zero() {
                for name in delivered::prune(&spool, retention, clock::wall_now()) {
                    spool.journal(&name, JournalEvent::Purged, "retention passed; removed from delivered/");
                }
            }
            spool.pending()
        })
        .await;
        let names = match listed {
            Ok(Ok(names)) => names,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot list pending/");
                return 0;
            }
            Err(e) => {
                tracing::error!(error = %e, "listing pending/ failed");
                return 0;
            }
        };
        let mut added = 0;
        for name in names {
            if !self.knows(&name) {
                self.add(name).await;
                added += 1;
            }
        }
        added
    }

    /// Starts attempts for due recordings while there is room.
    fn launch_due(&mut self) {
        let now = clock::now();
        while self.in_flight.len() < self.concurrency {
            let Some(entry) = self.take_due(now) else { return };
            let name = entry.name.clone();
            let attempt = attempt(
                self.driver.clone(),
                self.spool.clone(),
                self.policy,
                entry,
                self.rng.f64(),
            );
            let id = self.in_flight.spawn(attempt).id();
            self.in_flight_names.insert(id, name);
        }
    }

    /// Takes the earliest-due entry out of the queue if it is due at `now`.
    fn take_due(&mut self, now: Instant) -> Option<Entry> {
        let (index, entry) = self.queue.iter().enumerate().min_by_key(|(i, e)| (e.due, *i))?;
        (entry.due <= now).then(|| self.queue.remove(index))
    }

    /// Acts on the final decision about an attempt.
    async fn settle(&mut self, finished: Finished) {
        let Finished {
            mut entry,
            session_id,
            attempt,
            decision,
        } = finished;
        let name = entry.name.clone();
        match decision {
            Decision::Done | Decision::Excluded => self.delivered(&name, &session_id, &attempt.outcome).await,
            Decision::RetryAt(at) => {
                let retry_in = at.saturating_duration_since(clock::now());
                tracing::warn!(recording = %name, session_id = %session_id, error = %attempt.detail,
                    failures = entry.attempts.failures(), retry_in = ?retry_in, "delivery failed; will retry");
                entry.state.last_error = Some(attempt.detail.clone());
                entry.state.next_attempt = Some(iso8601(Epoch::now().wall_of(at)));
                let journal = format!("attempt {} failed: {}; next in {}s", entry.state.attempts, attempt.detail, retry_in.as_secs());
                self.save_state(&entry, Some((JournalEvent::Retried, journal))).await;
                entry.due = at;
                self.queue.push(entry);
                self.stats.send_modify(|s| s.retries += 1);
            }
            Decision::Stop { reason } => {
                tracing::error!(recording = %name, session_id = %session_id, error = %attempt.detail, %reason,
                    "ALARM: Tethr refuses the credentials; the recording waits in pending/ until they are reloaded");
                entry.state.last_error = Some(format!("{reason} (waiting for new credentials)"));
                entry.state.next_attempt = None;
                let journal = format!("{reason}; held until the credentials are reloaded");
                self.save_state(&entry, Some((JournalEvent::Retried, journal))).await;
                self.stopped.push(entry);
                self.stats.send_modify(|s| s.stopped += 1);
            }
            Decision::Fail { reason } => self.fail(&name, &session_id, &attempt, reason).await,
            // attempt() acts on these itself and never returns them.
            Decision::RefreshTokenAndRetry | Decision::Upload => {}
        }
        self.update_health();
    }

    fn update_health(&self) {
        let retrying = self.queue.iter().any(|e| e.attempts.failures() > 0);
        let refused = matches!(&self.driver, Driver::Tethr(c) if c.credentials_refused());
        self.health.retrying.store(retrying, Ordering::Relaxed);
        self.health
            .auth_failing
            .store(refused || !self.stopped.is_empty(), Ordering::Relaxed);
    }

    /// Writes the entry's `state.json`, and a journal line when given one.
    async fn save_state(&self, entry: &Entry, journal: Option<(JournalEvent, String)>) {
        let (spool, name, state) = (self.spool.clone(), entry.name.clone(), entry.state.clone());
        write_state(spool, name, state, journal).await;
    }

    /// Removes a delivered recording from `pending/`, or keeps it in `delivered/` for the
    /// retention, and says so.
    async fn delivered(&mut self, name: &str, session_id: &str, outcome: &Outcome) {
        let (call_id, how) = match outcome {
            Outcome::Delivered { call_id } => (call_id.clone(), "uploaded".to_owned()),
            Outcome::Status(SessionStatus::Received { status, call_id }) => (call_id.clone(), status.clone()),
            Outcome::Status(SessionStatus::Excluded) => (None, "Excluded".to_owned()),
            _ => (None, "accepted".to_owned()),
        };
        let record = DeliveredRecord {
            call_id: call_id.clone(),
            time: iso8601(clock::wall_now()),
            session_id: session_id.to_owned(),
            how: how.clone(),
        };
        let (spool, owned, keep) = (self.spool.clone(), name.to_owned(), !self.retention.is_zero());
        let call = call_id.clone().unwrap_or_default();
        let journal = format!("sessionId {session_id} callId {call} ({how})");
        let outcome = audit::AuditDelivery {
            outcome: "delivered".to_owned(),
            time: record.time.clone(),
            call_id: call_id.clone(),
            path: None,
            reason: None,
        };
        let moved = tokio::task::spawn_blocking(move || {
            // Best effort: the record informs people, the recording is safe either way.
            let _ = audit::append_delivery(&spool.pending_dir(&owned), outcome);
            let result = if keep {
                delivered::keep(&spool, &owned, &record).map(|_| ())
            } else {
                spool.remove_pending(&owned)
            };
            spool.journal(&owned, JournalEvent::Delivered, &journal);
            result
        })
        .await;
        if let Some(e) = moved
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .err()
        {
            tracing::error!(recording = %name, error = %e,
                "delivered, but it could not be moved out of pending/; the next start will find it at Tethr");
        }
        // Counted before it is logged, so whoever reads the log line finds it counted.
        self.stats.send_modify(|s| s.delivered += 1);
        let call_id = call_id.as_deref().unwrap_or("");
        match how.as_str() {
            "uploaded" | "accepted" => {
                tracing::info!(recording = %name, session_id = %session_id, call_id, "recording delivered");
            }
            "Excluded" => tracing::info!(recording = %name, session_id = %session_id,
                "Tethr has excluded this session; nothing is sent; recording delivered"),
            status => tracing::info!(recording = %name, session_id = %session_id, call_id, status,
                "Tethr already has it from an earlier attempt; not sending it again; recording delivered"),
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
        let record = FailureRecord {
            status,
            error,
            body: attempt.body.clone(),
            time: iso8601(clock::wall_now()),
        };
        tracing::error!(recording = %name, session_id = %session_id, status, error = %record.error,
            "recording refused; moving it to failed/ (see its error.json)");
        let (spool, owned) = (self.spool.clone(), name.to_owned());
        let journal = record.error.clone();
        let outcome = audit::AuditDelivery {
            outcome: "failed".to_owned(),
            time: record.time.clone(),
            call_id: None,
            path: None,
            reason: Some(record.error.clone()),
        };
        let moved = tokio::task::spawn_blocking(move || {
            let _ = audit::append_delivery(&spool.pending_dir(&owned), outcome);
            let moved = spool.fail(&owned, &record);
            if moved.is_ok() {
                spool.journal(&owned, JournalEvent::Failed, &journal);
            }
            moved
        })
        .await;
        match moved {
            Ok(Ok(_)) => self.stats.send_modify(|s| s.failed += 1),
            Ok(Err(e)) => tracing::error!(recording = %name, error = %e,
                "cannot move the refused recording to failed/; it stays in pending/ until the next start"),
            Err(e) => tracing::error!(recording = %name, error = %e,
                "cannot move the refused recording to failed/; it stays in pending/ until the next start"),
        }
    }

    /// Builds a client for `settings` and makes it current; starts the heartbeat and the
    /// recording settings tasks the first time a client exists. Returns false (and keeps the
    /// previous client) when the settings cannot be used.
    fn use_settings(&mut self, settings: TethrSettings) -> bool {
        let client = match TethrClient::new(settings.clone()) {
            Ok(client) => Arc::new(client),
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the Tethr client; recordings wait in pending/");
                if let Driver::Unavailable(reason) = &mut self.driver {
                    *reason = e.to_string();
                }
                return false;
            }
        };
        self.policy = RetryPolicy {
            initial: settings.retry_initial,
            max: settings.retry_max,
            max_age: settings.max_age,
        };
        self.retention = settings.retention;
        self.driver = Driver::Tethr(client.clone());
        match &self.client_tx {
            Some(tx) => {
                tx.send_replace(client);
            }
            None => {
                let (tx, rx) = watch::channel(client);
                if let Some(interval) = settings.heartbeat_interval {
                    let task = heartbeat::run(rx.clone(), self.health.clone(), interval, self.aux_stop.subscribe());
                    self.aux.push(tokio::spawn(task));
                }
                if let Some(rs) = &settings.recording_settings {
                    let task = recording_settings::run(
                        self.recording_settings.clone(),
                        rx,
                        rs.interval,
                        self.spool.root().to_path_buf(),
                        self.aux_stop.subscribe(),
                    );
                    self.aux.push(tokio::spawn(task));
                }
                self.client_tx = Some(tx);
            }
        }
        self.tethr = Some(settings);
        true
    }

    /// Applies new Tethr settings and resumes the recordings the old credentials got stopped.
    fn reload(&mut self, settings: TethrSettings) {
        if self.tethr.is_none() && matches!(self.driver, Driver::Local(_)) {
            tracing::warn!("Tethr settings reloaded, but recordings go to the local directory; ignored");
            return;
        }
        if !self.use_settings(settings) {
            return;
        }
        let now = clock::now();
        let resumed = self.stopped.len();
        for mut entry in self.stopped.drain(..) {
            entry.due = now;
            self.queue.push(entry);
        }
        tracing::info!(resumed, "Tethr credentials reloaded; the cached token is dropped");
        self.stats.send_modify(|s| s.reloads += 1);
        self.update_health();
    }

    /// Reloads the secret when its file changed since the last look.
    async fn check_secret_file(&mut self) {
        let Some(settings) = &self.tethr else { return };
        let Some(path) = settings.client_secret_file.clone() else { return };
        let modified = mtime(&path);
        if modified == self.secret_mtime {
            return;
        }
        self.secret_mtime = modified;
        let secret = match tokio::fs::read_to_string(&path).await {
            Ok(s) => s.trim().to_owned(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the changed client secret file; keeping the current secret");
                return;
            }
        };
        if secret.is_empty() || secret == settings.client_secret.expose() {
            return;
        }
        tracing::info!(path = %path.display(), "the client secret file changed; reloading the Tethr credentials");
        let settings = TethrSettings {
            client_secret: Secret::new(secret),
            ..settings.clone()
        };
        self.reload(settings);
    }
}

/// Runs requests for one recording until a decision other than "refresh the token" or "upload
/// now": a `/status` check first when an earlier upload may have arrived, then the upload.
/// None when the recording has gone from `pending/`.
async fn attempt(driver: Driver, spool: Spool, policy: RetryPolicy, mut entry: Entry, jitter: f64) -> Option<Finished> {
    let dir = spool.pending_dir(&entry.name);
    if !tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
        tracing::warn!(recording = %entry.name, "recording is no longer in pending/; dropped from the queue");
        return None;
    }
    let session_id = session_id(&dir).await.unwrap_or_default();
    loop {
        let request = entry.attempts.next_request();
        let attempt = match request {
            Request::Status => driver.check_status(&session_id).await,
            Request::Upload => {
                // On record before the body leaves, so a crash mid-upload is checked with
                // /status at the next start instead of being sent blindly.
                let now = iso8601(clock::wall_now());
                entry.state.attempts = entry.state.attempts.saturating_add(1);
                entry.state.first_attempt.get_or_insert_with(|| now.clone());
                entry.state.last_attempt = Some(now);
                entry.state.next_attempt = None;
                write_state(spool.clone(), entry.name.clone(), entry.state.clone(), None).await;
                driver.deliver(&dir, &entry.name).await
            }
        };
        match entry
            .attempts
            .decide(&policy, request, &attempt.outcome, Epoch::now(), jitter)
        {
            Decision::RefreshTokenAndRetry => {
                tracing::info!(recording = %entry.name, session_id = %session_id,
                    "Tethr answered 401; retrying once with a new token");
                driver.forget_token(attempt.token_generation).await;
            }
            Decision::Upload => {
                tracing::info!(recording = %entry.name, session_id = %session_id,
                    "Tethr does not have this session; uploading it");
            }
            decision => {
                return Some(Finished {
                    entry,
                    session_id,
                    attempt,
                    decision,
                });
            }
        }
    }
}

/// Writes `state.json` (and a journal line); a failure is logged, not fatal: the state informs
/// people and the next start, the recording itself is safe in `pending/`.
async fn write_state(spool: Spool, name: String, state: DeliveryState, journal: Option<(JournalEvent, String)>) {
    let written = tokio::task::spawn_blocking(move || {
        if let Some((event, detail)) = journal {
            spool.journal(&name, event, &detail);
        }
        spool.write_state(&name, &state).map_err(|e| (name, e))
    })
    .await;
    if let Ok(Err((name, e))) = written {
        tracing::warn!(recording = %name, error = %e, "cannot write the delivery state");
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn parse_time(s: &str) -> Option<SystemTime> {
    SystemTime::try_from(s.parse::<jiff::Timestamp>().ok()?).ok()
}

/// Sleeps until `due`, or forever when nothing is due.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await,
        None => std::future::pending().await,
    }
}

/// The `sessionId` from a recording's info.json, for logs and `/status`.
async fn session_id(dir: &Path) -> Option<String> {
    let info = tokio::fs::read(dir.join(INFO_FILE)).await.ok()?;
    let value: serde_json::Value = serde_json::from_slice(&info).ok()?;
    value.get("sessionId")?.as_str().map(str::to_owned)
}
