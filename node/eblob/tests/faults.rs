//! The engine under injected IO faults, through the `FaultInjector` seam.
//!
//! Two suites. The *sweep* runs each scenario (an operation on a prepared backend) once to
//! record every read, write and sync it issues, then runs it again once per IO point and per
//! fault kind (EIO, ENOSPC, short/torn writes, failed fsync, failed read), each time on a fresh
//! copy of the prepared state. The *randomized* test drives a model of random operations with
//! faults drawn from a seeded RNG (`EBLOB_FAULT_SEEDS` raises the number of seeds).
//!
//! After every fault the test checks what SAFETY.md promises: the failing call returns a typed
//! `Error::Io` naming the operation; write and fsync failures turn the backend read-only with
//! a reason; no read ever returns bytes other than the old or the new value of the key (an
//! error is allowed, garbage never); after a crash (drop without sync + reopen without faults)
//! the open succeeds, every acknowledged key reads back exactly, and the backend is writable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use common::{key, value};
use eblob::{
    Config, DataSortOptions, Eblob, Error, Fault, FaultInjector, IoOp, SyncPolicy, WriteOptions,
};

// ---------------------------------------------------------------------------------------------
// The injector

/// One IO operation the engine asked about.
#[derive(Clone, Debug)]
struct Event {
    op: IoOp,
    file: String,
    len: u64,
}

type Hook = Box<dyn FnOnce() + Send>;
/// A file-name predicate and what to run on the first armed write to a matching file.
type HookSlot = Option<(fn(&str) -> bool, Hook)>;

/// Records IO while armed and fails the `target`-th armed operation with the given fault.
#[derive(Default)]
struct Sweep {
    armed: AtomicBool,
    seen: AtomicU64,
    target: Mutex<Option<(u64, Fault)>>,
    injected: Mutex<Option<(Event, Fault)>>,
    log: Mutex<Vec<Event>>,
    /// Runs once, on the first armed write to a file matching the predicate (outside every
    /// lock of this injector, so it may call back into the engine).
    hook: Mutex<HookSlot>,
    /// Fail every read of a file named exactly this (a persistently unreadable region).
    fail_reads_of: Mutex<Option<(String, u64)>>,
}

impl std::fmt::Debug for Sweep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweep")
            .field("seen", &self.seen.load(Ordering::SeqCst))
            .finish()
    }
}

impl FaultInjector for Sweep {
    fn on_io(&self, op: IoOp, path: &Path, offset: u64, len: u64) -> Fault {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some((name, from)) = self.fail_reads_of.lock().unwrap().as_ref() {
            if op == IoOp::Read && *name == file && offset + len > *from {
                return Fault::Fail(std::io::ErrorKind::Other);
            }
        }
        if !self.armed.load(Ordering::SeqCst) {
            return Fault::None;
        }
        if op == IoOp::Write {
            let fire = {
                let mut hook = self.hook.lock().unwrap();
                match hook.as_ref() {
                    Some((matches, _)) if matches(&file) => hook.take().map(|(_, f)| f),
                    _ => None,
                }
            };
            if let Some(f) = fire {
                f();
            }
        }
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        let event = Event { op, file, len };
        self.log.lock().unwrap().push(event.clone());
        let mut target = self.target.lock().unwrap();
        match *target {
            Some((at, fault)) if at == n => {
                *target = None;
                *self.injected.lock().unwrap() = Some((event, fault));
                fault
            }
            _ => Fault::None,
        }
    }
}

impl Sweep {
    fn arm(&self, target: Option<(u64, Fault)>) {
        self.seen.store(0, Ordering::SeqCst);
        self.log.lock().unwrap().clear();
        *self.injected.lock().unwrap() = None;
        *self.target.lock().unwrap() = target;
        self.armed.store(true, Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
        *self.target.lock().unwrap() = None;
        self.hook.lock().unwrap().take();
    }
}

// ---------------------------------------------------------------------------------------------
// The model

/// What a read of a key may legitimately show.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Value(Vec<u8>),
    Absent,
    Uncommitted,
}

impl Expect {
    fn describe(&self) -> String {
        match self {
            Expect::Value(v) => format!("{} bytes", v.len()),
            Expect::Absent => "absent".into(),
            Expect::Uncommitted => "uncommitted".into(),
        }
    }
}

fn observe(db: &Eblob, k: u64) -> Result<Expect, Error> {
    match db.read(&key(k)) {
        Ok(v) => Ok(Expect::Value(v)),
        Err(Error::NotFound) => Ok(Expect::Absent),
        Err(Error::Uncommitted) => Ok(Expect::Uncommitted),
        Err(e) => Err(e),
    }
}

/// Key -> what it holds; keys in doubt (their last mutation failed) have several candidates.
type Model = BTreeMap<u64, Vec<Expect>>;

fn exact(m: &BTreeMap<u64, Expect>) -> Model {
    m.iter().map(|(k, e)| (*k, vec![e.clone()])).collect()
}

/// Figures one test collects; printed so SAFETY.md can quote them.
#[derive(Debug, Default)]
struct Figures {
    cases: u64,
    faults_injected: u64,
    reads_checked: u64,
    wrong_reads: u64,
    corrupted_after_fault: u64,
    reopens: u64,
}

/// Read every key of `model`: the value must be one of its candidates. Keys in `may_tear`
/// may also be reported corrupted (a torn in-place rewrite; documented). Any other error or
/// any foreign byte fails the test.
fn check_model(db: &Eblob, model: &Model, may_tear: &[u64], fig: &mut Figures, ctx: &str) {
    for (k, allowed) in model {
        fig.reads_checked += 1;
        match observe(db, *k) {
            Ok(e) if allowed.contains(&e) => {}
            Ok(e) => {
                fig.wrong_reads += 1;
                panic!(
                    "{ctx}: WRONG DATA for key {k}: got {}, allowed {:?}",
                    e.describe(),
                    allowed.iter().map(Expect::describe).collect::<Vec<_>>()
                );
            }
            Err(Error::Corrupted { key: ck, .. }) if may_tear.contains(k) && ck == key(*k) => {
                fig.corrupted_after_fault += 1;
            }
            Err(e) => panic!("{ctx}: key {k}: unexpected error {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

fn w() -> WriteOptions {
    WriteOptions::default()
}

/// What a scenario's operation did.
struct Outcome {
    result: Result<(), Error>,
    /// Keys the operation touched: (key, candidates when it failed, value when it succeeded).
    victims: Vec<(u64, Vec<Expect>, Expect)>,
    /// Keys whose failed operation may leave them reported corrupted (torn in-place rewrite).
    may_tear: Vec<u64>,
}

/// Installs a scenario's hook; the hook reports its own call's outcome through the slot.
type SetHook = fn(&Arc<Eblob>, &Sweep, Arc<Mutex<Option<Outcome>>>);

struct Scenario {
    name: &'static str,
    /// Base configuration tweaks.
    tune: fn(&mut Config),
    /// Build the starting state; returns what every key holds.
    prepare: fn(&Eblob) -> BTreeMap<u64, Expect>,
    /// Set up hooks (before arming) for the operation.
    hook: Option<SetHook>,
    /// The operation under test.
    op: fn(&Eblob, &BTreeMap<u64, Expect>) -> Outcome,
    /// Whether the operation is a mutation (a failure must turn the backend read-only).
    mutation: bool,
}

fn size_of_key(i: u64) -> usize {
    if i == 9 {
        (1 << 20) + 4096 // two chunks: partial rewrites reuse one stored chunk hash
    } else {
        200 + 100 * i as usize
    }
}

fn prepare_basic(db: &Eblob) -> BTreeMap<u64, Expect> {
    let mut m = BTreeMap::new();
    for i in 0..10 {
        let v = value(i, 0, size_of_key(i));
        db.write(&key(i), &v, &w()).unwrap();
        m.insert(i, Expect::Value(v));
    }
    // Key 5 gets a reserve (an append moves it to a record with room for as much again).
    let mut v5 = value(5, 0, size_of_key(5));
    db.write(
        &key(5),
        b"+first append",
        &WriteOptions {
            append: true,
            ..w()
        },
    )
    .unwrap();
    v5.extend_from_slice(b"+first append");
    m.insert(5, Expect::Value(v5));
    // Key 7 is a prepared upload: 3000 bytes reserved, two thirds written.
    let p = value(7, 1, 3000);
    db.write(
        &key(7),
        &p[..1000],
        &WriteOptions {
            prepare_size_bytes: Some(3000),
            ..w()
        },
    )
    .unwrap();
    db.write(
        &key(7),
        &p[1000..2000],
        &WriteOptions {
            offset: 1000,
            plain_write: true,
            ..w()
        },
    )
    .unwrap();
    m.insert(7, Expect::Uncommitted);
    m
}

fn prepare_sorted(db: &Eblob) -> BTreeMap<u64, Expect> {
    let m = prepare_basic(db);
    db.data_sort(&DataSortOptions::default()).unwrap();
    m
}

fn prepare_many(db: &Eblob) -> BTreeMap<u64, Expect> {
    let mut m = BTreeMap::new();
    for i in 0..50 {
        let v = value(i, 0, 300 + i as usize);
        db.write(&key(i), &v, &w()).unwrap();
        m.insert(i, Expect::Value(v));
    }
    for i in [1, 2, 40] {
        db.remove(&key(i)).unwrap();
        m.insert(i, Expect::Absent);
    }
    for i in [3, 41] {
        let v = value(i, 1, 900);
        db.write(&key(i), &v, &w()).unwrap();
        m.insert(i, Expect::Value(v));
    }
    m
}

fn value_of(m: &BTreeMap<u64, Expect>, k: u64) -> Vec<u8> {
    match &m[&k] {
        Expect::Value(v) => v.clone(),
        other => panic!("key {k} holds {other:?}"),
    }
}

fn mutation(k: u64, old: Expect, new: Expect, r: Result<(), Error>, tear: bool) -> Outcome {
    Outcome {
        result: r,
        victims: vec![(k, vec![old, new.clone()], new)],
        may_tear: if tear { vec![k] } else { vec![] },
    }
}

fn scenarios() -> Vec<Scenario> {
    fn none(_: &mut Config) {}
    fn small_bases(c: &mut Config) {
        c.records_in_blob = 5;
    }
    fn sort_bases(c: &mut Config) {
        c.records_in_blob = 20;
    }
    vec![
        Scenario {
            name: "write a new key (append at the tail)",
            tune: none,
            prepare: prepare_basic,
            hook: None,
            op: |db, _| {
                let v = value(100, 1, 3000);
                let r = db.write(&key(100), &v, &w()).map(drop);
                mutation(100, Expect::Absent, Expect::Value(v), r, false)
            },
            mutation: true,
        },
        Scenario {
            name: "overwrite in place (same size)",
            tune: none,
            prepare: prepare_basic,
            hook: None,
            op: |db, m| {
                let old = m[&3].clone();
                let v = value(3, 1, size_of_key(3));
                let r = db.write(&key(3), &v, &w()).map(drop);
                mutation(3, old, Expect::Value(v), r, true)
            },
            mutation: true,
        },
        Scenario {
            name: "overwrite with a larger object (moves to the tail)",
            tune: none,
            prepare: prepare_basic,
            hook: None,
            op: |db, m| {
                let old = m[&4].clone();
                let v = value(4, 1, 5000);
                let r = db.write(&key(4), &v, &w()).map(drop);
                mutation(4, old, Expect::Value(v), r, false)
            },
            mutation: true,
        },
        Scenario {
            name: "overwrite in place of the newest record",
            tune: none,
            prepare: |db| {
                let mut m = prepare_basic(db);
                let v = value(8, 5, 2500);
                db.write(&key(8), &v, &w()).unwrap();
                m.insert(8, Expect::Value(v));
                m
            },
            hook: None,
            op: |db, m| {
                let old = m[&8].clone();
                let v = value(8, 6, 2400);
                let r = db.write(&key(8), &v, &w()).map(drop);
                mutation(8, old, Expect::Value(v), r, true)
            },
            mutation: true,
        },
        Scenario {
            name: "append into reserved space",
            tune: none,
            prepare: prepare_basic,
            hook: None,
            op: |db, m| {
                let mut v = value_of(m, 5);
                let r = db
                    .write(
                        &key(5),
                        b"+second append",
                        &WriteOptions {
                            append: true,
                            ..w()
                        },
                    )
                    .map(drop);
                let old = Expect::Value(v.clone());
                v.extend_from_slice(b"+second append");
                mutation(5, old, Expect::Value(v), r, true)
            },
            mutation: true,
        },
        Scenario {
            name: "patch the second chunk of a multi-chunk object",
            tune: none,
            prepare: prepare_basic,
            hook: None,
            op: |db, m| {
                let mut v = value_of(m, 9);
                let at = (1 << 20) + 10;
                let patch = value(9, 2, 100);
                let r = db
                    .write(&key(9), &patch, &WriteOptions { offset: at, ..w() })
                    .map(drop);
                let old = Expect::Value(v.clone());
                v[at as usize..at as usize + 100].copy_from_slice(&patch);
                mutation(9, old, Expect::Value(v), r, true)
            },
            mutation: true,
        },
        Scenario {
            name: "remove",
            tune: none,
            prepare: prepare_basic,
            hook: None,
            op: |db, m| {
                let old = m[&6].clone();
                let r = db.remove(&key(6));
                mutation(6, old, Expect::Absent, r, true)
            },
            mutation: true,
        },
        Scenario {
            name: "commit a prepared upload",
            tune: none,
            prepare: prepare_basic,
            hook: None,
            op: |db, _| {
                let p = value(7, 1, 3000);
                let r = db
                    .write(
                        &key(7),
                        &p[2000..],
                        &WriteOptions {
                            offset: 2000,
                            commit: true,
                            ..w()
                        },
                    )
                    .map(drop);
                mutation(7, Expect::Uncommitted, Expect::Value(p), r, true)
            },
            mutation: true,
        },
        Scenario {
            name: "write that rotates to a new base",
            tune: small_bases,
            prepare: |db| {
                let mut m = BTreeMap::new();
                for i in 0..10 {
                    let v = value(i, 0, 150);
                    db.write(&key(i), &v, &w()).unwrap();
                    m.insert(i, Expect::Value(v));
                }
                m
            },
            hook: None,
            op: |db, _| {
                let v = value(100, 1, 700);
                let r = db.write(&key(100), &v, &w()).map(drop);
                mutation(100, Expect::Absent, Expect::Value(v), r, false)
            },
            mutation: true,
        },
        Scenario {
            name: "overwrite in place inside a sorted base",
            tune: none,
            prepare: prepare_sorted,
            hook: None,
            op: |db, m| {
                let old = m[&2].clone();
                let v = value(2, 1, size_of_key(2));
                let r = db.write(&key(2), &v, &w()).map(drop);
                mutation(2, old, Expect::Value(v), r, true)
            },
            mutation: true,
        },
        Scenario {
            name: "remove from a sorted base",
            tune: none,
            prepare: prepare_sorted,
            hook: None,
            op: |db, m| {
                let old = m[&8].clone();
                let r = db.remove(&key(8));
                mutation(8, old, Expect::Absent, r, true)
            },
            mutation: true,
        },
        Scenario {
            name: "read whole and by range",
            tune: none,
            prepare: prepare_basic,
            hook: None,
            op: |db, m| {
                let r = (|| {
                    let whole = db.read(&key(9))?;
                    assert_eq!(whole, value_of(m, 9), "read returned foreign bytes");
                    let part = db.read_range(&key(2), 10, 50)?;
                    assert_eq!(part, value_of(m, 2)[10..60], "range returned foreign bytes");
                    db.lookup(&key(3)).map(drop)
                })();
                Outcome {
                    result: r,
                    victims: vec![],
                    may_tear: vec![],
                }
            },
            mutation: false,
        },
        Scenario {
            name: "data-sort with a remove during the sort",
            tune: sort_bases,
            prepare: prepare_many,
            hook: Some(|db, sweep, out| {
                // The remove lands while the sort is writing its output: the journal must
                // carry it into the new base, whatever fails afterwards.
                let weak: Weak<Eblob> = Arc::downgrade(db);
                *sweep.hook.lock().unwrap() = Some((
                    |f: &str| f.ends_with(".sorting") && !f.ends_with(".index.sorting"),
                    Box::new(move || {
                        let db = weak.upgrade().expect("engine alive during its sort");
                        let r = db.remove(&key(30));
                        *out.lock().unwrap() = Some(Outcome {
                            result: r,
                            victims: vec![],
                            may_tear: vec![],
                        });
                    }),
                ));
            }),
            op: |db, _| Outcome {
                result: db.data_sort(&DataSortOptions::default()).map(drop),
                victims: vec![],
                may_tear: vec![],
            },
            mutation: true,
        },
    ]
}

fn open_with(dir: &Path, sc: &Scenario, sync: SyncPolicy, sweep: Option<Arc<Sweep>>) -> Eblob {
    let mut c = Config::new(dir);
    c.sync = sync;
    (sc.tune)(&mut c);
    c.fault_injector = sweep.map(|s| s as Arc<dyn FaultInjector>);
    Eblob::open(c).expect("open")
}

fn is_io(e: &Error, op: IoOp) -> bool {
    matches!(
        (e, op),
        (Error::Io { op: "write", .. }, IoOp::Write)
            | (Error::Io { op: "fsync", .. }, IoOp::Sync)
            | (Error::Io { op: "read", .. }, IoOp::Read)
    )
}

/// A scenario's starting state on disk and what it holds.
struct Prepared {
    dir: tempfile::TempDir,
    model: BTreeMap<u64, Expect>,
}

/// Run `sc` under `sync` with `fault` at IO point `at` (or none: a dry run); check every
/// promise; return the IO log of the run.
fn run_case(
    sc: &Scenario,
    sync: SyncPolicy,
    prepared: &Prepared,
    fault: Option<(u64, Fault)>,
    fig: &mut Figures,
) -> Vec<Event> {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(prepared.dir.path()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let start = prepared.model.clone();
    let sweep = Arc::new(Sweep::default());
    let db = Arc::new(open_with(dir.path(), sc, sync, Some(sweep.clone())));
    let hook_out = Arc::new(Mutex::new(None));
    if let Some(h) = sc.hook {
        h(&db, &sweep, hook_out.clone());
    }
    sweep.arm(fault);
    let out = (sc.op)(&db, &start);
    sweep.disarm();
    let log = sweep.log.lock().unwrap().clone();
    let injected = sweep.injected.lock().unwrap().clone();
    let ctx = format!(
        "[{} | {sync:?} | fault {fault:?} | injected {injected:?}]",
        sc.name
    );
    fig.cases += 1;

    // The model after the operation.
    let mut model = exact(&start);
    let mut may_tear = out.may_tear.clone();
    let mut outcomes = vec![out];
    let hook_result = hook_out.lock().unwrap().take();
    assert!(
        sc.hook.is_none() || fault.is_some() || hook_result.is_some(),
        "{ctx}: the hook never fired"
    );
    if let Some(h) = hook_result {
        // The hook's remove of key 30: acknowledged means gone for good.
        let old = start[&30].clone();
        outcomes.push(mutation(30, old, Expect::Absent, h.result, true));
    }
    for o in &outcomes {
        for (k, candidates, done) in &o.victims {
            let c = if o.result.is_ok() {
                vec![done.clone()]
            } else {
                candidates.clone()
            };
            model.insert(*k, c);
        }
        if o.result.is_ok() {
            may_tear.retain(|k| !o.victims.iter().any(|(v, ..)| v == k));
        }
    }
    match &injected {
        None => {
            for o in &outcomes {
                if let Err(e) = &o.result {
                    panic!("{ctx}: failed without an injected fault: {e}");
                }
            }
            assert!(
                db.read_only_reason().is_none(),
                "{ctx}: read-only for nothing"
            );
        }
        Some((event, _)) => {
            fig.faults_injected += 1;
            let failed: Vec<&Error> = outcomes
                .iter()
                .filter_map(|o| o.result.as_ref().err())
                .collect();
            assert_eq!(
                failed.len(),
                1,
                "{ctx}: exactly one call must report the fault: {failed:?}"
            );
            let e = failed[0];
            assert!(
                is_io(e, event.op),
                "{ctx}: expected a typed Io error for {:?}, got {e}",
                event.op
            );
            if sc.mutation || event.op != IoOp::Read {
                let reason = db
                    .read_only_reason()
                    .unwrap_or_else(|| panic!("{ctx}: still writable after {e}"));
                assert!(reason.contains("IO error"), "{ctx}: reason {reason}");
                assert_eq!(db.stats().read_only_reason, Some(reason), "{ctx}");
                assert!(
                    matches!(db.write(&key(999), b"x", &w()), Err(Error::ReadOnly { .. })),
                    "{ctx}: a write was accepted after a write/fsync error"
                );
                assert!(
                    matches!(db.remove(&key(0)), Err(Error::ReadOnly { .. })),
                    "{ctx}: a remove was accepted after a write/fsync error"
                );
            } else {
                assert!(
                    db.read_only_reason().is_none(),
                    "{ctx}: a read error turned read-only"
                );
                assert_eq!(
                    db.stats().total.corrupted,
                    0,
                    "{ctx}: a read error counted as damage"
                );
            }
        }
    }
    check_model(&db, &model, &may_tear, fig, &format!("{ctx} before reopen"));

    // Crash: no final sync, no close; reopen without faults.
    drop(db);
    let db = open_with(dir.path(), sc, sync, None);
    fig.reopens += 1;
    check_model(&db, &model, &may_tear, fig, &format!("{ctx} after reopen"));
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            !name.ends_with(".sorting") && !name.contains(".sort-commit"),
            "{ctx}: {name} left behind after reopen"
        );
    }
    assert!(
        db.read_only_reason().is_none(),
        "{ctx}: read-only after reopen"
    );
    let fresh = value(1000, 0, 777);
    db.write(&key(1000), &fresh, &w())
        .unwrap_or_else(|e| panic!("{ctx}: not writable after reopen: {e}"));
    assert_eq!(db.read(&key(1000)).unwrap(), fresh, "{ctx}");
    db.close().unwrap();
    // A second open finds nothing more to repair.
    let db = open_with(dir.path(), sc, sync, None);
    let r = db.open_report();
    assert!(
        r.torn.is_empty() && r.sorts_finished.is_empty(),
        "{ctx}: {r:?}"
    );
    model.insert(1000, vec![Expect::Value(fresh)]);
    check_model(
        &db,
        &model,
        &may_tear,
        fig,
        &format!("{ctx} after second reopen"),
    );
    log
}

/// The faults tried at one IO point.
fn faults_for(e: &Event) -> Vec<Fault> {
    use std::io::ErrorKind;
    match e.op {
        IoOp::Write => vec![
            Fault::Fail(ErrorKind::Other),
            Fault::Fail(ErrorKind::StorageFull),
            Fault::ShortWrite(e.len / 2),
            Fault::ShortWrite(1),
        ],
        IoOp::Sync => vec![Fault::Fail(ErrorKind::Other)],
        IoOp::Read => vec![Fault::Fail(ErrorKind::Other)],
    }
}

/// IO points worth a fault: all of them, except that long runs of the same operation on the
/// same file (data-sort reading one record after another) are tried at their first few and
/// their last occurrence only; the ones between exercise the same code.
fn points_to_try(log: &[Event]) -> Vec<usize> {
    const FIRST: usize = 4;
    let mut seen: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, e) in log.iter().enumerate() {
        seen.entry((format!("{:?}", e.op), e.file.clone()))
            .or_default()
            .push(i);
    }
    let mut points: Vec<usize> = seen
        .values()
        .flat_map(|all| {
            let mut keep: Vec<usize> = all.iter().copied().take(FIRST).collect();
            keep.extend(all.last().copied());
            keep.dedup();
            keep
        })
        .collect();
    points.sort_unstable();
    points.dedup();
    points
}

fn sweep_scenarios(filter: impl Fn(&Scenario) -> bool, policies: &[SyncPolicy]) -> Figures {
    let mut fig = Figures::default();
    for sc in scenarios().iter().filter(|s| filter(s)) {
        for &sync in policies {
            // Prepare once (the slow part under sync=always), then copy the files per case.
            let prepared = {
                let dir = tempfile::tempdir().unwrap();
                let db = open_with(dir.path(), sc, sync, None);
                let model = (sc.prepare)(&db);
                db.close().unwrap();
                Prepared { dir, model }
            };
            let log = run_case(sc, sync, &prepared, None, &mut fig);
            assert!(!log.is_empty(), "{}: the dry run did no IO", sc.name);
            for i in points_to_try(&log) {
                for fault in faults_for(&log[i]) {
                    run_case(sc, sync, &prepared, Some((i as u64, fault)), &mut fig);
                }
            }
        }
    }
    assert_eq!(fig.wrong_reads, 0);
    fig
}

#[test]
fn every_io_point_of_every_write_path_fails_cleanly_and_recovers_on_reopen() {
    let fig = sweep_scenarios(
        |s| s.mutation && !s.name.starts_with("data-sort"),
        &[SyncPolicy::Never, SyncPolicy::Always],
    );
    eprintln!("fault sweep (write paths): {fig:?}");
    assert!(fig.faults_injected > 100, "{fig:?}");
}

#[test]
fn every_io_point_of_reads_fails_with_a_typed_error_never_corruption() {
    let fig = sweep_scenarios(|s| !s.mutation, &[SyncPolicy::Never]);
    eprintln!("fault sweep (reads): {fig:?}");
    assert!(fig.faults_injected >= 3, "{fig:?}");
}

#[test]
fn every_io_point_of_a_data_sort_keeps_sources_intact_and_reopen_clean() {
    // The sort syncs its own output whatever the policy; the policy only changes the remove
    // made during the sort, so one policy covers the sort's IO points.
    let fig = sweep_scenarios(|s| s.name.starts_with("data-sort"), &[SyncPolicy::Never]);
    eprintln!("fault sweep (data-sort): {fig:?}");
    assert!(fig.faults_injected > 20, "{fig:?}");
}

// ---------------------------------------------------------------------------------------------
// Targeted cases

fn faulty(dir: &Path, sync: SyncPolicy) -> (Eblob, Arc<Sweep>) {
    let sweep = Arc::new(Sweep::default());
    let mut c = Config::new(dir);
    c.sync = sync;
    c.fault_injector = Some(sweep.clone());
    (Eblob::open(c).unwrap(), sweep)
}

fn plain(dir: &Path) -> Eblob {
    let mut c = Config::new(dir);
    c.sync = SyncPolicy::Never;
    Eblob::open(c).unwrap()
}

/// Index of the first armed-log event matching `op` on `file` in a dry run of `f`.
fn first_event(sweep: &Sweep, op: IoOp, file: &str, f: impl FnOnce()) -> u64 {
    sweep.arm(None);
    f();
    sweep.disarm();
    let log = sweep.log.lock().unwrap();
    log.iter()
        .position(|e| e.op == op && e.file == file)
        .unwrap_or_else(|| panic!("no {op:?} on {file} in {log:?}")) as u64
}

#[test]
fn a_failed_explicit_sync_turns_the_backend_read_only_instead_of_retrying() {
    // fsync failure can drop dirty pages; a later fsync that succeeds proves nothing about
    // them. So an explicit sync() error must stop writes just like a sync inside a write.
    let dir = tempfile::tempdir().unwrap();
    let (db, sweep) = faulty(dir.path(), SyncPolicy::Never);
    db.write(&key(1), b"written, not yet synced", &w()).unwrap();
    sweep.arm(Some((0, Fault::Fail(std::io::ErrorKind::Other))));
    let err = db.sync().unwrap_err();
    sweep.disarm();
    assert!(matches!(err, Error::Io { op: "fsync", .. }), "{err}");
    let reason = db
        .read_only_reason()
        .expect("read-only after a failed sync()");
    assert!(reason.contains("fsync"), "{reason}");
    assert!(matches!(
        db.write(&key(2), b"x", &w()),
        Err(Error::ReadOnly { .. })
    ));
    assert_eq!(db.read(&key(1)).unwrap(), b"written, not yet synced");
    drop(db);
    assert_eq!(
        plain(dir.path()).read(&key(1)).unwrap(),
        b"written, not yet synced"
    );
}

#[test]
fn enospc_on_write_is_a_typed_error_keeping_the_os_error_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (db, sweep) = faulty(dir.path(), SyncPolicy::Always);
    db.write(&key(1), &value(1, 0, 4000), &w()).unwrap();
    let at = first_event(&sweep, IoOp::Write, "data-0", || {
        db.write(&key(2), &value(2, 0, 10), &w()).unwrap();
    });
    sweep.arm(Some((at, Fault::Fail(std::io::ErrorKind::StorageFull))));
    let err = db.write(&key(3), &value(3, 0, 4000), &w()).unwrap_err();
    sweep.disarm();
    match &err {
        Error::Io { op, source, .. } => {
            assert_eq!(*op, "write");
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{err}");
        }
        other => panic!("expected Io, got {other}"),
    }
    assert!(db.read_only_reason().is_some());
    assert_eq!(db.read(&key(1)).unwrap(), value(1, 0, 4000));
    assert!(matches!(db.read(&key(3)), Err(Error::NotFound)));
    drop(db);
    let db = plain(dir.path());
    assert_eq!(db.read(&key(1)).unwrap(), value(1, 0, 4000));
    assert_eq!(db.read(&key(2)).unwrap(), value(2, 0, 10));
    assert!(matches!(db.read(&key(3)), Err(Error::NotFound)));
}

#[test]
fn a_torn_append_then_crash_is_truncated_and_every_acknowledged_key_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let (db, sweep) = faulty(dir.path(), SyncPolicy::Always);
    for i in 0..20 {
        db.write(&key(i), &value(i, 0, 3000), &w()).unwrap();
    }
    // The first data write of an append is its body: tear it half way, then crash.
    let at = first_event(&sweep, IoOp::Write, "data-0", || {
        db.write(&key(50), &value(50, 0, 10), &w()).unwrap();
    });
    sweep.arm(Some((at, Fault::ShortWrite(1500))));
    assert!(matches!(
        db.write(&key(20), &value(20, 0, 3000), &w()),
        Err(Error::Io { op: "write", .. })
    ));
    sweep.disarm();
    drop(db);
    let db = plain(dir.path());
    let r = db.open_report();
    assert_eq!(r.torn.len(), 1, "{r:?}");
    assert!(r.corrupted.is_empty(), "{r:?}");
    for i in 0..20 {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 3000));
    }
    assert_eq!(db.read(&key(50)).unwrap(), value(50, 0, 10));
    assert!(matches!(db.read(&key(20)), Err(Error::NotFound)));
}

#[test]
fn a_read_error_at_open_never_truncates_an_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = plain(dir.path());
    for i in 0..10 {
        db.write(&key(i), &value(i, 0, 2000), &w()).unwrap();
    }
    let last = db.lookup(&key(9)).unwrap();
    db.close().unwrap();
    let len_before = std::fs::metadata(&last.data_path).unwrap().len();
    // The disk cannot read the last record's data (it is where open looks for a torn tail).
    for verify_all in [false, true] {
        let sweep = Arc::new(Sweep::default());
        *sweep.fail_reads_of.lock().unwrap() = Some(("data-0".into(), last.data_offset_bytes));
        let mut c = Config::new(dir.path());
        c.sync = SyncPolicy::Never;
        c.verify_data_on_open = verify_all;
        c.fault_injector = Some(sweep);
        let err = Eblob::open(c).expect_err("open must fail rather than drop the record");
        assert!(matches!(err, Error::Io { op: "read", .. }), "{err}");
        assert_eq!(
            std::fs::metadata(&last.data_path).unwrap().len(),
            len_before,
            "nothing truncated (verify_data_on_open = {verify_all})"
        );
    }
    let db = plain(dir.path());
    assert!(db.open_report().torn.is_empty());
    for i in 0..10 {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 2000));
    }
}

#[test]
fn a_read_error_during_data_sort_fails_the_sort_and_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::new(dir.path());
    c.sync = SyncPolicy::Never;
    c.records_in_blob = 10;
    let sweep = Arc::new(Sweep::default());
    c.fault_injector = Some(sweep.clone());
    let db = Eblob::open(c.clone()).unwrap();
    for i in 0..30 {
        db.write(&key(i), &value(i, 0, 500), &w()).unwrap();
    }
    let victim = db.lookup(&key(14)).unwrap();
    let file = victim
        .data_path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    *sweep.fail_reads_of.lock().unwrap() = Some((file, victim.data_offset_bytes));
    let err = db.data_sort(&DataSortOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Io { op: "read", .. }), "{err}");
    assert_eq!(db.stats().total.corrupted, 0, "a read error is not damage");
    *sweep.fail_reads_of.lock().unwrap() = None;
    for i in 0..30 {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 500), "key {i}");
    }
    drop(db);
    c.fault_injector = None;
    let db = Eblob::open(c).unwrap();
    for i in 0..30 {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 500), "key {i}");
    }
    // With the disk healthy again the sort completes and keeps every record.
    let report = db.data_sort(&DataSortOptions::default()).unwrap();
    assert_eq!(report.corrupted_dropped, 0);
    for i in 0..30 {
        assert_eq!(db.read(&key(i)).unwrap(), value(i, 0, 500), "key {i}");
    }
}

/// Whether all `len` bytes of `file` at `offset` are in the page cache: a read that may not
/// wait for the disk (`RWF_NOWAIT`) gets them all, or stops short / EAGAIN.
fn cached(file: &std::fs::File, offset: u64, len: usize) -> bool {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let mut slice = [std::io::IoSliceMut::new(&mut buf[got..])];
        match rustix::io::preadv2(
            file,
            &mut slice,
            offset + got as u64,
            rustix::io::ReadWriteFlags::NOWAIT,
        ) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    true
}

#[test]
fn a_data_region_is_in_the_page_cache_when_taken_and_an_unreadable_one_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    // Synced, so the eviction below can drop the pages (it leaves dirty ones alone).
    let (db, sweep) = faulty(dir.path(), SyncPolicy::Always);
    let size = 3 << 20;
    for i in 0..3 {
        db.write(&key(i), &value(i, 0, size), &w()).unwrap();
    }
    let victim = db.lookup(&key(1)).unwrap();
    let control = db.lookup(&key(2)).unwrap();
    let file = std::fs::File::open(&victim.data_path).unwrap();
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    let region = db.data_region(&key(1)).unwrap();
    // Key 2's record lies after key 1's and nothing read it since the eviction; it is
    // checked first, since a check that misses starts reading ahead of where it looked.
    if cached(&file, control.data_offset_bytes, size) {
        eprintln!("page cache eviction not observable on this file system; skipping that part");
    } else {
        assert!(
            cached(&file, region.offset_bytes, size),
            "the region's bytes wait in the page cache"
        );
    }

    // A disk that cannot read the record's bytes: a read error when the region is taken
    // (not a failure halfway through sending it), and not damage.
    let name = victim
        .data_path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    *sweep.fail_reads_of.lock().unwrap() = Some((name, victim.data_offset_bytes + 1000));
    let err = db.data_region(&key(1)).unwrap_err();
    assert!(matches!(err, Error::Io { op: "read", .. }), "{err}");
    assert_eq!(db.stats().total.corrupted, 0, "a read error is not damage");
    *sweep.fail_reads_of.lock().unwrap() = None;
    let region = db.data_region(&key(1)).unwrap();
    let mut got = vec![0u8; size];
    std::os::unix::fs::FileExt::read_exact_at(&*region.file, &mut got, region.offset_bytes)
        .unwrap();
    assert_eq!(got, value(1, 0, size));
}

#[test]
fn a_read_error_during_iteration_is_reported_not_counted_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (db, sweep) = faulty(dir.path(), SyncPolicy::Never);
    for i in 0..5 {
        db.write(&key(i), &value(i, 0, 500), &w()).unwrap();
    }
    *sweep.fail_reads_of.lock().unwrap() = Some(("data-0".into(), 0));
    let err = db
        .iterate(
            &eblob::IterateOptions {
                with_data: true,
                ..Default::default()
            },
            &mut |_| std::ops::ControlFlow::Continue(()),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Io { op: "read", .. }), "{err}");
    assert_eq!(db.stats().total.corrupted, 0);
}

// ---------------------------------------------------------------------------------------------
// Seeded random faults

/// Fails IO at random with per-mille probabilities drawn from a seeded RNG.
#[derive(Debug)]
struct RandomFaults {
    armed: AtomicBool,
    rng: Mutex<rand::rngs::StdRng>,
    injected: AtomicU64,
}

impl FaultInjector for RandomFaults {
    fn on_io(&self, op: IoOp, _path: &Path, _offset: u64, len: u64) -> Fault {
        use rand::Rng;
        use std::io::ErrorKind;
        if !self.armed.load(Ordering::SeqCst) {
            return Fault::None;
        }
        let mut rng = self.rng.lock().unwrap();
        let per_mille = match op {
            IoOp::Write => 8,
            IoOp::Sync => 15,
            IoOp::Read => 3,
        };
        if rng.random_range(0..1000) >= per_mille {
            return Fault::None;
        }
        self.injected.fetch_add(1, Ordering::SeqCst);
        match (op, rng.random_range(0..4)) {
            (IoOp::Write, 0) => Fault::ShortWrite(rng.random_range(0..len.max(1))),
            (IoOp::Write, 1) => Fault::Fail(ErrorKind::StorageFull),
            _ => Fault::Fail(ErrorKind::Other),
        }
    }
}

/// One random operation and the model update it implies on success.
fn random_op(
    db: &Eblob,
    rng: &mut rand::rngs::StdRng,
    model: &BTreeMap<u64, Expect>,
) -> (Option<u64>, Result<(), Error>, Option<Expect>) {
    use rand::Rng;
    const KEYS: u64 = 40;
    let k = rng.random_range(0..KEYS);
    let old = match model.get(&k) {
        Some(Expect::Value(v)) => Some(v.clone()),
        _ => None,
    };
    let len = if rng.random_range(0..60) == 0 {
        (1 << 20) + rng.random_range(0..5000)
    } else {
        rng.random_range(0..3000)
    };
    let ver = rng.random::<u64>();
    match rng.random_range(0..100) {
        0..=34 => {
            let v = value(k, ver, len);
            let r = db.write(&key(k), &v, &w()).map(drop);
            (Some(k), r, Some(Expect::Value(v)))
        }
        35..=44 => {
            let tail = value(k, ver, rng.random_range(1..500));
            let r = db
                .write(
                    &key(k),
                    &tail,
                    &WriteOptions {
                        append: true,
                        ..w()
                    },
                )
                .map(drop);
            let mut v = old.unwrap_or_default();
            v.extend_from_slice(&tail);
            (Some(k), r, Some(Expect::Value(v)))
        }
        45..=54 => {
            let mut v = old.unwrap_or_default();
            let at = rng.random_range(0..v.len() + 100);
            let patch = value(k, ver, rng.random_range(1..300));
            let r = db
                .write(
                    &key(k),
                    &patch,
                    &WriteOptions {
                        offset: at as u64,
                        ..w()
                    },
                )
                .map(drop);
            if v.len() < at + patch.len() {
                v.resize(at + patch.len(), 0);
            }
            v[at..at + patch.len()].copy_from_slice(&patch);
            (Some(k), r, Some(Expect::Value(v)))
        }
        55..=64 => match db.remove(&key(k)) {
            Err(Error::NotFound) if old.is_none() => (None, Ok(()), None),
            r => (Some(k), r, Some(Expect::Absent)),
        },
        65..=66 => (
            None,
            db.data_sort(&DataSortOptions {
                compact_only: rng.random_range(0..2) == 0,
                ..Default::default()
            })
            .map(drop),
            None,
        ),
        _ => {
            // A read while faults may hit it: an error is fine, foreign bytes never.
            let r = match db.read(&key(k)) {
                Ok(v) if Some(&v) == old.as_ref() => Ok(()),
                Ok(v) => panic!("WRONG DATA: key {k} read {} bytes", v.len()),
                Err(Error::NotFound) if old.is_none() => Ok(()),
                Err(e @ Error::Io { op: "read", .. }) => {
                    assert!(
                        db.read_only_reason().is_none(),
                        "a read error turned read-only"
                    );
                    drop(e);
                    Ok(())
                }
                Err(e) => panic!("key {k}: read failed with {e}"),
            };
            (None, r, None)
        }
    }
}

/// After a reopen: settle keys in doubt to what they hold (a torn in-place rewrite reads as
/// corrupted: remove it, as the node would after repairing it from another group).
fn settle(db: &Eblob, model: &Model, fig: &mut Figures, ctx: &str) -> BTreeMap<u64, Expect> {
    let mut out = BTreeMap::new();
    for (k, allowed) in model {
        fig.reads_checked += 1;
        match observe(db, *k) {
            Ok(e) if allowed.contains(&e) => {
                out.insert(*k, e);
            }
            Ok(e) => {
                fig.wrong_reads += 1;
                panic!(
                    "{ctx}: WRONG DATA after reopen: key {k} got {}, allowed {:?}; open report {:?}",
                    e.describe(),
                    allowed.iter().map(Expect::describe).collect::<Vec<_>>(),
                    db.open_report()
                );
            }
            Err(Error::Corrupted { .. }) if allowed.len() > 1 => {
                fig.corrupted_after_fault += 1;
                db.remove(&key(*k)).unwrap();
                out.insert(*k, Expect::Absent);
            }
            Err(e) => panic!("{ctx}: key {k} after reopen: {e}"),
        }
    }
    out
}

fn run_seed(seed: u64, fig: &mut Figures) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(RandomFaults {
        armed: AtomicBool::new(false),
        rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed)),
        injected: AtomicU64::new(0),
    });
    let mut c = Config::new(dir.path());
    c.sync = if seed % 2 == 0 {
        SyncPolicy::Always
    } else {
        SyncPolicy::Never
    };
    c.records_in_blob = [8, 30, 1000][rng.random_range(0..3)];
    c.overwrite_in_place = rng.random_range(0..4) != 0;
    c.fault_injector = Some(faults.clone());
    let mut model: BTreeMap<u64, Expect> = BTreeMap::new();
    for epoch in 0..4 {
        let db = Eblob::open(c.clone()).unwrap_or_else(|e| panic!("seed {seed}: open: {e}"));
        fig.reopens += 1;
        faults.armed.store(true, Ordering::SeqCst);
        let mut doubt: Model = exact(&model);
        for _ in 0..50 {
            let before = faults.injected.load(Ordering::SeqCst);
            let (k, r, done) = random_op(&db, &mut rng, &model);
            fig.cases += 1;
            let injected = faults.injected.load(Ordering::SeqCst) > before;
            fig.faults_injected += u64::from(injected);
            match (r, k) {
                (Ok(()), Some(k)) => {
                    model.insert(k, done.expect("a mutation has a result"));
                }
                (Ok(()), None) => {}
                (Err(e), k) => {
                    assert!(
                        injected && matches!(e, Error::Io { .. }),
                        "seed {seed} epoch {epoch}: {e} without an injected fault"
                    );
                    assert!(
                        db.read_only_reason().is_some(),
                        "seed {seed}: writable after {e}"
                    );
                    doubt = exact(&model);
                    if let (Some(k), Some(new)) = (k, done) {
                        doubt
                            .entry(k)
                            .or_insert_with(|| vec![Expect::Absent])
                            .push(new);
                    }
                    break;
                }
            }
            doubt = exact(&model);
        }
        faults.armed.store(false, Ordering::SeqCst);
        let tear: Vec<u64> = doubt
            .iter()
            .filter(|(_, a)| a.len() > 1)
            .map(|(k, _)| *k)
            .collect();
        check_model(
            &db,
            &doubt,
            &tear,
            fig,
            &format!("seed {seed} epoch {epoch}"),
        );
        drop(db); // crash
        let db = Eblob::open(c.clone()).unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
        fig.reopens += 1;
        model = settle(
            &db,
            &doubt,
            fig,
            &format!("seed {seed} epoch {epoch} {c:?}"),
        );
        db.close().unwrap();
    }
}

#[test]
fn seeded_random_faults_never_return_wrong_data_and_reopen_recovers() {
    // EBLOB_FAULT_SEEDS=2000 for a long run; every seed replays exactly.
    let seeds: u64 = std::env::var("EBLOB_FAULT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let first: u64 = std::env::var("EBLOB_FAULT_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut fig = Figures::default();
    for seed in first..first + seeds {
        run_seed(seed, &mut fig);
    }
    eprintln!("random faults: seeds {first}..{}: {fig:?}", first + seeds);
    assert_eq!(fig.wrong_reads, 0);
    assert!(fig.faults_injected >= seeds, "{fig:?}");
}

#[test]
fn a_torn_in_place_rewrite_of_the_newest_record_is_never_returned_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (db, sweep) = faulty(dir.path(), SyncPolicy::Always);
    for i in 0..5 {
        db.write(&key(i), &value(i, 0, 4000), &w()).unwrap();
    }
    // Key 4 is the newest record; rewrite it in place and tear the rewrite.
    let at = first_event(&sweep, IoOp::Write, "data-0", || {
        db.write(&key(3), &value(3, 1, 4000), &w()).unwrap();
    });
    sweep.arm(Some((at, Fault::ShortWrite(2000))));
    assert!(db.write(&key(4), &value(4, 1, 4000), &w()).is_err());
    sweep.disarm();
    assert!(matches!(db.read(&key(4)), Err(Error::Corrupted { .. })));
    drop(db);
    let db = plain(dir.path());
    // Every byte of the record is on disk (it is not an interrupted append), so the open keeps
    // it indexed and reports it corrupted: reads of the key say so instead of finding nothing.
    let r = db.open_report();
    assert!(r.torn.is_empty(), "{r:?}");
    assert_eq!(r.corrupted.len(), 1, "{r:?}");
    assert!(matches!(db.read(&key(4)), Err(Error::Corrupted { .. })));
    assert!(db.stats().total.corrupted >= 1);
    for i in 0..4 {
        let v = if i == 3 { 1 } else { 0 };
        assert_eq!(db.read(&key(i)).unwrap(), value(i, v, 4000));
    }
}

#[test]
fn an_in_place_rewrite_whose_index_write_fails_is_served_reopened_and_sorted_from_its_data() {
    // The soak's loss: a small whole rewrite in place writes the record (header, data,
    // footer) in one go, then its index entry. When only the index write fails, the record
    // on disk is the new one behind a stale entry (old size and timestamp). Reads, the open
    // and data-sort must all take the data header; data-sort used to drop the record as
    // damaged, losing both versions of the key.
    let old = vec![b'o'; 2000];
    let new = vec![b'n'; 700];
    let prepare = |dir: &Path| {
        let (db, sweep) = faulty(dir, SyncPolicy::Always);
        db.write(&key(1), &old, &w()).unwrap();
        db.write(&key(2), b"a neighbour", &w()).unwrap();
        (db, sweep)
    };
    let dry = tempfile::tempdir().unwrap();
    let (db, sweep) = prepare(dry.path());
    let at = first_event(&sweep, IoOp::Write, "data-0.index", || {
        db.write(&key(1), &new, &w()).unwrap();
    });
    drop(db);
    for fault in [Fault::Fail(std::io::ErrorKind::Other), Fault::ShortWrite(1)] {
        let dir = tempfile::tempdir().unwrap();
        let (db, sweep) = prepare(dir.path());
        sweep.arm(Some((at, fault)));
        let err = db.write(&key(1), &new, &w()).unwrap_err();
        sweep.disarm();
        assert!(is_io(&err, IoOp::Write), "{fault:?}: {err}");
        assert!(db.read_only_reason().is_some(), "{fault:?}");
        // Read-only, it serves what the data file holds: the new record, whole.
        assert_eq!(db.read(&key(1)).unwrap(), new, "{fault:?}: while read-only");
        drop(db);
        let db = plain(dir.path());
        assert_eq!(
            db.read(&key(1)).unwrap(),
            new,
            "{fault:?}: after the reopen"
        );
        let report = db.data_sort(&DataSortOptions::default()).unwrap();
        assert_eq!(report.corrupted_dropped, 0, "{fault:?}: {report:?}");
        assert_eq!(db.read(&key(1)).unwrap(), new, "{fault:?}: after data-sort");
        assert_eq!(db.read(&key(2)).unwrap(), b"a neighbour");
        drop(db);
        assert_eq!(
            plain(dir.path()).read(&key(1)).unwrap(),
            new,
            "{fault:?}: after data-sort and a reopen"
        );
    }
}
