//! Cancellation passed down as a value: the command line makes one [`Cancel`] from Ctrl-C
//! ([`Cancel::on_ctrl_c`]) and hands clones to the journey, its stages, the baseline and every
//! load run, which await [`Cancel::cancelled`] in `select!` or check [`Cancel::check`] between
//! steps. Nothing polls a global flag; a load in progress stops through goose's killswitch, which
//! [`crate::scenario::run_load`] triggers when its `Cancel` fires.

use std::sync::Arc;

use tokio::sync::watch;

/// The message every run stopped by Ctrl-C ends with.
pub const INTERRUPTED: &str = "interrupted (Ctrl-C, SIGTERM or SIGHUP); the topology was torn down";

/// A cheap, cloneable handle that says whether (and when) the run was asked to stop.
#[derive(Debug, Clone)]
pub struct Cancel {
    rx: watch::Receiver<bool>,
}

/// The side that asks for the stop; every [`Cancel`] made from it sees the request.
#[derive(Debug, Clone)]
pub struct CancelSource {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for CancelSource {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelSource {
    pub fn new() -> CancelSource {
        CancelSource {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// A handle to pass down.
    pub fn token(&self) -> Cancel {
        Cancel {
            rx: self.tx.subscribe(),
        }
    }

    /// Ask every handle to stop. Returns whether a stop had already been asked for.
    pub fn cancel(&self) -> bool {
        self.tx.send_replace(true)
    }
}

impl Cancel {
    /// A handle that is never cancelled (commands without a Ctrl-C handler of their own, tests).
    pub fn never() -> Cancel {
        CancelSource::new().token()
    }

    /// A handle cancelled by the first Ctrl-C: the running load ends (goose's killswitch) and every
    /// server is torn down by the values that own it. A second Ctrl-C exits at once with 130.
    /// Install it once per process, before any load starts, so that goose's own handler stays out.
    pub fn on_ctrl_c() -> Cancel {
        let source = CancelSource::new();
        let token = source.token();
        let _ = ctrlc::set_handler(move || {
            if source.cancel() {
                eprintln!("interrupted again: exiting without cleaning up");
                std::process::exit(130);
            }
            eprintln!("interrupted: stopping the load and tearing the topology down...");
        });
        token
    }

    pub fn is_cancelled(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the stop is asked for; never, for a handle that cannot be cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|stop| *stop).await.is_err() {
            // Every source is gone without asking: nothing can cancel this handle any more.
            std::future::pending::<()>().await;
        }
    }

    /// An error saying the run was interrupted, once the stop is asked for.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.is_cancelled() {
            anyhow::bail!(INTERRUPTED);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_fresh_handle_is_not_cancelled_and_does_not_resolve() {
        let cancel = Cancel::never();
        assert!(!cancel.is_cancelled());
        assert!(cancel.check().is_ok());
        let waited = tokio::time::timeout(Duration::from_millis(20), cancel.cancelled()).await;
        assert!(waited.is_err(), "a handle nobody can cancel waits forever");
    }

    #[tokio::test]
    async fn every_clone_sees_the_stop_and_wakes() {
        let source = CancelSource::new();
        let cancel = source.token();
        let clone = cancel.clone();
        let waiter = tokio::spawn(async move { clone.cancelled().await });
        tokio::task::yield_now().await;
        assert!(!source.cancel(), "the first stop");
        assert!(source.cancel(), "a second stop says so");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .unwrap();
        assert!(cancel.is_cancelled());
        assert_eq!(cancel.check().unwrap_err().to_string(), INTERRUPTED);
        // Already cancelled: resolves at once, also for a handle made afterwards.
        source.token().cancelled().await;
    }
}
