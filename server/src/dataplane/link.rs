//! A machine's side of a fabric port, as the `vmm` crate's [`NetBackend`]: the microVM's
//! virtio-net device uses it directly, and the sandbox engine pumps a tap device through it.

use std::io;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use vmm::NetBackend;

use super::Cmd;
use crate::net::PortId;

/// How many frames may wait for a guest that does not read; more are dropped, as a NIC's
/// ring would.
pub(super) const QUEUE_FRAMES: usize = 1024;

pub struct PortLink {
    pub(super) port: PortId,
    pub(super) cmd: Sender<Cmd>,
    pub(super) rx: Mutex<Receiver<Vec<u8>>>,
}

impl std::fmt::Debug for PortLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortLink({})", self.port)
    }
}

impl NetBackend for PortLink {
    /// A frame the guest sent, into the fabric.
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.cmd
            .send(Cmd::Frame(self.port, frame.to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the fabric has stopped"))
    }

    /// The next frame for the guest.
    fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        match rx.recv_timeout(timeout) {
            Ok(frame) => {
                let n = frame.len().min(buf.len());
                buf[..n].copy_from_slice(&frame[..n]);
                Ok(Some(n))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the port was detached",
            )),
        }
    }
}
