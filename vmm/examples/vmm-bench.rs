//! VMM benchmark. Reports, each line labelled with `--label`:
//! - setup time (VM start to first KVM_RUN) and time to the guest's first
//!   boot-timer write, for a tiny guest and, with `--kernel`, a real kernel;
//! - VM exits by reason during that boot;
//! - RSS per idle VM (tiny guest parked in HLT);
//! - launch throughput: VMs per second, start to first guest instruction.
//!
//! vmm-bench --label L [--idle N] [--launch M] [--kernel K --initrd I --cmdline C --mem MiB --vcpus V]

use std::time::{Duration, Instant};

use vmm::testing::{IDLE_GUEST, POWEROFF_GUEST, minimal_elf};
use vmm::{Vm, VmBuilder, VmExit};

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page / 1024
}

fn wait_first_instruction(vm: &Vm, timeout: Duration) -> Option<Duration> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(w) = vm.boot_timer_writes().first() {
            return Some(w.1);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut label = "unlabelled".to_string();
    let (mut idle, mut launch) = (20usize, 20usize);
    let mut kernel = None;
    let mut initrd = None;
    let mut cmdline = "console=ttyS0 reboot=k panic=1 pci=off".to_string();
    let (mut mem, mut vcpus) = (256u64, 1u8);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--label" => label = v,
            "--idle" => idle = v.parse().unwrap_or(idle),
            "--launch" => launch = v.parse().unwrap_or(launch),
            "--kernel" => kernel = Some(v),
            "--initrd" => initrd = Some(v),
            "--cmdline" => cmdline = v,
            "--mem" => mem = v.parse().unwrap_or(mem),
            "--vcpus" => vcpus = v.parse().unwrap_or(vcpus),
            _ => {
                eprintln!("unknown argument {a}");
                std::process::exit(2);
            }
        }
    }
    let tag = format!("BENCH[{label}]");
    let dir = std::env::temp_dir();
    let idle_elf = dir.join(format!("vmm-bench-idle-{}.elf", std::process::id()));
    let off_elf = dir.join(format!("vmm-bench-off-{}.elf", std::process::id()));
    std::fs::write(&idle_elf, minimal_elf(IDLE_GUEST, 0x10_0000)).expect("write guest");
    std::fs::write(&off_elf, minimal_elf(POWEROFF_GUEST, 0x10_0000)).expect("write guest");

    // Tiny guest: setup and first instruction.
    let vm = Vm::start(VmBuilder::new(&off_elf).memory_mib(32).rng(false).build()).expect("start");
    let exit = vm.wait(Duration::from_secs(60));
    println!(
        "{tag} tiny-guest setup_ms={:.2} first_guest_io_ms={:.2} exit={exit:?}",
        vm.setup_time()
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(f64::NAN),
        vm.boot_timer_writes()
            .first()
            .map(|w| w.1.as_secs_f64() * 1e3)
            .unwrap_or(f64::NAN),
    );
    drop(vm);

    // Optional real kernel boot.
    if let Some(k) = kernel {
        let mut b = VmBuilder::new(k)
            .memory_mib(mem)
            .vcpus(vcpus)
            .cmdline(cmdline)
            .restart_on_reboot(false);
        if let Some(i) = initrd {
            b = b.initrd(i);
        }
        let vm = Vm::start(b.build()).expect("start kernel");
        let exit = vm.wait(Duration::from_secs(300)).unwrap_or_else(|| {
            vm.kill();
            VmExit::Killed
        });
        println!(
            "{tag} kernel setup_ms={:.2} boot_timer_ms={:?} exit={exit:?}",
            vm.setup_time()
                .map(|d| d.as_secs_f64() * 1e3)
                .unwrap_or(f64::NAN),
            vm.boot_timer_writes()
                .iter()
                .map(|w| format!("{:#04x}@{:.1}", w.0, w.1.as_secs_f64() * 1e3))
                .collect::<Vec<_>>(),
        );
        println!("{tag} kernel exits_total={}", vm.exit_stats().total());
        for (k, v) in vm.exit_stats().summary() {
            println!("{tag} kernel exits {k}={v}");
        }
    }

    // RSS per idle VM.
    let before = rss_kib();
    let mut vms = Vec::new();
    for _ in 0..idle {
        let vm = Vm::start(VmBuilder::new(&idle_elf).memory_mib(128).rng(false).build())
            .expect("start idle");
        vms.push(vm);
    }
    for vm in &vms {
        wait_first_instruction(vm, Duration::from_secs(60)).expect("idle guest ran");
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kib();
    println!(
        "{tag} idle_vms={idle} guest_mem_mib=128 rss_before_kib={before} rss_after_kib={after} rss_per_idle_vm_kib={:.0}",
        (after.saturating_sub(before)) as f64 / idle.max(1) as f64
    );
    drop(vms);

    // Launch throughput, start to first guest instruction.
    let t0 = Instant::now();
    let mut vms = Vec::new();
    for _ in 0..launch {
        vms.push(
            Vm::start(VmBuilder::new(&idle_elf).memory_mib(32).rng(false).build()).expect("start"),
        );
    }
    for vm in &vms {
        wait_first_instruction(vm, Duration::from_secs(60)).expect("guest ran");
    }
    let el = t0.elapsed();
    println!(
        "{tag} launched={launch} elapsed_ms={:.1} launch_throughput_vms_per_s={:.1}",
        el.as_secs_f64() * 1e3,
        launch as f64 / el.as_secs_f64()
    );
    drop(vms);
    let _ = std::fs::remove_file(&idle_elf);
    let _ = std::fs::remove_file(&off_elf);
}
