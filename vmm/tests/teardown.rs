//! Launching and destroying many VMs must return fds, threads and memory.

mod common;

use std::time::Duration;

use vmm::testing::{IDLE_GUEST, POWEROFF_GUEST, minimal_elf};
use vmm::{ChannelBackend, Vm, VmBuilder, VmExit};

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The thread count once it has stopped changing: a dropped VM's threads finish exiting
/// just after `drop` returns, and a count taken in that moment is one too high.
fn settled_thread_count() -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut last = thread_count();
    let mut same = 0;
    while same < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let now = thread_count();
        if now == last {
            same += 1;
        } else {
            (last, same) = (now, 0);
        }
    }
    last
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4
}

#[test]
fn two_hundred_vms_release_everything() {
    if let Some(why) = common::kvm_skip_reason() {
        common::skip("two_hundred_vms_release_everything", &why);
        return;
    }
    let dir = std::env::temp_dir();
    let idle = dir.join(format!("vmm-teardown-idle-{}.elf", std::process::id()));
    let off = dir.join(format!("vmm-teardown-off-{}.elf", std::process::id()));
    std::fs::write(&idle, minimal_elf(IDLE_GUEST, 0x10_0000)).unwrap();
    std::fs::write(&off, minimal_elf(POWEROFF_GUEST, 0x10_0000)).unwrap();
    let disk = dir.join(format!("vmm-teardown-disk-{}", std::process::id()));
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();

    let launch = |i: usize| {
        // Alternate: guests that power off by themselves, and idle guests
        // (with a disk, a NIC and rng) that we kill.
        let (backend, _peer) = ChannelBackend::new();
        let b = VmBuilder::new(if i.is_multiple_of(2) { &off } else { &idle })
            .memory_mib(64)
            .vcpus(if i % 4 == 1 { 2 } else { 1 })
            .disk(&disk, i.is_multiple_of(3), "d")
            .nic([2, 0, 0, 0, 0, 1], std::sync::Arc::new(backend));
        let vm = Vm::start(b.build()).expect("start");
        if i.is_multiple_of(2) {
            assert_eq!(vm.wait(Duration::from_secs(30)), Some(VmExit::PoweredOff));
        } else {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while vm.boot_timer_writes().is_empty() {
                assert!(std::time::Instant::now() < deadline, "idle guest never ran");
                std::thread::sleep(Duration::from_millis(1));
            }
            vm.kill();
            assert_eq!(vm.wait(Duration::from_secs(30)), Some(VmExit::Killed));
        }
        drop(vm);
    };

    // Warm up allocator arenas and lazily created process state first.
    for i in 0..4 {
        launch(i);
    }
    let threads0 = settled_thread_count();
    let (fds0, rss0) = (fd_count(), rss_kib());
    let t = std::time::Instant::now();
    for i in 0..200 {
        launch(i);
    }
    let threads1 = settled_thread_count();
    let (fds1, rss1) = (fd_count(), rss_kib());
    eprintln!(
        "200 VMs in {:?}: fds {fds0} -> {fds1}, threads {threads0} -> {threads1}, rss {rss0} KiB -> {rss1} KiB",
        t.elapsed()
    );
    let _ = std::fs::remove_file(&idle);
    let _ = std::fs::remove_file(&off);
    let _ = std::fs::remove_file(&disk);
    assert_eq!(fds1, fds0, "file descriptors leaked");
    assert_eq!(threads1, threads0, "threads leaked");
    // Allow allocator noise, not per-VM growth (64 MiB guests).
    assert!(
        rss1 < rss0 + 8 * 1024,
        "RSS grew from {rss0} KiB to {rss1} KiB"
    );
}
