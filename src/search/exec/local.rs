//! The local executor (`executor.kind = "local"`): each attempt is a child process (its own
//! process group, its own log file), up to P at once; an attempt that passes its time limit
//! is killed (the whole process group), and children die with the controller
//! (`PR_SET_PDEATHSIG`), so a killed search leaves no trainer writing behind it.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Executor;
use crate::fsutil::{IoContext, PathIoError};
use crate::search::attempt::{attempt_dir, check_metrics, log_tail, TrialJob};
use crate::search::error::ExecError;
use crate::search::state::Event;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// The process exited (code, or the signal that killed it).
    Exited {
        /// Exit code, when it exited normally.
        code: Option<i32>,
        /// Signal, when a signal ended it.
        signal: Option<i32>,
    },
    /// Killed after its time limit.
    TimedOut,
}

/// A finished attempt.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Trial id.
    pub trial: String,
    /// Attempt.
    pub attempt: usize,
    /// How it ended.
    pub ended: Ended,
    /// Wall time in seconds.
    pub wall_s: f64,
}

struct Running {
    job: TrialJob,
    child: Child,
    started: Instant,
}

/// Child processes on this machine.
pub struct LocalExecutor {
    out: PathBuf,
    parallel: usize,
    running: Vec<Running>,
}

impl LocalExecutor {
    /// An executor with nothing running, for the search in `out`, running up to `parallel`
    /// attempts at once.
    pub fn new(out: &Path, parallel: usize) -> Self {
        Self {
            out: out.to_path_buf(),
            parallel,
            running: Vec::new(),
        }
    }

    /// Starts `job` as a child process; returns its process id.
    pub fn spawn(&mut self, job: TrialJob) -> Result<String, PathIoError> {
        let log = File::create(&job.log).at("creating", &job.log)?;
        let err = log.try_clone().at("opening", &job.log)?;
        let mut cmd = Command::new(&job.argv[0]);
        cmd.args(&job.argv[1..])
            .envs(job.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().at("starting trial command", &job.log)?;
        let id = child.id().to_string();
        self.running.push(Running {
            job,
            child,
            started: Instant::now(),
        });
        Ok(id)
    }

    /// Waits until some attempt ends and returns it (`None` when nothing runs).
    pub fn wait_any(&mut self) -> Option<Completion> {
        use std::os::unix::process::ExitStatusExt;
        if self.running.is_empty() {
            return None;
        }
        loop {
            for i in 0..self.running.len() {
                let r = &mut self.running[i];
                let elapsed = r.started.elapsed();
                let ended = match r.child.try_wait() {
                    Ok(Some(status)) => Some(Ended::Exited {
                        code: status.code(),
                        signal: status.signal(),
                    }),
                    Ok(None) if r.job.timeout.is_some_and(|t| elapsed > t) => {
                        kill_group(&mut r.child);
                        Some(Ended::TimedOut)
                    }
                    Ok(None) => None,
                    Err(_) => Some(Ended::Exited {
                        code: None,
                        signal: None,
                    }),
                };
                if let Some(ended) = ended {
                    let r = self.running.swap_remove(i);
                    return Some(Completion {
                        trial: r.job.trial,
                        attempt: r.job.attempt,
                        ended,
                        wall_s: elapsed.as_secs_f64(),
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Executor for LocalExecutor {
    fn room(&self) -> usize {
        self.parallel.saturating_sub(self.running.len())
    }

    fn submit(&mut self, job: TrialJob) -> Result<Option<String>, ExecError> {
        let pid = self.spawn(job)?;
        Ok(Some(format!("local:{pid}")))
    }

    fn running(&self) -> usize {
        self.running.len()
    }

    fn poll(&mut self) -> Result<Vec<Event>, ExecError> {
        Ok(self
            .wait_any()
            .map(|done| conclude(&self.out, &done))
            .into_iter()
            .collect())
    }
}

/// The event of an ended attempt: `finished` when it exited 0 with valid metrics, else
/// `failed` with the exit status (or signal, or time limit) and the log's last line.
pub fn conclude(out: &Path, done: &Completion) -> Event {
    let dir = attempt_dir(out, &done.trial, done.attempt);
    let fail = |reason: String| Event::Failed {
        trial: done.trial.clone(),
        attempt: done.attempt,
        reason,
    };
    match &done.ended {
        Ended::TimedOut => fail(format!(
            "killed after the time limit ({:.0} s)",
            done.wall_s
        )),
        Ended::Exited { code: Some(0), .. } => match check_metrics(&dir) {
            Ok(metrics) => Event::Finished {
                trial: done.trial.clone(),
                attempt: done.attempt,
                metrics,
                wall_s: done.wall_s,
                fidelity: None,
            },
            Err(e) => fail(format!("exit 0 but {e} ({})", dir.display())),
        },
        Ended::Exited { code, signal } => {
            let tail = log_tail(&dir);
            let how = match (code, signal) {
                (Some(c), _) => format!("exit status {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                _ => "ended abnormally".into(),
            };
            fail(if tail.is_empty() {
                how
            } else {
                format!("{how}: {tail}")
            })
        }
    }
}

impl Drop for LocalExecutor {
    fn drop(&mut self) {
        for r in &mut self.running {
            kill_group(&mut r.child);
        }
    }
}

fn kill_group(child: &mut Child) {
    // SAFETY: plain syscall; the group id is the child's pid (process_group(0)).
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}
