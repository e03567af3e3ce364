//! The kernel's scheduling policy for the API's threads (`--scheduling`).
//!
//! On a machine the API shares with its database (and, in the benchmarks, with the load
//! generator), every response wakes another process and every query wakes a backend, and a
//! woken thread under Linux's default policy may preempt whatever runs on its CPU. `batch`
//! (`SCHED_BATCH`) tells the kernel that the API's own wake-ups need not preempt anything: a
//! woken worker waits for the running task's turn to end, so the cores switch less often
//! between the API, the backends and the clients. It trades a little latency under contention
//! for CPU: in `results/api.md` (runs P and S) it took a tenth to a seventh off the API's CPU
//! per request at saturation. Nothing changes the API's priority (no `nice`, no real-time
//! policy), so it needs no privilege.

/// The policy of `--scheduling`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheduling {
    /// The kernel's default (`SCHED_OTHER`): a woken thread may preempt the running one.
    #[default]
    Normal,
    /// `SCHED_BATCH`: the API's wake-ups preempt nothing (Linux only).
    Batch,
}

impl Scheduling {
    /// Sets the policy of the calling thread. Threads it starts afterwards inherit it, so call
    /// it before the runtime starts its workers. `Normal` leaves the thread as it is.
    pub fn apply(self) -> std::io::Result<()> {
        match self {
            Scheduling::Normal => Ok(()),
            Scheduling::Batch => set_batch(),
        }
    }
}

#[cfg(target_os = "linux")]
fn set_batch() -> std::io::Result<()> {
    // SCHED_BATCH takes priority 0, like SCHED_OTHER: the thread's nice value is kept.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread, and `param` lives across the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_batch() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "SCHED_BATCH is Linux's",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn policy() -> i32 {
        // SAFETY: pid 0 is the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn batch_holds_for_the_thread_and_the_threads_it_starts() {
        // A thread of its own, so the test harness's threads keep their policy.
        std::thread::spawn(|| {
            assert_eq!(policy(), libc::SCHED_OTHER);
            Scheduling::Normal.apply().unwrap();
            assert_eq!(policy(), libc::SCHED_OTHER);
            Scheduling::Batch.apply().unwrap();
            assert_eq!(policy(), libc::SCHED_BATCH);
            let child = std::thread::spawn(policy).join().unwrap();
            assert_eq!(child, libc::SCHED_BATCH);
        })
        .join()
        .unwrap();
    }
}
