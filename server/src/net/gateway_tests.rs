//! The host gateway, driven through a real fabric against smoltcp guests.

use std::net::SocketAddrV4;
use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use super::super::sim::{Net, ip, mac, net};
use super::*;
use crate::net::{Fabric, PortConfig, PortId, SgRule, VpcConfig};

const P1: PortId = PortId(1); // vpc-a 10.0.1.10, sg-a
const P2: PortId = PortId(2); // vpc-a 10.0.2.20, sg-b
const P9: PortId = PortId(9); // vpc-b 10.1.1.10, sg-z (all ingress allowed)

fn port(n: u8, addr: &str, subnet: &str, group: &str) -> PortConfig {
    PortConfig {
        mac: mac(n),
        ip: ip(addr),
        subnet: net(subnet),
        security_groups: vec![group.to_string()],
    }
}

fn ssh_from_anywhere() -> Vec<SgRule> {
    vec![
        SgRule::allow_all_egress(),
        SgRule::tcp_ingress(22, 22, net("0.0.0.0/0")),
    ]
}

/// Two VPCs with their gateways. sg-a admits TCP 22 from anywhere; sg-b admits only its own
/// members; sg-z admits everything. Every guest listens on 22.
fn setup() -> (Net, SocketHandle, SocketHandle, SocketHandle) {
    let mut fabric = Fabric::new();
    fabric
        .add_vpc("vpc-a", VpcConfig::new(net("10.0.0.0/16"), "us-east-1"))
        .expect("vpc-a");
    fabric
        .add_vpc("vpc-b", VpcConfig::new(net("10.1.0.0/16"), "us-east-1"))
        .expect("vpc-b");
    let a = fabric.vpc_mut("vpc-a").expect("vpc-a");
    a.set_group_rules("sg-a", ssh_from_anywhere());
    a.set_group_rules(
        "sg-b",
        vec![
            SgRule::allow_all_egress(),
            SgRule::allow_all_ingress_from_group("sg-b"),
        ],
    );
    fabric.vpc_mut("vpc-b").expect("vpc-b").set_group_rules(
        "sg-z",
        vec![
            SgRule::allow_all_egress(),
            SgRule {
                egress: false,
                protocol: crate::net::SgProtocol::All,
                from_port: -1,
                to_port: -1,
                peer: crate::net::SgPeer::Cidr4(net("0.0.0.0/0")),
            },
        ],
    );
    let mut n = Net::new(fabric);
    n.add_guest("vpc-a", P1, port(1, "10.0.1.10", "10.0.1.0/24", "sg-a"));
    n.add_guest("vpc-a", P2, port(2, "10.0.2.20", "10.0.2.0/24", "sg-b"));
    n.add_guest("vpc-b", P9, port(9, "10.1.1.10", "10.1.1.0/24", "sg-z"));
    n.add_gateway("vpc-a");
    n.add_gateway("vpc-b");
    let l1 = n.guest(P1).listen(22);
    let l2 = n.guest(P2).listen(22);
    let l9 = n.guest(P9).listen(22);
    (n, l1, l2, l9)
}

fn dial(n: &mut Net, vpc: &str, addr: &str, port: u16) -> ConnId {
    let now = n.now;
    n.gateway(vpc)
        .connect(SocketAddrV4::new(ip(addr), port), now)
        .expect("connect")
}

fn established(n: &mut Net, vpc: &str, c: ConnId, within: Duration) -> bool {
    n.run_until(within, |n| n.gateway(vpc).is_established(c))
}

/// Moves `up` from the gateway to the guest socket and `down` the other way, concurrently.
fn transfer(
    n: &mut Net,
    vpc: &str,
    c: ConnId,
    port: PortId,
    h: SocketHandle,
    up: &[u8],
    down: &[u8],
) {
    let (mut up_sent, mut down_sent) = (0, 0);
    let (mut up_got, mut down_got) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 3000];
    let done = n.run_until(Duration::from_secs(60), |n| {
        let gw = n.gateway(vpc);
        up_sent += gw.send(c, &up[up_sent..]).expect("send");
        while let RecvState::Data(k) = gw.recv(c, &mut buf) {
            down_got.extend_from_slice(&buf[..k]);
        }
        let guest = n.guest(port);
        if down_sent < down.len() {
            down_sent += guest
                .tcp(h)
                .send_slice(&down[down_sent..])
                .expect("guest send");
        }
        up_got.extend(guest.read(h));
        up_got.len() == up.len() && down_got.len() == down.len()
    });
    assert!(
        done,
        "transfer stalled: up {} down {}",
        up_got.len(),
        down_got.len()
    );
    assert!(up_got == up, "host to guest data intact");
    assert!(down_got == down, "guest to host data intact");
}

#[test]
fn host_reaches_an_open_port_and_data_flows_both_ways() {
    let (mut n, l1, _, _) = setup();
    let c = dial(&mut n, "vpc-a", "10.0.1.10", 22);
    assert!(established(&mut n, "vpc-a", c, Duration::from_secs(5)));
    assert!(
        n.run_until(Duration::from_secs(1), |n| n.guest(P1).tcp(l1).state()
            == tcp::State::Established)
    );
    let guest = n.guest(P1);
    let remote = guest.tcp(l1).remote_endpoint().expect("remote");
    assert_eq!(remote.addr, smoltcp::wire::IpAddress::Ipv4(HOST_ADDR));
    assert!(super::EPHEMERAL_PORTS.contains(&remote.port));

    let up: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let down: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    transfer(&mut n, "vpc-a", c, P1, l1, &up, &down);

    // Host EOF reaches the guest; the guest can still answer, then closes too.
    n.gateway("vpc-a").close(c);
    assert!(n.run_until(Duration::from_secs(5), |n| !n.guest(P1).tcp(l1).may_recv()));
    assert!(matches!(
        n.gateway("vpc-a").send(c, b"late"),
        Err(GatewayError::Closed(_))
    ));
    n.guest(P1).tcp(l1).send_slice(b"bye").expect("send");
    n.guest(P1).tcp(l1).close();
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    let finished = n.run_until(Duration::from_secs(30), |n| {
        match n.gateway("vpc-a").recv(c, &mut buf) {
            RecvState::Data(k) => {
                got.extend_from_slice(&buf[..k]);
                false
            }
            RecvState::Pending => false,
            RecvState::Closed => true,
        }
    });
    assert!(finished);
    assert_eq!(got, b"bye");
    // Finished sockets are reaped.
    assert!(n.run_until(
        Duration::from_secs(30),
        |n| n.gateway("vpc-a").connections() == 0
    ));
    assert_eq!(n.gateway("vpc-a").recv(c, &mut buf), RecvState::Closed);
}

#[test]
fn no_ingress_rule_no_connection_until_one_is_added() {
    let (mut n, _, l2, _) = setup();
    // sg-b only admits its own members: a group rule never matches the host.
    let c = dial(&mut n, "vpc-a", "10.0.2.20", 22);
    assert!(!established(&mut n, "vpc-a", c, Duration::from_secs(10)));
    assert_eq!(n.guest(P2).tcp(l2).state(), tcp::State::Listen);
    let mut buf = [0u8; 8];
    assert_eq!(n.gateway("vpc-a").recv(c, &mut buf), RecvState::Pending);
    assert_eq!(n.gateway("vpc-a").send(c, b"x"), Ok(0));
    // The attempt gives up after the connect timeout.
    assert!(
        n.run_until(CONNECT_TIMEOUT, |n| n.gateway("vpc-a").recv(c, &mut buf)
            == RecvState::Closed)
    );
    assert_eq!(n.gateway("vpc-a").connections(), 0);

    // Admit the host by its address: new connections get through.
    let mut rules = vec![
        SgRule::allow_all_egress(),
        SgRule::allow_all_ingress_from_group("sg-b"),
    ];
    rules.push(SgRule::tcp_ingress(22, 22, net("198.18.0.1/32")));
    n.fabric
        .vpc_mut("vpc-a")
        .expect("vpc")
        .set_group_rules("sg-b", rules);
    let c = dial(&mut n, "vpc-a", "10.0.2.20", 22);
    assert!(established(&mut n, "vpc-a", c, Duration::from_secs(5)));
    transfer(&mut n, "vpc-a", c, P2, l2, b"ping", b"pong");
}

#[test]
fn revoking_the_rule_keeps_open_connections_and_stops_new_ones() {
    let (mut n, l1, _, _) = setup();
    let c = dial(&mut n, "vpc-a", "10.0.1.10", 22);
    assert!(established(&mut n, "vpc-a", c, Duration::from_secs(5)));
    n.fabric
        .vpc_mut("vpc-a")
        .expect("vpc")
        .set_group_rules("sg-a", vec![SgRule::allow_all_egress()]);
    transfer(&mut n, "vpc-a", c, P1, l1, b"still", b"here");
    // A second listener so a new connection would have somewhere to land.
    n.guest(P1).listen(22);
    let c2 = dial(&mut n, "vpc-a", "10.0.1.10", 22);
    assert!(!established(&mut n, "vpc-a", c2, Duration::from_secs(10)));
}

#[test]
fn guests_cannot_reach_the_host_or_beyond() {
    let (mut n, l1, _, _) = setup();
    // An open host connection, whose source port a guest might try to hit.
    let c = dial(&mut n, "vpc-a", "10.0.1.10", 22);
    assert!(established(&mut n, "vpc-a", c, Duration::from_secs(5)));
    let gw_port = n.guest(P1).tcp(l1).remote_endpoint().expect("remote").port;
    let guest = n.guest(P1);
    let to_host: Vec<SocketHandle> = [22, 80, gw_port]
        .into_iter()
        .enumerate()
        .map(|(i, p)| guest.connect(HOST_ADDR, p, 50000 + i as u16))
        .collect();
    let outside = guest.connect(ip("203.0.113.5"), 80, 50010);
    let mut ever_established = false;
    n.run_until(Duration::from_secs(10), |n| {
        let g = n.guest(P1);
        ever_established |= to_host
            .iter()
            .chain([&outside])
            .any(|h| g.tcp(*h).state() == tcp::State::Established);
        false
    });
    assert!(!ever_established);
    // Host addresses refuse at once (reset); other destinations lead nowhere.
    for h in &to_host {
        assert_eq!(n.guest(P1).tcp(*h).state(), tcp::State::Closed);
    }
    assert_eq!(n.guest(P1).tcp(outside).state(), tcp::State::SynSent);
    // The real connection is unharmed.
    transfer(&mut n, "vpc-a", c, P1, l1, b"ok?", b"ok");
}

#[test]
fn a_gateway_only_reaches_its_own_vpc() {
    let (mut n, _, _, l9) = setup();
    // 10.1.1.10 is P9 in vpc-b, which admits everything; vpc-a's gateway cannot reach it.
    let c = dial(&mut n, "vpc-a", "10.1.1.10", 22);
    assert!(!established(&mut n, "vpc-a", c, Duration::from_secs(10)));
    assert_eq!(n.guest(P9).tcp(l9).state(), tcp::State::Listen);
    // vpc-b's own gateway can.
    let c = dial(&mut n, "vpc-b", "10.1.1.10", 22);
    assert!(established(&mut n, "vpc-b", c, Duration::from_secs(5)));
}

#[test]
fn connect_rejects_unusable_destinations_and_unknown_ids() {
    let mut gw = Gateway::new();
    let now = std::time::Instant::now();
    for dst in [
        "10.0.0.5:0",
        "0.0.0.0:22",
        "255.255.255.255:22",
        "224.0.0.1:22",
        "127.0.0.1:22",
        "198.18.0.1:22",
    ] {
        let dst: SocketAddrV4 = dst.parse().expect("addr");
        assert_eq!(
            gw.connect(dst, now),
            Err(GatewayError::InvalidDestination(dst))
        );
    }
    let c = gw
        .connect("10.0.0.5:22".parse().expect("addr"), now)
        .expect("connect");
    assert!(!gw.is_established(c));
    let syn = gw.poll(now);
    assert_eq!(syn.len(), 1, "one SYN");
    gw.abort(c);
    assert!(matches!(gw.send(c, b"x"), Err(GatewayError::Closed(_))));
    assert_eq!(
        gw.send(ConnId(99), b"x"),
        Err(GatewayError::UnknownConnection(ConnId(99)))
    );
    // The aborted socket is reaped once its reset is out.
    gw.poll(now);
    assert_eq!(gw.connections(), 0);
    // Frames that are not TCP to the gateway are ignored.
    gw.handle(&[0u8; 10], now);
    assert!(gw.poll(now).is_empty());
}

#[test]
fn services_can_move_to_the_fabric_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Gateway>();
    assert_send::<crate::net::ImdsService>();
}
