//! sipp as a third-party SIP peer: runs one call of a scenario from `tests/sipp/` in a
//! temporary working directory (where sipp writes its message, error and count traces and
//! where `rtp_stream` finds its audio files), and reads those traces back.
//!
//! Needs `sipp` on PATH (Debian package `sip-tester`, built with RTPSTREAM).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// sipp's own limit on the whole run; tests wait a little longer than this.
const SIPP_TIMEOUT_S: u64 = 40;

/// A free UDP and TCP port on 127.0.0.1 (bound by us so the kernel picks it, then released
/// just before sipp binds it); `even` for RTP.
pub fn free_port(even: bool) -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("local addr").port();
        // sipp binds TCP too when -t t1 is used; make sure that is free as well.
        if (!even || port.is_multiple_of(2))
            && port < u16::MAX - 2
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port found");
}

/// One sipp run being set up.
pub struct SippCall {
    scenario: String,
    tcp: bool,
    keys: Vec<(String, String)>,
    pause_ms: Option<u64>,
    files: Vec<(String, Vec<u8>)>,
}

impl SippCall {
    /// `scenario` is a file name in `tests/sipp/`.
    pub fn new(scenario: &str) -> SippCall {
        SippCall {
            scenario: scenario.to_owned(),
            tcp: false,
            keys: Vec::new(),
            pause_ms: None,
            files: Vec::new(),
        }
    }

    /// SIP over TCP instead of UDP.
    pub fn tcp(mut self) -> SippCall {
        self.tcp = true;
        self
    }

    /// `-key name value`: `[name]` in the scenario.
    pub fn key(mut self, name: &str, value: impl ToString) -> SippCall {
        self.keys.push((name.to_owned(), value.to_string()));
        self
    }

    /// `-d ms`: the length of a `<pause/>` without attributes.
    pub fn pause_ms(mut self, ms: u64) -> SippCall {
        self.pause_ms = Some(ms);
        self
    }

    /// A file put in sipp's working directory (e.g. raw audio for `rtp_stream`).
    pub fn file(mut self, name: &str, bytes: Vec<u8>) -> SippCall {
        self.files.push((name.to_owned(), bytes));
        self
    }

    /// Starts sipp's one call against `target`.
    pub fn start(self, target: SocketAddr) -> Sipp {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, bytes) in &self.files {
            std::fs::write(dir.path().join(name), bytes).expect("write sipp file");
        }
        let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sipp")
            .join(&self.scenario);
        let port = free_port(false);
        let media_port = free_port(true);
        let mut cmd = Command::new("sipp");
        cmd.arg("-sf").arg(&scenario);
        cmd.args(["-i", "127.0.0.1", "-mi", "127.0.0.1"]);
        cmd.args(["-p", &port.to_string(), "-mp", &media_port.to_string()]);
        cmd.args(["-t", if self.tcp { "t1" } else { "u1" }]);
        cmd.args([
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            &format!("{SIPP_TIMEOUT_S}s"),
            "-timeout_error",
        ]);
        cmd.args(["-trace_msg", "-trace_err", "-trace_counts"]);
        if let Some(ms) = self.pause_ms {
            cmd.args(["-d", &ms.to_string()]);
        }
        for (k, v) in &self.keys {
            cmd.args(["-key", k, v]);
        }
        cmd.arg(target.to_string());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .current_dir(dir.path())
            .spawn()
            .expect("sipp is installed (Debian package sip-tester)");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        Sipp {
            pid,
            done: rx,
            dir: Some(dir),
            scenario: self.scenario,
        }
    }
}

/// A running sipp. Dropping it kills sipp if it still runs.
pub struct Sipp {
    pid: u32,
    done: mpsc::Receiver<std::io::Result<Output>>,
    /// Taken when sipp has exited.
    dir: Option<tempfile::TempDir>,
    scenario: String,
}

impl Sipp {
    /// Waits for sipp to exit; panics with its output and traces unless its call succeeded.
    pub fn finish(self) -> SippDone {
        let done = self.wait();
        assert!(
            done.output.status.success(),
            "sipp {} failed: {}",
            done.scenario,
            done.describe()
        );
        done
    }

    /// Waits for sipp to exit, successful or not.
    pub fn wait(mut self) -> SippDone {
        let output = match self
            .done
            .recv_timeout(Duration::from_secs(SIPP_TIMEOUT_S + 20))
        {
            Ok(out) => out.expect("wait for sipp"),
            Err(_) => panic!(
                "sipp {} did not exit in time (its own -timeout should have fired)",
                self.scenario
            ),
        };
        let dir = self.dir.take().expect("sipp is waited for once");
        SippDone {
            output,
            dir,
            scenario: self.scenario.clone(),
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if self.dir.is_some() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

/// A message from sipp's `-trace_msg` log.
#[derive(Debug, Clone)]
pub struct Traced {
    /// Seconds since midnight of sipp's clock.
    pub at: f64,
    pub received: bool,
    pub text: String,
}

/// A finished sipp run and its traces.
pub struct SippDone {
    pub output: Output,
    dir: tempfile::TempDir,
    scenario: String,
}

impl SippDone {
    fn trace(&self, suffix: &str) -> Option<PathBuf> {
        let stem = Path::new(&self.scenario).file_stem()?.to_str()?.to_owned();
        std::fs::read_dir(self.dir.path())
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.starts_with(&format!("{stem}_")) && name.ends_with(suffix)
            })
    }

    fn trace_text(&self, suffix: &str) -> String {
        self.trace(suffix)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Everything useful for a failure message.
    pub fn describe(&self) -> String {
        format!(
            "{:?}\n--- stdout (tail) ---\n{}\n--- stderr ---\n{}\n--- errors ---\n{}\n--- messages ---\n{}",
            self.output.status,
            tail(&String::from_utf8_lossy(&self.output.stdout), 30),
            String::from_utf8_lossy(&self.output.stderr),
            self.trace_text("_errors.log"),
            self.trace_text("_messages.log"),
        )
    }

    /// The Call-ID of the first message sipp sent.
    pub fn call_id(&self) -> String {
        let messages = self.messages();
        let first = messages
            .iter()
            .find(|m| !m.received)
            .expect("sipp sent something");
        let header = first.text.lines().find_map(|l| l.strip_prefix("Call-ID:"));
        header
            .expect("Call-ID in sipp's first message")
            .trim()
            .to_owned()
    }

    /// The last row of the `-trace_counts` CSV, by column (`2_200_Retrans` …).
    pub fn counts(&self) -> HashMap<String, u64> {
        let text = self.trace_text("_counts.csv");
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().unwrap_or("").split(';').collect();
        let last: Vec<&str> = lines.next_back().unwrap_or("").split(';').collect();
        header
            .iter()
            .zip(last)
            .filter_map(|(h, v)| Some((h.to_string(), v.trim().parse().ok()?)))
            .collect()
    }

    /// The messages sipp sent and received, in order.
    pub fn messages(&self) -> Vec<Traced> {
        let text = self.trace_text("_messages.log");
        let mut out: Vec<Traced> = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            let Some(stamp) = line
                .strip_prefix("----------")
                .map(|s| s.trim_start_matches('-').trim())
            else {
                continue;
            };
            // "2026-11-28 07:24:20.862039"
            let Some(clock) = stamp.split(' ').nth(1) else {
                continue;
            };
            let at = clock.split(':').fold(0.0, |acc, part| {
                acc * 60.0 + part.parse::<f64>().unwrap_or(0.0)
            });
            let kind = lines.next().unwrap_or("");
            let mut body = String::new();
            while let Some(l) = lines.peek() {
                if l.starts_with("----------") {
                    break;
                }
                body.push_str(l);
                body.push('\n');
                lines.next();
            }
            out.push(Traced {
                at,
                received: kind.contains("received"),
                text: body.trim_start().to_owned(),
            });
        }
        out
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
