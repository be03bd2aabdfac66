//! The integration tests, one crate so that they link once (24 binaries took minutes to link).
//! Each module is the file of the same name beside this one; `cargo test --test suite NAME::`
//! runs one of them (e.g. `cargo test --test suite efficientnet::`). Three files build as
//! binaries of their own (see `Cargo.toml`): `fuzz_readers`, `hub` and `imagenet_weights`.

mod common;

mod annotations;
mod augment;
mod backbones;
mod box_supervision;
mod calibration;
mod dataset;
mod dataset_fracatlas;
mod dicom;
mod efficientnet;
mod end_to_end;
mod explain;
mod fast_path;
mod keras_import;
mod localization_stats;
mod metrics;
mod model;
mod operating_points;
mod parity;
mod privacy;
mod report;
mod report_browser;
mod robustness;
mod score;
mod shipped_model;
mod stage_cache;
mod train;
mod tta;
mod weights;
