//! An evaluation's image paths as a bundle's and a report's `metrics.json` hold them
//! ([`crate::dataset::stored_path`]): `cases[].path` and the path of each `skipped` entry in
//! the classifier's [`PathForm`], and every mention of such a path in a skip reason replaced
//! by its stored form. In memory an [`super::Evaluation`] keeps the full paths (the report's
//! gallery reads the images, the terminal names the files).

use crate::dataset::stored_path::{self, PathForm};
use crate::dataset::Split;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Every image path an evaluation's JSON names (`cases[].path`, `skipped[][0]`).
pub(crate) fn evaluation_paths(evaluation: &Value) -> Vec<PathBuf> {
    let cases = evaluation["cases"].as_array().into_iter().flatten();
    let skipped = evaluation["skipped"].as_array().into_iter().flatten();
    cases
        .map(|case| &case["path"])
        .chain(skipped.map(|entry| &entry[0]))
        .filter_map(Value::as_str)
        .map(PathBuf::from)
        .collect()
}

/// The root that an evaluation's paths are stored against: the split's own root (the deepest
/// folder holding every image of `split`) when every path of `evaluation_paths` lies under it,
/// so that the cases and the split name an image alike; otherwise the deepest folder holding
/// the evaluation's paths. Empty when none is absolute (then only file names are written).
///
/// The split itself is always stored against its own root ([`Split::data_root`]): an
/// evaluation of images elsewhere must not widen it, or `Split::locate` could no longer match
/// the stored keys to a data folder (and more of each path would be written).
pub(crate) fn evaluation_root(split: Option<&Split>, evaluation_paths: &[PathBuf]) -> PathBuf {
    if let Some(root) = split.and_then(Split::data_root)
        && evaluation_paths.iter().all(|p| p.starts_with(&root))
    {
        return root;
    }
    stored_path::data_root(evaluation_paths.iter().map(PathBuf::as_path)).unwrap_or_default()
}

/// Rewrite an evaluation's JSON in place: each path in `form` against `root`, each skip
/// reason with the full path replaced by the stored one, and `path_form` saying which form.
pub(crate) fn store_evaluation_paths(evaluation: &mut Value, form: &PathForm, root: &Path) {
    let store = |value: &mut Value| -> Option<(String, String)> {
        let original = value.as_str()?.to_string();
        let stored = form.store(root, Path::new(&original));
        *value = Value::String(stored.clone());
        Some((original, stored))
    };
    if let Some(cases) = evaluation["cases"].as_array_mut() {
        for case in cases {
            store(&mut case["path"]);
        }
    }
    if let Some(skipped) = evaluation["skipped"].as_array_mut() {
        for entry in skipped {
            let Some((original, stored)) = store(&mut entry[0]) else {
                continue;
            };
            if let Some(reason) = entry[1].as_str() {
                let reason = reason.replace(&original, &stored);
                entry[1] = Value::String(reason);
            }
        }
    }
    if let Some(object) = evaluation.as_object_mut() {
        object.insert("path_form".into(), Value::String(form.describe().into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::stored_path::PathSalt;

    fn evaluation() -> Value {
        serde_json::json!({
            "part": "test",
            "cases": [
                {"path": "/data/xr/DOE_JOHN/IM0001.dcm", "fractured": true},
                {"path": "/data/xr/ROE_JANE/IM0001.dcm", "fractured": false},
            ],
            "skipped": [
                ["/data/xr/ROE_JANE/IM0002.dcm", "image /data/xr/ROE_JANE/IM0002.dcm: truncated"],
            ],
        })
    }

    #[test]
    fn relative_paths_and_reasons() {
        let mut value = evaluation();
        let root = evaluation_root(None, &evaluation_paths(&value));
        assert_eq!(root, PathBuf::from("/data/xr"));
        store_evaluation_paths(&mut value, &PathForm::Relative, &root);
        assert_eq!(value["cases"][0]["path"], "DOE_JOHN/IM0001.dcm");
        assert_eq!(value["cases"][1]["path"], "ROE_JANE/IM0001.dcm");
        assert_eq!(value["skipped"][0][0], "ROE_JANE/IM0002.dcm");
        assert_eq!(
            value["skipped"][0][1],
            "image ROE_JANE/IM0002.dcm: truncated"
        );
        assert_eq!(value["path_form"], "relative to the data root");
        assert!(!value.to_string().contains("/data/xr"));
    }

    #[test]
    fn hashed_paths_keep_no_name() {
        let mut value = evaluation();
        let form = PathForm::SaltedHash(PathSalt::new("0123456789abcdef").unwrap());
        store_evaluation_paths(&mut value, &form, Path::new("/data/xr"));
        let text = value.to_string();
        for secret in ["DOE", "ROE", "IM000", "0123456789abcdef"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_ne!(value["cases"][0]["path"], value["cases"][1]["path"]);
        // Storing again changes nothing (a reloaded bundle saved again).
        let again = {
            let mut v = value.clone();
            store_evaluation_paths(&mut v, &form, Path::new("/data/xr"));
            v
        };
        assert_eq!(again, value);
    }
}
