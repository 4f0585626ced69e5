//! virtio-rng, fed from the host's getrandom(2).

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::Bytes;

use super::{DeviceError, TYPE_RNG, VirtioDevice, collect_chain};
use crate::memory::GuestMem;

const QUEUE_SIZE: u16 = 64;
/// Upper bound per request, so that a guest cannot make us fill gigabytes.
const MAX_PER_REQUEST: usize = 64 * 1024;

#[derive(Default)]
pub struct Rng;

fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`,
        // which we exclusively borrow.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }
    fn features(&self) -> u64 {
        0
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn process_queue(
        &mut self,
        _i: usize,
        queue: &mut Queue,
        mem: &GuestMem,
    ) -> Result<bool, DeviceError> {
        let mut used = false;
        for _ in 0..u32::from(QUEUE_SIZE) * 4 {
            let Some(chain) = queue.iter(mem)?.next() else {
                break;
            };
            let head = chain.head_index();
            let segs = collect_chain(chain, mem)?;
            let mut written = 0usize;
            for s in segs.iter().filter(|s| s.write) {
                let n = (s.len as usize).min(MAX_PER_REQUEST - written);
                if n == 0 {
                    break;
                }
                let mut buf = vec![0u8; n];
                fill_random(&mut buf).map_err(|_| DeviceError::BadChain("entropy unavailable"))?;
                mem.write_slice(&buf, s.addr)
                    .map_err(|_| DeviceError::GuestMemory)?;
                written += n;
            }
            queue.add_used(mem, head, written as u32)?;
            used = true;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testutil::TestQueue;
    use vm_memory::GuestAddress;

    #[test]
    fn fills_buffers() {
        let mem = crate::memory::create(1 << 20).unwrap();
        let mut tq = TestQueue::new(&mem, GuestAddress(0x1000), 8);
        let mut q = tq.queue(&mem);
        tq.add_chain(&mem, &[(0x8000, 64, true)]);
        let mut rng = Rng;
        assert!(rng.process_queue(0, &mut q, &mem).unwrap());
        assert_eq!(tq.used_len(&mem, 0), 64);
        let mut b = [0u8; 64];
        mem.read_slice(&mut b, GuestAddress(0x8000)).unwrap();
        assert!(b.iter().any(|x| *x != 0));
    }
}
