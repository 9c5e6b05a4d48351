//! Synthesises the SIPREC captures in `pcaps/` (see `pcaps/README.md`).
//!
//! Each capture is one recording session as a capture taken between an SRC and an SRS would show it:
//! SRC→SRS INVITE with a multipart body (SDP offer + RFC 7865 metadata), SRS→SRC 100 Trying and a
//! recvonly 200 OK answer, ACK, one RTP stream per m-line (a steady tone each, so a test can tell
//! the channels apart), a few RTCP sender reports, BYE and its 200 OK. The `media-*` captures add
//! one misbehaviour each ([`Quirk`]: loss, reordering, wrap-around, SSRC change, DTMF, clock drift,
//! a late or absent stream), re-INVITEs (hold, codec change), G.722, Opus (with the `opus`
//! feature, encoded by libopus) and SRTP (encrypted by the `libsrtp` crate, not the gateway's code).
//!
//! The output is deterministic: no randomness and no clock, so rerunning the generator reproduces
//! the committed files byte for byte. It is not a general packet crafting tool: it writes exactly
//! the captures the README describes.
//!
//! Run: `cargo run --example make_pcaps -- pcaps`

use std::borrow::Cow;
use std::error::Error;
use std::f64::consts::PI;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use etherparse::{IpFragOffset, Ipv4Header, PacketBuilder};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Capture start: 2025-11-28 10:00:00 UTC.
const EPOCH_S: u64 = 1_764_324_000;
const PACKET_INTERVAL: f64 = 0.020;
/// Ethernet MTU used when the INVITE is fragmented.
const MTU: usize = 1500;

#[derive(Clone, Copy, PartialEq)]
enum Link {
    Ethernet,
    LinuxSll,
}

#[derive(Clone, Copy, PartialEq)]
enum SipTransport {
    Udp,
    Tcp,
}

#[derive(Clone, Copy, PartialEq)]
enum Codec {
    Pcmu,
    Pcma,
    /// G.722 at 64 kbit/s: 16 kHz audio on an 8000 Hz RTP clock (RFC 3551 §4.5.2).
    G722,
    /// Opus, mono content in the RFC 7587 `opus/48000/2` format (only built with the `opus` feature).
    #[cfg_attr(not(feature = "opus"), allow(dead_code))]
    Opus,
}

impl Codec {
    fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::G722 => 9,
            Codec::Opus => 111,
        }
    }
    /// The `a=rtpmap` encoding name and clock.
    fn rtpmap(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU/8000",
            Codec::Pcma => "PCMA/8000",
            Codec::G722 => "G722/8000",
            Codec::Opus => "opus/48000/2",
        }
    }
    /// The audio's sample rate (not the RTP clock: G.722's is 8000).
    fn sample_rate(self) -> usize {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::G722 => 16000,
            Codec::Opus => 48000,
        }
    }
    /// RTP clock ticks per 20 ms packet.
    fn ticks_per_packet(self) -> u32 {
        match self {
            Codec::Opus => 960,
            _ => 160,
        }
    }
    /// The RTP clock of telephone-event next to this codec (RFC 4733 §2.1: the audio's clock).
    fn event_clock(self) -> u32 {
        match self {
            Codec::Opus => 48000,
            _ => 8000,
        }
    }
}

/// A stream's encoder; G.722 and Opus keep state from packet to packet.
enum Encoder {
    G711(Codec),
    G722(Box<ezk_g722::libg722::encoder::Encoder>),
    #[cfg(feature = "opus")]
    Opus(opus::Encoder),
}

impl Encoder {
    fn new(codec: Codec) -> Result<Encoder> {
        Ok(match codec {
            Codec::Pcmu | Codec::Pcma => Encoder::G711(codec),
            Codec::G722 => Encoder::G722(Box::new(ezk_g722::libg722::encoder::Encoder::new(
                ezk_g722::libg722::Bitrate::Mode1_64000,
                false,
                false,
            ))),
            #[cfg(feature = "opus")]
            Codec::Opus => {
                let mut e = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Audio)?;
                // 32 kbit/s keeps the capture small and a steady tone clean.
                e.set_bitrate(opus::Bitrate::Bits(32000))?;
                Encoder::Opus(e)
            }
            #[cfg(not(feature = "opus"))]
            Codec::Opus => return Err("Opus captures need --features opus".into()),
        })
    }

    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>> {
        Ok(match self {
            Encoder::G711(Codec::Pcma) => pcm.iter().map(|&s| linear_to_alaw(s)).collect(),
            Encoder::G711(_) => pcm.iter().map(|&s| linear_to_ulaw(s)).collect(),
            Encoder::G722(e) => e.encode(pcm),
            #[cfg(feature = "opus")]
            Encoder::Opus(e) => e.encode_vec(pcm, 1500)?,
        })
    }
}

/// How a stream misbehaves, as a real SRC or the network between would make it.
#[derive(Clone, Copy)]
enum Quirk {
    None,
    /// These packet slots never arrive (their sequence numbers are skipped).
    Loss(&'static [(usize, usize)]),
    /// Packets delayed by (slot, seconds) arrive out of order; packets of these slots arrive twice.
    Reorder {
        delayed: &'static [(usize, f64)],
        duplicated: &'static [usize],
    },
    /// The first sequence number and RTP timestamp, close below the wrap.
    Wrap { seq: u16, ts: u32 },
    /// From `at` seconds into the stream, another SSRC with its own sequence and timestamp bases
    /// (an SBC failover): the marker bit is set on its first packet.
    SsrcChange { at: f64, ssrc: u32, seq: u16, ts: u32 },
    /// From `at` seconds into the stream, this codec (after the re-INVITE that offers it).
    CodecChange { at: f64, codec: Codec },
    /// No packet at all: offered active, silent in fact.
    NoMedia,
    /// RFC 4733 telephone-event packets for `digit` replace the audio from `at` for `len` seconds.
    Dtmf { at: f64, len: f64, digit: u8 },
    /// The sender's clock runs `skew` fast (0.003: 0.3 %); the audio is silent from `quiet.0` to
    /// `quiet.1` seconds of real time after the stream's start (a mark to measure alignment by).
    Clock { skew: f64, quiet: (f64, f64) },
}

/// One stream of the recording: who sends it and what it sounds like.
struct Stream {
    tone_hz: f64,
    /// Seconds after the stream's first packet slot during which no packets are sent.
    pause: Option<(f64, f64)>,
    participant: (&'static str, &'static str),
    quirk: Quirk,
}

/// An in-dialog re-INVITE from the SRC (RFC 3261 §14), `at` seconds after the first RTP slot,
/// offering every stream `direction` with `codec`.
struct Reinvite {
    at: f64,
    direction: &'static str,
    codec: Codec,
}

struct CallSpec {
    file: &'static str,
    /// Makes the Call-ID (`4f1c2a9e-<tag>@<src>`) distinct per capture.
    tag: &'static str,
    link: Link,
    transport: SipTransport,
    pcapng: bool,
    codec: Codec,
    fragment_invite: bool,
    split_invite: bool,
    src_ip: [u8; 4],
    srs_ip: [u8; 4],
    src_sip_port: u16,
    src_rtp_base: u16,
    srs_rtp_base: u16,
    /// Call length in 20 ms packet slots; a paused stream skips some of them.
    slots: usize,
    streams: Vec<Stream>,
    /// RTP/SAVP with an SDES key per m-line (RFC 4568, AES_CM_128_HMAC_SHA1_80).
    srtp: bool,
    reinvites: Vec<Reinvite>,
}

const ALICE: (&str, &str) = ("sip:+15551230001@src.example.com", "Alice Caller");
const BOB: (&str, &str) = ("sip:+15559870002@pstn.example.net", "Bob Agent");
const CAROL: (&str, &str) = ("sip:+15554560003@pstn.example.net", "Carol Supervisor");

fn stream(tone_hz: f64, pause: Option<(f64, f64)>, participant: (&'static str, &'static str)) -> Stream {
    Stream {
        tone_hz,
        pause,
        participant,
        quirk: Quirk::None,
    }
}

fn specs() -> Vec<CallSpec> {
    let two = || vec![stream(440.0, None, ALICE), stream(1000.0, Some((3.0, 2.0)), BOB)];
    let mut specs = vec![
        CallSpec {
            file: "siprec-2stream-udp.pcap",
            tag: "2",
            link: Link::Ethernet,
            transport: SipTransport::Udp,
            pcapng: false,
            codec: Codec::Pcmu,
            fragment_invite: false,
            split_invite: false,
            src_ip: [10, 0, 0, 10],
            srs_ip: [10, 0, 0, 20],
            src_sip_port: 5060,
            src_rtp_base: 20000,
            srs_rtp_base: 30000,
            slots: 350,
            streams: two(),
            srtp: false,
            reinvites: vec![],
        },
        CallSpec {
            file: "siprec-2stream-tcp.pcapng",
            tag: "2",
            link: Link::Ethernet,
            transport: SipTransport::Tcp,
            pcapng: true,
            codec: Codec::Pcmu,
            fragment_invite: false,
            split_invite: true,
            src_ip: [10, 0, 0, 10],
            srs_ip: [10, 0, 0, 20],
            src_sip_port: 41234,
            src_rtp_base: 20010,
            srs_rtp_base: 30010,
            slots: 350,
            streams: two(),
            srtp: false,
            reinvites: vec![],
        },
        CallSpec {
            file: "siprec-3stream-sll-frag.pcap",
            tag: "3",
            link: Link::LinuxSll,
            transport: SipTransport::Udp,
            pcapng: false,
            codec: Codec::Pcma,
            fragment_invite: true,
            split_invite: false,
            src_ip: [172, 16, 5, 10],
            srs_ip: [172, 16, 5, 20],
            src_sip_port: 5060,
            src_rtp_base: 16384,
            srs_rtp_base: 40000,
            slots: 300,
            streams: vec![
                stream(440.0, None, ALICE),
                stream(1000.0, Some((3.0, 2.0)), BOB),
                stream(1500.0, None, CAROL),
            ],
            srtp: false,
            reinvites: vec![],
        },
    ];
    specs.extend(media_specs());
    specs
}

/// The media cases (`pcaps/media-*.pcap`): two streams over UDP on Ethernet, stream 1 (440 Hz)
/// misbehaving unless said otherwise and stream 2 (1000 Hz) a steady reference.
fn media_specs() -> Vec<CallSpec> {
    let call = |file: &'static str, tag: &'static str, seconds: f64, q1: Quirk, q2: Quirk| CallSpec {
        file,
        tag,
        link: Link::Ethernet,
        transport: SipTransport::Udp,
        pcapng: false,
        codec: Codec::Pcmu,
        fragment_invite: false,
        split_invite: false,
        src_ip: [192, 168, 7, 10],
        srs_ip: [192, 168, 7, 20],
        src_sip_port: 5060,
        src_rtp_base: 24000,
        srs_rtp_base: 34000,
        slots: (seconds / PACKET_INTERVAL).round() as usize,
        streams: vec![
            Stream {
                quirk: q1,
                ..stream(440.0, None, ALICE)
            },
            Stream {
                quirk: q2,
                ..stream(1000.0, None, BOB)
            },
        ],
        srtp: false,
        reinvites: vec![],
    };
    let none = Quirk::None;
    let mut specs = vec![
        // 8 packets in a burst from 1.0 s, then single packets at 2.0 s and 2.5 s.
        call(
            "media-loss.pcap",
            "loss",
            3.0,
            Quirk::Loss(&[(50, 58), (100, 101), (125, 126)]),
            none,
        ),
        // Packets 30 ms late (after their successor, inside the 60 ms window), one 250 ms late
        // (past it: dropped as late), and two received twice.
        call(
            "media-reorder.pcap",
            "reorder",
            3.0,
            Quirk::Reorder {
                delayed: &[(20, 0.030), (40, 0.030), (41, 0.030), (60, 0.045), (100, 0.250)],
                duplicated: &[70, 120],
            },
            none,
        ),
        // Sequence numbers wrap after 0.6 s, timestamps after 1.0 s (stream 1); stream 2 wraps
        // its sequence numbers after 1.5 s.
        call(
            "media-wrap.pcap",
            "wrap",
            3.0,
            Quirk::Wrap {
                seq: 65506,
                ts: u32::MAX - 50 * 160 + 1,
            },
            Quirk::Wrap { seq: 65461, ts: 1_000_000 },
        ),
        call(
            "media-ssrc-change.pcap",
            "ssrc",
            3.0,
            Quirk::SsrcChange {
                at: 1.5,
                ssrc: 0x0bad_cafe,
                seq: 31000,
                ts: 2_000_000_000,
            },
            none,
        ),
        // Stream 2 sends its first packet 1.5 s after stream 1's.
        CallSpec {
            streams: vec![stream(440.0, None, ALICE), stream(1000.0, Some((0.0, 1.5)), BOB)],
            ..call("media-late-stream.pcap", "late", 3.0, none, none)
        },
        call("media-no-media.pcap", "nomedia", 3.0, none, Quirk::NoMedia),
        // Digit 5 for 0.5 s from 1.2 s into stream 1's tone.
        call(
            "media-dtmf.pcap",
            "dtmf",
            3.0,
            Quirk::Dtmf {
                at: 1.2,
                len: 0.5,
                digit: 5,
            },
            none,
        ),
        // Stream 1's clock 0.3 % fast for 60 s; both streams quiet from 50 to 51 s.
        call(
            "media-clock-drift.pcap",
            "drift",
            60.0,
            Quirk::Clock {
                skew: 0.003,
                quiet: (50.0, 51.0),
            },
            Quirk::Clock {
                skew: 0.0,
                quiet: (50.0, 51.0),
            },
        ),
        CallSpec {
            codec: Codec::G722,
            ..call("media-g722.pcap", "g722", 3.0, none, none)
        },
        CallSpec {
            srtp: true,
            ..call("media-srtp.pcap", "srtp", 3.0, none, none)
        },
        // Hold: a=inactive just before the RTP stops at 1.5 s, a=sendonly just before it
        // comes back at 3.5 s.
        CallSpec {
            streams: vec![
                stream(440.0, Some((1.5, 2.0)), ALICE),
                stream(1000.0, Some((1.5, 2.0)), BOB),
            ],
            reinvites: vec![
                Reinvite {
                    at: 1.45,
                    direction: "inactive",
                    codec: Codec::Pcmu,
                },
                Reinvite {
                    at: 3.44,
                    direction: "sendonly",
                    codec: Codec::Pcmu,
                },
            ],
            ..call("media-hold-resume.pcap", "hold", 5.0, none, none)
        },
        // PCMU, then PCMA on both streams from 1.5 s, offered by a re-INVITE 50 ms earlier.
        CallSpec {
            reinvites: vec![Reinvite {
                at: 1.45,
                direction: "sendonly",
                codec: Codec::Pcma,
            }],
            ..call(
                "media-codec-change.pcap",
                "codec",
                3.0,
                Quirk::CodecChange {
                    at: 1.5,
                    codec: Codec::Pcma,
                },
                Quirk::CodecChange {
                    at: 1.5,
                    codec: Codec::Pcma,
                },
            )
        },
    ];
    if cfg!(feature = "opus") {
        specs.push(CallSpec {
            codec: Codec::Opus,
            ..call("media-opus.pcap", "opus", 3.0, none, none)
        });
    }
    specs
}

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: make_pcaps <outdir>")?;
    std::fs::create_dir_all(&out)?;
    for spec in specs() {
        let frames = synthesize(&spec)?;
        let path = Path::new(&out).join(spec.file);
        write_capture(&path, &spec, &frames)?;
        println!("{} ({} frames)", path.display(), frames.len());
    }
    Ok(())
}

/// One captured frame: time since the capture start and the link-layer bytes.
struct Frame {
    t: f64,
    data: Vec<u8>,
}

fn ip_str(ip: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
}

/// Builds every frame of the call, in time order.
fn synthesize(spec: &CallSpec) -> Result<Vec<Frame>> {
    let mut ip_id: u16 = 0x3a00;
    let mut frames = Vec::new();
    let mut tcp = TcpFlows {
        src_seq: 0x1000_0000,
        srs_seq: 0x7000_0000,
    };
    let (src, srs) = (spec.src_ip, spec.srs_ip);
    let (src_port, srs_port) = (spec.src_sip_port, 5060u16);

    if spec.transport == SipTransport::Tcp {
        for (t, from_src, pkt) in tcp.handshake(src, srs, src_port, srs_port)? {
            frames.push(Frame {
                t,
                data: link(spec.link, from_src, &pkt),
            });
        }
    }

    let mut sip = |frames: &mut Vec<Frame>,
                   t: f64,
                   from_src: bool,
                   msg: &str,
                   ip_id: &mut u16|
     -> Result<()> {
        let (a, b, pa, pb) = if from_src {
            (src, srs, src_port, srs_port)
        } else {
            (srs, src, srs_port, src_port)
        };
        match spec.transport {
            SipTransport::Udp => {
                *ip_id = ip_id.wrapping_add(1);
                let fragment = from_src && spec.fragment_invite && msg.starts_with("INVITE");
                for (i, pkt) in udp_packets(a, b, pa, pb, msg.as_bytes(), *ip_id, fragment)?
                    .into_iter()
                    .enumerate()
                {
                    frames.push(Frame {
                        t: t + i as f64 * 0.000_02,
                        data: link(spec.link, from_src, &pkt),
                    });
                }
            }
            SipTransport::Tcp => {
                let bytes = msg.as_bytes();
                // The INVITE goes out as two segments, as a stack with a small send window would.
                let cut = if spec.split_invite && msg.starts_with("INVITE") {
                    bytes.len() / 2
                } else {
                    bytes.len()
                };
                for (i, chunk) in [&bytes[..cut], &bytes[cut..]].into_iter().enumerate() {
                    if chunk.is_empty() {
                        continue;
                    }
                    let pkt = tcp.segment(from_src, a, b, pa, pb, chunk)?;
                    frames.push(Frame {
                        t: t + i as f64 * 0.000_2,
                        data: link(spec.link, from_src, &pkt),
                    });
                }
                // The peer's pure ACK of the data.
                let ack = tcp.segment(!from_src, b, a, pb, pa, &[])?;
                frames.push(Frame {
                    t: t + 0.000_5,
                    data: link(spec.link, !from_src, &ack),
                });
            }
        }
        Ok(())
    };

    let d = Dialog::new(spec);
    let t_invite = 0.010;
    sip(&mut frames, t_invite, true, &d.invite(), &mut ip_id)?;
    sip(
        &mut frames,
        t_invite + 0.004,
        false,
        &d.trying(),
        &mut ip_id,
    )?;
    sip(
        &mut frames,
        t_invite + 0.030,
        false,
        &d.ok_invite(),
        &mut ip_id,
    )?;
    sip(&mut frames, t_invite + 0.032, true, &d.ack(), &mut ip_id)?;

    let rtp_start = t_invite + 0.060;
    for (n, re) in spec.reinvites.iter().enumerate() {
        let t = rtp_start + re.at;
        let cseq = 102 + n as u32;
        sip(&mut frames, t, true, &d.reinvite(cseq, re), &mut ip_id)?;
        sip(&mut frames, t + 0.030, false, &d.ok_reinvite(cseq, re), &mut ip_id)?;
        sip(&mut frames, t + 0.032, true, &d.reack(cseq), &mut ip_id)?;
    }
    let mut rtp_end: f64 = 0.0;
    for (k, stream) in spec.streams.iter().enumerate() {
        let k16 = k as u16;
        let (sport, dport) = (spec.src_rtp_base + 2 * k16, spec.srs_rtp_base + 2 * k16);
        let start = rtp_start + k as f64 * 0.003;
        let mut srtp = if spec.srtp {
            Some(srtp_sender(&srtp_key(true, k))?)
        } else {
            None
        };
        let (mut sent, mut octets) = (0u32, 0u32);
        let mut next_sr = 2.5;
        for p in stream_packets(spec, k, stream)? {
            let t = start + p.t;
            let mut rtp = Vec::with_capacity(12 + p.payload.len());
            rtp.push(0x80);
            rtp.push(p.pt | if p.marker { 0x80 } else { 0 });
            rtp.extend_from_slice(&p.seq.to_be_bytes());
            rtp.extend_from_slice(&p.ts.to_be_bytes());
            rtp.extend_from_slice(&p.ssrc.to_be_bytes());
            rtp.extend_from_slice(&p.payload);
            if let Some(s) = srtp.as_mut() {
                rtp = s.rtp_protect(rtp).map_err(|e| format!("SRTP: {e:?}"))?;
            }
            ip_id = ip_id.wrapping_add(1);
            for pkt in udp_packets(src, srs, sport, dport, &rtp, ip_id, false)? {
                frames.push(Frame {
                    t,
                    data: link(spec.link, true, &pkt),
                });
            }
            if p.again {
                continue;
            }
            sent += 1;
            octets += p.payload.len() as u32;
            if p.t >= next_sr {
                next_sr += 3.0;
                let mut sr = rtcp_sender_report(p.ssrc, EPOCH_S as f64 + t, p.ts, sent, octets);
                if let Some(s) = srtp.as_mut() {
                    sr = s.rtcp_protect(sr).map_err(|e| format!("SRTCP: {e:?}"))?;
                }
                ip_id = ip_id.wrapping_add(1);
                for pkt in udp_packets(src, srs, sport + 1, dport + 1, &sr, ip_id, false)? {
                    frames.push(Frame {
                        t: t + 0.001,
                        data: link(spec.link, true, &pkt),
                    });
                }
            }
            rtp_end = rtp_end.max(t);
        }
    }

    let t_bye = rtp_end + 0.050;
    sip(&mut frames, t_bye, true, &d.bye(), &mut ip_id)?;
    sip(&mut frames, t_bye + 0.003, false, &d.ok_bye(), &mut ip_id)?;

    frames.sort_by(|a, b| a.t.total_cmp(&b.t));
    Ok(frames)
}

/// One RTP packet of a stream, `t` seconds after the stream's first slot.
struct Packet {
    t: f64,
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: Vec<u8>,
    /// A duplicate of the packet before: not counted in sender reports.
    again: bool,
}

/// The stream's tone at `rate`, `n` samples after its start; `skew` and `quiet` as in
/// [`Quirk::Clock`]: sample `n` is taken at real time n / (rate · (1 + skew)).
fn tone_sample(stream: &Stream, rate: usize, n: usize) -> i16 {
    let (skew, quiet) = match stream.quirk {
        Quirk::Clock { skew, quiet } => (skew, Some(quiet)),
        _ => (0.0, None),
    };
    let x = n as f64 / (rate as f64 * (1.0 + skew));
    if quiet.is_some_and(|(a, b)| x >= a && x < b) {
        return 0;
    }
    (12000.0 * (2.0 * PI * stream.tone_hz * x).sin()) as i16
}

/// Stream `k`'s RTP packets in sending order (before SRTP), with its quirk applied.
fn stream_packets(spec: &CallSpec, k: usize, stream: &Stream) -> Result<Vec<Packet>> {
    let mut out = Vec::new();
    if matches!(stream.quirk, Quirk::NoMedia) {
        return Ok(out);
    }
    let mut codec = spec.codec;
    let mut encoder = Encoder::new(codec)?;
    let mut ssrc = 0x5a5a_0000 + k as u32 * 0x111;
    let (mut seq, mut ts) = match stream.quirk {
        Quirk::Wrap { seq, ts } => (seq, ts),
        _ => (1000 * (k as u16 + 1), 8000u32.wrapping_mul(k as u32 + 1)),
    };
    // A fast clock fits more packets into the call's length, each sent sooner.
    let skew = match stream.quirk {
        Quirk::Clock { skew, .. } => skew,
        _ => 0.0,
    };
    let slots = (spec.slots as f64 * (1.0 + skew)).round() as usize;
    let mut after_pause = false;
    let mut first = true;
    let mut event: Option<(u32, u32)> = None;
    // The timestamp of slot i is ts + (i − base) · ticks: a new source restarts both.
    let mut base = 0usize;
    for i in 0..slots {
        let rel = i as f64 * PACKET_INTERVAL;
        let t = rel / (1.0 + skew);
        if let Some((p0, len)) = stream.pause
            && rel >= p0
            && rel < p0 + len
        {
            after_pause = true;
            continue;
        }
        let mut marker = first || after_pause;
        match stream.quirk {
            Quirk::SsrcChange { at, ssrc: s2, seq: q2, ts: t2 } if ssrc != s2 && rel >= at - 1e-9 => {
                (ssrc, seq, ts, base) = (s2, q2, t2, i);
                marker = true;
            }
            Quirk::CodecChange { at, codec: c2 } if codec != c2 && rel >= at - 1e-9 => {
                codec = c2;
                encoder = Encoder::new(c2)?;
            }
            _ => {}
        }
        let pt = codec.payload_type();
        let slot_ts = ts.wrapping_add(((i - base) as u32).wrapping_mul(codec.ticks_per_packet()));
        let per_packet = codec.sample_rate() / 50;
        let pcm: Vec<i16> = (0..per_packet)
            .map(|n| tone_sample(stream, codec.sample_rate(), i * per_packet + n))
            .collect();
        let mut payload = encoder.encode(&pcm)?;
        if let Quirk::Dtmf { at, len, digit } = stream.quirk
            && rel >= at - 1e-9
            && rel < at + len - 1e-9
        {
            // RFC 4733 §2.5: one event, its timestamp the first slot's; the duration grows by a
            // packet each packet; the last three packets carry the end bit and the final duration.
            let total = (len / PACKET_INTERVAL).round() as u32;
            let (event_ts, j) = match event {
                Some((ets, j)) => (ets, j + 1),
                None => (slot_ts, 0),
            };
            event = Some((event_ts, j));
            // Durations count the RTP clock (§2.5.1.3), the audio's (§2.1).
            let step = codec.ticks_per_packet();
            let end = j + 3 >= total;
            let duration = (if end { total - 2 } else { j + 1 }) * step;
            payload = vec![
                digit,
                if end { 0x80 } else { 0 } | 10,
                (duration >> 8) as u8,
                duration as u8,
            ];
            out.push(Packet {
                t,
                pt: 101,
                marker: j == 0,
                seq,
                ts: event_ts,
                ssrc,
                payload,
                again: false,
            });
            seq = seq.wrapping_add(1);
            first = false;
            continue;
        }
        after_pause = false;
        first = false;
        let lost = matches!(stream.quirk, Quirk::Loss(l) if l.iter().any(|&(a, b)| i >= a && i < b));
        let (delay, twice) = match stream.quirk {
            Quirk::Reorder { delayed, duplicated } => (
                delayed.iter().find(|&&(s, _)| s == i).map_or(0.0, |&(_, d)| d),
                duplicated.contains(&i),
            ),
            _ => (0.0, false),
        };
        if !lost {
            let p = Packet {
                t: t + delay,
                pt,
                marker,
                seq,
                ts: slot_ts,
                ssrc,
                payload,
                again: false,
            };
            if twice {
                out.push(Packet {
                    t: t + 0.004,
                    again: true,
                    payload: p.payload.clone(),
                    ..p
                });
            }
            out.push(p);
        }
        seq = seq.wrapping_add(1);
    }
    // Capture order is arrival order.
    out.sort_by(|a, b| a.t.total_cmp(&b.t));
    Ok(out)
}

/// The SDES master key and salt (30 octets, RFC 4568 §6.1) of m-line `k`, ours or the SRS's: fixed,
/// so that the capture is reproducible and a test can decrypt it.
fn srtp_key(offer: bool, k: usize) -> Vec<u8> {
    (0..30u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(if offer { 3 } else { 101 }) ^ (k as u8 * 0x35))
        .collect()
}

/// A libsrtp sender for AES_CM_128_HMAC_SHA1_80 (SRTCP always has an 80-bit tag, RFC 4568 §6.2.2).
fn srtp_sender(material: &[u8]) -> Result<libsrtp::SendSession> {
    use libsrtp::{MasterKey, ProtectionProfile, SendSession, StreamConfig};
    let (key, salt) = material.split_at(16);
    let config = StreamConfig::new(
        vec![MasterKey::new(key, salt, &None)],
        &ProtectionProfile::Aes128CmHmacSha180,
        &ProtectionProfile::Aes128CmHmacSha180,
    );
    let mut session = SendSession::new();
    session
        .add_stream(None, &config)
        .map_err(|e| format!("SRTP stream: {e:?}"))?;
    Ok(session)
}

/// IPv4/UDP packet(s) for one datagram; split into RFC 791 fragments at the Ethernet MTU when asked.
fn udp_packets(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
    ip_id: u16,
    fragment: bool,
) -> Result<Vec<Vec<u8>>> {
    let mut whole = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut whole, payload)?;
    let (mut header, ip_payload) = Ipv4Header::from_slice(&whole)?;
    header.identification = ip_id;
    if !fragment || whole.len() <= MTU {
        let mut out = Vec::with_capacity(whole.len());
        header.write(&mut out)?;
        out.extend_from_slice(ip_payload);
        return Ok(vec![out]);
    }
    header.dont_fragment = false;
    // Fragment data must be a multiple of 8 octets except in the last fragment (RFC 791).
    let chunk = (MTU - header.header_len()) / 8 * 8;
    let mut out = Vec::new();
    for (i, part) in ip_payload.chunks(chunk).enumerate() {
        let mut h = header.clone();
        h.fragment_offset = IpFragOffset::try_new((i * chunk / 8) as u16)?;
        h.more_fragments = (i + 1) * chunk < ip_payload.len();
        h.set_payload_len(part.len())?;
        let mut pkt = Vec::new();
        h.write(&mut pkt)?;
        pkt.extend_from_slice(part);
        out.push(pkt);
    }
    Ok(out)
}

/// Sequence numbers of the single SIP TCP connection, SRC (client) to SRS (server).
struct TcpFlows {
    src_seq: u32,
    srs_seq: u32,
}

impl TcpFlows {
    fn handshake(
        &mut self,
        src: [u8; 4],
        srs: [u8; 4],
        sp: u16,
        dp: u16,
    ) -> Result<Vec<(f64, bool, Vec<u8>)>> {
        let mut syn = Vec::new();
        PacketBuilder::ipv4(src, srs, 64)
            .tcp(sp, dp, self.src_seq, 64240)
            .syn()
            .write(&mut syn, &[])?;
        self.src_seq = self.src_seq.wrapping_add(1);
        let mut syn_ack = Vec::new();
        PacketBuilder::ipv4(srs, src, 64)
            .tcp(dp, sp, self.srs_seq, 65160)
            .syn()
            .ack(self.src_seq)
            .write(&mut syn_ack, &[])?;
        self.srs_seq = self.srs_seq.wrapping_add(1);
        let mut ack = Vec::new();
        PacketBuilder::ipv4(src, srs, 64)
            .tcp(sp, dp, self.src_seq, 64240)
            .ack(self.srs_seq)
            .write(&mut ack, &[])?;
        Ok(vec![
            (0.000, true, syn),
            (0.0005, false, syn_ack),
            (0.0006, true, ack),
        ])
    }

    fn segment(
        &mut self,
        from_src: bool,
        a: [u8; 4],
        b: [u8; 4],
        pa: u16,
        pb: u16,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let (seq, ack) = if from_src {
            (self.src_seq, self.srs_seq)
        } else {
            (self.srs_seq, self.src_seq)
        };
        let mut pkt = Vec::new();
        let builder = PacketBuilder::ipv4(a, b, 64)
            .tcp(pa, pb, seq, 64240)
            .ack(ack);
        if !data.is_empty() {
            builder.psh().write(&mut pkt, data)?;
        } else {
            builder.write(&mut pkt, data)?;
        }
        let next = seq.wrapping_add(data.len() as u32);
        if from_src {
            self.src_seq = next;
        } else {
            self.srs_seq = next;
        }
        Ok(pkt)
    }
}

/// Prepends the link header: Ethernet II, or Linux cooked (SLL, `tcpdump -i any`).
fn link(kind: Link, from_src: bool, ip: &[u8]) -> Vec<u8> {
    let src_mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
    let srs_mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x14];
    let (from, to) = if from_src {
        (src_mac, srs_mac)
    } else {
        (srs_mac, src_mac)
    };
    let mut out = Vec::with_capacity(ip.len() + 16);
    match kind {
        Link::Ethernet => {
            out.extend_from_slice(&to);
            out.extend_from_slice(&from);
        }
        Link::LinuxSll => {
            // Captured on the SRS host: packets from the SRC arrive (0), ours go out (4).
            let packet_type: u16 = if from_src { 0 } else { 4 };
            out.extend_from_slice(&packet_type.to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
            out.extend_from_slice(&6u16.to_be_bytes());
            out.extend_from_slice(&from);
            out.extend_from_slice(&[0, 0]);
        }
    }
    out.extend_from_slice(&0x0800u16.to_be_bytes());
    out.extend_from_slice(ip);
    out
}

fn write_capture(path: &Path, spec: &CallSpec, frames: &[Frame]) -> Result<()> {
    let file = BufWriter::new(File::create(path)?);
    let datalink = match spec.link {
        Link::Ethernet => DataLink::ETHERNET,
        Link::LinuxSll => DataLink::LINUX_SLL,
    };
    let ts = |t: f64| Duration::from_secs(EPOCH_S) + Duration::from_secs_f64(t);
    if spec.pcapng {
        let mut w = PcapNgWriter::new(file)?;
        let mut idb = InterfaceDescriptionBlock::new(datalink, 65535);
        // pcap-file 2.0 writes EPB timestamps as nanoseconds: say so, or readers assume microseconds.
        idb.options.push(InterfaceDescriptionOption::IfTsResol(9));
        idb.options
            .push(InterfaceDescriptionOption::IfName(Cow::Borrowed("eth0")));
        w.write_pcapng_block(idb)?;
        for f in frames {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: ts(f.t),
                original_len: f.data.len() as u32,
                data: Cow::Borrowed(&f.data),
                options: vec![],
            })?;
        }
    } else {
        let header = PcapHeader {
            datalink,
            endianness: pcap_file::Endianness::Little,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(file, header)?;
        for f in frames {
            w.write_packet(&PcapPacket::new(ts(f.t), f.data.len() as u32, &f.data))?;
        }
    }
    Ok(())
}

/// The SIP side of the call: identifiers and the six messages.
struct Dialog<'a> {
    spec: &'a CallSpec,
    src: String,
    srs: String,
    transport: &'static str,
}

impl<'a> Dialog<'a> {
    fn new(spec: &'a CallSpec) -> Self {
        let transport = match spec.transport {
            SipTransport::Udp => "UDP",
            SipTransport::Tcp => "TCP",
        };
        Dialog {
            spec,
            src: ip_str(spec.src_ip),
            srs: ip_str(spec.srs_ip),
            transport,
        }
    }

    fn call_id(&self) -> String {
        format!("4f1c2a9e-{}@{}", self.spec.tag, self.src)
    }

    fn uri_params(&self) -> &'static str {
        match self.spec.transport {
            SipTransport::Udp => "",
            SipTransport::Tcp => ";transport=tcp",
        }
    }

    fn request(
        &self,
        line: &str,
        branch: &str,
        to_tag: bool,
        cseq: &str,
        extra: &str,
        body: (&str, &str),
    ) -> String {
        let (ctype, body) = body;
        let to_tag = if to_tag { ";tag=srs-7731" } else { "" };
        let mut m = format!(
            "{line} SIP/2.0\r\n\
             Via: SIP/2.0/{t} {src}:{sp};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:src@{src}>;tag=src-2291\r\n\
             To: <sip:recorder@{srs}>{to_tag}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq}\r\n\
             Contact: <sip:src@{src}:{sp}{up}>;+sip.src\r\n\
             {extra}",
            t = self.transport,
            src = self.src,
            sp = self.spec.src_sip_port,
            srs = self.srs,
            cid = self.call_id(),
            up = self.uri_params(),
        );
        if !ctype.is_empty() {
            m.push_str(&format!("Content-Type: {ctype}\r\n"));
        }
        m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        m
    }

    fn ruri(&self) -> String {
        format!("sip:recorder@{}:5060{}", self.srs, self.uri_params())
    }

    fn invite(&self) -> String {
        let body = format!(
            "--siprec-boundary-01\r\nContent-Type: application/sdp\r\n\r\n{}\r\n\
             --siprec-boundary-01\r\nContent-Type: application/rs-metadata+xml\r\n\
             Content-Disposition: recording-session\r\n\r\n{}\r\n--siprec-boundary-01--\r\n",
            self.offer_sdp(),
            self.metadata()
        );
        self.request(
            &format!("INVITE {}", self.ruri()),
            "a1b2c3",
            false,
            "101 INVITE",
            "Require: siprec\r\nSupported: timer, replaces\r\n\
             Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE\r\n\
             User-Agent: make_pcaps SRC\r\nMIME-Version: 1.0\r\n",
            ("multipart/mixed;boundary=siprec-boundary-01", &body),
        )
    }

    fn ack(&self) -> String {
        self.request(
            &format!("ACK {}", self.ruri()),
            "d4e5f6",
            true,
            "101 ACK",
            "",
            ("", ""),
        )
    }

    fn bye_cseq(&self) -> String {
        format!("{} BYE", 102 + self.spec.reinvites.len())
    }

    fn bye(&self) -> String {
        self.request(
            &format!("BYE {}", self.ruri()),
            "0a9b8c",
            true,
            &self.bye_cseq(),
            "",
            ("", ""),
        )
    }

    fn response(&self, status: &str, branch: &str, to_tag: bool, cseq: &str, body: &str) -> String {
        let to_tag = if to_tag { ";tag=srs-7731" } else { "" };
        let ctype = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".into()
        };
        let contact = if to_tag.is_empty() {
            String::new()
        } else {
            format!(
                "Contact: <sip:recorder@{}:5060{}>\r\n",
                self.srs,
                self.uri_params()
            )
        };
        format!(
            "SIP/2.0 {status}\r\n\
             Via: SIP/2.0/{t} {src}:{sp};branch=z9hG4bK{branch};rport={sp};received={src}\r\n\
             From: <sip:src@{src}>;tag=src-2291\r\n\
             To: <sip:recorder@{srs}>{to_tag}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq}\r\n\
             {contact}{ctype}Content-Length: {len}\r\n\r\n{body}",
            t = self.transport,
            src = self.src,
            sp = self.spec.src_sip_port,
            srs = self.srs,
            cid = self.call_id(),
            len = body.len(),
        )
    }

    /// A re-INVITE (RFC 3261 §14.1) with an SDP body only: the metadata did not change.
    fn reinvite(&self, cseq: u32, re: &Reinvite) -> String {
        self.request(
            &format!("INVITE {}", self.ruri()),
            &format!("r{cseq}"),
            true,
            &format!("{cseq} INVITE"),
            "Require: siprec\r\nUser-Agent: make_pcaps SRC\r\n",
            (
                "application/sdp",
                &self.sdp_for(true, re.direction, re.codec, cseq - 100),
            ),
        )
    }

    fn ok_reinvite(&self, cseq: u32, re: &Reinvite) -> String {
        let answer = match re.direction {
            "inactive" => "inactive",
            _ => "recvonly",
        };
        self.response(
            "200 OK",
            &format!("r{cseq}"),
            true,
            &format!("{cseq} INVITE"),
            &self.sdp_for(false, answer, re.codec, cseq - 100),
        )
    }

    fn reack(&self, cseq: u32) -> String {
        self.request(
            &format!("ACK {}", self.ruri()),
            &format!("k{cseq}"),
            true,
            &format!("{cseq} ACK"),
            "",
            ("", ""),
        )
    }

    fn trying(&self) -> String {
        self.response("100 Trying", "a1b2c3", false, "101 INVITE", "")
    }

    fn ok_invite(&self) -> String {
        self.response("200 OK", "a1b2c3", true, "101 INVITE", &self.answer_sdp())
    }

    fn ok_bye(&self) -> String {
        self.response("200 OK", "0a9b8c", true, &self.bye_cseq(), "")
    }

    /// The SRC's offer or the SRS's answer; `version` is the o= line's (RFC 4566 §5.2: it grows
    /// with each new offer).
    fn sdp_for(&self, offer: bool, direction: &str, codec: Codec, version: u32) -> String {
        let (who, ip, base) = if offer {
            ("SRC", &self.src, self.spec.src_rtp_base)
        } else {
            ("SRS", &self.srs, self.spec.srs_rtp_base)
        };
        let (pt, map) = (codec.payload_type(), codec.rtpmap());
        let profile = if self.spec.srtp { "RTP/SAVP" } else { "RTP/AVP" };
        let mut s = format!(
            "v=0\r\no={who} 2890844526 {} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n",
            2890844526u64 + u64::from(version)
        );
        for k in 0..self.spec.streams.len() {
            let port = base + 2 * k as u16;
            if offer {
                s.push_str(&format!(
                    "m=audio {port} {profile} {pt} 101\r\na=rtpmap:{pt} {map}\r\n\
                     a=rtpmap:101 telephone-event/{}\r\na=fmtp:101 0-15\r\n",
                    codec.event_clock()
                ));
            } else {
                s.push_str(&format!("m=audio {port} {profile} {pt}\r\na=rtpmap:{pt} {map}\r\n"));
            }
            if self.spec.srtp {
                // RFC 4568 §9.1: each side sends with the key it offers or answers.
                let key = base64::engine::general_purpose::STANDARD.encode(srtp_key(offer, k));
                s.push_str(&format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"));
            }
            s.push_str(&format!(
                "a=ptime:20\r\na={direction}\r\na=label:{}\r\n",
                k + 1
            ));
        }
        s
    }

    fn offer_sdp(&self) -> String {
        self.sdp_for(true, "sendonly", self.spec.codec, 0)
    }

    fn answer_sdp(&self) -> String {
        self.sdp_for(false, "recvonly", self.spec.codec, 0)
    }

    /// RFC 7865 metadata: one session, one participant and one stream per m-line; each
    /// participant sends its own stream and receives the others.
    fn metadata(&self) -> String {
        let n = self.spec.streams.len();
        let time = "2025-11-28T10:00:00Z";
        let mut x = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
             <recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\r\n\
             <datamode>complete</datamode>\r\n",
        );
        x.push_str(&format!(
            "<session session_id=\"c2Vzc2lvbi0wMDAwMDAwMQ==\">\r\n\
             <sipSessionID>2a9c8f51d0e3;remote=7f3b1e60a4c2</sipSessionID>\r\n\
             <start-time>{time}</start-time>\r\n</session>\r\n"
        ));
        for (k, s) in self.spec.streams.iter().enumerate() {
            x.push_str(&format!(
                "<participant participant_id=\"cGFydGljaXBhbnQt{k:04}\">\r\n\
                 <nameID aor=\"{}\"><name xml:lang=\"en\">{}</name></nameID>\r\n</participant>\r\n",
                s.participant.0, s.participant.1
            ));
        }
        for k in 0..n {
            x.push_str(&format!(
                "<stream stream_id=\"c3RyZWFtLTAwMDAw{k:04}\" session_id=\"c2Vzc2lvbi0wMDAwMDAwMQ==\">\r\n\
                 <label>{}</label>\r\n</stream>\r\n",
                k + 1
            ));
        }
        x.push_str(&format!(
            "<sessionrecordingassoc session_id=\"c2Vzc2lvbi0wMDAwMDAwMQ==\">\r\n\
             <associate-time>{time}</associate-time>\r\n</sessionrecordingassoc>\r\n"
        ));
        for k in 0..n {
            x.push_str(&format!(
                "<participantsessionassoc participant_id=\"cGFydGljaXBhbnQt{k:04}\" \
                 session_id=\"c2Vzc2lvbi0wMDAwMDAwMQ==\">\r\n\
                 <associate-time>{time}</associate-time>\r\n</participantsessionassoc>\r\n"
            ));
        }
        for k in 0..n {
            x.push_str(&format!(
                "<participantstreamassoc participant_id=\"cGFydGljaXBhbnQt{k:04}\">\r\n"
            ));
            x.push_str(&format!("<send>c3RyZWFtLTAwMDAw{k:04}</send>\r\n"));
            for j in (0..n).filter(|&j| j != k) {
                x.push_str(&format!("<recv>c3RyZWFtLTAwMDAw{j:04}</recv>\r\n"));
            }
            x.push_str("</participantstreamassoc>\r\n");
        }
        x.push_str("</recording>");
        x
    }
}

/// RFC 3550 §6.4.1 sender report without report blocks.
fn rtcp_sender_report(ssrc: u32, wall: f64, rtp_ts: u32, packets: u32, octets: u32) -> Vec<u8> {
    let ntp = wall + 2_208_988_800.0;
    let (secs, frac) = (ntp.trunc() as u32, (ntp.fract() * 4_294_967_296.0) as u32);
    let mut p = vec![0x80, 200, 0, 6];
    for v in [ssrc, secs, frac, rtp_ts, packets, octets] {
        p.extend_from_slice(&v.to_be_bytes());
    }
    p
}

/// ITU-T G.711 µ-law, after the public-domain Sun reference (`g711.c`).
fn linear_to_ulaw(sample: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    let mut v = (sample as i32) >> 2;
    let mask = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(8159) + (0x84 >> 2);
    let seg = SEG_END.iter().position(|&e| v <= e).unwrap_or(8) as i32;
    let u = if seg >= 8 {
        0x7F
    } else {
        (seg << 4) | ((v >> (seg + 1)) & 0xF)
    };
    (u ^ mask) as u8
}

/// ITU-T G.711 A-law, after the public-domain Sun reference (`g711.c`).
fn linear_to_alaw(sample: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut v = (sample as i32) >> 3;
    let mask = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = SEG_END.iter().position(|&e| v <= e).unwrap_or(8) as i32;
    let a = if seg >= 8 {
        0x7F
    } else if seg < 2 {
        (seg << 4) | ((v >> 1) & 0xF)
    } else {
        (seg << 4) | ((v >> seg) & 0xF)
    };
    (a ^ mask) as u8
}
