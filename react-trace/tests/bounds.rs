//! Every bound of the tracer, the typed errors for bad settings, and the thread-local
//! bookkeeping in awkward orders (out-of-order exits, nested requests, explicit parents).

use std::sync::Arc;

use react_trace::{
    action, is_sampled, request, ConfigError, ReactAction, Tracer, TracerConfig, UnsampledSpans,
    OTHER_ACTIONS,
};
use tracing_subscriber::layer::SubscriberExt;

fn tracer(cfg: TracerConfig) -> Tracer {
    Tracer::new(cfg).expect("valid config")
}

fn with<T>(t: &Tracer, f: impl FnOnce() -> T) -> T {
    tracing::subscriber::with_default(tracing_subscriber::registry().with(t.layer()), f)
}

fn names(a: &ReactAction) -> Vec<&str> {
    a.actions.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn bad_settings_are_refused_with_the_field_named() {
    for rate in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
        let err = Tracer::new(TracerConfig {
            sampling_rate: rate,
            ..Default::default()
        })
        .expect_err("bad rate");
        assert!(matches!(err, ConfigError::SamplingRate(_)), "{err}");
    }
    let err = Tracer::new(TracerConfig {
        max_nodes: 0,
        ..Default::default()
    })
    .expect_err("zero nodes");
    assert_eq!(
        err,
        ConfigError::OutOfRange {
            field: "max_nodes",
            value: 0,
            min: 1,
            max: 1_000_000
        }
    );
    assert!(err.to_string().contains("max_nodes"));
    let err = Tracer::new(TracerConfig {
        max_depth: 200,
        ..Default::default()
    })
    .expect_err("too deep for serde_json");
    assert!(matches!(
        err,
        ConfigError::OutOfRange {
            field: "max_depth",
            ..
        }
    ));

    let t = tracer(TracerConfig::default());
    assert_eq!(
        t.set_sampling_rate(f64::NAN).map_err(|e| e.to_string()),
        Err("sampling rate NaN is not a number within 0.0..=1.0".to_owned())
    );
    assert_eq!(t.sampling_rate(), 0.0, "a refused rate changes nothing");
    t.set_sampling_rate(1.0).unwrap();
    assert_eq!(t.sampling_rate(), 1.0);
}

#[test]
fn annotations_per_action_are_bounded_and_rerecorded_fields_replace() {
    let t = tracer(TracerConfig {
        max_annotations: 4,
        ..Default::default()
    });
    with(&t, || {
        let _r = request!("READ", 1u64, true).entered();
        let s = tracing::info_span!("loop", progress = 0u64, note = tracing::field::Empty);
        let _e = s.enter();
        for i in 0..1000u64 {
            s.record("progress", i);
        }
        s.record("note", "x".repeat(5000).as_str());
        for i in 0..10u64 {
            tracing::info!(i, "tick");
        }
    });
    let tree = t.get(1).expect("tree");
    let a = &tree.actions[0].actions[0];
    assert_eq!(a.annotations["progress"], 999, "last value wins, one slot");
    let note = a.annotations["note"].as_str().expect("string");
    assert!(note.len() <= 1024 + '…'.len_utf8() && note.ends_with('…'));
    // 2 fields + 2 events fit in 4 slots; 8 events are counted, not kept.
    assert_eq!(a.annotations["events"].as_array().expect("events").len(), 2);
    assert_eq!(a.annotations["dropped_annotations"], 8);
}

#[test]
fn a_field_named_events_does_not_pose_as_an_event() {
    let t = tracer(TracerConfig::default());
    with(&t, || {
        let _r = request!("READ", 2u64, true).entered();
        let _s = tracing::info_span!("s", events = 3u64).entered();
        tracing::info!("real");
    });
    let tree = t.get(2).expect("tree");
    let a = &tree.actions[0].actions[0];
    assert_eq!(a.annotations["field.events"], 3);
    assert_eq!(a.annotations["events"].as_array().expect("events").len(), 1);
}

#[test]
fn actions_deeper_than_the_maximum_depth_are_cut_and_the_json_parses_back() {
    fn nest(levels: u32) {
        if levels > 0 {
            action!("level").in_scope(|| nest(levels - 1));
        }
    }
    let t = tracer(TracerConfig {
        max_depth: 40,
        ..Default::default()
    });
    with(&t, || request!("DEEP", 3u64, true).in_scope(|| nest(100)));
    let tree = t.get(3).expect("tree");
    assert!(tree.truncated);
    let mut depth = 0;
    let mut a = &tree.actions[0];
    while let Some(c) = a.actions.first() {
        depth += 1;
        a = c;
    }
    assert_eq!(depth, 40);
    // serde_json refuses input nested deeper than 128: the bound keeps trees readable.
    let back: react_trace::ReactTree = serde_json::from_str(&tree.to_json()).expect("parses");
    assert_eq!(back, tree);
    assert_eq!(t.stats().truncated, 1);
}

#[test]
fn statistics_keep_a_bounded_number_of_names() {
    let t = tracer(TracerConfig {
        max_stat_actions: 3,
        ..Default::default()
    });
    with(&t, || {
        // Root names come from the request, so they are as many as the requests say.
        for (i, cmd) in ["A", "B", "C", "D", "E"].into_iter().enumerate() {
            request!(cmd, i as u64, true).in_scope(|| {});
        }
        request!("A", 9u64, true).in_scope(|| {});
    });
    let s = t.stats();
    let keys: Vec<&str> = s.actions.keys().map(String::as_str).collect();
    assert_eq!(keys, [OTHER_ACTIONS, "A", "B"]);
    assert_eq!(s.actions["A"].count, 2);
    assert_eq!(s.actions[OTHER_ACTIONS].count, 3);
    t.reset_stats();
    assert!(t.stats().actions.is_empty());
}

#[test]
fn roots_past_the_active_tree_limit_are_not_sampled_and_counted() {
    let t = tracer(TracerConfig {
        max_active_trees: 2,
        ..Default::default()
    });
    with(&t, || {
        let a = request!("A", 1u64, true);
        let b = request!("B", 2u64, true);
        let c = request!("C", 3u64, true);
        c.in_scope(|| assert!(!is_sampled(), "over the limit"));
        assert_eq!(t.stats().active, 2);
        drop((a, b, c));
        request!("D", 4u64, true).in_scope(|| assert!(is_sampled(), "room again"));
    });
    let s = t.stats();
    assert_eq!((s.skipped, s.trees, s.active), (1, 3, 0));
    assert!(t.get(3).is_none() && t.get(4).is_some());
}

#[test]
fn a_guard_exited_out_of_order_leaves_the_stack_consistent() {
    let t = tracer(TracerConfig::default());
    with(&t, || {
        let root = request!("READ", 5u64, true);
        let root_guard = root.enter();
        let a = action!("a");
        let a_guard = a.enter();
        let b = tracing::info_span!("b");
        let b_guard = b.enter();
        // `a` is exited before `b`: a guard dropped late, as code sometimes does.
        drop(a_guard);
        assert!(is_sampled());
        action!("under_b").in_scope(|| {});
        drop(b_guard);
        drop(root_guard);
        assert!(!is_sampled(), "nothing tracked is entered any more");
        assert!(action!("outside").is_disabled());
    });
    let tree = t.get(5).expect("tree");
    let root = &tree.actions[0];
    assert_eq!(names(root), ["a"]);
    assert_eq!(names(&root.actions[0]), ["b"]);
    assert_eq!(names(&root.actions[0].actions[0]), ["under_b"]);
}

#[test]
fn an_unsampled_request_nested_in_a_sampled_one_records_nothing_of_its_own() {
    let t = tracer(TracerConfig::default());
    with(&t, || {
        let _outer = request!("OUTER", 6u64, true).entered();
        action!("before").in_scope(|| {});
        request!("INNER", 7u64, false).in_scope(|| {
            assert!(!is_sampled());
            assert!(action!("hidden").is_disabled());
        });
        assert!(is_sampled());
        action!("after").in_scope(|| {});
    });
    let tree = t.get(6).expect("outer");
    // A root is always a request of its own: neither it nor its actions join the outer tree.
    assert_eq!(names(&tree.actions[0]), ["before", "after"]);
    assert!(t.get(7).is_none());
}

#[test]
fn an_explicit_parent_places_an_ordinary_span_without_entering_it() {
    let t = tracer(TracerConfig::default());
    with(&t, || {
        let root = request!("WRITE", 8u64, true);
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let child = std::thread::scope(|s| {
            s.spawn(|| {
                tracing::dispatcher::with_default(&dispatch, || {
                    assert!(!is_sampled(), "nothing entered on this thread");
                    tracing::info_span!(parent: &root, "replica.send", group = 2u64)
                })
            })
            .join()
            .expect("thread")
        });
        drop(child);
        drop(root);
    });
    let tree = t.get(8).expect("tree");
    assert_eq!(names(&tree.actions[0]), ["replica.send"]);
    assert_eq!(tree.actions[0].actions[0].annotations["group"], 2);
}

#[test]
fn disabling_unsampled_spans_makes_ordinary_spans_free_and_still_records_sampled_ones() {
    let t = tracer(TracerConfig {
        unsampled_spans: UnsampledSpans::Disable,
        ..Default::default()
    });
    with(&t, || {
        request!("READ", 10u64, false).in_scope(|| {
            assert!(tracing::info_span!("cache.lookup").is_disabled());
        });
        assert!(tracing::info_span!("outside.any.request").is_disabled());
        request!("READ", 11u64, true).in_scope(|| {
            let s = tracing::info_span!("cache.lookup");
            assert!(!s.is_disabled());
            s.in_scope(|| tracing::info!("kept"));
        });
    });
    let tree = t.get(11).expect("tree");
    assert_eq!(names(&tree.actions[0]), ["cache.lookup"]);
    assert!(t.get(10).is_none());
}

#[test]
fn the_ring_bound_holds_under_many_concurrent_requests() {
    let t = Arc::new(tracer(TracerConfig {
        ring_capacity: 16,
        ..Default::default()
    }));
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(t.layer()));
    std::thread::scope(|s| {
        for th in 0..4u64 {
            let dispatch = dispatch.clone();
            s.spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for i in 0..250u64 {
                        request!("PUT", th * 1000 + i, true)
                            .in_scope(|| action!("write").in_scope(|| {}));
                    }
                })
            });
        }
    });
    let s = t.stats();
    assert_eq!(s.trees, 1000);
    assert_eq!(t.recent(usize::MAX).len(), 16);
    assert_eq!(t.dropped(), 1000 - 16);
    assert_eq!(s.actions["write"].count, 1000);
}

#[test]
fn decide_follows_the_trace_bit_and_the_rate_and_a_decided_root_is_recorded_once() {
    let t = tracer(TracerConfig::default());
    t.set_sampling_rate(0.0).unwrap();
    assert!(!t.decide(false), "rate 0 samples nothing");
    assert!(t.decide(true), "the trace bit always samples");
    t.set_sampling_rate(1.0).unwrap();
    assert!(t.decide(false), "rate 1 samples everything");
    // A caller that asked first creates the root with force: exactly one tree, no skip.
    t.set_sampling_rate(0.0).unwrap();
    with(&t, || {
        for id in [11u64, 12] {
            if t.decide(id == 11) {
                let root = request!("WRITE", id, true);
                let _e = root.enter();
                let _a = action!("eblob.write").entered();
            }
        }
    });
    assert_eq!(t.recent(10).len(), 1);
    let tree = t.get(11).expect("the forced request is traced");
    assert_eq!(names(&tree.actions[0]), ["eblob.write"]);
    assert!(t.get(12).is_none());
    // A rate of the caller's own, whatever the tracer's.
    assert!(t.decide_at(false, 1.0) && !t.decide_at(false, 0.0) && !t.decide_at(false, f64::NAN));
    assert!(t.decide_at(true, 0.0), "the trace bit still samples");
    let half = (0..10_000).filter(|_| t.decide_at(false, 0.5)).count();
    assert!((4_000..6_000).contains(&half), "about half at 0.5: {half}");
}
