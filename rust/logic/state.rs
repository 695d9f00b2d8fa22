// SPDX-License-Identifier: GPL-2.0

//! The migration state machine of the migration region (SPEC section 2).
//!
//! The ABI keeps the ten device states of the 2018 proposal. Following Kevin
//! Tian's review, the code does not reason about those ten phases directly:
//! every state maps to a few orthogonal [`Properties`] (is the device running,
//! is dirty logging on, which way does state flow, how far the stream is, does
//! the state roll a migration back), and both the effects of a transition
//! ([`Transition`]) and the actions a state allows ([`Action`]) are derived
//! from those properties. Only two things are per-state tables: the property
//! table itself ([`DeviceState::properties`]) and the list of transitions the
//! SPEC allows ([`DeviceState::successors`]).
//!
//! [`DeviceState`] itself, the numbers userspace sees, is part of the ABI
//! ([`super::abi::migration`]); this file adds its behaviour.
//!
//! Pure logic: no allocation, no kernel types, no panics.

use super::abi::migration::DeviceState;

/// Which way device state flows, i.e. which side of a migration the device
/// is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Not migrating.
    None,
    /// Source: state flows out of the device.
    Save,
    /// Destination: state flows into the device.
    Resume,
}

/// How far the migration stream of the current [`Direction`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamPhase {
    /// No stream.
    Closed,
    /// The stream exists (its size is known) but no data moves yet.
    Prepared,
    /// Data moves through the data area.
    Open,
    /// The stream ended; its software state is gone.
    Done,
}

impl StreamPhase {
    /// Whether a stream object (encoder or decoder) exists in this phase.
    pub(crate) const fn exists(self) -> bool {
        matches!(self, StreamPhase::Prepared | StreamPhase::Open)
    }
}

/// The orthogonal properties a device state stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Properties {
    /// The device works: BAR writes and DMA are allowed.
    pub(crate) running: bool,
    /// Dirty logging (device memory and guest pages) is on.
    pub(crate) logging: bool,
    /// Which side of a migration the device is on.
    pub(crate) direction: Direction,
    /// How far the stream of that side is.
    pub(crate) stream: StreamPhase,
    /// The state undoes an unfinished migration: a source runs again as it
    /// was, a destination returns to its power-on state.
    pub(crate) rollback: bool,
}

/// An action of the migration region other than a state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Read `pending.*` (elsewhere the fields read 0).
    GetPending,
    /// Read `data.size`: produce the next chunk of the stream.
    GetBuffer,
    /// Write `data.size`: consume a chunk of the stream.
    SetBuffer,
    /// Read `dirty_pfns.copied`: report dirty guest pages.
    DirtyQuery,
}

impl Properties {
    /// Whether `action` is valid in a state with these properties.
    pub(crate) const fn allows(self, action: Action) -> bool {
        match action {
            Action::GetPending => matches!(self.direction, Direction::Save) && self.stream.exists(),
            Action::GetBuffer => {
                matches!(self.direction, Direction::Save)
                    && matches!(self.stream, StreamPhase::Open)
            }
            Action::SetBuffer => {
                matches!(self.direction, Direction::Resume)
                    && matches!(self.stream, StreamPhase::Open)
            }
            Action::DirtyQuery => self.logging,
        }
    }

    /// A save stream (encoder) exists.
    const fn saving(self) -> bool {
        matches!(self.direction, Direction::Save) && self.stream.exists()
    }

    /// A resume stream (decoder, shadow state) exists.
    const fn resuming(self) -> bool {
        matches!(self.direction, Direction::Resume) && self.stream.exists()
    }
}

/// The effects of a state change, derived from the property change.
///
/// The kernel applies them in this order, after checking `commit_resume`
/// first because it is the only effect that can fail (the decoder must say
/// the stream is complete; otherwise the write fails with `EINVAL` and the
/// state stays `RESUME`): `quiesce`, `stop_logging`, `end_save`,
/// `discard_resume_and_reset`, `commit_resume`, `start_resume`,
/// `start_save`, `start_logging`, `unquiesce`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Transition {
    /// Running to stopped: BAR writes start failing with `EBUSY`, the DMA
    /// engine takes no new work and the kernel waits for in-flight DMA.
    pub(crate) quiesce: bool,
    /// Stopped to running: BAR writes and DMA are allowed again.
    pub(crate) unquiesce: bool,
    /// Dirty logging starts: every device-memory page is marked dirty
    /// (`Bitmap::set_all`) and guest-page tracking begins.
    pub(crate) start_logging: bool,
    /// Dirty logging stops: the dirty logs are dropped.
    pub(crate) stop_logging: bool,
    /// A new save stream starts (new `Encoder`).
    pub(crate) start_save: bool,
    /// The save stream ends: the encoder and any staged chunk are dropped.
    pub(crate) end_save: bool,
    /// A new resume stream starts (new `Decoder`, fresh power-on shadow
    /// state).
    pub(crate) start_resume: bool,
    /// The shadow state becomes the device state, only if the decoder's
    /// `finish` succeeds.
    pub(crate) commit_resume: bool,
    /// The partial or loaded state is thrown away and the device returns to
    /// its power-on state.
    pub(crate) discard_resume_and_reset: bool,
    /// The source leaves the save side and runs again as it was (for this
    /// device nothing beyond the other effects; for tracing).
    pub(crate) restore_running: bool,
}

impl Transition {
    /// No effect at all (same-state writes).
    pub(crate) const NONE: Transition = Transition {
        quiesce: false,
        unquiesce: false,
        start_logging: false,
        stop_logging: false,
        start_save: false,
        end_save: false,
        start_resume: false,
        commit_resume: false,
        discard_resume_and_reset: false,
        restore_running: false,
    };

    /// The effects of going from a state with properties `from` to one with
    /// properties `to`.
    pub(crate) const fn between(from: Properties, to: Properties) -> Transition {
        let from_resume_side = matches!(from.direction, Direction::Resume);
        let from_save_side = matches!(from.direction, Direction::Save);
        let to_save_side = matches!(to.direction, Direction::Save);
        Transition {
            quiesce: from.running && !to.running,
            unquiesce: !from.running && to.running,
            start_logging: !from.logging && to.logging,
            stop_logging: from.logging && !to.logging,
            start_save: !from.saving() && to.saving(),
            end_save: from.saving() && !to.saving(),
            start_resume: !from.resuming() && to.resuming(),
            // Leaving an open resume stream other than by rollback commits it
            // (region: RESUME_COMPLETED; v2: RESUMING to STOP).
            commit_resume: from.resuming() && !to.resuming() && !to.rollback,
            discard_resume_and_reset: from_resume_side && to.rollback,
            restore_running: from_save_side && !to_save_side && to.running,
        }
    }

    /// Whether the transition has no effect (for tests).
    #[cfg(test)]
    pub(crate) const fn is_noop(&self) -> bool {
        !(self.quiesce
            || self.unquiesce
            || self.start_logging
            || self.stop_logging
            || self.start_save
            || self.end_save
            || self.start_resume
            || self.commit_resume
            || self.discard_resume_and_reset
            || self.restore_running)
    }
}

/// Why a write of `device_state` is refused (the kernel returns `EINVAL`
/// and keeps the state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InvalidTransition {
    /// The value written is not a state (10 or more).
    UnknownState(u32),
    /// The SPEC's table does not allow this pair.
    NotAllowed {
        /// Current state.
        from: DeviceState,
        /// Requested state.
        to: DeviceState,
    },
}

impl DeviceState {
    /// The state a device is in after open, reset and close.
    #[cfg(test)]
    pub(crate) const INITIAL: DeviceState = DeviceState::None;

    /// The properties this state stands for (the one per-state table of
    /// behaviour).
    pub(crate) const fn properties(self) -> Properties {
        use Direction as D;
        use StreamPhase as S;
        const fn p(
            running: bool,
            logging: bool,
            direction: D,
            stream: S,
            rollback: bool,
        ) -> Properties {
            Properties {
                running,
                logging,
                direction,
                stream,
                rollback,
            }
        }
        match self {
            DeviceState::None => p(true, false, D::None, S::Closed, false),
            DeviceState::Running => p(true, false, D::None, S::Closed, false),
            DeviceState::Setup => p(true, true, D::Save, S::Prepared, false),
            DeviceState::PreCopy => p(true, true, D::Save, S::Open, false),
            DeviceState::StopNCopy => p(false, true, D::Save, S::Open, false),
            DeviceState::SaveCompleted => p(false, false, D::Save, S::Done, false),
            DeviceState::Resume => p(false, false, D::Resume, S::Open, false),
            DeviceState::ResumeCompleted => p(false, false, D::Resume, S::Done, false),
            DeviceState::Failed => p(true, false, D::None, S::Closed, true),
            DeviceState::Cancelled => p(true, false, D::None, S::Closed, true),
        }
    }

    /// The states this one may change to (SPEC section 2), besides itself.
    pub(crate) const fn successors(self) -> &'static [DeviceState] {
        use DeviceState as S;
        match self {
            S::None => &[S::Running, S::Resume],
            S::Running => &[S::Setup, S::Resume],
            S::Setup => &[S::PreCopy, S::StopNCopy, S::Failed, S::Cancelled],
            S::PreCopy => &[S::StopNCopy, S::Failed, S::Cancelled],
            S::StopNCopy => &[S::SaveCompleted, S::Failed, S::Cancelled],
            S::SaveCompleted => &[S::Running, S::Failed, S::Cancelled],
            S::Resume => &[S::ResumeCompleted, S::Failed, S::Cancelled],
            S::ResumeCompleted => &[S::Running, S::Failed],
            S::Failed | S::Cancelled => &[S::Running, S::None, S::Setup, S::Resume],
        }
    }

    /// Whether a write of `to` is accepted in this state (writing the
    /// current state again is accepted and does nothing).
    pub(crate) fn may_go_to(self, to: DeviceState) -> bool {
        self == to || self.successors().contains(&to)
    }

    /// Whether `action` is valid in this state.
    pub(crate) const fn allows(self, action: Action) -> bool {
        self.properties().allows(action)
    }

    /// Whether BAR writes and DMA are allowed in this state.
    pub(crate) const fn is_running(self) -> bool {
        self.properties().running
    }
}

/// Plans the change from `from` to `to`: the effects to apply, or why the
/// change is refused.
pub(crate) fn plan(from: DeviceState, to: DeviceState) -> Result<Transition, InvalidTransition> {
    if from == to {
        Ok(Transition::NONE)
    } else if from.may_go_to(to) {
        Ok(Transition::between(from.properties(), to.properties()))
    } else {
        Err(InvalidTransition::NotAllowed { from, to })
    }
}

/// Plans a write of the raw value `to` to `device_state` in state `from`.
pub(crate) fn plan_raw(
    from: DeviceState,
    to: u32,
) -> Result<(DeviceState, Transition), InvalidTransition> {
    let target = DeviceState::from_raw(to).ok_or(InvalidTransition::UnknownState(to))?;
    let transition = plan(from, target)?;
    Ok((target, transition))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip() {
        for (i, s) in DeviceState::ALL.iter().enumerate() {
            assert_eq!(s.raw() as usize, i);
            assert_eq!(DeviceState::from_raw(s.raw()), Some(*s));
        }
        assert_eq!(DeviceState::from_raw(10), None);
    }

    #[test]
    fn same_state_is_noop() {
        for s in DeviceState::ALL {
            assert_eq!(plan(s, s), Ok(Transition::NONE));
        }
    }
}
