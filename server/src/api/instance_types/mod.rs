//! DescribeInstanceTypes and DescribeInstanceTypeOfferings over a static catalogue of real
//! EC2 facts.

pub mod catalog;

use crate::api::Ctx;
use crate::api::common::{bool_str, matches, paginate, validate_filters};
use crate::error::ApiError;
use crate::model::{
    DescribeInstanceTypeOfferingsRequest, DescribeInstanceTypeOfferingsResult,
    DescribeInstanceTypesRequest, DescribeInstanceTypesResult, EbsInfo, EbsOptimizedInfo,
    InstanceTypeInfo, InstanceTypeOffering, MemoryInfo, NetworkCardInfo, NetworkInfo,
    PlacementGroupInfo, ProcessorInfo, VCpuInfo,
};
use crate::regions;

use catalog::CATALOG;

fn strings(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

fn ints(v: &[u32]) -> Option<Vec<i32>> {
    (!v.is_empty()).then(|| v.iter().map(|n| *n as i32).collect())
}

/// The catalogue entry in the model's shape.
pub fn to_model(t: &catalog::InstanceTypeInfo) -> InstanceTypeInfo {
    InstanceTypeInfo {
        instance_type: Some(t.name.to_string()),
        current_generation: Some(t.current_generation),
        free_tier_eligible: Some(t.free_tier_eligible),
        supported_usage_classes: strings(t.supported_usage_classes),
        supported_root_device_types: strings(t.supported_root_device_types),
        supported_virtualization_types: strings(t.supported_virtualization_types),
        bare_metal: Some(t.bare_metal),
        hypervisor: t.hypervisor.map(str::to_string),
        processor_info: Some(ProcessorInfo {
            supported_architectures: strings(t.supported_architectures),
            sustained_clock_speed_in_ghz: Some(t.sustained_clock_speed_ghz),
            manufacturer: Some(t.manufacturer.to_string()),
            supported_features: None,
        }),
        v_cpu_info: Some(VCpuInfo {
            default_v_cpus: Some(t.default_vcpus as i32),
            default_cores: Some(t.default_cores as i32),
            default_threads_per_core: Some(t.default_threads_per_core as i32),
            valid_cores: ints(t.valid_cores),
            valid_threads_per_core: ints(t.valid_threads_per_core),
        }),
        memory_info: Some(MemoryInfo {
            size_in_mi_b: Some(t.memory_mib as i64),
        }),
        instance_storage_supported: Some(t.instance_storage_supported),
        ebs_info: Some(EbsInfo {
            ebs_optimized_support: Some(t.ebs_optimized_support.to_string()),
            encryption_support: Some(t.ebs_encryption_support.to_string()),
            ebs_optimized_info: t.ebs_optimized_info.as_ref().map(|e| EbsOptimizedInfo {
                baseline_bandwidth_in_mbps: Some(e.baseline_bandwidth_mbps as i32),
                baseline_throughput_in_m_bps: Some(e.baseline_throughput_mbps),
                baseline_iops: Some(e.baseline_iops as i32),
                maximum_bandwidth_in_mbps: Some(e.maximum_bandwidth_mbps as i32),
                maximum_throughput_in_m_bps: Some(e.maximum_throughput_mbps),
                maximum_iops: Some(e.maximum_iops as i32),
            }),
            nvme_support: Some(t.nvme_support.to_string()),
            maximum_ebs_attachments: Some(t.maximum_ebs_attachments as i32),
            ..Default::default()
        }),
        network_info: Some(NetworkInfo {
            network_performance: Some(t.network_performance.to_string()),
            maximum_network_interfaces: Some(t.maximum_network_interfaces as i32),
            maximum_network_cards: Some(t.maximum_network_cards as i32),
            default_network_card_index: Some(0),
            network_cards: Some(vec![NetworkCardInfo {
                network_card_index: Some(0),
                network_performance: Some(t.network_performance.to_string()),
                maximum_network_interfaces: Some(t.maximum_network_interfaces as i32),
                ..Default::default()
            }]),
            ipv4_addresses_per_interface: Some(t.ipv4_addresses_per_interface as i32),
            ipv6_addresses_per_interface: Some(t.ipv6_addresses_per_interface as i32),
            ipv6_supported: Some(t.ipv6_supported),
            ena_support: Some(t.ena_support.to_string()),
            efa_supported: Some(t.efa_supported),
            ..Default::default()
        }),
        placement_group_info: Some(PlacementGroupInfo {
            supported_strategies: strings(t.placement_group_strategies),
        }),
        hibernation_supported: Some(t.hibernation_supported),
        burstable_performance_supported: Some(t.burstable),
        dedicated_hosts_supported: Some(t.dedicated_hosts_supported),
        auto_recovery_supported: Some(t.auto_recovery_supported),
        supported_boot_modes: strings(t.supported_boot_modes),
        nitro_enclaves_support: Some(t.nitro_enclaves_support.to_string()),
        nitro_tpm_support: Some(t.nitro_tpm_support.to_string()),
        ..Default::default()
    }
}

const FILTERS: &[&str] = &[
    "auto-recovery-supported",
    "bare-metal",
    "burstable-performance-supported",
    "current-generation",
    "dedicated-hosts-supported",
    "ebs-info.ebs-optimized-info.baseline-bandwidth-in-mbps",
    "ebs-info.ebs-optimized-info.baseline-iops",
    "ebs-info.ebs-optimized-info.baseline-throughput-in-mbps",
    "ebs-info.ebs-optimized-info.maximum-bandwidth-in-mbps",
    "ebs-info.ebs-optimized-info.maximum-iops",
    "ebs-info.ebs-optimized-info.maximum-throughput-in-mbps",
    "ebs-info.ebs-optimized-support",
    "ebs-info.encryption-support",
    "ebs-info.nvme-support",
    "free-tier-eligible",
    "hibernation-supported",
    "hypervisor",
    "instance-storage-supported",
    "instance-type",
    "memory-info.size-in-mib",
    "network-info.efa-supported",
    "network-info.ena-support",
    "network-info.ipv4-addresses-per-interface",
    "network-info.ipv6-addresses-per-interface",
    "network-info.ipv6-supported",
    "network-info.maximum-network-cards",
    "network-info.maximum-network-interfaces",
    "network-info.network-performance",
    "nitro-enclaves-support",
    "nitro-tpm-support",
    "processor-info.manufacturer",
    "processor-info.supported-architecture",
    "processor-info.sustained-clock-speed-in-ghz",
    "supported-boot-mode",
    "supported-root-device-type",
    "supported-usage-class",
    "supported-virtualization-type",
    "vcpu-info.default-cores",
    "vcpu-info.default-threads-per-core",
    "vcpu-info.default-vcpus",
    "vcpu-info.valid-cores",
    "vcpu-info.valid-threads-per-core",
];

fn filter_values(t: &catalog::InstanceTypeInfo, f: &str) -> Vec<String> {
    let one = |s: &str| vec![s.to_string()];
    let b = |v: bool| vec![bool_str(Some(v))];
    let n = |v: u64| vec![v.to_string()];
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let ebs = t.ebs_optimized_info.as_ref();
    match f {
        "auto-recovery-supported" => b(t.auto_recovery_supported),
        "bare-metal" => b(t.bare_metal),
        "burstable-performance-supported" => b(t.burstable),
        "current-generation" => b(t.current_generation),
        "dedicated-hosts-supported" => b(t.dedicated_hosts_supported),
        "ebs-info.ebs-optimized-info.baseline-bandwidth-in-mbps" => ebs
            .map(|e| e.baseline_bandwidth_mbps.to_string())
            .into_iter()
            .collect(),
        "ebs-info.ebs-optimized-info.baseline-iops" => ebs
            .map(|e| e.baseline_iops.to_string())
            .into_iter()
            .collect(),
        "ebs-info.ebs-optimized-info.baseline-throughput-in-mbps" => ebs
            .map(|e| e.baseline_throughput_mbps.to_string())
            .into_iter()
            .collect(),
        "ebs-info.ebs-optimized-info.maximum-bandwidth-in-mbps" => ebs
            .map(|e| e.maximum_bandwidth_mbps.to_string())
            .into_iter()
            .collect(),
        "ebs-info.ebs-optimized-info.maximum-iops" => ebs
            .map(|e| e.maximum_iops.to_string())
            .into_iter()
            .collect(),
        "ebs-info.ebs-optimized-info.maximum-throughput-in-mbps" => ebs
            .map(|e| e.maximum_throughput_mbps.to_string())
            .into_iter()
            .collect(),
        "ebs-info.ebs-optimized-support" => one(t.ebs_optimized_support),
        "ebs-info.encryption-support" => one(t.ebs_encryption_support),
        "ebs-info.nvme-support" => one(t.nvme_support),
        "free-tier-eligible" => b(t.free_tier_eligible),
        "hibernation-supported" => b(t.hibernation_supported),
        "hypervisor" => t.hypervisor.map(str::to_string).into_iter().collect(),
        "instance-storage-supported" => b(t.instance_storage_supported),
        "instance-type" => one(t.name),
        "memory-info.size-in-mib" => n(t.memory_mib),
        "network-info.efa-supported" => b(t.efa_supported),
        "network-info.ena-support" => one(t.ena_support),
        "network-info.ipv4-addresses-per-interface" => n(t.ipv4_addresses_per_interface.into()),
        "network-info.ipv6-addresses-per-interface" => n(t.ipv6_addresses_per_interface.into()),
        "network-info.ipv6-supported" => b(t.ipv6_supported),
        "network-info.maximum-network-cards" => n(t.maximum_network_cards.into()),
        "network-info.maximum-network-interfaces" => n(t.maximum_network_interfaces.into()),
        "network-info.network-performance" => one(t.network_performance),
        "nitro-enclaves-support" => one(t.nitro_enclaves_support),
        "nitro-tpm-support" => one(t.nitro_tpm_support),
        "processor-info.manufacturer" => one(t.manufacturer),
        "processor-info.supported-architecture" => list(t.supported_architectures),
        "processor-info.sustained-clock-speed-in-ghz" => {
            vec![t.sustained_clock_speed_ghz.to_string()]
        }
        "supported-boot-mode" => list(t.supported_boot_modes),
        "supported-root-device-type" => list(t.supported_root_device_types),
        "supported-usage-class" => list(t.supported_usage_classes),
        "supported-virtualization-type" => list(t.supported_virtualization_types),
        "vcpu-info.default-cores" => n(t.default_cores.into()),
        "vcpu-info.default-threads-per-core" => n(t.default_threads_per_core.into()),
        "vcpu-info.default-vcpus" => n(t.default_vcpus.into()),
        "vcpu-info.valid-cores" => t.valid_cores.iter().map(u32::to_string).collect(),
        "vcpu-info.valid-threads-per-core" => t
            .valid_threads_per_core
            .iter()
            .map(u32::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

pub fn describe_instance_types(
    _ctx: &Ctx,
    input: DescribeInstanceTypesRequest,
) -> Result<DescribeInstanceTypesResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, FILTERS)?;
    let wanted = input.instance_types.unwrap_or_default();
    let unknown: Vec<&str> = wanted
        .iter()
        .filter(|w| catalog::find(w).is_none())
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::new(
            "InvalidInstanceType",
            format!(
                "The following supplied instance types do not exist: [{}]",
                unknown.join(", ")
            ),
        ));
    }
    let selected: Vec<InstanceTypeInfo> = CATALOG
        .iter()
        .filter(|t| wanted.is_empty() || wanted.iter().any(|w| w == t.name))
        .filter(|t| matches(&filters, &[], &|f: &str| Some(filter_values(t, f))))
        .map(to_model)
        .collect();
    let (page, next) = paginate(selected, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeInstanceTypesResult {
        instance_types: Some(page),
        next_token: next,
    })
}

pub fn describe_instance_type_offerings(
    ctx: &Ctx,
    input: DescribeInstanceTypeOfferingsRequest,
) -> Result<DescribeInstanceTypeOfferingsResult, ApiError> {
    let filters = input.filters.unwrap_or_default();
    validate_filters(&filters, &["instance-type", "location"])?;
    let region = regions::find(ctx.region()).ok_or_else(|| ApiError::internal("region"))?;
    let location_type = input.location_type.unwrap_or_else(|| "region".to_string());
    let locations: Vec<String> = match location_type.as_str() {
        "region" => vec![region.name.to_string()],
        "availability-zone" => region.zones().into_iter().map(|z| z.name).collect(),
        "availability-zone-id" => region.zones().into_iter().map(|z| z.id).collect(),
        other => {
            return Err(ApiError::invalid_value(format!(
                "Value ({other}) for parameter locationType is invalid."
            )));
        }
    };
    let mut out = Vec::new();
    for loc in &locations {
        for t in CATALOG {
            let values = |f: &str| {
                Some(match f {
                    "instance-type" => vec![t.name.to_string()],
                    "location" => vec![loc.clone()],
                    _ => Vec::new(),
                })
            };
            if matches(&filters, &[], &values) {
                out.push(InstanceTypeOffering {
                    instance_type: Some(t.name.to_string()),
                    location_type: Some(location_type.clone()),
                    location: Some(loc.clone()),
                });
            }
        }
    }
    let (page, next) = paginate(out, input.max_results, input.next_token.as_deref())?;
    Ok(DescribeInstanceTypeOfferingsResult {
        instance_type_offerings: Some(page),
        next_token: next,
    })
}
