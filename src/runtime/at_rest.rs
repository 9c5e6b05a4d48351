//! Recordings at rest: who may read them, and how long the local sink keeps them.
//!
//! Calls are personal data, so everything the gateway writes under the spool and the output
//! directory is readable by the service only: files 0600 and directories 0700, or with
//! `output.group` 0640/0750 and owned by that group (for the process that picks recordings up).
//! This is done with the process's file-creation mask, set once at start, rather than a mode on
//! each `open`: every file any part of the gateway creates (WAV, call.json, info.json, journal,
//! audit records, error.json, copies across file systems) is covered, including files added
//! later. The group comes from the set-group-ID bit on the spool and output directories, which
//! Linux passes on to every file and subdirectory created beneath them (and a rename keeps it).
//! At start, what an earlier run left in the spool is brought to the same modes; of the output
//! directory (which other tools may share) only the directory itself is changed.
//!
//! With `output.retention`, the local sink's directory is swept at start and then hourly, and
//! recordings older than the retention (by modification time: when the recording was
//! finished) are deleted. This module does not touch Tethr deliveries (`tethr.retention`).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, Group};
use tracing::{info, warn};

use crate::clock;
use crate::config::Config;

/// How often the output directory is swept for recordings past `output.retention`.
pub const RETENTION_SWEEP: Duration = Duration::from_secs(3600);

/// Why the recording directories could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AtRestError {
    /// `output.group` names no group on this host (check-config reports it first).
    #[error("output.group: no group named `{0}` on this host")]
    NoGroup(String),
    /// A directory could not be created, or its mode or group set.
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: io::Error },
}

/// Sets the file-creation mask and prepares the spool and output directories: created if
/// missing, mode 0700 (or 02750 and owned by `output.group`). Call before anything is written.
pub fn prepare(config: &Config) -> Result<(), AtRestError> {
    let group = match &config.output.group {
        Some(name) => match Group::from_name(name) {
            Ok(Some(g)) => Some(g.gid),
            _ => return Err(AtRestError::NoGroup(name.clone())),
        },
        None => None,
    };
    // Others never; the group may read (not write) when one is configured.
    let mask = if group.is_some() { 0o027 } else { 0o077 };
    umask(Mode::from_bits_truncate(mask));
    // The spool is the gateway's own: all of it, including what an earlier run left with looser
    // modes. The output directory may be shared with other tools: only the directory itself.
    secure(&config.spool.dir, group, true)?;
    secure(&config.output.dir, group, false)
}

/// Creates `dir` if needed and gives it (and, when `recursive`, everything below it) the mode
/// and group of recordings.
fn secure(dir: &Path, group: Option<Gid>, recursive: bool) -> Result<(), AtRestError> {
    let io_err = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| AtRestError::Io { op, path, source }
    };
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err("create", dir))?;
    let (dir_mode, file_mode) = if group.is_some() { (0o2750, 0o640) } else { (0o700, 0o600) };
    let set = |path: &Path, mode: u32| -> Result<(), AtRestError> {
        if let Some(gid) = group {
            std::os::unix::fs::chown(path, None, Some(gid.as_raw())).map_err(io_err("chown", path))?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
    };
    set(dir, dir_mode)?;
    if !recursive {
        return Ok(());
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io_err("read", &d))?.flatten() {
            // Symbolic links are left alone (their targets are not ours to change).
            match entry.file_type() {
                Ok(t) if t.is_dir() => {
                    set(&entry.path(), dir_mode)?;
                    stack.push(entry.path());
                }
                Ok(t) if t.is_file() => set(&entry.path(), file_mode)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Whether a file last modified at `modified` is past `retention` at `now` (0 = never).
pub fn expired(modified: SystemTime, now: SystemTime, retention: Duration) -> bool {
    !retention.is_zero() && now.duration_since(modified).is_ok_and(|age| age > retention)
}

/// Deletes the recordings (`*.wav`, `*.json`, leftover `.part` copies) in `dir` older than
/// `retention`; returns the names deleted. Blocking.
pub fn sweep(dir: &Path, retention: Duration, now: SystemTime) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut deleted = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let recording = [".wav", ".json", ".part"].iter().any(|s| name.ends_with(s));
        let Ok(meta) = entry.metadata() else { continue };
        if !recording || !meta.is_file() || !meta.modified().is_ok_and(|m| expired(m, now, retention)) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => deleted.push(name),
            Err(e) => warn!(file = %entry.path().display(), error = %e, "output.retention: cannot delete an expired recording"),
        }
    }
    deleted.sort();
    deleted
}

/// Sweeps the local sink's directory at start and every [`RETENTION_SWEEP`].
pub async fn retention_task(dir: PathBuf, retention: Duration) {
    loop {
        let d = dir.clone();
        if let Ok(deleted) = tokio::task::spawn_blocking(move || sweep(&d, retention, clock::wall_now())).await {
            for name in &deleted {
                info!(file = %name, retention_s = retention.as_secs(), "output.retention: deleted an expired recording");
            }
        }
        tokio::time::sleep(RETENTION_SWEEP).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn zero_retention_keeps_everything() {
        let now = clock::wall_now();
        assert!(!expired(now - 1000 * DAY, now, Duration::ZERO));
        assert!(expired(now - 2 * DAY, now, DAY));
        assert!(!expired(now - DAY / 2, now, DAY));
        assert!(!expired(now + DAY, now, DAY), "a file from the future is not expired");
    }

    #[test]
    fn an_old_spool_is_tightened_but_a_shared_output_keeps_its_subdirectories() {
        let tmp = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let loose = |dir: &Path| {
            fs::create_dir_all(dir.join("pending/old")).unwrap();
            fs::write(dir.join("pending/old/audio.wav"), b"x").unwrap();
            for p in [dir.to_path_buf(), dir.join("pending"), dir.join("pending/old")] {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
            fs::set_permissions(dir.join("pending/old/audio.wav"), fs::Permissions::from_mode(0o644)).unwrap();
        };
        let (spool, output) = (tmp.path().join("spool"), tmp.path().join("output"));
        loose(&spool);
        loose(&output);
        secure(&spool, None, true).unwrap();
        secure(&output, None, false).unwrap();
        assert_eq!(mode(&spool), 0o700);
        assert_eq!(mode(&spool.join("pending/old")), 0o700);
        assert_eq!(mode(&spool.join("pending/old/audio.wav")), 0o600);
        assert_eq!(mode(&output), 0o700);
        assert_eq!(mode(&output.join("pending")), 0o755, "not ours to change");
        secure(&tmp.path().join("new/dir"), None, false).unwrap();
        assert_eq!(mode(&tmp.path().join("new/dir")), 0o700, "created when missing");
    }

    #[test]
    fn sweep_deletes_old_recordings_only() {
        let tmp = tempfile::tempdir().unwrap();
        let now = clock::wall_now();
        let file = |name: &str, age: Duration| {
            let path = tmp.path().join(name);
            fs::write(&path, b"x").unwrap();
            fs::File::options().write(true).open(&path).unwrap().set_modified(now - age).unwrap();
        };
        file("old.wav", 3 * DAY);
        file("old.json", 3 * DAY);
        file("old.audit.json", 3 * DAY);
        file("new.wav", DAY / 2);
        file("new.json", DAY / 2);
        file("notes.txt", 3 * DAY);
        fs::create_dir(tmp.path().join("sub.wav")).unwrap();
        assert_eq!(sweep(tmp.path(), DAY, now), vec!["old.audit.json", "old.json", "old.wav"]);
        let mut left: Vec<String> =
            fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, vec!["new.json", "new.wav", "notes.txt", "sub.wav"]);
    }
}
