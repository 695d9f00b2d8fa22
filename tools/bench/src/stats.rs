// SPDX-License-Identifier: GPL-2.0
//! Medians, ratios and the plain-text tables the benchmarks print.

use std::fmt::Write as _;
use std::time::Duration;

/// The median of `v` (the mean of the two middle values for an even
/// count); `None` for an empty slice.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

/// The smallest and largest of `v` (`(NaN, NaN)` for an empty slice).
pub fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::NAN, f64::NAN), |(lo, hi), &x| {
        (
            if lo.is_nan() { x } else { lo.min(x) },
            if hi.is_nan() { x } else { hi.max(x) },
        )
    })
}

/// Median of durations, in microseconds.
pub fn median_us(v: &[Duration]) -> f64 {
    let us: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    median(&us).unwrap_or(f64::NAN)
}

/// `a / b`, formatted as `1.23x` (`-` when `b` is 0 or either is NaN).
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() || b == 0.0 {
        "-".into()
    } else {
        format!("{:.2}x", a / b)
    }
}

/// A number with a sensible precision for a table cell.
pub fn num(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Bytes in binary units for labels (`64 MiB`, `4 GiB`, `4 KiB`).
pub fn bytes_label(b: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if b >= unit && b.is_multiple_of(unit) {
            return format!("{} {name}", b / unit);
        }
    }
    format!("{b} B")
}

/// A table: a title, column headers, rows and notes printed under it.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Self {
        Table {
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    /// The table as text: the first column left-aligned, the others
    /// right-aligned, a rule under the headers, then the notes.
    pub fn render(&self) -> String {
        let ncol = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut width = vec![0usize; ncol];
        for r in self.rows.iter().chain([&self.headers]) {
            for (i, c) in r.iter().enumerate() {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("  ");
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map_or("", String::as_str);
                if i == 0 {
                    let _ = write!(s, "{c:<w$}");
                } else {
                    let _ = write!(s, "  {c:>w$}");
                }
            }
            s.trim_end().to_string()
        };
        let mut out = format!("== {}\n", self.title);
        out += &line(&self.headers);
        out.push('\n');
        let total: usize = width.iter().sum::<usize>() + 2 * ncol.saturating_sub(1);
        out += &format!("  {}\n", "-".repeat(total));
        for r in &self.rows {
            out += &line(r);
            out.push('\n');
        }
        for n in &self.notes {
            out += &format!("  * {n}\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(min_max(&[2.0, 7.0, -1.0]), (-1.0, 7.0));
        assert!(min_max(&[]).0.is_nan());
        let d = [
            Duration::from_micros(30),
            Duration::from_micros(10),
            Duration::from_micros(20),
        ];
        assert!((median_us(&d) - 20.0).abs() < 1e-9);
    }

    #[test]
    fn formatting() {
        assert_eq!(ratio(3.0, 2.0), "1.50x");
        assert_eq!(ratio(3.0, 0.0), "-");
        assert_eq!(ratio(f64::NAN, 1.0), "-");
        assert_eq!(num(1234.56), "1235");
        assert_eq!(num(123.456), "123.5");
        assert_eq!(num(1.2345), "1.23");
        assert_eq!(bytes_label(64 << 20), "64 MiB");
        assert_eq!(bytes_label(4 << 30), "4 GiB");
        assert_eq!(bytes_label(4096), "4 KiB");
        assert_eq!(bytes_label(100), "100 B");
    }

    #[test]
    fn table_render() {
        let mut t = Table::new("T", &["case", "time"]);
        t.row(vec!["a".into(), "1.00".into()]);
        t.row(vec!["longer".into(), "10.00".into()]);
        t.note("n");
        let s = t.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "== T");
        assert_eq!(lines[1], "  case     time");
        assert_eq!(lines[2], "  -------------");
        assert_eq!(lines[3], "  a        1.00");
        assert_eq!(lines[4], "  longer  10.00");
        assert_eq!(lines[5], "  * n");
    }
}
