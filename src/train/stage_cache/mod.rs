//! [`StageCache`]: the output of a network's frozen early stages, computed once per image and
//! per view, kept on disk and read back through a memory map.
//!
//! Training the later stages of a network at high resolution spends most of its time in the
//! early stages, which do not change while they are frozen. The cache runs them once for
//! every image of a part and every [`CacheView`] (the picture as it is, its mirror), stores
//! their output (`f16` or `f32`, channels first) in `NAME.bin` beside a manifest `NAME.json`,
//! and is rebuilt when its key changes. The key is a SHA-256 of what the caller says the
//! stages are (their weights and configuration, [`StageCache::open_or_build`]'s
//! `key_material`), the views, the storage type, and every image's path, bytes and label: a
//! changed image, weight or setting gives another key, and the cache is built again.
//!
//! [`CachedSource`] serves a cache as a [`crate::batch::BatchSource`] whose batches hold the
//! cached maps instead of images (one view per image and epoch, seeded) and, with boxes,
//! the localization targets of each view.

mod source;
mod views;

pub use source::{cell_targets, CachedSource};
pub use views::ViewAugmentation;

use crate::atomic::AtomicWriter;
use crate::dataset::Sample;
use crate::error::{Error, Result};
use crate::progress::Progress;
use candle_core::{Device, Tensor};
use half::slice::HalfFloatSliceExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A fixed transformation of the input picture whose early-stage output is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheView {
    /// The picture as the loader gives it.
    Original,
    /// Mirrored left to right.
    Mirror,
    /// Each picture perturbed as [`ViewAugmentation::draw`]`(seed, index)` says: resized by
    /// another program, re-encoded, noisy, turned, zoomed, shifted, mirrored (each drawn per
    /// picture). Made from the decoded picture by the cache's loader, not from the tensor.
    Augmented {
        /// The view's seed (two augmented views need two seeds).
        seed: u64,
    },
}

impl CacheView {
    /// The view of an NCHW batch of pictures, for the views made from the tensor
    /// (`Original`, `Mirror`); an [`Error::InvalidInput`] for `Augmented`, which is made
    /// from the decoded picture (see [`ViewAugmentation`]).
    ///
    /// ```
    /// use fracture::train::CacheView;
    /// use candle_core::{Device, Tensor};
    /// let x = Tensor::new(&[[[[1f32, 2., 3.]]]], &Device::Cpu)?;
    /// let m = CacheView::Mirror.apply(&x)?;
    /// assert_eq!(m.flatten_all()?.to_vec1::<f32>()?, [3., 2., 1.]);
    /// assert!(CacheView::Augmented { seed: 1 }.apply(&x).is_err());
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn apply(&self, images: &Tensor) -> Result<Tensor> {
        match self {
            Self::Original => Ok(images.clone()),
            Self::Mirror => {
                let w = images.dim(3)?;
                let reversed: Vec<u32> = (0..w as u32).rev().collect();
                let index = Tensor::new(reversed, images.device())?;
                Ok(images.index_select(&index, 3)?)
            }
            Self::Augmented { .. } => Err(Error::InvalidInput(
                "an augmented view is made from the decoded picture, not from a tensor".into(),
            )),
        }
    }

    /// Where a point `(x, y)` of picture `index` (as fractions of its width and height) lies
    /// in the view, for a picture `aspect` = width / height times as wide as high.
    ///
    /// ```
    /// use fracture::train::CacheView;
    /// assert_eq!(CacheView::Mirror.map_point(0, 0.25, 0.5, 1.0), (0.75, 0.5));
    /// ```
    pub fn map_point(&self, index: usize, x: f64, y: f64, aspect: f64) -> (f64, f64) {
        match self {
            Self::Original => (x, y),
            Self::Mirror => (1.0 - x, y),
            Self::Augmented { seed } => {
                ViewAugmentation::draw(*seed, index).map_point(x, y, aspect)
            }
        }
    }
}

impl std::fmt::Display for CacheView {
    /// The form [`CacheView`]'s `FromStr` reads: `original`, `mirror`, `augmented:SEED`.
    ///
    /// ```
    /// use fracture::train::CacheView;
    /// let view = CacheView::Augmented { seed: 2 };
    /// assert_eq!(view.to_string().parse::<CacheView>()?, view);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Original => write!(f, "original"),
            Self::Mirror => write!(f, "mirror"),
            Self::Augmented { seed } => write!(f, "augmented:{seed}"),
        }
    }
}

impl std::str::FromStr for CacheView {
    type Err = Error;

    /// `original`, `mirror` or `augmented:SEED`.
    ///
    /// ```
    /// use fracture::train::CacheView;
    /// assert_eq!("augmented:2".parse::<CacheView>()?, CacheView::Augmented { seed: 2 });
    /// assert!("sideways".parse::<CacheView>().is_err());
    /// # Ok::<(), fracture::Error>(())
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "original" => Ok(Self::Original),
            "mirror" => Ok(Self::Mirror),
            _ => s
                .strip_prefix("augmented:")
                .and_then(|seed| seed.parse().ok())
                .map(|seed| Self::Augmented { seed })
                .ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "unknown cache view {s:?}: original, mirror or augmented:SEED"
                    ))
                }),
        }
    }
}

/// How cached values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CacheDtype {
    /// Half precision (2 bytes a value): half the disk and memory.
    #[default]
    F16,
    /// Single precision: exactly what the stages computed.
    F32,
}

impl CacheDtype {
    fn bytes(&self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 => 4,
        }
    }
}

/// Where and how to cache the frozen stages' output when training the last stages
/// ([`crate::train::TrainConfig::stage_cache`]).
///
/// ```
/// use fracture::train::{CacheDtype, CacheView, StageCacheConfig};
/// let config = StageCacheConfig::new("runs/cache");
/// assert_eq!(config.views, [CacheView::Original, CacheView::Mirror]);
/// assert_eq!(config.dtype, CacheDtype::F16);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageCacheConfig {
    /// The folder of the cache files (one `.bin` and one `.json` per part).
    pub dir: PathBuf,
    /// The views cached for the training part (validation uses the original only); each
    /// epoch trains every image in one of them, drawn with the training seed.
    pub views: Vec<CacheView>,
    /// How values are stored.
    pub dtype: CacheDtype,
}

impl StageCacheConfig {
    /// The original and its mirror, in `f16`, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            views: vec![CacheView::Original, CacheView::Mirror],
            dtype: CacheDtype::F16,
        }
    }
}

/// What `NAME.json` records about `NAME.bin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    key: String,
    samples: usize,
    views: Vec<CacheView>,
    dtype: CacheDtype,
    /// `(channels, height, width)` of one cached map.
    dims: (usize, usize, usize),
    /// `(height, width)` of the pictures the stages read (their aspect moves the boxes of an
    /// augmented view).
    input: (usize, usize),
    labels: Vec<f32>,
}

/// The cached output of the frozen stages for every sample of a part and every view; see the
/// module documentation.
#[derive(Debug)]
pub struct StageCache {
    manifest: Manifest,
    data: memmap2::Mmap,
    built: bool,
}

impl StageCache {
    /// Open `dir/NAME.bin` if its manifest's key matches, otherwise compute it: `stages` maps
    /// an NCHW batch of `samples`' preprocessed images to the frozen stages' output, and
    /// `load(indices, view)` gives those images, a few samples at a time, in order: as they are
    /// for [`CacheView::Original`] (the cache derives the mirror from them) and in the view for
    /// [`CacheView::Augmented`] (made from the decoded picture, see [`ViewAugmentation`]). The key covers
    /// `key_material` (the caller's description of the stages: weights and configuration),
    /// the views, the storage type and every sample's path, file bytes and label.
    ///
    /// The files are written atomically (a crash leaves no half cache that could be read as
    /// valid). Two processes must not build the same cache folder at the same time.
    ///
    /// ```
    /// use fracture::batch::BatchSource;
    /// use fracture::dataset::synthetic::SyntheticConfig;
    /// use fracture::train::{CacheDtype, CacheView, CachedSource, StageCache};
    /// use candle_core::{DType, Device, Tensor};
    /// let data = tempfile::tempdir()?;
    /// let samples = SyntheticConfig { n_fractured: 2, n_not_fractured: 3, ..Default::default() }
    ///     .generate_to(data.path())?;
    /// // Stand-ins: every image a ramp, the "frozen stages" a 2x average pool.
    /// let mut load = |indices: &[usize], view: CacheView| -> fracture::Result<Tensor> {
    ///     let ramp = Tensor::arange(0f32, 64., &Device::Cpu)?.reshape((1, 1, 8, 8))?;
    ///     view.apply(&ramp.repeat((indices.len(), 3, 1, 1))?)
    /// };
    /// let stages = |x: &Tensor| -> fracture::Result<Tensor> { Ok(x.avg_pool2d(2)?) };
    /// let views = [CacheView::Original, CacheView::Mirror];
    /// let cache_dir = tempfile::tempdir()?;
    /// let cache = StageCache::open_or_build(
    ///     cache_dir.path(), "train", &samples, &views, CacheDtype::F16, b"weights v1",
    ///     &mut load, &stages, false,
    /// )?;
    /// assert!(cache.was_built() && cache.dims() == (3, 4, 4));
    /// // Served in shuffled batches, one view per image and epoch, with box targets.
    /// let boxes = samples.iter().map(|_| Some(Vec::new())).collect();
    /// let source = CachedSource::new(&cache, 2, true, 7, &Device::Cpu)?.with_boxes(boxes, 0.1)?;
    /// let batch = source.batches(0)?.next().unwrap()?;
    /// assert_eq!(batch.images.dims(), &[2, 3, 4, 4]);
    /// assert_eq!(batch.targets.unwrap().dims(), &[2, 4, 4]);
    /// // The same images, weights and settings: read back, not built.
    /// let again = StageCache::open_or_build(
    ///     cache_dir.path(), "train", &samples, &views, CacheDtype::F16, b"weights v1",
    ///     &mut load, &stages, false,
    /// )?;
    /// assert!(!again.was_built() && again.key() == cache.key());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn open_or_build(
        dir: &Path,
        name: &str,
        samples: &[Sample],
        views: &[CacheView],
        dtype: CacheDtype,
        key_material: &[u8],
        load: &mut dyn FnMut(&[usize], CacheView) -> Result<Tensor>,
        stages: &dyn Fn(&Tensor) -> Result<Tensor>,
        progress: bool,
    ) -> Result<Self> {
        if samples.is_empty() || views.is_empty() {
            return Err(Error::InvalidInput(format!(
                "a stage cache needs samples and views, found {} samples and {} views",
                samples.len(),
                views.len()
            )));
        }
        if let Some(twice) = views
            .iter()
            .enumerate()
            .find_map(|(i, v)| views[..i].contains(v).then_some(v))
        {
            return Err(Error::InvalidInput(format!(
                "the cache's views name {twice:?} twice: each view is cached once"
            )));
        }
        let key = cache_key(samples, views, dtype, key_material)?;
        let (bin, json) = (
            dir.join(format!("{name}.bin")),
            dir.join(format!("{name}.json")),
        );
        if let Some(manifest) = read_manifest(&json)
            && manifest.key == key
        {
            return Self::map(manifest, &bin, false);
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // No manifest may vouch for data being replaced (a crash between the two writes).
        match std::fs::remove_file(&json) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&json, e)),
            _ => {}
        }
        let labels: Vec<f32> = samples.iter().map(|s| s.label.as_f32()).collect();
        let bar = if progress {
            Progress::items(
                format!("caching early stages ({name})"),
                samples.len() as u64,
            )
        } else {
            Progress::hidden()
        };
        let mut writer = AtomicWriter::new(dir, None);
        let mut dims = None;
        let mut input: Option<(usize, usize, usize)> = None;
        writer.write_with(&format!("{name}.bin"), |tmp| {
            let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 22, file);
            const BATCH: usize = 8;
            let indices: Vec<usize> = (0..samples.len()).collect();
            for chunk in indices.chunks(BATCH) {
                // The picture is loaded once per chunk for the views made from the tensor.
                let mut plain: Option<Tensor> = None;
                let mut per_view = Vec::with_capacity(views.len());
                for &view in views {
                    let images = match view {
                        CacheView::Augmented { .. } => load(chunk, view)?,
                        CacheView::Original | CacheView::Mirror => {
                            if plain.is_none() {
                                plain = Some(load(chunk, CacheView::Original)?);
                            }
                            let picture = plain.as_ref().ok_or_else(|| {
                                Error::Internal("the chunk's pictures were not loaded".into())
                            })?;
                            view.apply(picture)?
                        }
                    };
                    let (_, c, h, w) = images.dims4()?;
                    if input.is_some_and(|d| d != (c, h, w)) {
                        return Err(Error::Internal(format!(
                            "the loader gave {:?} for the {view:?} view, earlier pictures of {input:?}",
                            images.dims()
                        )));
                    }
                    input = Some((c, h, w));
                    per_view.push(stages(&images)?);
                }
                let (n, c, h, w) = per_view[0].dims4()?;
                if n != chunk.len() || dims.is_some_and(|d| d != (c, h, w)) {
                    return Err(Error::Internal(format!(
                        "the frozen stages gave {:?} for {} images (earlier {dims:?})",
                        per_view[0].dims(),
                        chunk.len()
                    )));
                }
                dims = Some((c, h, w));
                let per_view = per_view
                    .iter()
                    .map(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
                    .collect::<Result<Vec<_>>>()?;
                let chw = c * h * w;
                for (values, view) in per_view.iter().zip(views) {
                    check_values(values, chw, dtype, chunk, samples, *view)?;
                }
                for i in 0..n {
                    for values in &per_view {
                        write_values(&mut out, &values[i * chw..(i + 1) * chw], dtype)
                            .map_err(|e| Error::io(tmp, e))?;
                    }
                }
                bar.inc(n as u64);
            }
            out.flush().map_err(|e| Error::io(tmp, e))
        })?;
        bar.finish_quietly();
        let manifest = Manifest {
            key,
            samples: samples.len(),
            views: views.to_vec(),
            dtype,
            dims: dims.ok_or_else(|| Error::Internal("no batch was cached".into()))?,
            input: input
                .map(|(_, h, w)| (h, w))
                .ok_or_else(|| Error::Internal("no picture was loaded".into()))?,
            labels,
        };
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Internal(format!("cannot serialize a cache manifest: {e}")))?;
        writer.write_bytes(&format!("{name}.json"), &text)?;
        Self::map(manifest, &bin, true)
    }

    fn map(manifest: Manifest, bin: &Path, built: bool) -> Result<Self> {
        let file = std::fs::File::open(bin).map_err(|e| Error::io(bin, e))?;
        // SAFETY: the file is ours, written atomically and never modified in place; a
        // rebuild replaces it by a rename, which leaves this mapping's inode intact.
        let data = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(bin, e))?;
        let (c, h, w) = manifest.dims;
        let expected = manifest.samples * manifest.views.len() * c * h * w * manifest.dtype.bytes();
        if data.len() != expected {
            return Err(Error::Format {
                path: bin.into(),
                message: format!(
                    "holds {} bytes, its manifest says {expected}: delete the cache folder",
                    data.len()
                ),
            });
        }
        Ok(Self {
            manifest,
            data,
            built,
        })
    }

    /// Whether this call computed the cache (`false`: it was read from disk).
    pub fn was_built(&self) -> bool {
        self.built
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.manifest.samples
    }

    /// Whether it holds no sample (never: building needs samples).
    pub fn is_empty(&self) -> bool {
        self.manifest.samples == 0
    }

    /// The views, in storage order.
    pub fn views(&self) -> &[CacheView] {
        &self.manifest.views
    }

    /// `(channels, height, width)` of one cached map.
    pub fn dims(&self) -> (usize, usize, usize) {
        self.manifest.dims
    }

    /// `(height, width)` of the pictures the frozen stages read.
    pub fn input_dims(&self) -> (usize, usize) {
        self.manifest.input
    }

    /// The label of each sample (1.0: fractured).
    pub fn labels(&self) -> &[f32] {
        &self.manifest.labels
    }

    /// The hex SHA-256 key the cache was built under.
    pub fn key(&self) -> &str {
        &self.manifest.key
    }

    /// The maps of `samples` in `views` (indices into [`StageCache::views`]), as an NCHW
    /// `f32` tensor on `device`.
    pub fn gather(&self, samples: &[usize], views: &[usize], device: &Device) -> Result<Tensor> {
        if samples.len() != views.len() {
            return Err(Error::InvalidInput(format!(
                "gather needs one view per sample, found {} samples and {} views",
                samples.len(),
                views.len()
            )));
        }
        let (c, h, w) = self.manifest.dims;
        let (chw, nv) = (c * h * w, self.manifest.views.len());
        let mut out = vec![0f32; samples.len() * chw];
        for (k, (&i, &v)) in samples.iter().zip(views).enumerate() {
            if i >= self.manifest.samples || v >= nv {
                return Err(Error::Internal(format!(
                    "cached map ({i}, view {v}) out of range ({} samples, {nv} views)",
                    self.manifest.samples
                )));
            }
            let start = (i * nv + v) * chw;
            let dst = &mut out[k * chw..(k + 1) * chw];
            match self.manifest.dtype {
                CacheDtype::F16 => {
                    let bytes = &self.data[start * 2..(start + chw) * 2];
                    let halves: Vec<half::f16> = bytes
                        .chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    halves.convert_to_f32_slice(dst);
                }
                CacheDtype::F32 => {
                    let bytes = &self.data[start * 4..(start + chw) * 4];
                    for (d, b) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
                        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                }
            }
        }
        Ok(Tensor::from_vec(out, (samples.len(), c, h, w), device)?)
    }
}

/// Every value finite, and within `f16`'s range when stored so; the error names the image.
fn check_values(
    values: &[f32],
    chw: usize,
    dtype: CacheDtype,
    chunk: &[usize],
    samples: &[Sample],
    view: CacheView,
) -> Result<()> {
    let limit = match dtype {
        CacheDtype::F16 => f32::from(half::f16::MAX),
        CacheDtype::F32 => f32::MAX,
    };
    if let Some(k) = values.iter().position(|v| v.is_nan() || v.abs() > limit) {
        let sample = chunk.get(k / chw).and_then(|&i| samples.get(i));
        let what = if values[k].is_finite() {
            format!("{view:?} view's stage output, beyond f16's range (cache in f32)")
        } else {
            format!("{view:?} view's stage output")
        };
        return Err(Error::NonFinite {
            image: sample.map_or_else(|| "an image".to_string(), |s| s.path.display().to_string()),
            index: k / chw,
            what,
            value: f64::from(values[k]),
        });
    }
    Ok(())
}

fn write_values(out: &mut impl Write, values: &[f32], dtype: CacheDtype) -> std::io::Result<()> {
    match dtype {
        CacheDtype::F16 => {
            let mut halves = vec![half::f16::ZERO; values.len()];
            halves.convert_from_f32_slice(values);
            let bytes: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
            out.write_all(&bytes)
        }
        CacheDtype::F32 => {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            out.write_all(&bytes)
        }
    }
}

fn read_manifest(path: &Path) -> Option<Manifest> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// SHA-256 over the key material, the views, the storage type and each sample's path, file
/// bytes and label.
fn cache_key(
    samples: &[Sample],
    views: &[CacheView],
    dtype: CacheDtype,
    key_material: &[u8],
) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(key_material);
    let settings = serde_json::to_vec(&(views, dtype))
        .map_err(|e| Error::Internal(format!("cannot serialize cache settings: {e}")))?;
    field(&settings);
    // What an augmented view does to each picture (its boxes are moved by the same draw when
    // the cache is read): a change of the draw's ranges or of the random generator rebuilds.
    for view in views {
        if let CacheView::Augmented { seed } = view {
            for index in 0..samples.len() {
                field(format!("{:?}", ViewAugmentation::draw(*seed, index)).as_bytes());
            }
        }
    }
    for sample in samples {
        field(sample.path.to_string_lossy().as_bytes());
        let bytes = std::fs::read(&sample.path).map_err(|e| Error::io(&sample.path, e))?;
        field(&Sha256::digest(&bytes));
        field(&sample.label.as_f32().to_le_bytes());
    }
    Ok(format!("{:x}", hasher.finalize()))
}
