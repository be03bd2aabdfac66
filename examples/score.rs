//! Score an archive of radiographs, sharded for a cluster, resumable, then merge the shards.
//!
//! ```bash
//! # One process over the whole folder (or a text file of paths):
//! cargo run --release --example score -- --model BUNDLE --input archive/ --out scores/
//! # Shard 2 of 4 (on Slurm or Kubernetes the shard comes from the environment instead):
//! cargo run --release --example score -- --model BUNDLE --input archive/ --out scores/ --shard 2/4
//! # When every shard is done: scores/scores.csv and scores/summary.json.
//! cargo run --release --example score -- --merge scores/
//! ```
//!
//! See `scripts/slurm/score.sbatch` and `deploy/kubernetes/score-job.yaml`.

use clap::Parser;
use fracture::device::{self, DeviceRequest};
use fracture::score::{self, ScoreOptions, Shard};
use fracture::FractureClassifier;
use std::path::PathBuf;

/// Score every image under a folder (or listed in a text file) into OUT/shard-I-of-N.csv, or
/// merge the shards of OUT.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A classifier bundle (`FractureClassifier::save`) or the Keras notebook's saved model.
    #[arg(long, required_unless_present = "merge")]
    model: Option<PathBuf>,
    /// A folder (every file under it) or a text file with one path per line.
    #[arg(long, required_unless_present = "merge")]
    input: Option<PathBuf>,
    /// The output folder (shard files, then scores.csv and summary.json).
    #[arg(long, required_unless_present = "merge")]
    out: Option<PathBuf>,
    /// This process's shard, I/N. Default: from SLURM_ARRAY_TASK_ID/COUNT (or MIN/MAX), or
    /// JOB_COMPLETION_INDEX with FRACTURE_SHARDS; else the whole input (0/1).
    #[arg(long)]
    shard: Option<Shard>,
    /// Images per batch (decoded in parallel, one forward pass, one synced append).
    #[arg(long, default_value_t = score::DEFAULT_BATCH)]
    batch: usize,
    /// Merge the finished shards of this folder into scores.csv and summary.json.
    #[arg(long, value_name = "OUT", conflicts_with_all = ["model", "input", "shard"])]
    merge: Option<PathBuf>,
    /// Device: cpu, cuda[:N], metal[:N] or best.
    #[arg(long, default_value = "best")]
    device: DeviceRequest,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(out) = &args.merge {
        let summary = score::merge(out)?;
        println!(
            "merged {} shards: {} images, {} scored, {} fractured, {} not scored -> {}",
            summary.shards,
            summary.images,
            summary.scored,
            summary.fractured,
            summary.errors,
            out.join(score::SCORES_CSV).display()
        );
        return Ok(());
    }
    let (Some(model), Some(input), Some(out)) = (args.model, args.input, args.out) else {
        return Err("--model, --input and --out are needed (or --merge OUT)".into());
    };
    let shard = match args.shard {
        Some(shard) => shard,
        None => Shard::from_env()?,
    };
    let device = device::select(args.device)?;
    let clf = FractureClassifier::open(&model, &device)?;
    eprintln!(
        "scoring shard {shard} of {} with model {} into {}",
        input.display(),
        clf.model_hash()?,
        out.display()
    );
    let options = ScoreOptions {
        shard,
        batch_size: args.batch,
        progress: true,
        after_batch: None,
    };
    let report = clf.score_shard(&input, &out, &options)?;
    println!(
        "shard {}: {} rows ({} this run, {} resumed, {} not scored this run)",
        report.shard, report.rows, report.added, report.resumed, report.errors
    );
    Ok(())
}
