//! Atomic-IST-entry in the kernel: the entry assembly for NMI, #DB and #MC, the identify call
//! (the pure logic is in `atomic_ist`), and the committed path.
//!
//! ```text
//!   NMI IST stack        #DB IST stack        IST main stack (per CPU)
//!  +-------------+      +-------------+      +--------------------------+ top
//!  | CPU frame   |      | CPU frame --+-+    | NMI frame: original ctx  | <- copied by proxy
//!  | err, vector |      | err, vector | |    |   (GPRs from the NMI or  |
//!  | GPRs (maybe |      | GPRs        | |    |    #DB save, see below)  |
//!  |  partial)   |      | identify()  | |    +--------------------------+
//!  +-------------+      +-------------+ |    | #DB frame: RIP = NMI     |
//!   ^ interrupted        commit: mov rsp,   |   post-commit, RSP = ^   | <- #DB commits here
//!     before commit          rax -----------+--------------------------+
//! ```
//! A #DB that hits the NMI entry before its commit copies the NMI's frame too, then its own,
//! and commits; its IRET resumes the NMI just after the NMI's own commit, on the NMI's copied
//! frame. Every entry either did not start or committed.
//!
//! After commit: an event from ring 3 moves its frame onto the thread's kernel stack and takes
//! the ordinary path (SWAPGS by CS, may schedule or kill). An event from ring 0 stays on the
//! IST main stack and finds GS from the GS-base MSR (the SYSCALL gap and the SYSRET path run in
//! ring 0 with the user's GS); it must not schedule or take locks.

use core::mem::offset_of;
use core::sync::atomic::Ordering;
use x86_64::registers::model_specific::GsBase;
use x86_64::VirtAddr;

use super::atomic_ist::{self, Event, Layout, Memory, Prologue, Stack};
use crate::arch::x86_64::entry::frame::TrapFrame;
use crate::arch::x86_64::entry::handlers;
use crate::arch::x86_64::cea::{self, CEA_STRIDE};
use crate::arch::x86_64::percpu::PerCpu;
use crate::mm::kvm::CEA_BASE;

/// One entry: save-stage 2, identify, commit. Every instruction gets a label so tests (and
/// the `ist_nesting` scenario) can name each boundary.
macro_rules! aist_entry {
    ($name:literal) => {
        concat!(
            ".global aist_", $name, "_entry\n",
            "aist_", $name, "_entry:\n",
            "aist_", $name, "_i0: push 0\n",
            "aist_", $name, "_i1: push {vector_", $name, "}\n",
            "aist_", $name, "_i2: push rax\n",
            "aist_", $name, "_i3: push rbx\n",
            "aist_", $name, "_i4: push rcx\n",
            "aist_", $name, "_i5: push rdx\n",
            "aist_", $name, "_i6: push rsi\n",
            "aist_", $name, "_i7: push rdi\n",
            "aist_", $name, "_i8: push rbp\n",
            "aist_", $name, "_i9: push r8\n",
            "aist_", $name, "_i10: push r9\n",
            "aist_", $name, "_i11: push r10\n",
            "aist_", $name, "_i12: push r11\n",
            "aist_", $name, "_i13: push r12\n",
            "aist_", $name, "_i14: push r13\n",
            "aist_", $name, "_i15: push r14\n",
            "aist_", $name, "_i16: push r15\n",
            "aist_", $name, "_save_done:\n",
            "aist_", $name, "_i17: mov rdi, rsp\n",
            "aist_", $name, "_i18: mov esi, {kind_", $name, "}\n",
            "aist_", $name, "_i19: call {identify}\n",
            "aist_", $name, "_commit:\n",
            "aist_", $name, "_i20: mov rsp, rax\n",
            "aist_", $name, "_post_commit:\n",
            "    jmp aist_committed\n",
        )
    };
}

/// Instruction boundaries of one entry, from the first push through the commit.
pub const PROLOGUE_INSNS: usize = 21;

macro_rules! insn_table {
    ($name:literal) => {
        concat!(
            ".balign 8\n",
            ".global aist_", $name, "_insns\n",
            "aist_", $name, "_insns:\n",
            ".quad aist_", $name, "_i0, aist_", $name, "_i1, aist_", $name, "_i2, aist_", $name, "_i3\n",
            ".quad aist_", $name, "_i4, aist_", $name, "_i5, aist_", $name, "_i6, aist_", $name, "_i7\n",
            ".quad aist_", $name, "_i8, aist_", $name, "_i9, aist_", $name, "_i10, aist_", $name, "_i11\n",
            ".quad aist_", $name, "_i12, aist_", $name, "_i13, aist_", $name, "_i14, aist_", $name, "_i15\n",
            ".quad aist_", $name, "_i16, aist_", $name, "_i17, aist_", $name, "_i18, aist_", $name, "_i19\n",
            ".quad aist_", $name, "_i20\n",
            ".quad aist_", $name, "_entry, aist_", $name, "_save_done, aist_", $name, "_commit, aist_", $name, "_post_commit\n",
        )
    };
}

// SAFETY: entered only through the NMI, #DB and #MC IDT gates on their own IST stacks; the
// code touches only registers and stacks until the commit, and every offset it depends on
// (frame layout, vectors) comes from Rust (`TrapFrame`, `Event`), checked by the host simulation.
core::arch::global_asm!(
    ".pushsection .text.entry_aist, \"ax\"",
    aist_entry!("nmi"),
    aist_entry!("db"),
    aist_entry!("mc"),
    // Committed: RSP is this event's frame on the IST main stack.
    "aist_committed:",
    "    mov rdi, rsp",
    "    cld",
    "    call {prepare}",
    "    test rax, rax",
    "    jz 1f",
    // From ring 3: continue on the thread's kernel stack like any other event.
    "    mov rsp, rax",
    "    swapgs",
    "    lfence",
    "    mov rdi, rsp",
    "    call {dispatch}",
    "    jmp ist_trap_return",
    // From ring 0: handle here, on the IST main stack.
    "1:  mov rdi, rsp",
    "    call {kernel_event}",
    pop_gprs!(),
    "    add rsp, 16",
    "    iretq",
    ".popsection",
    ".pushsection .rodata.aist_insns, \"a\"",
    insn_table!("nmi"),
    insn_table!("db"),
    insn_table!("mc"),
    ".popsection",
    vector_nmi = const Event::Nmi.vector(),
    vector_db = const Event::Db.vector(),
    vector_mc = const Event::Mc.vector(),
    kind_nmi = const Event::Nmi as u32,
    kind_db = const Event::Db as u32,
    kind_mc = const Event::Mc as u32,
    identify = sym aist_identify,
    prepare = sym aist_prepare,
    dispatch = sym super::idt::idt_event,
    kernel_event = sym aist_kernel_event,
);

extern "C" {
    fn aist_nmi_entry();
    fn aist_db_entry();
    fn aist_mc_entry();
    static aist_nmi_insns: [u64; PROLOGUE_INSNS + 4];
    static aist_db_insns: [u64; PROLOGUE_INSNS + 4];
    static aist_mc_insns: [u64; PROLOGUE_INSNS + 4];
}

fn table(e: Event) -> &'static [u64; PROLOGUE_INSNS + 4] {
    // SAFETY: read-only tables of label addresses emitted above.
    unsafe {
        match e {
            Event::Nmi => &aist_nmi_insns,
            Event::Db => &aist_db_insns,
            Event::Mc => &aist_mc_insns,
        }
    }
}

/// The IDT gate target of each event.
pub fn entry_point(e: Event) -> u64 {
    match e {
        Event::Nmi => aist_nmi_entry as *const () as u64,
        Event::Db => aist_db_entry as *const () as u64,
        Event::Mc => aist_mc_entry as *const () as u64,
    }
}

/// The address of each instruction of `e`'s entry, first push through the commit.
pub fn prologue_instructions(e: Event) -> &'static [u64] {
    &table(e)[..PROLOGUE_INSNS]
}

pub fn prologue(e: Event) -> Prologue {
    let t = table(e);
    Prologue { start: t[PROLOGUE_INSNS], save_done: t[PROLOGUE_INSNS + 1], commit: t[PROLOGUE_INSNS + 2], post_commit: t[PROLOGUE_INSNS + 3] }
}

/// CPU `index`'s layout, from entry-area arithmetic alone (no GS).
pub fn layout(cpu_index: usize) -> Layout {
    let t = cea::stack_tops(cpu_index);
    let stack = |top: u64, pages: usize| Stack { bottom: top - (pages * cea::PAGE) as u64, top };
    Layout {
        ist: [
            stack(t.nmi, cea::IST_STACK_PAGES),
            stack(t.db, cea::IST_STACK_PAGES),
            stack(t.mc, cea::IST_STACK_PAGES),
        ],
        main: stack(t.ist_main, cea::IST_MAIN_STACK_PAGES),
        prologues: [prologue(Event::Nmi), prologue(Event::Db), prologue(Event::Mc)],
    }
}

/// Which CPU's entry area holds `addr` (an IST stack address).
fn cpu_of(addr: u64) -> usize {
    ((addr - CEA_BASE) / CEA_STRIDE) as usize
}

fn percpu_at(cpu_index: usize) -> &'static PerCpu {
    // SAFETY: the per-CPU page is the first page of every mapped entry area; the CPU running
    // an entry on its own IST stack has its area mapped.
    unsafe { &*(cea::area_base(cpu_index) as *const PerCpu) }
}

/// The stacks, read and written directly.
struct Stacks;

impl Memory for Stacks {
    fn read(&self, addr: u64) -> u64 {
        // SAFETY: `identify_and_copy` reads frames on this CPU's IST stacks only.
        unsafe { (addr as *const u64).read_volatile() }
    }
    fn write(&mut self, addr: u64, value: u64) {
        // SAFETY: it writes only below the copy target on this CPU's IST main stack.
        unsafe { (addr as *mut u64).write_volatile(value) }
    }
}

/// The identify step, called by each entry on its IST stack with its complete frame. Returns
/// the RSP to commit to. On a failure it records why and returns the address of the guard page
/// under the IST main stack: the commit then moves RSP there and the next push faults, which
/// the CPU cannot deliver on that stack: a genuine #DF, reported from the #DF stack.
extern "C" fn aist_identify(frame: u64, kind: u64) -> u64 {
    let cpu = cpu_of(frame);
    let layout = layout(cpu);
    let me = percpu_at(cpu);
    let event = Event::from_index(kind).unwrap_or(Event::Nmi);
    match atomic_ist::identify_and_copy(&layout, &mut Stacks, event, frame) {
        Ok(commit) => {
            if commit.proxied > 0 {
                me.aist_proxied.fetch_add(commit.proxied as u64, Ordering::Relaxed);
            }
            commit.rsp
        }
        Err(f) => {
            let code = match f {
                atomic_ist::Failure::SelfNesting(e) => 0x100 | e as u64,
                atomic_ist::Failure::Disagree { .. } => 0x200,
                atomic_ist::Failure::MainStackOverflow => 0x300,
            };
            me.aist_failure.store(code, Ordering::Relaxed);
            layout.main.bottom - 8
        }
    }
}

/// After commit: an event from ring 3 moves to the thread's kernel stack (returns its new RSP);
/// one from ring 0 stays here (returns 0).
extern "C" fn aist_prepare(frame: &TrapFrame) -> u64 {
    if !frame.from_user() {
        return 0;
    }
    let me = percpu_at(cpu_of(frame as *const TrapFrame as u64));
    let dst = me.kernel_stack_top.load(Ordering::Relaxed) - atomic_ist::FRAME_BYTES;
    // SAFETY: from ring 3 the thread's kernel stack is empty: nothing lives below its top.
    unsafe { (dst as *mut TrapFrame).write(*frame) };
    dst
}

/// An NMI, #DB or #MC that interrupted ring 0: GS is whatever that code had, so take the
/// kernel's from the entry area this stack belongs to (not from CS), and put the old one back.
extern "C" fn aist_kernel_event(frame: &mut TrapFrame) {
    crate::syscall::uaccess::clac_on_entry();
    let kernel_gs = cea::area_base(cpu_of(frame as *const TrapFrame as u64));
    let old = GsBase::read().as_u64();
    if old != kernel_gs {
        GsBase::write(VirtAddr::new(kernel_gs));
    }
    let event = super::idt::decode(frame);
    handlers::kernel_ist_event(frame, event);
    if old != kernel_gs {
        GsBase::write(VirtAddr::new(old));
    }
}

const _: () = assert!(offset_of!(PerCpu, kernel_stack_top) > 0);
