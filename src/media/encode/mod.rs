//! Encoders for rendered recordings: one per output format, each taking interleaved 16-bit
//! frames in chunks and writing its file as it goes (bounded memory, whatever the call's
//! length). WAV (PCM or µ-law) is always built; MP3 (`mp3` cargo feature, LAME) and Ogg Opus
//! (`opus` cargo feature, libopus) are optional because they compile C code.
//!
//! This module does not choose a format, mix channels or fall back from one format to another
//! ([`super::render`] does), and does not fsync or rename the file (the caller does).

use std::fs::File;
use std::io::{self, BufWriter};

use super::wav::{Encoding, WavError, WavWriter};

#[cfg(feature = "mp3")]
pub mod mp3;
#[cfg(feature = "opus")]
pub mod opus;

/// An encoder's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Writing the output file failed.
    #[error("writing the encoded file: {0}")]
    Io(#[from] io::Error),
    /// The WAV writer failed.
    #[error(transparent)]
    Wav(#[from] WavError),
    /// The codec library refused a setting or a frame.
    #[error("{codec}: {detail}")]
    Codec {
        /// Which codec ("LAME", "libopus").
        codec: &'static str,
        /// What it said.
        detail: String,
    },
}

/// An output encoder (see the module doc).
pub trait Encode {
    /// Appends interleaved frames (a whole number of frames of the encoder's channel count).
    fn write(&mut self, samples: &[i16]) -> Result<(), EncodeError>;
    /// Ends the stream, completes the file's headers and flushes; returns the file, which the
    /// caller fsyncs.
    fn finish(self: Box<Self>) -> Result<File, EncodeError>;
}

/// WAV output, 16-bit PCM or µ-law.
#[derive(Debug)]
pub struct WavEncoder(WavWriter<BufWriter<File>>);

impl WavEncoder {
    /// Starts a WAV of `channels` at `sample_rate` in `file`.
    pub fn new(file: File, channels: u16, sample_rate: u32, encoding: Encoding) -> Result<Self, EncodeError> {
        let out = BufWriter::with_capacity(64 * 1024, file);
        Ok(WavEncoder(WavWriter::with_encoding(out, channels, sample_rate, encoding)?))
    }
}

impl Encode for WavEncoder {
    fn write(&mut self, samples: &[i16]) -> Result<(), EncodeError> {
        Ok(self.0.write_interleaved(samples)?)
    }

    fn finish(self: Box<Self>) -> Result<File, EncodeError> {
        self.0.finish()?.into_inner().map_err(|e| EncodeError::Io(e.into_error()))
    }
}
