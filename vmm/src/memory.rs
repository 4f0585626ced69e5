//! Guest RAM: anonymous, private, MAP_NORESERVE mappings, so pages cost host
//! memory only once the guest touches them.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::layout::{MMIO_GAP_END, MMIO_GAP_START};

pub type GuestMem = GuestMemoryMmap<()>;

/// RAM ranges for `size` bytes: below the 32-bit MMIO hole, then above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize),
        ]
    }
}

pub fn create(size: u64) -> Result<GuestMem, vm_memory::mmap::FromRangesError> {
    // vm-memory's anonymous regions are MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE:
    // lazily backed, which is what makes a mostly idle 1 GiB guest cheap.
    GuestMemoryMmap::from_ranges(&ram_ranges(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_around_hole() {
        assert_eq!(ram_ranges(1 << 30).len(), 1);
        let r = ram_ranges(4 << 30);
        assert_eq!(r[1].0, GuestAddress(1 << 32));
        assert_eq!(r[0].1 as u64 + r[1].1 as u64, 4 << 30);
    }
}
