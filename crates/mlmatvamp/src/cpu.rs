//! What the processor can do: the one run-time check behind the crate's AVX2/FMA kernels (the
//! row products, the small `d x d` solves, the sketch and the Gauss–Newton lanes), which are the
//! same code compiled twice, so that one binary runs everywhere.

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
