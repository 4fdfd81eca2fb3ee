//! The route table: for each replica group, the sorted ring ids of its backends.
//!
//! Not networking: nodes and clients fill it from ROUTE_LIST replies and keep it current.
//! Invariants: each group's entries are sorted by (id, address, backend); a key belongs to the
//! entry with the largest id ≤ key, wrapping to the last entry when the key is below every id —
//! so each id owns `[id, next id)`. When two backends claim the same id, the one sorting last
//! (greatest node address, then backend id) owns the range and the other owns nothing: the
//! choice is the same on every node because it depends only on the table's contents.
//! `generation` grows with every change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// A backend as the ring sees it: the node serving it and its number on that node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackendAddr {
    /// The node's protocol address.
    pub node: SocketAddr,
    /// Backend id on that node.
    pub backend: u32,
}

impl std::fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.node, self.backend)
    }
}

/// One ring id of one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RouteEntry {
    /// Ring position.
    pub id: Id,
    /// Who owns `[id, next id)`.
    pub addr: BackendAddr,
}

/// The whole table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteTable {
    /// Incremented on every change.
    pub generation: u64,
    /// Per group, sorted entries.
    pub groups: BTreeMap<u32, Vec<RouteEntry>>,
}

/// One backend's share of its group's ring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// The backend.
    pub addr: BackendAddr,
    /// Fraction of the ring it owns (0..=1).
    pub fraction: f64,
    /// Ring ids it holds.
    pub ids: usize,
}

/// `2^64` as the ring's circumference at the resolution of `Id::prefix_u64`.
const RING: u128 = 1 << 64;

impl RouteTable {
    /// An empty table.
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// Set `addr`'s ids in `group` (replacing any it had anywhere).
    pub fn set_backend(&mut self, group: u32, addr: BackendAddr, ids: &[Id]) {
        self.remove_backend_quiet(addr);
        let entries = self.groups.entry(group).or_default();
        entries.extend(ids.iter().map(|&id| RouteEntry { id, addr }));
        entries.sort_unstable();
        entries.dedup();
        self.generation += 1;
    }

    fn remove_backend_quiet(&mut self, addr: BackendAddr) -> bool {
        let mut changed = false;
        for entries in self.groups.values_mut() {
            let before = entries.len();
            entries.retain(|e| e.addr != addr);
            changed |= entries.len() != before;
        }
        self.groups.retain(|_, e| !e.is_empty());
        changed
    }

    /// Drop every id of `addr`; true if it had any.
    pub fn remove_backend(&mut self, addr: BackendAddr) -> bool {
        let changed = self.remove_backend_quiet(addr);
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// Replace everything known about `node` by `backends` (group, backend, ids): what a node
    /// says about itself is authoritative.
    pub fn set_node(&mut self, node: SocketAddr, backends: &[(u32, u32, Vec<Id>)]) {
        let mut next = self.clone();
        for entries in next.groups.values_mut() {
            entries.retain(|e| e.addr.node != node);
        }
        for (group, backend, ids) in backends {
            let addr = BackendAddr {
                node,
                backend: *backend,
            };
            let entries = next.groups.entry(*group).or_default();
            entries.extend(ids.iter().map(|&id| RouteEntry { id, addr }));
        }
        next.groups.retain(|_, e| !e.is_empty());
        for entries in next.groups.values_mut() {
            entries.sort_unstable();
            entries.dedup();
        }
        if next.groups != self.groups {
            self.groups = next.groups;
            self.generation += 1;
        }
    }

    /// Drop every backend of `node`; true if it had any.
    pub fn remove_node(&mut self, node: SocketAddr) -> bool {
        let before = self.groups.clone();
        self.set_node(node, &[]);
        before != self.groups
    }

    /// The backend of `group` that owns `key`.
    pub fn owner(&self, group: u32, key: &Id) -> Option<BackendAddr> {
        let entries = self.groups.get(&group)?;
        let pp = entries.partition_point(|e| e.id <= *key);
        let i = if pp == 0 { entries.len() - 1 } else { pp - 1 };
        // Among equal ids the last entry wins; partition_point already lands on it.
        entries.get(i).map(|e| e.addr)
    }

    /// Group numbers, ascending.
    pub fn group_ids(&self) -> Vec<u32> {
        self.groups.keys().copied().collect()
    }

    /// Every node address in the table.
    pub fn nodes(&self) -> BTreeSet<SocketAddr> {
        self.groups
            .values()
            .flatten()
            .map(|e| e.addr.node)
            .collect()
    }

    /// The groups a node serves.
    pub fn groups_of(&self, node: SocketAddr) -> Vec<u32> {
        self.groups
            .iter()
            .filter(|(_, es)| es.iter().any(|e| e.addr.node == node))
            .map(|(g, _)| *g)
            .collect()
    }

    /// Ring ranges of `group`: `(start, end_exclusive_or_wrap, owner)` per owning entry, at
    /// the resolution of the ids' first 8 bytes. Entries that own nothing (duplicate ids) are
    /// left out.
    pub fn ranges(&self, group: u32) -> Vec<(u64, u128, BackendAddr)> {
        let Some(entries) = self.groups.get(&group) else {
            return Vec::new();
        };
        let n = entries.len();
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            // Only the last of a run of equal ids owns the range.
            if entries.get(i + 1).is_some_and(|next| next.id == e.id) {
                continue;
            }
            let next_distinct = (1..=n)
                .map(|k| &entries[(i + k) % n])
                .find(|x| x.id != e.id);
            let start = u128::from(e.id.prefix_u64());
            let len = match next_distinct {
                None => RING,
                Some(x) => {
                    let end = u128::from(x.id.prefix_u64());
                    (end + RING - start) % RING
                }
            };
            out.push((start as u64, len, e.addr));
        }
        out
    }

    /// Each backend's share of `group`'s ring, largest first.
    pub fn shares(&self, group: u32) -> Vec<Share> {
        let mut by: BTreeMap<BackendAddr, (u128, usize)> = BTreeMap::new();
        if let Some(entries) = self.groups.get(&group) {
            for e in entries {
                by.entry(e.addr).or_default().1 += 1;
            }
        }
        for (_, len, addr) in self.ranges(group) {
            by.entry(addr).or_default().0 += len;
        }
        let mut out: Vec<Share> = by
            .into_iter()
            .map(|(addr, (len, ids))| Share {
                addr,
                fraction: len as f64 / RING as f64,
                ids,
            })
            .collect();
        out.sort_by(|a, b| b.fraction.total_cmp(&a.fraction).then(a.addr.cmp(&b.addr)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(first: u8) -> Id {
        let mut b = [0u8; 64];
        b[0] = first;
        Id(b)
    }
    fn addr(port: u16, backend: u32) -> BackendAddr {
        BackendAddr {
            node: SocketAddr::from(([127, 0, 0, 1], port)),
            backend,
        }
    }

    #[test]
    fn largest_id_not_above_the_key_owns_it_and_below_the_smallest_wraps() {
        let mut t = RouteTable::new();
        t.set_backend(1, addr(1, 0), &[id(0x10), id(0x80)]);
        t.set_backend(1, addr(2, 0), &[id(0x40)]);
        assert_eq!(
            t.owner(1, &id(0x10)),
            Some(addr(1, 0)),
            "key equal to an id"
        );
        assert_eq!(t.owner(1, &id(0x3f)), Some(addr(1, 0)));
        assert_eq!(t.owner(1, &id(0x40)), Some(addr(2, 0)));
        assert_eq!(t.owner(1, &id(0x7f)), Some(addr(2, 0)));
        assert_eq!(t.owner(1, &id(0xff)), Some(addr(1, 0)));
        assert_eq!(
            t.owner(1, &id(0x05)),
            Some(addr(1, 0)),
            "wraps to the last id (0x80)"
        );
        assert_eq!(t.owner(1, &Id::ZERO), Some(addr(1, 0)));
        assert_eq!(t.owner(2, &id(0x05)), None, "empty group");
    }

    #[test]
    fn a_single_id_owns_everything() {
        let mut t = RouteTable::new();
        t.set_backend(3, addr(1, 7), &[id(0x99)]);
        for k in [Id::ZERO, id(0x99), Id::MAX, id(0x01)] {
            assert_eq!(t.owner(3, &k), Some(addr(1, 7)));
        }
        let s = t.shares(3);
        assert_eq!(s.len(), 1);
        assert!((s[0].fraction - 1.0).abs() < 1e-12);
    }

    #[test]
    fn equal_ids_have_a_deterministic_owner() {
        let mut a = RouteTable::new();
        a.set_backend(1, addr(2, 0), &[id(0x50)]);
        a.set_backend(1, addr(1, 0), &[id(0x50)]);
        let mut b = RouteTable::new();
        b.set_backend(1, addr(1, 0), &[id(0x50)]);
        b.set_backend(1, addr(2, 0), &[id(0x50)]);
        for k in [id(0x10), id(0x50), id(0xf0)] {
            assert_eq!(a.owner(1, &k), Some(addr(2, 0)), "greatest address wins");
            assert_eq!(b.owner(1, &k), Some(addr(2, 0)));
        }
        let shares = a.shares(1);
        assert_eq!(shares[0].addr, addr(2, 0));
        assert!((shares[0].fraction - 1.0).abs() < 1e-12);
        assert_eq!(shares[1].fraction, 0.0);
    }

    #[test]
    fn shares_sum_to_one() {
        let mut t = RouteTable::new();
        t.set_backend(1, addr(1, 0), &[id(0x00)]);
        t.set_backend(1, addr(2, 0), &[id(0x40)]);
        t.set_backend(1, addr(3, 0), &[id(0x80), id(0xc0)]);
        let s = t.shares(1);
        assert_eq!(s[0].addr, addr(3, 0));
        assert!((s[0].fraction - 0.5).abs() < 1e-12);
        let sum: f64 = s.iter().map(|x| x.fraction).sum();
        assert!((sum - 1.0).abs() < 1e-12);
    }

    #[test]
    fn set_node_replaces_what_a_node_serves_and_bumps_the_generation_once() {
        let mut t = RouteTable::new();
        let n1 = addr(1, 0).node;
        t.set_node(n1, &[(1, 0, vec![id(1)]), (2, 1, vec![id(2)])]);
        let g = t.generation;
        t.set_node(n1, &[(1, 0, vec![id(1)]), (2, 1, vec![id(2)])]);
        assert_eq!(t.generation, g, "no change, no new generation");
        t.set_node(n1, &[(1, 0, vec![id(3)])]);
        assert_eq!(t.group_ids(), [1]);
        assert_eq!(t.owner(1, &id(0)), Some(addr(1, 0)));
        assert!(t.generation > g);
        assert!(t.remove_node(n1));
        assert!(t.groups.is_empty());
        assert!(!t.remove_node(n1));
    }

    #[test]
    fn serde_round_trip() {
        let mut t = RouteTable::new();
        t.set_backend(1, addr(1, 0), &[Id::random()]);
        let j = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<RouteTable>(&j).unwrap(), t);
    }
}
