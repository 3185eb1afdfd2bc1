//! Standard output and the final error message: what `main` does when stdout goes away and
//! how an error chain is printed.
//!
//! `println!` panics when a write to stdout fails (`mixatlas inspect corpus | head -1` closes
//! the pipe; `> /dev/full` has no space), which used to end every command with a panic and
//! exit status 101. Commands may print through [`print`], which returns the failure as a
//! [`StdoutError`]; every other `println!` is caught at `main` ([`stdout_panic`], with
//! [`install_panic_hook`] keeping the panic message off stderr). Either way a closed pipe ends
//! the command quietly with [`BROKEN_PIPE_EXIT`] (the status a shell reports for a process
//! killed by `SIGPIPE`), and any other write failure with one `error: writing to stdout: …`
//! line and status 2.
//!
//! [`render`] prints an error and its causes once each: many error types include their
//! source's message in their own and also return it as `source()`, which `{:#}` would print
//! twice (`…: No such file or directory (os error 2): No such file or directory (os error 2)`).

use std::any::Any;
use std::fmt::Display;
use std::io::{self, Write};

/// Exit status of a command whose stdout was closed by its reader: 128 + `SIGPIPE` (13), what
/// a shell reports for a process killed by the signal, and no message.
pub const BROKEN_PIPE_EXIT: u8 = 141;

/// Writing to standard output failed.
#[derive(Debug, thiserror::Error)]
#[error("writing to stdout: {0}")]
pub struct StdoutError(pub io::Error);

impl StdoutError {
    /// Whether the reader closed the pipe (`EPIPE`).
    pub fn is_broken_pipe(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }
}

/// Prints `text` and a newline to stdout and flushes; a failed write is a [`StdoutError`].
pub fn print(text: impl Display) -> Result<(), StdoutError> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(StdoutError)
}

/// Flushes stdout (what a `print!` without a newline left buffered) at the end of a command.
pub fn flush() -> Result<(), StdoutError> {
    io::stdout().lock().flush().map_err(StdoutError)
}

/// The standard library's message when `println!` cannot write to stdout.
const PRINT_PANIC_PREFIX: &str = "failed printing to stdout: ";

/// The payload's message when a panic is `println!`'s failure to write to stdout.
fn print_panic_message(payload: &(dyn Any + Send)) -> Option<&str> {
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())?;
    msg.strip_prefix(PRINT_PANIC_PREFIX)
}

/// Keeps `println!`'s stdout panics off stderr ([`stdout_panic`] reports them at `main`);
/// every other panic is reported as before.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if print_panic_message(info.payload()).is_none() {
            default(info);
        }
    }));
}

/// How a stdout failure caught as a panic ends the command: `Some(None)` for a closed pipe
/// (quiet, [`BROKEN_PIPE_EXIT`]), `Some(Some(message))` for another failure, `None` when the
/// panic is something else.
pub fn stdout_panic(payload: &(dyn Any + Send)) -> Option<Option<String>> {
    let msg = print_panic_message(payload)?;
    let epipe = io::Error::from_raw_os_error(libc::EPIPE).to_string();
    Some((msg != epipe).then(|| format!("writing to stdout: {msg}")))
}

/// Whether `e` is (or was caused by) a closed stdout pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<StdoutError>()
            .is_some_and(StdoutError::is_broken_pipe)
    })
}

/// The error and its causes, `: `-separated, each cause once: a cause whose message the text
/// so far already ends with (or contains, for messages of 12 characters or more) is left out.
pub fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if s.is_empty() || out.ends_with(&s) || (s.len() >= 12 && out.contains(&s)) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Twice {
        path: &'static str,
        source: io::Error,
    }

    #[test]
    fn render_prints_each_cause_once() {
        let io = io::Error::from_raw_os_error(libc::ENOENT);
        let text = io.to_string();
        let e = anyhow::Error::new(Twice {
            path: "a.json",
            source: io,
        })
        .context("loading the space");
        assert_eq!(
            render(&e),
            format!("loading the space: reading a.json: {text}")
        );
        // A cause not in the message is kept.
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(render(&e), "outer: inner");
    }

    #[test]
    fn print_panics_are_recognised() {
        let epipe = io::Error::from_raw_os_error(libc::EPIPE);
        let p: Box<dyn Any + Send> = Box::new(format!("{PRINT_PANIC_PREFIX}{epipe}"));
        assert_eq!(stdout_panic(&*p), Some(None));
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        let p: Box<dyn Any + Send> = Box::new(format!("{PRINT_PANIC_PREFIX}{full}"));
        assert_eq!(
            stdout_panic(&*p),
            Some(Some(format!("writing to stdout: {full}")))
        );
        let p: Box<dyn Any + Send> = Box::new("index out of bounds");
        assert_eq!(stdout_panic(&*p), None);
        let e = anyhow::Error::new(StdoutError(epipe)).context("printing");
        assert!(is_broken_pipe(&e));
    }
}
