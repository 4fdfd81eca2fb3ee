//! BACKEND_CONTROL (admin): change one backend's state.

use super::{read_ids, write_ids, Payload};
use crate::id::{Id, MAX_IDS_PER_BACKEND};
use crate::protocol::ProtocolError;
use crate::stats::DefragMode;
use crate::wire::{Reader, Writer};

/// What to do to the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendAction {
    /// Open it and announce its ids.
    Enable,
    /// Withdraw its ids and close it.
    Disable,
    /// Refuse writes.
    ReadOnly,
    /// Accept writes again.
    Writable,
    /// Start a data-sort now (compact: only bases that want it).
    DefragStart {
        /// Compact mode.
        compact: bool,
    },
    /// Stop after the current base.
    DefragStop,
    /// Replace its ring ids.
    SetIds(Vec<Id>),
    /// Add an artificial delay to every request (testing, throttling).
    SetDelay {
        /// Milliseconds.
        delay_ms: u32,
    },
    /// Replace its data-sort schedule (persisted; the node checks the ranges).
    SetSchedule {
        /// Scheduling mode.
        mode: DefragMode,
        /// Period of `Timed`.
        timeout_s: u64,
        /// Window centre of `Scheduled`, hour of day (UTC).
        time_hour: u8,
        /// Window half-width in hours.
        splay_hours: u8,
        /// Scheduled sorts only take the bases that want defrag.
        compact: bool,
    },
}

/// Wire code of a data-sort mode (fixed: not the enum's order).
fn mode_code(mode: DefragMode) -> u8 {
    match mode {
        DefragMode::Auto => 1,
        DefragMode::Timed => 2,
        DefragMode::Scheduled => 3,
        DefragMode::None => 4,
    }
}

fn mode_of(code: u8) -> Result<DefragMode, ProtocolError> {
    Ok(match code {
        1 => DefragMode::Auto,
        2 => DefragMode::Timed,
        3 => DefragMode::Scheduled,
        4 => DefragMode::None,
        c => {
            return Err(ProtocolError::Invalid {
                what: "backend control",
                reason: format!("data-sort mode {c}"),
            })
        }
    })
}

/// The request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendControl {
    /// Backend id on the node.
    pub backend: u32,
    /// Action.
    pub action: BackendAction,
}

impl Payload for BackendControl {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.backend);
        match &self.action {
            BackendAction::Enable => w.u32(1),
            BackendAction::Disable => w.u32(2),
            BackendAction::ReadOnly => w.u32(3),
            BackendAction::Writable => w.u32(4),
            BackendAction::DefragStart { compact } => w.u32(5).u8(u8::from(*compact)),
            BackendAction::DefragStop => w.u32(6),
            BackendAction::SetIds(ids) => {
                w.u32(7);
                write_ids(&mut w, ids);
                &mut w
            }
            BackendAction::SetDelay { delay_ms } => w.u32(8).u32(*delay_ms),
            BackendAction::SetSchedule {
                mode,
                timeout_s,
                time_hour,
                splay_hours,
                compact,
            } => w
                .u32(9)
                .u8(mode_code(*mode))
                .u64(*timeout_s)
                .u8(*time_hour)
                .u8(*splay_hours)
                .u8(u8::from(*compact)),
        };
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "backend control");
        let backend = r.u32()?;
        let action = match r.u32()? {
            1 => BackendAction::Enable,
            2 => BackendAction::Disable,
            3 => BackendAction::ReadOnly,
            4 => BackendAction::Writable,
            5 => BackendAction::DefragStart {
                compact: super::read_bool(&mut r, "backend control")?,
            },
            6 => BackendAction::DefragStop,
            7 => {
                let ids = read_ids(&mut r, MAX_IDS_PER_BACKEND as u32)?;
                if ids.is_empty() {
                    return Err(ProtocolError::Invalid {
                        what: "backend control",
                        reason: "a backend needs at least one ring id".into(),
                    });
                }
                BackendAction::SetIds(ids)
            }
            8 => BackendAction::SetDelay { delay_ms: r.u32()? },
            9 => BackendAction::SetSchedule {
                mode: mode_of(r.u8()?)?,
                timeout_s: r.u64()?,
                time_hour: r.u8()?,
                splay_hours: r.u8()?,
                compact: super::read_bool(&mut r, "backend control")?,
            },
            a => {
                return Err(ProtocolError::Invalid {
                    what: "backend control",
                    reason: format!("action {a}"),
                })
            }
        };
        r.finish()?;
        Ok(BackendControl { backend, action })
    }
}
