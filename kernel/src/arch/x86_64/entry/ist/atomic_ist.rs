//! Atomic-IST-entry (seed 003): the decision logic, pure and host-tested.
//!
//! NMI, #MC and #DB are delivered by the CPU on their own IST stacks. Their entry code does
//! not run its handler there: it moves onto the per-CPU *IST main stack* through the assembly
//! line save → touch → replicate → copy → commit:
//!
//! 1. **save**: the CPU pushed the interrupted RIP/CS/RFLAGS/RSP/SS (save-stage 1); the entry
//!    pushes every general register before touching any (save-stage 2).
//! 2. **identify** (this module): walk the chain of *interrupted, uncommitted* entries. An entry
//!    is uncommitted exactly while RSP is on its IST stack (only entry code runs there); when
//!    RIP is inside an entry's assembly, it must be that entry's (a disagreement is a bug).
//! 3. **replicate + copy**: write, onto the IST main stack, the frame each entry in the chain
//!    *would have* committed, outermost first, as if every interrupted entry had finished: an
//!    interrupted entry's frame records its original context; each nested one records "the
//!    entry below, just after its commit".
//! 4. **commit**: one instruction, `mov rsp, rax`, moves onto the innermost copied frame.
//!
//! When the innermost handler returns, IRET lands on the next entry's post-commit code with
//! RSP at its frame, which runs that handler, and so on out to the original context. Every
//! entry is thereby atomic: it either never started or it committed (possibly by proxy).
//! Copying is idempotent: an event that interrupts the copy recomputes and rewrites the same
//! frames from the same (read-only) sources.
//!
//! The function below reads only its arguments and memory through [`Memory`]: no GS, no
//! per-CPU data, because it runs before the entry knows whose GS is loaded.

use crate::arch::x86_64::entry::frame::TrapFrame;
use core::mem::{offset_of, size_of};

/// The events that use atomic-IST-entry (#DF does not: it keeps its own stack).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    Nmi = 0,
    Db = 1,
    Mc = 2,
}

impl Event {
    pub const ALL: [Event; 3] = [Event::Nmi, Event::Db, Event::Mc];

    pub const fn vector(self) -> u64 {
        match self {
            Event::Nmi => 2,
            Event::Db => 1,
            Event::Mc => 18,
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: u64) -> Option<Event> {
        Event::ALL.get(i as usize).copied()
    }
}

/// A stack as `[bottom, top)`; `top` is the 16-byte-aligned initial RSP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stack {
    pub bottom: u64,
    pub top: u64,
}

impl Stack {
    /// Whether `rsp` points into this stack (`top` itself: empty stack, nothing pushed yet).
    pub fn holds(&self, rsp: u64) -> bool {
        self.bottom <= rsp && rsp <= self.top
    }
}

/// The entry assembly of one event: `[start, save_done)` pushes the frame, `commit` is the
/// `mov rsp, rax`, `post_commit` the first instruction after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prologue {
    pub start: u64,
    pub save_done: u64,
    pub commit: u64,
    pub post_commit: u64,
}

impl Prologue {
    /// RIP inside this entry's uncommitted assembly (the commit instruction included).
    pub fn uncommitted(&self, rip: u64) -> bool {
        self.start <= rip && rip < self.post_commit
    }

    /// RIP before the last general register is pushed.
    pub fn saving(&self, rip: u64) -> bool {
        self.start <= rip && rip < self.save_done
    }
}

/// Where everything is, for one CPU.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Indexed by [`Event::index`].
    pub ist: [Stack; 3],
    pub main: Stack,
    pub prologues: [Prologue; 3],
}

/// Memory as the identify step sees it (the real stacks, or a simulation in the tests).
pub trait Memory {
    fn read(&self, addr: u64) -> u64;
    fn write(&mut self, addr: u64, value: u64);
}

/// What the entry commits to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The new RSP: the ongoing event's frame on the IST main stack.
    pub rsp: u64,
    /// How many interrupted entries this one completed by proxy.
    pub proxied: usize,
}

/// Why an entry cannot go on; the last resort is #DF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// An event arrived inside its own uncommitted entry (the hardware promised it cannot).
    SelfNesting(Event),
    /// RIP says "inside entry X" but RSP is not on X's IST stack, or RSP is on X's stack while
    /// RIP is inside another entry's assembly.
    Disagree { rip: u64, rsp: u64 },
    /// The copies would not fit on the IST main stack.
    MainStackOverflow,
}

pub const FRAME_BYTES: u64 = size_of::<TrapFrame>() as u64;
const WORD: u64 = 8;
const GPR_WORDS: u64 = (offset_of!(TrapFrame, vector) / 8) as u64;
const VECTOR: u64 = offset_of!(TrapFrame, vector) as u64;
const ERROR: u64 = offset_of!(TrapFrame, error_code) as u64;
const RIP: u64 = offset_of!(TrapFrame, rip) as u64;
const RSP: u64 = offset_of!(TrapFrame, rsp) as u64;
/// RIP, CS, RFLAGS, RSP, SS: what the CPU pushed.
const HW_WORDS: u64 = 5;
const _: () = assert!(offset_of!(TrapFrame, ss) as u64 == RIP + 4 * WORD);

/// Where an event's entry keeps its frame: directly under the top of its IST stack (the CPU
/// pushes the 5-word frame there, the entry pushes error code, vector and registers below).
pub fn frame_on_ist(layout: &Layout, e: Event) -> u64 {
    layout.ist[e.index()].top - FRAME_BYTES
}

/// An uncommitted entry in the chain, innermost (the ongoing one) first.
#[derive(Clone, Copy, Debug)]
struct Link {
    event: Event,
    /// Its frame on its IST stack.
    frame: u64,
    /// Whether its register pushes were complete when it was interrupted.
    saved: bool,
}

/// Identifies the chain of uncommitted entries under `ongoing` (whose complete frame is at
/// `own_frame`), writes the frames they would all have committed onto the IST main stack, and
/// says where the ongoing entry commits.
pub fn identify_and_copy(layout: &Layout, mem: &mut impl Memory, ongoing: Event, own_frame: u64) -> Result<Commit, Failure> {
    let mut chain = [Link { event: ongoing, frame: own_frame, saved: true }; 3];
    let mut len = 1;
    // The context the innermost link interrupted; walk outwards while it is an uncommitted
    // entry.
    let (mut rip, mut rsp) = (mem.read(own_frame + RIP), mem.read(own_frame + RSP));
    loop {
        let by_rsp = Event::ALL.into_iter().find(|e| layout.ist[e.index()].holds(rsp));
        let by_rip = Event::ALL.into_iter().find(|e| layout.prologues[e.index()].uncommitted(rip));
        let interrupted = match (by_rsp, by_rip) {
            (None, None) => break,
            (Some(a), Some(b)) if a != b => return Err(Failure::Disagree { rip, rsp }),
            (None, Some(_)) => return Err(Failure::Disagree { rip, rsp }),
            // RSP on an IST stack with RIP outside every entry's assembly: the entry was in
            // its identify call, registers all saved.
            (Some(e), _) => e,
        };
        if chain[..len].iter().any(|l| l.event == interrupted) {
            return Err(Failure::SelfNesting(interrupted));
        }
        let saved = !layout.prologues[interrupted.index()].saving(rip);
        let frame = frame_on_ist(layout, interrupted);
        chain[len] = Link { event: interrupted, frame, saved };
        len += 1;
        rip = mem.read(frame + RIP);
        rsp = mem.read(frame + RSP);
    }
    // `rsp` is now the outermost real context's: if that is a handler already running on the
    // IST main stack, copy below it; otherwise start at the top.
    let target_top = if layout.main.holds(rsp) && layout.main.top != rsp { rsp & !15 } else { layout.main.top };
    if target_top < layout.main.bottom + FRAME_BYTES * len as u64 {
        return Err(Failure::MainStackOverflow);
    }

    // Replicate + copy, outermost first. Registers of an entry interrupted while pushing them
    // were still untouched, so the entry that interrupted it saved the same values.
    let mut gpr_source = [0u64; 3];
    for i in 0..len {
        gpr_source[i] = if chain[i].saved || i == 0 { chain[i].frame } else { gpr_source[i - 1] };
    }
    let mut below = target_top;
    // The entry just copied (one further out), which the next one interrupted.
    let mut previous: Option<(Event, u64)> = None;
    for i in (0..len).rev() {
        let link = chain[i];
        let dst = below - FRAME_BYTES;
        for w in 0..GPR_WORDS {
            mem.write(dst + w * WORD, mem.read(gpr_source[i] + w * WORD));
        }
        mem.write(dst + VECTOR, link.event.vector());
        mem.write(dst + ERROR, 0);
        for w in 0..HW_WORDS {
            mem.write(dst + RIP + w * WORD, mem.read(link.frame + RIP + w * WORD));
        }
        // The entry below `link` is complete as far as `link` is concerned: `link` returns to
        // just after that entry's commit, with RSP at that entry's copied frame.
        if let Some((interrupted, frame)) = previous {
            mem.write(dst + RIP, layout.prologues[interrupted.index()].post_commit);
            mem.write(dst + RSP, frame);
        }
        previous = Some((link.event, dst));
        below = dst;
    }
    Ok(Commit { rsp: below, proxied: len - 1 })
}

#[cfg(test)]
mod tests;
