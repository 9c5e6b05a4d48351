//! A streaming WAV (RIFF/WAVE) writer for 16-bit PCM over any `Write + Seek`.
//!
//! The header is written first with the sizes of what has been written so far and rewritten by
//! [`WavWriter::checkpoint`] and [`WavWriter::finish`], so a file cut short by a crash is still a
//! valid WAV up to its last checkpoint. Up to two channels use WAVE_FORMAT_PCM; more use
//! WAVE_FORMAT_EXTENSIBLE with no speaker positions (the channels are call parties, not
//! loudspeakers), as the WAVE specification asks for more than two channels. It does no
//! buffering of its own: hand it a `BufWriter`.

use std::io::{self, Seek, SeekFrom, Write};

/// Largest data chunk a RIFF file can describe.
const MAX_DATA: u64 = u32::MAX as u64 - 128;

/// Errors of the WAV writer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// The underlying file failed.
    #[error("wav i/o: {0}")]
    Io(#[from] io::Error),
    /// The recording reached the 4 GiB limit of the RIFF format; later audio is dropped.
    #[error("wav file reached the 4 GiB RIFF limit")]
    Full,
}

/// Streaming 16-bit PCM WAV writer.
#[derive(Debug)]
pub struct WavWriter<W: Write + Seek> {
    inner: W,
    channels: u16,
    sample_rate: u32,
    header_len: u64,
    data_bytes: u64,
}

fn header(channels: u16, sample_rate: u32, data_bytes: u32) -> Vec<u8> {
    let extensible = channels > 2;
    let block_align = channels * 2;
    let fmt_len: u32 = if extensible { 40 } else { 16 };
    let mut h = Vec::with_capacity(68);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(4 + 8 + fmt_len + 8 + data_bytes).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&fmt_len.to_le_bytes());
    h.extend_from_slice(&(if extensible { 0xFFFEu16 } else { 1 }).to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&sample_rate.to_le_bytes());
    h.extend_from_slice(&(sample_rate * u32::from(block_align)).to_le_bytes());
    h.extend_from_slice(&block_align.to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    if extensible {
        h.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        h.extend_from_slice(&16u16.to_le_bytes()); // valid bits per sample
        h.extend_from_slice(&0u32.to_le_bytes()); // channel mask: no speaker positions
        // KSDATAFORMAT_SUBTYPE_PCM {00000001-0000-0010-8000-00aa00389b71}
        h.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71]);
    }
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_bytes.to_le_bytes());
    h
}

impl<W: Write + Seek> WavWriter<W> {
    /// Writes the header of an empty recording.
    pub fn new(mut inner: W, channels: u16, sample_rate: u32) -> Result<Self, WavError> {
        let h = header(channels.max(1), sample_rate, 0);
        inner.write_all(&h)?;
        Ok(WavWriter {
            inner,
            channels: channels.max(1),
            sample_rate,
            header_len: h.len() as u64,
            data_bytes: 0,
        })
    }

    pub fn channels(&self) -> u16 {
        self.channels
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Frames (one sample per channel) written so far.
    pub fn frames(&self) -> u64 {
        self.data_bytes / (u64::from(self.channels) * 2)
    }

    /// Appends interleaved samples (a whole number of frames).
    pub fn write_interleaved(&mut self, samples: &[i16]) -> Result<(), WavError> {
        let bytes = samples.len() as u64 * 2;
        if self.data_bytes + bytes > MAX_DATA {
            return Err(WavError::Full);
        }
        // Converted through a buffer on the stack: it stays in cache, where a per-writer buffer
        // (one per call) would be cold by the writer's next turn.
        let mut buf = [0u8; 4096];
        for chunk in samples.chunks(buf.len() / 2) {
            for (b, s) in buf.chunks_exact_mut(2).zip(chunk) {
                b.copy_from_slice(&s.to_le_bytes());
            }
            self.inner.write_all(&buf[..chunk.len() * 2])?;
        }
        self.data_bytes += bytes;
        Ok(())
    }

    /// Cuts the recording back to its first `frames` frames (a call whose end lies before what
    /// was already written, e.g. one ended at its last packet by the RTP timeout). Later writes
    /// continue from there; the caller truncates the file to [`WavWriter::len_bytes`].
    pub fn truncate_frames(&mut self, frames: u64) -> Result<(), WavError> {
        let bytes = frames * u64::from(self.channels) * 2;
        if bytes < self.data_bytes {
            self.data_bytes = bytes;
            self.inner.seek(SeekFrom::Start(self.header_len + bytes))?;
        }
        Ok(())
    }

    /// Length of the file as it should be: header plus data.
    pub fn len_bytes(&self) -> u64 {
        self.header_len + self.data_bytes
    }

    /// Rewrites the header with the current sizes and flushes, so the file on disk is a valid WAV.
    pub fn checkpoint(&mut self) -> Result<(), WavError> {
        self.inner.seek(SeekFrom::Start(0))?;
        // data_bytes never exceeds MAX_DATA, which fits u32.
        let h = header(self.channels, self.sample_rate, self.data_bytes as u32);
        self.inner.write_all(&h)?;
        self.inner.seek(SeekFrom::Start(self.header_len + self.data_bytes))?;
        self.inner.flush()?;
        Ok(())
    }

    /// Final header and flush; returns the writer.
    pub fn finish(mut self) -> Result<W, WavError> {
        self.checkpoint()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn stereo_round_trip_with_hound() {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), 2, 8000).unwrap();
        w.write_interleaved(&[1, -1, 2, -2]).unwrap();
        w.checkpoint().unwrap();
        w.write_interleaved(&[3, -3]).unwrap();
        assert_eq!(w.frames(), 3);
        let bytes = w.finish().unwrap().into_inner();
        let mut r = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        let spec = r.spec();
        assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 8000, 16));
        let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(s, vec![1, -1, 2, -2, 3, -3]);
    }

    #[test]
    fn three_channels_are_extensible_and_readable() {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), 3, 8000).unwrap();
        w.write_interleaved(&[1, 2, 3, 4, 5, 6]).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(&bytes[20..22], &0xFFFEu16.to_le_bytes());
        let mut r = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        assert_eq!(r.spec().channels, 3);
        assert_eq!(r.duration(), 2);
        let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(s, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn truncate_cuts_back_to_the_given_frame() {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), 2, 8000).unwrap();
        w.write_interleaved(&[1, 1, 2, 2, 3, 3, 4, 4]).unwrap();
        w.truncate_frames(2).unwrap();
        assert_eq!(w.frames(), 2);
        let len = w.len_bytes() as usize;
        let mut bytes = w.finish().unwrap().into_inner();
        bytes.truncate(len);
        let mut r = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        assert_eq!(r.duration(), 2);
        let s: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(s, vec![1, 1, 2, 2]);
    }

    #[test]
    fn checkpoint_leaves_a_valid_file_mid_recording() {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), 1, 8000).unwrap();
        w.write_interleaved(&[7; 80]).unwrap();
        w.checkpoint().unwrap();
        // Simulate a crash: take the bytes as they are now, without finish().
        let bytes = w.inner.get_ref().clone();
        let r = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        assert_eq!(r.duration(), 80);
    }
}
