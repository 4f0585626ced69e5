//! A minimal authoritative DNS responder for the VPC's private names (the part of
//! AmazonProvidedDNS that needs no upstream): `ip-a-b-c-d.<domain>` A records and their PTRs.
//!
//! Queries come straight from guests, so the parser reads only through bounds-checked accessors
//! and rejects anything it does not need to understand (compression in the question, several
//! questions, responses).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub const PORT: u16 = 53;

const HEADER_LEN: usize = 12;
/// RFC 1035 2.3.4: a name is at most 255 octets on the wire, a label at most 63.
const MAX_NAME_LEN: usize = 255;
const MAX_LABEL_LEN: usize = 63;
/// The TTL of the synthesised records; the names are fixed for an address's life, but a short TTL
/// keeps hostname toggles visible quickly.
const ANSWER_TTL: u32 = 60;

pub const TYPE_A: u16 = 1;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_RD: u16 = 0x0100;
/// AmazonProvidedDNS is a recursive resolver, and clients such as systemd-resolved degrade when a
/// server does not claim recursion, so replies say RA even while names outside the VPC's domain
/// are refused.
const FLAG_RA: u16 = 0x0080;

/// Response codes used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// Why a message was not a query this responder will answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message shorter than a DNS header")]
    Truncated,
    #[error("message is a response")]
    NotAQuery,
    #[error("malformed question section")]
    BadQuestion,
}

/// A parsed query with exactly one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query<'a> {
    pub id: u16,
    pub opcode: u8,
    pub recursion_desired: bool,
    /// The question's labels, as sent (case preserved).
    pub labels: Vec<&'a [u8]>,
    pub qtype: u16,
    pub qclass: u16,
    /// The question section exactly as received, echoed in the response.
    pub question: &'a [u8],
}

fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Parses the header. Returns the id and flags even when the question is bad, so that a FORMERR
/// can still be addressed.
fn parse_header(msg: &[u8]) -> Result<(u16, u16, u16), ParseError> {
    let id = be16(msg, 0).ok_or(ParseError::Truncated)?;
    let flags = be16(msg, 2).ok_or(ParseError::Truncated)?;
    let qdcount = be16(msg, 4).ok_or(ParseError::Truncated)?;
    if msg.len() < HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    if flags & FLAG_QR != 0 {
        return Err(ParseError::NotAQuery);
    }
    Ok((id, flags, qdcount))
}

/// Parses a query. Anything but a single uncompressed question is a `BadQuestion`.
pub fn parse_query(msg: &[u8]) -> Result<Query<'_>, ParseError> {
    let (id, flags, qdcount) = parse_header(msg)?;
    if qdcount != 1 {
        return Err(ParseError::BadQuestion);
    }
    let mut labels = Vec::new();
    let mut at = HEADER_LEN;
    let mut name_len = 0usize;
    loop {
        let len = usize::from(*msg.get(at).ok_or(ParseError::BadQuestion)?);
        name_len += len + 1;
        if name_len > MAX_NAME_LEN {
            return Err(ParseError::BadQuestion);
        }
        if len == 0 {
            at += 1;
            break;
        }
        // Compression pointers (and the reserved 0x40/0x80 label types) have no place in a
        // question we answer.
        if len > MAX_LABEL_LEN {
            return Err(ParseError::BadQuestion);
        }
        let label = msg
            .get(at + 1..at + 1 + len)
            .ok_or(ParseError::BadQuestion)?;
        labels.push(label);
        at += 1 + len;
    }
    let qtype = be16(msg, at).ok_or(ParseError::BadQuestion)?;
    let qclass = be16(msg, at + 2).ok_or(ParseError::BadQuestion)?;
    let question = msg.get(HEADER_LEN..at + 4).ok_or(ParseError::BadQuestion)?;
    Ok(Query {
        id,
        opcode: ((flags >> 11) & 0x0f) as u8,
        recursion_desired: flags & FLAG_RD != 0,
        labels,
        qtype,
        qclass,
        question,
    })
}

/// The VPC facts the responder answers from.
#[derive(Clone, Debug)]
pub struct Zone<'a> {
    /// The private domain (`ec2.internal`, `<region>.compute.internal`).
    pub domain: &'a str,
    pub vpc_cidr: Ipv4Net,
    /// `enableDnsSupport`: when off the server does not answer at all.
    pub dns_support: bool,
    /// `enableDnsHostnames`: AWS resolves the Amazon-provided private hostnames only when both
    /// attributes are true, so with it off those names are NXDOMAIN.
    pub dns_hostnames: bool,
}

/// A record to put in the answer section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    A(Ipv4Addr),
    /// A PTR target, as a dotted name without the trailing dot.
    Ptr(String),
}

/// What the responder decided for a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub rcode: Rcode,
    pub authoritative: bool,
    pub answer: Option<Answer>,
}

fn eq_labels(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Whether `labels` end with the labels of `suffix` (a dotted name), case-insensitively. Labels
/// are compared one by one so a label containing a dot cannot impersonate two labels.
fn ends_with(labels: &[&[u8]], suffix: &str) -> Option<usize> {
    let suffix: Vec<&str> = suffix.split('.').filter(|l| !l.is_empty()).collect();
    if suffix.len() > labels.len() {
        return None;
    }
    let prefix = labels.len() - suffix.len();
    labels[prefix..]
        .iter()
        .zip(&suffix)
        .all(|(l, s)| eq_labels(l, s))
        .then_some(prefix)
}

/// A decimal octet in canonical form (no sign, no leading zero).
fn octet(text: &[u8]) -> Option<u8> {
    if text.is_empty() || text.len() > 3 || (text.len() > 1 && text[0] == b'0') {
        return None;
    }
    if !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Reads `ip-a-b-c-d` (case-insensitive prefix).
fn parse_ip_label(label: &[u8]) -> Option<Ipv4Addr> {
    if !label.get(..3)?.eq_ignore_ascii_case(b"ip-") {
        return None;
    }
    let parts: Vec<&[u8]> = label.get(3..)?.split(|&b| b == b'-').collect();
    match parts.as_slice() {
        [a, b, c, d] => Some(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?)),
        _ => None,
    }
}

/// Decides the answer to a query. `None` means send nothing (DNS support disabled).
pub fn resolve(zone: &Zone<'_>, query: &Query<'_>) -> Option<Resolution> {
    if !zone.dns_support {
        return None;
    }
    let refused = Resolution {
        rcode: Rcode::Refused,
        authoritative: false,
        answer: None,
    };
    if query.opcode != 0 {
        return Some(Resolution {
            rcode: Rcode::NotImp,
            authoritative: false,
            answer: None,
        });
    }
    if query.qclass != CLASS_IN && query.qclass != CLASS_ANY {
        return Some(refused);
    }
    let nxdomain = Resolution {
        rcode: Rcode::NxDomain,
        authoritative: true,
        answer: None,
    };
    let nodata = Resolution {
        rcode: Rcode::NoError,
        authoritative: true,
        answer: None,
    };

    // Forward names: the VPC's private domain.
    if let Some(prefix) = ends_with(&query.labels, zone.domain) {
        let host = match (prefix, query.labels.first()) {
            (0, _) => return Some(nodata), // the domain apex exists but holds no A record
            (1, Some(label)) => parse_ip_label(label),
            _ => None,
        };
        let Some(ip) = host.filter(|ip| zone.vpc_cidr.contains(ip)) else {
            return Some(nxdomain);
        };
        if !zone.dns_hostnames {
            return Some(nxdomain);
        }
        return Some(match query.qtype {
            TYPE_A | TYPE_ANY => Resolution {
                rcode: Rcode::NoError,
                authoritative: true,
                answer: Some(Answer::A(ip)),
            },
            _ => nodata,
        });
    }

    // Reverse names: d.c.b.a.in-addr.arpa for addresses of the VPC.
    if let Some(4) = ends_with(&query.labels, "in-addr.arpa") {
        let octets: Option<Vec<u8>> = query.labels[..4].iter().map(|l| octet(l)).collect();
        if let Some(&[d, c, b, a]) = octets.as_deref() {
            let ip = Ipv4Addr::new(a, b, c, d);
            if zone.vpc_cidr.contains(&ip) {
                if !zone.dns_hostnames {
                    return Some(nxdomain);
                }
                let target = format!("{}.{}", super::private_hostname(ip), zone.domain);
                return Some(match query.qtype {
                    TYPE_PTR | TYPE_ANY => Resolution {
                        rcode: Rcode::NoError,
                        authoritative: true,
                        answer: Some(Answer::Ptr(target)),
                    },
                    _ => nodata,
                });
            }
        }
    }
    // No upstream resolution yet: everything else is refused rather than guessed.
    Some(refused)
}

/// Encodes a dotted name in wire format. `None` if a label or the whole name is too long.
pub fn encode_name(name: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        if label.len() > MAX_LABEL_LEN {
            return None;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    (out.len() <= MAX_NAME_LEN).then_some(out)
}

/// Builds the response message for a query and its resolution.
pub fn encode_response(query: &Query<'_>, resolution: &Resolution) -> Option<Vec<u8>> {
    let mut flags = FLAG_QR | (u16::from(query.opcode & 0x0f) << 11) | FLAG_RA;
    if query.recursion_desired {
        flags |= FLAG_RD;
    }
    if resolution.authoritative {
        flags |= FLAG_AA;
    }
    flags |= resolution.rcode as u16;
    let rdata = match &resolution.answer {
        None => None,
        Some(Answer::A(ip)) => Some((TYPE_A, ip.octets().to_vec())),
        Some(Answer::Ptr(target)) => Some((TYPE_PTR, encode_name(target)?)),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + query.question.len() + 32);
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&u16::from(rdata.is_some()).to_be_bytes()); // ANCOUNT
    out.extend_from_slice(&0u16.to_be_bytes()); // NSCOUNT
    out.extend_from_slice(&0u16.to_be_bytes()); // ARCOUNT
    out.extend_from_slice(query.question);
    if let Some((rtype, data)) = rdata {
        // The owner name is a pointer to the question's name, which starts right after the header.
        out.extend_from_slice(&(0xc000u16 | HEADER_LEN as u16).to_be_bytes());
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ANSWER_TTL.to_be_bytes());
        out.extend_from_slice(&u16::try_from(data.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}

/// Answers one DNS message (a UDP payload). `None` means no reply at all: DNS support off, a
/// response rather than a query, or a message too broken to address a reply to.
pub fn respond(zone: &Zone<'_>, msg: &[u8]) -> Option<Vec<u8>> {
    if !zone.dns_support {
        return None;
    }
    match parse_query(msg) {
        Ok(query) => encode_response(&query, &resolve(zone, &query)?),
        Err(ParseError::BadQuestion) => {
            // The header is sound, so the client can be told its question was malformed.
            let (id, flags, _) = parse_header(msg).ok()?;
            let mut out = Vec::with_capacity(HEADER_LEN);
            out.extend_from_slice(&id.to_be_bytes());
            let reply_flags =
                FLAG_QR | (flags & (0x7800 | FLAG_RD)) | FLAG_RA | Rcode::FormErr as u16;
            out.extend_from_slice(&reply_flags.to_be_bytes());
            out.extend_from_slice(&[0; 8]);
            Some(out)
        }
        Err(_) => None,
    }
}
