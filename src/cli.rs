//! Command-line interface: clap definitions and one function per subcommand.

use clap::Parser;

/// MixAtlas: find the best multimodal midtraining data mixture.
#[derive(Debug, Parser)]
#[command(name = "mixatlas", version, about)]
pub struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

pub fn parse() -> Cli {
    Cli::parse()
}

pub fn init_logging(_cli: &Cli) {}

pub fn run(_cli: Cli) -> anyhow::Result<()> {
    Ok(())
}
