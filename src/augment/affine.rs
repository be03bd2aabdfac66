//! The geometric half of augmentation: Keras's affine parameters and the single matrix they
//! compose into.
//!
//! Keras's legacy `apply_affine_transform` builds `rotation @ shift @ shear @ zoom` in an
//! `(x, y)` frame, moves it about the image centre (`transform_matrix_offset_center`), then
//! swaps the two axes (`M' = P M P`) to index a `(row, column)` array, and hands the result to
//! `scipy.ndimage.affine_transform`, which maps every *output* pixel to an *input* position.
//! [`AffineMatrix::keras`] repeats those steps literally, in `f64`, so the sampling positions
//! agree with Keras's to the last bits.
//!
//! One consequence of the axis swap, kept here on purpose: Keras's `x` is the **column** axis.
//! Its `tx` (documented as "width shift") and `zx` act on columns, `ty` and `zy` on rows, and
//! the centre used for rows is `(width - 1) / 2` (and for columns `(height - 1) / 2`); for
//! square images that is the true centre.

/// How positions that fall outside the input image are filled, with the meaning
/// `scipy.ndimage` gives these modes (the ones Keras's `fill_mode` passes through).
///
/// ```
/// use fracture::augment::FillMode;
/// assert_eq!(FillMode::default(), FillMode::Nearest);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub enum FillMode {
    /// Repeat the edge pixel: `a a a | a b c d | d d d` (Keras's default and the notebook's).
    #[default]
    Nearest,
    /// A constant value (Keras's `cval`) outside `[0, len - 1]`; no interpolation with it.
    Constant(f32),
    /// Half-sample symmetric mirror: `c b a | a b c d | d c b`.
    Reflect,
    /// scipy's legacy `wrap`: the signal repeats with period `len - 1`, so the last sample
    /// coincides with the first of the next period (`b c d | a b c d | b c d`).
    Wrap,
}

/// The parameters of one affine augmentation, in Keras's `apply_transform` units.
///
/// Mapping to Keras's `transform_parameters`: `theta` = `rotation_deg`, `tx` = `shift_cols`,
/// `ty` = `shift_rows`, `shear` = `shear_deg`, `zx` = `zoom_x`, `zy` = `zoom_y`,
/// `flip_horizontal` = `flip_horizontal` (see [`AffineParams::from_keras`]). Shifts and zooms
/// act in the frame before rotation, as in Keras.
///
/// ```
/// use fracture::augment::AffineParams;
/// let p = AffineParams { rotation_deg: 5.0, ..AffineParams::IDENTITY };
/// assert!(!p.is_identity());
/// assert!(AffineParams::default().is_identity());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AffineParams {
    /// Rotation in degrees (Keras `theta`); positive turns the content counter-clockwise.
    pub rotation_deg: f64,
    /// Shift along the row axis in pixels (Keras `ty`): output row `r` reads input row
    /// `r + shift_rows`, so positive values move the content up.
    pub shift_rows: f64,
    /// Shift along the column axis in pixels (Keras `tx`): positive values move the content
    /// left.
    pub shift_cols: f64,
    /// Shear angle in **degrees** (Keras `shear`; the notebook's `shear_range=0.1` is 0.1°).
    pub shear_deg: f64,
    /// Zoom factor along columns (Keras `zx`); values above 1 show a smaller image.
    pub zoom_x: f64,
    /// Zoom factor along rows (Keras `zy`); values above 1 show a smaller image.
    pub zoom_y: f64,
    /// Mirror the columns after the warp.
    pub flip_horizontal: bool,
}

impl AffineParams {
    /// The transform that leaves every image unchanged.
    pub const IDENTITY: AffineParams = AffineParams {
        rotation_deg: 0.0,
        shift_rows: 0.0,
        shift_cols: 0.0,
        shear_deg: 0.0,
        zoom_x: 1.0,
        zoom_y: 1.0,
        flip_horizontal: false,
    };

    /// Build from Keras's `transform_parameters` names (`theta`, `tx`, `ty`, `shear`, `zx`,
    /// `zy`, `flip_horizontal`).
    ///
    /// ```
    /// use fracture::augment::AffineParams;
    /// let p = AffineParams::from_keras(10.0, 3.0, -2.0, 0.1, 0.9, 1.1, true);
    /// assert_eq!((p.shift_cols, p.shift_rows), (3.0, -2.0));
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn from_keras(
        theta: f64,
        tx: f64,
        ty: f64,
        shear: f64,
        zx: f64,
        zy: f64,
        flip_horizontal: bool,
    ) -> Self {
        Self {
            rotation_deg: theta,
            shift_rows: ty,
            shift_cols: tx,
            shear_deg: shear,
            zoom_x: zx,
            zoom_y: zy,
            flip_horizontal,
        }
    }

    /// True when neither the warp nor the flip changes anything.
    pub fn is_identity(&self) -> bool {
        self.affine_is_identity() && !self.flip_horizontal
    }

    /// True when the affine part (everything but the flip) is the identity; Keras skips the
    /// resampling in that case and so do we.
    pub fn affine_is_identity(&self) -> bool {
        self.rotation_deg == 0.0
            && self.shift_rows == 0.0
            && self.shift_cols == 0.0
            && self.shear_deg == 0.0
            && self.zoom_x == 1.0
            && self.zoom_y == 1.0
    }

    /// Check that every number is finite.
    pub fn validate(&self) -> crate::Result<()> {
        let values = [
            ("rotation_deg", self.rotation_deg),
            ("shift_rows", self.shift_rows),
            ("shift_cols", self.shift_cols),
            ("shear_deg", self.shear_deg),
            ("zoom_x", self.zoom_x),
            ("zoom_y", self.zoom_y),
        ];
        for (name, value) in values {
            if !value.is_finite() {
                return Err(crate::Error::InvalidInput(format!(
                    "affine parameter {name} must be finite, found {value}"
                )));
            }
        }
        Ok(())
    }
}

impl Default for AffineParams {
    fn default() -> Self {
        Self::IDENTITY
    }
}

/// The inverse map from an output pixel `(row, col)` to the input position it samples:
/// `input = linear · (row, col) + offset` (scipy's `affine_transform(matrix, offset)`).
///
/// ```
/// use fracture::augment::{AffineMatrix, AffineParams};
/// let shift = AffineParams { shift_rows: 2.0, ..AffineParams::IDENTITY };
/// let m = AffineMatrix::keras(&shift, 10, 10);
/// assert_eq!(m.map(3.0, 4.0), (5.0, 4.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineMatrix {
    /// The 2x2 linear part, `[[d_row/d_row, d_row/d_col], [d_col/d_row, d_col/d_col]]`.
    pub linear: [[f64; 2]; 2],
    /// The input position of output pixel `(0, 0)`.
    pub offset: [f64; 2],
}

type Mat3 = [[f64; 3]; 3];

const IDENTITY3: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

/// `a @ b` as numpy's `np.dot` computes it through OpenBLAS on x86-64: products accumulated
/// in order with fused multiply-adds. Matching the rounding matters only where an output pixel
/// maps exactly onto the image border (with `constant` fill, in or out decides the value).
fn matmul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            let acc = a[i][0] * b[0][j];
            let acc = a[i][1].mul_add(b[1][j], acc);
            *cell = a[i][2].mul_add(b[2][j], acc);
        }
    }
    out
}

impl AffineMatrix {
    /// The identity map.
    pub const IDENTITY: AffineMatrix = AffineMatrix {
        linear: [[1.0, 0.0], [0.0, 1.0]],
        offset: [0.0, 0.0],
    };

    /// Compose `params` (without the flip) exactly as Keras's `apply_affine_transform` does
    /// for an image of `height` x `width`: `rotation @ shift @ shear @ zoom`, offset to the
    /// centre, axes swapped to `(row, col)`.
    pub fn keras(params: &AffineParams, height: usize, width: usize) -> Self {
        if params.affine_is_identity() {
            return Self::IDENTITY;
        }
        // Keras's own (x, y) frame: x pairs with `tx`, `zx`.
        let (tx, ty) = (params.shift_cols, params.shift_rows);
        let mut m: Option<Mat3> = None;
        let mut compose = |factor: Mat3| {
            m = Some(match m {
                None => factor,
                Some(prev) => matmul(&prev, &factor),
            });
        };
        if params.rotation_deg != 0.0 {
            let theta = params.rotation_deg.to_radians();
            let (s, c) = (theta.sin(), theta.cos());
            compose([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]);
        }
        if tx != 0.0 || ty != 0.0 {
            compose([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]]);
        }
        if params.shear_deg != 0.0 {
            let shear = params.shear_deg.to_radians();
            compose([
                [1.0, -shear.sin(), 0.0],
                [0.0, shear.cos(), 0.0],
                [0.0, 0.0, 1.0],
            ]);
        }
        if params.zoom_x != 1.0 || params.zoom_y != 1.0 {
            compose([
                [params.zoom_x, 0.0, 0.0],
                [0.0, params.zoom_y, 0.0],
                [0.0, 0.0, 1.0],
            ]);
        }
        let m = m.unwrap_or(IDENTITY3);
        // transform_matrix_offset_center(m, h, w)
        let o_x = height as f64 / 2.0 - 0.5;
        let o_y = width as f64 / 2.0 - 0.5;
        let offset = [[1.0, 0.0, o_x], [0.0, 1.0, o_y], [0.0, 0.0, 1.0]];
        let reset = [[1.0, 0.0, -o_x], [0.0, 1.0, -o_y], [0.0, 0.0, 1.0]];
        let t = matmul(&matmul(&offset, &m), &reset);
        // M' = P M P: swap the first two rows and columns.
        Self {
            linear: [[t[1][1], t[1][0]], [t[0][1], t[0][0]]],
            offset: [t[1][2], t[0][2]],
        }
    }

    /// The input position `(row, col)` sampled by output pixel `(row, col)`, computed in the
    /// same order as scipy (offset first, then row term, then column term).
    pub fn map(&self, row: f64, col: f64) -> (f64, f64) {
        (
            self.offset[0] + row * self.linear[0][0] + col * self.linear[0][1],
            self.offset[1] + row * self.linear[1][0] + col * self.linear[1][1],
        )
    }
}
