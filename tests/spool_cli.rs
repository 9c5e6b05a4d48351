//! `siprec-gateway spool list|retry|purge` on a spool laid out by hand: what an operator sees
//! and what each command moves, removes and journals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use siprec_gateway::clock;

/// A spool with one recording in each state (two failed, two delivered) and a config naming it.
struct Fixture {
    tmp: tempfile::TempDir,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn iso(offset_s: i64) -> String {
    let now = jiff::Timestamp::try_from(clock::wall_now()).expect("wall time");
    (now + jiff::SignedDuration::from_secs(offset_s)).to_string()
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("temp dir");
        let f = Fixture { tmp };
        let spool = f.spool();
        write(&f.config(), &format!("[spool]\ndir = {:?}\n", spool));
        let start_ms = clock::wall_now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() - 65_000;
        write(&spool.join("active/rec-1/call.json"), &format!(
            r#"{{"session_id":"rec-1@sbc","start_unix_ms":{start_ms},"offer_content_type":null,"offer_body":"","sip_headers":[]}}"#
        ));
        write(&spool.join("active/rec-1/audio.wav"), "RIFF");
        let info = |id: &str| format!(r#"{{"sessionId":"{id}","startTime":"{}"}}"#, iso(-7200));
        write(&spool.join("pending/pend-1/info.json"), &info("pend-1@sbc"));
        write(&spool.join("pending/pend-1/audio.wav"), "RIFF");
        write(&spool.join("pending/pend-1/state.json"), &format!(
            r#"{{"attempts":3,"first_attempt":"{}","last_attempt":"{}","last_error":"HTTP 503 Service Unavailable","next_attempt":"{}"}}"#,
            iso(-600), iso(-10), iso(125)
        ));
        for name in ["fail-1", "fail-2"] {
            write(&spool.join(format!("failed/{name}/info.json")), &info(&format!("{name}@sbc")));
            write(&spool.join(format!("failed/{name}/audio.wav")), name);
            write(&spool.join(format!("failed/{name}/state.json")), r#"{"attempts":1,"last_error":"HTTP 400"}"#);
            write(&spool.join(format!("failed/{name}/error.json")), &format!(
                r#"{{"status":400,"error":"HTTP 400: direction is invalid","body":"{{}}","time":"{}"}}"#, iso(-3000)
            ));
        }
        for name in ["del-1", "del-2"] {
            write(&spool.join(format!("delivered/{name}/info.json")), &info(&format!("{name}@sbc")));
            write(&spool.join(format!("delivered/{name}/audio.wav")), "RIFF");
        }
        f
    }

    fn spool(&self) -> PathBuf {
        self.tmp.path().join("spool")
    }

    fn config(&self) -> PathBuf {
        self.tmp.path().join("gateway.toml")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_siprec-gateway"))
            .arg("spool")
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .expect("run siprec-gateway spool")
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "spool {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn journal(&self) -> String {
        std::fs::read_to_string(self.spool().join("journal.log")).unwrap_or_default()
    }

    /// Every file under the spool with its contents, to show a command changed nothing.
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push((path.clone(), std::fs::read(&path).expect("read")));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.spool(), &mut out);
        out.sort();
        out
    }
}

fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
}

#[test]
fn list_shows_every_recording_with_state_progress_and_reason_and_changes_nothing() {
    let f = Fixture::new();
    let before = f.snapshot();
    let table = f.ok(&["list"]);
    assert_eq!(f.snapshot(), before, "list is read-only");
    assert!(table.starts_with("STATE"), "{table}");
    let rec = row(&table, "rec-1");
    assert!(rec.starts_with("recording") && rec.contains("rec-1@sbc") && rec.contains("1m0"), "{rec}");
    let pend = row(&table, "pend-1");
    for part in ["pending", "pend-1@sbc", "2h00m", " 3 ", "in 2m0", "HTTP 503 Service Unavailable"] {
        assert!(pend.contains(part), "{part:?} missing from: {pend}");
    }
    let fail = row(&table, "fail-1");
    assert!(fail.starts_with("failed") && fail.ends_with("HTTP 400: direction is invalid"), "{fail}");
    assert!(row(&table, "del-2").starts_with("delivered"));
    assert!(table.ends_with("1 recording, 1 pending, 2 failed, 2 delivered\n"), "{table}");
}

#[test]
fn retry_moves_a_failed_recording_back_to_pending_with_a_fresh_state() {
    let f = Fixture::new();
    let out = f.ok(&["retry", "fail-1"]);
    assert!(out.contains("fail-1: moved back to pending/"), "{out}");
    let pending = f.spool().join("pending/fail-1");
    assert_eq!(std::fs::read(pending.join("audio.wav")).expect("audio kept"), b"fail-1");
    assert!(pending.join("info.json").is_file());
    assert!(!pending.join("error.json").exists() && !pending.join("state.json").exists());
    assert!(!f.spool().join("failed/fail-1").exists());
    let journal = f.journal();
    assert!(journal.contains(" fail-1 retried ") && journal.contains("HTTP 400: direction is invalid"), "{journal}");
    assert!(row(&f.ok(&["list"]), "fail-1").starts_with("pending"));

    let missing = f.run(&["retry", "fail-1"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("no recording \"fail-1\" in failed/"), "{err}");

    let out = f.ok(&["retry", "--failed"]);
    assert!(out.contains("1 recording(s) re-queued"), "{out}");
    assert!(f.spool().join("pending/fail-2/audio.wav").is_file());
    assert!(f.ok(&["list"]).ends_with("1 recording, 3 pending, 0 failed, 2 delivered\n"));
}

#[test]
fn retry_needs_a_name_or_failed() {
    let f = Fixture::new();
    assert_eq!(f.run(&["retry"]).status.code(), Some(2), "clap usage error");
    assert_ne!(f.run(&["retry", "fail-1", "--failed"]).status.code(), Some(0));
    assert!(f.spool().join("failed/fail-1").is_dir());
}

#[test]
fn purge_removes_only_delivered_recordings_and_says_how_many() {
    let f = Fixture::new();
    assert_eq!(f.ok(&["purge"]), "2 delivered recording(s) removed\n");
    assert_eq!(std::fs::read_dir(f.spool().join("delivered")).expect("delivered/").count(), 0);
    assert!(f.spool().join("pending/pend-1").is_dir() && f.spool().join("failed/fail-1").is_dir());
    assert_eq!(f.journal().lines().filter(|l| l.contains(" purged ")).count(), 2);
    assert_eq!(f.ok(&["purge"]), "0 delivered recording(s) removed\n");
}

#[test]
fn a_missing_spool_directory_is_an_error_not_a_new_spool() {
    let f = Fixture::new();
    write(&f.config(), &format!("[spool]\ndir = {:?}\n", f.tmp.path().join("typo")));
    let out = f.run(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    assert!(!f.tmp.path().join("typo").exists());
}
