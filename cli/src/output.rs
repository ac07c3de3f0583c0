//! How output looks: colour (only on a terminal, never with `NO_COLOR`), aligned tables, JSON for
//! scripts, and the formatting of times and durations.
//!
//! Commands decide *what* to print; this module decides only how, so `--json` and colour behave the same
//! everywhere.

use crate::cli::{ColorChoice, Global};
use serde_json::Value;
use std::io::IsTerminal;
use std::time::{SystemTime, UNIX_EPOCH};

/// `println!` for everything a command prints on stdout. When the reader has gone (`conductorctl watch
/// --json | head -3`), the command ends quietly with success, as `gh` and `kubectl` do, instead of
/// panicking with exit 101.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout (see [`outln!`]): a closed pipe ends the process with exit 0, any other write
/// failure with exit 1 and the reason on stderr. Nothing of a command is lost by ending here: stdout
/// was its last consumer.
pub fn write_stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the output: {error}");
        std::process::exit(1);
    }
}

/// The output settings of one invocation.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub color: bool,
    pub json: bool,
    /// The terminal's width when stdout is one: tables and summaries fit it instead of wrapping.
    pub width: Option<usize>,
}

/// True when `NO_COLOR` is set to anything but the empty string (no-color.org).
pub fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Out {
    pub fn new(global: &Global) -> Out {
        let color = !no_color_env()
            && match global.color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => std::io::stdout().is_terminal(),
            };
        Out {
            color,
            json: global.json,
            width: terminal_width(),
        }
    }

    /// No colour, no JSON, no width: text for places that add their own styling (the dashboard).
    pub fn plain() -> Out {
        Out {
            color: false,
            json: false,
            width: None,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn ok(&self, text: &str) -> String {
        self.paint("32", text)
    }

    pub fn bad(&self, text: &str) -> String {
        self.paint("31", text)
    }

    pub fn warn(&self, text: &str) -> String {
        self.paint("33", text)
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    /// Colours a state or outcome word by what it means.
    pub fn state(&self, word: &str) -> String {
        match word {
            "completed" | "succeeded" | "allow" | "allowed" | "approved" | "ok" => self.ok(word),
            "failed" | "denied" | "deny" | "cancelled" | "expired" | "interrupted" | "broken" => {
                self.bad(word)
            }
            "waiting approval" | "needs approval" | "needs_approval" | "pending" | "running" => {
                self.warn(word)
            }
            _ => word.to_owned(),
        }
    }
}

/// Prints a JSON value, pretty, on stdout.
pub fn print_json(value: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// Prints a JSON value on one line (for streams of events).
pub fn print_json_line(value: &Value) {
    outln!("{value}");
}

/// The width of the terminal stdout writes to, if it is one.
fn terminal_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    ratatui::crossterm::terminal::size()
        .ok()
        .map(|(columns, _)| usize::from(columns))
        .filter(|&columns| columns > 0)
}

/// Left-aligned columns; `header` is printed bold. On a terminal, columns are narrowed (widest first,
/// cells cut with an ellipsis) so that no row wraps. Cells must not contain colour codes (they would
/// break the alignment): colour whole lines afterwards if needed.
pub fn table(out: &Out, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    if let Some(width) = out.width {
        fit_widths(&mut widths, width);
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let column = widths.get(i).copied().unwrap_or(0);
            let cell = clip(cell, column.max(1));
            text.push_str(&cell);
            if i + 1 < cells.len() {
                let pad = column.saturating_sub(cell.chars().count());
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text.trim_end().to_owned()
    };
    let mut text = out.bold(&line(header.to_vec()));
    for row in rows {
        text.push('\n');
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// Narrows the widest column, one character at a time, until the columns and their two-space gaps
/// fit `width`. The first column (the id people copy) stays whole, and no column goes below six
/// characters (then the row wraps rather than say nothing).
fn fit_widths(widths: &mut [usize], width: usize) {
    const NARROWEST: usize = 6;
    let total =
        |widths: &[usize]| widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
    while total(widths) > width {
        let Some((widest, _)) = widths
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, w)| **w > NARROWEST)
            .max_by_key(|(i, w)| (**w, *i))
        else {
            return;
        };
        widths[widest] -= 1;
    }
}

/// A Unix time in milliseconds as people read it: local time with the zone's offset
/// (`2026-11-30 09:12:03 +01:00`); empty for 0. JSON output keeps the milliseconds.
pub fn time_ms(ms: i64) -> String {
    time_in(ms, &chrono::Local)
}

/// A Unix time in milliseconds as `HH:MM:SS.mmm` local time, for event lines.
pub fn clock_ms(ms: i64) -> String {
    clock_in(ms, &chrono::Local)
}

/// A time for a narrow column (tables at 80 columns): the clock alone today, else the date and the
/// minute; local time, without the zone (`time_ms` says it where there is room).
pub fn short_time_ms(ms: i64) -> String {
    short_time_in(ms, &chrono::Local, now_ms())
}

fn short_time_in<Z: chrono::TimeZone>(ms: i64, zone: &Z, now_ms: i64) -> String
where
    Z::Offset: std::fmt::Display,
{
    let (Some(time), Some(now)) = (
        zone.timestamp_millis_opt(ms).single().filter(|_| ms > 0),
        zone.timestamp_millis_opt(now_ms).single(),
    ) else {
        return String::new();
    };
    if time.date_naive() == now.date_naive() {
        time.format("%H:%M:%S").to_string()
    } else {
        time.format("%Y-%m-%d %H:%M").to_string()
    }
}

fn time_in<Z: chrono::TimeZone>(ms: i64, zone: &Z) -> String
where
    Z::Offset: std::fmt::Display,
{
    if ms <= 0 {
        return String::new();
    }
    match zone.timestamp_millis_opt(ms).single() {
        Some(time) => time.format("%Y-%m-%d %H:%M:%S %:z").to_string(),
        None => ms.to_string(),
    }
}

fn clock_in<Z: chrono::TimeZone>(ms: i64, zone: &Z) -> String
where
    Z::Offset: std::fmt::Display,
{
    match zone.timestamp_millis_opt(ms).single() {
        Some(time) => time.format("%H:%M:%S%.3f").to_string(),
        None => ms.to_string(),
    }
}

/// A duration in microseconds, short: `850µs`, `12.3ms`, `3.2s`, `4m12s`.
pub fn duration_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1_000.0),
        1_000_000..60_000_000 => format!("{:.1}s", us as f64 / 1_000_000.0),
        _ => format!("{}m{:02}s", us / 60_000_000, us / 1_000_000 % 60),
    }
}

pub fn duration_ms(ms: u64) -> String {
    duration_us(ms.saturating_mul(1000))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `--since`/`--until` values: a duration back from now (`90m`, `24h`) or an RFC 3339 time.
pub fn parse_time(text: &str) -> anyhow::Result<i64> {
    let text = text.trim();
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
        return Ok(now_ms().saturating_sub(ago));
    }
    match humantime::parse_rfc3339_weak(text) {
        Ok(time) => Ok(time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        Err(_) => anyhow::bail!(
            "{text:?} is neither a duration (e.g. 30m, 24h) nor a time (e.g. 2026-11-02T09:00:00Z)"
        ),
    }
}

/// Shortens text to `max` characters with an ellipsis.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_us(850), "850µs");
        assert_eq!(duration_us(12_340), "12.3ms");
        assert_eq!(duration_us(3_200_000), "3.2s");
        assert_eq!(duration_us(252_000_000), "4m12s");
    }

    #[test]
    fn times_parse_as_durations_or_dates() {
        let an_hour_ago = parse_time("1h").unwrap();
        assert!((now_ms() - an_hour_ago - 3_600_000).abs() < 5_000);
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert!(parse_time("yesterday-ish").is_err());
    }

    #[test]
    fn times_read_in_local_time_with_the_zone() {
        let zone = chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
        assert_eq!(time_in(1_000, &zone), "1970-01-01 05:30:01 +05:30");
        assert_eq!(clock_in(1_234, &zone), "05:30:01.234");
        assert_eq!(time_in(0, &zone), "");
        let here = chrono::Local::now().format("%:z").to_string();
        assert!(time_ms(now_ms()).ends_with(&here), "{}", time_ms(now_ms()));
    }

    #[test]
    fn tables_align_columns() {
        let out = Out::plain();
        let text = table(&out, &["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(text, "A    BB\nxxx  y");
    }

    #[test]
    fn short_times_fit_a_narrow_column() {
        let zone = chrono::FixedOffset::east_opt(3600).unwrap();
        let now = 1_800_000_000_000; // 2027-01-15 09:00 at +01:00
        assert_eq!(short_time_in(now - 60_000, &zone, now), "08:59:00");
        assert_eq!(
            short_time_in(now - 86_400_000, &zone, now),
            "2027-01-14 09:00"
        );
        assert_eq!(short_time_in(0, &zone, now), "");
    }

    #[test]
    fn tables_fit_the_terminal_width() {
        let out = Out {
            width: Some(80),
            ..Out::plain()
        };
        let long = "a description far longer than what is left of an eighty-column line once the other columns are laid out";
        let rows = vec![
            vec!["validate_data".into(), "validation".into(), long.into()],
            vec!["list_backups".into(), "backup".into(), "short".into()],
        ];
        let text = table(&out, &["TOOL", "SERVER", "DESCRIPTION"], &rows);
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line:?} is wider than 80");
        }
        assert!(text.contains("…"), "{text}");
        assert!(text.contains("short"), "{text}");

        // Wide columns in the middle are narrowed too, not only the last one.
        let rows = vec![vec![
            "wf-1a2b3c4d5e6f".into(),
            "customer_onboarding".into(),
            "waiting approval".into(),
            "2026-11-30 09:12:03 +01:00".into(),
            "a-rather-long-caller-name".into(),
            "ok".into(),
        ]];
        let text = table(
            &out,
            &[
                "WORKFLOW", "TEMPLATE", "STATE", "STARTED", "CALLER", "ERROR",
            ],
            &rows,
        );
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line:?} is wider than 80");
        }
        assert!(
            text.contains("wf-1a2b3c4d5e6f"),
            "the narrow columns stay whole: {text}"
        );
    }
}
