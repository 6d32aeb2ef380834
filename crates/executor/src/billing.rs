//! Billing: when an allocation ends, the executor adds its hot-polling time, execution time
//! and invocation count into its manager's accounting record with RDMA fetch-and-add. The
//! manager never polls this connection (it asks for background progress), as in rFaaS.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use rdmalib::{Access, Context, ProtectionDomain, QpConfig, RemoteBuffer, SendFlags};
use rfaas_protocol::Record;
use rfaas_protocol::control::{BillingRecord, Hello, billing};

use crate::worker::WorkerStats;

/// Adds `stats` into the manager's record for `allocation_id`.
pub fn report(
    ctx: &Context,
    pd: &ProtectionDomain,
    manager: SocketAddr,
    allocation_id: u32,
    stats: &WorkerStats,
) -> Result<()> {
    let cq = ctx.create_cq(8)?;
    let conn = ctx
        .connect(
            pd,
            manager,
            &QpConfig::new(&cq, &cq),
            &Hello::billing(allocation_id).encode(),
        )
        .with_context(|| format!("connecting to the manager at {manager} for billing"))?;
    let BillingRecord { addr, rkey } = BillingRecord::decode(conn.peer_private_data())
        .context("the manager sent no accounting record")?;
    let old_values = pd.register(24, Access::LOCAL_WRITE)?;
    let counters = [
        (billing::HOT_POLLING_NS, stats.hot_polling_ns),
        (billing::EXECUTION_NS, stats.execution_ns),
        (billing::INVOCATIONS, stats.invocations),
    ];
    for (i, (offset, value)) in counters.iter().enumerate() {
        let remote = RemoteBuffer {
            addr: addr + u64::from(*offset),
            rkey,
            len: 8,
        };
        conn.post_fetch_add(
            i as u64,
            old_values.sge(i * 8, 8)?,
            remote,
            *value,
            SendFlags::SIGNALED,
        )?;
    }
    for _ in 0..counters.len() {
        let wc = cq
            .wait_one(Some(Duration::from_secs(5)))?
            .context("the manager did not answer the billing atomics")?;
        if !wc.is_ok() {
            bail!("a billing atomic failed: {:?}", wc.status);
        }
    }
    conn.disconnect();
    Ok(())
}
