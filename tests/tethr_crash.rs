//! The real gateway binary killed with SIGKILL in the middle of an upload, then started again
//! on the same spool against a healthy Tethr stand-in: the call arrives exactly once, whether
//! the killed upload had reached Tethr or not. The recording is put into `pending/` before the
//! first start, as a previous run would have left it.

mod support;

use std::path::Path;

use siprec_gateway::delivery::Spool;
use support::gateway::Gateway;
use support::tethr::{Behaviour, Canned, TethrStandIn, WAIT, assert_received, record};

/// `[spool]` and `[tethr]` for the stand-in; uploads may hang for a minute, so the kill comes
/// while one is in flight.
fn config(stand_in: &TethrStandIn, behaviour: &Behaviour, spool: &Path) -> String {
    format!(
        "[spool]\ndir = {:?}\n[tethr]\nurl = {:?}\nclient_id = {:?}\nclient_secret = {:?}\n\
         retry_initial = \"200ms\"\ntimeout = \"60s\"\n",
        spool,
        stand_in.url(),
        behaviour.client_id,
        behaviour.client_secret
    )
}

/// Starts a gateway, waits until its upload meets `canned` at the stand-in, kills it with SIGKILL,
/// starts another on the same spool and waits for it to report the recording delivered.
async fn kill_during_upload_then_restart(canned: Canned) -> (TethrStandIn, support::tethr::Recording) {
    let tmp = tempfile::tempdir().unwrap();
    let spool_dir = tmp.path().join("spool");
    let spool = Spool::open(&spool_dir).unwrap();
    let rec = record(&spool, "killed-mid-upload", "Inbound");
    let behaviour = Behaviour::with_canned([canned]);
    let stand_in = TethrStandIn::start(behaviour.clone()).await;
    let config = config(&stand_in, &behaviour, &spool_dir);

    let first = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Gateway::start(&config)).await.unwrap()
    };
    // The whole body has arrived and the canned answer is being played (for StoreThenHang,
    // the call is stored in the same step).
    stand_in.wait_until("the canned answer in use", |s| s.canned_left() == 0).await;
    let state = spool.read_state(&rec.name).expect("state.json is written before the upload");
    assert_eq!(state.attempts, 1);
    // Dropping the harness kills the process with SIGKILL.
    tokio::task::spawn_blocking(move || drop(first)).await.unwrap();
    assert_eq!(spool.pending().unwrap(), vec![rec.name.clone()], "still pending after the kill");

    tokio::task::spawn_blocking(move || {
        let mut second = Gateway::start(&config);
        second.wait_for_log("recording delivered", WAIT);
        second.sigterm();
        assert!(second.wait_exit(WAIT).success());
        assert!(spool.pending().unwrap().is_empty(), "nothing left to deliver");
        drop(tmp);
    })
    .await
    .unwrap();
    (stand_in, rec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_tethr_stored_the_upload_the_restart_does_not_send_it_again() {
    let (stand_in, rec) = kill_during_upload_then_restart(Canned::StoreThenHang).await;
    assert_eq!(stand_in.rejections(), Vec::<String>::new());
    assert_eq!(stand_in.archive_requests(), 1, "not sent again");
    assert_eq!(stand_in.uploads().len(), 1);
    assert_eq!(stand_in.status_queries(), vec![vec![rec.session_id()]]);
    assert_received(&stand_in, &[&rec]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_tethr_stored_the_upload_the_restart_sends_it_once() {
    let (stand_in, rec) = kill_during_upload_then_restart(Canned::Hang).await;
    assert_eq!(stand_in.rejections(), Vec::<String>::new());
    assert_eq!(stand_in.archive_requests(), 2);
    assert_eq!(stand_in.status_queries(), vec![vec![rec.session_id()]], "asked before re-sending");
    assert_received(&stand_in, &[&rec]);
}
