//! Tree shape, order, annotations, bounds, JSON and statistics, through a real subscriber.
//! Each test installs its own thread-local subscriber; times come from a manual clock that
//! advances 10 µs per reading, so the JSON is deterministic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use react_trace::{action, request, Clock, ReactAction, Tracer, TracerConfig};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug, Default)]
struct Ticks(AtomicU64);

impl Clock for Ticks {
    fn now_ns(&self) -> u64 {
        self.0.fetch_add(10_000, Ordering::SeqCst)
    }
    fn unix_us(&self) -> u64 {
        1_700_000_000_000_000
    }
}

fn tracer(cfg: TracerConfig) -> Tracer {
    Tracer::new(TracerConfig {
        clock: Arc::new(Ticks::default()),
        ..cfg
    })
    .expect("valid config")
}

fn with<T>(t: &Tracer, f: impl FnOnce() -> T) -> T {
    tracing::subscriber::with_default(tracing_subscriber::registry().with(t.layer()), f)
}

fn names(a: &ReactAction) -> Vec<&str> {
    a.actions.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn nested_sync_spans_form_a_tree_in_start_order() {
    let t = tracer(TracerConfig::default());
    with(&t, || {
        let _r = request!("WRITE", 7u64, true).entered();
        {
            let _a = action!("cache").entered();
            let _b = tracing::info_span!("cache.lookup").entered();
        }
        {
            let _c = action!("eblob.write").entered();
            action!("eblob.fsync").in_scope(|| {});
        }
        action!("reply").in_scope(|| {});
    });
    let tree = t.get(7).expect("tree");
    assert!(tree.complete && !tree.truncated);
    let root = &tree.actions[0];
    assert_eq!(root.name, "WRITE");
    assert_eq!(names(root), ["cache", "eblob.write", "reply"]);
    assert_eq!(names(&root.actions[0]), ["cache.lookup"]);
    assert_eq!(names(&root.actions[1]), ["eblob.fsync"]);
    for w in root.actions.windows(2) {
        assert!(w[0].start_time < w[1].start_time);
    }
    for c in &root.actions {
        assert!(root.start_time <= c.start_time && c.stop_time <= root.stop_time);
    }
}

#[test]
fn unsampled_requests_record_nothing_and_disable_actions() {
    let t = tracer(TracerConfig::default());
    with(&t, || {
        let _r = request!("READ", 1u64, false).entered();
        assert!(!react_trace::is_sampled());
        let a = action!("cache");
        assert!(
            a.is_disabled(),
            "actions of unsampled requests are never allocated"
        );
        let _b = tracing::info_span!("plain").entered();
    });
    assert!(t.get(1).is_none());
    assert_eq!(t.stats().trees, 0);
}

#[test]
fn sampling_rate_one_samples_every_root_and_zero_none() {
    let t = tracer(TracerConfig {
        sampling_rate: 1.0,
        ..Default::default()
    });
    with(&t, || {
        for id in 0..10u64 {
            request!("READ", id, false).in_scope(|| assert!(react_trace::is_sampled()));
        }
        t.set_sampling_rate(0.0).unwrap();
        for id in 10..20u64 {
            request!("READ", id, false).in_scope(|| assert!(!react_trace::is_sampled()));
        }
        t.set_sampling_rate(0.5).unwrap();
        for id in 20..2020u64 {
            request!("READ", id, false).in_scope(|| {});
        }
    });
    let trees = t.stats().trees;
    // 10 forced by rate 1, then ~1000 of 2000 at rate 0.5 (binomial: 6 sigma ≈ 135).
    assert!((10 + 865..=10 + 1135).contains(&trees), "{trees}");
}

#[test]
fn fields_records_and_events_are_annotations() {
    let t = tracer(TracerConfig::default());
    with(&t, || {
        let _r = request!("READ", 9u64, true, group = 2u64, key = "abc").entered();
        let s = tracing::info_span!("eblob.read", size = tracing::field::Empty, name = "x");
        let _e = s.enter();
        s.record("size", 4096u64);
        tracing::warn!(retry = 1u64, "slow disk");
    });
    let tree = t.get(9).expect("tree");
    assert_eq!(tree.annotations["group"], 2);
    assert_eq!(tree.annotations["key"], "abc");
    assert_eq!(tree.annotations["cmd"], "READ");
    let read = &tree.actions[0].actions[0];
    assert_eq!(read.annotations["size"], 4096);
    // A field named like a structural key cannot overwrite the structure.
    assert_eq!(read.name, "eblob.read");
    assert_eq!(read.annotations["field.name"], "x");
    let events = read.annotations["events"].as_array().expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["message"], "slow disk");
    assert_eq!(events[0]["retry"], 1);
    assert_eq!(events[0]["level"], "WARN");
}

#[test]
fn trees_past_the_node_limit_are_truncated() {
    let t = tracer(TracerConfig {
        max_nodes: 5,
        ..Default::default()
    });
    with(&t, || {
        let _r = request!("BULK", 3u64, true).entered();
        for _ in 0..10 {
            let _a = action!("item").entered();
            action!("inner").in_scope(|| {});
        }
    });
    let tree = t.get(3).expect("tree");
    assert!(tree.truncated);
    fn count(a: &ReactAction) -> usize {
        1 + a.actions.iter().map(count).sum::<usize>()
    }
    assert_eq!(count(&tree.actions[0]), 5);
    assert_eq!(t.stats().truncated, 1);
}

#[test]
fn a_tree_older_than_the_maximum_age_is_published_as_expired() {
    // Each clock reading is 10 µs: the root starts at 0, the first step runs 10..20, the
    // second would start at 30, past the 25 µs age: the tree is cut there and published.
    let t = tracer(TracerConfig {
        max_tree_age: Duration::from_micros(25),
        ..Default::default()
    });
    with(&t, || {
        let _r = request!("SLOW", 4u64, true).entered();
        for _ in 0..4 {
            action!("step").in_scope(|| {});
        }
    });
    let tree = t.get(4).expect("tree");
    assert!(tree.expired && !tree.complete && !tree.truncated);
    let root = &tree.actions[0];
    assert_eq!((root.start_time, root.stop_time), (0, 30));
    assert_eq!(names(root), ["step"]);
    assert_eq!(
        (root.actions[0].start_time, root.actions[0].stop_time),
        (10, 20)
    );
    let s = t.stats();
    assert_eq!((s.trees, s.expired, s.active), (1, 1, 0));
    // The cut root has no meaningful duration; its finished child does.
    assert!(!s.actions.contains_key("SLOW"));
    assert_eq!(s.actions["step"].count, 1);
    assert_eq!(
        t.recent(10).len(),
        1,
        "the late root close publishes nothing more"
    );
}

/// A clock the test sets by hand.
#[derive(Debug, Default)]
struct Manual(AtomicU64);

impl Clock for Manual {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn unix_us(&self) -> u64 {
        1_700_000_000_000_000
    }
}

#[test]
fn a_hung_request_is_published_by_the_reader_once_too_old() {
    let clock = Arc::new(Manual::default());
    let t = Tracer::new(TracerConfig {
        max_tree_age: Duration::from_millis(5),
        clock: clock.clone(),
        ..Default::default()
    })
    .unwrap();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(t.layer()));
    // The request stays open (a hung engine call) while the reader looks.
    let root = tracing::dispatcher::with_default(&dispatch, || {
        let root = request!("READ", 21u64, true);
        root.in_scope(|| {
            clock.0.store(1_000_000, Ordering::SeqCst);
            let _a = action!("eblob.read").entered();
            clock.0.store(2_000_000, Ordering::SeqCst);
            action!("wait").in_scope(|| clock.0.store(3_000_000, Ordering::SeqCst));
        });
        root
    });
    clock.0.store(5_000_000, Ordering::SeqCst);
    assert!(t.get(21).is_none(), "exactly the age is not past it");
    assert_eq!(t.stats().active, 1);
    clock.0.store(7_000_000, Ordering::SeqCst);
    let tree = t.get(21).expect("published by the reader");
    assert!(tree.expired && !tree.complete);
    let read = &tree.actions[0].actions[0];
    assert_eq!((read.start_time, read.stop_time), (1_000, 3_000));
    assert_eq!(tree.actions[0].stop_time, 7_000);
    assert_eq!(t.stats().active, 0);
    tracing::dispatcher::with_default(&dispatch, || drop(root));
    assert_eq!(t.recent(10).len(), 1);
}

#[test]
fn the_ring_keeps_the_newest_trees_and_counts_the_dropped() {
    let t = tracer(TracerConfig {
        ring_capacity: 3,
        ..Default::default()
    });
    with(&t, || {
        for id in 1..=5u64 {
            request!("READ", id, true).in_scope(|| {});
        }
    });
    let ids: Vec<String> = t.recent(10).into_iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        ["0000000000000005", "0000000000000004", "0000000000000003"]
    );
    assert_eq!(t.dropped(), 2);
    assert!(t.get(1).is_none());
    assert_eq!(t.recent(1).len(), 1);
}

#[test]
fn a_zero_trace_id_means_none_and_each_tree_gets_its_own() {
    let t = tracer(TracerConfig::default());
    with(&t, || {
        for _ in 0..3 {
            request!("READ", 0u64, true).in_scope(|| {});
        }
    });
    let mut ids: Vec<String> = t.recent(10).into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&"0000000000000000".to_owned()), "{ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct ids");
}

#[test]
fn json_output_matches_the_react_format() {
    let t = tracer(TracerConfig::default());
    with(&t, || {
        let _r = request!("READ", 0xabcu64, true).entered();
        let _a = action!("cache.lookup", hit = false).entered();
    });
    let json = t.get(0xabc).expect("tree").to_json();
    let want = r#"{"id":"0000000000000abc","complete":true,"truncated":false,"actions":[{"name":"READ","start_time":0,"stop_time":30,"actions":[{"name":"cache.lookup","start_time":10,"stop_time":20,"hit":false}]}],"cmd":"READ","start_unix_us":1700000000000000,"trace_id":2748}"#;
    assert_eq!(json, want);
    // And it parses back into the same tree.
    let back: react_trace::ReactTree = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, t.get(0xabc).expect("tree"));
}

#[test]
fn children_from_concurrent_threads_land_under_their_parent() {
    let t = tracer(TracerConfig::default());
    with(&t, || {
        let root = request!("BULK_READ", 5u64, true);
        let _r = root.enter();
        let parent = tracing::info_span!("fan_out");
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        std::thread::scope(|s| {
            for i in 0..8u64 {
                let parent = parent.clone();
                let dispatch = dispatch.clone();
                s.spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        parent.in_scope(|| {
                            let _a = action!("part", i).entered();
                            action!("eblob.read").in_scope(|| {});
                        });
                    })
                });
            }
        });
    });
    let tree = t.get(5).expect("tree");
    assert!(tree.complete);
    let fan = &tree.actions[0].actions[0];
    assert_eq!(fan.name, "fan_out");
    assert_eq!(fan.actions.len(), 8);
    let mut seen: Vec<u64> = fan
        .actions
        .iter()
        .map(|a| {
            assert_eq!(names(a), ["eblob.read"]);
            a.annotations["i"].as_u64().expect("i")
        })
        .collect();
    for w in fan.actions.windows(2) {
        assert!(w[0].start_time <= w[1].start_time, "start order");
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
}

#[test]
fn statistics_aggregate_durations_per_action() {
    let t = tracer(TracerConfig::default());
    with(&t, || {
        for id in 0..100u64 {
            let _r = request!("READ", id, true).entered();
            // Each span takes `1 + extra` clock readings of 10 µs inside it.
            let _a = action!("disk").entered();
            for _ in 0..(id % 10) {
                action!("tick").in_scope(|| {});
            }
        }
    });
    let s = t.stats();
    assert_eq!(s.trees, 100);
    let disk = &s.actions["disk"];
    assert_eq!(disk.count, 100);
    // disk lasts 10 µs + 20 µs per tick, ticks 0..=9 evenly: 10..=190 µs.
    assert_eq!(disk.min_us, 10);
    assert_eq!(disk.max_us, 190);
    assert_eq!(disk.mean_us, 100);
    assert!(
        (90..=90 * 9 / 8 + 1).contains(&disk.p50_us),
        "{}",
        disk.p50_us
    );
    assert!((170..=190).contains(&disk.p90_us), "{}", disk.p90_us);
    assert_eq!(disk.p99_us, 190);
    assert_eq!(s.actions["tick"].count, 450);
    assert_eq!(s.actions["READ"].count, 100);
    let json = serde_json::to_value(&s).expect("serde");
    assert_eq!(json["actions"]["disk"]["count"], 100);
}

#[test]
fn a_fmt_layer_with_env_filter_keeps_logging_beside_it() {
    use std::io::Write;
    use tracing_subscriber::Layer;

    #[derive(Clone, Default)]
    struct Buf(Arc<parking_lot::Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    fn subscriber2(t: &Tracer, buf: &Buf) -> impl tracing::Subscriber + Send + Sync {
        let writer = buf.clone();
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_filter(tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::registry().with(t.layer()).with(fmt)
    }
    let buf = Buf::default();
    let t = tracer(TracerConfig::default());
    let subscriber = subscriber2(&t, &buf);
    tracing::subscriber::with_default(subscriber, || {
        let _r = request!("READ", 11u64, true).entered();
        let _s = tracing::info_span!("work").entered();
        tracing::info!("logged while traced");
        tracing::debug!("filtered out by the env filter");
    });
    tracing::subscriber::with_default(subscriber2(&t, &buf), || {
        let _r = request!("READ", 12u64, false).entered();
        let _s = tracing::info_span!("untraced_work").entered();
        tracing::info!("logged while not traced");
    });
    let out = String::from_utf8(buf.0.lock().clone()).expect("utf8");
    assert!(out.contains("logged while traced"), "{out}");
    // Unsampled requests log too, with their ordinary spans as context (`UnsampledSpans::Keep`).
    let line = out
        .lines()
        .find(|l| l.contains("logged while not traced"))
        .expect("logged");
    assert!(line.contains("untraced_work"), "{line}");
    assert!(t.get(12).is_none());
    assert!(!out.contains("filtered out"), "{out}");
    assert_eq!(names(&t.get(11).expect("tree").actions[0]), ["work"]);
}

#[test]
fn trees_are_found_by_a_root_field_when_nodes_share_a_tracer() {
    let t = tracer(TracerConfig::default());
    with(&t, || {
        // One request crossing two nodes of one process: same id, one tree each.
        request!("READ", 42u64, true, node = "a").in_scope(|| {});
        request!("READ", 42u64, true, node = "b").in_scope(|| {});
        request!("WRITE", 43u64, true, node = "a").in_scope(|| {});
    });
    let on_a: Vec<String> = t
        .recent_where(10, ("node", "a"))
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        on_a,
        ["000000000000002b", "000000000000002a"],
        "newest first"
    );
    assert_eq!(t.recent_where(1, ("node", "a")).len(), 1, "limit holds");
    assert!(t.recent_where(10, ("node", "c")).is_empty());
    let b = t.get_where(42, Some(("node", "b"))).expect("b's tree");
    assert_eq!(b.annotations["node"], "b");
    let a = t.get_where(42, Some(("node", "a"))).expect("a's tree");
    assert_eq!(a.annotations["node"], "a");
    assert!(t.get_where(43, Some(("node", "b"))).is_none());
    assert_eq!(t.get(42).expect("any").id, "000000000000002a");
}
