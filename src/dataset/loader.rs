//! From image files to NCHW f32 batches on a device, fast enough to keep a model busy.
//!
//! Per sample, in a rayon pool (all cores by default): read, [`super::decode`] (EXIF
//! orientation, lenient truncated JPEGs, PNG 8/16-bit, grayscale or RGB), resize to the model
//! size (grayscale images are resized before being replicated to RGB, three times less work
//! for the same result), apply the optional [`SampleTransform`] (augmentation) on the 0..255
//! RGB image, then normalize into CHW. A background thread assembles whole batches ahead of
//! the consumer into a bounded channel (prefetch). Per epoch the order is a shuffle seeded by
//! `(seed, epoch)`; every per-sample result depends only on the file and
//! `(seed, epoch, index)`, so batches are identical whatever the number of threads.
//!
//! A file that cannot be decoded is skipped (its batch is one image shorter) and recorded in
//! [`ImageLoader::skipped`], with its path and the reason; it never panics.

use super::{decode, Part, Sample, SkippedFile};
use crate::batch::{Batch, BatchSource};
use crate::error::{Error, Result};
use crate::image::{ImageF32, SampleTransform};
use candle_core::{Device, Tensor};
pub use image::imageops::FilterType;
use image::DynamicImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

/// How 0..255 pixel values are scaled for the model.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Normalization {
    /// Keras `resnet_v2.preprocess_input`: `x / 127.5 - 1`, values in [-1, 1]. What the
    /// ImageNet weights of ResNet152V2 expect (the default).
    #[default]
    KerasResNetV2,
    /// `x / 255`, values in [0, 1] (what the seed notebook's README describes).
    UnitRange,
    /// Torchvision ImageNet statistics: `(x / 255 - mean) / std` per channel, with mean
    /// (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
    ImageNet,
}

impl Normalization {
    /// Scale one 0..255 value of channel `channel` (0 = R, 1 = G, 2 = B).
    ///
    /// ```
    /// use fracture::dataset::loader::Normalization;
    /// assert_eq!(Normalization::KerasResNetV2.apply(255.0, 0), 1.0);
    /// assert_eq!(Normalization::KerasResNetV2.apply(0.0, 0), -1.0);
    /// assert_eq!(Normalization::UnitRange.apply(51.0, 2), 0.2);
    /// ```
    pub fn apply(&self, value: f32, channel: usize) -> f32 {
        const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
        const STD: [f32; 3] = [0.229, 0.224, 0.225];
        match self {
            Normalization::KerasResNetV2 => value / 127.5 - 1.0,
            Normalization::UnitRange => value / 255.0,
            Normalization::ImageNet => {
                let c = channel.min(2);
                (value / 255.0 - MEAN[c]) / STD[c]
            }
        }
    }
}

/// Model input geometry and scaling. Default: 224x224, bilinear (`Triangle`, antialiased when
/// shrinking), Keras `x / 127.5 - 1`.
///
/// Keras's `flow_from_directory` resizes with `nearest` by default; choose
/// `FilterType::Nearest` to mimic it exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// Output height in pixels.
    pub height: usize,
    /// Output width in pixels.
    pub width: usize,
    /// Resampling filter of the resize.
    pub filter: FilterType,
    /// Scaling of the 0..255 values.
    pub normalization: Normalization,
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            height: 224,
            width: 224,
            filter: FilterType::Triangle,
            normalization: Normalization::KerasResNetV2,
        }
    }
}

impl Preprocess {
    /// Check the geometry.
    pub fn validate(&self) -> Result<()> {
        if self.height == 0 || self.width == 0 || self.height > 8192 || self.width > 8192 {
            return Err(Error::InvalidConfig(format!(
                "image size must be between 1 and 8192 pixels, found {}x{}",
                self.height, self.width
            )));
        }
        Ok(())
    }

    /// Resize a decoded image to the model size as RGB values on the 0..255 scale (HWC).
    ///
    /// ```
    /// use fracture::dataset::loader::Preprocess;
    /// let gray = image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(40, 30, image::Luma([200])));
    /// let rgb = Preprocess { height: 8, width: 8, ..Default::default() }.resize_rgb(&gray);
    /// assert_eq!((rgb.height, rgb.width, rgb.channels), (8, 8, 3));
    /// assert!(rgb.data.iter().all(|&v| v == 200.0));
    /// ```
    ///
    /// 8-bit images are resized in 8 bits (the values the model was always given). Deeper
    /// images (16-bit PNG, DICOM's 16-bit display intensity) are resized in `f32` and scaled
    /// to 0..255 without rounding, so their extra precision reaches the model.
    pub fn resize_rgb(&self, image: &DynamicImage) -> ImageF32 {
        let (w, h) = (self.width as u32, self.height as u32);
        let deep = !matches!(
            image,
            DynamicImage::ImageLuma8(_)
                | DynamicImage::ImageLumaA8(_)
                | DynamicImage::ImageRgb8(_)
                | DynamicImage::ImageRgba8(_)
        );
        let data: Vec<f32> = if deep && image.color().has_color() {
            let rgb = image::imageops::resize(&image.to_rgb32f(), w, h, self.filter);
            rgb.into_raw().into_iter().map(|v| v * 255.0).collect()
        } else if deep {
            let gray = image::imageops::resize(&image.to_luma32f(), w, h, self.filter);
            gray.into_raw()
                .into_iter()
                .flat_map(|v| [v * 255.0; 3])
                .collect()
        } else if image.color().has_color() {
            let rgb = image::imageops::resize(&image.to_rgb8(), w, h, self.filter);
            rgb.into_raw().into_iter().map(f32::from).collect()
        } else {
            let gray = image::imageops::resize(&image.to_luma8(), w, h, self.filter);
            gray.into_raw()
                .into_iter()
                .flat_map(|v| [f32::from(v); 3])
                .collect()
        };
        ImageF32 {
            height: self.height,
            width: self.width,
            channels: 3,
            data,
        }
    }

    /// Normalize an RGB 0..255 HWC image into a CHW buffer.
    pub fn normalize_chw(&self, image: &ImageF32) -> Result<Vec<f32>> {
        if (image.height, image.width, image.channels) != (self.height, self.width, 3) {
            return Err(Error::InvalidInput(format!(
                "expected a {}x{}x3 image after the sample transform, found {}x{}x{}",
                self.height, self.width, image.height, image.width, image.channels
            )));
        }
        let plane = self.height * self.width;
        let mut out = vec![0f32; 3 * plane];
        for (pixel, rgb) in image.data.chunks_exact(3).enumerate() {
            for (c, &value) in rgb.iter().enumerate() {
                out[c * plane + pixel] = self.normalization.apply(value, c);
            }
        }
        Ok(out)
    }

    /// Decode and resize one file: RGB, 0..255, HWC, model size.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<ImageF32> {
        Ok(self.resize_rgb(&decode::decode_file(path)?))
    }

    /// One file as a normalized `(1, 3, H, W)` tensor on `device`, ready for the model.
    ///
    /// ```
    /// use fracture::dataset::loader::Preprocess;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("x.png");
    /// image::GrayImage::new(50, 60).save(&path)?;
    /// let t = Preprocess::default().image_tensor(&path, &candle_core::Device::Cpu)?;
    /// assert_eq!(t.dims(), &[1, 3, 224, 224]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn image_tensor(&self, path: impl AsRef<Path>, device: &Device) -> Result<Tensor> {
        self.validate()?;
        let chw = self.normalize_chw(&self.load(path)?)?;
        Ok(Tensor::from_vec(
            chw,
            (1, 3, self.height, self.width),
            device,
        )?)
    }
}

/// Batching, shuffling and parallelism of an [`ImageLoader`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoaderConfig {
    /// Images per batch (the last batch may be smaller).
    pub batch_size: usize,
    /// Shuffle the order each epoch (training); `false` keeps the part's order.
    pub shuffle: bool,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
    /// Seed of the shuffle, also passed to the sample transform.
    pub seed: u64,
    /// Batches prepared ahead of the consumer (at least 1).
    pub prefetch: usize,
    /// Decoding threads; `None` uses every core.
    pub threads: Option<usize>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            shuffle: true,
            drop_last: false,
            seed: 42,
            prefetch: 2,
            threads: None,
        }
    }
}

/// Batches of preprocessed images from a list of samples; implements [`BatchSource`].
///
/// ```
/// use fracture::batch::BatchSource;
/// use fracture::dataset::{loader::{ImageLoader, LoaderConfig, Preprocess}, synthetic::SyntheticConfig};
/// let dir = tempfile::tempdir()?;
/// let samples = SyntheticConfig { n_fractured: 3, n_not_fractured: 4, ..Default::default() }
///     .generate_to(dir.path())?;
/// let preprocess = Preprocess { height: 32, width: 32, ..Default::default() };
/// let config = LoaderConfig { batch_size: 4, ..Default::default() };
/// let loader = ImageLoader::new(samples, preprocess, config, candle_core::Device::Cpu)?;
/// let batches: Vec<_> = loader.batches(0)?.collect::<Result<_, _>>()?;
/// assert_eq!(batches[0].images.dims(), &[4, 3, 32, 32]);
/// assert_eq!(batches[1].labels.dims(), &[3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ImageLoader {
    inner: Arc<Inner>,
    transform: Option<Arc<dyn SampleTransform>>,
    device: Device,
}

struct Inner {
    samples: Vec<Sample>,
    preprocess: Preprocess,
    config: LoaderConfig,
    pool: rayon::ThreadPool,
    skipped: Mutex<BTreeMap<usize, SkippedFile>>,
}

/// A batch assembled on the CPU by the background thread.
struct CpuBatch {
    images: Vec<f32>,
    labels: Vec<f32>,
    indices: Vec<usize>,
}

impl ImageLoader {
    /// A loader over `samples` producing batches on `device`.
    pub fn new(
        samples: Vec<Sample>,
        preprocess: Preprocess,
        config: LoaderConfig,
        device: Device,
    ) -> Result<Self> {
        preprocess.validate()?;
        if config.batch_size == 0 {
            return Err(Error::InvalidConfig("batch size must be at least 1".into()));
        }
        let mut builder =
            rayon::ThreadPoolBuilder::new().thread_name(|i| format!("fracture-decode-{i}"));
        if let Some(threads) = config.threads {
            builder = builder.num_threads(threads.max(1));
        }
        let pool = builder
            .build()
            .map_err(|e| Error::InvalidConfig(format!("cannot start decode threads: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                samples,
                preprocess,
                config,
                pool,
                skipped: Mutex::new(BTreeMap::new()),
            }),
            transform: None,
            device,
        })
    }

    /// A loader over one part of a split.
    pub fn for_part(
        part: &Part,
        preprocess: Preprocess,
        config: LoaderConfig,
        device: Device,
    ) -> Result<Self> {
        Self::new(part.samples.clone(), preprocess, config, device)
    }

    /// Apply `transform` (augmentation) to every image, before normalization.
    pub fn with_transform(mut self, transform: Arc<dyn SampleTransform>) -> Self {
        self.transform = Some(transform);
        self
    }

    /// The samples, in part order (`Batch::indices` index this).
    pub fn samples(&self) -> &[Sample] {
        &self.inner.samples
    }

    /// Number of threads decoding in parallel.
    pub fn threads(&self) -> usize {
        self.inner.pool.current_num_threads()
    }

    /// Files skipped so far because they could not be decoded, with the reason.
    pub fn skipped(&self) -> Vec<SkippedFile> {
        match self.inner.skipped.lock() {
            Ok(map) => map.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        }
    }

    /// Decode, resize, transform and normalize one sample (CHW, model size).
    pub fn load_sample(&self, index: usize, epoch: u64) -> Result<Vec<f32>> {
        self.inner
            .load_sample(index, epoch, self.transform.as_deref())
    }

    /// The order in which `epoch` visits the samples.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        self.inner.epoch_order(epoch)
    }
}

impl Inner {
    fn load_sample(
        &self,
        index: usize,
        epoch: u64,
        transform: Option<&dyn SampleTransform>,
    ) -> Result<Vec<f32>> {
        let sample = self.samples.get(index).ok_or_else(|| {
            Error::InvalidInput(format!(
                "sample index {index} out of range ({} samples)",
                self.samples.len()
            ))
        })?;
        let mut image = self.preprocess.load(&sample.path)?;
        if let Some(transform) = transform {
            image = transform.apply(image, self.config.seed, epoch, index as u64);
        }
        self.preprocess.normalize_chw(&image)
    }

    fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        if self.config.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
            rng.set_stream(epoch);
            for i in (1..order.len()).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
        }
        if self.config.drop_last {
            let full = order.len() / self.config.batch_size * self.config.batch_size;
            order.truncate(full);
        }
        order
    }

    /// Load one batch; unreadable files are recorded and left out. `Ok(None)` if none was
    /// readable.
    fn load_batch(
        &self,
        indices: &[usize],
        epoch: u64,
        transform: Option<&dyn SampleTransform>,
    ) -> Result<Option<CpuBatch>> {
        let results: Vec<(usize, Result<Vec<f32>>)> = self.pool.install(|| {
            indices
                .par_iter()
                .map(|&i| (i, self.load_sample(i, epoch, transform)))
                .collect()
        });
        let plane = 3 * self.preprocess.height * self.preprocess.width;
        let mut batch = CpuBatch {
            images: Vec::with_capacity(indices.len() * plane),
            labels: Vec::with_capacity(indices.len()),
            indices: Vec::with_capacity(indices.len()),
        };
        for (i, result) in results {
            match (result, self.samples.get(i)) {
                (Ok(chw), Some(sample)) => {
                    batch.images.extend_from_slice(&chw);
                    batch.labels.push(sample.label.as_f32());
                    batch.indices.push(i);
                }
                (Ok(_), None) => {}
                (Err(Error::InvalidInput(message)), _) => return Err(Error::InvalidInput(message)),
                (Err(e), _) => self.record_skip(i, e),
            }
        }
        Ok((!batch.indices.is_empty()).then_some(batch))
    }

    fn record_skip(&self, index: usize, error: Error) {
        let Some(sample) = self.samples.get(index) else {
            return;
        };
        let entry = SkippedFile {
            path: sample.path.clone(),
            reason: error.to_string(),
        };
        match self.skipped.lock() {
            Ok(mut map) => {
                map.insert(index, entry);
            }
            Err(poisoned) => {
                poisoned.into_inner().insert(index, entry);
            }
        }
    }
}

/// The batches of one epoch, produced ahead by a background thread.
struct EpochBatches {
    receiver: Receiver<Result<CpuBatch>>,
    device: Device,
    height: usize,
    width: usize,
}

impl Iterator for EpochBatches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let cpu = match self.receiver.recv().ok()? {
            Ok(cpu) => cpu,
            Err(e) => return Some(Err(e)),
        };
        let n = cpu.indices.len();
        let make = || -> Result<Batch> {
            let images =
                Tensor::from_vec(cpu.images, (n, 3, self.height, self.width), &self.device)?;
            let labels = Tensor::from_vec(cpu.labels, n, &self.device)?;
            Ok(Batch {
                images,
                labels,
                indices: cpu.indices,
            })
        };
        Some(make())
    }
}

impl BatchSource for ImageLoader {
    /// Samples one epoch visits (all, or fewer with `drop_last`); files that turn out to be
    /// undecodable are left out of the batches and listed by [`ImageLoader::skipped`].
    fn num_samples(&self) -> usize {
        self.inner.epoch_order(0).len()
    }

    fn batches(&self, epoch: u64) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>> {
        let inner = Arc::clone(&self.inner);
        let transform = self.transform.clone();
        let (sender, receiver) = sync_channel(inner.config.prefetch.max(1));
        std::thread::Builder::new()
            .name("fracture-prefetch".into())
            .spawn(move || {
                let order = inner.epoch_order(epoch);
                for indices in order.chunks(inner.config.batch_size) {
                    let item = match inner.load_batch(indices, epoch, transform.as_deref()) {
                        Ok(Some(batch)) => Ok(batch),
                        Ok(None) => continue,
                        Err(e) => Err(e),
                    };
                    let failed = item.is_err();
                    if sender.send(item).is_err() || failed {
                        return; // consumer gone, or a fatal error was delivered
                    }
                }
            })
            .map_err(|e| Error::InvalidConfig(format!("cannot start prefetch thread: {e}")))?;
        Ok(Box::new(EpochBatches {
            receiver,
            device: self.device.clone(),
            height: self.inner.preprocess.height,
            width: self.inner.preprocess.width,
        }))
    }
}
