//! The microvm engine: one `vmm` VM per instance, its vCPU threads inside ec2d.
//!
//! The root volume is the first virtio-blk disk (`/dev/vda`), the AMI's kernel and initrd
//! boot directly, and SMBIOS carries the instance's `ec2…` UUID so cloud-init treats the
//! guest as EC2.

use std::fs::OpenOptions;
use std::sync::Arc;
use std::time::Duration;

use super::engine::{Engine, EngineError, EventSink, Machine, MachineEvent, MachineSpec};

/// What GetConsoleOutput returns at most, as on EC2.
const CONSOLE_BYTES: usize = 64 * 1024;

pub struct MicrovmEngine;

impl MicrovmEngine {
    /// Available only on hardware KVM: a PVM-backed /dev/kvm runs stock kernels ~2000×
    /// slower in kernel mode, and ec2d must not pick it.
    pub fn new() -> Result<Self, EngineError> {
        match vmm::detect_kvm() {
            vmm::KvmKind::Hardware => Ok(MicrovmEngine),
            vmm::KvmKind::Pvm => Err(EngineError::Unavailable(
                "/dev/kvm is PVM (a software hypervisor); stock guest kernels cannot boot usefully on it".into(),
            )),
            vmm::KvmKind::Unavailable(why) => {
                Err(EngineError::Unavailable(format!("/dev/kvm is not usable: {why}")))
            }
        }
    }
}

struct MicroMachine {
    vm: Arc<vmm::Vm>,
}

impl Engine for MicrovmEngine {
    fn name(&self) -> &'static str {
        "microvm"
    }

    fn launch(
        &self,
        spec: MachineSpec,
        events: EventSink,
    ) -> Result<Box<dyn Machine>, EngineError> {
        let kernel = spec
            .kernel
            .clone()
            .ok_or_else(|| EngineError::Launch("the image has no kernel for direct boot".into()))?;
        std::fs::create_dir_all(&spec.state_dir)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.state_dir.join("console.log"))?;
        // Unknown `key=value` kernel parameters reach init as environment variables, which
        // is how the guest learns its identity before the network is up.
        let mut cmdline = spec.cmdline.clone();
        for (k, v) in &spec.init_env {
            cmdline.push_str(&format!(" {k}={v}"));
        }
        let mut b = vmm::VmBuilder::new(kernel)
            .vcpus(u8::try_from(spec.vcpus.clamp(1, 64)).unwrap_or(1))
            .memory_mib(spec.memory_mib)
            .cmdline(cmdline)
            .disk(&spec.root_disk, false, spec.instance_id.clone())
            .rng(true)
            .console(vmm::Console::with_tee(CONSOLE_BYTES, Some(Box::new(log))))
            .smbios(vmm::SmbiosIdentity {
                uuid: Some(spec.smbios_uuid.clone()),
                manufacturer: "Amazon EC2".into(),
                product: "ec2d microvm".into(),
                version: "1.0".into(),
                serial: spec.smbios_uuid.clone(),
                asset_tag: "Amazon EC2".into(),
            })
            .restart_on_reboot(true);
        if let Some(initrd) = &spec.initrd {
            b = b.initrd(initrd);
        }
        for d in &spec.disks {
            b = b.disk(&d.path, d.read_only, d.serial.clone());
        }
        // The driver is told the VPC's MTU, which it starts with and may not exceed, and takes
        // mergeable RX buffers, so 9001-byte frames from the fabric reach it whole.
        for nic in &spec.nics {
            b = b.nic_with_mtu(nic.mac, nic.link.clone(), crate::net::VPC_MTU);
        }
        let vm = vmm::Vm::start(b.build()).map_err(|e| EngineError::Launch(e.to_string()))?;
        let vm = Arc::new(vm);
        let rx = vm.subscribe();
        std::thread::Builder::new()
            .name(format!("events-{}", spec.instance_id))
            .spawn(move || forward_events(rx, events))?;
        Ok(Box::new(MicroMachine { vm }))
    }

    /// VMs live inside ec2d's own process, so a crash leaves nothing behind on the host.
    fn cleanup_orphans(&self, _live: &[String]) -> Result<(), EngineError> {
        Ok(())
    }
}

/// How long a guest may run before ec2d stops waiting for its init to report in: images that
/// do not write the boot-timer page count as started after this.
const INIT_REPORT_TIMEOUT: Duration = Duration::from_secs(120);

/// Maps VM events to machine events. `Started` means the guest's init runs, which the init
/// reports by writing the boot-timer page; vCPUs starting is not enough.
fn forward_events(rx: std::sync::mpsc::Receiver<vmm::VmEvent>, events: EventSink) {
    use std::sync::mpsc::RecvTimeoutError;
    let deadline = std::time::Instant::now() + INIT_REPORT_TIMEOUT;
    let mut started = false;
    loop {
        let ev = if started {
            match rx.recv() {
                Ok(ev) => ev,
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => {
                    tracing::warn!("guest init did not report in; counting the machine as started");
                    started = true;
                    events(MachineEvent::Started);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        match ev {
            vmm::VmEvent::BootTimer { .. } if !started => {
                started = true;
                events(MachineEvent::Started);
            }
            vmm::VmEvent::Rebooted => events(MachineEvent::Rebooted),
            vmm::VmEvent::Stopped(vmm::VmExit::Crashed(why)) => {
                events(MachineEvent::Crashed(why));
                return;
            }
            vmm::VmEvent::Stopped(_) => {
                events(MachineEvent::PoweredOff);
                return;
            }
            _ => {}
        }
    }
}

impl Machine for MicroMachine {
    fn shutdown(&self, grace: Duration) {
        let vm = self.vm.clone();
        // `shutdown` blocks for up to the grace period.
        let _ = std::thread::Builder::new()
            .name("vm-shutdown".into())
            .spawn(move || {
                vm.shutdown(grace);
            });
    }

    fn kill(&self) {
        self.vm.kill();
    }

    fn reboot(&self) {
        self.vm.reboot();
    }

    fn console(&self) -> Vec<u8> {
        self.vm.console().contents()
    }
}
