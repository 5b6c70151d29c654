//! One daemon per database: an exclusive `flock` on a sidecar file `<database>.lock`.
//!
//! The lock belongs to the open file description, so the kernel releases it when the daemon
//! exits in any way (including `kill -9` and a crash): nothing is left behind that a later
//! start would have to clean up, unlike a row in the database. The file holds the owner's pid
//! and host for the error message of a second daemon; its content is informative only, the
//! lock is what counts. `list`, `history` and `run-once` do not take it, so they keep working
//! next to a running daemon. The descriptor is close-on-exec (Rust's default), so exec jobs
//! do not inherit the lock and cannot keep it alive after the daemon died.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::owner::this_host;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another daemon holds the database.
    #[error("database is in use by soarjobd pid {pid} on host {host} (lock file {})", .path.display())]
    InUse {
        pid: String,
        host: String,
        path: PathBuf,
    },
    #[error("cannot lock {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held for the daemon's life; dropping it releases the database.
#[derive(Debug)]
pub struct DaemonLock {
    _file: File,
    path: PathBuf,
}

impl DaemonLock {
    /// Takes the lock of the database at `database_path`, or says who holds it.
    pub fn acquire(database_path: &Path) -> Result<DaemonLock, LockError> {
        let mut name = database_path.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor we own.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            // The holder writes its identity right after locking; a reader racing that write
            // may see an empty file, hence the "unknown" fallbacks.
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let mut words = text.split_whitespace();
            let pid = words.next().unwrap_or("unknown").to_owned();
            let host = words.next().unwrap_or("unknown").to_owned();
            return Err(LockError::InUse { pid, host, path });
        }
        let identity = format!("{} {}\n", std::process::id(), this_host());
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(identity.as_bytes()))
            .map_err(io)?;
        Ok(DaemonLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_names_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("state.db");
        let first = DaemonLock::acquire(&db).expect("first");
        assert_eq!(first.path(), dir.path().join("state.db.lock"));
        match DaemonLock::acquire(&db) {
            Err(LockError::InUse { pid, host, .. }) => {
                assert_eq!(pid, std::process::id().to_string());
                assert_eq!(host, this_host());
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(first);
        DaemonLock::acquire(&db).expect("free again after the holder is gone");
    }
}
