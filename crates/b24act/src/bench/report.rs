//! What a benchmark run found: rows of measured values, each with the design.md §6 target it
//! answers (if any), printed as a table and as JSON.

use std::io::{self, Write};

use serde_json::{Value, json};

use super::measure::Machine;

/// A target from design.md §6.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    pub fn met_by(self, value: f64) -> bool {
        match self {
            Target::AtLeast(bound) => value >= bound,
            Target::AtMost(bound) => value <= bound,
        }
    }

    /// How far `value` is from the target, as a share of it (positive = missed by that much).
    pub fn shortfall(self, value: f64) -> f64 {
        match self {
            Target::AtLeast(bound) if bound > 0.0 => (bound - value) / bound,
            Target::AtMost(bound) if bound > 0.0 => (value - bound) / bound,
            Target::AtLeast(bound) | Target::AtMost(bound) => value - bound,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Target::AtLeast(bound) => format!("≥ {} {unit}", number(bound)),
            Target::AtMost(bound) => format!("≤ {} {unit}", number(bound)),
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Row {
    pub measure: String,
    pub value: f64,
    pub unit: &'static str,
    pub target: Option<Target>,
    /// For a figure taken over a sample (a percentile, a maximum): how many measurements it
    /// had. Over none, `value` is a placeholder and the row has no data.
    pub samples: Option<usize>,
}

impl Row {
    pub fn new(measure: impl Into<String>, value: f64, unit: &'static str) -> Row {
        Row { measure: measure.into(), value, unit, target: None, samples: None }
    }

    pub fn target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self
    }

    /// The figure was taken over `samples` measurements.
    pub fn over(mut self, samples: usize) -> Row {
        self.samples = Some(samples);
        self
    }

    /// False for a figure taken over an empty sample.
    pub fn has_data(&self) -> bool {
        self.samples != Some(0)
    }

    /// The value with its unit, or `–` without data.
    fn measured(&self) -> String {
        if self.has_data() { format!("{} {}", number(self.value), self.unit) } else { "–".into() }
    }

    /// Whether the target is met; `None` without a target or without data.
    fn met(&self) -> Option<bool> {
        self.target.filter(|_| self.has_data()).map(|target| target.met_by(self.value))
    }

    /// `met`, `MISSED by N%`, `no data` (an empty sample meets no target), or empty without a
    /// target.
    pub fn verdict(&self) -> String {
        match self.target {
            None => String::new(),
            Some(_) if !self.has_data() => "no data".to_owned(),
            Some(target) if target.met_by(self.value) => "met".to_owned(),
            Some(target) => match target {
                Target::AtLeast(b) | Target::AtMost(b) if b > 0.0 => {
                    format!("MISSED by {:.0}%", target.shortfall(self.value) * 100.0)
                }
                _ => "MISSED".to_owned(),
            },
        }
    }
}

/// The figures of one scenario, with notes on how they were taken.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    pub name: &'static str,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl ScenarioReport {
    pub fn new(name: &'static str) -> ScenarioReport {
        ScenarioReport { name, rows: Vec::new(), notes: Vec::new() }
    }

    pub fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The value of the row named `measure`, if there is one.
    pub fn value(&self, measure: &str) -> Option<f64> {
        self.rows.iter().find(|row| row.measure == measure).map(|row| row.value)
    }

    pub fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        let rows: Vec<[String; 4]> = self
            .rows
            .iter()
            .map(|row| {
                [
                    row.measure.clone(),
                    row.measured(),
                    row.target.map(|t| t.describe(row.unit)).unwrap_or_default(),
                    row.verdict(),
                ]
            })
            .collect();
        table(out, self.name, &["measure", "value", "target", "verdict"], &rows)?;
        for note in &self.notes {
            writeln!(out, "  · {note}")?;
        }
        Ok(())
    }

    fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let (kind, bound) = match row.target {
                    Some(Target::AtLeast(b)) => (json!("at_least"), json!(b)),
                    Some(Target::AtMost(b)) => (json!("at_most"), json!(b)),
                    None => (Value::Null, Value::Null),
                };
                json!({
                    "measure": row.measure,
                    "value": row.value,
                    "unit": row.unit,
                    "target": kind,
                    "bound": bound,
                    "met": row.met(),
                    "samples": row.samples,
                })
            })
            .collect();
        json!({"name": self.name, "rows": rows, "notes": self.notes})
    }
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub machine: Machine,
    pub scenarios: Vec<ScenarioReport>,
}

impl Report {
    pub fn new(machine: Machine) -> Report {
        Report { machine, scenarios: Vec::new() }
    }

    /// Every row with a target, across scenarios.
    pub fn print_summary(&self, out: &mut dyn Write) -> io::Result<()> {
        let rows: Vec<[String; 4]> = self
            .scenarios
            .iter()
            .flat_map(|scenario| {
                scenario.rows.iter().filter_map(move |row| {
                    let target = row.target?;
                    Some([
                        format!("{}: {}", scenario.name, row.measure),
                        row.measured(),
                        target.describe(row.unit),
                        row.verdict(),
                    ])
                })
            })
            .collect();
        table(out, "targets (design.md §6)", &["figure", "measured", "target", "verdict"], &rows)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "machine": self.machine.to_json(),
            "scenarios": self.scenarios.iter().map(ScenarioReport::to_json).collect::<Vec<_>>(),
        })
    }
}

/// A number as people read it: no decimals from 100 up, two below.
fn number(value: f64) -> String {
    if value.abs() >= 100.0 || value.fract() == 0.0 {
        let rounded = format!("{:.0}", value);
        group_thousands(&rounded)
    } else {
        format!("{value:.2}")
    }
}

fn group_thousands(digits: &str) -> String {
    let (sign, digits) = digits.strip_prefix('-').map_or(("", digits), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}")
}

fn table(
    out: &mut dyn Write,
    title: &str,
    header: &[&str; 4],
    rows: &[[String; 4]],
) -> io::Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    writeln!(out, "{title}")?;
    let line = |cells: [&str; 4]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                let pad = width.saturating_sub(cell.chars().count());
                // Values right-aligned, the rest left-aligned.
                if i == 1 {
                    format!("{}{cell}", " ".repeat(pad))
                } else {
                    format!("{cell}{}", " ".repeat(pad))
                }
            })
            .collect();
        format!("  {}", padded.join(" │ ").trim_end())
    };
    writeln!(out, "{}", line(*header))?;
    let rule: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
    writeln!(out, "  {}", rule.join("─┼─"))?;
    for row in rows {
        writeln!(out, "{}", line([&row[0], &row[1], &row[2], &row[3]]))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(number(12345.6), "12,346");
        assert_eq!(number(1.234), "1.23");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(-1500.0), "-1,500");
    }

    #[test]
    fn a_missed_target_says_by_how_much() {
        let row = Row::new("acks", 8_000.0, "calls/s").target(Target::AtLeast(10_000.0));
        assert_eq!(row.verdict(), "MISSED by 20%");
        let row = Row::new("p99", 3.0, "ms").target(Target::AtMost(2.0));
        assert_eq!(row.verdict(), "MISSED by 50%");
        let row = Row::new("errors", 0.0, "").target(Target::AtMost(0.0));
        assert_eq!(row.verdict(), "met");
        let row = Row::new("errors", 2.0, "").target(Target::AtMost(0.0));
        assert_eq!(row.verdict(), "MISSED");
    }

    #[test]
    fn a_target_over_an_empty_sample_has_no_data_never_met() {
        // No latencies recorded: the p50 reads 0 ms, which would meet any "at most".
        let empty = Row::new("call → result p50", 0.0, "ms").target(Target::AtMost(20.0)).over(0);
        assert_eq!(empty.verdict(), "no data");
        assert_eq!((empty.measured(), empty.met()), ("–".to_owned(), None));
        let measured =
            Row::new("call → result p50", 4.1, "ms").target(Target::AtMost(20.0)).over(30);
        assert_eq!(measured.verdict(), "met");
        assert_eq!((measured.measured(), measured.met()), ("4.10 ms".to_owned(), Some(true)));

        let mut scenario = ScenarioReport::new("e2e");
        scenario.row(empty);
        let json = scenario.to_json();
        assert_eq!(
            (&json["rows"][0]["met"], &json["rows"][0]["samples"]),
            (&Value::Null, &json!(0))
        );
        let mut printed = Vec::new();
        scenario.print(&mut printed).unwrap();
        let printed = String::from_utf8(printed).unwrap();
        assert!(printed.contains("no data") && !printed.contains("met"), "{printed}");
    }
}
