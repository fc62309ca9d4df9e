//! Exhaustive simulation of atomic-IST-entry.
//!
//! A small machine executes a model of the real entry assembly (the same instruction
//! sequence: push error code, push vector, push the 15 registers, `mov rdi, rsp`, `mov esi,
//! kind`, call the identify step, `mov rsp, rax`, then the shared handler path that pops and
//! IRETs). Events are delivered the way the CPU does it: onto their IST stack, whatever is
//! there. For every starting context, every order of up to three distinct events, and every
//! instruction boundary at which each next event can arrive (including inside the identify
//! call, with its copies half written, and inside the handler's exit path), the test runs the
//! machine to the end and checks that:
//! - each event's handler ran exactly once, innermost first;
//! - each handler saw the frame an atomic delivery would have produced (the outermost one sees
//!   the original context, registers included; a nested one sees "the entry it interrupted,
//!   just after its commit", at that entry's frame on the IST main stack);
//! - the machine ends in exactly the original context, and nothing the interrupted context
//!   had on the IST main stack was overwritten.

use super::*;
use std::collections::BTreeMap;
use std::vec::Vec;

const KCS: u64 = 0x08;
const KSS: u64 = 0x10;
const UCS: u64 = 0x2b;
const USS: u64 = 0x23;
const INSN: u64 = 4;
const IDENT_FN: u64 = 0xffff_ffff_8010_0000;
const COMMON: u64 = 0xffff_ffff_8020_0000;
const GPRS: usize = 15;

fn code_base(e: Event) -> u64 {
    0xffff_ffff_8000_0000 + 0x1000 * e.index() as u64
}

#[derive(Clone, Copy, Debug)]
enum Insn {
    PushImm(u64),
    /// Push general register by TrapFrame index (0 = r15 ... 14 = rax).
    PushGpr(usize),
    MovRdiRsp,
    MovRsiImm(u64),
    CallIdentify,
    /// The identify call's body: 0 computes, 1 writes half the copies, 2 the rest.
    Identify(u8),
    Ret,
    MovRspRax,
    JmpCommon,
    Handle,
    PopGpr(usize),
    AddRsp16,
    Iret,
}

/// The entry of event `e`, instruction by instruction, as in `ist.rs`.
fn prologue_insns(e: Event) -> Vec<Insn> {
    let mut v = vec![Insn::PushImm(0), Insn::PushImm(e.vector())];
    v.extend((0..GPRS).rev().map(Insn::PushGpr)); // rax first ... r15 last
    v.extend([Insn::MovRdiRsp, Insn::MovRsiImm(e.index() as u64), Insn::CallIdentify, Insn::MovRspRax, Insn::JmpCommon]);
    v
}

fn identify_insns() -> Vec<Insn> {
    vec![Insn::Identify(0), Insn::Identify(1), Insn::Identify(2), Insn::Ret]
}

fn common_insns() -> Vec<Insn> {
    let mut v = vec![Insn::Handle];
    v.extend((0..GPRS).map(Insn::PopGpr)); // r15 first ... rax last
    v.extend([Insn::AddRsp16, Insn::Iret]);
    v
}

fn prologue(e: Event) -> Prologue {
    let base = code_base(e);
    let n = prologue_insns(e).len() as u64;
    Prologue {
        start: base,
        save_done: base + (2 + GPRS as u64) * INSN,
        commit: base + (n - 2) * INSN,
        post_commit: base + (n - 1) * INSN,
    }
}

fn layout() -> Layout {
    let stack = |i: u64, pages: u64| Stack { bottom: 0xffff_fe00_0000_0000 + i * 0x10000, top: 0xffff_fe00_0000_0000 + i * 0x10000 + pages * 4096 };
    Layout {
        ist: [stack(0, 1), stack(1, 1), stack(2, 1)],
        main: stack(3, 4),
        prologues: [prologue(Event::Nmi), prologue(Event::Db), prologue(Event::Mc)],
    }
}

fn fetch(rip: u64) -> Insn {
    for e in Event::ALL {
        let base = code_base(e);
        let code = prologue_insns(e);
        if rip >= base && rip < base + code.len() as u64 * INSN {
            return code[((rip - base) / INSN) as usize];
        }
    }
    for (base, code) in [(IDENT_FN, identify_insns()), (COMMON, common_insns())] {
        if rip >= base && rip < base + code.len() as u64 * INSN {
            return code[((rip - base) / INSN) as usize];
        }
    }
    panic!("no code at {rip:#x}");
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Context {
    gpr: [u64; GPRS],
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

#[derive(Clone, Default)]
struct Mem(BTreeMap<u64, u64>);

impl Memory for Mem {
    fn read(&self, addr: u64) -> u64 {
        assert_eq!(addr % 8, 0);
        *self.0.get(&addr).unwrap_or(&0xdead_beef_dead_beef)
    }
    fn write(&mut self, addr: u64, value: u64) {
        self.0.insert(addr, value);
    }
}

/// Records writes instead of doing them, so the identify call can be cut in halves.
struct Recorder<'a> {
    mem: &'a Mem,
    writes: Vec<(u64, u64)>,
}

impl Memory for Recorder<'_> {
    fn read(&self, addr: u64) -> u64 {
        self.writes.iter().rev().find(|(a, _)| *a == addr).map_or_else(|| self.mem.read(addr), |(_, v)| *v)
    }
    fn write(&mut self, addr: u64, value: u64) {
        self.writes.push((addr, value));
    }
}

struct Machine {
    c: Context,
    mem: Mem,
    layout: Layout,
    /// The identify call's pending work (its "local variables").
    pending: Option<(Vec<(u64, u64)>, Result<Commit, Failure>)>,
    handled: Vec<(Event, [u64; 22])>,
    failure: Option<Failure>,
    proxied: usize,
}

impl Machine {
    fn push(&mut self, v: u64) {
        self.c.rsp -= 8;
        self.mem.write(self.c.rsp, v);
    }
    fn pop(&mut self) -> u64 {
        let v = self.mem.read(self.c.rsp);
        self.c.rsp += 8;
        v
    }

    /// Event delivery through an IST gate (SDM Vol. 3A §6.14.4-5).
    fn deliver(&mut self, e: Event) {
        let old = self.c.clone();
        self.c.rsp = self.layout.ist[e.index()].top;
        self.push(old.ss);
        self.push(old.rsp);
        self.push(old.rflags);
        self.push(old.cs);
        self.push(old.rip);
        self.c.rip = self.layout.prologues[e.index()].start;
        self.c.cs = KCS;
        self.c.ss = KSS;
        self.c.rflags &= !(1 << 9 | 1 << 8); // IF, TF
    }

    fn step(&mut self) {
        let insn = fetch(self.c.rip);
        let next = self.c.rip + INSN;
        self.c.rip = next;
        match insn {
            Insn::PushImm(v) => self.push(v),
            Insn::PushGpr(r) => self.push(self.c.gpr[r]),
            Insn::MovRdiRsp => self.c.gpr[9] = self.c.rsp,
            Insn::MovRsiImm(v) => self.c.gpr[10] = v,
            Insn::CallIdentify => {
                self.push(next);
                self.c.rip = IDENT_FN;
            }
            Insn::Identify(0) => {
                let kind = Event::from_index(self.c.gpr[10]).unwrap();
                let frame = self.c.gpr[9];
                let mut rec = Recorder { mem: &self.mem, writes: Vec::new() };
                let result = identify_and_copy(&self.layout, &mut rec, kind, frame);
                self.pending = Some((rec.writes, result));
                // The function body clobbers scratch registers.
                self.c.gpr[14] = 0x5c5c_5c5c; // rax
                self.c.gpr[12] = 0x5c5c_5c5c; // rcx
            }
            Insn::Identify(half) => {
                let (writes, result) = self.pending.clone().expect("identify resumed without its state");
                let n = writes.len();
                let range = if half == 1 { 0..n / 2 } else { n / 2..n };
                for (a, v) in &writes[range] {
                    self.mem.write(*a, *v);
                }
                if half == 2 {
                    match result {
                        Ok(c) => {
                            self.c.gpr[14] = c.rsp;
                            self.proxied += c.proxied;
                        }
                        Err(f) => self.failure = Some(f),
                    }
                }
            }
            Insn::Ret => self.c.rip = self.pop(),
            Insn::MovRspRax => self.c.rsp = self.c.gpr[14],
            Insn::JmpCommon => self.c.rip = COMMON,
            Insn::Handle => {
                let mut f = [0u64; 22];
                for (i, w) in f.iter_mut().enumerate() {
                    *w = self.mem.read(self.c.rsp + 8 * i as u64);
                }
                let e = Event::ALL.into_iter().find(|e| e.vector() == f[15]).expect("frame with a foreign vector");
                self.handled.push((e, f));
                // The handler runs Rust code that clobbers caller-saved registers.
                for r in [14, 12, 11, 10, 9, 7, 6, 5, 4] {
                    self.c.gpr[r] = 0xc10b_b3d0 + r as u64;
                }
            }
            Insn::PopGpr(r) => self.c.gpr[r] = self.pop(),
            Insn::AddRsp16 => self.c.rsp += 16,
            Insn::Iret => {
                self.c.rip = self.pop();
                self.c.cs = self.pop();
                self.c.rflags = self.pop();
                let rsp = self.pop();
                self.c.ss = self.pop();
                self.c.rsp = rsp;
            }
        }
    }
}

/// The starting contexts: user mode, kernel on a thread stack, the SYSCALL gap (ring 0 on the
/// user's stack), and a handler already running on the IST main stack.
fn starts(l: &Layout) -> Vec<(&'static str, Context)> {
    let gpr: [u64; GPRS] = core::array::from_fn(|i| 0x1111_0000_0000_0000 + i as u64 * 0x0101);
    let ctx = |rip, cs, rsp, ss| Context { gpr, rip, cs, rflags: 0x246, rsp, ss };
    vec![
        ("user", ctx(0x40_1234, UCS, 0x7fff_ffff_e000, USS)),
        ("kernel", ctx(0xffff_ffff_8000_9abc, KCS, 0xffff_fd00_0001_0f88, KSS)),
        ("syscall gap", ctx(0xffff_fe00_0000_5000, KCS, 0x7fff_ffff_e008, USS)),
        ("main stack", ctx(0xffff_ffff_8000_9000, KCS, l.main.top - 0x238, KSS)),
    ]
}

/// The frame an atomic delivery would give, and where it would be on the IST main stack.
struct Ideal {
    rip: u64,
    rsp: u64,
    frame_at: u64,
}

fn ideal_frame_at(l: &Layout, interrupted_rsp: u64) -> u64 {
    let top = if l.main.holds(interrupted_rsp) && interrupted_rsp != l.main.top { interrupted_rsp & !15 } else { l.main.top };
    top - FRAME_BYTES
}

/// Runs one schedule: `events[0]` arrives in `start`; each further event arrives after the
/// previous one has executed `delays[i]` instructions.
fn run(start: &Context, events: &[Event], delays: &[usize]) -> Result<usize, String> {
    let l = layout();
    let mut m = Machine { c: start.clone(), mem: Mem::default(), layout: l, pending: None, handled: Vec::new(), failure: None, proxied: 0 };
    // The interrupted handler's live data above its RSP must survive.
    let live: Vec<(u64, u64)> = if l.main.holds(start.rsp) {
        (start.rsp..l.main.top).step_by(8).map(|a| (a, a ^ 0x5a5a)).collect()
    } else {
        Vec::new()
    };
    for (a, v) in &live {
        m.mem.write(*a, *v);
    }
    let mut ideals: Vec<Ideal> = Vec::new();
    // How many handlers had run when each event arrived.
    let mut handled_at_arrival: Vec<usize> = Vec::new();
    for (i, &e) in events.iter().enumerate() {
        if i > 0 {
            for _ in 0..delays[i - 1] {
                m.step();
                if m.failure.is_some() {
                    return Err(format!("identify failed: {:?}", m.failure));
                }
            }
        }
        // Where would an atomic delivery put this event's frame, and what would it record?
        let (rip, rsp) = (m.c.rip, m.c.rsp);
        let ideal = match ideals.last() {
            Some(prev) => {
                let prev_event = events[i - 1];
                let p = l.prologues[prev_event.index()];
                let uncommitted = l.ist[prev_event.index()].holds(rsp);
                if uncommitted {
                    Ideal { rip: p.post_commit, rsp: prev.frame_at, frame_at: prev.frame_at - FRAME_BYTES }
                } else {
                    Ideal { rip, rsp, frame_at: ideal_frame_at(&l, rsp) }
                }
            }
            None => Ideal { rip, rsp, frame_at: ideal_frame_at(&l, rsp) },
        };
        ideals.push(ideal);
        handled_at_arrival.push(m.handled.len());
        m.deliver(e);
    }
    let mut steps = 0;
    while m.c != *start || m.handled.len() < events.len() {
        m.step();
        if let Some(f) = m.failure {
            return Err(format!("identify failed: {f:?}"));
        }
        steps += 1;
        if steps > 10_000 {
            return Err(format!("did not return to the start context; handled {:?}", m.handled.iter().map(|h| h.0).collect::<Vec<_>>()));
        }
    }
    // Handlers: each once; an event still unhandled when a later one arrived finishes after it.
    let order: Vec<Event> = m.handled.iter().map(|h| h.0).collect();
    let mut sorted = order.clone();
    sorted.sort();
    let mut want = events.to_vec();
    want.sort();
    if sorted != want {
        return Err(format!("handlers ran {order:?} for events {events:?}"));
    }
    let position = |e: Event| order.iter().position(|x| *x == e).unwrap();
    for i in 0..events.len() {
        for j in i + 1..events.len() {
            let i_done_before_j = position(events[i]) < handled_at_arrival[j];
            if !i_done_before_j && position(events[j]) > position(events[i]) {
                return Err(format!("{:?} arrived during {:?} but was handled after it: {order:?}", events[j], events[i]));
            }
        }
    }
    for (e, frame) in &m.handled {
        let i = events.iter().position(|x| x == e).unwrap();
        let ideal = &ideals[i];
        if frame[17] != ideal.rip || frame[20] != ideal.rsp {
            return Err(format!(
                "{e:?} saw rip={:#x} rsp={:#x}, an atomic delivery gives rip={:#x} rsp={:#x}",
                frame[17], frame[20], ideal.rip, ideal.rsp
            ));
        }
        if i == 0 && (frame[..GPRS] != start.gpr[..] || frame[18] != start.cs || frame[19] != start.rflags || frame[21] != start.ss) {
            return Err(format!("{e:?} (outermost) did not see the original registers"));
        }
    }
    if m.c != *start {
        return Err("did not come back to the original context".into());
    }
    for (a, v) in &live {
        if m.mem.read(*a) != *v {
            return Err(format!("the interrupted handler's stack at {a:#x} was overwritten"));
        }
    }
    Ok(m.proxied)
}

/// How many instructions an event can execute before the next one arrives: every boundary
/// from its first instruction to the end of its handler's exit path.
fn arrival_points(e: Event) -> usize {
    // prologue + identify body and ret + common path (handle, pops, add, iret excluded)
    prologue_insns(e).len() + identify_insns().len() + common_insns().len() - 1
}

#[test]
fn every_interruption_point_of_every_nesting_order_commits_atomically() {
    let l = layout();
    let mut cases = 0usize;
    let mut proxied_cases = 0usize;
    for (name, start) in starts(&l) {
        for a in Event::ALL {
            run(&start, &[a], &[]).unwrap_or_else(|e| panic!("{name}: [{a:?}]: {e}"));
            cases += 1;
            for b in Event::ALL.into_iter().filter(|&b| b != a) {
                for da in 0..arrival_points(a) {
                    let p = run(&start, &[a, b], &[da]).unwrap_or_else(|e| panic!("{name}: {b:?} in {a:?} after {da}: {e}"));
                    cases += 1;
                    proxied_cases += (p > 0) as usize;
                    for c in Event::ALL.into_iter().filter(|&c| c != a && c != b) {
                        for db in 0..arrival_points(b) {
                            let p = run(&start, &[a, b, c], &[da, db])
                                .unwrap_or_else(|e| panic!("{name}: {c:?} in {b:?} after {db}, in {a:?} after {da}: {e}"));
                            cases += 1;
                            proxied_cases += (p > 0) as usize;
                        }
                    }
                }
            }
        }
    }
    println!("atomic-IST-entry: {cases} interruption cases simulated, {proxied_cases} with entries completed by proxy");
    assert!(cases > 30_000, "the case count shrank: {cases}");
}

#[test]
fn event_nested_into_its_own_uncommitted_entry_is_refused() {
    let l = layout();
    let start = starts(&l)[1].1.clone();
    for d in 0..(prologue_insns(Event::Nmi).len() - 1) {
        let mut m = Machine { c: start.clone(), mem: Mem::default(), layout: l, pending: None, handled: Vec::new(), failure: None, proxied: 0 };
        m.deliver(Event::Nmi);
        for _ in 0..d {
            m.step();
        }
        // An NMI inside the #DB entry inside the NMI entry: the second NMI lands on the first
        // one's stack; the identify step must notice rather than copy garbage.
        m.deliver(Event::Db);
        for _ in 0..5 {
            m.step();
        }
        m.deliver(Event::Nmi);
        let mut steps = 0;
        while m.failure.is_none() && steps < 200 {
            m.step();
            steps += 1;
        }
        assert!(
            matches!(m.failure, Some(Failure::SelfNesting(Event::Nmi)) | Some(Failure::Disagree { .. })),
            "after {d}: {:?}",
            m.failure
        );
    }
}

#[test]
fn rip_in_an_entry_with_rsp_elsewhere_is_a_disagreement() {
    let l = layout();
    let mut mem = Mem::default();
    let frame = frame_on_ist(&l, Event::Db);
    mem.write(frame + RIP, l.prologues[Event::Nmi.index()].start + 8);
    mem.write(frame + RSP, 0xffff_fd00_0000_1000); // a thread stack, not the NMI IST stack
    assert!(matches!(identify_and_copy(&l, &mut mem, Event::Db, frame), Err(Failure::Disagree { .. })));
}

#[test]
fn a_full_ist_main_stack_is_refused_not_overrun() {
    let l = layout();
    let mut mem = Mem::default();
    let frame = frame_on_ist(&l, Event::Nmi);
    mem.write(frame + RIP, 0xffff_ffff_8030_0000); // ordinary kernel code
    mem.write(frame + RSP, l.main.bottom + 64);
    assert_eq!(identify_and_copy(&l, &mut mem, Event::Nmi, frame), Err(Failure::MainStackOverflow));
}
