//! Robustness to what hospitals do to a picture (issue 24, item 7): `FractureClassifier::
//! robustness` and its perturbations, on synthetic radiographs and a tiny random classifier.
//! Expected values come from the image crate, the DICOM reader and `classify_image` called
//! here, never from the robustness code.

use fracture::dataset::decode::decode_bytes;
use fracture::dataset::dicom::{self, DicomOptions, Photometric};
use fracture::dataset::{Part, PartName};
use fracture::preprocess::FilterType;
use fracture::robustness::{twelve_bit_dicom, Perturbation, ResizeTarget};
use fracture::{DynamicImage, FractureClassifier};
use image::codecs::jpeg::JpegEncoder;
use std::path::Path;

use crate::common;

/// A tiny random classifier and twelve synthetic radiographs (all of a small split's training
/// part, so that the part is large enough to flip decisions in).
fn setup(root: &Path) -> (FractureClassifier, Part) {
    let split = common::synthetic_split(root, 9);
    let part = Part {
        name: PartName::Train,
        samples: split.train.samples.clone(),
    };
    assert!(part.len() >= 10, "{} images", part.len());
    (common::tiny_classifier(), part)
}

fn decoded(part: &Part) -> Vec<DynamicImage> {
    part.samples
        .iter()
        .map(|s| fracture::dataset::decode::decode_file(&s.path).unwrap())
        .collect()
}

#[test]
fn identity_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (clf, part) = setup(root.path());
    let report = clf.robustness(&part, &[Perturbation::Identity], 7).unwrap();
    assert_eq!(report.cases.len(), part.len());
    for case in &report.cases {
        assert_eq!(case.perturbed, vec![case.probability], "{}", case.file);
    }
    let s = &report.perturbations[0];
    assert_eq!(
        (s.median_change, s.p95_change, s.max_change, s.flipped),
        (0.0, 0.0, 0.0, 0)
    );
}

#[test]
fn the_same_seed_gives_the_same_report_and_another_seed_other_noise() {
    let root = tempfile::tempdir().unwrap();
    let (clf, part) = setup(root.path());
    let noise = [
        Perturbation::Noise {
            amplitude: 1.0,
            rounded: false,
        },
        Perturbation::Noise {
            amplitude: 1.0,
            rounded: true,
        },
    ];
    let a = clf.robustness(&part, &noise, 7).unwrap();
    let b = clf.robustness(&part, &noise, 7).unwrap();
    assert_eq!(a, b);
    let c = clf.robustness(&part, &noise, 8).unwrap();
    let moved: Vec<bool> = a
        .cases
        .iter()
        .zip(&c.cases)
        .map(|(x, y)| x.perturbed != y.perturbed)
        .collect();
    assert!(moved.iter().any(|&m| m), "seed 8 gave seed 7's noise");
    // The pictures themselves: rounded noise of ±1 keeps every 8-bit pixel within 1 of its
    // value and changes some; the float noise stays within 1/255 of the picture.
    let image = &decoded(&part)[0];
    let gray = image.to_luma8();
    let p = clf.preprocess();
    let at = |seed: u64, perturbation: &Perturbation| {
        perturbation
            .apply(image, p, seed, 0, Path::new("x"))
            .unwrap()
    };
    let rounded = at(7, &noise[1]).to_luma8();
    let diffs: Vec<i32> = gray
        .pixels()
        .zip(rounded.pixels())
        .map(|(a, b)| i32::from(b[0]) - i32::from(a[0]))
        .collect();
    assert!(diffs.iter().all(|d| d.abs() <= 1));
    assert!(diffs.iter().any(|&d| d != 0));
    assert_ne!(at(8, &noise[1]).to_luma8(), rounded);
    let float = at(7, &noise[0]).to_rgb32f();
    for (g, f) in gray.pixels().zip(float.pixels()) {
        let v = f64::from(g[0]);
        for channel in f.0 {
            let noisy = f64::from(channel) * 255.0;
            assert!((noisy - v).abs() <= 1.0 + 1e-4 && (0.0..=255.0).contains(&noisy));
        }
    }
}

/// `image` encoded here as a JPEG of `quality` and decoded by the crate's reader.
fn jpeg_here(image: &DynamicImage, quality: u8) -> DynamicImage {
    let mut bytes = Vec::new();
    DynamicImage::ImageLuma8(image.to_luma8())
        .write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, quality))
        .unwrap();
    decode_bytes(&bytes, Path::new("here.jpg")).unwrap()
}

#[test]
fn jpeg_at_quality_75_moves_the_probability() {
    let root = tempfile::tempdir().unwrap();
    let (clf, part) = setup(root.path());
    let images = decoded(&part);
    assert!(images.iter().all(|i| jpeg_here(i, 75) != *i));
    let report = clf
        .robustness(&part, &[Perturbation::Jpeg { quality: 75 }], 7)
        .unwrap();
    let s = &report.perturbations[0];
    assert!(s.max_change > 0.0 && s.median_change > 0.0, "{report}");
}

#[test]
fn flipped_counts_agree_with_a_hand_count() {
    let root = tempfile::tempdir().unwrap();
    let (mut clf, part) = setup(root.path());
    let images = decoded(&part);
    // The perturbed pictures, made here with the image crate.
    let jpeg: Vec<DynamicImage> = images.iter().map(|i| jpeg_here(i, 75)).collect();
    let half: Vec<DynamicImage> = images
        .iter()
        .map(|i| {
            DynamicImage::ImageLuma8(image::imageops::resize(
                &i.to_luma8(),
                i.width() / 2,
                i.height() / 2,
                FilterType::Lanczos3,
            ))
        })
        .collect();
    let probability = |i: &DynamicImage| clf.classify_image(i).unwrap().fracture_probability;
    let base: Vec<f64> = images.iter().map(probability).collect();
    let by_jpeg: Vec<f64> = jpeg.iter().map(probability).collect();
    let by_half: Vec<f64> = half.iter().map(probability).collect();
    let perturbations = [
        Perturbation::Jpeg { quality: 75 },
        Perturbation::Resize {
            filter: FilterType::Lanczos3,
            target: ResizeTarget::Half,
        },
    ];
    let changed = [&by_jpeg, &by_half];
    // Thresholds between the two probabilities of the image each perturbation moves most up,
    // and most down: at each, at least that decision flips (one way, then the other).
    let mut directions_checked = [false, false];
    for after in changed {
        for (direction, checked) in directions_checked.iter_mut().enumerate() {
            let moved = |i: &usize| (after[*i] > base[*i]) == (direction == 0);
            let Some(at) = (0..base.len())
                .filter(moved)
                .filter(|&i| (after[i] - base[i]).abs() > 1e-5)
                .max_by(|&i, &j| {
                    (after[i] - base[i])
                        .abs()
                        .total_cmp(&(after[j] - base[j]).abs())
                })
            else {
                continue;
            };
            clf.set_threshold((base[at] + after[at]) / 2.0).unwrap();
            let t = clf.threshold();
            let flips = |after: &[f64]| {
                base.iter()
                    .zip(after)
                    .filter(|(a, b)| (**a >= t) != (**b >= t))
                    .count()
            };
            let report = clf.robustness(&part, &perturbations, 7).unwrap();
            for (summary, after) in report.perturbations.iter().zip(changed) {
                assert_eq!(
                    summary.flipped,
                    flips(after),
                    "{} at {t}",
                    summary.perturbation
                );
                assert_eq!(summary.images, part.len());
                let expected = summary.flipped as f64 / part.len() as f64;
                assert_eq!(summary.flipped_share, expected);
                let largest = base
                    .iter()
                    .zip(after)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!((summary.max_change - largest).abs() < 1e-6);
            }
            assert!(flips(after) >= 1);
            *checked = true;
        }
    }
    assert_eq!(
        directions_checked,
        [true, true],
        "no flip up or no flip down"
    );
}

#[test]
fn twelve_bit_dicom_reads_back_the_widened_values() {
    let root = tempfile::tempdir().unwrap();
    let (clf, part) = setup(root.path());
    let image = &decoded(&part)[0];
    let gray = image.to_luma8();
    let bytes = twelve_bit_dicom(image, Path::new("x")).unwrap();
    let read = dicom::read_bytes(&bytes, Path::new("x.dcm"), &DicomOptions::default()).unwrap();
    assert_eq!(read.info.bits_stored, 12);
    assert_eq!(read.info.photometric, Photometric::Monochrome2);
    let widened: Vec<i32> = gray.pixels().map(|v| i32::from(v[0]) * 16 + 8).collect();
    assert_eq!(read.frames[0].values, widened);
    // Through the crate's normal reading path: 16-bit gray of the 12-bit value over 4095.
    let through_reader = Perturbation::Dicom12Bit
        .apply(image, clf.preprocess(), 7, 0, Path::new("x"))
        .unwrap();
    let DynamicImage::ImageLuma16(luma) = through_reader else {
        panic!("not 16-bit gray");
    };
    let expected: Vec<u16> = widened
        .iter()
        .map(|&x| (f64::from(x) / 4095.0 * 65535.0).round() as u16)
        .collect();
    assert_eq!(luma.into_raw(), expected);
}
