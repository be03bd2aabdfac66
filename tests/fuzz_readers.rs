//! Every file reader against bad bytes: valid files are cut short at many offsets, have bytes
//! flipped and numbers or length fields blown up, with a seeded generator, and each reader
//! must answer an `Error`, never panic, and never ask for an absurd allocation.
//!
//! A reader is one row of [`READERS`]: a name, how to make its valid files in a scratch folder,
//! and how the crate reads one file (errors are fine, panics are not). Add a row and a
//! `#[test]` calling [`fuzz`] with its name to cover a new reader. A failure names the reader,
//! the file, the mutation and the seed, so it can be replayed alone.
//!
//! Allocations go through a counting allocator: while a mutated file is read, a single request
//! over [`ALLOCATION_LIMIT`] aborts the test binary with a message naming the case (an
//! allocation that large for files of a few hundred kilobytes means a size was taken from the
//! file unchecked).

mod common;

use candle_core::Device;
use fracture::dataset::{open_manifest, FracAtlas, SplitConfig};
use fracture::preprocess::Preprocess;
use fracture::train::{EpochRecord, History};
use fracture::{FractureClassifier, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

/// The largest single allocation a reader may ask for while reading a mutated file.
const ALLOCATION_LIMIT: usize = 64 << 20;

/// One reader under test.
struct ReaderCase {
    name: &'static str,
    /// Write valid files into the scratch folder; returns the ones to mutate (any other file
    /// written there stays valid, e.g. the images a manifest lists).
    fixtures: fn(&Path) -> Vec<PathBuf>,
    /// Read one (mutated) file the way the crate does.
    read: fn(&Path) -> Result<()>,
    /// Mutated versions of each fixture file.
    mutations: usize,
}

const READERS: &[ReaderCase] = &[
    ReaderCase {
        name: "image decode",
        fixtures: image_files,
        read: read_image,
        mutations: 700,
    },
    ReaderCase {
        name: "safetensors (ours)",
        fixtures: our_safetensors,
        read: read_weights,
        mutations: 400,
    },
    ReaderCase {
        name: "safetensors (Keras names)",
        fixtures: keras_safetensors,
        read: read_weights,
        mutations: 250,
    },
    ReaderCase {
        name: "Keras HDF5",
        fixtures: keras_h5_files,
        read: read_weights,
        mutations: 250,
    },
    ReaderCase {
        name: "bundle",
        fixtures: bundle_files,
        read: read_bundle,
        mutations: 250,
    },
    ReaderCase {
        name: "CSV manifest",
        fixtures: csv_manifest,
        read: read_csv_manifest,
        mutations: 300,
    },
    ReaderCase {
        name: "split manifest",
        fixtures: split_manifest,
        read: read_split_manifest,
        mutations: 300,
    },
    ReaderCase {
        name: "FracAtlas dataset.csv",
        fixtures: fracatlas_csv,
        read: read_fracatlas,
        mutations: 200,
    },
    ReaderCase {
        name: "training history",
        fixtures: history_json,
        read: read_history,
        mutations: 200,
    },
];

#[test]
fn image_decode_survives_bad_bytes() {
    fuzz("image decode");
}

#[test]
fn our_safetensors_survive_bad_bytes() {
    fuzz("safetensors (ours)");
}

#[test]
fn keras_safetensors_survive_bad_bytes() {
    fuzz("safetensors (Keras names)");
}

#[test]
fn keras_hdf5_survives_bad_bytes() {
    fuzz("Keras HDF5");
}

#[test]
fn bundles_survive_bad_bytes() {
    fuzz("bundle");
}

#[test]
fn csv_manifests_survive_bad_bytes() {
    fuzz("CSV manifest");
}

#[test]
fn split_manifests_survive_bad_bytes() {
    fuzz("split manifest");
}

#[test]
fn fracatlas_metadata_survives_bad_bytes() {
    fuzz("FracAtlas dataset.csv");
}

#[test]
fn histories_survive_bad_bytes() {
    fuzz("training history");
}

// ---------------------------------------------------------------- the readers and their files

fn read_image(path: &Path) -> Result<()> {
    fracture::dataset::decode::decode_file(path)?;
    let preprocess = Preprocess {
        height: 32,
        width: 32,
        ..Preprocess::default()
    };
    preprocess.normalize_chw(&preprocess.load(path)?)?;
    Ok(())
}

fn image_files(dir: &Path) -> Vec<PathBuf> {
    let gray = image::GrayImage::from_fn(37, 29, |x, y| image::Luma([(x * 7 + y * 3) as u8]));
    let rgb = image::RgbImage::from_fn(23, 31, |x, y| image::Rgb([x as u8 * 9, y as u8 * 5, 77]));
    let deep = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(19, 17, |x, y| {
        image::Luma([(x * 3000 + y * 7) as u16])
    });
    let files = [
        ("gray.jpg", image::DynamicImage::ImageLuma8(gray.clone())),
        ("rgb.jpg", image::DynamicImage::ImageRgb8(rgb.clone())),
        ("gray.png", image::DynamicImage::ImageLuma8(gray)),
        ("rgb.png", image::DynamicImage::ImageRgb8(rgb)),
        ("deep.png", image::DynamicImage::ImageLuma16(deep)),
    ];
    files
        .into_iter()
        .map(|(name, image)| {
            let path = dir.join(name);
            image.save(&path).unwrap();
            path
        })
        .collect()
}

fn read_weights(path: &Path) -> Result<()> {
    let weights = fracture::weights::read_tensors(path, &Device::Cpu)?;
    for name in weights.shapes().keys() {
        weights.get(name)?;
    }
    Ok(())
}

fn our_safetensors(dir: &Path) -> Vec<PathBuf> {
    let bundle = dir.join("bundle");
    common::tiny_classifier().save(&bundle).unwrap();
    let path = dir.join("ours.safetensors");
    std::fs::copy(bundle.join("model.safetensors"), &path).unwrap();
    std::fs::remove_dir_all(bundle).unwrap();
    vec![path]
}

fn keras_safetensors(dir: &Path) -> Vec<PathBuf> {
    copy_fixtures(dir, &["weights.safetensors"])
}

fn keras_h5_files(dir: &Path) -> Vec<PathBuf> {
    copy_fixtures(
        dir,
        &["legacy_tf_keras.h5", "legacy_keras3.h5", "model.weights.h5"],
    )
}

fn copy_fixtures(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|name| {
            let path = dir.join(name);
            std::fs::copy(common::tiny_fixture(name), &path).unwrap();
            path
        })
        .collect()
}

fn read_bundle(path: &Path) -> Result<()> {
    let dir = path.parent().expect("bundle files are in a folder");
    FractureClassifier::load(dir, &Device::Cpu).map(drop)
}

fn bundle_files(dir: &Path) -> Vec<PathBuf> {
    common::tiny_classifier().save(dir).unwrap();
    vec![dir.join("bundle.json"), dir.join("model.safetensors")]
}

/// A few small images under `dir/images` (the files manifests point at).
fn listed_images(dir: &Path) -> Vec<fracture::dataset::Sample> {
    common::generated_samples(dir, 3, 16, 24)
}

fn read_csv_manifest(path: &Path) -> Result<()> {
    open_manifest(path).map(drop)
}

fn csv_manifest(dir: &Path) -> Vec<PathBuf> {
    let mut csv = String::from("path,label,note\n");
    for sample in listed_images(dir) {
        let relative = sample.path.strip_prefix(dir).unwrap();
        csv.push_str(&format!(
            "{},{},x\n",
            relative.display(),
            sample.label.name()
        ));
    }
    let path = dir.join("list.csv");
    std::fs::write(&path, csv).unwrap();
    vec![path]
}

fn read_split_manifest(path: &Path) -> Result<()> {
    fracture::dataset::Split::load_manifest(path).map(drop)
}

fn split_manifest(dir: &Path) -> Vec<PathBuf> {
    listed_images(dir);
    let split = FracAtlas::open(dir)
        .unwrap()
        .split(&SplitConfig::default())
        .unwrap();
    let path = dir.join("split.csv");
    split.save_manifest(&path).unwrap();
    vec![path]
}

fn read_fracatlas(path: &Path) -> Result<()> {
    FracAtlas::open(path.parent().expect("dataset.csv is in the root")).map(drop)
}

fn fracatlas_csv(dir: &Path) -> Vec<PathBuf> {
    listed_images(dir);
    vec![dir.join("dataset.csv")]
}

fn read_history(path: &Path) -> Result<()> {
    History::load_json(path).map(drop)
}

fn history_json(dir: &Path) -> Vec<PathBuf> {
    let epoch = |epoch: usize, val_auc: Option<f64>| EpochRecord {
        epoch,
        train_loss: 0.7 / epoch as f64,
        train_accuracy: 0.5,
        train_auc: Some(0.6),
        val_loss: 0.69,
        val_accuracy: 0.55,
        val_auc,
        learning_rate: 1e-4,
        backbone_learning_rate: None,
        seconds: 12.5,
    };
    let history = History {
        epochs: vec![epoch(1, None), epoch(2, Some(0.71))],
    };
    let path = dir.join("history.json");
    std::fs::write(&path, history.to_json().unwrap()).unwrap();
    vec![path]
}

// ------------------------------------------------------------------------------ the harness

/// Mutate every fixture file of reader `name` and read each version.
fn fuzz(name: &str) {
    let reader = READERS
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no reader {name:?} in READERS"));
    install_quiet_panic_hook();
    let scratch = tempfile::tempdir().unwrap();
    let files = (reader.fixtures)(scratch.path());
    assert!(!files.is_empty(), "{name}: no fixture files");
    let mut failures = Vec::new();
    let mut read = 0usize;
    for (f, file) in files.iter().enumerate() {
        let original = std::fs::read(file).unwrap();
        // The valid file must read: otherwise every mutation would "pass" for nothing.
        if let Err(e) = (reader.read)(file) {
            panic!(
                "{name}: the unmutated {} does not read: {e}",
                file.display()
            );
        }
        let seed = 0x5eed_0000 + f as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (i, mutation) in mutations(&original, reader.mutations, &mut rng)
            .into_iter()
            .enumerate()
        {
            let case = format!(
                "{name}: {} mutation {i} (seed {seed:#x}): {}",
                file.display(),
                mutation.description
            );
            std::fs::write(file, &mutation.bytes).unwrap();
            if let Some(failure) = read_guarded(reader.read, file, &case) {
                failures.push(failure);
            }
            read += 1;
        }
        std::fs::write(file, &original).unwrap();
    }
    eprintln!(
        "{name}: {read} mutated files read, {} failures",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {read} mutated files made the reader panic:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Read `file`; a panic becomes a failure message naming `case`.
fn read_guarded(read: fn(&Path) -> Result<()>, file: &Path, case: &str) -> Option<String> {
    set_current_case(case);
    GUARDED.with(|g| g.set(true));
    READS_IN_PROGRESS.fetch_add(1, Ordering::SeqCst);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| read(file)));
    READS_IN_PROGRESS.fetch_sub(1, Ordering::SeqCst);
    GUARDED.with(|g| g.set(false));
    match outcome {
        Ok(_) => None,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-text panic".into());
            Some(format!("{case}: panicked: {message}"))
        }
    }
}

/// One mutated version of a file and what was done to it.
struct Mutation {
    bytes: Vec<u8>,
    description: String,
}

/// `count` mutations of `original`: a third truncations, a third byte flips (mostly in the
/// first kilobytes, where headers and length fields live), a third huge numbers (length
/// fields in binary files, digit runs in text files).
fn mutations(original: &[u8], count: usize, rng: &mut ChaCha8Rng) -> Vec<Mutation> {
    let len = original.len();
    let head = len.min(4096);
    let text = std::str::from_utf8(original).is_ok();
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let mut bytes = original.to_vec();
        let description = match i % 3 {
            0 => {
                // Every offset of the first 64 bytes, then spread over the whole file.
                let at = if i / 3 < 64 {
                    (i / 3).min(len.saturating_sub(1))
                } else {
                    rng.random_range(0..len)
                };
                bytes.truncate(at);
                format!("truncated to {at} bytes")
            }
            1 => {
                let n = rng.random_range(1..=8);
                let mut at = Vec::new();
                for _ in 0..n {
                    let pos = if rng.random_bool(0.75) {
                        rng.random_range(0..head)
                    } else {
                        rng.random_range(0..len)
                    };
                    bytes[pos] = rng.random();
                    at.push(pos);
                }
                format!("bytes at {at:?} replaced")
            }
            _ if text => huge_number(&mut bytes, rng),
            _ => huge_field(&mut bytes, head, rng),
        };
        out.push(Mutation { bytes, description });
    }
    out
}

/// Overwrite 4 or 8 bytes in the head of a binary file with a huge little-endian value.
fn huge_field(bytes: &mut [u8], head: usize, rng: &mut ChaCha8Rng) -> String {
    const HUGE: [u64; 7] = [
        u64::MAX,
        1 << 63,
        u32::MAX as u64,
        (u32::MAX as u64) << 8,
        1 << 40,
        0x7fff_ffff,
        // Over the allocation limit, under the caps readers often have (100 MB).
        80 << 20,
    ];
    let value = HUGE[rng.random_range(0..HUGE.len())];
    let width = if rng.random_bool(0.5) { 8 } else { 4 };
    // Formats often start with a length (safetensors: its header's): aim there often.
    let pos = if rng.random_bool(0.2) {
        0
    } else {
        rng.random_range(0..head.saturating_sub(width).max(1))
    };
    let end = (pos + width).min(bytes.len());
    let le = value.to_le_bytes();
    bytes[pos..end].copy_from_slice(&le[..end - pos]);
    format!("{width} bytes at {pos} set to {value:#x}")
}

/// Replace one run of digits of a text file with a huge number.
fn huge_number(bytes: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> String {
    const HUGE: [&str; 4] = ["18446744073709551616", "4294967296", "1e300", "99999999999"];
    let runs: Vec<(usize, usize)> = {
        let mut runs = Vec::new();
        let mut start = None;
        for (i, b) in bytes.iter().enumerate() {
            match (b.is_ascii_digit(), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    runs.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            runs.push((s, bytes.len()));
        }
        runs
    };
    if runs.is_empty() {
        let pos = rng.random_range(0..bytes.len().max(1)).min(bytes.len());
        bytes.splice(pos..pos, HUGE[0].bytes());
        return format!("{} inserted at {pos}", HUGE[0]);
    }
    let (start, end) = runs[rng.random_range(0..runs.len())];
    let value = HUGE[rng.random_range(0..HUGE.len())];
    bytes.splice(start..end, value.bytes());
    format!("number at {start}..{end} replaced by {value}")
}

// ------------------------------------------------------- panics and allocations while reading

thread_local! {
    /// Set while a mutated file is being read on this thread (its panics are expected).
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Mutated files being read right now, on any thread. Every test of this binary is a fuzz
/// test, so while one reads, any allocation (on its thread or in a pool it uses) is checked.
static READS_IN_PROGRESS: AtomicUsize = AtomicUsize::new(0);

/// Panics of guarded reads are reported by the harness (with the case), not printed; every
/// other panic (a failed assertion) is printed as usual.
fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                default(info);
            }
        }));
    });
}

/// The case being read, for the allocator's message (a fixed buffer: the allocator must not
/// allocate).
static CURRENT_CASE: std::sync::Mutex<[u8; 512]> = std::sync::Mutex::new([0; 512]);

fn set_current_case(case: &str) {
    if let Ok(mut buffer) = CURRENT_CASE.lock() {
        buffer.fill(0);
        let n = case.len().min(buffer.len());
        buffer[..n].copy_from_slice(&case.as_bytes()[..n]);
    }
}

/// `System`, refusing (and reporting) any single allocation over [`ALLOCATION_LIMIT`] made
/// while a mutated file is read.
struct LimitingAllocator;

static REPORTING: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for LimitingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_LIMIT && guarded_now() {
            report_absurd_allocation(layout.size());
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_LIMIT && guarded_now() {
            report_absurd_allocation(layout.size());
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_LIMIT && guarded_now() {
            report_absurd_allocation(new_size);
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LimitingAllocator = LimitingAllocator;

fn guarded_now() -> bool {
    READS_IN_PROGRESS.load(Ordering::Relaxed) > 0
}

/// Write the case and the size to stderr without allocating; the failed allocation then
/// aborts the test binary.
fn report_absurd_allocation(size: usize) {
    use std::io::Write;
    if REPORTING.swap(true, Ordering::SeqCst) {
        return;
    }
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(b"\nABSURD ALLOCATION while reading a mutated file: ");
    if let Ok(buffer) = CURRENT_CASE.try_lock() {
        let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
        let _ = stderr.write_all(&buffer[..end]);
    }
    let mut digits = [0u8; 20];
    let mut n = size;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let _ = stderr.write_all(b": requested ");
    let _ = stderr.write_all(&digits[i..]);
    let _ = stderr.write_all(b" bytes\n");
    // The process aborts next: where the request came from is worth the allocations this
    // takes (they are small, and `REPORTING` keeps this from running twice).
    let _ = writeln!(stderr, "{}", std::backtrace::Backtrace::force_capture());
}
