//! Real-format sources for `prepare`: LLaVA-style JSON / JSONL and WebDataset tar shards,
//! read one record at a time, tokenised with a Hugging Face tokenizer and chat template, and
//! given precomputed CLIP embeddings (docs/real-data.md).
//!
//! - [`record`]: the record every reader yields (id, image, conversation turns, task) and
//!   where it came from (`file:line`, `file#element N`, `shard:key`).
//! - [`llava`]: LLaVA-style JSON (a top-level array, streamed element by element) and JSONL.
//! - [`webdataset`]: WebDataset tar shards (`KEY.jpg` + `KEY.json` or `KEY.txt`).
//! - [`task_map`]: a record's task from its `task` field or a `--task-map` file.
//! - [`chat`]: `tokenizer.json` + the chat template → token ids and the assistant loss mask.
//! - [`embeddings`]: precomputed embeddings (`.npy`, `.safetensors`, or `mixatlas embed`'s
//!   directory of parts), by id or by row order, with optional per-image features.
//! - [`read`]: records → validated [`RawSample`](super::raw::RawSample)s for `prepare`.

pub mod chat;
pub mod embeddings;
pub mod llava;
pub mod read;
pub mod record;
pub mod task_map;
pub mod webdataset;
