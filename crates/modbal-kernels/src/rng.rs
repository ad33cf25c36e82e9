//! The counter-based RNG shared by the CPU and CUDA paths: Philox4x32-10.
//!
//! Reference: Salmon, Moraes, Dror, Shaw, "Parallel Random Numbers: As Easy as 1, 2, 3", SC 2011
//! (the Random123 library; the same generator as cuRAND's `Philox4_32_10`). A Philox call is a
//! keyed bijection of a 128-bit counter, so the random numbers of element `i` depend only on
//! `(seed, stream, offset + i)`: the same values come out whatever the chunking, the thread count
//! or the device. `src/kernels.cu` implements the same functions in CUDA C, line for line.
//!
//! # The mapping from `(seed, stream, index)` to numbers
//!
//! * key `= (seed mod 2³², seed >> 32)`, counter `= (index mod 2³², index >> 32, stream, 0)`;
//!   output words `r = (r0, r1, r2, r3)`.
//! * **f64 uniforms** (53 bits): `a = ((r0 << 32) | r1) >> 11`, `b = ((r2 << 32) | r3) >> 11`;
//!   `u1 = (a + 1)·2⁻⁵³ ∈ (0, 1]`, `u2 = b·2⁻⁵³ ∈ [0, 1)`.
//! * **f64 normal** (Box–Muller, cosine branch): `z = √(−2 ln u1) · cos(2π u2)`.
//! * **f32 normal**: the same with 24-bit uniforms `u1 = ((r0 >> 8) + 1)·2⁻²⁴`,
//!   `u2 = (r1 >> 8)·2⁻²⁴` and f32 arithmetic (`sqrtf`, `logf`, `cosf` on the GPU).
//! * **salt-and-pepper uniform** (both dtypes): `u2` of the f64 mapping's first word pair,
//!   `((r0 << 32) | r1) >> 11 · 2⁻⁵³ ∈ [0, 1)`, from stream [`STREAM_SALT_PEPPER`].
//!
//! One normal per counter (the sine branch is discarded) keeps the element → counter map trivial.
//! Integer work and the uniforms are exact on both devices; `ln`/`cos` come from each device's
//! math library (Rust's libm on the CPU, CUDA's on the GPU, both within a few ulp), so CPU and
//! CUDA normals agree to a few ulp, not necessarily bit for bit.

/// Counter word 2 of the Gaussian noise of [`crate::scale_add_noise`].
pub const STREAM_GAUSSIAN: u32 = 0;
/// Counter word 2 of [`crate::salt_pepper`]'s uniforms.
pub const STREAM_SALT_PEPPER: u32 = 1;

const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with 10 rounds: the bijection of `ctr` under `key`.
#[inline]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = ctr;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(PHILOX_W0);
            k1 = k1.wrapping_add(PHILOX_W1);
        }
        let (hi0, lo0) = mulhilo(PHILOX_M0, c0);
        let (hi1, lo1) = mulhilo(PHILOX_M1, c2);
        let n0 = hi1 ^ c1 ^ k0;
        let n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    [c0, c1, c2, c3]
}

/// The four Philox words of element `index` of stream `stream` under `seed`.
#[inline]
pub fn words(seed: u64, stream: u32, index: u64) -> [u32; 4] {
    philox4x32_10(
        [index as u32, (index >> 32) as u32, stream, 0],
        [seed as u32, (seed >> 32) as u32],
    )
}

const TWO_POW_M53: f64 = 1.0 / (1u64 << 53) as f64;
const TWO_POW_M24: f32 = 1.0 / (1u32 << 24) as f32;

/// `(u1, u2)`: `u1 ∈ (0, 1]`, `u2 ∈ [0, 1)`, 53-bit, from the words `r`.
#[inline]
pub fn uniforms_f64(r: [u32; 4]) -> (f64, f64) {
    let a = (((r[0] as u64) << 32) | r[1] as u64) >> 11;
    let b = (((r[2] as u64) << 32) | r[3] as u64) >> 11;
    ((a + 1) as f64 * TWO_POW_M53, b as f64 * TWO_POW_M53)
}

/// The standard normal of element `index` (f64 mapping; see the module docs).
#[inline]
pub fn normal_f64(seed: u64, index: u64) -> f64 {
    let (u1, u2) = uniforms_f64(words(seed, STREAM_GAUSSIAN, index));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The standard normal of element `index` (f32 mapping; see the module docs).
#[inline]
pub fn normal_f32(seed: u64, index: u64) -> f32 {
    let r = words(seed, STREAM_GAUSSIAN, index);
    let u1 = ((r[0] >> 8) + 1) as f32 * TWO_POW_M24;
    let u2 = (r[1] >> 8) as f32 * TWO_POW_M24;
    (-2.0f32 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// The salt-and-pepper uniform of element `index`, `∈ [0, 1)` (53-bit).
#[inline]
pub fn salt_pepper_uniform(seed: u64, index: u64) -> f64 {
    let r = words(seed, STREAM_SALT_PEPPER, index);
    ((((r[0] as u64) << 32) | r[1] as u64) >> 11) as f64 * TWO_POW_M53
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Philox4x32-10 from Random123's `kat_vectors`
    /// (`philox4x32 10` lines): zero, all-ones, and the π-digits counter/key.
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
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
    fn uniforms_stay_in_their_intervals_at_the_extremes() {
        let (u1, u2) = uniforms_f64([0; 4]);
        assert_eq!(u1, TWO_POW_M53);
        assert_eq!(u2, 0.0);
        let (u1, u2) = uniforms_f64([u32::MAX; 4]);
        assert_eq!(u1, 1.0);
        assert!(u2 < 1.0);
        // u1 = 1 gives z = 0 exactly; the smallest u1 gives the largest |z| (≈ 8.57).
        assert!((-2.0 * TWO_POW_M53.ln()).sqrt() < 8.6);
    }

    #[test]
    fn streams_seeds_and_indices_are_separated() {
        let a = words(7, STREAM_GAUSSIAN, 3);
        assert_ne!(a, words(7, STREAM_SALT_PEPPER, 3));
        assert_ne!(a, words(8, STREAM_GAUSSIAN, 3));
        assert_ne!(a, words(7, STREAM_GAUSSIAN, 4));
        assert_ne!(a, words(7, STREAM_GAUSSIAN, 3 + (1 << 32)));
        assert_ne!(a, words(7 + (1 << 32), STREAM_GAUSSIAN, 3));
    }
}
