//! Streaming sample-rate conversion for one stream, by a polyphase windowed-sinc FIR for the
//! exact rational ratio between two rates (8 kHz → 16 kHz is 2/1, 44.1 → 48 kHz is 160/147).
//!
//! Each output sample is a `taps`-long dot product of the latest input with one of `L`
//! precomputed phases of a Kaiser-windowed sinc (β = 8, about 80 dB stop-band attenuation),
//! cut off at 90 % of the lower rate's Nyquist frequency, each phase normalised to unity DC gain.
//! State is kept across calls, so packets of any size (10, 20, 30 ms, …) can be fed as they
//! come; memory is allocated when the resampler is made, not per packet. Output lags the input
//! by a constant [`Resampler::delay`] (half the filter), which the caller compensates when it
//! places the samples.
//!
//! It does not drift-correct (the ratio is exact and fixed) and does not know about packet loss:
//! the caller [`reset`](Resampler::reset)s it when the input is not continuous (SSRC change,
//! timestamp jump), so that one stretch is not smeared into the next.

/// Why a resampler could not be made.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResampleError {
    /// A rate of zero.
    #[error("sample rate 0")]
    ZeroRate,
    /// The reduced ratio needs more than [`MAX_PHASES`] filter phases (rates with no large
    /// common divisor, e.g. 8000 → 44101), or divides the rate by more than eight.
    #[error("cannot resample {from} Hz to {to} Hz (ratio too fine or too steep)")]
    Ratio {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
    },
}

/// Most filter phases (the numerator of the reduced ratio): 441 covers 8 kHz → 44.1 kHz.
pub const MAX_PHASES: u64 = 1024;
/// Steepest downsampling (48 kHz → 8 kHz is 6): the filter grows with the ratio.
const MAX_DOWN: u64 = 8;

/// Filter length, in input samples, when upsampling; scaled by the ratio when downsampling so
/// the transition band stays the same fraction of the output rate.
const BASE_TAPS: usize = 48;
/// Cut-off as a fraction of the lower rate's Nyquist frequency.
const CUTOFF: f64 = 0.9;
/// Kaiser window shape: β = 8 gives about 80 dB of stop-band attenuation.
const KAISER_BETA: f64 = 8.0;

/// A streaming resampler from one rate to another (see the module doc).
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    /// Reduced ratio: `l` output samples per `m` input samples.
    l: usize,
    m: usize,
    /// `m / l` and `m % l`: how far one output sample moves in the input.
    step: usize,
    phase_step: usize,
    taps: usize,
    /// `l` phases of `taps` coefficients each, phase-major, taps in input order.
    coeffs: Vec<f32>,
    /// Input not yet fully used, `taps - 1` samples of history first.
    buf: Vec<f32>,
    /// Index in `buf` of the newest input sample of the next output's window.
    pos: usize,
    /// Phase of the next output (0..l).
    phase: usize,
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz. With equal rates it copies (delay 0).
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        if from == 0 || to == 0 {
            return Err(ResampleError::ZeroRate);
        }
        let g = gcd(u64::from(from), u64::from(to));
        let (l, m) = (u64::from(to) / g, u64::from(from) / g);
        if l > MAX_PHASES || m > MAX_DOWN * l {
            return Err(ResampleError::Ratio { from, to });
        }
        // Both bounded just above (m ≤ 8 · 1024): the casts cannot truncate.
        let (l, m) = (l as usize, m as usize);
        let (taps, coeffs) = if l == 1 && m == 1 {
            (1, vec![1.0])
        } else {
            design(l, m)
        };
        let mut r = Resampler {
            from,
            to,
            l,
            m,
            step: m / l,
            phase_step: m % l,
            taps,
            coeffs,
            // Room for the history and a 120 ms packet at 48 kHz, so steady-state calls never
            // grow it.
            buf: Vec::with_capacity(taps + 8192),
            pos: 0,
            phase: 0,
        };
        r.reset();
        Ok(r)
    }

    /// Input rate in Hz.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Output rate in Hz.
    pub fn to_rate(&self) -> u32 {
        self.to
    }

    /// Forgets the input history (as if the stream started anew with silence before it).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.buf.resize(self.taps - 1, 0.0);
        self.pos = self.taps - 1;
        self.phase = 0;
    }

    /// Group delay in input samples: output sample `n` represents the input at
    /// `n · from / to − delay`. Constant, so the caller can shift the placement once (for RTP:
    /// subtract `delay · clock_rate / from` from the timestamp).
    pub fn delay(&self) -> u32 {
        // taps is at most BASE_TAPS * MAX_DOWN + 1: fits.
        (self.taps / 2) as u32
    }

    /// The largest number of samples [`process`](Self::process) can produce from `input_len`
    /// input samples.
    pub fn max_output(&self, input_len: usize) -> usize {
        (input_len * self.l).div_ceil(self.m) + 1
    }

    /// Feeds `input` and writes the output it makes available into `out`; returns how many were
    /// written. `out` should hold [`max_output`](Self::max_output)`(input.len())`: what does not
    /// fit stays buffered and comes out on the next call.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) -> usize {
        self.buf.extend(input.iter().map(|&s| f32::from(s)));
        let taps = self.taps;
        let mut written = 0;
        while self.pos < self.buf.len() && written < out.len() {
            let window = &self.buf[self.pos + 1 - taps..=self.pos];
            let phase = &self.coeffs[self.phase * taps..][..taps];
            // `as` saturates float to int conversions, which is the clipping wanted here.
            out[written] = dot(window, phase).round() as i16;
            written += 1;
            // Advance by m/l input samples, without a division per sample.
            self.pos += self.step;
            self.phase += self.phase_step;
            if self.phase >= self.l {
                self.phase -= self.l;
                self.pos += 1;
            }
        }
        // Keep only the window of the next output onwards.
        let drop = (self.pos + 1 - taps).min(self.buf.len());
        self.buf.drain(..drop);
        self.pos -= drop;
        written
    }
}

/// The polyphase table for `l` phases of a filter cutting off at the lower rate's band edge.
fn design(l: usize, m: usize) -> (usize, Vec<f32>) {
    // Relative to the input's Nyquist frequency.
    let cutoff = CUTOFF * (l as f64 / m as f64).min(1.0);
    let taps = {
        let t = (BASE_TAPS as f64 * (m as f64 / l as f64).max(1.0)).ceil() as usize;
        t + t % 2
    };
    let half = taps as f64 / 2.0;
    let i0_beta = bessel_i0(KAISER_BETA);
    let mut coeffs = Vec::with_capacity(l * taps);
    for p in 0..l {
        let frac = p as f64 / l as f64;
        let start = coeffs.len();
        for k in 0..taps {
            // Distance in input samples from the (delayed) output instant to tap k's sample.
            let t = frac + half - 1.0 - k as f64;
            let x = t / half;
            let window = if x.abs() >= 1.0 {
                0.0
            } else {
                bessel_i0(KAISER_BETA * (1.0 - x * x).sqrt()) / i0_beta
            };
            coeffs.push(cutoff * sinc(cutoff * t) * window);
        }
        let sum: f64 = coeffs[start..].iter().sum();
        for c in &mut coeffs[start..] {
            *c /= sum;
        }
    }
    (taps, coeffs.into_iter().map(|c| c as f32).collect())
}

/// Dot product in eight independent lanes, which the compiler turns into SIMD (a plain
/// `.sum()` must add in order and stays scalar, about ten times slower).
fn dot(x: &[f32], c: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f32; LANES];
    let (xc, cc) = (x.chunks_exact(LANES), c.chunks_exact(LANES));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(cc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (xs, cs) in xc.zip(cc) {
        for i in 0..LANES {
            acc[i] += xs[i] * cs[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Modified Bessel function of the first kind, order 0 (power series; converges fast for the
/// arguments a Kaiser window uses).
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, half) = (1.0, 1.0, x / 2.0);
    for k in 1..50 {
        term *= half / k as f64;
        let t2 = term * term;
        sum += t2;
        if t2 < sum * 1e-17 {
            break;
        }
    }
    sum
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::TAU;

    use crate::media::test_tone as tone;

    /// Runs `input` through in packets of varying size (10, 20 and 30 ms at `from`).
    fn stream(r: &mut Resampler, input: &[i16]) -> Vec<i16> {
        let ms = r.from_rate() as usize / 1000;
        let mut out = Vec::new();
        let mut buf = vec![0i16; r.max_output(30 * ms)];
        let mut at = 0;
        for size in [10, 20, 30].iter().cycle().map(|s| s * ms) {
            if at >= input.len() {
                break;
            }
            let chunk = &input[at..(at + size).min(input.len())];
            let n = r.process(chunk, &mut buf);
            out.extend_from_slice(&buf[..n]);
            at += chunk.len();
        }
        out
    }

    /// Amplitude of the `freq` component of `x` (a Goertzel-style correlation).
    fn amplitude(x: &[f64], rate: u32, freq: f64) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for (i, v) in x.iter().enumerate() {
            let ph = TAU * freq * i as f64 / f64::from(rate);
            re += v * ph.cos();
            im += v * ph.sin();
        }
        2.0 * (re * re + im * im).sqrt() / x.len() as f64
    }

    /// SNR of a resampled tone against the ideal tone at the output rate, delay compensated,
    /// skipping the filter's start-up.
    fn tone_snr_db(from: u32, to: u32, freq: f64) -> f64 {
        let mut r = Resampler::new(from, to).unwrap();
        let input = tone(from, freq, 16000.0, from as usize); // 1 s
        let out = stream(&mut r, &input);
        let delay_out = f64::from(r.delay()) * f64::from(to) / f64::from(from);
        let skip = to as usize / 20;
        let (mut sig, mut err) = (0.0, 0.0);
        for (i, &y) in out.iter().enumerate().skip(skip) {
            let ideal = 16000.0 * (TAU * freq * (i as f64 - delay_out) / f64::from(to)).sin();
            sig += ideal * ideal;
            err += (f64::from(y) - ideal).powi(2);
        }
        10.0 * (sig / err).log10()
    }

    #[test]
    fn output_length_follows_the_ratio() {
        for (from, to) in [
            (8000, 16000),
            (8000, 48000),
            (16000, 8000),
            (48000, 16000),
            (44100, 48000),
            (8000, 44100),
        ] {
            let mut r = Resampler::new(from, to).unwrap();
            let out = stream(&mut r, &vec![0; from as usize]);
            assert_eq!(out.len(), to as usize, "{from} -> {to}");
        }
    }

    #[test]
    fn passband_tone_survives_8k_to_16k_above_60_db() {
        let snr = tone_snr_db(8000, 16000, 1000.0);
        assert!(snr > 60.0, "SNR {snr:.1} dB");
    }

    #[test]
    fn passband_tone_survives_other_ratios_above_60_db() {
        for (from, to) in [
            (8000, 48000),
            (16000, 8000),
            (48000, 16000),
            (16000, 48000),
            (44100, 48000),
            (48000, 44100),
        ] {
            let snr = tone_snr_db(from, to, 1000.0);
            assert!(snr > 60.0, "{from} -> {to}: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn image_of_upsampled_tone_attenuated_above_50_db() {
        let mut r = Resampler::new(8000, 16000).unwrap();
        let out = stream(&mut r, &tone(8000, 1000.0, 16000.0, 8000));
        let y: Vec<f64> = out[800..].iter().map(|&s| f64::from(s)).collect();
        let wanted = amplitude(&y, 16000, 1000.0);
        let image = amplitude(&y, 16000, 7000.0);
        let db = 20.0 * (wanted / image).log10();
        assert!(db > 50.0, "image at 7 kHz only {db:.1} dB down");
    }

    #[test]
    fn tone_above_target_band_is_removed_when_downsampling() {
        // 12 kHz at 48 kHz would alias to 4 kHz at 16 kHz.
        let mut r = Resampler::new(48000, 16000).unwrap();
        let out = stream(&mut r, &tone(48000, 12000.0, 16000.0, 48000));
        let y: Vec<f64> = out[800..].iter().map(|&s| f64::from(s)).collect();
        let alias = amplitude(&y, 16000, 4000.0);
        assert!(
            20.0 * (16000.0 / alias).log10() > 60.0,
            "alias amplitude {alias}"
        );
    }

    #[test]
    fn reset_forgets_history_and_equal_rates_copy() {
        let mut r = Resampler::new(8000, 16000).unwrap();
        let mut out = vec![0i16; 400];
        r.process(&[20000; 160], &mut out);
        r.reset();
        let n = r.process(&[0; 160], &mut out);
        assert!(out[..n].iter().all(|&s| s == 0));

        let mut same = Resampler::new(16000, 16000).unwrap();
        assert_eq!(same.delay(), 0);
        let input = tone(16000, 440.0, 10000.0, 320);
        let n = same.process(&input, &mut out);
        assert_eq!(&out[..n], &input[..]);
    }

    #[test]
    fn full_scale_step_clips_instead_of_wrapping() {
        // A step from the most negative to the most positive sample rings past full scale
        // (Gibbs): the overshoot must saturate, not wrap round to negative values.
        let mut r = Resampler::new(8000, 16000).unwrap();
        let step: Vec<i16> = (0..1600)
            .map(|i| if i < 800 { i16::MIN } else { i16::MAX })
            .collect();
        let out = stream(&mut r, &step);
        let up = out.iter().rposition(|&s| s <= 0).unwrap() + 1;
        assert!(up > 1600 && up < 1700, "step lands at {up}");
        assert!(out[up..].iter().all(|&s| s > 0));
        assert_eq!(out[up..].iter().max(), Some(&i16::MAX));
    }

    #[test]
    fn unusable_rates_are_errors() {
        assert_eq!(
            Resampler::new(0, 8000).unwrap_err(),
            ResampleError::ZeroRate
        );
        assert!(matches!(
            Resampler::new(8000, 44101),
            Err(ResampleError::Ratio { .. })
        ));
        assert!(matches!(
            Resampler::new(48000, 1000),
            Err(ResampleError::Ratio { .. })
        ));
    }

    #[test]
    fn output_that_does_not_fit_comes_out_next_call() {
        let mut r = Resampler::new(8000, 16000).unwrap();
        let input = tone(8000, 500.0, 8000.0, 320);
        let mut whole = Resampler::new(8000, 16000).unwrap();
        let mut expected = vec![0i16; 700];
        let n = whole.process(&input, &mut expected);
        let mut small = vec![0i16; 300];
        let a = r.process(&input, &mut small);
        let mut rest = vec![0i16; 700];
        let b = r.process(&[], &mut rest);
        assert_eq!((a, a + b), (300, n));
        assert_eq!(&expected[..300], &small[..]);
        assert_eq!(&expected[300..n], &rest[..b]);
    }
}
