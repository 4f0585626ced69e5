//! Machinery every family shares: ids, filters, pagination and tags.

use base64::Engine;
use rand::Rng;

use crate::error::ApiError;
use crate::model::{Filter, Tag, TagSpecification};
use crate::store::Tx;

/// A new EC2-style id: the prefix, a dash and 17 lowercase hex digits.
pub fn new_id(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let digits: String = (0..17)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
        .collect();
    format!("{prefix}-{digits}")
}

/// EC2 accepts the old 8-digit ids as well as the 17-digit ones.
pub fn is_valid_id(prefix: &str, id: &str) -> bool {
    match id.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) {
        Some(hex) => {
            (hex.len() == 8 || hex.len() == 17)
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        None => false,
    }
}

/// `Invalid<Resource>ID.Malformed` for a badly formed id (security groups say `GroupId`).
pub fn check_id(prefix: &str, resource: &str, id: &str) -> Result<(), ApiError> {
    if is_valid_id(prefix, id) {
        return Ok(());
    }
    let code = match resource {
        "Group" => "InvalidGroupId.Malformed".to_string(),
        r => format!("Invalid{r}ID.Malformed"),
    };
    Err(ApiError::new(code, format!("Invalid id: \"{id}\"")))
}

pub fn not_found(resource: &str, what: &str, id: &str) -> ApiError {
    ApiError::new(
        format!("Invalid{resource}ID.NotFound"),
        format!("The {what} ID '{id}' does not exist"),
    )
}

/// Loads a resource by id, with EC2's malformed / not-found errors.
pub fn load<T: serde::de::DeserializeOwned>(
    tx: &Tx<'_>,
    kind: &str,
    prefix: &str,
    resource: &str,
    what: &str,
    id: &str,
) -> Result<T, ApiError> {
    check_id(prefix, resource, id)?;
    tx.get(kind, id)?
        .ok_or_else(|| not_found(resource, what, id))
}

/// `*` matches any run of characters and `?` any one, as in EC2 filter values.
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// What a resource offers to filters: its values for a filter name, or `None` if the
/// family does not know that filter.
pub type FilterValues<'r> = dyn Fn(&str) -> Option<Vec<String>> + 'r;

/// Checks the filter names once, before any resource is looked at, so that an unknown
/// filter is an error even when nothing exists to filter.
pub fn validate_filters(filters: &[Filter], known: &[&str]) -> Result<(), ApiError> {
    for f in filters {
        let name = f
            .name
            .as_deref()
            .ok_or_else(|| ApiError::missing("Filter.Name"))?;
        let generic = name.starts_with("tag:") || name == "tag-key" || name == "tag-value";
        if !generic && !known.contains(&name) {
            return Err(ApiError::invalid_value(format!(
                "The filter '{name}' is invalid"
            )));
        }
    }
    Ok(())
}

/// True when a resource passes every filter (values within one filter are ORed).
pub fn matches(filters: &[Filter], tags: &[Tag], values: &FilterValues<'_>) -> bool {
    filters.iter().all(|f| {
        let name = f.name.as_deref().unwrap_or_default();
        let wanted = f.values.as_deref().unwrap_or_default();
        let have: Vec<String> = if let Some(key) = name.strip_prefix("tag:") {
            tags.iter()
                .filter(|t| t.key.as_deref() == Some(key))
                .filter_map(|t| t.value.clone())
                .collect()
        } else if name == "tag-key" {
            tags.iter().filter_map(|t| t.key.clone()).collect()
        } else if name == "tag-value" {
            tags.iter().filter_map(|t| t.value.clone()).collect()
        } else {
            values(name).unwrap_or_default()
        };
        wanted
            .iter()
            .any(|w| have.iter().any(|h| wildcard_match(w, h)))
    })
}

pub fn bool_str(b: Option<bool>) -> String {
    if b.unwrap_or(false) { "true" } else { "false" }.to_string()
}

/// One page of results with an opaque token for the rest. `max` has been range-checked by
/// the decoder against the model's bounds.
pub fn paginate<T>(
    items: Vec<T>,
    max: Option<i32>,
    token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let start = match token {
        Some(t) => decode_token(t)?,
        None => 0,
    };
    let Some(max) = max else {
        if start == 0 {
            return Ok((items, None));
        }
        return Ok((items.into_iter().skip(start).collect(), None));
    };
    let max = usize::try_from(max.max(1)).unwrap_or(1);
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let next = (start + max < total).then(|| encode_token(start + max));
    Ok((page, next))
}

fn encode_token(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("ec2d:v1:{offset}"))
}

fn decode_token(token: &str) -> Result<usize, ApiError> {
    let bad = || {
        ApiError::new(
            "InvalidPaginationToken",
            format!("The pagination token '{token}' is not valid or has expired."),
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    text.strip_prefix("ec2d:v1:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)
}

/// Rejects `*Ids` together with `MaxResults`, as EC2 does.
pub fn ids_or_pages<T>(ids: &Option<Vec<T>>, max: Option<i32>, what: &str) -> Result<(), ApiError> {
    if ids.as_ref().is_some_and(|v| !v.is_empty()) && max.is_some() {
        return Err(ApiError::combination(format!(
            "The parameter {what} cannot be used with the parameter maxResults"
        )));
    }
    Ok(())
}

fn check_tag(t: &Tag) -> Result<(&str, &str), ApiError> {
    let key = t
        .key
        .as_deref()
        .ok_or_else(|| ApiError::missing("Tag.Key"))?;
    let value = t.value.as_deref().unwrap_or("");
    if key.is_empty() || key.chars().count() > 128 {
        return Err(ApiError::invalid_value(
            "Tag keys must be between 1 and 128 Unicode characters long",
        ));
    }
    if key.starts_with("aws:") {
        return Err(ApiError::invalid_value(
            "Tag keys starting with 'aws:' are reserved for internal use",
        ));
    }
    if value.chars().count() > 256 {
        return Err(ApiError::invalid_value(
            "Tag values may be at most 256 Unicode characters long",
        ));
    }
    Ok((key, value))
}

/// Applies tags to a resource, enforcing EC2's limit of 50 per resource.
pub fn apply_tags(tx: &Tx<'_>, id: &str, tags: &[Tag]) -> Result<(), ApiError> {
    for t in tags {
        let (k, v) = check_tag(t)?;
        tx.set_tag(id, k, v)?;
    }
    if tx.tags(id)?.len() > 50 {
        return Err(ApiError::new(
            "TagLimitExceeded",
            format!("The maximum number of tags (50) for resource {id} was exceeded"),
        ));
    }
    Ok(())
}

/// `TagSpecifications` at creation time: only specs for this resource type apply, and a
/// spec naming a type this action cannot create is an error.
pub fn apply_tag_specs(
    tx: &Tx<'_>,
    id: &str,
    resource_type: &str,
    specs: Option<&Vec<TagSpecification>>,
) -> Result<(), ApiError> {
    for spec in specs.into_iter().flatten() {
        let ty = spec
            .resource_type
            .as_deref()
            .ok_or_else(|| ApiError::missing("TagSpecification.ResourceType"))?;
        if ty != resource_type {
            return Err(ApiError::invalid_value(format!(
                "'{ty}' is not a valid taggable resource type for this operation."
            )));
        }
        apply_tags(tx, id, spec.tags.as_deref().unwrap_or_default())?;
    }
    Ok(())
}

/// Tags for a describe result: absent rather than empty, as EC2 omits an empty tagSet.
pub fn tag_set(tx: &Tx<'_>, id: &str) -> Result<Option<Vec<Tag>>, ApiError> {
    let tags = tx.tags(id)?;
    Ok((!tags.is_empty()).then_some(tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("vpc-*", "vpc-0123"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "abbc"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*b*", "abc"));
        assert!(!wildcard_match("b", "abc"));
    }

    #[test]
    fn ids() {
        let id = new_id("vpc");
        assert!(is_valid_id("vpc", &id), "{id}");
        assert_eq!(id.len(), 4 + 17);
        assert!(is_valid_id("vpc", "vpc-1a2b3c4d"));
        assert!(!is_valid_id("vpc", "vpc-XYZ"));
        assert!(!is_valid_id("vpc", "subnet-1a2b3c4d"));
    }

    #[test]
    fn pages() {
        let items: Vec<i32> = (0..12).collect();
        let (p1, t1) = paginate(items.clone(), Some(5), None).unwrap();
        assert_eq!(p1, vec![0, 1, 2, 3, 4]);
        let (p2, t2) = paginate(items.clone(), Some(5), t1.as_deref()).unwrap();
        assert_eq!(p2, vec![5, 6, 7, 8, 9]);
        let (p3, t3) = paginate(items.clone(), Some(5), t2.as_deref()).unwrap();
        assert_eq!(p3, vec![10, 11]);
        assert!(t3.is_none());
        assert!(paginate(items, Some(5), Some("garbage")).is_err());
    }
}
