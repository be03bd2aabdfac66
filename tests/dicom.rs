//! DICOM reading (issue 15): pydicom's stored and display arrays for every fixture file,
//! refusals that name the file, preamble-less and multi-frame files, DICOM in folders and
//! manifests, an encapsulated JPEG that classifies exactly like its source JPEG, no patient
//! data in any output, and a fuzz of the reader (no panic, no absurd allocation).
//!
//! Fixtures: `tests/fixtures/dicom` (a subset of `../shared/fixtures/dicom`, always checked),
//! the full shared set (ignored without `../shared`), and `DICOM_FIXTURE_DIR` when set (then
//! it must exist and match).

use crate::common::dicom_writer;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_writer::Gray16;
use fracture::dataset::decode::decode_file;
use fracture::dataset::dicom::{self, DicomOptions, Frames};
use fracture::dataset::{open_manifest, BodyPart, FracAtlas, ImageFolder, Label};
use fracture::Error;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------
// Allocation tracking: the largest single allocation made by the current thread while
// tracking is on (the fuzz test asserts no decode asks for an absurd amount).

struct Tracking;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
        }
    });
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Run `f` and return its result with the largest single allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    (out, LARGEST.with(Cell::get))
}

// ---------------------------------------------------------------------------------------
// Fixture folders: files/, manifest.json, expected.safetensors (pydicom's arrays).

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom")
}

fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/dicom")
}

#[derive(Debug, serde::Deserialize)]
struct Entry {
    file: String,
    expect: String,
    #[serde(default)]
    transfer_syntax: String,
    #[serde(default)]
    transfer_syntax_name: String,
    #[serde(default)]
    rows: u32,
    #[serde(default)]
    cols: u32,
    #[serde(default)]
    samples: usize,
    #[serde(default)]
    bits_stored: u32,
    #[serde(default)]
    compare: String,
}

#[derive(Debug, serde::Deserialize)]
struct Manifest {
    files: Vec<Entry>,
}

/// An expected array from `expected.safetensors`, as f64, with its shape.
struct Expected {
    shape: Vec<usize>,
    values: Vec<f64>,
}

fn expected_arrays(dir: &Path) -> std::collections::HashMap<String, Expected> {
    let bytes = std::fs::read(dir.join("expected.safetensors")).expect("expected.safetensors");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut out = std::collections::HashMap::new();
    for (name, view) in tensors.tensors() {
        let data = view.data();
        let values: Vec<f64> = match view.dtype() {
            safetensors::Dtype::U8 => data.iter().map(|&b| f64::from(b)).collect(),
            safetensors::Dtype::I32 => data
                .chunks_exact(4)
                .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            other => panic!("{name}: unexpected dtype {other:?}"),
        };
        out.insert(
            name,
            Expected {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    out
}

/// How closely decoded values must match pydicom's, from the manifest's `compare` text.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Lossless: stored values equal, display within 1e-4.
    Exact,
    /// Lossy JPEG: mean absolute difference <= 1 % and max <= 6 % of the range.
    Lossy,
}

fn rule(compare: &str) -> Rule {
    if compare.starts_with("exact") {
        Rule::Exact
    } else if compare.starts_with("lossy") {
        Rule::Lossy
    } else {
        panic!("unknown compare rule {compare:?}: teach the test what it means")
    }
}

/// `None` when `actual` matches `expected` under `rule` (`range`: the value range the lossy
/// percentages refer to; `exact_tolerance`: allowed difference for the exact rule). A NaN
/// counts as a mismatch.
fn mismatch(
    name: &str,
    actual: &[f64],
    expected: &[f64],
    rule: Rule,
    range: f64,
    exact_tolerance: f64,
) -> Option<String> {
    if actual.len() != expected.len() {
        return Some(format!(
            "{name}: {} values, expected {}",
            actual.len(),
            expected.len()
        ));
    }
    let mut worst = (0.0f64, 0usize);
    let mut sum = 0.0;
    let mut outside = 0usize;
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let diff = (a - e).abs();
        if !diff.is_finite() {
            return Some(format!("{name}: value {i} is {a}, expected {e}"));
        }
        sum += diff;
        if diff > exact_tolerance {
            outside += 1;
        }
        if diff > worst.0 {
            worst = (diff, i);
        }
    }
    let mean = sum / actual.len().max(1) as f64;
    if let Rule::Lossy = rule {
        eprintln!(
            "  {name} (lossy): mean |diff| {:.3} %, max {:.3} % of the range",
            100.0 * mean / range,
            100.0 * worst.0 / range
        );
    }
    let ok = match rule {
        Rule::Exact => outside == 0,
        Rule::Lossy => mean <= 0.01 * range && worst.0 <= 0.06 * range,
    };
    (!ok).then(|| {
        format!(
            "{name}: {rule:?} rule failed: {outside} values differ, mean |diff| {mean:.4}, max \
             {:.4} at {} (got {}, expected {}), range {range}",
            worst.0, worst.1, actual[worst.1], expected[worst.1]
        )
    })
}

fn is_jpeg2000(uid: &str) -> bool {
    uid.starts_with("1.2.840.10008.1.2.4.9")
}

/// Check every manifest entry of a fixture folder; returns the failures.
fn check_fixture_dir(dir: &Path) -> Vec<String> {
    let manifest: Manifest = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join("manifest.json").display())),
    )
    .expect("manifest.json");
    assert!(!manifest.files.is_empty(), "{}: no files", dir.display());
    let expected = expected_arrays(dir);
    let mut failures = Vec::new();
    let (mut images, mut errors) = (0, 0);
    for entry in &manifest.files {
        let path = dir.join("files").join(&entry.file);
        let result = std::panic::catch_unwind(|| match entry.expect.as_str() {
            "image" => check_image(&path, entry, &expected),
            "error" => check_refused(&path),
            other => vec![format!("unknown expectation {other:?}")],
        });
        match result {
            Ok(problems) => {
                failures.extend(problems.into_iter().map(|p| format!("{}: {p}", entry.file)))
            }
            Err(_) => failures.push(format!("{}: PANICKED", entry.file)),
        }
        match entry.expect.as_str() {
            "image" => images += 1,
            _ => errors += 1,
        }
    }
    eprintln!(
        "{}: {images} image and {errors} error entries checked",
        dir.display()
    );
    failures
}

fn check_image(
    path: &Path,
    entry: &Entry,
    expected: &std::collections::HashMap<String, Expected>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let stem = entry.file.trim_end_matches(".dcm");
    let result = dicom::read_file(path, &DicomOptions::default());
    if is_jpeg2000(&entry.transfer_syntax) && !cfg!(feature = "jpeg2000") {
        // Without the feature: a clear error naming the file and the syntax.
        match result {
            Err(Error::Image { path: p, message }) if p == path => {
                if !(message.contains(&entry.transfer_syntax_name)
                    && message.contains(&entry.transfer_syntax)
                    && message.contains("jpeg2000"))
                {
                    problems.push(format!(
                        "JPEG 2000 error does not name the syntax: {message}"
                    ));
                }
            }
            other => problems.push(format!("JPEG 2000 without the feature gave {other:?}")),
        }
        return problems;
    }
    let image = match result {
        Ok(image) => image,
        Err(e) => return vec![format!("not decoded: {e}")],
    };
    let info = &image.info;
    if (info.rows, info.columns, usize::from(info.samples_per_pixel))
        != (entry.rows, entry.cols, entry.samples)
    {
        problems.push(format!(
            "size {}x{}x{}, manifest says {}x{}x{}",
            info.rows, info.columns, info.samples_per_pixel, entry.rows, entry.cols, entry.samples
        ));
    }
    let rule = rule(&entry.compare);
    let frame = &image.frames[0];
    let stored = &expected[&format!("{stem}.stored")];
    let expected_shape: Vec<usize> = if entry.samples == 1 {
        vec![frame.rows, frame.columns]
    } else {
        vec![frame.rows, frame.columns, frame.channels]
    };
    if stored.shape != expected_shape {
        problems.push(format!(
            "shape {expected_shape:?}, pydicom {:?}",
            stored.shape
        ));
    }
    let actual: Vec<f64> = frame.values.iter().map(|&v| f64::from(v)).collect();
    let range = 2f64.powi(entry.bits_stored as i32) - 1.0;
    problems.extend(mismatch(
        "stored",
        &actual,
        &stored.values,
        rule,
        range,
        0.0,
    ));
    if let Some(display) = expected.get(&format!("{stem}.display")) {
        match image.display(0) {
            Ok(values) => {
                let actual: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
                problems.extend(mismatch(
                    "display",
                    &actual,
                    &display.values,
                    rule,
                    1.0,
                    1e-4,
                ));
            }
            Err(e) => problems.push(format!("display: {e}")),
        }
    }
    // The entry point every caller uses gives the same first frame.
    match (decode_file(path), image.to_image(0)) {
        (Ok(decoded), Ok(own)) if decoded == own => {}
        (Ok(_), Ok(_)) => problems.push("decode_file differs from to_image(0)".into()),
        (a, b) => problems.push(format!(
            "decode_file {:?} / to_image {:?}",
            a.err(),
            b.err()
        )),
    }
    problems
}

fn check_refused(path: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    for (what, result) in [
        (
            "read_file",
            dicom::read_file(path, &DicomOptions::default()).err(),
        ),
        ("decode_file", decode_file(path).err()),
    ] {
        match result {
            Some(Error::Image { path: p, message }) if p == path && !message.is_empty() => {
                let shown = Error::Image { path: p, message }.to_string();
                if !shown.contains(&name) {
                    problems.push(format!("{what}: error does not name the file: {shown}"));
                }
            }
            other => problems.push(format!("{what}: expected an image error, got {other:?}")),
        }
    }
    problems
}

fn assert_no_failures(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn shipped_fixtures_match_pydicom() {
    let mut failures = check_fixture_dir(&shipped_dir());
    if let Some(extra) = std::env::var_os("DICOM_FIXTURE_DIR") {
        let extra = PathBuf::from(extra);
        eprintln!("also checking DICOM_FIXTURE_DIR={}", extra.display());
        assert!(
            extra.join("manifest.json").is_file(),
            "DICOM_FIXTURE_DIR {} has no manifest.json",
            extra.display()
        );
        failures.extend(check_fixture_dir(&extra));
    }
    assert_no_failures(failures);
}

#[test]
#[ignore = "needs ../shared/fixtures/dicom"]
fn shared_fixtures_match_pydicom() {
    assert_no_failures(check_fixture_dir(&shared_dir()));
}

#[test]
fn refusals_say_why() {
    let files = shipped_dir().join("files");
    for (file, reason) in [
        ("rtplan.dcm", "no pixel data"),
        ("MR_truncated.dcm", "pixel data shorter than"),
        ("empty.dcm", "empty file"),
        ("text_as_dicom.dcm", "DICOM included"),
        ("preamble_only.dcm", "transfer syntax"),
        ("rtplan_truncated.dcm", "rtplan_truncated.dcm"),
    ] {
        let message = decode_file(files.join(file)).unwrap_err().to_string();
        assert!(
            message.contains(file) && message.contains(reason),
            "{file}: {message}"
        );
    }
}

#[test]
fn other_transfer_syntaxes_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jpegls.dcm");
    let bytes = dicom_writer::encapsulated(
        "1.2.840.10008.1.2.4.80",
        4,
        4,
        1,
        "MONOCHROME2",
        8,
        vec![vec![0xFF, 0xD8, 0xFF, 0xF7, 0, 0]],
    );
    std::fs::write(&path, bytes).unwrap();
    let message = decode_file(&path).unwrap_err().to_string();
    assert!(
        message.contains("jpegls.dcm")
            && message.contains("unsupported transfer syntax")
            && message.contains("JPEG-LS")
            && message.contains("1.2.840.10008.1.2.4.80"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------
// Layouts, frames, display pipeline on generated files (expected values computed by hand
// from the tags, not by the code under test).

fn mr_small() -> Vec<u8> {
    std::fs::read(shipped_dir().join("files/MR_small.dcm")).unwrap()
}

fn decoded_values(bytes: &[u8]) -> Vec<i32> {
    let image = dicom::read_bytes(bytes, Path::new("x.dcm"), &DicomOptions::default()).unwrap();
    image.frames[0].values.clone()
}

#[test]
fn files_without_preamble_or_meta_group_are_read_by_content() {
    let full = mr_small();
    assert_eq!(&full[128..132], b"DICM");
    let reference = decoded_values(&full);
    // Without the 128-byte preamble, then without the magic either.
    assert_eq!(decoded_values(&full[128..]), reference);
    assert_eq!(decoded_values(&full[132..]), reference);
    // A bare data set (implicit VR LE, no meta group), as older archives hold.
    let gray = Gray16::gradient(6, 5);
    let bare = dicom_writer::bare_data_set(&gray);
    assert!(dicom::is_dicom(&bare));
    let expected: Vec<i32> = gray.frames[0].iter().map(|&v| i32::from(v)).collect();
    assert_eq!(decoded_values(&bare), expected);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("IMAGE0001"); // no extension, as in DICOMDIR archives
    std::fs::write(&path, &bare).unwrap();
    let image = decode_file(&path).unwrap();
    assert_eq!((image.width(), image.height()), (5, 6));
}

#[test]
fn window_voi_lut_and_monochrome1_follow_the_standard() {
    // 12-bit values 0, 1000, 2000, 3000, 4095 in a 1 x 5 image.
    let stored = [0u16, 1000, 2000, 3000, 4095];
    let gray = |photometric| Gray16 {
        rows: 1,
        columns: 5,
        bits_stored: 12,
        frames: vec![stored.to_vec()],
        photometric,
        extra: Vec::new(),
    };
    let display = |bytes: Vec<u8>| {
        dicom::read_bytes(&bytes, Path::new("x.dcm"), &DicomOptions::default())
            .unwrap()
            .display(0)
            .unwrap()
    };
    let close = |got: Vec<f32>, want: [f64; 5]| {
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    };
    // LINEAR window c=2000.5, w=2001: x <= 999.5 -> 0, x > 2999.5 -> 1, else (x-2000)/2000+0.5.
    let windowed = gray("MONOCHROME2")
        .with_text(tags::WINDOW_CENTER, VR::DS, "2000.5")
        .with_text(tags::WINDOW_WIDTH, VR::DS, "2001");
    close(
        display(windowed.native(dicom_writer::EXPLICIT_LE)),
        [0.0, 0.0, 0.5, 1.0, 1.0],
    );
    // Rescale then min-max: slope -2, intercept 100 reverses the order.
    let rescaled = gray("MONOCHROME2")
        .with_text(tags::RESCALE_SLOPE, VR::DS, "-2")
        .with_text(tags::RESCALE_INTERCEPT, VR::DS, "100");
    close(
        display(rescaled.native(dicom_writer::EXPLICIT_LE)),
        [
            1.0,
            1.0 - 1000.0 / 4095.0,
            1.0 - 2000.0 / 4095.0,
            1.0 - 3000.0 / 4095.0,
            0.0,
        ],
    );
    // MONOCHROME1 is inverted after min-max.
    close(
        display(gray("MONOCHROME1").native(dicom_writer::IMPLICIT_LE)),
        [
            1.0,
            1.0 - 1000.0 / 4095.0,
            1.0 - 2000.0 / 4095.0,
            1.0 - 3000.0 / 4095.0,
            0.0,
        ],
    );
    // VOI LUT: 4 entries from 1000, 8-bit output; below 1000 -> first, above -> last.
    let mut with_lut = gray("MONOCHROME2").native(dicom_writer::EXPLICIT_LE);
    with_lut = {
        let mut obj = dicom_object::from_reader(&with_lut[128..]).unwrap();
        obj.put(dicom_writer::voi_lut_element(1000, 8, &[10, 20, 30, 255]));
        let mut out = Vec::new();
        obj.write_all(&mut out).unwrap();
        out
    };
    close(
        display(with_lut),
        [10.0 / 255.0, 10.0 / 255.0, 1.0, 1.0, 1.0],
    );
}

#[test]
fn multi_frame_gives_the_first_frame_or_all_of_them() {
    let mut gray = Gray16::gradient(4, 3);
    gray.frames = (0..3u16).map(|f| vec![f * 100 + 7; 12]).collect();
    for bytes in [gray.native(dicom_writer::EXPLICIT_LE), gray.rle()] {
        let first =
            dicom::read_bytes(&bytes, Path::new("m.dcm"), &DicomOptions::default()).unwrap();
        assert_eq!(first.frames.len(), 1);
        assert_eq!(first.info.frames, 3);
        assert!(first.frames[0].values.iter().all(|&v| v == 7));
        let options = DicomOptions {
            frames: Frames::All,
            ..DicomOptions::default()
        };
        let all = dicom::read_bytes(&bytes, Path::new("m.dcm"), &options).unwrap();
        let firsts: Vec<i32> = all.frames.iter().map(|f| f.values[0]).collect();
        assert_eq!(firsts, [7, 107, 207]);
    }
}

#[test]
fn rle_round_trips_a_12_bit_image() {
    let gray = Gray16::gradient(37, 53);
    let expected: Vec<i32> = gray.frames[0].iter().map(|&v| i32::from(v)).collect();
    assert_eq!(decoded_values(&gray.rle()), expected);
    assert_eq!(
        decoded_values(&gray.native(dicom_writer::IMPLICIT_LE)),
        expected
    );
}

// ---------------------------------------------------------------------------------------
// DICOM wherever an image is accepted.

fn hand_dicom(value: u16) -> Vec<u8> {
    let mut gray = Gray16::gradient(16, 12);
    gray.frames[0][0] = value;
    gray.with_text(tags::BODY_PART_EXAMINED, VR::CS, "WRIST")
        .native(dicom_writer::EXPLICIT_LE)
}

#[test]
fn class_folders_read_dicom_by_content_and_take_the_body_part() {
    let root = tempfile::tempdir().unwrap();
    for dir in ["Fractured", "Non_fractured"] {
        std::fs::create_dir(root.path().join(dir)).unwrap();
    }
    std::fs::write(root.path().join("Fractured/a.dcm"), hand_dicom(1)).unwrap();
    std::fs::write(root.path().join("Fractured/IM000002"), hand_dicom(2)).unwrap();
    std::fs::write(root.path().join("Non_fractured/b.DCM"), hand_dicom(3)).unwrap();
    image::GrayImage::new(8, 8)
        .save(root.path().join("Non_fractured/c.png"))
        .unwrap();
    std::fs::write(root.path().join("Non_fractured/README"), "not an image").unwrap();
    std::fs::write(root.path().join("Non_fractured/broken.dcm"), b"DICM but no").unwrap();
    let data = ImageFolder::open(root.path()).unwrap();
    assert_eq!(
        (data.counts().fractured, data.counts().not_fractured),
        (2, 2)
    );
    let names: Vec<String> = data
        .report
        .ignored
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["README"]);
    assert_eq!(data.report.unreadable.len(), 1);
    assert!(
        data.report.unreadable[0].reason.contains("DICOM"),
        "{:?}",
        data.report.unreadable
    );
    for sample in &data.samples {
        let is_png = sample.path.extension().is_some_and(|e| e == "png");
        let expected = if is_png {
            BodyPart::Unknown
        } else {
            BodyPart::Hand
        };
        assert_eq!(sample.body_part(), expected, "{}", sample.path.display());
        if !is_png {
            assert_eq!(sample.dimensions, Some((12, 16)));
        }
    }
    // FracAtlas layout without dataset.csv: the DICOM body part is kept.
    let atlas = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(atlas.path().join("images/Fractured")).unwrap();
    std::fs::create_dir_all(atlas.path().join("images/Non_fractured")).unwrap();
    std::fs::write(atlas.path().join("images/Fractured/x.dcm"), hand_dicom(4)).unwrap();
    std::fs::write(atlas.path().join("images/Non_fractured/y"), hand_dicom(5)).unwrap();
    let data = FracAtlas::open(atlas.path()).unwrap();
    assert_eq!(data.len(), 2);
    assert!(data.samples.iter().all(|s| s.body_part() == BodyPart::Hand));
}

#[test]
fn manifests_read_dicom_and_take_the_body_part() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("one"), hand_dicom(1)).unwrap();
    std::fs::write(dir.path().join("two.dcm"), hand_dicom(2)).unwrap();
    std::fs::write(
        dir.path().join("list.csv"),
        "path,label\none,fractured\ntwo.dcm,0\n",
    )
    .unwrap();
    let data = open_manifest(dir.path().join("list.csv")).unwrap();
    assert_eq!(data.len(), 2);
    assert!(data.samples.iter().all(|s| s.body_part() == BodyPart::Hand));
    // DICOM does not say whether hardware is visible: unknown, not "no hardware".
    assert!(data
        .samples
        .iter()
        .all(|s| s.metadata.as_ref().is_some_and(|m| m.hardware.is_none())));
    let labels: Vec<Label> = data.samples.iter().map(|s| s.label).collect();
    assert_eq!(labels, [Label::Fractured, Label::NotFractured]);
}

#[test]
fn an_evaluation_of_dicom_images_has_body_parts_but_no_hardware_subgroups() {
    let root = tempfile::tempdir().unwrap();
    for (dir, values) in [("Fractured", 1..5), ("Non_fractured", 5..9)] {
        std::fs::create_dir(root.path().join(dir)).unwrap();
        for v in values {
            std::fs::write(root.path().join(format!("{dir}/{v}.dcm")), hand_dicom(v)).unwrap();
        }
    }
    let data = ImageFolder::open(root.path()).unwrap();
    let part = fracture::dataset::Part {
        name: fracture::dataset::PartName::Test,
        samples: data.samples.clone(),
    };
    let evaluation = tiny_classifier().evaluate(&part).unwrap();
    let parts = evaluation
        .by_body_part
        .as_ref()
        .expect("every image has a body part");
    assert_eq!(format!("{parts}").matches("hand").count(), 1, "{parts}");
    assert!(
        evaluation.by_hardware.is_none(),
        "a hardware subgroup from images that do not say: {evaluation}"
    );
    assert!(evaluation.cases.iter().all(|c| c.hardware.is_none()));
}

// ---------------------------------------------------------------------------------------
// Acceptance 3: the encapsulated JPEG classifies exactly like the JPEG it wraps.

fn tiny_classifier() -> fracture::FractureClassifier {
    fracture::FractureClassifier::builder()
        .backbone(fracture::model::ResNetV2Config::custom(
            vec![2, 2],
            vec![4, 8],
        ))
        .weights(fracture::WeightsSource::Random { seed: 11 })
        .device(fracture::device::DeviceRequest::Cpu)
        .image_size(64, 64)
        .build()
        .unwrap()
}

#[test]
fn encapsulated_jpeg_classifies_exactly_like_its_source_jpeg() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom_jpeg");
    let (dcm, jpg) = (
        dir.join("IMG0000000_jpeg_baseline.dcm"),
        dir.join("IMG0000000.jpg"),
    );
    let (from_dicom, from_jpeg) = (decode_file(&dcm).unwrap(), decode_file(&jpg).unwrap());
    assert!(matches!(from_dicom, image::DynamicImage::ImageRgb8(_)));
    assert!(from_dicom == from_jpeg, "decoded pixels differ");
    let clf = tiny_classifier();
    let (p_dicom, p_jpeg) = (
        clf.classify_path(&dcm).unwrap().fracture_probability,
        clf.classify_path(&jpg).unwrap().fracture_probability,
    );
    eprintln!("fracture probability: DICOM {p_dicom}, JPEG {p_jpeg}");
    assert_eq!(p_dicom.to_bits(), p_jpeg.to_bits());
}

// ---------------------------------------------------------------------------------------
// Privacy: a planted patient name, ID and birth date reach no output.

const PLANTED: [&str; 4] = ["Zqxjvort", "Plantedname", "PID-7730491-ZQ", "19230417"];

fn with_patient(gray: Gray16) -> Gray16 {
    gray.with_text(tags::PATIENT_NAME, VR::PN, "Zqxjvort^Plantedname")
        .with_text(tags::PATIENT_ID, VR::LO, "PID-7730491-ZQ")
        .with_text(tags::PATIENT_BIRTH_DATE, VR::DA, "19230417")
        .with_text(tags::BODY_PART_EXAMINED, VR::CS, "HAND")
}

fn read_all_files(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_all_files(&path, out);
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
}

#[test]
fn no_patient_identifier_reaches_any_output() {
    let root = tempfile::tempdir().unwrap();
    let (fractured, normal) = (root.path().join("fractured"), root.path().join("normal"));
    std::fs::create_dir(&fractured).unwrap();
    std::fs::create_dir(&normal).unwrap();
    for i in 0..20u16 {
        let mut gray = Gray16::gradient(40, 36);
        gray.frames[0][0] = i;
        let dir = if i % 2 == 0 { &fractured } else { &normal };
        std::fs::write(
            dir.join(format!("{i}.dcm")),
            with_patient(gray).native(dicom_writer::EXPLICIT_LE),
        )
        .unwrap();
    }
    // Files that fail: pixel data cut short, an unsupported syntax, and a photometric
    // interpretation that (absurdly) holds the patient's name, to prove it is not quoted.
    let good = std::fs::read(fractured.join("0.dcm")).unwrap();
    std::fs::write(normal.join("cut.dcm"), &good[..good.len() - 300]).unwrap();
    let mut named = with_patient(Gray16::gradient(8, 8));
    named.photometric = "Zqxjvort";
    std::fs::write(
        normal.join("named.dcm"),
        named.native(dicom_writer::EXPLICIT_LE),
    )
    .unwrap();
    let jpegls = with_patient(Gray16::gradient(4, 4));
    let _ = jpegls; // the JPEG-LS file below carries no patient module of its own
    std::fs::write(
        normal.join("jpegls.dcm"),
        dicom_writer::encapsulated(
            "1.2.840.10008.1.2.4.80",
            4,
            4,
            1,
            "MONOCHROME2",
            8,
            vec![vec![0xFF, 0xD8]],
        ),
    )
    .unwrap();
    // The identifiers are really in the files (else this test could not fail).
    let raw = String::from_utf8_lossy(&good).into_owned();
    assert!(PLANTED.iter().all(|p| raw.contains(p)));

    let mut outputs = String::new();
    for entry in std::fs::read_dir(&normal).unwrap() {
        let path = entry.unwrap().path();
        for result in [
            decode_file(&path).map(|_| ()),
            dicom::read_file(&path, &DicomOptions::default())
                .map(|image| outputs.push_str(&format!("{image:?}"))),
            dicom::read_header(&std::fs::read(&path).unwrap(), &path)
                .map(|info| outputs.push_str(&format!("{info:?}"))),
        ] {
            if let Err(e) = result {
                outputs.push_str(&format!("{e}\n{e:?}\n"));
            }
        }
    }
    assert!(
        outputs.contains("<not a code string, 8 characters>"),
        "the planted photometric value was quoted: {outputs}"
    );
    let data = ImageFolder::open(root.path()).unwrap();
    outputs.push_str(&format!("{data:?}\n{}\n", data.report));
    assert_eq!(data.len(), 20);
    assert_eq!(data.report.unreadable.len(), 3);
    let mut clf = tiny_classifier();
    outputs.push_str(&format!("{:?}", clf.classify_dir(root.path()).unwrap()));
    let split = data
        .split(&fracture::dataset::SplitConfig::default())
        .unwrap();
    let config = fracture::train::TrainConfig {
        epochs: 1,
        batch_size: 4,
        progress: false,
        ..Default::default()
    };
    outputs.push_str(&format!("{:?}", clf.train(&split, config).unwrap()));
    let evaluation = clf.evaluate(&split.test).unwrap();
    outputs.push_str(&format!("{evaluation}\n{evaluation:?}\n"));
    let bundle = tempfile::tempdir().unwrap();
    clf.save(bundle.path()).unwrap();
    read_all_files(bundle.path(), &mut outputs);
    assert!(
        outputs.contains("HAND") || outputs.contains("hand"),
        "body part missing: the outputs were not gathered"
    );
    for planted in PLANTED {
        assert!(
            !outputs.contains(planted),
            "{planted} leaked into the outputs"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Fuzz: thousands of mutations of valid files give an image or an `Error`, never a panic,
// never an allocation beyond FUZZ_ALLOCATION_LIMIT.

/// The largest single allocation a decode of a mutated fixture may make. The valid files
/// need at most ~12 MB (the 1024 x 842 RGB JPEG as i32 values); a corrupted length or size
/// field that reached an allocator unchecked would ask for gigabytes.
const FUZZ_ALLOCATION_LIMIT: usize = 64 << 20;

fn fuzz_bases() -> Vec<(String, Vec<u8>)> {
    let mut bases: Vec<(String, Vec<u8>)> = [
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "MR_small_jp2klossless.dcm",
    ]
    .iter()
    .map(|f| {
        (
            f.to_string(),
            std::fs::read(shipped_dir().join("files").join(f)).unwrap(),
        )
    })
    .collect();
    let gray = Gray16::gradient(48, 40)
        .with_text(tags::WINDOW_CENTER, VR::DS, "2048")
        .with_text(tags::WINDOW_WIDTH, VR::DS, "4096");
    bases.push(("generated RLE".into(), gray.rle()));
    bases.push((
        "generated bare data set".into(),
        dicom_writer::bare_data_set(&gray),
    ));
    let mut frames = gray.clone();
    frames.frames = vec![gray.frames[0].clone(); 3];
    bases.push((
        "generated 3 frames".into(),
        frames.native(dicom_writer::EXPLICIT_LE),
    ));
    bases.push((
        "generated deflated".into(),
        gray.native("1.2.840.10008.1.2.1.99"),
    ));
    let jpeg = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dicom_jpeg/IMG0000000_jpeg_baseline.dcm");
    bases.push((
        "IMG0000000_jpeg_baseline.dcm".into(),
        std::fs::read(jpeg).unwrap(),
    ));
    bases
}

/// Offsets of the length fields of explicit VR elements (a tag, then a VR code).
fn length_fields(bytes: &[u8]) -> Vec<(usize, bool)> {
    const LONG: [&[u8; 2]; 6] = [b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC"];
    const SHORT: [&[u8; 2]; 8] = [b"US", b"UL", b"CS", b"DS", b"IS", b"UI", b"LO", b"SH"];
    let mut out = Vec::new();
    for pos in 4..bytes.len().saturating_sub(8) {
        let vr = &bytes[pos..pos + 2];
        if LONG.iter().any(|l| &l[..] == vr) && bytes[pos + 2..pos + 4] == [0, 0] {
            out.push((pos + 4, true));
        } else if SHORT.iter().any(|s| &s[..] == vr) {
            out.push((pos + 2, false));
        }
    }
    out
}

fn mutations(bytes: &[u8], rng: &mut rand_chacha::ChaCha8Rng, flips: usize) -> Vec<Vec<u8>> {
    use rand::Rng;
    let mut out = Vec::new();
    // Truncation at many offsets, dense near the start where the headers are.
    let len = bytes.len();
    let mut cuts: Vec<usize> = (0..len.min(600)).step_by(13).collect();
    cuts.extend((1..40).map(|k| len * k / 40));
    cuts.extend([len.saturating_sub(1), len.saturating_sub(2)]);
    out.extend(cuts.into_iter().map(|cut| bytes[..cut].to_vec()));
    // Random byte flips (1 to 4 bytes), three quarters of them in the first 4 KiB.
    for _ in 0..flips {
        let mut m = bytes.to_vec();
        for _ in 0..rng.random_range(1..=4) {
            let limit = if rng.random_bool(0.75) {
                len.min(4096)
            } else {
                len
            };
            let at = rng.random_range(0..limit.max(1));
            if let Some(b) = m.get_mut(at) {
                *b = rng.random();
            }
        }
        out.push(m);
    }
    // Huge length fields.
    for (at, long) in length_fields(bytes).into_iter().take(60) {
        for huge in [0xFFFF_FFF0u32, 0x7FFF_FFFF, 0x0100_0000] {
            let mut m = bytes.to_vec();
            if long {
                m[at..at + 4].copy_from_slice(&huge.to_le_bytes());
            } else {
                m[at..at + 2].copy_from_slice(&[0xFF, 0xFF]);
            }
            out.push(m);
        }
    }
    // A JPEG frame header (SOF0/SOF1) declaring 65535 lines or samples per line.
    for sof in [[0xFF, 0xC0], [0xFF, 0xC1]] {
        if let Some(at) = bytes.windows(2).position(|w| w == sof) {
            for field in [at + 5, at + 7] {
                let mut m = bytes.to_vec();
                if field + 2 <= m.len() {
                    m[field..field + 2].copy_from_slice(&[0xFF, 0xFF]);
                    out.push(m);
                }
            }
        }
    }
    // Rows and Columns at 65535 (explicit and implicit VR, little endian).
    for tag in [[0x28, 0x00, 0x10, 0x00], [0x28, 0x00, 0x11, 0x00]] {
        if let Some(at) = bytes.windows(4).position(|w| w == tag) {
            for value_at in [at + 8, at + 6] {
                let mut m = bytes.to_vec();
                if value_at + 2 <= m.len() {
                    m[value_at..value_at + 2].copy_from_slice(&[0xFF, 0xFF]);
                    out.push(m);
                }
            }
        }
    }
    out
}

#[test]
fn fuzzed_files_give_errors_never_panics_or_huge_allocations() {
    use rand::SeedableRng;
    let start = std::time::Instant::now();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
    let path = Path::new("fuzzed.dcm");
    let (mut decoded, mut refused, mut total) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for (name, bytes) in fuzz_bases() {
        // The large JPEG costs ~10 ms a decode: fewer flips.
        let flips = if bytes.len() > 50_000 { 60 } else { 200 };
        for (i, mutated) in mutations(&bytes, &mut rng, flips).into_iter().enumerate() {
            total += 1;
            let (result, largest) = largest_allocation(|| {
                std::panic::catch_unwind(|| {
                    let first = dicom::decode_first_frame(&mutated, path).map(|_| ());
                    let all = dicom::read_bytes(
                        &mutated,
                        path,
                        &DicomOptions {
                            frames: Frames::All,
                            ..DicomOptions::default()
                        },
                    )
                    .map(|_| ());
                    (first, all)
                })
            });
            if largest > FUZZ_ALLOCATION_LIMIT {
                failures.push(format!(
                    "{name} mutation {i}: allocated {largest} bytes at once"
                ));
            }
            match result {
                Err(_) => failures.push(format!("{name} mutation {i}: PANIC")),
                Ok((first, all)) => {
                    for outcome in [first, all] {
                        match outcome {
                            Ok(()) => decoded += 1,
                            Err(Error::Image { path: p, message }) if p == path => {
                                if message.contains("panic") {
                                    failures.push(format!(
                                        "{name} mutation {i}: a decoder panicked: {message}"
                                    ));
                                }
                                refused += 1;
                            }
                            Err(other) => failures.push(format!("{name} mutation {i}: {other:?}")),
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "{total} mutated files in {:?}: {decoded} decodes succeeded, {refused} refused",
        start.elapsed()
    );
    assert!(total > 2000, "only {total} mutations");
    assert!(refused > total / 2, "suspiciously few refusals: {refused}");
    assert_no_failures(failures);
}

// ---------------------------------------------------------------------------------------
// Issue 23 item 14: one picture in five containers, one model input and one probability.

/// Gray levels of a small radiograph-like picture (smooth ramps, a sharp edge, both ends of
/// the range), `rows x columns`, deterministic.
fn container_picture(rows: u32, columns: u32) -> Vec<u8> {
    (0..rows * columns)
        .map(|i| {
            let (r, c) = (i / columns, i % columns);
            let ramp = (r * 255 / (rows - 1) + c * 7) % 256;
            let edge = if (c + r / 3) % 17 < 5 { 255 } else { ramp };
            edge as u8
        })
        .collect()
}

#[test]
fn one_picture_in_every_container_gives_one_input_and_one_probability() {
    let (rows, columns) = (83u32, 70u32);
    let gray = container_picture(rows, columns);
    assert!(gray.contains(&0) && gray.contains(&255));
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    image::GrayImage::from_raw(columns, rows, gray.clone())
        .unwrap()
        .save(path("gray8.png"))
        .unwrap();
    let rgb: Vec<u8> = gray.iter().flat_map(|&g| [g; 3]).collect();
    image::RgbImage::from_raw(columns, rows, rgb)
        .unwrap()
        .save(path("rgb8.png"))
        .unwrap();
    let deep: Vec<u16> = gray.iter().map(|&g| u16::from(g) * 257).collect();
    image::ImageBuffer::<image::Luma<u16>, _>::from_raw(columns, rows, deep)
        .unwrap()
        .save(path("gray16.png"))
        .unwrap();
    // 12-bit DICOM whose display values are the gray levels: stored 16 g (MONOCHROME2) or
    // 4080 - 16 g (MONOCHROME1), LINEAR_EXACT window 0..4080, so display = g / 255.
    for (name, photometric, stored) in [
        (
            "mono2.dcm",
            "MONOCHROME2",
            gray.iter().map(|&g| u16::from(g) * 16).collect::<Vec<_>>(),
        ),
        (
            "mono1.dcm",
            "MONOCHROME1",
            gray.iter().map(|&g| 4080 - u16::from(g) * 16).collect(),
        ),
    ] {
        let file = Gray16 {
            rows: rows as u16,
            columns: columns as u16,
            bits_stored: 12,
            frames: vec![stored],
            photometric,
            extra: Vec::new(),
        }
        .with_text(tags::WINDOW_CENTER, VR::DS, "2040")
        .with_text(tags::WINDOW_WIDTH, VR::DS, "4080")
        .with_text(tags::VOILUT_FUNCTION, VR::CS, "LINEAR_EXACT")
        .native(dicom_writer::EXPLICIT_LE);
        std::fs::write(path(name), file).unwrap();
    }
    let clf = tiny_classifier();
    let preprocess = *clf.preprocess();
    let input = |name: &str| {
        let image = preprocess.load(path(name)).unwrap();
        preprocess.normalize_chw(&image).unwrap()
    };
    let reference = input("gray8.png");
    let p_reference = clf
        .classify_path(path("gray8.png"))
        .unwrap()
        .fracture_probability;
    assert!(p_reference.is_finite());
    for name in ["rgb8.png", "gray16.png", "mono2.dcm", "mono1.dcm"] {
        let other = input(name);
        assert_eq!(other.len(), reference.len());
        let worst = reference
            .iter()
            .zip(&other)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, |m, d| {
                if d.is_nan() || m.is_nan() {
                    f32::NAN
                } else {
                    m.max(d)
                }
            });
        assert!(
            worst <= 1e-5,
            "{name}: model input differs from the 8-bit gray PNG's by up to {worst}"
        );
        let p = clf.classify_path(path(name)).unwrap().fracture_probability;
        assert!(
            (p - p_reference).abs() <= 1e-6,
            "{name}: P(fracture) {p}, the 8-bit gray PNG's {p_reference}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Issue 23 item 8: Presentation LUT Shape INVERSE and Pixel Padding Value.

fn display_of(gray: &Gray16) -> Vec<f32> {
    dicom::read_bytes(
        &gray.native(dicom_writer::EXPLICIT_LE),
        Path::new("x.dcm"),
        &DicomOptions::default(),
    )
    .unwrap()
    .display(0)
    .unwrap()
}

fn assert_display(name: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}");
    for (g, w) in got.iter().zip(want) {
        // NaN fails: `!(d <= tol)`.
        let d = (f64::from(*g) - w).abs();
        assert!(d <= 1e-6, "{name}: display {got:?}, expected {want:?}");
    }
}

#[test]
fn presentation_lut_shape_inverse_inverts_a_monochrome2_display_once() {
    // Min-max over 0..4000: display = stored / 4000.
    let gray = |photometric| Gray16 {
        rows: 1,
        columns: 4,
        bits_stored: 12,
        frames: vec![vec![0u16, 1000, 3000, 4000]],
        photometric,
        extra: Vec::new(),
    };
    let plain = [0.0, 0.25, 0.75, 1.0];
    let inverted = [1.0, 0.75, 0.25, 0.0];
    assert_display("MONOCHROME2", &display_of(&gray("MONOCHROME2")), &plain);
    let inverse2 = gray("MONOCHROME2").with_text(tags::PRESENTATION_LUT_SHAPE, VR::CS, "INVERSE");
    assert_display("MONOCHROME2 + INVERSE", &display_of(&inverse2), &inverted);
    let identity2 = gray("MONOCHROME2").with_text(tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
    assert_display("MONOCHROME2 + IDENTITY", &display_of(&identity2), &plain);
    // The DX module pairs MONOCHROME1 with INVERSE: one inversion, not two.
    let inverse1 = gray("MONOCHROME1").with_text(tags::PRESENTATION_LUT_SHAPE, VR::CS, "INVERSE");
    assert_display("MONOCHROME1 + INVERSE", &display_of(&inverse1), &inverted);
    // Through the decoder: bone (high stored values) is bright again.
    let image = dicom::decode_first_frame(
        &inverse2.native(dicom_writer::EXPLICIT_LE),
        Path::new("x.dcm"),
    )
    .unwrap()
    .to_luma16();
    assert_eq!(image.into_raw(), vec![65535, 49151, 16384, 0]);
    // An unknown shape is refused, naming the attribute.
    let odd = gray("MONOCHROME2").with_text(tags::PRESENTATION_LUT_SHAPE, VR::CS, "SIDEWAYS");
    let error = dicom::read_bytes(
        &odd.native(dicom_writer::EXPLICIT_LE),
        Path::new("odd.dcm"),
        &DicomOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("Presentation LUT Shape (2050,0020)"),
        "{error}"
    );
}

#[test]
fn pixel_padding_takes_no_part_in_min_max_and_shows_black() {
    // A border of padding (0) around image values 1000..2000: min-max over the image only.
    let stored = vec![0u16, 1000, 1500, 2000, 0];
    let gray = Gray16 {
        rows: 1,
        columns: 5,
        bits_stored: 12,
        frames: vec![stored],
        photometric: "MONOCHROME2",
        extra: Vec::new(),
    }
    .with(
        tags::PIXEL_PADDING_VALUE,
        VR::US,
        dicom_core::PrimitiveValue::from(0u16),
    );
    assert_display("padding 0", &display_of(&gray), &[0.0, 0.0, 0.5, 1.0, 0.0]);
    // A range (0028,0121): 3900..4095 is padding; MONOCHROME1 inverts the image, and padding
    // stays black.
    let ranged = Gray16 {
        rows: 1,
        columns: 5,
        bits_stored: 12,
        frames: vec![vec![4095u16, 1000, 1500, 2000, 3900]],
        photometric: "MONOCHROME1",
        extra: Vec::new(),
    }
    .with(
        tags::PIXEL_PADDING_VALUE,
        VR::US,
        dicom_core::PrimitiveValue::from(4095u16),
    )
    .with(
        tags::PIXEL_PADDING_RANGE_LIMIT,
        VR::US,
        dicom_core::PrimitiveValue::from(3900u16),
    );
    assert_display(
        "padding range",
        &display_of(&ranged),
        &[0.0, 1.0, 0.5, 0.0, 0.0],
    );
}

#[test]
fn the_dicom_modules_import_no_circle() {
    // `use super::x` edges between the files of src/dataset/dicom; no path may come back.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dataset/dicom");
    let mut edges: Vec<(String, String)> = Vec::new();
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().map(str::trim_start) {
            for prefix in ["use super::", "pub use super::", "pub(crate) use super::"] {
                if let Some(rest) = line.strip_prefix(prefix) {
                    let target: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    edges.push((name.clone(), target));
                }
            }
            // `mod.rs` reaches its children with `use x::` / `pub use x::`.
            if name == "mod" {
                for prefix in ["use ", "pub use "] {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        let target: String = rest
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        edges.push((name.clone(), target));
                    }
                }
            }
        }
        modules.push(name);
    }
    let reaches = |from: &str, to: &str| {
        let mut stack = vec![from.to_string()];
        let mut seen = std::collections::HashSet::new();
        while let Some(m) = stack.pop() {
            for (a, b) in &edges {
                if *a == m {
                    if b == to {
                        return true;
                    }
                    if seen.insert(b.clone()) {
                        stack.push(b.clone());
                    }
                }
            }
        }
        false
    };
    assert!(modules.len() >= 5, "modules found: {modules:?}");
    for m in modules.iter().filter(|m| *m != "mod") {
        assert!(
            !reaches(m, m),
            "src/dataset/dicom/{m}.rs imports itself through a circle: {edges:?}"
        );
    }
}
