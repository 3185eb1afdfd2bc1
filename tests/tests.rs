//! Integration tests, built as one binary (see STYLE.md).

mod megatron_compat;
mod cli;
mod sampler;
