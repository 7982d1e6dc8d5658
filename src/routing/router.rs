//! A listener's rules in priority order, then its default action.

use super::action::ActionPlan;
use super::condition::Condition;
use super::request_head::RequestHead;

/// Evaluates a listener's rules; built once per config snapshot.
#[derive(Debug)]
pub struct Router {
    rules: Vec<(u32, Vec<Condition>, ActionPlan)>,
    default_action: ActionPlan,
}

impl Router {
    /// A router over `(priority, conditions, action)` rules, in any order.
    pub fn new(mut rules: Vec<(u32, Vec<Condition>, ActionPlan)>, default_action: ActionPlan) -> Self {
        rules.sort_by_key(|r| r.0);
        Router { rules, default_action }
    }

    /// The listener's default action: all an L4 listener has.
    pub fn default_action(&self) -> &ActionPlan {
        &self.default_action
    }

    /// The priority and action of the first rule whose conditions all match; `None` and the
    /// default action when none does.
    pub fn route_rule(&self, head: &RequestHead<'_>) -> (Option<u32>, &ActionPlan) {
        self.rules
            .iter()
            .find(|(_, conditions, _)| conditions.iter().all(|c| c.matches(head)))
            .map_or((None, &self.default_action), |(priority, _, action)| (Some(*priority), action))
    }

    /// The action of the first rule (by priority) whose conditions all match, else the default.
    pub fn route(&self, head: &RequestHead<'_>) -> &ActionPlan {
        self.rules
            .iter()
            .find(|(_, conditions, _)| conditions.iter().all(|c| c.matches(head)))
            .map_or(&self.default_action, |(_, _, action)| action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Conditions, OneOrMany};
    use crate::routing::Fields;
    use http::HeaderMap;

    fn fixed(status: u16) -> ActionPlan {
        ActionPlan::FixedResponse { status, body: String::new(), content_type: "text/plain".into() }
    }

    fn status(plan: &ActionPlan) -> u16 {
        match plan {
            ActionPlan::FixedResponse { status, .. } => *status,
            _ => 0,
        }
    }

    fn head<'a>(
        headers: &'a HeaderMap,
        method: &'a str,
        host: &'a str,
        path: &'a str,
        query: &'a str,
        ip: &str,
    ) -> RequestHead<'a> {
        RequestHead {
            method,
            host,
            path,
            query,
            headers: Fields::Map(headers),
            source_ip: ip.parse().unwrap(),
            protocol: "http",
            port: 80,
        }
    }

    fn router() -> Router {
        let by_path = Conditions { path: vec!["/api/*".into()], ..Default::default() };
        let by_host_and_method = Conditions {
            host: vec!["admin.*".into()],
            method: vec!["POST".into(), "PUT".into()],
            ..Default::default()
        };
        let mut by_query = Conditions::default();
        by_query.query.insert("platform".into(), OneOrMany::Many(vec!["mobile".into(), "tablet".into()]));
        let mut by_header_and_ip = Conditions { source_ip: vec!["10.0.0.0/8".into()], ..Default::default() };
        by_header_and_ip.header.insert("X-Canary".into(), OneOrMany::One("yes".into()));
        Router::new(
            vec![
                (40, Condition::compile(&by_header_and_ip), fixed(204)),
                (10, Condition::compile(&by_path), fixed(201)),
                (30, Condition::compile(&by_query), fixed(203)),
                (20, Condition::compile(&by_host_and_method), fixed(202)),
            ],
            fixed(404),
        )
    }

    #[test]
    fn rules_apply_by_priority_then_default() {
        let r = router();
        let h = HeaderMap::new();
        // Matches both the path rule (10) and the query rule (30): priority 10 wins.
        assert_eq!(status(r.route(&head(&h, "GET", "x", "/api/v1", "platform=Mobile", "1.2.3.4"))), 201);
        assert_eq!(status(r.route(&head(&h, "GET", "x", "/shop", "platform=Tablet", "1.2.3.4"))), 203);
        assert_eq!(status(r.route(&head(&h, "GET", "x", "/shop", "platform=desktop", "1.2.3.4"))), 404);
    }

    #[test]
    fn conditions_and_together_values_or() {
        let r = router();
        let h = HeaderMap::new();
        assert_eq!(status(r.route(&head(&h, "PUT", "Admin.example", "/", "", "1.2.3.4"))), 202);
        assert_eq!(status(r.route(&head(&h, "GET", "admin.example", "/", "", "1.2.3.4"))), 404);
        let mut canary = HeaderMap::new();
        canary.insert("x-canary", "YES".parse().unwrap());
        assert_eq!(status(r.route(&head(&canary, "GET", "x", "/", "", "10.9.8.7"))), 204);
        assert_eq!(status(r.route(&head(&canary, "GET", "x", "/", "", "11.0.0.1"))), 404);
        assert_eq!(status(r.route(&head(&h, "GET", "x", "/", "", "10.9.8.7"))), 404);
    }
}
