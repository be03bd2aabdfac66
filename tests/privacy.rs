//! Privacy (issue 23, items 9 and 11): a bundle and a report write image paths relative to the
//! data root, or as salted hashes, never absolute (a hospital's paths hold patients' names);
//! a bundle's split finds its images again in a data set opened elsewhere; DICOM errors quote
//! no free text from the header; outputs of a folder walk mirror the input tree.

use crate::common;
use crate::common::dicom_writer;

use fracture::dataset::stored_path::{PathForm, PathSalt, HASH_PREFIX};
use fracture::dataset::walk::{files_under, mirrored_path};
use fracture::dataset::{FracAtlas, Sample, Split};
use fracture::report::Report;
use fracture::FractureClassifier;
use std::path::{Path, PathBuf};

/// A folder name standing for a patient's, planted above the data root.
const PATIENT: &str = "DOE_JOHN_4711";
const SALT: &str = "a secret salt, not to be written";

/// Every file under `dir`, read as text.
fn all_text(dir: &Path) -> String {
    let mut text = String::new();
    for file in files_under(dir).unwrap().files {
        text.push_str(&String::from_utf8_lossy(&std::fs::read(&file).unwrap()));
        text.push('\n');
    }
    text
}

/// Synthetic data under `<tmp>/DOE_JOHN_4711`, its samples, a split, a tiny classifier trained
/// on it (one short epoch), and the evaluation of the test part with its first image made
/// unreadable (so the skip list has an entry).
struct Trained {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    samples: Vec<Sample>,
    split: Split,
    clf: FractureClassifier,
}

fn trained(form: PathForm) -> (Trained, fracture::classifier::Evaluation) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join(PATIENT);
    let split = common::synthetic_split(&root, 6);
    let root = root.canonicalize().unwrap();
    let samples = FracAtlas::open(&root).unwrap().samples;
    let mut clf = common::tiny_classifier();
    clf.set_path_form(form);
    clf.train(&split, common::quick_training(1)).unwrap();
    std::fs::write(&split.test.samples[0].path, b"not an image").unwrap();
    let evaluation = clf.evaluate(&split.test).unwrap();
    assert_eq!(
        evaluation.skipped.len(),
        1,
        "the broken image was not skipped"
    );
    let trained = Trained {
        _tmp: tmp,
        root,
        samples,
        split,
        clf,
    };
    (trained, evaluation)
}

/// The `path` column of a bundle's `split.csv`, in row order.
fn split_csv_paths(bundle: &Path) -> Vec<String> {
    let mut reader = csv::Reader::from_path(bundle.join("split.csv")).unwrap();
    let column = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "path")
        .unwrap();
    reader
        .records()
        .map(|r| r.unwrap().get(column).unwrap().to_string())
        .collect()
}

#[test]
fn bundles_and_reports_write_paths_relative_to_the_data_root() {
    let (t, evaluation) = trained(PathForm::Relative);
    let out = tempfile::tempdir().unwrap();
    let (bundle, report) = (out.path().join("bundle"), out.path().join("report"));
    t.clf.save(&bundle).unwrap();
    Report::new(&t.clf, &evaluation).write(&report).unwrap();

    let text = all_text(&bundle) + &all_text(&report);
    assert!(
        !text.contains(PATIENT),
        "a path above the data root was written"
    );
    // The data root is the folder holding every image: <root>/images.
    let images = t.root.join("images");
    let relative = |p: &Path| {
        let inner = p.strip_prefix(&images).unwrap();
        inner.to_str().unwrap().replace('\\', "/")
    };
    let first = &t.split.train.samples[0].path;
    assert_eq!(split_csv_paths(&bundle)[0], relative(first));
    assert!(
        relative(first).starts_with("Fractured/") || relative(first).starts_with("Non_fractured/")
    );
    for dir in [&bundle, &report] {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap())
                .unwrap();
        let evaluation_json = if dir == &bundle {
            &json
        } else {
            &json["evaluation"]
        };
        assert_eq!(
            evaluation_json["cases"][0]["path"],
            relative(&evaluation.cases[0].path).as_str()
        );
        let broken = relative(&evaluation.skipped[0].0);
        assert_eq!(evaluation_json["skipped"][0][0], broken.as_str());
        assert_eq!(evaluation_json["path_form"], "relative to the data root");
    }
    // In memory the evaluation keeps full paths (the terminal names the file).
    assert!(evaluation.cases[0].path.starts_with(&t.root));

    // The bundle's split finds its images in the data set, opened wherever it is now.
    let loaded = FractureClassifier::load(&bundle, &fracture::candle_core::Device::Cpu).unwrap();
    let stored = loaded.split().unwrap();
    assert!(stored.test.samples.iter().all(|s| s.path.is_relative()));
    assert_eq!(
        stored.locate(&t.samples, &PathForm::Relative).unwrap(),
        t.split
    );
    let moved = stored.rooted_at(&images);
    assert_eq!(moved, t.split);
    // Saving the loaded classifier again keeps the relative paths as they are.
    let again = out.path().join("again");
    loaded.save(&again).unwrap();
    assert_eq!(split_csv_paths(&again), split_csv_paths(&bundle));
}

#[test]
fn salted_hashes_hide_every_name_and_the_salt() {
    let form = PathForm::SaltedHash(PathSalt::new(SALT).unwrap());
    let (t, evaluation) = trained(form.clone());
    let out = tempfile::tempdir().unwrap();
    let (bundle, report) = (out.path().join("bundle"), out.path().join("report"));
    t.clf.save(&bundle).unwrap();
    Report::new(&t.clf, &evaluation).write(&report).unwrap();

    let text = all_text(&bundle) + &all_text(&report);
    for secret in [PATIENT, "IMG0", "Non_fractured/", SALT] {
        if let Some(at) = text.find(secret) {
            let context: String = text[at.saturating_sub(150)..].chars().take(300).collect();
            panic!("{secret:?} written: ...{context}...");
        }
    }
    let paths = split_csv_paths(&bundle);
    assert!(
        paths.iter().all(|p| p.starts_with(HASH_PREFIX)),
        "{paths:?}"
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("metrics.json")).unwrap())
            .unwrap();
    // The same image has the same hash in split.csv and the report.
    let case = metrics["evaluation"]["cases"][0]["path"].as_str().unwrap();
    assert!(paths.iter().any(|p| p == case), "{case} not in split.csv");
    assert!(metrics["gallery"][0]["file"]
        .as_str()
        .unwrap()
        .starts_with(HASH_PREFIX));
    // Whoever holds the salt finds the images again; another salt finds none.
    let loaded = FractureClassifier::load(&bundle, &fracture::candle_core::Device::Cpu).unwrap();
    let stored = loaded.split().unwrap();
    assert_eq!(stored.locate(&t.samples, &form).unwrap(), t.split);
    let wrong = PathForm::SaltedHash(PathSalt::new("another salt of 16 bytes").unwrap());
    let err = stored.locate(&t.samples, &wrong).unwrap_err().to_string();
    assert!(err.contains("does not hold the recorded split"), "{err}");
}

#[test]
fn dicom_errors_quote_no_free_text_from_the_header() {
    // A name where a code belongs, in no patient attribute: redaction by the patient's
    // attributes cannot catch it, so no message may quote the value at all.
    let mut gray = dicom_writer::Gray16::gradient(8, 8);
    gray.photometric = "Dr Roe^Jane";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("IM0001.dcm");
    std::fs::write(&path, gray.native(dicom_writer::EXPLICIT_LE)).unwrap();
    let err = fracture::dataset::decode::decode_file(&path)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("Roe") && !err.contains("Jane"), "{err}");
    assert!(err.contains("photometric interpretation"), "{err}");
    // The terminal still learns which file it was.
    assert!(err.contains("IM0001.dcm"), "{err}");
}

#[test]
fn outputs_mirror_the_input_tree_so_same_names_never_collide() {
    let input = tempfile::tempdir().unwrap();
    for folder in ["DOE_JOHN", "ROE_JANE/series2"] {
        std::fs::create_dir_all(input.path().join(folder)).unwrap();
        std::fs::write(input.path().join(folder).join("IM0001.dcm"), b"x").unwrap();
    }
    let files = files_under(input.path()).unwrap().files;
    assert_eq!(files.len(), 2);
    let out = Path::new("maps");
    let targets: Vec<PathBuf> = files
        .iter()
        .map(|f| mirrored_path(input.path(), f, out, "_gradcam_fracture.png"))
        .collect();
    assert_eq!(
        targets,
        [
            out.join("DOE_JOHN/IM0001_gradcam_fracture.png"),
            out.join("ROE_JANE/series2/IM0001_gradcam_fracture.png")
        ]
    );
}
