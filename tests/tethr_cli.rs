//! `siprec-gateway status SESSION_ID…` against the Tethr stand-in: one line per sessionId,
//! with the callId and duration of a stored call and `NotFound` for an unknown one.

mod support;

use std::process::{Command, Stdio};

use siprec_gateway::delivery::{Sink, Spool};
use support::tethr::{Behaviour, DeliveryWorker, TethrStandIn, WAIT, install_crypto, record, settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_one_line_per_session_with_call_id_and_duration() {
    install_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(&tmp.path().join("spool")).unwrap();
    let behaviour = Behaviour::default();
    let stand_in = TethrStandIn::start(behaviour.clone()).await;
    let worker = DeliveryWorker::start(&spool, Sink::Tethr(settings(&stand_in, &behaviour)));
    let rec = record(&spool, "checked", "Inbound");
    worker.handle.enqueue(rec.name.clone());
    worker.wait(|s| s.delivered == 1).await;
    worker.stop().await;
    let call_id = stand_in.uploads()[0].call_id.clone();

    let config = tmp.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[spool]\ndir = {:?}\n[tethr]\nurl = {:?}\nclient_id = {:?}\nclient_secret = {:?}\ntimeout = \"10s\"\n",
            spool.root(),
            stand_in.url(),
            behaviour.client_id,
            behaviour.client_secret
        ),
    )
    .unwrap();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_siprec-gateway"))
            .arg("status")
            .arg("--config")
            .arg(&config)
            .args(["rs-checked", "rs-never-sent"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(WAIT, run).await.expect("status answers").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![
            format!("rs-checked Concluded callId={call_id} durationSec=1.5"),
            "rs-never-sent NotFound".to_owned()
        ]
    );
    assert_eq!(stand_in.status_queries().last().unwrap(), &vec!["rs-checked".to_owned(), "rs-never-sent".to_owned()]);
}
