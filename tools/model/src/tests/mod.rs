// SPDX-License-Identifier: GPL-2.0

//! Host-only tests of the shared logic.

mod bitmap;
mod header;
mod prop_dirty_log;
mod prop_regions;
mod prop_state;
mod prop_stream;
mod rng;
mod state;
mod stream;
