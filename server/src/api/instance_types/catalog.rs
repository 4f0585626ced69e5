//! Static catalogue of the EC2 instance types ec2d knows, for
//! DescribeInstanceTypes and for validating `InstanceType` parameters.
//!
//! The values are AWS's own, transcribed from a real 2025 DescribeInstanceTypes
//! response rather than from the marketing tables, so they carry the API's
//! quirks: bare metal sizes have no hypervisor, metal boots
//! legacy BIOS only, and t2.nano is on-demand only. All eight families are
//! reported as current generation, as AWS's instance-type documentation lists them.
//!
//! Each family has a base entry holding what all its sizes share; the sizes
//! then list what differs. None of these families has instance storage.

/// One instance type, shaped after the API's `InstanceTypeInfo`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceTypeInfo {
    pub name: &'static str,
    pub current_generation: bool,
    /// Classic free tier (t2.micro, t3.micro). AWS reports this per account:
    /// accounts opened after July 2025 see t3.micro/t3.small instead.
    pub free_tier_eligible: bool,
    /// `BurstablePerformanceSupported`: true for the T families.
    pub burstable: bool,
    pub bare_metal: bool,
    /// `xen` or `nitro`; `None` for bare metal, where AWS omits the field.
    pub hypervisor: Option<&'static str>,
    pub supported_usage_classes: &'static [&'static str],
    pub supported_root_device_types: &'static [&'static str],
    pub supported_virtualization_types: &'static [&'static str],
    pub supported_boot_modes: &'static [&'static str],

    // ProcessorInfo
    pub supported_architectures: &'static [&'static str],
    pub manufacturer: &'static str,
    pub sustained_clock_speed_ghz: f64,

    // VCpuInfo. The valid lists are empty where AWS leaves them out (t2,
    // which has no CPU options, and bare metal).
    pub default_vcpus: u32,
    pub default_cores: u32,
    pub default_threads_per_core: u32,
    pub valid_cores: &'static [u32],
    pub valid_threads_per_core: &'static [u32],

    pub memory_mib: u64,
    pub instance_storage_supported: bool,

    // EbsInfo
    /// `unsupported`, `supported` or `default`.
    pub ebs_optimized_support: &'static str,
    pub ebs_encryption_support: &'static str,
    /// `None` where EBS optimisation is unsupported (t2).
    pub ebs_optimized_info: Option<EbsOptimizedInfo>,
    /// `required` (Nitro) or `unsupported` (Xen).
    pub nvme_support: &'static str,
    pub maximum_ebs_attachments: u32,

    // NetworkInfo
    pub network_performance: &'static str,
    pub maximum_network_interfaces: u32,
    pub maximum_network_cards: u32,
    pub ipv4_addresses_per_interface: u32,
    pub ipv6_addresses_per_interface: u32,
    pub ipv6_supported: bool,
    /// `required`, `supported` or `unsupported`.
    pub ena_support: &'static str,
    pub efa_supported: bool,

    pub placement_group_strategies: &'static [&'static str],
    pub auto_recovery_supported: bool,
    pub hibernation_supported: bool,
    pub dedicated_hosts_supported: bool,
    /// `supported` or `unsupported`.
    pub nitro_enclaves_support: &'static str,
    /// `supported` (TPM 2.0) or `unsupported`.
    pub nitro_tpm_support: &'static str,
}

/// The API's `EbsOptimizedInfo`: dedicated EBS bandwidth for the type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EbsOptimizedInfo {
    pub baseline_bandwidth_mbps: u32,
    pub baseline_throughput_mbps: f64,
    pub baseline_iops: u32,
    pub maximum_bandwidth_mbps: u32,
    pub maximum_throughput_mbps: f64,
    pub maximum_iops: u32,
}

/// Looks an instance type up by its API name, e.g. `m5.large`.
pub fn find(name: &str) -> Option<&'static InstanceTypeInfo> {
    CATALOG.iter().find(|info| info.name == name)
}

/// Builds the EBS figures. AWS's MB/s throughput is always the Mbps
/// bandwidth divided by 8, so only bandwidth and IOPS are written out.
const fn ebs(
    baseline_mbps: u32,
    baseline_iops: u32,
    maximum_mbps: u32,
    maximum_iops: u32,
) -> Option<EbsOptimizedInfo> {
    Some(EbsOptimizedInfo {
        baseline_bandwidth_mbps: baseline_mbps,
        baseline_throughput_mbps: baseline_mbps as f64 / 8.0,
        baseline_iops,
        maximum_bandwidth_mbps: maximum_mbps,
        maximum_throughput_mbps: maximum_mbps as f64 / 8.0,
        maximum_iops,
    })
}

const ON_DEMAND_AND_SPOT: &[&str] = &["on-demand", "spot"];
const ON_DEMAND_ONLY: &[&str] = &["on-demand"];
const EBS_ROOT: &[&str] = &["ebs"];
const HVM: &[&str] = &["hvm"];
const LEGACY_BIOS: &[&str] = &["legacy-bios"];
const LEGACY_BIOS_AND_UEFI: &[&str] = &["legacy-bios", "uefi"];
const X86_64: &[&str] = &["x86_64"];
const I386_X86_64: &[&str] = &["i386", "x86_64"];
const ALL_PLACEMENT_STRATEGIES: &[&str] = &["cluster", "partition", "spread"];
// Burstable types cannot join cluster placement groups.
const NO_CLUSTER_PLACEMENT: &[&str] = &["partition", "spread"];
const ONE_OR_TWO_THREADS: &[u32] = &[1, 2];

// Valid core counts for the larger sizes: every even count up to the
// default, except where AWS starts the range at 4.
const EVEN_2_TO_8: &[u32] = &[2, 4, 6, 8];
const EVEN_2_TO_16: &[u32] = &[2, 4, 6, 8, 10, 12, 14, 16];
const EVEN_2_TO_18: &[u32] = &[2, 4, 6, 8, 10, 12, 14, 16, 18];
const EVEN_2_TO_24: &[u32] = &[2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24];
const EVEN_2_TO_32: &[u32] = &[2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32];
const EVEN_2_TO_48: &[u32] = &[
    2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42, 44, 46, 48,
];
const EVEN_2_TO_64: &[u32] = &[
    2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42, 44, 46, 48, 50,
    52, 54, 56, 58, 60, 62, 64,
];
const EVEN_4_TO_36: &[u32] = &[
    4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36,
];
const EVEN_4_TO_48: &[u32] = &[
    4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42, 44, 46, 48,
];

/// What every Nitro size of the m5/m6i/c5/c6i/r5 families shares; the
/// family bases below override the rest.
const NITRO: InstanceTypeInfo = InstanceTypeInfo {
    name: "",
    current_generation: true,
    free_tier_eligible: false,
    burstable: false,
    bare_metal: false,
    hypervisor: Some("nitro"),
    supported_usage_classes: ON_DEMAND_AND_SPOT,
    supported_root_device_types: EBS_ROOT,
    supported_virtualization_types: HVM,
    supported_boot_modes: LEGACY_BIOS_AND_UEFI,
    supported_architectures: X86_64,
    manufacturer: "Intel",
    sustained_clock_speed_ghz: 0.0,
    default_vcpus: 0,
    default_cores: 0,
    default_threads_per_core: 2,
    valid_cores: &[],
    valid_threads_per_core: ONE_OR_TWO_THREADS,
    memory_mib: 0,
    instance_storage_supported: false,
    ebs_optimized_support: "default",
    ebs_encryption_support: "supported",
    ebs_optimized_info: None,
    nvme_support: "required",
    maximum_ebs_attachments: 27,
    network_performance: "",
    maximum_network_interfaces: 0,
    maximum_network_cards: 1,
    ipv4_addresses_per_interface: 0,
    ipv6_addresses_per_interface: 0,
    ipv6_supported: true,
    ena_support: "required",
    efa_supported: false,
    placement_group_strategies: ALL_PLACEMENT_STRATEGIES,
    auto_recovery_supported: true,
    hibernation_supported: false,
    dedicated_hosts_supported: true,
    nitro_enclaves_support: "supported",
    nitro_tpm_support: "supported",
};

/// The T3 family, also the base for T3a.
const T3: InstanceTypeInfo = InstanceTypeInfo {
    burstable: true,
    sustained_clock_speed_ghz: 2.5,
    placement_group_strategies: NO_CLUSTER_PLACEMENT,
    // Enclaves need at least 4 vCPUs and are not offered on burstable types.
    nitro_enclaves_support: "unsupported",
    ..NITRO
};

const T3A: InstanceTypeInfo = InstanceTypeInfo {
    manufacturer: "AMD",
    sustained_clock_speed_ghz: 2.2,
    dedicated_hosts_supported: false,
    ..T3
};

/// T2 is the one Xen family here: no ENA, no NVMe, no EBS optimisation, no
/// CPU options and no UEFI.
const T2: InstanceTypeInfo = InstanceTypeInfo {
    hypervisor: Some("xen"),
    supported_boot_modes: LEGACY_BIOS,
    sustained_clock_speed_ghz: 2.3,
    default_threads_per_core: 1,
    valid_threads_per_core: &[],
    ebs_optimized_support: "unsupported",
    nvme_support: "unsupported",
    maximum_ebs_attachments: 40,
    ena_support: "unsupported",
    dedicated_hosts_supported: false,
    nitro_tpm_support: "unsupported",
    ..T3
};

const M5: InstanceTypeInfo = InstanceTypeInfo {
    sustained_clock_speed_ghz: 3.1,
    ..NITRO
};

const M6I: InstanceTypeInfo = InstanceTypeInfo {
    sustained_clock_speed_ghz: 3.5,
    ..NITRO
};

const C5: InstanceTypeInfo = InstanceTypeInfo {
    // The 12xlarge, 24xlarge and metal sizes run 3.6 GHz Cascade Lake parts.
    sustained_clock_speed_ghz: 3.4,
    ..NITRO
};

const C6I: InstanceTypeInfo = InstanceTypeInfo {
    sustained_clock_speed_ghz: 3.5,
    ..NITRO
};

const R5: InstanceTypeInfo = InstanceTypeInfo {
    sustained_clock_speed_ghz: 3.1,
    ..NITRO
};

/// Every instance type ec2d offers, family by family, smallest first.
pub static CATALOG: &[InstanceTypeInfo] = &[
    InstanceTypeInfo {
        name: "t2.nano",
        default_vcpus: 1,
        default_cores: 1,
        memory_mib: 512,
        network_performance: "Low to Moderate",
        maximum_network_interfaces: 2,
        ipv4_addresses_per_interface: 2,
        ipv6_addresses_per_interface: 2,
        hibernation_supported: true,
        sustained_clock_speed_ghz: 2.4,
        supported_architectures: I386_X86_64,
        supported_usage_classes: ON_DEMAND_ONLY,
        ..T2
    },
    InstanceTypeInfo {
        name: "t2.micro",
        default_vcpus: 1,
        default_cores: 1,
        memory_mib: 1024,
        network_performance: "Low to Moderate",
        maximum_network_interfaces: 2,
        ipv4_addresses_per_interface: 2,
        ipv6_addresses_per_interface: 2,
        hibernation_supported: true,
        sustained_clock_speed_ghz: 2.5,
        supported_architectures: I386_X86_64,
        free_tier_eligible: true,
        ..T2
    },
    InstanceTypeInfo {
        name: "t2.small",
        default_vcpus: 1,
        default_cores: 1,
        memory_mib: 2048,
        network_performance: "Low to Moderate",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 4,
        ipv6_addresses_per_interface: 4,
        hibernation_supported: true,
        sustained_clock_speed_ghz: 2.5,
        supported_architectures: I386_X86_64,
        ..T2
    },
    InstanceTypeInfo {
        name: "t2.medium",
        default_vcpus: 2,
        default_cores: 2,
        memory_mib: 4096,
        network_performance: "Low to Moderate",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 6,
        ipv6_addresses_per_interface: 6,
        hibernation_supported: true,
        supported_architectures: I386_X86_64,
        ..T2
    },
    InstanceTypeInfo {
        name: "t2.large",
        default_vcpus: 2,
        default_cores: 2,
        memory_mib: 8192,
        network_performance: "Low to Moderate",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 12,
        ipv6_addresses_per_interface: 12,
        hibernation_supported: true,
        ..T2
    },
    InstanceTypeInfo {
        name: "t2.xlarge",
        default_vcpus: 4,
        default_cores: 4,
        memory_mib: 16384,
        network_performance: "Moderate",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..T2
    },
    InstanceTypeInfo {
        name: "t2.2xlarge",
        default_vcpus: 8,
        default_cores: 8,
        memory_mib: 32768,
        network_performance: "Moderate",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..T2
    },
    InstanceTypeInfo {
        name: "t3.nano",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 512,
        ebs_optimized_info: ebs(43, 250, 2085, 11800),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 2,
        ipv4_addresses_per_interface: 2,
        ipv6_addresses_per_interface: 2,
        hibernation_supported: true,
        ..T3
    },
    InstanceTypeInfo {
        name: "t3.micro",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 1024,
        ebs_optimized_info: ebs(87, 500, 2085, 11800),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 2,
        ipv4_addresses_per_interface: 2,
        ipv6_addresses_per_interface: 2,
        hibernation_supported: true,
        free_tier_eligible: true,
        ..T3
    },
    InstanceTypeInfo {
        name: "t3.small",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 2048,
        ebs_optimized_info: ebs(174, 1000, 2085, 11800),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 4,
        ipv6_addresses_per_interface: 4,
        hibernation_supported: true,
        ..T3
    },
    InstanceTypeInfo {
        name: "t3.medium",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 4096,
        ebs_optimized_info: ebs(347, 2000, 2085, 11800),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 6,
        ipv6_addresses_per_interface: 6,
        hibernation_supported: true,
        ..T3
    },
    InstanceTypeInfo {
        name: "t3.large",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 8192,
        ebs_optimized_info: ebs(695, 4000, 2780, 15700),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 12,
        ipv6_addresses_per_interface: 12,
        hibernation_supported: true,
        ..T3
    },
    InstanceTypeInfo {
        name: "t3.xlarge",
        default_vcpus: 4,
        default_cores: 2,
        valid_cores: &[2],
        memory_mib: 16384,
        ebs_optimized_info: ebs(695, 4000, 2780, 15700),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..T3
    },
    InstanceTypeInfo {
        name: "t3.2xlarge",
        default_vcpus: 8,
        default_cores: 4,
        valid_cores: &[2, 4],
        memory_mib: 32768,
        ebs_optimized_info: ebs(695, 4000, 2780, 15700),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..T3
    },
    InstanceTypeInfo {
        name: "t3a.nano",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 512,
        ebs_optimized_info: ebs(45, 250, 2085, 11800),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 2,
        ipv4_addresses_per_interface: 2,
        ipv6_addresses_per_interface: 2,
        hibernation_supported: true,
        ..T3A
    },
    InstanceTypeInfo {
        name: "t3a.micro",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 1024,
        ebs_optimized_info: ebs(90, 500, 2085, 11800),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 2,
        ipv4_addresses_per_interface: 2,
        ipv6_addresses_per_interface: 2,
        hibernation_supported: true,
        ..T3A
    },
    InstanceTypeInfo {
        name: "t3a.small",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 2048,
        ebs_optimized_info: ebs(175, 1000, 2085, 11800),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 2,
        ipv4_addresses_per_interface: 4,
        ipv6_addresses_per_interface: 4,
        hibernation_supported: true,
        ..T3A
    },
    InstanceTypeInfo {
        name: "t3a.medium",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 4096,
        ebs_optimized_info: ebs(350, 2000, 2085, 11800),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 6,
        ipv6_addresses_per_interface: 6,
        hibernation_supported: true,
        ..T3A
    },
    InstanceTypeInfo {
        name: "t3a.large",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 8192,
        ebs_optimized_info: ebs(695, 4000, 2780, 15700),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 12,
        ipv6_addresses_per_interface: 12,
        hibernation_supported: true,
        ..T3A
    },
    InstanceTypeInfo {
        name: "t3a.xlarge",
        default_vcpus: 4,
        default_cores: 2,
        valid_cores: &[2],
        memory_mib: 16384,
        ebs_optimized_info: ebs(695, 4000, 2780, 15700),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..T3A
    },
    InstanceTypeInfo {
        name: "t3a.2xlarge",
        default_vcpus: 8,
        default_cores: 4,
        valid_cores: &[2, 4],
        memory_mib: 32768,
        ebs_optimized_info: ebs(695, 4000, 2780, 15700),
        network_performance: "Up to 5 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..T3A
    },
    InstanceTypeInfo {
        name: "m5.large",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 8192,
        ebs_optimized_info: ebs(650, 3600, 4750, 18750),
        network_performance: "Up to 10 Gigabit",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 10,
        ipv6_addresses_per_interface: 10,
        hibernation_supported: true,
        nitro_enclaves_support: "unsupported",
        ..M5
    },
    InstanceTypeInfo {
        name: "m5.xlarge",
        default_vcpus: 4,
        default_cores: 2,
        valid_cores: &[2],
        memory_mib: 16384,
        ebs_optimized_info: ebs(1150, 6000, 4750, 18750),
        network_performance: "Up to 10 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..M5
    },
    InstanceTypeInfo {
        name: "m5.2xlarge",
        default_vcpus: 8,
        default_cores: 4,
        valid_cores: &[2, 4],
        memory_mib: 32768,
        ebs_optimized_info: ebs(2300, 12000, 4750, 18750),
        network_performance: "Up to 10 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..M5
    },
    InstanceTypeInfo {
        name: "m5.4xlarge",
        default_vcpus: 16,
        default_cores: 8,
        valid_cores: EVEN_2_TO_8,
        memory_mib: 65536,
        ebs_optimized_info: ebs(4750, 18750, 4750, 18750),
        network_performance: "Up to 10 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: true,
        ..M5
    },
    InstanceTypeInfo {
        name: "m5.8xlarge",
        default_vcpus: 32,
        default_cores: 16,
        valid_cores: EVEN_2_TO_16,
        memory_mib: 131072,
        ebs_optimized_info: ebs(6800, 30000, 6800, 30000),
        network_performance: "10 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: true,
        ..M5
    },
    InstanceTypeInfo {
        name: "m5.12xlarge",
        default_vcpus: 48,
        default_cores: 24,
        valid_cores: EVEN_2_TO_24,
        memory_mib: 196608,
        ebs_optimized_info: ebs(9500, 40000, 9500, 40000),
        network_performance: "12 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: false,
        ..M5
    },
    InstanceTypeInfo {
        name: "m5.16xlarge",
        default_vcpus: 64,
        default_cores: 32,
        valid_cores: EVEN_2_TO_32,
        memory_mib: 262144,
        ebs_optimized_info: ebs(13600, 60000, 13600, 60000),
        network_performance: "20 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        ..M5
    },
    InstanceTypeInfo {
        name: "m5.24xlarge",
        default_vcpus: 96,
        default_cores: 48,
        valid_cores: EVEN_4_TO_48,
        memory_mib: 393216,
        ebs_optimized_info: ebs(19000, 80000, 19000, 80000),
        network_performance: "25 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        ..M5
    },
    InstanceTypeInfo {
        name: "m5.metal",
        bare_metal: true,
        hypervisor: None,
        valid_cores: &[],
        valid_threads_per_core: &[],
        supported_boot_modes: LEGACY_BIOS,
        maximum_ebs_attachments: 31,
        nitro_enclaves_support: "unsupported",
        nitro_tpm_support: "unsupported",
        default_vcpus: 96,
        default_cores: 48,
        memory_mib: 393216,
        ebs_optimized_info: ebs(19000, 80000, 19000, 80000),
        network_performance: "25 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        ..M5
    },
    InstanceTypeInfo {
        name: "m6i.large",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 8192,
        ebs_optimized_info: ebs(650, 3600, 10000, 40000),
        network_performance: "Up to 12.5 Gigabit",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 10,
        ipv6_addresses_per_interface: 10,
        hibernation_supported: true,
        nitro_enclaves_support: "unsupported",
        ..M6I
    },
    InstanceTypeInfo {
        name: "m6i.xlarge",
        default_vcpus: 4,
        default_cores: 2,
        valid_cores: &[1, 2],
        memory_mib: 16384,
        ebs_optimized_info: ebs(1250, 6000, 10000, 40000),
        network_performance: "Up to 12.5 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..M6I
    },
    InstanceTypeInfo {
        name: "m6i.2xlarge",
        default_vcpus: 8,
        default_cores: 4,
        valid_cores: &[2, 4],
        memory_mib: 32768,
        ebs_optimized_info: ebs(2500, 12000, 10000, 40000),
        network_performance: "Up to 12.5 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..M6I
    },
    InstanceTypeInfo {
        name: "m6i.4xlarge",
        default_vcpus: 16,
        default_cores: 8,
        valid_cores: EVEN_2_TO_8,
        memory_mib: 65536,
        ebs_optimized_info: ebs(5000, 20000, 10000, 40000),
        network_performance: "Up to 12.5 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: true,
        ..M6I
    },
    InstanceTypeInfo {
        name: "m6i.8xlarge",
        default_vcpus: 32,
        default_cores: 16,
        valid_cores: EVEN_2_TO_16,
        memory_mib: 131072,
        ebs_optimized_info: ebs(10000, 40000, 10000, 40000),
        network_performance: "12.5 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: true,
        ..M6I
    },
    InstanceTypeInfo {
        name: "m6i.12xlarge",
        default_vcpus: 48,
        default_cores: 24,
        valid_cores: EVEN_2_TO_24,
        memory_mib: 196608,
        ebs_optimized_info: ebs(15000, 60000, 15000, 60000),
        network_performance: "18.75 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: false,
        ..M6I
    },
    InstanceTypeInfo {
        name: "m6i.16xlarge",
        default_vcpus: 64,
        default_cores: 32,
        valid_cores: EVEN_2_TO_32,
        memory_mib: 262144,
        ebs_optimized_info: ebs(20000, 80000, 20000, 80000),
        network_performance: "25 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        ..M6I
    },
    InstanceTypeInfo {
        name: "m6i.24xlarge",
        default_vcpus: 96,
        default_cores: 48,
        valid_cores: EVEN_2_TO_48,
        memory_mib: 393216,
        ebs_optimized_info: ebs(30000, 120000, 30000, 120000),
        network_performance: "37.5 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        ..M6I
    },
    InstanceTypeInfo {
        name: "m6i.32xlarge",
        default_vcpus: 128,
        default_cores: 64,
        valid_cores: EVEN_2_TO_64,
        memory_mib: 524288,
        ebs_optimized_info: ebs(40000, 160000, 40000, 160000),
        network_performance: "50 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        efa_supported: true,
        ..M6I
    },
    InstanceTypeInfo {
        name: "m6i.metal",
        bare_metal: true,
        hypervisor: None,
        valid_cores: &[],
        valid_threads_per_core: &[],
        supported_boot_modes: LEGACY_BIOS,
        maximum_ebs_attachments: 31,
        nitro_enclaves_support: "unsupported",
        nitro_tpm_support: "unsupported",
        default_vcpus: 128,
        default_cores: 64,
        memory_mib: 524288,
        ebs_optimized_info: ebs(40000, 160000, 40000, 160000),
        network_performance: "50 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        efa_supported: true,
        ..M6I
    },
    InstanceTypeInfo {
        name: "c5.large",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 4096,
        ebs_optimized_info: ebs(650, 4000, 4750, 20000),
        network_performance: "Up to 10 Gigabit",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 10,
        ipv6_addresses_per_interface: 10,
        hibernation_supported: true,
        nitro_enclaves_support: "unsupported",
        ..C5
    },
    InstanceTypeInfo {
        name: "c5.xlarge",
        default_vcpus: 4,
        default_cores: 2,
        valid_cores: &[2],
        memory_mib: 8192,
        ebs_optimized_info: ebs(1150, 6000, 4750, 20000),
        network_performance: "Up to 10 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..C5
    },
    InstanceTypeInfo {
        name: "c5.2xlarge",
        default_vcpus: 8,
        default_cores: 4,
        valid_cores: &[2, 4],
        memory_mib: 16384,
        ebs_optimized_info: ebs(2300, 10000, 4750, 20000),
        network_performance: "Up to 10 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..C5
    },
    InstanceTypeInfo {
        name: "c5.4xlarge",
        default_vcpus: 16,
        default_cores: 8,
        valid_cores: EVEN_2_TO_8,
        memory_mib: 32768,
        ebs_optimized_info: ebs(4750, 20000, 4750, 20000),
        network_performance: "Up to 10 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: true,
        ..C5
    },
    InstanceTypeInfo {
        name: "c5.9xlarge",
        default_vcpus: 36,
        default_cores: 18,
        valid_cores: EVEN_2_TO_18,
        memory_mib: 73728,
        ebs_optimized_info: ebs(9500, 40000, 9500, 40000),
        network_performance: "12 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: true,
        ..C5
    },
    InstanceTypeInfo {
        name: "c5.12xlarge",
        default_vcpus: 48,
        default_cores: 24,
        valid_cores: EVEN_2_TO_24,
        memory_mib: 98304,
        ebs_optimized_info: ebs(9500, 40000, 9500, 40000),
        network_performance: "12 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: true,
        sustained_clock_speed_ghz: 3.6,
        ..C5
    },
    InstanceTypeInfo {
        name: "c5.18xlarge",
        default_vcpus: 72,
        default_cores: 36,
        valid_cores: EVEN_4_TO_36,
        memory_mib: 147456,
        ebs_optimized_info: ebs(19000, 80000, 19000, 80000),
        network_performance: "25 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: true,
        ..C5
    },
    InstanceTypeInfo {
        name: "c5.24xlarge",
        default_vcpus: 96,
        default_cores: 48,
        valid_cores: EVEN_2_TO_48,
        memory_mib: 196608,
        ebs_optimized_info: ebs(19000, 80000, 19000, 80000),
        network_performance: "25 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        sustained_clock_speed_ghz: 3.6,
        dedicated_hosts_supported: false,
        ..C5
    },
    InstanceTypeInfo {
        name: "c5.metal",
        bare_metal: true,
        hypervisor: None,
        valid_cores: &[],
        valid_threads_per_core: &[],
        supported_boot_modes: LEGACY_BIOS,
        maximum_ebs_attachments: 31,
        nitro_enclaves_support: "unsupported",
        nitro_tpm_support: "unsupported",
        default_vcpus: 96,
        default_cores: 48,
        memory_mib: 196608,
        ebs_optimized_info: ebs(19000, 80000, 19000, 80000),
        network_performance: "25 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        sustained_clock_speed_ghz: 3.6,
        dedicated_hosts_supported: false,
        ..C5
    },
    InstanceTypeInfo {
        name: "c6i.large",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 4096,
        ebs_optimized_info: ebs(650, 3600, 10000, 40000),
        network_performance: "Up to 12.5 Gigabit",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 10,
        ipv6_addresses_per_interface: 10,
        hibernation_supported: true,
        nitro_enclaves_support: "unsupported",
        ..C6I
    },
    InstanceTypeInfo {
        name: "c6i.xlarge",
        default_vcpus: 4,
        default_cores: 2,
        valid_cores: &[1, 2],
        memory_mib: 8192,
        ebs_optimized_info: ebs(1250, 6000, 10000, 40000),
        network_performance: "Up to 12.5 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..C6I
    },
    InstanceTypeInfo {
        name: "c6i.2xlarge",
        default_vcpus: 8,
        default_cores: 4,
        valid_cores: &[2, 4],
        memory_mib: 16384,
        ebs_optimized_info: ebs(2500, 12000, 10000, 40000),
        network_performance: "Up to 12.5 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..C6I
    },
    InstanceTypeInfo {
        name: "c6i.4xlarge",
        default_vcpus: 16,
        default_cores: 8,
        valid_cores: EVEN_2_TO_8,
        memory_mib: 32768,
        ebs_optimized_info: ebs(5000, 20000, 10000, 40000),
        network_performance: "Up to 12.5 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: true,
        ..C6I
    },
    InstanceTypeInfo {
        name: "c6i.8xlarge",
        default_vcpus: 32,
        default_cores: 16,
        valid_cores: EVEN_2_TO_16,
        memory_mib: 65536,
        ebs_optimized_info: ebs(10000, 40000, 10000, 40000),
        network_performance: "12.5 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: true,
        ..C6I
    },
    InstanceTypeInfo {
        name: "c6i.12xlarge",
        default_vcpus: 48,
        default_cores: 24,
        valid_cores: EVEN_2_TO_24,
        memory_mib: 98304,
        ebs_optimized_info: ebs(15000, 60000, 15000, 60000),
        network_performance: "18.75 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: true,
        ..C6I
    },
    InstanceTypeInfo {
        name: "c6i.16xlarge",
        default_vcpus: 64,
        default_cores: 32,
        valid_cores: EVEN_2_TO_32,
        memory_mib: 131072,
        ebs_optimized_info: ebs(20000, 80000, 20000, 80000),
        network_performance: "25 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: true,
        ..C6I
    },
    InstanceTypeInfo {
        name: "c6i.24xlarge",
        default_vcpus: 96,
        default_cores: 48,
        valid_cores: EVEN_2_TO_48,
        memory_mib: 196608,
        ebs_optimized_info: ebs(30000, 120000, 30000, 120000),
        network_performance: "37.5 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        ..C6I
    },
    InstanceTypeInfo {
        name: "c6i.32xlarge",
        default_vcpus: 128,
        default_cores: 64,
        valid_cores: EVEN_2_TO_64,
        memory_mib: 262144,
        ebs_optimized_info: ebs(40000, 160000, 40000, 160000),
        network_performance: "50 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        efa_supported: true,
        ..C6I
    },
    InstanceTypeInfo {
        name: "c6i.metal",
        bare_metal: true,
        hypervisor: None,
        valid_cores: &[],
        valid_threads_per_core: &[],
        supported_boot_modes: LEGACY_BIOS,
        maximum_ebs_attachments: 31,
        nitro_enclaves_support: "unsupported",
        nitro_tpm_support: "unsupported",
        default_vcpus: 128,
        default_cores: 64,
        memory_mib: 262144,
        ebs_optimized_info: ebs(40000, 160000, 40000, 160000),
        network_performance: "50 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        efa_supported: true,
        ..C6I
    },
    InstanceTypeInfo {
        name: "r5.large",
        default_vcpus: 2,
        default_cores: 1,
        valid_cores: &[1],
        memory_mib: 16384,
        ebs_optimized_info: ebs(650, 3600, 4750, 18750),
        network_performance: "Up to 10 Gigabit",
        maximum_network_interfaces: 3,
        ipv4_addresses_per_interface: 10,
        ipv6_addresses_per_interface: 10,
        hibernation_supported: true,
        nitro_enclaves_support: "unsupported",
        ..R5
    },
    InstanceTypeInfo {
        name: "r5.xlarge",
        default_vcpus: 4,
        default_cores: 2,
        valid_cores: &[2],
        memory_mib: 32768,
        ebs_optimized_info: ebs(1150, 6000, 4750, 18750),
        network_performance: "Up to 10 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..R5
    },
    InstanceTypeInfo {
        name: "r5.2xlarge",
        default_vcpus: 8,
        default_cores: 4,
        valid_cores: &[2, 4],
        memory_mib: 65536,
        ebs_optimized_info: ebs(2300, 12000, 4750, 18750),
        network_performance: "Up to 10 Gigabit",
        maximum_network_interfaces: 4,
        ipv4_addresses_per_interface: 15,
        ipv6_addresses_per_interface: 15,
        hibernation_supported: true,
        ..R5
    },
    InstanceTypeInfo {
        name: "r5.4xlarge",
        default_vcpus: 16,
        default_cores: 8,
        valid_cores: EVEN_2_TO_8,
        memory_mib: 131072,
        ebs_optimized_info: ebs(4750, 18750, 4750, 18750),
        network_performance: "Up to 10 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: true,
        ..R5
    },
    InstanceTypeInfo {
        name: "r5.8xlarge",
        default_vcpus: 32,
        default_cores: 16,
        valid_cores: EVEN_2_TO_16,
        memory_mib: 262144,
        ebs_optimized_info: ebs(6800, 30000, 6800, 30000),
        network_performance: "10 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: false,
        ..R5
    },
    InstanceTypeInfo {
        name: "r5.12xlarge",
        default_vcpus: 48,
        default_cores: 24,
        valid_cores: EVEN_2_TO_24,
        memory_mib: 393216,
        ebs_optimized_info: ebs(9500, 40000, 9500, 40000),
        network_performance: "12 Gigabit",
        maximum_network_interfaces: 8,
        ipv4_addresses_per_interface: 30,
        ipv6_addresses_per_interface: 30,
        hibernation_supported: false,
        ..R5
    },
    InstanceTypeInfo {
        name: "r5.16xlarge",
        default_vcpus: 64,
        default_cores: 32,
        valid_cores: EVEN_2_TO_32,
        memory_mib: 524288,
        ebs_optimized_info: ebs(13600, 60000, 13600, 60000),
        network_performance: "20 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        ..R5
    },
    InstanceTypeInfo {
        name: "r5.24xlarge",
        default_vcpus: 96,
        default_cores: 48,
        valid_cores: EVEN_4_TO_48,
        memory_mib: 786432,
        ebs_optimized_info: ebs(19000, 80000, 19000, 80000),
        network_performance: "25 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        ..R5
    },
    InstanceTypeInfo {
        name: "r5.metal",
        bare_metal: true,
        hypervisor: None,
        valid_cores: &[],
        valid_threads_per_core: &[],
        supported_boot_modes: LEGACY_BIOS,
        maximum_ebs_attachments: 31,
        nitro_enclaves_support: "unsupported",
        nitro_tpm_support: "unsupported",
        default_vcpus: 96,
        default_cores: 48,
        memory_mib: 786432,
        ebs_optimized_info: ebs(19000, 80000, 19000, 80000),
        network_performance: "25 Gigabit",
        maximum_network_interfaces: 15,
        ipv4_addresses_per_interface: 50,
        ipv6_addresses_per_interface: 50,
        hibernation_supported: false,
        ..R5
    },
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const FAMILIES: &[(&str, &[&str])] = &[
        (
            "t2",
            &[
                "nano", "micro", "small", "medium", "large", "xlarge", "2xlarge",
            ],
        ),
        (
            "t3",
            &[
                "nano", "micro", "small", "medium", "large", "xlarge", "2xlarge",
            ],
        ),
        (
            "t3a",
            &[
                "nano", "micro", "small", "medium", "large", "xlarge", "2xlarge",
            ],
        ),
        (
            "m5",
            &[
                "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge",
                "24xlarge", "metal",
            ],
        ),
        (
            "m6i",
            &[
                "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge",
                "24xlarge", "32xlarge", "metal",
            ],
        ),
        (
            "c5",
            &[
                "large", "xlarge", "2xlarge", "4xlarge", "9xlarge", "12xlarge", "18xlarge",
                "24xlarge", "metal",
            ],
        ),
        (
            "c6i",
            &[
                "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge",
                "24xlarge", "32xlarge", "metal",
            ],
        ),
        (
            "r5",
            &[
                "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge",
                "24xlarge", "metal",
            ],
        ),
    ];

    fn family(info: &InstanceTypeInfo) -> &'static str {
        info.name.split('.').next().unwrap_or_default()
    }

    #[test]
    fn every_family_has_exactly_its_sizes_in_order() {
        for (family_name, sizes) in FAMILIES {
            let listed: Vec<&str> = CATALOG
                .iter()
                .filter(|info| family(info) == *family_name)
                .map(|info| info.name)
                .collect();
            let expected: Vec<String> = sizes
                .iter()
                .map(|size| format!("{family_name}.{size}"))
                .collect();
            assert_eq!(listed, expected, "{family_name}");
        }
        let total: usize = FAMILIES.iter().map(|(_, sizes)| sizes.len()).sum();
        assert_eq!(
            CATALOG.len(),
            total,
            "catalogue has types outside the known families"
        );
    }

    #[test]
    fn names_are_unique_and_findable() {
        let mut seen = HashSet::new();
        for info in CATALOG {
            assert!(seen.insert(info.name), "duplicate {}", info.name);
            assert_eq!(find(info.name).map(|found| found.name), Some(info.name));
        }
        assert!(find("m5.huge").is_none());
    }

    #[test]
    fn cpu_topology_is_consistent() {
        for info in CATALOG {
            assert_eq!(
                info.default_vcpus,
                info.default_cores * info.default_threads_per_core,
                "{}",
                info.name
            );
            if !info.valid_cores.is_empty() {
                assert!(
                    info.valid_cores.contains(&info.default_cores),
                    "{}",
                    info.name
                );
                assert!(
                    info.valid_cores.windows(2).all(|w| w[0] < w[1]),
                    "{}",
                    info.name
                );
                assert!(
                    info.valid_threads_per_core
                        .contains(&info.default_threads_per_core),
                    "{}",
                    info.name
                );
            }
            // Only t2 (no CPU options) and bare metal leave the lists out.
            let lists_expected = !info.bare_metal && family(info) != "t2";
            assert_eq!(
                !info.valid_cores.is_empty(),
                lists_expected,
                "{}",
                info.name
            );
            assert_eq!(
                !info.valid_threads_per_core.is_empty(),
                lists_expected,
                "{}",
                info.name
            );
        }
    }

    #[test]
    fn hypervisor_and_platform_fields_agree() {
        for info in CATALOG {
            let xen = family(info) == "t2";
            match (info.bare_metal, xen) {
                (true, _) => assert_eq!(info.hypervisor, None, "{}", info.name),
                (false, true) => assert_eq!(info.hypervisor, Some("xen"), "{}", info.name),
                (false, false) => assert_eq!(info.hypervisor, Some("nitro"), "{}", info.name),
            }
            assert_eq!(
                info.name.ends_with(".metal"),
                info.bare_metal,
                "{}",
                info.name
            );
            assert_eq!(info.nvme_support == "required", !xen, "{}", info.name);
            assert_eq!(info.ena_support == "required", !xen, "{}", info.name);
            assert_eq!(info.ebs_optimized_info.is_none(), xen, "{}", info.name);
            assert_eq!(info.burstable, info.name.starts_with('t'), "{}", info.name);
            let uefi = info.supported_boot_modes.contains(&"uefi");
            assert_eq!(uefi, !xen && !info.bare_metal, "{}", info.name);
            assert!(!info.instance_storage_supported, "{}", info.name);
            assert_eq!(
                info.ipv4_addresses_per_interface,
                info.ipv6_addresses_per_interface
            );
        }
    }

    #[test]
    fn ebs_figures_are_sane() {
        for info in CATALOG {
            let Some(ebs) = info.ebs_optimized_info else {
                continue;
            };
            assert!(
                ebs.baseline_bandwidth_mbps <= ebs.maximum_bandwidth_mbps,
                "{}",
                info.name
            );
            assert!(ebs.baseline_iops <= ebs.maximum_iops, "{}", info.name);
            assert_eq!(
                ebs.baseline_throughput_mbps * 8.0,
                f64::from(ebs.baseline_bandwidth_mbps)
            );
        }
        // Spot checks against DescribeInstanceTypes output.
        let m5 = find("m5.large").and_then(|info| info.ebs_optimized_info);
        assert_eq!(m5, ebs(650, 3600, 4750, 18750));
        assert_eq!(m5.map(|e| e.maximum_throughput_mbps), Some(593.75));
        let t3 = find("t3.nano").and_then(|info| info.ebs_optimized_info);
        assert_eq!(t3.map(|e| e.baseline_throughput_mbps), Some(5.375));
    }

    #[test]
    fn hibernation_follows_the_aws_rules() {
        // AWS offers hibernation on these families up to 150 GiB of memory,
        // never on bare metal.
        for info in CATALOG {
            let expected = !info.bare_metal && info.memory_mib <= 150 * 1024;
            assert_eq!(info.hibernation_supported, expected, "{}", info.name);
        }
    }

    #[test]
    fn family_quirks_are_kept() {
        let free: Vec<&str> = CATALOG
            .iter()
            .filter(|i| i.free_tier_eligible)
            .map(|i| i.name)
            .collect();
        assert_eq!(free, ["t2.micro", "t3.micro"]);

        let nano = find("t2.nano");
        assert_eq!(
            nano.map(|i| i.supported_usage_classes),
            Some(ON_DEMAND_ONLY)
        );
        assert_eq!(
            find("t2.micro").map(|i| i.supported_architectures),
            Some(I386_X86_64)
        );
        assert_eq!(
            find("t2.large").map(|i| i.supported_architectures),
            Some(X86_64)
        );

        let metal = find("c6i.metal");
        assert_eq!(
            metal.map(|i| (i.default_vcpus, i.efa_supported)),
            Some((128, true))
        );
        assert_eq!(
            find("c5.24xlarge").map(|i| i.sustained_clock_speed_ghz),
            Some(3.6)
        );
        assert_eq!(find("r5.metal").map(|i| i.memory_mib), Some(786_432));
        assert_eq!(
            find("m6i.24xlarge").map(|i| i.network_performance),
            Some("37.5 Gigabit")
        );
        // Nitro Enclaves need 4 vCPUs and a hypervisor.
        for info in CATALOG {
            let enclaves = !info.burstable && !info.bare_metal && info.default_vcpus >= 4;
            assert_eq!(
                info.nitro_enclaves_support == "supported",
                enclaves,
                "{}",
                info.name
            );
        }
    }
}
