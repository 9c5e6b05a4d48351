//! Finalizing a recording once its call has ended: wait for the media thread to finish the
//! capture, fsync it, build `info` ([`mapping`]) and the audit record, move the call to
//! `pending/` and queue it for delivery. Runs as one task per call, off the signalling task.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::clock::Epoch;
use crate::delivery::{self, DeliveryHandle, Spool};
use crate::mapping::{self, ChannelSummary};
use crate::session::{EndReason, Session, SummaryContext};
use crate::siprec::MetadataOutcome;

use super::media::CallResult;
use super::ops;

/// One ended call, handed from the signalling task to its finalize task.
pub(super) struct Job {
    pub session: Session,
    pub reason: EndReason,
    pub end: Instant,
    pub times: AuditTimes,
    pub epoch: Epoch,
    pub spool: Arc<Spool>,
    pub delivery: DeliveryHandle,
    /// Layout, format and mapping rules.
    pub finishing: Arc<delivery::Finishing>,
}

/// Finalizes the call once the media thread reports on `done`.
pub(super) async fn run(job: Job, done: oneshot::Receiver<CallResult>) {
    let Job { session: mut s, reason, end, times, epoch, spool, delivery, finishing } = job;
    let mut result = match done.await {
        Ok(r) => r,
        Err(_) => {
            error!("media thread gone before the recording was finished");
            return;
        }
    };
    if let Some(file) = result.file.take() {
        match tokio::task::spawn_blocking(move || file.sync_all()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result.error = Some(format!("fsync: {e}")),
            Err(e) => result.error = Some(format!("fsync task: {e}")),
        }
    }
    if let Some(e) = &result.error {
        error!(error = %e, "recording incomplete");
        s.notes.push(format!("recording incomplete: {e}"));
    }
    let streams: Vec<ChannelSummary> = s
        .plans
        .iter()
        .zip(result.stats.iter().chain(std::iter::repeat(&Default::default())))
        .enumerate()
        .map(|(c, (p, st))| ChannelSummary { media: result.media.get(c).cloned().unwrap_or_default(), ..p.summary(*st) })
        .collect();
    for (c, ch) in streams.iter().enumerate() {
        if ch.stats.packets == 0 {
            warn!(stream = c, label = ?ch.label, "no RTP arrived on this stream: its channel is silent");
        }
    }
    ops::count_recording(&streams, result.frames);
    let audit = audit_record(&s, &streams, epoch, times, reason, result.frames, result.rate).to_json();
    let ctx = SummaryContext {
        t0: s.t0,
        start: epoch.wall_of(s.t0),
        end: epoch.wall_of(end.max(s.t0)),
        layout: finishing.layout,
        rules: &finishing.rules,
        audio_format: finishing.format.kind().format_name,
        end_reason: reason.as_str(),
        notes: &s.notes,
    };
    let mapped = mapping::build_info(&s.record.summary(&s.metadata, &streams, ctx));
    let name = s.name.clone();
    let format = finishing.format;
    let finished = tokio::task::spawn_blocking(move || {
        // Before the move to pending/, so the record travels with the recording.
        let audit = spool.write_active(&name, delivery::audit::AUDIT_FILE, &audit);
        (audit, delivery::produce(&spool, &name, mapped, format))
    })
    .await;
    let finished = finished.map(|(audit, finished)| {
        if let Err(e) = audit {
            warn!(error = %e, "cannot write audit.json; the recording goes on without it");
        }
        finished
    });
    match finished {
        Ok(Ok(_)) => {
            let secs = end.saturating_duration_since(s.t0).as_secs_f64();
            info!(session = %s.name, reason = reason.as_str(), duration_s = format!("{secs:.1}"), frames = result.frames, "recording finished");
            delivery.enqueue(s.name);
        }
        Ok(Err(e)) => {
            error!(session = %s.name, error = %e, "cannot move the recording to pending/; it stays in the spool")
        }
        Err(e) => error!(error = %e, "finalize task failed"),
    }
}

/// When the call's SIP events happened, for its audit record.
pub(super) struct AuditTimes {
    pub invite: Instant,
    pub ack: Option<Instant>,
    pub end: Instant,
}

/// The audit record of a finished call (`audit.json`; see [`delivery::audit`]).
fn audit_record(
    s: &Session,
    channels: &[ChannelSummary],
    epoch: Epoch,
    times: AuditTimes,
    reason: EndReason,
    frames: u64,
    rate: u32,
) -> delivery::audit::AuditRecord {
    let at = |t: Instant| mapping::iso8601(epoch.wall_of(t));
    let (metadata_warnings, metadata_error) = match s.current_metadata() {
        MetadataOutcome::Parsed(md) => (md.warnings.clone(), None),
        MetadataOutcome::Invalid { error, .. } => (Vec::new(), Some(error.clone())),
        MetadataOutcome::Absent => (Vec::new(), None),
    };
    delivery::audit::AuditRecord {
        session_id: s.session_id.clone(),
        recording: s.name.clone(),
        invite_received: at(times.invite),
        answered: at(s.t0),
        ack: times.ack.map(at),
        ended: at(times.end.max(s.t0)),
        end_reason: reason.as_str().to_owned(),
        duration_sec: frames as f64 / f64::from(rate.max(1)),
        streams: channels
            .iter()
            .enumerate()
            .map(|(channel, ch)| delivery::audit::AuditStream {
                channel,
                label: ch.label.clone(),
                codec: ch.codec.to_owned(),
                packets: ch.stats.packets,
                lost: ch.stats.lost,
                late: ch.stats.late,
            })
            .collect(),
        metadata_warnings,
        metadata_error,
        notes: s.notes.clone(),
        delivery: None,
    }
}
