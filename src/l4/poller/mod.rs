//! A listener's own event loop for plain TCP connections on each worker: a `tcp` listener
//! forwarding to `tcp` targets, with no PROXY header either way (the NLB's usual shape).
//!
//! Most such connections are short: a request, an answer, both ends. The loop serves them
//! without a task, a timer or a runtime registration each, as HAProxy's and NGINX's loops
//! do: the two sockets join an epoll set of the loop's own (which the worker's reactor
//! watches), are read and written as the set reports them, and close without leaving it
//! first (the kernel drops a closed socket from the set). A connection that outlives a
//! second, or proves a bulk transfer, moves on to a task of its own (`tcp::relay`), where
//! `splice` and the idle timer take over; so does every connection when the loop ends (its
//! listener removed by a reload).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Handle;

use crate::balance::flow_hash;
use crate::config::{Algorithm, ProxyProtocol, TargetProtocol};
use crate::listener::accept::{hand_over, Listening, BACK_OFF};
use crate::listener::spread::{self, Held};
use crate::metrics::GaugeGuard;
use crate::routing::ActionPlan;
use crate::snapshot::Snapshot;
use crate::state::State;
use crate::target_group::{uptime_ms, PickRequest, Reason, TargetState, TargetStats};

mod conn;
mod inbox;

use conn::{Conn, Phase, Side, Stop, Way};
use inbox::Inbox;
pub use inbox::Inboxes;

/// How often the loop's connections are checked for idleness, the end of their target's
/// draining, a connect taking too long, and age.
const SWEEP: Duration = Duration::from_millis(250);
/// A connection older than this (ms) moves on to a task of its own at the next sweep.
const MOVE_AFTER_MS: u64 = 1000;
/// How long a connect may take (ms), as NLB's 10 s.
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// How many targets one client connection may try.
const CONNECT_ATTEMPTS: usize = 3;
/// Events taken from the set per system call.
const EVENTS: usize = 64;
/// Bytes read per copy.
const CHUNK: usize = 16 * 1024;
/// The token of the inbox's bell in the set (a connection's names its slot and a tag).
const BELL: u64 = u64::MAX;

/// Accepts the connections of the `tcp` or `tls` listener `name` on this worker until the
/// loop is stopped: those this loop can serve it serves, the others (TLS, PROXY headers,
/// targets named by host, connections `spread` sends to another worker) get a task each
/// (`tcp::connection`).
pub async fn serve(socket: Listening, state: Arc<State>, name: Arc<str>, inboxes: Arc<Inboxes>) {
    let (epoll, mut conns) = match Conns::new(Arc::clone(&state), Arc::clone(&name), inboxes) {
        Ok(made) => made,
        Err(e) => {
            tracing::warn!(listener = %name, error = %e, "no event loop of its own: a task per connection");
            let accepting = Arc::clone(&name);
            crate::listener::accept::accept_each(socket, &accepting, move |tcp, peer| {
                crate::l4::tcp::connection(tcp, peer, state, name)
            })
            .await;
            return;
        }
    };
    let mut sweep = std::pin::pin!(tokio::time::sleep(SWEEP));
    // After a failed accept (out of descriptors), accepting pauses; the connections do not.
    let mut paused = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let mut accepting = true;
    loop {
        tokio::select! {
            biased;
            ready = epoll.readable() => match ready {
                Ok(mut ready) => {
                    if conns.turn(epoll.as_raw_fd()) {
                        ready.clear_ready();
                    }
                }
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "the event loop failed");
                    return;
                }
            },
            accepted = socket.accept(), if accepting => match accepted {
                Ok((tcp, peer)) => conns.place(tcp, peer),
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    accepting = false;
                    paused.as_mut().reset(tokio::time::Instant::now() + BACK_OFF);
                }
            },
            () = &mut paused, if !accepting => accepting = true,
            () = &mut sweep, if conns.open > 0 => {
                conns.sweep();
                sweep.as_mut().reset(tokio::time::Instant::now() + SWEEP);
            }
        }
    }
}
/// The connections of one loop, by slot; an event names its slot and the socket's tag.
struct Conns {
    state: Arc<State>,
    name: Arc<str>,
    inboxes: Arc<Inboxes>,
    /// The worker this loop runs on, and the bell of its inbox.
    worker: usize,
    bell: OwnedFd,
    epoll: RawFd,
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
    open: usize,
    next_tag: u32,
    events: Vec<libc::epoll_event>,
    chunk: Vec<u8>,
}
/// A connection's tries of its group's targets.
struct Attempts {
    /// The config the connection was accepted under: its group, and the targets' places in
    /// it, hold across reloads.
    snapshot: Arc<Snapshot>,
    group: usize,
    zone: Option<String>,
    flow: u64,
    tried: Vec<usize>,
    made: usize,
    /// The target tried last, and when (`uptime_ms`).
    stats: Option<Arc<TargetStats>>,
    since: u64,
}
impl Conns {
    /// An empty loop, with its epoll set watched by the current worker's reactor, and its inbox
    /// open.
    fn new(state: Arc<State>, name: Arc<str>, inboxes: Arc<Inboxes>) -> io::Result<(AsyncFd<OwnedFd>, Conns)> {
        // SAFETY: a plain epoll_create1 and eventfd, each owned once it is known open.
        let owned = owned_fd(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let bell = owned_fd(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        let fd = owned.as_raw_fd();
        let mut rung = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLET) as u32, u64: BELL };
        // SAFETY: a plain epoll_ctl on the two descriptors just opened.
        if unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, bell.as_raw_fd(), &mut rung) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the set's descriptor stays open, and the same, until the `AsyncFd` that
        // owns it is dropped.
        let epoll = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }?;
        let worker = crate::shards::current();
        if let Some(mut slot) = inboxes.slot(worker) {
            *slot = Some(Inbox { waiting: Vec::new(), bell: bell.as_raw_fd() });
        }
        let conns = Conns {
            state,
            name,
            inboxes,
            worker,
            bell,
            epoll: fd,
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            next_tag: 0,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            chunk: Vec::with_capacity(CHUNK),
        };
        Ok((epoll, conns))
    }

    /// Serves a connection just accepted here, or leaves it for another worker's loop, as
    /// `spread` says.
    fn place(&mut self, tcp: std::net::TcpStream, peer: SocketAddr) {
        let (held, elsewhere) = spread::place_on();
        let back = match elsewhere {
            None => self.start(tcp, peer, held).map(|(tcp, held)| (tcp, peer, held)),
            Some(worker) => self.inboxes.post(worker, (tcp, peer, held)),
        };
        if let Some((tcp, peer, held)) = back {
            self.serve_apart(tcp, peer, held, elsewhere.and_then(crate::shards::handle));
        }
    }

    /// Serves a connection as a task of its own (`tcp::connection`), here or on `worker`.
    fn serve_apart(&self, tcp: std::net::TcpStream, peer: SocketAddr, held: Held, worker: Option<&'static Handle>) {
        if Handle::try_current().is_err() {
            return;
        }
        let (state, name) = (Arc::clone(&self.state), Arc::clone(&self.name));
        hand_over(tcp, peer, held, worker, &self.name, move |tcp, peer| {
            crate::l4::tcp::connection(tcp, peer, state, name)
        });
    }

    /// Takes the connections other workers left in the inbox.
    fn answer_bell(&mut self) {
        let mut count = 0u64;
        // SAFETY: an eventfd gives its 8-byte count.
        unsafe { libc::read(self.bell.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        for (tcp, peer, held) in self.inboxes.take(self.worker, false) {
            if let Some((tcp, held)) = self.start(tcp, peer, held) {
                self.serve_apart(tcp, peer, held, None);
            }
        }
    }

    /// Takes a connection just accepted, unless another path must serve it: then it comes
    /// back.
    fn start(&mut self, tcp: std::net::TcpStream, peer: SocketAddr, held: Held) -> Option<(std::net::TcpStream, Held)> {
        let snapshot = self.state.snapshot();
        let listener = snapshot.listener(&self.name)?;
        if listener.tls.is_some() || listener.proxy_protocol {
            return Some((tcp, held));
        }
        let ActionPlan::Forward(plan) = listener.router.default_action() else { return None };
        let group_index = plan.pick_group()?;
        let group = snapshot.target_groups.get(group_index)?;
        let plain =
            group.settings.proxy_protocol == ProxyProtocol::Off && group.settings.protocol == TargetProtocol::Tcp;
        if !plain || group.targets.iter().any(|t| t.socket_addr.is_none()) {
            return Some((tcp, held));
        }
        let permit = crate::guard::admit_connection(&self.state, listener, peer.ip())?;
        listener.metrics.new_connections.inc();
        let open = GaugeGuard::inc(listener.metrics.active_connections.clone());
        let (idle, bytes) = (listener.idle_timeout, listener.metrics.processed_bytes.clone());
        let flow = match group.settings.algorithm {
            Algorithm::FlowHash => flow_hash(peer, tcp.local_addr().unwrap_or(peer), 6),
            _ => 0,
        };
        // The client's first bytes, when already here (the usual case): they go with the
        // connect.
        self.chunk.clear();
        match socket2::SockRef::from(&tcp).recv(self.chunk.spare_capacity_mut()) {
            // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
            Ok(n) => unsafe { self.chunk.set_len(n) },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
        // (An end met here, nothing read and no "would block", is met again by a read.)
        let mut attempts = Box::new(Attempts {
            snapshot: Arc::clone(&snapshot),
            group: group_index,
            zone: listener.zone.clone(),
            flow,
            tried: Vec::new(),
            made: 0,
            stats: None,
            since: uptime_ms(),
        });
        let (target, sent) = connect_next(&mut attempts, &self.chunk)?;
        drop(snapshot);
        // Only what did not go with the connect is kept.
        let up = Way {
            left: self.chunk.get(sent.unwrap_or(0)..).unwrap_or_default().to_vec(),
            moved: self.chunk.len() as u64,
            ..Way::default()
        };
        let now = uptime_ms();
        let mut conn = Conn {
            client: tcp,
            target,
            tags: [0, 0],
            out: [false, false],
            up,
            down: Way::default(),
            phase: Phase::Connecting(attempts),
            started: now,
            last: now,
            idle,
            bytes,
            _permit: permit,
            _open: open,
            _held: held,
        };
        if sent.is_some() {
            conn.connected();
        }
        let index = self.free.pop().unwrap_or(self.slots.len());
        conn.tags = [self.tag(), self.tag()];
        conn.out[Side::Target as usize] = sent.is_none() || !conn.up.left.is_empty();
        let watched = watch(self.epoll, libc::EPOLL_CTL_ADD, &conn, index, Side::Client)
            .and_then(|()| watch(self.epoll, libc::EPOLL_CTL_ADD, &conn, index, Side::Target));
        if watched.is_err() {
            if index < self.slots.len() {
                self.free.push(index);
            }
            return None;
        }
        if index == self.slots.len() {
            self.slots.push(Some(conn));
        } else {
            self.slots[index] = Some(conn);
        }
        self.open += 1;
        None
    }

    fn tag(&mut self) -> u32 {
        self.next_tag = self.next_tag.wrapping_add(1);
        self.next_tag
    }

    /// Serves what the set reports; `true` when it had nothing more.
    fn turn(&mut self, epoll: RawFd) -> bool {
        // SAFETY: `events` holds `EVENTS` entries for the kernel to fill.
        let n = unsafe { libc::epoll_wait(epoll, self.events.as_mut_ptr(), EVENTS as i32, 0) };
        if n < 0 {
            return false;
        }
        let now = uptime_ms();
        for i in 0..n as usize {
            let libc::epoll_event { events, u64: token } = self.events[i];
            if token == BELL {
                self.answer_bell();
                continue;
            }
            self.on_event((token >> 32) as usize, token as u32, events as i32, now);
        }
        (n as usize) < EVENTS
    }

    fn on_event(&mut self, index: usize, tag: u32, flags: i32, now: u64) {
        let Some(Some(conn)) = self.slots.get_mut(index) else { return };
        let side = match tag {
            t if t == conn.tags[0] => Side::Client,
            t if t == conn.tags[1] => Side::Target,
            _ => return,
        };
        let error = flags & libc::EPOLLERR != 0;
        let hup = flags & (libc::EPOLLRDHUP | libc::EPOLLHUP) != 0;
        let readable = flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) != 0;
        let writable = flags & libc::EPOLLOUT != 0;
        match side {
            Side::Client => conn.up.hup |= hup && !error,
            Side::Target => conn.down.hup |= hup && !error,
        }
        if let Phase::Connecting(_) = conn.phase {
            if side == Side::Client {
                // Read once connected: the client's bytes and end wait in its socket.
                if error {
                    self.close(index, false);
                }
                return;
            }
            if error || flags & libc::EPOLLHUP != 0 {
                self.retry(index);
                return;
            }
            if !writable {
                return;
            }
            conn.connected();
            // What the client sent meanwhile goes after what waited.
            let chunk = &mut self.chunk;
            let mut outcome = match conn.up.left.is_empty() {
                true => conn.pump(Side::Client, chunk, now),
                false => conn.flush(Side::Target, chunk, now),
            };
            if readable {
                outcome = outcome.and_then(|()| conn.pump(Side::Target, chunk, now));
            }
            self.settle(index, outcome);
            return;
        }
        if error {
            // What came before a reset still goes on, and the reset ends the connection as a
            // failure; with bytes still to write, the connection's own task finishes that.
            let waiting = |conn: &Conn| !(conn.up.left.is_empty() && conn.down.left.is_empty());
            match conn.pump(side, &mut self.chunk, now) {
                Err(Stop::Done) => self.close(index, true),
                Ok(()) if waiting(conn) => self.move_on(index),
                _ => self.close(index, false),
            }
            return;
        }
        // A writable socket takes what waited for it, and its source reads on.
        let chunk = &mut self.chunk;
        let mut outcome = Ok(());
        if writable {
            outcome = conn.flush(side, chunk, now);
        }
        if readable {
            outcome = outcome.and_then(|()| conn.pump(side, chunk, now));
        }
        self.settle(index, outcome);
    }

    /// Acts on how a step ended: the connection closes, moves on, asks for writable events,
    /// or waits.
    fn settle(&mut self, index: usize, outcome: Result<(), Stop>) {
        let Some(Some(conn)) = self.slots.get_mut(index) else { return };
        match outcome {
            Err(Stop::Done) => self.close(index, true),
            Err(Stop::Failed) => self.close(index, false),
            Err(Stop::Bulk) => self.move_on(index),
            Ok(()) => {
                // Bytes waiting for a socket: it must say when it takes more.
                for (side, way) in
                    [(Side::Target, !conn.up.left.is_empty()), (Side::Client, !conn.down.left.is_empty())]
                {
                    if way && !conn.out[side as usize] {
                        conn.out[side as usize] = true;
                        if watch(self.epoll, libc::EPOLL_CTL_MOD, conn, index, side).is_err() {
                            self.close(index, false);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The target tried last refused or timed out: marked down, and the next one tried.
    fn retry(&mut self, index: usize) {
        let tag = self.tag();
        let Some(Some(conn)) = self.slots.get_mut(index) else { return };
        let Phase::Connecting(attempts) = &mut conn.phase else { return };
        if let Some(stats) = &attempts.stats {
            stats.set(TargetState::Unhealthy, Reason::ConnectionFailed);
        }
        let Some((target, sent)) = connect_next(attempts, &conn.up.left) else {
            tracing::debug!(listener = %self.name, "no target could be reached");
            self.close(index, false);
            return;
        };
        // The old socket closes, and leaves the set with it.
        conn.target = target;
        conn.tags[1] = tag;
        conn.out[1] = true;
        if let Some(sent) = sent {
            conn.up.left.drain(..sent);
            conn.connected();
            conn.out[1] = !conn.up.left.is_empty();
        }
        if watch(self.epoll, libc::EPOLL_CTL_ADD, conn, index, Side::Target).is_err() {
            self.close(index, false);
            return;
        }
        // Connected at once: what the client sent while the targets before failed (its events
        // were passed over) is read now; bytes still waiting resume it once they go.
        if sent.is_some() && conn.up.left.is_empty() {
            let outcome = conn.pump(Side::Client, &mut self.chunk, uptime_ms());
            self.settle(index, outcome);
        }
    }

    /// Closes a connection; `done` when both ways ended (its bytes are counted).
    fn close(&mut self, index: usize, done: bool) {
        if let Some(conn) = self.slots.get_mut(index).and_then(Option::take) {
            if done {
                conn.bytes.inc_by(conn.up.moved + conn.down.moved);
            }
            self.free.push(index);
            self.open -= 1;
        }
    }

    /// Moves a connection on to a task of its own.
    fn move_on(&mut self, index: usize) {
        let Some(conn) = self.slots.get_mut(index).and_then(Option::take) else { return };
        self.free.push(index);
        self.open -= 1;
        for fd in [conn.client.as_raw_fd(), conn.target.as_raw_fd()] {
            // SAFETY: a plain EPOLL_CTL_DEL of a socket the connection owns.
            unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
        }
        conn.into_task(Arc::clone(&self.name));
    }

    /// Closes connections idle past their timeout or whose target's draining ended, gives up
    /// on connects that take too long, and moves old connections on.
    fn sweep(&mut self) {
        let now = uptime_ms();
        for index in 0..self.slots.len() {
            let Some(conn) = &self.slots[index] else { continue };
            match &conn.phase {
                Phase::Connecting(attempts) => {
                    if now.saturating_sub(attempts.since) >= CONNECT_TIMEOUT_MS {
                        self.retry(index);
                    }
                }
                Phase::Open { closing, .. } => {
                    if closing.is_cancelled() || now.saturating_sub(conn.last) >= conn.idle.as_millis() as u64 {
                        self.close(index, false);
                    } else if now.saturating_sub(conn.started) >= MOVE_AFTER_MS {
                        self.move_on(index);
                    }
                }
            }
        }
    }
}

impl Drop for Conns {
    /// The loop is ending (its listener was removed): its connections go on as tasks.
    fn drop(&mut self) {
        for (tcp, peer, held) in self.inboxes.take(self.worker, true) {
            self.serve_apart(tcp, peer, held, None);
        }
        for conn in self.slots.drain(..).flatten() {
            conn.into_task(Arc::clone(&self.name));
        }
    }
}
/// A descriptor just opened, owned; or the error of the call that failed to open it.
fn owned_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds (or changes) `side`'s socket of `conn` in the set.
fn watch(epoll: RawFd, op: libc::c_int, conn: &Conn, index: usize, side: Side) -> io::Result<()> {
    let out = if conn.out[side as usize] { libc::EPOLLOUT } else { 0 };
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET | out) as u32,
        u64: (index as u64) << 32 | u64::from(conn.tags[side as usize]),
    };
    // SAFETY: a plain epoll_ctl on descriptors the loop and the connection own.
    if unsafe { libc::epoll_ctl(epoll, op, conn.socket(side).as_raw_fd(), &mut event) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Picks and connects to targets of the group until one takes the connection or the
/// attempts run out; `first` goes with the connect when it can. A target that refuses at
/// once is marked down.
///
/// The target's ACKs are not held back here (`sending_first` false), though the first bytes
/// often go at once: the ACKs a loop's connection would hold back are sent later from inside
/// the target's own system calls (on loopback, a packet is processed where it is sent), and
/// measured at one worker thread that moved more work onto the target's core than it saved
/// (bench/RESULTS.md, step 47).
fn connect_next(attempts: &mut Attempts, first: &[u8]) -> Option<(std::net::TcpStream, Option<usize>)> {
    let Attempts { snapshot, group, zone, flow, tried, made, stats, since } = attempts;
    let group = snapshot.target_groups.get(*group)?;
    while *made < CONNECT_ATTEMPTS {
        *made += 1;
        let target = group.pick(PickRequest { tried, zone: zone.as_deref(), sticky: None, flow: *flow })?;
        if let Some(i) = group.index_of(target) {
            tried.push(i);
        }
        *stats = Some(Arc::clone(&target.stats));
        *since = uptime_ms();
        let Some(addr) = target.socket_addr else { continue };
        match crate::target_group::begin(addr, false, first) {
            Ok(started) => return Some(started),
            Err(_) => target.stats.set(TargetState::Unhealthy, Reason::ConnectionFailed),
        }
    }
    None
}
