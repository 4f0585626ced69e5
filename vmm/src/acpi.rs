//! ACPI tables: RSDP, XSDT, FADT (hardware-reduced), DSDT and MADT.
//!
//! Stock distro kernels find virtio-mmio devices only through the DSDT
//! (`LNRO0005`) and bring up secondary CPUs only through the MADT.

use acpi_tables::Aml;
use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, MADT, ProcessorLocalApic,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use vm_memory::{Bytes, GuestAddress};

use crate::Error;
use crate::layout::*;
use crate::memory::GuestMem;

const OEM_ID: [u8; 6] = *b"EC2DVM";
const OEM_TABLE_ID: [u8; 8] = *b"EC2DVMM ";

/// A virtio-mmio window to describe in the DSDT.
#[derive(Clone, Copy, Debug)]
pub struct MmioDeviceInfo {
    pub base: u64,
    pub size: u64,
    pub gsi: u32,
}

/// S5 sleep type value, written with SLP_EN to the sleep control register.
pub const S5_SLEEP_TYPE: u8 = 5;
/// SLP_EN | SLP_TYP(S5) as Linux writes it in hardware-reduced mode.
pub const SLEEP_CONTROL_S5: u8 = (S5_SLEEP_TYPE << 2) | (1 << 5);
/// Value of the FADT reset register.
pub const RESET_VALUE: u8 = 1;

fn aml_bytes(a: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    a.to_aml_bytes(&mut v);
    v
}

pub fn dsdt_aml(devices: &[MmioDeviceInfo]) -> Vec<u8> {
    // AML objects borrow their children, so each device is built and
    // serialized within one statement.
    let mut body = Vec::new();

    body.extend(aml_bytes(&aml::Device::new(
        "COM1".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::IO::new(PORT_COM1, PORT_COM1, 1, 8),
                    &aml::Interrupt::new(true, true, false, false, IRQ_COM1),
                ]),
            ),
        ],
    )));

    // Described so that Linux's rtc_cmos binds through PNP, which also
    // routes IRQ 8 (without it, hardware-reduced ACPI leaves IRQ 8 unmapped
    // and the driver's probe fails).
    body.extend(aml_bytes(&aml::Device::new(
        "RTC_".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0B00")),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![
                    &aml::IO::new(PORT_CMOS_INDEX, PORT_CMOS_INDEX, 1, 2),
                    &aml::Interrupt::new(true, true, false, false, IRQ_RTC),
                ]),
            ),
        ],
    )));

    for (i, d) in devices.iter().enumerate() {
        let name = format!("V{i:03X}");
        let uid = i as u32;
        body.extend(aml_bytes(&aml::Device::new(
            name.as_str().into(),
            vec![
                &aml::Name::new("_HID".into(), &"LNRO0005"),
                &aml::Name::new("_UID".into(), &uid),
                &aml::Name::new("_CCA".into(), &aml::ONE),
                &aml::Name::new(
                    "_CRS".into(),
                    &aml::ResourceTemplate::new(vec![
                        &aml::Memory32Fixed::new(true, d.base as u32, d.size as u32),
                        &aml::Interrupt::new(true, true, false, false, d.gsi),
                    ]),
                ),
            ],
        )));
    }

    // Power button, raised through the generic event device so that a
    // graceful shutdown request reaches the guest's ACPI button driver.
    body.extend(aml_bytes(&aml::Device::new(
        "PWRB".into(),
        vec![
            &aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C0C")),
            &aml::Name::new("_UID".into(), &aml::ZERO),
        ],
    )));
    body.extend(aml_bytes(&aml::Device::new(
        "GED_".into(),
        vec![
            &aml::Name::new("_HID".into(), &"ACPI0013"),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new(
                "_CRS".into(),
                &aml::ResourceTemplate::new(vec![&aml::Interrupt::new(
                    true, true, false, false, IRQ_GED,
                )]),
            ),
            &aml::Method::new(
                "_EVT".into(),
                1,
                true,
                vec![&aml::Notify::new(&aml::Path::new("\\_SB_.PWRB"), &0x80u8)],
            ),
        ],
    )));

    let mut out = aml::Scope::raw("\\_SB_".into(), body);
    // \_S5 lets the kernel power off through the sleep control register.
    out.extend(aml_bytes(&aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLEEP_TYPE, &0u8, &0u8, &0u8]),
    )));
    out
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut b = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, 1)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    // IA-PC boot flags: VGA not present (bit 2), MSI not supported (bit 3).
    // The 8042 bit is left clear so that Linux skips its i8042 driver: the
    // controller is only there for `reboot=k`.
    b.iapc_boot_arch = ((1u16 << 2) | (1 << 3)).into();
    let pm = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(PORT_ACPI_PM),
    );
    b.reset_reg = pm;
    b.reset_value = RESET_VALUE;
    b.sleep_control_reg = pm;
    b.sleep_status_reg = pm;
    aml_bytes(&b.finalize())
}

fn madt(vcpus: u8) -> Vec<u8> {
    let mut m = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        1,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for id in 0..vcpus {
        m.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    m.add_structure(IoApic::new(0, IOAPIC_ADDR, 0));
    aml_bytes(&m)
}

/// Writes all tables into the legacy BIOS area; returns the RSDP address.
pub fn write_tables(mem: &GuestMem, vcpus: u8, devices: &[MmioDeviceInfo]) -> Result<u64, Error> {
    let mut cursor = ACPI_START + 0x40; // RSDP goes first, at ACPI_START
    let mut place = |bytes: &[u8]| -> Result<u64, Error> {
        let addr = cursor;
        let end = addr + bytes.len() as u64;
        if end > ACPI_END {
            return Err(Error::Layout("ACPI tables overflow their area"));
        }
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|_| Error::Layout("ACPI tables"))?;
        cursor = (end + 15) & !15;
        Ok(addr)
    };

    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, 1);
    dsdt.append_slice(&dsdt_aml(devices));
    let dsdt_addr = place(dsdt.as_slice())?;
    let fadt_addr = place(&fadt(dsdt_addr))?;
    let madt_addr = place(&madt(vcpus))?;
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, 1);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt_addr = place(&aml_bytes(&xsdt))?;
    let rsdp = aml_bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    mem.write_slice(&rsdp, GuestAddress(ACPI_START))
        .map_err(|_| Error::Layout("RSDP"))?;
    Ok(ACPI_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(b: &[u8]) -> bool {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x)) == 0
    }

    #[test]
    fn tables_are_consistent() {
        let mem = crate::memory::create(16 << 20).unwrap();
        let devs = [MmioDeviceInfo {
            base: VIRTIO_MMIO_BASE,
            size: 0x1000,
            gsi: 5,
        }];
        let rsdp_addr = write_tables(&mem, 2, &devs).unwrap();
        let mut rsdp = [0u8; 36];
        mem.read_slice(&mut rsdp, GuestAddress(rsdp_addr)).unwrap();
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(checksum_ok(&rsdp[..20]));
        assert!(checksum_ok(&rsdp));
        let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        let read_table = |addr: u64| {
            let mut hdr = [0u8; 8];
            mem.read_slice(&mut hdr, GuestAddress(addr)).unwrap();
            let len = u32::from_le_bytes(hdr[4..8].try_into().unwrap()) as usize;
            let mut t = vec![0u8; len];
            mem.read_slice(&mut t, GuestAddress(addr)).unwrap();
            assert!(checksum_ok(&t), "bad checksum for {:?}", &t[..4]);
            t
        };
        let xsdt = read_table(xsdt_addr);
        assert_eq!(&xsdt[..4], b"XSDT");
        let sigs: Vec<Vec<u8>> = xsdt[36..]
            .chunks(8)
            .map(|c| read_table(u64::from_le_bytes(c.try_into().unwrap()))[..4].to_vec())
            .collect();
        assert_eq!(sigs, vec![b"FACP".to_vec(), b"APIC".to_vec()]);
        let fadt = read_table(u64::from_le_bytes(xsdt[36..44].try_into().unwrap()));
        let dsdt_addr = u64::from_le_bytes(fadt[140..148].try_into().unwrap());
        let dsdt = read_table(dsdt_addr);
        let hay = String::from_utf8_lossy(&dsdt).into_owned();
        assert!(hay.contains("LNRO0005"));
        assert!(hay.contains("ACPI0013"));
        assert!(hay.contains("_S5_"));
        let madt = read_table(u64::from_le_bytes(xsdt[44..52].try_into().unwrap()));
        // header(44) + 2 local APICs (8 each) + IOAPIC (12)
        assert_eq!(madt.len(), 44 + 16 + 12);
    }
}
