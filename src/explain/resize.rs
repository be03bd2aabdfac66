//! Scaling and resizing maps: division by the maximum, and bilinear resizing with half-pixel
//! centres and no antialiasing (what `tf.image.resize(method="bilinear")` does, and what
//! the reference maps were made with).

use crate::error::{Error, Result};
use crate::image::ImageF32;

/// A one-channel map divided by its maximum, so that its peak is 1; all zeros when the
/// maximum is 0 (no positive evidence anywhere). A NaN, infinite or negative value is an
/// error (maps are ReLU'd, so one means bad features or gradients).
///
/// ```
/// use fracture::explain::normalize_by_max;
/// use fracture::image::ImageF32;
/// let map = ImageF32::new(1, 3, 1, vec![0.0, 2.0, 4.0])?;
/// assert_eq!(normalize_by_max(&map)?.data, vec![0.0, 0.5, 1.0]);
/// let flat = ImageF32::new(1, 2, 1, vec![0.0, 0.0])?;
/// assert_eq!(normalize_by_max(&flat)?.data, vec![0.0, 0.0]);
/// assert!(normalize_by_max(&ImageF32::new(1, 1, 1, vec![f32::NAN])?).is_err());
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn normalize_by_max(map: &ImageF32) -> Result<ImageF32> {
    let peak = map.map_peak()?;
    let data = if peak > 0.0 {
        map.data.iter().map(|v| v / peak).collect()
    } else {
        vec![0.0; map.data.len()]
    };
    ImageF32::new(map.height, map.width, 1, data)
}

/// Resize a one-channel map to `height` x `width`, bilinear with half-pixel centres, no
/// antialiasing: output pixel `i` samples the input at `(i + 0.5) * in / out - 0.5`, clamped
/// to the edge pixels (`tf.image.resize`, PyTorch's `align_corners=False` without
/// antialiasing).
///
/// ```
/// use fracture::explain::resize_bilinear;
/// use fracture::image::ImageF32;
/// let map = ImageF32::new(1, 2, 1, vec![0.0, 1.0])?;
/// let up = resize_bilinear(&map, 1, 4)?;
/// assert_eq!(up.data, vec![0.0, 0.25, 0.75, 1.0]);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn resize_bilinear(map: &ImageF32, height: usize, width: usize) -> Result<ImageF32> {
    map.check_map()?;
    if height == 0 || width == 0 {
        return Err(Error::InvalidInput(format!(
            "cannot resize a map to {height}x{width}"
        )));
    }
    let rows = axis_weights(map.height, height);
    let cols = axis_weights(map.width, width);
    let at = |y: usize, x: usize| map.data.get(y * map.width + x).copied().unwrap_or(0.0);
    let mut data = Vec::with_capacity(height.saturating_mul(width));
    for row in &rows {
        for col in &cols {
            let top_left = at(row.lower, col.lower);
            let top_right = at(row.lower, col.upper);
            let bottom_left = at(row.upper, col.lower);
            let bottom_right = at(row.upper, col.upper);
            let top = top_left + (top_right - top_left) * col.lerp;
            let bottom = bottom_left + (bottom_right - bottom_left) * col.lerp;
            data.push(top + (bottom - top) * row.lerp);
        }
    }
    ImageF32::new(height, width, 1, data)
}

/// Where output pixel `i` of one axis samples its input: two neighbours and the fraction
/// between them.
struct AxisWeight {
    lower: usize,
    upper: usize,
    lerp: f32,
}

/// TensorFlow's `compute_interpolation_weights` with its half-pixel scaler.
fn axis_weights(in_size: usize, out_size: usize) -> Vec<AxisWeight> {
    let scale = in_size as f32 / out_size as f32;
    let last = in_size.saturating_sub(1);
    (0..out_size)
        .map(|i| {
            let position = (i as f32 + 0.5) * scale - 0.5;
            let floor = position.floor();
            AxisWeight {
                lower: (floor.max(0.0) as usize).min(last),
                upper: (position.ceil().max(0.0) as usize).min(last),
                lerp: position - floor,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizing_to_the_same_size_is_the_identity() {
        let map = ImageF32::new(2, 3, 1, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(resize_bilinear(&map, 2, 3).unwrap(), map);
    }

    #[test]
    fn downscaling_by_two_averages_pairs_without_antialiasing() {
        // Output pixel 0 samples position 0.5: halfway between inputs 0 and 1.
        let map = ImageF32::new(1, 4, 1, vec![0.0, 2.0, 4.0, 8.0]).unwrap();
        assert_eq!(resize_bilinear(&map, 1, 2).unwrap().data, vec![1.0, 6.0]);
    }

    #[test]
    fn edges_are_clamped() {
        let map = ImageF32::new(1, 1, 1, vec![3.0]).unwrap();
        let up = resize_bilinear(&map, 3, 2).unwrap();
        assert!(up.data.iter().all(|&v| v == 3.0));
    }
}
