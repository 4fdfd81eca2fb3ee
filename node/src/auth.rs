//! Admin authentication: one bearer token per node, compared in constant time.
//!
//! Used by the HTTP admin endpoints and object writes (`Authorization: Bearer <token>`) and by
//! the wire protocol's AUTH command, so both edges apply exactly the same rule.
//!
//! Invariants:
//! - No token configured means every admin request is refused: there is no "open" mode.
//! - The comparison does not leak, through timing, how much of a guess was right.
//! - The token never appears in `Debug` output, logs or errors.

use subtle::ConstantTimeEq;

/// The node's admin credential.
#[derive(Clone)]
pub struct AdminToken {
    token: Option<Vec<u8>>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.token.is_some() {
            "<set>"
        } else {
            "<none>"
        };
        f.debug_struct("AdminToken").field("token", &state).finish()
    }
}

/// Why an admin request was refused. Messages never echo what the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The node has no admin token configured, so admin operations are disabled.
    #[error("admin operations are disabled: the node has no admin token configured")]
    NotConfigured,
    /// No credential was presented.
    #[error("admin token required")]
    Missing,
    /// A credential was presented and is wrong (or malformed).
    #[error("invalid admin token")]
    Invalid,
}

impl AdminToken {
    /// A token from configuration; `None` (or empty) disables admin operations.
    pub fn new(token: Option<String>) -> AdminToken {
        AdminToken {
            token: token.filter(|t| !t.is_empty()).map(String::into_bytes),
        }
    }

    /// True when a token is configured.
    pub fn is_configured(&self) -> bool {
        self.token.is_some()
    }

    /// Checks a presented token.
    pub fn check(&self, presented: Option<&[u8]>) -> Result<(), AuthError> {
        let Some(expected) = &self.token else {
            return Err(AuthError::NotConfigured);
        };
        let Some(presented) = presented else {
            return Err(AuthError::Missing);
        };
        // `ct_eq` on slices of different lengths returns false at once; that reveals only the
        // length, which a 16+ character random token makes worthless to learn.
        if bool::from(expected.as_slice().ct_eq(presented)) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }

    /// Checks an HTTP `Authorization` header value (`Bearer <token>`).
    pub fn check_bearer(&self, header: Option<&str>) -> Result<(), AuthError> {
        match header {
            None => self.check(None),
            Some(value) => {
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .ok_or(AuthError::Invalid)?;
                self.check(Some(token.trim().as_bytes()))
            }
        }
    }
}

/// Writes the audit line for an admin operation: who (peer address), what, on which target, and
/// the outcome. Goes to the `audit` tracing target so it can be routed to its own log.
pub fn audit(peer: &str, operation: &str, target: &str, outcome: &Result<(), String>) {
    match outcome {
        Ok(()) => {
            tracing::info!(target: "audit", peer, operation, target, result = "ok", "admin operation")
        }
        Err(e) => {
            tracing::warn!(target: "audit", peer, operation, target, result = "refused", error = %e, "admin operation")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-secret";

    #[test]
    fn correct_token_is_accepted() {
        let t = AdminToken::new(Some(TOKEN.into()));
        assert_eq!(t.check(Some(TOKEN.as_bytes())), Ok(()));
        assert_eq!(t.check_bearer(Some(&format!("Bearer {TOKEN}"))), Ok(()));
    }

    #[test]
    fn wrong_missing_or_malformed_tokens_are_refused() {
        let t = AdminToken::new(Some(TOKEN.into()));
        assert_eq!(
            t.check(Some(b"0123456789abcdef-secreT")),
            Err(AuthError::Invalid)
        );
        assert_eq!(t.check(Some(b"")), Err(AuthError::Invalid));
        assert_eq!(t.check(None), Err(AuthError::Missing));
        assert_eq!(t.check_bearer(None), Err(AuthError::Missing));
        assert_eq!(
            t.check_bearer(Some(TOKEN)),
            Err(AuthError::Invalid),
            "no Bearer scheme"
        );
        assert_eq!(t.check_bearer(Some("Basic abc")), Err(AuthError::Invalid));
    }

    #[test]
    fn no_configured_token_refuses_everything() {
        for t in [AdminToken::new(None), AdminToken::new(Some(String::new()))] {
            assert!(!t.is_configured());
            assert_eq!(t.check(Some(b"")), Err(AuthError::NotConfigured));
            assert_eq!(
                t.check(Some(TOKEN.as_bytes())),
                Err(AuthError::NotConfigured)
            );
        }
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let shown = format!("{:?}", AdminToken::new(Some(TOKEN.into())));
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<set>"));
    }
}
