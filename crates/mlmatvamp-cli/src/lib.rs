//! The front door's own pieces, shared by the `mlmatvamp` binary and its tests: rendering the
//! core's figures ([`render`]) and showing the core's observers as progress bars ([`progress`]).
//! Everything computational lives in the core library, `mlmatvamp`.

#![warn(missing_docs)]

pub mod progress;
pub mod render;

/// Keeps the resident memory of a long run close to what it uses. glibc raises its `mmap`
/// threshold every time a large block is freed, so after the first iteration the `n x d` blocks
/// of a large problem come from the heap, which then cannot shrink: a run at `n = 2^20` that
/// uses 0.3 GB held 4 GB. A fixed threshold of 1 MB keeps every large block in its own mapping,
/// returned to the system when freed. A no-op off Linux/glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes a tuning parameter of the allocator; called at start-up.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
