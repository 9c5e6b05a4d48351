//! The client secret and the access tokens never reach a log line, an error message or a file
//! in the spool, whatever goes wrong: uploads are driven through every failure path (401 with
//! the token echoed in the body, 400, 403, 503, a hang, a dropped connection, a token endpoint
//! that echoes the secret back, a secret rotation) with a recognisable secret, every log line
//! down to TRACE is captured, and the logs and every spool file are searched for the secret and
//! for every token the stand-in issued.
//!
//! It installs a global tracing subscriber, so it is the only test in this binary.

mod support;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use siprec_gateway::delivery::{RecordingSettingsConfig, Secret, SettingsFilter, Sink, Spool, TethrSettings};
use support::tethr::{Behaviour, Canned, DeliveryWorker, TethrStandIn, install_crypto, record, settings};

const OLD_SECRET: &str = "SECRET-b7f3e9-recognisable";
const NEW_SECRET: &str = "SECRET-rotated-4c1d2a-recognisable";

/// Every log line, as written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_tokens_never_reach_logs_error_json_or_the_spool() {
    let logs = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .init();
    install_crypto();

    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(&tmp.path().join("spool")).unwrap();
    let behaviour = Behaviour {
        client_secret: OLD_SECRET.into(),
        canned: vec![
            Canned::with_body(401, "token {token} is not valid"),
            Canned::with_body(400, "bad request made with {token}"),
            Canned::with_body(503, "overloaded ({token})"),
            Canned::StoreThenDrop,
            Canned::Hang,
            Canned::with_body(403, "{token} lacks the archive role"),
        ],
        recording_settings: Some(serde_json::json!([])),
        ..Behaviour::default()
    };
    let stand_in = TethrStandIn::start(behaviour.clone()).await;
    let base = TethrSettings {
        timeout: Duration::from_millis(800),
        heartbeat_interval: Some(Duration::from_millis(50)),
        recording_settings: Some(RecordingSettingsConfig {
            interval: Duration::from_millis(100),
            filter: SettingsFilter::default(),
        }),
        concurrency: 1,
        ..settings(&stand_in, &behaviour)
    };
    let worker = DeliveryWorker::start(&spool, Sink::Tethr(base.clone()));

    // 401 (token echoed) → new token → 400 (token echoed) → failed/.
    let refused = record(&spool, "refused", "Inbound");
    worker.handle.enqueue(refused.name.clone());
    worker.wait(|s| s.failed == 1).await;
    // 503 (token echoed) → status NotFound → stored, connection dropped → status Concluded.
    let dropped = record(&spool, "dropped", "Inbound");
    worker.handle.enqueue(dropped.name.clone());
    worker.wait(|s| s.delivered == 1).await;
    // A hang until the timeout → status NotFound → 403 (token echoed) → stopped.
    let forbidden = record(&spool, "forbidden", "Inbound");
    worker.handle.enqueue(forbidden.name.clone());
    worker.wait(|s| s.stopped == 1).await;
    // Tethr rotates the secret; a reload with the old one meets a token endpoint that echoes
    // the secret it was sent.
    stand_in.set_client_secret(NEW_SECRET);
    stand_in.revoke_tokens();
    worker.handle.reload(base.clone());
    worker.wait(|s| s.reloads == 1 && s.retries >= 5).await;
    worker.handle.reload(TethrSettings {
        client_secret: Secret::new(NEW_SECRET),
        ..base
    });
    worker.wait(|s| s.delivered == 2).await;
    worker.stop().await;

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("recording refused"), "the capture works:\n{logs}");
    assert!(logs.contains("ALARM"), "the 403 alarm is logged");
    assert!(logs.contains("token request refused"), "the refused secret is logged (scrubbed)");
    let tokens = stand_in.issued_tokens();
    assert!(tokens.len() >= 3, "several tokens were issued: {tokens:?}");
    let secrets: Vec<&str> = [OLD_SECRET, NEW_SECRET]
        .into_iter()
        .chain(tokens.iter().map(String::as_str))
        .collect();
    for secret in &secrets {
        assert!(!logs.contains(secret), "{secret} appears in the logs:\n{logs}");
    }
    let spool_files = files(spool.root());
    assert!(spool_files.iter().any(|(p, _)| p.ends_with("error.json")));
    for (path, bytes) in &spool_files {
        let text = String::from_utf8_lossy(bytes);
        for secret in &secrets {
            assert!(!text.contains(secret), "{secret} appears in {path}:\n{text}");
        }
    }
    let error = std::fs::read_to_string(spool.failed_dir(&refused.name).join("error.json")).unwrap();
    assert!(error.contains("bad request made with [redacted]"), "{error}");
}
