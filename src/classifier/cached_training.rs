//! Feeding a [`Trainer`]: image loaders, or (with [`TrainConfig::stage_cache`]) the cached
//! output of the frozen stages with the fracture boxes as localization targets.

use super::FractureClassifier;
use crate::augment::AugmentConfig;
use crate::dataset::annotations::{Annotations, BoundingBox};
use crate::dataset::{Label, Part, Split};
use crate::error::{Error, Result};
use crate::model::FrozenBackbone;
use crate::preprocess::ExifOrientation;
use crate::robustness::Perturbation;
use crate::train::{
    CacheView, CachedSource, History, StageCache, StageCacheConfig, TrainConfig, Trainer,
    ViewAugmentation,
};
use candle_core::Tensor;
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;

impl FractureClassifier {
    /// [`FractureClassifier::train_with_checkpoints`] with the fracture boxes of
    /// `annotations` (for [`TrainConfig::box_supervision`]: the head's localization map
    /// learns where the fractures are). A fractured image without annotations trains the
    /// classifier only (its cells are ignored by the localization loss).
    ///
    /// ```no_run
    /// use fracture::dataset::annotations::Annotations;
    /// use fracture::dataset::{FracAtlas, SplitConfig};
    /// use fracture::model::{EfficientNetLiteConfig, HeadConfig, LocalizationHeadConfig};
    /// use fracture::train::{BackboneTraining, BoxSupervision, StageCacheConfig, TrainConfig};
    /// use fracture::{FractureClassifier, WeightsSource};
    /// let data = FracAtlas::open("FracAtlas")?;
    /// let split = data.split(&SplitConfig::default())?;
    /// let annotations = Annotations::open_fracatlas("FracAtlas")?;
    /// let lite0 = EfficientNetLiteConfig::lite0();
    /// let mut clf = FractureClassifier::builder()
    ///     .backbone(lite0.clone())
    ///     .weights(WeightsSource::File("efficientnet_lite0_imagenet.safetensors".into()))
    ///     .image_size(384, 384)
    ///     .build()?;
    /// let config = TrainConfig {
    ///     backbone: BackboneTraining::LastStages { stages: 2, learning_rate: 1e-4 },
    ///     head: HeadConfig { localization: Some(LocalizationHeadConfig::efficientnet_lite(&lite0)?), ..HeadConfig::default() },
    ///     stage_cache: Some(StageCacheConfig::new("runs/cache")),
    ///     box_supervision: Some(BoxSupervision::default()),
    ///     ..TrainConfig::default()
    /// };
    /// clf.train_with_boxes(&split, &annotations, config, None)?;
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn train_with_boxes(
        &mut self,
        split: &Split,
        annotations: &Annotations,
        config: TrainConfig,
        checkpoint_dir: Option<&Path>,
    ) -> Result<History> {
        self.train_inner(split, Some(annotations), config, checkpoint_dir)
    }

    /// Run `trainer` on the split: through image loaders, or through stage caches when its
    /// configuration asks for them.
    pub(super) fn run_trainer(
        &self,
        trainer: &mut Trainer,
        split: &Split,
        annotations: Option<&Annotations>,
        checkpoint_dir: Option<&Path>,
    ) -> Result<History> {
        let config = trainer.config().clone();
        let Some(cache) = &config.stage_cache else {
            if config.box_supervision.is_some() {
                return Err(Error::InvalidConfig(
                    "box supervision trains on a stage cache: set TrainConfig::stage_cache".into(),
                ));
            }
            let train = self.loader(&split.train, config.batch_size, true, config.seed)?;
            let train = if config.augment {
                train.with_transform(Arc::new(AugmentConfig::default()))
            } else {
                train
            };
            let val = self.loader(&split.val, config.batch_size, false, config.seed)?;
            return trainer.fit(&train, &val, checkpoint_dir);
        };
        let train_cache = self.stage_cache(trainer, &split.train, "train", cache, &cache.views)?;
        let val_cache =
            self.stage_cache(trainer, &split.val, "val", cache, &[CacheView::Original])?;
        let device = self.device.clone();
        let mut train =
            CachedSource::new(&train_cache, config.batch_size, true, config.seed, &device)?;
        if let Some(supervision) = &config.box_supervision {
            let annotations = annotations.ok_or_else(|| {
                Error::InvalidConfig(
                    "box supervision needs the fracture boxes: train with train_with_boxes (resume with resume_training_with_boxes)".into(),
                )
            })?;
            // FracAtlas's boxes are given on the picture as displayed (EXIF orientation
            // applied): a model that reads pictures as stored would learn rotated targets.
            if self.preprocess.exif != ExifOrientation::Apply {
                return Err(Error::InvalidConfig(
                    "box supervision needs the preprocessing to apply the EXIF orientation (the boxes are on the picture as displayed)".into(),
                ));
            }
            train = train.with_boxes(part_boxes(&split.train, annotations), supervision.grow)?;
        }
        let val = CachedSource::new(&val_cache, config.batch_size, false, config.seed, &device)?;
        trainer.fit(&train, &val, checkpoint_dir)
    }

    /// The cache of the frozen stages' output for `part` in `views`, opened or built in
    /// `config.dir` under `name`, keyed by the frozen weights, the backbone, the preprocessing
    /// and the images.
    fn stage_cache(
        &self,
        trainer: &Trainer,
        part: &Part,
        name: &str,
        config: &StageCacheConfig,
        views: &[CacheView],
    ) -> Result<StageCache> {
        let stage = trainer
            .first_trainable_stage()?
            .checked_sub(1)
            .ok_or_else(|| {
                Error::InvalidConfig(
                    "a stage cache needs at least one frozen stage before those that train".into(),
                )
            })?;
        let frozen = FrozenBackbone::new(trainer.net().backbone.clone(), &self.device)?;
        // The format's version: bump it when the fast path's arithmetic or the layout changes.
        // The augmented views' ranges (train::ViewAugmentation) are part of the format.
        const CACHE_FORMAT: &str = "fracture stage cache 2";
        let mut key = serde_json::to_vec(&(CACHE_FORMAT, trainer.backbone_config(), stage))
            .map_err(|e| Error::Internal(format!("cannot serialize the backbone: {e}")))?;
        key.extend(format!("{:?}", self.preprocess).as_bytes());
        for (name, value) in trainer.frozen_weights()? {
            key.extend(name.as_bytes());
            for v in value.flatten_all()?.to_vec1::<f32>()? {
                key.extend(v.to_le_bytes());
            }
        }
        let loader = self.loader(part, 8, false, 0)?;
        let (h, w) = (self.preprocess.height, self.preprocess.width);
        let mut load = |indices: &[usize], view: CacheView| -> Result<Tensor> {
            let images = indices
                .par_iter()
                .map(|&i| match view {
                    CacheView::Augmented { seed } => {
                        self.augmented_picture(&part.samples[i].path, seed, i)
                    }
                    CacheView::Original | CacheView::Mirror => loader.load_sample(i, 0),
                })
                .collect::<Result<Vec<Vec<f32>>>>()?;
            let flat: Vec<f32> = images.into_iter().flatten().collect();
            Ok(Tensor::from_vec(
                flat,
                (indices.len(), 3, h, w),
                &self.device,
            )?)
        };
        StageCache::open_or_build(
            &config.dir,
            name,
            &part.samples,
            views,
            config.dtype,
            &key,
            &mut load,
            &|x| frozen.stage_output(x, stage),
            trainer.config().progress,
        )
    }
}

impl FractureClassifier {
    /// Picture `index` of its part (read from `path`) as the augmented view seeded by `seed`
    /// shows it ([`ViewAugmentation`]): resized by another program, re-encoded, noisy (on
    /// the decoded picture), then preprocessed, turned, zoomed, shifted and mirrored (at the
    /// model's size); CHW, normalized.
    fn augmented_picture(&self, path: &Path, seed: u64, index: usize) -> Result<Vec<f32>> {
        let view = ViewAugmentation::draw(seed, index);
        let mut picture = self.preprocess.decode(path)?.image;
        if let Some((fraction, filter)) = view.resize {
            let size = |v: u32| ((f64::from(v) * fraction).round() as u32).max(1);
            picture = picture.resize_exact(size(picture.width()), size(picture.height()), filter);
        }
        if let Some(quality) = view.jpeg_quality {
            picture = Perturbation::Jpeg { quality }.apply(
                &picture,
                &self.preprocess,
                seed,
                index,
                path,
            )?;
        }
        if view.noise > 0.0 {
            let noise = Perturbation::Noise {
                amplitude: view.noise,
                rounded: false,
            };
            picture = noise.apply(&picture, &self.preprocess, seed, index, path)?;
        }
        let resized = self.preprocess.resize_rgb(&picture);
        self.preprocess.normalize_chw(&view.warp(&resized))
    }
}

/// Each sample's fracture boxes (fractions of the picture as displayed): empty when not
/// fractured, `None` (its cells ignored) for a fractured image without annotations or whose
/// annotated size fits its stored size in neither orientation (a crop: the boxes would miss).
fn part_boxes(part: &Part, annotations: &Annotations) -> Vec<Option<Vec<BoundingBox>>> {
    part.samples
        .iter()
        .map(|s| match s.label {
            Label::NotFractured => Some(Vec::new()),
            Label::Fractured => annotations
                .for_path(&s.path)
                .filter(|a| !a.regions.is_empty())
                .filter(|a| match (s.dimensions, a.annotated_size) {
                    (Some((w, h)), Some(_)) => {
                        a.pixel_boxes(w, h).is_ok() || a.pixel_boxes(h, w).is_ok()
                    }
                    _ => true,
                })
                .map(|a| a.regions.iter().map(|r| r.bbox).collect()),
        })
        .collect()
}
