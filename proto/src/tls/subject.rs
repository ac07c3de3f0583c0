//! The common name of a certificate's subject: how a verified client certificate names the client it
//! belongs to (`clients.*.tls_subject`).
//!
//! A minimal DER reader over the one path needed (certificate → TBS certificate → subject → the CN
//! attribute); it only reads certificates the handshake has already verified, and returns `None`
//! rather than guessing on anything it does not expect.

use rustls::pki_types::CertificateDer;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// `[0] EXPLICIT Version`.
const VERSION: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// The string types a common name is written in: UTF8String, PrintableString, T61String, IA5String.
const TEXT: &[u8] = &[0x0c, 0x13, 0x14, 0x16];

/// The subject's common name (the last CN attribute, the most specific one), if it has one.
pub fn common_name(certificate: &CertificateDer<'_>) -> Option<String> {
    let (tag, certificate, _) = tlv(certificate.as_ref())?;
    expect(tag, SEQUENCE)?;
    let (tag, tbs, _) = tlv(certificate)?;
    expect(tag, SEQUENCE)?;
    let (tag, _, mut rest) = tlv(tbs)?;
    // The version is optional; after it come serial, signature algorithm, issuer and validity.
    let mut skip = if tag == VERSION { 4 } else { 3 };
    while skip > 0 {
        let (_, _, after) = tlv(rest)?;
        rest = after;
        skip -= 1;
    }
    let (tag, mut names, _) = tlv(rest)?;
    expect(tag, SEQUENCE)?;
    let mut found = None;
    while !names.is_empty() {
        let (tag, mut set, after) = tlv(names)?;
        expect(tag, SET)?;
        names = after;
        while !set.is_empty() {
            let (tag, attribute, after) = tlv(set)?;
            expect(tag, SEQUENCE)?;
            set = after;
            let (tag, oid, value) = tlv(attribute)?;
            expect(tag, OID)?;
            if oid == COMMON_NAME {
                let (tag, text, _) = tlv(value)?;
                if TEXT.contains(&tag) {
                    found = Some(String::from_utf8(text.to_vec()).ok()?);
                }
            }
        }
    }
    found
}

fn expect(tag: u8, wanted: u8) -> Option<()> {
    (tag == wanted).then_some(())
}

/// One DER tag-length-value: the tag, the value, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let bytes = usize::from(first & 0x7f);
        if bytes == 0 || bytes > 4 || input.len() < bytes {
            return None;
        }
        let (length, after) = input.split_at(bytes);
        input = after;
        length
            .iter()
            .fold(0usize, |sum, &b| (sum << 8) | usize::from(b))
    };
    if input.len() < length {
        return None;
    }
    let (value, rest) = input.split_at(length);
    Some((tag, value, rest))
}
