//! `test=ipc`: synchronous IPC inside one process, on and across CPUs.
//!
//! One server thread per CPU, each receiving on its own endpoint; one client thread per CPU,
//! each calling the server on its own CPU (the fastpath) and the server on the next CPU
//! (cross-CPU), half the calls with a buffer. Every client holds a send capability minted with
//! its own badge, and the server returns the badge it saw. Clients check every reply; the end
//! checks that the servers served exactly the calls the clients made, plus the one-way sends.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use abi::cap::Rights;
use rt::ipc;
use rt::{println, sys};

const CALLS: u64 = 200;
const SENDS: u64 = 10;
const MAX: usize = 64;
const OP_CALL: u64 = 1;
const OP_SEND: u64 = 2;
const OP_QUIT: u64 = 3;

static ENDPOINTS: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
static SERVED: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
static SENT_SEEN: AtomicU64 = AtomicU64::new(0);
static CALLS_OK: AtomicU64 = AtomicU64::new(0);
static FAILURES: AtomicUsize = AtomicUsize::new(0);

fn fail(what: core::fmt::Arguments) {
    FAILURES.fetch_add(1, Ordering::Relaxed);
    println!("utest ipc: FAIL {what}");
}

fn server(cpu: usize) {
    let ep = ENDPOINTS[cpu].load(Ordering::Acquire);
    let mut buf = [0u8; 256];
    let mut out = [0u8; 256];
    let mut out_len = 0;
    let mut reply: Option<ipc::Msg> = None;
    loop {
        let mut t = ipc::transfer(&out[..out_len], None, &mut buf);
        let received = ipc::serve(ep, reply.take(), Some(&mut t));
        let (badge, m) = match received {
            Ok(x) => x,
            Err(e) => return fail(format_args!("server {cpu}: receive: {e:?}")),
        };
        out_len = t.recv_len as usize;
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
            op => fail(format_args!("server {cpu}: unknown op {op}")),
        }
    }
}

fn client(cpu: usize) {
    let n = sys::cpu_count().unwrap_or(1);
    let badge = 100 + cpu as u64;
    for (target, label) in [(cpu, "same CPU"), ((cpu + 1) % n, "next CPU")] {
        let ep = match ipc::cap_derive(ENDPOINTS[target].load(Ordering::Acquire), Rights::SEND, badge) {
            Ok(h) => h,
            Err(e) => return fail(format_args!("client {cpu}: mint: {e:?}")),
        };
        for i in 0..CALLS {
            let data = [i as u8; 48];
            let mut back = [0u8; 48];
            let with_buffer = i % 2 == 0;
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

pub fn run() -> i32 {
    let n = sys::cpu_count().unwrap_or(1).min(MAX);
    for (cpu, ep) in ENDPOINTS.iter().enumerate().take(n) {
        match ipc::endpoint_create() {
            Ok(h) => ep.store(h, Ordering::Release),
            Err(e) => {
                println!("utest ipc: endpoint {cpu}: {e:?}");
                return 1;
            }
        }
    }
    for cpu in 0..n {
        if rt::thread::spawn(server, cpu, Some(cpu)).is_err() {
            println!("utest ipc: cannot start server {cpu}");
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
    while CALLS_OK.load(Ordering::Relaxed) + FAILURES.load(Ordering::Relaxed) as u64 * 1_000_000 < 2 * CALLS * clients
        || SENT_SEEN.load(Ordering::Relaxed) < SENDS * clients
    {
        if FAILURES.load(Ordering::Relaxed) > 0 {
            break;
        }
        let _ = sys::sleep_ms(10);
    }
    for cpu in 0..n {
        let ep = ENDPOINTS[cpu].load(Ordering::Acquire);
        if let Err(e) = ipc::call(ep, [OP_QUIT, 0, 0, 0], None) {
            fail(format_args!("quit server {cpu}: {e:?}"));
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
    if served != 2 * CALLS * clients || ok != served || clients != n as u64 {
        fail(format_args!("counts disagree: {clients} clients, {ok} answered, {served} served"));
    }
    FAILURES.load(Ordering::Relaxed) as i32
}
