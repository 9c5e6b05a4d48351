//! MP3 output through LAME (`mp3lame-encoder`, LGPL-3.0, hence behind the `mp3` cargo feature).
//!
//! Constant bit rate, plain stereo (not joint stereo: the channels are different parties, and
//! mid/side coding would leak one into the other), at the capture's rate when MP3 has it (8 to
//! 48 kHz all do), at 24 kbit/s mono / 32 stereo for 8 kHz up to 64 / 128 above 24 kHz. The
//! file starts with LAME's Info frame, rewritten at the end with the encoder delay and padding, so
//! decoders that read it (ffmpeg, mpg123) give back exactly the frames encoded; others add
//! LAME's delay (1105 samples) at the start and up to one MP3 frame (576 samples at 8-24 kHz,
//! 1152 above) of padding at the end. One or two channels only.
//!
//! `Encoder::encode` of mp3lame-encoder 0.2.5 passes the output vector's spare capacity to
//! LAME as the buffer size, and LAME reads a size of 0 as "unlimited": with an empty vector it
//! writes through a dangling pointer (SIGSEGV). Every call here reserves LAME's documented worst
//! case first (`max_required_buffer_size`, 7200 bytes for the flush).

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::num::NonZeroU32;

use mp3lame_encoder::{Bitrate, Builder, FlushGap, InterleavedPcm, Mode, MonoPcm, Quality};

use super::{Encode, EncodeError};

/// Worst case of a flush (LAME's `lame_encode_flush` documentation).
const FLUSH_RESERVE: usize = 7200;

fn lame_err(e: impl std::fmt::Display) -> EncodeError {
    EncodeError::Codec { codec: "LAME", detail: e.to_string() }
}

/// MP3 encoder writing to a file (see the module doc).
pub struct Mp3Encoder {
    lame: mp3lame_encoder::Encoder,
    out: BufWriter<File>,
    channels: u16,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Mp3Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mp3Encoder").field("channels", &self.channels).finish_non_exhaustive()
    }
}

impl Mp3Encoder {
    /// Starts an MP3 of `channels` (1 or 2) at `sample_rate` in `file`.
    pub fn new(file: File, channels: u16, sample_rate: u32) -> Result<Self, EncodeError> {
        let mut b = Builder::new().ok_or_else(|| lame_err("cannot allocate the encoder"))?;
        let stereo = match channels {
            1 => false,
            2 => true,
            n => return Err(lame_err(format!("MP3 holds 1 or 2 channels, not {n}"))),
        };
        b.set_num_channels(channels as u8).map_err(lame_err)?;
        b.set_sample_rate(sample_rate).map_err(lame_err)?;
        let mp3_rate = [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000].contains(&sample_rate);
        // Otherwise LAME picks an MP3 rate and resamples.
        b.set_output_sample_rate(NonZeroU32::new(sample_rate).filter(|_| mp3_rate)).map_err(lame_err)?;
        // (mono, stereo) for speech, each high enough that a frame holds LAME's Info tag (about
        // 170 bytes: an MPEG-2/2.5 frame is 72 · bit rate / sample rate bytes, MPEG-1 144 ·):
        // without the tag decoders cannot trim the encoder delay.
        let (mono, stereo_rate) = match sample_rate {
            ..=8000 => (Bitrate::Kbps24, Bitrate::Kbps32),
            8001..=12000 => (Bitrate::Kbps32, Bitrate::Kbps48),
            12001..=16000 => (Bitrate::Kbps40, Bitrate::Kbps64),
            16001..=24000 => (Bitrate::Kbps64, Bitrate::Kbps96),
            _ => (Bitrate::Kbps64, Bitrate::Kbps128),
        };
        let brate = if stereo { stereo_rate } else { mono };
        b.set_brate(brate).map_err(lame_err)?;
        b.set_mode(if stereo { Mode::Stereo } else { Mode::Mono }).map_err(lame_err)?;
        b.set_quality(Quality::Good).map_err(lame_err)?;
        b.set_to_write_vbr_tag(true).map_err(lame_err)?;
        let lame = b.build().map_err(lame_err)?;
        Ok(Mp3Encoder { lame, out: BufWriter::with_capacity(64 * 1024, file), channels, buf: Vec::new() })
    }
}

impl Encode for Mp3Encoder {
    fn write(&mut self, samples: &[i16]) -> Result<(), EncodeError> {
        self.buf.clear();
        // The SIGSEGV workaround (module doc): never let LAME see a zero-sized buffer.
        self.buf.reserve(mp3lame_encoder::max_required_buffer_size(samples.len()));
        if self.channels == 1 {
            self.lame.encode_to_vec(MonoPcm(samples), &mut self.buf)
        } else {
            self.lame.encode_to_vec(InterleavedPcm(samples), &mut self.buf)
        }
        .map_err(lame_err)?;
        self.out.write_all(&self.buf)?;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<File, EncodeError> {
        self.buf.clear();
        self.buf.reserve(FLUSH_RESERVE);
        self.lame.flush_to_vec::<FlushGap>(&mut self.buf).map_err(lame_err)?;
        self.out.write_all(&self.buf)?;
        // The Info frame LAME left room for at the start, now with the frame count, delay and
        // padding.
        self.buf.clear();
        self.buf.reserve(self.lame.lame_tag_size().max(FLUSH_RESERVE));
        if self.lame.lame_tag_encode_to_vec(&mut self.buf).is_some() {
            self.out.seek(SeekFrom::Start(0))?;
            self.out.write_all(&self.buf)?;
        }
        self.out.into_inner().map_err(|e| EncodeError::Io(e.into_error()))
    }
}
