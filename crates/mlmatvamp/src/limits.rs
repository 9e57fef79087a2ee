//! Resource limits checked before anything large is allocated (`docs/configuration.md`,
//! "Limits"): a size a user can type — rows, an operator's shape, Monte-Carlo rows — is compared
//! with the memory the run would need and this machine's memory, and refused with an error that
//! names the option and the limit instead of aborting on a failed allocation (or being killed by
//! the kernel after overcommitting).

use crate::error::{Error, Result};

/// The largest dimension of any operator or variable (`2^30`), independent of memory.
pub const MAX_DIMENSION: usize = 1 << 30;

/// This machine's physical memory in bytes (`MemTotal` of `/proc/meminfo`), or `None` where it
/// cannot be read (then only [`MAX_DIMENSION`] and the per-array limits apply).
pub fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Checks that `bytes` (an estimate of what `what` will allocate) fits in this machine's
/// physical memory; `option` names the setting that controls the size.
pub fn check_memory(what: &str, option: &str, bytes: u64) -> Result<()> {
    if let Some(total) = physical_memory() {
        if bytes > total {
            return Err(Error::invalid(
                option,
                format!(
                    "{what} needs about {:.1} GiB of memory, more than this machine's {:.1} GiB; \
                     reduce the size",
                    bytes as f64 / GIB,
                    total as f64 / GIB
                ),
            ));
        }
    }
    Ok(())
}

/// Bytes of `count` `f64` values, saturating.
pub fn f64_bytes(count: u64) -> u64 {
    count.saturating_mul(8)
}

const GIB: f64 = (1u64 << 30) as f64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_size_is_refused_with_the_option_named() {
        if physical_memory().is_some() {
            let e = check_memory("the network", "prior.rows", u64::MAX).unwrap_err();
            assert!(e.to_string().contains("prior.rows"), "{e}");
            assert!(e.to_string().contains("GiB"), "{e}");
        }
        check_memory("a little", "x", 1024).unwrap();
    }
}
