//! The same single-threaded workload on eblob, fjall and redb, printed as a Markdown table.
//!
//! ```text
//! cargo bench -p eblob --bench compare                       # full run (10 M keys for RAM)
//! cargo bench -p eblob --bench compare -- --data-mib 64 --ram-keys 200000   # quick
//! ```
//!
//! Workload per value size (1 KiB, 64 KiB, 1 MiB): write `data-mib` MiB of distinct 64-byte
//! keys (one put per key, no per-put fsync, one full sync at the end, included in the time),
//! read every key once in random order into an owned buffer (what a server sends; engines
//! that hand out views into their own cache pay one copy), read 100 000 keys
//! never written, then close and reopen the store (timed). All three engines run with
//! their durability relaxed the same way: eblob `sync = never` + `sync()`, fjall journal
//! buffered + `persist(SyncAll)`, redb `Durability::None` per put + one `Immediate` commit.
//! fjall runs with key-value separation, its mode for large values; redb reads inside one read
//! transaction. The data set fits in the page cache, so reads measure the engines, not the disk.
//!
//! The RAM section writes `ram-keys` small records to eblob, data-sorts them and reports the
//! index RAM per key from the engine's own stats, plus missing-key reads on the sorted bases
//! and the reopen time of the sorted store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::SeedableRng;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Distinct, uniformly spread 64-byte keys (like sha512 ids) from an index.
fn key(i: u64) -> [u8; 64] {
    let mut k = [0u8; 64];
    for (j, chunk) in k.chunks_exact_mut(8).enumerate() {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), j as u64);
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    k
}

/// A value of `len` incompressible bytes, distinct per key in its first 8 bytes.
fn value(template: &[u8], i: u64) -> Vec<u8> {
    let mut v = template.to_vec();
    let n = v.len().min(8);
    v[..n].copy_from_slice(&i.to_le_bytes()[..n]);
    v
}

/// One engine behind the benchmark: just what the workload needs.
trait Store {
    fn name(&self) -> &'static str;
    fn put(&mut self, key: &[u8; 64], value: &[u8]);
    /// The value as an owned buffer, as a server needs it to put it on the wire: engines that
    /// hand out views into their own cache copy it, as eblob's `read` does.
    fn get(&mut self, key: &[u8; 64]) -> Option<Vec<u8>>;
    fn sync(&mut self);
    fn reopen(&mut self, dir: &Path);
}

struct EblobStore(Option<eblob::Eblob>);

fn eblob_config(dir: &Path) -> eblob::Config {
    let mut c = eblob::Config::new(dir);
    c.sync = eblob::SyncPolicy::Never;
    c
}

impl Store for EblobStore {
    fn name(&self) -> &'static str {
        "eblob"
    }
    fn put(&mut self, key: &[u8; 64], value: &[u8]) {
        let db = self.0.as_ref().unwrap();
        db.write(&eblob::Key(*key), value, &eblob::WriteOptions::default())
            .unwrap();
    }
    fn get(&mut self, key: &[u8; 64]) -> Option<Vec<u8>> {
        match self.0.as_ref().unwrap().read(&eblob::Key(*key)) {
            Ok(v) => Some(v),
            Err(eblob::Error::NotFound) => None,
            Err(e) => panic!("eblob read: {e}"),
        }
    }
    fn sync(&mut self) {
        self.0.as_ref().unwrap().sync().unwrap();
    }
    fn reopen(&mut self, dir: &Path) {
        self.0.take().unwrap().close().unwrap();
        self.0 = Some(eblob::Eblob::open(eblob_config(dir)).unwrap());
    }
}

struct FjallStore(Option<(fjall::Database, fjall::Keyspace)>);

fn fjall_open(dir: &Path) -> (fjall::Database, fjall::Keyspace) {
    let db = fjall::Database::builder(dir).open().unwrap();
    let ks = db
        .keyspace("bench", || {
            fjall::KeyspaceCreateOptions::default()
                .with_kv_separation(Some(fjall::KvSeparationOptions::default()))
        })
        .unwrap();
    (db, ks)
}

impl Store for FjallStore {
    fn name(&self) -> &'static str {
        "fjall"
    }
    fn put(&mut self, key: &[u8; 64], value: &[u8]) {
        self.0
            .as_ref()
            .unwrap()
            .1
            .insert(key.as_slice(), value)
            .unwrap();
    }
    fn get(&mut self, key: &[u8; 64]) -> Option<Vec<u8>> {
        self.0
            .as_ref()
            .unwrap()
            .1
            .get(key)
            .unwrap()
            .map(|v| v.to_vec())
    }
    fn sync(&mut self) {
        self.0
            .as_ref()
            .unwrap()
            .0
            .persist(fjall::PersistMode::SyncAll)
            .unwrap();
    }
    fn reopen(&mut self, dir: &Path) {
        drop(self.0.take());
        self.0 = Some(fjall_open(dir));
    }
}

const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("bench");

struct RedbStore {
    db: Option<redb::Database>,
    read: Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
}

impl RedbStore {
    fn file(dir: &Path) -> std::path::PathBuf {
        dir.join("bench.redb")
    }
    fn table(&mut self) -> &redb::ReadOnlyTable<&'static [u8], &'static [u8]> {
        if self.read.is_none() {
            use redb::ReadableDatabase;
            let txn = self.db.as_ref().unwrap().begin_read().unwrap();
            self.read = Some(txn.open_table(REDB_TABLE).unwrap());
        }
        self.read.as_ref().unwrap()
    }
}

impl Store for RedbStore {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn put(&mut self, key: &[u8; 64], value: &[u8]) {
        self.read = None;
        let mut txn = self.db.as_ref().unwrap().begin_write().unwrap();
        txn.set_durability(redb::Durability::None).unwrap();
        {
            let mut t = txn.open_table(REDB_TABLE).unwrap();
            t.insert(key.as_slice(), value).unwrap();
        }
        txn.commit().unwrap();
    }
    fn get(&mut self, key: &[u8; 64]) -> Option<Vec<u8>> {
        self.table()
            .get(key.as_slice())
            .unwrap()
            .map(|v| v.value().to_vec())
    }
    fn sync(&mut self) {
        self.read = None;
        let txn = self.db.as_ref().unwrap().begin_write().unwrap();
        // An Immediate commit makes every earlier Durability::None commit durable too.
        txn.commit().unwrap();
    }
    fn reopen(&mut self, dir: &Path) {
        self.read = None;
        drop(self.db.take());
        self.db = Some(redb::Database::open(Self::file(dir)).unwrap());
    }
}

fn open(name: &str, dir: &Path) -> Box<dyn Store> {
    match name {
        "eblob" => Box::new(EblobStore(Some(
            eblob::Eblob::open(eblob_config(dir)).unwrap(),
        ))),
        "fjall" => Box::new(FjallStore(Some(fjall_open(dir)))),
        "redb" => {
            let db = redb::Database::create(RedbStore::file(dir)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(REDB_TABLE).unwrap();
            txn.commit().unwrap();
            Box::new(RedbStore {
                db: Some(db),
                read: None,
            })
        }
        other => panic!("unknown engine {other}"),
    }
}

struct Row {
    engine: &'static str,
    value_bytes: usize,
    keys: u64,
    write: Duration,
    read: Duration,
    missing_reads: u64,
    missing: Duration,
    reopen: Duration,
}

fn run(engine: &str, value_bytes: usize, data_bytes: usize, seed: u64) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let keys = (data_bytes / value_bytes).max(1) as u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut template = vec![0u8; value_bytes];
    rand::RngCore::fill_bytes(&mut rng, &mut template);
    let mut store = open(engine, dir.path());
    let values: Vec<Vec<u8>> = (0..16).map(|i| value(&template, i)).collect();

    let t = Instant::now();
    for i in 0..keys {
        store.put(&key(i), &values[(i % 16) as usize]);
    }
    store.sync();
    let write = t.elapsed();

    let mut order: Vec<u64> = (0..keys).collect();
    order.shuffle(&mut rng);
    let t = Instant::now();
    for &i in &order {
        let got = store.get(&key(i)).expect("written key");
        assert_eq!(got.len(), value_bytes, "{engine}: key {i}");
    }
    let read = t.elapsed();

    let missing_reads = 100_000;
    let t = Instant::now();
    for i in 0..missing_reads {
        assert_eq!(store.get(&key(u64::MAX - i)), None);
    }
    let missing = t.elapsed();

    let t = Instant::now();
    store.reopen(dir.path());
    let reopen = t.elapsed();
    assert_eq!(store.get(&key(0)).map(|v| v.len()), Some(value_bytes));
    let engine = store.name();
    drop(store);
    Row {
        engine,
        value_bytes,
        keys,
        write,
        read,
        missing_reads,
        missing,
        reopen,
    }
}

fn per_s(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn size_label(bytes: usize) -> String {
    if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / KIB)
    }
}

struct RamReport {
    keys: u64,
    write: Duration,
    sort: Duration,
    ram_bytes: u64,
    bloom_bytes: u64,
    block_bytes: u64,
    hash_bytes: u64,
    missing_reads: u64,
    missing: Duration,
    reopen: Duration,
}

fn ram_run(keys: u64) -> RamReport {
    let dir = tempfile::tempdir().unwrap();
    let db = eblob::Eblob::open(eblob_config(dir.path())).unwrap();
    let t = Instant::now();
    for i in 0..keys {
        db.write(
            &eblob::Key(key(i)),
            &i.to_le_bytes(),
            &eblob::WriteOptions::default(),
        )
        .unwrap();
    }
    db.sync().unwrap();
    let write = t.elapsed();
    let t = Instant::now();
    db.data_sort(&eblob::DataSortOptions::default()).unwrap();
    let sort = t.elapsed();
    let stats = db.stats();
    let missing_reads = keys.min(1_000_000);
    let t = Instant::now();
    for i in 0..missing_reads {
        assert!(matches!(
            db.read(&eblob::Key(key(u64::MAX - i))),
            Err(eblob::Error::NotFound)
        ));
    }
    let missing = t.elapsed();
    db.close().unwrap();
    let t = Instant::now();
    let db = eblob::Eblob::open(eblob_config(dir.path())).unwrap();
    let reopen = t.elapsed();
    assert_eq!(
        db.read(&eblob::Key(key(keys / 2))).unwrap(),
        (keys / 2).to_le_bytes()
    );
    db.close().unwrap();
    let tot = &stats.total;
    RamReport {
        keys,
        write,
        sort,
        ram_bytes: tot.ram_index_bytes + tot.ram_bloom_bytes + tot.ram_index_blocks_bytes,
        bloom_bytes: tot.ram_bloom_bytes,
        block_bytes: tot.ram_index_blocks_bytes,
        hash_bytes: tot.ram_index_bytes,
        missing_reads,
        missing,
        reopen,
    }
}

fn main() {
    let mut data_mib: usize = 512;
    let mut ram_keys: u64 = 10_000_000;
    let mut engines = vec!["eblob", "fjall", "redb"];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data-mib" => {
                data_mib = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--data-mib N")
            }
            "--ram-keys" => {
                ram_keys = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--ram-keys N")
            }
            "--engines" => {
                let list = args.next().expect("--engines eblob,fjall,redb");
                engines = ["eblob", "fjall", "redb"]
                    .into_iter()
                    .filter(|e| list.split(',').any(|x| x == *e))
                    .collect();
            }
            "--bench" => {} // passed by `cargo bench`
            other => {
                eprintln!("unknown argument {other}; use --data-mib N --ram-keys N --engines a,b");
                std::process::exit(2);
            }
        }
    }
    println!("data per value size: {data_mib} MiB; single thread; see the header of benches/compare.rs\n");
    println!("| engine | value | keys | write ops/s | write MB/s | read ops/s | read MB/s | missing-key reads/s | reopen ms |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (n, value_bytes) in [KIB, 64 * KIB, MIB].into_iter().enumerate() {
        for engine in &engines {
            let r = run(engine, value_bytes, data_mib * MIB, n as u64);
            let mb = |d: Duration| (r.keys * r.value_bytes as u64) as f64 / 1e6 / d.as_secs_f64();
            println!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
                r.engine,
                size_label(r.value_bytes),
                r.keys,
                per_s(r.keys, r.write),
                mb(r.write),
                per_s(r.keys, r.read),
                mb(r.read),
                per_s(r.missing_reads, r.missing),
                r.reopen.as_secs_f64() * 1e3,
            );
        }
    }
    if ram_keys > 0 {
        let r = ram_run(ram_keys);
        println!(
            "\neblob RAM after data-sort, {} keys of 8-byte values:\n",
            r.keys
        );
        println!("| keys | write s | data-sort s | RAM bytes/key | bloom B/key | index blocks B/key | hash index B/key | missing-key reads/s (sorted) | reopen ms |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let k = r.keys as f64;
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} |",
            r.keys,
            r.write.as_secs_f64(),
            r.sort.as_secs_f64(),
            r.ram_bytes as f64 / k,
            r.bloom_bytes as f64 / k,
            r.block_bytes as f64 / k,
            r.hash_bytes as f64 / k,
            per_s(r.missing_reads, r.missing),
            r.reopen.as_secs_f64() * 1e3,
        );
    }
}
