//! Fracture annotations: where radiologists marked the fractures, per image, as boxes (and
//! polygons), read from FracAtlas's COCO JSON with its YOLO files as a fallback.
//!
//! ```text
//! FracAtlas/Annotations/COCO JSON/COCO_fracture_masks.json   boxes [x, y, w, h] and polygons,
//!                                                             pixels of the ORIGINAL image size
//! FracAtlas/Annotations/YOLO/IMG*.txt                         "class cx cy w h", normalized
//! ```
//!
//! Regions are stored normalized by the size of the image that was annotated (0 to 1 across
//! its width and height), so they apply to any resized copy: this crate's FracAtlas copy has
//! 351 images downscaled from 2304 x 2880, and [`FractureRegion::pixel_box`] scales to the
//! image actually decoded. The annotated size is the EXIF-oriented one (FracAtlas's COCO file
//! gives IMG0002628, stored 373 x 454 with orientation 8, as 454 x 373), the orientation that
//! [`super::decode`] returns.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// FracAtlas's COCO annotation file, relative to the dataset root.
pub const COCO_JSON: &str = "Annotations/COCO JSON/COCO_fracture_masks.json";
/// FracAtlas's folder of YOLO annotation files, relative to the dataset root.
pub const YOLO_DIR: &str = "Annotations/YOLO";

/// An axis-aligned box: `x` from the left, `y` from the top, `x0 <= x1`, `y0 <= y1`. In pixel
/// coordinates pixel `(i, j)` covers `[i, i + 1) x [j, j + 1)`, so its centre is
/// `(i + 0.5, j + 0.5)`.
///
/// ```
/// use fracture::dataset::annotations::BoundingBox;
/// let a = BoundingBox::new(0.0, 0.0, 2.0, 2.0);
/// let b = BoundingBox::new(1.0, 0.0, 3.0, 2.0);
/// assert_eq!(a.intersection_over_union(&b), 2.0 / 6.0);
/// assert_eq!(a.distance_to(1.0, 1.0), 0.0);
/// assert_eq!(a.distance_to(5.0, 6.0), 5.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoundingBox {
    /// Left edge.
    pub x0: f64,
    /// Top edge.
    pub y0: f64,
    /// Right edge.
    pub x1: f64,
    /// Bottom edge.
    pub y1: f64,
}

impl BoundingBox {
    /// The box between two corners, in any order.
    pub fn new(xa: f64, ya: f64, xb: f64, yb: f64) -> Self {
        Self {
            x0: xa.min(xb),
            y0: ya.min(yb),
            x1: xa.max(xb),
            y1: ya.max(yb),
        }
    }

    /// Width (`x1 - x0`).
    pub fn width(&self) -> f64 {
        self.x1 - self.x0
    }

    /// Height (`y1 - y0`).
    pub fn height(&self) -> f64 {
        self.y1 - self.y0
    }

    /// Area.
    pub fn area(&self) -> f64 {
        self.width().max(0.0) * self.height().max(0.0)
    }

    /// Intersection over union with another box; 0 when both are empty.
    pub fn intersection_over_union(&self, other: &BoundingBox) -> f64 {
        let w = (self.x1.min(other.x1) - self.x0.max(other.x0)).max(0.0);
        let h = (self.y1.min(other.y1) - self.y0.max(other.y0)).max(0.0);
        let intersection = w * h;
        let union = self.area() + other.area() - intersection;
        if union > 0.0 {
            intersection / union
        } else {
            0.0
        }
    }

    /// Euclidean distance from a point to the box (0 inside or on the edge).
    pub fn distance_to(&self, x: f64, y: f64) -> f64 {
        let dx = (self.x0 - x).max(x - self.x1).max(0.0);
        let dy = (self.y0 - y).max(y - self.y1).max(0.0);
        dx.hypot(dy)
    }

    /// The box with x scaled by `sx` and y by `sy`.
    pub fn scaled(&self, sx: f64, sy: f64) -> Self {
        Self::new(self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy)
    }

    fn is_finite(&self) -> bool {
        [self.x0, self.y0, self.x1, self.y1]
            .iter()
            .all(|v| v.is_finite())
    }

    /// The part inside `[0, 1] x [0, 1]`.
    fn clipped_to_unit(&self) -> Self {
        let c = |v: f64| v.clamp(0.0, 1.0);
        Self::new(c(self.x0), c(self.y0), c(self.x1), c(self.y1))
    }
}

/// One annotated fracture, normalized by the annotated image's size (0 to 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FractureRegion {
    /// The box around the fracture.
    pub bbox: BoundingBox,
    /// Its outline(s), when the annotation has them (COCO polygons); empty for YOLO boxes.
    pub polygons: Vec<Vec<(f64, f64)>>,
}

impl FractureRegion {
    /// The box in pixels of an image of `width` x `height` (the decoded image, whatever its
    /// size relative to the annotated original).
    ///
    /// ```
    /// use fracture::dataset::annotations::{BoundingBox, FractureRegion};
    /// let region = FractureRegion { bbox: BoundingBox::new(0.5, 0.25, 0.75, 0.5), polygons: vec![] };
    /// assert_eq!(region.pixel_box(200, 400), BoundingBox::new(100.0, 100.0, 150.0, 200.0));
    /// ```
    pub fn pixel_box(&self, width: u32, height: u32) -> BoundingBox {
        self.bbox.scaled(f64::from(width), f64::from(height))
    }

    /// The outlines in pixels of an image of `width` x `height`.
    pub fn pixel_polygons(&self, width: u32, height: u32) -> Vec<Vec<(f64, f64)>> {
        let (w, h) = (f64::from(width), f64::from(height));
        self.polygons
            .iter()
            .map(|p| p.iter().map(|&(x, y)| (x * w, y * h)).collect())
            .collect()
    }
}

/// Which file an image's regions came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnnotationSource {
    /// The COCO JSON file (boxes and polygons).
    CocoJson,
    /// A YOLO text file (boxes).
    Yolo,
}

/// The annotations of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageAnnotations {
    /// The annotated fractures (empty: the image was annotated and has none).
    pub regions: Vec<FractureRegion>,
    /// Where they were read from.
    pub source: AnnotationSource,
    /// The size (width, height) the annotator worked on, when the file says (COCO).
    pub annotated_size: Option<(f64, f64)>,
}

/// An image's annotated boxes placed on the image as decoded: what the localization scores and
/// the report's thumbnails take.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelBoxes {
    /// The boxes in pixels of the decoded image.
    pub boxes: Vec<BoundingBox>,
    /// Decoded pixels per annotated pixel (1 when the annotation does not give its size), to
    /// scale distances given at the annotated resolution.
    pub scale: f64,
}

impl ImageAnnotations {
    /// The boxes in pixels of the decoded image (`width` x `height`, EXIF-oriented). `Err`
    /// with the reason when its shape disagrees with the annotated one (another orientation
    /// or a crop): the boxes would not land on the fractures, so the image cannot be scored
    /// or drawn with them.
    ///
    /// ```
    /// use fracture::dataset::annotations::{AnnotationSource, BoundingBox, FractureRegion, ImageAnnotations};
    /// let annotations = ImageAnnotations {
    ///     regions: vec![FractureRegion { bbox: BoundingBox::new(0.5, 0.5, 1.0, 1.0), polygons: vec![] }],
    ///     source: AnnotationSource::CocoJson,
    ///     annotated_size: Some((400.0, 200.0)),
    /// };
    /// let placed = annotations.pixel_boxes(200, 100)?;
    /// assert_eq!((placed.boxes[0], placed.scale), (BoundingBox::new(100.0, 50.0, 200.0, 100.0), 0.5));
    /// assert!(annotations.pixel_boxes(100, 200).unwrap_err().contains("orientation"));
    /// # Ok::<(), String>(())
    /// ```
    pub fn pixel_boxes(&self, width: u32, height: u32) -> std::result::Result<PixelBoxes, String> {
        let (w, h) = (f64::from(width), f64::from(height));
        let scale = match self.annotated_size {
            Some((aw, ah)) => {
                let (sx, sy) = (w / aw, h / ah);
                let disagreement = (sx / sy - 1.0).abs();
                if disagreement.is_nan() || disagreement > 0.02 {
                    return Err(format!(
                        "annotated as {aw}x{ah} but decoded as {w}x{h} (another orientation \
                         or crop?)"
                    ));
                }
                (sx + sy) / 2.0
            }
            None => 1.0,
        };
        let boxes = self
            .regions
            .iter()
            .map(|r| r.pixel_box(width, height))
            .collect();
        Ok(PixelBoxes { boxes, scale })
    }
}

/// Fracture annotations of a dataset, by image file name.
///
/// ```
/// use fracture::dataset::annotations::Annotations;
/// use fracture::dataset::synthetic::SyntheticConfig;
/// let dir = tempfile::tempdir()?;
/// let config = SyntheticConfig { n_fractured: 3, n_not_fractured: 2, ..Default::default() };
/// config.generate_to(dir.path())?; // writes the lesion boxes as COCO JSON
/// let annotations = Annotations::open_fracatlas(dir.path())?;
/// assert_eq!(annotations.len(), 3);
/// let (name, image) = annotations.iter().next().unwrap();
/// assert!(name.ends_with(".jpg") && !image.regions.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    images: BTreeMap<String, ImageAnnotations>,
    /// What was skipped while reading (unreadable lines, empty or non-finite boxes).
    pub problems: Vec<String>,
}

impl Annotations {
    /// Read a FracAtlas-layout folder: the COCO JSON file, then the YOLO files for images the
    /// COCO file does not list. An error if neither exists or the COCO file cannot be parsed.
    pub fn open_fracatlas(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let (coco, yolo) = (root.join(COCO_JSON), root.join(YOLO_DIR));
        if !coco.is_file() && !yolo.is_dir() {
            return Err(Error::Dataset {
                path: root.to_path_buf(),
                message: format!(
                    "no fracture annotations: neither `{COCO_JSON}` nor `{YOLO_DIR}/`"
                ),
            });
        }
        let mut annotations = if coco.is_file() {
            Self::read_coco(&coco)?
        } else {
            Self::default()
        };
        if yolo.is_dir() {
            let fallback = Self::read_yolo(&yolo)?;
            annotations.problems.extend(fallback.problems);
            for (name, image) in fallback.images {
                annotations.images.entry(name).or_insert(image);
            }
        }
        Ok(annotations)
    }

    /// Read a COCO JSON file (`images` with `width`/`height`/`file_name`, `annotations` with
    /// `bbox` `[x, y, w, h]` and polygon `segmentation`s, in pixels of the listed size).
    pub fn read_coco(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file: CocoFile = serde_json::from_str(&text).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            message: format!("not a COCO annotation file: {e}"),
        })?;
        let mut annotations = Self::default();
        let mut by_id = BTreeMap::new();
        for image in &file.images {
            if !(image.width > 0.0
                && image.height > 0.0
                && image.width.is_finite()
                && image.height.is_finite())
            {
                annotations.problems.push(format!(
                    "{}: image {} has size {} x {}, skipped",
                    path.display(),
                    image.file_name,
                    image.width,
                    image.height
                ));
                continue;
            }
            let name = file_name(&image.file_name);
            by_id.insert(image.id, (name.clone(), image.width, image.height));
            annotations.images.insert(
                name,
                ImageAnnotations {
                    regions: Vec::new(),
                    source: AnnotationSource::CocoJson,
                    annotated_size: Some((image.width, image.height)),
                },
            );
        }
        for (k, annotation) in file.annotations.iter().enumerate() {
            let Some((name, width, height)) = by_id.get(&annotation.image_id) else {
                annotations.problems.push(format!(
                    "{}: annotation {k} refers to unknown image id {}",
                    path.display(),
                    annotation.image_id
                ));
                continue;
            };
            match annotation.region(*width, *height) {
                Some(region) => {
                    if let Some(image) = annotations.images.get_mut(name) {
                        image.regions.push(region);
                    }
                }
                None => annotations.problems.push(format!(
                    "{}: annotation {k} of {name} has no usable box, skipped",
                    path.display()
                )),
            }
        }
        Ok(annotations)
    }

    /// Read a folder of YOLO files (`IMG*.txt`, one `class cx cy w h` line per box,
    /// normalized; an empty file means no fracture). Each file annotates the image of the
    /// same stem with a `.jpg` extension.
    pub fn read_yolo(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut annotations = Self::default();
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut files: Vec<_> = entry_paths(dir, entries.map(|e| e.map(|e| e.path())))?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("txt")))
            .collect();
        files.sort();
        for path in files {
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let mut regions = Vec::new();
            for (line_no, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match yolo_region(line) {
                    Some(region) => regions.push(region),
                    None => annotations.problems.push(format!(
                        "{} line {}: not `class cx cy w h` in 0..1, skipped",
                        path.display(),
                        line_no + 1
                    )),
                }
            }
            annotations.images.insert(
                format!("{stem}.jpg"),
                ImageAnnotations {
                    regions,
                    source: AnnotationSource::Yolo,
                    annotated_size: None,
                },
            );
        }
        Ok(annotations)
    }

    /// The annotations of the image with this file name (`IMG0000019.jpg`).
    pub fn get(&self, file_name: &str) -> Option<&ImageAnnotations> {
        self.images.get(file_name)
    }

    /// The annotations of the image at `path` (looked up by its file name).
    pub fn for_path(&self, path: &Path) -> Option<&ImageAnnotations> {
        path.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| self.get(n))
    }

    /// Number of annotated images (with or without regions).
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether no image is annotated.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Every annotated image, by file name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ImageAnnotations)> {
        self.images.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// Write boxes (pixels of the listed image sizes) as a COCO JSON file in FracAtlas's layout,
/// each box also as a four-corner polygon: what [`Annotations::read_coco`] reads.
pub(crate) fn write_coco(
    path: &Path,
    images: &[(String, u32, u32, Vec<BoundingBox>)],
) -> Result<()> {
    let mut file = CocoFile::default();
    for (id, (name, width, height, boxes)) in images.iter().enumerate() {
        file.images.push(CocoImage {
            id: id as u64,
            width: f64::from(*width),
            height: f64::from(*height),
            file_name: name.clone(),
        });
        for b in boxes {
            file.annotations.push(CocoAnnotation {
                image_id: id as u64,
                bbox: Some(vec![b.x0, b.y0, b.width(), b.height()]),
                segmentation: serde_json::json!([[b.x0, b.y0, b.x1, b.y0, b.x1, b.y1, b.x0, b.y1]]),
            });
        }
    }
    let text = serde_json::to_string(&file).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        message: format!("cannot serialize COCO annotations: {e}"),
    })?;
    crate::atomic::write_file(path, |tmp| {
        std::fs::write(tmp, text.as_bytes()).map_err(|e| Error::io(tmp, e))
    })
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CocoFile {
    #[serde(default)]
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CocoImage {
    id: u64,
    width: f64,
    height: f64,
    file_name: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CocoAnnotation {
    image_id: u64,
    #[serde(default)]
    bbox: Option<Vec<f64>>,
    #[serde(default)]
    segmentation: serde_json::Value,
}

impl CocoAnnotation {
    /// The region normalized by the image size; the box from the polygons when `bbox` is
    /// missing; `None` when neither gives a finite box of positive area inside the image.
    fn region(&self, width: f64, height: f64) -> Option<FractureRegion> {
        let polygons: Vec<Vec<(f64, f64)>> = self
            .segmentation
            .as_array()
            .map(|parts| {
                parts
                    .iter()
                    .filter_map(|part| {
                        let values: Vec<f64> =
                            part.as_array()?.iter().filter_map(|v| v.as_f64()).collect();
                        let points: Vec<(f64, f64)> = values
                            .chunks_exact(2)
                            .filter_map(|xy| match xy {
                                [x, y] if x.is_finite() && y.is_finite() => {
                                    Some((x / width, y / height))
                                }
                                _ => None,
                            })
                            .collect();
                        (points.len() >= 3).then_some(points)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let bbox = match self.bbox.as_deref() {
            Some([x, y, w, h]) => {
                BoundingBox::new(*x, *y, x + w, y + h).scaled(1.0 / width, 1.0 / height)
            }
            _ => polygon_bounds(&polygons)?,
        };
        usable(bbox).map(|bbox| FractureRegion { bbox, polygons })
    }
}

/// The box around every point of the polygons.
fn polygon_bounds(polygons: &[Vec<(f64, f64)>]) -> Option<BoundingBox> {
    let mut points = polygons.iter().flatten();
    let &(x, y) = points.next()?;
    Some(points.fold(BoundingBox::new(x, y, x, y), |b, &(x, y)| {
        BoundingBox::new(b.x0.min(x), b.y0.min(y), b.x1.max(x), b.y1.max(y))
    }))
}

/// A normalized box clipped to the image, if finite with positive area.
fn usable(bbox: BoundingBox) -> Option<BoundingBox> {
    if !bbox.is_finite() {
        return None;
    }
    let clipped = bbox.clipped_to_unit();
    (clipped.area() > 0.0).then_some(clipped)
}

/// One YOLO line: `class cx cy w h`, normalized.
fn yolo_region(line: &str) -> Option<FractureRegion> {
    let values: Vec<f64> = line
        .split_whitespace()
        .map(|v| v.parse::<f64>().ok())
        .collect::<Option<_>>()?;
    let [_, cx, cy, w, h] = values.as_slice() else {
        return None;
    };
    let bbox = BoundingBox::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0);
    usable(bbox).map(|bbox| FractureRegion {
        bbox,
        polygons: Vec::new(),
    })
}

/// The last component of a path written with `/` or `\`.
fn file_name(name: &str) -> String {
    name.rsplit(['/', '\\']).next().unwrap_or(name).to_string()
}

/// The paths of a folder's entries; an entry that cannot be read is an error naming the
/// folder (a dropped label file would silently turn a fractured image into an unannotated one).
fn entry_paths(
    dir: &Path,
    entries: impl Iterator<Item = std::io::Result<std::path::PathBuf>>,
) -> Result<Vec<std::path::PathBuf>> {
    entries
        .map(|entry| entry.map_err(|e| Error::io(dir, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yolo_lines_become_normalized_boxes() {
        let region = yolo_region("0 0.5 0.25 0.2 0.1").unwrap();
        let b = region.bbox;
        assert!((b.x0 - 0.4).abs() < 1e-12 && (b.x1 - 0.6).abs() < 1e-12);
        assert!((b.y0 - 0.2).abs() < 1e-12 && (b.y1 - 0.3).abs() < 1e-12);
        assert!(yolo_region("0 0.5 0.5").is_none());
        assert!(yolo_region("0 0.5 0.5 0 0.1").is_none()); // no area
        assert!(yolo_region("0 nan 0.5 0.1 0.1").is_none());
    }

    #[test]
    fn coco_boxes_are_normalized_by_the_listed_size() {
        let annotation = CocoAnnotation {
            image_id: 1,
            bbox: Some(vec![100.0, 50.0, 200.0, 100.0]),
            segmentation: serde_json::json!([[100.0, 50.0, 300.0, 50.0, 300.0, 150.0]]),
        };
        let region = annotation.region(400.0, 200.0).unwrap();
        assert_eq!(region.bbox, BoundingBox::new(0.25, 0.25, 0.75, 0.75));
        assert_eq!(region.polygons[0][1], (0.75, 0.25));
    }

    #[test]
    fn an_unreadable_directory_entry_is_an_error_naming_the_folder() {
        let dir = Path::new("labels_yolo");
        let entries = vec![
            Ok(dir.join("IMG0000001.txt")),
            Err(std::io::Error::other("entry unreadable")),
            Ok(dir.join("IMG0000002.txt")),
        ];
        match entry_paths(dir, entries.into_iter()) {
            Err(Error::Io { path, source }) => {
                assert_eq!(path, dir);
                assert!(source.to_string().contains("entry unreadable"));
            }
            other => panic!("an unreadable entry was not an error: {other:?}"),
        }
        let fine = entry_paths(dir, vec![Ok(dir.join("a.txt"))].into_iter()).unwrap();
        assert_eq!(fine, vec![dir.join("a.txt")]);
    }

    #[test]
    fn a_coco_box_missing_is_taken_from_the_polygon() {
        let annotation = CocoAnnotation {
            image_id: 1,
            bbox: None,
            segmentation: serde_json::json!([[10.0, 20.0, 30.0, 20.0, 30.0, 60.0]]),
        };
        let region = annotation.region(100.0, 100.0).unwrap();
        assert_eq!(region.bbox, BoundingBox::new(0.1, 0.2, 0.3, 0.6));
    }
}
