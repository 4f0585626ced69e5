//! IMDS over TCP, driven by smoltcp guests through a real fabric.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::TimeZone as _;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use super::super::sim::{Net, ip, mac, net, tcp_facts};
use super::*;
use crate::imds::{HttpTokens, MetadataOptions};
use crate::net::{Fabric, PortConfig, VpcConfig};

const P1: PortId = PortId(1);
const P2: PortId = PortId(2);
const P9: PortId = PortId(9);

fn view(id: &str, private_ip: &str, mac: &str) -> InstanceView {
    InstanceView {
        instance_id: id.to_string(),
        account_id: "123456789012".to_string(),
        region: "us-east-1".to_string(),
        availability_zone: "us-east-1a".to_string(),
        availability_zone_id: "use1-az1".to_string(),
        ami_id: "ami-0123456789abcdef0".to_string(),
        ami_launch_index: 0,
        instance_type: "t3.micro".to_string(),
        architecture: "x86_64".to_string(),
        private_ip: private_ip.to_string(),
        private_dns: "ip-10-0-1-10.ec2.internal".to_string(),
        public_ip: None,
        public_dns: None,
        mac: mac.to_string(),
        interface_id: "eni-0aaaaaaaaaaaaaaaa".to_string(),
        subnet_id: "subnet-0bbbbbbbbbbbbbbbb".to_string(),
        subnet_cidr: "10.0.1.0/24".to_string(),
        vpc_id: "vpc-0cccccccccccccccc".to_string(),
        vpc_cidrs: vec!["10.0.0.0/16".to_string()],
        security_groups: vec![("sg-01".to_string(), "default".to_string())],
        reservation_id: "r-0ddddddddddddddddd".to_string(),
        block_devices: vec![("root".to_string(), "/dev/xvda".to_string())],
        public_keys: Vec::new(),
        user_data: None,
        tags: Vec::new(),
        pending_time: chrono::Utc
            .timestamp_opt(1_700_000_000, 0)
            .single()
            .expect("time"),
        iam: None,
        identity_credentials: None,
        spot_action: None,
        rebalance_notice: None,
        options: MetadataOptions::default(),
    }
}

/// Lets one service sit behind several VPCs, as a shared test double.
struct Shared(Arc<Mutex<ImdsService>>);

impl LocalService for Shared {
    fn handle(&mut self, port: PortId, frame: &[u8], now: Instant) -> Vec<Vec<u8>> {
        self.0.lock().expect("lock").handle(port, frame, now)
    }
    fn poll(&mut self, now: Instant) -> Vec<(PortId, Vec<u8>)> {
        self.0.lock().expect("lock").poll(now)
    }
    fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        self.0.lock().expect("lock").poll_delay(now)
    }
    fn port_removed(&mut self, port: PortId) {
        self.0.lock().expect("lock").port_removed(port)
    }
}

type Views = Arc<Mutex<HashMap<PortId, InstanceView>>>;

struct Setup {
    net: Net,
    service: Arc<Mutex<ImdsService>>,
    views: Views,
}

impl Setup {
    fn set_view(&self, port: PortId, f: impl FnOnce(&mut InstanceView)) {
        let mut views = self.views.lock().expect("lock");
        f(views.get_mut(&port).expect("view"));
    }
}

fn port_config(n: u8, addr: &str) -> PortConfig {
    PortConfig {
        mac: mac(n),
        ip: ip(addr),
        subnet: net("10.0.1.0/24"),
        security_groups: vec!["sg-x".to_string()],
    }
}

/// vpc-a holds P1 (10.0.1.10) and P2 (10.0.1.20); vpc-b, with the same CIDR, holds P9 at
/// 10.0.1.10 too. One service answers both VPCs. No security group allows anything in: IMDS is
/// not filtered.
fn setup() -> Setup {
    let mut fabric = Fabric::new();
    let config = VpcConfig::new(net("10.0.0.0/16"), "us-east-1");
    fabric.add_vpc("vpc-a", config.clone()).expect("vpc-a");
    fabric.add_vpc("vpc-b", config).expect("vpc-b");
    let views: Views = Arc::new(Mutex::new(HashMap::from([
        (
            P1,
            view("i-0000000000000000a", "10.0.1.10", "02:00:00:00:00:01"),
        ),
        (
            P2,
            view("i-0000000000000000b", "10.0.1.20", "02:00:00:00:00:02"),
        ),
        (
            P9,
            view("i-00000000000000009", "10.0.1.10", "02:00:00:00:00:09"),
        ),
    ])));
    let lookup_views = views.clone();
    let service = Arc::new(Mutex::new(ImdsService::new(
        Arc::new(Imds::new()),
        Box::new(move |port| lookup_views.lock().ok()?.get(&port).cloned()),
    )));
    for vpc in ["vpc-a", "vpc-b"] {
        fabric
            .vpc_mut(vpc)
            .expect("vpc")
            .set_local_service(Box::new(Shared(service.clone())));
    }
    let mut net = Net::new(fabric);
    net.add_guest("vpc-a", P1, port_config(1, "10.0.1.10"));
    net.add_guest("vpc-a", P2, port_config(2, "10.0.1.20"));
    net.add_guest("vpc-b", P9, port_config(9, "10.0.1.10"));
    Setup {
        net,
        service,
        views,
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }
}

/// A complete response at the start of `buf`, if there is one. A response to HEAD has no body
/// whatever its `Content-Length`.
fn parse_reply(buf: &[u8], head_request: bool) -> Option<Reply> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).expect("ascii head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"));
    let status: u16 = parts.next()?.parse().expect("status");
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").expect("header line");
            (k.to_string(), v.to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.parse().expect("length"))
        .unwrap_or(0);
    let len = if head_request { 0 } else { len };
    let body = buf.get(end + 4..end + 4 + len)?.to_vec();
    Some(Reply {
        status,
        headers,
        body,
    })
}

fn open(net: &mut Net, port: PortId, local_port: u16) -> SocketHandle {
    let h = net.guest(port).connect(super::IMDS_ADDR, 80, local_port);
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.guest(port).tcp(h).state()
            == tcp::State::Established),
        "connection to IMDS from {port} established"
    );
    h
}

/// Sends `request` on an open connection and waits for one complete response.
fn exchange(net: &mut Net, port: PortId, h: SocketHandle, request: &str) -> Reply {
    let head_request = request.starts_with("HEAD ");
    let request = request.as_bytes();
    let mut sent = 0;
    let mut buf = Vec::new();
    let done = net.run_until(Duration::from_secs(60), |n| {
        let guest = n.guest(port);
        if sent < request.len() {
            sent += guest.tcp(h).send_slice(&request[sent..]).unwrap_or(0);
        }
        buf.extend(guest.read(h));
        parse_reply(&buf, head_request).is_some()
    });
    assert!(
        done,
        "no complete response; got {:?}",
        String::from_utf8_lossy(&buf)
    );
    parse_reply(&buf, head_request).expect("reply")
}

fn put_token(net: &mut Net, port: PortId, h: SocketHandle) -> Reply {
    exchange(
        net,
        port,
        h,
        "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n\
         X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n",
    )
}

fn get(path: &str, token: Option<&str>) -> String {
    let token = token
        .map(|t| format!("X-aws-ec2-metadata-token: {t}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{token}\r\n")
}

/// TTLs of the frames IMDS sent to `port` that carried data, from `net.delivered[from..]`.
fn data_ttls(net: &Net, port: PortId, from: usize) -> Vec<u8> {
    net.delivered[from..]
        .iter()
        .filter(|(to, _)| *to == port)
        .filter_map(|(_, f)| tcp_facts(f))
        .filter(|(src, _, _, len)| *src == super::IMDS_ADDR && *len > 0)
        .map(|(_, _, ttl, _)| ttl)
        .collect()
}

#[test]
fn token_then_get_on_one_keep_alive_connection_with_hop_limit_ttl() {
    let mut s = setup();
    s.set_view(P1, |v| {
        v.options.http_tokens = HttpTokens::Required;
        v.options.hop_limit = 3;
    });
    let net = &mut s.net;
    let h = open(net, P1, 40000);

    let mark = net.delivered.len();
    let put = put_token(net, P1, h);
    assert_eq!(put.status, 200);
    assert_eq!(
        put.header("X-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    assert_eq!(put.header("Server"), Some("EC2ws"));
    assert_eq!(put.header("Connection"), None, "keep-alive adds nothing");
    assert_eq!(
        put.headers.len(),
        4,
        "only IMDS's headers: {:?}",
        put.headers
    );
    let token = put.text();
    assert!(!token.is_empty());
    let ttls = data_ttls(net, P1, mark);
    assert!(!ttls.is_empty());
    assert!(ttls.iter().all(|&t| t == 3), "PUT response TTLs {ttls:?}");

    // Same connection: the next answer uses the default TTL again.
    let mark = net.delivered.len();
    let id = exchange(
        net,
        P1,
        h,
        &get("/latest/meta-data/instance-id", Some(&token)),
    );
    assert_eq!(id.status, 200);
    assert_eq!(id.text(), "i-0000000000000000a");
    let ttls = data_ttls(net, P1, mark);
    assert!(!ttls.is_empty());
    assert!(ttls.iter().all(|&t| t == 64), "GET response TTLs {ttls:?}");
    assert_eq!(net.guest(P1).tcp(h).state(), tcp::State::Established);

    // A third request still works, and HEAD keeps GET's length without a body.
    let head = exchange(
        net,
        P1,
        h,
        &get("/latest/meta-data/instance-id", Some(&token)).replacen("GET", "HEAD", 1),
    );
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("19"));
    assert!(head.body.is_empty());
    // Nothing followed the HEAD answer: the next response starts cleanly.
    let id = exchange(
        net,
        P1,
        h,
        &get("/latest/meta-data/instance-id", Some(&token)),
    );
    assert_eq!(id.text(), "i-0000000000000000a");
}

#[test]
fn required_tokens_refuse_v1_and_options_apply_live() {
    let mut s = setup();
    s.set_view(P1, |v| v.options.http_tokens = HttpTokens::Required);
    let h = open(&mut s.net, P1, 40000);
    let r = exchange(
        &mut s.net,
        P1,
        h,
        &get("/latest/meta-data/instance-id", None),
    );
    assert_eq!(r.status, 401);
    // ModifyInstanceMetadataOptions takes effect on the next request, same connection.
    s.set_view(P1, |v| v.options.http_tokens = HttpTokens::Optional);
    let r = exchange(
        &mut s.net,
        P1,
        h,
        &get("/latest/meta-data/instance-id", None),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "i-0000000000000000a");
}

#[test]
fn put_with_x_forwarded_for_is_403() {
    let mut s = setup();
    let h = open(&mut s.net, P1, 40000);
    let r = exchange(
        &mut s.net,
        P1,
        h,
        "PUT /latest/api/token HTTP/1.1\r\nX-Forwarded-For: 10.9.9.9\r\n\
         X-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
    );
    assert_eq!(r.status, 403);
}

#[test]
fn same_address_and_ports_on_two_ports_get_their_own_instance() {
    let mut s = setup();
    // Identical 4-tuples: 10.0.1.10:40000 -> 169.254.169.254:80 from P1 (vpc-a) and P9 (vpc-b).
    let h1 = open(&mut s.net, P1, 40000);
    let h9 = open(&mut s.net, P9, 40000);
    let t1 = put_token(&mut s.net, P1, h1).text();
    let t9 = put_token(&mut s.net, P9, h9).text();
    let r1 = exchange(
        &mut s.net,
        P1,
        h1,
        &get("/latest/meta-data/instance-id", Some(&t1)),
    );
    let r9 = exchange(
        &mut s.net,
        P9,
        h9,
        &get("/latest/meta-data/instance-id", Some(&t9)),
    );
    assert_eq!(r1.text(), "i-0000000000000000a");
    assert_eq!(r9.text(), "i-00000000000000009");
    // A token is bound to the port's instance: P9 cannot use P1's.
    let r = exchange(
        &mut s.net,
        P9,
        h9,
        &get("/latest/meta-data/instance-id", Some(&t1)),
    );
    assert_eq!(r.status, 401);
    assert_eq!(s.service.lock().expect("lock").active_ports(), 2);
}

#[test]
fn big_user_data_arrives_intact_over_a_lossy_link() {
    let mut s = setup();
    let user_data: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    s.set_view(P1, |v| v.user_data = Some(user_data.clone()));
    // Lose every 5th data segment IMDS sends, so the rest of the response only gets through by
    // retransmissions driven from `poll`; a small client window makes the service stream it.
    let mut n = 0;
    s.net.loss = Some(Box::new(move |_, frame| {
        let data =
            tcp_facts(frame).is_some_and(|(src, _, _, len)| src == super::IMDS_ADDR && len > 0);
        if data {
            n += 1;
        }
        data && n % 5 == 0
    }));
    let h = s
        .net
        .guest(P1)
        .connect_with(super::IMDS_ADDR, 80, 40000, 4096);
    assert!(s.net.run_until(Duration::from_secs(5), |n| {
        n.guest(P1).tcp(h).state() == tcp::State::Established
    }));
    let r = exchange(&mut s.net, P1, h, &get("/latest/user-data", None));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), user_data.len());
    assert!(r.body == user_data, "user data corrupted");
    // The connection is still usable afterwards.
    let r = exchange(
        &mut s.net,
        P1,
        h,
        &get("/latest/meta-data/instance-id", None),
    );
    assert_eq!(r.text(), "i-0000000000000000a");
}

#[test]
fn parallel_connections_are_all_accepted() {
    let mut s = setup();
    // Open several at once, before any of them is served.
    let handles: Vec<SocketHandle> = (0..6)
        .map(|i| s.net.guest(P1).connect(super::IMDS_ADDR, 80, 41000 + i))
        .collect();
    assert!(s.net.run_until(Duration::from_secs(5), |n| {
        handles
            .iter()
            .all(|h| n.guest(P1).tcp(*h).state() == tcp::State::Established)
    }));
    for h in handles {
        let r = exchange(
            &mut s.net,
            P1,
            h,
            &get("/latest/meta-data/instance-id", None),
        );
        assert_eq!(r.status, 200);
    }
}

#[test]
fn connection_close_and_http10_close_after_the_response() {
    let mut s = setup();
    // The same 4-tuple twice in a row: the first connection's TIME-WAIT must not block it.
    for request in [
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n",
        "GET /latest/meta-data/instance-id HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let h = open(&mut s.net, P1, 40000);
        let r = exchange(&mut s.net, P1, h, request);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Connection"), Some("close"));
        assert!(
            s.net
                .run_until(Duration::from_secs(5), |n| !n.guest(P1).tcp(h).may_recv()),
            "server sent FIN"
        );
        let guest = s.net.guest(P1);
        guest.tcp(h).close();
        s.net.run_for(Duration::from_secs(1));
        s.net.guest(P1).sockets.remove(h);
    }
}

#[test]
fn body_is_skipped_and_bad_requests_get_400_and_close() {
    let mut s = setup();
    // A PUT with a body: the body is read past, the next request on the connection works.
    let h = open(&mut s.net, P1, 40000);
    let r = exchange(
        &mut s.net,
        P1,
        h,
        "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\
         Content-Length: 5\r\n\r\nhello",
    );
    assert_eq!(r.status, 200);
    let r = exchange(
        &mut s.net,
        P1,
        h,
        &get("/latest/meta-data/instance-id", None),
    );
    assert_eq!(r.status, 200);

    let oversized = format!(
        "GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(super::MAX_HEAD)
    );
    for bad in [
        "GARBAGE\r\n\r\n".to_string(),
        "GET / HTTP/2.0\r\n\r\n".to_string(),
        "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
        "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_string(),
        "GET / HTTP/1.1\r\n folded\r\n\r\n".to_string(),
        oversized,
    ] {
        let h = open(&mut s.net, P1, 40001);
        let r = exchange(&mut s.net, P1, h, &bad);
        assert_eq!(r.status, 400, "for {:?}", &bad[..bad.len().min(40)]);
        assert_eq!(r.header("Connection"), Some("close"));
        s.net.guest(P1).tcp(h).abort();
        s.net.run_for(Duration::from_millis(100));
        s.net.guest(P1).sockets.remove(h);
    }
}

#[test]
fn port_without_instance_is_reset() {
    let mut s = setup();
    s.views.lock().expect("lock").remove(&P2);
    let h = open(&mut s.net, P2, 40000);
    let request = get("/latest/meta-data/instance-id", None);
    let mut got = Vec::new();
    let mut sent = false;
    let closed = s.net.run_until(Duration::from_secs(5), |n| {
        let guest = n.guest(P2);
        if !sent {
            sent = guest.tcp(h).send_slice(request.as_bytes()).is_ok();
        }
        got.extend(guest.read(h));
        guest.tcp(h).state() == tcp::State::Closed
    });
    assert!(closed, "connection reset");
    assert!(got.is_empty(), "nothing answered: {got:?}");
}

#[test]
fn stacks_go_with_their_port_and_after_idling() {
    let mut s = setup();
    let h1 = open(&mut s.net, P1, 40000);
    let h2 = open(&mut s.net, P2, 40000);
    exchange(
        &mut s.net,
        P1,
        h1,
        &get("/latest/meta-data/instance-id", None),
    );
    exchange(
        &mut s.net,
        P2,
        h2,
        &get("/latest/meta-data/instance-id", None),
    );
    assert_eq!(s.service.lock().expect("lock").active_ports(), 2);
    s.net.fabric.remove_port(P2).expect("removed");
    s.net.guests.remove(&P2);
    assert_eq!(s.service.lock().expect("lock").active_ports(), 1);

    // An idle keep-alive connection is closed by the server (FIN), then the stack goes.
    assert!(
        s.net
            .run_until(super::IDLE_CLOSE + Duration::from_secs(5), |n| !n
                .guest(P1)
                .tcp(h1)
                .may_recv()),
        "idle connection closed by IMDS"
    );
    s.net.guest(P1).tcp(h1).close();
    assert!(
        s.net
            .run_until(super::STACK_IDLE + Duration::from_secs(5), |_| s
                .service
                .lock()
                .map(|svc| svc.active_ports() == 0)
                .unwrap_or(false)),
        "idle stack dropped"
    );
    // And a new connection gets a fresh stack.
    let h = open(&mut s.net, P1, 40001);
    let r = exchange(
        &mut s.net,
        P1,
        h,
        &get("/latest/meta-data/instance-id", None),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn head_parsing() {
    assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
    assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    assert_eq!(head_end(b"\r\n"), None);
    let p = parse_head(
        b"PUT /latest/api/token?x=1 HTTP/1.1\r\nA:  b \r\nConnection: Keep-Alive, Close\r\n\r\n",
    )
    .expect("parsed");
    assert_eq!(p.request.method, "PUT");
    assert_eq!(p.request.path, "/latest/api/token?x=1");
    assert_eq!(p.request.headers[0], ("A".to_string(), "b".to_string()));
    assert!(!p.keep_alive);
    assert_eq!(p.content_length, 0);
    let p = parse_head(b"GET / HTTP/1.1\r\ncontent-length: 7\r\n\r\n").expect("parsed");
    assert!(p.keep_alive);
    assert_eq!(p.content_length, 7);
    for bad in [
        &b"GET  / HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.1 x\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: \xff\r\n\r\n",
    ] {
        assert!(
            parse_head(bad).is_none(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}
