//! The event-entry layer: two backends that decode, one set of handlers that decides.
//!
//! ```text
//! entry/
//!   mod.rs        this facade: backend selection, per-CPU set-up, the kernel stack of ring-3 events
//!   frame.rs      the one TrapFrame layout both backends save into
//!   event.rs      Event: what arrived, backend-neutral; every vector number the kernel names
//!   handlers.rs   the shared handlers (user_event, kernel_event, kernel_ist_event, syscall)
//!   extable.rs    fixups for kernel instructions that may fault by design
//!   ist/          IDT + TSS/IST backend
//!     idt.rs        gates, stubs, common entry, decode by gate, IRET exit
//!     syscall.rs    SYSCALL trampoline (LSTAR and CSTAR entries), SYSRET/IRET choice
//!     sysret.rs     the opportunistic-SYSRET decision (pure, host-tested)
//!     aist.rs       atomic-IST-entry for NMI, #DB, #MC (assembly)
//!     atomic_ist.rs its identify/replicate/copy logic (pure, host-tested)
//!   fred/         FRED backend
//!     entry.rs      the entry page, MSRs, stack levels, ERETU/ERETS
//!     decode.rs     (event type, vector) -> Event (pure, host-tested)
//! ```
//!
//! The backend is chosen once, on the BSP (`entry=auto|fred|ist`); every CPU uses it. A
//! backend depends on `event`, `frame` and `handlers`; the handlers depend on neither backend.

/// Pushes the general registers so that, with the vector and error-code slots above them, the
/// stack is a `TrapFrame` (RAX pushed first, R15 last at the lowest address).
#[cfg(target_os = "none")]
macro_rules! push_gprs {
    () => {
        "push rax\npush rbx\npush rcx\npush rdx\npush rsi\npush rdi\npush rbp\npush r8\npush r9\npush r10\npush r11\npush r12\npush r13\npush r14\npush r15\n"
    };
}

/// The inverse of `push_gprs!`.
#[cfg(target_os = "none")]
macro_rules! pop_gprs {
    () => {
        "pop r15\npop r14\npop r13\npop r12\npop r11\npop r10\npop r9\npop r8\npop rbp\npop rdi\npop rsi\npop rdx\npop rcx\npop rbx\npop rax\n"
    };
}

pub mod event;
pub mod frame;
pub mod fred;
pub mod ist;

#[cfg(target_os = "none")]
pub mod extable;
#[cfg(target_os = "none")]
mod handlers;

pub use event::vector;
#[cfg(target_os = "none")]
pub use facade::*;

#[cfg(target_os = "none")]
mod facade {
    use core::sync::atomic::{AtomicU8, Ordering};

    use super::{fred, ist};
    use crate::arch::x86_64::cpu::Features;
    use crate::arch::x86_64::percpu;
    use crate::cmdline::EntryChoice;

    pub use super::handlers::nmi_handler_address;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[repr(u8)]
    pub enum Backend {
        Ist = 0,
        Fred = 1,
    }

    impl Backend {
        pub fn name(self) -> &'static str {
            match self {
                Self::Ist => "ist",
                Self::Fred => "fred",
            }
        }
    }

    static BACKEND: AtomicU8 = AtomicU8::new(Backend::Ist as u8);

    /// Chooses the backend once, on the BSP, from the command line and CPUID.
    pub fn select(choice: EntryChoice, features: &Features) -> Backend {
        // Every FRED CPU has LKGS, and the context switch needs it under FRED (`user_segments`).
        let backend = match (choice, features.fred && features.lkgs) {
            (EntryChoice::Ist, _) => Backend::Ist,
            (EntryChoice::Fred, false) if features.fred => {
                log::error!("entry=fred asked for, but this CPU has FRED without LKGS (CPUID.(7,1):EAX[18] = 0): using ist");
                Backend::Ist
            }
            (EntryChoice::Fred, false) => {
                log::error!("entry=fred asked for, but this CPU has no FRED (CPUID.(7,1):EAX[17] = 0): using ist");
                Backend::Ist
            }
            (EntryChoice::Fred | EntryChoice::Auto, true) => Backend::Fred,
            (EntryChoice::Auto, false) => Backend::Ist,
        };
        BACKEND.store(backend as u8, Ordering::Relaxed);
        log::info!("event entry: {}", backend.name());
        backend
    }

    pub fn backend() -> Backend {
        match BACKEND.load(Ordering::Relaxed) {
            1 => Backend::Fred,
            _ => Backend::Ist,
        }
    }

    /// Sets up this CPU's event delivery for the selected backend (after its entry area exists).
    pub fn init_this_cpu(cpu_index: usize) {
        // The IDT and the SYSCALL MSRs also serve FRED: STAR gives FRED its selectors, and the
        // IDT stays valid until CR4.FRED is set.
        ist::load_idt();
        ist::init_syscall(cpu_index);
        if backend() == Backend::Fred {
            fred::init_this_cpu(cpu_index);
        }
    }

    /// The kernel stack the next event from ring 3 lands on (the running thread's), on this CPU.
    #[inline]
    pub fn set_kernel_stack(cpu_index: usize, top: u64) {
        percpu::this().kernel_stack_top.store(top, Ordering::Relaxed);
        crate::arch::x86_64::cea::set_rsp0(cpu_index, top);
        if backend() == Backend::Fred {
            fred::set_rsp0(top);
        }
    }

    /// Where a new user thread's first context switch returns to: the selected backend's path
    /// into user space.
    pub fn first_entry_to_user() -> u64 {
        match backend() {
            Backend::Ist => ist::first_entry_to_user(),
            Backend::Fred => fred::first_entry_to_user(),
        }
    }
}
