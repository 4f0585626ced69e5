//! Key pairs: created (the private key is returned once and never kept) or imported.

pub mod crypto;

use crate::api::Ctx;
use crate::api::common::{apply_tag_specs, check_id, matches, new_id, tag_set, validate_filters};
use crate::error::ApiError;
use crate::model::{
    CreateKeyPairRequest, DeleteKeyPairRequest, DeleteKeyPairResult, DescribeKeyPairsRequest,
    DescribeKeyPairsResult, ImportKeyPairRequest, ImportKeyPairResult, KeyPair, KeyPairInfo,
};
use crate::protocol::types::Timestamp;

pub const KIND: &str = "key-pair";

fn all(ctx: &Ctx) -> Result<Vec<KeyPairInfo>, ApiError> {
    ctx.tx.list(KIND)
}

fn by_name(ctx: &Ctx, name: &str) -> Result<Option<KeyPairInfo>, ApiError> {
    Ok(all(ctx)?
        .into_iter()
        .find(|k| k.key_name.as_deref() == Some(name)))
}

/// The public key of a named key pair, for instances launched with it.
pub fn public_key(ctx: &Ctx, name: &str) -> Result<Option<String>, ApiError> {
    Ok(by_name(ctx, name)?.and_then(|k| k.public_key))
}

fn check_name(ctx: &Ctx, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 255 || !name.is_ascii() {
        return Err(ApiError::invalid_value(format!(
            "Value ({name}) for parameter keyName is invalid. Key names must be 1 to 255 ASCII characters."
        )));
    }
    if by_name(ctx, name)?.is_some() {
        return Err(ApiError::new(
            "InvalidKeyPair.Duplicate",
            format!("The keypair '{name}' already exists."),
        ));
    }
    Ok(())
}

fn store(
    ctx: &Ctx,
    name: &str,
    key_type: &str,
    fingerprint: &str,
    public: &str,
    tags: Option<&Vec<crate::model::TagSpecification>>,
) -> Result<KeyPairInfo, ApiError> {
    let id = new_id("key");
    let info = KeyPairInfo {
        key_pair_id: Some(id.clone()),
        key_type: Some(key_type.to_string()),
        // EC2 shows the key name as the public key's comment.
        public_key: Some(format!("{} {name}", public.trim_end())),
        create_time: Some(Timestamp::now()),
        key_name: Some(name.to_string()),
        key_fingerprint: Some(fingerprint.to_string()),
        tags: None,
    };
    ctx.tx.insert(KIND, &id, &info)?;
    apply_tag_specs(ctx.tx, &id, "key-pair", tags)?;
    Ok(info)
}

pub fn create_key_pair(ctx: &Ctx, input: CreateKeyPairRequest) -> Result<KeyPair, ApiError> {
    check_name(ctx, &input.key_name)?;
    let key_type = input.key_type.as_deref().unwrap_or("rsa");
    if let Some(format) = &input.key_format {
        crypto::check_key_format(format).map_err(|e| ApiError::invalid_value(e.to_string()))?;
    }
    let kt: crypto::KeyType = key_type
        .parse()
        .map_err(|e: crypto::KeyError| ApiError::invalid_value(e.to_string()))?;
    let generated = crypto::generate(kt).map_err(|e| ApiError::internal(e.to_string()))?;
    let info = store(
        ctx,
        &input.key_name,
        key_type,
        &generated.fingerprint,
        &generated.public_openssh,
        input.tag_specifications.as_ref(),
    )?;
    let id = info.key_pair_id.clone().unwrap_or_default();
    Ok(KeyPair {
        key_pair_id: Some(id.clone()),
        tags: tag_set(ctx.tx, &id)?,
        key_name: info.key_name,
        key_fingerprint: info.key_fingerprint,
        key_material: Some(generated.private_key_pem),
    })
}

pub fn import_key_pair(
    ctx: &Ctx,
    input: ImportKeyPairRequest,
) -> Result<ImportKeyPairResult, ApiError> {
    check_name(ctx, &input.key_name)?;
    let imported = crypto::import(&input.public_key_material.0).map_err(|e| {
        ApiError::new(
            "InvalidKey.Format",
            format!("Key is not in valid OpenSSH public key format: {e}"),
        )
    })?;
    let key_type = imported.key_type.as_str();
    let info = store(
        ctx,
        &input.key_name,
        key_type,
        &imported.fingerprint,
        &imported.public_openssh,
        input.tag_specifications.as_ref(),
    )?;
    let id = info.key_pair_id.clone().unwrap_or_default();
    Ok(ImportKeyPairResult {
        key_fingerprint: info.key_fingerprint,
        key_name: info.key_name,
        key_pair_id: Some(id.clone()),
        tags: tag_set(ctx.tx, &id)?,
    })
}

const FILTERS: &[&str] = &["key-pair-id", "fingerprint", "key-name", "key-type"];

pub fn describe_key_pairs(
    ctx: &Ctx,
    input: DescribeKeyPairsRequest,
) -> Result<DescribeKeyPairsResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, FILTERS)?;
    let keys = all(ctx)?;
    let names = input.key_names.unwrap_or_default();
    let ids = input.key_pair_ids.unwrap_or_default();
    for n in &names {
        if !keys
            .iter()
            .any(|k| k.key_name.as_deref() == Some(n.as_str()))
        {
            return Err(ApiError::new(
                "InvalidKeyPair.NotFound",
                format!("The key pair '{n}' does not exist"),
            ));
        }
    }
    for id in &ids {
        check_id("key", "KeyPair", id)?;
        if !keys
            .iter()
            .any(|k| k.key_pair_id.as_deref() == Some(id.as_str()))
        {
            return Err(ApiError::new(
                "InvalidKeyPair.NotFound",
                format!("The key pair '{id}' does not exist"),
            ));
        }
    }
    let include_public = input.include_public_key == Some(true);
    let mut out = Vec::new();
    for mut k in keys {
        let selected = (names.is_empty() && ids.is_empty())
            || k.key_name.as_ref().is_some_and(|n| names.contains(n))
            || k.key_pair_id.as_ref().is_some_and(|i| ids.contains(i));
        if !selected {
            continue;
        }
        let id = k.key_pair_id.clone().unwrap_or_default();
        let tags = ctx.tx.tags(&id)?;
        let values = |f: &str| {
            let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
            Some(match f {
                "key-pair-id" => vec![id.clone()],
                "fingerprint" => one(&k.key_fingerprint),
                "key-name" => one(&k.key_name),
                "key-type" => one(&k.key_type),
                _ => Vec::new(),
            })
        };
        if matches(&filters, &tags, &values) {
            k.tags = Some(tags);
            if !include_public {
                k.public_key = None;
            }
            out.push(k);
        }
    }
    Ok(DescribeKeyPairsResult {
        key_pairs: Some(out),
    })
}

pub fn delete_key_pair(
    ctx: &Ctx,
    input: DeleteKeyPairRequest,
) -> Result<DeleteKeyPairResult, ApiError> {
    let key = match (&input.key_pair_id, &input.key_name) {
        (Some(id), _) => {
            check_id("key", "KeyPair", id)?;
            let k: Option<KeyPairInfo> = ctx.tx.get(KIND, id)?;
            Some(k.ok_or_else(|| {
                ApiError::new(
                    "InvalidKeyPair.NotFound",
                    format!("The key pair '{id}' does not exist"),
                )
            })?)
        }
        // Deleting an unknown name succeeds, as on EC2.
        (None, Some(name)) => by_name(ctx, name)?,
        (None, None) => return Err(ApiError::missing("KeyName")),
    };
    let id = key.and_then(|k| k.key_pair_id);
    if let Some(id) = &id {
        ctx.tx.delete(KIND, id)?;
    }
    Ok(DeleteKeyPairResult {
        r#return: Some(true),
        key_pair_id: id,
    })
}
