//! The bench's output: one row per figure with its value, its goal (from issue 9) and whether it was
//! met, printed as a table and written as JSON together with the raw per-round details.

use serde::Serialize;
use serde_json::{Map, Value};

/// Whether a figure meets its goal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    /// Context for another figure; no goal of its own.
    Info,
    /// Measured at a reduced scale (`--quick`): the goal is not judged.
    NotJudged,
    /// Not measured in this run, and why.
    Skipped(String),
    /// The measurement failed, and how.
    Failed(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// The figure's number: 1–7 from issue 9's list, 0 from issue 26, 8 from issue 29 (memory per
    /// request size).
    pub section: u8,
    pub name: String,
    pub value: Option<f64>,
    pub unit: String,
    pub goal: String,
    pub verdict: Verdict,
}

/// Every figure of a run, and the raw details behind them.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub machine: Map<String, Value>,
    pub quick: bool,
    pub figures: Vec<Figure>,
    pub details: Map<String, Value>,
}

impl Report {
    /// A figure with a goal: `met` says whether `value` meets it (ignored in quick mode when `scaled`).
    #[allow(clippy::too_many_arguments)]
    pub fn goal(
        &mut self,
        section: u8,
        name: &str,
        value: f64,
        unit: &str,
        goal: String,
        met: bool,
        scaled: bool,
    ) {
        let verdict = if scaled && self.quick {
            Verdict::NotJudged
        } else if met {
            Verdict::Met
        } else {
            Verdict::Missed
        };
        self.figures.push(Figure {
            section,
            name: name.into(),
            value: Some(value),
            unit: unit.into(),
            goal,
            verdict,
        });
    }

    pub fn info(&mut self, section: u8, name: &str, value: f64, unit: &str) {
        self.figures.push(Figure {
            section,
            name: name.into(),
            value: Some(value),
            unit: unit.into(),
            goal: String::new(),
            verdict: Verdict::Info,
        });
    }

    pub fn skipped(&mut self, section: u8, name: &str, goal: &str, why: &str) {
        self.figures.push(Figure {
            section,
            name: name.into(),
            value: None,
            unit: String::new(),
            goal: goal.into(),
            verdict: Verdict::Skipped(why.into()),
        });
    }

    pub fn failed(&mut self, section: u8, name: &str, error: &anyhow::Error) {
        self.figures.push(Figure {
            section,
            name: name.into(),
            value: None,
            unit: String::new(),
            goal: String::new(),
            verdict: Verdict::Failed(format!("{error:#}")),
        });
    }

    pub fn detail(&mut self, key: &str, value: impl Serialize) {
        self.details.insert(
            key.into(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }

    /// The table, as printed and as pasted into `RESULTS.md` (a Markdown table).
    pub fn table(&self) -> String {
        let mut out =
            String::from("| # | figure | value | goal | result |\n|---|---|---|---|---|\n");
        for f in &self.figures {
            let value = f
                .value
                .map(|v| format!("{} {}", format_value(v), f.unit))
                .unwrap_or_else(|| "—".into());
            let verdict = match &f.verdict {
                Verdict::Met => "met".to_owned(),
                Verdict::Missed => "**MISSED**".to_owned(),
                Verdict::Info => String::new(),
                Verdict::NotJudged => "(quick: not judged)".to_owned(),
                Verdict::Skipped(why) => format!("skipped: {why}"),
                Verdict::Failed(e) => format!("FAILED: {}", e.replace('|', "/").replace('\n', " ")),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                f.section,
                f.name,
                value.trim(),
                f.goal,
                verdict
            ));
        }
        out
    }

    pub fn missed(&self) -> Vec<&Figure> {
        self.figures
            .iter()
            .filter(|f| matches!(f.verdict, Verdict::Missed | Verdict::Failed(_)))
            .collect()
    }
}

fn format_value(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        let s = format!("{v:.0}");
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{sign}{grouped}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Machine facts for the report: cores, CPU model, kernel, date.
pub fn machine() -> Map<String, Value> {
    let mut m = Map::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    m.insert(
        "nproc".into(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
            .into(),
    );
    m.insert("cpu".into(), model.into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    m.insert("kernel".into(), kernel.trim().into());
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    m.insert("date".into(), date.unwrap_or_default().into());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_readable() {
        assert_eq!(format_value(21345.6), "21,346");
        assert_eq!(format_value(123456789.0), "123,456,789");
        assert_eq!(format_value(150.2), "150");
        assert_eq!(format_value(42.25), "42.2");
        assert_eq!(format_value(0.1234), "0.123");
    }

    #[test]
    fn quick_runs_do_not_judge_scaled_figures() {
        let mut r = Report {
            quick: true,
            ..Report::default()
        };
        r.goal(6, "start-up", 1.0, "s", "< 1.5 s".into(), true, true);
        r.goal(5, "p99", 1.0, "µs", "< 2 µs".into(), false, false);
        assert_eq!(r.figures[0].verdict, Verdict::NotJudged);
        assert_eq!(r.figures[1].verdict, Verdict::Missed);
        assert!(r.table().contains("MISSED"));
    }
}
