//! The on-disk record: a fixed 128-byte header, the data area, and a footer of chunk hashes.
//!
//! The same 128-byte header is also the index entry (`data-N.index`, `data-N.index.sorted`).
//! Not IO: this module only encodes, decodes and hashes bytes. Invariants: every header carries
//! a magic and its own checksum; the footer size is a pure function of `disk_size`, so the data
//! capacity of a record can always be recomputed from its header. See FORMAT.md.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::key::{Key, Timestamp, KEY_SIZE};

/// Size of a record header and of an index entry.
pub const HEADER_SIZE: u64 = 128;
const HEADER_LEN: usize = HEADER_SIZE as usize;
/// Data is checksummed in chunks of this many bytes.
pub const CHUNK_SIZE: u64 = 1 << 20;
/// "ELLB" little-endian: marks a header, so scans can tell records from garbage.
pub const HEADER_MAGIC: u32 = 0x424c_4c45;

/// The record was removed.
pub const FLAG_REMOVED: u64 = 1;
/// The record carries no checksums.
pub const FLAG_NOCSUM: u64 = 1 << 1;
/// Prepared, not committed: reads refuse it.
pub const FLAG_UNCOMMITTED: u64 = 1 << 2;
/// Reserved for an extended header inside the data area (kept for format compatibility).
pub const FLAG_EXTHDR: u64 = 1 << 3;
const KNOWN_FLAGS: u64 = FLAG_REMOVED | FLAG_NOCSUM | FLAG_UNCOMMITTED | FLAG_EXTHDR;

// Field offsets inside the header; FORMAT.md draws the same table.
const OFF_FLAGS: usize = 64;
const OFF_DATA_SIZE: usize = 72;
const OFF_DISK_SIZE: usize = 80;
const OFF_POSITION: usize = 88;
const OFF_TS_SEC: usize = 96;
const OFF_TS_NSEC: usize = 104;
const OFF_MAGIC: usize = 108;
const OFF_USER_FLAGS: usize = 112;
const OFF_CSUM: usize = 120;
const _: () = assert!(OFF_CSUM + 8 == HEADER_LEN);
const _: () = assert!(KEY_SIZE == OFF_FLAGS);

/// A decoded record header / index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Record key.
    pub key: Key,
    /// `FLAG_*` bits.
    pub flags: u64,
    /// Bytes of object data.
    pub data_size: u64,
    /// Total bytes the record occupies: header + data capacity + footer.
    pub disk_size: u64,
    /// Offset of the record inside its data file.
    pub position: u64,
    /// Record timestamp.
    pub timestamp: Timestamp,
    /// Opaque flags owned by the application.
    pub user_flags: u64,
}

/// Why a header failed to decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a header at all.
    BadMagic,
    /// Header bytes do not match their checksum.
    BadChecksum,
    /// Checksum fine but the fields contradict each other.
    BadFields,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeaderError::BadMagic => "bad header magic",
            HeaderError::BadChecksum => "header checksum mismatch",
            HeaderError::BadFields => "inconsistent header fields",
        })
    }
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

impl Header {
    /// Encode into the fixed 128-byte layout, sealing it with its checksum.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut buf = [0u8; HEADER_LEN];
        buf[..KEY_SIZE].copy_from_slice(&self.key.0);
        put_u64(&mut buf, OFF_FLAGS, self.flags);
        put_u64(&mut buf, OFF_DATA_SIZE, self.data_size);
        put_u64(&mut buf, OFF_DISK_SIZE, self.disk_size);
        put_u64(&mut buf, OFF_POSITION, self.position);
        put_u64(&mut buf, OFF_TS_SEC, self.timestamp.sec);
        buf[OFF_TS_NSEC..OFF_TS_NSEC + 4].copy_from_slice(&self.timestamp.nsec.to_le_bytes());
        buf[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        put_u64(&mut buf, OFF_USER_FLAGS, self.user_flags);
        let csum = xxh3_64(&buf[..OFF_CSUM]);
        put_u64(&mut buf, OFF_CSUM, csum);
        buf
    }

    /// Decode and verify a 128-byte header.
    pub fn decode(buf: &[u8]) -> Result<Header, HeaderError> {
        if buf.len() < HEADER_LEN {
            return Err(HeaderError::BadFields);
        }
        if get_u32(buf, OFF_MAGIC) != HEADER_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if xxh3_64(&buf[..OFF_CSUM]) != get_u64(buf, OFF_CSUM) {
            return Err(HeaderError::BadChecksum);
        }
        let mut key = [0u8; KEY_SIZE];
        key.copy_from_slice(&buf[..KEY_SIZE]);
        let h = Header {
            key: Key(key),
            flags: get_u64(buf, OFF_FLAGS),
            data_size: get_u64(buf, OFF_DATA_SIZE),
            disk_size: get_u64(buf, OFF_DISK_SIZE),
            position: get_u64(buf, OFF_POSITION),
            timestamp: Timestamp {
                sec: get_u64(buf, OFF_TS_SEC),
                nsec: get_u32(buf, OFF_TS_NSEC),
            },
            user_flags: get_u64(buf, OFF_USER_FLAGS),
        };
        if h.flags & !KNOWN_FLAGS != 0
            || h.disk_size < disk_size_for(0)
            || h.data_size > capacity(h.disk_size)
            || h.timestamp.nsec >= 1_000_000_000
        {
            return Err(HeaderError::BadFields);
        }
        Ok(h)
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u64) -> bool {
        self.flags & flag != 0
    }

    /// Bytes of data this record can hold in place.
    pub fn capacity(&self) -> u64 {
        capacity(self.disk_size)
    }

    /// Offset of the data area inside the data file.
    pub fn data_offset(&self) -> u64 {
        self.position + HEADER_SIZE
    }

    /// Offset of the footer inside the data file.
    pub fn footer_offset(&self) -> u64 {
        self.position + self.disk_size - footer_size(self.disk_size)
    }
}

/// Number of chunk-hash slots in the footer of a record of `capacity` data bytes.
pub fn chunk_slots_for_capacity(capacity: u64) -> u64 {
    capacity.div_ceil(CHUNK_SIZE).max(1)
}

/// Total on-disk size of a record that can hold `capacity` data bytes.
pub fn disk_size_for(capacity: u64) -> u64 {
    HEADER_SIZE + capacity + 8 * (chunk_slots_for_capacity(capacity) + 1)
}

/// Chunk-hash slots of a record of `disk_size` bytes (inverse of [`disk_size_for`]).
pub fn chunk_slots(disk_size: u64) -> u64 {
    // With n slots the capacity is in ((n-1)·C, n·C], so disk - header - 8 = capacity + 8n lies
    // in ((n-1)(C+8), n(C+8)] and the ceiling below recovers n exactly.
    disk_size
        .saturating_sub(HEADER_SIZE + 8)
        .div_ceil(CHUNK_SIZE + 8)
        .max(1)
}

/// Footer bytes of a record of `disk_size` bytes: the slots plus the hash of hashes.
pub fn footer_size(disk_size: u64) -> u64 {
    8 * (chunk_slots(disk_size) + 1)
}

/// Data capacity of a record of `disk_size` bytes.
pub fn capacity(disk_size: u64) -> u64 {
    disk_size.saturating_sub(HEADER_SIZE + footer_size(disk_size))
}

/// Hash of one data chunk; the chunk number seeds it so swapped chunks do not verify.
pub fn chunk_hash(chunk_index: u64, bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, chunk_index)
}

/// Number of chunks that hold data for an object of `data_size` bytes.
pub fn used_chunks(data_size: u64) -> u64 {
    data_size.div_ceil(CHUNK_SIZE)
}

/// The record's checksum: a hash over the used chunk hashes.
pub fn hash_of_hashes(hashes: &[u64]) -> u64 {
    let mut bytes = Vec::with_capacity(hashes.len() * 8);
    for h in hashes {
        bytes.extend_from_slice(&h.to_le_bytes());
    }
    xxh3_64(&bytes)
}

/// The checksum a committed, checksummed record holding exactly `data` carries (what
/// [`crate::Lookup::checksum`] reports): the hash of its chunk hashes. Lets a reader that got
/// the bytes from elsewhere (a cache) name the same version the same way.
pub fn data_checksum(data: &[u8]) -> u64 {
    hash_of_hashes(&chunk_hashes(&[data]))
}

/// The chunk hashes a checksummed record holding the concatenation of `parts` carries in its
/// footer, one per [`CHUNK_SIZE`] chunk (each [`chunk_hash`] of its chunk, hashed as the
/// parts stream by, so they need not be contiguous): what the engine writes, and what
/// [`crate::WriteOptions::chunk_hashes`] takes.
pub fn chunk_hashes(parts: &[&[u8]]) -> Vec<u64> {
    let mut h = ChunkHasher::default();
    for part in parts {
        h.update(part);
    }
    h.finish()
}

/// [`chunk_hashes`] of data that arrives in pieces of any size, one piece at a time (a
/// network reader hashes each piece while it is still in the CPU's cache). Invariant: after
/// any sequence of `update`s, `finish` returns `chunk_hashes` of their concatenation.
#[derive(Clone)]
pub struct ChunkHasher {
    h: xxhash_rust::xxh3::Xxh3,
    /// Index of the chunk being hashed (its hash's seed).
    chunk: u64,
    /// Bytes of that chunk hashed so far.
    filled: u64,
    hashes: Vec<u64>,
}

impl Default for ChunkHasher {
    fn default() -> Self {
        ChunkHasher {
            h: xxhash_rust::xxh3::Xxh3::with_seed(0),
            chunk: 0,
            filled: 0,
            hashes: Vec::new(),
        }
    }
}

impl ChunkHasher {
    /// Hash the next `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = ((CHUNK_SIZE - self.filled) as usize).min(data.len());
            self.h.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == CHUNK_SIZE {
                self.hashes.push(self.h.digest());
                self.chunk += 1;
                self.filled = 0;
                self.h = xxhash_rust::xxh3::Xxh3::with_seed(self.chunk);
            }
        }
    }

    /// The hashes of everything given to [`ChunkHasher::update`].
    pub fn finish(mut self) -> Vec<u64> {
        if self.filled > 0 {
            self.hashes.push(self.h.digest());
        }
        self.hashes
    }
}

/// Encode a footer of `slots` slots for `hashes` (the used ones; the rest stay zero).
pub fn encode_footer(slots: u64, hashes: &[u64]) -> Vec<u8> {
    let mut out = vec![0u8; ((slots + 1) * 8) as usize];
    for (i, h) in hashes.iter().enumerate() {
        put_u64(&mut out, i * 8, *h);
    }
    let total = hash_of_hashes(hashes);
    let at = out.len() - 8;
    put_u64(&mut out, at, total);
    out
}

/// Decode a footer into (chunk hashes for `used` chunks, stored hash of hashes).
pub fn decode_footer(bytes: &[u8], used: u64) -> Option<(Vec<u64>, u64)> {
    let used = used as usize;
    if bytes.len() < (used + 1) * 8 || bytes.len() % 8 != 0 {
        return None;
    }
    let hashes = (0..used).map(|i| get_u64(bytes, i * 8)).collect();
    Some((hashes, get_u64(bytes, bytes.len() - 8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            key: Key([7; 64]),
            flags: FLAG_UNCOMMITTED,
            data_size: 10,
            disk_size: disk_size_for(100),
            position: 4096,
            timestamp: Timestamp { sec: 5, nsec: 6 },
            user_flags: 0xdead,
        }
    }

    #[test]
    fn header_round_trips_and_every_flipped_byte_is_detected() {
        let h = header();
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes), Ok(h));
        for i in 0..bytes.len() {
            let mut b = bytes;
            b[i] ^= 0x01;
            assert!(
                Header::decode(&b).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn capacity_is_recovered_from_disk_size_at_every_chunk_boundary() {
        for cap in [
            0,
            1,
            100,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            5 * CHUNK_SIZE + 3,
        ] {
            let disk = disk_size_for(cap);
            assert_eq!(capacity(disk), cap, "capacity {cap}");
            assert_eq!(chunk_slots(disk), chunk_slots_for_capacity(cap));
        }
    }

    #[test]
    fn hashing_in_pieces_gives_each_chunks_own_hash() {
        let data: Vec<u8> = (0..3 * CHUNK_SIZE as usize + 17)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let c = CHUNK_SIZE as usize;
        // By definition: chunk i hashed alone, seeded with i.
        let want: Vec<u64> = data
            .chunks(c)
            .enumerate()
            .map(|(i, chunk)| chunk_hash(i as u64, chunk))
            .collect();
        assert_eq!(want.len(), 4);
        assert_eq!(chunk_hashes(&[&data]), want);
        // Pieces ending before, at and after chunk boundaries, and empty ones.
        for piece in [1, 7, 4096, c - 1, c, c + 1, 2 * c + 5] {
            let mut h = ChunkHasher::default();
            for p in data.chunks(piece) {
                h.update(p);
                h.update(&[]);
            }
            assert_eq!(h.finish(), want, "pieces of {piece}");
        }
        let (a, b) = data.split_at(c + 3);
        assert_eq!(chunk_hashes(&[a, &[], b]), want);
        assert!(chunk_hashes(&[]).is_empty());
        assert_eq!(chunk_hashes(&[&data[..c]]), want[..1]);
    }

    #[test]
    fn footer_round_trips() {
        let f = encode_footer(3, &[1, 2]);
        assert_eq!(f.len(), 32);
        let (hashes, total) = decode_footer(&f, 2).unwrap();
        assert_eq!(hashes, vec![1, 2]);
        assert_eq!(total, hash_of_hashes(&[1, 2]));
    }
}
