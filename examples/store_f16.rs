//! Store a bundle's weights in half precision (half the size, for a model kept in a
//! repository): `model.safetensors` is rewritten in place with every `f32` tensor rounded to
//! `f16`. Score the bundle again afterwards: its numbers are those of the rounded weights.
//!
//! ```bash
//! cargo run --release --example store_f16 -- models/fracatlas-lite0-384
//! ```

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: store_f16 BUNDLE_DIR")?
        .into();
    let path = dir.join("model.safetensors");
    let before = std::fs::metadata(&path)?.len();
    let converted = fracture::weights::store_f16(&path)?;
    // The bundle must still load, with every variable.
    fracture::FractureClassifier::load(&dir, &fracture::candle_core::Device::Cpu)?;
    println!(
        "{}: {converted} tensors stored as f16, {before} -> {} bytes",
        path.display(),
        std::fs::metadata(&path)?.len()
    );
    Ok(())
}
