//! The data plane at run time: the fabric's ports wired to machines, the services it hosts
//! (IMDS) and the host's access to public addresses, all fed from the store.
//!
//! `net/` holds the packet logic, pure and synchronous. This module owns the threads around
//! it:
//! - one fabric thread owns the [`Fabric`] and everything attached to it; machines' frames,
//!   configuration changes and host connections reach it as [`Cmd`]s on one channel, so
//!   nothing in the fabric needs a lock;
//! - a sync thread re-reads security groups (and the like) from the store whenever the control
//!   plane says something that moves packets has changed ([`DataPlane::sync`]), and hands the
//!   result to the fabric thread.
//!
//! Machines get a [`PortLink`] per ENI from [`DataPlane::attach_instance`] when they boot and
//! give it back with [`DataPlane::detach_instance`] when they are gone.

mod link;
mod public;
mod records;
mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use link::PortLink;

use crate::error::ApiError;
use crate::imds::Imds;
use crate::net::imds_service::ImdsService;
use crate::net::{Fabric, FabricError, MacAddr, PortConfig, PortId, SgRule, UPLINK, VpcConfig};
use crate::store::Store;

/// How long the fabric thread sleeps when nothing asks for a timer.
const IDLE_WAKE: Duration = Duration::from_millis(500);
/// How often idle tracked flows are reclaimed.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

/// One network interface of a machine, as an engine needs it.
#[derive(Clone)]
pub struct Nic {
    pub mac: MacAddr,
    pub link: Arc<PortLink>,
}

impl std::fmt::Debug for Nic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Nic({}, {:?})", format_mac(&self.mac), self.link)
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &MacAddr) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("the data plane is not running")]
    NotRunning,
    #[error("{0}")]
    Store(#[from] ApiError),
    #[error("{0}")]
    Fabric(#[from] FabricError),
    #[error("instance {0} has no usable network interface: {1}")]
    BadRecord(String, String),
}

/// Who owns a port: what IMDS answers about, and where its records live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub account: String,
    pub region: String,
    pub instance_id: String,
}

/// What the fabric thread is asked to do.
pub(crate) enum Cmd {
    /// A frame a machine sent on its port.
    Frame(PortId, Vec<u8>),
    Attach {
        vpc_id: String,
        vpc: VpcConfig,
        port: PortId,
        config: PortConfig,
        deliver: SyncSender<Vec<u8>>,
        reply: Sender<Result<(), FabricError>>,
    },
    Detach(PortId),
    /// Fresh settings of one VPC: its DNS switches, every group's rules, every port's groups.
    Settings(records::VpcSettings),
    /// The host connected to a public address; open the connection into the VPC.
    HostConnect {
        bridge: u64,
        vpc_id: String,
        dst: std::net::SocketAddrV4,
        to_host: tokio::sync::mpsc::Sender<Vec<u8>>,
        credits: Arc<tokio::sync::Semaphore>,
    },
    HostData {
        bridge: u64,
        data: Vec<u8>,
    },
    /// The host will send no more.
    HostEof {
        bridge: u64,
    },
    /// The host's socket is gone.
    HostGone {
        bridge: u64,
    },
}

/// The running data plane. Every method may be called from any thread.
pub struct DataPlane {
    cmd: OnceLock<Sender<Cmd>>,
    store: OnceLock<Arc<Store>>,
    next_port: AtomicU64,
    /// Ports by instance id, while its machine runs.
    ports: Mutex<HashMap<String, Vec<(PortId, String)>>>,
    /// The instance behind each port, for IMDS.
    owners: Arc<Mutex<HashMap<PortId, Owner>>>,
    imds: Arc<Imds>,
    /// Bumped by every [`DataPlane::sync`]; the sync thread works until it has caught up.
    generation: Mutex<u64>,
    wake_sync: Condvar,
}

impl Default for DataPlane {
    fn default() -> Self {
        Self::new()
    }
}

impl DataPlane {
    pub fn new() -> Self {
        DataPlane {
            cmd: OnceLock::new(),
            store: OnceLock::new(),
            next_port: AtomicU64::new(1),
            ports: Mutex::new(HashMap::new()),
            owners: Arc::new(Mutex::new(HashMap::new())),
            imds: Arc::new(Imds::new()),
            generation: Mutex::new(0),
            wake_sync: Condvar::new(),
        }
    }

    /// Starts the fabric and sync threads. Without this, machines run with no network.
    /// Public addresses are listened on with `runtime`'s tasks.
    /// Guests reach ec2d's API (listening on `api`) at [`crate::net::API_ADDR`].
    pub fn start(
        self: &Arc<Self>,
        store: Arc<Store>,
        runtime: tokio::runtime::Handle,
        api: std::net::SocketAddr,
    ) -> std::io::Result<()> {
        let (tx, rx) = mpsc::channel();
        if self.cmd.set(tx.clone()).is_err() || self.store.set(store).is_err() {
            return Ok(()); // already running
        }
        let next_bridge = Arc::new(AtomicU64::new(1));
        let listeners =
            public::Listeners::new(runtime.clone(), tx.clone(), Arc::clone(&next_bridge));
        // A wildcard listener is reached on loopback.
        let api = match api.ip() {
            ip if ip.is_unspecified() => {
                std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), api.port())
            }
            _ => api,
        };
        let bridges = public::Bridges::new(Some(public::ApiTarget {
            runtime,
            cmd: tx,
            addr: api,
            next_bridge,
        }));
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("fabric".into())
            .spawn(move || me.fabric_loop(rx, bridges))?;
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("fabric-sync".into())
            .spawn(move || me.sync_loop(listeners))?;
        Ok(())
    }

    /// Security groups, addresses, ENIs or metadata options changed: re-read them.
    pub fn sync(&self) {
        let mut generation = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        *generation += 1;
        self.wake_sync.notify_all();
    }

    /// Plugs the instance's network interfaces into the fabric, before its machine boots.
    /// Returns nothing (and the machine runs unplugged) when the data plane is not running.
    pub fn attach_instance(
        &self,
        account: &str,
        region: &str,
        instance_id: &str,
    ) -> Result<Vec<Nic>, DataPlaneError> {
        let (Some(cmd), Some(store)) = (self.cmd.get(), self.store.get()) else {
            return Ok(Vec::new());
        };
        // A machine boots once per launch; leftovers of an earlier boot go first.
        self.detach_instance(instance_id);
        let plan = records::port_plan(store, account, region, instance_id)?;
        let port = PortId(self.next_port.fetch_add(1, Ordering::Relaxed));
        let (deliver, rx) = mpsc::sync_channel(link::QUEUE_FRAMES);
        let (reply, answer) = mpsc::channel();
        let mac = plan.config.mac;
        cmd.send(Cmd::Attach {
            vpc_id: plan.vpc_id.clone(),
            vpc: plan.vpc,
            port,
            config: plan.config,
            deliver,
            reply,
        })
        .map_err(|_| DataPlaneError::NotRunning)?;
        answer.recv().map_err(|_| DataPlaneError::NotRunning)??;
        self.lock_owners().insert(
            port,
            Owner {
                account: account.to_string(),
                region: region.to_string(),
                instance_id: instance_id.to_string(),
            },
        );
        self.lock_ports()
            .insert(instance_id.to_string(), vec![(port, plan.vpc_id.clone())]);
        // The port starts with no rules at all; give it its groups' rules before the guest
        // can send anything that needs them.
        let settings = records::vpc_settings(
            store,
            account,
            region,
            &plan.vpc_id,
            &self.ports_of_vpc(&plan.vpc_id),
        )?;
        let _ = cmd.send(Cmd::Settings(settings));
        // Its public address may now have somewhere to lead.
        self.sync();
        tracing::debug!(instance = instance_id, %port, mac = %format_mac(&mac), "port attached");
        Ok(vec![Nic {
            mac,
            link: Arc::new(PortLink {
                port,
                cmd: cmd.clone(),
                rx: Mutex::new(rx),
            }),
        }])
    }

    /// Unplugs the instance's ports; its machine is gone.
    pub fn detach_instance(&self, instance_id: &str) {
        let Some(ports) = self.lock_ports().remove(instance_id) else {
            return;
        };
        {
            let mut owners = self.lock_owners();
            for (port, _) in ports {
                owners.remove(&port);
                if let Some(cmd) = self.cmd.get() {
                    let _ = cmd.send(Cmd::Detach(port));
                }
            }
        }
        self.sync();
    }

    fn lock_ports(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(PortId, String)>>> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_owners(&self) -> std::sync::MutexGuard<'_, HashMap<PortId, Owner>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ports attached in a VPC, with the instance behind each.
    fn ports_of_vpc(&self, vpc_id: &str) -> Vec<(PortId, String)> {
        let ports = self.lock_ports();
        ports
            .iter()
            .flat_map(|(instance, ps)| {
                ps.iter()
                    .filter(|(_, v)| v == vpc_id)
                    .map(|(p, _)| (*p, instance.clone()))
            })
            .collect()
    }

    fn fabric_loop(self: Arc<Self>, rx: Receiver<Cmd>, mut bridges: public::Bridges) {
        let mut fabric = Fabric::new();
        let mut deliver: HashMap<PortId, SyncSender<Vec<u8>>> = HashMap::new();
        let mut last_expire = Instant::now();
        loop {
            let now = Instant::now();
            let wait = [fabric.poll_delay(now), bridges.poll_delay(now)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(IDLE_WAKE)
                .min(IDLE_WAKE);
            let first = match rx.recv_timeout(wait) {
                Ok(cmd) => Some(cmd),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // Work through what queued up before looking at timers again.
            for cmd in first.into_iter().chain(rx.try_iter().take(256)) {
                let now = Instant::now();
                let out = self.handle_cmd(&mut fabric, &mut deliver, &mut bridges, cmd, now);
                send_out(&deliver, out);
            }
            let now = Instant::now();
            let out = bridges.pump(&mut fabric, now);
            send_out(&deliver, out);
            send_out(&deliver, fabric.poll(now));
            if now.duration_since(last_expire) >= EXPIRE_EVERY {
                fabric.expire(now);
                last_expire = now;
            }
        }
        tracing::info!("fabric thread stopped");
    }

    fn handle_cmd(
        &self,
        fabric: &mut Fabric,
        deliver: &mut HashMap<PortId, SyncSender<Vec<u8>>>,
        bridges: &mut public::Bridges,
        cmd: Cmd,
        now: Instant,
    ) -> Vec<(PortId, Vec<u8>)> {
        match cmd {
            Cmd::Frame(port, frame) => {
                let (up, out): (Vec<_>, Vec<_>) = fabric
                    .ingress(port, &frame, now)
                    .into_iter()
                    .partition(|(to, _)| *to == UPLINK);
                if let Some(vpc_id) = fabric.vpc_of(port) {
                    for (_, f) in up {
                        bridges.uplink_frame(vpc_id, &f, now);
                    }
                }
                out
            }
            Cmd::HostConnect {
                bridge,
                vpc_id,
                dst,
                to_host,
                credits,
            } => {
                bridges.connect(bridge, vpc_id, dst, to_host, credits, now);
                Vec::new()
            }
            Cmd::HostData { bridge, data } => {
                bridges.host_data(bridge, data);
                Vec::new()
            }
            Cmd::HostEof { bridge } => {
                bridges.host_eof(bridge);
                Vec::new()
            }
            Cmd::HostGone { bridge } => {
                bridges.host_gone(bridge);
                Vec::new()
            }
            Cmd::Attach {
                vpc_id,
                vpc,
                port,
                config,
                deliver: tx,
                reply,
            } => {
                let result = (|| {
                    if fabric.vpc(&vpc_id).is_none() {
                        fabric.add_vpc(&vpc_id, vpc)?;
                        self.install_services(fabric, &vpc_id);
                        bridges.add_vpc(&vpc_id);
                    }
                    fabric.add_port(&vpc_id, port, config)
                })();
                if result.is_ok() {
                    deliver.insert(port, tx);
                }
                let _ = reply.send(result);
                Vec::new()
            }
            Cmd::Detach(port) => {
                deliver.remove(&port);
                let vpc_id = fabric.vpc_of(port).map(str::to_string);
                fabric.remove_port(port);
                // An empty VPC costs nothing to rebuild; dropping it frees its services.
                if let Some(vpc_id) = vpc_id
                    && fabric
                        .vpc(&vpc_id)
                        .is_some_and(|v| v.port_ids().next().is_none())
                {
                    fabric.remove_vpc(&vpc_id);
                }
                Vec::new()
            }
            Cmd::Settings(settings) => {
                settings.apply(fabric);
                Vec::new()
            }
        }
    }

    /// The services a VPC hosts: IMDS.
    fn install_services(&self, fabric: &mut Fabric, vpc_id: &str) {
        let Some(store) = self.store.get().cloned() else {
            return;
        };
        let owners = Arc::clone(&self.owners);
        let lookup = move |port: PortId| {
            let owner = owners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&port)
                .cloned()?;
            match view::instance_view(&store, &owner) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(instance = %owner.instance_id, error = %e, "IMDS cannot read the instance");
                    None
                }
            }
        };
        if let Some(vpc) = fabric.vpc_mut(vpc_id) {
            // The host's connections to public addresses enter through the uplink.
            vpc.set_uplink(true);
            vpc.set_local_service(Box::new(ImdsService::new(
                Arc::clone(&self.imds),
                Box::new(lookup),
            )));
        }
    }

    fn sync_loop(self: Arc<Self>, mut listeners: public::Listeners) {
        let mut seen = 0u64;
        loop {
            {
                let mut generation = self.generation.lock().unwrap_or_else(|p| p.into_inner());
                while *generation == seen {
                    generation = self
                        .wake_sync
                        .wait(generation)
                        .unwrap_or_else(|p| p.into_inner());
                }
                seen = *generation;
            }
            if let Err(e) = self.sync_now() {
                tracing::warn!(error = %e, "re-reading the network settings failed");
            }
            match self.store.get().map(|s| public::wanted(s)) {
                Some(Ok(wanted)) => listeners.apply(wanted),
                Some(Err(e)) => tracing::warn!(error = %e, "reading public addresses failed"),
                None => {}
            }
        }
    }

    /// Re-reads the settings of every VPC that has ports.
    fn sync_now(&self) -> Result<(), DataPlaneError> {
        let (Some(cmd), Some(store)) = (self.cmd.get(), self.store.get()) else {
            return Err(DataPlaneError::NotRunning);
        };
        let mut vpcs: HashMap<String, Owner> = HashMap::new();
        {
            let owners = self.lock_owners();
            for (instance, ports) in self.lock_ports().iter() {
                for (port, vpc_id) in ports {
                    if let Some(owner) = owners.get(port) {
                        vpcs.entry(vpc_id.clone()).or_insert_with(|| Owner {
                            instance_id: instance.clone(),
                            ..owner.clone()
                        });
                    }
                }
            }
        }
        for (vpc_id, owner) in vpcs {
            let ports = self.ports_of_vpc(&vpc_id);
            let settings =
                records::vpc_settings(store, &owner.account, &owner.region, &vpc_id, &ports)?;
            cmd.send(Cmd::Settings(settings))
                .map_err(|_| DataPlaneError::NotRunning)?;
        }
        Ok(())
    }
}

fn send_out(deliver: &HashMap<PortId, SyncSender<Vec<u8>>>, out: Vec<(PortId, Vec<u8>)>) {
    for (port, frame) in out {
        if let Some(tx) = deliver.get(&port) {
            // A full queue is a guest that does not read: drop, as a NIC would.
            let _ = tx.try_send(frame);
        }
    }
}

/// Group rules as the fabric takes them.
pub(crate) type GroupRules = HashMap<String, Vec<SgRule>>;
