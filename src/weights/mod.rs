//! Weights: where a network's variables come from and how Keras's names and layouts map
//! onto ours.
//!
//! Keras stores convolution kernels as HWIO `(kh, kw, in, out)` and dense kernels as
//! `(in, out)`; candle wants OIHW and `(out, in)`. Keras calls the BN variables
//! `gamma`/`beta`/`moving_mean`/`moving_variance`; candle calls them
//! `weight`/`bias`/`running_mean`/`running_var`. [`keras`] is the only place that knows
//! this mapping; every loader (safetensors in Keras layout, Keras HDF5 files) goes through it.

pub mod keras;
