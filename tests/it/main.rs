//! Black-box tests of the ballast binary: real listeners on 127.0.0.1 in front of real
//! backend servers, driven by real clients.

mod access;
mod admin;
mod algorithms;
mod cli;
mod common;
mod desync;
mod engine;
mod l4;
mod limits;
mod metrics;
mod proxy;
mod routing;
mod streaming;
mod targets;
mod tls;
mod websocket;
mod workers;
