//! Contrast-limited adaptive histogram equalization (CLAHE, Zuiderveld 1994), the local
//! contrast enhancement commonly used on radiographs.
//!
//! The image is cut into a grid of tiles; each tile gets a histogram-equalization lookup table
//! whose histogram was first clipped at `clip_limit` times the mean bin count (the excess is
//! spread evenly over all bins, as OpenCV does), which limits noise amplification in flat
//! regions. Every pixel is then mapped through the four nearest tiles' tables, blended
//! bilinearly between tile centres, so no tile borders show.
//!
//! Each channel is equalized on its own. Radiographs loaded as RGB carry the same gray value
//! in every channel, and for them this is exactly CLAHE on the gray image.

use crate::error::{Error, Result};

/// Settings for [`clahe`].
///
/// ```
/// use fracture::augment::ClaheConfig;
/// let c = ClaheConfig::default();
/// assert_eq!((c.tile_rows, c.tile_cols, c.bins), (8, 8, 256));
/// assert_eq!(c.clip_limit, 2.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClaheConfig {
    /// Clip limit, relative to the mean bin count of a tile (OpenCV's `clipLimit`; 1 gives
    /// almost no enhancement, larger values more; `f32::INFINITY` is plain adaptive
    /// equalization).
    pub clip_limit: f32,
    /// Tiles along the rows (reduced to the image height if larger).
    pub tile_rows: usize,
    /// Tiles along the columns (reduced to the image width if larger).
    pub tile_cols: usize,
    /// Histogram bins spanning the value range.
    pub bins: usize,
    /// Value range the histogram spans; values outside are clamped into it.
    pub value_range: [f32; 2],
    /// Chance that a training sample is equalized, when used as an augmentation.
    pub probability: f64,
}

impl Default for ClaheConfig {
    fn default() -> Self {
        Self {
            clip_limit: 2.0,
            tile_rows: 8,
            tile_cols: 8,
            bins: 256,
            value_range: [0.0, 255.0],
            probability: 1.0,
        }
    }
}

impl ClaheConfig {
    /// Check the settings.
    pub fn validate(&self) -> Result<()> {
        let [lo, hi] = self.value_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::InvalidConfig(format!(
                "CLAHE value range must be finite and increasing, found [{lo}, {hi}]"
            )));
        }
        if self.tile_rows == 0 || self.tile_cols == 0 || !(2..=65536).contains(&self.bins) {
            return Err(Error::InvalidConfig(format!(
                "CLAHE needs at least one tile per axis and 2..=65536 bins, found {}x{} tiles, {} bins",
                self.tile_rows, self.tile_cols, self.bins
            )));
        }
        if self.clip_limit.is_nan() || self.clip_limit <= 0.0 {
            return Err(Error::InvalidConfig(format!(
                "CLAHE clip limit must be positive, found {}",
                self.clip_limit
            )));
        }
        if !(0.0..=1.0).contains(&self.probability) {
            return Err(Error::InvalidConfig(format!(
                "CLAHE probability must be in [0, 1], found {}",
                self.probability
            )));
        }
        Ok(())
    }
}

/// Equalize an HWC `f32` image in place (each channel separately).
///
/// ```
/// use fracture::augment::{clahe, ClaheConfig};
/// // A dim, low-contrast ramp gains contrast and stays inside 0..255.
/// let mut img: Vec<f32> = (0..64 * 64).map(|i| 100.0 + (i % 64) as f32 * 0.5).collect();
/// clahe(&mut img, 64, 64, 1, &ClaheConfig::default())?;
/// let (lo, hi) = img.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
/// assert!(hi - lo > 32.0 && lo >= 0.0 && hi <= 255.0);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn clahe(
    data: &mut [f32],
    height: usize,
    width: usize,
    channels: usize,
    config: &ClaheConfig,
) -> Result<()> {
    config.validate()?;
    if data.len() != height * width * channels {
        return Err(Error::InvalidInput(format!(
            "CLAHE: buffer of {} values does not match {height}x{width}x{channels}",
            data.len()
        )));
    }
    if data.is_empty() {
        return Ok(());
    }
    let grid = TileGrid::new(height, width, config.tile_rows, config.tile_cols);
    let [lo, hi] = config.value_range;
    let bins = config.bins;
    let to_bin = (bins - 1) as f32 / (hi - lo);
    let from_bin = (hi - lo) / (bins - 1) as f32;
    let mut binned = vec![0u16; height * width];
    let mut luts = vec![0.0f32; grid.rows * grid.cols * bins];
    let mut hist = vec![0u32; bins];
    for channel in 0..channels {
        for (b, px) in binned.iter_mut().zip(data.chunks_exact(channels)) {
            let v = px.get(channel).copied().unwrap_or(lo);
            let bin = ((v - lo) * to_bin + 0.5).clamp(0.0, (bins - 1) as f32);
            *b = bin as u16;
        }
        for tr in 0..grid.rows {
            for tc in 0..grid.cols {
                let (r0, r1) = grid.row_span(tr);
                let (c0, c1) = grid.col_span(tc);
                hist.fill(0);
                for r in r0..r1 {
                    for &b in &binned[r * width + c0..r * width + c1] {
                        hist[b as usize] += 1;
                    }
                }
                let area = ((r1 - r0) * (c1 - c0)) as u32;
                clip_histogram(&mut hist, config.clip_limit, area);
                let start = (tr * grid.cols + tc) * bins;
                cumulative_lut(&hist, area, &mut luts[start..start + bins]);
            }
        }
        for r in 0..height {
            let (t0, t1, wy) = grid.row_blend(r);
            for c in 0..width {
                let (u0, u1, wx) = grid.col_blend(c);
                let b = binned[r * width + c] as usize;
                let lut = |tr: usize, tc: usize| luts[(tr * grid.cols + tc) * bins + b];
                let top = lut(t0, u0) * (1.0 - wx) + lut(t0, u1) * wx;
                let bottom = lut(t1, u0) * (1.0 - wx) + lut(t1, u1) * wx;
                let mapped = top * (1.0 - wy) + bottom * wy;
                data[(r * width + c) * channels + channel] = (lo + mapped * from_bin).clamp(lo, hi);
            }
        }
    }
    Ok(())
}

/// Clip every bin at `clip_limit * area / bins` (at least 1) and spread the excess evenly,
/// the remainder one count per bin at a regular stride (OpenCV's scheme).
fn clip_histogram(hist: &mut [u32], clip_limit: f32, area: u32) {
    let bins = hist.len() as u32;
    let limit = (clip_limit as f64 * area as f64 / bins as f64).max(1.0);
    if limit >= area as f64 {
        return;
    }
    let limit = limit as u32;
    let mut excess = 0u32;
    for h in hist.iter_mut() {
        if *h > limit {
            excess += *h - limit;
            *h = limit;
        }
    }
    let batch = excess / bins;
    let residual = excess - batch * bins;
    for h in hist.iter_mut() {
        *h += batch;
    }
    if let Some(stride) = bins.checked_div(residual) {
        let step = stride.max(1) as usize;
        for h in hist.iter_mut().step_by(step).take(residual as usize) {
            *h += 1;
        }
    }
}

/// Equalization table in bin units: `lut[b] = (bins - 1) * cdf(b) / area`.
fn cumulative_lut(hist: &[u32], area: u32, lut: &mut [f32]) {
    let scale = (hist.len() - 1) as f32 / area.max(1) as f32;
    let mut sum = 0u32;
    for (l, &h) in lut.iter_mut().zip(hist) {
        sum += h;
        *l = sum as f32 * scale;
    }
}

/// An even partition of rows and columns into tiles, and the bilinear blend between tile
/// centres.
struct TileGrid {
    height: usize,
    width: usize,
    rows: usize,
    cols: usize,
}

impl TileGrid {
    fn new(height: usize, width: usize, rows: usize, cols: usize) -> Self {
        Self {
            height,
            width,
            rows: rows.min(height).max(1),
            cols: cols.min(width).max(1),
        }
    }

    fn row_span(&self, tile: usize) -> (usize, usize) {
        (
            tile * self.height / self.rows,
            (tile + 1) * self.height / self.rows,
        )
    }

    fn col_span(&self, tile: usize) -> (usize, usize) {
        (
            tile * self.width / self.cols,
            (tile + 1) * self.width / self.cols,
        )
    }

    fn row_blend(&self, r: usize) -> (usize, usize, f32) {
        blend_between_centres(r, self.height, self.rows)
    }

    fn col_blend(&self, c: usize) -> (usize, usize, f32) {
        blend_between_centres(c, self.width, self.cols)
    }
}

/// The two tiles whose centres bracket pixel `i` along an axis of `len` pixels cut into
/// `tiles` tiles, and the weight of the second; clamped to the first/last tile at the ends.
fn blend_between_centres(i: usize, len: usize, tiles: usize) -> (usize, usize, f32) {
    let tile_size = len as f32 / tiles as f32;
    let pos = (i as f32 + 0.5) / tile_size - 0.5;
    if pos <= 0.0 {
        return (0, 0, 0.0);
    }
    let last = tiles - 1;
    if pos >= last as f32 {
        return (last, last, 0.0);
    }
    let t0 = pos as usize;
    (t0, t0 + 1, pos - t0 as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_keeps_the_total_count() {
        let mut hist = vec![0u32; 16];
        hist[3] = 100;
        hist[7] = 28;
        clip_histogram(&mut hist, 2.0, 128);
        assert_eq!(hist.iter().sum::<u32>(), 128);
        assert!(hist.iter().all(|&h| h <= 16 + 8));
    }

    #[test]
    fn pixels_at_tile_centres_use_one_tile() {
        // 64 pixels, 8 tiles of 8: the centre of tile 2 lies between pixels 19 and 20.
        let (a, b, w) = blend_between_centres(0, 64, 8);
        assert_eq!((a, b, w), (0, 0, 0.0));
        let (a, b, w) = blend_between_centres(20, 64, 8);
        assert_eq!((a, b), (2, 3));
        assert!((w - 0.0625).abs() < 1e-6);
    }
}
