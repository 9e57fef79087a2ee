//! The front door's own pieces, shared by the `mlmatvamp` binary and its tests: rendering the
//! core's figures ([`render`]) and showing the core's observers as progress bars ([`progress`]).
//! Everything computational lives in the core library, `mlmatvamp`.

#![warn(missing_docs)]

pub mod progress;
pub mod render;

use std::io::{self, Write};
use std::sync::Mutex;

/// What writing to standard output has met so far: `None` while every line went out, else the
/// first error. After an error nothing more is written.
static STDOUT_FAULT: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes one line to standard output, like `println!`, without ever panicking.
///
/// `println!` panics when standard output is a pipe that its reader has closed (`mlmatvamp se
/// … | head -1` once the table outgrows the pipe's buffer). Here the first failed write is
/// remembered and every later line is dropped, so the command still finishes its work (its
/// files are written before it prints) and [`stdout_outcome`] decides the exit status.
pub fn say_line(args: std::fmt::Arguments<'_>) {
    let mut fault = STDOUT_FAULT.lock().unwrap_or_else(|e| e.into_inner());
    if fault.is_some() {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        *fault = Some(e);
    }
}

/// Flushes standard output and reports how writing to it went: `Ok` if every line went out or
/// the reader closed the pipe (the usual end of `| head`, not a failure of the command), else
/// the first other error (a full disk behind `> file`, say).
pub fn stdout_outcome() -> io::Result<()> {
    let mut fault = STDOUT_FAULT.lock().unwrap_or_else(|e| e.into_inner());
    if fault.is_none() {
        if let Err(e) = io::stdout().lock().flush() {
            *fault = Some(e);
        }
    }
    match fault.take() {
        Some(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}

/// `println!` for the command-line program: one line to standard output through [`say_line`],
/// which never panics on a closed pipe.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say_line(::std::format_args!($($arg)*))
    };
}

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
