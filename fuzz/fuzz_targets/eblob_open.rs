//! A whole backend directory from arbitrary bytes: `data-0` and `data-0.index` are written from
//! the input, then the engine opens it (startup check), iterates it and reads every key it
//! reports. Damage must be reported or refused, never a panic, and nothing reported live may
//! fail to read except as damage.
#![no_main]

use std::ops::ControlFlow;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let split = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
    let (data_file, index_file) = data[2..].split_at(split);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("data-0"), data_file).expect("write data");
    std::fs::write(dir.path().join("data-0.index"), index_file).expect("write index");
    let mut config = eblob::Config::new(dir.path());
    config.min_free_space_bytes = 0;
    config.sync = eblob::SyncPolicy::Never;
    let Ok(db) = eblob::Eblob::open(config) else {
        return;
    };
    let mut keys = Vec::new();
    let opts = eblob::IterateOptions {
        with_data: true,
        include_uncommitted: true,
        ..Default::default()
    };
    let _ = db.iterate(&opts, &mut |r| {
        keys.push(r.lookup.key);
        if keys.len() >= 1024 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    for k in &keys {
        let _ = db.lookup(k);
        let _ = db.read(k);
        let _ = db.read_range(k, 1, 3);
    }
    // A write and a read back must still work on whatever was opened (unless read-only).
    let key = eblob::Key([0xa5; 64]);
    if db
        .write(&key, b"after", &eblob::WriteOptions::default())
        .is_ok()
    {
        assert_eq!(db.read(&key).expect("read back"), b"after");
    }
    let _ = db.close();
});
