//! [`ImageFolder`]: a labelled photo collection on disk (one sub-folder per class, torchvision's
//! layout), decoded batch by batch in parallel, with eval preprocessing or seeded training
//! augmentation.

use super::source::{check_indices, BatchSource};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::vision::{load_rgb, Preprocess, TrainTransform};
use ndarray::IxDyn;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// File extensions that [`ImageFolder`] reads (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// How deep [`ImageFolder`] looks for files inside a class folder.
const MAX_DEPTH: usize = 16;

/// `root/<class>/**/<file>.{jpg,jpeg,png}` as a [`BatchSource`] (torchvision
/// `datasets.ImageFolder`): classes are the sub-folders of `root` sorted by name, labelled
/// `0..C` in that order; each class's files are found recursively in sorted order; other files
/// are skipped. Only paths and labels are held; pixels are decoded when a batch is asked for,
/// one image per rayon task.
///
/// Evaluation batches (and training batches without augmentation) use the [`Preprocess`];
/// with [`ImageFolder::with_augmentation`], training batches use the [`TrainTransform`] with
/// one random stream per (seed, epoch, sample index), so a sample's augmentation does not
/// depend on the batch it lands in or on the thread count.
///
/// ```no_run
/// use handgrad::data::ImageFolder;
/// use handgrad::vision::{Preprocess, TrainTransform};
/// let train = ImageFolder::new("photos/train", Preprocess::imagenet_eval(224))?
///     .with_augmentation(TrainTransform::efficientnet_lite(224))?
///     .with_seed(7);
/// println!("{} images of {:?}", train.len(), train.classes());
/// # Ok::<(), handgrad::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, usize)>,
    preprocess: Preprocess,
    augment: Option<TrainTransform>,
    seed: u64,
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The entries of `dir`, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        out.push(e.map_err(|e| io_err(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// Image files under `dir`, recursively, in sorted order (directories before deeper levels
/// are visited in name order, as `sorted(os.walk(...))` does for one level).
fn collect_images(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = sorted_entries(dir)?;
    for p in entries.iter().filter(|p| p.is_file() && is_image(p)) {
        out.push(p.clone());
    }
    if depth < MAX_DEPTH {
        for p in entries.iter().filter(|p| p.is_dir()) {
            collect_images(p, depth + 1, out)?;
        }
    }
    Ok(())
}

impl ImageFolder {
    /// Scans `root` (one sub-folder per class) and prepares batches with `preprocess`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the folder when it cannot be read; [`Error::Format`] naming the
    /// folder when it has no class sub-folders, or naming a class folder without any
    /// `.jpg` / `.jpeg` / `.png` file; as [`Preprocess::validate`].
    pub fn new(root: impl AsRef<Path>, preprocess: Preprocess) -> Result<Self> {
        preprocess.validate()?;
        let root = root.as_ref().to_path_buf();
        let dirs: Vec<PathBuf> = sorted_entries(&root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        if dirs.is_empty() {
            return Err(Error::format(
                root.display().to_string(),
                "no class folders: expected one sub-folder per class (root/<class>/<image>)",
            ));
        }
        let mut classes = Vec::with_capacity(dirs.len());
        let mut samples = Vec::new();
        for (label, dir) in dirs.iter().enumerate() {
            let mut files = Vec::new();
            collect_images(dir, 0, &mut files)?;
            if files.is_empty() {
                return Err(Error::format(
                    dir.display().to_string(),
                    format!(
                        "class folder without images: no file with an extension in {IMAGE_EXTENSIONS:?}"
                    ),
                ));
            }
            classes.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            samples.extend(files.into_iter().map(|f| (f, label)));
        }
        Ok(ImageFolder {
            root,
            classes,
            samples,
            preprocess,
            augment: None,
            seed: 0,
        })
    }

    /// Augments training batches (those asked for with an epoch) with `t`; evaluation batches
    /// keep the [`Preprocess`].
    ///
    /// # Errors
    /// As [`TrainTransform::validate`]; [`Error::Config`] when its output size differs from the
    /// preprocess crop (the model sees one input shape).
    pub fn with_augmentation(mut self, t: TrainTransform) -> Result<Self> {
        t.validate()?;
        if t.crop.size != self.preprocess.crop {
            return Err(Error::config(
                "ImageFolder::with_augmentation",
                "crop.size",
                t.crop.size,
                format!("the preprocess crop size {}", self.preprocess.crop),
            ));
        }
        self.augment = Some(t);
        Ok(self)
    }

    /// The seed of the augmentation streams (default 0).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The folder scanned.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Class names (the sub-folder names), sorted; label `i` is `classes()[i]`.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Every `(file, label)`, ordered by class then by path.
    pub fn samples(&self) -> &[(PathBuf, usize)] {
        &self.samples
    }

    /// All labels, in sample order.
    pub fn labels(&self) -> Vec<usize> {
        self.samples.iter().map(|s| s.1).collect()
    }

    /// The number of images per class, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for s in &self.samples {
            c[s.1] += 1;
        }
        c
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no images (never true for a folder built by [`ImageFolder::new`]).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The evaluation preprocessing.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The random stream of sample `index` in `epoch`.
    fn sample_rng(&self, epoch: usize, index: usize) -> crate::init::Rng {
        // splitmix64 of the seed and the epoch selects the key, the sample index the stream
        let mut z = self.seed
            ^ (epoch as u64)
                .wrapping_add(1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let mut rng = crate::init::rng(z ^ (z >> 31));
        rng.set_stream(index as u64);
        rng
    }
}

impl BatchSource for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn sample_shape(&self) -> Vec<usize> {
        self.preprocess.output_shape().to_vec()
    }

    /// Decodes and transforms the images at `indices` in parallel (augmented when `epoch` is
    /// given and augmentation is set).
    ///
    /// # Errors
    /// [`Error::Shape`] for an index `≥ N`; the first failing file's error in batch order,
    /// naming the file.
    fn batch(&self, indices: &[usize], epoch: Option<usize>) -> Result<(Tensor, Vec<usize>)> {
        check_indices("ImageFolder::batch", indices, self.samples.len())?;
        let shape = self.sample_shape();
        let per: usize = shape.iter().product();
        let mut data = vec![0f32; indices.len() * per];
        let results: Vec<Result<()>> = data
            .par_chunks_mut(per.max(1))
            .zip(indices.par_iter())
            .map(|(out, &i)| {
                let path = &self.samples[i].0;
                let img = load_rgb(path)?;
                let named = |e: Error| match e {
                    Error::Format { .. } | Error::Io { .. } => e,
                    other => Error::format(path.display().to_string(), other.to_string()),
                };
                match (&self.augment, epoch) {
                    (Some(t), Some(e)) => t.apply_into(&img, &mut self.sample_rng(e, i), out),
                    _ => self.preprocess.apply_into(&img, out),
                }
                .map_err(named)
            })
            .collect();
        results.into_iter().collect::<Result<Vec<()>>>()?;
        let mut full = vec![indices.len()];
        full.extend_from_slice(&shape);
        let x = Tensor::from_shape_vec(IxDyn(&full), data).expect("N·per values");
        Ok((x, indices.iter().map(|&i| self.samples[i].1).collect()))
    }
}
