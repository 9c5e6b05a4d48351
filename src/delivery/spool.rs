//! The on-disk spool: where finished recordings wait until a sink has them.
//!
//! Layout under the root:
//! - `active/<name>/` — the recorder writes `capture.wav` (one channel per recorded stream) here
//!   while the call runs; at the end it is rendered into the delivered audio (`audio.wav`,
//!   `audio.mp3` or `audio.opus`: the configured layout and format);
//! - `pending/<name>/` — the audio + `info.json`, complete and durable, waiting for delivery;
//! - `failed/<name>/` — refused permanently by the sink, with an `error.json` saying why;
//! - `delivered/<name>/` — delivered, kept for `tethr.retention` (the delivery worker fills it);
//! - `journal.log` — one line per event of every recording (see [`super::journal`]).
//!
//! A recording moves between these by renaming its directory, after fsyncing what it holds, so a
//! crash leaves each recording whole in exactly one place. The functions here block (std::fs and
//! fsync); async callers run them with `spawn_blocking`. This module does no delivery and keeps
//! no state beyond the root path and whether the disk was last seen below its free-space floor
//! (so that its recovery is logged once).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use serde::Serialize;

use super::journal::JournalEvent;
use crate::media::render::AudioKind;

/// The delivered audio file inside a recording's directory when the format is WAV.
pub const AUDIO_FILE: &str = "audio.wav";
/// What the recorder writes during the call: one channel per recorded stream, PCM WAV.
pub const CAPTURE_FILE: &str = "capture.wav";

/// Every delivered audio file a recording's directory may hold (the renderer writes
/// `audio.<extension>`), in the order a directory is searched.
pub const AUDIO_KINDS: [(&str, AudioKind); 3] =
    [(AUDIO_FILE, AudioKind::WAV), ("audio.mp3", AudioKind::MP3), ("audio.opus", AudioKind::OGG_OPUS)];

/// The delivered audio in a recording's directory, if there is one.
pub fn audio_in(dir: &Path) -> Option<(PathBuf, AudioKind)> {
    AUDIO_KINDS.iter().map(|(file, kind)| (dir.join(file), *kind)).find(|(p, _)| p.is_file())
}
/// The Tethr `info` JSON inside a recording's directory.
pub const INFO_FILE: &str = "info.json";
/// Why a recording was refused, inside `failed/<name>/`.
pub const ERROR_FILE: &str = "error.json";
/// The call's facts for crash recovery (`session::CallRecord`), inside `active/<name>/`.
pub const CALL_FILE: &str = "call.json";
/// Delivery progress (attempts, last error, next attempt), inside `pending/<name>/`.
pub const STATE_FILE: &str = "state.json";

/// The contents of `pending/<name>/state.json`: what delivery has tried so far, so that
/// `spool list` can say why a recording has not arrived and a restart keeps the count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DeliveryState {
    /// Attempts made so far.
    pub attempts: u32,
    /// ISO-8601 UTC of the first and the latest attempt.
    pub first_attempt: Option<String>,
    pub last_attempt: Option<String>,
    /// Why the latest attempt failed.
    pub last_error: Option<String>,
    /// ISO-8601 UTC of the next attempt, when one is scheduled.
    pub next_attempt: Option<String>,
}

/// An error from a spool operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The recording name would not be a single safe file name (allowed: A-Z a-z 0-9 . _ -,
    /// not starting with a dot).
    #[error("recording name {0:?} is not a safe file name")]
    BadName(String),
    /// `pending/<name>` already exists, so finishing would overwrite a recording.
    #[error("recording {0:?} is already pending")]
    AlreadyPending(String),
    /// There is no recording of that name where the operation looked (`failed/` for a retry).
    #[error("no recording {name:?} in {state}/")]
    NotFound {
        /// The spool directory looked in.
        state: &'static str,
        /// The recording name asked for.
        name: String,
    },
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Attaches the operation and path to an I/O error.
fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError {
    let path = path.to_path_buf();
    move |source| SpoolError::Io { op, path, source }
}

/// The contents of `failed/<name>/error.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub(crate) struct FailureRecord {
    /// The HTTP status of the refusal, or None when there was no HTTP answer.
    pub status: Option<u16>,
    /// Why the recording was refused.
    pub error: String,
    /// The response body (already truncated by the caller).
    pub body: String,
    /// When, as ISO-8601 UTC.
    pub time: String,
}

/// The spool root. Cheap to clone; every method works on the file system directly.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    /// The free space was below the floor at the last [`Spool::has_room`] check.
    low_space: Arc<AtomicBool>,
}

impl Spool {
    /// Opens (creating if needed) the spool at `root` with its `active/`, `pending/` and
    /// `failed/` directories.
    pub fn open(root: &Path) -> Result<Spool, SpoolError> {
        let spool = Spool {
            root: root.to_path_buf(),
            low_space: Arc::new(AtomicBool::new(false)),
        };
        for dir in ["active", "pending", "failed"] {
            let path = spool.root.join(dir);
            fs::create_dir_all(&path).map_err(io_err("create", &path))?;
        }
        Ok(spool)
    }

    /// The spool root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/active/<name>`, where the recorder writes `audio.wav` (the caller creates it).
    pub fn active_dir(&self, name: &str) -> PathBuf {
        self.root.join("active").join(name)
    }

    /// `<root>/pending/<name>`.
    pub fn pending_dir(&self, name: &str) -> PathBuf {
        self.root.join("pending").join(name)
    }

    /// `<root>/failed/<name>`.
    pub fn failed_dir(&self, name: &str) -> PathBuf {
        self.root.join("failed").join(name)
    }

    /// `<root>/delivered/<name>`, where the delivery worker keeps delivered recordings for
    /// `tethr.retention` (the directory `delivered/` itself exists only once it is used).
    pub fn delivered_dir(&self, name: &str) -> PathBuf {
        self.root.join("delivered").join(name)
    }

    /// Completes a recording: writes `info.json` durably, fsyncs the delivered audio, removes the
    /// capture it was rendered from, and moves the directory from `active/` to `pending/`.
    /// Returns the pending directory.
    pub fn finish(&self, name: &str, info_json: &[u8]) -> Result<PathBuf, SpoolError> {
        check_name(name)?;
        let active = self.active_dir(name);
        let pending = self.pending_dir(name);
        if pending.exists() {
            return Err(SpoolError::AlreadyPending(name.to_string()));
        }
        write_durably(&active, INFO_FILE, info_json)?;
        let audio = audio_in(&active).map_or_else(|| active.join(AUDIO_FILE), |(p, _)| p);
        File::open(&audio)
            .and_then(|f| f.sync_all())
            .map_err(io_err("fsync", &audio))?;
        let capture = active.join(CAPTURE_FILE);
        match fs::remove_file(&capture) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &capture)(e)),
            _ => {}
        }
        sync_dir(&active)?;
        fs::rename(&active, &pending).map_err(io_err("move to pending", &active))?;
        sync_dir(&self.root.join("active"))?;
        sync_dir(&self.root.join("pending"))?;
        self.journal(name, JournalEvent::Finalized, "waiting in pending/ for delivery");
        Ok(pending)
    }

    /// Makes the capture the delivered audio as it is (per-stream WAV): the render step's
    /// identity case.
    pub fn adopt_capture(&self, name: &str) -> Result<(), SpoolError> {
        check_name(name)?;
        let active = self.active_dir(name);
        let capture = active.join(CAPTURE_FILE);
        if capture.exists() {
            fs::rename(&capture, active.join(AUDIO_FILE)).map_err(io_err("rename", &capture))?;
            sync_dir(&active)?;
        }
        Ok(())
    }

    /// Writes `file` into `active/<name>/` durably (used for `call.json`).
    pub fn write_active(&self, name: &str, file: &str, bytes: &[u8]) -> Result<(), SpoolError> {
        check_name(name)?;
        write_durably(&self.active_dir(name), file, bytes)
    }

    /// Writes a pending recording's `state.json` durably.
    pub fn write_state(&self, name: &str, state: &DeliveryState) -> Result<(), SpoolError> {
        check_name(name)?;
        // Serialising a struct of strings and integers cannot fail.
        let json = serde_json::to_vec_pretty(state).expect("DeliveryState serialises");
        write_durably(&self.pending_dir(name), STATE_FILE, &json)
    }

    /// A pending recording's `state.json`, if it has one that parses.
    pub fn read_state(&self, name: &str) -> Option<DeliveryState> {
        check_name(name).ok()?;
        let bytes = fs::read(self.pending_dir(name).join(STATE_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Names of the recordings in `pending/`, oldest first (by directory modification time,
    /// then name). Entries that are not directories with safe names are skipped.
    pub fn pending(&self) -> Result<Vec<String>, SpoolError> {
        self.names_in("pending")
    }

    /// Names of the recordings in `<root>/<state>/` (`active`, `pending`, `failed`,
    /// `delivered`), oldest first as for [`Spool::pending`]; empty when the directory does not
    /// exist.
    pub fn names_in(&self, state: &str) -> Result<Vec<String>, SpoolError> {
        let dir = self.root.join(state);
        let mut found: Vec<(SystemTime, String)> = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() || check_name(&name).is_err() {
                continue;
            }
            found.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), name));
        }
        found.sort();
        Ok(found.into_iter().map(|(_, name)| name).collect())
    }

    /// Removes a delivered recording from `pending/`.
    pub(crate) fn remove_pending(&self, name: &str) -> Result<(), SpoolError> {
        check_name(name)?;
        let dir = self.pending_dir(name);
        fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
        sync_dir(&self.root.join("pending"))
    }

    /// Moves a refused recording to `failed/`, with `error.json` written first so the failed
    /// directory appears complete. If `failed/<name>` is taken, `<name>.1`, `<name>.2`… are
    /// used. Returns the failed directory.
    pub(crate) fn fail(&self, name: &str, record: &FailureRecord) -> Result<PathBuf, SpoolError> {
        check_name(name)?;
        self.move_to_failed("pending", name, record)
    }

    /// Moves `active/<name>` to `failed/` as [`Spool::fail`] does for a pending one (crash
    /// recovery, when what is left cannot be finalized).
    pub(crate) fn fail_active(&self, name: &str, record: &FailureRecord) -> Result<PathBuf, SpoolError> {
        check_name(name)?;
        self.move_to_failed("active", name, record)
    }

    fn move_to_failed(&self, from: &str, name: &str, record: &FailureRecord) -> Result<PathBuf, SpoolError> {
        let source = self.root.join(from).join(name);
        // Serialising a struct of strings and integers cannot fail.
        let json = serde_json::to_vec_pretty(record).expect("FailureRecord serialises");
        write_durably(&source, ERROR_FILE, &json)?;
        let mut target = self.failed_dir(name);
        let mut n = 0u32;
        while target.exists() {
            n += 1;
            target = self.failed_dir(&format!("{name}.{n}"));
        }
        fs::rename(&source, &target).map_err(io_err("move to failed", &source))?;
        sync_dir(&self.root.join(from))?;
        sync_dir(&self.root.join("failed"))?;
        let moved_as = target.file_name().and_then(|n| n.to_str()).unwrap_or(name);
        self.journal(moved_as, JournalEvent::Failed, &record.error);
        Ok(target)
    }

    /// A failed recording's `error.json`, if it has one that parses.
    pub(crate) fn read_failure(&self, name: &str) -> Option<FailureRecord> {
        check_name(name).ok()?;
        let bytes = fs::read(self.failed_dir(name).join(ERROR_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Moves `failed/<name>` back to `pending/<name>` for another round of delivery, with its
    /// `error.json` and `state.json` removed first (so the attempts and the maximum age start
    /// again), and journals it. A running gateway picks it up at its next scan of `pending/`.
    pub fn retry(&self, name: &str) -> Result<(), SpoolError> {
        check_name(name)?;
        let failed = self.failed_dir(name);
        if !failed.is_dir() {
            return Err(SpoolError::NotFound { state: "failed", name: name.to_string() });
        }
        let pending = self.pending_dir(name);
        if pending.exists() {
            return Err(SpoolError::AlreadyPending(name.to_string()));
        }
        let was = self.read_failure(name).map(|r| r.error).unwrap_or_default();
        for file in [STATE_FILE, ERROR_FILE] {
            let path = failed.join(file);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &path)(e)),
                _ => {}
            }
        }
        sync_dir(&failed)?;
        fs::rename(&failed, &pending).map_err(io_err("move to pending", &failed))?;
        sync_dir(&self.root.join("failed"))?;
        sync_dir(&self.root.join("pending"))?;
        let detail = if was.is_empty() {
            "moved from failed/ to pending/ by spool retry".to_string()
        } else {
            format!("moved from failed/ to pending/ by spool retry; it had failed with: {was}")
        };
        self.journal(name, JournalEvent::Retried, &detail);
        Ok(())
    }

    /// Removes every recording in `delivered/`, journaling each; returns how many went.
    pub fn purge(&self) -> Result<usize, SpoolError> {
        let names = self.names_in("delivered")?;
        for name in &names {
            let dir = self.delivered_dir(name);
            fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
            self.journal(name, JournalEvent::Purged, "removed from delivered/ by spool purge");
        }
        if !names.is_empty() {
            sync_dir(&self.root.join("delivered"))?;
        }
        Ok(names.len())
    }

    /// Bytes available to the gateway on the spool's file system (statvfs `f_bavail`).
    pub fn free_bytes(&self) -> Result<u64, SpoolError> {
        let st = nix::sys::statvfs::statvfs(&self.root).map_err(|e| SpoolError::Io {
            op: "statvfs",
            path: self.root.clone(),
            source: e.into(),
        })?;
        Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
    }

    /// Whether a new call may start: false when the spool's free space is below `min_free`
    /// bytes (0 = no floor), logged at error naming `spool.min_free`; the first check that
    /// finds room again after that logs at info. A free space that cannot be measured does not
    /// refuse calls (logged at warn).
    pub fn has_room(&self, min_free: u64) -> bool {
        if min_free == 0 {
            return true;
        }
        match self.free_bytes() {
            Ok(free) if free < min_free => {
                self.low_space.store(true, Ordering::Relaxed);
                tracing::error!(free_bytes = free, min_free_bytes = min_free,
                    "free space in the spool is below spool.min_free: INVITE refused with 503; calls in progress and uploads go on");
                false
            }
            Ok(free) => {
                if self.low_space.swap(false, Ordering::Relaxed) {
                    tracing::info!(free_bytes = free, min_free_bytes = min_free,
                        "free space in the spool is above spool.min_free again: accepting new calls");
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot measure the spool's free space; accepting the call");
                true
            }
        }
    }
}

/// Rejects names that are not one plain file name, so `pending/<name>` cannot escape the spool.
fn check_name(name: &str) -> Result<(), SpoolError> {
    let safe = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if safe {
        Ok(())
    } else {
        Err(SpoolError::BadName(name.to_string()))
    }
}

/// Writes `dir/file` so that after a crash it is either absent or complete: temp file, fsync,
/// rename, fsync of the directory.
pub(crate) fn write_durably(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), SpoolError> {
    let tmp = dir.join(format!(".{file}.tmp"));
    let dest = dir.join(file);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, &dest).map_err(io_err("rename", &tmp))?;
    sync_dir(dir)
}

/// Fsyncs a directory so renames into and out of it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool_with_active(name: &str) -> (tempfile::TempDir, Spool) {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path()).unwrap();
        fs::create_dir(spool.active_dir(name)).unwrap();
        fs::write(spool.active_dir(name).join(AUDIO_FILE), b"RIFF....WAVE").unwrap();
        (tmp, spool)
    }

    #[test]
    fn finish_moves_audio_and_info_to_pending() {
        let (_tmp, spool) = spool_with_active("call-1");
        let dir = spool.finish("call-1", br#"{"sessionId":"s1"}"#).unwrap();
        assert_eq!(dir, spool.pending_dir("call-1"));
        assert_eq!(fs::read(dir.join(INFO_FILE)).unwrap(), br#"{"sessionId":"s1"}"#);
        assert_eq!(fs::read(dir.join(AUDIO_FILE)).unwrap(), b"RIFF....WAVE");
        assert!(!spool.active_dir("call-1").exists());
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 2, "no temp files left: {leftovers:?}");
        assert_eq!(spool.pending().unwrap(), vec!["call-1"]);
    }

    #[test]
    fn finish_without_audio_fails_and_leaves_the_recording_active() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path()).unwrap();
        fs::create_dir(spool.active_dir("no-audio")).unwrap();
        assert!(matches!(
            spool.finish("no-audio", b"{}"),
            Err(SpoolError::Io { op: "fsync", .. })
        ));
        assert!(spool.active_dir("no-audio").exists());
        assert!(spool.pending().unwrap().is_empty());
    }

    #[test]
    fn finish_refuses_to_overwrite_a_pending_recording() {
        let (_tmp, spool) = spool_with_active("dup");
        fs::create_dir(spool.pending_dir("dup")).unwrap();
        assert!(matches!(spool.finish("dup", b"{}"), Err(SpoolError::AlreadyPending(_))));
    }

    #[test]
    fn unsafe_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path()).unwrap();
        for name in ["", "..", ".hidden", "a/b", "a b", "x\u{e9}"] {
            assert!(
                matches!(spool.finish(name, b"{}"), Err(SpoolError::BadName(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn pending_lists_oldest_first_and_skips_strays() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path()).unwrap();
        let base = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        for (name, age) in [("b", 10), ("a", 20), ("c", 10)] {
            fs::create_dir(spool.pending_dir(name)).unwrap();
            let dir = File::open(spool.pending_dir(name)).unwrap();
            dir.set_modified(base - std::time::Duration::from_secs(age)).unwrap();
        }
        fs::write(spool.root().join("pending").join("stray-file"), b"").unwrap();
        fs::create_dir(spool.pending_dir(".partial")).unwrap();
        assert_eq!(spool.pending().unwrap(), vec!["a", "b", "c"]);
    }

    #[test]
    fn fail_writes_error_json_and_moves_to_failed_without_losing_files() {
        let (_tmp, spool) = spool_with_active("bad");
        spool.finish("bad", b"{}").unwrap();
        let record = FailureRecord {
            status: Some(400),
            error: "HTTP 400".into(),
            body: "direction invalid".into(),
            time: "2025-01-02T03:04:05Z".into(),
        };
        let dir = spool.fail("bad", &record).unwrap();
        assert_eq!(dir, spool.failed_dir("bad"));
        let written: serde_json::Value = serde_json::from_slice(&fs::read(dir.join(ERROR_FILE)).unwrap()).unwrap();
        assert_eq!(
            written,
            serde_json::json!({"status": 400, "error": "HTTP 400", "body": "direction invalid", "time": "2025-01-02T03:04:05Z"})
        );
        assert_eq!(fs::read(dir.join(AUDIO_FILE)).unwrap(), b"RIFF....WAVE");
        assert!(spool.pending().unwrap().is_empty());

        // The same name failing again does not clobber the first.
        fs::create_dir(spool.active_dir("bad")).unwrap();
        fs::write(spool.active_dir("bad").join(AUDIO_FILE), b"second").unwrap();
        spool.finish("bad", b"{}").unwrap();
        assert_eq!(spool.fail("bad", &record).unwrap(), spool.failed_dir("bad.1"));
        assert_eq!(fs::read(spool.failed_dir("bad.1").join(AUDIO_FILE)).unwrap(), b"second");
    }

    #[test]
    fn remove_pending_deletes_the_directory() {
        let (_tmp, spool) = spool_with_active("done");
        spool.finish("done", b"{}").unwrap();
        spool.remove_pending("done").unwrap();
        assert!(!spool.pending_dir("done").exists());
    }
}
