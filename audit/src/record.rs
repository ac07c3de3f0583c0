//! The line format: how an event becomes one hash-chained JSON line, and how a line is read back.
//!
//! `{"seq":N,"ts_ms":T,"prev":"<hex>",<event fields>,"hash":"<hex>"}\n`, where `hash` is the sha256
//! of the line's bytes up to the last `,"hash":"`. Pure functions only, no I/O, so the format can be
//! fuzzed and tested alone. Nothing here may panic on any input.

use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write as _;

/// The `prev` of the first record: 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What precedes the hash on every line; the *last* occurrence is the real one, since an event can
/// contain this text inside a nested object but the writer always appends the hash at the end.
const HASH_MARKER: &[u8] = b",\"hash\":\"";

/// Keys the record itself uses; an event using them would make the line ambiguous.
const RESERVED_KEYS: [&str; 4] = ["seq", "ts_ms", "prev", "hash"];

/// One line of the log: the event with its place in the chain.
///
/// The event's own fields are flattened into the line, so readers of the JSON see one flat object
/// with a `kind` beside `seq` and `ts_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record<E> {
    pub seq: u64,
    /// Milliseconds since the Unix epoch, assigned by the writer (never decreasing within a run).
    pub ts_ms: i64,
    /// The previous line's `hash` ([`GENESIS_PREV`] for seq 1).
    pub prev: String,
    #[serde(flatten)]
    pub event: E,
    /// sha256 (lowercase hex) of this line's bytes before `,"hash":"`.
    pub hash: String,
}

/// A record as a replay takes it: its place and its event, without the chain fields that opening
/// the log has verified already. Replaying a million records makes and frees two strings a record
/// fewer than as [`Record`]s (bench figure 6).
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed<E> {
    pub seq: u64,
    /// Milliseconds since the Unix epoch, as in [`Record::ts_ms`].
    pub ts_ms: i64,
    pub event: E,
}

/// What opening a log hands its replay for each verified record: a whole [`Record`], or a
/// [`Replayed`] one. The crate's own: callers choose by calling `open_as` or `open_replaying`.
pub(crate) trait Verified<E>: Sized {
    /// From a line's parts, the chain fields as the line has them (lowercase hex).
    fn from_parts(seq: u64, ts_ms: i64, prev: &str, hash: &str, event: E) -> Self;
    fn from_record(record: Record<E>) -> Self;
    fn ts_ms(&self) -> i64;
}

impl<E> Verified<E> for Record<E> {
    fn from_parts(seq: u64, ts_ms: i64, prev: &str, hash: &str, event: E) -> Self {
        Record {
            seq,
            ts_ms,
            prev: prev.to_owned(),
            event,
            hash: hash.to_owned(),
        }
    }

    fn from_record(record: Record<E>) -> Self {
        record
    }

    fn ts_ms(&self) -> i64 {
        self.ts_ms
    }
}

impl<E> Verified<E> for Replayed<E> {
    fn from_parts(seq: u64, ts_ms: i64, _prev: &str, _hash: &str, event: E) -> Self {
        Replayed { seq, ts_ms, event }
    }

    fn from_record(record: Record<E>) -> Self {
        Replayed {
            seq: record.seq,
            ts_ms: record.ts_ms,
            event: record.event,
        }
    }

    fn ts_ms(&self) -> i64 {
        self.ts_ms
    }
}

/// The chain fields of a line, enough to verify it without knowing the event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineHeader {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    /// Where the hashed prefix ends: `line[..body_end]` is what `hash` covers.
    pub body_end: usize,
}

/// The lowercase hex sha256 of `prefix`, as stored in `hash`.
pub fn line_hash(prefix: &[u8]) -> String {
    String::from_utf8_lossy(&hash_hex(prefix)).into_owned()
}

/// Same as [`line_hash`] without allocating, for the hot verify loop.
pub(crate) fn hash_hex(prefix: &[u8]) -> [u8; 64] {
    // Arithmetic rather than a table lookup per digit, so the loop is vectorised (start-up hashes
    // every line).
    fn digit(nibble: u8) -> u8 {
        nibble + b'0' + u8::from(nibble > 9) * (b'a' - b'0' - 10)
    }
    let digest = Sha256::digest(prefix);
    let mut out = [0u8; 64];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest.iter()) {
        pair[0] = digit(byte >> 4);
        pair[1] = digit(byte & 0x0f);
    }
    out
}

/// Parses a line's chain fields and checks its shape: valid JSON, `hash` the last field, `hash`
/// and `prev` 64 lowercase hex digits. Does not check the hash itself (see [`line_hash`]).
/// A trailing `\n` is allowed.
pub fn parse_line(line: &[u8]) -> Result<LineHeader, String> {
    #[derive(Deserialize)]
    struct Fields {
        seq: u64,
        prev: String,
        hash: String,
    }
    let line = strip_newline(line);
    let fields: Fields =
        serde_json::from_slice(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let body_end = check_hash_position(line, &fields.hash, &fields.prev)?;
    Ok(LineHeader {
        seq: fields.seq,
        prev: fields.prev,
        hash: fields.hash,
        body_end,
    })
}

/// Decodes a whole record, checking the same shape as [`parse_line`]; returns where the hashed
/// prefix ends. Start-up and catch-up read every line, so a line in the writer's own layout is
/// split without a parse and only its event is parsed, from `scratch` (reused between calls);
/// any other layout gets the full parse.
pub(crate) fn decode_record<E: DeserializeOwned>(
    line: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(Record<E>, usize), String> {
    let line = strip_newline(line);
    if let Some(layout) = Layout::split(line) {
        scratch.clear();
        scratch.push(b'{');
        scratch.extend_from_slice(layout.fields);
        scratch.push(b'}');
        let event = event_from_json(scratch)?;
        let record = Record {
            seq: layout.seq,
            ts_ms: layout.ts_ms,
            prev: layout.prev.to_string(),
            event,
            hash: layout.hash.to_string(),
        };
        return Ok((record, layout.body_end));
    }
    // Any other layout: the event's fields go through a map rather than through serde's
    // `flatten`, which cannot hand an event a field kept as raw JSON text.
    #[derive(Deserialize)]
    struct Whole {
        seq: u64,
        ts_ms: i64,
        prev: String,
        hash: String,
        #[serde(flatten)]
        event: serde_json::Map<String, serde_json::Value>,
    }
    let whole: Whole = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let body_end = check_hash_position(line, &whole.hash, &whole.prev)?;
    let event =
        E::deserialize(serde_json::Value::Object(whole.event)).map_err(|e| e.to_string())?;
    let record = Record {
        seq: whole.seq,
        ts_ms: whole.ts_ms,
        prev: whole.prev,
        event,
        hash: whole.hash,
    };
    Ok((record, body_end))
}

/// A line laid out exactly as the writer writes it, split without a JSON parse:
/// `{"seq":N,"ts_ms":T,"prev":"<hex>"[,<fields>],"hash":"<hex>"}`.
struct Layout<'a> {
    seq: u64,
    ts_ms: i64,
    prev: &'a str,
    /// The event's fields (without braces), or empty.
    fields: &'a [u8],
    /// Where `fields` starts in the line.
    fields_start: usize,
    hash: &'a str,
    body_end: usize,
}

impl<'a> Layout<'a> {
    /// `None` when the line is in any other layout (callers fall back to a full parse). `line`
    /// has no trailing newline.
    fn split(line: &'a [u8]) -> Option<Self> {
        let rest = line.strip_prefix(b"{\"seq\":")?;
        let (seq, rest) = split_number(rest)?;
        let rest = rest.strip_prefix(b",\"ts_ms\":")?;
        let negative = rest.starts_with(b"-");
        let (ts_ms, rest) = split_number(&rest[usize::from(negative)..])?;
        let rest = rest.strip_prefix(b",\"prev\":\"")?;
        let prev = rest.get(..64)?;
        if rest.get(64..66)? != b"\"," {
            return None;
        }
        let header_end = line.len() - rest.len() + 65;
        let hash_start = line.len().checked_sub(66)?;
        let hash = &line[hash_start..line.len() - 2];
        let body_end = hash_start.checked_sub(HASH_MARKER.len())?;
        if body_end < header_end
            || &line[body_end..hash_start] != HASH_MARKER
            || !line.ends_with(b"\"}")
        {
            return None;
        }
        // Start-up runs this for every line (twice): checked as bytes first, in one pass each.
        if !is_hex64(prev) || !is_hex64(hash) {
            return None;
        }
        let (prev, hash) = (
            std::str::from_utf8(prev).ok()?,
            std::str::from_utf8(hash).ok()?,
        );
        let seq = digits_value(seq)?;
        let ts_ms = i64::try_from(digits_value(ts_ms)?).ok()?;
        Some(Layout {
            seq,
            ts_ms: if negative { -ts_ms } else { ts_ms },
            prev,
            // After the header's comma; empty when the event has no fields.
            fields: line.get(header_end + 1..body_end).unwrap_or_default(),
            fields_start: (header_end + 1).min(body_end),
            hash,
            body_end,
        })
    }
}

/// The chain fields of a line laid out exactly as the writer writes it, read without a JSON parse
/// (start-up reads every line; the full decode runs on another thread). `None` when the line is
/// in any other layout: callers fall back to [`parse_line`].
pub(crate) fn fast_header(line: &[u8]) -> Option<LineHeader> {
    let layout = Layout::split(strip_newline(line))?;
    Some(LineHeader {
        seq: layout.seq,
        prev: layout.prev.to_string(),
        hash: layout.hash.to_string(),
        body_end: layout.body_end,
    })
}

/// A line as the start-up scan reads it: its chain fields, and, for a line in the writer's own
/// layout, its timestamp and where its event's fields are, so that the event can be decoded later
/// without splitting the line again (see [`decode_scanned`]). A split line allocates nothing: the
/// scan reads a million of them, and what it allocates another thread would free.
#[derive(Debug)]
pub(crate) enum ScannedLine {
    /// In the writer's layout.
    Split(SplitLine),
    /// In any other layout, parsed whole; the event is left to [`decode_record`].
    Parsed(LineHeader),
}

/// The chain fields of a line in the writer's layout, and where its event's fields are.
#[derive(Debug, Clone)]
pub(crate) struct SplitLine {
    pub seq: u64,
    pub ts_ms: i64,
    pub prev: [u8; 64],
    pub hash: [u8; 64],
    pub body_end: usize,
    /// The event's fields: `line[fields]`, without braces.
    pub fields: std::ops::Range<usize>,
}

/// Reads a line's chain fields: the fast reading of the writer's layout, else a full parse.
pub(crate) fn scan_line(line: &[u8]) -> Result<ScannedLine, String> {
    let split = Layout::split(strip_newline(line)).and_then(|layout| {
        Some((
            layout.prev.as_bytes().try_into().ok()?,
            layout.hash.as_bytes().try_into().ok()?,
            layout,
        ))
    });
    let Some((prev, hash, layout)) = split else {
        return parse_line(line).map(ScannedLine::Parsed);
    };
    Ok(ScannedLine::Split(SplitLine {
        seq: layout.seq,
        ts_ms: layout.ts_ms,
        prev,
        hash,
        body_end: layout.body_end,
        fields: layout.fields_start..layout.fields_start + layout.fields.len(),
    }))
}

/// A hash's 64 hex digits as text ([`Layout::split`] checked them; anything else reads as empty,
/// which no chain accepts).
pub(crate) fn hex64_str(hex: &[u8]) -> &str {
    std::str::from_utf8(hex).unwrap_or_default()
}

/// The record of a line [`scan_line`] split, from its chain fields and its event's fields as one
/// JSON object (`{` + `line[fields]` + `}`).
pub(crate) fn decode_scanned<E: DeserializeOwned, T: Verified<E>>(
    (seq, ts_ms): (u64, i64),
    prev: &str,
    hash: &str,
    event: &[u8],
) -> Result<T, String> {
    Ok(T::from_parts(
        seq,
        ts_ms,
        prev,
        hash,
        event_from_json(event)?,
    ))
}

/// Decodes an event's JSON. Text that is valid UTF-8 as a whole (every line the writer wrote) is
/// checked once, here, rather than string by string by the parser: start-up decodes every record.
/// Anything else goes to the byte parser, whose error says where the text is wrong.
fn event_from_json<E: DeserializeOwned>(json: &[u8]) -> Result<E, String> {
    match std::str::from_utf8(json) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(json),
    }
    .map_err(|e| e.to_string())
}

/// The value of ASCII digits (as [`split_number`] splits them); `None` past `u64::MAX`.
fn digits_value(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |value, &digit| {
        value
            .checked_mul(10)?
            .checked_add(u64::from(digit.wrapping_sub(b'0')))
    })
}

/// Splits leading ASCII digits (at least one) off `bytes`.
fn split_number(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    (digits > 0).then(|| bytes.split_at(digits))
}

/// The seq of a line as the writer lays it out (`{"seq":N,`), without a full parse; `None` when
/// the line is not in that layout, so callers fall back to decoding.
pub(crate) fn leading_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits) != Some(&b',') {
        return None;
    }
    digits_value(&rest[..digits])
}

fn strip_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// Checks that the parsed `hash` is the last field, written as the writer writes it, and returns
/// the end of the hashed prefix.
fn check_hash_position(line: &[u8], hash: &str, prev: &str) -> Result<usize, String> {
    if !is_hex64(prev.as_bytes()) {
        return Err("prev is not 64 lowercase hex digits".into());
    }
    if !is_hex64(hash.as_bytes()) {
        return Err("hash is not 64 lowercase hex digits".into());
    }
    let body_end = line
        .windows(HASH_MARKER.len())
        .rposition(|w| w == HASH_MARKER)
        .ok_or("no \"hash\" field after the other fields")?;
    let value = &line[body_end + HASH_MARKER.len()..];
    if value.len() != hash.len() + 2
        || !value.starts_with(hash.as_bytes())
        || !value.ends_with(b"\"}")
    {
        return Err("\"hash\" is not the last field of the line".into());
    }
    Ok(body_end)
}

/// 64 lowercase hex digits. Every byte is looked at (no early exit), so the loop is vectorised.
fn is_hex64(s: &[u8]) -> bool {
    s.len() == 64
        && s.iter().fold(true, |all, &b| {
            all & ((b.wrapping_sub(b'0') < 10) | (b.wrapping_sub(b'a') < 6))
        })
}

/// Serializes an event for the writer: it must be a JSON object without the record's own keys.
/// Done by the caller's task when it queues, so the leader of a batch only hashes and writes.
pub(crate) fn encode_event<E: Serialize>(event: &E) -> Result<Vec<u8>, serde_json::Error> {
    // Most events fit: growing from empty would reallocate five or six times per record.
    let mut json = Vec::with_capacity(512);
    serde_json::to_writer(&mut json, event)?;
    let mut de = serde_json::Deserializer::from_slice(&json);
    de.deserialize_map(TopLevelKeys)?;
    Ok(json)
}

/// Checks the top level of an encoded event: an object whose keys are not reserved.
struct TopLevelKeys;

impl<'de> Visitor<'de> for TopLevelKeys {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event to serialize as a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(reserved) = map.next_key_seed(ReservedKey)? {
            if let Some(key) = reserved {
                return Err(de::Error::custom(format!(
                    "event field `{key}` clashes with the record's own `{key}`; rename it"
                )));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Reads a key without allocating it: `Some` when it is one of the record's own keys.
struct ReservedKey;

impl<'de> de::DeserializeSeed<'de> for ReservedKey {
    type Value = Option<&'static str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for ReservedKey {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(RESERVED_KEYS.iter().find(|r| **r == key).copied())
    }
}

/// Appends one complete line (with `\n`) for an encoded event to `buf`; returns its hash.
/// `event_json` comes from [`encode_event`], so it is `{...}`.
pub(crate) fn write_line(
    buf: &mut Vec<u8>,
    seq: u64,
    ts_ms: i64,
    prev: &str,
    event_json: &[u8],
) -> String {
    let start = buf.len();
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{{\"seq\":{seq},\"ts_ms\":{ts_ms},\"prev\":\"{prev}\"");
    if let Some(fields) = event_json.get(1..event_json.len().saturating_sub(1))
        && !fields.is_empty()
    {
        buf.push(b',');
        buf.extend_from_slice(fields);
    }
    let hash = hash_hex(&buf[start..]);
    buf.extend_from_slice(HASH_MARKER);
    buf.extend_from_slice(&hash);
    buf.extend_from_slice(b"\"}\n");
    String::from_utf8_lossy(&hash).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Ev {
        Ping { n: u32 },
        Empty {},
    }

    fn line_for(event: &Ev) -> Vec<u8> {
        let mut buf = Vec::new();
        write_line(&mut buf, 1, 42, GENESIS_PREV, &encode_event(event).unwrap());
        buf
    }

    #[test]
    fn written_line_is_what_serde_writes_for_the_record() {
        let line = line_for(&Ev::Ping { n: 7 });
        let header = parse_line(&line).unwrap();
        let record = Record {
            seq: 1,
            ts_ms: 42,
            prev: GENESIS_PREV.to_string(),
            event: Ev::Ping { n: 7 },
            hash: header.hash.clone(),
        };
        let mut expected = serde_json::to_vec(&record).unwrap();
        expected.push(b'\n');
        assert_eq!(line, expected);
        assert_eq!(line_hash(&line[..header.body_end]), header.hash);
        let (decoded, body_end) = decode_record::<Ev>(&line, &mut Vec::new()).unwrap();
        assert_eq!((decoded, body_end), (record, header.body_end));
        assert_eq!(fast_header(&line), Some(header));
        assert_eq!(leading_seq(&line), Some(1));
    }

    #[test]
    fn the_split_and_the_full_parse_decode_the_same_record() {
        let mut line = Vec::new();
        write_line(
            &mut line,
            7,
            -5,
            GENESIS_PREV,
            &encode_event(&Ev::Ping { n: 3 }).unwrap(),
        );
        let (fast, fast_end) = decode_record::<Ev>(&line, &mut Vec::new()).unwrap();
        assert_eq!(
            (fast.seq, fast.ts_ms, &fast.event),
            (7, -5, &Ev::Ping { n: 3 })
        );
        // Any other layout (here a space after the colon) takes the full parse.
        let spaced = String::from_utf8(line.clone())
            .unwrap()
            .replacen(":7,", ": 7,", 1);
        assert!(Layout::split(strip_newline(spaced.as_bytes())).is_none());
        let (full, full_end) = decode_record::<Ev>(spaced.as_bytes(), &mut Vec::new()).unwrap();
        assert_eq!((full, full_end), (fast, fast_end + 1));
        let broken = String::from_utf8(line)
            .unwrap()
            .replacen("\"n\":3", "\"n\":", 1);
        assert!(decode_record::<Ev>(broken.as_bytes(), &mut Vec::new()).is_err());
    }

    #[test]
    fn the_start_up_scan_splits_once_and_decodes_the_same_record() {
        for event in [Ev::Ping { n: 9 }, Ev::Empty {}] {
            let line = line_for(&event);
            let (whole, body_end) = decode_record::<Ev>(&line, &mut Vec::new()).unwrap();
            let ScannedLine::Split(split) = scan_line(&line).unwrap() else {
                panic!("the writer's layout is split");
            };
            assert_eq!(split.body_end, body_end);
            let object = [b"{", &line[split.fields.clone()], b"}"].concat();
            let record: Record<Ev> = decode_scanned(
                (split.seq, split.ts_ms),
                hex64_str(&split.prev),
                hex64_str(&split.hash),
                &object,
            )
            .unwrap();
            assert_eq!(record, whole);
        }
        // Any other layout is parsed whole, and left to `decode_record`.
        let spaced = String::from_utf8(line_for(&Ev::Ping { n: 1 }))
            .unwrap()
            .replacen(":1,", ": 1,", 1);
        let ScannedLine::Parsed(header) = scan_line(spaced.as_bytes()).unwrap() else {
            panic!("another layout is parsed whole");
        };
        assert_eq!(header.seq, 1);
    }

    /// Text checked as UTF-8 once decodes as the byte parser decodes it, escapes and all; text
    /// that is not UTF-8 gets the byte parser's error, which says where.
    #[test]
    fn an_event_decodes_the_same_whether_its_text_is_checked_once_or_per_string() {
        type V = serde_json::Value;
        for json in [
            &br#"{"kind":"ping","n":3,"s":"caf\u00e9 \ud83d\ude00 \"q\"","a":[1,{"b":null}]}"#[..],
            "{\"kind\":\"ping\",\"s\":\"caf\u{e9} \u{1f600}\"}".as_bytes(),
        ] {
            assert_eq!(
                event_from_json::<V>(json).unwrap(),
                serde_json::from_slice::<V>(json).unwrap()
            );
        }
        let invalid = b"{\"kind\":\"\xff\xfe\"}";
        let expected = serde_json::from_slice::<V>(invalid)
            .unwrap_err()
            .to_string();
        assert_eq!(event_from_json::<V>(invalid).unwrap_err(), expected);
        assert!(expected.contains("column"), "{expected}");
        assert!(event_from_json::<V>(br#"{"kind":"#).is_err());
    }

    #[test]
    fn hex_and_digits_are_read_as_the_std_would() {
        for input in [&b""[..], b"abc", &[0xff; 300]] {
            let expected = hex::encode(Sha256::digest(input));
            assert_eq!(hash_hex(input).as_slice(), expected.as_bytes());
        }
        let hex = b"0123456789abcdef".repeat(4);
        assert!(is_hex64(&hex));
        assert!(!is_hex64(&hex[..63]));
        for bad in [b'A', b'g', b'/', b':', b'`', 0] {
            let mut wrong = hex.clone();
            wrong[40] = bad;
            assert!(!is_hex64(&wrong), "{bad}");
        }
        assert_eq!(digits_value(b"0"), Some(0));
        assert_eq!(digits_value(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(digits_value(b"18446744073709551616"), None);
        assert_eq!(leading_seq(b"{\"seq\":18446744073709551616,"), None);
        assert_eq!(leading_seq(b"{\"seq\":0042,"), Some(42));
    }

    #[test]
    fn both_paths_hand_an_event_its_fields_as_raw_json_text() {
        #[derive(Debug, Deserialize)]
        struct Raw {
            kind: String,
            args: Box<serde_json::value::RawValue>,
        }
        let mut line = Vec::new();
        let event = encode_event(&json!({"kind": "x", "args": {"a": [1, 2]}})).unwrap();
        write_line(&mut line, 2, 0, GENESIS_PREV, &event);
        let spaced = String::from_utf8(line.clone())
            .unwrap()
            .replacen(":2,", ": 2,", 1);
        for line in [line, spaced.into_bytes()] {
            let (record, _) = decode_record::<Raw>(&line, &mut Vec::new()).unwrap();
            assert_eq!(record.seq, 2);
            assert_eq!(record.event.kind, "x");
            let args: serde_json::Value = serde_json::from_str(record.event.args.get()).unwrap();
            assert_eq!(args, json!({"a": [1, 2]}));
        }
    }

    #[test]
    fn an_event_without_fields_besides_its_tag_round_trips() {
        let line = line_for(&Ev::Empty {});
        let (decoded, _) = decode_record::<Ev>(&line, &mut Vec::new()).unwrap();
        assert_eq!(decoded.event, Ev::Empty {});
    }

    #[test]
    fn events_that_are_not_objects_or_use_reserved_keys_are_refused() {
        assert!(encode_event(&5).is_err());
        assert!(encode_event(&json!(["a"])).is_err());
        let err = encode_event(&json!({"kind": "x", "seq": 1})).unwrap_err();
        assert!(err.to_string().contains("`seq`"), "{err}");
        assert!(encode_event(&json!({"kind": "x", "nested": {"hash": "y"}})).is_ok());
    }

    #[test]
    fn a_nested_hash_key_does_not_confuse_the_parser() {
        let mut buf = Vec::new();
        let ev = encode_event(&json!({"kind": "x", "args": {"a": 1, "hash": "zz"}})).unwrap();
        write_line(&mut buf, 3, 0, GENESIS_PREV, &ev);
        let header = parse_line(&buf).unwrap();
        assert_eq!(line_hash(&buf[..header.body_end]), header.hash);
    }

    #[test]
    fn unknown_fields_from_a_newer_writer_are_tolerated() {
        let mut buf = Vec::new();
        let ev = encode_event(&json!({"kind": "ping", "n": 2, "added_later": [1]})).unwrap();
        write_line(&mut buf, 1, 0, GENESIS_PREV, &ev);
        let (decoded, _) = decode_record::<Ev>(&buf, &mut Vec::new()).unwrap();
        assert_eq!(decoded.event, Ev::Ping { n: 2 });
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        assert!(
            parse_line(b"garbage")
                .unwrap_err()
                .starts_with("not valid JSON")
        );
        let line = line_for(&Ev::Ping { n: 1 });
        let text = String::from_utf8(line).unwrap();
        let moved = text
            .replacen("{\"seq\":1,", "{", 1)
            .replacen("\"}\n", "\",\"seq\":1}", 1);
        assert!(
            parse_line(moved.as_bytes())
                .unwrap_err()
                .contains("last field")
        );
        let upper = text.replace("0000", "AAAA");
        assert!(parse_line(upper.as_bytes()).unwrap_err().contains("prev"));
        assert_eq!(leading_seq(b"{\"seq\":x,"), None);
        assert_eq!(fast_header(moved.as_bytes()), None);
        assert_eq!(fast_header(b"{\"seq\":1,\"ts_ms\":-"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10_000))]

        /// The fast reader never panics and, where both read a line, agrees with the full parser.
        #[test]
        fn fast_header_agrees_with_parse_line(
            at in 0usize..400,
            byte in proptest::prelude::any::<u8>(),
            cut in 0usize..400,
        ) {
            let mut line = line_for(&Ev::Ping { n: 9 });
            let at = at % line.len();
            line[at] = byte;
            line.truncate(cut.max(at + 1));
            if let (Some(fast), Ok(full)) = (fast_header(&line), parse_line(&line)) {
                proptest::prop_assert_eq!(fast, full);
            }
        }
    }
}
