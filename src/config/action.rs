//! What a rule or a listener's default does with a request.

use serde::{Deserialize, Serialize};

/// An action, tagged by its `type` key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Send the request to one target group, or to several by weight.
    Forward {
        #[serde(default)]
        target_group: Option<String>,
        #[serde(default)]
        target_groups: Vec<WeightedTargetGroup>,
    },
    /// Answer with a redirect built from placeholders.
    Redirect {
        #[serde(default = "keep_protocol")]
        protocol: String,
        #[serde(default = "keep_host")]
        host: String,
        #[serde(default = "keep_port")]
        port: String,
        #[serde(default = "keep_path")]
        path: String,
        #[serde(default = "keep_query")]
        query: String,
        #[serde(default = "moved_permanently")]
        status: u16,
    },
    /// Answer with a fixed status and body.
    FixedResponse {
        status: u16,
        #[serde(default)]
        body: String,
        #[serde(default = "text_plain")]
        content_type: String,
    },
}

/// One entry of `target_groups` in a weighted forward.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedTargetGroup {
    pub name: String,
    #[serde(default = "one")]
    pub weight: u32,
}

fn keep_protocol() -> String {
    "#{protocol}".into()
}
fn keep_host() -> String {
    "#{host}".into()
}
fn keep_port() -> String {
    "#{port}".into()
}
fn keep_path() -> String {
    "/#{path}".into()
}
fn keep_query() -> String {
    "#{query}".into()
}
fn moved_permanently() -> u16 {
    301
}
fn text_plain() -> String {
    "text/plain".into()
}
fn one() -> u32 {
    1
}
