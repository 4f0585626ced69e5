//! Network backends: where a virtio-net device's frames go.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// The host side of a guest NIC. Frames are whole Ethernet frames without
/// any virtio header.
///
/// `send` is called from a vCPU thread when the guest transmits; `recv` is
/// called in a loop from the NIC's own RX thread and should return within
/// `timeout` (so the VMM can stop the thread) with `Ok(None)` if nothing came.
pub trait NetBackend: Send + Sync {
    fn send(&self, frame: &[u8]) -> io::Result<()>;
    fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>>;
}

/// A backend made of two channels, for in-process switches and tests.
pub struct ChannelBackend {
    to_peer: Sender<Vec<u8>>,
    from_peer: Mutex<Receiver<Vec<u8>>>,
}

/// The other end of a [`ChannelBackend`].
pub struct ChannelPeer {
    /// Frames the guest sent.
    pub from_guest: Receiver<Vec<u8>>,
    /// Send frames here to deliver them to the guest.
    pub to_guest: Sender<Vec<u8>>,
}

impl ChannelBackend {
    pub fn new() -> (ChannelBackend, ChannelPeer) {
        let (to_peer, from_guest) = mpsc::channel();
        let (to_guest, from_peer) = mpsc::channel();
        (
            ChannelBackend {
                to_peer,
                from_peer: Mutex::new(from_peer),
            },
            ChannelPeer {
                from_guest,
                to_guest,
            },
        )
    }
}

impl NetBackend for ChannelBackend {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.to_peer
            .send(frame.to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "peer gone"))
    }

    fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let rx = self.from_peer.lock().unwrap_or_else(|e| e.into_inner());
        match rx.recv_timeout(timeout) {
            Ok(f) => {
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Ok(Some(n))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                // Nothing will ever arrive; behave like an idle link.
                std::thread::sleep(timeout);
                Ok(None)
            }
        }
    }
}

/// A Linux tap device (IFF_TAP | IFF_NO_PI).
pub struct TapBackend {
    fd: OwnedFd,
    name: String,
}

impl TapBackend {
    /// Opens (or creates) tap interface `name`. Needs CAP_NET_ADMIN unless
    /// the interface was created for this user beforehand.
    pub fn open(name: &str) -> io::Result<Self> {
        const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
        const IFF_TAP: libc::c_short = 0x0002;
        const IFF_NO_PI: libc::c_short = 0x1000;
        if name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "tap name too long",
            ));
        }
        // SAFETY: a plain open(2) of a constant NUL-terminated path.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly opened descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI;
        // SAFETY: TUNSETIFF reads and writes an ifreq, which `ifr` is, and
        // the fd is a tun device we own.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut ifr) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let name = ifr
            .ifr_name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8 as char)
            .collect();
        Ok(TapBackend { fd, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl NetBackend for TapBackend {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: writes from a valid slice to a descriptor we own.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if r == 0 {
            return Ok(None);
        }
        // SAFETY: reads into a valid, exclusively borrowed buffer.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        }
        Ok(Some(n as usize))
    }
}
