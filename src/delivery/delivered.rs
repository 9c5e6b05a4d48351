//! What happens to a recording Tethr has: removed from the spool, or kept for `tethr.retention`
//! in `delivered/<name>/` with a `delivered.json` saying when and under which callId.
//!
//! Kept recordings are removed by the worker once older than the retention (and by `spool
//! purge` at any time). Blocking file operations: run them on a blocking thread.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::spool::{Spool, SpoolError, sync_dir, write_durably};

/// The record of a delivery, inside `delivered/<name>/`.
pub const DELIVERED_FILE: &str = "delivered.json";

/// The contents of `delivered.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveredRecord {
    /// Tethr's callId; absent when Tethr did not say (or excluded the session).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub call_id: Option<String>,
    /// When, ISO-8601 UTC.
    pub time: String,
    /// The recording's sessionId.
    pub session_id: String,
    /// How Tethr came to have it: `uploaded`, or the `/status` answer (`Concluded`,
    /// `Excluded`, …) when an earlier upload had already arrived.
    pub how: String,
}

fn io_err(op: &'static str, path: PathBuf) -> impl FnOnce(std::io::Error) -> SpoolError {
    move |source| SpoolError::Io { op, path, source }
}

/// Moves a delivered recording from `pending/` to `delivered/` with its `delivered.json`
/// written first. If `delivered/<name>` is taken, `<name>.1`, `<name>.2`… are used.
pub fn keep(spool: &Spool, name: &str, record: &DeliveredRecord) -> Result<PathBuf, SpoolError> {
    let pending = spool.pending_dir(name);
    // Serialising a struct of strings cannot fail.
    let json = serde_json::to_vec_pretty(record).expect("DeliveredRecord serialises");
    write_durably(&pending, DELIVERED_FILE, &json)?;
    let root = spool.root().join("delivered");
    fs::create_dir_all(&root).map_err(io_err("create", root.clone()))?;
    let mut target = spool.delivered_dir(name);
    let mut n = 0u32;
    while target.exists() {
        n += 1;
        target = spool.delivered_dir(&format!("{name}.{n}"));
    }
    fs::rename(&pending, &target).map_err(io_err("move to delivered", pending.clone()))?;
    sync_dir(&spool.root().join("pending"))?;
    sync_dir(&root)?;
    Ok(target)
}

/// Removes the kept recordings delivered more than `retention` before `now`; returns their
/// names. A directory without a readable `delivered.json` is left alone.
pub fn prune(spool: &Spool, retention: Duration, now: SystemTime) -> Vec<String> {
    let root = spool.root().join("delivered");
    let Ok(entries) = fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(time) = fs::read(dir.join(DELIVERED_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<DeliveredRecord>(&b).ok())
            .and_then(|r| r.time.parse::<jiff::Timestamp>().ok())
        else {
            continue;
        };
        let Ok(time) = SystemTime::try_from(time) else { continue };
        let age = now.duration_since(time).unwrap_or_default();
        if age >= retention && fs::remove_dir_all(&dir).is_ok() {
            removed.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::iso8601;

    #[test]
    fn kept_recordings_carry_delivered_json_and_are_pruned_after_retention() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path()).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        for (name, age) in [("old", 7200), ("new", 60)] {
            fs::create_dir_all(spool.pending_dir(name)).unwrap();
            fs::write(spool.pending_dir(name).join("audio.wav"), b"RIFF").unwrap();
            let record = DeliveredRecord {
                call_id: Some(format!("call-{name}")),
                time: iso8601(now - Duration::from_secs(age)),
                session_id: format!("rs-{name}"),
                how: "uploaded".into(),
            };
            assert_eq!(keep(&spool, name, &record).unwrap(), spool.delivered_dir(name));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(spool.delivered_dir("new").join(DELIVERED_FILE)).unwrap()).unwrap();
        assert_eq!(json["callId"], "call-new");
        assert_eq!(json["sessionId"], "rs-new");
        assert!(spool.delivered_dir("new").join("audio.wav").exists());
        assert_eq!(prune(&spool, Duration::from_secs(3600), now), vec!["old"]);
        assert!(!spool.delivered_dir("old").exists());
        assert!(spool.delivered_dir("new").exists());
    }
}
