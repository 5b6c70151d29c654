//! Hands notifications to the sinks: a bounded queue and a task per sink, so that a slow or dead
//! sink delays only its own queue. A full queue drops its oldest notification (counted and
//! logged): the newest state of an episode matters more than an old one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Notification, Notifier};
use soarjobd_core::error_chain;

struct Queue {
    sink: Arc<dyn Notifier>,
    items: Mutex<VecDeque<Notification>>,
    cap: usize,
    dropped: AtomicU64,
    wake: Notify,
}

/// The sinks and their queues; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    queues: Arc<Vec<Arc<Queue>>>,
}

impl Dispatcher {
    /// Starts a task per sink; they stop when `stop` fires (what is queued then is dropped).
    pub fn start(sinks: Vec<Arc<dyn Notifier>>, cap: usize, stop: CancellationToken) -> Dispatcher {
        let queues: Vec<Arc<Queue>> = sinks
            .into_iter()
            .map(|sink| {
                Arc::new(Queue {
                    sink,
                    items: Mutex::new(VecDeque::new()),
                    cap: cap.max(1),
                    dropped: AtomicU64::new(0),
                    wake: Notify::new(),
                })
            })
            .collect();
        for q in &queues {
            tokio::spawn(deliver(q.clone(), stop.clone()));
        }
        Dispatcher {
            queues: Arc::new(queues),
        }
    }

    /// Queues `n` for every sink; never waits.
    pub fn send(&self, n: &Notification) {
        for q in self.queues.iter() {
            let mut items = q.items.lock().unwrap_or_else(|p| p.into_inner());
            if items.len() >= q.cap {
                items.pop_front();
                let dropped = q.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    sink = q.sink.name(),
                    dropped_total = dropped,
                    queue = q.cap,
                    "alert sink queue full: dropped the oldest notification"
                );
            }
            items.push_back(n.clone());
            drop(items);
            q.wake.notify_one();
        }
    }

    /// True when at least one sink is configured.
    pub fn has_sinks(&self) -> bool {
        !self.queues.is_empty()
    }

    /// Notifications dropped so far by each sink's full queue, by sink name.
    pub fn dropped(&self) -> Vec<(String, u64)> {
        self.queues
            .iter()
            .map(|q| (q.sink.name().to_string(), q.dropped.load(Ordering::Relaxed)))
            .collect()
    }
}

async fn deliver(q: Arc<Queue>, stop: CancellationToken) {
    loop {
        let next = q
            .items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let Some(n) = next else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = q.wake.notified() => continue,
            }
        };
        let sent = tokio::select! {
            _ = stop.cancelled() => return,
            r = q.sink.notify(&n) => r,
        };
        match sent {
            Ok(()) => tracing::info!(
                sink = q.sink.name(),
                rule = n.rule.as_str(),
                subject = %n.subject,
                state = ?n.state,
                "alert notification sent"
            ),
            Err(e) => tracing::warn!(
                sink = q.sink.name(),
                rule = n.rule.as_str(),
                subject = %n.subject,
                error = %error_chain(&e),
                "alert notification not delivered; dropped"
            ),
        }
    }
}
