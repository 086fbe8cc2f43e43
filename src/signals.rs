//! SIGINT and SIGTERM become one [`Shutdown`] trigger, on a thread of their own.
//!
//! The signals are blocked in the calling thread before any other thread exists, so every
//! thread started later inherits the mask and only the dedicated thread, sitting in
//! `sigwait`, ever receives them. No async-signal-safety puzzles: the handler is ordinary
//! code on an ordinary thread.

use std::io;

use c10k_models::Shutdown;

/// Blocks SIGINT and SIGTERM in this thread (and so in all threads it starts from now on)
/// and starts a thread that triggers `shutdown` when one arrives.
pub fn forward_to(shutdown: Shutdown) -> io::Result<()> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed sigset_t for each call.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    std::thread::Builder::new().name("c10k-signals".into()).spawn(move || loop {
        let mut signal: libc::c_int = 0;
        // SAFETY: `set` is initialised and outlives the call; `signal` is a valid out-pointer.
        let rc = unsafe { libc::sigwait(&set, &mut signal) };
        if rc == 0 {
            tracing::info!(signal, "stopping");
            shutdown.trigger();
        }
    })?;
    Ok(())
}
