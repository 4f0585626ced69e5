//! A simulated network for tests: guests played by smoltcp stacks (Ethernet, ARP and all, as a
//! real guest kernel would be) on fabric ports, the fabric itself, and per-VPC host gateways,
//! exchanging frames synchronously in virtual time.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::Medium;
use smoltcp::socket::tcp;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, IpAddress, IpCidr,
    Ipv4Packet, TcpPacket,
};

use super::gateway::Gateway;
use super::imds_service::{Clock, FrameQueue};
use super::{Fabric, MacAddr, PortConfig, PortId, UPLINK};

pub(super) fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

pub(super) fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test network")
}

pub(super) fn mac(n: u8) -> MacAddr {
    [0x02, 0, 0, 0, 0, n]
}

/// A guest: one NIC on a fabric port, with its own TCP/IP stack.
pub(super) struct Guest {
    pub(super) port: PortId,
    pub(super) iface: Interface,
    device: FrameQueue,
    pub(super) sockets: SocketSet<'static>,
}

impl Guest {
    pub(super) fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    fn socket(rx: usize, tx: usize) -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; rx]),
            tcp::SocketBuffer::new(vec![0u8; tx]),
        )
    }

    pub(super) fn listen(&mut self, port: u16) -> SocketHandle {
        let mut socket = Self::socket(64 * 1024, 64 * 1024);
        socket.listen(port).expect("listen");
        self.sockets.add(socket)
    }

    /// Opens a connection from `local_port` with a receive buffer of `rx` bytes.
    pub(super) fn connect_with(
        &mut self,
        dst: Ipv4Addr,
        dst_port: u16,
        local_port: u16,
        rx: usize,
    ) -> SocketHandle {
        let mut socket = Self::socket(rx, 64 * 1024);
        socket
            .connect(
                self.iface.context(),
                (IpAddress::Ipv4(dst), dst_port),
                local_port,
            )
            .expect("connect");
        self.sockets.add(socket)
    }

    pub(super) fn connect(
        &mut self,
        dst: Ipv4Addr,
        dst_port: u16,
        local_port: u16,
    ) -> SocketHandle {
        self.connect_with(dst, dst_port, local_port, 64 * 1024)
    }

    /// Everything readable now.
    pub(super) fn read(&mut self, h: SocketHandle) -> Vec<u8> {
        let socket = self.tcp(h);
        let mut out = Vec::new();
        while socket.can_recv() {
            let got = socket
                .recv(|data| {
                    out.extend_from_slice(data);
                    (data.len(), data.len())
                })
                .expect("recv");
            if got == 0 {
                break;
            }
        }
        out
    }
}

/// What one loss filter sees: the port a frame is delivered to, and the frame.
pub(super) type LossFilter = Box<dyn FnMut(PortId, &[u8]) -> bool>;

pub(super) struct Net {
    pub(super) fabric: Fabric,
    pub(super) guests: BTreeMap<PortId, Guest>,
    pub(super) gateways: BTreeMap<String, Gateway>,
    pub(super) now: Instant,
    clock: Clock,
    /// Every frame delivered to a guest, in order.
    pub(super) delivered: Vec<(PortId, Vec<u8>)>,
    /// Frames for which this returns true are lost on their way to a guest.
    pub(super) loss: Option<LossFilter>,
}

impl Net {
    pub(super) fn new(fabric: Fabric) -> Self {
        Net {
            fabric,
            guests: BTreeMap::new(),
            gateways: BTreeMap::new(),
            now: Instant::now(),
            clock: Clock::default(),
            delivered: Vec::new(),
            loss: None,
        }
    }

    /// Attaches a port to `vpc` and a guest stack to it, configured as DHCP would (address,
    /// prefix, default route via the subnet's `.1`).
    pub(super) fn add_guest(&mut self, vpc: &str, port: PortId, config: PortConfig) {
        let mut device = FrameQueue::new(Medium::Ethernet);
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        iface_config.random_seed = port.0;
        let ts = self.clock.at(self.now);
        let mut iface = Interface::new(iface_config, &mut device, ts);
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(
                    IpAddress::Ipv4(config.ip),
                    config.subnet.prefix_len(),
                ))
                .expect("address");
        });
        let gateway = Ipv4Addr::from(u32::from(config.subnet.network()) + 1);
        iface
            .routes_mut()
            .add_default_ipv4_route(gateway)
            .expect("route");
        self.fabric.add_port(vpc, port, config).expect("port");
        self.guests.insert(
            port,
            Guest {
                port,
                iface,
                device,
                sockets: SocketSet::new(Vec::new()),
            },
        );
    }

    pub(super) fn add_gateway(&mut self, vpc: &str) {
        self.fabric.vpc_mut(vpc).expect("vpc").set_uplink(true);
        self.gateways.insert(vpc.to_string(), Gateway::new());
    }

    pub(super) fn guest(&mut self, port: PortId) -> &mut Guest {
        self.guests.get_mut(&port).expect("guest")
    }

    pub(super) fn gateway(&mut self, vpc: &str) -> &mut Gateway {
        self.gateways.get_mut(vpc).expect("gateway")
    }

    fn deliver(&mut self, vpc: &str, to: PortId, frame: Vec<u8>) {
        if to == UPLINK {
            if let Some(gw) = self.gateways.get_mut(vpc) {
                gw.handle(&frame, self.now);
            }
            return;
        }
        if let Some(loss) = self.loss.as_mut()
            && loss(to, &frame)
        {
            return;
        }
        self.delivered.push((to, frame.clone()));
        if let Some(guest) = self.guests.get_mut(&to) {
            guest.device.rx.push_back(frame);
        }
    }

    /// One round of moving frames; true if any frame moved.
    pub(super) fn step(&mut self) -> bool {
        let ts = self.clock.at(self.now);
        let now = self.now;
        let mut outgoing = Vec::new();
        for guest in self.guests.values_mut() {
            for _ in 0..256 {
                if guest.iface.poll(ts, &mut guest.device, &mut guest.sockets) == PollResult::None {
                    break;
                }
            }
            outgoing.extend(guest.device.tx.drain(..).map(|f| (guest.port, f)));
        }
        let mut moved = !outgoing.is_empty();
        for (from, frame) in outgoing {
            let vpc = self.fabric.vpc_of(from).expect("guest's VPC").to_string();
            for (to, out) in self.fabric.ingress(from, &frame, now) {
                self.deliver(&vpc, to, out);
            }
        }
        for (to, out) in self.fabric.poll(now) {
            moved = true;
            let vpc = self.fabric.vpc_of(to).unwrap_or_default().to_string();
            self.deliver(&vpc, to, out);
        }
        let vpcs: Vec<String> = self.gateways.keys().cloned().collect();
        for vpc in vpcs {
            let frames = self.gateway(&vpc).poll(now);
            for frame in frames {
                moved = true;
                for (to, out) in self.fabric.uplink_ingress(&vpc, &frame, now) {
                    self.deliver(&vpc, to, out);
                }
            }
        }
        moved
    }

    /// The soonest any part wants to run again.
    fn next_delay(&mut self) -> Option<Duration> {
        let ts = self.clock.at(self.now);
        let now = self.now;
        let guests = self.guests.values_mut().filter_map(|g| {
            g.iface
                .poll_delay(ts, &g.sockets)
                .map(super::imds_service::std_duration)
        });
        let mut delays: Vec<Duration> = guests.collect();
        delays.extend(self.fabric.poll_delay(now));
        delays.extend(self.gateways.values_mut().filter_map(|g| g.poll_delay(now)));
        delays.into_iter().min()
    }

    /// Runs until `done` holds or `limit` of virtual time has passed; true if `done` held.
    pub(super) fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Net) -> bool,
    ) -> bool {
        let deadline = self.now + limit;
        loop {
            for _ in 0..10_000 {
                if !self.step() {
                    break;
                }
                if done(self) {
                    return true;
                }
            }
            if done(self) {
                return true;
            }
            if self.now >= deadline {
                return false;
            }
            let delay = self
                .next_delay()
                .unwrap_or(Duration::from_millis(100))
                .clamp(Duration::from_millis(1), Duration::from_millis(250));
            self.now += delay;
        }
    }

    /// Lets `d` of virtual time pass with the network running.
    pub(super) fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }
}

/// A delivered frame's IPv4 facts: (src, dst, ttl, TCP payload length) — `None` if not TCP/IPv4.
pub(super) fn tcp_facts(frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, usize)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if u8::from(ip.next_header()) != super::frame::IP_PROTO_TCP {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    Some((
        ip.src_addr(),
        ip.dst_addr(),
        ip.hop_limit(),
        tcp.payload().len(),
    ))
}
