// SPDX-License-Identifier: GPL-2.0
//! The suite's output: `ok NAME`, `FAIL NAME: why` (more lines of the
//! reason as `  | ...`) and `# ...` notes, with counts.

use anyhow::Result;

#[derive(Default)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
}

impl Report {
    /// Records a check's outcome; returns whether it passed.
    pub fn check(&mut self, name: &str, outcome: Result<()>) -> bool {
        match outcome {
            Ok(()) => {
                println!("ok {name}");
                self.passed += 1;
                true
            }
            Err(e) => {
                self.fail(name, &e);
                false
            }
        }
    }

    pub fn fail(&mut self, name: &str, why: &anyhow::Error) {
        let why = format!("{why:#}");
        let mut lines = why.lines();
        println!("FAIL {name}: {}", lines.next().unwrap_or(""));
        for l in lines {
            println!("  | {l}");
        }
        self.failed += 1;
    }

    /// A line of figures or context, not counted.
    pub fn note(&self, line: &str) {
        println!("# {line}");
    }

    /// Lines of a log under a failure.
    pub fn quote(&self, title: &str, log: &str, last: usize) {
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        println!("  | {title}:");
        for l in &lines[lines.len().saturating_sub(last)..] {
            println!("  |   {l}");
        }
    }
}
