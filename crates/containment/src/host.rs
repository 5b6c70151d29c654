//! What the core leaves to the OS (it depends on no libc): the user database and the
//! effective uid, for the `exec:` policy and a job's `run_as`; and a file open that does not
//! block, for the job and secret files the core's loader reads.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use soarjobd_core::{ExecPolicy, ExecSettings, RunAs};

/// Looks `name` up (a user name, or a numeric uid) in the user database.
pub fn lookup_user(name: &str) -> Result<RunAs, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("the user name is empty".into());
    }
    let c = CString::new(name).map_err(|_| format!("`{name}` is not a user name"))?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16 * 1024];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r/getpwuid_r write into `pwd` and `buf`, both ours and large
    // enough (ERANGE otherwise, reported below); `out` points to `pwd` or is null.
    let rc = unsafe {
        match name.parse::<u32>() {
            Ok(uid) => {
                libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut out)
            }
            Err(_) => libc::getpwnam_r(
                c.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut out,
            ),
        }
    };
    if rc != 0 {
        return Err(format!(
            "cannot look up user `{name}`: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    if out.is_null() {
        return Err(format!("no user `{name}` on this host"));
    }
    // SAFETY: on success the strings point into `buf`, NUL-terminated.
    let (user, home) = unsafe {
        (
            CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
            CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned(),
        )
    };
    Ok(RunAs {
        name: user,
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        home,
    })
}

/// Whether this process can start processes as `user`: it is root, or it is that user
/// already (then nothing changes).
pub fn check_can_switch(user: &RunAs) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 || euid == user.uid {
        Ok(())
    } else {
        Err(format!(
            "running job processes as `{}` needs the daemon to run as root (it runs as \
             uid {euid}); start it as root, or remove the setting",
            user.name
        ))
    }
}

/// Whether starting a process as `user` changes anything.
pub(crate) fn is_switch(user: &RunAs) -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() != user.uid }
}

/// The process policy of `settings`: looks `exec.user` up (an unknown user is an error).
/// Whether the daemon may switch to it is [`check_exec_user`], at start.
pub fn exec_policy(settings: &ExecSettings) -> Result<ExecPolicy, String> {
    let user = match &settings.user {
        Some(u) => Some(lookup_user(u).map_err(|e| format!("`exec.user`: {e}"))?),
        None => None,
    };
    Ok(ExecPolicy::new(user, settings.max_concurrent))
}

/// Fails when `exec.user` is set and this process cannot switch to it.
pub fn check_exec_user(policy: &ExecPolicy) -> Result<(), String> {
    match policy.user() {
        Some(u) => check_can_switch(u).map_err(|e| format!("`exec.user`: {e}")),
        None => Ok(()),
    }
}

/// Opens `path` for reading with `O_NONBLOCK`: a FIFO put where a job or secret file is
/// expected does not make the open wait for a writer (the loader then refuses it, being no
/// regular file). The core's loader opens files only through this
/// ([`soarjobd_core::definition::OpenFile`]).
pub fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up_by_name_and_uid() {
        let root = lookup_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(lookup_user("0").unwrap().name, "root");
        assert!(
            lookup_user("no-such-user-soarjobd")
                .unwrap_err()
                .contains("no user")
        );
    }

    #[test]
    fn a_fifo_opens_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer ever opens it: a blocking open would never return.
        use std::os::unix::fs::FileTypeExt;
        let f = open_nonblocking(&fifo).unwrap();
        assert!(f.metadata().unwrap().file_type().is_fifo());
        // And the core's loader, handed this open, refuses it as no regular file.
        let read = soarjobd_core::definition::secrets::read_regular(&fifo, 10, open_nonblocking);
        assert!(read.unwrap_err().to_string().contains("FIFO"));
    }
}
