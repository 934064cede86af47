//! Flatten: PyTorch `x.flatten(1)` order on NCHW, backward reshape, gradient check, errors.

use crate::common;

use common::{grad_check, random_tensor, weighted_sum};
use handgrad::layers::{Dense, Flatten, Layer, MaxPool2d, Mode};
use handgrad::{Error, Sequential, Tensor};
use ndarray::IxDyn;

fn rng() -> handgrad::init::Rng {
    handgrad::init::rng(0)
}

#[test]
fn order_matches_pytorch_flatten_1_of_nchw() {
    let (b, c, h, w) = (2, 3, 4, 5);
    let x = Tensor::from_shape_fn(IxDyn(&[b, c, h, w]), |d| {
        (1000 * d[0] + 100 * d[1] + 10 * d[2] + d[3]) as f32
    });
    let mut f = Flatten::new();
    assert_eq!(f.build(&[c, h, w], &mut rng()).unwrap(), [c * h * w]);
    let y = f.forward(&x, Mode::Train).unwrap();
    assert_eq!(y.shape(), [b, c * h * w]);
    for n in 0..b {
        for ch in 0..c {
            for i in 0..h {
                for j in 0..w {
                    // feature = c·H·W + i·W + j (channel-major, row-major inside a channel)
                    assert_eq!(y[[n, ch * h * w + i * w + j]], x[[n, ch, i, j]]);
                }
            }
        }
    }
}

#[test]
fn logical_order_is_kept_for_non_standard_layouts() {
    // An NHWC buffer permuted to an NCHW view: flatten follows the logical NCHW order.
    let nhwc = random_tensor(&[2, 4, 5, 3], 1);
    let x = nhwc.permuted_axes(IxDyn(&[0, 3, 1, 2]));
    assert!(!x.is_standard_layout());
    let y = Flatten::new().forward(&x, Mode::Eval).unwrap();
    let want = x
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(&[2, 60]))
        .unwrap();
    assert_eq!(y, want);
}

#[test]
fn backward_restores_the_input_shape() {
    let x = random_tensor(&[3, 2, 3, 4], 2);
    let mut f = Flatten::new();
    f.build(&[2, 3, 4], &mut rng()).unwrap();
    f.forward(&x, Mode::Train).unwrap();
    let dy = random_tensor(&[3, 24], 3);
    let dx = f.backward(&dy).unwrap();
    assert_eq!(dx.shape(), x.shape());
    assert_eq!(
        dx.iter().copied().collect::<Vec<_>>(),
        dy.iter().copied().collect::<Vec<_>>()
    );
}

#[test]
fn gradient_is_the_identity_by_finite_differences() {
    let x = random_tensor(&[2, 3, 2, 2], 4);
    let mut f = Flatten::new();
    f.build(&[3, 2, 2], &mut rng()).unwrap();
    let r = random_tensor(&[2, 12], 5);
    f.forward(&x, Mode::Train).unwrap();
    let dx = f.backward(&r).unwrap();
    let loss = |xp: &Tensor| weighted_sum(&Flatten::new().forward(xp, Mode::Eval).unwrap(), &r);
    grad_check("Flatten dx", &x, &dx, loss, 1e-2, 1e-4);
}

#[test]
fn works_in_any_rank_and_inside_a_sequential() {
    let mut f = Flatten::default();
    assert_eq!(
        f.forward(&random_tensor(&[4, 7], 1), Mode::Eval)
            .unwrap()
            .shape(),
        [4, 7]
    );
    assert_eq!(
        f.forward(&random_tensor(&[4, 2, 3], 1), Mode::Eval)
            .unwrap()
            .shape(),
        [4, 6]
    );
    let mut model = Sequential::new(&[3, 8, 8])
        .add(MaxPool2d::new(2))
        .add(Flatten::new())
        .add(Dense::new(5))
        .build(&mut rng())
        .unwrap();
    assert_eq!(model.output_shape(), [5]);
    let x = random_tensor(&[2, 3, 8, 8], 9);
    let y = model.forward(&x, Mode::Train).unwrap();
    let dx = model.backward(&Tensor::ones(y.raw_dim())).unwrap();
    assert_eq!(dx.shape(), x.shape());
}

#[test]
fn rank_1_input_and_mismatched_shapes_are_errors() {
    let mut f = Flatten::new();
    let err = f
        .forward(&Tensor::zeros(IxDyn(&[5])), Mode::Train)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    assert!(
        msg.contains("Flatten") && msg.contains("rank >= 2") && msg.contains("[5]"),
        "{msg}"
    );
    let msg = f.build(&[], &mut rng()).unwrap_err().to_string();
    assert!(
        msg.contains("Flatten") && msg.contains("rank >= 1") && msg.contains("[]"),
        "{msg}"
    );

    f.build(&[3, 4, 4], &mut rng()).unwrap();
    let msg = f
        .forward(&Tensor::zeros(IxDyn(&[2, 4, 4, 3])), Mode::Train)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("(B, 3, 4, 4)") && msg.contains("[2, 4, 4, 3]"),
        "{msg}"
    );

    assert!(matches!(
        f.backward(&Tensor::zeros(IxDyn(&[2, 48]))),
        Err(Error::State(_))
    ));
    f.forward(&Tensor::zeros(IxDyn(&[2, 3, 4, 4])), Mode::Train)
        .unwrap();
    let msg = f
        .backward(&Tensor::zeros(IxDyn(&[2, 47])))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("[2, 48]") && msg.contains("[2, 47]"), "{msg}");
}
