//! The media thread: receives every call's RTP, places it on the call's timeline and writes
//! the WAV as it goes, off the async workers.
//!
//! One OS thread runs a mio poll loop over all RTP/RTCP sockets. Each wake-up reads the clock
//! once, drains every ready socket into one reused buffer, decodes G.711 into a reused scratch
//! buffer and places the samples (nothing is allocated per packet). Every tick (20 ms) each
//! call's timeline hands the frames older than the reorder window to its WAV writer, and once a
//! second the WAV header is brought up to date, so a crash leaves a playable file. Commands come
//! from the signalling task over a channel with a mio waker; events go back over a tokio channel.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, ErrorKind};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::{mpsc as tmpsc, oneshot};
use tracing::{error, info, warn};

use crate::clock;
use crate::media::g711::{self, Law};
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
}

/// Everything the media thread needs to record a call.
#[derive(Debug)]
pub struct CallSetup {
    pub key: u64,
    pub session_id: String,
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

/// Handle to the media thread.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    waker: std::sync::Arc<Waker>,
}

impl MediaHandle {
    pub fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

struct Stream {
    call: u64,
    channel: usize,
    law: Law,
    payload_type: u8,
    socket: UdpSocket,
    rtcp: bool,
}

struct Call {
    session_id: String,
    timeline: Timeline,
    wav: Option<WavWriter<BufWriter<File>>>,
    tokens: Vec<Token>,
    last_activity: Instant,
    rtp_timeout: Duration,
    timeout_reported: bool,
    last_checkpoint: Instant,
    error: Option<String>,
}

impl Call {
    fn write_until(&mut self, now: Instant) {
        let Self { timeline, wav, error, session_id, .. } = self;
        let Some(w) = wav.as_mut() else { return };
        if let Err(e) = timeline.advance(now, |chunk| w.write_interleaved(chunk)) {
            error!(session_id = %session_id, error = %e, "recording write failed; later audio of this call is lost");
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

/// Starts the media thread.
pub fn start(events: tmpsc::UnboundedSender<MediaEvent>) -> std::io::Result<(MediaHandle, std::thread::JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel();
    let handle = MediaHandle { tx, waker };
    let thread = std::thread::Builder::new().name("media".into()).spawn(move || run(poll, rx, events))?;
    Ok((handle, thread))
}

fn run(mut poll: Poll, rx: mpsc::Receiver<Command>, events: tmpsc::UnboundedSender<MediaEvent>) {
    let mut mio_events = Events::with_capacity(8192);
    let mut streams: HashMap<Token, Stream> = HashMap::new();
    let mut calls: HashMap<u64, Call> = HashMap::new();
    let mut next_token = 0usize;
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
            let Some(s) = streams.get(&ev.token()) else { continue };
            if s.rtcp {
                drain.drain(&s.socket, |_| {}); // drained so its queue does not fill
                continue;
            }
            let Some(call) = calls.get_mut(&s.call) else {
                drain.drain(&s.socket, |_| {});
                continue;
            };
            drain.drain(&s.socket, |datagram| {
                let Ok(pkt) = rtp_types::RtpPacket::parse(datagram) else { return };
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
                    let mut tokens = Vec::new();
                    for st in setup.streams {
                        for (sock, rtcp) in [(st.rtp, false), (st.rtcp, true)] {
                            let token = Token(next_token);
                            next_token = next_token.wrapping_add(1) % (usize::MAX - 1);
                            let mut socket = UdpSocket::from_std(sock);
                            if let Err(e) = poll.registry().register(&mut socket, token, Interest::READABLE) {
                                warn!(error = %e, "cannot watch an RTP socket");
                                continue;
                            }
                            tokens.push(token);
                            streams.insert(
                                token,
                                Stream { call: setup.key, channel: st.channel, law: st.law, payload_type: st.payload_type, socket, rtcp },
                            );
                        }
                    }
                    // No file: the call is answered but not stored (Tethr's recording settings).
                    let recorded = setup.file.is_some();
                    let wav = setup.file.and_then(|file| {
                        match WavWriter::new(BufWriter::with_capacity(64 * 1024, file), setup.channels as u16, SAMPLE_RATE) {
                            Ok(w) => Some(w),
                            Err(e) => {
                                error!(path = %setup.path.display(), error = %e, "cannot write recording header");
                                None
                            }
                        }
                    });
                    calls.insert(
                        setup.key,
                        Call {
                            session_id: setup.session_id,
                            timeline: Timeline::new(setup.t0, SAMPLE_RATE, setup.channels, setup.window),
                            error: (recorded && wav.is_none()).then(|| "cannot write WAV header".to_string()),
                            wav,
                            tokens,
                            last_activity: setup.t0,
                            rtp_timeout: setup.rtp_timeout,
                            timeout_reported: false,
                            last_checkpoint: setup.t0,
                        },
                    );
                }
                Command::End { key, end, done } => {
                    let Some(mut call) = calls.remove(&key) else {
                        let _ = done.send(CallResult { stats: vec![], frames: 0, error: Some("unknown call".into()), file: None });
                        continue;
                    };
                    for t in &call.tokens {
                        if let Some(mut s) = streams.remove(t) {
                            let _ = poll.registry().deregister(&mut s.socket);
                        }
                    }
                    let result = finish(&mut call, end);
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
            for (key, call) in calls.iter_mut() {
                call.write_until(now);
                if now.duration_since(call.last_checkpoint) >= CHECKPOINT {
                    call.last_checkpoint = now;
                    if let Some(w) = call.wav.as_mut()
                        && let Err(e) = w.checkpoint() {
                            warn!(session_id = %call.session_id, error = %e, "cannot update WAV header");
                        }
                }
                if !call.timeout_reported && now.duration_since(call.last_activity) >= call.rtp_timeout {
                    call.timeout_reported = true;
                    let _ = events.send(MediaEvent::RtpTimeout { key: *key, last: call.last_activity });
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
