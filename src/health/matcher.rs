//! The `matcher` of a health check: which response status codes count as healthy.

use std::str::FromStr;

use crate::config::parse_matcher;

/// Status codes that make an HTTP health check pass, as ELB's `Matcher` (`HttpCode`) spells
/// them: `200`, `200-299`, `200,302`, or a mix (`200-299,302`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// Inclusive ranges; a single code is a range of one.
    ranges: Vec<(u16, u16)>,
}

/// A matcher text that is not a list of status codes and ranges; says which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidMatcher(String);

impl Matcher {
    /// Reads the config's matcher text.
    pub fn parse(text: &str) -> Result<Matcher, InvalidMatcher> {
        parse_matcher(text).map(|ranges| Matcher { ranges }).map_err(InvalidMatcher)
    }

    /// Whether a response with `status` counts as healthy.
    pub fn matches(&self, status: u16) -> bool {
        self.ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

impl FromStr for Matcher {
    type Err = InvalidMatcher;

    fn from_str(text: &str) -> Result<Matcher, InvalidMatcher> {
        Matcher::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(text: &str) -> Matcher {
        Matcher::parse(text).expect("a valid matcher")
    }

    #[test]
    fn a_single_code_matches_only_itself() {
        let m = matcher("200");
        assert!(m.matches(200));
        assert!(!m.matches(199));
        assert!(!m.matches(201));
        assert!(!m.matches(500));
    }

    #[test]
    fn a_range_matches_both_ends_and_between() {
        let m = matcher("200-399");
        for status in [200, 204, 302, 399] {
            assert!(m.matches(status), "{status}");
        }
        for status in [100, 199, 400, 503] {
            assert!(!m.matches(status), "{status}");
        }
    }

    #[test]
    fn a_list_matches_any_of_its_parts() {
        let m = matcher("200, 302,400-404");
        for status in [200, 302, 400, 401, 404] {
            assert!(m.matches(status), "{status}");
        }
        for status in [201, 301, 303, 399, 405] {
            assert!(!m.matches(status), "{status}");
        }
    }

    #[test]
    fn from_str_reads_the_same_text() {
        assert_eq!("200-299".parse::<Matcher>().unwrap(), matcher("200-299"));
    }

    #[test]
    fn bad_text_is_refused_with_the_reason() {
        for text in ["", "ok", "200-", "99", "600", "299-200", "200;302"] {
            let err = Matcher::parse(text).expect_err(text);
            assert!(err.to_string().contains(text), "{text}: {err}");
        }
    }
}
