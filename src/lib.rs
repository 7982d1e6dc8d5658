//! ballast: a self-hosted Elastic Load Balancing — L7 (ALB), L4 (NLB), L3 (GWLB) and auto
//! scaling — in one binary, run from one TOML file and a live admin API.

pub mod admin;
pub mod balance;
pub mod config;
pub mod deadline;
pub mod demo;
pub mod guard;
pub mod health;
mod io_delegate;
pub mod l4;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod shards;
pub mod snapshot;
pub mod state;
pub mod target_group;
#[cfg(all(test, target_os = "linux"))]
mod testing;
