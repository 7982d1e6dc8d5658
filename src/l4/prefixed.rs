//! Reading a PROXY protocol header off a connection, and handing on the bytes after it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::proxy_protocol::{self, ProxyError, ProxyHeader, MAX_HEADER};

/// A stream whose first bytes were already read: they are served again before the rest.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with `prefix` to be read first.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed { prefix, offset: 0, inner }
    }

    /// The bytes not yet handed on, and the stream.
    pub fn into_parts(self) -> (Vec<u8>, S) {
        (self.prefix[self.offset..].to_vec(), self.inner)
    }
}

/// Reads the PROXY header that must open the connection, within `timeout`.
pub async fn read_proxy_header<S: AsyncRead + Unpin>(
    mut stream: S,
    timeout: Duration,
) -> Result<(ProxyHeader, Prefixed<S>), ProxyError> {
    let mut buf = Vec::with_capacity(256);
    let read = async {
        loop {
            if let Some((header, used)) = proxy_protocol::parse(&buf)? {
                return Ok((header, used));
            }
            if buf.len() >= MAX_HEADER {
                return Err(ProxyError::Malformed("header too long"));
            }
            let mut chunk = [0u8; 512];
            // Read no further than the longest header could need, in small steps.
            let want = chunk.len().min(MAX_HEADER - buf.len());
            let n = stream.read(&mut chunk[..want]).await.map_err(|_| ProxyError::Missing)?;
            if n == 0 {
                return Err(ProxyError::Missing);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let (header, used) = tokio::time::timeout(timeout, read).await.map_err(|_| ProxyError::Missing)??;
    buf.drain(..used);
    Ok((header, Prefixed::new(buf, stream)))
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.offset < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.offset);
            buf.put_slice(&this.prefix[this.offset..this.offset + n]);
            this.offset += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

crate::delegate_async_write!(Prefixed);
