//! Scale-out behind Kamailio's dispatcher (Debian package `kamailio`): two real gateways, one
//! `kamailio` running tests/kamailio/dispatcher.cfg in front of them, SIPREC calls replayed from
//! pcaps/ through it, and one call from sipp (tests/sipp/src_siprec_call_via_proxy.xml) that
//! follows the route set as an SBC does. A gateway under SIGTERM answers the dispatcher's OPTIONS
//! probes with 503, so new calls move to the other instance while its own call finishes, and no
//! call is lost.
//!
//! Kamailio is required: without it the test fails and says how to install it.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::audio::ulaw_tone;
use support::gateway::{Gateway, replay};
use support::sipp::{SippCall, free_port};

const CAPTURE: &str = "siprec-2stream-udp.pcap";
/// The call in progress when its gateway drains: long enough for Kamailio to notice the drain
/// (a probe a second) and for two replayed calls to start while it lasts.
const LONG_CALL_S: f64 = 7.0;
const AMPLITUDE: f64 = 12000.0;
const WAIT: Duration = Duration::from_secs(30);
/// How often the tests ask Kamailio (over its control socket) for the state of its destinations.
const POLL: Duration = Duration::from_millis(100);

/// A Kamailio program: Debian installs them in /usr/sbin, which a normal user's PATH lacks.
fn sbin(program: &str) -> PathBuf {
    let packaged = PathBuf::from("/usr/sbin").join(program);
    if packaged.exists() {
        packaged
    } else {
        PathBuf::from(program)
    }
}

/// `kamailio -DD -E` (foreground, log to stderr) with its own run directory, list file and
/// control socket. Dropping it sends SIGTERM to its main process, which stops its children.
struct Kamailio {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Kamailio {
    /// Starts Kamailio on a free UDP port of 127.0.0.1 with `gateways` as dispatcher set 1, and
    /// waits until its control socket answers.
    fn start(gateways: &[SocketAddr]) -> Kamailio {
        let dir = tempfile::tempdir().expect("temp dir");
        let list: String = gateways.iter().map(|g| format!("1 sip:{g}\n")).collect();
        std::fs::write(dir.path().join("dispatcher.list"), list).expect("write dispatcher.list");
        let cfg = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kamailio/dispatcher.cfg");
        let log = std::fs::File::create(dir.path().join("kamailio.log")).expect("kamailio.log");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port(false)));
        let child = Command::new(sbin("kamailio"))
            .args(["-DD", "-E", "-f"])
            .arg(&cfg)
            .arg("-A")
            .arg(format!(
                "DS_LIST=\"{}\"",
                dir.path().join("dispatcher.list").display()
            ))
            .arg("-A")
            .arg(format!(
                "CTL_SOCK=\"unix:{}\"",
                dir.path().join("ctl").display()
            ))
            .args(["-l", &format!("udp:{addr}")])
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .arg("-Y")
            .arg(dir.path())
            .arg("-w")
            .arg(dir.path())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run kamailio ({e}): this test needs it; install the Debian package \
                     `kamailio` (scripts/test.sh does)"
                )
            });
        let kamailio = Kamailio { child, dir, addr };
        kamailio.poll(WAIT, "its control socket to answer", |k| {
            k.destinations().ok()
        });
        kamailio
    }

    /// `kamcmd dispatcher.list`: each destination's address with its flags (`AP` active,
    /// `IP` inactive, both probing).
    fn destinations(&self) -> Result<Vec<(SocketAddr, String)>, String> {
        let ctl = format!("unix:{}", self.dir.path().join("ctl").display());
        let out = Command::new(sbin("kamcmd"))
            .args(["-s", &ctl, "dispatcher.list"])
            .output()
            .map_err(|e| format!("cannot run kamcmd: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut found = Vec::new();
        let mut uri = None;
        for line in text.lines().map(str::trim) {
            if let Some(u) = line.strip_prefix("URI: sip:") {
                uri = u.parse().ok();
            } else if let (Some(flags), Some(addr)) = (line.strip_prefix("FLAGS: "), uri.take()) {
                found.push((addr, flags.to_owned()));
            }
        }
        Ok(found)
    }

    /// Whether Kamailio sends new calls to `gateway`.
    fn is_active(&self, gateway: SocketAddr) -> bool {
        self.destinations()
            .unwrap_or_default()
            .iter()
            .any(|(addr, flags)| *addr == gateway && flags.starts_with('A'))
    }

    /// Asks `check` every [`POLL`] until it returns Some, for up to `timeout`.
    fn poll<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let deadline = siprec_gateway::clock::now() + timeout;
        loop {
            if let Some(t) = check(self) {
                return t;
            }
            assert!(
                siprec_gateway::clock::now() < deadline,
                "kamailio: no {what} within {timeout:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- kamailio log ----\n{}\n---- end of log ----",
                self.log()
            );
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Replays `n` calls through `target` at once; each must be answered and ended with 200.
fn replay_calls(n: usize, target: SocketAddr) {
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| replay(CAPTURE, target, false));
        }
    });
}

fn started(gw: &Gateway) -> usize {
    gw.log().matches("recording started").count()
}

/// The sessionIds (Call-IDs) of the recordings in a gateway's output directory, sorted.
fn recorded_calls(gw: &Gateway) -> Vec<String> {
    let mut calls: Vec<String> = Gateway::files_under(&gw.output_dir())
        .iter()
        .filter_map(|f| f.strip_suffix(".wav"))
        .map(|name| {
            gw.read_recording(name).info["sessionId"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    calls.sort();
    calls
}

/// The Call-IDs Kamailio sent to `gateway` (its last choice for each new session), sorted.
fn dispatched_calls(kamailio_log: &str, gateway: SocketAddr) -> Vec<String> {
    let mut last = std::collections::BTreeMap::new();
    for line in kamailio_log.lines() {
        let Some((_, rest)) = line.split_once("<script>: ") else {
            continue;
        };
        let rest = rest
            .strip_prefix("new session ")
            .or_else(|| rest.strip_prefix("session "));
        if let Some((call_id, to)) = rest.and_then(|r| r.split_once(' '))
            && let Some(dest) = to.rsplit(' ').next()
        {
            last.insert(call_id.to_owned(), dest.to_owned());
        }
    }
    let dest = format!("sip:{gateway}");
    last.into_iter()
        .filter(|(_, d)| *d == dest)
        .map(|(c, _)| c)
        .collect()
}

#[test]
fn a_draining_gateway_hands_new_calls_to_the_other_and_finishes_its_own() {
    let config = "[service]\nshutdown_grace = \"20s\"\n";
    let gateways = [Gateway::start(config), Gateway::start(config)];
    let addrs = [gateways[0].udp_addr(), gateways[1].udp_addr()];
    let kamailio = Kamailio::start(&addrs);
    kamailio.poll(WAIT, "two active gateways", |k| {
        addrs.iter().all(|a| k.is_active(*a)).then_some(())
    });

    // Round robin: four calls, two on each gateway.
    replay_calls(4, kamailio.addr);
    let first: Vec<usize> = gateways.iter().map(started).collect();
    assert_eq!(first, [2, 2], "calls per gateway");

    // A call that is still running when its gateway is told to stop, from an SRC that follows
    // Record-Route as SBCs do (the replays above do not: Kamailio routes theirs by Call-ID).
    let long_call = SippCall::new("src_siprec_call_via_proxy.xml")
        .file("audio.ulaw", ulaw_tone(440.0, AMPLITUDE, LONG_CALL_S))
        .pause_ms((LONG_CALL_S * 1000.0) as u64)
        .start(kamailio.addr);
    let (a, b) = kamailio.poll(WAIT, "gateway taking the long call", |_| {
        (0..2)
            .find(|&i| started(&gateways[i]) > first[i])
            .map(|i| (i, 1 - i))
    });
    let [g0, g1] = gateways;
    let (mut gw_a, gw_b) = if a == 0 { (g0, g1) } else { (g1, g0) };
    gw_a.sigterm();
    gw_a.wait_for_log("shutting down: new calls get 503", WAIT);
    // Kamailio saw A's OPTIONS answered 503 (or unanswered) and takes it out of the set.
    kamailio.poll(WAIT, "probe marking the draining gateway inactive", |k| {
        (!k.is_active(addrs[a])).then_some(())
    });
    assert!(
        kamailio.is_active(addrs[b]),
        "the other gateway stays active"
    );
    assert_eq!(
        gw_a.log().matches("recording finished").count(),
        first[a],
        "the long call ended before the new calls were placed; the test would prove nothing"
    );

    // New calls while A drains: all on B.
    replay_calls(2, kamailio.addr);
    assert_eq!(
        started(&gw_b),
        first[b] + 2,
        "new calls on the other gateway"
    );
    assert_eq!(
        started(&gw_a),
        first[a] + 1,
        "no new call on the draining gateway"
    );

    // A's call ends with its BYE, relayed by Kamailio to A along the route set the gateway's
    // 200 carried (RFC 3261 §12.1.1), and A exits cleanly.
    let call_id = long_call.finish().call_id();
    let last = gw_a.wait_for_recording(first[a] + 1, WAIT);
    assert_eq!(last.info["sessionId"], call_id);
    assert_eq!(last.info["metaData"]["gateway"]["endReason"], "bye");
    let relayed = format!("BYE {call_id} routed by Record-Route");
    assert!(
        kamailio.log().contains(&relayed),
        "Kamailio did not relay the BYE"
    );
    let status = gw_a.wait_exit(WAIT);
    assert!(status.success(), "the drained gateway exited with {status}");
    gw_b.wait_for_logs("recording delivered", first[b] + 2, WAIT);

    // Seven calls, seven recordings, each in the output directory of the gateway Kamailio sent
    // it to; nothing left behind.
    let log = kamailio.log();
    for (gw, addr, calls) in [
        (&gw_a, addrs[a], first[a] + 1),
        (&gw_b, addrs[b], first[b] + 2),
    ] {
        let recorded = recorded_calls(gw);
        assert_eq!(recorded.len(), calls, "{recorded:?}");
        assert_eq!(recorded, dispatched_calls(&log, addr));
        assert_eq!(gw.spool_leftovers(), Vec::<String>::new());
    }
}

#[test]
fn an_invite_refused_with_503_fails_over_to_the_other_gateway() {
    // A takes one call at a time and still answers OPTIONS with 200.
    let gw_a = Gateway::start("[limits]\nmax_calls = 1\n");
    let gw_b = Gateway::start("");
    let addrs = [gw_a.udp_addr(), gw_b.udp_addr()];
    let kamailio = Kamailio::start(&addrs);
    kamailio.poll(WAIT, "two active gateways", |k| {
        addrs.iter().all(|a| k.is_active(*a)).then_some(())
    });

    // Round robin picks A for two of the four calls; the second of them, while A's first call
    // lasts, gets 503 and goes to B. Every replay still ends with 200s.
    replay_calls(4, kamailio.addr);
    gw_a.wait_for_log("limits.max_calls reached", WAIT);
    assert_eq!((started(&gw_a), started(&gw_b)), (1, 3));
    let log = kamailio.log();
    assert!(
        log.contains("failed over to"),
        "no failover in the Kamailio log"
    );
    gw_a.wait_for_logs("recording delivered", 1, WAIT);
    gw_b.wait_for_logs("recording delivered", 3, WAIT);
    for (gw, addr) in [(&gw_a, addrs[0]), (&gw_b, addrs[1])] {
        assert_eq!(recorded_calls(gw), dispatched_calls(&log, addr));
    }
}
