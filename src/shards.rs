//! Worker threads, thread per core as HAProxy and NGINX run: each worker is a single-threaded
//! runtime with its own accept socket per TCP listener (`SO_REUSEPORT`, so the kernel spreads
//! new connections), and a connection stays on the worker that accepted it. No task moves
//! between threads, and no request wakes another thread.

use std::cell::Cell;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

static WORKERS: OnceLock<Vec<Handle>> = OnceLock::new();

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The runtime of worker `index`: one thread. (tokio's multi-thread scheduler with one worker
/// rather than its current-thread one: it runs a task just woken by another at once, which
/// HTTP/2 streams and hyper's client connections, handing each request between two tasks,
/// measured 30% faster with.)
pub fn runtime(index: usize) -> std::io::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("ballast-worker-{index}"))
        .on_thread_start(move || WORKER.set(index))
        .enable_all()
        .build()
}

/// Starts the workers: `main` (the runtime of [`runtime`]`(0)`) is worker 0, and `count - 1`
/// more are started beside it. Called once, before anything listens.
pub fn start(count: usize, main: Handle) -> std::io::Result<()> {
    let mut handles = vec![main];
    for index in 1..count.max(1) {
        let runtime = runtime(index)?;
        handles.push(runtime.handle().clone());
        // Workers serve until the process ends.
        std::mem::forget(runtime);
    }
    // A second call keeps the first workers.
    let _ = WORKERS.set(handles);
    Ok(())
}

/// The workers' runtimes; only the current runtime when no workers were started (a library
/// user, a test).
pub fn handles() -> Vec<Handle> {
    match WORKERS.get() {
        Some(handles) => handles.clone(),
        None => vec![Handle::current()],
    }
}

/// The worker the calling thread is (0 outside the workers).
pub fn current() -> usize {
    WORKER.get()
}
