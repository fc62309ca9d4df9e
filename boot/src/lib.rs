//! The bridge's machine-independent logic, tested on the host (`cargo test -p bridge`).
//!
//! The `limine-bridge` binary (src/main.rs, src/arch/) does the hardware part: the Multiboot2
//! entry, long mode, the CPU and APIC programming, and the hand-off. Everything that decides
//! something from data GRUB or the kernel gave us lives here, as plain functions over byte
//! slices and numbers.

#![cfg_attr(not(test), no_std)]

pub mod acpi;
pub mod fixed;
pub mod layout;
pub mod mbi;
pub mod memmap;
pub mod modstring;
pub mod paging;
pub mod protocol;
pub mod requests;

#[cfg(test)]
mod tests {
    /// A small kernel-like ELF image: text R-X (0x1000) at the protocol's minimum address,
    /// rodata R-- (0x800), data+bss RW- (0x100 of 0x3000 from the file); entry at +0x10.
    pub fn kernel_elf() -> Vec<u8> {
        let base = crate::layout::KERNEL_MIN_VADDR;
        let segments: [(u32, u64, u64, u64, u64); 3] = [
            (5, 0x1000, base, 0x1000, 0x1000),
            (4, 0x2000, base + 0x1000, 0x800, 0x800),
            (6, 0x3000, base + 0x2000, 0x100, 0x3000),
        ];
        let mut d = vec![0u8; 0x3100];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
        d[6] = 1;
        d[16..18].copy_from_slice(&2u16.to_le_bytes());
        d[18..20].copy_from_slice(&62u16.to_le_bytes());
        d[20..24].copy_from_slice(&1u32.to_le_bytes());
        d[24..32].copy_from_slice(&(base + 0x10).to_le_bytes());
        d[32..40].copy_from_slice(&64u64.to_le_bytes());
        d[52..54].copy_from_slice(&64u16.to_le_bytes());
        d[54..56].copy_from_slice(&56u16.to_le_bytes());
        d[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, (flags, offset, vaddr, filesz, memsz)) in segments.into_iter().enumerate() {
            let at = 64 + 56 * i;
            d[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
            d[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
            d[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            d[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            d[at + 24..at + 32].copy_from_slice(&vaddr.to_le_bytes());
            d[at + 32..at + 40].copy_from_slice(&filesz.to_le_bytes());
            d[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
            d[at + 48..at + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        d
    }
}
