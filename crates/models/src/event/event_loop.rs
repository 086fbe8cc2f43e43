//! The event loop: one thread, one [`Poller`], timers, a ready list, and a watchdog.
//!
//! The loop knows nothing about HTTP. It calls a [`Handler`] back with a [`Token`] for each
//! thing that happened: a descriptor became ready ([`Handler::on_ready`]), a timer expired
//! ([`Handler::on_timer`]), a [`std::task::Waker`] made from a token was woken
//! ([`Handler::on_woken`]), or another thread posted a result for a token
//! ([`Handler::on_message`]). Everything a callback may do to the loop goes through the
//! [`Loop`] it is handed: register interest, set and cancel timers, make wakers, stop.
//! That is all a green-thread scheduler needs too: a parked coroutine is a token; its
//! socket, its sleep and its cross-thread wake-up all come back as callbacks for it.
//!
//! Cross-thread: wakers and [`Remote::post`] push onto a mutex-protected inbox
//! ([`super::inbox`]) and ring the poller's [`Notifier`](super::Notifier) (an eventfd) when the inbox goes
//! from empty to non-empty. The loop
//! takes the whole inbox under the lock and runs the callbacks after dropping it, so no
//! callback ever runs with the lock held, and a waker woken from inside a callback (the hub
//! wakes readers during an inline store call) just queues its token for the next step 5.
//! Step 5 runs the posted results first (each answers a client that waits for it), then at
//! most [`WOKEN_PER_TICK`] woken tokens; the others wait for the next tick, whose wait does
//! not sleep. A message to thousands of subscribers thus lets the sockets be read several
//! times while it goes out: the poster's next message is read, published and sent with
//! it to the subscribers not yet served (one `send` carries both), as tokio's scheduler
//! polls its sockets every few dozen tasks.
//!
//! Watchdog: every callback is timed. One that holds the loop longer than the threshold is
//! logged with what it was doing (set by the handler with [`Loop::doing`]) and counted, as
//! asyncio's debug mode reports slow callbacks: on this model nothing else runs meanwhile.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::task::Waker;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

pub(crate) use super::inbox::Remote;
use super::inbox::{Inbox, Mailbox};
use super::{Capabilities, Event, Interest, Poller, Token};

/// Woken tokens called back per tick at most; the rest are carried to the next tick.
pub(crate) const WOKEN_PER_TICK: usize = 128;

/// What the loop calls back. Each method runs on the loop thread, timed by the watchdog;
/// each may be spurious (a stale token, a timer already dealt with, a duplicate wake), so
/// each re-checks the state it acts on.
pub(crate) trait Handler {
    /// What other threads post to a token ([`Remote::post`]).
    type Message: Send + 'static;
    /// A registered descriptor is ready.
    fn on_ready(&mut self, lp: &mut Loop<Self::Message>, event: Event);
    /// A timer set with [`Loop::add_timer`] expired.
    fn on_timer(&mut self, lp: &mut Loop<Self::Message>, token: Token);
    /// A waker made with [`Loop::waker`] was woken.
    fn on_woken(&mut self, lp: &mut Loop<Self::Message>, token: Token);
    /// Another thread posted `message` for `token`.
    fn on_message(&mut self, lp: &mut Loop<Self::Message>, token: Token, message: Self::Message);
}

/// Identifies a timer for [`Loop::cancel_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey {
    at: Instant,
    id: u64,
}

impl TimerKey {
    /// When it expires.
    pub(crate) fn at(self) -> Instant {
        self.at
    }
}

/// Pending timers in deadline order. A B-tree rather than a heap so that cancelling (every
/// request re-arms its connection's idle timer) removes the entry instead of leaving it to
/// rot until its deadline. (The `uring` model keeps its deadlines here too.)
#[derive(Debug, Default)]
pub(crate) struct Timers {
    queue: BTreeMap<TimerKey, Token>,
    next_id: u64,
}

impl Timers {
    /// Sets a timer for `token` at `at`.
    pub(crate) fn add(&mut self, at: Instant, token: Token) -> TimerKey {
        let key = TimerKey { at, id: self.next_id };
        self.next_id += 1;
        self.queue.insert(key, token);
        key
    }

    /// Cancels a timer; a no-op if it already ran.
    pub(crate) fn cancel(&mut self, key: TimerKey) {
        self.queue.remove(&key);
    }

    /// When the nearest timer is due.
    pub(crate) fn nearest(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|(key, _)| key.at)
    }

    /// What to give [`Timers::pop_expired`] as `before` for the timers set until now.
    pub(crate) fn mark(&self) -> u64 {
        self.next_id
    }

    /// The next timer due at `now` that was set before the tick began (`id < before`), so
    /// a callback that re-arms a timer in the past cannot keep step 4 going forever.
    pub(crate) fn pop_expired(&mut self, now: Instant, before: u64) -> Option<Token> {
        let (key, _) = self.queue.first_key_value()?;
        if key.at > now || key.id >= before {
            return None;
        }
        self.queue.pop_first().map(|(_, token)| token)
    }
}

/// A callback that held the loop too long, for the watchdog's hook. (The reactor model
/// only counts them; the log line already carries these details.)
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub(crate) struct SlowCallback {
    /// Which callback: `ready`, `timer`, `woken` or `message`.
    pub(crate) kind: &'static str,
    /// Its token.
    pub(crate) token: Token,
    /// What the handler said it was doing.
    pub(crate) doing: String,
    /// How long it ran.
    pub(crate) took: Duration,
}

/// Times callbacks; see the module docs.
pub(crate) struct Watchdog {
    threshold: Option<Duration>,
    hook: Box<dyn FnMut(&SlowCallback)>,
    slow: u64,
}

impl Watchdog {
    /// Reports callbacks longer than `threshold` (`None`: never) to the log and to `hook`.
    pub(crate) fn new(threshold: Option<Duration>, hook: impl FnMut(&SlowCallback) + 'static) -> Watchdog {
        Watchdog { threshold, hook: Box::new(hook), slow: 0 }
    }

    /// Whether callbacks are timed at all (a loop without a watchdog need not read the clock).
    pub(crate) fn is_on(&self) -> bool {
        self.threshold.is_some()
    }

    /// The callback `kind` of `token` began at `started` and has just ended: reported, with
    /// what it was `doing` (asked only then), if it held the loop past the threshold.
    pub(crate) fn observe(&mut self, kind: &'static str, token: Token, started: Instant, doing: impl FnOnce() -> String) {
        let Some(threshold) = self.threshold else { return };
        let took = started.elapsed();
        if took < threshold {
            return;
        }
        self.slow += 1;
        let doing = doing();
        let doing = if doing.is_empty() { "(not said)".to_string() } else { doing };
        warn!(
            callback = kind,
            token = token.0,
            doing = %doing,
            took_ms = took.as_millis() as u64,
            threshold_ms = threshold.as_millis() as u64,
            "slow callback: it held the event loop, and every other connection waited"
        );
        (self.hook)(&SlowCallback { kind, token, doing, took });
    }
}

enum Callback<M> {
    Ready(Event),
    Timer(Token),
    Woken(Token),
    Message(Token, M),
}

/// The loop, as its callbacks see it.
pub(crate) struct Loop<M> {
    poller: Box<dyn Poller>,
    timers: Timers,
    mailbox: Mailbox<M>,
    watchdog: Watchdog,
    doing: Cow<'static, str>,
    stopped: bool,
    /// Woken tokens not called back yet, in the order they were woken.
    woken: VecDeque<Token>,
}

impl<M: Send + 'static> Loop<M> {
    /// A loop over `poller`, timed by `watchdog`.
    pub(crate) fn new(poller: Box<dyn Poller>, watchdog: Watchdog) -> Loop<M> {
        let mailbox = Mailbox::new(poller.notifier().bell());
        Loop {
            poller,
            timers: Timers::default(),
            mailbox,
            watchdog,
            doing: Cow::Borrowed(""),
            stopped: false,
            woken: VecDeque::new(),
        }
    }

    /// Runs ticks until [`Loop::stop`]. Fails only if the poller fails.
    pub(crate) fn run<H: Handler<Message = M>>(&mut self, handler: &mut H) -> io::Result<()> {
        let mut events = Vec::with_capacity(1024);
        while !self.stopped {
            // 1. Nearest timer: the wait may last until it is due, and no longer (and does not
            //    sleep at all while woken tokens wait for their turn).
            let timeout = match self.woken.is_empty() {
                true => self.timers.nearest().map(|at| at.saturating_duration_since(Instant::now())),
                false => Some(Duration::ZERO),
            };
            // 2. Wait for a ready descriptor, that timer, or the doorbell (wakers, posts).
            self.poller.wait(&mut events, timeout)?;
            // 3. Dispatch the ready descriptors, in the order the poller reported them.
            for event in events.drain(..) {
                self.dispatch(handler, Callback::Ready(event));
            }
            // 4. Run the expired timers (only those set before this tick: no livelock).
            let (now, before) = (Instant::now(), self.timers.mark());
            while let Some(token) = self.timers.pop_expired(now, before) {
                self.dispatch(handler, Callback::Timer(token));
            }
            // 5. Run posted work: results posted by other threads, then tokens woken by
            //    wakers, at most WOKEN_PER_TICK (the rest on the next ticks, in order). The
            //    inbox is taken under its lock; the callbacks run after it is dropped.
            let Inbox { woken, posted } = self.mailbox.take();
            for (token, message) in posted {
                self.dispatch(handler, Callback::Message(token, message));
            }
            self.woken.extend(woken);
            for _ in 0..WOKEN_PER_TICK {
                let Some(token) = self.woken.pop_front() else { break };
                self.dispatch(handler, Callback::Woken(token));
            }
        }
        Ok(())
    }

    /// Runs one callback under the watchdog.
    fn dispatch<H: Handler<Message = M>>(&mut self, handler: &mut H, callback: Callback<M>) {
        self.doing = Cow::Borrowed("");
        let started = Instant::now();
        let (kind, token) = match callback {
            Callback::Ready(event) => {
                handler.on_ready(self, event);
                ("ready", event.token)
            }
            Callback::Timer(token) => {
                handler.on_timer(self, token);
                ("timer", token)
            }
            Callback::Woken(token) => {
                handler.on_woken(self, token);
                ("woken", token)
            }
            Callback::Message(token, message) => {
                handler.on_message(self, token, message);
                ("message", token)
            }
        };
        self.watchdog.observe(kind, token, started, || self.doing.to_string());
    }

    /// Says what the running callback is doing, for the watchdog's report.
    pub(crate) fn doing(&mut self, what: impl Into<Cow<'static, str>>) {
        self.doing = what.into();
    }

    /// Adds to what the running callback is doing.
    pub(crate) fn doing_also(&mut self, what: &str) {
        self.doing.to_mut().push_str(what);
    }

    /// How many callbacks the watchdog has reported.
    #[cfg(test)]
    pub(crate) fn slow_callbacks(&self) -> u64 {
        self.watchdog.slow
    }

    /// Ends [`Loop::run`] after the current tick.
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
    }

    /// The poller's capabilities.
    pub(crate) fn capabilities(&self) -> Capabilities {
        self.poller.capabilities()
    }

    /// See [`Poller::register`].
    pub(crate) fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        self.poller.register(fd, token, interest)
    }

    /// See [`Poller::reregister`].
    pub(crate) fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        self.poller.reregister(fd, token, interest)
    }

    /// See [`Poller::deregister`].
    pub(crate) fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        self.poller.deregister(fd)
    }

    /// Calls [`Handler::on_timer`] for `token` at `at` (or on the first tick after it).
    pub(crate) fn add_timer(&mut self, at: Instant, token: Token) -> TimerKey {
        self.timers.add(at, token)
    }

    /// Cancels a timer; a no-op if it already ran.
    pub(crate) fn cancel_timer(&mut self, key: TimerKey) {
        self.timers.cancel(key);
    }

    /// A waker that calls [`Handler::on_woken`] for `token`, from any thread.
    pub(crate) fn waker(&self, token: Token) -> Waker {
        self.mailbox.waker(token)
    }

    /// A handle other threads use to post messages to tokens.
    pub(crate) fn remote(&self) -> Remote<M> {
        self.mailbox.remote()
    }
}

#[cfg(test)]
mod tests {
    //! The loop's own promises, on epoll (the pollers have their own contract tests).

    use std::sync::{mpsc, Arc, Mutex};
    use std::thread;

    use super::*;
    use crate::event::PollerKind;

    /// Records every callback; stops when told to.
    #[derive(Default)]
    struct Recorder {
        seen: Vec<String>,
        stop_after: usize,
        on_timer_rearm_in_the_past: bool,
    }

    impl Recorder {
        fn note(&mut self, lp: &mut Loop<&'static str>, what: String) {
            self.seen.push(what);
            if self.seen.len() >= self.stop_after {
                lp.stop();
            }
        }
    }

    impl Handler for Recorder {
        type Message = &'static str;
        fn on_ready(&mut self, lp: &mut Loop<&'static str>, event: Event) {
            self.note(lp, format!("ready {}", event.token.0));
        }
        fn on_timer(&mut self, lp: &mut Loop<&'static str>, token: Token) {
            if self.on_timer_rearm_in_the_past {
                lp.add_timer(Instant::now() - Duration::from_secs(1), token);
            }
            self.note(lp, format!("timer {}", token.0));
        }
        fn on_woken(&mut self, lp: &mut Loop<&'static str>, token: Token) {
            self.note(lp, format!("woken {}", token.0));
        }
        fn on_message(&mut self, lp: &mut Loop<&'static str>, token: Token, message: &'static str) {
            self.note(lp, format!("message {} {message}", token.0));
        }
    }

    fn new_loop(threshold: Option<Duration>) -> Loop<&'static str> {
        Loop::new(PollerKind::Epoll.open().unwrap(), Watchdog::new(threshold, |_| {}))
    }

    #[test]
    fn timers_run_in_deadline_order_and_cancelled_ones_do_not_run() {
        let mut lp = new_loop(None);
        let now = Instant::now();
        lp.add_timer(now + Duration::from_millis(3), Token(3));
        let cancelled = lp.add_timer(now + Duration::from_millis(1), Token(1));
        lp.add_timer(now + Duration::from_millis(2), Token(2));
        lp.cancel_timer(cancelled);
        let mut handler = Recorder { stop_after: 2, ..Recorder::default() };
        lp.run(&mut handler).unwrap();
        assert_eq!(handler.seen, ["timer 2", "timer 3"]);
    }

    #[test]
    fn a_timer_rearmed_in_the_past_runs_on_the_next_tick_not_in_a_livelock() {
        let mut lp = new_loop(None);
        lp.add_timer(Instant::now(), Token(7));
        let mut handler = Recorder { stop_after: 3, on_timer_rearm_in_the_past: true, ..Recorder::default() };
        lp.run(&mut handler).unwrap();
        assert_eq!(handler.seen, ["timer 7", "timer 7", "timer 7"]);
    }

    #[test]
    fn wakers_and_posts_from_another_thread_reach_their_tokens() {
        let mut lp = new_loop(None);
        let waker = lp.waker(Token(5));
        let remote = lp.remote();
        let (go, wait) = mpsc::channel::<()>();
        let other = thread::spawn(move || {
            wait.recv().unwrap();
            waker.wake();
            remote.post(Token(6), "stored");
        });
        go.send(()).unwrap();
        let mut handler = Recorder { stop_after: 2, ..Recorder::default() };
        lp.run(&mut handler).unwrap();
        other.join().unwrap();
        // One tick or two: the loop may take the inbox between the wake and the post.
        handler.seen.sort();
        assert_eq!(handler.seen, ["message 6 stored", "woken 5"]);
    }

    #[test]
    fn posted_results_go_first_and_a_long_wake_list_lets_the_sockets_be_polled() {
        let mut lp = new_loop(None);
        let wakers: Vec<Waker> = (0..WOKEN_PER_TICK + 2).map(|i| lp.waker(Token(100 + i))).collect();
        wakers.iter().for_each(Waker::wake_by_ref);
        lp.remote().post(Token(6), "stored");
        // A readable socket, reported by the poller in step 3.
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut &b, b"x").unwrap();
        use std::os::fd::AsRawFd;
        lp.register(a.as_raw_fd(), Token(7), Interest::READABLE).unwrap();
        let mut handler = Recorder { stop_after: WOKEN_PER_TICK + 5, ..Recorder::default() };
        lp.run(&mut handler).unwrap();
        // Tick 1: the socket (step 3), the posted result, then the budget of woken tokens.
        // Tick 2 does not sleep: the socket again (nobody read it), then the rest.
        let woken = |range: std::ops::Range<usize>| range.map(|i| format!("woken {}", 100 + i)).collect::<Vec<_>>();
        let mut expected = vec!["ready 7".to_string(), "message 6 stored".to_string()];
        expected.extend(woken(0..WOKEN_PER_TICK));
        expected.push("ready 7".to_string());
        expected.extend(woken(WOKEN_PER_TICK..WOKEN_PER_TICK + 2));
        assert_eq!(handler.seen, expected);
    }

    #[test]
    fn the_watchdog_counts_a_callback_that_holds_the_loop() {
        struct Slow;
        impl Handler for Slow {
            type Message = ();
            fn on_ready(&mut self, _: &mut Loop<()>, _: Event) {}
            fn on_timer(&mut self, lp: &mut Loop<()>, _: Token) {
                lp.doing("sleeping on purpose");
                thread::sleep(Duration::from_millis(30));
                lp.stop();
            }
            fn on_woken(&mut self, _: &mut Loop<()>, _: Token) {}
            fn on_message(&mut self, _: &mut Loop<()>, _: Token, _: ()) {}
        }
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&reports);
        let watchdog = Watchdog::new(Some(Duration::from_millis(10)), move |slow: &SlowCallback| {
            sink.lock().unwrap().push((slow.kind, slow.doing.clone()));
        });
        let mut lp: Loop<()> = Loop::new(PollerKind::Poll.open().unwrap(), watchdog);
        lp.add_timer(Instant::now(), Token(1));
        lp.run(&mut Slow).unwrap();
        assert_eq!(lp.slow_callbacks(), 1);
        assert_eq!(*reports.lock().unwrap(), [("timer", "sleeping on purpose".to_string())]);
    }
}

/// Accepts per readable-listener callback, so the connections get their turn in between.
const ACCEPTS_PER_CALLBACK: usize = 128;
/// How long accepting pauses when the process is out of file descriptors.
pub(crate) const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

impl<M: Send + 'static> Loop<M> {
    /// Accepts what the readable `listener` (registered as `token`) has, up to a batch.
    /// Out of file descriptors, it answers a waiting connection 503 with the reserve
    /// descriptor (`acceptor::refuse_with_reserve`, on behalf of `app`); when that cannot
    /// be done either, it stops watching the listener (level-triggered, it would be
    /// reported on every tick: a spin) and sets a timer on `token` after which the caller
    /// re-registers it.
    pub(crate) fn accept_batch(
        &mut self,
        listener: &std::net::TcpListener,
        token: Token,
        app: &c10k_core::chat::App,
    ) -> Vec<std::net::TcpStream> {
        use crate::acceptor::{refuse_with_reserve, Reserve};
        use std::os::fd::AsRawFd;
        self.doing("accept");
        let mut accepted = Vec::new();
        for _ in 0..ACCEPTS_PER_CALLBACK {
            match listener.accept() {
                Ok((stream, _peer)) => accepted.push(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if crate::common::is_fd_exhaustion(&e) => match refuse_with_reserve(listener.as_raw_fd(), app) {
                    Reserve::Refused => {}
                    Reserve::Drained => break,
                    Reserve::Unavailable => {
                        warn!("accept: {e}; pausing accepts for 100 ms (raise the file limit or lower --max-connections)");
                        if let Err(e) = self.reregister(listener.as_raw_fd(), token, Interest::NONE) {
                            warn!("cannot pause the listener: {e}");
                        }
                        self.add_timer(Instant::now() + ACCEPT_PAUSE, token);
                        break;
                    }
                },
                Err(e) => debug!("accept: {e}"),
            }
        }
        accepted
    }
}
