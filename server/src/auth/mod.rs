//! SigV4 verification: who is calling, for which account and region.
//!
//! The expected signature is computed by `aws-sigv4` from the parts of the request the client
//! signed, then compared in constant time with the one it sent.

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

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub access_key: String,
    pub account: String,
    pub region: String,
    pub service: String,
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

fn incomplete(msg: impl Into<String>) -> ApiError {
    ApiError::auth("IncompleteSignature", msg)
}

fn parse_scope(credential: &str) -> Result<Scope, ApiError> {
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

fn presented(req: &RequestParts<'_>) -> Result<Presented, ApiError> {
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
    Err(ApiError::auth(
        "MissingAuthenticationToken",
        "Request is missing Authentication Token",
    ))
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

/// Verifies a request and says who sent it.
pub fn verify(keys: &Keyring, req: &RequestParts<'_>, now: SystemTime) -> Result<Caller, ApiError> {
    let p = presented(req)?;

    match p.presign_expires {
        None => {
            let skew = match now.duration_since(p.time) {
                Ok(d) => d,
                Err(e) => e.duration(),
            };
            if skew > MAX_SKEW {
                return Err(ApiError::auth("RequestExpired", "Request has expired."));
            }
        }
        Some(expires) => {
            let until = p.time + Duration::from_secs(expires);
            if now > until || p.time > now + MAX_SKEW {
                return Err(ApiError::auth("RequestExpired", "Request has expired."));
            }
        }
    }
    if p.scope.date.len() != 8 || !p.scope.date.chars().all(|c| c.is_ascii_digit()) {
        return Err(incomplete("Credential date must be in the form YYYYMMDD"));
    }
    if !regions::is_known(&p.scope.region) {
        return Err(ApiError::auth(
            "AuthFailure",
            format!(
                "Credential should be scoped to a valid region, not '{}'.",
                p.scope.region
            ),
        ));
    }
    let key = keys.get(&p.scope.key).ok_or_else(|| {
        ApiError::auth(
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
        )
    })?;
    if !p.signed_headers.iter().any(|h| h == "host") {
        return Err(incomplete("The host header must be signed."));
    }

    let matches = |unsigned: bool| -> Result<bool, ApiError> {
        let expected = expected_signature(req, &p, &key.secret, unsigned)?;
        Ok(bool::from(
            expected.as_bytes().ct_eq(p.signature.as_bytes()),
        ))
    };
    // botocore presigns EC2 URLs over the (empty) body's hash; other SDKs use
    // UNSIGNED-PAYLOAD for every presigned URL. Both are valid SigV4.
    let ok = matches(false)? || (p.presign_expires.is_some() && matches(true)?);
    if !ok {
        return Err(ApiError::auth(
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
        ));
    }
    Ok(Caller {
        access_key: p.scope.key,
        account: key.account.clone(),
        region: p.scope.region,
        service: p.scope.service,
    })
}

fn expected_signature(
    req: &RequestParts<'_>,
    p: &Presented,
    secret: &str,
    unsigned_payload: bool,
) -> Result<String, ApiError> {
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
        .map_err(|e| ApiError::internal(format!("signing parameters: {e}")))?
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
