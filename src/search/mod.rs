//! The search: finished trials (ask/tell), objectives, methods and recipes.
//!
//! `mixatlas suggest`, `predict` and `recipe` are built from these parts; the full search
//! loop with executors (a later issue) drives the same ones.

pub mod methods;
pub mod recipe;
pub mod trials;
