//! The per-VPC virtual network fabric, at packet level.
//!
//! Every ENI is a port on a [`Vpc`] switch. Frames go in through [`Vpc::ingress`] (or
//! [`Fabric::ingress`], which finds the port's VPC) and the frames to deliver come back as
//! `(PortId, frame)` pairs. The code is synchronous and knows nothing of tap devices or virtio
//! queues, so that every behaviour can be tested on crafted frames; the transports feed it later.
//!
//! What a VPC provides (see DESIGN.md, "Network fabric"):
//! - ARP answered by the fabric itself: each subnet's `.1`, the DNS address and the link-local
//!   service addresses resolve to [`ROUTER_MAC`]; other ENIs of the same subnet resolve to their
//!   own MAC (proxy ARP, so guests never see each other's ARP and cannot poison it);
//! - L2 switching inside a subnet and routing between the subnets of one VPC, never across VPCs
//!   (each [`Vpc`] is a separate value with its own ports);
//! - DHCP ([`dhcp`]), handing each port its fixed private IP, chosen by the port the request
//!   arrived on and never by what the client claims;
//! - DNS at VPC base + 2 and 169.254.169.253 ([`dns`]) for the `ip-a-b-c-d` names;
//! - security groups with connection tracking ([`sg`]);
//! - a [`LocalService`] seam for IMDS at 169.254.169.254:80, filled by [`ImdsService`];
//! - ec2d's own EC2 API at [`API_ADDR`]:[`API_PORT`] (169.254.169.250:80, plain HTTP), so
//!   instances can call it with their instance-profile credentials. Its TCP frames go to the
//!   VPC's uplink, where the VPC's [`Gateway`] terminates them ([`Gateway::accept`]); like the
//!   other link-local services it is not subject to security groups, but the source must be the
//!   port's own address, and it is only there while the uplink is attached;
//! - an uplink ([`UPLINK`]) for addresses outside the VPC, through which the host reaches
//!   instances from [`HOST_ADDR`] via a per-VPC [`Gateway`], filtered like any other traffic.

pub mod dhcp;
pub mod dns;
pub mod frame;
pub mod gateway;
pub mod imds_service;
pub mod sg;
mod vpc;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod uplink_tests;

#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;

pub use gateway::{ConnId, Gateway, GatewayError, HOST_ADDR, RecvState};
pub use imds_service::ImdsService;
pub use sg::{ConntrackConfig, SgPeer, SgProtocol, SgRule};
pub use vpc::{Fabric, LocalService, PortConfig, UPLINK, UPLINK_MAC, Vpc, VpcConfig};

/// Identifies a port (one per ENI) across the whole fabric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u64);

impl std::fmt::Display for PortId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "port-{}", self.0)
    }
}

/// An Ethernet MAC address.
pub type MacAddr = [u8; 6];

/// The MAC of the virtual router: every subnet gateway, the DNS server and the link-local services
/// answer ARP with it. Locally administered and unicast, so it cannot clash with a vendor MAC.
pub const ROUTER_MAC: MacAddr = [0x0e, 0xec, 0x2d, 0x00, 0x00, 0x01];

/// The instance metadata service address.
pub const IMDS_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The link-local alias of the Amazon-provided DNS server (the Route 53 Resolver address).
pub const LINK_LOCAL_DNS_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 253);

/// Where instances reach ec2d's own EC2 API (plain HTTP on [`API_PORT`]). Next to IMDS (.254)
/// and DNS (.253), so that the fabric's services sit together and a guest reaches them all the
/// same way (ARP answered with [`ROUTER_MAC`], or through its default route). AWS uses no
/// service at this address that we know of (its others are the Time Sync service at
/// 169.254.169.123, DNS at .253 and IMDS at .254). Link-local, so no router forwards it and it
/// can never clash with a VPC CIDR or another ENI's address.
pub const API_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 250);

/// The TCP port of the API at [`API_ADDR`]: 80, as for IMDS, since it is plain HTTP. Any other
/// port there is refused with a reset.
pub const API_PORT: u16 = 80;

/// The MTU EC2 advertises inside a VPC (jumbo frames), sent as DHCP option 26.
pub const VPC_MTU: u16 = 9001;

/// The DHCP lease time EC2 hands out, in seconds.
pub const LEASE_SECS: u32 = 3600;

/// The DHCP domain name EC2 uses by default in `region`: `ec2.internal` in us-east-1 (a historical
/// exception) and `<region>.compute.internal` everywhere else.
pub fn default_domain_name(region: &str) -> String {
    if region == "us-east-1" {
        "ec2.internal".to_string()
    } else {
        format!("{region}.compute.internal")
    }
}

/// The EC2 private hostname of an address: `ip-a-b-c-d`.
pub fn private_hostname(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("ip-{a}-{b}-{c}-{d}")
}

/// Errors from configuring the fabric. Packet handling never fails: bad frames are dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FabricError {
    #[error("port {0} already exists")]
    DuplicatePort(PortId),
    #[error("port {0} does not exist")]
    UnknownPort(PortId),
    #[error("VPC {0} already exists")]
    DuplicateVpc(String),
    #[error("VPC {0} does not exist")]
    UnknownVpc(String),
    #[error("MAC address {0:02x?} is already used by another port")]
    DuplicateMac(MacAddr),
    #[error("MAC address {0:02x?} is not a usable unicast address")]
    InvalidMac(MacAddr),
    #[error("IP address {0} is already used by another port")]
    DuplicateIp(Ipv4Addr),
    #[error("IP address {ip} is not a host address of subnet {subnet}")]
    IpOutsideSubnet {
        ip: Ipv4Addr,
        subnet: ipnet::Ipv4Net,
    },
    #[error("subnet {subnet} is not inside VPC CIDR {vpc}")]
    SubnetOutsideVpc {
        subnet: ipnet::Ipv4Net,
        vpc: ipnet::Ipv4Net,
    },
    #[error("invalid domain name {0:?}")]
    InvalidDomainName(String),
}
