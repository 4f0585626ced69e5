//! A rust-vmm microVM. It knows nothing of EC2.
//!
//! ```no_run
//! use std::time::Duration;
//! use vmm::{Console, VmBuilder, Vm, VmEvent};
//!
//! let console = Console::new(1 << 20);
//! let config = VmBuilder::new("/boot/vmlinuz")
//!     .vcpus(2)
//!     .memory_mib(512)
//!     .cmdline("console=ttyS0 reboot=k panic=1")
//!     .console(console.clone())
//!     .build();
//! let vm = Vm::start(config).unwrap();
//! let events = vm.subscribe();
//! while let Ok(ev) = events.recv() {
//!     if matches!(ev, VmEvent::Stopped(_)) { break; }
//! }
//! print!("{}", console.text());
//! ```
//!
//! The guest is an x86_64 machine booted straight into the kernel's 64-bit
//! entry point: 8250 serial console (COM1), i8042 (reset only), CMOS RTC,
//! ACPI (hardware-reduced: power off and reset through port 0x3c0, a GED
//! power button), SMBIOS identity, and virtio-mmio block, net and rng
//! devices described in the DSDT as `LNRO0005`.

pub mod acpi;
pub mod console;
pub mod devices;
pub mod layout;
pub mod memory;
pub mod net;
pub mod smbios;
pub mod testing;
pub mod virtio;
mod vm;
pub mod x86;

use std::path::PathBuf;
use std::sync::Arc;

pub use console::Console;
pub use net::{ChannelBackend, ChannelPeer, NetBackend, TapBackend};
pub use smbios::SmbiosIdentity;
pub use vm::{ExitStats, Vm, VmEvent, VmExit, VmState};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("KVM: {0}")]
    Kvm(#[source] kvm_ioctls::Error),
    #[error("/dev/kvm unavailable: {0}")]
    KvmOpen(#[source] kvm_ioctls::Error),
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("guest layout: {0}")]
    Layout(&'static str),
    #[error("loading kernel: {0}")]
    Boot(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// A raw disk image attached as a virtio-blk device.
#[derive(Clone, Debug)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
    /// Reported to the guest by VIRTIO_BLK_T_GET_ID (at most 20 bytes).
    pub serial: String,
}

/// A virtio-net NIC and where its frames go.
#[derive(Clone)]
pub struct NicConfig {
    pub mac: [u8; 6],
    pub backend: Arc<dyn NetBackend>,
    /// The link MTU told to the driver (VIRTIO_NET_F_MTU): it starts with it and cannot set a
    /// larger one, and frames longer than MTU + 14 from the backend are dropped. `None`: not
    /// offered (the driver starts at 1500 and may set any MTU).
    pub mtu: Option<u16>,
}

impl std::fmt::Debug for NicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NicConfig")
            .field("mac", &self.mac)
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

/// Everything needed to boot a VM. Build it with [`VmBuilder`].
#[derive(Clone, Debug)]
pub struct VmConfig {
    pub vcpus: u8,
    pub memory_mib: u64,
    /// bzImage or ELF vmlinux.
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub disks: Vec<DiskConfig>,
    pub nics: Vec<NicConfig>,
    pub rng: bool,
    pub console: Console,
    pub smbios: SmbiosIdentity,
    /// On a guest reset, boot again in place (true, like a PC) or stop with
    /// [`VmExit::Rebooted`] (false).
    pub restart_on_reboot: bool,
}

/// Builder for [`VmConfig`].
#[derive(Clone, Debug)]
pub struct VmBuilder {
    cfg: VmConfig,
}

impl VmBuilder {
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmBuilder {
            cfg: VmConfig {
                vcpus: 1,
                memory_mib: 256,
                kernel: kernel.into(),
                initrd: None,
                cmdline: "console=ttyS0 reboot=k panic=1".into(),
                disks: Vec::new(),
                nics: Vec::new(),
                rng: true,
                console: Console::new(1 << 20),
                smbios: SmbiosIdentity::default(),
                restart_on_reboot: true,
            },
        }
    }
    pub fn vcpus(mut self, n: u8) -> Self {
        self.cfg.vcpus = n;
        self
    }
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.cfg.memory_mib = mib;
        self
    }
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Self {
        self.cfg.initrd = Some(path.into());
        self
    }
    pub fn cmdline(mut self, c: impl Into<String>) -> Self {
        self.cfg.cmdline = c.into();
        self
    }
    pub fn disk(
        mut self,
        path: impl Into<PathBuf>,
        read_only: bool,
        serial: impl Into<String>,
    ) -> Self {
        self.cfg.disks.push(DiskConfig {
            path: path.into(),
            read_only,
            serial: serial.into(),
        });
        self
    }
    pub fn nic(mut self, mac: [u8; 6], backend: Arc<dyn NetBackend>) -> Self {
        self.cfg.nics.push(NicConfig {
            mac,
            backend,
            mtu: None,
        });
        self
    }
    /// A NIC whose driver is told the link MTU (see [`NicConfig::mtu`]).
    pub fn nic_with_mtu(mut self, mac: [u8; 6], backend: Arc<dyn NetBackend>, mtu: u16) -> Self {
        self.cfg.nics.push(NicConfig {
            mac,
            backend,
            mtu: Some(mtu),
        });
        self
    }
    pub fn rng(mut self, on: bool) -> Self {
        self.cfg.rng = on;
        self
    }
    pub fn console(mut self, c: Console) -> Self {
        self.cfg.console = c;
        self
    }
    pub fn smbios(mut self, id: SmbiosIdentity) -> Self {
        self.cfg.smbios = id;
        self
    }
    pub fn restart_on_reboot(mut self, on: bool) -> Self {
        self.cfg.restart_on_reboot = on;
        self
    }
    pub fn build(self) -> VmConfig {
        self.cfg
    }
}

/// Whether /dev/kvm is usable, and whether it looks like a software
/// hypervisor (PVM) on which a stock kernel cannot usefully boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvmKind {
    Unavailable(String),
    /// `kvm_pvm` is loaded: tiny guests only.
    Pvm,
    Hardware,
}

pub fn detect_kvm() -> KvmKind {
    if let Err(e) = kvm_ioctls::Kvm::new() {
        return KvmKind::Unavailable(e.to_string());
    }
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        KvmKind::Pvm
    } else {
        KvmKind::Hardware
    }
}

#[cfg(test)]
mod tests {
    /// The engine adapter shares a VM handle across threads.
    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Vm>();
        check::<crate::Console>();
        check::<crate::ChannelBackend>();
        check::<crate::TapBackend>();
    }
}
