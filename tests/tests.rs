//! Integration tests, built as one binary (see STYLE.md).

mod cli;
mod megatron_compat;
mod sampler;
