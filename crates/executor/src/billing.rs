//! Billing: the executor adds its threads' hot-polling time, execution time and invocation
//! count into its allocation's accounting record at the manager with RDMA fetch-and-add, every
//! [`FLUSH_INTERVAL`] and at the end, so a crash loses at most that much. The manager never
//! polls this connection (it asks for background progress), as in rFaaS; the connection also
//! tells the executor when its manager goes away.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use rdmalib::{
    Access, CompletionQueue, Connection, Context, MemoryRegion, ProtectionDomain, QpConfig,
    RemoteBuffer, SendFlags,
};
use rfaas_protocol::Record;
use rfaas_protocol::control::{BillingRecord, Credential, Hello, billing};

use crate::meter::Reading;

/// How often the counters are added into the manager's record.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How long the manager may take to answer the atomics of one flush.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection to the manager's accounting record of this allocation.
pub struct Billing {
    conn: Connection,
    cq: CompletionQueue,
    record: RemoteBuffer,
    /// Where the atomics' old values land (unused, but an atomic needs somewhere to put them).
    old_values: MemoryRegion,
    /// What earlier flushes added.
    reported: Reading,
}

impl Billing {
    /// Connects to the manager at `manager` with the allocation's billing `token`.
    pub fn connect(
        ctx: &Context,
        pd: &ProtectionDomain,
        manager: SocketAddr,
        allocation_id: u32,
        token: Credential,
    ) -> Result<Billing> {
        let cq = ctx.create_cq(8)?;
        let hello = Hello::billing(allocation_id, token);
        let conn = ctx
            .connect(pd, manager, &QpConfig::new(&cq, &cq), &hello.encode())
            .with_context(|| format!("connecting to the manager at {manager} for billing"))?;
        let BillingRecord { addr, rkey } = BillingRecord::decode(conn.peer_private_data())
            .context("the manager sent no accounting record")?;
        Ok(Billing {
            conn,
            cq,
            record: RemoteBuffer {
                addr,
                rkey,
                len: billing::RECORD_LEN as u32,
            },
            old_values: pd.register(24, Access::LOCAL_WRITE)?,
            reported: Reading::default(),
        })
    }

    /// Whether the manager is still there.
    pub fn is_connected(&self) -> bool {
        self.conn.is_connected()
    }

    /// Adds what `total` has beyond the earlier flushes into the record.
    pub fn flush(&mut self, total: Reading) -> Result<()> {
        let deltas = [
            (
                billing::HOT_POLLING_NS,
                total
                    .hot_polling_ns
                    .saturating_sub(self.reported.hot_polling_ns),
            ),
            (
                billing::EXECUTION_NS,
                total
                    .execution_ns
                    .saturating_sub(self.reported.execution_ns),
            ),
            (
                billing::INVOCATIONS,
                total.invocations.saturating_sub(self.reported.invocations),
            ),
        ];
        let mut posted = 0;
        for (i, (offset, delta)) in deltas.into_iter().enumerate() {
            if delta == 0 {
                continue;
            }
            self.conn.post_fetch_add(
                i as u64,
                self.old_values.sge(i * 8, 8)?,
                self.record.offset(offset),
                delta,
                SendFlags::SIGNALED,
            )?;
            posted += 1;
        }
        for _ in 0..posted {
            let wc = self
                .cq
                .wait_one(Some(ANSWER_TIMEOUT))?
                .context("the manager did not answer the billing atomics")?;
            if !wc.is_ok() {
                bail!("a billing atomic failed: {:?}", wc.status);
            }
        }
        // A reading may lag a little behind one taken earlier (hot polling is derived):
        // what was reported stays reported.
        self.reported = Reading {
            hot_polling_ns: total.hot_polling_ns.max(self.reported.hot_polling_ns),
            execution_ns: total.execution_ns.max(self.reported.execution_ns),
            invocations: total.invocations.max(self.reported.invocations),
        };
        Ok(())
    }

    /// Ends the connection (after the last flush).
    pub fn close(self) {
        self.conn.disconnect();
    }
}
