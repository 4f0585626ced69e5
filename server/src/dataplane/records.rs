//! From store records to fabric settings: a port's configuration, and a VPC's rules.

use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;

use super::{DataPlaneError, GroupRules};
use crate::api::instances::{self, InstanceRecord};
use crate::api::security_groups::RULE_KIND;
use crate::api::{subnets, vpcs};
use crate::model::{SecurityGroupRule, Subnet};
use crate::net::{Fabric, MacAddr, PortConfig, PortId, SgPeer, SgProtocol, SgRule, VpcConfig};
use crate::store::Store;

/// Where and how an instance's primary ENI plugs in.
pub(super) struct PortPlan {
    pub vpc_id: String,
    pub vpc: VpcConfig,
    pub config: PortConfig,
}

fn bad(instance: &str, why: impl Into<String>) -> DataPlaneError {
    DataPlaneError::BadRecord(instance.to_string(), why.into())
}

pub(super) fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub(super) fn port_plan(
    store: &Store,
    account: &str,
    region: &str,
    instance_id: &str,
) -> Result<PortPlan, DataPlaneError> {
    store
        .transaction(account, region, |tx| {
            let rec: Option<InstanceRecord> = tx.get(instances::KIND, instance_id)?;
            let vpc_rec: Option<vpcs::VpcRecord> = match &rec {
                Some(r) => match r.instance.vpc_id.as_deref() {
                    Some(v) => tx.get(vpcs::KIND, v)?,
                    None => None,
                },
                None => None,
            };
            let subnet: Option<Subnet> = match &rec {
                Some(r) => match r.instance.subnet_id.as_deref() {
                    Some(s) => tx.get(subnets::KIND, s)?,
                    None => None,
                },
                None => None,
            };
            Ok((rec, vpc_rec, subnet))
        })
        .map_err(DataPlaneError::from)
        .and_then(|(rec, vpc_rec, subnet)| {
            let rec = rec.ok_or_else(|| bad(instance_id, "no such instance"))?;
            let vpc_rec = vpc_rec.ok_or_else(|| bad(instance_id, "its VPC is gone"))?;
            let subnet = subnet.ok_or_else(|| bad(instance_id, "its subnet is gone"))?;
            let eni = rec
                .instance
                .network_interfaces
                .as_ref()
                .and_then(|n| {
                    n.iter()
                        .find(|e| e.attachment.as_ref().and_then(|a| a.device_index) == Some(0))
                        .or(n.first())
                })
                .ok_or_else(|| bad(instance_id, "no network interface"))?;
            let mac = eni
                .mac_address
                .as_deref()
                .and_then(parse_mac)
                .ok_or_else(|| bad(instance_id, "no valid MAC address"))?;
            let ip = eni
                .private_ip_address
                .as_deref()
                .and_then(|s| Ipv4Addr::from_str(s).ok())
                .ok_or_else(|| bad(instance_id, "no valid private address"))?;
            let subnet_cidr = subnet
                .cidr_block
                .as_deref()
                .and_then(|s| Ipv4Net::from_str(s).ok())
                .ok_or_else(|| bad(instance_id, "its subnet has no valid CIDR"))?;
            let vpc_id = vpc_rec.vpc.vpc_id.clone().unwrap_or_default();
            let vpc_cidr = vpc_rec
                .vpc
                .cidr_block
                .as_deref()
                .and_then(|s| Ipv4Net::from_str(s).ok())
                .ok_or_else(|| bad(instance_id, "its VPC has no valid CIDR"))?;
            let mut vpc = VpcConfig::new(vpc_cidr, region);
            vpc.enable_dns_support = vpc_rec.dns_support;
            vpc.enable_dns_hostnames = vpc_rec.dns_hostnames;
            let security_groups = eni
                .groups
                .iter()
                .flatten()
                .filter_map(|g| g.group_id.clone())
                .collect();
            Ok(PortPlan {
                vpc_id,
                vpc,
                config: PortConfig {
                    mac,
                    ip,
                    subnet: subnet_cidr,
                    security_groups,
                },
            })
        })
}

/// A VPC's settings as the fabric applies them in one go.
pub(crate) struct VpcSettings {
    vpc_id: String,
    dns_support: bool,
    dns_hostnames: bool,
    rules: GroupRules,
    port_groups: Vec<(PortId, Vec<String>)>,
}

impl VpcSettings {
    pub(super) fn apply(self, fabric: &mut Fabric) {
        let Some(vpc) = fabric.vpc_mut(&self.vpc_id) else {
            return;
        };
        vpc.set_dns_support(self.dns_support);
        vpc.set_dns_hostnames(self.dns_hostnames);
        let stale: Vec<String> = vpc
            .port_ids()
            .filter_map(|p| vpc.port(p))
            .flat_map(|c| c.security_groups.clone())
            .filter(|g| !self.rules.contains_key(g))
            .collect();
        // A group whose every rule was revoked has no stored rules left, and allows nothing.
        for group in stale {
            vpc.set_group_rules(group, Vec::new());
        }
        for (group, rules) in self.rules {
            vpc.set_group_rules(group, rules);
        }
        for (port, groups) in self.port_groups {
            // A port detached meanwhile is simply not there any more.
            let _ = vpc.set_port_groups(port, groups);
        }
    }
}

/// Reads the VPC's DNS switches, the rules of every group in it and the groups of each of
/// `ports` (port, instance id).
pub(super) fn vpc_settings(
    store: &Store,
    account: &str,
    region: &str,
    vpc_id: &str,
    ports: &[(PortId, String)],
) -> Result<VpcSettings, DataPlaneError> {
    let (vpc_rec, rules, instances) = store.transaction(account, region, |tx| {
        let vpc_rec: Option<vpcs::VpcRecord> = tx.get(vpcs::KIND, vpc_id)?;
        let rules: Vec<SecurityGroupRule> = tx.list(RULE_KIND)?;
        let mut instances = Vec::new();
        for (port, id) in ports {
            if let Some(rec) = tx.get::<InstanceRecord>(instances::KIND, id)? {
                instances.push((*port, rec));
            }
        }
        Ok((vpc_rec, rules, instances))
    })?;
    let mut groups = GroupRules::new();
    for rule in &rules {
        let Some(group) = rule.group_id.clone() else {
            continue;
        };
        let entry = groups.entry(group).or_default();
        if let Some(r) = fabric_rule(rule) {
            entry.push(r);
        }
    }
    let port_groups = instances
        .into_iter()
        .map(|(port, rec)| {
            let groups = rec
                .instance
                .network_interfaces
                .iter()
                .flatten()
                .next()
                .and_then(|e| e.groups.clone())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|g| g.group_id)
                .collect();
            (port, groups)
        })
        .collect();
    Ok(VpcSettings {
        vpc_id: vpc_id.to_string(),
        dns_support: vpc_rec.as_ref().is_none_or(|v| v.dns_support),
        dns_hostnames: vpc_rec.as_ref().is_some_and(|v| v.dns_hostnames),
        rules: groups,
        port_groups,
    })
}

/// One stored rule as the fabric filters with it. IPv6 and prefix-list rules have nothing to
/// match on an IPv4-only fabric and are left out.
fn fabric_rule(rule: &SecurityGroupRule) -> Option<SgRule> {
    let protocol = match rule.ip_protocol.as_deref()? {
        "-1" | "all" => SgProtocol::All,
        "tcp" | "6" => SgProtocol::Tcp,
        "udp" | "17" => SgProtocol::Udp,
        "icmp" | "1" => SgProtocol::Icmp,
        other => SgProtocol::Other(other.parse().ok()?),
    };
    let peer = if let Some(cidr) = rule.cidr_ipv4.as_deref() {
        SgPeer::Cidr4(Ipv4Net::from_str(cidr).ok()?)
    } else {
        SgPeer::Group(rule.referenced_group_info.as_ref()?.group_id.clone()?)
    };
    Some(SgRule {
        egress: rule.is_egress.unwrap_or(false),
        protocol,
        from_port: rule.from_port.unwrap_or(-1),
        to_port: rule.to_port.unwrap_or(-1),
        peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_only_when_well_formed() {
        assert_eq!(
            parse_mac("0e:12:34:ab:cd:ef"),
            Some([0x0e, 0x12, 0x34, 0xab, 0xcd, 0xef])
        );
        assert_eq!(parse_mac("0e:12:34:ab:cd"), None);
        assert_eq!(parse_mac("0e:12:34:ab:cd:ef:00"), None);
        assert_eq!(parse_mac("zz:12:34:ab:cd:ef"), None);
    }

    #[test]
    fn stored_rules_become_fabric_rules() {
        let tcp = SecurityGroupRule {
            group_id: Some("sg-1".into()),
            is_egress: Some(false),
            ip_protocol: Some("tcp".into()),
            from_port: Some(22),
            to_port: Some(22),
            cidr_ipv4: Some("0.0.0.0/0".into()),
            ..Default::default()
        };
        assert_eq!(
            fabric_rule(&tcp),
            Some(SgRule::tcp_ingress(22, 22, "0.0.0.0/0".parse().unwrap()))
        );
        let from_group = SecurityGroupRule {
            group_id: Some("sg-1".into()),
            is_egress: Some(false),
            ip_protocol: Some("-1".into()),
            referenced_group_info: Some(crate::model::ReferencedSecurityGroup {
                group_id: Some("sg-1".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            fabric_rule(&from_group),
            Some(SgRule::allow_all_ingress_from_group("sg-1"))
        );
        let v6 = SecurityGroupRule {
            ip_protocol: Some("tcp".into()),
            cidr_ipv6: Some("::/0".into()),
            ..Default::default()
        };
        assert_eq!(fabric_rule(&v6), None);
    }
}
