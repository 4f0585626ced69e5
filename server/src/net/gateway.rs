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
//! The gateway only speaks TCP and only as a client: a guest that connects to [`HOST_ADDR`]
//! (or anything else outside its VPC) is refused with a reset, and no host service is reachable
//! from a guest through it.
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
//!    [`Fabric::uplink_ingress`]), delivering the results to their ports.
//!
//! A [`ConnId`] stays valid until `recv` reports `Closed` and the connection is finished, or
//! until `abort`; after that every call treats it as closed.
//!
//! [`Vpc::uplink_ingress`]: super::Vpc::uplink_ingress
//! [`Vpc::ingress`]: super::Vpc::ingress
//! [`Fabric::ingress`]: super::Fabric::ingress
//! [`Fabric::uplink_ingress`]: super::Fabric::uplink_ingress
//! [`UPLINK`]: super::UPLINK

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::Rng;
use smoltcp::iface::{Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::Medium;
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpAddress};

use super::frame::{self, IP_PROTO_TCP};
use super::imds_service::{Clock, FrameQueue, ethernet_frame, ip_interface, std_duration};
use super::{ROUTER_MAC, UPLINK_MAC};

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
/// Most live connections per gateway (each holds two [`BUFFER`]s).
const MAX_CONNECTIONS: usize = 4096;
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

/// The host-side TCP client stack of one VPC. See the module docs for how to drive it.
pub struct Gateway {
    iface: Interface,
    device: FrameQueue,
    sockets: SocketSet<'static>,
    conns: HashMap<ConnId, SocketHandle>,
    next_id: u64,
    clock: Clock,
    /// Frames produced while handling input, returned by the next [`Gateway::poll`].
    outbox: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("connections", &self.conns.len())
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
        let iface = ip_interface(HOST_ADDR, &mut device, smoltcp::time::Instant::ZERO);
        Gateway {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            conns: HashMap::new(),
            next_id: 0,
            clock: Clock::default(),
            outbox: Vec::new(),
        }
    }

    /// How many connections are open (for tests and metrics).
    pub fn connections(&self) -> usize {
        self.conns.len()
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
        {
            return Err(GatewayError::InvalidDestination(dst));
        }
        if self.conns.len() >= MAX_CONNECTIONS {
            return Err(GatewayError::TooManyConnections);
        }
        let local_port = self.free_port()?;
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; BUFFER]),
        );
        // The bytes come from another socket in chunks already; holding back small ones only
        // adds latency to interactive sessions (ssh sets TCP_NODELAY for the same reason).
        socket.set_nagle_enabled(false);
        socket.set_timeout(Some(smoltcp::time::Duration::from_secs(
            CONNECT_TIMEOUT.as_secs(),
        )));
        socket.set_keep_alive(Some(smoltcp::time::Duration::from_secs(
            KEEP_ALIVE.as_secs(),
        )));
        self.clock.at(now);
        socket
            .connect(
                self.iface.context(),
                (IpAddress::Ipv4(ip), dst.port()),
                local_port,
            )
            .map_err(|_| GatewayError::InvalidDestination(dst))?;
        let handle = self.sockets.add(socket);
        let id = ConnId(self.next_id);
        self.next_id += 1;
        self.conns.insert(id, handle);
        tracing::debug!(conn = %id, %dst, local_port, "gateway connecting");
        Ok(id)
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
        let handle = *self.conns.get(&conn)?;
        Some(self.sockets.get::<tcp::Socket>(handle))
    }

    fn socket_mut(&mut self, conn: ConnId) -> Option<&mut tcp::Socket<'static>> {
        let handle = *self.conns.get(&conn)?;
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
        if let Some(handle) = self.conns.remove(&conn) {
            self.sockets.get_mut::<tcp::Socket>(handle).abort();
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
            Some(ip) if ip.protocol == IP_PROTO_TCP && ip.dst == HOST_ADDR => {}
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
        // smoltcp sends at most one segment per socket per poll.
        for _ in 0..MAX_ROUNDS {
            if self.iface.poll(ts, &mut self.device, &mut self.sockets) == PollResult::None {
                break;
            }
        }
        self.outbox.extend(
            self.device
                .tx
                .drain(..)
                .map(|packet| ethernet_frame(UPLINK_MAC, ROUTER_MAC, &packet)),
        );
    }

    /// Removes sockets that are finished: closed, and with nothing left for the runtime to read
    /// (or already forgotten by it).
    fn reap(&mut self) {
        let owned: HashMap<SocketHandle, ConnId> =
            self.conns.iter().map(|(id, h)| (*h, *id)).collect();
        let finished: Vec<SocketHandle> = self
            .sockets
            .iter()
            .filter_map(|(handle, s)| match s {
                smoltcp::socket::Socket::Tcp(tcp)
                    if tcp.state() == tcp::State::Closed
                        && (tcp.recv_queue() == 0 || !owned.contains_key(&handle)) =>
                {
                    Some(handle)
                }
                _ => None,
            })
            .collect();
        for handle in finished {
            self.sockets.remove(handle);
            if let Some(id) = owned.get(&handle) {
                tracing::debug!(conn = %id, "gateway connection finished");
                self.conns.remove(id);
            }
        }
    }
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
