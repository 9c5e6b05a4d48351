//! Operations endpoints and metrics: the HTTP listener of `service.http_listen` serving
//! `/metrics` (Prometheus text format), `/health` and `/ready`, and the helpers the runtime
//! calls to count what happens.
//!
//! Metrics go through the `metrics` facade into one process-wide Prometheus recorder, installed
//! only when the listener is configured (without it every count is a no-op). Nothing here runs
//! per RTP packet: a call's packet counts come from the media thread's per-stream statistics and
//! are added when the call ends. The spool, delivery-health and delivery counts are read when
//! scraped.
//! The metric names are listed in docs/operations.md. This module decides nothing about calls.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tracing::warn;

use crate::delivery::{DeliveryHandle, Spool};
use crate::mapping::ChannelSummary;

/// Whether the gateway takes calls: set once it serves SIP, cleared for good at the drain.
#[derive(Debug, Default)]
pub struct Readiness {
    serving: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// The signalling task runs: INVITEs are answered.
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::Relaxed);
    }

    /// SIGTERM/SIGINT: new calls get 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct Ops {
    pub handle: PrometheusHandle,
    pub readiness: Arc<Readiness>,
    pub spool: Spool,
    /// `spool.min_free`: below it new calls are refused, so the gateway is not ready.
    pub min_free: u64,
    pub delivery: DeliveryHandle,
}

/// Installs the process-wide Prometheus recorder (once) and returns its handle; None when some
/// other recorder was installed first.
pub fn recorder() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let installed = metrics::set_global_recorder(recorder).ok().map(|()| handle);
            if installed.is_some() {
                describe();
            }
            installed
        })
        .clone()
}

/// HELP lines of the metrics.
fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!("siprec_calls_active", "Recording sessions in progress");
    describe_gauge!("siprec_streams_active", "Recorded streams of the sessions in progress");
    describe_counter!("siprec_calls_started_total", "Recording sessions answered with 200 OK");
    describe_counter!("siprec_calls_total", "Recording sessions ended, by end reason and whether audio was stored");
    describe_counter!("siprec_streams_total", "Streams of the ended sessions");
    describe_counter!("siprec_rtp_packets_received_total", "RTP packets placed in recordings, by codec (added at call end)");
    describe_counter!("siprec_rtp_packets_lost_total", "RTP sequence numbers never received, by codec (added at call end)");
    describe_counter!("siprec_rtp_packets_late_total", "RTP packets too late for their place, dropped, by codec (added at call end)");
    describe_counter!("siprec_audio_bytes_written_total", "Audio bytes written to recordings (added at call end)");
    describe_counter!("siprec_sip_responses_total", "SIP responses sent (retransmissions included), by status code");
    describe_counter!("siprec_invite_refusals_total", "INVITEs refused, by reason and status code");
    describe_counter!("siprec_deliveries_total", "Delivery results since start, by outcome");
    describe_counter!("siprec_tethr_token_fetches_total", "Tethr access token requests, by outcome");
    describe_gauge!("siprec_spool_recordings", "Recordings in the spool, by state (active, pending, failed)");
    describe_gauge!("siprec_delivery_health", "Heartbeat status the gateway would report (1 healthy, 10 warning, 20 error)");
}

/// Serves `/metrics`, `/health` and `/ready` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, ops: Ops) {
    let app = axum::Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .with_state(ops);
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "the HTTP listener stopped; /metrics, /health and /ready are gone");
    }
}

/// Binds the HTTP listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn ready(State(ops): State<Ops>) -> (StatusCode, &'static str) {
    if ops.readiness.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n");
    }
    if !ops.readiness.serving.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n");
    }
    if ops.min_free > 0 {
        let spool = ops.spool.clone();
        match tokio::task::spawn_blocking(move || spool.free_bytes()).await {
            Ok(Ok(free)) if free >= ops.min_free => {}
            Ok(Ok(_)) => return (StatusCode::SERVICE_UNAVAILABLE, "spool below spool.min_free\n"),
            _ => return (StatusCode::SERVICE_UNAVAILABLE, "cannot measure the spool's free space\n"),
        }
    }
    (StatusCode::OK, "ready\n")
}

async fn metrics_page(State(ops): State<Ops>) -> impl IntoResponse {
    let spool = ops.spool.clone();
    let counts = tokio::task::spawn_blocking(move || {
        ["active", "pending", "failed"].map(|state| (state, spool.names_in(state).map_or(0, |n| n.len())))
    })
    .await;
    if let Ok(counts) = counts {
        for (state, n) in counts {
            gauge!("siprec_spool_recordings", "state" => state).set(n as f64);
        }
    }
    gauge!("siprec_delivery_health").set(f64::from(ops.delivery.health() as u8));
    let s = *ops.delivery.stats().borrow();
    for (outcome, n) in [("delivered", s.delivered), ("failed", s.failed), ("retried", s.retries), ("stopped", s.stopped)] {
        counter!("siprec_deliveries_total", "outcome" => outcome).absolute(n);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], ops.handle.render())
}

/// Counts a SIP response leaving the gateway (requests we send are not counted).
pub fn count_sent(bytes: &[u8]) {
    // "SIP/2.0 200 OK": the status code is bytes 8..11.
    let code = bytes
        .strip_prefix(b"SIP/2.0 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u16>().ok());
    if let Some(code) = code {
        counter!("siprec_sip_responses_total", "code" => code.to_string()).increment(1);
    }
}

/// Counts an INVITE refused for `reason` (a short, fixed word) with `code`.
pub fn count_refusal(reason: &'static str, code: u16) {
    counter!("siprec_invite_refusals_total", "reason" => reason, "code" => code.to_string()).increment(1);
}

/// Calls and streams in progress.
pub fn set_active(calls: usize, streams: usize) {
    gauge!("siprec_calls_active").set(calls as f64);
    gauge!("siprec_streams_active").set(streams as f64);
}

/// A call answered with 200 OK.
pub fn count_call_started() {
    counter!("siprec_calls_started_total").increment(1);
}

/// A call ended: by `end_reason`, whether audio was stored, and its streams' statistics.
pub fn count_call_ended(end_reason: &'static str, stored: bool) {
    let outcome = if stored { "recorded" } else { "skipped" };
    counter!("siprec_calls_total", "end_reason" => end_reason, "outcome" => outcome).increment(1);
}

/// A finished recording's streams and the audio bytes written (`frames` of 16-bit samples on
/// every channel).
pub fn count_recording(channels: &[ChannelSummary], frames: u64) {
    counter!("siprec_streams_total").increment(channels.len() as u64);
    for ch in channels {
        counter!("siprec_rtp_packets_received_total", "codec" => ch.codec).increment(ch.stats.packets);
        counter!("siprec_rtp_packets_lost_total", "codec" => ch.codec).increment(ch.stats.lost);
        counter!("siprec_rtp_packets_late_total", "codec" => ch.codec).increment(ch.stats.late);
    }
    counter!("siprec_audio_bytes_written_total").increment(frames.saturating_mul(channels.len() as u64 * 2));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_responses_are_counted_with_their_code() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            count_sent(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n");
            count_sent(b"SIP/2.0 503 Service Unavailable\r\n\r\n");
            count_sent(b"SIP/2.0 200 OK\r\n\r\n");
            count_sent(b"BYE sip:a@b SIP/2.0\r\n\r\n");
            count_sent(b"SIP/2.0 2");
        });
        let text = handle.render();
        assert!(text.contains("siprec_sip_responses_total{code=\"200\"} 2"), "{text}");
        assert!(text.contains("siprec_sip_responses_total{code=\"503\"} 1"), "{text}");
        assert_eq!(text.matches("siprec_sip_responses_total{").count(), 2, "{text}");
    }
}
