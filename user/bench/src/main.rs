//! bench: the round trip of each kind of event through the kernel's entry layer, timed from user
//! space with the TSC, for `cargo xtask compare` (kernel scenario `bench`).
//!
//! On Bochs the TSC advances one tick per retired instruction, so the numbers are instruction
//! counts: the kernel's software path (event delivery itself is not an instruction; IRET,
//! SYSRET, ERETU and ERETS count one each). Bochs brings its count up to date only at taken
//! branches and trace ends, so every RDTSC here follows a taken `jmp` (see EMULATORS.md).
//!
//! Each event is timed in a window between two RDTSCs, and so is the same window without the
//! event (its baseline: framing, setup, a store that does not fault, a system call that sends
//! no NMI); the median baseline is subtracted from every sample. Every measurement also checks
//! that its events really happened (kernel counters), so a broken opt-in fails the run.
//!
//! The figures that need two CPUs (`ipc_call_cross`, `ap_bringup`) are measured only when the
//! kernel runs more than one; `cargo xtask bench` boots each machine at 1 and at 2 CPUs. The
//! boot figures (`boot_firmware`, `boot_ready`, `ap_bringup`) are the kernel's TSC readings
//! at its milestones (`bench_boot_clock`), one sample each. With the argument `boot` (kernel
//! scenario `bench_boot`) only the boot figures are printed: `cargo xtask bench` records boot
//! to READY at more CPUs that way, without the event loop.
//!
//! Output: one `BENCH <name> n=.. median=.. p10=.. p90=.. min=.. max=.. base=..` line per
//! figure, then `BENCH done`; exit status 0 only if every check held.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

// On the host only its unit tests use it.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod stats;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("bench runs on x86_64-unknown-none as a boot module: the kernel's `bench` scenario starts it");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod program {
    extern crate alloc;

    use crate::stats::{Line, Summary};
    use abi::syscall::{self as nr, bench_boot_clock, bench_counter};
    use alloc::vec;
    use alloc::vec::Vec;
    use core::arch::asm;
    use rt::{println, sys};

    /// Samples per event (timer interrupts and demand faults are slower to come by).
    const N: usize = 1000;
    const N_DEMAND: usize = 256;
    const N_TIMER: usize = 100;
    /// Never mapped: below the image, and no `map` range. A store here faults every time.
    const UNMAPPED: u64 = 0x1000;

    rt::entry!(main);

    fn main(arg: &str) -> i32 {
        println!("bench: unit: TSC ticks (on Bochs: retired instructions), baseline subtracted");
        if arg.split_whitespace().any(|w| w == "boot") {
            if let Err(why) = boot_figures() {
                println!("bench: FAIL: boot: {why}");
                return 1;
            }
            println!("BENCH done");
            return 0;
        }
        let cpus = sys::cpu_count().unwrap_or(1);
        let runs: [(&str, Measure); 13] = [
            ("syscall_floor", syscall_floor),
            ("syscall_null", syscall_null),
            ("int3", int3),
            ("page_fault", page_fault_resume),
            ("page_fault_demand", page_fault_demand),
            ("timer", timer),
            ("nmi_self", nmi_self),
            ("thread_create", thread_create),
            ("ipc_call", ipc_call),
            ("ipc_call_cross", ipc_call_cross),
            ("switch_yield", switch_yield),
            ("switch_yield_avx", switch_yield_avx),
            ("boot", boot_figures),
        ];
        // `only=NAME` runs one measurement (for profiling one path).
        let only = arg.split_whitespace().find_map(|w| w.strip_prefix("only="));
        let mut failed = 0;
        for (name, run) in runs {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            if name == "ipc_call_cross" && cpus < 2 {
                continue;
            }
            if name == "boot" {
                if let Err(why) = run() {
                    println!("bench: FAIL: {name}: {why}");
                    failed += 1;
                }
                continue;
            }
            match run() {
                Ok((mut samples, base)) => match Summary::of(&mut samples) {
                    Some(summary) => println!(
                        "{}",
                        Line {
                            name,
                            summary,
                            base
                        }
                    ),
                    None => {
                        println!("bench: FAIL: {name}: no samples");
                        failed += 1;
                    }
                },
                Err(why) => {
                    println!("bench: FAIL: {name}: {why}");
                    failed += 1;
                }
            }
        }
        if failed != 0 {
            return 1;
        }
        println!("BENCH done");
        0
    }

    /// Runs one measurement: its samples (baseline already subtracted) and that baseline.
    type Measure = fn() -> Result<(Vec<i64>, i64), &'static str>;

    fn counter(which: u64) -> u64 {
        // SAFETY: BENCH_COUNTER only reads a kernel counter.
        unsafe { sys::raw::syscall1(nr::BENCH_COUNTER, which) }
    }

    /// For each `i`, the event window and then its baseline; the samples are event minus the
    /// median baseline, returned with that median.
    fn timed(n: usize, mut window: impl FnMut(usize, bool) -> i64) -> (Vec<i64>, i64) {
        let mut events = vec![0i64; n];
        let mut bases = vec![0i64; n];
        for i in 0..n {
            events[i] = window(i, true);
            bases[i] = window(i, false);
        }
        let base = Summary::of(&mut bases).map_or(0, |s| s.median);
        for e in &mut events {
            *e -= base;
        }
        (events, base)
    }

    /// `(hi << 32 | lo)` difference of two RDTSC results.
    fn ticks(lo0: u64, hi0: u64, lo1: u64, hi1: u64) -> i64 {
        ((hi1 << 32) | lo1).wrapping_sub((hi0 << 32) | lo0) as i64
    }

    /// A window: RDTSC (after a taken jump), `$insn`s, RDTSC (after a taken jump). R12/R13 hold
    /// the first reading: SYSCALL and every event return preserve them.
    macro_rules! window {
        ($($insn:literal),* ; $($operands:tt)*) => {{
            let (lo0, hi0, lo1, hi1): (u64, u64, u64, u64);
            // SAFETY: the instructions are the caller's event, whose kernel side returns to the
            // next instruction with every register but RAX, RCX and R11 intact (abi::syscall,
            // and the bench opt-ins); the operands declare what they touch.
            unsafe {
                asm!(
                    "jmp 2f", "2:", "rdtsc", "mov r12, rax", "mov r13, rdx",
                    $($insn,)*
                    "jmp 3f", "3:", "rdtsc",
                    out("r12") lo0, out("r13") hi0, out("rax") lo1, out("rdx") hi1,
                    $($operands)*
                );
            }
            ticks(lo0, hi0, lo1, hi1)
        }};
    }

    /// SYSCALL of `bench_null`: the entry and exit path alone.
    fn syscall_null() -> Result<(Vec<i64>, i64), &'static str> {
        let mut bad = 0;
        let r = timed(N, |_, event| {
            let result: u64;
            let t = if event {
                window!("mov eax, {nr}", "syscall", "mov r14, rax"; nr = const nr::BENCH_NULL,
                        out("rcx") _, out("r11") _, out("r14") result)
            } else {
                window!("mov eax, {nr}", "mov r14, rax"; nr = const nr::BENCH_NULL,
                        out("rcx") _, out("r11") _, out("r14") result)
            };
            bad += usize::from(event && result != 0);
            t
        });
        if bad != 0 {
            return Err("bench_null did not return 0");
        }
        Ok(r)
    }

    // The floor's window: like `window!`, around one SYSCALL of `bench_null` whose return
    // address `bench_floor_return` the floor (`bench_floor`) answers without the dispatcher.
    // The baseline window is the same without the SYSCALL. Each stores the call's RAX at RDI:
    // 40 (BENCH_NULL, untouched) when the floor answered, 0 when the real entry did.
    // SAFETY: plain functions (SysV: RDI = result pointer, RAX = ticks; they use RAX, RCX, RDX,
    // R8..R11, caller-saved). The floor and the real entry both return to the next instruction
    // with every register but RAX, RCX and R11 intact.
    core::arch::global_asm!(
        ".pushsection .text.bench_floor, \"ax\"",
        ".global bench_floor_window",
        "bench_floor_window:",
        "    jmp 2f",
        "2:  rdtsc",
        "    mov r8, rax",
        "    mov r9, rdx",
        "    mov eax, {null}",
        "    syscall",
        ".global bench_floor_return",
        "bench_floor_return:",
        "    mov r10, rax",
        "    jmp 3f",
        "3:  rdtsc",
        "    mov [rdi], r10",
        "    shl rdx, 32",
        "    or rax, rdx",
        "    shl r9, 32",
        "    or r8, r9",
        "    sub rax, r8",
        "    ret",
        ".global bench_floor_base_window",
        "bench_floor_base_window:",
        "    jmp 2f",
        "2:  rdtsc",
        "    mov r8, rax",
        "    mov r9, rdx",
        "    mov eax, {null}",
        "    mov r10, rax",
        "    jmp 3f",
        "3:  rdtsc",
        "    mov [rdi], r10",
        "    shl rdx, 32",
        "    or rax, rdx",
        "    shl r9, 32",
        "    or r8, r9",
        "    sub rax, r8",
        "    ret",
        ".popsection",
        null = const nr::BENCH_NULL,
    );

    extern "C" {
        fn bench_floor_window(result: *mut u64) -> i64;
        fn bench_floor_base_window(result: *mut u64) -> i64;
        static bench_floor_return: u8;
    }

    /// The bare SYSCALL round trip: the floor's minimal handler (IST: compare RCX, SYSRET;
    /// FRED: check type and RIP, ERETU) on this CPU, in the same boot as `syscall_null`.
    fn syscall_floor() -> Result<(Vec<i64>, i64), &'static str> {
        // SAFETY: only the symbol's address is taken.
        let at = unsafe { &bench_floor_return as *const u8 as u64 };
        // SAFETY: the floor answers only SYSCALLs returning to `at`, which is inside
        // `bench_floor_window`; every other call goes the normal way.
        let armed = unsafe { sys::raw::syscall1(nr::BENCH_FLOOR, at) };
        if armed != 0 {
            return Err("bench_floor refused");
        }
        let mut missed = 0;
        let r = timed(N, |_, event| {
            let mut result = 0u64;
            // SAFETY: both windows only store to `result`.
            let t = unsafe {
                if event {
                    bench_floor_window(&mut result)
                } else {
                    bench_floor_base_window(&mut result)
                }
            };
            missed += usize::from(result != nr::BENCH_NULL);
            t
        });
        // SAFETY: puts the real entry back.
        unsafe { sys::raw::syscall1(nr::BENCH_FLOOR, 0) };
        if missed != 0 {
            return Err("a SYSCALL missed the floor (the kernel's dispatcher answered it)");
        }
        Ok(r)
    }

    // A new thread's whole life: exit at once, touching no memory (its stack is never used).
    // SAFETY: entered only by the kernel as a thread created by `thread_create` below.
    core::arch::global_asm!(
        ".pushsection .text.bench_thread, \"ax\"",
        ".global bench_thread_exit",
        "bench_thread_exit:",
        "    mov eax, {exit}",
        "    xor edi, edi",
        "    syscall",
        "    ud2",
        ".popsection",
        exit = const nr::THREAD_EXIT,
    );

    extern "C" {
        fn bench_thread_exit();
    }

    /// `thread_create` of a thread pinned to this CPU (kernel stack, FPU area, the thread
    /// object, the run-queue entry), against the same window without the call. After each
    /// sample the bench yields, so the new thread runs and exits before the next one.
    fn thread_create() -> Result<(Vec<i64>, i64), &'static str> {
        let cpu = sys::cpu_id().map_err(|_| "cpu_id failed")? as u64;
        let stack = sys::map(rt::PAGE_SIZE).map_err(|_| "map failed")? as u64 + rt::PAGE_SIZE as u64;
        let entry = bench_thread_exit as *const () as u64;
        let mut failed = 0;
        let r = timed(N, |_, event| {
            let tid: u64;
            // RDX (the thread's argument) is RDTSC's: the thread ignores it.
            let t = if event {
                window!("mov eax, {nr}", "syscall", "mov r14, rax"; nr = const nr::THREAD_CREATE,
                        in("rdi") entry, in("rsi") stack, in("r10") cpu,
                        out("rcx") _, out("r11") _, out("r14") tid)
            } else {
                window!("mov eax, {nr}", "mov r14, rax"; nr = const nr::THREAD_CREATE,
                        in("rdi") entry, in("rsi") stack, in("r10") cpu,
                        out("rcx") _, out("r11") _, out("r14") tid)
            };
            if event {
                failed += usize::from(abi::Error::result(tid).is_err());
                let _ = sys::yield_now();
            }
            t
        });
        if failed != 0 {
            return Err("thread_create failed");
        }
        sys::wait_threads().map_err(|_| "wait_threads failed")?;
        Ok(r)
    }

    /// The boot milestones the kernel noted: reset to kernel entry (firmware and bootloader),
    /// kernel entry to READY, and for each AP its release to online.
    fn boot_figures() -> Result<(Vec<i64>, i64), &'static str> {
        let clock = |which: u64, cpu: u64| -> Result<i64, &'static str> {
            // SAFETY: BENCH_BOOT_CLOCK only reads a recorded TSC value.
            let v = unsafe { sys::raw::syscall2(nr::BENCH_BOOT_CLOCK, which, cpu) };
            abi::Error::result(v).map(|v| v as i64).map_err(|_| "bench_boot_clock failed")
        };
        let entry = clock(bench_boot_clock::KERNEL_ENTRY, 0)?;
        let ready = clock(bench_boot_clock::READY, 0)?;
        if entry == 0 || ready <= entry {
            return Err("the kernel did not note its entry and READY");
        }
        let one = |name, v| println!("{}", Line { name, summary: Summary::single(v), base: 0 });
        one("boot_firmware", entry);
        one("boot_ready", ready - entry);
        let cpus = sys::cpu_count().map_err(|_| "cpu_count failed")? as u64;
        if cpus > 1 {
            let released = clock(bench_boot_clock::APS_RELEASED, 0)?;
            let mut aps = Vec::new();
            for cpu in 1..cpus {
                aps.push(clock(bench_boot_clock::CPU_ONLINE, cpu)? - released);
            }
            let summary = Summary::of(&mut aps).ok_or("no APs")?;
            println!("{}", Line { name: "ap_bringup", summary, base: 0 });
        }
        // Printed above, one line per figure.
        Ok((Vec::new(), 0))
    }

    /// INT3 with the resume opt-in: #BP delivery, the handler, the return past the INT3.
    fn int3() -> Result<(Vec<i64>, i64), &'static str> {
        // SAFETY: the opt-in only changes what happens to our own INT3s.
        unsafe { sys::raw::syscall1(nr::BENCH_BREAKPOINTS_RESUME, 1) };
        let before = counter(bench_counter::BREAKPOINTS);
        let r = timed(
            N,
            |_, event| if event { window!("int3";) } else { window!(;) },
        );
        let taken = counter(bench_counter::BREAKPOINTS) - before;
        // SAFETY: as above.
        unsafe { sys::raw::syscall1(nr::BENCH_BREAKPOINTS_RESUME, 0) };
        if taken != N as u64 {
            return Err("the kernel did not resume exactly one #BP per INT3");
        }
        Ok(r)
    }

    // A byte store timed like `window!`, in a function of its own so that its resume point has
    // a fixed address: `bench_store_resume`, where a faulting store continues under
    // `bench_fault_resume`, and where a store that does not fault falls through to.
    // SAFETY: a plain function (SysV: RDI = address, RAX = result; it uses only RAX, RDX, R8,
    // R9, caller-saved). A fault on the store either resumes at `bench_store_resume` with every
    // register intact or (demand paging) re-executes the store.
    core::arch::global_asm!(
        ".pushsection .text.bench_store, \"ax\"",
        ".global bench_store_window",
        "bench_store_window:",
        "    jmp 2f",
        "2:  rdtsc",
        "    mov r8, rax",
        "    mov r9, rdx",
        "    mov byte ptr [rdi], 1",
        ".global bench_store_resume",
        "bench_store_resume:",
        "    jmp 3f",
        "3:  rdtsc",
        "    shl rdx, 32",
        "    or rax, rdx",
        "    shl r9, 32",
        "    or r8, r9",
        "    sub rax, r8",
        "    ret",
        ".popsection",
    );

    extern "C" {
        fn bench_store_window(addr: u64) -> i64;
        static bench_store_resume: u8;
    }

    /// A store to a never-mapped page with the fault-resume opt-in: #PF delivery, the kernel's
    /// check that no demand range covers it, the return to `bench_store_resume`.
    fn page_fault_resume() -> Result<(Vec<i64>, i64), &'static str> {
        let mapped = vec![0u8; 64];
        let target = mapped.as_ptr() as u64;
        // SAFETY: only the symbol's address is taken.
        let resume = unsafe { &bench_store_resume as *const u8 as u64 };
        let before = counter(bench_counter::FAULTS_RESUMED);
        // SAFETY: only faults of this process resume there, and `bench_store_window` is written
        // so that resuming at that label completes it.
        unsafe { sys::raw::syscall1(nr::BENCH_FAULT_RESUME, resume) };
        // SAFETY: `UNMAPPED` faults (and resumes); `target` is a live heap byte we own.
        let r = timed(N, |_, event| unsafe {
            bench_store_window(if event { UNMAPPED } else { target })
        });
        // SAFETY: turns the opt-in off again.
        unsafe { sys::raw::syscall1(nr::BENCH_FAULT_RESUME, 0) };
        let resumed = counter(bench_counter::FAULTS_RESUMED) - before;
        drop(mapped);
        if resumed != N as u64 {
            return Err("the kernel did not resume exactly one #PF per store to an unmapped page");
        }
        Ok(r)
    }

    /// The first store to each page `map` reserved: #PF, a zeroed frame mapped, the store
    /// re-executed. The baseline is the second store to the same page.
    fn page_fault_demand() -> Result<(Vec<i64>, i64), &'static str> {
        let region = sys::map(N_DEMAND * rt::PAGE_SIZE).map_err(|_| "map failed")? as u64;
        let before = counter(bench_counter::DEMAND_FAULTS);
        let r = timed(N_DEMAND, |i, _| {
            // SAFETY: the page lies in our fresh `map` range; the first store faults it in.
            unsafe { bench_store_window(region + (i * rt::PAGE_SIZE) as u64) }
        });
        let faults = counter(bench_counter::DEMAND_FAULTS) - before;
        if faults != N_DEMAND as u64 {
            return Err("not exactly one demand fault per page touched");
        }
        Ok(r)
    }

    /// The first TSC gap of at least `threshold` between two readings of a tight loop: with a
    /// threshold above the loop's own cost, the gap that holds an interrupt; with 0, the loop's
    /// own cost. The "previous reading" starts at -2^63, so the first gap is negative and every
    /// gap returned spans exactly one full iteration.
    fn timer_gap(threshold: i64) -> i64 {
        let gap: i64;
        // SAFETY: reads the TSC only; the loop ends once a gap reaches `threshold`, which an
        // interrupt's gap does (and with a threshold of 0 the second gap does).
        unsafe {
            asm!(
                "mov r8, {start}",
                "4:", "jmp 3f", "3:", "rdtsc", "shl rdx, 32", "or rax, rdx",
                "mov r9, rax", "sub r9, r8", "mov r8, rax", "cmp r9, {t}", "jl 4b",
                start = in(reg) i64::MIN, t = in(reg) threshold,
                out("rax") _, out("rdx") _, out("r8") _, out("r9") gap,
                options(nomem, nostack)
            );
        }
        gap
    }

    /// A LAPIC timer interrupt taken in a user loop that only reads the TSC: the gap it leaves,
    /// minus the loop's own gap. A sample counts only if exactly one tick happened around it.
    fn timer() -> Result<(Vec<i64>, i64), &'static str> {
        let base = (0..16).map(|_| timer_gap(0)).min().unwrap_or(0);
        let threshold = 4 * base + 32;
        let mut samples = Vec::with_capacity(N_TIMER);
        let mut rejected = 0;
        while samples.len() < N_TIMER {
            if rejected > 4 * N_TIMER {
                return Err("too few gaps matched exactly one timer tick");
            }
            let t0 = counter(bench_counter::TIMER_TICKS);
            let gap = timer_gap(threshold);
            if counter(bench_counter::TIMER_TICKS) == t0 + 1 {
                samples.push(gap - base);
            } else {
                rejected += 1;
            }
        }
        if rejected != 0 {
            println!("bench: timer: {rejected} gaps without exactly one tick left out");
        }
        Ok((samples, base))
    }

    /// `bench_self_nmi(1)`, which sends this CPU an NMI and returns once it was handled, against
    /// `bench_self_nmi(0)`, the same call without the send: the NMI's delivery to ring 0, its
    /// handler and return (plus the ICR write itself).
    fn nmi_self() -> Result<(Vec<i64>, i64), &'static str> {
        let mut wrong = 0;
        let r = timed(N, |_, send| {
            let handled: u64;
            let t = window!("mov eax, {nr}", "syscall", "mov r14, rax"; nr = const nr::BENCH_SELF_NMI,
                            in("rdi") u64::from(send), out("rcx") _, out("r11") _, out("r14") handled);
            wrong += usize::from(handled != u64::from(send));
            t
        });
        if wrong != 0 {
            return Err("bench_self_nmi did not take exactly one NMI per send (and none without)");
        }
        Ok(r)
    }

    /// The IPC server of `ipc_call`: answers every call with its first word plus one.
    fn ipc_server(ep: usize) {
        let mut reply = None;
        loop {
            let r = rt::ipc::serve(ep as u64, reply.take(), None);
            match r {
                Ok((_, m)) => reply = Some([m[0] + 1, 0, 0, 0]),
                Err(_) => return,
            }
        }
    }

    /// `call` to a server thread blocked in `reply_recv` on the same CPU, against the same
    /// window without the call: the synchronous IPC round trip through the fastpath (two
    /// system calls and two direct thread switches, no scheduler decision).
    fn ipc_call() -> Result<(Vec<i64>, i64), &'static str> {
        ipc_round_trips(false)
    }

    /// The same with the server thread on the next CPU: both deliveries cross CPUs (the
    /// partner's CPU gets a wake-up IPI, and waits in HLT between calls).
    fn ipc_call_cross() -> Result<(Vec<i64>, i64), &'static str> {
        ipc_round_trips(true)
    }

    fn ipc_round_trips(cross: bool) -> Result<(Vec<i64>, i64), &'static str> {
        let ep = rt::ipc::endpoint_create().map_err(|_| "endpoint_create failed")?;
        let here = sys::cpu_id().map_err(|_| "cpu_id failed")?;
        let cpus = sys::cpu_count().map_err(|_| "cpu_count failed")?;
        let cpu = if cross { (here + 1) % cpus } else { here };
        rt::thread::spawn(ipc_server, ep as usize, Some(cpu)).map_err(|_| "cannot start the server thread")?;
        // The first call finds the server not yet waiting; after it, every call does.
        rt::ipc::call(ep, [0; 4], None).map_err(|_| "first call failed")?;
        let before = rt::ipc::ipc_stats().map_err(|_| "ipc_stats failed")?;
        let mut wrong = 0;
        let r = timed(N, |i, call| {
            let answer: u64;
            // RDX is RDTSC's, so the message words are zeroed inside the window (both ways).
            let t = if call {
                window!("mov eax, {nr}", "xor edx, edx", "xor r10d, r10d", "xor r8d, r8d", "syscall", "mov r14, rsi";
                        nr = const nr::CALL, in("rdi") ep, inout("rsi") i as u64 => _, in("r9") 0u64,
                        out("r10") _, out("r8") _, out("rcx") _, out("r11") _, out("r14") answer)
            } else {
                window!("mov eax, {nr}", "xor edx, edx", "xor r10d, r10d", "xor r8d, r8d", "mov r14, rsi";
                        nr = const nr::CALL, in("rdi") ep, inout("rsi") i as u64 + 1 => _, in("r9") 0u64,
                        out("r10") _, out("r8") _, out("r14") answer)
            };
            wrong += usize::from(answer != i as u64 + 1);
            t
        });
        let after = rt::ipc::ipc_stats().map_err(|_| "ipc_stats failed")?;
        if wrong != 0 {
            return Err("a call got a wrong answer");
        }
        if cross && after.cross_cpu - before.cross_cpu < 2 * N as u64 {
            return Err("calls and replies did not cross CPUs");
        }
        if !cross && after.fastpath - before.fastpath < 2 * N as u64 {
            return Err("calls did not take the fastpath both ways");
        }
        Ok(r)
    }

    static PARTNER_STOP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    static PARTNER_DIRTY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    static PARTNER_YIELDS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

    /// Makes the AVX state non-initial: YMM15's upper half all ones (XSAVE must write it).
    fn dirty_avx() {
        // SAFETY: writes YMM15 only, which this soft-float program never uses otherwise.
        unsafe { asm!("vpcmpeqb ymm15, ymm15, ymm15", options(nomem, nostack)) };
    }

    fn avx() -> bool {
        let l1 = core::arch::x86_64::__cpuid_count(1, 0);
        l1.ecx & (1 << 28) != 0 && l1.ecx & (1 << 27) != 0
    }

    /// Yields forever (until told to stop), on the bench thread's CPU.
    fn partner(_: usize) {
        if PARTNER_DIRTY.load(core::sync::atomic::Ordering::Acquire) {
            dirty_avx();
        }
        while !PARTNER_STOP.load(core::sync::atomic::Ordering::Acquire) {
            PARTNER_YIELDS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            let _ = sys::yield_now();
        }
    }

    /// `yield` to a partner thread on the same CPU, which yields back: a round trip of two
    /// context switches (and two system calls). With `dirty`, both threads' AVX state is in use,
    /// so every switch saves and restores YMM as well (on Bochs XSAVE is one instruction
    /// whatever it writes, so only a cycle count, under KVM, shows the price).
    fn switch_round_trips(dirty: bool) -> Result<(Vec<i64>, i64), &'static str> {
        use core::sync::atomic::Ordering;
        if dirty && !avx() {
            return Err("no AVX on this CPU");
        }
        let cpu = sys::cpu_id().map_err(|_| "cpu_id failed")?;
        PARTNER_STOP.store(false, Ordering::Release);
        PARTNER_DIRTY.store(dirty, Ordering::Release);
        let tid = rt::thread::spawn(partner, 0, Some(cpu)).map_err(|_| "cannot start the partner thread")?;
        let cap = rt::ipc::thread_cap(tid).map_err(|_| "thread_cap failed")?;
        if dirty {
            dirty_avx();
        }
        // Let the partner start.
        let _ = sys::yield_now();
        let before = PARTNER_YIELDS.load(Ordering::Relaxed);
        let r = timed(N, |_, event| {
            if event {
                window!("mov eax, {nr}", "syscall"; nr = const nr::YIELD, out("rcx") _, out("r11") _)
            } else {
                window!("mov eax, {nr}"; nr = const nr::YIELD, out("rcx") _, out("r11") _)
            }
        });
        let switched = PARTNER_YIELDS.load(Ordering::Relaxed) - before;
        PARTNER_STOP.store(true, Ordering::Release);
        let _ = rt::ipc::thread_wait(cap);
        if dirty {
            // SAFETY: back to the initial AVX upper state for the measurements after this one.
            unsafe { asm!("vzeroupper", options(nomem, nostack)) };
        }
        if switched < N as u64 {
            return Err("the yields did not switch to the partner");
        }
        Ok(r)
    }

    fn switch_yield() -> Result<(Vec<i64>, i64), &'static str> {
        switch_round_trips(false)
    }

    fn switch_yield_avx() -> Result<(Vec<i64>, i64), &'static str> {
        switch_round_trips(true)
    }
}
