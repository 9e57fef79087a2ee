//! How the large factors sit in memory: transparent huge pages.
//!
//! An iteration streams the linear layers' factors (`U_r`, `V_rᵀ`, a dense operator's `Wᵀ`:
//! tens to hundreds of MB) once each. On 4 KiB pages every 64 cache lines of such a stream
//! start a new page, and each new page is a miss in the address-translation cache; in a virtual
//! machine that miss is a two-level page walk. On the development machine (`docs/speed.md`,
//! "7 December, afternoon") a streaming read of 67 MB took 4.4–4.8 ms on 4 KiB pages and
//! 2.1–2.4 ms on 2 MiB pages in the same process. numpy asks for huge pages for its large arrays
//! for the same reason, and so does mimalloc (the command-line tool's allocator) for its large
//! regions; the system allocator, which a Rust program or the Python package uses, does not.
//! So the crate allocates the large matrices it keeps and streams with [`zeros`], which asks
//! the kernel (Linux: `madvise(MADV_HUGEPAGE)`) for huge pages *before* the memory is first
//! written, so that the first writes fault them in directly at no extra cost.
//!
//! It is a hint: the values, and so every result, are the same bits whatever the kernel does
//! with it, and where it is not available (not Linux, huge pages switched off system-wide) or
//! declined, the memory is ordinary memory.

use faer::Mat;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether [`zeros`] asks for huge pages (on by default).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Matrices smaller than this (bytes) are allocated as usual: they take a handful of pages
/// anyway.
pub const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// The size of a transparent huge page on x86-64 and most 64-bit Linux systems.
const HUGE_PAGE: usize = 2 << 20;

/// Switches the huge-page hint for matrices allocated after the call on or off, for the whole
/// process (on by default; off is for measuring what the hint brings). Results do not depend
/// on it.
pub fn use_huge_pages(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether matrices allocated now get the huge-page hint (see [`use_huge_pages`]).
pub fn huge_pages_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// An `nrows x ncols` zero matrix whose storage the kernel is asked to back with transparent
/// huge pages, when it has at least [`HUGE_PAGE_MIN_BYTES`] and the hint is on: the storage is
/// reserved, its 2 MiB-aligned part advised, and only then written (with zeros). Otherwise, and
/// wherever the hint is unavailable, `Mat::zeros`.
pub fn zeros(nrows: usize, ncols: usize) -> Mat<f64> {
    let bytes = nrows.saturating_mul(ncols).saturating_mul(size_of::<f64>());
    if !huge_pages_enabled() || bytes < HUGE_PAGE_MIN_BYTES {
        return Mat::zeros(nrows, ncols);
    }
    // Reserved, not yet written: a large allocation is fresh memory that no page backs yet.
    let mut m = Mat::<f64>::with_capacity(nrows, ncols);
    // The reservation holds at least `nrows · ncols` values from `as_ptr()` (columns of at
    // least `nrows` rows).
    advise(m.as_ptr() as usize, bytes);
    m.resize_with(nrows, ncols, |_, _| 0.0);
    m
}

/// Marks the 2 MiB-aligned part of `start .. start + bytes` for huge pages; whether the kernel
/// accepted.
fn advise(start: usize, bytes: usize) -> bool {
    let lo = start.next_multiple_of(HUGE_PAGE);
    let hi = start.saturating_add(bytes) / HUGE_PAGE * HUGE_PAGE;
    hi > lo && advise_range(lo, hi - lo)
}

#[cfg(target_os = "linux")]
fn advise_range(addr: usize, len: usize) -> bool {
    // SAFETY: `addr .. addr + len` is a page-aligned range inside a live allocation of ours;
    // `MADV_HUGEPAGE` changes how that memory will be backed, never its contents, and neither
    // frees nor remaps it.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_HUGEPAGE) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn advise_range(_addr: usize, _len: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `AnonHugePages` (kB) of the mapping of `/proc/self/smaps` that holds `addr`, if any.
    fn huge_kb_at(addr: usize) -> Option<usize> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let head = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = head.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = a <= addr && addr < b;
                    continue;
                }
            }
            if inside {
                if let Some(rest) = line.strip_prefix("AnonHugePages:") {
                    return rest.trim().trim_end_matches("kB").trim().parse().ok();
                }
            }
        }
        None
    }

    /// [`zeros`] gives a zero matrix of the asked shape, usable like any other, and where the
    /// kernel offers transparent huge pages on request, its storage is on them.
    #[test]
    fn zeros_on_huge_pages() {
        for (r, c) in [(0, 5), (7, 3), (100, 100), (1500, 1000), (1, 1 << 20)] {
            let mut m = zeros(r, c);
            assert_eq!((m.nrows(), m.ncols()), (r, c));
            assert!((0..c).all(|j| (0..r).all(|i| m[(i, j)] == 0.0)));
            if r * c > 0 {
                m[(r - 1, c - 1)] = 1.5;
                assert_eq!(m.norm_l2(), 1.5);
            }
        }
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if cfg!(target_os = "linux") && (thp.contains("[madvise]") || thp.contains("[always]")) {
            // The kernel may fall back to small pages when no huge page is free at the moment
            // of the fault; three tries.
            let backed = (0..3).any(|_| {
                let m = zeros(1500, 1000);
                let middle = m.as_ptr() as usize + 1500 * 500 * 8;
                huge_kb_at(middle).is_some_and(|kb| kb >= 2048)
            });
            assert!(backed, "no huge page backs the matrix ({})", thp.trim());
        }
    }
}
