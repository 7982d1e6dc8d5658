//! Worker threads, thread per core as HAProxy and NGINX run: each worker is a single-threaded
//! runtime with its own accept socket per TCP listener (`SO_REUSEPORT`, so the kernel spreads
//! new connections), and a connection stays on the worker that accepted it. No task moves
//! between threads, and no request wakes another thread.

use std::cell::Cell;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle};

static WORKERS: OnceLock<Vec<Handle>> = OnceLock::new();

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Starts the workers: the calling thread's runtime (`main`) is worker 0, and `count - 1`
/// more threads are started beside it. Called once, before anything listens.
pub fn start(count: usize, main: Handle) -> std::io::Result<()> {
    let mut handles = vec![main];
    for index in 1..count.max(1) {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        handles.push(runtime.handle().clone());
        std::thread::Builder::new().name(format!("ballast-worker-{index}")).spawn(move || {
            WORKER.set(index);
            runtime.block_on(std::future::pending::<()>());
        })?;
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
