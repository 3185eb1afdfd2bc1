//! The two configuration files of a Hugging Face CLIP checkpoint directory: `config.json` (a
//! `CLIPConfig` holding a `vision_config`, or a `CLIPVisionConfig` itself; the field names and
//! defaults of `transformers`' `CLIPVisionConfig`) and `preprocessor_config.json` (the
//! `CLIPImageProcessor` settings: resize, center crop, rescale, normalize).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::error::EmbedError;
use crate::fsutil::IoContext;

/// The vision tower's configuration (`CLIPVisionConfig` field names and defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Width of `image_embeds` (rows of `visual_projection.weight`).
    pub projection_dim: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads (`hidden_size` must be a multiple).
    pub num_attention_heads: usize,
    /// Input channels (3).
    pub num_channels: usize,
    /// Side of the square input image in pixels.
    pub image_size: usize,
    /// Side of a square patch in pixels.
    pub patch_size: usize,
    /// MLP activation: `quick_gelu`, `gelu`, `gelu_new` or `gelu_pytorch_tanh`.
    pub hidden_act: String,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        // transformers' CLIPVisionConfig defaults.
        ClipVisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipVisionConfig {
    /// Reads `config.json`: the `vision_config` of a `CLIPConfig` (`model_type` "clip" or a
    /// `vision_config` key), else the file itself as a `CLIPVisionConfig`.
    pub fn read(path: &Path) -> Result<Self, EmbedError> {
        let text = std::fs::read_to_string(path).at("reading", path)?;
        Self::parse(&text, path)
    }

    /// Parses the text of `config.json` (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, EmbedError> {
        let v: Value = serde_json::from_str(text).map_err(|e| EmbedError::json(path, e))?;
        let vision = match v.get("vision_config") {
            Some(inner) if inner.is_object() => inner.clone(),
            Some(Value::Null) | None => v,
            Some(_) => {
                return Err(EmbedError::config(
                    path,
                    "vision_config",
                    "expected an object",
                ))
            }
        };
        let cfg: ClipVisionConfig =
            serde_json::from_value(vision).map_err(|e| EmbedError::json(path, e))?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), EmbedError> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("projection_dim", self.projection_dim),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(EmbedError::config(path, field, "must be at least 1"));
            }
        }
        if self.num_channels != 3 {
            return Err(EmbedError::config(
                path,
                "num_channels",
                format!("{}: only RGB (3) is supported", self.num_channels),
            ));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(EmbedError::config(
                path,
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if self.image_size % self.patch_size != 0 {
            return Err(EmbedError::config(
                path,
                "patch_size",
                format!(
                    "{} does not divide image_size {}",
                    self.patch_size, self.image_size
                ),
            ));
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(EmbedError::config(
                path,
                "layer_norm_eps",
                "must be positive",
            ));
        }
        Activation::parse(&self.hidden_act)
            .ok_or_else(|| {
                EmbedError::config(
                    path,
                    "hidden_act",
                    format!(
                        "{:?}: expected quick_gelu, gelu, gelu_new or gelu_pytorch_tanh",
                        self.hidden_act
                    ),
                )
            })
            .map(|_| ())
    }

    /// Patches per side of the grid.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Patch tokens per image (the CLS token not counted).
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// The MLP activation (validated when read).
    pub fn activation(&self) -> Activation {
        Activation::parse(&self.hidden_act).unwrap_or(Activation::QuickGelu)
    }
}

/// The MLP activations of CLIP checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x · sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// The exact (erf) GELU.
    Gelu,
    /// The tanh approximation of GELU.
    GeluTanh,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Activation::QuickGelu),
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            _ => None,
        }
    }
}

/// How to resize: the shortest edge to a length (aspect kept), or to an exact size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// Shortest edge to this many pixels, the longer edge `floor(len · long / short)`.
    ShortestEdge(usize),
    /// Exactly `height × width`.
    Exact {
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
}

/// PIL resampling filters supported by the resize (`resample` codes 1, 2, 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// `PIL.Image.LANCZOS` (1).
    Lanczos,
    /// `PIL.Image.BILINEAR` (2).
    Bilinear,
    /// `PIL.Image.BICUBIC` (3).
    Bicubic,
}

/// `CLIPImageProcessor`'s settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Convert to RGB first (always done: the tower takes 3 channels).
    pub do_convert_rgb: bool,
    /// The resize, if any.
    pub resize: Option<ResizeTo>,
    /// The resampling filter.
    pub resample: Resample,
    /// The center crop `(height, width)`, if any.
    pub crop: Option<(usize, usize)>,
    /// Multiply pixel values by this factor, if any.
    pub rescale: Option<f64>,
    /// Per-channel `(mean, std)`, if normalizing.
    pub normalize: Option<([f64; 3], [f64; 3])>,
}

/// OpenAI CLIP's channel means and standard deviations (transformers' defaults).
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

impl Preprocess {
    /// Reads `preprocessor_config.json` with `CLIPImageProcessor`'s defaults for absent fields.
    pub fn read(path: &Path) -> Result<Self, EmbedError> {
        let text = std::fs::read_to_string(path).at("reading", path)?;
        Self::parse(&text, path)
    }

    /// Parses the text of `preprocessor_config.json` (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, EmbedError> {
        let v: Value = serde_json::from_str(text).map_err(|e| EmbedError::json(path, e))?;
        let flag = |k: &str| -> Result<bool, EmbedError> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(true),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(EmbedError::config(
                    path,
                    k,
                    format!("{other}: expected true or false"),
                )),
            }
        };
        let resize = if flag("do_resize")? {
            Some(parse_size(v.get("size"), path)?)
        } else {
            None
        };
        let crop = if flag("do_center_crop")? {
            Some(match parse_size(v.get("crop_size"), path)? {
                ResizeTo::ShortestEdge(n) => (n, n),
                ResizeTo::Exact { height, width } => (height, width),
            })
        } else {
            None
        };
        let resample = match v.get("resample") {
            None | Some(Value::Null) => Resample::Bicubic,
            Some(r) => match r.as_u64() {
                Some(1) => Resample::Lanczos,
                Some(2) => Resample::Bilinear,
                Some(3) => Resample::Bicubic,
                _ => {
                    return Err(EmbedError::config(
                        path,
                        "resample",
                        format!("{r}: supported are 1 (lanczos), 2 (bilinear), 3 (bicubic)"),
                    ))
                }
            },
        };
        let rescale = if flag("do_rescale")? {
            Some(match v.get("rescale_factor") {
                None | Some(Value::Null) => 1.0 / 255.0,
                Some(f) => f.as_f64().ok_or_else(|| {
                    EmbedError::config(path, "rescale_factor", format!("{f}: expected a number"))
                })?,
            })
        } else {
            None
        };
        let normalize = if flag("do_normalize")? {
            let mean = triple(v.get("image_mean"), "image_mean", CLIP_MEAN, path)?;
            let std = triple(v.get("image_std"), "image_std", CLIP_STD, path)?;
            if std.contains(&0.0) {
                return Err(EmbedError::config(
                    path,
                    "image_std",
                    "a zero standard deviation",
                ));
            }
            Some((mean, std))
        } else {
            None
        };
        Ok(Preprocess {
            do_convert_rgb: flag("do_convert_rgb")?,
            resize,
            resample,
            crop,
            rescale,
            normalize,
        })
    }
}

fn parse_size(v: Option<&Value>, path: &Path) -> Result<ResizeTo, EmbedError> {
    let bad = |what: String| EmbedError::config(path, "size", what);
    let positive = |x: &Value, k: &str| -> Result<usize, EmbedError> {
        match x.as_u64() {
            Some(n) if n > 0 => Ok(n as usize),
            _ => Err(bad(format!("{k} = {x}: expected a positive integer"))),
        }
    };
    match v {
        None | Some(Value::Null) => Ok(ResizeTo::ShortestEdge(224)),
        Some(n @ Value::Number(_)) => Ok(ResizeTo::ShortestEdge(positive(n, "size")?)),
        Some(Value::Object(m)) => {
            if let Some(s) = m.get("shortest_edge") {
                Ok(ResizeTo::ShortestEdge(positive(s, "shortest_edge")?))
            } else if let (Some(h), Some(w)) = (m.get("height"), m.get("width")) {
                Ok(ResizeTo::Exact {
                    height: positive(h, "height")?,
                    width: positive(w, "width")?,
                })
            } else {
                Err(bad(format!(
                    "{}: expected {{\"shortest_edge\": N}} or {{\"height\": H, \"width\": W}}",
                    Value::Object(m.clone())
                )))
            }
        }
        Some(other) => Err(bad(format!("{other}: expected an integer or an object"))),
    }
}

fn triple(
    v: Option<&Value>,
    field: &str,
    default: [f64; 3],
    path: &Path,
) -> Result<[f64; 3], EmbedError> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            Ok([x, x, x])
        }
        Some(Value::Array(a)) if a.len() == 3 => {
            let mut out = [0.0; 3];
            for (o, x) in out.iter_mut().zip(a) {
                *o = x.as_f64().ok_or_else(|| {
                    EmbedError::config(path, field, format!("{x}: expected a number"))
                })?;
            }
            Ok(out)
        }
        Some(other) => Err(EmbedError::config(
            path,
            field,
            format!("{other}: expected 3 numbers"),
        )),
    }
}
