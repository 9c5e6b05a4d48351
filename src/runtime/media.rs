//! The media threads: receive every call's RTP, place it on the call's timeline and write the
//! WAV as they go, off the async workers.
//!
//! There is one media thread per CPU core, at most [`MAX_THREADS`]; a new call goes to the first
//! thread with fewer than [`FILL`] calls, then to the least loaded ([`Placement`]). Each runs a
//! mio poll loop over its calls' RTP/RTCP sockets. Each wake-up (at most one per
//! `rx::CADENCE`) reads the clock once, drains every ready socket with `recvmmsg` into one
//! reused buffer and, per packet: latches the source, decrypts SRTP (into a reused scratch
//! buffer), classifies the payload type (audio, RFC 4733 telephone-event, comfort noise,
//! unknown), decodes the stream's codec and resamples it to the call's rate into reused
//! buffers, and places the samples (nothing is allocated or hashed per packet). The state the
//! next sockets' packets need is prefetched a few sockets ahead ([`look_ahead`]). Every tick
//! (20 ms) each call's timeline makes what is older than the reorder window final and hands it
//! to the WAV file once 32 KiB have gathered, and once a second the WAV header is brought up
//! to date, so a crash leaves a playable file. Commands come from the
//! signalling task over a channel with a mio waker; events go back over a tokio channel. The
//! finished WAV's fsync is left to the caller, off these threads.

use std::collections::HashMap;
use std::fs::File;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::{mpsc as tmpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::clock;
use crate::media::codec::dtmf::DtmfDetector;
use crate::media::codec::{self, Decoder, PayloadKind};
use crate::media::latch::{Latch, Verdict};
use crate::media::prefetch;
use crate::media::resample::Resampler;
use crate::media::srtp::{CryptoOffer, SrtpReceiver};
use crate::media::timeline::{RtpMeta, StreamStats, Timeline};
use crate::media::{DtmfDigit, StreamMedia};
use crate::session::{SrtpChange, StreamChange};
use crate::siprec::sdp::ChosenCodec;
use crate::media::wav::WavWriter;
use crate::runtime::rx::{self, Drain};

const WAKER: Token = Token(usize::MAX);
/// How often each call's timeline frontier moves (what is older than the reorder window becomes
/// final), its final audio is handed to its file once a chunk has gathered, its RTP timeout is
/// checked and, every [`CHECKPOINT`], its WAV header updated.
const TICK: Duration = Duration::from_millis(20);
const CHECKPOINT: Duration = Duration::from_secs(1);
/// Room for one packet's samples after resampling: the largest upsampling is 8 kHz to 48 kHz.
const MAX_RESAMPLED: usize = 6 * codec::MAX_DECODED_SAMPLES + 8;
/// Most DTMF digits kept per stream (a stuck sender cannot grow memory without bound).
const MAX_DIGITS: usize = 4096;
/// Room for an SRTP packet decrypted in place (what `rx` hands out is at most this long).
const SRTP_SCRATCH: usize = 2048;

/// One stream's sockets and codec.
#[derive(Debug)]
pub struct StreamSetup {
    pub channel: usize,
    pub rtp: std::net::UdpSocket,
    pub rtcp: std::net::UdpSocket,
    pub codec: ChosenCodec,
    /// The SRC's SDES key of an `RTP/SAVP` stream.
    pub srtp: Option<CryptoOffer>,
    /// Offered on hold (nothing is expected until a re-INVITE resumes it).
    pub held: bool,
    /// `media.relatch_after`: see [`Latch`].
    pub relatch_after: Duration,
}

impl StreamSetup {
    /// The setup of the stream `plan` describes, received on the `rtp`/`rtcp` pair.
    pub fn for_plan(plan: &crate::session::StreamPlan, rtp: std::net::UdpSocket, rtcp: std::net::UdpSocket, relatch_after: Duration) -> Self {
        StreamSetup {
            channel: plan.channel,
            rtp,
            rtcp,
            codec: plan.codec,
            srtp: plan.srtp.as_ref().map(|k| k.offer.clone()),
            held: plan.held,
            relatch_after,
        }
    }
}

/// Everything the media thread needs to record a call.
#[derive(Debug)]
pub struct CallSetup {
    pub key: u64,
    /// The call's span (`call_id`, `session`): the lines logged here about the call are in it.
    pub span: tracing::Span,
    pub t0: Instant,
    /// The recording's sample rate (every stream is resampled to it).
    pub rate: u32,
    /// `media.dtmf_in_metadata`.
    pub dtmf_in_metadata: bool,
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
    /// Per channel: codec, SRTP and DTMF counters.
    pub media: Vec<StreamMedia>,
    /// The recording's sample rate.
    pub rate: u32,
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
    /// A re-INVITE changed the call's streams (hold, resume, codec, keys, address).
    Update { key: u64, changes: Vec<StreamChange> },
    /// A re-INVITE added a stream, on one of the capture's spare channels.
    AddStream { key: u64, stream: Box<StreamSetup> },
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

/// Calls a media thread takes before the next one is used: below it, one thread's wake-ups
/// serve all its calls at once (each extra thread costs its own wake-ups, about 8 µs of context
/// switch each on a VM, 200 a second); above it, calls go to the least loaded thread. One
/// thread handles about 3,500 calls within a core (docs/performance.md).
pub const FILL: usize = 250;

/// Handle to the media threads: routes each command to the thread that owns its call.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    shards: std::sync::Arc<[Shard]>,
    placement: Arc<std::sync::Mutex<Placement>>,
}

/// Which media thread owns which call (sans-IO). A new call goes to the first thread with
/// fewer than `fill` calls, or, when all have that many, to the least loaded one.
#[derive(Debug)]
pub struct Placement {
    fill: usize,
    load: Vec<usize>,
    owner: HashMap<u64, usize>,
}

impl Placement {
    pub fn new(threads: usize, fill: usize) -> Self {
        Placement { fill, load: vec![0; threads.max(1)], owner: HashMap::new() }
    }

    /// The thread a new call `key` goes to.
    pub fn assign(&mut self, key: u64) -> usize {
        let by_fill = self.load.iter().position(|n| *n < self.fill);
        let least = || self.load.iter().enumerate().min_by_key(|(_, n)| **n).map_or(0, |(i, _)| i);
        let t = by_fill.unwrap_or_else(least);
        if let Some(old) = self.owner.insert(key, t) {
            self.load[old] -= 1; // a key reused before its end: counted once
        }
        self.load[t] += 1;
        t
    }

    /// The thread that owns call `key`.
    pub fn owner(&self, key: u64) -> Option<usize> {
        self.owner.get(&key).copied()
    }

    /// Call `key` ended: its thread, which no longer counts it.
    pub fn release(&mut self, key: u64) -> Option<usize> {
        let t = self.owner.remove(&key)?;
        self.load[t] -= 1;
        Some(t)
    }

    /// Calls per thread.
    pub fn load(&self) -> &[usize] {
        &self.load
    }
}

#[derive(Debug)]
struct Shard {
    tx: mpsc::Sender<Command>,
    /// Set after each command sent: the media thread checks it (one load) before each socket
    /// it drains, and looks at the channel only when it is set.
    pending: Arc<AtomicBool>,
    waker: Waker,
}

impl Shard {
    fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            self.pending.store(true, Ordering::Release);
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
        let thread = {
            let mut placement = self.placement.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match &cmd {
                Command::Add(setup) => {
                    // Keys come from a counter: a second Add for a live key would orphan it.
                    debug_assert!(placement.owner(setup.key).is_none(), "call key {} added twice", setup.key);
                    Some(placement.assign(setup.key))
                }
                Command::End { key, .. } => placement.release(*key),
                Command::Update { key, .. } | Command::AddStream { key, .. } => placement.owner(*key),
                Command::Stop => {
                    self.shards.iter().for_each(|s| s.send(Command::Stop));
                    return;
                }
            }
        };
        match thread.and_then(|t| self.shards.get(t)) {
            Some(shard) => shard.send(cmd),
            // Not added (or ended twice): the thread would not know it either. An End still
            // gets its answer.
            None => {
                if let Command::End { done, .. } = cmd {
                    let _ = done.send(CallResult { stats: vec![], media: vec![], rate: 0, frames: 0, error: Some("unknown call".into()), file: None });
                }
            }
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

    fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i)?.as_ref()
    }

    /// Cache hint for the entry at `i` (the first line of its slot), without reading it.
    fn prefetch(&self, i: usize) {
        if let Some(slot) = self.items.get(i) {
            prefetch::read(slot);
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
    socket: UdpSocket,
    /// The RTP side's state; `None` for the RTCP socket (drained, never latched or decoded).
    rx: Option<Box<Rx>>,
}

/// What an RTP socket needs to turn packets into samples.
struct Rx {
    codec: ChosenCodec,
    decoder: Decoder,
    /// From the decoder's rate to the call's; `None` when they are equal.
    resampler: Option<Resampler>,
    /// The resampler's group delay in RTP clock units, taken off each packet's timestamp.
    shift: u32,
    /// The codec before a re-INVITE changed it, kept until the new one's first packet: the
    /// SRC's last packets of the old codec may arrive after the change was applied.
    previous: Option<Box<Previous>>,
    dtmf: DtmfDetector,
    /// RTP timestamp and arrival of the telephone-event packet that began the current event.
    event_start: Option<(u32, Instant)>,
    srtp: Option<SrtpReceiver>,
    /// An SRTP stream whose receiver could not be made: its packets are dropped, not decoded.
    srtp_broken: bool,
    ssrc: Option<u32>,
    held: bool,
    /// RTP from the first source only.
    latch: Latch,
    media: StreamMedia,
}

impl Rx {
    fn new(setup: &StreamSetup, rate: u32, dtmf: bool, timeline: &mut Timeline) -> Option<Rx> {
        let decoder = match Decoder::new(setup.codec.codec) {
            Ok(d) => d,
            Err(e) => {
                // Cannot happen for an answered codec: the answer offers only what we decode.
                warn!(channel = setup.channel, error = %e, "no decoder for the stream's codec: its channel stays silent");
                return None;
            }
        };
        let mut rx = Rx {
            codec: setup.codec,
            decoder,
            resampler: None,
            shift: 0,
            previous: None,
            dtmf: DtmfDetector::new(),
            event_start: None,
            srtp: None,
            srtp_broken: false,
            ssrc: None,
            held: setup.held,
            latch: Latch::new(setup.relatch_after),
            media: StreamMedia { dtmf: dtmf.then(Vec::new), ..Default::default() },
        };
        rx.fit_rate(rate, timeline, setup.channel);
        rx.set_srtp(setup.srtp.as_ref());
        timeline.set_held(setup.channel, setup.held);
        Some(rx)
    }

    /// Resampler and timeline clock for the decoder's rates (G.722: 16 kHz audio on an 8 kHz
    /// RTP clock, RFC 3551 §4.5.2; Opus: 48 kHz, RFC 7587 §4.1).
    fn fit_rate(&mut self, rate: u32, timeline: &mut Timeline, channel: usize) {
        let from = self.decoder.output_rate();
        self.resampler = (from != rate)
            .then(|| match Resampler::new(from, rate) {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!(channel, from, to = rate, error = %e, "no resampler for this rate pair: the stream is placed unresampled");
                    None
                }
            })
            .flatten();
        let clock = self.decoder.rtp_clock_rate();
        // The delay in input samples, in RTP clock units (u64: no overflow).
        self.shift = self.resampler.as_ref().map_or(0, |r| (u64::from(r.delay()) * u64::from(clock) / u64::from(from.max(1))) as u32);
        timeline.set_clock_rate(channel, clock);
    }

    fn set_srtp(&mut self, offer: Option<&CryptoOffer>) {
        self.srtp_broken = false;
        self.srtp = offer.and_then(|o| match SrtpReceiver::new(o) {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(error = %e, "cannot set up SRTP for a stream: its packets are dropped");
                self.srtp_broken = true;
                None
            }
        });
    }

    /// A new source (SSRC change): the adaptive decoders' and the resampler's state belong to
    /// the old one, and an event in progress will not see its end.
    fn new_source(&mut self, t0: Instant, now: Instant) {
        self.decoder.reset();
        if let Some(r) = self.resampler.as_mut() {
            r.reset();
        }
        self.finish_event(t0, now);
    }

    /// Records the digit of the telephone-event in progress, if any: its end will not be seen
    /// (a new source, a codec change, the call's end).
    fn finish_event(&mut self, t0: Instant, now: Instant) {
        if let Some(d) = self.dtmf.finish() {
            self.record_digit(d, t0, now);
        }
    }

    fn record_digit(&mut self, d: codec::dtmf::Digit, t0: Instant, now: Instant) {
        let Some(digits) = self.media.dtmf.as_mut() else { return };
        if digits.len() >= MAX_DIGITS {
            return;
        }
        // The event's first packet is sent when the key goes down (RFC 4733 §2.5.1.1).
        let pressed = match self.event_start {
            Some((ts, at)) if ts == d.start => at,
            _ => now,
        };
        let clock = u64::from(self.codec.codec.rtp_clock_rate().max(1));
        digits.push(DtmfDigit {
            digit: d.symbol().unwrap_or('!'),
            at_ms: u64::try_from(pressed.saturating_duration_since(t0).as_millis()).unwrap_or(u64::MAX),
            duration_ms: u64::from(d.duration) * 1000 / clock,
        });
    }

    /// Applies a re-INVITE's change.
    fn apply(&mut self, ch: &StreamChange, rate: u32, timeline: &mut Timeline, t0: Instant, now: Instant) {
        if ch.codec != self.codec {
            if ch.codec.codec != self.codec.codec {
                match Decoder::new(ch.codec.codec) {
                    Ok(d) => {
                        let old = std::mem::replace(&mut self.decoder, d);
                        // Only on the same RTP clock: the timeline now counts in the new one.
                        self.previous = (old.rtp_clock_rate() == self.decoder.rtp_clock_rate()).then(|| {
                            Box::new(Previous { payload_type: self.codec.payload_type, decoder: old, resampler: self.resampler.take(), shift: self.shift })
                        });
                        self.media.codec_changes += 1;
                        self.finish_event(t0, now);
                        self.fit_rate(rate, timeline, ch.channel);
                    }
                    Err(e) => warn!(channel = ch.channel, error = %e, "no decoder for the new codec: the old one is kept"),
                }
            }
            self.codec = ch.codec;
        }
        match &ch.srtp {
            SrtpChange::Keep => {}
            SrtpChange::New(offer) => self.set_srtp(Some(offer)),
            SrtpChange::Off => self.set_srtp(None),
        }
        if ch.moved {
            self.latch.reset();
        }
        self.held = ch.held;
        timeline.set_held(ch.channel, ch.held);
    }

    /// Cache hints for the fields a packet reads.
    fn prefetch(&self) {
        self.latch.prefetch();
        prefetch::read(&self.srtp_broken);
        prefetch::read(&self.shift);
        prefetch::read(&self.held);
        prefetch::read(&self.srtp);
        prefetch::read(&self.ssrc);
        prefetch::read(&self.codec);
        prefetch::read(&self.previous);
        prefetch::read(&self.decoder);
        prefetch::read(&self.resampler);
    }

    /// What is reported for the stream at the end.
    fn report(&mut self, t0: Instant, end: Instant) -> StreamMedia {
        self.finish_event(t0, end);
        let mut m = std::mem::take(&mut self.media);
        m.rejected = self.decoder.rejected();
        m.srtp = self.srtp.as_ref().map(|r| (self.srtp_suite(), r.stats()));
        m
    }

    fn srtp_suite(&self) -> &'static str {
        self.srtp.as_ref().map_or("", |r| r.suite().name())
    }
}

/// The decoding state of the codec a re-INVITE replaced.
struct Previous {
    payload_type: u8,
    decoder: Decoder,
    resampler: Option<Resampler>,
    shift: u32,
}

/// Reused per-thread buffers of the packet path.
struct Scratch {
    pcm: Vec<i16>,
    resampled: Vec<i16>,
    srtp: Vec<u8>,
}

struct Call {
    key: u64,
    span: tracing::Span,
    t0: Instant,
    rate: u32,
    dtmf_in_metadata: bool,
    timeline: Timeline,
    /// Channel → the token of its RTP socket.
    by_channel: Vec<Option<usize>>,
    /// Written unbuffered: the timeline hands out 32 KiB of the call at a time.
    wav: Option<WavWriter<File>>,
    tokens: Vec<usize>,
    last_activity: Instant,
    /// Every stream is on hold: the RTP timeout is suspended (see [`Call::refresh_held`]).
    all_held: bool,
    rtp_timeout: Duration,
    timeout_reported: bool,
    last_checkpoint: Instant,
    error: Option<String>,
}

impl Call {
    /// Works out again whether every stream of the call is on hold (an RTP-less call counts as
    /// held only if it has a stream), after its streams changed.
    fn refresh_held(&mut self, streams: &Slab<Stream>) {
        let mut any = false;
        for t in self.by_channel.iter().flatten() {
            match streams.get(*t).and_then(|s| s.rx.as_ref()) {
                Some(rx) if rx.held => any = true,
                Some(_) => {
                    self.all_held = false;
                    return;
                }
                None => {}
            }
        }
        self.all_held = any;
    }

    /// Cache hints for the fields a packet reads.
    fn prefetch(&self) {
        prefetch::read(&self.t0);
        prefetch::read(&self.last_activity);
        self.timeline.prefetch_header();
    }

    fn write_until(&mut self, now: Instant) {
        let Self { timeline, wav, error, span, .. } = self;
        let Some(w) = wav.as_mut() else {
            // Nothing is stored (recording settings said so, or the file failed): the timeline
            // still moves on, so that its packets are not all counted late in the metrics.
            let _ = timeline.advance(now, |_| Ok::<(), std::convert::Infallible>(()));
            return;
        };
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
        let pending = Arc::new(AtomicBool::new(false));
        let commands = Commands { rx, pending: pending.clone() };
        threads.push(std::thread::Builder::new().name(format!("media-{i}")).spawn(move || run(poll, commands, events))?);
        shards.push(Shard { tx, pending, waker });
    }
    info!(threads = n, calls_per_thread_before_the_next = FILL, "media threads started");
    let placement = Arc::new(std::sync::Mutex::new(Placement::new(n, FILL)));
    Ok((MediaHandle { shards: shards.into(), placement }, MediaThreads(threads)))
}

/// A media thread's end of its command channel.
struct Commands {
    rx: mpsc::Receiver<Command>,
    pending: Arc<AtomicBool>,
}

impl Commands {
    /// The commands sent since the last call (none, without touching the channel, if none was).
    fn take(&self, mut each: impl FnMut(Command)) {
        // Cleared before the channel is read: a command sent meanwhile sets it again.
        if self.pending.load(Ordering::Relaxed) && self.pending.swap(false, Ordering::Acquire) {
            while let Ok(cmd) = self.rx.try_recv() {
                each(cmd);
            }
        }
    }
}

fn run(mut poll: Poll, commands: Commands, events: tmpsc::UnboundedSender<MediaEvent>) {
    let mut mio_events = Events::with_capacity(8192);
    // The tokens of one poll's ready sockets, in order (for `look_ahead`).
    let mut ready: Vec<usize> = Vec::with_capacity(8192);
    // Socket tokens are stream slab indexes.
    let mut streams: Slab<Stream> = Slab::new();
    let mut calls: Slab<Call> = Slab::new();
    let mut call_index: HashMap<u64, usize> = HashMap::new();
    let mut drain = Drain::default();
    let mut scratch = Scratch {
        pcm: vec![0; codec::MAX_DECODED_SAMPLES],
        resampled: vec![0; MAX_RESAMPLED],
        srtp: vec![0; SRTP_SCRATCH],
    };
    let mut next_tick = clock::now() + TICK;
    // Commands held back until this wake-up's packets are in (see below).
    let mut later: Vec<Command> = Vec::new();

    loop {
        // Without calls nothing is due until a command wakes the thread.
        let timeout = (!call_index.is_empty()).then(|| next_tick.saturating_duration_since(clock::now()));
        if let Err(e) = poll.poll(&mut mio_events, timeout)
            && e.kind() != ErrorKind::Interrupted {
                error!(error = %e, "media poll failed");
            }
        let now = clock::now();
        // A re-INVITE's update applies before the packets of the same wake-up: the SRC sends
        // its new media after our 200, which goes out after the update was queued (a resume's
        // first packet must re-anchor). Adds and ends wait for the packets: the last packets
        // before a BYE are still recorded.
        // Checked again before each socket is drained: the window in which an update could be
        // missed is then microseconds, not a whole wake-up.
        let mut take_updates = |calls: &mut Slab<Call>, streams: &mut Slab<Stream>| {
            commands.take(|cmd| match cmd {
                Command::Update { key, changes } => apply_update(calls, &call_index, streams, key, &changes, now),
                c => later.push(c),
            });
        };
        take_updates(&mut calls, &mut streams);
        ready.clear();
        ready.extend(mio_events.iter().map(|ev| ev.token().0).filter(|t| *t != WAKER.0));
        for i in 0..ready.len() {
            look_ahead(&streams, &calls, &ready, i);
            take_updates(&mut calls, &mut streams);
            let Some(s) = streams.get_mut(ready[i]) else { continue };
            let (Some(rx), Some(call)) = (s.rx.as_mut(), calls.get_mut(s.call)) else {
                // RTCP (RFC 3550 §6) is drained so its queue does not fill and no ICMP
                // port-unreachable goes back; its reports are not used for alignment.
                drain.drain(&s.socket, |_| {});
                continue;
            };
            let channel = s.channel;
            drain.drain_from(&s.socket, |datagram, from| {
                on_packet(call, rx, channel, &mut scratch, now, datagram, from);
            });
        }
        for cmd in later.drain(..) {
            match cmd {
                Command::Add(setup) => {
                    let setup = *setup;
                    // No file: the call is answered but not stored (Tethr's recording settings).
                    let recorded = setup.file.is_some();
                    let wav = setup.file.and_then(|file| {
                        match WavWriter::new(file, setup.channels as u16, setup.rate) {
                            Ok(w) => Some(w),
                            Err(e) => {
                                let _in_call = setup.span.enter();
                                error!(path = %setup.path.display(), error = %e, "cannot write recording header");
                                None
                            }
                        }
                    });
                    let mut timeline = Timeline::new(setup.t0, setup.rate, setup.channels, setup.window);
                    let rxs: Vec<Option<Box<Rx>>> = {
                        let _in_call = setup.span.enter();
                        setup.streams.iter().map(|st| Rx::new(st, setup.rate, setup.dtmf_in_metadata, &mut timeline).map(Box::new)).collect()
                    };
                    let index = calls.insert(Call {
                        key: setup.key,
                        span: setup.span,
                        t0: setup.t0,
                        rate: setup.rate,
                        dtmf_in_metadata: setup.dtmf_in_metadata,
                        timeline,
                        by_channel: vec![None; setup.channels],
                        error: (recorded && wav.is_none()).then(|| "cannot write WAV header".to_string()),
                        wav,
                        tokens: Vec::with_capacity(setup.streams.len() * 2),
                        last_activity: setup.t0,
                        all_held: false,
                        rtp_timeout: setup.rtp_timeout,
                        timeout_reported: false,
                        last_checkpoint: setup.t0,
                    });
                    call_index.insert(setup.key, index);
                    for (st, rx) in setup.streams.into_iter().zip(rxs) {
                        watch(&poll, &mut streams, &mut calls, index, st, rx);
                    }
                }
                Command::AddStream { key, stream } => {
                    let Some(&index) = call_index.get(&key) else { continue };
                    let Some(call) = calls.get_mut(index) else { continue };
                    let rx = {
                        let _in_call = call.span.enter();
                        Rx::new(&stream, call.rate, call.dtmf_in_metadata, &mut call.timeline).map(Box::new)
                    };
                    watch(&poll, &mut streams, &mut calls, index, *stream, rx);
                }
                Command::Update { key, changes } => apply_update(&mut calls, &call_index, &mut streams, key, &changes, now),
                Command::End { key, end, done } => {
                    let Some(mut call) = call_index.remove(&key).and_then(|i| calls.remove(i)) else {
                        let _ = done.send(CallResult { stats: vec![], media: vec![], rate: 0, frames: 0, error: Some("unknown call".into()), file: None });
                        continue;
                    };
                    let mut media = vec![StreamMedia::default(); call.timeline.channels()];
                    let mut foreign = vec![0; call.timeline.channels()];
                    for t in &call.tokens {
                        if let Some(mut s) = streams.remove(*t) {
                            let _ = poll.registry().deregister(&mut s.socket);
                            if let Some(rx) = s.rx.as_mut() {
                                if let Some(f) = foreign.get_mut(s.channel) {
                                    *f += rx.latch.foreign();
                                }
                                if let Some(m) = media.get_mut(s.channel) {
                                    *m = rx.report(call.t0, end);
                                }
                            }
                        }
                    }
                    let mut result = finish(&mut call, end);
                    for (channel, n) in foreign.into_iter().enumerate() {
                        if let Some(st) = result.stats.get_mut(channel) {
                            st.foreign += n;
                        }
                    }
                    result.media = media;
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
                // The RTP timeout is suspended while every stream is on hold: nothing is expected.
                if call.all_held {
                    call.last_activity = now;
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
            Ok(file) => match file.set_len(len) {
                Ok(()) => audio = Some(file),
                Err(e) => error = Some(format!("truncate: {e}")),
            },
            Err(e) => error = Some(e.to_string()),
        }
    }
    let stats = (0..call.timeline.channels()).filter_map(|c| call.timeline.stats(c)).collect();
    CallResult { stats, media: Vec::new(), rate: call.rate, frames, error, file: audio }
}

/// Registers a stream's RTP and RTCP sockets with the poll, under the call at `index`.
fn watch(poll: &Poll, streams: &mut Slab<Stream>, calls: &mut Slab<Call>, index: usize, st: StreamSetup, rx: Option<Box<Rx>>) {
    let channel = st.channel;
    for (sock, rx) in [(st.rtp, rx), (st.rtcp, None)] {
        let is_rtp = rx.is_some();
        let socket = UdpSocket::from_std(sock);
        let token = streams.insert(Stream { call: index, channel, socket, rx });
        let registered = match streams.get_mut(token) {
            Some(s) => poll.registry().register(&mut s.socket, Token(token), Interest::READABLE),
            None => Ok(()),
        };
        match registered {
            Ok(()) => {
                if let Some(call) = calls.get_mut(index) {
                    call.tokens.push(token);
                    if is_rtp && let Some(slot) = call.by_channel.get_mut(channel) {
                        *slot = Some(token);
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot watch an RTP socket");
                streams.remove(token);
            }
        }
    }
    if let Some(call) = calls.get_mut(index) {
        call.refresh_held(streams);
    }
}

/// Asks the cache for the state the next sockets' packets will need, in stages, each reading
/// only what the stage before asked for one socket earlier (a system call, about 2 µs, ago):
/// five sockets ahead the stream's slot; four ahead its decoding state and its call's slot;
/// three ahead the call's fields; two ahead the channel's state; one ahead the ring slots its
/// next packet will fill. See `media::prefetch`.
fn look_ahead(streams: &Slab<Stream>, calls: &Slab<Call>, ready: &[usize], i: usize) {
    let stream = |k: usize| ready.get(i + k).and_then(|&t| streams.get(t)).filter(|s| s.rx.is_some());
    if let Some(&t) = ready.get(i + 5) {
        streams.prefetch(t);
    }
    if let Some(s) = stream(4) {
        if let Some(rx) = &s.rx {
            rx.prefetch();
        }
        calls.prefetch(s.call);
    }
    if let Some(call) = stream(3).and_then(|s| calls.get(s.call)) {
        call.prefetch();
    }
    if let Some(s) = stream(2)
        && let Some(call) = calls.get(s.call)
    {
        call.timeline.prefetch_channel(s.channel);
    }
    if let Some(s) = stream(1)
        && let Some(call) = calls.get(s.call)
    {
        call.timeline.prefetch_place(s.channel, call.rate as usize / 50);
    }
}

/// Decodes one audio packet, resamples it to the call's rate and places it.
#[allow(clippy::too_many_arguments)] // the packet path's state, borrowed apart
fn decode_and_place(
    decoder: &mut Decoder,
    resampler: Option<&mut Resampler>,
    shift: u32,
    pkt: &rtp_types::RtpPacket<'_>,
    pcm: &mut [i16],
    resampled: &mut [i16],
    timeline: &mut Timeline,
    channel: usize,
    now: Instant,
) {
    let n = decoder.decode(pkt.payload(), pcm);
    let (samples, timestamp) = match resampler {
        Some(r) => {
            let m = r.process(&pcm[..n], resampled);
            // The resampler's output lags its input by its group delay.
            (&resampled[..m], pkt.timestamp().wrapping_sub(shift))
        }
        None => (&pcm[..n], pkt.timestamp()),
    };
    let meta = RtpMeta { ssrc: pkt.ssrc(), seq: pkt.sequence_number(), timestamp, marker: pkt.marker_bit() };
    timeline.place(channel, now, meta, samples);
}

/// Applies a re-INVITE's changes to a call's streams.
fn apply_update(calls: &mut Slab<Call>, call_index: &HashMap<u64, usize>, streams: &mut Slab<Stream>, key: u64, changes: &[StreamChange], now: Instant) {
    let Some(call) = call_index.get(&key).and_then(|&i| calls.get_mut(i)) else { return };
    {
        let _in_call = call.span.enter();
        for ch in changes {
            let Some(token) = call.by_channel.get(ch.channel).copied().flatten() else { continue };
            if let Some(rx) = streams.get_mut(token).and_then(|s| s.rx.as_mut()) {
                rx.apply(ch, call.rate, &mut call.timeline, call.t0, now);
            }
        }
    }
    call.refresh_held(streams);
}

/// One datagram of an RTP socket, in the order the notes give: latch the source,
/// decrypt (a failure drops the packet and is counted), parse, and only then count it as
/// activity and place it.
fn on_packet(call: &mut Call, rx: &mut Rx, channel: usize, scratch: &mut Scratch, now: Instant, datagram: &[u8], from: Option<std::net::SocketAddr>) {
    // RFC 3550 §5.1: version 2 and a full fixed header, or it is not RTP at all (and must not
    // latch the stream).
    if datagram.len() < 12 || datagram[0] >> 6 != 2 {
        return;
    }
    if let Some(from) = from {
        match rx.latch.admit(from, now) {
            Verdict::Accept => {}
            Verdict::Foreign => return, // injected, or the old leg of a failover
            Verdict::Latched => debug!(parent: &call.span, channel, source = %from, "RTP latched"),
            Verdict::Relatched { from: old } => {
                info!(parent: &call.span, channel, source = %from, previous = %old, "RTP source silent for media.relatch_after: re-latched to a new source")
            }
        }
    }
    if rx.srtp_broken {
        return;
    }
    let Scratch { pcm, resampled, srtp: srtp_buf } = scratch;
    let data: &[u8] = match rx.srtp.as_mut() {
        Some(srtp) => {
            let Some(buf) = srtp_buf.get_mut(..datagram.len()) else { return };
            buf.copy_from_slice(datagram);
            match srtp.decrypt_rtp(buf) {
                Ok(n) => &buf[..n.min(buf.len())],
                Err(_) => return, // counted by the receiver (auth failure, replay, malformed)
            }
        }
        None => datagram,
    };
    let Ok(pkt) = rtp_types::RtpPacket::parse(data) else { return };
    call.last_activity = now;
    if rx.ssrc != Some(pkt.ssrc()) {
        if rx.ssrc.is_some() {
            rx.new_source(call.t0, now);
        }
        rx.ssrc = Some(pkt.ssrc());
    }
    let kind = codec::classify(&rx.codec, pkt.payload_type());
    if matches!(kind, PayloadKind::TelephoneEvent | PayloadKind::ComfortNoise) {
        // They share the stream's sequence numbers (RFC 4733 §2.1, RFC 3389 §4): taken into
        // the numbering so that they are not counted lost.
        let meta = RtpMeta { ssrc: pkt.ssrc(), seq: pkt.sequence_number(), timestamp: pkt.timestamp(), marker: pkt.marker_bit() };
        call.timeline.account(channel, now, meta);
    }
    match kind {
        PayloadKind::Audio => {
            rx.previous = None; // the new codec has begun
            decode_and_place(&mut rx.decoder, rx.resampler.as_mut(), rx.shift, &pkt, pcm, resampled, &mut call.timeline, channel, now);
        }
        PayloadKind::Unknown if rx.previous.as_ref().is_some_and(|p| p.payload_type == pkt.payload_type()) => {
            if let Some(p) = rx.previous.as_mut() {
                decode_and_place(&mut p.decoder, p.resampler.as_mut(), p.shift, &pkt, pcm, resampled, &mut call.timeline, channel, now);
            }
        }
        PayloadKind::TelephoneEvent => {
            // RFC 4733: never audio; the span it covers stays silent.
            rx.media.telephone_events += 1;
            if rx.media.dtmf.is_some() {
                let ts = pkt.timestamp();
                if rx.event_start.is_none_or(|(start, _)| start != ts) {
                    rx.event_start = Some((ts, now));
                }
                let (t0, mut done) = (call.t0, None);
                let r = rx.dtmf.push(ts, pkt.payload(), |d| {
                    // At most two per packet (dtmf::DtmfDetector::push).
                    done = match done {
                        None => Some((d, None)),
                        Some((first, _)) => Some((first, Some(d))),
                    };
                });
                if r.is_ok()
                    && let Some((a, b)) = done
                {
                    rx.record_digit(a, t0, now);
                    if let Some(b) = b {
                        rx.record_digit(b, t0, now);
                    }
                }
            }
        }
        // RFC 3389 comfort noise and DTX: silence, which the timeline writes where nothing is.
        PayloadKind::ComfortNoise => rx.media.comfort_noise += 1,
        PayloadKind::Unknown => rx.media.unknown_payloads += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::Placement;

    #[test]
    fn calls_fill_the_first_thread_then_go_to_the_least_loaded() {
        let mut p = Placement::new(3, 2);
        let threads: Vec<usize> = (1..=8).map(|k| p.assign(k)).collect();
        assert_eq!(threads, [0, 0, 1, 1, 2, 2, 0, 1]);
        assert_eq!(p.load(), [3, 3, 2]);
        assert_eq!(p.owner(3), Some(1));
        assert_eq!(p.release(3), Some(1));
        assert_eq!(p.release(3), None, "an end for an ended call is not counted twice");
        assert_eq!(p.owner(3), None);
        assert_eq!(p.load(), [3, 2, 2]);
        // Below the fill again: the first such thread takes the next call.
        assert_eq!(p.release(1), Some(0));
        assert_eq!(p.release(2), Some(0));
        assert_eq!(p.assign(9), 0);
        assert_eq!(p.load(), [2, 2, 2]);
    }
}
