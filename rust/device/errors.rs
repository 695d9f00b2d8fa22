// SPDX-License-Identifier: GPL-2.0

//! The errno of each refusal of the pure logic, and a dynamic-debug line
//! that says why (off by default; see [`crate::dyndbg`]).
//!
//! With these, the device model propagates the logic's errors with `?`:
//! the reason is logged where the errno is chosen, once per kind. Each
//! conversion is `#[cold]`, the kernel's `unlikely()`: the refusal's
//! logging stays out of the register paths (testing.rst, "BAR0 read").

use crate::dyndbg::dyn_debug;
use crate::logic::bitmap::BitmapError;
use crate::logic::config_space::OutOfRange;
use crate::logic::migration_region::Refused;
use crate::logic::regions::BadAccess;
use crate::logic::regs::NotDwords;
use crate::logic::snapshot::BadBlob;
use crate::logic::state::InvalidTransition;
use crate::logic::stream::StreamError;
use crate::logic::v2::UnknownV2State;
use kernel::prelude::*;

/// Refuses a request with `EINVAL`, saying why in the debug log.
pub(super) fn refused(what: &str, why: &str) -> Error {
    dyn_debug!("{} refused: {}", what, why);
    EINVAL
}

impl From<BadAccess> for Error {
    #[cold]
    fn from(_: BadAccess) -> Error {
        dyn_debug!("access refused: outside every region");
        EINVAL
    }
}

impl From<NotDwords> for Error {
    #[cold]
    fn from(_: NotDwords) -> Error {
        dyn_debug!("BAR0 access refused: not whole, aligned dwords");
        EINVAL
    }
}

impl From<OutOfRange> for Error {
    #[cold]
    fn from(_: OutOfRange) -> Error {
        dyn_debug!("config access refused: outside the configuration space");
        EINVAL
    }
}

impl From<Refused> for Error {
    #[cold]
    fn from(_: Refused) -> Error {
        dyn_debug!("migration region request refused: not a whole field, an output field written, or outside its area");
        EINVAL
    }
}

impl From<BadBlob> for Error {
    #[cold]
    fn from(_: BadBlob) -> Error {
        dyn_debug!("register state refused: invalid register blob");
        EINVAL
    }
}

impl From<InvalidTransition> for Error {
    #[cold]
    fn from(e: InvalidTransition) -> Error {
        dyn_debug!("state change refused: {:?}", e);
        EINVAL
    }
}

impl From<StreamError> for Error {
    #[cold]
    fn from(e: StreamError) -> Error {
        dyn_debug!("stream refused: {:?}", e);
        EINVAL
    }
}

impl From<BitmapError> for Error {
    #[cold]
    fn from(e: BitmapError) -> Error {
        dyn_debug!("dirty bitmap refused: {:?}", e);
        EINVAL
    }
}

impl From<UnknownV2State> for Error {
    #[cold]
    fn from(e: UnknownV2State) -> Error {
        dyn_debug!("v2 state change refused: {} is not a state", e.0);
        EINVAL
    }
}
