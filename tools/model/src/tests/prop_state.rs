// SPDX-License-Identifier: GPL-2.0

//! Property test of the state machine against the tables of
//! `Documentation/migration-abi.rst`: long random sequences of
//! `device_state` writes (valid and invalid values), each accepted exactly
//! when the transition table lists it, each leaving the device in the state
//! the table says, with the documented "works", "dirty logging" and action
//! columns; the effects of the accepted transitions, applied one after the
//! other, always leave exactly the stream objects the state has.

use proptest::prelude::*;

use super::state::spec_allows;
use crate::abi::migration::DeviceState;
use crate::state::{plan_raw, Action};

/// States 4..=7 are quiesced (the "device works" column).
fn doc_running(s: u32) -> bool {
    !(4..=7).contains(&s)
}

/// SETUP, PRECOPY, STOPNCOPY log dirty pages and answer get pending and
/// the dirty query.
fn doc_saving(s: u32) -> bool {
    (2..=4).contains(&s)
}

/// What the device holds, tracked from the effects alone.
#[derive(Debug, Default)]
struct Held {
    encoder: bool,
    decoder: bool,
    logging: bool,
    quiesced: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn state_machine_follows_the_table(
        writes in prop::collection::vec(prop_oneof![8 => 0u32..10, 1 => 10u32..13, 1 => any::<u32>()], 0..200),
    ) {
        let mut state = DeviceState::None;
        let mut raw = 0u32;
        let mut held = Held::default();
        for to in writes {
            let r = plan_raw(state, to);
            let want = to < 10 && spec_allows(raw, to);
            prop_assert_eq!(r.is_ok(), want, "{} -> {}", raw, to);
            let Ok((next, t)) = r else { continue };
            prop_assert_eq!(next.raw(), to);
            // Effects only add what is missing and drop what is there.
            prop_assert!(!t.start_save || !held.encoder);
            prop_assert!(!t.end_save || held.encoder);
            prop_assert!(!t.start_resume || !held.decoder);
            prop_assert!(!t.commit_resume || held.decoder);
            prop_assert!(!t.start_logging || !held.logging);
            prop_assert!(!t.stop_logging || held.logging);
            prop_assert!(!t.quiesce || !held.quiesced);
            prop_assert!(!t.unquiesce || held.quiesced);
            held.encoder = (held.encoder && !t.end_save) || t.start_save;
            held.decoder = (held.decoder && !t.commit_resume && !t.discard_resume_and_reset)
                || t.start_resume;
            held.logging = (held.logging && !t.stop_logging) || t.start_logging;
            held.quiesced = (held.quiesced && !t.unquiesce) || t.quiesce;
            // Committing is only RESUME -> RESUME_COMPLETED; the power-on
            // reset only leaving the resume side for FAILED or CANCELLED.
            prop_assert_eq!(t.commit_resume, raw == 6 && to == 7);
            prop_assert_eq!(
                t.discard_resume_and_reset,
                (raw == 6 || raw == 7) && (to == 8 || to == 9)
            );
            state = next;
            raw = to;

            prop_assert_eq!(held.encoder, doc_saving(raw));
            prop_assert_eq!(held.decoder, raw == 6);
            prop_assert_eq!(held.logging, doc_saving(raw));
            prop_assert_eq!(held.quiesced, !doc_running(raw));
            prop_assert_eq!(state.is_running(), doc_running(raw));
            prop_assert_eq!(state.allows(Action::GetPending), doc_saving(raw));
            prop_assert_eq!(state.allows(Action::DirtyQuery), doc_saving(raw));
            prop_assert_eq!(state.allows(Action::GetBuffer), raw == 3 || raw == 4);
            prop_assert_eq!(state.allows(Action::SetBuffer), raw == 6);
        }
    }
}
