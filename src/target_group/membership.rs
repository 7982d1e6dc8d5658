//! Which targets belong to each group: the file's, plus those registered through the API,
//! minus those deregistered, plus those still draining.

use std::collections::{HashMap, HashSet};

use crate::config::{self, Config};

/// The operator's intent for target membership; every change rebuilds the snapshot from it.
#[derive(Debug, Default, Clone)]
pub struct Membership {
    /// The last config file that validated.
    pub file: Config,
    /// Registered through the API, by group; kept across reloads while the group exists.
    added: HashMap<String, Vec<config::Target>>,
    /// File targets deregistered through the API, until the next reload.
    removed: HashSet<(String, String)>,
    /// Weights changed through the API, until the next reload.
    weights: HashMap<(String, String), u32>,
    /// Targets on their way out: still listed (as draining) until their drain ends.
    draining: HashMap<(String, String), config::Target>,
}

/// Why a membership change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("no target group is named `{0}`")]
    NoGroup(String),
    #[error("target `{0}` is not registered in this group")]
    NoTarget(String),
    #[error("target `{0}` is already registered in this group")]
    AlreadyRegistered(String),
    #[error("{0}")]
    Invalid(String),
}

impl Membership {
    /// Membership as the file says.
    pub fn new(file: Config) -> Self {
        Membership { file, ..Default::default() }
    }

    /// The config the snapshot is built from: the file with every group's current targets.
    pub fn effective(&self) -> Config {
        let mut config = self.file.clone();
        for group in &mut config.target_groups {
            let name = group.name.clone();
            group.targets.retain(|t| !self.removed.contains(&(name.clone(), t.address.clone())));
            group.targets.extend(self.added.get(&name).into_iter().flatten().cloned());
            for t in &mut group.targets {
                if let Some(w) = self.weights.get(&(name.clone(), t.address.clone())) {
                    t.weight = *w;
                }
            }
            for ((g, address), t) in &self.draining {
                if g == &name && !group.targets.iter().any(|x| &x.address == address) {
                    group.targets.push(t.clone());
                }
            }
        }
        config
    }

    /// The targets of `group` that are members (not draining).
    fn members(&self, group: &str) -> Vec<config::Target> {
        let Some(g) = self.file.target_group(group) else {
            return Vec::new();
        };
        g.targets
            .iter()
            .filter(|t| !self.removed.contains(&(group.to_string(), t.address.clone())))
            .chain(self.added.get(group).into_iter().flatten())
            .cloned()
            .collect()
    }

    /// Registers a target; it starts `initial`.
    pub fn register(&mut self, group: &str, target: config::Target) -> Result<(), MembershipError> {
        let g = self.file.target_group(group).ok_or_else(|| MembershipError::NoGroup(group.into()))?;
        target.host_port(g.port).map_err(MembershipError::Invalid)?;
        if target.weight > 999 {
            return Err(MembershipError::Invalid("weight must be between 0 and 999".into()));
        }
        if self.members(group).iter().any(|t| t.address == target.address) {
            return Err(MembershipError::AlreadyRegistered(target.address));
        }
        let key = (group.to_string(), target.address.clone());
        self.draining.remove(&key);
        if self.removed.remove(&key) {
            // A file target coming back: the file's entry serves again, with the new settings.
            self.weights.insert(key, target.weight);
        } else {
            self.added.entry(group.to_string()).or_default().push(target);
        }
        Ok(())
    }

    /// Deregisters a target: it drains, and `finish_draining` removes it.
    pub fn deregister(&mut self, group: &str, address: &str) -> Result<(), MembershipError> {
        if self.file.target_group(group).is_none() {
            return Err(MembershipError::NoGroup(group.into()));
        }
        let target = self
            .members(group)
            .into_iter()
            .find(|t| t.address == address)
            .ok_or_else(|| MembershipError::NoTarget(address.into()))?;
        let key = (group.to_string(), address.to_string());
        if let Some(list) = self.added.get_mut(group) {
            list.retain(|t| t.address != address);
        }
        if self.file.target_group(group).is_some_and(|g| g.targets.iter().any(|t| t.address == address)) {
            self.removed.insert(key.clone());
        }
        self.weights.remove(&key);
        self.draining.insert(key, target);
        Ok(())
    }

    /// Changes a member's weight.
    pub fn set_weight(&mut self, group: &str, address: &str, weight: u32) -> Result<(), MembershipError> {
        if self.file.target_group(group).is_none() {
            return Err(MembershipError::NoGroup(group.into()));
        }
        if weight > 999 {
            return Err(MembershipError::Invalid("weight must be between 0 and 999".into()));
        }
        if !self.members(group).iter().any(|t| t.address == address) {
            return Err(MembershipError::NoTarget(address.into()));
        }
        self.weights.insert((group.to_string(), address.to_string()), weight);
        Ok(())
    }

    /// Ends a drain: the target leaves the group.
    pub fn finish_draining(&mut self, group: &str, address: &str) -> bool {
        self.draining.remove(&(group.to_string(), address.to_string())).is_some()
    }

    /// Takes a new file; targets that were members and no longer are start draining, and the
    /// returned list names them.
    pub fn reload(&mut self, file: Config) -> Vec<(String, String)> {
        let before: Vec<(String, config::Target)> = self
            .file
            .target_groups
            .iter()
            .flat_map(|g| self.members(&g.name).into_iter().map(move |t| (g.name.clone(), t)))
            .collect();
        self.file = file;
        self.removed.clear();
        self.weights.clear();
        let names: HashSet<String> = self.file.target_groups.iter().map(|g| g.name.clone()).collect();
        self.added.retain(|g, _| names.contains(g));
        let mut leaving = Vec::new();
        for (group, target) in before {
            let still = self.members(&group).iter().any(|t| t.address == target.address);
            if !still && names.contains(&group) {
                leaving.push((group.clone(), target.address.clone()));
                self.draining.insert((group, target.address.clone()), target);
            }
        }
        self.draining.retain(|(g, _), _| names.contains(g));
        leaving
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(targets: &[&str]) -> Config {
        let list: Vec<String> = targets.iter().map(|a| format!("{{ address = \"{a}\" }}")).collect();
        let text = format!("[[target_groups]]\nname = \"g\"\ntargets = [{}]\n", list.join(", "));
        config::parse("t.toml", &text, Default::default()).expect("valid")
    }

    fn addresses(m: &Membership) -> Vec<String> {
        let mut v: Vec<String> = m.effective().target_groups[0].targets.iter().map(|t| t.address.clone()).collect();
        v.sort();
        v
    }

    fn target(address: &str) -> config::Target {
        config::Target { address: address.into(), weight: 1, zone: None }
    }

    #[test]
    fn register_deregister_and_drain() {
        let mut m = Membership::new(file(&["10.0.0.1:80"]));
        m.register("g", target("10.0.0.2:80")).unwrap();
        assert_eq!(addresses(&m), ["10.0.0.1:80", "10.0.0.2:80"]);
        assert_eq!(
            m.register("g", target("10.0.0.2:80")),
            Err(MembershipError::AlreadyRegistered("10.0.0.2:80".into()))
        );
        m.deregister("g", "10.0.0.1:80").unwrap();
        // Still listed while draining.
        assert_eq!(addresses(&m), ["10.0.0.1:80", "10.0.0.2:80"]);
        assert!(m.finish_draining("g", "10.0.0.1:80"));
        assert_eq!(addresses(&m), ["10.0.0.2:80"]);
        assert_eq!(m.deregister("g", "10.0.0.9:80"), Err(MembershipError::NoTarget("10.0.0.9:80".into())));
        assert_eq!(m.register("x", target("10.0.0.2:80")), Err(MembershipError::NoGroup("x".into())));
        assert!(matches!(m.register("g", target("nonsense")), Err(MembershipError::Invalid(_))));
    }

    #[test]
    fn reload_keeps_api_targets_and_drains_what_the_file_dropped() {
        let mut m = Membership::new(file(&["10.0.0.1:80", "10.0.0.3:80"]));
        m.register("g", target("10.0.0.2:80")).unwrap();
        m.set_weight("g", "10.0.0.1:80", 7).unwrap();
        let leaving = m.reload(file(&["10.0.0.1:80"]));
        assert_eq!(leaving, vec![("g".to_string(), "10.0.0.3:80".to_string())]);
        assert_eq!(addresses(&m), ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        assert_eq!(m.effective().target_groups[0].targets[0].weight, 1, "the file's weight again");
        m.finish_draining("g", "10.0.0.3:80");
        assert_eq!(addresses(&m), ["10.0.0.1:80", "10.0.0.2:80"]);
    }
}
