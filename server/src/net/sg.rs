//! Security groups: rule matching and per-port connection tracking.
//!
//! Each port keeps its own tracking table, as each ENI does on EC2: a packet from A to B must
//! pass A's egress check and B's ingress check, and each check passes either because the flow is
//! already tracked on that port (so replies flow both ways whatever the rules say) or because a
//! rule of one of the port's groups allows it. Rules are read at the moment a flow starts, which
//! is what makes rule changes apply to new flows at once while tracked flows carry on, as on EC2.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::frame::{IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP, Ipv4Info, L4, TcpFlags};

/// The protocol a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SgProtocol {
    /// Every protocol (`-1` in the EC2 API); the port range is ignored.
    All,
    Tcp,
    Udp,
    /// `from_port` is the ICMP type and `to_port` the code, `-1` meaning any.
    Icmp,
    /// Any other IP protocol number; the port range is ignored.
    Other(u8),
}

impl SgProtocol {
    fn number(&self) -> Option<u8> {
        match self {
            SgProtocol::All => None,
            SgProtocol::Tcp => Some(IP_PROTO_TCP),
            SgProtocol::Udp => Some(IP_PROTO_UDP),
            SgProtocol::Icmp => Some(IP_PROTO_ICMP),
            SgProtocol::Other(n) => Some(*n),
        }
    }
}

/// Who is on the other end of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SgPeer {
    Cidr4(Ipv4Net),
    /// Any ENI that is a member of this security group (by group id).
    Group(String),
}

/// One security group rule. `from_port`/`to_port` follow the EC2 API: a port range for TCP and
/// UDP, type and code for ICMP, and ignored for other protocols; a negative value means "any".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SgRule {
    pub egress: bool,
    pub protocol: SgProtocol,
    pub from_port: i32,
    pub to_port: i32,
    pub peer: SgPeer,
}

impl SgRule {
    /// The rule EC2 puts in every new group: all traffic out to anywhere. It is an ordinary,
    /// revocable rule, so the control plane passes it in like any other.
    pub fn allow_all_egress() -> Self {
        SgRule {
            egress: true,
            protocol: SgProtocol::All,
            from_port: -1,
            to_port: -1,
            peer: SgPeer::Cidr4(Ipv4Net::default()),
        }
    }

    /// The default group's rule: all traffic in from members of `group`.
    pub fn allow_all_ingress_from_group(group: impl Into<String>) -> Self {
        SgRule {
            egress: false,
            protocol: SgProtocol::All,
            from_port: -1,
            to_port: -1,
            peer: SgPeer::Group(group.into()),
        }
    }

    /// An ingress rule for a TCP port range from a CIDR.
    pub fn tcp_ingress(from_port: u16, to_port: u16, cidr: Ipv4Net) -> Self {
        SgRule {
            egress: false,
            protocol: SgProtocol::Tcp,
            from_port: i32::from(from_port),
            to_port: i32::from(to_port),
            peer: SgPeer::Cidr4(cidr),
        }
    }

    fn matches(&self, pkt: &PacketMeta, remote_ip: Ipv4Addr, remote_groups: &[String]) -> bool {
        if let Some(proto) = self.protocol.number() {
            if proto != pkt.protocol {
                return false;
            }
            match proto {
                IP_PROTO_TCP | IP_PROTO_UDP => {
                    let Some(port) = pkt.dst_port() else {
                        return false;
                    };
                    let port = i32::from(port);
                    let any = self.from_port < 0 && self.to_port < 0;
                    if !any && !(self.from_port..=self.to_port).contains(&port) {
                        return false;
                    }
                }
                IP_PROTO_ICMP => {
                    let L4::Icmp { ty, code, .. } = pkt.l4 else {
                        return false;
                    };
                    if self.from_port >= 0 && self.from_port != i32::from(ty) {
                        return false;
                    }
                    if self.to_port >= 0 && self.to_port != i32::from(code) {
                        return false;
                    }
                }
                _ => {}
            }
        }
        match &self.peer {
            SgPeer::Cidr4(net) => net.contains(&remote_ip),
            SgPeer::Group(group) => remote_groups.iter().any(|g| g == group),
        }
    }
}

/// The facts of a packet that filtering looks at.
#[derive(Clone, Copy, Debug)]
pub struct PacketMeta {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub l4: L4,
}

impl PacketMeta {
    pub fn from_ipv4(ip: &Ipv4Info<'_>) -> Self {
        PacketMeta {
            src: ip.src,
            dst: ip.dst,
            protocol: ip.protocol,
            l4: ip.l4,
        }
    }

    fn dst_port(&self) -> Option<u16> {
        match self.l4 {
            L4::Tcp { dst_port, .. } | L4::Udp { dst_port, .. } => Some(dst_port),
            _ => None,
        }
    }

    /// Source and destination "ports" for tracking: the echo identifier stands in for both on
    /// ICMP echo, so a reply maps onto its request. `None` for packets that cannot be tracked
    /// (ICMP errors, or TCP/UDP whose header was unreadable).
    fn flow_ports(&self) -> Option<(u16, u16)> {
        match (self.protocol, self.l4) {
            (
                _,
                L4::Tcp {
                    src_port, dst_port, ..
                }
                | L4::Udp { src_port, dst_port },
            ) => Some((src_port, dst_port)),
            (
                _,
                L4::Icmp {
                    echo_ident: Some(id),
                    ..
                },
            ) => Some((id, id)),
            (IP_PROTO_TCP | IP_PROTO_UDP | IP_PROTO_ICMP, _) => None,
            (_, _) => Some((0, 0)),
        }
    }

    fn tcp_flags(&self) -> Option<TcpFlags> {
        match self.l4 {
            L4::Tcp { flags, .. } => Some(flags),
            _ => None,
        }
    }

    /// Whether an allowed packet of this kind opens a tracked flow. An echo reply or a RST does
    /// not start anything by itself.
    fn opens_flow(&self) -> bool {
        match self.l4 {
            L4::Tcp { flags, .. } => !flags.rst,
            L4::Icmp { .. } => self.l4.is_echo_request(),
            _ => true,
        }
    }
}

/// Evaluates the rules of `groups` in one direction. `remote_groups` are the groups of the ENI at
/// the other end (empty when it is not an ENI), for group-referencing rules.
pub fn rules_allow(
    rules: &HashMap<String, Vec<SgRule>>,
    groups: &[String],
    egress: bool,
    pkt: &PacketMeta,
    remote_groups: &[String],
) -> bool {
    let remote_ip = if egress { pkt.dst } else { pkt.src };
    groups
        .iter()
        .filter_map(|g| rules.get(g))
        .flatten()
        .filter(|rule| rule.egress == egress)
        .any(|rule| rule.matches(pkt, remote_ip, remote_groups))
}

/// Idle timeouts and the size bound of a port's tracking table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Idle timeout of an established TCP connection (EC2's default is 432000 s, five days).
    pub tcp_established: Duration,
    /// Idle timeout of a TCP connection that is opening (SYN seen, no reply yet) or closing (FIN
    /// or RST seen).
    pub tcp_transitory: Duration,
    /// Idle timeout of a UDP flow that has seen traffic one way only (EC2: 30 s).
    pub udp: Duration,
    /// Idle timeout of a UDP flow that has seen traffic both ways (EC2: 180 s).
    pub udp_stream: Duration,
    /// Idle timeout of ICMP echo and other protocols.
    pub other: Duration,
    /// Most flows tracked per port. When full, new flows are dropped (what EC2 does when the
    /// conntrack allowance is exceeded) rather than evicting live ones.
    pub max_flows: usize,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            tcp_established: Duration::from_secs(432_000),
            tcp_transitory: Duration::from_secs(120),
            udp: Duration::from_secs(30),
            udp_stream: Duration::from_secs(180),
            other: Duration::from_secs(60),
            max_flows: 16_384,
        }
    }
}

/// The direction of a packet as seen from a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The port sent it.
    Outbound,
    /// The port receives it.
    Inbound,
}

/// A flow as seen from one port: its own address and port, the peer's, and the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    protocol: u8,
    local: Ipv4Addr,
    local_port: u16,
    remote: Ipv4Addr,
    remote_port: u16,
}

impl FlowKey {
    pub fn new(pkt: &PacketMeta, dir: Direction) -> Option<Self> {
        let (src_port, dst_port) = pkt.flow_ports()?;
        Some(match dir {
            Direction::Outbound => FlowKey {
                protocol: pkt.protocol,
                local: pkt.src,
                local_port: src_port,
                remote: pkt.dst,
                remote_port: dst_port,
            },
            Direction::Inbound => FlowKey {
                protocol: pkt.protocol,
                local: pkt.dst,
                local_port: dst_port,
                remote: pkt.src,
                remote_port: src_port,
            },
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlowState {
    TcpOpening,
    TcpEstablished,
    TcpClosing,
    Datagram { replied: bool },
}

#[derive(Clone, Copy, Debug)]
struct Flow {
    initiator: Direction,
    state: FlowState,
    last_seen: Instant,
}

/// One port's connection tracking table.
#[derive(Debug)]
pub struct Conntrack {
    config: ConntrackConfig,
    flows: HashMap<FlowKey, Flow>,
}

impl Conntrack {
    pub fn new(config: ConntrackConfig) -> Self {
        Conntrack {
            config,
            flows: HashMap::new(),
        }
    }

    pub fn set_config(&mut self, config: ConntrackConfig) {
        self.config = config;
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Whether a live tracked flow covers this packet. A fresh SYN on a closing connection is a
    /// new connection reusing the 5-tuple, so it must face the rules again.
    pub fn is_tracked(&self, key: &FlowKey, pkt: &PacketMeta, now: Instant) -> bool {
        let Some(flow) = self.flows.get(key) else {
            return false;
        };
        if !alive(&self.config, key, flow, now) {
            return false;
        }
        let new_syn = pkt.tcp_flags().is_some_and(|f| f.syn && !f.ack);
        !(new_syn && flow.state == FlowState::TcpClosing)
    }

    /// Records an allowed packet: refreshes or advances its flow, or starts one. Returns false
    /// when a new flow cannot be tracked because the table is full, in which case the packet
    /// must be dropped.
    pub fn observe(
        &mut self,
        key: FlowKey,
        pkt: &PacketMeta,
        dir: Direction,
        now: Instant,
    ) -> bool {
        if self.is_tracked(&key, pkt, now)
            && let Some(flow) = self.flows.get_mut(&key)
        {
            flow.last_seen = now;
            let reply = dir != flow.initiator;
            flow.state = match (flow.state, pkt.tcp_flags()) {
                (_, Some(f)) if f.fin || f.rst => FlowState::TcpClosing,
                (FlowState::TcpOpening, Some(_)) if reply => FlowState::TcpEstablished,
                (FlowState::Datagram { replied }, _) => FlowState::Datagram {
                    replied: replied || reply,
                },
                (state, _) => state,
            };
            return true;
        }
        if !pkt.opens_flow() {
            // Allowed by the rules on its own merits; nothing to remember.
            self.flows.remove(&key);
            return true;
        }
        if !self.flows.contains_key(&key) && self.flows.len() >= self.config.max_flows {
            self.expire(now);
            if self.flows.len() >= self.config.max_flows {
                tracing::debug!(?key, "conntrack table full, dropping new flow");
                return false;
            }
        }
        let state = match pkt.tcp_flags() {
            Some(f) if f.syn && !f.ack => FlowState::TcpOpening,
            Some(f) if f.fin => FlowState::TcpClosing,
            // Mid-stream traffic (for instance after the tracking entry timed out) that the rules
            // allow resumes as an established connection.
            Some(_) => FlowState::TcpEstablished,
            None => FlowState::Datagram { replied: false },
        };
        self.flows.insert(
            key,
            Flow {
                initiator: dir,
                state,
                last_seen: now,
            },
        );
        true
    }

    /// Drops flows idle past their timeout.
    pub fn expire(&mut self, now: Instant) {
        let config = &self.config;
        self.flows.retain(|key, flow| alive(config, key, flow, now));
    }

    /// Forgets flows to or from `remote`, for when that address leaves the VPC.
    pub fn forget_remote(&mut self, remote: Ipv4Addr) {
        self.flows.retain(|key, _| key.remote != remote);
    }
}

fn timeout(config: &ConntrackConfig, flow: &Flow, protocol: u8) -> Duration {
    match flow.state {
        FlowState::TcpEstablished => config.tcp_established,
        FlowState::TcpOpening | FlowState::TcpClosing => config.tcp_transitory,
        FlowState::Datagram { replied } if protocol == IP_PROTO_UDP => {
            if replied {
                config.udp_stream
            } else {
                config.udp
            }
        }
        FlowState::Datagram { .. } => config.other,
    }
}

fn alive(config: &ConntrackConfig, key: &FlowKey, flow: &Flow, now: Instant) -> bool {
    now.saturating_duration_since(flow.last_seen) < timeout(config, flow, key.protocol)
}
