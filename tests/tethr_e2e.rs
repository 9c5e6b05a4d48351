//! The real gateway binary delivering to Tethr: `[tethr]` points at the in-test stand-in
//! (real HTTP, API contract checked on every request), a capture is replayed against the
//! gateway, and the stand-in must end up with exactly one valid upload of it.

mod support;

use std::time::Duration;

use support::audio::Wav;
use support::gateway::{self, Gateway, log_field};
use support::tethr::{Behaviour, TethrStandIn};

/// A guard against hanging; every wait ends earlier when things work.
const WAIT: Duration = Duration::from_secs(30);
const CAPTURE: &str = "siprec-2stream-udp.pcap";

/// `[tethr]` for the stand-in, with a short first retry delay.
fn tethr_config(standin: &TethrStandIn, behaviour: &Behaviour) -> String {
    format!(
        "[tethr]\nurl = {:?}\nclient_id = {:?}\nclient_secret = {:?}\nretry_initial = \"200ms\"\n",
        standin.url(),
        behaviour.client_id,
        behaviour.client_secret
    )
}

/// Starts a gateway delivering to the stand-in, replays the UDP capture against it and waits
/// until the gateway reports the recording delivered. Returns the gateway and the Call-ID.
async fn replay_and_deliver(config: String) -> (Gateway, String) {
    tokio::task::spawn_blocking(move || {
        let gw = Gateway::start(&config);
        gateway::replay(CAPTURE, gw.udp_addr(), false);
        let bye = gw.wait_for_log("BYE from the SRC", WAIT);
        let call_id = log_field(&bye, "call_id")
            .expect("call_id in the BYE log line")
            .to_owned();
        gw.wait_for_log("recording delivered", WAIT);
        (gw, call_id)
    })
    .await
    .expect("harness thread")
}

/// Stops the gateway (SIGTERM, nothing active) and checks it left nothing behind.
async fn stop_and_check_spool(gw: Gateway) -> Gateway {
    tokio::task::spawn_blocking(move || {
        let mut gw = gw;
        gw.sigterm();
        let status = gw.wait_exit(WAIT);
        assert!(status.success(), "gateway exited with {status}");
        let left = gw.spool_leftovers();
        assert!(
            left.is_empty(),
            "spool should be empty after delivery: {left:?}"
        );
        assert!(
            Gateway::files_under(&gw.output_dir()).is_empty(),
            "the Tethr sink writes no local files"
        );
        gw
    })
    .await
    .expect("harness thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_call_is_uploaded_once_and_the_spool_emptied() {
    let behaviour = Behaviour::default();
    let standin = TethrStandIn::start(behaviour.clone()).await;
    let (gw, call_id) = replay_and_deliver(tethr_config(&standin, &behaviour)).await;
    tokio::time::timeout(WAIT, standin.wait_for_uploads(1))
        .await
        .expect("an upload");
    let gw = stop_and_check_spool(gw).await;

    assert_eq!(
        standin.rejections(),
        Vec::<String>::new(),
        "contract violations"
    );
    let uploads = standin.uploads();
    assert_eq!(uploads.len(), 1, "exactly one upload");
    assert_eq!(standin.archive_requests(), 1, "no extra archive requests");
    let upload = &uploads[0];
    assert_eq!(upload.info["sessionId"], call_id.as_str());
    let wav = Wav::from_bytes(&upload.wav);
    assert_eq!(wav.channels.len(), 2);
    wav.channel(0).assert_tone(
        "uploaded channel 0",
        440.0,
        12000.0 / std::f64::consts::SQRT_2,
        0.1,
        7.0,
    );
    let delivered = gw.wait_for_log("recording delivered", WAIT);
    assert_eq!(
        log_field(&delivered, "call_id"),
        Some(upload.call_id.as_str()),
        "Tethr's callId is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_answered_503_is_retried_and_delivered_once() {
    let behaviour = Behaviour::with_canned([503]);
    let standin = TethrStandIn::start(behaviour.clone()).await;
    let (gw, call_id) = replay_and_deliver(tethr_config(&standin, &behaviour)).await;
    tokio::time::timeout(WAIT, standin.wait_for_uploads(1))
        .await
        .expect("an upload");
    let gw = stop_and_check_spool(gw).await;

    assert_eq!(
        standin.rejections(),
        Vec::<String>::new(),
        "contract violations"
    );
    assert_eq!(standin.archive_requests(), 2, "the 503 and the retry");
    let uploads = standin.uploads();
    assert_eq!(uploads.len(), 1, "exactly one accepted upload");
    assert_eq!(uploads[0].info["sessionId"], call_id.as_str());
    let log = gw.log();
    assert_eq!(
        log.matches("delivery failed; will retry").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("recording delivered").count(), 1, "{log}");
}

/// A rotated client secret is written into the config file and the gateway gets SIGHUP: the
/// recording that could not be delivered with the old secret goes out with the new one, with
/// no restart and no call dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secret_is_picked_up_on_sighup() {
    let behaviour = Behaviour::default();
    let standin = TethrStandIn::start(behaviour.clone()).await;
    let stale = Behaviour { client_secret: "expired-secret".into(), ..behaviour.clone() };
    let config = tethr_config(&standin, &stale);
    let fresh = tethr_config(&standin, &behaviour);
    let gw = tokio::task::spawn_blocking(move || {
        let gw = Gateway::start(&config);
        gateway::replay(CAPTURE, gw.udp_addr(), false);
        gw.wait_for_log("recording finished", WAIT);
        // The token request with the old secret is refused; the recording waits in pending/.
        gw.wait_for_log("will retry", WAIT);
        let text = std::fs::read_to_string(gw.config_path()).expect("config");
        let start = text.find("[tethr]").expect("[tethr] in the harness config");
        let end = text[start + 1..].find("\n[").map_or(text.len(), |i| start + 1 + i);
        let rotated = format!("{}{}{}", &text[..start], fresh, &text[end..]);
        std::fs::write(gw.config_path(), rotated).expect("rewrite config");
        gw.sighup();
        gw.wait_for_log("Tethr credentials reloaded", WAIT);
        gw.wait_for_log("recording delivered", WAIT);
        gw
    })
    .await
    .expect("harness thread");
    assert_eq!(standin.uploads().len(), 1, "delivered exactly once after the reload");
    stop_and_check_spool(gw).await;
}

/// With `honour_recording_settings`, a call whose agent Tethr lists as `Disabled` is answered
/// like any other (the SRC sees 200 and BYE 200) but nothing is stored or sent, and the spool
/// journal says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_of_an_agent_disabled_in_recording_settings_is_answered_but_not_stored() {
    // The capture's second participant (the agent by the mapping rule) is +15559870002.
    let behaviour = Behaviour {
        recording_settings: Some(serde_json::json!([
            {"refType": "Agent", "source": "Chaz", "lookupId": "+15559870002", "recordingSetting": "Disabled"},
            {"refType": "Agent", "source": "Chaz", "lookupId": "1001", "recordingSetting": "None"}
        ])),
        ..Behaviour::default()
    };
    let standin = TethrStandIn::start(behaviour.clone()).await;
    let config = format!("{}honour_recording_settings = true\n", tethr_config(&standin, &behaviour));
    let gw = tokio::task::spawn_blocking(move || {
        let gw = Gateway::start(&config);
        gw.wait_for_log("fetched Tethr's recording settings", WAIT);
        gateway::replay(CAPTURE, gw.udp_addr(), false);
        gw.wait_for_log("nothing stored", WAIT);
        gw
    })
    .await
    .expect("harness thread");
    let journal = std::fs::read_to_string(gw.spool_dir().join("journal.log")).expect("journal");
    assert!(journal.contains(" skipped "), "journal says the call was skipped:\n{journal}");
    assert!(!journal.contains(" recorded "), "nothing was recorded:\n{journal}");
    let gw = stop_and_check_spool(gw).await;
    assert!(standin.uploads().is_empty(), "nothing uploaded");
    drop(gw);
}
