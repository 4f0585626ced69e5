//! Helpers for tests and benchmarks: minimal guest images that need no
//! toolchain to build.

/// Wraps raw 64-bit machine code in a minimal ELF executable whose single
/// segment loads (and starts) at `load_addr`.
pub fn minimal_elf(code: &[u8], load_addr: u64) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let file_off = (EHDR + PHDR) as u64;
    let entry = load_addr + file_off;
    let mut e = Vec::with_capacity(EHDR + PHDR + code.len());
    e.extend_from_slice(b"\x7fELF");
    e.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, SysV
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&entry.to_le_bytes());
    e.extend_from_slice(&(EHDR as u64).to_le_bytes()); // phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // flags
    e.extend_from_slice(&(EHDR as u16).to_le_bytes());
    e.extend_from_slice(&(PHDR as u16).to_le_bytes());
    e.extend_from_slice(&1u16.to_le_bytes()); // phnum
    e.extend_from_slice(&64u16.to_le_bytes()); // shentsize
    e.extend_from_slice(&0u16.to_le_bytes()); // shnum
    e.extend_from_slice(&0u16.to_le_bytes()); // shstrndx
    // PT_LOAD covering the whole file, so the code sits at load_addr + 120.
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&7u32.to_le_bytes()); // RWX
    e.extend_from_slice(&0u64.to_le_bytes()); // offset
    e.extend_from_slice(&load_addr.to_le_bytes()); // vaddr
    e.extend_from_slice(&load_addr.to_le_bytes()); // paddr
    let size = file_off + code.len() as u64;
    e.extend_from_slice(&size.to_le_bytes());
    e.extend_from_slice(&size.to_le_bytes());
    e.extend_from_slice(&0x1000u64.to_le_bytes());
    e.extend_from_slice(code);
    e
}

/// `mov $0x440,%dx; mov $1,%al; out %al,(%dx); 1: hlt; jmp 1b` — writes the
/// boot-timer port as its first act, then idles without exits.
pub const IDLE_GUEST: &[u8] = &[0x66, 0xba, 0x40, 0x04, 0xb0, 0x01, 0xee, 0xf4, 0xeb, 0xfd];

/// Like IDLE_GUEST, but powers off (S5 via port 0x3c0) instead of idling.
pub const POWEROFF_GUEST: &[u8] = &[
    0x66, 0xba, 0x40, 0x04, 0xb0, 0x01, 0xee, // boot timer
    0x66, 0xba, 0xc0, 0x03, 0xb0, 0x34, 0xee, // S5
    0xf4, 0xeb, 0xfd,
];
