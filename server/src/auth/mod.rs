//! SigV4 verification: who is calling, for which account and region.
//!
//! The expected signature is computed by `aws-sigv4` from the parts of the request the client
//! signed, then compared in constant time with the one it sent.
//!
//! Two kinds of keys sign requests: long-term keys from the [`Keyring`], and temporary keys
//! (instance-profile credentials) found through a [`SessionKeys`] lookup, which must come
//! with their session token (`X-Amz-Security-Token`) and stop working when they expire.
//! Failures are an [`AuthError`]; the caller turns it into its service's error code.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use chrono::{NaiveDateTime, TimeZone, Utc};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::regions;

/// How far a request's clock may be from ours, as EC2 allows.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// Presigned URLs may live at most a week, as in SigV4.
const MAX_PRESIGN: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone)]
pub struct Key {
    pub secret: String,
    pub account: String,
}

/// Access keys known to this server.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: HashMap<String, Key>,
}

impl Keyring {
    /// `test`/`test` → 000000000000 is always present, as the quick start promises.
    pub fn with_defaults() -> Self {
        let mut k = Keyring::default();
        k.add("test", "test", "000000000000");
        k
    }

    pub fn add(&mut self, key: &str, secret: &str, account: &str) {
        self.keys.insert(
            key.to_string(),
            Key {
                secret: secret.to_string(),
                account: account.to_string(),
            },
        );
    }

    /// Parses `KEY:SECRET:ACCOUNT`.
    pub fn add_spec(&mut self, spec: &str) -> Result<(), String> {
        let parts: Vec<&str> = spec.splitn(3, ':').collect();
        match parts.as_slice() {
            [k, s, a]
                if !k.is_empty()
                    && !s.is_empty()
                    && a.len() == 12
                    && a.bytes().all(|b| b.is_ascii_digit()) =>
            {
                self.add(k, s, a);
                Ok(())
            }
            _ => Err(format!(
                "bad credentials {spec:?}: expected KEY:SECRET:ACCOUNT with a 12-digit account"
            )),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Key> {
        self.keys.get(key)
    }
}

/// A temporary key as the issuer stored it.
#[derive(Debug, Clone)]
pub struct SessionKey {
    pub secret: String,
    pub token: String,
    pub account: String,
    pub expiration: SystemTime,
}

/// Where temporary keys are looked up (the store, for instance-profile credentials).
pub trait SessionKeys {
    /// The key's record, or `None` if it was never issued or has been revoked.
    fn lookup(&self, access_key: &str) -> Result<Option<SessionKey>, AuthError>;
}

/// No temporary keys at all.
pub struct NoSessionKeys;

impl SessionKeys for NoSessionKeys {
    fn lookup(&self, _access_key: &str) -> Result<Option<SessionKey>, AuthError> {
        Ok(None)
    }
}

/// Why a request is not authenticated. Services name these differently (EC2's
/// `AuthFailure` is IAM's `InvalidClientTokenId` or `SignatureDoesNotMatch`), so the kind is
/// kept and each service maps it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    #[error("IncompleteSignature: {0}")]
    Incomplete(String),
    #[error("no authentication")]
    Missing,
    /// Clock skew over the limit, or a presigned URL past its expiry.
    #[error("request expired")]
    RequestExpired,
    /// A credential scope naming a region ec2d does not know.
    #[error("{0}")]
    BadRegion(String),
    #[error("unknown access key")]
    UnknownKey,
    /// A temporary key without its session token, or with another one.
    #[error("bad session token")]
    BadToken,
    /// A temporary key past its expiration.
    #[error("expired session token")]
    ExpiredToken,
    #[error("signature mismatch")]
    BadSignature,
    #[error("{0}")]
    Internal(String),
}

impl From<AuthError> for ApiError {
    /// EC2's codes. An expired temporary key is `RequestExpired`, as EC2 answers requests
    /// signed with expired session credentials.
    fn from(e: AuthError) -> Self {
        const INVALID: &str = "AWS was not able to validate the provided access credentials";
        match e {
            AuthError::Incomplete(m) => ApiError::auth("IncompleteSignature", m),
            AuthError::Missing => ApiError::auth(
                "MissingAuthenticationToken",
                "Request is missing Authentication Token",
            ),
            AuthError::RequestExpired | AuthError::ExpiredToken => {
                ApiError::auth("RequestExpired", "Request has expired.")
            }
            AuthError::BadRegion(m) => ApiError::auth("AuthFailure", m),
            AuthError::UnknownKey | AuthError::BadToken | AuthError::BadSignature => {
                ApiError::auth("AuthFailure", INVALID)
            }
            AuthError::Internal(m) => ApiError::internal(m),
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub access_key: String,
    pub account: String,
    pub region: String,
    pub service: String,
    /// Signed with temporary (instance-profile) credentials.
    pub temporary: bool,
}

/// What the verifier needs of an HTTP request.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// Path and query as received (still percent-encoded).
    pub path_and_query: &'a str,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

struct Scope {
    key: String,
    date: String,
    region: String,
    service: String,
}

struct Presented {
    scope: Scope,
    signed_headers: Vec<String>,
    signature: String,
    time: SystemTime,
    presign_expires: Option<u64>,
    token: Option<String>,
}

fn incomplete(msg: impl Into<String>) -> AuthError {
    AuthError::Incomplete(msg.into())
}

fn parse_scope(credential: &str) -> Result<Scope, AuthError> {
    let parts: Vec<&str> = credential.split('/').collect();
    match parts.as_slice() {
        [key, date, region, service, "aws4_request"] if !key.is_empty() => Ok(Scope {
            key: key.to_string(),
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
        }),
        _ => Err(incomplete(format!(
            "Credential should be scoped to a valid region, not '{credential}'"
        ))),
    }
}

fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let t = NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok()?;
    Some(SystemTime::from(Utc.from_utc_datetime(&t)))
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn query_pairs(path_and_query: &str) -> Vec<(String, String)> {
    let query = path_and_query.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn presented(req: &RequestParts<'_>) -> Result<Presented, AuthError> {
    if let Some(auth) = header(req.headers, "authorization") {
        let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
            incomplete(format!(
                "Authorization header requires the AWS4-HMAC-SHA256 algorithm, got '{}'",
                auth.split(' ').next().unwrap_or("")
            ))
        })?;
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for part in rest.split(',') {
            if let Some((k, v)) = part.trim().split_once('=') {
                fields.insert(k.trim(), v.trim());
            }
        }
        let missing: Vec<&str> = ["Credential", "SignedHeaders", "Signature"]
            .into_iter()
            .filter(|k| !fields.contains_key(k))
            .collect();
        if !missing.is_empty() {
            return Err(incomplete(format!(
                "Authorization header requires {} parameter(s). Authorization={auth}",
                missing.join(", ")
            )));
        }
        let scope = parse_scope(fields["Credential"])?;
        let date = header(req.headers, "x-amz-date").ok_or_else(|| {
            incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
        })?;
        let time = parse_amz_date(date).ok_or_else(|| {
            incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{date}'."
            ))
        })?;
        return Ok(Presented {
            scope,
            signed_headers: fields["SignedHeaders"]
                .split(';')
                .map(str::to_ascii_lowercase)
                .collect(),
            signature: fields["Signature"].to_string(),
            time,
            presign_expires: None,
            token: header(req.headers, "x-amz-security-token").map(str::to_string),
        });
    }

    let q: HashMap<String, String> = query_pairs(req.path_and_query).into_iter().collect();
    if q.contains_key("X-Amz-Algorithm") || q.contains_key("X-Amz-Signature") {
        if q.get("X-Amz-Algorithm").map(String::as_str) != Some("AWS4-HMAC-SHA256") {
            return Err(incomplete("X-Amz-Algorithm must be AWS4-HMAC-SHA256"));
        }
        let get = |k: &str| {
            q.get(k).cloned().ok_or_else(|| {
                incomplete(format!(
                    "Query-string authentication requires the {k} parameter."
                ))
            })
        };
        let scope = parse_scope(&get("X-Amz-Credential")?)?;
        let date = get("X-Amz-Date")?;
        let time = parse_amz_date(&date).ok_or_else(|| {
            incomplete(format!(
                "X-Amz-Date must be in ISO-8601 'basic format'. Got '{date}'."
            ))
        })?;
        let expires: u64 = get("X-Amz-Expires")?
            .parse()
            .ok()
            .filter(|e| *e <= MAX_PRESIGN)
            .ok_or_else(|| incomplete("X-Amz-Expires must be a number of seconds up to 604800"))?;
        return Ok(Presented {
            scope,
            signed_headers: get("X-Amz-SignedHeaders")?
                .split(';')
                .map(str::to_ascii_lowercase)
                .collect(),
            signature: get("X-Amz-Signature")?,
            time,
            presign_expires: Some(expires),
            token: q.get("X-Amz-Security-Token").cloned(),
        });
    }
    Err(AuthError::Missing)
}

/// The service the request's credential scope names, if it presents one; lets a failed
/// request still be answered in its service's error format.
pub fn scope_service(req: &RequestParts<'_>) -> Option<String> {
    presented(req).ok().map(|p| p.scope.service)
}

const PRESIGN_PARAMS: &[&str] = &[
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// Verifies a request signed with a long-term key and says who sent it.
pub fn verify(
    keys: &Keyring,
    req: &RequestParts<'_>,
    now: SystemTime,
) -> Result<Caller, AuthError> {
    verify_with(keys, &NoSessionKeys, req, now)
}

/// Services whose endpoint is global: any region may appear in their credential scope
/// (IAM is signed for us-east-1 by most clients, but for the client's region by others).
const GLOBAL_SERVICES: &[&str] = &["iam"];

/// Verifies a request signed with a long-term key or a temporary one, and says who sent it.
pub fn verify_with(
    keys: &Keyring,
    sessions: &dyn SessionKeys,
    req: &RequestParts<'_>,
    now: SystemTime,
) -> Result<Caller, AuthError> {
    let p = presented(req)?;

    match p.presign_expires {
        None => {
            let skew = match now.duration_since(p.time) {
                Ok(d) => d,
                Err(e) => e.duration(),
            };
            if skew > MAX_SKEW {
                return Err(AuthError::RequestExpired);
            }
        }
        Some(expires) => {
            let until = p.time + Duration::from_secs(expires);
            if now > until || p.time > now + MAX_SKEW {
                return Err(AuthError::RequestExpired);
            }
        }
    }
    if p.scope.date.len() != 8 || !p.scope.date.chars().all(|c| c.is_ascii_digit()) {
        return Err(incomplete("Credential date must be in the form YYYYMMDD"));
    }
    let global = GLOBAL_SERVICES.contains(&p.scope.service.as_str());
    if !(regions::is_known(&p.scope.region) || (global && !p.scope.region.is_empty())) {
        return Err(AuthError::BadRegion(format!(
            "Credential should be scoped to a valid region, not '{}'.",
            p.scope.region
        )));
    }
    let (secret, account, temporary) = match keys.get(&p.scope.key) {
        Some(key) => (key.secret.clone(), key.account.clone(), false),
        None => {
            let key = sessions
                .lookup(&p.scope.key)?
                .ok_or(AuthError::UnknownKey)?;
            let presented_token = p.token.as_deref().unwrap_or_default();
            if !bool::from(presented_token.as_bytes().ct_eq(key.token.as_bytes())) {
                return Err(AuthError::BadToken);
            }
            if now >= key.expiration {
                return Err(AuthError::ExpiredToken);
            }
            (key.secret, key.account, true)
        }
    };
    if !p.signed_headers.iter().any(|h| h == "host") {
        return Err(incomplete("The host header must be signed."));
    }

    let matches = |unsigned: bool| -> Result<bool, AuthError> {
        let expected = expected_signature(req, &p, &secret, unsigned)?;
        Ok(bool::from(
            expected.as_bytes().ct_eq(p.signature.as_bytes()),
        ))
    };
    // botocore presigns EC2 URLs over the (empty) body's hash; other SDKs use
    // UNSIGNED-PAYLOAD for every presigned URL. Both are valid SigV4.
    let ok = matches(false)? || (p.presign_expires.is_some() && matches(true)?);
    if !ok {
        return Err(AuthError::BadSignature);
    }
    Ok(Caller {
        access_key: p.scope.key,
        account,
        region: p.scope.region,
        service: p.scope.service,
        temporary,
    })
}

fn expected_signature(
    req: &RequestParts<'_>,
    p: &Presented,
    secret: &str,
    unsigned_payload: bool,
) -> Result<String, AuthError> {
    let host = header(req.headers, "host").unwrap_or("localhost");
    let path_and_query = if p.presign_expires.is_some() {
        strip_presign_params(req.path_and_query)
    } else {
        req.path_and_query.to_string()
    };
    let uri = format!("http://{host}{path_and_query}");
    let mut headers: Vec<(&str, &str)> = Vec::new();
    for name in &p.signed_headers {
        // aws-sigv4 adds these itself from the signing parameters.
        if name == "x-amz-date" || name == "x-amz-security-token" {
            continue;
        }
        for v in req.headers.get_all(name.as_str()) {
            if let Ok(v) = v.to_str() {
                headers.push((name.as_str(), v));
            }
        }
    }
    let body = if unsigned_payload {
        SignableBody::UnsignedPayload
    } else {
        SignableBody::Bytes(req.body)
    };
    let signable = SignableRequest::new(req.method, uri, headers.into_iter(), body)
        .map_err(|e| incomplete(format!("The request could not be canonicalised: {e}")))?;

    let mut settings = SigningSettings::default();
    settings.excluded_headers = Some(Vec::<Cow<'static, str>>::new());
    if let Some(expires) = p.presign_expires {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(expires));
    }
    let identity: Identity =
        Credentials::new(&p.scope.key, secret, p.token.clone(), None, "ec2d").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&p.scope.region)
        .name(&p.scope.service)
        .time(p.time)
        .settings(settings)
        .build()
        .map_err(|e| AuthError::Internal(format!("signing parameters: {e}")))?
        .into();
    let out = sign(signable, &params)
        .map_err(|e| incomplete(format!("The request could not be canonicalised: {e}")))?;
    Ok(out.signature().to_string())
}

fn strip_presign_params(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| {
            let k = kv.split('=').next().unwrap_or("");
            !PRESIGN_PARAMS.contains(&k)
        })
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct OneKey(SessionKey);

    impl SessionKeys for OneKey {
        fn lookup(&self, access_key: &str) -> Result<Option<SessionKey>, AuthError> {
            Ok((access_key == "ASIATESTTESTTESTTEST").then(|| self.0.clone()))
        }
    }

    /// Headers of a POST signed as botocore would, at `when`.
    fn signed(
        key: &str,
        secret: &str,
        token: Option<&str>,
        service: &str,
        region: &str,
        when: SystemTime,
    ) -> http::HeaderMap {
        let mut headers = vec![
            ("host".to_string(), "localhost".to_string()),
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
        ];
        let identity: Identity =
            Credentials::new(key, secret, token.map(str::to_string), None, "t").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(service)
            .time(when)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "POST",
            "http://localhost/",
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(BODY),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        for (k, v) in instructions.headers() {
            headers.push((k.to_string(), v.to_string()));
        }
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(&v).unwrap(),
            );
        }
        map
    }

    const BODY: &[u8] = b"Action=DescribeRegions&Version=2016-11-15";

    fn check(
        headers: &http::HeaderMap,
        sessions: &dyn SessionKeys,
        now: SystemTime,
    ) -> Result<Caller, AuthError> {
        let req = RequestParts {
            method: "POST",
            path_and_query: "/",
            headers,
            body: BODY,
        };
        verify_with(&Keyring::with_defaults(), sessions, &req, now)
    }

    #[test]
    fn session_keys_need_their_token_and_expire() {
        let now = SystemTime::now();
        let key = |expiration| {
            OneKey(SessionKey {
                secret: "s3cret".into(),
                token: "the-token".into(),
                account: "123456789012".into(),
                expiration,
            })
        };
        let live = key(now + Duration::from_secs(3600));
        let id = "ASIATESTTESTTESTTEST";
        let good = signed(id, "s3cret", Some("the-token"), "ec2", "us-east-1", now);
        let caller = check(&good, &live, now).unwrap();
        assert_eq!(caller.account, "123456789012");
        assert!(caller.temporary);

        let wrong = signed(id, "s3cret", Some("other"), "ec2", "us-east-1", now);
        assert_eq!(check(&wrong, &live, now).unwrap_err(), AuthError::BadToken);
        let none = signed(id, "s3cret", None, "ec2", "us-east-1", now);
        assert_eq!(check(&none, &live, now).unwrap_err(), AuthError::BadToken);
        let bad_secret = signed(id, "nope", Some("the-token"), "ec2", "us-east-1", now);
        assert_eq!(
            check(&bad_secret, &live, now).unwrap_err(),
            AuthError::BadSignature
        );
        assert_eq!(
            check(&good, &NoSessionKeys, now).unwrap_err(),
            AuthError::UnknownKey
        );

        // Past its expiration the key is refused even for a freshly signed request, with
        // EC2's RequestExpired.
        let dead = key(now - Duration::from_secs(1));
        let e = check(&good, &dead, now).unwrap_err();
        assert_eq!(e, AuthError::ExpiredToken);
        let api: ApiError = e.into();
        assert_eq!((api.code.as_ref(), api.status), ("RequestExpired", 400));
    }

    #[test]
    fn long_term_keys_are_not_temporary() {
        let now = SystemTime::now();
        let h = signed("test", "test", None, "ec2", "eu-west-1", now);
        let caller = check(&h, &NoSessionKeys, now).unwrap();
        assert_eq!(
            (caller.account.as_str(), caller.temporary),
            ("000000000000", false)
        );
    }

    #[test]
    fn global_services_accept_any_region_in_the_scope() {
        let now = SystemTime::now();
        let iam = signed("test", "test", None, "iam", "aws-global", now);
        assert_eq!(check(&iam, &NoSessionKeys, now).unwrap().service, "iam");
        let ec2 = signed("test", "test", None, "ec2", "aws-global", now);
        assert!(matches!(
            check(&ec2, &NoSessionKeys, now).unwrap_err(),
            AuthError::BadRegion(_)
        ));
    }
}
