// SPDX-License-Identifier: GPL-2.0

//! Raw bindings to the VFIO, mdev and eventfd C APIs.
//!
//! Generated at build time by bindgen from `include/vms_bindings.h` against
//! the target kernel (see `Kbuild`); never checked in, because layouts such
//! as `struct vfio_device` depend on the kernel's configuration. Types the
//! kernel crate already binds come from `kernel::bindings`, so they stay the
//! same Rust types on both sides.
//!
//! Only the wrapper modules (`eventfd`, `mdev`, `vfio`) use this module.

#![allow(
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    improper_ctypes,
    unreachable_pub,
    unsafe_op_in_unsafe_fn,
    unused_imports,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]

use kernel::bindings::*;
use kernel::ffi;

include!("sys_generated.rs");
