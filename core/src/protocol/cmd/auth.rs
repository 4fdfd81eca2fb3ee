//! AUTH request: the admin token for this connection. Never logged.

use super::Payload;
use crate::protocol::ProtocolError;
use crate::wire::{Reader, Writer};

/// Most token bytes.
pub const MAX_TOKEN_BYTES: u32 = 4096;

/// The token.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Bearer token.
    pub token: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { token: <redacted> }")
    }
}

impl Payload for Auth {
    fn encode(&self) -> Vec<u8> {
        Writer::new().blob(self.token.as_bytes()).finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "auth");
        let token = r.string(MAX_TOKEN_BYTES)?;
        r.finish()?;
        Ok(Auth { token })
    }
}
