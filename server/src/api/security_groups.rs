//! Security groups and their rules.
//!
//! Rules are stored one per source (the `SecurityGroupRule` shape, which has ids); the
//! grouped `IpPermissions` view of DescribeSecurityGroups is built from them.

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::api::common::{
    apply_tag_specs, check_id, ids_or_pages, matches, new_id, paginate, tag_set, validate_filters,
};
use crate::api::{Ctx, subnets, vpcs};
use crate::error::ApiError;
use crate::model::{
    AuthorizeSecurityGroupEgressRequest, AuthorizeSecurityGroupEgressResult,
    AuthorizeSecurityGroupIngressRequest, AuthorizeSecurityGroupIngressResult,
    CreateSecurityGroupRequest, CreateSecurityGroupResult, DeleteSecurityGroupRequest,
    DeleteSecurityGroupResult, DescribeSecurityGroupRulesRequest, DescribeSecurityGroupRulesResult,
    DescribeSecurityGroupsRequest, DescribeSecurityGroupsResult, IpPermission, IpRange, Ipv6Range,
    PrefixListId, ReferencedSecurityGroup, RevokeSecurityGroupEgressRequest,
    RevokeSecurityGroupEgressResult, RevokeSecurityGroupIngressRequest,
    RevokeSecurityGroupIngressResult, RevokedSecurityGroupRule, SecurityGroup, SecurityGroupRule,
    Tag, TagSpecification, UserIdGroupPair,
};

pub const KIND: &str = "security-group";
pub const RULE_KIND: &str = "security-group-rule";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupRecord {
    pub group: SecurityGroup,
    pub is_default: bool,
}

fn group_arn(ctx: &Ctx, id: &str) -> String {
    format!(
        "arn:aws:ec2:{}:{}:security-group/{id}",
        ctx.region(),
        ctx.account()
    )
}

fn groups(ctx: &Ctx) -> Result<Vec<GroupRecord>, ApiError> {
    ctx.tx.list(KIND)
}

fn rules(ctx: &Ctx) -> Result<Vec<SecurityGroupRule>, ApiError> {
    ctx.tx.list(RULE_KIND)
}

fn insert_group(
    ctx: &Ctx,
    vpc_id: &str,
    name: &str,
    description: &str,
    is_default: bool,
) -> Result<String, ApiError> {
    let id = new_id("sg");
    let rec = GroupRecord {
        group: SecurityGroup {
            group_id: Some(id.clone()),
            vpc_id: Some(vpc_id.to_string()),
            security_group_arn: Some(group_arn(ctx, &id)),
            owner_id: Some(ctx.account().to_string()),
            group_name: Some(name.to_string()),
            description: Some(description.to_string()),
            ..Default::default()
        },
        is_default,
    };
    ctx.tx.insert(KIND, &id, &rec)?;
    // Every new group may send anywhere until told otherwise.
    insert_rule(
        ctx,
        &id,
        true,
        Rule::all_to(Source::Cidr4("0.0.0.0/0".into())),
        None,
    )?;
    Ok(id)
}

/// A VPC's default group: all egress, and all ingress from members of itself.
pub fn create_default_group(ctx: &Ctx, vpc_id: &str) -> Result<String, ApiError> {
    let id = insert_group(ctx, vpc_id, "default", "default VPC security group", true)?;
    insert_rule(
        ctx,
        &id,
        false,
        Rule::all_to(Source::Group(id.clone())),
        None,
    )?;
    Ok(id)
}

pub fn delete_default_group(ctx: &Ctx, vpc_id: &str) -> Result<(), ApiError> {
    for g in groups(ctx)? {
        if g.is_default && g.group.vpc_id.as_deref() == Some(vpc_id) {
            let id = g.group.group_id.unwrap_or_default();
            delete_rules_of(ctx, &id)?;
            ctx.tx.delete(KIND, &id)?;
        }
    }
    Ok(())
}

pub fn count_removable_in_vpc(ctx: &Ctx, vpc_id: &str) -> Result<usize, ApiError> {
    Ok(groups(ctx)?
        .iter()
        .filter(|g| !g.is_default && g.group.vpc_id.as_deref() == Some(vpc_id))
        .count())
}

fn delete_rules_of(ctx: &Ctx, group_id: &str) -> Result<(), ApiError> {
    for r in rules(ctx)? {
        if r.group_id.as_deref() == Some(group_id) {
            ctx.tx.delete(
                RULE_KIND,
                r.security_group_rule_id.as_deref().unwrap_or_default(),
            )?;
        }
    }
    Ok(())
}

/// Finds a group by id, or by name in the default VPC as EC2 allows.
fn find_group(ctx: &Ctx, id: Option<&str>, name: Option<&str>) -> Result<GroupRecord, ApiError> {
    match (id, name) {
        (Some(id), _) => {
            check_id("sg", "Group", id)?;
            ctx.tx.get::<GroupRecord>(KIND, id)?.ok_or_else(|| {
                ApiError::new(
                    "InvalidGroup.NotFound",
                    format!("The security group '{id}' does not exist"),
                )
            })
        }
        (None, Some(name)) => {
            let default_vpc = vpcs::default_vpc_id(ctx)?;
            groups(ctx)?
                .into_iter()
                .find(|g| {
                    g.group.group_name.as_deref() == Some(name) && g.group.vpc_id == default_vpc
                })
                .ok_or_else(|| {
                    ApiError::new(
                        "InvalidGroup.NotFound",
                        format!(
                            "The security group '{name}' does not exist in default VPC '{}'",
                            default_vpc.unwrap_or_default()
                        ),
                    )
                })
        }
        (None, None) => Err(ApiError::missing("GroupId")),
    }
}

pub fn create_security_group(
    ctx: &Ctx,
    input: CreateSecurityGroupRequest,
) -> Result<CreateSecurityGroupResult, ApiError> {
    let name = input.group_name.as_str();
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::invalid_value(
            "Group name must be 1 to 255 characters long.",
        ));
    }
    if name.starts_with("sg-") {
        return Err(ApiError::invalid_value(format!(
            "Group names may not be in the format sg-*: {name}"
        )));
    }
    if name == "default" {
        return Err(ApiError::new(
            "InvalidGroup.Reserved",
            "The security group 'default' is reserved",
        ));
    }
    if input.description.len() > 255 {
        return Err(ApiError::invalid_value(
            "Description must be at most 255 characters long.",
        ));
    }
    let vpc_id = match input.vpc_id {
        Some(v) => {
            vpcs::load_vpc(ctx, &v)?;
            v
        }
        None => vpcs::default_vpc_id(ctx)?
            .ok_or_else(|| ApiError::new("VPCIdNotSpecified", "No default VPC for this user"))?,
    };
    let duplicate = groups(ctx)?.iter().any(|g| {
        g.group.vpc_id.as_deref() == Some(vpc_id.as_str())
            && g.group.group_name.as_deref() == Some(name)
    });
    if duplicate {
        return Err(ApiError::new(
            "InvalidGroup.Duplicate",
            format!("The security group '{name}' already exists for VPC '{vpc_id}'"),
        ));
    }
    let id = insert_group(ctx, &vpc_id, name, &input.description, false)?;
    apply_tag_specs(
        ctx.tx,
        &id,
        "security-group",
        input.tag_specifications.as_ref(),
    )?;
    Ok(CreateSecurityGroupResult {
        group_id: Some(id.clone()),
        tags: tag_set(ctx.tx, &id)?,
        security_group_arn: Some(group_arn(ctx, &id)),
    })
}

pub fn delete_security_group(
    ctx: &Ctx,
    input: DeleteSecurityGroupRequest,
) -> Result<DeleteSecurityGroupResult, ApiError> {
    let g = find_group(ctx, input.group_id.as_deref(), input.group_name.as_deref())?;
    let id = g.group.group_id.clone().unwrap_or_default();
    if g.is_default {
        return Err(ApiError::new(
            "CannotDelete",
            format!("the specified group: \"{id}\" name: \"default\" cannot be deleted by a user"),
        ));
    }
    let referenced = rules(ctx)?.iter().any(|r| {
        r.group_id.as_deref() != Some(id.as_str())
            && r.referenced_group_info
                .as_ref()
                .and_then(|g| g.group_id.as_deref())
                == Some(id.as_str())
    });
    let enis: Vec<serde_json::Value> = ctx.tx.list(subnets::ENI_KIND)?;
    let attached = enis.iter().any(|e| {
        e.get("Groups")
            .and_then(|g| g.as_array())
            .is_some_and(|gs| {
                gs.iter()
                    .any(|g| g.get("GroupId").and_then(|v| v.as_str()) == Some(id.as_str()))
            })
    });
    if referenced || attached {
        return Err(ApiError::dependency(format!(
            "resource {id} has a dependent object"
        )));
    }
    delete_rules_of(ctx, &id)?;
    ctx.tx.delete(KIND, &id)?;
    Ok(DeleteSecurityGroupResult {
        r#return: Some(true),
        group_id: Some(id),
    })
}

/// Where a rule's traffic comes from (ingress) or goes to (egress).
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Cidr4(String),
    Cidr6(String),
    Group(String),
    PrefixList(String),
}

/// One rule, normalised: protocol names instead of numbers, ports only where they mean something.
#[derive(Debug, Clone, PartialEq)]
struct Rule {
    protocol: String,
    from: Option<i32>,
    to: Option<i32>,
    source: Source,
    description: Option<String>,
}

impl Rule {
    fn all_to(source: Source) -> Rule {
        Rule {
            protocol: "-1".into(),
            from: None,
            to: None,
            source,
            description: None,
        }
    }

    fn describe(&self) -> String {
        let peer = match &self.source {
            Source::Cidr4(c) | Source::Cidr6(c) => c.clone(),
            Source::Group(g) => g.clone(),
            Source::PrefixList(p) => p.clone(),
        };
        let proto = if self.protocol == "-1" {
            "ALL".to_string()
        } else {
            self.protocol.to_uppercase()
        };
        match (self.from, self.to) {
            (Some(f), Some(t)) => {
                format!("peer: {peer}, {proto}, from port: {f}, to port: {t}, ALLOW")
            }
            _ => format!("peer: {peer}, {proto}, ALLOW"),
        }
    }
}

fn normalise_protocol(p: &str) -> Result<String, ApiError> {
    let lower = p.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "tcp" | "6" => "tcp".into(),
        "udp" | "17" => "udp".into(),
        "icmp" | "1" => "icmp".into(),
        "icmpv6" | "58" => "icmpv6".into(),
        "-1" | "all" => "-1".into(),
        n => match n.parse::<u8>() {
            Ok(_) => n.to_string(),
            Err(_) => {
                return Err(ApiError::invalid_value(format!(
                    "Invalid value '{p}' for IP protocol. Unknown protocol."
                )));
            }
        },
    })
}

fn ports(
    protocol: &str,
    from: Option<i32>,
    to: Option<i32>,
) -> Result<(Option<i32>, Option<i32>), ApiError> {
    match protocol {
        "-1" => Ok((None, None)),
        "tcp" | "udp" => {
            let (Some(f), Some(t)) = (from, to) else {
                return Err(ApiError::invalid_value(
                    "Invalid value 'Must specify both from and to ports with TCP/UDP.' for portRange.",
                ));
            };
            if !(0..=65535).contains(&f) || !(0..=65535).contains(&t) || f > t {
                return Err(ApiError::invalid_value(format!(
                    "Invalid value 'Invalid port range: {f}-{t}' for portRange."
                )));
            }
            Ok((Some(f), Some(t)))
        }
        "icmp" | "icmpv6" => {
            let (f, t) = (from.unwrap_or(-1), to.unwrap_or(-1));
            if !(-1..=255).contains(&f) || !(-1..=255).contains(&t) {
                return Err(ApiError::invalid_value(format!(
                    "Invalid value 'ICMP type {f}, code {t}' for icmpTypeCode."
                )));
            }
            Ok((Some(f), Some(t)))
        }
        // Other protocols carry no ports; EC2 ignores any given.
        _ => Ok((None, None)),
    }
}

fn expand(ctx: &Ctx, perms: &[IpPermission]) -> Result<Vec<Rule>, ApiError> {
    let mut out = Vec::new();
    for p in perms {
        let proto = normalise_protocol(
            p.ip_protocol
                .as_deref()
                .ok_or_else(|| ApiError::missing("IpPermissions.IpProtocol"))?,
        )?;
        let (from, to) = ports(&proto, p.from_port, p.to_port)?;
        let mut push = |source: Source, description: Option<String>| {
            out.push(Rule {
                protocol: proto.clone(),
                from,
                to,
                source,
                description,
            });
        };
        for r in p.ip_ranges.iter().flatten() {
            let c = r
                .cidr_ip
                .clone()
                .ok_or_else(|| ApiError::missing("CidrIp"))?;
            c.parse::<Ipv4Net>()
                .map_err(|_| ApiError::invalid_value(format!("CIDR block {c} is malformed")))?;
            push(Source::Cidr4(c), r.description.clone());
        }
        for r in p.ipv6_ranges.iter().flatten() {
            let c = r
                .cidr_ipv6
                .clone()
                .ok_or_else(|| ApiError::missing("CidrIpv6"))?;
            c.parse::<Ipv6Net>()
                .map_err(|_| ApiError::invalid_value(format!("CIDR block {c} is malformed")))?;
            push(Source::Cidr6(c), r.description.clone());
        }
        for g in p.user_id_group_pairs.iter().flatten() {
            let target = find_group(ctx, g.group_id.as_deref(), g.group_name.as_deref())?;
            push(
                Source::Group(target.group.group_id.unwrap_or_default()),
                g.description.clone(),
            );
        }
        for pl in p.prefix_list_ids.iter().flatten() {
            let id = pl
                .prefix_list_id
                .clone()
                .ok_or_else(|| ApiError::missing("PrefixListId"))?;
            check_id("pl", "PrefixList", &id)?;
            push(Source::PrefixList(id), pl.description.clone());
        }
    }
    Ok(out)
}

/// The pre-IpPermissions form: CidrIp / IpProtocol / ports, or a source group by name.
#[allow(clippy::too_many_arguments)]
fn legacy_permission(
    cidr: Option<String>,
    protocol: Option<String>,
    from: Option<i32>,
    to: Option<i32>,
    source_name: Option<String>,
    source_owner: Option<String>,
) -> Option<IpPermission> {
    if cidr.is_none() && protocol.is_none() && source_name.is_none() {
        return None;
    }
    Some(IpPermission {
        ip_protocol: Some(protocol.unwrap_or_else(|| "-1".into())),
        from_port: from,
        to_port: to,
        ip_ranges: cidr.map(|c| {
            vec![IpRange {
                cidr_ip: Some(c),
                description: None,
            }]
        }),
        user_id_group_pairs: source_name.map(|n| {
            vec![UserIdGroupPair {
                group_name: Some(n),
                user_id: source_owner,
                ..Default::default()
            }]
        }),
        ..Default::default()
    })
}

fn insert_rule(
    ctx: &Ctx,
    group_id: &str,
    egress: bool,
    rule: Rule,
    tags: Option<&Vec<TagSpecification>>,
) -> Result<SecurityGroupRule, ApiError> {
    let id = new_id("sgr");
    let all = rule.protocol == "-1";
    let mut r = SecurityGroupRule {
        security_group_rule_id: Some(id.clone()),
        group_id: Some(group_id.to_string()),
        group_owner_id: Some(ctx.account().to_string()),
        is_egress: Some(egress),
        ip_protocol: Some(rule.protocol.clone()),
        from_port: if all {
            Some(-1)
        } else {
            rule.from.or(Some(-1))
        },
        to_port: if all { Some(-1) } else { rule.to.or(Some(-1)) },
        description: rule.description.clone(),
        security_group_rule_arn: Some(format!(
            "arn:aws:ec2:{}:{}:security-group-rule/{id}",
            ctx.region(),
            ctx.account()
        )),
        ..Default::default()
    };
    match rule.source {
        Source::Cidr4(c) => r.cidr_ipv4 = Some(c),
        Source::Cidr6(c) => r.cidr_ipv6 = Some(c),
        Source::PrefixList(p) => r.prefix_list_id = Some(p),
        Source::Group(g) => {
            let vpc = ctx
                .tx
                .get::<GroupRecord>(KIND, &g)?
                .and_then(|x| x.group.vpc_id);
            r.referenced_group_info = Some(ReferencedSecurityGroup {
                group_id: Some(g),
                user_id: Some(ctx.account().to_string()),
                vpc_id: vpc,
                ..Default::default()
            });
        }
    }
    ctx.tx.insert(RULE_KIND, &id, &r)?;
    apply_tag_specs(ctx.tx, &id, "security-group-rule", tags)?;
    r.tags = tag_set(ctx.tx, &id)?;
    Ok(r)
}

fn rule_matches_stored(rule: &Rule, r: &SecurityGroupRule) -> bool {
    let src = match &rule.source {
        Source::Cidr4(c) => r.cidr_ipv4.as_deref() == Some(c),
        Source::Cidr6(c) => r.cidr_ipv6.as_deref() == Some(c),
        Source::Group(g) => {
            r.referenced_group_info
                .as_ref()
                .and_then(|x| x.group_id.as_deref())
                == Some(g)
        }
        Source::PrefixList(p) => r.prefix_list_id.as_deref() == Some(p),
    };
    let (f, t) = if rule.protocol == "-1" {
        (Some(-1), Some(-1))
    } else {
        (rule.from.or(Some(-1)), rule.to.or(Some(-1)))
    };
    src && r.ip_protocol.as_deref() == Some(rule.protocol.as_str())
        && r.from_port == f
        && r.to_port == t
}

fn authorize(
    ctx: &Ctx,
    group: GroupRecord,
    egress: bool,
    perms: Vec<IpPermission>,
    tags: Option<&Vec<TagSpecification>>,
) -> Result<Vec<SecurityGroupRule>, ApiError> {
    ctx.network_changed();
    let group_id = group.group.group_id.clone().unwrap_or_default();
    let wanted = expand(ctx, &perms)?;
    if wanted.is_empty() {
        return Err(ApiError::missing("IpPermissions"));
    }
    let existing: Vec<SecurityGroupRule> = rules(ctx)?
        .into_iter()
        .filter(|r| r.group_id.as_deref() == Some(group_id.as_str()) && r.is_egress == Some(egress))
        .collect();
    for (i, w) in wanted.iter().enumerate() {
        let dup_existing = existing.iter().any(|r| rule_matches_stored(w, r));
        let dup_request = wanted[..i].iter().any(|o| {
            o.protocol == w.protocol && o.from == w.from && o.to == w.to && o.source == w.source
        });
        if dup_existing || dup_request {
            return Err(ApiError::new(
                "InvalidPermission.Duplicate",
                format!("the specified rule \"{}\" already exists", w.describe()),
            ));
        }
    }
    if existing.len() + wanted.len() > 60 {
        return Err(ApiError::new(
            "RulesPerSecurityGroupLimitExceeded",
            "The maximum number of rules per security group has been reached.",
        ));
    }
    wanted
        .into_iter()
        .map(|w| insert_rule(ctx, &group_id, egress, w, tags))
        .collect()
}

fn revoke(
    ctx: &Ctx,
    group: GroupRecord,
    egress: bool,
    perms: Vec<IpPermission>,
    rule_ids: Option<Vec<String>>,
) -> Result<Vec<RevokedSecurityGroupRule>, ApiError> {
    ctx.network_changed();
    let group_id = group.group.group_id.clone().unwrap_or_default();
    let existing: Vec<SecurityGroupRule> = rules(ctx)?
        .into_iter()
        .filter(|r| r.group_id.as_deref() == Some(group_id.as_str()) && r.is_egress == Some(egress))
        .collect();
    let mut doomed: Vec<SecurityGroupRule> = Vec::new();
    for id in rule_ids.unwrap_or_default() {
        let r = existing
            .iter()
            .find(|r| r.security_group_rule_id.as_deref() == Some(id.as_str()))
            .ok_or_else(|| {
                ApiError::new(
                    "InvalidSecurityGroupRuleId.NotFound",
                    format!("The security group rule ID '{id}' does not exist"),
                )
            })?;
        doomed.push(r.clone());
    }
    for w in expand(ctx, &perms)? {
        let r = existing
            .iter()
            .find(|r| rule_matches_stored(&w, r))
            .ok_or_else(|| {
                ApiError::new(
                    "InvalidPermission.NotFound",
                    "The specified rule does not exist in this security group.",
                )
            })?;
        doomed.push(r.clone());
    }
    if doomed.is_empty() {
        return Err(ApiError::missing("IpPermissions"));
    }
    let mut out = Vec::new();
    for r in doomed {
        let id = r.security_group_rule_id.clone().unwrap_or_default();
        if !ctx.tx.exists(RULE_KIND, &id)? {
            continue;
        }
        ctx.tx.delete(RULE_KIND, &id)?;
        out.push(RevokedSecurityGroupRule {
            security_group_rule_id: Some(id),
            group_id: r.group_id,
            is_egress: r.is_egress,
            ip_protocol: r.ip_protocol,
            from_port: r.from_port,
            to_port: r.to_port,
            cidr_ipv4: r.cidr_ipv4,
            cidr_ipv6: r.cidr_ipv6,
            prefix_list_id: r.prefix_list_id,
            referenced_group_id: r.referenced_group_info.and_then(|g| g.group_id),
            description: r.description,
        });
    }
    Ok(out)
}

/// The four Authorize/Revoke inputs share these members but are distinct generated types.
macro_rules! requested_permissions {
    ($input:expr) => {{
        let mut perms = $input.ip_permissions.unwrap_or_default();
        perms.extend(legacy_permission(
            $input.cidr_ip,
            $input.ip_protocol,
            $input.from_port,
            $input.to_port,
            $input.source_security_group_name,
            $input.source_security_group_owner_id,
        ));
        perms
    }};
}

pub fn authorize_ingress(
    ctx: &Ctx,
    input: AuthorizeSecurityGroupIngressRequest,
) -> Result<AuthorizeSecurityGroupIngressResult, ApiError> {
    let group = find_group(ctx, input.group_id.as_deref(), input.group_name.as_deref())?;
    let perms = requested_permissions!(input);
    let rules = authorize(ctx, group, false, perms, input.tag_specifications.as_ref())?;
    Ok(AuthorizeSecurityGroupIngressResult {
        r#return: Some(true),
        security_group_rules: Some(rules),
    })
}

pub fn authorize_egress(
    ctx: &Ctx,
    input: AuthorizeSecurityGroupEgressRequest,
) -> Result<AuthorizeSecurityGroupEgressResult, ApiError> {
    let group = find_group(ctx, Some(&input.group_id), None)?;
    let perms = requested_permissions!(input);
    let rules = authorize(ctx, group, true, perms, input.tag_specifications.as_ref())?;
    Ok(AuthorizeSecurityGroupEgressResult {
        r#return: Some(true),
        security_group_rules: Some(rules),
    })
}

pub fn revoke_ingress(
    ctx: &Ctx,
    input: RevokeSecurityGroupIngressRequest,
) -> Result<RevokeSecurityGroupIngressResult, ApiError> {
    let group = find_group(ctx, input.group_id.as_deref(), input.group_name.as_deref())?;
    let perms = requested_permissions!(input);
    let revoked = revoke(ctx, group, false, perms, input.security_group_rule_ids)?;
    Ok(RevokeSecurityGroupIngressResult {
        r#return: Some(true),
        revoked_security_group_rules: Some(revoked),
        unknown_ip_permissions: None,
    })
}

pub fn revoke_egress(
    ctx: &Ctx,
    input: RevokeSecurityGroupEgressRequest,
) -> Result<RevokeSecurityGroupEgressResult, ApiError> {
    let group = find_group(ctx, Some(&input.group_id), None)?;
    let perms = requested_permissions!(input);
    let revoked = revoke(ctx, group, true, perms, input.security_group_rule_ids)?;
    Ok(RevokeSecurityGroupEgressResult {
        r#return: Some(true),
        revoked_security_group_rules: Some(revoked),
        unknown_ip_permissions: None,
    })
}

/// Groups stored rules into the `IpPermissions` view: one permission per
/// (protocol, from, to), in the order the first rule of each was added.
fn permissions(rules: &[&SecurityGroupRule]) -> Vec<IpPermission> {
    let mut out: Vec<IpPermission> = Vec::new();
    for r in rules {
        let all = r.ip_protocol.as_deref() == Some("-1");
        let (from, to) = if all {
            (None, None)
        } else {
            (r.from_port, r.to_port)
        };
        let idx = match out
            .iter()
            .position(|p| p.ip_protocol == r.ip_protocol && p.from_port == from && p.to_port == to)
        {
            Some(i) => i,
            None => {
                out.push(IpPermission {
                    ip_protocol: r.ip_protocol.clone(),
                    from_port: from,
                    to_port: to,
                    user_id_group_pairs: Some(Vec::new()),
                    ip_ranges: Some(Vec::new()),
                    ipv6_ranges: Some(Vec::new()),
                    prefix_list_ids: Some(Vec::new()),
                });
                out.len() - 1
            }
        };
        let p = &mut out[idx];
        if let Some(c) = &r.cidr_ipv4 {
            p.ip_ranges.get_or_insert_with(Vec::new).push(IpRange {
                cidr_ip: Some(c.clone()),
                description: r.description.clone(),
            });
        }
        if let Some(c) = &r.cidr_ipv6 {
            p.ipv6_ranges.get_or_insert_with(Vec::new).push(Ipv6Range {
                cidr_ipv6: Some(c.clone()),
                description: r.description.clone(),
            });
        }
        if let Some(pl) = &r.prefix_list_id {
            p.prefix_list_ids
                .get_or_insert_with(Vec::new)
                .push(PrefixListId {
                    prefix_list_id: Some(pl.clone()),
                    description: r.description.clone(),
                });
        }
        if let Some(g) = &r.referenced_group_info {
            p.user_id_group_pairs
                .get_or_insert_with(Vec::new)
                .push(UserIdGroupPair {
                    user_id: g.user_id.clone(),
                    group_id: g.group_id.clone(),
                    description: r.description.clone(),
                    ..Default::default()
                });
        }
    }
    out
}

const GROUP_FILTERS: &[&str] = &[
    "description",
    "egress.ip-permission.cidr",
    "egress.ip-permission.from-port",
    "egress.ip-permission.group-id",
    "egress.ip-permission.group-name",
    "egress.ip-permission.ipv6-cidr",
    "egress.ip-permission.prefix-list-id",
    "egress.ip-permission.protocol",
    "egress.ip-permission.to-port",
    "egress.ip-permission.user-id",
    "group-id",
    "group-name",
    "ip-permission.cidr",
    "ip-permission.from-port",
    "ip-permission.group-id",
    "ip-permission.group-name",
    "ip-permission.ipv6-cidr",
    "ip-permission.prefix-list-id",
    "ip-permission.protocol",
    "ip-permission.to-port",
    "ip-permission.user-id",
    "owner-id",
    "vpc-id",
];

fn permission_values(
    perms: &[IpPermission],
    what: &str,
    names: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for p in perms {
        match what {
            "cidr" => out.extend(
                p.ip_ranges
                    .iter()
                    .flatten()
                    .filter_map(|r| r.cidr_ip.clone()),
            ),
            "ipv6-cidr" => out.extend(
                p.ipv6_ranges
                    .iter()
                    .flatten()
                    .filter_map(|r| r.cidr_ipv6.clone()),
            ),
            "from-port" => out.push(p.from_port.unwrap_or(-1).to_string()),
            "to-port" => out.push(p.to_port.unwrap_or(-1).to_string()),
            "protocol" => out.extend(p.ip_protocol.clone()),
            "group-id" => out.extend(
                p.user_id_group_pairs
                    .iter()
                    .flatten()
                    .filter_map(|g| g.group_id.clone()),
            ),
            "group-name" => out.extend(
                p.user_id_group_pairs
                    .iter()
                    .flatten()
                    .filter_map(|g| g.group_id.as_deref().and_then(names)),
            ),
            "user-id" => out.extend(
                p.user_id_group_pairs
                    .iter()
                    .flatten()
                    .filter_map(|g| g.user_id.clone()),
            ),
            "prefix-list-id" => out.extend(
                p.prefix_list_ids
                    .iter()
                    .flatten()
                    .filter_map(|g| g.prefix_list_id.clone()),
            ),
            _ => {}
        }
    }
    out
}

pub fn describe_security_groups(
    ctx: &Ctx,
    input: DescribeSecurityGroupsRequest,
) -> Result<DescribeSecurityGroupsResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, GROUP_FILTERS)?;
    ids_or_pages(&input.group_ids, input.max_results, "groupIds")?;
    let all_groups = groups(ctx)?;
    let mut selected: Vec<GroupRecord> = Vec::new();
    let ids = input.group_ids.unwrap_or_default();
    let names = input.group_names.unwrap_or_default();
    for id in &ids {
        check_id("sg", "Group", id)?;
        let g = all_groups
            .iter()
            .find(|g| g.group.group_id.as_deref() == Some(id.as_str()))
            .ok_or_else(|| {
                ApiError::new(
                    "InvalidGroup.NotFound",
                    format!("The security group '{id}' does not exist"),
                )
            })?;
        selected.push(g.clone());
    }
    for name in &names {
        selected.push(find_group(ctx, None, Some(name))?);
    }
    if ids.is_empty() && names.is_empty() {
        selected = all_groups.clone();
    }
    let all_rules = rules(ctx)?;
    let name_of = |id: &str| {
        all_groups
            .iter()
            .find(|g| g.group.group_id.as_deref() == Some(id))
            .and_then(|g| g.group.group_name.clone())
    };
    let mut out = Vec::new();
    for rec in selected {
        let mut g = rec.group;
        let id = g.group_id.clone().unwrap_or_default();
        let mine: Vec<&SecurityGroupRule> = all_rules
            .iter()
            .filter(|r| r.group_id.as_deref() == Some(id.as_str()))
            .collect();
        let ingress: Vec<&SecurityGroupRule> = mine
            .iter()
            .copied()
            .filter(|r| r.is_egress != Some(true))
            .collect();
        let egress: Vec<&SecurityGroupRule> = mine
            .iter()
            .copied()
            .filter(|r| r.is_egress == Some(true))
            .collect();
        g.ip_permissions = Some(permissions(&ingress));
        g.ip_permissions_egress = Some(permissions(&egress));
        let tags = ctx.tx.tags(&id)?;
        let values = |f: &str| {
            let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
            Some(match f {
                "description" => one(&g.description),
                "group-id" => vec![id.clone()],
                "group-name" => one(&g.group_name),
                "owner-id" => one(&g.owner_id),
                "vpc-id" => one(&g.vpc_id),
                other => {
                    if let Some(what) = other.strip_prefix("egress.ip-permission.") {
                        permission_values(
                            g.ip_permissions_egress.as_deref().unwrap_or_default(),
                            what,
                            &name_of,
                        )
                    } else if let Some(what) = other.strip_prefix("ip-permission.") {
                        permission_values(
                            g.ip_permissions.as_deref().unwrap_or_default(),
                            what,
                            &name_of,
                        )
                    } else {
                        Vec::new()
                    }
                }
            })
        };
        if matches(&filters, &tags, &values) {
            g.tags = (!tags.is_empty()).then_some(tags);
            out.push(g);
        }
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeSecurityGroupsResult {
        security_groups: Some(page),
        next_token: next,
    })
}

const RULE_FILTERS: &[&str] = &["group-id", "security-group-rule-id"];

pub fn describe_security_group_rules(
    ctx: &Ctx,
    input: DescribeSecurityGroupRulesRequest,
) -> Result<DescribeSecurityGroupRulesResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, RULE_FILTERS)?;
    let ids = input.security_group_rule_ids.unwrap_or_default();
    let all = rules(ctx)?;
    for id in &ids {
        check_id("sgr", "SecurityGroupRule", id)?;
        if !all
            .iter()
            .any(|r| r.security_group_rule_id.as_deref() == Some(id.as_str()))
        {
            return Err(ApiError::new(
                "InvalidSecurityGroupRuleId.NotFound",
                format!("The security group rule ID '{id}' does not exist"),
            ));
        }
    }
    let mut out = Vec::new();
    for mut r in all {
        let id = r.security_group_rule_id.clone().unwrap_or_default();
        if !ids.is_empty() && !ids.contains(&id) {
            continue;
        }
        let tags: Vec<Tag> = ctx.tx.tags(&id)?;
        let values = |f: &str| {
            Some(match f {
                "group-id" => r.group_id.iter().cloned().collect(),
                "security-group-rule-id" => vec![id.clone()],
                _ => Vec::new(),
            })
        };
        if matches(&filters, &tags, &values) {
            r.tags = Some(tags);
            out.push(r);
        }
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeSecurityGroupRulesResult {
        security_group_rules: Some(page),
        next_token: next,
    })
}
