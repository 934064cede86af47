//! The in-place ReLU path (`forward_owned` / `backward_owned`, what `Sequential` uses) gives
//! exactly the same output and input gradient as the allocating path, and a backward needs a
//! matching training forward.

use handgrad::layers::Relu;
use handgrad::{Layer, Mode, Tensor};
use ndarray::IxDyn;

fn data(n: usize) -> Tensor {
    Tensor::from_shape_fn(IxDyn(&[2, n]), |d| {
        (((d[0] * 31 + d[1] * 17) % 23) as f32 - 11.0) * 0.5
    })
}

#[test]
fn in_place_relu_matches_the_allocating_path_serial_and_parallel_sizes() {
    for n in [5, 64, 130, 40_000] {
        let x = data(n);
        let dout = data(n).mapv(|v| v * 0.3 + 0.1);
        let mut a = Relu::new();
        let ya = a.forward(&x, Mode::Train).unwrap();
        let da = a.backward(&dout).unwrap();
        let mut b = Relu::new();
        let yb = b.forward_owned(x.clone(), Mode::Train).unwrap();
        assert_eq!(ya, yb, "n = {n}: forward");
        let db = b.backward_owned(dout.clone()).unwrap();
        assert_eq!(da, db, "n = {n}: backward");
        // the borrowed backward after an owned forward uses the mask too
        assert_eq!(b.backward(&dout).unwrap(), da);
        // a wrongly shaped gradient is an error
        assert!(b.backward_owned(data(n + 1)).is_err());
        // an eval forward keeps nothing: no backward afterwards
        let mut c = Relu::new();
        c.forward_owned(x.clone(), Mode::Eval).unwrap();
        assert!(c.backward_owned(dout.clone()).is_err());
    }
}
