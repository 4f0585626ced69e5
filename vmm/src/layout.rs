//! Guest physical address map. Everything the VMM places in guest memory or
//! traps as MMIO has its address here, so that the pieces cannot overlap.

/// Boot GDT; the kernel replaces it early, so it only has to be valid.
pub const GDT_ADDR: u64 = 0x500;
/// An empty IDT: the guest must not take exceptions before it installs its own.
pub const IDT_ADDR: u64 = 0x520;
/// Linux's "zero page" (struct boot_params).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer, below the page tables.
pub const BOOT_STACK_ADDR: u64 = 0x8ff0;
/// Identity-mapping page tables: PML4, PDPT and four PDs (4 GiB with 2 MiB pages,
/// so that MMIO below 4 GiB is reachable before the guest builds its own tables).
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 0x10000;
/// End of the low RAM the E820 map reports; the EBDA-sized hole above it is reserved.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables live in the legacy BIOS area, where OSes also scan for the RSDP.
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_END: u64 = 0xf0000;
/// SMBIOS entry point; Linux scans 0xF0000..0x100000 on 16-byte boundaries.
pub const SMBIOS_START: u64 = 0xf0000;
/// First byte of high memory; kernels load here or above.
pub const HIMEM_START: u64 = 0x10_0000;

/// The 32-bit hole for MMIO: RAM stops here and resumes at 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// virtio-mmio windows, one page each.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// KVM needs three pages for the TSS below 4 GiB outside guest RAM (Intel only).
pub const KVM_TSS_ADDR: usize = 0xfffb_d000;

/// Legacy GSIs taken by the platform devices.
pub const IRQ_I8042: u32 = 1;
pub const IRQ_COM1: u32 = 4;
pub const IRQ_RTC: u32 = 8;
/// GSIs handed out to virtio devices, in order. IRQ 8 is skipped: the kernel's
/// rtc_cmos driver claims it exclusively.
pub const DEVICE_IRQS: &[u32] = &[
    5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
];
/// GSI of the ACPI generic event device (power button).
pub const IRQ_GED: u32 = 23;

/// Ports of the platform devices.
pub const PORT_COM1: u16 = 0x3f8;
pub const PORT_I8042_DATA: u16 = 0x60;
pub const PORT_I8042_CMD: u16 = 0x64;
pub const PORT_CMOS_INDEX: u16 = 0x70;
pub const PORT_CMOS_DATA: u16 = 0x71;
/// ACPI sleep control / reset register (hardware-reduced ACPI, see FADT).
pub const PORT_ACPI_PM: u16 = 0x3c0;
/// Boot-timer port: any byte written here records the time since VM start.
pub const PORT_BOOT_TIMER: u16 = 0x440;
/// The same boot timer as an MMIO page, for guests whose kernel has no
/// /dev/port (Debian's cloud kernel): `busybox devmem 0xd0fff000 8 1`.
pub const BOOT_TIMER_MMIO: u64 = 0xd0ff_f000;
