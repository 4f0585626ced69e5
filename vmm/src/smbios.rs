//! SMBIOS 3.0 tables: BIOS (type 0), system (type 1) with the caller's UUID,
//! chassis (type 3), end (type 127).

use vm_memory::{Bytes, GuestAddress};

use crate::Error;
use crate::layout::SMBIOS_START;
use crate::memory::GuestMem;

/// Identity strings the guest sees in /sys/class/dmi/id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmbiosIdentity {
    /// System UUID, in canonical text form ("ec2xxxxx-xxxx-...").
    pub uuid: Option<String>,
    pub manufacturer: String,
    pub product: String,
    pub version: String,
    pub serial: String,
    /// Chassis asset tag (EC2 Nitro reports "Amazon EC2" here).
    pub asset_tag: String,
}

/// Parses "8-4-4-4-12" hex into the 16 bytes SMBIOS 2.6+ expects: the first
/// three fields little-endian, so that the guest prints the same string.
pub fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut raw = [0u8; 16];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    raw[0..4].reverse();
    raw[4..6].reverse();
    raw[6..8].reverse();
    Some(raw)
}

struct Table {
    bytes: Vec<u8>,
    strings: Vec<u8>,
    nstrings: u8,
}

impl Table {
    fn new(type_: u8, len: u8, handle: u16) -> Self {
        let mut bytes = vec![type_, len];
        bytes.extend_from_slice(&handle.to_le_bytes());
        Table {
            bytes,
            strings: Vec::new(),
            nstrings: 0,
        }
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A string field: its 1-based index, or 0 for "none".
    fn string(&mut self, s: &str) -> &mut Self {
        let s: String = s.chars().filter(|c| *c != '\0').collect();
        if s.is_empty() {
            return self.u8(0);
        }
        self.nstrings += 1;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        let n = self.nstrings;
        self.u8(n)
    }
    fn finish(mut self) -> Vec<u8> {
        debug_assert_eq!(self.bytes[1] as usize, self.bytes.len());
        if self.strings.is_empty() {
            self.strings.push(0);
        }
        self.strings.push(0);
        self.bytes.extend(self.strings);
        self.bytes
    }
}

pub fn build_structures(id: &SmbiosIdentity) -> Result<Vec<u8>, Error> {
    let uuid = match &id.uuid {
        Some(u) => uuid_bytes(u).ok_or_else(|| Error::Config(format!("bad SMBIOS UUID {u:?}")))?,
        None => [0; 16],
    };
    let mut out = Vec::new();

    let mut t0 = Table::new(0, 0x18, 0);
    t0.string("ec2d") // vendor
        .string("1.0") // BIOS version
        .u16(0xe800) // starting segment
        .string("01/01/2026") // release date
        .u8(0) // ROM size
        .u64(1 << 3) // characteristics: not supported
        .u16(0x0800) // ext: VM (byte 2 bit 4)
        .u8(0xff)
        .u8(0xff)
        .u8(0xff)
        .u8(0xff);
    // Characteristics extension byte 2 bit 4 marks a virtual machine.
    t0.bytes[0x13] = 1 << 4;
    out.extend(t0.finish());

    let mut t1 = Table::new(1, 0x1b, 1);
    t1.string(&id.manufacturer)
        .string(&id.product)
        .string(&id.version)
        .string(&id.serial);
    t1.bytes.extend_from_slice(&uuid);
    t1.u8(6) // wake-up: power switch
        .string("") // SKU
        .string(""); // family
    out.extend(t1.finish());

    let mut t3 = Table::new(3, 0x0d, 3);
    t3.string(&id.manufacturer)
        .u8(1) // type: other
        .string("") // version
        .string("") // serial
        .string(&id.asset_tag)
        .u8(3) // boot-up state: safe
        .u8(3)
        .u8(3)
        .u8(2); // security: unknown
    out.extend(t3.finish());

    let t127 = Table::new(127, 4, 0xfeff);
    out.extend(t127.finish());
    Ok(out)
}

/// Writes the SMBIOS 3.0 entry point and structures at SMBIOS_START.
pub fn write(mem: &GuestMem, id: &SmbiosIdentity) -> Result<(), Error> {
    let tables = build_structures(id)?;
    let table_addr = SMBIOS_START + 0x20;
    let mut ep = Vec::with_capacity(24);
    ep.extend_from_slice(b"_SM3_");
    ep.push(0); // checksum
    ep.push(0x18); // length
    ep.push(3); // major
    ep.push(0); // minor
    ep.push(0); // docrev
    ep.push(1); // entry point revision
    ep.push(0); // reserved
    ep.extend_from_slice(&(tables.len() as u32).to_le_bytes());
    ep.extend_from_slice(&table_addr.to_le_bytes());
    let sum = ep.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    ep[5] = 0u8.wrapping_sub(sum);
    mem.write_slice(&ep, GuestAddress(SMBIOS_START))
        .map_err(|_| Error::Layout("SMBIOS entry point"))?;
    mem.write_slice(&tables, GuestAddress(table_addr))
        .map_err(|_| Error::Layout("SMBIOS tables"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_encoding() {
        let b = uuid_bytes("ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8").unwrap();
        assert_eq!(&b[..4], &[0x2c, 0x1b, 0x2a, 0xec]);
        assert_eq!(&b[4..6], &[0x4e, 0x3d]);
        assert_eq!(&b[8..], &[0x71, 0x82, 0x93, 0xa4, 0xb5, 0xc6, 0xd7, 0xe8]);
        assert!(uuid_bytes("nope").is_none());
    }

    #[test]
    fn structures_parse() {
        let id = SmbiosIdentity {
            uuid: Some("ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8".into()),
            manufacturer: "Amazon EC2".into(),
            product: "t3.micro".into(),
            ..Default::default()
        };
        let t = build_structures(&id).unwrap();
        // Walk the structures the way a parser does.
        let mut off = 0;
        let mut types = Vec::new();
        while off < t.len() {
            types.push(t[off]);
            let len = t[off + 1] as usize;
            if t[off] == 1 {
                assert_eq!(t[off + 8], 0x2c);
            }
            let mut p = off + len;
            while !(t[p] == 0 && t[p + 1] == 0) {
                p += 1;
            }
            off = p + 2;
        }
        assert_eq!(types, vec![0, 1, 3, 127]);
        let s = String::from_utf8_lossy(&t);
        assert!(s.contains("Amazon EC2") && s.contains("t3.micro"));
        let mem = crate::memory::create(2 << 20).unwrap();
        write(&mem, &id).unwrap();
        let mut ep = [0u8; 24];
        mem.read_slice(&mut ep, GuestAddress(SMBIOS_START)).unwrap();
        assert_eq!(ep.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }
}
