//! Kernels compiled for the widest vector instructions the CPU has.
//!
//! The crate is built for the baseline x86-64 (SSE2), so plain loops vectorize to 4 lanes.
//! [`vectorized!`](crate::model::efficientnet::simd) defines a function that calls an
//! `#[inline(always)]` kernel from copies compiled with AVX-512 or AVX2 + FMA enabled, and
//! picks the widest one this CPU has at run time (the standard library checks once and caches
//! the answer); elsewhere it calls the kernel as it is. The kernel must be `#[inline(always)]`
//! so that its loops are compiled inside the copies (a closure would stay a separate,
//! baseline function).

/// `vectorized!(pub(crate) fn name(a: A, b: B) -> R => kernel);` defines `name`, which runs
/// `kernel(a, b)` compiled for AVX-512 or AVX2 + FMA when the CPU has them.
macro_rules! vectorized {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $kernel:path) => {
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $kernel($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $kernel($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $kernel($($arg),*)
        }
    };
}

pub(crate) use vectorized;

#[cfg(test)]
mod tests {
    #[inline(always)]
    fn sum_kernel(xs: &[f32]) -> f32 {
        xs.iter().sum()
    }

    vectorized!(fn sum(xs: &[f32]) -> f32 => sum_kernel);

    #[test]
    fn the_dispatched_kernel_returns_the_kernels_value() {
        let xs: Vec<f32> = (0..100).map(|i| i as f32).collect();
        assert_eq!(sum(&xs), 4950.0);
    }
}
