//! Per-vCPU CPUID, starting from what KVM supports.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

/// Adjusts `cpuid` (KVM_GET_SUPPORTED_CPUID output) for vCPU `id` of `count`:
/// APIC IDs, a flat one-thread-per-core topology in one package, the
/// hypervisor bit, and no XSAVE-managed features without XSAVE.
pub fn adjust(cpuid: &mut CpuId, id: u8, count: u8) {
    let count = count.max(1);
    let vendor_amd = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0)
        .map(|e| e.ebx == u32::from_le_bytes(*b"Auth"))
        .unwrap_or(false);
    let xsave = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 1)
        .is_some_and(|e| e.ecx & LEAF1_ECX_XSAVE != 0);
    for e in cpuid.as_mut_slice().iter_mut() {
        adjust_entry(e, id, count, vendor_amd);
        if !xsave {
            drop_xsave_features(e);
        }
    }
}

const LEAF1_ECX_XSAVE: u32 = 1 << 26;

/// Clears the features whose register state only XSAVE manages (AVX and its
/// descendants, AVX-512, AMX), for a host without XSAVE.
///
/// Why: KVM passes a host's AVX bit through even when the host has no XSAVE (a
/// CPU model with XSAVE turned off, as under QEMU with `-xsave`). No real CPU
/// looks like that, and Linux, which only drops AVX when it clears XSAVE
/// itself, then runs AVX code (aesni_intel's self test) without being able to
/// enable YMM state and takes #UD.
fn drop_xsave_features(e: &mut kvm_cpuid_entry2) {
    match (e.function, e.index) {
        // OSXSAVE, AVX, FMA, F16C.
        (1, _) => e.ecx &= !((1 << 27) | (1 << 28) | (1 << 12) | (1 << 29)),
        (7, 0) => {
            // AVX2 and the AVX-512 family.
            e.ebx &= !((1 << 5)
                | (1 << 16)
                | (1 << 17)
                | (1 << 21)
                | (1 << 26)
                | (1 << 27)
                | (1 << 28)
                | (1 << 30)
                | (1 << 31));
            // AVX512_VBMI, VBMI2, VAES, VPCLMULQDQ, VNNI, BITALG, VPOPCNTDQ.
            e.ecx &=
                !((1 << 1) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 14));
            // AVX512_4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, AVX512_FP16, AMX-TILE, AMX-INT8.
            e.edx &=
                !((1 << 2) | (1 << 3) | (1 << 8) | (1 << 22) | (1 << 23) | (1 << 24) | (1 << 25));
        }
        // AVX_VNNI, AVX512_BF16.
        (7, 1) => e.eax &= !((1 << 4) | (1 << 5)),
        // The XSAVE state leaf describes nothing.
        (0xd, _) => (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0),
        // AMD XOP, FMA4.
        (0x8000_0001, _) => e.ecx &= !((1 << 11) | (1 << 16)),
        _ => {}
    }
}

fn adjust_entry(e: &mut kvm_cpuid_entry2, id: u8, count: u8, amd: bool) {
    let id32 = u32::from(id);
    let n = u32::from(count);
    match e.function {
        1 => {
            // EBX[31:24] initial APIC ID, [23:16] logical processors per package.
            e.ebx = (e.ebx & 0x0000_ffff) | (id32 << 24) | (n << 16);
            // HTT when the package has more than one logical processor.
            if count > 1 {
                e.edx |= 1 << 28;
            } else {
                e.edx &= !(1 << 28);
            }
            // Hypervisor present.
            e.ecx |= 1 << 31;
        }
        4 if !amd => {
            // EAX[31:26]: cores per package - 1. Leave the cache description.
            e.eax = (e.eax & 0x03ff_ffff) | ((n - 1) << 26);
            // EAX[25:14]: logical processors sharing this cache - 1; caches
            // above L2 are shared by the package, lower ones per core.
            let level = (e.eax >> 5) & 0x7;
            let sharing = if level >= 3 { n - 1 } else { 0 };
            e.eax = (e.eax & !(0xfff << 14)) | (sharing << 14);
        }
        0xb | 0x1f => {
            // Extended topology: level 0 SMT (1 thread), level 1 core (count).
            e.edx = id32;
            match e.index {
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = 1 << 8;
                }
                1 => {
                    e.eax = bits_for(n);
                    e.ebx = n;
                    e.ecx = (2 << 8) | 1;
                }
                i => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = i;
                }
            }
        }
        6 => {
            // No frequency/power-management hardware to drive.
            e.ecx &= !(1 << 3);
        }
        0x8000_0001 if amd && count > 1 => {
            // CmpLegacy: HTT means cores, not threads.
            e.ecx |= 1 << 1;
        }
        0x8000_0008 if amd => {
            // ECX[7:0] cores - 1, [15:12] APIC ID size.
            e.ecx = (e.ecx & !0xf0ff) | (n - 1) | (bits_for(n) << 12);
        }
        0x8000_001e if amd => {
            e.eax = id32;
            e.ebx = e.ebx & !0xff00 | (id32 & 0xff); // one thread per core
            e.ecx = 0;
        }
        _ => {}
    }
}

/// Bits needed to hold an ID below `n`.
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apic_ids_and_topology() {
        let mut c = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 0,
                ebx: u32::from_le_bytes(*b"Genu"),
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xffff_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
        ])
        .unwrap();
        adjust(&mut c, 3, 4);
        let s = c.as_slice();
        assert_eq!(s[1].ebx >> 24, 3);
        assert_eq!((s[1].ebx >> 16) & 0xff, 4);
        assert_eq!(s[1].ebx & 0xffff, 0x0800);
        assert_ne!(s[1].ecx & (1 << 31), 0);
        assert_eq!(s[2].edx, 3);
        assert_eq!(s[2].ebx, 4);
        assert_eq!(s[2].eax, 2);
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(5), 3);
    }

    fn avx_host(xsave: bool) -> CpuId {
        let leaf1_ecx = (1 << 28) | (1 << 12) | if xsave { LEAF1_ECX_XSAVE } else { 0 };
        CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ecx: leaf1_ecx,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                ebx: (1 << 5) | (1 << 3),
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xd,
                eax: 7,
                ..Default::default()
            },
        ])
        .unwrap()
    }

    #[test]
    fn avx_is_offered_only_with_xsave() {
        let mut c = avx_host(false);
        adjust(&mut c, 0, 1);
        let s = c.as_slice();
        assert_eq!(s[0].ecx & ((1 << 28) | (1 << 12)), 0, "AVX and FMA cleared");
        assert_eq!(s[1].ebx, 1 << 3, "AVX2 cleared, BMI1 kept");
        assert_eq!(s[2].eax, 0, "no XSAVE state components");

        let mut c = avx_host(true);
        adjust(&mut c, 0, 1);
        let s = c.as_slice();
        assert_ne!(s[0].ecx & (1 << 28), 0);
        assert_eq!(s[1].ebx, (1 << 5) | (1 << 3));
        assert_eq!(s[2].eax, 7);
    }
}
