//! L4: TCP and TLS connections copied whole (with `splice` on Linux), UDP flows, and the
//! PROXY protocol that carries a client's address across balancers.

#[cfg(target_os = "linux")]
pub mod poller;
pub mod prefixed;
pub mod proxy_protocol;
mod splice;
mod stream_copy;
pub mod tcp;
pub mod udp;

#[cfg(target_os = "linux")]
pub use poller::Inboxes;

/// Where other workers leave a listener's connections for a worker's loop; only Linux has
/// the loops.
#[cfg(not(target_os = "linux"))]
pub struct Inboxes;

#[cfg(not(target_os = "linux"))]
impl Inboxes {
    /// None to leave anything in.
    pub fn new(_workers: usize) -> Self {
        Inboxes
    }
}
