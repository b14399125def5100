//! Connection balancing across cores.
//!
//! Every core accepts on its own SO_REUSEPORT listener, and the kernel picks the listener by a
//! hash of the connection's addresses. With few long-lived keep-alive connections that leaves
//! cores unevenly loaded for the whole life of the connections (8 client connections measured
//! 6 on one core and 2 on the other: the busy core was saturated while the other idled). So a
//! core that accepts a connection while another core serves fewer hands the socket to that core
//! through its inbox; the connection then lives there. This costs one `dup` and one cross-core
//! wake per moved connection, and nothing per request.
//!
//! The balancer also holds the cap: a core serves at most `connections_per_core_max`
//! connections, so a connection is only placed while some core has room (see `http` for what
//! the others are answered).

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_channel::mpsc;

/// An accepted connection moved to another core.
pub(crate) struct Handoff {
    /// The connected socket (a duplicate of the accepted descriptor).
    pub fd: OwnedFd,
    /// The client's address, for logs.
    pub peer: SocketAddr,
}

/// The inbox of one listener on one core.
struct Inbox {
    ordinal: usize,
    core: usize,
    tx: mpsc::UnboundedSender<Handoff>,
}

/// Open connections per core and where to send a connection for a core's listener.
pub(crate) struct ConnectionBalancer {
    open: Vec<AtomicUsize>,
    /// Most connections a core serves; [`ConnectionBalancer::place`] places none beyond.
    per_core_max: usize,
    inboxes: Mutex<Vec<Inbox>>,
}

impl ConnectionBalancer {
    /// A balancer for `cores` cores, all idle, each serving at most `per_core_max` connections.
    pub(crate) fn new(cores: usize, per_core_max: usize) -> Self {
        Self {
            open: (0..cores).map(|_| AtomicUsize::new(0)).collect(),
            per_core_max,
            inboxes: Mutex::new(Vec::new()),
        }
    }

    /// Opens the inbox of the `ordinal`-th listener of `core` (replacing an older one).
    pub(crate) fn register_inbox(
        &self,
        ordinal: usize,
        core: usize,
    ) -> mpsc::UnboundedReceiver<Handoff> {
        let (tx, rx) = mpsc::unbounded();
        let mut inboxes = self
            .inboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inboxes.retain(|i| !(i.ordinal == ordinal && i.core == core));
        inboxes.push(Inbox { ordinal, core, tx });
        rx
    }

    /// The core that should serve a connection accepted on `core`: the core with the fewest
    /// open connections (`core` itself on a tie), or `None` when every core already serves
    /// `per_core_max`. The connection is counted there at once, so concurrent accepts spread out
    /// and never push a core past the cap; release it with [`ConnectionBalancer::closed`].
    pub(crate) fn place(&self, core: usize) -> Option<usize> {
        let load = |c: usize| {
            self.open
                .get(c)
                .map_or(usize::MAX, |n| n.load(Ordering::Relaxed))
        };
        loop {
            let mut target = core;
            for (c, n) in self.open.iter().enumerate() {
                if n.load(Ordering::Relaxed) < load(target) {
                    target = c;
                }
            }
            let count = self.open.get(target)?;
            let seen = count.load(Ordering::Relaxed);
            if seen >= self.per_core_max {
                // The least loaded core is full: they all are.
                return None;
            }
            // Another core's accept may have counted here meanwhile: then look again.
            if count
                .compare_exchange(seen, seen + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return Some(target);
            }
        }
    }

    /// Counts a connection served on `core`.
    pub(crate) fn opened(&self, core: usize) {
        if let Some(n) = self.open.get(core) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection served on `core` ended (or was never started there).
    pub(crate) fn closed(&self, core: usize) {
        if let Some(n) = self.open.get(core) {
            // Saturating: a stray release must not wrap the count.
            let _ = n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
    }

    /// Sends a connection to the `ordinal`-th listener of `core`; gives it back when that core
    /// has no inbox (not started yet, or stopping).
    pub(crate) fn hand_off(
        &self,
        ordinal: usize,
        core: usize,
        handoff: Handoff,
    ) -> Result<(), Handoff> {
        let inboxes = self
            .inboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match inboxes
            .iter()
            .find(|i| i.ordinal == ordinal && i.core == core)
        {
            Some(inbox) => inbox
                .tx
                .unbounded_send(handoff)
                .map_err(mpsc::TrySendError::into_inner),
            None => Err(handoff),
        }
    }

    /// Connections open on `core` (a metric).
    pub(crate) fn open_on(&self, core: usize) -> usize {
        self.open.get(core).map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_prefers_the_least_loaded_core_and_keeps_ties_local() {
        let b = ConnectionBalancer::new(3, 100);
        assert_eq!(b.place(1), Some(1));
        assert_eq!(b.place(1), Some(0));
        assert_eq!(b.place(1), Some(2));
        assert_eq!(b.place(0), Some(0));
        let open = |b: &ConnectionBalancer| (0..3).map(|c| b.open_on(c)).collect::<Vec<_>>();
        assert_eq!(open(&b), [2, 1, 1]);
        b.closed(0);
        b.closed(0);
        b.closed(0);
        assert_eq!(open(&b), [0, 1, 1]);
        assert_eq!(b.place(2), Some(0));
    }

    #[test]
    fn place_stops_at_the_cap_of_every_core_and_resumes_when_one_closes() {
        let b = ConnectionBalancer::new(2, 2);
        let placed: Vec<_> = (0..4).map(|_| b.place(0)).collect();
        assert!(placed.iter().all(Option::is_some));
        assert_eq!((b.open_on(0), b.open_on(1)), (2, 2));
        assert_eq!(b.place(0), None);
        assert_eq!(b.place(1), None);
        assert_eq!((b.open_on(0), b.open_on(1)), (2, 2));
        b.closed(1);
        assert_eq!(b.place(0), Some(1));
        assert_eq!(b.place(0), None);
    }

    #[test]
    fn concurrent_places_never_pass_the_cap() {
        let b = std::sync::Arc::new(ConnectionBalancer::new(2, 50));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || (0..100).filter(|_| b.place(t % 2).is_some()).count())
            })
            .collect();
        let placed: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(placed, 100);
        assert_eq!((b.open_on(0), b.open_on(1)), (50, 50));
    }

    #[test]
    fn hand_off_reaches_the_registered_inbox_only() {
        let b = ConnectionBalancer::new(2, 100);
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").expect("open /dev/null"));
        let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let back = b
            .hand_off(0, 1, Handoff { fd, peer })
            .expect_err("no inbox yet");
        let mut rx = b.register_inbox(0, 1);
        assert!(b.hand_off(1, 1, back).is_err());
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").expect("open /dev/null"));
        assert!(b.hand_off(0, 1, Handoff { fd, peer }).is_ok());
        assert!(rx.try_recv().is_ok());
        drop(rx);
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").expect("open /dev/null"));
        assert!(b.hand_off(0, 1, Handoff { fd, peer }).is_err());
    }
}
