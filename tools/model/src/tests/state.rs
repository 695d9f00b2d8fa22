// SPDX-License-Identifier: GPL-2.0

//! Tests of the state machine against an independent copy of the SPEC.

use crate::abi::migration::DeviceState;
use crate::state::{plan, plan_raw, Action, Direction, InvalidTransition, StreamPhase, Transition};

/// SPEC section 2, copied literally by raw number: (from, allowed targets).
/// 0 NONE, 1 RUNNING, 2 SETUP, 3 PRECOPY, 4 STOPNCOPY, 5 SAVE_COMPLETED,
/// 6 RESUME, 7 RESUME_COMPLETED, 8 FAILED, 9 CANCELLED.
const SPEC_TABLE: [(u32, &[u32]); 10] = [
    (0, &[1, 6]),
    (1, &[2, 6]),
    (2, &[3, 4, 8, 9]),
    (3, &[4, 8, 9]),
    (4, &[5, 8, 9]),
    (5, &[1, 8, 9]),
    (6, &[7, 8, 9]),
    (7, &[1, 8]),
    (8, &[1, 0, 2, 6]),
    (9, &[1, 0, 2, 6]),
];

fn spec_allows(from: u32, to: u32) -> bool {
    from == to
        || SPEC_TABLE
            .iter()
            .any(|(f, targets)| *f == from && targets.contains(&to))
}

fn st(raw: u32) -> DeviceState {
    DeviceState::from_raw(raw).expect("valid state")
}

#[test]
fn numbering_matches_seed() {
    use DeviceState as S;
    let expected = [
        (S::None, 0),
        (S::Running, 1),
        (S::Setup, 2),
        (S::PreCopy, 3),
        (S::StopNCopy, 4),
        (S::SaveCompleted, 5),
        (S::Resume, 6),
        (S::ResumeCompleted, 7),
        (S::Failed, 8),
        (S::Cancelled, 9),
    ];
    for (s, n) in expected {
        assert_eq!(s as u32, n);
        assert_eq!(s.raw(), n);
        assert_eq!(DeviceState::from_raw(n), Some(s));
    }
    assert_eq!(DeviceState::INITIAL, S::None);
}

#[test]
fn full_matrix_against_spec() {
    let mut allowed = 0;
    for from in 0..10u32 {
        for to in 0..10u32 {
            let want = spec_allows(from, to);
            let got = plan(st(from), st(to));
            assert_eq!(got.is_ok(), want, "{from} -> {to}");
            assert_eq!(st(from).may_go_to(st(to)), want, "{from} -> {to}");
            let raw = plan_raw(st(from), to);
            assert_eq!(raw.is_ok(), want, "raw {from} -> {to}");
            if let Ok((target, t)) = raw {
                assert_eq!(target, st(to));
                assert_eq!(Ok(t), got);
            } else {
                assert_eq!(
                    raw,
                    Err(InvalidTransition::NotAllowed {
                        from: st(from),
                        to: st(to)
                    })
                );
            }
            if want && from != to {
                allowed += 1;
            }
        }
    }
    // 2+2+4+3+3+3+3+2+4+4 pairs besides the ten same-state writes.
    assert_eq!(allowed, 30);
}

#[test]
fn same_state_writes_are_noops() {
    for s in DeviceState::ALL {
        let t = plan(s, s).expect("same state");
        assert!(t.is_noop());
        assert_eq!(plan_raw(s, s.raw()), Ok((s, Transition::NONE)));
    }
}

#[test]
fn values_of_ten_and_more_are_rejected() {
    for raw in [10, 11, 16, 255, 256, 0x8000_0000, u32::MAX - 1, u32::MAX] {
        assert_eq!(DeviceState::from_raw(raw), None);
        for s in DeviceState::ALL {
            assert_eq!(plan_raw(s, raw), Err(InvalidTransition::UnknownState(raw)));
        }
    }
}

#[test]
fn running_states_per_spec() {
    // "It works in NONE, RUNNING, SETUP and PRECOPY, and is quiesced in
    // STOPNCOPY, SAVE_COMPLETED, RESUME and RESUME_COMPLETED." FAILED and
    // CANCELLED run (the device runs again / power-on state).
    let running = [0, 1, 2, 3, 8, 9];
    for s in DeviceState::ALL {
        assert_eq!(s.is_running(), running.contains(&s.raw()), "{s:?}");
        assert_eq!(s.properties().running, s.is_running());
    }
}

#[test]
fn actions_per_spec() {
    let cases: [(Action, &[u32]); 4] = [
        (Action::GetPending, &[2, 3, 4]),
        (Action::GetBuffer, &[3, 4]),
        (Action::SetBuffer, &[6]),
        (Action::DirtyQuery, &[2, 3, 4]),
    ];
    for (action, valid) in cases {
        for s in DeviceState::ALL {
            assert_eq!(
                s.allows(action),
                valid.contains(&s.raw()),
                "{action:?} in {s:?}"
            );
        }
    }
}

#[test]
fn logging_runs_from_setup_while_saving() {
    for s in DeviceState::ALL {
        assert_eq!(s.properties().logging, matches!(s.raw(), 2..=4), "{s:?}");
    }
}

#[test]
fn properties_are_distinct_where_behaviour_differs() {
    use DeviceState as S;
    // States with equal properties must behave the same everywhere: only
    // NONE/RUNNING and FAILED/CANCELLED share properties.
    for a in DeviceState::ALL {
        for b in DeviceState::ALL {
            if a != b && a.properties() == b.properties() {
                let pair = (a, b);
                assert!(
                    matches!(
                        pair,
                        (S::None, S::Running)
                            | (S::Running, S::None)
                            | (S::Failed, S::Cancelled)
                            | (S::Cancelled, S::Failed)
                    ),
                    "{a:?} {b:?}"
                );
            }
        }
    }
    assert_eq!(S::Setup.properties().direction, Direction::Save);
    assert_eq!(S::Setup.properties().stream, StreamPhase::Prepared);
    assert_eq!(S::Resume.properties().direction, Direction::Resume);
    assert!(S::Failed.properties().rollback);
    assert!(!S::Running.properties().rollback);
}

/// The expected effects of every allowed transition, written out by hand.
#[test]
fn effects_of_each_allowed_transition() {
    use DeviceState as S;
    #[derive(Default)]
    struct E {
        quiesce: bool,
        unquiesce: bool,
        start_logging: bool,
        stop_logging: bool,
        start_save: bool,
        end_save: bool,
        start_resume: bool,
        commit_resume: bool,
        discard: bool,
        restore: bool,
    }
    fn t(e: E) -> Transition {
        Transition {
            quiesce: e.quiesce,
            unquiesce: e.unquiesce,
            start_logging: e.start_logging,
            stop_logging: e.stop_logging,
            start_save: e.start_save,
            end_save: e.end_save,
            start_resume: e.start_resume,
            commit_resume: e.commit_resume,
            discard_resume_and_reset: e.discard,
            restore_running: e.restore,
        }
    }
    let setup_save = || E {
        start_logging: true,
        start_save: true,
        ..E::default()
    };
    let start_resume = || E {
        quiesce: true,
        start_resume: true,
        ..E::default()
    };
    // Leaving a running save (SETUP/PRECOPY) for FAILED/CANCELLED.
    let abort_running_save = || E {
        stop_logging: true,
        end_save: true,
        restore: true,
        ..E::default()
    };
    let abort_stopped_save = || E {
        stop_logging: true,
        end_save: true,
        restore: true,
        unquiesce: true,
        ..E::default()
    };
    let after_save = || E {
        unquiesce: true,
        restore: true,
        ..E::default()
    };
    let abort_resume = || E {
        unquiesce: true,
        discard: true,
        ..E::default()
    };
    let expected: Vec<(S, S, Transition)> = vec![
        (S::None, S::Running, t(E::default())),
        (S::None, S::Resume, t(start_resume())),
        (S::Running, S::Setup, t(setup_save())),
        (S::Running, S::Resume, t(start_resume())),
        (S::Setup, S::PreCopy, t(E::default())),
        (
            S::Setup,
            S::StopNCopy,
            t(E {
                quiesce: true,
                ..E::default()
            }),
        ),
        (S::Setup, S::Failed, t(abort_running_save())),
        (S::Setup, S::Cancelled, t(abort_running_save())),
        (
            S::PreCopy,
            S::StopNCopy,
            t(E {
                quiesce: true,
                ..E::default()
            }),
        ),
        (S::PreCopy, S::Failed, t(abort_running_save())),
        (S::PreCopy, S::Cancelled, t(abort_running_save())),
        (
            S::StopNCopy,
            S::SaveCompleted,
            t(E {
                stop_logging: true,
                end_save: true,
                ..E::default()
            }),
        ),
        (S::StopNCopy, S::Failed, t(abort_stopped_save())),
        (S::StopNCopy, S::Cancelled, t(abort_stopped_save())),
        (S::SaveCompleted, S::Running, t(after_save())),
        (S::SaveCompleted, S::Failed, t(after_save())),
        (S::SaveCompleted, S::Cancelled, t(after_save())),
        (
            S::Resume,
            S::ResumeCompleted,
            t(E {
                commit_resume: true,
                ..E::default()
            }),
        ),
        (S::Resume, S::Failed, t(abort_resume())),
        (S::Resume, S::Cancelled, t(abort_resume())),
        (
            S::ResumeCompleted,
            S::Running,
            t(E {
                unquiesce: true,
                ..E::default()
            }),
        ),
        (S::ResumeCompleted, S::Failed, t(abort_resume())),
        (S::Failed, S::Running, t(E::default())),
        (S::Failed, S::None, t(E::default())),
        (S::Failed, S::Setup, t(setup_save())),
        (S::Failed, S::Resume, t(start_resume())),
        (S::Cancelled, S::Running, t(E::default())),
        (S::Cancelled, S::None, t(E::default())),
        (S::Cancelled, S::Setup, t(setup_save())),
        (S::Cancelled, S::Resume, t(start_resume())),
    ];
    assert_eq!(expected.len(), 30);
    for (from, to, want) in &expected {
        assert_eq!(plan(*from, *to), Ok(*want), "{from:?} -> {to:?}");
    }
    // And every allowed pair is in the list.
    for from in DeviceState::ALL {
        for to in DeviceState::ALL {
            if from != to && from.may_go_to(to) {
                assert!(
                    expected.iter().any(|(f, t, _)| *f == from && *t == to),
                    "{from:?} -> {to:?} missing"
                );
            }
        }
    }
}

/// Walks every path of up to five writes and checks invariants of the
/// derived effects: the running/logging/save/resume status tracked from the
/// effects alone always equals the current state's properties.
#[test]
fn effects_track_properties_along_paths() {
    fn walk(state: DeviceState, depth: usize, running: bool, logging: bool, save: bool, res: bool) {
        let p = state.properties();
        assert_eq!(running, p.running);
        assert_eq!(logging, p.logging);
        assert_eq!(save, state.allows(Action::GetPending));
        assert_eq!(res, state.allows(Action::SetBuffer));
        if depth == 0 {
            return;
        }
        for raw in 0..12u32 {
            match plan_raw(state, raw) {
                Ok((next, t)) => {
                    assert!(!(t.quiesce && t.unquiesce));
                    assert!(!(t.start_logging && t.stop_logging));
                    assert!(!(t.start_save && t.end_save));
                    assert!(!(t.start_resume && (t.commit_resume || t.discard_resume_and_reset)));
                    // Effects only change what is there to change.
                    assert!(!t.quiesce || running);
                    assert!(!t.unquiesce || !running);
                    assert!(!t.start_save || !save);
                    assert!(!t.end_save || save);
                    assert!(!t.commit_resume || res);
                    let running = (running && !t.quiesce) || t.unquiesce;
                    let logging = (logging && !t.stop_logging) || t.start_logging;
                    let save = (save && !t.end_save) || t.start_save;
                    let res =
                        (res && !t.commit_resume && !t.discard_resume_and_reset) || t.start_resume;
                    walk(next, depth - 1, running, logging, save, res);
                }
                Err(InvalidTransition::UnknownState(r)) => assert!(r >= 10),
                Err(InvalidTransition::NotAllowed { from, to }) => {
                    assert_eq!(from, state);
                    assert!(!spec_allows(from.raw(), to.raw()));
                }
            }
        }
    }
    walk(DeviceState::INITIAL, 5, true, false, false, false);
}
