//! The forward pass of [`FastEfficientNetLite`](super::FastEfficientNetLite) at
//! [`Precision::Bf16`](crate::model::Precision).
//!
//! The pointwise convolutions (expansion, projection, head) run on bf16 inputs and weights with
//! f32 accumulation ([`crate::model::cpu::bf16`]); the depthwise convolutions read and write
//! bf16 activations and compute in f32 ([`Bf16Depthwise`]). The stem stays f32 (3 input
//! channels, a direct kernel). Each block's output is kept twice: in f32 for the next block's
//! residual add and the taps, and in bf16 for the next block's first convolution.

use super::kernels::{Depthwise, Pointwise};
use super::{ensure, FastEfficientNetLite, Recorder, Workspace};
use crate::error::{Error, Result};
use crate::model::cpu::bf16::{self, pair, unpair, words, Act, Bf16Conv, Dst, Kernel};
use crate::model::cpu::{team, Nhwc, SharedMut};
use crate::model::efficientnet::arch::same_padding;
use crate::model::efficientnet::simd::vectorized;

/// Words (channel pairs) per block of the depthwise kernel: 32 channels, two vectors.
const WORDS: usize = 16;

/// A depthwise convolution on bf16 activations, in f32: per tap and block of [`WORDS`]
/// words, the weights of the block's even channels then of its odd ones (the two halves of
/// the words), zeros past the last channel.
#[derive(Debug, Clone)]
pub(super) struct Bf16Depthwise {
    channels: usize,
    kernel: usize,
    stride: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// Reorder per-channel values `v[c]` (of `channels`) into blocks of even then odd channels.
fn split_pairs(v: &[f32], channels: usize) -> Vec<f32> {
    let blocks = channels.div_ceil(2).div_ceil(WORDS);
    let mut out = vec![0f32; blocks * 2 * WORDS];
    for (c, &x) in v.iter().enumerate().take(channels) {
        let (q, odd) = (c / 2, c % 2);
        out[(q / WORDS) * 2 * WORDS + odd * WORDS + q % WORDS] = x;
    }
    out
}

impl Bf16Depthwise {
    fn new(dw: &Depthwise) -> Self {
        let c = dw.channels;
        let weight = dw
            .weight
            .chunks_exact(c)
            .flat_map(|tap| split_pairs(tap, c))
            .collect();
        Self {
            channels: c,
            kernel: dw.kernel,
            stride: dw.stride,
            weight,
            bias: split_pairs(&dw.bias, c),
        }
    }

    fn out_shape(&self, xs: Nhwc) -> Nhwc {
        Nhwc {
            h: xs.h.div_ceil(self.stride),
            w: xs.w.div_ceil(self.stride),
            ..xs
        }
    }

    /// `out = bf16(relu6(depthwise(x) + bias))` with "SAME" padding, parallel over rows.
    fn run(&self, x: &[u32], xs: Nhwc, out: &mut [u32]) -> Result<Nhwc> {
        let (c, k) = (self.channels, self.kernel);
        let os = self.out_shape(xs);
        let cp = c.div_ceil(2);
        if xs.c != c {
            return Err(Error::Internal(format!(
                "fast EfficientNet-Lite bf16: a depthwise convolution of {c} channels got {}",
                xs.c
            )));
        }
        if x.len() < words(xs) || out.len() < words(os) {
            return Err(crate::model::cpu::length_error(
                "bf16 depthwise",
                words(xs),
                x.len(),
            ));
        }
        let (top, _) = same_padding(xs.h, k, self.stride);
        let (left, _) = same_padding(xs.w, k, self.stride);
        let dst = SharedMut(out.as_mut_ptr());
        team::for_each(os.n * os.h, |row| {
            let (b, oy) = (row / os.h, row % os.h);
            // SAFETY: output row `row` belongs to this item (the output was checked above).
            let out_row = unsafe { dst.slice(row * os.w * cp, os.w * cp) };
            let rows: Vec<Option<&[u32]>> = (0..k)
                .map(|ky| {
                    (oy * self.stride + ky)
                        .checked_sub(top)
                        .filter(|&iy| iy < xs.h)
                        .map(|iy| &x[(b * xs.h + iy) * xs.w * cp..(b * xs.h + iy + 1) * xs.w * cp])
                })
                .collect();
            depthwise_row(self, &rows, xs.w, left, out_row);
        });
        Ok(os)
    }

    /// One output row from the `k` input rows it reads (`None`: padding).
    #[inline(always)]
    fn row(&self, rows: &[Option<&[u32]>], w: usize, left: usize, out: &mut [u32]) {
        let (k, s) = (self.kernel, self.stride);
        let cp = self.channels.div_ceil(2);
        let blocks = cp.div_ceil(WORDS);
        for (ox, px) in out.chunks_exact_mut(cp).enumerate() {
            // Input columns ox * s + kx - left that exist.
            let kx0 = left.saturating_sub(ox * s);
            let kx1 = (w + left).saturating_sub(ox * s).min(k);
            for blk in 0..blocks {
                let q0 = blk * WORDS;
                let nq = WORDS.min(cp - q0);
                let mut even = [0f32; WORDS];
                let mut odd = [0f32; WORDS];
                let b = &self.bias[blk * 2 * WORDS..(blk + 1) * 2 * WORDS];
                even.copy_from_slice(&b[..WORDS]);
                odd.copy_from_slice(&b[WORDS..]);
                for (ky, row) in rows.iter().enumerate() {
                    let Some(row) = row else { continue };
                    for kx in kx0..kx1 {
                        let at = (ox * s + kx - left) * cp + q0;
                        let wt =
                            &self.weight[((ky * k + kx) * blocks + blk) * 2 * WORDS..][..2 * WORDS];
                        if nq == WORDS {
                            let xin = &row[at..at + WORDS];
                            for i in 0..WORDS {
                                let (lo, hi) = unpair(xin[i]);
                                even[i] += wt[i] * lo;
                                odd[i] += wt[WORDS + i] * hi;
                            }
                        } else {
                            for (i, &word) in row[at..at + nq].iter().enumerate() {
                                let (lo, hi) = unpair(word);
                                even[i] += wt[i] * lo;
                                odd[i] += wt[WORDS + i] * hi;
                            }
                        }
                    }
                }
                for (i, o) in px[q0..q0 + nq].iter_mut().enumerate() {
                    *o = pair(even[i].clamp(0.0, 6.0), odd[i].clamp(0.0, 6.0));
                }
            }
        }
    }
}

vectorized!(fn depthwise_row(
    dw: &Bf16Depthwise,
    rows: &[Option<&[u32]>],
    w: usize,
    left: usize,
    out: &mut [u32],
) => Bf16Depthwise::row);

/// The bf16 weights of one block.
#[derive(Debug, Clone)]
struct Bf16Block {
    expand: Option<Bf16Conv>,
    depthwise: Bf16Depthwise,
    project: Bf16Conv,
}

/// Every convolution but the stem with its weights rounded to bf16 and packed (once, when the
/// precision is chosen), and the kernel that runs them.
#[derive(Debug, Clone)]
pub(super) struct Bf16Plan {
    kernel: Kernel,
    blocks: Vec<Bf16Block>,
    head: Bf16Conv,
}

/// The bf16 activations of one pass, kept between calls.
#[derive(Debug, Default)]
pub(super) struct Bf16Workspace {
    cur: Vec<u32>,
    expanded: Vec<u32>,
    filtered: Vec<u32>,
}

fn pointwise(pw: &Pointwise) -> Result<Bf16Conv> {
    Bf16Conv::from_hwio(&pw.weight, [pw.c_out, pw.c_in, 1], 1, 0, &pw.bias)
}

fn ensure_words(buf: &mut Vec<u32>, len: usize) -> &mut [u32] {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    &mut buf[..len]
}

impl Bf16Plan {
    /// Round and pack the f32 path's folded weights for `kernel`.
    pub(super) fn new(net: &FastEfficientNetLite, kernel: Kernel) -> Result<Self> {
        let blocks = net
            .blocks
            .iter()
            .map(|b| {
                Ok(Bf16Block {
                    expand: b.expand.as_ref().map(pointwise).transpose()?,
                    depthwise: Bf16Depthwise::new(&b.depthwise),
                    project: pointwise(&b.project)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            kernel,
            blocks,
            head: pointwise(&net.head)?,
        })
    }

    pub(super) fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The network on `ws.input` (NHWC f32, geometry `xs`): the features (f32) and their
    /// geometry; the taps recorded as the f32 path records them.
    pub(super) fn run(
        &self,
        net: &FastEfficientNetLite,
        ws: &mut Workspace,
        xs: Nhwc,
        rec: &mut Recorder<'_>,
    ) -> Result<(Vec<f32>, Nhwc)> {
        let k = self.kernel;
        let Workspace {
            input,
            x: cur,
            y: next,
            bf,
            ..
        } = ws;
        let mut shape = net.stem.out_shape(xs);
        net.stem.run(input, xs, ensure(cur, shape.len()))?;
        rec.mark(|| "stem/conv3x3_s2_relu6".into());
        if rec.tap(cur, shape) {
            return Ok((Vec::new(), shape));
        }
        bf16::to_bf16_activation(cur, shape, ensure_words(&mut bf.cur, words(shape)))?;
        rec.mark(|| "stem/to_bf16".into());
        let mut stage = 0;
        for (i, (block, plan)) in net.blocks.iter().zip(&self.blocks).enumerate() {
            let es = match &plan.expand {
                Some(pw) => {
                    let es = shape.with_channels(pw.c_out);
                    let out = ensure_words(&mut bf.expanded, words(es));
                    bf16::conv(k, pw, &bf.cur, shape, Dst::Bf16(out, Act::Relu6))?;
                    rec.mark(|| format!("{}/expand_relu6", block.name));
                    es
                }
                None => shape,
            };
            let source: &[u32] = if plan.expand.is_some() {
                &bf.expanded
            } else {
                &bf.cur
            };
            let dw = &plan.depthwise;
            let ds = dw.out_shape(es);
            dw.run(source, es, ensure_words(&mut bf.filtered, words(ds)))?;
            rec.mark(|| {
                format!(
                    "{}/dw{}x{}_s{}_relu6",
                    block.name, dw.kernel, dw.kernel, dw.stride
                )
            });
            let os = ds.with_channels(plan.project.c_out);
            let copy = ensure_words(&mut bf.cur, words(os));
            if block.residual {
                let out = cur.get_mut(..os.len()).ok_or_else(|| {
                    Error::Internal(
                        "fast EfficientNet-Lite bf16: residual shorter than the output".into(),
                    )
                })?;
                bf16::conv(
                    k,
                    &plan.project,
                    &bf.filtered,
                    ds,
                    Dst::Stream(out, true, copy),
                )?;
            } else {
                let out = ensure(next, os.len());
                bf16::conv(
                    k,
                    &plan.project,
                    &bf.filtered,
                    ds,
                    Dst::Stream(out, false, copy),
                )?;
                std::mem::swap(cur, next);
            }
            rec.mark(|| format!("{}/project", block.name));
            shape = os;
            if net.stage_ends.get(stage) == Some(&i) {
                if rec.tap(cur, shape) {
                    return Ok((Vec::new(), shape));
                }
                stage += 1;
            }
        }
        let fs = shape.with_channels(self.head.c_out);
        let out = ensure(next, fs.len());
        bf16::conv(k, &self.head, &bf.cur, shape, Dst::F32(out, Act::Relu6))?;
        rec.mark(|| "head/conv1x1_relu6".into());
        Ok((next[..fs.len()].to_vec(), fs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cpu::bf16::tests::assert_features_close;
    use crate::model::efficientnet::lite::EfficientNetLite;
    use crate::model::testing::seeded_values;
    use crate::model::{EfficientNetLiteConfig, Precision};
    use candle_core::{DType, Device, Tensor};
    use std::collections::HashMap;

    /// Lite0's stages at a quarter of the width and half the depth (channels 8 to 80, so the
    /// depthwise kernel meets both full blocks of 32 channels and shorter tails).
    fn config() -> EfficientNetLiteConfig {
        let mut c = EfficientNetLiteConfig::lite0();
        c.width_multiplier = 0.25;
        c.depth_multiplier = 0.5;
        c.stem_channels = 8;
        c.head_channels = 48;
        c
    }

    /// A fast path with seeded weights: batch norms far from the identity, kernels scaled to
    /// keep the activations of order one.
    fn seeded(config: &EfficientNetLiteConfig) -> FastEfficientNetLite {
        let tensors: HashMap<String, Tensor> = config
            .variables()
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let n: usize = spec.shape.iter().product();
                let v = seeded_values(n, 1000 + i as u64);
                let name = &spec.name;
                let bn = name.contains("bn");
                let v: Vec<f32> =
                    if name.ends_with("running_var") || (bn && name.ends_with(".weight")) {
                        v.iter().map(|v| 1.0 + 0.5 * v).collect()
                    } else if name.ends_with("running_mean") || name.ends_with(".bias") {
                        v.iter().map(|v| 0.3 * v).collect()
                    } else {
                        let fan_in: usize = spec.shape[1..].iter().product();
                        let s = (3.0 / fan_in as f32).sqrt();
                        v.iter().map(|v| v * s).collect()
                    };
                let t = Tensor::from_vec(v, spec.shape.as_slice(), &Device::Cpu).unwrap();
                (spec.name, t)
            })
            .collect();
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let net = EfficientNetLite::new(config, vb).unwrap();
        FastEfficientNetLite::from_model(&net).unwrap()
    }

    fn features(net: &FastEfficientNetLite, x: &Tensor) -> Vec<f32> {
        net.run_plain(x).unwrap().0
    }

    fn input(n: usize, side: usize) -> Tensor {
        let v = seeded_values(n * 3 * side * side, 43);
        Tensor::from_vec(v, (n, 3, side, side), &Device::Cpu).unwrap()
    }

    /// The bf16 depthwise kernel computes what the f32 one computes on the rounded inputs, in
    /// the same order: its outputs are the f32 kernel's rounded to bf16, to the bit.
    #[test]
    fn bf16_depthwise_is_the_f32_depthwise_of_the_rounded_input_rounded() {
        for (c, k, stride, h, w) in [
            (8, 3, 1, 5, 6),
            (48, 5, 2, 9, 7),
            (70, 3, 2, 4, 4),
            (33, 3, 1, 3, 5),
        ] {
            let weight: Vec<f32> = seeded_values(k * k * c, 7)
                .iter()
                .map(|v| v * 0.5)
                .collect();
            let dw = Depthwise {
                channels: c,
                kernel: k,
                stride,
                weight,
                bias: seeded_values(c, 8),
            };
            let xs = Nhwc { n: 2, h, w, c };
            let x: Vec<f32> = seeded_values(xs.len(), 9)
                .iter()
                .map(|v| 3.0 * v + 1.0)
                .collect();
            let mut xb = vec![0u32; words(xs)];
            bf16::to_bf16_activation(&x, xs, &mut xb).unwrap();
            // The rounded input in f32, through the f32 kernel.
            let rounded: Vec<f32> = (0..xs.len())
                .map(|i| {
                    let (px, ch) = (i / c, i % c);
                    let (lo, hi) = unpair(xb[px * c.div_ceil(2) + ch / 2]);
                    if ch % 2 == 0 {
                        lo
                    } else {
                        hi
                    }
                })
                .collect();
            let os = dw.out_shape(xs);
            let mut want = vec![0f32; os.len()];
            dw.run(&rounded, xs, &mut want).unwrap();
            let mut want_b = vec![0u32; words(os)];
            bf16::to_bf16_activation(&want, os, &mut want_b).unwrap();
            let mut got = vec![u32::MAX; words(os)];
            Bf16Depthwise::new(&dw).run(&xb, xs, &mut got).unwrap();
            assert_eq!(got, want_b, "{c} channels, {k}x{k} stride {stride}");
        }
    }

    /// bf16 rounds the inputs and weights of every pointwise convolution and the activations
    /// the depthwise ones read (relative error up to 2^-9 each), through every block: the
    /// features stay within 1.5 % of their largest value, and within 0.2 % of it on average
    /// (measured: 0.41 % and 0.044 %).
    #[test]
    fn bf16_features_stay_within_tolerance_of_f32_on_a_seeded_network() {
        let net = seeded(&config());
        let x = input(2, 45);
        let want = features(&net, &x);
        for kernel in Kernel::testable() {
            let mut bf = net.clone();
            bf.set_bf16_kernel(kernel).unwrap();
            assert_eq!(bf.bf16_kernel(), Some(kernel));
            let got = features(&bf, &x);
            assert_features_close("Lite", kernel, &got, &want, 0.015, 0.002);
        }
    }

    /// The `vdpbf16ps` kernel's forward equals the reference's to the bit. AMX's sums differ
    /// from the reference's by f32 ulps (the kernel tests bound them), which flip a bf16
    /// rounding of an activation here and there (2^-8 of that value): the features are held
    /// within 0.1 % of the largest feature and 0.01 % on average, a fourth of bf16's distance to
    /// f32 (0.4 %; measured 2026-12-06 on a Sapphire Rapids-class Xeon: 1.2e-7, one f32 ulp).
    /// A kernel that drops or misplaces products is off by far more (dropping AMX's last step
    /// of 16 pairs: 67-91 % of the largest feature).
    #[test]
    fn hardware_bf16_forward_equals_the_reference_where_the_cpu_has_it() {
        let kernels = Kernel::available();
        if kernels.is_empty() {
            println!(
                "this CPU has no bf16 hardware kernel: the reference kernel's forward was checked"
            );
        }
        let net = seeded(&config());
        let x = input(3, 40);
        let mut reference = net.clone();
        reference.set_bf16_kernel(Kernel::Reference).unwrap();
        let want = features(&reference, &x);
        for hw in kernels {
            println!(
                "comparing the {} Lite forward with the reference's",
                hw.describe()
            );
            let mut a = net.clone();
            a.set_bf16_kernel(hw).unwrap();
            let got = features(&a, &x);
            if hw.sums_like_the_reference() {
                // Equal to the bit (a NaN on either side is unequal).
                assert_eq!(got, want, "{}", hw.describe());
            } else {
                assert_features_close(
                    "Lite (against the reference)",
                    hw,
                    &got,
                    &want,
                    0.001,
                    0.0001,
                );
            }
        }
    }

    #[test]
    fn precision_bf16_runs_exactly_where_the_cpu_has_avx512_bf16() {
        let mut net = seeded(&config());
        assert_eq!(net.precision(), Precision::F32);
        match (net.set_precision(Precision::Bf16), Kernel::hardware()) {
            (Ok(()), Some(hw)) => {
                assert_eq!(
                    (net.precision(), net.bf16_kernel()),
                    (Precision::Bf16, Some(hw))
                );
                net.set_precision(Precision::F32).unwrap();
                assert_eq!((net.precision(), net.bf16_kernel()), (Precision::F32, None));
            }
            (Err(e), None) => {
                assert!(e.to_string().contains("AVX512_BF16"), "{e}");
                assert_eq!(net.precision(), Precision::F32);
            }
            (r, hw) => panic!("set_precision gave {r:?} where the hardware kernel is {hw:?}"),
        }
    }
}
