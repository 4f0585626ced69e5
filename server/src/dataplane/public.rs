//! Host access to public addresses: ec2d listens on each running instance's public IP (from
//! the loopback pool) for the TCP ports its security groups open to the host, and bridges
//! every accepted connection into the VPC through the VPC's [`Gateway`], where the packets
//! meet the security groups like any others.
//!
//! Two halves:
//! - [`Listeners`], driven by the sync thread: the wanted (address, port) set is computed from
//!   the records, and listener tasks are opened and closed to match. A revoked rule closes the
//!   port, so a new connection is refused at once rather than left hanging.
//! - [`Bridges`], owned by the fabric thread: one per accepted connection, moving bytes between
//!   the host socket's tokio tasks and the gateway's TCP connection.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};

use super::Cmd;
use crate::api::instances::{self, InstanceRecord};
use crate::api::security_groups::RULE_KIND;
use crate::error::ApiError;
use crate::model::SecurityGroupRule;
use crate::net::gateway::{ConnId, Gateway, HOST_ADDR, RecvState};
use crate::net::{Fabric, PortId};
use crate::store::Store;

/// Rules wider than this many ports are not listened on port by port (a listener per port
/// of `0-65535` would be 65,536 sockets per address); their well-known ports are.
const MAX_RANGE: u32 = 64;
/// Listened on inside a wider range, when the range covers them.
const COMMON_PORTS: &[u16] = &[
    22, 80, 443, 3000, 3306, 5000, 5432, 6379, 8000, 8080, 8443, 9000, 9090, 27017,
];
/// Bytes a host connection may have in flight towards the instance before its reader waits.
const HOST_CREDIT: usize = 256 * 1024;
/// Chunks waiting for the host's socket before the bridge stops reading from the instance.
const TO_HOST_CHUNKS: usize = 64;
/// A connection the instance has not accepted by then (no listener, or filtered) is reset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a public address leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub vpc_id: String,
    pub private_ip: Ipv4Addr,
}

/// The public endpoints that should be reachable, and on which ports.
pub(super) fn wanted(store: &Store) -> Result<HashMap<Ipv4Addr, (Target, Vec<u16>)>, ApiError> {
    let mut out = HashMap::new();
    for (account, region) in store.scopes()? {
        store.transaction(&account, &region, |tx| {
            let recs: Vec<InstanceRecord> = tx.list(instances::KIND)?;
            let running: Vec<&InstanceRecord> = recs
                .iter()
                .filter(|r| r.state_name() == "running")
                .filter(|r| {
                    r.instance
                        .public_ip_address
                        .as_deref()
                        .is_some_and(|s| !s.is_empty())
                })
                .collect();
            if running.is_empty() {
                return Ok(());
            }
            let rules: Vec<SecurityGroupRule> = tx.list(RULE_KIND)?;
            for rec in running {
                let i = &rec.instance;
                let (Some(public), Some(private), Some(vpc_id)) = (
                    i.public_ip_address
                        .as_deref()
                        .and_then(|s| Ipv4Addr::from_str(s).ok()),
                    i.private_ip_address
                        .as_deref()
                        .and_then(|s| Ipv4Addr::from_str(s).ok()),
                    i.vpc_id.clone(),
                ) else {
                    continue;
                };
                let groups: HashSet<String> = i
                    .network_interfaces
                    .iter()
                    .flatten()
                    .next()
                    .and_then(|e| e.groups.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|g| g.group_id)
                    .collect();
                let ports = open_ports(
                    rules
                        .iter()
                        .filter(|r| r.group_id.as_ref().is_some_and(|g| groups.contains(g))),
                );
                if !ports.is_empty() {
                    out.insert(
                        public,
                        (
                            Target {
                                vpc_id,
                                private_ip: private,
                            },
                            ports,
                        ),
                    );
                }
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// TCP ports that ingress rules open to the host's address, sorted.
fn open_ports<'a>(rules: impl Iterator<Item = &'a SecurityGroupRule>) -> Vec<u16> {
    let mut ports = std::collections::BTreeSet::new();
    for r in rules {
        if r.is_egress == Some(true) {
            continue;
        }
        let admits_host = r
            .cidr_ipv4
            .as_deref()
            .and_then(|c| Ipv4Net::from_str(c).ok())
            .is_some_and(|net| net.contains(&HOST_ADDR));
        if !admits_host {
            continue;
        }
        let (from, to) = match r.ip_protocol.as_deref() {
            Some("tcp" | "6") => (r.from_port.unwrap_or(0), r.to_port.unwrap_or(65535)),
            Some("-1" | "all") => (0, 65535),
            _ => continue,
        };
        let (from, to) = (from.clamp(1, 65535) as u16, to.clamp(1, 65535) as u16);
        if from > to {
            continue;
        }
        if u32::from(to - from) < MAX_RANGE {
            ports.extend(from..=to);
        } else {
            ports.extend(COMMON_PORTS.iter().filter(|p| (from..=to).contains(*p)));
        }
    }
    ports.into_iter().collect()
}

/// The listener tasks, kept in step with [`wanted`].
pub(super) struct Listeners {
    runtime: tokio::runtime::Handle,
    cmd: Sender<Cmd>,
    targets: Arc<Mutex<HashMap<Ipv4Addr, Target>>>,
    open: HashMap<SocketAddrV4, tokio::task::JoinHandle<()>>,
    next_bridge: Arc<AtomicU64>,
}

impl Listeners {
    pub fn new(
        runtime: tokio::runtime::Handle,
        cmd: Sender<Cmd>,
        next_bridge: Arc<AtomicU64>,
    ) -> Self {
        Listeners {
            runtime,
            cmd,
            targets: Arc::new(Mutex::new(HashMap::new())),
            open: HashMap::new(),
            next_bridge,
        }
    }

    pub fn apply(&mut self, wanted: HashMap<Ipv4Addr, (Target, Vec<u16>)>) {
        let want: HashSet<SocketAddrV4> = wanted
            .iter()
            .flat_map(|(ip, (_, ports))| ports.iter().map(|p| SocketAddrV4::new(*ip, *p)))
            .collect();
        *self.targets.lock().unwrap_or_else(|p| p.into_inner()) = wanted
            .into_iter()
            .map(|(ip, (target, _))| (ip, target))
            .collect();
        self.open.retain(|addr, task| {
            let keep = want.contains(addr) && !task.is_finished();
            if !keep {
                task.abort();
                tracing::info!(%addr, "public port closed");
            }
            keep
        });
        for addr in want {
            if self.open.contains_key(&addr) {
                continue;
            }
            match self.listen(addr) {
                Ok(task) => {
                    tracing::info!(%addr, "public port open");
                    self.open.insert(addr, task);
                }
                Err(e) => tracing::warn!(%addr, error = %e, "cannot listen on a public address"),
            }
        }
    }

    fn listen(&self, addr: SocketAddrV4) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let _enter = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let (targets, cmd, next) = (
            Arc::clone(&self.targets),
            self.cmd.clone(),
            Arc::clone(&self.next_bridge),
        );
        Ok(self.runtime.spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let target = targets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(addr.ip())
                    .cloned();
                let Some(target) = target else {
                    continue; // dropped: the address leads nowhere any more
                };
                let id = next.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(bridge(
                    stream,
                    peer,
                    id,
                    SocketAddrV4::new(target.private_ip, addr.port()),
                    target.vpc_id,
                    cmd.clone(),
                ));
            }
        }))
    }
}

/// One host connection to a public address: opens its VPC side, then carries it.
async fn bridge(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    id: u64,
    dst: SocketAddrV4,
    vpc_id: String,
    cmd: Sender<Cmd>,
) {
    let credits = Arc::new(Semaphore::new(HOST_CREDIT));
    let (to_host, from_vpc) = mpsc::channel::<Vec<u8>>(TO_HOST_CHUNKS);
    if cmd
        .send(Cmd::HostConnect {
            bridge: id,
            vpc_id,
            dst,
            to_host,
            credits: Arc::clone(&credits),
        })
        .is_err()
    {
        return;
    }
    tracing::debug!(%peer, %dst, bridge = id, "host connection");
    carry(stream, id, cmd, from_vpc, credits).await;
}

/// A guest's connection to ec2d's API endpoint, host side: connects to ec2d's own listener,
/// then carries it.
async fn api_bridge(
    api: SocketAddr,
    id: u64,
    cmd: Sender<Cmd>,
    from_vpc: mpsc::Receiver<Vec<u8>>,
    credits: Arc<Semaphore>,
) {
    match tokio::net::TcpStream::connect(api).await {
        Ok(stream) => carry(stream, id, cmd, from_vpc, credits).await,
        Err(e) => {
            tracing::warn!(%api, error = %e, "cannot reach ec2d's API for a guest");
            let _ = cmd.send(Cmd::HostGone { bridge: id });
        }
    }
}

/// Copies a host socket to the fabric thread and back until both directions are done.
async fn carry(
    stream: tokio::net::TcpStream,
    id: u64,
    cmd: Sender<Cmd>,
    mut from_vpc: mpsc::Receiver<Vec<u8>>,
    credits: Arc<Semaphore>,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let up_cmd = cmd.clone();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let Ok(permits) = credits.acquire_many(n as u32).await else {
                break;
            };
            permits.forget();
            if up_cmd
                .send(Cmd::HostData {
                    bridge: id,
                    data: buf[..n].to_vec(),
                })
                .is_err()
            {
                break;
            }
        }
        let _ = up_cmd.send(Cmd::HostEof { bridge: id });
    };
    let down = async move {
        while let Some(chunk) = from_vpc.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(up, down);
    let _ = cmd.send(Cmd::HostGone { bridge: id });
}

/// One host connection, fabric side.
struct Bridge {
    vpc_id: String,
    conn: ConnId,
    /// `None` once the instance has finished sending (its FIN, or a reset): dropping the
    /// sender ends the host's write side, while the host may still be sending.
    to_host: Option<mpsc::Sender<Vec<u8>>>,
    credits: Arc<Semaphore>,
    /// Host bytes the gateway has not taken yet.
    pending: Vec<u8>,
    host_eof: bool,
    fin_sent: bool,
    opened: Instant,
}

/// Where guests' connections to the API endpoint are carried to.
pub(super) struct ApiTarget {
    pub runtime: tokio::runtime::Handle,
    pub cmd: Sender<Cmd>,
    /// ec2d's own API listener.
    pub addr: SocketAddr,
    /// Shared with [`Listeners`], so bridge ids never collide.
    pub next_bridge: Arc<AtomicU64>,
}

/// The gateways (one per VPC in the fabric) and the bridges through them.
pub(super) struct Bridges {
    gateways: HashMap<String, Gateway>,
    bridges: HashMap<u64, Bridge>,
    api: Option<ApiTarget>,
    /// A bridge could not hand data to the host: look again soon rather than at the next timer.
    pub backlogged: bool,
}

impl Bridges {
    pub fn new(api: Option<ApiTarget>) -> Self {
        Bridges {
            gateways: HashMap::new(),
            bridges: HashMap::new(),
            api,
            backlogged: false,
        }
    }

    /// A VPC joined the fabric: its gateway serves guests' API connections from now on.
    pub fn add_vpc(&mut self, vpc_id: &str) {
        self.gateways.entry(vpc_id.to_string()).or_default();
    }

    /// Takes the guests' new connections to the API endpoint and starts carrying them.
    fn accept_api(&mut self, now: Instant) {
        for (vpc_id, g) in &mut self.gateways {
            while let Some((conn, guest)) = g.accept() {
                let Some(api) = &self.api else {
                    g.abort(conn);
                    continue;
                };
                let id = api.next_bridge.fetch_add(1, Ordering::Relaxed);
                let credits = Arc::new(Semaphore::new(HOST_CREDIT));
                let (to_host, from_vpc) = mpsc::channel::<Vec<u8>>(TO_HOST_CHUNKS);
                tracing::debug!(%guest, vpc = %vpc_id, bridge = id, "guest connection to the API");
                api.runtime.spawn(api_bridge(
                    api.addr,
                    id,
                    api.cmd.clone(),
                    from_vpc,
                    Arc::clone(&credits),
                ));
                self.bridges.insert(
                    id,
                    Bridge {
                        vpc_id: vpc_id.clone(),
                        conn,
                        to_host: Some(to_host),
                        credits,
                        pending: Vec::new(),
                        host_eof: false,
                        fin_sent: false,
                        opened: now,
                    },
                );
            }
        }
    }

    pub fn connect(
        &mut self,
        id: u64,
        vpc_id: String,
        dst: SocketAddrV4,
        to_host: mpsc::Sender<Vec<u8>>,
        credits: Arc<Semaphore>,
        now: Instant,
    ) {
        let gateway = self.gateways.entry(vpc_id.clone()).or_default();
        match gateway.connect(dst, now) {
            Ok(conn) => {
                self.bridges.insert(
                    id,
                    Bridge {
                        vpc_id,
                        conn,
                        to_host: Some(to_host),
                        credits,
                        pending: Vec::new(),
                        host_eof: false,
                        fin_sent: false,
                        opened: now,
                    },
                );
            }
            // Dropping `to_host` closes the host's socket.
            Err(e) => tracing::warn!(%dst, error = %e, "cannot open a host connection"),
        }
    }

    pub fn host_data(&mut self, id: u64, data: Vec<u8>) {
        if let Some(b) = self.bridges.get_mut(&id) {
            b.pending.extend_from_slice(&data);
        }
    }

    pub fn host_eof(&mut self, id: u64) {
        if let Some(b) = self.bridges.get_mut(&id) {
            b.host_eof = true;
        }
    }

    /// The host's socket is gone. After a clean end (EOF first) the bridge still has to hand
    /// over what it holds and close; otherwise the connection is reset.
    pub fn host_gone(&mut self, id: u64) {
        if self.bridges.get(&id).is_some_and(|b| b.host_eof) {
            return;
        }
        if let Some(b) = self.bridges.remove(&id)
            && let Some(g) = self.gateways.get_mut(&b.vpc_id)
        {
            g.abort(b.conn);
        }
    }

    /// A frame the VPC routed to its uplink.
    pub fn uplink_frame(&mut self, vpc_id: &str, frame: &[u8], now: Instant) {
        if let Some(g) = self.gateways.get_mut(vpc_id) {
            g.handle(frame, now);
        }
    }

    /// Moves bytes both ways, then runs the gateways; returns the frames for the ports.
    pub fn pump(&mut self, fabric: &mut Fabric, now: Instant) -> Vec<(PortId, Vec<u8>)> {
        self.accept_api(now);
        let mut buf = vec![0u8; 16 * 1024];
        let mut finished = Vec::new();
        self.backlogged = false;
        for (id, b) in &mut self.bridges {
            let Some(g) = self.gateways.get_mut(&b.vpc_id) else {
                finished.push(*id);
                continue;
            };
            if !b.pending.is_empty() {
                match g.send(b.conn, &b.pending) {
                    Ok(n) => {
                        tracing::trace!(
                            bridge = id,
                            sent = n,
                            left = b.pending.len() - n,
                            "to the VPC"
                        );
                        b.pending.drain(..n);
                        b.credits.add_permits(n);
                    }
                    Err(_) => {
                        g.abort(b.conn);
                        finished.push(*id);
                        continue;
                    }
                }
            }
            if b.host_eof && b.pending.is_empty() && !b.fin_sent {
                g.close(b.conn);
                b.fin_sent = true;
            }
            if !g.is_established(b.conn) && now.duration_since(b.opened) > CONNECT_TIMEOUT {
                g.abort(b.conn);
                finished.push(*id);
                continue;
            }
            while let Some(to_host) = &b.to_host {
                let Ok(permit) = to_host.try_reserve() else {
                    if !to_host.is_closed() {
                        self.backlogged = true;
                    }
                    break;
                };
                let state = g.recv(b.conn, &mut buf);
                match state {
                    RecvState::Data(n) => permit.send(buf[..n].to_vec()),
                    RecvState::Pending => break,
                    RecvState::Closed => {
                        drop(permit);
                        // A half-close: the host's side may still have things to say.
                        b.to_host = None;
                    }
                }
            }
            // Both directions are done; the gateway finishes the TCP close on its own.
            if b.to_host.is_none() && b.fin_sent {
                finished.push(*id);
            }
        }
        for id in finished {
            // Dropping the bridge drops `to_host`: the host sees the end of the stream.
            self.bridges.remove(&id);
        }
        let mut out = Vec::new();
        for (vpc_id, g) in &mut self.gateways {
            for frame in g.poll(now) {
                let delivered = fabric.uplink_ingress(vpc_id, &frame, now);
                tracing::trace!(
                    len = frame.len(),
                    delivered = delivered.len(),
                    "gateway frame"
                );
                out.extend(delivered);
            }
        }
        self.gateways
            .retain(|vpc_id, g| g.connections() > 0 || fabric.vpc(vpc_id).is_some());
        // Frames that arrived in the polls above may have completed handshakes.
        self.accept_api(now);
        out
    }

    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        if self.backlogged {
            return Some(Duration::from_millis(1));
        }
        self.gateways
            .values_mut()
            .filter_map(|g| g.poll_delay(now))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(proto: &str, from: i32, to: i32, cidr: &str) -> SecurityGroupRule {
        SecurityGroupRule {
            group_id: Some("sg-1".into()),
            is_egress: Some(false),
            ip_protocol: Some(proto.into()),
            from_port: Some(from),
            to_port: Some(to),
            cidr_ipv4: Some(cidr.into()),
            ..Default::default()
        }
    }

    #[test]
    fn ports_open_to_the_host_are_the_ones_rules_admit_it_on() {
        let rules = [
            rule("tcp", 22, 22, "0.0.0.0/0"),
            rule("tcp", 80, 81, "198.18.0.1/32"),
            rule("tcp", 5432, 5432, "10.0.0.0/8"), // not the host
            rule("udp", 53, 53, "0.0.0.0/0"),      // not TCP
        ];
        assert_eq!(open_ports(rules.iter()), vec![22, 80, 81]);
    }

    #[test]
    fn wide_ranges_open_only_their_common_ports() {
        let rules = [rule("-1", -1, -1, "0.0.0.0/0")];
        assert_eq!(open_ports(rules.iter()), COMMON_PORTS.to_vec());
        let rules = [rule("tcp", 1, 1024, "0.0.0.0/0")];
        assert_eq!(open_ports(rules.iter()), vec![22, 80, 443]);
    }

    #[test]
    fn egress_rules_open_nothing() {
        let mut r = rule("tcp", 22, 22, "0.0.0.0/0");
        r.is_egress = Some(true);
        assert!(open_ports([r].iter()).is_empty());
    }
}
