// SPDX-License-Identifier: GPL-2.0

//! Property test of the guest dirty log against a naive model, a set of
//! page numbers: random marks (anywhere in the 64-bit page space, across
//! chunk boundaries, wrapping at the top), queries (which report and clear,
//! a word of the output at a time, from starts aligned to a word or not)
//! and clears, with a bound and a store small enough to overflow. The
//! chunks a report empties are kept, but a mark that needs room drops them
//! first: the log overflows exactly when the pages dirty at once need more
//! chunks than the bound (or the store) allows. Once a mark cannot be
//! stored, the log holds no chunk and reports every page of every query
//! until it is cleared.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::dirty_log::tests::{pages_of, report_words, MapStore};
use crate::dirty_log::{DirtyLog, CHUNK_PAGES};

/// The model: dirty pages, and whether a mark was lost.
#[derive(Default)]
struct Model {
    pages: BTreeSet<u64>,
    overflowed: bool,
}

impl Model {
    fn chunks(&self) -> usize {
        let mut c: Vec<u64> = self.pages.iter().map(|p| p / CHUNK_PAGES).collect();
        c.dedup();
        c.len()
    }

    fn mark(&mut self, first: u64, count: u64, cap: usize) {
        let Some(end) = first.checked_add(count) else {
            self.overflowed = true;
            return;
        };
        self.pages.extend(first..end);
        if self.chunks() > cap {
            self.overflowed = true;
        }
    }

    fn report(&mut self, start: u64, pages: u64) -> Vec<u64> {
        let end = start.saturating_add(pages);
        if self.overflowed {
            return (0..end - start).collect();
        }
        let hit: Vec<u64> = self.pages.range(start..end).copied().collect();
        for p in &hit {
            self.pages.remove(p);
        }
        hit.into_iter().map(|p| p - start).collect()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Mark(u64, u64),
    Report(u64, u64),
    Clear,
}

/// Pages in a few clusters: low memory, chunk edges, far away, the top.
fn page() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..4 * CHUNK_PAGES,
        2 => (0u64..64, -3i64..3).prop_map(|(c, d)| (c * CHUNK_PAGES).wrapping_add_signed(d)),
        1 => any::<u64>().prop_map(|p| (p >> 12) & !(CHUNK_PAGES - 1)),
        1 => (0u64..2 * CHUNK_PAGES).prop_map(|d| u64::MAX - d),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (page(), prop_oneof![0u64..4, 0u64..1100]).prop_map(|(p, n)| Op::Mark(p, n)),
        3 => (
            prop_oneof![
                4 => page(),
                // Starts at a multiple of 64 pages (one output word per log
                // word) as often as anywhere else.
                4 => page().prop_map(|p| p & !63),
                1 => page().prop_map(|p| p.saturating_sub(0x4_0000)),
            ],
            prop_oneof![16 => 0u64..2000, 1 => Just(0x2_0000u64)],
        )
            .prop_map(|(s, n)| Op::Report(s, n)),
        1 => Just(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn dirty_log_equals_a_set(
        limit in 1usize..12,
        store_cap in prop_oneof![Just(usize::MAX), 1usize..12],
        ops in prop::collection::vec(op(), 0..60),
    ) {
        let cap = limit.min(store_cap);
        let mut log = DirtyLog::new(MapStore(Default::default(), store_cap), limit);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Mark(first, count) => {
                    log.mark(first, count);
                    model.mark(first, count, cap);
                }
                Op::Report(start, pages) => {
                    let got = pages_of(&report_words(&mut log, start, pages));
                    prop_assert_eq!(got, model.report(start, pages), "report {}+{}", start, pages);
                }
                Op::Clear => {
                    log.clear();
                    model = Model::default();
                }
            }
            prop_assert_eq!(log.overflowed(), model.overflowed);
            if model.overflowed {
                prop_assert_eq!(log.chunks(), 0);
            } else {
                prop_assert_eq!(log.count(), model.pages.len() as u64);
                prop_assert_eq!(log.dirty_chunks(), model.chunks());
                // Emptied chunks are kept, within the bound.
                prop_assert!(log.chunks() <= cap);
            }
        }
    }
}
