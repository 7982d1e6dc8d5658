//! HTTP/1.1 requests served by ballast's own engine (`proxy::h1`): read each head off the
//! guarded connection, route it, and forward it, all in the connection's task. A request
//! the engine does not carry goes to hyper, with the connection, from its first byte.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::dispatch::{flow_of, rate_limited, strip_port, RATE_LIMITED};
use crate::config::{ProtocolVersion, TargetProtocol};
use crate::guard::http1_stream::{Decision, GuardedIo, OwnDecisions};
use crate::guard::rate_limit::retry_after_seconds;
use crate::metrics::{class_index, CodeLabel};
use crate::proxy::h1::{self, own_answer, request, Ended, RequestFacts, Spare, MAX_FIELDS};
use crate::proxy::Client;
use crate::routing::{ActionPlan, Fields, RequestHead};
use crate::snapshot::{ListenerPlan, Snapshot};
use crate::state::State;
use crate::target_group::{PickRequest, Target};

/// Room for a request head.
const HEAD_ROOM: usize = 4096;

/// The most of an unwanted upload read (and dropped) before closing its connection.
const LINGER_BYTES: u64 = 1 << 20;

/// How the engine let go of a connection.
pub enum Outcome {
    /// The connection is over.
    Closed,
    /// The client has sent nothing more yet: wait for its next request, then call again.
    Idle,
    /// hyper must serve the connection, starting with these bytes already read from it.
    Hyper(Vec<u8>),
}

/// What to do with the request whose head is at the start of the buffer.
enum Step<'s> {
    /// The head is not whole yet.
    NeedMore,
    /// hyper's to serve.
    Hyper,
    /// The balancer's own answer, in the output buffer; `group`: the group it counts for.
    Answer { status: u16, close: bool, group: Option<usize> },
    /// Forward to `target` of group `group`; the target's head is in the output buffer.
    Forward { group: usize, target: &'s Target, facts: RequestFacts },
}

/// Serves the requests the client has sent on `io`, until it has sent no more for now, the
/// connection ends, or a request needs hyper.
pub async fn serve<S>(io: &mut GuardedIo<S>, state: &State, name: &str, client: &Client) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Spare::take();
    let mut out: Vec<u8> = Vec::new();
    loop {
        if buf.is_empty() && !io.has_buffered() {
            // Between requests the connection holds no buffer, and no engine state.
            io.release_buffers();
            return Outcome::Idle;
        }
        let snapshot = state.snapshot();
        // A listener a reload removed: hyper answers 503.
        let Some(listener) = snapshot.listener(name) else { return Outcome::Hyper(buf.into_inner()) };
        let step = loop {
            out.clear();
            match prepare(state, &snapshot, listener, *client, &buf, io.own_decisions(), &mut out) {
                Step::NeedMore => {}
                step => break step,
            }
            buf.reserve(HEAD_ROOM);
            match io.read_buf(&mut *buf).await {
                Ok(0) | Err(_) => return Outcome::Closed,
                Ok(_) => {}
            }
        };
        // A body the client may still be sending when its connection closes.
        let uploading = match step {
            Step::Forward { facts, .. } => facts.body_len > 0,
            Step::Answer { close, .. } => close,
            _ => false,
        };
        let keep_alive = match step {
            Step::NeedMore | Step::Hyper => return Outcome::Hyper(buf.into_inner()),
            Step::Answer { status, close, group } => {
                count(state, listener, group, status, true);
                if write_answer(io, &out).await.is_err() {
                    return Outcome::Closed;
                }
                buf.clear();
                !close
            }
            Step::Forward { group, target, facts } => {
                let timeout = snapshot.target_groups[group].settings.target_timeout;
                let answered = |status: u16, waited: std::time::Duration| {
                    if let Some(m) = snapshot.group_metrics.get(group) {
                        m.response_seconds.observe(waited.as_secs_f64());
                    }
                    count(state, listener, Some(group), status, false);
                };
                // Timed on the connection's own timer, unless the client's body is timed on it.
                let mut deadline = io.lend_timer();
                let timeout = h1::AnswerTimeout { limit: timeout, deadline: &mut deadline };
                let ended = h1::forward(io, &mut buf, &mut out, target, facts, timeout, answered).await;
                io.give_back_timer(deadline);
                match ended {
                    Ended::Answered { keep_alive } => keep_alive,
                    Ended::Failed { status, why, connection_error, body_unread } => {
                        if connection_error {
                            if let Some(m) = snapshot.group_metrics.get(group) {
                                m.connection_errors.inc();
                            }
                        }
                        count(state, listener, Some(group), status, true);
                        let close = facts.close || body_unread;
                        out.clear();
                        own_answer::write(&mut out, status, &why, None, close, facts.head_method);
                        if write_answer(io, &out).await.is_err() {
                            return Outcome::Closed;
                        }
                        buf.clear();
                        !close
                    }
                    Ended::Broken => false,
                }
            }
        };
        if !keep_alive {
            close(io, uploading).await;
            return Outcome::Closed;
        }
    }
}

/// Reads the head at the start of `buf` and decides what to do with it. Everything that
/// counts or consumes (a rate limit's token, the guard's decision) happens only once the
/// engine keeps the request: a request handed to hyper is judged there afresh.
fn prepare<'s>(
    state: &State,
    snapshot: &'s Snapshot,
    listener: &ListenerPlan,
    client: Client,
    buf: &[u8],
    decisions: &mut OwnDecisions,
    out: &mut Vec<u8>,
) -> Step<'s> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let head = match request::parse(buf, &mut fields) {
        Ok(Some(head)) => head,
        Ok(None) if buf.len() < listener.limits.max_header_bytes => return Step::NeedMore,
        Ok(None) | Err(_) => return Step::Hyper,
    };
    if decisions.front() != Some(&Decision::Forward { close: false }) {
        return Step::Hyper;
    }
    let (path, query) = head.target.split_once('?').unwrap_or((head.target, ""));
    let routed = RequestHead {
        method: head.method,
        host: strip_port(head.host),
        path,
        query,
        headers: Fields::Raw(head.fields),
        source_ip: client.peer.ip(),
        protocol: client.protocol,
        port: client.listener_port,
    };
    let (rule, action) = listener.router.route_rule(&routed);
    let ActionPlan::Forward(plan) = action else { return Step::Hyper };
    let Some((index, group)) = plan.pick_group().and_then(|i| snapshot.target_groups.get(i).map(|g| (i, g))) else {
        return Step::Hyper;
    };
    let settings = &group.settings;
    if settings.protocol != TargetProtocol::Http
        || settings.protocol_version != ProtocolVersion::Http1
        || settings.stickiness.is_some()
    {
        return Step::Hyper;
    }
    // The engine keeps this request.
    decisions.pop_front();
    let facts = head.facts;
    // A body not read yet is not waited for after the balancer's own answer.
    let close = facts.close || facts.body_len > 0;
    if let Some(wait) = rate_limited(state, listener, rule, client) {
        let retry_after = format!("retry-after: {}", retry_after_seconds(wait));
        own_answer::write(out, 429, RATE_LIMITED, Some(&retry_after), close, facts.head_method);
        return Step::Answer { status: 429, close, group: None };
    }
    let pick = PickRequest { tried: &[], zone: listener.zone.as_deref(), sticky: None, flow: flow_of(group, client) };
    let Some(target) = group.pick(pick) else {
        let why = format!("target group `{}` has no target to take the request", group.name);
        own_answer::write(out, 503, &why, None, close, facts.head_method);
        return Step::Answer { status: 503, close, group: Some(index) };
    };
    request::write_for_target(out, &head, client);
    Step::Forward { group: index, target, facts }
}

/// Counts a request by status class, for its group (or among the listener's own answers
/// without one), and the balancer's own answers by code.
fn count(state: &State, listener: &ListenerPlan, group: Option<usize>, status: u16, own: bool) {
    let counters = match group {
        Some(i) => listener.metrics.requests_by_group.get(i).and_then(Option::as_ref),
        None => Some(&listener.metrics.requests_answered),
    };
    if let Some(counters) = counters {
        counters[class_index(status)].inc();
    }
    if own {
        state.metrics.elb_responses.get_or_create(&CodeLabel { code: status }).inc();
    }
}

/// Ends the connection after its last answer. TLS says goodbye properly; a client that does
/// not read it is not waited for. After an upload the target answered early, the rest of the
/// body is read and dropped for a moment, so that closing with it unread does not reset the
/// connection before the client has read the answer.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, uploading: bool) {
    let second = std::time::Duration::from_secs(1);
    let _ = tokio::time::timeout(second, io.shutdown()).await;
    if uploading {
        let mut rest = (&mut *io).take(LINGER_BYTES);
        let _ = tokio::time::timeout(second, tokio::io::copy(&mut rest, &mut tokio::io::sink())).await;
    }
}

async fn write_answer<S: AsyncWrite + Unpin>(io: &mut S, out: &[u8]) -> std::io::Result<()> {
    io.write_all(out).await?;
    io.flush().await
}
