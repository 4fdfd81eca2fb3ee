//! Wire status codes: negative errno values, as in the original protocol.
//!
//! The only place where errors become wire statuses is [`Status::from_error_kind`] and the
//! node's `impl From<&NodeError> for Status`; clients turn statuses back into errors here.

/// A reply status: 0 is success, negative values are errno-like failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Status(pub i32);

impl Status {
    /// Success.
    pub const OK: Status = Status(0);
    /// Key not found (ENOENT).
    pub const NOT_FOUND: Status = Status(-2);
    /// Disk or engine IO failure (EIO).
    pub const IO: Status = Status(-5);
    /// Request or frame too large (E2BIG).
    pub const TOO_BIG: Status = Status(-7);
    /// Try again: queue full, overloaded (EAGAIN).
    pub const AGAIN: Status = Status(-11);
    /// Admin token missing or wrong (EACCES).
    pub const ACCESS: Status = Status(-13);
    /// CAS refused: a newer copy exists (EEXIST).
    pub const NEWER_EXISTS: Status = Status(-17);
    /// Malformed request (EINVAL).
    pub const INVALID: Status = Status(-22);
    /// No space left (ENOSPC).
    pub const NO_SPACE: Status = Status(-28);
    /// Backend is read-only (EROFS).
    pub const READ_ONLY: Status = Status(-30);
    /// Upload not committed yet (ENODATA).
    pub const UNCOMMITTED: Status = Status(-61);
    /// Stored data failed its checksum (EBADMSG).
    pub const CORRUPTED: Status = Status(-74);
    /// No route to the key's owner / backend disabled (EHOSTUNREACH).
    pub const UNREACHABLE: Status = Status(-113);
    /// Unknown command or unsupported flags (EOPNOTSUPP).
    pub const NOT_SUPPORTED: Status = Status(-95);
    /// Request timed out (ETIMEDOUT).
    pub const TIMED_OUT: Status = Status(-110);
    /// Job or request cancelled (ECANCELED).
    pub const CANCELLED: Status = Status(-125);

    const NAMED: [(Status, &'static str, &'static str); 16] = [
        (Status::OK, "OK", "success"),
        (Status::NOT_FOUND, "NOT_FOUND", "key not found"),
        (Status::IO, "IO", "input/output error"),
        (Status::TOO_BIG, "TOO_BIG", "request too large"),
        (Status::AGAIN, "AGAIN", "overloaded, try again"),
        (Status::ACCESS, "ACCESS", "admin token missing or wrong"),
        (Status::NEWER_EXISTS, "NEWER_EXISTS", "a newer copy exists"),
        (Status::INVALID, "INVALID", "invalid request"),
        (Status::NO_SPACE, "NO_SPACE", "no space left"),
        (Status::READ_ONLY, "READ_ONLY", "backend is read-only"),
        (Status::UNCOMMITTED, "UNCOMMITTED", "object not committed"),
        (
            Status::CORRUPTED,
            "CORRUPTED",
            "stored data failed its checksum",
        ),
        (
            Status::UNREACHABLE,
            "UNREACHABLE",
            "no route to the key's owner",
        ),
        (
            Status::NOT_SUPPORTED,
            "NOT_SUPPORTED",
            "command not supported",
        ),
        (Status::TIMED_OUT, "TIMED_OUT", "timed out"),
        (Status::CANCELLED, "CANCELLED", "cancelled"),
    ];

    /// Success?
    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// Symbolic name (`NOT_FOUND`), or `ERRNO_<n>` for other codes.
    pub fn name(self) -> String {
        Self::NAMED
            .iter()
            .find(|(s, _, _)| *s == self)
            .map_or_else(|| format!("ERRNO_{}", -self.0), |(_, n, _)| (*n).to_owned())
    }

    /// Human message.
    pub fn message(self) -> &'static str {
        Self::NAMED
            .iter()
            .find(|(s, _, _)| *s == self)
            .map_or("error", |(_, _, m)| m)
    }

    /// The status for a socket/IO error kind (client side: timeouts, refused connections).
    pub fn from_error_kind(kind: std::io::ErrorKind) -> Status {
        use std::io::ErrorKind as K;
        match kind {
            K::NotFound => Status::NOT_FOUND,
            K::TimedOut | K::WouldBlock => Status::TIMED_OUT,
            K::PermissionDenied => Status::ACCESS,
            K::InvalidInput | K::InvalidData => Status::INVALID,
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::UnexpectedEof => Status::UNREACHABLE,
            _ => Status::IO,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.name(), self.0, self.message())
    }
}
