//! Property tests: the line parser and start-up never panic on arbitrary bytes, a changed line
//! never verifies, and a log that opens always verifies afterwards.

mod common;

use common::{Ev, note, options};
use conductor_audit::{
    AuditError, AuditLog, AuditOptions, GENESIS_PREV, line_hash, parse_line, verify_dir,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// `n` valid lines as the writer lays them out, each ending in `\n`.
fn valid_log(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = GENESIS_PREV.to_string();
    for seq in 1..=n {
        let event = serde_json::to_string(&note(seq)).unwrap();
        let body = format!(
            "{{\"seq\":{seq},\"ts_ms\":{seq},\"prev\":\"{prev}\",{}",
            &event[1..event.len() - 1]
        );
        let hash = line_hash(body.as_bytes());
        out.extend_from_slice(format!("{body},\"hash\":\"{hash}\"}}\n").as_bytes());
        prev = hash;
    }
    out
}

/// A file's content: arbitrary bytes, or a valid log cut short, with a byte changed, or followed
/// by garbage.
fn file_content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..600),
        (
            0..6u64,
            any::<Index>(),
            proptest::option::of((any::<Index>(), any::<u8>())),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(n, cut, flip, garbage)| {
                let mut bytes = valid_log(n);
                if let Some((at, byte)) = flip.filter(|_| !bytes.is_empty()) {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                if !garbage.is_empty() {
                    bytes.extend_from_slice(&garbage);
                } else if !bytes.is_empty() {
                    bytes.truncate(cut.index(bytes.len() + 1));
                }
                bytes
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn parse_line_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_line(&bytes);
    }

    #[test]
    fn a_changed_byte_never_verifies(at in any::<Index>(), byte in any::<u8>()) {
        let original = valid_log(1);
        let mut line = original.clone();
        let at = at.index(line.len() - 1);
        line[at] = byte;
        prop_assume!(line != original);
        if let Ok(header) = parse_line(&line) {
            prop_assert_ne!(line_hash(&line[..header.body_end]), header.hash);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn open_never_panics_and_a_log_that_opens_verifies(content in file_content(), recover in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("audit-00000000000000000001.jsonl"), &content).unwrap();
        let _ = verify_dir(dir.path()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let opened = AuditLog::<Ev>::open(AuditOptions { recover, ..options(dir.path()) }, |_| {}).await;
            match opened {
                Ok((log, report)) => {
                    let next = log.append(note(0)).await.unwrap();
                    prop_assert_eq!(next.seq, report.last_seq + 1);
                    log.close().await;
                    let verified = verify_dir(dir.path()).unwrap();
                    prop_assert!(verified.ok && verified.torn_last_line.is_none(), "{:?}", verified);
                }
                Err(AuditError::Broken(_)) => prop_assert!(!recover),
                Err(other) => prop_assert!(false, "unexpected error: {}", other),
            }
            Ok(())
        })?;
    }
}
