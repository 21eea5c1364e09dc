//! Results: one [`Record`] per measured case, printed as a table row as it
//! is measured and again in a summary, and written as JSON so runs can be
//! compared over time.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// A measured figure with its unit.
#[derive(Clone, Debug)]
pub struct Figure {
    pub value: f64,
    pub unit: &'static str,
}

impl Figure {
    pub fn new(value: f64, unit: &'static str) -> Figure {
        Figure { value, unit }
    }

    fn show(&self) -> String {
        let v = self.value;
        let digits = if v.abs() >= 100.0 {
            0
        } else if v.abs() >= 10.0 {
            1
        } else if v.abs() >= 1.0 {
            2
        } else {
            4
        };
        format!("{v:.digits$} {}", self.unit)
    }
}

/// A bound a figure should stay within.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn met(self, v: f64) -> bool {
        match self {
            Target::AtLeast(t) => v >= t,
            Target::AtMost(t) => v <= t,
        }
    }

    fn show(self, unit: &str) -> String {
        let (op, t) = match self {
            Target::AtLeast(t) => ("≥", t),
            Target::AtMost(t) => ("≤", t),
        };
        if unit.is_empty() {
            format!("{op} {t}")
        } else {
            format!("{op} {t} {unit}")
        }
    }
}

/// One measured case. With `b`, `ratio` is `a ÷ b` and the target (if
/// any) bounds the ratio; without, the target bounds `a` itself.
#[derive(Clone, Debug)]
pub struct Record {
    /// `conn_rate`, `latency_scale` or `program`.
    pub case: &'static str,
    /// `ebpf`, `iptables` or `ebpf/iptables`.
    pub dataplane: String,
    /// What is compared, for people.
    pub what: String,
    pub a: Figure,
    pub b: Option<Figure>,
    pub target: Option<Target>,
    /// Everything measured, for the JSON file.
    pub raw: Value,
}

impl Record {
    pub fn ratio(&self) -> Option<f64> {
        self.b.as_ref().map(|b| self.a.value / b.value)
    }

    /// Whether the target is met; `None` without a target.
    pub fn met(&self) -> Option<bool> {
        let t = self.target?;
        Some(t.met(self.ratio().unwrap_or(self.a.value)))
    }

    fn json(&self) -> Value {
        json!({
            "case": self.case,
            "dataplane": self.dataplane,
            "what": self.what,
            "a": { "value": self.a.value, "unit": self.a.unit },
            "b": self.b.as_ref().map(|b| json!({ "value": b.value, "unit": b.unit })),
            "ratio": self.ratio(),
            "target": self.target.map(|t| match t {
                Target::AtLeast(v) => json!({ "at_least": v }),
                Target::AtMost(v) => json!({ "at_most": v }),
            }),
            "met": self.met(),
            "raw": self.raw,
        })
    }
}

/// A case that was not measured, and why.
#[derive(Clone, Debug)]
pub struct Skipped {
    pub case: &'static str,
    pub dataplane: String,
    pub what: String,
    pub why: String,
}

/// Everything a run produced.
#[derive(Default)]
pub struct Report {
    pub records: Vec<Record>,
    pub skipped: Vec<Skipped>,
}

fn header() -> String {
    format!(
        "{:<14} {:<14} {:<50} {:>15} {:>15} {:>9}   {:<12} met",
        "case", "dataplane", "what", "A", "B", "ratio", "target"
    )
}

fn row(r: &Record) -> String {
    let b = r.b.as_ref().map_or_else(String::new, Figure::show);
    let ratio = r.ratio().map_or_else(String::new, |x| format!("{x:.3}"));
    let unit = if r.b.is_some() { "" } else { r.a.unit };
    let target = r.target.map_or_else(String::new, |t| t.show(unit));
    let met = match r.met() {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "",
    };
    format!(
        "{:<14} {:<14} {:<50} {:>15} {:>15} {:>9}   {:<12} {met}",
        r.case,
        r.dataplane,
        r.what,
        r.a.show(),
        b,
        ratio,
        target
    )
}

impl Report {
    /// Adds a record and prints its row at once (progress).
    pub fn add(&mut self, record: Record) {
        eprintln!("    = {}", row(&record));
        self.records.push(record);
    }

    /// Notes a case left out and prints why.
    pub fn skip(&mut self, skipped: Skipped) {
        eprintln!(
            "    - skipped {} {} {}: {}",
            skipped.case, skipped.dataplane, skipped.what, skipped.why
        );
        self.skipped.push(skipped);
    }

    /// The summary table on stdout.
    pub fn print(&self) {
        println!();
        let header = header();
        println!("{header}");
        println!("{}", "-".repeat(header.chars().count()));
        for r in &self.records {
            println!("{}", row(r));
        }
        for s in &self.skipped {
            println!(
                "{:<14} {:<14} {:<50} skipped: {}",
                s.case, s.dataplane, s.what, s.why
            );
        }
        let with_target: Vec<&Record> =
            self.records.iter().filter(|r| r.target.is_some()).collect();
        let met = with_target.iter().filter(|r| r.met() == Some(true)).count();
        println!(
            "\n{met} of {} targets met (A ÷ B unless B is empty; targets bound the ratio, or A itself)",
            with_target.len()
        );
    }

    /// Writes the JSON document to `path` (creating its directory).
    pub fn write_json(&self, path: &Path, meta: Value, error: Option<String>) -> Result<()> {
        let doc = json!({
            "bench": "dataplane",
            "schema": 1,
            "meta": meta,
            "error": error,
            "cases": self.records.iter().map(Record::json).collect::<Vec<_>>(),
            "skipped": self.skipped.iter().map(|s| json!({
                "case": s.case,
                "dataplane": s.dataplane,
                "what": s.what,
                "why": s.why,
            })).collect::<Vec<_>>(),
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(a: f64, b: Option<f64>, target: Option<Target>) -> Record {
        Record {
            case: "t",
            dataplane: "x".into(),
            what: "w".into(),
            a: Figure::new(a, "s"),
            b: b.map(|b| Figure::new(b, "s")),
            target,
            raw: Value::Null,
        }
    }

    #[test]
    fn targets_bound_the_ratio_or_the_figure() {
        assert_eq!(
            rec(96.0, Some(100.0), Some(Target::AtLeast(0.95))).met(),
            Some(true)
        );
        assert_eq!(
            rec(94.0, Some(100.0), Some(Target::AtLeast(0.95))).met(),
            Some(false)
        );
        assert_eq!(rec(0.4, None, Some(Target::AtMost(0.5))).met(), Some(true));
        assert_eq!(rec(0.6, None, Some(Target::AtMost(0.5))).met(), Some(false));
        assert_eq!(rec(1.0, Some(2.0), None).met(), None);
        assert_eq!(rec(1.0, Some(2.0), None).ratio(), Some(0.5));
    }

    #[test]
    fn json_has_raw_figures_and_ratio() {
        let mut report = Report::default();
        report
            .records
            .push(rec(1.0, Some(4.0), Some(Target::AtMost(1.05))));
        let dir = std::env::temp_dir().join(format!("bench-json-{}", std::process::id()));
        let path = dir.join("out.json");
        report
            .write_json(&path, json!({"quick": true}), None)
            .expect("write");
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        let case = &doc["cases"][0];
        assert_eq!(case["ratio"], json!(0.25));
        assert_eq!(case["met"], json!(true));
        assert_eq!(case["a"]["value"], json!(1.0));
        assert_eq!(doc["meta"]["quick"], json!(true));
    }
}
