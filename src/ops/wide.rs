//! Element-wise loops compiled for the widest vectors the CPU has, chosen at run time.
//!
//! The crate is built for the baseline `x86_64` target (SSE2), so the compiler vectorises loops
//! such as GELU, LayerNorm, the softmax rows and the AdamW update four lanes wide. [`wide`] runs a
//! closure through a copy of itself compiled with AVX-512 (or AVX2) enabled, so the same loop
//! runs sixteen (or eight) lanes wide. The arithmetic is unchanged: Rust never fuses a multiply
//! and an add into an FMA nor reorders floating-point operations, so each path gives
//! bit-identical results (checked in the tests below); only the vector width differs.
//!
//! The closure should hold the whole loop (call `wide` once per chunk of work, not per element)
//! and be marked `#[inline(always)]`: [`wide`] calls it from three places (the AVX-512, AVX2 and
//! baseline copies), so without the mark the compiler may keep a large closure as one
//! out-of-line function compiled for the baseline target, and the loop would silently run four
//! lanes wide. Inside the crate, the `wide_loop!(expr)` macro writes that closure.

/// The vector width [`wide`] uses on this CPU: `"avx512"`, `"avx2"` or `"baseline"`.
pub fn path() -> &'static str {
    match level() {
        Level::Avx512 => "avx512",
        Level::Avx2 => "avx2",
        Level::Baseline => "baseline",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Avx512,
    Avx2,
    Baseline,
}

fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                return Level::Avx512;
            }
            if is_x86_feature_detected!("avx2") {
                return Level::Avx2;
            }
        }
        Level::Baseline
    })
}

/// Runs `f`, compiled for AVX-512 or AVX2 when the CPU has it (see the module docs).
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            // SAFETY: the CPU supports the features these copies are compiled with (detected
            // above at run time).
            #[allow(unsafe_code)]
            Level::Avx512 => return unsafe { x86::avx512(f) },
            #[allow(unsafe_code)]
            Level::Avx2 => return unsafe { x86::avx2(f) },
            Level::Baseline => {}
        }
    }
    f()
}

/// `wide_loop!(expr)`: evaluates `expr` through [`wide`] in an `#[inline(always)]` closure, so
/// that its loops are compiled into each wide copy (see the module docs).
macro_rules! wide_loop {
    ($body:expr) => {
        $crate::ops::wide::wide(
            #[inline(always)]
            || $body,
        )
    };
}
pub(crate) use wide_loop;

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// `f` compiled with AVX-512 (F, BW, VL, DQ) enabled.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,avx")]
    pub(super) fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    /// `f` compiled with AVX2 enabled.
    #[target_feature(enable = "avx2,avx")]
    pub(super) fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(x: &[f32]) -> Vec<u32> {
        x.iter()
            .map(|&v| {
                let e = crate::ops::fast_exp::exp(-v * v);
                ((v * v * 0.5 + e).sqrt() / (1.0 + e) + v.max(0.25)).to_bits()
            })
            .collect()
    }

    #[test]
    fn every_path_gives_the_same_bits() {
        let x: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let base = work(&x);
        assert_eq!(wide(|| work(&x)), base);
        #[cfg(target_arch = "x86_64")]
        {
            #[allow(unsafe_code)]
            if is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 detected just above.
                assert_eq!(unsafe { x86::avx2(|| work(&x)) }, base);
            }
        }
    }
}
