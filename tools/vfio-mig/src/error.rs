// SPDX-License-Identifier: GPL-2.0
//! The one error type of the library: every variant says in words what
//! failed, and [`Error::errno`] gives the raw errno to tests that assert it.

use std::io;
use std::path::PathBuf;

/// What went wrong, with enough context to be read without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation (open, read, write, readlink, ...) on a path failed.
    #[error("{op} {} failed: {}", path.display(), io_error_string(source))]
    Path {
        /// What we were doing, e.g. "write UUID to".
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error the kernel returned.
        source: io::Error,
    },
    /// An ioctl returned -1.
    #[error("{name}{} failed: {}", parenthesized(what), errno_string(*errno))]
    Ioctl {
        /// The ioctl's uapi name, e.g. `VFIO_DEVICE_GET_REGION_INFO`.
        name: &'static str,
        /// Extra context (index, fd, ...), may be empty.
        what: String,
        /// errno.
        errno: i32,
    },
    /// pread/pwrite on a device region failed.
    #[error(
        "{op} of {len} bytes at region {index} offset {offset:#x} {}",
        region_outcome(*errno, *done)
    )]
    Region {
        /// "read" or "write".
        op: &'static str,
        /// Region index.
        index: u32,
        /// Offset inside the region.
        offset: u64,
        /// Length of the access.
        len: usize,
        /// errno, or 0 for a short transfer (see `done`).
        errno: i32,
        /// Bytes transferred when the access was short (errno 0).
        done: usize,
    },
    /// Another system call failed (eventfd, poll, memfd, mmap, ...).
    #[error("{what} failed: {}", errno_string(*errno))]
    Sys {
        /// The call and what it was for.
        what: String,
        /// errno.
        errno: i32,
    },
    /// An action or field access of the migration region failed.
    #[error("{what} failed: {}", errno_string(*errno))]
    Migration {
        /// The action, the field with its offset, and the device state,
        /// e.g. "get buffer (read of data.size at migration region 9 offset
        /// 0x2c) in state RUNNING".
        what: String,
        /// errno.
        errno: i32,
    },
    /// Reading or writing a stream (file, pipe, memory) failed.
    #[error("{what} failed: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The kernel answered, but with something we cannot use.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias of the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The errno behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Path { source, .. } => source.raw_os_error(),
            Error::Ioctl { errno, .. }
            | Error::Sys { errno, .. }
            | Error::Migration { errno, .. } => Some(*errno),
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Region { errno, .. } if *errno != 0 => Some(*errno),
            _ => None,
        }
    }

    /// A file operation `op` on `path` failed with `source`.
    pub fn path(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Path {
            op,
            path: path.into(),
            source,
        }
    }

    /// An `Error::Sys` from the current `errno`.
    pub(crate) fn last_sys(what: impl Into<String>) -> Self {
        Error::Sys {
            what: what.into(),
            errno: last_errno(),
        }
    }
}

/// The calling thread's errno.
pub(crate) fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The symbolic name of an errno value ("EINVAL"), or "E?" if unknown.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::ERANGE => "ERANGE",
        libc::EDEADLK => "EDEADLK",
        libc::ENOSYS => "ENOSYS",
        libc::ENOMSG => "ENOMSG",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EUSERS => "EUSERS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECANCELED => "ECANCELED",
        _ => "E?",
    }
}

/// "EINVAL (Invalid argument)".
pub fn errno_string(errno: i32) -> String {
    format!(
        "{} ({})",
        errno_name(errno),
        io::Error::from_raw_os_error(errno)
            .to_string()
            .split(" (os error")
            .next()
            .unwrap_or("")
    )
}

/// " (what)", or nothing for an empty `what`.
fn parenthesized(what: &str) -> String {
    if what.is_empty() {
        String::new()
    } else {
        format!(" ({what})")
    }
}

/// An io::Error with its errno spelled out, when it has one.
fn io_error_string(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => errno_string(errno),
        None => e.to_string(),
    }
}

/// How a region access ended: failed with an errno, or short.
fn region_outcome(errno: i32, done: usize) -> String {
    if errno != 0 {
        format!("failed: {}", errno_string(errno))
    } else {
        format!("was short: {done} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_call_and_errno() {
        let e = Error::Ioctl {
            name: "VFIO_DEVICE_GET_REGION_INFO",
            what: "index 10, argsz 32".into(),
            errno: libc::EINVAL,
        };
        assert_eq!(e.errno(), Some(libc::EINVAL));
        let s = e.to_string();
        assert!(s.starts_with("VFIO_DEVICE_GET_REGION_INFO (index 10, argsz 32) failed: EINVAL ("));
        let r = Error::Region {
            op: "read",
            index: 2,
            offset: 0x40000,
            len: 1,
            errno: libc::EINVAL,
            done: 0,
        };
        assert_eq!(
            r.to_string(),
            "read of 1 bytes at region 2 offset 0x40000 failed: EINVAL (Invalid argument)"
        );
        let short = Error::Region {
            op: "write",
            index: 0,
            offset: 8,
            len: 4,
            errno: 0,
            done: 2,
        };
        assert_eq!(short.errno(), None);
        assert!(short.to_string().ends_with("was short: 2 bytes"));
    }

    #[test]
    fn path_errors_spell_out_the_errno() {
        let e = Error::path("open", "/x", io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.errno(), Some(libc::ENOENT));
        assert_eq!(
            e.to_string(),
            "open /x failed: ENOENT (No such file or directory)"
        );
        assert!(std::error::Error::source(&e).is_some());
        let other = Error::path("read", "/y", io::Error::other("not UTF-8"));
        assert_eq!(other.to_string(), "read /y failed: not UTF-8");
        assert_eq!(other.errno(), None);
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::ENOTTY), "ENOTTY");
        assert_eq!(errno_name(libc::EWOULDBLOCK), "EAGAIN");
        assert_eq!(errno_name(100_000), "E?");
    }
}
