//! The evaluation report as files: every section, charts as PNG and SVG, nothing fetched from
//! the network, the same bytes on every run, overlays and boxes in the gallery, and numbers
//! that agree with a recount from the cases.

use crate::common;

use fracture::augment::TtaConfig;
use fracture::classifier::{Evaluation, SplitOrigin, ThresholdSource};
use fracture::dataset::annotations::Annotations;
use fracture::dataset::{FracAtlas, SplitConfig};
use fracture::report::{
    annotated_regions, select_gallery, DataSource, GalleryImage, GalleryKind, Overlay, Report,
    REPORT_HTML,
};
use serde_json::Value;
use std::path::Path;

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn report_has_every_section_inline_images_and_charts_beside_it() {
    let data = tempfile::tempdir().unwrap();
    let (mut clf, split) = common::trained_tiny(data.path(), 24, 2);
    let evaluation = clf.evaluate(&split.test).unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = Report::new(&clf, &evaluation)
        .data_source(DataSource::named("synthetic radiographs"))
        .write(out.path())
        .unwrap();
    let html = std::fs::read_to_string(&files.html).unwrap();
    for id in common::REPORT_SECTIONS {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id} missing"
        );
    }
    // Self-contained: every image inline, nothing that could reach the network.
    assert!(!html.contains("http://") && !html.contains("https://"));
    let images = html.matches("<img ").count();
    assert!(images >= 6, "{images} images");
    assert_eq!(
        html.matches("<img id=\"chart-").count()
            + html.matches("<img src=\"data:image/png;base64,").count(),
        images
    );
    for name in [
        "roc",
        "pr",
        "confusion",
        "threshold_sweep",
        "reliability",
        "training",
    ] {
        let png = out.path().join(format!("{name}.png"));
        let picture = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(
            picture.width() >= 400 && picture.height() >= 400,
            "{name}: {}x{}",
            picture.width(),
            picture.height()
        );
        let svg = std::fs::read_to_string(out.path().join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}.svg"
        );
        assert!(files.charts.contains(&png));
    }
    let json = read_json(&files.metrics);
    assert_eq!(json["evaluation"]["part"], "test");
    assert_eq!(json["threshold_sweep"].as_array().unwrap().len(), 101);
}

#[test]
fn the_report_is_the_same_bytes_every_time() {
    let data = tempfile::tempdir().unwrap();
    let (mut clf, split) = common::trained_tiny(data.path(), 24, 1);
    let evaluation = clf.evaluate(&split.test).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let report = Report::new(&clf, &evaluation);
    report.write(a.path()).unwrap();
    report.write(b.path()).unwrap();
    for name in [
        REPORT_HTML,
        "metrics.json",
        "roc.png",
        "roc.svg",
        "reliability.png",
    ] {
        assert_eq!(
            std::fs::read(a.path().join(name)).unwrap(),
            std::fs::read(b.path().join(name)).unwrap(),
            "{name} differs between two writes"
        );
    }
}

#[test]
fn gallery_shows_caller_overlays_and_boxes() {
    let data = tempfile::tempdir().unwrap();
    let (mut clf, split) = common::trained_tiny(data.path(), 24, 1);
    let evaluation = clf.evaluate(&split.test).unwrap();
    let gallery = select_gallery(&evaluation, 2);
    assert!(!gallery.is_empty());
    // Most confident first within each kind.
    for kind in GalleryKind::ALL {
        let p: Vec<f64> = gallery
            .iter()
            .filter(|g| g.kind == kind)
            .map(|g| g.probability)
            .collect();
        let sorted = p.windows(2).all(|w| match kind {
            GalleryKind::FalseNegative => w[0] <= w[1],
            _ => w[0] >= w[1],
        });
        assert!(sorted, "{kind:?}: {p:?}");
    }
    let heat = image::RgbImage::from_fn(40, 40, |x, _| image::Rgb([(x * 6) as u8, 0, 0]));
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(heat)
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let png = png.into_inner();
    // The first case's overlay comes through the seam an explanation method plugs into; every
    // case's boxes come from the dataset's annotations, read once as the localization scores
    // read them: the COCO file the synthetic set writes, which a stray YOLO file for the same
    // image does not override.
    let first = gallery[0].path.clone();
    let cams = |image: &GalleryImage| -> fracture::Result<Option<Overlay>> {
        Ok((image.path == first).then(|| Overlay::Encoded(png.clone())))
    };
    let fractured = gallery
        .iter()
        .find(|g| g.fractured)
        .expect("a fractured case");
    let yolo = data.path().join("Annotations").join("YOLO");
    std::fs::create_dir_all(&yolo).unwrap();
    let stem = fractured.path.file_stem().unwrap().to_str().unwrap();
    std::fs::write(yolo.join(format!("{stem}.txt")), "0 0.5 0.5 0.5 0.25\n").unwrap();
    let annotations = Annotations::open_fracatlas(data.path()).unwrap();
    let coco = &annotations.for_path(&fractured.path).unwrap().regions;
    assert!(!coco.is_empty() && coco[0].bbox.width() != 0.5);
    assert_eq!(
        &annotated_regions(&annotations, &fractured.path).unwrap(),
        coco
    );
    let out = tempfile::tempdir().unwrap();
    let files = Report::new(&clf, &evaluation)
        .gallery(gallery.clone())
        .overlays(&cams)
        .unwrap()
        .fracatlas_boxes(data.path())
        .unwrap()
        .write(out.path())
        .unwrap();
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert_eq!(html.matches("alt=\"overlay of ").count(), 1);
    let json = read_json(&files.metrics);
    let entries = json["gallery"].as_array().unwrap();
    assert_eq!(entries.len(), gallery.len());
    assert_eq!(entries[0]["overlay"], true);
    assert!(entries.iter().skip(1).all(|e| e["overlay"] == false));
    for (entry, case) in entries.iter().zip(&gallery) {
        let expected = annotations
            .for_path(&case.path)
            .map_or(0, |a| a.regions.len());
        assert_eq!(entry["boxes"], expected, "{}", case.path.display());
    }
}

#[test]
fn report_numbers_agree_with_a_recount_of_the_cases() {
    let data = tempfile::tempdir().unwrap();
    let (mut clf, split) = common::trained_tiny(data.path(), 24, 2);
    let evaluation = clf.evaluate(&split.test).unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = Report::new(&clf, &evaluation).write(out.path()).unwrap();
    let json = read_json(&files.metrics);
    let cases = json["evaluation"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), split.test.len());
    let temperature = json["evaluation"]["temperature"].as_f64().unwrap();
    for case in cases {
        let logit = case["logit"].as_f64().unwrap();
        let probability = case["probability"].as_f64().unwrap();
        assert!((probability - 1.0 / (1.0 + (-logit / temperature).exp())).abs() < 1e-12);
    }
    let [tp, fn_, _, _] = common::recount_confusion(&json);
    assert_eq!(
        common::stated_confusion(&json),
        common::recount_confusion(&json)
    );
    let prevalence = (tp + fn_) as f64 / cases.len() as f64;
    assert_eq!(json["summary"]["prevalence"].as_f64().unwrap(), prevalence);
    let sensitivity = json["evaluation"]["at_threshold"]["sensitivity"]
        .as_f64()
        .unwrap();
    assert_eq!(sensitivity, tp as f64 / (tp + fn_) as f64);
    // Independent expectation: the ECE recounted from the cases over 15 equal-width bins
    // ((k/15, (k+1)/15], the first including 0), before (sigmoid(logit)) and after.
    let recount_ece = |probability_of: &dyn Fn(&serde_json::Value) -> f64| {
        let mut bins = [(0.0f64, 0.0f64); 15];
        for case in cases {
            let p = probability_of(case);
            let bin = (1..15).filter(|&k| (k as f64) / 15.0 < p).count();
            bins[bin].0 += p;
            bins[bin].1 += f64::from(u8::from(case["fractured"].as_bool().unwrap()));
        }
        bins.iter().map(|(p, y)| (y - p).abs()).sum::<f64>() / cases.len() as f64
    };
    let after = recount_ece(&|c| c["probability"].as_f64().unwrap());
    let before = recount_ece(&|c| 1.0 / (1.0 + (-c["logit"].as_f64().unwrap()).exp()));
    let stated = |when: &str| {
        json["evaluation"]["calibration"][when]["ece"]
            .as_f64()
            .unwrap()
    };
    assert!(
        (stated("after") - after).abs() <= 1e-12,
        "{} {after}",
        stated("after")
    );
    assert!(
        (stated("before") - before).abs() <= 1e-12,
        "{} {before}",
        stated("before")
    );
}

/// The text of a page, tags removed, entities decoded, white space collapsed.
fn page_text(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn an_untrained_classifier_without_a_split_is_described_by_what_was_recorded() {
    // Built, never trained: threshold 0.5 by default, no split, random weights. Nothing may
    // claim a validation-chosen threshold, a split shared with training or held-out images.
    let data = tempfile::tempdir().unwrap();
    let split = common::synthetic_split(data.path(), 12);
    let mut clf = common::tiny_classifier();
    let evaluation = clf.evaluate(&split.test).unwrap();
    assert_eq!(evaluation.split_origin, SplitOrigin::Unrecorded);
    let out = tempfile::tempdir().unwrap();
    let files = Report::new(&clf, &evaluation).write(out.path()).unwrap();
    let text = page_text(&std::fs::read_to_string(&files.html).unwrap());
    for claim in [
        "Youden",
        "chosen on the validation part",
        "same split as training",
        "fitted on the validation part",
        "fitted there",
        "held out from training",
        "Trained from scratch",
    ] {
        assert!(!text.contains(claim), "the page claims {claim:?}: {text}");
    }
    for fact in [
        "Threshold 0.500: the default (the reference notebook's), never chosen on data.",
        "The model holds no record of the images it was trained on",
        "were never trained",
    ] {
        assert!(
            text.contains(fact),
            "the page does not say {fact:?}: {text}"
        );
    }
    let json = read_json(&files.metrics);
    assert_eq!(json["model"]["threshold_source"], "default");
    assert_eq!(json["evaluation"]["split_origin"]["kind"], "unrecorded");
}

#[test]
fn the_threshold_source_and_the_split_origin_are_stated_as_recorded() {
    let data = tempfile::tempdir().unwrap();
    let (mut clf, split) = common::trained_tiny(data.path(), 24, 1);
    assert_eq!(
        clf.threshold_source(),
        Some(ThresholdSource::Validation {
            rule: Some(fracture::metrics::ThresholdRule::Youden)
        })
    );
    let read = |clf: &fracture::FractureClassifier, evaluation: &Evaluation| {
        let out = tempfile::tempdir().unwrap();
        let files = Report::new(clf, evaluation).write(out.path()).unwrap();
        page_text(&std::fs::read_to_string(&files.html).unwrap())
    };
    // The recorded split's test part: held out, checked by content.
    let evaluation = clf.evaluate(&split.test).unwrap();
    assert_eq!(
        evaluation.split_origin,
        SplitOrigin::Recorded {
            seen_in_training: 0
        }
    );
    let text = read(&clf, &evaluation);
    assert!(
        text.contains("chosen on the validation part by Youden's J")
            && text.contains("Evaluated on the test part of the split recorded with the model")
            && !text.contains("not recorded)."),
        "{text}"
    );

    // The test part of another split of the same folder (what `evaluate --data` once did): its
    // images were trained on, and the page must say so, not call them held out.
    let other = FracAtlas::open(data.path())
        .unwrap()
        .split(&SplitConfig {
            seed: 7,
            ..SplitConfig::default()
        })
        .unwrap();
    let evaluation = clf.evaluate(&other.test).unwrap();
    let SplitOrigin::Other { seen_in_training } = evaluation.split_origin else {
        panic!("{:?}", evaluation.split_origin);
    };
    let in_training = other
        .test
        .samples
        .iter()
        .filter(|s| {
            split
                .train
                .samples
                .iter()
                .chain(&split.val.samples)
                .any(|t| t.path == s.path)
        })
        .count();
    assert!(in_training > 0);
    assert_eq!(seen_in_training, in_training);
    let text = read(&clf, &evaluation);
    assert!(
        text.contains(&format!(
            "{in_training} of them are, by content, in its training or validation part"
        )) && !text.contains("held out from training")
            && !text.contains("same split as training"),
        "{text}"
    );

    // A threshold set by hand is called so.
    clf.set_threshold(0.3).unwrap();
    let evaluation = clf.evaluate(&split.test).unwrap();
    let text = read(&clf, &evaluation);
    assert!(
        text.contains("Threshold 0.300: set by hand, not chosen on data by fracture.")
            && !text.contains("chosen on the validation part"),
        "{text}"
    );
}

#[test]
fn a_report_refuses_an_evaluation_the_classifier_did_not_make_as_it_is() {
    let data = tempfile::tempdir().unwrap();
    let (mut clf, split) = common::trained_tiny(data.path(), 12, 1);
    let evaluation = clf.evaluate(&split.test).unwrap();
    let out = tempfile::tempdir().unwrap();
    let refused = |clf: &fracture::FractureClassifier, evaluation: &Evaluation| {
        Report::new(clf, evaluation)
            .write(out.path())
            .unwrap_err()
            .to_string()
    };
    let (threshold, temperature) = (clf.threshold(), clf.temperature());

    clf.set_threshold(0.37).unwrap();
    let message = refused(&clf, &evaluation);
    assert!(
        message.contains("threshold (") && message.contains("0.37"),
        "{message}"
    );

    // Another temperature at the same threshold.
    clf.set_temperature(temperature * 2.0).unwrap();
    clf.set_threshold(threshold).unwrap();
    let message = refused(&clf, &evaluation);
    assert!(message.contains("temperature ("), "{message}");

    clf.set_temperature(temperature).unwrap();
    clf.set_threshold(threshold).unwrap();
    clf.set_tta(TtaConfig::standard()).unwrap();
    let message = refused(&clf, &evaluation);
    assert!(
        message.contains("test-time augmentation (off)"),
        "{message}"
    );

    clf.set_tta(TtaConfig::none()).unwrap();
    assert!(Report::new(&clf, &evaluation).write(out.path()).is_ok());
}

#[test]
fn a_nan_in_the_evaluation_is_an_error_naming_it_not_n_a() {
    let data = tempfile::tempdir().unwrap();
    let split = common::synthetic_split(data.path(), 6);
    let mut clf = common::tiny_classifier();
    let mut evaluation = clf.evaluate(&split.test).unwrap();
    evaluation.at_threshold.accuracy = f64::NAN;
    let out = tempfile::tempdir().unwrap();
    let message = Report::new(&clf, &evaluation)
        .write(out.path())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("/evaluation/at_threshold/accuracy"),
        "{message}"
    );
    assert!(!out.path().join(REPORT_HTML).exists());
}

#[test]
fn operating_points_localization_and_the_threshold_rule_are_on_the_page() {
    use fracture::metrics::localization::{ImageLocalization, MapScores};
    use fracture::metrics::{LocalizationConfig, LocalizationReport, ThresholdRule};
    let data = tempfile::tempdir().unwrap();
    let (mut clf, split) = common::trained_tiny(data.path(), 24, 1);
    let evaluation = clf.evaluate(&split.test).unwrap();
    // The lines `evaluate` prints.
    let printed = evaluation.to_string();
    let auc = evaluation.at_threshold.roc_auc.value().unwrap();
    assert!(
        printed.lines().any(|l| l == format!("ROC AUC {auc:.4}")),
        "{printed}"
    );
    for target in ["0.80", "0.90", "0.95"] {
        let prefix = format!("sensitivity at specificity {target}: ");
        let line = printed.lines().find(|l| l.starts_with(&prefix));
        assert!(
            line.is_some_and(|l| l.contains(" (95% CI ") && l.ends_with(')')),
            "{printed}"
        );
    }
    // Localization scores made up for the page: the map hits every hand, the Gaussian none.
    let hit = |pointing: f64| MapScores {
        pointing,
        energy: pointing / 2.0,
        best_iou: pointing,
        iou_hit: pointing > 0.5,
    };
    let images: Vec<ImageLocalization> = (0..6)
        .map(|i| ImageLocalization {
            path: data.path().join(format!("secret-{i}.jpg")),
            body_part: Some(if i < 4 { "hand" } else { "leg" }.into()),
            boxes: 1,
            map: hit(1.0),
            centred_gaussian: hit(0.0),
            uniform: hit(if i % 2 == 0 { 1.0 } else { 0.0 }),
        })
        .collect();
    let localization = LocalizationReport::new(
        "Grad-CAM",
        LocalizationConfig::default(),
        images,
        Vec::new(),
        Vec::new(),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = Report::new(&clf, &evaluation)
        .localization(&localization)
        .write(out.path())
        .unwrap();
    let html = std::fs::read_to_string(&files.html).unwrap();
    let json = read_json(&files.metrics);
    // Sensitivity at specificity 0.80, 0.90, 0.95, as the evaluation measured it.
    let points = json["evaluation"]["sensitivity_at_specificity"]
        .as_array()
        .unwrap();
    let targets: Vec<f64> = points
        .iter()
        .map(|p| p["specificity"].as_f64().unwrap())
        .collect();
    assert_eq!(targets, [0.8, 0.9, 0.95]);
    for (index, point) in evaluation.sensitivity_at_specificity.iter().enumerate() {
        let key = format!("/evaluation/sensitivity_at_specificity/{index}/sensitivity/estimate");
        match point.sensitivity.value() {
            Some(ci) => {
                assert_eq!(
                    json.pointer(&key).and_then(Value::as_f64),
                    Some(ci.estimate)
                );
                assert!(html.contains(&format!("data-key=\"{key}\"")), "{key}");
            }
            None => assert!(json.pointer(&key).is_none()),
        }
    }
    assert!(html.contains("id=\"specificity-table\""));
    // The localization summaries and paired differences, without the images' paths.
    for key in [
        "/localization/differences/centred_gaussian/pointing_game/estimate",
        "/localization/by_body_part/hand/differences/centred_gaussian/pointing_game/estimate",
    ] {
        assert_eq!(
            json.pointer(key).and_then(Value::as_f64),
            Some(1.0),
            "{key}"
        );
        assert!(
            html.contains(&format!("data-key=\"{key}\" data-value=\"1.0\"")),
            "{key}"
        );
    }
    assert_eq!(json["localization"]["images"], 6);
    assert!(!std::fs::read_to_string(&files.metrics)
        .unwrap()
        .contains("secret-"));
    assert!(!html.contains("secret-"));
    let text = page_text(&html);
    assert!(
        text.contains("Grad-CAM minus centred Gaussian") && text.contains("By body part"),
        "{text}"
    );
    // Without localization the section says so.
    let files = Report::new(&clf, &evaluation).write(out.path()).unwrap();
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert!(html.contains("id=\"localization-missing\""));
    assert!(read_json(&files.metrics)["localization"].is_null());

    // The rule that chose the threshold, as recorded, in the page's words.
    let mut model = fracture::report::ModelInfo::of(&clf);
    for (rule, words) in [
        (
            Some(ThresholdRule::TargetSpecificity(0.9)),
            "chosen on the validation part for a target specificity of 0.9",
        ),
        (
            Some(ThresholdRule::TargetSensitivity(0.95)),
            "chosen on the validation part for a target sensitivity of 0.95",
        ),
        (
            Some(ThresholdRule::Youden),
            "chosen on the validation part by Youden's J",
        ),
        (
            None,
            "chosen on the validation part (the rule used is not recorded)",
        ),
    ] {
        model.threshold_source = Some(ThresholdSource::Validation { rule });
        let sentence = model.threshold_sentence();
        assert!(sentence.contains(words), "{sentence}");
    }
}
