//! Builds tiny purpose-built guests from assembly with the system assembler,
//! so that the tests exercise the VMM on any /dev/kvm, PVM included.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Subroutines every guest gets: `print` (string at %rsi to COM1),
/// `poweroff` (ACPI S5 through the sleep control register), `timer` (%al to
/// the boot-timer port).
pub const PRELUDE: &str = r#"
    .code64
    .text
    .globl _start
    .set COM1, 0x3f8
    .set ACPI_PM, 0x3c0
    .set BOOT_TIMER, 0x440
print:
    mov $COM1, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  ret
poweroff:
    mov $ACPI_PM, %dx
    mov $0x34, %al
    out %al, %dx
3:  hlt
    jmp 3b
timer:
    mov $BOOT_TIMER, %dx
    out %al, %dx
    ret
"#;

pub enum Skip {
    Reason(String),
}

/// Returns a reason to skip if this machine cannot run tiny guests.
pub fn kvm_skip_reason() -> Option<String> {
    match vmm::detect_kvm() {
        vmm::KvmKind::Unavailable(e) => Some(format!("/dev/kvm is not usable: {e}")),
        _ => None,
    }
}

pub fn skip(test: &str, why: &str) {
    eprintln!("\n********************************************************************");
    eprintln!("*** SKIPPED {test}: {why}");
    eprintln!("********************************************************************\n");
}

/// Assembles `body` (with the prelude) into an ELF loaded at 1 MiB.
pub fn build_guest(name: &str, body: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("vmm-tiny-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let src = dir.join(format!("{name}.S"));
    let obj = dir.join(format!("{name}.o"));
    let elf = dir.join(format!("{name}.elf"));
    std::fs::write(&src, format!("{PRELUDE}\n{body}\n")).map_err(|e| e.to_string())?;
    let out = Command::new("as")
        .args(["--64", "-o"])
        .arg(&obj)
        .arg(&src)
        .output()
        .map_err(|e| format!("cannot run `as` (binutils): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "as failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let out = Command::new("ld")
        .args(["-N", "-static", "-e", "_start", "-Ttext=0x100000", "-o"])
        .arg(&elf)
        .arg(&obj)
        .output()
        .map_err(|e| format!("cannot run `ld` (binutils): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ld failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(elf)
}
