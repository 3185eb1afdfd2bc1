//! What `embed` reads: a stream of [`ImageItem`]s (an id and the encoded image, as bytes or a
//! file to read when needed), from an image list (`id<TAB>path` lines, paths relative to the
//! list's directory) or a directory of images (id = file stem, sorted by file name). Other
//! sources (LLaVA JSON, WebDataset shards) produce the same items.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::error::EmbedError;
use crate::fsutil::IoContext;

/// Where an item's encoded bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageBytes {
    /// Already in memory (a tar member, …).
    Data(Vec<u8>),
    /// A file, read when the item is embedded (not when a resumed run skips it).
    File(PathBuf),
}

/// One image to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageItem {
    /// The sample id written to `part-NNNNNN.ids.txt` (no tab or newline).
    pub id: String,
    /// Where the bytes came from, for error messages (`list.txt:12`, `shard.tar:key`, a path).
    pub origin: String,
    /// The encoded image (PNG, JPEG or WebP).
    pub bytes: ImageBytes,
}

impl ImageItem {
    /// The encoded bytes (reads the file of an [`ImageBytes::File`]).
    pub fn load(&self) -> Result<std::borrow::Cow<'_, [u8]>, EmbedError> {
        match &self.bytes {
            ImageBytes::Data(d) => Ok(std::borrow::Cow::Borrowed(d)),
            ImageBytes::File(p) => Ok(std::borrow::Cow::Owned(
                std::fs::read(p).at("reading image", p)?,
            )),
        }
    }
}

/// The image file extensions a directory source takes (case-insensitive).
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp"];

/// The items of `path`: a directory of images, or an image list file.
pub fn open_images(
    path: &Path,
) -> Result<Box<dyn Iterator<Item = Result<ImageItem, EmbedError>>>, EmbedError> {
    if path.is_dir() {
        Ok(Box::new(dir_items(path)?.into_iter().map(Ok)))
    } else {
        Ok(Box::new(ListItems::open(path)?))
    }
}

/// The images of a directory, sorted by file name; id = file stem (two files with one stem
/// are an error).
pub fn dir_items(dir: &Path) -> Result<Vec<ImageItem>, EmbedError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).at("listing", dir)? {
        let p = entry.at("listing", dir)?.path();
        let ext = p
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if p.is_file() && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
            files.push(p);
        }
    }
    files.sort();
    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(files.len());
    for p in files {
        let id = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !seen.insert(id.clone()) {
            return Err(EmbedError::ListLine {
                path: p.clone(),
                line: 0,
                reason: format!(
                    "id {id:?} (the file stem) appears twice in {}",
                    dir.display()
                ),
            });
        }
        items.push(ImageItem {
            id,
            origin: p.display().to_string(),
            bytes: ImageBytes::File(p),
        });
    }
    Ok(items)
}

/// The lines of an image list: `id<TAB>path`, blank lines skipped, ids unique.
pub struct ListItems {
    path: PathBuf,
    base: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    line: usize,
    seen: HashSet<String>,
}

impl ListItems {
    /// Opens an image list.
    pub fn open(path: &Path) -> Result<Self, EmbedError> {
        let f = File::open(path).at("opening image list", path)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(ListItems {
            path: path.to_path_buf(),
            base,
            lines: BufReader::new(f).lines(),
            line: 0,
            seen: HashSet::new(),
        })
    }

    fn parse(&mut self, text: &str) -> Result<ImageItem, EmbedError> {
        let bad = |reason: String| EmbedError::ListLine {
            path: self.path.clone(),
            line: self.line,
            reason,
        };
        let (id, rel) = text
            .split_once('\t')
            .ok_or_else(|| bad(format!("{text:?}: expected `id<TAB>image path`")))?;
        let rel = rel.trim_end_matches('\r');
        if id.is_empty() || rel.is_empty() {
            return Err(bad(format!("{text:?}: empty id or path")));
        }
        if !self.seen.insert(id.to_string()) {
            return Err(bad(format!("id {id:?} appears twice")));
        }
        Ok(ImageItem {
            id: id.to_string(),
            origin: format!("{}:{}", self.path.display(), self.line),
            bytes: ImageBytes::File(self.base.join(rel)),
        })
    }
}

impl Iterator for ListItems {
    type Item = Result<ImageItem, EmbedError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.line += 1;
            let text = match self.lines.next()? {
                Ok(t) => t,
                Err(e) => {
                    return Some(
                        Err(e)
                            .at("reading image list", &self.path)
                            .map_err(Into::into),
                    )
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            return Some(self.parse(&text));
        }
    }
}
