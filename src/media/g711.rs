//! G.711 µ-law and A-law to 16-bit linear PCM (ITU-T G.711), by 256-entry tables built at
//! compile time. Decoding only: the gateway never encodes.

const fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if sign != 0 { -magnitude as i16 } else { magnitude as i16 }
}

const fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let sign = a & 0x80;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = if exponent == 0 { (mantissa << 4) + 8 } else { ((mantissa << 4) + 0x108) << (exponent - 1) };
    if sign != 0 { magnitude as i16 } else { -magnitude as i16 }
}

const fn ulaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_to_linear(i as u8);
        i += 1;
    }
    t
}

const fn alaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_to_linear(i as u8);
        i += 1;
    }
    t
}

static ULAW: [i16; 256] = ulaw_table();
static ALAW: [i16; 256] = alaw_table();

/// The two G.711 laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    Mu,
    A,
}

/// Decodes `input` into the first `input.len()` samples of `out` (which must be at least as long);
/// returns the number written.
pub fn decode(law: Law, input: &[u8], out: &mut [i16]) -> usize {
    let table = match law {
        Law::Mu => &ULAW,
        Law::A => &ALAW,
    };
    let n = input.len().min(out.len());
    for (o, i) in out[..n].iter_mut().zip(&input[..n]) {
        *o = table[*i as usize];
    }
    n
}

/// Encoders, for tests and for the project's own test SRC.
pub mod encode {
    /// Linear to µ-law (the classic segment search; ITU-T G.711 with the 0x84 bias).
    pub fn ulaw(sample: i16) -> u8 {
        const BIAS: i32 = 0x84;
        let mut s = sample as i32;
        let sign = if s < 0 {
            s = -s;
            0x80
        } else {
            0
        };
        let s = s.min(32635) + BIAS;
        let (mut exponent, mut mask) = (7, 0x4000);
        while exponent > 0 && s & mask == 0 {
            exponent -= 1;
            mask >>= 1;
        }
        let mantissa = (s >> (exponent + 3)) & 0x0f;
        !((sign | (exponent << 4) | mantissa) as u8)
    }

    /// Linear to A-law.
    pub fn alaw(sample: i16) -> u8 {
        let mut s = sample as i32;
        let sign = if s >= 0 { 0x80 } else { 0 };
        if s < 0 {
            s = -s - 1;
        }
        let s = s.min(32767);
        let byte = if s < 256 {
            (s >> 4) as u8
        } else {
            let (mut exponent, mut mask) = (7, 0x4000);
            while s & mask == 0 {
                exponent -= 1;
                mask >>= 1;
            }
            ((exponent << 4) as u8) | (((s >> (exponent + 3)) & 0x0f) as u8)
        };
        (byte | sign) ^ 0x55
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(ULAW[0xff], 0);
        assert_eq!(ULAW[0x7f], 0);
        assert_eq!(ULAW[0x00], -32124);
        assert_eq!(ULAW[0x80], 32124);
        assert_eq!(ALAW[0xd5], 8);
        assert_eq!(ALAW[0x55], -8);
        assert_eq!(ALAW[0xaa], 32256);
    }

    #[test]
    fn round_trip_within_quantisation() {
        for s in (-32000i32..32000).step_by(37) {
            let s = s as i16;
            for law in [Law::Mu, Law::A] {
                let byte = match law {
                    Law::Mu => encode::ulaw(s),
                    Law::A => encode::alaw(s),
                };
                let mut out = [0i16; 1];
                decode(law, &[byte], &mut out);
                let err = (out[0] as i32 - s as i32).abs();
                // Segment step is 1/16 of the segment: at most ~1/32 relative error plus a floor.
                assert!(err <= (s as i32).abs() / 16 + 16, "{law:?} {s} -> {byte:#x} -> {}", out[0]);
            }
        }
    }
}
