//! ITERATOR on real nodes through the client library: full scans with and without data,
//! key-range and timestamp filters, keep-alives while skipping, pause / continue / cancel.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use ellipsis_core::client::{Checker, ClientError};
use ellipsis_core::protocol::cmd::iterator::{IteratorAction, IteratorRecord, IteratorRequest};
use ellipsis_core::protocol::{Command, Header, IoAttr, Status};
use ellipsis_core::stats::{JobKind, JobState, JobStatus};
use ellipsis_core::Id;
use ellipsis_tests::{Cluster, NodeSpec};

fn key(i: u64) -> Id {
    Id::for_key(b"iter", format!("k{i}").as_bytes())
}

fn value(i: u64) -> Bytes {
    Bytes::from(format!("value-{i}-").repeat(1 + (i % 7) as usize))
}

/// Every frame of a stream until its end: (records, keep-alives after the first, final error).
async fn drain(
    s: &mut ellipsis_core::client::IteratorStream,
) -> (Vec<IteratorRecord>, u64, Option<ClientError>) {
    let (mut records, mut keepalives) = (Vec::new(), 0);
    while let Some(r) = s.next().await {
        match r {
            Ok(r) if r.keepalive => keepalives += 1,
            Ok(r) => records.push(r),
            Err(e) => return (records, keepalives, Some(e)),
        }
    }
    (records, keepalives, None)
}

async fn workers(c: &Cluster, i: usize) -> Vec<JobStatus> {
    reqwest::get(format!("http://{}/stats/workers", c.http(i)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn iterator_job(c: &Cluster, id: u64) -> JobStatus {
    let jobs = workers(c, 0).await;
    jobs.into_iter()
        .find(|j| j.id == id)
        .expect("iterator listed in /stats/workers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_scan_streams_every_record_with_and_without_data() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let client = c.client(0, &[1], Checker::All).await;
    for i in 0..300 {
        client
            .write(&key(i), value(i), IoAttr::default())
            .await
            .unwrap();
    }
    let req = IteratorRequest {
        backend: 1,
        with_data: true,
        ..IteratorRequest::default()
    };
    let mut s = client.iterate(c.addr(0), req.clone()).await.unwrap();
    assert_eq!(s.total(), 300);
    let (records, _, err) = drain(&mut s).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(records.len(), 300);
    let expected: BTreeSet<Id> = (0..300).map(key).collect();
    let got: BTreeSet<Id> = records.iter().map(|r| r.key).collect();
    assert_eq!(got, expected);
    for r in &records {
        let i = (0..300).find(|i| key(*i) == r.key).unwrap();
        assert_eq!(r.status, Status::OK);
        assert_eq!(r.data, value(i));
        assert_eq!(r.attr.total_size, value(i).len() as u64);
        assert_eq!(r.iterator_id, s.id());
    }
    let job = iterator_job(&c, s.id()).await;
    assert_eq!(
        (job.kind, job.state, job.done_keys),
        (JobKind::Iterator, JobState::Done, 300)
    );

    let mut s = client
        .iterate(
            c.addr(0),
            IteratorRequest {
                with_data: false,
                ..req
            },
        )
        .await
        .unwrap();
    let (records, _, err) = drain(&mut s).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(records.len(), 300);
    assert!(records
        .iter()
        .all(|r| r.data.is_empty() && r.attr.size == 0));
    assert!(records.iter().all(|r| r.attr.total_size > 0));
    // Bad requests get clear statuses.
    let missing = client
        .iterate(
            c.addr(0),
            IteratorRequest {
                backend: 9,
                ..IteratorRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Status::UNREACHABLE);
    let unknown = client
        .iterator_control(c.addr(0), 999_999, IteratorAction::Pause)
        .await
        .unwrap_err();
    assert_eq!(unknown.status(), Status::NOT_FOUND);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_range_and_timestamp_filters_select_exactly_the_matching_records() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let client = c.client(0, &[1], Checker::All).await;
    for i in 0..400 {
        let attr = IoAttr {
            ts_sec: 1000 + i,
            ..IoAttr::default()
        };
        client.write(&key(i), value(i), attr).await.unwrap();
    }
    let mut sorted: Vec<Id> = (0..400).map(key).collect();
    sorted.sort();
    // Two half-open ranges: 40 + 60 keys.
    let ranges = vec![(sorted[10], sorted[50]), (sorted[200], sorted[260])];
    let in_ranges: BTreeSet<Id> = sorted[10..50]
        .iter()
        .chain(&sorted[200..260])
        .copied()
        .collect();
    let run = |ranges: Vec<(Id, Id)>, time_range: Option<(u64, u64)>| {
        let client = client.clone();
        let node = c.addr(0);
        async move {
            let req = IteratorRequest {
                backend: 1,
                ranges,
                time_range,
                keepalive_skipped: 50,
                ..IteratorRequest::default()
            };
            let mut s = client.iterate(node, req).await.unwrap();
            let (records, keepalives, err) = drain(&mut s).await;
            assert!(err.is_none(), "{err:?}");
            (records, keepalives)
        }
    };
    let (records, _) = run(ranges.clone(), None).await;
    let got: BTreeSet<Id> = records.iter().map(|r| r.key).collect();
    assert_eq!(records.len(), 100);
    assert_eq!(got, in_ranges);

    // Records are on disk in write order: the first 300 are skipped in one run, so at least
    // 300 / 50 keep-alives go out before the first match.
    let (records, keepalives) = run(Vec::new(), Some((1300, 1399))).await;
    assert_eq!(records.len(), 100);
    assert!(records
        .iter()
        .all(|r| (1300..=1399).contains(&r.attr.ts_sec)));
    assert!(keepalives >= 6, "{keepalives} keep-alives while skipping");

    let (records, _) = run(ranges, Some((1100, 1199))).await;
    let expected: BTreeSet<Id> = (100..200)
        .map(key)
        .filter(|k| in_ranges.contains(k))
        .collect();
    let got: BTreeSet<Id> = records.iter().map(|r| r.key).collect();
    assert_eq!(got, expected);
    c.shutdown().await;
}

/// Records of 8 KiB: more than the connection queue (1024 frames), the client's reply queue
/// and the kernel's socket buffers (at most 32 MiB + 4 MiB here) can hold, so the iterator is
/// necessarily still running when the client pauses it without reading.
const BIG_RECORDS: u64 = 8000;
const BIG_VALUE: usize = 8 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_delivery_until_continue_and_cancel_ends_with_cancelled() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let client = c.client(0, &[1], Checker::All).await;
    // Fill the engine directly: the subject here is the stream, not the write path.
    let engine = c.node(0).backend(1).unwrap().engine().unwrap();
    let payload = vec![7u8; BIG_VALUE];
    tokio::task::spawn_blocking(move || {
        for i in 0..BIG_RECORDS {
            engine
                .write(
                    &eblob::Key(key(i).0),
                    &payload,
                    &eblob::WriteOptions::default(),
                )
                .unwrap();
        }
    })
    .await
    .unwrap();
    let req = IteratorRequest {
        backend: 1,
        with_data: true,
        ..IteratorRequest::default()
    };
    let mut s = client.iterate(c.addr(0), req).await.unwrap();
    let id = s.id();
    let first = s.next_record().await.unwrap().unwrap();
    assert_eq!(first.data.len(), BIG_VALUE);

    // Pause from the shared connection while the stream's own connection is not read.
    let paused = client
        .iterator_control(c.addr(0), id, IteratorAction::Pause)
        .await
        .unwrap();
    // Admission and pause share a lock: from here the number of records sent is frozen.
    let sent = paused.iterated;
    let job = iterator_job(&c, id).await;
    assert_eq!((job.state, job.done_keys), (JobState::Paused, sent));
    assert!(
        sent < BIG_RECORDS,
        "the iterator was still running when paused"
    );
    // Everything sent before the pause arrives...
    let mut received = 1;
    while received < sent {
        let r = s.next_record().await.unwrap().unwrap();
        assert_eq!(r.data.len(), BIG_VALUE);
        received += 1;
    }
    // ...and nothing after it: a PING on the stream's connection is answered after every
    // frame queued before it, so once its reply is in, the stream holds all there is.
    let ping = Header::request(Command::Ping, Id::ZERO, 0, 0);
    s.conn()
        .call(ping, Bytes::new(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        s.try_next().is_none(),
        "a record was delivered while paused"
    );
    let job = iterator_job(&c, id).await;
    assert_eq!((job.state, job.done_keys), (JobState::Paused, sent));

    // Continue: the rest flows again.
    client
        .iterator_control(c.addr(0), id, IteratorAction::Continue)
        .await
        .unwrap();
    for _ in 0..100 {
        let r = s.next_record().await.unwrap().unwrap();
        assert_eq!(r.status, Status::OK);
        received += 1;
    }
    // Cancel from the shared connection: the stream ends with CANCELLED, short of the end.
    client
        .iterator_control(c.addr(0), id, IteratorAction::Cancel)
        .await
        .unwrap();
    let (rest, _, err) = drain(&mut s).await;
    received += rest.len() as u64;
    assert_eq!(err.map(|e| e.status()), Some(Status::CANCELLED));
    assert!(
        received < BIG_RECORDS,
        "{received} records before the cancel"
    );
    let job = iterator_job(&c, id).await;
    assert_eq!(job.state, JobState::Cancelled);
    // A record admitted just before the cancel may have been dropped unsent.
    assert!(
        (received..=received + 1).contains(&job.done_keys),
        "{} admitted, {received} received",
        job.done_keys
    );
    // A finished iterator cannot be continued.
    let again = client
        .iterator_control(c.addr(0), id, IteratorAction::Continue)
        .await
        .unwrap_err();
    assert_eq!(again.status(), Status::INVALID);
    c.shutdown().await;
}
