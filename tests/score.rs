//! Scoring an archive in shards (`fracture::score`): sharded equals unsharded, a killed or
//! torn shard resumes to the same result, the merge refuses what it must, the scheduler's
//! environment gives the same shard as `--shard`, and no DICOM patient identifier leaks.

use crate::common;
use crate::common::dicom_writer;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_writer::Gray16;
use fracture::score::{merge, ScoreOptions, Shard, SCORES_CSV, SUMMARY_JSON};
use fracture::FractureClassifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Patient identifiers planted in the DICOM inputs; none may reach an output.
const PLANTED: [&str; 3] = ["Zqxjvort^Plantedname", "PID-7730491-ZQ", "19230417"];

/// A folder of 24 synthetic radiographs (JPEG, FracAtlas layout with its dataset.csv), two
/// DICOM files naming their body part and patient, and bad files: empty, not an image, a
/// JPEG cut in its header, an unsupported DICOM syntax.
fn archive(root: &Path) -> PathBuf {
    let dir = root.join("archive");
    common::generated_samples(&dir, 12, 32, 64);
    let dicom = dir.join("dicom");
    std::fs::create_dir_all(&dicom).unwrap();
    let with_patient = |gray: Gray16| {
        gray.with_text(tags::PATIENT_NAME, VR::PN, PLANTED[0])
            .with_text(tags::PATIENT_ID, VR::LO, PLANTED[1])
            .with_text(tags::PATIENT_BIRTH_DATE, VR::DA, PLANTED[2])
    };
    let wrist =
        with_patient(Gray16::gradient(40, 36)).with_text(tags::BODY_PART_EXAMINED, VR::CS, "WRIST");
    std::fs::write(
        dicom.join("wrist.dcm"),
        wrist.native(dicom_writer::EXPLICIT_LE),
    )
    .unwrap();
    let knee =
        with_patient(Gray16::gradient(36, 40)).with_text(tags::BODY_PART_EXAMINED, VR::CS, "KNEE");
    // No extension: DICOM is recognised by content.
    std::fs::write(dicom.join("knee"), knee.native(dicom_writer::EXPLICIT_LE)).unwrap();
    let mut named = with_patient(Gray16::gradient(8, 8));
    named.photometric = "Zqxjvort^Plantedname"; // an error message would quote it
    std::fs::write(
        dicom.join("named.dcm"),
        named.native(dicom_writer::EXPLICIT_LE),
    )
    .unwrap();
    std::fs::write(
        dicom.join("jpegls.dcm"),
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
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("empty.jpg"), b"").unwrap();
    std::fs::write(bad.join("notes.txt"), b"not an image").unwrap();
    std::fs::write(bad.join("cut.jpg"), [0xFF, 0xD8, 0xFF, 0xE0, 0x00]).unwrap();
    dir
}

/// Every file under `dir`, counted independently of the code under test.
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                count_files(&path)
            } else {
                1
            }
        })
        .sum()
}

fn options(shard: Shard, batch_size: usize) -> ScoreOptions {
    ScoreOptions {
        shard,
        batch_size,
        ..ScoreOptions::default()
    }
}

/// Score every shard of `count` into `out` and merge; the merged `scores.csv`.
fn score_all(
    clf: &FractureClassifier,
    input: &Path,
    out: &Path,
    count: usize,
    batch: usize,
) -> String {
    for index in 0..count {
        clf.score_shard(
            input,
            out,
            &options(Shard::new(index, count).unwrap(), batch),
        )
        .unwrap();
    }
    merge(out).unwrap();
    std::fs::read_to_string(out.join(SCORES_CSV)).unwrap()
}

fn shard_csv(out: &Path, index: usize, count: usize) -> PathBuf {
    out.join(format!("shard-{index}-of-{count}.csv"))
}

fn done_file(out: &Path, index: usize, count: usize) -> PathBuf {
    out.join(format!("shard-{index}-of-{count}.done"))
}

fn merge_error(out: &Path) -> String {
    merge(out).expect_err("the merge should refuse").to_string()
}

#[test]
fn three_shards_merged_equal_one_unsharded_run_with_a_summary_and_no_patient_data() {
    let tmp = tempfile::tempdir().unwrap();
    let input = archive(tmp.path());
    let clf = common::tiny_classifier();
    let whole = score_all(&clf, &input, &tmp.path().join("whole"), 1, 8);
    let sharded = score_all(&clf, &input, &tmp.path().join("sharded"), 3, 3);
    assert_eq!(
        whole, sharded,
        "3 shards merged differ from the unsharded run"
    );

    let lines: Vec<&str> = whole.lines().collect();
    assert_eq!(
        lines[0],
        "path,sha256,p_fracture,fractured,threshold,model,body_part,error"
    );
    assert_eq!(lines.len() - 1, count_files(&input), "one row per file");
    let paths: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "rows sorted by path");
    // Every shard holds some of the 31 files.
    for index in 0..3 {
        let rows =
            std::fs::read_to_string(shard_csv(&tmp.path().join("sharded"), index, 3)).unwrap();
        assert!(
            rows.lines().count() > 3,
            "shard {index} holds too few rows:\n{rows}"
        );
    }
    let row = |path: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{path},")))
            .copied()
            .unwrap()
    };
    assert!(
        row("bad/empty.jpg").ends_with(",empty: empty file (0 bytes)"),
        "{}",
        row("bad/empty.jpg")
    );
    assert!(
        row("bad/notes.txt").contains(",\"not-an-image: not an image"),
        "{}",
        row("bad/notes.txt")
    );
    assert!(row("dicom/jpegls.dcm").contains(",unsupported-dicom-syntax: "));
    assert!(
        row("dicom/wrist.dcm").contains(",hand,"),
        "{}",
        row("dicom/wrist.dcm")
    );
    assert!(row("dicom/knee").contains(",leg,"), "{}", row("dicom/knee"));
    let sha = sha2_hex(&std::fs::read(input.join("bad/notes.txt")).unwrap());
    assert!(row("bad/notes.txt").contains(&format!(",{sha},")));

    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("sharded").join(SUMMARY_JSON)).unwrap(),
    )
    .unwrap();
    let scored = lines[1..].iter().filter(|l| l.ends_with(',')).count();
    let fractured = lines[1..]
        .iter()
        .filter(|l| l.ends_with(',') && l.split(',').nth(3) == Some("1"))
        .count();
    assert_eq!(summary["images"], lines.len() - 1);
    assert_eq!(summary["scored"], scored);
    assert_eq!(summary["fractured"], fractured);
    assert_eq!(summary["shards"], 3);
    assert_eq!(summary["model"], clf.model_hash().unwrap());
    assert_eq!(summary["body_parts"]["hand"]["scored"], 1);
    assert_eq!(summary["body_parts"]["leg"]["scored"], 1);
    assert_eq!(summary["errors_by_kind"]["empty"], 1);
    // 24 JPEGs and 2 DICOM are images; dataset.csv, annotations and the bad files are not.
    assert_eq!(scored, 26, "{whole}");

    for out in ["whole", "sharded"] {
        for entry in std::fs::read_dir(tmp.path().join(out)).unwrap() {
            let text = String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap())
                .into_owned();
            for planted in PLANTED {
                assert!(!text.contains(planted), "{planted} reached {out}");
            }
        }
    }
}

fn sha2_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_list_of_paths_in_any_order_scores_like_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let input = archive(tmp.path());
    let clf = common::tiny_classifier();
    let from_folder = score_all(&clf, &input, &tmp.path().join("folder"), 2, 4);
    let rows: Vec<String> = from_folder
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    let mut listed: Vec<String> = rows.iter().rev().cloned().collect();
    listed.push(rows[0].clone()); // listed twice: scored once
    std::fs::write(input.join("list.txt"), listed.join("\n")).unwrap();
    let from_list = score_all(
        &clf,
        &input.join("list.txt"),
        &tmp.path().join("list"),
        2,
        5,
    );
    assert_eq!(from_folder, from_list);
}

/// Run by `a_shard_killed_with_sigkill_resumes_to_the_same_scores` in a child process: score a
/// shard and stop for good after its first batch, waiting to be killed.
#[test]
#[ignore = "a helper process: runs only when spawned with FRACTURE_SCORE_CHILD set"]
fn child_scores_until_killed() {
    let Ok(spec) = std::env::var("FRACTURE_SCORE_CHILD") else {
        return;
    };
    let mut parts = spec.split('|');
    let (bundle, input, out) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let clf = FractureClassifier::load(bundle, &candle_core::Device::Cpu).unwrap();
    let stop: fracture::score::AfterBatch = Arc::new(|_rows| loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    });
    let options = ScoreOptions {
        after_batch: Some(stop),
        ..options(Shard::new(1, 3).unwrap(), 2)
    };
    clf.score_shard(input, out, &options).unwrap();
}

#[test]
fn a_shard_killed_with_sigkill_resumes_to_the_same_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let input = archive(tmp.path());
    let clf = common::tiny_classifier();
    let bundle = tmp.path().join("bundle");
    clf.save(&bundle).unwrap();
    let reference = score_all(&clf, &input, &tmp.path().join("reference"), 1, 8);

    let out = tmp.path().join("out");
    let spec = format!("{}|{}|{}", bundle.display(), input.display(), out.display());
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "score::child_scores_until_killed",
            "--include-ignored",
            "--nocapture",
        ])
        .env("FRACTURE_SCORE_CHILD", spec)
        .spawn()
        .unwrap();
    let csv = shard_csv(&out, 1, 3);
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&csv).map_or(0, |t| t.lines().count()) < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before it was killed"
        );
        assert!(
            started.elapsed().as_secs() < 120,
            "the child wrote no batch in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        !done_file(&out, 1, 3).exists(),
        "a killed shard is not done"
    );
    let written = std::fs::read_to_string(&csv).unwrap().lines().count() - 1;
    assert_eq!(written, 2, "the child stops after its first batch of 2");

    let report = clf
        .score_shard(&input, &out, &options(Shard::new(1, 3).unwrap(), 2))
        .unwrap();
    assert_eq!(report.resumed, 2);
    assert_eq!(report.rows, report.resumed + report.added);
    assert_eq!(score_all(&clf, &input, &out, 3, 2), reference);
}

#[test]
fn a_torn_last_line_is_cut_off_and_the_row_scored_again() {
    let tmp = tempfile::tempdir().unwrap();
    let input = archive(tmp.path());
    let clf = common::tiny_classifier();
    let reference = score_all(&clf, &input, &tmp.path().join("reference"), 1, 8);
    let out = tmp.path().join("out");
    score_all(&clf, &input, &out, 3, 4);
    let csv = shard_csv(&out, 0, 3);
    let full = std::fs::read(&csv).unwrap();
    let rows = full.iter().filter(|&&b| b == b'\n').count() - 1;
    // Cut the last row in the middle of its sha256 (a writer killed inside `write`).
    let last_start = full[..full.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    std::fs::write(&csv, &full[..last_start + 20]).unwrap();
    std::fs::remove_file(done_file(&out, 0, 3)).unwrap();
    assert!(merge_error(&out).contains("not done"));

    let report = clf
        .score_shard(&input, &out, &options(Shard::new(0, 3).unwrap(), 4))
        .unwrap();
    assert_eq!((report.resumed, report.added), (rows - 1, 1));
    assert_eq!(
        std::fs::read(&csv).unwrap().len(),
        full.len(),
        "the torn line was replaced"
    );
    merge(&out).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join(SCORES_CSV)).unwrap(),
        reference
    );
}

#[test]
fn the_merge_refuses_a_missing_unfinished_duplicated_foreign_or_miscounted_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let input = archive(tmp.path());
    let clf = common::tiny_classifier();
    let good = tmp.path().join("good");
    score_all(&clf, &input, &good, 3, 8);
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&good).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        dir
    };

    let missing = fresh("missing");
    std::fs::remove_file(shard_csv(&missing, 2, 3)).unwrap();
    let message = merge_error(&missing);
    assert!(
        message.contains("shard missing: shard-2-of-3.csv"),
        "{message}"
    );

    let unfinished = fresh("unfinished");
    std::fs::remove_file(done_file(&unfinished, 1, 3)).unwrap();
    let message = merge_error(&unfinished);
    assert!(
        message.contains("not done") && message.contains("shard-1-of-3.csv"),
        "{message}"
    );

    // A row of shard 0 appended to shard 1 (its marker's count updated to match).
    let duplicated = fresh("duplicated");
    let first_row = std::fs::read_to_string(shard_csv(&duplicated, 0, 3))
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let mut shard1 = std::fs::read_to_string(shard_csv(&duplicated, 1, 3)).unwrap();
    shard1.push_str(&format!("{first_row}\n"));
    std::fs::write(shard_csv(&duplicated, 1, 3), shard1).unwrap();
    let mut marker: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(done_file(&duplicated, 1, 3)).unwrap())
            .unwrap();
    marker["rows"] = (marker["rows"].as_u64().unwrap() + 1).into();
    std::fs::write(done_file(&duplicated, 1, 3), marker.to_string()).unwrap();
    let message = merge_error(&duplicated);
    let path = first_row.split(',').next().unwrap();
    assert!(
        message.contains("duplicate")
            && message.contains(path)
            && message.contains("shard-0-of-3.csv")
            && message.contains("shard-1-of-3.csv"),
        "{message}"
    );

    // Shard 2 scored by another model: the merge refuses it, and so does a rerun into it.
    let foreign = fresh("foreign");
    let other = FractureClassifier::builder()
        .backbone(fracture::model::ResNetV2Config::custom(
            vec![2, 2],
            vec![4, 8],
        ))
        .weights(fracture::WeightsSource::Random { seed: 4 })
        .device(fracture::device::DeviceRequest::Cpu)
        .image_size(48, 48)
        .build()
        .unwrap();
    assert_ne!(other.model_hash().unwrap(), clf.model_hash().unwrap());
    let elsewhere = tmp.path().join("elsewhere");
    other
        .score_shard(&input, &elsewhere, &options(Shard::new(2, 3).unwrap(), 8))
        .unwrap();
    for path in [shard_csv(&elsewhere, 2, 3), done_file(&elsewhere, 2, 3)] {
        std::fs::copy(&path, foreign.join(path.file_name().unwrap())).unwrap();
    }
    let message = merge_error(&foreign);
    assert!(
        message.contains("shard-2-of-3.csv") && message.contains("another model"),
        "{message}"
    );
    let message = other
        .score_shard(&input, &good, &options(Shard::new(0, 3).unwrap(), 8))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("shard-0-of-3.csv") && message.contains("another output folder"),
        "{message}"
    );

    // Another count: a 2-shard run's file in a 3-shard folder; and a 2-shard run into it.
    let miscounted = fresh("miscounted");
    std::fs::copy(shard_csv(&good, 0, 3), shard_csv(&miscounted, 0, 2)).unwrap();
    let message = merge_error(&miscounted);
    assert!(
        message.contains("different counts") && message.contains("shard-0-of-2.csv"),
        "{message}"
    );
    let message = clf
        .score_shard(&input, &good, &options(Shard::new(0, 2).unwrap(), 8))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("3 shards") && message.contains("in 2"),
        "{message}"
    );

    // The untouched folder still merges.
    merge(&good).unwrap();
}

#[test]
fn the_schedulers_environment_gives_the_shard_that_shard_i_of_n_names() {
    let vars = |pairs: Vec<(&'static str, String)>| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }
    };
    for count in 1..=6usize {
        for index in 0..count {
            let flag: Shard = format!("{index}/{count}").parse().unwrap();
            let k8s = vars(vec![
                ("JOB_COMPLETION_INDEX", index.to_string()),
                ("FRACTURE_SHARDS", count.to_string()),
            ]);
            assert_eq!(Shard::from_vars(k8s).unwrap(), flag);
            // sbatch --array=0-(N-1): Slurm 22.05 sets ID, COUNT, MIN and MAX.
            let slurm = vars(vec![
                ("SLURM_ARRAY_TASK_ID", index.to_string()),
                ("SLURM_ARRAY_TASK_COUNT", count.to_string()),
                ("SLURM_ARRAY_TASK_MIN", "0".into()),
                ("SLURM_ARRAY_TASK_MAX", (count - 1).to_string()),
            ]);
            assert_eq!(Shard::from_vars(slurm).unwrap(), flag);
            // --array=1-N without COUNT: MIN and MAX.
            let one_based = vars(vec![
                ("SLURM_ARRAY_TASK_ID", (index + 1).to_string()),
                ("SLURM_ARRAY_TASK_MIN", "1".into()),
                ("SLURM_ARRAY_TASK_MAX", count.to_string()),
            ]);
            assert_eq!(Shard::from_vars(one_based).unwrap(), flag);
        }
    }
    // Refused: an index past the count, an index without a count, a non-number.
    let refused = [
        vec![
            ("JOB_COMPLETION_INDEX", "3".to_string()),
            ("FRACTURE_SHARDS", "3".to_string()),
        ],
        vec![("JOB_COMPLETION_INDEX", "0".to_string())],
        vec![
            ("SLURM_ARRAY_TASK_ID", "x".to_string()),
            ("SLURM_ARRAY_TASK_COUNT", "2".to_string()),
        ],
        vec![("SLURM_ARRAY_TASK_ID", "2".to_string())],
    ];
    for pairs in refused {
        let described = format!("{pairs:?}");
        assert!(
            Shard::from_vars(vars(pairs)).is_err(),
            "{described} accepted"
        );
    }
    // The same shard scores the same paths whichever way it was named.
    let tmp = tempfile::tempdir().unwrap();
    let input = archive(tmp.path());
    let clf = common::tiny_classifier();
    let from_env = Shard::from_vars(vars(vec![
        ("JOB_COMPLETION_INDEX", "1".into()),
        ("FRACTURE_SHARDS", "3".into()),
    ]))
    .unwrap();
    clf.score_shard(&input, tmp.path().join("env"), &options(from_env, 8))
        .unwrap();
    clf.score_shard(
        &input,
        tmp.path().join("flag"),
        &options("1/3".parse().unwrap(), 8),
    )
    .unwrap();
    let read = |dir: &str| std::fs::read(shard_csv(&tmp.path().join(dir), 1, 3)).unwrap();
    assert_eq!(read("env"), read("flag"));
}

#[test]
fn a_slurm_task_resubmitted_alone_keeps_its_shard_when_the_count_is_named() {
    let vars = |pairs: Vec<(&'static str, &'static str)>| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    // `sbatch --array=1` alone: Slurm says task 1 of an array of 1.
    let alone = vec![
        ("SLURM_ARRAY_TASK_ID", "1"),
        ("SLURM_ARRAY_TASK_COUNT", "1"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_MAX", "1"),
    ];
    assert_eq!(Shard::from_vars(vars(alone.clone())).unwrap(), Shard::ALL);
    let mut named = alone;
    named.push(("FRACTURE_SHARDS", "4"));
    assert_eq!(
        Shard::from_vars(vars(named)).unwrap(),
        "1/4".parse().unwrap()
    );
}
