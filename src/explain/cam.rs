//! The Grad-CAM family: what each method contributes (its weights) and which score it
//! explains (its target). Everything else (features, gradients, the weighted sum, the ReLU,
//! scaling and resizing) is the same for every method and lives in [`super::explain_features`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A class-activation method on the backbone's last feature map `A` (channels `c`, positions
/// `p`) with the gradient `g = d(score)/dA`. Each gives weights `w[c, p]`; the map is
/// `relu(sum_c w[c, p] * A[c, p])`.
///
/// ```
/// use fracture::explain::CamMethod;
/// assert_eq!(CamMethod::default(), CamMethod::GradCam);
/// assert_eq!("gradcam++".parse::<CamMethod>()?, CamMethod::GradCamPlusPlus);
/// assert_eq!(CamMethod::HiResCam.to_string(), "HiResCAM");
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum CamMethod {
    /// Grad-CAM (Selvaraju et al., 2017): one weight per channel, the spatial mean of its
    /// gradient.
    #[default]
    GradCam,
    /// HiResCAM (Draelos & Carin, 2020): the gradient itself, position by position. With a
    /// pooled head the gradient is the same at every position, so HiResCAM equals Grad-CAM.
    HiResCam,
    /// Grad-CAM++ (Chattopadhay et al., 2018) as tf-keras-vis computes it: per position
    /// `alpha = g^2 / (2 g^2 + g^3 sum_p A)` (1 where the denominator is 0), normalised to
    /// sum 1 over the positions of each channel; the channel weight is
    /// `sum_p alpha * relu(g)`. Without tf-keras-vis's `exp(score)` factor, a positive number
    /// per image that the division by the maximum removes.
    GradCamPlusPlus,
    /// Not a class-activation map: the model's own localization map (the sigmoid of its
    /// [`LocalizationHead`](crate::model::LocalizationHead), trained from fracture boxes), for
    /// classifiers that have one. What such a model was taught to use as its evidence.
    ModelMap,
}

impl CamMethod {
    /// All methods, in the order reports list them.
    pub const ALL: [CamMethod; 3] = [
        CamMethod::GradCam,
        CamMethod::HiResCam,
        CamMethod::GradCamPlusPlus,
    ];

    /// The short name used in file names and fixtures: `gradcam`, `hirescam`, `gradcampp`.
    pub fn key(self) -> &'static str {
        match self {
            CamMethod::GradCam => "gradcam",
            CamMethod::HiResCam => "hirescam",
            CamMethod::GradCamPlusPlus => "gradcampp",
            CamMethod::ModelMap => "map",
        }
    }

    /// The weights `w[c, p]` (channel-major, `channels * positions` values) for one image's
    /// activations and gradients, both `channels * positions` values, channel-major.
    pub(crate) fn weights(
        self,
        activations: &[f64],
        gradients: &[f64],
        positions: usize,
    ) -> Weights {
        match self {
            CamMethod::GradCam => Weights::PerChannel(
                per_channel(gradients, positions)
                    .map(|g| g.iter().sum::<f64>() / positions as f64)
                    .collect(),
            ),
            CamMethod::HiResCam => Weights::PerPosition(gradients.to_vec()),
            CamMethod::GradCamPlusPlus => Weights::PerChannel(
                per_channel(activations, positions)
                    .zip(per_channel(gradients, positions))
                    .map(|(a, g)| grad_cam_plus_plus_weight(a, g))
                    .collect(),
            ),
            // Not reached: `explain_features` refuses the model's map, which has no weights.
            CamMethod::ModelMap => {
                Weights::PerChannel(vec![0.0; activations.len() / positions.max(1)])
            }
        }
    }
}

/// The channels of a channel-major buffer, `positions` values each.
fn per_channel(values: &[f64], positions: usize) -> std::slice::ChunksExact<'_, f64> {
    values.chunks_exact(positions.max(1))
}

/// Grad-CAM++'s weight of one channel (activations `a`, gradients `g` over its positions).
fn grad_cam_plus_plus_weight(a: &[f64], g: &[f64]) -> f64 {
    let activation_sum: f64 = a.iter().sum();
    let alphas: Vec<f64> = g
        .iter()
        .map(|&g| {
            let g2 = g * g;
            let denominator = 2.0 * g2 + g2 * g * activation_sum;
            g2 / if denominator != 0.0 { denominator } else { 1.0 }
        })
        .collect();
    let norm: f64 = alphas.iter().sum();
    let norm = if norm != 0.0 { norm } else { 1.0 };
    alphas
        .iter()
        .zip(g)
        .map(|(alpha, g)| alpha / norm * g.max(0.0))
        .sum()
}

/// What a method gives: one weight per channel, or one per channel and position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Weights {
    /// `channels` values, the same at every position.
    PerChannel(Vec<f64>),
    /// `channels * positions` values, channel-major.
    PerPosition(Vec<f64>),
}

impl Weights {
    /// The weight of channel `c` at position `p`.
    pub(crate) fn at(&self, c: usize, p: usize, positions: usize) -> f64 {
        match self {
            Weights::PerChannel(w) => w.get(c).copied().unwrap_or(0.0),
            Weights::PerPosition(w) => w.get(c * positions + p).copied().unwrap_or(0.0),
        }
    }
}

impl fmt::Display for CamMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            CamMethod::GradCam => "Grad-CAM",
            CamMethod::HiResCam => "HiResCAM",
            CamMethod::GradCamPlusPlus => "Grad-CAM++",
            CamMethod::ModelMap => "the model's localization map",
        })
    }
}

impl FromStr for CamMethod {
    type Err = crate::Error;

    /// `gradcam`, `hirescam`, `gradcampp` / `gradcam++` (case, `-` and `_` ignored).
    fn from_str(text: &str) -> crate::Result<Self> {
        match option_key(text).as_str() {
            "gradcam" => Ok(CamMethod::GradCam),
            "hirescam" => Ok(CamMethod::HiResCam),
            "gradcampp" | "gradcam++" | "gradcamplusplus" => Ok(CamMethod::GradCamPlusPlus),
            "map" | "modelmap" => Ok(CamMethod::ModelMap),
            _ => Err(crate::Error::InvalidConfig(format!(
                "unknown CAM method {text:?}: expected gradcam, hirescam, gradcampp or map"
            ))),
        }
    }
}

/// Which score a map explains: the fracture logit `z`, or its negation `-z` (what speaks
/// against a fracture), as pytorch-grad-cam's `BinaryClassifierOutputTarget`.
///
/// ```
/// use fracture::explain::CamTarget;
/// assert_eq!(CamTarget::Fracture.sign(), 1.0);
/// assert_eq!("no_fracture".parse::<CamTarget>()?, CamTarget::NoFracture);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum CamTarget {
    /// The fracture logit: where the evidence for "fractured" is.
    #[default]
    Fracture,
    /// Minus the fracture logit: where the evidence for "not fractured" is.
    NoFracture,
}

impl CamTarget {
    /// Both targets.
    pub const ALL: [CamTarget; 2] = [CamTarget::Fracture, CamTarget::NoFracture];

    /// The factor applied to the logit: `1` or `-1`.
    pub fn sign(self) -> f64 {
        match self {
            CamTarget::Fracture => 1.0,
            CamTarget::NoFracture => -1.0,
        }
    }

    /// The short name used in file names and fixtures: `fracture`, `no_fracture`.
    pub fn key(self) -> &'static str {
        match self {
            CamTarget::Fracture => "fracture",
            CamTarget::NoFracture => "no_fracture",
        }
    }
}

impl fmt::Display for CamTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            CamTarget::Fracture => "fracture",
            CamTarget::NoFracture => "no fracture",
        })
    }
}

impl FromStr for CamTarget {
    type Err = crate::Error;

    /// `fracture` or `no_fracture` / `no-fracture` / `nofracture` (case ignored).
    fn from_str(text: &str) -> crate::Result<Self> {
        match option_key(text).as_str() {
            "fracture" | "fractured" => Ok(CamTarget::Fracture),
            "nofracture" | "notfractured" => Ok(CamTarget::NoFracture),
            _ => Err(crate::Error::InvalidConfig(format!(
                "unknown CAM target {text:?}: expected fracture or no_fracture"
            ))),
        }
    }
}

/// An option as typed, lower-cased without `-`, `_` and spaces.
fn option_key(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '-' | '_' | ' '))
        .collect::<String>()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_cam_weight_is_the_mean_gradient_per_channel() {
        let w = CamMethod::GradCam.weights(&[0.0; 4], &[1.0, 3.0, -2.0, 0.0], 2);
        assert_eq!(w, Weights::PerChannel(vec![2.0, -1.0]));
    }

    #[test]
    fn grad_cam_plus_plus_weight_follows_the_formula() {
        // One channel, two positions: A = (1, 3), g = (1, 2); sum A = 4.
        // alpha = g^2 / (2 g^2 + g^3 * 4) = 1/6, 4/40; normalised by their sum 0.2667.
        let a1 = 1.0 / 6.0;
        let a2 = 4.0 / 40.0;
        let expected = (a1 * 1.0 + a2 * 2.0) / (a1 + a2);
        match CamMethod::GradCamPlusPlus.weights(&[1.0, 3.0], &[1.0, 2.0], 2) {
            Weights::PerChannel(w) => assert!((w[0] - expected).abs() < 1e-12, "{w:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn grad_cam_plus_plus_ignores_negative_gradients_and_zero_denominators() {
        // g = 0 everywhere: alphas are 0, the norm falls back to 1, the weight is 0.
        let w = CamMethod::GradCamPlusPlus.weights(&[1.0, 1.0], &[0.0, 0.0], 2);
        assert_eq!(w, Weights::PerChannel(vec![0.0]));
        let w = CamMethod::GradCamPlusPlus.weights(&[1.0, 1.0], &[-1.0, -1.0], 2);
        assert_eq!(w, Weights::PerChannel(vec![0.0]));
    }
}
