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

use crate::error::NodeError;

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
        self.add_relay_locked(&mut self.relays.lock(), key, conn_id, header, tx)
            .ok()
    }

    /// [`NotifyHub::add_relay`] under the caller's lock; at the bound, the client's queue back.
    fn add_relay_locked(
        &self,
        relays: &mut HashMap<u64, Relay>,
        key: Id,
        conn_id: u64,
        header: Header,
        tx: mpsc::Sender<Frame>,
    ) -> Result<(u64, oneshot::Receiver<()>), mpsc::Sender<Frame>> {
        if relays.len() >= MAX_RELAYS {
            return Err(tx);
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
        Ok((id, stopped))
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

    /// Turn the watchers that `moved` says are no longer this node's to hold into relays (one
    /// per watcher, each with its receiver that ends when the relay does); the caller starts
    /// their tasks. Watchers a relaying node holds here (FORWARDED) stay: that node follows
    /// the key itself and closes its connection here when it does. A watcher beyond the relay
    /// bound gets a final frame saying why its stream ends.
    pub fn watchers_to_relays(
        &self,
        mut moved: impl FnMut(&Header) -> bool,
    ) -> Vec<(u64, oneshot::Receiver<()>)> {
        let mut w = self.watchers.lock();
        let mut leaving = Vec::new();
        for (key, list) in w.iter_mut() {
            let (go, stay): (Vec<Watcher>, Vec<Watcher>) = list
                .drain(..)
                .partition(|x| !x.header.has(flags::FORWARDED) && moved(&x.header));
            *list = stay;
            leaving.extend(go.into_iter().map(|x| (*key, x)));
        }
        w.retain(|_, l| !l.is_empty());
        // Nested lock order is watchers, then relays (nothing takes them the other way).
        let mut out = Vec::new();
        for (key, x) in leaving {
            match self.add_relay_locked(&mut self.relays.lock(), key, x.conn_id, x.header, x.tx) {
                Ok(relay) => out.push(relay),
                Err(tx) => {
                    let why = NodeError::Busy(
                        "the key moved to another node and this node relays too many \
                         subscriptions to follow it"
                            .into(),
                    );
                    let _ = tx.try_send(final_error(&x.header, &why));
                }
            }
        }
        out
    }

    /// Turn relay `id` back into a watcher here (its key came back to this node); false if
    /// the relay is gone (its task just stops) or the watcher bound is reached (the client got
    /// a final frame saying so).
    pub fn relay_to_watcher(&self, id: u64) -> bool {
        let mut w = self.watchers.lock();
        let Some(r) = self.relays.lock().remove(&id) else {
            return false;
        };
        if w.values().map(Vec::len).sum::<usize>() >= MAX_WATCHERS {
            let why = NodeError::Busy(
                "the key moved to this node, which holds too many subscriptions".into(),
            );
            let _ = r.tx.try_send(final_error(&r.header, &why));
            return false;
        }
        w.entry(r.key).or_default().push(Watcher {
            conn_id: r.conn_id,
            header: r.header,
            tx: r.tx,
        });
        true
    }

    /// The relay's client request and the client's connection queue, while it exists.
    pub fn relay_request(&self, id: u64) -> Option<(Header, mpsc::Sender<Frame>)> {
        self.relays
            .lock()
            .get(&id)
            .map(|r| (r.header, r.tx.clone()))
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

/// The final frame of the stream of the subscription `header`, ended because of `why`.
pub fn final_error(header: &Header, why: &NodeError) -> Frame {
    Frame::new(header.reply(why.into()), Bytes::from(why.to_string()))
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
