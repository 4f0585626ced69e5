//! IMDS over TCP: the [`LocalService`] that answers 169.254.169.254:80.
//!
//! Each guest port gets its own smoltcp stack, created on the first frame the port sends and
//! dropped when the port goes away or has been quiet for a while. Because the stacks are per
//! port, two instances with the same private address (in different VPCs) or a guest reusing a
//! 4-tuple can never see each other's connections, and the instance a request is answered for is
//! always the port's, whatever the packets claim.
//!
//! The stacks use `Medium::Ip`: the fabric has already checked the frame's MACs and source
//! address, so the Ethernet header is stripped on the way in and rebuilt on the way out (the
//! guest's MAC, from [`ROUTER_MAC`]). That also spares the stack ARP and neighbour tables for a
//! guest that is not in its (169.254.169.254/32) network.
//!
//! HTTP is the small subset metadata clients use: one request at a time per connection
//! (pipelined requests wait their turn), HTTP/1.1 keep-alive, a `Content-Length` body (read and
//! ignored: IMDS takes nothing from bodies), no chunked request bodies. The response is written
//! as [`crate::imds`]'s transport contract says, including the IP TTL of the token `PUT` answer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, HardwareAddress, IpAddress,
    IpCidr,
};

use super::vpc::LocalService;
use super::{IMDS_ADDR, MacAddr, PortId, ROUTER_MAC, VPC_MTU};
use crate::imds::{Imds, InstanceView, Request, Response};

/// The IMDS TCP port.
const HTTP_PORT: u16 = 80;
/// Listening sockets kept ready per port, so that a guest opening several connections at once
/// (cloud-init's crawler, parallel SDK threads) is not reset.
const SPARE_LISTENERS: usize = 4;
/// Most sockets per port, listeners included. A guest opening more gets resets, which bounds the
/// memory one guest can make the fabric spend.
const MAX_SOCKETS: usize = 32;
const RX_BUFFER: usize = 8 * 1024;
/// Responses larger than this (user data can be) are streamed in as the guest acknowledges.
const TX_BUFFER: usize = 32 * 1024;
/// Largest request line plus headers; a longer head is answered 400 and the connection closed.
const MAX_HEAD: usize = 8 * 1024;
/// A connection waiting for a request this long is closed (gracefully, so clients see it before
/// they reuse it), as web servers close idle keep-alive connections.
const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// A port whose guest has sent nothing for this long loses its stack. Later than
/// [`IDLE_CLOSE`], so idle connections have been closed properly first.
const STACK_IDLE: Duration = Duration::from_secs(300);
/// A guest that stops acknowledging a response for this long has its connection aborted.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on poll/serve rounds per event, a guard against a bug turning into a busy loop.
const MAX_ROUNDS: usize = 4096;

/// Maps the fabric's clock onto smoltcp's, which counts from an origin: the first instant seen.
#[derive(Debug, Default)]
pub(super) struct Clock {
    origin: Option<Instant>,
}

impl Clock {
    pub(super) fn at(&mut self, now: Instant) -> smoltcp::time::Instant {
        let origin = *self.origin.get_or_insert(now);
        let micros = now.saturating_duration_since(origin).as_micros();
        smoltcp::time::Instant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }
}

pub(super) fn std_duration(d: smoltcp::time::Duration) -> Duration {
    Duration::from_micros(d.total_micros())
}

/// A smoltcp device that is just two queues of packets: what the stack is to receive, and what
/// it sent. The fabric moves frames synchronously, so nothing more is needed.
#[derive(Debug)]
pub(super) struct FrameQueue {
    medium: Medium,
    pub(super) rx: VecDeque<Vec<u8>>,
    pub(super) tx: Vec<Vec<u8>>,
}

impl FrameQueue {
    pub(super) fn new(medium: Medium) -> Self {
        FrameQueue {
            medium,
            rx: VecDeque::new(),
            tx: Vec::new(),
        }
    }
}

pub(super) struct QueuedRx(Vec<u8>);

impl RxToken for QueuedRx {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

pub(super) struct QueuedTx<'a>(&'a mut Vec<Vec<u8>>);

impl TxToken for QueuedTx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut packet = vec![0u8; len];
        let result = f(&mut packet);
        self.0.push(packet);
        result
    }
}

impl Device for FrameQueue {
    type RxToken<'a> = QueuedRx;
    type TxToken<'a> = QueuedTx<'a>;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((QueuedRx(packet), QueuedTx(&mut self.tx)))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(QueuedTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = self.medium;
        caps.max_transmission_unit = match self.medium {
            Medium::Ethernet => usize::from(VPC_MTU) + 14,
            _ => usize::from(VPC_MTU),
        };
        caps
    }
}

/// A `Medium::Ip` interface owning `addr`, as the fabric's link-local services and the host
/// gateway use. smoltcp only sends to destinations it has a route to, even without a link layer
/// to resolve, hence the default route (its next hop is never looked at on `Medium::Ip`).
pub(super) fn ip_interface(
    addr: std::net::Ipv4Addr,
    device: &mut FrameQueue,
    now: smoltcp::time::Instant,
) -> Interface {
    let mut config = Config::new(HardwareAddress::Ip);
    config.random_seed = rand::random();
    let mut iface = Interface::new(config, device, now);
    iface.update_ip_addrs(|addrs| {
        if addrs.push(IpCidr::new(IpAddress::Ipv4(addr), 32)).is_err() {
            tracing::error!(%addr, "smoltcp interface has no room for its address");
        }
    });
    if iface.routes_mut().add_default_ipv4_route(addr).is_err() {
        tracing::error!(%addr, "smoltcp interface has no room for a default route");
    }
    iface
}

/// Wraps an IP packet in an Ethernet header.
pub(super) fn ethernet_frame(src: MacAddr, dst: MacAddr, ip_packet: &[u8]) -> Vec<u8> {
    let repr = EthernetRepr {
        src_addr: EthernetAddress(src),
        dst_addr: EthernetAddress(dst),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0u8; repr.buffer_len() + ip_packet.len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    repr.emit(&mut frame);
    frame.payload_mut().copy_from_slice(ip_packet);
    buf
}

/// Finds the instance a port belongs to; see [`ImdsService::new`].
pub type InstanceLookup = Box<dyn Fn(PortId) -> Option<InstanceView> + Send>;

/// The metadata service's TCP/HTTP front: one smoltcp stack per guest port. Install it with
/// [`super::Vpc::set_local_service`]; it needs [`LocalService::poll`] as often as
/// [`LocalService::poll_delay`] asks, for retransmissions and idle timeouts.
pub struct ImdsService {
    imds: Arc<Imds>,
    lookup: InstanceLookup,
    stacks: HashMap<PortId, PortStack>,
    clock: Clock,
}

impl std::fmt::Debug for ImdsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImdsService")
            .field("stacks", &self.stacks.len())
            .finish()
    }
}

impl ImdsService {
    /// `lookup` names the instance behind a port. It is called for every request, so metadata
    /// options and content changes apply to the next request; `None` (the port is not an
    /// instance's, or the instance is gone) resets the connection.
    pub fn new(imds: Arc<Imds>, lookup: InstanceLookup) -> Self {
        ImdsService {
            imds,
            lookup,
            stacks: HashMap::new(),
            clock: Clock::default(),
        }
    }

    /// How many ports currently have a stack (for tests and metrics).
    pub fn active_ports(&self) -> usize {
        self.stacks.len()
    }
}

impl LocalService for ImdsService {
    fn handle(&mut self, port: PortId, frame: &[u8], now: Instant) -> Vec<Vec<u8>> {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Vec::new();
        };
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return Vec::new();
        }
        let ts = self.clock.at(now);
        let stack = self.stacks.entry(port).or_insert_with(|| {
            tracing::debug!(%port, "IMDS stack created");
            PortStack::new(now, ts)
        });
        stack.guest_mac = eth.src_addr().0;
        stack.last_frame = now;
        stack.device.rx.push_back(eth.payload().to_vec());
        let ctx = Ctx {
            imds: &self.imds,
            lookup: &self.lookup,
            port,
        };
        stack.run(&ctx, now, ts)
    }

    fn poll(&mut self, now: Instant) -> Vec<(PortId, Vec<u8>)> {
        let ts = self.clock.at(now);
        self.stacks.retain(|port, stack| {
            let keep = now.saturating_duration_since(stack.last_frame) < STACK_IDLE;
            if !keep {
                tracing::debug!(%port, "IMDS stack dropped after idling");
            }
            keep
        });
        let mut out = Vec::new();
        for (&port, stack) in &mut self.stacks {
            let ctx = Ctx {
                imds: &self.imds,
                lookup: &self.lookup,
                port,
            };
            out.extend(stack.run(&ctx, now, ts).into_iter().map(|f| (port, f)));
        }
        out
    }

    fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        let ts = self.clock.at(now);
        self.stacks
            .values_mut()
            .filter_map(|stack| stack.poll_delay(now, ts))
            .min()
    }

    fn port_removed(&mut self, port: PortId) {
        if self.stacks.remove(&port).is_some() {
            tracing::debug!(%port, "IMDS stack dropped with its port");
        }
    }
}

/// What a stack needs from the service to answer requests.
struct Ctx<'a> {
    imds: &'a Imds,
    lookup: &'a InstanceLookup,
    port: PortId,
}

/// One port's TCP/IP stack and the HTTP state of its connections.
struct PortStack {
    iface: Interface,
    device: FrameQueue,
    sockets: SocketSet<'static>,
    /// Every socket in `sockets`, listeners included.
    conns: HashMap<SocketHandle, Conn>,
    guest_mac: MacAddr,
    last_frame: Instant,
}

impl PortStack {
    fn new(now: Instant, ts: smoltcp::time::Instant) -> Self {
        let mut device = FrameQueue::new(Medium::Ip);
        let iface = ip_interface(IMDS_ADDR, &mut device, ts);
        PortStack {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            conns: HashMap::new(),
            guest_mac: [0; 6],
            last_frame: now,
        }
    }

    /// Processes queued input, answers what can be answered and returns the frames to send.
    fn run(&mut self, ctx: &Ctx<'_>, now: Instant, ts: smoltcp::time::Instant) -> Vec<Vec<u8>> {
        self.replenish_listeners(now);
        // smoltcp sends at most one segment per socket per poll, so keep going until neither
        // the stack nor the HTTP side has anything left to do.
        for _ in 0..MAX_ROUNDS {
            let polled = self.iface.poll(ts, &mut self.device, &mut self.sockets);
            let served = self.serve(ctx, now);
            if polled == PollResult::None && !served {
                break;
            }
        }
        let guest_mac = self.guest_mac;
        self.device
            .tx
            .drain(..)
            .map(|packet| ethernet_frame(ROUTER_MAC, guest_mac, &packet))
            .collect()
    }

    fn poll_delay(&mut self, now: Instant, ts: smoltcp::time::Instant) -> Option<Duration> {
        let stack_deadline = (self.last_frame + STACK_IDLE).saturating_duration_since(now);
        let idle_close = self
            .conns
            .iter()
            .filter(|(handle, conn)| {
                conn.awaits_request()
                    && !matches!(
                        self.sockets.get::<tcp::Socket>(**handle).state(),
                        tcp::State::Listen | tcp::State::Closed | tcp::State::TimeWait
                    )
            })
            .map(|(_, conn)| (conn.last_active + IDLE_CLOSE).saturating_duration_since(now))
            .min();
        let stack = self.iface.poll_delay(ts, &self.sockets).map(std_duration);
        [Some(stack_deadline), idle_close, stack]
            .into_iter()
            .flatten()
            .min()
    }

    fn replenish_listeners(&mut self, now: Instant) -> bool {
        let listening = self
            .conns
            .keys()
            .filter(|h| self.sockets.get::<tcp::Socket>(**h).is_listening())
            .count();
        let mut added = false;
        for _ in listening..SPARE_LISTENERS {
            if self.conns.len() >= MAX_SOCKETS {
                break;
            }
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0u8; RX_BUFFER]),
                tcp::SocketBuffer::new(vec![0u8; TX_BUFFER]),
            );
            // Whole responses are written at once; Nagle would only hold back their tails.
            socket.set_nagle_enabled(false);
            socket.set_timeout(Some(smoltcp::time::Duration::from_secs(
                ACK_TIMEOUT.as_secs(),
            )));
            if let Err(e) = socket.listen(HTTP_PORT) {
                tracing::error!(error = %e, "IMDS socket cannot listen");
                break;
            }
            let handle = self.sockets.add(socket);
            self.conns.insert(handle, Conn::new(now));
            added = true;
        }
        added
    }

    /// Advances every connection's HTTP exchange; true if anything changed.
    fn serve(&mut self, ctx: &Ctx<'_>, now: Instant) -> bool {
        let mut progress = false;
        let mut closed = Vec::new();
        for (&handle, conn) in &mut self.conns {
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            // TIME-WAIT is let go at once rather than held against MAX_SOCKETS: clients that
            // ask for `Connection: close` would otherwise run out of sockets within seconds,
            // and on this lossless virtual link a late duplicate FIN only earns a reset.
            if matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait) {
                closed.push(handle);
                continue;
            }
            progress |= conn.step(socket, ctx, now);
        }
        for handle in closed {
            self.conns.remove(&handle);
            self.sockets.remove(handle);
            progress = true;
        }
        progress |= self.replenish_listeners(now);
        progress
    }
}

/// Where a connection is in its request/response cycle.
enum Phase {
    /// Reading a request line and headers.
    Head,
    /// Skipping the request body; the request is answered once it is all in.
    Body {
        remaining: usize,
        request: Request,
        keep_alive: bool,
    },
    /// Writing a response.
    Respond {
        out: Vec<u8>,
        sent: usize,
        /// Whether the socket's hop limit was changed for this response.
        ttl_set: bool,
        keep_alive: bool,
    },
    /// Our side is closed or aborted; the socket is reaped once smoltcp is done with it.
    Closing,
}

struct Conn {
    /// Request bytes read but not consumed yet (a head in progress, or a pipelined request).
    inbuf: Vec<u8>,
    phase: Phase,
    last_active: Instant,
}

impl Conn {
    fn new(now: Instant) -> Self {
        Conn {
            inbuf: Vec::new(),
            phase: Phase::Head,
            last_active: now,
        }
    }

    fn awaits_request(&self) -> bool {
        matches!(self.phase, Phase::Head | Phase::Body { .. })
    }

    fn close(&mut self, socket: &mut tcp::Socket) {
        socket.close();
        self.phase = Phase::Closing;
    }

    /// Moves the exchange forward as far as the socket allows; true if anything changed.
    fn step(&mut self, socket: &mut tcp::Socket, ctx: &Ctx<'_>, now: Instant) -> bool {
        match socket.state() {
            // Nothing to do until the handshake completes, and idleness counts from then on.
            tcp::State::Listen | tcp::State::SynReceived => {
                self.last_active = now;
                return false;
            }
            tcp::State::Closed | tcp::State::TimeWait => return false,
            _ => {}
        }
        let mut progress = false;
        loop {
            match &mut self.phase {
                Phase::Head => {
                    progress |= read_into(socket, &mut self.inbuf, MAX_HEAD);
                    if let Some(end) = head_end(&self.inbuf) {
                        let head: Vec<u8> = self.inbuf.drain(..end).collect();
                        self.phase = match parse_head(&head) {
                            Some(parsed) => Phase::Body {
                                remaining: parsed.content_length,
                                request: parsed.request,
                                keep_alive: parsed.keep_alive,
                            },
                            None => respond(socket, &bad_request(), false),
                        };
                        progress = true;
                    } else if self.inbuf.len() >= MAX_HEAD {
                        self.phase = respond(socket, &bad_request(), false);
                        progress = true;
                    } else if !socket.may_recv() {
                        // The guest closed its side without (finishing) a request.
                        self.close(socket);
                        progress = true;
                        break;
                    } else {
                        break;
                    }
                }
                Phase::Body {
                    remaining,
                    request,
                    keep_alive,
                } => {
                    let buffered = (*remaining).min(self.inbuf.len());
                    self.inbuf.drain(..buffered);
                    *remaining -= buffered;
                    if *remaining > 0 && socket.can_recv() {
                        let want = *remaining;
                        if let Ok(n) = socket.recv(|data| {
                            let n = data.len().min(want);
                            (n, n)
                        }) {
                            *remaining -= n;
                            progress |= n > 0;
                        }
                    }
                    if *remaining == 0 {
                        let request = std::mem::replace(request, empty_request());
                        let keep_alive = *keep_alive;
                        match answer(ctx, &request, now) {
                            Some(response) => {
                                self.phase = respond(socket, &response, keep_alive);
                            }
                            None => {
                                tracing::debug!(port = %ctx.port, "IMDS request from a port with no instance");
                                socket.abort();
                                self.phase = Phase::Closing;
                            }
                        }
                        progress = true;
                    } else if !socket.may_recv() {
                        self.close(socket);
                        progress = true;
                        break;
                    } else {
                        break;
                    }
                }
                Phase::Respond {
                    out,
                    sent,
                    ttl_set,
                    keep_alive,
                } => {
                    if *sent < out.len() {
                        match socket.send_slice(&out[*sent..]) {
                            Ok(n) => {
                                *sent += n;
                                progress |= n > 0;
                            }
                            Err(_) => {
                                // The guest reset or closed: nothing more can be sent.
                                socket.abort();
                                self.phase = Phase::Closing;
                                progress = true;
                                break;
                            }
                        }
                    }
                    if *sent < out.len() {
                        break;
                    }
                    if !*keep_alive {
                        self.close(socket);
                        progress = true;
                        break;
                    }
                    // The TTL belongs to this response's packets only: wait until all of them
                    // are acknowledged (no retransmission can follow) before the next request
                    // may be answered with the default TTL.
                    if socket.send_queue() > 0 {
                        break;
                    }
                    if *ttl_set {
                        socket.set_hop_limit(None);
                    }
                    self.phase = Phase::Head;
                    progress = true;
                }
                Phase::Closing => break,
            }
        }
        if progress {
            self.last_active = now;
        } else if self.awaits_request()
            && now.saturating_duration_since(self.last_active) >= IDLE_CLOSE
        {
            self.close(socket);
            progress = true;
        }
        progress
    }
}

fn empty_request() -> Request {
    Request {
        method: String::new(),
        path: String::new(),
        headers: Vec::new(),
    }
}

/// Reads what the socket has into `buf`, up to `cap` bytes in all; true if anything was read.
fn read_into(socket: &mut tcp::Socket, buf: &mut Vec<u8>, cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len());
    if room == 0 || !socket.can_recv() {
        return false;
    }
    socket
        .recv(|data| {
            let n = data.len().min(room);
            buf.extend_from_slice(&data[..n]);
            (n, n)
        })
        .is_ok_and(|n| n > 0)
}

/// Looks the caller up and lets IMDS answer; `None` when the port has no instance.
fn answer(ctx: &Ctx<'_>, request: &Request, now: Instant) -> Option<Response> {
    let view = (ctx.lookup)(ctx.port)?;
    let response = ctx.imds.handle(&view, request, now);
    tracing::trace!(
        port = %ctx.port,
        method = %request.method,
        path = %request.path,
        status = response.status,
        "IMDS request"
    );
    Some(response)
}

/// Starts writing `response`: serialises it and applies its TTL to the socket.
fn respond(socket: &mut tcp::Socket, response: &Response, keep_alive: bool) -> Phase {
    // A hop limit of 0 would make smoltcp panic; IMDS never asks for it (1..=64), so treat it as
    // the strictest valid value rather than trusting that.
    let ttl = response.ip_ttl.map(|t| t.max(1));
    if ttl.is_some() {
        socket.set_hop_limit(ttl);
    }
    Phase::Respond {
        out: serialize(response, keep_alive),
        sent: 0,
        ttl_set: ttl.is_some(),
        keep_alive,
    }
}

/// The status line, the headers exactly as IMDS gave them (plus `Connection: close` when this
/// response ends the connection) and the body.
fn serialize(response: &Response, keep_alive: bool) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        crate::imds::reason_phrase(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&response.body);
    out
}

/// The answer to a request the transport cannot parse, shaped like IMDS's own answers.
fn bad_request() -> Response {
    let body = b"400 - Bad Request\n".to_vec();
    Response {
        status: 400,
        headers: vec![
            ("Content-Type".to_string(), "text/plain".to_string()),
            ("Content-Length".to_string(), body.len().to_string()),
            ("Server".to_string(), "EC2ws".to_string()),
        ],
        body,
        ip_ttl: None,
    }
}

/// The length of the request head including its terminating blank line, if it is complete.
/// Bare LF line ends are accepted, as most servers do.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = &buf[line_start..i];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() && line_start > 0 {
            return Some(i + 1);
        }
        line_start = i + 1;
    }
    None
}

/// A request head, parsed.
#[derive(Debug)]
struct ParsedHead {
    request: Request,
    content_length: usize,
    keep_alive: bool,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a complete head (as found by [`head_end`]); `None` means 400.
fn parse_head(head: &[u8]) -> Option<ParsedHead> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next()?;
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !is_token(method) || target.is_empty() {
        return None;
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return None,
    };
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        // Folded continuation lines are obsolete (RFC 9112 §5.2) and a smuggling risk.
        let (name, value) = line.split_once(':')?;
        if !is_token(name) {
            return None;
        }
        headers.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    let mut content_length: Option<usize> = None;
    let mut close = false;
    for (name, value) in &headers {
        if name.eq_ignore_ascii_case("Content-Length") {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: usize = value.parse().ok()?;
            // Disagreeing lengths are a request smuggling attempt or a broken client.
            if content_length.is_some_and(|c| c != n) {
                return None;
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("Transfer-Encoding") {
            return None;
        } else if name.eq_ignore_ascii_case("Connection") {
            close |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    Some(ParsedHead {
        request: Request {
            method: method.to_string(),
            path: target.to_string(),
            headers,
        },
        content_length: content_length.unwrap_or(0),
        // HTTP/1.0 keep-alive would need a `Connection: keep-alive` answer; 1.0 clients are
        // rare enough here that closing is simpler.
        keep_alive: http11 && !close,
    })
}

#[cfg(test)]
#[path = "imds_service_tests.rs"]
mod tests;
