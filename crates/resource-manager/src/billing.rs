//! Billing reports: the bills of closed leases, chosen by node and time range, with their
//! totals, as JSON ([`Report`]) or CSV ([`Report::to_csv`]). `GET /billing` serves them.
//!
//! A bill belongs to the time its lease was closed (`closed_at_ms`, ms since the Unix epoch); a
//! range `[from, to)` holds the bills closed at `from` or later and before `to`. The totals are
//! the sums of the listed bills, per node and over all.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::registry::{LeaseState, Registry};

/// Which bills.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Query {
    /// Only this node's.
    pub node: Option<String>,
    /// Closed at or after this time (ms since the epoch).
    pub from: Option<u64>,
    /// Closed before this time (ms since the epoch).
    pub to: Option<u64>,
}

/// One closed lease's bill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bill {
    /// The lease.
    pub lease_id: u32,
    /// Its node.
    pub node: String,
    /// Cores leased.
    pub cores: u32,
    /// Memory leased, MiB.
    pub memory: u64,
    /// Granted, ms since the epoch.
    pub granted_at_ms: u64,
    /// Closed (the bill recorded), ms since the epoch.
    pub closed_at_ms: u64,
    /// Time the resources were allocated, ns.
    pub allocation_ns: u64,
    /// Time executors spent hot-polling, ns.
    pub hot_polling_ns: u64,
    /// Time spent executing functions, ns.
    pub execution_ns: u64,
    /// Invocations served.
    pub invocations: u64,
}

/// Sums of bills.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Bills summed.
    pub bills: u64,
    /// Sum of `allocation_ns`.
    pub allocation_ns: u64,
    /// Sum of `hot_polling_ns`.
    pub hot_polling_ns: u64,
    /// Sum of `execution_ns`.
    pub execution_ns: u64,
    /// Sum of `invocations`.
    pub invocations: u64,
}

impl Totals {
    fn add(&mut self, b: &Bill) {
        // Saturating: 2^64 ns are 584 years, more than any deployment bills.
        self.bills += 1;
        self.allocation_ns = self.allocation_ns.saturating_add(b.allocation_ns);
        self.hot_polling_ns = self.hot_polling_ns.saturating_add(b.hot_polling_ns);
        self.execution_ns = self.execution_ns.saturating_add(b.execution_ns);
        self.invocations = self.invocations.saturating_add(b.invocations);
    }
}

/// The bills a [`Query`] chose, by lease id, and their totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The node asked for, if any.
    pub node: Option<String>,
    /// Start of the range, if any.
    pub from_ms: Option<u64>,
    /// End of the range, if any.
    pub to_ms: Option<u64>,
    /// The bills.
    pub bills: Vec<Bill>,
    /// Their sums per node.
    pub nodes: BTreeMap<String, Totals>,
    /// Their sums.
    pub totals: Totals,
}

/// The CSV header of [`Report::to_csv`].
pub const CSV_HEADER: &str = "lease_id,node,cores,memory,granted_at_ms,closed_at_ms,allocation_ns,hot_polling_ns,execution_ns,invocations";

impl Report {
    /// The bills of `registry` that `query` chooses.
    pub fn of(registry: &Registry, query: &Query) -> Report {
        let mut report = Report {
            node: query.node.clone(),
            from_ms: query.from,
            to_ms: query.to,
            ..Report::default()
        };
        for lease in registry.leases() {
            let (Some(billing), Some(closed_at_ms), LeaseState::Closed) =
                (lease.billing, lease.ended_at_ms, lease.state)
            else {
                continue;
            };
            let chosen = query.node.as_ref().is_none_or(|n| *n == lease.node)
                && query.from.is_none_or(|from| closed_at_ms >= from)
                && query.to.is_none_or(|to| closed_at_ms < to);
            if !chosen {
                continue;
            }
            let bill = Bill {
                lease_id: lease.lease_id,
                node: lease.node,
                cores: lease.cores,
                memory: lease.memory,
                granted_at_ms: lease.granted_at_ms,
                closed_at_ms,
                allocation_ns: billing.allocation_ns,
                hot_polling_ns: billing.hot_polling_ns,
                execution_ns: billing.execution_ns,
                invocations: billing.invocations,
            };
            report.totals.add(&bill);
            report
                .nodes
                .entry(bill.node.clone())
                .or_default()
                .add(&bill);
            report.bills.push(bill);
        }
        report
    }

    /// One line per bill under [`CSV_HEADER`], then a line `total` with the sums (its node
    /// field is the node asked for, or empty).
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        out.push_str(CSV_HEADER);
        out.push('\n');
        for b in &self.bills {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{}",
                b.lease_id,
                csv_field(&b.node),
                b.cores,
                b.memory,
                b.granted_at_ms,
                b.closed_at_ms,
                b.allocation_ns,
                b.hot_polling_ns,
                b.execution_ns,
                b.invocations
            );
        }
        let t = &self.totals;
        let _ = writeln!(
            out,
            "total,{},,,,,{},{},{},{}",
            csv_field(self.node.as_deref().unwrap_or("")),
            t.allocation_ns,
            t.hot_polling_ns,
            t.execution_ns,
            t.invocations
        );
        out
    }
}

/// A field quoted when it needs to be (node names may hold commas or quotes).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Billing, NodeSpec};

    #[test]
    fn reports_choose_by_node_and_time_and_sum_what_they_list() {
        let r = Registry::new();
        for name in ["a", "b,c"] {
            r.add_node(
                name,
                NodeSpec {
                    ip_address: "10.0.0.1".into(),
                    port: 1,
                    cores: 8,
                    memory: 8,
                },
            )
            .unwrap();
            r.set_manager_connected(name, true).unwrap();
        }
        let bill = |n: u64| Billing {
            allocation_ns: 1000 * n,
            hot_polling_ns: 100 * n,
            execution_ns: 10 * n,
            invocations: n,
        };
        let g1 = r.grant(1, 1).unwrap();
        let g2 = r.grant(1, 1).unwrap();
        let g3 = r.grant(8, 1).unwrap();
        let open = r.grant(1, 1).unwrap();
        r.close(g1.lease_id, bill(1)).unwrap();
        r.close(g2.lease_id, bill(2)).unwrap();
        r.close(g3.lease_id, bill(4)).unwrap();
        let all = Report::of(&r, &Query::default());
        assert_eq!(all.bills.len(), 3, "the open lease has no bill");
        assert!(all.bills.iter().all(|b| b.lease_id != open.lease_id));
        assert_eq!(all.totals.invocations, 7);
        assert_eq!(all.totals.allocation_ns, 7000);
        let per_node: u64 = all.nodes.values().map(|t| t.invocations).sum();
        assert_eq!(per_node, 7);

        let node = &g3.node;
        let one = Report::of(
            &r,
            &Query {
                node: Some(node.clone()),
                ..Query::default()
            },
        );
        assert!(one.bills.iter().all(|b| b.node == *node));
        let listed: u64 = one.bills.iter().map(|b| b.invocations).sum();
        assert_eq!(one.totals.invocations, listed);

        let t = all.bills[0].closed_at_ms;
        let before = Report::of(
            &r,
            &Query {
                to: Some(t),
                ..Query::default()
            },
        );
        assert!(before.bills.is_empty());
        let since = Report::of(
            &r,
            &Query {
                from: Some(t),
                ..Query::default()
            },
        );
        assert_eq!(since.bills.len(), 3);

        let csv = all.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines.len(), 5);
        assert!(lines[4].starts_with("total,,,,,,7000,700,70,7"), "{csv}");
        assert!(csv.contains("\"b,c\""), "{csv}");
    }
}
