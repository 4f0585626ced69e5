//! Direct Linux boot into 64-bit long mode: page tables, GDT, registers and
//! the zero page with its E820 map.

use kvm_bindings::{Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::Error;
use crate::layout::*;
use crate::memory::GuestMem;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// GDT entries: null, 64-bit code, data, TSS. Linux's boot protocol wants
/// __BOOT_CS = 0x10 and __BOOT_DS = 0x18, so index 2 and 3 hold code and data.
const GDT: [u64; 4] = [
    0,
    0,
    gdt_entry(0xa09b, 0, 0xfffff), // code: present, ring 0, exec/read, L=1
    gdt_entry(0xc093, 0, 0xfffff), // data: present, ring 0, read/write, 4K granular
];

const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn segment(index: u16, entry: u64) -> kvm_segment {
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: ((entry & 0xffff) | (((entry >> 48) & 0xf) << 16)) as u32,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: ((entry >> 55) & 1) as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Writes the GDT, the empty IDT and identity-mapping page tables for the
/// first 4 GiB.
pub fn write_boot_structures(mem: &GuestMem) -> Result<(), Error> {
    for (i, e) in GDT.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + i as u64 * 8))
            .map_err(|_| Error::Layout("GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(|_| Error::Layout("IDT"))?;
    mem.write_obj(PDPT_ADDR | 0x3, GuestAddress(PML4_ADDR))
        .map_err(|_| Error::Layout("PML4"))?;
    for pd in 0..4u64 {
        let pd_addr = PD_ADDR + pd * 0x1000;
        mem.write_obj(pd_addr | 0x3, GuestAddress(PDPT_ADDR + pd * 8))
            .map_err(|_| Error::Layout("PDPT"))?;
        for i in 0..512u64 {
            // 2 MiB pages: present, writable, PS.
            let phys = (pd << 30) | (i << 21);
            mem.write_obj(phys | 0x83, GuestAddress(pd_addr + i * 8))
                .map_err(|_| Error::Layout("PD"))?;
        }
    }
    Ok(())
}

pub fn setup_sregs(vcpu: &VcpuFd) -> Result<(), Error> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(Error::Kvm)?;
    let code = segment(2, GDT[2]);
    let data = segment(3, GDT[3]);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    // A busy 64-bit TSS descriptor is required by VMX entry checks even though
    // the guest never switches tasks through it.
    sregs.tr = kvm_segment {
        base: 0,
        limit: 0xffff,
        selector: 0,
        type_: 0xb,
        present: 1,
        s: 0,
        ..Default::default()
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG | X86_CR0_ET;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(Error::Kvm)
}

pub fn setup_regs(vcpu: &VcpuFd, entry: u64, boot_cpu: bool) -> Result<(), Error> {
    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_ADDR,
        rbp: BOOT_STACK_ADDR,
        // The 64-bit boot protocol passes the zero page in RSI.
        rsi: if boot_cpu { ZERO_PAGE_ADDR } else { 0 },
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(Error::Kvm)
}

pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), Error> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(Error::Kvm)
}

pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), Error> {
    const MSR_IA32_SYSENTER_CS: u32 = 0x174;
    const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
    const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
    const MSR_STAR: u32 = 0xc000_0081;
    const MSR_LSTAR: u32 = 0xc000_0082;
    const MSR_CSTAR: u32 = 0xc000_0083;
    const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
    const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
    const MSR_IA32_TSC: u32 = 0x10;
    const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
    let entries = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        // Fast strings; Linux expects firmware to have set it.
        (MSR_IA32_MISC_ENABLE, 1),
        // MTRRs enabled with write-back default: without firmware, the
        // default would be uncached.
        (MSR_MTRR_DEF_TYPE, (1 << 11) | 6),
    ];
    let list: Vec<kvm_msr_entry> = entries
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&list).map_err(|_| Error::Layout("MSR list"))?;
    // Hypervisors without some of these MSRs (PVM) accept a prefix; a short
    // count is not fatal for booting.
    let n = vcpu.set_msrs(&msrs).map_err(Error::Kvm)?;
    if n != list.len() {
        tracing::debug!(set = n, wanted = list.len(), "not all boot MSRs accepted");
    }
    Ok(())
}

/// LINT0 as ExtINT and LINT1 as NMI, as a PC's firmware leaves them.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), Error> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const APIC_MODE_NMI: u32 = 0x4;
    const APIC_MODE_EXTINT: u32 = 0x7;
    let mut lapic = vcpu.get_lapic().map_err(Error::Kvm)?;
    let get = |regs: &[std::os::raw::c_char], off: usize| -> u32 {
        let b: [u8; 4] = std::array::from_fn(|i| regs[off + i] as u8);
        u32::from_le_bytes(b)
    };
    let set = |regs: &mut [std::os::raw::c_char], off: usize, v: u32| {
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            regs[off + i] = *b as std::os::raw::c_char;
        }
    };
    let lvt0 = get(&lapic.regs, APIC_LVT0);
    set(
        &mut lapic.regs,
        APIC_LVT0,
        (lvt0 & !0x700) | (APIC_MODE_EXTINT << 8),
    );
    let lvt1 = get(&lapic.regs, APIC_LVT1);
    set(
        &mut lapic.regs,
        APIC_LVT1,
        (lvt1 & !0x700) | (APIC_MODE_NMI << 8),
    );
    vcpu.set_lapic(&lapic).map_err(Error::Kvm)
}

/// The E820 map for this memory layout.
pub fn e820_map(mem: &GuestMem) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for region in mem.iter() {
        let start = region.start_addr().raw_value();
        let end = start + region.len();
        let start = start.max(HIMEM_START);
        if end > start {
            map.push((start, end - start, E820_RAM));
        }
    }
    map
}

pub struct BootSetup {
    pub header: Option<setup_header>,
    pub cmdline_len: usize,
    pub initrd: Option<(u64, u64)>,
    pub rsdp_addr: u64,
}

pub fn write_zero_page(mem: &GuestMem, setup: &BootSetup) -> Result<(), Error> {
    let mut params = boot_params::default();
    if let Some(hdr) = setup.header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = 0xff;
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = 0x5372_6448; // "HdrS"
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = setup.cmdline_len as u32;
    params.hdr.kernel_alignment = 0x0100_0000;
    if let Some((addr, size)) = setup.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.acpi_rsdp_addr = setup.rsdp_addr;
    let map = e820_map(mem);
    if map.len() > params.e820_table.len() {
        return Err(Error::Layout("E820 table"));
    }
    for (i, (addr, size, type_)) in map.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *type_,
        };
    }
    params.e820_entries = map.len() as u8;
    LinuxBootConfigurator::write_bootparams::<GuestMem>(
        &BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE_ADDR)),
        mem,
    )
    .map_err(|e| Error::Boot(format!("writing boot params: {e}")))
}

/// Highest page-aligned address where `size` bytes of initrd fit, below both
/// the end of low RAM and the kernel's `initrd_addr_max`.
pub fn initrd_address(mem: &GuestMem, size: u64, header: Option<&setup_header>) -> Option<u64> {
    let low_end = mem
        .iter()
        .map(|r| r.start_addr().raw_value() + r.len())
        .filter(|&e| e <= MMIO_GAP_START)
        .max()?;
    let max = header
        .map(|h| u64::from(h.initrd_addr_max))
        .filter(|&m| m != 0)
        .unwrap_or(0x37ff_ffff);
    let top = low_end.min(max.saturating_add(1));
    let addr = top.checked_sub(size)? & !0xfff;
    (addr >= HIMEM_START).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_segments_decode() {
        let cs = segment(2, GDT[2]);
        assert_eq!(cs.selector, 0x10);
        assert_eq!(cs.l, 1);
        assert_eq!(cs.present, 1);
        assert_eq!(cs.type_, 0xb);
        let ds = segment(3, GDT[3]);
        assert_eq!(ds.db, 1);
        assert_eq!(ds.limit, 0xfffff);
    }

    #[test]
    fn e820_and_initrd() {
        let mem = crate::memory::create(64 << 20).unwrap();
        let map = e820_map(&mem);
        assert_eq!(
            map.last().unwrap(),
            &(HIMEM_START, (64 << 20) - HIMEM_START, E820_RAM)
        );
        let a = initrd_address(&mem, 0x1800, None).unwrap();
        assert_eq!(a, (64 << 20) - 0x2000);
    }
}
