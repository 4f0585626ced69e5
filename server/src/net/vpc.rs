//! The per-VPC switch and router, and the fabric that holds all VPCs.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol};

use super::frame::{self, Ipv4Info, L4};
use super::sg::{self, Conntrack, ConntrackConfig, Direction, FlowKey, PacketMeta, SgRule};
use super::{
    API_ADDR, API_PORT, FabricError, IMDS_ADDR, LEASE_SECS, LINK_LOCAL_DNS_ADDR, MacAddr, PortId,
    ROUTER_MAC, VPC_MTU, dhcp, dns,
};

/// The IMDS TCP port.
const IMDS_PORT: u16 = 80;

/// The pseudo-port of every VPC's uplink: where [`Vpc::ingress`] sends traffic for addresses
/// outside the VPC (the host, through [`super::gateway::Gateway`]). No ENI can take this id.
pub const UPLINK: PortId = PortId(u64::MAX);

/// The MAC the VPC router addresses frames on the uplink to. Locally administered, next to
/// [`ROUTER_MAC`].
pub const UPLINK_MAC: MacAddr = [0x0e, 0xec, 0x2d, 0x00, 0x00, 0x02];

/// A service the fabric hosts at a link-local address (IMDS). It is handed the raw frames a port
/// sends to it, and the port they came from: that port, never a source address inside the frame,
/// is the caller's identity. The frames it returns go back to the same port.
///
/// A service that keeps state between frames (a TCP stack) is also polled by the runtime, at
/// least as often as [`LocalService::poll_delay`] asks, for retransmissions and timeouts.
pub trait LocalService {
    fn handle(&mut self, port: PortId, frame: &[u8], now: Instant) -> Vec<Vec<u8>>;

    /// Frames the service sends on its own (retransmissions, late replies), each with its port.
    fn poll(&mut self, _now: Instant) -> Vec<(PortId, Vec<u8>)> {
        Vec::new()
    }

    /// How soon [`LocalService::poll`] wants to run again; `None` when it has nothing pending.
    fn poll_delay(&mut self, _now: Instant) -> Option<Duration> {
        None
    }

    /// The port is gone: drop whatever the service keeps for it.
    fn port_removed(&mut self, _port: PortId) {}
}

/// The settings of a VPC that the fabric acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VpcConfig {
    /// The primary IPv4 CIDR; the DNS server is its base + 2.
    pub cidr: Ipv4Net,
    /// The DHCP domain name and the private DNS zone; see [`super::default_domain_name`].
    pub domain_name: String,
    /// `enableDnsSupport`.
    pub enable_dns_support: bool,
    /// `enableDnsHostnames`.
    pub enable_dns_hostnames: bool,
    pub conntrack: ConntrackConfig,
}

impl VpcConfig {
    /// A VPC as `CreateVpc` makes it in `region`: DNS support on, DNS hostnames off.
    pub fn new(cidr: Ipv4Net, region: &str) -> Self {
        VpcConfig {
            cidr: cidr.trunc(),
            domain_name: super::default_domain_name(region),
            enable_dns_support: true,
            enable_dns_hostnames: false,
            conntrack: ConntrackConfig::default(),
        }
    }

    /// The Amazon-provided DNS server's address: the VPC's base address + 2.
    pub fn dns_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()).wrapping_add(2))
    }
}

/// A port: one ENI's attachment to the VPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    pub mac: MacAddr,
    /// The ENI's primary private IPv4 address.
    pub ip: Ipv4Addr,
    /// The subnet the ENI is in; its `.1` is the gateway.
    pub subnet: Ipv4Net,
    /// Security group ids the ENI is a member of.
    pub security_groups: Vec<String>,
}

impl PortConfig {
    fn gateway(&self) -> Ipv4Addr {
        subnet_gateway(self.subnet)
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            mac: self.mac,
            ip: self.ip,
            subnet: self.subnet,
        }
    }
}

/// The addressing of a port, copied out per packet so the hot path does not clone group lists.
#[derive(Clone, Copy, Debug)]
struct Endpoint {
    mac: MacAddr,
    ip: Ipv4Addr,
    subnet: Ipv4Net,
}

impl Endpoint {
    fn gateway(&self) -> Ipv4Addr {
        subnet_gateway(self.subnet)
    }
}

fn subnet_gateway(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).wrapping_add(1))
}

#[derive(Debug)]
struct Port {
    config: PortConfig,
    conntrack: Conntrack,
}

/// Checks that `domain` can be sent as DHCP option 15 and used as a DNS zone.
fn validate_domain(domain: &str) -> Result<(), FabricError> {
    let labels_ok = domain.split('.').all(|l| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if domain.is_empty() || domain.len() > 253 || !labels_ok {
        return Err(FabricError::InvalidDomainName(domain.to_string()));
    }
    Ok(())
}

/// One VPC's switch: its ports, its security groups, and the services it hosts.
pub struct Vpc {
    config: VpcConfig,
    ports: HashMap<PortId, Port>,
    by_mac: HashMap<MacAddr, PortId>,
    by_ip: HashMap<Ipv4Addr, PortId>,
    groups: HashMap<String, Vec<SgRule>>,
    local_service: Option<Box<dyn LocalService + Send>>,
    /// Whether something (the host gateway) is attached to [`UPLINK`].
    uplink: bool,
}

impl std::fmt::Debug for Vpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vpc")
            .field("config", &self.config)
            .field("ports", &self.ports.len())
            .field("groups", &self.groups.len())
            .field("local_service", &self.local_service.is_some())
            .field("uplink", &self.uplink)
            .finish()
    }
}

impl Vpc {
    pub fn new(config: VpcConfig) -> Result<Self, FabricError> {
        validate_domain(&config.domain_name)?;
        Ok(Vpc {
            config: VpcConfig {
                cidr: config.cidr.trunc(),
                ..config
            },
            ports: HashMap::new(),
            by_mac: HashMap::new(),
            by_ip: HashMap::new(),
            groups: HashMap::new(),
            local_service: None,
            uplink: false,
        })
    }

    pub fn config(&self) -> &VpcConfig {
        &self.config
    }

    pub fn set_dns_support(&mut self, on: bool) {
        self.config.enable_dns_support = on;
    }

    pub fn set_dns_hostnames(&mut self, on: bool) {
        self.config.enable_dns_hostnames = on;
    }

    pub fn set_domain_name(&mut self, domain: impl Into<String>) -> Result<(), FabricError> {
        let domain = domain.into();
        validate_domain(&domain)?;
        self.config.domain_name = domain;
        Ok(())
    }

    /// Changes the tracking timeouts and bound; flows already tracked are judged by the new
    /// timeouts from now on.
    pub fn set_conntrack_config(&mut self, config: ConntrackConfig) {
        for port in self.ports.values_mut() {
            port.conntrack.set_config(config.clone());
        }
        self.config.conntrack = config;
    }

    /// Installs the service that answers 169.254.169.254:80 (IMDS).
    pub fn set_local_service(&mut self, service: Box<dyn LocalService + Send>) {
        self.local_service = Some(service);
    }

    /// Attaches (or detaches) the uplink. While detached, nothing is routed out of the VPC and
    /// [`Vpc::uplink_ingress`] takes nothing in: there is no one at the other end, and flows to
    /// nowhere should not fill the conntrack tables. The API at [`API_ADDR`] lives behind the
    /// uplink, so it is only reachable while attached.
    pub fn set_uplink(&mut self, attached: bool) {
        self.uplink = attached;
    }

    /// Attaches a port. Its address must be a host address of its subnet (not the network, the
    /// three addresses EC2 reserves after it, nor the broadcast) and the subnet must lie inside
    /// the VPC.
    pub fn add_port(&mut self, id: PortId, config: PortConfig) -> Result<(), FabricError> {
        // The uplink's id is taken in every VPC.
        if self.ports.contains_key(&id) || id == UPLINK {
            return Err(FabricError::DuplicatePort(id));
        }
        let subnet = config.subnet.trunc();
        if !self.config.cidr.contains(&subnet) {
            return Err(FabricError::SubnetOutsideVpc {
                subnet,
                vpc: self.config.cidr,
            });
        }
        let offset = u32::from(config.ip).wrapping_sub(u32::from(subnet.network()));
        if !subnet.contains(&config.ip) || offset < 4 || config.ip == subnet.broadcast() {
            return Err(FabricError::IpOutsideSubnet {
                ip: config.ip,
                subnet,
            });
        }
        let mac = EthernetAddress(config.mac);
        if !mac.is_unicast()
            || config.mac == [0; 6]
            || config.mac == ROUTER_MAC
            || config.mac == UPLINK_MAC
        {
            return Err(FabricError::InvalidMac(config.mac));
        }
        if self.by_mac.contains_key(&config.mac) {
            return Err(FabricError::DuplicateMac(config.mac));
        }
        if self.by_ip.contains_key(&config.ip) {
            return Err(FabricError::DuplicateIp(config.ip));
        }
        self.by_mac.insert(config.mac, id);
        self.by_ip.insert(config.ip, id);
        self.ports.insert(
            id,
            Port {
                config: PortConfig { subnet, ..config },
                conntrack: Conntrack::new(self.config.conntrack.clone()),
            },
        );
        Ok(())
    }

    /// Detaches a port; flows other ports tracked with it are forgotten so a later ENI reusing
    /// the address starts clean.
    pub fn remove_port(&mut self, id: PortId) -> Option<PortConfig> {
        let port = self.ports.remove(&id)?;
        self.by_mac.remove(&port.config.mac);
        self.by_ip.remove(&port.config.ip);
        for other in self.ports.values_mut() {
            other.conntrack.forget_remote(port.config.ip);
        }
        if let Some(service) = self.local_service.as_mut() {
            service.port_removed(id);
        }
        Some(port.config)
    }

    pub fn port(&self, id: PortId) -> Option<&PortConfig> {
        self.ports.get(&id).map(|p| &p.config)
    }

    pub fn port_ids(&self) -> impl Iterator<Item = PortId> + '_ {
        self.ports.keys().copied()
    }

    /// Replaces a port's group membership. New flows are judged by it at once.
    pub fn set_port_groups(&mut self, id: PortId, groups: Vec<String>) -> Result<(), FabricError> {
        let port = self
            .ports
            .get_mut(&id)
            .ok_or(FabricError::UnknownPort(id))?;
        port.config.security_groups = groups;
        Ok(())
    }

    /// Replaces all rules (ingress and egress) of a group. New flows are judged by them at once;
    /// tracked flows carry on, as on EC2.
    pub fn set_group_rules(&mut self, group_id: impl Into<String>, rules: Vec<SgRule>) {
        self.groups.insert(group_id.into(), rules);
    }

    pub fn remove_group(&mut self, group_id: &str) -> Option<Vec<SgRule>> {
        self.groups.remove(group_id)
    }

    pub fn group_rules(&self, group_id: &str) -> Option<&[SgRule]> {
        self.groups.get(group_id).map(Vec::as_slice)
    }

    /// How many flows a port tracks (for tests and metrics).
    pub fn tracked_flows(&self, id: PortId) -> usize {
        self.ports.get(&id).map_or(0, |p| p.conntrack.len())
    }

    /// Drops idle tracked flows on every port. Call it now and then; lookups ignore expired
    /// flows anyway, this only reclaims memory.
    pub fn expire(&mut self, now: Instant) {
        for port in self.ports.values_mut() {
            port.conntrack.expire(now);
        }
    }

    /// Runs the local service's timers; returns the frames it sends, each with its port.
    pub fn poll(&mut self, now: Instant) -> Vec<(PortId, Vec<u8>)> {
        match self.local_service.as_mut() {
            Some(service) => service.poll(now),
            None => Vec::new(),
        }
    }

    /// How soon [`Vpc::poll`] should run again.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.local_service.as_mut()?.poll_delay(now)
    }

    /// Takes one frame sent by `from` and returns the frames to deliver, each with the port to
    /// deliver it on. Anything malformed, spoofed or not allowed is dropped (an empty result).
    pub fn ingress(&mut self, from: PortId, frame: &[u8], now: Instant) -> Vec<(PortId, Vec<u8>)> {
        let Some(port) = self.ports.get(&from) else {
            return Vec::new();
        };
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Vec::new();
        };
        // Source MAC check: a guest may only speak as its own ENI.
        if eth.src_addr().0 != port.config.mac {
            tracing::trace!(%from, "dropping frame with a foreign source MAC");
            return Vec::new();
        }
        match eth.ethertype() {
            EthernetProtocol::Arp => self.handle_arp(from, eth.payload()),
            EthernetProtocol::Ipv4 => {
                let Some(ip) = frame::parse_ipv4(eth.payload()) else {
                    return Vec::new();
                };
                self.handle_ipv4(from, eth.dst_addr().0, frame, &ip, now)
            }
            // IPv6, VLAN tags and the rest are not carried yet.
            _ => Vec::new(),
        }
    }

    /// Answers ARP requests on behalf of the gateway, the fabric's services and the other ENIs of
    /// the subnet. Guest ARP never reaches other guests, so no guest can poison another's cache.
    fn handle_arp(&self, from: PortId, payload: &[u8]) -> Vec<(PortId, Vec<u8>)> {
        let Some(port) = self.ports.get(&from) else {
            return Vec::new();
        };
        let Some(request) = frame::parse_arp_request(payload) else {
            return Vec::new();
        };
        let own = &port.config;
        // The sender must be the port itself; 0.0.0.0 is an address probe (RFC 5227).
        if request.sender_mac != own.mac
            || (request.sender_ip != own.ip && !request.sender_ip.is_unspecified())
        {
            return Vec::new();
        }
        let target = request.target_ip;
        let answer = if target == own.ip {
            // Answering a probe for its own address would make the guest think it conflicts.
            None
        } else if target == own.gateway()
            || target == self.config.dns_addr()
            || target == IMDS_ADDR
            || target == LINK_LOCAL_DNS_ADDR
            || target == API_ADDR
        {
            Some(ROUTER_MAC)
        } else {
            self.by_ip
                .get(&target)
                .and_then(|id| self.ports.get(id))
                .filter(|peer| peer.config.subnet == own.subnet)
                .map(|peer| peer.config.mac)
        };
        match answer {
            Some(mac) => vec![(from, frame::arp_reply(&request, target, mac))],
            None => Vec::new(),
        }
    }

    fn handle_ipv4(
        &mut self,
        from: PortId,
        dst_mac: MacAddr,
        raw: &[u8],
        ip: &Ipv4Info<'_>,
        now: Instant,
    ) -> Vec<(PortId, Vec<u8>)> {
        let Some(port) = self.ports.get(&from) else {
            return Vec::new();
        };
        let own = port.config.endpoint();

        // DHCP comes before the source check: a client without a lease sends from 0.0.0.0.
        if let L4::Udp {
            dst_port: dhcp::SERVER_PORT,
            ..
        } = ip.l4
            && (ip.src.is_unspecified() || ip.src == own.ip)
            && (ip.dst == Ipv4Addr::BROADCAST || ip.dst == own.gateway())
        {
            return self.serve_dhcp(from, &own, ip);
        }

        // Source/destination check: the source must be the ENI's own address.
        if ip.src != own.ip {
            tracing::trace!(%from, src = %ip.src, "dropping spoofed source address");
            return Vec::new();
        }

        // The fabric's own services, never subject to security groups.
        if ip.dst == self.config.dns_addr() || ip.dst == LINK_LOCAL_DNS_ADDR {
            return match ip.l4 {
                L4::Udp {
                    src_port,
                    dst_port: dns::PORT,
                } => self.serve_dns(from, &own, ip, src_port),
                _ => Vec::new(),
            };
        }
        if ip.dst == IMDS_ADDR {
            return match (ip.l4, self.local_service.as_mut()) {
                (
                    L4::Tcp {
                        dst_port: IMDS_PORT,
                        ..
                    },
                    Some(service),
                ) => service
                    .handle(from, raw, now)
                    .into_iter()
                    .map(|f| (from, f))
                    .collect(),
                _ => Vec::new(),
            };
        }
        if ip.dst == API_ADDR {
            return self.route_to_api(from, raw, ip);
        }

        // Switching and routing to another ENI of this VPC.
        let (to, routed) = if dst_mac == ROUTER_MAC {
            match self.by_ip.get(&ip.dst) {
                Some(&to) => (to, true),
                None if self.leaves_vpc(ip.dst) => return self.route_to_uplink(from, raw, ip, now),
                None => return Vec::new(),
            }
        } else {
            match self
                .by_mac
                .get(&dst_mac)
                .and_then(|id| self.ports.get(id).map(|p| (*id, p)))
            {
                // L2 delivery stays inside the subnet and must be addressed to that ENI.
                Some((to, peer))
                    if peer.config.subnet == own.subnet && peer.config.ip == ip.dst =>
                {
                    (to, false)
                }
                _ => return Vec::new(),
            }
        };
        if to == from {
            return Vec::new();
        }
        // Trailing fragments carry no ports to filter on; they are not carried (the VPC MTU is
        // 9001 on every port, so guests have no reason to fragment).
        if !ip.first_fragment {
            return Vec::new();
        }
        let Some(dst_port_mac) = self.ports.get(&to).map(|p| p.config.mac) else {
            return Vec::new();
        };
        if !self.security_groups_allow(from, to, &PacketMeta::from_ipv4(ip), now) {
            tracing::trace!(%from, %to, "dropped by security groups");
            return Vec::new();
        }
        let out = if routed {
            frame::route_frame(raw, ROUTER_MAC, dst_port_mac)
        } else {
            Some(raw.to_vec())
        };
        out.map(|f| vec![(to, f)]).unwrap_or_default()
    }

    /// Whether the router sends `dst` to the uplink: a unicast address outside the VPC, when the
    /// uplink is attached. Link-local
    /// (169.254/16), loopback, multicast, broadcast and "this network" addresses are never
    /// forwarded, as no router forwards them.
    fn leaves_vpc(&self, dst: Ipv4Addr) -> bool {
        self.uplink
            && !self.config.cidr.contains(&dst)
            && !dst.is_unspecified()
            && !dst.is_loopback()
            && !dst.is_link_local()
            && !dst.is_multicast()
            && !dst.is_broadcast()
            && dst.octets()[0] != 0
            && dst.octets()[0] < 240
    }

    /// Routes a frame from an ENI to the uplink, after the sender's egress check (the far end
    /// has no security groups, so only CIDR rules can match it).
    fn route_to_uplink(
        &mut self,
        from: PortId,
        raw: &[u8],
        ip: &Ipv4Info<'_>,
        now: Instant,
    ) -> Vec<(PortId, Vec<u8>)> {
        if !ip.first_fragment {
            return Vec::new();
        }
        if !self.one_side_allows(from, Direction::Outbound, &PacketMeta::from_ipv4(ip), now) {
            tracing::trace!(%from, dst = %ip.dst, "dropped by security groups (to uplink)");
            return Vec::new();
        }
        frame::route_frame(raw, ROUTER_MAC, UPLINK_MAC)
            .map(|f| vec![(UPLINK, f)])
            .unwrap_or_default()
    }

    /// Hands a guest's TCP segment for [`API_ADDR`] to the uplink, where the VPC's gateway
    /// answers it: served on [`API_PORT`], reset on any other port (so a mistyped port fails at
    /// once instead of hanging). Anything but TCP is dropped. The API is a fabric service like
    /// IMDS and DNS, so security groups do not apply (EC2 never filters its link-local services,
    /// and an instance whose groups deny all egress can still fetch the credentials it would call
    /// the API with), and nothing is tracked: the answers are let in by their source, not by
    /// conntrack. The sender's address was checked by the caller.
    fn route_to_api(&self, from: PortId, raw: &[u8], ip: &Ipv4Info<'_>) -> Vec<(PortId, Vec<u8>)> {
        let tcp = matches!(ip.l4, L4::Tcp { .. });
        // Trailing fragments carry no ports, and the gateway's stack does not reassemble.
        if !self.uplink || !tcp || !ip.first_fragment {
            tracing::trace!(%from, "dropping frame for the API address");
            return Vec::new();
        }
        relink(raw, ROUTER_MAC, UPLINK_MAC)
            .map(|f| vec![(UPLINK, f)])
            .unwrap_or_default()
    }

    /// Whether an uplink frame from [`API_ADDR`] is an answer of the API: TCP from
    /// [`API_PORT`] that is not a bare SYN (the API only ever answers connections guests open),
    /// or the reset refusing a connection to another port. Such frames skip the security groups
    /// (see [`Vpc::route_to_api`]); keeping the exemption this narrow stops it from becoming a
    /// way around them.
    fn is_api_answer(ip: &Ipv4Info<'_>) -> bool {
        match ip.l4 {
            L4::Tcp {
                src_port, flags, ..
            } => (src_port == API_PORT && (flags.ack || flags.rst)) || (flags.rst && !flags.syn),
            _ => false,
        }
    }

    /// Takes a frame from the uplink (the host gateway) and returns it for delivery to the ENI
    /// that owns its destination address, if that ENI's ingress check passes. The source must be
    /// outside the VPC, so the uplink can never pose as an ENI; the frame's MACs are not looked
    /// at and are rewritten, since the gateway does no ARP. The one exception is the API's
    /// answers from [`API_ADDR`] (see [`Vpc::is_api_answer`]), delivered without a
    /// security-group check, as the guest's frames to it were sent without one.
    pub fn uplink_ingress(&mut self, frame: &[u8], now: Instant) -> Vec<(PortId, Vec<u8>)> {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Vec::new();
        };
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return Vec::new();
        }
        let Some(ip) = frame::parse_ipv4(eth.payload()) else {
            return Vec::new();
        };
        if !ip.first_fragment {
            return Vec::new();
        }
        if ip.src == API_ADDR {
            if !self.uplink || !Self::is_api_answer(&ip) {
                tracing::trace!(dst = %ip.dst, "dropping uplink frame from the API address");
                return Vec::new();
            }
            return match self
                .by_ip
                .get(&ip.dst)
                .and_then(|id| self.ports.get(id).map(|p| (*id, p.config.mac)))
            {
                Some((to, mac)) => relink(frame, ROUTER_MAC, mac)
                    .map(|f| vec![(to, f)])
                    .unwrap_or_default(),
                None => Vec::new(),
            };
        }
        if !self.leaves_vpc(ip.src) {
            return Vec::new();
        }
        let Some((to, mac)) = self
            .by_ip
            .get(&ip.dst)
            .and_then(|id| self.ports.get(id).map(|p| (*id, p.config.mac)))
        else {
            return Vec::new();
        };
        if !self.one_side_allows(to, Direction::Inbound, &PacketMeta::from_ipv4(&ip), now) {
            tracing::trace!(%to, src = %ip.src, "dropped by security groups (from uplink)");
            return Vec::new();
        }
        frame::route_frame(frame, ROUTER_MAC, mac)
            .map(|f| vec![(to, f)])
            .unwrap_or_default()
    }

    /// The check of one port against a peer that is not an ENI: a tracked flow, or a rule of the
    /// port's groups whose CIDR covers the peer (group rules never match it). The flow is
    /// recorded when allowed.
    fn one_side_allows(
        &mut self,
        id: PortId,
        dir: Direction,
        pkt: &PacketMeta,
        now: Instant,
    ) -> bool {
        let Some(port) = self.ports.get_mut(&id) else {
            return false;
        };
        let key = FlowKey::new(pkt, dir);
        let allowed = key.is_some_and(|k| port.conntrack.is_tracked(&k, pkt, now))
            || sg::rules_allow(
                &self.groups,
                &port.config.security_groups,
                dir == Direction::Outbound,
                pkt,
                &[],
            );
        if !allowed {
            return false;
        }
        match key {
            Some(key) => port.conntrack.observe(key, pkt, dir, now),
            None => true,
        }
    }

    /// The sender's egress check and the receiver's ingress check, each passing on a tracked
    /// flow or on a rule; the flow is recorded on both ports only when both pass.
    fn security_groups_allow(
        &mut self,
        from: PortId,
        to: PortId,
        pkt: &PacketMeta,
        now: Instant,
    ) -> bool {
        let (Some(sender), Some(receiver)) = (self.ports.get(&from), self.ports.get(&to)) else {
            return false;
        };
        let out_key = FlowKey::new(pkt, Direction::Outbound);
        let in_key = FlowKey::new(pkt, Direction::Inbound);
        let out_ok = out_key.is_some_and(|k| sender.conntrack.is_tracked(&k, pkt, now))
            || sg::rules_allow(
                &self.groups,
                &sender.config.security_groups,
                true,
                pkt,
                &receiver.config.security_groups,
            );
        let in_ok = in_key.is_some_and(|k| receiver.conntrack.is_tracked(&k, pkt, now))
            || sg::rules_allow(
                &self.groups,
                &receiver.config.security_groups,
                false,
                pkt,
                &sender.config.security_groups,
            );
        if !(out_ok && in_ok) {
            return false;
        }
        let mut recorded = true;
        if let (Some(key), Some(sender)) = (out_key, self.ports.get_mut(&from)) {
            recorded &= sender.conntrack.observe(key, pkt, Direction::Outbound, now);
        }
        if let (Some(key), Some(receiver)) = (in_key, self.ports.get_mut(&to)) {
            recorded &= receiver
                .conntrack
                .observe(key, pkt, Direction::Inbound, now);
        }
        recorded
    }

    fn serve_dhcp(
        &self,
        from: PortId,
        own: &Endpoint,
        ip: &Ipv4Info<'_>,
    ) -> Vec<(PortId, Vec<u8>)> {
        let Some(message) = frame::udp_payload(ip.payload) else {
            return Vec::new();
        };
        let lease = dhcp::Lease {
            ip: own.ip,
            subnet: own.subnet,
            router: own.gateway(),
            dns: self.config.dns_addr(),
            domain_name: &self.config.domain_name,
            lease_secs: LEASE_SECS,
            mtu: VPC_MTU,
        };
        let Some(reply) = dhcp::handle(&lease, message) else {
            return Vec::new();
        };
        let dst_ip = if reply.broadcast {
            Ipv4Addr::BROADCAST
        } else {
            reply.dst_ip
        };
        frame::udp_frame(
            ROUTER_MAC,
            dhcp::reply_dst_mac(&reply, own.mac),
            lease.router,
            dst_ip,
            dhcp::SERVER_PORT,
            dhcp::CLIENT_PORT,
            &reply.payload,
        )
        .map(|f| vec![(from, f)])
        .unwrap_or_default()
    }

    fn serve_dns(
        &self,
        from: PortId,
        own: &Endpoint,
        ip: &Ipv4Info<'_>,
        client_port: u16,
    ) -> Vec<(PortId, Vec<u8>)> {
        let Some(query) = frame::udp_payload(ip.payload) else {
            return Vec::new();
        };
        let zone = dns::Zone {
            domain: &self.config.domain_name,
            vpc_cidr: self.config.cidr,
            dns_support: self.config.enable_dns_support,
            dns_hostnames: self.config.enable_dns_hostnames,
        };
        let Some(answer) = dns::respond(&zone, query) else {
            return Vec::new();
        };
        // Reply from the address the guest asked, or its resolver would ignore the answer.
        frame::udp_frame(
            ROUTER_MAC,
            own.mac,
            ip.dst,
            own.ip,
            dns::PORT,
            client_port,
            &answer,
        )
        .map(|f| vec![(from, f)])
        .unwrap_or_default()
    }
}

/// Copies a frame with new MACs and the IP header untouched: for the API, which like IMDS is an
/// on-link neighbour of the guest (169.254/16 is never routed), so the router is not a hop and
/// the TTL is not decremented. `None` if the frame is too short to carry an Ethernet header.
fn relink(frame: &[u8], src_mac: MacAddr, dst_mac: MacAddr) -> Option<Vec<u8>> {
    let mut out = frame.to_vec();
    let mut eth = EthernetFrame::new_checked(&mut out[..]).ok()?;
    eth.set_src_addr(EthernetAddress(src_mac));
    eth.set_dst_addr(EthernetAddress(dst_mac));
    Some(out)
}

/// All VPCs. A port belongs to exactly one VPC, and frames only ever reach ports of the VPC they
/// came from. Add and remove ports through the fabric so it can find each port's VPC.
#[derive(Debug, Default)]
pub struct Fabric {
    vpcs: HashMap<String, Vpc>,
    port_vpc: HashMap<PortId, String>,
}

impl Fabric {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_vpc(
        &mut self,
        vpc_id: impl Into<String>,
        config: VpcConfig,
    ) -> Result<&mut Vpc, FabricError> {
        let vpc_id = vpc_id.into();
        if self.vpcs.contains_key(&vpc_id) {
            return Err(FabricError::DuplicateVpc(vpc_id));
        }
        let vpc = Vpc::new(config)?;
        Ok(self.vpcs.entry(vpc_id).or_insert(vpc))
    }

    /// Removes a VPC with all its ports.
    pub fn remove_vpc(&mut self, vpc_id: &str) -> Option<Vpc> {
        let vpc = self.vpcs.remove(vpc_id)?;
        self.port_vpc.retain(|_, v| v != vpc_id);
        Some(vpc)
    }

    pub fn vpc(&self, vpc_id: &str) -> Option<&Vpc> {
        self.vpcs.get(vpc_id)
    }

    /// The VPC, to change its settings, groups and services. Its ports are managed through
    /// [`Fabric::add_port`] and [`Fabric::remove_port`].
    pub fn vpc_mut(&mut self, vpc_id: &str) -> Option<&mut Vpc> {
        self.vpcs.get_mut(vpc_id)
    }

    pub fn vpc_of(&self, port: PortId) -> Option<&str> {
        self.port_vpc.get(&port).map(String::as_str)
    }

    pub fn add_port(
        &mut self,
        vpc_id: &str,
        id: PortId,
        config: PortConfig,
    ) -> Result<(), FabricError> {
        if self.port_vpc.contains_key(&id) {
            return Err(FabricError::DuplicatePort(id));
        }
        let vpc = self
            .vpcs
            .get_mut(vpc_id)
            .ok_or_else(|| FabricError::UnknownVpc(vpc_id.to_string()))?;
        vpc.add_port(id, config)?;
        self.port_vpc.insert(id, vpc_id.to_string());
        Ok(())
    }

    pub fn remove_port(&mut self, id: PortId) -> Option<PortConfig> {
        let vpc_id = self.port_vpc.remove(&id)?;
        self.vpcs.get_mut(&vpc_id)?.remove_port(id)
    }

    /// Takes a frame sent by a port and returns the frames to deliver. Unknown ports get nothing.
    /// Frames for [`UPLINK`] belong to the uplink of the sender's VPC ([`Fabric::vpc_of`]).
    pub fn ingress(&mut self, from: PortId, frame: &[u8], now: Instant) -> Vec<(PortId, Vec<u8>)> {
        let Some(vpc) = self.port_vpc.get(&from).and_then(|v| self.vpcs.get_mut(v)) else {
            return Vec::new();
        };
        vpc.ingress(from, frame, now)
    }

    /// Takes a frame from a VPC's uplink; see [`Vpc::uplink_ingress`].
    pub fn uplink_ingress(
        &mut self,
        vpc_id: &str,
        frame: &[u8],
        now: Instant,
    ) -> Vec<(PortId, Vec<u8>)> {
        match self.vpcs.get_mut(vpc_id) {
            Some(vpc) => vpc.uplink_ingress(frame, now),
            None => Vec::new(),
        }
    }

    pub fn expire(&mut self, now: Instant) {
        for vpc in self.vpcs.values_mut() {
            vpc.expire(now);
        }
    }

    /// Polls every VPC's local service; see [`Vpc::poll`].
    pub fn poll(&mut self, now: Instant) -> Vec<(PortId, Vec<u8>)> {
        self.vpcs.values_mut().flat_map(|v| v.poll(now)).collect()
    }

    /// The soonest any VPC wants to be polled again.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.vpcs
            .values_mut()
            .filter_map(|v| v.poll_delay(now))
            .min()
    }
}
