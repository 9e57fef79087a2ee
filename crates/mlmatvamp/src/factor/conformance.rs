//! The shared conformance checks (filled in below).
