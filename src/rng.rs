//! Deterministic random numbers: a counter-based Philox4x32-10 and a small SplitMix64 stream.
//!
//! Counter-based generation is what lets every rank draw its own share of a global batch
//! without talking to the others, lets a restart continue the same stream, and lets the CUDA
//! sampling kernel reproduce the CPU reference bit for bit: a draw is a pure function of
//! (key, counter). [`SplitMix64`] serves sequential uses (synthetic data, k-means seeding)
//! where a stream is simpler; it is seeded from the same seed so runs are reproducible.

/// Philox4x32 multiplier for lane 0.
const PHILOX_M0: u32 = 0xD251_1F53;
/// Philox4x32 multiplier for lane 2.
const PHILOX_M1: u32 = 0xCD9E_8D57;
/// Weyl increment of key word 0.
const PHILOX_W0: u32 = 0x9E37_79B9;
/// Weyl increment of key word 1.
const PHILOX_W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds (Salmon et al., SC'11): 128-bit counter, 64-bit key → 4 × u32.
///
/// Identical arithmetic is used by `kernels/` so CPU and GPU agree bit for bit.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let p0 = (PHILOX_M0 as u64) * (c[0] as u64);
        let p1 = (PHILOX_M1 as u64) * (c[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Four uniform draws in `[0, 1)` (24-bit resolution, exact in `f32`) for a (key, counter).
#[inline]
pub fn philox_uniform4(counter: [u32; 4], key: [u32; 2]) -> [f32; 4] {
    let r = philox4x32_10(counter, key);
    r.map(u32_to_unit_f32)
}

/// Maps a `u32` to `[0, 1)` using its top 24 bits, exactly representable in `f32`.
#[inline]
pub fn u32_to_unit_f32(x: u32) -> f32 {
    (x >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Maps two `u32`s to a `f64` in `[0, 1)` with 53 random bits.
#[inline]
pub fn u32x2_to_unit_f64(hi: u32, lo: u32) -> f64 {
    let bits = ((hi as u64) << 21) ^ (lo as u64 >> 11);
    (bits & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Splits a 64-bit seed into a Philox key.
#[inline]
pub fn philox_key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast, well-mixed sequential generator.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A stream derived from `seed` and a label, so independent parts of a program do not
    /// share draws (`SplitMix64::derive(seed, 7)` for stream 7).
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut s = Self::new(seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        s.next_u64();
        Self::new(s.next_u64() ^ stream)
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `[0, n)` (Lemire's multiply-shift; negligible bias for n ≪ 2^64).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal draw (Box–Muller).
    #[inline]
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Bernoulli draw with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Index drawn from unnormalised non-negative `weights`.
    pub fn categorical(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut u = self.next_f64() * total;
        for (i, &w) in weights.iter().enumerate() {
            if u < w {
                return i;
            }
            u -= w;
        }
        weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors from Random123's `kat_vectors` (philox4x32, 10 rounds).
    #[test]
    fn philox_matches_random123_known_answers() {
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn splitmix_reference_values() {
        // Reference: the SplitMix64 C code by Vigna with seed 1234567.
        let mut s = SplitMix64::new(1_234_567);
        assert_eq!(s.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(s.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn uniform_and_normal_moments() {
        let mut s = SplitMix64::new(9);
        let n = 200_000;
        let (mut m, mut v) = (0.0, 0.0);
        for _ in 0..n {
            let x = s.normal();
            m += x;
            v += x * x;
        }
        m /= n as f64;
        v = v / n as f64 - m * m;
        assert!(m.abs() < 0.01 && (v - 1.0).abs() < 0.02, "mean {m} var {v}");
        let mut mean_u = 0.0;
        for i in 0..n as u32 {
            mean_u += philox_uniform4([i, 0, 0, 0], [1, 2])[0] as f64;
        }
        mean_u /= n as f64;
        assert!((mean_u - 0.5).abs() < 0.005, "{mean_u}");
    }
}
