//! virtio devices over the virtio-mmio transport (version 2).

pub mod block;
pub mod mmio;
pub mod net;
pub mod rng;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMem;

pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;

/// Interrupt status bits.
pub const INT_VRING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

/// A device's interrupt line: the status register the driver reads and acks,
/// plus the irqfd (absent in unit tests) that raises the GSI.
#[derive(Clone)]
pub struct Interrupt {
    pub status: Arc<AtomicU32>,
    evt: Option<Arc<EventFd>>,
}

impl Interrupt {
    pub fn new(evt: Option<EventFd>) -> Self {
        Interrupt {
            status: Arc::new(AtomicU32::new(0)),
            evt: evt.map(Arc::new),
        }
    }

    pub fn signal(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        if let Some(e) = &self.evt
            && let Err(err) = e.write(1)
        {
            tracing::warn!("irqfd write failed: {err}");
        }
    }

    pub fn eventfd(&self) -> Option<&EventFd> {
        self.evt.as_deref()
    }
}

/// Errors a device reports for a malformed request from the guest. They are
/// never fatal to the host; the transport marks the device as needing reset.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("malformed descriptor chain: {0}")]
    BadChain(&'static str),
    #[error("guest memory access out of range")]
    GuestMemory,
    #[error("queue error: {0}")]
    Queue(#[from] virtio_queue::Error),
}

/// A virtio device model; the transport owns its queues.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    fn features(&self) -> u64;
    fn queue_max_sizes(&self) -> &[u16];
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(&mut self, _acked_features: u64) {}
    /// Processes available buffers on queue `index`. Returns whether the
    /// used ring changed (so the driver may need an interrupt).
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMem,
    ) -> Result<bool, DeviceError>;
    /// Called when the driver resets the device.
    fn reset(&mut self) {}
}

/// Reads the bytes of a config space (`cfg`) at `offset` into `data`; out of
/// range bytes read as zero.
pub fn read_config_bytes(cfg: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| cfg.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// One segment of a descriptor chain, with the chain already validated to
/// lie within guest memory.
#[derive(Clone, Copy, Debug)]
pub struct Seg {
    pub addr: vm_memory::GuestAddress,
    pub len: u32,
    pub write: bool,
}

/// Collects a chain's descriptors, bounded so that a looping or huge chain
/// cannot make us allocate without limit.
pub fn collect_chain<M>(
    chain: virtio_queue::DescriptorChain<M>,
    mem: &GuestMem,
) -> Result<Vec<Seg>, DeviceError>
where
    M: std::ops::Deref,
    M::Target: vm_memory::GuestMemory,
{
    use vm_memory::GuestMemoryBackend;
    let mut segs = Vec::new();
    for d in chain {
        if segs.len() >= 1024 {
            return Err(DeviceError::BadChain("too many descriptors"));
        }
        if d.len() > 0 && !mem.check_range(d.addr(), d.len() as usize) {
            return Err(DeviceError::GuestMemory);
        }
        segs.push(Seg {
            addr: d.addr(),
            len: d.len(),
            write: d.is_write_only(),
        });
    }
    Ok(segs)
}

/// Drives a split virtqueue from the driver side, in guest memory, for tests.
#[cfg(test)]
pub mod testutil {
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{Address, Bytes, GuestAddress};

    use crate::memory::GuestMem;

    pub struct TestQueue {
        pub desc: u64,
        pub avail: u64,
        pub used: u64,
        pub size: u16,
        next_desc: u16,
        avail_idx: u16,
    }

    impl TestQueue {
        pub fn new(_mem: &GuestMem, base: GuestAddress, size: u16) -> Self {
            let desc = base.0;
            let avail = desc + 16 * u64::from(size);
            let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
            TestQueue {
                desc,
                avail,
                used,
                size,
                next_desc: 0,
                avail_idx: 0,
            }
        }

        pub fn queue(&self, mem: &GuestMem) -> Queue {
            let mut q = Queue::new(self.size).unwrap();
            q.set_size(self.size);
            q.set_desc_table_address(Some(self.desc as u32), Some((self.desc >> 32) as u32));
            q.set_avail_ring_address(Some(self.avail as u32), Some((self.avail >> 32) as u32));
            q.set_used_ring_address(Some(self.used as u32), Some((self.used >> 32) as u32));
            q.set_ready(true);
            assert!(q.is_valid(mem));
            q
        }

        /// Queues a chain of (addr, len, device-writable) buffers.
        pub fn add_chain(&mut self, mem: &GuestMem, bufs: &[(u64, u32, bool)]) -> u16 {
            let head = self.next_desc;
            for (i, &(addr, len, write)) in bufs.iter().enumerate() {
                let idx = self.next_desc;
                self.next_desc = (self.next_desc + 1) % self.size;
                let last = i + 1 == bufs.len();
                let flags: u16 = if last { 0 } else { 1 } | if write { 2 } else { 0 };
                let at = GuestAddress(self.desc + 16 * u64::from(idx));
                mem.write_obj(addr, at).unwrap();
                mem.write_obj(len, at.unchecked_add(8)).unwrap();
                mem.write_obj(flags, at.unchecked_add(12)).unwrap();
                mem.write_obj(self.next_desc, at.unchecked_add(14)).unwrap();
            }
            let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
            mem.write_obj(head, GuestAddress(slot)).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
                .unwrap();
            head
        }

        pub fn used_idx(&self, mem: &GuestMem) -> u16 {
            mem.read_obj(GuestAddress(self.used + 2)).unwrap()
        }

        /// Descriptor head index reported in used-ring element `n`.
        pub fn used_id(&self, mem: &GuestMem, n: u16) -> u32 {
            let at = self.used + 4 + 8 * u64::from(n % self.size);
            mem.read_obj(GuestAddress(at)).unwrap()
        }

        /// Length reported in used-ring element `n`.
        pub fn used_len(&self, mem: &GuestMem, n: u16) -> u32 {
            let at = self.used + 4 + 8 * u64::from(n % self.size) + 4;
            mem.read_obj(GuestAddress(at)).unwrap()
        }
    }
}
