//! Crash recovery: finalizes the recordings a stopped gateway left in `active/`.
//!
//! The recorder rewrites the WAV header once a second and keeps the call's facts in
//! `call.json` (`session::CallRecord`), so what a killed process leaves behind is a WAV whose
//! header may lag its data by up to a second (and whose last frame may be cut), plus the offer
//! and metadata as received. At start, before the delivery worker runs, [`recover`] takes each
//! `active/<name>/`: it repairs the WAV header to the whole frames really on disk, builds `info`
//! from the offer parsed again (metadata updates applied in order) with `endReason`
//! `interrupted` and a note saying why the recording is short, and moves it to `pending/` with
//! [`Spool::finish`]. A recording without usable audio goes to `failed/` with an `error.json`.
//!
//! Every step is safe to repeat (a crash during recovery is recovered at the next start) and
//! no audio is deleted: only a trailing partial frame is cut. This module does not deliver
//! anything and is not run while calls are being recorded.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::journal::JournalEvent;
use super::produce::{Finishing, produce};
use super::spool::{CALL_FILE, CAPTURE_FILE, FailureRecord, INFO_FILE, Spool, SpoolError, audio_in, sync_dir};
use crate::clock;
use crate::mapping::{self, ChannelSummary, Mapped, iso8601};
use crate::media::wav::{self, WavError};
pub use crate::media::wav::WavShape;
use crate::session::{self, CallRecord, EndReason};
use crate::siprec::{self, MetadataOutcome};

/// The note every recovered recording carries in `metaData.gateway.notes`.
pub const INTERRUPTED_NOTE: &str = "recording cut short: the gateway stopped during the call; \
the audio up to its last checkpoint (at most about a second before the stop) was kept and the \
recording was finalized when the gateway started again";

/// The note saying what a recovered recording does not know.
const STATS_NOTE: &str = "stream statistics (packets, loss, first and last packet) are unknown \
for a recording recovered after a stop and are left out";

/// An error from recovering one recording.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    /// The audio file is missing or is not a WAV this gateway can repair; the recording goes
    /// to `failed/`.
    #[error("no usable audio: {0}")]
    Unusable(String),
    /// Reading or repairing the audio file failed; the recording stays in `active/` for the
    /// next start.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Moving the recording failed; it stays in `active/` for the next start.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// Rendering the delivered audio failed; it stays in `active/` for the next start.
    #[error("{0}")]
    Produce(String),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RecoverError {
    let path = path.to_path_buf();
    move |source| RecoverError::Io { op, path, source }
}

/// Makes `path` a valid WAV of the whole frames on disk: rewrites the sizes in its header
/// ([`wav::repair_header`]: RF64 in place when the data passed 4 GiB) and cuts a trailing
/// partial frame, then fsyncs. Leaves a file that is already right untouched, so repeating it
/// changes nothing.
pub fn repair_wav(path: &Path) -> Result<WavShape, RecoverError> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RecoverError::Unusable(format!("{} is missing", path.display())));
        }
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let repaired = wav::repair_header(&mut file).map_err(|e| match e {
        WavError::Io(e) => io_err("repair", path)(e),
        e => RecoverError::Unusable(format!("{}: {e}", path.display())),
    })?;
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    let mut changed = repaired.changed;
    if len > repaired.len {
        file.set_len(repaired.len).map_err(io_err("truncate", path))?;
        changed = true;
    }
    if changed {
        file.sync_all().map_err(io_err("fsync", path))?;
    }
    Ok(repaired.shape)
}

/// What [`recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Recordings finalized into `pending/`.
    pub recovered: Vec<String>,
    /// Recordings moved to `failed/` (no usable audio).
    pub failed: Vec<String>,
    /// Recordings left in `active/` because of an I/O error (tried again at the next start).
    pub left: Vec<String>,
}

/// Finalizes every recording in `active/` (see the module doc). Blocking; run it before the
/// delivery worker starts and before any call is recorded. `limits` are the offer limits the
/// gateway parses offers with.
pub fn recover(spool: &Spool, finishing: &Finishing) -> RecoveryReport {
    let mut report = RecoveryReport::default();
    let names = match spool.names_in("active") {
        Ok(names) => names,
        Err(e) => {
            tracing::error!(error = %e, "cannot list the spool's active/: interrupted recordings are not recovered");
            return report;
        }
    };
    if !names.is_empty() {
        tracing::info!(count = names.len(), "recovering recordings interrupted by a stop");
    }
    for name in names {
        match recover_one(spool, &name, finishing) {
            Ok(pending_name) => report.recovered.push(pending_name),
            Err(RecoverError::Unusable(reason)) => {
                let record = FailureRecord {
                    status: None,
                    error: format!("interrupted recording has no usable audio: {reason}"),
                    body: String::new(),
                    time: iso8601(clock::wall_now()),
                };
                match spool.fail_active(&name, &record) {
                    Ok(dir) => {
                        tracing::error!(recording = %name, reason = %reason, dir = %dir.display(),
                            "interrupted recording has no usable audio; moved to failed/");
                        report.failed.push(name);
                    }
                    Err(e) => {
                        tracing::error!(recording = %name, error = %e, "cannot move an unusable recording to failed/");
                        report.left.push(name);
                    }
                }
            }
            Err(e) => {
                tracing::error!(recording = %name, error = %e,
                    "cannot recover an interrupted recording; it stays in active/ until the next start");
                report.left.push(name);
            }
        }
    }
    report
}

/// Recovers `active/<name>`; returns its name in `pending/`.
fn recover_one(spool: &Spool, name: &str, finishing: &Finishing) -> Result<String, RecoverError> {
    let active = spool.active_dir(name);
    let capture = active.join(CAPTURE_FILE);
    let legacy = active.join(super::spool::AUDIO_FILE);
    if !capture.exists() && !active.join(INFO_FILE).exists() && legacy.exists() {
        // Left by a version that recorded straight into audio.wav.
        std::fs::rename(&legacy, &capture).map_err(io_err("rename", &legacy))?;
    }
    let target = if capture.exists() {
        // When the recorder last wrote, read before the repair writes to the file.
        let wav_modified = std::fs::metadata(&capture).and_then(|m| m.modified()).ok();
        let shape = repair_wav(&capture)?;
        let record = read_record(&active.join(CALL_FILE));
        let mapped = recovered_info(name, record.as_ref(), &shape, wav_modified.unwrap_or_else(clock::wall_now), finishing);
        let target = free_name(spool, name)?;
        let secs = shape.duration().as_secs_f64();
        spool.journal(&target, JournalEvent::Recovered, &format!("interrupted call finalized at start with {secs:.1} s of audio"));
        let session_id = mapped.info["sessionId"].as_str().unwrap_or_default().to_string();
        produce(spool, &target, mapped, finishing.format).map_err(|e| RecoverError::Produce(e.to_string()))?;
        tracing::info!(recording = %target, %session_id, duration_s = format!("{secs:.1}"), "interrupted recording recovered and queued");
        target
    } else if active.join(INFO_FILE).exists() && audio_in(&active).is_some() {
        // Rendered and described before the stop, not yet moved: finish the move.
        let info = std::fs::read(active.join(INFO_FILE)).map_err(io_err("read", &active.join(INFO_FILE)))?;
        let target = free_name(spool, name)?;
        spool.finish(&target, &info)?;
        tracing::info!(recording = %target, "recording finalized before the stop queued");
        target
    } else {
        return Err(RecoverError::Unusable(format!("no {CAPTURE_FILE} in {}", active.display())));
    };
    Ok(target)
}

/// `call.json`, when it is there and parses.
fn read_record(path: &Path) -> Option<CallRecord> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "interrupted recording without call.json");
            return None;
        }
    };
    serde_json::from_slice(&bytes)
        .inspect_err(|e| tracing::warn!(path = %path.display(), error = %e, "call.json does not parse"))
        .ok()
}

/// The name the recording gets in `pending/`: its own, unless a pending recording has it
/// (never expected: names are made unique when a call starts), then `<name>-recovered[-N]`,
/// renamed within `active/` first so that a crash leaves it where recovery looks.
fn free_name(spool: &Spool, name: &str) -> Result<String, RecoverError> {
    if !spool.pending_dir(name).exists() {
        return Ok(name.to_string());
    }
    let taken = |n: &str| spool.pending_dir(n).exists() || spool.active_dir(n).exists();
    let fresh = std::iter::once(format!("{name}-recovered"))
        .chain((2..).map(|i| format!("{name}-recovered-{i}")))
        .find(|n| !taken(n))
        .unwrap_or_else(|| format!("{name}-recovered"));
    let (from, to) = (spool.active_dir(name), spool.active_dir(&fresh));
    std::fs::rename(&from, &to).map_err(io_err("rename", &from))?;
    sync_dir(&spool.root().join("active"))?;
    tracing::warn!(recording = %name, renamed = %fresh, "a pending recording has this name; recovering under another");
    Ok(fresh)
}

/// The `info` and layout of a recovered recording (pure). `wav_modified` is when the audio was
/// last written: without `call.json` the start is estimated from it.
fn recovered_info(
    name: &str,
    record: Option<&CallRecord>,
    shape: &WavShape,
    wav_modified: SystemTime,
    finishing: &Finishing,
) -> Mapped {
    let duration = shape.duration();
    let mut notes = vec![INTERRUPTED_NOTE.to_string()];
    let mut streams: Vec<ChannelSummary> = Vec::new();
    let fallback;
    let (record, changes) = match record {
        Some(r) => {
            match siprec::parse_offer(r.offer_content_type.as_deref(), r.offer_body.as_bytes(), &finishing.limits) {
                // The offer was accepted when the call started, whatever the limit now.
                Ok(offer) => match session::recorded_streams(&offer.sdp) {
                    Ok(plans) if plans.len() == usize::from(shape.channels) => {
                        streams = plans.iter().map(|p| p.summary(Default::default())).collect();
                    }
                    // `media.spare_streams`: the capture has channels for streams a re-INVITE
                    // might add. Which were used is not known after a crash: they are left out.
                    Ok(plans) if plans.len() < usize::from(shape.channels) => {
                        let spare = usize::from(shape.channels) - plans.len();
                        notes.push(format!("{spare} spare channels of the capture (media.spare_streams) are left out: a stream a re-INVITE added is not recovered"));
                        streams = plans.iter().map(|p| p.summary(Default::default())).collect();
                        streams.extend((0..spare).map(|_| ChannelSummary { label: None, codec: "unknown", stats: Default::default(), active: false, media: Default::default() }));
                    }
                    Ok(plans) => notes.push(format!(
                        "the offer plans {} channels but the audio has {}: channels are unlabelled",
                        plans.len(),
                        shape.channels
                    )),
                    Err(r) => notes.push(format!("the offer in call.json plans no channel ({}): channels are unlabelled", r.detail)),
                },
                Err(e) => notes.push(format!("the offer in call.json could not be parsed again ({e}): channels are unlabelled")),
            }
            (r, r.metadata_changes(&finishing.limits))
        }
        None => {
            notes.push(
                "call.json was missing or unreadable: the sessionId is the recording's file name, the start time \
                 is estimated from when the audio was last written, and the call's metadata and SIP headers are unknown"
                    .to_string(),
            );
            let start = wav_modified.checked_sub(duration).unwrap_or(wav_modified);
            fallback = CallRecord {
                session_id: name.to_string(),
                start_unix_ms: start.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
                offer_content_type: None,
                offer_body: String::new(),
                updates: Vec::new(),
                sip_headers: Vec::new(),
                request_uri: None,
                invite_headers: Vec::new(),
            };
            (&fallback, vec![mapping::MetadataChange { at_ms: 0, via: "INVITE", outcome: MetadataOutcome::Absent }])
        }
    };
    if streams.is_empty() {
        streams = (0..shape.channels)
            .map(|_| ChannelSummary { label: None, codec: "unknown", stats: Default::default(), active: true, media: Default::default() })
            .collect();
    }
    notes.push(STATS_NOTE.to_string());
    let start = SystemTime::UNIX_EPOCH + Duration::from_millis(record.start_unix_ms);
    let ctx = session::SummaryContext {
        t0: clock::now(),
        start,
        end: start + duration,
        layout: finishing.layout,
        rules: &finishing.rules,
        audio_format: finishing.format.kind().format_name,
        end_reason: EndReason::Interrupted.as_str(),
        notes: &notes,
    };
    let mut mapped = mapping::build_info(&record.summary(&changes, &streams, ctx));
    // build_info reports zeros for statistics it was not given; here they are unknown.
    if let Some(Value::Array(streams)) = mapped.info.pointer_mut("/metaData/gateway/streams") {
        for stream in streams.iter_mut().filter_map(Value::as_object_mut) {
            for key in ["packets", "lost", "late", "duplicates", "reanchors", "driftInserted", "driftDropped", "foreign", "silent", "unknownPayloadTypes", "comfortNoise", "telephoneEvents"] {
                stream.remove(key);
            }
        }
    }
    mapped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{ERROR_FILE, INFO_FILE};
    use crate::media::wav::WavWriter;
    use std::fs::{self, File};
    use std::io::Cursor;

    fn read_all(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap()
    }

    /// A WAV as a killed recorder leaves it: `checkpointed` frames described by the header,
    /// then `extra` more frames and `partial` stray bytes written after the last checkpoint.
    fn crashed_wav(channels: u16, checkpointed: usize, extra: usize, partial: usize) -> Vec<u8> {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), channels, 8000).unwrap();
        let frame = |i: usize| (0..channels).map(move |c| (i as i16).wrapping_mul(10).wrapping_add(c as i16));
        let samples: Vec<i16> = (0..checkpointed).flat_map(frame).collect();
        w.write_interleaved(&samples).unwrap();
        w.checkpoint().unwrap();
        let samples: Vec<i16> = (checkpointed..checkpointed + extra).flat_map(frame).collect();
        w.write_interleaved(&samples).unwrap();
        let mut bytes = w.finish().unwrap().into_inner();
        // finish() rewrote the header: put back the one of the last checkpoint, which is the
        // header of a file of `checkpointed` frames.
        let mut stale = WavWriter::new(Cursor::new(Vec::new()), channels, 8000).unwrap();
        stale.write_interleaved(&vec![0; checkpointed * usize::from(channels)]).unwrap();
        let stale = stale.finish().unwrap().into_inner();
        let header_len = stale.len() - checkpointed * usize::from(channels) * 2;
        bytes[..header_len].copy_from_slice(&stale[..header_len]);
        bytes.extend(std::iter::repeat_n(0x55, partial));
        bytes
    }

    fn repaired(bytes: Vec<u8>) -> (WavShape, Vec<u8>) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("audio.wav");
        fs::write(&path, bytes).unwrap();
        let shape = repair_wav(&path).unwrap();
        (shape, read_all(&path))
    }

    fn samples(bytes: &[u8]) -> (hound::WavSpec, Vec<i16>) {
        let mut r = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        (r.spec(), r.samples::<i16>().map(Result::unwrap).collect())
    }

    #[test]
    fn stereo_header_is_repaired_to_the_frames_on_disk() {
        let (shape, bytes) = repaired(crashed_wav(2, 100, 60, 0));
        assert_eq!((shape.channels, shape.header_len, shape.frames), (2, 80, 160));
        let (spec, s) = samples(&bytes);
        assert_eq!(spec.channels, 2);
        assert_eq!(s.len(), 320);
        assert_eq!(&s[318..], &[1590, 1591], "the last frame written after the checkpoint is kept");
    }

    #[test]
    fn three_channel_extensible_header_is_repaired() {
        let (shape, bytes) = repaired(crashed_wav(3, 8, 4, 0));
        assert_eq!((shape.channels, shape.header_len, shape.frames), (3, 104, 12));
        let (spec, s) = samples(&bytes);
        assert_eq!(spec.channels, 3);
        assert_eq!(&s[33..], &[110, 111, 112]);
    }

    #[test]
    fn a_trailing_partial_frame_is_cut() {
        for partial in [1, 3, 5] {
            let (shape, bytes) = repaired(crashed_wav(3, 10, 2, partial));
            assert_eq!(shape.frames, 12);
            assert_eq!(bytes.len(), 104 + 12 * 6, "{partial} stray bytes");
            assert_eq!(samples(&bytes).1.len(), 36);
        }
    }

    #[test]
    fn a_header_only_file_is_an_empty_recording() {
        let (shape, bytes) = repaired(crashed_wav(2, 0, 0, 0));
        assert_eq!((shape.frames, bytes.len()), (0, 80));
        assert!(samples(&bytes).1.is_empty());
    }

    #[test]
    fn repair_twice_changes_nothing_more() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("audio.wav");
        fs::write(&path, crashed_wav(2, 50, 10, 3)).unwrap();
        let first = repair_wav(&path).unwrap();
        let bytes = read_all(&path);
        assert_eq!(repair_wav(&path).unwrap(), first);
        assert_eq!(read_all(&path), bytes);
    }

    #[test]
    fn files_that_are_not_wavs_are_unusable() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("audio.wav");
        let header_cut = crashed_wav(2, 0, 0, 0);
        let cases: [&[u8]; 4] = [b"", b"RIFF\x00\x00", &header_cut[..40], b"RIFF\x04\x00\x00\x00WAVEdata\x00\x00\x00\x00"];
        for bytes in cases {
            fs::write(&path, bytes).unwrap();
            assert!(matches!(repair_wav(&path), Err(RecoverError::Unusable(_))), "{bytes:?}");
        }
        assert!(matches!(repair_wav(&tmp.path().join("none.wav")), Err(RecoverError::Unusable(_))));
    }

    const OFFER: &str = "--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n\
c=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 10000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n\
m=audio 10002 RTP/AVP 8\r\na=label:2\r\na=sendonly\r\n\r\n--b1\r\n\
Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n\
<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"><datamode>complete</datamode>\
<session session_id=\"s1\"><sipSessionID>orig@sbc</sipSessionID></session></recording>\r\n--b1--\r\n";

    fn record() -> CallRecord {
        CallRecord {
            session_id: "rs-1@sbc".into(),
            start_unix_ms: 1_764_000_000_000,
            offer_content_type: Some("multipart/mixed;boundary=b1".into()),
            offer_body: OFFER.into(),
            updates: vec![session::RecordedUpdate {
                via: "UPDATE".into(),
                at_ms: 5_000,
                content_type: Some("application/rs-metadata+xml".into()),
                body: "<other xmlns=\"urn:x\"/>".into(),
            }],
            sip_headers: vec![("X-Ucid".into(), "u-1".into())],
            request_uri: Some("sip:srs@192.0.2.10".into()),
            invite_headers: vec![("X-Ucid".into(), "u-1".into())],
        }
    }

    /// Recovery writing the capture as it is (one channel per stream, WAV).
    fn per_stream() -> Finishing {
        Finishing { layout: mapping::LayoutKind::PerStream, ..Finishing::default() }
    }

    /// A spool with `active/<name>/` holding a crashed two-channel WAV (1.5 s described by
    /// the header, 0.5 s more on disk) and, if given, a call.json.
    fn spool_with_crash(name: &str, record: Option<&CallRecord>) -> (tempfile::TempDir, Spool) {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path()).unwrap();
        fs::create_dir(spool.active_dir(name)).unwrap();
        fs::write(spool.active_dir(name).join(CAPTURE_FILE), crashed_wav(2, 12000, 4000, 1)).unwrap();
        if let Some(r) = record {
            fs::write(spool.active_dir(name).join(CALL_FILE), serde_json::to_vec(r).unwrap()).unwrap();
        }
        (tmp, spool)
    }

    fn pending_info(spool: &Spool, name: &str) -> Value {
        serde_json::from_slice(&fs::read(spool.pending_dir(name).join(INFO_FILE)).unwrap()).unwrap()
    }

    #[test]
    fn interrupted_call_is_finalized_from_call_json() {
        let (_tmp, spool) = spool_with_crash("rs-1_sbc", Some(&record()));
        let report = recover(&spool, &per_stream());
        assert_eq!(report.recovered, ["rs-1_sbc"]);
        assert!(spool.names_in("active").unwrap().is_empty());
        let info = pending_info(&spool, "rs-1_sbc");
        assert_eq!(info["sessionId"], "rs-1@sbc");
        assert_eq!(info["masterCallId"], "orig@sbc", "metadata from the offer");
        assert_eq!(info["startTime"], "2025-11-24T16:00:00.000Z");
        assert_eq!(info["endTime"], "2025-11-24T16:00:02.000Z", "start + 2 s of audio on disk");
        let gw = &info["metaData"]["gateway"];
        assert_eq!(gw["endReason"], "interrupted");
        assert_eq!(info["metaData"]["sipHeaders"]["X-Ucid"], "u-1");
        assert_eq!(gw["streams"][1], serde_json::json!({"stream": 1, "channels": [1], "label": "2", "codec": "PCMA"}));
        let notes: Vec<&str> = gw["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        assert_eq!(notes[0], INTERRUPTED_NOTE);
        assert!(notes[1].contains("statistics") && notes[1].contains("unknown"), "{notes:?}");
        let history = &info["metaData"]["metadataHistory"];
        assert_eq!((history[1]["via"].as_str(), history[1]["metadata"].as_str()), (Some("UPDATE"), Some("invalid")), "{history}");
        assert_eq!(history[1]["atMs"], 2000, "kept within the call");
        let wav = read_all(&spool.pending_dir("rs-1_sbc").join(crate::delivery::AUDIO_FILE));
        assert_eq!(samples(&wav).1.len(), 32000);
        let journal = fs::read_to_string(spool.root().join("journal.log")).unwrap();
        let events: Vec<&str> = journal.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(events, ["recovered", "finalized"]);
    }

    #[test]
    fn without_call_json_info_comes_from_the_name_and_the_file() {
        let (_tmp, spool) = spool_with_crash("lost-call", None);
        let written = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_010);
        let file = File::options().write(true).open(spool.active_dir("lost-call").join(CAPTURE_FILE)).unwrap();
        file.set_modified(written).unwrap();
        drop(file);
        assert_eq!(recover(&spool, &per_stream()).recovered, ["lost-call"]);
        let info = pending_info(&spool, "lost-call");
        assert_eq!(info["sessionId"], "lost-call");
        assert_eq!(info["startTime"], "2025-11-24T16:00:08.000Z", "last write minus 2 s of audio");
        assert_eq!(info["endTime"], "2025-11-24T16:00:10.000Z");
        let gw = &info["metaData"]["gateway"];
        assert_eq!(gw["endReason"], "interrupted");
        assert_eq!(gw["streams"].as_array().unwrap().len(), 2);
        assert!(gw["notes"][1].as_str().unwrap().contains("call.json was missing"));
    }

    #[test]
    fn recovery_is_idempotent() {
        let (_tmp, spool) = spool_with_crash("again", Some(&record()));
        // A first recovery that stopped after writing info.json, before the move.
        let shape = repair_wav(&spool.active_dir("again").join(CAPTURE_FILE)).unwrap();
        fs::write(spool.active_dir("again").join(INFO_FILE), b"{\"partial\"").unwrap();
        let first = recover(&spool, &per_stream());
        let second = recover(&spool, &per_stream());
        assert_eq!(first.recovered, ["again"]);
        assert_eq!(second, RecoveryReport::default());
        assert_eq!(spool.pending().unwrap(), ["again"]);
        assert_eq!(pending_info(&spool, "again")["sessionId"], "rs-1@sbc");
        let wav = read_all(&spool.pending_dir("again").join(crate::delivery::AUDIO_FILE));
        assert_eq!(samples(&wav).1.len() as u64, shape.frames * 2);
    }

    #[test]
    fn a_name_taken_in_pending_is_recovered_under_another() {
        let (_tmp, spool) = spool_with_crash("dup", Some(&record()));
        fs::create_dir(spool.pending_dir("dup")).unwrap();
        assert_eq!(recover(&spool, &per_stream()).recovered, ["dup-recovered"]);
        assert!(spool.pending_dir("dup-recovered").join(crate::delivery::AUDIO_FILE).is_file());
    }

    #[test]
    fn recordings_without_usable_audio_go_to_failed_with_the_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path()).unwrap();
        fs::create_dir(spool.active_dir("no-audio")).unwrap();
        fs::write(spool.active_dir("no-audio").join(CALL_FILE), serde_json::to_vec(&record()).unwrap()).unwrap();
        fs::create_dir(spool.active_dir("short")).unwrap();
        fs::write(spool.active_dir("short").join(CAPTURE_FILE), b"RIFF").unwrap();
        let report = recover(&spool, &per_stream());
        assert_eq!(report.failed, ["no-audio", "short"]);
        for name in ["no-audio", "short"] {
            let error: Value = serde_json::from_slice(&fs::read(spool.failed_dir(name).join(ERROR_FILE)).unwrap()).unwrap();
            assert!(error["error"].as_str().unwrap().contains("no usable audio"), "{error}");
        }
        assert_eq!(fs::read(spool.failed_dir("short").join(CAPTURE_FILE)).unwrap(), b"RIFF", "audio is never deleted");
        assert!(spool.pending().unwrap().is_empty());
    }
}
