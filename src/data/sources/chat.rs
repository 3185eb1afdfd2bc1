//! Conversations → token ids and a loss mask, through a Hugging Face `tokenizer.json` (the
//! `tokenizers` crate, the library `transformers` itself uses) and the chat template of
//! `tokenizer_config.json` (Jinja, rendered with `minijinja` as TGI does).
//!
//! What `transformers`' `apply_chat_template(messages, tokenize=True,
//! add_generation_prompt=False)` does, step for step: the template is rendered with
//! `trim_blocks` and `lstrip_blocks`, `messages` (`role` / `content`), `add_generation_prompt
//! = false` and the special tokens of `tokenizer_config.json` (`bos_token`, `eos_token`, …);
//! the text is then tokenised with `add_special_tokens = False` (so no BOS/EOS is added, and
//! added tokens such as `<|im_start|>` written in the text become their ids). Without a
//! `chat_template`, Qwen2's ChatML template ([`QWEN2_CHAT_TEMPLATE`]) is used.
//!
//! **Image placeholder.** Each `<image>` marker is replaced, before rendering, by `rows`
//! copies of the image placeholder token (`<|image_pad|>` by default; it must be an added
//! token of the tokenizer), `rows` being the image feature rows per image.
//!
//! **Loss mask** (as LLaVA and Qwen2-VL SFT): 1 exactly on the tokens of the assistant turns'
//! content and the end-of-turn token that closes each of them (`<|im_end|>`; the
//! `eos_token` for tokenizers without it), 0 elsewhere (system and user turns, role headers,
//! the newline after `<|im_end|>`). Each message's content is located by rendering the template
//! a second time with a sentinel in its place ([`ChatTokenizer::render`]); a template that
//! does not place the contents verbatim is refused with an error. A token is trained on when
//! its first byte lies in an assistant span.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind};
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::fsutil::{IoContext, PathIoError};

/// Qwen2's ChatML template (Qwen2-Instruct's `tokenizer_config.json`), the default when the
/// tokenizer has no `chat_template`.
pub const QWEN2_CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The marker of the image in a turn's text (LLaVA's `DEFAULT_IMAGE_TOKEN`).
pub const IMAGE_MARKER: &str = "<image>";

/// The default image placeholder token (Qwen2-VL's).
pub const DEFAULT_IMAGE_TOKEN: &str = "<|image_pad|>";

/// ChatML's end-of-turn token.
pub const CHATML_END_OF_TURN: &str = "<|im_end|>";

/// The special token strings `transformers` passes to a chat template.
const TEMPLATE_TOKENS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A system prompt (`"from": "system"`).
    System,
    /// The user (`"from": "human"` or `"user"`).
    User,
    /// The assistant (`"from": "gpt"` or `"assistant"`): the turns trained on.
    Assistant,
}

impl Role {
    /// The role name chat templates expect (`system`, `user`, `assistant`).
    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// The role of a LLaVA `from` value, if known.
    pub fn from_llava(from: &str) -> Option<Self> {
        match from {
            "human" | "user" => Some(Role::User),
            "gpt" | "assistant" => Some(Role::Assistant),
            "system" => Some(Role::System),
            _ => None,
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Who speaks.
    pub role: Role,
    /// What is said (may hold [`IMAGE_MARKER`]).
    pub text: String,
}

/// A tokenizer that cannot be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// I/O on a named file.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// `tokenizer.json` is not a tokenizer the `tokenizers` library reads.
    #[error("{}: not a Hugging Face tokenizer: {source}", path.display())]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// The library's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `tokenizer_config.json` has an unexpected shape.
    #[error("{}: {problem}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// The chat template does not parse.
    #[error("chat template from {origin}: {source:#}")]
    Template {
        /// Where the template came from.
        origin: String,
        /// minijinja's error.
        source: minijinja::Error,
    },
    /// The image placeholder token is not in the vocabulary.
    #[error("{}: the image placeholder token {token:?} is not in the vocabulary; pass --image-token with your tokenizer's image placeholder (an added token, such as <|image_pad|> of Qwen2-VL)", path.display())]
    NoImageToken {
        /// The token.
        token: String,
        /// `tokenizer.json`.
        path: PathBuf,
    },
    /// The image placeholder token is an ordinary vocabulary entry, which byte-level text
    /// could merge with its neighbours.
    #[error("{}: the image placeholder token {token:?} is not an added token (`added_tokens`); pass --image-token with one that is", path.display())]
    NotAdded {
        /// The token.
        token: String,
        /// `tokenizer.json`.
        path: PathBuf,
    },
    /// Neither `<|im_end|>` nor an `eos_token` ends a turn.
    #[error("{}: no end-of-turn token: the vocabulary has no <|im_end|> and tokenizer_config.json no eos_token", path.display())]
    NoEndOfTurn {
        /// `tokenizer.json`.
        path: PathBuf,
    },
}

/// Why one conversation cannot be tokenised.
#[derive(Debug, thiserror::Error)]
pub enum ChatProblem {
    /// The template failed (`raise_exception`, an undefined value, …).
    #[error("chat template: {0:#}")]
    Render(#[source] minijinja::Error),
    /// The rendered text does not hold a turn's content.
    #[error("the chat template leaves out turn {turn}'s content, so its tokens cannot be masked")]
    NotVerbatim {
        /// 0-based turn.
        turn: usize,
    },
    /// The template changes the contents (strips them, tests them), so they cannot be found
    /// in its output.
    #[error("the chat template does not place the turns' content verbatim (it transforms or tests it), so the assistant tokens cannot be masked")]
    Rewritten,
    /// An assistant turn is empty.
    #[error("assistant turn {turn} is empty; expected an answer to train on")]
    EmptyAnswer {
        /// 0-based turn.
        turn: usize,
    },
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Encode(String),
}

/// Token ids and the 0/1 loss mask of one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// 1 on the assistant content and its end-of-turn token.
    pub loss_mask: Vec<u8>,
}

/// Token ids the corpus manifest records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// Padding: `pad_token`, else `<|endoftext|>`, else the end-of-turn token.
    pub pad: u32,
    /// `bos_token`, else the padding token (Qwen2 has no BOS).
    pub bos: u32,
    /// `eos_token`, else the end-of-turn token.
    pub eos: u32,
    /// The image placeholder.
    pub image: u32,
}

/// A Hugging Face tokenizer with its chat template.
pub struct ChatTokenizer {
    tokenizer: Tokenizer,
    env: Environment<'static>,
    /// Special token strings passed to the template.
    template_tokens: BTreeMap<String, String>,
    image_token: String,
    end_of_turn: String,
    /// Where the template came from (`tokenizer_config.json`, or Qwen2's default).
    pub template_origin: String,
    /// Vocabulary size: every id is below it (added tokens included).
    pub vocab_size: u32,
    /// Ids for the manifest.
    pub special: SpecialIds,
}

impl std::fmt::Debug for ChatTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("template_origin", &self.template_origin)
            .finish_non_exhaustive()
    }
}

/// A special token of `tokenizer_config.json`: a string or `{"content": …}`.
fn config_token(cfg: &Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The chat template of `tokenizer_config.json`: a string, or a list of `{name, template}`
/// (the one named `default`, else the first).
fn config_template(cfg: &Value, path: &Path) -> Result<Option<String>, ChatError> {
    let bad = |problem: &str| ChatError::Config {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    };
    match cfg.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            let named = |n: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some(n))
            };
            let pick = named("default").or(list.first());
            match pick.and_then(|t| t.get("template")).and_then(Value::as_str) {
                Some(t) => Ok(Some(t.to_string())),
                None => Err(bad(
                    "`chat_template` is a list without a {\"name\", \"template\"} entry",
                )),
            }
        }
        Some(_) => Err(bad(
            "`chat_template` is neither a string nor a list of {\"name\", \"template\"}",
        )),
    }
}

/// A Jinja environment configured as `transformers` configures its own.
fn template_env(template: String, origin: &str) -> Result<Environment<'static>, ChatError> {
    let mut env = Environment::new();
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.trim_blocks(true).lstrip_blocks(true);
    env.set_syntax(syntax.build().expect("default delimiters"));
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_template_owned("chat", template)
        .map_err(|source| ChatError::Template {
            origin: origin.to_string(),
            source,
        })?;
    Ok(env)
}

impl ChatTokenizer {
    /// Loads `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json` (chat
    /// template and special tokens). `image_token` names the image placeholder
    /// ([`DEFAULT_IMAGE_TOKEN`] when `None`); it must be an added token.
    pub fn load(dir: &Path, image_token: Option<&str>) -> Result<Self, ChatError> {
        let path = dir.join("tokenizer.json");
        // Read first, so a missing file is reported as I/O on the path.
        let bytes = std::fs::read(&path).at("reading", &path)?;
        let tokenizer = Tokenizer::from_bytes(&bytes).map_err(|source| ChatError::Tokenizer {
            path: path.clone(),
            source,
        })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = match std::fs::read(&cfg_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ChatError::Config {
                path: cfg_path.clone(),
                problem: format!("invalid JSON: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
            Err(source) => {
                return Err(PathIoError {
                    action: "reading",
                    path: cfg_path,
                    source,
                }
                .into())
            }
        };
        let (template, origin) = match config_template(&cfg, &cfg_path)? {
            Some(t) => (t, cfg_path.display().to_string()),
            None => (
                QWEN2_CHAT_TEMPLATE.to_string(),
                "the default (Qwen2's ChatML)".to_string(),
            ),
        };
        let env = template_env(template, &origin)?;
        let template_tokens: BTreeMap<String, String> = TEMPLATE_TOKENS
            .iter()
            .filter_map(|k| config_token(&cfg, k).map(|v| (k.to_string(), v)))
            .collect();
        let image_token = image_token.unwrap_or(DEFAULT_IMAGE_TOKEN).to_string();
        let added = tokenizer.get_added_tokens_decoder();
        let image = tokenizer
            .token_to_id(&image_token)
            .ok_or_else(|| ChatError::NoImageToken {
                token: image_token.clone(),
                path: path.clone(),
            })?;
        if !added.contains_key(&image) {
            return Err(ChatError::NotAdded {
                token: image_token,
                path,
            });
        }
        let id = |t: &str| tokenizer.token_to_id(t);
        let end_of_turn = if id(CHATML_END_OF_TURN).is_some() {
            CHATML_END_OF_TURN.to_string()
        } else {
            template_tokens
                .get("eos_token")
                .cloned()
                .ok_or_else(|| ChatError::NoEndOfTurn { path: path.clone() })?
        };
        let eot = id(&end_of_turn).ok_or_else(|| ChatError::NoEndOfTurn { path: path.clone() })?;
        let from_cfg = |k: &str| template_tokens.get(k).and_then(|t| id(t));
        let pad = from_cfg("pad_token")
            .or_else(|| id("<|endoftext|>"))
            .unwrap_or(eot);
        let special = SpecialIds {
            pad,
            bos: from_cfg("bos_token").unwrap_or(pad),
            eos: from_cfg("eos_token").unwrap_or(eot),
            image,
        };
        let max_added = added.keys().max().map_or(0, |&m| m as usize + 1);
        let vocab_size = tokenizer.get_vocab_size(true).max(max_added) as u32;
        Ok(Self {
            tokenizer,
            env,
            template_tokens,
            image_token,
            end_of_turn,
            template_origin: origin,
            vocab_size,
            special,
        })
    }

    /// The template rendered over `contents` (one per turn of `turns`).
    fn render_with(&self, turns: &[Turn], contents: &[String]) -> Result<String, ChatProblem> {
        let messages: Vec<Value> = turns
            .iter()
            .zip(contents)
            .map(|(t, c)| serde_json::json!({"role": t.role.name(), "content": c}))
            .collect();
        let mut ctx = serde_json::Map::new();
        ctx.insert("messages".into(), Value::Array(messages));
        ctx.insert("add_generation_prompt".into(), Value::Bool(false));
        for (k, v) in &self.template_tokens {
            ctx.insert(k.clone(), Value::String(v.clone()));
        }
        self.env
            .get_template("chat")
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(ctx))))
            .map_err(ChatProblem::Render)
    }

    /// The chat template rendered over `turns`, each `<image>` marker replaced by
    /// `image_rows` placeholder tokens, as `transformers` renders it with
    /// `add_generation_prompt=False`; with the byte span of each turn's content.
    ///
    /// The spans come from a second rendering with a sentinel (private-use characters and
    /// the turn number) for each content: the sentinels are replaced by the contents, and the
    /// result must equal the real rendering (else the template does not place the contents
    /// verbatim, and the turns cannot be masked).
    pub fn render(
        &self,
        turns: &[Turn],
        image_rows: usize,
    ) -> Result<(String, Vec<std::ops::Range<usize>>), ChatProblem> {
        let placeholder = self.image_token.repeat(image_rows);
        let contents: Vec<String> = turns
            .iter()
            .map(|t| t.text.replace(IMAGE_MARKER, &placeholder))
            .collect();
        let text = self.render_with(turns, &contents)?;
        let sentinel = |i: usize| format!("\u{E000}{i}\u{E001}");
        let marked =
            self.render_with(turns, &(0..turns.len()).map(sentinel).collect::<Vec<_>>())?;
        let mut rebuilt = String::with_capacity(text.len());
        let mut spans = Vec::with_capacity(turns.len());
        let mut rest = marked.as_str();
        for (turn, c) in contents.iter().enumerate() {
            let mark = sentinel(turn);
            let at = rest.find(&mark).ok_or(ChatProblem::NotVerbatim { turn })?;
            rebuilt.push_str(&rest[..at]);
            spans.push(rebuilt.len()..rebuilt.len() + c.len());
            rebuilt.push_str(c);
            rest = &rest[at + mark.len()..];
        }
        rebuilt.push_str(rest);
        if rebuilt != text {
            return Err(ChatProblem::Rewritten);
        }
        Ok((text, spans))
    }

    /// Token ids and loss mask of `turns` (see the module documentation).
    pub fn encode(&self, turns: &[Turn], image_rows: usize) -> Result<Encoded, ChatProblem> {
        for (turn, t) in turns.iter().enumerate() {
            if t.role == Role::Assistant && t.text.trim().is_empty() {
                return Err(ChatProblem::EmptyAnswer { turn });
            }
        }
        let (text, spans) = self.render(turns, image_rows)?;
        // Trained spans: each assistant content, with the end-of-turn token right after it.
        let trained: Vec<std::ops::Range<usize>> = turns
            .iter()
            .zip(&spans)
            .filter(|(t, _)| t.role == Role::Assistant)
            .map(|(_, s)| {
                let eot = if text[s.end..].starts_with(&self.end_of_turn) {
                    self.end_of_turn.len()
                } else {
                    0
                };
                s.start..s.end + eot
            })
            .collect();
        let enc = self
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| ChatProblem::Encode(e.to_string()))?;
        let tokens = enc.get_ids().to_vec();
        let mut span = trained.iter().peekable();
        let loss_mask = enc
            .get_offsets()
            .iter()
            .map(|&(start, _)| {
                while span.peek().is_some_and(|s| s.end <= start) {
                    span.next();
                }
                span.peek().is_some_and(|s| s.contains(&start)) as u8
            })
            .collect();
        Ok(Encoded { tokens, loss_mask })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer.json: words split on whitespace, ChatML's added tokens.
    fn write_tokenizer(dir: &Path, config: Value) {
        let words = [
            "[UNK]",
            "hi",
            "there",
            "user",
            "assistant",
            "system",
            "\n",
            "pad",
        ];
        let vocab: serde_json::Map<String, Value> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), Value::from(i)))
            .collect();
        let added: Vec<Value> = ["<|im_start|>", "<|im_end|>", "<|image_pad|>"]
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::json!({"id": 8 + i, "content": t, "single_word": false,
                    "lstrip": false, "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let tok = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
        });
        std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
        std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    }

    fn turns(a: &str) -> Vec<Turn> {
        vec![
            Turn {
                role: Role::User,
                text: "<image> hi".into(),
            },
            Turn {
                role: Role::Assistant,
                text: a.into(),
            },
        ]
    }

    #[test]
    fn template_list_and_masks() {
        let dir = tempfile::tempdir().unwrap();
        let tpl = "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>{% endfor %}";
        write_tokenizer(
            dir.path(),
            serde_json::json!({"chat_template": [{"name": "tool_use", "template": "x"},
                {"name": "default", "template": tpl}], "pad_token": {"content": "pad"}}),
        );
        let t = ChatTokenizer::load(dir.path(), None).unwrap();
        assert_eq!((t.vocab_size, t.special.pad, t.special.image), (11, 7, 10));
        let e = t.encode(&turns("hi there"), 2).unwrap();
        // <|im_start|> user <pad> <pad> hi <|im_end|> <|im_start|> assistant hi there <|im_end|>
        assert_eq!(e.tokens, vec![8, 3, 10, 10, 1, 9, 8, 4, 1, 2, 9]);
        assert_eq!(e.loss_mask, vec![0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]);
        let e = ChatTokenizer::load(dir.path(), Some("hi")).unwrap_err();
        assert!(
            e.to_string().contains("\"hi\" is not an added token"),
            "{e}"
        );
        let e = ChatTokenizer::load(dir.path(), Some("<img>")).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"<img>\" is not in the vocabulary; pass --image-token"),
            "{e}"
        );
    }

    #[test]
    fn a_template_that_rewrites_content_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tpl = "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] | trim }}<|im_end|>{% endfor %}";
        write_tokenizer(dir.path(), serde_json::json!({"chat_template": tpl}));
        let t = ChatTokenizer::load(dir.path(), None).unwrap();
        t.encode(&turns("hi"), 1).unwrap();
        let e = t.encode(&turns(" hi "), 1).unwrap_err().to_string();
        assert!(
            e.contains("does not place the turns' content verbatim"),
            "{e}"
        );
        let e = t.encode(&turns("  "), 1).unwrap_err().to_string();
        assert!(e.contains("assistant turn 1 is empty"), "{e}");
        write_tokenizer(
            dir.path(),
            serde_json::json!({"chat_template": "{{ raise_exception('no') }}"}),
        );
        let t = ChatTokenizer::load(dir.path(), None).unwrap();
        let e = t.encode(&turns("hi"), 1).unwrap_err().to_string();
        assert!(e.starts_with("chat template:") && e.contains("no"), "{e}");
    }
}
