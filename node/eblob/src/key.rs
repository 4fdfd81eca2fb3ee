//! Keys and timestamps: the two values every record carries.
//!
//! A [`Key`] is an opaque 64-byte id (the node uses sha512 of namespace and key); the engine
//! only compares bytes. A [`Timestamp`] is wall-clock seconds + nanoseconds, ordered.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Size of a key in bytes.
pub const KEY_SIZE: usize = 64;

/// A 64-byte record key, ordered bytewise.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Key(pub [u8; KEY_SIZE]);

impl Key {
    /// A key from exactly 64 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Key, Error> {
        let array: [u8; KEY_SIZE] = bytes.try_into().map_err(|_| {
            Error::InvalidArgument(format!("key must be {KEY_SIZE} bytes, got {}", bytes.len()))
        })?;
        Ok(Key(array))
    }

    /// The smallest key (all zero bytes).
    pub const MIN: Key = Key([0; KEY_SIZE]);
    /// The largest key (all 0xff bytes).
    pub const MAX: Key = Key([0xff; KEY_SIZE]);
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A record timestamp: seconds and nanoseconds since the Unix epoch.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub sec: u64,
    /// Nanoseconds inside the second (< 1e9).
    pub nsec: u32,
}

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            sec: d.as_secs(),
            nsec: d.subsec_nanos(),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.sec, self.nsec)
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for Key {
    type Err = Error;

    /// Parse 128 hex digits.
    fn from_str(s: &str) -> Result<Key, Error> {
        let bad = || Error::InvalidArgument(format!("key must be 128 hex digits, got {s:?}"));
        if s.len() != KEY_SIZE * 2 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; KEY_SIZE];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Key(out))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
