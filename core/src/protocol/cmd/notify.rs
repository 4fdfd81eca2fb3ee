//! NOTIFY: a client watches the key in the header; the node then sends, with MORE on the
//! same `trans`, one [`NotifyEvent`] per write or remove of that key until unsubscribed.

use super::Payload;
use crate::protocol::{IoAttr, ProtocolError};
use crate::wire::{Reader, Writer};

/// Subscribe or unsubscribe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyRequest {
    /// true = watch, false = stop watching.
    pub subscribe: bool,
}

impl Payload for NotifyRequest {
    fn encode(&self) -> Vec<u8> {
        Writer::new().u8(u8::from(self.subscribe)).finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "notify request");
        let subscribe = super::read_bool(&mut r, "notify request")?;
        r.finish()?;
        Ok(NotifyRequest { subscribe })
    }
}

/// What happened to the watched key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NotifyKind {
    /// Written.
    #[default]
    Write,
    /// Removed.
    Remove,
}

/// One notification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyEvent {
    /// Write or remove.
    pub kind: NotifyKind,
    /// The record's attributes after the change.
    pub attr: IoAttr,
}

impl Payload for NotifyEvent {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(match self.kind {
            NotifyKind::Write => 1,
            NotifyKind::Remove => 2,
        });
        self.attr.write(&mut w);
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "notify event");
        let kind = match r.u32()? {
            1 => NotifyKind::Write,
            2 => NotifyKind::Remove,
            k => {
                return Err(ProtocolError::Invalid {
                    what: "notify event",
                    reason: format!("kind {k}"),
                })
            }
        };
        let attr = IoAttr::read(&mut r)?;
        r.finish()?;
        Ok(NotifyEvent { kind, attr })
    }
}
