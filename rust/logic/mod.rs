// SPDX-License-Identifier: GPL-2.0

//! Pure device logic: no kernel types, no allocation, no `unsafe`.
//!
//! These files build twice: into the module, and on the host by
//! `tools/model`, whose `cargo test` runs the unit tests at the bottom of
//! each file and the tests in `tools/model/src/tests/`.

// `pub` and partly unused here: `tools/` include the file and re-export all
// of it (see its header).
#[allow(dead_code, unreachable_pub)]
pub(crate) mod abi;
pub(crate) mod bitmap;
pub(crate) mod config_space;
pub(crate) mod dirty_log;
pub(crate) mod dma;
pub(crate) mod migration_region;
pub(crate) mod regions;
pub(crate) mod regs;
pub(crate) mod snapshot;
pub(crate) mod state;
pub(crate) mod stream;
pub(crate) mod v2;
