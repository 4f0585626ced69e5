//! The running VM: KVM setup, vCPU threads, the supervisor that handles
//! guest power events, and the handle callers hold.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN, kvm_pit_config, kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::{KernelLoader, load_cmdline};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::acpi::{self, MmioDeviceInfo};
use crate::console::ConsoleWriter;
use crate::devices::{BootTimer, GuestRequest, PioDevices};
use crate::layout::*;
use crate::memory::{self, GuestMem};
use crate::virtio::mmio::MmioTransport;
use crate::virtio::net::{Net, RX_QUEUE, RxPending};
use crate::virtio::{Interrupt, VirtioDevice, block::Block, rng::Rng};
use crate::x86::{boot, cpuid};
use crate::{Error, VmConfig, smbios};

/// Why a VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered itself off (ACPI S5).
    PoweredOff,
    /// The guest reset and `restart_on_reboot` was off.
    Rebooted,
    /// The host killed it (`kill`, or `shutdown` after its grace period).
    Killed,
    Crashed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmState {
    Running,
    Paused,
    Stopped(VmExit),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmEvent {
    /// vCPUs are running (after start and after each in-place reboot).
    Started,
    /// The guest reset itself (i8042, ACPI reset register or triple fault).
    Rebooted,
    PoweredOff,
    Crashed(String),
    Paused,
    Resumed,
    /// The guest wrote `value` to the boot-timer port (or MMIO page),
    /// `elapsed` after this boot started (the first boot: after `Vm::start`).
    /// Only the first 16 writes of each boot are reported. A guest's init
    /// writing here is how a caller can tell that the guest reached init.
    BootTimer {
        value: u8,
        elapsed: Duration,
    },
    /// Final event: the VM is gone and its resources are released.
    Stopped(VmExit),
}

/// VM exits by reason, summed over all vCPUs and boots.
#[derive(Default)]
pub struct ExitStats {
    pub io_in: AtomicU64,
    pub io_out: AtomicU64,
    pub mmio_read: AtomicU64,
    pub mmio_write: AtomicU64,
    pub hlt: AtomicU64,
    pub interrupted: AtomicU64,
    pub other: AtomicU64,
    /// I/O exits for ports 0..0x400, by port.
    ports: Vec<AtomicU64>,
}

impl ExitStats {
    fn new() -> Self {
        ExitStats {
            ports: (0..0x400).map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        }
    }

    fn port(&self, port: u16) {
        if let Some(c) = self.ports.get(usize::from(port)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (reason, count) pairs with non-zero counts, plus per-port I/O counts.
    pub fn summary(&self) -> Vec<(String, u64)> {
        let mut v = vec![
            ("io_in".to_string(), self.io_in.load(Ordering::Relaxed)),
            ("io_out".into(), self.io_out.load(Ordering::Relaxed)),
            ("mmio_read".into(), self.mmio_read.load(Ordering::Relaxed)),
            ("mmio_write".into(), self.mmio_write.load(Ordering::Relaxed)),
            ("hlt".into(), self.hlt.load(Ordering::Relaxed)),
            (
                "interrupted".into(),
                self.interrupted.load(Ordering::Relaxed),
            ),
            ("other".into(), self.other.load(Ordering::Relaxed)),
        ];
        for (p, c) in self.ports.iter().enumerate() {
            let c = c.load(Ordering::Relaxed);
            if c > 0 {
                v.push((format!("port_{p:#05x}"), c));
            }
        }
        v.retain(|(_, c)| *c > 0);
        v
    }

    pub fn total(&self) -> u64 {
        [
            &self.io_in,
            &self.io_out,
            &self.mmio_read,
            &self.mmio_write,
            &self.hlt,
            &self.other,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// Messages to the supervisor thread.
enum Ctl {
    /// From the vCPUs of boot number `.0`; stale ones are ignored.
    Guest(u64, GuestRequest),
    Crash(u64, String),
    Kill,
    Pause(Sender<bool>),
    Resume,
    PowerButton,
    Reboot,
}

/// Shared between the handle and the supervisor.
struct Shared {
    state: Mutex<VmState>,
    state_cv: Condvar,
    subscribers: Mutex<(Vec<Sender<VmEvent>>, VecDeque<VmEvent>)>,
    console: crate::Console,
    stats: ExitStats,
    boot_timer: Mutex<Arc<BootTimer>>,
    /// Boot-timer writes of earlier boots (in-place reboots), oldest first.
    boot_history: Mutex<Vec<Vec<(u8, Duration)>>>,
    /// Time from `Vm::start` to the first KVM_RUN of the first boot.
    first_run: Mutex<Option<Duration>>,
    started_at: Instant,
    serial_in: Mutex<Option<Arc<Bus>>>,
}

impl Shared {
    fn emit(&self, ev: VmEvent) {
        tracing::debug!(?ev, "vm event");
        let mut s = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        s.0.retain(|tx| tx.send(ev.clone()).is_ok());
        if s.1.len() >= 64 {
            s.1.pop_front();
        }
        s.1.push_back(ev);
    }

    fn set_state(&self, st: VmState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = st;
        self.state_cv.notify_all();
    }
}

/// A running (or stopped) VM. Dropping the handle kills the VM.
pub struct Vm {
    shared: Arc<Shared>,
    ctl: Sender<Ctl>,
    supervisor: Option<JoinHandle<()>>,
}

impl Vm {
    /// Builds the VM and starts its vCPUs. Errors in the configuration or in
    /// KVM setup are returned here; anything later arrives as an event.
    pub fn start(config: VmConfig) -> Result<Vm, Error> {
        install_kick_handler()?;
        let started_at = Instant::now();
        let shared = Arc::new(Shared {
            state: Mutex::new(VmState::Running),
            state_cv: Condvar::new(),
            subscribers: Mutex::new((Vec::new(), VecDeque::new())),
            console: config.console.clone(),
            stats: ExitStats::new(),
            boot_timer: Mutex::new(Arc::new(BootTimer::new(started_at))),
            boot_history: Mutex::new(Vec::new()),
            first_run: Mutex::new(None),
            started_at,
            serial_in: Mutex::new(None),
        });
        let (ctl_tx, ctl_rx) = mpsc::channel();
        let instance = Instance::build(&config, &shared, ctl_tx.clone(), 0)?;
        let sup_shared = shared.clone();
        let sup_tx = ctl_tx.clone();
        let supervisor = std::thread::Builder::new()
            .name("vmm-supervisor".into())
            .spawn(move || supervise(config, sup_shared, instance, ctl_rx, sup_tx))
            .map_err(|e| Error::io("spawning supervisor", e))?;
        Ok(Vm {
            shared,
            ctl: ctl_tx,
            supervisor: Some(supervisor),
        })
    }

    pub fn state(&self) -> VmState {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A receiver of events; it first replays the most recent past events.
    pub fn subscribe(&self) -> Receiver<VmEvent> {
        let (tx, rx) = mpsc::channel();
        let mut s = self
            .shared
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for ev in s.1.iter() {
            let _ = tx.send(ev.clone());
        }
        s.0.push(tx);
        rx
    }

    pub fn console(&self) -> crate::Console {
        self.shared.console.clone()
    }

    /// Bytes typed on the serial console.
    pub fn console_input(&self, data: &[u8]) {
        let bus = self
            .shared
            .serial_in
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(bus) = bus {
            let mut s = bus.pio.serial.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = s.enqueue_raw_bytes(data) {
                tracing::debug!("console input dropped: {e:?}");
            }
        }
    }

    /// Pauses all vCPUs; returns once they are parked.
    pub fn pause(&self) -> bool {
        let (tx, rx) = mpsc::channel();
        if self.ctl.send(Ctl::Pause(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false)
    }

    /// Resumes paused vCPUs; returns once the VM is no longer paused.
    pub fn resume(&self) {
        if self.ctl.send(Ctl::Resume).is_err() {
            return;
        }
        let g = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .shared
            .state_cv
            .wait_timeout_while(g, Duration::from_secs(5), |s| *s == VmState::Paused);
    }

    /// Presses the ACPI power button, without waiting.
    pub fn request_shutdown(&self) {
        let _ = self.ctl.send(Ctl::PowerButton);
    }

    /// Asks the guest to power off, waits up to `grace`, then kills it.
    pub fn shutdown(&self, grace: Duration) -> VmExit {
        self.request_shutdown();
        if let Some(exit) = self.wait(grace) {
            return exit;
        }
        self.kill();
        self.wait(Duration::from_secs(30)).unwrap_or(VmExit::Killed)
    }

    /// Stops the VM at once.
    pub fn kill(&self) {
        let _ = self.ctl.send(Ctl::Kill);
    }

    /// Resets the VM from the host side (boots again with the same config).
    pub fn reboot(&self) {
        let _ = self.ctl.send(Ctl::Reboot);
    }

    /// Waits until the VM has stopped and released its resources.
    pub fn wait(&self, timeout: Duration) -> Option<VmExit> {
        let g = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .shared
            .state_cv
            .wait_timeout_while(g, timeout, |s| !matches!(s, VmState::Stopped(_)))
            .unwrap_or_else(|e| e.into_inner());
        match &*g {
            VmState::Stopped(e) => Some(e.clone()),
            _ => None,
        }
    }

    pub fn exit_stats(&self) -> &ExitStats {
        &self.shared.stats
    }

    /// Boot-timer writes of the current boot: (value, time since VM start).
    pub fn boot_timer_writes(&self) -> Vec<(u8, Duration)> {
        self.shared
            .boot_timer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .writes()
    }

    /// Boot-timer writes of every boot so far, the current one last. The
    /// first boot is timed from `Vm::start`, later ones from their reset.
    pub fn boot_timer_history(&self) -> Vec<Vec<(u8, Duration)>> {
        let mut h = self
            .shared
            .boot_history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        h.push(self.boot_timer_writes());
        h
    }

    /// Time from `Vm::start` to the first KVM_RUN.
    pub fn setup_time(&self) -> Option<Duration> {
        *self
            .shared
            .first_run
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.ctl.send(Ctl::Kill);
        if let Some(h) = self.supervisor.take() {
            let _ = h.join();
        }
    }
}

fn supervise(
    config: VmConfig,
    shared: Arc<Shared>,
    first: Instance,
    rx: Receiver<Ctl>,
    tx: Sender<Ctl>,
) {
    let mut instance = Some(first);
    let mut generation = 0u64;
    shared.emit(VmEvent::Started);
    let exit = loop {
        let msg = match rx.recv() {
            Ok(m) => m,
            // Unreachable while `tx` lives here; treat as kill for safety.
            Err(_) => Ctl::Kill,
        };
        let Some(inst) = instance.as_mut() else {
            break VmExit::Killed;
        };
        match msg {
            Ctl::Pause(reply) => {
                let ok = inst.pause();
                if ok {
                    shared.set_state(VmState::Paused);
                    shared.emit(VmEvent::Paused);
                }
                let _ = reply.send(ok);
            }
            Ctl::Resume => {
                if inst.resume() {
                    shared.set_state(VmState::Running);
                    shared.emit(VmEvent::Resumed);
                }
            }
            Ctl::PowerButton => inst.power_button(),
            Ctl::Kill => break VmExit::Killed,
            Ctl::Guest(g, _) | Ctl::Crash(g, _) if g != generation => {}
            Ctl::Crash(_, reason) => {
                shared.emit(VmEvent::Crashed(reason.clone()));
                break VmExit::Crashed(reason);
            }
            Ctl::Guest(_, GuestRequest::PowerOff) => {
                shared.emit(VmEvent::PoweredOff);
                break VmExit::PoweredOff;
            }
            Ctl::Guest(_, GuestRequest::Reset) | Ctl::Reboot => {
                shared.emit(VmEvent::Rebooted);
                if let Some(old) = instance.take() {
                    old.teardown();
                }
                if !config.restart_on_reboot {
                    break VmExit::Rebooted;
                }
                // Late messages from the old vCPUs (a second vCPU's reset
                // request, say) carry the old generation and are ignored.
                generation += 1;
                match Instance::build(&config, &shared, tx.clone(), generation) {
                    Ok(i) => {
                        instance = Some(i);
                        shared.set_state(VmState::Running);
                        shared.emit(VmEvent::Started);
                    }
                    Err(e) => {
                        let reason = format!("reboot failed: {e}");
                        shared.emit(VmEvent::Crashed(reason.clone()));
                        break VmExit::Crashed(reason);
                    }
                }
            }
        }
    };
    if let Some(i) = instance.take() {
        i.teardown();
    }
    *shared.serial_in.lock().unwrap_or_else(|e| e.into_inner()) = None;
    // Event first: whoever `wait`s and then drains its receiver must find it.
    shared.emit(VmEvent::Stopped(exit.clone()));
    shared.set_state(VmState::Stopped(exit));
}

/// Device buses shared by vCPU threads.
pub(crate) struct Bus {
    pub pio: PioDevices,
    mmio: Vec<(u64, Arc<Mutex<MmioTransport>>)>,
}

impl Bus {
    fn mmio_find(&self, addr: u64) -> Option<(u64, &Arc<Mutex<MmioTransport>>)> {
        self.mmio
            .iter()
            .find(|(base, _)| addr >= *base && addr < base + VIRTIO_MMIO_SIZE)
            .map(|(base, t)| (addr - base, t))
    }
}

/// vCPU run control.
#[derive(Default)]
struct VcpuCtl {
    stop: AtomicBool,
    pause: AtomicBool,
    parked: Mutex<usize>,
    cv: Condvar,
}

/// One boot of the VM: everything KVM and the devices hold. Dropping it
/// (after `teardown`) releases every fd, thread and mapping.
struct Instance {
    _vm: VmFd,
    _mem: GuestMem,
    vcpus: Vec<JoinHandle<()>>,
    ctl: Arc<VcpuCtl>,
    rx_threads: Vec<(JoinHandle<()>, Arc<RxPending>)>,
    ged: EventFd,
}

const RX_POLL: Duration = Duration::from_millis(50);

impl Instance {
    fn build(
        cfg: &VmConfig,
        shared: &Arc<Shared>,
        ctl_tx: Sender<Ctl>,
        generation: u64,
    ) -> Result<Instance, Error> {
        if cfg.vcpus == 0 || cfg.vcpus > 64 {
            return Err(Error::Config(format!(
                "vcpus must be 1..=64, not {}",
                cfg.vcpus
            )));
        }
        if cfg.memory_mib < 16 {
            return Err(Error::Config("memory must be at least 16 MiB".into()));
        }
        let max_devices = DEVICE_IRQS.len();
        let ndev = cfg.disks.len() + cfg.nics.len() + usize::from(cfg.rng);
        if ndev > max_devices {
            return Err(Error::Config(format!(
                "at most {max_devices} virtio devices"
            )));
        }

        let kvm = Kvm::new().map_err(Error::KvmOpen)?;
        let vm = kvm.create_vm().map_err(Error::Kvm)?;
        vm.set_tss_address(KVM_TSS_ADDR).map_err(Error::Kvm)?;
        vm.create_irq_chip().map_err(Error::Kvm)?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(Error::Kvm)?;

        let mem = memory::create(cfg.memory_mib << 20).map_err(|e| Error::Memory(e.to_string()))?;
        for (slot, region) in mem.iter().enumerate() {
            let host = mem
                .get_host_address(region.start_addr())
                .map_err(|e| Error::Memory(e.to_string()))?;
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region maps `memory_size` bytes at `host` and lives
            // in `mem`, which the Instance keeps until after the VM fd closes.
            unsafe { vm.set_user_memory_region(r) }.map_err(Error::Kvm)?;
        }

        // Kernel, command line, initrd.
        let mut kernel = File::open(&cfg.kernel)
            .map_err(|e| Error::io(format!("opening kernel {:?}", cfg.kernel), e))?;
        let (entry, header) = load_kernel(&mem, &mut kernel)?;
        let cmdline = Cmdline::try_from(&cfg.cmdline, CMDLINE_MAX)
            .map_err(|e| Error::Config(format!("kernel command line: {e}")))?;
        load_cmdline(&mem, GuestAddress(CMDLINE_ADDR), &cmdline)
            .map_err(|e| Error::Boot(format!("command line: {e}")))?;
        let initrd = match &cfg.initrd {
            Some(p) => {
                let mut f =
                    File::open(p).map_err(|e| Error::io(format!("opening initrd {p:?}"), e))?;
                let mut data = Vec::new();
                f.read_to_end(&mut data)
                    .map_err(|e| Error::io("reading initrd", e))?;
                let addr = boot::initrd_address(&mem, data.len() as u64, header.as_ref())
                    .ok_or(Error::Layout("initrd does not fit in guest memory"))?;
                mem.write_slice(&data, GuestAddress(addr))
                    .map_err(|_| Error::Layout("initrd"))?;
                Some((addr, data.len() as u64))
            }
            None => None,
        };

        // Devices.
        let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::io("eventfd", e))?;
        vm.register_irqfd(&serial_irq, IRQ_COM1)
            .map_err(Error::Kvm)?;
        // The first boot is timed from `Vm::start`, so that the figure includes
        // VMM setup; reboots from their own start.
        let t0 = if generation == 0 {
            shared.started_at
        } else {
            Instant::now()
        };
        // Weak: the timer lives inside `shared`, so a strong reference
        // would keep the VM's state alive forever.
        let weak = Arc::downgrade(shared);
        let boot_timer = Arc::new(BootTimer::with_hook(
            t0,
            Box::new(move |value, elapsed| {
                if let Some(sh) = weak.upgrade() {
                    sh.emit(VmEvent::BootTimer { value, elapsed });
                }
            }),
        ));
        let old = std::mem::replace(
            &mut *shared.boot_timer.lock().unwrap_or_else(|e| e.into_inner()),
            boot_timer.clone(),
        );
        if generation > 0 {
            let mut h = shared
                .boot_history
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Bounded: a guest in a reset loop must not grow this forever.
            if h.len() < 64 {
                h.push(old.writes());
            }
        }
        let pio = PioDevices::new(
            serial_irq,
            Box::new(ConsoleWriter(cfg.console.clone())),
            boot_timer,
        );

        let mut virtio: Vec<(Box<dyn VirtioDevice>, Option<usize>)> = Vec::new();
        for d in &cfg.disks {
            let b = Block::open(&d.path, d.read_only, &d.serial)
                .map_err(|e| Error::io(format!("opening disk {:?}", d.path), e))?;
            virtio.push((Box::new(b), None));
        }
        let mut rx_setup = Vec::new();
        for (i, n) in cfg.nics.iter().enumerate() {
            let net = Net::new(n.mac, n.mtu, n.backend.clone());
            rx_setup.push((virtio.len(), net.rx_pending(), i));
            virtio.push((Box::new(net), Some(i)));
        }
        if cfg.rng {
            virtio.push((Box::new(Rng), None));
        }
        let mut mmio = Vec::new();
        let mut infos = Vec::new();
        for (i, (dev, _)) in virtio.into_iter().enumerate() {
            let base = VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE;
            let gsi = DEVICE_IRQS[i];
            let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::io("eventfd", e))?;
            vm.register_irqfd(&evt, gsi).map_err(Error::Kvm)?;
            let t = MmioTransport::new(dev, mem.clone(), Interrupt::new(Some(evt)));
            mmio.push((base, Arc::new(Mutex::new(t))));
            infos.push(MmioDeviceInfo {
                base,
                size: VIRTIO_MMIO_SIZE,
                gsi,
            });
        }
        let ged = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::io("eventfd", e))?;
        vm.register_irqfd(&ged, IRQ_GED).map_err(Error::Kvm)?;

        // Firmware tables and boot state.
        boot::write_boot_structures(&mem)?;
        let rsdp_addr = acpi::write_tables(&mem, cfg.vcpus, &infos)?;
        smbios::write(&mem, &cfg.smbios)?;
        boot::write_zero_page(
            &mem,
            &boot::BootSetup {
                header,
                cmdline_len: cfg.cmdline.len() + 1,
                initrd,
                rsdp_addr,
            },
        )?;

        let bus = Arc::new(Bus { pio, mmio });
        *shared.serial_in.lock().unwrap_or_else(|e| e.into_inner()) = Some(bus.clone());

        let base_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::Kvm)?;
        let mut fds = Vec::new();
        for id in 0..cfg.vcpus {
            let vcpu = vm.create_vcpu(u64::from(id)).map_err(Error::Kvm)?;
            let mut c = base_cpuid.clone();
            cpuid::adjust(&mut c, id, cfg.vcpus);
            vcpu.set_cpuid2(&c).map_err(Error::Kvm)?;
            boot::setup_msrs(&vcpu)?;
            boot::setup_regs(&vcpu, entry, id == 0)?;
            boot::setup_sregs(&vcpu)?;
            boot::setup_fpu(&vcpu)?;
            boot::setup_lapic(&vcpu)?;
            fds.push(vcpu);
        }

        // From here on, threads exist: on any error, stop the ones already
        // started before returning, so that a failed start leaks nothing.
        let mut inst = Instance {
            _vm: vm,
            _mem: mem,
            vcpus: Vec::new(),
            ctl: Arc::new(VcpuCtl::default()),
            rx_threads: Vec::new(),
            ged,
        };
        for (id, fd) in fds.into_iter().enumerate() {
            let (bus, ctl, tx, sh) = (
                bus.clone(),
                inst.ctl.clone(),
                ctl_tx.clone(),
                shared.clone(),
            );
            match std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || run_vcpu(fd, id, generation, bus, ctl, tx, sh))
            {
                Ok(h) => inst.vcpus.push(h),
                Err(e) => {
                    inst.teardown();
                    return Err(Error::io("spawning vCPU thread", e));
                }
            }
        }
        for (dev_index, pending, nic) in rx_setup {
            let transport = bus.mmio[dev_index].1.clone();
            let backend = cfg.nics[nic].backend.clone();
            let p = pending.clone();
            match std::thread::Builder::new()
                .name(format!("vmm-net{nic}-rx"))
                .spawn(move || net_rx_loop(backend, p, transport))
            {
                Ok(h) => inst.rx_threads.push((h, pending)),
                Err(e) => {
                    inst.teardown();
                    return Err(Error::io("spawning net RX thread", e));
                }
            }
        }
        Ok(inst)
    }

    fn kick_until(&self, done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            if Instant::now() > deadline {
                return false;
            }
            for h in &self.vcpus {
                if !h.is_finished() {
                    // SAFETY: the thread has not been joined (we own its
                    // handle), so its pthread_t is valid; the signal has a
                    // no-op handler installed by `install_kick_handler`.
                    unsafe {
                        libc::pthread_kill(h.as_pthread_t(), vmm_sys_util::signal::SIGRTMIN());
                    }
                }
            }
            let parked = self.ctl.parked.lock().unwrap_or_else(|e| e.into_inner());
            let _ = self.ctl.cv.wait_timeout(parked, Duration::from_millis(2));
        }
        true
    }

    fn pause(&self) -> bool {
        self.ctl.pause.store(true, Ordering::SeqCst);
        let n = self.vcpus.iter().filter(|h| !h.is_finished()).count();
        self.kick_until(|| *self.ctl.parked.lock().unwrap_or_else(|e| e.into_inner()) >= n)
    }

    fn resume(&self) -> bool {
        let was = self.ctl.pause.swap(false, Ordering::SeqCst);
        self.ctl.cv.notify_all();
        was
    }

    fn power_button(&self) {
        if let Err(e) = self.ged.write(1) {
            tracing::warn!("power button irq: {e}");
        }
    }

    fn teardown(self) {
        self.ctl.stop.store(true, Ordering::SeqCst);
        self.ctl.cv.notify_all();
        for (_, p) in &self.rx_threads {
            p.stop.store(true, Ordering::SeqCst);
            p.space.notify_all();
        }
        if !self.kick_until(|| self.vcpus.iter().all(|h| h.is_finished())) {
            tracing::error!("vCPU threads did not stop within 5 s");
        }
        for h in self.vcpus {
            let _ = h.join();
        }
        for (h, _) in self.rx_threads {
            let _ = h.join();
        }
        // VmFd, vCPU fds (dropped by their threads), eventfds and guest
        // memory are released as the remaining fields drop here.
    }
}

fn load_kernel(
    mem: &GuestMem,
    kernel: &mut File,
) -> Result<(u64, Option<linux_loader::loader::bootparam::setup_header>), Error> {
    use linux_loader::loader::{bzimage::BzImage, elf::Elf};
    let mut magic = [0u8; 4];
    kernel
        .read_exact(&mut magic)
        .map_err(|e| Error::io("reading kernel", e))?;
    if &magic == b"\x7fELF" {
        let r = Elf::load(mem, None, kernel, Some(GuestAddress(HIMEM_START)))
            .map_err(|e| Error::Boot(format!("ELF: {e}")))?;
        Ok((r.kernel_load.raw_value(), None))
    } else {
        let r = BzImage::load(mem, None, kernel, Some(GuestAddress(HIMEM_START)))
            .map_err(|e| Error::Boot(format!("bzImage: {e}")))?;
        // The 64-bit entry point is 0x200 past the start of the protected-mode code.
        Ok((r.kernel_load.raw_value() + 0x200, r.setup_header))
    }
}

fn net_rx_loop(
    backend: Arc<dyn crate::NetBackend>,
    pending: Arc<RxPending>,
    transport: Arc<Mutex<MmioTransport>>,
) {
    let mut buf = vec![0u8; 65_536];
    while !pending.stop.load(Ordering::SeqCst) {
        if !pending.wait_for_space(RX_POLL) {
            continue;
        }
        match backend.recv(&mut buf, RX_POLL) {
            Ok(Some(n)) => {
                pending.push(buf[..n].to_vec());
                transport
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .process(RX_QUEUE);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("net backend recv: {e}");
                std::thread::sleep(RX_POLL);
            }
        }
    }
}

fn run_vcpu(
    mut vcpu: VcpuFd,
    id: usize,
    generation: u64,
    bus: Arc<Bus>,
    ctl: Arc<VcpuCtl>,
    tx: Sender<Ctl>,
    shared: Arc<Shared>,
) {
    let stats = &shared.stats;
    let mut first = id == 0;
    loop {
        if ctl.stop.load(Ordering::SeqCst) {
            break;
        }
        if ctl.pause.load(Ordering::SeqCst) {
            let mut parked = ctl.parked.lock().unwrap_or_else(|e| e.into_inner());
            *parked += 1;
            ctl.cv.notify_all();
            while ctl.pause.load(Ordering::SeqCst) && !ctl.stop.load(Ordering::SeqCst) {
                parked = ctl.cv.wait(parked).unwrap_or_else(|e| e.into_inner());
            }
            *parked -= 1;
            continue;
        }
        if first {
            first = false;
            let mut fr = shared.first_run.lock().unwrap_or_else(|e| e.into_inner());
            if fr.is_none() {
                *fr = Some(shared.started_at.elapsed());
            }
        }
        let request = match vcpu.run() {
            Ok(exit) => match exit {
                VcpuExit::IoIn(port, data) => {
                    stats.io_in.fetch_add(1, Ordering::Relaxed);
                    stats.port(port);
                    bus.pio.read(port, data);
                    None
                }
                VcpuExit::IoOut(port, data) => {
                    stats.io_out.fetch_add(1, Ordering::Relaxed);
                    stats.port(port);
                    bus.pio.write(port, data).map(|r| Ctl::Guest(generation, r))
                }
                VcpuExit::MmioRead(addr, data) => {
                    stats.mmio_read.fetch_add(1, Ordering::Relaxed);
                    match bus.mmio_find(addr) {
                        Some((off, t)) => {
                            t.lock().unwrap_or_else(|e| e.into_inner()).read(off, data)
                        }
                        None => data.fill(0xff),
                    }
                    None
                }
                VcpuExit::MmioWrite(addr, data) => {
                    stats.mmio_write.fetch_add(1, Ordering::Relaxed);
                    if addr & !0xfff == BOOT_TIMER_MMIO {
                        if let Some(&v) = data.first() {
                            bus.pio.boot_timer.record(v);
                        }
                    } else if let Some((off, t)) = bus.mmio_find(addr) {
                        t.lock().unwrap_or_else(|e| e.into_inner()).write(off, data);
                    }
                    None
                }
                VcpuExit::Hlt => {
                    stats.hlt.fetch_add(1, Ordering::Relaxed);
                    None
                }
                // A triple fault: on a PC this resets the machine.
                VcpuExit::Shutdown => Some(Ctl::Guest(generation, GuestRequest::Reset)),
                VcpuExit::SystemEvent(kind, _) => {
                    stats.other.fetch_add(1, Ordering::Relaxed);
                    match kind {
                        KVM_SYSTEM_EVENT_SHUTDOWN => {
                            Some(Ctl::Guest(generation, GuestRequest::PowerOff))
                        }
                        KVM_SYSTEM_EVENT_RESET => Some(Ctl::Guest(generation, GuestRequest::Reset)),
                        KVM_SYSTEM_EVENT_CRASH => {
                            Some(Ctl::Crash(generation, "guest reported a crash".into()))
                        }
                        k => Some(Ctl::Crash(generation, format!("unknown system event {k}"))),
                    }
                }
                VcpuExit::FailEntry(reason, cpu) => Some(Ctl::Crash(
                    generation,
                    format!("vCPU entry failed: reason {reason:#x} on cpu {cpu}"),
                )),
                VcpuExit::InternalError => Some(Ctl::Crash(
                    generation,
                    format!("KVM internal error on vCPU {id}"),
                )),
                VcpuExit::Intr => {
                    stats.interrupted.fetch_add(1, Ordering::Relaxed);
                    None
                }
                other => {
                    stats.other.fetch_add(1, Ordering::Relaxed);
                    Some(Ctl::Crash(
                        generation,
                        format!("unexpected exit on vCPU {id}: {other:?}"),
                    ))
                }
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                stats.interrupted.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => Some(Ctl::Crash(generation, format!("KVM_RUN on vCPU {id}: {e}"))),
        };
        if let Some(req) = request {
            // The supervisor tears everything down; this vCPU just stops.
            let _ = tx.send(req);
            break;
        }
    }
}

static KICK_HANDLER: Once = Once::new();
static KICK_RESULT: AtomicUsize = AtomicUsize::new(0);

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Intentionally empty: the signal only exists to make KVM_RUN return EINTR.
}

/// Installs a no-op handler for SIGRTMIN, which interrupts KVM_RUN so that a
/// vCPU thread notices pause and stop requests.
fn install_kick_handler() -> Result<(), Error> {
    KICK_HANDLER.call_once(|| {
        let r = vmm_sys_util::signal::register_signal_handler(
            vmm_sys_util::signal::SIGRTMIN(),
            kick_handler,
        );
        KICK_RESULT.store(if r.is_ok() { 1 } else { 2 }, Ordering::SeqCst);
    });
    if KICK_RESULT.load(Ordering::SeqCst) == 1 {
        Ok(())
    } else {
        Err(Error::Config(
            "cannot install the vCPU kick signal handler".into(),
        ))
    }
}
