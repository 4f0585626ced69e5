//! Boots one VM from the command line; the nested-KVM harness runs this.
//!
//! vmm-run --kernel K [--initrd I] [--cmdline C] [--vcpus N] [--mem MiB]
//!         [--disk PATH[,ro]]... [--tap NAME]... [--uuid U] [--manufacturer M]
//!         [--product P] [--timeout SECS] [--shutdown-on TEXT [--grace SECS]]
//!         [--on-reboot restart|stop]
//!
//! `--shutdown-on`: once TEXT appears on the console, press the ACPI power
//! button and give the guest `--grace` seconds (default 30) to power off.
//!
//! The guest console goes to stdout. Lines starting with "VMM:" report the
//! VMM's view. Exit status: 0 when the guest powered itself off.

use std::sync::Arc;
use std::time::Duration;

use vmm::{Console, SmbiosIdentity, TapBackend, Vm, VmBuilder, VmEvent, VmExit};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut kernel = None;
    let mut b = VmBuilder::new("");
    let mut id = SmbiosIdentity::default();
    let mut timeout = 600u64;
    let mut shutdown_on: Option<String> = None;
    let mut grace = 30u64;
    let mut restart = true;
    let main_start = std::time::Instant::now();
    let mut taps = Vec::new();
    let mut ndisks = 0;
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--kernel" => kernel = Some(val()),
            "--initrd" => b = b.initrd(val()),
            "--cmdline" => b = b.cmdline(val()),
            "--vcpus" => b = b.vcpus(val().parse().unwrap_or_else(|_| die("bad --vcpus"))),
            "--mem" => b = b.memory_mib(val().parse().unwrap_or_else(|_| die("bad --mem"))),
            "--disk" => {
                let v = val();
                let (path, ro) = match v.strip_suffix(",ro") {
                    Some(p) => (p.to_string(), true),
                    None => (v, false),
                };
                let serial = format!("disk{ndisks}");
                ndisks += 1;
                b = b.disk(path, ro, serial);
            }
            "--tap" => taps.push(val()),
            "--uuid" => id.uuid = Some(val()),
            "--manufacturer" => id.manufacturer = val(),
            "--product" => id.product = val(),
            "--timeout" => timeout = val().parse().unwrap_or_else(|_| die("bad --timeout")),
            "--shutdown-on" => shutdown_on = Some(val()),
            "--on-reboot" => restart = val() != "stop",
            "--grace" => grace = val().parse().unwrap_or_else(|_| die("bad --grace")),
            _ => die(&format!("unknown argument {a}")),
        }
    }
    let kernel = kernel.unwrap_or_else(|| die("--kernel is required"));
    let mut cfg = b.smbios(id).restart_on_reboot(restart).build();
    cfg.kernel = kernel.into();
    for (i, t) in taps.iter().enumerate() {
        let tap = TapBackend::open(t).unwrap_or_else(|e| die(&format!("tap {t}: {e}")));
        cfg.nics.push(vmm::NicConfig {
            mac: [0x02, 0xec, 0x2d, 0, 0, i as u8 + 1],
            backend: Arc::new(tap),
            mtu: None,
        });
    }
    cfg.console = Console::with_tee(1 << 20, Some(Box::new(std::io::stdout())));

    let before_start = main_start.elapsed();
    let vm = Vm::start(cfg).unwrap_or_else(|e| die(&format!("start: {e}")));
    let _ = PROCESS_TO_START.set(before_start);
    let events = vm.subscribe();
    if let Some(text) = shutdown_on {
        let console = vm.console();
        let vm = &vm;
        std::thread::scope(|s| {
            s.spawn(move || {
                while !console.text().contains(&text) {
                    if matches!(vm.state(), vmm::VmState::Stopped(_)) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                println!("\nVMM: pressing the power button ({grace} s grace)");
                let exit = vm.shutdown(Duration::from_secs(grace));
                println!("\nVMM: graceful shutdown result {exit:?}");
            });
            run(vm, &events, timeout)
        })
    } else {
        run(&vm, &events, timeout)
    }
}

fn run(vm: &Vm, events: &std::sync::mpsc::Receiver<VmEvent>, timeout: u64) -> ! {
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
    let exit = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left) {
            Ok(VmEvent::Stopped(e)) => break e,
            Ok(ev) => println!("\nVMM: event {ev:?}"),
            Err(_) => {
                println!("\nVMM: timeout after {timeout} s; killing");
                vm.kill();
                break vm.wait(Duration::from_secs(10)).unwrap_or(VmExit::Killed);
            }
        }
    };
    println!("\nVMM: exit {exit:?}");
    if let Some(t) = vm.setup_time() {
        println!(
            "VMM: setup (Vm::start to first KVM_RUN) {:.1} ms",
            t.as_secs_f64() * 1e3
        );
        if let Some(p) = PROCESS_TO_START.get() {
            println!(
                "VMM: setup (process start to first KVM_RUN) {:.1} ms",
                (*p + t).as_secs_f64() * 1e3
            );
        }
    }
    for (boot, writes) in vm.boot_timer_history().iter().enumerate() {
        for (v, t) in writes {
            println!(
                "VMM: boot {} boot-timer write {v:#04x} at {:.1} ms",
                boot + 1,
                t.as_secs_f64() * 1e3
            );
        }
    }
    println!("VMM: exits total {}", vm.exit_stats().total());
    for (k, v) in vm.exit_stats().summary() {
        println!("VMM: exits {k} {v}");
    }
    std::process::exit(if exit == VmExit::PoweredOff { 0 } else { 1 });
}

static PROCESS_TO_START: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

fn die(msg: &str) -> ! {
    eprintln!("vmm-run: {msg}");
    std::process::exit(2);
}
