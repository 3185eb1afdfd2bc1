//! Saving and loading a model as safetensors: tensor `centroids` f32 `[k, dim]` and metadata
//! `{"metric", "k", "dim"}`, so later runs and other tools label new data the same way.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::config::Metric;
use super::error::KMeansError;
use super::model::KMeans;
use crate::fsutil::{write_atomic, IoContext};

/// Name of the centroid tensor in a saved model.
pub const CENTROIDS_TENSOR: &str = "centroids";

impl KMeans {
    /// Writes the model to `path` atomically (temp file, fsync, rename) as safetensors:
    /// tensor `centroids` f32 `[k, dim]`, metadata `{"metric", "k", "dim"}`.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), KMeansError> {
        let bytes: Vec<u8> = self
            .centroids()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let view =
            TensorView::new(Dtype::F32, vec![self.k(), self.dim()], &bytes).map_err(|source| {
                KMeansError::Safetensors {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let metadata = HashMap::from([
            ("metric".to_string(), self.metric().name().to_string()),
            ("k".to_string(), self.k().to_string()),
            ("dim".to_string(), self.dim().to_string()),
        ]);
        let file = safetensors::serialize([(CENTROIDS_TENSOR, view)], Some(metadata)).map_err(
            |source| KMeansError::Safetensors {
                path: path.to_path_buf(),
                source,
            },
        )?;
        write_atomic(path, &file)?;
        Ok(())
    }

    /// Reads a model written by [`KMeans::save_safetensors`]. A missing `metric` entry means
    /// Euclidean (files written by other tools); a `k` entry, if present, must match the tensor.
    pub fn load_safetensors(path: &Path) -> Result<KMeans, KMeansError> {
        let bytes = std::fs::read(path).at("reading", path)?;
        let bad = |problem: String| KMeansError::BadModelFile {
            path: path.to_path_buf(),
            problem,
        };
        let st_err = |source| KMeansError::Safetensors {
            path: path.to_path_buf(),
            source,
        };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(st_err)?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(st_err)?;
        let view = tensors.tensor(CENTROIDS_TENSOR).map_err(|_| {
            bad(format!(
                "expected a tensor {CENTROIDS_TENSOR:?} (f32 [k, dim]); found {:?}",
                tensors.names()
            ))
        })?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor {CENTROIDS_TENSOR:?} must be F32, found {:?}",
                view.dtype()
            )));
        }
        let &[k, dim] = view.shape() else {
            return Err(bad(format!(
                "tensor {CENTROIDS_TENSOR:?} must have rank 2 [k, dim], found shape {:?}",
                view.shape()
            )));
        };
        if k == 0 || dim == 0 {
            return Err(bad(format!(
                "tensor {CENTROIDS_TENSOR:?} is empty (shape [{k}, {dim}])"
            )));
        }
        let meta = header.metadata().clone().unwrap_or_default();
        let metric = match meta.get("metric") {
            None => Metric::Euclidean,
            Some(name) => name
                .parse()
                .map_err(|e: KMeansError| KMeansError::BadMetric {
                    path: path.to_path_buf(),
                    source: Box::new(e),
                })?,
        };
        if let Some(meta_k) = meta.get("k") {
            if meta_k.parse::<usize>().ok() != Some(k) {
                return Err(bad(format!(
                    "metadata \"k\" = {meta_k:?} does not match the tensor's {k} rows"
                )));
            }
        }
        let centroids: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        KMeans::from_centroids(centroids, dim, metric).map_err(|e| KMeansError::BadCentroids {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }
}
