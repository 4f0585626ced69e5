//! Parsing of guest frames into the few facts the fabric acts on, and building of the frames the
//! fabric itself sends. Everything here takes guest-controlled bytes, so every access goes through
//! smoltcp's checked constructors or `get`: a malformed frame yields `None`, never a panic.

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
};

use super::MacAddr;

const IPV4_MIN_HEADER_LEN: usize = 20;
/// Room left for the IPv4 and UDP headers under the 65535-byte IPv4 total length.
const UDP_MAX_PAYLOAD: usize = 65535 - IPV4_MIN_HEADER_LEN - 8;
/// TTL of the packets the fabric originates (DHCP, DNS replies), as a Linux host would use.
const ORIGIN_TTL: u8 = 64;

pub const IP_PROTO_ICMP: u8 = 1;
pub const IP_PROTO_TCP: u8 = 6;
pub const IP_PROTO_UDP: u8 = 17;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

/// TCP flags the connection tracker cares about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

/// The transport-layer facts of an IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: TcpFlags,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    Icmp {
        ty: u8,
        code: u8,
        /// The identifier of an echo request or reply, which plays the role of a port.
        echo_ident: Option<u16>,
    },
    /// Another protocol, or a TCP/UDP/ICMP header too short to read.
    Other,
}

impl L4 {
    pub fn is_echo_request(&self) -> bool {
        matches!(
            self,
            L4::Icmp {
                ty: ICMP_ECHO_REQUEST,
                echo_ident: Some(_),
                ..
            }
        )
    }
}

/// An IPv4 packet inside an Ethernet frame, as far as the fabric needs to know it.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Info<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    /// Whether this is the first (or only) fragment, the one that carries the L4 header.
    pub first_fragment: bool,
    pub l4: L4,
    /// The IP payload, cut at the IP total length (frames may carry Ethernet padding).
    pub payload: &'a [u8],
}

/// Reads the IPv4 packet carried by an Ethernet payload.
pub fn parse_ipv4(eth_payload: &[u8]) -> Option<Ipv4Info<'_>> {
    let packet = Ipv4Packet::new_checked(eth_payload).ok()?;
    // smoltcp's length check accepts an IHL below 5, which is not a valid header.
    if packet.version() != 4 || usize::from(packet.header_len()) < IPV4_MIN_HEADER_LEN {
        return None;
    }
    let payload = packet.payload();
    let protocol = u8::from(packet.next_header());
    let first_fragment = packet.frag_offset() == 0;
    let l4 = if first_fragment {
        parse_l4(protocol, payload)
    } else {
        L4::Other
    };
    Some(Ipv4Info {
        src: packet.src_addr(),
        dst: packet.dst_addr(),
        protocol,
        ttl: packet.hop_limit(),
        first_fragment,
        l4,
        payload,
    })
}

fn parse_l4(protocol: u8, payload: &[u8]) -> L4 {
    match protocol {
        IP_PROTO_TCP => match TcpPacket::new_checked(payload) {
            Ok(tcp) => L4::Tcp {
                src_port: tcp.src_port(),
                dst_port: tcp.dst_port(),
                flags: TcpFlags {
                    syn: tcp.syn(),
                    ack: tcp.ack(),
                    fin: tcp.fin(),
                    rst: tcp.rst(),
                },
            },
            Err(_) => L4::Other,
        },
        IP_PROTO_UDP => match UdpPacket::new_checked(payload) {
            Ok(udp) => L4::Udp {
                src_port: udp.src_port(),
                dst_port: udp.dst_port(),
            },
            Err(_) => L4::Other,
        },
        IP_PROTO_ICMP => match (payload.first(), payload.get(1)) {
            (Some(&ty), Some(&code)) => {
                let echo_ident = match (ty, payload.get(4..6)) {
                    (ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY, Some(id)) => {
                        Some(u16::from_be_bytes([id[0], id[1]]))
                    }
                    _ => None,
                };
                L4::Icmp {
                    ty,
                    code,
                    echo_ident,
                }
            }
            _ => L4::Other,
        },
        _ => L4::Other,
    }
}

/// The UDP payload of an IPv4 packet's payload, bounded by the UDP length field.
pub fn udp_payload(ip_payload: &[u8]) -> Option<&[u8]> {
    UdpPacket::new_checked(ip_payload)
        .ok()
        .map(|udp| udp.payload())
}

/// Builds an Ethernet + IPv4 + UDP frame with correct checksums. `None` if the payload cannot fit
/// in one IPv4 packet (the fabric's own replies never come near that).
pub fn udp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Option<Vec<u8>> {
    if payload.len() > UDP_MAX_PAYLOAD {
        return None;
    }
    let caps = ChecksumCapabilities::default();
    let udp = UdpRepr { src_port, dst_port };
    let ip = Ipv4Repr {
        src_addr: src_ip,
        dst_addr: dst_ip,
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + payload.len(),
        hop_limit: ORIGIN_TTL,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + ip.payload_len];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let mut ip_packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut ip_packet, &caps);
    let mut udp_packet = UdpPacket::new_unchecked(ip_packet.payload_mut());
    udp.emit(
        &mut udp_packet,
        &IpAddress::Ipv4(src_ip),
        &IpAddress::Ipv4(dst_ip),
        payload.len(),
        |buf| buf.copy_from_slice(payload),
        &caps,
    );
    Some(buf)
}

/// A parsed ARP request from a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRequest {
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// Reads an Ethernet/IPv4 ARP request; replies and other hardware types yield `None`.
pub fn parse_arp_request(eth_payload: &[u8]) -> Option<ArpRequest> {
    let packet = ArpPacket::new_checked(eth_payload).ok()?;
    match ArpRepr::parse(&packet).ok()? {
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } => Some(ArpRequest {
            sender_mac: source_hardware_addr.0,
            sender_ip: source_protocol_addr,
            target_ip: target_protocol_addr,
        }),
        _ => None,
    }
}

/// Builds the ARP reply saying `answer_ip` is at `answer_mac`, addressed to the requester.
pub fn arp_reply(request: &ArpRequest, answer_ip: Ipv4Addr, answer_mac: MacAddr) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(answer_mac),
        source_protocol_addr: answer_ip,
        target_hardware_addr: EthernetAddress(request.sender_mac),
        target_protocol_addr: request.sender_ip,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(answer_mac),
        dst_addr: EthernetAddress(request.sender_mac),
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let mut packet = ArpPacket::new_unchecked(frame.payload_mut());
    arp.emit(&mut packet);
    buf
}

/// Copies a frame for forwarding through the virtual router: new MACs, TTL decremented and the
/// IPv4 header checksum recomputed. `None` when the TTL is exhausted or the frame is not IPv4.
pub fn route_frame(frame: &[u8], src_mac: MacAddr, dst_mac: MacAddr) -> Option<Vec<u8>> {
    let mut out = frame.to_vec();
    let mut eth = EthernetFrame::new_checked(&mut out[..]).ok()?;
    eth.set_src_addr(EthernetAddress(src_mac));
    eth.set_dst_addr(EthernetAddress(dst_mac));
    let mut ip = Ipv4Packet::new_checked(eth.payload_mut()).ok()?;
    if usize::from(ip.header_len()) < IPV4_MIN_HEADER_LEN {
        return None;
    }
    let ttl = ip.hop_limit();
    if ttl <= 1 {
        return None;
    }
    ip.set_hop_limit(ttl - 1);
    ip.fill_checksum();
    Some(out)
}
