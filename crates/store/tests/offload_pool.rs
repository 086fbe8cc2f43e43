//! The offload pool runs jobs on its own named threads, refuses at once when its queue is
//! full, outlives panicking jobs, and finishes queued jobs when dropped. No test sleeps to
//! synchronise: jobs are held back with channels the test controls.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use c10k_store::{Busy, OffloadPool};

/// Generous: only reached if the pool is broken, never waited for when it works.
const STUCK: Duration = Duration::from_secs(30);

/// A job that says it started, then waits until the test opens the gate.
fn gated(started: Sender<()>, gate: Arc<Mutex<Receiver<()>>>) -> Box<dyn FnOnce() + Send> {
    Box::new(move || {
        started.send(()).unwrap();
        gate.lock()
            .unwrap()
            .recv_timeout(STUCK)
            .expect("the test never opened the gate");
    })
}

#[test]
fn runs_jobs_on_threads_named_c10k_store_n() {
    let pool = OffloadPool::new(3, 16);
    assert_eq!(pool.threads(), 3);
    let (done, results) = mpsc::channel();
    for i in 0..10 {
        let done = done.clone();
        pool.submit(Box::new(move || {
            let name = std::thread::current().name().unwrap().to_string();
            done.send((i, name)).unwrap();
        }))
        .unwrap();
    }
    let mut seen: Vec<(i32, String)> = (0..10)
        .map(|_| results.recv_timeout(STUCK).unwrap())
        .collect();
    seen.sort();
    assert_eq!(
        seen.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    for (_, name) in &seen {
        assert!(
            ["c10k-store-0", "c10k-store-1", "c10k-store-2"].contains(&name.as_str()),
            "{name}"
        );
    }
}

#[test]
fn a_full_queue_reports_busy_at_once() {
    let pool = OffloadPool::new(1, 2);
    let (started, job_started) = mpsc::channel();
    let (open_gate, gate) = mpsc::channel();
    let gate = Arc::new(Mutex::new(gate));

    // The only thread takes the first job and blocks in it...
    pool.submit(gated(started.clone(), Arc::clone(&gate)))
        .unwrap();
    job_started.recv_timeout(STUCK).unwrap();
    // ...so two more fill the queue, and the next is refused without blocking.
    pool.submit(gated(started.clone(), Arc::clone(&gate)))
        .unwrap();
    pool.submit(gated(started.clone(), Arc::clone(&gate)))
        .unwrap();
    let (ran, refused_ran) = mpsc::channel::<()>();
    assert_eq!(
        pool.submit(Box::new(move || ran.send(()).unwrap())),
        Err(Busy)
    );
    assert!(
        refused_ran.recv_timeout(Duration::ZERO).is_err(),
        "a refused job must not run"
    );

    // Opening the gate once lets the running job finish; a queued one takes its place,
    // which frees one slot.
    open_gate.send(()).unwrap();
    job_started.recv_timeout(STUCK).unwrap();
    let (done, finished) = mpsc::channel();
    pool.submit(Box::new(move || done.send(()).unwrap()))
        .unwrap();

    for _ in 0..2 {
        open_gate.send(()).unwrap();
    }
    finished
        .recv_timeout(STUCK)
        .expect("the job accepted after Busy never ran");
}

#[test]
fn a_panicking_job_does_not_kill_its_thread() {
    let pool = OffloadPool::new(1, 4);
    pool.submit(Box::new(|| panic!("this job fails on purpose")))
        .unwrap();
    pool.submit(Box::new(|| std::panic::panic_any(42_u32)))
        .unwrap();
    let (done, finished) = mpsc::channel();
    pool.submit(Box::new(move || {
        done.send(std::thread::current().name().map(str::to_string))
            .unwrap()
    }))
    .unwrap();
    assert_eq!(
        finished.recv_timeout(STUCK).unwrap().as_deref(),
        Some("c10k-store-0")
    );
}

#[test]
fn dropping_the_pool_runs_every_queued_job_then_joins() {
    let pool = OffloadPool::new(2, 32);
    let (started, job_started) = mpsc::channel();
    let (open_gate, gate) = mpsc::channel();
    let gate = Arc::new(Mutex::new(gate));
    // Hold both threads so the counting jobs are still queued when the pool is dropped.
    pool.submit(gated(started.clone(), Arc::clone(&gate)))
        .unwrap();
    pool.submit(gated(started.clone(), Arc::clone(&gate)))
        .unwrap();
    job_started.recv_timeout(STUCK).unwrap();
    job_started.recv_timeout(STUCK).unwrap();
    let count = Arc::new(Mutex::new(0));
    for _ in 0..20 {
        let count = Arc::clone(&count);
        pool.submit(Box::new(move || *count.lock().unwrap() += 1))
            .unwrap();
    }
    open_gate.send(()).unwrap();
    open_gate.send(()).unwrap();
    drop(pool); // returns only once the threads have drained the queue and exited
    assert_eq!(*count.lock().unwrap(), 20);
}

#[test]
fn a_job_may_drop_the_last_handle_to_its_own_pool() {
    // Dropping the pool on one of its own threads must not try to join that thread.
    let pool = Arc::new(Mutex::new(Some(OffloadPool::new(1, 2))));
    let (done, finished) = mpsc::channel();
    let inside = Arc::clone(&pool);
    let job = Box::new(move || {
        let last = inside.lock().unwrap().take();
        drop(last);
        done.send(()).unwrap();
    });
    pool.lock().unwrap().as_ref().unwrap().submit(job).unwrap();
    finished
        .recv_timeout(STUCK)
        .expect("dropping the pool from its own thread hung");
}

#[test]
fn zero_threads_or_queue_are_rounded_up_to_one() {
    let pool = OffloadPool::new(0, 0);
    assert_eq!(pool.threads(), 1);
    assert_eq!(pool.queue_capacity(), 1);
    let (done, finished) = mpsc::channel();
    pool.submit(Box::new(move || done.send(()).unwrap()))
        .unwrap();
    finished.recv_timeout(STUCK).unwrap();
}
