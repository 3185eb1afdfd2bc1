//! WebDataset tar shards: each sample is the members sharing a key (`KEY.jpg`, `KEY.json`, …),
//! stored one after another as WebDataset writes them.
//!
//! A member's key is its path up to the first `.` of its file name, the rest its extension
//! (WebDataset's rule: `a/b.seg.png` is key `a/b`, extension `seg.png`). Per key:
//!
//! - `KEY.jpg|jpeg|png|webp`: the image (its bytes are not read here: `prepare` takes
//!   precomputed embeddings);
//! - `KEY.json`: a LLaVA-style record ([`super::llava`]): `conversations`, optional `task`
//!   and `id` (the key when absent); its `image` field is ignored, the image member is the
//!   image;
//! - `KEY.txt`: a caption, made into one user turn holding the image and
//!   [`CAPTION_PROMPT`], and the caption (trimmed) as the assistant's answer. `KEY.json` wins
//!   when both are present.
//!
//! Other members are ignored. A key without `.json` or `.txt` is an error naming
//! `shard:key`, and so is a key that comes back after other keys.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::chat::{Role, Turn, IMAGE_MARKER};
use super::llava::{record_from_json, Counted};
use super::record::{Item, Location, Record, RecordProblem, SourceError};
use crate::fsutil::IoContext;

/// The user turn of a caption sample, after the image: what the caption answers.
pub const CAPTION_PROMPT: &str = "Describe this image briefly.";

/// Image member extensions.
const IMAGE_EXTS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// The members of one key.
#[derive(Default)]
struct Group {
    key: String,
    members: Vec<String>,
    image: Option<String>,
    json: Option<Vec<u8>>,
    txt: Option<Vec<u8>>,
    /// The key appeared earlier in the shard.
    split: bool,
}

impl Group {
    /// The group as a record.
    fn record(self) -> Result<Record, RecordProblem> {
        if self.split {
            return Err(RecordProblem::SplitKey);
        }
        let text = |bytes: Vec<u8>, ext: &str| {
            String::from_utf8(bytes).map_err(|_| RecordProblem::NotUtf8 {
                what: format!("member {}.{ext}", self.key),
            })
        };
        if let Some(bytes) = self.json {
            let s = text(bytes, "json")?;
            let v = serde_json::from_str(&s).map_err(RecordProblem::Json)?;
            let mut r = record_from_json(v)?;
            r.id = r.id.or(Some(self.key));
            r.image = self.image;
            return Ok(r);
        }
        if let Some(bytes) = self.txt {
            let caption = text(bytes, "txt")?;
            if self.image.is_none() {
                return Err(RecordProblem::Missing {
                    field: "KEY.jpg|jpeg|png|webp member (the image a caption describes)",
                    id: Some(self.key),
                });
            }
            return Ok(Record {
                id: Some(self.key),
                image: self.image,
                turns: vec![
                    Turn {
                        role: Role::User,
                        text: format!("{IMAGE_MARKER}\n{CAPTION_PROMPT}"),
                    },
                    Turn {
                        role: Role::Assistant,
                        text: caption.trim().to_string(),
                    },
                ],
                task: None,
            });
        }
        Err(RecordProblem::NoText {
            members: self.members.join(", "),
        })
    }
}

/// `(key, extension)` of a member path (see the module documentation).
fn split_key(path: &str) -> (&str, &str) {
    let base = path.rfind('/').map_or(0, |i| i + 1);
    match path[base..].find('.') {
        Some(dot) => (&path[..base + dot], &path[base + dot + 1..]),
        None => (path, ""),
    }
}

/// Calls `visit` with each sample of the shard `path`, in order, reading the tar as a
/// stream.
pub fn read_shard<E: From<SourceError>>(
    path: &Path,
    visit: &mut dyn FnMut(Item) -> Result<(), E>,
) -> Result<(), E> {
    let tar_err = |source: std::io::Error| SourceError::Tar {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path)
        .at("opening", path)
        .map_err(SourceError::from)?;
    let (reader, bytes) = Counted::new(BufReader::with_capacity(1 << 20, f));
    let mut archive = tar::Archive::new(reader);
    let mut seen: HashSet<String> = HashSet::new();
    let mut group: Option<Group> = None;
    let mut flush = |g: Group, bytes: u64| -> Result<(), E> {
        visit(Item {
            location: Location::Key {
                shard: path.to_path_buf(),
                key: g.key.clone(),
            },
            record: g.record(),
            bytes,
        })
    };
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(tar_err)?
            .to_string_lossy()
            .into_owned();
        let (key, ext) = split_key(&name);
        let (key, ext) = (key.to_string(), ext.to_ascii_lowercase());
        if group.as_ref().is_none_or(|g| g.key != key) {
            if let Some(g) = group.take() {
                flush(g, bytes.get())?;
            }
            let split = !seen.insert(key.clone());
            group = Some(Group {
                key,
                split,
                ..Group::default()
            });
        }
        let g = group.as_mut().expect("a group is open");
        g.members.push(name.clone());
        if IMAGE_EXTS.contains(&ext.as_str()) {
            g.image.get_or_insert(name);
        } else if ext == "json" || ext == "txt" {
            let mut buf = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut buf).map_err(tar_err)?;
            if ext == "json" {
                g.json = Some(buf);
            } else {
                g.txt = Some(buf);
            }
        }
    }
    if let Some(g) = group.take() {
        flush(g, bytes.get())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(dir: &Path, members: &[(&str, &[u8])]) -> std::path::PathBuf {
        let p = dir.join("s.tar");
        let mut b = tar::Builder::new(File::create(&p).unwrap());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.finish().unwrap();
        p
    }

    #[test]
    fn groups_members_by_key() {
        assert_eq!(split_key("a/b.seg.png"), ("a/b", "seg.png"));
        assert_eq!(split_key("x.y/k.txt"), ("x.y/k", "txt"));
        let dir = tempfile::tempdir().unwrap();
        let json = br#"{"task": "vqa", "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]}"#;
        let p = shard(
            dir.path(),
            &[
                ("k1.jpg", b"jpeg"),
                ("k1.json", json),
                ("k2.png", b"png"),
                ("k2.txt", b" a cat \n"),
                ("k3.txt", b"no image"),
                ("k4.cls", b"1"),
                ("k1.txt", b"again"),
            ],
        );
        let mut got = Vec::new();
        read_shard::<SourceError>(&p, &mut |it| {
            got.push((it.location.to_string(), it.record));
            Ok(())
        })
        .unwrap();
        assert_eq!(got.len(), 5);
        let r1 = got[0].1.as_ref().unwrap();
        assert_eq!(
            (r1.id.as_deref(), r1.image.as_deref(), r1.task.as_deref()),
            (Some("k1"), Some("k1.jpg"), Some("vqa"))
        );
        let r2 = got[1].1.as_ref().unwrap();
        assert_eq!(r2.turns[1].text, "a cat");
        assert_eq!(r2.turns[0].text, format!("<image>\n{CAPTION_PROMPT}"));
        assert!(got[2].0.ends_with("s.tar:k3"));
        let e = got[2].1.as_ref().unwrap_err().to_string();
        assert!(e.contains("KEY.jpg|jpeg|png|webp member"), "{e}");
        let e = got[3].1.as_ref().unwrap_err().to_string();
        assert!(
            e.contains("no KEY.json or KEY.txt member (members: k4.cls)"),
            "{e}"
        );
        let e = got[4].1.as_ref().unwrap_err().to_string();
        assert!(e.contains("appears again"), "{e}");
    }
}
