//! EC2 Query decoding: flat `Name.N.Member` parameters → a tree → generated input types.

use std::collections::BTreeMap;

use super::types::{Blob, Timestamp};

/// Why a query could not be decoded; each maps to the EC2 error code of the same name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("The parameter {0} is not recognized")]
    UnknownParameter(String),
    #[error("The request must contain the parameter {0}")]
    MissingParameter(String),
    #[error("{0}")]
    InvalidParameterValue(String),
    /// A length or bound the model states, broken; query-protocol services (IAM) answer
    /// these as `ValidationError` with this wording.
    #[error("{0}")]
    ValidationError(String),
}

/// One level of the parameter tree. `Filter.1.Value.2=x` becomes
/// `Filter → 1 → Value → 2 = "x"`.
#[derive(Debug, Default, Clone)]
pub struct QueryNode {
    value: Option<String>,
    children: BTreeMap<String, QueryNode>,
}

impl QueryNode {
    /// Builds the tree from decoded `key=value` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut root = QueryNode::default();
        for (k, v) in pairs {
            let mut node = &mut root;
            for part in k.split('.') {
                node = node.children.entry(part.to_string()).or_default();
            }
            node.value = Some(v.to_string());
        }
        root
    }

    pub fn leaf(value: &str) -> Self {
        QueryNode {
            value: Some(value.to_string()),
            children: BTreeMap::new(),
        }
    }

    /// Removes and returns a top-level entry; used for the protocol parameters (Action, Version).
    pub fn take_value(&mut self, key: &str) -> Option<String> {
        self.children.remove(key).and_then(|n| n.value)
    }

    pub fn has(&self, key: &str) -> bool {
        self.children.contains_key(key)
    }

    pub fn get_value(&self, key: &str) -> Option<&str> {
        self.children.get(key).and_then(|n| n.value.as_deref())
    }

    /// A member that may be absent.
    pub fn member<T: FromQuery>(
        &mut self,
        path: &str,
        key: &str,
    ) -> Result<Option<T>, DecodeError> {
        match self.children.remove(key) {
            Some(child) => T::from_query(child, &join(path, key)).map(Some),
            None => Ok(None),
        }
    }

    /// A member the model marks required.
    pub fn required<T: FromQuery>(&mut self, path: &str, key: &str) -> Result<T, DecodeError> {
        self.member(path, key)?
            .ok_or_else(|| DecodeError::MissingParameter(join(path, key)))
    }

    /// A list in the query protocol's wrapped form, `Key.member.N` (`item` is the model's
    /// name for the items, `member` unless it says otherwise).
    pub fn wrapped_list<T: FromQuery>(
        &mut self,
        path: &str,
        key: &str,
        item: &str,
    ) -> Result<Option<Vec<T>>, DecodeError> {
        let Some(mut node) = self.children.remove(key) else {
            return Ok(None);
        };
        let here = join(path, key);
        // `Key=` with no items is how botocore sends an empty list.
        if node.value.as_deref() == Some("") && node.children.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let items = node.children.remove(item).unwrap_or_default();
        node.finish(&here)?;
        Vec::<T>::from_query(items, &join(&here, item)).map(Some)
    }

    /// A wrapped list the model marks required.
    pub fn required_wrapped_list<T: FromQuery>(
        &mut self,
        path: &str,
        key: &str,
        item: &str,
    ) -> Result<Vec<T>, DecodeError> {
        self.wrapped_list(path, key, item)?
            .ok_or_else(|| DecodeError::MissingParameter(join(path, key)))
    }

    /// Anything left over after a structure took its members is unknown to the model.
    pub fn finish(self, path: &str) -> Result<(), DecodeError> {
        if let Some(k) = self.children.keys().next() {
            return Err(DecodeError::UnknownParameter(join(path, k)));
        }
        if self.value.is_some() && !path.is_empty() {
            return Err(DecodeError::UnknownParameter(path.to_string()));
        }
        Ok(())
    }

    fn scalar(self, path: &str) -> Result<String, DecodeError> {
        if let Some(k) = self.children.keys().next() {
            return Err(DecodeError::UnknownParameter(join(path, k)));
        }
        self.value
            .ok_or_else(|| DecodeError::MissingParameter(path.to_string()))
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn invalid(path: &str, value: &str) -> DecodeError {
    DecodeError::InvalidParameterValue(format!("Value ({value}) for parameter {path} is invalid."))
}

/// Decoding of one generated or scalar type from its node.
pub trait FromQuery: Sized {
    fn from_query(node: QueryNode, path: &str) -> Result<Self, DecodeError>;
}

impl FromQuery for String {
    fn from_query(node: QueryNode, path: &str) -> Result<Self, DecodeError> {
        node.scalar(path)
    }
}

impl FromQuery for i32 {
    fn from_query(node: QueryNode, path: &str) -> Result<Self, DecodeError> {
        let s = node.scalar(path)?;
        s.trim().parse().map_err(|_| invalid(path, &s))
    }
}

impl FromQuery for i64 {
    fn from_query(node: QueryNode, path: &str) -> Result<Self, DecodeError> {
        let s = node.scalar(path)?;
        s.trim().parse().map_err(|_| invalid(path, &s))
    }
}

impl FromQuery for f64 {
    fn from_query(node: QueryNode, path: &str) -> Result<Self, DecodeError> {
        let s = node.scalar(path)?;
        match s.trim() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            t => t
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| invalid(path, &s)),
        }
    }
}

impl<T: FromQuery> FromQuery for Box<T> {
    fn from_query(node: QueryNode, path: &str) -> Result<Self, DecodeError> {
        T::from_query(node, path).map(Box::new)
    }
}

/// Query maps: `Name.entry.N.key` / `Name.entry.N.value`.
impl<V: FromQuery> FromQuery for std::collections::BTreeMap<String, V> {
    fn from_query(mut node: QueryNode, path: &str) -> Result<Self, DecodeError> {
        let mut out = std::collections::BTreeMap::new();
        let entries = node.children.remove("entry").unwrap_or_default();
        node.finish(path)?;
        let entry_path = join(path, "entry");
        for (i, mut e) in entries.children {
            let p = join(&entry_path, &i);
            let k: String = e.required(&p, "key")?;
            let v: V = e.required(&p, "value")?;
            e.finish(&p)?;
            out.insert(k, v);
        }
        Ok(out)
    }
}

impl FromQuery for bool {
    fn from_query(node: QueryNode, path: &str) -> Result<Self, DecodeError> {
        let s = node.scalar(path)?;
        match s.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(invalid(path, &s)),
        }
    }
}

impl FromQuery for Blob {
    fn from_query(node: QueryNode, path: &str) -> Result<Self, DecodeError> {
        use base64::Engine;
        let s = node.scalar(path)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map(Blob)
            .map_err(|_| invalid(path, &s))
    }
}

impl FromQuery for Timestamp {
    fn from_query(node: QueryNode, path: &str) -> Result<Self, DecodeError> {
        let s = node.scalar(path)?;
        Timestamp::parse(&s).ok_or_else(|| invalid(path, &s))
    }
}

/// EC2 lists are always flattened on input: `Name.1`, `Name.2`, … in index order.
impl<T: FromQuery> FromQuery for Vec<T> {
    fn from_query(node: QueryNode, path: &str) -> Result<Self, DecodeError> {
        // `Name=` with no items is how clients send an empty list.
        if node.value.as_deref() == Some("") && node.children.is_empty() {
            return Ok(Vec::new());
        }
        if node.value.is_some() {
            return Err(DecodeError::UnknownParameter(path.to_string()));
        }
        let mut items = Vec::with_capacity(node.children.len());
        for (k, child) in node.children {
            let index: u32 = match k.parse() {
                Ok(i) if i >= 1 => i,
                _ => return Err(DecodeError::UnknownParameter(join(path, &k))),
            };
            items.push((index, child, k));
        }
        items.sort_by_key(|(i, _, _)| *i);
        items
            .into_iter()
            .map(|(_, child, k)| T::from_query(child, &join(path, &k)))
            .collect()
    }
}

pub fn check_enum(
    path: &str,
    key: &str,
    value: Option<&str>,
    allowed: &[&str],
) -> Result<(), DecodeError> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(invalid(&join(path, key), v)),
        _ => Ok(()),
    }
}

pub fn check_enum_list(
    path: &str,
    key: &str,
    values: Option<&Vec<String>>,
    allowed: &[&str],
) -> Result<(), DecodeError> {
    for v in values.into_iter().flatten() {
        check_enum(path, key, Some(v), allowed)?;
    }
    Ok(())
}

pub fn check_range(
    path: &str,
    key: &str,
    value: Option<i64>,
    min: Option<i64>,
    max: Option<i64>,
) -> Result<(), DecodeError> {
    let Some(v) = value else { return Ok(()) };
    let name = join(path, key);
    if min.is_some_and(|m| v < m) || max.is_some_and(|m| v > m) {
        let bounds = match (min, max) {
            (Some(a), Some(b)) => format!("between {a} and {b}"),
            (Some(a), None) => format!("at least {a}"),
            (None, Some(b)) => format!("at most {b}"),
            (None, None) => String::new(),
        };
        return Err(DecodeError::InvalidParameterValue(format!(
            "Value ({v}) for parameter {name} is invalid. Expecting a value {bounds}."
        )));
    }
    Ok(())
}

/// A member's path as query services name it in validation messages: `Tags.member.1.Key`
/// becomes `tags.member.1.key`.
pub fn member_path(path: &str, key: &str) -> String {
    join(path, key)
        .split('.')
        .map(|seg| {
            let mut c = seg.chars();
            match c.next() {
                Some(f) => f.to_lowercase().chain(c).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(".")
}

fn validation(value: &str, path: &str, key: &str, constraint: &str) -> DecodeError {
    DecodeError::ValidationError(format!(
        "1 validation error detected: Value {value} at '{}' failed to satisfy constraint: \
         Member must {constraint}",
        member_path(path, key)
    ))
}

/// Query protocol: a string's length (in characters) within the model's bounds.
pub fn check_length(
    path: &str,
    key: &str,
    value: Option<&str>,
    min: Option<i64>,
    max: Option<i64>,
) -> Result<(), DecodeError> {
    let Some(v) = value else { return Ok(()) };
    let n = v.chars().count() as i64;
    let quoted = format!("'{v}'");
    if let Some(m) = min.filter(|m| n < *m) {
        return Err(validation(
            &quoted,
            path,
            key,
            &format!("have length greater than or equal to {m}"),
        ));
    }
    if let Some(m) = max.filter(|m| n > *m) {
        return Err(validation(
            &quoted,
            path,
            key,
            &format!("have length less than or equal to {m}"),
        ));
    }
    Ok(())
}

/// Query protocol: a list's item count within the model's bounds.
pub fn check_count(
    path: &str,
    key: &str,
    len: Option<usize>,
    min: Option<i64>,
    max: Option<i64>,
) -> Result<(), DecodeError> {
    let Some(n) = len else { return Ok(()) };
    let n = n as i64;
    let desc = format!("with {n} items");
    if let Some(m) = min.filter(|m| n < *m) {
        return Err(validation(
            &desc,
            path,
            key,
            &format!("have length greater than or equal to {m}"),
        ));
    }
    if let Some(m) = max.filter(|m| n > *m) {
        return Err(validation(
            &desc,
            path,
            key,
            &format!("have length less than or equal to {m}"),
        ));
    }
    Ok(())
}

/// Query protocol: a number within the model's bounds.
pub fn check_bounds(
    path: &str,
    key: &str,
    value: Option<i64>,
    min: Option<i64>,
    max: Option<i64>,
) -> Result<(), DecodeError> {
    let Some(v) = value else { return Ok(()) };
    let quoted = format!("'{v}'");
    if let Some(m) = min.filter(|m| v < *m) {
        return Err(validation(
            &quoted,
            path,
            key,
            &format!("have value greater than or equal to {m}"),
        ));
    }
    if let Some(m) = max.filter(|m| v > *m) {
        return Err(validation(
            &quoted,
            path,
            key,
            &format!("have value less than or equal to {m}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_sort_by_index_and_reject_bad_keys() {
        let node = QueryNode::from_pairs([("L.2", "b"), ("L.10", "c"), ("L.1", "a")]);
        let mut node = node;
        let v: Option<Vec<String>> = node.member("", "L").unwrap();
        assert_eq!(v.unwrap(), vec!["a", "b", "c"]);

        let mut node = QueryNode::from_pairs([("L.x", "b")]);
        let err = node.member::<Vec<String>>("", "L").unwrap_err();
        assert_eq!(err, DecodeError::UnknownParameter("L.x".into()));
    }

    #[test]
    fn wrapped_lists_take_member_items() {
        let mut node = QueryNode::from_pairs([("T.member.2", "b"), ("T.member.1", "a"), ("E", "")]);
        let v: Option<Vec<String>> = node.wrapped_list("", "T", "member").unwrap();
        assert_eq!(v.unwrap(), vec!["a", "b"]);
        let e: Option<Vec<String>> = node.wrapped_list("", "E", "member").unwrap();
        assert_eq!(e.unwrap(), Vec::<String>::new());
        let none: Option<Vec<String>> = node.wrapped_list("", "X", "member").unwrap();
        assert!(none.is_none());

        // The EC2 form is not the query form.
        let mut node = QueryNode::from_pairs([("T.1", "a")]);
        let err = node.wrapped_list::<String>("", "T", "member").unwrap_err();
        assert_eq!(err, DecodeError::UnknownParameter("T.1".into()));
    }

    #[test]
    fn query_constraints_are_worded_as_validation_errors() {
        let e = check_length("", "RoleName", Some(&"x".repeat(65)), Some(1), Some(64)).unwrap_err();
        assert!(
            matches!(&e, DecodeError::ValidationError(m)
            if m.contains("at 'roleName' failed to satisfy constraint: Member must have length less than or equal to 64")),
            "{e}"
        );
        assert!(check_length("", "RoleName", Some("ok"), Some(1), Some(64)).is_ok());
        let e = check_bounds("", "MaxItems", Some(0), Some(1), Some(1000)).unwrap_err();
        assert!(e.to_string().contains("Value '0' at 'maxItems'"), "{e}");
        assert!(check_count("", "Tags", Some(51), None, Some(50)).is_err());
        assert_eq!(member_path("Tags.member.1", "Key"), "tags.member.1.key");
    }

    #[test]
    fn scalars_validate() {
        let mut node = QueryNode::from_pairs([("B", "yes"), ("I", "12x")]);
        assert!(matches!(
            node.member::<bool>("", "B"),
            Err(DecodeError::InvalidParameterValue(_))
        ));
        assert!(matches!(
            node.member::<i32>("", "I"),
            Err(DecodeError::InvalidParameterValue(_))
        ));
        let node = QueryNode::from_pairs([("Extra", "1")]);
        assert_eq!(
            node.finish(""),
            Err(DecodeError::UnknownParameter("Extra".into()))
        );
    }
}
