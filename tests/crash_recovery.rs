//! The durable spool against the real binary: a gateway killed with SIGKILL during a call and
//! started again on the same spool delivers that call exactly once, cut short where the audio
//! on disk ends; and a spool below its free-space floor refuses new calls with 503.

mod support;

use std::path::Path;
use std::time::Duration;

use siprec_gateway::clock;
use siprec_gateway::delivery::INTERRUPTED_NOTE;
use support::gateway::{self, Gateway, log_field, log_time};

/// A guard against hanging; every wait ends earlier when things work.
const WAIT: Duration = Duration::from_secs(20);
/// Bytes per second of the 2-channel 8 kHz 16-bit WAV the capture gives.
const BYTES_PER_SECOND: u64 = 2 * 2 * 8000;

/// Waits until the file at `path` is larger than `bytes`, polling its size (the file grows
/// once a second when the recorder checkpoints; there is nothing to wait on but the size).
fn wait_for_size(path: &Path, bytes: u64) -> u64 {
    let deadline = clock::now() + WAIT;
    loop {
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        if len > bytes {
            return len;
        }
        assert!(clock::now() < deadline, "{} did not grow past {bytes} bytes within {WAIT:?}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn call_interrupted_by_kill_9_is_delivered_once_after_restart_with_the_audio_on_disk() {
    let mut gw = Gateway::start("");
    let mut replay = gateway::spawn_replay("siprec-2stream-udp.pcap", gw.udp_addr());
    let started = gw.wait_for_log("recording started", WAIT);
    let name = log_field(&started, "session").expect("session= in the log line").to_owned();
    let wav = gw.spool_dir().join("active").join(&name).join("capture.wav");
    // 1.5 s of audio on disk, then the crash.
    wait_for_size(&wav, 44 + BYTES_PER_SECOND * 3 / 2);
    let killed_at = jiff::Timestamp::try_from(clock::wall_now()).expect("wall time");
    assert!(!gw.kill9().success());
    let _ = replay.kill();
    let _ = replay.wait();
    let recorded_s = killed_at.duration_since(log_time(&started)).as_secs_f64();

    let gw = gw.restart("");
    let rec = gw.wait_for_recording(1, WAIT);
    assert_eq!(rec.name, name);
    let gw_info = &rec.info["metaData"]["gateway"];
    assert_eq!(gw_info["endReason"], "interrupted", "{:#}", rec.info);
    assert_eq!(gw_info["notes"][0], INTERRUPTED_NOTE);
    assert!(rec.info["sessionId"].as_str().is_some_and(|id| id.contains('@')), "the Call-ID from call.json");
    assert_eq!(rec.info["contacts"].as_array().map(Vec::len), Some(2), "metadata parsed again");
    assert_eq!(rec.first_null(), None);

    // The WAV plays and holds what was recorded before the kill.
    assert_eq!(rec.wav.channels.len(), 2);
    let seconds = rec.wav.seconds();
    assert!(
        seconds >= 1.5 && (seconds - recorded_s).abs() <= 1.1,
        "recovered {seconds:.3} s of audio; the call ran {recorded_s:.3} s before the kill"
    );
    assert!((rec.info_seconds() - seconds).abs() < 0.002, "endTime = startTime + the audio's length");
    assert!(rec.wav.channel(0).rms(0.2, 1.0) > 1000.0, "channel 0 holds the caller's tone");

    // Exactly one recording, and nothing left in the spool but the journal.
    assert_eq!(Gateway::files_under(&gw.output_dir()), [format!("{name}.json"), format!("{name}.wav")]);
    assert_eq!(Gateway::files_under(&gw.spool_dir()), ["journal.log"]);
    let journal = std::fs::read_to_string(gw.spool_dir().join("journal.log")).expect("journal");
    assert!(journal.contains(&format!(" {name} recovered ")), "{journal}");
    assert!(journal.contains(&format!(" {name} finalized ")), "{journal}");
}

#[test]
fn invite_below_the_free_space_floor_gets_503_and_nothing_is_recorded() {
    let gw = Gateway::start("[spool]\nmin_free = \"1000TiB\"\n");
    let out = gateway::spawn_replay("siprec-2stream-udp.pcap", gw.udp_addr())
        .wait_with_output()
        .expect("replay runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("INVITE 503"), "replay: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    let refused = gw.wait_for_log("below spool.min_free", WAIT);
    assert!(refused.contains("ERROR"), "{refused}");
    assert!(!gw.log().contains("recording started"));
    assert_eq!(Gateway::files_under(&gw.output_dir()), Vec::<String>::new());
    assert!(Gateway::files_under(&gw.spool_dir().join("active")).is_empty());
}
