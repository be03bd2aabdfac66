//! The forward pass of [`FastResNetV2`](super::FastResNetV2) at
//! [`Precision::Bf16`](crate::model::Precision): every convolution on bf16 inputs and weights
//! with f32 accumulation ([`crate::model::cpu::bf16`]).
//!
//! What each convolution reads is stored as bf16: the network input, the blocks'
//! pre-activations (`relu(preact_bn(x))`, written by the previous block's `_3_conv` epilogue)
//! and the outputs of `_1_conv` and `_2_conv` (their folded BN and ReLU applied in f32 first).
//! The residual stream stays f32: the stem's output, the max-pool, the shortcuts and the
//! residual sums, and the features at the end (`post_bn` + ReLU in f32).

use super::kernels::{self, ConvPlan};
use super::{ensure, FastBlock, FastResNetV2, FastShortcut, Timer, Workspace};
use crate::error::{Error, Result};
use crate::model::cpu::bf16::{self, words, Act, Bf16Conv, Dst, Kernel};
use crate::model::cpu::{Nhwc, ScaleShift};

/// The bf16 weights of one block.
#[derive(Debug, Clone)]
struct Bf16Block {
    projection: Option<Bf16Conv>,
    conv1: Bf16Conv,
    conv2: Bf16Conv,
    conv3: Bf16Conv,
}

/// Every convolution of the network with its weights rounded to bf16 and packed (once, when
/// the precision is chosen), and the kernel that runs them.
#[derive(Debug, Clone)]
pub(super) struct Bf16Plan {
    kernel: Kernel,
    stem: Bf16Conv,
    blocks: Vec<Bf16Block>,
}

/// The bf16 buffers of one forward pass, kept between calls.
#[derive(Debug, Default)]
pub(super) struct Bf16Workspace {
    input: Vec<u32>,
    p: Vec<u32>,
    t1: Vec<u32>,
    t2: Vec<u32>,
}

fn pack(plan: &ConvPlan) -> Result<Bf16Conv> {
    Bf16Conv::from_hwio(
        &plan.weight,
        [plan.c_out, plan.c_in, plan.kernel],
        plan.stride,
        plan.pad,
        &plan.bias,
    )
}

fn ensure_words(buf: &mut Vec<u32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0);
    }
}

impl Bf16Plan {
    /// Round and pack the f32 plans' folded weights for `kernel`.
    pub(super) fn new(net: &FastResNetV2, kernel: Kernel) -> Result<Self> {
        let blocks = net
            .blocks
            .iter()
            .map(|b| {
                Ok(Bf16Block {
                    projection: match &b.shortcut {
                        FastShortcut::Projection(c) => Some(pack(c)?),
                        _ => None,
                    },
                    conv1: pack(&b.conv1)?,
                    conv2: pack(&b.conv2)?,
                    conv3: pack(&b.conv3)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            kernel,
            stem: pack(&net.stem)?,
            blocks,
        })
    }

    pub(super) fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The network on the NHWC f32 `input` (geometry `xs`); the features (f32) end in `ws.p`.
    pub(super) fn run_nhwc(
        &self,
        net: &FastResNetV2,
        input: &[f32],
        xs: Nhwc,
        ws: &mut Workspace,
        timer: &mut Timer<'_>,
    ) -> Result<Nhwc> {
        let Workspace { x, alt, p, bf, .. } = ws;
        let k = self.kernel;
        ensure_words(&mut bf.input, words(xs));
        bf16::to_bf16_activation(input, xs, &mut bf.input)?;
        timer.mark(|| "input_to_bf16".into());
        ensure(alt, self.stem.out_shape(xs).len());
        let stem_shape = bf16::conv(k, &self.stem, &bf.input, xs, Dst::F32(alt, Act::Linear))?;
        timer.mark(|| "stem/conv7x7_s2".into());
        ensure(x, stem_shape.len());
        let mut shape = kernels::max_pool_3x3s2_zero_pad(alt, stem_shape, x)?;
        timer.mark(|| "stem/max_pool".into());
        if let Some(first) = net.blocks.first() {
            ensure_words(&mut bf.p, words(shape));
            bf16::scale_shift_relu_to_bf16(&first.preact, x, shape, &mut bf.p)?;
            timer.mark(|| "stem/first_preact".into());
        }
        let names = net.block_names();
        for (i, (block, plan)) in net.blocks.iter().zip(&self.blocks).enumerate() {
            let next = net.blocks.get(i + 1).map(|b| &b.preact);
            let name = names.get(i).map_or("", String::as_str);
            shape = plan.forward(k, block, x, alt, bf, shape, next, timer, name)?;
        }
        ensure(p, shape.len());
        kernels::scale_shift_relu(&net.post, x, shape, p)?;
        timer.mark(|| "post_bn_relu".into());
        Ok(shape.with_channels(net.post.channels()))
    }
}

impl Bf16Block {
    /// Run the block on `x` (geometry `xs`); `bf.p` holds the block's pre-activation (bf16) on
    /// entry and `next`'s on exit (untouched after the last block, `next == None`); the block
    /// output replaces `x`.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        k: Kernel,
        block: &FastBlock,
        x: &mut Vec<f32>,
        alt: &mut Vec<f32>,
        bf: &mut Bf16Workspace,
        xs: Nhwc,
        next: Option<&ScaleShift>,
        timer: &mut Timer<'_>,
        name: &str,
    ) -> Result<Nhwc> {
        let s1 = self.conv1.out_shape(xs);
        ensure_words(&mut bf.t1, words(s1));
        bf16::conv(k, &self.conv1, &bf.p, xs, Dst::Bf16(&mut bf.t1, Act::Relu))?;
        timer.mark(|| format!("{name}/conv1x1_bn_relu"));
        let s2 = self.conv2.out_shape(s1);
        ensure_words(&mut bf.t2, words(s2));
        bf16::conv(k, &self.conv2, &bf.t1, s1, Dst::Bf16(&mut bf.t2, Act::Relu))?;
        timer.mark(|| format!("{name}/conv3x3_s{}_bn_relu", self.conv2.stride));
        let os = self.conv3.out_shape(s2);
        let shortcut = match (&block.shortcut, &self.projection) {
            (FastShortcut::Projection(_), Some(conv0)) => {
                ensure(alt, conv0.out_shape(xs).len());
                bf16::conv(k, conv0, &bf.p, xs, Dst::F32(alt, Act::Linear))?
            }
            (FastShortcut::Subsample(stride), _) => {
                ensure(alt, xs.len());
                kernels::subsample(x, xs, *stride, alt)?
            }
            (FastShortcut::Identity, _) => xs,
            (FastShortcut::Projection(_), None) => {
                return Err(Error::Internal(format!(
                    "fast ResNetV2 bf16: block {name} has no packed projection"
                )))
            }
        };
        timer.mark(|| format!("{name}/shortcut"));
        if shortcut != os {
            return Err(Error::Internal(format!(
                "fast ResNetV2: shortcut geometry {shortcut:?} does not match the residual {os:?}"
            )));
        }
        let identity = matches!(block.shortcut, FastShortcut::Identity);
        let dst = if identity { &mut *x } else { &mut *alt };
        let preact = match next {
            Some(ss) => {
                ensure_words(&mut bf.p, words(os));
                Some((ss, bf.p.as_mut_slice()))
            }
            None => None,
        };
        bf16::conv(k, &self.conv3, &bf.t2, s2, Dst::Residual(dst, preact))?;
        timer.mark(|| format!("{name}/conv1x1_residual_preact"));
        if !identity {
            std::mem::swap(x, alt);
        }
        Ok(os)
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::Getter;
    use super::*;
    use crate::model::cpu::bf16::tests::assert_features_close;
    use crate::model::testing::seeded_values;
    use crate::model::{Precision, ResNetV2Config};
    use candle_core::{Device, Tensor};

    /// Two stacks with odd channel counts everywhere (stem 13, blocks 9 and 15 wide), so
    /// that every bf16 activation has a padding channel, and a stride-2 stack.
    fn config() -> ResNetV2Config {
        let mut c = ResNetV2Config::custom(vec![2, 2], vec![3, 5]);
        c.stem_filters = 13;
        c.expansion = 3;
        c
    }

    /// A fast path with seeded weights: batch norms far from the identity, biases non-zero,
    /// kernels scaled to keep the activations of order one.
    fn seeded(config: &ResNetV2Config) -> FastResNetV2 {
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let seed = name
                .bytes()
                .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
            let n: usize = shape.iter().product();
            let v = seeded_values(n, seed);
            Ok(
                if name.ends_with("running_var") || name.ends_with("_bn.weight") {
                    v.iter().map(|v| 1.0 + 0.5 * v).collect()
                } else if name.ends_with("running_mean") || name.ends_with(".bias") {
                    v.iter().map(|v| 0.3 * v).collect()
                } else {
                    let fan_in: usize = shape[1..].iter().product();
                    let s = (3.0 / fan_in as f32).sqrt();
                    v.iter().map(|v| v * s).collect()
                },
            )
        };
        let get: &Getter<'_> = &get;
        FastResNetV2::build(config, get).unwrap()
    }

    fn features(net: &FastResNetV2, x: &Tensor) -> Vec<f32> {
        net.run(x, None).unwrap().0
    }

    fn input(n: usize, side: usize) -> Tensor {
        let v = seeded_values(n * 3 * side * side, 42);
        Tensor::from_vec(v, (n, 3, side, side), &Device::Cpu).unwrap()
    }

    /// bf16 rounds every convolution's inputs and weights (relative error up to 2^-9 each)
    /// through 15 convolutions: the features stay within 1.5 % of their largest value, and
    /// within 0.25 % of it on average (measured: 0.44 % and 0.07 %). A kernel that pairs the
    /// wrong channels, drops a pair or misplaces a tap is off by far more.
    #[test]
    fn bf16_features_stay_within_tolerance_of_f32_on_a_seeded_network() {
        let net = seeded(&config());
        let x = input(2, 37);
        let want = features(&net, &x);
        for kernel in Kernel::testable() {
            let mut bf = net.clone();
            bf.set_bf16_kernel(kernel).unwrap();
            assert_eq!(bf.bf16_kernel(), Some(kernel));
            let got = features(&bf, &x);
            assert_features_close("ResNetV2", kernel, &got, &want, 0.015, 0.0025);
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
        let x = input(3, 33);
        let mut reference = net.clone();
        reference.set_bf16_kernel(Kernel::Reference).unwrap();
        let want = features(&reference, &x);
        for hw in kernels {
            println!(
                "comparing the {} forward with the reference's",
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
                    "ResNetV2 (against the reference)",
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
        let net = seeded(&config());
        assert_eq!(net.precision(), Precision::F32);
        match (
            net.clone().with_precision(Precision::Bf16),
            Kernel::hardware(),
        ) {
            (Ok(bf), Some(hw)) => {
                assert_eq!(
                    (bf.precision(), bf.bf16_kernel()),
                    (Precision::Bf16, Some(hw))
                );
                let back = bf.with_precision(Precision::F32).unwrap();
                assert_eq!(
                    (back.precision(), back.bf16_kernel()),
                    (Precision::F32, None)
                );
            }
            (Err(e), None) => assert!(e.to_string().contains("AVX512_BF16"), "{e}"),
            (r, hw) => panic!("with_precision gave {r:?} where the hardware kernel is {hw:?}"),
        }
    }
}
