//! Trees across async tasks and blocking threads, with the tracer installed as the global
//! subscriber (as the node does), on a multi-threaded tokio runtime.

use std::sync::OnceLock;

use react_trace::{action, request, ReactAction, Tracer, TracerConfig};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

fn tracer() -> &'static Tracer {
    static T: OnceLock<Tracer> = OnceLock::new();
    T.get_or_init(|| {
        let t = Tracer::new(TracerConfig::default()).expect("default config is valid");
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(t.layer()))
            .expect("first global subscriber");
        t
    })
}

fn names(a: &ReactAction) -> Vec<&str> {
    a.actions.iter().map(|c| c.name.as_str()).collect()
}

async fn handle(id: u64) {
    let root = request!("WRITE", id, true);
    async {
        action!("recv").in_scope(|| {});
        // A child task that hops threads at its await points.
        let cache = tokio::spawn(
            async {
                tokio::task::yield_now().await;
                action!("cache.insert").in_scope(|| {});
            }
            .instrument(tracing::info_span!("cache")),
        );
        // Engine work on a blocking thread under an explicit span.
        let span = tracing::info_span!("eblob.write");
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| action!("fsync").in_scope(|| {}));
        })
        .await
        .expect("blocking");
        cache.await.expect("task");
        action!("reply").in_scope(|| {});
    }
    .instrument(root)
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn children_of_tasks_and_blocking_threads_land_under_the_right_parent() {
    let t = tracer();
    let handles: Vec<_> = (100..132u64).map(|id| tokio::spawn(handle(id))).collect();
    for h in handles {
        h.await.expect("request");
    }
    for id in 100..132u64 {
        let tree = t.get(id).expect("every forced request is recorded");
        assert!(tree.complete, "{id}");
        let root = &tree.actions[0];
        assert_eq!(root.name, "WRITE");
        // `cache` is created before `eblob.write`; both start before `reply`.
        assert_eq!(
            names(root),
            ["recv", "cache", "eblob.write", "reply"],
            "{id}"
        );
        assert_eq!(names(&root.actions[1]), ["cache.insert"]);
        assert_eq!(names(&root.actions[2]), ["fsync"]);
    }
    // Nothing leaks into the next, unsampled request on any worker.
    tokio::spawn(
        async {
            assert!(!react_trace::is_sampled());
            assert!(action!("x").is_disabled());
        }
        .instrument(request!("READ", 1u64, false)),
    )
    .await
    .expect("task");
    assert!(t.get(1).is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn interleaved_children_of_one_task_keep_their_own_subtrees() {
    let t = tracer();
    let root = request!("BULK_READ", 200u64, true);
    let order = std::sync::Mutex::new(Vec::new());
    async {
        // Two children polled alternately on one thread: each await exits one span and
        // enters the other, so the thread-local stack must follow the polls exactly.
        let first = async {
            for _ in 0..3 {
                action!("a.step").in_scope(|| order.lock().unwrap().push('a'));
                tokio::task::yield_now().await;
            }
        }
        .instrument(tracing::info_span!("first"));
        let second = async {
            for _ in 0..3 {
                tokio::task::yield_now().await;
                action!("b.step").in_scope(|| order.lock().unwrap().push('b'));
            }
        }
        .instrument(tracing::info_span!("second"));
        tokio::join!(first, second);
        action!("merge").in_scope(|| {});
    }
    .instrument(root)
    .await;
    let tree = t.get(200).expect("tree");
    assert!(tree.complete);
    let root = &tree.actions[0];
    assert_eq!(names(root), ["first", "second", "merge"]);
    assert_eq!(names(&root.actions[0]), ["a.step"; 3]);
    assert_eq!(names(&root.actions[1]), ["b.step"; 3]);
    // The children really ran interleaved, yet each step landed under its own child.
    let order = order.into_inner().unwrap();
    let first_b = order.iter().position(|&c| c == 'b');
    let last_a = order.iter().rposition(|&c| c == 'a');
    assert!(first_b < last_a, "not interleaved: {order:?}");
    assert!(root.actions[0].stop_time <= root.actions[2].start_time);
}
