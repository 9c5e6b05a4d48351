//! The spool journal: `<spool>/journal.log`, one appended line per thing that happened to a
//! recording, so that an operator can follow one call from its start to Tethr with `grep NAME`.
//!
//! A line is `<ISO-8601 UTC time> <name> <event> <detail>`; the detail is free text on one line
//! (line breaks become spaces). The journal is a record for people, not state: nothing reads it
//! back, and writing it is best effort — a failed write logs a warning and never fails the
//! recording it describes. Lines are appended with one `write` on an `O_APPEND` file, so lines
//! from the gateway and from a `spool` command running beside it do not interleave. The file is
//! not fsynced (the state itself is durable in the spool directories; the journal only explains
//! it) and never rotated by the gateway (logrotate with `copytruncate` works).

use std::fs::OpenOptions;
use std::io::Write;
use std::time::SystemTime;

use super::spool::Spool;
use crate::clock;
use crate::mapping::iso8601;

/// The journal's file name in the spool root.
pub const JOURNAL_FILE: &str = "journal.log";

/// What happened to a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalEvent {
    /// The call started and its audio is being written to `active/`.
    Recorded,
    /// The call ended; its recording is complete in `pending/`.
    Finalized,
    /// A recording left in `active/` by a gateway that stopped was finalized at the next start.
    Recovered,
    /// A sink has the recording (Tethr answered with a callId, or the local file is in place).
    Delivered,
    /// The recording was moved to `failed/`.
    Failed,
    /// Another delivery attempt is coming: the worker scheduled one after a failure, or an
    /// operator moved the recording back from `failed/` with `spool retry`.
    Retried,
    /// The call was answered but deliberately not recorded or not sent (the detail says why).
    Skipped,
    /// A delivered recording kept for `tethr.retention` was removed.
    Purged,
}

impl JournalEvent {
    /// The word written in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            JournalEvent::Recorded => "recorded",
            JournalEvent::Finalized => "finalized",
            JournalEvent::Recovered => "recovered",
            JournalEvent::Delivered => "delivered",
            JournalEvent::Failed => "failed",
            JournalEvent::Retried => "retried",
            JournalEvent::Skipped => "skipped",
            JournalEvent::Purged => "purged",
        }
    }
}

/// One journal line, newline included.
fn line(time: SystemTime, name: &str, event: JournalEvent, detail: &str) -> String {
    let detail: String = detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let name = if name.is_empty() { "-" } else { name };
    let mut out = format!("{} {name} {}", iso8601(time), event.as_str());
    let detail = detail.trim();
    if !detail.is_empty() {
        out.push(' ');
        out.push_str(detail);
    }
    out.push('\n');
    out
}

impl Spool {
    /// Appends `<now> <name> <event> <detail>` to the journal. Best effort: a failure is logged
    /// as a warning and otherwise ignored. Blocking (one small append; no fsync).
    pub fn journal(&self, name: &str, event: JournalEvent, detail: &str) {
        let path = self.root().join(JOURNAL_FILE);
        let text = line(clock::wall_now(), name, event, detail);
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), recording = %name, event = event.as_str(), error = %e,
                "cannot write the spool journal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_line_is_time_name_event_detail_on_one_line() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        assert_eq!(
            line(t, "call-1", JournalEvent::Failed, "HTTP 400:\n{\"error\":\"bad\"}\r\n"),
            "2025-11-24T16:00:00.123Z call-1 failed HTTP 400: {\"error\":\"bad\"}\n"
        );
        assert_eq!(line(t, "", JournalEvent::Purged, ""), "2025-11-24T16:00:00.123Z - purged\n");
    }

    #[test]
    fn journal_appends_and_a_broken_journal_does_not_fail() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path()).unwrap();
        spool.journal("a", JournalEvent::Recorded, "2 streams");
        spool.journal("a", JournalEvent::Finalized, "bye");
        let text = std::fs::read_to_string(tmp.path().join(JOURNAL_FILE)).unwrap();
        let events: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(events, ["recorded", "finalized"]);

        // A directory where the file should be: the write fails, nothing panics.
        std::fs::remove_file(tmp.path().join(JOURNAL_FILE)).unwrap();
        std::fs::create_dir(tmp.path().join(JOURNAL_FILE)).unwrap();
        spool.journal("a", JournalEvent::Delivered, "");
    }
}
