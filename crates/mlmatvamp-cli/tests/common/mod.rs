//! Shared test helpers: the core library's numerical helpers (one file, included from the core's
//! tests) and the command-line helpers of these tests ([`cli`]).
#![allow(dead_code, unused_imports)]

pub mod cli;

#[path = "../../../mlmatvamp/tests/common/mod.rs"]
mod numeric;
pub use numeric::*;
