//! Key ids and ring ids: 64-byte positions on the sha512 ring.
//!
//! Not routing (see `route`) and not file IO: the ring-id file is encoded and decoded here as
//! bytes, the node reads and writes it. Invariants: ids order bytewise (big-endian as numbers);
//! `Id::for_key` is deterministic and length-prefixes the namespace, so `("ab", "c")` and
//! `("a", "bc")` never collide by construction.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha512};
use thiserror::Error;

/// Bytes in an id.
pub const ID_SIZE: usize = 64;

/// A position on the ring: a key id or a backend's ring id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(pub [u8; ID_SIZE]);

/// Why an id or ring-id file did not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdError {
    /// Not 128 hex digits.
    #[error("an id is 128 hex digits: {0}")]
    BadHex(String),
    /// The ring-id file is damaged or of another format.
    #[error("ring-id file: {0}")]
    BadFile(String),
}

impl Id {
    /// The smallest id.
    pub const ZERO: Id = Id([0; ID_SIZE]);
    /// The largest id.
    pub const MAX: Id = Id([0xff; ID_SIZE]);

    /// sha512(len(namespace) as u32 LE ‖ namespace ‖ key).
    pub fn for_key(namespace: &[u8], key: &[u8]) -> Id {
        let mut h = Sha512::new();
        h.update((namespace.len() as u32).to_le_bytes());
        h.update(namespace);
        h.update(key);
        Id(h.finalize().into())
    }

    /// A uniformly random id (new backends' ring ids).
    pub fn random() -> Id {
        let mut b = [0u8; ID_SIZE];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
        Id(b)
    }

    /// The first 8 bytes as a big-endian number: where the id sits on the ring, as a fraction
    /// of `2^64` (enough resolution for shares and drawings).
    pub fn prefix_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(b)
    }

    /// Short form for humans: the first 6 bytes in hex.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl Default for Id {
    fn default() -> Self {
        Id::ZERO
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({}…)", self.short())
    }
}

impl FromStr for Id {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Id, IdError> {
        let mut b = [0u8; ID_SIZE];
        hex::decode_to_slice(s.trim(), &mut b)
            .map_err(|_| IdError::BadHex(s.chars().take(140).collect()))?;
        Ok(Id(b))
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

const RING_FILE_MAGIC: &[u8; 8] = b"ELLIDS01";
/// Most ids one backend may own (bounds the file and ROUTE_LIST entries).
pub const MAX_IDS_PER_BACKEND: usize = 4096;

/// Encode a backend's ring ids: magic "ELLIDS01", u32 count, ids, u64 xxh3 of all before.
pub fn encode_ring_ids(ids: &[Id]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 4 + ids.len() * ID_SIZE + 8);
    out.extend_from_slice(RING_FILE_MAGIC);
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Decode a ring-id file; any damage is an error naming it.
pub fn decode_ring_ids(b: &[u8]) -> Result<Vec<Id>, IdError> {
    let bad = |m: &str| IdError::BadFile(m.to_owned());
    if b.len() < 8 + 4 + 8 || &b[..8] != RING_FILE_MAGIC {
        return Err(bad("not a ring-id file (magic)"));
    }
    let (body, sum) = b.split_at(b.len() - 8);
    let mut s = [0u8; 8];
    s.copy_from_slice(sum);
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(s) {
        return Err(bad("checksum mismatch"));
    }
    let mut n = [0u8; 4];
    n.copy_from_slice(&body[8..12]);
    let n = u32::from_le_bytes(n) as usize;
    if n == 0 || n > MAX_IDS_PER_BACKEND || body.len() != 12 + n * ID_SIZE {
        return Err(bad("bad id count"));
    }
    Ok(body[12..]
        .chunks_exact(ID_SIZE)
        .map(|c| {
            let mut id = [0u8; ID_SIZE];
            id.copy_from_slice(c);
            Id(id)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_delimited() {
        assert_ne!(Id::for_key(b"ab", b"c"), Id::for_key(b"a", b"bc"));
        assert_eq!(Id::for_key(b"ns", b"k"), Id::for_key(b"ns", b"k"));
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let id = Id::for_key(b"", b"x");
        assert_eq!(id.to_string().parse::<Id>(), Ok(id));
        assert!("abc".parse::<Id>().is_err());
        assert!("zz".repeat(64).parse::<Id>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
    }

    #[test]
    fn ids_order_bytewise() {
        let mut a = Id::ZERO;
        a.0[0] = 1;
        let mut b = Id::ZERO;
        b.0[63] = 0xff;
        assert!(b < a && Id::ZERO < b && a < Id::MAX);
        assert!(a.prefix_u64() > b.prefix_u64());
    }

    #[test]
    fn ring_file_round_trip_and_damage() {
        let ids: Vec<Id> = (0..5).map(|_| Id::random()).collect();
        let b = encode_ring_ids(&ids);
        assert_eq!(decode_ring_ids(&b).unwrap(), ids);
        for i in [0, 9, 20, b.len() - 1] {
            let mut d = b.clone();
            d[i] ^= 1;
            assert!(decode_ring_ids(&d).is_err(), "flip at {i}");
        }
        assert!(decode_ring_ids(&b[..b.len() - 3]).is_err());
        assert!(decode_ring_ids(b"").is_err());
        assert!(decode_ring_ids(&encode_ring_ids(&[])).is_err());
    }
}
