// SPDX-License-Identifier: GPL-2.0
//! QEMU processes without a guest OS: a q35 machine under TCG whose
//! firmware only halts, a qtest socket through which the test plays the
//! guest, a QMP socket, and the mdev as a `vfio-pci` device.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::qmp::Qmp;
use crate::qtest::Qtest;

/// Guest RAM.
pub const RAM_MIB: u64 = 64;
/// How long QEMU may take to open its sockets (TCG inside a TCG guest).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long QEMU may take to exit after `quit`.
const QUIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one answer on a socket: QEMU is hung past this.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(300);
/// The QEMU trace event that says device DMA logging started.
pub const DEVICE_LOGGING_TRACE: &str = "vfio_device_dirty_tracking_start";

/// A directory on tmpfs for the sockets, the firmware and QEMU's logs
/// (unix sockets do not work on the test guest's 9p-shared /tmp).
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub fn new() -> Result<Self> {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!("/dev/shm/vfio-mig-qemu-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let dir = RunDir { path };
        fs::write(dir.firmware(), halt_firmware()).context("writing the firmware")?;
        Ok(dir)
    }

    pub fn firmware(&self) -> PathBuf {
        self.path.join("halt.bin")
    }

    /// The migration stream's socket.
    pub fn migration_uri(&self) -> String {
        format!("unix:{}", self.path.join("migration.sock").display())
    }

    fn file(&self, name: &str, ext: &str) -> PathBuf {
        self.path.join(format!("{name}.{ext}"))
    }

    /// QEMU's stderr and its log (traces) for the VM called `name`.
    pub fn logs(&self, name: &str) -> String {
        ["err", "log"]
            .iter()
            .filter_map(|ext| fs::read_to_string(self.file(name, ext)).ok())
            .collect()
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A 64 KiB BIOS image whose reset vector (0xfffffff0) is `cli; hlt; jmp
/// back to hlt`: the vCPU stops at once and never touches the device.
fn halt_firmware() -> Vec<u8> {
    let mut image = vec![0u8; 64 << 10];
    image[0xfff0..0xfff4].copy_from_slice(&[0xfa, 0xf4, 0xeb, 0xfd]);
    image
}

/// Which dirty tracking QEMU uses for the device's DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tracking {
    /// Legacy VFIO container; device DMA logging (QEMU's preference).
    DeviceLog,
    /// Legacy VFIO container with `x-device-dirty-page-tracking=off`:
    /// type1's own log of pinned pages and `vfio_dma_rw` writes.
    Container,
    /// iommufd (`-object iommufd`), device DMA logging.
    Iommufd,
}

impl Tracking {
    pub fn label(self) -> &'static str {
        match self {
            Tracking::DeviceLog => "container+dmalog",
            Tracking::Container => "container",
            Tracking::Iommufd => "iommufd+dmalog",
        }
    }

    pub fn device_logging(self) -> bool {
        self != Tracking::Container
    }
}

/// The VM's mdev and how QEMU attaches it.
pub struct Passthrough {
    pub uuid: String,
    pub tracking: Tracking,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    /// Waits for `migrate-incoming`, and stays paused after it (`-S`) so
    /// the test can look at its RAM before the device runs.
    Destination,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Source => "src",
            Role::Destination => "dst",
        }
    }
}

/// QEMU's command line (after the binary) for a VM of `role`.
pub fn args(dir: &RunDir, role: Role, device: Option<&Passthrough>) -> Vec<String> {
    let name = role.name();
    let sock = |ext| format!("unix:{},server=on,wait=off", dir.file(name, ext).display());
    let mut a: Vec<String> = vec![
        "-name".into(),
        name.into(),
        "-machine".into(),
        "q35".into(),
        "-accel".into(),
        "tcg".into(),
        "-bios".into(),
        dir.firmware().display().to_string(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-m".into(),
        format!("{RAM_MIB}M"),
        "-qtest".into(),
        sock("qtest"),
        "-qtest-log".into(),
        "/dev/null".into(),
        "-qmp".into(),
        sock("qmp"),
        "-D".into(),
        dir.file(name, "log").display().to_string(),
        "-trace".into(),
        DEVICE_LOGGING_TRACE.into(),
    ];
    if let Some(p) = device {
        let mut dev = format!(
            "vfio-pci,id=dut,bus=pcie.0,addr={:#x},sysfsdev=/sys/bus/mdev/devices/{},\
             enable-migration=on,migration-events=on",
            crate::pci::SLOT,
            p.uuid
        );
        match p.tracking {
            Tracking::DeviceLog => {}
            Tracking::Container => dev.push_str(",x-device-dirty-page-tracking=off"),
            Tracking::Iommufd => {
                a.extend(["-object".into(), "iommufd,id=iofd".into()]);
                dev.push_str(",iommufd=iofd");
            }
        }
        a.extend(["-device".into(), dev]);
    }
    if role == Role::Destination {
        a.extend(["-incoming".into(), "defer".into(), "-S".into()]);
    }
    a
}

/// A QEMU process, killed when dropped if it still runs.
pub struct Process {
    role: Role,
    child: Child,
}

impl Process {
    /// Starts QEMU; [`Process::connect`] waits for its sockets. Two VMs
    /// start in parallel this way (each takes seconds under TCG).
    pub fn spawn(
        qemu: &Path,
        dir: &RunDir,
        role: Role,
        device: Option<&Passthrough>,
    ) -> Result<Self> {
        let stderr = fs::File::create(dir.file(role.name(), "err"))?;
        let child = Command::new(qemu)
            .args(args(dir, role, device))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", qemu.display()))?;
        Ok(Process { role, child })
    }

    /// Connects the qtest and QMP sockets.
    pub fn connect(mut self, dir: &RunDir) -> Result<Vm> {
        let name = self.role.name();
        let connected = (|| -> Result<(Qtest, Qmp)> {
            let qtest = Qtest::new(connect(&mut self.child, &dir.file(name, "qtest"))?)?;
            let qmp = Qmp::new(connect(&mut self.child, &dir.file(name, "qmp"))?)?;
            Ok((qtest, qmp))
        })();
        match connected {
            Ok((qtest, qmp)) => Ok(Vm {
                role: self.role,
                process: self,
                qtest,
                qmp,
            }),
            Err(e) => {
                drop(self);
                Err(e.context(format!("{name} QEMU: {}", last_line(&dir.logs(name)))))
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running QEMU with its two sockets connected.
pub struct Vm {
    pub role: Role,
    process: Process,
    pub qtest: Qtest,
    pub qmp: Qmp,
}

impl Vm {
    /// The exit status, if QEMU has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.process.child.try_wait()?)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) -> Result<()> {
        self.process.child.kill()?;
        self.process.child.wait()?;
        Ok(())
    }

    /// `quit` and wait for the process to end.
    pub fn quit(mut self) -> Result<()> {
        if self.exited()?.is_some() {
            return Ok(());
        }
        // QEMU may close the socket before it answers.
        let _ = self.qmp.execute("quit", Value::Null);
        let deadline = Instant::now() + QUIT_TIMEOUT;
        while self.exited()?.is_none() {
            if Instant::now() > deadline {
                self.kill()?;
                bail!(
                    "{} QEMU did not quit within {QUIT_TIMEOUT:?}",
                    self.role.name()
                );
            }
            sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// Connects to a socket QEMU is about to open; fails if QEMU exits first.
fn connect(child: &mut Child, path: &Path) -> Result<UnixStream> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("QEMU exited ({status}) before opening {}", path.display());
        }
        if let Ok(s) = UnixStream::connect(path) {
            s.set_read_timeout(Some(SOCKET_TIMEOUT))?;
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!(
                "QEMU did not open {} within {START_TIMEOUT:?}",
                path.display()
            );
        }
        sleep(Duration::from_millis(50));
    }
}

/// The last non-empty line of a log, for an error message.
pub fn last_line(log: &str) -> &str {
    log.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_halts_at_the_reset_vector() {
        let f = halt_firmware();
        assert_eq!(f.len(), 65536);
        assert_eq!(&f[0xfff0..0xfff4], &[0xfa, 0xf4, 0xeb, 0xfd]);
    }

    #[test]
    fn command_lines() {
        let dir = RunDir::new().unwrap();
        let p = Passthrough {
            uuid: "u".into(),
            tracking: Tracking::Iommufd,
        };
        let a = args(&dir, Role::Destination, Some(&p)).join(" ");
        assert!(a.contains(" -object iommufd,id=iofd -device vfio-pci,id=dut,bus=pcie.0,addr=0x4,"));
        assert!(a.contains(
            "sysfsdev=/sys/bus/mdev/devices/u,enable-migration=on,migration-events=on,iommufd=iofd"
        ));
        assert!(a.ends_with(" -incoming defer -S"));
        let p = Passthrough {
            uuid: "u".into(),
            tracking: Tracking::Container,
        };
        let a = args(&dir, Role::Source, Some(&p)).join(" ");
        assert!(a.contains("migration-events=on,x-device-dirty-page-tracking=off"));
        assert!(!a.contains("incoming") && !a.contains("iommufd"));
    }
}
