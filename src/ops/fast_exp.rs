//! A branch-free `e^x` for `f32` that the compiler vectorises (the libm call does not).
//!
//! Cephes' `expf` algorithm: `x = n·ln2 + r` with `n = round(x/ln2)` and `|r| ≤ ln2/2`
//! (`ln2` split in two constants so `r` is exact), `e^r` by a degree-7 polynomial, then
//! `2^n` assembled in the exponent bits. Relative error below 2 ulp on the whole range (tested
//! against `f32::exp`); inputs below −87.3 give 0 (so `exp(−∞) = 0`, as masked softmax entries need) and inputs
//! above 88.3 are clamped (`e^88.3 ≈ 2.2e38`); NaN stays NaN.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2 = C1 + C2`, `C1` with few mantissa bits so that `n·C1` is exact.
const C1: f32 = 0.693_359_4;
const C2: f32 = -2.121_944_4e-4;
/// `1.5·2^23`: adding and subtracting it rounds to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// `e^x` (see the module docs for accuracy and range).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // selects rather than clamp/max: they vectorise and keep a NaN a NaN (so a NaN logit
    // still poisons the loss, which the training loops detect)
    let underflow = x < -87.3;
    let x = if underflow { -87.3 } else { x };
    let x = if x > 88.3 { 88.3 } else { x };
    // n = round(x / ln 2): the rounding happens when adding 1.5·2^23, and the low mantissa
    // bits of `v` then hold n (bits(v) = bits(ROUND) + n)
    let v = x * LOG2E + ROUND;
    let n = v - ROUND;
    // r = x − n·ln 2, in two steps
    let r = x - n * C1 - n * C2;
    // e^r ≈ 1 + r + r²·P(r)
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * (r * r) + r + 1.0;
    // 2^n in the exponent bits (n ∈ [−126, 127] after the clamp: a normal float)
    // (integer ops on the bits only: a float → int cast would stop the vectorisation)
    let bits = v.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23;
    let y = er * f32::from_bits(bits);
    // below the smallest normal result: 0, so exp(−∞) = 0 exactly (masked softmax entries)
    if underflow {
        0.0
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::exp;

    #[test]
    fn matches_libm_within_two_ulp_over_the_whole_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.3 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            let rel = ((got - want) / want).abs();
            worst = worst.max(rel);
            x += 0.000_37;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(100.0).is_finite());
    }
}
