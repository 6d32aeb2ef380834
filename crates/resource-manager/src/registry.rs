//! The executor servers and their leases: thread-safe, in memory, and in the database when
//! there is one ([`crate::store`]).
//!
//! A [`Registry`] is a handle (cheap to clone, all clones share one state behind a mutex) to:
//!
//! - the *nodes*: one executor server each, with the address and port of its executor manager
//!   and the cores and memory (MiB) it offers, plus whether its manager is connected to the
//!   resource manager right now. Only nodes with a connected manager get leases.
//! - the *leases*: cores and memory reserved on one node, numbered from 1. A lease is
//!   [`LeaseState::Active`] until the client closes it with its billing
//!   ([`LeaseState::Closed`]) or it is given back without billing because its node's manager
//!   went away or the node was removed ([`LeaseState::Released`]). Either way its cores and
//!   memory return to the node. Finished leases stay listed.
//!
//! With a database ([`Registry::open`]) every change is committed there before the call
//! returns, so before the caller acknowledges it: a lease is stored before it is granted, a
//! bill before the manager's report is answered. A refused write changes nothing and is a
//! [`RegistryError::Storage`]. After a restart, the nodes come back (their managers not
//! connected yet) and the leases that were active are [`LeaseState::InDoubt`], still holding
//! their cores, until their manager registers again and says which it still holds
//! ([`Registry::reconcile`]).
//!
//! Every commit is synced to the disk before it returns, except a grant's
//! ([`Store::insert_grant`]): a crash of the resource manager loses nothing, but a crash of its
//! host may lose the last grants. Two things keep that from granting anything twice:
//! - lease ids are reserved durably, [`LEASE_ID_BLOCK`] at a time, and after a restart ids go on
//!   after the last reserved one, so a lost lease's id is never handed out again (ids jump by up
//!   to a block at each restart);
//! - a lease its manager holds and the registry does not know is taken back, active, with the
//!   cores and memory the manager got in its notice ([`Registry::reconcile`]). The broker marks
//!   a node's manager connected (so the node gets leases) only after that, so the cores of a
//!   lost lease are not granted again.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rfaas_protocol::config::{ExecutorNode, ExecutorsDatabase};
use rfaas_protocol::control::HeldLease;
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// What an executor server offers: the body of `POST /add`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// IP address of its executor manager.
    pub ip_address: String,
    /// Port of its executor manager.
    pub port: u16,
    /// Cores it offers.
    pub cores: u32,
    /// Memory it offers, in MiB.
    pub memory: u64,
}

/// One executor server as the registry sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Node name (the manager's `node_name`).
    pub node: String,
    /// IP address of its executor manager.
    pub ip_address: String,
    /// Port of its executor manager.
    pub port: u16,
    /// Cores it offers.
    pub cores: u32,
    /// Memory it offers, in MiB.
    pub memory: u64,
    /// Cores not leased.
    pub free_cores: u32,
    /// Memory not leased, in MiB.
    pub free_memory: u64,
    /// Cores held by active leases.
    pub leased_cores: u32,
    /// Memory held by active leases, in MiB.
    pub leased_memory: u64,
    /// Whether its executor manager is connected (only then does it get leases).
    pub manager_connected: bool,
    /// Its leases so far (under this node name) and what they billed.
    pub billed: NodeBilling,
}

/// A node's leases so far and the sums of their billing: what `GET /executors` shows per node,
/// the sums of the node's entries in `GET /leases`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeBilling {
    /// Leases granted and still active.
    pub active_leases: u32,
    /// Leases open when the resource manager stopped, until their manager reports on them.
    pub in_doubt_leases: u32,
    /// Leases closed with billing (by their client, or billed late after a release).
    pub closed_leases: u32,
    /// Leases released (manager gone, node removed) and not billed.
    pub released_leases: u32,
    /// Sum over the leases with billing (the closed ones): `allocation_ns`.
    pub allocation_ns: u64,
    /// Sum over the leases with billing (the closed ones): `hot_polling_ns`.
    pub hot_polling_ns: u64,
    /// Sum over the leases with billing (the closed ones): `execution_ns`.
    pub execution_ns: u64,
    /// Sum over the leases with billing (the closed ones): `invocations`.
    pub invocations: u64,
}

impl NodeBilling {
    fn add(&mut self, lease: &Lease) {
        match lease.state {
            LeaseState::Active => self.active_leases += 1,
            LeaseState::InDoubt => self.in_doubt_leases += 1,
            LeaseState::Released => self.released_leases += 1,
            LeaseState::Closed => self.closed_leases += 1,
        }
        if let Some(b) = &lease.billing {
            self.allocation_ns = self.allocation_ns.saturating_add(b.allocation_ns);
            self.hot_polling_ns = self.hot_polling_ns.saturating_add(b.hot_polling_ns);
            self.execution_ns = self.execution_ns.saturating_add(b.execution_ns);
            self.invocations = self.invocations.saturating_add(b.invocations);
        }
    }
}

/// A granted lease: where the client goes and what it got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Lease id (from 1).
    pub lease_id: u32,
    /// Node name.
    pub node: String,
    /// IP address of the node's executor manager.
    pub ip_address: String,
    /// Port of the node's executor manager.
    pub port: u16,
    /// Cores leased.
    pub cores: u32,
    /// Memory leased, in MiB.
    pub memory: u64,
}

/// What a closed lease used, as the executor manager reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Billing {
    /// Time the resources were allocated, in ns.
    pub allocation_ns: u64,
    /// Time executors spent hot-polling, in ns.
    pub hot_polling_ns: u64,
    /// Time spent executing functions, in ns.
    pub execution_ns: u64,
    /// Invocations served.
    pub invocations: u64,
}

/// Where a lease is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Granted; its resources are reserved.
    Active,
    /// Was active when the resource manager stopped; its resources stay reserved until its
    /// node's manager registers again and says whether it still holds it.
    InDoubt,
    /// Closed by its client, with billing; resources given back.
    Closed,
    /// Freed without billing (manager gone or node removed); resources given back. A manager
    /// that comes back may still bill it: it is then closed ([`Registry::close`]).
    Released,
}

/// One lease as the registry sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// Lease id (from 1).
    pub lease_id: u32,
    /// Node it was granted on.
    pub node: String,
    /// Cores leased.
    pub cores: u32,
    /// Memory leased, in MiB.
    pub memory: u64,
    /// Where it is in its life.
    pub state: LeaseState,
    /// When it was granted, in ms since the Unix epoch.
    pub granted_at_ms: u64,
    /// When it was closed or released, in ms since the Unix epoch.
    pub ended_at_ms: Option<u64>,
    /// What it used; only for [`LeaseState::Closed`] (which includes a lease released while its
    /// manager was away and billed when the manager came back).
    pub billing: Option<Billing>,
}

impl LeaseState {
    /// Whether the lease still holds its node's cores and memory.
    pub fn is_open(self) -> bool {
        matches!(self, LeaseState::Active | LeaseState::InDoubt)
    }
}

/// Why the registry refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A node of that name exists already.
    #[error("node {0:?} already exists")]
    DuplicateNode(String),
    /// No node of that name.
    #[error("no node named {0:?}")]
    UnknownNode(String),
    /// No lease with that id.
    #[error("no lease with id {0}")]
    UnknownLease(u32),
    /// The lease was closed or released already.
    #[error("lease {0} is not active")]
    LeaseNotActive(u32),
    /// No node with a connected manager has that much free.
    #[error(
        "no connected executor server has {cores} free cores and {memory} MiB free memory \
         (largest free: {largest_free_cores} cores, {largest_free_memory} MiB)"
    )]
    NoResources {
        /// Cores asked for.
        cores: u32,
        /// Memory asked for, in MiB.
        memory: u64,
        /// Most free cores on any connected node.
        largest_free_cores: u32,
        /// Most free memory on any connected node (not necessarily the same node), in MiB.
        largest_free_memory: u64,
    },
    /// No node, connected or not, free or not, has that many cores and that much memory: the
    /// request can never be granted.
    #[error(
        "no executor server has {cores} cores and {memory} MiB (largest: {largest_cores} cores, \
         {largest_memory} MiB, node {largest_node:?})"
    )]
    TooLarge {
        /// Cores asked for.
        cores: u32,
        /// Memory asked for, in MiB.
        memory: u64,
        /// The largest node (most cores, then most memory).
        largest_node: String,
        /// Its cores.
        largest_cores: u32,
        /// Its memory, in MiB.
        largest_memory: u64,
    },
    /// A node name, node spec or lease request that cannot be used; the message says why.
    #[error("{0}")]
    InvalidSpec(String),
    /// The database refused the change; nothing changed.
    #[error("the database refused the change: {0}")]
    Storage(String),
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        RegistryError::Storage(e.to_string())
    }
}

/// What a restart found in the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Nodes.
    pub nodes: usize,
    /// Leases, finished ones included.
    pub leases: usize,
    /// Leases that were active, now [`LeaseState::InDoubt`].
    pub in_doubt: usize,
    /// Bills.
    pub bills: usize,
}

/// What [`Registry::reconcile`] did with a node's leases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// In doubt and held by the manager: active again.
    pub active: Vec<u32>,
    /// In doubt, not held and not billed: released.
    pub released: Vec<u32>,
    /// Held by the manager and unknown here (lost with the host's crash): taken back, active.
    pub adopted: Vec<u32>,
}

/// Lease ids reserved in the database at a time.
pub const LEASE_ID_BLOCK: u32 = 1024;

/// The executor servers and their leases. Clones share the same state.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: BTreeMap<String, Node>,
    leases: BTreeMap<u32, Lease>,
    last_lease_id: u32,
    /// The last id of the block reserved in the database by this run, once one is.
    reserved_to: Option<u32>,
    store: Option<Store>,
}

#[derive(Debug)]
struct Node {
    spec: NodeSpec,
    leased_cores: u32,
    leased_memory: u64,
    manager_connected: bool,
}

impl Node {
    fn free_cores(&self) -> u32 {
        self.spec.cores.saturating_sub(self.leased_cores)
    }

    fn free_memory(&self) -> u64 {
        self.spec.memory.saturating_sub(self.leased_memory)
    }

    fn view(&self, name: &str, billed: NodeBilling) -> NodeView {
        NodeView {
            node: name.to_owned(),
            ip_address: self.spec.ip_address.clone(),
            port: self.spec.port,
            cores: self.spec.cores,
            memory: self.spec.memory,
            free_cores: self.free_cores(),
            free_memory: self.free_memory(),
            leased_cores: self.leased_cores,
            leased_memory: self.leased_memory,
            manager_connected: self.manager_connected,
            billed,
        }
    }
}

#[derive(Debug)]
struct Lease {
    node: String,
    cores: u32,
    memory: u64,
    state: LeaseState,
    granted_at_ms: u64,
    ended_at_ms: Option<u64>,
    billing: Option<Billing>,
}

impl Lease {
    fn view(&self, lease_id: u32) -> LeaseView {
        LeaseView {
            lease_id,
            node: self.node.clone(),
            cores: self.cores,
            memory: self.memory,
            state: self.state,
            granted_at_ms: self.granted_at_ms,
            ended_at_ms: self.ended_at_ms,
            billing: self.billing,
        }
    }
}

impl Inner {
    /// Node `name` with the sums of its leases.
    fn view(&self, name: &str) -> Option<NodeView> {
        let node = self.nodes.get(name)?;
        let mut billed = NodeBilling::default();
        for lease in self.leases.values().filter(|l| l.node == name) {
            billed.add(lease);
        }
        Some(node.view(name, billed))
    }

    /// Ends a lease (in memory; the caller stored it) and gives its resources back to its node
    /// if it still held them and the node still exists.
    fn finish(
        &mut self,
        lease_id: u32,
        state: LeaseState,
        billing: Option<Billing>,
        at_ms: u64,
    ) -> LeaseView {
        let Some(lease) = self.leases.get_mut(&lease_id) else {
            unreachable!("finish is only called for existing leases")
        };
        let held = lease.state.is_open();
        lease.state = state;
        lease.billing = billing;
        lease.ended_at_ms = Some(at_ms);
        if held && let Some(node) = self.nodes.get_mut(&lease.node) {
            node.leased_cores = node.leased_cores.saturating_sub(lease.cores);
            node.leased_memory = node.leased_memory.saturating_sub(lease.memory);
        }
        lease.view(lease_id)
    }

    /// The leases on `name` in one of `states`.
    fn leases_on(&self, name: &str, states: &[LeaseState]) -> Vec<u32> {
        self.leases
            .iter()
            .filter(|(_, l)| l.node == name && states.contains(&l.state))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Releases `ids` (open leases), in the database first.
    fn release_all(&mut self, ids: &[u32]) -> Result<Vec<LeaseView>, RegistryError> {
        let at = now_ms();
        if let Some(store) = &mut self.store {
            store.set_lease_states(ids, LeaseState::Released, Some(at))?;
        }
        Ok(ids
            .iter()
            .map(|id| self.finish(*id, LeaseState::Released, None, at))
            .collect())
    }

    /// Reserves a block of ids from `id` on in the database, unless `id` is in the block this
    /// run reserved last.
    fn reserve(&mut self, id: u32) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        if self
            .reserved_to
            .is_some_and(|last| last.wrapping_sub(id) < LEASE_ID_BLOCK)
        {
            return Ok(());
        }
        let last = id.wrapping_add(LEASE_ID_BLOCK - 1);
        store.reserve_lease_ids(last)?;
        self.reserved_to = Some(last);
        Ok(())
    }

    fn next_lease_id(&mut self) -> u32 {
        // Ids start at 1; after 2^32 - 1 leases skip 0 and ids still listed.
        let mut id = self.last_lease_id;
        loop {
            id = id.wrapping_add(1);
            if id != 0 && !self.leases.contains_key(&id) {
                self.last_lease_id = id;
                return id;
            }
        }
    }
}

fn validate(name: &str, spec: &NodeSpec) -> Result<(), RegistryError> {
    let invalid = |msg: String| Err(RegistryError::InvalidSpec(msg));
    if let Err(why) = rfaas_protocol::control::check_node_name(name) {
        return invalid(why);
    }
    if spec.ip_address.parse::<IpAddr>().is_err() {
        return invalid(format!(
            "node {name:?}: ip_address {:?} is not an IP address",
            spec.ip_address
        ));
    }
    if spec.port == 0 {
        return invalid(format!("node {name:?}: port must be greater than 0"));
    }
    if spec.cores == 0 {
        return invalid(format!("node {name:?}: cores must be greater than 0"));
    }
    if spec.memory == 0 {
        return invalid(format!("node {name:?}: memory must be greater than 0"));
    }
    Ok(())
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Registry {
    /// An empty registry, in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry kept in `store`, starting from what it holds: its nodes (managers not
    /// connected yet), its leases (those that were active now in doubt) and its bills.
    pub fn open(mut store: Store) -> Result<(Self, Restored), RegistryError> {
        let loaded = store.load_after_restart()?;
        let mut inner = Inner::default();
        for (name, spec) in loaded.nodes {
            inner.nodes.insert(
                name,
                Node {
                    spec,
                    leased_cores: 0,
                    leased_memory: 0,
                    manager_connected: false,
                },
            );
        }
        let mut highest_id = 0;
        let mut restored = Restored {
            nodes: inner.nodes.len(),
            leases: loaded.leases.len(),
            ..Restored::default()
        };
        for l in loaded.leases {
            if l.state.is_open()
                && let Some(node) = inner.nodes.get_mut(&l.node)
            {
                node.leased_cores += l.cores;
                node.leased_memory += l.memory;
            }
            restored.in_doubt += usize::from(l.state == LeaseState::InDoubt);
            restored.bills += usize::from(l.billing.is_some());
            highest_id = highest_id.max(l.id);
            inner.leases.insert(
                l.id,
                Lease {
                    node: l.node,
                    cores: l.cores,
                    memory: l.memory,
                    state: l.state,
                    granted_at_ms: l.granted_at_ms,
                    ended_at_ms: l.ended_at_ms,
                    billing: l.billing,
                },
            );
        }
        // Ids handed out before the restart are at most the last reserved one (ids wrap, so
        // that can be below the highest stored); a database from before reservations has none.
        inner.last_lease_id = loaded.lease_ids_reserved_to.unwrap_or(highest_id);
        inner.store = Some(store);
        Ok((
            Registry {
                inner: Arc::new(Mutex::new(inner)),
            },
            restored,
        ))
    }

    /// Adds the servers of `executors_database.json` that the registry does not know (`-i`
    /// beside a database); returns the names added. A known name is left as it is, with a
    /// warning when the file describes it differently.
    pub fn import(&self, db: &ExecutorsDatabase) -> Result<Vec<String>, RegistryError> {
        let mut added = Vec::new();
        for e in &db.executors {
            let spec = NodeSpec {
                ip_address: e.address.clone(),
                port: e.port,
                cores: e.cores,
                memory: e.memory,
            };
            match self.node(&e.node) {
                None => {
                    self.add_node(&e.node, spec)?;
                    added.push(e.node.clone());
                }
                Some(known)
                    if (
                        known.ip_address.as_str(),
                        known.port,
                        known.cores,
                        known.memory,
                    ) == (spec.ip_address.as_str(), spec.port, spec.cores, spec.memory) => {}
                Some(_) => tracing::warn!(
                    "node {} is described differently in the executors database than in the resource manager's database; keeping the latter (remove it and add it again over HTTP to change it)",
                    e.node
                ),
            }
        }
        Ok(added)
    }

    /// A registry holding the servers of `executors_database.json`, none with a connected
    /// manager yet. Fails on the first invalid or duplicate entry.
    pub fn from_database(db: &ExecutorsDatabase) -> Result<Self, RegistryError> {
        let registry = Self::new();
        for e in &db.executors {
            registry.add_node(
                &e.node,
                NodeSpec {
                    ip_address: e.address.clone(),
                    port: e.port,
                    cores: e.cores,
                    memory: e.memory,
                },
            )?;
        }
        Ok(registry)
    }

    /// The servers as `executors_database.json` (sorted by name), e.g. for `-o`.
    pub fn to_database(&self) -> ExecutorsDatabase {
        let inner = self.lock();
        ExecutorsDatabase {
            executors: inner
                .nodes
                .iter()
                .map(|(name, n)| ExecutorNode {
                    node: name.clone(),
                    address: n.spec.ip_address.clone(),
                    port: n.spec.port,
                    cores: n.spec.cores,
                    memory: n.spec.memory,
                })
                .collect(),
        }
    }

    /// Adds a server, its manager not connected yet. The name must be non-empty; the spec
    /// needs an IP address, a port, cores and memory (all non-zero).
    pub fn add_node(&self, name: &str, spec: NodeSpec) -> Result<(), RegistryError> {
        self.insert_node(name, spec).map(drop)
    }

    /// [`Registry::add_node`], returning the new node's view (taken under the same lock).
    pub(crate) fn insert_node(
        &self,
        name: &str,
        spec: NodeSpec,
    ) -> Result<NodeView, RegistryError> {
        validate(name, &spec)?;
        let mut inner = self.lock();
        if inner.nodes.contains_key(name) {
            return Err(RegistryError::DuplicateNode(name.to_owned()));
        }
        if let Some(store) = &inner.store {
            store.insert_node(name, &spec, now_ms())?;
        }
        let node = Node {
            spec,
            leased_cores: 0,
            leased_memory: 0,
            manager_connected: false,
        };
        inner.nodes.insert(name.to_owned(), node);
        Ok(inner.view(name).expect("just inserted"))
    }

    /// Removes a server; its active leases become [`LeaseState::Released`]. Returns the node as
    /// it was just before removal (so `leased_*` shows what was still leased).
    pub fn remove_node(&self, name: &str) -> Result<NodeView, RegistryError> {
        let mut inner = self.lock();
        let view = inner
            .view(name)
            .ok_or_else(|| RegistryError::UnknownNode(name.to_owned()))?;
        let open = inner.leases_on(name, &[LeaseState::Active, LeaseState::InDoubt]);
        let at = now_ms();
        if let Some(store) = &mut inner.store {
            store.remove_node(name, &open, at)?;
        }
        for id in open {
            inner.finish(id, LeaseState::Released, None, at);
        }
        inner.nodes.remove(name);
        Ok(view)
    }

    /// One server, if known.
    pub fn node(&self, name: &str) -> Option<NodeView> {
        self.lock().view(name)
    }

    /// All servers, sorted by name.
    pub fn nodes(&self) -> Vec<NodeView> {
        let inner = self.lock();
        let mut billed: BTreeMap<&str, NodeBilling> = BTreeMap::new();
        for lease in inner.leases.values() {
            billed.entry(lease.node.as_str()).or_default().add(lease);
        }
        inner
            .nodes
            .iter()
            .map(|(name, n)| n.view(name, billed.get(name.as_str()).copied().unwrap_or_default()))
            .collect()
    }

    /// One lease, if known.
    pub fn lease(&self, lease_id: u32) -> Option<LeaseView> {
        self.lock().leases.get(&lease_id).map(|l| l.view(lease_id))
    }

    /// Where the registry keeps its state, if in a database.
    pub fn database(&self) -> Option<std::path::PathBuf> {
        self.lock().store.as_ref().map(|s| s.path().to_owned())
    }

    /// All leases, finished ones included, sorted by id.
    pub fn leases(&self) -> Vec<LeaseView> {
        self.lock()
            .leases
            .iter()
            .map(|(id, l)| l.view(*id))
            .collect()
    }

    /// Records whether the server's executor manager is connected. Disconnecting this way
    /// leaves its leases alone; use [`Registry::release_node`] when the manager is gone.
    pub fn set_manager_connected(&self, name: &str, connected: bool) -> Result<(), RegistryError> {
        let mut inner = self.lock();
        let node = inner
            .nodes
            .get_mut(name)
            .ok_or_else(|| RegistryError::UnknownNode(name.to_owned()))?;
        node.manager_connected = connected;
        Ok(())
    }

    /// Picks a node whose manager is connected and with enough free cores and memory (best fit:
    /// fewest free cores that still fit, then least free memory, then name), reserves them and
    /// returns the grant. Lease ids start at 1. A lease needs at least one core; memory may be 0.
    pub fn grant(&self, cores: u32, memory: u64) -> Result<Grant, RegistryError> {
        if cores == 0 {
            return Err(RegistryError::InvalidSpec(
                "a lease needs at least one core".into(),
            ));
        }
        let mut inner = self.lock();
        let best = inner
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.manager_connected && n.free_cores() >= cores && n.free_memory() >= memory
            })
            .min_by_key(|(_, n)| (n.free_cores(), n.free_memory()))
            .map(|(name, _)| name.clone());
        let Some(name) = best else {
            let fits_some = inner
                .nodes
                .values()
                .any(|n| n.spec.cores >= cores && n.spec.memory >= memory);
            let largest = inner
                .nodes
                .iter()
                .max_by_key(|(name, n)| (n.spec.cores, n.spec.memory, std::cmp::Reverse(*name)));
            if let (false, Some((largest_node, n))) = (fits_some, largest) {
                return Err(RegistryError::TooLarge {
                    cores,
                    memory,
                    largest_node: largest_node.clone(),
                    largest_cores: n.spec.cores,
                    largest_memory: n.spec.memory,
                });
            }
            let connected = inner.nodes.values().filter(|n| n.manager_connected);
            let largest_free_cores = connected.clone().map(Node::free_cores).max().unwrap_or(0);
            let largest_free_memory = connected.map(Node::free_memory).max().unwrap_or(0);
            return Err(RegistryError::NoResources {
                cores,
                memory,
                largest_free_cores,
                largest_free_memory,
            });
        };
        let lease_id = inner.next_lease_id();
        let granted_at_ms = now_ms();
        inner.reserve(lease_id)?;
        if let Some(store) = &inner.store {
            store.insert_grant(lease_id, &name, cores, memory, granted_at_ms)?;
        }
        let Some(node) = inner.nodes.get_mut(&name) else {
            unreachable!("the node was just found under the same lock")
        };
        node.leased_cores += cores;
        node.leased_memory += memory;
        let grant = Grant {
            lease_id,
            node: name.clone(),
            ip_address: node.spec.ip_address.clone(),
            port: node.spec.port,
            cores,
            memory,
        };
        inner.leases.insert(
            lease_id,
            Lease {
                node: name,
                cores,
                memory,
                state: LeaseState::Active,
                granted_at_ms,
                ended_at_ms: None,
                billing: None,
            },
        );
        Ok(grant)
    }

    /// Closes a lease with its billing ([`LeaseState::Closed`]), stored first; its resources
    /// return to the node. An active or in-doubt lease can be closed, and so can a released
    /// one (a bill that arrives after its manager's link broke is still a bill; the resources
    /// were back already); a closed one cannot: it has its bill.
    pub fn close(&self, lease_id: u32, billing: Billing) -> Result<LeaseView, RegistryError> {
        let mut inner = self.lock();
        let node = match inner.leases.get(&lease_id) {
            None => return Err(RegistryError::UnknownLease(lease_id)),
            Some(l) if l.state == LeaseState::Closed => {
                return Err(RegistryError::LeaseNotActive(lease_id));
            }
            Some(l) => l.node.clone(),
        };
        let at = now_ms();
        if let Some(store) = &mut inner.store {
            store.close_lease(lease_id, &node, &billing, at)?;
        }
        Ok(inner.finish(lease_id, LeaseState::Closed, Some(billing), at))
    }

    /// Releases an active or in-doubt lease without billing ([`LeaseState::Released`]); its
    /// resources return to the node.
    pub fn release(&self, lease_id: u32) -> Result<LeaseView, RegistryError> {
        let mut inner = self.lock();
        match inner.leases.get(&lease_id) {
            None => return Err(RegistryError::UnknownLease(lease_id)),
            Some(l) if !l.state.is_open() => return Err(RegistryError::LeaseNotActive(lease_id)),
            Some(_) => {}
        }
        Ok(inner.release_all(&[lease_id])?.remove(0))
    }

    /// The server's manager disconnected: marks it not connected and releases all its active
    /// leases, returning them. Leases in doubt stay so (their manager has not reported since
    /// the restart). An unknown name releases nothing.
    pub fn release_node(&self, name: &str) -> Result<Vec<LeaseView>, RegistryError> {
        let mut inner = self.lock();
        match inner.nodes.get_mut(name) {
            Some(node) => node.manager_connected = false,
            None => return Ok(Vec::new()),
        }
        let active = inner.leases_on(name, &[LeaseState::Active]);
        inner.release_all(&active)
    }

    /// The manager of `name` registered again and holds the leases `held`: its leases in
    /// doubt that it holds are active again, the others (not billed before this call) are
    /// released. A held lease the registry does not know at all (its grant was lost with the
    /// host's crash) is taken back, active, granted now, with the cores and memory the manager
    /// holds. Other leases are left alone.
    pub fn reconcile(&self, name: &str, held: &[HeldLease]) -> Result<Reconciled, RegistryError> {
        let mut inner = self.lock();
        let (active, released): (Vec<u32>, Vec<u32>) = inner
            .leases_on(name, &[LeaseState::InDoubt])
            .into_iter()
            .partition(|id| held.iter().any(|l| l.lease_id == *id));
        let lost: Vec<(u32, u32, u64)> = if inner.nodes.contains_key(name) {
            held.iter()
                .filter(|l| l.lease_id != 0 && !inner.leases.contains_key(&l.lease_id))
                .map(|l| (l.lease_id, u32::from(l.cores), u64::from(l.memory_mb)))
                .collect()
        } else {
            Vec::new()
        };
        let at = now_ms();
        if let Some(store) = &mut inner.store {
            store.set_lease_states(&active, LeaseState::Active, None)?;
            if !lost.is_empty() {
                store.insert_held_leases(name, &lost, at)?;
            }
        }
        for id in &active {
            if let Some(l) = inner.leases.get_mut(id) {
                l.state = LeaseState::Active;
            }
        }
        for &(id, cores, memory) in &lost {
            if let Some(node) = inner.nodes.get_mut(name) {
                node.leased_cores += cores;
                node.leased_memory += memory;
            }
            inner.leases.insert(
                id,
                Lease {
                    node: name.to_owned(),
                    cores,
                    memory,
                    state: LeaseState::Active,
                    granted_at_ms: at,
                    ended_at_ms: None,
                    billing: None,
                },
            );
        }
        inner.release_all(&released)?;
        Ok(Reconciled {
            active,
            released,
            adopted: lost.into_iter().map(|(id, _, _)| id).collect(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock, but a poisoned state is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cores: u32, memory: u64) -> NodeSpec {
        NodeSpec {
            ip_address: "192.168.0.29".into(),
            port: 10005,
            cores,
            memory,
        }
    }

    /// A registry with connected nodes `(name, cores, memory)`.
    fn registry(nodes: &[(&str, u32, u64)]) -> Registry {
        let r = Registry::new();
        for &(name, cores, memory) in nodes {
            r.add_node(name, spec(cores, memory)).unwrap();
            r.set_manager_connected(name, true).unwrap();
        }
        r
    }

    fn free(r: &Registry, name: &str) -> (u32, u64) {
        let n = r.node(name).unwrap();
        assert_eq!(n.free_cores + n.leased_cores, n.cores);
        assert_eq!(n.free_memory + n.leased_memory, n.memory);
        (n.free_cores, n.free_memory)
    }

    #[test]
    fn grant_close_release_accounting() {
        let r = registry(&[("a", 8, 4096)]);
        let g1 = r.grant(3, 1000).unwrap();
        assert_eq!(g1.lease_id, 1);
        assert_eq!(
            (g1.node.as_str(), g1.ip_address.as_str(), g1.port),
            ("a", "192.168.0.29", 10005)
        );
        let g2 = r.grant(2, 500).unwrap();
        assert_eq!(g2.lease_id, 2);
        assert_eq!(free(&r, "a"), (3, 2596));

        let billing = Billing {
            allocation_ns: 10,
            hot_polling_ns: 20,
            execution_ns: 30,
            invocations: 4,
        };
        let closed = r.close(1, billing).unwrap();
        assert_eq!(closed.state, LeaseState::Closed);
        assert_eq!(closed.billing, Some(billing));
        assert_eq!(free(&r, "a"), (6, 3596));

        let released = r.release(2).unwrap();
        assert_eq!(released.state, LeaseState::Released);
        assert_eq!(released.billing, None);
        assert_eq!(free(&r, "a"), (8, 4096));

        // Finished leases cannot be finished again, and stay listed.
        assert_eq!(r.close(1, billing), Err(RegistryError::LeaseNotActive(1)));
        assert_eq!(r.release(2), Err(RegistryError::LeaseNotActive(2)));
        assert_eq!(r.release(3), Err(RegistryError::UnknownLease(3)));
        let leases = r.leases();
        assert_eq!(
            leases
                .iter()
                .map(|l| (l.lease_id, l.state))
                .collect::<Vec<_>>(),
            [(1, LeaseState::Closed), (2, LeaseState::Released)]
        );
        assert!(leases[0].granted_at_ms > 0);
        assert_eq!(free(&r, "a"), (8, 4096));
    }

    #[test]
    fn best_fit_picks_fewest_free_cores_that_fit() {
        let r = registry(&[("big", 16, 8192), ("small", 2, 8192), ("mid", 4, 8192)]);
        assert_eq!(r.grant(2, 100).unwrap().node, "small");
        // small is now full; 3 cores fit mid (4) before big (16).
        assert_eq!(r.grant(3, 100).unwrap().node, "mid");
        assert_eq!(r.grant(1, 100).unwrap().node, "mid");
        assert_eq!(r.grant(1, 100).unwrap().node, "big");
        // Memory must fit too.
        let r = registry(&[("few-cores-no-mem", 1, 100), ("more", 4, 1000)]);
        assert_eq!(r.grant(1, 500).unwrap().node, "more");
    }

    #[test]
    fn no_resources_names_the_largest_free_numbers() {
        let r = registry(&[("a", 4, 100), ("b", 2, 3000)]);
        r.add_node("offline", spec(64, 65536)).unwrap();
        let err = r.grant(5, 200).unwrap_err();
        assert_eq!(
            err,
            RegistryError::NoResources {
                cores: 5,
                memory: 200,
                largest_free_cores: 4,
                largest_free_memory: 3000
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("5 free cores") && msg.contains("200 MiB"),
            "{msg}"
        );
        assert!(msg.contains("4 cores, 3000 MiB"), "{msg}");
        assert!(matches!(
            Registry::new().grant(1, 1),
            Err(RegistryError::NoResources {
                largest_free_cores: 0,
                largest_free_memory: 0,
                ..
            })
        ));
        assert!(matches!(r.grant(0, 1), Err(RegistryError::InvalidSpec(_))));
    }

    #[test]
    fn a_request_larger_than_every_node_names_the_largest() {
        let r = registry(&[("n1", 1, 4096), ("n2", 2, 4096), ("n3", 4, 4096)]);
        r.add_node("offline", spec(3, 8192)).unwrap();
        let err = r.grant(5, 256).unwrap_err();
        assert_eq!(
            err,
            RegistryError::TooLarge {
                cores: 5,
                memory: 256,
                largest_node: "n3".into(),
                largest_cores: 4,
                largest_memory: 4096
            }
        );
        assert_eq!(
            err.to_string(),
            "no executor server has 5 cores and 256 MiB (largest: 4 cores, 4096 MiB, node \"n3\")"
        );
        // Fits a node in cores but none in memory: too large as well.
        assert!(matches!(
            r.grant(4, 5000),
            Err(RegistryError::TooLarge { .. })
        ));
        // Fits only the node whose manager is away: not now, but maybe later.
        assert!(matches!(
            r.grant(3, 8000),
            Err(RegistryError::NoResources { .. })
        ));
        // Fits n3 but n3 is full: busy, not too large.
        r.grant(4, 1).unwrap();
        assert!(matches!(
            r.grant(4, 1),
            Err(RegistryError::NoResources { .. })
        ));
    }

    #[test]
    fn nodes_show_the_sums_of_their_leases() {
        let r = registry(&[("a", 4, 4096), ("b", 4, 4096)]);
        let b = |n: u64| Billing {
            allocation_ns: 1000 * n,
            hot_polling_ns: 100 * n,
            execution_ns: 10 * n,
            invocations: n,
        };
        let l1 = r.grant(4, 1).unwrap();
        let l2 = r.grant(2, 1).unwrap();
        let l3 = r.grant(1, 1).unwrap();
        let l4 = r.grant(1, 1).unwrap();
        assert_eq!((l1.node.as_str(), l2.node.as_str()), ("a", "b"));
        r.close(l1.lease_id, b(3)).unwrap();
        r.close(l2.lease_id, b(5)).unwrap();
        r.close(l3.lease_id, b(7)).unwrap();
        r.release(l4.lease_id).unwrap();
        let l5 = r.grant(1, 1).unwrap();
        let nodes = r.nodes();
        let (a, bb) = (nodes[0].billed, nodes[1].billed);
        assert_eq!(
            a,
            NodeBilling {
                active_leases: u32::from(l5.node == "a"),
                in_doubt_leases: 0,
                closed_leases: 1,
                released_leases: 0,
                allocation_ns: 3000,
                hot_polling_ns: 300,
                execution_ns: 30,
                invocations: 3
            }
        );
        assert_eq!(
            (
                bb.closed_leases,
                bb.released_leases,
                bb.invocations,
                bb.allocation_ns
            ),
            (2, 1, 12, 12000)
        );
        assert_eq!(r.node("b").unwrap().billed, bb);
        // The sums over nodes are the sums over leases.
        let leases = r.leases();
        let total: u64 = leases
            .iter()
            .filter_map(|l| l.billing)
            .map(|b| b.invocations)
            .sum();
        assert_eq!(a.invocations + bb.invocations, total);
    }

    #[test]
    fn duplicate_and_unknown_nodes() {
        let r = registry(&[("a", 1, 512)]);
        assert_eq!(
            r.add_node("a", spec(2, 1024)),
            Err(RegistryError::DuplicateNode("a".into()))
        );
        assert_eq!(
            r.node("a").unwrap().cores,
            1,
            "the duplicate changed nothing"
        );
        assert_eq!(
            r.remove_node("zz"),
            Err(RegistryError::UnknownNode("zz".into()))
        );
        assert_eq!(
            r.set_manager_connected("zz", true),
            Err(RegistryError::UnknownNode("zz".into()))
        );
        assert!(r.release_node("zz").unwrap().is_empty());
        assert!(
            RegistryError::DuplicateNode("a".into())
                .to_string()
                .contains("\"a\"")
        );
    }

    #[test]
    fn invalid_specs_are_refused() {
        let r = Registry::new();
        let bad = |name: &str, s: NodeSpec| match r.add_node(name, s) {
            Err(RegistryError::InvalidSpec(msg)) => msg,
            other => panic!("{other:?}"),
        };
        assert!(bad("", spec(1, 1)).contains("empty"));
        assert!(bad("a", spec(0, 1)).contains("cores"));
        assert!(bad("a", spec(1, 0)).contains("memory"));
        let mut s = spec(1, 1);
        s.port = 0;
        assert!(bad("a", s).contains("port"));
        let mut s = spec(1, 1);
        s.ip_address = "host.example".into();
        assert!(bad("a", s).contains("\"host.example\""));
        let mut s = spec(1, 1);
        s.ip_address = "::1".into();
        r.add_node("v6", s).unwrap();
        assert_eq!(r.nodes().len(), 1);
    }

    #[test]
    fn a_node_without_a_connected_manager_is_never_granted() {
        let r = Registry::new();
        r.add_node("a", spec(8, 8192)).unwrap();
        assert!(matches!(
            r.grant(1, 1),
            Err(RegistryError::NoResources { .. })
        ));
        r.set_manager_connected("a", true).unwrap();
        let g = r.grant(1, 1).unwrap();
        // Manager gone: its lease is released, and no more grants there.
        let released = r.release_node("a").unwrap();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].lease_id, g.lease_id);
        assert_eq!(released[0].state, LeaseState::Released);
        assert!(!r.node("a").unwrap().manager_connected);
        assert_eq!(free(&r, "a"), (8, 8192));
        assert!(matches!(
            r.grant(1, 1),
            Err(RegistryError::NoResources { .. })
        ));
        assert!(r.release_node("a").unwrap().is_empty());
    }

    #[test]
    fn removing_a_node_releases_its_leases() {
        let r = registry(&[("a", 4, 1024), ("b", 4, 1024)]);
        let on_a = r.grant(4, 1024).unwrap();
        let on_b = r.grant(1, 1).unwrap();
        assert_eq!((on_a.node.as_str(), on_b.node.as_str()), ("a", "b"));
        let removed = r.remove_node("a").unwrap();
        assert_eq!((removed.leased_cores, removed.free_cores), (4, 0));
        assert!(r.node("a").is_none());
        let leases = r.leases();
        assert_eq!(leases[0].state, LeaseState::Released);
        assert_eq!(leases[1].state, LeaseState::Active);
        // A bill that arrives after the release is still recorded; the cores were back already.
        let late = r.close(on_a.lease_id, Billing::default()).unwrap();
        assert_eq!(late.state, LeaseState::Closed);
        assert_eq!(
            r.close(on_a.lease_id, Billing::default()),
            Err(RegistryError::LeaseNotActive(1))
        );
        // The name can come back, fresh.
        r.add_node("a", spec(2, 10)).unwrap();
        assert_eq!(free(&r, "a"), (2, 10));
    }

    fn scratch_db(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rfaas-registry-{tag}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("resource_manager.db")
    }

    fn reopen(path: &std::path::Path) -> (Registry, Restored) {
        Registry::open(Store::open(path).unwrap()).unwrap()
    }

    fn held_lease(lease_id: u32, cores: u16, memory_mb: u32) -> HeldLease {
        HeldLease {
            lease_id,
            cores,
            memory_mb,
        }
    }

    #[test]
    fn a_lease_the_database_lost_comes_back_from_its_manager_and_its_id_stays_unused() {
        let path = scratch_db("lost");
        let (r, _) = reopen(&path);
        r.add_node("a", spec(8, 4096)).unwrap();
        r.set_manager_connected("a", true).unwrap();
        let kept = r.grant(1, 100).unwrap().lease_id;
        let lost = r.grant(2, 300).unwrap().lease_id;
        drop(r);
        // What a crash of the host may leave: the last grant never reached the disk.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("DELETE FROM leases WHERE id = ?1", [lost])
            .unwrap();
        drop(conn);

        let (r, restored) = reopen(&path);
        assert_eq!((restored.leases, restored.in_doubt), (1, 1));
        assert_eq!(free(&r, "a"), (7, 3996));
        // A new lease in the meantime does not get the lost one's id.
        r.set_manager_connected("a", true).unwrap();
        let meanwhile = r.grant(1, 1).unwrap().lease_id;
        assert_eq!(meanwhile, LEASE_ID_BLOCK + 1);
        let held = [held_lease(kept, 1, 100), held_lease(lost, 2, 300)];
        let rec = r.reconcile("a", &held).unwrap();
        assert_eq!(
            rec,
            Reconciled {
                active: vec![kept],
                released: vec![],
                adopted: vec![lost]
            }
        );
        assert_eq!(free(&r, "a"), (4, 3695));
        let back = r.lease(lost).unwrap();
        assert_eq!(
            (back.node.as_str(), back.cores, back.memory, back.state),
            ("a", 2, 300, LeaseState::Active)
        );
        // Listing the same leases again (the manager reconnects) takes nothing more.
        assert_eq!(r.reconcile("a", &held).unwrap().adopted, Vec::<u32>::new());
        // A manager of a node the registry does not have takes nothing back.
        assert!(
            r.reconcile("zz", &[held_lease(77, 1, 1)])
                .unwrap()
                .adopted
                .is_empty()
        );
        assert!(r.lease(77).is_none());
        drop(r);

        // The lease taken back is stored.
        let (r, _) = reopen(&path);
        assert_eq!(r.lease(lost).unwrap().state, LeaseState::InDoubt);
        assert_eq!(free(&r, "a"), (4, 3695));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn lease_ids_are_reserved_a_block_at_a_time_and_go_on_after_it_on_restart() {
        let path = scratch_db("ids");
        let (r, _) = reopen(&path);
        r.add_node("a", spec(1 << 20, 1 << 20)).unwrap();
        r.set_manager_connected("a", true).unwrap();
        let n = LEASE_ID_BLOCK + 2;
        let ids: Vec<u32> = (0..n).map(|_| r.grant(1, 0).unwrap().lease_id).collect();
        assert_eq!(ids, (1..=n).collect::<Vec<_>>(), "contiguous across blocks");
        drop(r);
        let (r, _) = reopen(&path);
        r.set_manager_connected("a", true).unwrap();
        assert_eq!(r.grant(1, 0).unwrap().lease_id, 2 * LEASE_ID_BLOCK + 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_restarted_registry_has_its_nodes_leases_and_bills_and_reconciles() {
        let path = scratch_db("restart");
        let (r, restored) = reopen(&path);
        assert_eq!(restored, Restored::default());
        r.add_node("a", spec(8, 4096)).unwrap();
        r.add_node("b", spec(8, 4096)).unwrap();
        r.set_manager_connected("a", true).unwrap();
        let bill = Billing {
            allocation_ns: 5,
            hot_polling_ns: 6,
            execution_ns: 7,
            invocations: 8,
        };
        let closed = r.grant(1, 100).unwrap().lease_id;
        let held = r.grant(2, 200).unwrap().lease_id;
        let billed_late = r.grant(1, 10).unwrap().lease_id;
        let gone = r.grant(1, 10).unwrap().lease_id;
        r.close(closed, bill).unwrap();
        drop(r); // as a SIGKILL would: nothing else is written

        let (r, restored) = reopen(&path);
        assert_eq!(
            restored,
            Restored {
                nodes: 2,
                leases: 4,
                in_doubt: 3,
                bills: 1
            }
        );
        assert!(r.nodes().iter().all(|n| !n.manager_connected));
        assert_eq!(
            free(&r, "a"),
            (4, 4096 - 220),
            "leases in doubt keep their resources"
        );
        assert_eq!(r.lease(closed).unwrap().billing, Some(bill));
        assert_eq!(r.lease(held).unwrap().state, LeaseState::InDoubt);
        // The manager comes back: a bill first, then the list of what it holds.
        r.set_manager_connected("a", true).unwrap();
        r.close(billed_late, bill).unwrap();
        let rec = r.reconcile("a", &[held_lease(held, 2, 200)]).unwrap();
        assert_eq!(
            rec,
            Reconciled {
                active: vec![held],
                released: vec![gone],
                adopted: vec![]
            }
        );
        assert_eq!(free(&r, "a"), (6, 4096 - 200));
        // Ids go on after the block reserved before the restart.
        let next = r.grant(1, 1).unwrap().lease_id;
        assert_eq!(next, LEASE_ID_BLOCK + 1);
        drop(r);

        let (r, restored) = reopen(&path);
        assert_eq!(
            (restored.leases, restored.in_doubt, restored.bills),
            (5, 2, 2)
        );
        let states: Vec<_> = r.leases().iter().map(|l| (l.lease_id, l.state)).collect();
        assert_eq!(
            states,
            [
                (closed, LeaseState::Closed),
                (held, LeaseState::InDoubt),
                (billed_late, LeaseState::Closed),
                (gone, LeaseState::Released),
                (next, LeaseState::InDoubt)
            ]
        );
        // Removing the node releases its open leases, in the database too.
        r.remove_node("a").unwrap();
        drop(r);
        let (r, restored) = reopen(&path);
        assert_eq!((restored.nodes, restored.in_doubt), (1, 0));
        assert!(r.leases().iter().all(|l| !l.state.is_open()));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn import_adds_what_the_database_lacks() {
        let path = scratch_db("import");
        let (r, _) = reopen(&path);
        r.add_node("a", spec(1, 1)).unwrap();
        let db: ExecutorsDatabase = serde_json::from_str(
            r#"{"executors":[
            {"node":"a","address":"10.9.9.9","port":1,"cores":9,"memory":9},
            {"node":"b","address":"10.0.0.2","port":10006,"cores":4,"memory":2048}]}"#,
        )
        .unwrap();
        assert_eq!(r.import(&db).unwrap(), ["b"]);
        assert_eq!(r.node("a").unwrap().cores, 1, "the database's node is kept");
        assert_eq!(r.import(&db).unwrap(), Vec::<String>::new());
        drop(r);
        let (r, _) = reopen(&path);
        assert_eq!(r.nodes().len(), 2);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn database_round_trip() {
        let text = r#"{"executors":[
            {"node":"n2","address":"10.0.0.2","port":10006,"cores":4,"memory":2048},
            {"node":"exec-mgr-node","address":"127.0.0.1","port":10005,"cores":1,"memory":512}]}"#;
        let db: ExecutorsDatabase = serde_json::from_str(text).unwrap();
        let r = Registry::from_database(&db).unwrap();
        let nodes = r.nodes();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].node, "exec-mgr-node", "sorted by name");
        assert!(nodes.iter().all(|n| !n.manager_connected));
        let out = r.to_database();
        let mut expected = db.executors.clone();
        expected.sort_by(|a, b| a.node.cmp(&b.node));
        assert_eq!(out.executors, expected);
        let again = Registry::from_database(&out).unwrap();
        assert_eq!(again.nodes(), nodes);

        let mut dup = db.clone();
        dup.executors.push(db.executors[0].clone());
        assert_eq!(
            Registry::from_database(&dup).unwrap_err(),
            RegistryError::DuplicateNode("n2".into())
        );
    }

    #[test]
    fn clones_share_state_across_threads() {
        let r = registry(&[("a", 64, 64)]);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    (0..8)
                        .map(|_| r.grant(1, 1).unwrap().lease_id)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut ids: Vec<u32> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=64).collect::<Vec<_>>());
        assert_eq!(free(&r, "a"), (0, 0));
    }
}
