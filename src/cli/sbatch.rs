//! `mixatlas sbatch`: render (or submit) a Slurm job script for the search controller, a
//! trials array or a multi-node transfer.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

/// `mixatlas sbatch`.
#[derive(Debug, Args)]
pub struct SbatchArgs {
    /// search (the controller), trials (a job array over a manifest), transfer (multi-node).
    pub kind: String,
    /// The command the job runs, as shell text written into the script as it is (default:
    /// this binary with --config for `search`, every word quoted).
    #[arg(long)]
    pub command: Option<String>,
    /// Config file passed to `mixatlas search --config` (search kind).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Manifest of trial directories, one per line (trials kind).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Array throttle (trials kind).
    #[arg(long)]
    pub throttle: Option<u32>,
    /// Nodes (transfer kind).
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// Ranks per node (transfer kind).
    #[arg(long, default_value_t = 1)]
    pub tasks_per_node: u32,
    /// GPUs per task.
    #[arg(long)]
    pub gpus_per_task: Option<u32>,
    /// Partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit in minutes.
    #[arg(long)]
    pub time: Option<u32>,
    /// Seconds of warning (USR2) before the time limit.
    #[arg(long, default_value_t = 120)]
    pub grace: u32,
    /// Extra `#SBATCH` options as KEY=VALUE (escape hatch).
    #[arg(long = "extra", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,
    /// Where the job's logs go.
    #[arg(long, default_value = "slurm-logs")]
    pub log_dir: PathBuf,
    /// Submit it and print the job id instead of printing the script.
    #[arg(long)]
    pub submit: bool,
}

/// `sbatch`: render (and optionally submit) a job script.
pub fn run_sbatch(a: SbatchArgs) -> Result<()> {
    use mixatlas::slurm::sbatch::{
        render, shell_join, shell_quote, JobCommon, SearchJob, TransferJob, TrialsArrayJob,
    };
    let exe = std::env::current_exe()?;
    let exe = exe.to_string_lossy();
    let mut common = JobCommon::new(&format!("mixatlas-{}", a.kind), &a.log_dir);
    common.partition = a.partition.clone();
    common.time_min = a.time;
    common.grace_s = a.grace;
    for e in &a.extra {
        let (k, v) = e
            .split_once('=')
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .unwrap_or((e.clone(), None));
        common.extra.insert(k, v);
    }
    let spec = match a.kind.as_str() {
        "search" => {
            let mut words = vec![exe.to_string(), "search".into()];
            if let Some(c) = &a.config {
                let c = std::fs::canonicalize(c).unwrap_or(c.clone());
                words.extend(["--config".into(), c.to_string_lossy().into_owned()]);
            }
            SearchJob {
                common,
                workdir: std::env::current_dir()?,
                command: a.command.clone().unwrap_or_else(|| shell_join(&words)),
                max_requeues: 3,
            }
            .spec()
        }
        "trials" => {
            let Some(m) = &a.manifest else {
                bail!("sbatch trials: --manifest FILE (one trial directory per line) is required");
            };
            let text = std::fs::read_to_string(m).with_context(|| m.display().to_string())?;
            TrialsArrayJob {
                common,
                manifest: m.clone(),
                tasks: text.lines().filter(|l| !l.trim().is_empty()).count().max(1),
                throttle: a.throttle,
                gpus_per_task: a.gpus_per_task,
                command: a.command.clone().unwrap_or_else(|| {
                    format!(
                        "{} train --mixture \"$MIXATLAS_MIXTURE\" --out \"$MIXATLAS_TRIAL_DIR\" --resume --quiet",
                        shell_quote(&exe)
                    )
                }),
            }
            .spec()
        }
        "transfer" => TransferJob {
            common,
            nodes: a.nodes,
            tasks_per_node: a.tasks_per_node,
            gpus_per_task: a.gpus_per_task,
            mpi: "pmix".into(),
            command: a
                .command
                .clone()
                .unwrap_or_else(|| shell_join(&[exe.as_ref(), "transfer"])),
        }
        .spec(),
        other => bail!("sbatch {other:?}: expected search, trials or transfer"),
    }
    .context("sbatch: --partition, --extra, --log-dir and the job name go into #SBATCH lines")?;
    let script = render(&spec);
    if a.submit {
        std::fs::create_dir_all(&a.log_dir)?;
        let id = mixatlas::slurm::cmd::sbatch_text(&script, &[])?;
        println!("{id}");
    } else {
        print!("{script}");
    }
    Ok(())
}
