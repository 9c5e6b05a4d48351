//! Streaming WAV (RIFF/WAVE, and RF64 past 4 GiB) over any `Write + Seek`: the writer, a
//! chunked reader, and the header repair crash recovery uses.
//!
//! The header is written first with the sizes of what has been written so far and rewritten by
//! [`WavWriter::checkpoint`] and [`WavWriter::finish`], so a file cut short by a crash is still a
//! valid WAV up to its last checkpoint. Samples are 16-bit PCM or 8-bit µ-law (G.711, format
//! tag 7 with the `fact` chunk non-PCM formats need). Up to two channels use WAVEFORMATEX; more
//! use WAVE_FORMAT_EXTENSIBLE with no speaker positions (the channels are call parties, not
//! loudspeakers), as the WAVE specification asks for more than two channels.
//!
//! Every header reserves a 28-byte `JUNK` chunk right after `WAVE`, the size of an RF64 `ds64`
//! chunk (EBU Tech 3306 §3), so a recording that passes the 4 GiB a RIFF file can describe is
//! turned into RF64 in place: `RIFF` becomes `RF64`, `JUNK` becomes `ds64` with the 64-bit
//! sizes, and the 32-bit sizes become 0xFFFFFFFF. Cutting it back below the limit turns it back
//! into plain RIFF. The writer does no buffering of its own: hand it a `BufWriter`. This module
//! does no file-system operations (opening, truncating, fsync are the caller's).

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::g711;

/// Body of a `ds64` chunk: RIFF size, data size and sample count as u64, then a table length
/// of 0 (EBU Tech 3306 §3; the table is for other chunks above 4 GiB, which we never write).
const DS64_LEN: usize = 28;
/// The 32-bit size fields of an RF64 file (EBU Tech 3306 §3: "-1").
const RF64_SIZE: u32 = u32::MAX;
/// How much of a file is searched for the `data` chunk.
const HEADER_SEARCH: u64 = 4096;
/// KSDATAFORMAT_SUBTYPE_* GUIDs are {tag-0000-0010-8000-00aa00389b71}; these are the bytes after
/// the 2-byte tag.
const SUBTYPE_GUID_TAIL: [u8; 14] = [0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71];

/// Errors of the WAV writer and reader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// The underlying file failed.
    #[error("wav i/o: {0}")]
    Io(#[from] io::Error),
    /// The file is not a RIFF/WAVE or RF64 file with the chunks this module reads.
    #[error("not a usable WAV: {0}")]
    Malformed(String),
    /// The file is a WAV, but its samples are not 16-bit PCM (the reader reads nothing else).
    #[error("WAV samples are not 16-bit PCM ({0})")]
    NotPcm16(String),
}

/// How the samples of the `data` chunk are coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// 16-bit signed little-endian linear PCM (WAVE_FORMAT_PCM, tag 1).
    Pcm16,
    /// 8-bit G.711 µ-law (WAVE_FORMAT_MULAW, tag 7).
    MuLaw,
}

impl Encoding {
    fn tag(self) -> u16 {
        match self {
            Encoding::Pcm16 => 1,
            Encoding::MuLaw => 7,
        }
    }

    fn bytes_per_sample(self) -> u16 {
        match self {
            Encoding::Pcm16 => 2,
            Encoding::MuLaw => 1,
        }
    }
}

/// Where the header of a file written by [`WavWriter`] has each field.
#[derive(Debug, Clone, Copy)]
struct Layout {
    channels: u16,
    sample_rate: u32,
    encoding: Encoding,
}

impl Layout {
    fn extensible(&self) -> bool {
        self.channels > 2
    }

    fn block_align(&self) -> u16 {
        self.channels * self.encoding.bytes_per_sample()
    }

    fn fmt_len(&self) -> u32 {
        match (self.extensible(), self.encoding) {
            (true, _) => 40,
            (false, Encoding::Pcm16) => 16,
            // WAVEFORMATEX with cbSize = 0.
            (false, Encoding::MuLaw) => 18,
        }
    }

    fn has_fact(&self) -> bool {
        self.encoding != Encoding::Pcm16
    }

    /// Bytes before the first sample.
    fn header_len(&self) -> u64 {
        let fact = if self.has_fact() { 12 } else { 0 };
        12 + 8 + DS64_LEN as u64 + 8 + u64::from(self.fmt_len()) + fact + 8
    }

    /// The whole header for `data_bytes` of samples, as RF64 when `rf64`.
    fn header(&self, data_bytes: u64, rf64: bool) -> Vec<u8> {
        let frames = data_bytes / u64::from(self.block_align());
        let riff_size = self.header_len() - 8 + data_bytes + (data_bytes & 1);
        // Below the RF64 switch the sizes fit u32 (the caller's threshold is below 4 GiB).
        let size32 = |v: u64| if rf64 { RF64_SIZE } else { v as u32 };
        let mut h = Vec::with_capacity(self.header_len() as usize);
        h.extend_from_slice(if rf64 { b"RF64" } else { b"RIFF" });
        h.extend_from_slice(&size32(riff_size).to_le_bytes());
        h.extend_from_slice(b"WAVE");
        h.extend_from_slice(&ds64_chunk(rf64.then_some((riff_size, data_bytes, frames))));
        h.extend_from_slice(b"fmt ");
        h.extend_from_slice(&self.fmt_len().to_le_bytes());
        let tag = if self.extensible() { 0xFFFE } else { self.encoding.tag() };
        h.extend_from_slice(&tag.to_le_bytes());
        h.extend_from_slice(&self.channels.to_le_bytes());
        h.extend_from_slice(&self.sample_rate.to_le_bytes());
        h.extend_from_slice(&(self.sample_rate * u32::from(self.block_align())).to_le_bytes());
        h.extend_from_slice(&self.block_align().to_le_bytes());
        h.extend_from_slice(&(self.encoding.bytes_per_sample() * 8).to_le_bytes());
        if self.extensible() {
            h.extend_from_slice(&22u16.to_le_bytes()); // cbSize
            h.extend_from_slice(&(self.encoding.bytes_per_sample() * 8).to_le_bytes()); // valid bits
            h.extend_from_slice(&0u32.to_le_bytes()); // channel mask: no speaker positions
            h.extend_from_slice(&self.encoding.tag().to_le_bytes());
            h.extend_from_slice(&SUBTYPE_GUID_TAIL);
        } else if self.encoding != Encoding::Pcm16 {
            h.extend_from_slice(&0u16.to_le_bytes()); // cbSize
        }
        if self.has_fact() {
            h.extend_from_slice(b"fact");
            h.extend_from_slice(&4u32.to_le_bytes());
            h.extend_from_slice(&size32(frames).to_le_bytes());
        }
        h.extend_from_slice(b"data");
        h.extend_from_slice(&size32(data_bytes).to_le_bytes());
        h
    }
}

/// The `JUNK` placeholder, or the `ds64` chunk with (RIFF size, data size, sample count).
fn ds64_chunk(sizes: Option<(u64, u64, u64)>) -> [u8; 8 + DS64_LEN] {
    let mut c = [0u8; 8 + DS64_LEN];
    c[4..8].copy_from_slice(&(DS64_LEN as u32).to_le_bytes());
    match sizes {
        None => c[0..4].copy_from_slice(b"JUNK"),
        Some((riff, data, frames)) => {
            c[0..4].copy_from_slice(b"ds64");
            c[8..16].copy_from_slice(&riff.to_le_bytes());
            c[16..24].copy_from_slice(&data.to_le_bytes());
            c[24..32].copy_from_slice(&frames.to_le_bytes());
            // Table length 0 (c[32..36]).
        }
    }
    c
}

/// Largest data chunk written as plain RIFF for a header of `header_len` bytes: the RIFF size
/// (header − 8 + data, plus a pad byte) must fit u32.
fn riff_data_limit(header_len: u64) -> u64 {
    u64::from(u32::MAX) - header_len
}

/// Streaming WAV writer (16-bit PCM or µ-law samples from 16-bit input).
#[derive(Debug)]
pub struct WavWriter<W: Write + Seek> {
    inner: W,
    layout: Layout,
    data_bytes: u64,
    /// Data sizes above this are written as RF64.
    rf64_above: u64,
    /// The data size the header on disk describes.
    header_bytes: u64,
}

impl<W: Write + Seek> WavWriter<W> {
    /// Writes the header of an empty 16-bit PCM recording.
    pub fn new(inner: W, channels: u16, sample_rate: u32) -> Result<Self, WavError> {
        Self::with_encoding(inner, channels, sample_rate, Encoding::Pcm16)
    }

    /// Writes the header of an empty recording whose samples are stored as `encoding`.
    pub fn with_encoding(mut inner: W, channels: u16, sample_rate: u32, encoding: Encoding) -> Result<Self, WavError> {
        let layout = Layout { channels: channels.max(1), sample_rate, encoding };
        inner.write_all(&layout.header(0, false))?;
        let rf64_above = riff_data_limit(layout.header_len());
        Ok(WavWriter { inner, layout, data_bytes: 0, rf64_above, header_bytes: 0 })
    }

    /// Switches to RF64 once the data passes `data_bytes` instead of near 4 GiB, so that tests
    /// (and tools checking RF64 readers) need not write 4 GiB. Values above the RIFF limit are
    /// capped to it.
    pub fn with_rf64_threshold(mut self, data_bytes: u64) -> Self {
        self.rf64_above = data_bytes.min(riff_data_limit(self.layout.header_len()));
        self
    }

    pub fn channels(&self) -> u16 {
        self.layout.channels
    }

    pub fn sample_rate(&self) -> u32 {
        self.layout.sample_rate
    }

    /// Frames (one sample per channel) written so far.
    pub fn frames(&self) -> u64 {
        self.data_bytes / u64::from(self.layout.block_align())
    }

    /// Appends interleaved samples (a whole number of frames), coded as the writer's encoding.
    pub fn write_interleaved(&mut self, samples: &[i16]) -> Result<(), WavError> {
        let width = usize::from(self.layout.encoding.bytes_per_sample());
        if cfg!(target_endian = "little") && self.layout.encoding == Encoding::Pcm16 {
            // The samples' memory is the file's layout: handed to the writer as it is (the
            // media threads write 32 KiB of a call at a time, no copy in between).
            self.inner.write_all(bytemuck::cast_slice(samples))?;
            self.data_bytes += (samples.len() * width) as u64;
            return Ok(());
        }
        // Converted through a buffer on the stack: it stays in cache, where a per-writer buffer
        // (one per call) would be cold by the writer's next turn.
        let mut buf = [0u8; 4096];
        for chunk in samples.chunks(buf.len() / width) {
            match self.layout.encoding {
                Encoding::Pcm16 => {
                    for (b, s) in buf.chunks_exact_mut(2).zip(chunk) {
                        b.copy_from_slice(&s.to_le_bytes());
                    }
                }
                Encoding::MuLaw => {
                    for (b, s) in buf.iter_mut().zip(chunk) {
                        *b = g711::encode::ulaw(*s);
                    }
                }
            }
            self.inner.write_all(&buf[..chunk.len() * width])?;
        }
        self.data_bytes += (samples.len() * width) as u64;
        Ok(())
    }

    /// Cuts the recording back to its first `frames` frames (a call whose end lies before what
    /// was already written, e.g. one ended at its last packet by the RTP timeout). Later writes
    /// continue from there; the caller truncates the file to [`WavWriter::len_bytes`].
    pub fn truncate_frames(&mut self, frames: u64) -> Result<(), WavError> {
        let bytes = frames * u64::from(self.layout.block_align());
        if bytes < self.data_bytes {
            self.data_bytes = bytes;
            self.inner.seek(SeekFrom::Start(self.layout.header_len() + bytes))?;
        }
        Ok(())
    }

    /// Length of the file as it should be: header, data, and the pad byte RIFF puts after a
    /// chunk of odd length (only µ-law with an odd channel count has one).
    pub fn len_bytes(&self) -> u64 {
        self.layout.header_len() + self.data_bytes + (self.data_bytes & 1)
    }

    /// Rewrites the header with the current sizes (when they changed since the last time) and
    /// flushes, so the file on disk is a valid WAV (RF64 once the data passed the RIFF limit).
    pub fn checkpoint(&mut self) -> Result<(), WavError> {
        if self.data_bytes != self.header_bytes {
            let h = self.layout.header(self.data_bytes, self.data_bytes > self.rf64_above);
            self.inner.seek(SeekFrom::Start(0))?;
            self.inner.write_all(&h)?;
            self.inner.seek(SeekFrom::Start(self.layout.header_len() + self.data_bytes))?;
            self.header_bytes = self.data_bytes;
        }
        self.inner.flush()?;
        Ok(())
    }

    /// Pad byte if needed, final header and flush; returns the writer.
    pub fn finish(mut self) -> Result<W, WavError> {
        if self.data_bytes & 1 == 1 {
            self.inner.write_all(&[0])?;
        }
        self.checkpoint()?;
        Ok(self.inner)
    }
}

/// The shape of a WAV file as its header describes it, with the frames really on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavShape {
    /// Channels (`fmt ` chunk).
    pub channels: u16,
    /// Samples per second (`fmt ` chunk).
    pub sample_rate: u32,
    /// Bytes per frame (`fmt ` chunk).
    pub block_align: u16,
    /// How the samples are coded, when it is one this module writes.
    pub encoding: Option<Encoding>,
    /// Bytes before the first sample.
    pub header_len: u64,
    /// Whole frames after the header, as far as the file goes.
    pub frames: u64,
}

impl WavShape {
    /// The audio's length.
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.frames as f64 / f64::from(self.sample_rate))
    }
}

/// A parsed header: the shape plus where the size fields are.
#[derive(Debug, Clone, Copy)]
struct Parsed {
    shape: WavShape,
    /// Offset of a 28-byte `JUNK` or `ds64` chunk that is the first chunk (the RF64 slot).
    ds64_at: Option<usize>,
    /// Offset of the `fact` chunk.
    fact_at: Option<usize>,
    /// The data size the header gives (the `ds64` one for RF64), if it gives one.
    data_bytes: Option<u64>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads a RIFF/WAVE or RF64 header from the first bytes of a file of `file_len` bytes: the
/// `fmt ` chunk's format and the offset where the `data` chunk's samples begin.
fn parse(head: &[u8], file_len: u64) -> Result<Parsed, WavError> {
    let bad = |why: String| WavError::Malformed(why);
    let rf64 = match head.get(0..4) {
        Some(b"RIFF") => false,
        Some(b"RF64") => true,
        _ => return Err(bad(format!("not a RIFF/WAVE file ({file_len} bytes)"))),
    };
    if head.get(8..12) != Some(b"WAVE") {
        return Err(bad(format!("not a RIFF/WAVE file ({file_len} bytes)")));
    }
    let mut at = 12usize;
    let mut fmt: Option<(u16, u32, u16, Option<Encoding>)> = None;
    let (mut ds64_at, mut ds64_data, mut fact_at) = (None, None, None);
    loop {
        let (Some(id), Some(size)) = (head.get(at..at + 4), u32_at(head, at + 4)) else {
            return Err(bad(format!("no data chunk in the first {} bytes", head.len())));
        };
        let body = at + 8;
        match id {
            b"JUNK" | b"ds64" if at == 12 && size as usize == DS64_LEN => {
                ds64_at = Some(at);
                if id == b"ds64" {
                    ds64_data = u64_at(head, body + 8);
                }
            }
            b"fmt " => {
                let cut = || bad("fmt chunk cut short".into());
                let tag = u16_at(head, body).ok_or_else(cut)?;
                let channels = u16_at(head, body + 2).ok_or_else(cut)?;
                let sample_rate = u32_at(head, body + 4).ok_or_else(cut)?;
                let block_align = u16_at(head, body + 12).ok_or_else(cut)?;
                let bits = u16_at(head, body + 14).ok_or_else(cut)?;
                if channels == 0
                    || sample_rate == 0
                    || bits == 0
                    || u32::from(block_align) != u32::from(channels) * u32::from(bits.div_ceil(8))
                {
                    return Err(bad(format!(
                        "fmt chunk is inconsistent: {channels} channels, {sample_rate} Hz, {bits} bits, block align {block_align}"
                    )));
                }
                // WAVE_FORMAT_EXTENSIBLE carries the real tag at the start of its sub-format GUID.
                let tag = match tag {
                    0xFFFE if size >= 40 && head.get(body + 26..body + 40) == Some(&SUBTYPE_GUID_TAIL) => {
                        u16_at(head, body + 24).ok_or_else(cut)?
                    }
                    t => t,
                };
                let encoding = match (tag, bits) {
                    (1, 16) => Some(Encoding::Pcm16),
                    (7, 8) => Some(Encoding::MuLaw),
                    _ => None,
                };
                fmt = Some((channels, sample_rate, block_align, encoding));
            }
            b"fact" => fact_at = Some(at),
            b"data" => {
                let (channels, sample_rate, block_align, encoding) =
                    fmt.ok_or_else(|| bad("data chunk before the fmt chunk".into()))?;
                let header_len = body as u64;
                let frames = file_len.saturating_sub(header_len) / u64::from(block_align);
                let data_bytes = if rf64 && size == RF64_SIZE { ds64_data } else { Some(u64::from(size)) };
                let shape = WavShape { channels, sample_rate, block_align, encoding, header_len, frames };
                return Ok(Parsed { shape, ds64_at, fact_at, data_bytes });
            }
            _ => {}
        }
        // Chunks are padded to an even length (RIFF).
        at = body + size as usize + (size as usize & 1);
    }
}

fn read_head<R: Read + Seek>(file: &mut R) -> Result<(Vec<u8>, u64), WavError> {
    let len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let mut head = Vec::new();
    file.take(HEADER_SEARCH).read_to_end(&mut head)?;
    Ok((head, len))
}

/// What [`repair_header`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repaired {
    /// The file as its header now describes it.
    pub shape: WavShape,
    /// The length the file should have: header plus whole frames. The caller truncates a
    /// longer file (a trailing partial frame) to it.
    pub len: u64,
    /// Whether any header bytes were rewritten.
    pub changed: bool,
}

/// Makes the header of a WAV this module wrote describe the whole frames on disk (a recorder
/// killed between checkpoints leaves a header that lags its data): rewrites the RIFF/RF64 and
/// data sizes, turning the file into RF64 in place when the data passed 4 GiB (or back into
/// RIFF), and the `fact` sample count. Only bytes that differ are written, so repeating it
/// changes nothing. A file with a 44-byte header from before the RF64 slot cannot become RF64;
/// its sizes are capped at 4 GiB and the audio is kept. Truncation and fsync are the caller's.
pub fn repair_header<F: Read + Write + Seek>(file: &mut F) -> Result<Repaired, WavError> {
    repair_header_at(file, None)
}

fn repair_header_at<F: Read + Write + Seek>(file: &mut F, rf64_above: Option<u64>) -> Result<Repaired, WavError> {
    let (head, file_len) = read_head(file)?;
    let p = parse(&head, file_len)?;
    let shape = p.shape;
    let block = u64::from(shape.block_align);
    let limit = rf64_above.unwrap_or_else(|| riff_data_limit(shape.header_len));
    let mut frames = shape.frames;
    let rf64 = frames * block > limit && p.ds64_at.is_some();
    if !rf64 {
        frames = frames.min(riff_data_limit(shape.header_len) / block);
    }
    let data = frames * block;
    let riff_size = shape.header_len - 8 + data;
    let size32 = |v: u64| if rf64 { RF64_SIZE } else { v as u32 };
    let mut patches: Vec<(usize, Vec<u8>)> = vec![
        (0, if rf64 { b"RF64".to_vec() } else { b"RIFF".to_vec() }),
        (4, size32(riff_size).to_le_bytes().to_vec()),
        (shape.header_len as usize - 4, size32(data).to_le_bytes().to_vec()),
    ];
    if let Some(at) = p.ds64_at {
        patches.push((at, ds64_chunk(rf64.then_some((riff_size, data, frames))).to_vec()));
    }
    if let Some(at) = p.fact_at {
        patches.push((at + 8, size32(frames).to_le_bytes().to_vec()));
    }
    let mut changed = false;
    for (at, bytes) in patches {
        if head.get(at..at + bytes.len()) != Some(&bytes[..]) {
            file.seek(SeekFrom::Start(at as u64))?;
            file.write_all(&bytes)?;
            changed = true;
        }
    }
    Ok(Repaired { shape: WavShape { frames, ..shape }, len: shape.header_len + data, changed })
}

/// Reads the 16-bit PCM samples of a WAV (RIFF or RF64) in chunks, without loading the file.
#[derive(Debug)]
pub struct WavReader<R: Read + Seek> {
    inner: R,
    shape: WavShape,
    frames_left: u64,
    buf: Vec<u8>,
}

impl<R: Read + Seek> WavReader<R> {
    /// Parses the header and positions at the first sample. The frames read are those the
    /// header describes, or those on disk when the file is shorter.
    pub fn new(mut inner: R) -> Result<Self, WavError> {
        let (head, file_len) = read_head(&mut inner)?;
        let p = parse(&head, file_len)?;
        if p.shape.encoding != Some(Encoding::Pcm16) {
            return Err(WavError::NotPcm16(format!("{} bytes per frame", p.shape.block_align)));
        }
        let described = p.data_bytes.map_or(u64::MAX, |b| b / u64::from(p.shape.block_align));
        let shape = WavShape { frames: p.shape.frames.min(described), ..p.shape };
        inner.seek(SeekFrom::Start(shape.header_len))?;
        Ok(WavReader { inner, shape, frames_left: shape.frames, buf: Vec::new() })
    }

    pub fn shape(&self) -> &WavShape {
        &self.shape
    }

    /// Reads the next frames into `out` (interleaved, whole frames; `out.len()` should be a
    /// multiple of the channel count). Returns the frames read, 0 at the end.
    pub fn read_frames(&mut self, out: &mut [i16]) -> Result<usize, WavError> {
        let channels = usize::from(self.shape.channels);
        let frames = (out.len() / channels).min(usize::try_from(self.frames_left).unwrap_or(usize::MAX));
        self.buf.resize(frames * channels * 2, 0);
        self.inner.read_exact(&mut self.buf)?;
        for (s, b) in out.iter_mut().zip(self.buf.chunks_exact(2)) {
            *s = i16::from_le_bytes([b[0], b[1]]);
        }
        self.frames_left -= frames as u64;
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn read_all(bytes: Vec<u8>) -> (WavShape, Vec<i16>) {
        let mut r = WavReader::new(Cursor::new(bytes)).unwrap();
        let mut all = Vec::new();
        let mut buf = vec![0i16; 6 * r.shape().channels as usize];
        loop {
            let n = r.read_frames(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n * r.shape().channels as usize]);
        }
        (*r.shape(), all)
    }

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
        let fmt = 12 + 8 + DS64_LEN;
        assert_eq!(&bytes[fmt..fmt + 4], b"fmt ");
        assert_eq!(&bytes[fmt + 8..fmt + 10], &0xFFFEu16.to_le_bytes());
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

    #[test]
    fn ulaw_header_has_tag_7_and_a_fact_chunk_and_pads_odd_data() {
        let mut w = WavWriter::with_encoding(Cursor::new(Vec::new()), 1, 8000, Encoding::MuLaw).unwrap();
        w.write_interleaved(&[0, 1000, -1000]).unwrap();
        assert_eq!(w.len_bytes() % 2, 0, "odd data is padded");
        let len = w.len_bytes();
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(bytes.len() as u64, len);
        let p = parse(&bytes, len).unwrap();
        assert_eq!(p.shape.encoding, Some(Encoding::MuLaw));
        assert_eq!((p.shape.block_align, p.data_bytes), (1, Some(3)));
        let fact = p.fact_at.unwrap();
        assert_eq!(u32_at(&bytes, fact + 8), Some(3), "fact holds the sample count");
        let h = p.shape.header_len as usize;
        assert_eq!(&bytes[h..h + 3], &[0xff, g711::encode::ulaw(1000), g711::encode::ulaw(-1000)]);
        assert_eq!(u32_at(&bytes, 4), Some(len as u32 - 8), "the RIFF size counts the pad byte");
    }

    #[test]
    fn passing_the_threshold_turns_the_header_into_rf64_and_back() {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), 2, 8000).unwrap().with_rf64_threshold(40);
        w.write_interleaved(&[5; 20]).unwrap(); // 40 bytes: still RIFF
        w.checkpoint().unwrap();
        assert_eq!(&w.inner.get_ref()[0..4], b"RIFF");
        assert_eq!(&w.inner.get_ref()[12..16], b"JUNK");
        w.write_interleaved(&[6; 4]).unwrap(); // 48 bytes
        w.checkpoint().unwrap();
        let bytes = w.inner.get_ref().clone();
        assert_eq!(&bytes[0..4], b"RF64");
        assert_eq!(u32_at(&bytes, 4), Some(u32::MAX));
        assert_eq!(&bytes[12..16], b"ds64");
        let header_len = Layout { channels: 2, sample_rate: 8000, encoding: Encoding::Pcm16 }.header_len();
        assert_eq!(u64_at(&bytes, 20), Some(header_len - 8 + 48), "ds64 RIFF size");
        assert_eq!(u64_at(&bytes, 28), Some(48), "ds64 data size");
        assert_eq!(u64_at(&bytes, 36), Some(12), "ds64 sample count");
        assert_eq!(u32_at(&bytes, header_len as usize - 4), Some(u32::MAX));
        let (shape, samples) = read_all(bytes);
        assert_eq!(shape.frames, 12);
        assert_eq!(&samples[20..], &[6; 4]);
        w.truncate_frames(10).unwrap();
        let bytes = w.finish().unwrap().into_inner();
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(&bytes[12..16], b"JUNK");
        assert_eq!(hound::WavReader::new(Cursor::new(bytes)).unwrap().duration(), 10);
    }

    #[test]
    fn the_reader_stops_at_the_described_data_and_refuses_ulaw() {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), 1, 16000).unwrap();
        w.write_interleaved(&[1, 2, 3]).unwrap();
        let mut bytes = w.finish().unwrap().into_inner();
        bytes.extend_from_slice(b"LIST\x00\x00\x00\x00");
        let (shape, samples) = read_all(bytes);
        assert_eq!((shape.sample_rate, samples), (16000, vec![1, 2, 3]));
        let ulaw = WavWriter::with_encoding(Cursor::new(Vec::new()), 1, 8000, Encoding::MuLaw).unwrap();
        let bytes = ulaw.finish().unwrap().into_inner();
        assert!(matches!(WavReader::new(Cursor::new(bytes)), Err(WavError::NotPcm16(_))));
    }

    /// A file as a recorder killed after writing `frames` frames past its only checkpoint (at
    /// 0 frames) leaves it, with `partial` stray bytes.
    fn crashed(channels: u16, frames: usize, partial: usize) -> Vec<u8> {
        let mut w = WavWriter::new(Cursor::new(Vec::new()), channels, 8000).unwrap();
        w.checkpoint().unwrap();
        w.write_interleaved(&vec![9; frames * usize::from(channels)]).unwrap();
        let mut bytes = w.inner.into_inner();
        bytes.extend(std::iter::repeat_n(0x55, partial));
        bytes
    }

    #[test]
    fn repair_describes_the_frames_on_disk_and_is_idempotent() {
        let mut file = Cursor::new(crashed(3, 10, 5));
        let r = repair_header(&mut file).unwrap();
        assert!(r.changed);
        assert_eq!((r.shape.channels, r.shape.frames), (3, 10));
        assert_eq!(r.len, r.shape.header_len + 60);
        let mut bytes = file.into_inner();
        bytes.truncate(r.len as usize);
        let mut again = Cursor::new(bytes.clone());
        assert_eq!(repair_header(&mut again).unwrap(), Repaired { changed: false, ..r });
        assert_eq!(again.into_inner(), bytes);
        assert_eq!(hound::WavReader::new(Cursor::new(bytes)).unwrap().duration(), 10);
    }

    #[test]
    fn repair_turns_a_header_past_the_limit_into_rf64_in_place() {
        let mut file = Cursor::new(crashed(2, 25, 0));
        let r = repair_header_at(&mut file, Some(64)).unwrap();
        assert_eq!(r.shape.frames, 25);
        let bytes = file.into_inner();
        assert_eq!((&bytes[0..4], &bytes[12..16]), (&b"RF64"[..], &b"ds64"[..]));
        assert_eq!(u64_at(&bytes, 28), Some(100));
        let (shape, samples) = read_all(bytes.clone());
        assert_eq!((shape.frames, samples.len()), (25, 50));
        let mut again = Cursor::new(bytes);
        assert!(!repair_header_at(&mut again, Some(64)).unwrap().changed);
    }

    #[test]
    fn files_that_are_not_wavs_are_malformed() {
        let header_only = crashed(2, 0, 0);
        let cases: [&[u8]; 4] = [b"", b"RIFF\x00\x00", &header_only[..40], b"RIFF\x04\x00\x00\x00WAVEdata\x00\x00\x00\x00"];
        for bytes in cases {
            let mut file = Cursor::new(bytes.to_vec());
            assert!(matches!(repair_header(&mut file), Err(WavError::Malformed(_))), "{bytes:?}");
        }
    }
}
