//! The microvm engine: one `vmm` VM per instance, its vCPU threads inside ec2d.
//!
//! The root volume is the first virtio-blk disk (`/dev/vda`), the AMI's kernel and initrd
//! boot directly, and SMBIOS carries the instance's `ec2…` UUID so cloud-init treats the
//! guest as EC2.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
        let init_seen = Arc::new(AtomicBool::new(false));
        let watch = InitWatch {
            log,
            line: Vec::new(),
            init_seen: init_seen.clone(),
        };
        let mut b = vmm::VmBuilder::new(kernel)
            .vcpus(u8::try_from(spec.vcpus.clamp(1, 64)).unwrap_or(1))
            .memory_mib(spec.memory_mib)
            .cmdline(cmdline)
            .disk(&spec.root_disk, false, spec.instance_id.clone())
            .rng(true)
            .console(vmm::Console::with_tee(CONSOLE_BYTES, Some(Box::new(watch))))
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
            .spawn(move || forward_events(rx, events, &init_seen))?;
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

/// The kernel's console line when it hands over to the first userspace program (`pr_info`, so
/// shown unless the command line says `quiet`): "Run /init as init process".
const INIT_LINE_START: &[u8] = b"Run /";
const INIT_LINE_END: &[u8] = b" as init process";
/// Longer console lines are not the kernel's init line; only their start is kept.
const LINE_MAX: usize = 256;

/// The console log's writer, which also watches for the kernel starting init: a stock image
/// (debian-12, or an image a user registered) does not write the boot-timer page, and without
/// this it would stay `pending` until `INIT_REPORT_TIMEOUT`.
/// It runs on a vCPU thread, under the console's lock: it only raises a flag.
struct InitWatch {
    log: File,
    line: Vec<u8>,
    init_seen: Arc<AtomicBool>,
}

impl Write for InitWatch {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.init_seen.load(Ordering::Relaxed) {
            for &b in buf {
                if b == b'\n' {
                    if is_init_line(&self.line) {
                        self.init_seen.store(true, Ordering::SeqCst);
                    }
                    self.line.clear();
                } else if self.line.len() < LINE_MAX {
                    self.line.push(b);
                }
            }
        }
        // All or nothing, so that a short write cannot make the scan above see bytes twice.
        self.log.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.log.flush()
    }
}

/// A kernel log line (`[    1.234567] Run /init as init process`, perhaps ending in `\r`).
fn is_init_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.ends_with(INIT_LINE_END)
        && line
            .windows(INIT_LINE_START.len())
            .any(|w| w == INIT_LINE_START)
}

/// How often, before init is seen, the event thread looks at the console watch's flag.
const INIT_POLL: Duration = Duration::from_millis(50);

/// Maps VM events to machine events. `Started` means the guest's init runs: the kernel said
/// it started init (see [`InitWatch`]) or the init wrote the boot-timer page; vCPUs starting
/// is not enough.
fn forward_events(
    rx: std::sync::mpsc::Receiver<vmm::VmEvent>,
    events: EventSink,
    init_seen: &AtomicBool,
) {
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
            match rx.recv_timeout(INIT_POLL) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => {
                    if init_seen.load(Ordering::SeqCst) {
                        started = true;
                        events(MachineEvent::Started);
                    } else if std::time::Instant::now() >= deadline {
                        tracing::warn!(
                            "guest init did not report in; counting the machine as started"
                        );
                        started = true;
                        events(MachineEvent::Started);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_init_line_is_recognised() {
        assert!(is_init_line(b"[   10.370385] Run /init as init process"));
        assert!(is_init_line(b"[    0.5] Run /sbin/init as init process\r"));
        assert!(!is_init_line(
            b"[    0.5] Run /init as init process with arguments:"
        ));
        assert!(!is_init_line(b"Loading, please wait..."));
    }

    #[test]
    fn the_watch_raises_its_flag_across_split_writes_and_keeps_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let seen = Arc::new(AtomicBool::new(false));
        let mut w = InitWatch {
            log: File::create(&path).unwrap(),
            line: Vec::new(),
            init_seen: seen.clone(),
        };
        w.write_all(b"[    1.0] Freeing unused kernel memory\r\n[   10.3] Run /in")
            .unwrap();
        assert!(!seen.load(Ordering::SeqCst));
        w.write_all(b"it as init process\r\nLoading, please wait...\n")
            .unwrap();
        assert!(seen.load(Ordering::SeqCst));
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(log.starts_with("[    1.0] Freeing") && log.ends_with("please wait...\n"));
    }
}
