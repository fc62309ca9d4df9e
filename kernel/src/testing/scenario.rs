//! Boot-test scenarios, chosen with `test=NAME` on the kernel command line. Each one ends with
//! `TEST NAME: PASS` or `TEST NAME: FAIL reason` and powers the machine off (see `harness`).

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::arch::x86_64::entry::extable;
use crate::arch::x86_64::{cea, percpu, smp};
use crate::testing::harness::{finish, Verdict};

pub const NAMES: &[&str] = &[
    "boot", "ipi", "page_fault", "stack_overflow", "timer", "user", "sysret", "user_faults", "preempt",
    "ist_nesting", "syscall_gap", "nmi_storm", "nmi_backtrace", "mce_inject", "nesting",
    // The same without instruction breakpoints (see `DebugSources::WatchOnly`).
    "ist_nesting_watch", "syscall_gap_watch", "nesting_watch",
    "bench", "bench_boot",
    "ipc", "caps", "servers", "server_crash", "hazards", "fpu", "fuzz", "bounded", "memory",
];

/// Runs scenario `name` on the BSP once every CPU is online; never returns.
pub fn run(name: &'static str) -> ! {
    log::info!("running scenario {name} on {} CPUs", smp::online());
    match name {
        "boot" => finish(Verdict::Pass),
        "ipi" => ipi(),
        "page_fault" => page_fault(),
        "stack_overflow" => stack_overflow(),
        "timer" => timer(),
        "user" => user_program("init", "user", |p| {
            let all = (0..smp::online()).all(|c| p.ran_on.contains(c));
            if p.faults.load(Ordering::Relaxed) != 0 {
                Err("a thread of init faulted")
            } else if !all {
                Err("init's threads did not run on every CPU")
            } else {
                Ok(())
            }
        }),
        "sysret" => user_program("utest", "sysret", |p| {
            let (sysret, iret, bad) = exit_path_totals();
            log::info!("exit paths: {sysret} by SYSRET, {iret} by IRET, {bad} threads killed by a faulting IRET");
            if sysret < 1000 {
                Err("ordinary system calls did not return by SYSRET")
            } else if iret < 3 {
                Err("SYSRET-unsafe returns did not go through IRET")
            } else if p.fault_vectors() & (1 << 13) == 0 {
                // #GP on the IRET in ring 0 (Intel, counted in `bad`) or on the fetch in
                // ring 3 (AMD, QEMU TCG): either way a #GP must have killed the thread.
                Err("the non-canonical return did not kill its thread with #GP")
            } else {
                Ok(())
            }
        }),
        "user_faults" => user_program("utest", "user_faults", |p| {
            let killed = p.fault_vectors();
            let want = [0u8, 3, 6, 13, 14];
            match want.iter().find(|v| killed & (1 << **v) == 0) {
                Some(_) => Err("not every user exception killed its thread"),
                None => Ok(()),
            }
        }),
        "preempt" => user_program("utest", "preempt", |_| Ok(())),
        // IPC within one process: call/reply on and across CPUs, counts checked end to end
        // by utest; here, that both delivery paths were taken.
        "ipc" => user_program("utest", "ipc", |_| {
            let s = &crate::ipc::STATS;
            let (fast, cross) = (s.fastpath.load(Ordering::Relaxed), s.cross_cpu.load(Ordering::Relaxed));
            log::info!("IPC: {} messages, {fast} by the fastpath, {cross} cross-CPU wake-ups", s.messages.load(Ordering::Relaxed) + fast);
            if fast == 0 {
                Err("no call took the fastpath")
            } else if smp::online() > 1 && cross == 0 {
                Err("no message crossed CPUs")
            } else {
                Ok(())
            }
        }),
        "caps" => user_program("utest", "caps", |_| Ok(())),
        "fpu" => fpu(),
        // The entry-hazard suite: every case states its outcome and utest checks each one.
        "hazards" => user_program("utest", "hazards", |_| Ok(())),
        "bounded" => user_program("utest", "bounded", |_| Ok(())),
        "servers" | "server_crash" | "memory" => servers(name),
        "fuzz" => crate::testing::fuzz::run(),
        // The FRED/IST comparison (`cargo xtask compare`): `bench` times each event's round trip,
        // checks the events really happened, and prints `BENCH ...` lines for the host.
        "bench" => user_program("bench", "all", |_| Ok(())),
        // Only the boot milestones (`cargo xtask bench` at 4 CPUs and more): no event loop.
        "bench_boot" => user_program("bench", "boot", |_| Ok(())),
        "ist_nesting" => ist_nesting(DebugSources::All),
        "ist_nesting_watch" => ist_nesting(DebugSources::WatchOnly),
        "nesting" | "nesting_watch" => {
            let sources = if name == "nesting" { DebugSources::All } else { DebugSources::WatchOnly };
            match crate::arch::x86_64::entry::backend() {
                crate::arch::x86_64::entry::Backend::Ist => ist_nesting(sources),
                crate::arch::x86_64::entry::Backend::Fred => fred_nesting(sources),
            }
        }
        "syscall_gap" => syscall_gap(DebugSources::All),
        "syscall_gap_watch" => syscall_gap(DebugSources::WatchOnly),
        "nmi_storm" => nmi_storm(),
        "mce_inject" => mce_inject(),
        "nmi_backtrace" => {
            // The others sit in HLT with interrupts on, or in user code: an NMI reaches them
            // either way, and each reports where it was.
            let want = smp::online() - 1;
            let got = smp::backtrace_others(500_000_000);
            if got == want {
                finish(Verdict::Pass)
            }
            finish(Verdict::Fail(format_args!("{got} of {want} CPUs answered the backtrace NMI")))
        }
        other => finish(Verdict::Fail(format_args!("unknown scenario {other:?}; known: {NAMES:?}"))),
    }
}

/// Waits, sleeping between timer ticks, until `done()` or `ticks` of this CPU's timer passed.
fn wait_until(ticks: u64, done: impl Fn() -> bool) -> bool {
    let start = percpu::this().ticks.load(Ordering::Relaxed);
    while !done() {
        if percpu::this().ticks.load(Ordering::Relaxed) - start >= ticks {
            return done();
        }
        crate::sched::idle_once();
    }
    true
}

static PING_FAILURES: AtomicUsize = AtomicUsize::new(0);

/// Every CPU pings every CPU (itself included, through a self-IPI) and waits for each answer.
fn ipi() -> ! {
    fn ping_everyone() {
        let n = smp::online();
        for target in 0..n {
            smp::ping(target);
        }
        let all = wait_until(500, || (0..n).all(smp::answered_by));
        let me = percpu::this().cpu_index;
        if all {
            log::info!("cpu {me}: all {n} CPUs answered its ping");
        } else {
            let missing = (0..n).filter(|&t| !smp::answered_by(t)).count();
            log::error!("cpu {me}: {missing} of {n} CPUs never answered its ping");
            PING_FAILURES.fetch_add(1, Ordering::AcqRel);
        }
    }
    smp::run_on_all(ping_everyone);
    match PING_FAILURES.load(Ordering::Acquire) {
        0 => finish(Verdict::Pass),
        f => finish(Verdict::Fail(format_args!("{f} CPUs missed answers"))),
    }
}

static FAULT_FAILURES: AtomicUsize = AtomicUsize::new(0);

/// Every CPU reads its own entry-stack guard page, which must be unmapped: the #PF handler
/// must report the fault with that exact CR2 and resume at the fixup.
fn page_fault() -> ! {
    fn probe_guard() {
        let me = percpu::this();
        let guard = cea::stack_tops(me.cpu_index).entry - 2 * cea::PAGE as u64 + 0x10;
        assert_eq!(cea::guard_containing(me.cpu_index, guard), Some("entry stack"));
        me.last_fixup_cr2.store(0, Ordering::Relaxed);
        let read = extable::probe_read_u64(guard);
        let cr2 = me.last_fixup_cr2.load(Ordering::Relaxed);
        if read.is_none() && cr2 == guard {
            log::info!("cpu {}: kernel #PF at {guard:#x} reported with the right CR2", me.cpu_index);
        } else {
            log::error!("cpu {}: read of guard {guard:#x} gave {read:?}, CR2 seen {cr2:#x}", me.cpu_index);
            FAULT_FAILURES.fetch_add(1, Ordering::AcqRel);
        }
    }
    smp::run_on_all(probe_guard);
    match FAULT_FAILURES.load(Ordering::Acquire) {
        0 => finish(Verdict::Pass),
        f => finish(Verdict::Fail(format_args!("{f} CPUs did not see the expected #PF"))),
    }
}

static OVERFLOW_STARTED: AtomicBool = AtomicBool::new(false);

/// The last CPU recurses until its kernel stack runs into the guard page. The #PF cannot be
/// delivered on the overflowed stack, so the CPU raises #DF on its own IST stack, whose
/// handler checks where it is and ends the scenario.
fn stack_overflow() -> ! {
    #[allow(unconditional_recursion)]
    #[inline(never)]
    fn recurse(depth: u64) -> u64 {
        let mut frame = [0u8; 256];
        core::hint::black_box(&mut frame);
        frame[0] = depth as u8;
        recurse(depth + 1) + core::hint::black_box(frame[1]) as u64
    }
    fn overflow() {
        let me = percpu::this();
        me.expect_stack_overflow.store(true, Ordering::Release);
        OVERFLOW_STARTED.store(true, Ordering::Release);
        log::info!("cpu {}: recursing towards the guard page at {:#x}", me.cpu_index, me.boot_stack_bottom - 4096);
        core::hint::black_box(recurse(0));
    }
    let target = smp::online() - 1;
    if target == percpu::this().cpu_index {
        overflow();
    } else {
        smp::run_on(target, overflow);
    }
    wait_until(1000, || false);
    finish(Verdict::Fail(format_args!(
        "no double fault reported by cpu {target} (recursion started: {})",
        OVERFLOW_STARTED.load(Ordering::Acquire)
    )))
}

fn exit_path_totals() -> (u64, u64, u64) {
    (0..smp::online()).fold((0, 0, 0), |(s, i, b), c| {
        let p = percpu::of(c);
        (
            s + p.sysret_exits.load(Ordering::Relaxed),
            i + p.iret_exits.load(Ordering::Relaxed),
            b + p.bad_iret_kills.load(Ordering::Relaxed),
        )
    })
}

/// Starts boot module `module` with argument `arg`, waits (up to 30 s) for it to exit with
/// status 0, then applies `check` to what the kernel saw of it.
fn user_program(module: &str, arg: &str, check: impl Fn(&crate::sched::Process) -> Result<(), &'static str>) -> ! {
    let process = match run_user(module, arg) {
        Ok(p) => p,
        Err(why) => finish(Verdict::Fail(format_args!("{why}"))),
    };
    match check(&process) {
        Ok(()) => finish(Verdict::Pass),
        Err(why) => finish(Verdict::Fail(format_args!("{why}"))),
    }
}

/// init (started by the kernel for these scenarios, READY already printed with its servers)
/// runs the scenario's user side; its exit status is the verdict, plus, for `servers`, proof
/// that the console's UART interrupts arrived through the I/O APIC.
fn servers(name: &str) -> ! {
    let Some(init) = crate::syscall::ipc::init_process() else {
        finish(Verdict::Fail(format_args!("init did not start")))
    };
    if !wait_until(4000, || init.is_finished()) {
        // Where is everybody? (The answers are queued for the console if it still runs.)
        crate::klog::take_over(false);
        smp::backtrace_others(50_000_000);
        finish(Verdict::Fail(format_args!("init did not finish ({} threads alive)", init.live_threads())));
    }
    let irqs = crate::arch::x86_64::ioapic::COUNTS[4].load(Ordering::Relaxed);
    let fast = crate::ipc::STATS.fastpath.load(Ordering::Relaxed);
    let (parked, missed) = (crate::mm::heap::PARKED_TAKEN.load(Ordering::Relaxed), crate::mm::heap::PARKED_MISSED.load(Ordering::Relaxed));
    log::info!("COM1 interrupts: {irqs}; IPC fastpath deliveries: {fast}; kernel objects made fallibly: {parked} (blocks parked but not taken: {missed})");
    match init.exit_code() {
        0 if name == "servers" && irqs == 0 => finish(Verdict::Fail(format_args!("the console took no UART interrupt"))),
        // The victims' register-only calls to echo (pinned to echo's CPU) and echo's
        // register-only replies between processes go through the fastpath.
        0 if name == "server_crash" && fast == 0 => finish(Verdict::Fail(format_args!("no IPC between the servers took the fastpath"))),
        // Every thread, endpoint, notification, process and capability node a system call made
        // came from a block parked for it (`fallible::try_arc`): a miss means `Arc::new` asked
        // for another layout, and such objects would abort on a full heap again.
        0 if parked == 0 || missed != 0 => finish(Verdict::Fail(format_args!("fallible Arc: {parked} parked blocks taken, {missed} missed"))),
        0 => finish(Verdict::Pass),
        code => finish(Verdict::Fail(format_args!("init exited with status {code}"))),
    }
}

/// Every CPU's LAPIC timer must tick at least 10 times.
fn timer() -> ! {
    const WANT: u64 = 10;
    let n = smp::online();
    if wait_until(1000, || (0..n).all(|c| percpu::ticks_of(c) >= WANT)) {
        for c in 0..n {
            log::info!("cpu {c}: {} timer ticks", percpu::ticks_of(c));
        }
        finish(Verdict::Pass)
    }
    let slow = (0..n).filter(|&c| percpu::ticks_of(c) < WANT).count();
    finish(Verdict::Fail(format_args!("{slow} CPUs counted fewer than {WANT} ticks")))
}

/// What a debug register slot watches.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Executing the instruction at the address: a fault, before that instruction runs.
    Execute,
    /// A write to the aligned 8 bytes at the address: a trap, after the writing instruction.
    Write8,
    /// A read or write of the aligned 2 bytes at the address (a selector, for `mov ss`).
    Access2,
}

/// Sets instruction breakpoint `slot` (0..=2) at `addr` on this CPU, or clears it (`None`).
fn breakpoint(slot: usize, addr: Option<u64>) {
    debug_register(slot, addr.map(|a| (a, Watch::Execute)));
}

/// Arms debug register `slot` (0..=2) to watch `addr` as `watch` on this CPU, or disarms it.
pub fn debug_register(slot: usize, watch: Option<(u64, Watch)>) {
    // DR7: L<n> (bit 2n) enables slot n; its R/W field (bits 16+4n, 17+4n) is 00 for
    // instruction execution, 01 for data writes and 11 for reads and writes; its LEN field
    // (bits 18+4n, 19+4n) is 00 for instructions, 01 for 2 bytes and 10 for 8 bytes. Bit 10 is
    // reserved-one.
    let (addr, rw_len) = match watch {
        None => (0, 0),
        Some((a, Watch::Execute)) => (a, 0b0000),
        Some((a, Watch::Write8)) => {
            assert!(a % 8 == 0, "an 8-byte watchpoint needs an 8-byte aligned address");
            (a, 0b1001)
        }
        Some((a, Watch::Access2)) => {
            assert!(a % 2 == 0, "a 2-byte watchpoint needs a 2-byte aligned address");
            (a, 0b0111)
        }
    };
    // SAFETY: debug registers are per CPU and only these scenarios use them; slot and fields
    // are encoded as above.
    unsafe {
        match slot {
            0 => core::arch::asm!("mov dr0, {}", in(reg) addr),
            1 => core::arch::asm!("mov dr1, {}", in(reg) addr),
            2 => core::arch::asm!("mov dr2, {}", in(reg) addr),
            _ => unreachable!(),
        }
        let mut dr7: u64;
        core::arch::asm!("mov {}, dr7", out(reg) dr7);
        dr7 |= 1 << 10;
        dr7 &= !(0b1111 << (16 + 4 * slot));
        dr7 |= rw_len << (16 + 4 * slot);
        if watch.is_some() { dr7 |= 1 << (2 * slot) } else { dr7 &= !(1 << (2 * slot)) }
        core::arch::asm!("mov dr7, {}", in(reg) dr7);
    }
}

/// Which #DB sources the breakpoint scenarios use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DebugSources {
    /// Instruction breakpoints and write watchpoints.
    All,
    /// Write watchpoints only (`*_watch` scenarios): for Bochs built without its internal
    /// debugger and run with more than one CPU, where every instruction breakpoint that fires
    /// re-raises #DB forever without executing an instruction (README, emulator findings).
    WatchOnly,
}

/// A #DB nested into each boundary of the NMI entry in turn, each time followed by a
/// self-NMI: the #DB must complete the unfinished NMI entry by proxy and return to just after
/// the NMI's commit; the NMI handler must still see the context the NMI interrupted. Two ways
/// to place the #DB: an instruction breakpoint on each of the 21 entry instructions (a fault
/// before it), and a write watchpoint on the stack slot each of the 17 pushes writes (a trap
/// after the push, before the next instruction).
fn ist_nesting(sources: DebugSources) -> ! {
    use crate::arch::x86_64::entry::ist::aist;
    use crate::arch::x86_64::entry::ist::atomic_ist::{self, Event, FRAME_BYTES};
    use crate::arch::x86_64::entry::frame::TrapFrame;
    let me = percpu::this();
    let layout = aist::layout(me.cpu_index);
    let nmi_frame = layout.main.top - FRAME_BYTES;
    let prologue = layout.prologues[Event::Nmi.index()];
    let post_commit = prologue.post_commit;
    let insns = aist::prologue_instructions(Event::Nmi);
    // Nests one #DB at the boundary before instruction `at` through `watch`; false if an
    // instruction breakpoint on the first instruction did not fire (tolerated, see below).
    let nest = |at: usize, watch: (u64, Watch)| -> bool {
        let (nmis, dbs, proxied) = (me.nmi_count.load(Ordering::Relaxed), me.db_count.load(Ordering::Relaxed), me.aist_proxied.load(Ordering::Relaxed));
        debug_register(0, Some(watch));
        crate::arch::x86_64::apic::send_nmi(smp::apic_id(me.cpu_index));
        let arrived = wait_until(100, || me.nmi_count.load(Ordering::Relaxed) > nmis);
        debug_register(0, None);
        let db = [me.last_db[0].load(Ordering::Relaxed), me.last_db[1].load(Ordering::Relaxed)];
        let nmi = [me.last_nmi[0].load(Ordering::Relaxed), me.last_nmi[1].load(Ordering::Relaxed)];
        let fired = me.db_count.load(Ordering::Relaxed) - dbs;
        let how = match watch.1 {
            Watch::Execute => "instruction breakpoint on",
            Watch::Write8 => "write watchpoint before",
            Watch::Access2 => "access watchpoint on",
        };
        if arrived && fired == 0 && at == 0 && watch.1 == Watch::Execute && !layout.main.holds(nmi[1]) {
            // Bochs does not check instruction breakpoints on the first instruction after an
            // event delivery; the NMI itself must still have been handled correctly.
            log::warn!("no #DB at NMI entry instruction 0 on this CPU model: the breakpoint did not fire");
            return false;
        }
        let problem = if !arrived {
            Some("the NMI never arrived")
        } else if fired != 1 {
            Some("the breakpoint did not raise exactly one #DB")
        } else if me.aist_proxied.load(Ordering::Relaxed) != proxied + 1 {
            Some("the #DB did not complete the NMI entry by proxy")
        } else if db != [post_commit, nmi_frame] {
            Some("the #DB handler did not see the NMI just after its commit")
        } else if layout.main.holds(nmi[1]) || (insns[0]..=post_commit).contains(&nmi[0]) {
            Some("the NMI handler saw its own entry instead of the interrupted context")
        } else {
            None
        };
        if let Some(why) = problem {
            finish(Verdict::Fail(format_args!(
                "{how} NMI entry instruction {at} at {:#x}: {why} (#DB saw rip={:#x} rsp={:#x}, NMI saw rip={:#x} rsp={:#x})",
                insns[at], db[0], db[1], nmi[0], nmi[1]
            )));
        }
        true
    };
    let mut by_breakpoint = 0;
    if sources == DebugSources::All {
        for (i, &addr) in insns.iter().enumerate() {
            by_breakpoint += nest(i, (addr, Watch::Execute)) as usize;
        }
    }
    // Push j (instruction j, up to the save) writes the frame slot `error_code - 8 j` on the
    // NMI's IST stack, below the CPU's frame; its watchpoint fires before instruction j + 1.
    let Some(pushes) = insns.iter().position(|&a| a == prologue.save_done) else {
        finish(Verdict::Fail(format_args!("the NMI entry's save_done is not one of its instructions")))
    };
    let error_slot = atomic_ist::frame_on_ist(&layout, Event::Nmi) + core::mem::offset_of!(TrapFrame, error_code) as u64;
    for j in 0..pushes {
        nest(j + 1, (error_slot - 8 * j as u64, Watch::Write8));
    }
    log::info!(
        "#DB nested by instruction breakpoint at {by_breakpoint} of the {} NMI entry instructions{}, by write watchpoint after each of its {pushes} pushes; {} entries completed by proxy on cpu {}",
        insns.len(),
        if sources == DebugSources::All { "" } else { " (instruction breakpoints not used)" },
        me.aist_proxied.load(Ordering::Relaxed),
        me.cpu_index
    );
    finish(Verdict::Pass)
}

/// FRED's stack levels at work: a #DB (level 1) raised inside the NMI handler (level 2) runs on
/// the NMI's stack, without a switch, because its level is not above the current one. The #DB
/// comes from an instruction breakpoint on the handler's first instruction, then from a write
/// watchpoint on the first word the handler stores (`last_nmi[0]`, written only there).
fn fred_nesting(sources: DebugSources) -> ! {
    let me = percpu::this();
    let tops = cea::stack_tops(me.cpu_index);
    let size = (cea::FRED_STACK_PAGES * cea::PAGE) as u64;
    let level = |top: u64| top - size..top;
    let (level1, level2) = (level(tops.fred[0]), level(tops.fred[1]));
    let target = crate::arch::x86_64::entry::nmi_handler_address();
    let round = |watch: (u64, Watch)| {
        let (nmis, dbs) = (me.nmi_count.load(Ordering::Relaxed), me.db_count.load(Ordering::Relaxed));
        debug_register(0, Some(watch));
        crate::arch::x86_64::apic::send_nmi(smp::apic_id(me.cpu_index));
        let arrived = wait_until(100, || me.nmi_count.load(Ordering::Relaxed) > nmis);
        debug_register(0, None);
        let (db_rip, db_rsp, handler_rsp) =
            (me.last_db[0].load(Ordering::Relaxed), me.last_db[1].load(Ordering::Relaxed), me.db_handler_rsp.load(Ordering::Relaxed));
        let how = match watch.1 {
            Watch::Execute => "instruction breakpoint",
            Watch::Write8 | Watch::Access2 => "write watchpoint",
        };
        log::info!(
            "#DB by {how} in the NMI handler: interrupted rip={db_rip:#x} rsp={db_rsp:#x}, handler rsp={handler_rsp:#x}; level 1 {:#x}..{:#x}, level 2 {:#x}..{:#x}",
            level1.start, level1.end, level2.start, level2.end
        );
        // An instruction breakpoint stops before the handler's first instruction; a write
        // watchpoint right after the store, a few instructions into the handler.
        let rip_ok = match watch.1 {
            Watch::Execute => db_rip == target,
            Watch::Write8 | Watch::Access2 => db_rip > target && db_rip - target < 0x1000,
        };
        if !arrived || me.db_count.load(Ordering::Relaxed) != dbs + 1 {
            finish(Verdict::Fail(format_args!("{how}: no #DB in the NMI handler (NMI arrived: {arrived})")))
        }
        if !rip_ok || !level2.contains(&db_rsp) {
            finish(Verdict::Fail(format_args!("{how}: the #DB did not interrupt the NMI handler on the level-2 stack")))
        }
        if !level2.contains(&handler_rsp) || level1.contains(&handler_rsp) {
            finish(Verdict::Fail(format_args!("{how}: the #DB handler switched stacks (rsp {handler_rsp:#x})")))
        }
    };
    if sources == DebugSources::All {
        round((target, Watch::Execute));
    }
    round((me.last_nmi[0].as_ptr() as u64, Watch::Write8));
    finish(Verdict::Pass)
}

/// #DB in the SYSCALL gap and on the SYSRET, on every CPU, while init's workers make system
/// calls: an instruction breakpoint on the first instruction of the SYSCALL trampoline (ring 0,
/// user RSP and GS), a write watchpoint on the entry-stack word where that instruction saves
/// the user RSP (a #DB right after it: ring 0, user RSP and GS still), and an instruction
/// breakpoint on the SYSRET (ring 0 again, user RSP and GS). Each #DB must be handled on the
/// IST main stack with the kernel GS found from the MSR, and the calls must carry on unharmed.
/// With `DebugSources::WatchOnly` only the watchpoint is armed: nothing between the exit's
/// SWAPGS and its SYSRET touches memory, so the SYSRET side needs an instruction breakpoint.
fn syscall_gap(sources: DebugSources) -> ! {
    use crate::arch::x86_64::entry::ist;
    fn arm_watchpoint() {
        let cpu = percpu::this().cpu_index;
        debug_register(2, Some((cea::area_base(cpu) + cea::offsets::ENTRY_STACK_SCRATCH as u64, Watch::Write8)));
    }
    fn arm_all() {
        let cpu = percpu::this().cpu_index;
        breakpoint(0, Some(cea::syscall_trampoline_alias(cpu)));
        breakpoint(1, Some(ist::sysret_instruction()));
        arm_watchpoint();
    }
    fn disarm() {
        breakpoint(0, None);
        breakpoint(1, None);
        debug_register(2, None);
    }
    let (arm, armed): (fn(), u64) = match sources {
        DebugSources::All => (arm_all, 3),
        DebugSources::WatchOnly => (arm_watchpoint, 1),
    };
    let before: alloc::vec::Vec<u64> = (0..smp::online()).map(|c| percpu::of(c).db_count.load(Ordering::Relaxed)).collect();
    smp::run_on_all(arm);
    let ran = run_user("utest", "user");
    smp::run_on_all(disarm);
    let hits: alloc::vec::Vec<u64> = (0..smp::online()).map(|c| percpu::of(c).db_count.load(Ordering::Relaxed) - before[c]).collect();
    log::info!("#DB in the SYSCALL gap and on SYSRET ({armed} debug registers armed), per CPU: {hits:?}");
    if let Err(why) = ran {
        finish(Verdict::Fail(format_args!("{why}")))
    }
    match hits.iter().position(|&h| h < armed) {
        Some(c) => finish(Verdict::Fail(format_args!("cpu {c} took {} gap #DBs, expected at least {armed}", hits[c]))),
        None => finish(Verdict::Pass),
    }
}

static STORM_ROUNDS_DONE: AtomicUsize = AtomicUsize::new(0);

/// A storm thread: sends NMIs to every other CPU, at least `min_rounds` times and on until
/// STORM_STOP, sleeping now and then (the scenario itself waits in CPU 0's idle context, which
/// only runs when nothing is ready there).
/// Whether each storm thread also arms a write watchpoint inside its own CPU's NMI path, so
/// that the NMIs it receives take a nested #DB (atomic-IST-entry completing the NMI's entry by
/// proxy; under FRED a #DB in the NMI handler on its level-2 stack).
static STORM_NESTS_DB: AtomicBool = AtomicBool::new(false);
/// With a value below `usize::MAX`, the storm threads send their NMIs to this CPU only (and
/// come from at most three other CPUs), so that one CPU takes a steady storm without starving
/// the emulator: under TCG every NMI with a nested #DB is slow, and eight senders at once left
/// `fpu` unfinished after a minute on two host cores.
static STORM_TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Where the NMI path writes on `cpu`: under IST the slot of the NMI entry's fourth push on the
/// NMI's IST stack (before its commit), under FRED `nmi()`'s store of the interrupted RIP.
fn nmi_path_slot(cpu: usize) -> u64 {
    use crate::arch::x86_64::entry::frame::TrapFrame;
    use crate::arch::x86_64::entry::ist::{aist, atomic_ist};
    match crate::arch::x86_64::entry::backend() {
        crate::arch::x86_64::entry::Backend::Ist => {
            let layout = aist::layout(cpu);
            atomic_ist::frame_on_ist(&layout, atomic_ist::Event::Nmi) + core::mem::offset_of!(TrapFrame, error_code) as u64 - 8 * 3
        }
        crate::arch::x86_64::entry::Backend::Fred => percpu::of(cpu).last_nmi[0].as_ptr() as u64,
    }
}

extern "C" fn storm(min_rounds: u64) {
    let me = percpu::this().cpu_index;
    let nest = STORM_NESTS_DB.load(Ordering::Acquire);
    if nest {
        debug_register(1, Some((nmi_path_slot(me), Watch::Write8)));
    }
    let mut round = 0u64;
    while round < min_rounds || !STORM_STOP.load(Ordering::Acquire) {
        round += 1;
        let target = STORM_TARGET.load(Ordering::Relaxed);
        for c in (0..smp::online()).filter(|&c| c != me && (target == usize::MAX || c == target)) {
            crate::arch::x86_64::apic::send_nmi(smp::apic_id(c));
        }
        if round % 8 == 0 {
            crate::sched::sleep_ticks(1);
        }
    }
    if nest {
        debug_register(1, None);
    }
    STORM_ROUNDS_DONE.fetch_add(1, Ordering::AcqRel);
}

/// Arms (1) or disarms (0) this CPU's watchpoint in its NMI path; run as a kernel thread on
/// the CPU a targeted storm hits (debug registers are per CPU and outlive the thread).
extern "C" fn nmi_path_watch(arm: u64) {
    let me = percpu::this().cpu_index;
    debug_register(1, (arm == 1).then(|| (nmi_path_slot(me), Watch::Write8)));
    ARMED_TARGETS.fetch_add(1, Ordering::AcqRel);
}
static ARMED_TARGETS: AtomicUsize = AtomicUsize::new(0);

/// Runs `nmi_path_watch(arm)` on `cpu` and waits for it.
fn set_nmi_path_watch(cpu: usize, arm: bool) {
    let before = ARMED_TARGETS.load(Ordering::Acquire);
    if crate::sched::spawn_kernel(nmi_path_watch, arm as u64, Some(cpu)).is_none()
        || !wait_until(500, || ARMED_TARGETS.load(Ordering::Acquire) > before)
    {
        finish(Verdict::Fail(format_args!("cannot set the NMI-path watchpoint on cpu {cpu}")))
    }
}

fn start_storm(min_rounds: u64) {
    let target = STORM_TARGET.load(Ordering::Relaxed);
    if target != usize::MAX && STORM_NESTS_DB.load(Ordering::Acquire) {
        set_nmi_path_watch(target, true);
    }
    let senders: alloc::vec::Vec<usize> = match target {
        usize::MAX => (0..smp::online()).collect(),
        t => (0..smp::online()).filter(|&c| c != t).take(3).collect(),
    };
    for &c in &senders {
        if crate::sched::spawn_kernel(storm, min_rounds, Some(c)).is_none() {
            finish(Verdict::Fail(format_args!("cannot start the NMI storm thread on cpu {c}")))
        }
    }
}
static STORM_STOP: AtomicBool = AtomicBool::new(false);
/// Rounds each storm thread runs at least, and on until the user program is done.
const STORM_ROUNDS: u64 = 200;

/// Every CPU floods the others with NMIs (from a kernel thread) while utest's register-checking
/// system-call loop runs: no register or stack value may be corrupted.
fn nmi_storm() -> ! {
    let n = smp::online();
    let before: u64 = (0..n).map(|c| percpu::of(c).nmi_count.load(Ordering::Relaxed)).sum();
    start_storm(STORM_ROUNDS);
    let ran = run_user("utest", "sysret");
    STORM_STOP.store(true, Ordering::Release);
    if !wait_until(3000, || STORM_ROUNDS_DONE.load(Ordering::Acquire) == n) {
        finish(Verdict::Fail(format_args!("the NMI storm threads did not finish")))
    }
    let nmis: u64 = (0..n).map(|c| percpu::of(c).nmi_count.load(Ordering::Relaxed)).sum::<u64>() - before;
    let proxied: u64 = (0..n).map(|c| percpu::of(c).aist_proxied.load(Ordering::Relaxed)).sum();
    let process = match ran {
        Ok(p) => p,
        Err(why) => finish(Verdict::Fail(format_args!("{why}"))),
    };
    let faults = process.demand_faults.load(Ordering::Relaxed);
    log::info!(
        "NMI storm: {nmis} NMIs taken on {n} CPUs while utest checked its registers across system calls and {faults} page faults; {proxied} entries completed by proxy"
    );
    if faults == 0 {
        finish(Verdict::Fail(format_args!("utest took no page faults")))
    }
    if n > 1 && nmis == 0 {
        finish(Verdict::Fail(format_args!("no NMI arrived")))
    }
    finish(Verdict::Pass)
}


/// Machine checks injected from outside (QEMU's `mce` monitor command, driven by xtask after
/// the marker line) during an NMI storm, while utest checks its registers: every #MC must be
/// reported and recovered from, and nothing else may break.
fn mce_inject() -> ! {
    let n = smp::online();
    start_storm(0);
    let mces = || (0..n).map(|c| percpu::of(c).mc_count.load(Ordering::Relaxed)).sum::<u64>();
    crate::println!("{}", abi::harness::MCE_INJECT_MARKER);
    let arrived = wait_until(2000, || mces() >= n as u64);
    let ran = run_user("utest", "sysret");
    STORM_STOP.store(true, Ordering::Release);
    wait_until(3000, || STORM_ROUNDS_DONE.load(Ordering::Acquire) == n);
    log::info!("{} machine checks recovered on {n} CPUs during the NMI storm", mces());
    if !arrived {
        finish(Verdict::Fail(format_args!("only {} of {n} injected machine checks arrived", mces())))
    }
    if let Err(why) = ran {
        finish(Verdict::Fail(format_args!("{why}")))
    }
    finish(Verdict::Pass)
}

/// Runs boot module `module` with `arg` to completion (up to 30 s): the process if it exited
/// with status 0, else why not.
fn run_user(module: &str, arg: &str) -> Result<alloc::sync::Arc<crate::sched::Process>, alloc::string::String> {
    use alloc::format;
    let image = crate::boot::module(module).ok_or_else(|| format!("no boot module named {module}"))?;
    let process = crate::sched::Process::spawn(module, image, arg).map_err(|e| format!("cannot start {module}: {e}"))?;
    if !wait_until(3000, || process.is_finished()) {
        return Err(format!("{module} {arg} did not finish ({} threads alive)", process.live_threads()));
    }
    match process.exit_code() {
        0 => Ok(process),
        code => Err(format!("{module} {arg} exited with status {code}")),
    }
}

/// The user FPU/SIMD state (utest `fpu`): two processes pinned to the last CPU switch between
/// each other thousands of times while an NMI storm runs on every CPU (each NMI taking a
/// nested #DB in its path), and check every register after each switch; then a process leaves a secret in the registers and exits, and
/// a fresh process on the same CPU must see only the initial state.
fn fpu() -> ! {
    use alloc::format;
    use alloc::vec::Vec;
    let n = smp::online();
    let cpu = n - 1;
    let Some(image) = crate::boot::module("utest") else { finish(Verdict::Fail(format_args!("no utest module"))) };
    let start = |arg: &str| {
        crate::sched::Process::spawn_with("utest", image, arg, Vec::new(), Some(cpu), crate::mm::account::root().clone()).map_err(|e| format!("cannot start utest {arg}: {e}"))
    };
    let wait = |p: &alloc::sync::Arc<crate::sched::Process>, arg: &str| -> Result<(), alloc::string::String> {
        if !wait_until(6000, || p.is_finished()) {
            return Err(format!("utest {arg} did not finish"));
        }
        match p.exit_code() {
            0 => Ok(()),
            code => Err(format!("utest {arg} exited with status {code}")),
        }
    };
    let sum = |f: fn(&percpu::PerCpu) -> u64| (0..n).map(|c| f(percpu::of(c))).sum::<u64>();
    let nmis_before = sum(|p| p.nmi_count.load(Ordering::Relaxed));
    let dbs_before = sum(|p| p.db_count.load(Ordering::Relaxed));
    let proxied_before = sum(|p| p.aist_proxied.load(Ordering::Relaxed));
    // With one CPU there is nobody to send NMIs: the storm thread would only take CPU time.
    let storm = n > 1;
    if storm {
        STORM_NESTS_DB.store(true, Ordering::Release);
        STORM_TARGET.store(cpu, Ordering::Release);
        start_storm(STORM_ROUNDS);
    }
    let pair = start("fpu_a").and_then(|a| start("fpu_b").map(|b| (a, b)));
    let pair_result = pair.and_then(|(a, b)| wait(&a, "fpu_a").and(wait(&b, "fpu_b")));
    STORM_STOP.store(true, Ordering::Release);
    let senders = if storm { (n - 1).min(3) } else { 0 };
    if storm && !wait_until(3000, || STORM_ROUNDS_DONE.load(Ordering::Acquire) == senders) {
        finish(Verdict::Fail(format_args!("the NMI storm threads did not finish")))
    }
    if storm {
        set_nmi_path_watch(cpu, false);
    }
    STORM_NESTS_DB.store(false, Ordering::Release);
    let nmis = sum(|p| p.nmi_count.load(Ordering::Relaxed)) - nmis_before;
    let dbs = sum(|p| p.db_count.load(Ordering::Relaxed)) - dbs_before;
    let proxied = sum(|p| p.aist_proxied.load(Ordering::Relaxed)) - proxied_before;
    log::info!("fpu: {nmis} NMIs taken meanwhile on {n} CPUs, {dbs} #DB nested in their path, {proxied} entries completed by proxy");
    if let Err(why) = pair_result {
        finish(Verdict::Fail(format_args!("{why}")))
    }
    if storm && (nmis == 0 || dbs == 0) {
        finish(Verdict::Fail(format_args!("the NMI storm did not happen ({nmis} NMIs, {dbs} nested #DB)")))
    }
    if storm && crate::arch::x86_64::entry::backend() == crate::arch::x86_64::entry::Backend::Ist && proxied == 0 {
        finish(Verdict::Fail(format_args!("no NMI entry was completed by proxy")))
    }
    let leak = start("fpu_secret").and_then(|s| wait(&s, "fpu_secret")).and_then(|_| start("fpu_fresh")).and_then(|f| wait(&f, "fpu_fresh"));
    match leak {
        Ok(()) => finish(Verdict::Pass),
        Err(why) => finish(Verdict::Fail(format_args!("{why}"))),
    }
}
