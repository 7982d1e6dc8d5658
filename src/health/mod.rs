//! Active health checks of targets (`tcp`, `http`, `https`): what counts as healthy and one
//! check of one target.
//!
//! This module only answers "is this target healthy right now, and if not, why?"; when to ask
//! and what to do with the answer (thresholds, target states) belong to the caller.

mod matcher;
mod probe;

pub use matcher::{InvalidMatcher, Matcher};
pub use probe::{probe, FailReason, ProbeOutcome};
mod supervisor;
pub use supervisor::supervise;
