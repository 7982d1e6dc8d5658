//! L7 forwarding: header rewriting, the upstream connection pools, WebSocket tunnels, and
//! the balancer's own short answers.

mod answer;
mod body;
pub(crate) mod connector;
mod forward;
pub mod h1;
mod h2_targets;
mod headers;
mod upstream;

pub use answer::{answer, own, ElbAnswer};
pub use body::ProxyBody;
pub use forward::{forward, Client, CloseAfter};
pub use h1::IdlePool;
pub use upstream::Upstream;
