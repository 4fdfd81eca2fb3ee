//! Eblob record header and footer parsing (`eblob::record`, the same bytes as index entries).
//!
//! Random bytes almost never carry a valid magic and checksum, so half the inputs are sealed
//! first (magic and checksum fixed up) to reach the field checks. An accepted header must be
//! self-consistent and re-encode to the same bytes.
#![no_main]

use eblob::record::{self, Header, HEADER_MAGIC, HEADER_SIZE};
use libfuzzer_sys::fuzz_target;

const LEN: usize = HEADER_SIZE as usize;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut buf = rest.to_vec();
    if mode & 1 == 1 && buf.len() >= LEN {
        buf[108..112].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        let csum = xxhash_rust::xxh3::xxh3_64(&buf[..120]);
        buf[120..128].copy_from_slice(&csum.to_le_bytes());
    }
    if let Ok(h) = Header::decode(&buf) {
        assert!(h.data_size <= h.capacity());
        assert!(h.timestamp.nsec < 1_000_000_000);
        assert_eq!(&h.encode()[..], &buf[..LEN]);
        assert!(record::disk_size_for(h.capacity()) <= h.disk_size);
    }
    // Footer parsing with any claimed chunk count.
    let used = u64::from(mode >> 1);
    if let Some((hashes, _)) = record::decode_footer(rest, used) {
        assert_eq!(hashes.len() as u64, used);
    }
});
