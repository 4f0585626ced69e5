//! A read-mostly MC146818 CMOS RTC at ports 0x70/0x71.
//!
//! Its only job is to give the guest a consistent clock without spinning:
//! "update in progress" is never set, so a reader needs one pass.

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default)]
pub struct Rtc {
    index: u8,
    /// Plain CMOS RAM for everything that is not a clock register.
    ram: Ram,
    /// Offset (seconds) the guest applied by writing the clock.
    offset: i64,
}

/// CMOS RAM; a newtype because arrays this long have no Default.
struct Ram([u8; 128]);

impl Default for Ram {
    fn default() -> Self {
        Ram([0; 128])
    }
}

const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
/// Register B: 24-hour mode; BCD (bit 2 clear).
const REG_B_24H: u8 = 1 << 1;

fn bcd(v: u64) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

fn from_bcd(v: u8) -> u64 {
    u64::from(v >> 4) * 10 + u64::from(v & 0xf)
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Rtc {
    pub fn new() -> Self {
        Self::default()
    }

    fn now(&self) -> i64 {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        secs + self.offset
    }

    fn clock_fields(t: i64) -> [u8; 10] {
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400) as u64;
        let (y, m, d) = civil_from_days(days);
        let wday = (days + 4).rem_euclid(7) as u64 + 1; // 1970-01-01 was a Thursday
        let mut f = [0u8; 10];
        f[0] = bcd(secs % 60);
        f[2] = bcd(secs / 60 % 60);
        f[4] = bcd(secs / 3600);
        f[6] = bcd(wday);
        f[7] = bcd(u64::from(d));
        f[8] = bcd(u64::from(m));
        f[9] = bcd(y.rem_euclid(100) as u64);
        f
    }

    pub fn read(&mut self, port_offset: u8) -> u8 {
        if port_offset == 0 {
            return self.index;
        }
        match self.index {
            0 | 2 | 4 | 6..=9 => Self::clock_fields(self.now())[self.index as usize],
            // Alarm registers read back what was written.
            1 | 3 | 5 => self.ram.0[self.index as usize],
            // Divider set for 32.768 kHz, UIP never set.
            REG_A => 0x26,
            REG_B => REG_B_24H,
            REG_C => 0,
            // Valid RAM and time.
            REG_D => 0x80,
            0x32 => {
                let (y, _, _) = civil_from_days(self.now().div_euclid(86_400));
                bcd((y / 100) as u64)
            }
            i => self.ram.0[usize::from(i & 0x7f)],
        }
    }

    pub fn write(&mut self, port_offset: u8, value: u8) {
        if port_offset == 0 {
            // Bit 7 is the NMI mask, not part of the index.
            self.index = value & 0x7f;
            return;
        }
        match self.index {
            0 | 2 | 4 | 7 | 8 | 9 => {
                // The guest set the clock: keep the offset it implies.
                let mut f = Self::clock_fields(self.now());
                f[self.index as usize] = value;
                let year = 2000 + from_bcd(f[9]) as i64;
                let days = days_from_civil(year, from_bcd(f[8]) as u32, from_bcd(f[7]) as u32);
                let t = days * 86_400
                    + (from_bcd(f[4]) * 3600 + from_bcd(f[2]) * 60 + from_bcd(f[0])) as i64;
                let real = self.now() - self.offset;
                self.offset = t - real;
            }
            REG_A | REG_B | REG_C | REG_D => {}
            i => self.ram.0[usize::from(i & 0x7f)] = value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        let f = Rtc::clock_fields(1_700_000_000); // 2023-11-14 22:13:20 UTC, Tuesday
        assert_eq!(&f[..], &[0x20, 0, 0x13, 0, 0x22, 0, 0x03, 0x14, 0x11, 0x23]);
    }

    #[test]
    fn registers() {
        let mut r = Rtc::new();
        r.write(0, 0x8a);
        assert_eq!(r.read(0), 0x0a);
        assert_eq!(r.read(1) & 0x80, 0, "UIP must be clear");
        r.write(0, 0x0d);
        assert_eq!(r.read(1), 0x80);
        r.write(0, 0x20);
        r.write(1, 0x5a);
        assert_eq!(r.read(1), 0x5a);
    }
}
