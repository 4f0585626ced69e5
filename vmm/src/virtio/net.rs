//! virtio-net: Ethernet frames between the guest and a [`NetBackend`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::Bytes;

use super::{DeviceError, TYPE_NET, VirtioDevice, collect_chain, read_config_bytes};
use crate::memory::GuestMem;
use crate::net::NetBackend;

const VIRTIO_NET_F_MAC: u64 = 1 << 5;
const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
/// virtio_net_hdr_v1 (with num_buffers), the header size under VERSION_1.
pub const NET_HDR_LEN: usize = 12;
const QUEUE_SIZE: u16 = 256;
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
/// Largest frame we move (64 KiB plus header), a bound on per-packet allocation.
const MAX_FRAME: usize = 65_562;
/// Frames the RX thread may hold for the guest before it stops reading the
/// backend, which pushes back on the sender instead of growing host memory.
pub const MAX_PENDING_RX: usize = 256;

/// Frames received from the backend, waiting for guest RX buffers.
#[derive(Default)]
pub struct RxPending {
    pub frames: Mutex<VecDeque<Vec<u8>>>,
    pub space: Condvar,
    pub stop: AtomicBool,
}

impl RxPending {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Vec<u8>>> {
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until fewer than MAX_PENDING_RX frames are held, or stop.
    pub fn wait_for_space(&self, timeout: Duration) -> bool {
        let g = self.lock();
        let (g, _) = self
            .space
            .wait_timeout_while(g, timeout, |f| {
                f.len() >= MAX_PENDING_RX && !self.stop.load(Ordering::SeqCst)
            })
            .unwrap_or_else(|e| e.into_inner());
        g.len() < MAX_PENDING_RX
    }

    pub fn push(&self, frame: Vec<u8>) {
        self.lock().push_back(frame);
    }
}

pub struct Net {
    backend: Arc<dyn NetBackend>,
    rx: Arc<RxPending>,
    config: Vec<u8>,
}

impl Net {
    pub fn new(mac: [u8; 6], backend: Arc<dyn NetBackend>) -> Self {
        let mut config = mac.to_vec();
        config.extend_from_slice(&1u16.to_le_bytes()); // VIRTIO_NET_S_LINK_UP
        Net {
            backend,
            rx: Arc::new(RxPending::default()),
            config,
        }
    }

    pub fn rx_pending(&self) -> Arc<RxPending> {
        self.rx.clone()
    }

    fn process_rx(&mut self, queue: &mut Queue, mem: &GuestMem) -> Result<bool, DeviceError> {
        let mut used = false;
        loop {
            let frame = match self.rx.lock().pop_front() {
                Some(f) => f,
                None => break,
            };
            let Some(chain) = queue.iter(mem)?.next() else {
                // No guest buffer: keep the frame for the next RX kick.
                self.rx.lock().push_front(frame);
                break;
            };
            let head = chain.head_index();
            let segs = collect_chain(chain, mem)?;
            let mut hdr = [0u8; NET_HDR_LEN];
            hdr[10] = 1; // num_buffers
            let room: u64 = segs
                .iter()
                .filter(|s| s.write)
                .map(|s| u64::from(s.len))
                .sum();
            let mut written = 0u32;
            if room >= (NET_HDR_LEN + frame.len()) as u64 {
                let mut src = hdr.iter().chain(frame.iter()).copied();
                let total = NET_HDR_LEN + frame.len();
                let mut left = total;
                for s in segs.iter().filter(|s| s.write) {
                    if left == 0 {
                        break;
                    }
                    let n = (s.len as usize).min(left);
                    let chunk: Vec<u8> = src.by_ref().take(n).collect();
                    mem.write_slice(&chunk, s.addr)
                        .map_err(|_| DeviceError::GuestMemory)?;
                    left -= n;
                }
                written = total as u32;
            } else {
                tracing::debug!(
                    len = frame.len(),
                    room,
                    "guest RX buffer too small; frame dropped"
                );
            }
            queue.add_used(mem, head, written)?;
            used = true;
            self.rx.space.notify_all();
        }
        Ok(used)
    }

    fn process_tx(&mut self, queue: &mut Queue, mem: &GuestMem) -> Result<bool, DeviceError> {
        let mut used = false;
        for _ in 0..u32::from(QUEUE_SIZE) * 4 {
            let Some(chain) = queue.iter(mem)?.next() else {
                break;
            };
            let head = chain.head_index();
            let segs = collect_chain(chain, mem)?;
            let mut pkt = Vec::new();
            for s in segs.iter().filter(|s| !s.write) {
                let n = s.len as usize;
                if pkt.len() + n > MAX_FRAME {
                    return Err(DeviceError::BadChain("TX frame too large"));
                }
                let start = pkt.len();
                pkt.resize(start + n, 0);
                mem.read_slice(&mut pkt[start..], s.addr)
                    .map_err(|_| DeviceError::GuestMemory)?;
            }
            if pkt.len() > NET_HDR_LEN
                && let Err(e) = self.backend.send(&pkt[NET_HDR_LEN..])
            {
                tracing::debug!("net backend send: {e}");
            }
            queue.add_used(mem, head, 0)?;
            used = true;
        }
        Ok(used)
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }
    fn features(&self) -> u64 {
        VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMem,
    ) -> Result<bool, DeviceError> {
        match index {
            RX_QUEUE => self.process_rx(queue, mem),
            TX_QUEUE => self.process_tx(queue, mem),
            _ => Ok(false),
        }
    }
    fn reset(&mut self) {
        self.rx.lock().clear();
        self.rx.space.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ChannelBackend;
    use crate::virtio::testutil::TestQueue;
    use vm_memory::GuestAddress;

    #[test]
    fn tx_and_rx_paths() {
        let mem = crate::memory::create(1 << 20).unwrap();
        let (backend, peer) = ChannelBackend::new();
        let mut net = Net::new([2, 0, 0, 0, 0, 1], Arc::new(backend));
        let mut rxq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let mut txq = TestQueue::new(&mem, GuestAddress(0x4000), 16);
        let (mut rx, mut tx) = (rxq.queue(&mem), txq.queue(&mem));

        // TX: header + frame split across two descriptors.
        mem.write_slice(&[0u8; NET_HDR_LEN], GuestAddress(0x8000))
            .unwrap();
        mem.write_slice(b"frame-one", GuestAddress(0x9000)).unwrap();
        txq.add_chain(
            &mem,
            &[(0x8000, NET_HDR_LEN as u32, false), (0x9000, 9, false)],
        );
        assert!(net.process_queue(TX_QUEUE, &mut tx, &mem).unwrap());
        assert_eq!(
            peer.from_guest
                .recv_timeout(Duration::from_secs(1))
                .unwrap(),
            b"frame-one"
        );

        // RX: a frame waits until the guest posts a buffer.
        net.rx_pending().push(b"to-guest".to_vec());
        assert!(!net.process_queue(RX_QUEUE, &mut rx, &mem).unwrap());
        rxq.add_chain(&mem, &[(0xa000, 2048, true)]);
        assert!(net.process_queue(RX_QUEUE, &mut rx, &mem).unwrap());
        assert_eq!(rxq.used_len(&mem, 0), (NET_HDR_LEN + 8) as u32);
        let mut b = [0u8; 8];
        mem.read_slice(&mut b, GuestAddress(0xa000 + NET_HDR_LEN as u64))
            .unwrap();
        assert_eq!(&b, b"to-guest");

        // A buffer that is too small gets the frame dropped, not a panic.
        net.rx_pending().push(vec![7u8; 100]);
        rxq.add_chain(&mem, &[(0xa000, 20, true)]);
        assert!(net.process_queue(RX_QUEUE, &mut rx, &mem).unwrap());
        assert_eq!(rxq.used_len(&mem, 1), 0);

        // A TX chain that points outside memory is an error.
        txq.add_chain(&mem, &[(0xfff_0000, 64, false)]);
        assert!(net.process_queue(TX_QUEUE, &mut tx, &mem).is_err());
    }
}
