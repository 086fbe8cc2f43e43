//! The ring itself: opening it and checking that the kernel has what the model needs, the
//! provided-buffer ring the kernel receives into, submitting and reaping. Every `unsafe`
//! of the model that touches memory the kernel shares is here.
//!
//! **What the kernel must have.** `IORING_OP_ACCEPT`, `RECV`, `SEND`, `READ`, `SHUTDOWN`,
//! `CLOSE` and `ASYNC_CANCEL` (asked of the kernel with `IORING_REGISTER_PROBE`); fast poll
//! (`IORING_FEAT_FAST_POLL`, 5.7: without it every socket operation that would block is
//! handed to a kernel worker thread, a thread per waiting connection again); waits with a
//! timeout (`IORING_FEAT_EXT_ARG`, 5.11); buffer rings (`IORING_REGISTER_PBUF_RING`, 5.19);
//! and multishot receive (6.0), for which no flag exists: [`Ring::open`] tries one on a
//! socket pair. A kernel without one of them is refused with the reason and the way out
//! (`--model reactor` serves the same application over epoll), rather than served by a
//! slower second design that nothing would test.
//!
//! **Who owns what.** The kernel reads and writes three kinds of this process's memory on
//! its own schedule: the buffer ring's entries (it reads them), its buffers (it writes what
//! it receives), and whatever an operation in flight points at (a send's bytes, the
//! doorbell's landing word). Such memory is allocated raw ([`KernelMemory`]), never borrowed
//! as a whole, and freed only once nothing the kernel might still be running refers to it:
//! the ring counts its operations in flight ([`Ring::in_flight`]: one per submission, until
//! the completion that has no `IORING_CQE_F_MORE`), and if a stop leaves some unreaped the
//! memory is leaked on purpose, since the kernel's own teardown of the ring runs after
//! `close` returns and could still write into it.

use std::alloc::{self, Layout};
use std::collections::HashMap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};
use tracing::debug;

/// Submission queue entries; the completion queue has [`CQ_PER_SQ`] times as many. The SQ
/// fills only when one tick queues this many operations; it is then submitted early.
const SQ_ENTRIES: u32 = 4096;
/// Completion queue entries per submission queue entry: a multishot operation posts many
/// completions for one submission. Past the CQ, the kernel keeps completions on an overflow
/// list (`IORING_FEAT_NODROP`), slower but lossless.
const CQ_PER_SQ: u32 = 4;
/// The buffer group of the receive buffers (there is one).
pub(crate) const RECV_GROUP: u16 = 0;
/// Receive buffers in the ring (a power of two). They are a pool for the whole loop: a
/// buffer is taken by the kernel when bytes arrive, given back as soon as its completion
/// has been copied into the connection's decoder, so idle connections hold none and the
/// ring runs dry only if more completions than this wait unread at once (a receive that
/// finds it empty ends with `ENOBUFS` and is armed again).
const RECV_BUFFERS: u16 = 256;
/// Bytes per receive buffer: a request head, a burst of pipelined requests, or a slice of a
/// large body (which the decoder gathers).
pub(crate) const RECV_BUFFER_SIZE: usize = 4 * 1024;
/// Send buffers kept for reuse, and the largest kept: a response, a burst of frames.
const SPARE_SENDS: usize = 64;
const SPARE_SEND_CAPACITY: usize = 64 * 1024;

/// A completion, copied out of the queue so the loop can submit while it handles them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    /// What the submission was tagged with.
    pub(crate) user_data: u64,
    /// The operation's result: a count, or `-errno`.
    pub(crate) result: i32,
    /// `IORING_CQE_F_*`.
    pub(crate) flags: u32,
}

impl Completion {
    /// Whether the multishot operation that posted this goes on (more completions follow).
    pub(crate) fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// The receive buffer the kernel filled, for a receive that got bytes.
    pub(crate) fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// Heap memory the kernel may read or write while the process runs: allocated raw, page
/// aligned, zeroed, and handed out as raw pointers, never as a Rust reference to the whole
/// (the kernel writes parts of it while the loop reads others).
struct KernelMemory {
    ptr: *mut u8,
    layout: Layout,
    /// Set when the kernel may still use the memory after the ring is closed: not freed.
    leak: bool,
}

impl KernelMemory {
    fn new(bytes: usize) -> io::Result<KernelMemory> {
        let layout = Layout::from_size_align(bytes.max(1), 4096).map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "cannot allocate the ring's buffers"));
        }
        Ok(KernelMemory { ptr, layout, leak: false })
    }
}

impl Drop for KernelMemory {
    fn drop(&mut self) {
        if !self.leak {
            // SAFETY: allocated in `new` with this layout, freed once, and (`leak` unset) no
            // kernel operation refers to it any more.
            unsafe { alloc::dealloc(self.ptr, self.layout) };
        }
    }
}

/// The provided-buffer ring (`IORING_REGISTER_PBUF_RING`): an array of buffer descriptions
/// the kernel takes from at its head when a receive completes, and the loop gives back to at
/// its tail.
struct BufferRing {
    /// `RECV_BUFFERS` entries of `struct io_uring_buf`; the tail is the `resv` field of the
    /// first (the kernel's layout).
    entries: KernelMemory,
    /// `RECV_BUFFERS * RECV_BUFFER_SIZE` bytes; buffer `bid` starts at `bid * RECV_BUFFER_SIZE`.
    buffers: KernelMemory,
    /// The tail as last published.
    tail: u16,
}

impl BufferRing {
    fn new() -> io::Result<BufferRing> {
        let entries = KernelMemory::new(usize::from(RECV_BUFFERS) * std::mem::size_of::<BufRingEntry>())?;
        let buffers = KernelMemory::new(usize::from(RECV_BUFFERS) * RECV_BUFFER_SIZE)?;
        let mut ring = BufferRing { entries, buffers, tail: 0 };
        for bid in 0..RECV_BUFFERS {
            ring.give_back(bid);
        }
        Ok(ring)
    }

    /// Puts buffer `bid` back at the tail, for the kernel to fill again.
    fn give_back(&mut self, bid: u16) {
        debug_assert!(bid < RECV_BUFFERS);
        let slot = usize::from(self.tail & (RECV_BUFFERS - 1));
        let base = self.entries.ptr.cast::<BufRingEntry>();
        // SAFETY: `slot` is within the RECV_BUFFERS entries allocated. The kernel only reads
        // entries, and only those before the published tail; this one is past it until the
        // store below. Its `resv` field (the tail, in entry 0) is not touched by the setters.
        let entry = unsafe { &mut *base.add(slot) };
        // SAFETY: `bid < RECV_BUFFERS`, so the offset stays inside `buffers`.
        let addr = unsafe { self.buffers.ptr.add(usize::from(bid) * RECV_BUFFER_SIZE) };
        entry.set_addr(addr as u64);
        entry.set_len(RECV_BUFFER_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is a u16 inside the first entry, suitably aligned; the kernel
        // reads it concurrently, hence the atomic store, with release ordering so that the
        // entry written above is visible before the tail that covers it.
        let tail = unsafe { &*BufRingEntry::tail(base).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed over.
    ///
    /// # Safety
    /// The kernel must have handed `bid` to the loop (a receive completion named it) and it
    /// must not have been given back yet: until then the kernel does not write into it.
    unsafe fn filled(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < RECV_BUFFERS && len <= RECV_BUFFER_SIZE, "the kernel named a buffer it was not given");
        // SAFETY: in bounds (asserted); not written by the kernel meanwhile (the caller's
        // promise); the kernel wrote `len` bytes there before posting the completion.
        unsafe { std::slice::from_raw_parts(self.buffers.ptr.add(usize::from(bid) * RECV_BUFFER_SIZE), len) }
    }
}

/// The ring, its buffer ring and the count of operations in flight. Fields drop in order:
/// the ring's descriptor is closed before the memory it used is freed (or leaked).
pub(crate) struct Ring {
    uring: IoUring,
    buffers: BufferRing,
    /// The word the doorbell's reads land in.
    landing: KernelMemory,
    /// The bytes of each send in flight, by its tag: the operation's, not the connection's.
    sends: HashMap<u64, Vec<u8>>,
    /// Buffers of completed sends, for the next ones.
    spare_sends: Vec<Vec<u8>>,
    /// Submissions whose last completion has not been reaped.
    in_flight: usize,
    /// A reused array the completions are copied into.
    reaped: Vec<Completion>,
}

/// Why the kernel cannot run this model, and what to do instead.
fn lacking(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "the uring model needs {what}, which this kernel's io_uring lacks (Linux 6.0 or later has all it \
             needs); use --model reactor, the same application over epoll"
        ),
    )
}

impl Ring {
    /// Opens a ring for one loop thread, checks the kernel has what the model needs (module
    /// doc), and registers the receive buffers. Must be called on the thread that runs the
    /// loop (the ring is set up for a single issuer where the kernel allows it).
    pub(crate) fn open() -> io::Result<Ring> {
        let uring = Self::setup().map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSYS) => lacking("the io_uring_setup system call (the kernel has no io_uring)"),
            Some(libc::EPERM) => io::Error::new(
                io::ErrorKind::PermissionDenied,
                "io_uring is disabled for this process (sysctl kernel.io_uring_disabled, or a seccomp \
                 filter of the container); use --model reactor, the same application over epoll",
            ),
            _ => io::Error::new(e.kind(), format!("cannot open an io_uring: {e}")),
        })?;
        let params = uring.params();
        if !params.is_feature_fast_poll() {
            return Err(lacking("fast poll (IORING_FEAT_FAST_POLL, Linux 5.7)"));
        }
        if !params.is_feature_ext_arg() {
            return Err(lacking("waits with a timeout (IORING_FEAT_EXT_ARG, Linux 5.11)"));
        }
        let mut probe = Probe::new();
        uring.submitter().register_probe(&mut probe).map_err(|_| lacking("IORING_REGISTER_PROBE (Linux 5.6)"))?;
        let needed = [
            (opcode::AcceptMulti::CODE, "IORING_OP_ACCEPT"),
            (opcode::RecvMulti::CODE, "IORING_OP_RECV"),
            (opcode::Send::CODE, "IORING_OP_SEND"),
            (opcode::Read::CODE, "IORING_OP_READ"),
            (opcode::Shutdown::CODE, "IORING_OP_SHUTDOWN"),
            (opcode::Close::CODE, "IORING_OP_CLOSE"),
            (opcode::AsyncCancel2::CODE, "IORING_OP_ASYNC_CANCEL"),
        ];
        for (code, name) in needed {
            if !probe.is_supported(code) {
                return Err(lacking(name));
            }
        }
        let buffers = BufferRing::new()?;
        // SAFETY: the entries stay allocated, at this address, until the ring is closed
        // (`Ring`'s field order) or forever (leaked when operations are left in flight).
        let registered = unsafe {
            uring.submitter().register_buf_ring_with_flags(buffers.entries.ptr as u64, RECV_BUFFERS, RECV_GROUP, 0)
        };
        registered.map_err(|_| lacking("provided-buffer rings (IORING_REGISTER_PBUF_RING, Linux 5.19)"))?;
        let mut ring = Ring {
            uring,
            buffers,
            landing: KernelMemory::new(8)?,
            sends: HashMap::new(),
            spare_sends: Vec::new(),
            in_flight: 0,
            reaped: Vec::with_capacity(1024),
        };
        ring.check_multishot_receive()?;
        Ok(ring)
    }

    /// The ring with the flags that suit one thread that submits and reaps (only that thread
    /// submits; completions run as its work, when it waits, not as interrupts of it; one
    /// submission refused does not hold back those queued after it), or a plain one on
    /// kernels before 6.1 that lack them.
    fn setup() -> io::Result<IoUring> {
        let tuned = IoUring::builder()
            .setup_cqsize(SQ_ENTRIES * CQ_PER_SQ)
            .setup_submit_all()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(SQ_ENTRIES);
        match tuned {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                debug!("io_uring without single-issuer and deferred task running (kernel before 6.1)");
                IoUring::builder().setup_cqsize(SQ_ENTRIES * CQ_PER_SQ).build(SQ_ENTRIES)
            }
            other => other,
        }
    }

    /// Multishot receive has no feature flag: arm one on a socket pair, send it a byte, and
    /// see whether it stays armed (`IORING_CQE_F_MORE`) or is refused (`EINVAL`).
    fn check_multishot_receive(&mut self) -> io::Result<()> {
        const CHECK: u64 = u64::MAX;
        let (ours, theirs) = UnixStream::pair()?;
        self.recv_multishot(ours.as_raw_fd(), CHECK)?;
        (&theirs).write_all(b"?")?;
        let mut verdict = None;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut hung_up = false;
        // Until the receive's last completion: the byte (or the refusal), then the end of
        // the stream once our side of the pair hangs up.
        while self.in_flight > 0 && Instant::now() < deadline {
            self.submit_and_wait(Some(Duration::from_millis(100)))?;
            for c in self.reap() {
                if c.user_data != CHECK {
                    continue;
                }
                if let Some(bid) = c.buffer() {
                    self.give_back(bid);
                }
                if verdict.is_none() {
                    verdict = Some(c.result == 1 && c.more());
                }
            }
            if verdict.is_some() && !hung_up {
                let _ = theirs.shutdown(std::net::Shutdown::Both);
                hung_up = true;
            }
        }
        match verdict {
            Some(true) if self.in_flight == 0 => Ok(()),
            Some(true) => Err(io::Error::other("the check of multishot receive did not end; cannot trust this ring")),
            _ => Err(lacking("multishot receive into a buffer ring (Linux 6.0)")),
        }
    }

    /// Keeps accepting on `listener` until cancelled or an error ends it (each connection
    /// is a completion whose result is its descriptor, close-on-exec).
    pub(crate) fn accept_multishot(&mut self, listener: RawFd, user_data: u64) -> io::Result<()> {
        let accept = opcode::AcceptMulti::new(types::Fd(listener)).flags(libc::SOCK_CLOEXEC).build().user_data(user_data);
        // SAFETY: no peer address is asked for: the operation points at no memory.
        unsafe { self.push(&accept) }
    }

    /// Keeps receiving on `socket` into the buffer ring until the stream ends, an error or a
    /// cancellation ends it, or the ring runs dry (`ENOBUFS`).
    pub(crate) fn recv_multishot(&mut self, socket: RawFd, user_data: u64) -> io::Result<()> {
        let recv = opcode::RecvMulti::new(types::Fd(socket), RECV_GROUP).build().user_data(user_data);
        // SAFETY: the buffers are the ring's, which outlive every operation (`Drop`).
        unsafe { self.push(&recv) }
    }

    /// A buffer to fill with bytes for [`Ring::send`] (one given back by an earlier send, so
    /// steady traffic allocates nothing).
    pub(crate) fn send_buffer(&mut self) -> Vec<u8> {
        self.spare_sends.pop().unwrap_or_default()
    }

    /// Sends `bytes` on `socket`, all of them unless an error or a cancellation stops it
    /// (`MSG_WAITALL`: the kernel retries a short send itself). The operation owns `bytes`
    /// until its completion is reaped: the caller keeps no pointer into them, so nothing it
    /// does meanwhile can move or free what the kernel is reading.
    pub(crate) fn send(&mut self, socket: RawFd, bytes: Vec<u8>, user_data: u64) -> io::Result<()> {
        let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
        let send = opcode::Send::new(types::Fd(socket), bytes.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
            .build()
            .user_data(user_data);
        // SAFETY: `bytes` moves into `sends` below (its heap block does not move with it) and
        // is dropped only by `reap`, at the send's completion, or leaked by `Drop`.
        unsafe { self.push(&send)? };
        let previous = self.sends.insert(user_data, bytes);
        debug_assert!(previous.is_none(), "two sends in flight with one tag");
        Ok(())
    }

    /// Reads the doorbell `eventfd` into the ring's landing word (the value is not wanted:
    /// the completion is the news).
    pub(crate) fn read_doorbell(&mut self, eventfd: RawFd, user_data: u64) -> io::Result<()> {
        let read = opcode::Read::new(types::Fd(eventfd), self.landing.ptr, 8).build().user_data(user_data);
        // SAFETY: the landing word is the ring's, 8 bytes, and outlives every operation.
        unsafe { self.push(&read) }
    }

    /// Shuts down the write side of `socket` (the FIN after the last answer).
    pub(crate) fn shutdown_write(&mut self, socket: RawFd, user_data: u64) -> io::Result<()> {
        let shutdown = opcode::Shutdown::new(types::Fd(socket), libc::SHUT_WR).build().user_data(user_data);
        // SAFETY: the operation points at no memory.
        unsafe { self.push(&shutdown) }
    }

    /// Closes `socket` on the ring, which saves the system call of `close(2)`. The number
    /// stays taken until the operation runs, so no new connection can be given it meanwhile.
    pub(crate) fn close(&mut self, socket: OwnedFd, user_data: u64) {
        let close = opcode::Close::new(types::Fd(socket.as_raw_fd())).build().user_data(user_data);
        // SAFETY: the operation points at no memory.
        match unsafe { self.push(&close) } {
            Ok(()) => {
                // The ring closes it now.
                let _ = socket.into_raw_fd();
            }
            // Dropping it closes it the ordinary way.
            Err(e) => debug!("cannot close a socket on the ring: {e}"),
        }
    }

    /// Asks the kernel to cancel every operation in flight on `socket`. Each still posts its
    /// completion (`ECANCELED`, or its result if it finished first), and only then is what it
    /// used free (a send's bytes) or the socket safe to close.
    pub(crate) fn cancel_fd(&mut self, socket: RawFd, user_data: u64) -> io::Result<()> {
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(socket)).all()).build().user_data(user_data);
        // SAFETY: a cancellation points at no memory.
        unsafe { self.push(&cancel) }
    }

    /// Asks the kernel to cancel the operation tagged `target` (a multishot one ends with
    /// its last completion, `ECANCELED`).
    pub(crate) fn cancel_op(&mut self, target: u64, user_data: u64) -> io::Result<()> {
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(target)).build().user_data(user_data);
        // SAFETY: a cancellation points at no memory.
        unsafe { self.push(&cancel) }
    }

    /// Asks the kernel to cancel every operation in flight on the ring (a stop).
    pub(crate) fn cancel_everything(&mut self, user_data: u64) -> io::Result<()> {
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(user_data);
        // SAFETY: a cancellation points at no memory.
        unsafe { self.push(&cancel) }
    }

    /// Queues one submission; the next [`Ring::submit_and_wait`] (or this call, if the queue
    /// is full) hands it to the kernel. Counts it in flight until its last completion.
    ///
    /// # Safety
    /// Whatever memory `entry` points at must stay valid, and not be moved or reused, until
    /// the operation's last completion has been reaped by [`Ring::reap`]: the kernel may read
    /// or write it at any time until then, even after a cancellation was asked for.
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: the caller's promise covers the entry's memory.
        while unsafe { self.uring.submission().push(entry) }.is_err() {
            // Full: hand the queue to the kernel now, and retry.
            match self.uring.submit() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The completion queue is full too: the caller must reap first.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(io::Error::new(io::ErrorKind::WouldBlock, "the ring is full"))
                }
                Err(e) => return Err(e),
            }
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Submits what was queued, and waits until at least one completion is there or
    /// `timeout` has passed (`None`: no limit): one system call for both.
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let submitter = self.uring.submitter();
        let waited = match timeout {
            None => submitter.submit_and_wait(1),
            Some(timeout) => {
                let ts = Timespec::from(timeout);
                submitter.submit_with_args(1, &SubmitArgs::new().timespec(&ts))
            }
        };
        match waited {
            Ok(_) => Ok(()),
            // The timeout passed, a signal came, or the completion queue is full (reap, then
            // submit on the next tick): none is an error of the loop.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Takes the completions that are there, in the order the kernel posted them. A send's
    /// bytes are released here, with its completion, and kept for the next send.
    pub(crate) fn reap(&mut self) -> Vec<Completion> {
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.clear();
        for cqe in self.uring.completion() {
            let completion = Completion { user_data: cqe.user_data(), result: cqe.result(), flags: cqe.flags() };
            if !completion.more() {
                self.in_flight = self.in_flight.saturating_sub(1);
                if !self.sends.is_empty() {
                    if let Some(mut bytes) = self.sends.remove(&completion.user_data) {
                        if bytes.capacity() <= SPARE_SEND_CAPACITY && self.spare_sends.len() < SPARE_SENDS {
                            bytes.clear();
                            self.spare_sends.push(bytes);
                        }
                    }
                }
            }
            reaped.push(completion);
        }
        reaped
    }

    /// Gives back the array [`Ring::reap`] returned, to be reused.
    pub(crate) fn recycle(&mut self, reaped: Vec<Completion>) {
        self.reaped = reaped;
    }

    /// The bytes a receive completion brought in buffer `bid`, for `read`; then the buffer
    /// goes back to the kernel. The copy out (into the connection's decoder) is the only
    /// one: the kernel wrote straight into the pool.
    pub(crate) fn with_received<R>(&mut self, bid: u16, len: usize, read: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: `bid` was named by a completion just reaped, and is given back only below.
        let result = read(unsafe { self.buffers.filled(bid, len) });
        self.give_back(bid);
        result
    }

    /// Gives back a buffer a completion named without its bytes being wanted.
    pub(crate) fn give_back(&mut self, bid: u16) {
        self.buffers.give_back(bid);
    }

    /// Submissions whose last completion has not been reaped yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            debug!(in_flight = self.in_flight, "io_uring closed with operations in flight: their memory is leaked");
            self.buffers.entries.leak = true;
            self.buffers.buffers.leak = true;
            self.landing.leak = true;
            std::mem::forget(std::mem::take(&mut self.sends));
        }
    }
}

#[cfg(test)]
mod tests {
    //! The ring's own promises, over a socket pair.

    use std::io::Read;
    use std::thread;

    use super::*;

    const RECV: u64 = 1;
    const SEND: u64 = 2;

    /// A byte pattern that shows reordering or loss: byte `i` is `i % 251`.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn far_more_bytes_than_the_buffer_ring_holds_arrive_whole_and_in_order() {
        let mut ring = Ring::open().expect("this kernel runs the uring model");
        let (ours, theirs) = UnixStream::pair().unwrap();
        let sent = pattern(8 * usize::from(RECV_BUFFERS) * RECV_BUFFER_SIZE);
        let writer = {
            let sent = sent.clone();
            thread::spawn(move || {
                (&theirs).write_all(&sent).unwrap();
                // Dropping `theirs` ends the stream.
            })
        };
        ring.recv_multishot(ours.as_raw_fd(), RECV).unwrap();
        let mut received = Vec::new();
        let mut ended = false;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ended {
            assert!(Instant::now() < deadline, "received {} of {} bytes", received.len(), sent.len());
            ring.submit_and_wait(Some(Duration::from_millis(100))).unwrap();
            let reaped = ring.reap();
            for c in &reaped {
                match c.result {
                    n if n > 0 => ring.with_received(c.buffer().unwrap(), n as usize, |b| received.extend_from_slice(b)),
                    0 => ended = true,
                    e if e == -libc::ENOBUFS => {}
                    e => panic!("receive: {}", io::Error::from_raw_os_error(-e)),
                }
                // A receive that ran the ring dry ends; arm another (buffers are back by now).
                if !c.more() && c.result != 0 {
                    ring.recv_multishot(ours.as_raw_fd(), RECV).unwrap();
                }
            }
            ring.recycle(reaped);
        }
        writer.join().unwrap();
        assert_eq!(received.len(), sent.len());
        assert!(received == sent, "the bytes arrived reordered or changed");
        assert_eq!(ring.in_flight(), 0, "the receive's last completion was reaped");
    }

    #[test]
    fn a_send_owns_its_bytes_until_its_completion() {
        let mut ring = Ring::open().expect("this kernel runs the uring model");
        let (ours, theirs) = UnixStream::pair().unwrap();
        let sent = pattern(256 * 1024);
        // More than the socket buffer: the send waits in the kernel for the reader, long after
        // the caller gave up every handle on the bytes.
        let mut bytes = ring.send_buffer();
        bytes.extend_from_slice(&sent);
        ring.send(ours.as_raw_fd(), bytes, SEND).unwrap();
        ring.submit_and_wait(Some(Duration::ZERO)).unwrap();
        let reader = thread::spawn(move || {
            let mut got = vec![0; sent.len()];
            (&theirs).read_exact(&mut got).unwrap();
            assert!(got == sent, "the kernel sent other bytes than were handed to it");
        });
        let mut done = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while done.is_none() && Instant::now() < deadline {
            ring.submit_and_wait(Some(Duration::from_millis(100))).unwrap();
            let reaped = ring.reap();
            done = reaped.iter().find(|c| c.user_data == SEND).map(|c| c.result);
            ring.recycle(reaped);
        }
        reader.join().unwrap();
        assert_eq!(done, Some(256 * 1024), "MSG_WAITALL: one completion for all the bytes");
        assert_eq!(ring.in_flight(), 0);
        assert!(ring.send_buffer().capacity() < 256 * 1024, "a buffer past the spare size is not kept");
    }
}
