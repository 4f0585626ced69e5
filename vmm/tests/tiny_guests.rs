//! Tiny-guest integration tests on this machine's /dev/kvm.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{build_guest, kvm_skip_reason, skip};
use vmm::{ChannelBackend, Console, SmbiosIdentity, Vm, VmBuilder, VmEvent, VmExit};

const TIMEOUT: Duration = Duration::from_secs(60);

macro_rules! require_kvm {
    ($name:expr) => {
        if let Some(why) = kvm_skip_reason() {
            skip($name, &why);
            return;
        }
    };
}

fn guest(name: &str, body: &str) -> Option<std::path::PathBuf> {
    match build_guest(name, body) {
        Ok(p) => Some(p),
        Err(e) => {
            skip(name, &format!("cannot build the tiny guest: {e}"));
            None
        }
    }
}

fn run_to_exit(vm: &Vm) -> VmExit {
    match vm.wait(TIMEOUT) {
        Some(e) => e,
        None => {
            let text = vm.console().text();
            vm.kill();
            panic!("guest did not stop within {TIMEOUT:?}; console: {text:?}");
        }
    }
}

#[test]
fn serial_boot_timer_and_poweroff() {
    require_kvm!("serial_boot_timer_and_poweroff");
    let Some(kernel) = guest(
        "hello",
        r#"
_start:
    mov $0x01, %al
    call timer
    lea msg(%rip), %rsi
    call print
    mov $0x02, %al
    call timer
    mov $0xd0fff000, %ebx
    movb $0x03, (%rbx)
    call poweroff
msg: .asciz "Hello from the tiny guest\n"
"#,
    ) else {
        return;
    };
    let console = Console::new(4096);
    let vm = Vm::start(
        VmBuilder::new(kernel)
            .memory_mib(32)
            .console(console.clone())
            .rng(false)
            .build(),
    )
    .expect("start");
    let events = vm.subscribe();
    assert_eq!(run_to_exit(&vm), VmExit::PoweredOff);
    assert_eq!(console.text(), "Hello from the tiny guest\n");
    let t = vm.boot_timer_writes();
    assert_eq!(t.iter().map(|w| w.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(t[0].1 <= t[1].1);
    let all: Vec<VmEvent> = events.try_iter().collect();
    let timer_values: Vec<u8> = all
        .iter()
        .filter_map(|e| match e {
            VmEvent::BootTimer { value, .. } => Some(*value),
            _ => None,
        })
        .collect();
    assert_eq!(timer_values, vec![1, 2, 3]);
    let evs: Vec<VmEvent> = all
        .into_iter()
        .filter(|e| !matches!(e, VmEvent::BootTimer { .. }))
        .collect();
    assert_eq!(
        evs,
        vec![
            VmEvent::Started,
            VmEvent::PoweredOff,
            VmEvent::Stopped(VmExit::PoweredOff)
        ]
    );
    eprintln!("setup time {:?}, boot timer {:?}", vm.setup_time(), t);
    eprintln!("exits: {:?}", vm.exit_stats().summary());
}

const RESET_GUEST: &str = r#"
_start:
    lea msg(%rip), %rsi
    call print
    mov $0x64, %dx
    mov $0xfe, %al
    out %al, %dx
1:  hlt
    jmp 1b
msg: .asciz "resetting\n"
"#;

#[test]
fn i8042_reset_stops_or_reboots() {
    require_kvm!("i8042_reset_stops_or_reboots");
    let Some(kernel) = guest("reset", RESET_GUEST) else {
        return;
    };

    // Without restart: the VM stops with Rebooted.
    let vm = Vm::start(
        VmBuilder::new(&kernel)
            .memory_mib(32)
            .rng(false)
            .restart_on_reboot(false)
            .build(),
    )
    .expect("start");
    assert_eq!(run_to_exit(&vm), VmExit::Rebooted);
    assert_eq!(vm.console().text(), "resetting\n");

    // With restart: it boots again in place, keeping one console.
    let vm = Vm::start(VmBuilder::new(&kernel).memory_mib(32).rng(false).build()).expect("start");
    let events = vm.subscribe();
    let mut starts = 0;
    while starts < 3 {
        match events.recv_timeout(TIMEOUT).expect("event") {
            VmEvent::Started => starts += 1,
            VmEvent::Rebooted | VmEvent::BootTimer { .. } => {}
            e => panic!("unexpected event {e:?}"),
        }
    }
    vm.kill();
    assert_eq!(run_to_exit(&vm), VmExit::Killed);
    assert!(vm.console().text().matches("resetting\n").count() >= 2);
}

#[test]
fn cmos_rtc_reads_without_spinning() {
    require_kvm!("cmos_rtc_reads_without_spinning");
    // Reads register A (UIP must be clear), D (valid), and the BCD year.
    let Some(kernel) = guest(
        "rtc",
        r#"
_start:
    mov $0x0a, %al
    out %al, $0x70
    in $0x71, %al
    test $0x80, %al
    jnz bad
    mov $0x0d, %al
    out %al, $0x70
    in $0x71, %al
    cmp $0x80, %al
    jne bad
    mov $0x09, %al
    out %al, $0x70
    in $0x71, %al
    mov %al, %bl
    shr $4, %al
    add $'0', %al
    mov %al, year(%rip)
    mov %bl, %al
    and $0x0f, %al
    add $'0', %al
    mov %al, year+1(%rip)
    lea ok(%rip), %rsi
    call print
    call poweroff
bad:
    lea nok(%rip), %rsi
    call print
    call poweroff
ok: .ascii "RTC OK year="
year: .asciz "??\n"
nok: .asciz "RTC BAD\n"
"#,
    ) else {
        return;
    };
    let vm = Vm::start(VmBuilder::new(kernel).memory_mib(32).rng(false).build()).expect("start");
    assert_eq!(run_to_exit(&vm), VmExit::PoweredOff);
    let text = vm.console().text();
    let now_yy = {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Good enough near the present: 365.2425-day years.
        (1970 + (secs as f64 / 31_556_952.0) as u64) % 100
    };
    assert_eq!(text, format!("RTC OK year={now_yy:02}\n"));
    let ports: Vec<_> = vm.exit_stats().summary();
    eprintln!("exits: {ports:?}");
}

/// Shared driver code: brings up virtio-mmio device at %rbx with queues
/// described by the caller, using polled I/O.
const VIRTIO_INIT: &str = r#"
    # %rbx = device base
virtio_begin:
    movl $0, 0x70(%rbx)
    movl $1, 0x70(%rbx)
    movl $3, 0x70(%rbx)
    movl $1, 0x24(%rbx)
    movl $1, 0x20(%rbx)      # VIRTIO_F_VERSION_1 (bit 32)
    movl $0, 0x24(%rbx)
    movl $0, 0x20(%rbx)
    movl $0xb, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    test $8, %eax
    jz bad
    ret
    # %ecx = queue index, %edx = base of desc table (avail +0x1000, used +0x2000)
virtio_queue:
    movl %ecx, 0x30(%rbx)
    movl $8, 0x38(%rbx)
    movl %edx, 0x80(%rbx)
    movl $0, 0x84(%rbx)
    lea 0x1000(%rdx), %eax
    movl %eax, 0x90(%rbx)
    movl $0, 0x94(%rbx)
    lea 0x2000(%rdx), %eax
    movl %eax, 0xa0(%rbx)
    movl $0, 0xa4(%rbx)
    movl $1, 0x44(%rbx)
    ret
virtio_go:
    movl $0xf, 0x70(%rbx)
    ret
    # desc(%rdi = table, %esi = index, %r8 = addr, %r9d = len, %r10w = flags, %r11w = next)
desc:
    mov %esi, %eax
    shl $4, %eax
    add %rdi, %rax
    mov %r8, (%rax)
    mov %r9d, 8(%rax)
    mov %r10w, 12(%rax)
    mov %r11w, 14(%rax)
    ret
    # avail_push(%rdi = avail ring, %si = head): ring[idx % 8] = head; idx++
avail_push:
    movzwl 2(%rdi), %eax
    mov %eax, %ecx
    and $7, %ecx
    mov %si, 4(%rdi,%rcx,2)
    inc %eax
    mov %ax, 2(%rdi)
    ret
    # wait_used(%rdi = used ring, %eax = idx to reach); jumps to bad on timeout
wait_used:
    mov $20000000, %ecx
1:  movzwl 2(%rdi), %edx
    cmp %eax, %edx
    jae 2f
    pause
    dec %ecx
    jnz 1b
    jmp bad
2:  ret
"#;

#[test]
fn virtio_blk_write_flush_read() {
    require_kvm!("virtio_blk_write_flush_read");
    let body = format!(
        r#"
_start:
    mov $0xd0000000, %ebx
    call virtio_begin
    xor %ecx, %ecx
    mov $0x200000, %edx
    call virtio_queue
    call virtio_go
    # request headers: write sector 1, flush, read sector 1
    movl $1, 0x210000
    movq $1, 0x210008
    movl $4, 0x210100
    movl $0, 0x210200
    movq $1, 0x210208
    # 512 bytes of pattern at 0x211000
    mov $0x211000, %edi
    mov $64, %ecx
    mov pattern(%rip), %rax
1:  mov %rax, (%rdi)
    add $8, %rdi
    dec %ecx
    jnz 1b
    movb $0xff, 0x212000
    movb $0xff, 0x212001
    movb $0xff, 0x212002
    mov $0x200000, %edi
    # write: 0 -> 1 -> 2
    mov $0, %esi; mov $0x210000, %r8; mov $16, %r9d; mov $1, %r10w; mov $1, %r11w; call desc
    mov $1, %esi; mov $0x211000, %r8; mov $512, %r9d; mov $1, %r10w; mov $2, %r11w; call desc
    mov $2, %esi; mov $0x212000, %r8; mov $1, %r9d; mov $2, %r10w; mov $0, %r11w; call desc
    # flush: 3 -> 4
    mov $3, %esi; mov $0x210100, %r8; mov $16, %r9d; mov $1, %r10w; mov $4, %r11w; call desc
    mov $4, %esi; mov $0x212001, %r8; mov $1, %r9d; mov $2, %r10w; mov $0, %r11w; call desc
    # read: 5 -> 6 -> 7
    mov $5, %esi; mov $0x210200, %r8; mov $16, %r9d; mov $1, %r10w; mov $6, %r11w; call desc
    mov $6, %esi; mov $0x213000, %r8; mov $512, %r9d; mov $3, %r10w; mov $7, %r11w; call desc
    mov $7, %esi; mov $0x212002, %r8; mov $1, %r9d; mov $2, %r10w; mov $0, %r11w; call desc
    mov $0x201000, %edi
    mov $0, %si; call avail_push
    movl $0, 0x50(%rbx)
    mov $0x202000, %edi; mov $1, %eax; call wait_used
    mov $0x201000, %edi
    mov $3, %si; call avail_push
    movl $0, 0x50(%rbx)
    mov $0x202000, %edi; mov $2, %eax; call wait_used
    mov $0x201000, %edi
    mov $5, %si; call avail_push
    movl $0, 0x50(%rbx)
    mov $0x202000, %edi; mov $3, %eax; call wait_used
    cmpb $0, 0x212000
    jne bad
    cmpb $0, 0x212001
    jne bad
    cmpb $0, 0x212002
    jne bad
    mov pattern(%rip), %rax
    cmp %rax, 0x213000
    jne bad
    cmp %rax, 0x2131f8
    jne bad
    lea ok(%rip), %rsi
    call print
    call poweroff
bad:
    lea nok(%rip), %rsi
    call print
    call poweroff
pattern: .ascii "TINYBLK!"
ok: .asciz "BLK OK\n"
nok: .asciz "BLK BAD\n"
{VIRTIO_INIT}
"#
    );
    let Some(kernel) = guest("blk", &body) else {
        return;
    };
    let disk = std::env::temp_dir().join(format!("vmm-tiny-disk-{}", std::process::id()));
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let vm = Vm::start(
        VmBuilder::new(kernel)
            .memory_mib(32)
            .rng(false)
            .disk(&disk, false, "tiny-disk")
            .build(),
    )
    .expect("start");
    assert_eq!(run_to_exit(&vm), VmExit::PoweredOff);
    assert_eq!(vm.console().text(), "BLK OK\n");
    let data = std::fs::read(&disk).unwrap();
    std::fs::remove_file(&disk).unwrap();
    assert_eq!(&data[512..520], b"TINYBLK!");
    assert_eq!(&data[1016..1024], b"TINYBLK!");
    assert!(data[..512].iter().all(|b| *b == 0));
}

#[test]
fn virtio_net_echo_through_backend() {
    require_kvm!("virtio_net_echo_through_backend");
    let body = format!(
        r#"
_start:
    mov $0xd0000000, %ebx
    call virtio_begin
    xor %ecx, %ecx
    mov $0x200000, %edx
    call virtio_queue
    mov $1, %ecx
    mov $0x300000, %edx
    call virtio_queue
    call virtio_go
    # RX buffer: 2048 bytes at 0x220000
    mov $0x200000, %edi
    mov $0, %esi; mov $0x220000, %r8; mov $2048, %r9d; mov $2, %r10w; mov $0, %r11w; call desc
    mov $0x201000, %edi
    mov $0, %si; call avail_push
    movl $0, 0x50(%rbx)
    # TX: 12-byte header + 60-byte frame at 0x230000
    mov $0x230000, %edi
    xor %eax, %eax
    mov $9, %ecx
    rep stosq
    lea frame(%rip), %rsi
    mov $0x23000c, %edi
    mov $60, %ecx
    rep movsb
    mov $0x300000, %edi
    mov $0, %esi; mov $0x230000, %r8; mov $72, %r9d; mov $0, %r10w; mov $0, %r11w; call desc
    mov $0x301000, %edi
    mov $0, %si; call avail_push
    movl $1, 0x50(%rbx)
    # wait for the echo
    mov $0x202000, %edi; mov $1, %eax; call wait_used
    cmpl $72, 0x202008
    jne bad
    lea frame(%rip), %rsi
    mov $0x22000c, %edi
    mov $60, %ecx
    repe cmpsb
    jne bad
    lea ok(%rip), %rsi
    call print
    call poweroff
bad:
    lea nok(%rip), %rsi
    call print
    call poweroff
frame: .ascii "\xff\xff\xff\xff\xff\xff\x02\x00\x00\x00\x00\x01\x88\xb5"
       .ascii "tiny guest frame, echoed by the host backend......"
       .byte 0,0,0,0,0,0,0,0,0,0
ok: .asciz "NET OK\n"
nok: .asciz "NET BAD\n"
{VIRTIO_INIT}
"#
    );
    let Some(kernel) = guest("net", &body) else {
        return;
    };
    let (backend, peer) = ChannelBackend::new();
    let echo = std::thread::spawn(move || {
        let f = peer
            .from_guest
            .recv_timeout(TIMEOUT)
            .expect("frame from guest");
        peer.to_guest.send(f.clone()).unwrap();
        f
    });
    let vm = Vm::start(
        VmBuilder::new(kernel)
            .memory_mib(32)
            .rng(false)
            .nic([2, 0, 0, 0, 0, 1], Arc::new(backend))
            .smbios(SmbiosIdentity {
                uuid: Some("ec2a1b2c-3d4e-5f60-7182-93a4b5c6d7e8".into()),
                ..Default::default()
            })
            .build(),
    )
    .expect("start");
    assert_eq!(run_to_exit(&vm), VmExit::PoweredOff);
    assert_eq!(vm.console().text(), "NET OK\n");
    let f = echo.join().unwrap();
    assert_eq!(f.len(), 60);
    assert_eq!(&f[..6], &[0xff; 6]);
}

/// VIRTIO_NET_F_MRG_RXBUF and VIRTIO_NET_F_MTU as a driver sees them: the guest finds both
/// offered and the MTU (9001) in the config space, negotiates them, posts eight 2 KiB RX
/// buffers, and receives a 9015-byte frame (the MTU plus the Ethernet header) in five of them,
/// `num_buffers` = 5 in the header, after a 9016-byte frame that the device must drop. It sends
/// the received bytes straight back as one TX chain, which the host compares with what it sent.
#[test]
fn virtio_net_mergeable_rx_buffers_carry_a_jumbo_frame() {
    require_kvm!("virtio_net_mergeable_rx_buffers_carry_a_jumbo_frame");
    let body = format!(
        r#"
_start:
    mov $0xd0000000, %ebx
    # Offered: MTU (bit 3) and MRG_RXBUF (bit 15); the MTU in the config space is 9001.
    movl $0, 0x14(%rbx)
    mov 0x10(%rbx), %eax
    and $0x8008, %eax
    cmp $0x8008, %eax
    jne bad
    movzwl 0x10a(%rbx), %eax
    cmp $9001, %eax
    jne bad
    movl $0, 0x70(%rbx)
    movl $1, 0x70(%rbx)
    movl $3, 0x70(%rbx)
    movl $1, 0x24(%rbx)
    movl $1, 0x20(%rbx)      # VIRTIO_F_VERSION_1
    movl $0, 0x24(%rbx)
    movl $0x8008, 0x20(%rbx) # MRG_RXBUF | MTU
    movl $0xb, 0x70(%rbx)
    mov 0x70(%rbx), %eax
    test $8, %eax
    jz bad
    xor %ecx, %ecx
    mov $0x200000, %edx
    call virtio_queue
    mov $1, %ecx
    mov $0x300000, %edx
    call virtio_queue
    call virtio_go
    # Eight device-writable 2048-byte buffers, back to back from 0x220000.
    xor %esi, %esi
1:  mov $0x200000, %edi
    mov %esi, %r8d
    shl $11, %r8
    add $0x220000, %r8
    mov $2048, %r9d; mov $2, %r10w; xor %r11d, %r11d
    call desc
    mov $0x201000, %edi
    call avail_push
    inc %esi
    cmp $8, %esi
    jne 1b
    movl $0, 0x50(%rbx)
    # Ready: the host sends its frames now (a device reset would have dropped earlier ones).
    mov $1, %al
    call timer
    # 12 + 9015 bytes: five buffers, four full and one of 835 bytes.
    mov $0x202000, %edi; mov $5, %eax; call wait_used
    cmpw $5, 0x202002
    jne bad
    cmpw $5, 0x22000a
    jne bad
    cmpl $2048, 0x202008
    jne bad
    cmpl $2048, 0x202020
    jne bad
    cmpl $835, 0x202028
    jne bad
    # Back to the host: the buffers are contiguous, so the header and frame are one run.
    mov $0x300000, %edi
    mov $0, %esi; mov $0x220000, %r8; mov $9027, %r9d; mov $0, %r10w; mov $0, %r11w; call desc
    mov $0x301000, %edi
    mov $0, %si; call avail_push
    movl $1, 0x50(%rbx)
    mov $0x302000, %edi; mov $1, %eax; call wait_used
    lea ok(%rip), %rsi
    call print
    call poweroff
bad:
    lea nok(%rip), %rsi
    call print
    call poweroff
ok: .asciz "NET JUMBO OK\n"
nok: .asciz "NET JUMBO BAD\n"
{VIRTIO_INIT}
"#
    );
    let Some(kernel) = guest("net-jumbo", &body) else {
        return;
    };
    let frame = |len: usize| -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
        f.extend((14..len).map(|i| (i * 7 + i / 256) as u8));
        f
    };
    let (backend, peer) = ChannelBackend::new();
    let vm = Vm::start(
        VmBuilder::new(kernel)
            .memory_mib(32)
            .rng(false)
            .nic_with_mtu([2, 0, 0, 0, 0, 1], Arc::new(backend), 9001)
            .build(),
    )
    .expect("start");
    let events = vm.subscribe();
    let ready = events
        .iter()
        .take_while(|e| !matches!(e, VmEvent::Stopped(_)))
        .any(|e| matches!(e, VmEvent::BootTimer { .. }));
    assert!(
        ready,
        "the guest stopped before posting its buffers: {:?}",
        vm.console().text()
    );
    peer.to_guest.send(frame(9016)).unwrap();
    peer.to_guest.send(frame(9015)).unwrap();
    assert_eq!(run_to_exit(&vm), VmExit::PoweredOff);
    assert_eq!(vm.console().text(), "NET JUMBO OK\n");
    let echoed = peer
        .from_guest
        .recv_timeout(Duration::from_secs(1))
        .expect("the echo");
    assert_eq!(echoed.len(), 9015);
    assert!(
        echoed == frame(9015),
        "the echo differs from the frame sent"
    );
}

#[test]
fn pause_resume_and_kill() {
    require_kvm!("pause_resume_and_kill");
    let Some(kernel) = guest(
        "spin",
        r#"
_start:
    lea msg(%rip), %rsi
    call print
1:  jmp 1b
msg: .asciz "spinning\n"
"#,
    ) else {
        return;
    };
    let vm = Vm::start(VmBuilder::new(kernel).memory_mib(32).rng(false).build()).expect("start");
    let deadline = std::time::Instant::now() + TIMEOUT;
    while vm.console().text() != "spinning\n" {
        assert!(std::time::Instant::now() < deadline, "guest never printed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(vm.pause());
    assert_eq!(vm.state(), vmm::VmState::Paused);
    vm.resume();
    assert_eq!(vm.state(), vmm::VmState::Running);
    let exit = vm.shutdown(Duration::from_millis(200));
    assert_eq!(exit, VmExit::Killed);
}
