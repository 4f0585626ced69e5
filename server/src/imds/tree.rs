//! The metadata path tree of one instance, and path lookup in it.
//!
//! Listings are derived from the same tree that lookups walk, so a listing can never name a path
//! that does not resolve: cloud-init's crawl fails the whole datasource on a single bad entry.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{Credentials, InstanceView, Switch};

/// Dated API versions EC2 lists at `/`, oldest first; each serves the same tree as `latest`.
pub(crate) const VERSIONS: &[&str] = &[
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "2011-01-01",
    "2011-05-01",
    "2012-01-12",
    "2014-02-25",
    "2014-11-05",
    "2015-10-20",
    "2016-04-19",
    "2016-06-30",
    "2016-09-02",
    "2018-03-28",
    "2018-08-17",
    "2018-09-24",
    "2019-10-01",
    "2020-10-27",
    "2021-01-03",
    "2021-03-23",
    "2021-07-15",
    "2022-09-24",
];

enum Node {
    Dir(Vec<Entry>),
    Leaf(Vec<u8>),
}

struct Entry {
    name: String,
    /// What the parent's listing shows instead of `name` (`public-keys/` lists `0=keyname`).
    listed_as: Option<String>,
    node: Node,
}

impl Node {
    /// A directory listed in name order, as EC2 lists. Duplicate names keep the first, so a
    /// listing never shows a name twice.
    fn dir(mut entries: Vec<Entry>) -> Node {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.dedup_by(|later, first| later.name == first.name);
        Node::Dir(entries)
    }

    /// The listing: one entry a line, subdirectories with a trailing `/`, no final newline.
    fn listing(entries: &[Entry]) -> Vec<u8> {
        entries
            .iter()
            .map(|e| match (&e.listed_as, &e.node) {
                (Some(label), _) => label.clone(),
                (None, Node::Dir(_)) => format!("{}/", e.name),
                (None, Node::Leaf(_)) => e.name.clone(),
            })
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    }
}

fn leaf(name: &str, body: impl Into<Vec<u8>>) -> Entry {
    Entry {
        name: name.to_string(),
        listed_as: None,
        node: Node::Leaf(body.into()),
    }
}

fn dir(name: &str, entries: Vec<Entry>) -> Entry {
    Entry {
        name: name.to_string(),
        listed_as: None,
        node: Node::dir(entries),
    }
}

/// The body served at `path` (query already stripped), or `None` for 404.
pub(super) fn lookup(view: &InstanceView, path: &str) -> Option<Vec<u8>> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        let mut versions: Vec<&str> = VERSIONS.to_vec();
        versions.push("latest");
        return Some(versions.join("\n").into_bytes());
    }
    let (version, rest) = rest.split_once('/').unwrap_or((rest, ""));
    if version != "latest" && !VERSIONS.contains(&version) {
        return None;
    }
    resolve(&version_tree(view), rest)
}

/// Walk `rest` (`a/b`, `a/b/` or empty) from `node`. A directory is served with or without its
/// trailing slash, as EC2 does; a leaf with a trailing slash is not a path EC2 serves.
fn resolve(mut node: &Node, rest: &str) -> Option<Vec<u8>> {
    let (rest, trailing_slash) = match rest.strip_suffix('/') {
        Some(r) => (r, true),
        None => (rest, false),
    };
    if !rest.is_empty() {
        // An empty segment (`a//b`) matches no entry, so it is a 404 like any unknown name.
        for raw in rest.split('/') {
            let name = percent_decode(raw)?;
            let Node::Dir(entries) = node else {
                return None;
            };
            node = &entries.iter().find(|e| e.name == name)?.node;
        }
    }
    match node {
        Node::Dir(entries) => Some(Node::listing(entries)),
        Node::Leaf(_) if trailing_slash => None,
        Node::Leaf(body) => Some(body.clone()),
    }
}

/// `%XX` decoding of one path segment, so a client that escapes `:` or `@` in a tag key still
/// finds it. Malformed escapes, or bytes that are not UTF-8, are a 404.
fn percent_decode(segment: &str) -> Option<String> {
    if !segment.contains('%') {
        return Some(segment.to_string());
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether a caller-supplied name can be one path segment and one listing line.
fn valid_segment(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// EC2 refuses to expose tags in metadata unless keys use only these characters; other keys are
/// left out rather than listed under a name a client would have to escape.
fn valid_tag_key(key: &str) -> bool {
    valid_segment(key)
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || "+-=._:@,".contains(c))
}

fn version_tree(v: &InstanceView) -> Node {
    let mut entries = vec![dir("dynamic", dynamic(v)), dir("meta-data", meta_data(v))];
    if let Some(data) = v.user_data.as_ref().filter(|d| !d.is_empty()) {
        entries.push(leaf("user-data", data.clone()));
    }
    Node::dir(entries)
}

fn meta_data(v: &InstanceView) -> Vec<Entry> {
    let mut e = vec![
        leaf("ami-id", v.ami_id.as_str()),
        leaf("ami-launch-index", v.ami_launch_index.to_string()),
        leaf("ami-manifest-path", "(unknown)"),
        dir("events", events(v)),
        leaf("hostname", v.private_dns.as_str()),
        leaf("instance-action", "none"),
        leaf("instance-id", v.instance_id.as_str()),
        leaf("instance-life-cycle", "on-demand"),
        leaf("instance-type", v.instance_type.as_str()),
        leaf("local-hostname", v.private_dns.as_str()),
        leaf("local-ipv4", v.private_ip.as_str()),
        leaf("mac", v.mac.as_str()),
        dir(
            "metrics",
            vec![leaf(
                "vhostmd",
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            )],
        ),
        dir(
            "network",
            vec![dir("interfaces", vec![dir("macs", macs(v))])],
        ),
        dir(
            "placement",
            vec![
                leaf("availability-zone", v.availability_zone.as_str()),
                leaf("availability-zone-id", v.availability_zone_id.as_str()),
                leaf("region", v.region.as_str()),
            ],
        ),
        leaf("profile", "default-hvm"),
        leaf("reservation-id", v.reservation_id.as_str()),
        leaf(
            "security-groups",
            lines(v.security_groups.iter().map(|g| &g.1)),
        ),
        dir("services", services(&v.region)),
    ];
    let devices: Vec<Entry> = v
        .block_devices
        .iter()
        .filter(|(name, _)| valid_segment(name))
        .map(|(name, device)| leaf(name, device.as_str()))
        .collect();
    if !devices.is_empty() {
        e.push(dir("block-device-mapping", devices));
    }
    if let Some(dns) = &v.public_dns {
        e.push(leaf("public-hostname", dns.as_str()));
    }
    if let Some(ip) = &v.public_ip {
        e.push(leaf("public-ipv4", ip.as_str()));
    }
    let keys = public_keys(v);
    if !keys.is_empty() {
        // Index order, not name order: `10=` must follow `9=`.
        e.push(Entry {
            name: "public-keys".to_string(),
            listed_as: None,
            node: Node::Dir(keys),
        });
    }
    if let Some(iam) = &v.iam
        && valid_segment(&iam.role_name)
    {
        let info = aws_json(&[
            ("Code", "Success".into()),
            ("LastUpdated", ts(iam.credentials.last_updated).into()),
            ("InstanceProfileArn", iam.profile_arn.as_str().into()),
            ("InstanceProfileId", iam.profile_id.as_str().into()),
        ]);
        e.push(dir(
            "iam",
            vec![
                leaf("info", info),
                dir(
                    "security-credentials",
                    vec![leaf(&iam.role_name, credentials_json(&iam.credentials))],
                ),
            ],
        ));
    }
    if let Some(creds) = &v.identity_credentials {
        let info = aws_json(&[
            ("Code", "Success".into()),
            ("LastUpdated", ts(creds.last_updated).into()),
            ("AccountId", v.account_id.as_str().into()),
        ]);
        e.push(dir(
            "identity-credentials",
            vec![dir(
                "ec2",
                vec![
                    leaf("info", info),
                    dir(
                        "security-credentials",
                        vec![leaf("ec2-instance", credentials_json(creds))],
                    ),
                ],
            )],
        ));
    }
    if let Some(spot) = &v.spot_action {
        let action = format!(
            "{{\"action\": \"{}\", \"time\": \"{}\"}}",
            spot.action.as_str(),
            ts(spot.time)
        );
        e.push(dir(
            "spot",
            vec![
                leaf("instance-action", action),
                leaf("termination-time", ts(spot.time)),
            ],
        ));
    }
    if v.options.instance_metadata_tags == Switch::Enabled {
        let tags = v
            .tags
            .iter()
            .filter(|(k, _)| valid_tag_key(k))
            .map(|(k, val)| leaf(k, val.as_str()))
            .collect();
        e.push(dir("tags", vec![dir("instance", tags)]));
    }
    e
}

fn events(v: &InstanceView) -> Vec<Entry> {
    let mut e = vec![dir(
        "maintenance",
        vec![leaf("history", "[]"), leaf("scheduled", "[]")],
    )];
    if let Some(at) = v.rebalance_notice {
        let notice = format!("{{\"noticeTime\": \"{}\"}}", ts(at));
        e.push(dir("recommendations", vec![leaf("rebalance", notice)]));
    }
    e
}

fn macs(v: &InstanceView) -> Vec<Entry> {
    if !valid_segment(&v.mac) {
        return Vec::new();
    }
    let mut e = vec![
        leaf("device-number", "0"),
        leaf("interface-id", v.interface_id.as_str()),
        leaf("local-hostname", v.private_dns.as_str()),
        leaf("local-ipv4s", v.private_ip.as_str()),
        leaf("mac", v.mac.as_str()),
        leaf("owner-id", v.account_id.as_str()),
        leaf(
            "security-group-ids",
            lines(v.security_groups.iter().map(|g| &g.0)),
        ),
        leaf(
            "security-groups",
            lines(v.security_groups.iter().map(|g| &g.1)),
        ),
        leaf("subnet-id", v.subnet_id.as_str()),
        leaf("subnet-ipv4-cidr-block", v.subnet_cidr.as_str()),
        leaf("vpc-id", v.vpc_id.as_str()),
    ];
    if let Some(first) = v.vpc_cidrs.first() {
        e.push(leaf("vpc-ipv4-cidr-block", first.as_str()));
        e.push(leaf("vpc-ipv4-cidr-blocks", lines(v.vpc_cidrs.iter())));
    }
    if let Some(dns) = &v.public_dns {
        e.push(leaf("public-hostname", dns.as_str()));
    }
    if let Some(ip) = v.public_ip.as_ref().filter(|ip| valid_segment(ip)) {
        e.push(leaf("public-ipv4s", ip.as_str()));
        e.push(dir(
            "ipv4-associations",
            vec![leaf(ip, v.private_ip.as_str())],
        ));
    }
    vec![dir(&v.mac, e)]
}

fn public_keys(v: &InstanceView) -> Vec<Entry> {
    v.public_keys
        .iter()
        .filter(|(name, _)| !name.chars().any(char::is_control))
        .enumerate()
        .map(|(i, (name, key))| Entry {
            name: i.to_string(),
            listed_as: Some(format!("{i}={name}")),
            node: Node::dir(vec![leaf("openssh-key", key.as_str())]),
        })
        .collect()
}

fn services(region: &str) -> Vec<Entry> {
    let (partition, domain) = if region.starts_with("cn-") {
        ("aws-cn", "amazonaws.com.cn")
    } else if region.starts_with("us-gov-") {
        ("aws-us-gov", "amazonaws.com")
    } else {
        ("aws", "amazonaws.com")
    };
    vec![leaf("domain", domain), leaf("partition", partition)]
}

fn dynamic(v: &InstanceView) -> Vec<Entry> {
    let document = identity_document(v);
    // ec2d holds no AWS signing key, so these are stand-ins of the right shape: base64 of a digest
    // of the document. They are NOT verifiable signatures; a client that checks them will refuse.
    let pkcs7 = wrap64(&STANDARD.encode(digest(b"pkcs7", &document).repeat(8)));
    let signature = STANDARD.encode(digest(b"signature", &document).repeat(4));
    let rsa2048 = wrap64(&STANDARD.encode(digest(b"rsa2048", &document).repeat(8)));
    vec![dir(
        "instance-identity",
        vec![
            leaf("document", document),
            leaf("pkcs7", pkcs7),
            leaf("rsa2048", rsa2048),
            leaf("signature", signature),
        ],
    )]
}

fn identity_document(v: &InstanceView) -> Vec<u8> {
    aws_json(&[
        ("accountId", v.account_id.as_str().into()),
        ("architecture", v.architecture.as_str().into()),
        ("availabilityZone", v.availability_zone.as_str().into()),
        ("billingProducts", Value::Null),
        ("devpayProductCodes", Value::Null),
        ("marketplaceProductCodes", Value::Null),
        ("imageId", v.ami_id.as_str().into()),
        ("instanceId", v.instance_id.as_str().into()),
        ("instanceType", v.instance_type.as_str().into()),
        ("kernelId", Value::Null),
        ("pendingTime", ts(v.pending_time).into()),
        ("privateIp", v.private_ip.as_str().into()),
        ("ramdiskId", Value::Null),
        ("region", v.region.as_str().into()),
        ("version", "2017-09-30".into()),
    ])
}

fn credentials_json(c: &Credentials) -> Vec<u8> {
    aws_json(&[
        ("Code", "Success".into()),
        ("LastUpdated", ts(c.last_updated).into()),
        ("Type", "AWS-HMAC".into()),
        ("AccessKeyId", c.access_key_id.as_str().into()),
        ("SecretAccessKey", c.secret_access_key.as_str().into()),
        ("Token", c.token.as_str().into()),
        ("Expiration", ts(c.expiration).into()),
    ])
}

/// A flat JSON object laid out as EC2's metadata service lays it out: fields in the given order,
/// two-space indent and `" : "` between key and value (serde_json's pretty printer uses `": "`).
fn aws_json(fields: &[(&str, Value)]) -> Vec<u8> {
    let body = fields
        .iter()
        .map(|(k, v)| format!("  {} : {}", Value::from(*k), v))
        .collect::<Vec<_>>()
        .join(",\n");
    format!("{{\n{body}\n}}").into_bytes()
}

/// EC2's metadata timestamps: UTC, whole seconds, `Z`.
fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn lines<'a>(items: impl Iterator<Item = &'a String>) -> String {
    items.map(String::as_str).collect::<Vec<_>>().join("\n")
}

fn digest(label: &[u8], document: &[u8]) -> Vec<u8> {
    Sha256::new()
        .chain_update(b"ec2d-unsigned-")
        .chain_update(label)
        .chain_update(document)
        .finalize()
        .to_vec()
}

/// Base64 broken into 64-character lines, as EC2 serves `pkcs7` and `rsa2048`.
fn wrap64(b64: &str) -> String {
    b64.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}
