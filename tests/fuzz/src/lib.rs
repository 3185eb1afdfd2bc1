//! The fuzz targets and the mutation engine, as a library for the two fuzzing binaries.
//! `tests/fuzz_smoke.rs` includes the same two files by path.

pub mod mutate;
pub mod targets;
