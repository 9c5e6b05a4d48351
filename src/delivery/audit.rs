//! The per-call audit record, `audit.json`: when the INVITE came, when we answered, when the
//! ACK and the end came and why, what each stream received, how long the file is, what was
//! wrong with the metadata, and finally what became of the recording (delivered where, or
//! refused why). It answers "where is my recording, and what happened to it?" for one call.
//!
//! The runtime writes it into the recording's spool directory before the call moves to
//! `pending/`, so it travels with the recording to `failed/` or `delivered/`. The delivery
//! worker appends the outcome; the local sink also puts a copy, outcome included, beside the
//! recording as `<name>.audit.json`. It is for operators, never sent to Tethr. Writing it is
//! best effort: a recording is never held back because its audit record could not be written.
//! This module does not decide anything about delivery and keeps no state.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::spool::write_durably;

/// The audit record inside a recording's spool directory.
pub const AUDIT_FILE: &str = "audit.json";

/// The contents of `audit.json`. Times are ISO-8601 UTC with milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// The SIP Call-ID of the recording session (the `sessionId` sent to Tethr).
    pub session_id: String,
    /// The recording's name in the spool and the output directory.
    pub recording: String,
    /// When the INVITE reached the signalling task.
    pub invite_received: String,
    /// When the 200 OK was sent: the recording's time zero.
    pub answered: String,
    /// When the ACK came; absent when it never did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<String>,
    /// When the call ended (the BYE, the last RTP before a timeout, the shutdown…).
    pub ended: String,
    /// Why it ended: `bye`, `rtp-timeout`, `shutdown`, `no-ack`, `session-expired`.
    pub end_reason: String,
    /// Length of the audio file, in seconds.
    pub duration_sec: f64,
    /// One entry per recorded stream, in channel order.
    pub streams: Vec<AuditStream>,
    /// Problems in the recording metadata that were tolerated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata_warnings: Vec<String>,
    /// Why the recording metadata could not be read, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_error: Option<String>,
    /// Notes about the recording (a write error that cost audio…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What became of the recording, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<AuditDelivery>,
}

/// What one stream received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditStream {
    /// The channel in the WAV (0-based).
    pub channel: usize,
    /// The m-line's `a=label`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `PCMU` or `PCMA`.
    pub codec: String,
    /// RTP packets placed in the recording.
    pub packets: u64,
    /// Sequence numbers that never arrived.
    pub lost: u64,
    /// Packets that arrived after their place had been written, dropped.
    pub late: u64,
}

/// The delivery outcome appended to the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditDelivery {
    /// `delivered` or `failed`.
    pub outcome: String,
    /// When, ISO-8601 UTC.
    pub time: String,
    /// Tethr's callId, when Tethr has it and said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// Where the local sink put the audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Why it was refused (`failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AuditRecord {
    /// The record as pretty JSON. Serializing strings and numbers cannot fail; a NaN duration
    /// (which JSON cannot hold) becomes `null` in serde_json, so this never errors either.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// Reads the record in `dir`, if it has one that parses.
pub fn read(dir: &Path) -> Option<AuditRecord> {
    serde_json::from_slice(&fs::read(dir.join(AUDIT_FILE)).ok()?).ok()
}

/// Adds the delivery outcome to the record in `dir` (durably). Ok(false) when the recording has
/// no record (recovered after a crash, or written by an older version). Blocking.
pub fn append_delivery(dir: &Path, delivery: AuditDelivery) -> io::Result<bool> {
    let Some(mut record) = read(dir) else { return Ok(false) };
    record.delivery = Some(delivery);
    write_durably(dir, AUDIT_FILE, &record.to_json()).map_err(io::Error::other)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AuditRecord {
        AuditRecord {
            session_id: "abc@10.0.0.1".into(),
            recording: "abc_10.0.0.1".into(),
            invite_received: "2026-01-01T00:00:00.000Z".into(),
            answered: "2026-01-01T00:00:00.012Z".into(),
            ack: None,
            ended: "2026-01-01T00:01:00.012Z".into(),
            end_reason: "bye".into(),
            duration_sec: 60.0,
            streams: vec![AuditStream { channel: 0, label: Some("1".into()), codec: "PCMU".into(), packets: 3000, lost: 2, late: 1 }],
            metadata_warnings: vec!["stray </x> ignored".into()],
            metadata_error: None,
            notes: Vec::new(),
            delivery: None,
        }
    }

    #[test]
    fn delivery_outcome_is_appended_and_the_rest_kept() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(AUDIT_FILE), record().to_json()).unwrap();
        let delivered = AuditDelivery {
            outcome: "delivered".into(),
            time: "2026-01-01T00:01:01.000Z".into(),
            call_id: Some("tethr-1".into()),
            path: None,
            reason: None,
        };
        assert!(append_delivery(tmp.path(), delivered.clone()).unwrap());
        let back = read(tmp.path()).unwrap();
        assert_eq!(back, AuditRecord { delivery: Some(delivered), ..record() });
        let text = fs::read_to_string(tmp.path().join(AUDIT_FILE)).unwrap();
        assert!(!text.contains("null"), "absent fields are left out: {text}");
        assert!(!text.contains("\"ack\""), "{text}");
    }

    #[test]
    fn a_recording_without_a_record_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let outcome = AuditDelivery { outcome: "failed".into(), time: "t".into(), call_id: None, path: None, reason: Some("400".into()) };
        assert!(!append_delivery(tmp.path(), outcome).unwrap());
        assert!(!tmp.path().join(AUDIT_FILE).exists());
    }
}
