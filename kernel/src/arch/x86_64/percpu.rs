//! Per-CPU data, reached through GS: the first page of each CPU's entry area.
//!
//! `IA32_GS_BASE` points at this CPU's `PerCpu`, whose first field points at itself, so
//! `mov rax, gs:[0]` yields a normal pointer. Fields other CPUs read (tick counts, for the
//! timer scenario) are atomics.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use x86_64::registers::model_specific::GsBase;

use super::cea;

#[repr(C)]
pub struct PerCpu {
    /// Points at this structure: what `gs:[0]` reads.
    self_ptr: *const PerCpu,
    pub cpu_index: usize,
    pub lapic_id: u32,
    /// Timer interrupts taken on this CPU.
    pub ticks: AtomicU64,
    /// This CPU's guarded kernel stack (the one it boots on and idles on).
    pub boot_stack_bottom: u64,
    pub boot_stack_top: u64,
    /// Set while a scenario expects a stack overflow on this CPU.
    pub expect_stack_overflow: AtomicBool,
    /// The CR2 of the last kernel fault that an exception-table fixup resolved.
    pub last_fixup_cr2: AtomicU64,
    /// Top of the running thread's kernel stack: where the SYSCALL trampoline switches to
    /// (read RIP-relatively through the entry area, never through GS).
    pub kernel_stack_top: AtomicU64,
    /// Returns to user space by SYSRET and by IRET, and threads killed by a faulting IRET.
    pub sysret_exits: AtomicU64,
    pub iret_exits: AtomicU64,
    pub bad_iret_kills: AtomicU64,
    /// Set by the timer when the running thread's time slice is used up.
    pub need_resched: AtomicBool,
    /// The running user thread's process's `killed` flag (null while a kernel thread or the
    /// idle loop runs), so the way back to ring 3 checks it without locking the scheduler.
    /// Written only by the context switch, with interrupts off.
    pub current_killed: AtomicPtr<AtomicBool>,
    /// The running thread (`sched::Thread`, type-erased here; null while idle), kept alive by
    /// the scheduler's `current` slot. Written only by the context switch, with interrupts
    /// off; the IPC fastpath reads it instead of locking the scheduler.
    pub current_thread: AtomicPtr<core::ffi::c_void>,
    /// Atomic-IST entries completed by a nested entry on their behalf.
    pub aist_proxied: AtomicU64,
    /// Why an atomic-IST entry gave up (forcing #DF); 0 if none did.
    pub aist_failure: AtomicU64,
    /// NMI, #DB and #MC events taken, and the interrupted RIP/RSP each handler saw last.
    pub nmi_count: AtomicU64,
    pub db_count: AtomicU64,
    pub mc_count: AtomicU64,
    pub last_nmi: [AtomicU64; 2],
    /// What other CPUs want from this one's next NMI (`smp::NmiRequest` bits).
    pub nmi_request: AtomicU64,
    pub last_db: [AtomicU64; 2],
    /// RSP inside the last kernel #DB handler (which stack it ran on).
    pub db_handler_rsp: AtomicU64,
}

const _: () = assert!(core::mem::offset_of!(PerCpu, self_ptr) == 0);
const _: () = assert!(core::mem::size_of::<PerCpu>() <= 4096);

impl PerCpu {
    /// Initializes the per-CPU page in this CPU's freshly mapped entry area and points GS at it.
    ///
    /// # Safety
    /// `page` is this CPU's mapped, zeroed per-CPU page, used by no one else yet.
    pub unsafe fn install(page: *mut PerCpu, cpu_index: usize, lapic_id: u32, stack: (u64, u64)) {
        // SAFETY: per the contract, `page` is valid for writes and not aliased.
        unsafe {
            page.write(PerCpu {
                self_ptr: page,
                cpu_index,
                lapic_id,
                ticks: AtomicU64::new(0),
                boot_stack_bottom: stack.0,
                boot_stack_top: stack.1,
                expect_stack_overflow: AtomicBool::new(false),
                last_fixup_cr2: AtomicU64::new(0),
                kernel_stack_top: AtomicU64::new(stack.1),
                sysret_exits: AtomicU64::new(0),
                iret_exits: AtomicU64::new(0),
                bad_iret_kills: AtomicU64::new(0),
                need_resched: AtomicBool::new(false),
                current_killed: AtomicPtr::new(core::ptr::null_mut()),
                current_thread: AtomicPtr::new(core::ptr::null_mut()),
                aist_proxied: AtomicU64::new(0),
                aist_failure: AtomicU64::new(0),
                nmi_count: AtomicU64::new(0),
                db_count: AtomicU64::new(0),
                mc_count: AtomicU64::new(0),
                last_nmi: [AtomicU64::new(0), AtomicU64::new(0)],
                nmi_request: AtomicU64::new(0),
                last_db: [AtomicU64::new(0), AtomicU64::new(0)],
                db_handler_rsp: AtomicU64::new(0),
            });
        }
        GsBase::write(x86_64::VirtAddr::new(page as u64));
    }
}

/// This CPU's per-CPU data.
pub fn this() -> &'static PerCpu {
    let p: *const PerCpu;
    // SAFETY: after `install`, GS points at this CPU's PerCpu whose first word is its own
    // address; kernel code never runs with a user GS (entry code swaps it first).
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags)) };
    // SAFETY: the per-CPU page stays mapped for the CPU's lifetime.
    unsafe { &*p }
}

/// This CPU's per-CPU data, or `None` before it exists (early boot, an AP still coming up):
/// for code that may run that early (the heap). Reads IA32_GS_BASE, so it is slower than
/// [`this`].
pub fn try_this() -> Option<&'static PerCpu> {
    if GsBase::read().as_u64() == 0 {
        return None;
    }
    Some(this())
}

/// Another CPU's per-CPU data (it lives at a fixed place in that CPU's entry area).
pub fn of(cpu_index: usize) -> &'static PerCpu {
    // SAFETY: callers only pass indices of CPUs that are online, whose entry areas are mapped
    // and initialized (`smp::online` is published after `install`).
    unsafe { &*(cea::area_base(cpu_index) as *const PerCpu) }
}

/// This CPU's index for log lines, or 0 before per-CPU data exists (only the BSP logs then).
pub fn cpu_index_or_boot() -> usize {
    if GsBase::read().as_u64() == 0 {
        return 0;
    }
    this().cpu_index
}

pub fn ticks_of(cpu_index: usize) -> u64 {
    of(cpu_index).ticks.load(Ordering::Relaxed)
}
