//! ec2d's API at [`API_ADDR`] as guests reach it: through the VPC to the gateway's listeners,
//! end to end with smoltcp guests in the sim, and at frame level in the fabric.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use smoltcp::iface::SocketHandle;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::tcp;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpCidr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket,
    TcpRepr, TcpSeqNumber,
};

use super::super::sim::{Net, ip, mac, net};
use super::*;
use crate::net::{
    Fabric, MacAddr, PortConfig, PortId, ROUTER_MAC, SgRule, UPLINK, UPLINK_MAC, VpcConfig,
};

const P1: PortId = PortId(1); // vpc-a 10.0.1.10, sg-a
const P2: PortId = PortId(2); // vpc-a 10.0.1.20, sg-b
const P9: PortId = PortId(9); // vpc-b 10.0.1.10 (the same address as P1), sg-z

fn port(n: u8, addr: &str, group: &str) -> PortConfig {
    PortConfig {
        mac: mac(n),
        ip: ip(addr),
        subnet: net("10.0.1.0/24"),
        security_groups: vec![group.to_string()],
    }
}

/// Two VPCs with the same CIDR, each with its gateway (uplink attached). Every group denies all
/// traffic both ways, except sg-b, which allows all egress.
fn setup() -> Net {
    let mut fabric = Fabric::new();
    for vpc in ["vpc-a", "vpc-b"] {
        fabric
            .add_vpc(vpc, VpcConfig::new(net("10.0.0.0/16"), "us-east-1"))
            .expect("vpc");
    }
    let a = fabric.vpc_mut("vpc-a").expect("vpc-a");
    a.set_group_rules("sg-a", vec![]);
    a.set_group_rules("sg-b", vec![SgRule::allow_all_egress()]);
    fabric
        .vpc_mut("vpc-b")
        .expect("vpc-b")
        .set_group_rules("sg-z", vec![]);
    let mut n = Net::new(fabric);
    n.add_guest("vpc-a", P1, port(1, "10.0.1.10", "sg-a"));
    n.add_guest("vpc-a", P2, port(2, "10.0.1.20", "sg-b"));
    n.add_guest("vpc-b", P9, port(9, "10.0.1.10", "sg-z"));
    n.add_gateway("vpc-a");
    n.add_gateway("vpc-b");
    n
}

/// Runs until the VPC's gateway hands out a guest connection.
fn accept_within(n: &mut Net, vpc: &str, within: Duration) -> Option<(ConnId, SocketAddrV4)> {
    let mut got = None;
    n.run_until(within, |n| {
        got = n.gateway(vpc).accept();
        got.is_some()
    });
    got
}

fn state(n: &mut Net, p: PortId, h: SocketHandle) -> tcp::State {
    n.guest(p).tcp(h).state()
}

/// Moves `to_guest` from the gateway to the guest socket and `to_api` the other way, at once.
fn transfer(
    n: &mut Net,
    vpc: &str,
    c: ConnId,
    p: PortId,
    h: SocketHandle,
    to_guest: &[u8],
    to_api: &[u8],
) {
    let (mut down_sent, mut up_sent) = (0, 0);
    let (mut down_got, mut up_got) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 3000];
    let done = n.run_until(Duration::from_secs(60), |n| {
        let gw = n.gateway(vpc);
        down_sent += gw.send(c, &to_guest[down_sent..]).expect("send");
        while let RecvState::Data(k) = gw.recv(c, &mut buf) {
            up_got.extend_from_slice(&buf[..k]);
        }
        let guest = n.guest(p);
        if up_sent < to_api.len() {
            up_sent += guest
                .tcp(h)
                .send_slice(&to_api[up_sent..])
                .expect("guest send");
        }
        down_got.extend(guest.read(h));
        down_got.len() == to_guest.len() && up_got.len() == to_api.len()
    });
    assert!(
        done,
        "transfer stalled: to guest {} to api {}",
        down_got.len(),
        up_got.len()
    );
    assert!(down_got == to_guest, "API to guest data intact");
    assert!(up_got == to_api, "guest to API data intact");
}

/// How many frames from the API's address were delivered to `p`.
fn api_frames_to(n: &Net, p: PortId) -> usize {
    n.delivered
        .iter()
        .filter(|(to, f)| {
            *to == p && super::super::sim::tcp_facts(f).is_some_and(|t| t.0 == API_ADDR)
        })
        .count()
}

#[test]
fn a_guest_with_deny_all_groups_calls_the_api_both_ways() {
    let mut n = setup();
    let h = n.guest(P1).connect(API_ADDR, API_PORT, 40000);
    let (c, peer) = accept_within(&mut n, "vpc-a", Duration::from_secs(5)).expect("accepted");
    // The peer is the guest's own (fabric-checked) address, and each connection is handed out
    // once.
    assert_eq!(peer, SocketAddrV4::new(ip("10.0.1.10"), 40000));
    assert_eq!(n.gateway("vpc-a").accept(), None);
    assert!(n.gateway("vpc-a").is_established(c));
    assert_eq!(n.gateway("vpc-a").guest_connections(), 1);
    assert!(n.run_until(Duration::from_secs(1), |n| state(n, P1, h)
        == tcp::State::Established));
    let remote = n.guest(P1).tcp(h).remote_endpoint().expect("remote");
    assert_eq!(remote.addr, IpAddress::Ipv4(API_ADDR));
    assert_eq!(remote.port, API_PORT);

    let request: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let response: Vec<u8> = (0..100_000u32).map(|i| (i % 239) as u8).collect();
    transfer(&mut n, "vpc-a", c, P1, h, &response, &request);

    // The guest closes first; the API sees the end of the stream, can still answer, and closes.
    n.guest(P1).tcp(h).close();
    let mut buf = [0u8; 16];
    assert!(n.run_until(
        Duration::from_secs(5),
        |n| n.gateway("vpc-a").recv(c, &mut buf) == RecvState::Closed
    ));
    assert_eq!(n.gateway("vpc-a").send(c, b"bye"), Ok(3));
    n.gateway("vpc-a").close(c);
    assert!(n.run_until(Duration::from_secs(5), |n| {
        let guest = n.guest(P1);
        !guest.tcp(h).is_open()
    }));
    assert_eq!(n.guest(P1).read(h), b"bye");
    // Finished and reaped; a later call sees a closed connection.
    assert!(
        n.run_until(Duration::from_secs(5), |n| n.gateway("vpc-a").connections()
            == 0)
    );
    assert!(matches!(
        n.gateway("vpc-a").send(c, b"x"),
        Err(GatewayError::Closed(_))
    ));
    assert_eq!(n.gateway("vpc-a").recv(c, &mut buf), RecvState::Closed);

    // Nothing went through security groups or conntrack, and nothing reached anyone else.
    let vpc = n.fabric.vpc("vpc-a").expect("vpc");
    assert_eq!(vpc.tracked_flows(P1), 0);
    assert_eq!(api_frames_to(&n, P2), 0);
    assert_eq!(api_frames_to(&n, P9), 0);
    assert_eq!(n.gateway("vpc-b").accept(), None);
}

#[test]
fn several_guests_and_connections_are_told_apart() {
    let mut n = setup();
    let a = n.guest(P1).connect(API_ADDR, API_PORT, 40000);
    let b = n.guest(P1).connect(API_ADDR, API_PORT, 40001);
    let c = n.guest(P2).connect(API_ADDR, API_PORT, 40000);
    let mut conns = Vec::new();
    n.run_until(Duration::from_secs(5), |n| {
        while let Some(got) = n.gateway("vpc-a").accept() {
            conns.push(got);
        }
        conns.len() == 3
    });
    let mut peers: Vec<SocketAddrV4> = conns.iter().map(|c| c.1).collect();
    peers.sort();
    assert_eq!(
        peers,
        vec![
            SocketAddrV4::new(ip("10.0.1.10"), 40000),
            SocketAddrV4::new(ip("10.0.1.10"), 40001),
            SocketAddrV4::new(ip("10.0.1.20"), 40000),
        ]
    );
    // Each answer reaches the socket it belongs to.
    for (id, peer) in &conns {
        let msg = format!("for {peer}");
        assert_eq!(n.gateway("vpc-a").send(*id, msg.as_bytes()), Ok(msg.len()));
    }
    n.run_for(Duration::from_millis(100));
    assert_eq!(n.guest(P1).read(a), b"for 10.0.1.10:40000");
    assert_eq!(n.guest(P1).read(b), b"for 10.0.1.10:40001");
    assert_eq!(n.guest(P2).read(c), b"for 10.0.1.20:40000");
}

#[test]
fn a_spoofed_source_reaches_nothing() {
    let mut n = setup();
    // P1's stack takes an address its port does not own.
    n.guest(P1).iface.update_ip_addrs(|addrs| {
        addrs.clear();
        addrs
            .push(IpCidr::new(IpAddress::Ipv4(ip("10.0.1.99")), 24))
            .expect("address");
    });
    let h = n.guest(P1).connect(API_ADDR, API_PORT, 40000);
    assert_eq!(
        accept_within(&mut n, "vpc-a", Duration::from_secs(10)),
        None
    );
    assert_eq!(state(&mut n, P1, h), tcp::State::SynSent);
    assert_eq!(api_frames_to(&n, P1), 0);
    // No listener even saw a SYN.
    let gw = n.gateway("vpc-a");
    assert!(
        gw.listeners
            .iter()
            .all(|l| gw.sockets.get::<tcp::Socket>(*l).state() == tcp::State::Listen)
    );

    // Posing as P2 (another ENI of the subnet) at frame level: dropped before the uplink.
    let now = n.now;
    let spoofed = tcp_frame(
        mac(1),
        ROUTER_MAC,
        "10.0.1.20",
        "169.254.169.250",
        40000,
        80,
        Flags::Syn,
        64,
    );
    assert!(n.fabric.ingress(P1, &spoofed, now).is_empty());
    // With P2's MAC as well: still P1's port, still dropped.
    let spoofed = tcp_frame(
        mac(2),
        ROUTER_MAC,
        "10.0.1.20",
        "169.254.169.250",
        40000,
        80,
        Flags::Syn,
        64,
    );
    assert!(n.fabric.ingress(P1, &spoofed, now).is_empty());
}

#[test]
fn each_vpc_has_its_own_api_connections() {
    let mut n = setup();
    // P1 (vpc-a) and P9 (vpc-b) have the same address and use the same source port: the same
    // 4-tuple, told apart only by the VPC, that is by the gateway.
    let ha = n.guest(P1).connect(API_ADDR, API_PORT, 40000);
    let hb = n.guest(P9).connect(API_ADDR, API_PORT, 40000);
    let (mut ca, mut cb) = (None, None);
    n.run_until(Duration::from_secs(5), |n| {
        ca = ca.or_else(|| n.gateway("vpc-a").accept());
        cb = cb.or_else(|| n.gateway("vpc-b").accept());
        ca.is_some() && cb.is_some()
    });
    let ((ca, pa), (cb, pb)) = (ca.expect("vpc-a accepted"), cb.expect("vpc-b accepted"));
    assert_eq!(pa, pb, "same address and port in both VPCs");
    // One connection each: vpc-a's gateway never saw vpc-b's guest, nor the other way round.
    assert_eq!(n.gateway("vpc-a").guest_connections(), 1);
    assert_eq!(n.gateway("vpc-b").guest_connections(), 1);
    assert_eq!(n.gateway("vpc-a").accept(), None);
    assert_eq!(n.gateway("vpc-b").accept(), None);

    transfer(
        &mut n,
        "vpc-a",
        ca,
        P1,
        ha,
        b"answer for a",
        b"request from a",
    );
    transfer(
        &mut n,
        "vpc-b",
        cb,
        P9,
        hb,
        b"answer for b",
        b"request from b",
    );
    // A connection id of one gateway means nothing to the other: ids are per gateway, so vpc-b's
    // gateway may well have a connection with the same id, but it is vpc-b's own.
    assert_eq!(ca, cb, "each gateway numbers its own connections");
    n.gateway("vpc-a").send(ca, b"only a").expect("send");
    n.run_for(Duration::from_millis(100));
    assert_eq!(n.guest(P1).read(ha), b"only a");
    assert!(n.guest(P9).read(hb).is_empty());
    // Dropping vpc-a's connection leaves vpc-b's alone.
    n.gateway("vpc-a").abort(ca);
    n.run_for(Duration::from_millis(100));
    assert_eq!(state(&mut n, P1, ha), tcp::State::Closed);
    assert_eq!(state(&mut n, P9, hb), tcp::State::Established);
    assert!(n.gateway("vpc-b").is_established(cb));
}

#[test]
fn other_ports_and_the_host_are_refused_at_once() {
    let mut n = setup();
    let wrong_port = n.guest(P1).connect(API_ADDR, 81, 40000);
    let right_port = n.guest(P1).connect(API_ADDR, API_PORT, 40001);
    // P2 may send to the host (its group allows egress); the host address serves nothing.
    let host = n.guest(P2).connect(HOST_ADDR, 80, 40002);
    let (c, peer) = accept_within(&mut n, "vpc-a", Duration::from_secs(5)).expect("accepted");
    assert_eq!(peer.port(), 40001);
    // Reset, not left hanging: closed well before any retransmission timeout.
    assert!(n.run_until(Duration::from_millis(500), |n| {
        state(n, P1, wrong_port) == tcp::State::Closed && state(n, P2, host) == tcp::State::Closed
    }));
    assert_eq!(state(&mut n, P1, right_port), tcp::State::Established);
    assert!(n.gateway("vpc-a").is_established(c));
    assert_eq!(n.gateway("vpc-a").accept(), None);
    assert_eq!(n.gateway("vpc-a").guest_connections(), 1);
}

#[test]
fn nothing_works_while_the_uplink_is_detached() {
    let mut n = setup();
    n.fabric.vpc_mut("vpc-a").expect("vpc").set_uplink(false);
    let h = n.guest(P1).connect(API_ADDR, API_PORT, 40000);
    let wrong_port = n.guest(P1).connect(API_ADDR, 81, 40001);
    assert_eq!(accept_within(&mut n, "vpc-a", Duration::from_secs(5)), None);
    // Not even a reset: the frames go nowhere.
    assert_eq!(state(&mut n, P1, h), tcp::State::SynSent);
    assert_eq!(state(&mut n, P1, wrong_port), tcp::State::SynSent);
    assert_eq!(api_frames_to(&n, P1), 0);

    // Attached, the guest's next SYN gets through.
    n.fabric.vpc_mut("vpc-a").expect("vpc").set_uplink(true);
    let (c, _) = accept_within(&mut n, "vpc-a", Duration::from_secs(10)).expect("accepted");
    assert!(n.run_until(Duration::from_secs(1), |n| state(n, P1, h)
        == tcp::State::Established));

    // Detached mid-connection: nothing moves either way, the guest's frames nor the API's.
    n.fabric.vpc_mut("vpc-a").expect("vpc").set_uplink(false);
    let delivered = api_frames_to(&n, P1);
    n.gateway("vpc-a").send(c, b"down").expect("send");
    n.guest(P1).tcp(h).send_slice(b"up").expect("send");
    n.run_for(Duration::from_secs(2));
    assert_eq!(api_frames_to(&n, P1), delivered);
    assert!(n.guest(P1).read(h).is_empty());
    let mut buf = [0u8; 8];
    assert_eq!(n.gateway("vpc-a").recv(c, &mut buf), RecvState::Pending);
    // Reattached, retransmissions carry on where they stopped.
    n.fabric.vpc_mut("vpc-a").expect("vpc").set_uplink(true);
    let mut up = Vec::new();
    let mut down = Vec::new();
    assert!(n.run_until(Duration::from_secs(10), |n| {
        if let RecvState::Data(k) = n.gateway("vpc-a").recv(c, &mut buf) {
            up.extend_from_slice(&buf[..k]);
        }
        down.extend(n.guest(P1).read(h));
        up == b"up" && down == b"down"
    }));
}

#[test]
fn guest_sockets_are_capped_and_freed() {
    let mut n = setup();
    n.gateway("vpc-a").guest_limit = 6;
    let handles: Vec<SocketHandle> = (0..10)
        .map(|i| n.guest(P1).connect(API_ADDR, API_PORT, 40000 + i))
        .collect();
    let mut conns = Vec::new();
    n.run_until(Duration::from_secs(3), |n| {
        while let Some(got) = n.gateway("vpc-a").accept() {
            conns.push(got);
        }
        false
    });
    assert_eq!(conns.len(), 6, "as many as the limit");
    let states: Vec<tcp::State> = handles.iter().map(|h| state(&mut n, P1, *h)).collect();
    let established = states
        .iter()
        .filter(|s| **s == tcp::State::Established)
        .count();
    let refused = states.iter().filter(|s| **s == tcp::State::Closed).count();
    assert_eq!((established, refused), (6, 4), "{states:?}");
    // Full: a new one is refused too.
    let extra = n.guest(P1).connect(API_ADDR, API_PORT, 40100);
    n.run_for(Duration::from_millis(200));
    assert_eq!(state(&mut n, P1, extra), tcp::State::Closed);

    // One connection finished (guest-first close, then the API's) frees a slot.
    let (c, peer) = conns[0];
    let h = handles[usize::from(peer.port() - 40000)];
    n.guest(P1).tcp(h).close();
    let mut buf = [0u8; 8];
    assert!(n.run_until(
        Duration::from_secs(5),
        |n| n.gateway("vpc-a").recv(c, &mut buf) == RecvState::Closed
    ));
    n.gateway("vpc-a").close(c);
    assert!(n.run_until(
        Duration::from_secs(5),
        |n| n.gateway("vpc-a").guest_connections() == 5
    ));
    let again = n.guest(P1).connect(API_ADDR, API_PORT, 40101);
    let (_, peer) = accept_within(&mut n, "vpc-a", Duration::from_secs(5)).expect("accepted");
    assert_eq!(peer.port(), 40101);
    assert_eq!(state(&mut n, P1, again), tcp::State::Established);

    // The API closing first frees its slot as soon as the guest's FIN is in, without holding
    // the socket in TIME-WAIT.
    let (c, peer) = conns[1];
    let h = handles[usize::from(peer.port() - 40000)];
    n.gateway("vpc-a").close(c);
    assert!(n.run_until(Duration::from_secs(1), |n| !n.guest(P1).tcp(h).may_recv()));
    n.guest(P1).tcp(h).close();
    assert!(n.run_until(Duration::from_secs(1), |n| {
        n.gateway("vpc-a").guest_connections() == 5
    }));
    assert_eq!(n.gateway("vpc-a").recv(c, &mut buf), RecvState::Closed);
    n.guest(P1).connect(API_ADDR, API_PORT, 40102);
    assert!(accept_within(&mut n, "vpc-a", Duration::from_secs(5)).is_some());
}

#[test]
fn host_connections_never_come_from_the_api_address() {
    let mut gw = Gateway::new();
    let now = Instant::now();
    let dst: SocketAddrV4 = "169.254.169.250:80".parse().expect("addr");
    assert_eq!(
        gw.connect(dst, now),
        Err(GatewayError::InvalidDestination(dst))
    );
    gw.connect("10.0.1.10:22".parse().expect("addr"), now)
        .expect("connect");
    let syn = gw.poll(now);
    assert_eq!(syn.len(), 1);
    let eth = EthernetFrame::new_checked(&syn[0][..]).expect("eth");
    let packet = Ipv4Packet::new_checked(eth.payload()).expect("ipv4");
    assert_eq!(packet.src_addr(), HOST_ADDR);
}

#[test]
fn a_half_open_handshake_times_out_and_frees_its_slot() {
    let mut gw = Gateway::new();
    gw.guest_limit = SPARE_LISTENERS;
    let start = Instant::now();
    // A bare SYN whose SYN-ACK is never answered.
    let syn = tcp_frame(
        ROUTER_MAC,
        UPLINK_MAC,
        "10.0.1.10",
        "169.254.169.250",
        40000,
        80,
        Flags::Syn,
        64,
    );
    gw.handle(&syn, start);
    let out = gw.poll(start);
    assert_eq!(out.len(), 1, "a SYN-ACK");
    let in_handshake = |gw: &Gateway| {
        gw.listeners
            .iter()
            .filter(|l| gw.sockets.get::<tcp::Socket>(**l).state() == tcp::State::SynReceived)
            .count()
    };
    assert_eq!(in_handshake(&gw), 1);
    let mut now = start;
    while now < start + CONNECT_TIMEOUT + Duration::from_secs(5) {
        now += gw
            .poll_delay(now)
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(1));
        gw.poll(now);
    }
    assert_eq!(in_handshake(&gw), 0);
    assert_eq!(gw.accept(), None);
    // The slot is a listener again, and the dead socket is gone.
    gw.poll(now);
    assert_eq!(gw.listeners.len(), SPARE_LISTENERS);
    assert!(
        gw.listeners
            .iter()
            .all(|l| gw.sockets.get::<tcp::Socket>(*l).state() == tcp::State::Listen)
    );
    assert_eq!(gw.sockets.iter().count(), SPARE_LISTENERS);
}

// ---------------------------------------------------------------- frame level, in the fabric

#[derive(Clone, Copy)]
enum Flags {
    Syn,
    SynAck,
    Ack,
    Rst,
}

#[allow(clippy::too_many_arguments)]
fn tcp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: &str,
    dst: &str,
    sport: u16,
    dport: u16,
    flags: Flags,
    ttl: u8,
) -> Vec<u8> {
    let (src, dst) = (ip(src), ip(dst));
    let (control, ack) = match flags {
        Flags::Syn => (TcpControl::Syn, None),
        Flags::SynAck => (TcpControl::Syn, Some(TcpSeqNumber(2))),
        Flags::Ack => (TcpControl::None, Some(TcpSeqNumber(2))),
        Flags::Rst => (TcpControl::Rst, None),
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

/// (source MAC, destination MAC, TTL) of a frame, checking its IPv4 header.
fn macs_and_ttl(frame: &[u8]) -> (MacAddr, MacAddr, u8) {
    let eth = EthernetFrame::new_checked(frame).expect("eth");
    let packet = Ipv4Packet::new_checked(eth.payload()).expect("ipv4");
    assert!(packet.verify_checksum());
    (eth.src_addr().0, eth.dst_addr().0, packet.hop_limit())
}

fn fabric() -> Fabric {
    setup().fabric
}

#[test]
fn arp_for_the_api_address_is_answered_by_the_router() {
    let mut f = fabric();
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(mac(1)),
        source_protocol_addr: ip("10.0.1.10"),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: API_ADDR,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(mac(1)),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    let out = f.ingress(P1, &buf, Instant::now());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, P1);
    let eth = EthernetFrame::new_checked(&out[0].1[..]).expect("eth");
    let reply = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).expect("arp")).expect("arp");
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        ..
    } = reply
    else {
        panic!("unexpected ARP kind");
    };
    assert_eq!(operation, ArpOperation::Reply);
    assert_eq!(source_protocol_addr, API_ADDR);
    assert_eq!(source_hardware_addr.0, ROUTER_MAC);
}

#[test]
fn guest_frames_for_the_api_go_to_the_uplink_unfiltered() {
    let mut f = fabric();
    let now = Instant::now();
    let to_api = |dport, ttl| {
        tcp_frame(
            mac(1),
            ROUTER_MAC,
            "10.0.1.10",
            "169.254.169.250",
            40000,
            dport,
            Flags::Syn,
            ttl,
        )
    };
    // sg-a denies everything; the API is reached anyway, on-link (TTL untouched, even 1).
    for ttl in [64, 1] {
        let out = f.ingress(P1, &to_api(80, ttl), now);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, UPLINK);
        assert_eq!(macs_and_ttl(&out[0].1), (ROUTER_MAC, UPLINK_MAC, ttl));
    }
    // Other ports go to the gateway too, which refuses them.
    assert_eq!(f.ingress(P1, &to_api(81, 64), now).len(), 1);
    assert_eq!(f.vpc("vpc-a").expect("vpc").tracked_flows(P1), 0);
    // Not TCP: dropped.
    let udp = crate::net::frame::udp_frame(
        mac(1),
        ROUTER_MAC,
        ip("10.0.1.10"),
        API_ADDR,
        40000,
        80,
        b"x",
    )
    .expect("udp");
    assert!(f.ingress(P1, &udp, now).is_empty());
    // Detached uplink: nothing.
    f.vpc_mut("vpc-a").expect("vpc").set_uplink(false);
    assert!(f.ingress(P1, &to_api(80, 64), now).is_empty());
}

#[test]
fn only_api_answers_come_in_unfiltered() {
    let mut f = fabric();
    let now = Instant::now();
    let from_api = |sport, dst: &str, flags| {
        tcp_frame(
            UPLINK_MAC,
            ROUTER_MAC,
            "169.254.169.250",
            dst,
            sport,
            40000,
            flags,
            64,
        )
    };
    // Answers from port 80, and resets from any port, reach the port owning the destination,
    // although sg-a admits nothing.
    for (sport, flags) in [
        (80, Flags::SynAck),
        (80, Flags::Ack),
        (80, Flags::Rst),
        (81, Flags::Rst),
    ] {
        let out = f.uplink_ingress("vpc-a", &from_api(sport, "10.0.1.10", flags), now);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, P1);
        assert_eq!(macs_and_ttl(&out[0].1), (ROUTER_MAC, mac(1), 64));
    }
    assert_eq!(f.vpc("vpc-a").expect("vpc").tracked_flows(P1), 0);
    // Not answers: a bare SYN (the API never opens connections), anything but a reset from
    // another port, a destination no port owns.
    for (sport, dst, flags) in [
        (80, "10.0.1.10", Flags::Syn),
        (81, "10.0.1.10", Flags::Ack),
        (81, "10.0.1.10", Flags::SynAck),
        (22, "10.0.1.10", Flags::Syn),
        (80, "10.0.1.99", Flags::Ack),
    ] {
        assert!(
            f.uplink_ingress("vpc-a", &from_api(sport, dst, flags), now)
                .is_empty(),
            "{sport} {dst}"
        );
    }
    // Other link-local sources are still refused.
    let imds = tcp_frame(
        UPLINK_MAC,
        ROUTER_MAC,
        "169.254.169.254",
        "10.0.1.10",
        80,
        40000,
        Flags::Ack,
        64,
    );
    assert!(f.uplink_ingress("vpc-a", &imds, now).is_empty());
    // Detached uplink: nothing.
    f.vpc_mut("vpc-a").expect("vpc").set_uplink(false);
    assert!(
        f.uplink_ingress("vpc-a", &from_api(80, "10.0.1.10", Flags::Ack), now)
            .is_empty()
    );
}

#[test]
fn api_address_constants() {
    assert_eq!(API_ADDR, Ipv4Addr::new(169, 254, 169, 250));
    assert_eq!(API_PORT, 80);
    assert!(API_ADDR.is_link_local());
}
