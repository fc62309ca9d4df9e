//! One fuzzing process, pinned to one CPU: `count` random system calls from a seeded generator.
//!
//! Each call is drawn as a number (one the ABI defines, any of 0..=127, or one of
//! [`calls::HUGE_NUMBERS`]), then six arguments, each of the shape the call expects from a hostile class (`hostile`), or
//! of any class one time in 8. Calls that may block or end their thread run as *jobs*: a new
//! thread (pinned here, needing no stack) loads the call from a job slot, makes it, stores RAX
//! and the slot's sequence number, and exits. The loop yields a few times for it; a job still
//! blocked is parked, and later reaped (its result counted when it comes), woken by a partner
//! call (a send for a parked receive, a receive for a parked send or call, a signal for a
//! parked wait), or ended by the process exit. Every other call is made from the loop itself,
//! which checks afterwards that RBX, RBP, RDI, RSI, RDX, R8-R10 and R12-R15 came back unchanged.
//!
//! What counts as an anomaly (reported, and the worker exits with status 1): a preserved
//! register changed; RAX neither a value nor an error code; a number above 16 bits that did
//! not answer NoSuchCall (a truncating kernel would run another call); `exit_path_counts` or
//! `ipc_stats` succeeding on memory the fuzzer cannot write or failing on memory it can; `log`
//! reading kernel memory; THREAD_EXIT returning; the program's text, read-only data or a
//! sentinel static changed at the end.

use crate::calls::{self, Arg, Run};
use crate::hostile::{self, Handles, Kind, Layout, Maps, Range, PAGE};
use crate::rng::{self, Rng};
use crate::tally::{self, Tally, ENDED, OK, OTHER, PARKED};
use abi::syscall as nr;
use abi::Error;
use core::arch::{asm, naked_asm};
use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};
use rt::{println, sys};

/// The console (SEND), for printing; no argument ever names it.
const CONSOLE: u64 = abi::cap::initial(0);
const SLOTS: usize = 64;
/// Jobs that only the process exit ends (WAIT_THREADS, THREAD_WAIT) allowed at once.
const MAX_PARKED_FOR_GOOD: usize = 4;
/// Yields the loop waits for a job before parking it (the job, pinned here, runs in the first).
const WAIT_YIELDS: u32 = 1;
const ARENA_LEN: u64 = 64 * 1024;
/// Transfer and spawn blocks in the arena: one per job slot, then a ring for direct calls.
const BLOCKS_AT: u64 = 32 * 1024;
const BLOCK: u64 = 128;
const DIRECT_BLOCKS: u64 = 32;
/// Anomalies printed in full (all are counted).
const ANOMALY_LINES: u64 = 8;
/// What `log` may print when it is given readable memory (not the arena's garbage).
const LOG_TEXT: &str = "fuzz log call";

/// A job: the call a job thread makes, and what it left. Written by the loop before the thread
/// exists, read by the thread, and its result fields written by the thread only.
#[repr(C)]
pub struct JobSlot {
    nr: AtomicU64,
    args: [AtomicU64; 6],
    seq: AtomicU64,
    result: AtomicU64,
    done: AtomicU64,
}

static JOBS: [JobSlot; SLOTS] = [const {
    JobSlot {
        nr: AtomicU64::new(0),
        args: [const { AtomicU64::new(0) }; 6],
        seq: AtomicU64::new(0),
        result: AtomicU64::new(0),
        done: AtomicU64::new(0),
    }
}; SLOTS];

/// The stack top given to new threads; none of them pushes anything.
#[repr(C, align(16))]
struct ThreadStack([AtomicU64; 32]);
static THREAD_STACK: ThreadStack = ThreadStack([const { AtomicU64::new(0) }; 32]);

/// Never offered to the kernel: a kernel write to the wrong user address may show here.
static SENTINEL: [AtomicU64; 512] = [const { AtomicU64::new(0) }; 512];

extern "C" {
    /// Inside `job_entry`, just after its SYSCALL.
    fn fuzz_job_resume();
}

/// A job thread: RDI = its slot. Uses no stack, so any RSP will do; keeps the slot in R12 and
/// the sequence number in R13, which the kernel preserves (also across a return context that
/// comes back to `fuzz_job_resume`).
#[unsafe(naked)]
unsafe extern "C" fn job_entry() -> ! {
    // SAFETY: entered only by the kernel for threads `launch` created, with RDI = a slot of
    // JOBS, fully written before the thread existed. The two stores go to that slot's result
    // and done words, which only this thread writes while the slot is busy.
    naked_asm!(
        "mov r12, rdi",
        "mov r13, [r12 + {seq}]",
        "mov rax, [r12 + {nr}]",
        "mov rdi, [r12 + {a0}]",
        "mov rsi, [r12 + {a1}]",
        "mov rdx, [r12 + {a2}]",
        "mov r10, [r12 + {a3}]",
        "mov r8, [r12 + {a4}]",
        "mov r9, [r12 + {a5}]",
        "syscall",
        ".global fuzz_job_resume",
        "fuzz_job_resume:",
        "mov [r12 + {result}], rax",
        "mov [r12 + {done}], r13",
        "mov eax, {exit}",
        "xor edi, edi",
        "syscall",
        "ud2",
        seq = const offset_of!(JobSlot, seq),
        nr = const offset_of!(JobSlot, nr),
        a0 = const offset_of!(JobSlot, args),
        a1 = const offset_of!(JobSlot, args) + 8,
        a2 = const offset_of!(JobSlot, args) + 16,
        a3 = const offset_of!(JobSlot, args) + 24,
        a4 = const offset_of!(JobSlot, args) + 32,
        a5 = const offset_of!(JobSlot, args) + 40,
        result = const offset_of!(JobSlot, result),
        done = const offset_of!(JobSlot, done),
        exit = const nr::THREAD_EXIT,
    )
}

/// A new thread's tamed entry: it ends at once.
#[unsafe(naked)]
unsafe extern "C" fn exit_stub() -> ! {
    // SAFETY: entered only by the kernel as a thread's first instruction; touches no memory.
    naked_asm!("mov eax, {exit}", "xor edi, edi", "syscall", "ud2", exit = const nr::THREAD_EXIT)
}

/// Makes system call `n` with `a` from this thread; RAX, and whether every register the ABI
/// preserves came back as it went in (R12-R15 carry `s`, RBX and RBP their complements).
fn direct(n: u64, a: [u64; 6], s: [u64; 4]) -> (u64, bool) {
    let rax: u64;
    let diff: u64;
    let mut o = a;
    let mut p = s;
    // SAFETY: the fuzzer only passes the kernel memory it may read and write (`hostile`:
    // the arena, or memory the kernel must refuse) and never a call that ends this thread or
    // redirects it (those run as jobs), so whatever the kernel does with the arguments cannot
    // touch what this program relies on. RBX and RBP are saved and restored around the call.
    unsafe {
        asm!(
            "push rbx",
            "push rbp",
            "mov rbx, r12",
            "not rbx",
            "mov rbp, r13",
            "not rbp",
            "syscall",
            "not rbx",
            "xor rbx, r12",
            "not rbp",
            "xor rbp, r13",
            "or rbx, rbp",
            "mov rcx, rbx",
            "pop rbp",
            "pop rbx",
            inlateout("rax") n => rax,
            inout("rdi") o[0], inout("rsi") o[1], inout("rdx") o[2],
            inout("r10") o[3], inout("r8") o[4], inout("r9") o[5],
            inout("r12") p[0], inout("r13") p[1], inout("r14") p[2], inout("r15") p[3],
            lateout("rcx") diff, lateout("r11") _,
        );
    }
    (rax, diff == 0 && o == a && p == s)
}

/// A maintenance call of the fuzzer's own (not fuzzed, not counted).
fn own(n: u64, a0: u64) -> u64 {
    direct(n, [a0, 0, 0, 0, 0, 0], [0; 4]).0
}

#[derive(Clone, Copy)]
struct Busy {
    seq: u64,
    nr: u64,
    args: [u64; 6],
    tid: u64,
    since: u64,
    for_good: bool,
    wakeups: u32,
}

pub struct Worker {
    cpu: u64,
    seed: u64,
    rng: Rng,
    layout: Layout,
    handles: Handles,
    maps: Maps,
    tally: Tally,
    slots: [Option<Busy>; SLOTS],
    next_seq: u64,
    tid: u64,
    recent_tids: [u64; 8],
    iteration: u64,
    next_direct_block: u64,
}

fn page_of(addr: u64) -> Range {
    Range::new(addr & !(PAGE - 1), PAGE)
}

/// FNV-1a over `r` (mapped, read-only).
fn checksum(r: Range) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for a in r.start..r.end {
        // SAFETY: `r` is part of this program's image, mapped for its whole life; volatile so
        // that the read really happens at the end, after the calls.
        let b = unsafe { core::ptr::read_volatile(a as *const u8) };
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn sentinel(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5e17_1e15
}

impl Worker {
    fn block(&self, index: u64) -> u64 {
        self.layout.arena.start + BLOCKS_AT + index * BLOCK
    }

    fn write_words(&self, at: u64, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            // SAFETY: `at` is a block inside the arena, which this program mapped and touched
            // and uses for nothing but the kernel's garbage (volatile: the kernel may write it
            // concurrently from a parked job).
            unsafe { core::ptr::write_volatile((at + 8 * i as u64) as *mut u64, *w) };
        }
    }

    fn read_word(&self, at: u64) -> u64 {
        // SAFETY: as in `write_words`.
        unsafe { core::ptr::read_volatile(at as *const u64) }
    }

    /// Fills transfer block `index` with hostile fields.
    fn transfer(&mut self, index: u64) -> u64 {
        let at = self.block(index);
        let r = &mut self.rng;
        let len = |r: &mut Rng| if r.chance(3, 4) { r.below(abi::ipc::MAX_BUFFER as u64 + 2) } else { hostile::length(r) };
        let send_buf = hostile::pointer(r, &self.layout, &self.maps);
        let send_len = len(r);
        let send_cap = if r.chance(1, 2) { 0 } else { self.handles.pick(r) };
        let send_rights = hostile::rights(r);
        let recv_buf = hostile::pointer(r, &self.layout, &self.maps);
        let recv_len = len(r);
        let junk = r.next_u64();
        self.write_words(at, &[send_buf, send_len, send_cap, send_rights, recv_buf, recv_len, junk, junk, junk]);
        at
    }

    /// Fills spawn block `index`: module names that exist, or not, and hostile lengths.
    fn spawn_args(&mut self, index: u64) -> u64 {
        const NAMES: [&str; 4] = ["fuzz", "echo", "init", "no-such-module"];
        let at = self.block(index);
        let r = &mut self.rng;
        let name = r.pick(&NAMES);
        let (name_ptr, name_len) =
            if r.chance(3, 4) { (name.as_ptr() as u64, name.len() as u64) } else { (hostile::pointer(r, &self.layout, &self.maps), hostile::length(r)) };
        let arg = hostile::pointer(r, &self.layout, &self.maps);
        let arg_len = hostile::length(r) & 0x7ff;
        let caps = hostile::pointer(r, &self.layout, &self.maps);
        let caps_len = r.below(20);
        let keep = r.below(2);
        let cpu = hostile::cpu(r, self.layout.cpus);
        let exit = self.handles.pick(r);
        let bits = hostile::integer(r);
        self.write_words(at, &[name_ptr, name_len, arg, arg_len, caps, caps_len, keep, cpu, exit, bits]);
        at
    }

    fn tid_value(&mut self) -> u64 {
        match self.rng.below(6) {
            0 | 1 => self.tid,
            2 | 3 => self.rng.pick(&self.recent_tids),
            4 => self.rng.below(4096),
            _ => hostile::integer(&mut self.rng),
        }
    }

    /// One argument of shape `shape`; `block` is the transfer/spawn block to build in.
    fn arg(&mut self, shape: Arg, block: u64) -> u64 {
        // The shapes that keep the fuzzer's own control flow safe are never replaced.
        let safety = matches!(shape, Arg::Entry | Arg::Rip | Arg::ResumeRip | Arg::NoWatch);
        let shape = if !safety && self.rng.chance(1, 8) { Arg::Any } else { shape };
        let r = &mut self.rng;
        let l = &self.layout;
        let v = match shape {
            Arg::Any => match r.below(6) {
                0 => hostile::pointer(r, l, &self.maps),
                1 => hostile::length(r),
                2 => self.handles.pick(r),
                _ => hostile::integer(r),
            },
            Arg::Ptr => hostile::pointer(r, l, &self.maps),
            Arg::Len => hostile::length(r),
            Arg::Handle => self.handles.pick(r),
            Arg::Int => hostile::integer(r),
            Arg::Rights => hostile::rights(r),
            Arg::Cpu => hostile::cpu(r, l.cpus),
            Arg::Ms => hostile::millis(r),
            Arg::Tid => self.tid_value(),
            Arg::Xfer => match r.below(10) {
                0..=2 => 0,
                3..=7 => self.transfer(block),
                _ => hostile::pointer(r, l, &self.maps),
            },
            Arg::Spawn => {
                if r.chance(2, 3) {
                    self.spawn_args(block)
                } else {
                    hostile::pointer(r, l, &self.maps)
                }
            }
            Arg::Entry => hostile::entry(r, l),
            Arg::Rip => hostile::return_rip(r, l),
            Arg::ResumeRip => hostile::resume_rip(r),
            Arg::NoWatch => hostile::no_watch(r, l),
            Arg::Flags => match r.below(3) {
                0 => r.next_u64(),
                1 => 1 << r.below(22),
                _ => 0x202,
            },
        };
        self.handles.sanitize(v)
    }

    /// A handle a busy job waits on.
    fn in_use(&self, h: u64) -> bool {
        self.slots.iter().flatten().any(|b| b.args[0] == h)
    }

    /// The arguments of call `n`, tamed where the call needs it.
    fn arguments(&mut self, n: u64, shapes: [Arg; 6], block: u64) -> [u64; 6] {
        let mut a = [0u64; 6];
        for (i, s) in shapes.into_iter().enumerate() {
            a[i] = self.arg(s, block);
        }
        match n {
            nr::UNMAP => {
                let (addr, len) = hostile::tame_unmap(a[0], a[1], &self.layout, &mut self.rng, &self.maps);
                a[0] = addr;
                a[1] = len;
            }
            nr::LOG => {
                // Readable memory would print its bytes to the console: print a short text instead.
                let readable = [self.layout.arena, self.layout.text, self.layout.rodata];
                if readable.iter().any(|r| r.overlaps(a[0], a[0].saturating_add(a[1].clamp(1, 512)))) {
                    a[0] = LOG_TEXT.as_ptr() as u64;
                    a[1] = self.rng.below(LOG_TEXT.len() as u64 + 1);
                }
            }
            // A long sleep parks a job for up to an hour (the kernel's cap): rarely.
            nr::SLEEP if a[0] > 30 && !self.rng.chance(1, 64) => a[0] %= 31,
            // Deleting the last handle of an object a parked job waits on would park it for good.
            nr::CAP_DELETE if self.in_use(a[0]) && self.handles.is_last_of_object(a[0]) => a[0] ^= 1 << 41,
            _ => {}
        }
        a
    }

    fn anomaly(&mut self, n: u64, a: &[u64; 6], rax: u64, what: core::fmt::Arguments) {
        self.tally.anomalies += 1;
        if self.tally.anomalies <= ANOMALY_LINES {
            println!(
                "ANOMALY cpu {} seed {} call {} nr {n:#x} ({}) args [{:#x}, {:#x}, {:#x}, {:#x}, {:#x}, {:#x}] rax {rax:#x}: {what}",
                self.cpu,
                self.seed,
                self.iteration,
                calls::call_for(n).name,
                a[0],
                a[1],
                a[2],
                a[3],
                a[4],
                a[5]
            );
        }
    }

    fn record(&mut self, h: u64, kind: Kind, object: u32) {
        let slots = self.slots;
        let in_use = move |x: u64| slots.iter().flatten().any(|b| b.args[0] == x);
        if let Some(evicted) = self.handles.add(h, kind, object, &mut self.rng, in_use) {
            let _ = own(nr::CAP_DELETE, evicted);
        }
    }

    /// What a completed call changes in the fuzzer's picture: new handles, deleted ones, maps.
    fn learn(&mut self, n: u64, a: &[u64; 6], rax: u64) {
        if tally::outcome(rax) != OK {
            return;
        }
        match n {
            nr::ENDPOINT_CREATE => {
                let o = self.handles.new_object();
                self.record(rax, Kind::Endpoint, o)
            }
            nr::NOTIFICATION_CREATE => {
                let o = self.handles.new_object();
                self.record(rax, Kind::Notification, o)
            }
            nr::CAP_DERIVE => {
                let (kind, object) = self.handles.find(a[0]).map_or((Kind::Unknown, 0), |e| (e.kind, e.object));
                self.record(rax, kind, object)
            }
            nr::THREAD_CAP => self.record(rax, Kind::Thread, 0),
            nr::CAP_DELETE => {
                self.handles.remove(a[0]);
            }
            nr::MAP => self.maps.add(rax, a[0]),
            _ => {}
        }
    }

    /// The checks on a direct call's result.
    fn check(&mut self, n: u64, a: &[u64; 6], rax: u64, regs_kept: bool) {
        let outcome = tally::outcome(rax);
        if !regs_kept {
            self.anomaly(n, a, rax, format_args!("a register the ABI preserves changed"));
        }
        if outcome == OTHER {
            self.anomaly(n, a, rax, format_args!("RAX is neither a value nor an error code"));
        }
        if !calls::call_for(n).defined && n > 0xffff && rax != Error::NoSuchCall.to_raw() {
            self.anomaly(n, a, rax, format_args!("an undefined number did not answer NoSuchCall"));
        }
        let writable = |len: u64| self.layout.arena.start <= a[0] && a[0].checked_add(len).is_some_and(|e| e <= self.layout.arena.end);
        let out_len = match n {
            nr::EXIT_PATH_COUNTS => Some(24),
            nr::IPC_STATS => Some(32),
            _ => None,
        };
        if let Some(len) = out_len {
            match (writable(len), outcome) {
                (true, o) if o != OK => self.anomaly(n, a, rax, format_args!("refused to write to writable memory")),
                (false, OK) => self.anomaly(n, a, rax, format_args!("claims to have written to memory the fuzzer cannot write")),
                _ => {}
            }
        }
        if n == nr::LOG && a[1] > 0 && a[0] >= abi::layout::USER_END && outcome == OK {
            self.anomaly(n, a, rax, format_args!("logged from a kernel or non-canonical address"));
        }
    }

    fn free_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.is_none()).count()
    }

    /// Starts job `n`; false if it could not start (no free slot, too many parked for good,
    /// or the kernel refused the thread), in which case nothing was made.
    fn launch(&mut self, n: u64, given: Option<[u64; 6]>) -> bool {
        let for_good = calls::parks_for_good(n);
        if for_good && self.slots.iter().flatten().filter(|b| b.for_good).count() >= MAX_PARKED_FOR_GOOD {
            return false;
        }
        let Some(i) = self.slots.iter().position(Option::is_none) else { return false };
        let a = match given {
            Some(a) => a,
            None => self.arguments(n, calls::call_for(n).args, i as u64),
        };
        self.next_seq += 1;
        let seq = self.next_seq;
        let slot = &JOBS[i];
        slot.nr.store(n, Ordering::Relaxed);
        for (w, v) in slot.args.iter().zip(a) {
            w.store(v, Ordering::Relaxed);
        }
        slot.seq.store(seq, Ordering::Relaxed);
        slot.done.store(0, Ordering::Release);
        let entry = job_entry as *const () as u64;
        let created = own4(nr::THREAD_CREATE, entry, self.layout.thread_stack_top, slot as *const JobSlot as u64, self.cpu);
        let Ok(tid) = Error::result(created) else { return false };
        self.recent_tids[(seq % 8) as usize] = tid;
        self.tally.jobs += 1;
        self.slots[i] = Some(Busy { seq, nr: n, args: a, tid, since: self.iteration, for_good, wakeups: 0 });
        // A thread_exit or a sleep never finishes at once: reaped later.
        let waits = if matches!(n, nr::THREAD_EXIT | nr::SLEEP) { 0 } else { WAIT_YIELDS };
        for _ in 0..waits {
            if self.try_complete(i) {
                return true;
            }
            let _ = own(nr::YIELD, 0);
        }
        self.try_complete(i);
        true
    }

    /// Counts job `i`'s result if it has one, and frees its slot.
    fn try_complete(&mut self, i: usize) -> bool {
        let Some(b) = self.slots[i] else { return true };
        if JOBS[i].done.load(Ordering::Acquire) != b.seq {
            return false;
        }
        let rax = JOBS[i].result.load(Ordering::Relaxed);
        self.slots[i] = None;
        self.tally.count(calls::bucket(b.nr), tally::outcome(rax));
        if b.nr == nr::THREAD_EXIT {
            self.anomaly(b.nr, &b.args, rax, format_args!("thread_exit returned"));
        }
        if tally::outcome(rax) == OTHER {
            self.anomaly(b.nr, &b.args, rax, format_args!("RAX is neither a value nor an error code"));
        }
        // A capability received into this job's own transfer block is the fuzzer's now.
        let block = self.block(i as u64);
        if matches!(b.nr, nr::RECV | nr::CALL | nr::REPLY_RECV) && b.args[5] == block && tally::outcome(rax) == OK {
            let cap = self.read_word(block + offset_of!(abi::ipc::Transfer, recv_cap) as u64);
            self.record(cap, Kind::Unknown, 0);
        }
        true
    }

    /// Reaps finished jobs; with `check_alive`, also the ones whose thread ended in the call.
    fn reap(&mut self, check_alive: bool) {
        for i in 0..SLOTS {
            if self.try_complete(i) || !check_alive {
                continue;
            }
            let Some(b) = self.slots[i] else { continue };
            match Error::result(own(nr::THREAD_CAP, b.tid)) {
                Ok(h) => {
                    let _ = own(nr::CAP_DELETE, h);
                }
                Err(Error::NotFound) => {
                    // Dead: a result it stored before dying is visible now, else it died inside.
                    if !self.try_complete(i) {
                        self.slots[i] = None;
                        self.tally.count(calls::bucket(b.nr), ENDED);
                    }
                }
                Err(_) => {}
            }
        }
    }

    /// Gives parked IPC jobs a partner: a send for a receive, a receive for a send or call, a
    /// signal for a notification wait. The partners are fuzzed calls like any other.
    fn wake_parked(&mut self, budget: u64) -> u64 {
        let mut made = 0;
        for i in 0..SLOTS {
            if made >= budget {
                break;
            }
            let Some(b) = self.slots[i] else { continue };
            if b.for_good || b.wakeups >= 3 || self.iteration - b.since < 16 {
                continue;
            }
            if let Some(busy) = self.slots[i].as_mut() {
                busy.wakeups += 1;
            }
            let h = self.handles.same_object(b.args[0], &mut self.rng);
            let words = [self.rng.next_u64(), self.rng.next_u64(), self.rng.next_u64(), self.rng.next_u64()];
            match b.nr {
                nr::RECV | nr::REPLY_RECV => {
                    made += self.launch(nr::SEND, Some([h, words[0], words[1], words[2], words[3], 0])) as u64;
                }
                nr::SEND | nr::CALL => {
                    made += self.launch(nr::RECV, Some([h, 0, 0, 0, 0, 0])) as u64;
                }
                nr::NOTIFY_WAIT => {
                    let a = [h, 1 | words[0], 0, 0, 0, 0];
                    made += 1;
                    self.make_direct(nr::NOTIFY_SIGNAL, a);
                }
                _ => {}
            }
        }
        made
    }

    fn make_direct(&mut self, n: u64, a: [u64; 6]) {
        let s = [self.rng.next_u64(), self.rng.next_u64(), self.rng.next_u64(), self.rng.next_u64()];
        let (rax, kept) = direct(n, a, s);
        self.tally.direct += 1;
        self.tally.count(calls::bucket(n), tally::outcome(rax));
        self.check(n, &a, rax, kept);
        self.learn(n, &a, rax);
    }

    /// A number: one time in 16 a huge one, 4 in 16 any of 0..=127, else one the ABI defines
    /// (most of 0..=127 is undefined, and answers NoSuchCall before looking at anything).
    fn number(&mut self) -> u64 {
        match self.rng.below(16) {
            0 => self.rng.pick(calls::HUGE_NUMBERS),
            1..=4 => self.rng.below(128),
            _ => loop {
                let n = self.rng.below(calls::DEFINED_BELOW);
                if calls::call_for(n).defined {
                    break n;
                }
            },
        }
    }

    /// Makes one fuzzed call; false if the draw was not made (excluded, or no job could start).
    fn step(&mut self) -> bool {
        let n = self.number();
        let c = calls::call_for(n);
        match c.run {
            Run::Excluded => {
                self.tally.excluded += 1;
                false
            }
            Run::Job => {
                let made = self.launch(n, None);
                if !made {
                    self.tally.skipped += 1;
                }
                made
            }
            Run::Direct => {
                let block = SLOTS as u64 + self.next_direct_block;
                self.next_direct_block = (self.next_direct_block + 1) % DIRECT_BLOCKS;
                let a = self.arguments(n, c.args, block);
                self.make_direct(n, a);
                true
            }
        }
    }
}

fn own4(n: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    direct(n, [a0, a1, a2, a3, 0, 0], [0; 4]).0
}

/// The program's text: the pages from its lowest to its highest known function (segments are
/// page-aligned, so every page in between is text).
fn text_range() -> Range {
    let fns = [job_entry as *const () as u64, exit_stub as *const () as u64, run as *const () as u64, direct as *const () as u64];
    let lo = fns.iter().min().unwrap() & !(PAGE - 1);
    let hi = (fns.iter().max().unwrap() & !(PAGE - 1)) + PAGE;
    Range { start: lo, end: hi }
}

/// Sets the stage (arena, reservations, handles), makes `count` calls, prints the summary.
/// Returns the exit status: 0 if every call was made and nothing anomalous happened.
pub fn run(cpu: u64, seed: u64, count: u64) -> i32 {
    let cpus = sys::cpu_count().unwrap_or(1) as u64;
    let Ok(arena) = sys::map(ARENA_LEN as usize) else {
        println!("cannot map the arena");
        return 1;
    };
    let Ok(untouched) = sys::map(ARENA_LEN as usize) else {
        println!("cannot map the untouched reservation");
        return 1;
    };
    let worker_seed = rng::worker_seed(seed, cpu);
    let mut rng = Rng::new(worker_seed);
    for off in (0..ARENA_LEN).step_by(8) {
        // SAFETY: the arena was just mapped read-write for this program; the stores touch each
        // page, which demand paging maps.
        unsafe { core::ptr::write_volatile((arena as u64 + off) as *mut u64, rng.next_u64()) };
    }
    for (i, s) in SENTINEL.iter().enumerate() {
        s.store(sentinel(i), Ordering::Relaxed);
    }
    let layout = Layout {
        arena: Range::new(arena as u64, ARENA_LEN),
        untouched: Range::new(untouched as u64, ARENA_LEN),
        text: text_range(),
        rodata: page_of(LOG_TEXT.as_ptr() as u64),
        exit_stub: exit_stub as *const () as u64,
        job_resume: fuzz_job_resume as *const () as u64,
        thread_stack_top: (THREAD_STACK.0.as_ptr() as u64 + core::mem::size_of::<ThreadStack>() as u64) & !15,
        cpus,
    };
    let text_sum = checksum(layout.text);
    let rodata_sum = checksum(layout.rodata);
    let mut w = Worker {
        cpu,
        seed,
        rng,
        layout,
        handles: Handles::new([CONSOLE, 0]),
        maps: Maps::default(),
        tally: Tally::default(),
        slots: [None; SLOTS],
        next_seq: 0,
        tid: sys::thread_id().unwrap_or(0),
        recent_tids: [0; 8],
        iteration: 0,
        next_direct_block: 0,
    };
    println!("cpu {cpu}: seed {seed} (worker seed {worker_seed:#x}), {count} calls");
    let tenth = (count / 10).max(1);
    let mut made = 0;
    let mut reported = 0;
    while made < count {
        w.iteration += 1;
        made += w.step() as u64;
        if w.iteration.is_multiple_of(16) && w.free_slots() < SLOTS {
            w.reap(w.iteration.is_multiple_of(256));
            if w.iteration.is_multiple_of(32) {
                made += w.wake_parked(count - made);
            }
        }
        if made / tenth > reported || made == count {
            reported = made / tenth;
            println!("cpu {cpu}: {made}/{count} calls");
        }
    }
    // Let the last jobs finish; the ones still blocked stay for the process exit to end.
    for round in 0..64 {
        w.reap(round % 16 == 15);
        if w.free_slots() == SLOTS {
            break;
        }
        let _ = own(nr::YIELD, 0);
    }
    let mut parked = 0;
    for b in w.slots.iter().flatten() {
        w.tally.per_number[calls::bucket(b.nr)][PARKED] += 1;
        parked += 1;
    }
    if checksum(w.layout.text) != text_sum || checksum(w.layout.rodata) != rodata_sum {
        w.anomaly(0, &[0; 6], 0, format_args!("the program's read-only text or data changed"));
    }
    if SENTINEL.iter().enumerate().any(|(i, s)| s.load(Ordering::Relaxed) != sentinel(i)) {
        w.anomaly(0, &[0; 6], 0, format_args!("a static the kernel was never given changed"));
    }
    w.tally.summary(cpu, seed, |line| println!("{line}"));
    let ok = w.tally.anomalies == 0 && w.tally.calls() == count;
    println!(
        "cpu {cpu}: {} calls made, {parked} jobs still parked, {} anomalies: {}",
        w.tally.calls(),
        w.tally.anomalies,
        if ok { "ok" } else { "FAILED" }
    );
    if ok { 0 } else { 1 }
}
