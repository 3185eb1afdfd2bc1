//! Typed configurations (serde, unknown keys rejected) and presets.
