//! NOTIFY subscriptions: clients watching keys receive their writes and removes.
//!
//! Not durable: subscriptions live as long as the client's connection. Invariants: at most
//! `MAX_WATCHERS` subscriptions per node; an event never blocks the writer — a watcher whose
//! connection queue is full is dropped (its stream ends), so one slow client cannot stall writes.

use std::collections::HashMap;

use bytes::Bytes;
use ellipsis_core::protocol::cmd::notify::{NotifyEvent, NotifyKind};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{flags, Frame, Header, IoAttr, Status};
use ellipsis_core::Id;
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Most subscriptions per node.
pub const MAX_WATCHERS: usize = 10_000;

struct Watcher {
    conn_id: u64,
    header: Header,
    tx: mpsc::Sender<Frame>,
}

/// All subscriptions.
#[derive(Default)]
pub struct NotifyHub {
    watchers: Mutex<HashMap<Id, Vec<Watcher>>>,
}

impl std::fmt::Debug for NotifyHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyHub")
            .field("watchers", &self.len())
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

    /// Stop the connection's watches of `key`; their streams get a final frame.
    pub fn unsubscribe(&self, key: &Id, conn_id: u64) -> usize {
        let mut w = self.watchers.lock();
        let Some(list) = w.get_mut(key) else { return 0 };
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
        gone.len()
    }

    /// Drop every subscription of a closed connection.
    pub fn drop_conn(&self, conn_id: u64) {
        let mut w = self.watchers.lock();
        for list in w.values_mut() {
            list.retain(|x| x.conn_id != conn_id);
        }
        w.retain(|_, l| !l.is_empty());
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
