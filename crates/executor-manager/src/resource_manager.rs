//! The manager's link to the resource manager: registration with the shared secret, then the
//! bills not acknowledged yet and the list of leases still held (so that a resource manager that
//! restarted can reconcile them), lease notices (sent before the resource manager answers the
//! client), closed leases with their billing (kept until the resource manager says
//! it stored them), and a heartbeat every [`HEARTBEAT_INTERVAL`]. Heartbeats unacknowledged for
//! [`HEARTBEAT_TIMEOUT`] mean the resource manager is gone (or the link to it is cut): the link
//! reports itself broken and the manager registers again.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rdmalib::{
    Completion, CompletionQueue, Connection, Context, Opcode, ProtectionDomain, QpConfig,
};
use rfaas_protocol::Record;
use rfaas_protocol::config::ManagerSection;
use rfaas_protocol::control::{
    BillRecorded, HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, HeldLease, Hello, LeaseClosed,
    LeaseNotice, LeasesHeld, MessageKind, NodeRegistration,
};
use rfaas_protocol::mailbox::Mailbox;

/// Receive slots on the link.
const SLOTS: usize = 8;
/// A lease nobody allocates within this time is returned to the pool.
pub const UNUSED_LEASE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bills sent (or to send) and not acknowledged yet, by lease.
pub type Unacked = BTreeMap<u32, LeaseClosed>;

/// A lease the resource manager announced.
pub struct KnownLease {
    pub cores: u16,
    pub memory_mb: u32,
    pub announced: Instant,
}

pub struct ResourceManagerLink {
    conn: Connection,
    send_cq: CompletionQueue,
    recv_cq: CompletionQueue,
    mailbox: Mailbox,
    pub leases: HashMap<u32, KnownLease>,
    address: SocketAddr,
    /// When the last heartbeat went out.
    last_heartbeat: Instant,
    /// Heartbeats sent whose completion has not been seen.
    heartbeats_in_flight: usize,
    /// When the last send completed.
    last_ack: Instant,
}

impl ResourceManagerLink {
    /// Connects with the shared secret and registers `node_name`, waiting at most `timeout`
    /// for the resource manager to answer; then sends the bills in `unacked` again and lists
    /// the leases it holds: `allocated` and the announced `leases` not used yet (carried over
    /// from the link before; the new link takes them once it is up).
    pub fn connect(
        ctx: &Context,
        pd: &ProtectionDomain,
        config: &ManagerSection,
        timeout: Duration,
        unacked: &Unacked,
        allocated: &[HeldLease],
        leases: &mut HashMap<u32, KnownLease>,
    ) -> Result<ResourceManagerLink> {
        let address = config
            .resource_manager()?
            .context("the configuration names no resource manager")?;
        let send_cq = ctx.create_cq(16)?;
        let recv_cq = ctx.create_cq(64)?;
        let secret = &config.resource_manager_secret;
        if secret.is_the_example() && !address.ip().is_loopback() {
            tracing::warn!(
                "the shared secret is the example configuration's 42, and the resource manager is at {address}: set resource_manager_secret to a secret of your own"
            );
        }
        let hello = Hello::executor_manager(secret.digest());
        let conn = ctx
            .connect(
                pd,
                address,
                &QpConfig::new(&send_cq, &recv_cq)
                    .max_recv_wr(SLOTS as u32)
                    .timeout(timeout),
                &hello.encode(),
            )
            .map_err(|e| match e {
                rdmalib::Error::Rejected { private_data } => {
                    anyhow::anyhow!(
                        "the resource manager at {address} refused us: {}",
                        rfaas_protocol::control::private_text(&private_data)
                    )
                }
                other => anyhow::anyhow!("cannot reach the resource manager at {address}: {other}"),
            })?;
        let mailbox = Mailbox::new(pd, SLOTS, 1)?;
        mailbox.post_receives(&conn)?;
        let mut link = ResourceManagerLink {
            conn,
            send_cq,
            recv_cq,
            mailbox,
            leases: HashMap::new(),
            address,
            last_heartbeat: Instant::now(),
            heartbeats_in_flight: 0,
            last_ack: Instant::now(),
        };
        link.send(
            MessageKind::NodeRegistration,
            &NodeRegistration {
                node: config.node_name.clone(),
            }
            .encode(),
        )?;
        tracing::info!(
            "Registered node {} with the resource manager at {address}",
            config.node_name
        );
        for bill in unacked.values() {
            link.close(*bill)?;
        }
        let mut held: Vec<HeldLease> = allocated.to_vec();
        held.extend(leases.iter().map(|(&lease_id, l)| HeldLease {
            lease_id,
            cores: l.cores,
            memory_mb: l.memory_mb,
        }));
        held.sort_unstable_by_key(|l| l.lease_id);
        held.dedup_by_key(|l| l.lease_id);
        for record in LeasesHeld::split(&held) {
            link.send(MessageKind::LeasesHeld, &record.encode())?;
        }
        if !unacked.is_empty() || !held.is_empty() {
            tracing::info!(
                "Sent the resource manager {} bill(s) again and {} lease(s) held",
                unacked.len(),
                held.len()
            );
        }
        let mut link = link;
        link.leases = std::mem::take(leases);
        Ok(link)
    }

    /// Arms the receive queue for [`rdmalib::wait_any`].
    pub fn arm(&self) -> Result<()> {
        Ok(self.recv_cq.req_notify(false)?)
    }

    /// The receive queue, to wait on.
    pub fn cq(&self) -> &CompletionQueue {
        &self.recv_cq
    }

    /// Sends a heartbeat when one is due, without waiting for it; fails when heartbeats have
    /// gone unacknowledged for [`HEARTBEAT_TIMEOUT`].
    fn heartbeat(&mut self) -> Result<()> {
        let mut wcs = [Completion::default(); 8];
        loop {
            let n = self.send_cq.poll(&mut wcs)?;
            for wc in &wcs[..n] {
                self.acknowledged(wc)?;
            }
            if n < wcs.len() {
                break;
            }
        }
        if self.heartbeats_in_flight > 0 && self.last_ack.elapsed() > HEARTBEAT_TIMEOUT {
            bail!(
                "the resource manager at {} acknowledged no heartbeat for {:.1} s",
                self.address,
                self.last_ack.elapsed().as_secs_f64()
            );
        }
        if self.last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL {
            if self.heartbeats_in_flight == 0 {
                // Silence is measured from the first heartbeat left unanswered.
                self.last_ack = Instant::now();
            }
            self.mailbox.send(&self.conn, MessageKind::Heartbeat, &[])?;
            self.heartbeats_in_flight += 1;
            self.last_heartbeat = Instant::now();
        }
        Ok(())
    }

    /// A send completed: a heartbeat's, in order.
    fn acknowledged(&mut self, wc: &Completion) -> Result<()> {
        if !wc.is_ok() {
            bail!(
                "the connection to the resource manager at {} broke ({:?})",
                self.address,
                wc.status
            );
        }
        self.heartbeats_in_flight = self.heartbeats_in_flight.saturating_sub(1);
        self.last_ack = Instant::now();
        Ok(())
    }

    /// Sends heartbeats; takes lease notices (and acknowledges them) and acknowledged bills
    /// (removed from `unacked`); expires leases nobody used (their empty bills go into
    /// `unacked`). Returns whether a message came.
    pub fn poll(&mut self, unacked: &mut Unacked) -> Result<bool> {
        self.heartbeat()?;
        let mut wcs = [Completion::default(); 8];
        let n = self.recv_cq.poll(&mut wcs)?;
        for wc in &wcs[..n] {
            if !wc.is_ok() {
                bail!(
                    "the connection to the resource manager at {} broke",
                    self.address
                );
            }
            if wc.opcode != Some(Opcode::Recv) {
                continue;
            }
            let message = self.mailbox.take(&self.conn, wc)?;
            if message.kind == Some(MessageKind::BillRecorded) {
                match BillRecorded::decode(&message.payload) {
                    Ok(ack) => {
                        unacked.remove(&ack.lease_id);
                    }
                    Err(e) => tracing::warn!("malformed message from the resource manager: {e}"),
                }
                continue;
            }
            match (message.kind, LeaseNotice::decode(&message.payload)) {
                (Some(MessageKind::LeaseNotice), Ok(notice)) => {
                    tracing::info!(
                        "Lease {}: {} core(s), {} MiB announced",
                        notice.lease_id,
                        notice.cores,
                        notice.memory_mb
                    );
                    self.leases.insert(
                        notice.lease_id,
                        KnownLease {
                            cores: notice.cores,
                            memory_mb: notice.memory_mb,
                            announced: Instant::now(),
                        },
                    );
                }
                (kind, _) => {
                    tracing::warn!("unexpected message from the resource manager: {kind:?}")
                }
            }
        }
        let expired: Vec<u32> = self
            .leases
            .iter()
            .filter(|(_, l)| l.announced.elapsed() > UNUSED_LEASE_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for lease_id in expired {
            self.leases.remove(&lease_id);
            tracing::info!(
                "Lease {lease_id} was not used within {UNUSED_LEASE_TIMEOUT:?}; returning it"
            );
            let bill = LeaseClosed {
                lease_id,
                ..LeaseClosed::default()
            };
            unacked.insert(lease_id, bill);
            self.close(bill)?;
        }
        Ok(n > 0)
    }

    /// Reports a lease's end with its billing (the caller keeps it in its [`Unacked`] until
    /// the resource manager acknowledges it).
    pub fn close(&mut self, closed: LeaseClosed) -> Result<()> {
        self.send(MessageKind::LeaseClosed, &closed.encode())
    }

    fn send(&mut self, kind: MessageKind, payload: &[u8]) -> Result<()> {
        self.mailbox.send(&self.conn, kind, payload)?;
        // The send slot is reused by the next message: wait until this one has left (after
        // the heartbeats before it; completions come in order).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wc = self
                .send_cq
                .wait_one(Some(left))?
                .with_context(|| format!("the resource manager did not take a {kind:?} message"))?;
            if !wc.is_ok() {
                bail!(
                    "sending {kind:?} to the resource manager failed: {:?}",
                    wc.status
                );
            }
            self.last_ack = Instant::now();
            if self.heartbeats_in_flight == 0 {
                return Ok(());
            }
            self.heartbeats_in_flight -= 1;
        }
    }
}
