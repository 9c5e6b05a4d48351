//! Output formats, read back by decoders this project did not write: a capture with a distinct
//! tone per stream is rendered through a layout, decoded with sox, ffmpeg or opusdec, and each
//! output channel is checked per 250 ms window (Goertzel) for the tones that belong there,
//! silence where no source is routed, and the length. Needs `sox`, `libsox-fmt-all`, `ffmpeg`
//! and (for the `opus` feature) `opus-tools` on the PATH.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;

use siprec_gateway::media::render::{self, AudioKind, Format, FrameSpan, Rendered};
use siprec_gateway::media::wav::{WavReader, WavWriter};

/// Analysis window.
const WINDOW_S: f64 = 0.25;
/// Tone amplitude in the captures.
const AMPLITUDE: f64 = 8000.0;
/// How far a decoded tone's start may be from the capture's: three samples at 8 kHz, less than
/// the 0.5 ms delay of the resampler Opus uses at 44.1 kHz.
const ONSET_TOLERANCE_S: f64 = 0.0004;

/// One recorded stream of a test capture: a tone at `freq` while `on` (seconds).
#[derive(Clone, Copy)]
struct Stream {
    freq: f64,
    on: (f64, f64),
}

fn tone(freq: f64) -> Stream {
    Stream { freq, on: (0.0, f64::INFINITY) }
}

/// Writes a capture of `seconds` at `rate` with one channel per stream, in chunks.
fn capture(dir: &Path, rate: u32, seconds: f64, streams: &[Stream]) -> PathBuf {
    let path = dir.join("capture.wav");
    let file = BufWriter::new(File::create(&path).unwrap());
    let mut w = WavWriter::new(file, streams.len() as u16, rate).unwrap();
    write_tones(&mut w, rate, seconds, streams);
    w.finish().unwrap();
    path
}

fn write_tones<W: std::io::Write + std::io::Seek>(w: &mut WavWriter<W>, rate: u32, seconds: f64, streams: &[Stream]) {
    let frames = (seconds * f64::from(rate)).round() as u64;
    let mut chunk = Vec::new();
    for n in 0..frames {
        let t = n as f64 / f64::from(rate);
        for s in streams {
            let on = t >= s.on.0 && t < s.on.1;
            let v = if on { AMPLITUDE * (2.0 * std::f64::consts::PI * s.freq * t).sin() } else { 0.0 };
            chunk.push(v.round() as i16);
        }
        if chunk.len() >= 8192 {
            w.write_interleaved(&chunk).unwrap();
            chunk.clear();
        }
    }
    w.write_interleaved(&chunk).unwrap();
}

fn whole(stream: usize) -> Vec<FrameSpan> {
    vec![FrameSpan { stream, from_frame: 0, to_frame: None }]
}

/// Runs a tool and panics with its stderr (and how to install it) when it fails.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}): install sox, libsox-fmt-all, ffmpeg and opus-tools"));
    assert!(out.status.success(), "{tool} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Audio decoded by an outside tool.
struct Decoded {
    channels: usize,
    rate: u32,
    samples: Vec<i16>,
}

impl Decoded {
    fn frames(&self) -> usize {
        self.samples.len() / self.channels
    }

    fn channel(&self, c: usize) -> Vec<i16> {
        self.samples.iter().skip(c).step_by(self.channels).copied().collect()
    }
}

fn read_pcm_wav(path: &Path) -> Decoded {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    assert_eq!(spec.bits_per_sample, 16);
    let samples = r.samples::<i16>().map(Result::unwrap).collect();
    Decoded { channels: usize::from(spec.channels), rate: spec.sample_rate, samples }
}

fn decode_with_sox(path: &Path) -> Decoded {
    let out = path.with_extension("sox.wav");
    run("sox", &[path.to_str().unwrap(), "-e", "signed-integer", "-b", "16", out.to_str().unwrap()]);
    read_pcm_wav(&out)
}

fn decode_with_ffmpeg(path: &Path) -> Decoded {
    let out = path.with_extension("ffmpeg.wav");
    run("ffmpeg", &["-v", "error", "-y", "-i", path.to_str().unwrap(), "-c:a", "pcm_s16le", out.to_str().unwrap()]);
    read_pcm_wav(&out)
}

/// Fraction of a window's energy at `freq` (Goertzel; 1.0 for a pure tone on a bin).
fn tone_fraction(x: &[i16], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2, mut energy) = (0.0f64, 0.0f64, 0.0f64);
    for &v in x {
        let v = f64::from(v);
        let s0 = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
        energy += v * v;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    if energy == 0.0 { 0.0 } else { power / (x.len() as f64 / 2.0 * energy) }
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// Checks one decoded channel window by window: `expect(t)` gives the tones that must be there
/// in the window starting at `t` (empty = silence), or None to skip the window (next to a
/// change, where a lossy codec's frames straddle both sides).
fn check_channel(d: &Decoded, c: usize, all_tones: &[f64], expect: impl Fn(f64) -> Option<Vec<f64>>) {
    let x = d.channel(c);
    let n = (WINDOW_S * f64::from(d.rate)) as usize;
    let mut checked = 0;
    for (i, w) in x.chunks_exact(n).enumerate() {
        let t = i as f64 * WINDOW_S;
        let Some(want) = expect(t) else { continue };
        checked += 1;
        if want.is_empty() {
            assert!(rms(w) < 60.0, "channel {c} at {t} s should be silent, rms {}", rms(w));
            continue;
        }
        for &f in all_tones {
            let frac = tone_fraction(w, d.rate, f);
            // Two tones summed share the energy half and half.
            let floor = 0.6 / want.len() as f64 - 0.1;
            if want.contains(&f) {
                assert!(frac > floor, "channel {c} at {t} s: {f} Hz only {frac:.3} of the energy");
            } else {
                assert!(frac < 0.02, "channel {c} at {t} s: {f} Hz leaks in ({frac:.3})");
            }
        }
    }
    assert!(checked > 0, "no window checked on channel {c}");
}

/// Every window: `tones` throughout.
fn always(tones: &[f64]) -> impl Fn(f64) -> Option<Vec<f64>> + '_ {
    move |_| Some(tones.to_vec())
}

/// Windows away from `change` (one window each side skipped when `margin`): `before` before
/// it, `after` from it.
fn switch(change: f64, margin: bool, before: Vec<f64>, after: Vec<f64>) -> impl Fn(f64) -> Option<Vec<f64>> {
    move |t| {
        let skip = if margin { WINDOW_S } else { 0.0 };
        if t + WINDOW_S <= change - skip + 1e-9 {
            Some(before.clone())
        } else if t >= change + skip - 1e-9 {
            Some(after.clone())
        } else {
            None
        }
    }
}

/// When a channel's tone starts, in seconds: the first sample past half the capture's
/// amplitude.
fn onset(d: &Decoded, c: usize) -> f64 {
    let x = d.channel(c);
    let first = x.iter().position(|&v| f64::from(v).abs() > AMPLITUDE / 2.0).expect("the tone starts");
    first as f64 / f64::from(d.rate)
}

fn soxi(path: &Path, flag: &str) -> String {
    run("soxi", &[flag, path.to_str().unwrap()])
}

fn ffprobe_stream(path: &Path, entries: &str) -> String {
    run("ffprobe", &["-v", "error", "-show_entries", &format!("stream={entries}"), "-of", "default=nw=1:nk=1", path.to_str().unwrap()])
}

fn render_to(dir: &Path, capture: &Path, layout: &[Vec<FrameSpan>], format: Format) -> Rendered {
    render::render(capture, layout, format, &dir.join("audio")).unwrap()
}

#[test]
fn pcm_wav_keeps_each_stream_in_its_channel_to_the_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let cap = capture(tmp.path(), 8000, 3.0, &[tone(500.0), tone(1000.0)]);
    let layout = [whole(0), whole(1)];
    assert!(render::is_identity(&layout, 2));
    let r = render_to(tmp.path(), &cap, &layout, Format::Wav);
    assert_eq!((r.kind, r.frames, r.channels, r.note.as_deref()), (AudioKind::WAV, 24000, 2, None));
    assert_eq!(r.path, tmp.path().join("audio.wav"));
    assert!(!tmp.path().join("audio.wav.part").exists());
    assert_eq!(soxi(&r.path, "-s"), "24000");
    let d = decode_with_sox(&r.path);
    assert_eq!((d.channels, d.rate, d.frames()), (2, 8000, 24000));
    check_channel(&d, 0, &[500.0, 1000.0], always(&[500.0]));
    check_channel(&d, 1, &[500.0, 1000.0], always(&[1000.0]));
    // The identity layout reproduces the capture exactly.
    let mut original = WavReader::new(File::open(&cap).unwrap()).unwrap();
    let mut samples = vec![0i16; 48000];
    assert_eq!(original.read_frames(&mut samples).unwrap(), 24000);
    assert_eq!(d.samples, samples);
}

#[test]
fn spans_switch_sources_mid_call_and_unrouted_channels_are_silent() {
    let tmp = tempfile::tempdir().unwrap();
    let tones = [440.0, 760.0, 1240.0];
    // Three streams at 16 kHz; the third party only speaks from 1.5 s.
    let streams = [tone(440.0), tone(760.0), Stream { freq: 1240.0, on: (1.5, f64::INFINITY) }];
    let cap = capture(tmp.path(), 16000, 4.0, &streams);
    let layout = vec![
        // Stream 0 routed only from 1 s (a span that starts mid-call).
        vec![FrameSpan { stream: 0, from_frame: 16000, to_frame: None }],
        // Stream 1 until 2 s, then stream 2 (a transfer).
        vec![
            FrameSpan { stream: 1, from_frame: 0, to_frame: Some(32000) },
            FrameSpan { stream: 2, from_frame: 32000, to_frame: None },
        ],
        // A channel nothing is routed to.
        vec![],
    ];
    assert!(!render::is_identity(&layout, 3));
    let r = render_to(tmp.path(), &cap, &layout, Format::Wav);
    assert_eq!((r.frames, r.channels, r.sample_rate), (64000, 3, 16000));
    for d in [decode_with_ffmpeg(&r.path), decode_with_sox(&r.path)] {
        assert_eq!((d.channels, d.rate, d.frames()), (3, 16000, 64000));
        check_channel(&d, 0, &tones, switch(1.0, false, vec![], vec![440.0]));
        assert!((onset(&d, 0) - 1.0).abs() < ONSET_TOLERANCE_S, "span starts at {} s", onset(&d, 0));
        check_channel(&d, 1, &tones, switch(2.0, false, vec![760.0], vec![1240.0]));
        check_channel(&d, 2, &tones, always(&[]));
    }
}

#[test]
fn two_parties_mixed_into_one_channel_are_both_heard_and_saturate() {
    let tmp = tempfile::tempdir().unwrap();
    let cap = capture(tmp.path(), 8000, 2.0, &[tone(600.0), tone(1400.0)]);
    let mixed = vec![whole(0).remove(0), whole(1).remove(0)];
    let r = render_to(tmp.path(), &cap, &[mixed], Format::Wav);
    let d = decode_with_sox(&r.path);
    assert_eq!((d.channels, d.frames()), (1, 16000));
    check_channel(&d, 0, &[600.0, 1400.0], always(&[600.0, 1400.0]));

    // Two loud streams of the same sign: the sum clips at full scale instead of wrapping.
    let loud = tmp.path().join("loud");
    std::fs::create_dir(&loud).unwrap();
    let path = loud.join("capture.wav");
    let mut w = WavWriter::new(BufWriter::new(File::create(&path).unwrap()), 2, 8000).unwrap();
    let frames: Vec<i16> = (0..800).flat_map(|i| if i < 400 { [25000, 20000] } else { [-25000, -20000] }).collect();
    w.write_interleaved(&frames).unwrap();
    w.finish().unwrap();
    let r = render_to(&loud, &path, &[vec![FrameSpan { stream: 0, from_frame: 0, to_frame: None }, FrameSpan { stream: 1, from_frame: 0, to_frame: None }]], Format::Wav);
    let d = decode_with_sox(&r.path);
    assert!(d.samples[..400].iter().all(|&s| s == i16::MAX));
    assert!(d.samples[400..].iter().all(|&s| s == i16::MIN));
}

#[test]
fn ulaw_wav_is_mu_law_with_the_tones_and_the_length() {
    let tmp = tempfile::tempdir().unwrap();
    let cap = capture(tmp.path(), 8000, 2.0, &[tone(500.0), tone(1000.0)]);
    let r = render_to(tmp.path(), &cap, &[whole(0), whole(1)], Format::WavUlaw);
    assert_eq!((r.kind.format_name, r.kind.content_type, r.note.as_deref()), ("wav", "audio/wav", None));
    assert_eq!(soxi(&r.path, "-e"), "u-law");
    assert_eq!(soxi(&r.path, "-b"), "8");
    assert_eq!(soxi(&r.path, "-s"), "16000");
    assert_eq!(ffprobe_stream(&r.path, "codec_name"), "pcm_mulaw");
    let pcm = std::fs::metadata(&cap).unwrap().len();
    let ulaw = std::fs::metadata(&r.path).unwrap().len();
    assert!(ulaw * 2 < pcm + 200, "µ-law {ulaw} bytes, PCM {pcm}");
    for d in [decode_with_sox(&r.path), decode_with_ffmpeg(&r.path)] {
        assert_eq!((d.channels, d.rate, d.frames()), (2, 8000, 16000));
        check_channel(&d, 0, &[500.0, 1000.0], always(&[500.0]));
        check_channel(&d, 1, &[500.0, 1000.0], always(&[1000.0]));
    }
}

#[test]
fn ulaw_wav_with_three_channels_and_an_odd_length_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let tones = [440.0, 760.0, 1240.0];
    let cap = capture(tmp.path(), 8000, 1.000125, &[tone(440.0), tone(760.0), tone(1240.0)]);
    let r = render_to(tmp.path(), &cap, &[whole(0), whole(1), whole(2)], Format::WavUlaw);
    assert_eq!(r.frames, 8001);
    assert_eq!(soxi(&r.path, "-e"), "u-law");
    assert_eq!(soxi(&r.path, "-s"), "8001");
    for d in [decode_with_sox(&r.path), decode_with_ffmpeg(&r.path)] {
        assert_eq!((d.channels, d.frames()), (3, 8001));
        for (c, &f) in tones.iter().enumerate() {
            check_channel(&d, c, &tones, always(&[f]));
        }
    }
}

#[test]
fn ulaw_of_a_wideband_call_falls_back_to_pcm_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let cap = capture(tmp.path(), 16000, 1.0, &[tone(500.0)]);
    let r = render_to(tmp.path(), &cap, &[whole(0)], Format::WavUlaw);
    assert_eq!(r.kind, AudioKind::WAV);
    assert!(r.note.as_deref().unwrap().contains("16000 Hz"), "{:?}", r.note);
    assert_eq!(soxi(&r.path, "-e"), "Signed Integer PCM");
    assert_eq!(soxi(&r.path, "-r"), "16000");
}

#[test]
fn rf64_files_read_with_sox_and_ffprobe_and_render() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("capture.wav");
    let file = BufWriter::new(File::create(&path).unwrap());
    // RF64 from 64 KiB of data instead of 4 GiB.
    let mut w = WavWriter::new(file, 2, 8000).unwrap().with_rf64_threshold(64 * 1024);
    write_tones(&mut w, 8000, 3.0, &[tone(500.0), tone(1000.0)]);
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!((&bytes[0..4], &bytes[12..16]), (&b"RF64"[..], &b"ds64"[..]));
    assert_eq!(soxi(&path, "-s"), "24000");
    assert_eq!(soxi(&path, "-c"), "2");
    assert_eq!(ffprobe_stream(&path, "codec_name,channels,sample_rate,duration_ts"), "pcm_s16le\n8000\n2\n24000");
    let d = decode_with_sox(&path);
    check_channel(&d, 0, &[500.0, 1000.0], always(&[500.0]));
    // An RF64 capture renders like any other.
    let r = render_to(tmp.path(), &path, &[whole(1), whole(0)], Format::Wav);
    let d = decode_with_ffmpeg(&r.path);
    assert_eq!(d.frames(), 24000);
    check_channel(&d, 0, &[500.0, 1000.0], always(&[1000.0]));
}

#[test]
fn bad_layouts_and_missing_captures_are_errors_not_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cap = capture(tmp.path(), 8000, 0.5, &[tone(500.0)]);
    let err = render::render(&cap, &[whole(1)], Format::Wav, &tmp.path().join("audio")).unwrap_err();
    assert!(matches!(err, render::RenderError::Layout(_)), "{err}");
    let err = render::render(&cap, &[], Format::Wav, &tmp.path().join("audio")).unwrap_err();
    assert!(matches!(err, render::RenderError::Layout(_)), "{err}");
    let err = render::render(&tmp.path().join("none.wav"), &[whole(0)], Format::Wav, &tmp.path().join("audio")).unwrap_err();
    assert!(matches!(err, render::RenderError::Capture { .. }), "{err}");
    assert!(!tmp.path().join("audio.wav").exists());
    assert!(!tmp.path().join("audio.wav.part").exists());
}

#[cfg(not(all(feature = "mp3", feature = "opus")))]
#[test]
fn formats_without_their_feature_are_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    let cap = capture(tmp.path(), 8000, 0.5, &[tone(500.0)]);
    for f in [Format::Mp3, Format::Opus].into_iter().filter(|f| !f.available()) {
        let err = render::render(&cap, &[whole(0)], f, &tmp.path().join("audio")).unwrap_err();
        assert!(matches!(err, render::RenderError::Unavailable(g) if g == f), "{err}");
    }
}

#[cfg(feature = "mp3")]
mod mp3 {
    use super::*;

    #[test]
    fn mp3_decodes_to_the_capture_length_with_each_tone_in_its_channel() {
        for rate in [8000u32, 16000] {
            let tmp = tempfile::tempdir().unwrap();
            let streams = [tone(500.0), Stream { freq: 1000.0, on: (1.5, f64::INFINITY) }];
            let cap = capture(tmp.path(), rate, 4.0, &streams);
            let r = render_to(tmp.path(), &cap, &[whole(0), whole(1)], Format::Mp3);
            assert_eq!(r.kind, AudioKind::MP3);
            assert_eq!(r.path, tmp.path().join("audio.mp3"));
            assert_eq!(ffprobe_stream(&r.path, "codec_name,sample_rate,channels"), format!("mp3\n{rate}\n2"));
            let d = decode_with_ffmpeg(&r.path);
            assert_eq!((d.channels, d.rate), (2, rate));
            // ffmpeg trims LAME's delay and padding from the Info frame: exact.
            assert_eq!(d.frames() as u64, r.frames, "{rate} Hz");
            check_channel(&d, 0, &[500.0, 1000.0], always(&[500.0]));
            check_channel(&d, 1, &[500.0, 1000.0], switch(1.5, true, vec![], vec![1000.0]));
            // The encoder delay is trimmed: the second party starts where it did.
            assert!((onset(&d, 1) - 1.5).abs() < ONSET_TOLERANCE_S, "onset at {} s ({rate} Hz)", onset(&d, 1));
        }
    }

    #[test]
    fn mp3_length_is_exact_at_every_mp3_rate_mono_and_stereo() {
        for rate in [8000u32, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000] {
            for channels in [1usize, 2] {
                let tmp = tempfile::tempdir().unwrap();
                let cap = capture(tmp.path(), rate, 0.7, &vec![tone(500.0); channels]);
                let layout: Vec<_> = (0..channels).map(whole).collect();
                let r = render_to(tmp.path(), &cap, &layout, Format::Mp3);
                let d = decode_with_ffmpeg(&r.path);
                assert_eq!((d.channels, d.rate, d.frames() as u64), (channels, rate, r.frames), "{channels} channels at {rate} Hz");
            }
        }
    }

    #[test]
    fn mono_mp3_of_both_parties_mixed_keeps_both_and_the_length() {
        let tmp = tempfile::tempdir().unwrap();
        let cap = capture(tmp.path(), 8000, 2.0, &[tone(600.0), tone(1400.0)]);
        let mixed = vec![whole(0).remove(0), whole(1).remove(0)];
        let r = render_to(tmp.path(), &cap, &[mixed], Format::Mp3);
        let d = decode_with_ffmpeg(&r.path);
        assert_eq!((d.channels, d.rate, d.frames()), (1, 8000, 16000));
        check_channel(&d, 0, &[600.0, 1400.0], always(&[600.0, 1400.0]));
    }

    #[test]
    fn mp3_of_more_than_two_channels_falls_back_to_wav() {
        let tmp = tempfile::tempdir().unwrap();
        let cap = capture(tmp.path(), 8000, 0.5, &[tone(500.0), tone(700.0), tone(900.0)]);
        let r = render_to(tmp.path(), &cap, &[whole(0), whole(1), whole(2)], Format::Mp3);
        assert_eq!(r.kind, AudioKind::WAV);
        assert!(r.note.unwrap().contains("at most 2 channels"));
    }
}

#[cfg(feature = "opus")]
mod opus {
    use super::*;

    /// Last granule position and the pre-skip, read from the Ogg pages directly.
    fn granule_and_pre_skip(bytes: &[u8]) -> (u64, u64) {
        let mut at = 0;
        let mut last = 0;
        while at + 27 <= bytes.len() {
            assert_eq!(&bytes[at..at + 4], b"OggS");
            last = u64::from_le_bytes(bytes[at + 6..at + 14].try_into().unwrap());
            let segments = usize::from(bytes[at + 26]);
            let body: usize = bytes[at + 27..at + 27 + segments].iter().map(|&s| usize::from(s)).sum();
            at += 27 + segments + body;
        }
        let head = bytes.windows(8).position(|w| w == b"OpusHead").unwrap();
        (last, u64::from(u16::from_le_bytes([bytes[head + 10], bytes[head + 11]])))
    }

    fn decode_with_opusdec(path: &Path, rate: u32) -> Decoded {
        let out = path.with_extension("opusdec.wav");
        run("opusdec", &["--quiet", "--rate", &rate.to_string(), path.to_str().unwrap(), out.to_str().unwrap()]);
        read_pcm_wav(&out)
    }

    #[test]
    fn ogg_opus_ends_on_the_capture_length_with_each_tone_in_its_channel() {
        let tmp = tempfile::tempdir().unwrap();
        let streams = [tone(500.0), Stream { freq: 1000.0, on: (1.0, f64::INFINITY) }];
        let cap = capture(tmp.path(), 8000, 3.5, &streams);
        let r = render_to(tmp.path(), &cap, &[whole(0), whole(1)], Format::Opus);
        assert_eq!((r.kind, r.frames), (AudioKind::OGG_OPUS, 28000));
        assert_eq!(r.path, tmp.path().join("audio.opus"));
        let info = run("opusinfo", &[r.path.to_str().unwrap()]);
        assert!(!info.contains("WARNING") && !info.contains("ERROR"), "{info}");
        let (granule, pre_skip) = granule_and_pre_skip(&std::fs::read(&r.path).unwrap());
        assert_eq!(granule - pre_skip, 28000 * 6, "the last granule gives 3.5 s at 48 kHz");
        let d = decode_with_opusdec(&r.path, 8000);
        assert_eq!((d.channels, d.rate, d.frames()), (2, 8000, 28000));
        check_channel(&d, 0, &[500.0, 1000.0], always(&[500.0]));
        check_channel(&d, 1, &[500.0, 1000.0], switch(1.0, true, vec![], vec![1000.0]));
        assert!((onset(&d, 1) - 1.0).abs() < ONSET_TOLERANCE_S, "pre-skip trimmed: onset at {} s", onset(&d, 1));
        let d = decode_with_ffmpeg(&r.path);
        assert_eq!((d.channels, d.rate, d.frames()), (2, 48000, 28000 * 6));
        check_channel(&d, 1, &[500.0, 1000.0], switch(1.0, true, vec![], vec![1000.0]));
    }

    #[test]
    fn ogg_opus_resamples_a_rate_libopus_does_not_take() {
        let tmp = tempfile::tempdir().unwrap();
        let cap = capture(tmp.path(), 44100, 2.0, &[Stream { freq: 700.0, on: (0.5, f64::INFINITY) }]);
        let r = render_to(tmp.path(), &cap, &[whole(0)], Format::Opus);
        assert_eq!((r.frames, r.sample_rate), (88200, 44100));
        let (granule, pre_skip) = granule_and_pre_skip(&std::fs::read(&r.path).unwrap());
        assert_eq!(granule - pre_skip, 96000, "2 s at 48 kHz");
        let d = decode_with_opusdec(&r.path, 48000);
        assert_eq!((d.channels, d.frames()), (1, 96000));
        check_channel(&d, 0, &[700.0, 1100.0], switch(0.5, true, vec![], vec![700.0]));
        // The resampler's delay is compensated: the tone starts where it did.
        assert!((onset(&d, 0) - 0.5).abs() < ONSET_TOLERANCE_S, "onset at {} s", onset(&d, 0));
    }

    #[test]
    fn ogg_opus_length_is_exact_at_any_rate_mono_and_stereo() {
        for rate in [8000u32, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000] {
            for channels in [1usize, 2] {
                let tmp = tempfile::tempdir().unwrap();
                let cap = capture(tmp.path(), rate, 0.7, &vec![tone(500.0); channels]);
                let layout: Vec<_> = (0..channels).map(whole).collect();
                let r = render_to(tmp.path(), &cap, &layout, Format::Opus);
                let at_48k = (r.frames * 48000 + u64::from(rate) / 2) / u64::from(rate);
                let d = decode_with_opusdec(&r.path, 48000);
                let label = format!("{channels} channels at {rate} Hz");
                assert_eq!((d.channels, d.frames() as u64), (channels, at_48k), "{label}");
                check_channel(&d, channels - 1, &[500.0], always(&[500.0]));
            }
        }
    }

    #[test]
    fn ogg_opus_of_more_than_two_channels_falls_back_to_wav() {
        let tmp = tempfile::tempdir().unwrap();
        let cap = capture(tmp.path(), 8000, 0.5, &[tone(500.0), tone(700.0), tone(900.0)]);
        let r = render_to(tmp.path(), &cap, &[whole(0), whole(1), whole(2)], Format::Opus);
        assert_eq!(r.kind, AudioKind::WAV);
        assert!(r.note.unwrap().contains("at most 2 channels"));
    }
}
