//! Opus (RFC 6716, RTP per RFC 7587) through libopus, built only with the `opus` cargo feature
//! (the `opus` crate builds a bundled libopus with CMake).
//!
//! The decoder runs at 48 kHz mono whatever the sender encodes: libopus decodes a stereo packet
//! into a mono decoder by down-mixing, so a sender switching between mono and stereo needs
//! nothing from us. Loss is not concealed (no PLC, no FEC) and DTX packets decode to nothing:
//! the timeline writes silence for the time they cover.

use super::CodecError;

/// The one rate we decode at: Opus's own, so nothing is resampled inside libopus.
const RATE: u32 = 48000;

#[derive(Debug)]
pub(super) struct OpusDecoder(::opus::Decoder);

impl OpusDecoder {
    pub(super) fn new() -> Result<Self, CodecError> {
        ::opus::Decoder::new(RATE, ::opus::Channels::Mono)
            .map(OpusDecoder)
            .map_err(|e| CodecError::Init {
                codec: "opus",
                detail: e.to_string(),
            })
    }

    /// Samples written, or `None` for a malformed packet (or one longer than `out`).
    pub(super) fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Option<usize> {
        // RFC 6716 §3.2.1: a TOC byte alone is a DTX frame (and an empty payload is nothing);
        // libopus would conceal it, but we want silence.
        if payload.len() <= 1 {
            return Some(0);
        }
        let samples = self.0.get_nb_samples(payload).ok()?;
        if samples > out.len() {
            return None;
        }
        self.0.decode(payload, out, false).ok()
    }

    pub(super) fn reset(&mut self) {
        // Only fails for an invalid decoder pointer, which `new` rules out; a failed reset
        // would leave the old state, which costs a few milliseconds of odd audio at most.
        let _ = self.0.reset_state();
    }
}
