//! Tests of the fabric on crafted frames, built and read with smoltcp's wire representations.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress,
    EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket,
};

use super::*;

// ---------------------------------------------------------------- frame crafting

fn mac(n: u8) -> MacAddr {
    [0x02, 0, 0, 0, 0, n]
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test network")
}

#[allow(clippy::too_many_arguments)]
fn ipv4_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: IpProtocol,
    ttl: u8,
    l4_len: usize,
    emit_l4: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Ipv4,
    };
    let ipr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: protocol,
        payload_len: l4_len,
        hop_limit: ttl,
    };
    let mut buf = vec![0u8; eth.buffer_len() + ipr.buffer_len() + l4_len];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ipr.emit(&mut packet, &ChecksumCapabilities::default());
    emit_l4(packet.payload_mut());
    buf
}

#[derive(Clone, Copy)]
enum Tcp {
    Syn,
    SynAck,
    Ack,
    Fin,
    Rst,
}

#[allow(clippy::too_many_arguments)]
fn tcp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    kind: Tcp,
) -> Vec<u8> {
    let (control, ack) = match kind {
        Tcp::Syn => (TcpControl::Syn, false),
        Tcp::SynAck => (TcpControl::Syn, true),
        Tcp::Ack => (TcpControl::None, true),
        Tcp::Fin => (TcpControl::Fin, true),
        Tcp::Rst => (TcpControl::Rst, false),
    };
    let tcp = TcpRepr {
        src_port: sport,
        dst_port: dport,
        control,
        seq_number: TcpSeqNumber(1000),
        ack_number: ack.then_some(TcpSeqNumber(2000)),
        window_len: 64240,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    ipv4_frame(
        src_mac,
        dst_mac,
        src,
        dst,
        IpProtocol::Tcp,
        64,
        tcp.buffer_len(),
        |buf| {
            let mut packet = TcpPacket::new_unchecked(buf);
            tcp.emit(
                &mut packet,
                &IpAddress::Ipv4(src),
                &IpAddress::Ipv4(dst),
                &ChecksumCapabilities::default(),
            );
        },
    )
}

fn icmp_echo(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    request: bool,
) -> Vec<u8> {
    let icmp = if request {
        Icmpv4Repr::EchoRequest {
            ident,
            seq_no: 1,
            data: b"ping",
        }
    } else {
        Icmpv4Repr::EchoReply {
            ident,
            seq_no: 1,
            data: b"ping",
        }
    };
    ipv4_frame(
        src_mac,
        dst_mac,
        src,
        dst,
        IpProtocol::Icmp,
        64,
        icmp.buffer_len(),
        |buf| {
            let mut packet = Icmpv4Packet::new_unchecked(buf);
            icmp.emit(&mut packet, &ChecksumCapabilities::default());
        },
    )
}

fn udp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    frame::udp_frame(src_mac, dst_mac, src, dst, sport, dport, payload).expect("small payload")
}

fn arp_request(src_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(src_mac),
        source_protocol_addr: sender_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target_ip,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    buf
}

/// A received frame, read back.
struct Seen {
    src_mac: MacAddr,
    dst_mac: MacAddr,
    ip: Ipv4Repr,
    /// The IPv4 payload.
    payload: Vec<u8>,
}

fn read_ipv4(frame: &[u8]) -> Seen {
    let eth = EthernetFrame::new_checked(frame).expect("ethernet");
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    let packet = Ipv4Packet::new_checked(eth.payload()).expect("ipv4");
    assert!(packet.verify_checksum(), "IPv4 header checksum");
    let ip = Ipv4Repr::parse(&packet, &ChecksumCapabilities::default()).expect("ipv4 repr");
    Seen {
        src_mac: eth.src_addr().0,
        dst_mac: eth.dst_addr().0,
        ip,
        payload: packet.payload().to_vec(),
    }
}

/// Reads a UDP frame: (seen, src port, dst port, payload), verifying the UDP checksum.
fn read_udp(frame: &[u8]) -> (Seen, u16, u16, Vec<u8>) {
    let seen = read_ipv4(frame);
    assert_eq!(seen.ip.next_header, IpProtocol::Udp);
    let packet = UdpPacket::new_checked(&seen.payload[..]).expect("udp");
    assert!(
        packet.verify_checksum(
            &IpAddress::Ipv4(seen.ip.src_addr),
            &IpAddress::Ipv4(seen.ip.dst_addr)
        ),
        "UDP checksum"
    );
    let (sport, dport, payload) = (
        packet.src_port(),
        packet.dst_port(),
        packet.payload().to_vec(),
    );
    (seen, sport, dport, payload)
}

// ---------------------------------------------------------------- topology

const P1: PortId = PortId(1); // 10.0.1.10, subnet 1, sg-a
const P2: PortId = PortId(2); // 10.0.1.20, subnet 1, sg-b
const P3: PortId = PortId(3); // 10.0.2.30, subnet 2, sg-b
const P9: PortId = PortId(9); // 10.0.1.99 in another VPC with the same CIDR

fn test_conntrack() -> ConntrackConfig {
    ConntrackConfig {
        tcp_established: Duration::from_secs(350),
        ..ConntrackConfig::default()
    }
}

fn port(n: u8, addr: &str, subnet: &str, groups: &[&str]) -> PortConfig {
    PortConfig {
        mac: mac(n),
        ip: ip(addr),
        subnet: net(subnet),
        security_groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

/// One VPC (10.0.0.0/16) with P1, P2 in 10.0.1.0/24 and P3 in 10.0.2.0/24, and a second VPC with
/// the same CIDR holding P9. Both groups start with only the default egress rule.
fn setup() -> Fabric {
    let mut fabric = Fabric::new();
    let mut config = VpcConfig::new(net("10.0.0.0/16"), "us-east-1");
    config.enable_dns_hostnames = true;
    config.conntrack = test_conntrack();
    fabric.add_vpc("vpc-a", config.clone()).expect("vpc-a");
    fabric.add_vpc("vpc-b", config).expect("vpc-b");
    fabric
        .add_port("vpc-a", P1, port(1, "10.0.1.10", "10.0.1.0/24", &["sg-a"]))
        .expect("p1");
    fabric
        .add_port("vpc-a", P2, port(2, "10.0.1.20", "10.0.1.0/24", &["sg-b"]))
        .expect("p2");
    fabric
        .add_port("vpc-a", P3, port(3, "10.0.2.30", "10.0.2.0/24", &["sg-b"]))
        .expect("p3");
    fabric
        .add_port("vpc-b", P9, port(9, "10.0.1.99", "10.0.1.0/24", &["sg-z"]))
        .expect("p9");
    let vpc = fabric.vpc_mut("vpc-a").expect("vpc-a");
    vpc.set_group_rules("sg-a", vec![SgRule::allow_all_egress()]);
    vpc.set_group_rules("sg-b", vec![SgRule::allow_all_egress()]);
    let vpc = fabric.vpc_mut("vpc-b").expect("vpc-b");
    vpc.set_group_rules(
        "sg-z",
        vec![
            SgRule::allow_all_egress(),
            SgRule {
                egress: false,
                protocol: SgProtocol::All,
                from_port: -1,
                to_port: -1,
                peer: SgPeer::Cidr4(net("0.0.0.0/0")),
            },
        ],
    );
    fabric
}

fn open_all_ingress(fabric: &mut Fabric, group: &str) {
    fabric.vpc_mut("vpc-a").expect("vpc").set_group_rules(
        group,
        vec![
            SgRule::allow_all_egress(),
            SgRule {
                egress: false,
                protocol: SgProtocol::All,
                from_port: -1,
                to_port: -1,
                peer: SgPeer::Cidr4(net("0.0.0.0/0")),
            },
        ],
    );
}

fn tcp_from(
    n: u8,
    dst_mac: MacAddr,
    src: &str,
    dst: &str,
    sport: u16,
    dport: u16,
    kind: Tcp,
) -> Vec<u8> {
    tcp_frame(mac(n), dst_mac, ip(src), ip(dst), sport, dport, kind)
}

// ---------------------------------------------------------------- ARP

fn arp_answer(
    fabric: &mut Fabric,
    from: PortId,
    n: u8,
    sender: &str,
    target: &str,
) -> Option<MacAddr> {
    let out = fabric.ingress(
        from,
        &arp_request(mac(n), ip(sender), ip(target)),
        Instant::now(),
    );
    assert!(out.len() <= 1);
    let (to, reply) = out.into_iter().next()?;
    assert_eq!(to, from, "ARP replies go back to the asking port");
    let eth = EthernetFrame::new_checked(&reply[..]).expect("eth");
    assert_eq!(eth.ethertype(), EthernetProtocol::Arp);
    assert_eq!(eth.dst_addr().0, mac(n));
    let arp =
        ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).expect("arp")).expect("arp repr");
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_hardware_addr,
        target_protocol_addr,
    } = arp
    else {
        panic!("unexpected ARP kind");
    };
    assert_eq!(operation, ArpOperation::Reply);
    assert_eq!(source_protocol_addr, ip(target));
    assert_eq!(target_hardware_addr.0, mac(n));
    assert_eq!(target_protocol_addr, ip(sender));
    assert_eq!(eth.src_addr(), source_hardware_addr);
    Some(source_hardware_addr.0)
}

#[test]
fn arp_gateway_and_services_resolve_to_router_mac() {
    let mut f = setup();
    assert_eq!(
        arp_answer(&mut f, P1, 1, "10.0.1.10", "10.0.1.1"),
        Some(ROUTER_MAC)
    );
    assert_eq!(
        arp_answer(&mut f, P3, 3, "10.0.2.30", "10.0.2.1"),
        Some(ROUTER_MAC)
    );
    assert_eq!(
        arp_answer(&mut f, P1, 1, "10.0.1.10", "169.254.169.254"),
        Some(ROUTER_MAC)
    );
    assert_eq!(
        arp_answer(&mut f, P1, 1, "10.0.1.10", "169.254.169.253"),
        Some(ROUTER_MAC)
    );
    // The DNS server (VPC base + 2), and before the guest has an address (probe-style sender).
    assert_eq!(
        arp_answer(&mut f, P1, 1, "10.0.1.10", "10.0.0.2"),
        Some(ROUTER_MAC)
    );
    assert_eq!(
        arp_answer(&mut f, P1, 1, "0.0.0.0", "10.0.1.1"),
        Some(ROUTER_MAC)
    );
}

#[test]
fn arp_for_peers_is_proxied_within_the_subnet_only() {
    let mut f = setup();
    assert_eq!(
        arp_answer(&mut f, P1, 1, "10.0.1.10", "10.0.1.20"),
        Some(mac(2))
    );
    // Another subnet's ENI, another subnet's gateway and unknown addresses get no answer.
    assert_eq!(arp_answer(&mut f, P1, 1, "10.0.1.10", "10.0.2.30"), None);
    assert_eq!(arp_answer(&mut f, P1, 1, "10.0.1.10", "10.0.2.1"), None);
    assert_eq!(arp_answer(&mut f, P1, 1, "10.0.1.10", "10.0.1.77"), None);
    // A duplicate-address probe for the guest's own address must not look like a conflict.
    assert_eq!(arp_answer(&mut f, P1, 1, "0.0.0.0", "10.0.1.10"), None);
    // Never across VPCs, even with the same addresses.
    assert_eq!(arp_answer(&mut f, P9, 9, "10.0.1.99", "10.0.1.20"), None);
}

#[test]
fn arp_from_impostors_is_ignored() {
    let mut f = setup();
    let now = Instant::now();
    // Claiming P2's address from P1.
    assert!(
        f.ingress(
            P1,
            &arp_request(mac(1), ip("10.0.1.20"), ip("10.0.1.1")),
            now
        )
        .is_empty()
    );
    // P2's MAC from P1's port.
    assert!(
        f.ingress(
            P1,
            &arp_request(mac(2), ip("10.0.1.20"), ip("10.0.1.1")),
            now
        )
        .is_empty()
    );
    // ARP replies from guests are not switched anywhere.
    let mut reply = arp_request(mac(1), ip("10.0.1.10"), ip("10.0.1.20"));
    ArpPacket::new_unchecked(&mut reply[14..]).set_operation(ArpOperation::Reply);
    assert!(f.ingress(P1, &reply, now).is_empty());
}

// ---------------------------------------------------------------- DHCP

fn dhcp_message(
    message_type: DhcpMessageType,
    chaddr: MacAddr,
    client_ip: Ipv4Addr,
    requested_ip: Option<Ipv4Addr>,
    server_identifier: Option<Ipv4Addr>,
) -> Vec<u8> {
    let params = [1u8, 3, 6, 12, 15, 26, 51, 54];
    let repr = DhcpRepr {
        message_type,
        transaction_id: 0x1234_5678,
        secs: 0,
        client_hardware_address: EthernetAddress(chaddr),
        client_ip,
        your_ip: Ipv4Addr::UNSPECIFIED,
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: None,
        subnet_mask: None,
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: false,
        requested_ip,
        client_identifier: Some(EthernetAddress(chaddr)),
        server_identifier,
        parameter_request_list: Some(&params),
        dns_servers: None,
        max_size: Some(1500),
        lease_duration: None,
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut DhcpPacket::new_unchecked(&mut buf[..]))
        .expect("emit dhcp");
    buf
}

fn dhcp_frame(n: u8, src: Ipv4Addr, dst: Ipv4Addr, message: &[u8]) -> Vec<u8> {
    let dst_mac = if dst == Ipv4Addr::BROADCAST {
        [0xff; 6]
    } else {
        ROUTER_MAC
    };
    udp(mac(n), dst_mac, src, dst, 68, 67, message)
}

/// A DHCP reply read back: the frame facts, the repr fields we check, and the raw options.
struct DhcpSeen {
    seen: Seen,
    message_type: DhcpMessageType,
    your_ip: Ipv4Addr,
    xid: u32,
    options: Vec<(u8, Vec<u8>)>,
}

impl DhcpSeen {
    fn option(&self, kind: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.as_slice())
    }
}

fn dhcp_exchange(f: &mut Fabric, from: PortId, frame: &[u8]) -> Option<DhcpSeen> {
    let out = f.ingress(from, frame, Instant::now());
    assert!(out.len() <= 1);
    let (to, reply) = out.into_iter().next()?;
    assert_eq!(to, from);
    let (seen, sport, dport, payload) = read_udp(&reply);
    assert_eq!((sport, dport), (67, 68));
    let packet = DhcpPacket::new_checked(&payload[..]).expect("dhcp");
    let repr = DhcpRepr::parse(&packet).expect("dhcp repr");
    let options = packet
        .options()
        .map(|o| (o.kind, o.data.to_vec()))
        .collect();
    Some(DhcpSeen {
        message_type: repr.message_type,
        your_ip: repr.your_ip,
        xid: repr.transaction_id,
        options,
        seen,
    })
}

fn check_parameters(reply: &DhcpSeen, addr: &str, hostname: &str) {
    assert_eq!(reply.seen.src_mac, ROUTER_MAC);
    assert_eq!(reply.seen.ip.src_addr, ip("10.0.1.1"));
    assert_eq!(reply.xid, 0x1234_5678);
    assert_eq!(reply.your_ip, ip(addr));
    assert_eq!(
        reply.option(1),
        Some(&[255, 255, 255, 0][..]),
        "subnet mask"
    );
    assert_eq!(reply.option(3), Some(&[10, 0, 1, 1][..]), "router");
    assert_eq!(reply.option(6), Some(&[10, 0, 0, 2][..]), "DNS server");
    assert_eq!(reply.option(15), Some(&b"ec2.internal"[..]), "domain name");
    assert_eq!(reply.option(12), Some(hostname.as_bytes()), "hostname");
    assert_eq!(reply.option(26), Some(&9001u16.to_be_bytes()[..]), "MTU");
    assert_eq!(
        reply.option(51),
        Some(&3600u32.to_be_bytes()[..]),
        "lease time"
    );
    assert_eq!(
        reply.option(54),
        Some(&[10, 0, 1, 1][..]),
        "server identifier"
    );
}

#[test]
fn dhcp_full_exchange_leases_the_ports_address() {
    let mut f = setup();
    let discover = dhcp_message(
        DhcpMessageType::Discover,
        mac(1),
        Ipv4Addr::UNSPECIFIED,
        None,
        None,
    );
    let offer = dhcp_exchange(
        &mut f,
        P1,
        &dhcp_frame(1, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &discover),
    )
    .expect("offer");
    assert_eq!(offer.message_type, DhcpMessageType::Offer);
    check_parameters(&offer, "10.0.1.10", "ip-10-0-1-10");
    assert_eq!(offer.seen.dst_mac, mac(1));
    assert_eq!(offer.seen.ip.dst_addr, ip("10.0.1.10"));

    let request = dhcp_message(
        DhcpMessageType::Request,
        mac(1),
        Ipv4Addr::UNSPECIFIED,
        Some(ip("10.0.1.10")),
        Some(ip("10.0.1.1")),
    );
    let ack = dhcp_exchange(
        &mut f,
        P1,
        &dhcp_frame(1, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &request),
    )
    .expect("ack");
    assert_eq!(ack.message_type, DhcpMessageType::Ack);
    check_parameters(&ack, "10.0.1.10", "ip-10-0-1-10");

    // Renewal: unicast to the server from the leased address.
    let renew = dhcp_message(
        DhcpMessageType::Request,
        mac(1),
        ip("10.0.1.10"),
        None,
        None,
    );
    let ack = dhcp_exchange(
        &mut f,
        P1,
        &dhcp_frame(1, ip("10.0.1.10"), ip("10.0.1.1"), &renew),
    )
    .expect("renew");
    assert_eq!(ack.message_type, DhcpMessageType::Ack);
    assert_eq!(ack.seen.ip.dst_addr, ip("10.0.1.10"));
}

#[test]
fn dhcp_address_comes_from_the_port_not_the_client() {
    let mut f = setup();
    // P2's guest pretends to be P1 inside the DHCP message: it still gets P2's address.
    let discover = dhcp_message(
        DhcpMessageType::Discover,
        mac(1),
        Ipv4Addr::UNSPECIFIED,
        Some(ip("10.0.1.10")),
        None,
    );
    let offer = dhcp_exchange(
        &mut f,
        P2,
        &dhcp_frame(2, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &discover),
    )
    .expect("offer");
    assert_eq!(offer.your_ip, ip("10.0.1.20"));
    assert_eq!(offer.option(12), Some(&b"ip-10-0-1-20"[..]));
    assert_eq!(offer.seen.dst_mac, mac(2));
    // Requesting someone else's address is refused.
    let request = dhcp_message(
        DhcpMessageType::Request,
        mac(2),
        Ipv4Addr::UNSPECIFIED,
        Some(ip("10.0.1.10")),
        Some(ip("10.0.1.1")),
    );
    let nak = dhcp_exchange(
        &mut f,
        P2,
        &dhcp_frame(2, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &request),
    )
    .expect("nak");
    assert_eq!(nak.message_type, DhcpMessageType::Nak);
    assert_eq!(nak.seen.ip.dst_addr, Ipv4Addr::BROADCAST);
    assert_eq!(nak.your_ip, Ipv4Addr::UNSPECIFIED);
    // A request for another server's offer is left alone.
    let other = dhcp_message(
        DhcpMessageType::Request,
        mac(2),
        Ipv4Addr::UNSPECIFIED,
        Some(ip("10.0.1.20")),
        Some(ip("192.0.2.1")),
    );
    assert!(
        dhcp_exchange(
            &mut f,
            P2,
            &dhcp_frame(2, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &other)
        )
        .is_none()
    );
    // The source MAC must still be the port's.
    let spoofed = udp(
        mac(1),
        [0xff; 6],
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        68,
        67,
        &discover,
    );
    assert!(f.ingress(P2, &spoofed, Instant::now()).is_empty());
}

#[test]
fn dhcp_inform_release_and_regional_domain() {
    let mut f = setup();
    let inform = dhcp_message(DhcpMessageType::Inform, mac(3), ip("10.0.2.30"), None, None);
    let ack = dhcp_exchange(
        &mut f,
        P3,
        &dhcp_frame(3, ip("10.0.2.30"), Ipv4Addr::BROADCAST, &inform),
    )
    .expect("ack");
    assert_eq!(ack.message_type, DhcpMessageType::Ack);
    assert_eq!(ack.your_ip, Ipv4Addr::UNSPECIFIED);
    assert_eq!(ack.option(51), None, "INFORM carries no lease time");
    assert_eq!(ack.option(3), Some(&[10, 0, 2, 1][..]));
    assert_eq!(ack.option(12), Some(&b"ip-10-0-2-30"[..]));
    assert_eq!(ack.seen.ip.dst_addr, ip("10.0.2.30"));

    let release = dhcp_message(
        DhcpMessageType::Release,
        mac(3),
        ip("10.0.2.30"),
        None,
        Some(ip("10.0.2.1")),
    );
    assert!(
        dhcp_exchange(
            &mut f,
            P3,
            &dhcp_frame(3, ip("10.0.2.30"), ip("10.0.2.1"), &release)
        )
        .is_none()
    );

    // Outside us-east-1 the domain is <region>.compute.internal.
    assert_eq!(
        default_domain_name("eu-west-1"),
        "eu-west-1.compute.internal"
    );
    let mut fabric = Fabric::new();
    fabric
        .add_vpc("vpc-eu", VpcConfig::new(net("172.31.0.0/16"), "eu-west-1"))
        .expect("vpc");
    fabric
        .add_port(
            "vpc-eu",
            PortId(7),
            port(7, "172.31.16.5", "172.31.16.0/20", &[]),
        )
        .expect("port");
    let discover = dhcp_message(
        DhcpMessageType::Discover,
        mac(7),
        Ipv4Addr::UNSPECIFIED,
        None,
        None,
    );
    let offer = dhcp_exchange(
        &mut fabric,
        PortId(7),
        &dhcp_frame(7, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, &discover),
    )
    .expect("offer");
    assert_eq!(offer.option(15), Some(&b"eu-west-1.compute.internal"[..]));
    assert_eq!(offer.option(6), Some(&[172, 31, 0, 2][..]));
    assert_eq!(offer.option(3), Some(&[172, 31, 16, 1][..]));
    assert_eq!(offer.option(1), Some(&[255, 255, 240, 0][..]));
}

// ---------------------------------------------------------------- DNS

fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

struct DnsSeen {
    src: Ipv4Addr,
    id: u16,
    flags: u16,
    ancount: u16,
    /// (type, rdata) of the single answer.
    answer: Option<(u16, Vec<u8>)>,
}

fn ask(
    f: &mut Fabric,
    from: PortId,
    n: u8,
    src: &str,
    server: &str,
    name: &str,
    qtype: u16,
) -> Option<DnsSeen> {
    let query = dns_query(0xbeef, name, qtype);
    let frame = udp(mac(n), ROUTER_MAC, ip(src), ip(server), 40000, 53, &query);
    let out = f.ingress(from, &frame, Instant::now());
    assert!(out.len() <= 1);
    let (to, reply) = out.into_iter().next()?;
    assert_eq!(to, from);
    let (seen, sport, dport, msg) = read_udp(&reply);
    assert_eq!((sport, dport), (53, 40000));
    assert_eq!(seen.ip.dst_addr, ip(src));
    assert_eq!(seen.dst_mac, mac(n));
    let be = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    let ancount = be(6);
    let qlen = query.len() - 12;
    assert_eq!(&msg[12..12 + qlen], &query[12..], "question echoed");
    let answer = (ancount == 1).then(|| {
        let at = 12 + qlen;
        assert_eq!(be(at), 0xc00c, "owner name points at the question");
        let rtype = be(at + 2);
        let rdlen = usize::from(be(at + 10));
        (rtype, msg[at + 12..at + 12 + rdlen].to_vec())
    });
    Some(DnsSeen {
        src: seen.ip.src_addr,
        id: be(0),
        flags: be(2),
        ancount,
        answer,
    })
}

fn rcode(reply: &DnsSeen) -> u16 {
    reply.flags & 0x000f
}

fn decode_name(mut rdata: &[u8]) -> String {
    let mut labels = Vec::new();
    while let Some((&len, rest)) = rdata.split_first() {
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8(rest[..usize::from(len)].to_vec()).expect("ascii"));
        rdata = &rest[usize::from(len)..];
    }
    labels.join(".")
}

#[test]
fn dns_answers_private_names_and_ptr() {
    let mut f = setup();
    let r = ask(
        &mut f,
        P1,
        1,
        "10.0.1.10",
        "10.0.0.2",
        "ip-10-0-2-30.ec2.internal",
        1,
    )
    .expect("reply");
    assert_eq!(r.id, 0xbeef);
    assert_eq!(r.flags & 0x8000, 0x8000, "QR");
    assert_eq!(r.flags & 0x0400, 0x0400, "AA");
    assert_eq!(r.flags & 0x0100, 0x0100, "RD echoed");
    assert_eq!(rcode(&r), 0);
    assert_eq!(r.src, ip("10.0.0.2"));
    assert_eq!(r.answer, Some((1, vec![10, 0, 2, 30])));
    // Case-insensitive, any address of the VPC CIDR, and via 169.254.169.253 too.
    let r = ask(
        &mut f,
        P1,
        1,
        "10.0.1.10",
        "169.254.169.253",
        "IP-10-0-200-7.EC2.Internal",
        1,
    )
    .expect("reply");
    assert_eq!(r.src, ip("169.254.169.253"));
    assert_eq!(r.answer, Some((1, vec![10, 0, 200, 7])));
    // PTR.
    let r = ask(
        &mut f,
        P3,
        3,
        "10.0.2.30",
        "10.0.0.2",
        "10.1.0.10.in-addr.arpa",
        12,
    )
    .expect("reply");
    assert_eq!(rcode(&r), 0);
    let (rtype, rdata) = r.answer.expect("ptr");
    assert_eq!(rtype, 12);
    assert_eq!(decode_name(&rdata), "ip-10-0-1-10.ec2.internal");
    // A name that exists but has no AAAA: NOERROR, no answer.
    let r = ask(
        &mut f,
        P1,
        1,
        "10.0.1.10",
        "10.0.0.2",
        "ip-10-0-2-30.ec2.internal",
        28,
    )
    .expect("reply");
    assert_eq!((rcode(&r), r.ancount), (0, 0));
}

#[test]
fn dns_nxdomain_refused_and_disabled() {
    let mut f = setup();
    for name in [
        "ip-10-1-0-5.ec2.internal",   // outside the VPC CIDR
        "web.ec2.internal",           // not an ip- name
        "ip-10-0-1-010.ec2.internal", // not canonical
        "x.ip-10-0-1-10.ec2.internal",
    ] {
        let r = ask(&mut f, P1, 1, "10.0.1.10", "10.0.0.2", name, 1).expect("reply");
        assert_eq!(rcode(&r), 3, "{name}");
        assert_eq!(r.ancount, 0);
    }
    let r = ask(&mut f, P1, 1, "10.0.1.10", "10.0.0.2", "example.com", 1).expect("reply");
    assert_eq!(rcode(&r), 5, "no upstream: REFUSED");
    let r = ask(
        &mut f,
        P1,
        1,
        "10.0.1.10",
        "10.0.0.2",
        "8.8.8.8.in-addr.arpa",
        12,
    )
    .expect("reply");
    assert_eq!(rcode(&r), 5);

    // enableDnsHostnames off: the private names no longer resolve.
    f.vpc_mut("vpc-a").expect("vpc").set_dns_hostnames(false);
    let r = ask(
        &mut f,
        P1,
        1,
        "10.0.1.10",
        "10.0.0.2",
        "ip-10-0-2-30.ec2.internal",
        1,
    )
    .expect("reply");
    assert_eq!(rcode(&r), 3);
    let r = ask(
        &mut f,
        P1,
        1,
        "10.0.1.10",
        "10.0.0.2",
        "10.1.0.10.in-addr.arpa",
        12,
    )
    .expect("reply");
    assert_eq!(rcode(&r), 3);

    // enableDnsSupport off: no answer at all.
    f.vpc_mut("vpc-a").expect("vpc").set_dns_support(false);
    f.vpc_mut("vpc-a").expect("vpc").set_dns_hostnames(true);
    assert!(
        ask(
            &mut f,
            P1,
            1,
            "10.0.1.10",
            "10.0.0.2",
            "ip-10-0-2-30.ec2.internal",
            1
        )
        .is_none()
    );
    // Only UDP 53 is served; spoofed sources get nothing.
    f.vpc_mut("vpc-a").expect("vpc").set_dns_support(true);
    let query = dns_query(1, "ip-10-0-2-30.ec2.internal", 1);
    let spoofed = udp(
        mac(1),
        ROUTER_MAC,
        ip("10.0.1.20"),
        ip("10.0.0.2"),
        40000,
        53,
        &query,
    );
    assert!(f.ingress(P1, &spoofed, Instant::now()).is_empty());
}

#[test]
fn dns_malformed_questions_get_formerr_or_nothing() {
    let zone = dns::Zone {
        domain: "ec2.internal",
        vpc_cidr: net("10.0.0.0/16"),
        dns_support: true,
        dns_hostnames: true,
    };
    // Compression pointer in the question: FORMERR, with the id kept.
    let mut q = dns_query(7, "a.b", 1);
    q[12] = 0xc0;
    q[13] = 0x0c;
    let r = dns::respond(&zone, &q).expect("formerr");
    assert_eq!(&r[0..2], &[0, 7]);
    assert_eq!(u16::from_be_bytes([r[2], r[3]]) & 0x000f, 1);
    // Two questions, a truncated question, an over-long name: FORMERR.
    let mut two = dns_query(7, "a.b", 1);
    two[5] = 2;
    assert!(dns::respond(&zone, &two).is_some_and(|r| r[3] & 0x0f == 1));
    let q = dns_query(7, "ip-10-0-0-5.ec2.internal", 1);
    assert!(dns::respond(&zone, &q[..q.len() - 3]).is_some_and(|r| r[3] & 0x0f == 1));
    let long = vec!["a".repeat(60); 5].join(".");
    assert!(dns::respond(&zone, &dns_query(7, &long, 1)).is_some_and(|r| r[3] & 0x0f == 1));
    // Responses and runts: nothing.
    let mut resp = dns_query(7, "a.b", 1);
    resp[2] |= 0x80;
    assert!(dns::respond(&zone, &resp).is_none());
    assert!(dns::respond(&zone, &[0; 5]).is_none());
    // Non-QUERY opcodes: NOTIMP.
    let mut notify = dns_query(7, "ip-10-0-0-5.ec2.internal", 1);
    notify[2] |= 4 << 3;
    assert!(dns::respond(&zone, &notify).is_some_and(|r| r[3] & 0x0f == 4));
}

// ---------------------------------------------------------------- switching and routing

#[test]
fn l2_delivery_within_a_subnet_is_unchanged() {
    let mut f = setup();
    open_all_ingress(&mut f, "sg-b");
    let frame = tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 5000, 22, Tcp::Syn);
    let out = f.ingress(P1, &frame, Instant::now());
    assert_eq!(out, vec![(P2, frame)]);
}

#[test]
fn routing_between_subnets_rewrites_macs_and_ttl() {
    let mut f = setup();
    open_all_ingress(&mut f, "sg-b");
    let frame = tcp_from(1, ROUTER_MAC, "10.0.1.10", "10.0.2.30", 5000, 22, Tcp::Syn);
    let out = f.ingress(P1, &frame, Instant::now());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, P3);
    let seen = read_ipv4(&out[0].1);
    assert_eq!(seen.src_mac, ROUTER_MAC);
    assert_eq!(seen.dst_mac, mac(3));
    assert_eq!(seen.ip.hop_limit, 63);
    assert_eq!(seen.ip.src_addr, ip("10.0.1.10"));
    assert_eq!(seen.ip.dst_addr, ip("10.0.2.30"));
    // The TCP segment itself is untouched.
    let tcp = TcpPacket::new_checked(&seen.payload[..]).expect("tcp");
    assert!(tcp.verify_checksum(
        &IpAddress::Ipv4(ip("10.0.1.10")),
        &IpAddress::Ipv4(ip("10.0.2.30"))
    ));

    // Same-subnet traffic may also go through the router.
    let frame = tcp_from(1, ROUTER_MAC, "10.0.1.10", "10.0.1.20", 5001, 22, Tcp::Syn);
    assert_eq!(f.ingress(P1, &frame, Instant::now()).len(), 1);

    // TTL 1 cannot be routed.
    let mut frame = tcp_from(1, ROUTER_MAC, "10.0.1.10", "10.0.2.30", 5002, 22, Tcp::Syn);
    {
        let mut packet = Ipv4Packet::new_unchecked(&mut frame[14..]);
        packet.set_hop_limit(1);
        packet.fill_checksum();
    }
    assert!(f.ingress(P1, &frame, Instant::now()).is_empty());
}

#[test]
fn frames_that_must_not_be_switched_are_dropped() {
    let mut f = setup();
    open_all_ingress(&mut f, "sg-b");
    let now = Instant::now();
    // L2 to an ENI of another subnet (no shared segment).
    assert!(
        f.ingress(
            P1,
            &tcp_from(1, mac(3), "10.0.1.10", "10.0.2.30", 5000, 22, Tcp::Syn),
            now
        )
        .is_empty()
    );
    // L2 to P2's MAC but another address.
    assert!(
        f.ingress(
            P1,
            &tcp_from(1, mac(2), "10.0.1.10", "10.0.1.77", 5000, 22, Tcp::Syn),
            now
        )
        .is_empty()
    );
    // Unknown MAC, broadcast, unknown routed destination, outside the VPC.
    assert!(
        f.ingress(
            P1,
            &tcp_from(1, mac(77), "10.0.1.10", "10.0.1.20", 5000, 22, Tcp::Syn),
            now
        )
        .is_empty()
    );
    assert!(
        f.ingress(
            P1,
            &tcp_from(1, [0xff; 6], "10.0.1.10", "10.0.1.20", 5000, 22, Tcp::Syn),
            now
        )
        .is_empty()
    );
    assert!(
        f.ingress(
            P1,
            &tcp_from(1, ROUTER_MAC, "10.0.1.10", "10.0.3.3", 5000, 22, Tcp::Syn),
            now
        )
        .is_empty()
    );
    assert!(
        f.ingress(
            P1,
            &tcp_from(1, ROUTER_MAC, "10.0.1.10", "8.8.8.8", 5000, 53, Tcp::Syn),
            now
        )
        .is_empty()
    );
    // Spoofed source IP or MAC.
    assert!(
        f.ingress(
            P1,
            &tcp_from(1, mac(2), "10.0.1.11", "10.0.1.20", 5000, 22, Tcp::Syn),
            now
        )
        .is_empty()
    );
    assert!(
        f.ingress(
            P1,
            &tcp_from(3, ROUTER_MAC, "10.0.2.30", "10.0.1.20", 5000, 22, Tcp::Syn),
            now
        )
        .is_empty()
    );
    // To itself.
    assert!(
        f.ingress(
            P1,
            &tcp_from(1, ROUTER_MAC, "10.0.1.10", "10.0.1.10", 5000, 22, Tcp::Syn),
            now
        )
        .is_empty()
    );
    // Unknown port.
    assert!(
        f.ingress(
            PortId(42),
            &tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 5000, 22, Tcp::Syn),
            now
        )
        .is_empty()
    );
}

#[test]
fn nothing_crosses_vpcs() {
    let mut f = setup();
    open_all_ingress(&mut f, "sg-a");
    open_all_ingress(&mut f, "sg-b");
    let now = Instant::now();
    // P9 (vpc-b, same CIDR) addresses P2 through the router and directly: nothing arrives.
    let routed = tcp_from(9, ROUTER_MAC, "10.0.1.99", "10.0.1.20", 5000, 22, Tcp::Syn);
    assert!(f.ingress(P9, &routed, now).is_empty());
    let direct = tcp_from(9, mac(2), "10.0.1.99", "10.0.1.20", 5000, 22, Tcp::Syn);
    assert!(f.ingress(P9, &direct, now).is_empty());
    // And the other way.
    let back = tcp_from(1, ROUTER_MAC, "10.0.1.10", "10.0.1.99", 5000, 22, Tcp::Syn);
    assert!(f.ingress(P1, &back, now).is_empty());
    // A port with P9's identity in vpc-a would still only reach vpc-a.
    f.add_port(
        "vpc-b",
        PortId(10),
        port(10, "10.0.1.20", "10.0.1.0/24", &["sg-z"]),
    )
    .expect("same address in another VPC is fine");
    let out = f.ingress(
        P9,
        &tcp_from(9, ROUTER_MAC, "10.0.1.99", "10.0.1.20", 5000, 22, Tcp::Syn),
        now,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, PortId(10));
    assert_eq!(f.vpc_of(out[0].0), Some("vpc-b"));
}

#[test]
fn port_management_validates_and_removal_stops_delivery() {
    let mut f = setup();
    let vpc = "vpc-a";
    assert_eq!(
        f.add_port(vpc, P1, port(11, "10.0.1.11", "10.0.1.0/24", &[])),
        Err(FabricError::DuplicatePort(P1))
    );
    assert_eq!(
        f.add_port(vpc, PortId(11), port(1, "10.0.1.11", "10.0.1.0/24", &[])),
        Err(FabricError::DuplicateMac(mac(1)))
    );
    assert_eq!(
        f.add_port(vpc, PortId(11), port(11, "10.0.1.10", "10.0.1.0/24", &[])),
        Err(FabricError::DuplicateIp(ip("10.0.1.10")))
    );
    for (addr, subnet) in [
        ("10.0.2.5", "10.0.1.0/24"),
        ("10.0.1.1", "10.0.1.0/24"),
        ("10.0.1.255", "10.0.1.0/24"),
    ] {
        assert!(matches!(
            f.add_port(vpc, PortId(11), port(11, addr, subnet, &[])),
            Err(FabricError::IpOutsideSubnet { .. })
        ));
    }
    assert!(matches!(
        f.add_port(vpc, PortId(11), port(11, "10.1.0.5", "10.1.0.0/24", &[])),
        Err(FabricError::SubnetOutsideVpc { .. })
    ));
    let mut multicast = port(11, "10.0.1.11", "10.0.1.0/24", &[]);
    multicast.mac = [0x01, 0, 0x5e, 0, 0, 1];
    assert_eq!(
        f.add_port(vpc, PortId(11), multicast),
        Err(FabricError::InvalidMac([0x01, 0, 0x5e, 0, 0, 1]))
    );
    assert_eq!(
        f.add_port(
            "vpc-x",
            PortId(11),
            port(11, "10.0.1.11", "10.0.1.0/24", &[])
        ),
        Err(FabricError::UnknownVpc("vpc-x".into()))
    );
    let mut bad = VpcConfig::new(net("10.9.0.0/16"), "us-east-1");
    bad.domain_name = "bad domain".into();
    assert!(matches!(
        f.add_vpc("vpc-bad", bad),
        Err(FabricError::InvalidDomainName(_))
    ));

    open_all_ingress(&mut f, "sg-b");
    let frame = tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 5000, 22, Tcp::Syn);
    assert_eq!(f.ingress(P1, &frame, Instant::now()).len(), 1);
    assert!(f.remove_port(P2).is_some());
    assert!(f.ingress(P1, &frame, Instant::now()).is_empty());
    assert_eq!(arp_answer(&mut f, P1, 1, "10.0.1.10", "10.0.1.20"), None);
    assert_eq!(f.vpc_of(P2), None);
    assert!(f.remove_vpc("vpc-b").is_some());
    assert_eq!(f.vpc_of(P9), None);
}

// ---------------------------------------------------------------- security groups

fn delivered(f: &mut Fabric, from: PortId, frame: &[u8], now: Instant) -> bool {
    let out = f.ingress(from, frame, now);
    !out.is_empty()
}

#[test]
fn sg_ingress_rule_add_allow_reply_revoke() {
    let mut f = setup();
    let now = Instant::now();
    let syn = |sport| tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", sport, 22, Tcp::Syn);
    let synack = |dport| tcp_from(2, mac(1), "10.0.1.20", "10.0.1.10", 22, dport, Tcp::SynAck);
    let ack = |sport| tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", sport, 22, Tcp::Ack);

    // Closed: no ingress rule on sg-b.
    assert!(!delivered(&mut f, P1, &syn(40000), now));
    // P2 cannot answer what never arrived, and sg-a (no ingress rules) stops it.
    assert!(!delivered(&mut f, P2, &synack(40000), now));

    // Open 22 from the VPC.
    let rules = vec![
        SgRule::allow_all_egress(),
        SgRule::tcp_ingress(22, 22, net("10.0.0.0/16")),
    ];
    f.vpc_mut("vpc-a")
        .expect("vpc")
        .set_group_rules("sg-b", rules);
    assert!(delivered(&mut f, P1, &syn(40001), now));
    // The reply passes although sg-a allows no ingress: it is tracked.
    assert!(delivered(&mut f, P2, &synack(40001), now));
    assert!(delivered(&mut f, P1, &ack(40001), now));
    // Other ports stay closed.
    assert!(!delivered(
        &mut f,
        P1,
        &tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 40002, 23, Tcp::Syn),
        now
    ));

    // Revoke: the established connection carries on, a new one is dropped.
    f.vpc_mut("vpc-a")
        .expect("vpc")
        .set_group_rules("sg-b", vec![SgRule::allow_all_egress()]);
    assert!(delivered(&mut f, P1, &ack(40001), now));
    assert!(delivered(&mut f, P2, &synack(40001), now));
    assert!(!delivered(&mut f, P1, &syn(40003), now));
    // Reusing the old 5-tuple after it closed does not sneak past the rules either.
    assert!(delivered(
        &mut f,
        P1,
        &tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 40001, 22, Tcp::Fin),
        now
    ));
    assert!(!delivered(&mut f, P1, &syn(40001), now));
}

#[test]
fn sg_egress_rule_removal_blocks_new_outbound_but_not_replies() {
    let mut f = setup();
    let now = Instant::now();
    open_all_ingress(&mut f, "sg-b");
    // sg-a: inbound 80 open, no egress rule at all.
    f.vpc_mut("vpc-a")
        .expect("vpc")
        .set_group_rules("sg-a", vec![SgRule::tcp_ingress(80, 80, net("0.0.0.0/0"))]);
    assert!(!delivered(
        &mut f,
        P1,
        &tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 40000, 22, Tcp::Syn),
        now
    ));
    // An inbound connection to P1 is answered even without egress rules.
    assert!(delivered(
        &mut f,
        P2,
        &tcp_from(2, mac(1), "10.0.1.20", "10.0.1.10", 50000, 80, Tcp::Syn),
        now
    ));
    assert!(delivered(
        &mut f,
        P1,
        &tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 80, 50000, Tcp::SynAck),
        now
    ));
    // UDP and ICMP out are blocked too.
    let dgram = udp(
        mac(1),
        mac(2),
        ip("10.0.1.10"),
        ip("10.0.1.20"),
        1234,
        5678,
        b"x",
    );
    assert!(!delivered(&mut f, P1, &dgram, now));
    // An egress rule limited to UDP 5678 towards sg-b members.
    let egress = SgRule {
        egress: true,
        protocol: SgProtocol::Udp,
        from_port: 5678,
        to_port: 5678,
        peer: SgPeer::Group("sg-b".into()),
    };
    f.vpc_mut("vpc-a")
        .expect("vpc")
        .set_group_rules("sg-a", vec![egress]);
    assert!(delivered(&mut f, P1, &dgram, now));
    let other = udp(
        mac(1),
        mac(2),
        ip("10.0.1.10"),
        ip("10.0.1.20"),
        1234,
        5679,
        b"x",
    );
    assert!(!delivered(&mut f, P1, &other, now));
    // The UDP reply comes back on the tracked flow.
    let reply = udp(
        mac(2),
        mac(1),
        ip("10.0.1.20"),
        ip("10.0.1.10"),
        5678,
        1234,
        b"y",
    );
    assert!(delivered(&mut f, P2, &reply, now));
}

#[test]
fn sg_same_group_reference() {
    let mut f = setup();
    let now = Instant::now();
    // The default group's shape: all egress, all ingress from its own members.
    f.vpc_mut("vpc-a").expect("vpc").set_group_rules(
        "sg-b",
        vec![
            SgRule::allow_all_egress(),
            SgRule::allow_all_ingress_from_group("sg-b"),
        ],
    );
    // P2 and P3 are both in sg-b (across subnets, via the router).
    assert!(delivered(
        &mut f,
        P2,
        &tcp_from(
            2,
            ROUTER_MAC,
            "10.0.1.20",
            "10.0.2.30",
            40000,
            8080,
            Tcp::Syn
        ),
        now
    ));
    assert!(delivered(
        &mut f,
        P3,
        &icmp_echo(
            mac(3),
            ROUTER_MAC,
            ip("10.0.2.30"),
            ip("10.0.1.20"),
            9,
            true
        ),
        now
    ));
    // P1 (sg-a) is not a member.
    assert!(!delivered(
        &mut f,
        P1,
        &tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 40000, 8080, Tcp::Syn),
        now
    ));
    // Membership changes apply to new flows at once.
    f.vpc_mut("vpc-a")
        .expect("vpc")
        .set_port_groups(P1, vec!["sg-a".into(), "sg-b".into()])
        .expect("groups");
    assert!(delivered(
        &mut f,
        P1,
        &tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 40001, 8080, Tcp::Syn),
        now
    ));
    assert_eq!(
        f.vpc_mut("vpc-a")
            .expect("vpc")
            .set_port_groups(PortId(77), vec![]),
        Err(FabricError::UnknownPort(PortId(77)))
    );
}

#[test]
fn sg_icmp_type_rules_and_echo_tracking() {
    let mut f = setup();
    let now = Instant::now();
    let echo_only = SgRule {
        egress: false,
        protocol: SgProtocol::Icmp,
        from_port: 8, // echo request
        to_port: -1,
        peer: SgPeer::Cidr4(net("10.0.1.0/24")),
    };
    f.vpc_mut("vpc-a")
        .expect("vpc")
        .set_group_rules("sg-b", vec![SgRule::allow_all_egress(), echo_only]);
    let ping = icmp_echo(mac(1), mac(2), ip("10.0.1.10"), ip("10.0.1.20"), 77, true);
    let pong = icmp_echo(mac(2), mac(1), ip("10.0.1.20"), ip("10.0.1.10"), 77, false);
    assert!(delivered(&mut f, P1, &ping, now));
    assert!(
        delivered(&mut f, P2, &pong, now),
        "echo reply on the tracked request"
    );
    // An unsolicited echo reply (other identifier) is not tracked and sg-a has no ingress.
    let stray = icmp_echo(mac(2), mac(1), ip("10.0.1.20"), ip("10.0.1.10"), 78, false);
    assert!(!delivered(&mut f, P2, &stray, now));
    // The CIDR bounds the rule: P3 (10.0.2.0/24) cannot ping P2.
    let far = icmp_echo(
        mac(3),
        ROUTER_MAC,
        ip("10.0.2.30"),
        ip("10.0.1.20"),
        5,
        true,
    );
    assert!(!delivered(&mut f, P3, &far, now));
}

#[test]
fn sg_other_protocols_and_port_ranges() {
    let mut f = setup();
    let now = Instant::now();
    let rules = vec![
        SgRule::allow_all_egress(),
        SgRule::tcp_ingress(8000, 8100, net("10.0.1.10/32")),
        SgRule {
            egress: false,
            protocol: SgProtocol::Other(47), // GRE
            from_port: -1,
            to_port: -1,
            peer: SgPeer::Cidr4(net("0.0.0.0/0")),
        },
    ];
    f.vpc_mut("vpc-a")
        .expect("vpc")
        .set_group_rules("sg-b", rules);
    for (dport, ok) in [
        (7999, false),
        (8000, true),
        (8050, true),
        (8100, true),
        (8101, false),
    ] {
        let syn = tcp_from(
            1,
            mac(2),
            "10.0.1.10",
            "10.0.1.20",
            30000 + dport,
            dport,
            Tcp::Syn,
        );
        assert_eq!(delivered(&mut f, P1, &syn, now), ok, "port {dport}");
    }
    let gre = ipv4_frame(
        mac(1),
        mac(2),
        ip("10.0.1.10"),
        ip("10.0.1.20"),
        IpProtocol::Unknown(47),
        64,
        4,
        |b| b.copy_from_slice(&[0, 0, 0x08, 0]),
    );
    assert!(delivered(&mut f, P1, &gre, now));
    let esp = ipv4_frame(
        mac(1),
        mac(2),
        ip("10.0.1.10"),
        ip("10.0.1.20"),
        IpProtocol::Unknown(50),
        64,
        4,
        |_| {},
    );
    assert!(!delivered(&mut f, P1, &esp, now));
}

#[test]
fn conntrack_times_out_and_is_bounded() {
    let mut f = setup();
    let t0 = Instant::now();
    f.vpc_mut("vpc-a").expect("vpc").set_group_rules(
        "sg-b",
        vec![
            SgRule::allow_all_egress(),
            SgRule::tcp_ingress(22, 22, net("0.0.0.0/0")),
        ],
    );
    let syn = tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 40000, 22, Tcp::Syn);
    let synack = tcp_from(2, mac(1), "10.0.1.20", "10.0.1.10", 22, 40000, Tcp::SynAck);
    assert!(delivered(&mut f, P1, &syn, t0));
    assert!(delivered(&mut f, P2, &synack, t0));
    // Still alive after 349 s idle (the test's 350 s established timeout)...
    let t1 = t0 + Duration::from_secs(349);
    assert!(delivered(&mut f, P2, &synack, t1));
    // ...but not 350 s after the last packet: sg-a has no ingress rule to fall back on.
    let t2 = t1 + Duration::from_secs(350);
    assert!(!delivered(&mut f, P2, &synack, t2));
    assert!(f.vpc("vpc-a").expect("vpc").tracked_flows(P1) > 0);
    f.expire(t2);
    assert_eq!(f.vpc("vpc-a").expect("vpc").tracked_flows(P1), 0);

    // A table of two flows refuses a third rather than evicting.
    let vpc = f.vpc_mut("vpc-a").expect("vpc");
    vpc.set_conntrack_config(ConntrackConfig {
        max_flows: 2,
        ..test_conntrack()
    });
    assert!(delivered(
        &mut f,
        P1,
        &tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 1, 22, Tcp::Syn),
        t2
    ));
    assert!(delivered(
        &mut f,
        P1,
        &tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 2, 22, Tcp::Syn),
        t2
    ));
    assert!(!delivered(
        &mut f,
        P1,
        &tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 3, 22, Tcp::Syn),
        t2
    ));
    // Opening connections expire on the shorter transitory timeout, which frees room.
    let t3 = t2 + Duration::from_secs(121);
    assert!(delivered(
        &mut f,
        P1,
        &tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 3, 22, Tcp::Syn),
        t3
    ));
    // A RST is allowed on a tracked flow and closes it.
    assert!(delivered(
        &mut f,
        P2,
        &tcp_from(2, mac(1), "10.0.1.20", "10.0.1.10", 22, 3, Tcp::Rst),
        t3
    ));
}

// ---------------------------------------------------------------- IMDS seam

/// What a recording service was handed: the port and the frame.
type Calls = Arc<Mutex<Vec<(PortId, Vec<u8>)>>>;

#[derive(Clone, Default)]
struct Recorder {
    seen: Calls,
}

impl LocalService for Recorder {
    fn handle(&mut self, port: PortId, frame: &[u8], _now: Instant) -> Vec<Vec<u8>> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((port, frame.to_vec()));
        }
        vec![format!("reply to {port}").into_bytes()]
    }
}

#[test]
fn imds_frames_reach_the_local_service_with_the_port_as_identity() {
    let mut f = setup();
    let recorder = Recorder::default();
    f.vpc_mut("vpc-a")
        .expect("vpc")
        .set_local_service(Box::new(recorder.clone()));
    let now = Instant::now();
    // P1 has a group with no ingress rules, P3 none at all: IMDS is not filtered.
    f.vpc_mut("vpc-a")
        .expect("vpc")
        .set_port_groups(P3, vec![])
        .expect("groups");
    let from1 = tcp_from(
        1,
        ROUTER_MAC,
        "10.0.1.10",
        "169.254.169.254",
        33000,
        80,
        Tcp::Syn,
    );
    let from3 = tcp_from(
        3,
        ROUTER_MAC,
        "10.0.2.30",
        "169.254.169.254",
        33000,
        80,
        Tcp::Syn,
    );
    assert_eq!(
        f.ingress(P1, &from1, now),
        vec![(P1, b"reply to port-1".to_vec())]
    );
    assert_eq!(
        f.ingress(P3, &from3, now),
        vec![(P3, b"reply to port-3".to_vec())]
    );
    // P1 claiming P3's address is dropped before the service, so it can never act as P3.
    let spoofed = tcp_from(
        1,
        ROUTER_MAC,
        "10.0.2.30",
        "169.254.169.254",
        33001,
        80,
        Tcp::Syn,
    );
    assert!(f.ingress(P1, &spoofed, now).is_empty());
    // Only TCP 80.
    assert!(
        f.ingress(
            P1,
            &tcp_from(
                1,
                ROUTER_MAC,
                "10.0.1.10",
                "169.254.169.254",
                33000,
                443,
                Tcp::Syn
            ),
            now
        )
        .is_empty()
    );
    let dgram = udp(
        mac(1),
        ROUTER_MAC,
        ip("10.0.1.10"),
        ip("169.254.169.254"),
        1,
        80,
        b"x",
    );
    assert!(f.ingress(P1, &dgram, now).is_empty());
    let seen = recorder.seen.lock().expect("lock").clone();
    assert_eq!(seen, vec![(P1, from1), (P3, from3)]);
    // Without a service, nothing is answered (and nothing else gets the frame).
    assert!(
        f.ingress(
            P9,
            &tcp_from(
                9,
                ROUTER_MAC,
                "10.0.1.99",
                "169.254.169.254",
                1,
                80,
                Tcp::Syn
            ),
            now
        )
        .is_empty()
    );
}

// ---------------------------------------------------------------- robustness

/// Random and mutated input to every parser and to the whole ingress path must never panic.
#[test]
fn fuzz_parsers_and_ingress_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x0ec2d);
    let zone = dns::Zone {
        domain: "ec2.internal",
        vpc_cidr: net("10.0.0.0/16"),
        dns_support: true,
        dns_hostnames: true,
    };
    let lease = dhcp::Lease {
        ip: ip("10.0.1.10"),
        subnet: net("10.0.1.0/24"),
        router: ip("10.0.1.1"),
        dns: ip("10.0.0.2"),
        domain_name: "ec2.internal",
        lease_secs: 3600,
        mtu: 9001,
    };
    let mut f = setup();
    open_all_ingress(&mut f, "sg-b");
    f.vpc_mut("vpc-a")
        .expect("vpc")
        .set_local_service(Box::new(Recorder::default()));
    let now = Instant::now();

    let seeds: Vec<Vec<u8>> = vec![
        arp_request(mac(1), ip("10.0.1.10"), ip("10.0.1.1")),
        tcp_from(1, mac(2), "10.0.1.10", "10.0.1.20", 1, 22, Tcp::Syn),
        tcp_from(1, ROUTER_MAC, "10.0.1.10", "10.0.2.30", 1, 22, Tcp::Syn),
        tcp_from(
            1,
            ROUTER_MAC,
            "10.0.1.10",
            "169.254.169.254",
            1,
            80,
            Tcp::Syn,
        ),
        icmp_echo(mac(1), mac(2), ip("10.0.1.10"), ip("10.0.1.20"), 1, true),
        udp(
            mac(1),
            ROUTER_MAC,
            ip("10.0.1.10"),
            ip("10.0.0.2"),
            1,
            53,
            &dns_query(1, "ip-10-0-0-1.ec2.internal", 1),
        ),
        dhcp_frame(
            1,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            &dhcp_message(
                DhcpMessageType::Discover,
                mac(1),
                Ipv4Addr::UNSPECIFIED,
                None,
                None,
            ),
        ),
    ];
    for round in 0..20_000 {
        // Pure noise of any length.
        let len = rng.gen_range(0..600);
        let noise: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        let _ = frame::parse_ipv4(&noise);
        let _ = frame::parse_arp_request(&noise);
        let _ = frame::udp_payload(&noise);
        let _ = dns::parse_query(&noise);
        let _ = dns::respond(&zone, &noise);
        let _ = dhcp::handle(&lease, &noise);
        let _ = f.ingress(P1, &noise, now);

        // A valid frame with a few bytes flipped and maybe truncated, from the right MAC so it
        // gets past the first check.
        let mut frame = seeds[round % seeds.len()].clone();
        for _ in 0..rng.gen_range(1..8) {
            let at = rng.gen_range(12..frame.len());
            frame[at] = rng.r#gen();
        }
        if rng.gen_bool(0.3) {
            frame.truncate(rng.gen_range(0..frame.len()));
        }
        let _ = f.ingress(P1, &frame, now);
        // The mutated tails as bare protocol messages too.
        if let Some(tail) = frame.get(42..) {
            let _ = dns::respond(&zone, tail);
            let _ = dhcp::handle(&lease, tail);
        }
    }
    // Adversarial DNS names: deep labels, max-length names, pointers, length bytes past the end.
    let mut q = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend(std::iter::repeat_n(1u8, 300));
    let _ = dns::respond(&zone, &q);
    let mut q = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63];
    q.extend_from_slice(&[b'a'; 10]);
    let _ = dns::respond(&zone, &q);
}
