//! virtio-blk over a raw file. Flush is honoured with fdatasync, so a guest
//! fsync reaches the host disk.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::Path;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes};

use super::{DeviceError, Seg, TYPE_BLOCK, VirtioDevice, collect_chain, read_config_bytes};
use crate::memory::GuestMem;

const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_T_FLUSH: u32 = 4;
const VIRTIO_BLK_T_GET_ID: u32 = 8;

const VIRTIO_BLK_S_OK: u8 = 0;
const VIRTIO_BLK_S_IOERR: u8 = 1;
const VIRTIO_BLK_S_UNSUPP: u8 = 2;

const SECTOR_SIZE: u64 = 512;
const QUEUE_SIZE: u16 = 256;
const SEG_MAX: u32 = 128;

pub struct Block {
    file: File,
    read_only: bool,
    capacity_sectors: u64,
    serial: [u8; 20],
    config: Vec<u8>,
}

impl Block {
    pub fn open(path: &Path, read_only: bool, serial: &str) -> std::io::Result<Self> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        Self::from_file(file, read_only, serial)
    }

    pub fn from_file(mut file: File, read_only: bool, serial: &str) -> std::io::Result<Self> {
        let len = file.seek(SeekFrom::End(0))?;
        let capacity_sectors = len / SECTOR_SIZE;
        let mut s = [0u8; 20];
        for (d, b) in s.iter_mut().zip(serial.bytes()) {
            *d = b;
        }
        // Config space: capacity (le64), size_max (le32), seg_max (le32).
        let mut config = capacity_sectors.to_le_bytes().to_vec();
        config.extend_from_slice(&0u32.to_le_bytes());
        config.extend_from_slice(&SEG_MAX.to_le_bytes());
        Ok(Block {
            file,
            read_only,
            capacity_sectors,
            serial: s,
            config,
        })
    }

    /// Executes one request; returns (status, bytes written into guest memory).
    fn execute(&mut self, segs: &[Seg], mem: &GuestMem) -> Result<(u8, u32), DeviceError> {
        let (hdr, rest) = segs
            .split_first()
            .ok_or(DeviceError::BadChain("empty chain"))?;
        let (status, data) = rest
            .split_last()
            .ok_or(DeviceError::BadChain("no status descriptor"))?;
        if hdr.write || hdr.len < 16 {
            return Err(DeviceError::BadChain("bad request header"));
        }
        if !status.write || status.len < 1 {
            return Err(DeviceError::BadChain("bad status descriptor"));
        }
        let req_type: u32 = mem
            .read_obj(hdr.addr)
            .map_err(|_| DeviceError::GuestMemory)?;
        let sector: u64 = mem
            .read_obj(hdr.addr.unchecked_add(8))
            .map_err(|_| DeviceError::GuestMemory)?;
        let total: u64 = data.iter().map(|s| u64::from(s.len)).sum();

        let in_range = sector
            .checked_mul(SECTOR_SIZE)
            .and_then(|off| off.checked_add(total))
            .is_some_and(|end| end <= self.capacity_sectors * SECTOR_SIZE);

        let result = match req_type {
            VIRTIO_BLK_T_IN => {
                if data.iter().any(|s| !s.write) {
                    return Err(DeviceError::BadChain("read into read-only buffer"));
                }
                if !in_range {
                    (VIRTIO_BLK_S_IOERR, 0)
                } else {
                    match self.transfer(sector, data, mem, true) {
                        Ok(()) => (VIRTIO_BLK_S_OK, total as u32),
                        Err(e) => {
                            tracing::warn!("virtio-blk read: {e}");
                            (VIRTIO_BLK_S_IOERR, 0)
                        }
                    }
                }
            }
            VIRTIO_BLK_T_OUT => {
                if data.iter().any(|s| s.write) {
                    return Err(DeviceError::BadChain("write from write-only buffer"));
                }
                if self.read_only || !in_range {
                    (VIRTIO_BLK_S_IOERR, 0)
                } else {
                    match self.transfer(sector, data, mem, false) {
                        Ok(()) => (VIRTIO_BLK_S_OK, 0),
                        Err(e) => {
                            tracing::warn!("virtio-blk write: {e}");
                            (VIRTIO_BLK_S_IOERR, 0)
                        }
                    }
                }
            }
            VIRTIO_BLK_T_FLUSH => {
                if self.read_only {
                    (VIRTIO_BLK_S_OK, 0)
                } else {
                    match self.file.sync_data() {
                        Ok(()) => (VIRTIO_BLK_S_OK, 0),
                        Err(e) => {
                            tracing::warn!("virtio-blk flush: {e}");
                            (VIRTIO_BLK_S_IOERR, 0)
                        }
                    }
                }
            }
            VIRTIO_BLK_T_GET_ID => match data.first() {
                Some(s) if s.write => {
                    let n = (s.len as usize).min(self.serial.len());
                    mem.write_slice(&self.serial[..n], s.addr)
                        .map_err(|_| DeviceError::GuestMemory)?;
                    (VIRTIO_BLK_S_OK, n as u32)
                }
                _ => (VIRTIO_BLK_S_IOERR, 0),
            },
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        };
        mem.write_obj(result.0, status.addr)
            .map_err(|_| DeviceError::GuestMemory)?;
        Ok((result.0, result.1 + 1))
    }

    fn transfer(
        &mut self,
        sector: u64,
        data: &[Seg],
        mem: &GuestMem,
        read: bool,
    ) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(sector * SECTOR_SIZE))?;
        for s in data {
            let n = s.len as usize;
            let r = if read {
                mem.read_exact_volatile_from(s.addr, &mut self.file, n)
            } else {
                mem.write_all_volatile_to(s.addr, &mut self.file, n)
            };
            r.map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(())
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn features(&self) -> u64 {
        let ro = if self.read_only { VIRTIO_BLK_F_RO } else { 0 };
        VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_SEG_MAX | ro
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(
        &mut self,
        _index: usize,
        queue: &mut Queue,
        mem: &GuestMem,
    ) -> Result<bool, DeviceError> {
        let mut used = false;
        // Bounded per notification so one guest cannot pin a vCPU thread
        // forever by refilling the ring; the rest is handled on the next kick.
        for _ in 0..u32::from(QUEUE_SIZE) * 4 {
            let Some(chain) = queue.iter(mem)?.next() else {
                break;
            };
            let head = chain.head_index();
            let segs = collect_chain(chain, mem)?;
            let (_status, len) = self.execute(&segs, mem)?;
            queue.add_used(mem, head, len)?;
            used = true;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testutil::TestQueue;
    use std::io::{Read, Write};
    use vm_memory::GuestAddress;

    fn write_header(mem: &GuestMem, at: GuestAddress, req_type: u32, sector: u64) {
        mem.write_obj(req_type, at).unwrap();
        mem.write_obj(0u32, at.unchecked_add(4)).unwrap();
        mem.write_obj(sector, at.unchecked_add(8)).unwrap();
    }

    #[test]
    fn write_flush_read_round_trip() {
        let mem = crate::memory::create(1 << 20).unwrap();
        let mut disk = tempfile();
        disk.set_len(8 * 512).unwrap();
        let mut blk = Block::from_file(disk.try_clone().unwrap(), false, "vol-1").unwrap();
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let mut q = tq.queue(&mem);

        // Write "hello" + zeros at sector 2.
        write_header(&mem, GuestAddress(0x8000), VIRTIO_BLK_T_OUT, 2);
        mem.write_slice(b"hello", GuestAddress(0x9000)).unwrap();
        tq.add_chain(
            &mem,
            &[(0x8000, 16, false), (0x9000, 512, false), (0xa000, 1, true)],
        );
        assert!(blk.process_queue(0, &mut q, &mem).unwrap());
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0xa000)).unwrap(),
            VIRTIO_BLK_S_OK
        );

        write_header(&mem, GuestAddress(0x8000), VIRTIO_BLK_T_FLUSH, 0);
        tq.add_chain(&mem, &[(0x8000, 16, false), (0xa000, 1, true)]);
        blk.process_queue(0, &mut q, &mem).unwrap();
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0xa000)).unwrap(),
            VIRTIO_BLK_S_OK
        );

        let mut on_disk = vec![0u8; 5];
        disk.seek(SeekFrom::Start(1024)).unwrap();
        disk.read_exact(&mut on_disk).unwrap();
        assert_eq!(&on_disk, b"hello");

        write_header(&mem, GuestAddress(0x8000), VIRTIO_BLK_T_IN, 2);
        tq.add_chain(
            &mem,
            &[(0x8000, 16, false), (0xb000, 512, true), (0xa000, 1, true)],
        );
        blk.process_queue(0, &mut q, &mem).unwrap();
        let mut back = [0u8; 5];
        mem.read_slice(&mut back, GuestAddress(0xb000)).unwrap();
        assert_eq!(&back, b"hello");
        assert_eq!(tq.used_len(&mem, 2), 513);

        // Out of range read: IOERR, device still fine.
        write_header(&mem, GuestAddress(0x8000), VIRTIO_BLK_T_IN, 8);
        tq.add_chain(
            &mem,
            &[(0x8000, 16, false), (0xb000, 512, true), (0xa000, 1, true)],
        );
        blk.process_queue(0, &mut q, &mem).unwrap();
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0xa000)).unwrap(),
            VIRTIO_BLK_S_IOERR
        );
        let _ = disk.write(b"");
    }

    #[test]
    fn read_only_and_bad_chains() {
        let mem = crate::memory::create(1 << 20).unwrap();
        let disk = tempfile();
        disk.set_len(4096).unwrap();
        let mut blk = Block::from_file(disk, true, "ro").unwrap();
        assert_ne!(blk.features() & VIRTIO_BLK_F_RO, 0);
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let mut q = tq.queue(&mem);
        write_header(&mem, GuestAddress(0x8000), VIRTIO_BLK_T_OUT, 0);
        tq.add_chain(
            &mem,
            &[(0x8000, 16, false), (0x9000, 512, false), (0xa000, 1, true)],
        );
        blk.process_queue(0, &mut q, &mem).unwrap();
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0xa000)).unwrap(),
            VIRTIO_BLK_S_IOERR
        );

        // Descriptor pointing outside guest memory: an error, not a panic.
        tq.add_chain(
            &mem,
            &[
                (0x8000, 16, false),
                (0x7fff_0000, 512, true),
                (0xa000, 1, true),
            ],
        );
        assert!(blk.process_queue(0, &mut q, &mem).is_err());
        // A chain without a status descriptor.
        tq.add_chain(&mem, &[(0x8000, 16, false)]);
        assert!(blk.process_queue(0, &mut q, &mem).is_err());
    }

    fn tempfile() -> File {
        let dir = std::env::temp_dir();
        let p = dir.join(format!(
            "vmm-blk-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        std::fs::remove_file(&p).unwrap();
        f
    }
}
