//! Delivery from the spool to the local sink and, over real HTTP, to the Tethr stand-in.

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use siprec_gateway::delivery::{self, DeliveryHandle, DeliveryStats, Secret, Sink, Spool, TethrSettings};
use support::tethr::{Behaviour, Canned, TethrStandIn};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// A guard against hanging forever if delivery never happens; not a synchronisation.
const GIVE_UP: Duration = Duration::from_secs(30);
const SAMPLE_RATE: u32 = 8000;

/// A recording finished into `pending/`.
struct Recording {
    name: String,
    info: Vec<u8>,
    wav: Vec<u8>,
}

/// A two-channel 16-bit PCM WAV: a different tone on each channel.
fn wav_bytes(channels: u16, seconds: f64) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut out, spec).unwrap();
    let frames = (seconds * f64::from(SAMPLE_RATE)) as u32;
    for n in 0..frames {
        for ch in 0..channels {
            let freq = 300.0 + 200.0 * f64::from(ch);
            let v = (2.0 * std::f64::consts::PI * freq * f64::from(n) / f64::from(SAMPLE_RATE)).sin();
            writer.write_sample((v * 8000.0) as i16).unwrap();
        }
    }
    writer.finalize().unwrap();
    out.into_inner()
}

/// info.json as the recorder would write it for a SIPREC call.
fn info_json(session_id: &str, seconds: f64, direction: &str) -> Vec<u8> {
    let start: jiff::Timestamp = "2025-03-04T10:15:30.250Z".parse().unwrap();
    let end = start + jiff::SignedDuration::from_secs_f64(seconds);
    let info = json!({
        "sessionId": session_id,
        "masterCallId": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6@sbc.example.com",
        "startTime": start.to_string(),
        "endTime": end.to_string(),
        "direction": direction,
        "audio": {"format": "wav"},
        "contacts": [
            {"type": "agent", "channel": 0, "referenceId": "1001", "phoneNumber": "+15555550100"},
            {"type": "customer", "channel": 1, "phoneNumber": "+15555550199"}
        ],
        "metaData": {"siprec": {"callId": "a84b4c76e66710@pc33.example.com", "ucid": "00001234567890"}}
    });
    serde_json::to_vec_pretty(&info).unwrap()
}

/// Records a call into `active/<name>/` and finishes it into `pending/`.
fn record(spool: &Spool, name: &str, direction: &str) -> Recording {
    let seconds = 1.5;
    let wav = wav_bytes(2, seconds);
    let info = info_json(&format!("rs-{name}"), seconds, direction);
    fs::create_dir_all(spool.active_dir(name)).unwrap();
    fs::write(spool.active_dir(name).join(delivery::AUDIO_FILE), &wav).unwrap();
    spool.finish(name, &info).unwrap();
    Recording {
        name: name.to_owned(),
        info,
        wav,
    }
}

fn install_crypto() {
    // Err only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A running delivery worker with a shutdown switch.
struct Worker {
    handle: DeliveryHandle,
    task: JoinHandle<()>,
    stop: oneshot::Sender<()>,
}

impl Worker {
    fn start(spool: &Spool, sink: Sink) -> Worker {
        let (stop, stopped) = oneshot::channel::<()>();
        let (handle, task) = delivery::start(spool.clone(), sink, async move {
            let _ = stopped.await;
        });
        Worker { handle, task, stop }
    }

    /// Waits until the worker's counters satisfy `done`. Tests expecting deliveries wait for
    /// delivered + failed, so a refusal fails the test at once instead of at the time limit.
    async fn wait(&self, done: impl FnMut(&DeliveryStats) -> bool) -> DeliveryStats {
        let mut stats: watch::Receiver<DeliveryStats> = self.handle.stats();
        let result = tokio::time::timeout(GIVE_UP, stats.wait_for(done)).await;
        *result.expect("delivery did not happen in time").unwrap()
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap();
    }
}

fn tethr_sink(stand_in: &TethrStandIn) -> Sink {
    let behaviour = Behaviour::default();
    Sink::Tethr(TethrSettings {
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
        ..TethrSettings::new(
            stand_in.url(),
            behaviour.client_id,
            Secret::new(behaviour.client_secret),
        )
    })
}

fn assert_received(stand_in: &TethrStandIn, recordings: &[&Recording]) {
    let uploads = stand_in.uploads();
    assert_eq!(uploads.len(), recordings.len(), "one upload per recording");
    for rec in recordings {
        let expected: Value = serde_json::from_slice(&rec.info).unwrap();
        let got = uploads
            .iter()
            .find(|u| u.info["sessionId"] == expected["sessionId"])
            .expect("uploaded");
        assert_eq!(got.info, expected, "info is exactly info.json");
        assert!(got.wav == rec.wav, "data is exactly audio.wav");
        assert!(!got.call_id.is_empty());
    }
}

#[tokio::test]
async fn local_sink_delivers_wav_and_json_and_empties_the_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(&tmp.path().join("spool")).unwrap();
    let out = tmp.path().join("out").join("recordings");
    let worker = Worker::start(&spool, Sink::Local { dir: out.clone() });
    let rec = record(&spool, "20250304T101530Z-abc123", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    let stats = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(
        stats,
        DeliveryStats {
            delivered: 1,
            failed: 0,
            retries: 0
        }
    );
    assert_eq!(
        dir_names(&out),
        vec![format!("{}.json", rec.name), format!("{}.wav", rec.name)],
        "no .part left"
    );
    assert!(fs::read(out.join(format!("{}.wav", rec.name))).unwrap() == rec.wav);
    assert_eq!(fs::read(out.join(format!("{}.json", rec.name))).unwrap(), rec.info);
    assert!(spool.pending().unwrap().is_empty());
    assert!(
        dir_names(&spool.root().join("pending")).is_empty(),
        "spool directory removed"
    );
    assert!(dir_names(&spool.root().join("active")).is_empty());
}

#[tokio::test]
async fn tethr_uploads_two_recordings_with_one_token() {
    install_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let stand_in = TethrStandIn::start(Behaviour::default()).await;
    let worker = Worker::start(&spool, tethr_sink(&stand_in));
    let first = record(&spool, "call-1", "Inbound");
    worker.handle.enqueue(first.name.clone());
    let second = record(&spool, "call-2", "Outbound");
    worker.handle.enqueue(second.name.clone());

    worker.wait(|s| s.delivered + s.failed >= 2).await;
    worker.stop().await;

    assert_eq!(stand_in.rejections(), Vec::<String>::new());
    assert_received(&stand_in, &[&first, &second]);
    assert_eq!(stand_in.token_requests(), 1, "the token is cached");
    assert!(spool.pending().unwrap().is_empty());
    assert!(dir_names(&spool.root().join("failed")).is_empty());
}

#[tokio::test]
async fn tethr_503_is_retried_and_delivered_exactly_once() {
    install_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let stand_in = TethrStandIn::start(Behaviour::with_canned([503])).await;
    let worker = Worker::start(&spool, tethr_sink(&stand_in));
    let rec = record(&spool, "call-503", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    let stats = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(
        stats,
        DeliveryStats {
            delivered: 1,
            failed: 0,
            retries: 1
        }
    );
    assert_eq!(stand_in.archive_requests(), 2);
    assert_received(&stand_in, &[&rec]);
    assert!(spool.pending().unwrap().is_empty());
}

#[tokio::test]
async fn tethr_429_with_retry_after_zero_is_retried() {
    install_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let stand_in = TethrStandIn::start(Behaviour::with_canned([Canned {
        status: 429,
        retry_after: Some(0),
    }]))
    .await;
    let worker = Worker::start(&spool, tethr_sink(&stand_in));
    let rec = record(&spool, "call-429", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    let stats = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(stand_in.rejections(), Vec::<String>::new());
    assert_eq!((stats.delivered, stats.retries), (1, 1));
    assert_received(&stand_in, &[&rec]);
}

#[tokio::test]
async fn tethr_401_refreshes_the_token_and_retries_once() {
    install_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let stand_in = TethrStandIn::start(Behaviour::with_canned([401])).await;
    let worker = Worker::start(&spool, tethr_sink(&stand_in));
    let rec = record(&spool, "call-401", "Internal");
    worker.handle.enqueue(rec.name.clone());

    let stats = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    // The stand-in revoked the first token with its 401, so success proves the new one was used.
    assert_eq!(
        stats,
        DeliveryStats {
            delivered: 1,
            failed: 0,
            retries: 0
        }
    );
    assert_eq!(stand_in.token_requests(), 2);
    assert_eq!(stand_in.rejections(), Vec::<String>::new());
    assert_received(&stand_in, &[&rec]);
}

#[tokio::test]
async fn tethr_401_after_a_token_refresh_moves_the_recording_to_failed() {
    install_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let stand_in = TethrStandIn::start(Behaviour::with_canned([401, 401])).await;
    let worker = Worker::start(&spool, tethr_sink(&stand_in));
    let rec = record(&spool, "call-revoked", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    let stats = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(
        stats,
        DeliveryStats {
            delivered: 0,
            failed: 1,
            retries: 0
        }
    );
    assert_eq!(stand_in.token_requests(), 2);
    let error: Value =
        serde_json::from_slice(&fs::read(spool.failed_dir(&rec.name).join(delivery::ERROR_FILE)).unwrap()).unwrap();
    assert_eq!(error["status"], 401);
    assert!(stand_in.uploads().is_empty());
}

#[tokio::test]
async fn tethr_400_moves_the_recording_to_failed_with_error_json_and_keeps_its_files() {
    install_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let stand_in = TethrStandIn::start(Behaviour::default()).await;
    let worker = Worker::start(&spool, tethr_sink(&stand_in));
    // Tethr refuses directions outside its enum with a 400.
    let rec = record(&spool, "call-bad-direction", "Sideways");
    worker.handle.enqueue(rec.name.clone());

    let stats = worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(
        stats,
        DeliveryStats {
            delivered: 0,
            failed: 1,
            retries: 0
        }
    );
    assert_eq!(stand_in.archive_requests(), 1, "a 400 is not retried");
    let failed = spool.failed_dir(&rec.name);
    assert_eq!(dir_names(&failed), vec!["audio.wav", "error.json", "info.json"]);
    assert!(fs::read(failed.join(delivery::AUDIO_FILE)).unwrap() == rec.wav);
    assert_eq!(fs::read(failed.join(delivery::INFO_FILE)).unwrap(), rec.info);
    let error: Value = serde_json::from_slice(&fs::read(failed.join(delivery::ERROR_FILE)).unwrap()).unwrap();
    assert_eq!(error["status"], 400);
    assert!(error["error"].as_str().unwrap().contains("400"), "{error}");
    assert!(
        error["body"].as_str().unwrap().contains("direction"),
        "the server's reason is kept: {error}"
    );
    let time: jiff::Timestamp = error["time"].as_str().unwrap().parse().unwrap();
    assert!(error["time"].as_str().unwrap().ends_with('Z'), "{time}");
    assert!(spool.pending().unwrap().is_empty());
}

#[tokio::test]
async fn startup_delivers_a_recording_left_in_pending_by_a_previous_run() {
    install_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let stand_in = TethrStandIn::start(Behaviour::default()).await;
    let left_over = record(&spool, "left-over", "Inbound");

    let worker = Worker::start(&spool, tethr_sink(&stand_in));
    worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(stand_in.rejections(), Vec::<String>::new());
    assert_received(&stand_in, &[&left_over]);
    assert!(spool.pending().unwrap().is_empty());
}

#[tokio::test]
async fn a_recording_waiting_to_retry_does_not_block_the_next_and_stays_pending_at_shutdown() {
    install_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    let stand_in = TethrStandIn::start(Behaviour::with_canned([503])).await;
    let Sink::Tethr(settings) = tethr_sink(&stand_in) else {
        unreachable!()
    };
    let slow_retry = TethrSettings {
        retry_initial: Duration::from_secs(3600),
        retry_max: Duration::from_secs(3600),
        ..settings
    };
    let worker = Worker::start(&spool, Sink::Tethr(slow_retry));
    let unlucky = record(&spool, "unlucky", "Inbound");
    worker.handle.enqueue(unlucky.name.clone());
    worker.wait(|s| s.retries == 1).await;
    let next = record(&spool, "next", "Outbound");
    worker.handle.enqueue(next.name.clone());

    worker.wait(|s| s.delivered + s.failed >= 1).await;
    worker.stop().await;

    assert_eq!(stand_in.rejections(), Vec::<String>::new());
    assert_received(&stand_in, &[&next]);
    assert_eq!(
        spool.pending().unwrap(),
        vec![unlucky.name.clone()],
        "kept for the next start"
    );
    assert_eq!(
        dir_names(&spool.pending_dir(&unlucky.name)),
        vec!["audio.wav", "info.json"]
    );
}

#[tokio::test]
async fn tethr_unreachable_keeps_retrying_and_loses_nothing() {
    install_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(tmp.path()).unwrap();
    // A port that was just free: nothing listens there.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let settings = TethrSettings {
        retry_initial: Duration::from_millis(5),
        retry_max: Duration::from_millis(20),
        ..TethrSettings::new(url, "api-user", Secret::new("x"))
    };
    let worker = Worker::start(&spool, Sink::Tethr(settings));
    let rec = record(&spool, "offline", "Inbound");
    worker.handle.enqueue(rec.name.clone());

    let stats = worker.wait(|s| s.retries >= 3).await;
    worker.stop().await;

    assert_eq!((stats.delivered, stats.failed), (0, 0));
    assert_eq!(spool.pending().unwrap(), vec![rec.name.clone()]);
    assert!(fs::read(spool.pending_dir(&rec.name).join(delivery::AUDIO_FILE)).unwrap() == rec.wav);
}
