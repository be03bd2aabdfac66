//! The report's gallery: the cases a reader should look at (the most confident misses and
//! false alarms, and some clear hits), as thumbnails with an optional explanation overlay and
//! annotation boxes.
//!
//! The report does not compute explanations itself: [`select_gallery`] picks the cases, the
//! caller may attach an overlay to each (for example a Grad-CAM heat map blended over the
//! radiograph, as a PNG) and the boxes a radiologist drew, and [`super::Report::gallery`]
//! takes the list back.

use crate::classifier::Evaluation;
use crate::dataset::annotations::{Annotations, FractureRegion};
use crate::dataset::decode::decode_file;
use crate::error::{Error, Result};
use crate::explain::{draw_regions, OverlayStyle};
use crate::metrics::predicts_fracture;
use image::DynamicImage;
use std::path::{Path, PathBuf};

/// Why a case is in the gallery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GalleryKind {
    /// A fracture the model missed (the lowest probabilities first).
    FalseNegative,
    /// A false alarm (the highest probabilities first).
    FalsePositive,
    /// A fracture the model found (the highest probabilities first).
    TruePositive,
}

impl GalleryKind {
    /// The three kinds in the order the page shows them.
    pub const ALL: [GalleryKind; 3] = [
        GalleryKind::FalseNegative,
        GalleryKind::FalsePositive,
        GalleryKind::TruePositive,
    ];

    /// `false negative`, `false positive` or `true positive`.
    pub fn name(self) -> &'static str {
        match self {
            GalleryKind::FalseNegative => "false negative",
            GalleryKind::FalsePositive => "false positive",
            GalleryKind::TruePositive => "true positive",
        }
    }
}

/// An explanation picture shown beside a thumbnail.
#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    /// An encoded image (PNG, JPEG, ...) in memory.
    Encoded(Vec<u8>),
    /// An image file.
    File(PathBuf),
}

/// Where a gallery case's explanation overlay comes from: the seam between the report and
/// an explanation method (Grad-CAM or another). [`super::Report::overlays`] asks it once per
/// gallery case; `Ok(None)` leaves that case without an overlay. Any
/// `Fn(&GalleryImage) -> Result<Option<Overlay>>` is one.
///
/// ```
/// use fracture::report::{GalleryImage, Overlay, OverlaySource};
/// // An explanation method that has pictures for some files only.
/// let heat_maps = |image: &GalleryImage| -> fracture::Result<Option<Overlay>> {
///     let picture = image.path.with_extension("cam.png");
///     Ok(picture.is_file().then(|| Overlay::File(picture)))
/// };
/// let case = GalleryImage {
///     path: "IMG0000019.jpg".into(),
///     kind: fracture::report::GalleryKind::FalseNegative,
///     fractured: true,
///     probability: 0.1,
///     overlay: None,
///     boxes: Vec::new(),
/// };
/// assert_eq!(heat_maps.overlay(&case)?, None);
/// # Ok::<(), fracture::Error>(())
/// ```
pub trait OverlaySource {
    /// The overlay of `image`, if there is one.
    fn overlay(&self, image: &GalleryImage) -> Result<Option<Overlay>>;
}

impl<F> OverlaySource for F
where
    F: Fn(&GalleryImage) -> Result<Option<Overlay>>,
{
    fn overlay(&self, image: &GalleryImage) -> Result<Option<Overlay>> {
        self(image)
    }
}

/// One gallery case.
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryImage {
    /// The radiograph.
    pub path: PathBuf,
    /// Why it is shown.
    pub kind: GalleryKind,
    /// Its true label.
    pub fractured: bool,
    /// The calibrated fracture probability.
    pub probability: f64,
    /// An explanation overlay (Grad-CAM or similar) shown beside the thumbnail, if any.
    pub overlay: Option<Overlay>,
    /// The annotated fractures drawn on the thumbnail (boxes and outlines, normalized to the
    /// image as [`Annotations`] reads them; [`annotated_regions`]).
    pub boxes: Vec<FractureRegion>,
}

/// The cases worth looking at: up to `per_kind` most confident false negatives, false
/// positives and true positives at the evaluation's threshold, without overlays or boxes.
///
/// ```no_run
/// # let (clf, evaluation): (fracture::FractureClassifier, fracture::classifier::Evaluation) = todo!();
/// use fracture::report::{select_gallery, Overlay, Report};
/// let mut gallery = select_gallery(&evaluation, 4);
/// for image in &mut gallery {
///     // image.overlay = Some(Overlay::Encoded(grad_cam_png(&image.path)?));
/// }
/// Report::new(&clf, &evaluation).gallery(gallery).write("report")?;
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn select_gallery(evaluation: &Evaluation, per_kind: usize) -> Vec<GalleryImage> {
    let threshold = evaluation.at_threshold.threshold;
    let mut gallery = Vec::new();
    for kind in GalleryKind::ALL {
        let mut cases: Vec<_> = evaluation
            .cases
            .iter()
            .filter(|c| {
                // A NaN probability has no decision (an evaluation refuses one): in no list.
                let Ok(called) = predicts_fracture(c.probability, threshold) else {
                    return false;
                };
                match kind {
                    GalleryKind::FalseNegative => c.fractured && !called,
                    GalleryKind::FalsePositive => !c.fractured && called,
                    GalleryKind::TruePositive => c.fractured && called,
                }
            })
            .collect();
        // Most confident first; ties in path order, so the choice is reproducible.
        cases.sort_by(|a, b| {
            let order = a.probability.total_cmp(&b.probability);
            let order = if kind == GalleryKind::FalseNegative {
                order
            } else {
                order.reverse()
            };
            order.then_with(|| a.path.cmp(&b.path))
        });
        gallery.extend(cases.into_iter().take(per_kind).map(|c| GalleryImage {
            path: c.path.clone(),
            kind,
            fractured: c.fractured,
            probability: c.probability,
            overlay: None,
            boxes: Vec::new(),
        }));
    }
    gallery
}

/// The fractures annotated on `image` in `annotations` (read once for the whole gallery, by
/// [`Annotations::open_fracatlas`]: the same regions the localization scores use); none when
/// the image is not annotated. An image decoded in another shape than the one annotated
/// (another orientation or a crop) is an error naming it: its boxes would be drawn in the
/// wrong place.
///
/// ```
/// use fracture::dataset::annotations::{Annotations, BoundingBox};
/// let root = tempfile::tempdir()?;
/// let image = root.path().join("IMG0000001.jpg");
/// image::GrayImage::new(200, 100).save(&image)?;
/// std::fs::create_dir_all(root.path().join("Annotations/YOLO"))?;
/// std::fs::write(root.path().join("Annotations/YOLO/IMG0000001.txt"), "0 0.5 0.5 0.2 0.4\n")?;
/// let annotations = Annotations::open_fracatlas(root.path())?;
/// let regions = fracture::report::annotated_regions(&annotations, &image)?;
/// assert_eq!(regions[0].pixel_box(200, 100), BoundingBox::new(80.0, 30.0, 120.0, 70.0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn annotated_regions(annotations: &Annotations, image: &Path) -> Result<Vec<FractureRegion>> {
    let Some(annotated) = annotations.for_path(image) else {
        return Ok(Vec::new());
    };
    if annotated.regions.is_empty() {
        return Ok(Vec::new());
    }
    if annotated.annotated_size.is_some() {
        let decoded = decode_file(image)?;
        annotated
            .pixel_boxes(decoded.width(), decoded.height())
            .map_err(|message| Error::Dataset {
                path: image.to_path_buf(),
                message,
            })?;
    }
    Ok(annotated.regions.clone())
}

/// Longest side of a gallery thumbnail, pixels.
pub(super) const THUMBNAIL: u32 = 220;

/// A thumbnail of the radiograph with its annotated fractures drawn in (the overlays' drawing,
/// [`crate::explain::overlay`], in 2-pixel red).
pub(super) fn thumbnail(image: &GalleryImage) -> Result<DynamicImage> {
    let original = decode_file(&image.path)?;
    let mut small = original.thumbnail(THUMBNAIL, THUMBNAIL).to_rgb8();
    let style = OverlayStyle {
        box_color: [230, 30, 30],
        box_width: 2,
        ..OverlayStyle::default()
    };
    draw_regions(&mut small, &image.boxes, &style);
    Ok(small.into())
}

/// The overlay, scaled like the thumbnail.
pub(super) fn overlay_thumbnail(overlay: &Overlay) -> Result<DynamicImage> {
    let decoded = match overlay {
        Overlay::File(path) => decode_file(path)?,
        Overlay::Encoded(bytes) => image::load_from_memory(bytes).map_err(|e| Error::Image {
            path: Path::new("<overlay>").into(),
            message: format!("cannot decode the overlay: {e}"),
        })?,
    };
    Ok(decoded.thumbnail(THUMBNAIL, THUMBNAIL))
}
