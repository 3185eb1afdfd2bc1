//! Model configuration with Hugging Face `config.json` field names, and the presets.
//!
//! Exists so that a real Qwen2 checkpoint's `config.json` loads as it is, and so that our own
//! checkpoints are readable by Hugging Face tools. Presets are functions (torchtitan style);
//! every field can be overridden after the preset is chosen.

use serde::{Deserialize, Serialize};

use super::error::ModelError;

/// A Qwen2 decoder (plus the optional LLaVA-style projector); see `docs/model.md`.
///
/// Unknown fields of a Hugging Face `config.json` (e.g. `bos_token_id`, `sliding_window`) are
/// accepted and ignored, so a real checkpoint's configuration loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen2Config {
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// Hidden size H.
    pub hidden_size: usize,
    /// SwiGLU inner width I.
    pub intermediate_size: usize,
    /// Decoder layers L.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Longest sequence the model accepts.
    pub max_position_embeddings: usize,
    /// Rotary base θ.
    pub rope_theta: f64,
    /// RMSNorm ε.
    pub rms_norm_eps: f64,
    /// The LM head reuses the token embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Standard deviation of the random initialisation.
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Activation of the MLP; only `silu` is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Image patch feature size D (LLaVA's field name); `None` = text only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mm_hidden_size: Option<usize>,
    /// Token id whose positions receive projected image patches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_token_index: Option<u32>,
    /// `"qwen2"`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// `["Qwen2ForCausalLM"]`.
    #[serde(default = "default_architectures")]
    pub architectures: Vec<String>,
    /// Parameter dtype the checkpoint was saved in (informational, as in Hugging Face).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
}

fn default_init_range() -> f64 {
    0.02
}
fn default_act() -> String {
    "silu".into()
}
fn default_model_type() -> String {
    "qwen2".into()
}
fn default_architectures() -> Vec<String> {
    vec!["Qwen2ForCausalLM".into()]
}

/// The shape fields a preset chooses (the rest take Qwen2's defaults).
struct Shape {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    rope_theta: f64,
    tie_word_embeddings: bool,
    max_position_embeddings: usize,
}

/// The most decoder layers a configuration may have (the largest Qwen2 has 80).
pub const MAX_LAYERS: usize = 1024;

/// Names accepted by [`Qwen2Config::preset`].
pub const PRESETS: &[&str] = &[
    "tiny",
    "mini",
    "small",
    "qwen2-0.5b",
    "qwen2-1.5b",
    "qwen2-7b",
    "qwen2.5-7b",
];

impl Qwen2Config {
    /// Adapts the configuration to a prepared corpus: its image feature width and image token
    /// (a corpus without images leaves both as they are).
    pub fn adapt_to(&mut self, manifest: &crate::data::corpus::Manifest) {
        if let Some(img) = &manifest.image {
            self.mm_hidden_size = Some(img.dim);
            self.image_token_index = Some(manifest.special_tokens.image);
        }
    }

    /// A configuration of `s`'s shape with Qwen2's other defaults (text only).
    fn shape(s: Shape) -> Self {
        Self {
            vocab_size: s.vocab_size,
            hidden_size: s.hidden_size,
            intermediate_size: s.intermediate_size,
            num_hidden_layers: s.num_hidden_layers,
            num_attention_heads: s.num_attention_heads,
            num_key_value_heads: s.num_key_value_heads,
            max_position_embeddings: s.max_position_embeddings,
            rope_theta: s.rope_theta,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: s.tie_word_embeddings,
            initializer_range: 0.02,
            hidden_act: default_act(),
            mm_hidden_size: None,
            image_token_index: None,
            model_type: default_model_type(),
            architectures: default_architectures(),
            torch_dtype: None,
        }
    }

    /// `tiny`: the CPU proxy (about 0.1 M parameters at V = 128); a trial takes seconds.
    pub fn tiny() -> Self {
        Self::shape(Shape {
            vocab_size: 128,
            hidden_size: 64,
            intermediate_size: 176,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
            max_position_embeddings: 4096,
        })
    }

    /// `mini`: the demo's proxy (about 0.4 M parameters at V = 128): `tiny` twice as wide, the
    /// smallest shape whose benchmark losses respond to every task of the built-in corpus
    /// within a 200-step proxy (`tiny`'s barely move with the OCR, grounding and detection
    /// shares, so a `tiny` search undervalues them; docs/transfer.md). A trial takes ~20 s on
    /// one core.
    pub fn mini() -> Self {
        Self::shape(Shape {
            vocab_size: 128,
            hidden_size: 128,
            intermediate_size: 352,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
            max_position_embeddings: 4096,
        })
    }

    /// `small`: the CPU transfer target (about 3 M parameters at V = 128).
    pub fn small() -> Self {
        Self::shape(Shape {
            vocab_size: 128,
            hidden_size: 256,
            intermediate_size: 704,
            num_hidden_layers: 4,
            num_attention_heads: 8,
            num_key_value_heads: 4,
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
            max_position_embeddings: 4096,
        })
    }

    /// Qwen2-0.5B's public shapes.
    pub fn qwen2_0_5b() -> Self {
        Self::shape(Shape {
            vocab_size: 151_936,
            hidden_size: 896,
            intermediate_size: 4864,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            rope_theta: 1e6,
            tie_word_embeddings: true,
            max_position_embeddings: 131_072,
        })
    }

    /// Qwen2-1.5B's public shapes.
    pub fn qwen2_1_5b() -> Self {
        Self::shape(Shape {
            vocab_size: 151_936,
            hidden_size: 1536,
            intermediate_size: 8960,
            num_hidden_layers: 28,
            num_attention_heads: 12,
            num_key_value_heads: 2,
            rope_theta: 1e6,
            tie_word_embeddings: true,
            max_position_embeddings: 131_072,
        })
    }

    /// Qwen2-7B's public shapes.
    pub fn qwen2_7b() -> Self {
        Self::shape(Shape {
            vocab_size: 152_064,
            hidden_size: 3584,
            intermediate_size: 18_944,
            num_hidden_layers: 28,
            num_attention_heads: 28,
            num_key_value_heads: 4,
            rope_theta: 1e6,
            tie_word_embeddings: false,
            max_position_embeddings: 131_072,
        })
    }

    /// Qwen2.5-7B's public shapes (the same architecture as Qwen2-7B).
    pub fn qwen2_5_7b() -> Self {
        Self::qwen2_7b()
    }

    /// The preset called `name` (one of [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Self, ModelError> {
        Ok(match name {
            "tiny" => Self::tiny(),
            "mini" => Self::mini(),
            "small" => Self::small(),
            "qwen2-0.5b" => Self::qwen2_0_5b(),
            "qwen2-1.5b" => Self::qwen2_1_5b(),
            "qwen2-7b" => Self::qwen2_7b(),
            "qwen2.5-7b" => Self::qwen2_5_7b(),
            other => {
                return Err(ModelError::UnknownPreset {
                    name: other.to_string(),
                    known: PRESETS.join(", "),
                })
            }
        })
    }

    /// Floats the forward pass keeps per token for the backward pass, at least: per layer
    /// about `8H + 3I` (norm inputs and outputs, q/k/v, attention output, residuals, the MLP's
    /// gate, up and activation), and `2V` for the logits and their gradient. Attention scores
    /// are not counted (the fused kernel does not keep them), so this is a lower bound the
    /// trainer's memory check (`train::limits`) compares with the memory available.
    pub fn activation_floats_per_token(&self) -> usize {
        let (h, i) = (self.hidden_size, self.intermediate_size);
        self.num_hidden_layers
            .saturating_mul(8 * h + 3 * i)
            .saturating_add(2 * self.vocab_size)
    }

    /// Head size `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the shapes fit together (head counts divide, even head size, silu).
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |field: &'static str, reason: String| ModelError::Config { field, reason };
        if self.vocab_size == 0 || self.hidden_size == 0 || self.intermediate_size == 0 {
            return Err(bad(
                "vocab_size/hidden_size/intermediate_size",
                "must be positive".into(),
            ));
        }
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(bad(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if self.num_key_value_heads == 0 || self.num_attention_heads % self.num_key_value_heads != 0
        {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        // `param_specs` lists every layer's tensors: a corrupt layer count must not size it.
        if self.num_hidden_layers > MAX_LAYERS {
            return Err(bad(
                "num_hidden_layers",
                format!(
                    "{} is more than {MAX_LAYERS} layers (a corrupt config?)",
                    self.num_hidden_layers
                ),
            ));
        }
        if self.head_dim() % 2 != 0 {
            return Err(bad(
                "hidden_size",
                format!(
                    "head size {} must be even for rotary embeddings",
                    self.head_dim()
                ),
            ));
        }
        if self.hidden_act != "silu" {
            return Err(bad(
                "hidden_act",
                format!("{:?} is not supported (only \"silu\")", self.hidden_act),
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return Err(bad("rms_norm_eps/rope_theta", "must be positive".into()));
        }
        if let (Some(img), None) | (None, Some(img)) = (
            self.image_token_index.map(|i| i as usize),
            self.mm_hidden_size,
        ) {
            return Err(bad(
                "mm_hidden_size/image_token_index",
                format!("both or neither must be set (one is {img})"),
            ));
        }
        if let Some(i) = self.image_token_index {
            if i as usize >= self.vocab_size {
                return Err(bad(
                    "image_token_index",
                    format!("{i} is outside the vocabulary of {}", self.vocab_size),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_presets_have_published_sizes() {
        // Published parameter counts (text model, no projector): 0.49B, 1.54B, 7.62B.
        let b = |n: usize| n as f64 / 1e9;
        assert!((b(Qwen2Config::qwen2_0_5b().num_params()) - 0.494).abs() < 0.01);
        assert!((b(Qwen2Config::qwen2_1_5b().num_params()) - 1.544).abs() < 0.01);
        assert!((b(Qwen2Config::qwen2_7b().num_params()) - 7.616).abs() < 0.01);
        for name in PRESETS {
            Qwen2Config::preset(name).unwrap().validate().unwrap();
        }
        assert!(Qwen2Config::preset("gpt2").is_err());
    }

    #[test]
    fn hf_config_json_loads_and_ignores_extra_fields() {
        let text = r#"{"architectures":["Qwen2ForCausalLM"],"bos_token_id":151643,
          "hidden_act":"silu","hidden_size":896,"initializer_range":0.02,"intermediate_size":4864,
          "max_position_embeddings":131072,"max_window_layers":24,"model_type":"qwen2",
          "num_attention_heads":14,"num_hidden_layers":24,"num_key_value_heads":2,
          "rms_norm_eps":1e-06,"rope_theta":1000000.0,"sliding_window":131072,
          "tie_word_embeddings":true,"torch_dtype":"bfloat16","vocab_size":151936}"#;
        let c: Qwen2Config = serde_json::from_str(text).unwrap();
        let mut p = Qwen2Config::qwen2_0_5b();
        p.torch_dtype = Some("bfloat16".into());
        assert_eq!(c, p);
    }
}
