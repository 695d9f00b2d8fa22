// SPDX-License-Identifier: GPL-2.0
//! mdev sysfs: parents, types, create and remove.
//!
//! The layout (Linux 6.12 mdev core) is:
//!
//! ```text
//! /sys/class/mdev_bus/<parent>/mdev_supported_types/<type>/
//!     name description device_api available_instances create devices/
//! /sys/bus/mdev/devices/<uuid>/
//!     remove iommu_group -> ../../kernel/iommu_groups/<N>  vfio-dev/vfio<M>/
//! ```
//!
//! The parent name is a parameter, so the same helpers drive the C sample
//! `mtty` (parent `mtty`, types `mtty-1`, `mtty-2`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where mdev parents are listed.
pub const MDEV_BUS_CLASS: &str = "/sys/class/mdev_bus";
/// Where mdevs are listed, by UUID.
pub const MDEV_DEVICES: &str = "/sys/bus/mdev/devices";
/// The parent registered by `vfio_mig_sample.ko`.
pub const DEFAULT_PARENT: &str = "vfio_mig_sample";

/// Reads a sysfs attribute and strips the trailing newline.
pub fn read_attr(path: &Path) -> Result<String> {
    let s = fs::read_to_string(path).map_err(|e| Error::path("read", path, e))?;
    Ok(s.strip_suffix('\n').unwrap_or(&s).to_string())
}

/// Writes `value` to a sysfs attribute in one `write()`.
pub fn write_attr(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| Error::path("write to", path, e))
}

/// An mdev parent device, e.g. `/sys/class/mdev_bus/vfio_mig_sample`.
#[derive(Debug, Clone)]
pub struct Parent {
    name: String,
    dir: PathBuf,
}

impl Parent {
    /// The parent called `name`; does not check that it exists.
    pub fn new(name: &str) -> Self {
        Parent {
            name: name.to_string(),
            dir: Path::new(MDEV_BUS_CLASS).join(name),
        }
    }

    /// The parent called `name`, failing if the module is not loaded.
    pub fn open(name: &str) -> Result<Self> {
        let p = Parent::new(name);
        fs::metadata(&p.dir).map_err(|e| Error::path("stat", &p.dir, e))?;
        Ok(p)
    }

    /// The parent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/sys/class/mdev_bus/<name>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The names of the parent's types (`vfio_mig_sample-small`, ...), sorted.
    pub fn types(&self) -> Result<Vec<String>> {
        sorted_entries(&self.dir.join("mdev_supported_types"))
    }

    /// The type called `type_name` (a full name such as `mtty-2`, or the
    /// suffix after `<parent>-`, such as `2` or `small`).
    pub fn mdev_type(&self, type_name: &str) -> MdevType {
        let full = if type_name.starts_with(&format!("{}-", self.name)) {
            type_name.to_string()
        } else {
            format!("{}-{}", self.name, type_name)
        };
        MdevType {
            dir: self.dir.join("mdev_supported_types").join(&full),
            name: full,
        }
    }
}

/// The attributes of one type directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TypeAttrs {
    /// `name`.
    pub name: String,
    /// `description` (`None` when the driver has no such attribute, as mtty).
    pub description: Option<String>,
    /// `device_api`.
    pub device_api: String,
    /// `available_instances`.
    pub available_instances: u32,
}

/// One mdev type of a parent.
#[derive(Debug, Clone)]
pub struct MdevType {
    name: String,
    dir: PathBuf,
}

impl MdevType {
    /// The type's full name, e.g. `vfio_mig_sample-small`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its sysfs directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the attribute file `attr` of the type.
    pub fn attr(&self, attr: &str) -> Result<String> {
        read_attr(&self.dir.join(attr))
    }

    /// Reads the attribute file `attr`, `None` if it does not exist.
    pub fn optional_attr(&self, attr: &str) -> Result<Option<String>> {
        match self.attr(attr) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `available_instances`, parsed.
    pub fn available_instances(&self) -> Result<u32> {
        let s = self.attr("available_instances")?;
        s.trim().parse().map_err(|_| {
            Error::Invalid(format!(
                "{}/available_instances is not a number: {s:?}",
                self.dir.display()
            ))
        })
    }

    /// All four readable attributes.
    pub fn attrs(&self) -> Result<TypeAttrs> {
        Ok(TypeAttrs {
            name: self.attr("name")?,
            description: self.optional_attr("description")?,
            device_api: self.attr("device_api")?,
            available_instances: self.available_instances()?,
        })
    }

    /// Creates an mdev with `uuid` by writing it to `create`.
    pub fn create(&self, uuid: &str) -> Result<()> {
        write_attr(&self.dir.join("create"), uuid)
    }

    /// Creates an mdev with a fresh random UUID and returns a guard that
    /// removes it when dropped.
    pub fn create_guarded(&self) -> Result<Mdev> {
        let uuid = random_uuid()?;
        self.create(&uuid)?;
        Ok(Mdev { uuid })
    }

    /// UUIDs of the mdevs of this type (entries of `devices/`), sorted.
    pub fn devices(&self) -> Result<Vec<String>> {
        sorted_entries(&self.dir.join("devices"))
    }
}

/// `/sys/bus/mdev/devices/<uuid>`.
pub fn mdev_dir(uuid: &str) -> PathBuf {
    Path::new(MDEV_DEVICES).join(uuid)
}

/// Whether an mdev with `uuid` exists.
pub fn mdev_exists(uuid: &str) -> bool {
    mdev_dir(uuid).exists()
}

/// Removes the mdev `uuid` (writes 1 to its `remove`). The kernel waits
/// until its VFIO device fd is closed.
pub fn remove_mdev(uuid: &str) -> Result<()> {
    write_attr(&mdev_dir(uuid).join("remove"), "1")
}

/// The name of the type an mdev was created from (basename of `mdev_type`).
pub fn mdev_type_name(uuid: &str) -> Result<String> {
    link_basename(&mdev_dir(uuid).join("mdev_type"))
}

/// The IOMMU group number of an mdev (basename of its `iommu_group` link).
pub fn iommu_group(uuid: &str) -> Result<u32> {
    let link = mdev_dir(uuid).join("iommu_group");
    let name = link_basename(&link)?;
    name.parse().map_err(|_| {
        Error::Invalid(format!(
            "{} points to {name:?}, not a group number",
            link.display()
        ))
    })
}

/// The name of the mdev's VFIO cdev (`vfio0`): the one entry of `vfio-dev/`.
pub fn vfio_cdev_name(uuid: &str) -> Result<String> {
    let dir = mdev_dir(uuid).join("vfio-dev");
    let mut names = Vec::new();
    for e in fs::read_dir(&dir).map_err(|e| Error::path("list", &dir, e))? {
        let e = e.map_err(|e| Error::path("list", &dir, e))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Error::Invalid(format!(
            "{} should hold exactly one cdev, holds {names:?}",
            dir.display()
        ))),
    }
}

fn link_basename(link: &Path) -> Result<String> {
    let target = fs::read_link(link).map_err(|e| Error::path("readlink", link, e))?;
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Invalid(format!("{} points to {}", link.display(), target.display())))
}

/// A random UUID from `/proc/sys/kernel/random/uuid`.
pub fn random_uuid() -> Result<String> {
    read_attr(Path::new("/proc/sys/kernel/random/uuid"))
}

/// An mdev that is removed when this guard is dropped (errors ignored; the
/// removal waits for open device fds, so drop devices first).
#[derive(Debug)]
pub struct Mdev {
    uuid: String,
}

impl Mdev {
    /// Creates an mdev of `ty` with `uuid` and guards it.
    pub fn create(ty: &MdevType, uuid: &str) -> Result<Self> {
        ty.create(uuid)?;
        Ok(Mdev {
            uuid: uuid.to_string(),
        })
    }

    /// Guards an existing mdev.
    pub fn adopt(uuid: &str) -> Self {
        Mdev {
            uuid: uuid.to_string(),
        }
    }

    /// The mdev's UUID.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// Removes the mdev now and reports the result.
    pub fn remove(self) -> Result<()> {
        let uuid = std::mem::take(&mut std::mem::ManuallyDrop::new(self).uuid);
        remove_mdev(&uuid)
    }

    /// Gives up the guard: the mdev stays.
    pub fn into_uuid(self) -> String {
        std::mem::take(&mut std::mem::ManuallyDrop::new(self).uuid)
    }
}

impl Drop for Mdev {
    fn drop(&mut self) {
        if mdev_exists(&self.uuid) {
            let _ = remove_mdev(&self.uuid);
        }
    }
}

/// The names of the entries of `dir`, sorted.
fn sorted_entries(dir: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::path("list", dir, e))? {
        let e = e.map_err(|e| Error::path("list", dir, e))?;
        v.push(e.file_name().to_string_lossy().into_owned());
    }
    v.sort();
    Ok(v)
}
