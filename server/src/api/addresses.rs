//! Public IPv4 addresses: the public IPs instances get at launch, and Elastic IPs.
//!
//! Both come from one loopback pool, so that the host reaches an instance at its
//! `PublicIpAddress` with no setup, and each address is unique across every account and
//! region of this ec2d, because the data plane listens on it.
//!
//! Where a public address is bound is recorded on the ENI, as the `Association` of one of its
//! private addresses, in the ENI record and in the copy its instance holds (the two are always
//! written together). An address EC2 assigned by itself shows the owner `amazon`, as on EC2;
//! an Elastic IP shows the account, and its own record (the model's `Address`, kind
//! [`KIND`]) says where it is associated.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use crate::api::common::{apply_tag_specs, check_id, matches, new_id, validate_filters};
use crate::api::instances::{self, InstanceRecord};
use crate::api::subnets::ENI_KIND;
use crate::api::{Ctx, internet_gateways, vpcs};
use crate::error::ApiError;
use crate::model::{
    Address, AllocateAddressRequest, AllocateAddressResult, AssociateAddressRequest,
    AssociateAddressResult, DescribeAddressesRequest, DescribeAddressesResult,
    DisassociateAddressRequest, Instance, InstanceNetworkInterface,
    InstanceNetworkInterfaceAssociation, ReleaseAddressRequest, RunInstancesRequest, Subnet,
};
use crate::store::{Store, Tx};

/// Elastic IPs, stored as the model's `Address` under their allocation id.
pub const KIND: &str = "address";

/// Public addresses come from 127.100.0.0/16. It is inside 127.0.0.0/8, which Linux routes to
/// the loopback interface as a whole, so the host reaches every address with no setup and the
/// data plane can listen on it; it stays clear of 127.0.0.1 and the low 127.0.x.x addresses
/// other software uses.
pub const PUBLIC_POOL_BASE: Ipv4Addr = Ipv4Addr::new(127, 100, 0, 0);
/// The pool's prefix length.
pub const PUBLIC_POOL_PREFIX: u32 = 16;

/// EC2's default quota of Elastic IPs per account and region.
const EIP_LIMIT: usize = 5;

/// The owner EC2 shows for a public address it assigned by itself.
const AMAZON: &str = "amazon";

/// True for addresses ec2d hands out. Host parts .0 and .255 are left out, so no public
/// address looks like a network or broadcast address to software that guesses from octets.
pub fn in_pool(ip: Ipv4Addr) -> bool {
    let shift = 32 - PUBLIC_POOL_PREFIX;
    let last = ip.octets()[3];
    u32::from(ip) >> shift == u32::from(PUBLIC_POOL_BASE) >> shift && last != 0 && last != 255
}

/// EC2's public hostname for an address: `compute-1` in us-east-1, the region elsewhere.
pub fn public_dns_name(region: &str, ip: Ipv4Addr) -> String {
    let dashed = ip.to_string().replace('.', "-");
    if region == "us-east-1" {
        format!("ec2-{dashed}.compute-1.amazonaws.com")
    } else {
        format!("ec2-{dashed}.{region}.compute.amazonaws.com")
    }
}

/// The public hostname an ENI in this VPC gets for `ip`: none unless the VPC has DNS
/// hostnames enabled (the default VPC has).
fn dns_in_vpc(tx: &Tx<'_>, vpc_id: Option<&str>, ip: Ipv4Addr) -> Result<String, ApiError> {
    let Some(vpc_id) = vpc_id else {
        return Ok(String::new());
    };
    let vpc: Option<vpcs::VpcRecord> = tx.get(vpcs::KIND, vpc_id)?;
    Ok(match vpc {
        Some(v) if v.dns_hostnames => public_dns_name(&tx.region, ip),
        _ => String::new(),
    })
}

fn parse_ip(s: Option<&str>) -> Option<Ipv4Addr> {
    s?.parse().ok()
}

/// Every public address in use anywhere in this ec2d: Elastic IPs (associated or not) and
/// the addresses bound to ENIs, in every account and region.
fn used_public_ips(tx: &Tx<'_>) -> Result<HashSet<Ipv4Addr>, ApiError> {
    let mut used = HashSet::new();
    for (_, _, a) in tx.list_all_scopes::<Address>(KIND)? {
        used.extend(parse_ip(a.public_ip.as_deref()));
    }
    for (_, _, e) in tx.list_all_scopes::<InstanceNetworkInterface>(ENI_KIND)? {
        used.extend(bound_public_ips(&e).into_iter().map(|(_, ip, _)| ip));
    }
    Ok(used)
}

/// A free address from the pool, or `wanted` if it is free. The scan starts at a random
/// place so that an address just released is not handed straight to someone else.
fn allocate_public_ip(tx: &Tx<'_>, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, ApiError> {
    let used = used_public_ips(tx)?;
    if let Some(ip) = wanted {
        if in_pool(ip) && !used.contains(&ip) {
            return Ok(ip);
        }
        return Err(ApiError::new(
            "InvalidAddress.NotFound",
            format!("Address '{ip}' not found."),
        ));
    }
    let size = 1u32 << (32 - PUBLIC_POOL_PREFIX);
    let start = rand::random::<u32>() % size;
    (0..size)
        .map(|i| Ipv4Addr::from(u32::from(PUBLIC_POOL_BASE) + (start + i) % size))
        .find(|ip| in_pool(*ip) && !used.contains(ip))
        .ok_or_else(|| {
            ApiError::new(
                "InsufficientAddressCapacity",
                "There are no free public IPv4 addresses in ec2d's pool.",
            )
            .with_status(503)
        })
}

fn association(ip: Ipv4Addr, owner: &str, dns: String) -> InstanceNetworkInterfaceAssociation {
    InstanceNetworkInterfaceAssociation {
        ip_owner_id: Some(owner.to_string()),
        public_dns_name: Some(dns),
        public_ip: Some(ip.to_string()),
        ..Default::default()
    }
}

fn is_auto(a: &InstanceNetworkInterfaceAssociation) -> bool {
    a.ip_owner_id.as_deref() == Some(AMAZON)
}

/// The public addresses bound to an ENI: (private address, public address, association).
fn bound_public_ips(
    eni: &InstanceNetworkInterface,
) -> Vec<(String, Ipv4Addr, InstanceNetworkInterfaceAssociation)> {
    let mut out = Vec::new();
    for p in eni.private_ip_addresses.iter().flatten() {
        if let (Some(private), Some(a)) = (&p.private_ip_address, &p.association)
            && let Some(ip) = parse_ip(a.public_ip.as_deref())
        {
            out.push((private.clone(), ip, a.clone()));
        }
    }
    out
}

/// What is bound to one private address of an ENI.
fn bound_to(
    eni: &InstanceNetworkInterface,
    private_ip: &str,
) -> Option<InstanceNetworkInterfaceAssociation> {
    eni.private_ip_addresses
        .iter()
        .flatten()
        .find(|p| p.private_ip_address.as_deref() == Some(private_ip))
        .and_then(|p| p.association.clone())
}

/// Binds (or with `None` unbinds) a public address to one private address of an ENI. The
/// ENI's own `Association` is that of its primary private address, as EC2 shows it.
fn bind(
    eni: &mut InstanceNetworkInterface,
    private_ip: &str,
    assoc: Option<InstanceNetworkInterfaceAssociation>,
) {
    for p in eni.private_ip_addresses.iter_mut().flatten() {
        if p.private_ip_address.as_deref() == Some(private_ip) {
            p.association = assoc.clone();
        }
    }
    if eni.private_ip_address.as_deref() == Some(private_ip) {
        eni.association = assoc;
    }
}

/// An instance's `PublicIpAddress` and `PublicDnsName` are those of its primary ENI.
fn refresh_instance(inst: &mut Instance) {
    let assoc = inst
        .network_interfaces
        .iter()
        .flatten()
        .find(|e| e.attachment.as_ref().and_then(|a| a.device_index) == Some(0))
        .and_then(|e| e.association.clone());
    inst.public_ip_address = assoc.as_ref().and_then(|a| a.public_ip.clone());
    inst.public_dns_name = Some(assoc.and_then(|a| a.public_dns_name).unwrap_or_default());
}

/// Whether RunInstances gives the primary ENI a public address: the first network interface
/// specification's `AssociatePublicIpAddress` if given (false wins over the subnet), else the
/// subnet's `MapPublicIpOnLaunch`.
pub fn launch_wants_public_ip(
    input: &RunInstancesRequest,
    subnet: &Subnet,
) -> Result<bool, ApiError> {
    let specs = input.network_interfaces.as_deref().unwrap_or_default();
    let asked = specs
        .iter()
        .find(|n| n.device_index.unwrap_or(0) == 0)
        .and_then(|n| n.associate_public_ip_address);
    if asked == Some(true) && specs.len() > 1 {
        return Err(ApiError::combination(
            "The associatePublicIPAddress parameter cannot be specified when launching with multiple network interfaces.",
        ));
    }
    Ok(asked.unwrap_or(subnet.map_public_ip_on_launch == Some(true)))
}

/// Brings an instance's auto-assigned public address in line with its state, as EC2 does:
/// released when it stops or terminates; a new one while it runs if it was launched with one,
/// has a single ENI and no public address on it (after a start, or after an Elastic IP left
/// it). Writes the ENI records; the caller saves the instance. Returns whether anything
/// changed, so the caller can tell the data plane.
pub fn settle_public_ip(tx: &Tx<'_>, rec: &mut InstanceRecord) -> Result<bool, ApiError> {
    let live = matches!(rec.state_name().as_str(), "pending" | "running");
    let wants = rec.auto_public_ip;
    let Some(enis) = rec.instance.network_interfaces.as_mut() else {
        return Ok(false);
    };
    let mut changed = false;
    if !live {
        for eni in enis.iter_mut() {
            for (private, _, a) in bound_public_ips(eni) {
                if is_auto(&a) {
                    bind(eni, &private, None);
                    changed = true;
                }
            }
        }
    } else if wants
        && let [eni] = enis.as_mut_slice()
        && bound_public_ips(eni).is_empty()
        && let Some(private) = eni.private_ip_address.clone()
    {
        let ip = allocate_public_ip(tx, None)?;
        let dns = dns_in_vpc(tx, eni.vpc_id.as_deref(), ip)?;
        bind(eni, &private, Some(association(ip, AMAZON, dns)));
        changed = true;
    }
    if changed {
        for eni in enis.iter() {
            if let Some(id) = &eni.network_interface_id {
                tx.update(ENI_KIND, id, eni)?;
            }
        }
        refresh_instance(&mut rec.instance);
    }
    Ok(changed)
}

/// The instance is terminating and its ENIs go with it: Elastic IPs on them are
/// disassociated and stay allocated. (Auto-assigned addresses go with the ENI records.)
pub fn instance_terminated(tx: &Tx<'_>, rec: &InstanceRecord) -> Result<bool, ApiError> {
    let enis: Vec<&str> = rec
        .instance
        .network_interfaces
        .iter()
        .flatten()
        .filter_map(|e| e.network_interface_id.as_deref())
        .collect();
    let mut changed = false;
    for mut eip in tx.list::<Address>(KIND)? {
        if eip
            .network_interface_id
            .as_deref()
            .is_some_and(|e| enis.contains(&e))
        {
            clear_association(&mut eip);
            save_eip(tx, &eip)?;
            changed = true;
        }
    }
    Ok(changed)
}

/// The instance whose ENI this is, if any.
fn owner_of(tx: &Tx<'_>, eni_id: &str) -> Result<Option<InstanceRecord>, ApiError> {
    Ok(tx
        .list::<InstanceRecord>(instances::KIND)?
        .into_iter()
        .find(|r| {
            r.instance
                .network_interfaces
                .iter()
                .flatten()
                .any(|e| e.network_interface_id.as_deref() == Some(eni_id))
        }))
}

/// Changes an ENI, in its record and in its instance's copy; then the instance settles its
/// auto-assigned address (an ENI an Elastic IP just left gets a new one, as on EC2).
fn update_eni(
    tx: &Tx<'_>,
    eni_id: &str,
    f: impl FnOnce(&mut InstanceNetworkInterface),
) -> Result<(), ApiError> {
    match owner_of(tx, eni_id)? {
        Some(mut rec) => {
            if let Some(eni) = rec
                .instance
                .network_interfaces
                .iter_mut()
                .flatten()
                .find(|e| e.network_interface_id.as_deref() == Some(eni_id))
            {
                f(eni);
                tx.update(ENI_KIND, eni_id, eni)?;
            }
            refresh_instance(&mut rec.instance);
            settle_public_ip(tx, &mut rec)?;
            let id = rec.instance.instance_id.clone().unwrap_or_default();
            tx.update(instances::KIND, &id, &rec)
        }
        None => {
            let Some(mut eni) = tx.get::<InstanceNetworkInterface>(ENI_KIND, eni_id)? else {
                return Ok(());
            };
            f(&mut eni);
            tx.update(ENI_KIND, eni_id, &eni)
        }
    }
}

fn clear_association(eip: &mut Address) {
    eip.association_id = None;
    eip.instance_id = None;
    eip.network_interface_id = None;
    eip.network_interface_owner_id = None;
    eip.private_ip_address = None;
}

fn save_eip(tx: &Tx<'_>, eip: &Address) -> Result<(), ApiError> {
    let id = eip
        .allocation_id
        .as_deref()
        .ok_or_else(|| ApiError::internal("Elastic IP without an allocation id"))?;
    tx.update(KIND, id, eip)
}

fn address_not_found(ip: &str) -> ApiError {
    ApiError::new(
        "InvalidAddress.NotFound",
        format!("Address '{ip}' not found."),
    )
}

fn load_eip(ctx: &Ctx, allocation_id: &str) -> Result<Address, ApiError> {
    check_id("eipalloc", "Allocation", allocation_id)?;
    ctx.tx.get(KIND, allocation_id)?.ok_or_else(|| {
        ApiError::new(
            "InvalidAllocationID.NotFound",
            format!("The allocation ID '{allocation_id}' does not exist"),
        )
    })
}

fn eip_by_ip(ctx: &Ctx, ip: &str) -> Result<Address, ApiError> {
    ctx.tx
        .list::<Address>(KIND)?
        .into_iter()
        .find(|a| a.public_ip.as_deref() == Some(ip))
        .ok_or_else(|| address_not_found(ip))
}

/// The Elastic IP an action names, by `AllocationId` or by the deprecated `PublicIp`.
fn named_eip(
    ctx: &Ctx,
    allocation_id: Option<&str>,
    public_ip: Option<&str>,
) -> Result<Address, ApiError> {
    match (allocation_id, public_ip) {
        (Some(_), Some(_)) => Err(ApiError::combination(
            "You may specify public IP or allocation id, but not both in the same call",
        )),
        (Some(id), None) => load_eip(ctx, id),
        (None, Some(ip)) => eip_by_ip(ctx, ip),
        (None, None) => Err(ApiError::missing("AllocationId")),
    }
}

pub fn allocate_address(
    ctx: &Ctx,
    input: AllocateAddressRequest,
) -> Result<AllocateAddressResult, ApiError> {
    if input.domain.as_deref() == Some("standard") {
        return Err(ApiError::invalid_value(
            "EC2-Classic has been retired: only Domain 'vpc' addresses can be allocated.",
        ));
    }
    if let Some(pool) = input.public_ipv4_pool.as_deref()
        && pool != AMAZON
    {
        return Err(ApiError::invalid_value(format!(
            "The public IPv4 pool '{pool}' does not exist; ec2d allocates from the 'amazon' pool."
        )));
    }
    if input.customer_owned_ipv4_pool.is_some() || input.ipam_pool_id.is_some() {
        return Err(ApiError::invalid_value(
            "Customer-owned and IPAM address pools are not available in ec2d.",
        ));
    }
    if let Some(group) = input.network_border_group.as_deref()
        && group != ctx.region()
    {
        return Err(ApiError::invalid_value(format!(
            "The network border group '{group}' is not valid in region {}.",
            ctx.region()
        )));
    }
    let wanted = match input.address.as_deref() {
        Some(a) => Some(a.parse::<Ipv4Addr>().map_err(|_| {
            ApiError::invalid_value(format!("Value ({a}) for parameter address is invalid."))
        })?),
        None => None,
    };
    if ctx.tx.list::<Address>(KIND)?.len() >= EIP_LIMIT {
        return Err(ApiError::new(
            "AddressLimitExceeded",
            "The maximum number of addresses has been reached.",
        ));
    }
    let ip = allocate_public_ip(ctx.tx, wanted)?;
    let id = new_id("eipalloc");
    let eip = Address {
        allocation_id: Some(id.clone()),
        public_ip: Some(ip.to_string()),
        domain: Some("vpc".into()),
        public_ipv4_pool: Some(AMAZON.into()),
        network_border_group: Some(ctx.region().to_string()),
        ..Default::default()
    };
    ctx.tx.insert(KIND, &id, &eip)?;
    apply_tag_specs(ctx.tx, &id, "elastic-ip", input.tag_specifications.as_ref())?;
    Ok(AllocateAddressResult {
        allocation_id: eip.allocation_id,
        public_ip: eip.public_ip,
        domain: eip.domain,
        public_ipv4_pool: eip.public_ipv4_pool,
        network_border_group: eip.network_border_group,
        ..Default::default()
    })
}

/// Where an association lands: an ENI's private address, and the instance holding the ENI.
struct Target {
    eni_id: String,
    private_ip: String,
    instance_id: Option<String>,
    vpc_id: Option<String>,
}

fn association_target(ctx: &Ctx, input: &AssociateAddressRequest) -> Result<Target, ApiError> {
    let (eni, instance_id) = match (&input.instance_id, &input.network_interface_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::combination(
                "You may specify an instance ID or a network interface ID, but not both.",
            ));
        }
        (None, None) => return Err(ApiError::missing("InstanceId")),
        (Some(iid), None) => {
            let rec = instances::load(ctx, iid)?;
            let enis = rec.instance.network_interfaces.clone().unwrap_or_default();
            match enis.as_slice() {
                [eni] => (eni.clone(), Some(iid.clone())),
                [] => {
                    return Err(ApiError::new(
                        "IncorrectInstanceState",
                        format!("The instance '{iid}' is not in a valid state for this operation."),
                    ));
                }
                _ => {
                    return Err(ApiError::new(
                        "InvalidInstanceID",
                        format!(
                            "There are multiple interfaces attached to instance '{iid}'. Please specify an interface ID for the operation instead."
                        ),
                    ));
                }
            }
        }
        (None, Some(eid)) => {
            check_id("eni", "NetworkInterface", eid)?;
            let eni: InstanceNetworkInterface = ctx
                .tx
                .get(ENI_KIND, eid)?
                .ok_or_else(|| eni_not_found(eid))?;
            let owner = owner_of(ctx.tx, eid)?.and_then(|r| r.instance.instance_id);
            (eni, owner)
        }
    };
    let eni_id = eni.network_interface_id.clone().unwrap_or_default();
    let private_ip = match &input.private_ip_address {
        Some(p) => {
            let assigned = eni
                .private_ip_addresses
                .iter()
                .flatten()
                .any(|a| a.private_ip_address.as_deref() == Some(p.as_str()));
            if !assigned {
                return Err(ApiError::invalid_value(format!(
                    "The private IP address {p} is not assigned to the network interface {eni_id}."
                )));
            }
            p.clone()
        }
        None => eni.private_ip_address.clone().unwrap_or_default(),
    };
    Ok(Target {
        eni_id,
        private_ip,
        instance_id,
        vpc_id: eni.vpc_id.clone(),
    })
}

pub fn eni_not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidNetworkInterfaceID.NotFound",
        format!("The networkInterface ID '{id}' does not exist"),
    )
}

pub fn associate_address(
    ctx: &Ctx,
    input: AssociateAddressRequest,
) -> Result<AssociateAddressResult, ApiError> {
    let mut eip = named_eip(
        ctx,
        input.allocation_id.as_deref(),
        input.public_ip.as_deref(),
    )?;
    let target = association_target(ctx, &input)?;
    let allocation_id = eip.allocation_id.clone().unwrap_or_default();
    let ip: Ipv4Addr = parse_ip(eip.public_ip.as_deref())
        .ok_or_else(|| ApiError::internal("Elastic IP without an address"))?;
    let allow = input.allow_reassociation == Some(true);

    // Associating again where it already is changes nothing (EC2 calls this idempotent).
    if eip.network_interface_id.as_deref() == Some(target.eni_id.as_str())
        && eip.private_ip_address.as_deref() == Some(target.private_ip.as_str())
        && let Some(assoc) = &eip.association_id
    {
        return Ok(AssociateAddressResult {
            association_id: Some(assoc.clone()),
        });
    }
    if let Some(assoc) = &eip.association_id
        && !allow
    {
        return Err(ApiError::new(
            "Resource.AlreadyAssociated",
            format!("resource {allocation_id} is already associated with associate-id {assoc}"),
        ));
    }
    // A public address only reaches a VPC through its internet gateway.
    let vpc_id = target.vpc_id.clone().unwrap_or_default();
    if internet_gateways::count_attached(ctx, &vpc_id)? == 0 {
        return Err(ApiError::new(
            "Gateway.NotAttached",
            format!("Network {vpc_id} is not attached to any internet gateway"),
        ));
    }

    // Another Elastic IP on the target private address leaves it only if reassociation is
    // allowed, and stays allocated; an auto-assigned address is simply replaced.
    let eni: InstanceNetworkInterface = ctx
        .tx
        .get(ENI_KIND, &target.eni_id)?
        .ok_or_else(|| eni_not_found(&target.eni_id))?;
    if let Some(current) = bound_to(&eni, &target.private_ip)
        && !is_auto(&current)
    {
        let current_ip = current.public_ip.clone().unwrap_or_default();
        if !allow {
            return Err(ApiError::new(
                "Resource.AlreadyAssociated",
                format!(
                    "resource {} and {} is already associated with public address {current_ip}",
                    target.eni_id, target.private_ip
                ),
            ));
        }
        if let Ok(mut other) = eip_by_ip(ctx, &current_ip) {
            clear_association(&mut other);
            save_eip(ctx.tx, &other)?;
        }
    }

    // The address leaves where it was; that ENI may get a new auto-assigned address.
    if let (Some(old_eni), Some(old_private)) = (
        eip.network_interface_id.clone(),
        eip.private_ip_address.clone(),
    ) {
        clear_association(&mut eip);
        save_eip(ctx.tx, &eip)?;
        update_eni(ctx.tx, &old_eni, |e| bind(e, &old_private, None))?;
    }

    let dns = dns_in_vpc(ctx.tx, target.vpc_id.as_deref(), ip)?;
    let assoc = association(ip, ctx.account(), dns);
    update_eni(ctx.tx, &target.eni_id, |e| {
        bind(e, &target.private_ip, Some(assoc))
    })?;
    let association_id = new_id("eipassoc");
    eip.association_id = Some(association_id.clone());
    eip.instance_id = target.instance_id.clone();
    eip.network_interface_id = Some(target.eni_id.clone());
    eip.network_interface_owner_id = Some(ctx.account().to_string());
    eip.private_ip_address = Some(target.private_ip.clone());
    save_eip(ctx.tx, &eip)?;
    ctx.network_changed();
    Ok(AssociateAddressResult {
        association_id: Some(association_id),
    })
}

/// Takes an Elastic IP off the ENI it is associated with; the instance may get a new
/// auto-assigned address, as on EC2.
fn disassociate(ctx: &Ctx, eip: &mut Address) -> Result<(), ApiError> {
    let (Some(eni), Some(private)) = (
        eip.network_interface_id.clone(),
        eip.private_ip_address.clone(),
    ) else {
        return Ok(());
    };
    clear_association(eip);
    save_eip(ctx.tx, eip)?;
    update_eni(ctx.tx, &eni, |e| bind(e, &private, None))?;
    ctx.network_changed();
    Ok(())
}

pub fn disassociate_address(ctx: &Ctx, input: DisassociateAddressRequest) -> Result<(), ApiError> {
    let mut eip = match (&input.association_id, &input.public_ip) {
        (Some(_), Some(_)) => {
            return Err(ApiError::combination(
                "You may specify public IP or association id, but not both in the same call",
            ));
        }
        (Some(assoc), None) => {
            check_id("eipassoc", "Association", assoc)?;
            ctx.tx
                .list::<Address>(KIND)?
                .into_iter()
                .find(|a| a.association_id.as_deref() == Some(assoc.as_str()))
                .ok_or_else(|| {
                    ApiError::new(
                        "InvalidAssociationID.NotFound",
                        format!("The association ID '{assoc}' does not exist"),
                    )
                })?
        }
        (None, Some(ip)) => eip_by_ip(ctx, ip)?,
        (None, None) => return Err(ApiError::missing("AssociationId")),
    };
    disassociate(ctx, &mut eip)
}

pub fn release_address(ctx: &Ctx, input: ReleaseAddressRequest) -> Result<(), ApiError> {
    let mut eip = named_eip(
        ctx,
        input.allocation_id.as_deref(),
        input.public_ip.as_deref(),
    )?;
    let ip = eip.public_ip.clone().unwrap_or_default();
    if let Some(group) = input.network_border_group.as_deref()
        && Some(group) != eip.network_border_group.as_deref()
    {
        return Err(address_not_found(&ip));
    }
    if let Some(eni_id) = eip.network_interface_id.clone() {
        // EC2 releases an address in use only in the default VPC, disassociating it first.
        let eni: Option<InstanceNetworkInterface> = ctx.tx.get(ENI_KIND, &eni_id)?;
        let vpc = eni.and_then(|e| e.vpc_id);
        if vpc.is_none() || vpc != vpcs::default_vpc_id(ctx)? {
            return Err(ApiError::new(
                "InvalidIPAddress.InUse",
                format!("Address {ip} is in use."),
            ));
        }
        disassociate(ctx, &mut eip)?;
    }
    let id = eip.allocation_id.clone().unwrap_or_default();
    ctx.tx.delete(KIND, &id)?;
    Ok(())
}

const ADDRESS_FILTERS: &[&str] = &[
    "allocation-id",
    "association-id",
    "domain",
    "instance-id",
    "network-border-group",
    "network-interface-id",
    "network-interface-owner-id",
    "private-ip-address",
    "public-ip",
    "public-ipv4-pool",
];

fn address_values(a: &Address, f: &str) -> Vec<String> {
    let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
    match f {
        "allocation-id" => one(&a.allocation_id),
        "association-id" => one(&a.association_id),
        "domain" => one(&a.domain),
        "instance-id" => one(&a.instance_id),
        "network-border-group" => one(&a.network_border_group),
        "network-interface-id" => one(&a.network_interface_id),
        "network-interface-owner-id" => one(&a.network_interface_owner_id),
        "private-ip-address" => one(&a.private_ip_address),
        "public-ip" => one(&a.public_ip),
        "public-ipv4-pool" => one(&a.public_ipv4_pool),
        _ => Vec::new(),
    }
}

pub fn describe_addresses(
    ctx: &Ctx,
    input: DescribeAddressesRequest,
) -> Result<DescribeAddressesResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, ADDRESS_FILTERS)?;
    let all: Vec<Address> = ctx.tx.list(KIND)?;
    let ips = input.public_ips.unwrap_or_default();
    for ip in &ips {
        if !all
            .iter()
            .any(|a| a.public_ip.as_deref() == Some(ip.as_str()))
        {
            return Err(address_not_found(ip));
        }
    }
    let ids = input.allocation_ids.unwrap_or_default();
    for id in &ids {
        load_eip(ctx, id)?;
    }
    let mut out = Vec::new();
    for mut a in all {
        let id = a.allocation_id.clone().unwrap_or_default();
        if !ips.is_empty() && !ips.iter().any(|ip| a.public_ip.as_deref() == Some(ip)) {
            continue;
        }
        if !ids.is_empty() && !ids.contains(&id) {
            continue;
        }
        let tags = ctx.tx.tags(&id)?;
        if matches(&filters, &tags, &|f: &str| Some(address_values(&a, f))) {
            a.tags = (!tags.is_empty()).then_some(tags);
            out.push(a);
        }
    }
    Ok(DescribeAddressesResult {
        addresses: Some(out),
    })
}

/// Public addresses of this scope by address, for describing ENIs: (allocation id,
/// association id) of each Elastic IP that is associated.
pub fn eip_ids_by_ip(tx: &Tx<'_>) -> Result<HashMap<String, (String, String)>, ApiError> {
    Ok(tx
        .list::<Address>(KIND)?
        .into_iter()
        .filter_map(|a| {
            Some((
                a.public_ip?,
                (a.allocation_id.unwrap_or_default(), a.association_id?),
            ))
        })
        .collect())
}

/// One public address the host can reach, for the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicEndpoint {
    pub public_ip: Ipv4Addr,
    pub account: String,
    pub region: String,
    /// The instance holding the ENI, if it is attached to one.
    pub instance_id: Option<String>,
    pub network_interface_id: String,
    pub private_ip: Ipv4Addr,
    pub vpc_id: String,
    /// The ENI's security groups, which filter what arrives at the public address.
    pub group_ids: Vec<String>,
}

/// Every public address bound to an ENI (auto-assigned and Elastic), in every account and
/// region. An Elastic IP that is allocated but not associated reaches nothing and is not
/// listed. Instance state is not looked at: a stopped instance has no auto-assigned address,
/// but keeps its Elastic IP, which then reaches nothing until it runs again.
pub fn public_endpoints(store: &Store) -> Result<Vec<PublicEndpoint>, ApiError> {
    store.read_all_scopes(|all| {
        let mut owners: HashMap<(String, String, String), String> = HashMap::new();
        for (account, region, rec) in all.list::<InstanceRecord>(instances::KIND)? {
            let Some(iid) = rec.instance.instance_id.clone() else {
                continue;
            };
            for e in rec.instance.network_interfaces.iter().flatten() {
                if let Some(eid) = &e.network_interface_id {
                    owners.insert((account.clone(), region.clone(), eid.clone()), iid.clone());
                }
            }
        }
        let mut out = Vec::new();
        for (account, region, eni) in all.list::<InstanceNetworkInterface>(ENI_KIND)? {
            let eni_id = eni.network_interface_id.clone().unwrap_or_default();
            for (private, public_ip, _) in bound_public_ips(&eni) {
                let Some(private_ip) = parse_ip(Some(&private)) else {
                    continue;
                };
                out.push(PublicEndpoint {
                    public_ip,
                    instance_id: owners
                        .get(&(account.clone(), region.clone(), eni_id.clone()))
                        .cloned(),
                    account: account.clone(),
                    region: region.clone(),
                    network_interface_id: eni_id.clone(),
                    private_ip,
                    vpc_id: eni.vpc_id.clone().unwrap_or_default(),
                    group_ids: eni
                        .groups
                        .iter()
                        .flatten()
                        .filter_map(|g| g.group_id.clone())
                        .collect(),
                });
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_is_loopback_and_never_localhost() {
        assert!(PUBLIC_POOL_BASE.is_loopback());
        assert!(in_pool(Ipv4Addr::new(127, 100, 0, 5)));
        assert!(in_pool(Ipv4Addr::new(127, 100, 255, 254)));
        assert!(!in_pool(Ipv4Addr::new(127, 0, 0, 1)));
        assert!(!in_pool(Ipv4Addr::new(127, 100, 3, 0)));
        assert!(!in_pool(Ipv4Addr::new(127, 100, 3, 255)));
        assert!(!in_pool(Ipv4Addr::new(127, 101, 0, 5)));
        assert!(!in_pool(Ipv4Addr::new(10, 100, 0, 5)));
    }

    #[test]
    fn public_hostnames() {
        let ip = Ipv4Addr::new(127, 100, 0, 5);
        assert_eq!(
            public_dns_name("us-east-1", ip),
            "ec2-127-100-0-5.compute-1.amazonaws.com"
        );
        assert_eq!(
            public_dns_name("eu-west-1", ip),
            "ec2-127-100-0-5.eu-west-1.compute.amazonaws.com"
        );
    }

    fn eni(private: &str) -> InstanceNetworkInterface {
        InstanceNetworkInterface {
            network_interface_id: Some("eni-0123456789abcdef0".into()),
            private_ip_address: Some(private.into()),
            private_ip_addresses: Some(vec![crate::model::InstancePrivateIpAddress {
                primary: Some(true),
                private_ip_address: Some(private.into()),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn binding_shows_on_the_eni_and_its_primary_address() {
        let mut e = eni("10.0.0.4");
        let ip = Ipv4Addr::new(127, 100, 1, 2);
        bind(
            &mut e,
            "10.0.0.4",
            Some(association(ip, AMAZON, String::new())),
        );
        assert_eq!(
            e.association.as_ref().and_then(|a| a.public_ip.as_deref()),
            Some("127.100.1.2")
        );
        let bound = bound_public_ips(&e);
        assert_eq!(bound.len(), 1);
        assert!(is_auto(&bound[0].2));
        assert_eq!(bound_to(&e, "10.0.0.4").map(|a| is_auto(&a)), Some(true));
        bind(&mut e, "10.0.0.4", None);
        assert!(e.association.is_none());
        assert!(bound_public_ips(&e).is_empty());
    }

    #[test]
    fn instance_public_fields_follow_the_primary_eni() {
        let mut e = eni("10.0.0.4");
        e.attachment = Some(crate::model::InstanceNetworkInterfaceAttachment {
            device_index: Some(0),
            ..Default::default()
        });
        let ip = Ipv4Addr::new(127, 100, 1, 2);
        bind(
            &mut e,
            "10.0.0.4",
            Some(association(ip, "000000000000", "ec2-x".into())),
        );
        let mut inst = Instance {
            network_interfaces: Some(vec![e]),
            ..Default::default()
        };
        refresh_instance(&mut inst);
        assert_eq!(inst.public_ip_address.as_deref(), Some("127.100.1.2"));
        assert_eq!(inst.public_dns_name.as_deref(), Some("ec2-x"));
    }

    #[test]
    fn launch_choice() {
        let subnet = |map| Subnet {
            map_public_ip_on_launch: Some(map),
            ..Default::default()
        };
        let spec = |v| crate::model::InstanceNetworkInterfaceSpecification {
            device_index: Some(0),
            associate_public_ip_address: v,
            ..Default::default()
        };
        let req = |specs: Option<Vec<_>>| RunInstancesRequest {
            network_interfaces: specs,
            ..Default::default()
        };
        assert!(launch_wants_public_ip(&req(None), &subnet(true)).unwrap());
        assert!(!launch_wants_public_ip(&req(None), &subnet(false)).unwrap());
        assert!(
            launch_wants_public_ip(&req(Some(vec![spec(Some(true))])), &subnet(false)).unwrap()
        );
        assert!(
            !launch_wants_public_ip(&req(Some(vec![spec(Some(false))])), &subnet(true)).unwrap()
        );
        assert!(launch_wants_public_ip(&req(Some(vec![spec(None)])), &subnet(true)).unwrap());
        assert!(
            launch_wants_public_ip(
                &req(Some(vec![spec(Some(true)), spec(None)])),
                &subnet(true)
            )
            .is_err()
        );
    }

    #[test]
    fn addresses_are_unique_across_scopes_and_listed_for_the_data_plane() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let eip_ip = store
            .transaction("111111111111", "us-east-1", |tx| {
                let ip = allocate_public_ip(tx, None)?;
                let eip = Address {
                    allocation_id: Some("eipalloc-0123456789abcdef0".into()),
                    public_ip: Some(ip.to_string()),
                    ..Default::default()
                };
                tx.insert(KIND, "eipalloc-0123456789abcdef0", &eip)?;
                Ok(ip)
            })
            .unwrap();
        assert!(in_pool(eip_ip));
        // Another account in another region cannot have it, even by asking for it.
        let err = store
            .transaction("222222222222", "eu-west-1", |tx| {
                allocate_public_ip(tx, Some(eip_ip))
            })
            .unwrap_err();
        assert_eq!(err.code, "InvalidAddress.NotFound");
        let auto_ip = store
            .transaction("222222222222", "eu-west-1", |tx| {
                let ip = allocate_public_ip(tx, None)?;
                let mut e = eni("10.0.0.4");
                e.vpc_id = Some("vpc-0123456789abcdef0".into());
                bind(
                    &mut e,
                    "10.0.0.4",
                    Some(association(ip, AMAZON, String::new())),
                );
                tx.insert(ENI_KIND, "eni-0123456789abcdef0", &e)?;
                Ok(ip)
            })
            .unwrap();
        assert_ne!(auto_ip, eip_ip);
        let used = store
            .transaction("333333333333", "us-west-2", used_public_ips)
            .unwrap();
        assert!(used.contains(&eip_ip) && used.contains(&auto_ip));
        // Only addresses bound to an ENI reach anything.
        let endpoints = public_endpoints(&store).unwrap();
        assert_eq!(
            endpoints,
            vec![PublicEndpoint {
                public_ip: auto_ip,
                account: "222222222222".into(),
                region: "eu-west-1".into(),
                instance_id: None,
                network_interface_id: "eni-0123456789abcdef0".into(),
                private_ip: Ipv4Addr::new(10, 0, 0, 4),
                vpc_id: "vpc-0123456789abcdef0".into(),
                group_ids: Vec::new(),
            }]
        );
    }
}
