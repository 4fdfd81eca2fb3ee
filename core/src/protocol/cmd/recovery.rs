//! RECOVERY (admin): start a dc / merge recovery or cancel one, over the wire protocol.
//!
//! The request's settings travel as the same JSON document `POST /admin/recovery` takes (the
//! node's `RecoveryRequest`), so the protocol and HTTP share one schema and one validation;
//! the reply payload is a [`crate::stats::RecoveryJob`] as JSON.

use super::Payload;
use crate::protocol::ProtocolError;
use crate::wire::{Reader, Writer};

/// Most bytes of a start request's JSON document.
pub const MAX_REQUEST_JSON_BYTES: u32 = 64 << 10;

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryControl {
    /// Start a recovery on the receiving node, fanned out to every other node unless the
    /// document says `local_only`.
    Start {
        /// The recovery request as JSON (`{"kind": "dc", "groups": [1, 2], ...}`).
        request_json: String,
    },
    /// Cancel job `job` of the receiving node and every job it fanned out.
    Cancel {
        /// The job id on the receiving node.
        job: u64,
    },
}

impl Payload for RecoveryControl {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            RecoveryControl::Start { request_json } => w.u32(1).blob(request_json.as_bytes()),
            RecoveryControl::Cancel { job } => w.u32(2).u64(*job),
        };
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "recovery control");
        let v = match r.u32()? {
            1 => RecoveryControl::Start {
                request_json: r.string(MAX_REQUEST_JSON_BYTES)?,
            },
            2 => RecoveryControl::Cancel { job: r.u64()? },
            a => {
                return Err(ProtocolError::Invalid {
                    what: "recovery control",
                    reason: format!("action {a}"),
                })
            }
        };
        r.finish()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_cancel_round_trip_and_bad_actions_are_refused() {
        for v in [
            RecoveryControl::Start {
                request_json: r#"{"kind":"dc"}"#.into(),
            },
            RecoveryControl::Cancel { job: 42 },
        ] {
            assert_eq!(RecoveryControl::decode(&v.encode()).unwrap(), v);
        }
        assert!(RecoveryControl::decode(&[9, 0, 0, 0]).is_err());
        let mut long = RecoveryControl::Cancel { job: 1 }.encode();
        long.push(0);
        assert!(RecoveryControl::decode(&long).is_err());
    }
}
