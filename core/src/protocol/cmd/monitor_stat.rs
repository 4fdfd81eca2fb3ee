//! MONITOR_STAT request: a stats category (`""` = all); the reply payload is the same JSON
//! as `GET /stats/{category}`.

use super::Payload;
use crate::protocol::ProtocolError;
use crate::wire::{Reader, Writer};

/// The category asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonitorStat {
    /// `commands`, `io`, `cache`, `backends`, `procfs`, `workers`, `routes` or empty for all.
    pub category: String,
}

impl Payload for MonitorStat {
    fn encode(&self) -> Vec<u8> {
        Writer::new().blob(self.category.as_bytes()).finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "monitor stat");
        let category = r.string(64)?;
        r.finish()?;
        Ok(MonitorStat { category })
    }
}
