//! The virtio-mmio transport (virtio 1.x, "version 2" register layout).

use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueT};

use super::{DeviceError, INT_CONFIG, INT_VRING, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice};
use crate::memory::GuestMem;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VENDOR_ID: u32 = 0x4543_3244; // "EC2D"

const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 0x40;
const STATUS_FAILED: u32 = 0x80;

pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMem,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    interrupt: Interrupt,
    config_generation: u32,
    broken: bool,
}

impl MmioTransport {
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMem, interrupt: Interrupt) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .filter_map(|&s| Queue::new(s).ok())
            .collect();
        MmioTransport {
            device,
            mem,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            interrupt,
            config_generation: 0,
            broken: false,
        }
    }

    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    fn device_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    fn driver_ok(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && !self.broken
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn reset(&mut self) {
        self.device.reset();
        for q in self.queues.iter_mut() {
            q.reset();
        }
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.status = 0;
        self.broken = false;
        self.interrupt.status.store(0, Ordering::SeqCst);
    }

    /// Runs the device on queue `index` and interrupts the driver if needed.
    /// A malformed request marks the device as needing a reset (the guest
    /// driver then resets it) instead of affecting the host.
    pub fn process(&mut self, index: usize) {
        if !self.driver_ok() {
            return;
        }
        let Some(queue) = self.queues.get_mut(index) else {
            return;
        };
        if !queue.ready() {
            return;
        }
        match self.device.process_queue(index, queue, &self.mem) {
            Ok(true) => {
                let notify = queue.needs_notification(&self.mem).unwrap_or(true);
                if notify {
                    self.interrupt.signal(INT_VRING);
                }
            }
            Ok(false) => {}
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: DeviceError) {
        tracing::warn!(
            device = self.device.device_type(),
            "virtio device error: {e}; needs reset"
        );
        self.broken = true;
        self.status |= STATUS_NEEDS_RESET;
        self.config_generation = self.config_generation.wrapping_add(1);
        self.interrupt.signal(INT_CONFIG);
    }

    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            self.device.read_config(offset - 0x100, data);
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let v: u32 = match offset {
            0x000 => MAGIC,
            0x004 => 2,
            0x008 => self.device.device_type(),
            0x00c => VENDOR_ID,
            0x010 => {
                let f = self.device_features();
                match self.device_features_sel {
                    0 => f as u32,
                    1 => (f >> 32) as u32,
                    _ => 0,
                }
            }
            0x034 => self
                .selected_queue()
                .map(|q| u32::from(q.max_size()))
                .unwrap_or(0),
            0x044 => self
                .selected_queue()
                .map(|q| u32::from(q.ready()))
                .unwrap_or(0),
            0x060 => self.interrupt.status.load(Ordering::SeqCst),
            0x070 => self.status,
            0x0fc => self.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= 0x100 {
            self.device.write_config(offset - 0x100, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let v = u32::from_le_bytes(bytes);
        // Queue layout may only change before the driver is up.
        let can_setup = self.status & STATUS_DRIVER_OK == 0;
        match offset {
            0x014 => self.device_features_sel = v,
            // Features are frozen once FEATURES_OK is set.
            0x020 if self.status & STATUS_FEATURES_OK == 0 => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                }
                _ => {}
            },
            0x024 => self.driver_features_sel = v,
            0x030 => self.queue_sel = v,
            0x038 if can_setup => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(v as u16);
                }
            }
            0x044 if can_setup || v == 0 => {
                let mem = self.mem.clone();
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1);
                    if v == 1 && !q.is_valid(&mem) {
                        tracing::warn!("guest enabled an invalid virtqueue");
                        q.set_ready(false);
                    }
                }
            }
            0x050 => self.process(v as usize),
            0x064 => {
                self.interrupt.status.fetch_and(!v, Ordering::SeqCst);
            }
            0x070 => self.write_status(v),
            0x080 if can_setup => self.with_queue(|q| q.set_desc_table_address(Some(v), None)),
            0x084 if can_setup => self.with_queue(|q| q.set_desc_table_address(None, Some(v))),
            0x090 if can_setup => self.with_queue(|q| q.set_avail_ring_address(Some(v), None)),
            0x094 if can_setup => self.with_queue(|q| q.set_avail_ring_address(None, Some(v))),
            0x0a0 if can_setup => self.with_queue(|q| q.set_used_ring_address(Some(v), None)),
            0x0a4 if can_setup => self.with_queue(|q| q.set_used_ring_address(None, Some(v))),
            _ => {}
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected_queue() {
            f(q);
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let mut new = v & !STATUS_NEEDS_RESET | (old & STATUS_NEEDS_RESET);
        if new & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            // Refuse features we did not offer, and legacy drivers.
            let bad = self.driver_features & !self.device_features() != 0
                || self.driver_features & VIRTIO_F_VERSION_1 == 0;
            if bad {
                new &= !STATUS_FEATURES_OK;
            }
        }
        if new & STATUS_DRIVER_OK != 0 && old & STATUS_DRIVER_OK == 0 {
            if new & STATUS_FEATURES_OK == 0 || new & (STATUS_ACKNOWLEDGE | STATUS_DRIVER) == 0 {
                new |= STATUS_FAILED;
            } else {
                self.status = new;
                self.device.activate(self.driver_features);
                // Buffers may have been queued before DRIVER_OK.
                for i in 0..self.queues.len() {
                    self.process(i);
                }
                return;
            }
        }
        self.status = new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::rng::Rng;
    use crate::virtio::testutil::TestQueue;
    use vm_memory::{Bytes, GuestAddress};

    fn rd(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }
    fn wr(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    /// Drives the driver side of initialisation through the registers.
    fn bring_up(t: &mut MmioTransport, tq: &TestQueue) {
        wr(t, 0x70, 0);
        wr(t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        wr(t, 0x24, 1);
        wr(t, 0x20, 1); // VERSION_1
        wr(
            t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_ne!(rd(t, 0x70) & STATUS_FEATURES_OK, 0);
        wr(t, 0x30, 0);
        assert!(rd(t, 0x34) >= u32::from(tq.size));
        wr(t, 0x38, u32::from(tq.size));
        wr(t, 0x80, tq.desc as u32);
        wr(t, 0x90, tq.avail as u32);
        wr(t, 0xa0, tq.used as u32);
        wr(t, 0x44, 1);
        assert_eq!(rd(t, 0x44), 1);
        wr(
            t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
    }

    #[test]
    fn registers_negotiation_and_notify() {
        let mem = crate::memory::create(1 << 20).unwrap();
        let mut t = MmioTransport::new(Box::new(Rng), mem.clone(), Interrupt::new(None));
        assert_eq!(rd(&mut t, 0), MAGIC);
        assert_eq!(rd(&mut t, 4), 2);
        assert_eq!(rd(&mut t, 8), crate::virtio::TYPE_RNG);
        wr(&mut t, 0x14, 1);
        assert_eq!(rd(&mut t, 0x10), 1, "VERSION_1 offered");

        // A driver that does not accept VERSION_1 cannot set FEATURES_OK.
        wr(&mut t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        wr(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(rd(&mut t, 0x70) & STATUS_FEATURES_OK, 0);

        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        bring_up(&mut t, &tq);
        tq.add_chain(&mem, &[(0x8000, 32, true)]);
        wr(&mut t, 0x50, 0);
        assert_eq!(tq.used_idx(&mem), 1);
        assert_eq!(rd(&mut t, 0x60), INT_VRING);
        wr(&mut t, 0x64, INT_VRING);
        assert_eq!(rd(&mut t, 0x60), 0);
        // Out-of-range queue index and odd-sized register accesses are ignored.
        wr(&mut t, 0x50, 7);
        t.write(0x70, &[0]);
        assert_ne!(rd(&mut t, 0x70) & STATUS_DRIVER_OK, 0);
    }

    #[test]
    fn misbehaving_driver_gets_needs_reset() {
        let mem = crate::memory::create(1 << 20).unwrap();
        let mut t = MmioTransport::new(Box::new(Rng), mem.clone(), Interrupt::new(None));
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        bring_up(&mut t, &tq);
        // A descriptor far outside guest memory.
        tq.add_chain(&mem, &[(0x7fff_0000, 32, true)]);
        wr(&mut t, 0x50, 0);
        assert_ne!(rd(&mut t, 0x70) & STATUS_NEEDS_RESET, 0);
        assert_ne!(rd(&mut t, 0x60) & INT_CONFIG, 0);
        // Further notifies do nothing until the driver resets the device.
        wr(&mut t, 0x50, 0);
        wr(&mut t, 0x70, 0);
        assert_eq!(rd(&mut t, 0x70), 0);

        // An avail index far ahead of the ring (a flood) is refused, not looped on.
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        bring_up(&mut t, &tq);
        tq.add_chain(&mem, &[(0x8000, 32, true)]);
        mem.write_obj(1000u16, GuestAddress(tq.avail + 2)).unwrap();
        wr(&mut t, 0x50, 0);
        assert_ne!(rd(&mut t, 0x70) & STATUS_NEEDS_RESET, 0);
    }

    /// Random rings and register writes against every device model: the
    /// device may refuse or need a reset, but nothing may panic.
    #[test]
    fn random_guest_input_never_panics() {
        use crate::net::ChannelBackend;
        use crate::virtio::{block::Block, net::Net};
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let path = std::env::temp_dir().join(format!("vmm-fuzz-disk-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 64 * 1024]).unwrap();
        let (backend, _peer) = ChannelBackend::new();
        let backend: std::sync::Arc<dyn crate::NetBackend> = std::sync::Arc::new(backend);
        for round in 0..2000 {
            let mem = crate::memory::create(1 << 20).unwrap();
            let dev: Box<dyn VirtioDevice> = match round % 3 {
                0 => Box::new(Block::open(&path, round % 2 == 0, "fuzz").unwrap()),
                1 => Box::new(Net::new([2, 0, 0, 0, 0, 9], None, backend.clone())),
                _ => Box::new(Rng),
            };
            let mut t = MmioTransport::new(dev, mem.clone(), Interrupt::new(None));
            let tq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
            bring_up(&mut t, &tq);
            // Garbage descriptors (addresses mostly inside guest memory).
            for i in 0..16u64 {
                let addr = next() % (2 << 20);
                let len = (next() % 0x4000) as u32;
                let flags = (next() % 8) as u16;
                let nxt = (next() % 20) as u16;
                let at = GuestAddress(tq.desc + 16 * i);
                mem.write_obj(addr, at).unwrap();
                mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
                mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
                mem.write_obj(nxt, GuestAddress(at.0 + 14)).unwrap();
                mem.write_obj((next() % 20) as u16, GuestAddress(tq.avail + 4 + 2 * i))
                    .unwrap();
            }
            mem.write_obj((next() % 24) as u16, GuestAddress(tq.avail + 2))
                .unwrap();
            for _ in 0..4 {
                wr(&mut t, 0x50, (next() % 3) as u32);
            }
            // Random register traffic, including the config space.
            for _ in 0..32 {
                let off = next() % 0x140;
                if next() % 2 == 0 {
                    wr(&mut t, off & !3, next() as u32);
                } else {
                    let mut b = [0u8; 8];
                    let n = 1 + (next() % 8) as usize;
                    t.read(off, &mut b[..n]);
                }
            }
        }
        std::fs::remove_file(&path).unwrap();
    }
}
