//! [`GgufValue`]: one metadata value of a GGUF file, with ggml's value-type ids.

/// A GGUF metadata value (every type of the GGUF spec; arrays may nest).
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    /// `uint8` (type 0).
    U8(u8),
    /// `int8` (type 1).
    I8(i8),
    /// `uint16` (type 2).
    U16(u16),
    /// `int16` (type 3).
    I16(i16),
    /// `uint32` (type 4).
    U32(u32),
    /// `int32` (type 5).
    I32(i32),
    /// `uint64` (type 10).
    U64(u64),
    /// `int64` (type 11).
    I64(i64),
    /// `float32` (type 6).
    F32(f32),
    /// `float64` (type 12).
    F64(f64),
    /// `bool` (type 7, one byte 0 or 1).
    Bool(bool),
    /// `string` (type 8, u64 length + UTF-8 bytes).
    String(String),
    /// `array` (type 9: element type, u64 count, elements of that one type).
    Array(Vec<GgufValue>),
}

/// GGUF value-type ids.
pub(crate) mod tid {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// The spec's name of value-type id `t` (`"uint32"`, …), or `None` for an unknown id.
pub(crate) fn type_id_name(t: u32) -> Option<&'static str> {
    Some(match t {
        tid::U8 => "uint8",
        tid::I8 => "int8",
        tid::U16 => "uint16",
        tid::I16 => "int16",
        tid::U32 => "uint32",
        tid::I32 => "int32",
        tid::F32 => "float32",
        tid::BOOL => "bool",
        tid::STRING => "string",
        tid::ARRAY => "array",
        tid::U64 => "uint64",
        tid::I64 => "int64",
        tid::F64 => "float64",
        _ => return None,
    })
}

impl GgufValue {
    /// The value as `u64` if it is an integer of any type and not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as `i64` if it is an integer of any type that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v as i64),
            GgufValue::I16(v) => Some(v as i64),
            GgufValue::I32(v) => Some(v as i64),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as `f64` if it is a float (`float32` widens exactly) or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as `&str` if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements if the value is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The spec's type name: `"uint8"`, …, `"float64"`, `"bool"`, `"string"`, `"array"`.
    pub fn type_name(&self) -> &'static str {
        type_id_name(self.type_id()).expect("every variant has a type id")
    }

    /// The GGUF value-type id.
    pub(crate) fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => tid::U8,
            GgufValue::I8(_) => tid::I8,
            GgufValue::U16(_) => tid::U16,
            GgufValue::I16(_) => tid::I16,
            GgufValue::U32(_) => tid::U32,
            GgufValue::I32(_) => tid::I32,
            GgufValue::U64(_) => tid::U64,
            GgufValue::I64(_) => tid::I64,
            GgufValue::F32(_) => tid::F32,
            GgufValue::F64(_) => tid::F64,
            GgufValue::Bool(_) => tid::BOOL,
            GgufValue::String(_) => tid::STRING,
            GgufValue::Array(_) => tid::ARRAY,
        }
    }

    /// A short description for error messages: the type, and the element type for arrays
    /// (`"array<string>"`).
    pub(crate) fn describe(&self) -> String {
        match self {
            GgufValue::Array(a) => match a.first() {
                Some(e) => format!("array<{}>", e.describe()),
                None => "array (empty)".to_string(),
            },
            v => v.type_name().to_string(),
        }
    }
}
