//! virtio-net: Ethernet frames between the guest and a [`NetBackend`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

use super::{DeviceError, Seg, TYPE_NET, VirtioDevice, collect_chain, read_config_bytes};
use crate::memory::GuestMem;
use crate::net::NetBackend;

/// The device reports the link MTU in its config space (and drops larger frames for the driver).
const VIRTIO_NET_F_MTU: u64 = 1 << 3;
const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// The driver posts small RX buffers and the device spreads a frame over as many as it needs,
/// telling the driver how many in the header's `num_buffers`.
const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
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
/// Ethernet header length: a frame may be this much longer than the MTU.
const ETH_HLEN: usize = 14;

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

/// What became of one frame offered to the guest.
enum Rx {
    /// Written into guest buffers (the used ring changed).
    Delivered,
    /// Not enough guest buffers yet: keep the frame for the next RX kick.
    NoRoom,
    /// Dropped; `used` tells whether a buffer was returned empty.
    Dropped { used: bool },
}

pub struct Net {
    backend: Arc<dyn NetBackend>,
    rx: Arc<RxPending>,
    config: Vec<u8>,
    mtu: Option<u16>,
    /// VIRTIO_NET_F_MRG_RXBUF was negotiated.
    mergeable: bool,
}

impl Net {
    /// A NIC with address `mac`. With `mtu`, the device offers VIRTIO_NET_F_MTU: the driver
    /// starts with (and may not exceed) that MTU, and longer frames from the backend are
    /// dropped rather than handed to it.
    pub fn new(mac: [u8; 6], mtu: Option<u16>, backend: Arc<dyn NetBackend>) -> Self {
        // struct virtio_net_config: mac, status, max_virtqueue_pairs, mtu.
        let mut config = mac.to_vec();
        config.extend_from_slice(&1u16.to_le_bytes()); // VIRTIO_NET_S_LINK_UP
        config.extend_from_slice(&1u16.to_le_bytes()); // one queue pair
        config.extend_from_slice(&mtu.unwrap_or(0).to_le_bytes());
        Net {
            backend,
            rx: Arc::new(RxPending::default()),
            config,
            mtu,
            mergeable: false,
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
            let outcome = if self
                .mtu
                .is_some_and(|m| frame.len() > usize::from(m) + ETH_HLEN)
            {
                tracing::debug!(len = frame.len(), mtu = ?self.mtu, "RX frame above the MTU; dropped");
                Rx::Dropped { used: false }
            } else if self.mergeable {
                deliver_mergeable(&frame, queue, mem)?
            } else {
                deliver_one(&frame, queue, mem)?
            };
            match outcome {
                Rx::Delivered | Rx::Dropped { used: true } => used = true,
                Rx::Dropped { used: false } => {}
                Rx::NoRoom => {
                    self.rx.lock().push_front(frame);
                    break;
                }
            }
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
        let mtu = if self.mtu.is_some() {
            VIRTIO_NET_F_MTU
        } else {
            0
        };
        VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS | VIRTIO_NET_F_MRG_RXBUF | mtu
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
    fn activate(&mut self, acked_features: u64) {
        self.mergeable = acked_features & VIRTIO_NET_F_MRG_RXBUF != 0;
    }
    fn reset(&mut self) {
        self.mergeable = false;
        self.rx.lock().clear();
        self.rx.space.notify_all();
    }
}

/// The bytes the device-writable segments of `segs` can take.
fn writable_room(segs: &[Seg]) -> usize {
    segs.iter()
        .filter(|s| s.write)
        .map(|s| s.len as usize)
        .fold(0, usize::saturating_add)
}

/// Copies `data` into the device-writable segments of `segs`, in order; returns the bytes
/// written (all of `data` if there was room).
fn write_segs(data: &[u8], segs: &[Seg], mem: &GuestMem) -> Result<usize, DeviceError> {
    let mut done = 0;
    for s in segs.iter().filter(|s| s.write) {
        if done == data.len() {
            break;
        }
        let n = (s.len as usize).min(data.len() - done);
        mem.write_slice(&data[done..done + n], s.addr)
            .map_err(|_| DeviceError::GuestMemory)?;
        done += n;
    }
    Ok(done)
}

/// A header with `num_buffers`, then the frame.
fn with_header(frame: &[u8], num_buffers: u16) -> Vec<u8> {
    let mut data = Vec::with_capacity(NET_HDR_LEN + frame.len());
    data.extend_from_slice(&[0u8; NET_HDR_LEN - 2]);
    data.extend_from_slice(&num_buffers.to_le_bytes());
    data.extend_from_slice(frame);
    data
}

/// Without VIRTIO_NET_F_MRG_RXBUF: the whole frame goes into one buffer, or is dropped (the
/// buffer returned empty) if that buffer is too small, as a NIC drops an oversize frame.
fn deliver_one(frame: &[u8], queue: &mut Queue, mem: &GuestMem) -> Result<Rx, DeviceError> {
    let Some(chain) = queue.iter(mem)?.next() else {
        return Ok(Rx::NoRoom);
    };
    let head = chain.head_index();
    let segs = collect_chain(chain, mem)?;
    let data = with_header(frame, 1);
    let room = writable_room(&segs);
    if room < data.len() {
        tracing::debug!(
            len = frame.len(),
            room,
            "guest RX buffer too small; frame dropped"
        );
        queue.add_used(mem, head, 0)?;
        return Ok(Rx::Dropped { used: true });
    }
    let written = write_segs(&data, &segs, mem)?;
    queue.add_used(mem, head, written as u32)?;
    Ok(Rx::Delivered)
}

/// With VIRTIO_NET_F_MRG_RXBUF: takes as many buffers as the header and frame need and fills
/// them in order; the header (in the first) says how many. The used ring's index moves once,
/// after every element is written, so a driver polling it never sees part of a frame. If the
/// posted buffers are too few, nothing is taken and the frame waits for more; if the whole ring
/// could not hold it, the frame is dropped.
fn deliver_mergeable(frame: &[u8], queue: &mut Queue, mem: &GuestMem) -> Result<Rx, DeviceError> {
    let total = NET_HDR_LEN + frame.len();
    let start = queue.next_avail();
    let mut bufs: Vec<(u16, Vec<Seg>)> = Vec::new();
    let mut room = 0usize;
    let mut descriptors = 0usize;
    while room < total {
        let Some(chain) = queue.iter(mem)?.next() else {
            queue.set_next_avail(start);
            // Every descriptor of the ring is posted and the frame still does not fit: more
            // room will never come, so waiting would stall the link.
            if descriptors >= usize::from(queue.size()) {
                tracing::debug!(
                    len = frame.len(),
                    room,
                    "the whole RX ring cannot hold this frame; dropped"
                );
                return Ok(Rx::Dropped { used: false });
            }
            return Ok(Rx::NoRoom);
        };
        let head = chain.head_index();
        let segs = collect_chain(chain, mem)?;
        let r = writable_room(&segs);
        // The driver must post buffers that hold at least the header (virtio 1.2, 5.1.6.3.1);
        // an empty one would be a zero-length piece of a frame.
        if r < NET_HDR_LEN {
            return Err(DeviceError::BadChain(
                "mergeable RX buffer smaller than the header",
            ));
        }
        room = room.saturating_add(r);
        descriptors += segs.len();
        bufs.push((head, segs));
    }
    let n = u16::try_from(bufs.len()).map_err(|_| DeviceError::BadChain("too many RX buffers"))?;
    let data = with_header(frame, n);
    let mut done = 0;
    let mut used = Vec::with_capacity(bufs.len());
    for (head, segs) in &bufs {
        let w = write_segs(&data[done..], segs, mem)?;
        done += w;
        used.push((*head, w as u32));
    }
    // Every element but the last straight into the used ring, then the last through
    // add_used, whose release store of the index publishes them all at once.
    let size = queue.size();
    let first = queue.next_used();
    let ring = GuestAddress(queue.used_ring());
    for (i, (head, len)) in used.iter().enumerate().take(used.len() - 1) {
        let slot = first.wrapping_add(i as u16) % size;
        let at = ring
            .checked_add(4 + 8 * u64::from(slot))
            .ok_or(DeviceError::GuestMemory)?;
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(*head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&elem, at)
            .map_err(|_| DeviceError::GuestMemory)?;
    }
    queue.set_next_used(first.wrapping_add(n - 1));
    let (head, len) = used[used.len() - 1];
    queue.add_used(mem, head, len)?;
    Ok(Rx::Delivered)
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
        let mut net = Net::new([2, 0, 0, 0, 0, 1], None, Arc::new(backend));
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

    /// A frame of `len` bytes with a recognisable pattern.
    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
    }

    fn mergeable_net() -> (Net, crate::net::ChannelPeer) {
        let (backend, peer) = ChannelBackend::new();
        let mut net = Net::new([2, 0, 0, 0, 0, 1], Some(9001), Arc::new(backend));
        assert_ne!(net.features() & VIRTIO_NET_F_MRG_RXBUF, 0);
        net.activate(VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_MTU | VIRTIO_NET_F_MAC);
        (net, peer)
    }

    #[test]
    fn mtu_is_offered_and_enforced() {
        let (backend, _peer) = ChannelBackend::new();
        let backend: Arc<dyn NetBackend> = Arc::new(backend);
        let plain = Net::new([2, 0, 0, 0, 0, 1], None, backend.clone());
        assert_eq!(plain.features() & VIRTIO_NET_F_MTU, 0);
        let mut net = Net::new([2, 0, 0, 0, 0, 1], Some(1500), backend);
        assert_ne!(net.features() & VIRTIO_NET_F_MTU, 0);
        // virtio_net_config: mac[6], status, max_virtqueue_pairs, mtu (all le16).
        let mut cfg = [0u8; 12];
        net.read_config(0, &mut cfg);
        assert_eq!(&cfg[..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 1, "link up");
        assert_eq!(u16::from_le_bytes([cfg[10], cfg[11]]), 1500);
        let mut mtu = [0u8; 2];
        net.read_config(10, &mut mtu);
        assert_eq!(u16::from_le_bytes(mtu), 1500);

        let mem = crate::memory::create(1 << 20).unwrap();
        let mut rxq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let mut rx = rxq.queue(&mem);
        rxq.add_chain(&mem, &[(0x8000, 4096, true)]);
        // One byte over MTU + Ethernet header: dropped without taking the buffer.
        net.rx_pending().push(frame(1515));
        net.rx_pending().push(frame(1514));
        assert!(net.process_queue(RX_QUEUE, &mut rx, &mem).unwrap());
        assert_eq!(rxq.used_idx(&mem), 1);
        assert_eq!(rxq.used_len(&mem, 0), (NET_HDR_LEN + 1514) as u32);
    }

    /// A 9001-MTU frame spread over 1536-byte mergeable buffers, as Linux posts them.
    #[test]
    fn mergeable_rx_spreads_a_jumbo_frame_over_buffers() {
        let mem = crate::memory::create(1 << 20).unwrap();
        let (mut net, _peer) = mergeable_net();
        let mut rxq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let mut rx = rxq.queue(&mem);
        let buf = |k: u64| 0x10000 + k * 0x1000;
        let jumbo = frame(9001 + 14);
        let total = NET_HDR_LEN + jumbo.len(); // 9027: six 1536-byte buffers
        for k in 0..4 {
            rxq.add_chain(&mem, &[(buf(k), 1536, true)]);
        }
        net.rx_pending().push(jumbo.clone());
        // Four buffers are not enough: nothing is taken, the frame waits.
        assert!(!net.process_queue(RX_QUEUE, &mut rx, &mem).unwrap());
        assert_eq!(rxq.used_idx(&mem), 0);
        assert_eq!(rx.next_avail(), 0);
        for k in 4..7 {
            rxq.add_chain(&mem, &[(buf(k), 1536, true)]);
        }
        assert!(net.process_queue(RX_QUEUE, &mut rx, &mem).unwrap());
        assert_eq!(rxq.used_idx(&mem), 6);
        let mut got = Vec::new();
        for n in 0..6u16 {
            assert_eq!(
                rxq.used_id(&mem, n),
                u32::from(n),
                "buffers are used in order"
            );
            let len = rxq.used_len(&mem, n) as usize;
            assert_eq!(len, if n < 5 { 1536 } else { total - 5 * 1536 });
            let mut b = vec![0u8; len];
            mem.read_slice(&mut b, GuestAddress(buf(u64::from(n))))
                .unwrap();
            got.extend_from_slice(&b);
        }
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 6, "num_buffers");
        assert!(
            got[..10].iter().all(|b| *b == 0),
            "no offloads in the header"
        );
        assert_eq!(&got[NET_HDR_LEN..], &jumbo[..]);

        // The seventh buffer takes the next small frame whole, num_buffers 1.
        net.rx_pending().push(frame(60));
        assert!(net.process_queue(RX_QUEUE, &mut rx, &mem).unwrap());
        assert_eq!(rxq.used_idx(&mem), 7);
        assert_eq!(rxq.used_len(&mem, 6), (NET_HDR_LEN + 60) as u32);
        let mut hdr = [0u8; NET_HDR_LEN];
        mem.read_slice(&mut hdr, GuestAddress(buf(6))).unwrap();
        assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1);

        // Buffers made of several descriptors (header and data apart) work too.
        net.rx_pending().push(frame(3000));
        rxq.add_chain(&mem, &[(buf(7), 12, true), (buf(8), 2000, true)]);
        rxq.add_chain(&mem, &[(buf(9), 2000, true)]);
        assert!(net.process_queue(RX_QUEUE, &mut rx, &mem).unwrap());
        assert_eq!(rxq.used_idx(&mem), 9);
        assert_eq!(rxq.used_len(&mem, 7), 2012);
        assert_eq!(rxq.used_len(&mem, 8), 1000);
        let mut b = vec![0u8; 1000];
        mem.read_slice(&mut b, GuestAddress(buf(9))).unwrap();
        assert_eq!(&b[..], &frame(3000)[2000..]);
    }

    #[test]
    fn mergeable_rx_drops_what_the_whole_ring_cannot_hold() {
        let mem = crate::memory::create(1 << 20).unwrap();
        let (mut net, _peer) = mergeable_net();
        let mut rxq = TestQueue::new(&mem, GuestAddress(0x1000), 4);
        let mut rx = rxq.queue(&mem);
        for k in 0..4 {
            rxq.add_chain(&mem, &[(0x10000 + k * 0x1000, 256, true)]);
        }
        // 4 x 256 bytes can never hold 1,500: dropped, the buffers stay for the next frame.
        net.rx_pending().push(frame(1500));
        net.rx_pending().push(frame(100));
        assert!(net.process_queue(RX_QUEUE, &mut rx, &mem).unwrap());
        assert_eq!(rxq.used_idx(&mem), 1);
        assert_eq!(rxq.used_len(&mem, 0), (NET_HDR_LEN + 100) as u32);
        assert!(net.rx_pending().frames.lock().unwrap().is_empty());
    }

    #[test]
    fn mergeable_rx_buffer_smaller_than_the_header_is_an_error() {
        let mem = crate::memory::create(1 << 20).unwrap();
        let (mut net, _peer) = mergeable_net();
        let mut rxq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let mut rx = rxq.queue(&mem);
        rxq.add_chain(&mem, &[(0x10000, 8, true)]);
        net.rx_pending().push(frame(60));
        assert!(net.process_queue(RX_QUEUE, &mut rx, &mem).is_err());
        // A reset forgets the negotiation and the pending frames.
        net.reset();
        assert!(!net.mergeable);
        assert!(net.rx_pending().frames.lock().unwrap().is_empty());
    }

    #[test]
    fn without_mergeable_a_jumbo_frame_needs_one_big_buffer() {
        let mem = crate::memory::create(1 << 20).unwrap();
        let (backend, _peer) = ChannelBackend::new();
        let mut net = Net::new([2, 0, 0, 0, 0, 1], Some(9001), Arc::new(backend));
        net.activate(VIRTIO_NET_F_MAC | VIRTIO_NET_F_MTU);
        let mut rxq = TestQueue::new(&mem, GuestAddress(0x1000), 16);
        let mut rx = rxq.queue(&mem);
        // Linux's "big packets" mode: header, then page-sized pieces, in one chain.
        rxq.add_chain(
            &mem,
            &[
                (0x10000, 12, true),
                (0x11000, 4096, true),
                (0x12000, 4096, true),
                (0x13000, 4096, true),
            ],
        );
        let jumbo = frame(9015);
        net.rx_pending().push(jumbo.clone());
        assert!(net.process_queue(RX_QUEUE, &mut rx, &mem).unwrap());
        assert_eq!(rxq.used_len(&mem, 0), (NET_HDR_LEN + 9015) as u32);
        let mut b = vec![0u8; 9015];
        mem.read_slice(&mut b[..4096], GuestAddress(0x11000))
            .unwrap();
        mem.read_slice(&mut b[4096..8192], GuestAddress(0x12000))
            .unwrap();
        mem.read_slice(&mut b[8192..], GuestAddress(0x13000))
            .unwrap();
        assert_eq!(b, jumbo);
    }
}
