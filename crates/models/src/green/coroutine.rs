//! Stackful coroutines: the stack switching under the `green` model, and nothing else.
//!
//! A [`Coroutine`] runs a closure on a stack of its own. The closure runs until it calls
//! [`Suspend::suspend`] with a value for whoever resumed it; [`Coroutine::resume`] then
//! returns that value, and the next `resume` makes `suspend` return the value passed in.
//! This is what greenlet does by copying stacks and Stackless by not using the C stack;
//! here it is corosensei's: a switch saves the callee-saved registers, swaps the stack
//! pointer and jumps (a few nanoseconds, no system call, no signal-mask change).
//!
//! # Stacks, and the guard page
//! Each stack is corosensei's `DefaultStack`: one anonymous `mmap` of `--stack-size`
//! bytes rounded up to whole pages, plus one `PROT_NONE` page below it (stacks grow down).
//! The kernel hands out the pages as they are first touched, so a coroutine that uses
//! 12 KiB costs 12 KiB of memory whatever `--stack-size` says; the size only reserves
//! address space. Each stack is two mappings (the guard and the rest), so Linux's
//! `vm.max_map_count` (65530 by default) caps a process near 32,000 coroutines; past it,
//! `mmap` fails and new connections get 503. Finished coroutines' stacks are kept in a
//! small pool ([`Stacks`]) and reused, so a connection does not cost an `mmap`/`munmap`.
//!
//! **Overflow.** A coroutine that recurses past its stack touches the guard page and the
//! kernel raises `SIGSEGV`. Rust's handler recognises only the guard page of the *thread's*
//! own stack, so it restores the default action and the process dies with "Segmentation
//! fault", taking every connection it served along (under `--workers N` the master starts
//! a new worker). Nothing is ever written past the stack: the guard page turns a memory
//! corruption into a crash. Recovering instead is possible (corosensei's `trap` module
//! unwinds the faulting coroutine from a signal handler) but needs an async-signal-safe
//! handler of our own; left as an exercise. The cure is a larger `--stack-size`.
//!
//! # Dropping, and panics
//! Dropping an unfinished coroutine unwinds its stack (corosensei's `force_unwind`: the
//! pending `suspend` panics with a private payload), so every value on it is dropped and
//! every socket on it closed. Code that runs on a coroutine must never `catch_unwind`
//! around a suspension point and swallow that payload. A panic inside the closure ends the
//! coroutine; [`Coroutine::resume`] catches it and reports [`Step::Panicked`], so one
//! connection's bug ends that connection, not the loop.
//!
//! # Threads
//! A coroutine is not `Send`: it is created, resumed and dropped on one thread (the event
//! loop's), and thread-locals seen from it are that thread's.
//!
//! No `unsafe` here: corosensei's safe API (a `'static` closure, an owned stack) suffices.
#![forbid(unsafe_code)]

use std::any::Any;
use std::io;
use std::panic::{self, AssertUnwindSafe};

use corosensei::stack::DefaultStack;
use corosensei::{CoroutineResult, Yielder};

/// What a coroutine's closure is handed to suspend itself with: `I` comes in on each
/// resume, `Y` goes out on each suspension.
pub(crate) struct Suspend<'a, I, Y>(&'a Yielder<I, Y>);

impl<I, Y> Suspend<'_, I, Y> {
    /// Hands `out` to the resumer and sleeps until resumed; returns what it passed in.
    pub(crate) fn suspend(&self, out: Y) -> I {
        self.0.suspend(out)
    }
}

/// How a [`Coroutine::resume`] ended.
#[derive(Debug)]
pub(crate) enum Step<Y> {
    /// The closure suspended itself with this value.
    Suspended(Y),
    /// The closure returned.
    Finished,
    /// The closure panicked (the message, when it was a string).
    Panicked(String),
}

/// A closure running on its own stack; see the module docs.
pub(crate) struct Coroutine<I, Y> {
    inner: corosensei::Coroutine<I, Y, (), DefaultStack>,
}

impl<I: 'static, Y: 'static> Coroutine<I, Y> {
    /// A coroutine that will run `body` on `stack` from the first [`Coroutine::resume`],
    /// whose input `body` receives as its second argument.
    pub(crate) fn new(stack: DefaultStack, body: impl FnOnce(&Suspend<'_, I, Y>, I) + 'static) -> Coroutine<I, Y> {
        let inner = corosensei::Coroutine::with_stack(stack, move |yielder: &Yielder<I, Y>, first: I| {
            body(&Suspend(yielder), first)
        });
        Coroutine { inner }
    }

    /// Runs the coroutine until it suspends, returns or panics.
    ///
    /// # Panics
    /// If the coroutine has already finished (a scheduler bug, not a peer's doing).
    pub(crate) fn resume(&mut self, input: I) -> Step<Y> {
        // The coroutine's own panics are caught here; the assertion that the coroutine
        // has not finished is corosensei's and is re-raised, as a bug should be.
        assert!(!self.inner.done(), "resumed a finished coroutine");
        match panic::catch_unwind(AssertUnwindSafe(|| self.inner.resume(input))) {
            Ok(CoroutineResult::Yield(out)) => Step::Suspended(out),
            Ok(CoroutineResult::Return(())) => Step::Finished,
            Err(payload) => Step::Panicked(panic_message(&*payload)),
        }
    }

    /// Whether the closure has returned (or panicked).
    pub(crate) fn is_finished(&self) -> bool {
        self.inner.done()
    }

    /// The stack of a finished coroutine, for reuse; `None` if it has not finished.
    pub(crate) fn into_stack(self) -> Option<DefaultStack> {
        self.inner.done().then(|| self.inner.into_stack())
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "(a panic without a message)".to_string(),
    }
}

/// Stacks of one size, and a few spare ones kept from finished coroutines.
pub(crate) struct Stacks {
    size: usize,
    spare: Vec<DefaultStack>,
    keep: usize,
}

impl Stacks {
    /// Stacks of `size` usable bytes (plus the guard page), keeping up to `keep` spares.
    pub(crate) fn new(size: usize, keep: usize) -> Stacks {
        Stacks { size, spare: Vec::new(), keep }
    }

    /// The usable size of each stack.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// A spare stack, or a new mapping (fails when the address space or the process's
    /// mapping count is exhausted).
    pub(crate) fn take(&mut self) -> io::Result<DefaultStack> {
        match self.spare.pop() {
            Some(stack) => Ok(stack),
            None => DefaultStack::new(self.size),
        }
    }

    /// Keeps the stack of a finished coroutine for the next one (its touched pages stay
    /// resident: that is the price of skipping `mmap`), or unmaps it if enough are kept.
    pub(crate) fn recycle<I: 'static, Y: 'static>(&mut self, finished: Coroutine<I, Y>) {
        if self.spare.len() < self.keep {
            if let Some(stack) = finished.into_stack() {
                self.spare.push(stack);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_go_out_on_suspend_and_come_back_in_on_resume() {
        let mut stacks = Stacks::new(64 * 1024, 1);
        let mut co: Coroutine<u32, u32> = Coroutine::new(stacks.take().unwrap(), |suspend, first| {
            let second = suspend.suspend(first * 10);
            let third = suspend.suspend(second * 10);
            assert_eq!(third, 3);
        });
        assert!(matches!(co.resume(1), Step::Suspended(10)));
        assert!(matches!(co.resume(2), Step::Suspended(20)));
        assert!(matches!(co.resume(3), Step::Finished));
        assert!(co.is_finished());
        stacks.recycle(co);
        assert_eq!(stacks.spare.len(), 1, "the finished coroutine's stack is kept for reuse");
    }

    #[test]
    fn a_panic_ends_the_coroutine_not_the_resumer() {
        let mut co: Coroutine<(), ()> = Coroutine::new(DefaultStack::new(64 * 1024).unwrap(), |_, ()| {
            panic!("a handler bug");
        });
        match co.resume(()) {
            Step::Panicked(message) => assert_eq!(message, "a handler bug"),
            other => panic!("expected a caught panic, got {other:?}"),
        }
        assert!(co.is_finished());
    }

    #[test]
    fn dropping_a_suspended_coroutine_drops_what_is_on_its_stack() {
        use std::rc::Rc;
        let alive = Rc::new(());
        let held = Rc::clone(&alive);
        let mut co: Coroutine<(), ()> = Coroutine::new(DefaultStack::new(64 * 1024).unwrap(), move |suspend, ()| {
            let _on_the_stack = held;
            loop {
                suspend.suspend(());
            }
        });
        assert!(matches!(co.resume(()), Step::Suspended(())));
        assert_eq!(Rc::strong_count(&alive), 2);
        drop(co);
        assert_eq!(Rc::strong_count(&alive), 1, "unwinding the stack dropped the clone on it");
    }

    #[test]
    fn a_deep_but_legal_recursion_fits_a_larger_stack() {
        // About 1 KiB of frame per level, 1000 levels: more than 256 KiB, less than 4 MiB.
        fn depth(n: u32) -> u32 {
            let pad = std::hint::black_box([n as u8; 1024]);
            if n == 0 {
                u32::from(pad[0])
            } else {
                depth(n - 1) + u32::from(pad[1] & 1)
            }
        }
        let mut co: Coroutine<u32, u32> =
            Coroutine::new(DefaultStack::new(4 * 1024 * 1024).unwrap(), |suspend, n| {
                suspend.suspend(depth(n));
            });
        assert!(matches!(co.resume(1000), Step::Suspended(500)));
    }

    /// Set in the child process of the overflow test, which overflows and must die.
    const OVERFLOW_CHILD: &str = "C10K_GREEN_OVERFLOW_CHILD";

    #[test]
    fn overflowing_a_stack_hits_the_guard_page_and_the_process_dies_of_sigsegv() {
        use std::os::unix::process::ExitStatusExt;
        use std::process::{Command, Stdio};
        if std::env::var_os(OVERFLOW_CHILD).is_some() {
            #[allow(unconditional_recursion)] // on purpose: it must overflow the stack
            fn forever(n: u64) -> u64 {
                let pad = std::hint::black_box([n as u8; 1024]);
                forever(n + 1) + u64::from(pad[0])
            }
            let mut co: Coroutine<u64, u64> = Coroutine::new(DefaultStack::new(64 * 1024).unwrap(), |suspend, n| {
                suspend.suspend(forever(n));
            });
            let step = co.resume(0);
            unreachable!("recursing without end returned: {step:?}");
        }
        // Run this very test again in a child process, which must be killed by the signal
        // (not unwind, not exit, and never run on past its stack). The shell turns core
        // dumps off for it: a crash on purpose should leave no core file behind.
        let status = Command::new("sh")
            .args(["-c", "ulimit -c 0; exec \"$0\" \"$@\""])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "green::coroutine::tests::overflowing_a_stack_hits_the_guard_page_and_the_process_dies_of_sigsegv"])
            .args(["--test-threads", "1", "--nocapture"])
            .env(OVERFLOW_CHILD, "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "the child ended with {status:?}");
    }
}
