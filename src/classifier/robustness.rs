//! [`FractureClassifier::robustness`]: a part's images classified as read and under each
//! [`Perturbation`] ([`crate::robustness`]).

use super::FractureClassifier;
use crate::dataset::stored_path::data_root;
use crate::dataset::Part;
use crate::error::Result;
use crate::progress::Progress;
use crate::robustness::{Perturbation, RobustnessCase, RobustnessReport};
use image::DynamicImage;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Images decoded (at full size) and perturbed per step.
const CHUNK: usize = 8;

impl FractureClassifier {
    /// How this classifier's fracture probabilities move when the pictures of `part` reach it
    /// changed by each of `perturbations` ([`Perturbation::standard`] for issue 24's list),
    /// with noise drawn from `seed`. Each image is decoded as [`Self::classify_path`] decodes
    /// it, classified as read and after each perturbation ([`Self::classify_batch`]: same
    /// resize, normalization, calibration and test-time augmentation), and the report
    /// summarizes the absolute changes and the decisions flipped at [`Self::threshold`].
    /// Unreadable images are listed in [`RobustnessReport::skipped`]; a part with no readable
    /// image is an error.
    ///
    /// ```
    /// use fracture::dataset::{synthetic::SyntheticConfig, FracAtlas, SplitConfig};
    /// use fracture::robustness::Perturbation;
    /// let dir = tempfile::tempdir()?;
    /// SyntheticConfig { n_fractured: 3, n_not_fractured: 3, ..Default::default() }.generate_to(dir.path())?;
    /// let split = FracAtlas::open(dir.path())?.split(&SplitConfig::default())?;
    /// let clf = fracture::FractureClassifier::builder()
    ///     .backbone(fracture::model::ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    ///     .weights(fracture::WeightsSource::Random { seed: 0 })
    ///     .device(fracture::device::DeviceRequest::Cpu)
    ///     .image_size(32, 32)
    ///     .build()?;
    /// let perturbations = [Perturbation::Jpeg { quality: 75 }, Perturbation::Dicom12Bit];
    /// let report = clf.robustness(&split.test, &perturbations, 7)?;
    /// assert_eq!(report.perturbations.len(), 2);
    /// assert_eq!(report.cases.len(), split.test.len());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn robustness(
        &self,
        part: &Part,
        perturbations: &[Perturbation],
        seed: u64,
    ) -> Result<RobustnessReport> {
        for perturbation in perturbations {
            perturbation.validate()?;
        }
        let root = data_root(part.samples.iter().map(|s| s.path.as_path())).unwrap_or_default();
        let store = |path: &Path| self.path_form.store(&root, path);
        let progress = Progress::items("robustness", part.len() as u64);
        let (mut cases, mut skipped) = (Vec::new(), Vec::new());
        let indexed: Vec<(usize, &crate::dataset::Sample)> =
            part.samples.iter().enumerate().collect();
        for chunk in indexed.chunks(CHUNK) {
            let decoded: Vec<_> = chunk
                .par_iter()
                .map(|&(i, sample)| (i, sample, self.preprocess.decode_image(&sample.path)))
                .collect();
            let mut read: Vec<(usize, PathBuf, bool)> = Vec::with_capacity(decoded.len());
            let mut images: Vec<DynamicImage> = Vec::with_capacity(decoded.len());
            for (i, sample, image) in decoded {
                match image {
                    Ok(image) => {
                        read.push((
                            i,
                            sample.path.clone(),
                            sample.label == crate::dataset::Label::Fractured,
                        ));
                        images.push(image);
                    }
                    Err(e) => skipped.push((store(&sample.path), e.to_string())),
                }
            }
            let as_read = self.classify_batch(&images)?;
            let mut perturbed = vec![Vec::with_capacity(perturbations.len()); images.len()];
            for perturbation in perturbations {
                let changed = images
                    .par_iter()
                    .zip(&read)
                    .map(|(image, (i, path, _))| {
                        perturbation.apply(image, &self.preprocess, seed, *i, path)
                    })
                    .collect::<Result<Vec<_>>>()?;
                for (row, prediction) in perturbed.iter_mut().zip(self.classify_batch(&changed)?) {
                    row.push(prediction.fracture_probability);
                }
            }
            for (((_, path, fractured), base), row) in read.iter().zip(as_read).zip(perturbed) {
                cases.push(RobustnessCase {
                    file: store(path),
                    fractured: *fractured,
                    probability: base.fracture_probability,
                    perturbed: row,
                });
            }
            progress.inc(chunk.len() as u64);
        }
        progress.finish(&format!(
            "{} images under {} perturbations, {} unreadable",
            cases.len(),
            perturbations.len(),
            skipped.len()
        ));
        RobustnessReport::new(
            part.name.name().to_string(),
            seed,
            self.threshold,
            perturbations,
            cases,
            skipped,
            self.path_form.describe().to_string(),
        )
    }
}
