//! The sandbox engine for real: namespaces, a loop-mounted ext4 root volume, cgroups, the
//! console, reboot and power-off, and a clean host afterwards. Needs root; without it
//! (or without mke2fs/busybox) each test prints a SKIPPED line and passes.
//!
//! The guest is a throwaway ext4 image made here with `mke2fs -d`: the host's static
//! busybox and a shell init that follows the tiny AMI's signal contract (SIGUSR1/2 → power
//! off, exit 0; SIGTERM/SIGHUP → reboot, exit 129).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ec2d::compute::engine::{DiskSpec, Engine, EngineError, EventSink, MachineEvent, MachineSpec};
use ec2d::compute::sandbox::{SandboxEngine, console_log_tail};

const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
trap 'echo "tiny: powering off"; exit 0' USR1 USR2
trap 'echo "tiny: rebooting"; exit 129' TERM HUP
echo "uuid=$(cat /sys/class/dmi/id/product_uuid)"
echo "hostname=$(hostname)"
echo "pid=$$"
[ -b /dev/sdf ] && echo "disk sdf: $(head -c 9 /dev/sdf)"
echo "ready: instance $ec2d_instance_id is up"
while :; do sleep 1 & wait $!; done
"#;

/// An init that ignores every polite request, to exercise the forced paths.
const STUBBORN_INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
trap '' USR1 USR2 TERM HUP
echo "ready: instance $ec2d_instance_id is up"
while :; do sleep 1 & wait $!; done
"#;

struct Fixture {
    _tmp: tempfile::TempDir,
    data_dir: PathBuf,
    image: PathBuf,
}

/// Builds the guest image, or says why the test cannot run here.
fn fixture(init: &str) -> Result<Fixture, String> {
    for tool in ["/bin/busybox", "/sbin/mke2fs"] {
        if !Path::new(tool).exists() && !Path::new(&format!("/usr{tool}")).exists() {
            return Err(format!("{tool} not found"));
        }
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = tmp.path().join("rootfs");
    for d in ["bin", "sbin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(|e| e.to_string())?;
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .map_err(|e| format!("busybox --list: {e}"))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.contains('/') {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
                .map_err(|e| e.to_string())?;
        }
    }
    std::fs::write(root.join("sbin/init"), init).map_err(|e| e.to_string())?;
    let status = Command::new("chmod")
        .arg("755")
        .arg(root.join("sbin/init"))
        .status()
        .map_err(|e| e.to_string())?;
    assert!(status.success());
    let data_dir = tmp.path().join("data");
    std::fs::create_dir_all(data_dir.join("volumes")).map_err(|e| e.to_string())?;
    let image = data_dir.join("volumes/vol-root.img");
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&root)
        .arg(&image)
        .arg("16M")
        .output()
        .map_err(|e| format!("mke2fs: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mke2fs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Fixture {
        _tmp: tmp,
        data_dir,
        image,
    })
}

fn engine(data_dir: &Path) -> Option<SandboxEngine> {
    match SandboxEngine::new(data_dir) {
        Ok(e) => Some(e),
        Err(EngineError::Unavailable(why)) => {
            eprintln!("\n*** SKIPPED sandbox engine test: {why} ***\n");
            None
        }
        Err(e) => panic!("SandboxEngine::new: {e}"),
    }
}

fn setup(init: &str) -> Option<(Fixture, SandboxEngine)> {
    let fx = match fixture(init) {
        Ok(fx) => fx,
        Err(why) => {
            eprintln!("\n*** SKIPPED sandbox engine test: cannot build a guest image: {why} ***\n");
            return None;
        }
    };
    let engine = engine(&fx.data_dir)?;
    Some((fx, engine))
}

fn instance_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "i-{:08x}{:05x}{:04x}",
        std::process::id(),
        n,
        rand::random::<u16>()
    )
}

fn spec(fx: &Fixture, id: &str) -> MachineSpec {
    MachineSpec {
        instance_id: id.to_string(),
        vcpus: 2,
        memory_mib: 256,
        hostname: format!("ip-10-0-0-{}", id.len()),
        smbios_uuid: "ec2e1f2a-0000-4000-8000-000000000001".to_string(),
        root_disk: fx.image.clone(),
        disks: Vec::new(),
        kernel: None,
        initrd: None,
        cmdline: String::new(),
        init_env: vec![("ec2d_instance_id".to_string(), id.to_string())],
        nics: Vec::new(),
        state_dir: fx.data_dir.join("instances").join(id),
    }
}

#[derive(Default)]
struct Events {
    list: Mutex<Vec<MachineEvent>>,
    cv: Condvar,
}

impl Events {
    fn sink(self: &Arc<Self>) -> EventSink {
        let me = Arc::clone(self);
        Arc::new(move |e| {
            eprintln!("event: {e:?}");
            me.list.lock().unwrap().push(e);
            me.cv.notify_all();
        })
    }

    /// Waits until `pred` holds for the events so far; panics with them on timeout.
    fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&[MachineEvent]) -> bool) {
        let deadline = Instant::now() + timeout;
        let mut list = self.list.lock().unwrap();
        while !pred(&list) {
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {what}; events: {list:?}"
            );
            list = self.cv.wait_timeout(list, deadline - now).unwrap().0;
        }
    }

    fn snapshot(&self) -> Vec<MachineEvent> {
        self.list.lock().unwrap().clone()
    }
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

fn wait_console(
    machine: &dyn ec2d::compute::engine::Machine,
    needle: &str,
    times: usize,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = String::from_utf8_lossy(&machine.console()).into_owned();
        if count(&text, needle) >= times {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "console never showed {needle:?} {times} time(s); console:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Everything the machine may have made on the host, found independently of the engine.
fn host_leftovers(id: &str, image: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let image = std::fs::canonicalize(image).unwrap_or(image.to_path_buf());
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(b) = std::fs::read_to_string(entry.path().join("loop/backing_file"))
            && Path::new(b.trim_end()) == image
        {
            found.push(format!(
                "loop device {} -> {}",
                entry.file_name().to_string_lossy(),
                b.trim_end()
            ));
        }
    }
    for line in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
    {
        if line.contains(id) {
            found.push(format!("mount: {line}"));
        }
    }
    for ctrl in ["cpu", "memory", "pids", "systemd"] {
        let dir = Path::new("/sys/fs/cgroup").join(ctrl).join("ec2d").join(id);
        if dir.exists() {
            found.push(format!("cgroup {}", dir.display()));
        }
    }
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmd).contains(id)
        {
            found.push(format!("process {pid}: {}", String::from_utf8_lossy(&cmd)));
        }
    }
    found
}

fn assert_clean(id: &str, image: &Path) {
    // Reaping and teardown happen before the terminal event, so no waiting is needed;
    // a short retry only guards against /proc listing a process in its last instant.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = host_leftovers(id, image);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "host not clean:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lifecycle_boot_reboot_shutdown_leaves_host_clean() {
    let Some((fx, engine)) = setup(INIT) else {
        return;
    };
    let id = instance_id();
    let mut spec = spec(&fx, &id);
    // An extra volume shows up as a block device under its EC2 device name.
    let data_disk = fx.data_dir.join("volumes/vol-data.img");
    let mut bytes = b"data-disk".to_vec();
    bytes.resize(1 << 20, 0);
    std::fs::write(&data_disk, bytes).unwrap();
    spec.disks.push(DiskSpec {
        path: data_disk.clone(),
        read_only: true,
        device_name: "/dev/sdf".to_string(),
        serial: "vol-data".to_string(),
    });
    let events = Arc::new(Events::default());
    let t0 = Instant::now();
    let machine = engine.launch(spec.clone(), events.sink()).expect("launch");
    events.wait("Started", Duration::from_secs(10), |e| {
        e.contains(&MachineEvent::Started)
    });
    eprintln!("Started after {:?}", t0.elapsed());
    let ready = format!("ready: instance {id} is up");
    let text = wait_console(machine.as_ref(), &ready, 1, Duration::from_secs(10));
    eprintln!("ready line after {:?}; console:\n{text}", t0.elapsed());
    assert!(
        text.contains("uuid=ec2e1f2a-0000-4000-8000-000000000001"),
        "{text}"
    );
    assert!(
        text.contains(&format!("hostname={}", spec.hostname)),
        "{text}"
    );
    // PID 1 of its own pid namespace.
    assert!(text.contains("pid=1\n"), "{text}");
    assert!(text.contains("disk sdf: data-disk"), "{text}");
    assert!(!text.contains("ec2d-sandbox-exec"), "marker leaked: {text}");

    // Limits from the spec, when this host has cgroup v1.
    let cpu = Path::new("/sys/fs/cgroup/cpu/ec2d").join(&id);
    if cpu.exists() {
        let quota = std::fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap();
        assert_eq!(quota.trim(), "200000");
        let mem = Path::new("/sys/fs/cgroup/memory/ec2d").join(&id);
        let limit = std::fs::read_to_string(mem.join("memory.limit_in_bytes")).unwrap();
        assert_eq!(limit.trim(), (256u64 << 20).to_string());
        let procs = std::fs::read_to_string(cpu.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().count() >= 2,
            "unshare and init in the cgroup: {procs}"
        );
    } else {
        eprintln!("note: no cgroup v1 cpu hierarchy here; limits not checked");
    }
    // The guest's mounts stay in its own namespace.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&id), "guest mount visible on the host");

    machine.reboot();
    events.wait("Rebooted", Duration::from_secs(10), |e| {
        e.contains(&MachineEvent::Rebooted)
    });
    let text = wait_console(machine.as_ref(), &ready, 2, Duration::from_secs(10));
    assert!(text.contains("tiny: rebooting"), "{text}");

    let grace = Duration::from_secs(5);
    let t1 = Instant::now();
    machine.shutdown(grace);
    events.wait("PoweredOff", grace + Duration::from_secs(2), |e| {
        e.contains(&MachineEvent::PoweredOff)
    });
    let took = t1.elapsed();
    eprintln!("PoweredOff {took:?} after shutdown");
    assert!(
        took < grace,
        "the guest powers off on SIGUSR2; it should not need the grace"
    );
    assert_eq!(
        events.snapshot(),
        vec![
            MachineEvent::Started,
            MachineEvent::Rebooted,
            MachineEvent::PoweredOff
        ]
    );
    let text = String::from_utf8_lossy(&machine.console()).into_owned();
    assert!(text.contains("tiny: powering off"), "{text}");
    // The console outlives the machine, on disk.
    let log = String::from_utf8_lossy(&console_log_tail(&spec.state_dir).unwrap()).into_owned();
    assert_eq!(count(&log, &ready), 2, "{log}");
    assert_clean(&id, &fx.image);
    assert_clean(&id, &data_disk);
}

#[test]
fn shutdown_of_a_stubborn_guest_is_forced_after_the_grace() {
    let Some((fx, engine)) = setup(STUBBORN_INIT) else {
        return;
    };
    let id = instance_id();
    let events = Arc::new(Events::default());
    let machine = engine
        .launch(spec(&fx, &id), events.sink())
        .expect("launch");
    wait_console(
        machine.as_ref(),
        &format!("ready: instance {id} is up"),
        1,
        Duration::from_secs(10),
    );
    let grace = Duration::from_millis(500);
    let t0 = Instant::now();
    machine.shutdown(grace);
    events.wait("PoweredOff", Duration::from_secs(5), |e| {
        e.contains(&MachineEvent::PoweredOff)
    });
    let took = t0.elapsed();
    eprintln!("stubborn guest PoweredOff after {took:?} (grace {grace:?})");
    assert!(took >= grace, "killed before the grace ran out");
    assert_clean(&id, &fx.image);
}

#[test]
fn external_sigkill_is_a_crash_and_leaves_host_clean() {
    let Some((fx, engine)) = setup(INIT) else {
        return;
    };
    let id = instance_id();
    let events = Arc::new(Events::default());
    let machine = engine
        .launch(spec(&fx, &id), events.sink())
        .expect("launch");
    wait_console(
        machine.as_ref(),
        &format!("ready: instance {id} is up"),
        1,
        Duration::from_secs(10),
    );
    let pid = unshare_pid(&id).expect("unshare process");
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    events.wait("a terminal event", Duration::from_secs(5), |e| {
        e.iter().any(|e| matches!(e, MachineEvent::Crashed(_)))
    });
    eprintln!("events: {:?}", events.snapshot());
    assert_clean(&id, &fx.image);
}

#[test]
fn bad_root_volume_is_a_crash_and_leaves_host_clean() {
    let Some((fx, engine)) = setup(INIT) else {
        return;
    };
    // Not a filesystem: mount fails in the setup script, before init.
    std::fs::write(&fx.image, vec![0u8; 1 << 20]).unwrap();
    let id = instance_id();
    let events = Arc::new(Events::default());
    let _machine = engine
        .launch(spec(&fx, &id), events.sink())
        .expect("launch");
    events.wait("Crashed", Duration::from_secs(10), |e| {
        e.iter().any(|e| matches!(e, MachineEvent::Crashed(_)))
    });
    let evs = events.snapshot();
    eprintln!("events: {evs:?}");
    assert_eq!(
        evs.len(),
        1,
        "no Started for a machine whose init never ran"
    );
    assert_clean(&id, &fx.image);
}

/// Not a test on its own: the stand-in for an ec2d process that is SIGKILLed while a
/// machine runs. `spawn_crashing_ec2d` runs it with EC2D_SANDBOX_CRASH_HELPER set.
#[test]
#[ignore]
fn crash_helper() {
    let Ok(args) = std::env::var("EC2D_SANDBOX_CRASH_HELPER") else {
        return;
    };
    let mut parts = args.split('|');
    let (Some(data_dir), Some(image), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("bad EC2D_SANDBOX_CRASH_HELPER {args:?}");
    };
    let fx = Fixture {
        _tmp: tempfile::tempdir().unwrap(),
        data_dir: PathBuf::from(data_dir),
        image: PathBuf::from(image),
    };
    let engine = SandboxEngine::new(&fx.data_dir).expect("engine");
    let events = Arc::new(Events::default());
    let _machine = engine.launch(spec(&fx, id), events.sink()).expect("launch");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Launches a machine from a separate process, waits for its ready line (in console.log,
/// as a restarted ec2d would read it), then SIGKILLs that process: the machine's host
/// objects are left with nobody supervising them.
fn spawn_crashing_ec2d(fx: &Fixture, id: &str) {
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_helper", "--ignored", "--nocapture"])
        .env(
            "EC2D_SANDBOX_CRASH_HELPER",
            format!("{}|{}|{id}", fx.data_dir.display(), fx.image.display()),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = format!("ready: instance {id} is up");
    let state_dir = spec(fx, id).state_dir;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = console_log_tail(&state_dir).unwrap_or_default();
        if String::from_utf8_lossy(&log).contains(&ready) {
            break;
        }
        if let Ok(Some(status)) = helper.try_wait() {
            panic!("crash helper exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "helper's machine never got ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    helper.kill().unwrap();
    helper.wait().unwrap();
    assert!(
        !host_leftovers(id, &fx.image).is_empty(),
        "the machine should outlive its ec2d"
    );
}

#[test]
fn orphans_of_a_crashed_ec2d_are_cleaned_up_by_a_fresh_engine() {
    let Some((fx, engine)) = setup(INIT) else {
        return;
    };
    drop(engine);
    let id = instance_id();
    spawn_crashing_ec2d(&fx, &id);
    eprintln!(
        "left by the crash:\n{}",
        host_leftovers(&id, &fx.image).join("\n")
    );

    let fresh = SandboxEngine::new(&fx.data_dir).expect("engine");
    // Another live machine's objects must survive the cleanup.
    let other = instance_id();
    let other_events = Arc::new(Events::default());
    let mut other_spec = spec(&fx, &other);
    let other_image = fx.data_dir.join("volumes/vol-other.img");
    std::fs::copy(&fx.image, &other_image).unwrap();
    other_spec.root_disk = other_image.clone();
    let other_machine = fresh
        .launch(other_spec, other_events.sink())
        .expect("launch other");
    wait_console(
        other_machine.as_ref(),
        &format!("ready: instance {other} is up"),
        1,
        Duration::from_secs(10),
    );

    fresh
        .cleanup_orphans(std::slice::from_ref(&other))
        .expect("cleanup");
    assert_clean(&id, &fx.image);
    assert!(
        !host_leftovers(&other, &other_image).is_empty(),
        "cleanup_orphans removed a live machine"
    );
    assert!(other_events.snapshot() == vec![MachineEvent::Started]);

    other_machine.kill();
    other_events.wait("PoweredOff", Duration::from_secs(5), |e| {
        e.contains(&MachineEvent::PoweredOff)
    });
    assert_clean(&other, &other_image);
}

#[test]
fn relaunch_after_a_crash_replaces_the_leftovers_and_refuses_duplicates() {
    let Some((fx, engine)) = setup(INIT) else {
        return;
    };
    let id = instance_id();
    spawn_crashing_ec2d(&fx, &id);
    // No cleanup_orphans call: launch itself clears what the crashed run left.
    let events = Arc::new(Events::default());
    let machine = engine
        .launch(spec(&fx, &id), events.sink())
        .expect("relaunch");
    let ready = format!("ready: instance {id} is up");
    wait_console(machine.as_ref(), &ready, 1, Duration::from_secs(10));
    let unshares = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|p| p.parse::<u32>().is_ok())
                && std::fs::read(e.path().join("cmdline"))
                    .map(|c| is_tagged(&c, &id))
                    .unwrap_or(false)
        })
        .count();
    assert_eq!(unshares, 1, "the crashed run's processes must be gone");
    let dup = engine.launch(spec(&fx, &id), events.sink());
    assert!(
        matches!(&dup, Err(EngineError::Launch(m)) if m.contains("already running")),
        "second launch of a running id must fail"
    );
    machine.shutdown(Duration::from_secs(5));
    events.wait("PoweredOff", Duration::from_secs(7), |e| {
        e.contains(&MachineEvent::PoweredOff)
    });
    assert_clean(&id, &fx.image);
}

/// The tiny AMI's own init (fixtures/tiny/init), in the throwaway image: its console and
/// signal contract must work under this engine unchanged.
#[test]
fn tiny_ami_init_boots_reboots_and_powers_off() {
    let init = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiny/init");
    let Ok(init) = std::fs::read_to_string(&init) else {
        eprintln!(
            "\n*** SKIPPED tiny AMI init test: {} not found ***\n",
            init.display()
        );
        return;
    };
    let Some((fx, engine)) = setup(&init) else {
        return;
    };
    let id = instance_id();
    let spec = spec(&fx, &id);
    let events = Arc::new(Events::default());
    let t0 = Instant::now();
    let machine = engine.launch(spec.clone(), events.sink()).expect("launch");
    let ready = format!("ec2d-tiny: instance {id} ready");
    wait_console(machine.as_ref(), &ready, 1, Duration::from_secs(10));
    eprintln!("tiny ready line after {:?}", t0.elapsed());
    machine.reboot();
    events.wait("Rebooted", Duration::from_secs(10), |e| {
        e.contains(&MachineEvent::Rebooted)
    });
    let text = wait_console(machine.as_ref(), &ready, 2, Duration::from_secs(10));
    assert!(text.contains("ec2d-tiny: rebooting"), "{text}");
    let t1 = Instant::now();
    machine.shutdown(Duration::from_secs(5));
    events.wait("PoweredOff", Duration::from_secs(7), |e| {
        e.contains(&MachineEvent::PoweredOff)
    });
    eprintln!("tiny PoweredOff {:?} after shutdown", t1.elapsed());
    assert!(t1.elapsed() < Duration::from_secs(5), "needed the grace");
    let text = String::from_utf8_lossy(&machine.console()).into_owned();
    assert!(text.contains("ec2d-tiny: powering off"), "{text}");
    eprintln!("tiny console:\n{text}");
    assert_eq!(
        events.snapshot(),
        vec![
            MachineEvent::Started,
            MachineEvent::Rebooted,
            MachineEvent::PoweredOff
        ]
    );
    assert_clean(&id, &fx.image);
}

/// The debian-12 AMI (systemd as init) boots to a login prompt, reboots (SIGINT → systemd
/// reboots, unshare dies by SIGHUP), powers off cleanly within the grace (SIGRTMIN+4 →
/// "Powering off", dies by SIGINT) and leaves the host clean, nested cgroups included. Needs
/// the built image: $EC2D_DEBIAN12_IMAGE or .cache/debian-12/out/root.img (built with
/// `bash fixtures/debian-12/build .cache/debian-12/out`); it boots a copy.
#[test]
fn debian12_systemd_boots_reboots_and_powers_off() {
    let image = std::env::var_os("EC2D_DEBIAN12_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/debian-12/out/root.img")
        });
    if !image.is_file() {
        eprintln!(
            "\n*** SKIPPED debian-12 systemd test: no image at {} (set EC2D_DEBIAN12_IMAGE or \
             run `bash fixtures/debian-12/build .cache/debian-12/out`) ***\n",
            image.display()
        );
        return;
    }
    if !Path::new("/sys/fs/cgroup/systemd/cgroup.procs").exists() {
        eprintln!(
            "\n*** SKIPPED debian-12 systemd test: no cgroup v1 name=systemd hierarchy at /sys/fs/cgroup/systemd ***\n"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let copy = tmp.path().join("root.img");
    let out = Command::new("cp")
        .arg("--sparse=always")
        .arg(&image)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fx = Fixture {
        _tmp: tmp,
        data_dir,
        image: copy,
    };
    let Some(engine) = engine(&fx.data_dir) else {
        return;
    };
    let id = instance_id();
    let spec = spec(&fx, &id);
    let events = Arc::new(Events::default());
    let t0 = Instant::now();
    let machine = engine.launch(spec, events.sink()).expect("launch");
    events.wait("Started", Duration::from_secs(30), |e| {
        e.contains(&MachineEvent::Started)
    });
    let text = wait_console(machine.as_ref(), " login: ", 1, Duration::from_secs(180));
    eprintln!("debian-12 login prompt after {:?}", t0.elapsed());
    assert!(text.contains("Welcome to"), "{text}");
    assert!(text.contains("multi-user.target"), "{text}");
    assert!(!text.contains('\r'), "console keeps \\r");
    machine.reboot();
    events.wait("Rebooted", Duration::from_secs(60), |e| {
        e.contains(&MachineEvent::Rebooted)
    });
    let text = wait_console(machine.as_ref(), " login: ", 2, Duration::from_secs(180));
    assert!(text.contains("Rebooting."), "{text}");
    let t1 = Instant::now();
    machine.shutdown(Duration::from_secs(10));
    events.wait("PoweredOff", Duration::from_secs(15), |e| {
        e.contains(&MachineEvent::PoweredOff)
    });
    eprintln!("debian-12 PoweredOff {:?} after shutdown", t1.elapsed());
    assert!(t1.elapsed() < Duration::from_secs(10), "needed the grace");
    let text = String::from_utf8_lossy(&machine.console()).into_owned();
    assert!(text.contains("Powering off."), "{text}");
    assert_eq!(
        events.snapshot(),
        vec![
            MachineEvent::Started,
            MachineEvent::Rebooted,
            MachineEvent::PoweredOff
        ]
    );
    assert_clean(&id, &fx.image);
}

/// A rough scale figure, not run by default: `SANDBOX_N=100 cargo test --test sandbox --
/// --ignored many --nocapture`. Launches N machines from one image copy each, waits for
/// every ready line, prints latency and memory, shuts them all down and checks the host.
#[test]
#[ignore]
fn many_machines() {
    let Some((fx, engine)) = setup(INIT) else {
        return;
    };
    let n: usize = std::env::var("SANDBOX_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut specs = Vec::new();
    for _ in 0..n {
        let id = instance_id();
        let mut s = spec(&fx, &id);
        s.root_disk = fx.data_dir.join(format!("volumes/{id}.img"));
        let out = Command::new("cp")
            .args(["--sparse=always"])
            .arg(&fx.image)
            .arg(&s.root_disk)
            .status()
            .unwrap();
        assert!(out.success());
        specs.push(s);
    }
    let events = Arc::new(Events::default());
    let t0 = Instant::now();
    let machines: Vec<_> = specs
        .iter()
        .map(|s| engine.launch(s.clone(), events.sink()).expect("launch"))
        .collect();
    let launched = t0.elapsed();
    events.wait("all Started", Duration::from_secs(120), |e| e.len() >= n);
    let started = t0.elapsed();
    for (m, s) in machines.iter().zip(&specs) {
        let ready = format!("ready: instance {} is up", s.instance_id);
        wait_console(m.as_ref(), &ready, 1, Duration::from_secs(60));
    }
    let ready = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let mut rss_kib = 0u64;
    let mut cg_bytes = 0u64;
    for s in &specs {
        let pids = std::fs::read_to_string(
            Path::new("/sys/fs/cgroup/pids/ec2d")
                .join(&s.instance_id)
                .join("cgroup.procs"),
        )
        .unwrap_or_default();
        for pid in pids.lines() {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            rss_kib += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        cg_bytes += std::fs::read_to_string(
            Path::new("/sys/fs/cgroup/memory/ec2d")
                .join(&s.instance_id)
                .join("memory.usage_in_bytes"),
        )
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    }
    eprintln!(
        "{n} machines: launch() calls {launched:?}, all Started {started:?}, all ready {ready:?}; \
         per machine: RSS {} KiB (shared pages counted each time), memory cgroup {} KiB",
        rss_kib / n as u64,
        cg_bytes / 1024 / n as u64
    );
    let t1 = Instant::now();
    for m in &machines {
        m.shutdown(Duration::from_secs(10));
    }
    events.wait("all PoweredOff", Duration::from_secs(60), |e| {
        e.iter().filter(|e| **e == MachineEvent::PoweredOff).count() >= n
    });
    eprintln!("{n} machines powered off in {:?}", t1.elapsed());
    for s in &specs {
        assert_clean(&s.instance_id, &s.root_disk);
    }
}

/// Whether a NUL-separated command line carries the engine's tag for `id`
/// (`ec2d-sandbox:<scope>:<id>`).
fn is_tagged(cmdline: &[u8], id: &str) -> bool {
    let suffix = format!(":{id}");
    cmdline.split(|&b| b == 0).any(|a| {
        let a = String::from_utf8_lossy(a);
        a.starts_with("ec2d-sandbox:") && a.ends_with(&suffix)
    })
}

/// The `unshare` process of a machine, found the way an outsider would.
fn unshare_pid(id: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let is_unshare = cmd.split(|&b| b == 0).next()?.ends_with(b"unshare");
        (is_unshare && is_tagged(&cmd, id)).then_some(pid)
    })
}
