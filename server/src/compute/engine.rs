//! The one seam between the control plane and machines. Two engines implement it:
//! `sandbox` (namespaces + cgroups) and `microvm` (the `vmm` crate).
//!
//! Engines know nothing of EC2 beyond the identity they are handed; the lifecycle manager
//! in `compute` maps their events onto instance states.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything an engine needs to start one machine.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    /// The EC2 instance id; engines use it to name host objects (cgroups, mount points)
    /// so that orphans can be found after a crash.
    pub instance_id: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub hostname: String,
    /// SMBIOS system UUID, `ec2…` so cloud-init recognises EC2.
    pub smbios_uuid: String,
    /// The root EBS volume: a raw disk image holding an ext4 filesystem (no partition table).
    pub root_disk: PathBuf,
    /// Further volumes, attached in order.
    pub disks: Vec<DiskSpec>,
    /// For direct kernel boot (microvm); the sandbox ignores these.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// Variables handed to the guest's init (on the kernel command line for a microVM, in
    /// the environment for a sandbox), e.g. `ec2d_instance_id`.
    pub init_env: Vec<(String, String)>,
    /// Network interfaces, primary first, each plugged into the fabric.
    pub nics: Vec<crate::dataplane::Nic>,
    /// A per-instance directory under the data directory for the engine's own files
    /// (console log, runtime state). It survives restarts.
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub read_only: bool,
    /// EC2 device name, e.g. `/dev/sdf`.
    pub device_name: String,
    /// The volume id, as the disk's serial.
    pub serial: String,
}

/// What a machine reports. Engines send `Started` once the guest's init runs, and exactly
/// one terminal event (`PoweredOff` or `Crashed`) when it is gone.
#[derive(Debug, Clone, PartialEq)]
pub enum MachineEvent {
    Started,
    /// The guest rebooted itself or was rebooted; it is running again.
    Rebooted,
    /// The guest is gone after a shutdown, asked for or its own.
    PoweredOff,
    Crashed(String),
}

pub type EventSink = Arc<dyn Fn(MachineEvent) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Unavailable(String),
    #[error("cannot launch machine: {0}")]
    Launch(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub trait Engine: Send + Sync {
    fn name(&self) -> &'static str;

    /// Starts a machine. Returns once it is starting; `Started` follows through `events`.
    fn launch(&self, spec: MachineSpec, events: EventSink)
    -> Result<Box<dyn Machine>, EngineError>;

    /// Removes host objects (processes, mounts, loop devices, cgroups, taps) left by machines
    /// that are not in `live` — after a crash of ec2d, for instance.
    fn cleanup_orphans(&self, live: &[String]) -> Result<(), EngineError>;
}

pub trait Machine: Send + Sync {
    /// Asks the guest to power off; forces it after `grace`. Returns at once; `PoweredOff`
    /// follows.
    fn shutdown(&self, grace: Duration);
    /// Stops the machine now. `PoweredOff` follows.
    fn kill(&self);
    /// Asks the guest to reboot; `Rebooted` follows.
    fn reboot(&self);
    /// The console output so far, at most the last 64 KiB (what GetConsoleOutput returns).
    fn console(&self) -> Vec<u8>;
}
