//! Image tensors (NHWC u8 ↔ NCHW f32, normalisation) and seeded augmentation.

use handgrad::data::{
    channel_stats, denormalize, from_nhwc_u8, normalize, to_nhwc_u8, Augment, Dataset,
};
use handgrad::init::{rng, Rng};
use handgrad::{Error, Tensor};
use ndarray::{s, ArrayD, IxDyn};
use rand::Rng as _;

fn batch(shape: &[usize], seed: u64) -> Tensor {
    // Values in [0.1, 1.1): never zero, so zero padding is recognisable.
    let mut r = rng(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || 0.1 + r.random::<f32>())
}

#[test]
fn from_nhwc_u8_moves_channels_to_axis_1() {
    let (n, h, w, c) = (2, 3, 4, 3);
    let data: Vec<u8> = (0..n * h * w * c).map(|i| (i * 5 % 256) as u8).collect();
    let x = from_nhwc_u8(&data, n, h, w, c).unwrap();
    assert_eq!(x.shape(), &[n, c, h, w]);
    for i in 0..n {
        for y in 0..h {
            for xx in 0..w {
                for ch in 0..c {
                    let byte = data[((i * h + y) * w + xx) * c + ch];
                    assert_eq!(
                        x[[i, ch, y, xx]],
                        byte as f32 / 255.0,
                        "({i},{y},{xx},{ch})"
                    );
                }
            }
        }
    }
    // C = 1 (grey) is a plain reshape.
    let g = from_nhwc_u8(&data, 6, 3, 4, 1).unwrap();
    assert_eq!(g.shape(), &[6, 1, 3, 4]);
    assert_eq!(g[[1, 0, 2, 3]], data[12 + 11] as f32 / 255.0);
    match from_nhwc_u8(&data, 2, 3, 4, 2) {
        Err(Error::Shape { op, expected, got }) => {
            assert_eq!(op, "from_nhwc_u8");
            assert!(expected.contains("(2, 3, 4, 2)"), "{expected}");
            assert_eq!(got, vec![72]);
        }
        other => panic!("expected Error::Shape, got {other:?}"),
    }
}

#[test]
fn to_nhwc_u8_round_trips_and_clamps() {
    let data: Vec<u8> = (0..=255u8).chain(0..=255u8).rev().collect();
    let x = from_nhwc_u8(&data, 2, 4, 16, 4).unwrap();
    assert_eq!(to_nhwc_u8(&x).unwrap(), data);
    // Non-standard layouts (an NHWC buffer viewed as NCHW) work too.
    let nhwc = x
        .view()
        .permuted_axes(IxDyn(&[0, 2, 3, 1]))
        .as_standard_layout()
        .into_owned();
    let back = nhwc.permuted_axes(IxDyn(&[0, 3, 1, 2]));
    assert!(!back.is_standard_layout());
    assert_eq!(to_nhwc_u8(&back).unwrap(), data);
    let y = Augment::new().apply(&back, &mut rng(0)).unwrap();
    assert_eq!(y, x);
    let odd = Tensor::from_shape_vec(
        IxDyn(&[1, 1, 1, 6]),
        vec![-0.5, 1.7, 0.5, f32::NAN, 0.998, 0.001],
    )
    .unwrap();
    assert_eq!(to_nhwc_u8(&odd).unwrap(), vec![0, 255, 128, 0, 254, 0]);
    assert!(matches!(
        to_nhwc_u8(&Tensor::zeros(IxDyn(&[2, 3]))),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn normalize_per_channel_values() {
    let x0 = batch(&[2, 3, 2, 2], 1);
    let mean = [0.1, 0.2, 0.3];
    let std = [0.5, 0.25, 2.0];
    let mut x = x0.clone();
    normalize(&mut x, &mean, &std).unwrap();
    for ((i, &v0), &v) in x0.indexed_iter().zip(x.iter()) {
        let c = i[1];
        assert_eq!(v, (v0 - mean[c]) / std[c], "{i:?}");
    }
    denormalize(&mut x, &mean, &std).unwrap();
    for (a, b) in x.iter().zip(x0.iter()) {
        assert!((a - b).abs() < 1e-6);
    }
    // Statistics from the data normalise it to mean 0, std 1 per channel.
    let big = batch(&[50, 3, 4, 4], 2);
    let (m, sd) = channel_stats(&big).unwrap();
    let mut z = big.clone();
    normalize(&mut z, &m, &sd).unwrap();
    let (zm, zs) = channel_stats(&z).unwrap();
    for c in 0..3 {
        assert!(
            zm[c].abs() < 1e-5 && (zs[c] - 1.0).abs() < 1e-4,
            "{zm:?} {zs:?}"
        );
    }
    // The Dataset convenience.
    let ds = Dataset::new(big.clone(), vec![0; 50]).unwrap();
    let ds = ds.normalized(&m, &sd).unwrap();
    assert_eq!(ds.inputs(), &z);
    // (N, C) features work too: the channel axis is axis 1.
    let mut f = Tensor::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    normalize(&mut f, &[1.0, 2.0], &[2.0, 1.0]).unwrap();
    assert_eq!(f.as_slice().unwrap(), &[0.0, 0.0, 1.0, 2.0]);
}

#[test]
fn normalize_errors() {
    let mut x = batch(&[2, 3, 2, 2], 1);
    let msg = |r: handgrad::Result<()>| r.unwrap_err().to_string();
    let m = msg(normalize(&mut x, &[0.0, 0.0], &[1.0, 1.0, 1.0]));
    assert!(
        m.contains("mean") && m.contains("3 values, one per channel"),
        "{m}"
    );
    let m = msg(normalize(&mut x, &[0.0; 3], &[1.0; 4]));
    assert!(m.contains("std") && m.contains("4 values"), "{m}");
    let m = msg(normalize(&mut x, &[0.0; 3], &[1.0, 0.0, 1.0]));
    assert!(m.contains("std = 0") && m.contains("> 0"), "{m}");
    let m = msg(normalize(&mut x, &[0.0; 3], &[1.0, -2.0, 1.0]));
    assert!(m.contains("std = -2"), "{m}");
    let m = msg(normalize(&mut x, &[0.0, f32::NAN, 0.0], &[1.0; 3]));
    assert!(m.contains("mean = NaN"), "{m}");
    let mut v = Tensor::zeros(IxDyn(&[3]));
    assert!(matches!(
        normalize(&mut v, &[0.0], &[1.0]),
        Err(Error::Shape { .. })
    ));
    // Nothing was changed by the failed calls.
    assert_eq!(x, batch(&[2, 3, 2, 2], 1));
}

/// A straightforward reference of the documented draws and pixel mapping.
fn reference(aug_p: usize, flip_prob: f32, x: &Tensor, r: &mut Rng) -> Tensor {
    let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let mut out = Tensor::zeros(IxDyn(x.shape()));
    let p = aug_p as i64;
    for i in 0..n {
        let (top, left) = if aug_p > 0 {
            let t = r.random_range(0..=2 * aug_p as u64) as i64;
            (t, r.random_range(0..=2 * aug_p as u64) as i64)
        } else {
            (0, 0)
        };
        let flip = flip_prob > 0.0 && r.random::<f32>() < flip_prob;
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    let cx = if flip { w - 1 - xx } else { xx } as i64;
                    let (sy, sx) = (y as i64 + top - p, cx + left - p);
                    if (0..h as i64).contains(&sy) && (0..w as i64).contains(&sx) {
                        out[[i, ch, y, xx]] = x[[i, ch, sy as usize, sx as usize]];
                    }
                }
            }
        }
    }
    out
}

#[test]
fn augment_matches_reference_and_is_seeded() {
    let x = batch(&[16, 3, 8, 8], 3);
    let aug = Augment::new().random_crop(3).horizontal_flip(0.5);
    let a = aug.apply(&x, &mut rng(7)).unwrap();
    let b = aug.apply(&x, &mut rng(7)).unwrap();
    let c = aug.apply(&x, &mut rng(8)).unwrap();
    assert_eq!(a.shape(), x.shape());
    assert_eq!(a, b, "same seed, same batch");
    assert_ne!(a, c, "different seed, different batch");
    assert_eq!(a, reference(3, 0.5, &x, &mut rng(7)));
    // The rng advances exactly as documented: a second call continues the stream.
    let mut r1 = rng(9);
    let mut r2 = rng(9);
    let _ = aug.apply(&x, &mut r1).unwrap();
    let second = aug.apply(&x, &mut r1).unwrap();
    let _ = reference(3, 0.5, &x, &mut r2);
    assert_eq!(second, reference(3, 0.5, &x, &mut r2));
    // Padding larger than the image, only crop, only flip.
    for (p, f) in [(10, 0.0), (1, 0.0), (0, 0.3), (0, 0.0)] {
        let aug = Augment::new().random_crop(p).horizontal_flip(f);
        let got = aug.apply(&x, &mut rng(11)).unwrap();
        assert_eq!(
            got,
            reference(p, f, &x, &mut rng(11)),
            "padding {p} flip {f}"
        );
    }
    assert_eq!(Augment::new().apply(&x, &mut rng(0)).unwrap(), x);
}

#[test]
fn flip_is_an_exact_mirror() {
    let x = batch(&[4, 2, 5, 7], 4);
    let y = Augment::new()
        .horizontal_flip(1.0)
        .apply(&x, &mut rng(0))
        .unwrap();
    assert_eq!(y, x.slice(s![.., .., .., ..;-1]).to_owned().into_dyn());
    // Probability 0.5 flips about half of 2,000 images.
    let many = batch(&[2000, 1, 1, 2], 5);
    let out = Augment::new()
        .horizontal_flip(0.5)
        .apply(&many, &mut rng(1))
        .unwrap();
    let flipped = (0..2000)
        .filter(|&i| out[[i, 0, 0, 0]] != many[[i, 0, 0, 0]])
        .count();
    assert!((900..1100).contains(&flipped), "{flipped} of 2000 flipped");
}

#[test]
fn crop_is_a_shifted_copy_with_zero_borders() {
    let p = 2usize;
    let x = batch(&[32, 3, 6, 5], 6);
    let y = Augment::new()
        .random_crop(p)
        .apply(&x, &mut rng(3))
        .unwrap();
    assert_eq!(y.shape(), x.shape());
    let (h, w) = (6i64, 5i64);
    let mut shifts = std::collections::HashSet::new();
    for i in 0..32 {
        // Exactly one shift (dy, dx) ∈ [−p, p]² explains the output image.
        let matches: Vec<(i64, i64)> = (-(p as i64)..=p as i64)
            .flat_map(|dy| (-(p as i64)..=p as i64).map(move |dx| (dy, dx)))
            .filter(|&(dy, dx)| {
                (0..3).all(|c| {
                    (0..h).all(|yy| {
                        (0..w).all(|xx| {
                            let (sy, sx) = (yy + dy, xx + dx);
                            let want = if (0..h).contains(&sy) && (0..w).contains(&sx) {
                                x[[i, c, sy as usize, sx as usize]]
                            } else {
                                0.0
                            };
                            y[[i, c, yy as usize, xx as usize]] == want
                        })
                    })
                })
            })
            .collect();
        assert_eq!(matches.len(), 1, "image {i}: shifts {matches:?}");
        shifts.insert(matches[0]);
    }
    assert!(shifts.len() > 5, "only shifts {shifts:?}");
}

#[test]
fn augment_is_identical_on_one_and_two_threads() {
    let x = batch(&[64, 3, 16, 16], 8);
    let aug = Augment::new().random_crop(4).horizontal_flip(0.5);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let img = from_nhwc_u8(&[7u8; 64 * 16 * 16 * 3], 64, 16, 16, 3).unwrap();
                let mut n = img.clone();
                normalize(&mut n, &[0.5; 3], &[0.25; 3]).unwrap();
                (aug.apply(&x, &mut rng(5)).unwrap(), n)
            })
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn augment_errors() {
    let x = batch(&[2, 1, 4, 4], 0);
    let e = Augment::new()
        .horizontal_flip(1.5)
        .apply(&x, &mut rng(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("1.5") && e.contains("[0, 1]"), "{e}");
    assert!(Augment::new().horizontal_flip(f32::NAN).validate().is_err());
    match Augment::new().apply(&batch(&[1, 4, 4], 0), &mut rng(0)) {
        Err(Error::Shape { expected, got, .. }) => {
            assert!(expected.contains("(N, C, H, W)"));
            assert_eq!(got, vec![1, 4, 4]);
        }
        other => panic!("expected Error::Shape, got {other:?}"),
    }
}
