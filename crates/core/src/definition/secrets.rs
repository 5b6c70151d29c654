//! What a job file may read besides itself: `value_from_env` and `value_from_file`.
//!
//! Whoever can write `jobs/` must not get the daemon's own credentials. So:
//!
//! * `value_from_env` never reads the daemon's configuration variables (`SOARJOBD__*`, which
//!   carry the platform keys) and, beyond that, only names listed in `secrets.env_allow`
//!   (exact names, or prefixes ending in `*`). The default list is empty.
//! * `value_from_file` reads only regular files inside `secrets.dirs` (default: the jobs folder
//!   and `/run/secrets`). A path with `..` is refused outright; the target is checked twice,
//!   lexically (so nothing outside is even looked at) and after resolving symbolic links (so
//!   a link cannot escape); `/proc` and `/sys` are never readable, whatever is configured.
//!   Files are opened non-blocking and must be regular files no larger than
//!   [`MAX_SECRET_BYTES`], so a FIFO or `/dev/zero` cannot stall or exhaust a load.
//!
//! The non-blocking open itself needs the OS's open flags, which the core does not know (it
//! depends on no libc): the caller hands the loader one, an [`OpenFile`] in
//! [`LoadOptions::open`](super::LoadOptions) (`soarjobd_containment::open_nonblocking`).

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Opens a file for reading **without blocking**: a FIFO (or another file whose open waits)
/// put where a job or secret file is expected must not make the open wait for a writer, or
/// a load would hang forever. The core reads job and secret files only through one of these;
/// the daemon's is `soarjobd_containment::open_nonblocking` (`O_NONBLOCK`).
pub type OpenFile = fn(&Path) -> std::io::Result<File>;

/// The default secrets folder of container runtimes (Docker/Kubernetes secrets).
pub const RUN_SECRETS: &str = "/run/secrets";
/// The largest file `value_from_file` reads.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// Variables no job file may read: the daemon's own configuration.
pub const DAEMON_ENV_PREFIX: &str = "SOARJOBD__";

/// Where `value_from_env` and `value_from_file` may read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsPolicy {
    /// Variable names, or prefixes ending in `*`.
    pub env_allow: Vec<String>,
    /// Folders `value_from_file` may read inside.
    pub dirs: Vec<PathBuf>,
}

impl SecretsPolicy {
    /// The default policy: no variables, files in `jobs_dir` and `/run/secrets`.
    pub fn default_for(jobs_dir: &Path) -> SecretsPolicy {
        SecretsPolicy {
            env_allow: Vec::new(),
            dirs: vec![jobs_dir.to_path_buf(), PathBuf::from(RUN_SECRETS)],
        }
    }

    /// Whether a job file may read the variable `var`; `Err` says why not.
    pub fn check_env(&self, var: &str) -> Result<(), String> {
        if is_daemon_var(var) {
            return Err(format!(
                "`value_from_env` cannot read `{var}`: {DAEMON_ENV_PREFIX}* variables hold the \
                 daemon's own configuration and credentials"
            ));
        }
        if self.env_allow.iter().any(|p| env_matches(p, var)) {
            Ok(())
        } else {
            Err(format!(
                "environment variable `{var}` is not allowed for job files: add it (or a prefix \
                 such as `{}_*`) to `secrets.env_allow` in the daemon's configuration",
                var.split('_').next().unwrap_or(var)
            ))
        }
    }

    /// The file `value_from_file: f` of a job in `base_dir` names, if it is inside a secrets
    /// folder. Returns the path to read (symbolic links resolved when the file exists).
    pub fn resolve_file(&self, base_dir: &Path, f: &str) -> Result<PathBuf, String> {
        let rel = Path::new(f);
        if rel.components().any(|c| c == Component::ParentDir) {
            return Err(format!(
                "`value_from_file` must not contain `..` (got `{f}`); name a file inside one of \
                 the secrets folders ({})",
                self.describe_dirs()
            ));
        }
        let base = base_dir
            .canonicalize()
            .unwrap_or_else(|_| absolute(base_dir));
        let lexical = base.join(rel);
        let dirs = self.canonical_dirs();
        let inside = |p: &Path| !forbidden(p) && dirs.iter().any(|d| p.starts_with(d));
        if !inside(&lexical) {
            return Err(self.outside(f));
        }
        match lexical.canonicalize() {
            // A symbolic link may point anywhere: check where it lands.
            Ok(real) if inside(&real) => Ok(real),
            Ok(_) => Err(format!(
                "`value_from_file` `{f}` is a symbolic link that leads outside the secrets \
                 folders ({})",
                self.describe_dirs()
            )),
            // Missing: reading it reports the error, and a watcher can wait for it.
            Err(_) => Ok(lexical),
        }
    }

    fn outside(&self, f: &str) -> String {
        format!(
            "`value_from_file` `{f}` is outside the secrets folders ({}); set `secrets.dirs` in \
             the daemon's configuration to allow another folder",
            self.describe_dirs()
        )
    }

    fn describe_dirs(&self) -> String {
        self.dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn canonical_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in &self.dirs {
            // A folder that does not exist (yet) holds nothing readable; its lexical form is
            // kept so the check does not depend on whether it exists.
            out.push(absolute(d));
            if let Ok(c) = d.canonicalize() {
                out.push(c);
            }
        }
        out
    }
}

/// True for the daemon's own configuration variables (compared case-insensitively, as some
/// configuration loaders do).
pub fn is_daemon_var(var: &str) -> bool {
    var.len() >= DAEMON_ENV_PREFIX.len()
        && var[..DAEMON_ENV_PREFIX.len()].eq_ignore_ascii_case(DAEMON_ENV_PREFIX)
}

fn env_matches(pattern: &str, var: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => var.starts_with(prefix),
        None => pattern == var,
    }
}

/// Pseudo-filesystems that expose the process itself (`/proc/self/environ`) or the kernel.
fn forbidden(p: &Path) -> bool {
    p.starts_with("/proc") || p.starts_with("/sys")
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Why a file could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    /// Not a regular file: what it is.
    NotRegular(&'static str),
    /// Larger than the limit (which is given).
    TooLarge(u64),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::NotRegular(what) => write!(f, "it is a {what}, not a regular file"),
            ReadError::TooLarge(max) => write!(f, "it is larger than {} KiB", max / 1024),
        }
    }
}

/// What kind of file `m` describes, for messages.
pub fn file_kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "folder"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else if t.is_symlink() {
        "symbolic link"
    } else {
        "regular file"
    }
}

/// The tests' [`OpenFile`]: what `soarjobd_containment::open_nonblocking` does (the core's
/// tests may use libc, the core may not).
#[cfg(test)]
pub(crate) fn test_open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Reads at most `max` bytes of a regular file with `open` (which must not block). The open never blocks (a FIFO swapped in
/// after a check would otherwise wait for a writer forever), and the type is checked on the
/// opened file, so there is no window between check and read. `Ok(bytes)` may hold `max + 1`
/// bytes; callers that need to locate the limit use [`read_regular_prefix`].
pub fn read_regular(path: &Path, max: u64, open: OpenFile) -> Result<Vec<u8>, ReadError> {
    let bytes = read_regular_prefix(path, max, open)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge(max));
    }
    Ok(bytes)
}

/// Like [`read_regular`], but a file over the limit returns its first `max + 1` bytes.
pub fn read_regular_prefix(path: &Path, max: u64, open: OpenFile) -> Result<Vec<u8>, ReadError> {
    let file = open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(file_kind(&meta)));
    }
    let mut bytes = Vec::with_capacity(meta.len().min(max + 1) as usize);
    (&file as &File)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_rules() {
        let p = SecretsPolicy {
            env_allow: vec!["TICKETS_API_KEY".into(), "MYJOB_*".into()],
            dirs: vec![],
        };
        assert!(p.check_env("TICKETS_API_KEY").is_ok());
        assert!(p.check_env("MYJOB_TOKEN").is_ok());
        assert!(p.check_env("TICKETS_API_KEY2").is_err());
        assert!(p.check_env("HOME").is_err());
        let all = SecretsPolicy {
            env_allow: vec!["*".into()],
            dirs: vec![],
        };
        assert!(all.check_env("HOME").is_ok());
        for v in ["SOARJOBD__SOAR__APP_KEY", "soarjobd__soar__app_key"] {
            let e = all.check_env(v).unwrap_err();
            assert!(e.contains("daemon's own"), "{e}");
        }
    }

    #[test]
    fn files_are_confined() {
        let root = tempfile::tempdir().unwrap();
        let jobs = root.path().join("jobs");
        let other = root.path().join("other");
        std::fs::create_dir_all(jobs.join("sub")).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(jobs.join("sub/key"), "k").unwrap();
        std::fs::write(other.join("outside"), "o").unwrap();
        std::os::unix::fs::symlink(other.join("outside"), jobs.join("escape")).unwrap();
        std::os::unix::fs::symlink(jobs.join("sub/key"), jobs.join("inner-link")).unwrap();
        let p = SecretsPolicy::default_for(&jobs);
        let real_jobs = jobs.canonicalize().unwrap();
        assert_eq!(
            p.resolve_file(&jobs, "sub/key").unwrap(),
            real_jobs.join("sub/key")
        );
        assert_eq!(
            p.resolve_file(&jobs, "inner-link").unwrap(),
            real_jobs.join("sub/key")
        );
        assert!(
            p.resolve_file(&jobs, "escape")
                .unwrap_err()
                .contains("symbolic link")
        );
        assert!(
            p.resolve_file(&jobs, "../other/outside")
                .unwrap_err()
                .contains("`..`")
        );
        assert!(
            p.resolve_file(&jobs, "/proc/self/environ")
                .unwrap_err()
                .contains("outside")
        );
        assert!(
            p.resolve_file(&jobs, "/etc/passwd")
                .unwrap_err()
                .contains("outside")
        );
        assert_eq!(
            p.resolve_file(&jobs, "/run/secrets/db").unwrap(),
            PathBuf::from("/run/secrets/db")
        );
        // /proc is refused even when configured.
        let root_policy = SecretsPolicy {
            env_allow: vec![],
            dirs: vec![PathBuf::from("/")],
        };
        assert!(
            root_policy
                .resolve_file(&jobs, "/proc/self/environ")
                .is_err()
        );
        assert!(root_policy.resolve_file(&jobs, "/etc/hostname").is_ok());
    }

    #[test]
    fn reads_are_bounded_and_never_block() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_regular(&fifo, 10, test_open),
            Err(ReadError::NotRegular("FIFO"))
        ));
        assert!(matches!(
            read_regular(dir.path(), 10, test_open),
            Err(ReadError::NotRegular("folder")) | Err(ReadError::Io(_))
        ));
        std::fs::write(dir.path().join("big"), vec![b'x'; 11]).unwrap();
        assert!(matches!(
            read_regular(&dir.path().join("big"), 10, test_open),
            Err(ReadError::TooLarge(10))
        ));
        assert_eq!(
            read_regular(&dir.path().join("big"), 11, test_open)
                .unwrap()
                .len(),
            11
        );
    }
}
