// SPDX-License-Identifier: GPL-2.0

//! Host-only tests of the shared logic.

mod bitmap;
mod header;
mod rng;
mod state;
mod stream;
