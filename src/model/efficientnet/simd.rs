//! Run a loop compiled for the widest vector instructions the CPU has.
//!
//! The crate is built for the baseline x86-64 (SSE2), so plain loops vectorize to 4 lanes.
//! [`vectorized`] runs a closure inside a function compiled with AVX-512 or AVX2 + FMA enabled
//! when the CPU has them (checked once by the standard library and cached), so that the loops
//! inlined into it use 16 or 8 lanes. Elsewhere it just calls the closure.

/// Call `f`, compiled for AVX-512 or AVX2 when this CPU has them.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_closure_runs_once_and_returns_its_value() {
        let mut calls = 0;
        let v = super::vectorized(|| {
            calls += 1;
            (0..100).map(|i| i as f32).sum::<f32>()
        });
        assert_eq!((v, calls), (4950.0, 1));
    }
}
