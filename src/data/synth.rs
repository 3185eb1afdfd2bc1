//! The built-in synthetic multimodal corpus: MixAtlas's embedded default data.
//!
//! Every demo, test and benchmark runs on this corpus, so it is designed to make the mixture
//! question real: the best mixture is neither uniform nor the natural proportions. See
//! `docs/synthetic-corpus.md` for the full description. In short:
//!
//! - **Latent images.** Each sample has a latent image: a visual concept (10 by default:
//!   street, indoor, animals, …), 0–3 objects (class, colour, grid position) and an optional
//!   line of text glyphs. The concept decides the object classes, the text and the noise.
//! - **CLIP-like embedding** (`clip`, 64-d): a unit vector made of a concept direction, a
//!   direction shared by related concepts (documents/screenshots/charts, animals/nature, …),
//!   object attributes and noise; a few percent of images are ambiguous blends of two concepts.
//!   Concepts are recoverable by k-means but not trivially separable.
//! - **Image patch features** (`image`, 8 patches × 32): a 2 × 4 grid; an object's class and
//!   colour vectors sit in its patch, text glyphs in the free patches in raster order, plus a
//!   concept tint and noise. Answers can only be read off these features.
//! - **Five task grammars**: captioning, OCR, grounding, detection, VQA (colour, count,
//!   existence and text questions), as token sequences
//!   `<bos> <img>×P <task> prompt… <sep> answer… <eos>` with the loss on answer and `<eos>`.
//! - **Heterogeneity**: skewed concept frequencies and per-concept task mixes; per-concept
//!   difficulty (object count, text length, noise); harmful cells with heavy label noise;
//!   redundant cells (a small pool of repeated images; OCR on text-free nature images).
//! - **Ten held-out benchmarks**, each with its own distribution over cells and clean labels.
//!
//! Output is deterministic for a seed (independent of thread count) and streamed to disk as
//! the raw JSONL format `prepare` reads ([`super::raw`]).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::fsutil::{IoContext, PathIoError, StagingDir};
use crate::rng::SplitMix64;

/// The task axis in canonical order.
pub const TASKS: [&str; 5] = ["captioning", "ocr", "grounding", "detection", "vqa"];

const CAPTIONING: usize = 0;
const OCR: usize = 1;
const GROUNDING: usize = 2;
const DETECTION: usize = 3;
const VQA: usize = 4;

/// Object classes a latent image can contain.
const OBJECTS: [&str; 12] = [
    "person", "car", "dog", "cat", "tree", "flower", "cup", "plate", "ball", "sign", "bar", "icon",
];
/// Object colours.
const COLORS: [&str; 8] = [
    "red", "green", "blue", "yellow", "black", "white", "orange", "purple",
];
/// Text glyphs (OCR alphabet).
const GLYPHS: usize = 16;
/// Grid rows × columns of the patch layout (positions = patches).
const GRID_COLS: usize = 4;

/// Per-concept generative parameters.
struct ConceptDef {
    name: &'static str,
    /// Caption word for the scene.
    word: &'static str,
    /// Natural frequency (unnormalised).
    freq: f64,
    /// Embedding group shared with related concepts.
    group: usize,
    /// Object classes (indices into OBJECTS).
    objects: &'static [usize],
    /// Inclusive range of the number of objects.
    n_objects: (usize, usize),
    /// Probability that the image carries text.
    text_p: f64,
    /// Inclusive range of the text length.
    text_len: (usize, usize),
    /// Patch feature noise (difficulty).
    noise: f64,
    /// Natural task mix (captioning, ocr, grounding, detection, vqa).
    tasks: [f64; 5],
}

const MIX_PHOTO: [f64; 5] = [0.45, 0.06, 0.12, 0.12, 0.25];
const MIX_TEXT: [f64; 5] = [0.20, 0.40, 0.10, 0.05, 0.25];

const CONCEPTS: [ConceptDef; 10] = [
    ConceptDef {
        name: "street",
        word: "street",
        freq: 0.20,
        group: 0,
        objects: &[0, 1, 9, 4],
        n_objects: (2, 3),
        text_p: 0.40,
        text_len: (1, 3),
        noise: 0.45,
        tasks: MIX_PHOTO,
    },
    ConceptDef {
        name: "indoor",
        word: "room",
        freq: 0.16,
        group: 1,
        objects: &[0, 6, 7, 11],
        n_objects: (1, 3),
        text_p: 0.10,
        text_len: (1, 2),
        noise: 0.30,
        tasks: MIX_PHOTO,
    },
    ConceptDef {
        name: "animals",
        word: "animal",
        freq: 0.14,
        group: 2,
        objects: &[2, 3, 4],
        n_objects: (1, 2),
        text_p: 0.05,
        text_len: (1, 2),
        noise: 0.25,
        tasks: MIX_PHOTO,
    },
    ConceptDef {
        name: "food",
        word: "meal",
        freq: 0.11,
        group: 1,
        objects: &[6, 7, 5],
        n_objects: (1, 3),
        text_p: 0.10,
        text_len: (1, 2),
        noise: 0.25,
        tasks: MIX_PHOTO,
    },
    ConceptDef {
        name: "vehicles",
        word: "traffic",
        freq: 0.10,
        group: 0,
        objects: &[1, 0, 9],
        n_objects: (1, 3),
        text_p: 0.25,
        text_len: (2, 3),
        noise: 0.35,
        tasks: MIX_PHOTO,
    },
    ConceptDef {
        name: "nature",
        word: "landscape",
        freq: 0.09,
        group: 2,
        objects: &[4, 5, 2],
        n_objects: (1, 2),
        text_p: 0.0,
        text_len: (1, 1),
        noise: 0.20,
        tasks: MIX_PHOTO,
    },
    ConceptDef {
        name: "sports",
        word: "game",
        freq: 0.07,
        group: 3,
        objects: &[0, 8],
        n_objects: (1, 3),
        text_p: 0.15,
        text_len: (1, 2),
        noise: 0.30,
        tasks: MIX_PHOTO,
    },
    ConceptDef {
        name: "documents",
        word: "document",
        freq: 0.06,
        group: 4,
        objects: &[9, 11],
        n_objects: (0, 1),
        text_p: 1.0,
        text_len: (3, 6),
        noise: 0.30,
        tasks: MIX_TEXT,
    },
    ConceptDef {
        name: "screenshots",
        word: "screen",
        freq: 0.04,
        group: 4,
        objects: &[11, 9, 10],
        n_objects: (1, 2),
        text_p: 1.0,
        text_len: (2, 5),
        noise: 0.20,
        tasks: MIX_TEXT,
    },
    ConceptDef {
        name: "charts",
        word: "chart",
        freq: 0.03,
        group: 4,
        objects: &[10, 11],
        n_objects: (2, 3),
        text_p: 0.8,
        text_len: (1, 3),
        noise: 0.25,
        tasks: MIX_TEXT,
    },
];

/// Cells whose labels are heavily corrupted (harmful to train on): (concept, task, noise).
const NOISY_CELLS: [(&str, usize, f64); 3] = [
    ("street", DETECTION, 0.5),
    ("indoor", VQA, 0.45),
    ("vehicles", GROUNDING, 0.4),
];
/// Baseline label noise everywhere else.
const BASE_LABEL_NOISE: f64 = 0.02;
/// Redundant cells drawing their images from a small pool: (concept, task, pool size).
const POOLED_CELLS: [(&str, usize, u64); 2] = [("food", CAPTIONING, 48), ("animals", VQA, 64)];

/// Which natural composition (and held-out benchmark suite) a corpus follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Composition {
    /// The original design: concept frequencies and per-concept task mixes from
    /// `CONCEPTS`, three harmful cells, all ten benchmarks.
    #[default]
    Balanced,
    /// A real midtraining pool's shape (docs/synthetic-corpus.md): task shares from
    /// LLaVA-OneVision's stage-1.5 knowledge data (re-captioned descriptions 3.5M,
    /// document/OCR 1.1M), grounding, detection and VQA scarce (2 % each), web-caption noise
    /// in the largest cells, and a nine-benchmark suite, three per category.
    Synth,
}

impl Composition {
    /// The default composition (kept out of serialised configs so they stay unchanged).
    pub fn is_balanced(&self) -> bool {
        *self == Composition::Balanced
    }

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Composition::Balanced => "balanced",
            Composition::Synth => "synth",
        }
    }
}

/// `synth` composition: the task shares (captioning, ocr, grounding, detection, vqa).
/// Captioning : document/OCR = 3.5M : 1.1M (LLaVA-OneVision stage 1.5) over the 94 % left
/// after the three scarce tasks' 2 % each.
const SYNTH_TASK_SHARES: [f64; 5] = [0.94 * 3.5 / 4.6, 0.94 * 1.1 / 4.6, 0.02, 0.02, 0.02];

/// `synth` composition: the concept distribution within each task (rows: tasks in `TASKS`
/// order; columns: concepts in `CONCEPTS` order — street, indoor, animals, food, vehicles,
/// nature, sports, documents, screenshots, charts).
const SYNTH_CONCEPT_GIVEN_TASK: [[f64; 10]; 5] = [
    // captioning: web and re-captioned photos (LAION/CC/COCO-like).
    [0.22, 0.18, 0.16, 0.12, 0.11, 0.12, 0.07, 0.01, 0.005, 0.005],
    // ocr: mostly synthetic documents (SynthDoG), some charts/screens/scene text (UReader).
    [0.06, 0.02, 0.0, 0.01, 0.04, 0.0, 0.02, 0.70, 0.08, 0.07],
    // grounding: referring expressions on COCO-like scenes.
    [0.30, 0.30, 0.10, 0.10, 0.05, 0.0, 0.15, 0.0, 0.0, 0.0],
    // detection: COCO/LVIS-like photos.
    [0.20, 0.20, 0.15, 0.15, 0.10, 0.10, 0.10, 0.0, 0.0, 0.0],
    // vqa: VQAv2/GQA-like photos and DocVQA/ChartQA-like documents.
    [0.15, 0.15, 0.10, 0.10, 0.05, 0.05, 0.10, 0.15, 0.05, 0.10],
];

/// `synth` composition: label noise of web alt-text captions, highest in the largest cells;
/// scene-text OCR on photos is noisier than synthetic documents.
const SYNTH_NOISY_CELLS: [(&str, usize, f64); 13] = [
    ("street", CAPTIONING, 0.45),
    ("indoor", CAPTIONING, 0.45),
    ("animals", CAPTIONING, 0.40),
    ("food", CAPTIONING, 0.35),
    ("vehicles", CAPTIONING, 0.35),
    ("nature", CAPTIONING, 0.30),
    ("sports", CAPTIONING, 0.30),
    ("documents", CAPTIONING, 0.10),
    ("screenshots", CAPTIONING, 0.10),
    ("charts", CAPTIONING, 0.10),
    ("street", OCR, 0.10),
    ("vehicles", OCR, 0.10),
    ("sports", OCR, 0.10),
];

/// `synth` composition: the held-out suite, three benchmarks per category.
const SYNTH_SUITE: [(&str, &str); 9] = [
    ("coco-caption", "visual understanding"),
    ("pope", "visual understanding"),
    ("lvis-det", "visual understanding"),
    ("docvqa", "document reasoning"),
    ("chartqa", "document reasoning"),
    ("textvqa", "document reasoning"),
    ("gqa", "multimodal reasoning"),
    ("countbench", "multimodal reasoning"),
    ("refcoco", "multimodal reasoning"),
];

/// Kinds of VQA question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Question {
    Color,
    Count,
    Exist,
    Text,
}

/// A held-out benchmark: its distribution over concepts and tasks.
struct BenchmarkDef {
    name: &'static str,
    about: &'static str,
    concepts: &'static [(&'static str, f64)],
    tasks: &'static [(usize, f64)],
    /// VQA question kinds allowed (empty = all).
    questions: &'static [Question],
    /// Only images with text.
    needs_text: bool,
}

const ALL: &[(&str, f64)] = &[];

const BENCHMARKS: [BenchmarkDef; 10] = [
    BenchmarkDef {
        name: "docvqa",
        about: "questions about and transcription of documents and screenshots",
        concepts: &[("documents", 0.6), ("screenshots", 0.4)],
        tasks: &[(VQA, 0.5), (OCR, 0.5)],
        questions: &[Question::Text],
        needs_text: true,
    },
    BenchmarkDef {
        name: "textvqa",
        about: "reading scene text in photos",
        concepts: &[("street", 0.5), ("vehicles", 0.3), ("sports", 0.2)],
        tasks: &[(OCR, 0.6), (VQA, 0.4)],
        questions: &[Question::Text],
        needs_text: true,
    },
    BenchmarkDef {
        name: "chartqa",
        about: "counting and colours in charts",
        concepts: &[("charts", 1.0)],
        tasks: &[(VQA, 0.7), (OCR, 0.3)],
        questions: &[Question::Count, Question::Color],
        needs_text: false,
    },
    BenchmarkDef {
        name: "coco-caption",
        about: "captions of common scenes",
        concepts: &[
            ("street", 0.25),
            ("indoor", 0.25),
            ("animals", 0.2),
            ("food", 0.15),
            ("vehicles", 0.15),
        ],
        tasks: &[(CAPTIONING, 1.0)],
        questions: &[],
        needs_text: false,
    },
    BenchmarkDef {
        name: "nocaps",
        about: "captions of rarer concepts",
        concepts: &[
            ("sports", 0.3),
            ("nature", 0.3),
            ("charts", 0.2),
            ("screenshots", 0.2),
        ],
        tasks: &[(CAPTIONING, 1.0)],
        questions: &[],
        needs_text: false,
    },
    BenchmarkDef {
        name: "refcoco",
        about: "grounding referring expressions",
        concepts: &[("street", 0.4), ("indoor", 0.3), ("sports", 0.3)],
        tasks: &[(GROUNDING, 1.0)],
        questions: &[],
        needs_text: false,
    },
    BenchmarkDef {
        name: "countbench",
        about: "how-many questions",
        concepts: ALL,
        tasks: &[(VQA, 1.0)],
        questions: &[Question::Count],
        needs_text: false,
    },
    BenchmarkDef {
        name: "pope",
        about: "object existence (hallucination) questions",
        concepts: ALL,
        tasks: &[(VQA, 1.0)],
        questions: &[Question::Exist],
        needs_text: false,
    },
    BenchmarkDef {
        name: "lvis-det",
        about: "detection on long-tail concepts",
        concepts: &[
            ("food", 0.3),
            ("animals", 0.3),
            ("nature", 0.2),
            ("sports", 0.2),
        ],
        tasks: &[(DETECTION, 1.0)],
        questions: &[],
        needs_text: false,
    },
    BenchmarkDef {
        name: "gqa",
        about: "compositional questions about common scenes",
        concepts: &[
            ("street", 0.3),
            ("indoor", 0.3),
            ("animals", 0.2),
            ("food", 0.2),
        ],
        tasks: &[(VQA, 1.0)],
        questions: &[Question::Color, Question::Exist, Question::Count],
        needs_text: false,
    },
];

/// Configuration of the synthetic corpus (TOML `[synth]` or CLI flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Number of training samples.
    pub samples: u64,
    /// Seed; the corpus is a pure function of the configuration.
    pub seed: u64,
    /// Number of latent concepts (1..=10).
    pub concepts: usize,
    /// Dimension of the CLIP-like pooled embedding.
    pub clip_dim: usize,
    /// Image patches per sample (a 2-row grid; must be a multiple of 4, at most 16).
    pub patches: usize,
    /// Feature dimension per patch.
    pub patch_dim: usize,
    /// Samples per held-out benchmark.
    pub bench_samples: u64,
    /// Samples per JSONL shard.
    pub shard_samples: u64,
    /// Fraction of images that blend two concepts (cluster overlap).
    pub ambiguity: f64,
    /// Per-dimension noise of the CLIP embedding.
    pub clip_noise: f64,
    /// The natural composition and benchmark suite (`balanced` or `synth`).
    #[serde(skip_serializing_if = "Composition::is_balanced")]
    pub composition: Composition,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            samples: 200_000,
            seed: 0,
            concepts: 10,
            clip_dim: 64,
            patches: 8,
            patch_dim: 32,
            bench_samples: 500,
            shard_samples: 100_000,
            ambiguity: 0.08,
            clip_noise: 0.07,
            composition: Composition::Balanced,
        }
    }
}

impl SynthConfig {
    /// A small corpus for unit tests and `demo --quick` (10k samples).
    pub fn tiny() -> Self {
        Self {
            samples: 10_000,
            bench_samples: 200,
            ..Self::default()
        }
    }

    /// The default demo corpus (200k samples, about 3.6M tokens).
    pub fn standard() -> Self {
        Self::default()
    }

    /// Benchmark scale (1.5M samples, tens of millions of tokens).
    pub fn large() -> Self {
        Self {
            samples: 1_500_000,
            shard_samples: 250_000,
            ..Self::default()
        }
    }

    /// The demo's corpus: 50k samples shaped like a real midtraining pool
    /// ([`Composition::Synth`]), 200 documents per benchmark.
    pub fn synth() -> Self {
        Self {
            samples: 50_000,
            bench_samples: 200,
            composition: Composition::Synth,
            ..Self::default()
        }
    }

    /// The original composition at the demo's size (50k samples, 200 per benchmark).
    pub fn balanced() -> Self {
        Self {
            samples: 50_000,
            bench_samples: 200,
            ..Self::default()
        }
    }

    /// A preset by name.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "standard" | "default" => Some(Self::standard()),
            "large" => Some(Self::large()),
            "synth" => Some(Self::synth()),
            "balanced" => Some(Self::balanced()),
            _ => None,
        }
    }

    /// The benchmarks this configuration writes, with their category (empty for the
    /// balanced composition's uncategorised ten).
    pub fn suite(&self) -> Vec<(&'static str, &'static str)> {
        match self.composition {
            Composition::Balanced => BENCHMARKS.iter().map(|b| (b.name, "")).collect(),
            Composition::Synth => SYNTH_SUITE.to_vec(),
        }
    }

    /// Checks ranges; the message names the field and what was expected.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad =
            |field: &'static str, expected: String| Err(SynthError::Config { field, expected });
        if self.samples == 0 {
            return bad("samples", "at least 1".into());
        }
        if !(1..=CONCEPTS.len()).contains(&self.concepts) {
            return bad("concepts", format!("1..={}", CONCEPTS.len()));
        }
        if self.clip_dim < 8 {
            return bad("clip_dim", "at least 8".into());
        }
        if self.patches == 0 || self.patches % GRID_COLS != 0 || self.patches > 16 {
            return bad("patches", "4, 8, 12 or 16 (rows of a 4-column grid)".into());
        }
        if self.patch_dim < 8 {
            return bad("patch_dim", "at least 8".into());
        }
        if self.shard_samples == 0 {
            return bad("shard_samples", "at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.ambiguity) {
            return bad("ambiguity", "a fraction in [0, 1]".into());
        }
        if !(self.clip_noise >= 0.0 && self.clip_noise.is_finite()) {
            return bad("clip_noise", "a non-negative number".into());
        }
        Ok(())
    }
}

/// Errors of the synthetic corpus generator.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A configuration field is out of range.
    #[error("synth config: `{field}` must be {expected}")]
    Config {
        /// The field.
        field: &'static str,
        /// What was expected.
        expected: String,
    },
    /// I/O on a named file.
    #[error(transparent)]
    Io(#[from] PathIoError),
}

/// The vocabulary: token strings in id order, with the ids the grammar uses.
#[derive(Debug, Clone)]
pub struct Vocab {
    /// `tokens[id]` is the token's string.
    pub tokens: Vec<String>,
    task: [u32; 5],
    sep: u32,
    concept_word: Vec<u32>,
    object: Vec<u32>,
    color: Vec<u32>,
    pos: Vec<u32>,
    glyph: Vec<u32>,
    number: Vec<u32>,
    words: std::collections::HashMap<&'static str, u32>,
}

/// Special tokens of the synthetic vocabulary (ids 0..=3).
pub const PAD: u32 = 0;
/// Beginning of sequence.
pub const BOS: u32 = 1;
/// End of sequence.
pub const EOS: u32 = 2;
/// Image patch placeholder.
pub const IMG: u32 = 3;

impl Vocab {
    /// Builds the vocabulary for `patches` positions.
    pub fn new(patches: usize) -> Self {
        let mut tokens: Vec<String> = ["<pad>", "<bos>", "<eos>", "<img>", "<sep>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let add = |s: String, tokens: &mut Vec<String>| {
            tokens.push(s);
            (tokens.len() - 1) as u32
        };
        let task = TASKS.map(|t| add(format!("<{t}>"), &mut tokens));
        let concept_word = CONCEPTS
            .iter()
            .map(|c| add(c.word.into(), &mut tokens))
            .collect();
        let object = OBJECTS
            .iter()
            .map(|o| add((*o).into(), &mut tokens))
            .collect();
        let color = COLORS
            .iter()
            .map(|c| add((*c).into(), &mut tokens))
            .collect();
        let pos = (0..patches)
            .map(|p| {
                add(
                    format!("@r{}c{}", p / GRID_COLS, p % GRID_COLS),
                    &mut tokens,
                )
            })
            .collect();
        let glyph = (0..GLYPHS)
            .map(|g| add(format!("'{}", (b'a' + g as u8) as char), &mut tokens))
            .collect();
        let number = (0..=4).map(|n| add(format!("#{n}"), &mut tokens)).collect();
        let mut words = std::collections::HashMap::new();
        for w in [
            "and", "with", "text", "none", "yes", "no", "what", "color", "how", "many", "is",
            "there", "read", "where", "find", "list", "objects", "describe", "?", ";",
        ] {
            words.insert(w, add(w.into(), &mut tokens));
        }
        Self {
            tokens,
            task,
            sep: 4,
            concept_word,
            object,
            color,
            pos,
            glyph,
            number,
            words,
        }
    }

    /// Vocabulary size rounded up to a multiple of 64 (the unused tail is never emitted).
    pub fn padded_size(&self) -> u32 {
        (self.tokens.len() as u32).div_ceil(64) * 64
    }

    fn w(&self, word: &str) -> u32 {
        self.words[word]
    }
}

/// Fixed random directions that define the embedding and patch feature spaces.
struct World {
    cfg: SynthConfig,
    vocab: Vocab,
    /// `[concept][clip_dim]`
    concept_dir: Vec<Vec<f64>>,
    /// `[group][clip_dim]`
    group_dir: Vec<Vec<f64>>,
    /// `[object][clip_dim]`, `[color][clip_dim]`
    obj_clip: Vec<Vec<f64>>,
    color_clip: Vec<Vec<f64>>,
    text_clip: Vec<f64>,
    /// Patch-space vectors `[..][patch_dim]`.
    obj_patch: Vec<Vec<f64>>,
    color_patch: Vec<Vec<f64>>,
    glyph_patch: Vec<Vec<f64>>,
    tint_patch: Vec<Vec<f64>>,
    /// Cell tables `[concept][task]`.
    label_noise: Vec<[f64; 5]>,
    pool: Vec<[u64; 5]>,
    concept_freq: Vec<f64>,
    /// Natural task mix within each concept (each row sums to 1).
    task_mix: Vec<[f64; 5]>,
}

/// Concept frequencies and per-concept task mixes of a composition over the first `n`
/// concepts. The balanced composition reads `CONCEPTS`; the synth one is the product of
/// `SYNTH_TASK_SHARES` and `SYNTH_CONCEPT_GIVEN_TASK` (cell share = task share × concept
/// share within the task), restricted to the first `n` concepts.
fn composition_tables(composition: Composition, n: usize) -> (Vec<f64>, Vec<[f64; 5]>) {
    match composition {
        Composition::Balanced => (
            CONCEPTS[..n].iter().map(|c| c.freq).collect(),
            CONCEPTS[..n].iter().map(|c| c.tasks).collect(),
        ),
        Composition::Synth => {
            let cells: Vec<[f64; 5]> = (0..n)
                .map(|c| {
                    std::array::from_fn(|t| SYNTH_TASK_SHARES[t] * SYNTH_CONCEPT_GIVEN_TASK[t][c])
                })
                .collect();
            let freq: Vec<f64> = cells.iter().map(|row| row.iter().sum()).collect();
            let mix = cells
                .iter()
                .zip(&freq)
                .map(|(row, f)| row.map(|x| x / f))
                .collect();
            (freq, mix)
        }
    }
}

fn unit(rng: &mut SplitMix64, d: usize) -> Vec<f64> {
    let mut v: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// One latent image.
#[derive(Debug, Clone)]
struct Latent {
    concept: usize,
    /// (object class, colour, position)
    objects: Vec<(usize, usize, usize)>,
    /// glyph ids, placed in the free patches in raster order
    text: Vec<usize>,
    /// other concept and blend weight for ambiguous images
    blend: Option<(usize, f64)>,
}

impl World {
    fn new(cfg: &SynthConfig) -> Self {
        let mut r = SplitMix64::derive(cfg.seed, 0xC0FFEE);
        let (dc, dp) = (cfg.clip_dim, cfg.patch_dim);
        let n = cfg.concepts;
        let concept_dir = (0..n).map(|_| unit(&mut r, dc)).collect();
        let group_dir = (0..5).map(|_| unit(&mut r, dc)).collect();
        let obj_clip = (0..OBJECTS.len()).map(|_| unit(&mut r, dc)).collect();
        let color_clip = (0..COLORS.len()).map(|_| unit(&mut r, dc)).collect();
        let text_clip = unit(&mut r, dc);
        let obj_patch = (0..OBJECTS.len()).map(|_| unit(&mut r, dp)).collect();
        let color_patch = (0..COLORS.len()).map(|_| unit(&mut r, dp)).collect();
        let glyph_patch = (0..GLYPHS).map(|_| unit(&mut r, dp)).collect();
        let tint_patch = (0..n).map(|_| unit(&mut r, dp)).collect();
        let idx = |name: &str| CONCEPTS[..n].iter().position(|c| c.name == name);
        let mut label_noise = vec![[BASE_LABEL_NOISE; 5]; n];
        let noisy: &[(&str, usize, f64)] = match cfg.composition {
            Composition::Balanced => &NOISY_CELLS,
            Composition::Synth => &SYNTH_NOISY_CELLS,
        };
        for &(c, t, p) in noisy {
            if let Some(c) = idx(c) {
                label_noise[c][t] = p;
            }
        }
        let mut pool = vec![[0u64; 5]; n];
        for (c, t, size) in POOLED_CELLS {
            if let Some(c) = idx(c) {
                pool[c][t] = size;
            }
        }
        let (concept_freq, task_mix) = composition_tables(cfg.composition, n);
        Self {
            cfg: cfg.clone(),
            vocab: Vocab::new(cfg.patches),
            concept_dir,
            group_dir,
            obj_clip,
            color_clip,
            text_clip,
            obj_patch,
            color_patch,
            glyph_patch,
            tint_patch,
            label_noise,
            pool,
            concept_freq,
            task_mix,
        }
    }

    fn sample_latent(&self, r: &mut SplitMix64, concept: usize, needs_text: bool) -> Latent {
        let def = &CONCEPTS[concept];
        let p = self.cfg.patches;
        let n_obj =
            def.n_objects.0 + r.below((def.n_objects.1 - def.n_objects.0 + 1) as u64) as usize;
        let mut cells: Vec<usize> = (0..p).collect();
        r.shuffle(&mut cells);
        let mut objects: Vec<(usize, usize, usize)> = cells[..n_obj.min(p)]
            .iter()
            .map(|&pos| {
                let o = def.objects[r.below(def.objects.len() as u64) as usize];
                let c = r.below(COLORS.len() as u64) as usize;
                (o, c, pos)
            })
            .collect();
        objects.sort_by_key(|o| o.2);
        let has_text = needs_text || r.chance(def.text_p);
        let free = p - objects.len();
        let text = if has_text && free > 0 {
            let len =
                def.text_len.0 + r.below((def.text_len.1 - def.text_len.0 + 1) as u64) as usize;
            (0..len.min(free))
                .map(|_| r.below(GLYPHS as u64) as usize)
                .collect()
        } else {
            Vec::new()
        };
        let blend = (self.cfg.concepts > 1 && r.chance(self.cfg.ambiguity)).then(|| {
            let mut other = r.below(self.cfg.concepts as u64 - 1) as usize;
            if other >= concept {
                other += 1;
            }
            (other, 0.3 + 0.25 * r.next_f64())
        });
        Latent {
            concept,
            objects,
            text,
            blend,
        }
    }

    fn clip(&self, r: &mut SplitMix64, l: &Latent) -> Vec<f32> {
        let d = self.cfg.clip_dim;
        let mut v = vec![0.0f64; d];
        let add = |dir: &[f64], w: f64, v: &mut [f64]| {
            for (x, y) in v.iter_mut().zip(dir) {
                *x += w * y;
            }
        };
        let (mut wa, mut other) = (1.0, None);
        if let Some((o, w)) = l.blend {
            wa = 1.0 - w;
            other = Some((o, w));
        }
        add(&self.concept_dir[l.concept], 0.8 * wa, &mut v);
        add(
            &self.group_dir[CONCEPTS[l.concept].group],
            0.55 * wa,
            &mut v,
        );
        if let Some((o, w)) = other {
            add(&self.concept_dir[o], 0.8 * w, &mut v);
            add(&self.group_dir[CONCEPTS[o].group], 0.55 * w, &mut v);
        }
        let k = l.objects.len().max(1) as f64;
        for &(o, c, _) in &l.objects {
            add(&self.obj_clip[o], 0.3 / k, &mut v);
            add(&self.color_clip[c], 0.2 / k, &mut v);
        }
        if !l.text.is_empty() {
            add(&self.text_clip, 0.15, &mut v);
        }
        for x in v.iter_mut() {
            *x += self.cfg.clip_noise * r.normal();
        }
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| (x / n) as f32).collect()
    }

    fn patches(&self, r: &mut SplitMix64, l: &Latent) -> Vec<Vec<f32>> {
        let (p, d) = (self.cfg.patches, self.cfg.patch_dim);
        let noise = CONCEPTS[l.concept].noise;
        let mut out = vec![vec![0.0f64; d]; p];
        let occupied: Vec<Option<(usize, usize)>> = (0..p)
            .map(|pos| l.objects.iter().find(|o| o.2 == pos).map(|o| (o.0, o.1)))
            .collect();
        let mut glyphs = l.text.iter();
        for (pos, patch) in out.iter_mut().enumerate() {
            let tint = &self.tint_patch[l.concept];
            for (x, t) in patch.iter_mut().zip(tint) {
                *x += 0.3 * t;
            }
            if let Some((o, c)) = occupied[pos] {
                for ((x, a), b) in patch
                    .iter_mut()
                    .zip(&self.obj_patch[o])
                    .zip(&self.color_patch[c])
                {
                    *x += a + b;
                }
            } else if let Some(&g) = glyphs.next() {
                for (x, a) in patch.iter_mut().zip(&self.glyph_patch[g]) {
                    *x += 1.2 * a;
                }
            }
            for x in patch.iter_mut() {
                *x += noise * r.normal();
            }
        }
        out.into_iter()
            .map(|v| v.into_iter().map(|x| x as f32).collect())
            .collect()
    }

    /// Builds (tokens, prompt_len) for a task on a latent image; `corrupt` replaces the
    /// answer's content words with random alternatives (label noise).
    fn sequence(
        &self,
        r: &mut SplitMix64,
        l: &Latent,
        task: usize,
        questions: &[Question],
        corrupt: bool,
    ) -> (Vec<u32>, usize) {
        let v = &self.vocab;
        let mut t = vec![BOS];
        t.extend(std::iter::repeat_n(IMG, self.cfg.patches));
        t.push(v.task[task]);
        let mut answer: Vec<u32> = Vec::new();
        let def = &CONCEPTS[l.concept];
        let objs = &l.objects;
        match task {
            CAPTIONING => {
                t.push(v.w("describe"));
                answer.push(v.concept_word[l.concept]);
                for (i, &(o, c, _)) in objs.iter().enumerate() {
                    if i > 0 {
                        answer.push(v.w("and"));
                    }
                    answer.push(v.color[c]);
                    answer.push(v.object[o]);
                }
                if !l.text.is_empty() {
                    answer.push(v.w("with"));
                    answer.push(v.w("text"));
                }
            }
            OCR => {
                t.push(v.w("read"));
                t.push(v.w("text"));
                if l.text.is_empty() {
                    answer.push(v.w("none"));
                } else {
                    answer.extend(l.text.iter().map(|&g| v.glyph[g]));
                }
            }
            GROUNDING => {
                let &(o, c, pos) = &objs[r.below(objs.len() as u64) as usize];
                t.extend([v.w("find"), v.color[c], v.object[o]]);
                answer.push(v.pos[pos]);
            }
            DETECTION => {
                t.extend([v.w("list"), v.w("objects")]);
                if objs.is_empty() {
                    answer.push(v.w("none"));
                }
                for (i, &(o, _, pos)) in objs.iter().enumerate() {
                    if i > 0 {
                        answer.push(v.w(";"));
                    }
                    answer.push(v.object[o]);
                    answer.push(v.pos[pos]);
                }
            }
            _ => {
                let all = [
                    Question::Color,
                    Question::Count,
                    Question::Exist,
                    Question::Text,
                ];
                let allowed: Vec<Question> = (if questions.is_empty() {
                    &all[..]
                } else {
                    questions
                })
                .iter()
                .copied()
                .filter(|q| match q {
                    Question::Color => !objs.is_empty(),
                    Question::Text => !l.text.is_empty(),
                    _ => true,
                })
                .collect();
                let q = if allowed.is_empty() {
                    Question::Exist
                } else {
                    allowed[r.below(allowed.len() as u64) as usize]
                };
                match q {
                    Question::Color => {
                        let &(o, c, _) = &objs[r.below(objs.len() as u64) as usize];
                        t.extend([v.w("what"), v.w("color"), v.object[o], v.w("?")]);
                        answer.push(v.color[c]);
                    }
                    Question::Count => {
                        let o = def.objects[r.below(def.objects.len() as u64) as usize];
                        let n = objs.iter().filter(|x| x.0 == o).count();
                        t.extend([v.w("how"), v.w("many"), v.object[o], v.w("?")]);
                        answer.push(v.number[n.min(4)]);
                    }
                    Question::Exist => {
                        let (o, c) = if !objs.is_empty() && r.chance(0.5) {
                            let &(o, c, _) = &objs[r.below(objs.len() as u64) as usize];
                            (o, c)
                        } else {
                            (
                                def.objects[r.below(def.objects.len() as u64) as usize],
                                r.below(COLORS.len() as u64) as usize,
                            )
                        };
                        let present = objs.iter().any(|x| x.0 == o && x.1 == c);
                        t.extend([v.w("is"), v.w("there"), v.color[c], v.object[o], v.w("?")]);
                        answer.push(if present { v.w("yes") } else { v.w("no") });
                    }
                    Question::Text => {
                        t.extend([v.w("what"), v.w("text"), v.w("?")]);
                        answer.extend(l.text.iter().map(|&g| v.glyph[g]));
                    }
                }
            }
        }
        if corrupt {
            self.corrupt(r, &mut answer);
        }
        t.push(v.sep);
        let prompt_len = t.len();
        t.extend(answer);
        t.push(EOS);
        (t, prompt_len)
    }

    /// Replaces every content token of an answer with a random token of the same kind.
    fn corrupt(&self, r: &mut SplitMix64, answer: &mut [u32]) {
        let v = &self.vocab;
        let kinds: [&Vec<u32>; 6] = [
            &v.object,
            &v.color,
            &v.pos,
            &v.glyph,
            &v.number,
            &v.concept_word,
        ];
        let yes_no = [v.w("yes"), v.w("no")];
        for tok in answer.iter_mut() {
            if let Some(k) = kinds.iter().find(|k| k.contains(tok)) {
                *tok = k[r.below(k.len() as u64) as usize];
            } else if yes_no.contains(tok) {
                *tok = yes_no[r.below(2) as usize];
            }
        }
    }

    /// Natural proportion of every (concept, task) cell.
    fn cell_proportions(&self) -> Vec<[f64; 5]> {
        let total: f64 = self.concept_freq.iter().sum();
        self.task_mix
            .iter()
            .zip(&self.concept_freq)
            .map(|(mix, f)| mix.map(|t| t * f / total))
            .collect()
    }

    /// Generates training sample `i` (a pure function of the config and `i`).
    fn train_sample(&self, i: u64) -> Sample {
        let mut r = SplitMix64::derive(self.cfg.seed ^ 0x5EED_0001, i);
        let c = r.categorical(&self.concept_freq);
        let task = r.categorical(&self.task_mix[c]);
        // Pooled (redundant) cells draw their latent image and text from a small pool.
        let pool = self.pool[c][task];
        let mut img_rng = if pool > 0 {
            SplitMix64::derive(
                self.cfg.seed ^ 0x9001,
                (c as u64) << 32 | (task as u64) << 24 | r.below(pool),
            )
        } else {
            r.clone()
        };
        let latent = self.latent_for_task(&mut img_rng, c, task, false);
        let corrupt = r.chance(self.label_noise[c][task]);
        let mut seq_rng = if pool > 0 { img_rng.clone() } else { r.clone() };
        let (tokens, prompt_len) = self.sequence(&mut seq_rng, &latent, task, &[], corrupt);
        let clip = self.clip(&mut img_rng, &latent);
        let image = self.patches(&mut img_rng, &latent);
        Sample {
            id: format!("train-{i:09}"),
            task,
            tokens,
            prompt_len,
            clip,
            image,
            concept: c,
        }
    }

    /// Grounding and colour questions need an object: redraw until the image has one.
    fn latent_for_task(
        &self,
        r: &mut SplitMix64,
        c: usize,
        task: usize,
        needs_text: bool,
    ) -> Latent {
        loop {
            let l = self.sample_latent(r, c, needs_text);
            if task != GROUNDING || !l.objects.is_empty() {
                return l;
            }
        }
    }

    fn bench_sample(&self, b: usize, i: u64) -> Sample {
        let def = &BENCHMARKS[b];
        let mut r = SplitMix64::derive(self.cfg.seed ^ 0xBE7C_0000 ^ (b as u64) << 40, i);
        let n = self.cfg.concepts;
        let weights: Vec<f64> = (0..n)
            .map(|c| {
                if def.concepts.is_empty() {
                    self.concept_freq[c]
                } else {
                    def.concepts
                        .iter()
                        .find(|(name, _)| *name == CONCEPTS[c].name)
                        .map_or(0.0, |x| x.1)
                }
            })
            .collect();
        // With fewer concepts than the benchmark names, fall back to all concepts.
        let weights = if weights.iter().sum::<f64>() > 0.0 {
            weights
        } else {
            self.concept_freq.clone()
        };
        let c = r.categorical(&weights);
        let tw: Vec<f64> = def.tasks.iter().map(|t| t.1).collect();
        let task = def.tasks[r.categorical(&tw)].0;
        let latent = self.latent_for_task(&mut r, c, task, def.needs_text);
        let (tokens, prompt_len) = self.sequence(&mut r, &latent, task, def.questions, false);
        let clip = self.clip(&mut r, &latent);
        let image = self.patches(&mut r, &latent);
        Sample {
            id: format!("{}-{i:06}", def.name),
            task,
            tokens,
            prompt_len,
            clip,
            image,
            concept: c,
        }
    }
}

/// One generated sample, before serialisation.
struct Sample {
    id: String,
    task: usize,
    tokens: Vec<u32>,
    prompt_len: usize,
    clip: Vec<f32>,
    image: Vec<Vec<f32>>,
    concept: usize,
}

/// Appends `x` rounded to 4 decimals (f16 storage keeps about 3 significant digits).
fn push_f32(out: &mut String, x: f32) {
    let scaled = (x as f64 * 10_000.0).round() as i64;
    if scaled < 0 {
        out.push('-');
    }
    let a = scaled.unsigned_abs();
    let int = a / 10_000;
    let frac = a % 10_000;
    let _ = std::fmt::Write::write_fmt(out, format_args!("{int}.{frac:04}"));
}

impl Sample {
    fn write_json(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "{{\"id\":\"{}\",\"task\":\"{}\",\"concept\":\"{}\",\"prompt_len\":{},\"tokens\":[",
            self.id, TASKS[self.task], CONCEPTS[self.concept].name, self.prompt_len
        );
        for (i, t) in self.tokens.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{t}");
        }
        out.push_str("],\"clip\":[");
        for (i, &x) in self.clip.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_f32(out, x);
        }
        out.push_str("],\"image\":[");
        for (p, row) in self.image.iter().enumerate() {
            if p > 0 {
                out.push(',');
            }
            out.push('[');
            for (i, &x) in row.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_f32(out, x);
            }
            out.push(']');
        }
        out.push_str("]}\n");
    }
}

/// What `synth` wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SynthSummary {
    /// Output directory.
    pub out: PathBuf,
    /// Training samples written.
    pub samples: u64,
    /// Training tokens written.
    pub tokens: u64,
    /// Shard files.
    pub shards: Vec<String>,
    /// Benchmark files.
    pub benchmarks: Vec<String>,
}

/// `synth.json`: the generator's ground truth, for reports and tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SynthMeta {
    /// Format marker `mixatlas-synth`.
    pub format: String,
    /// The configuration that produced the corpus.
    pub config: SynthConfig,
    /// Concept names, in generator order.
    pub concepts: Vec<String>,
    /// Task names.
    pub tasks: Vec<String>,
    /// Expected natural proportion of each `concept/task` cell.
    pub natural_proportions: std::collections::BTreeMap<String, f64>,
    /// Label-noise rate of each cell.
    pub label_noise: std::collections::BTreeMap<String, f64>,
    /// Cells drawn from a small pool of repeated images, with the pool size.
    pub pooled_cells: std::collections::BTreeMap<String, u64>,
    /// Benchmarks: name → description.
    pub benchmarks: std::collections::BTreeMap<String, String>,
    /// Benchmark → category (visual understanding, document reasoning, multimodal
    /// reasoning) for compositions with a categorised suite; absent otherwise.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub benchmark_categories: std::collections::BTreeMap<String, String>,
    /// Vocabulary size (padded to a multiple of 64).
    pub vocab_size: u32,
    /// Special token ids.
    pub special_tokens: super::corpus::SpecialTokens,
}

/// Generates the corpus into `out` (built in a staging directory, renamed when complete):
/// `train-NNNNN.jsonl` shards, `benchmarks/<name>.jsonl`, `vocab.json` and `synth.json`.
/// `progress` receives the number of samples written so far.
pub fn generate(
    cfg: &SynthConfig,
    out: &Path,
    overwrite: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<SynthSummary, SynthError> {
    cfg.validate()?;
    let world = World::new(cfg);
    let stage = StagingDir::new(out, overwrite)?;
    let dir = stage.path().to_path_buf();
    let mut shards = Vec::new();
    let mut tokens = 0u64;
    const CHUNK: u64 = 2048;
    let n_shards = cfg.samples.div_ceil(cfg.shard_samples);
    for s in 0..n_shards {
        let name = format!("train-{s:05}.jsonl");
        let path = dir.join(&name);
        let mut w = BufWriter::with_capacity(1 << 22, File::create(&path).at("creating", &path)?);
        let start = s * cfg.shard_samples;
        let end = (start + cfg.shard_samples).min(cfg.samples);
        let chunks: Vec<(u64, u64)> = (start..end)
            .step_by(CHUNK as usize)
            .map(|a| (a, (a + CHUNK).min(end)))
            .collect();
        // Generate a window of chunks in parallel, write them in order.
        for window in chunks.chunks(rayon::current_num_threads() * 4) {
            let texts: Vec<(String, u64)> = window
                .par_iter()
                .map(|&(a, b)| {
                    let mut text = String::with_capacity(((b - a) * 2600) as usize);
                    let mut toks = 0u64;
                    for i in a..b {
                        let smp = world.train_sample(i);
                        toks += smp.tokens.len() as u64;
                        smp.write_json(&mut text);
                    }
                    (text, toks)
                })
                .collect();
            for (text, toks) in texts {
                w.write_all(text.as_bytes()).at("writing", &path)?;
                tokens += toks;
            }
            progress(window.last().map_or(end, |x| x.1));
        }
        let f = w
            .into_inner()
            .map_err(|e| e.into_error())
            .at("flushing", &path)?;
        f.sync_all().at("syncing", &path)?;
        shards.push(name);
    }
    let bdir = dir.join("benchmarks");
    fs::create_dir_all(&bdir).at("creating", &bdir)?;
    let mut benchmarks = Vec::new();
    let suite: Vec<&str> = cfg.suite().iter().map(|x| x.0).collect();
    for (b, def) in BENCHMARKS.iter().enumerate() {
        if !suite.contains(&def.name) {
            continue;
        }
        let name = format!("benchmarks/{}.jsonl", def.name);
        let path = dir.join(&name);
        let text: String = (0..cfg.bench_samples)
            .into_par_iter()
            .map(|i| {
                let mut s = String::new();
                world.bench_sample(b, i).write_json(&mut s);
                s
            })
            .collect();
        fs::write(&path, text).at("writing", &path)?;
        benchmarks.push(name);
    }
    write_meta(&world, &dir)?;
    let out = stage.commit()?;
    Ok(SynthSummary {
        out,
        samples: cfg.samples,
        tokens,
        shards,
        benchmarks,
    })
}

fn write_meta(world: &World, dir: &Path) -> Result<(), SynthError> {
    let cfg = &world.cfg;
    let names: Vec<String> = CONCEPTS[..cfg.concepts]
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    let props = world.cell_proportions();
    let suite = cfg.suite();
    let mut natural = std::collections::BTreeMap::new();
    let mut noise = std::collections::BTreeMap::new();
    let mut pooled = std::collections::BTreeMap::new();
    for (c, name) in names.iter().enumerate() {
        for (t, task) in TASKS.iter().enumerate() {
            let cell = format!("{name}/{task}");
            natural.insert(cell.clone(), props[c][t]);
            noise.insert(cell.clone(), world.label_noise[c][t]);
            if world.pool[c][t] > 0 {
                pooled.insert(cell, world.pool[c][t]);
            }
        }
    }
    let meta = SynthMeta {
        format: "mixatlas-synth".into(),
        config: cfg.clone(),
        concepts: names,
        tasks: TASKS.iter().map(|t| t.to_string()).collect(),
        natural_proportions: natural,
        label_noise: noise,
        pooled_cells: pooled,
        benchmarks: BENCHMARKS
            .iter()
            .filter(|b| suite.iter().any(|x| x.0 == b.name))
            .map(|b| (b.name.to_string(), b.about.to_string()))
            .collect(),
        benchmark_categories: suite
            .iter()
            .filter(|x| !x.1.is_empty())
            .map(|x| (x.0.to_string(), x.1.to_string()))
            .collect(),
        vocab_size: world.vocab.padded_size(),
        special_tokens: super::corpus::SpecialTokens {
            pad: PAD,
            bos: BOS,
            eos: EOS,
            image: IMG,
        },
    };
    let p = dir.join("synth.json");
    fs::write(
        &p,
        serde_json::to_string_pretty(&meta).expect("meta serialises"),
    )
    .at("writing", &p)?;
    let p = dir.join("vocab.json");
    fs::write(
        &p,
        serde_json::to_string(&world.vocab.tokens).expect("vocab serialises"),
    )
    .at("writing", &p)?;
    Ok(())
}

/// Benchmark names in generator order.
pub fn benchmark_names() -> Vec<&'static str> {
    BENCHMARKS.iter().map(|b| b.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthConfig {
        SynthConfig {
            samples: 3000,
            bench_samples: 50,
            shard_samples: 1000,
            ..SynthConfig::default()
        }
    }

    #[test]
    fn deterministic_and_thread_independent() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        generate(&small(), &a, false, &|_| {}).unwrap();
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| generate(&small(), &b, false, &|_| {}))
            .unwrap();
        for f in [
            "train-00000.jsonl",
            "train-00002.jsonl",
            "benchmarks/pope.jsonl",
            "synth.json",
        ] {
            assert_eq!(
                fs::read(a.join(f)).unwrap(),
                fs::read(b.join(f)).unwrap(),
                "{f}"
            );
        }
    }

    #[test]
    fn proportions_follow_the_design() {
        let cfg = small();
        let world = World::new(&cfg);
        let props = world.cell_proportions();
        let n = 20_000;
        let mut counts = vec![[0u64; 5]; cfg.concepts];
        for i in 0..n {
            let s = world.train_sample(i);
            counts[s.concept][s.task] += 1;
            assert_eq!(s.tokens[0], BOS);
            assert_eq!(*s.tokens.last().unwrap(), EOS);
            assert_eq!(s.tokens[s.prompt_len - 1], world.vocab.sep);
            assert!(s.prompt_len < s.tokens.len() - 1, "answer is non-empty");
            assert_eq!(s.tokens[1..=cfg.patches], vec![IMG; cfg.patches][..]);
            assert!(s
                .tokens
                .iter()
                .all(|&t| (t as usize) < world.vocab.tokens.len()));
            assert_eq!(s.clip.len(), cfg.clip_dim);
            let norm: f32 = s.clip.iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-4);
        }
        // Each cell's share is within 4 standard errors of the designed proportion.
        for c in 0..cfg.concepts {
            for t in 0..5 {
                let p = props[c][t];
                let got = counts[c][t] as f64 / n as f64;
                let se = (p * (1.0 - p) / n as f64).sqrt();
                assert!(
                    (got - p).abs() < 4.0 * se + 1e-9,
                    "cell {c}/{t}: {got} vs {p}"
                );
            }
        }
        // Skew: the largest cell is many times the smallest non-empty one.
        let flat: Vec<f64> = props.iter().flatten().copied().collect();
        let max = flat.iter().cloned().fold(0.0, f64::max);
        let min = flat.iter().cloned().fold(1.0, f64::min);
        assert!(max / min > 30.0);
    }

    #[test]
    fn answers_are_functions_of_the_image_except_for_noise() {
        // Two samples with the same latent image and question must agree on the answer
        // unless label noise corrupted one: check via the OCR grammar on documents.
        let world = World::new(&small());
        let mut r = SplitMix64::new(1);
        let doc = CONCEPTS.iter().position(|c| c.name == "documents").unwrap();
        let l = world.sample_latent(&mut r, doc, false);
        assert!(!l.text.is_empty());
        let (t, p) = world.sequence(&mut r, &l, OCR, &[], false);
        let answer: Vec<u32> = t[p..t.len() - 1].to_vec();
        let want: Vec<u32> = l.text.iter().map(|&g| world.vocab.glyph[g]).collect();
        assert_eq!(answer, want);
    }

    #[test]
    fn synth_composition_follows_its_cited_task_shares_and_suite() {
        let cfg = SynthConfig {
            composition: Composition::Synth,
            ..small()
        };
        let world = World::new(&cfg);
        let props = world.cell_proportions();
        // Task marginals are the cited shares; captioning : OCR = 3.5 : 1.1.
        for t in 0..5 {
            let share: f64 = props.iter().map(|row| row[t]).sum();
            assert!(
                (share - SYNTH_TASK_SHARES[t]).abs() < 1e-12,
                "task {t}: {share}"
            );
        }
        assert!(
            (props.iter().map(|r| r[CAPTIONING]).sum::<f64>()
                / props.iter().map(|r| r[OCR]).sum::<f64>()
                - 3.5 / 1.1)
                .abs()
                < 1e-9
        );
        // Sampled cells follow the design (4 standard errors).
        let n = 20_000;
        let mut counts = vec![[0u64; 5]; cfg.concepts];
        for i in 0..n {
            let s = world.train_sample(i);
            counts[s.concept][s.task] += 1;
        }
        for c in 0..cfg.concepts {
            for t in 0..5 {
                let p = props[c][t];
                let got = counts[c][t] as f64 / n as f64;
                let se = (p * (1.0 - p) / n as f64).sqrt();
                assert!(
                    (got - p).abs() < 4.0 * se + 1e-9,
                    "cell {c}/{t}: {got} vs {p}"
                );
            }
        }
        // The noisiest data is in the largest cells: the five largest cells' mean noise is over
        // three times the rest's (the clean synthetic documents are among the largest).
        let mut flat: Vec<(f64, f64)> = (0..cfg.concepts)
            .flat_map(|c| (0..5).map(move |t| (c, t)))
            .map(|(c, t)| (props[c][t], world.label_noise[c][t]))
            .collect();
        flat.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mean = |xs: &[(f64, f64)]| xs.iter().map(|x| x.1).sum::<f64>() / xs.len() as f64;
        assert!(
            mean(&flat[..5]) > 3.0 * mean(&flat[5..]),
            "{:?}",
            &flat[..5]
        );
        // Nine benchmarks, three per category, every one a defined benchmark.
        let suite = cfg.suite();
        assert_eq!(suite.len(), 9);
        for cat in [
            "visual understanding",
            "document reasoning",
            "multimodal reasoning",
        ] {
            assert_eq!(suite.iter().filter(|x| x.1 == cat).count(), 3, "{cat}");
        }
        assert!(suite
            .iter()
            .all(|x| BENCHMARKS.iter().any(|b| b.name == x.0)));
        // The balanced composition is unchanged: the CONCEPTS tables.
        let balanced = World::new(&small());
        assert_eq!(
            balanced.concept_freq,
            CONCEPTS.iter().map(|c| c.freq).collect::<Vec<_>>()
        );
        assert_eq!(small().suite().len(), BENCHMARKS.len());
    }

    #[test]
    fn bad_config_names_the_field() {
        let cfg = SynthConfig {
            patches: 6,
            ..SynthConfig::default()
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("patches"), "{e}");
    }
}
