//! Audio decoding for the negotiated codec of a stream, and the classification of a stream's
//! RTP payload types into audio, telephone-event and comfort noise.
//!
//! [`Decoder`] turns one RTP payload into 16-bit mono PCM at the codec's audio rate, writing
//! into a buffer the caller reuses: G.711 (table lookup), G.722 (our own 64 kbit/s decoder,
//! `g722`), L16 (big-endian, stereo averaged to mono) and, with the `opus` cargo feature, Opus
//! through libopus (always 48 kHz; stereo packets are down-mixed by libopus itself). Nothing is
//! allocated per packet. Lost packets are not concealed: the timeline writes silence in their
//! place, and so it does for Opus DTX (packets of one byte or less) and comfort noise.
//!
//! G.729 is not decoded: Debian's `libbcg729` is GPL-3.0, and the Rust ports on crates.io
//! (`g729-sys`, `audio-codec`) are young single-maintainer ports of that GPL code, so the
//! answer never offers it and SRCs fall back to G.711.
//!
//! Not here: resampling to the call rate (`media::resample`), DTMF detection (`dtmf`, which
//! only parses what [`classify`] marks as telephone-event), SRTP.

pub mod dtmf;
mod g722;
#[cfg(feature = "opus")]
mod opus;

use crate::media::g711::{self, Law};
use crate::siprec::sdp::{AudioCodec, ChosenCodec};

/// Why a decoder could not be made.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The codec is known but this build does not decode it (Opus without the `opus` feature).
    #[error("{0} is not decoded by this build")]
    NotBuiltIn(&'static str),
    /// The decoder library refused to start (libopus's message).
    #[error("cannot start the {codec} decoder: {detail}")]
    Init {
        /// The codec's encoding name.
        codec: &'static str,
        /// What the library said.
        detail: String,
    },
}

/// Samples a decode buffer must hold for any packet the gateway accepts: 120 ms of Opus at
/// 48 kHz (RFC 6716 §3.2.5's longest packet) is 5,760; a maximal 1,500-byte G.722 payload is
/// 3,000. Larger payloads are decoded only as far as the buffer goes.
pub const MAX_DECODED_SAMPLES: usize = 8192;

/// One stream's decoder (see the module doc).
#[derive(Debug)]
pub struct Decoder {
    codec: AudioCodec,
    inner: Inner,
    /// Packets the decoder rejected (Opus only: a malformed packet).
    rejected: u64,
}

#[derive(Debug)]
enum Inner {
    G711(Law),
    G722(Box<g722::G722Decoder>),
    L16 {
        stereo: bool,
    },
    #[cfg(feature = "opus")]
    Opus(Box<opus::OpusDecoder>),
}

impl Decoder {
    /// A decoder for `codec` in its initial state.
    pub fn new(codec: AudioCodec) -> Result<Self, CodecError> {
        let inner = match codec {
            AudioCodec::Pcmu => Inner::G711(Law::Mu),
            AudioCodec::Pcma => Inner::G711(Law::A),
            AudioCodec::G722 => Inner::G722(Box::default()),
            AudioCodec::L16 { channels, .. } => Inner::L16 {
                stereo: channels == 2,
            },
            #[cfg(feature = "opus")]
            AudioCodec::Opus => Inner::Opus(Box::new(opus::OpusDecoder::new()?)),
            #[cfg(not(feature = "opus"))]
            AudioCodec::Opus => return Err(CodecError::NotBuiltIn("opus")),
        };
        Ok(Decoder {
            codec,
            inner,
            rejected: 0,
        })
    }

    /// The codec this decoder was made for.
    pub fn codec(&self) -> AudioCodec {
        self.codec
    }

    /// Sample rate of what [`decode`](Self::decode) writes (16000 for G.722, 48000 for Opus).
    pub fn output_rate(&self) -> u32 {
        self.codec.audio_rate()
    }

    /// Rate of the stream's RTP timestamps (8000 for G.722 although it writes 16 kHz audio).
    pub fn rtp_clock_rate(&self) -> u32 {
        self.codec.rtp_clock_rate()
    }

    /// Packets rejected as malformed since the decoder was made (each decoded to nothing).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Decodes one RTP payload into `out` (mono, at [`output_rate`](Self::output_rate)) and
    /// returns the number of samples written. A malformed packet writes nothing and is counted
    /// in [`rejected`](Self::rejected); what does not fit in `out` is dropped, so size it with
    /// [`MAX_DECODED_SAMPLES`].
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        match &mut self.inner {
            Inner::G711(law) => g711::decode(*law, payload, out),
            Inner::G722(d) => d.decode(payload, out),
            Inner::L16 { stereo } => decode_l16(payload, *stereo, out),
            #[cfg(feature = "opus")]
            Inner::Opus(d) => match d.decode(payload, out) {
                Some(n) => n,
                None => {
                    self.rejected += 1;
                    0
                }
            },
        }
    }

    /// Back to the initial state, for a new source on the stream (SSRC change): the adaptive
    /// codecs' state belongs to the old encoder.
    pub fn reset(&mut self) {
        match &mut self.inner {
            Inner::G711(_) | Inner::L16 { .. } => {}
            Inner::G722(d) => **d = g722::G722Decoder::new(),
            #[cfg(feature = "opus")]
            Inner::Opus(d) => d.reset(),
        }
    }
}

/// L16 (RFC 3551 §4.5.11): big-endian samples, channels interleaved; stereo is averaged.
fn decode_l16(payload: &[u8], stereo: bool, out: &mut [i16]) -> usize {
    let frame = if stereo { 4 } else { 2 };
    let mut n = 0;
    for (f, o) in payload.chunks_exact(frame).zip(out.iter_mut()) {
        let left = i16::from_be_bytes([f[0], f[1]]);
        *o = if stereo {
            let right = i16::from_be_bytes([f[2], f[3]]);
            // The mean of two i16 fits an i16.
            ((i32::from(left) + i32::from(right)) >> 1) as i16
        } else {
            left
        };
        n += 1;
    }
    n
}

/// What an RTP packet on a stream carries, by its payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// The negotiated codec: decode it.
    Audio,
    /// RFC 4733 telephone-event: not audio (see `dtmf`); the span it covers is silence.
    TelephoneEvent,
    /// RFC 3389 comfort noise (the negotiated CN payload type, or the static 13, or 19 which
    /// older Cisco gear sends): silence until the next audio.
    ComfortNoise,
    /// Anything else (a codec not negotiated): dropped and counted.
    Unknown,
}

/// Classifies a payload type against what was negotiated for the stream.
pub fn classify(chosen: &ChosenCodec, payload_type: u8) -> PayloadKind {
    if payload_type == chosen.payload_type {
        PayloadKind::Audio
    } else if chosen.telephone_event == Some(payload_type) {
        PayloadKind::TelephoneEvent
    } else if chosen.comfort_noise == Some(payload_type) || matches!(payload_type, 13 | 19) {
        PayloadKind::ComfortNoise
    } else {
        PayloadKind::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::TAU;

    use crate::media::test_tone as tone;

    /// Amplitude of the `freq` component of `x` (correlation with a complex exponential).
    fn amplitude(x: &[i16], rate: u32, freq: f64) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &v) in x.iter().enumerate() {
            let ph = TAU * freq * i as f64 / f64::from(rate);
            re += f64::from(v) * ph.cos();
            im += f64::from(v) * ph.sin();
        }
        2.0 * (re * re + im * im).sqrt() / x.len() as f64
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    /// The tone is there at its level, and nothing much else is (distortion and noise at least
    /// `min_snr_db` below it).
    fn assert_tone(pcm: &[i16], rate: u32, freq: f64, amp: f64, min_snr_db: f64) {
        let got = amplitude(pcm, rate, freq);
        assert!((got / amp - 1.0).abs() < 0.1, "level {got:.0}, sent {amp}");
        let residual = (rms(pcm).powi(2) - got * got / 2.0).max(1e-9).sqrt();
        let snr = 20.0 * ((got / 2f64.sqrt()) / residual).log10();
        assert!(snr > min_snr_db, "SNR {snr:.1} dB");
    }

    /// Decodes `packets` through one decoder into one PCM vector.
    fn decode_all(codec: AudioCodec, packets: impl IntoIterator<Item = Vec<u8>>) -> Vec<i16> {
        let mut d = Decoder::new(codec).unwrap();
        let mut buf = [0i16; MAX_DECODED_SAMPLES];
        let mut pcm = Vec::new();
        for p in packets {
            let n = d.decode(&p, &mut buf);
            pcm.extend_from_slice(&buf[..n]);
        }
        pcm
    }

    #[test]
    fn g711_tones_round_trip_through_the_decoder() {
        let pcm = tone(8000, 1000.0, 10000.0, 8000);
        let mu: Vec<u8> = pcm.iter().map(|&s| g711::encode::ulaw(s)).collect();
        let a: Vec<u8> = pcm.iter().map(|&s| g711::encode::alaw(s)).collect();
        for (codec, bytes) in [(AudioCodec::Pcmu, mu), (AudioCodec::Pcma, a)] {
            let out = decode_all(codec, bytes.chunks(160).map(<[u8]>::to_vec));
            assert_eq!(out.len(), 8000);
            assert_tone(&out, 8000, 1000.0, 10000.0, 30.0);
        }
    }

    #[test]
    fn g722_decodes_what_an_independent_encoder_wrote() {
        use ezk_g722::libg722::{Bitrate, encoder::Encoder};
        // 1 s of a 1 kHz and a 6 kHz tone: the 6 kHz one is only there in wideband.
        let mut input = tone(16000, 1000.0, 8000.0, 16000);
        for (s, t) in input.iter_mut().zip(tone(16000, 6000.0, 4000.0, 16000)) {
            *s += t;
        }
        let mut enc = Encoder::new(Bitrate::Mode1_64000, false, false);
        let packets: Vec<Vec<u8>> = input.chunks(320).map(|c| enc.encode(c)).collect();
        assert_eq!(packets[0].len(), 160); // 20 ms: 160 bytes, 160 RTP clock ticks
        let mut d = Decoder::new(AudioCodec::G722).unwrap();
        assert_eq!((d.rtp_clock_rate(), d.output_rate()), (8000, 16000));
        let mut buf = [0i16; MAX_DECODED_SAMPLES];
        let mut out = Vec::new();
        for p in &packets {
            let n = d.decode(p, &mut buf);
            assert_eq!(n, 320);
            out.extend_from_slice(&buf[..n]);
        }
        let steady = &out[1600..];
        assert!((amplitude(steady, 16000, 1000.0) / 8000.0 - 1.0).abs() < 0.1);
        assert!((amplitude(steady, 16000, 6000.0) / 4000.0 - 1.0).abs() < 0.15);
        // Against the oracle decoder: bit-exact once both have adapted (the oracle starts its
        // scale factors at 0 rather than G.722 §3.1's 32 and 8, so the first ~300 ms differ).
        let mut oracle =
            ezk_g722::libg722::decoder::Decoder::new(Bitrate::Mode1_64000, false, false);
        let reference: Vec<i16> = packets.iter().flat_map(|p| oracle.decode(p)).collect();
        assert_eq!(out[8000..], reference[8000..]);
    }

    #[test]
    fn g722_reset_restarts_the_adaptation() {
        use ezk_g722::libg722::{Bitrate, encoder::Encoder};
        let mut enc = Encoder::new(Bitrate::Mode1_64000, false, false);
        let payload = enc.encode(&tone(16000, 800.0, 6000.0, 320));
        let mut d = Decoder::new(AudioCodec::G722).unwrap();
        let (mut first, mut again) = ([0i16; 320], [0i16; 320]);
        d.decode(&payload, &mut first);
        d.decode(&payload, &mut again);
        assert_ne!(first, again);
        d.reset();
        d.decode(&payload, &mut again);
        assert_eq!(first, again);
    }

    #[test]
    fn l16_is_big_endian_and_stereo_is_down_mixed() {
        let mono: Vec<u8> = [1000i16, -2, i16::MIN]
            .iter()
            .flat_map(|s| s.to_be_bytes())
            .collect();
        let mut out = [0i16; 8];
        let mut d = Decoder::new(AudioCodec::L16 {
            rate: 16000,
            channels: 1,
        })
        .unwrap();
        assert_eq!(d.decode(&mono, &mut out), 3);
        assert_eq!(out[..3], [1000, -2, i16::MIN]);

        let stereo: Vec<u8> = [1000i16, 3000, i16::MAX, i16::MAX, -5, 5]
            .iter()
            .flat_map(|s| s.to_be_bytes())
            .collect();
        let mut d = Decoder::new(AudioCodec::L16 {
            rate: 44100,
            channels: 2,
        })
        .unwrap();
        assert_eq!(d.output_rate(), 44100);
        // A trailing odd byte (a broken sender) is ignored.
        let mut with_tail = stereo.clone();
        with_tail.push(7);
        assert_eq!(d.decode(&with_tail, &mut out), 3);
        assert_eq!(out[..3], [2000, i16::MAX, 0]);
    }

    #[test]
    fn l16_tone_keeps_frequency_and_level() {
        let pcm = tone(48000, 1000.0, 12000.0, 48000);
        let packets = pcm
            .chunks(960)
            .map(|c| c.iter().flat_map(|s| s.to_be_bytes()).collect());
        let out = decode_all(
            AudioCodec::L16 {
                rate: 48000,
                channels: 1,
            },
            packets,
        );
        assert_eq!(out, pcm);
    }

    #[test]
    fn decoder_writes_only_what_fits() {
        let mut out = [0i16; 100];
        let mut d = Decoder::new(AudioCodec::G722).unwrap();
        assert_eq!(d.decode(&[0x55; 160], &mut out), 100);
        let mut d = Decoder::new(AudioCodec::Pcmu).unwrap();
        assert_eq!(d.decode(&[0xff; 160], &mut out), 100);
    }

    #[cfg(not(feature = "opus"))]
    #[test]
    fn opus_without_the_feature_is_not_built_in() {
        assert_eq!(
            Decoder::new(AudioCodec::Opus).unwrap_err(),
            CodecError::NotBuiltIn("opus")
        );
    }

    #[cfg(feature = "opus")]
    #[test]
    fn opus_mono_and_stereo_packets_decode_to_mono_48k() {
        use ::opus::{Application, Channels, Encoder};
        for channels in [Channels::Mono, Channels::Stereo] {
            let n = if channels == Channels::Stereo { 2 } else { 1 };
            let mut enc = Encoder::new(48000, channels, Application::Audio).unwrap();
            let pcm = tone(48000, 1000.0, 10000.0, 48000);
            let packets = pcm.chunks(960).map(|frame| {
                let interleaved: Vec<i16> = frame
                    .iter()
                    .flat_map(|&s| std::iter::repeat_n(s, n))
                    .collect();
                enc.encode_vec(&interleaved, 1500).unwrap()
            });
            let out = decode_all(AudioCodec::Opus, packets);
            assert_eq!(out.len(), 48000, "{channels:?}");
            // Skip the codec's start-up; lossy, so a looser SNR than G.711.
            let steady = &out[4800..];
            // A perceptual codec does not keep the waveform sample for sample (the residual
            // around the tone is some 16 dB down), but it keeps the tone: level, and nothing
            // at other frequencies.
            assert_tone(steady, 48000, 1000.0, 10000.0, 12.0);
            for other in [500.0, 2000.0, 3000.0, 8000.0] {
                assert!(
                    amplitude(steady, 48000, other) < 100.0,
                    "{channels:?}: energy at {other} Hz"
                );
            }
        }
    }

    #[cfg(feature = "opus")]
    #[test]
    fn opus_garbage_is_rejected_and_dtx_is_silence() {
        let mut d = Decoder::new(AudioCodec::Opus).unwrap();
        let mut out = [0i16; MAX_DECODED_SAMPLES];
        assert_eq!(d.decode(&[0xf8], &mut out), 0); // a DTX packet: TOC byte only
        assert_eq!(d.rejected(), 0);
        // Code 3 (arbitrary frame count) with a frame count of 0 is invalid (RFC 6716 §3.2.5).
        assert_eq!(d.decode(&[0x03, 0x00, 0x01, 0x02], &mut out), 0);
        assert_eq!(d.rejected(), 1);
    }

    #[test]
    fn arbitrary_payloads_never_panic_and_stay_in_bounds() {
        let mut codecs = vec![
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
            AudioCodec::G722,
            AudioCodec::L16 {
                rate: 16000,
                channels: 1,
            },
            AudioCodec::L16 {
                rate: 48000,
                channels: 2,
            },
        ];
        if cfg!(feature = "opus") {
            codecs.push(AudioCodec::Opus);
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut out = [0i16; MAX_DECODED_SAMPLES];
        let mut dtmf = dtmf::DtmfDetector::new();
        for codec in codecs {
            let mut d = Decoder::new(codec).unwrap();
            for _ in 0..500 {
                let len = (next() % 1500) as usize;
                let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let limit = (next() as usize) % out.len();
                assert!(d.decode(&payload, &mut out[..limit]) <= limit);
                let _ = dtmf.push(next() as u32, &payload, |_| {});
            }
        }
    }

    #[test]
    fn payload_types_are_classified_per_stream() {
        let chosen = ChosenCodec {
            payload_type: 9,
            codec: AudioCodec::G722,
            telephone_event: Some(101),
            comfort_noise: Some(98),
        };
        assert_eq!(classify(&chosen, 9), PayloadKind::Audio);
        assert_eq!(classify(&chosen, 101), PayloadKind::TelephoneEvent);
        assert_eq!(classify(&chosen, 98), PayloadKind::ComfortNoise);
        assert_eq!(classify(&chosen, 13), PayloadKind::ComfortNoise);
        assert_eq!(classify(&chosen, 19), PayloadKind::ComfortNoise);
        assert_eq!(classify(&chosen, 0), PayloadKind::Unknown);
        assert_eq!(classify(&chosen, 100), PayloadKind::Unknown);
    }
}
