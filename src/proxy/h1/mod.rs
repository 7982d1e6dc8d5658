//! ballast's own HTTP/1.1 engine. It forwards the common request — HTTP/1.1 from the client,
//! a plain HTTP/1.1 target group, no upgrade, no chunked upload — in the client connection's
//! own task, over pooled target connections, passing bodies on as they come. HTTP/2 clients'
//! body-less requests to the same targets go over the same pool (`client`). hyper serves
//! everything else (WebSocket, HTTPS and HTTP/2 targets, chunked uploads, `Expect`).
//!
//! Why not hyper for all: measured against HAProxy, hyper's server and client pair spent
//! twice HAProxy's CPU time per small request (`bench/RESULTS.md`), most of it in handing
//! each request between tasks and in building header maps the balancer does not need.

pub mod client;
mod exchange;
pub mod own_answer;
mod pool;
pub mod request;
mod response;

pub use exchange::{forward, Ended};
pub use pool::{IdlePool, TargetConnection};
pub use request::{RequestFacts, MAX_FIELDS};
