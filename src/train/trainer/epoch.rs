//! One epoch of training and one validation pass.

use super::feature_cache::FeatureCache;
use super::{PassMetrics, Trainer};
use crate::batch::{check_pass, BatchSource};
use crate::error::{Error, Result};
use crate::model::global_average_pool;
use crate::progress::Progress;
use crate::train::config::BackboneTraining;
use crate::train::evaluate::{accuracy, roc_auc};
use crate::train::loss::{bce_with_logits, bce_with_logits_per_sample, cell_bce_with_logits};
use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

impl Trainer {
    pub(super) fn train_epoch(
        &mut self,
        source: &dyn BatchSource,
        epoch: usize,
        cache: Option<&FeatureCache>,
        progress: &Progress,
    ) -> Result<PassMetrics> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(epoch as u64 + 1);
        let (mut loss_sum, mut count) = (0f64, 0usize);
        let (mut logits_all, mut labels_all) = (Vec::new(), Vec::new());
        for (b, batch) in source.batches(epoch as u64)?.enumerate() {
            let batch = batch?;
            let labels = batch.labels.to_device(&self.device)?.to_dtype(DType::F32)?;
            // With a stage cache the batch holds the frozen stages' output (the fine map of
            // the localization head), not images.
            let (features, fine) = match (cache, &self.config.stage_cache) {
                (Some(cache), _) => (cache.gather(&batch.indices)?, None),
                (None, Some(_)) => {
                    let h = batch.images.to_device(&self.device)?;
                    let first = self.first_trainable_stage()?;
                    let features = self.net.backbone.forward_from_stage_t(&h, first, true)?;
                    (features, Some(h))
                }
                (None, None) => (self.train_features(&batch.images)?, None),
            };
            let logits = self.net.head.forward_train(&features, &mut rng)?;
            let loss = bce_with_logits(&logits, &labels, self.config.class_weights.as_ref())?;
            let loss_value = f64::from(loss.to_scalar::<f32>()?);
            let loss = match &self.config.box_supervision {
                None => loss,
                Some(supervision) => {
                    let (Some(fine), Some(targets), Some(head)) =
                        (&fine, &batch.targets, self.net.head.localization())
                    else {
                        return Err(Error::InvalidConfig(
                            "box supervision needs a stage cache, batches with box targets and a head with a localization map".into(),
                        ));
                    };
                    let map = head.forward(fine, &features)?;
                    let targets = targets.to_device(&self.device)?;
                    let box_loss =
                        cell_bce_with_logits(&map, &targets, supervision.positive_weight)?;
                    (loss + (box_loss * supervision.weight)?)?
                }
            };
            // The history records the classification loss (comparable with validation's);
            // the step's total (with the box loss) must be finite as well.
            let total = f64::from(loss.to_scalar::<f32>()?);
            if !loss_value.is_finite() || !total.is_finite() {
                let loss_value = if loss_value.is_finite() {
                    total
                } else {
                    loss_value
                };
                progress.abandon();
                return Err(Error::Training(format!(
                    "non-finite loss ({loss_value}) in epoch {}, batch {}: training stopped; the checkpoint of epoch {} is left as it was",
                    epoch + 1,
                    b + 1,
                    self.epochs_done
                )));
            }
            let grads = loss.backward()?;
            self.head_optimizer.step(&grads)?;
            if let Some(optimizer) = &mut self.backbone_optimizer {
                optimizer.step(&grads)?;
            }
            let n = batch.indices.len();
            loss_sum += loss_value * n as f64;
            count += n;
            logits_all.extend(logits.detach().to_vec1::<f32>()?);
            labels_all.extend(labels.to_vec1::<f32>()?);
            progress.inc(n as u64);
            progress.set_message(format!("loss {:.4}", loss_sum / count.max(1) as f64));
        }
        check_pass(
            source,
            epoch as u64,
            count,
            &format!("training epoch {}", epoch + 1),
        )?;
        Ok(PassMetrics {
            loss: loss_sum / count.max(1) as f64,
            accuracy: accuracy(&logits_all, &labels_all)?,
            auc: roc_auc(&logits_all, &labels_all),
        })
    }

    /// Pooled features of a frozen backbone, outside the autograd graph (its fast path on
    /// the CPU).
    pub(super) fn frozen_pooled(&self, images: &Tensor) -> Result<Tensor> {
        match &self.frozen {
            Some(frozen) => frozen.pooled(images),
            None => Ok(global_average_pool(&self.net.backbone.forward_features(images)?)?.detach()),
        }
    }

    /// The first stage that trains (0-based), as the stage cache counts: its input is what
    /// the cache holds.
    pub(crate) fn first_trainable_stage(&self) -> Result<usize> {
        let total = self.backbone_config.stage_count();
        match &self.config.backbone {
            BackboneTraining::LastStages { stages, .. } if *stages <= total => Ok(total - stages),
            other => Err(Error::InvalidConfig(format!(
                "a stage cache needs a backbone training its last stages (at most {total}), found {other:?}"
            ))),
        }
    }

    /// Pooled features of a training batch, through the graph only where the backbone trains.
    fn train_features(&self, images: &Tensor) -> Result<Tensor> {
        let images = images.to_device(&self.device)?;
        let backbone = &self.net.backbone;
        let features = match &self.config.backbone {
            BackboneTraining::Frozen => return self.frozen_pooled(&images),
            // The frozen stages run as inference (and as a stage cache) runs them, where the
            // backbone can start from a stage's output; through candle otherwise.
            BackboneTraining::LastStages { stages, .. } => match &self.frozen {
                Some(frozen) => {
                    let first = self.first_trainable_stage()?;
                    let h = frozen.stage_output(&images, first - 1)?;
                    backbone.forward_from_stage_t(&h, first, true)?
                }
                None => backbone.forward_features_last_stages(&images, *stages)?,
            },
            BackboneTraining::All { .. } => backbone.forward_features_t(&images, true)?,
        };
        global_average_pool(&features)
    }

    pub(super) fn validate(
        &self,
        source: &dyn BatchSource,
        cache: Option<&FeatureCache>,
    ) -> Result<PassMetrics> {
        let (mut loss_sum, mut count) = (0f64, 0usize);
        let (mut logits_all, mut labels_all) = (Vec::new(), Vec::new());
        for batch in source.batches(0)? {
            let batch = batch?;
            let labels = batch.labels.to_device(&self.device)?.to_dtype(DType::F32)?;
            let logits = match (cache, &self.config.stage_cache) {
                (Some(cache), _) => self.net.head.forward(&cache.gather(&batch.indices)?)?,
                (None, Some(_)) => {
                    let h = batch.images.to_device(&self.device)?;
                    let first = self.first_trainable_stage()?;
                    let features = self.net.backbone.forward_from_stage_t(&h, first, false)?;
                    self.net.head.forward(&features)?
                }
                (None, None) => self.net.forward(&batch.images.to_device(&self.device)?)?,
            }
            .detach();
            let per_sample = bce_with_logits_per_sample(&logits, &labels)?;
            loss_sum += f64::from(per_sample.sum_all()?.to_scalar::<f32>()?);
            count += batch.indices.len();
            logits_all.extend(logits.to_vec1::<f32>()?);
            labels_all.extend(labels.to_vec1::<f32>()?);
        }
        // Every validation image unreadable must not pass as loss 0 (the best epoch ever).
        check_pass(source, 0, count, "validation")?;
        let loss = loss_sum / count as f64;
        if !loss.is_finite() {
            return Err(Error::Training(format!(
                "non-finite validation loss ({loss}) after epoch {}: training stopped; the checkpoint of epoch {} is left as it was",
                self.epochs_done + 1,
                self.epochs_done
            )));
        }
        Ok(PassMetrics {
            loss,
            accuracy: accuracy(&logits_all, &labels_all)?,
            auc: roc_auc(&logits_all, &labels_all),
        })
    }
}
