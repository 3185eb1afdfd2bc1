//! Executors run trial attempts. The local executor starts each attempt as a child process
//! (its own process group, its own log file), runs up to P at once, kills an attempt that
//! passes its time limit (the whole process group), and makes children die with the
//! controller (`PR_SET_PDEATHSIG`), so a killed search leaves no trainer writing behind it.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fsutil::{IoContext, PathIoError};

/// One attempt to run.
#[derive(Debug, Clone)]
pub struct TrialJob {
    /// Trial id.
    pub trial: String,
    /// Attempt number (1-based).
    pub attempt: usize,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go.
    pub log: PathBuf,
    /// Wall-clock limit.
    pub timeout: Option<Duration>,
}

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
    running: Vec<Running>,
}

impl Default for LocalExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalExecutor {
    /// An executor with nothing running.
    pub fn new() -> Self {
        Self {
            running: Vec::new(),
        }
    }

    /// Attempts running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Starts `job`; returns its job id (the process id).
    pub fn submit(&mut self, job: TrialJob) -> Result<String, PathIoError> {
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
