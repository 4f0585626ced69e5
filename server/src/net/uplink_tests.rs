//! The VPC uplink at frame level: what the router sends out of the VPC, what it lets in from the
//! host side, and the security-group checks on both.

use std::net::Ipv4Addr;
use std::time::Instant;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use super::sim::{ip, mac, net};
use super::*;

const P1: PortId = PortId(1); // vpc-a 10.0.1.10, sg-a
const P2: PortId = PortId(2); // vpc-a 10.0.2.20, sg-b
const P9: PortId = PortId(9); // vpc-b 10.1.1.10, sg-z

#[derive(Clone, Copy)]
enum Kind {
    Syn,
    SynAck,
    Ack,
}

#[allow(clippy::too_many_arguments)]
fn tcp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: &str,
    dst: &str,
    sport: u16,
    dport: u16,
    kind: Kind,
    ttl: u8,
) -> Vec<u8> {
    let (src, dst) = (ip(src), ip(dst));
    let (control, ack) = match kind {
        Kind::Syn => (TcpControl::Syn, None),
        Kind::SynAck => (TcpControl::Syn, Some(TcpSeqNumber(2))),
        Kind::Ack => (TcpControl::None, Some(TcpSeqNumber(2))),
    };
    let repr = TcpRepr {
        src_port: sport,
        dst_port: dport,
        control,
        seq_number: TcpSeqNumber(1),
        ack_number: ack,
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let ipr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: repr.buffer_len(),
        hop_limit: ttl,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Ipv4,
    };
    let caps = ChecksumCapabilities::default();
    let mut buf = vec![0u8; eth.buffer_len() + ipr.buffer_len() + repr.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ipr.emit(&mut packet, &caps);
    repr.emit(
        &mut TcpPacket::new_unchecked(packet.payload_mut()),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        &caps,
    );
    buf
}

/// From the host (as the gateway frames it: its own MAC to the router).
fn from_host(dst: &str, sport: u16, dport: u16, kind: Kind) -> Vec<u8> {
    tcp(
        UPLINK_MAC,
        ROUTER_MAC,
        "198.18.0.1",
        dst,
        sport,
        dport,
        kind,
        64,
    )
}

fn setup() -> Fabric {
    let mut f = Fabric::new();
    f.add_vpc("vpc-a", VpcConfig::new(net("10.0.0.0/16"), "us-east-1"))
        .expect("vpc-a");
    f.add_vpc("vpc-b", VpcConfig::new(net("10.1.0.0/16"), "us-east-1"))
        .expect("vpc-b");
    let port = |n: u8, addr: &str, subnet: &str, group: &str| PortConfig {
        mac: mac(n),
        ip: ip(addr),
        subnet: net(subnet),
        security_groups: vec![group.to_string()],
    };
    f.add_port("vpc-a", P1, port(1, "10.0.1.10", "10.0.1.0/24", "sg-a"))
        .expect("p1");
    f.add_port("vpc-a", P2, port(2, "10.0.2.20", "10.0.2.0/24", "sg-b"))
        .expect("p2");
    f.add_port("vpc-b", P9, port(9, "10.1.1.10", "10.1.1.0/24", "sg-z"))
        .expect("p9");
    f.vpc_mut("vpc-b").expect("vpc-b").set_uplink(true);
    let a = f.vpc_mut("vpc-a").expect("vpc-a");
    a.set_uplink(true);
    a.set_group_rules("sg-a", vec![SgRule::allow_all_egress()]);
    a.set_group_rules("sg-b", vec![SgRule::allow_all_egress()]);
    f.vpc_mut("vpc-b").expect("vpc-b").set_group_rules(
        "sg-z",
        vec![
            SgRule::allow_all_egress(),
            SgRule::tcp_ingress(0, 65535, net("0.0.0.0/0")),
        ],
    );
    f
}

fn read(frame: &[u8]) -> (MacAddr, MacAddr, Ipv4Addr, Ipv4Addr, u8) {
    let eth = EthernetFrame::new_checked(frame).expect("eth");
    let packet = Ipv4Packet::new_checked(eth.payload()).expect("ipv4");
    assert!(packet.verify_checksum());
    (
        eth.src_addr().0,
        eth.dst_addr().0,
        packet.src_addr(),
        packet.dst_addr(),
        packet.hop_limit(),
    )
}

#[test]
fn traffic_for_outside_the_vpc_goes_to_the_uplink() {
    let mut f = setup();
    let now = Instant::now();
    let out = f.ingress(
        P1,
        &tcp(
            mac(1),
            ROUTER_MAC,
            "10.0.1.10",
            "198.18.0.1",
            40000,
            22,
            Kind::Syn,
            64,
        ),
        now,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, UPLINK);
    assert_eq!(f.vpc_of(P1), Some("vpc-a"));
    let (src_mac, dst_mac, src, dst, ttl) = read(&out[0].1);
    assert_eq!((src_mac, dst_mac), (ROUTER_MAC, UPLINK_MAC));
    assert_eq!((src, dst, ttl), (ip("10.0.1.10"), ip("198.18.0.1"), 63));
    // Any other outside unicast address too (the gateway decides what to do with it), even the
    // address of an ENI in another VPC.
    for dst in ["203.0.113.5", "10.1.1.10"] {
        let out = f.ingress(
            P1,
            &tcp(
                mac(1),
                ROUTER_MAC,
                "10.0.1.10",
                dst,
                40001,
                80,
                Kind::Syn,
                64,
            ),
            now,
        );
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![UPLINK]);
    }
    // Never forwarded: link-local, multicast, broadcast, "this network", reserved, unknown
    // addresses inside the VPC, frames not sent to the router, and TTL-expired packets.
    for dst in [
        "169.254.1.1",
        "224.0.0.5",
        "255.255.255.255",
        "0.1.2.3",
        "240.0.0.1",
        "10.0.9.9",
    ] {
        let frame = tcp(
            mac(1),
            ROUTER_MAC,
            "10.0.1.10",
            dst,
            40002,
            80,
            Kind::Syn,
            64,
        );
        assert!(f.ingress(P1, &frame, now).is_empty(), "{dst}");
    }
    let l2 = tcp(
        mac(1),
        mac(7),
        "10.0.1.10",
        "203.0.113.5",
        40003,
        80,
        Kind::Syn,
        64,
    );
    assert!(f.ingress(P1, &l2, now).is_empty());
    let expiring = tcp(
        mac(1),
        ROUTER_MAC,
        "10.0.1.10",
        "203.0.113.5",
        40004,
        80,
        Kind::Syn,
        1,
    );
    assert!(f.ingress(P1, &expiring, now).is_empty());
}

#[test]
fn egress_rules_apply_on_the_way_out() {
    let mut f = setup();
    let now = Instant::now();
    let vpc = f.vpc_mut("vpc-a").expect("vpc");
    vpc.set_group_rules(
        "sg-a",
        vec![SgRule {
            egress: true,
            protocol: SgProtocol::Tcp,
            from_port: 443,
            to_port: 443,
            peer: SgPeer::Cidr4(net("198.18.0.0/15")),
        }],
    );
    // Each probe from its own source port, so none of them rides on a tracked flow.
    let to = |sport, dport, dst: &str| {
        tcp(
            mac(1),
            ROUTER_MAC,
            "10.0.1.10",
            dst,
            sport,
            dport,
            Kind::Syn,
            64,
        )
    };
    assert_eq!(f.ingress(P1, &to(40000, 443, "198.18.0.1"), now).len(), 1);
    assert!(f.ingress(P1, &to(40001, 80, "198.18.0.1"), now).is_empty());
    assert!(
        f.ingress(P1, &to(40002, 443, "203.0.113.5"), now)
            .is_empty()
    );
    // A group rule cannot match a destination outside the VPC.
    f.vpc_mut("vpc-a").expect("vpc").set_group_rules(
        "sg-a",
        vec![SgRule {
            egress: true,
            protocol: SgProtocol::All,
            from_port: -1,
            to_port: -1,
            peer: SgPeer::Group("sg-a".into()),
        }],
    );
    assert!(f.ingress(P1, &to(40003, 443, "198.18.0.1"), now).is_empty());
    // The flow allowed before the change is tracked and carries on.
    assert_eq!(f.ingress(P1, &to(40000, 443, "198.18.0.1"), now).len(), 1);
}

#[test]
fn host_traffic_in_is_judged_by_the_receivers_ingress_rules() {
    let mut f = setup();
    let now = Instant::now();
    let syn = |sport| from_host("10.0.1.10", sport, 22, Kind::Syn);
    // No ingress rule: nothing.
    assert!(f.uplink_ingress("vpc-a", &syn(50000), now).is_empty());
    // A group rule, even for the group itself, never matches the host.
    f.vpc_mut("vpc-a").expect("vpc").set_group_rules(
        "sg-a",
        vec![
            SgRule::allow_all_egress(),
            SgRule::allow_all_ingress_from_group("sg-a"),
        ],
    );
    assert!(f.uplink_ingress("vpc-a", &syn(50000), now).is_empty());

    // tcp 22 from the host's /32: delivered to the ENI, rewritten by the router.
    f.vpc_mut("vpc-a").expect("vpc").set_group_rules(
        "sg-a",
        vec![SgRule::tcp_ingress(22, 22, net("198.18.0.1/32"))],
    );
    let out = f.uplink_ingress("vpc-a", &syn(50001), now);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, P1);
    let (src_mac, dst_mac, src, dst, ttl) = read(&out[0].1);
    assert_eq!((src_mac, dst_mac), (ROUTER_MAC, mac(1)));
    assert_eq!((src, dst, ttl), (ip("198.18.0.1"), ip("10.0.1.10"), 63));
    // The reply leaves although sg-a now has no egress rule at all: it is tracked.
    let reply = tcp(
        mac(1),
        ROUTER_MAC,
        "10.0.1.10",
        "198.18.0.1",
        22,
        50001,
        Kind::SynAck,
        64,
    );
    let out = f.ingress(P1, &reply, now);
    assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![UPLINK]);
    assert_eq!(
        f.uplink_ingress("vpc-a", &from_host("10.0.1.10", 50001, 22, Kind::Ack), now)
            .len(),
        1
    );
    // Other ports stay closed.
    assert!(
        f.uplink_ingress("vpc-a", &from_host("10.0.1.10", 50002, 23, Kind::Syn), now)
            .is_empty()
    );

    // Revoked: the tracked connection carries on, a new one is refused.
    f.vpc_mut("vpc-a")
        .expect("vpc")
        .set_group_rules("sg-a", vec![]);
    assert_eq!(
        f.uplink_ingress("vpc-a", &from_host("10.0.1.10", 50001, 22, Kind::Ack), now)
            .len(),
        1
    );
    assert_eq!(f.ingress(P1, &reply, now).len(), 1);
    assert!(f.uplink_ingress("vpc-a", &syn(50003), now).is_empty());
    // Without a rule, an unsolicited packet out to the host is dropped too.
    let unsolicited = tcp(
        mac(1),
        ROUTER_MAC,
        "10.0.1.10",
        "198.18.0.1",
        22,
        50009,
        Kind::SynAck,
        64,
    );
    assert!(f.ingress(P1, &unsolicited, now).is_empty());
}

#[test]
fn uplink_cannot_pose_as_the_vpc_or_reach_other_vpcs() {
    let mut f = setup();
    let now = Instant::now();
    f.vpc_mut("vpc-a").expect("vpc").set_group_rules(
        "sg-a",
        vec![SgRule::tcp_ingress(0, 65535, net("0.0.0.0/0"))],
    );
    // Sources inside the VPC (an ENI, the DNS server, the gateway) and special sources.
    for src in [
        "10.0.2.20",
        "10.0.0.2",
        "10.0.1.1",
        "169.254.169.254",
        "127.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
    ] {
        let frame = tcp(
            UPLINK_MAC,
            ROUTER_MAC,
            src,
            "10.0.1.10",
            50000,
            22,
            Kind::Syn,
            64,
        );
        assert!(f.uplink_ingress("vpc-a", &frame, now).is_empty(), "{src}");
    }
    // Not a port of this VPC: P9 is in vpc-b, which admits everything.
    assert!(
        f.uplink_ingress("vpc-a", &from_host("10.1.1.10", 50000, 22, Kind::Syn), now)
            .is_empty()
    );
    assert_eq!(
        f.uplink_ingress("vpc-b", &from_host("10.1.1.10", 50000, 22, Kind::Syn), now)
            .len(),
        1
    );
    assert!(
        f.uplink_ingress("vpc-b", &from_host("10.0.1.10", 50000, 22, Kind::Syn), now)
            .is_empty()
    );
    assert!(
        f.uplink_ingress("vpc-x", &from_host("10.0.1.10", 50000, 22, Kind::Syn), now)
            .is_empty()
    );
    // Garbage is dropped.
    assert!(f.uplink_ingress("vpc-a", &[0u8; 30], now).is_empty());
    assert!(f.uplink_ingress("vpc-a", &[], now).is_empty());
}

#[test]
fn nothing_leaves_or_enters_without_an_attached_uplink() {
    let mut f = setup();
    let now = Instant::now();
    let vpc = f.vpc_mut("vpc-a").expect("vpc");
    vpc.set_group_rules(
        "sg-a",
        vec![
            SgRule::allow_all_egress(),
            SgRule::tcp_ingress(22, 22, net("0.0.0.0/0")),
        ],
    );
    vpc.set_uplink(false);
    let out = tcp(
        mac(1),
        ROUTER_MAC,
        "10.0.1.10",
        "198.18.0.1",
        40000,
        22,
        Kind::Syn,
        64,
    );
    assert!(f.ingress(P1, &out, now).is_empty());
    assert!(
        f.uplink_ingress("vpc-a", &from_host("10.0.1.10", 50000, 22, Kind::Syn), now)
            .is_empty()
    );
    assert_eq!(f.vpc("vpc-a").expect("vpc").tracked_flows(P1), 0);
    f.vpc_mut("vpc-a").expect("vpc").set_uplink(true);
    assert_eq!(f.ingress(P1, &out, now).len(), 1);
    assert_eq!(
        f.uplink_ingress("vpc-a", &from_host("10.0.1.10", 50000, 22, Kind::Syn), now)
            .len(),
        1
    );
}

#[test]
fn uplink_id_and_mac_are_reserved() {
    let mut f = setup();
    let config = PortConfig {
        mac: mac(20),
        ip: ip("10.0.1.50"),
        subnet: net("10.0.1.0/24"),
        security_groups: vec![],
    };
    assert_eq!(
        f.add_port("vpc-a", UPLINK, config.clone()),
        Err(FabricError::DuplicatePort(UPLINK))
    );
    let uplink_mac = PortConfig {
        mac: UPLINK_MAC,
        ..config
    };
    assert_eq!(
        f.add_port("vpc-a", PortId(20), uplink_mac),
        Err(FabricError::InvalidMac(UPLINK_MAC))
    );
}
