//! The local directory sink: puts `<name>.wav` (or `.mp3`, `.opus`: the configured format) and
//! `<name>.json` into an output directory.
//!
//! Each file appears atomically under its final name: it is renamed out of the spool when the
//! output is on the same file system, and otherwise copied to `.<file>.part` beside its
//! destination, fsynced and renamed. The WAV goes first and the directory is fsynced between the
//! two, so a watcher that sees `<name>.json` can always read `<name>.wav`; the call's audit record
//! follows as `<name>.audit.json` with the delivery outcome in it. Delivery is
//! idempotent: if a crash came after a file had been renamed out of the spool, the next attempt
//! finds it at its destination and carries on. This module does not remove the spool directory
//! (the worker does, once delivery succeeded) and does no retrying.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::audit;
use super::spool::{AUDIO_FILE, AUDIO_KINDS, INFO_FILE, audio_in, write_durably};
use crate::clock;
use crate::mapping::iso8601;

/// An error from delivering to the output directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// A file the recording needs is neither in the spool nor already delivered.
    #[error("{} is missing", .0.display())]
    Missing(PathBuf),
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

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LocalError {
    let path = path.to_path_buf();
    move |source| LocalError::Io { op, path, source }
}

/// Delivers the recording in `src` (a `pending/<name>` directory) to `out` as `<name>.<ext>` and
/// then `<name>.json`. Blocking: run it on a blocking thread.
pub fn deliver(src: &Path, out: &Path, name: &str) -> Result<(), LocalError> {
    fs::create_dir_all(out).map_err(io_err("create", out))?;
    let (audio, kind) = audio_in(src).unwrap_or_else(|| (src.join(AUDIO_FILE), AUDIO_KINDS[0].1));
    let audio_name = format!("{name}.{}", kind.extension);
    place(&audio, out, &audio_name)?;
    // Make the WAV durable under its name before the JSON can exist.
    sync_dir(out)?;
    place(&src.join(INFO_FILE), out, &format!("{name}.json"))?;
    sync_dir(out)?;
    write_audit(src, out, name, &audio_name);
    Ok(())
}

/// Puts the call's audit record, with where the audio went, beside the recording as
/// `<name>.audit.json` (last, so its presence means the pair is complete). Best effort: a
/// recording without a record (recovered after a crash) gets none, and a failed write is a
/// warning, never a failed delivery.
fn write_audit(src: &Path, out: &Path, name: &str, audio_name: &str) {
    let Some(mut record) = audit::read(src) else { return };
    record.delivery = Some(audit::AuditDelivery {
        outcome: "delivered".into(),
        time: iso8601(clock::wall_now()),
        call_id: None,
        path: Some(out.join(audio_name).display().to_string()),
        reason: None,
    });
    if let Err(e) = write_durably(out, &format!("{name}.audit.json"), &record.to_json()) {
        tracing::warn!(recording = %name, error = %e, "cannot write the audit record beside the recording");
    }
}

/// Moves `src` to `out/file`, by rename when possible and by copy across file systems.
fn place(src: &Path, out: &Path, file: &str) -> Result<(), LocalError> {
    let dest = out.join(file);
    match fs::rename(src, &dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => copy_then_rename(src, out, file),
        // An earlier attempt renamed it and then stopped (crash or shutdown) before finishing.
        Err(e) if e.kind() == io::ErrorKind::NotFound && dest.is_file() => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !src.exists() => Err(LocalError::Missing(src.to_path_buf())),
        Err(e) => Err(io_err("rename", src)(e)),
    }
}

/// Copies `src` to `out/.<file>.part`, fsyncs it and renames it to `out/file`, so the final
/// name never shows a partial file. The source is left in place.
fn copy_then_rename(src: &Path, out: &Path, file: &str) -> Result<(), LocalError> {
    let part = out.join(format!(".{file}.part"));
    fs::copy(src, &part).map_err(io_err("copy", src))?;
    File::open(&part)
        .and_then(|f| f.sync_all())
        .map_err(io_err("fsync", &part))?;
    fs::rename(&part, out.join(file)).map_err(io_err("rename", &part))
}

fn sync_dir(dir: &Path) -> Result<(), LocalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(AUDIO_FILE), b"wav bytes").unwrap();
        fs::write(dir.join(INFO_FILE), b"{\"sessionId\":\"s\"}").unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn copy_fallback_leaves_no_part_file_and_keeps_the_source() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        recording(&src);
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        copy_then_rename(&src.join(AUDIO_FILE), &out, "n.wav").unwrap();
        assert_eq!(fs::read(out.join("n.wav")).unwrap(), b"wav bytes");
        assert_eq!(names(&out), vec!["n.wav"]);
        assert!(src.join(AUDIO_FILE).exists());
    }

    #[test]
    fn redelivery_after_a_partial_attempt_completes() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("pending").join("n");
        recording(&src);
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        // The previous attempt moved the WAV and stopped.
        fs::rename(src.join(AUDIO_FILE), out.join("n.wav")).unwrap();
        deliver(&src, &out, "n").unwrap();
        assert_eq!(names(&out), vec!["n.json", "n.wav"]);
        assert_eq!(fs::read(out.join("n.json")).unwrap(), b"{\"sessionId\":\"s\"}");
    }

    #[test]
    fn missing_audio_is_reported_as_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("n");
        fs::create_dir(&src).unwrap();
        fs::write(src.join(INFO_FILE), b"{}").unwrap();
        let err = deliver(&src, &tmp.path().join("out"), "n").unwrap_err();
        assert!(matches!(err, LocalError::Missing(p) if p.ends_with(AUDIO_FILE)));
        assert!(
            !tmp.path().join("out").join("n.json").exists(),
            "no JSON without its WAV"
        );
    }
}
