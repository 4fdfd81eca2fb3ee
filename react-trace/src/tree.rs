//! Call trees: the one being recorded (behind a mutex, appended to by the layer) and the
//! finished one kept in the ring, plus its React JSON form.
//!
//! Not the layer and not sampling. Invariants: nodes are appended in start order (each start
//! time is taken under the tree's lock), so a node's children, listed in index order, are in
//! start order; a node's parent always has a smaller index; a node holds at most
//! `max_annotations` annotations (fields and events; a field recorded again replaces its value)
//! and a string value at most `MAX_VALUE_BYTES`; a finished tree is immutable and turned into
//! JSON only when someone asks for it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Keys the React format uses itself; an annotation with one of these names is renamed
/// `field.<name>` so it cannot overwrite the structure.
const RESERVED: [&str; 9] = [
    "id",
    "complete",
    "truncated",
    "expired",
    "dropped_annotations",
    "actions",
    "name",
    "start_time",
    "stop_time",
];

/// Longest string annotation kept, in bytes; longer ones are cut at a char boundary and end
/// with `…`. One runaway `Debug` field must not blow up a tree.
pub(crate) const MAX_VALUE_BYTES: usize = 1024;

/// Key under which a node's events are listed.
pub(crate) const EVENTS_KEY: &str = "events";

/// A recorded action (one span).
#[derive(Clone, Debug)]
pub(crate) struct NodeRec {
    pub name: &'static str,
    pub parent: Option<u32>,
    /// 0 for the root; bounded by `max_depth` so the JSON nests less deeply than
    /// `serde_json`'s default recursion limit (128) and readers can parse it back.
    pub depth: u32,
    pub start_ns: u64,
    pub stop_ns: Option<u64>,
    /// Field names are `&'static str` in `tracing`, so keys cost no allocation.
    pub annotations: Vec<(&'static str, Value)>,
    /// Annotations refused because the node already held `max_annotations`.
    pub dropped_annotations: u32,
}

impl NodeRec {
    /// Add an annotation: a field recorded again replaces its value (so a loop calling
    /// `span.record` cannot grow the node); events append. Past `cap` entries the annotation
    /// is counted in `dropped_annotations` instead.
    pub(crate) fn annotate(&mut self, key: &'static str, value: Value, cap: usize) {
        if key != EVENTS_KEY {
            if let Some(slot) = self.annotations.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value;
                return;
            }
        }
        if self.annotations.len() < cap {
            self.annotations.push((key, value));
        } else {
            self.dropped_annotations = self.dropped_annotations.saturating_add(1);
        }
    }
}

/// A string annotation, cut to [`MAX_VALUE_BYTES`].
pub(crate) fn bounded_string(mut s: String) -> Value {
    if s.len() > MAX_VALUE_BYTES {
        let mut cut = MAX_VALUE_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    Value::String(s)
}

/// A tree being recorded.
#[derive(Debug)]
pub(crate) struct Building {
    /// Key of this tree in the tracer's table of trees being recorded.
    pub seq: u64,
    pub trace_id: u64,
    pub root_name: String,
    pub start_unix_us: u64,
    pub nodes: Vec<NodeRec>,
    pub truncated: bool,
    pub finished: bool,
}

impl Building {
    /// Monotonic start of the root, the origin of every time in the tree.
    pub(crate) fn root_start_ns(&self) -> u64 {
        self.nodes.first().map_or(0, |n| n.start_ns)
    }
}

/// A finished tree as kept in the ring: raw nodes, not yet JSON.
#[derive(Clone, Debug)]
pub(crate) struct Finished {
    pub trace_id: u64,
    pub root_name: String,
    pub start_unix_us: u64,
    pub nodes: Vec<NodeRec>,
    pub truncated: bool,
    pub complete: bool,
    /// Published because it outlived `max_tree_age`, not because its root closed.
    pub expired: bool,
}

/// A call tree in the React JSON format.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReactTree {
    /// Trace id (16 hex digits), the request's trace id.
    pub id: String,
    /// Every action stopped before the root did.
    pub complete: bool,
    /// Some actions were not recorded (node or depth limit).
    #[serde(default)]
    pub truncated: bool,
    /// The tree outlived the tracer's maximum tree age and was published before its root
    /// closed (then also not `complete`): a hung request still shows up.
    #[serde(default, skip_serializing_if = "is_false")]
    pub expired: bool,
    /// The root action (one element) with its subtree.
    pub actions: Vec<ReactAction>,
    /// The root span's fields, plus `start_unix_us`.
    #[serde(flatten)]
    pub annotations: BTreeMap<String, Value>,
}

/// One action of a [`ReactTree`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReactAction {
    /// Span name (for the root: its `cmd` field when present).
    pub name: String,
    /// Microseconds from the root's start.
    pub start_time: u64,
    /// Microseconds from the root's start; equal to the root's stop for an action that had
    /// not stopped when the root did (the tree is then not `complete`).
    pub stop_time: u64,
    /// Children in start order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ReactAction>,
    /// The span's fields and the events recorded on it.
    #[serde(flatten)]
    pub annotations: BTreeMap<String, Value>,
}

impl ReactTree {
    /// Duration of the root action in microseconds.
    pub fn duration_us(&self) -> u64 {
        self.actions
            .first()
            .map_or(0, |a| a.stop_time.saturating_sub(a.start_time))
    }

    /// Compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn annotation_map(node: &NodeRec) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for (k, v) in &node.annotations {
        let key = if RESERVED.contains(k) {
            format!("field.{k}")
        } else {
            (*k).to_owned()
        };
        // Events accumulate under "events"; a field recorded twice keeps its last value.
        if key == "events" {
            if let Value::Array(list) = map.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                list.push(v.clone());
            }
        } else {
            map.insert(key, v.clone());
        }
    }
    if node.dropped_annotations > 0 {
        map.insert(
            "dropped_annotations".into(),
            Value::from(node.dropped_annotations),
        );
    }
    map
}

impl Finished {
    /// Whether the root span recorded the string field `name = value`.
    pub(crate) fn root_field_is(&self, (name, value): (&str, &str)) -> bool {
        self.nodes.first().is_some_and(|root| {
            root.annotations
                .iter()
                .any(|(k, v)| *k == name && v.as_str() == Some(value))
        })
    }

    /// Build the React JSON tree (off the hot path: called by readers of the ring).
    pub(crate) fn to_react(&self) -> ReactTree {
        let root_start = self.nodes.first().map_or(0, |n| n.start_ns);
        let root_stop = self
            .nodes
            .first()
            .and_then(|n| n.stop_ns)
            .unwrap_or(root_start);
        let rel_us = |ns: u64| ns.saturating_sub(root_start) / 1_000;
        let mut children: Vec<Vec<u32>> = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(p) = n.parent {
                if let Some(c) = children.get_mut(p as usize) {
                    c.push(i as u32);
                }
            }
        }
        // Build bottom-up: a parent's index is smaller than its children's.
        let mut built: Vec<Option<ReactAction>> = vec![None; self.nodes.len()];
        for i in (0..self.nodes.len()).rev() {
            let n = &self.nodes[i];
            let actions = children[i]
                .iter()
                .filter_map(|&c| built.get_mut(c as usize).and_then(Option::take))
                .collect();
            built[i] = Some(ReactAction {
                name: n.name.to_owned(),
                start_time: rel_us(n.start_ns),
                stop_time: rel_us(n.stop_ns.unwrap_or(root_stop)),
                actions,
                annotations: annotation_map(n),
            });
        }
        let mut root = built.first_mut().and_then(Option::take).unwrap_or_default();
        root.name.clone_from(&self.root_name);
        // The root's fields describe the request: they go on the tree, not the action.
        let mut annotations = std::mem::take(&mut root.annotations);
        annotations.insert("start_unix_us".into(), Value::from(self.start_unix_us));
        ReactTree {
            id: format!("{:016x}", self.trace_id),
            complete: self.complete,
            truncated: self.truncated,
            expired: self.expired,
            actions: vec![root],
            annotations,
        }
    }
}
