//! NOTIFY subscriptions: clients watching keys receive their writes and removes.
//!
//! Two kinds live here. A *watcher* is a subscription to a key this node owns: writes and
//! removes run here and publish to it. A *relay* is a subscription to a key another node owns:
//! this node holds one connection to the owner, subscribes there and passes the owner's events
//! on (the relay task is in `cmd/notify.rs`); the hub keeps what is needed to end it.
//!
//! Not durable: subscriptions live as long as the client's connection. Invariants: at most
//! [`MAX_WATCHERS`] watchers and [`MAX_RELAYS`] relays per node; an event never blocks the
//! writer — a watcher (or relay) whose client's connection queue is full is dropped, so one slow
//! client cannot stall writes; removing a relay's entry (unsubscribe, the client's connection
//! closing) is what stops its task, which then drops its connection to the owner, and the owner
//! frees its side of the subscription when that connection closes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ellipsis_core::protocol::cmd::notify::{NotifyEvent, NotifyKind};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{flags, Frame, Header, IoAttr, Status};
use ellipsis_core::Id;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

/// Most subscriptions per node.
pub const MAX_WATCHERS: usize = 10_000;

/// Most subscriptions a node relays to other owners at once. Each holds one connection to its
/// owner (so the owner frees the subscription when the relay goes, whatever ended it), hence a
/// bound well below the owners' `max_connections` default.
pub const MAX_RELAYS: usize = 256;

struct Watcher {
    conn_id: u64,
    header: Header,
    tx: mpsc::Sender<Frame>,
}

/// A subscription relayed to the key's owner, as the hub sees it.
pub struct Relay {
    conn_id: u64,
    key: Id,
    /// The client's NOTIFY request: its final frame answers this transaction.
    pub header: Header,
    /// The client's connection queue.
    pub tx: mpsc::Sender<Frame>,
    /// Dropped with the entry: the relay task sees its receiver end and stops.
    _stop: oneshot::Sender<()>,
}

/// All subscriptions.
#[derive(Default)]
pub struct NotifyHub {
    watchers: Mutex<HashMap<Id, Vec<Watcher>>>,
    relays: Mutex<HashMap<u64, Relay>>,
    next_relay: AtomicU64,
}

impl std::fmt::Debug for NotifyHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyHub")
            .field("watchers", &self.len())
            .field("relays", &self.relays_len())
            .finish()
    }
}

impl NotifyHub {
    /// Subscriptions held.
    pub fn len(&self) -> usize {
        self.watchers.lock().values().map(Vec::len).sum()
    }

    /// No subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Subscriptions relayed to other owners.
    pub fn relays_len(&self) -> usize {
        self.relays.lock().len()
    }

    /// Watch `key` on behalf of the request `header` from connection `conn_id`.
    pub fn subscribe(
        &self,
        key: Id,
        conn_id: u64,
        header: Header,
        tx: mpsc::Sender<Frame>,
    ) -> bool {
        let mut w = self.watchers.lock();
        if w.values().map(Vec::len).sum::<usize>() >= MAX_WATCHERS {
            return false;
        }
        w.entry(key).or_default().push(Watcher {
            conn_id,
            header,
            tx,
        });
        true
    }

    /// Register a relay of `key` for the request `header` from connection `conn_id`. Returns
    /// its id and the receiver that ends when the entry is removed; `None` at the bound.
    pub fn add_relay(
        &self,
        key: Id,
        conn_id: u64,
        header: Header,
        tx: mpsc::Sender<Frame>,
    ) -> Option<(u64, oneshot::Receiver<()>)> {
        let mut relays = self.relays.lock();
        if relays.len() >= MAX_RELAYS {
            return None;
        }
        let id = self.next_relay.fetch_add(1, Ordering::Relaxed);
        let (stop, stopped) = oneshot::channel();
        relays.insert(
            id,
            Relay {
                conn_id,
                key,
                header,
                tx,
                _stop: stop,
            },
        );
        Some((id, stopped))
    }

    /// Remove relay `id`; `Some` only for the caller that removed it, which then owes the
    /// client the stream's final frame (nobody else will send it).
    pub fn end_relay(&self, id: u64) -> Option<Relay> {
        self.relays.lock().remove(&id)
    }

    /// Stop the connection's watches (and relays) of `key`; their streams get a final frame.
    pub fn unsubscribe(&self, key: &Id, conn_id: u64) -> usize {
        let gone_relays: Vec<Relay> = {
            let mut relays = self.relays.lock();
            let ids: Vec<u64> = relays
                .iter()
                .filter(|(_, r)| r.conn_id == conn_id && r.key == *key)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| relays.remove(id)).collect()
        };
        for r in &gone_relays {
            let _ =
                r.tx.try_send(Frame::new(r.header.reply(Status::OK), Bytes::new()));
        }
        let mut w = self.watchers.lock();
        let Some(list) = w.get_mut(key) else {
            return gone_relays.len();
        };
        let (gone, keep): (Vec<Watcher>, Vec<Watcher>) =
            list.drain(..).partition(|x| x.conn_id == conn_id);
        *list = keep;
        if list.is_empty() {
            w.remove(key);
        }
        for g in &gone {
            let _ =
                g.tx.try_send(Frame::new(g.header.reply(Status::OK), Bytes::new()));
        }
        gone.len() + gone_relays.len()
    }

    /// Drop every subscription of a closed connection (its relays stop and close their
    /// connections to the owners).
    pub fn drop_conn(&self, conn_id: u64) {
        let mut w = self.watchers.lock();
        for list in w.values_mut() {
            list.retain(|x| x.conn_id != conn_id);
        }
        w.retain(|_, l| !l.is_empty());
        drop(w);
        self.relays.lock().retain(|_, r| r.conn_id != conn_id);
    }

    /// Tell the watchers of `key`.
    pub fn publish(&self, key: &Id, kind: NotifyKind, attr: IoAttr) {
        let mut w = self.watchers.lock();
        let Some(list) = w.get_mut(key) else { return };
        let payload: Bytes = NotifyEvent { kind, attr }.encode().into();
        list.retain(|x| {
            let mut h = x.header.reply(Status::OK);
            h.flags |= flags::MORE;
            x.tx.try_send(Frame::new(h, payload.clone())).is_ok()
        });
        if list.is_empty() {
            w.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ellipsis_core::protocol::Command;

    fn request(trans: u64) -> Header {
        let mut h = Header::request(Command::Notify, Id::ZERO, 1, 0);
        h.trans = trans;
        h
    }

    #[test]
    fn relays_are_bounded_and_end_once() {
        let hub = NotifyHub::default();
        let (tx, _rx) = mpsc::channel(4);
        let mut held = Vec::new();
        for t in 0..MAX_RELAYS as u64 {
            held.push(hub.add_relay(Id::ZERO, 1, request(t), tx.clone()).unwrap());
        }
        assert!(hub.add_relay(Id::ZERO, 1, request(0), tx.clone()).is_none());
        let (id, _) = &held[0];
        assert!(hub.end_relay(*id).is_some());
        assert!(hub.end_relay(*id).is_none(), "only one caller ends a relay");
        assert_eq!(hub.relays_len(), MAX_RELAYS - 1);
    }

    #[test]
    fn unsubscribe_and_closing_the_connection_stop_relays() {
        let hub = NotifyHub::default();
        let other = Id([7; 64]);
        let (tx, mut rx) = mpsc::channel(4);
        let (_, mut watched) = hub.add_relay(Id::ZERO, 1, request(10), tx.clone()).unwrap();
        let (_, mut other_key) = hub.add_relay(other, 1, request(11), tx.clone()).unwrap();
        let (_, mut other_conn) = hub.add_relay(Id::ZERO, 2, request(12), tx.clone()).unwrap();
        assert_eq!(hub.unsubscribe(&Id::ZERO, 1), 1);
        // The stopped relay's receiver is closed and its stream got the final frame.
        assert!(watched.try_recv().is_err());
        let last = rx.try_recv().unwrap();
        assert_eq!(last.header.trans, 10);
        assert!(!last.header.has(flags::MORE) && last.header.status.is_ok());
        // The others run on.
        assert!(matches!(
            other_key.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        hub.drop_conn(1);
        assert!(matches!(
            other_key.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(
            other_conn.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert_eq!(hub.relays_len(), 1);
    }
}
