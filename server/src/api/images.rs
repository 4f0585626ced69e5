//! AMIs: the built-in images (built from `fixtures/` recipes, public in every region) and
//! the ones accounts make with CreateImage or RegisterImage.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::common::{
    apply_tag_specs, bool_str, check_id, matches, new_id, paginate, validate_filters,
};
use crate::api::{Ctx, instances, volumes};
use crate::error::ApiError;
use crate::model::{
    AttributeValue, BlockDeviceMapping, CreateImageRequest, CreateImageResult,
    DeregisterImageRequest, DeregisterImageResult, DescribeImageAttributeRequest,
    DescribeImagesRequest, DescribeImagesResult, EbsBlockDevice, Image, ImageAttribute,
    LaunchPermission, ModifyImageAttributeRequest, RegisterImageRequest, RegisterImageResult,
};
use crate::protocol::types::Timestamp;

pub const KIND: &str = "image";
/// The owner EC2 shows for Amazon's own public images, so `--owners amazon` finds ours.
pub const BUILTIN_OWNER: &str = "137112412989";
const BUILTIN_CREATED: &str = "2026-11-01T00:00:00.000Z";

/// A built-in AMI, built by `fixtures/<recipe>/build`.
pub struct Builtin {
    pub recipe: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    /// Large images are built only when asked (`ec2d images <recipe>`), and appear in
    /// DescribeImages once built.
    pub on_demand: bool,
}

pub const BUILTINS: &[Builtin] = &[
    Builtin {
        recipe: "tiny",
        name: "ec2d-tiny-x86_64",
        description: "ec2d tiny: busybox with a small init; boots in well under a second",
        on_demand: false,
    },
    Builtin {
        recipe: "debian-12",
        name: "debian-12-amd64-ec2d",
        description: "Debian 12 (bookworm) with systemd, cloud-init and openssh-server",
        on_demand: true,
    },
];

const GIB: u64 = 1024 * 1024 * 1024;

/// An account's AMI as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub image: Image,
    /// Accounts allowed to launch it besides the owner.
    pub launch_accounts: Vec<String>,
    /// For direct kernel boot, inherited from the image it was made from.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
}

/// What a microVM boots directly; the sandbox ignores it.
#[derive(Debug, Clone, Default)]
pub struct BootFiles {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
}

/// What RunInstances needs of an image.
pub struct LaunchImage {
    pub image: Image,
    /// Kernel command line for direct boot, when the image names one.
    pub cmdline: Option<String>,
    pub root_source: PathBuf,
    pub root_device: String,
    pub root_size_gib: i32,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
}

fn digest_id(prefix: &str, seed: &str) -> String {
    let h = Sha256::digest(seed.as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{}", &hex[..17])
}

/// Built-in AMIs have the same id in a region for every account and every run.
pub fn builtin_id(recipe: &str, region: &str) -> String {
    digest_id("ami", &format!("ec2d-builtin:{recipe}:{region}"))
}

fn builtin_image(b: &Builtin, size_gib: i32, region: &str) -> Image {
    let (recipe, name, description) = (b.recipe, b.name, b.description);
    Image {
        image_id: Some(builtin_id(recipe, region)),
        image_location: Some(format!("amazon/{name}")),
        state: Some("available".into()),
        owner_id: Some(BUILTIN_OWNER.into()),
        image_owner_alias: Some("amazon".into()),
        creation_date: Some(BUILTIN_CREATED.into()),
        public: Some(true),
        architecture: Some("x86_64".into()),
        image_type: Some("machine".into()),
        name: Some(name.into()),
        description: Some(description.into()),
        root_device_name: Some("/dev/xvda".into()),
        root_device_type: Some("ebs".into()),
        virtualization_type: Some("hvm".into()),
        hypervisor: Some("xen".into()),
        ena_support: Some(true),
        sriov_net_support: Some("simple".into()),
        boot_mode: Some("uefi-preferred".into()),
        imds_support: Some("v2.0".into()),
        platform_details: Some("Linux/UNIX".into()),
        usage_operation: Some("RunInstances".into()),
        block_device_mappings: Some(vec![BlockDeviceMapping {
            device_name: Some("/dev/xvda".into()),
            ebs: Some(EbsBlockDevice {
                delete_on_termination: Some(true),
                snapshot_id: Some(digest_id(
                    "snap",
                    &format!("ec2d-builtin:{recipe}:{region}"),
                )),
                volume_size: Some(size_gib),
                volume_type: Some("gp3".into()),
                encrypted: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// The root volume size of a built-in AMI in GiB; on-demand ones exist only once built.
fn builtin_size(ctx: &Ctx, b: &Builtin) -> Option<i32> {
    if !b.on_demand {
        return Some(1);
    }
    let bytes = ctx.api.cached_builtin_size(b.recipe)?;
    i32::try_from(bytes.div_ceil(GIB)).ok()
}

fn builtins(ctx: &Ctx) -> Vec<Image> {
    BUILTINS
        .iter()
        .filter_map(|b| Some(builtin_image(b, builtin_size(ctx, b)?, ctx.region())))
        .collect()
}

fn own_images(ctx: &Ctx) -> Result<Vec<ImageRecord>, ApiError> {
    ctx.tx.list(KIND)
}

/// Every image the caller may see: built-ins, its own, and others' public or shared ones.
fn visible(ctx: &Ctx) -> Result<Vec<(Image, Vec<String>)>, ApiError> {
    let mut out: Vec<(Image, Vec<String>)> =
        builtins(ctx).into_iter().map(|i| (i, Vec::new())).collect();
    for (account, rec) in ctx.tx.list_region_wide::<ImageRecord>(KIND)? {
        let mine = account == ctx.account();
        let shared = rec.launch_accounts.iter().any(|a| a == ctx.account());
        if mine || shared || rec.image.public == Some(true) {
            out.push((rec.image, rec.launch_accounts));
        }
    }
    Ok(out)
}

fn image_not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidAMIID.NotFound",
        format!("The image id '[{id}]' does not exist"),
    )
}

fn check_ami_id(id: &str) -> Result<(), ApiError> {
    check_id("ami", "AMI", id)
}

/// Resolves an image for launching, building a built-in AMI on first use.
pub fn resolve_for_launch(ctx: &Ctx, image_id: &str) -> Result<LaunchImage, ApiError> {
    check_ami_id(image_id)?;
    for b in BUILTINS {
        if builtin_id(b.recipe, ctx.region()) == image_id {
            let size_gib = builtin_size(ctx, b).ok_or_else(|| image_not_found(image_id))?;
            let built = ctx.api.storage.ensure_builtin(b.recipe).map_err(|e| {
                ApiError::internal(format!(
                    "building the built-in AMI {} failed: {e}",
                    b.recipe
                ))
            })?;
            return Ok(LaunchImage {
                cmdline: built.manifest.kernel_cmdline.clone(),
                image: builtin_image(b, size_gib, ctx.region()),
                root_source: built.root_image,
                root_device: "/dev/xvda".into(),
                root_size_gib: size_gib,
                kernel: built.kernel,
                initrd: built.initrd,
            });
        }
    }
    let rec = ctx
        .tx
        .list_region_wide::<ImageRecord>(KIND)?
        .into_iter()
        .find(|(account, r)| {
            r.image.image_id.as_deref() == Some(image_id)
                && (account == ctx.account()
                    || r.image.public == Some(true)
                    || r.launch_accounts.iter().any(|a| a == ctx.account()))
        })
        .map(|(_, r)| r)
        .ok_or_else(|| image_not_found(image_id))?;
    let root_device = rec
        .image
        .root_device_name
        .clone()
        .unwrap_or_else(|| "/dev/xvda".into());
    let root = rec
        .image
        .block_device_mappings
        .iter()
        .flatten()
        .find(|m| m.device_name.as_deref() == Some(root_device.as_str()))
        .and_then(|m| m.ebs.clone())
        .ok_or_else(|| {
            ApiError::invalid_value(format!("The image {image_id} has no root volume"))
        })?;
    let snap = root.snapshot_id.clone().unwrap_or_default();
    Ok(LaunchImage {
        cmdline: None,
        image: rec.image.clone(),
        root_source: ctx
            .api
            .storage
            .snapshot_path(&snap)
            .map_err(|e| ApiError::internal(format!("snapshot {snap}: {e}")))?,
        root_device,
        root_size_gib: root.volume_size.unwrap_or(1),
        kernel: rec.kernel,
        initrd: rec.initrd,
    })
}

const FILTERS: &[&str] = &[
    "architecture",
    "block-device-mapping.delete-on-termination",
    "block-device-mapping.device-name",
    "block-device-mapping.snapshot-id",
    "block-device-mapping.volume-size",
    "block-device-mapping.volume-type",
    "creation-date",
    "description",
    "ena-support",
    "hypervisor",
    "image-id",
    "image-type",
    "is-public",
    "name",
    "owner-alias",
    "owner-id",
    "platform-details",
    "root-device-name",
    "root-device-type",
    "state",
    "usage-operation",
    "virtualization-type",
    "imds-support",
];

fn image_values(i: &Image, f: &str) -> Vec<String> {
    let one = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
    let bdm = i.block_device_mappings.clone().unwrap_or_default();
    let ebs = |g: fn(&EbsBlockDevice) -> Option<String>| {
        bdm.iter()
            .filter_map(|m| m.ebs.as_ref().and_then(g))
            .collect::<Vec<_>>()
    };
    match f {
        "architecture" => one(&i.architecture),
        "block-device-mapping.delete-on-termination" => {
            ebs(|e| Some(bool_str(e.delete_on_termination)))
        }
        "block-device-mapping.device-name" => {
            bdm.iter().filter_map(|m| m.device_name.clone()).collect()
        }
        "block-device-mapping.snapshot-id" => ebs(|e| e.snapshot_id.clone()),
        "block-device-mapping.volume-size" => ebs(|e| e.volume_size.map(|s| s.to_string())),
        "block-device-mapping.volume-type" => ebs(|e| e.volume_type.clone()),
        "creation-date" => one(&i.creation_date),
        "description" => one(&i.description),
        "ena-support" => vec![bool_str(i.ena_support)],
        "hypervisor" => one(&i.hypervisor),
        "image-id" => one(&i.image_id),
        "image-type" => one(&i.image_type),
        "is-public" => vec![bool_str(i.public)],
        "name" => one(&i.name),
        "owner-alias" => one(&i.image_owner_alias),
        "owner-id" => one(&i.owner_id),
        "platform-details" => one(&i.platform_details),
        "root-device-name" => one(&i.root_device_name),
        "root-device-type" => one(&i.root_device_type),
        "state" => one(&i.state),
        "usage-operation" => one(&i.usage_operation),
        "virtualization-type" => one(&i.virtualization_type),
        "imds-support" => one(&i.imds_support),
        _ => Vec::new(),
    }
}

pub fn describe_images(
    ctx: &Ctx,
    input: DescribeImagesRequest,
) -> Result<DescribeImagesResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, FILTERS)?;
    let ids = input.image_ids.unwrap_or_default();
    for id in &ids {
        check_ami_id(id)?;
    }
    let owners = input.owners.unwrap_or_default();
    let users = input.executable_users.unwrap_or_default();
    let all = visible(ctx)?;
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !all.iter().any(|(i, _)| i.image_id.as_ref() == Some(*id)))
        .collect();
    if let Some(id) = missing.first() {
        return Err(image_not_found(id));
    }
    let mut out = Vec::new();
    for (mut image, shared_with) in all {
        let id = image.image_id.clone().unwrap_or_default();
        if !ids.is_empty() && !ids.contains(&id) {
            continue;
        }
        let owner = image.owner_id.clone().unwrap_or_default();
        let alias = image.image_owner_alias.clone().unwrap_or_default();
        let owner_ok = owners.is_empty()
            || owners.iter().any(|o| match o.as_str() {
                "self" => owner == ctx.account(),
                "amazon" | "aws-marketplace" | "aws-backup-vault" => alias == *o,
                other => other == owner,
            });
        let user_ok = users.is_empty()
            || users.iter().any(|u| match u.as_str() {
                "self" => owner == ctx.account() || shared_with.iter().any(|a| a == ctx.account()),
                "all" => image.public == Some(true),
                other => other == owner || shared_with.iter().any(|a| a == other),
            });
        if !owner_ok || !user_ok {
            continue;
        }
        let tags = if owner == ctx.account() {
            ctx.tx.tags(&id)?
        } else {
            Vec::new()
        };
        if matches(&filters, &tags, &|f: &str| Some(image_values(&image, f))) {
            image.tags = (!tags.is_empty()).then_some(tags);
            out.push(image);
        }
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeImagesResult {
        images: Some(page),
        next_token: next,
    })
}

/// Loads one of the caller's own images (the only ones it may change).
fn own_image(ctx: &Ctx, id: &str) -> Result<ImageRecord, ApiError> {
    check_ami_id(id)?;
    if BUILTINS
        .iter()
        .any(|b| builtin_id(b.recipe, ctx.region()) == id)
    {
        return Err(ApiError::new(
            "AuthFailure",
            format!("Not authorized for image:{id}"),
        ));
    }
    ctx.tx.get(KIND, id)?.ok_or_else(|| image_not_found(id))
}

fn check_name(ctx: &Ctx, name: &str) -> Result<(), ApiError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c));
    if name.len() < 3 || name.len() > 128 || !ok_chars {
        return Err(ApiError::invalid_value(format!(
            "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, '(', ')', '.', '-', '/', '_', '[', ']', '@', ''' and spaces: {name}"
        )));
    }
    if own_images(ctx)?
        .iter()
        .any(|r| r.image.name.as_deref() == Some(name))
    {
        return Err(ApiError::new(
            "InvalidAMIName.Duplicate",
            format!("AMI name {name} is already in use by AMI"),
        ));
    }
    Ok(())
}

fn store_image(
    ctx: &Ctx,
    mut image: Image,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    tags: Option<&Vec<crate::model::TagSpecification>>,
) -> Result<String, ApiError> {
    let id = new_id("ami");
    image.image_id = Some(id.clone());
    image.owner_id = Some(ctx.account().to_string());
    image.state = Some("available".into());
    image.public = Some(false);
    image.creation_date = Some(Timestamp::now().to_iso());
    image.image_type = Some("machine".into());
    image.image_location = Some(format!(
        "{}/{}",
        ctx.account(),
        image.name.clone().unwrap_or_default()
    ));
    let rec = ImageRecord {
        image,
        launch_accounts: Vec::new(),
        kernel,
        initrd,
    };
    ctx.tx.insert(KIND, &id, &rec)?;
    apply_tag_specs(ctx.tx, &id, "image", tags)?;
    Ok(id)
}

pub fn create_image(ctx: &Ctx, input: CreateImageRequest) -> Result<CreateImageResult, ApiError> {
    let inst = instances::load(ctx, &input.instance_id)?;
    check_name(ctx, &input.name)?;
    let state = inst.state_name();
    if !matches!(state.as_str(), "running" | "stopped" | "stopping") {
        return Err(ApiError::new(
            "IncorrectInstanceState",
            format!(
                "The instance '{}' is not in a state from which it can be imaged.",
                input.instance_id
            ),
        ));
    }
    let source = inst.instance.image_id.clone().unwrap_or_default();
    let source_image = resolve_for_launch(ctx, &source).ok();
    let mut mappings = Vec::new();
    for m in inst.instance.block_device_mappings.iter().flatten() {
        let Some(vol_id) = m.ebs.as_ref().and_then(|e| e.volume_id.clone()) else {
            continue;
        };
        let snap = volumes::snapshot(
            ctx,
            &vol_id,
            Some(format!(
                "Created by CreateImage({}) for {}",
                input.instance_id, input.name
            )),
            None,
        )?;
        mappings.push(BlockDeviceMapping {
            device_name: m.device_name.clone(),
            ebs: Some(EbsBlockDevice {
                delete_on_termination: m.ebs.as_ref().and_then(|e| e.delete_on_termination),
                snapshot_id: snap.snapshot_id.clone(),
                volume_size: snap.volume_size,
                volume_type: Some("gp3".into()),
                encrypted: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let image = Image {
        name: Some(input.name.clone()),
        description: input.description.clone(),
        architecture: inst.instance.architecture.clone(),
        root_device_name: inst.instance.root_device_name.clone(),
        root_device_type: Some("ebs".into()),
        virtualization_type: Some("hvm".into()),
        hypervisor: Some("xen".into()),
        ena_support: Some(true),
        platform_details: Some("Linux/UNIX".into()),
        usage_operation: Some("RunInstances".into()),
        source_instance_id: Some(input.instance_id.clone()),
        block_device_mappings: Some(mappings),
        ..Default::default()
    };
    let (kernel, initrd) = source_image
        .map(|s| (s.kernel, s.initrd))
        .unwrap_or_default();
    let id = store_image(
        ctx,
        image,
        kernel,
        initrd,
        input.tag_specifications.as_ref(),
    )?;
    Ok(CreateImageResult { image_id: Some(id) })
}

pub fn register_image(
    ctx: &Ctx,
    input: RegisterImageRequest,
) -> Result<RegisterImageResult, ApiError> {
    check_name(ctx, &input.name)?;
    if input.image_location.is_some() {
        return Err(ApiError::invalid_value(
            "ec2d registers EBS-backed images only; give BlockDeviceMappings with a snapshot.",
        ));
    }
    let root = input
        .root_device_name
        .clone()
        .unwrap_or_else(|| "/dev/xvda".into());
    let mut mappings = input.block_device_mappings.clone().unwrap_or_default();
    let has_root = mappings.iter().any(|m| {
        m.device_name.as_deref() == Some(root.as_str())
            && m.ebs
                .as_ref()
                .and_then(|e| e.snapshot_id.as_ref())
                .is_some()
    });
    if !has_root {
        return Err(ApiError::new(
            "InvalidBlockDeviceMapping",
            format!("The root device {root} must be mapped to an EBS snapshot."),
        ));
    }
    for m in &mut mappings {
        if let Some(e) = m.ebs.as_mut()
            && let Some(snap_id) = e.snapshot_id.clone()
        {
            let snap = volumes::load_snapshot(ctx, &snap_id)?;
            let size = snap.volume_size.unwrap_or(1);
            let want = e.volume_size.unwrap_or(size);
            if want < size {
                return Err(ApiError::new(
                    "InvalidBlockDeviceMapping",
                    format!(
                        "Volume of size {want}GiB is smaller than snapshot '{snap_id}', expect size >= {size}GiB"
                    ),
                ));
            }
            e.volume_size = Some(want);
            e.delete_on_termination.get_or_insert(true);
            e.volume_type.get_or_insert_with(|| "gp3".into());
            e.encrypted.get_or_insert(false);
        }
    }
    let image = Image {
        name: Some(input.name.clone()),
        description: input.description.clone(),
        architecture: Some(
            input
                .architecture
                .clone()
                .unwrap_or_else(|| "x86_64".into()),
        ),
        root_device_name: Some(root),
        root_device_type: Some("ebs".into()),
        virtualization_type: Some(
            input
                .virtualization_type
                .clone()
                .unwrap_or_else(|| "hvm".into()),
        ),
        hypervisor: Some("xen".into()),
        ena_support: input.ena_support,
        boot_mode: input.boot_mode.clone(),
        imds_support: input.imds_support.clone(),
        platform_details: Some("Linux/UNIX".into()),
        usage_operation: Some("RunInstances".into()),
        block_device_mappings: Some(mappings),
        ..Default::default()
    };
    // Snapshots carry no kernel; images registered from them boot with the tiny AMI's.
    let kernel = ctx.api.storage.ensure_builtin("tiny").ok();
    let (k, i) = kernel.map(|b| (b.kernel, b.initrd)).unwrap_or_default();
    let id = store_image(ctx, image, k, i, input.tag_specifications.as_ref())?;
    Ok(RegisterImageResult { image_id: Some(id) })
}

pub fn deregister_image(
    ctx: &Ctx,
    input: DeregisterImageRequest,
) -> Result<DeregisterImageResult, ApiError> {
    let rec = own_image(ctx, &input.image_id)?;
    ctx.tx.delete(KIND, &input.image_id)?;
    if input.delete_associated_snapshots == Some(true) {
        for m in rec.image.block_device_mappings.iter().flatten() {
            if let Some(snap) = m.ebs.as_ref().and_then(|e| e.snapshot_id.as_deref()) {
                volumes::remove_snapshot(ctx, snap)?;
            }
        }
    }
    Ok(DeregisterImageResult {
        r#return: Some(true),
        delete_snapshot_results: None,
    })
}

/// True when an image of this account uses the snapshot.
pub fn snapshot_in_use(ctx: &Ctx, snap_id: &str) -> Result<Option<String>, ApiError> {
    Ok(own_images(ctx)?.into_iter().find_map(|r| {
        let uses = r
            .image
            .block_device_mappings
            .iter()
            .flatten()
            .any(|m| m.ebs.as_ref().and_then(|e| e.snapshot_id.as_deref()) == Some(snap_id));
        if uses { r.image.image_id } else { None }
    }))
}

pub fn describe_image_attribute(
    ctx: &Ctx,
    input: DescribeImageAttributeRequest,
) -> Result<ImageAttribute, ApiError> {
    check_ami_id(&input.image_id)?;
    let (image, shared) = visible(ctx)?
        .into_iter()
        .find(|(i, _)| i.image_id.as_deref() == Some(input.image_id.as_str()))
        .ok_or_else(|| image_not_found(&input.image_id))?;
    let value = |v: Option<String>| Some(AttributeValue { value: v });
    let mut out = ImageAttribute {
        image_id: Some(input.image_id.clone()),
        ..Default::default()
    };
    match input.attribute.as_str() {
        "description" => out.description = value(image.description),
        "kernel" => out.kernel_id = value(image.kernel_id),
        "ramdisk" => out.ramdisk_id = value(image.ramdisk_id),
        "launchPermission" => {
            let mut perms: Vec<LaunchPermission> = shared
                .into_iter()
                .map(|a| LaunchPermission {
                    user_id: Some(a),
                    ..Default::default()
                })
                .collect();
            if image.public == Some(true) && image.owner_id.as_deref() == Some(ctx.account()) {
                perms.push(LaunchPermission {
                    group: Some("all".into()),
                    ..Default::default()
                });
            }
            out.launch_permissions = Some(perms);
        }
        "productCodes" => out.product_codes = Some(Vec::new()),
        "blockDeviceMapping" => out.block_device_mappings = image.block_device_mappings,
        "sriovNetSupport" => out.sriov_net_support = value(image.sriov_net_support),
        "bootMode" => out.boot_mode = value(image.boot_mode),
        "imdsSupport" => out.imds_support = value(image.imds_support),
        "tpmSupport" => out.tpm_support = value(image.tpm_support),
        "lastLaunchedTime" => out.last_launched_time = value(image.last_launched_time),
        "deregistrationProtection" => {
            out.deregistration_protection = value(Some("disabled".into()))
        }
        other => {
            return Err(ApiError::invalid_value(format!(
                "Value ({other}) for parameter attribute is invalid."
            )));
        }
    }
    Ok(out)
}

pub fn modify_image_attribute(
    ctx: &Ctx,
    input: ModifyImageAttributeRequest,
) -> Result<(), ApiError> {
    let mut rec = own_image(ctx, &input.image_id)?;
    let mut changed = false;
    if let Some(d) = &input.description {
        rec.image.description = d.value.clone();
        changed = true;
    }
    let mut add: Vec<LaunchPermission> = Vec::new();
    let mut remove: Vec<LaunchPermission> = Vec::new();
    if let Some(lp) = &input.launch_permission {
        add.extend(lp.add.clone().unwrap_or_default());
        remove.extend(lp.remove.clone().unwrap_or_default());
    }
    // The older form: Attribute=launchPermission, OperationType, UserIds, UserGroups.
    if input.attribute.as_deref() == Some("launchPermission") || input.operation_type.is_some() {
        let perms: Vec<LaunchPermission> = input
            .user_ids
            .iter()
            .flatten()
            .map(|u| LaunchPermission {
                user_id: Some(u.clone()),
                ..Default::default()
            })
            .chain(
                input
                    .user_groups
                    .iter()
                    .flatten()
                    .map(|g| LaunchPermission {
                        group: Some(g.clone()),
                        ..Default::default()
                    }),
            )
            .collect();
        match input.operation_type.as_deref() {
            Some("add") => add.extend(perms),
            Some("remove") => remove.extend(perms),
            _ => return Err(ApiError::missing("OperationType")),
        }
    }
    for p in add {
        changed = true;
        match (&p.group, &p.user_id) {
            (Some(g), _) if g == "all" => rec.image.public = Some(true),
            (_, Some(u)) => {
                if u.len() != 12 || !u.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ApiError::new(
                        "InvalidAMIAttributeItemValue",
                        format!("Invalid attribute item value \"{u}\" for userId item type."),
                    ));
                }
                if !rec.launch_accounts.contains(u) {
                    rec.launch_accounts.push(u.clone());
                }
            }
            _ => {
                return Err(ApiError::invalid_value(
                    "A launch permission needs a Group or a UserId",
                ));
            }
        }
    }
    for p in remove {
        changed = true;
        match (&p.group, &p.user_id) {
            (Some(g), _) if g == "all" => rec.image.public = Some(false),
            (_, Some(u)) => rec.launch_accounts.retain(|a| a != u),
            _ => {
                return Err(ApiError::invalid_value(
                    "A launch permission needs a Group or a UserId",
                ));
            }
        }
    }
    if !changed {
        return Err(ApiError::missing("LaunchPermission"));
    }
    ctx.tx.update(KIND, &input.image_id, &rec)?;
    Ok(())
}

impl LaunchImage {
    pub fn boot(&self) -> BootFiles {
        BootFiles {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
        }
    }
}

/// The boot files of the image an instance was launched from (empty if it is gone).
pub fn boot_files(ctx: &Ctx, image_id: &str) -> BootFiles {
    resolve_for_launch(ctx, image_id)
        .map(|i| i.boot())
        .unwrap_or_default()
}
