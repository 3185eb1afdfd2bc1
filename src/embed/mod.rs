//! `mixatlas embed`: CLIP image embeddings and per-image features computed in Rust
//! (docs/real-data.md). A Hugging Face `CLIPVisionModelWithProjection` checkpoint directory
//! ([`config`]) is loaded into a candle tower ([`tower`]); images are decoded and preprocessed
//! exactly as `CLIPImageProcessor` does ([`preprocess`], Pillow's resampling in [`resize`],
//! libjpeg-turbo's JPEG decoder in [`jpeg`]);
//! [`run::embed_to_dir`] writes the resumable embedding directory ([`output`], [`npy`]) from
//! any stream of [`source::ImageItem`]s.

pub mod config;
mod cpu_tower;
pub mod error;
pub mod features;
pub mod jpeg;
pub mod npy;
pub mod output;
pub mod preprocess;
pub mod resize;
pub mod run;
pub mod source;
pub mod tower;

pub use error::EmbedError;
pub use features::FeatureSpec;
pub use run::{embed_to_dir, ClipEmbedder, EmbedOptions, EmbedSummary, OnError};
pub use source::{ImageBytes, ImageItem};
