//! Wider vector instructions for the hot loops, chosen at run time. A function body written
//! with fixed summation order (explicit lanes, no `mul_add`; rustc never lets LLVM contract a
//! multiply and an add into a fused one, even where the `fma` feature is on) computes the same
//! bits whatever the instruction set, so the dispatch changes the speed, never the result.

/// Call `body(args…)` compiled for AVX-512, else AVX2, where the CPU has it (x86-64), else
/// for the baseline target. `body` must be `#[inline(always)]` so that its code, and what it
/// inlines, is generated for the wider instruction set.
macro_rules! dispatch {
    ($body:ident($($a:ident: $t:ty),* $(,)?) -> $r:ty) => {{
        #[cfg(target_arch = "x86_64")]
        {
            // unsafe fns, as a safe `#[target_feature]` fn needs Rust 1.86 (rust-version is
            // 1.85)
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($a: $t),*) -> $r {
                $body($($a),*)
            }
            #[target_feature(enable = "avx2")]
            unsafe fn avx2($($a: $t),*) -> $r {
                $body($($a),*)
            }
            // rustc's avx512f implies avx2, fma and f16c: all are checked
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                // SAFETY: the CPU (and the OS, which the macro also asks) has AVX-512F and
                // every feature it implies
                return unsafe { avx512($($a),*) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (and the AVX it implies, which the macro checks)
                return unsafe { avx2($($a),*) };
            }
        }
        $body($($a),*)
    }};
}
pub(crate) use dispatch;
