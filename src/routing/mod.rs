//! Rules, conditions and actions: pure functions from a request head to a decision.

mod action;
mod condition;
mod glob;
mod redirect;
mod request_head;
mod router;

pub use action::{ActionPlan, ForwardPlan};
pub use condition::Condition;
pub use glob::Glob;
pub use redirect::RedirectTemplate;
pub use request_head::{Fields, RequestHead};
pub use router::Router;
