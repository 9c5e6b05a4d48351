//! The benchmark's RTP: a paced, batched sender, the payload pattern that lets the checker find
//! every packet's audio in a file, and the bare receiver the gateway is compared with.
//!
//! The sender runs on its own thread, sends every stream's packets at a real 20 ms pace
//! (streams spread over the 20 slots of a 20 ms period) and batches them with `sendmmsg`. It
//! sends no RTCP and does not read anything.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, sendmmsg};

use super::BenchError;
use crate::clock;
use crate::media::g711::{self, Law};
use crate::runtime::rx::{self, Drain};

/// Samples (and µ-law bytes) per packet: 20 ms at 8 kHz.
pub const PACKET_SAMPLES: usize = 160;
const HEADER: usize = 12;
const PACKET: usize = HEADER + PACKET_SAMPLES;
/// Packets per `sendmmsg`.
const BATCH: usize = 64;
/// Slots of one packet period, one per millisecond.
const SLOTS: u64 = 20;

/// The µ-law byte of sample `i` of packet `k` of the stream tagged `tag`. Bytes 0..=0x7E only:
/// each decodes to a distinct non-zero sample, so silence never matches. The first four bytes
/// spell `k` and `tag`, so no two packets of a run (up to 16,129 per stream) look alike.
pub fn pattern_byte(tag: u32, k: u32, i: usize) -> u8 {
    let v = match i {
        0 => k % 127,
        1 => (k / 127) % 127,
        2 => tag % 127,
        3 => (tag / 127) % 127,
        _ => (k.wrapping_mul(31).wrapping_add(tag).wrapping_add(i as u32 * 7)) % 127,
    };
    v as u8
}

/// The decoded samples of packet `k` of stream `tag`.
pub fn expected_samples(tag: u32, k: u32, out: &mut [i16; PACKET_SAMPLES]) {
    let mut bytes = [0u8; PACKET_SAMPLES];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = pattern_byte(tag, k, i);
    }
    g711::decode(Law::Mu, &bytes, out);
}

fn write_packet(tag: u32, k: u32, out: &mut [u8]) {
    let seq = k as u16; // wraps like a real sequence number
    let ts = tag.wrapping_mul(7919).wrapping_add(k.wrapping_mul(PACKET_SAMPLES as u32));
    out[0] = 0x80;
    out[1] = if k == 0 { 0x80 } else { 0 }; // marker on the first packet, PT 0 (PCMU)
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&(0x5000_0000u32 ^ tag).to_be_bytes());
    for (i, b) in out[HEADER..PACKET].iter_mut().enumerate() {
        *b = pattern_byte(tag, k, i);
    }
}

/// Commands for the sender thread.
#[derive(Debug)]
pub enum SenderCmd {
    /// Start sending stream `id` (tag `id`) to `dest`.
    Start { id: u32, dest: SocketAddrV4 },
    /// Stop stream `id`; its final packet count goes to `Counters::per_stream[id]`.
    Stop { id: u32 },
}

/// What the sender has done, readable while it runs.
#[derive(Debug)]
pub struct Counters {
    /// Packets handed to the kernel.
    pub sent: AtomicU64,
    /// Packets the kernel refused.
    pub errors: AtomicU64,
    /// Packets sent per stream, final once the stream was stopped.
    pub per_stream: Vec<AtomicU32>,
    /// Longest time the sender ran behind its schedule, in microseconds, and when (ms after
    /// the sender started).
    pub max_lag_us: AtomicU64,
    pub max_lag_at_ms: AtomicU64,
}

/// A running sender thread.
pub struct Sender {
    pub tx: mpsc::Sender<SenderCmd>,
    pub counters: Arc<Counters>,
    thread: std::thread::JoinHandle<()>,
}

struct TxStream {
    dest: SockaddrIn,
    k: u32,
    live: bool,
}

impl Sender {
    /// Starts a sender for up to `streams` streams.
    pub fn start(streams: usize) -> Result<Sender, BenchError> {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(BenchError::io("bind the RTP sender"))?;
        let _ = socket2::SockRef::from(&socket).set_send_buffer_size(4 << 20);
        let counters = Arc::new(Counters {
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            per_stream: (0..streams).map(|_| AtomicU32::new(0)).collect(),
            max_lag_us: AtomicU64::new(0),
            max_lag_at_ms: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("bench-rtp-tx".into())
            .spawn(move || send_loop(&socket, &rx, &c))
            .map_err(BenchError::io("start the RTP sender"))?;
        Ok(Sender { tx, counters, thread })
    }

    /// Stops the thread once every stream was stopped (drops the command channel).
    pub fn join(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

struct Batch {
    buf: Vec<u8>,
    addrs: Vec<Option<SockaddrIn>>,
    len: usize,
    headers: MultiHeaders<SockaddrIn>,
}

impl Batch {
    fn flush(&mut self, socket: &UdpSocket, counters: &Counters) {
        let mut from = 0;
        while from < self.len {
            let mut packets = self.buf[from * PACKET..self.len * PACKET].chunks_exact(PACKET);
            // One slice per message; sendmmsg sends as many as there are addresses.
            let iovs: [[std::io::IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|_| [std::io::IoSlice::new(packets.next().unwrap_or(&[]))]);
            let none: [ControlMessage<'_>; 0] = [];
            let r = sendmmsg(socket.as_raw_fd(), &mut self.headers, &iovs, &self.addrs[from..self.len], none, MsgFlags::empty());
            match r {
                Ok(done) => {
                    let n = done.count().max(1);
                    counters.sent.fetch_add(n as u64, Ordering::Relaxed);
                    from += n;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => {
                    // The first message failed: count it and go on with the rest.
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    from += 1;
                }
            }
        }
        self.len = 0;
    }
}

/// Asks the kernel to run the calling thread before normal-priority work (`renice`, allowed to
/// root), so that the load generator keeps its 20 ms pace on a machine shared with other work: a
/// late sender sends late packets, which the gateway rightly re-anchors. Best effort.
fn raise_priority() {
    let tid = std::fs::read_link("/proc/thread-self").ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if let Some(tid) = tid {
        let _ = std::process::Command::new("renice").args(["-n", "-10", "-p", &tid]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
    }
}

fn send_loop(socket: &UdpSocket, rx: &mpsc::Receiver<SenderCmd>, counters: &Counters) {
    raise_priority();
    let mut streams: Vec<TxStream> = Vec::new();
    let mut slots: Vec<Vec<u32>> = (0..SLOTS).map(|_| Vec::new()).collect();
    let mut batch = Batch {
        buf: vec![0; BATCH * PACKET],
        addrs: vec![None; BATCH],
        len: 0,
        headers: MultiHeaders::preallocate(BATCH, None),
    };
    let start = clock::now();
    let mut done_ms: u64 = 0;
    let mut live = 0usize;
    let mut open = true;
    loop {
        loop {
            match rx.try_recv() {
                Ok(SenderCmd::Start { id, dest }) => {
                    let i = id as usize;
                    if streams.len() <= i {
                        streams.resize_with(i + 1, || TxStream { dest: SockaddrIn::from(SocketAddrV4::new([0, 0, 0, 0].into(), 0)), k: 0, live: false });
                    }
                    streams[i] = TxStream { dest: SockaddrIn::from(dest), k: 0, live: true };
                    slots[(u64::from(id) % SLOTS) as usize].push(id);
                    live += 1;
                }
                Ok(SenderCmd::Stop { id }) => {
                    if let Some(s) = streams.get_mut(id as usize).filter(|s| s.live) {
                        s.live = false;
                        live -= 1;
                        if let Some(c) = counters.per_stream.get(id as usize) {
                            c.store(s.k, Ordering::Relaxed);
                        }
                        slots[(u64::from(id) % SLOTS) as usize].retain(|x| *x != id);
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !open && live == 0 {
            return;
        }
        let now = clock::now();
        let now_ms = now.duration_since(start).as_millis() as u64;
        if now_ms > done_ms + 1 {
            let lag = (now_ms - done_ms - 1) * 1000;
            if counters.max_lag_us.fetch_max(lag, Ordering::Relaxed) < lag {
                counters.max_lag_at_ms.store(now_ms, Ordering::Relaxed);
            }
        }
        while done_ms < now_ms {
            done_ms += 1;
            for &id in &slots[(done_ms % SLOTS) as usize] {
                let s = &mut streams[id as usize];
                let at = batch.len * PACKET;
                write_packet(id, s.k, &mut batch.buf[at..at + PACKET]);
                batch.addrs[batch.len] = Some(s.dest);
                batch.len += 1;
                s.k += 1;
                if let Some(c) = counters.per_stream.get(id as usize) {
                    c.store(s.k, Ordering::Relaxed);
                }
                if batch.len == BATCH {
                    batch.flush(socket, counters);
                }
            }
        }
        batch.flush(socket, counters);
        let next = start + Duration::from_millis(done_ms + 1);
        let now = clock::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
}

/// CPU time of the calling thread (user + system).
pub fn thread_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// The bare receiver's measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct BareResult {
    pub packets: u64,
    pub cpu: Duration,
}

/// A receiver with the gateway's socket layout (an RTP and an RTCP socket per stream) and
/// receive strategy (`runtime::rx`), that only drains.
pub struct Bare {
    /// Where each stream's RTP goes.
    pub rtp: Vec<SocketAddrV4>,
    thread: std::thread::JoinHandle<BareResult>,
}

impl Bare {
    /// Binds the sockets and starts draining; measures from `measure_from` to `measure_until`.
    pub fn start(streams: usize, measure_from: Instant, measure_until: Instant) -> Result<Bare, BenchError> {
        let poll = Poll::new().map_err(BenchError::io("create a poll"))?;
        let mut sockets = Vec::with_capacity(streams * 2);
        let mut rtp = Vec::with_capacity(streams);
        for i in 0..streams * 2 {
            let s = UdpSocket::bind("127.0.0.1:0").map_err(BenchError::io("bind a bare receiver socket"))?;
            s.set_nonblocking(true).map_err(BenchError::io("set non-blocking"))?;
            if i % 2 == 0 {
                crate::runtime::media::size_rtp_buffer(&s);
                if let Ok(SocketAddr::V4(a)) = s.local_addr() {
                    rtp.push(a);
                }
            }
            let mut s = mio::net::UdpSocket::from_std(s);
            poll.registry().register(&mut s, Token(i), Interest::READABLE).map_err(BenchError::io("register a socket"))?;
            sockets.push(s);
        }
        let thread = std::thread::Builder::new()
            .name("bench-bare-rx".into())
            .spawn(move || bare_loop(poll, &sockets, measure_from, measure_until))
            .map_err(BenchError::io("start the bare receiver"))?;
        Ok(Bare { rtp, thread })
    }

    pub fn join(self) -> BareResult {
        self.thread.join().unwrap_or_default()
    }
}

fn bare_loop(mut poll: Poll, sockets: &[mio::net::UdpSocket], from: Instant, until: Instant) -> BareResult {
    let mut events = Events::with_capacity(1024);
    let mut drain = Drain::default();
    let mut packets = 0u64;
    let mut start: Option<(u64, Duration)> = None;
    loop {
        let now = clock::now();
        if start.is_none() && now >= from {
            start = Some((packets, thread_cpu()));
        }
        if now >= until {
            let (p0, c0) = start.unwrap_or((packets, thread_cpu()));
            return BareResult { packets: packets - p0, cpu: thread_cpu().saturating_sub(c0) };
        }
        let _ = poll.poll(&mut events, Some(Duration::from_millis(20)));
        let woke = clock::now();
        for ev in events.iter() {
            if let Some(s) = sockets.get(ev.token().0) {
                packets += drain.drain(s, |_| {}) as u64;
            }
        }
        rx::pace(woke);
    }
}
