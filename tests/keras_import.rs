//! Importing the reference notebook's whole saved Keras model (issue 14): the three saved forms
//! give Keras's own P(fracture) on the candle path and on the CPU fast path; every kind of bad
//! file is an error naming the file and the problem, never a panic (bad files are built here
//! from the good ones); mutated files (truncations, byte flips) never panic.
//!
//! `tests/fixtures/keras_head/` is the shared fixture `keras_head/tiny` (see its README). When
//! `KERAS_MODEL_FIXTURE_DIR` names another folder of the same format (for example the full-size
//! ResNet152V2 of `scripts/make_notebook_model.py`), it is checked too and must match.

use candle_core::{Device, Tensor};
use fracture::classifier::{KerasImport, ThresholdSource};
use fracture::device::DeviceRequest;
use fracture::weights::keras_model::{
    read_keras_model, KerasModelFormat, KerasModelOptions, SigmoidOutput,
};
use fracture::{Error, FractureClassifier};
use image::{DynamicImage, RgbImage};
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::common;
use common::load_safetensors;

const FILES: [(&str, KerasModelFormat); 3] = [
    ("notebook_model.h5", KerasModelFormat::LegacyH5Keras3),
    ("notebook_model.keras", KerasModelFormat::KerasZip),
    (
        "notebook_model_tf_keras.h5",
        KerasModelFormat::LegacyH5Keras2,
    ),
];

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras_head")
}

fn shipped(name: &str) -> PathBuf {
    shipped_dir().join(name)
}

/// The shipped fixture folder, plus `KERAS_MODEL_FIXTURE_DIR` when set (which must exist).
fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![shipped_dir()];
    if let Some(extra) = std::env::var_os("KERAS_MODEL_FIXTURE_DIR") {
        let extra = PathBuf::from(extra);
        eprintln!("also checking KERAS_MODEL_FIXTURE_DIR={}", extra.display());
        assert!(
            extra.is_dir(),
            "KERAS_MODEL_FIXTURE_DIR={} is not a folder",
            extra.display()
        );
        dirs.push(extra);
    }
    dirs
}

/// A folder's expected outputs: the images (uint8, the model's size), P(fracture) and the
/// tolerance (`config.json` `tolerance`, default 1e-5).
struct Expected {
    images: Vec<DynamicImage>,
    height: usize,
    width: usize,
    p_fracture: Vec<f32>,
    tolerance: f32,
}

fn expected(dir: &Path) -> Expected {
    let io = load_safetensors(&dir.join("notebook_io.safetensors"));
    let images = &io["image_uint8"];
    let (n, height, width, channels) = images.dims4().unwrap();
    assert_eq!(channels, 3);
    let pixels: Vec<u8> = images.flatten_all().unwrap().to_vec1().unwrap();
    let images = pixels
        .chunks_exact(height * width * 3)
        .map(|chunk| {
            DynamicImage::ImageRgb8(
                RgbImage::from_raw(width as u32, height as u32, chunk.to_vec()).unwrap(),
            )
        })
        .collect::<Vec<_>>();
    assert_eq!(images.len(), n);
    let config: serde_json::Value = std::fs::read_to_string(dir.join("config.json"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(serde_json::Value::Null);
    let tolerance = config["tolerance"].as_f64().unwrap_or(1e-5) as f32;
    Expected {
        images,
        height,
        width,
        p_fracture: io["p_fracture"].to_vec1().unwrap(),
        tolerance,
    }
}

fn cpu(fast_path: bool) -> KerasImport {
    KerasImport {
        device: DeviceRequest::Cpu,
        fast_path,
        ..KerasImport::default()
    }
}

/// `|found - expected| <= tolerance` for every value, NaN failing.
fn assert_probabilities(what: &str, found: &[f64], expected: &[f32], tolerance: f32) {
    assert_eq!(found.len(), expected.len(), "{what}");
    let mut worst = 0.0f64;
    for (i, (&f, &e)) in found.iter().zip(expected).enumerate() {
        let diff = (f - f64::from(e)).abs();
        assert!(
            diff.is_finite() && diff <= f64::from(tolerance),
            "{what}: image {i}: P(fracture) {f}, Keras {e} (diff {diff}, tolerance {tolerance})"
        );
        worst = worst.max(diff);
    }
    eprintln!("{what}: max |diff| {worst:.2e} over {} images", found.len());
}

fn fracture_probabilities(clf: &FractureClassifier, images: &[DynamicImage]) -> Vec<f64> {
    clf.classify_batch(images)
        .unwrap()
        .iter()
        .map(|p| p.fracture_probability)
        .collect()
}

#[test]
fn all_three_files_give_keras_p_fracture_on_both_paths() {
    for dir in fixture_dirs() {
        let expected = expected(&dir);
        for (file, format) in FILES {
            let path = dir.join(file);
            let model = read_keras_model(&path, &KerasModelOptions::default()).unwrap();
            assert_eq!(model.format, format, "{}", path.display());
            assert_eq!(model.image_size, Some((expected.height, expected.width)));
            for fast_path in [false, true] {
                let clf = FractureClassifier::from_keras_model(&path, &cpu(fast_path)).unwrap();
                assert_eq!(clf.uses_fast_path(), fast_path);
                let what = format!(
                    "{} ({} path)",
                    path.display(),
                    if fast_path { "fast" } else { "candle" }
                );
                let found = fracture_probabilities(&clf, &expected.images);
                assert_probabilities(&what, &found, &expected.p_fracture, expected.tolerance);
            }
        }
    }
}

#[test]
fn a_model_whose_sigmoid_is_p_fracture_is_not_flipped() {
    let expected = expected(&shipped_dir());
    let options = KerasImport {
        sigmoid: SigmoidOutput::Fractured,
        ..cpu(true)
    };
    let clf =
        FractureClassifier::from_keras_model(shipped("notebook_model.keras"), &options).unwrap();
    let found = fracture_probabilities(&clf, &expected.images);
    // Read this way, the model's own output (P(Not_Fractured) in the notebook) is reported.
    let sigmoid: Vec<f32> = expected.p_fracture.iter().map(|p| 1.0 - p).collect();
    assert_probabilities("unflipped", &found, &sigmoid, 1e-5);
}

#[test]
fn head_layers_are_found_by_structure_not_by_name() {
    // Rename the head's Dense layers as another Python session would have named them.
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("renamed.h5");
    rewrite_h5_config(&shipped("notebook_model.h5"), &renamed, |config| {
        config
            .replace("\"dense_1\"", "\"dense_7\"")
            .replace("\"dense\"", "\"dense_6\"")
    });
    // The weights are stored under the old names: rename the weight groups too is not
    // possible in place, so the config and weights now disagree, which must be said...
    let err = import_error(&renamed);
    assert!(err.contains("disagree"), "{err}");
    // ...while the .keras file, whose weights are filed by position, imports under new names.
    let keras = dir.path().join("renamed.keras");
    rewrite_zip_config(
        &shipped("notebook_model.keras"),
        &keras,
        |config| {
            config
                .replace("\"dense_1\"", "\"dense_7\"")
                .replace("\"dense\"", "\"dense_6\"")
        },
        true,
    );
    // Keras records each layer's name beside its weights (filed under `layers/dense`,
    // `layers/dense_1` by class and position): a file Keras wrote this way says the new names.
    rename_zip_vars(&keras, &[("dense", "dense_6"), ("dense_1", "dense_7")]);
    let model = read_keras_model(&keras, &KerasModelOptions::default()).unwrap();
    assert_eq!(
        model.head_layers,
        ("dense_6".to_string(), "dense_7".to_string())
    );
    let expected = expected(&shipped_dir());
    let clf = FractureClassifier::from_keras_model(&keras, &cpu(true)).unwrap();
    let found = fracture_probabilities(&clf, &expected.images);
    assert_probabilities("renamed head", &found, &expected.p_fracture, 1e-5);
}

#[test]
fn imported_model_saves_as_a_bundle_with_a_default_threshold() {
    let expected = expected(&shipped_dir());
    let clf =
        FractureClassifier::from_keras_model(shipped("notebook_model_tf_keras.h5"), &cpu(true))
            .unwrap();
    assert_eq!(clf.threshold(), 0.5);
    assert_eq!(clf.threshold_source(), Some(ThresholdSource::Default));
    let dir = tempfile::tempdir().unwrap();
    clf.save(dir.path()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bundle.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["threshold"], 0.5);
    assert_eq!(manifest["threshold_source"], "default");
    assert_eq!(manifest["preprocess"]["height"], 160);
    assert_eq!(manifest["preprocess"]["width"], 128);
    let again = FractureClassifier::open(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(again.threshold_source(), Some(ThresholdSource::Default));
    let found = fracture_probabilities(&again, &expected.images);
    assert_probabilities("reloaded bundle", &found, &expected.p_fracture, 1e-5);
    // A bundle written before the field existed still loads, its threshold source unknown.
    let mut old = manifest.clone();
    old.as_object_mut().unwrap().remove("threshold_source");
    std::fs::write(dir.path().join("bundle.json"), old.to_string()).unwrap();
    let old = FractureClassifier::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(old.threshold_source(), None);
}

#[test]
fn a_threshold_chosen_on_validation_data_is_recorded_as_such() {
    use fracture::dataset::{synthetic::SyntheticConfig, FracAtlas, SplitConfig};
    use fracture::metrics::ThresholdRule;
    let data = tempfile::tempdir().unwrap();
    SyntheticConfig {
        n_fractured: 20,
        n_not_fractured: 20,
        ..SyntheticConfig::default()
    }
    .generate_to(data.path())
    .unwrap();
    let split = FracAtlas::open(data.path())
        .unwrap()
        .split(&SplitConfig::default())
        .unwrap();
    let mut clf =
        FractureClassifier::from_keras_model(shipped("notebook_model.keras"), &cpu(true)).unwrap();
    let chosen = clf
        .choose_threshold(&split.val, ThresholdRule::TargetSensitivity(1.0))
        .unwrap()
        .expect("both classes are in the validation part");
    assert_eq!(clf.threshold(), chosen);
    let recorded = ThresholdSource::Validation {
        rule: Some(ThresholdRule::TargetSensitivity(1.0)),
    };
    assert_eq!(clf.threshold_source(), Some(recorded));
    let bundle = tempfile::tempdir().unwrap();
    clf.save(bundle.path()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.path().join("bundle.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["threshold_source"],
        serde_json::json!({"validation": {"rule": {"target_sensitivity": 1.0}}}),
        "{manifest}"
    );
    let again = FractureClassifier::load(bundle.path(), &Device::Cpu).unwrap();
    assert_eq!(again.threshold_source(), Some(recorded));
    clf.set_threshold(0.3).unwrap();
    assert_eq!(clf.threshold_source(), Some(ThresholdSource::Manual));
}

#[test]
fn open_takes_a_bundle_folder_or_a_keras_file() {
    let expected = expected(&shipped_dir());
    let from_file =
        FractureClassifier::open(shipped("notebook_model.keras"), &Device::Cpu).unwrap();
    let found = fracture_probabilities(&from_file, &expected.images);
    assert_probabilities("open(.keras)", &found, &expected.p_fracture, 1e-5);
    let err = FractureClassifier::open(shipped("notebook_io.safetensors"), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("notebook_io.safetensors") && err.contains("not a saved Keras model"),
        "{err}"
    );
}

// ---------------------------------------------------------------- the notebook's reading

/// A JPEG of `stored` (RGB, 8-bit) carrying EXIF orientation 6 (display rotated clockwise).
fn jpeg_rotated_by_exif(stored: &RgbImage) -> Vec<u8> {
    use image::ImageEncoder;
    let mut tiff = b"II".to_vec();
    tiff.extend_from_slice(&42u16.to_le_bytes());
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&6u16.to_le_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut bytes = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95);
    encoder.set_exif_metadata(tiff).unwrap();
    encoder
        .write_image(
            stored.as_raw(),
            stored.width(),
            stored.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    bytes
}

#[test]
fn an_import_reads_images_as_the_notebook_did_unless_told_otherwise() {
    use fracture::preprocess::{ExifOrientation, FilterType, Preprocess};
    let path = shipped("notebook_model.keras");
    let notebook = FractureClassifier::from_keras_model(&path, &cpu(true)).unwrap();
    assert_eq!(*notebook.preprocess(), Preprocess::keras_notebook(160, 128));
    assert_eq!(notebook.preprocess().filter, FilterType::Nearest);
    assert_eq!(notebook.preprocess().exif, ExifOrientation::Ignore);
    let own =
        FractureClassifier::from_keras_model(&path, &cpu(true).with_crate_preprocessing()).unwrap();
    assert_eq!(own.preprocess().filter, FilterType::Triangle);
    assert_eq!(own.preprocess().exif, ExifOrientation::Apply);

    // A picture twice the model size whose EXIF says "rotate": Keras's load_img keeps it as
    // stored and picks the nearest pixels as PIL does, source = floor((x + 0.5) * scale),
    // here stored pixel (2x + 1, 2y + 1) of output pixel (x, y).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(23);
    let stored = RgbImage::from_fn(256, 320, |x, y| {
        let g = ((x * 3 + y * 5) % 256) as u8;
        let noise: u8 = rng.random_range(0..40);
        image::Rgb([g.saturating_add(noise), g, g / 2 + noise])
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sideways.jpg");
    std::fs::write(&file, jpeg_rotated_by_exif(&stored)).unwrap();
    let as_stored = fracture::dataset::decode::decode_file_with(&file, ExifOrientation::Ignore)
        .unwrap()
        .image;
    assert_eq!((as_stored.width(), as_stored.height()), (256, 320));
    let as_stored_rgb = as_stored.to_rgb8();
    let keras_view = DynamicImage::ImageRgb8(RgbImage::from_fn(128, 160, |x, y| {
        *as_stored_rgb.get_pixel(2 * x + 1, 2 * y + 1)
    }));
    let p_file = notebook.classify_path(&file).unwrap().fracture_probability;
    let p_keras = notebook
        .classify_image(&keras_view)
        .unwrap()
        .fracture_probability;
    assert!(
        (p_file - p_keras).abs() <= 1e-6,
        "import P(fracture) {p_file}, the notebook's reading {p_keras}"
    );
    // The crate's reading rotates the picture: another input.
    let p_own = own.classify_path(&file).unwrap().fracture_probability;
    assert!(p_own.is_finite() && p_own != p_file, "{p_own} vs {p_file}");

    // The choice travels with a bundle.
    let bundle = dir.path().join("bundle");
    notebook.save(&bundle).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("bundle.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["preprocess"]["filter"], "nearest");
    assert_eq!(manifest["preprocess"]["exif_orientation"], "ignore");
    let again = FractureClassifier::load(&bundle, &Device::Cpu).unwrap();
    assert_eq!(again.preprocess(), notebook.preprocess());
    // A bundle written before the field existed applied EXIF orientation.
    let mut old = manifest.clone();
    old["preprocess"]
        .as_object_mut()
        .unwrap()
        .remove("exif_orientation");
    std::fs::write(bundle.join("bundle.json"), old.to_string()).unwrap();
    let old = FractureClassifier::load(&bundle, &Device::Cpu).unwrap();
    assert_eq!(old.preprocess().exif, ExifOrientation::Apply);
}

// ---------------------------------------------------------------- bad files

/// The import's error for `path`: an `Error::Format` naming the file (checked here).
fn import_error(path: &Path) -> String {
    let result = std::panic::catch_unwind(|| read_keras_model(path, &KerasModelOptions::default()));
    let err = match result {
        Ok(Ok(_)) => panic!("{} imported, expected an error", path.display()),
        Ok(Err(err)) => err,
        Err(_) => panic!("importing {} panicked", path.display()),
    };
    let message = err.to_string();
    eprintln!("{message}");
    match &err {
        Error::Format { path: named, .. } => assert!(
            named.starts_with(path),
            "the error names {} instead of {}",
            named.display(),
            path.display()
        ),
        other => panic!("expected Error::Format, got {other}"),
    }
    assert!(message.contains(&path.display().to_string()), "{message}");
    message
}

/// The entries of a zip, in order.
fn zip_entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            let name = entry.name().unwrap().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

fn write_zip(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut writer = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        writer.start_file(name.as_str(), options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap();
}

/// Copy a `.keras` zip with its `config.json` rewritten by `change` (which must change it when
/// `must_change`).
fn rewrite_zip_config(from: &Path, to: &Path, change: impl Fn(&str) -> String, must_change: bool) {
    let mut entries = zip_entries(from);
    for (name, bytes) in &mut entries {
        if name == "config.json" {
            let old = String::from_utf8(bytes.clone()).unwrap();
            let new = change(&old);
            assert!(!must_change || new != old, "the rewrite changed nothing");
            *bytes = new.into_bytes();
        }
    }
    write_zip(to, &entries);
}

/// Set the `name` attribute of `layers/<folder>/vars` in a `.keras` zip's weights.
fn rename_zip_vars(path: &Path, renames: &[(&str, &str)]) {
    let mut entries = zip_entries(path);
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in &mut entries {
        if name == "model.weights.h5" {
            let h5 = dir.path().join("model.weights.h5");
            std::fs::write(&h5, &bytes).unwrap();
            let file = hdf5_pure::File::open_rw(&h5).unwrap();
            for (folder, new_name) in renames {
                file.group(&format!("layers/{folder}/vars"))
                    .unwrap()
                    .set_attr(
                        "name",
                        hdf5_pure::AttrValue::VarLenString(new_name.to_string()),
                    )
                    .unwrap();
            }
            file.commit().unwrap();
            drop(file);
            *bytes = std::fs::read(&h5).unwrap();
        }
    }
    write_zip(path, &entries);
}

/// Copy a legacy `.h5` model with its `model_config` attribute rewritten by `change`.
fn rewrite_h5_config(from: &Path, to: &Path, change: impl Fn(&str) -> String) {
    std::fs::copy(from, to).unwrap();
    let old = {
        let file = hdf5_pure::File::open(to).unwrap();
        let attrs = file.root().attrs().unwrap();
        match &attrs["model_config"] {
            hdf5_pure::AttrValue::String(s)
            | hdf5_pure::AttrValue::VarLenString(s)
            | hdf5_pure::AttrValue::AsciiString(s)
            | hdf5_pure::AttrValue::VarLenAsciiString(s) => s.clone(),
            hdf5_pure::AttrValue::StringSized { value, .. }
            | hdf5_pure::AttrValue::AsciiStringSized { value, .. } => value.clone(),
            other => panic!("model_config is {other:?}"),
        }
    };
    let new = change(&old);
    assert_ne!(new, old, "the rewrite changed nothing");
    let file = hdf5_pure::File::open_rw(to).unwrap();
    file.root()
        .set_attr("model_config", hdf5_pure::AttrValue::VarLenString(new))
        .unwrap();
    file.commit().unwrap();
}

/// Replace the JSON object of layer `name` in a model config by `change(layer)`.
fn change_layer(config: &str, name: &str, change: impl Fn(&mut serde_json::Value)) -> String {
    let mut json: serde_json::Value = serde_json::from_str(config).unwrap();
    let layer = json["config"]["layers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|l| l["name"] == name || l["config"]["name"] == name)
        .unwrap_or_else(|| panic!("no layer {name}"));
    change(layer);
    json.to_string()
}

/// The notebook's head layer names in the shipped fixture (`config.json`).
const HIDDEN: &str = "dense";
const OUTPUT: &str = "dense_1";
const POOL: &str = "global_average_pooling2d";

#[test]
fn another_architecture_names_the_unexpected_layer() {
    let dir = tempfile::tempdir().unwrap();
    // A max-pool where the notebook averages.
    let path = dir.path().join("max_pool.keras");
    rewrite_zip_config(
        &shipped("notebook_model.keras"),
        &path,
        |c| change_layer(c, POOL, |l| l["class_name"] = "GlobalMaxPooling2D".into()),
        true,
    );
    let err = import_error(&path);
    assert!(
        err.contains(POOL) && err.contains("GlobalMaxPooling2D"),
        "{err}"
    );
    // A backbone layer of another kind.
    let path = dir.path().join("layer_norm.h5");
    rewrite_h5_config(&shipped("notebook_model.h5"), &path, |c| {
        change_layer(c, "conv3_block2_1_bn", |l| {
            l["class_name"] = "LayerNormalization".into()
        })
    });
    let err = import_error(&path);
    assert!(
        err.contains("conv3_block2_1_bn") && err.contains("LayerNormalization"),
        "{err}"
    );
    // Not a ResNetV2 at all: no `conv1_conv`.
    let path = dir.path().join("renamed_stem.h5");
    rewrite_h5_config(&shipped("notebook_model.h5"), &path, |c| {
        c.replace("\"conv1_conv\"", "\"block1_conv1\"")
    });
    let err = import_error(&path);
    assert!(
        err.contains("not a Keras ResNetV2") && err.contains("conv1_conv"),
        "{err}"
    );
    // A tanh where the head has its ReLU.
    let path = dir.path().join("tanh.h5");
    rewrite_h5_config(&shipped("notebook_model_tf_keras.h5"), &path, |c| {
        change_layer(c, HIDDEN, |l| l["config"]["activation"] = "tanh".into())
    });
    let err = import_error(&path);
    assert!(err.contains(&format!("`{HIDDEN}` (Dense)")), "{err}");
}

#[test]
fn two_unit_softmax_head_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (file, name) in [
        ("notebook_model.keras", "softmax.keras"),
        ("notebook_model.h5", "softmax.h5"),
    ] {
        let path = dir.path().join(name);
        let change = |c: &str| {
            change_layer(c, OUTPUT, |l| {
                l["config"]["units"] = 2.into();
                l["config"]["activation"] = "softmax".into();
            })
        };
        if name.ends_with(".keras") {
            rewrite_zip_config(&shipped(file), &path, change, true);
        } else {
            rewrite_h5_config(&shipped(file), &path, change);
        }
        let err = import_error(&path);
        assert!(
            err.contains("two-unit softmax") && err.contains(OUTPUT),
            "{err}"
        );
    }
}

#[test]
fn weights_only_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The weights of the .keras zip alone (Keras 3 `.weights.h5`).
    let (_, weights) = zip_entries(&shipped("notebook_model.keras"))
        .into_iter()
        .find(|(name, _)| name == "model.weights.h5")
        .unwrap();
    let path = dir.path().join("model.weights.h5");
    std::fs::write(&path, weights).unwrap();
    let err = import_error(&path);
    assert!(err.contains("weights-only"), "{err}");
    // Keras 2 `save_weights("*.h5")` (the classic ImageNet file layout).
    let classic = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keras_resnet_v2/tiny/legacy_tf_keras.h5");
    let err = import_error(&classic);
    assert!(err.contains("weights-only"), "{err}");
}

#[test]
fn truncated_zip_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(shipped("notebook_model.keras")).unwrap();
    for keep in [bytes.len() / 2, bytes.len() - 1, 100] {
        let path = dir.path().join(format!("truncated_{keep}.keras"));
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = import_error(&path);
        assert!(err.contains("truncated"), "{err}");
    }
}

#[test]
fn truncated_hdf5_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["notebook_model.h5", "notebook_model_tf_keras.h5"] {
        let bytes = std::fs::read(shipped(file)).unwrap();
        for keep in [bytes.len() / 2, bytes.len() * 9 / 10, 512] {
            let path = dir.path().join(format!("truncated_{keep}_{file}"));
            std::fs::write(&path, &bytes[..keep]).unwrap();
            import_error(&path);
        }
    }
}

#[test]
fn config_disagreeing_with_the_weights_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A wider hidden layer than the stored kernel.
    let wider = |c: &str| change_layer(c, HIDDEN, |l| l["config"]["units"] = 16.into());
    let path = dir.path().join("wider.h5");
    rewrite_h5_config(&shipped("notebook_model.h5"), &path, wider);
    let err = import_error(&path);
    assert!(
        err.contains("disagree") && err.contains("head.dense.weight"),
        "{err}"
    );
    let path = dir.path().join("wider.keras");
    rewrite_zip_config(&shipped("notebook_model.keras"), &path, wider, true);
    let err = import_error(&path);
    assert!(
        err.contains("disagree") && err.contains("head.dense.weight"),
        "{err}"
    );
    // A backbone with wider stacks than the stored kernels (every Keras setting consistent).
    let path = dir.path().join("wider_stack.keras");
    rewrite_zip_config(
        &shipped("notebook_model.keras"),
        &path,
        |c| {
            let mut c = c.to_string();
            for block in 1..=2 {
                for (conv, filters) in [("1_conv", 64), ("2_conv", 64), ("3_conv", 256)] {
                    c = change_layer(&c, &format!("conv5_block{block}_{conv}"), |l| {
                        l["config"]["filters"] = filters.into()
                    });
                }
            }
            change_layer(&c, "conv5_block1_0_conv", |l| {
                l["config"]["filters"] = 256.into()
            })
        },
        true,
    );
    let err = import_error(&path);
    assert!(
        err.contains("disagree") && err.contains("conv5_block1_1_conv"),
        "{err}"
    );
    // Layers swapped in the config of a .keras file: its weights are filed by position and
    // carry their layer's name, which no longer matches.
    let path = dir.path().join("swapped.keras");
    rewrite_zip_config(
        &shipped("notebook_model.keras"),
        &path,
        |c| {
            c.replace("conv2_block1_1_bn", "TMP")
                .replace("conv2_block1_2_bn", "conv2_block1_1_bn")
                .replace("TMP", "conv2_block1_2_bn")
        },
        true,
    );
    import_error(&path);
}

#[test]
fn a_file_that_is_no_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "not a model").unwrap();
    let err = import_error(&path);
    assert!(err.contains("not a saved Keras model"), "{err}");
    let err = FractureClassifier::from_keras_model(dir.path().join("absent.h5"), &cpu(true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.h5"), "{err}");
}

// ---------------------------------------------------------------- mutation fuzzing

/// Truncations at many offsets and random byte flips of the three model files: each read is an
/// error naming the file or a model (a flip inside a weight is still a valid file), never a
/// panic. Truncated files are always errors.
#[test]
fn mutated_model_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
    let mut outcomes = (0usize, 0usize);
    for (file, _) in FILES {
        let bytes = std::fs::read(shipped(file)).unwrap();
        let path = dir.path().join(file);
        let len = bytes.len();
        // 120 truncations: every length class, from the first bytes to one byte short.
        let mut cuts: Vec<usize> = (0..100).map(|i| i * len / 100).collect();
        cuts.extend(
            [1, 7, 8, 9, 63, 64, 65, 511, 512, 513]
                .iter()
                .map(|&c| c.min(len - 1)),
        );
        cuts.extend((1..=10).map(|i| len - i));
        for keep in cuts {
            std::fs::write(&path, &bytes[..keep]).unwrap();
            import_error(&path);
            outcomes.0 += 1;
        }
        // 200 files with 1 to 8 random bytes replaced, half of them in the first 4 kB where
        // the HDF5 superblock, object headers and zip headers are.
        for round in 0..200 {
            let mut mutated = bytes.clone();
            for _ in 0..rng.random_range(1..=8) {
                let at = if round % 2 == 0 {
                    rng.random_range(0..len.min(4096))
                } else {
                    rng.random_range(0..len)
                };
                mutated[at] = rng.random();
            }
            std::fs::write(&path, &mutated).unwrap();
            let result =
                std::panic::catch_unwind(|| read_keras_model(&path, &KerasModelOptions::default()));
            match result {
                Err(_) => panic!("{file}: mutation round {round} panicked"),
                Ok(Err(Error::Format { path: named, .. })) => {
                    assert!(named.starts_with(&path), "{}", named.display())
                }
                Ok(Err(other)) => {
                    panic!("{file}: mutation round {round}: unexpected error {other}")
                }
                Ok(Ok(model)) => {
                    // Still a model: its tensors are all there; run nothing.
                    assert!(model.tensors.contains_key("head.logit.weight"));
                    outcomes.1 += 1;
                }
            }
        }
    }
    eprintln!(
        "{} truncations refused; {} of 600 byte-flipped files still read as a model",
        outcomes.0, outcomes.1
    );
}

/// The imported head is the saved one: the legacy `.h5` and the `.keras` import agree exactly,
/// the default orientation is the exact negation of the output layer, and both are within one
/// Adam step of `head.safetensors` (the fixture script's head in candle layout, saved before its
/// one training step).
#[test]
fn imported_head_is_the_saved_head_flipped() {
    let head = load_safetensors(&shipped("head.safetensors"));
    let flipped =
        read_keras_model(shipped("notebook_model.h5"), &KerasModelOptions::default()).unwrap();
    let kept = read_keras_model(
        shipped("notebook_model.keras"),
        &KerasModelOptions {
            sigmoid: SigmoidOutput::Fractured,
        },
    )
    .unwrap();
    let max_diff = |a: &Tensor, b: &Tensor| -> f32 {
        assert_eq!(a.dims(), b.dims());
        let d: Vec<f32> = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        d.into_iter()
            .fold(0.0, |m, x| if x.is_nan() || x > m { x } else { m })
    };
    for name in ["head.dense.weight", "head.dense.bias"] {
        assert_eq!(
            max_diff(&flipped.tensors[name], &kept.tensors[name]),
            0.0,
            "{name}"
        );
        // One Adam step at lr 1e-4 moved the head by about 1e-4 from its saved start.
        let moved = max_diff(&flipped.tensors[name], &head[name]);
        assert!(moved > 0.0 && moved < 1e-3, "{name} moved {moved}");
    }
    for name in ["head.logit.weight", "head.logit.bias"] {
        let negated = kept.tensors[name].neg().unwrap();
        assert_eq!(max_diff(&flipped.tensors[name], &negated), 0.0, "{name}");
        let moved = max_diff(&kept.tensors[name], &head[name]);
        assert!(moved > 0.0 && moved < 1e-3, "{name} moved {moved}");
    }
    assert_eq!(flipped.tensors.len(), kept.tensors.len());
}

#[test]
fn a_nan_weight_in_a_saved_keras_model_is_refused_naming_the_file_and_the_weight() {
    for file in ["notebook_model.h5", "notebook_model_tf_keras.h5"] {
        let original = shipped(file);
        let tensors = fracture::weights::h5::read_keras_h5(&original).unwrap();
        let (key, tensor) = tensors.iter().max_by_key(|(_, t)| t.elem_count()).unwrap();
        let values: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
        let needle: Vec<u8> = values[..4].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut bytes = std::fs::read(&original).unwrap();
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .expect("the fixture stores its weights uncompressed");
        bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let options = KerasImport {
            device: DeviceRequest::Cpu,
            ..KerasImport::default()
        };
        let message = FractureClassifier::from_keras_model(&path, &options)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains(&path.display().to_string())
                && message.contains(key.as_str())
                && message.contains("NaN"),
            "{file}: {message}"
        );
    }
}
