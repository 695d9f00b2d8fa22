// SPDX-License-Identifier: GPL-2.0
//! eventfd: what VFIO signals interrupts through.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::error::{last_errno, Error, Result};

/// A non-blocking eventfd, closed on drop.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates an eventfd with counter 0.
    pub fn new() -> Result<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative return is a new fd
        // that we own from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::last_sys("eventfd()"));
        }
        // SAFETY: fd is a freshly created descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// The fd, to pass to `VFIO_DEVICE_SET_IRQS`.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads and clears the counter without blocking: `None` if it is 0.
    pub fn try_read(&self) -> Result<Option<u64>> {
        let mut v = 0u64;
        // SAFETY: we pass a valid pointer to 8 writable bytes and their length.
        let n = unsafe { libc::read(self.fd(), (&mut v as *mut u64).cast(), 8) };
        if n == 8 {
            return Ok(Some(v));
        }
        let errno = last_errno();
        if n < 0 && errno == libc::EAGAIN {
            return Ok(None);
        }
        Err(Error::Sys {
            what: format!("read of eventfd {}", self.fd()),
            errno: if n < 0 { errno } else { libc::EIO },
        })
    }

    /// Waits up to `timeout` for the counter to become non-zero, then reads
    /// and clears it. `None` on timeout.
    pub fn wait(&self, timeout: Duration) -> Result<Option<u64>> {
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        loop {
            // SAFETY: one valid pollfd, count 1.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                if last_errno() == libc::EINTR {
                    continue;
                }
                return Err(Error::last_sys(format!("poll on eventfd {}", self.fd())));
            }
            if r == 0 {
                return Ok(None);
            }
            return self.try_read();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_times_out_then_reads_the_counter() {
        let e = EventFd::new().unwrap();
        assert_eq!(e.try_read().unwrap(), None);
        assert_eq!(e.wait(Duration::from_millis(10)).unwrap(), None);
        let v = 3u64;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        let n = unsafe { libc::write(e.fd(), (&v as *const u64).cast(), 8) };
        assert_eq!(n, 8);
        assert_eq!(e.wait(Duration::from_secs(1)).unwrap(), Some(3));
        assert_eq!(e.try_read().unwrap(), None);
    }
}
