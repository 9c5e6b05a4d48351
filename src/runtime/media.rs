//! The media threads: receive every call's RTP, place it on the call's timeline and write the
//! WAV as they go, off the async workers.
//!
//! Calls are spread round-robin (by call key) over one media thread per CPU core, at most
//! [`MAX_THREADS`]; each runs a mio poll loop over its calls' RTP/RTCP sockets. Each wake-up
//! (at most one per `rx::CADENCE`) reads the clock once, drains every ready socket with
//! `recvmmsg` into one reused buffer, decodes G.711 into a reused scratch buffer and places the
//! samples (nothing is allocated or hashed per packet). Every tick (20 ms) each call's timeline
//! hands the frames older than the reorder window to its WAV writer, and once a second the WAV
//! header is brought up to date, so a crash leaves a playable file. Commands come from the
//! signalling task over a channel with a mio waker; events go back over a tokio channel. The
//! finished WAV's fsync is left to the caller, off these threads.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, ErrorKind};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::{mpsc as tmpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::clock;
use crate::media::g711::{self, Law};
use crate::media::latch::{Latch, Verdict};
use crate::media::timeline::{RtpMeta, StreamStats, Timeline};
use crate::media::wav::WavWriter;
use crate::runtime::rx::{self, Drain};

const WAKER: Token = Token(usize::MAX);
const TICK: Duration = Duration::from_millis(20);
const CHECKPOINT: Duration = Duration::from_secs(1);
/// Largest RTP payload we decode in one packet (512 ms of G.711).
const MAX_SAMPLES: usize = 4096;
/// Recordings are 8 kHz today (G.711); the media issue makes this per call.
pub const SAMPLE_RATE: u32 = 8000;

/// One stream's sockets and codec.
#[derive(Debug)]
pub struct StreamSetup {
    pub channel: usize,
    pub rtp: std::net::UdpSocket,
    pub rtcp: std::net::UdpSocket,
    pub law: Law,
    pub payload_type: u8,
    /// `media.relatch_after`: see [`Latch`].
    pub relatch_after: Duration,
}

/// Everything the media thread needs to record a call.
#[derive(Debug)]
pub struct CallSetup {
    pub key: u64,
    /// The call's span (`call_id`, `session`): the lines logged here about the call are in it.
    pub span: tracing::Span,
    pub t0: Instant,
    pub window: Duration,
    pub rtp_timeout: Duration,
    /// Where the audio goes; `None` records nothing (the call is answered, its packets drained).
    pub file: Option<File>,
    pub path: PathBuf,
    pub channels: usize,
    pub streams: Vec<StreamSetup>,
}

/// What the media thread reports when a call's recording is final.
#[derive(Debug)]
pub struct CallResult {
    pub stats: Vec<StreamStats>,
    pub frames: u64,
    /// A write error that cost audio, if any.
    pub error: Option<String>,
    /// The finished WAV, still to be fsynced: the finalize task does that on a blocking thread,
    /// so that one call's fsync (milliseconds) never stalls the packets of every other call.
    pub file: Option<File>,
}

/// Commands from the signalling task.
#[derive(Debug)]
pub enum Command {
    Add(Box<CallSetup>),
    /// Finish the recording at `end` (the timeline is cut or padded to it) and report.
    End { key: u64, end: Instant, done: oneshot::Sender<CallResult> },
    /// Stop the thread (after every call was ended).
    Stop,
}

/// Events for the signalling task.
#[derive(Debug)]
pub enum MediaEvent {
    /// No packet on any stream since `last` (or since the start) for `rtp_timeout`.
    RtpTimeout { key: u64, last: Instant },
}

/// Most media threads started, whatever the core count.
pub const MAX_THREADS: usize = 16;

/// Handle to the media threads: routes each command to the thread that owns its call.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    shards: std::sync::Arc<[Shard]>,
}

#[derive(Debug)]
struct Shard {
    tx: mpsc::Sender<Command>,
    waker: Waker,
}

impl Shard {
    fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// The running media threads.
#[derive(Debug)]
pub struct MediaThreads(Vec<std::thread::JoinHandle<()>>);

impl MediaThreads {
    /// Waits for every media thread to stop (after `Command::Stop`).
    pub fn join(self) -> std::thread::Result<()> {
        self.0.into_iter().try_for_each(|t| t.join())
    }
}

impl MediaHandle {
    pub fn send(&self, cmd: Command) {
        let key = match &cmd {
            Command::Add(setup) => setup.key,
            Command::End { key, .. } => *key,
            Command::Stop => {
                self.shards.iter().for_each(|s| s.send(Command::Stop));
                return;
            }
        };
        if let Some(shard) = self.shards.get((key % self.shards.len() as u64) as usize) {
            shard.send(cmd);
        }
    }
}

/// Entries addressed by index, indexes reused after removal: the per-packet lookups (socket
/// token → stream → call) are array indexing, not hashing.
struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Slab { items: Vec::new(), free: Vec::new() }
    }

    fn insert(&mut self, t: T) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.items[i] = Some(t);
                i
            }
            None => {
                self.items.push(Some(t));
                self.items.len() - 1
            }
        }
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.items.get_mut(i)?.as_mut()
    }

    fn remove(&mut self, i: usize) -> Option<T> {
        let t = self.items.get_mut(i)?.take()?;
        self.free.push(i);
        Some(t)
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.items.iter_mut().flatten()
    }
}

struct Stream {
    /// The call's index in the media thread's call slab.
    call: usize,
    channel: usize,
    law: Law,
    payload_type: u8,
    socket: UdpSocket,
    rtcp: bool,
    /// RTP from the first source only (RTCP is drained, never latched).
    latch: Latch,
}

struct Call {
    key: u64,
    span: tracing::Span,
    timeline: Timeline,
    wav: Option<WavWriter<BufWriter<File>>>,
    tokens: Vec<usize>,
    last_activity: Instant,
    rtp_timeout: Duration,
    timeout_reported: bool,
    last_checkpoint: Instant,
    error: Option<String>,
}

impl Call {
    fn write_until(&mut self, now: Instant) {
        let Self { timeline, wav, error, span, .. } = self;
        let Some(w) = wav.as_mut() else { return };
        if let Err(e) = timeline.advance(now, |chunk| w.write_interleaved(chunk)) {
            let _in_call = span.enter();
            error!(error = %e, "recording write failed; later audio of this call is lost");
            *error = Some(e.to_string());
            *wav = None;
        }
    }
}

/// Receive buffer of an RTP socket: room for bursts while the media thread is busy elsewhere
/// (256 KiB holds about a second of one stream's packets at the kernel's per-packet overhead).
pub fn size_rtp_buffer(socket: &std::net::UdpSocket) {
    let _ = socket2::SockRef::from(socket).set_recv_buffer_size(256 * 1024);
}

/// Raises the soft limit of open files to the hard limit: each call holds four sockets and a
/// file, so the usual soft limit of 1,024 would cap the gateway at about 200 calls.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => warn!(limit = soft, error = %e, "cannot raise the open-file limit"),
        },
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// Starts one media thread per CPU core (at most [`MAX_THREADS`]).
pub fn start(events: tmpsc::UnboundedSender<MediaEvent>) -> std::io::Result<(MediaHandle, MediaThreads)> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_THREADS);
    let mut shards = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (tx, rx) = mpsc::channel();
        let events = events.clone();
        threads.push(std::thread::Builder::new().name(format!("media-{i}")).spawn(move || run(poll, rx, events))?);
        shards.push(Shard { tx, waker });
    }
    info!(threads = n, "media threads started");
    Ok((MediaHandle { shards: shards.into() }, MediaThreads(threads)))
}

fn run(mut poll: Poll, rx: mpsc::Receiver<Command>, events: tmpsc::UnboundedSender<MediaEvent>) {
    let mut mio_events = Events::with_capacity(8192);
    // Socket tokens are stream slab indexes.
    let mut streams: Slab<Stream> = Slab::new();
    let mut calls: Slab<Call> = Slab::new();
    let mut call_index: HashMap<u64, usize> = HashMap::new();
    let mut drain = Drain::default();
    let mut pcm = [0i16; MAX_SAMPLES];
    let mut next_tick = clock::now() + TICK;

    loop {
        let timeout = next_tick.saturating_duration_since(clock::now());
        if let Err(e) = poll.poll(&mut mio_events, Some(timeout))
            && e.kind() != ErrorKind::Interrupted {
                error!(error = %e, "media poll failed");
            }
        let now = clock::now();
        for ev in mio_events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            let Some(s) = streams.get_mut(ev.token().0) else { continue };
            if s.rtcp {
                drain.drain(&s.socket, |_| {}); // drained so its queue does not fill
                continue;
            }
            let Some(call) = calls.get_mut(s.call) else {
                drain.drain(&s.socket, |_| {});
                continue;
            };
            drain.drain_from(&s.socket, |datagram, from| {
                let Ok(pkt) = rtp_types::RtpPacket::parse(datagram) else { return };
                if let Some(from) = from {
                    match s.latch.admit(from, now) {
                        Verdict::Accept => {}
                        Verdict::Foreign => return, // injected, or the old leg of a failover
                        Verdict::Latched => debug!(parent: &call.span, channel = s.channel, source = %from, "RTP latched"),
                        Verdict::Relatched { from: old } => {
                            info!(parent: &call.span, channel = s.channel, source = %from, previous = %old, "RTP source silent for media.relatch_after: re-latched to a new source")
                        }
                    }
                }
                call.last_activity = now;
                if pkt.payload_type() != s.payload_type {
                    return; // telephone-event, comfort noise, …: not audio for now
                }
                let samples = g711::decode(s.law, pkt.payload(), &mut pcm);
                let meta = RtpMeta {
                    ssrc: pkt.ssrc(),
                    seq: pkt.sequence_number(),
                    timestamp: pkt.timestamp(),
                    marker: pkt.marker_bit(),
                };
                call.timeline.place(s.channel, now, meta, &pcm[..samples]);
            });
        }
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Command::Add(setup) => {
                    let setup = *setup;
                    // No file: the call is answered but not stored (Tethr's recording settings).
                    let recorded = setup.file.is_some();
                    let wav = setup.file.and_then(|file| {
                        match WavWriter::new(BufWriter::with_capacity(64 * 1024, file), setup.channels as u16, SAMPLE_RATE) {
                            Ok(w) => Some(w),
                            Err(e) => {
                                let _in_call = setup.span.enter();
                                error!(path = %setup.path.display(), error = %e, "cannot write recording header");
                                None
                            }
                        }
                    });
                    let index = calls.insert(Call {
                        key: setup.key,
                        span: setup.span,
                        timeline: Timeline::new(setup.t0, SAMPLE_RATE, setup.channels, setup.window),
                        error: (recorded && wav.is_none()).then(|| "cannot write WAV header".to_string()),
                        wav,
                        tokens: Vec::with_capacity(setup.streams.len() * 2),
                        last_activity: setup.t0,
                        rtp_timeout: setup.rtp_timeout,
                        timeout_reported: false,
                        last_checkpoint: setup.t0,
                    });
                    call_index.insert(setup.key, index);
                    for st in setup.streams {
                        for (sock, rtcp) in [(st.rtp, false), (st.rtcp, true)] {
                            let socket = UdpSocket::from_std(sock);
                            let token = streams.insert(Stream { call: index, channel: st.channel, law: st.law, payload_type: st.payload_type, socket, rtcp, latch: Latch::new(st.relatch_after) });
                            let registered = match streams.get_mut(token) {
                                Some(s) => poll.registry().register(&mut s.socket, Token(token), Interest::READABLE),
                                None => Ok(()),
                            };
                            match registered {
                                Ok(()) => {
                                    if let Some(call) = calls.get_mut(index) {
                                        call.tokens.push(token);
                                    }
                                }
                                Err(e) => {
                                    warn!(error = %e, "cannot watch an RTP socket");
                                    streams.remove(token);
                                }
                            }
                        }
                    }
                }
                Command::End { key, end, done } => {
                    let Some(mut call) = call_index.remove(&key).and_then(|i| calls.remove(i)) else {
                        let _ = done.send(CallResult { stats: vec![], frames: 0, error: Some("unknown call".into()), file: None });
                        continue;
                    };
                    let mut foreign = Vec::new();
                    for t in &call.tokens {
                        if let Some(mut s) = streams.remove(*t) {
                            let _ = poll.registry().deregister(&mut s.socket);
                            foreign.push((s.channel, s.latch.foreign()));
                        }
                    }
                    let mut result = finish(&mut call, end);
                    for (channel, n) in foreign {
                        if let Some(st) = result.stats.get_mut(channel) {
                            st.foreign += n;
                        }
                    }
                    let _ = done.send(result);
                }
                Command::Stop => {
                    info!("media thread stopped");
                    return;
                }
            }
        }
        if now >= next_tick {
            next_tick = now + TICK;
            for call in calls.iter_mut() {
                call.write_until(now);
                if now.duration_since(call.last_checkpoint) >= CHECKPOINT {
                    call.last_checkpoint = now;
                    if let Some(w) = call.wav.as_mut()
                        && let Err(e) = w.checkpoint() {
                            let _in_call = call.span.enter();
                            warn!(error = %e, "cannot update WAV header");
                        }
                }
                if !call.timeout_reported && now.duration_since(call.last_activity) >= call.rtp_timeout {
                    call.timeout_reported = true;
                    let _ = events.send(MediaEvent::RtpTimeout { key: call.key, last: call.last_activity });
                }
            }
        }
        rx::pace(now);
    }
}

/// Writes the rest of the timeline up to `end` and closes the WAV (the caller fsyncs it).
fn finish(call: &mut Call, end: Instant) -> CallResult {
    let mut error = call.error.take();
    let mut audio = None;
    let mut frames = call.timeline.frames_written();
    if let Some(mut w) = call.wav.take() {
        // The end may lie before what the tick already wrote (an RTP timeout ends the call at
        // its last packet): cut back, so the file is exactly end − t0 long.
        let end_frames = call.timeline.frames_at(end);
        let r = if end_frames < w.frames() {
            frames = end_frames;
            w.truncate_frames(end_frames)
        } else {
            let r = call.timeline.finish(end, |chunk| w.write_interleaved(chunk));
            frames = call.timeline.frames_written();
            r
        };
        let len = w.len_bytes();
        match r.and_then(|_| w.finish()) {
            Ok(buf) => match buf.into_inner() {
                Ok(file) => match file.set_len(len) {
                    Ok(()) => audio = Some(file),
                    Err(e) => error = Some(format!("truncate: {e}")),
                },
                Err(e) => error = Some(format!("flush: {}", e.error())),
            },
            Err(e) => error = Some(e.to_string()),
        }
    }
    let stats = (0..call.timeline.channels()).filter_map(|c| call.timeline.stats(c)).collect();
    CallResult { stats, frames, error, file: audio }
}
