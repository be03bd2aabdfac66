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
//! What decoding noticed without refusing a file (a malformed EXIF block, 12-bit data in a
//! 16-bit PNG: [`super::decode::Decoded::warnings`]) is recorded once per file in
//! [`ImageLoader::warnings`].
//!
//! A file that cannot be decoded is skipped (its batch is one image shorter) and recorded in
//! [`ImageLoader::skipped`], with its path and the reason; consumers check each pass against
//! [`crate::batch::check_pass`]. Any other error (a transform's, a panic in the background
//! thread) reaches the consumer as an `Err`: an epoch never ends early without one.

use super::{Part, Sample, SkippedFile};
use crate::batch::{Batch, BatchSource};
use crate::error::{Error, Result};
use crate::image::SampleTransform;
use crate::preprocess::Preprocess;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

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

/// Something decoding noticed in a file it still used ([`ImageLoader::warnings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeWarning {
    /// The file.
    pub path: std::path::PathBuf,
    /// What was noticed, one sentence.
    pub warning: String,
}

/// Batches of preprocessed images from a list of samples; implements [`BatchSource`].
///
/// ```
/// use fracture::batch::BatchSource;
/// use fracture::dataset::{loader::{ImageLoader, LoaderConfig}, synthetic::SyntheticConfig};
/// use fracture::preprocess::Preprocess;
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
    warnings: Mutex<BTreeMap<usize, Vec<String>>>,
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
                warnings: Mutex::new(BTreeMap::new()),
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

    /// What decoding noticed in the files loaded so far without refusing them, in sample
    /// order, each once.
    ///
    /// ```
    /// use fracture::dataset::loader::{ImageLoader, LoaderConfig};
    /// use fracture::dataset::{ContentHash, Label, Sample};
    /// use fracture::preprocess::Preprocess;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("twelve_bit.png");
    /// image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(4, 4, image::Luma([4000u16])).save(&path)?;
    /// let hash = ContentHash::of(&std::fs::read(&path)?);
    /// let sample = Sample { path, label: Label::Fractured, hash, dimensions: None, metadata: None };
    /// let preprocess = Preprocess { height: 4, width: 4, ..Default::default() };
    /// let loader = ImageLoader::new(vec![sample], preprocess, LoaderConfig::default(), candle_core::Device::Cpu)?;
    /// loader.load_sample(0, 0)?;
    /// assert!(loader.warnings()[0].warning.contains("12-bit"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn warnings(&self) -> Vec<DecodeWarning> {
        let map = match self.inner.warnings.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.iter()
            .filter_map(|(&i, warnings)| {
                let path = &self.inner.samples.get(i)?.path;
                Some(warnings.iter().map(move |w| DecodeWarning {
                    path: path.clone(),
                    warning: w.clone(),
                }))
            })
            .flatten()
            .collect()
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
            Error::Internal(format!(
                "sample index {index} out of range ({} samples)",
                self.samples.len()
            ))
        })?;
        let decoded = self.preprocess.decode(&sample.path)?;
        if !decoded.warnings.is_empty() {
            let mut map = match self.warnings.lock() {
                Ok(map) => map,
                Err(poisoned) => poisoned.into_inner(),
            };
            map.insert(index, decoded.warnings);
        }
        let mut image = self.preprocess.resize_rgb(&decoded.image);
        if let Some(transform) = transform {
            image = transform.apply(image, self.config.seed, epoch, index as u64)?;
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
                (Err(e), _) if e.is_bad_file() => self.record_skip(i, e),
                (Err(e), _) => return Err(e),
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
    receiver: Receiver<Result<Option<CpuBatch>>>,
    device: Device,
    height: usize,
    width: usize,
    /// Set after the end marker or an error: the iterator has nothing more to give.
    done: bool,
}

impl Iterator for EpochBatches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // The producer sends every batch, then an end marker; a channel that closes without
        // one means the producer died, which must not look like a short epoch.
        let received = self.receiver.recv();
        self.done = !matches!(received, Ok(Ok(Some(_))));
        let cpu = match received {
            Ok(Ok(Some(cpu))) => cpu,
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => return Some(Err(e)),
            Err(_) => {
                return Some(Err(Error::Internal(
                    "the loader's prefetch thread stopped before the end of the epoch".into(),
                )))
            }
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
                targets: None,
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
        if let Some(transform) = &self.transform {
            transform.validate()?;
        }
        let inner = Arc::clone(&self.inner);
        let transform = self.transform.clone();
        let (sender, receiver) = sync_channel(inner.config.prefetch.max(1));
        std::thread::Builder::new()
            .name("fracture-prefetch".into())
            .spawn(move || {
                // A panic (in a transform, a decoder, ...) becomes an error for the consumer.
                let produced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    inner.produce_epoch(epoch, transform.as_deref(), &sender)
                }));
                if let Err(payload) = produced {
                    let _ = sender.send(Err(Error::Internal(format!(
                        "loading epoch {epoch} panicked: {}",
                        panic_message(payload.as_ref())
                    ))));
                }
            })
            .map_err(|e| Error::InvalidConfig(format!("cannot start prefetch thread: {e}")))?;
        Ok(Box::new(EpochBatches {
            receiver,
            device: self.device.clone(),
            height: self.inner.preprocess.height,
            width: self.inner.preprocess.width,
            done: false,
        }))
    }

    fn skipped_in_epoch(&self, epoch: u64) -> usize {
        let skipped = match self.inner.skipped.lock() {
            Ok(map) => map.keys().copied().collect::<Vec<_>>(),
            Err(poisoned) => poisoned.into_inner().keys().copied().collect(),
        };
        let visited: std::collections::HashSet<usize> =
            self.inner.epoch_order(epoch).into_iter().collect();
        skipped.iter().filter(|i| visited.contains(i)).count()
    }
}

impl Inner {
    /// Send the batches of `epoch`, then the end marker; stop early when the consumer is gone
    /// or after delivering a fatal error.
    fn produce_epoch(
        &self,
        epoch: u64,
        transform: Option<&dyn SampleTransform>,
        sender: &SyncSender<Result<Option<CpuBatch>>>,
    ) {
        let order = self.epoch_order(epoch);
        for indices in order.chunks(self.config.batch_size) {
            let item = match self.load_batch(indices, epoch, transform) {
                Ok(Some(batch)) => Ok(Some(batch)),
                Ok(None) => continue,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if sender.send(item).is_err() || failed {
                return;
            }
        }
        let _ = sender.send(Ok(None));
    }
}

/// The text of a panic payload (`panic!` with a message gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
