//! One writer per directory: an advisory lock that `search`, `train`, `transfer` and `prepare`
//! hold on their output for the whole run (docs/reliability.md, "One writer per directory").
//!
//! Two mechanisms, because the file systems HPC users write to differ in what they honour:
//!
//! - **`flock(LOCK_EX | LOCK_NB)`** on a lock file (`<dir>/.mixatlas.lock`, or the sibling
//!   `.<name>.mixatlas.lock` for a directory that is replaced as a whole). The kernel releases it
//!   when the holder exits, however it exits, so a `kill -9`ed holder never blocks the next run.
//!   Local file systems, NFSv4 and Lustre mounted with `-o flock` share it between hosts;
//!   Lustre with `-o localflock` and NFS mounted `nolock` honour it on one host only, and
//!   Lustre with `-o noflock` refuses it (then the record alone decides, with a warning).
//! - **The holder record** in that file: pid, host, command line, start time, the process's
//!   start tick and the boot id (to tell a reused pid). The holder refreshes the file's mtime
//!   every [`HEARTBEAT`]. A run that gets the `flock` still refuses when the record names a
//!   live process on this host, or another host whose heartbeat is younger than
//!   [`STALE_AFTER`]: there the `flock` may not have been shared. `force_unlock` overrides the
//!   record, never a held `flock` (a held `flock` always belongs to a running process).
//!   A holder that finds its record replaced by another writer stops at once (exit status 3)
//!   instead of writing beside it, so even where no lock is shared two writers overlap for at
//!   most one heartbeat.
//!
//! On release the record is removed while the `flock` is still held; an acquirer checks after
//! `flock` that the path still names the file it locked (else it retries), the usual protocol
//! for lock files that are deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{IoContext, PathIoError};

/// The lock file inside a locked directory.
pub const LOCK_FILE: &str = ".mixatlas.lock";

/// How often a holder refreshes its record's mtime (`MIXATLAS_LOCK_HEARTBEAT`, in seconds,
/// overrides it: the tests use a fraction of a second).
pub const HEARTBEAT: Duration = Duration::from_secs(15);

fn heartbeat() -> Duration {
    std::env::var("MIXATLAS_LOCK_HEARTBEAT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(HEARTBEAT, Duration::from_secs_f64)
}

/// A record from another host whose mtime is older than this is taken as left by a dead
/// process (8 missed heartbeats: tolerant of clock skew and slow metadata servers).
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// Exit status of a holder that finds its lock taken over by another writer.
pub const TAKEN_OVER_EXIT: i32 = 3;

/// Who holds (or held) a lock: the record in the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// The command line.
    pub command: String,
    /// When the lock was taken (UTC, `YYYY-MM-DDTHH:MM:SSZ`).
    pub since: String,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22), which
    /// tells a reused pid from the holder.
    #[serde(default)]
    pub start_ticks: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` of the host (a reboot ends every holder).
    #[serde(default)]
    pub boot_id: Option<String>,
}

impl Holder {
    /// This process.
    pub fn me() -> Self {
        let pid = std::process::id();
        let mut command: String = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        if command.chars().count() > 400 {
            command = command.chars().take(400).collect::<String>() + "…";
        }
        Self {
            pid,
            host: hostname(),
            command,
            since: utc_timestamp(SystemTime::now()),
            start_ticks: start_ticks(pid),
            boot_id: boot_id(),
        }
    }

    fn same_process(&self, other: &Holder) -> bool {
        self.pid == other.pid && self.host == other.host && self.start_ticks == other.start_ticks
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {} since {} (`{}`)",
            self.pid, self.host, self.since, self.command
        )
    }
}

/// The holder as text, or what is known when its record is missing or unreadable.
fn describe(h: &Option<Box<Holder>>) -> String {
    h.as_ref().map_or_else(
        || "a process that has not written its record yet".into(),
        |h| h.to_string(),
    )
}

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the `flock`: it is running now.
    #[error(
        "{} is in use by another writer: {}; only one process may write it at a time — wait for that run to finish or stop it (lock file {})",
        dir.display(), describe(holder), lock_file.display()
    )]
    Held {
        /// The directory.
        dir: PathBuf,
        /// The lock file.
        lock_file: PathBuf,
        /// Its record (None if not yet written or unreadable).
        holder: Option<Box<Holder>>,
    },
    /// The `flock` was granted but the record names a writer that may still run (on this host
    /// a live process; on another host a fresh heartbeat): the file system may not share locks.
    #[error(
        "{} may be in use by another writer: {}, {}; the file-system lock was granted, so this file system may not share locks between hosts (NFS `nolock`, Lustre `localflock`) — if that process is gone, rerun with --force-unlock (lock file {})",
        dir.display(), holder, why, lock_file.display()
    )]
    RecordLive {
        /// The directory.
        dir: PathBuf,
        /// The lock file.
        lock_file: PathBuf,
        /// The record.
        holder: Box<Holder>,
        /// Why it is taken as live ("the process is running", "heartbeat 20 s ago").
        why: String,
    },
    /// An I/O error on the lock file.
    #[error(transparent)]
    Io(#[from] PathIoError),
}

/// A held directory lock; dropping it releases the lock and removes the record.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
    me: Holder,
    created: Option<PathBuf>,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

impl DirLock {
    /// Locks `dir` through `dir/.mixatlas.lock`. A missing `dir` is created, and removed again
    /// on release if nothing was written into it (a refused configuration leaves nothing).
    pub fn acquire(dir: &Path, force_unlock: bool) -> Result<Self, LockError> {
        let existed = dir.is_dir();
        let mut lock = Self::acquire_file(&dir.join(LOCK_FILE), dir, force_unlock)?;
        lock.created = (!existed).then(|| dir.to_path_buf());
        Ok(lock)
    }

    /// Locks a directory that is built elsewhere and renamed onto `target` (a corpus): the lock
    /// file is the sibling `.<name>.mixatlas.lock`, which the rename leaves alone.
    pub fn acquire_sibling(target: &Path, force_unlock: bool) -> Result<Self, LockError> {
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
        Self::acquire_file(
            &parent.join(format!(".{name}{LOCK_FILE}")),
            target,
            force_unlock,
        )
    }

    /// The lock file.
    pub fn lock_file(&self) -> &Path {
        &self.path
    }

    /// Takes `path`'s lock on behalf of `dir` (named in errors).
    fn acquire_file(path: &Path, dir: &Path, force_unlock: bool) -> Result<Self, LockError> {
        let mut attempts = 0;
        let (mut file, shared) = loop {
            attempts += 1;
            // Created on every attempt: a releasing holder may have removed an empty directory.
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).at("creating", parent)?;
            }
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
            {
                // The directory was removed between creating and opening: create it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 20 => continue,
                r => r.at("opening lock file", path)?,
            };
            let shared = match try_flock(&file) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(LockError::Held {
                        dir: dir.to_path_buf(),
                        lock_file: path.to_path_buf(),
                        holder: read_record_patiently(&file).map(Box::new),
                    });
                }
                Err(e) if flock_unsupported(&e) => {
                    tracing::warn!(
                        lock = %path.display(),
                        "this file system refuses flock ({e}); only the holder record guards the directory"
                    );
                    false
                }
                Err(e) => {
                    return Err(PathIoError {
                        action: "locking",
                        path: path.to_path_buf(),
                        source: e,
                    }
                    .into())
                }
            };
            // A releasing holder removes the file while holding the lock: if the path no longer
            // names what was locked, lock the new file instead.
            if same_file(path, &file) || attempts >= 20 {
                break (file, shared);
            }
        };
        let me = Holder::me();
        if let Some(old) = read_record(&mut file) {
            check_record(&old, &file, dir, path, force_unlock)?;
        }
        write_record(&mut file, &me).at("writing lock record", path)?;
        tracing::debug!(lock = %path.display(), flock = shared, "locked");
        let (stop, rx) = mpsc::channel();
        let beat = Beat {
            file: file.try_clone().at("opening lock file", path)?,
            path: path.to_path_buf(),
            me: me.clone(),
        };
        let heartbeat = std::thread::Builder::new()
            .name("lock-heartbeat".into())
            .spawn(move || beat.run(rx))
            .at("starting the lock heartbeat for", path)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            me,
            created: None,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
        })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        // Remove the record only if it is still ours and still at the path (never another
        // writer's after a --force-unlock); the flock is released when the file closes.
        let ours = read_record(&mut self.file).is_some_and(|h| h.same_process(&self.me));
        if ours && same_file(&self.path, &self.file) {
            let _ = fs::remove_file(&self.path);
            if let Some(dir) = &self.created {
                // Fails, as it should, unless the directory is empty.
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// Decides whether a record left in a lock file whose `flock` was granted may be replaced.
fn check_record(
    old: &Holder,
    file: &File,
    dir: &Path,
    path: &Path,
    force_unlock: bool,
) -> Result<(), LockError> {
    let live = if old.host == hostname() {
        process_alive(old).then(|| "a process of that pid and start time is running".to_string())
    } else {
        let age = file
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        (age < STALE_AFTER).then(|| {
            format!(
                "its heartbeat is {} s old (taken as gone after {} s)",
                age.as_secs(),
                STALE_AFTER.as_secs()
            )
        })
    };
    match live {
        None => {
            tracing::info!(
                lock = %path.display(),
                "replaced the stale lock record of pid {} on host {} (since {}): that process is gone",
                old.pid, old.host, old.since
            );
            Ok(())
        }
        Some(why) if force_unlock => {
            tracing::warn!(
                lock = %path.display(),
                "--force-unlock: taking the lock of pid {} on host {} ({why}); if it still runs it stops at its next heartbeat",
                old.pid, old.host
            );
            Ok(())
        }
        Some(why) => Err(LockError::RecordLive {
            dir: dir.to_path_buf(),
            lock_file: path.to_path_buf(),
            holder: Box::new(old.clone()),
            why,
        }),
    }
}

/// The holder's heartbeat: refreshes the lock file's mtime, and stops the process if another
/// writer replaced the record.
struct Beat {
    file: File,
    path: PathBuf,
    me: Holder,
}

impl Beat {
    fn run(mut self, stop: mpsc::Receiver<()>) {
        let every = heartbeat();
        while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
            match read_record(&mut self.file) {
                Some(h) if !h.same_process(&self.me) => {
                    tracing::error!(
                        lock = %self.path.display(),
                        "the lock was taken over by {h}; stopping so that only one process writes"
                    );
                    std::process::exit(TAKEN_OVER_EXIT);
                }
                _ => {}
            }
            // A null `times` sets both to "now" (on NFS the server's clock).
            // SAFETY: the fd is open for the life of `self.file`; a null pointer is allowed.
            unsafe { libc::futimens(self.file.as_raw_fd(), std::ptr::null()) };
        }
    }
}

fn try_flock(file: &File) -> io::Result<()> {
    // SAFETY: flock on a valid, open file descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `flock` is not available on this file system (Lustre `noflock`, some FUSE file systems).
fn flock_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOLCK) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
    )
}

/// `path` still names the open `file`.
fn same_file(path: &Path, file: &File) -> bool {
    match (fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The record in the lock file, if it holds one.
fn read_record(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// The record of a holder that may have just taken the lock: retried for up to a second.
fn read_record_patiently(file: &File) -> Option<Holder> {
    let mut file = file.try_clone().ok()?;
    for _ in 0..20 {
        if let Some(h) = read_record(&mut file) {
            return Some(h);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn write_record(file: &mut File, me: &Holder) -> io::Result<()> {
    let mut line = serde_json::to_string(me).map_err(io::Error::other)?;
    line.push('\n');
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(line.as_bytes())?;
    file.sync_all()
}

/// The record's process runs on this host: same pid, same start tick, same boot, not a zombie.
fn process_alive(h: &Holder) -> bool {
    if h.boot_id.is_some() && h.boot_id != boot_id() {
        return false;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{}/stat", h.pid)) else {
        // No /proc: ask the kernel whether the pid exists.
        // SAFETY: signal 0 only checks for existence and permission.
        let rc = unsafe { libc::kill(h.pid as libc::pid_t, 0) };
        return rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    };
    let (state, ticks) = parse_stat(&stat);
    state != Some('Z') && state != Some('X') && (h.start_ticks.is_none() || ticks == h.start_ticks)
}

/// The state (field 3) and start time (field 22) of a `/proc/PID/stat` line.
fn parse_stat(stat: &str) -> (Option<char>, Option<u64>) {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return (None, None);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().and_then(|s| s.chars().next());
    (state, fields.get(19).and_then(|s| s.parse().ok()))
}

fn start_ticks(pid: u32) -> Option<u64> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).1
}

fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// This host's name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_in_the_same_directory_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path(), false).unwrap();
        let err = DirLock::acquire(dir.path(), false).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&hostname()), "{text}");
        // --force-unlock never overrides a held flock.
        assert!(DirLock::acquire(dir.path(), true).is_err());
        drop(lock);
        assert!(
            !dir.path().join(LOCK_FILE).exists(),
            "released locks leave no file"
        );
        drop(DirLock::acquire(dir.path(), false).unwrap());
    }

    #[test]
    fn a_directory_the_lock_created_is_removed_only_if_empty() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        drop(DirLock::acquire(&dir, false).unwrap());
        assert!(!dir.exists(), "nothing written, nothing left");
        let lock = DirLock::acquire(&dir, false).unwrap();
        fs::write(dir.join("trials.jsonl"), b"{}").unwrap();
        drop(lock);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    fn plant(path: &Path, h: &Holder) {
        fs::write(path, serde_json::to_string(h).unwrap()).unwrap();
    }

    #[test]
    fn a_dead_holders_record_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut dead = Holder::me();
        dead.pid = 4_194_304; // above Linux's pid_max: never runs
        plant(&dir.path().join(LOCK_FILE), &dead);
        let lock = DirLock::acquire(dir.path(), false).unwrap();
        let text = fs::read_to_string(lock.lock_file()).unwrap();
        let now: Holder = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(now.pid, std::process::id());
    }

    #[test]
    fn a_reused_pid_is_not_a_live_holder() {
        let mut h = Holder::me();
        assert!(process_alive(&h));
        h.start_ticks = h.start_ticks.map(|t| t + 1);
        assert!(!process_alive(&h));
    }

    #[test]
    fn a_live_or_fresh_record_without_flock_is_refused_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        // A live process on this host whose flock we nonetheless get (this one's parent).
        let mut live = Holder::me();
        live.pid = std::os::unix::process::parent_id();
        live.start_ticks = start_ticks(live.pid);
        plant(&path, &live);
        let err = DirLock::acquire(dir.path(), false).unwrap_err();
        assert!(matches!(err, LockError::RecordLive { .. }), "{err}");
        assert!(err.to_string().contains("--force-unlock"), "{err}");
        // Another host with a fresh heartbeat.
        let mut remote = Holder::me();
        remote.host = "node-elsewhere".into();
        plant(&path, &remote);
        let err = DirLock::acquire(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("node-elsewhere"), "{err}");
        assert!(err.to_string().contains("heartbeat"), "{err}");
        drop(DirLock::acquire(dir.path(), true).unwrap());
        // Another host whose heartbeat stopped long ago.
        plant(&path, &remote);
        let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        drop(DirLock::acquire(dir.path(), false).unwrap());
    }

    #[test]
    fn a_sibling_lock_leaves_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("corpus");
        let lock = DirLock::acquire_sibling(&target, false).unwrap();
        assert!(!target.exists());
        assert_eq!(
            lock.lock_file(),
            dir.path().join(".corpus.mixatlas.lock").as_path()
        );
        assert!(DirLock::acquire_sibling(&target, false).is_err());
    }

    #[test]
    fn timestamps_are_utc_iso() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(utc_timestamp(t), "2024-02-29T12:34:56Z");
    }
}
