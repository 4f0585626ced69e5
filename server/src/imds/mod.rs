//! Instance Metadata Service semantics, independent of transport.
//!
//! The fabric (`net/`) parses the guest's HTTP request, identifies the calling instance by the
//! fabric port the frames arrived on (never by source address), builds an [`InstanceView`] for it and
//! calls [`Imds::handle`]. Everything EC2 decides about the request — token issue and validation,
//! `HttpTokens`/`HttpEndpoint`, the error statuses, the path tree and its content — happens here, so
//! the rules can be tested without packets. See `../shared/reference/imds.md`.
//!
//! Transport contract:
//! - [`Response::headers`] already carries `Content-Length`, `Content-Type` and `Server`; write them
//!   as given and add nothing that repeats them. For `HEAD` the body is empty but `Content-Length` is
//!   the length a `GET` would have returned, as HTTP requires.
//! - When [`Response::ip_ttl`] is set (only on a successful token `PUT`), the IP packets carrying the
//!   response must leave with that TTL / hop limit: this is `HttpPutResponseHopLimit`, the defence
//!   against a token leaking through a container or a proxy one hop further away.

mod token;
mod tree;

#[cfg(test)]
mod tests;

use std::time::Instant;

use chrono::{DateTime, Utc};

pub use token::TokenKey;

/// `HttpTokens` of the instance's metadata options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpTokens {
    /// IMDSv1 requests (no token) are served; a presented token must still be valid.
    Optional,
    /// Every read needs a valid token.
    Required,
}

/// The `enabled` / `disabled` settings of the metadata options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Enabled,
    Disabled,
}

/// The instance's `MetadataOptions`, as set at launch or by `ModifyInstanceMetadataOptions`.
/// They are read on every request, so a change applies to the next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataOptions {
    pub http_tokens: HttpTokens,
    pub http_endpoint: Switch,
    /// `HttpPutResponseHopLimit`, 1..=64: the IP TTL of the token `PUT` response.
    pub hop_limit: u8,
    pub instance_metadata_tags: Switch,
    /// `HttpProtocolIpv6`: whether the transport answers on `fd00:ec2::254`. Not used here.
    pub http_protocol_ipv6: Switch,
}

impl Default for MetadataOptions {
    /// EC2's defaults for an AMI without `imds-support v2.0`.
    fn default() -> Self {
        Self {
            http_tokens: HttpTokens::Optional,
            http_endpoint: Switch::Enabled,
            hop_limit: 1,
            instance_metadata_tags: Switch::Disabled,
            http_protocol_ipv6: Switch::Disabled,
        }
    }
}

/// Temporary credentials as IMDS serves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
    pub expiration: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
}

/// The instance profile attached to the instance and its current role credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamView {
    pub profile_arn: String,
    pub profile_id: String,
    pub role_name: String,
    pub credentials: Credentials,
}

/// What a scheduled spot interruption will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpotActionKind {
    Terminate,
    Stop,
    Hibernate,
}

impl SpotActionKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Terminate => "terminate",
            Self::Stop => "stop",
            Self::Hibernate => "hibernate",
        }
    }
}

/// A scheduled spot interruption: served at `spot/instance-action` and `spot/termination-time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpotAction {
    pub action: SpotActionKind,
    pub time: DateTime<Utc>,
}

/// Everything IMDS serves about one instance, assembled by the caller from the store for each
/// request (or cached and refreshed on change). Names (block devices, tag keys, role, MAC) that
/// cannot be a single path segment are left out of the tree rather than served inconsistently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    pub instance_id: String,
    pub account_id: String,
    pub region: String,
    pub availability_zone: String,
    pub availability_zone_id: String,
    pub ami_id: String,
    pub ami_launch_index: u32,
    pub instance_type: String,
    /// `x86_64` or `arm64`, as in the identity document.
    pub architecture: String,
    pub private_ip: String,
    /// Private DNS name, served as `hostname` and `local-hostname`.
    pub private_dns: String,
    pub public_ip: Option<String>,
    pub public_dns: Option<String>,
    /// Primary ENI's MAC, lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub interface_id: String,
    pub subnet_id: String,
    pub subnet_cidr: String,
    pub vpc_id: String,
    /// The VPC's IPv4 CIDR blocks, primary first.
    pub vpc_cidrs: Vec<String>,
    /// `(group id, group name)` of the primary ENI's security groups.
    pub security_groups: Vec<(String, String)>,
    pub reservation_id: String,
    /// `(name, device)` for `block-device-mapping/`: `ami`, `root`, `ebs1`… → `/dev/xvda`, `sdf`…
    pub block_devices: Vec<(String, String)>,
    /// `(key name, OpenSSH public key line)`, index order.
    pub public_keys: Vec<(String, String)>,
    /// Decoded user data; `None` or empty means there is none (404).
    pub user_data: Option<Vec<u8>>,
    pub tags: Vec<(String, String)>,
    pub pending_time: DateTime<Utc>,
    pub iam: Option<IamView>,
    /// Credentials for `identity-credentials/ec2/`; left out of the tree when `None`.
    pub identity_credentials: Option<Credentials>,
    pub spot_action: Option<SpotAction>,
    /// Time of a rebalance recommendation; `events/recommendations/` exists only when set.
    pub rebalance_notice: Option<DateTime<Utc>>,
    pub options: MetadataOptions,
}

/// A parsed HTTP request from the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Request target as sent (origin form); may carry a query string, which is ignored.
    pub path: String,
    /// Header names in any case; values as received.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header with this name (case-insensitive), as HTTP header names are.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// The answer to send back. See the module docs for the transport contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// IP TTL for the packets of this response (`HttpPutResponseHopLimit`), token `PUT` only.
    pub ip_ttl: Option<u8>,
}

impl Response {
    fn new(status: u16, body: Vec<u8>) -> Self {
        let headers = vec![
            ("Content-Type".to_string(), "text/plain".to_string()),
            ("Content-Length".to_string(), body.len().to_string()),
            ("Server".to_string(), "EC2ws".to_string()),
        ];
        Self {
            status,
            headers,
            body,
            ip_ttl: None,
        }
    }

    /// An error answer with the small XHTML page EC2's metadata service sends with its errors.
    fn error(status: u16) -> Self {
        let reason = reason_phrase(status);
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n\
             <!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\
             \t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n\
             <html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n \
             <head>\n  <title>{status} - {reason}</title>\n </head>\n \
             <body>\n  <h1>{status} - {reason}</h1>\n </body>\n</html>\n"
        );
        Self::new(status, body.into_bytes())
    }

    fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The value of a header (case-insensitive), for callers and tests.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reason phrase for the statuses this module produces, for the transport's status line too.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}

/// Header carrying a session token on reads.
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Header carrying the requested token lifetime on the token `PUT`, echoed in the answer.
pub const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
/// Longest token lifetime EC2 grants: six hours.
pub const MAX_TOKEN_TTL_SECS: u64 = 21_600;

/// The metadata service shared by all instances of one ec2d process.
///
/// Tokens are self-validating (see [`TokenKey`]), so the service keeps no per-token state: a guest
/// that asks for millions of tokens costs nothing but CPU, and there is nothing to expire or bound.
/// Restarting ec2d invalidates every token, which clients handle by asking for a new one on 401.
pub struct Imds {
    key: TokenKey,
}

impl Default for Imds {
    fn default() -> Self {
        Self::new()
    }
}

impl Imds {
    /// A service with a fresh random token key.
    pub fn new() -> Self {
        Self {
            key: TokenKey::random(),
        }
    }

    /// Answer one request from `caller`. `now` is a monotonic clock reading, used only for token
    /// lifetimes, so wall-clock jumps on the host neither extend nor cut them short.
    pub fn handle(&self, caller: &InstanceView, req: &Request, now: Instant) -> Response {
        // A disabled endpoint answers nothing useful, not even a token.
        if caller.options.http_endpoint == Switch::Disabled {
            return Response::error(403);
        }
        let path = strip_query(&req.path);
        match req.method.as_str() {
            "PUT" => self.put(caller, req, path, now),
            "GET" | "HEAD" => {
                let mut resp = self.read(caller, req, path, now);
                if req.method == "HEAD" {
                    // Headers (Content-Length included) stay those of the GET.
                    resp.body.clear();
                }
                resp
            }
            _ => Response::error(405).with_header("Allow", "GET, HEAD, PUT"),
        }
    }

    fn put(&self, caller: &InstanceView, req: &Request, path: &str, now: Instant) -> Response {
        // A PUT relayed by a proxy would hand the token to whoever is behind it; EC2 refuses it.
        if req.has_header("X-Forwarded-For") {
            return Response::error(403);
        }
        if path != "/latest/api/token" {
            if is_dated_token_path(path) {
                // EC2 only issues tokens under /latest/ and documents 403 for the dated forms.
                return Response::error(403);
            }
            return Response::error(405).with_header("Allow", "GET, HEAD");
        }
        let Some(ttl) = req.header(TTL_HEADER).and_then(parse_ttl) else {
            return Response::error(400);
        };
        let token = self.key.issue(&caller.instance_id, now, ttl);
        let mut resp =
            Response::new(200, token.into_bytes()).with_header(TTL_HEADER, &ttl.to_string());
        resp.ip_ttl = Some(caller.options.hop_limit);
        resp
    }

    fn read(&self, caller: &InstanceView, req: &Request, path: &str, now: Instant) -> Response {
        if path == "/latest/api/token" {
            return Response::error(405).with_header("Allow", "PUT");
        }
        match req.header(TOKEN_HEADER) {
            // A presented token is checked even when tokens are optional: a bad one is a 401.
            Some(token) if !self.key.verify(token.trim(), &caller.instance_id, now) => {
                return Response::error(401);
            }
            Some(_) => {}
            None if caller.options.http_tokens == HttpTokens::Required => {
                return Response::error(401);
            }
            None => {}
        }
        match tree::lookup(caller, path) {
            Some(body) => Response::new(200, body),
            None => Response::error(404),
        }
    }
}

/// The path without query string or fragment: EC2 ignores them.
fn strip_query(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// `/<dated version>/api/token`, which EC2 refuses with 403 rather than 404.
fn is_dated_token_path(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.strip_suffix("/api/token"))
        .is_some_and(|v| tree::VERSIONS.contains(&v))
}

/// The token lifetime: decimal digits only, 1..=21600. Anything else is a 400.
fn parse_ttl(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = v.parse().ok()?;
    (1..=MAX_TOKEN_TTL_SECS).contains(&n).then_some(n)
}
