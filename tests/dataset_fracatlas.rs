//! The real FracAtlas, read from `FRACATLAS_DIR`, or from `../shared/data/fracatlas` when the
//! variable is not set. Expected values come from the dataset's README, not from this crate.
//! The tests are ignored by a plain `cargo test` (the images are not shipped); `.ci/run` runs
//! them, and a folder that is missing then fails them.

use crate::common;

use fracture::batch::BatchSource;
use fracture::dataset::loader::{ImageLoader, LoaderConfig};
use fracture::dataset::{decode, FracAtlas, Label, PartName, SplitConfig};
use fracture::preprocess::Preprocess;
use std::collections::HashSet;
use std::path::PathBuf;

fn fracatlas_dir() -> PathBuf {
    common::reference_data("FRACATLAS_DIR", "data/fracatlas")
}

/// Print to stderr past the test harness's capture, so the numbers show in every run.
fn show(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
#[ignore = "needs ../shared/data/fracatlas (or FRACATLAS_DIR)"]
fn real_fracatlas_opens_with_its_known_quirks_reported_and_splits_stratified() {
    let root = fracatlas_dir();
    let start = std::time::Instant::now();
    let data = FracAtlas::open(&root).unwrap();
    println!("opened {} in {:?}", root.display(), start.elapsed());
    println!("{}", data.report);

    // 4083 images, the folder is the label: 717 fractured, 3366 not.
    assert_eq!(data.len(), 4083);
    assert_eq!(data.counts().fractured, 717);
    assert_eq!(data.counts().not_fractured, 3366);
    assert!(
        data.report.unreadable.is_empty(),
        "{:?}",
        data.report.unreadable
    );
    assert!(data.report.missing_metadata.is_empty());

    // The one CSV row that disagrees with its folder.
    let disagreements: Vec<_> = data
        .report
        .label_disagreements
        .iter()
        .map(|d| (file_name(&d.path), d.folder_label, d.csv_label))
        .collect();
    assert_eq!(
        disagreements,
        vec![(
            "IMG0003298.jpg".to_string(),
            Label::Fractured,
            Label::NotFractured
        )]
    );

    // 12 groups of byte-identical files, 27 files in all, never across classes.
    let groups = data.duplicate_groups();
    assert_eq!(groups.len(), 12);
    assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 27);
    for g in &groups {
        let labels: HashSet<_> = g.iter().map(|&i| data.samples[i].label).collect();
        assert_eq!(labels.len(), 1);
    }

    // 59 truncated JPEGs: each is decoded or listed as skipped, never a panic.
    assert_eq!(data.report.truncated.len(), 59);
    let truncated: HashSet<_> = data.report.truncated.iter().cloned().collect();
    let samples: Vec<_> = data
        .samples
        .iter()
        .filter(|s| truncated.contains(&s.path))
        .cloned()
        .collect();
    let config = LoaderConfig {
        shuffle: false,
        ..Default::default()
    };
    let loader = ImageLoader::new(
        samples,
        Preprocess::default(),
        config,
        candle_core::Device::Cpu,
    )
    .unwrap();
    let decoded: usize = loader
        .batches(0)
        .unwrap()
        .map(|b| b.unwrap().indices.len())
        .sum();
    let skipped = loader.skipped();
    show(&format!(
        "FracAtlas truncated JPEGs: {decoded} decoded, {} skipped {:?}",
        skipped.len(),
        skipped
    ));
    assert_eq!(decoded + skipped.len(), 59);

    // The split: exact stratified counts, no duplicate group across parts.
    let split = data.split(&SplitConfig::default()).unwrap();
    show(&format!("FracAtlas split (70/10/20, seed 42):\n{split}"));
    let fractions = [0.7, 0.1, 0.2];
    for (part, fraction) in PartName::ALL.iter().zip(fractions) {
        let counts = split.part(*part).counts();
        for (label, n) in [(Label::Fractured, 717.0), (Label::NotFractured, 3366.0)] {
            let ideal: f64 = n * fraction;
            let found = counts.get(label) as f64;
            assert!(
                (found - ideal).abs() < 1.0,
                "{part} {label}: {found} images, ideal {ideal}"
            );
        }
    }
    assert!(split.leaking_hashes().is_empty());
    println!("whole test took {:?}", start.elapsed());
}

#[test]
#[ignore = "needs ../shared/data/fracatlas (or FRACATLAS_DIR)"]
fn real_fracatlas_exif_rotated_images_come_out_rotated() {
    let root = fracatlas_dir();
    let data = FracAtlas::open(&root).unwrap();
    let mut rotated = 0;
    for sample in &data.samples {
        let bytes = std::fs::read(&sample.path).unwrap();
        let mut decoder = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .unwrap()
            .into_decoder()
            .unwrap();
        use image::ImageDecoder;
        let orientation = decoder.orientation().unwrap();
        use image::metadata::Orientation::*;
        let quarter_turn = matches!(orientation, Rotate90 | Rotate270);
        if orientation == NoTransforms {
            continue;
        }
        rotated += 1;
        let (w, h) = sample.dimensions.unwrap();
        let img = decode::decode_file(&sample.path).unwrap();
        let expected = if quarter_turn { (h, w) } else { (w, h) };
        assert_eq!((img.width(), img.height()), expected, "{:?}", sample.path);
    }
    // The dataset's README: 25 images carry an orientation other than "normal".
    assert_eq!(rotated, 25);
}
