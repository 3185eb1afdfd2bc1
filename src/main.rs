//! The `mixatlas` binary: parse the command line, run one subcommand, map its error to the
//! exit code. Every command lives under `cli/`.
//!
//! Exit status: 0 on success, 2 on an error (one `error: …` line on stderr, each cause once),
//! [`cli::output::BROKEN_PIPE_EXIT`] (141, quiet) when the reader of stdout closed it.

mod cli;

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::process::ExitCode;

use cli::output;

fn main() -> ExitCode {
    // Before anything starts a thread or touches a tensor.
    mixatlas::train::tune_threads();
    let args = cli::parse();
    cli::init_logging(&args);
    output::install_panic_hook();
    // `println!` panics when stdout fails; those panics end the command like errors do.
    let result = catch_unwind(AssertUnwindSafe(|| {
        cli::run(args).and_then(|()| Ok(output::flush()?))
    }));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) if output::is_broken_pipe(&e) => ExitCode::from(output::BROKEN_PIPE_EXIT),
        Ok(Err(e)) => fail(&output::render(&e)),
        Err(payload) => match output::stdout_panic(&*payload) {
            Some(None) => ExitCode::from(output::BROKEN_PIPE_EXIT),
            Some(Some(message)) => fail(&message),
            None => resume_unwind(payload),
        },
    }
}

/// Prints `error: {message}` on stderr; exit status 2.
fn fail(message: &str) -> ExitCode {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "error: {message}");
    ExitCode::from(2)
}
