//! The guest console: a bounded ring buffer that keeps the newest bytes.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};

struct Ring {
    buf: VecDeque<u8>,
    capacity: usize,
    /// Bytes ever written, so that readers can resume where they stopped even
    /// after the ring has dropped old bytes.
    total: u64,
    tee: Option<Box<dyn Write + Send>>,
}

/// A cheap-to-clone handle on a VM's console output.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Mutex<Ring>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("total", &self.total_bytes())
            .finish()
    }
}

impl Console {
    /// A console keeping the last `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self::with_tee(capacity, None)
    }

    /// As `new`, also copying every byte to `tee` (for example stdout or a log file).
    pub fn with_tee(capacity: usize, tee: Option<Box<dyn Write + Send>>) -> Self {
        Console {
            inner: Arc::new(Mutex::new(Ring {
                buf: VecDeque::with_capacity(capacity.min(64 * 1024)),
                capacity: capacity.max(1),
                total: 0,
                tee,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding this lock cannot leave the ring inconsistent
        // in a way that matters for a log, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything still held, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        let r = self.lock();
        r.buf.iter().copied().collect()
    }

    /// Contents as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.contents()).into_owned()
    }

    /// Total bytes ever written.
    pub fn total_bytes(&self) -> u64 {
        self.lock().total
    }

    /// Bytes written since position `from` (as returned by a previous call or
    /// `total_bytes`), and the new position. Bytes already dropped from the ring
    /// are skipped.
    pub fn read_since(&self, from: u64) -> (Vec<u8>, u64) {
        let r = self.lock();
        let start = r.total - r.buf.len() as u64;
        let skip = from.saturating_sub(start).min(r.buf.len() as u64) as usize;
        (r.buf.iter().skip(skip).copied().collect(), r.total)
    }

    pub(crate) fn push(&self, data: &[u8]) {
        let mut r = self.lock();
        r.total += data.len() as u64;
        if let Some(t) = r.tee.as_mut() {
            // The tee is best effort: a closed stdout must not stop the guest.
            let _ = t.write_all(data);
            let _ = t.flush();
        }
        let cap = r.capacity;
        let data = if data.len() > cap {
            &data[data.len() - cap..]
        } else {
            data
        };
        let overflow = (r.buf.len() + data.len()).saturating_sub(cap);
        r.buf.drain(..overflow);
        r.buf.extend(data);
    }
}

/// The `Write` end handed to the serial device.
pub(crate) struct ConsoleWriter(pub Console);

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_newest() {
        let c = Console::new(8);
        c.push(b"hello ");
        c.push(b"world");
        assert_eq!(c.contents(), b"lo world");
        assert_eq!(c.total_bytes(), 11);
        c.push(b"0123456789");
        assert_eq!(c.contents(), b"23456789");
        let (d, pos) = c.read_since(18);
        assert_eq!(d, b"789");
        assert_eq!(pos, 21);
        let (d, _) = c.read_since(0);
        assert_eq!(d, b"23456789");
    }
}
