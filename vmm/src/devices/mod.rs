//! Platform devices on the I/O port bus: COM1, i8042 (reset only), CMOS RTC,
//! the ACPI sleep/reset register, and the boot-timer port.

pub mod rtc;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vm_superio::{I8042Device, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::acpi::{RESET_VALUE, SLEEP_CONTROL_S5};
use crate::layout::*;

/// What a device asked the VMM to do to the whole VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestRequest {
    PowerOff,
    Reset,
}

/// Raises a guest interrupt through a KVM irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Latches the i8042's CPU-reset command.
#[derive(Clone, Default)]
pub struct ResetLatch(Arc<AtomicBool>);

impl Trigger for ResetLatch {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Records when the guest first wrote the boot-timer port, and every write.
/// Called on the first few boot-timer writes of a boot (value, time).
pub type BootTimerHook = Box<dyn Fn(u8, std::time::Duration) + Send + Sync>;

pub struct BootTimer {
    start: Instant,
    /// Nanoseconds since start of the first write; 0 if none yet.
    first_ns: AtomicU64,
    writes: Mutex<Vec<(u8, std::time::Duration)>>,
    hook: Option<BootTimerHook>,
}

/// Writes per boot passed to the hook; more would let a guest flood the
/// event stream.
const HOOKED_WRITES: usize = 16;

impl BootTimer {
    pub fn new(start: Instant) -> Self {
        BootTimer {
            start,
            first_ns: AtomicU64::new(0),
            writes: Mutex::new(Vec::new()),
            hook: None,
        }
    }

    pub fn with_hook(start: Instant, hook: BootTimerHook) -> Self {
        BootTimer {
            hook: Some(hook),
            ..Self::new(start)
        }
    }
    pub fn record(&self, value: u8) {
        let el = self.start.elapsed();
        let _ = self.first_ns.compare_exchange(
            0,
            (el.as_nanos() as u64).max(1),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        let n = {
            let mut w = self.writes.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded: a guest looping on the port must not grow host memory.
            if w.len() < 1024 {
                w.push((value, el));
            }
            w.len()
        };
        if n <= HOOKED_WRITES
            && let Some(h) = &self.hook
        {
            h(value, el);
        }
        tracing::info!(
            value,
            elapsed_us = el.as_micros() as u64,
            "guest boot-timer write"
        );
    }
    pub fn writes(&self) -> Vec<(u8, std::time::Duration)> {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

pub type SerialDevice = Serial<IrqTrigger, vm_superio::serial::NoEvents, Box<dyn Write + Send>>;

pub struct PioDevices {
    pub serial: Mutex<SerialDevice>,
    i8042: Mutex<I8042Device<ResetLatch>>,
    reset_latch: ResetLatch,
    rtc: Mutex<rtc::Rtc>,
    pub boot_timer: Arc<BootTimer>,
}

impl PioDevices {
    pub fn new(
        serial_irq: EventFd,
        console: Box<dyn Write + Send>,
        boot_timer: Arc<BootTimer>,
    ) -> Self {
        let latch = ResetLatch::default();
        PioDevices {
            serial: Mutex::new(Serial::new(IrqTrigger(serial_irq), console)),
            i8042: Mutex::new(I8042Device::new(latch.clone())),
            reset_latch: latch,
            rtc: Mutex::new(rtc::Rtc::new()),
            boot_timer,
        }
    }

    /// Handles an IN; unclaimed ports read as all-ones, like an empty ISA bus.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        let Some(first) = data.first_mut() else {
            return;
        };
        match port {
            PORT_COM1..=0x3ff => {
                let mut s = self.serial.lock().unwrap_or_else(|e| e.into_inner());
                *first = s.read((port - PORT_COM1) as u8);
            }
            PORT_I8042_DATA => *first = 0,
            PORT_I8042_CMD => {
                let mut k = self.i8042.lock().unwrap_or_else(|e| e.into_inner());
                *first = k.read(0);
            }
            PORT_CMOS_INDEX | PORT_CMOS_DATA => {
                let mut r = self.rtc.lock().unwrap_or_else(|e| e.into_inner());
                *first = r.read((port - PORT_CMOS_INDEX) as u8);
            }
            PORT_ACPI_PM => *first = 0,
            _ => {}
        }
    }

    pub fn write(&self, port: u16, data: &[u8]) -> Option<GuestRequest> {
        let &value = data.first()?;
        match port {
            PORT_COM1..=0x3ff => {
                let mut s = self.serial.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = s.write((port - PORT_COM1) as u8, value) {
                    tracing::warn!("serial write: {e:?}");
                }
            }
            PORT_I8042_DATA | PORT_I8042_CMD => {
                let mut k = self.i8042.lock().unwrap_or_else(|e| e.into_inner());
                let _ = k.write((port - PORT_I8042_DATA) as u8, value);
                if self.reset_latch.0.swap(false, Ordering::SeqCst) {
                    return Some(GuestRequest::Reset);
                }
            }
            PORT_CMOS_INDEX | PORT_CMOS_DATA => {
                let mut r = self.rtc.lock().unwrap_or_else(|e| e.into_inner());
                r.write((port - PORT_CMOS_INDEX) as u8, value);
            }
            PORT_ACPI_PM => {
                if value == RESET_VALUE {
                    return Some(GuestRequest::Reset);
                }
                if value == SLEEP_CONTROL_S5 {
                    return Some(GuestRequest::PowerOff);
                }
            }
            PORT_BOOT_TIMER => self.boot_timer.record(value),
            _ => {}
        }
        None
    }
}
