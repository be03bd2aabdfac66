//! The report's gallery: the cases a reader should look at (the most confident misses and
//! false alarms, and some clear hits), as thumbnails with an optional explanation overlay and
//! annotation boxes.
//!
//! The report does not compute explanations itself: [`select_gallery`] picks the cases, the
//! caller may attach an overlay to each (for example a Grad-CAM heat map blended over the
//! radiograph, as a PNG) and the boxes a radiologist drew, and [`super::Report::gallery`]
//! takes the list back.

use crate::classifier::Evaluation;
use crate::dataset::decode::decode_file;
use crate::error::{Error, Result};
use crate::metrics::predicts_fracture;
use image::{DynamicImage, Rgb, RgbImage};
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

/// A rectangle in the pixel coordinates of the image as decoded (EXIF orientation applied;
/// left, top, width, height), e.g. a radiologist's fracture box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnnotationBox {
    /// Left edge, pixels.
    pub x: f64,
    /// Top edge, pixels.
    pub y: f64,
    /// Width, pixels.
    pub width: f64,
    /// Height, pixels.
    pub height: f64,
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
    /// Annotation boxes drawn on the thumbnail.
    pub boxes: Vec<AnnotationBox>,
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
                let called = predicts_fracture(c.probability, threshold);
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

/// The fracture boxes FracAtlas's annotators drew on `image`, from
/// `root/Annotations/YOLO/<file stem>.txt` (one `class cx cy w h` line per box, coordinates
/// as fractions of the image's width and height); no boxes when the file is absent (FracAtlas
/// has none for images without a fracture). A line that is not five numbers is an error
/// naming the file and the line.
///
/// ```
/// let root = tempfile::tempdir()?;
/// let image = root.path().join("IMG0000001.jpg");
/// image::GrayImage::new(200, 100).save(&image)?;
/// std::fs::create_dir_all(root.path().join("Annotations/YOLO"))?;
/// std::fs::write(root.path().join("Annotations/YOLO/IMG0000001.txt"), "0 0.5 0.5 0.2 0.4\n")?;
/// let boxes = fracture::report::fracatlas_boxes(root.path(), &image)?;
/// assert_eq!((boxes[0].x, boxes[0].y, boxes[0].width, boxes[0].height), (80.0, 30.0, 40.0, 40.0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn fracatlas_boxes(root: &Path, image: &Path) -> Result<Vec<AnnotationBox>> {
    let Some(stem) = image.file_stem() else {
        return Ok(Vec::new());
    };
    let mut name = stem.to_os_string();
    name.push(".txt");
    let path = root.join("Annotations").join("YOLO").join(name);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Ok(Vec::new());
    }
    let decoded = decode_file(image)?;
    let (width, height) = (f64::from(decoded.width()), f64::from(decoded.height()));
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let numbers: Vec<f64> = line
                .split_whitespace()
                .map(str::parse)
                .collect::<std::result::Result<_, _>>()
                .unwrap_or_default();
            match numbers.as_slice() {
                [_, cx, cy, w, h] if [cx, cy, w, h].iter().all(|v| v.is_finite()) => {
                    Ok(AnnotationBox {
                        x: (cx - w / 2.0) * width,
                        y: (cy - h / 2.0) * height,
                        width: w * width,
                        height: h * height,
                    })
                }
                _ => Err(Error::Format {
                    path: path.clone(),
                    message: format!("line {}: not `class cx cy w h`: {line:?}", i + 1),
                }),
            }
        })
        .collect()
}

/// Longest side of a gallery thumbnail, pixels.
pub(super) const THUMBNAIL: u32 = 220;

/// A thumbnail of the radiograph with its boxes drawn in.
pub(super) fn thumbnail(image: &GalleryImage) -> Result<DynamicImage> {
    let original = decode_file(&image.path)?;
    let (width, height) = (original.width(), original.height());
    let mut small = original.thumbnail(THUMBNAIL, THUMBNAIL).to_rgb8();
    let scale_x = f64::from(small.width()) / f64::from(width.max(1));
    let scale_y = f64::from(small.height()) / f64::from(height.max(1));
    for b in &image.boxes {
        draw_box(
            &mut small,
            (b.x * scale_x, b.y * scale_y),
            (b.width * scale_x, b.height * scale_y),
        );
    }
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

/// A 2-pixel red rectangle outline, clipped to the image.
fn draw_box(image: &mut RgbImage, (left, top): (f64, f64), (width, height): (f64, f64)) {
    let red = Rgb([230, 30, 30]);
    let (w, h) = (i64::from(image.width()), i64::from(image.height()));
    // Clamped just outside the image, so a huge or broken box costs no long loop.
    let clamp = |v: f64, size: i64| (v.round() as i64).clamp(-2, size + 2);
    let (x0, y0) = (clamp(left, w), clamp(top, h));
    let (x1, y1) = (clamp(left + width, w), clamp(top + height, h));
    let mut put = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            image.put_pixel(x as u32, y as u32, red);
        }
    };
    for t in 0..2 {
        for x in x0..=x1 {
            put(x, y0 + t);
            put(x, y1 - t);
        }
        for y in y0..=y1 {
            put(x0 + t, y);
            put(x1 - t, y);
        }
    }
}
