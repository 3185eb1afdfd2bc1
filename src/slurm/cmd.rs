//! The Slurm commands MixAtlas calls, wrapped with typed results: `sbatch --parsable`,
//! `squeue` (all jobs in one call), `scontrol show job`, `scontrol requeue`, `scancel`,
//! `sacct` (needs an accounting database), `scontrol show hostnames`.
//!
//! Every call runs the command directly (no shell), and a failure names the command line, its
//! exit status and its stderr.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

/// A Slurm command failed or printed something unexpected.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// The command could not be started (Slurm not installed, not on PATH).
    #[error("{cmd}: could not run ({source}); is Slurm installed and on PATH?")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command exited with a failure.
    #[error("{cmd}: exit status {status}: {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status (-1 = killed by a signal).
        status: i32,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// The output did not have the expected form.
    #[error("{cmd}: unexpected output {output:?}: {reason}")]
    Parse {
        /// The command line.
        cmd: String,
        /// The output.
        output: String,
        /// What was expected.
        reason: String,
    },
}

impl SlurmError {
    /// `sacct` on a cluster without an accounting database (`AccountingStorageType=
    /// accounting_storage/none`): it exits 1 saying "Slurm accounting storage is disabled".
    pub fn is_accounting_disabled(&self) -> bool {
        matches!(self, Self::Failed { stderr, .. } if stderr.contains("accounting storage is disabled"))
    }

    /// The command ran but failed or answered nonsense (slurmctld busy or restarting, a
    /// timeout): worth asking again later, unlike a command that cannot be started.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Failed { .. } | Self::Parse { .. })
    }
}

/// Runs `program args…` and returns its stdout.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, SlurmError> {
    let cmd = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut c = Command::new(program);
    c.args(args);
    let out = if let Some(input) = stdin {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SlurmError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())
            .map_err(|source| SlurmError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        child.wait_with_output()
    } else {
        c.output()
    }
    .map_err(|source| SlurmError::Spawn {
        cmd: cmd.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(SlurmError::Failed {
            cmd,
            status: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A job's state as `squeue -o %T`, `scontrol show job` (`JobState=`) and `sacct` print it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for resources or priority.
    Pending,
    /// Allocated, starting up.
    Configuring,
    /// Running.
    Running,
    /// Suspended.
    Suspended,
    /// Finished, processes being cleaned up.
    Completing,
    /// Exited 0.
    Completed,
    /// Exited non-zero.
    Failed,
    /// Cancelled by a user or administrator.
    Cancelled,
    /// Reached its time limit.
    Timeout,
    /// A node failed.
    NodeFail,
    /// Preempted.
    Preempted,
    /// Killed by the out-of-memory handler.
    OutOfMemory,
    /// The node failed to boot.
    BootFail,
    /// Missed its deadline.
    Deadline,
    /// Being requeued.
    Requeued,
    /// Requeued and held.
    RequeueHold,
    /// Held after a special exit.
    SpecialExit,
    /// Stopped (SIGSTOP).
    Stopped,
    /// Being signalled.
    Signaling,
    /// Staging out data.
    StageOut,
    /// Resizing.
    Resizing,
    /// Any other state Slurm reports.
    Other(String),
}

impl FromStr for JobState {
    type Err = std::convert::Infallible;

    /// Parses `RUNNING`, `CANCELLED by 0` (sacct), `CANCELLED+` (truncated) alike.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let word = s
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('+')
            .to_ascii_uppercase();
        Ok(match word.as_str() {
            "PENDING" | "PD" => Self::Pending,
            "CONFIGURING" | "CF" => Self::Configuring,
            "RUNNING" | "R" => Self::Running,
            "SUSPENDED" | "S" => Self::Suspended,
            "COMPLETING" | "CG" => Self::Completing,
            "COMPLETED" | "CD" => Self::Completed,
            "FAILED" | "F" => Self::Failed,
            "CANCELLED" | "CA" => Self::Cancelled,
            "TIMEOUT" | "TO" => Self::Timeout,
            "NODE_FAIL" | "NF" => Self::NodeFail,
            "PREEMPTED" | "PR" => Self::Preempted,
            "OUT_OF_MEMORY" | "OOM" => Self::OutOfMemory,
            "BOOT_FAIL" | "BF" => Self::BootFail,
            "DEADLINE" | "DL" => Self::Deadline,
            "REQUEUED" | "RQ" => Self::Requeued,
            "REQUEUE_HOLD" | "RH" => Self::RequeueHold,
            "SPECIAL_EXIT" | "SE" => Self::SpecialExit,
            "STOPPED" | "ST" => Self::Stopped,
            "SIGNALING" | "SI" => Self::Signaling,
            "STAGE_OUT" | "SO" => Self::StageOut,
            "RESIZING" | "RS" => Self::Resizing,
            _ => Self::Other(s.trim().to_string()),
        })
    }
}

impl JobState {
    /// The job will not run again by itself (it may still be requeued by hand).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Completed
                | Self::Failed
                | Self::Cancelled
                | Self::Timeout
                | Self::NodeFail
                | Self::Preempted
                | Self::OutOfMemory
                | Self::BootFail
                | Self::Deadline
        )
    }

    /// The job finished successfully.
    pub fn is_success(&self) -> bool {
        *self == Self::Completed
    }
}

/// A job's id as Slurm prints it: `123`, an array task `123_4`, or a pending array range
/// `123_[5-9%2]`.
pub type JobId = String;

/// Submits a script file: `sbatch --parsable [args…] SCRIPT`; returns the job id.
pub fn sbatch(script: &Path, args: &[&str]) -> Result<JobId, SlurmError> {
    let path = script.to_string_lossy();
    let mut a = vec!["--parsable"];
    a.extend_from_slice(args);
    a.push(&path);
    parse_job_id(&run("sbatch", &a, None)?, &a)
}

/// Submits a script given as text on sbatch's stdin; returns the job id.
pub fn sbatch_text(script: &str, args: &[&str]) -> Result<JobId, SlurmError> {
    let mut a = vec!["--parsable"];
    a.extend_from_slice(args);
    parse_job_id(&run("sbatch", &a, Some(script))?, &a)
}

/// `--parsable` prints `ID` or `ID;CLUSTER`.
fn parse_job_id(out: &str, args: &[&str]) -> Result<JobId, SlurmError> {
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SlurmError::Parse {
            cmd: format!("sbatch {}", args.join(" ")),
            output: out.to_string(),
            reason: "expected a job id".into(),
        });
    }
    Ok(id)
}

/// Validates a script without submitting it (`sbatch --test-only`): Ok when Slurm would
/// accept it (it reports when and where the job would start, on stderr).
pub fn sbatch_test_only(script: &Path) -> Result<(), SlurmError> {
    run("sbatch", &["--test-only", &script.to_string_lossy()], None).map(|_| ())
}

/// States of the given jobs in one call: `squeue -h -t all -o "%i %T" -j ID,ID…`. Jobs Slurm
/// no longer remembers (finished longer ago than `MinJobAge`) are absent from the answer;
/// array tasks appear as `ARRAY_TASK` ids, pending remainders as `ARRAY_[range]`.
pub fn squeue(ids: &[&str]) -> Result<BTreeMap<JobId, JobState>, SlurmError> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let list = ids.join(",");
    let out = match run(
        "squeue",
        &["-h", "-t", "all", "-o", "%i %T", "-j", &list],
        None,
    ) {
        Ok(out) => out,
        // All ids unknown: squeue fails instead of printing nothing.
        Err(SlurmError::Failed { stderr, .. }) if stderr.contains("Invalid job id") => {
            String::new()
        }
        Err(e) => return Err(e),
    };
    let mut states = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let (id, state) = line
            .trim()
            .split_once(' ')
            .ok_or_else(|| SlurmError::Parse {
                cmd: format!("squeue -j {list}"),
                output: out.clone(),
                reason: "expected lines of \"ID STATE\"".into(),
            })?;
        let state: JobState = state.parse().expect("infallible");
        states.insert(id.to_string(), state);
    }
    Ok(states)
}

/// `scontrol show job -o ID`: the job's fields (`JobState`, `RestartCnt`, `ExitCode`,
/// `NodeList`, …); an array job gives its tasks' records, the first is returned.
pub fn show_job(id: &str) -> Result<BTreeMap<String, String>, SlurmError> {
    let out = run("scontrol", &["show", "job", "-o", id], None)?;
    let line = out.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let fields = parse_key_values(line);
    if !fields.contains_key("JobId") {
        return Err(SlurmError::Parse {
            cmd: format!("scontrol show job -o {id}"),
            output: out,
            reason: "expected JobId=… fields".into(),
        });
    }
    Ok(fields)
}

/// Splits `A=1 B=x y C=2` into fields; a word without `=` continues the previous value.
pub fn parse_key_values(line: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut last: Option<String> = None;
    for word in line.split_whitespace() {
        match word.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains('/') => {
                fields.insert(k.to_string(), v.to_string());
                last = Some(k.to_string());
            }
            _ => {
                if let Some(k) = &last {
                    let v: &mut String = fields.get_mut(k).expect("inserted");
                    v.push(' ');
                    v.push_str(word);
                }
            }
        }
    }
    fields
}

/// `scancel [--signal=SIG [--batch]] ID…`: cancels jobs, or only signals them (with
/// `batch`, only the batch shell, as `--signal=B:…` would at the time limit).
pub fn scancel(ids: &[&str], signal: Option<&str>, batch: bool) -> Result<(), SlurmError> {
    if ids.is_empty() {
        return Ok(());
    }
    let sig;
    let mut a = Vec::new();
    if let Some(s) = signal {
        sig = format!("--signal={s}");
        a.push(sig.as_str());
        if batch {
            a.push("--batch");
        }
    }
    a.extend_from_slice(ids);
    run("scancel", &a, None).map(|_| ())
}

/// `scontrol requeue ID`: ends the job's current run and queues it again.
pub fn requeue(id: &str) -> Result<(), SlurmError> {
    run("scontrol", &["requeue", id], None).map(|_| ())
}

/// `sacct -n -P -X -o JobID,State,ExitCode -j ID,…`: final states from the accounting
/// database; an array id lists its tasks as `ARRAY_TASK`. A cluster without accounting
/// (`accounting_storage/none`, as `scripts/slurm-local.sh` sets up) fails with an error for
/// which [`SlurmError::is_accounting_disabled`] holds. Values: (state, exit code).
pub fn sacct(ids: &[&str]) -> Result<BTreeMap<JobId, (JobState, String)>, SlurmError> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let list = ids.join(",");
    let out = run(
        "sacct",
        &["-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j", &list],
        None,
    )?;
    let mut states = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split('|');
        let (Some(id), Some(state), exit) = (f.next(), f.next(), f.next()) else {
            return Err(SlurmError::Parse {
                cmd: format!("sacct -j {list}"),
                output: out.clone(),
                reason: "expected JobID|State|ExitCode lines".into(),
            });
        };
        states.insert(
            id.to_string(),
            (
                state.parse().expect("infallible"),
                exit.unwrap_or("").into(),
            ),
        );
    }
    Ok(states)
}

/// `scontrol show hostnames LIST`: Slurm's own hostlist expansion.
pub fn show_hostnames(list: &str) -> Result<Vec<String>, SlurmError> {
    Ok(run("scontrol", &["show", "hostnames", list], None)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_from_every_command_form() {
        assert_eq!("RUNNING".parse::<JobState>().unwrap(), JobState::Running);
        assert_eq!(
            "CANCELLED by 0".parse::<JobState>().unwrap(),
            JobState::Cancelled
        );
        assert_eq!(
            "CANCELLED+".parse::<JobState>().unwrap(),
            JobState::Cancelled
        );
        assert_eq!(
            "OUT_OF_MEMORY".parse::<JobState>().unwrap(),
            JobState::OutOfMemory
        );
        assert_eq!("PD".parse::<JobState>().unwrap(), JobState::Pending);
        assert_eq!(
            "WEIRD".parse::<JobState>().unwrap(),
            JobState::Other("WEIRD".into())
        );
        assert!(JobState::Timeout.is_terminal() && !JobState::Pending.is_terminal());
        assert!(!JobState::Requeued.is_terminal());
    }

    #[test]
    fn scontrol_fields_parse() {
        let f = parse_key_values(
            "JobId=12 JobName=a b JobState=RUNNING Reason=None Command=/x/y.sh RestartCnt=1",
        );
        assert_eq!(f["JobName"], "a b");
        assert_eq!(f["JobState"], "RUNNING");
        assert_eq!(f["RestartCnt"], "1");
        assert_eq!(f["Command"], "/x/y.sh");
    }

    #[test]
    fn parsable_job_ids() {
        assert_eq!(parse_job_id("42\n", &[]).unwrap(), "42");
        assert_eq!(parse_job_id("42;cluster\n", &[]).unwrap(), "42");
        assert!(parse_job_id("Submitted batch job 42", &[]).is_err());
    }
}
