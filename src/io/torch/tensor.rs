//! [`TorchDType`] and [`TorchTensor`]: a tensor as `torch.save` stored it, in its own dtype.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use ndarray::IxDyn;

/// The element types of PyTorch storages that the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TorchDType {
    /// `torch.float32` (`FloatStorage`), 4 bytes.
    F32,
    /// `torch.float64` (`DoubleStorage`), 8 bytes.
    F64,
    /// `torch.float16` (`HalfStorage`), 2 bytes.
    F16,
    /// `torch.bfloat16` (`BFloat16Storage`), 2 bytes.
    BF16,
    /// `torch.int64` (`LongStorage`), 8 bytes.
    I64,
    /// `torch.int32` (`IntStorage`), 4 bytes.
    I32,
    /// `torch.int16` (`ShortStorage`), 2 bytes.
    I16,
    /// `torch.int8` (`CharStorage`), 1 byte.
    I8,
    /// `torch.uint8` (`ByteStorage`), 1 byte.
    U8,
    /// `torch.bool` (`BoolStorage`), 1 byte (0 or 1).
    Bool,
}

impl TorchDType {
    /// Every dtype, in the order of the table above.
    pub const ALL: [TorchDType; 10] = [
        TorchDType::F32,
        TorchDType::F64,
        TorchDType::F16,
        TorchDType::BF16,
        TorchDType::I64,
        TorchDType::I32,
        TorchDType::I16,
        TorchDType::I8,
        TorchDType::U8,
        TorchDType::Bool,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            TorchDType::F64 | TorchDType::I64 => 8,
            TorchDType::F32 | TorchDType::I32 => 4,
            TorchDType::F16 | TorchDType::BF16 | TorchDType::I16 => 2,
            TorchDType::I8 | TorchDType::U8 | TorchDType::Bool => 1,
        }
    }

    /// The storage class name in the `torch` module (`"FloatStorage"` for F32, …).
    pub fn storage_name(self) -> &'static str {
        match self {
            TorchDType::F32 => "FloatStorage",
            TorchDType::F64 => "DoubleStorage",
            TorchDType::F16 => "HalfStorage",
            TorchDType::BF16 => "BFloat16Storage",
            TorchDType::I64 => "LongStorage",
            TorchDType::I32 => "IntStorage",
            TorchDType::I16 => "ShortStorage",
            TorchDType::I8 => "CharStorage",
            TorchDType::U8 => "ByteStorage",
            TorchDType::Bool => "BoolStorage",
        }
    }

    /// The dtype of a storage class name (`"FloatStorage"` → F32), `None` for any other name.
    pub fn from_storage_name(name: &str) -> Option<TorchDType> {
        TorchDType::ALL
            .into_iter()
            .find(|d| d.storage_name() == name)
    }

    /// The safetensors spelling (`"F32"`, `"BF16"`, `"BOOL"`, …).
    pub fn name(self) -> &'static str {
        match self {
            TorchDType::F32 => "F32",
            TorchDType::F64 => "F64",
            TorchDType::F16 => "F16",
            TorchDType::BF16 => "BF16",
            TorchDType::I64 => "I64",
            TorchDType::I32 => "I32",
            TorchDType::I16 => "I16",
            TorchDType::I8 => "I8",
            TorchDType::U8 => "U8",
            TorchDType::Bool => "BOOL",
        }
    }
}

/// A tensor read from a PyTorch file, in its stored dtype: a contiguous row-major copy (views,
/// strides and storage offsets already applied), little-endian bytes.
///
/// # Shapes
/// `shape` is the tensor's size (`[]` for a 0-d tensor); `data.len() == numel · dtype.size()`.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchTensor {
    /// The element type.
    pub dtype: TorchDType,
    /// The size of each dimension, slowest first.
    pub shape: Vec<usize>,
    /// The elements, contiguous row-major, little-endian.
    pub data: Vec<u8>,
}

impl TorchTensor {
    /// The number of elements (1 for a 0-d tensor, 0 for an empty one).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as an `f32` [`Tensor`] of the same shape: floats rounded to the nearest `f32`
    /// (F64), widened exactly (F16, BF16) or copied (F32); integers converted as `i as f32`;
    /// booleans as 0.0 / 1.0.
    ///
    /// ```
    /// use handgrad::io::torch::{TorchDType, TorchTensor};
    /// let t = TorchTensor { dtype: TorchDType::I64, shape: vec![2], data: [3i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect() };
    /// assert_eq!(t.to_f32()?.as_slice().unwrap(), &[3.0, -1.0]);
    /// # Ok::<(), handgrad::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Format`] if `data` does not hold `numel · dtype.size()` bytes.
    pub fn to_f32(&self) -> Result<Tensor> {
        let want = self
            .shape
            .iter()
            .try_fold(self.dtype.size(), |a, &d| a.checked_mul(d));
        if want != Some(self.data.len()) {
            return Err(Error::format(
                "TorchTensor",
                format!(
                    "{} tensor of shape {:?} holds {} bytes, expected {:?}",
                    self.dtype.name(),
                    self.shape,
                    self.data.len(),
                    want
                ),
            ));
        }
        let d = &self.data;
        let values: Vec<f32> = match self.dtype {
            TorchDType::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            TorchDType::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            TorchDType::F16 => d
                .chunks_exact(2)
                .map(|c| crate::io::safetensors::f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            TorchDType::BF16 => d
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            TorchDType::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            TorchDType::I32 => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            TorchDType::I16 => d
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
                .collect(),
            TorchDType::I8 => d.iter().map(|&b| b as i8 as f32).collect(),
            TorchDType::U8 => d.iter().map(|&b| b as f32).collect(),
            TorchDType::Bool => d.iter().map(|&b| if b != 0 { 1.0 } else { 0.0 }).collect(),
        };
        Tensor::from_shape_vec(IxDyn(&self.shape), values)
            .map_err(|e| Error::format("TorchTensor", format!("shape {:?}: {e}", self.shape)))
    }

    /// An F32 tensor holding a copy of `t` (what [`super::save_state_dict`] writes).
    pub fn from_f32(t: &Tensor) -> TorchTensor {
        TorchTensor {
            dtype: TorchDType::F32,
            shape: t.shape().to_vec(),
            data: t.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

impl From<&Tensor> for TorchTensor {
    fn from(t: &Tensor) -> TorchTensor {
        TorchTensor::from_f32(t)
    }
}

/// Where a tensor's elements sit in its storage: element `offset + Σ i_d · stride_d`.
///
/// # Shapes
/// `shape` and `stride` have one entry per dimension.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct View {
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl View {
    /// The number of elements, or an error when the product overflows.
    pub fn numel(&self) -> std::result::Result<usize, String> {
        self.shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor size {:?} overflows the element count", self.shape))
    }

    /// Checks that every element index is inside a storage of `storage_numel` elements
    /// (`offset + Σ (size_d − 1) · stride_d < storage_numel`; empty tensors only need
    /// `offset <= storage_numel`). Returns the element count.
    pub fn check(&self, storage_numel: usize) -> std::result::Result<usize, String> {
        let numel = self.numel()?;
        if numel == 0 {
            return if self.offset <= storage_numel {
                Ok(0)
            } else {
                Err(format!(
                    "storage offset {} lies beyond the storage of {storage_numel} elements",
                    self.offset
                ))
            };
        }
        let last = self
            .shape
            .iter()
            .zip(&self.stride)
            .try_fold(self.offset, |a, (&n, &s)| {
                a.checked_add((n - 1).checked_mul(s)?)
            });
        match last {
            Some(l) if l < storage_numel => Ok(numel),
            _ => Err(format!(
                "view (size {:?}, stride {:?}, offset {}) reads element {} of a storage of \
                 {storage_numel} elements",
                self.shape,
                self.stride,
                self.offset,
                last.map_or("beyond usize".to_string(), |l| l.to_string())
            )),
        }
    }

    /// The contiguous row-major copy of this view over `storage` (raw bytes of `elem` bytes per
    /// element). The caller has [`View::check`]ed the view against the storage.
    pub fn gather(&self, storage: &[u8], elem: usize, numel: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(numel * elem);
        if numel == 0 {
            return out;
        }
        let rank = self.shape.len();
        let contiguous = (0..rank).all(|d| {
            self.shape[d] == 1 || self.stride[d] == self.shape[d + 1..].iter().product::<usize>()
        });
        if contiguous {
            let start = self.offset * elem;
            out.extend_from_slice(&storage[start..start + numel * elem]);
            return out;
        }
        // Odometer over all but the last dimension; the last one is a strided run.
        let (inner_n, inner_s) = (self.shape[rank - 1], self.stride[rank - 1]);
        let mut idx = vec![0usize; rank - 1];
        let mut base = self.offset;
        loop {
            for j in 0..inner_n {
                let at = (base + j * inner_s) * elem;
                out.extend_from_slice(&storage[at..at + elem]);
            }
            // advance the odometer
            let mut d = rank - 1;
            loop {
                if d == 0 {
                    return out;
                }
                d -= 1;
                idx[d] += 1;
                base += self.stride[d];
                if idx[d] < self.shape[d] {
                    break;
                }
                base -= self.stride[d] * self.shape[d];
                idx[d] = 0;
            }
        }
    }
}
