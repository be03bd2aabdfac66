//! Scoring one shard of an archive ([`crate::score`]) with this classifier.

use super::FractureClassifier;
use crate::dataset::{decode::decode_bytes, dicom};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::score::{
    done_name, error_kind, list_inputs, DoneMarker, Input, ScoreOptions, ScoreRow, ShardFile,
    ShardReport,
};
use image::DynamicImage;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Instant;

/// A read and decoded input, or the row that says why it could not be.
enum Decoded {
    Image {
        sha256: String,
        body_part: String,
        image: DynamicImage,
    },
    Failed {
        sha256: String,
        error: String,
    },
}

fn decode(input: &Input) -> Decoded {
    let path = match &input.file {
        Ok(path) => path,
        Err(reason) => {
            return Decoded::Failed {
                sha256: String::new(),
                error: reason.clone(),
            }
        }
    };
    let failed = |sha256: String, e: &Error| {
        let (kind, message) = error_kind(e);
        Decoded::Failed {
            sha256,
            error: format!("{kind}: {message}"),
        }
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return failed(String::new(), &Error::io(path, e)),
    };
    let sha256 = hex(&Sha256::digest(&bytes));
    match decode_bytes(&bytes, path) {
        Ok(image) => {
            let body_part = if dicom::is_dicom(&bytes) {
                dicom::read_header(&bytes, path)
                    .ok()
                    .and_then(|info| info.body_part_examined)
                    .map(|part| dicom::body_part(&part).name().to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            Decoded::Image {
                sha256,
                body_part,
                image,
            }
        }
        Err(e) => failed(sha256, &e),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl FractureClassifier {
    /// The model's identity as score rows record it: the first 16 hex digits of a SHA-256 over
    /// the backbone and head configuration, every weight (by name, shape and f32 value), the
    /// preprocessing, the temperature and the test-time augmentation; everything that changes
    /// a probability, and nothing else (the threshold is recorded beside it).
    ///
    /// ```
    /// let build = |seed| fracture::FractureClassifier::builder()
    ///     .backbone(fracture::model::ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    ///     .weights(fracture::WeightsSource::Random { seed })
    ///     .device(fracture::device::DeviceRequest::Cpu)
    ///     .build();
    /// let (a, b) = (build(0)?, build(1)?);
    /// assert_eq!(a.model_hash()?, build(0)?.model_hash()?);
    /// assert_ne!(a.model_hash()?, b.model_hash()?);
    /// assert_eq!(a.model_hash()?.len(), 16);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn model_hash(&self) -> Result<String> {
        let mut hasher = Sha256::new();
        let json = |value: serde_json::Result<String>| {
            value.map_err(|e| Error::Internal(format!("cannot describe the model: {e}")))
        };
        hasher.update(b"fracture-model-hash-v1\n");
        hasher.update(json(serde_json::to_string(&self.backbone))?);
        hasher.update(json(serde_json::to_string(&self.head))?);
        hasher.update(json(serde_json::to_string(&super::PreprocessSpec::from(
            &self.preprocess,
        )))?);
        hasher.update(json(serde_json::to_string(&self.tta))?);
        // The calibration map (slope and intercept; a temperature is slope 1/T).
        hasher.update(json(serde_json::to_string(&self.calibration.map))?);
        let mut names: Vec<&String> = self.tensors.keys().collect();
        names.sort();
        for name in names {
            let tensor = &self.tensors[name];
            hasher.update(format!("\n{name}{:?}\n", tensor.dims()));
            let values = tensor
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for value in values {
                hasher.update(value.to_le_bytes());
            }
        }
        Ok(hex(&hasher.finalize())[..16].to_string())
    }

    /// Score one shard of `input` (a folder, or a text file of paths; JPEG, PNG, DICOM, ...
    /// by content) into `out/shard-I-of-N.csv`, then mark it done with `shard-I-of-N.done`.
    ///
    /// Each image goes through the network alone, so that its probability is the same bit for
    /// bit whatever shard and batch it falls in (a batched forward rounds differently with the
    /// batch's size and neighbours, by about 1e-9); `batch_size` is how many files are read and
    /// decoded in parallel and appended per write. Rows are appended per batch and synced, so a killed run loses at most the batch in
    /// flight: rerun the same shard and it keeps the rows already written, cuts off a torn
    /// last line and scores the rest. A file written by another model or threshold, or an
    /// `out` holding another shard count, is refused. Files that cannot be scored get a row
    /// with the reason ([`crate::score::error_kind`]); only a failing model, an unreadable
    /// input folder or list, or an unwritable `out` is an error. See [`crate::score`] for an
    /// example and [`crate::score::merge`] for the next step.
    pub fn score_shard(
        &self,
        input: impl AsRef<Path>,
        out: impl AsRef<Path>,
        options: &ScoreOptions,
    ) -> Result<ShardReport> {
        let (input, out) = (input.as_ref(), out.as_ref());
        let shard = options.shard;
        let batch_size = options.batch_size.max(1);
        let model = self.model_hash()?;
        let inputs = list_inputs(input, Some(out))?;
        let (mut file, done) = ShardFile::open(out, shard, &model, self.threshold)?;
        let resumed = file.rows;
        let todo: Vec<&Input> = inputs
            .iter()
            .filter(|i| shard.contains(&i.path) && !done.contains(&i.path))
            .collect();
        let label = format!("score shard {shard}");
        let progress = if options.progress {
            Progress::items(label, todo.len() as u64)
        } else {
            Progress::hidden()
        };
        let started = Instant::now();
        let (mut added, mut errors) = (0, 0);
        for chunk in todo.chunks(batch_size) {
            let decoded: Vec<Decoded> = chunk.par_iter().map(|i| decode(i)).collect();
            let images: Vec<DynamicImage> = decoded
                .iter()
                .filter_map(|d| match d {
                    Decoded::Image { image, .. } => Some(image.clone()),
                    Decoded::Failed { .. } => None,
                })
                .collect();
            // One image per forward pass: batched matrix products round differently with the
            // batch's size and neighbours, and a row must not depend on its shard. A
            // non-finite output is that image's row error (never "not fractured"), so one
            // image cannot stop its shard for good; any other failure is the model's and stops.
            let mut predictions = images
                .iter()
                .map(|image| match self.classify_image(image) {
                    Ok(prediction) => Ok(Ok(prediction.fracture_probability)),
                    Err(e @ Error::NonFinite { .. }) => {
                        let (kind, message) = error_kind(&e);
                        Ok(Err(format!("{kind}: {message}")))
                    }
                    Err(e) => Err(e),
                })
                .collect::<Result<Vec<_>>>()?
                .into_iter();
            let mut rows = Vec::with_capacity(chunk.len());
            for (input, decoded) in chunk.iter().zip(decoded) {
                let (sha256, body_part, p, error) = match decoded {
                    Decoded::Image {
                        sha256, body_part, ..
                    } => {
                        let prediction = predictions.next().ok_or_else(|| {
                            Error::Internal("the model returned too few predictions".into())
                        })?;
                        match prediction {
                            Ok(p) => (sha256, body_part, Some(p), String::new()),
                            Err(error) => {
                                errors += 1;
                                (sha256, body_part, None, error)
                            }
                        }
                    }
                    Decoded::Failed { sha256, error } => {
                        errors += 1;
                        (sha256, String::new(), None, error)
                    }
                };
                rows.push(ScoreRow {
                    path: input.path.clone(),
                    sha256,
                    p_fracture: p,
                    fractured: p
                        .map(|p| crate::metrics::predicts_fracture(p, self.threshold))
                        .transpose()?,
                    threshold: self.threshold,
                    model: model.clone(),
                    body_part,
                    error,
                });
            }
            file.append(&rows)?;
            added += rows.len();
            let rate = added as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress.set_message(format!("{rate:.1} images/s, {errors} not scored"));
            progress.inc(rows.len() as u64);
            if let Some(after_batch) = &options.after_batch {
                after_batch(file.rows);
            }
        }
        let marker = DoneMarker {
            shard: shard.index,
            shards: shard.count,
            rows: file.rows,
            model,
            threshold: self.threshold,
            fracture_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        crate::atomic::AtomicWriter::new(out, None).write_json(&done_name(shard), &marker)?;
        progress.finish(&format!(
            "{added} images scored this run ({errors} not scored), {resumed} from an earlier run"
        ));
        Ok(ShardReport {
            shard,
            rows: file.rows,
            added,
            resumed,
            errors,
        })
    }
}
