//! The checks a search makes before it proposes or launches anything, so that a setting that
//! would fail every trial stops the command at once with its reason instead of running the
//! whole budget into "0 trials finished":
//!
//! - the corpus opens (manifest, every cell's and benchmark's files present with the sizes and
//!   headers the manifest lists) and, up to [`VERIFY_LIMIT`] bytes, its SHA-256 checksums
//!   match (larger corpora get the size/header check only: `inspect --verify` checks them);
//! - the built-in trainer's model preset (and every fidelity's) exists;
//! - the trainer command's program resolves: a path that is an executable file, or a name
//!   found on `PATH` (local and MPI executors: Slurm's nodes may have another `PATH`);
//! - the search directory can be created and written.

use std::fs;
use std::path::{Path, PathBuf};

use super::config::{ExecutorKind, SearchConfig, TrainerConfig};
use crate::data::corpus::{Corpus, CorpusError};
use crate::fsutil::{IoContext, PathIoError};
use crate::model::config::Qwen2Config;
use crate::model::error::ModelError;

/// Corpora whose checksummed files total at most this many bytes are verified in full
/// before a search; larger ones get the size and header checks only.
pub const VERIFY_LIMIT: u64 = 1 << 30;

/// A setting that would fail every trial.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The corpus cannot be opened or a checksum differs.
    #[error("preflight: corpus {}: {source}", corpus.display())]
    Corpus {
        /// The corpus directory.
        corpus: PathBuf,
        /// Why.
        #[source]
        source: CorpusError,
    },
    /// The built-in trainer's preset does not exist.
    #[error("preflight: [search.trainer] preset: {0}")]
    Preset(#[source] ModelError),
    /// The trainer command's program is not an executable file.
    #[error(
        "preflight: trainer command {command:?}: {program:?} {problem} (give a path to an \
         executable file or a program on PATH)"
    )]
    Program {
        /// The command template.
        command: String,
        /// Its program.
        program: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The search directory cannot be written.
    #[error("preflight: the search directory is not writable: {0}")]
    Out(#[source] PathIoError),
}

/// What the preflight learnt besides passing: notes for the user (e.g. that checksums were
/// skipped for a large corpus).
#[derive(Debug, Default)]
pub struct Preflight {
    /// Notes to print as warnings.
    pub notes: Vec<String>,
}

/// Runs every check (see the module documentation) for a search of `cfg` under `kind`.
pub fn preflight(cfg: &SearchConfig, kind: ExecutorKind) -> Result<Preflight, PreflightError> {
    let mut out = Preflight::default();
    check_corpus(&cfg.corpus, &mut out)?;
    if let TrainerConfig::Builtin { preset } = &cfg.trainer {
        Qwen2Config::preset(preset).map_err(PreflightError::Preset)?;
    }
    if let (TrainerConfig::Command { command, shell }, ExecutorKind::Local | ExecutorKind::Mpi) =
        (&cfg.trainer, kind)
    {
        check_program(command, *shell)?;
    }
    check_writable(&cfg.out).map_err(PreflightError::Out)?;
    Ok(out)
}

/// Opens the corpus (sizes, headers) and verifies its checksums up to [`VERIFY_LIMIT`].
fn check_corpus(dir: &Path, out: &mut Preflight) -> Result<(), PreflightError> {
    let wrap = |source| PreflightError::Corpus {
        corpus: dir.to_path_buf(),
        source,
    };
    let corpus = Corpus::open(dir).map_err(wrap)?;
    let bytes = corpus.checksummed_bytes();
    if bytes <= VERIFY_LIMIT {
        corpus.verify(|_| {}).map_err(wrap)?;
    } else {
        out.notes.push(format!(
            "corpus {} holds {:.1} GiB: checked its files' sizes and headers, not their \
             checksums (run `mixatlas inspect corpus {} --verify` once)",
            dir.display(),
            bytes as f64 / (1u64 << 30) as f64,
            dir.display()
        ));
    }
    Ok(())
}

/// Words a shell runs itself (the program of such a command is not looked up).
const SHELL_WORDS: &[&str] = &[
    "cd", "exec", "export", "set", "source", ".", ":", "if", "for", "while", "until", "case", "{",
    "(", "!", "eval", "exit", "return", "unset", "ulimit", "umask", "trap", "wait", "test", "[",
    "true", "false", "echo", "printf", "read", "command", "type", "time",
];

/// The program of a command template: its first word (after `NAME=value` assignments), or
/// `None` when it cannot be told without running a shell (a placeholder, an expansion, a
/// shell builtin or keyword).
pub fn program_of(template: &str) -> Option<String> {
    let mut rest = template.trim_start();
    loop {
        let (word, tail) = first_word(rest)?;
        let is_assignment = word.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        if is_assignment {
            rest = tail.trim_start();
            continue;
        }
        if word.is_empty()
            || word.contains([
                '$', '`', '{', '}', '(', ')', ';', '|', '&', '<', '>', '*', '?',
            ])
            || SHELL_WORDS.contains(&word.as_str())
        {
            return None;
        }
        return Some(word);
    }
}

/// The first shell word of `s` (quotes removed) and what follows it; `None` for an
/// unterminated quote or a backslash (not worth a shell parser here).
fn first_word(s: &str) -> Option<(String, &str)> {
    let mut word = String::new();
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => quote = Some(c),
            (None, '\\') => return None,
            (None, c) if c.is_whitespace() => return Some((word, &s[i..])),
            (None, c) => word.push(c),
        }
    }
    (quote.is_none() && !word.is_empty()).then_some((word, ""))
}

/// Checks that the program of `command` is an executable file: its first argument when it
/// runs without a shell (a placeholder there is not looked up), [`program_of`] under `shell`.
fn check_program(command: &str, shell: bool) -> Result<(), PreflightError> {
    let program = if shell {
        program_of(command)
    } else {
        super::command::split(command)
            .ok()
            .and_then(|w| w.into_iter().next())
            .filter(|w| !w.contains('{'))
    };
    let Some(program) = program else {
        return Ok(());
    };
    let bad = |problem| PreflightError::Program {
        command: command.to_string(),
        program: program.clone(),
        problem,
    };
    if program.contains('/') {
        return match executable(Path::new(&program)) {
            Some(true) => Ok(()),
            Some(false) => Err(bad("is not executable")),
            None => Err(bad("does not exist")),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| executable(&d.join(&program)) == Some(true)) {
        Ok(())
    } else {
        Err(bad("is not found on PATH"))
    }
}

/// Whether `p` is an executable file (`None`: it does not exist or is not a file).
fn executable(p: &Path) -> Option<bool> {
    use std::os::unix::fs::PermissionsExt;
    let m = fs::metadata(p).ok().filter(|m| m.is_file())?;
    Some(m.permissions().mode() & 0o111 != 0)
}

/// Creates `out` and writes (then removes) a probe file in it.
fn check_writable(out: &Path) -> Result<(), PathIoError> {
    fs::create_dir_all(out).at("creating", out)?;
    let probe = out.join(format!(".preflight.{}", std::process::id()));
    fs::write(&probe, b"ok").at("writing", &probe)?;
    fs::remove_file(&probe).at("removing", &probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_of_a_template_is_its_first_word() {
        let cases = [
            ("python3 train.py {trial_dir}", Some("python3")),
            (
                "  /opt/x/train.sh --out {trial_dir}",
                Some("/opt/x/train.sh"),
            ),
            ("FOO=1 BAR=x ./run.sh", Some("./run.sh")),
            ("'/sp ace/t.sh' {trial_dir}", Some("/sp ace/t.sh")),
            ("\"a\"b c", Some("ab")),
            ("cd {trial_dir} && make", None),
            ("{trial_dir}/run.sh", None),
            ("$HOME/run.sh", None),
            ("echo hi; exit 3", None),
            ("", None),
        ];
        for (t, want) in cases {
            assert_eq!(program_of(t).as_deref(), want, "{t}");
        }
    }

    #[test]
    fn missing_and_non_executable_programs_are_named() {
        assert!(check_program("sh -c true", false).is_ok());
        let e = check_program("no-such-program-xyz {trial_dir}", false).unwrap_err();
        assert!(e.to_string().contains("not found on PATH"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.sh");
        fs::write(&f, "#!/bin/sh\n").unwrap();
        let e = check_program(&format!("{} x", f.display()), false).unwrap_err();
        assert!(e.to_string().contains("is not executable"), "{e}");
        let e = check_program("/no/such/t.sh", false).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        // Without a shell the program is the first argument, quotes removed.
        let e = check_program("'/no/such dir/t.sh' {trial_dir}", false).unwrap_err();
        assert!(e.to_string().contains("/no/such dir/t.sh"), "{e}");
        // Under `--trainer-shell` a builtin's program is not looked up.
        assert!(check_program("cd /tmp && ./t.sh", true).is_ok());
    }
}
