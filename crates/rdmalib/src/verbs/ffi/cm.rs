//! The connection manager: event channels, cm ids and their queue pairs, work requests.

use super::*;

/// An `rdma_event_channel` with a non-blocking fd.
pub(in crate::verbs) struct EventChannel {
    ch: NonNull<sys::rdma_event_channel>,
    fd: RawFd,
}

// SAFETY: rdma_get_cm_event/rdma_ack_cm_event are thread-safe; the channel is only destroyed
// in Drop, after every cm id on it (each holds an Arc<EventChannel>).
unsafe impl Send for EventChannel {}
// SAFETY: see Send.
unsafe impl Sync for EventChannel {}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // SAFETY: created in `create`; all ids on it are destroyed (they hold Arcs on it) and
        // all events were acknowledged (invariant 4).
        unsafe { sys::rdma_destroy_event_channel(self.ch.as_ptr()) };
    }
}

/// A CM event, copied out of librdmacm's event (which is acknowledged already).
pub(in crate::verbs) struct CmEvent {
    /// `RDMA_CM_EVENT_*`.
    pub kind: u32,
    /// The event's status: negative errno, or a transport reason (IB CM reject reason).
    pub status: i32,
    /// [`CmId::key`] of the id the event is about (the new id for a connect request).
    pub id: usize,
    /// [`CmId::key`] of the listening id, for a connect request.
    pub listen_id: usize,
    /// Private data of connect requests, rejects and establishment.
    pub private_data: Vec<u8>,
    /// The peer's initiator depth (connect requests).
    pub initiator_depth: u8,
    /// The peer's responder resources (connect requests).
    pub responder_resources: u8,
    /// The new id of a connect request, now owned by us.
    pub request: Option<CmId>,
}

impl EventChannel {
    pub(in crate::verbs) fn create() -> Result<Arc<EventChannel>> {
        // SAFETY: no arguments; returns NULL (errno set) or a new channel we own.
        let ch = unsafe { sys::rdma_create_event_channel() };
        let ch = NonNull::new(ch)
            .ok_or_else(|| errno_error(|| "rdma_create_event_channel".to_string()))?;
        // SAFETY: the channel is live; `fd` is set by its creation and never changes.
        let fd = unsafe { (*ch.as_ptr()).fd };
        let channel = Arc::new(EventChannel { ch, fd });
        set_nonblocking(fd)
            .map_err(|e| Error::io("making the rdma_cm event channel non-blocking", e))?;
        Ok(channel)
    }

    pub(in crate::verbs) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Takes the next event without blocking (`Ok(None)` when there is none), copies it and
    /// acknowledges it (invariant 4).
    pub(in crate::verbs) fn next_event(self: &Arc<Self>) -> Result<Option<CmEvent>> {
        let mut event: *mut sys::rdma_cm_event = ptr::null_mut();
        // SAFETY: the channel is live and `event` is a valid out pointer.
        let ret = unsafe { sys::rdma_get_cm_event(self.ch.as_ptr(), &mut event) };
        if ret != 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(Error::io("rdma_get_cm_event", e)),
            };
        }
        let Some(event) = NonNull::new(event) else {
            return Err(Error::io(
                "rdma_get_cm_event",
                io::Error::other("returned no event"),
            ));
        };
        // SAFETY: a successful rdma_get_cm_event hands out a valid event that stays valid
        // until it is acknowledged below.
        let copy = unsafe { self.copy_event(event) };
        // SAFETY: the event came from rdma_get_cm_event on this channel; it is acknowledged
        // exactly once and not read afterwards.
        if unsafe { sys::rdma_ack_cm_event(event.as_ptr()) } != 0 {
            tracing::warn!("rdma_ack_cm_event: {}", io::Error::last_os_error());
        }
        Ok(Some(copy))
    }

    /// # Safety
    ///
    /// `event` must be a valid, not yet acknowledged event of this channel.
    unsafe fn copy_event(self: &Arc<Self>, event: NonNull<sys::rdma_cm_event>) -> CmEvent {
        // SAFETY: valid per this function's contract; only read.
        let e = unsafe { event.as_ref() };
        let kind = e.event;
        let with_conn_param = matches!(
            kind,
            ev::RDMA_CM_EVENT_CONNECT_REQUEST
                | ev::RDMA_CM_EVENT_CONNECT_RESPONSE
                | ev::RDMA_CM_EVENT_REJECTED
                | ev::RDMA_CM_EVENT_ESTABLISHED
        );
        let (private_data, initiator_depth, responder_resources) = if with_conn_param {
            // SAFETY: for these events of an RDMA_PS_TCP id, librdmacm fills `param.conn`.
            let p = unsafe { e.param.conn };
            let data = if p.private_data.is_null() || p.private_data_len == 0 {
                Vec::new()
            } else {
                // SAFETY: librdmacm points `private_data` at `private_data_len` bytes that
                // live as long as the event.
                unsafe {
                    std::slice::from_raw_parts(
                        p.private_data.cast::<u8>(),
                        usize::from(p.private_data_len),
                    )
                }
                .to_vec()
            };
            (data, p.initiator_depth, p.responder_resources)
        } else {
            (Vec::new(), 0, 0)
        };
        let request = if kind == ev::RDMA_CM_EVENT_CONNECT_REQUEST {
            // A connect request hands us a new id on this channel, which we must destroy.
            NonNull::new(e.id).map(|id| CmId {
                id,
                qp: None,
                _channel: self.clone(),
            })
        } else {
            None
        };
        CmEvent {
            kind,
            status: e.status,
            id: e.id as usize,
            listen_id: e.listen_id as usize,
            private_data,
            initiator_depth,
            responder_resources,
            request,
        }
    }
}

/// Name of an `RDMA_CM_EVENT_*` value, for messages.
pub(in crate::verbs) fn event_name(kind: u32) -> &'static str {
    match kind {
        ev::RDMA_CM_EVENT_ADDR_RESOLVED => "ADDR_RESOLVED",
        ev::RDMA_CM_EVENT_ADDR_ERROR => "ADDR_ERROR",
        ev::RDMA_CM_EVENT_ROUTE_RESOLVED => "ROUTE_RESOLVED",
        ev::RDMA_CM_EVENT_ROUTE_ERROR => "ROUTE_ERROR",
        ev::RDMA_CM_EVENT_CONNECT_REQUEST => "CONNECT_REQUEST",
        ev::RDMA_CM_EVENT_CONNECT_RESPONSE => "CONNECT_RESPONSE",
        ev::RDMA_CM_EVENT_CONNECT_ERROR => "CONNECT_ERROR",
        ev::RDMA_CM_EVENT_UNREACHABLE => "UNREACHABLE",
        ev::RDMA_CM_EVENT_REJECTED => "REJECTED",
        ev::RDMA_CM_EVENT_ESTABLISHED => "ESTABLISHED",
        ev::RDMA_CM_EVENT_DISCONNECTED => "DISCONNECTED",
        ev::RDMA_CM_EVENT_DEVICE_REMOVAL => "DEVICE_REMOVAL",
        ev::RDMA_CM_EVENT_ADDR_CHANGE => "ADDR_CHANGE",
        ev::RDMA_CM_EVENT_TIMEWAIT_EXIT => "TIMEWAIT_EXIT",
        _ => "unknown rdma_cm event",
    }
}

/// QP capabilities (one SGE each way).
#[derive(Clone, Copy, Debug)]
pub(in crate::verbs) struct QpCaps {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_inline_data: u32,
}

/// Connection parameters of `rdma_connect`/`rdma_accept`.
pub(in crate::verbs) struct ConnParams<'a> {
    pub private_data: &'a [u8],
    pub responder_resources: u8,
    pub initiator_depth: u8,
}

impl ConnParams<'_> {
    fn raw(&self) -> Result<sys::rdma_conn_param> {
        let len = u8::try_from(self.private_data.len()).map_err(|_| {
            Error::InvalidArgument(format!(
                "{} bytes of private data; rdma_cm allows 255",
                self.private_data.len()
            ))
        })?;
        Ok(sys::rdma_conn_param {
            private_data: if len == 0 {
                ptr::null()
            } else {
                self.private_data.as_ptr().cast()
            },
            private_data_len: len,
            responder_resources: self.responder_resources,
            initiator_depth: self.initiator_depth,
            flow_control: 1,
            // As rFaaS: the most transport and receiver-not-ready retries (7 = RNR forever).
            retry_count: 7,
            rnr_retry_count: 7,
            srq: 0,
            qp_num: 0,
        })
    }
}

/// What a send-queue work request does.
#[derive(Clone, Copy, Debug)]
pub(in crate::verbs) enum SendOp {
    Send {
        imm: Option<u32>,
    },
    Write {
        remote: RemoteBuffer,
        imm: Option<u32>,
    },
    FetchAdd {
        remote: RemoteBuffer,
        add: u64,
    },
}

impl SendOp {
    fn name(self) -> &'static str {
        match self {
            SendOp::Send { imm: None } => "send",
            SendOp::Send { imm: Some(_) } => "send with immediate",
            SendOp::Write { imm: None, .. } => "RDMA write",
            SendOp::Write { imm: Some(_), .. } => "RDMA write with immediate",
            SendOp::FetchAdd { .. } => "atomic fetch-and-add",
        }
    }
}

struct QpParts {
    qp: NonNull<sys::ibv_qp>,
    qp_num: u32,
    _pd: Arc<Pd>,
    _send_cq: Arc<Cq>,
    _recv_cq: Arc<Cq>,
}

/// An `rdma_cm_id` on an [`EventChannel`], with its RC QP once [`create_qp`](Self::create_qp)
/// made one.
pub(in crate::verbs) struct CmId {
    id: NonNull<sys::rdma_cm_id>,
    qp: Option<QpParts>,
    _channel: Arc<EventChannel>,
}

// SAFETY: librdmacm calls on one id may come from any thread, and posting/modifying its QP is
// thread-safe (invariant 3). The fields of the C id we read (`verbs`, the route's addresses,
// `qp`) are set by bind/resolve/create_qp, which run before the id is shared.
unsafe impl Send for CmId {}
// SAFETY: see Send.
unsafe impl Sync for CmId {}

impl Drop for CmId {
    fn drop(&mut self) {
        if self.qp.is_some() {
            // SAFETY: the QP was created by rdma_create_qp on this id and is destroyed once.
            unsafe { sys::rdma_destroy_qp(self.id.as_ptr()) };
        }
        // SAFETY: the id is ours and destroyed once; its QP is gone and all its events are
        // acknowledged (invariant 4), so this does not block.
        if unsafe { sys::rdma_destroy_id(self.id.as_ptr()) } != 0 {
            tracing::warn!("rdma_destroy_id: {}", io::Error::last_os_error());
        }
    }
}

impl CmId {
    /// `rdma_create_id` on `channel`, for reliable connections (`RDMA_PS_TCP`).
    pub(in crate::verbs) fn create(channel: &Arc<EventChannel>) -> Result<CmId> {
        let mut id: *mut sys::rdma_cm_id = ptr::null_mut();
        // SAFETY: the channel is live and `id` is a valid out pointer.
        let ret = unsafe {
            sys::rdma_create_id(
                channel.ch.as_ptr(),
                &mut id,
                ptr::null_mut(),
                sys::rdma_port_space::RDMA_PS_TCP,
            )
        };
        check_cm(ret, || "rdma_create_id".to_string())?;
        let id = NonNull::new(id)
            .ok_or_else(|| Error::io("rdma_create_id", io::Error::other("returned no id")))?;
        Ok(CmId {
            id,
            qp: None,
            _channel: channel.clone(),
        })
    }

    /// Identifies the id in events ([`CmEvent::id`], [`CmEvent::listen_id`]).
    pub(in crate::verbs) fn key(&self) -> usize {
        self.id.as_ptr() as usize
    }

    /// The device context the id is bound to ([`Device::key`]), 0 when unbound.
    pub(in crate::verbs) fn device_key(&self) -> usize {
        // SAFETY: the id is live; `verbs` is set by bind/resolve/connect request.
        unsafe { (*self.id.as_ptr()).verbs as usize }
    }

    /// `rdma_bind_addr`.
    pub(in crate::verbs) fn bind(&self, addr: SocketAddr) -> Result<()> {
        let mut sa = sockaddr_from(addr);
        // SAFETY: the id is live; `sa` holds a valid sockaddr of the family it declares and
        // librdmacm copies it.
        let ret = unsafe { sys::rdma_bind_addr(self.id.as_ptr(), (&raw mut sa).cast()) };
        check_cm(ret, || format!("rdma_bind_addr to {addr}"))
    }

    /// `rdma_listen`.
    pub(in crate::verbs) fn listen(&self, backlog: c_int) -> Result<()> {
        // SAFETY: the id is live and bound.
        let ret = unsafe { sys::rdma_listen(self.id.as_ptr(), backlog) };
        check_cm(ret, || "rdma_listen".to_string())
    }

    /// `rdma_resolve_addr` from `src` (or any local address) to `dst`.
    pub(in crate::verbs) fn resolve_addr(
        &self,
        src: Option<SocketAddr>,
        dst: SocketAddr,
        timeout_ms: c_int,
    ) -> Result<()> {
        let mut src_sa = src.map(sockaddr_from);
        let mut dst_sa = sockaddr_from(dst);
        let src_ptr = match &mut src_sa {
            Some(sa) => ptr::from_mut(sa).cast(),
            None => ptr::null_mut(),
        };
        // SAFETY: the id is live; the sockaddrs are valid for the call and copied by it.
        let ret = unsafe {
            sys::rdma_resolve_addr(
                self.id.as_ptr(),
                src_ptr,
                (&raw mut dst_sa).cast(),
                timeout_ms,
            )
        };
        check_cm(ret, || format!("rdma_resolve_addr to {dst}"))
    }

    /// `rdma_resolve_route`.
    pub(in crate::verbs) fn resolve_route(&self, timeout_ms: c_int) -> Result<()> {
        // SAFETY: the id is live with a resolved address.
        let ret = unsafe { sys::rdma_resolve_route(self.id.as_ptr(), timeout_ms) };
        check_cm(ret, || "rdma_resolve_route".to_string())
    }

    /// The local address (after bind, resolve or a connect request).
    pub(in crate::verbs) fn local_addr(&self) -> Option<SocketAddr> {
        // SAFETY: the id is live; the route's address union is sockaddr storage that librdmacm
        // zero-initialises and fills; we copy it.
        let sa = unsafe { (*self.id.as_ptr()).route.addr.src_addr_union.src_storage };
        sockaddr_to(&sa)
    }

    /// The peer's address (after resolve or a connect request).
    pub(in crate::verbs) fn peer_addr(&self) -> Option<SocketAddr> {
        // SAFETY: as in `local_addr`.
        let sa = unsafe { (*self.id.as_ptr()).route.addr.dst_addr_union.dst_storage };
        sockaddr_to(&sa)
    }

    /// `rdma_create_qp`: an RC QP on `pd` with the given CQs and one SGE each way; returns
    /// its number. The QP keeps `pd` and the CQs alive.
    pub(in crate::verbs) fn create_qp(
        &mut self,
        pd: &Arc<Pd>,
        send_cq: &Arc<Cq>,
        recv_cq: &Arc<Cq>,
        caps: QpCaps,
    ) -> Result<u32> {
        if self.qp.is_some() {
            return Err(Error::InvalidArgument(
                "the connection already has a queue pair".into(),
            ));
        }
        let mut attr = sys::ibv_qp_init_attr {
            qp_context: ptr::null_mut(),
            send_cq: send_cq.raw(),
            recv_cq: recv_cq.raw(),
            srq: ptr::null_mut(),
            cap: sys::ibv_qp_cap {
                max_send_wr: caps.max_send_wr,
                max_recv_wr: caps.max_recv_wr,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: caps.max_inline_data,
            },
            qp_type: sys::ibv_qp_type::IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: the id is live and bound to the PD's device (callers check); PD and CQs are
        // live and kept alive by the QpParts stored below; `attr` is valid for the call.
        let ret = unsafe { sys::rdma_create_qp(self.id.as_ptr(), pd.raw(), &mut attr) };
        check_cm(ret, || {
            format!(
                "rdma_create_qp (RC, {} send / {} receive requests, {} B inline)",
                caps.max_send_wr, caps.max_recv_wr, caps.max_inline_data
            )
        })?;
        // SAFETY: a successful rdma_create_qp stores the new QP in the id.
        let qp = unsafe { (*self.id.as_ptr()).qp };
        let Some(qp) = NonNull::new(qp) else {
            return Err(Error::io(
                "rdma_create_qp",
                io::Error::other("no QP was created"),
            ));
        };
        // SAFETY: the QP is live; its number never changes.
        let qp_num = unsafe { (*qp.as_ptr()).qp_num };
        self.qp = Some(QpParts {
            qp,
            qp_num,
            _pd: pd.clone(),
            _send_cq: send_cq.clone(),
            _recv_cq: recv_cq.clone(),
        });
        Ok(qp_num)
    }

    /// `rdma_connect`.
    pub(in crate::verbs) fn connect(&self, params: &ConnParams<'_>) -> Result<()> {
        let mut p = params.raw()?;
        // SAFETY: the id is live with a resolved route and a QP; `p` and the private data it
        // points to outlive the call, which copies them.
        let ret = unsafe { sys::rdma_connect(self.id.as_ptr(), &mut p) };
        check_cm(ret, || "rdma_connect".to_string())
    }

    /// `rdma_accept`.
    pub(in crate::verbs) fn accept(&self, params: &ConnParams<'_>) -> Result<()> {
        let mut p = params.raw()?;
        // SAFETY: the id is a connect request's id with a QP; `p` and the private data
        // outlive the call, which copies them.
        let ret = unsafe { sys::rdma_accept(self.id.as_ptr(), &mut p) };
        check_cm(ret, || "rdma_accept".to_string())
    }

    /// `rdma_reject` with `private_data`.
    pub(in crate::verbs) fn reject(&self, private_data: &[u8]) -> Result<()> {
        let len = u8::try_from(private_data.len()).map_err(|_| {
            Error::InvalidArgument(format!(
                "{} bytes of private data; rdma_cm allows 255",
                private_data.len()
            ))
        })?;
        let data = if len == 0 {
            ptr::null()
        } else {
            private_data.as_ptr().cast()
        };
        // SAFETY: the id is a connect request's id; the data outlives the call, which copies it.
        let ret = unsafe { sys::rdma_reject(self.id.as_ptr(), data, len) };
        check_cm(ret, || "rdma_reject".to_string())
    }

    /// `rdma_disconnect` (which also moves an IB/RoCE QP to the error state).
    pub(in crate::verbs) fn disconnect(&self) -> Result<()> {
        // SAFETY: the id is live.
        let ret = unsafe { sys::rdma_disconnect(self.id.as_ptr()) };
        check_cm(ret, || "rdma_disconnect".to_string())
    }

    /// `ibv_modify_qp` to `IBV_QPS_ERR`: outstanding requests complete with a flush error.
    pub(in crate::verbs) fn set_qp_error(&self) -> Result<()> {
        let Some(q) = &self.qp else { return Ok(()) };
        // SAFETY: all-zero is a valid ibv_qp_attr (integers and plain structs).
        let mut attr: sys::ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = sys::ibv_qp_state::IBV_QPS_ERR;
        let mask = sys::ibv_qp_attr_mask::IBV_QP_STATE.0 as c_int;
        // SAFETY: the QP is live (destroyed only in Drop); only its state is changed.
        let ret = unsafe { sys::ibv_modify_qp(q.qp.as_ptr(), &mut attr, mask) };
        check_ibv(ret, || {
            format!("ibv_modify_qp of QP {} to the error state", q.qp_num)
        })
    }

    fn qp(&self) -> Result<&QpParts> {
        self.qp.as_ref().ok_or_else(|| {
            Error::InvalidArgument("the connection manager id has no queue pair".into())
        })
    }

    /// `ibv_post_recv` of one SGE (none when `sge` is empty).
    #[inline]
    pub(in crate::verbs) fn post_recv(&self, wr_id: u64, sge: RawSge) -> Result<()> {
        let q = self.qp()?;
        let mut list = sys::ibv_sge {
            addr: sge.addr as u64,
            length: sge.len,
            lkey: sge.lkey,
        };
        let mut wr = sys::ibv_recv_wr {
            wr_id,
            next: ptr::null_mut(),
            sg_list: &mut list,
            num_sge: c_int::from(sge.len > 0),
        };
        let mut bad: *mut sys::ibv_recv_wr = ptr::null_mut();
        // SAFETY: the QP is live; `wr` and `list` are valid for the call (the provider copies
        // them); the buffer lies in a live registered region (invariant 5).
        let ret = unsafe { sys::ibv_post_recv(q.qp.as_ptr(), &mut wr, &mut bad) };
        check_ibv(ret, || format!("ibv_post_recv on QP {}", q.qp_num))
    }

    /// `ibv_post_send` of one request with one SGE (none when `sge` is empty).
    #[inline]
    pub(in crate::verbs) fn post_send(
        &self,
        wr_id: u64,
        sge: RawSge,
        op: SendOp,
        flags: SendFlags,
    ) -> Result<()> {
        let q = self.qp()?;
        let mut list = sys::ibv_sge {
            addr: sge.addr as u64,
            length: sge.len,
            lkey: sge.lkey,
        };
        // SAFETY: all-zero is a valid ibv_send_wr (integers, null pointers, unions of them).
        let mut wr: sys::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.sg_list = &mut list;
        wr.num_sge = c_int::from(sge.len > 0);
        let mut send_flags = sys::ibv_send_flags(0);
        if flags.signaled {
            send_flags |= sys::ibv_send_flags::IBV_SEND_SIGNALED;
        }
        if flags.inline && !matches!(op, SendOp::FetchAdd { .. }) {
            send_flags |= sys::ibv_send_flags::IBV_SEND_INLINE;
        }
        if flags.solicited {
            send_flags |= sys::ibv_send_flags::IBV_SEND_SOLICITED;
        }
        wr.send_flags = send_flags.0;
        match op {
            SendOp::Send { imm } => {
                wr.opcode = match imm {
                    Some(_) => sys::ibv_wr_opcode::IBV_WR_SEND_WITH_IMM,
                    None => sys::ibv_wr_opcode::IBV_WR_SEND,
                };
                wr.imm_data_invalidated_rkey_union.imm_data = imm.unwrap_or(0).to_be();
            }
            SendOp::Write { remote, imm } => {
                wr.opcode = match imm {
                    Some(_) => sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM,
                    None => sys::ibv_wr_opcode::IBV_WR_RDMA_WRITE,
                };
                wr.imm_data_invalidated_rkey_union.imm_data = imm.unwrap_or(0).to_be();
                wr.wr.rdma = sys::rdma_t {
                    remote_addr: remote.addr,
                    rkey: remote.rkey,
                };
            }
            SendOp::FetchAdd { remote, add } => {
                wr.opcode = sys::ibv_wr_opcode::IBV_WR_ATOMIC_FETCH_AND_ADD;
                wr.wr.atomic = sys::atomic_t {
                    remote_addr: remote.addr,
                    compare_add: add,
                    swap: 0,
                    rkey: remote.rkey,
                };
            }
        }
        let mut bad: *mut sys::ibv_send_wr = ptr::null_mut();
        // SAFETY: the QP is live; `wr` and `list` are valid for the call (the provider copies
        // them, inline data included); the buffer lies in a live registered region
        // (invariant 5).
        let ret = unsafe { sys::ibv_post_send(q.qp.as_ptr(), &mut wr, &mut bad) };
        check_ibv(ret, || {
            format!("ibv_post_send ({}) on QP {}", op.name(), q.qp_num)
        })
    }
}

fn sockaddr_from(addr: SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            unsafe { ptr::write(ptr::from_mut(&mut storage).cast::<libc::sockaddr_in>(), sin) };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in6.
            unsafe {
                ptr::write(
                    ptr::from_mut(&mut storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                )
            };
        }
    }
    storage
}

fn sockaddr_to(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is large and
            // aligned enough for it.
            let sin = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for addr in ["10.1.2.3:10005", "[fe80::1%2]:4791", "0.0.0.0:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(sockaddr_to(&sockaddr_from(addr)), Some(addr));
        }
    }
}
