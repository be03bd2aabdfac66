//! Fracture boxes mapped through EXIF orientation and the model's resize: from the annotation
//! files to the decoded (oriented) image and on to the model input.
//!
//! FracAtlas annotates its images as displayed, EXIF orientation applied: of its 717
//! fractured images two carry an orientation other than 1, IMG0002588 (3, a half turn, stored
//! 181 x 454) and IMG0002628 (8, stored 373 x 454, listed in the COCO file as 454 x 373). Drawn
//! on the oriented image the boxes cover the fractures (the distal tibia and fibula; the
//! proximal humerus); drawn on the stored pixels they land on the metatarsals and the ribs.
//! Every expected value below is copied from the annotation files by hand or worked out on
//! paper from the EXIF definitions, never computed by the crate.

use crate::common;

use fracture::dataset::annotations::{Annotations, BoundingBox};
use fracture::preprocess::Preprocess;
use std::path::Path;

/// The model's input size in these checks.
const INPUT: usize = 384;

fn assert_box_near(what: &str, got: &BoundingBox, want: [f64; 4], tolerance: f64) {
    let got_corners = [got.x0, got.y0, got.x1, got.y1];
    let off = got_corners
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    assert!(
        off <= tolerance,
        "{what}: box {got_corners:?}, expected {want:?} (a corner {off:.3} px off, tolerance \
         {tolerance})"
    );
}

fn mean_luma(image: &image::GrayImage, x: std::ops::Range<u32>, y: std::ops::Range<u32>) -> f64 {
    let (mut sum, mut n) = (0.0, 0.0);
    for j in y {
        for i in x.clone() {
            sum += f64::from(image.get_pixel(i, j).0[0]);
            n += 1.0;
        }
    }
    sum / n
}

#[test]
#[ignore = "needs ../shared/data/fracatlas (or FRACATLAS_DIR)"]
fn a_rotated_fracatlas_image_gets_its_boxes_on_the_oriented_pixels_and_the_model_input() {
    let root = common::reference_data("FRACATLAS_DIR", "data/fracatlas");
    let path = root.join("images/Fractured/IMG0002628.jpg");
    let preprocess = Preprocess {
        height: INPUT,
        width: INPUT,
        ..Default::default()
    };
    let decoded = preprocess.decode(&path).unwrap();
    assert!(decoded.warnings.is_empty(), "{:?}", decoded.warnings);
    let image = decoded.image.to_luma8();
    // Stored 373 x 454 with EXIF orientation 8 (shown turned a quarter counter-clockwise),
    // displayed 454 x 373.
    assert_eq!(image.dimensions(), (454, 373));
    // Displayed, the background (black, no patient) fills the lower right and the chest the
    // lower left; orientation 6 (the other quarter turn) would put the background top left.
    let background = mean_luma(&image, 300..450, 200..370);
    let chest = mean_luma(&image, 0..150, 200..370);
    let top_left = mean_luma(&image, 0..150, 0..150);
    assert!(
        background < 30.0 && chest > 80.0 && top_left > 80.0,
        "not the displayed picture: means {background:.1} (lower right), {chest:.1} (lower \
         left), {top_left:.1} (upper left)"
    );

    // COCO: image 477 "IMG0002628.jpg", width 454, height 373; annotation 657 bbox
    // [177.30756578947367, 74.84539473684211, 36.80921052631578, 24.23273026315789].
    let annotations = Annotations::open_fracatlas(&root).unwrap();
    let annotated = annotations.get("IMG0002628.jpg").unwrap();
    assert_eq!(annotated.annotated_size, Some((454.0, 373.0)));
    let placed = annotated
        .pixel_boxes(image.width(), image.height())
        .unwrap();
    assert_eq!((placed.boxes.len(), placed.scale), (1, 1.0));
    let on_image = [177.31, 74.85, 214.12, 99.08];
    assert_box_near(
        "COCO box on the oriented image",
        &placed.boxes[0],
        on_image,
        0.01,
    );

    // The model input is the oriented image stretched to 384 x 384 (x by 384/454, y by 384/373).
    let on_input = [149.97, 77.05, 181.10, 102.00];
    let resized = placed.boxes[0].scaled(
        INPUT as f64 / f64::from(image.width()),
        INPUT as f64 / f64::from(image.height()),
    );
    assert_box_near("COCO box on the 384 x 384 input", &resized, on_input, 0.01);
    let region = &annotated.regions[0];
    let direct = region.pixel_box(INPUT as u32, INPUT as u32);
    assert_box_near("normalized region at 384 x 384", &direct, on_input, 0.01);
    // The polygon's first vertex (177.30756578947367, 85.27467105263158) on the input.
    let (x, y) = region.pixel_polygons(INPUT as u32, INPUT as u32)[0][0];
    assert!(
        (x - 149.97).abs() < 0.01 && (y - 87.78).abs() < 0.01,
        "({x}, {y})"
    );

    // The YOLO file (the fallback) says "0 0.4311 0.2331 0.0811 0.0650": the same box, in the
    // same (displayed) frame, to its four decimals.
    let yolo = Annotations::read_yolo(root.join("Annotations/YOLO")).unwrap();
    let from_yolo = yolo.get("IMG0002628.jpg").unwrap();
    let b = from_yolo
        .pixel_boxes(image.width(), image.height())
        .unwrap();
    assert_box_near("YOLO box on the oriented image", &b.boxes[0], on_image, 1.0);
    let b = from_yolo.regions[0].pixel_box(INPUT as u32, INPUT as u32);
    assert_box_near("YOLO box on the 384 x 384 input", &b, on_input, 1.0);

    // Left as stored (373 x 454), the image cannot take the boxes: refused, not misplaced.
    let stored = Preprocess::keras_notebook(INPUT, INPUT)
        .decode(&path)
        .unwrap()
        .image;
    assert_eq!((stored.width(), stored.height()), (373, 454));
    let refused = annotated.pixel_boxes(stored.width(), stored.height());
    assert!(refused.unwrap_err().contains("454x373"));
}

/// Stored picture of the synthetic checks: 48 x 32, black, one white block at x 8..16, y 0..8
/// (whole 8 x 8 JPEG blocks, so compression leaves its edges sharp).
fn stored_picture() -> image::GrayImage {
    image::GrayImage::from_fn(48, 32, |x, y| {
        image::Luma([if (8..16).contains(&x) && y < 8 {
            255
        } else {
            0
        }])
    })
}

/// EXIF orientation, displayed size, box on the displayed picture, box on the model input.
type Oriented = (u16, (u32, u32), [f64; 4], [f64; 4]);

/// Per EXIF orientation: the displayed size and where the white block is displayed, worked
/// out from the EXIF definitions for a W x H = 48 x 32 picture: 2 mirrors x (x -> W - x),
/// 3 turns a half turn, 4 mirrors y, 5 transposes (x, y) -> (y, x), 6 shows the stored
/// picture turned a quarter clockwise ((x, y) -> (H - y, x)), 7 transverses
/// ((x, y) -> (H - y, W - x)), 8 turns a quarter counter-clockwise ((x, y) -> (y, W - x)).
/// Last, the block on the 384 x 384 model input.
const ORIENTED: [Oriented; 8] = [
    (1, (48, 32), [8.0, 0.0, 16.0, 8.0], [64.0, 0.0, 128.0, 96.0]),
    (
        2,
        (48, 32),
        [32.0, 0.0, 40.0, 8.0],
        [256.0, 0.0, 320.0, 96.0],
    ),
    (
        3,
        (48, 32),
        [32.0, 24.0, 40.0, 32.0],
        [256.0, 288.0, 320.0, 384.0],
    ),
    (
        4,
        (48, 32),
        [8.0, 24.0, 16.0, 32.0],
        [64.0, 288.0, 128.0, 384.0],
    ),
    (5, (32, 48), [0.0, 8.0, 8.0, 16.0], [0.0, 64.0, 96.0, 128.0]),
    (
        6,
        (32, 48),
        [24.0, 8.0, 32.0, 16.0],
        [288.0, 64.0, 384.0, 128.0],
    ),
    (
        7,
        (32, 48),
        [24.0, 32.0, 32.0, 40.0],
        [288.0, 256.0, 384.0, 320.0],
    ),
    (
        8,
        (32, 48),
        [0.0, 32.0, 8.0, 40.0],
        [0.0, 256.0, 96.0, 320.0],
    ),
];

/// A COCO file in FracAtlas's layout annotating `name` (displayed `size`) with one box.
fn write_coco(path: &Path, name: &str, size: (u32, u32), b: [f64; 4]) {
    let coco = serde_json::json!({
        "images": [{"id": 1, "width": size.0, "height": size.1, "file_name": name}],
        "annotations": [{
            "id": 1, "image_id": 1, "category_id": 0,
            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            "segmentation": [[b[0], b[1], b[2], b[1], b[2], b[3], b[0], b[3]]],
        }],
    });
    std::fs::write(path, coco.to_string()).unwrap();
}

#[test]
fn boxes_annotated_as_displayed_cover_the_lesion_under_every_exif_orientation() {
    let dir = tempfile::tempdir().unwrap();
    let preprocess = Preprocess {
        height: INPUT,
        width: INPUT,
        ..Default::default()
    };
    for (orientation, size, displayed, on_input) in ORIENTED {
        let name = format!("o{orientation}.jpg");
        let path = dir.path().join(&name);
        let exif = common::exif_orientation(orientation);
        std::fs::write(&path, common::jpeg_bytes(&stored_picture(), Some(exif))).unwrap();
        let coco = dir.path().join(format!("o{orientation}.json"));
        write_coco(&coco, &name, size, displayed);

        let image = preprocess.decode(&path).unwrap().image;
        let gray = image.to_luma8();
        assert_eq!(gray.dimensions(), size, "orientation {orientation}");
        let annotations = Annotations::read_coco(&coco).unwrap();
        let annotated = annotations.get(&name).unwrap();
        let placed = annotated.pixel_boxes(gray.width(), gray.height()).unwrap();
        let what = format!("orientation {orientation} on the decoded image");
        assert_box_near(&what, &placed.boxes[0], displayed, 1e-9);
        // The box is where the white block was decoded: every bright pixel inside it, every
        // pixel inside bright.
        let b = placed.boxes[0];
        for (x, y, p) in gray.enumerate_pixels() {
            let inside = b.distance_to(f64::from(x) + 0.5, f64::from(y) + 0.5) == 0.0;
            assert_eq!(
                p.0[0] > 128,
                inside,
                "orientation {orientation}: pixel ({x}, {y}) = {}, box {b:?}",
                p.0[0]
            );
        }

        // On the model input: the box scaled as the picture is stretched, and the white
        // block's centre of mass at the box's centre.
        let what = format!("orientation {orientation} on the 384 x 384 input");
        let resized = b.scaled(
            INPUT as f64 / f64::from(gray.width()),
            INPUT as f64 / f64::from(gray.height()),
        );
        assert_box_near(&what, &resized, on_input, 1e-9);
        let direct = annotated.regions[0].pixel_box(INPUT as u32, INPUT as u32);
        assert_box_near(&what, &direct, on_input, 1e-9);
        let input = preprocess.resize_rgb(&image);
        let (mut mass, mut mx, mut my) = (0.0, 0.0, 0.0);
        for (k, rgb) in input.data.chunks_exact(3).enumerate() {
            let v = f64::from(rgb[0]);
            if v > 128.0 {
                let (x, y) = ((k % INPUT) as f64 + 0.5, (k / INPUT) as f64 + 0.5);
                mass += v;
                mx += v * x;
                my += v * y;
            }
        }
        let (cx, cy) = (mx / mass, my / mass);
        let (ex, ey) = (
            (on_input[0] + on_input[2]) / 2.0,
            (on_input[1] + on_input[3]) / 2.0,
        );
        assert!(
            (cx - ex).abs() <= 1.0 && (cy - ey).abs() <= 1.0,
            "{what}: white block centred at ({cx:.2}, {cy:.2}), box centre ({ex}, {ey})"
        );
    }
}
