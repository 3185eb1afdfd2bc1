//! Baseline proposers with the same interface and budget as GP-UCB (in progress).
