//! The body type of every response ballast sends to a client.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::h1::client::TargetBody;
use crate::target_group::OutstandingGuard;

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Either a target's streamed body (which keeps its request counted as outstanding until it
/// ends), through hyper's client or the engine's, or a short body ballast wrote itself.
#[derive(Debug)]
pub enum ProxyBody {
    Upstream { body: Incoming, outstanding: Option<OutstandingGuard> },
    Engine(TargetBody),
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(bytes.into()))
    }

    /// No body.
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, outstanding } => {
                // The target's draining ended while this body streamed: cut it.
                if outstanding.as_ref().is_some_and(|o| o.stats().closing().is_cancelled()) {
                    return Poll::Ready(Some(Err("the target was deregistered".into())));
                }
                Pin::new(body).poll_frame(cx).map_err(Into::into)
            }
            ProxyBody::Engine(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Engine(body) => body.is_end_stream(),
            ProxyBody::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Engine(body) => body.size_hint(),
            ProxyBody::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
