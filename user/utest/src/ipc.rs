//! `test=ipc`: synchronous IPC inside one process, on and across CPUs.
//!
//! Two server threads per CPU, each receiving on its own endpoint: one with a transfer block
//! (it takes buffers), one with registers only (the kernel's fastpath when its caller waits on
//! the same CPU). One client thread per CPU calls both servers on its own CPU and both on the
//! next CPU (cross-CPU), half the calls to a buffered server with a buffer. Every client holds
//! a send capability minted with its own badge, and the server returns the badge it saw.
//! Clients check every reply; the end checks that the servers served exactly the calls the
//! clients made, plus the one-way sends, and that the fastpath was taken.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use abi::cap::Rights;
use rt::ipc;
use rt::{println, sys};

const CALLS: u64 = 200;
const SENDS: u64 = 10;
/// Servers' slots: one per CPU, and the last for `crash_while_serving`.
const MAX: usize = 65;
const OP_CALL: u64 = 1;
const OP_SEND: u64 = 2;
const OP_QUIT: u64 = 3;
/// The registers-only server dies (UD2) holding the call: the caller must get `PeerDied`.
const OP_CRASH: u64 = 4;

/// Per CPU: the buffered server's endpoint, then the registers-only server's.
static ENDPOINTS: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
static REG_ENDPOINTS: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
static SERVED: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
static SENT_SEEN: AtomicU64 = AtomicU64::new(0);
static CALLS_OK: AtomicU64 = AtomicU64::new(0);
static FAILURES: AtomicUsize = AtomicUsize::new(0);

fn fail(what: core::fmt::Arguments) {
    FAILURES.fetch_add(1, Ordering::Relaxed);
    println!("utest ipc: FAIL {what}");
}

/// `arg`: the CPU times two, plus one for the registers-only server.
fn server(arg: usize) {
    let (cpu, regs_only) = (arg / 2, arg % 2 == 1);
    let ep = if regs_only { &REG_ENDPOINTS } else { &ENDPOINTS }[cpu].load(Ordering::Acquire);
    let mut buf = [0u8; 256];
    let mut out = [0u8; 256];
    let mut out_len = 0;
    let mut reply: Option<ipc::Msg> = None;
    loop {
        let mut t = ipc::transfer(&out[..out_len], None, &mut buf);
        let received = ipc::serve(ep, reply.take(), (!regs_only).then_some(&mut t));
        let (badge, m) = match received {
            Ok(x) => x,
            Err(e) => return fail(format_args!("server {cpu}: receive: {e:?}")),
        };
        out_len = if regs_only { 0 } else { t.recv_len as usize };
        out[..out_len].copy_from_slice(&buf[..out_len]);
        out[..out_len].iter_mut().for_each(|b| *b = b.wrapping_add(1));
        match m[0] {
            OP_CALL => {
                SERVED[cpu].fetch_add(1, Ordering::Relaxed);
                reply = Some([0, m[1] + 1, m[2].wrapping_mul(3), badge]);
            }
            OP_SEND => {
                SENT_SEEN.fetch_add(m[1], Ordering::Relaxed);
            }
            OP_QUIT => {
                let _ = ipc::reply([0; 4], None);
                return;
            }
            // SAFETY: UD2 ends this thread (the kernel kills a faulting user thread); nothing
            // after it runs.
            OP_CRASH => unsafe { core::arch::asm!("ud2", options(noreturn)) },
            op => fail(format_args!("server {cpu}: unknown op {op}")),
        }
    }
}

fn client(cpu: usize) {
    let n = sys::cpu_count().unwrap_or(1);
    let badge = 100 + cpu as u64;
    let next = (cpu + 1) % n;
    let targets = [
        (&ENDPOINTS[cpu], "same CPU", false),
        (&REG_ENDPOINTS[cpu], "same CPU, registers only", true),
        (&ENDPOINTS[next], "next CPU", false),
        (&REG_ENDPOINTS[next], "next CPU, registers only", true),
    ];
    for (target, label, regs_only) in targets {
        let ep = match ipc::cap_derive(target.load(Ordering::Acquire), Rights::SEND, badge) {
            Ok(h) => h,
            Err(e) => return fail(format_args!("client {cpu}: mint: {e:?}")),
        };
        for i in 0..CALLS {
            let data = [i as u8; 48];
            let mut back = [0u8; 48];
            let with_buffer = i % 2 == 0 && !regs_only;
            let mut t = ipc::transfer(&data, None, &mut back);
            let r = ipc::call(ep, [OP_CALL, i, i + cpu as u64, 0], with_buffer.then_some(&mut t));
            match r {
                Ok(r) if r == [0, i + 1, (i + cpu as u64).wrapping_mul(3), badge] => {}
                other => return fail(format_args!("client {cpu} ({label}) call {i}: {other:?}")),
            }
            if with_buffer && (t.recv_len != 48 || back.iter().any(|&b| b != (i as u8).wrapping_add(1))) {
                return fail(format_args!("client {cpu} ({label}) call {i}: wrong buffer back"));
            }
            CALLS_OK.fetch_add(1, Ordering::Relaxed);
        }
        let _ = ipc::cap_delete(ep);
    }
    // One-way sends: complete once the server has taken them.
    let ep = ENDPOINTS[(cpu + 1) % n].load(Ordering::Acquire);
    for _ in 0..SENDS {
        if let Err(e) = ipc::send(ep, [OP_SEND, 1, 0, 0], None) {
            return fail(format_args!("client {cpu}: send: {e:?}"));
        }
    }
}

/// A registers-only server on CPU 0 takes a call through the fastpath and dies holding it
/// (its reply capability came in its fastpath slot): the caller, blocked in the fastpath's
/// call, must be woken with `PeerDied`, and the kernel must go on.
fn crash_while_serving() {
    static DONE: AtomicU64 = AtomicU64::new(0);
    fn caller(ep: usize) {
        // A first call the server answers: after it, the server waits in `reply_recv`.
        match ipc::call(ep as u64, [OP_CALL, 1, 1, 0], None) {
            Ok(r) if r[1] == 2 => {}
            other => fail(format_args!("crash server: first call: {other:?}")),
        }
        match ipc::call(ep as u64, [OP_CRASH, 0, 0, 0], None) {
            Err(abi::Error::PeerDied) => {}
            other => fail(format_args!("crash server: the call it died holding returned {other:?}, not PeerDied")),
        }
        DONE.store(1, Ordering::Release);
    }
    let slot = MAX - 1;
    let Ok(ep) = ipc::endpoint_create() else { return fail(format_args!("crash server: endpoint_create")) };
    REG_ENDPOINTS[slot].store(ep, Ordering::Release);
    if rt::thread::spawn(server, 2 * slot + 1, Some(0)).is_err() || rt::thread::spawn(caller, ep as usize, Some(0)).is_err() {
        return fail(format_args!("crash server: cannot start its threads"));
    }
    for _ in 0..500 {
        if DONE.load(Ordering::Acquire) != 0 {
            break;
        }
        let _ = sys::sleep_ms(10);
    }
    if DONE.load(Ordering::Acquire) == 0 {
        fail(format_args!("crash server: the caller never came back"));
    }
    SERVED[slot].store(0, Ordering::Relaxed);
}

pub fn run() -> i32 {
    let n = sys::cpu_count().unwrap_or(1).min(MAX - 1);
    for (cpu, ep) in ENDPOINTS.iter().chain(REG_ENDPOINTS.iter()).enumerate().filter(|(i, _)| i % MAX < n) {
        match ipc::endpoint_create() {
            Ok(h) => ep.store(h, Ordering::Release),
            Err(e) => {
                println!("utest ipc: endpoint {cpu}: {e:?}");
                return 1;
            }
        }
    }
    let before = ipc::ipc_stats().unwrap_or_default();
    for arg in 0..2 * n {
        if rt::thread::spawn(server, arg, Some(arg / 2)).is_err() {
            println!("utest ipc: cannot start server {arg}");
            return 1;
        }
    }
    let mut clients = 0;
    for cpu in 0..n {
        if rt::thread::spawn(client, cpu, Some(cpu)).is_ok() {
            clients += 1;
        }
    }
    // Wait for the clients (the servers block in receive meanwhile).
    while CALLS_OK.load(Ordering::Relaxed) + FAILURES.load(Ordering::Relaxed) as u64 * 1_000_000 < 4 * CALLS * clients
        || SENT_SEEN.load(Ordering::Relaxed) < SENDS * clients
    {
        if FAILURES.load(Ordering::Relaxed) > 0 {
            break;
        }
        let _ = sys::sleep_ms(10);
    }
    for cpu in 0..n {
        for eps in [&ENDPOINTS, &REG_ENDPOINTS] {
            let ep = eps[cpu].load(Ordering::Acquire);
            if let Err(e) = ipc::call(ep, [OP_QUIT, 0, 0, 0], None) {
                fail(format_args!("quit server {cpu}: {e:?}"));
            }
        }
    }
    let _ = sys::wait_threads();
    let served: u64 = SERVED.iter().take(n).map(|s| s.load(Ordering::Relaxed)).sum();
    let ok = CALLS_OK.load(Ordering::Relaxed);
    let stats = ipc::ipc_stats().unwrap_or_default();
    println!(
        "utest ipc: {ok} calls answered and {served} served on {n} CPUs, {} one-way sends seen; {} fastpath, {} via the scheduler ({} cross-CPU)",
        SENT_SEEN.load(Ordering::Relaxed),
        stats.fastpath,
        stats.slowpath,
        stats.cross_cpu
    );
    if served != 4 * CALLS * clients || ok != served || clients != n as u64 {
        fail(format_args!("counts disagree: {clients} clients, {ok} answered, {served} served"));
    }
    crash_while_serving();
    // The registers-only calls to a server on the caller's CPU: after its first call, the
    // server waits in `reply_recv` whenever the next one comes, so at least the calls after
    // the first, and their replies, go through the fastpath (other clients' calls interleave,
    // so not always: when the server is busy the call queues).
    if stats.fastpath - before.fastpath < CALLS {
        fail(format_args!("only {} fastpath deliveries for {} registers-only calls on the caller's CPU", stats.fastpath - before.fastpath, CALLS * clients));
    }
    FAILURES.load(Ordering::Relaxed) as i32
}
