//! Photos: Pillow-exact preprocessing against the stored PIL tensors, the JPEG decoder against
//! PIL's pixels, PNG conversions, hostile headers, error messages, ImageNet class names.

use crate::common::Fixture;
use handgrad::vision::{
    self, decode_rgb, imagenet, load_rgb, resize, transforms, Filter, Preprocess, RgbImage,
};
use std::path::PathBuf;

fn fixture(photo: &str) -> Fixture {
    Fixture::load(&format!("vision/effnet_lite0_{photo}"))
}

/// The raw bytes of a U8 tensor of a fixture file.
fn u8_tensor(photo: &str, key: &str) -> (Vec<usize>, Vec<u8>) {
    let path = format!(
        "{}/tests/fixtures/vision/effnet_lite0_{photo}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::U8, "{key}");
    (t.shape().to_vec(), t.data().to_vec())
}

fn pil_rgb(photo: &str) -> RgbImage {
    let (shape, data) = u8_tensor(photo, "image_rgb");
    assert_eq!(shape.len(), 3);
    RgbImage::new(shape[1], shape[0], data).unwrap()
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("handgrad-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn preprocessing_is_bit_exact_with_pil_and_torchvision() {
    for photo in ["china", "flower"] {
        let img = pil_rgb(photo);
        assert_eq!((img.w(), img.h()), (640, 427));
        let resized = vision::resize_short_side(&img, 256, Filter::Bicubic).unwrap();
        assert_eq!(
            (resized.w(), resized.h()),
            (383, 256),
            "{photo}: torchvision Resize(256)"
        );
        assert_eq!(transforms::center_offsets(383, 256, 224, 224), (80, 16));
        let x = Preprocess::imagenet_eval(224).apply(&img).unwrap();
        let want = fixture(photo).f32("input");
        assert_eq!(x.shape(), want.shape());
        let bad = x
            .iter()
            .zip(want.iter())
            .enumerate()
            .find(|(_, (a, b))| a.to_bits() != b.to_bits());
        assert!(bad.is_none(), "{photo}: first differing value {bad:?}");
    }
}

#[test]
fn jpeg_decoder_is_within_the_measured_tolerance_of_pil() {
    let photos = vision::sample_photos();
    for (photo, (file, bytes)) in ["china", "flower"].iter().zip(photos) {
        assert_eq!(file, format!("{photo}.jpg"));
        let (_, jpeg) = u8_tensor(photo, "jpeg");
        assert_eq!(
            bytes,
            &jpeg[..],
            "{file}: embedded bytes = the fixture's JPEG"
        );
        let ours = decode_rgb(bytes, file).unwrap();
        let pil = pil_rgb(photo);
        assert_eq!((ours.w(), ours.h()), (pil.w(), pil.h()));
        let diffs: Vec<u8> = ours
            .data()
            .iter()
            .zip(pil.data())
            .map(|(a, b)| a.abs_diff(*b))
            .collect();
        let max = *diffs.iter().max().unwrap();
        let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
        eprintln!("{file}: decoder vs PIL: max |diff| {max}, mean |diff| {mean:.4}");
        assert!(max <= 8, "{file}: max |diff| {max} > 8 levels");
        assert!(mean <= 1.0, "{file}: mean |diff| {mean} > 1.0");
        // end to end (our decoder, then the exact resampler) vs the stored model input
        let x = Preprocess::imagenet_eval(224).apply(&ours).unwrap();
        let want = fixture(photo).f32("input");
        let d: Vec<f32> = x
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .collect();
        let dmax = d.iter().cloned().fold(0.0, f32::max);
        let dmean = d.iter().sum::<f32>() / d.len() as f32;
        eprintln!("{file}: input vs PIL pipeline: max |diff| {dmax}, mean |diff| {dmean:.5}");
        assert!(
            dmax <= 0.04 && dmean <= 0.003,
            "{file}: input max {dmax}, mean {dmean}"
        );
    }
}

#[test]
fn load_batch_decodes_files_in_parallel_in_order() {
    let dir = temp_dir("load-batch");
    let mut paths = Vec::new();
    for (name, bytes) in vision::sample_photos() {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        paths.push(p);
    }
    paths.push(paths[0].clone());
    let pre = Preprocess::imagenet_eval(224);
    let batch = pre.load_batch(&paths).unwrap();
    assert_eq!(batch.shape(), &[3, 3, 224, 224]);
    for (i, p) in paths.iter().enumerate() {
        let one = pre.apply(&load_rgb(p).unwrap()).unwrap();
        let row = batch.index_axis(ndarray::Axis(0), i);
        assert!(
            row.iter()
                .zip(one.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "image {i}"
        );
    }
    // a missing file among them is named
    paths.push(dir.join("missing.jpg"));
    let err = pre.load_batch(&paths).unwrap_err().to_string();
    assert!(err.contains("missing.jpg"), "{err}");
}

#[test]
fn png_round_trips_and_converts_like_pil() {
    let dir = temp_dir("png");
    let (w, h) = (5u32, 3u32);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 17 % 256) as u8).collect();
    let p = dir.join("rgb.png");
    image::RgbImage::from_raw(w, h, rgb.clone())
        .unwrap()
        .save(&p)
        .unwrap();
    let img = load_rgb(&p).unwrap();
    assert_eq!((img.w(), img.h()), (5, 3));
    assert_eq!(img.data(), rgb);

    // grey → R = G = B
    let grey: Vec<u8> = (0..w * h).map(|i| (i * 13) as u8).collect();
    let p = dir.join("grey.png");
    image::GrayImage::from_raw(w, h, grey.clone())
        .unwrap()
        .save(&p)
        .unwrap();
    let img = load_rgb(&p).unwrap();
    let want: Vec<u8> = grey.iter().flat_map(|&g| [g, g, g]).collect();
    assert_eq!(img.data(), want);

    // RGBA → alpha dropped, not blended
    let rgba: Vec<u8> = (0..w * h * 4).map(|i| (i * 7 % 256) as u8).collect();
    let p = dir.join("rgba.png");
    image::RgbaImage::from_raw(w, h, rgba.clone())
        .unwrap()
        .save(&p)
        .unwrap();
    let img = load_rgb(&p).unwrap();
    let want: Vec<u8> = rgba.chunks(4).flat_map(|q| [q[0], q[1], q[2]]).collect();
    assert_eq!(img.data(), want);

    // 16-bit RGB → the high byte
    let rgb16: Vec<u16> = (0..w * h * 3).map(|i| (i * 2039 % 65536) as u16).collect();
    let p = dir.join("rgb16.png");
    image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(w, h, rgb16.clone())
        .unwrap()
        .save(&p)
        .unwrap();
    let img = load_rgb(&p).unwrap();
    let want: Vec<u8> = rgb16.iter().map(|&v| (v >> 8) as u8).collect();
    assert_eq!(img.data(), want);

    // 16-bit grey → the high byte too (Pillow would clip to 255; see image_io's docs)
    let grey16: Vec<u16> = (0..w * h).map(|i| (i * 4099 % 65536) as u16).collect();
    let p = dir.join("grey16.png");
    image::ImageBuffer::<image::Luma<u16>, _>::from_raw(w, h, grey16.clone())
        .unwrap()
        .save(&p)
        .unwrap();
    let img = load_rgb(&p).unwrap();
    let want: Vec<u8> = grey16.iter().flat_map(|&v| [(v >> 8) as u8; 3]).collect();
    assert_eq!(img.data(), want);
}

#[test]
fn bad_files_give_errors_that_name_them() {
    let dir = temp_dir("bad-files");
    let (_, jpeg) = vision::sample_photos()[0];
    let cases: [(&str, &[u8]); 3] = [
        ("truncated.jpg", &jpeg[..jpeg.len() / 3]),
        ("notes.jpg", b"this is a text file, not a photo\n"),
        ("empty.png", b""),
    ];
    for (name, bytes) in cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let err = load_rgb(&p).unwrap_err().to_string();
        assert!(err.contains(name), "{name}: {err}");
    }
    let err = load_rgb(dir.join("nowhere.jpg")).unwrap_err();
    assert!(matches!(err, handgrad::Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nowhere.jpg"), "{err}");
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn huge_declared_dimensions_are_errors_not_allocations() {
    // a PNG header declaring 100000 × 100000 RGB pixels (30 GB) over a few bytes
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    let err = decode_rgb(&png, "huge.png").unwrap_err().to_string();
    assert!(err.contains("huge.png"), "{err}");

    // the china JPEG with its frame header patched to 60000 × 60000
    let mut jpeg = vision::sample_photos()[0].1.to_vec();
    let sof = jpeg
        .windows(2)
        .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC2))
        .expect("a SOF marker");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    let err = decode_rgb(&jpeg, "huge.jpg").unwrap_err().to_string();
    assert!(err.contains("huge.jpg"), "{err}");
}

#[test]
fn resize_and_crop_geometry() {
    // torchvision Resize(256): floor division for the long side, either orientation
    assert_eq!(vision::resize::short_side_size(640, 427, 256), (383, 256));
    assert_eq!(vision::resize::short_side_size(720, 477, 256), (386, 256));
    assert_eq!(vision::resize::short_side_size(427, 640, 256), (256, 383));
    assert_eq!(vision::resize::short_side_size(300, 300, 256), (256, 256));
    // CenterCrop: Python round-half-even of (size - crop) / 2
    assert_eq!(transforms::center_offsets(384, 256, 224, 224), (80, 16));
    assert_eq!(transforms::center_offsets(385, 257, 224, 224), (80, 16)); // 80.5 → 80, 16.5 → 16
    assert_eq!(transforms::center_offsets(386, 259, 224, 224), (81, 18)); // 81, 17.5 → 18
                                                                          // a crop larger than the image is zero-padded around it
    let img = RgbImage::new(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
    let c = vision::center_crop(&img, 4, 3).unwrap();
    assert_eq!(c.pixel(1, 1), [1, 2, 3]);
    assert_eq!(c.pixel(2, 1), [4, 5, 6]);
    assert_eq!(c.pixel(0, 0), [0, 0, 0]);
    // same size: identity; sizes of zero: errors
    let photo = pil_rgb("flower");
    assert_eq!(resize(&photo, 640, 427, Filter::Bilinear).unwrap(), photo);
    let err = resize(&photo, 0, 10, Filter::Bicubic)
        .unwrap_err()
        .to_string();
    assert!(err.contains("0×10"), "{err}");
    // a constant image stays constant through both filters, up- and down-scaling
    let flat = RgbImage::new(7, 5, vec![200; 7 * 5 * 3]).unwrap();
    for f in [Filter::Bilinear, Filter::Bicubic] {
        for (w, h) in [(3, 2), (20, 13), (7, 1)] {
            let r = resize(&flat, w, h, f).unwrap();
            assert!(r.data().iter().all(|&v| v == 200), "{f:?} {w}×{h}");
        }
    }
}

#[test]
fn normalisation_presets() {
    let img = RgbImage::new(1, 1, vec![0, 128, 255]).unwrap();
    let x = transforms::to_tensor_normalized(&img, [0.5; 3], [0.5; 3]);
    assert_eq!(x.shape(), &[1, 3, 1, 1]);
    let v: Vec<f32> = x.iter().copied().collect();
    assert_eq!(v, vec![-1.0, (128.0f32 / 255.0 - 0.5) / 0.5, 1.0]);
    let tv = Preprocess::torchvision_imagenet(224);
    assert_eq!(
        (tv.resize, tv.crop, tv.filter),
        (256, 224, Filter::Bilinear)
    );
    assert_eq!(tv.mean, [0.485, 0.456, 0.406]);
    let e = Preprocess::imagenet_eval(224);
    assert_eq!(
        (e.resize, e.crop, e.filter, e.mean, e.std),
        (256, 224, Filter::Bicubic, [0.5; 3], [0.5; 3])
    );
    let bad = Preprocess {
        std: [0.5, 0.0, 0.5],
        ..e
    };
    let err = bad.apply(&img).unwrap_err().to_string();
    assert!(err.contains("std"), "{err}");
}

#[test]
fn imagenet_class_names() {
    assert_eq!(imagenet::class_names().len(), 1000);
    assert_eq!(imagenet::class_name(985), Some("daisy"));
    assert_eq!(imagenet::class_name(698), Some("palace"));
    assert_eq!(imagenet::class_name(0), Some("tench"));
    assert_eq!(imagenet::class_name(1000), None);
    assert_eq!(imagenet::wordnet_name(108), Some("sea anemone, anemone"));
    assert_eq!(imagenet::wordnet_name(0), Some("tench, Tinca tinca"));
    // the names the fixtures list for their top-5
    for (id, name) in [
        (442, "bell tower"),
        (663, "monastery"),
        (975, "lakeshore"),
        (309, "bee"),
    ] {
        assert_eq!(imagenet::class_name(id), Some(name));
    }
    let top = imagenet::top_k(&[0.1, 0.5, f32::NAN, 0.5, 0.3], 3);
    assert_eq!(top, vec![(1, 0.5), (3, 0.5), (4, 0.3)]);
    assert_eq!(imagenet::top_k(&[1.0, 2.0], 5).len(), 2);
}

/// The generator's LCG: the input pixels of `tests/fixtures/vision/pil_resize_cases.json`.
fn lcg_pixels(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = (s * 1_103_515_245 + 12_345) % (1 << 31);
            ((s >> 16) & 255) as u8
        })
        .collect()
}

#[test]
fn resize_matches_pillow_on_up_down_and_one_axis_cases() {
    let path = format!(
        "{}/tests/fixtures/vision/pil_resize_cases.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 16);
    for c in cases {
        let n = |k: &str| c[k].as_u64().unwrap() as usize;
        let (w, h, nw, nh) = (n("w"), n("h"), n("new_w"), n("new_h"));
        let filter = match c["filter"].as_str().unwrap() {
            "bilinear" => Filter::Bilinear,
            _ => Filter::Bicubic,
        };
        let img = RgbImage::new(w, h, lcg_pixels(n("seed") as u64, w * h * 3)).unwrap();
        let hex = c["out_hex"].as_str().unwrap();
        let want: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let got = resize(&img, nw, nh, filter).unwrap();
        let bad = got.data().iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(got.data().len(), want.len());
        assert!(
            bad.is_none(),
            "{w}×{h} → {nw}×{nh} {filter:?}: first differing byte {bad:?}"
        );
    }
}
