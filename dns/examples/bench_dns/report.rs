//! Results: one [`Record`] per measured case (Skiff's figure, Knot's, the
//! ratio and its target), printed as a table and written as JSON with
//! every probe behind it, so runs can be compared over time.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// One measured case: Skiff ÷ Knot.
#[derive(Clone, Debug)]
pub struct Record {
    /// `qps` or `qps_per_core`.
    pub case: &'static str,
    /// What is compared, for people.
    pub what: String,
    pub skiff: f64,
    pub knot: f64,
    pub unit: &'static str,
    /// The ratio should be at least this.
    pub target: Option<f64>,
    /// Caveats that change how to read the figures.
    pub notes: Vec<String>,
    /// Everything measured, for the JSON file.
    pub raw: Value,
}

impl Record {
    pub fn ratio(&self) -> Option<f64> {
        (self.knot > 0.0).then(|| self.skiff / self.knot)
    }

    pub fn met(&self) -> Option<bool> {
        Some(self.ratio()? >= self.target?)
    }

    fn json(&self) -> Value {
        json!({
            "case": self.case,
            "what": self.what,
            "skiff": { "value": self.skiff, "unit": self.unit },
            "knot": { "value": self.knot, "unit": self.unit },
            "ratio": self.ratio(),
            "target": self.target.map(|t| json!({ "at_least": t })),
            "met": self.met(),
            "notes": self.notes,
            "raw": self.raw,
        })
    }
}

/// Everything a run produced.
#[derive(Default)]
pub struct Report {
    pub records: Vec<Record>,
}

const HEADER: &str = "case          what                                              skiff          knot    ratio  target  met";

fn row(r: &Record) -> String {
    let ratio = r
        .ratio()
        .map_or_else(|| "-".to_owned(), |x| format!("{x:.3}"));
    let target = r.target.map_or_else(String::new, |t| format!("≥ {t}"));
    let met = match r.met() {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "",
    };
    format!(
        "{:<13} {:<46} {:>9.0} {:<3} {:>9.0} {:>8} {:>7}  {met}",
        r.case, r.what, r.skiff, r.unit, r.knot, ratio, target
    )
}

impl Report {
    /// The table, with each record's notes under it.
    pub fn table(&self) -> String {
        let mut out = format!("{HEADER}\n");
        for r in &self.records {
            out.push_str(&row(r));
            out.push('\n');
            for n in &r.notes {
                out.push_str(&format!("    note: {n}\n"));
            }
        }
        out
    }

    pub fn print(&self) {
        println!("\n{}", self.table());
    }

    /// Writes `{bench, meta, records, error}` to `path` (directories created).
    pub fn write_json(&self, path: &Path, meta: Value, error: Option<String>) -> Result<()> {
        let doc = json!({
            "bench": "dns",
            "meta": meta,
            "records": self.records.iter().map(Record::json).collect::<Vec<_>>(),
            "error": error,
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&doc).context("encoding results")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(skiff: f64, knot: f64) -> Record {
        Record {
            case: "qps",
            what: "test".into(),
            skiff,
            knot,
            unit: "q/s",
            target: Some(0.5),
            notes: vec!["a caveat".into()],
            raw: json!({ "probes": [] }),
        }
    }

    #[test]
    fn ratio_target_and_table() {
        assert_eq!(record(30.0, 60.0).met(), Some(true));
        assert_eq!(record(29.0, 60.0).met(), Some(false));
        assert_eq!(record(1.0, 0.0).ratio(), None, "no ratio over nothing");
        let report = Report {
            records: vec![record(30_000.0, 60_000.0)],
        };
        let table = report.table();
        assert!(table.contains("0.500"), "{table}");
        assert!(table.contains("yes"), "{table}");
        assert!(table.contains("note: a caveat"), "{table}");
    }

    #[test]
    fn json_file_has_one_object_per_case() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sub/dns.json");
        let report = Report {
            records: vec![record(30.0, 60.0), record(10.0, 60.0)],
        };
        report
            .write_json(&path, json!({ "quick": true }), None)
            .expect("written");
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(doc["records"].as_array().expect("records").len(), 2);
        assert_eq!(doc["records"][0]["ratio"], json!(0.5));
        assert_eq!(doc["records"][1]["met"], json!(false));
        assert_eq!(doc["error"], Value::Null);
    }
}
