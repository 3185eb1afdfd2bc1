//! The data layer: raw samples → prepared corpus of (concept, task) cells → mixture batches.
//!
//! - [`synth`]: the built-in synthetic multimodal corpus (raw JSONL, the default data).
//! - [`raw`]: the raw JSONL sample format users give to `prepare`.
//! - [`sources`]: real-format sources (LLaVA JSON/JSONL, WebDataset), tokenised with a Hugging
//!   Face tokenizer, with precomputed CLIP embeddings.
//! - [`label`]: the safe charset of task, concept, benchmark and cell names.
//! - [`kmeans`] and [`cluster_metrics`]: concept discovery over CLIP embeddings.
//! - [`prepare`]: raw samples → `corpus/` (manifest + Megatron `.bin`/`.idx` per cell).
//! - [`megatron`]: Megatron-LM `MMapIndexedDataset` reader and writer.
//! - [`corpus`]: the manifest and a memory-mapped view of a prepared corpus.
//! - [`mixture`]: a mixture (weights by `concept/task`), checked once, in any cell order.
//! - [`sampler`]: deterministic mixture batches (i.i.d. counter-based, or Megatron blending).

pub mod cluster_metrics;
pub mod corpus;
pub mod kmeans;
pub mod label;
pub mod megatron;
pub mod mixture;
pub mod prepare;
pub mod raw;
pub mod sampler;
pub mod sources;
pub mod synth;
