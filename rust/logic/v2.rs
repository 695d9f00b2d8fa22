// SPDX-License-Identifier: GPL-2.0

//! The upstream v2 migration interface (`enum vfio_device_mig_state`,
//! `VFIO_MIG_GET_PRECOPY_INFO`) in terms of the region's model.
//!
//! Every v2 state stands for the same orthogonal [`Properties`] the ten
//! region states do, so a v2 arc has the effects [`Transition::between`]
//! derives, and the device applies them with the code the region uses:
//! one device state, one stream, one dirty log, two interfaces.
//! `Documentation/migration-v2.rst` gives the mapping for VMM authors.
//!
//! Pure logic: no allocation, no kernel types, no panics.

use super::state::{Direction, Properties, StreamPhase, Transition};
use super::stream::Pending;

/// A v2 device state, numbered as in `enum vfio_device_mig_state`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum V2State {
    /// `VFIO_DEVICE_STATE_ERROR`: never entered by this device (the core
    /// refuses it as a target).
    Error = 0,
    /// `VFIO_DEVICE_STATE_STOP`: stopped, no stream.
    Stop = 1,
    /// `VFIO_DEVICE_STATE_RUNNING`: normal operation.
    Running = 2,
    /// `VFIO_DEVICE_STATE_STOP_COPY`: stopped, the save stream is read.
    StopCopy = 3,
    /// `VFIO_DEVICE_STATE_RESUMING`: stopped, a stream is written in.
    Resuming = 4,
    /// `VFIO_DEVICE_STATE_RUNNING_P2P`: running; this device starts no
    /// peer-to-peer DMA, so it is `RUNNING` here.
    RunningP2p = 5,
    /// `VFIO_DEVICE_STATE_PRE_COPY`: running, the save stream is read.
    PreCopy = 6,
    /// `VFIO_DEVICE_STATE_PRE_COPY_P2P`: `PRE_COPY` (no peer-to-peer DMA).
    PreCopyP2p = 7,
}

/// Why a v2 state number is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UnknownV2State(pub(crate) u32);

impl V2State {
    /// The state numbered `raw`.
    pub(crate) const fn from_raw(raw: u32) -> Result<V2State, UnknownV2State> {
        Ok(match raw {
            0 => V2State::Error,
            1 => V2State::Stop,
            2 => V2State::Running,
            3 => V2State::StopCopy,
            4 => V2State::Resuming,
            5 => V2State::RunningP2p,
            6 => V2State::PreCopy,
            7 => V2State::PreCopyP2p,
            _ => return Err(UnknownV2State(raw)),
        })
    }

    /// The number of the uapi.
    pub(crate) const fn raw(self) -> u32 {
        self as u32
    }

    /// The properties the state stands for. `logging` here is the save
    /// stream's own tracking of device memory: guest-page logging is the
    /// separate DMA-logging feature in v2.
    pub(crate) const fn properties(self) -> Properties {
        use Direction as D;
        use StreamPhase as S;
        const fn p(running: bool, logging: bool, direction: D, stream: S) -> Properties {
            Properties {
                running,
                logging,
                direction,
                stream,
                rollback: false,
            }
        }
        match self {
            V2State::Error | V2State::Stop => p(false, false, D::None, S::Closed),
            V2State::Running | V2State::RunningP2p => p(true, false, D::None, S::Closed),
            V2State::StopCopy => p(false, true, D::Save, S::Open),
            V2State::PreCopy | V2State::PreCopyP2p => p(true, true, D::Save, S::Open),
            V2State::Resuming => p(false, false, D::Resume, S::Open),
        }
    }

    /// Whether the stream of this state is read while the device runs
    /// (`PRE_COPY`): a read that finds nothing new answers `ENOMSG`.
    pub(crate) const fn precopy(self) -> bool {
        matches!(self, V2State::PreCopy | V2State::PreCopyP2p)
    }
}

/// The effects of one arc (which the VFIO core computes with
/// `vfio_mig_get_next_state`).
pub(crate) const fn plan(from: V2State, to: V2State) -> Transition {
    Transition::between(from.properties(), to.properties())
}

/// `struct vfio_precopy_info` from the save stream's pending bytes.
///
/// Until the initial image (the header and one copy of every page) is
/// read, what is left of it is `initial_bytes`; afterwards the pages
/// written since are `dirty_bytes`. The register and end records come only
/// in `STOP_COPY` and count in neither.
pub(crate) const fn precopy_info(pending: &Pending, initial_done: bool) -> (u64, u64) {
    let pages = pending.precopy_only.saturating_add(pending.compatible);
    if initial_done {
        (0, pages)
    } else {
        (pages, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [V2State; 8] = [
        V2State::Error,
        V2State::Stop,
        V2State::Running,
        V2State::StopCopy,
        V2State::Resuming,
        V2State::RunningP2p,
        V2State::PreCopy,
        V2State::PreCopyP2p,
    ];

    #[test]
    fn raw_round_trip() {
        for s in ALL {
            assert_eq!(V2State::from_raw(s.raw()), Ok(s));
        }
        assert_eq!(V2State::from_raw(8), Err(UnknownV2State(8)));
    }

    /// The arcs `vfio_mig_get_next_state` takes with STOP_COPY | P2P |
    /// PRE_COPY, with the effects each must have.
    #[test]
    fn arcs() {
        use V2State::*;
        let t = |f: fn(&mut Transition)| {
            let mut x = Transition::NONE;
            f(&mut x);
            x
        };
        let cases = [
            (Running, RunningP2p, Transition::NONE),
            (RunningP2p, Running, Transition::NONE),
            (RunningP2p, Stop, t(|x| x.quiesce = true)),
            (Stop, RunningP2p, t(|x| x.unquiesce = true)),
            (
                Stop,
                StopCopy,
                t(|x| {
                    x.start_logging = true;
                    x.start_save = true
                }),
            ),
            (
                StopCopy,
                Stop,
                t(|x| {
                    x.stop_logging = true;
                    x.end_save = true
                }),
            ),
            (Stop, Resuming, t(|x| x.start_resume = true)),
            (Resuming, Stop, t(|x| x.commit_resume = true)),
            (
                Running,
                PreCopy,
                t(|x| {
                    x.start_logging = true;
                    x.start_save = true
                }),
            ),
            (
                PreCopy,
                Running,
                t(|x| {
                    x.stop_logging = true;
                    x.end_save = true;
                    x.restore_running = true
                }),
            ),
            (PreCopy, PreCopyP2p, Transition::NONE),
            (PreCopyP2p, PreCopy, Transition::NONE),
            (PreCopyP2p, StopCopy, t(|x| x.quiesce = true)),
            (
                RunningP2p,
                PreCopyP2p,
                t(|x| {
                    x.start_logging = true;
                    x.start_save = true
                }),
            ),
            (
                PreCopyP2p,
                RunningP2p,
                t(|x| {
                    x.stop_logging = true;
                    x.end_save = true;
                    x.restore_running = true
                }),
            ),
        ];
        for (from, to, want) in cases {
            assert_eq!(plan(from, to), want, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn precopy_info_splits_initial_and_dirty() {
        let p = Pending {
            precopy_only: 32,
            compatible: 4112,
            postcopy_only: 400,
        };
        assert_eq!(precopy_info(&p, false), (4144, 0));
        assert_eq!(precopy_info(&p, true), (0, 4144));
    }
}
