//! Instances: records here, real machines in `compute`.
//!
//! An instance is `pending` until its machine's init runs, then `running`; `stopping` and
//! `shutting-down` last until the machine is gone. Machine events land in `apply_event`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use base64::Engine as _;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::api::common::{
    apply_tag_specs, check_id, ids_or_pages, matches, new_id, paginate, validate_filters,
};
use crate::api::instance_types::catalog;
use crate::api::security_groups::{self, GroupRecord};
use crate::api::subnets::{self, ENI_KIND};
use crate::api::{Ctx, addresses, iam_instance_profiles, images, key_pairs, volumes, vpcs};
use crate::compute::engine::{MachineEvent, MachineSpec};
use crate::compute::{EventHandler, Scope};
use crate::error::ApiError;
use crate::model::{
    AttributeBooleanValue, AttributeValue, CpuOptions, DescribeInstanceAttributeRequest,
    DescribeInstanceStatusRequest, DescribeInstanceStatusResult, DescribeInstancesRequest,
    DescribeInstancesResult, EbsInstanceBlockDevice, GetConsoleOutputRequest,
    GetConsoleOutputResult, GroupIdentifier, Instance, InstanceAttribute,
    InstanceBlockDeviceMapping, InstanceMetadataOptionsResponse, InstanceNetworkInterface,
    InstanceNetworkInterfaceAttachment, InstancePrivateIpAddress, InstanceState,
    InstanceStateChange, InstanceStatus, InstanceStatusDetails, InstanceStatusSummary,
    ModifyInstanceAttributeRequest, Monitoring, Placement, RebootInstancesRequest, Reservation,
    RunInstancesRequest, StartInstancesRequest, StartInstancesResult, StateReason,
    StopInstancesRequest, StopInstancesResult, TerminateInstancesRequest, TerminateInstancesResult,
};
use crate::protocol::types::Timestamp;
use crate::store::Store;

pub const KIND: &str = "instance";
/// How long terminated instances stay visible, as on EC2 (about an hour).
const TERMINATED_TTL_SECS: i64 = 3600;
/// EC2's limit on user data, before base64.
const MAX_USER_DATA: usize = 16 * 1024;

/// An instance as stored: the model shape plus what EC2 keeps beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub instance: Instance,
    pub reservation_id: String,
    /// Base64, as given to RunInstances.
    pub user_data: Option<String>,
    pub shutdown_behavior: String,
    pub disable_api_termination: bool,
    pub disable_api_stop: bool,
    pub smbios_uuid: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub terminated_at: Option<Timestamp>,
    /// The primary ENI was launched with a public IP (the subnet's MapPublicIpOnLaunch or
    /// AssociatePublicIpAddress), so it gets a new one at every start; see
    /// `addresses::settle_public_ip`.
    #[serde(default)]
    pub auto_public_ip: bool,
}

impl InstanceRecord {
    pub fn state_name(&self) -> String {
        self.instance
            .state
            .as_ref()
            .and_then(|s| s.name.clone())
            .unwrap_or_default()
    }

    fn id(&self) -> String {
        self.instance.instance_id.clone().unwrap_or_default()
    }
}

fn state(name: &str) -> InstanceState {
    let code = match name {
        "pending" => 0,
        "running" => 16,
        "shutting-down" => 32,
        "terminated" => 48,
        "stopping" => 64,
        "stopped" => 80,
        _ => 0,
    };
    InstanceState {
        code: Some(code),
        name: Some(name.to_string()),
    }
}

fn set_state(rec: &mut InstanceRecord, name: &str) {
    rec.instance.state = Some(state(name));
}

fn reason(code: &str, message: &str) -> Option<StateReason> {
    Some(StateReason {
        code: Some(code.into()),
        message: Some(message.into()),
    })
}

fn now_text() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S GMT")
        .to_string()
}

pub fn load(ctx: &Ctx, id: &str) -> Result<InstanceRecord, ApiError> {
    check_id("i", "Instance", id)?;
    let rec: InstanceRecord = ctx.tx.get(KIND, id)?.ok_or_else(|| not_found(id))?;
    if expired(&rec) {
        return Err(not_found(id));
    }
    Ok(rec)
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidInstanceID.NotFound",
        format!("The instance ID '{id}' does not exist"),
    )
}

fn expired(rec: &InstanceRecord) -> bool {
    rec.terminated_at
        .is_some_and(|t| (chrono::Utc::now() - t.0).num_seconds() > TERMINATED_TTL_SECS)
}

fn save(ctx: &Ctx, rec: &InstanceRecord) -> Result<(), ApiError> {
    ctx.tx.update(KIND, &rec.id(), rec)
}

fn dns_name(region: &str, ip: Ipv4Addr) -> String {
    let dashed = ip.to_string().replace('.', "-");
    if region == "us-east-1" {
        format!("ip-{dashed}.ec2.internal")
    } else {
        format!("ip-{dashed}.{region}.compute.internal")
    }
}

fn random_mac() -> String {
    let b: [u8; 5] = rand::random();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

/// The addresses taken in a subnet by ENIs.
fn used_ips(ctx: &Ctx, subnet_id: &str) -> Result<Vec<Ipv4Addr>, ApiError> {
    let enis: Vec<InstanceNetworkInterface> = ctx.tx.list(ENI_KIND)?;
    Ok(enis
        .iter()
        .filter(|e| e.subnet_id.as_deref() == Some(subnet_id))
        .filter_map(|e| e.private_ip_address.as_deref()?.parse().ok())
        .collect())
}

/// EC2 reserves the first four addresses and the last one of every subnet.
fn pick_ip(cidr: Ipv4Net, used: &[Ipv4Addr], wanted: Option<&str>) -> Result<Ipv4Addr, ApiError> {
    let first = u32::from(cidr.network()) + 4;
    let last = u32::from(cidr.broadcast()).saturating_sub(1);
    if let Some(w) = wanted {
        let ip: Ipv4Addr = w.parse().map_err(|_| {
            ApiError::invalid_value(format!("Invalid value '{w}' for privateIpAddress"))
        })?;
        let n = u32::from(ip);
        if !cidr.contains(&ip) || n < first || n > last {
            return Err(ApiError::new(
                "InvalidParameterValue",
                format!("Address {w} does not fall within the subnet's address range"),
            ));
        }
        if used.contains(&ip) {
            return Err(ApiError::new(
                "InvalidIPAddress.InUse",
                format!("Address {w} is in use."),
            ));
        }
        return Ok(ip);
    }
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| !used.contains(ip))
        .ok_or_else(|| {
            ApiError::new(
                "InsufficientFreeAddressesInSubnet",
                "There are not enough free addresses in the subnet to satisfy the request.",
            )
        })
}

/// The subnet to launch into: given, else the default subnet of the requested zone, else
/// the first default subnet.
fn launch_subnet(ctx: &Ctx, input: &RunInstancesRequest) -> Result<crate::model::Subnet, ApiError> {
    let eni_subnet = input
        .network_interfaces
        .iter()
        .flatten()
        .find_map(|n| n.subnet_id.clone());
    if let Some(id) = input.subnet_id.clone().or(eni_subnet) {
        return subnets::load_subnet(ctx, &id);
    }
    let zone = input
        .placement
        .as_ref()
        .and_then(|p| p.availability_zone.clone());
    let default_vpc = vpcs::default_vpc_id(ctx)?.ok_or_else(|| {
        ApiError::new("VPCIdNotSpecified", "No default VPC for this user. GroupName is only supported for EC2-Classic and default VPC.")
    })?;
    let all: Vec<crate::model::Subnet> = ctx.tx.list(subnets::KIND)?;
    let defaults: Vec<&crate::model::Subnet> = all
        .iter()
        .filter(|s| {
            s.vpc_id.as_deref() == Some(default_vpc.as_str()) && s.default_for_az == Some(true)
        })
        .collect();
    match zone {
        Some(z) => defaults
            .into_iter()
            .find(|s| s.availability_zone.as_deref() == Some(z.as_str()))
            .cloned()
            .ok_or_else(|| ApiError::invalid_value(format!("Invalid availability zone: [{z}]"))),
        None => defaults
            .first()
            .map(|s| (*s).clone())
            .ok_or_else(|| ApiError::new("MissingInput", "No subnets found for the default VPC")),
    }
}

/// Security groups for the primary ENI, checked to belong to the subnet's VPC.
fn launch_groups(
    ctx: &Ctx,
    input: &RunInstancesRequest,
    vpc_id: &str,
) -> Result<Vec<GroupIdentifier>, ApiError> {
    let all: Vec<GroupRecord> = ctx.tx.list(security_groups::KIND)?;
    let mut ids: Vec<String> = input.security_group_ids.clone().unwrap_or_default();
    for n in input.network_interfaces.iter().flatten() {
        ids.extend(n.groups.clone().unwrap_or_default());
    }
    let mut out = Vec::new();
    for id in &ids {
        check_id("sg", "Group", id)?;
        let g = all
            .iter()
            .find(|g| g.group.group_id.as_deref() == Some(id.as_str()))
            .ok_or_else(|| {
                ApiError::new(
                    "InvalidGroup.NotFound",
                    format!("The security group '{id}' does not exist"),
                )
            })?;
        if g.group.vpc_id.as_deref() != Some(vpc_id) {
            return Err(ApiError::invalid_value(format!(
                "Security group {id} and subnet belong to different networks."
            )));
        }
        out.push(GroupIdentifier {
            group_id: g.group.group_id.clone(),
            group_name: g.group.group_name.clone(),
        });
    }
    for name in input.security_groups.iter().flatten() {
        let g = all
            .iter()
            .find(|g| {
                g.group.group_name.as_deref() == Some(name.as_str())
                    && g.group.vpc_id.as_deref() == Some(vpc_id)
            })
            .ok_or_else(|| {
                ApiError::new(
                    "InvalidGroup.NotFound",
                    format!("The security group '{name}' does not exist in VPC '{vpc_id}'"),
                )
            })?;
        out.push(GroupIdentifier {
            group_id: g.group.group_id.clone(),
            group_name: g.group.group_name.clone(),
        });
    }
    if out.is_empty() {
        let g = all
            .iter()
            .find(|g| g.is_default && g.group.vpc_id.as_deref() == Some(vpc_id))
            .ok_or_else(|| ApiError::internal("VPC has no default security group"))?;
        out.push(GroupIdentifier {
            group_id: g.group.group_id.clone(),
            group_name: g.group.group_name.clone(),
        });
    }
    out.dedup();
    Ok(out)
}

fn metadata_options(
    input: &RunInstancesRequest,
    imds_v2_image: bool,
) -> InstanceMetadataOptionsResponse {
    let req = input.metadata_options.clone().unwrap_or_default();
    // AMIs flagged imds-support v2.0 launch with tokens required and a hop limit of 2.
    let (tokens, hops) = if imds_v2_image {
        ("required", 2)
    } else {
        ("optional", 1)
    };
    InstanceMetadataOptionsResponse {
        state: Some("applied".into()),
        http_tokens: Some(req.http_tokens.unwrap_or_else(|| tokens.into())),
        http_put_response_hop_limit: Some(req.http_put_response_hop_limit.unwrap_or(hops)),
        http_endpoint: Some(req.http_endpoint.unwrap_or_else(|| "enabled".into())),
        http_protocol_ipv6: Some(req.http_protocol_ipv6.unwrap_or_else(|| "disabled".into())),
        instance_metadata_tags: Some(
            req.instance_metadata_tags
                .unwrap_or_else(|| "disabled".into()),
        ),
    }
}

fn check_user_data(data: &Option<String>) -> Result<(), ApiError> {
    if let Some(d) = data {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map_err(|_| ApiError::invalid_value("Invalid BASE64 encoding of user data."))?;
        if raw.len() > MAX_USER_DATA {
            return Err(ApiError::invalid_value(
                "User data is limited to 16384 bytes",
            ));
        }
    }
    Ok(())
}

pub fn run_instances(ctx: &Ctx, input: RunInstancesRequest) -> Result<Reservation, ApiError> {
    if let Some(why) = ctx.api.compute.unavailable_reason() {
        return Err(ApiError::new(
            "InsufficientInstanceCapacity",
            format!("ec2d has no instance engine on this host: {why}"),
        )
        .with_status(503));
    }
    let image_id = input
        .image_id
        .clone()
        .ok_or_else(|| ApiError::missing("ImageId"))?;
    if input.min_count < 1 || input.max_count < input.min_count {
        return Err(ApiError::invalid_value(format!(
            "Value ({}) for parameter minCount is invalid. Expected a value between 1 and maxCount ({}).",
            input.min_count, input.max_count
        )));
    }
    let instance_type = input
        .instance_type
        .clone()
        .unwrap_or_else(|| "m1.small".into());
    let facts = catalog::find(&instance_type);
    if !crate::model::enums::InstanceType.contains(&instance_type.as_str()) {
        return Err(ApiError::invalid_value(format!(
            "Invalid value '{instance_type}' for InstanceType."
        )));
    }
    let behavior = input
        .instance_initiated_shutdown_behavior
        .clone()
        .unwrap_or_else(|| "stop".into());
    check_user_data(&input.user_data)?;
    if let Some(k) = &input.key_name
        && key_pairs::public_key(ctx, k)?.is_none()
    {
        return Err(ApiError::new(
            "InvalidKeyPair.NotFound",
            format!("The key pair '{k}' does not exist"),
        ));
    }
    let image = images::resolve_for_launch(ctx, &image_id)?;
    let profile =
        iam_instance_profiles::resolve_for_launch(ctx, input.iam_instance_profile.as_ref())?;
    let subnet = launch_subnet(ctx, &input)?;
    let subnet_id = subnet.subnet_id.clone().unwrap_or_default();
    let vpc_id = subnet.vpc_id.clone().unwrap_or_default();
    let zone = subnet.availability_zone.clone().unwrap_or_default();
    let cidr: Ipv4Net = subnet
        .cidr_block
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|_| ApiError::internal("subnet CIDR"))?;
    let groups = launch_groups(ctx, &input, &vpc_id)?;
    let auto_public_ip = addresses::launch_wants_public_ip(&input, &subnet)?;
    let count = if input.private_ip_address.is_some() {
        1
    } else {
        input.max_count
    };
    if input.private_ip_address.is_some() && input.min_count > 1 {
        return Err(ApiError::combination(
            "A private IP address can only be given when launching one instance.",
        ));
    }

    // Root volume size and DeleteOnTermination from BlockDeviceMappings.
    let mut root_size = image.root_size_gib;
    let mut root_dot = true;
    for m in input.block_device_mappings.iter().flatten() {
        if m.device_name.as_deref() == Some(image.root_device.as_str())
            && let Some(e) = &m.ebs
        {
            if let Some(s) = e.volume_size {
                if s < image.root_size_gib {
                    return Err(ApiError::new(
                        "InvalidBlockDeviceMapping",
                        format!(
                            "Volume of size {s}GiB is smaller than snapshot, expect size >= {}GiB",
                            image.root_size_gib
                        ),
                    ));
                }
                root_size = s;
            }
            if let Some(d) = e.delete_on_termination {
                root_dot = d;
            }
        }
    }

    let (vcpus, memory_mib) = facts
        .map(|f| (f.default_vcpus, f.memory_mib))
        .unwrap_or((1, 1024));
    let reservation_id = new_id("r");
    let imds_v2 = image.image.imds_support.as_deref() == Some("v2.0");
    let mut used = used_ips(ctx, &subnet_id)?;
    let launch_time = Timestamp::now();
    let mut instances = Vec::new();
    for index in 0..count {
        let ip = pick_ip(cidr, &used, input.private_ip_address.as_deref())?;
        used.push(ip);
        let id = new_id("i");
        let eni_id = new_id("eni");
        let mac = random_mac();
        let private_dns = dns_name(ctx.region(), ip);
        let eni = InstanceNetworkInterface {
            attachment: Some(InstanceNetworkInterfaceAttachment {
                attach_time: Some(launch_time),
                attachment_id: Some(new_id("eni-attach")),
                delete_on_termination: Some(true),
                device_index: Some(0),
                network_card_index: Some(0),
                status: Some("attached".into()),
                ..Default::default()
            }),
            description: Some(String::new()),
            groups: Some(groups.clone()),
            ipv6_addresses: Some(Vec::new()),
            mac_address: Some(mac),
            network_interface_id: Some(eni_id.clone()),
            owner_id: Some(ctx.account().to_string()),
            private_dns_name: Some(private_dns.clone()),
            private_ip_address: Some(ip.to_string()),
            private_ip_addresses: Some(vec![InstancePrivateIpAddress {
                primary: Some(true),
                private_dns_name: Some(private_dns.clone()),
                private_ip_address: Some(ip.to_string()),
                association: None,
            }]),
            source_dest_check: Some(true),
            status: Some("in-use".into()),
            subnet_id: Some(subnet_id.clone()),
            vpc_id: Some(vpc_id.clone()),
            interface_type: Some("interface".into()),
            ..Default::default()
        };
        ctx.tx.insert(ENI_KIND, &eni_id, &eni)?;
        let vol_tags: Option<Vec<crate::model::TagSpecification>> =
            input.tag_specifications.as_ref().map(|specs| {
                specs
                    .iter()
                    .filter(|s| s.resource_type.as_deref() == Some("volume"))
                    .cloned()
                    .collect()
            });
        let snapshot_id = image
            .image
            .block_device_mappings
            .iter()
            .flatten()
            .find(|m| m.device_name.as_deref() == Some(image.root_device.as_str()))
            .and_then(|m| m.ebs.as_ref()?.snapshot_id.clone());
        let root = volumes::create_attached(
            ctx,
            &image.root_source,
            root_size,
            &zone,
            snapshot_id,
            &id,
            &image.root_device,
            root_dot,
            vol_tags.as_ref(),
        )?;
        let instance = Instance {
            instance_id: Some(id.clone()),
            image_id: Some(image_id.clone()),
            state: Some(state("pending")),
            private_dns_name: Some(private_dns),
            public_dns_name: Some(String::new()),
            state_transition_reason: Some(String::new()),
            key_name: input.key_name.clone(),
            ami_launch_index: Some(index),
            product_codes: Some(Vec::new()),
            instance_type: Some(instance_type.clone()),
            launch_time: Some(launch_time),
            placement: Some(Placement {
                availability_zone: Some(zone.clone()),
                availability_zone_id: subnet.availability_zone_id.clone(),
                group_name: Some(String::new()),
                tenancy: Some("default".into()),
                ..Default::default()
            }),
            monitoring: Some(Monitoring {
                state: Some("disabled".into()),
            }),
            subnet_id: Some(subnet_id.clone()),
            vpc_id: Some(vpc_id.clone()),
            private_ip_address: Some(ip.to_string()),
            architecture: image.image.architecture.clone(),
            root_device_type: Some("ebs".into()),
            root_device_name: Some(image.root_device.clone()),
            block_device_mappings: Some(vec![InstanceBlockDeviceMapping {
                device_name: Some(image.root_device.clone()),
                ebs: Some(EbsInstanceBlockDevice {
                    attach_time: Some(launch_time),
                    delete_on_termination: Some(root_dot),
                    status: Some("attached".into()),
                    volume_id: root.volume_id.clone(),
                    ..Default::default()
                }),
            }]),
            virtualization_type: Some("hvm".into()),
            client_token: input.client_token.clone().or_else(|| Some(String::new())),
            security_groups: Some(groups.clone()),
            source_dest_check: Some(true),
            hypervisor: Some("xen".into()),
            network_interfaces: Some(vec![eni]),
            ebs_optimized: Some(input.ebs_optimized.unwrap_or(false)),
            ena_support: Some(true),
            cpu_options: facts.map(|f| CpuOptions {
                core_count: Some(f.default_cores as i32),
                threads_per_core: Some(f.default_threads_per_core as i32),
                ..Default::default()
            }),
            metadata_options: Some(metadata_options(&input, imds_v2)),
            platform_details: Some("Linux/UNIX".into()),
            usage_operation: Some("RunInstances".into()),
            usage_operation_update_time: Some(launch_time),
            boot_mode: image.image.boot_mode.clone(),
            current_instance_boot_mode: Some("legacy-bios".into()),
            iam_instance_profile: profile.as_ref().map(|p| p.shown()),
            ..Default::default()
        };
        let mut rec = InstanceRecord {
            instance,
            reservation_id: reservation_id.clone(),
            user_data: input.user_data.clone(),
            shutdown_behavior: behavior.clone(),
            disable_api_termination: input.disable_api_termination.unwrap_or(false),
            disable_api_stop: input.disable_api_stop.unwrap_or(false),
            smbios_uuid: smbios_uuid(&id),
            vcpus,
            memory_mib,
            terminated_at: None,
            auto_public_ip,
        };
        if addresses::settle_public_ip(ctx.tx, &mut rec)? {
            ctx.network_changed();
        }
        ctx.tx.insert(KIND, &id, &rec)?;
        if let Some(p) = &profile {
            iam_instance_profiles::associate_at_launch(ctx, &id, p)?;
        }
        let inst_tags: Option<Vec<crate::model::TagSpecification>> =
            input.tag_specifications.as_ref().map(|specs| {
                specs
                    .iter()
                    .filter(|s| s.resource_type.as_deref() != Some("volume"))
                    .cloned()
                    .collect()
            });
        apply_tag_specs(ctx.tx, &id, "instance", inst_tags.as_ref())?;
        schedule_launch(ctx, &rec, image.boot())?;
        let mut shown = rec.instance.clone();
        shown.tags = crate::api::common::tag_set(ctx.tx, &id)?;
        instances.push(shown);
    }
    Ok(Reservation {
        reservation_id: Some(reservation_id),
        owner_id: Some(ctx.account().to_string()),
        groups: Some(Vec::new()),
        instances: Some(instances),
        requester_id: None,
    })
}

/// `ec2` followed by the instance id's digits, shaped as a UUID, as EC2's Xen and Nitro
/// hosts report it; cloud-init keys on the `ec2` prefix.
fn smbios_uuid(instance_id: &str) -> String {
    let hex: String = instance_id
        .trim_start_matches("i-")
        .chars()
        .chain(std::iter::repeat('0'))
        .take(29)
        .collect();
    format!(
        "ec2{}-{}-{}-{}-{}",
        &hex[0..5],
        &hex[5..9],
        &hex[9..13],
        &hex[13..17],
        &hex[17..29]
    )
}

fn machine_spec(
    ctx: &Ctx,
    rec: &InstanceRecord,
    boot: images::BootFiles,
) -> Result<MachineSpec, ApiError> {
    let id = rec.id();
    let root_vol = rec
        .instance
        .block_device_mappings
        .iter()
        .flatten()
        .find_map(|m| m.ebs.as_ref()?.volume_id.clone())
        .unwrap_or_default();
    let hostname = rec
        .instance
        .private_dns_name
        .clone()
        .unwrap_or_default()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let root_disk = ctx
        .api
        .storage
        .volume_path(&root_vol)
        .map_err(|e| ApiError::internal(format!("root volume of {id}: {e}")))?;
    Ok(MachineSpec {
        instance_id: id.clone(),
        vcpus: rec.vcpus,
        memory_mib: rec.memory_mib,
        hostname: hostname.clone(),
        smbios_uuid: rec.smbios_uuid.clone(),
        root_disk,
        disks: Vec::new(),
        kernel: boot.kernel,
        initrd: boot.initrd,
        cmdline: boot
            .cmdline
            .unwrap_or_else(|| "console=ttyS0 reboot=k panic=-1".into()),
        init_env: vec![
            ("ec2d_instance_id".into(), id.clone()),
            ("ec2d_hostname".into(), hostname),
        ],
        nics: Vec::new(),
        state_dir: ctx.api.compute.state_dir(&id),
    })
}

/// Starts the instance's machine once the records are committed.
fn schedule_launch(
    ctx: &Ctx,
    rec: &InstanceRecord,
    boot: images::BootFiles,
) -> Result<(), ApiError> {
    let mut spec = machine_spec(ctx, rec, boot)?;
    let compute = ctx.api.compute.clone();
    let dataplane = ctx.api.dataplane.clone();
    let store = ctx.api.store.clone();
    let storage = ctx.api.storage.clone();
    let scope = Scope {
        account: ctx.account().to_string(),
        region: ctx.region().to_string(),
        instance_id: rec.id(),
    };
    ctx.after_commit(move || {
        let unplug = dataplane.clone();
        let handler: EventHandler = Arc::new(move |store: &Store, scope: &Scope, event| {
            let gone = matches!(event, MachineEvent::PoweredOff | MachineEvent::Crashed(_));
            if gone {
                unplug.detach_instance(&scope.instance_id);
            }
            let started = event == MachineEvent::Started;
            apply_event(store, &storage, scope, event);
            // Running, its public addresses start to lead somewhere; stopped or terminated,
            // they were released.
            if gone || started {
                unplug.sync();
            }
        });
        // Launching takes tens of milliseconds (loop device, processes); instances of one
        // call start side by side, and the caller has its `pending` answer already.
        let id = scope.instance_id.clone();
        let started = std::thread::Builder::new()
            .name(format!("launch-{id}"))
            .spawn(move || {
                match dataplane.attach_instance(&scope.account, &scope.region, &scope.instance_id) {
                    Ok(nics) => spec.nics = nics,
                    // The machine still runs, as one with its cable out would.
                    Err(e) => {
                        tracing::error!(instance = %scope.instance_id, error = %e, "cannot plug the instance into its VPC")
                    }
                }
                if let Err(e) = compute.launch(store.clone(), scope.clone(), spec, handler.clone())
                {
                    tracing::error!(instance = %scope.instance_id, error = %e, "launch failed");
                    handler(&store, &scope, MachineEvent::Crashed(e.to_string()));
                }
            });
        if let Err(e) = started {
            tracing::error!(instance = %id, error = %e, "cannot start a launch thread");
        }
    });
    Ok(())
}

/// Records what a machine did. Runs on engine threads, in its own transaction.
pub fn apply_event(
    store: &Store,
    storage: &Arc<crate::storage::Storage>,
    scope: &Scope,
    event: MachineEvent,
) {
    let result = store.transaction(&scope.account, &scope.region, |tx| {
        let Some(mut rec) = tx.get::<InstanceRecord>(KIND, &scope.instance_id)? else {
            return Ok(Vec::new());
        };
        let current = rec.state_name();
        let mut doomed_volumes = Vec::new();
        match (&event, current.as_str()) {
            (MachineEvent::Started, "pending") => {
                set_state(&mut rec, "running");
                rec.instance.state_reason = None;
                rec.instance.state_transition_reason = Some(String::new());
            }
            (MachineEvent::Started | MachineEvent::Rebooted, _) => {}
            (MachineEvent::PoweredOff | MachineEvent::Crashed(_), "shutting-down") => {
                doomed_volumes = terminate_record(tx, &mut rec)?;
            }
            (MachineEvent::PoweredOff, "stopping") => {
                set_state(&mut rec, "stopped");
                rec.instance.state_reason = reason(
                    "Client.UserInitiatedShutdown",
                    "Client.UserInitiatedShutdown: User initiated shutdown",
                );
            }
            (MachineEvent::PoweredOff, "pending" | "running") => {
                // The guest powered itself off.
                rec.instance.state_transition_reason =
                    Some(format!("User initiated ({})", now_text()));
                if rec.shutdown_behavior == "terminate" {
                    rec.instance.state_reason = reason(
                        "Client.InstanceInitiatedShutdown",
                        "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
                    );
                    doomed_volumes = terminate_record(tx, &mut rec)?;
                } else {
                    set_state(&mut rec, "stopped");
                    rec.instance.state_reason = reason(
                        "Client.InstanceInitiatedShutdown",
                        "Client.InstanceInitiatedShutdown: Instance initiated shutdown",
                    );
                }
            }
            (MachineEvent::Crashed(why), "pending" | "running" | "stopping") => {
                set_state(&mut rec, "stopped");
                rec.instance.state_reason = reason(
                    "Server.InternalError",
                    &format!("Server.InternalError: {why}"),
                );
            }
            _ => {}
        }
        // What the machine did must be recorded even if no public address is free for it.
        if let Err(e) = addresses::settle_public_ip(tx, &mut rec) {
            tracing::warn!(instance = %scope.instance_id, error = %e, "public address not settled");
        }
        tx.update(KIND, &scope.instance_id, &rec)?;
        Ok(doomed_volumes)
    });
    match result {
        Ok(doomed) => {
            for v in doomed {
                if let Err(e) = storage.delete_volume(&v) {
                    tracing::warn!(volume = %v, error = %e, "could not delete volume file");
                }
            }
        }
        Err(e) => {
            tracing::error!(instance = %scope.instance_id, error = %e, "could not record machine event")
        }
    }
}

/// Marks an instance terminated and releases what it held; returns volume files to delete.
fn terminate_record(
    tx: &crate::store::Tx<'_>,
    rec: &mut InstanceRecord,
) -> Result<Vec<String>, ApiError> {
    set_state(rec, "terminated");
    rec.terminated_at = Some(Timestamp::now());
    addresses::instance_terminated(tx, rec)?;
    let id = rec.id();
    iam_instance_profiles::release_instance(tx, &id)?;
    let mut doomed = Vec::new();
    for mut v in tx.list::<crate::model::Volume>(volumes::KIND)? {
        let Some(att) = v
            .attachments
            .iter()
            .flatten()
            .find(|a| a.instance_id.as_deref() == Some(id.as_str()))
            .cloned()
        else {
            continue;
        };
        let vid = v.volume_id.clone().unwrap_or_default();
        if att.delete_on_termination == Some(true) {
            tx.delete(volumes::KIND, &vid)?;
            doomed.push(vid);
        } else {
            v.attachments = Some(Vec::new());
            v.state = Some("available".into());
            tx.update(volumes::KIND, &vid, &v)?;
        }
    }
    for eni in rec.instance.network_interfaces.iter().flatten() {
        if let Some(e) = &eni.network_interface_id {
            tx.delete(ENI_KIND, e)?;
        }
    }
    rec.instance.network_interfaces = Some(Vec::new());
    rec.instance.private_ip_address = None;
    rec.instance.private_dns_name = Some(String::new());
    rec.instance.public_ip_address = None;
    rec.instance.public_dns_name = Some(String::new());
    rec.instance.subnet_id = None;
    rec.instance.vpc_id = None;
    rec.instance.security_groups = Some(Vec::new());
    rec.instance.block_device_mappings = Some(Vec::new());
    Ok(doomed)
}

fn change(id: &str, previous: &str, current: &str) -> InstanceStateChange {
    InstanceStateChange {
        instance_id: Some(id.to_string()),
        current_state: Some(state(current)),
        previous_state: Some(state(previous)),
    }
}

fn load_all(ctx: &Ctx, ids: &[String]) -> Result<Vec<InstanceRecord>, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::missing("InstanceId"));
    }
    let mut missing = Vec::new();
    let mut out = Vec::new();
    for id in ids {
        check_id("i", "Instance", id)?;
        match ctx.tx.get::<InstanceRecord>(KIND, id)? {
            Some(r) if !expired(&r) => out.push(r),
            _ => missing.push(id.as_str()),
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::new(
            "InvalidInstanceID.NotFound",
            format!("The instance IDs '{}' do not exist", missing.join(", ")),
        ));
    }
    Ok(out)
}

pub fn terminate_instances(
    ctx: &Ctx,
    input: TerminateInstancesRequest,
) -> Result<TerminateInstancesResult, ApiError> {
    let recs = load_all(ctx, &input.instance_ids)?;
    if let Some(r) = recs.iter().find(|r| r.disable_api_termination) {
        return Err(ApiError::new(
            "OperationNotPermitted",
            format!(
                "The instance '{}' may not be terminated. Modify its 'disableApiTermination' instance attribute and try again.",
                r.id()
            ),
        ));
    }
    let force = input.force == Some(true) || input.skip_os_shutdown == Some(true);
    let mut changes = Vec::new();
    for mut rec in recs {
        let id = rec.id();
        let prev = rec.state_name();
        match prev.as_str() {
            "terminated" | "shutting-down" => {
                changes.push(change(&id, &prev, &prev));
                continue;
            }
            _ => {}
        }
        rec.instance.state_transition_reason = Some(format!("User initiated ({})", now_text()));
        rec.instance.state_reason = reason(
            "Client.UserInitiatedShutdown",
            "Client.UserInitiatedShutdown: User initiated shutdown",
        );
        if ctx.api.compute.is_live(&id) {
            set_state(&mut rec, "shutting-down");
            addresses::settle_public_ip(ctx.tx, &mut rec)?;
            save(ctx, &rec)?;
            let compute = ctx.api.compute.clone();
            ctx.after_commit(move || {
                compute.shutdown(&id, force);
            });
            changes.push(change(&rec.id(), &prev, "shutting-down"));
        } else {
            let doomed = terminate_record(ctx.tx, &mut rec)?;
            save(ctx, &rec)?;
            let storage = ctx.api.storage.clone();
            ctx.after_commit(move || {
                for v in doomed {
                    if let Err(e) = storage.delete_volume(&v) {
                        tracing::warn!(volume = %v, error = %e, "could not delete volume file");
                    }
                }
            });
            changes.push(change(&rec.id(), &prev, "shutting-down"));
        }
    }
    ctx.network_changed();
    Ok(TerminateInstancesResult {
        terminating_instances: Some(changes),
    })
}

pub fn stop_instances(
    ctx: &Ctx,
    input: StopInstancesRequest,
) -> Result<StopInstancesResult, ApiError> {
    let recs = load_all(ctx, &input.instance_ids)?;
    if input.hibernate == Some(true) {
        return Err(ApiError::new(
            "UnsupportedHibernationConfiguration",
            "Hibernation is not enabled for these instances.",
        ));
    }
    for r in &recs {
        if r.disable_api_stop {
            return Err(ApiError::new(
                "OperationNotPermitted",
                format!(
                    "The instance '{}' may not be stopped. Modify its 'disableApiStop' instance attribute and try again.",
                    r.id()
                ),
            ));
        }
        if matches!(r.state_name().as_str(), "terminated" | "shutting-down") {
            return Err(ApiError::new(
                "IncorrectInstanceState",
                format!(
                    "This instance '{}' is not in a state from which it can be stopped.",
                    r.id()
                ),
            ));
        }
    }
    let force = input.force == Some(true) || input.skip_os_shutdown == Some(true);
    let mut changes = Vec::new();
    for mut rec in recs {
        let id = rec.id();
        let prev = rec.state_name();
        if matches!(prev.as_str(), "stopped" | "stopping") {
            changes.push(change(&id, &prev, &prev));
            continue;
        }
        rec.instance.state_transition_reason = Some(format!("User initiated ({})", now_text()));
        if ctx.api.compute.is_live(&id) {
            set_state(&mut rec, "stopping");
            addresses::settle_public_ip(ctx.tx, &mut rec)?;
            save(ctx, &rec)?;
            let compute = ctx.api.compute.clone();
            let id2 = id.clone();
            ctx.after_commit(move || {
                compute.shutdown(&id2, force);
            });
            changes.push(change(&id, &prev, "stopping"));
        } else {
            set_state(&mut rec, "stopped");
            rec.instance.state_reason = reason(
                "Client.UserInitiatedShutdown",
                "Client.UserInitiatedShutdown: User initiated shutdown",
            );
            addresses::settle_public_ip(ctx.tx, &mut rec)?;
            save(ctx, &rec)?;
            changes.push(change(&id, &prev, "stopping"));
        }
    }
    ctx.network_changed();
    Ok(StopInstancesResult {
        stopping_instances: Some(changes),
    })
}

pub fn start_instances(
    ctx: &Ctx,
    input: StartInstancesRequest,
) -> Result<StartInstancesResult, ApiError> {
    let recs = load_all(ctx, &input.instance_ids)?;
    for r in &recs {
        if !matches!(r.state_name().as_str(), "stopped" | "running" | "pending") {
            return Err(ApiError::new(
                "IncorrectInstanceState",
                format!(
                    "The instance '{}' is not in a state from which it can be started.",
                    r.id()
                ),
            ));
        }
    }
    let mut changes = Vec::new();
    for mut rec in recs {
        let id = rec.id();
        let prev = rec.state_name();
        if prev != "stopped" {
            changes.push(change(&id, &prev, &prev));
            continue;
        }
        set_state(&mut rec, "pending");
        rec.instance.state_reason = None;
        rec.instance.state_transition_reason = Some(String::new());
        addresses::settle_public_ip(ctx.tx, &mut rec)?;
        save(ctx, &rec)?;
        let boot = images::boot_files(ctx, rec.instance.image_id.as_deref().unwrap_or_default());
        schedule_launch(ctx, &rec, boot)?;
        changes.push(change(&id, &prev, "pending"));
    }
    ctx.network_changed();
    Ok(StartInstancesResult {
        starting_instances: Some(changes),
    })
}

pub fn reboot_instances(ctx: &Ctx, input: RebootInstancesRequest) -> Result<(), ApiError> {
    let recs = load_all(ctx, &input.instance_ids)?;
    for r in &recs {
        if r.state_name() == "terminated" {
            return Err(ApiError::new(
                "IncorrectInstanceState",
                format!(
                    "The instance '{}' is not in a state from which it can be rebooted.",
                    r.id()
                ),
            ));
        }
    }
    for rec in recs {
        if rec.state_name() == "running" {
            let compute = ctx.api.compute.clone();
            let id = rec.id();
            ctx.after_commit(move || {
                compute.reboot(&id);
            });
        }
    }
    Ok(())
}

/// Restarts instances that were running when ec2d last stopped, as after a host reboot,
/// and cleans up anything a crash left on the host.
pub fn reconcile(api: &crate::api::Api) -> Result<usize, ApiError> {
    let mut started = 0;
    // Nothing runs yet, so everything an engine finds on the host is left over.
    api.compute.cleanup_orphans(&[]);
    let scopes: Vec<(String, String)> = api.store.scopes()?;
    for (account, region) in &scopes {
        let effects = std::cell::RefCell::new(Vec::new());
        api.store.transaction(account, region, |tx| {
            let ctx = Ctx::new(tx, api, &effects);
            for mut rec in tx.list::<InstanceRecord>(KIND)? {
                let id = rec.id();
                match rec.state_name().as_str() {
                    "pending" | "running" => {
                        set_state(&mut rec, "pending");
                        save(&ctx, &rec)?;
                        let boot = images::boot_files(
                            &ctx,
                            rec.instance.image_id.as_deref().unwrap_or_default(),
                        );
                        schedule_launch(&ctx, &rec, boot)?;
                        tracing::info!(instance = %id, "restarting");
                        started += 1;
                    }
                    "stopping" => {
                        set_state(&mut rec, "stopped");
                        save(&ctx, &rec)?;
                    }
                    "shutting-down" => {
                        let doomed = terminate_record(tx, &mut rec)?;
                        save(&ctx, &rec)?;
                        for v in doomed {
                            let _ = api.storage.delete_volume(&v);
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        })?;
        for e in effects.into_inner() {
            e();
        }
    }
    Ok(started)
}

const FILTERS: &[&str] = &[
    "architecture",
    "availability-zone",
    "block-device-mapping.device-name",
    "block-device-mapping.status",
    "block-device-mapping.volume-id",
    "client-token",
    "dns-name",
    "hypervisor",
    "iam-instance-profile.arn",
    "image-id",
    "instance-id",
    "instance-lifecycle",
    "instance-state-code",
    "instance-state-name",
    "instance-type",
    "instance.group-id",
    "instance.group-name",
    "ip-address",
    "key-name",
    "launch-index",
    "launch-time",
    "metadata-options.http-tokens",
    "metadata-options.http-endpoint",
    "monitoring-state",
    "network-interface.network-interface-id",
    "network-interface.mac-address",
    "network-interface.private-ip-address",
    "network-interface.subnet-id",
    "network-interface.vpc-id",
    "owner-id",
    "placement-group-name",
    "platform-details",
    "private-dns-name",
    "private-ip-address",
    "reservation-id",
    "root-device-name",
    "root-device-type",
    "subnet-id",
    "tenancy",
    "virtualization-type",
    "vpc-id",
];

fn instance_values(rec: &InstanceRecord, account: &str, f: &str) -> Vec<String> {
    let i = &rec.instance;
    let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
    let enis = i.network_interfaces.clone().unwrap_or_default();
    let eni = |g: fn(&InstanceNetworkInterface) -> Option<String>| {
        enis.iter().filter_map(g).collect::<Vec<_>>()
    };
    let bdm = i.block_device_mappings.clone().unwrap_or_default();
    match f {
        "architecture" => one(&i.architecture),
        "availability-zone" => i
            .placement
            .as_ref()
            .and_then(|p| p.availability_zone.clone())
            .into_iter()
            .collect(),
        "block-device-mapping.device-name" => {
            bdm.iter().filter_map(|m| m.device_name.clone()).collect()
        }
        "block-device-mapping.status" => bdm
            .iter()
            .filter_map(|m| m.ebs.as_ref()?.status.clone())
            .collect(),
        "block-device-mapping.volume-id" => bdm
            .iter()
            .filter_map(|m| m.ebs.as_ref()?.volume_id.clone())
            .collect(),
        "client-token" => one(&i.client_token),
        "dns-name" => one(&i.public_dns_name),
        "hypervisor" => one(&i.hypervisor),
        "iam-instance-profile.arn" => i
            .iam_instance_profile
            .as_ref()
            .and_then(|p| p.arn.clone())
            .into_iter()
            .collect(),
        "image-id" => one(&i.image_id),
        "instance-id" => one(&i.instance_id),
        "instance-lifecycle" => one(&i.instance_lifecycle),
        "instance-state-code" => i
            .state
            .as_ref()
            .and_then(|s| s.code)
            .map(|c| c.to_string())
            .into_iter()
            .collect(),
        "instance-state-name" => vec![rec.state_name()],
        "instance-type" => one(&i.instance_type),
        "instance.group-id" => i
            .security_groups
            .iter()
            .flatten()
            .filter_map(|g| g.group_id.clone())
            .collect(),
        "instance.group-name" => i
            .security_groups
            .iter()
            .flatten()
            .filter_map(|g| g.group_name.clone())
            .collect(),
        "ip-address" => one(&i.public_ip_address),
        "key-name" => one(&i.key_name),
        "launch-index" => i
            .ami_launch_index
            .map(|n| n.to_string())
            .into_iter()
            .collect(),
        "launch-time" => i.launch_time.map(|t| t.to_iso()).into_iter().collect(),
        "metadata-options.http-tokens" => i
            .metadata_options
            .as_ref()
            .and_then(|m| m.http_tokens.clone())
            .into_iter()
            .collect(),
        "metadata-options.http-endpoint" => i
            .metadata_options
            .as_ref()
            .and_then(|m| m.http_endpoint.clone())
            .into_iter()
            .collect(),
        "monitoring-state" => i
            .monitoring
            .as_ref()
            .and_then(|m| m.state.clone())
            .into_iter()
            .collect(),
        "network-interface.network-interface-id" => eni(|e| e.network_interface_id.clone()),
        "network-interface.mac-address" => eni(|e| e.mac_address.clone()),
        "network-interface.private-ip-address" => eni(|e| e.private_ip_address.clone()),
        "network-interface.subnet-id" => eni(|e| e.subnet_id.clone()),
        "network-interface.vpc-id" => eni(|e| e.vpc_id.clone()),
        "owner-id" => vec![account.to_string()],
        "placement-group-name" => i
            .placement
            .as_ref()
            .and_then(|p| p.group_name.clone())
            .into_iter()
            .collect(),
        "platform-details" => one(&i.platform_details),
        "private-dns-name" => one(&i.private_dns_name),
        "private-ip-address" => one(&i.private_ip_address),
        "reservation-id" => vec![rec.reservation_id.clone()],
        "root-device-name" => one(&i.root_device_name),
        "root-device-type" => one(&i.root_device_type),
        "subnet-id" => one(&i.subnet_id),
        "tenancy" => i
            .placement
            .as_ref()
            .and_then(|p| p.tenancy.clone())
            .into_iter()
            .collect(),
        "virtualization-type" => one(&i.virtualization_type),
        "vpc-id" => one(&i.vpc_id),
        _ => Vec::new(),
    }
}

pub fn describe_instances(
    ctx: &Ctx,
    input: DescribeInstancesRequest,
) -> Result<DescribeInstancesResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, FILTERS)?;
    ids_or_pages(&input.instance_ids, input.max_results, "instanceIds")?;
    let ids = input.instance_ids.unwrap_or_default();
    let recs = if ids.is_empty() {
        ctx.tx
            .list::<InstanceRecord>(KIND)?
            .into_iter()
            .filter(|r| !expired(r))
            .collect()
    } else {
        load_all(ctx, &ids)?
    };
    let mut selected = Vec::new();
    for rec in recs {
        let id = rec.id();
        let tags = ctx.tx.tags(&id)?;
        if matches(&filters, &tags, &|f: &str| {
            Some(instance_values(&rec, ctx.account(), f))
        }) {
            selected.push((rec, tags));
        }
    }
    let (page, next) = paginate(selected, input.max_results, input.next_token.as_deref())?;
    let mut reservations: Vec<Reservation> = Vec::new();
    for (rec, tags) in page {
        let mut inst = rec.instance.clone();
        inst.tags = (!tags.is_empty()).then_some(tags);
        match reservations
            .iter_mut()
            .find(|r| r.reservation_id.as_deref() == Some(rec.reservation_id.as_str()))
        {
            Some(r) => r.instances.get_or_insert_with(Vec::new).push(inst),
            None => reservations.push(Reservation {
                reservation_id: Some(rec.reservation_id.clone()),
                owner_id: Some(ctx.account().to_string()),
                groups: Some(Vec::new()),
                instances: Some(vec![inst]),
                requester_id: None,
            }),
        }
    }
    Ok(DescribeInstancesResult {
        reservations: Some(reservations),
        next_token: next,
    })
}

pub fn describe_instance_status(
    ctx: &Ctx,
    input: DescribeInstanceStatusRequest,
) -> Result<DescribeInstanceStatusResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(
        &filters,
        &[
            "availability-zone",
            "instance-state-code",
            "instance-state-name",
            "instance-status.status",
            "instance-status.reachability",
            "system-status.status",
            "system-status.reachability",
        ],
    )?;
    ids_or_pages(&input.instance_ids, input.max_results, "instanceIds")?;
    let ids = input.instance_ids.unwrap_or_default();
    let recs = if ids.is_empty() {
        ctx.tx
            .list::<InstanceRecord>(KIND)?
            .into_iter()
            .filter(|r| !expired(r))
            .collect()
    } else {
        load_all(ctx, &ids)?
    };
    let all = input.include_all_instances == Some(true);
    let mut out = Vec::new();
    for rec in recs {
        let name = rec.state_name();
        if !all && name != "running" {
            continue;
        }
        let id = rec.id();
        // The checks are the machine's own: running and alive passes both.
        let alive = name == "running" && ctx.api.compute.is_live(&id);
        let (status, detail) = match (name.as_str(), alive) {
            ("running", true) => ("ok", "passed"),
            ("running", false) => ("impaired", "failed"),
            ("pending", _) => ("initializing", "initializing"),
            _ => ("not-applicable", ""),
        };
        let summary = || InstanceStatusSummary {
            status: Some(status.into()),
            details: (!detail.is_empty()).then(|| {
                vec![InstanceStatusDetails {
                    name: Some("reachability".into()),
                    status: Some(detail.into()),
                    impaired_since: None,
                }]
            }),
        };
        let zone = rec
            .instance
            .placement
            .as_ref()
            .and_then(|p| p.availability_zone.clone());
        let values = |f: &str| {
            Some(match f {
                "availability-zone" => zone.iter().cloned().collect(),
                "instance-state-code" => rec
                    .instance
                    .state
                    .as_ref()
                    .and_then(|s| s.code)
                    .map(|c| c.to_string())
                    .into_iter()
                    .collect(),
                "instance-state-name" => vec![name.clone()],
                "instance-status.status" | "system-status.status" => vec![status.to_string()],
                "instance-status.reachability" | "system-status.reachability" => {
                    vec![detail.to_string()]
                }
                _ => Vec::new(),
            })
        };
        if !matches(&filters, &[], &values) {
            continue;
        }
        out.push(InstanceStatus {
            availability_zone: zone.clone(),
            availability_zone_id: rec
                .instance
                .placement
                .as_ref()
                .and_then(|p| p.availability_zone_id.clone()),
            events: Some(Vec::new()),
            instance_id: Some(id),
            instance_state: rec.instance.state.clone(),
            instance_status: Some(summary()),
            system_status: Some(summary()),
            ..Default::default()
        });
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeInstanceStatusResult {
        instance_statuses: Some(page),
        next_token: next,
    })
}

pub fn get_console_output(
    ctx: &Ctx,
    input: GetConsoleOutputRequest,
) -> Result<GetConsoleOutputResult, ApiError> {
    load(ctx, &input.instance_id)?;
    let console = ctx.api.compute.console(&input.instance_id);
    Ok(GetConsoleOutputResult {
        instance_id: Some(input.instance_id.clone()),
        timestamp: Some(Timestamp::now()),
        output: (!console.is_empty())
            .then(|| base64::engine::general_purpose::STANDARD.encode(console)),
    })
}

pub fn describe_instance_attribute(
    ctx: &Ctx,
    input: DescribeInstanceAttributeRequest,
) -> Result<InstanceAttribute, ApiError> {
    let rec = load(ctx, &input.instance_id)?;
    let i = &rec.instance;
    let value = |v: Option<String>| Some(AttributeValue { value: v });
    let flag = |b: bool| Some(AttributeBooleanValue { value: Some(b) });
    let mut out = InstanceAttribute {
        instance_id: Some(input.instance_id.clone()),
        ..Default::default()
    };
    match input.attribute.as_str() {
        "instanceType" => out.instance_type = value(i.instance_type.clone()),
        "kernel" => out.kernel_id = value(i.kernel_id.clone()),
        "ramdisk" => out.ramdisk_id = value(i.ramdisk_id.clone()),
        "userData" => out.user_data = value(rec.user_data.clone()),
        "disableApiTermination" => out.disable_api_termination = flag(rec.disable_api_termination),
        "disableApiStop" => out.disable_api_stop = flag(rec.disable_api_stop),
        "instanceInitiatedShutdownBehavior" => {
            out.instance_initiated_shutdown_behavior = value(Some(rec.shutdown_behavior.clone()))
        }
        "rootDeviceName" => out.root_device_name = value(i.root_device_name.clone()),
        "blockDeviceMapping" => out.block_device_mappings = i.block_device_mappings.clone(),
        "productCodes" => out.product_codes = Some(Vec::new()),
        "sourceDestCheck" => out.source_dest_check = flag(i.source_dest_check.unwrap_or(true)),
        "groupSet" => out.groups = i.security_groups.clone(),
        "ebsOptimized" => out.ebs_optimized = flag(i.ebs_optimized.unwrap_or(false)),
        "sriovNetSupport" => out.sriov_net_support = value(Some("simple".into())),
        "enaSupport" => out.ena_support = flag(i.ena_support.unwrap_or(true)),
        other => {
            return Err(ApiError::invalid_value(format!(
                "Value ({other}) for parameter attribute is invalid."
            )));
        }
    }
    Ok(out)
}

pub fn modify_instance_attribute(
    ctx: &Ctx,
    input: ModifyInstanceAttributeRequest,
) -> Result<(), ApiError> {
    let mut rec = load(ctx, &input.instance_id)?;
    let stopped = rec.state_name() == "stopped";
    let need_stopped = |what: &str| {
        if stopped {
            Ok(())
        } else {
            Err(ApiError::new(
                "IncorrectInstanceState",
                format!(
                    "The instance '{}' is not in the 'stopped' state; {what} can only be changed while it is stopped.",
                    input.instance_id
                ),
            ))
        }
    };
    let bool_of = |a: &AttributeBooleanValue| a.value.ok_or_else(|| ApiError::missing("Value"));
    let mut changed = false;
    if let Some(a) = &input.disable_api_termination {
        rec.disable_api_termination = bool_of(a)?;
        changed = true;
    }
    if let Some(a) = &input.disable_api_stop {
        rec.disable_api_stop = bool_of(a)?;
        changed = true;
    }
    if let Some(a) = &input.instance_initiated_shutdown_behavior {
        let v = a.value.clone().unwrap_or_default();
        if v != "stop" && v != "terminate" {
            return Err(ApiError::invalid_value(format!(
                "Value ({v}) for parameter instanceInitiatedShutdownBehavior is invalid."
            )));
        }
        rec.shutdown_behavior = v;
        changed = true;
    }
    if let Some(a) = &input.instance_type {
        need_stopped("the instance type")?;
        let t = a.value.clone().unwrap_or_default();
        if !crate::model::enums::InstanceType.contains(&t.as_str()) {
            return Err(ApiError::invalid_value(format!(
                "Invalid value '{t}' for InstanceType."
            )));
        }
        let (v, m) = catalog::find(&t)
            .map(|f| (f.default_vcpus, f.memory_mib))
            .unwrap_or((1, 1024));
        rec.vcpus = v;
        rec.memory_mib = m;
        rec.instance.instance_type = Some(t);
        changed = true;
    }
    if let Some(u) = &input.user_data {
        need_stopped("user data")?;
        rec.user_data = u
            .value
            .as_ref()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(&b.0));
        changed = true;
    }
    if let Some(a) = &input.source_dest_check {
        rec.instance.source_dest_check = Some(bool_of(a)?);
        changed = true;
    }
    if let Some(groups) = &input.groups {
        let vpc = rec.instance.vpc_id.clone().unwrap_or_default();
        let all: Vec<GroupRecord> = ctx.tx.list(security_groups::KIND)?;
        let mut ids = Vec::new();
        for g in groups {
            let found = all
                .iter()
                .find(|x| {
                    x.group.group_id.as_deref() == Some(g.as_str())
                        && x.group.vpc_id.as_deref() == Some(vpc.as_str())
                })
                .ok_or_else(|| {
                    ApiError::new(
                        "InvalidGroup.NotFound",
                        format!("The security group '{g}' does not exist in VPC '{vpc}'"),
                    )
                })?;
            ids.push(GroupIdentifier {
                group_id: found.group.group_id.clone(),
                group_name: found.group.group_name.clone(),
            });
        }
        rec.instance.security_groups = Some(ids.clone());
        ctx.network_changed();
        for eni in rec.instance.network_interfaces.iter_mut().flatten() {
            eni.groups = Some(ids.clone());
            if let Some(eid) = eni.network_interface_id.clone() {
                ctx.tx.update(ENI_KIND, &eid, eni)?;
            }
        }
        changed = true;
    }
    if input.ebs_optimized.is_some()
        || input.ena_support.is_some()
        || input.sriov_net_support.is_some()
    {
        changed = true;
    }
    if !changed {
        if let (Some(attr), Some(v)) = (&input.attribute, &input.value) {
            return Err(ApiError::invalid_value(format!(
                "Modifying {attr} to '{v}' with the Attribute/Value form is not supported; use the attribute's own parameter."
            )));
        }
        return Err(ApiError::missing("Attribute"));
    }
    save(ctx, &rec)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smbios_uuid_starts_with_ec2() {
        let u = smbios_uuid("i-0123456789abcdef0");
        assert!(u.starts_with("ec2"), "{u}");
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
    }

    #[test]
    fn picks_first_free_address() {
        let net: Ipv4Net = "10.0.1.0/24".parse().unwrap();
        let ip = pick_ip(net, &[], None).unwrap();
        assert_eq!(ip.to_string(), "10.0.1.4");
        let ip = pick_ip(net, &["10.0.1.4".parse().unwrap()], None).unwrap();
        assert_eq!(ip.to_string(), "10.0.1.5");
        assert!(pick_ip(net, &[], Some("10.0.1.255")).is_err());
        assert!(pick_ip(net, &["10.0.1.9".parse().unwrap()], Some("10.0.1.9")).is_err());
    }
}
