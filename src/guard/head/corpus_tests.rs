//! AWS's http-desync-guardian corpus (`../shared/desync-guardian/cases.json`, Apache-2.0) run
//! through [`inspect`]: each case's class must be its tier. Where ballast refuses a request
//! the corpus does not grade severe (RFC 9110/9112 lets a server refuse it; DESIGN.md: every
//! mode but monitor does), the case is listed in [`REFUSED`] with the reason.

use super::{head_end, inspect, Class};

/// Cases refused although their tier is not severe: id, status, reason, and the RFC ground.
const REFUSED: &[(&str, u16, &str, &str)] = &[
    ("acceptable-00", 400, "NonCompliantHeader", SPACED_NAME),
    ("acceptable-01", 400, "NonCompliantHeader", SPACED_NAME),
    ("acceptable-02", 400, "NonCompliantHeader", BAD_NAME),
    ("acceptable-03", 400, "NonCompliantHeader", SPACED_NAME),
    ("acceptable-06", 505, "NonCompliantVersion", HTTP_0_9),
    ("acceptable-07", 400, "NonCompliantVersion", NO_VERSION),
    ("ambiguous-00", 400, "NonCompliantHeader", SPACED_NAME),
    ("ambiguous-01", 400, "NonCompliantHeader", SPACED_NAME),
    ("ambiguous-02", 400, "NonCompliantHeader", BAD_NAME),
    ("ambiguous-03", 400, "NonCompliantHeader", BAD_NAME),
    ("ambiguous-04", 400, "NonCompliantHeader", BAD_NAME),
    ("ambiguous-05", 400, "NonCompliantHeader", BAD_NAME),
    ("ambiguous-06", 400, "NonCompliantHeader", BAD_NAME),
    ("ambiguous-11", 400, "ChunkedNotFinal", NOT_FINAL),
    ("ambiguous-16", 400, "NonCompliantHeader", SPACED_NAME),
    ("ambiguous-17", 400, "MultilineHeader", LEADING_WS),
    ("ambiguous-18", 400, "MultilineHeader", LEADING_WS),
    ("ambiguous-19", 400, "NonCompliantHeader", SPACED_NAME),
    ("ambiguous-20", 400, "EmptyHeader", EMPTY_NAME),
    ("ambiguous-21", 400, "EmptyHeader", EMPTY_NAME),
    ("ambiguous-22", 400, "EmptyHeader", LEADING_WS),
    ("ambiguous-24", 505, "NonCompliantVersion", HTTP_0_9),
    ("ambiguous-25", 505, "NonCompliantVersion", HTTP_0_9),
    ("ambiguous-26", 400, "NonCompliantVersion", NO_VERSION),
    ("ambiguous-27", 400, "NonCompliantVersion", NO_VERSION),
    ("ambiguous-28", 400, "NonCompliantHeader", BAD_NAME),
    ("ambiguous-29", 400, "NonCompliantHeader", BAD_NAME),
    ("ambiguous-32", 400, "MultilineHeader", LEADING_WS),
    ("ambiguous-33", 400, "NonCompliantHeader", SPACED_NAME),
    ("ambiguous-34", 400, "NonCompliantHeader", BAD_NAME),
    ("ambiguous-35", 400, "NonCompliantHeader", BAD_NAME),
    ("ambiguous-36", 400, "NonCompliantHeader", BAD_NAME),
    ("bad-header-characters-00", 400, "NonCompliantHeader", BAD_NAME),
    ("bad-header-characters-05", 400, "NonCompliantHeader", BAD_NAME),
    ("bad-header-characters-06", 400, "NonCompliantHeader", BAD_NAME),
    ("bad-header-characters-07", 400, "NonCompliantHeader", BAD_NAME),
    ("bad-header-characters-11", 400, "NonCompliantHeader", BAD_NAME),
    ("bad-header-characters-12", 400, "NonCompliantHeader", BAD_NAME),
    ("bad-header-characters-13", 400, "NonCompliantHeader", CTL_VALUE),
    ("bad-header-characters-14", 400, "NonCompliantHeader", CTL_VALUE),
    ("edge-cases-03", 400, "NonCompliantHeader", CTL_VALUE),
    ("edge-cases-04", 400, "NonCompliantHeader", CTL_VALUE),
    ("edge-cases-07", 400, "AmbiguousUri", CTL_TARGET),
    ("more-compliant-tests-05", 501, "UnsupportedTransferCoding", CODING),
    ("more-compliant-tests-07", 501, "UnsupportedTransferCoding", CODING),
    ("more-compliant-tests-08", 501, "UnsupportedTransferCoding", CODING),
    ("real-life-test-cases-09", 400, "NonCompliantHeader", SPACED_NAME),
    ("real-life-test-cases-14", 400, "ChunkedNotFinal", NOT_FINAL),
    ("real-life-test-cases-16", 501, "UnsupportedTransferCoding", CODING),
    ("rfc-compliant-08", 501, "UnsupportedTransferCoding", CODING),
    ("rfc-compliant-09", 501, "UnsupportedTransferCoding", CODING),
    ("rfc-compliant-10", 501, "UnsupportedTransferCoding", CODING),
    ("rfc-compliant-13", 400, "InvalidUri", EMPTY_TARGET),
    ("uri-specific-test-cases-00", 400, "AmbiguousUri", CTL_TARGET),
    ("uri-specific-test-cases-01", 400, "NonCompliantVersion", AFTER_VERSION),
    ("uri-specific-test-cases-02", 400, "AmbiguousUri", CTL_TARGET),
    ("uri-specific-test-cases-03", 400, "SpaceInUri", SPACE_TARGET),
];

const SPACED_NAME: &str = "whitespace between a field name and its colon: RFC 9112 §5.1, MUST answer 400";
const BAD_NAME: &str = "a field name that is not a token (CTL, non-ASCII, SP): invalid field line, 400";
const EMPTY_NAME: &str = "an empty field name: invalid field line, 400";
const LEADING_WS: &str = "a whitespace-led line after the request line: RFC 9112 §2.2 allows rejecting it";
const CTL_VALUE: &str = "a control character in a field value: invalid (RFC 9110 §5.5), 400";
const CODING: &str = "a transfer coding other than chunked: RFC 9112 §6.1, 501 (Not Implemented)";
const NOT_FINAL: &str = "Transfer-Encoding without chunked last: RFC 9112 §6.3, MUST answer 400";
const HTTP_0_9: &str = "HTTP/0.9 is not served: 505 (HTTP Version Not Supported)";
const NO_VERSION: &str = "a request line without a version: invalid request-line (RFC 9112 §3), 400";
const AFTER_VERSION: &str = "whitespace after the version: invalid request-line (RFC 9112 §3), 400";
const SPACE_TARGET: &str = "a space in the request-target: invalid request-line, RFC 9112 §3.2 SHOULD 400";
const CTL_TARGET: &str = "a control character in the request-target: invalid request-line, 400";
const EMPTY_TARGET: &str = "an empty request-target: none of the four forms of RFC 9112 §3.2, 400";

const CLASSES: [Class; 4] = [Class::Compliant, Class::Acceptable, Class::Ambiguous, Class::Severe];

#[derive(Default)]
struct Row {
    cases: usize,
    agree: usize,
    deviate: usize,
    same_reason: usize,
}

#[test]
fn corpus_classes_match_http_desync_guardian() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/desync-guardian/cases.json");
    let Ok(text) = std::fs::read_to_string(path) else {
        println!("note: {path} is absent; the desync-guardian corpus test is skipped (CI has it)");
        return;
    };
    let doc: serde_json::Value = serde_json::from_str(&text).expect("cases.json is JSON");
    let cases = doc["cases"].as_array().expect("cases.json has a `cases` array");
    assert_eq!(cases.len(), 158, "the corpus README counts 158 cases");
    let mut rows: [Row; 4] = Default::default();
    let mut failures = Vec::new();
    let mut refused_ids = Vec::new();
    for case in cases {
        let field = |name: &str| case[name].as_str().unwrap_or_else(|| panic!("a case without `{name}`"));
        let (id, raw) = (field("id"), field("raw").as_bytes());
        assert_eq!(raw, base64(field("raw_b64")), "{id}: raw and raw_b64 disagree");
        let tier = CLASSES.into_iter().find(|c| format!("{c:?}") == field("tier")).expect("a known tier");
        let offset = case["host_offset"].as_u64().and_then(|o| usize::try_from(o).ok()).expect("host_offset");
        let wire = [&raw[..offset], b"Host: desync.test\r\n", &raw[offset..]].concat();
        let head = &wire[..head_end(&wire).unwrap_or(wire.len())];
        let verdict = inspect(head);

        let row = &mut rows[tier as usize];
        row.cases += 1;
        row.same_reason += usize::from(verdict.class_reason == field("reason"));
        if verdict.class != tier {
            let (class, reason) = (verdict.class, verdict.class_reason);
            failures.push(format!("{id}: {class:?} ({reason}), corpus says {tier:?} ({})", field("reason")));
            continue;
        }
        let beyond = verdict.refuse.is_some() && tier != Class::Severe;
        let listed = REFUSED.iter().find(|(r, ..)| *r == id);
        match (beyond, listed) {
            (true, Some((_, status, reason, _))) if (verdict.refuse, verdict.reason) == (Some(*status), *reason) => {
                row.deviate += 1
            }
            (false, None) => row.agree += 1,
            _ => failures.push(format!("{id}: refused {:?} ({}), listed {listed:?}", verdict.refuse, verdict.reason)),
        }
        if beyond {
            refused_ids.push(id.to_string());
        }
        if verdict.class_reason != field("reason") {
            println!("{id}: {tier:?} because {}, the corpus says {}", verdict.class_reason, field("reason"));
        }
        if tier == Class::Severe && verdict.refuse.is_none() {
            failures.push(format!("{id}: severe but not refused"));
        }
        super::tests::assert_forwardable(&verdict);
    }
    let stale: Vec<&str> =
        REFUSED.iter().map(|(id, ..)| *id).filter(|id| !refused_ids.iter().any(|r| r == id)).collect();

    println!("{:<11} {:>5} {:>6} {:>8} {:>12}", "tier", "cases", "agree", "deviate", "same reason");
    for (class, row) in CLASSES.iter().zip(&rows) {
        let Row { cases, agree, deviate, same_reason } = row;
        println!("{:<11} {cases:>5} {agree:>6} {deviate:>8} {same_reason:>12}", format!("{class:?}"));
    }
    for (id, status, reason, why) in REFUSED {
        println!("refused beyond the corpus: {id}: {status} {reason}: {why}");
    }
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
    assert!(stale.is_empty(), "stale REFUSED entries: {stale:?}");
}

/// Standard base64 with padding, for the corpus' `raw_b64`.
fn base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextets: Vec<u32> = text
        .bytes()
        .filter(|&b| b != b'=')
        .map(|b| ALPHABET.iter().position(|&a| a == b).expect("a base64 character") as u32)
        .collect();
    let mut out = Vec::with_capacity(sextets.len() * 3 / 4);
    for group in sextets.chunks(4) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, s)| n | s << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..group.len()]);
    }
    out
}
