//! Seeded radiograph-like images for tests, examples and the offline quickstart.
//!
//! Each image is a grayscale "radiograph": a dark background, a soft-tissue ellipse, one or
//! two long bones (a bright cortex around a dimmer marrow cavity) at a random angle, and
//! noise, with random size, brightness and contrast. A fractured image has one jagged
//! fracture line crossing a bone, with the far fragment slightly displaced. Both classes may
//! carry a faint smooth band across the bone (like a growth plate), so "any line" is not the
//! answer.
//!
//! Size, brightness, contrast and the distractor are drawn independently of the label, so
//! neither mean brightness nor image size separates the classes: a model has to find the
//! fracture line. Every image depends only on `(seed, index)`.
//!
//! The lesion of a fractured image is known: one box per bone around the pixels its fracture
//! gap darkens ([`SyntheticImage::lesions`]). [`SyntheticConfig::generate_to`] writes them in
//! FracAtlas's COCO layout, so that localization can be scored on generated data.

use super::annotations::{self, BoundingBox};
use super::{fracatlas, BodyPart, Label, Sample};
use crate::error::{Error, Result};
use image::GrayImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::path::Path;

/// What to generate. Default: 20 fractured, 20 not fractured, 96 to 192 px, seed 42.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticConfig {
    /// Number of fractured images.
    pub n_fractured: usize,
    /// Number of images without fracture.
    pub n_not_fractured: usize,
    /// Smallest width or height, in pixels (at least 16).
    pub min_size: u32,
    /// Largest width or height, in pixels.
    pub max_size: u32,
    /// Seed: the same config always gives the same images.
    pub seed: u64,
    /// How visible fractures are: scales the width of the fracture gap and the displacement
    /// of the far fragment. 1.0 (default) gives hairline gaps of 1-2 % of the image side that
    /// a model needs many images to find; the offline quickstart uses 2.5 so that a small
    /// network trained from scratch on a CPU learns them in a couple of minutes.
    pub fracture_visibility: f32,
    /// How far along the bones the fracture may lie from the middle of the image, as a share
    /// of the image's short side: positions are drawn uniformly from `(-spread, spread)`.
    /// 0.2 (default) keeps fractures near the centre; 0.4 spreads them over most of the
    /// image, so that a map that always points at the centre scores badly.
    pub fracture_spread: f32,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            n_fractured: 20,
            n_not_fractured: 20,
            min_size: 96,
            max_size: 192,
            seed: 42,
            fracture_visibility: 1.0,
            fracture_spread: 0.2,
        }
    }
}

/// One generated image with its label and body part.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticImage {
    /// The class.
    pub label: Label,
    /// The (nominal) body part, drawn independently of the label.
    pub body_part: BodyPart,
    /// The pixels.
    pub image: GrayImage,
    /// Pixel boxes around the fracture gap, one per bone it crosses (empty when not
    /// fractured).
    pub lesions: Vec<BoundingBox>,
}

/// Everything random about one image, drawn before rendering.
struct Scene {
    width: u32,
    height: u32,
    background: f32,
    tissue: f32,
    tissue_radii: (f32, f32),
    bones: Vec<Bone>,
    fracture: FractureLine,
    band: Option<(f32, f32)>,
    gain: f32,
    noise: f32,
    noise_seed: u64,
}

struct Bone {
    start: (f32, f32),
    end: (f32, f32),
    radius: f32,
    cortex: f32,
    marrow: f32,
}

struct FractureLine {
    along: f32,
    tilt: f32,
    width: f32,
    amplitude: f32,
    frequency: f32,
    phase: f32,
    displacement: f32,
}

impl SyntheticConfig {
    fn validate(&self) -> Result<()> {
        if !(self.fracture_visibility > 0.0 && self.fracture_visibility <= 10.0) {
            return Err(Error::InvalidConfig(format!(
                "fracture visibility must be in (0, 10], found {}",
                self.fracture_visibility
            )));
        }
        if !(self.fracture_spread > 0.0 && self.fracture_spread <= 0.45) {
            return Err(Error::InvalidConfig(format!(
                "fracture spread must be in (0, 0.45], found {}",
                self.fracture_spread
            )));
        }
        if self.min_size < 16 || self.max_size < self.min_size || self.max_size > 4096 {
            return Err(Error::InvalidConfig(format!(
                "synthetic image sizes must satisfy 16 <= min_size <= max_size <= 4096, \
                 found {}..{}",
                self.min_size, self.max_size
            )));
        }
        Ok(())
    }

    /// Total number of images.
    pub fn len(&self) -> usize {
        self.n_fractured + self.n_not_fractured
    }

    /// Whether no image is asked for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The label of image `index` (labels are interleaved by a seeded shuffle).
    pub fn label(&self, index: usize) -> Label {
        let mut labels: Vec<Label> = std::iter::repeat_n(Label::Fractured, self.n_fractured)
            .chain(std::iter::repeat_n(
                Label::NotFractured,
                self.n_not_fractured,
            ))
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        for i in (1..labels.len()).rev() {
            labels.swap(i, rng.random_range(0..=i));
        }
        labels.get(index).copied().unwrap_or(Label::NotFractured)
    }

    /// Generate image `index` (`0..len()`).
    ///
    /// ```
    /// use fracture::dataset::synthetic::SyntheticConfig;
    /// let config = SyntheticConfig::default();
    /// let a = config.image(3)?;
    /// assert_eq!(a, config.image(3)?); // deterministic
    /// assert!(a.image.width() >= config.min_size && a.image.width() <= config.max_size);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn image(&self, index: usize) -> Result<SyntheticImage> {
        self.validate()?;
        let label = self.label(index);
        let (scene, body_part) = self.scene(index);
        let fractured = label == Label::Fractured;
        Ok(SyntheticImage {
            label,
            body_part,
            image: render(&scene, fractured),
            lesions: if fractured {
                lesion_boxes(&scene)
            } else {
                Vec::new()
            },
        })
    }

    /// The same radiograph `index` rendered without and with its fracture line: what
    /// distinguishes the two classes, for checking the generator.
    pub fn counterfactual(&self, index: usize) -> Result<(GrayImage, GrayImage)> {
        self.validate()?;
        let (scene, _) = self.scene(index);
        Ok((render(&scene, false), render(&scene, true)))
    }

    /// All images in memory.
    pub fn generate(&self) -> Result<Vec<SyntheticImage>> {
        (0..self.len()).map(|i| self.image(i)).collect()
    }

    /// Write the images in the FracAtlas layout under `dir` (`images/Fractured`,
    /// `images/Non_fractured`, `dataset.csv`; JPEG quality 95; the lesion boxes of the
    /// fractured images in [`annotations::COCO_JSON`]) and return them as samples, as
    /// [`FracAtlas::open`](super::FracAtlas::open) would read them.
    pub fn generate_to(&self, dir: impl AsRef<Path>) -> Result<Vec<Sample>> {
        let dir = dir.as_ref();
        let folders = [
            (Label::Fractured, fracatlas::FRACTURED_DIR),
            (Label::NotFractured, fracatlas::NOT_FRACTURED_DIR),
        ];
        for (_, name) in folders {
            let folder = dir.join("images").join(name);
            std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        }
        let mut csv = String::from(
            "image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured,\
             fracture_count,frontal,lateral,oblique\n",
        );
        let mut lesions = Vec::new();
        for index in 0..self.len() {
            let generated = self.image(index)?;
            let name = format!("IMG{index:07}.jpg");
            if generated.label == Label::Fractured {
                let (w, h) = generated.image.dimensions();
                lesions.push((name.clone(), w, h, generated.lesions.clone()));
            }
            let folder = match generated.label {
                Label::Fractured => fracatlas::FRACTURED_DIR,
                Label::NotFractured => fracatlas::NOT_FRACTURED_DIR,
            };
            let path = dir.join("images").join(folder).join(&name);
            write_jpeg(&generated.image, &path)?;
            let flag = |part: BodyPart| u8::from(generated.body_part == part);
            let fractured = u8::from(generated.label == Label::Fractured);
            csv.push_str(&format!(
                "{name},{},{},{},{},0,0,0,{fractured},{fractured},1,0,0\n",
                flag(BodyPart::Hand),
                flag(BodyPart::Leg),
                flag(BodyPart::Hip),
                flag(BodyPart::Shoulder),
            ));
        }
        let csv_path = dir.join(fracatlas::METADATA_CSV);
        std::fs::write(&csv_path, csv).map_err(|e| Error::io(&csv_path, e))?;
        annotations::write_coco(&dir.join(annotations::COCO_JSON), &lesions)?;
        Ok(super::FracAtlas::open(dir)?.samples)
    }

    fn scene(&self, index: usize) -> (Scene, BodyPart) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(index as u64 + 1);
        let width = rng.random_range(self.min_size..=self.max_size);
        let height = rng.random_range(self.min_size..=self.max_size);
        let body_part = [
            BodyPart::Hand,
            BodyPart::Leg,
            BodyPart::Hip,
            BodyPart::Shoulder,
        ][rng.random_range(0..4)];
        let (w, h) = (width as f32, height as f32);
        let short = w.min(h);
        let angle: f32 = rng.random_range(0.0..std::f32::consts::PI);
        let (dx, dy) = (angle.cos(), angle.sin());
        let center = (
            w * rng.random_range(0.4..0.6),
            h * rng.random_range(0.4..0.6),
        );
        let half_length = 0.5 * (w * w + h * h).sqrt();
        let n_bones = rng.random_range(1..=2);
        let radius = short * rng.random_range(0.06..0.11);
        let bones = (0..n_bones)
            .map(|b| {
                let offset = (b as f32 - (n_bones - 1) as f32 / 2.0) * radius * 2.8;
                let c = (center.0 - dy * offset, center.1 + dx * offset);
                let cortex = rng.random_range(110.0..190.0);
                Bone {
                    start: (c.0 - dx * half_length, c.1 - dy * half_length),
                    end: (c.0 + dx * half_length, c.1 + dy * half_length),
                    radius: radius * rng.random_range(0.85..1.15),
                    cortex,
                    marrow: cortex * rng.random_range(0.55..0.8),
                }
            })
            .collect();
        let fracture = FractureLine {
            along: rng.random_range(-self.fracture_spread..self.fracture_spread) * short,
            tilt: rng.random_range(-0.7..0.7),
            width: (short / 100.0).max(1.2) * rng.random_range(1.0..2.0) * self.fracture_visibility,
            amplitude: radius * rng.random_range(0.05..0.25),
            frequency: rng.random_range(0.3..0.9),
            phase: rng.random_range(0.0..std::f32::consts::TAU),
            displacement: radius * rng.random_range(0.05..0.3) * self.fracture_visibility,
        };
        let band = rng
            .random_bool(0.4)
            .then(|| (rng.random_range(-0.3..0.3) * short, radius * 0.3));
        let scene = Scene {
            width,
            height,
            background: rng.random_range(5.0..45.0),
            tissue: rng.random_range(15.0..55.0),
            tissue_radii: (
                w * rng.random_range(0.3..0.5),
                h * rng.random_range(0.3..0.5),
            ),
            bones,
            fracture,
            band,
            gain: rng.random_range(0.65..1.3),
            noise: rng.random_range(2.0..10.0),
            noise_seed: rng.random(),
        };
        (scene, body_part)
    }
}

/// Render a scene, with or without its fracture line.
fn render(scene: &Scene, fractured: bool) -> GrayImage {
    let mut noise = ChaCha8Rng::seed_from_u64(scene.noise_seed);
    let (cx, cy) = (scene.width as f32 / 2.0, scene.height as f32 / 2.0);
    GrayImage::from_fn(scene.width, scene.height, |x, y| {
        let p = (x as f32 + 0.5, y as f32 + 0.5);
        let (ex, ey) = (
            (p.0 - cx) / scene.tissue_radii.0,
            (p.1 - cy) / scene.tissue_radii.1,
        );
        let tissue = scene.tissue * smooth_inside(1.0 - (ex * ex + ey * ey).sqrt(), 0.15);
        let bone: f32 = scene
            .bones
            .iter()
            .map(|b| bone_value(b, p, &scene.fracture, scene.band, fractured))
            .fold(0.0, f32::max);
        // Two uniform draws per pixel approximate a Gaussian well enough for texture.
        let n: f32 = noise.random_range(-1.0..1.0) + noise.random_range(-1.0..1.0);
        let value = scene.gain * (scene.background + tissue + bone) + scene.noise * n;
        image::Luma([value.clamp(0.0, 255.0).round() as u8])
    })
}

/// 0 outside, 1 inside, linear over `soft` (in the units of `signed`).
fn smooth_inside(signed: f32, soft: f32) -> f32 {
    (signed / soft + 0.5).clamp(0.0, 1.0)
}

/// Intensity of one bone at point `p`.
fn bone_value(
    bone: &Bone,
    p: (f32, f32),
    fracture: &FractureLine,
    band: Option<(f32, f32)>,
    fractured: bool,
) -> f32 {
    let (along, mut across, line) = bone_coordinates(bone, p, fracture);
    if fractured && line > 0.0 {
        across -= fracture.displacement;
    }
    let d = across.abs();
    let outer = smooth_inside(bone.radius - d, 1.0);
    let inner = smooth_inside(bone.radius * 0.6 - d, 1.0);
    let mut value = outer * (bone.cortex * (1.0 - inner) + bone.marrow * inner);
    if let Some((position, half_width)) = band {
        let t = ((along - position) / half_width).abs();
        value *= 1.0 - 0.12 * (1.0 - t).max(0.0);
    }
    if fractured {
        value *= 1.0 - 0.8 * fracture_gap(fracture, line);
    }
    value
}

/// How much the fracture gap darkens a point at signed distance `line` from the fracture
/// line (0 outside the gap, 1 well inside).
fn fracture_gap(fracture: &FractureLine, line: f32) -> f32 {
    smooth_inside(fracture.width / 2.0 - line.abs(), 1.0)
}

/// Point `p` in a bone's frame: distance along its axis from its middle, distance across it,
/// and the signed distance to the (tilted, jagged) fracture line.
fn bone_coordinates(bone: &Bone, p: (f32, f32), fracture: &FractureLine) -> (f32, f32, f32) {
    let axis = (bone.end.0 - bone.start.0, bone.end.1 - bone.start.1);
    let length = (axis.0 * axis.0 + axis.1 * axis.1).sqrt().max(1e-3);
    let (ux, uy) = (axis.0 / length, axis.1 / length);
    let mid = (
        (bone.start.0 + bone.end.0) / 2.0,
        (bone.start.1 + bone.end.1) / 2.0,
    );
    let rel = (p.0 - mid.0, p.1 - mid.1);
    let along = rel.0 * ux + rel.1 * uy;
    let across = -rel.0 * uy + rel.1 * ux;
    let line = along - fracture.along - fracture.tilt * across
        + fracture.amplitude * (fracture.frequency * across + fracture.phase).sin();
    (along, across, line)
}

/// One pixel box per bone around the pixels that its fracture gap darkens (pixel `(x, y)`
/// covers `[x, x + 1) x [y, y + 1)`).
fn lesion_boxes(scene: &Scene) -> Vec<BoundingBox> {
    scene
        .bones
        .iter()
        .filter_map(|bone| {
            let mut extent: Option<(u32, u32, u32, u32)> = None;
            for y in 0..scene.height {
                for x in 0..scene.width {
                    let p = (x as f32 + 0.5, y as f32 + 0.5);
                    let (_, mut across, line) = bone_coordinates(bone, p, &scene.fracture);
                    if line > 0.0 {
                        across -= scene.fracture.displacement;
                    }
                    let inside_bone = smooth_inside(bone.radius - across.abs(), 1.0) > 0.0;
                    if inside_bone && fracture_gap(&scene.fracture, line) > 0.0 {
                        extent = Some(match extent {
                            None => (x, y, x, y),
                            Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
                        });
                    }
                }
            }
            extent.map(|(x0, y0, x1, y1)| {
                BoundingBox::new(
                    f64::from(x0),
                    f64::from(y0),
                    f64::from(x1) + 1.0,
                    f64::from(y1) + 1.0,
                )
            })
        })
        .collect()
}

fn write_jpeg(image: &GrayImage, path: &Path) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut writer = std::io::BufWriter::new(file);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut writer, 95)
        .encode_image(image)
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            message: format!("cannot encode JPEG: {e}"),
        })?;
    writer.flush().map_err(|e| Error::io(path, e))
}
