//! The data-sort plan: which backends sort in which hour of the day, and the hours in which
//! every replica of some key range would be sorting at once.
//!
//! Only `scheduled` backends have a known window; `auto`, `timed` and `none` are not placed on
//! the plan (their starts depend on load or on the last run). A conflict means: in that hour,
//! every group has a sorting backend and the ring ranges of those backends share some keys, so
//! those keys have no replica outside data-sort.

use crate::model::{BackendRow, ClusterModel};

/// Hours (UTC) in which a window `time_hour ± splay_hours` is open.
pub fn window_hours(time_hour: u8, splay_hours: u8) -> [bool; 24] {
    let mut hours = [false; 24];
    let centre = i32::from(time_hour);
    let splay = i32::from(splay_hours);
    let (from, to) = if splay == 0 {
        (centre, centre + 1)
    } else {
        (centre - splay, centre + splay)
    };
    for h in from..to {
        if let Some(slot) = hours.get_mut(h.rem_euclid(24) as usize) {
            *slot = true;
        }
    }
    hours
}

/// The hours a backend sorts in, if it has a window.
pub fn backend_hours(b: &BackendRow) -> Option<[bool; 24]> {
    (b.defrag.mode == "scheduled").then(|| {
        let (hour, splay) = b.defrag.window.unwrap_or((0, 0));
        window_hours(hour, splay)
    })
}

/// An hour in which some keys have every replica sorting.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// Hour of day, UTC.
    pub hour: u8,
    /// Share of the ring (0.0 to 1.0) whose replicas are all sorting.
    pub share: f64,
}

/// Half-open intervals `[start, end)` on the 64-bit ring prefix; the last may end at 2^64.
type Intervals = Vec<(u128, u128)>;

const RING: u128 = 1u128 << 64;

/// The ring intervals owned by `(node, backend)` in `group`.
fn owned(model: &ClusterModel, group: u32, node: &str, backend: u32) -> Intervals {
    let Some(ring) = model.rings.iter().find(|r| r.group == group) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let n = ring.ranges.len();
    for (i, r) in ring.ranges.iter().enumerate() {
        if r.node != node || r.backend != backend {
            continue;
        }
        let start = u128::from(r.start);
        let next = ring
            .ranges
            .get((i + 1) % n)
            .map_or(start, |x| u128::from(x.start));
        if n == 1 {
            out.push((0, RING));
        } else if next > start {
            out.push((start, next));
        } else {
            // The last range wraps: [start, 2^64) and [0, first).
            out.push((start, RING));
            out.push((0, next));
        }
    }
    out
}

fn normalise(mut v: Intervals) -> Intervals {
    v.sort_unstable();
    let mut out: Intervals = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn intersect(a: &Intervals, b: &Intervals) -> Intervals {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while let (Some(&(s1, e1)), Some(&(s2, e2))) = (a.get(i), b.get(j)) {
        let (s, e) = (s1.max(s2), e1.min(e2));
        if s < e {
            out.push((s, e));
        }
        if e1 < e2 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Hours in which every replica of some keys sorts at once.
pub fn conflicts(model: &ClusterModel) -> Vec<Conflict> {
    let groups = model.groups();
    if groups.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for hour in 0..24u8 {
        let mut common: Option<Intervals> = None;
        for &g in &groups {
            let sorting: Intervals = model
                .backends()
                .filter(|b| b.group == g && backend_hours(b).is_some_and(|h| h[usize::from(hour)]))
                .flat_map(|b| owned(model, g, &b.node, b.id))
                .collect();
            let sorting = normalise(sorting);
            common = Some(match common {
                None => sorting,
                Some(c) => intersect(&c, &sorting),
            });
            if common.as_ref().is_some_and(Vec::is_empty) {
                break;
            }
        }
        let share: u128 = common.unwrap_or_default().iter().map(|(s, e)| e - s).sum();
        if share > 0 {
            out.push(Conflict {
                hour,
                share: share as f64 / RING as f64,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DefragRow, GroupRing, NodeModel, RingRange};

    fn backend(node: &str, id: u32, group: u32, window: Option<(u8, u8)>) -> BackendRow {
        BackendRow {
            node: node.into(),
            id,
            group,
            defrag: DefragRow {
                mode: if window.is_some() {
                    "scheduled".into()
                } else {
                    "auto".into()
                },
                window,
                ..DefragRow::default()
            },
            ..BackendRow::default()
        }
    }

    fn range(start: u64, node: &str, backend: u32) -> RingRange {
        RingRange {
            start,
            node: node.into(),
            backend,
            up: true,
            share: 0.0,
        }
    }

    /// Two groups; group 1 split in halves between a/1 and b/1; group 2 wholly on c/1.
    fn model(
        win_a: Option<(u8, u8)>,
        win_b: Option<(u8, u8)>,
        win_c: Option<(u8, u8)>,
    ) -> ClusterModel {
        ClusterModel {
            nodes: vec![
                NodeModel {
                    addr: "a".into(),
                    up: true,
                    backends: vec![backend("a", 1, 1, win_a)],
                    ..NodeModel::default()
                },
                NodeModel {
                    addr: "b".into(),
                    up: true,
                    backends: vec![backend("b", 1, 1, win_b)],
                    ..NodeModel::default()
                },
                NodeModel {
                    addr: "c".into(),
                    up: true,
                    backends: vec![backend("c", 1, 2, win_c)],
                    ..NodeModel::default()
                },
            ],
            rings: vec![
                GroupRing {
                    group: 1,
                    ranges: vec![range(0, "a", 1), range(1 << 63, "b", 1)],
                },
                GroupRing {
                    group: 2,
                    ranges: vec![range(5, "c", 1)],
                },
            ],
            ..ClusterModel::default()
        }
    }

    #[test]
    fn window_hours_wrap_around_midnight() {
        let h = window_hours(1, 2);
        let open: Vec<usize> = (0..24).filter(|&i| h[i]).collect();
        assert_eq!(open, vec![0, 1, 2, 23]);
        assert_eq!(
            (0..24)
                .filter(|&i| window_hours(5, 0)[i])
                .collect::<Vec<_>>(),
            vec![5]
        );
    }

    #[test]
    fn disjoint_windows_have_no_conflict() {
        let m = model(Some((3, 1)), Some((3, 1)), Some((10, 1)));
        assert!(conflicts(&m).is_empty());
    }

    #[test]
    fn overlapping_windows_conflict_on_the_shared_share() {
        // a sorts 02-04, c sorts 03-05: at 03, keys of a's half have both replicas sorting.
        let m = model(Some((3, 1)), None, Some((4, 1)));
        let c = conflicts(&m);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].hour, 3);
        assert!((c[0].share - 0.5).abs() < 1e-9, "{:?}", c);
    }

    #[test]
    fn wrapping_last_range_is_counted() {
        // Group 2 is c/1 from id 5 around to 5 (one range: the whole ring).
        let m = model(Some((3, 0)), Some((3, 0)), Some((3, 0)));
        let c = conflicts(&m);
        assert_eq!(c.len(), 1);
        assert!((c[0].share - 1.0).abs() < 1e-9);
    }

    #[test]
    fn backends_without_windows_are_not_on_the_plan() {
        let m = model(None, None, None);
        assert!(conflicts(&m).is_empty());
    }
}
