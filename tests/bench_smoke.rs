//! A small run of the capacity benchmark (`siprec-gateway bench`), as CI runs it: 20 two-stream
//! calls for 3 s. It asserts what the benchmark checks (every call recorded, every packet's
//! audio at its place, nothing lost, late or truncated), never a timing.

use std::process::Command;

use serde_json::Value;

#[test]
fn twenty_calls_are_recorded_without_loss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_siprec-gateway"))
        .args(["bench", "--calls", "20", "--duration", "3s", "--runs", "1", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run siprec-gateway bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bench printed no JSON ({e}):\n{stdout}\n{stderr}"));
    let run = &report["runs"][0];
    let n = |k: &str| run[k].as_u64().unwrap_or_else(|| panic!("no {k} in {run:#}"));
    assert_eq!(n("calls_held"), 20, "{run:#}");
    assert_eq!(n("files_ok"), 20, "{run:#}");
    assert_eq!((n("files_missing"), n("files_truncated"), n("bad_duration")), (0, 0, 0), "{run:#}");
    // 20 calls × 2 streams × 3 s at 50 packets/s: about 6,000 packets.
    assert!(n("packets_sent") > 5_000, "{run:#}");
    // Every packet at its place; only a stream's first packet or two may carry audio from
    // before the 200 OK, where the recording starts.
    assert_eq!(n("packets_written") + n("packets_before_start"), n("packets_sent"), "{run:#}");
    assert!(n("packets_before_start") <= 2 * 2 * 20, "{run:#}");
    assert_eq!((n("packets_missing"), n("packets_wrong")), (0, 0), "{run:#}");
    assert_eq!((n("gateway_lost"), n("gateway_late")), (0, 0), "{run:#}");
    assert_eq!(n("gateway_packets"), n("packets_sent"), "{run:#}");
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(out.status.success(), "bench exited {}:\n{stderr}", out.status);
}
