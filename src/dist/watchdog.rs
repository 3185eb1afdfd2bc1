//! No silent hangs: a watchdog thread that ends the process with a clear error when a
//! collective has not completed within the timeout (typically because another rank died).
//! Exiting makes `mpirun`/`srun` tear down the remaining ranks; search state on disk stays
//! resumable because it is only ever appended and fsync'd or renamed into place.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Exit status used when a collective times out.
pub const TIMEOUT_EXIT: i32 = 3;

#[derive(Debug, Default)]
struct Slot {
    op: Option<(&'static str, Instant)>,
}

/// Watches collectives of one rank.
#[derive(Debug, Clone)]
pub struct Watchdog {
    slot: Arc<Mutex<Slot>>,
}

/// Marks a collective as in flight until dropped.
#[derive(Debug)]
pub struct Guard {
    slot: Arc<Mutex<Slot>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.slot.lock() {
            s.op = None;
        }
    }
}

impl Watchdog {
    /// Starts the watchdog thread for `rank` with `timeout` (none when zero).
    pub fn start(rank: usize, timeout: Duration) -> Self {
        let slot = Arc::new(Mutex::new(Slot::default()));
        if !timeout.is_zero() {
            let watched = Arc::clone(&slot);
            std::thread::Builder::new()
                .name("mixatlas-watchdog".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_millis(100).min(timeout));
                    let stuck = watched
                        .lock()
                        .ok()
                        .and_then(|s| s.op)
                        .filter(|(_, t)| t.elapsed() > timeout);
                    if let Some((op, t)) = stuck {
                        eprintln!(
                            "error: {op} on rank {rank} did not complete within {:.0} s \
                             (waited {:.0} s): another rank has died or hangs; aborting the job \
                             (rerun the same command to resume)",
                            timeout.as_secs_f64(),
                            t.elapsed().as_secs_f64()
                        );
                        std::process::exit(TIMEOUT_EXIT);
                    }
                })
                .expect("watchdog thread starts");
        }
        Self { slot }
    }

    /// Marks `op` as in flight until the guard drops.
    pub fn enter(&self, op: &'static str) -> Guard {
        if let Ok(mut s) = self.slot.lock() {
            s.op = Some((op, Instant::now()));
        }
        Guard {
            slot: Arc::clone(&self.slot),
        }
    }
}
