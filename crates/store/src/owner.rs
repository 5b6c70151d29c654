//! Who owns a `running` row, and whether that owner still lives.
//!
//! Every opened store (a daemon's, a `run-once`'s) is an *owner*: it gets a random nonce,
//! writes it with its pid and host into every run row it claims, and holds an exclusive
//! `flock` on the file `<database>.owners/<nonce>` for as long as it is open. A `running` row
//! is *live* while that lock is held. Locks belong to open file descriptions, so the kernel
//! drops them when the process ends in any way (`kill -9` included), and they work where
//! pids do not: across containers sharing the database volume (separate pid namespaces,
//! per-container host names), after a reboot, with recycled pids. Inside one process a store
//! that was closed (or dropped) counts as gone even though the process lives on.
//!
//! The overlap check across processes looks only at live rows; only rows whose owner is dead
//! are marked `interrupted` (at daemon start, periodically, and when a claim meets them).

use std::collections::HashSet;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

pub use soarjobd_core::store::RunOwner;

/// What can be said about an owner from this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// Its lock file could not be examined (an I/O error other than "not found"). Treated as
    /// alive, so a run is never declared dead by a process that cannot know.
    Unknown,
}

/// Nonces of the stores open in this process.
fn open_nonces() -> &'static Mutex<HashSet<String>> {
    static OPEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// The folder of owner lock files of the database at `database`.
pub fn owners_dir(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".owners");
    PathBuf::from(name)
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor owned by `file`.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// An open store's owner identity and the lock that proves it alive. Dropping it (or
/// [`OwnerGuard::release`]) makes the store's rows count as dead.
#[derive(Debug)]
pub struct OwnerGuard {
    owner: RunOwner,
    dir: PathBuf,
    lock: Mutex<Option<File>>,
}

impl OwnerGuard {
    /// Creates and locks `<dir>/<nonce>` (the folder with mode 0700 if missing).
    pub fn new(dir: &Path) -> std::io::Result<OwnerGuard> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let owner = RunOwner {
            pid: i64::from(std::process::id()),
            host: this_host().to_owned(),
            nonce: uuid::Uuid::new_v4().simple().to_string(),
        };
        // Locked under a temporary name and renamed into place, so that no other process
        // can ever see the final name unlocked (and take its owner for dead).
        let tmp = dir.join(format!(".{}.tmp", owner.nonce));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let locked = flock(&file, libc::LOCK_EX | libc::LOCK_NB)
            .and_then(|_| writeln!(file, "{} {}", owner.pid, owner.host))
            .and_then(|_| std::fs::rename(&tmp, dir.join(&owner.nonce)));
        if let Err(e) = locked {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        open_nonces()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(owner.nonce.clone());
        Ok(OwnerGuard {
            owner,
            dir: dir.to_path_buf(),
            lock: Mutex::new(Some(file)),
        })
    }

    pub fn owner(&self) -> &RunOwner {
        &self.owner
    }

    /// The folder of lock files this owner's checks look in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Marks the store closed: its `running` rows are no longer live. Idempotent.
    pub fn release(&self) {
        open_nonces()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.owner.nonce);
        if let Some(file) = self.lock.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // Removed before the lock is dropped: a checker that opened it just before sees
            // it unlocked right after, which is the truth.
            let _ = std::fs::remove_file(self.dir.join(&self.owner.nonce));
            drop(file);
        }
    }
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// Whether a row's owner still lives (the row type is the core's; the flock is this crate's).
pub trait OwnerExt {
    /// Whether the store that claimed the row is still open somewhere. `dir` is the owners
    /// folder of the database the row is in.
    fn liveness(&self, dir: &Path) -> Liveness;
}

impl OwnerExt for RunOwner {
    fn liveness(&self, dir: &Path) -> Liveness {
        if open_nonces()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&self.nonce)
        {
            return Liveness::Alive;
        }
        // The nonce comes from the database: never let it name another path.
        let valid = self.nonce.len() == 32
            && self
                .nonce
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Liveness::Dead;
        }
        let path = dir.join(&self.nonce);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Liveness::Dead,
            Err(_) => return Liveness::Unknown,
        };
        match flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
            // Nobody holds it: the owner is gone without cleaning up (killed). Tidy up.
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
                Liveness::Dead
            }
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Liveness::Alive,
            Err(_) => Liveness::Unknown,
        }
    }
}

/// This machine's host name.
pub fn this_host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
        let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if r != 0 {
            return "unknown".to_owned();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_owner_is_alive_and_a_released_one_dead_without_leftovers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("db.owners");
        let guard = OwnerGuard::new(&dir).expect("owner");
        let owner = guard.owner().clone();
        assert_eq!(owner.liveness(&dir), Liveness::Alive);
        assert!(dir.join(&owner.nonce).exists());
        drop(guard);
        assert_eq!(owner.liveness(&dir), Liveness::Dead);
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0);
    }

    #[test]
    fn a_lock_held_elsewhere_is_alive_and_an_abandoned_file_dead() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("db.owners");
        std::fs::create_dir_all(&dir).expect("dir");
        let owner = RunOwner {
            pid: 1,
            host: "elsewhere".into(),
            nonce: "0123456789abcdef0123456789abcdef".into(),
        };
        // Another process's lock (a separate open file description behaves the same).
        let held = File::create(dir.join(&owner.nonce)).expect("create");
        flock(&held, libc::LOCK_EX).expect("lock");
        assert_eq!(owner.liveness(&dir), Liveness::Alive);
        // Its process died without removing the file (kill -9): the lock went with it.
        drop(held);
        assert_eq!(owner.liveness(&dir), Liveness::Dead);
        assert!(
            !dir.join(&owner.nonce).exists(),
            "the stale file is removed"
        );
        // A nonce that is not one of ours never names another path.
        let evil = RunOwner {
            nonce: "../../etc/passwd".into(),
            ..owner
        };
        assert_eq!(evil.liveness(&dir), Liveness::Dead);
    }
}
