//! What the processor can do: the run-time checks behind the crate's AVX2/FMA kernels (the row
//! products, the small `d x d` solves, the sketch, the fused pass and the Gauss–Newton lanes)
//! and their AVX-512 builds, which are the same code compiled more than once, so that one
//! binary runs everywhere.

/// Whether the processor has AVX2 and FMA (checked once; the one run-time check of the crate's
/// AVX2/FMA kernels).
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the processor also has AVX-512F and AVX-512VL (32 vector registers of 8 lanes;
/// checked once).
pub(crate) fn has_avx512vl() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            has_avx2_fma()
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
