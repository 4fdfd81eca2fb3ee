//! The engine through its public API: every behaviour of the Eblob issue, one test each.

mod common;

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{config, key, open, value, Faults};
use eblob::{
    DataSortOptions, Eblob, Error, Fault, IoOp, IterateOptions, Key, SyncPolicy, Timestamp,
    WriteOptions,
};

fn w() -> WriteOptions {
    WriteOptions::default()
}

#[test]
fn written_objects_read_back_whole_and_by_range_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for i in 0..100 {
        db.write(&key(i), &value(i, 0, 100 + i as usize * 37), &w())
            .unwrap();
    }
    for i in 0..100 {
        let v = value(i, 0, 100 + i as usize * 37);
        assert_eq!(db.read(&key(i)).unwrap(), v);
        assert_eq!(db.read_range(&key(i), 10, 20).unwrap(), &v[10..30]);
        assert_eq!(db.read_range(&key(i), 50, 0).unwrap(), &v[50..]);
    }
    db.close().unwrap();
    let db = open(dir.path());
    for i in 0..100 {
        assert_eq!(
            db.read(&key(i)).unwrap(),
            value(i, 0, 100 + i as usize * 37)
        );
    }
    assert_eq!(db.open_report().live_records, 100);
    assert!(db.open_report().torn.is_empty());
}

#[test]
fn data_checksum_names_a_record_as_its_lookup_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let chunk = eblob::record::CHUNK_SIZE as usize;
    for (i, len) in [0, 1, 100, chunk, chunk + 5, 3 * chunk - 1]
        .into_iter()
        .enumerate()
    {
        let v = value(i as u64, 0, len);
        db.write(&key(i as u64), &v, &w()).unwrap();
        assert_eq!(
            db.lookup(&key(i as u64)).unwrap().checksum,
            eblob::record::data_checksum(&v),
            "{len} bytes"
        );
    }
    // Appended records too: their footer covers only the used chunks.
    db.write(&key(99), &value(99, 0, chunk - 3), &w()).unwrap();
    let append = WriteOptions {
        append: true,
        ..w()
    };
    db.write(&key(99), &value(99, 1, 10), &append).unwrap();
    let whole = db.read(&key(99)).unwrap();
    assert_eq!(whole.len(), chunk + 7);
    assert_eq!(
        db.lookup(&key(99)).unwrap().checksum,
        eblob::record::data_checksum(&whole)
    );
}

#[test]
fn missing_removed_and_out_of_range_are_distinct_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    assert!(matches!(db.read(&key(1)), Err(Error::NotFound)));
    assert!(matches!(db.remove(&key(1)), Err(Error::NotFound)));
    db.write(&key(1), b"0123456789", &w()).unwrap();
    assert!(matches!(
        db.read_range(&key(1), 5, 6),
        Err(Error::OutOfRange {
            offset: 5,
            size: 6,
            limit: 10
        })
    ));
    assert!(matches!(
        db.read_range(&key(1), 11, 0),
        Err(Error::OutOfRange { .. })
    ));
    db.remove(&key(1)).unwrap();
    assert!(matches!(db.read(&key(1)), Err(Error::NotFound)));
    assert!(matches!(db.lookup(&key(1)), Err(Error::NotFound)));
    db.close().unwrap();
    let db = open(dir.path());
    assert!(matches!(db.read(&key(1)), Err(Error::NotFound)));
    let s = db.stats();
    assert_eq!(s.total.removed_records, 1);
    assert_eq!(s.total.live_records, 0);
}

#[test]
fn lookup_reports_location_size_timestamp_flags_and_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let ts = Timestamp {
        sec: 1_700_000_000,
        nsec: 5,
    };
    let opts = WriteOptions {
        timestamp: Some(ts),
        user_flags: 42,
        ..w()
    };
    let written = db.write(&key(3), b"abcdef", &opts).unwrap();
    let l = db.lookup(&key(3)).unwrap();
    assert_eq!(l, written);
    assert_eq!(l.data_size_bytes, 6);
    assert_eq!(l.timestamp, ts);
    assert_eq!(l.user_flags, 42);
    assert!(!l.uncommitted && !l.nocsum);
    assert_ne!(l.checksum, 0);
    // The location is real: the bytes are there in the data file.
    let file = std::fs::read(&l.data_path).unwrap();
    let at = l.data_offset_bytes as usize;
    assert_eq!(&file[at..at + 6], b"abcdef");
    // Same content, same checksum; other content, other checksum.
    db.write(&key(4), b"abcdef", &w()).unwrap();
    assert_eq!(db.lookup(&key(4)).unwrap().checksum, l.checksum);
    db.write(&key(4), b"abcdeg", &w()).unwrap();
    assert_ne!(db.lookup(&key(4)).unwrap().checksum, l.checksum);
}

#[test]
fn same_or_smaller_rewrite_is_in_place_and_larger_moves_to_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let first = db.write(&key(1), &[1; 1000], &w()).unwrap();
    db.write(&key(2), &[2; 10], &w()).unwrap();
    let same = db.write(&key(1), &[3; 1000], &w()).unwrap();
    assert_eq!(same.data_offset_bytes, first.data_offset_bytes);
    let smaller = db.write(&key(1), &[4; 500], &w()).unwrap();
    assert_eq!(smaller.data_offset_bytes, first.data_offset_bytes);
    assert_eq!(db.read(&key(1)).unwrap(), vec![4; 500]);
    let larger = db.write(&key(1), &[5; 2000], &w()).unwrap();
    assert!(larger.data_offset_bytes > first.data_offset_bytes);
    assert_eq!(db.read(&key(1)).unwrap(), vec![5; 2000]);
    let s = db.stats();
    assert_eq!(s.total.live_records, 2);
    assert_eq!(
        s.total.removed_records, 1,
        "the moved copy's old record is removed"
    );
}

#[test]
fn overwrite_in_place_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.overwrite_in_place = false;
    let db = Eblob::open(c).unwrap();
    let first = db.write(&key(1), &[1; 100], &w()).unwrap();
    let second = db.write(&key(1), &[2; 100], &w()).unwrap();
    assert_ne!(first.data_offset_bytes, second.data_offset_bytes);
    assert_eq!(db.read(&key(1)).unwrap(), vec![2; 100]);
}

#[test]
fn partial_writes_patch_grow_and_zero_fill() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.write(&key(1), b"hello world", &w()).unwrap();
    db.write(&key(1), b"HELLO", &WriteOptions { offset: 0, ..w() })
        .unwrap();
    // offset 0 without flags replaces the object
    assert_eq!(db.read(&key(1)).unwrap(), b"HELLO");
    db.write(&key(1), b"__", &WriteOptions { offset: 1, ..w() })
        .unwrap();
    assert_eq!(db.read(&key(1)).unwrap(), b"H__LO");
    db.write(&key(1), b"!", &WriteOptions { offset: 8, ..w() })
        .unwrap();
    assert_eq!(db.read(&key(1)).unwrap(), b"H__LO\0\0\0!");
    // Partial write to a missing key creates a zero-prefixed object.
    db.write(&key(2), b"x", &WriteOptions { offset: 3, ..w() })
        .unwrap();
    assert_eq!(db.read(&key(2)).unwrap(), b"\0\0\0x");
    // A partial write across a chunk boundary of a multi-MiB object keeps checksums right.
    let big = value(9, 0, 3 << 20);
    db.write(&key(3), &big, &w()).unwrap();
    let patch = vec![0xaa; 4096];
    let at = (1 << 20) - 2048;
    db.write(&key(3), &patch, &WriteOptions { offset: at, ..w() })
        .unwrap();
    let mut expect = big.clone();
    expect[at as usize..at as usize + 4096].copy_from_slice(&patch);
    assert_eq!(db.read(&key(3)).unwrap(), expect);
    db.close().unwrap();
    let mut c = config(dir.path());
    c.verify_data_on_open = true;
    let db = Eblob::open(c).unwrap();
    assert!(db.open_report().corrupted.is_empty());
    assert_eq!(db.read(&key(3)).unwrap(), expect);
}

#[test]
fn appends_use_reserved_space_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let append = WriteOptions {
        append: true,
        ..w()
    };
    let first = db.write(&key(1), b"abc", &append).unwrap();
    assert!(first.disk_size_bytes > 128 + 3 + 16, "append reserves room");
    let second = db.write(&key(1), b"def", &append).unwrap();
    assert_eq!(
        second.data_offset_bytes, first.data_offset_bytes,
        "fits the reserve"
    );
    let mut expect = b"abcdef".to_vec();
    for i in 0..20u8 {
        db.write(&key(1), &[i; 7], &append).unwrap();
        expect.extend_from_slice(&[i; 7]);
    }
    assert_eq!(db.read(&key(1)).unwrap(), expect);
    assert!(
        db.stats().total.removed_records < 10,
        "reserves grow geometrically"
    );
    db.close().unwrap();
    assert_eq!(open(dir.path()).read(&key(1)).unwrap(), expect);
}

#[test]
fn prepare_plain_write_commit_hides_the_object_until_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let total = 3 * (1 << 20) + 100;
    let object = value(5, 1, total);
    let chunk = 1 << 20;
    let prepare = WriteOptions {
        prepare_size_bytes: Some(total as u64),
        ..w()
    };
    db.write(&key(5), &object[..chunk], &prepare).unwrap();
    assert!(matches!(db.read(&key(5)), Err(Error::Uncommitted)));
    assert!(db.lookup(&key(5)).unwrap().uncommitted);
    let mut off = chunk;
    while off + chunk < total {
        let plain = WriteOptions {
            offset: off as u64,
            plain_write: true,
            ..w()
        };
        db.write(&key(5), &object[off..off + chunk], &plain)
            .unwrap();
        off += chunk;
    }
    // The upload survives a reopen while uncommitted.
    db.close().unwrap();
    let db = open(dir.path());
    assert!(matches!(db.read(&key(5)), Err(Error::Uncommitted)));
    let commit = WriteOptions {
        offset: off as u64,
        plain_write: true,
        commit: true,
        ..w()
    };
    let l = db.write(&key(5), &object[off..], &commit).unwrap();
    assert!(!l.uncommitted);
    assert_eq!(l.data_size_bytes, total as u64);
    assert_eq!(db.read(&key(5)).unwrap(), object);
    // commit with a smaller final size, and an out-of-reserve plain write is refused
    let prepare = WriteOptions {
        prepare_size_bytes: Some(100),
        ..w()
    };
    db.write(&key(6), b"abc", &prepare).unwrap();
    let too_far = WriteOptions {
        offset: 99,
        plain_write: true,
        ..w()
    };
    assert!(matches!(
        db.write(&key(6), b"xy", &too_far),
        Err(Error::OutOfRange { .. })
    ));
    let commit = WriteOptions {
        commit: true,
        commit_size_bytes: Some(2),
        ..w()
    };
    db.write(&key(6), b"", &commit).unwrap();
    assert_eq!(db.read(&key(6)).unwrap(), b"ab");
    // plain write into a committed record is refused, a repeated commit is harmless
    let plain = WriteOptions {
        plain_write: true,
        ..w()
    };
    assert!(matches!(
        db.write(&key(6), b"z", &plain),
        Err(Error::InvalidArgument(_))
    ));
    db.write(
        &key(6),
        b"",
        &WriteOptions {
            commit: true,
            ..w()
        },
    )
    .unwrap();
}

#[test]
fn cas_on_timestamp_never_overwrites_a_newer_or_equal_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let at = |sec| WriteOptions {
        timestamp: Some(Timestamp { sec, nsec: 0 }),
        cas_timestamp: true,
        ..w()
    };
    db.write(&key(1), b"v10", &at(10)).unwrap();
    match db.write(&key(1), b"v5", &at(5)) {
        Err(Error::NewerExists { stored }) => assert_eq!(stored.sec, 10),
        other => panic!("expected NewerExists, got {other:?}"),
    }
    assert!(matches!(
        db.write(&key(1), b"v10b", &at(10)),
        Err(Error::NewerExists { .. })
    ));
    db.write(&key(1), b"v11", &at(11)).unwrap();
    assert_eq!(db.read(&key(1)).unwrap(), b"v11");
}

#[test]
fn cas_on_version_orders_by_timestamp_then_size_and_replaces_only_a_damaged_equal_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let at = |sec| WriteOptions {
        timestamp: Some(Timestamp { sec, nsec: 0 }),
        cas_version: true,
        ..w()
    };
    db.write(&key(1), b"ten", &at(10)).unwrap();
    // Same timestamp, bigger: newer by size.
    db.write(&key(1), b"ten-bigger", &at(10)).unwrap();
    assert_eq!(db.read(&key(1)).unwrap(), b"ten-bigger");
    // Same timestamp, smaller: older.
    assert!(matches!(
        db.write(&key(1), b"ten", &at(10)),
        Err(Error::NewerExists { .. })
    ));
    // Older timestamp, however big: older.
    assert!(matches!(
        db.write(&key(1), &[7u8; 100], &at(9)),
        Err(Error::NewerExists { .. })
    ));
    // Same version, intact: refused (nothing to repair).
    assert!(matches!(
        db.write(&key(1), b"TEN-BIGGER", &at(10)),
        Err(Error::NewerExists { .. })
    ));
    assert_eq!(db.read(&key(1)).unwrap(), b"ten-bigger");
    assert_eq!(db.verify(&key(1)).unwrap().data_size_bytes, 10);

    // Same version, damaged data (header intact): the write repairs it.
    let v = value(2, 0, 3 << 20);
    db.write(&key(2), &v, &at(20)).unwrap();
    let l = db.lookup(&key(2)).unwrap();
    db.close().unwrap();
    flip_byte(&l.data_path, l.data_offset_bytes + (2 << 20) + 3);
    let db = open(dir.path());
    // A plain lookup does not see it; a verifying one does.
    assert_eq!(db.lookup(&key(2)).unwrap().timestamp.sec, 20);
    assert!(matches!(db.verify(&key(2)), Err(Error::Corrupted { .. })));
    db.write(&key(2), &v, &at(20)).unwrap();
    assert_eq!(db.read(&key(2)).unwrap(), v);
    assert_eq!(db.verify(&key(2)).unwrap().checksum, l.checksum);

    // An uncommitted stored copy gives way to the same version.
    let prep = WriteOptions {
        prepare_size_bytes: Some(6),
        ..at(30)
    };
    db.write(&key(3), b"abc", &prep).unwrap();
    db.write(&key(3), b"abcdef", &at(30)).unwrap();
    assert_eq!(db.read(&key(3)).unwrap(), b"abcdef");
}

#[test]
fn a_commit_with_an_expected_checksum_seals_only_matching_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let v = value(4, 0, (2 << 20) + 99);
    db.write(&key(9), &v, &w()).unwrap();
    let want = db.lookup(&key(9)).unwrap().checksum;
    let (half, rest) = v.split_at(1 << 20);
    let prepare = WriteOptions {
        prepare_size_bytes: Some(v.len() as u64),
        ..w()
    };
    let plain = |offset| WriteOptions {
        offset,
        plain_write: true,
        ..w()
    };
    let commit = WriteOptions {
        commit: true,
        commit_checksum: Some(want),
        ..w()
    };
    // A chunk missing: refused, left uncommitted.
    db.write(&key(1), half, &prepare).unwrap();
    assert!(matches!(
        db.write(&key(1), b"", &commit),
        Err(Error::ChecksumMismatch { .. })
    ));
    assert!(db.lookup(&key(1)).unwrap().uncommitted);
    // Every chunk in place: sealed with the source's checksum.
    db.write(&key(1), rest, &plain(half.len() as u64)).unwrap();
    let l = db.write(&key(1), b"", &commit).unwrap();
    assert!(!l.uncommitted);
    assert_eq!(l.checksum, want);
    assert_eq!(db.read(&key(1)).unwrap(), v);
    // The bytes and the lookup of one read describe the same record.
    let (lk, data) = db.read_with_lookup(&key(1), 0, 0).unwrap();
    assert_eq!((lk.checksum, data), (want, v));
}

#[test]
fn a_data_region_holds_the_record_bytes_and_a_write_naming_their_checksum_checks_them() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let chunk = eblob::record::CHUNK_SIZE as usize;
    let v = value(3, 0, 2 * chunk + 17);
    db.write(&key(3), &v, &w()).unwrap();
    let region = db.data_region(&key(3)).unwrap();
    assert_eq!(region.size_bytes, v.len() as u64);
    assert_eq!(region.lookup, db.lookup(&key(3)).unwrap());
    let mut got = vec![0u8; v.len()];
    region
        .file
        .read_exact_at(&mut got, region.offset_bytes)
        .unwrap();
    assert_eq!(got, v);

    // Another store takes the bytes when they hash to the source's checksum...
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path());
    let checked = WriteOptions {
        data_checksum: Some(region.lookup.checksum),
        ..w()
    };
    let l = other.write(&key(3), &got, &checked).unwrap();
    assert_eq!(l.checksum, region.lookup.checksum);
    assert_eq!(other.read(&key(3)).unwrap(), v);
    // ...and refuses other bytes, new key or existing one, storing nothing.
    let mut damaged = got.clone();
    damaged[chunk + 1] ^= 1;
    for k in [key(4), key(3)] {
        assert!(matches!(
            other.write(&k, &damaged, &checked),
            Err(Error::DataMismatch { .. })
        ));
    }
    assert!(matches!(other.lookup(&key(4)), Err(Error::NotFound)));
    assert_eq!(other.read(&key(3)).unwrap(), v);
    assert_eq!(other.stats().total.records, 1);
    let ops = other.stats().ops;
    assert_eq!((ops.mismatched_writes, ops.errors), (2, 0), "{ops:?}");
    // Only a whole checksummed write can name its data's checksum.
    let appending = WriteOptions {
        append: true,
        ..checked.clone()
    };
    assert!(matches!(
        other.write(&key(5), &got, &appending),
        Err(Error::InvalidArgument(_))
    ));

    // Removed and uncommitted records have no region.
    db.remove(&key(3)).unwrap();
    assert!(matches!(db.data_region(&key(3)), Err(Error::NotFound)));
    let prepare = WriteOptions {
        prepare_size_bytes: Some(10),
        ..w()
    };
    db.write(&key(6), b"12345", &prepare).unwrap();
    assert!(matches!(db.data_region(&key(6)), Err(Error::Uncommitted)));
}

/// Chunk hashes computed by the caller replace the engine's own hashing: the record is the
/// same as one the engine hashed, the hashes are checked against a named data checksum, a
/// count that does not fit the data is refused, and hashes of other bytes make a record that
/// reads as corrupted, never as data.
#[test]
fn chunk_hashes_given_by_the_caller_make_the_same_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let chunk = eblob::record::CHUNK_SIZE as usize;
    let v = value(7, 0, 2 * chunk + 5);
    let hashes: Arc<[u64]> = eblob::record::chunk_hashes(&[&v]).into();
    assert_eq!(hashes.len(), 3);
    let given = WriteOptions {
        chunk_hashes: Some(hashes.clone()),
        ..w()
    };
    let l = db.write(&key(1), &v, &given).unwrap();
    assert_eq!(l.checksum, eblob::record::data_checksum(&v));
    assert_eq!(db.read(&key(1)).unwrap(), v);
    db.write(&key(2), &v, &w()).unwrap();
    assert_eq!(db.lookup(&key(2)).unwrap().checksum, l.checksum);

    // Checked against a named checksum like hashes the engine computed.
    let named = |checksum| WriteOptions {
        data_checksum: Some(checksum),
        ..given.clone()
    };
    db.write(&key(3), &v, &named(l.checksum)).unwrap();
    assert!(matches!(
        db.write(&key(4), &v, &named(l.checksum ^ 1)),
        Err(Error::DataMismatch { .. })
    ));
    // A count that does not fit the data, or a write that is not whole, is refused.
    for (data, opts) in [
        (&v[..chunk], given.clone()),
        (
            &v[..],
            WriteOptions {
                append: true,
                ..given.clone()
            },
        ),
    ] {
        assert!(matches!(
            db.write(&key(5), data, &opts),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(db.lookup(&key(5)), Err(Error::NotFound)));

    // A cache in front of the engine gets the same checks, and the same counts, without
    // storing anything.
    let before = db.stats();
    assert_eq!(db.whole_write_checksum(&v, &given).unwrap(), l.checksum);
    assert_eq!(db.whole_write_checksum(&v, &w()).unwrap(), l.checksum);
    assert_eq!(
        db.whole_write_checksum(&v, &named(l.checksum)).unwrap(),
        l.checksum
    );
    assert!(matches!(
        db.whole_write_checksum(&v, &named(l.checksum ^ 1)),
        Err(Error::DataMismatch { .. })
    ));
    assert!(matches!(
        db.whole_write_checksum(&v[..chunk], &given),
        Err(Error::InvalidArgument(_))
    ));
    let after = db.stats();
    assert_eq!(after.total.records, before.total.records);
    assert_eq!(
        (
            after.ops.mismatched_writes - before.ops.mismatched_writes,
            after.ops.errors - before.ops.errors
        ),
        (1, 1),
        "{:?}",
        after.ops
    );

    // Hashes of other bytes: stored, but never read back as data.
    let mut other = v.clone();
    other[chunk + 3] ^= 1;
    db.write(&key(6), &other, &given).unwrap();
    assert!(matches!(db.read(&key(6)), Err(Error::Corrupted { .. })));
}

#[test]
fn a_data_region_stays_readable_after_data_sort_replaces_its_file() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for i in 0..20 {
        db.write(&key(i), &value(i, 0, 5000), &w()).unwrap();
    }
    for i in 0..10 {
        db.remove(&key(i)).unwrap();
    }
    let region = db.data_region(&key(15)).unwrap();
    db.data_sort(&DataSortOptions::default()).unwrap();
    // The record moved to a new file (the removed ones were dropped before it)...
    use std::os::unix::fs::MetadataExt;
    let now = db.lookup(&key(15)).unwrap();
    assert_ne!(now.data_offset_bytes, region.offset_bytes);
    let current_inode = std::fs::metadata(&now.data_path).unwrap().ino();
    assert_ne!(region.file.metadata().unwrap().ino(), current_inode);
    // ...and the region still reads the bytes it named.
    let mut got = vec![0u8; 5000];
    region
        .file
        .read_exact_at(&mut got, region.offset_bytes)
        .unwrap();
    assert_eq!(got, value(15, 0, 5000));
    assert_eq!(eblob::record::data_checksum(&got), region.lookup.checksum);
}

#[test]
fn scatter_gather_write_stores_the_parts_as_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let header = [9u8; 24];
    let body = value(1, 1, (1 << 20) + 17);
    db.write_vectored(&key(1), &[&header, &body, b"tail"], &w())
        .unwrap();
    let mut expect = header.to_vec();
    expect.extend_from_slice(&body);
    expect.extend_from_slice(b"tail");
    assert_eq!(db.read(&key(1)).unwrap(), expect);
    // Same checksum as a contiguous write of the same bytes.
    db.write(&key(2), &expect, &w()).unwrap();
    assert_eq!(
        db.lookup(&key(1)).unwrap().checksum,
        db.lookup(&key(2)).unwrap().checksum
    );
}

#[test]
fn bases_rotate_at_the_record_and_size_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.records_in_blob = 10;
    let db = Eblob::open(c).unwrap();
    for i in 0..35 {
        db.write(&key(i), &[1; 10], &w()).unwrap();
    }
    assert_eq!(db.stats().bases.len(), 4);
    assert!(db.stats().bases.iter().all(|b| b.records <= 10));

    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.blob_size_bytes = 8192;
    let db = Eblob::open(c).unwrap();
    for i in 0..20 {
        db.write(&key(i), &[1; 1000], &w()).unwrap();
    }
    let s = db.stats();
    assert!(s.bases.len() >= 3);
    assert!(s.bases.iter().all(|b| b.size_bytes <= 8192));
    for i in 0..20 {
        assert_eq!(db.read(&key(i)).unwrap(), vec![1; 1000]);
    }
}

#[test]
fn total_size_limit_returns_no_space_and_keeps_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.total_size_limit_bytes = Some(10_000);
    let db = Eblob::open(c).unwrap();
    let mut written = 0;
    let err = loop {
        match db.write(&key(written), &[7; 1000], &w()) {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            Error::NoSpace {
                reason: "total size limit",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no space"));
    assert_eq!(written, 8);
    for i in 0..written {
        assert_eq!(db.read(&key(i)).unwrap(), vec![7; 1000]);
    }
    assert!(
        db.read_only_reason().is_none(),
        "a full backend is not broken"
    );
    // Removing and data-sorting frees space for new writes.
    for i in 0..written {
        db.remove(&key(i)).unwrap();
    }
    db.data_sort(&DataSortOptions::default()).unwrap();
    db.write(&key(100), &[7; 1000], &w()).unwrap();
}

#[test]
fn free_space_check_refuses_writes_below_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.min_free_space_bytes = u64::MAX / 2;
    let db = Eblob::open(c).unwrap();
    let err = db.write(&key(1), b"x", &w()).unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let err = Eblob::open(config(dir.path())).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }));
    assert!(err.to_string().contains("database is locked"), "{err}");
    drop(db);
    open(dir.path());
}

#[test]
fn torn_tail_is_truncated_on_open_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for i in 0..10 {
        db.write(&key(i), &value(i, 0, 5000), &w()).unwrap();
    }
    db.close().unwrap();
    // A crash mid-write: half a record at the end of the data file, no index entry.
    let data = common::data_file(dir.path(), 0);
    let good_len = std::fs::metadata(&data).unwrap().len();
    {
        let db = open(dir.path());
        db.write(&key(10), &value(10, 0, 5000), &w()).unwrap();
        db.close().unwrap();
    }
    let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    f.set_len(good_len + 3000).unwrap();
    let index = dir.path().join("data-0.index");
    let idx = std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap();
    idx.set_len(10 * 128).unwrap();
    let db = open(dir.path());
    let r = db.open_report();
    assert_eq!(r.torn.len(), 1, "{r:?}");
    assert_eq!(r.torn[0].offset_bytes, good_len);
    assert_eq!(r.torn[0].truncated_bytes, 3000);
    assert_eq!(std::fs::metadata(&data).unwrap().len(), good_len);
    for i in 0..10 {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 5000));
    }
    assert!(matches!(db.read(&key(10)), Err(Error::NotFound)));
    // Writing continues at the truncated tail.
    db.write(&key(11), b"after", &w()).unwrap();
    db.close().unwrap();
    assert_eq!(open(dir.path()).read(&key(11)).unwrap(), b"after");
}

#[test]
fn records_written_after_the_last_index_entry_are_recovered_from_the_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for i in 0..10 {
        db.write(&key(i), &value(i, 0, 300), &w()).unwrap();
    }
    db.close().unwrap();
    // The index lost its last 4 entries (they were never synced), the data has them.
    let index = dir.path().join("data-0.index");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(6 * 128 + 50)
        .unwrap();
    let db = open(dir.path());
    assert!(db.open_report().torn.is_empty());
    for i in 0..10 {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 300));
    }
    assert_eq!(
        std::fs::metadata(&index).unwrap().len(),
        10 * 128,
        "index repaired"
    );
}

fn flip_byte(path: &std::path::Path, at: u64) {
    let mut bytes = std::fs::read(path).expect("read file to damage");
    bytes[at as usize] ^= 0x40;
    std::fs::write(path, bytes).expect("write damaged file");
}

#[test]
fn corrupted_data_is_an_error_never_data_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for i in 0..5 {
        db.write(&key(i), &value(i, 0, 3 << 20), &w()).unwrap();
    }
    let victim = db.lookup(&key(2)).unwrap();
    db.close().unwrap();
    // Damage the second MiB chunk of key 2.
    flip_byte(&victim.data_path, victim.data_offset_bytes + (1 << 20) + 5);
    let db = open(dir.path());
    // Ranges that avoid the damaged chunk are still served; ranges touching it are not.
    assert_eq!(
        db.read_range(&key(2), 0, 1000).unwrap(),
        &value(2, 0, 3 << 20)[..1000]
    );
    match db.read(&key(2)) {
        Err(Error::Corrupted { key: k, reason, .. }) => {
            assert_eq!(k, key(2));
            assert!(reason.contains("chunk 1"), "{reason}");
        }
        other => panic!("expected Corrupted, got {:?}", other.map(|v| v.len())),
    }
    for i in [0, 1, 3, 4] {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 3 << 20));
    }
    let s = db.stats();
    assert_eq!(s.total.corrupted, 1);
    assert_eq!(s.ops.corrupted_reads, 1);
    db.close().unwrap();
    // The full startup check finds and reports it.
    let mut c = config(dir.path());
    c.verify_data_on_open = true;
    let db = Eblob::open(c).unwrap();
    let r = db.open_report();
    assert_eq!(r.corrupted.len(), 1, "{r:?}");
    assert_eq!(r.corrupted[0].offset_bytes, victim.data_offset_bytes - 128);
    assert!(matches!(
        db.read(&key(2)),
        Err(Error::NotFound | Error::Corrupted { .. })
    ));
    for i in [0, 1, 3, 4] {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 3 << 20));
    }
}

#[test]
fn the_full_startup_check_reports_damaged_records_of_sorted_bases_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.records_in_blob = 10;
    let db = Eblob::open(c.clone()).unwrap();
    for i in 0..35 {
        db.write(&key(i), &value(i, 0, 5000), &w()).unwrap();
    }
    db.data_sort(&DataSortOptions::default()).unwrap();
    let victim = db.lookup(&key(12)).unwrap();
    let sorted_bases = db.stats().bases.iter().filter(|b| b.sorted).count();
    assert!(sorted_bases >= 3, "{:?}", db.stats().bases);
    db.close().unwrap();
    flip_byte(&victim.data_path, victim.data_offset_bytes + 100);
    // The default check trusts a sorted base's data until it is read ...
    let db = open(dir.path());
    assert!(db.open_report().corrupted.is_empty());
    assert!(matches!(db.read(&key(12)), Err(Error::Corrupted { .. })));
    db.close().unwrap();
    // ... the full one hashes every record and reports the damaged one at open.
    c.verify_data_on_open = true;
    let db = Eblob::open(c).unwrap();
    let r = db.open_report();
    assert_eq!(r.corrupted.len(), 1, "{r:?}");
    assert_eq!(r.corrupted[0].offset_bytes, victim.data_offset_bytes - 128);
    assert!(r.corrupted[0].reason.contains("chunk"), "{r:?}");
    assert_eq!(db.stats().total.corrupted, 1);
    assert!(matches!(db.read(&key(12)), Err(Error::NotFound)));
    for i in (0..35).filter(|&i| i != 12) {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 5000), "key {i}");
    }
}

#[test]
fn a_damaged_index_is_rebuilt_from_the_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for i in 0..50 {
        db.write(&key(i), &value(i, 0, 200), &w()).unwrap();
    }
    db.remove(&key(7)).unwrap();
    db.close().unwrap();
    flip_byte(&dir.path().join("data-0.index"), 20 * 128 + 30);
    let db = open(dir.path());
    assert_eq!(db.open_report().indexes_rebuilt, vec![0]);
    for i in 0..50 {
        if i == 7 {
            assert!(matches!(db.read(&key(i)), Err(Error::NotFound)));
        } else {
            assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 200));
        }
    }
}

#[test]
fn a_damaged_record_header_in_the_middle_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for i in 0..20 {
        db.write(&key(i), &value(i, 0, 1000), &w()).unwrap();
    }
    let victim = db.lookup(&key(9)).unwrap();
    db.close().unwrap();
    // Header damage in the data file plus an index that must be rebuilt.
    flip_byte(&victim.data_path, victim.data_offset_bytes - 128 + 70);
    std::fs::remove_file(dir.path().join("data-0.index")).unwrap();
    let db = open(dir.path());
    let r = db.open_report();
    assert_eq!(r.corrupted.len(), 1, "{r:?}");
    assert!(r.torn.is_empty());
    assert!(matches!(db.read(&key(9)), Err(Error::NotFound)));
    for i in (0..20).filter(|i| *i != 9) {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 1000));
    }
}

fn sorted_config(dir: &std::path::Path) -> eblob::Config {
    let mut c = config(dir);
    c.records_in_blob = 100;
    c
}

#[test]
fn data_sort_sorts_drops_removed_releases_ram_and_merges_small_bases() {
    let dir = tempfile::tempdir().unwrap();
    let db = Eblob::open(sorted_config(dir.path())).unwrap();
    // Written in descending key order so sorting really reorders.
    for i in (0..350).rev() {
        db.write(&key(i), &value(i, 0, 100), &w()).unwrap();
    }
    for i in (0..350).step_by(3) {
        db.remove(&key(i)).unwrap();
    }
    let before = db.stats();
    assert!(before.total.ram_index_bytes > 0);
    assert_eq!(before.bases.len(), 4);
    let report = db.data_sort(&DataSortOptions::default()).unwrap();
    assert_eq!(report.removed_dropped, 117);
    assert_eq!(report.records_written, 233);
    let after = db.stats();
    // 233 live records fit in 3 bases of 100: small neighbours were merged.
    let sorted: Vec<_> = after.bases.iter().filter(|b| b.sorted).collect();
    assert_eq!(sorted.len(), 3, "{after:#?}");
    assert_eq!(after.total.removed_records, 0);
    assert_eq!(after.total.live_records, 233);
    assert_eq!(
        after.total.ram_index_bytes, 0,
        "the open base is empty, sorted bases hold no map"
    );
    assert!(after.total.ram_bloom_bytes > 0 && after.total.ram_index_blocks_bytes > 0);
    assert!(after.total.size_bytes < before.total.size_bytes);
    assert_eq!(after.data_sort.last_result.as_deref(), Some("ok"));
    // Iteration is in on-disk order, which inside a sorted base is key order.
    let mut runs: std::collections::BTreeMap<u32, Vec<Key>> = Default::default();
    db.iterate(&IterateOptions::default(), &mut |r| {
        runs.entry(r.lookup.base_index)
            .or_default()
            .push(r.lookup.key);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(runs.values().map(Vec::len).sum::<usize>(), 233);
    for keys in runs.values() {
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "a sorted base iterates in key order"
        );
    }
    for i in 0..350 {
        match db.read(&key(i)) {
            Ok(v) => assert_eq!(v, value(i, 0, 100)),
            Err(Error::NotFound) => assert_eq!(i % 3, 0),
            Err(e) => panic!("{e}"),
        }
    }
    db.close().unwrap();
    let db = Eblob::open(sorted_config(dir.path())).unwrap();
    assert_eq!(db.open_report().sorted_bases, 3);
    for i in 0..350 {
        assert_eq!(db.read(&key(i)).is_ok(), i % 3 != 0);
    }
    // Sorted bases stay writable: remove and overwrite in place.
    db.remove(&key(1)).unwrap();
    db.write(&key(2), &value(2, 9, 100), &w()).unwrap();
    assert!(matches!(db.read(&key(1)), Err(Error::NotFound)));
    assert_eq!(db.read(&key(2)).unwrap(), value(2, 9, 100));
    assert!(db
        .stats()
        .bases
        .iter()
        .any(|b| b.sorted && b.removed_records == 1));
}

#[test]
fn missing_keys_in_sorted_bases_are_answered_from_ram() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let mut c = sorted_config(dir.path());
    c.fault_injector = Some(faults.clone());
    let db = Eblob::open(c).unwrap();
    for i in 0..1000 {
        db.write(&key(i * 2), &[1; 50], &w()).unwrap();
    }
    db.data_sort(&DataSortOptions::default()).unwrap();
    let before = faults.reads.load(Ordering::SeqCst);
    let mut not_found = 0;
    for i in 0..1000 {
        if matches!(db.lookup(&key(i * 2 + 1)), Err(Error::NotFound)) {
            not_found += 1;
        }
    }
    assert_eq!(not_found, 1000);
    let reads = faults.reads.load(Ordering::SeqCst) - before;
    // 10 bloom bits per key: about 1 % false positives, each costing one block read.
    assert!(reads < 50, "{reads} disk reads for 1000 missing keys");
    // Present keys cost one block read + header/footer/data reads.
    assert_eq!(db.read(&key(10)).unwrap(), vec![1; 50]);
}

#[test]
fn compact_mode_sorts_only_bases_that_want_defrag() {
    let dir = tempfile::tempdir().unwrap();
    let db = Eblob::open(sorted_config(dir.path())).unwrap();
    for i in 0..300 {
        db.write(&key(i), &[1; 100], &w()).unwrap();
    }
    // Base 1 (keys 100..200) loses half its records.
    for i in (100..200).step_by(2) {
        db.remove(&key(i)).unwrap();
    }
    let s = db.stats();
    let wants: Vec<u32> = s
        .bases
        .iter()
        .filter(|b| b.want_defrag)
        .map(|b| b.number)
        .collect();
    assert_eq!(wants, vec![1]);
    let report = db
        .data_sort(&DataSortOptions {
            compact_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(report.bases_in, vec![1]);
    assert_eq!(report.records_written, 50);
    let s = db.stats();
    let sorted: Vec<u32> = s
        .bases
        .iter()
        .filter(|b| b.sorted)
        .map(|b| b.number)
        .collect();
    assert_eq!(sorted, vec![1]);
    assert_eq!(s.total.want_defrag_bases, 0);
}

/// Asks the engine to stop its data-sort the first time the sort reads base 0's index:
/// deterministic "stop while the first base is being sorted".
#[derive(Debug, Default)]
struct StopOnFirstSortRead {
    db: std::sync::OnceLock<std::sync::Weak<Eblob>>,
    armed: std::sync::atomic::AtomicBool,
}

impl eblob::FaultInjector for StopOnFirstSortRead {
    fn on_io(&self, op: IoOp, path: &std::path::Path, _: u64, _: u64) -> Fault {
        if op == IoOp::Read
            && path.ends_with("data-0.index")
            && self.armed.swap(false, Ordering::SeqCst)
        {
            if let Some(db) = self.db.get().and_then(|w| w.upgrade()) {
                db.stop_data_sort();
            }
        }
        Fault::None
    }
}

#[test]
fn stop_data_sort_stops_after_the_current_base() {
    let dir = tempfile::tempdir().unwrap();
    let stopper = Arc::new(StopOnFirstSortRead::default());
    let mut c = sorted_config(dir.path());
    c.blob_size_bytes = 30_000; // bases too large to merge
    c.fault_injector = Some(stopper.clone());
    let db = Arc::new(Eblob::open(c).unwrap());
    stopper.db.set(Arc::downgrade(&db)).unwrap();
    for i in 0..500 {
        db.write(&key(i), &[1; 200], &w()).unwrap();
    }
    let planned = db.stats().bases.len();
    assert!(planned >= 4);
    stopper.armed.store(true, Ordering::SeqCst);
    let report = db.data_sort(&DataSortOptions::default()).unwrap();
    assert!(report.stopped, "{report:?}");
    assert_eq!(
        report.bases_out,
        vec![0],
        "only the base being sorted when asked was finished"
    );
    assert_eq!(db.stats().data_sort.last_result.as_deref(), Some("stopped"));
    for i in 0..500 {
        assert_eq!(db.read(&key(i)).unwrap(), vec![1; 200]);
    }
    // A second run finishes the job.
    let report = db.data_sort(&DataSortOptions::default()).unwrap();
    assert!(!report.stopped);
    assert!(db
        .stats()
        .bases
        .iter()
        .filter(|b| !b.sorted)
        .all(|b| b.records == 0));
}

/// Records every progress report; on the first report after a base is done, checks what the
/// stats say at that instant and (if `stop_after_first`) asks the engine to stop.
#[derive(Default)]
struct Recorder {
    db: std::sync::OnceLock<std::sync::Weak<Eblob>>,
    seen: std::sync::Mutex<Vec<eblob::DataSortProgress>>,
    /// Stats taken inside the first report after a base was done (no engine lock is held).
    mid_run: std::sync::Mutex<Option<eblob::DataSortStats>>,
    stop_after_first: bool,
}

impl eblob::SortProgress for Recorder {
    fn report(&self, p: &eblob::DataSortProgress) -> ControlFlow<()> {
        self.seen.lock().expect("recorder lock").push(*p);
        if p.bases_done == 1 {
            if let Some(db) = self.db.get().and_then(|w| w.upgrade()) {
                if self.stop_after_first {
                    db.stop_data_sort();
                }
                *self.mid_run.lock().expect("recorder lock") = Some(db.stats().data_sort);
            }
        }
        ControlFlow::Continue(())
    }
}

/// At least four closed bases too large to merge (each its own group), records in the open one.
fn four_big_bases(dir: &std::path::Path, recorder: &Arc<Recorder>) -> Arc<Eblob> {
    let mut c = sorted_config(dir);
    c.blob_size_bytes = 30_000;
    let db = Arc::new(Eblob::open(c).expect("open"));
    recorder
        .db
        .set(Arc::downgrade(&db))
        .expect("a recorder serves one engine");
    for i in 0..450 {
        db.write(&key(i), &[1; 200], &w()).expect("write");
    }
    db
}

#[test]
fn data_sort_reports_progress_per_base_in_stats_and_to_its_observer() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let db = four_big_bases(dir.path(), &recorder);
    let bases = db.stats().bases;
    let closed: Vec<u64> = bases[..bases.len() - 1]
        .iter()
        .map(|b| b.size_bytes)
        .collect();
    let n = closed.len() as u64;
    assert!(n >= 4, "{n} closed bases");
    assert_eq!(db.stats().data_sort.progress, None, "idle: no progress");
    let report = db
        .data_sort(&DataSortOptions {
            closed_only: true,
            progress: Some(recorder.clone()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(report.bases_in, (0..n as u32).collect::<Vec<_>>());
    let total: u64 = closed.iter().sum();
    let seen = recorder.seen.lock().unwrap().clone();
    let expect: Vec<(u64, u64)> = (0..=n)
        .map(|i| (i, closed[..i as usize].iter().sum()))
        .collect();
    assert_eq!(
        seen.iter()
            .map(|p| (p.bases_done, p.bytes_done))
            .collect::<Vec<_>>(),
        expect,
        "one report for the plan, then one per base"
    );
    assert!(seen
        .iter()
        .all(|p| p.bases_total == n && p.bytes_total == total));
    let mid = recorder
        .mid_run
        .lock()
        .unwrap()
        .clone()
        .expect("mid-run stats");
    assert!(mid.running && !mid.stopping);
    assert_eq!(
        mid.progress.map(|p| (p.bases_done, p.bases_total)),
        Some((1, n))
    );
    let after = db.stats().data_sort;
    assert_eq!((after.running, after.progress), (false, None));
}

#[test]
fn a_stop_request_shows_stopping_until_the_current_base_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder {
        stop_after_first: true,
        ..Recorder::default()
    });
    let db = four_big_bases(dir.path(), &recorder);
    let report = db
        .data_sort(&DataSortOptions {
            progress: Some(recorder.clone()),
            ..Default::default()
        })
        .unwrap();
    assert!(report.stopped);
    assert_eq!(report.bases_out, vec![0]);
    let mid = recorder
        .mid_run
        .lock()
        .unwrap()
        .clone()
        .expect("mid-run stats");
    assert!(mid.running && mid.stopping, "{mid:?}");
    let after = db.stats().data_sort;
    assert!(!after.running && !after.stopping);
    assert_eq!(after.last_result.as_deref(), Some("stopped"));
    // A stop asked while nothing runs does not cancel the next run.
    db.stop_data_sort();
    assert!(!db.stats().data_sort.stopping);
    assert!(!db.data_sort(&DataSortOptions::default()).unwrap().stopped);
}

/// The observer's `Break` stops the run like `stop_data_sort` (how the node's job cancel and
/// pause reach the engine).
#[test]
fn an_observer_that_breaks_stops_the_sort_after_the_current_base() {
    struct BreakAfterFirst;
    impl eblob::SortProgress for BreakAfterFirst {
        fn report(&self, p: &eblob::DataSortProgress) -> ControlFlow<()> {
            if p.bases_done >= 1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let db = four_big_bases(dir.path(), &Arc::new(Recorder::default()));
    let report = db
        .data_sort(&DataSortOptions {
            progress: Some(Arc::new(BreakAfterFirst)),
            ..Default::default()
        })
        .unwrap();
    assert!(report.stopped);
    assert_eq!(report.bases_out, vec![0]);
}

#[test]
fn closed_only_sorts_closed_bases_and_leaves_the_open_one_and_rotations_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = Eblob::open(sorted_config(dir.path())).unwrap();
    for i in 0..250 {
        db.write(&key(i), &[1; 100], &w()).unwrap();
    }
    let s = db.stats();
    assert_eq!(s.ops.rotations, 2, "bases 0 and 1 filled up");
    let report = db
        .data_sort(&DataSortOptions {
            closed_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(report.bases_in, vec![0, 1]);
    let s = db.stats();
    let open = s.bases.last().unwrap();
    assert!(!open.sorted && open.records == 50, "{open:?}");
    assert!(s.bases[..s.bases.len() - 1].iter().all(|b| b.sorted));
    assert_eq!(
        s.ops.rotations, 2,
        "a data-sort's own work is not a rotation"
    );
    // A full run closes the open base itself; that is not counted as a rotation either.
    db.data_sort(&DataSortOptions::default()).unwrap();
    assert_eq!(db.stats().ops.rotations, 2);
    for i in 0..250 {
        assert_eq!(db.read(&key(i)).unwrap(), vec![1; 100]);
    }
}

#[test]
fn a_base_wants_defrag_exactly_when_removed_bytes_reach_the_percentage() {
    for pct in [25u8, 10, 50] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        if pct != 25 {
            c.defrag_percentage = pct;
        }
        assert_eq!(
            eblob::Config::new(dir.path()).defrag_percentage,
            25,
            "the default"
        );
        let db = Eblob::open(c).unwrap();
        // 100 records of one size: each removal is exactly 1 % of the base.
        for i in 0..100 {
            db.write(&key(i), &[7; 100], &w()).unwrap();
        }
        for i in 0..u64::from(pct) - 1 {
            db.remove(&key(i)).unwrap();
        }
        let b = &db.stats().bases[0];
        assert_eq!(b.removed_bytes * 100, (u64::from(pct) - 1) * b.size_bytes);
        assert!(!b.want_defrag, "{}% removed, threshold {pct}%", pct - 1);
        db.remove(&key(u64::from(pct) - 1)).unwrap();
        let s = db.stats();
        assert!(s.bases[0].want_defrag, "{pct}% removed, threshold {pct}%");
        assert_eq!(s.total.want_defrag_bases, 1);
    }
}

#[test]
fn reads_writes_and_removes_during_data_sort_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = sorted_config(dir.path());
    c.records_in_blob = 500;
    let db = Arc::new(Eblob::open(c).unwrap());
    let n = 3000u64;
    for i in 0..n {
        db.write(&key(i), &value(i, 0, 300), &w()).unwrap();
    }
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let writer = {
        let (db, barrier) = (db.clone(), barrier.clone());
        std::thread::spawn(move || {
            barrier.wait();
            for i in 0..n {
                match i % 4 {
                    0 => db.remove(&key(i)).unwrap(),
                    1 => {
                        db.write(&key(i), &value(i, 1, 300), &w()).unwrap();
                    }
                    2 => {
                        db.write(&key(i), &value(i, 1, 600), &w()).unwrap();
                    }
                    _ => {
                        db.write(&key(n + i), &value(n + i, 0, 100), &w()).unwrap();
                    }
                }
            }
        })
    };
    let reader = {
        let (db, barrier) = (db.clone(), barrier.clone());
        std::thread::spawn(move || {
            barrier.wait();
            for round in 0..3 {
                for i in (round..n).step_by(7) {
                    match db.read(&key(i)) {
                        Ok(v) => assert!(
                            v == value(i, 0, 300) || v == value(i, 1, 300) || v == value(i, 1, 600),
                            "key {i} returned foreign bytes"
                        ),
                        Err(Error::NotFound) => assert_eq!(i % 4, 0),
                        Err(e) => panic!("read {i}: {e}"),
                    }
                }
            }
        })
    };
    barrier.wait();
    db.data_sort(&DataSortOptions::default()).unwrap();
    writer.join().unwrap();
    reader.join().unwrap();
    let check = |db: &Eblob| {
        for i in 0..n {
            let got = db.read(&key(i));
            match i % 4 {
                0 => assert!(
                    matches!(got, Err(Error::NotFound)),
                    "removed key {i} came back"
                ),
                1 => assert_eq!(got.unwrap(), value(i, 1, 300)),
                2 => assert_eq!(got.unwrap(), value(i, 1, 600)),
                _ => {
                    assert_eq!(got.unwrap(), value(i, 0, 300));
                    assert_eq!(db.read(&key(n + i)).unwrap(), value(n + i, 0, 100));
                }
            }
        }
    };
    check(&db);
    db.data_sort(&DataSortOptions::default()).unwrap();
    check(&db);
    drop(db);
    check(&Eblob::open(sorted_config(dir.path())).unwrap());
}

#[test]
fn a_sort_interrupted_before_commit_is_discarded_and_after_commit_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let db = Eblob::open(sorted_config(dir.path())).unwrap();
    for i in 0..250 {
        db.write(&key(i), &value(i, 0, 100), &w()).unwrap();
    }
    db.close().unwrap();
    // Leftovers of a sort that crashed while writing: ignored and deleted at open.
    std::fs::write(dir.path().join("data-0.sorting"), b"partial").unwrap();
    std::fs::write(dir.path().join("data-0.index.sorting"), b"partial").unwrap();
    let db = Eblob::open(sorted_config(dir.path())).unwrap();
    assert_eq!(db.open_report().sorts_discarded, 1);
    assert!(!dir.path().join("data-0.sorting").exists());
    for i in 0..250 {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 100));
    }
    db.close().unwrap();
    // A sort that committed but crashed before its renames: sort a copy, put the copy's
    // sorted files back under their temporary names beside the originals, add the commit
    // records, and open.
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    let sorted_db = Eblob::open(sorted_config(copy.path())).unwrap();
    let report = sorted_db.data_sort(&DataSortOptions::default()).unwrap();
    sorted_db.close().unwrap();
    assert_eq!(
        report.bases_in, report.bases_out,
        "no merges at 100 records per base"
    );
    for &n in &report.bases_out {
        let from = |s: &str| copy.path().join(format!("data-{n}{s}"));
        let to = |s: &str| dir.path().join(format!("data-{n}{s}"));
        std::fs::copy(from(""), to(".sorting")).unwrap();
        std::fs::copy(from(".index.sorted"), to(".index.sorting")).unwrap();
        // The commit record: magic, version, target, has_output, count, merged..., xxh3.
        let mut commit = Vec::new();
        for v in [0x5353_4c45u32, 1, n, 1, 1, n] {
            commit.extend_from_slice(&v.to_le_bytes());
        }
        let sum = xxhash_rust::xxh3::xxh3_64(&commit);
        commit.extend_from_slice(&sum.to_le_bytes());
        std::fs::write(to(".sort-commit"), commit).unwrap();
    }
    let db = Eblob::open(sorted_config(dir.path())).unwrap();
    let r = db.open_report();
    assert_eq!(r.sorts_finished, report.bases_out);
    assert_eq!(r.sorted_bases as usize, report.bases_out.len());
    for i in 0..250 {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 100));
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            !name.ends_with(".sorting")
                && !name.ends_with(".sort-commit")
                && !name.ends_with(".index")
                || name == "data-3.index",
            "{name} left over"
        );
    }
}

#[test]
fn iteration_visits_live_records_with_key_and_time_filters_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for i in 0..100 {
        let ts = Timestamp {
            sec: 1000 + i,
            nsec: 0,
        };
        db.write(
            &key(i),
            &value(i, 0, 64),
            &WriteOptions {
                timestamp: Some(ts),
                ..w()
            },
        )
        .unwrap();
    }
    for i in 0..10 {
        db.remove(&key(i)).unwrap();
    }
    db.write(
        &key(200),
        b"prepared",
        &WriteOptions {
            prepare_size_bytes: Some(100),
            ..w()
        },
    )
    .unwrap();
    let collect = |opts: &IterateOptions| {
        let mut seen = Vec::new();
        let report = db
            .iterate(opts, &mut |r| {
                if let Some(d) = &r.data {
                    assert_eq!(d.len() as u64, r.lookup.data_size_bytes);
                }
                seen.push(r.lookup.key);
                ControlFlow::Continue(())
            })
            .unwrap();
        (seen, report)
    };
    let (all, report) = collect(&IterateOptions::default());
    assert_eq!(all.len(), 90);
    assert_eq!(report.records, 90);
    assert_eq!(
        all,
        (10..100).map(key).collect::<Vec<Key>>(),
        "write order on disk"
    );
    let (ranged, report) = collect(&IterateOptions {
        key_range: Some((key(20), key(29))),
        ..Default::default()
    });
    assert_eq!(ranged.len(), 10);
    assert_eq!(report.filtered, 80);
    let (timed, _) = collect(&IterateOptions {
        time_range: Some((
            Timestamp { sec: 1050, nsec: 0 },
            Timestamp { sec: 1059, nsec: 0 },
        )),
        with_data: true,
        ..Default::default()
    });
    assert_eq!(timed, (50..60).map(key).collect::<Vec<Key>>());
    let (with_uncommitted, _) = collect(&IterateOptions {
        include_uncommitted: true,
        ..Default::default()
    });
    assert_eq!(with_uncommitted.len(), 91);
    // The callback can stop the iteration.
    let mut n = 0;
    let report = db
        .iterate(&IterateOptions::default(), &mut |_| {
            n += 1;
            if n == 5 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert!(report.stopped);
    assert_eq!(report.records, 5);
}

#[test]
fn an_fsync_error_turns_the_backend_read_only_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let mut c = config(dir.path());
    c.sync = SyncPolicy::Always;
    c.fault_injector = Some(faults.clone());
    let db = Eblob::open(c).unwrap();
    db.write(&key(1), b"before", &w()).unwrap();
    *faults.next.lock().unwrap() = Some((
        IoOp::Sync,
        "data-0".into(),
        Fault::Fail(std::io::ErrorKind::Other),
    ));
    let err = db.write(&key(2), b"lost?", &w()).unwrap_err();
    assert!(matches!(err, Error::Io { op: "fsync", .. }), "{err}");
    let reason = db.read_only_reason().expect("read-only after fsync error");
    assert!(reason.contains("fsync"), "{reason}");
    assert!(matches!(
        db.write(&key(3), b"x", &w()),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(db.remove(&key(1)), Err(Error::ReadOnly { .. })));
    assert_eq!(db.read(&key(1)).unwrap(), b"before", "reads keep working");
    assert_eq!(db.stats().read_only_reason, Some(reason));
}

#[test]
fn a_write_error_turns_the_backend_read_only_and_reopen_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let mut c = config(dir.path());
    c.fault_injector = Some(faults.clone());
    let db = Eblob::open(c).unwrap();
    db.write(&key(1), &[1; 5000], &w()).unwrap();
    *faults.next.lock().unwrap() = Some((IoOp::Write, "data-0".into(), Fault::ShortWrite(100)));
    assert!(matches!(
        db.write(&key(2), &[2; 5000], &w()),
        Err(Error::Io { .. })
    ));
    assert!(db.read_only_reason().is_some());
    drop(db);
    let db = open(dir.path());
    assert_eq!(db.read(&key(1)).unwrap(), vec![1; 5000]);
    assert!(matches!(db.read(&key(2)), Err(Error::NotFound)));
    db.write(&key(3), b"ok", &w()).unwrap();
}

#[test]
fn sync_always_syncs_every_write_and_never_syncs_none() {
    for (policy, expect_syncs) in [(SyncPolicy::Always, true), (SyncPolicy::Never, false)] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(Faults::default());
        let mut c = config(dir.path());
        c.sync = policy;
        c.fault_injector = Some(faults.clone());
        let db = Eblob::open(c).unwrap();
        let before = faults.syncs.load(Ordering::SeqCst);
        for i in 0..10 {
            db.write(&key(i), b"x", &w()).unwrap();
        }
        db.remove(&key(0)).unwrap();
        let syncs = faults.syncs.load(Ordering::SeqCst) - before;
        if expect_syncs {
            assert_eq!(syncs, 22, "data + index per acknowledged write and remove");
        } else {
            assert_eq!(syncs, 0);
        }
    }
}

#[test]
fn stats_serialise_to_json_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for i in 0..10 {
        db.write(&key(i), &[1; 100], &w()).unwrap();
    }
    db.read(&key(1)).unwrap();
    let _ = db.read(&key(99));
    db.remove(&key(2)).unwrap();
    let s = db.stats();
    assert_eq!(s.ops.writes, 10);
    assert_eq!(s.ops.write_bytes, 1000);
    assert_eq!(s.ops.reads, 1);
    assert_eq!(s.ops.read_bytes, 100);
    assert_eq!(s.ops.not_found, 1);
    assert_eq!(s.ops.removes, 1);
    assert_eq!(s.bases[0].records, 10);
    assert_eq!(s.bases[0].removed_records, 1);
    let json = serde_json::to_string(&s).unwrap();
    let back: eblob::Stats = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    // Older readers: missing fields take defaults.
    let partial: eblob::Stats = serde_json::from_str(r#"{"total":{"records":3}}"#).unwrap();
    assert_eq!(partial.total.records, 3);
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let bad = [
        WriteOptions {
            append: true,
            offset: 3,
            ..w()
        },
        WriteOptions {
            commit_size_bytes: Some(3),
            ..w()
        },
        WriteOptions {
            offset: u64::MAX,
            ..w()
        },
        WriteOptions {
            timestamp: Some(Timestamp {
                sec: 1,
                nsec: 2_000_000_000,
            }),
            ..w()
        },
    ];
    for opts in bad {
        assert!(
            matches!(
                db.write(&key(1), b"xy", &opts),
                Err(Error::InvalidArgument(_))
            ),
            "{opts:?}"
        );
    }
    assert!(Key::from_slice(&[0; 10]).is_err());
    let mut c = config(dir.path());
    c.index_block_size = 0;
    assert!(matches!(Eblob::open(c), Err(Error::InvalidArgument(_))));
}

#[test]
fn every_seconds_policy_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let mut c = config(dir.path());
    c.sync = SyncPolicy::EverySeconds(1);
    c.fault_injector = Some(faults.clone());
    let db = Eblob::open(c).unwrap();
    db.write(&key(1), b"x", &w()).unwrap();
    // Waiting on the background thread itself: poll its observable effect with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while faults.syncs.load(Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no background sync within 20 s"
        );
        std::thread::park_timeout(std::time::Duration::from_millis(50));
    }
    db.close().unwrap();
}

/// Holds the data-sort (the thread that reads `data-0.index`) until released, so a test can
/// act while base 0 is being sorted.
#[derive(Debug, Default)]
struct HoldBase0Sort {
    state: std::sync::Mutex<(bool, bool, bool)>, // (armed, held, released)
    changed: std::sync::Condvar,
}

impl eblob::FaultInjector for HoldBase0Sort {
    fn on_io(&self, op: IoOp, path: &std::path::Path, _: u64, _: u64) -> Fault {
        if op == IoOp::Read && path.ends_with("data-0.index") {
            let mut s = self.state.lock().expect("gate lock");
            if s.0 {
                s.0 = false;
                s.1 = true;
                self.changed.notify_all();
                while !s.2 {
                    s = self.changed.wait(s).expect("gate lock");
                }
            }
        }
        Fault::None
    }
}

#[test]
fn a_rewrite_during_data_sort_of_its_base_is_not_in_place_and_is_in_place_after() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(HoldBase0Sort::default());
    let mut c = sorted_config(dir.path());
    c.fault_injector = Some(gate.clone());
    let db = Arc::new(Eblob::open(c).unwrap());
    for i in 0..150 {
        db.write(&key(i), &value(i, 0, 100), &w()).unwrap();
    }
    let before = db.lookup(&key(7)).unwrap();
    assert_eq!(before.base_index, 0);
    gate.state.lock().unwrap().0 = true;
    let sorter = {
        let db = db.clone();
        std::thread::spawn(move || db.data_sort(&DataSortOptions::default()))
    };
    {
        // Wait (no timeout needed: the sort reads base 0's index first) until it is held.
        let mut s = gate.state.lock().unwrap();
        while !s.1 {
            s = gate.changed.wait(s).unwrap();
        }
    }
    assert!(db.stats().bases[0].sorting, "base 0 is under data-sort");
    // Same size: would be in place, but base 0 is being read by the sort.
    let during = db.write(&key(7), &value(7, 1, 100), &w()).unwrap();
    assert_ne!(
        during.base_index, 0,
        "moved to the open base, not rewritten in base 0"
    );
    assert_eq!(db.read(&key(7)).unwrap(), value(7, 1, 100));
    {
        let mut s = gate.state.lock().unwrap();
        s.2 = true;
        gate.changed.notify_all();
    }
    sorter.join().unwrap().unwrap();
    assert_eq!(
        db.read(&key(7)).unwrap(),
        value(7, 1, 100),
        "the sort kept the newer copy"
    );
    // Base 0 is sorted and idle now: a same-size rewrite of one of its keys is in place.
    let k = key(8);
    let sorted = db.lookup(&k).unwrap();
    assert!(db
        .stats()
        .bases
        .iter()
        .any(|b| b.number == sorted.base_index && b.sorted));
    let again = db.write(&k, &value(8, 2, 100), &w()).unwrap();
    assert_eq!(
        (again.base_index, again.data_offset_bytes),
        (sorted.base_index, sorted.data_offset_bytes)
    );
    assert_eq!(db.read(&k).unwrap(), value(8, 2, 100));
}

const LOCK_CHILD_DIR: &str = "EBLOB_LOCK_CHILD_DIR";

/// Not a test on its own: the child process of
/// `the_lock_is_held_across_processes_and_dies_with_its_holder` (does nothing without its
/// environment variable). Opens the directory, says what happened, and if it got the lock
/// holds it until killed.
#[test]
fn lock_child() {
    let Ok(dir) = std::env::var(LOCK_CHILD_DIR) else {
        return;
    };
    match Eblob::open(config(std::path::Path::new(&dir))) {
        Ok(db) => {
            println!("child: opened");
            let mut line = String::new();
            // Blocks until the parent kills us (or closes stdin).
            let _ = std::io::stdin().read_line(&mut line);
            drop(db);
        }
        Err(Error::Locked { .. }) => println!("child: locked"),
        Err(e) => println!("child: error {e}"),
    }
}

#[test]
fn the_lock_is_held_across_processes_and_dies_with_its_holder() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let child = |stdin: Stdio| {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "lock_child", "--nocapture", "--test-threads=1"])
            .env(LOCK_CHILD_DIR, dir.path())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // This process holds it: another process is refused.
    let db = open(dir.path());
    let out = child(Stdio::null()).wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("child: locked"), "{text}");
    drop(db);
    // Another process holds it: this one is refused, until that process is killed.
    let mut holder = child(Stdio::piped());
    let mut lines = std::io::BufReader::new(holder.stdout.take().unwrap()).lines();
    // The harness prints "test lock_child ... " before the child's words.
    let said = lines
        .find_map(|l| {
            let l = l.unwrap();
            l.find("child: ").map(|at| l[at..].to_owned())
        })
        .unwrap();
    assert_eq!(said, "child: opened");
    let err = Eblob::open(config(dir.path())).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let db = Eblob::open(config(dir.path())).expect("a killed holder leaves no stale lock");
    db.write(&key(1), b"mine", &w()).unwrap();
}

/// Slot of `k` in the index file at `path` (entries are 128 bytes, the key first).
fn entry_slot(path: &std::path::Path, k: &eblob::Key) -> u64 {
    let bytes = std::fs::read(path).expect("read index");
    bytes
        .chunks_exact(128)
        .position(|e| e[..64] == k.0[..])
        .expect("key in the index") as u64
}

#[test]
fn a_damaged_sorted_index_entry_is_rescued_from_the_data_file_live_and_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.records_in_blob = 20;
    let db = Eblob::open(c.clone()).unwrap();
    for i in 0..30 {
        db.write(&key(i), &value(i, 0, 700), &w()).unwrap();
    }
    db.data_sort(&DataSortOptions::default()).unwrap();
    let sorted: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with("data-0.index.sorted"))
        .collect();
    assert_eq!(sorted.len(), 1, "the first base is sorted: {sorted:?}");
    let index = &sorted[0];
    // Victims: the first slot (its record starts the file), a middle one, and two neighbours
    // (the second is found by walking data headers past the first).
    let victims: Vec<u64> = {
        let mut by_slot: Vec<(u64, u64)> = (0..20)
            .filter_map(|i| {
                let bytes = std::fs::read(index).unwrap();
                bytes
                    .chunks_exact(128)
                    .position(|e| e[..64] == key(i).0[..])
                    .map(|s| (s as u64, i))
            })
            .collect();
        by_slot.sort();
        [0usize, 7, 12, 13].iter().map(|&s| by_slot[s].1).collect()
    };
    // A torn rewrite of an entry while the base is open (byte 100 is in the timestamp: the
    // entry's checksum no longer matches): the key is still found, through its data header.
    for &i in &victims {
        flip_byte(index, entry_slot(index, &key(i)) * 128 + 100);
    }
    for i in 0..30 {
        assert_eq!(
            db.read(&key(i)).unwrap(),
            value(i, 0, 700),
            "key {i} while open"
        );
    }
    db.close().unwrap();
    // At open the entries are rebuilt from the data headers, reported, and written back.
    let db = Eblob::open(c.clone()).unwrap();
    let r = db.open_report();
    assert_eq!(r.indexes_rebuilt.len(), 1, "{r:?}");
    assert!(r.corrupted.is_empty(), "nothing is lost: {r:?}");
    for i in 0..30 {
        assert_eq!(
            db.read(&key(i)).unwrap(),
            value(i, 0, 700),
            "key {i} after open"
        );
    }
    db.close().unwrap();
    let db = Eblob::open(c).unwrap();
    assert!(
        db.open_report().indexes_rebuilt.is_empty(),
        "the repaired entries were persisted: {:?}",
        db.open_report()
    );
    for i in 0..30 {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 700));
    }
}
