//! The front door's own pieces, shared by the `mlmatvamp` binary and its tests: rendering the
//! core's figures ([`render`]) and showing the core's observers as progress bars ([`progress`]).
//! Everything computational lives in the core library, `mlmatvamp`.

#![warn(missing_docs)]

pub mod progress;
pub mod render;
