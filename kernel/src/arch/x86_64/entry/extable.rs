//! Exception fixups: kernel instructions that may fault by design (probing, later user-memory
//! copies) list themselves in the `.extable` section as (faulting RIP, resume RIP). A kernel
//! fault at a listed RIP resumes at its fixup instead of being fatal.

use super::frame::TrapFrame;

#[repr(C)]
struct Fixup {
    fault_rip: u64,
    resume_rip: u64,
}

extern "C" {
    static __extable_start: Fixup;
    static __extable_end: Fixup;
}

fn table() -> &'static [Fixup] {
    // SAFETY: linker.ld places the `.extable` input sections, made only of `Fixup` records
    // emitted below, between these two symbols.
    unsafe {
        let start = &__extable_start as *const Fixup;
        let end = &__extable_end as *const Fixup;
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

/// If the faulting RIP has a fixup, redirects the frame there and returns true.
pub fn fixup(frame: &mut TrapFrame) -> bool {
    match table().iter().find(|f| f.fault_rip == frame.rip) {
        Some(f) => {
            frame.rip = f.resume_rip;
            true
        }
        None => false,
    }
}

// `kernel_probe_read_u64(addr) -> ProbeResult`: returns {value, 0}, or {0, 1} if the load
// faulted. The two-register result comes back in RAX:RDX (SysV).
// SAFETY: the only memory access is the load listed in `.extable`; a fault there resumes at its
// fixup, which returns the failure in RDX without touching anything else.
core::arch::global_asm!(
    ".pushsection .text.kernel_probe_read_u64, \"ax\"",
    ".global kernel_probe_read_u64",
    "kernel_probe_read_u64:",
    "    xor edx, edx",
    "1:  mov rax, [rdi]",
    "    ret",
    "2:  xor eax, eax",
    "    mov edx, 1",
    "    ret",
    ".pushsection .extable, \"a\"",
    ".balign 8",
    ".quad 1b, 2b",
    ".popsection",
    ".popsection",
);

#[repr(C)]
struct ProbeResult {
    value: u64,
    faulted: u64,
}

extern "C" {
    fn kernel_probe_read_u64(addr: u64) -> ProbeResult;
}

/// Reads a u64 at a kernel address that may be unmapped; `None` if the read faulted.
pub fn probe_read_u64(addr: u64) -> Option<u64> {
    // SAFETY: the only memory access is the listed load; a fault there is fixed up to return
    // `faulted = 1`. Reading device memory this way is the caller's responsibility.
    let r = unsafe { kernel_probe_read_u64(addr) };
    (r.faulted == 0).then_some(r.value)
}
