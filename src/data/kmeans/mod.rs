//! k-means over CLIP image embeddings: the concept axis of the mixture space.
//!
//! `mixatlas prepare` fits k-means (k ≈ 10) on an in-memory sample of image embeddings, then
//! streams the whole corpus through [`KMeans::assign`] chunk by chunk; each document's cluster is
//! its concept cell. The centroids are saved next to the prepared corpus as safetensors so
//! later runs (and other tools) label new data the same way.
//!
//! The algorithm follows scikit-learn's `KMeans(algorithm="lloyd")`, so the two can be compared
//! on the same data (`benches/kmeans.rs`):
//!
//! - greedy k-means++ seeding over all points (`2 + ⌊ln k⌋` candidates per centre, keeping the
//!   one that lowers the potential most);
//! - Lloyd iterations, each a single pass over the data: per chunk of rows, the products
//!   `x·c` come from one faer matrix product, the nearest centroid is
//!   `argmin_c ‖c‖² − 2 x·c` and the row is added to its cluster's sum in the same loop, while
//!   it is still in cache;
//! - empty clusters are re-seeded from the points farthest from their centroid;
//! - stop when the labels no longer change or when the total squared centroid shift falls below
//!   `tol` times the mean per-feature variance of the data;
//! - a final pass relabels against the final centroids and computes the inertia from exact
//!   (direct-difference) squared distances.
//!
//! Cosine mode is spherical k-means: rows and centroids are L2-normalised and the Euclidean
//! machinery runs on the unit sphere.
//!
//! Determinism: for a given seed the result is bit-for-bit the same whatever the number of
//! threads. Rows are cut into blocks whose size depends only on the number of rows; each block
//! is reduced sequentially and the block results are combined in block order. Distance
//! products run single-threaded inside a block (`Par::Seq`), so faer's own blocking never
//! depends on the thread count either. (Different CPUs may pick different SIMD kernels in faer
//! and can differ in the last bits.)
//!
//! Files: [`model`] (the API: [`KMeans`], [`Assignment`], [`FitReport`]), [`config`]
//! ([`KMeansConfig`], [`Metric`]), [`error`] ([`KMeansError`]), `io` (safetensors centroids),
//! `distance` (SIMD kernels, faer products, blocking), `points` (the preparation pass), `seed`
//! (k-means++), [`lloyd`] (Lloyd passes, [`FitProgress`]) and `assign` (assignment passes).

mod assign;
pub mod config;
mod distance;
pub mod error;
mod io;
pub mod lloyd;
pub mod model;
mod points;
mod seed;

pub use config::{KMeansConfig, Metric};
pub use error::KMeansError;
pub use io::CENTROIDS_TENSOR;
pub use lloyd::FitProgress;
pub use model::{Assignment, FitReport, KMeans};

#[cfg(test)]
mod tests;
