//! Worker threads, thread per core as HAProxy and NGINX run: each worker is a single-threaded
//! runtime with its own accept socket per TCP listener (`SO_REUSEPORT`, so the kernel spreads
//! new connections), and a connection stays on the worker that accepted it. No task moves
//! between threads, and no request wakes another thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

static WORKERS: OnceLock<Vec<Handle>> = OnceLock::new();

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The runtime of worker `index`: one thread, named `ballast-w<index>` (as `top -H` shows it),
/// kept on `core` when given. (tokio's
/// multi-thread scheduler with one worker rather than its current-thread one: it runs a task
/// just woken by another at once, which HTTP/2 streams and hyper's client connections, handing
/// each request between two tasks, measured 30% faster with.)
pub fn runtime(index: usize, core: Option<usize>) -> std::io::Result<Runtime> {
    // The runtime's first thread is its worker; later ones are its blocking pool's, which
    // neither take the worker's name nor its core.
    let (named, started) = (AtomicBool::new(false), AtomicBool::new(false));
    Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name_fn(move || match named.swap(true, Ordering::Relaxed) {
            false => format!("ballast-w{index}"),
            true => format!("ballast-b{index}"),
        })
        .on_thread_start(move || {
            if !started.swap(true, Ordering::Relaxed) {
                WORKER.set(index);
                if let Some(core) = core {
                    stay_on(core);
                }
            }
        })
        .enable_all()
        .build()
}

/// Starts the workers: `main` (the runtime of [`runtime`]`(0, cores[0])`) is worker 0, and
/// `count - 1` more are started beside it, worker `i` on `cores[i]` when `cores` is given.
/// Called once, before anything listens.
pub fn start(count: usize, main: Handle, cores: Option<&[usize]>) -> std::io::Result<()> {
    let mut handles = vec![main];
    for index in 1..count.max(1) {
        let runtime = runtime(index, cores.and_then(|c| c.get(index).copied()))?;
        handles.push(runtime.handle().clone());
        // Workers serve until the process ends.
        std::mem::forget(runtime);
    }
    // A second call keeps the first workers.
    let _ = WORKERS.set(handles);
    Ok(())
}

/// The cores for `count` workers, one each, when the process may run on exactly `count`
/// cores (all the machine's, or those `taskset` gives it); otherwise `None`: with fewer
/// workers, or a container's CPU quota, the kernel places them. Two workers left to share a
/// core take turns at the scheduler's tick (4 ms): measured, 2% of requests waited that
/// long, with one core free.
pub fn cores_for(count: usize) -> Option<Vec<usize>> {
    let cores = usable_cores();
    (count == cores.len()).then_some(cores)
}

#[cfg(target_os = "linux")]
fn usable_cores() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled in by sched_getaffinity.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect()
    }
}

#[cfg(not(target_os = "linux"))]
fn usable_cores() -> Vec<usize> {
    Vec::new()
}

/// Keeps the calling thread on `core`; a failure leaves it free to move.
#[cfg(target_os = "linux")]
fn stay_on(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET adds one core inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(not(target_os = "linux"))]
fn stay_on(_core: usize) {}

/// The runtime of worker `index`, once the workers are started.
pub fn handle(index: usize) -> Option<&'static Handle> {
    WORKERS.get().and_then(|handles| handles.get(index))
}

/// The workers' runtimes; only the current runtime when no workers were started (a library
/// user, a test).
pub fn handles() -> Vec<Handle> {
    match WORKERS.get() {
        Some(handles) => handles.clone(),
        None => vec![Handle::current()],
    }
}

/// How many workers there are (1 when none were started).
pub fn count() -> usize {
    WORKERS.get().map_or(1, Vec::len)
}

/// The worker the calling thread is (0 outside the workers).
pub fn current() -> usize {
    WORKER.get()
}
