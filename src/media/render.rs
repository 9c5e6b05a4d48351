//! Renders a finished call's audio for delivery: reads the per-stream capture WAV (16-bit PCM,
//! one channel per recorded stream, RIFF or RF64, any rate) in chunks, executes the output
//! layout — each output channel the saturating sum of its source spans, silence where it has
//! none — and encodes the configured format (WAV, µ-law WAV, MP3, Ogg Opus) into a file next to
//! the capture.
//!
//! Memory is bounded by the chunk size whatever the call's length; the work is blocking (file
//! I/O and codecs), so async callers run it with `spawn_blocking`. The output has exactly the
//! capture's frames (WAV and µ-law to the sample; MP3 and Opus as their decoders trim it, see
//! [`crate::media::encode`]). A format that cannot hold the call falls back to 16-bit PCM WAV
//! and says why in [`Rendered::note`]: µ-law is narrowband (a capture above 8 kHz keeps its
//! bandwidth as PCM), MP3 and Ogg Opus (mapping family 0) hold at most two channels. This module
//! does not decide the layout (the mapping does), does not move the result into the spool, and
//! does not delete the capture.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use super::encode::{Encode, EncodeError, WavEncoder};
use super::wav::{Encoding, WavError, WavReader};

/// Frames read, mixed and encoded at a time.
const CHUNK_FRAMES: usize = 4096;

/// An output format, as `[recording] format` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// 16-bit PCM WAV.
    #[default]
    Wav,
    /// 8-bit µ-law WAV (half the size of PCM; narrowband only).
    WavUlaw,
    /// MP3 (cargo feature `mp3`).
    Mp3,
    /// Ogg Opus (cargo feature `opus`).
    Opus,
}

impl Format {
    /// Every format, in the order the documentation lists them.
    pub const ALL: [Format; 4] = [Format::Wav, Format::WavUlaw, Format::Mp3, Format::Opus];

    /// The format a config value names: `wav`, `wav-ulaw`, `mp3` or `opus`.
    pub fn from_config(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.config_name() == name)
    }

    /// The config value naming this format.
    pub fn config_name(self) -> &'static str {
        match self {
            Format::Wav => "wav",
            Format::WavUlaw => "wav-ulaw",
            Format::Mp3 => "mp3",
            Format::Opus => "opus",
        }
    }

    /// The cargo feature this format needs, if any.
    pub fn cargo_feature(self) -> Option<&'static str> {
        match self {
            Format::Wav | Format::WavUlaw => None,
            Format::Mp3 => Some("mp3"),
            Format::Opus => Some("opus"),
        }
    }

    /// What the file of this format is.
    pub fn kind(self) -> AudioKind {
        match self {
            Format::Wav | Format::WavUlaw => AudioKind::WAV,
            Format::Mp3 => AudioKind::MP3,
            Format::Opus => AudioKind::OGG_OPUS,
        }
    }

    /// Whether this build can write the format (choosing one it cannot is a config error).
    pub fn available(self) -> bool {
        match self {
            Format::Wav | Format::WavUlaw => true,
            Format::Mp3 => cfg!(feature = "mp3"),
            Format::Opus => cfg!(feature = "opus"),
        }
    }
}

/// What a rendered file is, for the upload: Tethr's `audio.format`, the `data` part's
/// Content-Type, and the file extension always agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioKind {
    /// `audio.format` in Tethr's `info`: "wav", "mp3" or "opus".
    pub format_name: &'static str,
    /// Content-Type of the upload's `data` part.
    pub content_type: &'static str,
    /// File extension, without the dot.
    pub extension: &'static str,
}

impl AudioKind {
    /// WAV, PCM or µ-law alike.
    pub const WAV: AudioKind = AudioKind { format_name: "wav", content_type: "audio/wav", extension: "wav" };
    /// MP3.
    pub const MP3: AudioKind = AudioKind { format_name: "mp3", content_type: "audio/mp3", extension: "mp3" };
    /// Ogg Opus.
    pub const OGG_OPUS: AudioKind = AudioKind { format_name: "opus", content_type: "audio/ogg", extension: "opus" };
}

/// A stretch of one recorded stream routed into an output channel, in frames of the capture's
/// rate: frames `from_frame..to_frame` (to the end when `to_frame` is None).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpan {
    /// The recorded stream: the capture's channel index.
    pub stream: usize,
    /// First frame.
    pub from_frame: u64,
    /// Frame after the last, or None for the end of the recording.
    pub to_frame: Option<u64>,
}

impl FrameSpan {
    /// A span given in milliseconds since the start of the recording, at `sample_rate`.
    pub fn from_ms(stream: usize, from_ms: u64, to_ms: Option<u64>, sample_rate: u32) -> FrameSpan {
        let frames = |ms: u64| ms * u64::from(sample_rate) / 1000;
        FrameSpan { stream, from_frame: frames(from_ms), to_frame: to_ms.map(frames) }
    }
}

/// What [`render`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The file written: the `out` given to [`render`] plus `.` and the kind's extension.
    pub path: PathBuf,
    /// Its format, Content-Type and extension.
    pub kind: AudioKind,
    /// Output channels (the layout's).
    pub channels: u16,
    /// The capture's rate, which the output keeps (MP3 and Opus decoders may report another).
    pub sample_rate: u32,
    /// The output's length in frames at `sample_rate`: the capture's.
    pub frames: u64,
    /// Why the file is not in the format asked for, for `metaData.gateway.notes`.
    pub note: Option<String>,
}

/// Why a recording could not be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The capture is missing or is not a 16-bit PCM WAV.
    #[error("capture {}: {source}", path.display())]
    Capture {
        /// The capture file.
        path: PathBuf,
        /// What was wrong with it.
        source: WavError,
    },
    /// The layout has no output channel, or routes a stream the capture does not have.
    #[error("layout: {0}")]
    Layout(String),
    /// This build does not have the format's encoder (its cargo feature is off).
    #[error("output format {} needs the cargo feature {}", .0.config_name(), .0.cargo_feature().unwrap_or_default())]
    Unavailable(Format),
    /// The encoder failed.
    #[error("encoding: {0}")]
    Encode(#[from] EncodeError),
    /// Creating, syncing or renaming the output failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RenderError {
    let path = path.to_path_buf();
    move |source| RenderError::Io { op, path, source }
}

/// Whether the layout is the capture itself: one output channel per stream, in order, each its
/// stream from start to end. With [`Format::Wav`] the capture then already is the output, and
/// the caller can rename it instead of calling [`render`].
pub fn is_identity(layout: &[Vec<FrameSpan>], capture_channels: u16) -> bool {
    layout.len() == usize::from(capture_channels)
        && layout
            .iter()
            .enumerate()
            .all(|(c, spans)| spans[..] == [FrameSpan { stream: c, from_frame: 0, to_frame: None }])
}

/// Executes the layout on one chunk: `input` holds `frames` interleaved frames of
/// `in_channels` starting at frame `first`; `out` receives them mixed, interleaved over the
/// layout's channels. `acc` is scratch.
fn mix(layout: &[Vec<FrameSpan>], in_channels: usize, first: u64, input: &[i16], acc: &mut Vec<i32>, out: &mut Vec<i16>) {
    let frames = input.len() / in_channels;
    let out_channels = layout.len();
    acc.clear();
    acc.resize(frames * out_channels, 0);
    let end = first + frames as u64;
    for (c, spans) in layout.iter().enumerate() {
        for span in spans {
            let lo = span.from_frame.max(first);
            let hi = span.to_frame.unwrap_or(u64::MAX).min(end);
            if lo >= hi {
                continue;
            }
            // Both within this chunk's `frames`, which is a usize.
            let (lo, hi) = ((lo - first) as usize, (hi - first) as usize);
            let src = input[lo * in_channels..hi * in_channels].iter().skip(span.stream).step_by(in_channels);
            let dst = acc[lo * out_channels..hi * out_channels].iter_mut().skip(c).step_by(out_channels);
            for (d, s) in dst.zip(src) {
                *d += i32::from(*s);
            }
        }
    }
    out.clear();
    out.extend(acc.iter().map(|&s| s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16));
}

/// The encoding actually used for `format` with `channels` at `sample_rate`, and why it is not
/// the one asked for.
fn choose(format: Format, channels: u16, sample_rate: u32) -> (Format, Option<String>) {
    match format {
        Format::WavUlaw if sample_rate > 8000 => (
            Format::Wav,
            Some(format!(
                "wav-ulaw was configured, but the call was recorded at {sample_rate} Hz and µ-law is narrowband (8 kHz): \
                 written as 16-bit PCM WAV to keep the wideband audio"
            )),
        ),
        Format::Mp3 | Format::Opus if channels > 2 => (
            Format::Wav,
            Some(format!(
                "{} was configured, but it holds at most 2 channels and this recording has {channels}: written as 16-bit PCM WAV",
                format.config_name()
            )),
        ),
        f => (f, None),
    }
}

fn encoder(format: Format, file: File, channels: u16, sample_rate: u32) -> Result<Box<dyn Encode>, RenderError> {
    Ok(match format {
        Format::Wav => Box::new(WavEncoder::new(file, channels, sample_rate, Encoding::Pcm16)?),
        Format::WavUlaw => Box::new(WavEncoder::new(file, channels, sample_rate, Encoding::MuLaw)?),
        #[cfg(feature = "mp3")]
        Format::Mp3 => Box::new(super::encode::mp3::Mp3Encoder::new(file, channels, sample_rate)?),
        #[cfg(feature = "opus")]
        Format::Opus => Box::new(super::encode::opus::OggOpusEncoder::new(file, channels, sample_rate)?),
        #[cfg(not(all(feature = "mp3", feature = "opus")))]
        f => return Err(RenderError::Unavailable(f)),
    })
}

/// Renders `capture` through `layout` (one entry per output channel, its source spans) into
/// `format`, at `out` + `.` + the format's extension (`out` is a path without extension, e.g.
/// `active/<name>/audio`). The file is written as `<that>.part`, fsynced and renamed, so the
/// final name never shows a partial file; the directory's fsync is the caller's (the spool's
/// `finish` does it). Blocking.
pub fn render(capture: &Path, layout: &[Vec<FrameSpan>], format: Format, out: &Path) -> Result<Rendered, RenderError> {
    if !format.available() {
        return Err(RenderError::Unavailable(format));
    }
    let capture_err = |source| RenderError::Capture { path: capture.to_path_buf(), source };
    let file = File::open(capture).map_err(|e| capture_err(WavError::Io(e)))?;
    let mut reader = WavReader::new(BufReader::with_capacity(64 * 1024, file)).map_err(capture_err)?;
    let shape = *reader.shape();
    let in_channels = usize::from(shape.channels);
    let channels = u16::try_from(layout.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| RenderError::Layout(format!("{} output channels", layout.len())))?;
    if let Some(span) = layout.iter().flatten().find(|s| s.stream >= in_channels) {
        return Err(RenderError::Layout(format!(
            "a span routes stream {} but the capture has {in_channels} streams",
            span.stream
        )));
    }
    let (used, note) = choose(format, channels, shape.sample_rate);
    let kind = used.kind();
    let mut path = OsString::from(out.as_os_str());
    path.push(".");
    path.push(kind.extension);
    let path = PathBuf::from(path);
    let mut part = path.clone().into_os_string();
    part.push(".part");
    let part = PathBuf::from(part);
    if let Err(e) = encode_to(capture, &mut reader, layout, used, &part, channels) {
        // Best effort: a partial file is of no use to anyone.
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, &path).map_err(io_err("rename", &part))?;
    if let Some(note) = &note {
        tracing::info!(format = format.config_name(), written = kind.format_name, reason = %note, "recording written in a fallback format");
    }
    tracing::debug!(path = %path.display(), format = kind.format_name, frames = shape.frames, channels, "recording rendered");
    Ok(Rendered { path, kind, channels, sample_rate: shape.sample_rate, frames: shape.frames, note })
}

/// Reads, mixes and encodes the whole capture into `part`, fsynced.
fn encode_to(
    capture: &Path,
    reader: &mut WavReader<BufReader<File>>,
    layout: &[Vec<FrameSpan>],
    format: Format,
    part: &Path,
    channels: u16,
) -> Result<(), RenderError> {
    let file = File::create(part).map_err(io_err("create", part))?;
    let mut enc = encoder(format, file, channels, reader.shape().sample_rate)?;
    let in_channels = usize::from(reader.shape().channels);
    let mut input = vec![0i16; CHUNK_FRAMES * in_channels];
    let (mut acc, mut mixed) = (Vec::new(), Vec::new());
    let mut first = 0u64;
    loop {
        let frames = reader
            .read_frames(&mut input)
            .map_err(|source| RenderError::Capture { path: capture.to_path_buf(), source })?;
        if frames == 0 {
            break;
        }
        mix(layout, in_channels, first, &input[..frames * in_channels], &mut acc, &mut mixed);
        enc.write(&mixed)?;
        first += frames as u64;
    }
    let file = enc.finish()?;
    file.sync_all().map_err(io_err("fsync", part))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(stream: usize, from_frame: u64, to_frame: Option<u64>) -> FrameSpan {
        FrameSpan { stream, from_frame, to_frame }
    }

    fn run_mix(layout: &[Vec<FrameSpan>], in_channels: usize, first: u64, input: &[i16]) -> Vec<i16> {
        let (mut acc, mut out) = (Vec::new(), Vec::new());
        mix(layout, in_channels, first, input, &mut acc, &mut out);
        out
    }

    #[test]
    fn spans_route_streams_within_their_frames() {
        // Two streams, frames 10..14: stream 0 = 1, 2, 3, 4; stream 1 = 10, 20, 30, 40.
        let input = [1, 10, 2, 20, 3, 30, 4, 40];
        let layout = vec![vec![span(1, 0, None)], vec![span(0, 12, None), span(1, 0, Some(11))], vec![]];
        let out = run_mix(&layout, 2, 10, &input);
        assert_eq!(out, vec![10, 10, 0, 20, 0, 0, 30, 3, 0, 40, 4, 0]);
    }

    #[test]
    fn sums_saturate_at_full_scale() {
        let input = [30000, 30000, -30000, -30000, 100, -50];
        let layout = vec![vec![span(0, 0, None), span(1, 0, None)]];
        assert_eq!(run_mix(&layout, 2, 0, &input), vec![i16::MAX, i16::MIN, 50]);
    }

    #[test]
    fn empty_and_inverted_spans_contribute_nothing() {
        let layout = vec![vec![span(0, 5, Some(5)), span(0, 9, Some(3))]];
        assert_eq!(run_mix(&layout, 1, 0, &[7; 12]), vec![0; 12]);
    }

    #[test]
    fn identity_is_each_stream_whole_in_order() {
        let whole = |s| vec![span(s, 0, None)];
        assert!(is_identity(&[whole(0), whole(1)], 2));
        assert!(!is_identity(&[whole(1), whole(0)], 2));
        assert!(!is_identity(&[whole(0)], 2));
        assert!(!is_identity(&[whole(0), vec![span(1, 8000, None)]], 2));
        assert!(!is_identity(&[whole(0), vec![span(1, 0, None), span(0, 0, None)]], 2));
    }

    #[test]
    fn config_names_round_trip_and_only_optional_formats_need_features() {
        for f in Format::ALL {
            assert_eq!(Format::from_config(f.config_name()), Some(f));
            assert_eq!(f.available(), f.cargo_feature().is_none() || cfg!(feature = "mp3") && f == Format::Mp3 || cfg!(feature = "opus") && f == Format::Opus);
        }
        assert_eq!(Format::from_config("ulaw"), None);
    }

    #[test]
    fn formats_that_cannot_hold_the_call_fall_back_to_pcm_wav() {
        assert_eq!(choose(Format::WavUlaw, 2, 8000), (Format::WavUlaw, None));
        let (f, note) = choose(Format::WavUlaw, 2, 16000);
        assert_eq!(f, Format::Wav);
        assert!(note.unwrap().contains("16000 Hz"));
        assert_eq!(choose(Format::Mp3, 3, 8000).0, Format::Wav);
        assert_eq!(choose(Format::Opus, 2, 48000), (Format::Opus, None));
    }

    #[test]
    fn ms_spans_convert_at_the_capture_rate() {
        assert_eq!(FrameSpan::from_ms(1, 1500, Some(2001), 16000), span(1, 24000, Some(32016)));
    }
}
