//! `allow` and `deny`: which client addresses a listener serves, decided before any parsing.

use std::net::IpAddr;

use crate::config::cidr::Cidr;

/// A listener's address rules: `deny` wins; a non-empty `allow` admits only its blocks.
#[derive(Debug, Clone, Default)]
pub struct IpRules {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl IpRules {
    /// Rules from the config's CIDR lists; entries that do not parse are skipped (the config
    /// was validated).
    pub fn new(allow: &[String], deny: &[String]) -> Self {
        let parse = |list: &[String]| list.iter().filter_map(|c| c.parse().ok()).collect();
        IpRules { allow: parse(allow), deny: parse(deny) }
    }

    /// Whether `ip` may connect.
    pub fn admits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_rules_admit_everyone() {
        assert!(IpRules::default().admits(ip("203.0.113.5")));
    }

    #[test]
    fn deny_wins_over_allow() {
        let rules = IpRules::new(&["10.0.0.0/8".into()], &["10.1.0.0/16".into()]);
        assert!(rules.admits(ip("10.2.3.4")));
        assert!(!rules.admits(ip("10.1.3.4")));
        assert!(!rules.admits(ip("192.0.2.1")), "not in allow");
    }

    #[test]
    fn v6_rules_apply_to_v6_clients() {
        let rules = IpRules::new(&[], &["2001:db8::/32".into(), "::1".into()]);
        assert!(!rules.admits(ip("2001:db8::7")));
        assert!(!rules.admits(ip("::1")));
        assert!(rules.admits(ip("2001:db9::7")));
        assert!(rules.admits(ip("127.0.0.1")));
    }
}
