//! Each record's task: its own `task` field, else a `--task-map` entry for its source.
//!
//! The map is a flat TOML or JSON table from a name to a task label (any
//! [safe label](super::super::label)):
//!
//! ```toml
//! "llava_v1_5_mix665k.json" = "vqa"   # a source file, by file name
//! "textcaps" = "captioning"           # … or by file stem
//! "ocr_vqa" = "ocr"                   # a dataset: the first component of the image path
//! "*" = "vqa"                         # everything else (optional)
//! ```
//!
//! Names are tried in this order: the source file's name, its stem, the name of the directory
//! holding it, the dataset (first component of the record's `image` path, as LLaVA's
//! mixtures lay out their images), then `*`. A record with neither a field nor a match is an
//! error naming the record and the names tried.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::super::label::check_label;
use super::record::{Record, RecordProblem};
use crate::fsutil::{IoContext, PathIoError};

/// A task map file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TaskMapError {
    /// I/O on the file.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// The file is neither a JSON object nor a TOML table of strings.
    #[error("{}: {problem}; expected a table of name = \"task\" strings (TOML or JSON)", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        problem: String,
    },
    /// A task is not a safe label.
    #[error("{}: entry {name:?}: {label}", path.display())]
    Label {
        /// The file.
        path: PathBuf,
        /// The entry.
        name: String,
        /// The label and the rule.
        label: super::super::label::LabelError,
    },
}

/// Names → task labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskMap {
    map: BTreeMap<String, String>,
}

impl TaskMap {
    /// Reads a TOML (`.toml`) or JSON file (any other extension is tried as JSON, then TOML).
    pub fn load(path: &Path) -> Result<Self, TaskMapError> {
        let text = std::fs::read_to_string(path).at("reading", path)?;
        let parse_err = |problem: String| TaskMapError::Parse {
            path: path.to_path_buf(),
            problem,
        };
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let map: BTreeMap<String, String> = if is_toml {
            toml::from_str(&text).map_err(|e| parse_err(e.to_string()))?
        } else {
            match serde_json::from_str(&text) {
                Ok(m) => m,
                Err(json) => {
                    toml::from_str(&text).map_err(|_| parse_err(format!("invalid JSON: {json}")))?
                }
            }
        };
        for (name, task) in &map {
            check_label(task).map_err(|label| TaskMapError::Label {
                path: path.to_path_buf(),
                name: name.clone(),
                label,
            })?;
        }
        Ok(Self { map })
    }

    /// The names tried for a record of `file` (see the module documentation).
    fn candidates<'r>(file: &'r Path, record: &'r Record) -> Vec<&'r str> {
        let mut names = Vec::with_capacity(5);
        if let Some(n) = file.file_name().and_then(|n| n.to_str()) {
            names.push(n);
        }
        if let Some(n) = file.file_stem().and_then(|n| n.to_str()) {
            names.push(n);
        }
        if let Some(n) = file
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
        {
            names.push(n);
        }
        if let Some(d) = record.dataset() {
            names.push(d);
        }
        names.push("*");
        names
    }

    /// The task of `record` read from `file`: its field, else the map's first match; a safe
    /// label either way.
    pub fn task(&self, file: &Path, record: &Record) -> Result<String, RecordProblem> {
        let task = match &record.task {
            Some(t) => t.clone(),
            None => {
                let names = Self::candidates(file, record);
                match names.iter().find_map(|n| self.map.get(*n)) {
                    Some(t) => t.clone(),
                    None => {
                        return Err(RecordProblem::NoTask {
                            tried: names
                                .iter()
                                .map(|n| format!("{n:?}"))
                                .collect::<Vec<_>>()
                                .join(", "),
                            id: record.id.clone(),
                        })
                    }
                }
            }
        };
        if check_label(&task).is_err() {
            return Err(RecordProblem::BadTask {
                task,
                id: record.id.clone(),
            });
        }
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_then_file_then_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        std::fs::write(&p, "\"mix.json\" = \"vqa\"\nocr_vqa = \"ocr\"\n").unwrap();
        let m = TaskMap::load(&p).unwrap();
        let mut r = Record {
            id: Some("a".into()),
            image: Some("ocr_vqa/images/1.jpg".into()),
            turns: vec![],
            task: None,
        };
        assert_eq!(m.task(Path::new("d/mix.json"), &r).unwrap(), "vqa");
        assert_eq!(m.task(Path::new("d/other.json"), &r).unwrap(), "ocr");
        r.image = None;
        let e = m
            .task(Path::new("d/other.json"), &r)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("(id \"a\")") && e.contains("\"other.json\", \"other\", \"d\", \"*\""),
            "{e}"
        );
        r.task = Some("a b".into());
        let e = m.task(Path::new("x"), &r).unwrap_err().to_string();
        assert!(e.contains("\"a b\"") && e.contains("safe label"), "{e}");
        let p = dir.path().join("m.json");
        std::fs::write(&p, "{\"x\": \"$(id)\"}").unwrap();
        let e = TaskMap::load(&p).unwrap_err().to_string();
        assert!(e.contains("entry \"x\""), "{e}");
    }
}
