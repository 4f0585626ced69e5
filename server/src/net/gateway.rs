//! Host access: the host's end of TCP connections into a VPC.
//!
//! ec2d accepts TCP connections on the host (to an instance's public IP on 127.x.y.z) and
//! forwards each into the VPC as a connection from [`HOST_ADDR`] to the instance's private IP.
//! The [`Gateway`] is that client side: a smoltcp TCP/IP stack at [`HOST_ADDR`], one per VPC,
//! attached to the VPC's uplink. Its packets enter the VPC through [`Vpc::uplink_ingress`], so
//! the instance's security groups judge them like any other traffic (a rule for `0.0.0.0/0` or
//! `198.18.0.1/32` admits the host, a rule naming a group never does), and the instance's
//! answers come back through conntrack.
//!
//! The same stack also owns [`API_ADDR`], where guests reach ec2d's own API: it listens on
//! [`API_ADDR`]:[`API_PORT`] and hands each connection a guest opens there to the runtime through
//! [`Gateway::accept`]. The VPC delivers those frames to the uplink without security-group checks
//! (see [`Vpc::uplink_ingress`]), but only from the port that owns the source address.
//!
//! Nothing else is served to guests: a guest that connects to [`HOST_ADDR`], to another port of
//! [`API_ADDR`] (or to anything else outside its VPC) is refused with a reset, and no host service
//! but the API is reachable from a guest through the gateway.
//!
//! # Driving it
//! Everything is synchronous and takes the time as an argument, like the fabric. The runtime
//! owns one `Gateway` per VPC on the thread that runs the fabric, and in its loop:
//! 1. for each new host connection, calls [`Gateway::connect`] with the instance's private
//!    address and the port; then moves bytes with [`Gateway::send`] (returns how much was
//!    accepted; retry the rest later) and [`Gateway::recv`] ([`RecvState::Pending`]: nothing
//!    yet, [`RecvState::Closed`]: end of stream or reset). A host-side EOF becomes
//!    [`Gateway::close`] (a FIN; receiving carries on), a host-side error [`Gateway::abort`].
//!    A connection that never becomes [`Gateway::is_established`] was not admitted (or the
//!    instance does not listen); it turns `Closed` after [`CONNECT_TIMEOUT`], or the runtime
//!    may abort it sooner;
//! 2. hands every frame the VPC routed to [`UPLINK`] (from [`Fabric::ingress`] of that VPC's
//!    ports, or [`Vpc::ingress`]) to [`Gateway::handle`];
//! 3. calls [`Gateway::poll`] after any of the above and whenever [`Gateway::poll_delay`] has
//!    elapsed, and feeds the frames it returns to [`Vpc::uplink_ingress`] (or
//!    [`Fabric::uplink_ingress`]), delivering the results to their ports;
//! 4. after `handle` and `poll`, calls [`Gateway::accept`] until it returns `None`, and serves
//!    each guest connection it returns with the same `send`, `recv`, `close`, `abort` and
//!    `is_established` as its own (they are established when handed out). `poll_delay` covers
//!    their timers like the others', but does not count connections waiting to be accepted: a
//!    runtime that never accepted would otherwise spin.
//!
//! A [`ConnId`] stays valid until `recv` reports `Closed` and the connection is finished, or
//! until `abort`; after that every call treats it as closed.
//!
//! [`Vpc::uplink_ingress`]: super::Vpc::uplink_ingress
//! [`Vpc::ingress`]: super::Vpc::ingress
//! [`Fabric::ingress`]: super::Fabric::ingress
//! [`Fabric::uplink_ingress`]: super::Fabric::uplink_ingress
//! [`UPLINK`]: super::UPLINK

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::Rng;
use smoltcp::iface::{Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::Medium;
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpAddress, IpCidr, IpListenEndpoint};

use super::frame::{self, IP_PROTO_TCP};
use super::imds_service::{Clock, FrameQueue, ethernet_frame, ip_interface, std_duration};
use super::{API_ADDR, API_PORT, ROUTER_MAC, UPLINK_MAC};

/// The address host connections come from inside a VPC. It is in 198.18.0.0/15, the range
/// RFC 2544 sets aside for benchmarking: not routed on the Internet, so it names nothing real a
/// guest might want to reach, and outside the RFC 1918 ranges users pick VPC CIDRs from (a VPC
/// whose CIDR did cover it would get no host access, since the uplink's sources must lie outside
/// the VPC). Not a loopback address, which guests treat as martian and drop.
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// How long a connection may go unanswered (handshake, data or keep-alive) before it is aborted.
/// Close to what a Linux client waits for a SYN to be answered, so a connection the security
/// groups drop looks the same as on EC2: it hangs, then fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(75);
/// Keep-alive probes on idle connections, so a connection to an instance that vanished is noticed
/// (after [`CONNECT_TIMEOUT`] without an answer).
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// The IANA dynamic port range, where the gateway's source ports come from.
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// Most live connections the host opens per gateway (each holds two [`BUFFER`]s).
const MAX_CONNECTIONS: usize = 4096;
/// Sockets kept listening on the API, so that guests opening several connections at once (SDK
/// connection pools) are not reset while the next listener is set up.
const SPARE_LISTENERS: usize = 4;
/// Most guest sockets on the API per gateway: listeners, handshakes and connections. Guests of
/// the VPC that open more are reset, which bounds what they can make ec2d spend (each holds two
/// [`BUFFER`]s). Far above what SDK clients keep open (botocore pools 10 per client).
const MAX_GUEST_SOCKETS: usize = 1024;
const BUFFER: usize = 64 * 1024;
/// Bound on poll rounds per call, a guard against a bug turning into a busy loop.
const MAX_ROUNDS: usize = 4096;

/// One connection through a [`Gateway`]. Ids are never reused by the same gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}

/// The outcome of [`Gateway::recv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvState {
    /// This many bytes were copied into the buffer.
    Data(usize),
    /// Nothing to read now; more may come.
    Pending,
    /// Nothing more will come: the instance closed its side, reset the connection, or it never
    /// opened.
    Closed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    #[error("cannot connect to {0}")]
    InvalidDestination(SocketAddrV4),
    #[error("too many connections through the gateway")]
    TooManyConnections,
    #[error("no free source port")]
    NoFreePort,
    #[error("connection {0} does not exist")]
    UnknownConnection(ConnId),
    #[error("connection {0} can no longer send")]
    Closed(ConnId),
}

/// A connection's socket, and who opened it.
#[derive(Clone, Copy, Debug)]
struct Conn {
    handle: SocketHandle,
    /// A guest opened it, to the API.
    guest: bool,
}

/// The host-side TCP stack of one VPC. See the module docs for how to drive it.
pub struct Gateway {
    iface: Interface,
    device: FrameQueue,
    sockets: SocketSet<'static>,
    conns: HashMap<ConnId, Conn>,
    /// Sockets on the API not handed out yet: listening, or in a guest's handshake. Never in
    /// `conns`.
    listeners: Vec<SocketHandle>,
    /// Guest connections established and not yet returned by [`Gateway::accept`].
    accepted: VecDeque<(ConnId, SocketAddrV4)>,
    /// [`MAX_GUEST_SOCKETS`], lowered by tests.
    guest_limit: usize,
    next_id: u64,
    clock: Clock,
    /// Frames produced while handling input, returned by the next [`Gateway::poll`].
    outbox: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("connections", &self.conns.len())
            .field("listeners", &self.listeners.len())
            .field("accepted", &self.accepted.len())
            .finish()
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Self::new()
    }
}

impl Gateway {
    pub fn new() -> Self {
        let mut device = FrameQueue::new(Medium::Ip);
        // The stack's clock starts at the first instant it is given (see `Clock`).
        let mut iface = ip_interface(HOST_ADDR, &mut device, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            if addrs
                .push(IpCidr::new(IpAddress::Ipv4(API_ADDR), 32))
                .is_err()
            {
                tracing::error!("gateway interface has no room for the API address");
            }
        });
        Gateway {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            conns: HashMap::new(),
            listeners: Vec::new(),
            accepted: VecDeque::new(),
            guest_limit: MAX_GUEST_SOCKETS,
            next_id: 0,
            clock: Clock::default(),
            outbox: Vec::new(),
        }
    }

    /// How many connections are open, the host's and the guests' (for tests and metrics).
    /// Listeners and handshakes on the API are not counted.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// How many of [`Gateway::connections`] guests opened to the API.
    pub fn guest_connections(&self) -> usize {
        self.conns.values().filter(|c| c.guest).count()
    }

    /// The next connection a guest opened to [`API_ADDR`]:[`API_PORT`], established, with the
    /// guest's address and port; each is returned once. The guest's address is the one the
    /// fabric checked against its port, so it names the instance (within this VPC: every VPC has
    /// its own gateway). Connections that died before being accepted are skipped.
    pub fn accept(&mut self) -> Option<(ConnId, SocketAddrV4)> {
        while let Some((id, peer)) = self.accepted.pop_front() {
            if self.conns.contains_key(&id) {
                return Some((id, peer));
            }
        }
        None
    }

    /// Starts a connection from [`HOST_ADDR`] to `dst` (an instance's private address). The SYN
    /// leaves with the next [`Gateway::poll`].
    pub fn connect(&mut self, dst: SocketAddrV4, now: Instant) -> Result<ConnId, GatewayError> {
        let ip = *dst.ip();
        if dst.port() == 0
            || ip.is_unspecified()
            || ip.is_broadcast()
            || ip.is_multicast()
            || ip.is_loopback()
            || ip == HOST_ADDR
            || ip == API_ADDR
        {
            return Err(GatewayError::InvalidDestination(dst));
        }
        let host_conns = self.conns.values().filter(|c| !c.guest).count();
        if host_conns >= MAX_CONNECTIONS {
            return Err(GatewayError::TooManyConnections);
        }
        let local_port = self.free_port()?;
        let mut socket = new_socket();
        self.clock.at(now);
        // The source is named, not left to smoltcp: it would pick the interface's first address,
        // and host connections must never come from the API's address, whose packets skip the
        // security groups.
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(HOST_ADDR)),
            port: local_port,
        };
        socket
            .connect(
                self.iface.context(),
                (IpAddress::Ipv4(ip), dst.port()),
                local,
            )
            .map_err(|_| GatewayError::InvalidDestination(dst))?;
        let handle = self.sockets.add(socket);
        let id = self.new_id();
        self.conns.insert(
            id,
            Conn {
                handle,
                guest: false,
            },
        );
        tracing::debug!(conn = %id, %dst, local_port, "gateway connecting");
        Ok(id)
    }

    fn new_id(&mut self) -> ConnId {
        let id = ConnId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Tops the API's listening sockets up to [`SPARE_LISTENERS`], within the guest limit.
    fn replenish_listeners(&mut self) {
        let listening = self
            .listeners
            .iter()
            .filter(|h| self.sockets.get::<tcp::Socket>(**h).is_listening())
            .count();
        // Checked first: this runs for every frame, and counting connections is not free.
        if listening >= SPARE_LISTENERS {
            return;
        }
        let guest_conns = self.guest_connections();
        for _ in listening..SPARE_LISTENERS {
            if self.listeners.len() + guest_conns >= self.guest_limit {
                break;
            }
            let mut socket = new_socket();
            let endpoint = IpListenEndpoint {
                // Bound to the API's address, so HOST_ADDR:80 stays refused.
                addr: Some(IpAddress::Ipv4(API_ADDR)),
                port: API_PORT,
            };
            if let Err(e) = socket.listen(endpoint) {
                tracing::error!(error = %e, "gateway cannot listen on the API address");
                break;
            }
            self.listeners.push(self.sockets.add(socket));
        }
    }

    /// Moves listeners whose handshake completed to `conns` and the accept queue, and drops
    /// those whose handshake failed.
    fn sweep_listeners(&mut self) {
        for handle in std::mem::take(&mut self.listeners) {
            let socket = self.sockets.get::<tcp::Socket>(handle);
            match socket.state() {
                // A reset in SYN-RECEIVED puts a listener back to listening.
                tcp::State::Listen | tcp::State::SynReceived => self.listeners.push(handle),
                // The handshake timed out.
                tcp::State::Closed => {
                    self.sockets.remove(handle);
                }
                // Established, or further along if the guest was quick (data and FIN already
                // in): either way the runtime has something to serve.
                _ => {
                    let peer = socket
                        .remote_endpoint()
                        .and_then(|e| match std::net::IpAddr::from(e.addr) {
                            std::net::IpAddr::V4(a) => Some(SocketAddrV4::new(a, e.port)),
                            std::net::IpAddr::V6(_) => None,
                        });
                    let Some(peer) = peer else {
                        // Cannot happen on an IPv4-only stack; nothing to hand out if it did.
                        self.sockets.get_mut::<tcp::Socket>(handle).abort();
                        self.listeners.push(handle);
                        continue;
                    };
                    let id = self.new_id();
                    self.conns.insert(
                        id,
                        Conn {
                            handle,
                            guest: true,
                        },
                    );
                    self.accepted.push_back((id, peer));
                    tracing::debug!(conn = %id, %peer, "guest connected to the API");
                }
            }
        }
    }

    /// A source port no socket of this gateway uses, picked at random so that a new connection
    /// does not reuse the 4-tuple of one that just closed (the instance may still hold it in
    /// TIME-WAIT).
    fn free_port(&self) -> Result<u16, GatewayError> {
        let used: HashSet<u16> = self
            .sockets
            .iter()
            .filter_map(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(tcp) => tcp.local_endpoint().map(|e| e.port),
                _ => None,
            })
            .collect();
        let (low, high) = (*EPHEMERAL_PORTS.start(), *EPHEMERAL_PORTS.end());
        let span = u32::from(high - low) + 1;
        let start = rand::thread_rng().gen_range(0..span);
        (0..span)
            .map(|i| low + ((start + i) % span) as u16)
            .find(|p| !used.contains(p))
            .ok_or(GatewayError::NoFreePort)
    }

    fn socket(&self, conn: ConnId) -> Option<&tcp::Socket<'static>> {
        let handle = self.conns.get(&conn)?.handle;
        Some(self.sockets.get::<tcp::Socket>(handle))
    }

    fn socket_mut(&mut self, conn: ConnId) -> Option<&mut tcp::Socket<'static>> {
        let handle = self.conns.get(&conn)?.handle;
        Some(self.sockets.get_mut::<tcp::Socket>(handle))
    }

    /// Whether the handshake has completed (the instance accepted the connection).
    pub fn is_established(&self, conn: ConnId) -> bool {
        self.socket(conn).is_some_and(|s| {
            matches!(
                s.state(),
                tcp::State::Established
                    | tcp::State::FinWait1
                    | tcp::State::FinWait2
                    | tcp::State::CloseWait
                    | tcp::State::Closing
                    | tcp::State::LastAck
                    | tcp::State::TimeWait
            )
        })
    }

    /// Queues bytes for the instance; returns how many were accepted (0 while the connection is
    /// opening or the send buffer is full). An error means nothing more can ever be sent.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, GatewayError> {
        let next_id = self.next_id;
        let Some(socket) = self.socket_mut(conn) else {
            // Ids are never reused, so a known-but-gone id is a finished connection.
            return Err(if conn.0 < next_id {
                GatewayError::Closed(conn)
            } else {
                GatewayError::UnknownConnection(conn)
            });
        };
        match socket.state() {
            tcp::State::SynSent | tcp::State::SynReceived => Ok(0),
            _ if socket.may_send() => socket
                .send_slice(data)
                .map_err(|_| GatewayError::Closed(conn)),
            _ => Err(GatewayError::Closed(conn)),
        }
    }

    /// Copies received bytes into `buf`.
    pub fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> RecvState {
        let Some(socket) = self.socket_mut(conn) else {
            return RecvState::Closed;
        };
        if socket.can_recv()
            && !buf.is_empty()
            && let Ok(n) = socket.recv_slice(buf)
            && n > 0
        {
            return RecvState::Data(n);
        }
        match socket.state() {
            tcp::State::SynSent | tcp::State::SynReceived => RecvState::Pending,
            _ if socket.may_recv() => RecvState::Pending,
            _ => RecvState::Closed,
        }
    }

    /// Closes the sending half (a FIN once queued data is sent); receiving carries on.
    pub fn close(&mut self, conn: ConnId) {
        if let Some(socket) = self.socket_mut(conn) {
            socket.close();
        }
    }

    /// Resets the connection and forgets it; the RST leaves with the next [`Gateway::poll`].
    pub fn abort(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.sockets.get_mut::<tcp::Socket>(c.handle).abort();
        }
    }

    /// Takes a frame the VPC routed to its uplink.
    pub fn handle(&mut self, frame: &[u8], now: Instant) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return;
        };
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return;
        }
        // Only TCP to the gateway itself: no pings, no UDP, nothing forwarded onwards.
        match frame::parse_ipv4(eth.payload()) {
            Some(ip)
                if ip.protocol == IP_PROTO_TCP && (ip.dst == HOST_ADDR || ip.dst == API_ADDR) => {}
            _ => return,
        }
        self.device.rx.push_back(eth.payload().to_vec());
        self.run(now);
    }

    /// Runs timers and sends what is queued; returns the frames for [`Vpc::uplink_ingress`].
    ///
    /// [`Vpc::uplink_ingress`]: super::Vpc::uplink_ingress
    pub fn poll(&mut self, now: Instant) -> Vec<Vec<u8>> {
        self.run(now);
        self.reap();
        std::mem::take(&mut self.outbox)
    }

    /// How soon [`Gateway::poll`] should run again; `None` when nothing is pending.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        if !self.outbox.is_empty() {
            return Some(Duration::ZERO);
        }
        let ts = self.clock.at(now);
        self.iface.poll_delay(ts, &self.sockets).map(std_duration)
    }

    fn run(&mut self, now: Instant) {
        let ts = self.clock.at(now);
        // Before the input is processed, so that a SYN finds a listener.
        self.replenish_listeners();
        // smoltcp sends at most one segment per socket per poll.
        for _ in 0..MAX_ROUNDS {
            if self.iface.poll(ts, &mut self.device, &mut self.sockets) == PollResult::None {
                break;
            }
        }
        self.sweep_listeners();
        self.outbox.extend(
            self.device
                .tx
                .drain(..)
                .map(|packet| ethernet_frame(UPLINK_MAC, ROUTER_MAC, &packet)),
        );
    }

    /// Removes sockets that are finished: closed, and with nothing left for the runtime to read
    /// (or already forgotten by it). Listeners are the sweep's business, never reaped here.
    fn reap(&mut self) {
        let owned: HashMap<SocketHandle, (ConnId, bool)> = self
            .conns
            .iter()
            .map(|(id, c)| (c.handle, (*id, c.guest)))
            .collect();
        let listeners: HashSet<SocketHandle> = self.listeners.iter().copied().collect();
        let finished: Vec<SocketHandle> = self
            .sockets
            .iter()
            .filter(|(handle, _)| !listeners.contains(handle))
            .filter_map(|(handle, s)| {
                let smoltcp::socket::Socket::Tcp(tcp) = s else {
                    return None;
                };
                let owner = owned.get(&handle);
                // A guest connection in TIME-WAIT is let go at once, as the IMDS service does,
                // rather than held against the guest limit for its 10 s: on this lossless
                // virtual link a late duplicate FIN only earns a reset. The host's connections
                // keep it, since the instance may reuse the 4-tuple.
                let done = tcp.state() == tcp::State::Closed
                    || (tcp.state() == tcp::State::TimeWait && owner.is_some_and(|o| o.1));
                (done && (tcp.recv_queue() == 0 || owner.is_none())).then_some(handle)
            })
            .collect();
        for handle in finished {
            self.sockets.remove(handle);
            if let Some((id, _)) = owned.get(&handle) {
                tracing::debug!(conn = %id, "gateway connection finished");
                self.conns.remove(id);
            }
        }
        if !self.accepted.is_empty() {
            let conns = &self.conns;
            self.accepted.retain(|(id, _)| conns.contains_key(id));
        }
    }
}

/// A socket with the settings every gateway connection uses, both ways.
fn new_socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; BUFFER]),
        tcp::SocketBuffer::new(vec![0u8; BUFFER]),
    );
    // The bytes come from another socket in chunks already; holding back small ones only adds
    // latency to interactive sessions (ssh sets TCP_NODELAY for the same reason) and to the
    // tails of API responses.
    socket.set_nagle_enabled(false);
    // Also bounds a guest's half-open handshake on a listener, which would hold a guest slot.
    socket.set_timeout(Some(smoltcp::time::Duration::from_secs(
        CONNECT_TIMEOUT.as_secs(),
    )));
    socket.set_keep_alive(Some(smoltcp::time::Duration::from_secs(
        KEEP_ALIVE.as_secs(),
    )));
    socket
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "gateway_api_tests.rs"]
mod api_tests;
