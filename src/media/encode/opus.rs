//! Ogg Opus output (RFC 7845) through libopus (`opus` crate, behind the `opus` cargo feature:
//! its build compiles libopus with CMake) and the `ogg` crate's page writer.
//!
//! One channel (mapping family 0) or two coded apart: two mono Opus streams in one multistream
//! packet (mapping family 1, two streams, none coupled; RFC 7845 §5.1.1.2, the first stream's
//! packet self-delimited as RFC 6716 Appendix B says). Coded jointly as stereo, libopus lets a
//! loud channel bleed into a silent one at speech bit rates (measured: −14 dB for ~50 ms at
//! 32 kbit/s, still audible at 64), which would put the agent's voice on the customer's channel.
//! 20 ms packets, VBR at 16 kbit/s per channel
//! when encoding at 8 or 12 kHz and 24 kbit/s above (speech), libopus's default complexity (10;
//! 5 would be about 20 % faster). libopus takes 8, 12, 16, 24 or 48 kHz; a capture at another
//! rate is resampled to the next of those above it (48 kHz past 48 kHz) with
//! [`crate::media::resample`], its delay compensated. The identification header carries the encoder's lookahead as pre-skip; granule
//! positions count 48 kHz samples including the pre-skip, and the last page's granule position
//! is pre-skip + the capture's length in 48 kHz samples (RFC 7845 §4.4-4.5), so decoders that
//! honour end trimming (opusdec, ffmpeg) give back the capture's duration to 1/48000 s. A page
//! ends every 50 packets (1 s).

use std::fs::File;
use std::io::BufWriter;

use ogg::{PacketWriteEndInfo, PacketWriter};
use opus::{Application, Bitrate, Channels, Signal};

use super::{Encode, EncodeError};
use crate::media::resample::Resampler;

/// Rates libopus encodes at.
const OPUS_RATES: [u32; 5] = [8000, 12000, 16000, 24000, 48000];
/// Packet length: 20 ms, `rate / 50` samples per channel.
const PACKETS_PER_SECOND: u32 = 50;
/// Packets per Ogg page.
const PACKETS_PER_PAGE: u64 = 50;
/// Bit rate per channel: narrowband and mediumband (encoding at 8 or 12 kHz), wider bands.
const NARROW_BITS_PER_CHANNEL: i32 = 16_000;
const WIDE_BITS_PER_CHANNEL: i32 = 24_000;
/// Largest packet libopus makes (its documentation recommends 4000 bytes).
const MAX_PACKET: usize = 4000;
/// The logical stream's serial number: a file holds one stream, so any value does.
const SERIAL: u32 = 0x5352_5331;

fn opus_err(e: impl std::fmt::Display) -> EncodeError {
    EncodeError::Codec { codec: "libopus", detail: e.to_string() }
}

/// Ogg Opus encoder writing to a file (see the module doc).
pub struct OggOpusEncoder {
    /// One mono encoder per channel.
    opus: Vec<opus::Encoder>,
    /// One channel's samples of the packet being encoded, and one stream's packet.
    planar: Vec<i16>,
    coded: Vec<u8>,
    ogg: PacketWriter<'static, BufWriter<File>>,
    channels: usize,
    capture_rate: u32,
    /// Samples per channel of one packet at the encoder's rate.
    frame: usize,
    /// 48 kHz samples per encoder-rate sample.
    to_48k: u64,
    resample: Option<Resampling>,
    /// Interleaved samples at the encoder's rate not yet encoded (less than a packet).
    pending: Vec<i16>,
    /// The last packet, written when the next one shows whether it ends the stream.
    held: Option<Vec<u8>>,
    packets: u64,
    pre_skip: u64,
    capture_frames: u64,
}

impl std::fmt::Debug for OggOpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OggOpusEncoder")
            .field("channels", &self.channels)
            .field("capture_rate", &self.capture_rate)
            .field("packets", &self.packets)
            .finish_non_exhaustive()
    }
}

/// Appends `packet` (one Opus packet of one frame, as libopus makes for 20 ms) in the
/// self-delimiting framing every stream of a multistream packet but the last uses (RFC 6716
/// Appendix B): the TOC byte, the frame's length (1 or 2 bytes, §3.2.1), the frame.
fn self_delimited(packet: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let Some((&toc, frame)) = packet.split_first() else {
        return Err(opus_err("empty packet"));
    };
    if toc & 0x03 != 0 {
        return Err(opus_err(format!("packet with frame count code {} where one frame was expected", toc & 0x03)));
    }
    out.push(toc);
    match frame.len() {
        n @ 0..=251 => out.push(n as u8),
        n if n <= 1275 => {
            let first = 252 + (n & 3);
            out.push(first as u8);
            out.push(((n - first) >> 2) as u8);
        }
        n => return Err(opus_err(format!("frame of {n} bytes"))),
    }
    out.extend_from_slice(frame);
    Ok(())
}

/// Per-channel resamplers from the capture's rate to the encoder's.
struct Resampling {
    channels: Vec<Resampler>,
    /// Output samples per channel still to drop: the resampler's delay.
    skip: usize,
    planar_in: Vec<i16>,
    planar_out: Vec<Vec<i16>>,
}

impl Resampling {
    /// Resamples interleaved `input` and appends the result, interleaved, to `out`.
    fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let n = self.channels.len();
        let frames = input.len() / n;
        for (c, (r, planar)) in self.channels.iter_mut().zip(&mut self.planar_out).enumerate() {
            self.planar_in.clear();
            self.planar_in.extend(input.iter().skip(c).step_by(n));
            planar.resize(r.max_output(frames), 0);
            let made = r.process(&self.planar_in, planar);
            planar.truncate(made);
        }
        let made = self.planar_out[0].len();
        let skip = self.skip.min(made);
        self.skip -= skip;
        for i in skip..made {
            out.extend(self.planar_out.iter().map(|p| p[i]));
        }
    }
}

impl OggOpusEncoder {
    /// Starts an Ogg Opus file of `channels` (1 or 2) from audio at `sample_rate`.
    pub fn new(file: File, channels: u16, sample_rate: u32) -> Result<Self, EncodeError> {
        if !(1..=2).contains(&channels) {
            return Err(opus_err(format!("this encoder writes 1 or 2 channels, not {channels}")));
        }
        let rate = OPUS_RATES.into_iter().find(|&r| r >= sample_rate).unwrap_or(48000);
        let resample = if rate == sample_rate {
            None
        } else {
            let channels = (0..channels)
                .map(|_| Resampler::new(sample_rate, rate))
                .collect::<Result<Vec<_>, _>>()
                .map_err(opus_err)?;
            let delay = u64::from(channels[0].delay());
            // The delay is in input samples; drop its length at the output rate.
            let skip = (delay * u64::from(rate) / u64::from(sample_rate)) as usize;
            Some(Resampling { planar_out: vec![Vec::new(); channels.len()], channels, skip, planar_in: Vec::new() })
        };
        let per_channel = if rate <= 12000 { NARROW_BITS_PER_CHANNEL } else { WIDE_BITS_PER_CHANNEL };
        let mut opus = Vec::with_capacity(usize::from(channels));
        for _ in 0..channels {
            let mut e = opus::Encoder::new(rate, Channels::Mono, Application::Voip).map_err(opus_err)?;
            e.set_bitrate(Bitrate::Bits(per_channel)).map_err(opus_err)?;
            e.set_signal(Signal::Voice).map_err(opus_err)?;
            opus.push(e);
        }
        let to_48k = u64::from(48000 / rate);
        let lookahead = u64::try_from(opus[0].get_lookahead().map_err(opus_err)?).unwrap_or(0);
        let pre_skip = lookahead * to_48k;
        let mut ogg = PacketWriter::new(BufWriter::with_capacity(64 * 1024, file));
        // RFC 7845 §5.1: the identification header, alone on the first page.
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(channels as u8);
        // A lookahead is a few ms: far below u16::MAX samples at 48 kHz.
        head.extend_from_slice(&(pre_skip as u16).to_le_bytes());
        head.extend_from_slice(&sample_rate.to_le_bytes()); // the input's rate, for information
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        if channels == 1 {
            head.push(0); // channel mapping family 0: mono
        } else {
            // Family 1: two streams, none coupled, channel c from stream c.
            head.extend_from_slice(&[1, 2, 0, 0, 1]);
        }
        ogg.write_packet(head, SERIAL, PacketWriteEndInfo::EndPage, 0)?;
        // RFC 7845 §5.2: the comment header, ending its page.
        let vendor = opus::version();
        let mut tags = Vec::with_capacity(16 + vendor.len());
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
        ogg.write_packet(tags, SERIAL, PacketWriteEndInfo::EndPage, 0)?;
        let frame = (rate / PACKETS_PER_SECOND) as usize;
        Ok(OggOpusEncoder {
            opus,
            planar: Vec::with_capacity(frame),
            coded: Vec::with_capacity(MAX_PACKET),
            ogg,
            channels: usize::from(channels),
            capture_rate: sample_rate,
            frame,
            to_48k,
            resample,
            pending: Vec::with_capacity(frame * usize::from(channels) * 2),
            held: None,
            packets: 0,
            pre_skip,
            capture_frames: 0,
        })
    }

    /// Encodes every whole packet in `pending`.
    fn encode_pending(&mut self) -> Result<(), EncodeError> {
        let packet_samples = self.frame * self.channels;
        let mut at = 0;
        while self.pending.len() - at >= packet_samples {
            let input = &self.pending[at..at + packet_samples];
            let mut packet = Vec::with_capacity(MAX_PACKET);
            let last = self.channels - 1;
            for (c, encoder) in self.opus.iter_mut().enumerate() {
                self.planar.clear();
                self.planar.extend(input.iter().skip(c).step_by(self.channels));
                self.coded.resize(MAX_PACKET, 0);
                let n = encoder.encode(&self.planar, &mut self.coded).map_err(opus_err)?;
                if c == last {
                    packet.extend_from_slice(&self.coded[..n]);
                } else {
                    self_delimited(&self.coded[..n], &mut packet)?;
                }
            }
            at += packet_samples;
            if let Some(previous) = self.held.replace(packet) {
                self.packets += 1;
                let end = if self.packets.is_multiple_of(PACKETS_PER_PAGE) {
                    PacketWriteEndInfo::EndPage
                } else {
                    PacketWriteEndInfo::NormalPacket
                };
                let granule = self.packets * self.frame as u64 * self.to_48k;
                self.ogg.write_packet(previous, SERIAL, end, granule)?;
            }
        }
        self.pending.drain(..at);
        Ok(())
    }

    /// 48 kHz samples of the packets encoded so far (written or held).
    fn encoded_48k(&self) -> u64 {
        (self.packets + u64::from(self.held.is_some())) * self.frame as u64 * self.to_48k
    }
}

impl Encode for OggOpusEncoder {
    fn write(&mut self, samples: &[i16]) -> Result<(), EncodeError> {
        self.capture_frames += (samples.len() / self.channels) as u64;
        match &mut self.resample {
            Some(r) => r.process(samples, &mut self.pending),
            None => self.pending.extend_from_slice(samples),
        }
        self.encode_pending()
    }

    fn finish(mut self: Box<Self>) -> Result<File, EncodeError> {
        if let Some(r) = &mut self.resample {
            // Push the resampler's delay out with silence.
            let flush = vec![0i16; r.channels[0].delay() as usize * self.channels];
            r.process(&flush, &mut self.pending);
        }
        // RFC 7845 §4.4: the stream must decode to pre-skip + the whole capture; pad with
        // silence to a whole packet and beyond until it does (and hold at least one packet, for
        // the end-of-stream page).
        let length_48k = (self.capture_frames * 48000 + u64::from(self.capture_rate) / 2) / u64::from(self.capture_rate);
        let end_granule = self.pre_skip + length_48k;
        while self.encoded_48k() < end_granule || self.held.is_none() {
            let packet_samples = self.frame * self.channels;
            let to_fill = packet_samples - self.pending.len() % packet_samples;
            self.pending.resize(self.pending.len() + to_fill, 0);
            self.encode_pending()?;
        }
        // RFC 7845 §4.5: the last page's granule position trims the padding.
        if let Some(last) = self.held.take() {
            self.packets += 1;
            self.ogg.write_packet(last, SERIAL, PacketWriteEndInfo::EndStream, end_granule)?;
        }
        self.ogg.into_inner().into_inner().map_err(|e| EncodeError::Io(e.into_error()))
    }
}
