//! L4: TCP and TLS connections copied whole (with `splice` on Linux), UDP flows, and the
//! PROXY protocol that carries a client's address across balancers.

pub mod prefixed;
pub mod proxy_protocol;
mod splice;
mod stream_copy;
pub mod tcp;
pub mod udp;
