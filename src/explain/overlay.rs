//! Overlays: the radiograph with a map drawn over it as a transparent colour layer (the
//! turbo colormap), optionally with the annotated fracture boxes, saved as PNG.
//!
//! The overlay is drawn on the decoded image, which is EXIF-oriented
//! ([`crate::dataset::decode`]) and at its stored size: the map is resized from the feature
//! map straight to that size, so the overlay is in the original image's coordinates.

use super::resize::resize_bilinear;
use crate::dataset::annotations::FractureRegion;
use crate::error::{Error, Result};
use crate::image::ImageF32;
use image::{DynamicImage, Rgb, RgbImage};
use imageproc::drawing::{draw_hollow_polygon_mut, draw_hollow_rect_mut};
use imageproc::point::Point;
use imageproc::rect::Rect;
use std::path::Path;

/// How an overlay is drawn.
///
/// ```
/// let style = fracture::explain::OverlayStyle::default();
/// assert_eq!(style.opacity, 0.6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlayStyle {
    /// Opacity of the colour layer where the map is 1; it falls linearly to 0 (fully
    /// transparent) where the map is 0, so cold regions show the radiograph unchanged.
    pub opacity: f32,
    /// Colour of the annotation boxes and outlines.
    pub box_color: [u8; 3],
    /// Line width of the boxes in pixels; 0 picks one from the image size (about 1/250 of its
    /// shorter side, at least 1).
    pub box_width: u32,
}

impl Default for OverlayStyle {
    fn default() -> Self {
        Self {
            opacity: 0.6,
            box_color: [255, 255, 255],
            box_width: 0,
        }
    }
}

/// The turbo colormap (Google's perceptually ordered rainbow: near black, blue, cyan, green,
/// yellow, red) at `value` in `[0, 1]` (clamped; NaN gives the low end).
///
/// ```
/// use fracture::explain::turbo;
/// let [r, _, b] = turbo(0.2);
/// assert!(b > r); // cold: blue (the very low end is near black)
/// let [r, _, b] = turbo(1.0);
/// assert!(r > b); // hot: red
/// ```
pub fn turbo(value: f32) -> [u8; 3] {
    let t = if value.is_nan() {
        0.0
    } else {
        value.clamp(0.0, 1.0)
    };
    let c = colorous::TURBO.eval_continuous(f64::from(t));
    [c.r, c.g, c.b]
}

/// Draw `map` (values in `[0, 1]`, any resolution: it is resized bilinearly to the image)
/// over `image` with the turbo colormap, and the boxes (and outlines) of `regions` on top.
///
/// ```
/// use fracture::explain::{overlay, OverlayStyle};
/// use fracture::image::ImageF32;
/// let radiograph = image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(40, 30, image::Luma([100])));
/// let map = ImageF32::new(2, 2, 1, vec![0.0, 0.0, 0.0, 1.0])?;
/// let picture = overlay(&radiograph, &map, &[], &OverlayStyle::default())?;
/// assert_eq!(picture.dimensions(), (40, 30));
/// assert_eq!(picture.get_pixel(0, 0).0, [100, 100, 100]); // map 0: the radiograph
/// assert_ne!(picture.get_pixel(39, 29).0, [100, 100, 100]); // map 1: coloured
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn overlay(
    image: &DynamicImage,
    map: &ImageF32,
    regions: &[FractureRegion],
    style: &OverlayStyle,
) -> Result<RgbImage> {
    if !(0.0..=1.0).contains(&style.opacity) {
        return Err(Error::InvalidConfig(format!(
            "overlay opacity must be in [0, 1], found {}",
            style.opacity
        )));
    }
    let mut picture = image.to_rgb8();
    let (width, height) = picture.dimensions();
    let map = resize_bilinear(map, height as usize, width as usize)?;
    for (pixel, &value) in picture.pixels_mut().zip(&map.data) {
        let value = if value.is_nan() {
            0.0
        } else {
            value.clamp(0.0, 1.0)
        };
        let alpha = style.opacity * value;
        let colour = turbo(value);
        for (channel, c) in pixel.0.iter_mut().zip(colour) {
            *channel = ((1.0 - alpha) * f32::from(*channel) + alpha * f32::from(c)).round() as u8;
        }
    }
    draw_regions(&mut picture, regions, style);
    Ok(picture)
}

/// Boxes (several nested one-pixel rectangles for the line width) and polygon outlines of
/// `regions`, scaled to `picture` (the one box drawing: overlays and the report's thumbnails).
pub(crate) fn draw_regions(
    picture: &mut RgbImage,
    regions: &[FractureRegion],
    style: &OverlayStyle,
) {
    let (width, height) = picture.dimensions();
    let line = if style.box_width > 0 {
        style.box_width
    } else {
        (width.min(height) / 250).max(1)
    };
    let colour = Rgb(style.box_color);
    for region in regions {
        let b = region.pixel_box(width, height);
        for k in 0..line {
            let inset = f64::from(k);
            let (x0, y0) = ((b.x0 + inset).round(), (b.y0 + inset).round());
            let (w, h) = (
                (b.width() - 2.0 * inset).round(),
                (b.height() - 2.0 * inset).round(),
            );
            if w < 1.0 || h < 1.0 {
                break;
            }
            let rect = Rect::at(x0 as i32, y0 as i32).of_size(w as u32, h as u32);
            draw_hollow_rect_mut(picture, rect, colour);
        }
        for polygon in region.pixel_polygons(width, height) {
            let mut points: Vec<Point<f32>> = polygon
                .iter()
                .map(|&(x, y)| Point::new(x as f32, y as f32))
                .collect();
            // imageproc wants an open polygon: drop a repeated closing point.
            if points.len() > 1 && points.first() == points.last() {
                points.pop();
            }
            if points.len() >= 3 {
                draw_hollow_polygon_mut(picture, &points, colour);
            }
        }
    }
}

/// Write an image as PNG atomically (a temporary file in the same folder, renamed over
/// `path`), creating the folder if needed.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("maps").join("x.png");
/// fracture::explain::save_png(&image::RgbImage::new(4, 3), &path)?;
/// assert_eq!(image::open(&path)?.width(), 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save_png(picture: &RgbImage, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    crate::atomic::write_file(path, |tmp| {
        picture
            .save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| Error::Image {
                path: path.to_path_buf(),
                message: format!("cannot write PNG: {e}"),
            })
    })
}
