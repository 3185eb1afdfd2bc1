//! LLaVA-style records: a JSON file holding one top-level array of records (LLaVA's
//! `llava_v1_5_mix665k.json`), streamed element by element through serde's `SeqAccess` so the
//! array is never held in memory, or JSONL with one record per line.
//!
//! ```json
//! {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "task": "vqa",
//!  "conversations": [{"from": "human", "value": "<image>\nWhat color is the bus?"},
//!                    {"from": "gpt", "value": "The bus is white and red."}]}
//! ```
//!
//! `id` (string or number), `image` (a path relative to `--image-root`), `conversations`
//! (`from`: `human`/`user`, `gpt`/`assistant` or `system`; `value`: the text) and the
//! optional `task` are read; other fields are ignored.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::Value;

use super::chat::{Role, Turn};
use super::record::{short_json, Item, Location, Record, RecordProblem, SourceError};
use crate::data::raw::json_kind;
use crate::fsutil::{IoContext, PathIoError};

/// A reader that counts the bytes read through it.
pub(crate) struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R> Counted<R> {
    /// Wraps `inner`; the returned cell holds the bytes read so far.
    pub(crate) fn new(inner: R) -> (Self, Rc<Cell<u64>>) {
        let count = Rc::new(Cell::new(0));
        (
            Self {
                inner,
                count: count.clone(),
            },
            count,
        )
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// One LLaVA-style record from its JSON value (see the module documentation). The image
/// marker is not checked here ([`Record::check_image_marker`]).
pub fn record_from_json(v: Value) -> Result<Record, RecordProblem> {
    let Value::Object(mut map) = v else {
        return Err(RecordProblem::NotObject {
            found: json_kind(&v),
        });
    };
    let field = |field: &str, found: &Value, expected: &'static str, id: &Option<String>| {
        RecordProblem::Field {
            field: field.to_string(),
            found: short_json(found),
            expected,
            id: id.clone(),
        }
    };
    let id = match map.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => return Err(field("id", &other, "a string or a number", &None)),
    };
    let image = match map.remove("image") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(field(
                "image",
                &other,
                "one image path (a string; one image per sample)",
                &id,
            ))
        }
    };
    let task = match map.remove("task") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => return Err(field("task", &other, "a string", &id)),
    };
    let conv = match map.remove("conversations") {
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(field(
                "conversations",
                &other,
                "a list of {\"from\", \"value\"} turns",
                &id,
            ))
        }
        None => {
            return Err(RecordProblem::Missing {
                field: "conversations",
                id,
            })
        }
    };
    let mut turns = Vec::with_capacity(conv.len());
    for (i, t) in conv.iter().enumerate() {
        let from = t.get("from");
        let role = from.and_then(Value::as_str).and_then(Role::from_llava);
        let Some(role) = role else {
            return Err(field(
                &format!("conversations[{i}].from"),
                from.unwrap_or(&Value::Null),
                "\"human\", \"gpt\", \"system\", \"user\" or \"assistant\"",
                &id,
            ));
        };
        let Some(text) = t.get("value").and_then(Value::as_str) else {
            return Err(field(
                &format!("conversations[{i}].value"),
                t.get("value").unwrap_or(&Value::Null),
                "the turn's text (a string)",
                &id,
            ));
        };
        turns.push(Turn {
            role,
            text: text.to_string(),
        });
    }
    Ok(Record {
        id,
        image,
        turns,
        task,
    })
}

/// Calls `visit` with each record of the JSONL file `path`, in order (blank lines skipped).
pub fn read_jsonl<E: From<SourceError>>(
    path: &Path,
    visit: &mut dyn FnMut(Item) -> Result<(), E>,
) -> Result<(), E> {
    let f = File::open(path)
        .at("opening", path)
        .map_err(SourceError::from)?;
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let (mut line, mut bytes) = (0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .at("reading", path)
            .map_err(SourceError::from)?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        bytes += n as u64;
        let location = Location::Line {
            path: path.to_path_buf(),
            line,
        };
        let record = match std::str::from_utf8(&buf) {
            Err(_) => Err(RecordProblem::NotUtf8 {
                what: "the line".into(),
            }),
            Ok(s) if s.trim().is_empty() => continue,
            Ok(s) => serde_json::from_str(s)
                .map_err(RecordProblem::Json)
                .and_then(record_from_json),
        };
        visit(Item {
            location,
            record,
            bytes,
        })?;
    }
}

/// Visits the elements of the top-level array.
struct Elements<'a, E> {
    path: &'a Path,
    visit: &'a mut dyn FnMut(Item) -> Result<(), E>,
    /// The visitor's error, kept here while serde unwinds with a placeholder.
    stopped: &'a mut Option<E>,
    index: &'a mut u64,
    bytes: Rc<Cell<u64>>,
}

impl<'de, E> Visitor<'de> for Elements<'_, E> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<Value>()? {
            let item = Item {
                location: Location::Element {
                    path: self.path.to_path_buf(),
                    index: *self.index,
                },
                record: record_from_json(v),
                bytes: self.bytes.get(),
            };
            *self.index += 1;
            if let Err(e) = (self.visit)(item) {
                *self.stopped = Some(e);
                return Err(serde::de::Error::custom("stopped by the reader"));
            }
        }
        Ok(())
    }
}

/// Calls `visit` with each element of the JSON file `path`'s top-level array, in order,
/// reading the file as a stream (constant memory whatever the array's length).
pub fn read_json_array<E: From<SourceError>>(
    path: &Path,
    visit: &mut dyn FnMut(Item) -> Result<(), E>,
) -> Result<(), E> {
    let f = File::open(path)
        .at("opening", path)
        .map_err(SourceError::from)?;
    let (reader, bytes) = Counted::new(BufReader::with_capacity(1 << 20, f));
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut stopped = None;
    let mut index = 0;
    let result = (&mut de).deserialize_seq(Elements {
        path,
        visit,
        stopped: &mut stopped,
        index: &mut index,
        bytes,
    });
    if let Some(e) = stopped {
        return Err(e);
    }
    let syntax = |source: serde_json::Error| -> E {
        if source.is_io() {
            let io = std::io::Error::other(source.to_string());
            return SourceError::from(PathIoError {
                action: "reading",
                path: path.to_path_buf(),
                source: io,
            })
            .into();
        }
        SourceError::JsonSyntax {
            path: path.to_path_buf(),
            index,
            source,
        }
        .into()
    };
    result.map_err(syntax)?;
    de.end().map_err(syntax)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(path: &Path, json: bool) -> Vec<(String, Result<Record, RecordProblem>)> {
        let mut out = Vec::new();
        let mut visit = |it: Item| -> Result<(), SourceError> {
            out.push((it.location.to_string(), it.record));
            Ok(())
        };
        if json {
            read_json_array(path, &mut visit).unwrap();
        } else {
            read_jsonl(path, &mut visit).unwrap();
        }
        out
    }

    #[test]
    fn json_array_streams_elements_with_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        std::fs::write(
            &p,
            r#" [ {"id": 7, "image": "coco/1.jpg", "conversations": [
                 {"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]},
               {"id": "x", "conversations": [{"from": "robot", "value": "?"}]},
               3 ] "#,
        )
        .unwrap();
        let got = collect(&p, true);
        assert_eq!(got.len(), 3);
        let r = got[0].1.as_ref().unwrap();
        assert_eq!(r.id.as_deref(), Some("7"));
        assert_eq!(r.dataset(), Some("coco"));
        assert_eq!(r.turns[1].role, Role::Assistant);
        assert!(got[1].0.ends_with("a.json#element 1"), "{}", got[1].0);
        let e = got[1].1.as_ref().unwrap_err().to_string();
        assert!(
            e.contains("`conversations[0].from` is \"robot\" (id \"x\")"),
            "{e}"
        );
        let e = got[2].1.as_ref().unwrap_err().to_string();
        assert!(e.contains("a JSON number"), "{e}");
        // Broken syntax stops the file, naming the element reached.
        std::fs::write(&p, r#"[{"id": 1, "conversations": []}, {"id": "#).unwrap();
        let mut n = 0;
        let e = read_json_array::<SourceError>(&p, &mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert_eq!(n, 1);
        assert!(e.contains("a.json: after element 1"), "{e}");
    }

    #[test]
    fn jsonl_names_lines_and_skips_blanks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        std::fs::write(
            &p,
            "{\"conversations\": [{\"from\": \"gpt\", \"value\": \"hi\"}]}\n\n{\"conversations\": 5}\n",
        )
        .unwrap();
        let got = collect(&p, false);
        assert_eq!(got.len(), 2);
        assert!(got[1].0.ends_with("a.jsonl:3"));
        let e = got[1].1.as_ref().unwrap_err().to_string();
        assert!(e.contains("`conversations` is 5"), "{e}");
    }
}
