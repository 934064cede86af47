//! `ImageFolder`: scanning (classes, counts, labels), batches, seeded augmentation that does not
//! depend on the thread count, errors naming files and folders, and `fit` streaming from disk.

use crate::photos::temp_dir;
use handgrad::data::{BatchSource, Dataset, ImageFolder};
use handgrad::prelude::*;
use handgrad::vision::{Filter, Preprocess, TrainTransform};
use std::path::PathBuf;

const COLOURS: [(&str, [u8; 3]); 3] = [
    ("sky", [40, 90, 220]),
    ("grass", [50, 200, 60]),
    ("brick", [210, 60, 40]),
];

/// A small photo of a class colour with a seeded texture, `w × h`.
fn picture(colour: [u8; 3], seed: u32, w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let n = (x * 31 + y * 17 + seed * 101) % 41;
        image::Rgb(colour.map(|c| c.saturating_add(n as u8).saturating_sub(20)))
    })
}

/// `root/<class>/…` with `per_class` images of each colour (PNG and JPEG, one nested, one with
/// an upper-case extension) plus files that must be skipped.
fn make_folder(name: &str, per_class: u32) -> PathBuf {
    let root = temp_dir(name);
    for (ci, (class, colour)) in COLOURS.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(dir.join("nested")).unwrap();
        for i in 0..per_class {
            let img = picture(*colour, i + 10 * ci as u32, 20 + i, 16 + (i % 3));
            let file = match i % 4 {
                0 => dir.join(format!("img{i}.png")),
                1 => dir.join(format!("img{i}.jpg")),
                2 => dir.join(format!("IMG{i}.JPEG")),
                _ => dir.join("nested").join(format!("img{i}.png")),
            };
            img.save_with_format(
                &file,
                if i % 4 == 1 || i % 4 == 2 {
                    image::ImageFormat::Jpeg
                } else {
                    image::ImageFormat::Png
                },
            )
            .unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
    }
    std::fs::write(
        root.join("README.md"),
        "a file at the top level is not a class",
    )
    .unwrap();
    root
}

fn pre() -> Preprocess {
    Preprocess::new(14, 12, Filter::Bilinear, [0.5; 3], [0.5; 3])
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn scans_classes_files_and_labels_like_torchvision() {
    let root = make_folder("if-scan", 5);
    let f = ImageFolder::new(&root, pre()).unwrap();
    assert_eq!(f.classes(), &["brick", "grass", "sky"]); // sorted by name
    assert_eq!(f.len(), 15);
    assert_eq!(f.class_counts(), vec![5, 5, 5]);
    let labels = f.labels();
    assert_eq!(labels, [vec![0; 5], vec![1; 5], vec![2; 5]].concat());
    // files of a class: sorted names first, then the nested folder
    let names: Vec<String> = f.samples()[..5]
        .iter()
        .map(|(p, _)| {
            p.strip_prefix(root.join("brick"))
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "IMG2.JPEG",
            "img0.png",
            "img1.jpg",
            "img4.png",
            "nested/img3.png"
        ]
    );
    assert!(f.samples().iter().all(|(p, _)| !p.ends_with("notes.txt")));
    assert_eq!(BatchSource::sample_shape(&f), vec![3, 12, 12]);

    let (x, y) = f.batch(&[14, 0, 7], None).unwrap();
    assert_eq!(x.shape(), &[3, 3, 12, 12]);
    assert_eq!(y, vec![2, 0, 1]);
    assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)));
    let err = f.batch(&[15], None).unwrap_err().to_string();
    assert!(err.contains("15"), "{err}");
}

#[test]
fn folder_errors_name_the_folder() {
    let root = make_folder("if-empty-class", 2);
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("empty").join("list.csv"), "a,b").unwrap();
    let err = ImageFolder::new(&root, pre()).unwrap_err().to_string();
    assert!(
        err.contains(&root.join("empty").display().to_string()),
        "{err}"
    );
    assert!(err.contains("jpg"), "{err}");

    let flat = temp_dir("if-no-classes");
    std::fs::write(flat.join("a.png"), "x").unwrap();
    let err = ImageFolder::new(&flat, pre()).unwrap_err().to_string();
    assert!(
        err.contains(&flat.display().to_string()) && err.contains("class"),
        "{err}"
    );

    let err = ImageFolder::new(flat.join("absent"), pre()).unwrap_err();
    assert!(
        matches!(err, Error::Io { .. }) && err.to_string().contains("absent"),
        "{err}"
    );

    let root = make_folder("if-aug-size", 1);
    let err = ImageFolder::new(&root, pre())
        .unwrap()
        .with_augmentation(TrainTransform::efficientnet_lite(224))
        .unwrap_err()
        .to_string();
    assert!(err.contains("224") && err.contains("12"), "{err}");
}

#[test]
fn a_corrupt_file_fails_its_batch_naming_it() {
    let root = make_folder("if-corrupt", 3);
    std::fs::write(
        root.join("grass").join("broken.jpg"),
        b"\xFF\xD8\xFF\xE0 not really",
    )
    .unwrap();
    let f = ImageFolder::new(&root, pre()).unwrap(); // only paths are read here
    let broken = f
        .samples()
        .iter()
        .position(|(p, _)| p.ends_with("broken.jpg"))
        .unwrap();
    let err = f.batch(&[0, broken, 1], None).unwrap_err().to_string();
    assert!(err.contains("broken.jpg"), "{err}");
    assert!(f.batch(&[0, 1], None).is_ok());
}

#[test]
fn augmentation_is_seeded_per_sample_and_thread_count_independent() {
    let root = make_folder("if-augment", 4);
    let aug = TrainTransform::new(12, [0.5; 3], [0.5; 3]);
    let f = ImageFolder::new(&root, pre())
        .unwrap()
        .with_augmentation(aug.clone())
        .unwrap()
        .with_seed(3);
    let idx: Vec<usize> = (0..f.len()).rev().collect();
    let run = |threads: usize, epoch: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| f.batch(&idx, Some(epoch)).unwrap())
    };
    let (a, ya) = run(1, 0);
    let (b, yb) = run(2, 0);
    assert_eq!(bits(&a), bits(&b), "1 vs 2 threads");
    assert_eq!(ya, yb);
    let (c, _) = run(2, 1);
    assert_ne!(bits(&a), bits(&c), "another epoch draws other crops");
    // a sample's augmentation does not depend on the batch it is in
    let (one, _) = f.batch(&[idx[5]], Some(0)).unwrap();
    assert_eq!(
        bits(&one),
        bits(&a.index_axis(ndarray::Axis(0), 5).to_owned())
    );
    // the seed matters; evaluation batches are not augmented
    let g = ImageFolder::new(&root, pre())
        .unwrap()
        .with_augmentation(aug)
        .unwrap()
        .with_seed(4);
    assert_ne!(bits(&g.batch(&idx, Some(0)).unwrap().0), bits(&a));
    let plain = ImageFolder::new(&root, pre()).unwrap();
    assert_eq!(
        bits(&g.batch(&idx, None).unwrap().0),
        bits(&plain.batch(&idx, None).unwrap().0)
    );
}

#[test]
fn random_resized_crop_follows_torchvision_bounds() {
    use handgrad::vision::RandomResizedCrop;
    let c = RandomResizedCrop::new(8);
    assert_eq!(
        (c.scale, c.ratio, c.filter),
        ((0.08, 1.0), (0.75, 4.0 / 3.0), Filter::Bilinear)
    );
    let mut rng = handgrad::init::rng(1);
    for _ in 0..500 {
        let (top, left, h, w) = c.sample(64, 48, &mut rng);
        assert!(h >= 1 && w >= 1 && top + h <= 48 && left + w <= 64);
        let area = (h * w) as f64 / (64.0 * 48.0);
        // rounding of the sides allows a little slack around the sampled ranges
        assert!((0.06..=1.0).contains(&area), "area {area}");
        assert!((0.6..=1.5).contains(&(w as f64 / h as f64)), "{w}x{h}");
    }
    // a 1-pixel-high strip cannot host a 3/4..4/3 window at 10 tries: the fallback is central
    let (top, left, h, w) = c.sample(100, 1, &mut rng);
    assert_eq!((top, h), (0, 1));
    assert_eq!((w, left), (1, 49)); // round(1 · 4/3) = 1, centred
    let err = RandomResizedCrop::new(8)
        .with_scale(0.5, 0.1)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("scale"), "{err}");
}

fn tiny_model(seed: u64) -> Sequential {
    let mut m = Sequential::new(&[3, 12, 12])
        .add(handgrad::layers::Flatten::new())
        .add(Dense::new(3).softmax())
        .build(&mut handgrad::init::rng(seed))
        .unwrap();
    m.compile(
        Adam::new(1e-2),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

#[test]
fn fit_streams_an_image_folder_and_learns() {
    let root = make_folder("if-fit", 8);
    let val_root = make_folder("if-fit-val", 3);
    let train = ImageFolder::new(&root, pre())
        .unwrap()
        .with_augmentation(TrainTransform::new(12, [0.5; 3], [0.5; 3]).with_flip_prob(0.5))
        .unwrap()
        .with_seed(11);
    let val = ImageFolder::new(&val_root, pre()).unwrap();
    let mut m = tiny_model(0);
    let opts = FitOptions::new()
        .epochs(6)
        .batch_size(8)
        .verbose(Verbose::Silent)
        .seed(5);
    let h = m.fit(&train, opts.validation_data(&val)).unwrap();
    let loss = h.loss();
    assert_eq!(loss.len(), 6);
    assert!(loss[5] < 0.5 * loss[0], "loss did not drop: {loss:?}");
    assert_eq!(
        h.val_accuracy().last(),
        Some(&1.0),
        "{:?}",
        h.val_accuracy()
    );
    let logs = m.evaluate(&val).unwrap();
    assert_eq!(logs["accuracy"], 1.0);

    // same seeds → the same weights, bit for bit; validation_split works on a folder too
    let mut a = tiny_model(0);
    let mut b = tiny_model(0);
    let o = || {
        FitOptions::new()
            .epochs(2)
            .batch_size(5)
            .verbose(Verbose::Silent)
            .seed(9)
            .validation_split(0.25)
    };
    let ha = a.fit(&train, o()).unwrap();
    b.fit(&train, o()).unwrap();
    assert_eq!(ha.val_loss().len(), 2);
    for ((n, p), (_, q)) in a.params().iter().zip(b.params()) {
        assert_eq!(bits(&p.value), bits(&q.value), "{n}");
    }
}

#[test]
fn a_dataset_is_a_batch_source() {
    let d =
        Dataset::from_flat((0..12).map(|v| v as f32).collect(), &[3], vec![0, 1, 0, 1]).unwrap();
    let (x, y) = BatchSource::batch(&d, &[3, 1], Some(0)).unwrap();
    assert_eq!(x.shape(), &[2, 3]);
    assert_eq!(y, vec![1, 1]);
    assert_eq!(
        x.iter().copied().collect::<Vec<_>>(),
        vec![9.0, 10.0, 11.0, 3.0, 4.0, 5.0]
    );
    let err = BatchSource::batch(&d, &[4], None).unwrap_err().to_string();
    assert!(err.contains("index 4"), "{err}");
    assert_eq!(BatchSource::sample_shape(&d), vec![3]);
}
