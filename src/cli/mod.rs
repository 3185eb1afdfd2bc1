//! The `mixatlas` command line: clap's top-level parser ([`Cli`], one [`Command`] per
//! subcommand), logging, and the dispatch to one file per command.
//!
//! Parsing is two-staged (see STYLE.md): clap turns what the user typed into the argument
//! structs of each command file; each `run_*` function resolves them against config files and
//! presets into the library's typed configurations, and only those reach the library.
//!
//! The command files import the library, [`runtime`] (the shared runtime: `Dist`, the
//! device, the model config of a corpus, progress bars), [`output`] (stdout writes that return
//! their failure, and how `main` ends on one) and [`chameleon`] (flags shared by
//! `suggest` and `search`), never one another; only [`demo`],
//! which drives the pipeline end to end, calls other commands' run functions.

pub mod ask;
pub mod bench;
pub mod chameleon;
pub mod corpus;
pub mod demo;
pub mod embed;
pub mod embed_bench;
pub mod gp_scale;
pub mod gpu;
pub mod output;
pub mod regmix;
pub mod report;
pub mod runtime;
pub mod sbatch;
pub mod scale;
pub mod search;
pub mod train;
pub mod transfer;

use std::io::IsTerminal;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// MixAtlas: find the best multimodal midtraining data mixture with proxy runs and a
/// GP-UCB surrogate, then prove it at scale.
#[derive(Debug, Parser)]
#[command(name = "mixatlas", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// One subcommand per pipeline stage.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the main job on built-in data: synth → prepare → sampling report.
    Demo(demo::DemoArgs),
    /// Generate the built-in synthetic multimodal corpus as raw JSONL.
    Synth(corpus::SynthArgs),
    /// CLIP image embeddings (and per-image features) of images into a resumable directory.
    Embed(embed::EmbedArgs),
    /// Cluster raw samples into concepts and write the (concept × task) cell corpus.
    Prepare(corpus::PrepareArgs),
    /// Describe a prepared corpus or a Megatron `.bin`/`.idx` prefix; verify checksums.
    Inspect(corpus::InspectArgs),
    /// Propose the next mixtures from finished trials (ask/tell).
    Suggest(ask::SuggestArgs),
    /// Posterior mean and standard deviation of the objective at given mixtures.
    Predict(ask::PredictArgs),
    /// Write the recommended mixture (recipe.json), optionally as a Megatron blend.
    Recipe(ask::RecipeArgs),
    /// Train the built-in Qwen2-style model on a corpus mixture (also a trial runner).
    Train(train::TrainArgs),
    /// Per-token log-probabilities of token sequences under a checkpoint, as JSON.
    Score(train::ScoreArgs),
    /// Search for the best mixture: propose, run proxy trials, learn, repeat (resumable).
    Search(search::SearchArgs),
    /// Measurements: steps-to-loss, `predict`'s ranking of RegMix's released proxy runs, and
    /// those that need real processes (under mpirun).
    Bench(bench::BenchArgs),
    /// Train the larger model on the baseline and on the recipe (same settings and seeds)
    /// and compare: steps to baseline loss, benchmark scores.
    Transfer(transfer::TransferArgs),
    /// One self-contained HTML page with figures: search convergence, recipe, GP, transfer.
    Report(report::ReportArgs),
    /// Loss curves of training runs as one SVG.
    Plot(report::PlotArgs),
    /// Render (or submit) an sbatch script: the search controller, a trials array, a transfer.
    Sbatch(sbatch::SbatchArgs),
    /// The GPU path (feature `cuda`): compile the kernels with NVRTC, or check the fused
    /// sampling kernel and NCCL on this machine's GPU.
    Gpu(gpu::GpuArgs),
}

/// Parses the command line.
pub fn parse() -> Cli {
    Cli::parse()
}

/// Sets up `tracing` on stderr: info by default, `-v` debug, `-vv` trace; `RUST_LOG` wins.
pub fn init_logging(cli: &Cli) {
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(a) => demo::run_demo(a),
        Command::Synth(a) => corpus::run_synth(a).map(|_| ()),
        Command::Embed(a) => embed::run_embed(a),
        Command::Prepare(a) => corpus::run_prepare(a).map(|_| ()),
        Command::Inspect(a) => corpus::run_inspect(a),
        Command::Suggest(a) => ask::run_suggest(a),
        Command::Predict(a) => ask::run_predict(a),
        Command::Recipe(a) => ask::run_recipe(a),
        Command::Train(a) => train::run_train(a),
        Command::Score(a) => train::run_score(a),
        Command::Search(a) => search::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Transfer(a) => transfer::run_transfer(a),
        Command::Report(a) => report::run_report(a),
        Command::Plot(a) => report::run_plot(a),
        Command::Sbatch(a) => sbatch::run_sbatch(a),
        Command::Gpu(a) => gpu::run(a),
    }
}
