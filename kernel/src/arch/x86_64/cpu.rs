//! CPU features from CPUID, read once per CPU, and control-register set-up.

use core::arch::x86_64::{CpuidResult, __cpuid_count};
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};

/// The features this kernel cares about (Intel SDM Vol. 2A, CPUID; FRED spec 346446 §2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// CPUID.(EAX=7,ECX=1):EAX[17]
    pub fred: bool,
    /// CPUID.(EAX=7,ECX=1):EAX[18]
    pub lkgs: bool,
    /// CPUID.1:ECX[21]
    pub x2apic: bool,
    /// CPUID.1:ECX[17]
    pub pcid: bool,
    /// CPUID.(EAX=7,ECX=0):EBX[7]
    pub smep: bool,
    /// CPUID.(EAX=7,ECX=0):EBX[20]
    pub smap: bool,
    /// CPUID.(EAX=7,ECX=0):EBX[0]
    pub fsgsbase: bool,
    /// CPUID.80000001H:EDX[20]
    pub nx: bool,
    /// CPUID.1:EDX[13]
    pub pge: bool,
    /// CPUID.(EAX=7,ECX=0):ECX[2]: SGDT, SIDT, SLDT, SMSW and STR fault in ring 3 when enabled.
    pub umip: bool,
}

impl Features {
    pub fn read() -> Self {
        const NONE: CpuidResult = CpuidResult { eax: 0, ebx: 0, ecx: 0, edx: 0 };
        // Leaves above the reported maximum return another leaf's data, so check the maximum.
        let (max_basic, max_ext) = (__cpuid_count(0, 0).eax, __cpuid_count(0x8000_0000, 0).eax);
        let leaf = |l: u32, s: u32| {
            let max = if l >= 0x8000_0000 { max_ext } else { max_basic };
            if l <= max { __cpuid_count(l, s) } else { NONE }
        };
        let l1 = leaf(1, 0);
        let l7 = leaf(7, 0);
        let l7_1 = if l7.eax >= 1 { leaf(7, 1) } else { NONE };
        let e1 = leaf(0x8000_0001, 0);
        let bit = |v: u32, b: u32| v & (1 << b) != 0;
        Self {
            fred: bit(l7_1.eax, 17),
            lkgs: bit(l7_1.eax, 18),
            x2apic: bit(l1.ecx, 21),
            pcid: bit(l1.ecx, 17),
            smep: bit(l7.ebx, 7),
            smap: bit(l7.ebx, 20),
            fsgsbase: bit(l7.ebx, 0),
            nx: bit(e1.edx, 20),
            pge: bit(l1.edx, 13),
            umip: bit(l7.ecx, 2),
        }
    }

    /// `FRED+ LKGS- ...`: one word per feature, for the boot log.
    pub fn report(&self) -> impl core::fmt::Display + '_ {
        struct R<'a>(&'a Features);
        impl core::fmt::Display for R<'_> {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                let s = self.0;
                let list = [
                    ("FRED", s.fred),
                    ("LKGS", s.lkgs),
                    ("x2APIC", s.x2apic),
                    ("PCID", s.pcid),
                    ("SMEP", s.smep),
                    ("SMAP", s.smap),
                    ("FSGSBASE", s.fsgsbase),
                    ("NX", s.nx),
                    ("UMIP", s.umip),
                ];
                for (i, (name, on)) in list.iter().enumerate() {
                    write!(f, "{}{name}{}", if i > 0 { " " } else { "" }, if *on { '+' } else { '-' })?;
                }
                Ok(())
            }
        }
        R(self)
    }
}

/// Turns on the protections every CPU runs with: write-protect in ring 0, NX, global pages,
/// SMEP, SMAP and UMIP where present, FSGSBASE where present, alignment checks for user code.
pub fn enable_protections(f: &Features) {
    // SAFETY: each bit only restricts what the kernel may do (WP, NX, SMEP, SMAP) or enables
    // an instruction set (FSGSBASE) or a TLB attribute (PGE) the CPU reported; the kernel never
    // writes through read-only mappings, never executes user pages, and touches user memory
    // only inside explicit STAC/CLAC windows.
    unsafe {
        // AM: user code that sets RFLAGS.AC gets #AC on a misaligned access (ring 3 only).
        Cr0::update(|c| c.insert(Cr0Flags::WRITE_PROTECT | Cr0Flags::ALIGNMENT_MASK));
        if f.nx {
            Efer::update(|e| e.insert(EferFlags::NO_EXECUTE_ENABLE));
        }
        Cr4::update(|c| {
            // Without CR4.MCE a machine check shuts the CPU down instead of raising #MC.
            c.insert(Cr4Flags::MACHINE_CHECK_EXCEPTION);
            if f.pge {
                c.insert(Cr4Flags::PAGE_GLOBAL);
            }
            if f.smep {
                c.insert(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION);
            }
            if f.smap {
                c.insert(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION);
            }
            if f.fsgsbase {
                c.insert(Cr4Flags::FSGSBASE);
            }
            // Without UMIP, ring 3 reads the GDT, IDT and TSS addresses with SGDT/SIDT/STR:
            // kernel addresses handed to any program.
            if f.umip {
                c.insert(Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION);
            }
        });
    }
}
