//! Shared test helpers: golden fixtures, `assert_close`, and finite-difference gradient checks.

use handgrad::Tensor;
use ndarray::{ArrayD, Dimension, IxDyn};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;

/// A golden fixture file from `tests/fixtures/` (PyTorch float64 references stored as f32).
pub struct Fixture {
    pub name: String,
    bytes: Vec<u8>,
    rtol: f32,
    atol: HashMap<String, f32>,
}

impl Fixture {
    /// Loads `tests/fixtures/<name>.safetensors` and its recommended tolerances.
    pub fn load(name: &str) -> Fixture {
        let path = format!(
            "{}/tests/fixtures/{name}.safetensors",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (_, meta) = SafeTensors::read_metadata(&bytes).expect("fixture header");
        let meta = meta.metadata().clone().expect("fixture metadata");
        let rtol: f32 = meta["recommended_rtol"].parse().expect("recommended_rtol");
        let atol_json: serde_json::Value =
            serde_json::from_str(&meta["recommended_atol"]).expect("recommended_atol json");
        let atol = atol_json
            .as_object()
            .expect("atol object")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().expect("atol number") as f32))
            .collect();
        Fixture {
            name: name.to_string(),
            bytes,
            rtol,
            atol,
        }
    }

    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("fixture parses")
    }

    /// The F32 tensor `key`.
    pub fn f32(&self, key: &str) -> Tensor {
        let st = self.view();
        let t = st
            .tensor(key)
            .unwrap_or_else(|_| panic!("{}: no tensor {key}", self.name));
        assert_eq!(t.dtype(), Dtype::F32, "{key} is not F32");
        let data: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        ArrayD::from_shape_vec(IxDyn(t.shape()), data).unwrap()
    }

    /// The I64 tensor `key`, flattened.
    pub fn i64(&self, key: &str) -> Vec<i64> {
        let st = self.view();
        let t = st
            .tensor(key)
            .unwrap_or_else(|_| panic!("{}: no tensor {key}", self.name));
        assert_eq!(t.dtype(), Dtype::I64, "{key} is not I64");
        t.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// The shape of tensor `key` (any dtype).
    pub fn shape(&self, key: &str) -> Vec<usize> {
        let st = self.view();
        let t = st
            .tensor(key)
            .unwrap_or_else(|_| panic!("{}: no tensor {key}", self.name));
        t.shape().to_vec()
    }

    /// The file's `__metadata__` entry `key`.
    pub fn meta(&self, key: &str) -> String {
        let (_, meta) = SafeTensors::read_metadata(&self.bytes).expect("fixture header");
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_else(|| panic!("{}: no metadata {key}", self.name))
    }

    /// The fixture's recommended (atol, rtol) for tensor `key`.
    pub fn tol(&self, key: &str) -> (f32, f32) {
        let atol = *self
            .atol
            .get(key)
            .unwrap_or_else(|| panic!("{}: no recommended atol for {key}", self.name));
        (atol, self.rtol)
    }

    /// Asserts `actual` matches tensor `key` within the fixture's tolerance for it.
    pub fn check(&self, key: &str, actual: &Tensor) {
        let (atol, rtol) = self.tol(key);
        assert_close(
            actual,
            &self.f32(key),
            atol,
            rtol,
            &format!("{}:{key}", self.name),
        );
    }
}

/// Asserts `|actual − expected| ≤ atol + rtol·|expected|` elementwise and equal shapes; the
/// failure message names the first bad index and the worst error.
pub fn assert_close(actual: &Tensor, expected: &Tensor, atol: f32, rtol: f32, what: &str) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shape");
    let mut first_bad = None;
    let mut worst = 0.0f32;
    for ((idx, &a), &e) in actual.indexed_iter().zip(expected.iter()) {
        let err = (a - e).abs();
        let ok = err <= atol + rtol * e.abs();
        if !ok || !a.is_finite() {
            worst = worst.max(err);
            if first_bad.is_none() {
                first_bad = Some((idx.slice().to_vec(), a, e));
            }
        }
    }
    if let Some((idx, a, e)) = first_bad {
        panic!(
            "{what}: first mismatch at {idx:?}: actual {a}, expected {e} (atol {atol}, rtol {rtol}); worst |err| {worst}"
        );
    }
}

/// A deterministic pseudo-random tensor in [-1, 1) (splitmix64).
pub fn random_tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

/// `Σ out ⊙ r` accumulated in f64: the scalar loss of the gradient checks.
pub fn weighted_sum(out: &Tensor, r: &Tensor) -> f64 {
    assert_eq!(out.shape(), r.shape());
    out.iter()
        .zip(r.iter())
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

/// Central finite differences of the scalar `loss(x)` with respect to every entry of `x`,
/// compared with `analytic` (the hand-written gradient). Fails naming the first bad entry.
///
/// `eps` is the step; the check passes when `|num − ana| ≤ tol·max(1, |num|, |ana|)`.
pub fn grad_check(
    what: &str,
    x: &Tensor,
    analytic: &Tensor,
    mut loss: impl FnMut(&Tensor) -> f64,
    eps: f32,
    tol: f64,
) {
    assert_eq!(x.shape(), analytic.shape(), "{what}: gradient shape");
    let mut xp = x.clone();
    let mut checked = 0;
    for i in 0..x.len() {
        let orig = xp.as_slice_mut().unwrap()[i];
        xp.as_slice_mut().unwrap()[i] = orig + eps;
        let lp = loss(&xp);
        xp.as_slice_mut().unwrap()[i] = orig - eps;
        let lm = loss(&xp);
        xp.as_slice_mut().unwrap()[i] = orig;
        let num = (lp - lm) / (2.0 * eps as f64);
        let ana = analytic.as_slice().unwrap()[i] as f64;
        let scale = 1.0f64.max(num.abs()).max(ana.abs());
        assert!(
            (num - ana).abs() <= tol * scale,
            "{what}: gradient entry {i}: finite difference {num}, analytic {ana}"
        );
        checked += 1;
    }
    assert!(checked > 0, "{what}: nothing checked");
}
