//! `test=fpu`: the whole user register state, x87, SSE and AVX, survives everything that can
//! take the CPU away from a thread, and never leaks between processes.
//!
//! - `fpu_a` / `fpu_b` (two processes the kernel pins to one CPU): in each, two pattern
//!   threads fill every XMM/YMM register, the x87 stack, MXCSR and FCW with their own pattern,
//!   then yield, sleep, make a system call, make an IPC call to a server thread, or spin until
//!   the sibling ran (timer preemption), and check every register. A third thread computes
//!   with AVX intrinsics (ordinary compiler-generated AVX code, `#[target_feature]`) and checks
//!   its results.
//! - `fpu_secret` fills the registers with a secret and exits; `fpu_fresh`, started after it on
//!   the same CPU, checks that its first thread and a second one start from the initial state
//!   (FCW 0x37f, MXCSR 0x1f80, every register zero).
//!
//! User code here is built for `x86_64-unknown-none`, soft-float: the compiler never uses x87
//! or SSE registers by itself, so between two `asm!` blocks they hold exactly what the first
//! left there. Functions with `#[target_feature(enable = "avx2")]` opt into AVX code generation
//! (user/README.md).

use core::arch::asm;
use core::arch::x86_64::__cpuid_count;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use rt::{ipc, println, sys, thread};

const ROUNDS: u64 = 1500;
const MXCSR_INIT: u32 = 0x1f80;
const FCW_INIT: u16 = 0x37f;

static FAILURES: AtomicUsize = AtomicUsize::new(0);

fn fail(what: core::fmt::Arguments) {
    FAILURES.fetch_add(1, Ordering::Relaxed);
    println!("utest fpu: FAIL {what}");
}

/// AVX usable in ring 3: CPUID says AVX and OSXSAVE, and the kernel enabled YMM in XCR0.
fn avx() -> bool {
    let l1 = __cpuid_count(1, 0);
    if l1.ecx & (1 << 28) == 0 || l1.ecx & (1 << 27) == 0 {
        return false;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: XGETBV(0) is legal in ring 3 once CR4.OSXSAVE is set (CPUID.1:ECX[27]).
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") _hi, options(nomem, nostack)) };
    lo & 0b110 == 0b110
}

/// Everything a pattern covers: YMM0-15 (XMM in the low halves), ST0-7, MXCSR and FCW.
#[repr(C, align(32))]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Regs {
    ymm: [[u64; 4]; 16],
    st: [i64; 8],
    mxcsr: u32,
    fcw: u16,
}

impl Regs {
    fn pattern(seed: u64, with_avx: bool) -> Regs {
        let mut r = Regs { ymm: [[0; 4]; 16], st: [0; 8], mxcsr: 0, fcw: 0 };
        let mut x = seed | 1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for reg in r.ymm.iter_mut() {
            for (i, w) in reg.iter_mut().enumerate() {
                *w = if i >= 2 && !with_avx { 0 } else { next() };
            }
        }
        for s in r.st.iter_mut() {
            // Exactly representable in the 64-bit x87 significand.
            *s = (next() >> 12) as i64 - (1 << 50);
        }
        // A rounding mode of its own (bits 13-14), every exception still masked.
        r.mxcsr = MXCSR_INIT | ((seed as u32 & 3) << 13);
        // Precision and rounding control of its own; every exception masked.
        r.fcw = FCW_INIT & !0x0c00 | ((seed as u16 & 3) << 10);
        r
    }
}

/// Loads `r` into the registers.
fn fill(r: &Regs, with_avx: bool) {
    let p = r as *const Regs;
    // SAFETY: reads `r` only; writes only FPU/SIMD registers, which the compiler never uses
    // in this soft-float program.
    unsafe {
        if with_avx {
            asm!(
                "vmovdqu ymm0, [{p}]", "vmovdqu ymm1, [{p} + 32]", "vmovdqu ymm2, [{p} + 64]", "vmovdqu ymm3, [{p} + 96]",
                "vmovdqu ymm4, [{p} + 128]", "vmovdqu ymm5, [{p} + 160]", "vmovdqu ymm6, [{p} + 192]", "vmovdqu ymm7, [{p} + 224]",
                "vmovdqu ymm8, [{p} + 256]", "vmovdqu ymm9, [{p} + 288]", "vmovdqu ymm10, [{p} + 320]", "vmovdqu ymm11, [{p} + 352]",
                "vmovdqu ymm12, [{p} + 384]", "vmovdqu ymm13, [{p} + 416]", "vmovdqu ymm14, [{p} + 448]", "vmovdqu ymm15, [{p} + 480]",
                p = in(reg) p, options(nostack, readonly),
            );
        } else {
            asm!(
                "movdqu xmm0, [{p}]", "movdqu xmm1, [{p} + 32]", "movdqu xmm2, [{p} + 64]", "movdqu xmm3, [{p} + 96]",
                "movdqu xmm4, [{p} + 128]", "movdqu xmm5, [{p} + 160]", "movdqu xmm6, [{p} + 192]", "movdqu xmm7, [{p} + 224]",
                "movdqu xmm8, [{p} + 256]", "movdqu xmm9, [{p} + 288]", "movdqu xmm10, [{p} + 320]", "movdqu xmm11, [{p} + 352]",
                "movdqu xmm12, [{p} + 384]", "movdqu xmm13, [{p} + 416]", "movdqu xmm14, [{p} + 448]", "movdqu xmm15, [{p} + 480]",
                p = in(reg) p, options(nostack, readonly),
            );
        }
        asm!(
            "fninit",
            "fldcw [{p} + 580]",
            "ldmxcsr [{p} + 576]",
            "fild qword ptr [{p} + 512]", "fild qword ptr [{p} + 520]", "fild qword ptr [{p} + 528]", "fild qword ptr [{p} + 536]",
            "fild qword ptr [{p} + 544]", "fild qword ptr [{p} + 552]", "fild qword ptr [{p} + 560]", "fild qword ptr [{p} + 568]",
            p = in(reg) p, options(nostack, readonly),
        );
    }
}

/// Stores the registers into `out` (emptying the x87 stack: FISTP pops, ST0 first).
fn dump(out: &mut Regs, with_avx: bool) {
    let p = out as *mut Regs;
    // SAFETY: writes only `out`.
    unsafe {
        if with_avx {
            asm!(
                "vmovdqu [{p}], ymm0", "vmovdqu [{p} + 32], ymm1", "vmovdqu [{p} + 64], ymm2", "vmovdqu [{p} + 96], ymm3",
                "vmovdqu [{p} + 128], ymm4", "vmovdqu [{p} + 160], ymm5", "vmovdqu [{p} + 192], ymm6", "vmovdqu [{p} + 224], ymm7",
                "vmovdqu [{p} + 256], ymm8", "vmovdqu [{p} + 288], ymm9", "vmovdqu [{p} + 320], ymm10", "vmovdqu [{p} + 352], ymm11",
                "vmovdqu [{p} + 384], ymm12", "vmovdqu [{p} + 416], ymm13", "vmovdqu [{p} + 448], ymm14", "vmovdqu [{p} + 480], ymm15",
                p = in(reg) p, options(nostack),
            );
        } else {
            asm!(
                "movdqu [{p}], xmm0", "movdqu [{p} + 32], xmm1", "movdqu [{p} + 64], xmm2", "movdqu [{p} + 96], xmm3",
                "movdqu [{p} + 128], xmm4", "movdqu [{p} + 160], xmm5", "movdqu [{p} + 192], xmm6", "movdqu [{p} + 224], xmm7",
                "movdqu [{p} + 256], xmm8", "movdqu [{p} + 288], xmm9", "movdqu [{p} + 320], xmm10", "movdqu [{p} + 352], xmm11",
                "movdqu [{p} + 384], xmm12", "movdqu [{p} + 416], xmm13", "movdqu [{p} + 448], xmm14", "movdqu [{p} + 480], xmm15",
                p = in(reg) p, options(nostack),
            );
        }
        asm!(
            "stmxcsr [{p} + 576]",
            "fnstcw [{p} + 580]",
            // Truncating stores would change nothing (the values are integers), but use FISTP's
            // own rounding: FCW's rounding control is part of the pattern.
            "fistp qword ptr [{p} + 568]", "fistp qword ptr [{p} + 560]", "fistp qword ptr [{p} + 552]", "fistp qword ptr [{p} + 544]",
            "fistp qword ptr [{p} + 536]", "fistp qword ptr [{p} + 528]", "fistp qword ptr [{p} + 520]", "fistp qword ptr [{p} + 512]",
            p = in(reg) p, options(nostack),
        );
    }
}

const _: () = assert!(core::mem::offset_of!(Regs, st) == 512);
const _: () = assert!(core::mem::offset_of!(Regs, mxcsr) == 576);
const _: () = assert!(core::mem::offset_of!(Regs, fcw) == 580);

static SERVER_EP: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
/// Rounds each pattern thread finished, and rounds in which its spin saw the sibling run.
static PROGRESS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static PREEMPTED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static DONE: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];

/// What takes the CPU away between `fill` and `dump`, by round: mostly yields, system calls
/// and IPC calls (each a switch or a kernel entry), every tenth a sleep, every fiftieth a spin
/// until the timer preempts (the slow ones, kept few so the test stays short on emulators).
fn disturbance(round: u64) -> u64 {
    match round % 10 {
        9 if round % 50 == 49 => 4,
        8 => 1,
        6 | 7 => 3,
        4 | 5 => 2,
        _ => 0,
    }
}

fn disturb(round: u64, me: usize) {
    match disturbance(round) {
        0 => {
            let _ = sys::yield_now();
        }
        1 => {
            let _ = sys::sleep_ms(1);
        }
        2 => {
            let _ = sys::cpu_id();
        }
        3 => {
            if let Err(e) = ipc::call(SERVER_EP.load(Ordering::Acquire), [round, 0, 0, 0], None) {
                fail(format_args!("IPC call: {e:?}"));
            }
        }
        _ => {
            // Spin until the sibling makes progress: the timer took this thread off the CPU.
            let sibling = &PROGRESS[1 - me];
            let seen = sibling.load(Ordering::Acquire);
            let mut spins = 0u64;
            while sibling.load(Ordering::Acquire) == seen && spins < 50_000_000 && !DONE[1 - me].load(Ordering::Acquire) {
                spins += 1;
                core::hint::spin_loop();
            }
            if sibling.load(Ordering::Acquire) != seen {
                PREEMPTED[me].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn pattern_thread(arg: usize) {
    let (seed, me) = ((arg >> 1) as u64, arg & 1);
    let with_avx = avx();
    let mut got = Regs::pattern(0, with_avx);
    for round in 0..ROUNDS {
        let want = Regs::pattern(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round, with_avx);
        fill(&want, with_avx);
        disturb(round, me);
        dump(&mut got, with_avx);
        if got != want {
            let ymm = (0..16).find(|&i| got.ymm[i] != want.ymm[i]);
            fail(format_args!(
                "seed {seed}: round {round} (disturbance {}): registers changed (first YMM: {ymm:?}; x87 {}, MXCSR {:#x}/{:#x}, FCW {:#x}/{:#x})",
                disturbance(round),
                if got.st == want.st { "same" } else { "changed" },
                got.mxcsr, want.mxcsr, got.fcw, want.fcw
            ));
            break;
        }
        PROGRESS[me].fetch_add(1, Ordering::Release);
    }
    // Leave the sibling's spin.
    DONE[me].store(true, Ordering::Release);
}

fn server_thread(_: usize) {
    let ep = SERVER_EP.load(Ordering::Acquire);
    let mut reply = None;
    loop {
        match ipc::serve(ep, reply.take(), None) {
            Ok((_, m)) if m[1] == u64::MAX => {
                let _ = ipc::reply([0; 4], None);
                return;
            }
            Ok((_, m)) => reply = Some([m[0], 0, 0, 0]),
            Err(e) => return fail(format_args!("server: {e:?}")),
        }
    }
}

/// Dot products of 8-float vectors with AVX intrinsics, compiled with AVX enabled.
#[target_feature(enable = "avx,avx2")]
unsafe fn avx_dot(a: &[f32; 64], b: &[f32; 64]) -> f32 {
    use core::arch::x86_64::*;
    let mut acc = _mm256_setzero_ps();
    for i in (0..64).step_by(8) {
        let x = _mm256_loadu_ps(a.as_ptr().add(i));
        let y = _mm256_loadu_ps(b.as_ptr().add(i));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(x, y));
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
    lanes.iter().sum()
}

/// The same with SSE2, for CPUs without AVX.
#[target_feature(enable = "sse2")]
unsafe fn sse_dot(a: &[f32; 64], b: &[f32; 64]) -> f32 {
    use core::arch::x86_64::*;
    let mut acc = _mm_setzero_ps();
    for i in (0..64).step_by(4) {
        acc = _mm_add_ps(acc, _mm_mul_ps(_mm_loadu_ps(a.as_ptr().add(i)), _mm_loadu_ps(b.as_ptr().add(i))));
    }
    let mut lanes = [0f32; 4];
    _mm_storeu_ps(lanes.as_mut_ptr(), acc);
    lanes.iter().sum()
}

fn compute_thread(seed: usize) {
    let with_avx = avx();
    let mut rounds = 0u64;
    while !STOP.load(Ordering::Acquire) {
        let (mut a, mut b) = ([0f32; 64], [0f32; 64]);
        let mut want = 0i64;
        for i in 0..64 {
            let (x, y) = (((i * 7 + seed + rounds as usize) % 13) as i64 - 6, ((i * 5 + seed) % 11) as i64 - 5);
            a[i] = x as f32;
            b[i] = y as f32;
            want += x * y;
        }
        // SAFETY: the features were checked above (SSE2 is always present in x86-64).
        let got = unsafe { if with_avx { avx_dot(&a, &b) } else { sse_dot(&a, &b) } };
        // Small integers: exact in f32, in any summation order.
        if got as i64 != want {
            fail(format_args!("compute: {got} != {want}"));
            return;
        }
        rounds += 1;
        let _ = sys::yield_now();
    }
    println!("utest fpu: compute thread: {rounds} rounds of {} dot products correct", if with_avx { "AVX" } else { "SSE" });
}

/// `fpu_a` / `fpu_b`: the switching test in one process (seed 1 or 2).
pub fn run_pair(seed: usize) -> i32 {
    let cpu = sys::cpu_id().unwrap_or(0);
    let with_avx = avx();
    println!("utest fpu: process {seed} on cpu {cpu}, AVX {with_avx}, {ROUNDS} rounds per pattern thread");
    match ipc::endpoint_create() {
        Ok(ep) => SERVER_EP.store(ep, Ordering::Release),
        Err(e) => {
            println!("utest fpu: endpoint_create: {e:?}");
            return 1;
        }
    }
    let server = thread::spawn(server_thread, 0, Some(cpu)).and_then(ipc::thread_cap);
    let compute = thread::spawn(compute_thread, seed, Some(cpu)).and_then(ipc::thread_cap);
    let patterns = [0usize, 1].map(|me| thread::spawn(pattern_thread, (seed * 16 + me) << 1 | me, Some(cpu)).and_then(ipc::thread_cap));
    for p in patterns {
        match p.and_then(ipc::thread_wait) {
            Ok(abi::thread_exit::ThreadExit::Exited) => {}
            other => fail(format_args!("pattern thread ended as {other:?}")),
        }
    }
    STOP.store(true, Ordering::Release);
    let _ = ipc::call(SERVER_EP.load(Ordering::Acquire), [0, u64::MAX, 0, 0], None);
    for (name, t) in [("server", server), ("compute", compute)] {
        match t.and_then(ipc::thread_wait) {
            Ok(abi::thread_exit::ThreadExit::Exited) => {}
            other => fail(format_args!("{name} thread ended as {other:?}")),
        }
    }
    let preempted = [PREEMPTED[0].load(Ordering::Relaxed), PREEMPTED[1].load(Ordering::Relaxed)];
    println!("utest fpu: process {seed}: {} rounds checked, {preempted:?} of the spins preempted", 2 * ROUNDS);
    if preempted.iter().sum::<u64>() == 0 {
        fail(format_args!("no spin was ever preempted: the timer case did not happen"));
    }
    i32::from(FAILURES.load(Ordering::Relaxed) != 0)
}

const SECRET: u64 = 0x5ec2_e7_5ec2_e7_00;

/// `fpu_secret`: leaves a secret in every register and exits.
pub fn run_secret() -> i32 {
    let with_avx = avx();
    let r = Regs::pattern(SECRET, with_avx);
    fill(&r, with_avx);
    println!("utest fpu: secret left in the registers on cpu {}", sys::cpu_id().unwrap_or(0));
    0
}

/// The FXSAVE image of the registers (legacy region only) plus the YMM upper halves.
fn capture(out: &mut [u8; 512], upper: &mut [[u64; 2]; 16], with_avx: bool) {
    // SAFETY: FXSAVE64 writes 512 bytes to a 16-aligned buffer (AlignedBuf); VEXTRACTF128
    // writes 16 bytes per register into `upper`.
    unsafe {
        asm!("fxsave64 [{}]", in(reg) out.as_mut_ptr(), options(nostack));
        if with_avx {
            let p = upper.as_mut_ptr();
            asm!(
                "vextractf128 [{p}], ymm0, 1", "vextractf128 [{p} + 16], ymm1, 1", "vextractf128 [{p} + 32], ymm2, 1", "vextractf128 [{p} + 48], ymm3, 1",
                "vextractf128 [{p} + 64], ymm4, 1", "vextractf128 [{p} + 80], ymm5, 1", "vextractf128 [{p} + 96], ymm6, 1", "vextractf128 [{p} + 112], ymm7, 1",
                "vextractf128 [{p} + 128], ymm8, 1", "vextractf128 [{p} + 144], ymm9, 1", "vextractf128 [{p} + 160], ymm10, 1", "vextractf128 [{p} + 176], ymm11, 1",
                "vextractf128 [{p} + 192], ymm12, 1", "vextractf128 [{p} + 208], ymm13, 1", "vextractf128 [{p} + 224], ymm14, 1", "vextractf128 [{p} + 240], ymm15, 1",
                p = in(reg) p, options(nostack),
            );
        }
    }
}

#[repr(C, align(64))]
struct AlignedBuf([u8; 512]);

/// Checks that the registers hold the architectural initial state.
fn check_initial(who: &str) -> bool {
    let with_avx = avx();
    let mut img = AlignedBuf([0xaa; 512]);
    let mut upper = [[0xaaaa_aaaa_aaaa_aaaa_u64; 2]; 16];
    capture(&mut img.0, &mut upper, with_avx);
    let b = &img.0;
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let mut ok = true;
    let mut bad = |what: &str, got: u64, want: u64| {
        if got != want {
            ok = false;
            println!("utest fpu: FAIL {who}: {what} = {got:#x}, initial state is {want:#x}");
        }
    };
    bad("FCW", u16_at(0) as u64, FCW_INIT as u64);
    bad("FSW", u16_at(2) as u64, 0);
    bad("FTW (abridged)", b[4] as u64, 0);
    bad("MXCSR", u32_at(24) as u64, MXCSR_INIT as u64);
    for i in 0..8 {
        let st = &b[32 + 16 * i..32 + 16 * i + 10];
        bad("an ST/MM register", st.iter().fold(0u64, |a, &x| a | x as u64), 0);
    }
    for i in 0..16 {
        let x = &b[160 + 16 * i..176 + 16 * i];
        bad("an XMM register", x.iter().fold(0u64, |a, &v| a | v as u64), 0);
        if with_avx {
            bad("a YMM upper half", upper[i][0] | upper[i][1], 0);
        }
    }
    ok
}

static SECOND_OK: AtomicBool = AtomicBool::new(false);

fn second_thread(_: usize) {
    SECOND_OK.store(check_initial("a second thread"), Ordering::Release);
}

/// `fpu_fresh`: started after `fpu_secret` on the same CPU.
pub fn run_fresh() -> i32 {
    // First, before anything else could touch the registers.
    let first = check_initial("a new process's first thread");
    // Dirty this thread's registers: the second thread must not see them either.
    fill(&Regs::pattern(SECRET ^ 1, avx()), avx());
    let cpu = sys::cpu_id().unwrap_or(0);
    let second = match thread::spawn(second_thread, 0, Some(cpu)).and_then(ipc::thread_cap).and_then(ipc::thread_wait) {
        Ok(abi::thread_exit::ThreadExit::Exited) => SECOND_OK.load(Ordering::Acquire),
        other => {
            println!("utest fpu: FAIL the second thread ended as {other:?}");
            false
        }
    };
    println!("utest fpu: fresh process on cpu {cpu}: first thread {}, second thread {}", if first { "initial" } else { "NOT initial" }, if second { "initial" } else { "NOT initial" });
    i32::from(!(first && second))
}
