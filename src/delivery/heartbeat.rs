//! Heartbeats to Tethr: `POST /callCapture/v1/monitor` every interval, so Tethr can see that
//! the gateway runs and whether it can deliver (tethr-api-facts §5).
//!
//! The body is `{"Status":n,"TimeStamp":"…Z","Name":"<instance>","SoftwareVersion":"<version>"}`
//! with Status 1 Healthy, 10 Warning (uploads failing but retrying, disk near its floor), 20
//! Error (nothing can be delivered: credentials refused, spool full), and 30 Offline, sent once
//! on a clean shutdown. Any 2xx is fine; a 404 means the instance does not take heartbeats, so
//! they stop (said once at info). A failed heartbeat never affects uploads.
//!
//! [`status`] and [`body`] are pure; [`run`] is the task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use tokio::sync::watch;

use super::tethr::TethrClient;
use crate::clock;

const PATH: &str = "callCapture/v1/monitor";
/// The Offline heartbeat at shutdown may delay the exit this long at most.
const OFFLINE_LIMIT: Duration = Duration::from_secs(5);

/// The `Status` values of Tethr's monitor API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatStatus {
    /// Everything works.
    Healthy = 1,
    /// Online, something out of normal parameters (uploads retrying, disk low).
    Warning = 10,
    /// Online, but nothing can be delivered or recorded.
    Error = 20,
    /// Shutting down.
    Offline = 30,
}

/// What the delivery worker and the runtime report about the gateway's health.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Some recording's latest attempt failed and it waits to be retried.
    pub retrying: AtomicBool,
    /// The credentials are refused (token endpoint, or a 403/401 stopped recordings).
    pub auth_failing: AtomicBool,
    /// The spool's disk is near its free-space floor.
    pub disk_warning: AtomicBool,
    /// The spool's disk is below its floor: new calls are refused.
    pub disk_full: AtomicBool,
}

impl Health {
    /// The heartbeat status the current facts call for.
    pub fn status(&self) -> HeartbeatStatus {
        let get = |flag: &AtomicBool| flag.load(Ordering::Relaxed);
        status(
            get(&self.retrying),
            get(&self.auth_failing),
            get(&self.disk_warning),
            get(&self.disk_full),
        )
    }
}

/// The status for the given facts: Error when nothing can be delivered or recorded, Warning
/// when something is degraded, Healthy otherwise.
pub fn status(retrying: bool, auth_failing: bool, disk_warning: bool, disk_full: bool) -> HeartbeatStatus {
    if auth_failing || disk_full {
        HeartbeatStatus::Error
    } else if retrying || disk_warning {
        HeartbeatStatus::Warning
    } else {
        HeartbeatStatus::Healthy
    }
}

/// The monitor request body (SDKv1 wire form, §5), the time in UTC with a `Z`.
pub fn body(status: HeartbeatStatus, now: SystemTime, name: &str) -> serde_json::Value {
    let time = jiff::Timestamp::try_from(now).map(|t| t.to_string()).unwrap_or_default();
    serde_json::json!({
        "Status": status as u8,
        "TimeStamp": time,
        "Name": name,
        "SoftwareVersion": env!("CARGO_PKG_VERSION"),
    })
}

/// Whether heartbeats go on after an answer.
enum Sent {
    Fine,
    Unsupported,
    Failed(String),
}

async fn send(client: &TethrClient, status: HeartbeatStatus) -> Sent {
    let json = body(status, clock::wall_now(), &client.settings().instance_name);
    match client.request(Method::POST, PATH, Some(&json)).await {
        Ok(reply) if reply.status.is_success() => Sent::Fine,
        Ok(reply) if reply.status == StatusCode::NOT_FOUND => Sent::Unsupported,
        Ok(reply) => Sent::Failed(format!("HTTP {}", reply.status)),
        Err(e) => Sent::Failed(e.to_string()),
    }
}

/// Sends a heartbeat every `interval` (the first at once) with the current client until
/// `stop` changes, then one Offline heartbeat.
pub(crate) async fn run(
    mut client: watch::Receiver<Arc<TethrClient>>,
    health: Arc<Health>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticks.tick() => {}
        }
        let current = client.borrow_and_update().clone();
        let status = health.status();
        match send(&current, status).await {
            Sent::Fine => {
                if failing {
                    tracing::info!("Tethr heartbeats go through again");
                }
                failing = false;
                tracing::debug!(status = status as u8, "heartbeat sent");
            }
            Sent::Unsupported => {
                tracing::info!("this Tethr instance does not take heartbeats (404); not sending them");
                return;
            }
            Sent::Failed(e) => {
                // Said once per outage, not every interval.
                if !failing {
                    tracing::warn!(error = %e, "Tethr heartbeat failed; uploads are not affected");
                }
                failing = true;
            }
        }
    }
    let current = client.borrow().clone();
    match tokio::time::timeout(OFFLINE_LIMIT, send(&current, HeartbeatStatus::Offline)).await {
        Ok(Sent::Fine | Sent::Unsupported) => tracing::debug!("Offline heartbeat sent"),
        Ok(Sent::Failed(e)) => tracing::debug!(error = %e, "Offline heartbeat failed"),
        Err(_) => tracing::debug!("Offline heartbeat timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_the_worst_fact() {
        assert_eq!(status(false, false, false, false), HeartbeatStatus::Healthy);
        assert_eq!(status(true, false, false, false), HeartbeatStatus::Warning);
        assert_eq!(status(false, false, true, false), HeartbeatStatus::Warning);
        assert_eq!(status(true, true, false, false), HeartbeatStatus::Error);
        assert_eq!(status(false, false, true, true), HeartbeatStatus::Error);
    }

    #[test]
    fn body_has_the_sdk_wire_form() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500_000_000_250);
        let b = body(HeartbeatStatus::Warning, t, "gw-1");
        assert_eq!(b["Status"], 10);
        assert_eq!(b["TimeStamp"], "2017-07-14T02:40:00.25Z");
        assert_eq!(b["Name"], "gw-1");
        assert_eq!(b["SoftwareVersion"], env!("CARGO_PKG_VERSION"));
        assert_eq!(body(HeartbeatStatus::Offline, t, "x")["Status"], 30);
    }
}
