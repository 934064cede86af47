//! [`QType`]: the storage encodings of a weight row, with ggml's ids and block layouts, and the
//! exact half-precision conversions the encodings use.

use crate::error::{Error, Result};

/// A storage encoding of weight rows (ggml's names and block layouts).
///
/// Block formats (little-endian, blocks of 32 along the row):
/// - `Q8_0`: 34 bytes = f16 `d`, 32 × i8 `q`; `w[j] = d·q[j]`.
/// - `Q4_0`: 18 bytes = f16 `d`, 16 bytes `qs`; `w[j] = d·((qs[j] & 15) − 8)`,
///   `w[j+16] = d·((qs[j] >> 4) − 8)` for `j < 16`.
/// - `Q4_1`: 20 bytes = f16 `d`, f16 `m`, 16 bytes `qs`; `w[j] = d·(qs[j] & 15) + m`,
///   `w[j+16] = d·(qs[j] >> 4) + m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QType {
    /// IEEE single precision, 4 bytes per value.
    F32,
    /// IEEE half precision, 2 bytes per value.
    F16,
    /// bfloat16 (the top half of an f32), 2 bytes per value.
    BF16,
    /// 8-bit blocks of 32 with an f16 scale (34 bytes per block).
    Q8_0,
    /// 4-bit blocks of 32 with an f16 scale, offset −8 (18 bytes per block).
    Q4_0,
    /// 4-bit blocks of 32 with an f16 scale and an f16 minimum (20 bytes per block).
    Q4_1,
}

/// ggml type ids with their names, elements per block and bytes per block (ggml.c's type
/// traits), for every type a GGUF file may hold; the six [`QType`]s are among them.
pub(crate) const GGML_TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

/// `(name, block_len, block_bytes)` of a ggml type id, or `None` for an unknown id.
pub(crate) fn ggml_type_info(id: u32) -> Option<(&'static str, usize, usize)> {
    GGML_TYPES
        .iter()
        .find(|t| t.0 == id)
        .map(|&(_, name, bl, bb)| (name, bl, bb))
}

/// The six supported types, in the order error messages list them.
const SUPPORTED: [QType; 6] = [
    QType::F32,
    QType::F16,
    QType::BF16,
    QType::Q8_0,
    QType::Q4_0,
    QType::Q4_1,
];

impl QType {
    /// ggml's name of the type, e.g. `"Q4_1"`.
    pub fn name(self) -> &'static str {
        match self {
            QType::F32 => "F32",
            QType::F16 => "F16",
            QType::BF16 => "BF16",
            QType::Q8_0 => "Q8_0",
            QType::Q4_0 => "Q4_0",
            QType::Q4_1 => "Q4_1",
        }
    }

    /// Elements per block: 1 for the float types, 32 for the block-quantised ones.
    pub fn block_len(self) -> usize {
        match self {
            QType::F32 | QType::F16 | QType::BF16 => 1,
            QType::Q8_0 | QType::Q4_0 | QType::Q4_1 => 32,
        }
    }

    /// Bytes per block: 4, 2, 2, 34, 18, 20 for F32, F16, BF16, Q8_0, Q4_0, Q4_1.
    pub fn block_bytes(self) -> usize {
        match self {
            QType::F32 => 4,
            QType::F16 | QType::BF16 => 2,
            QType::Q8_0 => 34,
            QType::Q4_0 => 18,
            QType::Q4_1 => 20,
        }
    }

    /// Bytes of a row of `cols` values, or `None` when `cols` is not a multiple of
    /// [`block_len`](Self::block_len) (or the size overflows).
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        if !cols.is_multiple_of(self.block_len()) {
            return None;
        }
        (cols / self.block_len()).checked_mul(self.block_bytes())
    }

    /// The type of ggml type id `id`.
    ///
    /// # Errors
    /// [`Error::Format`] naming the id (and ggml's name for it, when known) and the supported
    /// types, e.g. `ggml type 14 (Q6_K) is not supported; supported: F32, F16, BF16, Q8_0, Q4_0,
    /// Q4_1`.
    pub fn from_ggml(id: u32) -> Result<QType> {
        SUPPORTED
            .iter()
            .find(|t| t.ggml_id() == id)
            .copied()
            .ok_or_else(|| Error::format("QType::from_ggml", unsupported_message(id)))
    }

    /// ggml's id of the type (F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 8, BF16 30).
    pub fn ggml_id(self) -> u32 {
        match self {
            QType::F32 => 0,
            QType::F16 => 1,
            QType::Q4_0 => 2,
            QType::Q4_1 => 3,
            QType::Q8_0 => 8,
            QType::BF16 => 30,
        }
    }
}

/// The message of an unsupported ggml type, as used by the GGUF reader:
/// `"ggml type 14 (Q6_K) is not supported; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1"`.
pub(crate) fn unsupported_message(id: u32) -> String {
    let name = ggml_type_info(id).map_or("unknown", |t| t.0);
    format!(
        "ggml type {id} ({name}) is not supported; supported: {}",
        SUPPORTED.map(QType::name).join(", ")
    )
}

/// IEEE half precision → `f32`, exact (subnormals, infinities and NaN included).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m · 2^-24 (exact in f32).
            let v = m as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// `f32` → IEEE half precision, rounding to nearest even (what F16C's `vcvtps2ph`, ggml's
/// `GGML_FP32_TO_FP16` and numpy's `astype(float16)` do): overflow gives ±inf, NaN stays NaN.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x7f_ffff;
    if exp == 0xff {
        // inf or NaN (keep NaN quiet and non-zero).
        return sign
            | 0x7c00
            | if mant != 0 {
                0x200 | (mant >> 13) as u16
            } else {
                0
            };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal half (or zero): value = round(|x| · 2^24) units of 2^-24.
        if e < -10 {
            return sign;
        }
        let m = mant | 0x80_0000; // implicit bit
        let shift = (14 - e) as u32; // 24-bit mantissa → units of 2^-24
        let half = 1u32 << (shift - 1);
        let mut q = m >> shift;
        let rem = m & ((1 << shift) - 1);
        if rem > half || (rem == half && q & 1 == 1) {
            q += 1;
        }
        return sign | q as u16;
    }
    let mut h = ((e as u32) << 10) | (mant >> 13);
    let rem = mant & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && h & 1 == 1) {
        h += 1; // may carry into the exponent: correct, up to inf
    }
    sign | h as u16
}

/// bfloat16 → `f32` (exact: the bits are the top half of the f32).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `f32` → bfloat16, rounding to nearest even (PyTorch's conversion); NaN stays NaN.
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}
