// SPDX-License-Identifier: GPL-2.0

//! Host build of the kernel module's pure migration logic.
//!
//! The files under `rust/logic/` are compiled twice: inside the kernel crate
//! (`no_std`, the kernel's lint flags) and here, so that `cargo test` can
//! exercise them. They are included by path as sibling modules, as in the
//! kernel crate, and reach each other through `super::`. Everything in them
//! is `pub(crate)`; the tests live inside this crate (`src/tests/`) and in
//! the shared files' own `#[cfg(test)]` modules.

#![cfg_attr(not(test), no_std)]
// The logic is pure: no `unsafe` in it, nor in its tests.
#![forbid(unsafe_code)]
// The shared items are used by the kernel and by the tests, not by this
// library itself.
#![allow(dead_code)]

// Every file of rust/logic/ (the list in rust/logic/mod.rs).
#[path = "../../../rust/logic/abi.rs"]
pub mod abi;
#[path = "../../../rust/logic/bitmap.rs"]
pub mod bitmap;
#[path = "../../../rust/logic/config_space.rs"]
pub mod config_space;
#[path = "../../../rust/logic/dirty_log.rs"]
pub mod dirty_log;
#[path = "../../../rust/logic/dma.rs"]
pub mod dma;
#[path = "../../../rust/logic/migration_region.rs"]
pub mod migration_region;
#[path = "../../../rust/logic/regions.rs"]
pub mod regions;
#[path = "../../../rust/logic/regs.rs"]
pub mod regs;
#[path = "../../../rust/logic/snapshot.rs"]
pub mod snapshot;
#[path = "../../../rust/logic/state.rs"]
pub mod state;
#[path = "../../../rust/logic/stream.rs"]
pub mod stream;
#[path = "../../../rust/logic/v2.rs"]
pub mod v2;

#[cfg(test)]
mod tests;
