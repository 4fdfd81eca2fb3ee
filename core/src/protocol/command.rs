//! Command codes.

/// A protocol command. Unknown codes decode to [`Command::Unknown`] so that a server can
/// answer them with `Status::NOT_SUPPORTED` instead of dropping the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Command {
    /// Location, size, timestamp and checksum of a key.
    Lookup,
    /// The sender's route table (nodes exchange it on connect and on change).
    RouteList,
    /// Write (with append / prepare / plain write / commit / CAS variants in the IO flags).
    Write,
    /// Read a key (whole or offset + size).
    Read,
    /// Remove a key.
    Del,
    /// Read every key in an id range (streamed).
    ReadRange,
    /// Remove every key in an id range.
    DelRange,
    /// Read a list of keys (streamed).
    BulkRead,
    /// Start / pause / continue / cancel an iterator over a backend.
    Iterator,
    /// Server-send: copy keys to other groups from the node holding them.
    Send,
    /// Admin: enable, disable, read-only, writable, defrag, ids, delay.
    BackendControl,
    /// State of every backend of the node.
    BackendStatus,
    /// Node statistics as JSON, by category.
    MonitorStat,
    /// Watch a key: receive its writes and removes.
    Notify,
    /// Present the admin token on this connection.
    Auth,
    /// Liveness check.
    #[default]
    Ping,
    /// Admin: start or cancel a dc / merge recovery (fanned out to every node).
    Recovery,
    /// A code this version does not know.
    Unknown(u32),
}

impl Command {
    /// Every known command.
    pub const ALL: [Command; 17] = [
        Command::Lookup,
        Command::RouteList,
        Command::Write,
        Command::Read,
        Command::Del,
        Command::ReadRange,
        Command::DelRange,
        Command::BulkRead,
        Command::Iterator,
        Command::Send,
        Command::BackendControl,
        Command::BackendStatus,
        Command::MonitorStat,
        Command::Notify,
        Command::Auth,
        Command::Ping,
        Command::Recovery,
    ];

    /// Wire code.
    pub fn code(self) -> u32 {
        match self {
            Command::Lookup => 1,
            Command::RouteList => 2,
            Command::Write => 3,
            Command::Read => 4,
            Command::Del => 5,
            Command::ReadRange => 6,
            Command::DelRange => 7,
            Command::BulkRead => 8,
            Command::Iterator => 9,
            Command::Send => 10,
            Command::BackendControl => 11,
            Command::BackendStatus => 12,
            Command::MonitorStat => 13,
            Command::Notify => 14,
            Command::Auth => 15,
            Command::Ping => 16,
            Command::Recovery => 17,
            Command::Unknown(c) => c,
        }
    }

    /// From a wire code.
    pub fn from_code(code: u32) -> Command {
        Command::ALL
            .into_iter()
            .find(|c| c.code() == code)
            .unwrap_or(Command::Unknown(code))
    }

    /// Upper-case name as in stats and logs (`READ`, `WRITE`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Command::Lookup => "LOOKUP",
            Command::RouteList => "ROUTE_LIST",
            Command::Write => "WRITE",
            Command::Read => "READ",
            Command::Del => "DEL",
            Command::ReadRange => "READ_RANGE",
            Command::DelRange => "DEL_RANGE",
            Command::BulkRead => "BULK_READ",
            Command::Iterator => "ITERATOR",
            Command::Send => "SEND",
            Command::BackendControl => "BACKEND_CONTROL",
            Command::BackendStatus => "BACKEND_STATUS",
            Command::MonitorStat => "MONITOR_STAT",
            Command::Notify => "NOTIFY",
            Command::Auth => "AUTH",
            Command::Ping => "PING",
            Command::Recovery => "RECOVERY",
            Command::Unknown(_) => "UNKNOWN",
        }
    }

    /// Commands that need the admin token.
    pub fn is_admin(self) -> bool {
        matches!(
            self,
            Command::BackendControl
                | Command::Send
                | Command::Iterator
                | Command::DelRange
                | Command::Recovery
        )
    }

    /// Commands addressed by key (routed to the owner, forwarded if needed).
    pub fn is_keyed(self) -> bool {
        matches!(
            self,
            Command::Lookup | Command::Write | Command::Read | Command::Del | Command::Notify
        )
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Unknown(c) => write!(f, "UNKNOWN({c})"),
            c => f.write_str(c.name()),
        }
    }
}
