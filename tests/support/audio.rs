//! Reading the gateway's WAV files and describing what each channel holds: level per span,
//! which tone it is, where it is silent. Times are seconds from the start of the file.
//!
//! Tone tests use the Goertzel algorithm at the expected frequency: for a pure tone, the
//! energy in that frequency's bin is (nearly) all of the span's energy.

use std::io::Cursor;
use std::path::Path;

/// A decoded 16-bit PCM WAV, de-interleaved.
pub struct Wav {
    pub spec: hound::WavSpec,
    pub channels: Vec<Vec<i16>>,
}

impl Wav {
    pub fn read(path: &Path) -> Wav {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Wav::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Wav {
        let mut reader = hound::WavReader::new(Cursor::new(bytes)).expect("a WAV hound can read");
        let spec = reader.spec();
        assert_eq!(
            (spec.bits_per_sample, spec.sample_format),
            (16, hound::SampleFormat::Int),
            "the gateway writes 16-bit PCM"
        );
        let n = usize::from(spec.channels);
        let mut channels = vec![Vec::new(); n];
        for (i, s) in reader.samples::<i16>().enumerate() {
            channels[i % n].push(s.expect("sample"));
        }
        Wav { spec, channels }
    }

    pub fn seconds(&self) -> f64 {
        self.channels
            .first()
            .map_or(0.0, |c| c.len() as f64 / f64::from(self.spec.sample_rate))
    }

    pub fn channel(&self, c: usize) -> Channel<'_> {
        Channel {
            samples: &self.channels[c],
            rate: self.spec.sample_rate,
        }
    }
}

/// One channel's samples.
pub struct Channel<'a> {
    samples: &'a [i16],
    rate: u32,
}

/// Samples with a magnitude below this count as silence.
const SILENCE: i32 = 64;

impl Channel<'_> {
    fn span(&self, from: f64, to: f64) -> &[i16] {
        let index =
            |t: f64| ((t * f64::from(self.rate)).round().max(0.0) as usize).min(self.samples.len());
        &self.samples[index(from)..index(to)]
    }

    pub fn is_all_zero(&self) -> bool {
        self.samples.iter().all(|&s| s == 0)
    }

    /// Root mean square level of `[from, to)`.
    pub fn rms(&self, from: f64, to: f64) -> f64 {
        let span = self.span(from, to);
        if span.is_empty() {
            return 0.0;
        }
        (span.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / span.len() as f64).sqrt()
    }

    /// Frequency estimated from zero crossings in `[from, to)` (for messages).
    pub fn zero_crossing_hz(&self, from: f64, to: f64) -> f64 {
        let span = self.span(from, to);
        let crossings = span.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        crossings as f64 / 2.0 / (span.len().max(1) as f64 / f64::from(self.rate))
    }

    /// Share of the energy of `[from, to)` that is at `freq` (1.0 for a pure tone there).
    pub fn tone_share(&self, freq: f64, from: f64, to: f64) -> f64 {
        let span = self.span(from, to);
        let energy: f64 = span.iter().map(|&s| f64::from(s).powi(2)).sum();
        if energy == 0.0 {
            return 0.0;
        }
        let w = 2.0 * std::f64::consts::PI * freq / f64::from(self.rate);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in span {
            let s0 = f64::from(x) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        2.0 * power / (span.len() as f64 * energy)
    }

    /// Asserts that `[from, to)` is a steady `freq` tone: in every 100 ms window the level is
    /// within 3 dB of `rms` and the tone holds at least 90% of the energy.
    #[track_caller]
    pub fn assert_tone(&self, name: &str, freq: f64, rms: f64, from: f64, to: f64) {
        // Every 100 ms window has the level and the pitch, and most of its energy at `freq`.
        // Not all of it: following a sender whose clock runs off ours, the timeline slips the
        // stream by a sample at packet boundaries (media::timeline, "Drift"), a phase jump that
        // lowers the share at exactly `freq` in a steady tone; sipp's pacing is such a sender.
        // And in one window the share may fall further: the one where, in the stream's first
        // second, the timeline moved its start back to packets that came earlier than the first
        // (SETTLE), a single jump of a few ms. Garbage (a wrong codec, misplaced packets) fails.
        let mut t = from;
        let mut jumps = Vec::new();
        while t + 0.1 <= to + 1e-9 {
            let level = self.rms(t, t + 0.1);
            let share = self.tone_share(freq, t, t + 0.1);
            let pitch = self.zero_crossing_hz(t, t + 0.1);
            let describe = || {
                format!(
                    "{name}: expected a {freq} Hz tone at RMS {rms:.0} from {from:.3} to {to:.3} s, \
                     but {t:.3}..{:.3} s has RMS {level:.0}, {:.0}% of it at {freq} Hz (zero crossings say {pitch:.0} Hz)",
                    t + 0.1,
                    share * 100.0,
                )
            };
            assert!((level / rms).log10().abs() * 20.0 < 3.0 && (pitch / freq - 1.0).abs() < 0.03, "{}", describe());
            if share <= 0.5 {
                jumps.push(describe());
            }
            t += 0.1;
        }
        assert!(jumps.len() <= 1, "{jumps:#?}");
    }

    /// Runs of at least `min_seconds` of silence, as (start, end) seconds.
    pub fn silent_spans(&self, min_seconds: f64) -> Vec<(f64, f64)> {
        let min = (min_seconds * f64::from(self.rate)) as usize;
        let rate = f64::from(self.rate);
        let mut spans = Vec::new();
        let mut start = None;
        for (i, &s) in self
            .samples
            .iter()
            .chain(std::iter::once(&i16::MAX))
            .enumerate()
        {
            let quiet = i32::from(s).abs() < SILENCE;
            match (quiet, start) {
                (true, None) => start = Some(i),
                (false, Some(b)) => {
                    if i - b >= min {
                        spans.push((b as f64 / rate, i as f64 / rate));
                    }
                    start = None;
                }
                _ => {}
            }
        }
        spans
    }

    /// The time of the first sample that is not silence.
    pub fn first_sound(&self) -> Option<f64> {
        let i = self
            .samples
            .iter()
            .position(|&s| i32::from(s).abs() >= SILENCE)?;
        Some(i as f64 / f64::from(self.rate))
    }

    /// The time just after the last sample that is not silence.
    pub fn last_sound(&self) -> Option<f64> {
        let i = self
            .samples
            .iter()
            .rposition(|&s| i32::from(s).abs() >= SILENCE)?;
        Some((i + 1) as f64 / f64::from(self.rate))
    }
}

/// `seconds` of a `freq` sine at peak `amplitude`, 8 kHz, G.711 µ-law encoded.
pub fn ulaw_tone(freq: f64, amplitude: f64, seconds: f64) -> Vec<u8> {
    let n = (seconds * 8000.0).round() as usize;
    (0..n)
        .map(|i| {
            let v = amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / 8000.0).sin();
            siprec_gateway::media::g711::encode::ulaw(v.round() as i16)
        })
        .collect()
}
