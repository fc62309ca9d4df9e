//! CPU features, MSRs, and the per-CPU state the protocol prescribes (PAT, MTRRs).

use core::arch::x86_64::{__cpuid, __cpuid_count};
use x86_64::registers::model_specific::Msr;

/// What the bridge needs to know about the CPU (Intel SDM Vol. 2A, CPUID).
#[derive(Debug, Clone, Copy)]
pub struct Features {
    pub nx: bool,
    pub gigantic_pages: bool,
    pub pat: bool,
    pub mtrr: bool,
    pub apic: bool,
    pub x2apic: bool,
    /// CPUID leaf 0xB (extended topology) exists: its EDX is the CPU's 32-bit x2APIC ID.
    pub topology_leaf: bool,
    pub phys_bits: u32,
}

impl Features {
    pub fn detect() -> Self {
        let (max_leaf, leaf1, max_ext) = (__cpuid(0).eax, __cpuid(1), __cpuid(0x8000_0000).eax);
        let ext1 = (max_ext >= 0x8000_0001).then(|| __cpuid(0x8000_0001));
        let ext8 = (max_ext >= 0x8000_0008).then(|| __cpuid(0x8000_0008));
        Features {
            nx: ext1.is_some_and(|r| r.edx & (1 << 20) != 0),
            gigantic_pages: ext1.is_some_and(|r| r.edx & (1 << 26) != 0),
            pat: leaf1.edx & (1 << 16) != 0,
            mtrr: leaf1.edx & (1 << 12) != 0,
            apic: leaf1.edx & (1 << 9) != 0,
            x2apic: leaf1.ecx & (1 << 21) != 0,
            // Leaf 0xB subleaf 0 reports a level type (ECX[15:8]) when the leaf is implemented.
            topology_leaf: max_leaf >= 0xb && __cpuid_count(0xb, 0).ecx & 0xff00 != 0,
            phys_bits: ext8.map_or(36, |r| r.eax & 0xff),
        }
    }
}

pub const IA32_PAT: u32 = 0x277;
/// PAT0 WB, PAT1 WT, PAT2 UC-, PAT3 UC, PAT4 WP, PAT5 WC (PROTOCOL.md, Caching, x86-64).
pub const PAT_LAYOUT: u64 = 0x0000_0105_0007_0406;

pub fn read_msr(msr: u32) -> u64 {
    // SAFETY: only called for architectural MSRs whose presence was checked by CPUID.
    unsafe { Msr::new(msr).read() }
}

/// # Safety
/// The MSR must exist and the value must be valid for it.
pub unsafe fn write_msr(msr: u32, value: u64) {
    unsafe { Msr::new(msr).write(value) }
}

/// Writes back and invalidates the caches.
fn wbinvd() {
    // SAFETY: WBINVD only flushes caches; it touches no memory the program can observe.
    unsafe { core::arch::asm!("wbinvd", options(nostack, preserves_flags)) };
}

const IA32_MTRRCAP: u32 = 0xfe;
const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
const IA32_MTRR_PHYSBASE0: u32 = 0x200;
const MTRR_FIXED: [u32; 11] = [
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
];
const MTRRCAP_FIXED: u64 = 1 << 8;
const MTRR_ENABLE: u64 = 1 << 11;
const MAX_VARIABLE_MTRRS: usize = 32;

/// The BSP's MTRRs, for the APs to copy (PROTOCOL.md, MP feature: "The MTRRs of APs will be
/// synchronised by the bootloader to match the BSP", Intel SDM Vol. 3A, 12.11.5).
#[derive(Clone, Copy)]
pub struct Mtrrs {
    def_type: u64,
    fixed: Option<[u64; 11]>,
    variable: [(u64, u64); MAX_VARIABLE_MTRRS],
    variable_count: usize,
}

impl Mtrrs {
    pub const EMPTY: Self = Mtrrs {
        def_type: 0,
        fixed: None,
        variable: [(0, 0); MAX_VARIABLE_MTRRS],
        variable_count: 0,
    };

    pub fn save() -> Self {
        let cap = read_msr(IA32_MTRRCAP);
        let mut m = Mtrrs::EMPTY;
        m.def_type = read_msr(IA32_MTRR_DEF_TYPE);
        if cap & MTRRCAP_FIXED != 0 {
            m.fixed = Some(MTRR_FIXED.map(read_msr));
        }
        m.variable_count = ((cap & 0xff) as usize).min(MAX_VARIABLE_MTRRS);
        for i in 0..m.variable_count {
            let base = IA32_MTRR_PHYSBASE0 + 2 * i as u32;
            m.variable[i] = (read_msr(base), read_msr(base + 1));
        }
        m
    }

    /// Loads these MTRRs with the SDM's procedure (Vol. 3A, 12.11.7): caches off and
    /// flushed, MTRRs disabled while written, then everything back on.
    ///
    /// # Safety
    /// Interrupts are off and the values came from [`Mtrrs::save`] on a CPU of the same model.
    pub unsafe fn restore(&self) {
        use x86_64::registers::control::{Cr0, Cr0Flags, Cr3};
        let cr0 = Cr0::read();
        // SAFETY: the caller guarantees the MSR values are valid; CD without NW is the
        // no-fill mode the SDM prescribes, and CR3 reloads only flush the TLB.
        unsafe {
            Cr0::write((cr0 | Cr0Flags::CACHE_DISABLE) - Cr0Flags::NOT_WRITE_THROUGH);
            wbinvd();
            let (frame, flags) = Cr3::read();
            Cr3::write(frame, flags);
            write_msr(IA32_MTRR_DEF_TYPE, self.def_type & !MTRR_ENABLE);
            if let Some(fixed) = self.fixed {
                for (msr, value) in MTRR_FIXED.iter().zip(fixed) {
                    write_msr(*msr, value);
                }
            }
            for (i, &(base, mask)) in self.variable[..self.variable_count].iter().enumerate() {
                write_msr(IA32_MTRR_PHYSBASE0 + 2 * i as u32, base);
                write_msr(IA32_MTRR_PHYSBASE0 + 2 * i as u32 + 1, mask);
            }
            write_msr(IA32_MTRR_DEF_TYPE, self.def_type);
            wbinvd();
            Cr3::write(frame, flags);
            Cr0::write(cr0);
        }
    }
}
