// SPDX-License-Identifier: GPL-2.0

//! The device ioctls of the sample device: what `VFIO_DEVICE_GET_INFO`,
//! `GET_REGION_INFO`, `GET_IRQ_INFO` and `SET_IRQS` read from userspace and
//! answer. Documented for users in `Documentation/device.rst`.

use super::errors::refused;
use super::SampleDevice;
use crate::dyndbg::dyn_debug;
use crate::eventfd::EventFd;
use crate::logic::abi;
use crate::logic::migration_region as layout;
use crate::logic::regions::Region;
use crate::vfio::uapi;
use kernel::prelude::*;
use kernel::uaccess::UserSlice;

impl SampleDevice {
    /// A device ioctl the VFIO core passes on (`cmd` with argument `arg`).
    pub(super) fn device_ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            uapi::DEVICE_GET_INFO => self.get_info(arg),
            uapi::DEVICE_GET_REGION_INFO => self.get_region_info(arg),
            uapi::DEVICE_GET_IRQ_INFO => self.get_irq_info(arg),
            uapi::DEVICE_SET_IRQS => self.set_irqs(arg),
            uapi::DEVICE_RESET => {
                self.reset();
                Ok(0)
            }
            _ => {
                dyn_debug!(
                    "ioctl {:#x} refused: not a device ioctl of this driver",
                    cmd
                );
                Err(ENOTTY)
            }
        }
    }

    fn get_info(&self, arg: usize) -> Result<isize> {
        // argsz, flags, num_regions, num_irqs: the `minsz` of vfio-pci.
        let (mut reader, mut writer) = UserSlice::new(arg, 16).reader_writer();
        let [argsz, ..] = reader.read::<[u32; 4]>()?;
        if argsz < 16 {
            return Err(refused("GET_INFO", "argsz below 16"));
        }
        let flags = uapi::VFIO_DEVICE_FLAGS_PCI | uapi::VFIO_DEVICE_FLAGS_RESET;
        writer.write(&[argsz, flags, abi::region::COUNT, uapi::NUM_IRQS])?;
        Ok(0)
    }

    fn get_region_info(&self, arg: usize) -> Result<isize> {
        let size_of_info = core::mem::size_of::<uapi::vfio_region_info>();
        let (mut reader, mut writer) = UserSlice::new(arg, size_of_info).reader_writer();
        let mut info = reader.read::<uapi::vfio_region_info>()?;
        if (info.argsz as usize) < size_of_info {
            return Err(refused("GET_REGION_INFO", "argsz below the structure"));
        }
        if info.index >= abi::region::COUNT {
            return Err(refused("GET_REGION_INFO", "no such region index"));
        }
        let region = Region::from_index(info.index);
        let size = region.map_or(0, |r| self.region_size(r));
        info.flags = if size > 0 {
            uapi::VFIO_REGION_INFO_FLAG_READ | uapi::VFIO_REGION_INFO_FLAG_WRITE
        } else {
            0
        };
        info.cap_offset = 0;
        info.size = size;
        info.offset = abi::region::offset(info.index);
        if region != Some(Region::Migration) {
            writer.write(&info)?;
            return Ok(0);
        }

        // The migration region carries its type and its mmap-able areas in
        // a capability chain, built the vfio-pci way: too small an argsz
        // gets the size needed, the CAPS flag and no chain.
        let caps = migration_caps(size_of_info as u32);
        let needed = (size_of_info + caps.len()) as u32;
        info.flags |= uapi::VFIO_REGION_INFO_FLAG_CAPS | uapi::VFIO_REGION_INFO_FLAG_MMAP;
        if info.argsz < needed {
            info.argsz = needed;
            writer.write(&info)?;
        } else {
            info.cap_offset = size_of_info as u32;
            let mut writer = UserSlice::new(arg, needed as usize).writer();
            writer.write(&info)?;
            writer.write_slice(&caps)?;
        }
        Ok(0)
    }

    fn get_irq_info(&self, arg: usize) -> Result<isize> {
        let size = core::mem::size_of::<uapi::vfio_irq_info>();
        let (mut reader, mut writer) = UserSlice::new(arg, size).reader_writer();
        let mut info = reader.read::<uapi::vfio_irq_info>()?;
        if (info.argsz as usize) < size {
            return Err(refused("GET_IRQ_INFO", "argsz below the structure"));
        }
        if info.index >= uapi::NUM_IRQS {
            return Err(refused("GET_IRQ_INFO", "no such IRQ index"));
        }
        (info.flags, info.count) = match info.index {
            uapi::INTX_IRQ_INDEX => (
                uapi::VFIO_IRQ_INFO_EVENTFD
                    | uapi::VFIO_IRQ_INFO_MASKABLE
                    | uapi::VFIO_IRQ_INFO_AUTOMASKED,
                1,
            ),
            uapi::MSI_IRQ_INDEX => (
                uapi::VFIO_IRQ_INFO_EVENTFD | uapi::VFIO_IRQ_INFO_NORESIZE,
                1,
            ),
            _ => (0, 0),
        };
        writer.write(&info)?;
        Ok(0)
    }

    fn set_irqs(&self, arg: usize) -> Result<isize> {
        // The header and at most one 4-byte datum (every index has <= 1 IRQ).
        let mut data = [0u8; 4];
        let hdr_size = core::mem::size_of::<uapi::vfio_irq_set>();
        let mut reader = UserSlice::new(arg, hdr_size + data.len()).reader();
        let mut hdr = reader.read::<uapi::vfio_irq_set>()?;
        let num_irqs = match hdr.index {
            uapi::INTX_IRQ_INDEX | uapi::MSI_IRQ_INDEX => 1,
            _ => 0,
        };
        let data_size = uapi::validate_irq_set(&mut hdr, num_irqs)
            .map_err(|_| refused("SET_IRQS", "header fails the VFIO core's checks"))?;
        let data = data
            .get_mut(..data_size)
            .ok_or_else(|| refused("SET_IRQS", "more data than one interrupt takes"))?;
        reader.read_slice(data)?;

        let action = hdr.flags & uapi::VFIO_IRQ_SET_ACTION_TYPE_MASK;
        let data_type = hdr.flags & uapi::VFIO_IRQ_SET_DATA_TYPE_MASK;
        // With DATA_BOOL the single flag decides; DATA_NONE means "do it".
        let asserted = data_type != uapi::VFIO_IRQ_SET_DATA_BOOL || data.first() == Some(&1);

        match (hdr.index, action) {
            (uapi::INTX_IRQ_INDEX, uapi::VFIO_IRQ_SET_ACTION_MASK)
            | (uapi::INTX_IRQ_INDEX, uapi::VFIO_IRQ_SET_ACTION_UNMASK) => {
                if hdr.count != 1 || data_type == uapi::VFIO_IRQ_SET_DATA_EVENTFD {
                    return Err(refused(
                        "SET_IRQS",
                        "INTx mask/unmask takes one BOOL or NONE",
                    ));
                }
                if asserted {
                    let mut state = self.lock();
                    state.intx_masked = action == uapi::VFIO_IRQ_SET_ACTION_MASK;
                    state.intx_level();
                }
            }
            (uapi::MSI_IRQ_INDEX, uapi::VFIO_IRQ_SET_ACTION_MASK)
            | (uapi::MSI_IRQ_INDEX, uapi::VFIO_IRQ_SET_ACTION_UNMASK) => {
                dyn_debug!("SET_IRQS refused: MSI is not maskable");
                return Err(ENOTTY);
            }
            (index, uapi::VFIO_IRQ_SET_ACTION_TRIGGER) => {
                self.set_trigger(index, hdr.count, data_type, data, asserted)?
            }
            _ => return Err(refused("SET_IRQS", "no such action for this index")),
        }
        Ok(0)
    }

    fn set_trigger(
        &self,
        index: u32,
        count: u32,
        data_type: u32,
        data: &[u8],
        asserted: bool,
    ) -> Result {
        let mut new_efd = None;
        if data_type == uapi::VFIO_IRQ_SET_DATA_EVENTFD {
            let fd = i32::from_ne_bytes(
                data.try_into()
                    .map_err(|_| refused("SET_IRQS", "an eventfd trigger without its fd"))?,
            );
            if fd != -1 {
                new_efd = Some(EventFd::from_fd(fd)?);
            }
        }
        let mut state = self.lock();
        let slot = if index == uapi::INTX_IRQ_INDEX {
            &mut state.intx
        } else {
            &mut state.msi
        };
        if data_type == uapi::VFIO_IRQ_SET_DATA_EVENTFD
            || (count == 0 && data_type == uapi::VFIO_IRQ_SET_DATA_NONE)
        {
            // Install, replace or remove; the old reference goes with `old`.
            let old = core::mem::replace(slot, new_efd);
            drop(state);
            drop(old);
        } else if asserted {
            // Loopback: signal what is installed.
            if let Some(efd) = slot.as_ref() {
                efd.signal();
            }
        }
        Ok(())
    }
}

/// Size of the migration region's `VFIO_REGION_INFO_CAP_TYPE`.
const TYPE_CAP_LEN: usize = 16;
/// Size of its `VFIO_REGION_INFO_CAP_SPARSE_MMAP`: the header, `nr_areas`,
/// a reserved word and one (offset, size) pair per area.
const SPARSE_CAP_LEN: usize = 16 + 16 * layout::MMAP_AREAS.len();

/// The capability chain of the migration region, for a chain that starts
/// `base` bytes into the ioctl's buffer (`next` offsets count from the
/// start of `struct vfio_region_info`): `VFIO_REGION_INFO_CAP_TYPE`, type
/// `1 << 30`, subtype 1, as the 2018 proposal defines them; then
/// `VFIO_REGION_INFO_CAP_SPARSE_MMAP` with the data and bitmap areas.
fn migration_caps(base: u32) -> [u8; TYPE_CAP_LEN + SPARSE_CAP_LEN] {
    let sparse_at = base + TYPE_CAP_LEN as u32;
    let type_id = (uapi::VFIO_REGION_INFO_CAP_TYPE as u16).to_ne_bytes();
    let sparse_id = (uapi::VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16).to_ne_bytes();
    let version = 1u16.to_ne_bytes();
    let next_of_type = sparse_at.to_ne_bytes();
    let end_of_chain = 0u32.to_ne_bytes();
    let region_type = abi::migration::REGION_TYPE.to_ne_bytes();
    let region_subtype = abi::migration::REGION_SUBTYPE.to_ne_bytes();
    let nr_areas = (layout::MMAP_AREAS.len() as u32).to_ne_bytes();
    let reserved = 0u32.to_ne_bytes();
    let areas = layout::MMAP_AREAS.map(|(offset, size)| [offset.to_ne_bytes(), size.to_ne_bytes()]);
    let head: [&[u8]; 10] = [
        &type_id,
        &version,
        &next_of_type,
        &region_type,
        &region_subtype,
        &sparse_id,
        &version,
        &end_of_chain,
        &nr_areas,
        &reserved,
    ];
    let area_fields = areas.iter().flatten().map(|f| &f[..]);
    let mut caps = [0u8; TYPE_CAP_LEN + SPARSE_CAP_LEN];
    let mut at = 0;
    for f in Iterator::chain(head.into_iter(), area_fields) {
        if let Some(dst) = caps.get_mut(at..at + f.len()) {
            dst.copy_from_slice(f);
        }
        at += f.len();
    }
    caps
}
