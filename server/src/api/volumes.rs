//! EBS volumes and snapshots: records here, disk images in `storage`.

use std::path::Path;

use crate::api::common::{
    apply_tag_specs, bool_str, check_id, ids_or_pages, matches, new_id, paginate, tag_set,
    validate_filters,
};
use crate::api::{Ctx, images};
use crate::error::ApiError;
use crate::model::{
    CreateSnapshotRequest, DeleteSnapshotRequest, DescribeSnapshotsRequest,
    DescribeSnapshotsResult, DescribeVolumesRequest, DescribeVolumesResult, Snapshot,
    TagSpecification, Volume, VolumeAttachment,
};
use crate::protocol::types::Timestamp;

pub const KIND: &str = "volume";
pub const SNAPSHOT_KIND: &str = "snapshot";
const GIB: u64 = 1024 * 1024 * 1024;

fn storage_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("volume storage failed: {e}"))
}

pub fn load_volume(ctx: &Ctx, id: &str) -> Result<Volume, ApiError> {
    check_id("vol", "Volume", id)?;
    ctx.tx.get(KIND, id)?.ok_or_else(|| {
        ApiError::new(
            "InvalidVolume.NotFound",
            format!("The volume '{id}' does not exist."),
        )
    })
}

pub fn load_snapshot(ctx: &Ctx, id: &str) -> Result<Snapshot, ApiError> {
    check_id("snap", "Snapshot", id)?;
    ctx.tx.get(SNAPSHOT_KIND, id)?.ok_or_else(|| {
        ApiError::new(
            "InvalidSnapshot.NotFound",
            format!("The snapshot '{id}' does not exist."),
        )
    })
}

/// A new volume whose contents are a sparse copy of `source`, attached to an instance.
#[allow(clippy::too_many_arguments)]
pub fn create_attached(
    ctx: &Ctx,
    source: &Path,
    size_gib: i32,
    zone: &str,
    snapshot_id: Option<String>,
    instance_id: &str,
    device: &str,
    delete_on_termination: bool,
    tags: Option<&Vec<TagSpecification>>,
) -> Result<Volume, ApiError> {
    let id = new_id("vol");
    let size = u64::try_from(size_gib.max(1)).unwrap_or(1) * GIB;
    ctx.api
        .storage
        .create_volume_from(source, &id, size)
        .map_err(storage_err)?;
    let now = Timestamp::now();
    let vol = Volume {
        volume_id: Some(id.clone()),
        size: Some(size_gib.max(1)),
        snapshot_id: Some(snapshot_id.unwrap_or_default()),
        availability_zone: Some(zone.to_string()),
        state: Some("in-use".into()),
        create_time: Some(now),
        attachments: Some(vec![VolumeAttachment {
            delete_on_termination: Some(delete_on_termination),
            volume_id: Some(id.clone()),
            instance_id: Some(instance_id.to_string()),
            device: Some(device.to_string()),
            state: Some("attached".into()),
            attach_time: Some(now),
            ..Default::default()
        }]),
        encrypted: Some(false),
        volume_type: Some("gp3".into()),
        iops: Some(3000),
        throughput: Some(125),
        multi_attach_enabled: Some(false),
        ..Default::default()
    };
    ctx.tx.insert(KIND, &id, &vol)?;
    apply_tag_specs(ctx.tx, &id, "volume", tags)?;
    Ok(vol)
}

/// After termination: volumes marked DeleteOnTermination go, the rest become available.
pub fn release_for_instance(ctx: &Ctx, instance_id: &str) -> Result<(), ApiError> {
    for mut v in ctx.tx.list::<Volume>(KIND)? {
        let Some(att) = v
            .attachments
            .iter()
            .flatten()
            .find(|a| a.instance_id.as_deref() == Some(instance_id))
            .cloned()
        else {
            continue;
        };
        let id = v.volume_id.clone().unwrap_or_default();
        if att.delete_on_termination == Some(true) {
            ctx.tx.delete(KIND, &id)?;
            let storage = ctx.api.storage.clone();
            ctx.after_commit(move || {
                if let Err(e) = storage.delete_volume(&id) {
                    tracing::warn!(volume = %id, error = %e, "could not delete volume file");
                }
            });
        } else {
            v.attachments = Some(Vec::new());
            v.state = Some("available".into());
            ctx.tx.update(KIND, &id, &v)?;
        }
    }
    Ok(())
}

/// Snapshots a volume's disk now (crash-consistent if it is in use).
pub fn snapshot(
    ctx: &Ctx,
    volume_id: &str,
    description: Option<String>,
    tags: Option<&Vec<TagSpecification>>,
) -> Result<Snapshot, ApiError> {
    let vol = load_volume(ctx, volume_id)?;
    let id = new_id("snap");
    // The guest's writes may still sit in the host page cache of the loop device.
    let _ = std::process::Command::new("sync").status();
    ctx.api
        .storage
        .snapshot_volume(volume_id, &id)
        .map_err(storage_err)?;
    let now = Timestamp::now();
    let snap = Snapshot {
        snapshot_id: Some(id.clone()),
        volume_id: Some(volume_id.to_string()),
        state: Some("completed".into()),
        start_time: Some(now),
        completion_time: Some(now),
        progress: Some("100%".into()),
        owner_id: Some(ctx.account().to_string()),
        description: Some(description.unwrap_or_default()),
        volume_size: vol.size,
        encrypted: Some(false),
        storage_tier: Some("standard".into()),
        ..Default::default()
    };
    ctx.tx.insert(SNAPSHOT_KIND, &id, &snap)?;
    apply_tag_specs(ctx.tx, &id, "snapshot", tags)?;
    let mut out = snap;
    out.tags = tag_set(ctx.tx, &id)?;
    Ok(out)
}

pub fn remove_snapshot(ctx: &Ctx, id: &str) -> Result<(), ApiError> {
    ctx.tx.delete(SNAPSHOT_KIND, id)?;
    let storage = ctx.api.storage.clone();
    let id = id.to_string();
    ctx.after_commit(move || {
        if let Err(e) = storage.delete_snapshot(&id) {
            tracing::warn!(snapshot = %id, error = %e, "could not delete snapshot file");
        }
    });
    Ok(())
}

const VOLUME_FILTERS: &[&str] = &[
    "attachment.attach-time",
    "attachment.delete-on-termination",
    "attachment.device",
    "attachment.instance-id",
    "attachment.status",
    "availability-zone",
    "create-time",
    "encrypted",
    "multi-attach-enabled",
    "size",
    "snapshot-id",
    "status",
    "volume-id",
    "volume-type",
];

pub fn describe_volumes(
    ctx: &Ctx,
    input: DescribeVolumesRequest,
) -> Result<DescribeVolumesResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, VOLUME_FILTERS)?;
    ids_or_pages(&input.volume_ids, input.max_results, "volumeIds")?;
    let vols = match &input.volume_ids {
        Some(ids) if !ids.is_empty() => ids
            .iter()
            .map(|id| load_volume(ctx, id))
            .collect::<Result<Vec<_>, _>>()?,
        _ => ctx.tx.list::<Volume>(KIND)?,
    };
    let mut out = Vec::new();
    for mut v in vols {
        let id = v.volume_id.clone().unwrap_or_default();
        let tags = ctx.tx.tags(&id)?;
        let atts = v.attachments.clone().unwrap_or_default();
        let values = |f: &str| {
            let one = |x: &Option<String>| x.iter().cloned().collect::<Vec<_>>();
            let att = |g: fn(&VolumeAttachment) -> Option<String>| {
                atts.iter().filter_map(g).collect::<Vec<_>>()
            };
            Some(match f {
                "attachment.attach-time" => att(|a| a.attach_time.map(|t| t.to_iso())),
                "attachment.delete-on-termination" => {
                    att(|a| Some(bool_str(a.delete_on_termination)))
                }
                "attachment.device" => att(|a| a.device.clone()),
                "attachment.instance-id" => att(|a| a.instance_id.clone()),
                "attachment.status" => att(|a| a.state.clone()),
                "availability-zone" => one(&v.availability_zone),
                "create-time" => v.create_time.map(|t| t.to_iso()).into_iter().collect(),
                "encrypted" => vec![bool_str(v.encrypted)],
                "multi-attach-enabled" => vec![bool_str(v.multi_attach_enabled)],
                "size" => v.size.map(|s| s.to_string()).into_iter().collect(),
                "snapshot-id" => one(&v.snapshot_id),
                "status" => one(&v.state),
                "volume-id" => vec![id.clone()],
                "volume-type" => one(&v.volume_type),
                _ => Vec::new(),
            })
        };
        if matches(&filters, &tags, &values) {
            v.tags = (!tags.is_empty()).then_some(tags);
            out.push(v);
        }
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeVolumesResult {
        volumes: Some(page),
        next_token: next,
    })
}

pub fn create_snapshot(ctx: &Ctx, input: CreateSnapshotRequest) -> Result<Snapshot, ApiError> {
    let mut snap = snapshot(
        ctx,
        &input.volume_id,
        input.description.clone(),
        input.tag_specifications.as_ref(),
    )?;
    // EC2 answers while the snapshot is still being taken.
    snap.state = Some("pending".into());
    snap.progress = Some(String::new());
    snap.completion_time = None;
    Ok(snap)
}

const SNAPSHOT_FILTERS: &[&str] = &[
    "description",
    "encrypted",
    "owner-alias",
    "owner-id",
    "progress",
    "snapshot-id",
    "start-time",
    "status",
    "storage-tier",
    "volume-id",
    "volume-size",
];

pub fn describe_snapshots(
    ctx: &Ctx,
    input: DescribeSnapshotsRequest,
) -> Result<DescribeSnapshotsResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, SNAPSHOT_FILTERS)?;
    let ids = input.snapshot_ids.unwrap_or_default();
    let snaps = if ids.is_empty() {
        ctx.tx.list::<Snapshot>(SNAPSHOT_KIND)?
    } else {
        ids.iter()
            .map(|id| load_snapshot(ctx, id))
            .collect::<Result<Vec<_>, _>>()?
    };
    let owners = input.owner_ids.unwrap_or_default();
    let mut out = Vec::new();
    for mut s in snaps {
        let owner = s.owner_id.clone().unwrap_or_default();
        if !owners.is_empty() && !owners.iter().any(|o| o == "self" || *o == owner) {
            continue;
        }
        let id = s.snapshot_id.clone().unwrap_or_default();
        let tags = ctx.tx.tags(&id)?;
        let values = |f: &str| {
            let one = |x: &Option<String>| x.iter().cloned().collect::<Vec<_>>();
            Some(match f {
                "description" => one(&s.description),
                "encrypted" => vec![bool_str(s.encrypted)],
                "owner-alias" => one(&s.owner_alias),
                "owner-id" => vec![owner.clone()],
                "progress" => one(&s.progress),
                "snapshot-id" => vec![id.clone()],
                "start-time" => s.start_time.map(|t| t.to_iso()).into_iter().collect(),
                "status" => one(&s.state),
                "storage-tier" => one(&s.storage_tier),
                "volume-id" => one(&s.volume_id),
                "volume-size" => s.volume_size.map(|v| v.to_string()).into_iter().collect(),
                _ => Vec::new(),
            })
        };
        if matches(&filters, &tags, &values) {
            s.tags = (!tags.is_empty()).then_some(tags);
            out.push(s);
        }
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeSnapshotsResult {
        snapshots: Some(page),
        next_token: next,
    })
}

pub fn delete_snapshot(ctx: &Ctx, input: DeleteSnapshotRequest) -> Result<(), ApiError> {
    load_snapshot(ctx, &input.snapshot_id)?;
    if let Some(ami) = images::snapshot_in_use(ctx, &input.snapshot_id)? {
        return Err(ApiError::new(
            "InvalidSnapshot.InUse",
            format!(
                "The snapshot {} is currently in use by {ami}",
                input.snapshot_id
            ),
        ));
    }
    remove_snapshot(ctx, &input.snapshot_id)
}
