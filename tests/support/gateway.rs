//! The real `siprec-gateway serve` binary under test: a temporary config (listeners on
//! 127.0.0.1 port 0, temporary output and spool directories, an RTP port range of its own),
//! its stderr captured line by line, and waits that wake on new log lines or on exit.
//!
//! It knows nothing about SIP: tests drive the gateway with sipp or `siprec-gateway replay`
//! and read the results here. When a test fails while a `Gateway` is alive, its log is printed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use super::audio::Wav;

/// How long the gateway may take to bind its listeners.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The gateway's stderr so far, shared with the reader thread.
#[derive(Default)]
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// stderr reached end of file: the process has exited.
    closed: bool,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `stderr` until it closes, appending lines without their ANSI colour codes.
    fn collect(&self, stderr: ChildStderr) {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            self.lock().lines.push(strip_ansi(&line));
            self.changed.notify_all();
        }
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Waits until `done` returns Some for the log, or the timeout passes (None).
    fn wait<T>(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&LogState) -> Option<T>,
    ) -> Option<T> {
        let deadline = siprec_gateway::clock::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(t) = done(&state) {
                return Some(t);
            }
            let left = deadline.checked_duration_since(siprec_gateway::clock::now())?;
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn text(&self) -> String {
        self.lock().lines.join("\n")
    }
}

/// Removes `ESC [ ... m` colour sequences (tracing-subscriber colours its output).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `key=` in a log line: up to the next space, without quotes. In a JSON line
/// (`service.log_format = "json"`) the value of the first `"key":` (a string without escapes,
/// or a number or word).
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    if line.starts_with('{') {
        let pattern = format!("\"{key}\":");
        let rest = &line[line.find(&pattern)? + pattern.len()..];
        return match rest.strip_prefix('"') {
            Some(quoted) => Some(&quoted[..quoted.find('"')?]),
            None => rest.split([',', '}']).next(),
        };
    }
    let pattern = format!(" {key}=");
    let start = line.find(&pattern)? + pattern.len();
    let rest = &line[start..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"')?],
        None => rest.split(' ').next()?,
    };
    Some(value)
}

/// The timestamp that starts a log line.
pub fn log_time(line: &str) -> jiff::Timestamp {
    let stamp = line.split(' ').next().unwrap_or("");
    stamp
        .parse()
        .unwrap_or_else(|e| panic!("log line without a timestamp ({e}): {line}"))
}

/// A port range for this gateway's RTP that other tests of this run rarely share: tests in
/// one binary run in parallel, and the gateway skips ports it cannot bind anyway.
fn rtp_port_range() -> (u16, u16) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let block = (std::process::id()
        .wrapping_mul(7)
        .wrapping_add(n.wrapping_mul(37)))
        % 250;
    let first = 20000 + block as u16 * 40;
    (first, first + 39)
}

/// Merges `extra` into `base`, tables recursively, `extra` winning.
fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge(b, e),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// A finished recording in the local output directory.
pub struct Recording {
    /// The file name stem (the Call-ID made safe).
    pub name: String,
    /// `<name>.json`
    pub info: Value,
    /// `<name>.wav`
    pub wav: Wav,
}

impl Recording {
    /// `endTime - startTime` of the info, in seconds.
    pub fn info_seconds(&self) -> f64 {
        let time = |key: &str| -> jiff::Timestamp {
            let text = self.info[key]
                .as_str()
                .unwrap_or_else(|| panic!("info.{key} missing: {:#}", self.info));
            text.parse()
                .unwrap_or_else(|e| panic!("info.{key} {text:?}: {e}"))
        };
        time("endTime")
            .duration_since(time("startTime"))
            .as_secs_f64()
    }

    /// The JSON path of the first null in the info, if any (Tethr wants absent, not null).
    pub fn first_null(&self) -> Option<String> {
        fn find(value: &Value, path: &str) -> Option<String> {
            match value {
                Value::Null => Some(path.to_owned()),
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .find_map(|(i, v)| find(v, &format!("{path}[{i}]"))),
                Value::Object(map) => map
                    .iter()
                    .find_map(|(k, v)| find(v, &format!("{path}.{k}"))),
                _ => None,
            }
        }
        find(&self.info, "$")
    }

    /// `metaData.gateway.streams[channel]`.
    pub fn stream(&self, channel: usize) -> &Value {
        &self.info["metaData"]["gateway"]["streams"][channel]
    }
}

/// A running `siprec-gateway serve`. Dropping it kills the process.
pub struct Gateway {
    child: Child,
    log: Arc<Log>,
    udp: SocketAddr,
    tcp: SocketAddr,
    root: tempfile::TempDir,
    /// The logs of the gateways this one was restarted from, printed with its own on failure.
    previous_log: String,
}

impl Gateway {
    /// Starts the gateway with the harness config, overridden by `extra_toml` (whole tables
    /// or single keys: `[media]\nrtp_timeout = "2s"` keeps the other `[media]` keys), and
    /// waits until both listeners are bound.
    pub fn start(extra_toml: &str) -> Gateway {
        Gateway::start_in(tempfile::tempdir().expect("temp dir"), extra_toml)
    }

    /// As [`Gateway::start`], with `root` holding the config, output and spool directories
    /// (those of a previous gateway, see [`Gateway::restart`]).
    pub fn start_in(root: tempfile::TempDir, extra_toml: &str) -> Gateway {
        let (first, last) = rtp_port_range();
        let base = format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\n\
             [media]\nrtp_ports = \"{first}-{last}\"\nbind_address = \"127.0.0.1\"\n\
             [output]\ndir = {:?}\n[spool]\ndir = {:?}\nmin_free = \"0\"\n",
            root.path().join("output"),
            root.path().join("spool"),
        );
        let mut config: toml::Table = base.parse().expect("harness config");
        merge(
            &mut config,
            extra_toml
                .parse()
                .unwrap_or_else(|e| panic!("extra config: {e}\n{extra_toml}")),
        );
        let config_path = root.path().join("gateway.toml");
        std::fs::write(
            &config_path,
            toml::to_string(&config).expect("config serializes"),
        )
        .expect("write config");

        let mut child = Command::new(env!("CARGO_BIN_EXE_siprec-gateway"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env(
                "SIPREC_GATEWAY_LOG",
                std::env::var("SIPREC_GATEWAY_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .current_dir(root.path())
            .spawn()
            .expect("spawn siprec-gateway");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Log::default());
        let reader = log.clone();
        std::thread::spawn(move || reader.collect(stderr));

        let mut gateway = Gateway {
            child,
            log,
            udp: SocketAddr::from(([0, 0, 0, 0], 0)),
            tcp: SocketAddr::from(([0, 0, 0, 0], 0)),
            root,
            previous_log: String::new(),
        };
        let listening = gateway.log.wait(START_TIMEOUT, |s| {
            let addr = |transport: &str| {
                s.lines
                    .iter()
                    .filter(|l| {
                        l.contains("SIP listening") && log_field(l, "transport") == Some(transport)
                    })
                    .find_map(|l| log_field(l, "addr")?.parse::<SocketAddr>().ok())
            };
            Some((addr("udp")?, addr("tcp")?))
        });
        match listening {
            Some((udp, tcp)) => {
                gateway.udp = udp;
                gateway.tcp = tcp;
            }
            None => panic!("gateway did not report both SIP listeners within {START_TIMEOUT:?}"),
        }
        // Recovery done, delivery and signal handlers (SIGHUP) in place, /ready answers 200.
        gateway.wait_for_log("taking calls", START_TIMEOUT);
        gateway
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    pub fn output_dir(&self) -> PathBuf {
        self.root.path().join("output")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.root.path().join("spool")
    }

    /// The address of the HTTP listener (`[service] http_listen`, e.g. `"127.0.0.1:0"`), from
    /// its log line.
    pub fn http_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("HTTP listening", Duration::from_secs(10));
        log_field(&line, "addr")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr= in {line}"))
    }

    /// The address of the SIP listener of `transport` (`"tls"`, …), from its log line.
    pub fn listen_addr(&self, transport: &str) -> SocketAddr {
        let lines = self.wait_for_logs("SIP listening", 3, Duration::from_secs(10));
        lines
            .iter()
            .filter(|l| log_field(l, "transport") == Some(transport))
            .find_map(|l| log_field(l, "addr")?.parse().ok())
            .unwrap_or_else(|| panic!("no {transport} listener in {lines:?}"))
    }

    /// The log so far, colour codes removed.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// The first log line containing `needle`, waiting up to `timeout` for it. Panics (the
    /// log is printed) on timeout or if the gateway exits first.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_logs(needle, 1, timeout).remove(0)
    }

    /// The first `n` log lines containing `needle`, waiting up to `timeout` for them.
    pub fn wait_for_logs(&self, needle: &str, n: usize, timeout: Duration) -> Vec<String> {
        let mut exited = false;
        let found = self.log.wait(timeout, |s| {
            let hits: Vec<String> = s
                .lines
                .iter()
                .filter(|l| l.contains(needle))
                .take(n)
                .cloned()
                .collect();
            exited = s.closed;
            (hits.len() == n || s.closed).then_some(hits)
        });
        match found {
            Some(hits) if hits.len() == n => hits,
            _ if exited => panic!("gateway exited before logging {n}× {needle:?}"),
            _ => panic!("gateway did not log {n}× {needle:?} within {timeout:?}"),
        }
    }

    /// Sends SIGTERM (graceful drain).
    /// The config file the gateway was started with (rewrite it, then [`Gateway::sighup`]).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.root.path().join("gateway.toml")
    }

    /// Sends SIGHUP (reload the Tethr credentials from the config file).
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed: {status}");
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Sends SIGINT (Ctrl-C: drains like SIGTERM).
    pub fn sigint(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -INT failed: {status}");
    }

    /// Kills the process with SIGKILL, as a crash would stop it (no drain, nothing flushed), and
    /// waits for it.
    pub fn kill9(&mut self) -> ExitStatus {
        self.child.kill().expect("kill -9 the gateway");
        self.child.wait().expect("wait for the gateway")
    }

    /// Starts a new gateway on this one's directories (spool and output kept), after killing
    /// this one if it still runs. This gateway's log is printed first if the test fails later.
    pub fn restart(mut self, extra_toml: &str) -> Gateway {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let root = std::mem::replace(&mut self.root, tempfile::tempdir().expect("temp dir"));
        let mut next = Gateway::start_in(root, extra_toml);
        next.previous_log = format!(
            "{}{}\n---- restarted ----\n",
            self.previous_log,
            self.log.text()
        );
        next
    }

    /// Waits for the process to exit (its stderr closes) and returns how it exited.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if self.log.wait(timeout, |s| s.closed.then_some(())).is_none() {
            panic!("gateway did not exit within {timeout:?}");
        }
        self.child.wait().expect("wait for the gateway")
    }

    /// Waits for the `n`-th "recording delivered" and reads that recording from the output
    /// directory (local sink only).
    pub fn wait_for_recording(&self, n: usize, timeout: Duration) -> Recording {
        let line = self
            .wait_for_logs("recording delivered", n, timeout)
            .pop()
            .expect("n > 0");
        let name =
            log_field(&line, "recording").unwrap_or_else(|| panic!("no recording= in {line}"));
        self.read_recording(name)
    }

    /// Reads `<name>.json` and `<name>.wav` from the output directory.
    pub fn read_recording(&self, name: &str) -> Recording {
        let dir = self.output_dir();
        let json = std::fs::read(dir.join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("{name}.json: {e}"));
        let info: Value = serde_json::from_slice(&json)
            .unwrap_or_else(|e| panic!("{name}.json is not JSON: {e}"));
        let wav = Wav::read(&dir.join(format!("{name}.wav")));
        Recording {
            name: name.to_owned(),
            info,
            wav,
        }
    }

    /// Files anywhere under `dir`, relative to it, sorted.
    /// Recordings (and their files) still in the spool: everything but the spool's own
    /// bookkeeping (`journal.log`, `recording-settings.json`).
    pub fn spool_leftovers(&self) -> Vec<String> {
        Gateway::files_under(&self.spool_dir())
            .into_iter()
            .filter(|f| f != "journal.log" && f != "recording-settings.json")
            .collect()
    }

    pub fn files_under(dir: &Path) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(base, &path, out);
                } else {
                    out.push(
                        path.strip_prefix(base)
                            .unwrap_or(&path)
                            .display()
                            .to_string(),
                    );
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- siprec-gateway log ----\n{}{}\n---- end of log ----",
                self.previous_log,
                self.log.text()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository's `pcaps/<name>`.
pub fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("pcaps")
        .join(name)
}

/// The `<sipSessionID>` in a capture's recording metadata, read from its raw bytes.
pub fn capture_sip_session_id(name: &str) -> String {
    let bytes = std::fs::read(capture(name)).expect("read capture");
    let text = String::from_utf8_lossy(&bytes);
    let start = text
        .find("<sipSessionID>")
        .expect("capture has a sipSessionID")
        + "<sipSessionID>".len();
    let end = start
        + text[start..]
            .find("</sipSessionID>")
            .expect("closed sipSessionID");
    text[start..end].to_owned()
}

/// Starts `siprec-gateway replay pcaps/<name> --target <target> --speed 1` over UDP without
/// waiting for it (stdout and stderr piped), for tests that stop the gateway during the call.
pub fn spawn_replay(name: &str, target: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_siprec-gateway"))
        .arg("replay")
        .arg(capture(name))
        .args([
            "--target",
            &target.to_string(),
            "--speed",
            "1",
            "--transport",
            "udp",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn siprec-gateway replay")
}

/// Runs `siprec-gateway replay pcaps/<name> --target <target> --speed 1` (over TCP if `tcp`),
/// asserts that it exits 0 (INVITE and BYE both answered 200) and returns its log (stderr).
pub fn replay(name: &str, target: SocketAddr, tcp: bool) -> String {
    replay_within(name, target, tcp, Duration::from_secs(40))
}

/// [`replay`] for a capture that lasts longer: the replay is killed after `limit`.
pub fn replay_within(name: &str, target: SocketAddr, tcp: bool, limit: Duration) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_siprec-gateway"));
    cmd.arg("replay")
        .arg(capture(name))
        .args(["--target", &target.to_string(), "--speed", "1"])
        .args(["--transport", if tcp { "tcp" } else { "udp" }])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn siprec-gateway replay");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for replay"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("replay of {name} did not finish within {limit:?}");
        }
    };
    let log: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(strip_ansi)
        .collect();
    let log = log.join("\n");
    assert!(
        out.status.success(),
        "replay of {name} failed ({}):\n{}\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );
    log
}
