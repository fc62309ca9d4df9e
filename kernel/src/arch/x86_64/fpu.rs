//! User FPU and SIMD state: x87, SSE, AVX and, where the CPU has it, AVX-512.
//!
//! Every CPU enables the state as it comes online (CR0.MP|NE, EM and TS clear; CR4.OSFXSR,
//! OSXMMEXCPT and, with XSAVE, OSXSAVE with the same XCR0 everywhere). Each user thread owns a
//! save area sized from CPUID leaf 0xD; the context switch saves the outgoing user thread's
//! registers and restores the incoming one's, eagerly: CR0.TS is never set, so there is no
//! lazy switch and no #NM to take (the LazyFP class, CVE-2018-3665). A new thread starts from
//! the architectural initial state (FCW 0x37f, MXCSR 0x1f80, every register zero), never from
//! what its CPU last ran.
//!
//! The kernel itself never touches these registers: it is built for `x86_64-unknown-none`,
//! whose code generation is soft-float with x87, MMX and SSE disabled, and no kernel assembly
//! outside this file names them. So an event entered from ring 0 (or a kernel thread) needs
//! no FPU state saved, and the user's registers stay live and untouched while the kernel runs
//! on its behalf.

use core::alloc::Layout;
use core::arch::x86_64::__cpuid_count;
use core::ptr::NonNull;
use spin::Once;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};

/// XCR0 components the kernel saves and restores: x87 (0), SSE (1), AVX (2), and AVX-512's
/// opmask (5), ZMM_Hi256 (6) and Hi16_ZMM (7). Not MPX, PKRU or AMX (which needs XFD).
const SUPPORTED_XCR0: u64 = 0b1110_0111;
const AVX512_XCR0: u64 = 0b1110_0000;
/// MXCSR's power-on value: every SIMD exception masked, round to nearest.
pub const MXCSR_INIT: u32 = 0x1f80;
/// FCW's value after FNINIT: every x87 exception masked, 64-bit precision.
pub const FCW_INIT: u16 = 0x37f;

/// How this machine saves user state (the same on every CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveInstr {
    Fxsave,
    Xsave,
    Xsaveopt,
}

#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub instr: SaveInstr,
    pub xcr0: u64,
    /// Bytes of a save area (512 for FXSAVE; CPUID.(0xD,0):EBX for XCR0's components).
    pub size: usize,
}

static CONFIG: Once<Config> = Once::new();
/// `CONFIG`'s instruction as a byte (`SaveInstr as u8`), for the context switch: one load
/// instead of a `Once` lookup per save and restore.
static INSTR: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(SaveInstr::Fxsave as u8);

#[inline]
fn save_instr() -> SaveInstr {
    match INSTR.load(core::sync::atomic::Ordering::Relaxed) {
        x if x == SaveInstr::Xsaveopt as u8 => SaveInstr::Xsaveopt,
        x if x == SaveInstr::Xsave as u8 => SaveInstr::Xsave,
        _ => SaveInstr::Fxsave,
    }
}

/// The BSP's choice, which every AP repeats.
pub fn config() -> Config {
    *CONFIG.get().expect("fpu::init_this_cpu runs before any thread")
}

fn xsave_support() -> Option<(u64, bool)> {
    let l1 = __cpuid_count(1, 0);
    if l1.ecx & (1 << 26) == 0 || __cpuid_count(0, 0).eax < 0xd {
        return None;
    }
    let d0 = __cpuid_count(0xd, 0);
    let d1 = __cpuid_count(0xd, 1);
    let hw = (d0.edx as u64) << 32 | d0.eax as u64;
    let mut xcr0 = hw & SUPPORTED_XCR0;
    // AVX-512 is all three components or none (SDM Vol. 1 §13.3).
    if xcr0 & AVX512_XCR0 != AVX512_XCR0 {
        xcr0 &= !AVX512_XCR0;
    }
    // AVX needs SSE, SSE needs x87 (XCR0 rules: SDM Vol. 1 §13.3).
    if xcr0 & 0b11 != 0b11 {
        return None;
    }
    Some((xcr0, d1.eax & 1 != 0))
}

/// Enables x87, SSE and (with XSAVE) the XCR0 components on this CPU; the BSP's call decides
/// the configuration, every AP applies the same and stops if it cannot.
pub fn init_this_cpu() {
    // SAFETY: MP and NE make WAIT honour TS and x87 errors raise #MF (not the legacy IRQ 13);
    // clearing EM and TS lets ring 3 run x87/SSE without #NM; OSFXSR/OSXMMEXCPT enable SSE and
    // #XM. None of this changes what kernel code does (it runs no FPU/SIMD code).
    unsafe {
        Cr0::update(|c| {
            c.insert(Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::NUMERIC_ERROR);
            c.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
        });
        Cr4::update(|c| c.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE));
    }
    let here = xsave_support();
    let config = *CONFIG.call_once(|| match here {
        None => Config { instr: SaveInstr::Fxsave, xcr0: 0, size: 512 },
        Some((xcr0, xsaveopt)) => {
            enable_xsave(xcr0);
            // EBX: the size XSAVE needs for the components XCR0 now enables.
            let size = __cpuid_count(0xd, 0).ebx as usize;
            Config { instr: if xsaveopt { SaveInstr::Xsaveopt } else { SaveInstr::Xsave }, xcr0, size }
        }
    });
    INSTR.store(config.instr as u8, core::sync::atomic::Ordering::Relaxed);
    if config.instr != SaveInstr::Fxsave {
        match here {
            Some((xcr0, _)) if xcr0 & config.xcr0 == config.xcr0 => enable_xsave(config.xcr0),
            _ => panic!("this CPU cannot enable XCR0 {:#x}, which the BSP chose", config.xcr0),
        }
    }
    // SAFETY: FNINIT puts x87 in its initial state and LDMXCSR loads a valid MXCSR, so no
    // stale state (from firmware or the bootloader) is ever saved for a thread.
    unsafe {
        core::arch::asm!("fninit", "ldmxcsr [{}]", in(reg) &MXCSR_INIT, options(nostack, readonly));
    }
}

fn enable_xsave(xcr0: u64) {
    // SAFETY: CPUID reported XSAVE and every component in `xcr0`, which obeys the XCR0 rules
    // (x87 set, AVX only with SSE, AVX-512 whole); XSETBV is legal once CR4.OSXSAVE is set.
    unsafe {
        Cr4::update(|c| c.insert(Cr4Flags::OSXSAVE));
        core::arch::asm!("xsetbv", in("ecx") 0, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32, options(nomem, nostack));
    }
}

/// One thread's saved registers: a heap block in the FXSAVE/XSAVE standard format, 64-byte
/// aligned as XSAVE requires.
pub struct FpuState {
    area: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the area is owned by one thread and touched only by the context switch on the
// thread's home CPU.
unsafe impl Send for FpuState {}
unsafe impl Sync for FpuState {}

impl FpuState {
    /// The architectural initial state, or `None` if the heap is exhausted.
    pub fn new() -> Option<FpuState> {
        let c = config();
        let layout = Layout::from_size_align(c.size, 64).ok()?;
        // SAFETY: the layout is non-zero-sized.
        let area = NonNull::new(unsafe { alloc::alloc::alloc_zeroed(layout) })?;
        // The legacy region's FCW (offset 0) and MXCSR (offset 24). With XSAVE the header (at
        // 512) stays zero: XSTATE_BV = 0 makes XRSTOR load every component's initial state
        // (FCW 0x37f among them), but MXCSR comes from memory whenever SSE or AVX is restored.
        // SAFETY: both offsets lie in the first 32 bytes of a block of at least 512.
        unsafe {
            area.as_ptr().cast::<u16>().write(FCW_INIT);
            area.as_ptr().add(24).cast::<u32>().write(MXCSR_INIT);
        }
        Some(FpuState { area, layout })
    }

    /// Saves this CPU's user registers into the area.
    ///
    /// # Safety
    /// Ring 0 on the CPU where the area's thread was running until now, with interrupts off.
    #[inline]
    pub unsafe fn save(&mut self) {
        let p = self.area.as_ptr();
        let (lo, hi) = (u32::MAX, u32::MAX);
        // SAFETY: `p` is a 64-byte aligned block of `config().size` bytes, which is what the
        // instruction writes (RFBM = XCR0); XSAVEOPT's optimizations are sound because the area
        // was the last one XRSTOR loaded on this CPU for this thread (`restore` at switch-in).
        unsafe {
            match save_instr() {
                SaveInstr::Fxsave => core::arch::asm!("fxsave64 [{}]", in(reg) p, options(nostack)),
                SaveInstr::Xsave => core::arch::asm!("xsave64 [{}]", in(reg) p, in("eax") lo, in("edx") hi, options(nostack)),
                SaveInstr::Xsaveopt => core::arch::asm!("xsaveopt64 [{}]", in(reg) p, in("eax") lo, in("edx") hi, options(nostack)),
            }
        }
    }

    /// Loads the area into this CPU's registers.
    ///
    /// # Safety
    /// Ring 0, interrupts off, on the thread's CPU just before it runs. The area holds only
    /// what `new` or `save` wrote, so its MXCSR and header are valid and XRSTOR cannot fault.
    #[inline]
    pub unsafe fn restore(&self) {
        let p = self.area.as_ptr();
        let (lo, hi) = (u32::MAX, u32::MAX);
        // SAFETY: as above.
        unsafe {
            match save_instr() {
                SaveInstr::Fxsave => core::arch::asm!("fxrstor64 [{}]", in(reg) p, options(nostack, readonly)),
                _ => core::arch::asm!("xrstor64 [{}]", in(reg) p, in("eax") lo, in("edx") hi, options(nostack, readonly)),
            }
        }
    }
}

impl Drop for FpuState {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::alloc::dealloc(self.area.as_ptr(), self.layout) };
    }
}

/// `FPU: XSAVEOPT, XCR0 0x7 (x87 SSE AVX), 832-byte areas` for the boot log.
pub fn describe(c: &Config) -> impl core::fmt::Display {
    struct D(Config);
    impl core::fmt::Display for D {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let c = self.0;
            write!(f, "{:?}, XCR0 {:#x} (x87 SSE", c.instr, c.xcr0)?;
            if c.xcr0 & 4 != 0 {
                write!(f, " AVX")?;
            }
            if c.xcr0 & AVX512_XCR0 != 0 {
                write!(f, " AVX-512")?;
            }
            write!(f, "), {}-byte save areas", c.size)
        }
    }
    D(*c)
}
