//! Crash-safe file-system helpers shared by every writer in the crate.
//!
//! MixAtlas promises that bad input or a `kill -9` never leaves a half-written file: derived
//! files are written to a temporary sibling, fsync'd and renamed over the target; corpora are
//! built in a temporary directory that is renamed into place only when complete; [`lock`]
//! keeps a second process from writing the same directory at the same time.

pub mod lock;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An I/O error annotated with the path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct PathIoError {
    /// What was being done ("reading", "creating", ...).
    pub action: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// Extension to attach a path and an action to an `io::Result`.
pub trait IoContext<T> {
    /// Wraps the error in a [`PathIoError`] naming `path`.
    fn at(self, action: &'static str, path: &Path) -> Result<T, PathIoError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T, PathIoError> {
        self.map_err(|source| PathIoError {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A temporary sibling path of `path` unique to this process (`.name.tmp.<pid>`).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PathIoError> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = File::create(&tmp).at("creating", &tmp)?;
        f.write_all(bytes).at("writing", &tmp)?;
        f.sync_all().at("syncing", &tmp)?;
        drop(f);
        fs::rename(&tmp, path).at("renaming into place", path)?;
        sync_parent(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsyncs the directory holding `path` so a rename into it is durable.
pub fn sync_parent(path: &Path) -> Result<(), PathIoError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .at("syncing directory", parent)
}

/// A directory built under a temporary name and renamed onto its final path by [`commit`].
///
/// Dropping it without committing removes the partial directory, so a failed build leaves
/// nothing behind (and a `kill -9` leaves only a clearly named `.NAME.partial.PID` sibling).
///
/// [`commit`]: StagingDir::commit
#[derive(Debug)]
pub struct StagingDir {
    tmp: PathBuf,
    target: PathBuf,
    overwrite: bool,
    committed: bool,
}

impl StagingDir {
    /// Creates the staging directory next to `target`. Fails if `target` exists and
    /// `overwrite` is false.
    pub fn new(target: &Path, overwrite: bool) -> Result<Self, PathIoError> {
        if target.exists() && !overwrite {
            return Err(PathIoError {
                action: "refusing to overwrite",
                path: target.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "output exists (pass --force to replace it)",
                ),
            });
        }
        if let Some(parent) = target.parent() {
            if !parent.as_os_str().is_empty() {
                fs::create_dir_all(parent).at("creating", parent)?;
            }
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        remove_stale_partials(target, &name);
        let tmp = target.with_file_name(format!(".{name}.partial.{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).at("removing stale", &tmp)?;
        }
        fs::create_dir_all(&tmp).at("creating", &tmp)?;
        Ok(Self {
            tmp,
            target: target.to_path_buf(),
            overwrite,
            committed: false,
        })
    }

    /// The directory to write into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The final path the directory will have.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the finished directory into place, replacing an existing one only if it was
    /// created with `overwrite` (another process may have written the target meanwhile).
    pub fn commit(mut self) -> Result<PathBuf, PathIoError> {
        sync_dir_tree(&self.tmp)?;
        if self.target.exists() && !self.overwrite {
            return Err(PathIoError {
                action: "refusing to replace",
                path: self.target.clone(),
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "another process wrote this output while it was being built (pass --force to replace it)",
                ),
            });
        }
        if self.target.exists() {
            let old = self.target.with_file_name(format!(
                ".{}.old.{}",
                self.target
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                std::process::id()
            ));
            fs::rename(&self.target, &old).at("moving aside", &self.target)?;
            fs::rename(&self.tmp, &self.target).at("renaming into place", &self.target)?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&self.tmp, &self.target).at("renaming into place", &self.target)?;
        }
        sync_parent(&self.target)?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Removes `.NAME.partial.PID` siblings left by builds that were killed (their PID no longer
/// runs), so a `kill -9` during `prepare` costs nothing but the lost work.
fn remove_stale_partials(target: &Path, name: &str) {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let prefix = format!(".{name}.partial.");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        if !alive && pid != std::process::id() {
            tracing::info!(path = %e.path().display(), "removing partial output of a killed run");
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// fsyncs every regular file directly inside `dir` (recursively) and the directory itself.
fn sync_dir_tree(dir: &Path) -> Result<(), PathIoError> {
    for entry in fs::read_dir(dir).at("listing", dir)? {
        let entry = entry.at("listing", dir)?;
        let p = entry.path();
        let ft = entry.file_type().at("reading type of", &p)?;
        if ft.is_dir() {
            sync_dir_tree(&p)?;
        } else if ft.is_file() {
            File::open(&p)
                .and_then(|f| f.sync_all())
                .at("syncing", &p)?;
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("syncing directory", dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn staging_dir_is_removed_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("corpus");
        {
            let s = StagingDir::new(&target, false).unwrap();
            fs::write(s.path().join("x"), b"1").unwrap();
        }
        assert!(!target.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let s = StagingDir::new(&target, false).unwrap();
        fs::write(s.path().join("x"), b"1").unwrap();
        s.commit().unwrap();
        assert_eq!(fs::read(target.join("x")).unwrap(), b"1");
        assert!(StagingDir::new(&target, false).is_err());
        let s = StagingDir::new(&target, true).unwrap();
        fs::write(s.path().join("y"), b"2").unwrap();
        s.commit().unwrap();
        assert!(!target.join("x").exists());
        assert!(target.join("y").exists());
    }

    #[test]
    fn a_target_written_meanwhile_is_not_replaced_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("corpus");
        let s = StagingDir::new(&target, false).unwrap();
        fs::create_dir(&target).unwrap();
        fs::write(target.join("theirs"), b"1").unwrap();
        let err = s.commit().unwrap_err().to_string();
        assert!(err.contains("corpus") && err.contains("--force"), "{err}");
        assert!(target.join("theirs").exists());
    }

    #[test]
    fn partial_directories_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("corpus");
        // PID 4194304 exceeds Linux's pid_max limit, so it never runs.
        let stale = dir.path().join(".corpus.partial.4194304");
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join("half"), b"x").unwrap();
        let s = StagingDir::new(&target, false).unwrap();
        assert!(!stale.exists());
        s.commit().unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
