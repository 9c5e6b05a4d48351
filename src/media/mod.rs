//! The media path's cores: SRTP decryption (`srtp`), payload decoding (`codec`, `g711`),
//! resampling to the call's rate (`resample`), rendering the delivered file from the capture
//! (`render`, `encode`), RTP source latching (`latch`), placement of RTP on
//! the call's timeline (`timeline`), the WAV writer (`wav`), cache hints for the packet path
//! (`prefetch`). All sans-IO; the runtime's media
//! thread owns the sockets and files and drives them.

pub mod codec;
pub mod encode;
pub mod g711;
pub mod latch;
pub mod ports;
pub mod prefetch;
pub mod render;
pub mod resample;
pub mod srtp;
pub mod timeline;
pub mod wav;

/// What the media thread learned about one stream beyond the timeline's counters, reported per
/// stream in `info.metaData.gateway.streams` (docs/mapping.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamMedia {
    /// Packets of a payload type that was not negotiated (dropped).
    pub unknown_payloads: u64,
    /// Comfort-noise packets (RFC 3389; written as silence).
    pub comfort_noise: u64,
    /// Telephone-event packets (RFC 4733; never written as audio).
    pub telephone_events: u64,
    /// Packets the decoder rejected as malformed.
    pub rejected: u64,
    /// Codec changes a re-INVITE made.
    pub codec_changes: u32,
    /// The SRTP suite and counters of an SRTP stream.
    pub srtp: Option<(&'static str, srtp::SrtpStats)>,
    /// The digits received, with `media.dtmf_in_metadata`; `None` when not enabled.
    pub dtmf: Option<Vec<DtmfDigit>>,
}

/// One DTMF digit (RFC 4733 event 0-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfDigit {
    /// `0-9`, `*`, `#`, `A-D`, or `!` for flash.
    pub digit: char,
    /// When the key was pressed, in milliseconds since the recording's start.
    pub at_ms: u64,
    /// How long it was held, in milliseconds.
    pub duration_ms: u64,
}

/// `n` samples at `rate` of a sine at `freq` with peak `amp` (the codec and resampler tests).
#[cfg(test)]
fn test_tone(rate: u32, freq: f64, amp: f64, n: usize) -> Vec<i16> {
    (0..n).map(|i| (amp * (std::f64::consts::TAU * freq * i as f64 / f64::from(rate)).sin()).round() as i16).collect()
}
