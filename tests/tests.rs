//! Integration tests, built as one binary (see STYLE.md).

mod sampler;
