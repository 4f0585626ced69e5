//! The DHCP server of a subnet. It is stateless: every port has exactly one address, fixed by the
//! control plane, so a lease is a pure function of the port the request arrived on. Nothing the
//! client writes (chaddr, client id, requested address) can make it hand out another address.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use smoltcp::wire::{DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr, EthernetAddress};

use super::{MacAddr, private_hostname};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

// Option codes smoltcp's `DhcpRepr` has no field for.
const OPT_HOST_NAME: u8 = 12;
const OPT_DOMAIN_NAME: u8 = 15;
const OPT_INTERFACE_MTU: u8 = 26;
const OPT_BROADCAST_ADDRESS: u8 = 28;
const OPT_RENEWAL_TIME: u8 = 58;
const OPT_REBINDING_TIME: u8 = 59;

/// BOOTP's minimum message size; some clients drop shorter replies.
const BOOTP_MIN_LEN: usize = 300;

/// What the server knows about the port a request came in on.
#[derive(Clone, Debug)]
pub struct Lease<'a> {
    pub ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    /// The subnet's `.1`, which is also the server identifier, as on EC2.
    pub router: Ipv4Addr,
    pub dns: Ipv4Addr,
    pub domain_name: &'a str,
    pub lease_secs: u32,
    pub mtu: u16,
}

/// How the reply must be addressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub message_type: DhcpMessageType,
    /// The DHCP message (UDP payload).
    pub payload: Vec<u8>,
    /// Whether to send to 255.255.255.255 / ff:ff:ff:ff:ff:ff rather than to the client.
    pub broadcast: bool,
    /// The unicast IP destination when `broadcast` is false.
    pub dst_ip: Ipv4Addr,
}

/// Answers one DHCP message from a client. `None` for messages that need no answer (RELEASE,
/// DECLINE, a REQUEST meant for another server) and for anything unparseable.
pub fn handle(lease: &Lease<'_>, message: &[u8]) -> Option<Reply> {
    let packet = DhcpPacket::new_checked(message).ok()?;
    let request = DhcpRepr::parse(&packet).ok()?;
    let unspecified = Ipv4Addr::UNSPECIFIED;
    match request.message_type {
        DhcpMessageType::Discover => {
            let payload = emit(lease, &request, DhcpMessageType::Offer, lease.ip, true)?;
            Some(Reply {
                message_type: DhcpMessageType::Offer,
                payload,
                broadcast: request.broadcast,
                dst_ip: lease.ip,
            })
        }
        DhcpMessageType::Request => {
            if let Some(server) = request.server_identifier {
                // SELECTING a different server's offer: stay quiet, as RFC 2131 4.3.2 says.
                if server != lease.router {
                    return None;
                }
            }
            let wanted = request.requested_ip.unwrap_or(request.client_ip);
            if wanted != lease.ip
                || (request.client_ip != unspecified && request.client_ip != lease.ip)
            {
                let payload = emit(lease, &request, DhcpMessageType::Nak, unspecified, false)?;
                return Some(Reply {
                    message_type: DhcpMessageType::Nak,
                    payload,
                    broadcast: true,
                    dst_ip: Ipv4Addr::BROADCAST,
                });
            }
            let payload = emit(lease, &request, DhcpMessageType::Ack, lease.ip, true)?;
            // A renewing client (ciaddr set) can receive unicast; one still in INIT-REBOOT may not.
            let renewing = request.client_ip != unspecified;
            Some(Reply {
                message_type: DhcpMessageType::Ack,
                payload,
                broadcast: request.broadcast && !renewing,
                dst_ip: lease.ip,
            })
        }
        DhcpMessageType::Inform => {
            // INFORM: the client has its address and only wants the parameters, so no yiaddr and
            // no lease time (RFC 2131 3.4).
            let payload = emit(lease, &request, DhcpMessageType::Ack, unspecified, false)?;
            Some(Reply {
                message_type: DhcpMessageType::Ack,
                payload,
                broadcast: false,
                dst_ip: lease.ip,
            })
        }
        // The address belongs to the port for the ENI's whole life, so there is nothing to free.
        _ => None,
    }
}

fn emit(
    lease: &Lease<'_>,
    request: &DhcpRepr<'_>,
    message_type: DhcpMessageType,
    your_ip: Ipv4Addr,
    with_lease_time: bool,
) -> Option<Vec<u8>> {
    let nak = message_type == DhcpMessageType::Nak;
    let hostname = private_hostname(lease.ip);
    let mtu = lease.mtu.to_be_bytes();
    let broadcast = lease.subnet.broadcast().octets();
    let t1 = (lease.lease_secs / 2).to_be_bytes();
    let t2 = (lease.lease_secs / 8 * 7).to_be_bytes();
    let mut extra = Vec::new();
    if !nak {
        extra.push(DhcpOption {
            kind: OPT_HOST_NAME,
            data: hostname.as_bytes(),
        });
        if !lease.domain_name.is_empty() && lease.domain_name.len() <= usize::from(u8::MAX) {
            extra.push(DhcpOption {
                kind: OPT_DOMAIN_NAME,
                data: lease.domain_name.as_bytes(),
            });
        }
        extra.push(DhcpOption {
            kind: OPT_INTERFACE_MTU,
            data: &mtu,
        });
        extra.push(DhcpOption {
            kind: OPT_BROADCAST_ADDRESS,
            data: &broadcast,
        });
        if with_lease_time {
            extra.push(DhcpOption {
                kind: OPT_RENEWAL_TIME,
                data: &t1,
            });
            extra.push(DhcpOption {
                kind: OPT_REBINDING_TIME,
                data: &t2,
            });
        }
    }
    let mut reply = DhcpRepr {
        message_type,
        transaction_id: request.transaction_id,
        secs: 0,
        client_hardware_address: request.client_hardware_address,
        client_ip: if message_type == DhcpMessageType::Ack && your_ip.is_unspecified() {
            request.client_ip
        } else {
            Ipv4Addr::UNSPECIFIED
        },
        your_ip,
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: (!nak).then_some(lease.router),
        subnet_mask: (!nak).then_some(lease.subnet.netmask()),
        relay_agent_ip: request.relay_agent_ip,
        broadcast: request.broadcast,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(lease.router),
        parameter_request_list: None,
        // Filled below: smoltcp keeps the list in a heapless vector whose type is not re-exported.
        dns_servers: (!nak).then(Default::default),
        max_size: None,
        lease_duration: (with_lease_time && !nak).then_some(lease.lease_secs),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &extra,
    };
    if let Some(servers) = reply.dns_servers.as_mut() {
        servers.push(lease.dns).ok()?;
    }
    let mut buf = vec![0u8; reply.buffer_len().max(BOOTP_MIN_LEN)];
    let mut packet = DhcpPacket::new_unchecked(&mut buf[..]);
    reply.emit(&mut packet).ok()?;
    Some(buf)
}

/// The Ethernet destination of a reply: broadcast when asked, else the port's own MAC (the frame
/// is delivered on that port whatever chaddr said).
pub fn reply_dst_mac(reply: &Reply, port_mac: MacAddr) -> MacAddr {
    if reply.broadcast {
        EthernetAddress::BROADCAST.0
    } else {
        port_mac
    }
}
