//! G.722 decoder (ITU-T G.722, 64 kbit/s mode only): sub-band ADPCM to 16 kHz linear PCM.
//!
//! Follows the structure and block names of the ITU-T reference (and of Steve Underwood's
//! SpanDSP `g722_decode.c`, which he placed in the public domain, itself based on the CMU 1993
//! codec whose use is unrestricted). RTP carries only mode 1 (64 kbit/s, one byte per two
//! output samples: RFC 3551 §4.5.2), so the 56/48 kbit/s modes, the packed bit format and the
//! "8 kHz output" shortcut are left out. No encoder: the gateway never sends audio.

/// Per-band ADPCM state (ITU-T G.722 §3: the variables of blocks 3 to 6).
#[derive(Debug, Clone, Default)]
struct Band {
    s: i32,
    sp: i32,
    sz: i32,
    r: [i32; 3],
    a: [i32; 3],
    ap: [i32; 3],
    p: [i32; 3],
    d: [i32; 7],
    b: [i32; 7],
    bp: [i32; 7],
    nb: i32,
    det: i32,
}

impl Band {
    fn new(det: i32) -> Self {
        Band {
            det,
            ..Band::default()
        }
    }
}

/// Clamps to the 16-bit range the reference's `int16_t` arithmetic saturates to.
fn sat(x: i32) -> i32 {
    x.clamp(i32::from(i16::MIN), i32::from(i16::MAX))
}

/// The sign as the reference takes it: `x >> 15` of a 16-bit quantity (0 or -1).
fn sign(x: i32) -> i32 {
    x >> 15
}

/// Blocks 4L/4H: pole and zero predictor adaptation and the next prediction (G.722 §3.6).
fn block4(b: &mut Band, dx: i32) {
    // RECONS, PARREC
    b.d[0] = dx;
    b.r[0] = sat(b.s + dx);
    b.p[0] = sat(b.sz + dx);

    // UPPOL2
    let (sg0, sg1, sg2) = (sign(b.p[0]), sign(b.p[1]), sign(b.p[2]));
    let wd1 = sat(b.a[1] << 2);
    let wd2 = if sg0 == sg1 { -wd1 } else { wd1 }.min(32767);
    let mut wd3 = if sg0 == sg2 { 128 } else { -128 };
    wd3 += wd2 >> 7;
    wd3 += (b.a[2] * 32512) >> 15;
    b.ap[2] = wd3.clamp(-12288, 12288);

    // UPPOL1
    let wd1 = if sg0 == sg1 { 192 } else { -192 };
    let wd2 = (b.a[1] * 32640) >> 15;
    let limit = sat(15360 - b.ap[2]);
    b.ap[1] = sat(wd1 + wd2).clamp(-limit, limit);

    // UPZERO
    let step = if dx == 0 { 0 } else { 128 };
    let sg0 = sign(dx);
    for i in 1..7 {
        let wd2 = if sign(b.d[i]) == sg0 { step } else { -step };
        let wd3 = (b.b[i] * 32640) >> 15;
        b.bp[i] = sat(wd2 + wd3);
    }

    // DELAYA
    for i in (1..7).rev() {
        b.d[i] = b.d[i - 1];
        b.b[i] = b.bp[i];
    }
    for i in (1..3).rev() {
        b.r[i] = b.r[i - 1];
        b.p[i] = b.p[i - 1];
        b.a[i] = b.ap[i];
    }

    // FILTEP
    let wd1 = (b.a[1] * sat(b.r[1] + b.r[1])) >> 15;
    let wd2 = (b.a[2] * sat(b.r[2] + b.r[2])) >> 15;
    b.sp = sat(wd1 + wd2);

    // FILTEZ
    let mut sz = 0;
    for i in (1..7).rev() {
        sz += (b.b[i] * sat(b.d[i] + b.d[i])) >> 15;
    }
    b.sz = sat(sz);

    // PREDIC
    b.s = sat(b.sp + b.sz);
}

/// Inverse log scale factor table (ILB, G.722 Table 14).
const ILB: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834,
    2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];
/// Lower-band log scale factor multipliers (WL) and the 4-bit code to WL index map (RIL4).
const WL: [i32; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];
const RL42: [i32; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
/// Higher-band log scale factor multipliers (WH) and index map (RIH2).
const WH: [i32; 3] = [0, -214, 798];
const RH2: [i32; 4] = [2, 1, 2, 1];
/// Inverse quantizer outputs: higher band 2-bit (QQ2), lower band 4-bit (QQ4) and 6-bit (QQ6).
const QM2: [i32; 4] = [-7408, -1616, 7408, 1616];
const QM4: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584,
    1200, 0,
];
const QM6: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232,
    -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776,
    -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280,
    11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776,
    2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
];
/// Receive QMF coefficients (G.722 Table 11), one half of the symmetric 24-tap filter.
const QMF: [i32; 12] = [3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11];

/// A 64 kbit/s G.722 decoder: one input byte gives two 16 kHz samples.
#[derive(Debug, Clone)]
pub struct G722Decoder {
    low: Band,
    high: Band,
    /// The receive QMF's delay line.
    x: [i32; 24],
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Decoder {
    /// A decoder in the reset state of G.722 §3.1 (scale factors at their minimum).
    pub fn new() -> Self {
        G722Decoder {
            low: Band::new(32),
            high: Band::new(8),
            x: [0; 24],
        }
    }

    /// Decodes as many whole bytes of `input` as fit into `out` (two samples each); returns the
    /// number of samples written.
    pub fn decode(&mut self, input: &[u8], out: &mut [i16]) -> usize {
        let n = input.len().min(out.len() / 2);
        for (&code, pair) in input[..n].iter().zip(out.chunks_exact_mut(2)) {
            let (a, b) = self.decode_byte(code);
            pair[0] = a;
            pair[1] = b;
        }
        n * 2
    }

    fn decode_byte(&mut self, code: u8) -> (i16, i16) {
        let ilow = usize::from(code & 0x3f);
        let ihigh = usize::from(code >> 6);

        // Lower band. Block 5L (INVQBL, RECONS, LIMIT) on the 6-bit code.
        let low = &mut self.low;
        let rlow = (low.s + ((low.det * QM6[ilow]) >> 15)).clamp(-16384, 16383);
        // Block 2L (INVQAL) on the 4-bit code: what the predictor adapts on.
        let ilow4 = ilow >> 2;
        let dlowt = (low.det * QM4[ilow4]) >> 15;
        // Block 3L (LOGSCL, SCALEL).
        low.nb = (((low.nb * 127) >> 7) + WL[RL42[ilow4] as usize]).clamp(0, 18432);
        low.det = scale(low.nb, 8);
        block4(low, dlowt);

        // Higher band. Blocks 2H, 5H, 6H, then 3H.
        let high = &mut self.high;
        let dhigh = (high.det * QM2[ihigh]) >> 15;
        let rhigh = (dhigh + high.s).clamp(-16384, 16383);
        high.nb = (((high.nb * 127) >> 7) + WH[RH2[ihigh] as usize]).clamp(0, 22528);
        high.det = scale(high.nb, 10);
        block4(high, dhigh);

        // Receive QMF: two output samples per pair of sub-band samples.
        self.x.copy_within(2.., 0);
        self.x[22] = rlow + rhigh;
        self.x[23] = rlow - rhigh;
        let (mut xout1, mut xout2) = (0, 0);
        for i in 0..12 {
            xout2 += self.x[2 * i] * QMF[i];
            xout1 += self.x[2 * i + 1] * QMF[11 - i];
        }
        (sat(xout1 >> 11) as i16, sat(xout2 >> 11) as i16)
    }
}

/// SCALEL / SCALEH: the linear scale factor from the log one (`shift` is 8 low, 10 high).
fn scale(nb: i32, shift: i32) -> i32 {
    let mantissa = ILB[((nb >> 6) & 31) as usize];
    let exponent = shift - (nb >> 11);
    let wd3 = if exponent < 0 {
        mantissa << -exponent
    } else {
        mantissa >> exponent
    };
    wd3 << 2
}
