//! Convert Keras weights (`.h5`, `.weights.h5` or Keras-layout safetensors) into this crate's
//! safetensors: our variable names, candle layouts, the configuration in the metadata.
//!
//! ```text
//! cargo run --release --example convert_keras_weights -- \
//!     resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5 resnet152v2_imagenet.safetensors
//! ```

use candle_core::{Device, Tensor};
use clap::{Parser, ValueEnum};
use fracture::model::ResNetV2Config;
use fracture::weights::{read_tensors, save_network};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// Keras ResNet50V2.
    Resnet50v2,
    /// Keras ResNet101V2.
    Resnet101v2,
    /// Keras ResNet152V2 (the ImageNet backbone of the reference notebook).
    Resnet152v2,
}

/// Convert a Keras ResNetV2 weights file into fracture's safetensors.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Keras weights: classic `*_notop.h5`, Keras 3 `.weights.h5` or Keras-layout safetensors
    /// (recognized by content).
    input: PathBuf,
    /// Output safetensors file.
    output: PathBuf,
    /// Backbone the weights belong to.
    #[arg(long, value_enum, default_value = "resnet152v2")]
    preset: Preset,
    /// Custom blocks per stack (comma-separated), instead of a preset; needs --filters.
    #[arg(long, value_delimiter = ',', requires = "filters")]
    blocks: Option<Vec<usize>>,
    /// Custom bottleneck widths per stack (comma-separated), with --blocks.
    #[arg(long, value_delimiter = ',', requires = "blocks")]
    filters: Option<Vec<usize>>,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> fracture::Result<()> {
    let config = match (args.blocks, args.filters) {
        (Some(blocks), Some(filters)) => ResNetV2Config::custom(blocks, filters),
        _ => match args.preset {
            Preset::Resnet50v2 => ResNetV2Config::resnet50v2(),
            Preset::Resnet101v2 => ResNetV2Config::resnet101v2(),
            Preset::Resnet152v2 => ResNetV2Config::resnet152v2(),
        },
    };
    config.validate()?;

    let weights = read_tensors(&args.input, &Device::Cpu)?;
    println!("read {} ({:?})", args.input.display(), weights.format());
    let expected = config.variables();
    let report = weights.validate(&expected)?;
    for extra in &report.unexpected {
        println!(
            "  skipped (not part of the backbone): {} {:?}",
            extra.name, extra.shape
        );
    }
    let tensors = expected
        .iter()
        .map(|spec| Ok((spec.name.clone(), weights.get(&spec.name)?)))
        .collect::<fracture::Result<HashMap<String, Tensor>>>()?;
    save_network(&args.output, &tensors, &config, None)?;
    println!(
        "wrote {}: {} tensors, {} parameters (blocks {:?}, filters {:?})",
        args.output.display(),
        tensors.len(),
        config.parameter_count(),
        config.blocks,
        config.filters
    );
    Ok(())
}
