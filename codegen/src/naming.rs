//! Rust identifiers from model names.

const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

/// `IpPermissions` → `ip_permissions`, `VpcIPv6CidrBlock` → `vpc_i_pv6_cidr_block` would be ugly,
/// so runs of capitals are kept together: `DHCPOptions` → `dhcp_options`.
pub fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = if i > 0 { Some(chars[i - 1]) } else { None };
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                None => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if KEYWORDS.contains(&out.as_str()) {
        out = format!("r#{out}");
    }
    out
}

/// Type names keep the model's spelling, but must not shadow the prelude.
pub fn type_name(shape: &str) -> String {
    let mut s: String = shape
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if let Some(first) = s.get(0..1) {
        let up = first.to_ascii_uppercase();
        s.replace_range(0..1, &up);
    }
    match s.as_str() {
        "Option" | "Result" | "Vec" | "String" | "Box" | "Self" | "Some" | "None" | "Ok"
        | "Err" => format!("{s}Shape"),
        _ => s,
    }
}

/// Botocore's EC2 serializer: queryName, else locationName capitalised, else the member name
/// capitalised.
pub fn query_name(member_name: &str, member: &serde_json::Value) -> String {
    if let Some(q) = member.get("queryName").and_then(|v| v.as_str()) {
        return q.to_string();
    }
    let base = member
        .get("locationName")
        .and_then(|v| v.as_str())
        .unwrap_or(member_name);
    let mut s = base.to_string();
    if let Some(first) = s.get(0..1) {
        let up = first.to_ascii_uppercase();
        s.replace_range(0..1, &up);
    }
    s
}

/// Botocore's query serializer: the member's `locationName`, else its name, as written.
pub fn serialized_name(member_name: &str, member: &serde_json::Value) -> String {
    member
        .get("locationName")
        .and_then(|v| v.as_str())
        .unwrap_or(member_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_cases() {
        assert_eq!(snake("IpPermissions"), "ip_permissions");
        assert_eq!(snake("DHCPOptionsId"), "dhcp_options_id");
        assert_eq!(snake("Ipv6CidrBlock"), "ipv6_cidr_block");
        assert_eq!(snake("Type"), "r#type");
        assert_eq!(snake("VpcId"), "vpc_id");
    }
}
