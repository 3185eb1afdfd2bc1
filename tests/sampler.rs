//! Sampler integration tests (in progress).
