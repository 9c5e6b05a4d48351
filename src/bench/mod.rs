//! `siprec-gateway bench`: the capacity benchmark (issue 8).
//!
//! Per run it first measures a bare receiver (the gateway's socket layout and receive strategy,
//! draining only) under the same packet rate, then starts the real gateway binary as a child
//! process with a temporary config, opens N two-stream SIPREC calls over loopback at a given
//! rate (`sip`), sends their RTP at a real 20 ms pace (`rtp`), holds them, ends them with BYE
//! and checks every output file (`verify`). The gateway's CPU, RSS and descriptors come from
//! `/proc/<pid>`, sampled while every call is up. Several runs are summarised by medians.
//!
//! It is a load generator on the same machine as the gateway, not a timed test: what it
//! asserts is that nothing was lost or misplaced.

mod rtp;
mod sip;
mod verify;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::clock;
use crate::config::parse_duration;
use crate::session::file_name;
use rtp::{Bare, Sender, SenderCmd};
use verify::Checks;

/// How long the bare receiver is measured (at most; less if the calls' hold is shorter).
const BARE_MEASURE: Duration = Duration::from_secs(5);
/// Traffic runs this long before a measurement window opens.
const SETTLE: Duration = Duration::from_secs(1);
/// A sender lag that the gateway's reorder window (60 ms) cannot absorb.
const SENDER_LAG_WARN: Duration = Duration::from_millis(50);
/// How long to wait for the last recordings to appear after the last BYE.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors that stop the benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A socket, file, thread or process operation failed.
    #[error("cannot {what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    /// The options do not make a measurable run.
    #[error("{0}")]
    Options(String),
    /// The gateway did not start.
    #[error("the gateway did not start: {0}")]
    Gateway(String),
}

impl BenchError {
    fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> BenchError {
        move |source| BenchError::Io { what, source }
    }
}

/// Options of `siprec-gateway bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Concurrent calls (two PCMU streams each).
    #[arg(long, default_value_t = 100)]
    pub calls: usize,
    /// How long each call lasts (from its 200 OK to its BYE), e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Call setup rate, e.g. 100/s.
    #[arg(long, default_value = "100/s", value_parser = parse_rate)]
    pub ramp: f64,
    /// Runs; the summary shows the median of each figure.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Where each run's config, spool, output and gateway log go (a temporary directory
    /// inside it, removed after the run unless --keep).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep each run's directory (output files and gateway log).
    #[arg(long)]
    pub keep: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let n = s.trim().strip_suffix("/s").unwrap_or(s.trim());
    match n.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => Err(format!("`{s}` is not a rate like 100/s")),
    }
}

/// One run's figures (all numbers, so that runs can be summarised by medians).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub calls: u64,
    /// Calls answered 200 whose BYE was answered 200.
    pub calls_held: u64,
    pub calls_failed: u64,
    #[serde(flatten)]
    pub checks: Checks,
    /// Packets per second the sender achieved while every call was up, and what 20 ms pacing asks.
    pub sender_pps: f64,
    pub nominal_pps: f64,
    pub sender_max_lag_ms: f64,
    pub gateway_cpu_cores: f64,
    pub calls_per_core: f64,
    pub gateway_us_per_packet: f64,
    pub bare_us_per_packet: f64,
    /// Gateway CPU per packet ÷ bare receiver CPU per packet.
    pub cpu_ratio: f64,
    pub rss_idle_kib: f64,
    pub rss_peak_kib: f64,
    pub rss_per_call_kib: f64,
    pub open_fds: f64,
    pub invite_p50_ms: f64,
    pub invite_p99_ms: f64,
    pub bye_p50_ms: f64,
    pub bye_p99_ms: f64,
    pub ready_p50_ms: f64,
    pub ready_p99_ms: f64,
    /// 1-minute load average when the run started.
    pub load_avg: f64,
    /// The first problems the checks found (at most ten).
    pub problems: Vec<String>,
}

/// Runs the benchmark; Ok(true) when every run recorded every packet at its place.
pub fn run(opts: &BenchOptions) -> Result<bool, BenchError> {
    if opts.calls == 0 || opts.runs == 0 {
        return Err(BenchError::Options("--calls and --runs must be at least 1".into()));
    }
    let ramp = Duration::from_secs_f64(opts.calls as f64 / opts.ramp);
    if opts.duration < ramp + SETTLE + Duration::from_secs(1) {
        return Err(BenchError::Options(format!(
            "--duration {:?} leaves no time with every call up: the ramp takes {:.1} s; use at least {} s",
            opts.duration,
            ramp.as_secs_f64(),
            (ramp + SETTLE).as_secs() + 2
        )));
    }
    crate::runtime::media::raise_fd_limit();
    let mut runs = Vec::new();
    for r in 0..opts.runs {
        let report = run_once(opts, r)?;
        if !opts.json {
            eprintln!("run {}/{}: {}", r + 1, opts.runs, one_line(&report));
            for p in &report.problems {
                eprintln!("  problem: {p}");
            }
        }
        runs.push(report);
    }
    let values: Vec<Value> = runs.iter().map(|r| serde_json::to_value(r).unwrap_or_default()).collect();
    let median = medians(&values);
    let ok = runs.iter().all(|r| r.checks.perfect() && r.calls_failed == 0);
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "ok": ok, "median": median, "runs": values })).unwrap_or_default());
    } else {
        print_summary(opts, &median, ok);
    }
    Ok(ok)
}

fn one_line(r: &RunReport) -> String {
    format!(
        "{} calls, {} written of {} sent, lost {} late {}, gateway {:.2} cores ({:.0} calls/core), ratio {:.2}, RSS/call {:.0} KiB",
        r.calls_held, r.checks.packets_written, r.checks.packets_sent, r.checks.gateway_lost, r.checks.gateway_late, r.gateway_cpu_cores, r.calls_per_core, r.cpu_ratio, r.rss_per_call_kib
    )
}

fn medians(runs: &[Value]) -> Value {
    let mut out = Map::new();
    let Some(Value::Object(first)) = runs.first() else { return Value::Object(out) };
    for key in first.keys() {
        let mut v: Vec<f64> = runs.iter().filter_map(|r| r[key].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        if let Some(m) = v.get(v.len() / 2) {
            out.insert(key.clone(), serde_json::json!(m));
        }
    }
    Value::Object(out)
}

fn print_summary(opts: &BenchOptions, m: &Value, ok: bool) {
    let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
    println!("siprec-gateway bench: {} calls × 2 PCMU streams, {:?} each, ramp {}/s, median of {} run(s)", opts.calls, opts.duration, opts.ramp, opts.runs);
    println!("  calls held            {:.0} (failed {:.0})", f("calls_held"), f("calls_failed"));
    println!(
        "  packets               sent {:.0} · received {:.0} · written {:.0} · lost {:.0} · late {:.0} · missing {:.0} · misplaced {:.0} · max slip {:.1} ms",
        f("packets_sent"),
        f("gateway_packets"),
        f("packets_written"),
        f("gateway_lost"),
        f("gateway_late"),
        f("packets_missing"),
        f("packets_wrong"),
        f("max_slip") / 8.0
    );
    println!("  files                 ok {:.0} · missing {:.0} · truncated {:.0} · wrong length {:.0}", f("files_ok"), f("files_missing"), f("files_truncated"), f("bad_duration"));
    println!("  sender                {:.0} pps (nominal {:.0}), max lag {:.1} ms", f("sender_pps"), f("nominal_pps"), f("sender_max_lag_ms"));
    println!("  gateway CPU           {:.3} cores → {:.0} calls per core", f("gateway_cpu_cores"), f("calls_per_core"));
    println!(
        "  CPU per packet        gateway {:.2} µs · bare receiver {:.2} µs · ratio {:.2}",
        f("gateway_us_per_packet"),
        f("bare_us_per_packet"),
        f("cpu_ratio")
    );
    println!("  memory                RSS idle {:.0} KiB · peak {:.0} KiB · {:.0} KiB per call · {:.0} open fds", f("rss_idle_kib"), f("rss_peak_kib"), f("rss_per_call_kib"), f("open_fds"));
    println!("  INVITE → 200          p50 {:.1} ms · p99 {:.1} ms", f("invite_p50_ms"), f("invite_p99_ms"));
    println!("  BYE → 200             p50 {:.1} ms · p99 {:.1} ms", f("bye_p50_ms"), f("bye_p99_ms"));
    println!("  BYE → recording ready p50 {:.1} ms · p99 {:.1} ms", f("ready_p50_ms"), f("ready_p99_ms"));
    println!("  load average          {:.2}", f("load_avg"));
    println!("  result                {}", if ok { "PASS: every packet at its place, no loss" } else { "FAIL: see the figures above" });
}

fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn sleep_until(t: Instant) {
    let now = clock::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// The bare receiver under `streams` streams of 50 packets/s: CPU per packet in µs.
fn measure_bare(streams: usize, measure: Duration) -> Result<f64, BenchError> {
    let from = clock::now() + SETTLE;
    let bare = Bare::start(streams, from, from + measure)?;
    let sender = Sender::start(streams)?;
    for (id, dest) in bare.rtp.iter().enumerate() {
        let _ = sender.tx.send(SenderCmd::Start { id: id as u32, dest: *dest });
    }
    let result = bare.join();
    for id in 0..streams {
        let _ = sender.tx.send(SenderCmd::Stop { id: id as u32 });
    }
    sender.join();
    if result.packets == 0 {
        return Err(BenchError::Options("the bare receiver received nothing".into()));
    }
    Ok(result.cpu.as_secs_f64() * 1e6 / result.packets as f64)
}

fn run_once(opts: &BenchOptions, run: usize) -> Result<RunReport, BenchError> {
    let n = opts.calls;
    let streams = 2 * n;
    let load_avg = std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split(' ').next()?.parse().ok()).unwrap_or(f64::NAN);
    let ramp = Duration::from_secs_f64(n as f64 / opts.ramp);
    let hold = opts.duration.saturating_sub(ramp + SETTLE);
    let bare_us = measure_bare(streams, hold.min(BARE_MEASURE))?;

    let root = match &opts.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    let dir = root.join(format!("siprec-bench-{}-{run}", std::process::id()));
    let mut gw = GatewayProcess::start(&dir, opts.calls)?;
    let result = drive(opts, run, &mut gw, bare_us, load_avg);
    gw.stop();
    if result.is_ok() && !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else if !opts.json {
        eprintln!("run directory kept: {}", dir.display());
    }
    result
}

fn drive(opts: &BenchOptions, run: usize, gw: &mut GatewayProcess, bare_us: f64, load_avg: f64) -> Result<RunReport, BenchError> {
    let n = opts.calls;
    let streams = 2 * n;
    let rss_idle = gw.status_kib("VmRSS:");
    let sender = Sender::start(streams)?;
    let counters = sender.counters.clone();

    let plan = sip::Plan { calls: n, rate: opts.ramp, duration: opts.duration, run };
    let start = clock::now();
    let ready = ReadyWatcher::start(gw.output.clone(), (0..n).map(|i| file_name(&sip::call_id(run, i))).collect());
    let target = gw.sip;
    let tx = sender.tx.clone();
    let calls = std::thread::Builder::new()
        .name("bench-sip".into())
        .spawn(move || sip::run_calls(plan, target, &tx))
        .map_err(BenchError::io("start the SIP thread"))?;

    // The window with every call up: after the ramp and a settling second, until the first BYE.
    let ramp = Duration::from_secs_f64(n as f64 / opts.ramp);
    let w0 = start + ramp + SETTLE;
    let w1 = start + opts.duration;
    sleep_until(w0);
    let (cpu0, sent0, t0) = (gw.cpu(), counters.sent.load(Ordering::Relaxed), clock::now());
    sleep_until(w1);
    let (cpu1, sent1, t1) = (gw.cpu(), counters.sent.load(Ordering::Relaxed), clock::now());
    let rss_full = gw.status_kib("VmRSS:");
    let fds = gw.fds();

    let outcomes = calls.join().map_err(|_| BenchError::Options("the SIP thread panicked".into()))??;
    let max_lag_ms = counters.max_lag_us.load(Ordering::Relaxed) as f64 / 1000.0;
    let mut problems = Vec::new();
    if max_lag_ms > SENDER_LAG_WARN.as_secs_f64() * 1000.0 {
        problems.push(format!(
            "the sender fell {max_lag_ms:.0} ms behind its schedule {:.1} s into the run (machine busy?): packets that late are re-anchored by the gateway, so their audio is misplaced",
            counters.max_lag_at_ms.load(Ordering::Relaxed) as f64 / 1000.0
        ));
    }
    sender.join();
    let seen = ready.finish(READY_TIMEOUT);
    let rss_peak = gw.status_kib("VmHWM:");

    let mut checks = Checks::default();
    let (mut invite, mut bye, mut ready_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut held = 0u64;
    for (i, c) in outcomes.iter().enumerate() {
        if let (Some(s), Some(a)) = (c.invite_sent, c.answered) {
            invite.push(ms(a - s));
        }
        if let (Some(s), Some(a)) = (c.bye_sent, c.bye_answered) {
            bye.push(ms(a - s));
        }
        if let (Some(s), Some(r)) = (c.bye_sent, seen.get(&i)) {
            ready_ms.push(ms(r.saturating_duration_since(s)));
        }
        if c.invite_status == 200 && c.bye_status == 200 && !c.gateway_bye {
            held += 1;
            let sent = [2 * i, 2 * i + 1].map(|s| counters.per_stream[s].load(Ordering::Relaxed));
            let (c, problem) = verify::check_call(&gw.output, i, c, sent);
            checks.add(&c);
            problems.extend(problem.filter(|_| problems.len() < 10));
        } else if problems.len() < 10 {
            problems.push(format!("{}: INVITE {} BYE {}{}", c.call_id, c.invite_status, c.bye_status, if c.gateway_bye { " (the gateway ended it)" } else { "" }));
        }
    }
    let window = (t1 - t0).as_secs_f64();
    let packets = sent1.saturating_sub(sent0) as f64;
    let cpu = (cpu1 - cpu0).max(0.0);
    let cores = cpu / window;
    let gateway_us = if packets > 0.0 { cpu * 1e6 / packets } else { f64::NAN };
    Ok(RunReport {
        calls: n as u64,
        calls_held: held,
        calls_failed: n as u64 - held,
        checks,
        sender_pps: packets / window,
        nominal_pps: streams as f64 * 50.0,
        sender_max_lag_ms: max_lag_ms,
        gateway_cpu_cores: cores,
        calls_per_core: if cores > 0.0 { n as f64 / cores } else { f64::INFINITY },
        gateway_us_per_packet: gateway_us,
        bare_us_per_packet: bare_us,
        cpu_ratio: gateway_us / bare_us,
        rss_idle_kib: rss_idle,
        rss_peak_kib: rss_peak,
        rss_per_call_kib: (rss_full - rss_idle) / n as f64,
        open_fds: fds,
        invite_p50_ms: percentile(invite.clone(), 0.5),
        invite_p99_ms: percentile(invite, 0.99),
        bye_p50_ms: percentile(bye.clone(), 0.5),
        bye_p99_ms: percentile(bye, 0.99),
        ready_p50_ms: percentile(ready_ms.clone(), 0.5),
        ready_p99_ms: percentile(ready_ms, 0.99),
        load_avg,
        problems,
    })
}

/// Notes when each call's `<name>.json` (delivered last) appears in the output directory.
struct ReadyWatcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<HashMap<usize, Instant>>>,
    thread: std::thread::JoinHandle<()>,
}

impl ReadyWatcher {
    fn start(dir: PathBuf, names: Vec<String>) -> ReadyWatcher {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let index: HashMap<String, usize> = names.into_iter().enumerate().map(|(i, n)| (format!("{n}.json"), i)).collect();
        let (s, st) = (seen.clone(), stop.clone());
        let total = index.len();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    let now = clock::now();
                    let mut seen = s.lock().unwrap_or_else(|e| e.into_inner());
                    for e in entries.flatten() {
                        if let Some(&i) = e.file_name().to_str().and_then(|n| index.get(n)) {
                            seen.entry(i).or_insert(now);
                        }
                    }
                    if seen.len() == total {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        ReadyWatcher { stop, seen, thread }
    }

    /// Waits up to `timeout` for every file, then returns when each appeared.
    fn finish(self, timeout: Duration) -> HashMap<usize, Instant> {
        let deadline = clock::now() + timeout;
        while !self.thread.is_finished() && clock::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The gateway binary (this executable) running `serve` as a child process.
struct GatewayProcess {
    child: Child,
    sip: SocketAddr,
    output: PathBuf,
}

impl GatewayProcess {
    /// Starts the gateway with room for `calls` concurrent calls.
    fn start(dir: &Path, calls: usize) -> Result<GatewayProcess, BenchError> {
        std::fs::create_dir_all(dir).map_err(BenchError::io("create the run directory"))?;
        // A free port for SIP: bind, note, release (the gateway binds it a moment later).
        let sip = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map_err(BenchError::io("find a free SIP port"))?;
        let output = dir.join("output");
        // No free-space floor: a benchmark on a small disk measures the gateway, not the floor.
        // One channel per stream, so each stream's pattern is checked in its own channel.
        let config = format!(
            "[sip]\nlisten = [\"udp:{sip}\"]\n[recording]\nlayout = \"per-stream\"\n\
             [media]\nrtp_ports = \"10000-32000\"\nbind_address = \"127.0.0.1\"\n\
             [limits]\nmax_calls = {}\n\
             [output]\ndir = {:?}\n[spool]\ndir = {:?}\nmin_free = \"0\"\n[service]\nshutdown_grace = \"1s\"\n",
            calls.max(1000),
            output,
            dir.join("spool"),
        );
        let config_path = dir.join("gateway.toml");
        std::fs::write(&config_path, config).map_err(BenchError::io("write the gateway config"))?;
        let log_path = dir.join("gateway.log");
        let log = std::fs::File::create(&log_path).map_err(BenchError::io("create the gateway log"))?;
        let exe = std::env::current_exe().map_err(BenchError::io("find this executable"))?;
        let child = Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("SIPREC_GATEWAY_LOG", std::env::var("SIPREC_GATEWAY_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(BenchError::io("start the gateway"))?;
        let mut gw = GatewayProcess { child, sip, output };
        let deadline = clock::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("SIP listening") {
                return Ok(gw);
            }
            if let Ok(Some(status)) = gw.child.try_wait() {
                return Err(BenchError::Gateway(format!("exited with {status}: {}", text.trim())));
            }
            if clock::now() > deadline {
                gw.stop();
                return Err(BenchError::Gateway(format!("no \"SIP listening\" within 15 s: {}", text.trim())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn proc_path(&self, file: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{file}", self.child.id()))
    }

    /// User + system CPU seconds of the whole process (all threads).
    fn cpu(&self) -> f64 {
        let stat = std::fs::read_to_string(self.proc_path("stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
        // USER_HZ is 100 on every Linux architecture this runs on.
        (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
    }

    /// A `kB` line of /proc/<pid>/status, in KiB.
    fn status_kib(&self, key: &str) -> f64 {
        let status = std::fs::read_to_string(self.proc_path("status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    }

    fn fds(&self) -> f64 {
        std::fs::read_dir(self.proc_path("fd")).map_or(f64::NAN, |d| d.count() as f64)
    }

    /// SIGTERM (graceful drain), then SIGKILL if it has not exited within 30 s.
    fn stop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = clock::now() + Duration::from_secs(30);
        while clock::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
