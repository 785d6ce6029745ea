//! The bridge's background tasks as one cancellation tree: every task the bridge spawns (the
//! HTTP endpoint, the broker probe, the MQTT gate and client, topic creation) is tracked, and
//! all of them stop when the bridge stops, so that the process ends with none left running and
//! none logging after the exit summary.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

/// A handle on the tree; clones share it.
#[derive(Clone, Debug)]
pub struct Tasks {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    pub fn new() -> Self {
        Self {
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// Spawns `task` on the current runtime; it is dropped at its next await once the tree
    /// stops.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Spawns `task`, which is given the signal to stop and ends on its own terms (the HTTP
    /// server finishing the requests in hand); [`Self::stop`] waits for it like the others.
    pub fn spawn_graceful<F>(&self, task: impl FnOnce(WaitForCancellationFutureOwned) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker
            .spawn(task(self.cancel.clone().cancelled_owned()));
    }

    /// Stops the tree when dropped: for an owner that may be dropped without stopping it.
    pub fn stop_on_drop(&self) -> DropGuard {
        self.cancel.clone().drop_guard()
    }

    /// Stops every task and waits up to `timeout` for them to end; false if some did not.
    pub async fn stop(&self, timeout: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_ends_every_task_even_one_that_never_finishes() {
        let tasks = Tasks::new();
        tasks.spawn(std::future::pending());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            // Dropped at the stop: its sender goes with it.
            std::future::pending::<()>().await;
            let _ = tx.send(());
        });
        assert_eq!(tasks.running(), 2);
        assert!(tasks.stop(Duration::from_secs(5)).await);
        assert_eq!(tasks.running(), 0);
        assert!(rx.await.is_err(), "dropped, not finished");
    }
}
