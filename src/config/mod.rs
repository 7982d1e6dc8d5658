//! The TOML config file: its model, defaults and validation.
//!
//! `load` reads a file and returns either a validated [`Config`] or every error found, each with
//! the file, the line and the key.

mod action;
pub mod cidr;
mod duration;
mod error;
mod listener;
mod target_group;
mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use action::{Action, WeightedTargetGroup};
pub use duration::{parse as parse_duration, Duration};
pub use error::{ConfigError, ConfigErrors, Locator};
pub use listener::{Conditions, DesyncMitigation, Limits, Listener, ListenerProtocol, OneOrMany, RateLimit, Rule};
pub use target_group::{
    parse_matcher, Algorithm, HealthCheck, HealthCheckProtocol, ProtocolVersion, ProxyProtocol, Stickiness, Target,
    TargetGroup, TargetProtocol,
};

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin API; absent, ballast serves no admin API.
    #[serde(default)]
    pub admin: Option<Admin>,
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub target_groups: Vec<TargetGroup>,
    /// The directory relative paths in the file are resolved against.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[admin]`: where the admin API, metrics and dashboard listen.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    pub bind: String,
    pub token_file: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin { bind: "127.0.0.1:9900".into(), token_file: None }
    }
}

/// `[runtime]`: the process itself.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Threads serving traffic; 0 means one per core.
    pub worker_threads: usize,
    /// Whether each worker thread keeps to a core of its own.
    pub pin_workers: bool,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime { worker_threads: 0, pin_workers: true }
    }
}

/// One `[[certificates]]` table: a PEM chain and its key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub name: String,
    pub cert: String,
    pub key: String,
}

impl Config {
    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.base_dir.join(path)
    }

    /// The target group named `name`.
    pub fn target_group(&self, name: &str) -> Option<&TargetGroup> {
        self.target_groups.iter().find(|g| g.name == name)
    }
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: None,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&file, &source, base_dir)
}

/// Parses and validates config text; `file` names it in errors.
pub fn parse(file: &str, source: &str, base_dir: PathBuf) -> Result<Config, ConfigErrors> {
    let locator = Locator::new(source);
    let mut config: Config = toml::from_str(source).map_err(|e| {
        let offset = e.span().map(|s| s.start);
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line: offset.map(|o| locator.line_of(o)),
            key: offset.map(|o| locator.key_at(o)).unwrap_or_default(),
            message: e.message().to_string(),
        }])
    })?;
    config.base_dir = base_dir;
    let problems = validate::validate(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(
            problems
                .into_iter()
                .map(|(key, message)| ConfigError { file: file.to_string(), line: locator.line(&key), key, message })
                .collect(),
        ))
    }
}
