//! The crate as a user meets it: synthetic radiographs → train (tiny) → evaluate → save →
//! load → classify, and the failure modes of bundles and folders.

use crate::common;

use candle_core::Device;
use common::{generated_samples, quick_training, tiny_classifier};
use fracture::classifier::{Evaluation, SplitOrigin};
use fracture::dataset::synthetic::SyntheticConfig;
use fracture::dataset::{FracAtlas, Label, Split, SplitConfig};
use fracture::FractureClassifier;
use std::path::Path;

fn synthetic_split(root: &Path) -> Split {
    common::synthetic_split(root, 24)
}

#[test]
fn train_save_load_classify_gives_identical_probabilities() {
    let data_dir = tempfile::tempdir().unwrap();
    let split = synthetic_split(data_dir.path());
    let mut clf = tiny_classifier();
    let history = clf.train(&split, quick_training(2)).unwrap();
    assert_eq!(history.epochs.len(), 2);
    let evaluation = clf.evaluate(&split.test).unwrap();

    let images: Vec<_> = split.test.samples.iter().map(|s| s.path.clone()).collect();
    let before: Vec<f64> = images
        .iter()
        .map(|p| clf.classify_path(p).unwrap().fracture_probability)
        .collect();
    check_evaluation_against_single_images(&evaluation, &split, &before, clf.threshold());

    let bundle = tempfile::tempdir().unwrap();
    clf.save(bundle.path()).unwrap();
    let loaded = FractureClassifier::load(bundle.path(), &Device::Cpu).unwrap();
    let after: Vec<f64> = images
        .iter()
        .map(|p| loaded.classify_path(p).unwrap().fracture_probability)
        .collect();
    assert_eq!(before, after, "probabilities changed across save/load");
    assert_eq!(loaded.threshold(), clf.threshold());
    assert_eq!(loaded.preprocess(), clf.preprocess());
    assert_eq!(loaded.history().map(|h| h.epochs.len()), Some(2));
    let saved_split = loaded.split().expect("split saved in the bundle");
    assert_eq!(saved_split.test.samples.len(), split.test.samples.len());
    for name in [
        "bundle.json",
        "model.safetensors",
        "split.csv",
        "history.json",
        "metrics.json",
    ] {
        assert!(bundle.path().join(name).is_file(), "{name} missing");
    }
}

/// The evaluation's counts and rates, recomputed here from the test images classified one by
/// one (`probabilities`, in part order) and the true labels; its report shows them.
fn check_evaluation_against_single_images(
    evaluation: &Evaluation,
    split: &Split,
    probabilities: &[f64],
    threshold: f64,
) {
    let fractured: Vec<bool> = split
        .test
        .samples
        .iter()
        .map(|s| s.label == Label::Fractured)
        .collect();
    let count = |truth: bool, called: bool| {
        fractured
            .iter()
            .zip(probabilities)
            .filter(|&(&y, &p)| y == truth && (p >= threshold) == called)
            .count()
    };
    let (tp, fn_, tn, fp) = (
        count(true, true),
        count(true, false),
        count(false, false),
        count(false, true),
    );
    assert_eq!(tp + fn_ + tn + fp, split.test.len());
    let m = &evaluation.at_threshold;
    assert_eq!(m.threshold, threshold);
    let c = &m.confusion;
    assert_eq!(
        (
            c.true_positives(),
            c.fractured(),
            c.true_negatives(),
            c.not_fractured()
        ),
        (tp, tp + fn_, tn, tn + fp)
    );
    assert_eq!(m.accuracy, (tp + tn) as f64 / split.test.len() as f64);
    assert_eq!(m.sensitivity.value(), Some(tp as f64 / (tp + fn_) as f64));
    assert_eq!(m.specificity.value(), Some(tn as f64 / (tn + fp) as f64));
    // ROC AUC: the share of (fractured, not fractured) pairs ranked right, ties one half.
    let (mut won, mut pairs) = (0.0, 0.0);
    for (i, &pi) in probabilities.iter().enumerate() {
        for (j, &pj) in probabilities.iter().enumerate() {
            if fractured[i] && !fractured[j] {
                pairs += 1.0;
                won += if pi > pj {
                    1.0
                } else if pi == pj {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    let auc = m.roc_auc.value().expect("both classes in the test part");
    assert!(
        (auc - won / pairs).abs() < 1e-9,
        "AUC {auc} vs {}",
        won / pairs
    );
    let text = evaluation.to_string();
    for line in [
        format!("({tp} of {} fractures found)", tp + fn_),
        format!("({tn} of {} not-fractured cases cleared)", tn + fp),
    ] {
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
    }
    assert!(evaluation.skipped.is_empty(), "{:?}", evaluation.skipped);
}

fn saved_bundle() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tiny_classifier().save(dir.path()).unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    FractureClassifier::load(dir, &Device::Cpu)
        .unwrap_err()
        .to_string()
}

#[test]
fn bundle_without_weights_file_is_an_error_naming_it() {
    let dir = saved_bundle();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn bundle_with_truncated_weights_is_an_error_naming_it() {
    let dir = saved_bundle();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn bundle_with_corrupt_manifest_is_an_error_naming_it() {
    let dir = saved_bundle();
    std::fs::write(dir.path().join("bundle.json"), "{ not json").unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("bundle.json"), "{msg}");
}

#[test]
fn bundle_without_manifest_is_an_error_naming_it() {
    let dir = saved_bundle();
    std::fs::remove_file(dir.path().join("bundle.json")).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("bundle.json"), "{msg}");
}

#[test]
fn bundle_of_a_newer_layout_is_refused() {
    let dir = saved_bundle();
    let path = dir.path().join("bundle.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            &format!(
                "\"format_version\": {}",
                fracture::classifier::BUNDLE_FORMAT_VERSION
            ),
            "\"format_version\": 99",
        ),
    )
    .unwrap();
    let msg = load_error(dir.path());
    assert!(
        msg.contains("bundle.json") && msg.contains("newer"),
        "{msg}"
    );
}

#[test]
fn classify_dir_lists_bad_files_and_classifies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let images = SyntheticConfig {
        n_fractured: 2,
        n_not_fractured: 2,
        ..SyntheticConfig::default()
    }
    .generate_to(dir.path())
    .unwrap();
    let good = &images[0].path;
    let bytes = std::fs::read(good).unwrap();
    std::fs::write(dir.path().join("corrupt.jpg"), &bytes[..40]).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
    std::fs::write(dir.path().join("empty.png"), b"").unwrap();

    let result = tiny_classifier().classify_dir(dir.path()).unwrap();
    assert_eq!(result.predictions.len(), images.len());
    let skipped: Vec<String> = result
        .skipped
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in ["corrupt.jpg", "notes.txt", "empty.png", "dataset.csv"] {
        assert!(
            skipped.iter().any(|s| s == name),
            "{name} not listed in {skipped:?}"
        );
    }
    assert!(result.skipped.iter().all(|(_, reason)| !reason.is_empty()));
    for (_, p) in &result.predictions {
        assert!((0.0..=1.0).contains(&p.fracture_probability));
    }
}

/// Two generated images under `dir/images/...`; returns their paths.
fn two_images(dir: &Path) -> Vec<std::path::PathBuf> {
    let samples = generated_samples(dir, 1, 64, 64);
    samples.into_iter().map(|s| s.path).collect()
}

#[test]
fn classify_dir_reports_a_link_loop_and_a_broken_link_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let images = two_images(dir.path());
    let loop_link = dir.path().join("images/back_to_the_top");
    std::os::unix::fs::symlink(dir.path(), &loop_link).unwrap();
    let broken = dir.path().join("zz_nowhere.png");
    std::os::unix::fs::symlink(dir.path().join("missing.png"), &broken).unwrap();

    let result = tiny_classifier().classify_dir(dir.path()).unwrap();
    let classified: Vec<_> = result.predictions.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(classified, images, "each image once, in path order");
    let reason = |path: &Path| {
        result
            .skipped
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("{} not in {:?}", path.display(), result.skipped))
    };
    assert!(
        reason(&loop_link).contains("loop"),
        "{}",
        reason(&loop_link)
    );
    assert!(
        reason(&broken).contains("cannot be read"),
        "{}",
        reason(&broken)
    );
}

#[test]
fn classify_dir_reports_an_unreadable_folder_and_goes_on() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let images = two_images(dir.path());
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let hidden = locked.join("inside.png");
    std::fs::copy(&images[0], &hidden).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads a folder whatever its permissions: then the image inside is classified.
    let readable_anyway = std::fs::read_dir(&locked).is_ok();

    let result = tiny_classifier().classify_dir(dir.path());
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let result = result.unwrap();
    let classified: Vec<_> = result.predictions.iter().map(|(p, _)| p.clone()).collect();
    if readable_anyway {
        assert!(classified.contains(&hidden), "{classified:?}");
    } else {
        assert!(
            result
                .skipped
                .iter()
                .any(|(p, r)| p == &locked && r.contains("cannot be read")),
            "{:?}",
            result.skipped
        );
    }
    for image in &images {
        assert!(
            classified.contains(image),
            "{} not classified",
            image.display()
        );
    }
}

#[test]
fn resuming_on_another_split_is_refused_and_names_the_first_difference() {
    let data_dir = tempfile::tempdir().unwrap();
    let split = synthetic_split(data_dir.path());
    let checkpoints = tempfile::tempdir().unwrap();
    let config = fracture::train::TrainConfig {
        augment: false,
        ..quick_training(1)
    };
    tiny_classifier()
        .train_with_checkpoints(&split, config, Some(checkpoints.path()))
        .unwrap();
    // The classifier records its split in the checkpoint without being asked to.
    let recorded = checkpoints.path().join("split.csv");
    assert_eq!(
        Split::load_manifest(&recorded)
            .unwrap()
            .first_difference(&split),
        None
    );

    let mut other = split.clone();
    other.val.samples.swap(0, 1);
    let err = tiny_classifier()
        .resume_training(&other, checkpoints.path())
        .unwrap_err()
        .to_string();
    let first = other.val.samples[0].path.display().to_string();
    assert!(
        err.contains("differs") && err.contains("val part, sample 1") && err.contains(&first),
        "{err}"
    );
    let mut fewer = split.clone();
    fewer.train.samples.pop();
    let err = tiny_classifier()
        .resume_training(&fewer, checkpoints.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("train part"), "{err}");
    // The same split resumes (the run is complete: nothing left to train).
    let history = tiny_classifier()
        .resume_training(&split, checkpoints.path())
        .unwrap();
    assert_eq!(history.epochs.len(), 1);
}

#[test]
fn classify_batch_matches_one_by_one() {
    let images: Vec<_> = SyntheticConfig {
        n_fractured: 2,
        n_not_fractured: 1,
        ..SyntheticConfig::default()
    }
    .generate()
    .unwrap()
    .into_iter()
    .map(|s| image::DynamicImage::ImageLuma8(s.image))
    .collect();
    let clf = tiny_classifier();
    let batch = clf.classify_batch(&images).unwrap();
    for (image, together) in images.iter().zip(&batch) {
        let alone = clf.classify_image(image).unwrap();
        assert!((alone.fracture_probability - together.fracture_probability).abs() < 1e-6);
        assert_eq!(alone.label, together.label);
    }
}

/// Copy a folder tree (files and folders only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_bundles_split_is_the_split_and_a_data_folder_only_locates_its_images() {
    // Trained on a split of seed 7, not the default: a data folder split afresh would put
    // training images into the test part.
    let a = tempfile::tempdir().unwrap();
    generated_samples(a.path(), 10, 48, 64);
    let data = FracAtlas::open(a.path()).unwrap();
    let seven = SplitConfig {
        seed: 7,
        ..SplitConfig::default()
    };
    let split = data.split(&seven).unwrap();
    assert!(
        split
            .first_difference(&data.split(&SplitConfig::default()).unwrap())
            .is_some(),
        "seeds 7 and 42 must split differently for this test to mean anything"
    );
    let mut clf = tiny_classifier();
    let config = fracture::train::TrainConfig {
        augment: false,
        ..quick_training(1)
    };
    clf.train(&split, config).unwrap();
    let bundle = tempfile::tempdir().unwrap();
    clf.save(bundle.path()).unwrap();
    let mut loaded = FractureClassifier::load(bundle.path(), &Device::Cpu).unwrap();

    // With the folder, the split is the bundle's. Without it, a loaded bundle (its paths
    // stored relative to the data root) cannot know where its images are and says so.
    let fresh = SplitConfig::default();
    let resolved = loaded.resolve_split(Some(&data), &fresh).unwrap();
    assert_eq!(resolved.first_difference(&split), None);
    let alone = loaded.resolve_split(None, &fresh).unwrap_err().to_string();
    assert!(alone.contains("give the data folder"), "{alone}");
    assert_eq!(
        clf.resolve_split(None, &fresh)
            .unwrap()
            .first_difference(&split),
        None,
        "the classifier that trained knows where its images are"
    );

    // The folder moved: the same images are found there, part by part.
    let b = tempfile::tempdir().unwrap();
    copy_tree(a.path(), b.path());
    let moved = FracAtlas::open(b.path()).unwrap();
    let located = loaded.resolve_split(Some(&moved), &fresh).unwrap();
    let names = |part: &fracture::dataset::Part| -> Vec<_> {
        part.samples
            .iter()
            .map(|s| s.path.file_name().unwrap().to_owned())
            .collect()
    };
    for (mine, found) in split.parts().into_iter().zip(located.parts()) {
        assert_eq!(names(mine), names(found), "{} part", mine.name);
        let b_root = b.path().canonicalize().unwrap();
        assert!(found.samples.iter().all(|s| s.path.starts_with(&b_root)));
    }
    let evaluation = loaded.evaluate(&located.test).unwrap();
    assert_eq!(
        evaluation.split_origin,
        SplitOrigin::Recorded {
            seen_in_training: 0
        }
    );

    // A folder that changed since is refused, naming the first difference.
    let test_image = located.test.samples[0].path.clone();
    let test_name = test_image
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let refused = |root: &Path| {
        let data = FracAtlas::open(root).unwrap();
        let message = loaded
            .resolve_split(Some(&data), &fresh)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("does not hold the recorded split"),
            "{message}"
        );
        message
    };
    // An image added.
    let extra = test_image.with_file_name("IMG9999999.jpg");
    std::fs::copy(&located.train.samples[0].path, &extra).unwrap();
    let message = refused(b.path());
    assert!(
        message.contains("in no part of the recorded split") && message.contains("IMG9999999.jpg"),
        "{message}"
    );
    std::fs::remove_file(&extra).unwrap();
    // A test image's content changed.
    let original = std::fs::read(&test_image).unwrap();
    std::fs::copy(&located.train.samples[0].path, &test_image).unwrap();
    let message = refused(b.path());
    assert!(
        message.contains("other content") && message.contains(&test_name),
        "{message}"
    );
    std::fs::write(&test_image, &original).unwrap();
    // A test image relabelled (moved to the other class folder).
    let label_folder = test_image.parent().unwrap();
    let other_folder = label_folder.with_file_name(if label_folder.ends_with("Fractured") {
        "Non_fractured"
    } else {
        "Fractured"
    });
    std::fs::rename(&test_image, other_folder.join(&test_name)).unwrap();
    let message = refused(b.path());
    assert!(message.contains(&test_name), "{message}");
}

/// A model evaluated on images elsewhere (a copy of its data) before it is saved keeps its
/// split stored against the split's own root: the bundle still locates its images in the data
/// folder, and no folder name above that root is written (it used to store the split against
/// the common folder of split and evaluation, which no `--data` folder could ever match).
#[test]
fn an_evaluation_elsewhere_before_saving_leaves_the_split_locatable() {
    let a = tempfile::tempdir().unwrap();
    generated_samples(a.path(), 10, 48, 64);
    let data = FracAtlas::open(a.path()).unwrap();
    let split = data.split(&SplitConfig::default()).unwrap();
    let mut clf = tiny_classifier();
    let config = fracture::train::TrainConfig {
        augment: false,
        ..quick_training(1)
    };
    clf.train(&split, config).unwrap();
    let b = tempfile::tempdir().unwrap();
    copy_tree(a.path(), b.path());
    let elsewhere = FracAtlas::open(b.path())
        .unwrap()
        .split(&SplitConfig::default())
        .unwrap();
    clf.evaluate(&elsewhere.test).unwrap();
    let bundle = tempfile::tempdir().unwrap();
    clf.save(bundle.path()).unwrap();

    let csv = std::fs::read_to_string(bundle.path().join("split.csv")).unwrap();
    let a_name = a.path().file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        !csv.contains(&a_name),
        "split.csv names a folder above the data root:\n{csv}"
    );
    let loaded = FractureClassifier::load(bundle.path(), &Device::Cpu).unwrap();
    let resolved = loaded
        .resolve_split(Some(&data), &SplitConfig::default())
        .unwrap();
    assert_eq!(resolved.first_difference(&split), None);
}

#[cfg(unix)]
#[test]
fn an_evaluation_that_cannot_be_recorded_is_an_error() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let mut samples = generated_samples(dir.path(), 2, 32, 40);
    // A file name that is not UTF-8 cannot be written into metrics.json.
    let odd = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"odd-\xff.jpg"));
    std::fs::copy(&samples[0].path, &odd).unwrap();
    samples[0].path = odd;
    let part = fracture::dataset::Part {
        name: fracture::dataset::PartName::Test,
        samples,
    };
    let message = tiny_classifier().evaluate(&part).unwrap_err().to_string();
    assert!(
        message.contains("the evaluation of the test part cannot be recorded"),
        "{message}"
    );
}
