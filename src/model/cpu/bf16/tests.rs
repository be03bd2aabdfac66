//! The bf16 convolution against a direct convolution in f64 on bf16-rounded values (both
//! kernels), the hardware kernel against the reference where the CPU has AVX512_BF16, and the
//! rounding against values worked out by hand.

use super::*;
use crate::model::testing::seeded_values;

/// `v` rounded to 8 significant bits, ties to even, in f64 (independent of [`to_bf16`]).
fn round_bf16(v: f32) -> f64 {
    let v = f64::from(v);
    if v == 0.0 || v.abs() < f64::from(f32::MIN_POSITIVE) {
        return 0.0;
    }
    let q = 2f64.powi(v.abs().log2().floor() as i32 - 7);
    (v / q).round_ties_even() * q
}

#[test]
fn rounding_to_bf16_is_to_nearest_even_with_denormals_flushed() {
    // 1 + 2^-8 is halfway between 1 (0x3f80) and 1 + 2^-7 (0x3f81): ties go to the even 0x3f80;
    // 1 + 3 * 2^-8 is halfway between 0x3f81 and 0x3f82: to 0x3f82.
    let cases: [(f32, u16); 9] = [
        (1.0, 0x3f80),
        (1.0 + 1.0 / 256.0, 0x3f80),
        (1.0 + 3.0 / 256.0, 0x3f82),
        (1.0 + 1.0 / 256.0 + 1.0 / 65536.0, 0x3f81),
        (-2.0, 0xc000),
        (f32::from_bits(0x0000_0001), 0x0000),
        (-f32::from_bits(0x007f_ffff), 0x8000),
        (f32::MAX, 0x7f80),
        (f32::INFINITY, 0x7f80),
    ];
    for (v, want) in cases {
        assert_eq!(to_bf16(v), want, "{v:e}");
    }
    assert!(f32::from_bits(u32::from(to_bf16(f32::NAN)) << 16).is_nan());
    let (lo, hi) = unpair(pair(1.5, -3.0));
    assert_eq!((lo, hi), (1.5, -3.0));
}

/// One test geometry: batch, height, width, input and output channels, kernel, stride, pad.
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

const CASES: [Case; 7] = [
    // 1x1, even channels, several tiles and a pixel tail.
    (2, 7, 9, 16, 40, 1, 1, 0),
    // 1x1 with odd input and output channel counts.
    (1, 5, 5, 7, 5, 1, 1, 0),
    // 3x3 stride 1 pad 1, odd channels, two reduction blocks (9 * 20 pairs > 128).
    (2, 6, 5, 39, 33, 3, 1, 1),
    // 3x3 stride 2 pad 1.
    (1, 9, 8, 8, 64, 3, 2, 1),
    // The stem's 7x7 stride 2 pad 3 on 3 channels.
    (1, 15, 13, 3, 16, 7, 2, 3),
    // A 1x1 projection with stride 2.
    (2, 6, 6, 12, 24, 1, 2, 0),
    // Many output channels (several channel tiles) and a long reduction.
    (1, 3, 4, 300, 300, 1, 1, 0),
];

/// The case's input (NHWC f32), HWIO kernel and bias, seeded.
fn case_data(case: Case, seed: u64) -> (Nhwc, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, h, w, ci, co, k, _, _) = case;
    let xs = Nhwc { n, h, w, c: ci };
    let x = seeded_values(xs.len(), seed);
    let hwio: Vec<f32> = seeded_values(k * k * ci * co, seed + 1)
        .iter()
        .map(|v| v / (k * k * ci) as f32 * 4.0)
        .collect();
    let bias = seeded_values(co, seed + 2);
    (xs, x, hwio, bias)
}

/// The convolution on bf16-rounded values, in f64: `(conv + bias, sum of |products|)` per output.
fn direct(case: Case, xs: Nhwc, x: &[f32], hwio: &[f32], bias: &[f32]) -> Vec<(f64, f64)> {
    let (_, _, _, ci, co, k, stride, pad) = case;
    let side = |v: usize| (v + 2 * pad - k) / stride + 1;
    let (oh, ow) = (side(xs.h), side(xs.w));
    let mut out = Vec::new();
    for b in 0..xs.n {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..co {
                    let (mut s, mut mag) = (f64::from(bias[o]), 0.0);
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (oy * stride + ky, ox * stride + kx);
                            if iy < pad || ix < pad || iy - pad >= xs.h || ix - pad >= xs.w {
                                continue;
                            }
                            let at = ((b * xs.h + iy - pad) * xs.w + ix - pad) * ci;
                            for c in 0..ci {
                                let p = round_bf16(x[at + c])
                                    * round_bf16(hwio[((ky * k + kx) * ci + c) * co + o]);
                                s += p;
                                mag += p.abs();
                            }
                        }
                    }
                    out.push((s, mag));
                }
            }
        }
    }
    out
}

/// What [`run_case`] gives: the F32, Bf16 and Residual outputs (the residual's
/// pre-activation), then the Stream output with the residual add and its bf16 copy.
type Outputs = (Vec<f32>, Vec<u32>, Vec<f32>, Vec<u32>, Vec<f32>, Vec<u32>);

/// Run `case` through [`conv`] with `kernel`, to every kind of [`Dst`].
fn run_case(kernel: Kernel, case: Case, seed: u64) -> Outputs {
    let (_, _, _, ci, co, k, stride, pad) = case;
    let (xs, x, hwio, bias) = case_data(case, seed);
    let plan = Bf16Conv::from_hwio(&hwio, [co, ci, k], stride, pad, &bias).unwrap();
    let mut xb = vec![0u32; words(xs)];
    to_bf16_activation(&x, xs, &mut xb).unwrap();
    let os = plan.out_shape(xs);
    let mut f = vec![f32::NAN; os.len()];
    conv(kernel, &plan, &xb, xs, Dst::F32(&mut f, Act::Linear)).unwrap();
    let mut h = vec![u32::MAX; words(os)];
    conv(kernel, &plan, &xb, xs, Dst::Bf16(&mut h, Act::Relu)).unwrap();
    let mut res = seeded_values(os.len(), seed + 3);
    let ss = ScaleShift {
        scale: seeded_values(co, seed + 4),
        shift: seeded_values(co, seed + 5),
    };
    let mut p = vec![u32::MAX; words(os)];
    conv(
        kernel,
        &plan,
        &xb,
        xs,
        Dst::Residual(&mut res, Some((&ss, &mut p))),
    )
    .unwrap();
    let mut stream = seeded_values(os.len(), seed + 3);
    let mut copy = vec![u32::MAX; words(os)];
    conv(
        kernel,
        &plan,
        &xb,
        xs,
        Dst::Stream(&mut stream, true, &mut copy),
    )
    .unwrap();
    (f, h, res, p, stream, copy)
}

/// The value of channel `c` of pixel `px` of a bf16 activation of `channels` channels.
fn bf16_at(words: &[u32], channels: usize, px: usize, c: usize) -> f32 {
    let (lo, hi) = unpair(words[px * channels.div_ceil(2) + c / 2]);
    if c.is_multiple_of(2) {
        lo
    } else {
        hi
    }
}

fn check_against_direct(kernel: Kernel) {
    for (i, &case) in CASES.iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        let (_, _, _, _, co, ..) = case;
        let (xs, x, hwio, bias) = case_data(case, seed);
        let want = direct(case, xs, &x, &hwio, &bias);
        let (f, h, res, p, stream, copy) = run_case(kernel, case, seed);
        assert_eq!(
            stream,
            res,
            "{}: case {case:?}: stream vs residual",
            kernel.describe()
        );
        let res0 = seeded_values(res.len(), seed + 3);
        let (scale, shift) = (seeded_values(co, seed + 4), seeded_values(co, seed + 5));
        assert_eq!(f.len(), want.len(), "case {case:?}");
        for (j, &(w, mag)) in want.iter().enumerate() {
            // f32 accumulation of bf16 products: a few ulps of the magnitude of the sum.
            let tol = 1e-6 * (mag + w.abs()) + 1e-30;
            let (px, c) = (j / co, j % co);
            let what = format!("{}: case {case:?}, output {j}", kernel.describe());
            assert!(
                (f64::from(f[j]) - w).abs() <= tol,
                "{what}: {} vs {w}",
                f[j]
            );
            // Rounded to bf16 after ReLU: half an ulp of bf16 more.
            let hv = f64::from(bf16_at(&h, co, px, c));
            let hw = w.max(0.0);
            assert!(
                (hv - hw).abs() <= tol + hw * 2f64.powi(-8),
                "{what}: bf16 {hv} vs {hw}"
            );
            let sum = f64::from(res0[j]) + w;
            assert!(
                (f64::from(res[j]) - sum).abs() <= tol + 1e-6 * sum.abs(),
                "{what}: residual {} vs {sum}",
                res[j]
            );
            // The bf16 copy of the stream: the residual sum rounded.
            let cv = f64::from(bf16_at(&copy, co, px, c));
            let ctol = tol + 1e-6 * sum.abs() + sum.abs() * 2f64.powi(-8);
            assert!(
                (cv - sum).abs() <= ctol,
                "{what}: stream copy {cv} vs {sum}"
            );
            let pre = (sum * f64::from(scale[c]) + f64::from(shift[c])).max(0.0);
            let pv = f64::from(bf16_at(&p, co, px, c));
            let ptol = (tol + 1e-6 * sum.abs()) * f64::from(scale[c]).abs() + 1e-6;
            assert!(
                (pv - pre).abs() <= ptol + pre * 2f64.powi(-8),
                "{what}: pre-activation {pv} vs {pre}"
            );
        }
        if co % 2 == 1 {
            // The padding channel of the bf16 outputs is zero.
            let pixels = f.len() / co;
            for (what, words) in [("bf16", &h), ("pre-activation", &p), ("copy", &copy)] {
                assert!(
                    (0..pixels).all(|px| bf16_at(words, co + 1, px, co) == 0.0),
                    "case {case:?}: the padding channel of the {what} output is not zero"
                );
            }
        }
    }
}

#[test]
fn reference_kernel_computes_the_convolution_of_the_rounded_values() {
    check_against_direct(Kernel::Reference);
}

#[test]
fn hardware_kernels_compute_the_convolution_of_the_rounded_values_where_the_cpu_has_them() {
    let kernels = Kernel::available();
    if kernels.is_empty() {
        println!(
            "this CPU has neither AVX512_BF16 nor usable AMX: only the {} was checked",
            Kernel::Reference.describe()
        );
    }
    for k in kernels {
        println!("bf16 tests ran the {}", k.describe());
        check_against_direct(k);
    }
}

/// `|got - want| <= tol + 2^-8 max(|got|, |want|)` for two bf16 values: a sum within `tol`
/// on either side of a rounding boundary lands one bf16 step apart.
fn assert_bf16_close(what: &str, got: f32, want: f32, tol: f64) {
    let (g, w) = (f64::from(got), f64::from(want));
    assert!(
        (g - w).abs() <= tol + 2f64.powi(-8) * g.abs().max(w.abs()),
        "{what}: {got} vs {want} (tolerance {tol:e})"
    );
}

/// The AMX kernel against the reference, output by output within the bound derived at
/// [`hardware_kernels_equal_the_reference_where_the_cpu_has_them`] (in f32 ulps, 2^-24, of
/// `sum |products| + |bias|`); returns the largest difference seen in those units.
fn check_within_bound(hw: Kernel, case: Case, seed: u64, got: &Outputs, want: &Outputs) -> f64 {
    let (_, _, _, ci, co, k, ..) = case;
    let (xs, x, hwio, bias) = case_data(case, seed);
    let exact = direct(case, xs, &x, &hwio, &bias);
    let k2 = k * k * ci.div_ceil(2);
    let bound = (2 * k2 + 6 * k2.div_ceil(KPAD) + 2) as f64;
    let u = 2f64.powi(-24);
    let scale = seeded_values(co, seed + 4);
    let mut worst = 0f64;
    for (j, &(_, mag)) in exact.iter().enumerate() {
        let (px, c) = (j / co, j % co);
        let what = format!("{}: case {case:?}, output {j}", hw.describe());
        let unit = u * (mag + f64::from(bias[c]).abs());
        let tol = bound * unit;
        let d = f64::from((got.0[j] - want.0[j]).abs());
        worst = worst.max(d / unit);
        assert!(
            d <= tol,
            "{what}: {} vs {} (bound {tol:e})",
            got.0[j],
            want.0[j]
        );
        let rtol = tol + u * f64::from(want.2[j]).abs();
        for (g, w, name) in [
            (got.2[j], want.2[j], "residual"),
            (got.4[j], want.4[j], "stream"),
        ] {
            let d = f64::from((g - w).abs());
            assert!(d <= rtol, "{what}: {name} {g} vs {w} (bound {rtol:e})");
        }
        let at = |o: &[u32], ch: usize| bf16_at(o, ch, px, c);
        assert_bf16_close(
            &format!("{what} (bf16)"),
            at(&got.1, co),
            at(&want.1, co),
            tol,
        );
        assert_bf16_close(
            &format!("{what} (copy)"),
            at(&got.5, co),
            at(&want.5, co),
            rtol,
        );
        let ptol = rtol * f64::from(scale[c]).abs() + u;
        assert_bf16_close(
            &format!("{what} (pre-activation)"),
            at(&got.3, co),
            at(&want.3, co),
            ptol,
        );
    }
    worst
}

/// The `vdpbf16ps` kernel sums in the reference's order: equal to the bit. AMX sums 16 pairs
/// per instruction in an order of its own, so each output is held to a bound: the reference's
/// sequential sum of `2K` products is within `2K` ulps (2^-24) of `S = sum |products| +
/// |bias|` of the exact value, AMX was measured within 5.4 ulps of `S` per instruction (see
/// the `amx` module: allowed 6 per step of 16 pairs), and the bias add rounds each once more:
/// `|amx - reference| <= (2K + 6 ceil(K / 16) + 2) ulps of S`. bf16 outputs may be one bf16
/// step apart where the f32 sums straddle a rounding boundary.
#[test]
fn hardware_kernels_equal_the_reference_where_the_cpu_has_them() {
    let kernels = Kernel::available();
    if kernels.is_empty() {
        println!("this CPU has neither AVX512_BF16 nor usable AMX: no hardware kernel was run");
    }
    for hw in kernels {
        println!(
            "comparing the {} with the {}",
            hw.describe(),
            Kernel::Reference.describe()
        );
        let (mut worst, mut worst_units) = (0f32, 0f64);
        for (i, &case) in CASES.iter().enumerate() {
            let seed = 500 + i as u64;
            let got = run_case(hw, case, seed);
            let want = run_case(Kernel::Reference, case, seed);
            if !hw.sums_like_the_reference() {
                worst_units = worst_units.max(check_within_bound(hw, case, seed, &got, &want));
                continue;
            }
            for (g, w) in got.0.iter().zip(&want.0).chain(got.2.iter().zip(&want.2)) {
                // The same sums in the same order: equal to the bit, but for the hardware's
                // flushing of denormal results to zero.
                let d = (g - w).abs();
                assert!(d <= f32::MIN_POSITIVE, "case {case:?}: {g} vs {w}");
                worst = worst.max(d);
            }
            assert_eq!(got.1, want.1, "case {case:?}: bf16 outputs");
            assert_eq!(got.3, want.3, "case {case:?}: bf16 pre-activations");
            assert_eq!(got.4, want.4, "case {case:?}: stream outputs");
            assert_eq!(got.5, want.5, "case {case:?}: stream copies");
        }
        if hw.sums_like_the_reference() {
            println!(
                "largest difference {} - reference: {worst:e}",
                hw.describe()
            );
        } else {
            println!(
                "largest difference {} - reference: {worst_units:.2} ulps of \
                 sum |products| + |bias|",
                hw.describe()
            );
        }
    }
}

#[test]
fn tiles_cover_the_output_with_enough_items() {
    for (m, n, threads) in [
        (1, 1, 2),
        (49, 512, 2),
        (25088, 64, 2),
        (392, 2048, 16),
        (5, 5, 1),
    ] {
        for mr in [MR, MR_MAX] {
            let (mc, nt) = tiles(m, n, threads, mr);
            assert!(
                mc % mr == 0 && nt % NR == 0 && mc <= MC_MAX && nt <= NT_MAX,
                "{m} {n} {mr}"
            );
            let items = m.div_ceil(mc) * n.next_multiple_of(NR).div_ceil(nt);
            let most = m.div_ceil(mr) * n.div_ceil(NR);
            assert!(
                items >= (2 * threads).min(most),
                "{m}x{n} on {threads}, {mr} rows: {items} items"
            );
        }
    }
}

#[test]
fn wrong_geometry_and_short_buffers_are_errors() {
    let plan = Bf16Conv::from_hwio(&[0.5; 4 * 3], [4, 3, 1], 1, 0, &[0.; 4]).unwrap();
    let xs = Nhwc {
        n: 1,
        h: 2,
        w: 2,
        c: 3,
    };
    let x = vec![0u32; words(xs)];
    let mut out = vec![0f32; 16];
    let wrong = Nhwc { c: 5, ..xs };
    assert!(conv(
        Kernel::Reference,
        &plan,
        &x,
        wrong,
        Dst::F32(&mut out, Act::Linear)
    )
    .is_err());
    let mut short = vec![0f32; 15];
    let err = conv(
        Kernel::Reference,
        &plan,
        &x,
        xs,
        Dst::F32(&mut short, Act::Linear),
    );
    assert!(err.unwrap_err().to_string().contains("needs 16"));
    assert!(Bf16Conv::from_hwio(&[0.5; 11], [4, 3, 1], 1, 0, &[0.; 4]).is_err());
}

/// A bf16 forward pass's features `got` against the f32 fast path's `want`: every value
/// finite, the largest difference within `worst_share` of the largest |feature| and the mean
/// within `mean_share` of it (a NaN anywhere fails, where a max-fold would drop it).
pub(crate) fn assert_features_close(
    what: &str,
    kernel: Kernel,
    got: &[f32],
    want: &[f32],
    worst_share: f32,
    mean_share: f32,
) {
    assert_eq!(got.len(), want.len(), "{what}: feature count");
    assert!(
        want.iter().all(|v| v.is_finite()),
        "{what}: f32 features not finite"
    );
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what} on the {}: bf16 features not finite",
        kernel.describe()
    );
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        scale > 0.1,
        "{what}: the features are degenerate (max {scale})"
    );
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs());
    let worst = diff.clone().fold(0f32, f32::max);
    let mean = diff.sum::<f32>() / want.len() as f32;
    println!(
        "{what} bf16 forward on the {}: largest difference {worst:.3e} ({:.2} % of the largest \
         feature {scale:.3}), mean {mean:.3e}",
        kernel.describe(),
        100.0 * worst / scale
    );
    assert!(
        worst <= worst_share * scale,
        "{what}, {}: worst {worst}, scale {scale}",
        kernel.describe()
    );
    assert!(
        mean <= mean_share * scale,
        "{what}, {}: mean {mean}, scale {scale}",
        kernel.describe()
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn fracture_amx_turns_amx_off_and_other_values_are_reported() {
    for (v, off) in [
        (None, false),
        (Some(""), false),
        (Some("on"), false),
        (Some("1"), false),
    ] {
        assert_eq!(amx::parse_switch(v), Ok(off), "{v:?}");
    }
    for v in ["off", "0", " off "] {
        assert_eq!(amx::parse_switch(Some(v)), Ok(true), "{v:?}");
    }
    let err = amx::parse_switch(Some("yes")).unwrap_err();
    assert!(err.contains("FRACTURE_AMX") && err.contains("yes"), "{err}");
}

/// GFLOP/s of microkernel `M` on one core, cache-resident: `calls` calls of `KC_MAX` pairs
/// into one block (2 x 2 flops per pair and output).
fn rate<M: Microkernel>(calls: usize) -> f64 {
    let a: Vec<u32> = (0..M::MR * KC_MAX)
        .map(|i| pair(0.01 * (i % 7) as f32, -0.02 * (i % 5) as f32))
        .collect();
    let b: Vec<u32> = (0..KC_MAX * NR)
        .map(|i| pair(0.03 * (i % 3) as f32, 0.01 * (i % 11) as f32))
        .collect();
    let mut c = vec![0f32; M::MR * NR];
    let start = std::time::Instant::now();
    for i in 0..calls {
        // SAFETY: the lengths `run` needs; the caller chose `M` for this CPU.
        unsafe { M::run(KC_MAX, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), i % 64 != 0) };
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(&c);
    (4 * M::MR * NR * KC_MAX * calls) as f64 / secs / 1e9
}

/// Not a test but a measurement (nothing asserted): each hardware microkernel's GFLOP/s on
/// one core in a cache-resident loop, median of interleaved rounds
/// (`cargo test --release --lib -- --ignored --nocapture microkernel_rates`).
#[test]
#[ignore = "a measurement; run it with --release"]
fn microkernel_rates() {
    let kernels = Kernel::available();
    let mut rates = vec![Vec::new(); kernels.len()];
    for _round in 0..7 {
        for (k, r) in kernels.iter().zip(rates.iter_mut()) {
            r.push(match k {
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512Bf16 => rate::<avx512::Micro>(20_000),
                // SAFETY: `available` found AMX usable.
                #[cfg(target_arch = "x86_64")]
                Kernel::Amx => unsafe { amx::with_tiles(|| rate::<amx::Micro>(40_000)) },
                _ => continue,
            });
        }
    }
    for (k, mut r) in kernels.into_iter().zip(rates) {
        r.sort_by(f64::total_cmp);
        println!(
            "{}: {:.0} GFLOP/s on one core (median of {}; range {:.0}-{:.0})",
            k.describe(),
            r[r.len() / 2],
            r.len(),
            r[0],
            r[r.len() - 1]
        );
    }
}
