//! Wider vector instructions for the hot loops, chosen at run time. A function body written
//! with fixed summation order (explicit lanes, no fused multiply-add) computes the same bits
//! whatever the instruction set, so the dispatch changes the speed, never the result.

/// Call `body(args…)` compiled for AVX-512, else AVX2, where the CPU has it (x86-64), else
/// for the baseline target. `body` must be `#[inline(always)]` so that its code, and what it
/// inlines, is generated for the wider instruction set.
macro_rules! dispatch {
    ($body:ident($($a:ident: $t:ty),* $(,)?) -> $r:ty) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            fn avx512($($a: $t),*) -> $r {
                $body($($a),*)
            }
            #[target_feature(enable = "avx2")]
            fn avx2($($a: $t),*) -> $r {
                $body($($a),*)
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F
                return unsafe { avx512($($a),*) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2
                return unsafe { avx2($($a),*) };
            }
        }
        $body($($a),*)
    }};
}
pub(crate) use dispatch;
