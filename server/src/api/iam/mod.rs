//! IAM on the EC2 endpoint: roles and instance profiles, the part of IAM that instances need,
//! and the temporary credentials an instance's role receives.
//!
//! A request is routed here when its SigV4 credential scope names the service `iam` (any
//! region: IAM is global). It speaks IAM's query protocol: `Action=…&Version=2010-05-08`,
//! answers `<{Action}Response xmlns="https://iam.amazonaws.com/doc/2010-05-08/">` with the
//! output inside `<{Action}Result>` and a `<ResponseMetadata><RequestId>`, and fails with
//! `<ErrorResponse><Error><Type>Sender</Type><Code>…`. Shapes, the namespace, result wrappers
//! and error statuses all come from `model::iam`, generated from botocore's IAM model.
//!
//! IAM is global per account, so everything here is stored in the account's
//! [`GLOBAL`](crate::store::GLOBAL) scope, and read from there by EC2 handlers in any region.

pub mod credentials;
pub mod instance_profiles;
pub mod roles;

use std::cell::RefCell;

use crate::api::{Api, Ctx};
use crate::error::ApiError;
use crate::model::iam as m;
use crate::protocol::query::{DecodeError, FromQuery, QueryNode, member_path};
use crate::protocol::xml::{self, ToXml};
use crate::store::GLOBAL;

/// An IAM error with the HTTP status the model gives its code (400 for codes the model does
/// not declare, such as `ValidationError`).
pub fn error(code: &'static str, message: impl Into<String>) -> ApiError {
    let status = m::ERRORS
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, s, _)| *s)
        .unwrap_or(400);
    ApiError::new(code, message).with_status(status)
}

/// Whether an error is the caller's fault (`<Type>Sender</Type>`) or ours (`Receiver`).
pub fn sender_fault(e: &ApiError) -> bool {
    m::ERRORS
        .iter()
        .find(|(c, _, _)| *c == e.code)
        .map(|(_, _, sender)| *sender)
        .unwrap_or(e.status < 500)
}

/// The IAM error document for an error.
pub fn error_body(e: &ApiError, request_id: &str) -> String {
    xml::query_error(
        m::XML_NAMESPACE,
        sender_fault(e),
        &e.code,
        &e.message,
        request_id,
    )
}

/// IAM's names for SigV4 failures (EC2 says `AuthFailure` for most of these).
pub fn auth_error(e: crate::auth::AuthError) -> ApiError {
    use crate::auth::AuthError;
    let (code, status, message): (&'static str, u16, String) = match e {
        AuthError::Incomplete(m) => ("IncompleteSignature", 400, m),
        AuthError::Missing => (
            "MissingAuthenticationToken",
            403,
            "Request is missing Authentication Token".into(),
        ),
        AuthError::RequestExpired => ("RequestExpired", 400, "Request has expired.".into()),
        AuthError::ExpiredToken => (
            "ExpiredToken",
            403,
            "The security token included in the request is expired".into(),
        ),
        AuthError::UnknownKey | AuthError::BadToken | AuthError::BadRegion(_) => (
            "InvalidClientTokenId",
            403,
            "The security token included in the request is invalid.".into(),
        ),
        AuthError::BadSignature => (
            "SignatureDoesNotMatch",
            403,
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details."
                .into(),
        ),
        AuthError::Internal(m) => return ApiError::internal(m),
    };
    ApiError::new(code, message).with_status(status)
}

/// Decoder failures in IAM's words: every one is a `ValidationError`, except a parameter the
/// model does not know.
fn decode_error(e: DecodeError) -> ApiError {
    match e {
        DecodeError::MissingParameter(path) => error(
            "ValidationError",
            format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: \
                 Member must not be null",
                member_path("", &path)
            ),
        ),
        DecodeError::UnknownParameter(p) => error(
            "InvalidInput",
            format!("The parameter {p} is not recognized"),
        ),
        DecodeError::InvalidParameterValue(msg) | DecodeError::ValidationError(msg) => {
            error("ValidationError", msg)
        }
    }
}

/// A model pattern the decoder does not check (it has no regular expressions), checked by a
/// handler; the message names the model's pattern as IAM does.
pub fn pattern_error(value: &str, member: &str, pattern: &str) -> ApiError {
    error(
        "ValidationError",
        format!(
            "1 validation error detected: Value '{value}' at '{}' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: {pattern}",
            member_path("", member)
        ),
    )
}

/// `roleNameType` and `instanceProfileNameType`: `[\w+=,.@-]+` (lengths are generated).
pub fn check_name(value: &str, member: &str) -> Result<(), ApiError> {
    let ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(pattern_error(value, member, r"[\w+=,.@-]+"))
    }
}

/// `pathType`: `/`, or `/…/` of printable ASCII.
pub fn check_path(value: &str) -> Result<(), ApiError> {
    let inner = value
        .strip_prefix('/')
        .and_then(|v| v.strip_suffix('/'))
        .map(|v| v.chars().all(|c| ('\u{21}'..='\u{7e}').contains(&c)));
    if value == "/" || inner == Some(true) {
        Ok(())
    } else {
        Err(pattern_error(
            value,
            "Path",
            r"(\u002F)|(\u002F[\u0021-\u007E]+\u002F)",
        ))
    }
}

/// IAM names are unique regardless of case ("PRODROLE" and "prodrole" cannot both exist), and
/// look-ups ignore case; records are keyed by this form.
pub fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// An IAM id: the type prefix (`AROA` roles, `AIPA` instance profiles) and 17 characters of
/// the base32 alphabet, as IAM's unique ids look.
pub fn new_unique_id(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::thread_rng();
    let tail: String = (0..17)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect();
    format!("{prefix}{tail}")
}

/// IAM's list paging: `MaxItems` (default 100) and an opaque `Marker` naming where the next
/// page starts. Items are sorted by key, and the marker holds the first key of the next page,
/// so a page boundary survives deletions in between.
pub fn page<T>(
    mut items: Vec<(String, T)>,
    marker: Option<&str>,
    max_items: Option<i32>,
) -> Result<(Vec<T>, bool, Option<String>), ApiError> {
    use base64::Engine;
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let start = match marker {
        None => None,
        Some(m) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(m)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("ec2d:iam:").map(str::to_string))
                .ok_or_else(|| error("ValidationError", "Invalid Marker."))?,
        ),
    };
    let max = usize::try_from(max_items.unwrap_or(100).max(1)).unwrap_or(100);
    let mut rest: Vec<(String, T)> = items
        .into_iter()
        .filter(|(k, _)| start.as_ref().is_none_or(|s| k >= s))
        .collect();
    let next = rest.get(max).map(|(k, _)| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("ec2d:iam:{k}"))
    });
    rest.truncate(max);
    let truncated = next.is_some();
    Ok((rest.into_iter().map(|(_, v)| v).collect(), truncated, next))
}

struct Call<'a> {
    api: &'a Api,
    account: &'a str,
    action: &'a str,
    params: QueryNode,
    request_id: &'a str,
}

impl Call<'_> {
    /// Decode the generated input, run the handler in one transaction of the account's global
    /// scope, encode the generated output in IAM's envelope.
    fn run<I, O>(self, handler: fn(&Ctx, I) -> Result<O, ApiError>) -> Result<String, ApiError>
    where
        I: FromQuery,
        O: ToXml,
    {
        let input = I::from_query(self.params, "").map_err(decode_error)?;
        let wrapper = m::GENERATED_OPERATIONS
            .iter()
            .find(|(name, ..)| *name == self.action)
            .and_then(|(_, _, _, wrapper)| *wrapper);
        let (api, action, request_id) = (self.api, self.action, self.request_id);
        let effects = RefCell::new(Vec::new());
        let body = api.store.transaction(self.account, GLOBAL, |tx| {
            let output = handler(&Ctx::new(tx, api, &effects), input)?;
            Ok(xml::query_response(
                m::XML_NAMESPACE,
                action,
                wrapper,
                request_id,
                &output,
            ))
        })?;
        for effect in effects.into_inner() {
            effect();
        }
        Ok(body)
    }
}

/// Decodes, runs and encodes one IAM action for an authenticated caller. Errors carry IAM's
/// codes and statuses; render them with [`error_body`].
pub fn handle(
    api: &Api,
    account: &str,
    action: &str,
    version: Option<&str>,
    params: QueryNode,
    request_id: &str,
) -> Result<String, ApiError> {
    if action.is_empty() {
        return Err(error(
            "MissingAction",
            "The request must contain the parameter Action",
        ));
    }
    match version {
        None => {
            return Err(error(
                "MissingParameter",
                "The request must contain the parameter Version",
            ));
        }
        Some(m::API_VERSION) => {}
        Some(v) => {
            return Err(error(
                "InvalidAction",
                format!("Could not find operation {action} for version {v}"),
            ));
        }
    }
    let call = Call {
        api,
        account,
        action,
        params,
        request_id,
    };
    match action {
        "CreateRole" => call.run(roles::create_role),
        "GetRole" => call.run(roles::get_role),
        "ListRoles" => call.run(roles::list_roles),
        "DeleteRole" => call.run(roles::delete_role),
        "CreateInstanceProfile" => call.run(instance_profiles::create_instance_profile),
        "GetInstanceProfile" => call.run(instance_profiles::get_instance_profile),
        "ListInstanceProfiles" => call.run(instance_profiles::list_instance_profiles),
        "DeleteInstanceProfile" => call.run(instance_profiles::delete_instance_profile),
        "AddRoleToInstanceProfile" => call.run(instance_profiles::add_role_to_instance_profile),
        "RemoveRoleFromInstanceProfile" => {
            call.run(instance_profiles::remove_role_from_instance_profile)
        }
        "ListInstanceProfilesForRole" => {
            call.run(instance_profiles::list_instance_profiles_for_role)
        }
        other if m::ALL_OPERATIONS.contains(&other) => Err(error(
            "UnsupportedOperation",
            format!("The action {other} is valid for IAM but is not implemented by ec2d yet."),
        )),
        other => Err(error(
            "InvalidAction",
            format!(
                "Could not find operation {other} for version {}",
                m::API_VERSION
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_follow_the_model_patterns() {
        assert!(check_name("web-role_1+=,.@", "RoleName").is_ok());
        let e = check_name("bad name", "RoleName").unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert!(e.message.contains("at 'roleName'"), "{}", e.message);
        assert!(check_path("/").is_ok());
        assert!(check_path("/app/web/").is_ok());
        assert!(check_path("app/").is_err());
        assert!(check_path("/app").is_err());
        assert!(check_path("/a b/").is_err());
    }

    #[test]
    fn errors_take_the_model_status() {
        assert_eq!(error("NoSuchEntity", "x").status, 404);
        assert_eq!(error("EntityAlreadyExists", "x").status, 409);
        assert_eq!(error("ValidationError", "x").status, 400);
        assert!(sender_fault(&error("DeleteConflict", "x")));
        assert!(!sender_fault(&error("ServiceFailure", "x")));
        let body = error_body(&error("NoSuchEntity", "gone & lost"), "rid");
        assert!(body.contains("<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type><Code>NoSuchEntity</Code><Message>gone &amp; lost</Message></Error><RequestId>rid</RequestId></ErrorResponse>"), "{body}");
    }

    #[test]
    fn unique_ids_look_like_iam_ids() {
        let id = new_unique_id("AROA");
        assert_eq!(id.len(), 21);
        assert!(id.starts_with("AROA"));
        assert!(
            id[4..]
                .chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
        );
    }

    #[test]
    fn pages_resume_at_the_marker() {
        let items: Vec<(String, u32)> = (0..5).map(|i| (format!("k{i}"), i)).collect();
        let (p1, t1, m1) = page(items.clone(), None, Some(2)).unwrap();
        assert_eq!((p1, t1), (vec![0, 1], true));
        let (p2, _, m2) = page(items.clone(), m1.as_deref(), Some(2)).unwrap();
        assert_eq!(p2, vec![2, 3]);
        let (p3, t3, m3) = page(items.clone(), m2.as_deref(), Some(2)).unwrap();
        assert_eq!((p3, t3, m3), (vec![4], false, None));
        assert!(page(items, Some("junk!"), None).is_err());
    }
}
