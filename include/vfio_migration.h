/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * vfio_migration.h: the userspace ABI of the migration region of
 * vfio-mig-sample, the November 2018 VFIO migration interface proposal
 * ("VFIO KABI for migration interface", Kirti Wankhede) made real.
 *
 * Documentation/migration-abi.rst describes how to use it; this header only
 * defines the numbers and the layout. Every value here is checked against
 * rust/logic/abi.rs, the one Rust source the module and the tools build
 * with, by the host tests in tools/model/src/tests/header.rs.
 *
 * The names are the proposal's. Two of them were later taken by upstream
 * linux/vfio.h for another, incompatible interface:
 *
 *  - struct vfio_device_migration_info: Linux 5.8 added a migration
 *    protocol ("v1") with a struct of that name and another layout
 *    (device_state, reserved, pending_bytes, data_offset, data_size); 6.x
 *    headers still carry it.
 *  - VFIO_DEVICE_STATE_RUNNING and friends: 5.8..5.17 define
 *    VFIO_DEVICE_STATE_RUNNING as a bit (1 << 0); 5.18 and later as a member
 *    of enum vfio_device_mig_state with the value 2. Here it is 1.
 *
 * A struct tag or an enum constant cannot be renamed or hidden by the
 * preprocessor, so no include order or #ifdef makes both definitions
 * usable in one translation unit, and silently picking one would be worse.
 * The clean solution is to keep them apart:
 *
 *  - A file that includes this header in full must not include
 *    <linux/vfio.h>. If <linux/vfio.h> came first, this header stops with
 *    #error below; if it comes later, the compiler reports the
 *    redefinitions. The migration region needs no ioctl: it is driven with
 *    pread()/pwrite() on the device fd, so the code that drives it fits in
 *    a file of its own.
 *  - A file that needs <linux/vfio.h> (for VFIO_DEVICE_GET_REGION_INFO, to
 *    find the region) defines VFIO_MIGRATION_CONSTANTS_ONLY before including
 *    this header and gets only the VFIO_MIG_* names, which collide with
 *    nothing, with the same values (VFIO_MIG_REGION_TYPE ==
 *    VFIO_REGION_TYPE_MIGRATION, VFIO_MIG_OFF_DEVICE_STATE ==
 *    offsetof(struct vfio_device_migration_info, device_state), ...).
 *
 * All fields are little-endian. The region is accessed with pread/pwrite at
 * the region's file offset (VFIO_DEVICE_GET_REGION_INFO's offset, index << 40
 * for this device) plus the offsets below.
 */
#ifndef VFIO_MIGRATION_CONSTANTS_H
#define VFIO_MIGRATION_CONSTANTS_H

/* ------------------------------------------------------------------------
 * Names that collide with nothing: always defined.
 */

/* VFIO_REGION_INFO_CAP_TYPE of the migration region. */
#define VFIO_MIG_REGION_TYPE		(1 << 30)
#define VFIO_MIG_REGION_SUBTYPE		(1)

/* Field offsets in the region (the packed struct below) and its size. */
#define VFIO_MIG_OFF_DEVICE_STATE	0
#define VFIO_MIG_OFF_PRECOPY_ONLY	4
#define VFIO_MIG_OFF_COMPATIBLE		12
#define VFIO_MIG_OFF_POSTCOPY_ONLY	20
#define VFIO_MIG_OFF_THRESHOLD_SIZE	28
#define VFIO_MIG_OFF_DATA_OFFSET	36
#define VFIO_MIG_OFF_DATA_SIZE		44
#define VFIO_MIG_OFF_DIRTY_START_ADDR	52
#define VFIO_MIG_OFF_DIRTY_TOTAL	60
#define VFIO_MIG_OFF_DIRTY_COPIED	68
#define VFIO_MIG_INFO_SIZE		76

/*
 * Region layout. Offsets 0 .. VFIO_MIG_INFO_SIZE hold the struct; from there
 * to VFIO_MIG_REGION_DATA_OFFSET is reserved (any access fails with EINVAL).
 * The data area follows, then the dirty bitmap area:
 *
 *   data area    [VFIO_MIG_REGION_DATA_OFFSET, + DATA_LEN)
 *   bitmap area  [VFIO_MIG_REGION_DATA_OFFSET + DATA_LEN, + BITMAP_LEN)
 *
 * DATA_LEN and BITMAP_LEN are page multiples set by module parameters; the
 * defaults are below. The region size is 4096 + DATA_LEN + BITMAP_LEN.
 * After a dirty-bitmap query data.offset reads the bitmap area's offset.
 */
#define VFIO_MIG_REGION_DATA_OFFSET	0x1000
#define VFIO_MIG_DEFAULT_DATA_LEN	0x100000
#define VFIO_MIG_DEFAULT_BITMAP_LEN	0x40000
#define VFIO_MIG_DEFAULT_BITMAP_OFFSET	\
	(VFIO_MIG_REGION_DATA_OFFSET + VFIO_MIG_DEFAULT_DATA_LEN)
#define VFIO_MIG_DEFAULT_REGION_SIZE	\
	(VFIO_MIG_REGION_DATA_OFFSET + VFIO_MIG_DEFAULT_DATA_LEN + \
	 VFIO_MIG_DEFAULT_BITMAP_LEN)

/* Dirty bitmap: one bit per page of this size, little-endian u64 words. */
#define VFIO_MIG_DIRTY_PAGE_SIZE	4096

/* Number of device states; device_state values from here on are EINVAL. */
#define VFIO_MIG_NUM_STATES		10

#endif /* VFIO_MIGRATION_CONSTANTS_H */

#if !defined(VFIO_MIGRATION_CONSTANTS_ONLY) && !defined(VFIO_MIGRATION_H)
#define VFIO_MIGRATION_H

#if defined(VFIO_API_VERSION)
#error "vfio_migration.h defines struct vfio_device_migration_info and VFIO_DEVICE_STATE_* as the 2018 proposal does; <linux/vfio.h> defines the same names differently. Include them in different files, or define VFIO_MIGRATION_CONSTANTS_ONLY first to get only the VFIO_MIG_* names."
#endif

#include <linux/types.h>

/* ------------------------------------------------------------------------
 * The proposal's names.
 */

/* Migration region type and sub-type */
#define VFIO_REGION_TYPE_MIGRATION	VFIO_MIG_REGION_TYPE
#define VFIO_REGION_SUBTYPE_MIGRATION	VFIO_MIG_REGION_SUBTYPE

/*
 * Device states, written to and read from device_state. A device is in
 * VFIO_DEVICE_STATE_NONE when its fd is opened. Which state may follow which
 * is listed in Documentation/migration-abi.rst.
 */
enum {
	VFIO_DEVICE_STATE_NONE,				/* 0 */
	VFIO_DEVICE_STATE_RUNNING,			/* 1 */
	VFIO_DEVICE_STATE_MIGRATION_SETUP,		/* 2 */
	VFIO_DEVICE_STATE_MIGRATION_PRECOPY,		/* 3 */
	VFIO_DEVICE_STATE_MIGRATION_STOPNCOPY,		/* 4 */
	VFIO_DEVICE_STATE_MIGRATION_SAVE_COMPLETED,	/* 5 */
	VFIO_DEVICE_STATE_MIGRATION_RESUME,		/* 6 */
	VFIO_DEVICE_STATE_MIGRATION_RESUME_COMPLETED,	/* 7 */
	VFIO_DEVICE_STATE_MIGRATION_FAILED,		/* 8 */
	VFIO_DEVICE_STATE_MIGRATION_CANCELLED,		/* 9 */
};

/*
 * At offset 0 of the migration region. Every field is accessed whole: one
 * pread/pwrite at the field's offset with the field's size (4 for
 * device_state, 8 for the others); anything else fails with EINVAL.
 *
 *   device_state              RW  set state (write), current state (read)
 *   pending.precopy_only      R   get pending (SETUP, PRECOPY, STOPNCOPY;
 *   pending.compatible        R     elsewhere 0)
 *   pending.postcopy_only     R
 *   pending.threshold_size    RW  caps later get-buffer chunks (0: no cap)
 *   data.offset               RW  where the chunk is (region offset)
 *   data.size                 RW  read: get buffer (PRECOPY, STOPNCOPY);
 *                                 write: set buffer (RESUME)
 *   dirty_pfns.start_addr     RW  dirty query: first IOVA (page aligned)
 *   dirty_pfns.total          RW  dirty query: number of pages
 *   dirty_pfns.copied         R   dirty query (SETUP, PRECOPY, STOPNCOPY)
 */
struct vfio_device_migration_info {
	__u32 device_state;		/* VFIO device state */
	struct {
		__u64 precopy_only;
		__u64 compatible;
		__u64 postcopy_only;
		__u64 threshold_size;
	} pending;
	struct {
		__u64 offset;		/* offset */
		__u64 size;		/* size */
	} data;
	struct {
		__u64 start_addr;
		__u64 total;
		__u64 copied;
	} dirty_pfns;
} __attribute__((packed));

#endif /* !VFIO_MIGRATION_CONSTANTS_ONLY && !VFIO_MIGRATION_H */
