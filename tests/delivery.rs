//! Delivery from the spool to the local sink and, over real HTTP, to the Tethr stand-in failing
//! in each way the issue lists: 503 bursts, hangs until the client times out, connections dropped
//! after the call was stored, 401/403, 400 with a body, 429 with Retry-After, plus status
//! reconciliation, durable state across restarts, concurrency, retention, heartbeats,
//! recording settings, credential reloads, and HTTPS through a proxy with an extra CA.

mod support;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use siprec_gateway::delivery::{
    self, DeliveryStats, HeartbeatStatus, RecordingSettingsConfig, SettingsDecision, SettingsFilter, Sink, Spool,
    TethrSettings,
};
use support::tethr::{
    Behaviour, Canned, DeliveryWorker as Worker, TethrStandIn, WAIT, assert_received, install_crypto, record,
    settings,
};

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A spool in a fresh temporary directory.
fn spool() -> (tempfile::TempDir, Spool) {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(&tmp.path().join("spool")).unwrap();
    (tmp, spool)
}

/// The stand-in with `behaviour`, and default settings for it.
async fn stand_in(behaviour: Behaviour) -> (TethrStandIn, TethrSettings) {
    install_crypto();
    let stand_in = TethrStandIn::start(behaviour.clone()).await;
    let settings = settings(&stand_in, &behaviour);
    (stand_in, settings)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn stats(delivered: u64, failed: u64, retries: u64) -> DeliveryStats {
    DeliveryStats {
        delivered,
        failed,
        retries,
        ..DeliveryStats::default()
    }
}

#[tokio::test]
async fn local_sink_delivers_wav_and_json_and_empties_the_spool() {
    let (tmp, spool) = spool();
    let out = tmp.path().join("out").join("recordings");
    let worker = Worker::start(&spool, Sink::Local { dir: out.clone() });
    let rec = record(&spool, "20250304T101530Z-abc123", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    let got = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(got, stats(1, 0, 0));
    assert_eq!(
        dir_names(&out),
        vec![format!("{}.json", rec.name), format!("{}.wav", rec.name)],
        "no .part left"
    );
    assert!(fs::read(out.join(format!("{}.wav", rec.name))).unwrap() == rec.wav);
    assert_eq!(fs::read(out.join(format!("{}.json", rec.name))).unwrap(), rec.info);
    assert!(dir_names(&spool.root().join("pending")).is_empty(), "spool directory removed");
    assert!(dir_names(&spool.root().join("active")).is_empty());
}

#[tokio::test]
async fn tethr_uploads_two_recordings_with_one_token_and_no_status_checks() {
    let (tmp, spool) = spool();
    let (stand_in, settings) = stand_in(Behaviour::default()).await;
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let first = record(&spool, "call-1", "Inbound");
    worker.handle.enqueue(first.name.clone());
    let second = record(&spool, "call-2", "Outbound");
    worker.handle.enqueue(second.name.clone());

    worker.wait(|s| s.delivered + s.failed >= 2).await;
    worker.stop().await;

    assert_eq!(stand_in.rejections(), Vec::<String>::new());
    assert_received(&stand_in, &[&first, &second]);
    assert_eq!(stand_in.token_requests(), 1, "the token is cached and fetched once");
    assert!(stand_in.status_queries().is_empty(), "fresh recordings go without a status check");
    assert!(spool.pending().unwrap().is_empty());
    assert!(dir_names(&spool.root().join("failed")).is_empty());
    let journal = fs::read_to_string(tmp.path().join("spool").join(delivery::JOURNAL_FILE)).unwrap();
    assert!(journal.contains("call-1 delivered"), "{journal}");
}

#[tokio::test]
async fn a_503_burst_is_checked_with_status_and_delivered_exactly_once() {
    let (_tmp, spool) = spool();
    let (stand_in, settings) = stand_in(Behaviour::with_canned([503, 503, 503])).await;
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let rec = record(&spool, "call-503", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    let got = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(got, stats(1, 0, 3));
    assert_eq!(stand_in.archive_requests(), 4);
    // A 5xx may come after the body was stored: each retry asks first.
    assert_eq!(stand_in.status_queries(), vec![vec![rec.session_id()]; 3]);
    assert_received(&stand_in, &[&rec]);
    assert!(spool.pending().unwrap().is_empty());
}

#[tokio::test]
async fn an_upload_that_hangs_until_the_timeout_is_checked_and_sent_again_once() {
    let (_tmp, spool) = spool();
    let (stand_in, settings) = stand_in(Behaviour::with_canned([Canned::Hang])).await;
    let settings = TethrSettings {
        timeout: Duration::from_millis(700),
        ..settings
    };
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let rec = record(&spool, "call-hang", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    let got = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(got, stats(1, 0, 1));
    assert_eq!(stand_in.status_queries(), vec![vec![rec.session_id()]], "NotFound, so it is re-sent");
    assert_eq!(stand_in.archive_requests(), 2);
    assert_received(&stand_in, &[&rec]);
}

#[tokio::test]
async fn a_connection_dropped_after_the_call_was_stored_is_not_uploaded_twice() {
    let (tmp, spool) = spool();
    let (stand_in, settings) = stand_in(Behaviour::with_canned([Canned::StoreThenDrop])).await;
    let settings = TethrSettings {
        retention: Duration::from_secs(3600),
        ..settings
    };
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let rec = record(&spool, "call-dropped", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    let got = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(got, stats(1, 0, 1));
    assert_eq!(stand_in.archive_requests(), 1, "no second upload");
    assert_received(&stand_in, &[&rec]);
    assert_eq!(stand_in.status_queries(), vec![vec![rec.session_id()]]);
    // Kept for the retention, with the callId /status reported.
    let kept = read_json(&spool.delivered_dir(&rec.name).join(delivery::DELIVERED_FILE));
    assert_eq!(kept["callId"], stand_in.uploads()[0].call_id.as_str());
    assert_eq!(kept["sessionId"], rec.session_id().as_str());
    assert_eq!(kept["how"], "Concluded");
    assert!(kept["time"].as_str().unwrap().ends_with('Z'));
    assert!(spool.delivered_dir(&rec.name).join(delivery::AUDIO_FILE).exists());
    assert!(spool.pending().unwrap().is_empty());
    drop(tmp);
}

#[tokio::test]
async fn a_status_query_that_fails_is_retried_before_anything_is_sent() {
    let behaviour = Behaviour {
        canned: vec![Canned::StoreThenDrop],
        status_canned: vec![503, 500],
        ..Behaviour::default()
    };
    let (_tmp, spool) = spool();
    let (stand_in, settings) = stand_in(behaviour).await;
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let rec = record(&spool, "call-status-503", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    let got = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(got, stats(1, 0, 3));
    assert_eq!(stand_in.status_queries().len(), 3);
    assert_eq!(stand_in.archive_requests(), 1);
    assert_received(&stand_in, &[&rec]);
}

#[tokio::test]
async fn tethr_429_with_retry_after_waits_as_told() {
    let (_tmp, spool) = spool();
    let (stand_in, settings) = stand_in(Behaviour::with_canned([Canned::retry_after(429, 1)])).await;
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let rec = record(&spool, "call-429", "Inbound");
    let started = siprec_gateway::clock::now();
    worker.handle.enqueue(rec.name.clone());

    let got = worker.wait(|s| s.delivered + s.failed >= 1).await;
    let took = started.elapsed();
    worker.stop().await;

    assert_eq!(stand_in.rejections(), Vec::<String>::new());
    assert_eq!((got.delivered, got.retries), (1, 1));
    assert!(took >= Duration::from_secs(1), "Retry-After: 1 honoured over a 10 ms backoff: {took:?}");
    assert!(stand_in.status_queries().is_empty(), "a 429 was not stored: no status check");
    assert_received(&stand_in, &[&rec]);
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_and_the_upload_goes_through() {
    let (_tmp, spool) = spool();
    let (stand_in, settings) = stand_in(Behaviour::default()).await;
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let first = record(&spool, "before", "Inbound");
    worker.handle.enqueue(first.name.clone());
    worker.wait(|s| s.delivered == 1).await;
    // The cached token expires at Tethr's side before our margin says.
    stand_in.revoke_tokens();
    let second = record(&spool, "after", "Internal");
    worker.handle.enqueue(second.name.clone());

    let got = worker.wait(|s| s.delivered + s.failed >= 2).await;
    worker.stop().await;

    assert_eq!(got, stats(2, 0, 0));
    assert_eq!(stand_in.token_requests(), 2);
    assert_eq!(stand_in.archive_requests(), 3, "the 401 and the retry with a new token");
    assert_received(&stand_in, &[&first, &second]);
}

#[tokio::test]
async fn a_401_with_a_new_token_too_stops_the_recording_until_a_reload() {
    let (_tmp, spool) = spool();
    let (stand_in, settings) = stand_in(Behaviour::with_canned([401, 401])).await;
    let worker = Worker::start(&spool, Sink::Tethr(settings.clone()));
    let rec = record(&spool, "call-revoked", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    let got = worker.wait(|s| s.stopped >= 1).await;
    assert_eq!((got.delivered, got.failed), (0, 0));
    assert_eq!(stand_in.token_requests(), 2);
    assert_eq!(worker.handle.health(), HeartbeatStatus::Error);
    assert_eq!(spool.pending().unwrap(), vec![rec.name.clone()], "kept, not failed");

    worker.handle.reload(settings);
    let got = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;
    assert_eq!(got.reloads, 1);
    assert_received(&stand_in, &[&rec]);
}

#[tokio::test]
async fn forbidden_stops_that_upload_and_a_reload_resumes_it() {
    let (_tmp, spool) = spool();
    let (stand_in, settings) = stand_in(Behaviour::with_canned([403])).await;
    let worker = Worker::start(&spool, Sink::Tethr(settings.clone()));
    let rec = record(&spool, "call-403", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    worker.wait(|s| s.stopped == 1).await;
    let state = spool.read_state(&rec.name).expect("state.json");
    assert_eq!(state.attempts, 1);
    assert!(state.last_error.as_deref().unwrap().contains("403"), "{state:?}");
    assert_eq!(state.next_attempt, None, "no attempt is scheduled");
    // Other recordings are held too only when they meet the same answer.
    let other = record(&spool, "call-after-403", "Outbound");
    worker.handle.enqueue(other.name.clone());
    worker.wait(|s| s.delivered == 1).await;
    assert_eq!(stand_in.archive_requests(), 2, "the stopped one was not tried again");

    worker.handle.reload(settings);
    let got = worker.wait(|s| s.delivered == 2).await;
    worker.stop().await;
    assert_eq!((got.failed, got.stopped, got.reloads), (0, 1, 1));
    assert_received(&stand_in, &[&rec, &other]);
}

#[tokio::test]
async fn tethr_400_with_a_body_moves_the_recording_to_failed_with_body_and_info() {
    let (_tmp, spool) = spool();
    let (stand_in, settings) = stand_in(Behaviour::with_canned([Canned::with_body(
        400,
        "{\"error\":\"direction must be Inbound, Outbound, Internal or Unknown\"}",
    )]))
    .await;
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let rec = record(&spool, "call-bad", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    let got = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(got, stats(0, 1, 0));
    assert_eq!(stand_in.archive_requests(), 1, "a 400 is not retried");
    let failed = spool.failed_dir(&rec.name);
    assert_eq!(dir_names(&failed), vec!["audio.wav", "error.json", "info.json", "state.json"]);
    assert!(fs::read(failed.join(delivery::AUDIO_FILE)).unwrap() == rec.wav);
    assert_eq!(fs::read(failed.join(delivery::INFO_FILE)).unwrap(), rec.info, "the info is kept");
    let error = read_json(&failed.join(delivery::ERROR_FILE));
    assert_eq!(error["status"], 400);
    assert!(error["error"].as_str().unwrap().contains("400"), "{error}");
    assert!(error["body"].as_str().unwrap().contains("direction must be"), "the server's reason is kept: {error}");
    assert!(error["time"].as_str().unwrap().ends_with('Z'));
    assert!(spool.pending().unwrap().is_empty());
}

#[tokio::test]
async fn a_recording_not_delivered_within_max_age_goes_to_failed_even_across_restarts() {
    let (_tmp, spool) = spool();
    let rec = record(&spool, "call-old", "Inbound");
    // A previous run first tried it eight days ago (max_age defaults to 7 days).
    let now = jiff::Timestamp::try_from(siprec_gateway::clock::wall_now()).unwrap();
    let eight_days_ago = now - jiff::SignedDuration::from_hours(8 * 24);
    let state = delivery::DeliveryState {
        attempts: 40,
        first_attempt: Some(eight_days_ago.to_string()),
        ..Default::default()
    };
    spool.write_state(&rec.name, &state).unwrap();
    let (stand_in, settings) = stand_in(Behaviour::with_canned([503])).await;
    let worker = Worker::start(&spool, Sink::Tethr(settings));

    let got = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(got, stats(0, 1, 0));
    assert_eq!(stand_in.status_queries().len(), 1, "asked first: NotFound");
    assert_eq!(stand_in.archive_requests(), 1, "one more try, then given up");
    let error = read_json(&spool.failed_dir(&rec.name).join(delivery::ERROR_FILE));
    assert!(error["error"].as_str().unwrap().contains("max_age"), "{error}");
    assert_eq!(error["status"], 503);
}

#[tokio::test]
async fn delivery_state_is_durable_and_a_restart_checks_status_before_sending_again() {
    let (_tmp, spool) = spool();
    let (stand_in, settings) = stand_in(Behaviour::with_canned([503])).await;
    let slow = TethrSettings {
        retry_initial: Duration::from_secs(3600),
        retry_max: Duration::from_secs(3600),
        ..settings.clone()
    };
    let worker = Worker::start(&spool, Sink::Tethr(slow));
    let rec = record(&spool, "call-restart", "Inbound");
    worker.handle.enqueue(rec.name.clone());
    worker.wait(|s| s.retries == 1).await;
    worker.stop().await;

    let state = spool.read_state(&rec.name).expect("state.json after the attempt");
    assert_eq!(state.attempts, 1);
    assert!(state.last_error.as_deref().unwrap().contains("503"), "{state:?}");
    let next: jiff::Timestamp = state.next_attempt.as_deref().expect("next attempt").parse().unwrap();
    let last: jiff::Timestamp = state.last_attempt.as_deref().unwrap().parse().unwrap();
    assert!(next.duration_since(last).as_secs() >= 2600, "about an hour later: {state:?}");
    assert_eq!(state.first_attempt, state.last_attempt);

    // The next run finds it in pending/, asks Tethr first (NotFound), then uploads.
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let got = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;
    assert_eq!(got, stats(1, 0, 0));
    assert_eq!(stand_in.status_queries(), vec![vec![rec.session_id()]]);
    assert_received(&stand_in, &[&rec]);
}

#[tokio::test]
async fn an_excluded_session_is_done_without_sending() {
    let (_tmp, spool) = spool();
    let rec = record(&spool, "call-excluded", "Inbound");
    // A previous run tried it once.
    spool
        .write_state(
            &rec.name,
            &delivery::DeliveryState {
                attempts: 1,
                ..Default::default()
            },
        )
        .unwrap();
    let behaviour = Behaviour {
        status_overrides: vec![(rec.session_id(), "Excluded".into())],
        ..Behaviour::default()
    };
    let (stand_in, settings) = stand_in(behaviour).await;
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let got = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;
    assert_eq!(got, stats(1, 0, 0));
    assert_eq!(stand_in.archive_requests(), 0);
    assert!(spool.pending().unwrap().is_empty());
}

#[tokio::test]
async fn uploads_run_concurrently_and_share_one_token_request() {
    let (_tmp, spool) = spool();
    // The first upload hangs for good; with one upload at a time nothing else would move.
    let (stand_in, settings) = stand_in(Behaviour::with_canned([Canned::Hang])).await;
    let settings = TethrSettings {
        concurrency: 3,
        timeout: Duration::from_secs(120),
        ..settings
    };
    let recs: Vec<_> = (0..3).map(|i| record(&spool, &format!("call-c{i}"), "Inbound")).collect();
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    worker.wait(|s| s.delivered == 2).await;
    worker.stop().await;

    assert_eq!(stand_in.token_requests(), 1, "one refresh in flight for all three uploads");
    assert_eq!(stand_in.uploads().len(), 2);
    assert_eq!(spool.pending().unwrap().len(), 1, "the hung one stays pending");
    drop(recs);
}

#[tokio::test]
async fn a_recording_waiting_to_retry_does_not_block_the_next_and_stays_pending_at_shutdown() {
    let (_tmp, spool) = spool();
    let (stand_in, settings) = stand_in(Behaviour::with_canned([503])).await;
    let slow_retry = TethrSettings {
        retry_initial: Duration::from_secs(3600),
        retry_max: Duration::from_secs(3600),
        concurrency: 1,
        ..settings
    };
    let worker = Worker::start(&spool, Sink::Tethr(slow_retry));
    let unlucky = record(&spool, "unlucky", "Inbound");
    worker.handle.enqueue(unlucky.name.clone());
    worker.wait(|s| s.retries == 1).await;
    assert_eq!(worker.handle.health(), HeartbeatStatus::Warning);
    let next = record(&spool, "next", "Outbound");
    worker.handle.enqueue(next.name.clone());

    worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(stand_in.rejections(), Vec::<String>::new());
    assert_received(&stand_in, &[&next]);
    assert_eq!(spool.pending().unwrap(), vec![unlucky.name.clone()], "kept for the next start");
    assert_eq!(
        dir_names(&spool.pending_dir(&unlucky.name)),
        vec!["audio.wav", "info.json", "state.json"]
    );
}

#[tokio::test]
async fn tethr_unreachable_keeps_retrying_and_loses_nothing() {
    let (_tmp, spool) = spool();
    install_crypto();
    // A port that was just free: nothing listens there.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let settings = TethrSettings {
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(20),
        heartbeat_interval: None,
        ..TethrSettings::new(url, "api-user", delivery::Secret::new("x"))
    };
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let rec = record(&spool, "offline", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    let got = worker.wait(|s| s.retries >= 3).await;
    worker.stop().await;

    assert_eq!((got.delivered, got.failed), (0, 0));
    assert_eq!(spool.pending().unwrap(), vec![rec.name.clone()]);
    assert!(fs::read(spool.pending_dir(&rec.name).join(delivery::AUDIO_FILE)).unwrap() == rec.wav);
}

#[tokio::test]
async fn a_recording_put_back_into_pending_is_found_by_the_rescan() {
    // What `spool retry` does to a running gateway: a directory appears in pending/ without
    // anyone telling the worker. The rescan runs every 30 s.
    let (tmp, spool) = spool();
    let out = tmp.path().join("out");
    let worker = Worker::start(&spool, Sink::Local { dir: out.clone() });
    // Once this one is delivered, the start-up scan of pending/ is over.
    let told = record(&spool, "told", "Inbound");
    worker.handle.enqueue(told.name.clone());
    worker.wait(|s| s.delivered == 1).await;
    let untold = record(&spool, "retried-by-hand", "Inbound");
    let mut stats = worker.handle.stats();
    tokio::time::timeout(Duration::from_secs(45), stats.wait_for(|s| s.delivered == 2))
        .await
        .expect("the rescan within 30 s found it")
        .unwrap();
    worker.stop().await;
    assert!(out.join(format!("{}.wav", untold.name)).exists());
}

#[tokio::test]
async fn heartbeats_report_health_and_offline_at_shutdown() {
    let (_tmp, spool) = spool();
    let (stand_in, settings) = stand_in(Behaviour::with_canned([503])).await;
    let settings = TethrSettings {
        heartbeat_interval: Some(Duration::from_millis(50)),
        retry_initial: Duration::from_secs(3600),
        retry_max: Duration::from_secs(3600),
        ..settings
    };
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    stand_in
        .wait_until("a Healthy heartbeat", |s| s.heartbeats().iter().any(|b| b["Status"] == 1))
        .await;
    let rec = record(&spool, "call-warn", "Inbound");
    worker.handle.enqueue(rec.name.clone());
    stand_in
        .wait_until("a Warning heartbeat", |s| s.heartbeats().iter().any(|b| b["Status"] == 10))
        .await;
    worker.handle.set_disk_full(true);
    stand_in
        .wait_until("an Error heartbeat", |s| s.heartbeats().iter().any(|b| b["Status"] == 20))
        .await;
    worker.stop().await;

    let beats = stand_in.heartbeats();
    let last = beats.last().unwrap();
    assert_eq!(last["Status"], 30, "Offline once at shutdown");
    assert_eq!(beats.iter().filter(|b| b["Status"] == 30).count(), 1);
    assert_eq!(last["Name"], "test-gateway");
    assert_eq!(last["SoftwareVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(stand_in.rejections(), Vec::<String>::new(), "every heartbeat well formed");
}

#[tokio::test]
async fn monitor_404_stops_heartbeats() {
    let (_tmp, spool) = spool();
    let behaviour = Behaviour {
        monitor_status: 404,
        ..Behaviour::default()
    };
    let (stand_in, settings) = stand_in(behaviour).await;
    let settings = TethrSettings {
        heartbeat_interval: Some(Duration::from_millis(20)),
        ..settings
    };
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    stand_in.wait_until("a heartbeat", |s| !s.heartbeats().is_empty()).await;
    // Twenty intervals without a second heartbeat.
    let second = tokio::time::timeout(
        Duration::from_millis(400),
        stand_in.wait_until("a second heartbeat", |s| s.heartbeats().len() >= 2),
    )
    .await;
    worker.stop().await;
    assert!(second.is_err(), "heartbeats went on after a 404");
    assert_eq!(stand_in.heartbeats().len(), 1, "not even Offline after a 404");
}

fn honour(settings: TethrSettings, filter: SettingsFilter) -> TethrSettings {
    TethrSettings {
        recording_settings: Some(RecordingSettingsConfig {
            interval: Duration::from_secs(300),
            filter,
        }),
        ..settings
    }
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn recording_settings_are_fetched_saved_and_decide_per_agent() {
    let (_tmp, spool) = spool();
    let list = json!([
        {"refType": "Agent", "source": "Chaz", "lookupId": "1001", "recordingSetting": "None"},
        {"refType": "Agent", "source": "Chaz", "lookupId": "1002", "recordingSetting": "Disabled"}
    ]);
    let behaviour = Behaviour {
        recording_settings: Some(list.clone()),
        ..Behaviour::default()
    };
    let (stand_in, settings) = stand_in(behaviour).await;
    let worker = Worker::start(&spool, Sink::Tethr(honour(settings.clone(), SettingsFilter::default())));
    let rs = worker.handle.recording_settings();
    tokio::time::timeout(WAIT, rs.loaded()).await.expect("the list is fetched");
    worker.stop().await;

    assert_eq!(rs.decide(&ids(&["sip:1001@pbx.example.com"])), SettingsDecision::Record);
    assert!(matches!(rs.decide(&ids(&["1002"])), SettingsDecision::Skip { .. }));
    assert!(matches!(rs.decide(&ids(&["4711"])), SettingsDecision::Skip { .. }));
    assert_eq!(stand_in.settings_requests(), 1);
    let saved = read_json(&spool.root().join("recording-settings.json"));
    assert_eq!(saved, list);

    // The next start cannot fetch them: the saved copy applies.
    stand_in.set_recording_settings(None);
    let worker = Worker::start(&spool, Sink::Tethr(honour(settings, SettingsFilter::default())));
    let rs = worker.handle.recording_settings();
    tokio::time::timeout(WAIT, rs.loaded()).await.expect("the saved copy is loaded");
    worker.stop().await;
    assert!(matches!(rs.decide(&ids(&["1002"])), SettingsDecision::Skip { .. }));
    assert_eq!(stand_in.settings_requests(), 2);
}

#[tokio::test]
async fn without_recording_settings_every_call_is_recorded() {
    let (_tmp, spool) = spool();
    let behaviour = Behaviour {
        recording_settings: None,
        ..Behaviour::default()
    };
    let (stand_in, settings) = stand_in(behaviour).await;
    let worker = Worker::start(&spool, Sink::Tethr(honour(settings, SettingsFilter::default())));
    stand_in.wait_until("a settings request", |s| s.settings_requests() >= 1).await;
    let rs = worker.handle.recording_settings();
    worker.stop().await;
    assert!(!rs.has_list());
    assert_eq!(rs.decide(&ids(&["1002"])), SettingsDecision::Record);
}

#[tokio::test]
async fn a_rotated_secret_file_is_picked_up_without_a_restart() {
    let (tmp, spool) = spool();
    let (stand_in, settings) = stand_in(Behaviour::default()).await;
    let secret_file = tmp.path().join("secret");
    fs::write(&secret_file, format!("{}\n", settings.client_secret.expose())).unwrap();
    let settings = TethrSettings {
        client_secret_file: Some(secret_file.clone()),
        ..settings
    };
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let first = record(&spool, "before-rotation", "Inbound");
    worker.handle.enqueue(first.name.clone());
    worker.wait(|s| s.delivered == 1).await;

    // Tethr rotates: the old secret and its tokens stop working.
    stand_in.set_client_secret("the-new-secret-2026");
    stand_in.revoke_tokens();
    let second = record(&spool, "after-rotation", "Inbound");
    worker.handle.enqueue(second.name.clone());
    worker.wait(|s| s.retries >= 1).await;
    assert_eq!(worker.handle.health(), HeartbeatStatus::Error, "credentials refused");
    fs::write(&secret_file, "the-new-secret-2026\n").unwrap();

    let got = worker.wait(|s| s.delivered == 2).await;
    worker.stop().await;
    assert_eq!(got.reloads, 1);
    assert_received(&stand_in, &[&first, &second]);
}

/// An HTTP proxy that only does CONNECT, counting the tunnels it opened.
async fn connect_proxy() -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let tunnels = Arc::new(AtomicUsize::new(0));
    let count = tunnels.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { continue };
            let count = count.clone();
            tokio::spawn(async move {
                let mut client = BufReader::new(client);
                let mut line = String::new();
                client.read_line(&mut line).await.unwrap();
                let target = match line.split(' ').collect::<Vec<_>>()[..] {
                    ["CONNECT", target, _] => target.replace("localhost", "127.0.0.1"),
                    _ => return,
                };
                loop {
                    let mut header = String::new();
                    client.read_line(&mut header).await.unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                }
                let mut upstream = tokio::net::TcpStream::connect(target).await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let mut client = client.into_inner();
                client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (url, tunnels)
}

#[tokio::test]
async fn https_through_a_connect_proxy_with_an_extra_ca_bundle() {
    install_crypto();
    let (_tmp, spool) = spool();
    let behaviour = Behaviour::default();
    let stand_in = TethrStandIn::start_tls(behaviour.clone()).await;
    let (proxy, tunnels) = connect_proxy().await;
    let settings = TethrSettings {
        proxy: Some(proxy),
        ca_bundle: Some(support::tethr::test_ca_pem()),
        ..settings(&stand_in, &behaviour)
    };
    assert!(settings.url.starts_with("https://localhost:"));
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let rec = record(&spool, "call-tls", "Inbound");
    worker.handle.enqueue(rec.name.clone());
    let got = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(got, stats(1, 0, 0));
    assert_received(&stand_in, &[&rec]);
    assert!(tunnels.load(Ordering::SeqCst) >= 1, "the traffic went through the proxy");
    assert_eq!(stand_in.tls_failures(), 0);
}

#[tokio::test]
async fn without_the_ca_bundle_the_test_certificate_is_refused() {
    install_crypto();
    let (_tmp, spool) = spool();
    let behaviour = Behaviour::default();
    let stand_in = TethrStandIn::start_tls(behaviour.clone()).await;
    let worker = Worker::start(&spool, Sink::Tethr(settings(&stand_in, &behaviour)));
    let rec = record(&spool, "call-untrusted", "Inbound");
    worker.handle.enqueue(rec.name.clone());
    worker.wait(|s| s.retries >= 2).await;
    worker.stop().await;

    assert!(stand_in.tls_failures() >= 2);
    assert_eq!(stand_in.token_requests(), 0);
    assert_eq!(spool.pending().unwrap(), vec![rec.name.clone()]);
}
