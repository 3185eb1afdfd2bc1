//! Proposing the next mixtures: the search space and the proposer interface shared by GP-UCB
//! and the baselines.
//!
//! Everything that proposes mixtures (GP-UCB here, uniform / natural / random / RegMix in
//! [`crate::baselines`]) implements [`Proposer`], so a search can swap methods and compare
//! them with the same budget through the identical pipeline. Objectives are maximised
//! (higher benchmark scores are better).
//!
//! - [`space`]: the search space (joint or factorized, bounds, projection, mixtures ↔ points);
//! - [`proposer`]: the [`Proposer`] trait, the trials it reads ([`Observations`]), what it
//!   returns ([`Proposal`]) and how it fails ([`ProposeError`]);
//! - [`ucb`]: GP-UCB with GP-BUCB batches and the μ − σ recommendation;
//! - [`multifidelity`]: MF-GP-UCB: the mixture by UCB at the target fidelity, the fidelity by
//!   BOCA's threshold rule;
//! - [`design`]: the space-filling initial design.

pub mod design;
pub mod multifidelity;
pub mod proposer;
pub mod space;
pub mod ucb;

pub use proposer::{Observations, Proposal, ProposeError, Proposer};
pub use space::{Block, SearchSpace, SpaceCells, SpaceConstraints, SpaceError, SpaceKind};
