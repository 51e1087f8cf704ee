//! One shutdown for the whole pipeline: a phase that only moves forward, seen by async tasks
//! (through a watch channel) and by the source threads (through a condvar and the wakers of
//! their file watchers). A [`Shutdown`] can make children: advancing a parent advances every
//! child, and a child can be advanced alone (a task's own helpers end with it).
//!
//! The phases, in order ([`Phase`]): `Stop` asks the sources to seal what they hold and end,
//! the rest of the pipeline delivers it; `Drain` (a reload) asks delivery to take no new batch
//! and leave what is spooled to the next pipeline; `Abandon` (the deadline passed) drops the
//! attempts in flight, their batches staying spooled; `End` ends background passes
//! (retention, digests, sweeps). Each phase implies the ones before it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::watch;

/// How far shutdown has gone; later phases imply earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// Stop reading: sources seal what they hold and end.
    Stop,
    /// Hand over (reload): delivery takes no new batch, lets attempts in flight end.
    Drain,
    /// The deadline passed: attempts in flight are dropped, batches stay spooled.
    Abandon,
    /// The pipeline ended: background passes end.
    End,
}

type Wake = Box<dyn Fn() + Send + Sync>;

struct State {
    phase: Phase,
    children: Vec<Weak<Inner>>,
    /// Called once, when `Stop` is reached (source threads asleep on file events).
    on_stop: Vec<Wake>,
}

struct Inner {
    tx: watch::Sender<Phase>,
    state: Mutex<State>,
    cv: Condvar,
    /// Whether `Abandon` was reached before `End`: the run was cut short (exit code 1).
    abandoned: AtomicBool,
    /// Set once the deadline timer and the watchdog are armed.
    armed: AtomicBool,
}

/// A handle on one node of the shutdown tree; clones share the node.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            inner: Arc::new(Inner {
                tx: watch::Sender::new(Phase::Running),
                state: Mutex::new(State {
                    phase: Phase::Running,
                    children: Vec::new(),
                    on_stop: Vec::new(),
                }),
                cv: Condvar::new(),
                abandoned: AtomicBool::new(false),
                armed: AtomicBool::new(false),
            }),
        }
    }

    /// A node that follows this one and can also be advanced alone.
    pub fn child(&self) -> Shutdown {
        let child = Shutdown::new();
        let mut st = self.lock();
        st.children.retain(|c| c.strong_count() > 0);
        st.children.push(Arc::downgrade(&child.inner));
        let phase = st.phase;
        drop(st);
        child.advance(phase);
        child
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock ends the process (the panic hook); a poisoned lock
        // still holds a valid phase.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves this node and its children to `to`, if it is further than where they are.
    pub fn advance(&self, to: Phase) {
        let mut st = self.lock();
        if st.phase >= to {
            return;
        }
        let from = st.phase;
        st.phase = to;
        if to == Phase::Abandon {
            self.inner.abandoned.store(true, Ordering::Release);
        }
        let wakes = if from < Phase::Stop {
            std::mem::take(&mut st.on_stop)
        } else {
            Vec::new()
        };
        let children: Vec<Arc<Inner>> = st.children.iter().filter_map(Weak::upgrade).collect();
        // Sent under the lock: two advances at once cannot leave the watch behind the phase.
        self.inner.tx.send_replace(to);
        drop(st);
        self.inner.cv.notify_all();
        wakes.iter().for_each(|w| w());
        for c in children {
            Shutdown { inner: c }.advance(to);
        }
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    pub fn reached(&self, p: Phase) -> bool {
        self.phase() >= p
    }

    /// Whether the deadline cut the run short (`Abandon` was reached).
    pub fn was_abandoned(&self) -> bool {
        self.inner.abandoned.load(Ordering::Acquire)
    }

    /// Resolves once `p` is reached.
    pub async fn wait(&self, p: Phase) {
        let mut rx = self.inner.tx.subscribe();
        // The sender lives as long as `self`: `wait_for` cannot fail while we hold it.
        let _ = rx.wait_for(|now| *now >= p).await;
    }

    /// Blocks a thread up to `d`; returns whether `p` is reached.
    pub fn wait_blocking(&self, p: Phase, d: Duration) -> bool {
        let st = self.lock();
        match self.inner.cv.wait_timeout_while(st, d, |s| s.phase < p) {
            Ok((s, _)) => s.phase >= p,
            Err(poisoned) => poisoned.into_inner().0.phase >= p,
        }
    }

    /// Calls `wake` when `Stop` is reached (at once if it is already).
    pub fn on_stop(&self, wake: impl Fn() + Send + Sync + 'static) {
        let mut st = self.lock();
        if st.phase >= Phase::Stop {
            drop(st);
            wake();
        } else {
            st.on_stop.push(Box::new(wake));
        }
    }

    /// Starts a stop with a deadline: `Stop` now, `Abandon` after `deadline`, and with `grace`
    /// the process ends (exit 1) that much later whatever a stage is doing, so that it always
    /// ends in time. Only the first call arms the timers. Needs a Tokio runtime.
    pub fn stop_within(&self, deadline: Duration, grace: Option<Duration>) {
        self.advance(Phase::Stop);
        if self.inner.armed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(grace) = grace {
            crate::ops::fatal::shutdown_watchdog(deadline + grace);
        }
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(deadline) => me.advance(Phase::Abandon),
                _ = me.wait(Phase::End) => {}
            }
        });
    }

    /// A guard that moves this node to `End` when dropped, on every way out of a scope.
    pub fn end_on_drop(&self) -> EndGuard {
        EndGuard(self.clone())
    }
}

/// See [`Shutdown::end_on_drop`].
pub struct EndGuard(Shutdown);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.advance(Phase::End);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn phases_only_move_forward_and_imply_the_earlier_ones() {
        let s = Shutdown::new();
        s.advance(Phase::Drain);
        s.advance(Phase::Stop);
        assert_eq!(s.phase(), Phase::Drain);
        assert!(s.reached(Phase::Stop));
        assert!(!s.reached(Phase::Abandon));
        // Resolves at once: Stop is implied by Drain.
        s.wait(Phase::Stop).await;
        assert!(!s.was_abandoned());
    }

    #[tokio::test(start_paused = true)]
    async fn a_parent_advances_its_children_and_a_child_alone_leaves_the_parent() {
        let root = Shutdown::new();
        let a = root.child();
        let b = root.child();
        b.advance(Phase::End);
        assert_eq!(root.phase(), Phase::Running);
        assert_eq!(a.phase(), Phase::Running);
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.wait(Phase::Abandon).await }
        });
        root.advance(Phase::Abandon);
        waiting.await.unwrap();
        assert_eq!(a.phase(), Phase::Abandon);
        // A child made after the parent moved starts where the parent is.
        assert_eq!(root.child().phase(), Phase::Abandon);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_within_abandons_at_the_deadline_not_before() {
        let s = Shutdown::new();
        s.stop_within(Duration::from_secs(10), None);
        assert_eq!(s.phase(), Phase::Stop);
        tokio::time::sleep(Duration::from_millis(9_999)).await;
        assert!(!s.reached(Phase::Abandon));
        s.wait(Phase::Abandon).await;
        assert!(s.was_abandoned());
        let _end = s.end_on_drop();
    }

    #[tokio::test(start_paused = true)]
    async fn ending_first_is_not_abandoning() {
        let s = Shutdown::new();
        {
            let _g = s.end_on_drop();
        }
        assert_eq!(s.phase(), Phase::End);
        assert!(!s.was_abandoned());
    }

    #[test]
    fn threads_wake_on_stop_once_and_wait_for_it() {
        let s = Shutdown::new();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        s.on_stop(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!s.wait_blocking(Phase::Stop, Duration::from_millis(1)));
        let t = {
            let s = s.clone();
            std::thread::spawn(move || s.wait_blocking(Phase::Stop, Duration::from_secs(3600)))
        };
        s.advance(Phase::Stop);
        s.advance(Phase::Abandon);
        assert!(t.join().unwrap());
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        // Registered after the stop: called at once.
        let w = woken.clone();
        s.on_stop(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(woken.load(Ordering::SeqCst), 2);
    }
}
