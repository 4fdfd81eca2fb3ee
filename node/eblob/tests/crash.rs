//! `sync = always` survives `kill -9`: a child process writes, overwrites and removes keys
//! (with a data-sort running beside it), printing each operation before it starts and after
//! it is acknowledged; the parent SIGKILLs it at a random point, reopens the directory and
//! checks every acknowledged operation. Repeated on the same directory.
//!
//! `EBLOB_CRASH_KILLS` sets the number of kills (default 6).
// Test drivers outside #[test] fns: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{key, value};
use eblob::{DataSortOptions, Eblob, Error, SyncPolicy, WriteOptions};
use rand::{Rng, SeedableRng};

const CHILD_DIR: &str = "EBLOB_CRASH_CHILD_DIR";
const CHILD_RUN: &str = "EBLOB_CRASH_CHILD_RUN";

fn cfg(dir: &std::path::Path) -> eblob::Config {
    let mut c = eblob::Config::new(dir);
    c.sync = SyncPolicy::Always;
    // An in-place overwrite torn by a crash loses the previous version too (see README);
    // this test checks the strict guarantee, so every overwrite appends.
    c.overwrite_in_place = false;
    c.records_in_blob = 60;
    c
}

fn len_of(version: u64) -> usize {
    (version % 7) as usize * 300 + 1
}

/// The child: an endless stream of operations over keys `0..200`. Protocol on stdout:
/// `begin w K V` / `begin r K`, then `ack`. Not a test when the variables are unset.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(run)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_RUN)) else {
        return;
    };
    let run: u64 = run.parse().unwrap();
    let db = std::sync::Arc::new(Eblob::open(cfg(dir.as_ref())).unwrap());
    let sorter = {
        let db = db.clone();
        std::thread::spawn(move || loop {
            match db.data_sort(&DataSortOptions::default()) {
                Ok(_) | Err(Error::SortRunning) => {}
                Err(e) => {
                    // A panic here would only end this thread; abort so the parent sees it.
                    eprintln!("data-sort failed: {e}");
                    std::process::abort();
                }
            }
        })
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(run);
    let mut out = std::io::stdout().lock();
    for op in 0u64.. {
        let k = rng.random_range(0..200u64);
        if rng.random_range(0..5) == 0 {
            writeln!(out, "@@ begin r {k}").unwrap();
            out.flush().unwrap();
            match db.remove(&key(k)) {
                Ok(()) | Err(Error::NotFound) => {}
                Err(e) => panic!("remove: {e}"),
            }
        } else {
            let v = run * 1_000_000 + op;
            writeln!(out, "@@ begin w {k} {v}").unwrap();
            out.flush().unwrap();
            db.write(&key(k), &value(k, v, len_of(v)), &WriteOptions::default())
                .unwrap();
        }
        writeln!(out, "@@ ack").unwrap();
        out.flush().unwrap();
    }
    sorter.join().unwrap();
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Absent,
    Version(u64),
}

/// Applies one line of the child's protocol; true for an `ack`. The protocol is marked with
/// `@@` because libtest may print its own text before it on the same line.
fn apply_line(
    line: &str,
    pending: &mut Option<(u64, State)>,
    model: &mut BTreeMap<u64, State>,
) -> bool {
    let Some(at) = line.find("@@") else {
        return false;
    };
    let parts: Vec<&str> = line[at + 2..].split_whitespace().collect();
    match parts.as_slice() {
        ["begin", "w", k, v] => {
            *pending = Some((k.parse().unwrap(), State::Version(v.parse().unwrap())))
        }
        ["begin", "r", k] => *pending = Some((k.parse().unwrap(), State::Absent)),
        ["ack"] => {
            let (k, s) = pending.take().expect("ack without begin");
            model.insert(k, s);
            return true;
        }
        other => panic!("unexpected child line {other:?}"),
    }
    false
}

#[test]
fn acknowledged_writes_and_removes_survive_kill_9() {
    let kills: u64 = std::env::var("EBLOB_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    let mut model: BTreeMap<u64, State> = BTreeMap::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let exe = std::env::current_exe().unwrap();
    let mut total_acks = 0;
    for run in 1..=kills {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_RUN, run.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let kill_after = rng.random_range(20..400u64);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut pending: Option<(u64, State)> = None;
        let mut acks = 0;
        while acks < kill_after {
            let Some(line) = lines.next() else {
                panic!("child exited early")
            };
            if apply_line(&line.unwrap(), &mut pending, &mut model) {
                acks += 1;
            }
        }
        // SIGKILL, at whatever point the child is in (mid-write, mid-sort, mid-fsync).
        child.kill().unwrap();
        child.wait().unwrap();
        // The operation after the last ack may or may not have happened.
        for line in lines.map_while(Result::ok) {
            apply_line(&line, &mut pending, &mut model);
        }
        total_acks += acks;
        let db = Eblob::open(cfg(dir.path())).unwrap();
        assert!(
            db.open_report().corrupted.is_empty(),
            "{:?}",
            db.open_report()
        );
        for k in 0..200u64 {
            let expected = model.get(&k).copied().unwrap_or(State::Absent);
            let got = match db.read(&key(k)) {
                Ok(data) => Some(data),
                Err(Error::NotFound) => None,
                Err(e) => panic!("run {run}: key {k}: {e}"),
            };
            let matches = |s: State| match (s, &got) {
                (State::Absent, None) => true,
                (State::Version(v), Some(d)) => *d == value(k, v, len_of(v)),
                _ => false,
            };
            let in_flight = pending.filter(|(pk, _)| *pk == k).map(|(_, s)| s);
            if in_flight.is_some_and(matches) {
                model.insert(k, in_flight.unwrap_or(State::Absent));
                continue;
            }
            assert!(
                matches(expected),
                "run {run}: key {k} expected {expected:?}, got {:?} bytes",
                got.map(|d| d.len())
            );
        }
        db.close().unwrap();
    }
    assert!(total_acks > kills * 20);
}
