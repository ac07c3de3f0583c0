//! Fuzzing what `fuzz.rs` does not: lines that look almost right (the writer's layout with fields of
//! the wrong type, reordered, duplicated or cut), and the readers that start-up, queries and `Watch`
//! use on a damaged directory (`verify_dir`, `read_from` from any seq), at 10,000 cases each. Nothing
//! may panic; a directory that verifies reads back every record.

mod common;

use common::{Ev, note};
use conductor_audit::{GENESIS_PREV, line_hash, parse_line, read_from, verify_dir};
use proptest::prelude::*;
use proptest::sample::{Index, select};

const CASES: u32 = 10_000;

/// `n` valid lines as the writer lays them out, starting at `first`, with their seqs.
fn valid_lines(first: u64, n: u64) -> Vec<String> {
    let mut prev = GENESIS_PREV.to_string();
    (first..first + n)
        .map(|seq| {
            let event = serde_json::to_string(&note(seq)).expect("event");
            let body = format!(
                "{{\"seq\":{seq},\"ts_ms\":{seq},\"prev\":\"{prev}\",{}",
                &event[1..event.len() - 1]
            );
            let hash = line_hash(body.as_bytes());
            prev = hash.clone();
            format!("{body},\"hash\":\"{hash}\"}}")
        })
        .collect()
}

/// A line in the writer's layout whose chain fields may be of the wrong type or shape.
fn near_valid_line() -> impl Strategy<Value = String> {
    let hex = "0".repeat(64);
    let number = select(vec![
        "1",
        "0",
        "-1",
        "18446744073709551615",
        "18446744073709551616",
        "1e3",
        "1.5",
        "\"1\"",
        "null",
        "[]",
        "",
    ]);
    let digest = select(vec![
        format!("\"{hex}\""),
        format!("\"{}\"", "A".repeat(64)),
        format!("\"{}\"", "0".repeat(63)),
        format!("\"{}é\"", "0".repeat(62)),
        "\"\"".to_owned(),
        "null".to_owned(),
        "7".to_owned(),
        format!("\"{hex}\\u0000\""),
    ]);
    let extra = select(vec![
        "",
        ",\"kind\":\"note\",\"n\":1,\"text\":\"x\"",
        ",\"kind\":\"flag\",\"on\":true",
        ",\"seq\":2",
        ",\"hash\":\"x\"",
        ",\"kind\":\"note\",\"text\":\",\\\"hash\\\":\\\"\"",
        ",\"nested\":{\"hash\":\"00\"}",
    ]);
    (
        number.clone(),
        number,
        digest.clone(),
        extra,
        digest,
        any::<bool>(),
        any::<Index>(),
        any::<bool>(),
    )
        .prop_map(|(seq, ts, prev, extra, hash, newline, cut, do_cut)| {
            let mut line =
                format!("{{\"seq\":{seq},\"ts_ms\":{ts},\"prev\":{prev}{extra},\"hash\":{hash}}}");
            if do_cut {
                let at = cut.index(line.len() + 1);
                let at = (0..=at)
                    .rev()
                    .find(|i| line.is_char_boundary(*i))
                    .unwrap_or(0);
                line.truncate(at);
            }
            if newline {
                line.push('\n');
            }
            line
        })
}

/// A log directory's files: valid lines edited (changed byte, removed or duplicated line, garbage at the
/// end), split over one or two files whose names may disagree with their first seq.
fn damaged_dir() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    (
        1..8u64,
        0..4u8,
        any::<Index>(),
        any::<u8>(),
        any::<Index>(),
        proptest::option::of(select(vec![1u64, 2, 3, 5, 999])),
        proptest::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(|(n, edit, at, byte, split, second_name, garbage)| {
            let mut lines: Vec<Vec<u8>> = valid_lines(1, n)
                .into_iter()
                .map(|l| (l + "\n").into_bytes())
                .collect();
            let i = at.index(lines.len());
            match edit {
                0 => {
                    let line = &mut lines[i];
                    let j = at.index(line.len());
                    line[j] = byte;
                }
                1 => {
                    lines.remove(i);
                }
                2 => {
                    let copy = lines[i].clone();
                    lines.insert(at.index(lines.len() + 1), copy);
                }
                _ => {}
            }
            let mut files = Vec::new();
            match second_name {
                Some(first_seq) if lines.len() > 1 => {
                    let cut = 1 + split.index(lines.len() - 1);
                    files.push((1u64, lines[..cut].concat()));
                    files.push((first_seq.max(2), lines[cut..].concat()));
                }
                _ => files.push((1, lines.concat())),
            }
            if let Some(last) = files.last_mut() {
                last.1.extend_from_slice(&garbage);
            }
            files
                .into_iter()
                .map(|(first, bytes)| (format!("audit-{first:020}.jsonl"), bytes))
                .collect()
        })
}

fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tempdir")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parse_line_never_panics_on_near_valid_lines(line in near_valid_line()) {
        if let Ok(header) = parse_line(line.as_bytes()) {
            // What it accepts has the shape it promises.
            prop_assert_eq!(header.hash.len(), 64);
            prop_assert_eq!(header.prev.len(), 64);
            prop_assert!(header.body_end <= line.len());
        }
    }

    #[test]
    fn verify_and_read_never_panic_on_a_damaged_directory(
        files in damaged_dir(),
        from in select(vec![0u64, 1, 2, 4, 7, u64::MAX]),
    ) {
        let dir = scratch_dir();
        for (name, bytes) in &files {
            std::fs::write(dir.path().join(name), bytes).expect("write");
        }
        let report = verify_dir(dir.path()).expect("readable");
        let read: Vec<_> = read_from::<Ev>(dir.path(), from).expect("readable").collect();
        if report.ok && report.torn_last_line.is_none() && from <= 1 {
            prop_assert_eq!(read.len() as u64, report.records, "a verified log reads back in full");
            prop_assert!(read.iter().all(Result::is_ok));
        }
    }
}
