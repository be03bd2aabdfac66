//! Batches of images and labels, and the trait the training loop reads them through.
//!
//! The dataset loader implements [`BatchSource`]; so does [`TensorBatches`], an in-memory
//! source for tests and for precomputed inputs.

use crate::error::{Error, Result};
use candle_core::Tensor;

/// One batch: images `(N, C, H, W)` f32, labels `(N,)` f32 (1.0 = fractured), and the
/// index of each sample in its dataset part (for metadata and reproducible augmentation).
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images, NCHW f32.
    pub images: Tensor,
    /// Labels `(N,)` f32: 1.0 for fractured, 0.0 for not fractured.
    pub labels: Tensor,
    /// Index of each sample in the part it was drawn from.
    pub indices: Vec<usize>,
    /// Where the fractures are, as targets `(N, h, w)` in {0, 1} on the grid of a
    /// localization map (1: the cell overlaps a fracture box): what box supervision trains
    /// on. `None` for sources without boxes.
    pub targets: Option<Tensor>,
}

/// Something that yields batches, epoch after epoch.
///
/// The order of batches in an epoch may depend on `epoch` (shuffling), never on timing.
pub trait BatchSource {
    /// Number of samples one epoch visits.
    fn num_samples(&self) -> usize;
    /// The batches of one epoch.
    fn batches(&self, epoch: u64) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>>;
    /// Samples of `epoch` left out because they could not be read, as reported once the
    /// epoch's batches have all been taken; 0 for sources that never leave one out.
    fn skipped_in_epoch(&self, _epoch: u64) -> usize {
        0
    }
}

/// Check that a pass over epoch `epoch` of `source` saw every sample it should have:
/// `processed` must be [`BatchSource::num_samples`] less [`BatchSource::skipped_in_epoch`].
/// `pass` names the pass in the error ("validation", "training epoch 3", ...).
///
/// A pass that saw nothing because every sample was skipped is an
/// [`Error::InvalidInput`] (no metric can come of it); any other mismatch is an
/// [`Error::Internal`] naming the counts (a source that stopped early without saying why).
///
/// ```
/// use fracture::batch::{check_pass, BatchSource, TensorBatches};
/// use candle_core::{Device, DType, Tensor};
/// let images = Tensor::zeros((5, 3, 8, 8), DType::F32, &Device::Cpu)?;
/// let source = TensorBatches::new(images, Tensor::zeros(5, DType::F32, &Device::Cpu)?, 2)?;
/// assert!(check_pass(&source, 0, 5, "validation").is_ok());
/// let short = check_pass(&source, 0, 4, "validation").unwrap_err().to_string();
/// assert!(short.contains("validation") && short.contains("4 of 5"), "{short}");
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn check_pass(
    source: &dyn BatchSource,
    epoch: u64,
    processed: usize,
    pass: &str,
) -> Result<()> {
    let requested = source.num_samples();
    let skipped = source.skipped_in_epoch(epoch);
    if processed == 0 && requested > 0 && skipped >= requested {
        return Err(Error::InvalidInput(format!(
            "{pass}: none of the {requested} images could be read (all skipped as unreadable; the loader's skipped() lists them with the reasons)"
        )));
    }
    if Some(processed) != requested.checked_sub(skipped) {
        return Err(Error::Internal(format!(
            "{pass}: processed {processed} of {requested} samples with {skipped} reported skipped; the data source ended early or repeated samples"
        )));
    }
    Ok(())
}

/// Batches cut from tensors held in memory, in order (no shuffling).
///
/// ```
/// use fracture::batch::{BatchSource, TensorBatches};
/// use candle_core::{Device, DType, Tensor};
/// let images = Tensor::zeros((5, 3, 32, 32), DType::F32, &Device::Cpu)?;
/// let labels = Tensor::new(&[1f32, 0., 0., 1., 0.], &Device::Cpu)?;
/// let source = TensorBatches::new(images, labels, 2)?;
/// let sizes: Vec<usize> = source.batches(0)?.map(|b| b.unwrap().indices.len()).collect();
/// assert_eq!(sizes, vec![2, 2, 1]);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TensorBatches {
    images: Tensor,
    labels: Tensor,
    batch_size: usize,
}

impl TensorBatches {
    /// Wrap images `(N, ...)` and labels `(N,)`, cut into batches of `batch_size`.
    pub fn new(images: Tensor, labels: Tensor, batch_size: usize) -> Result<Self> {
        let n = images.dim(0)?;
        if labels.dims() != [n] {
            return Err(Error::InvalidInput(format!(
                "labels must have shape [{n}] to match images {:?}, found {:?}",
                images.dims(),
                labels.dims()
            )));
        }
        if batch_size == 0 {
            return Err(Error::InvalidConfig("batch size must be at least 1".into()));
        }
        Ok(Self {
            images,
            labels,
            batch_size,
        })
    }
}

impl BatchSource for TensorBatches {
    fn num_samples(&self) -> usize {
        self.labels.dims()[0]
    }

    fn batches(&self, _epoch: u64) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>> {
        let n = self.num_samples();
        let bs = self.batch_size;
        Ok(Box::new((0..n.div_ceil(bs)).map(move |b| {
            let start = b * bs;
            let len = bs.min(n - start);
            Ok(Batch {
                images: self.images.narrow(0, start, len)?,
                labels: self.labels.narrow(0, start, len)?,
                indices: (start..start + len).collect(),
                targets: None,
            })
        })))
    }
}
