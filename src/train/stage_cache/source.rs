//! [`CachedSource`]: a [`StageCache`] served as batches, with the localization targets of the
//! views; [`cell_targets`]: boxes to the cells of a map.

use super::{CacheView, StageCache};
use crate::batch::{Batch, BatchSource};
use crate::dataset::annotations::BoundingBox;
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Batches of cached maps: in `Batch::images` the frozen stages' output (not images), one
/// view per sample and epoch (drawn from `seed` and the epoch when `shuffle`; the first view
/// otherwise), in a seeded order per epoch when `shuffle`, in sample order otherwise; with
/// boxes, `Batch::targets` marks the cells of the map each view's (grown) boxes overlap.
///
/// (A whole example is under [`StageCache::open_or_build`].)
///
/// ```
/// use fracture::dataset::annotations::BoundingBox;
/// use fracture::train::cell_targets;
/// // A box over the right half of the picture marks the right column of a 2 x 2 grid.
/// let t = cell_targets(&[BoundingBox::new(0.6, 0.1, 0.9, 0.9)], 2, 2, 0.0);
/// assert_eq!(t, [0., 1., 0., 1.]);
/// ```
#[derive(Debug)]
pub struct CachedSource<'a> {
    cache: &'a StageCache,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    device: Device,
    /// Per sample, its fracture boxes as fractions of the picture (`None` for a sample: not
    /// known, its cells are ignored), and their growth; `None`: no targets.
    boxes: Option<(Vec<Option<Vec<BoundingBox>>>, f64)>,
}

impl<'a> CachedSource<'a> {
    /// Serve `cache` in batches of `batch_size` on `device`.
    pub fn new(
        cache: &'a StageCache,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::InvalidConfig("batch size must be at least 1".into()));
        }
        Ok(Self {
            cache,
            batch_size,
            shuffle,
            seed,
            device: device.clone(),
            boxes: None,
        })
    }

    /// Give each sample its fracture boxes (fractions of the picture's width and height,
    /// empty for a sample without fracture, `None` where they are not known), each side grown
    /// by `grow` times the box's size: batches then carry localization targets, -1 (ignored)
    /// on every cell of a sample whose boxes are not known.
    pub fn with_boxes(mut self, boxes: Vec<Option<Vec<BoundingBox>>>, grow: f64) -> Result<Self> {
        if boxes.len() != self.cache.len() || !(grow >= 0.0 && grow.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "boxes for {} samples with growth {grow}: the cache holds {} samples and growth must be >= 0",
                boxes.len(),
                self.cache.len()
            )));
        }
        self.boxes = Some((boxes, grow));
        Ok(self)
    }

    /// The samples and views of `epoch`, in batch order.
    fn plan(&self, epoch: u64) -> Vec<(usize, usize)> {
        let n = self.cache.len();
        let mut order: Vec<usize> = (0..n).collect();
        if !self.shuffle {
            return order.into_iter().map(|i| (i, 0)).collect();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch + 1);
        order.shuffle(&mut rng);
        let views = self.cache.views().len();
        order
            .into_iter()
            .map(|i| (i, rng.random_range(0..views)))
            .collect()
    }

    fn batch(&self, plan: &[(usize, usize)]) -> Result<Batch> {
        let samples: Vec<usize> = plan.iter().map(|p| p.0).collect();
        let views: Vec<usize> = plan.iter().map(|p| p.1).collect();
        let images = self.cache.gather(&samples, &views, &self.device)?;
        let labels: Vec<f32> = samples.iter().map(|&i| self.cache.labels()[i]).collect();
        let labels = Tensor::from_vec(labels, samples.len(), &self.device)?;
        let targets = match &self.boxes {
            None => None,
            Some((boxes, grow)) => {
                let (_, h, w) = self.cache.dims();
                let (input_h, input_w) = self.cache.input_dims();
                let aspect = input_w as f64 / input_h as f64;
                let mut all = Vec::with_capacity(plan.len() * h * w);
                for &(i, v) in plan {
                    let view = self.cache.views()[v];
                    match &boxes[i] {
                        Some(boxes) => {
                            let placed: Vec<BoundingBox> =
                                boxes.iter().map(|b| view_box(view, i, b, aspect)).collect();
                            all.extend(cell_targets(&placed, h, w, *grow));
                        }
                        None => all.extend(std::iter::repeat_n(-1f32, h * w)),
                    }
                }
                Some(Tensor::from_vec(all, (plan.len(), h, w), &self.device)?)
            }
        };
        Ok(Batch {
            images,
            labels,
            indices: samples,
            targets,
        })
    }
}

/// A box (fractions of picture `index`) as it lies in `view`: the smallest box holding its
/// four corners' images (a turned box grows a little).
fn view_box(view: CacheView, index: usize, b: &BoundingBox, aspect: f64) -> BoundingBox {
    let corners = [(b.x0, b.y0), (b.x1, b.y0), (b.x0, b.y1), (b.x1, b.y1)]
        .map(|(x, y)| view.map_point(index, x, y, aspect));
    let (xs, ys) = (corners.map(|c| c.0), corners.map(|c| c.1));
    // NaN-aware: a box with a NaN corner stays NaN, and `cell_targets` skips it (f64::min
    // would drop the NaN and keep a box made of the other corners).
    let pick = |v: [f64; 4], better: fn(f64, f64) -> bool| {
        v.into_iter()
            .reduce(|a, b| {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else if better(b, a) {
                    b
                } else {
                    a
                }
            })
            .unwrap_or(f64::NAN)
    };
    let min = |v| pick(v, |b, a| b < a);
    let max = |v| pick(v, |b, a| b > a);
    BoundingBox::new(min(xs), min(ys), max(xs), max(ys))
}

/// Targets `h * w` (row-major) for a map over the picture: 1 for each cell that a box
/// (fractions of the picture's width and height, each side grown by `grow` times the box's
/// size) overlaps, 0 elsewhere. See [`CachedSource`] for an example.
pub fn cell_targets(boxes: &[BoundingBox], h: usize, w: usize, grow: f64) -> Vec<f32> {
    let mut targets = vec![0f32; h * w];
    for b in boxes
        .iter()
        .filter(|b| [b.x0, b.y0, b.x1, b.y1].iter().all(|v| v.is_finite()))
    {
        let (gx, gy) = (grow * b.width(), grow * b.height());
        let (xa, xb) = (b.x0 - gx, b.x1 + gx);
        let (ya, yb) = (b.y0 - gy, b.y1 + gy);
        // Cells [c / w, (c + 1) / w) that the open interval (xa, xb) overlaps.
        let span = |a: f64, b: f64, n: usize| {
            let first = ((a * n as f64).floor().max(0.0) as usize).min(n);
            let last = ((b * n as f64).ceil().min(n as f64).max(0.0)) as usize;
            first..last.max(first)
        };
        for r in span(ya, yb, h) {
            for c in span(xa, xb, w) {
                targets[r * w + c] = 1.0;
            }
        }
    }
    targets
}

impl BatchSource for CachedSource<'_> {
    fn num_samples(&self) -> usize {
        self.cache.len()
    }

    fn batches(&self, epoch: u64) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>> {
        let plan = self.plan(epoch);
        let chunks: Vec<Vec<(usize, usize)>> =
            plan.chunks(self.batch_size).map(<[_]>::to_vec).collect();
        Ok(Box::new(chunks.into_iter().map(move |c| self.batch(&c))))
    }
}
