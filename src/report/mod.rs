//! The evaluation report: one self-contained HTML page a reviewer or clinician can open from
//! disk and read in a minute, with its charts also written as PNG and SVG, and its numbers as
//! `metrics.json`.
//!
//! The top floor of the crate: it reads an [`Evaluation`], the classifier's history, split and
//! provenance, and (optionally) the caller's explanation overlays, and draws. Nothing below it
//! knows HTML exists. The page holds the headline (sensitivity and specificity at the chosen
//! threshold with 95 % intervals, ROC AUC, prevalence, accuracy beside the always-"not
//! fractured" baseline), ROC and precision-recall curves with the operating point and the 0.5
//! point, the sensitivity at specificities 0.80, 0.90 and 0.95, the confusion matrix, a
//! threshold sweep, a reliability diagram before and after the
//! temperature with ECE and Brier score, test-time augmentation against none, subgroup tables,
//! where explanation maps land on annotated fractures (when given, [`Report::localization`]),
//! training curves, the split and provenance, a gallery of the most instructive cases, and a
//! model card with the TRIPOD+AI / CLAIM items that apply.
//!
//! Every image is inlined as a `data:` URI and a Content-Security-Policy forbids any fetch, so
//! the page works offline and shows exactly what was written. Every number on it carries a
//! `data-key` (a JSON pointer into `metrics.json`) and its exact `data-value`, so tests and
//! tools can check the page against the data.
//!
//! ```no_run
//! use fracture::report::{DataSource, Report};
//! let mut clf = fracture::FractureClassifier::load("model_dir", &candle_core::Device::Cpu)?;
//! let split = clf.split().cloned().expect("a bundle with its split");
//! let evaluation = clf.evaluate(&split.test)?;
//! let files = Report::new(&clf, &evaluation)
//!     .data_source(DataSource::fracatlas())
//!     .bundle("model_dir")?
//!     .write("model_dir/report")?;
//! println!("open {}", files.html.display());
//! # Ok::<(), fracture::Error>(())
//! ```

mod calibration_text;
mod charts;
mod data;
mod gallery;
mod html;
mod localization;
mod model_card;
mod sections;
mod text;

pub use data::{DataSource, GalleryEntry, ModelInfo, PartCounts, ReportData, Summary, SweepPoint};
pub use gallery::{
    annotated_regions, select_gallery, GalleryImage, GalleryKind, Overlay, OverlaySource,
};
pub use localization::LocalizationData;

use crate::atomic::AtomicWriter;
use crate::classifier::{stored, Evaluation, FractureClassifier};
use crate::dataset::stored_path::PathForm;
use crate::error::{Error, Result};
use crate::metrics::LocalizationReport;
use crate::robustness::RobustnessReport;
use crate::train::History;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// File name of the page.
pub const REPORT_HTML: &str = "report.html";
/// File name of the numbers behind the page.
pub const REPORT_JSON: &str = "metrics.json";
/// Cases of each gallery kind [`Report`] picks when the caller gives no gallery.
pub const GALLERY_PER_KIND: usize = 4;

/// A report in the making: what to show, then [`Report::write`].
#[derive(Debug, Clone)]
pub struct Report<'a> {
    evaluation: &'a Evaluation,
    title: String,
    model: ModelInfo,
    history: Option<History>,
    split: Option<Vec<PartCounts>>,
    split_copies_across_parts: Option<usize>,
    data_source: DataSource,
    gallery: Option<Vec<GalleryImage>>,
    localization: Option<&'a LocalizationReport>,
    robustness: Option<&'a RobustnessReport>,
    extra_limitations: Vec<String>,
    /// How image paths are written (the classifier's), and the data root they are relative to.
    path_form: PathForm,
    data_root: PathBuf,
}

/// The files [`Report::write`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFiles {
    /// The page, `report.html`.
    pub html: PathBuf,
    /// Its numbers, `metrics.json`.
    pub metrics: PathBuf,
    /// Each chart as PNG and SVG.
    pub charts: Vec<PathBuf>,
}

impl<'a> Report<'a> {
    /// A report of `evaluation`, made by `classifier` (its provenance, history and split are
    /// taken from it). The gallery is picked by [`select_gallery`] unless
    /// [`Report::gallery`] is called. The evaluation must have been made at the classifier's
    /// threshold, temperature and test-time augmentation: [`Report::write`] and
    /// [`Report::data`] refuse it otherwise, naming the field.
    pub fn new(classifier: &FractureClassifier, evaluation: &'a Evaluation) -> Self {
        let evaluation_paths: Vec<PathBuf> = (evaluation.cases.iter().map(|c| c.path.clone()))
            .chain(evaluation.skipped.iter().map(|(path, _)| path.clone()))
            .collect();
        Self {
            path_form: classifier.path_form().clone(),
            data_root: stored::evaluation_root(classifier.split(), &evaluation_paths),
            evaluation,
            title: format!(
                "Fracture classifier: evaluation on the {} part",
                evaluation.part
            ),
            model: ModelInfo::of(classifier),
            history: classifier.history().cloned(),
            split: classifier.split().map(data::part_counts),
            split_copies_across_parts: classifier.split().map(|s| s.leaking_hashes().len()),
            data_source: DataSource::named("not recorded"),
            gallery: None,
            localization: None,
            robustness: None,
            extra_limitations: Vec::new(),
        }
    }

    /// The page's title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Where the data come from (name, facts a reader must know, what was left out).
    pub fn data_source(mut self, source: DataSource) -> Self {
        self.data_source = source;
        self
    }

    /// The saved model the classifier was opened from (a bundle folder or a Keras model file):
    /// its path and the SHA-256 of its weights (the bundle's `model.safetensors`, or the Keras
    /// file itself) go into the provenance section. An error if the weights cannot be read.
    pub fn bundle(mut self, path: impl AsRef<Path>) -> Result<Self> {
        let dir = path.as_ref();
        let weights = match dir.is_dir() {
            true => dir.join("model.safetensors"),
            false => dir.to_path_buf(),
        };
        let mut file = std::fs::File::open(&weights).map_err(|e| Error::io(&weights, e))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(&weights, e))?;
        let digest = hasher.finalize();
        self.model.weights_sha256 = Some(digest.iter().map(|b| format!("{b:02x}")).collect());
        self.model.bundle = Some(dir.display().to_string());
        Ok(self)
    }

    /// The gallery's cases (normally [`select_gallery`]'s, with overlays and boxes added).
    pub fn gallery(mut self, images: Vec<GalleryImage>) -> Self {
        self.gallery = Some(images);
        self
    }

    /// An explanation overlay for every gallery case `source` has one for (the gallery is
    /// [`select_gallery`]'s unless [`Report::gallery`] was called before). This is where an
    /// explanation method (Grad-CAM) plugs in: implement [`OverlaySource`] for it, or pass a
    /// closure.
    ///
    /// ```no_run
    /// # let (clf, evaluation): (fracture::FractureClassifier, fracture::classifier::Evaluation) = todo!();
    /// use fracture::report::{GalleryImage, Overlay, Report};
    /// let cams = |image: &GalleryImage| -> fracture::Result<Option<Overlay>> {
    ///     Ok(Some(Overlay::File(image.path.with_extension("cam.png"))))
    /// };
    /// Report::new(&clf, &evaluation).overlays(&cams)?.write("report")?;
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn overlays(mut self, source: &dyn OverlaySource) -> Result<Self> {
        let mut gallery = self.gallery_images();
        for image in &mut gallery {
            image.overlay = source.overlay(image)?;
        }
        self.gallery = Some(gallery);
        Ok(self)
    }

    /// The annotated fractures of every gallery case from a FracAtlas folder, read once with
    /// [`crate::dataset::annotations::Annotations::open_fracatlas`] (COCO, YOLO for images
    /// it does not list: the regions the localization scores use; [`annotated_regions`]; the
    /// gallery as in [`Report::overlays`]).
    pub fn fracatlas_boxes(mut self, root: impl AsRef<Path>) -> Result<Self> {
        let annotations = crate::dataset::annotations::Annotations::open_fracatlas(root.as_ref())?;
        let mut gallery = self.gallery_images();
        for image in &mut gallery {
            image.boxes = annotated_regions(&annotations, &image.path)?;
        }
        self.gallery = Some(gallery);
        Ok(self)
    }

    /// Where the explanation maps land on the annotated fractures of the evaluated part
    /// ([`FractureClassifier::localization`]): the Localization section shows the map's
    /// scores, the baselines', and the paired differences overall and per body part
    /// (`metrics.json` gets the summaries, not the image paths).
    pub fn localization(mut self, report: &'a LocalizationReport) -> Self {
        self.localization = Some(report);
        self
    }

    /// How the model's probability moved under re-encoding, noise, 12-bit DICOM and another
    /// program's resize ([`FractureClassifier::robustness`](crate::FractureClassifier::robustness)),
    /// shown in the model card. It must be of the evaluated part at the classifier's
    /// threshold: [`Report::write`] refuses it otherwise.
    pub fn robustness(mut self, report: &'a RobustnessReport) -> Self {
        self.robustness = Some(report);
        self
    }

    /// One more limitation for the model card, in plain words.
    pub fn limitation(mut self, text: impl Into<String>) -> Self {
        self.extra_limitations.push(text.into());
        self
    }

    /// The numbers of the report (what `metrics.json` holds).
    pub fn data(&self) -> Result<ReportData<'_>> {
        ReportData::new(self, &self.gallery_images(), model_card::limitations(self))
    }

    fn gallery_images(&self) -> Vec<GalleryImage> {
        self.gallery
            .clone()
            .unwrap_or_else(|| select_gallery(self.evaluation, GALLERY_PER_KIND))
    }

    /// Write `report.html`, `metrics.json` and every chart as PNG and SVG into `dir`
    /// (created if needed; each file replaced atomically, the page last). Image paths are
    /// written in the classifier's [`PathForm`] ([`FractureClassifier::set_path_form`]):
    /// relative to the data root by default, never absolute.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<ReportFiles> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let gallery = self.gallery_images();
        let data = ReportData::new(self, &gallery, model_card::limitations(self))?;
        let mut json = serde_json::to_value(&data).map_err(|e| Error::Format {
            path: dir.join(REPORT_JSON),
            message: format!("cannot serialize the report data: {e}"),
        })?;
        stored::store_evaluation_paths(&mut json["evaluation"], &self.path_form, &self.data_root);
        json["path_form"] = self.path_form.describe().into();
        let charts = charts::render_all(&data)?;
        let page = html::page(&data, &json, &charts, &gallery)?;
        let mut writer = AtomicWriter::new(dir, None);
        let mut chart_files = Vec::new();
        for chart in &charts {
            for (extension, bytes) in [("png", chart.png.as_slice()), ("svg", chart.svg.as_bytes())]
            {
                let name = format!("{}.{extension}", chart.name);
                writer.write_bytes(&name, bytes)?;
                chart_files.push(dir.join(name));
            }
        }
        writer.write_json(REPORT_JSON, &json)?;
        writer.write_bytes(REPORT_HTML, page.as_bytes())?;
        Ok(ReportFiles {
            html: dir.join(REPORT_HTML),
            metrics: dir.join(REPORT_JSON),
            charts: chart_files,
        })
    }
}

/// An image as PNG bytes.
fn encode_png(image: &image::DynamicImage) -> Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| Error::Internal(format!("cannot encode a PNG in memory: {e}")))?;
    Ok(bytes.into_inner())
}
