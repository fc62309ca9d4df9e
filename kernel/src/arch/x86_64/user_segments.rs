//! A user thread's FS/GS state (selectors and bases), saved and restored by the context switch.
//!
//! While the kernel runs, the user's FS selector and base and GS selector are live in the CPU,
//! and the user's GS base waits in IA32_KERNEL_GS_BASE: SWAPGS (IST backend) or event delivery
//! (FRED) put it there, and SWAPGS before IRET/SYSRET or ERETU swaps it back. So switching
//! threads means saving those four values and loading the next thread's.
//!
//! The one delicate step is loading a GS selector: `mov gs` would overwrite the kernel's live GS
//! base. LKGS (introduced with FRED, spec 346446; CPUID.(7,1):EAX[18]) loads the selector and
//! puts the descriptor's base into IA32_KERNEL_GS_BASE instead, leaving the kernel's GS base
//! alone; without it the selector is loaded between two SWAPGS. Linux does the same:
//! `native_load_gs_index` in arch/x86/include/asm/gsseg.h (LKGS when the CPU has it, else
//! `asm_load_gs_index`), and the base through the MSR under FRED (`__wrgsbase_inactive`,
//! arch/x86/kernel/process_64.c). Both forms only run when the selector changes, which for most
//! threads is never.

use core::sync::atomic::{AtomicBool, Ordering};
use x86_64::registers::model_specific::{FsBase, KernelGsBase};
use x86_64::VirtAddr;

use super::entry::{self, Backend};

static LKGS: AtomicBool = AtomicBool::new(false);
/// CR4.FSGSBASE is on (every CPU that has it, `cpu::init`): the FS base moves with
/// RDFSBASE/WRFSBASE, not through its MSR.
static FSGSBASE: AtomicBool = AtomicBool::new(false);

/// Whether the context switch loads GS selectors with LKGS (the CPU has it: every FRED CPU),
/// and reads and writes the FS base with RDFSBASE/WRFSBASE (the CPU has FSGSBASE).
pub fn init(lkgs: bool, fsgsbase: bool) {
    LKGS.store(lkgs, Ordering::Relaxed);
    FSGSBASE.store(fsgsbase, Ordering::Relaxed);
    log::info!("user GS selectors load with {}", if lkgs { "LKGS" } else { "SWAPGS; mov gs; SWAPGS" });
}

/// A user thread's segment state while it is switched out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserSegments {
    fs: u16,
    gs: u16,
    fs_base: u64,
    gs_base: u64,
}

/// The live FS base (the user's: the kernel never uses FS).
#[inline]
fn read_fs_base() -> u64 {
    if FSGSBASE.load(Ordering::Relaxed) {
        let base: u64;
        // SAFETY: CR4.FSGSBASE is set on every CPU (`cpu::init`), so RDFSBASE is defined.
        unsafe { core::arch::asm!("rdfsbase {}", out(reg) base, options(nomem, nostack, preserves_flags)) };
        base
    } else {
        FsBase::read().as_u64()
    }
}

#[inline]
fn write_fs_base(base: u64) {
    if FSGSBASE.load(Ordering::Relaxed) {
        // SAFETY: as in `read_fs_base`; the value came from `read_fs_base`, so it is
        // canonical (WRFSBASE would #GP on a non-canonical one).
        unsafe { core::arch::asm!("wrfsbase {}", in(reg) base, options(nomem, nostack, preserves_flags)) };
    } else {
        FsBase::write(VirtAddr::new_truncate(base));
    }
}

fn selectors() -> (u16, u16) {
    let (fs, gs): (u16, u16);
    // SAFETY: reads two segment selectors; no memory, no flags.
    unsafe {
        core::arch::asm!("mov {0:x}, fs", "mov {1:x}, gs", out(reg) fs, out(reg) gs, options(nomem, nostack, preserves_flags))
    };
    (fs, gs)
}

impl UserSegments {
    /// The running user thread's state, from the kernel (ring 0, kernel GS base live).
    /// Inlined (like `restore`) into the context switch, whose cost the bench checks.
    #[inline(always)]
    pub fn save() -> UserSegments {
        let (fs, gs) = selectors();
        UserSegments { fs, gs, fs_base: read_fs_base(), gs_base: KernelGsBase::read().as_u64() }
    }

    /// Makes this the state the next return to user space finds. `live`: the state in the CPU
    /// now, if known (just saved from the thread switched away from): bases equal to it are
    /// not written again (WRMSR is slow; threads of one program mostly share their values).
    ///
    /// # Safety
    /// Ring 0 with the kernel's GS base live and interrupts off; the selectors were loadable in
    /// ring 3 (they come from `save`, or are null), so loading them in ring 0 cannot fault;
    /// `live`, if given, is what `save` returned with nothing loaded since.
    #[inline(always)]
    pub unsafe fn restore(&self, live: Option<&UserSegments>) {
        let (fs, gs) = selectors();
        if fs != self.fs {
            // SAFETY: the kernel never addresses through FS; the base is written below.
            unsafe { core::arch::asm!("mov fs, {0:x}", in(reg) self.fs, options(nomem, nostack, preserves_flags)) };
        }
        if gs != self.gs {
            if LKGS.load(Ordering::Relaxed) {
                // SAFETY: LKGS (F2 0F 00 /6, here `lkgs di`, the encoding Linux's LKGS_DI
                // uses) writes the selector and, as GS base, only IA32_KERNEL_GS_BASE.
                unsafe {
                    core::arch::asm!(".byte 0xf2, 0x0f, 0x00, 0xf7", in("di") self.gs, options(nomem, nostack, preserves_flags))
                };
            } else {
                // Under FRED nothing swaps GS on a kernel-mode NMI, so an NMI between these SWAPGS
                // would run on the user's GS base: FRED is only selected with LKGS.
                debug_assert_eq!(entry::backend(), Backend::Ist);
                // SAFETY: interrupts are off; an NMI, #DB or #MC between the SWAPGS arrives
                // through atomic-IST-entry, which takes the kernel GS base from the entry area whatever GS holds.
                unsafe {
                    core::arch::asm!("swapgs", "mov gs, {0:x}", "swapgs", in(reg) self.gs, options(nomem, nostack, preserves_flags))
                };
            }
        }
        // A selector load above may have changed a base (from the descriptor): then the saved
        // base must be written whatever `live` says.
        let same = live.filter(|l| l.fs == fs && l.gs == gs && fs == self.fs && gs == self.gs);
        if same.is_none_or(|l| l.fs_base != self.fs_base) {
            write_fs_base(self.fs_base);
        }
        if same.is_none_or(|l| l.gs_base != self.gs_base) {
            KernelGsBase::write(VirtAddr::new_truncate(self.gs_base));
        }
    }
}
