//! Wildcard patterns of rule conditions: `*` matches any run of characters, `?` any one.

/// A compiled wildcard pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    pattern: Vec<u8>,
    case_insensitive: bool,
}

impl Glob {
    /// A pattern; `case_insensitive` for host names, header and query values.
    pub fn new(pattern: &str, case_insensitive: bool) -> Self {
        let pattern =
            if case_insensitive { pattern.to_ascii_lowercase().into_bytes() } else { pattern.as_bytes().to_vec() };
        Glob { pattern, case_insensitive }
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let (p, t) = (&self.pattern, text.as_bytes());
        let eq = |a: u8, b: u8| {
            if self.case_insensitive {
                a == b.to_ascii_lowercase()
            } else {
                a == b
            }
        };
        // Iterative matching with one backtrack point: linear for patterns with one `*`,
        // and never exponential.
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && eq(p[pi], t[ti]))) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks() {
        let g = Glob::new("/user*", false);
        assert!(g.matches("/user"));
        assert!(g.matches("/users/42"));
        assert!(!g.matches("/admin/user"));
        assert!(Glob::new("*.example.com", true).matches("api.EXAMPLE.com"));
        assert!(!Glob::new("*.example.com", true).matches("example.com"));
        assert!(Glob::new("/v?/items", false).matches("/v2/items"));
        assert!(!Glob::new("/v?/items", false).matches("/v10/items"));
        assert!(Glob::new("*a*b*c", false).matches("xxaxxbxxc"));
        assert!(!Glob::new("*a*b*c", false).matches("xxaxxbxxcx"));
        assert!(Glob::new("*", false).matches(""));
    }

    #[test]
    fn case_follows_the_flag() {
        assert!(!Glob::new("/API", false).matches("/api"));
        assert!(Glob::new("Mobile", true).matches("mobile"));
    }

    #[test]
    fn hostile_patterns_stay_fast() {
        let g = Glob::new("*a*a*a*a*a*a*a*b", false);
        let text = "a".repeat(10_000);
        assert!(!g.matches(&text));
    }
}
