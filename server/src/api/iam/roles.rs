//! IAM roles: CreateRole, GetRole, ListRoles, DeleteRole.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{check_name, check_path, error, name_key, new_unique_id, page};
use crate::api::Ctx;
use crate::error::ApiError;
use crate::model::iam::{
    CreateRoleRequest, CreateRoleResponse, DeleteRoleRequest, GetRoleRequest, GetRoleResponse,
    ListRolesRequest, ListRolesResponse, Role, RoleLastUsed,
};
use crate::protocol::types::Timestamp;
use crate::store::{GLOBAL, Tx};

pub const KIND: &str = "iam-role";

/// What IAM leaves unescaped when it returns a policy document: RFC 3986's unreserved
/// characters. botocore `unquote`s and parses the result, so spaces must be `%20`, never `+`.
const POLICY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A role by name (any case), as stored.
pub fn find(tx: &Tx<'_>, name: &str) -> Result<Option<Role>, ApiError> {
    tx.get_in(GLOBAL, KIND, &name_key(name))
}

/// A role by name, or IAM's `NoSuchEntity`.
pub fn load(tx: &Tx<'_>, name: &str) -> Result<Role, ApiError> {
    find(tx, name)?.ok_or_else(|| {
        error(
            "NoSuchEntity",
            format!("The role with name {name} cannot be found."),
        )
    })
}

/// A role as IAM's listings show it: they leave out tags, last use and the permissions
/// boundary.
pub fn listed(mut role: Role) -> Role {
    role.tags = None;
    role.role_last_used = None;
    role.permissions_boundary = None;
    role
}

/// `policyDocumentType`: the characters the model's pattern allows, and JSON, as IAM checks
/// before it looks at the policy's grammar.
fn check_policy(doc: &str) -> Result<(), ApiError> {
    let allowed = |c: char| matches!(c, '\t' | '\n' | '\r') || ('\u{20}'..='\u{ff}').contains(&c);
    if !doc.chars().all(allowed) {
        return Err(super::pattern_error(
            doc,
            "AssumeRolePolicyDocument",
            r"[\u0009\u000A\u000D\u0020-\u00FF]+",
        ));
    }
    match serde_json::from_str::<serde_json::Value>(doc) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(error(
            "MalformedPolicyDocument",
            "This policy contains invalid Json",
        )),
    }
}

pub fn create_role(ctx: &Ctx, input: CreateRoleRequest) -> Result<CreateRoleResponse, ApiError> {
    let name = input.role_name;
    check_name(&name, "RoleName")?;
    let path = input.path.unwrap_or_else(|| "/".to_string());
    check_path(&path)?;
    check_policy(&input.assume_role_policy_document)?;
    if find(ctx.tx, &name)?.is_some() {
        return Err(error(
            "EntityAlreadyExists",
            format!("Role with name {name} already exists."),
        ));
    }
    let role = Role {
        arn: format!("arn:aws:iam::{}:role{path}{name}", ctx.account()),
        role_id: new_unique_id("AROA"),
        path,
        create_date: Timestamp::now(),
        // IAM returns the document URL-encoded, exactly as it was sent.
        assume_role_policy_document: Some(
            utf8_percent_encode(&input.assume_role_policy_document, POLICY_ESCAPE).to_string(),
        ),
        description: input.description,
        max_session_duration: Some(input.max_session_duration.unwrap_or(3600)),
        permissions_boundary: None,
        tags: input.tags.filter(|t| !t.is_empty()),
        role_last_used: None,
        role_name: name.clone(),
    };
    ctx.tx.insert_in(GLOBAL, KIND, &name_key(&name), &role)?;
    Ok(CreateRoleResponse { role })
}

pub fn get_role(ctx: &Ctx, input: GetRoleRequest) -> Result<GetRoleResponse, ApiError> {
    let mut role = load(ctx.tx, &input.role_name)?;
    // GetRole always shows when the role was last used; ec2d does not track use, so it is
    // the empty structure IAM shows for a role never used.
    role.role_last_used = Some(RoleLastUsed::default());
    Ok(GetRoleResponse { role })
}

pub fn list_roles(ctx: &Ctx, input: ListRolesRequest) -> Result<ListRolesResponse, ApiError> {
    let prefix = input.path_prefix.unwrap_or_else(|| "/".to_string());
    let roles: Vec<(String, Role)> = ctx
        .tx
        .list_in::<Role>(GLOBAL, KIND)?
        .into_iter()
        .filter(|r| r.path.starts_with(&prefix))
        .map(|r| (name_key(&r.role_name), listed(r)))
        .collect();
    let (roles, truncated, marker) = page(roles, input.marker.as_deref(), input.max_items)?;
    Ok(ListRolesResponse {
        roles,
        is_truncated: Some(truncated),
        marker,
    })
}

pub fn delete_role(ctx: &Ctx, input: DeleteRoleRequest) -> Result<(), ApiError> {
    let role = load(ctx.tx, &input.role_name)?;
    let key = name_key(&role.role_name);
    if super::instance_profiles::holding(ctx.tx, &key)?
        .next()
        .is_some()
    {
        return Err(error(
            "DeleteConflict",
            "Cannot delete entity, must remove roles from instance profile first.",
        ));
    }
    ctx.tx.delete_in(GLOBAL, KIND, &key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_documents_must_be_json_objects() {
        assert!(check_policy(r#"{"Version":"2012-10-17","Statement":[]}"#).is_ok());
        for bad in ["not json", "[1]", "{", "\"s\""] {
            let e = check_policy(bad).unwrap_err();
            assert_eq!(
                (e.code.as_ref(), e.message.as_str()),
                (
                    "MalformedPolicyDocument",
                    "This policy contains invalid Json"
                )
            );
        }
        assert_eq!(
            check_policy("{\u{1F600}}").unwrap_err().code,
            "ValidationError"
        );
    }

    #[test]
    fn documents_are_returned_url_encoded() {
        let doc = r#"{"Effect": "Allow", "Action": "sts:AssumeRole"}"#;
        let enc = utf8_percent_encode(doc, POLICY_ESCAPE).to_string();
        assert_eq!(
            enc,
            "%7B%22Effect%22%3A%20%22Allow%22%2C%20%22Action%22%3A%20%22sts%3AAssumeRole%22%7D"
        );
    }
}
