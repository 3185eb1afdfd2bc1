//! The `mixatlas` binary: parse the command line, run one subcommand, map its error to the
//! exit code. Every command lives under `cli/`.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything starts a thread or touches a tensor.
    mixatlas::train::tune_threads();
    let args = cli::parse();
    cli::init_logging(&args);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
