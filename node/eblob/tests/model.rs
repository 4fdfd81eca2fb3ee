//! Model-based randomized test: a seeded stream of writes, overwrites, appends, partial
//! writes, removes, prepare/plain-write/commit uploads, data-sorts and close/reopen cycles,
//! checked after every step against a `BTreeMap` model.
//!
//! `EBLOB_MODEL_OPS` sets the number of operations (default 100 000; try 5 000 000), and
//! `EBLOB_MODEL_SEED` the seed (default: a fixed one, printed on failure).
// Test drivers outside #[test] fns: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use common::{config, key, value};
use eblob::{DataSortOptions, Eblob, Error, IterateOptions, Key, WriteOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug, PartialEq)]
enum Obj {
    Committed(Vec<u8>),
    /// A prepared upload: bytes written so far and the reserved size.
    Uncommitted(Vec<u8>, u64),
}

struct Run {
    db: Option<Eblob>,
    dir: tempfile::TempDir,
    model: BTreeMap<Key, Obj>,
    rng: StdRng,
    version: u64,
}

const KEYS: u64 = 300;

fn cfg(dir: &std::path::Path) -> eblob::Config {
    let mut c = config(dir);
    c.records_in_blob = 400;
    c.blob_size_bytes = 256 << 10;
    c.index_block_size = 8;
    c
}

impl Run {
    fn db(&self) -> &Eblob {
        self.db.as_ref().expect("open")
    }

    fn data(&mut self, max: usize) -> Vec<u8> {
        self.version += 1;
        let len = self.rng.random_range(0..max);
        value(self.version, self.version, len)
    }

    fn step(&mut self, op: u32) {
        let k = self.rng.random_range(0..KEYS);
        let key = key(k);
        let w = WriteOptions::default();
        match op {
            // replace (new or overwrite, same/smaller sizes land in place)
            0..=29 => {
                let data = self.data(3000);
                self.db().write(&key, &data, &w).unwrap();
                self.model.insert(key, Obj::Committed(data));
            }
            30..=39 => {
                let data = self.data(500);
                let r = self
                    .db()
                    .write(&key, &data, &WriteOptions { append: true, ..w });
                match self.model.get_mut(&key) {
                    Some(Obj::Uncommitted(..)) => assert!(matches!(r, Err(Error::Uncommitted))),
                    Some(Obj::Committed(old)) => {
                        r.unwrap();
                        old.extend_from_slice(&data);
                    }
                    None => {
                        r.unwrap();
                        self.model.insert(key, Obj::Committed(data));
                    }
                }
            }
            40..=49 => {
                let data = self.data(800);
                let offset = self.rng.random_range(1..4000u64);
                let r = self.db().write(&key, &data, &WriteOptions { offset, ..w });
                let end = offset as usize + data.len();
                match self.model.get_mut(&key) {
                    Some(Obj::Uncommitted(..)) => assert!(matches!(r, Err(Error::Uncommitted))),
                    Some(Obj::Committed(old)) => {
                        r.unwrap();
                        if old.len() < end {
                            old.resize(end, 0);
                        }
                        old[offset as usize..end].copy_from_slice(&data);
                    }
                    None => {
                        r.unwrap();
                        let mut obj = vec![0; offset as usize];
                        obj.extend_from_slice(&data);
                        self.model.insert(key, Obj::Committed(obj));
                    }
                }
            }
            50..=64 => {
                let r = self.db().remove(&key);
                if self.model.remove(&key).is_some() {
                    r.unwrap();
                } else {
                    assert!(matches!(r, Err(Error::NotFound)), "{r:?}");
                }
            }
            65..=69 => {
                let reserve = self.rng.random_range(1..5000u64);
                let mut data = self.data(reserve as usize + 1);
                data.truncate(reserve as usize);
                let opts = WriteOptions {
                    prepare_size_bytes: Some(reserve),
                    ..w
                };
                self.db().write(&key, &data, &opts).unwrap();
                self.model.insert(key, Obj::Uncommitted(data, reserve));
            }
            70..=74 => {
                let data = self.data(2000);
                let offset = self.rng.random_range(0..3000u64);
                let opts = WriteOptions {
                    offset,
                    plain_write: true,
                    ..w
                };
                let r = self.db().write(&key, &data, &opts);
                match self.model.get_mut(&key) {
                    Some(Obj::Uncommitted(old, reserve)) => {
                        let end = offset as usize + data.len();
                        if end as u64 > *reserve {
                            assert!(matches!(r, Err(Error::OutOfRange { .. })), "{r:?}");
                        } else {
                            r.unwrap();
                            if old.len() < end {
                                old.resize(end, 0);
                            }
                            old[offset as usize..end].copy_from_slice(&data);
                        }
                    }
                    Some(Obj::Committed(_)) => {
                        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}")
                    }
                    None => assert!(matches!(r, Err(Error::NotFound)), "{r:?}"),
                }
            }
            75..=79 => {
                let size = self.rng.random_range(0..5000u64);
                let opts = WriteOptions {
                    commit: true,
                    commit_size_bytes: Some(size),
                    ..w
                };
                let r = self.db().write(&key, b"", &opts);
                match self.model.get_mut(&key) {
                    Some(Obj::Uncommitted(old, reserve)) => {
                        if size > *reserve {
                            assert!(matches!(r, Err(Error::OutOfRange { .. })), "{r:?}");
                        } else {
                            r.unwrap();
                            let mut obj = std::mem::take(old);
                            obj.resize(size as usize, 0);
                            self.model.insert(key, Obj::Committed(obj));
                        }
                    }
                    Some(Obj::Committed(_)) => r.map(|_| ()).unwrap(),
                    None => assert!(matches!(r, Err(Error::NotFound)), "{r:?}"),
                }
            }
            80..=81 => {
                let compact_only = self.rng.random_bool(0.3);
                self.db()
                    .data_sort(&DataSortOptions {
                        compact_only,
                        ..Default::default()
                    })
                    .unwrap();
            }
            82 => {
                self.db.take().expect("open").close().unwrap();
                self.db = Some(Eblob::open(cfg(self.dir.path())).unwrap());
                let report = self.db().open_report();
                assert!(
                    report.torn.is_empty() && report.corrupted.is_empty(),
                    "{report:?}"
                );
            }
            83 => self.check_all(),
            _ => {
                // reads and lookups of a random key
                self.check(&key);
            }
        }
        self.check(&key);
    }

    fn check(&self, key: &Key) {
        let db = self.db();
        match self.model.get(key) {
            None => {
                assert!(matches!(db.read(key), Err(Error::NotFound)));
                assert!(matches!(db.lookup(key), Err(Error::NotFound)));
            }
            Some(Obj::Uncommitted(..)) => {
                assert!(matches!(db.read(key), Err(Error::Uncommitted)));
                assert!(db.lookup(key).unwrap().uncommitted);
            }
            Some(Obj::Committed(data)) => {
                assert_eq!(&db.read(key).unwrap(), data);
                let l = db.lookup(key).unwrap();
                assert_eq!(l.data_size_bytes, data.len() as u64);
                if data.len() > 10 {
                    assert_eq!(db.read_range(key, 3, 5).unwrap(), &data[3..8]);
                }
            }
        }
    }

    fn check_all(&self) {
        let mut seen = BTreeMap::new();
        let opts = IterateOptions {
            with_data: true,
            ..Default::default()
        };
        self.db()
            .iterate(&opts, &mut |r| {
                assert!(
                    seen.insert(r.lookup.key, r.data.unwrap()).is_none(),
                    "key twice"
                );
                ControlFlow::Continue(())
            })
            .unwrap();
        let committed: BTreeMap<Key, Vec<u8>> = self
            .model
            .iter()
            .filter_map(|(k, o)| match o {
                Obj::Committed(d) => Some((*k, d.clone())),
                Obj::Uncommitted(..) => None,
            })
            .collect();
        assert_eq!(seen.len(), committed.len());
        assert!(seen == committed, "iteration disagrees with the model");
        let s = self.db().stats();
        assert_eq!(s.total.live_records as usize, self.model.len());
        assert_eq!(s.total.corrupted, 0);
    }
}

#[test]
fn random_operations_agree_with_a_btreemap_model() {
    let ops: u64 = std::env::var("EBLOB_MODEL_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("EBLOB_MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_e1b1);
    let dir = tempfile::tempdir().unwrap();
    let db = Eblob::open(cfg(dir.path())).unwrap();
    let mut run = Run {
        db: Some(db),
        dir,
        model: BTreeMap::new(),
        rng: StdRng::seed_from_u64(seed),
        version: 0,
    };
    for i in 0..ops {
        // data-sort and reopen are rarer than single-key operations
        let mut op = run.rng.random_range(0..200u32);
        if (80..=83).contains(&op) && run.rng.random_range(0..20) != 0 {
            op = 90;
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.step(op)));
        if let Err(e) = r {
            eprintln!("model test failed at operation {i} (op {op}) with EBLOB_MODEL_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
    run.check_all();
    let s = run.db().stats();
    assert!(
        s.data_sort.runs > 0 && s.total.sorted_bases > 0,
        "the run exercised data-sort"
    );
}
