/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel headers whose declarations the module's own bindgen run turns into
 * rust/sys_generated.rs (see Kbuild). Types the kernel crate already binds
 * (struct device, struct file, ...) are not regenerated: rust/sys.rs glob-imports
 * kernel::bindings and bindgen runs with --no-recursive-allowlist.
 */
#include <linux/anon_inodes.h>
#include <linux/debugfs.h>
#include <linux/device.h>
#include <linux/dynamic_debug.h>
#include <linux/eventfd.h>
#include <linux/iommu.h>
#include <linux/iova_bitmap.h>
#include <linux/mdev.h>
#include <linux/mm.h>
#include <linux/vfio.h>
#include <linux/vmalloc.h>
#include <uapi/linux/vfio.h>
