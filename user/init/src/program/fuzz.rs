//! The user side of the kernel scenario `fuzz` (`cargo xtask fuzz`): with the servers up, a
//! `fuzz victim` process and one `fuzz worker` pinned to every CPU; when every worker has made
//! its calls, the victim is told to stop, and the servers must still answer: an echo round trip
//! through the name server. True only if every part held.
//!
//! Arguments (from the kernel command line, passed on by the kernel): `fuzz_seed=S` (default
//! 1) and `fuzz_count=N` calls in total (default 10000), split over the workers. The workers get
//! the console (SEND) and nothing else; the victim also its stop notification.

use super::{lookup, spawn, ArgBuf, Servers};
use rt::ipc;
use rt::proto::echo;
use rt::println;

const DEFAULT_SEED: u64 = 1;
const DEFAULT_COUNT: u64 = 10_000;
const ECHO_CALLS: u64 = 10;

fn number(arg: &str, key: &str) -> Option<u64> {
    let v = arg.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?;
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// `ECHO_CALLS` echo calls with a buffer, each reply checked.
fn echo_round_trip(s: &Servers) -> Result<(), &'static str> {
    let ep = lookup(s.name, "echo").map_err(|_| "the name server did not find echo")?;
    let mut result = Ok(());
    for i in 0..ECHO_CALLS {
        let data: [u8; 32] = core::array::from_fn(|k| (i as u8).wrapping_mul(17).wrapping_add(k as u8));
        let mut back = [0u8; 32];
        let mut t = ipc::transfer(&data, None, &mut back);
        match ipc::call(ep, [echo::ECHO, i, i ^ 0x5a, i * 3], Some(&mut t)) {
            Ok(r) if r == [0, i, !(i ^ 0x5a), i * 3 + 1] && t.recv_len == 32 && back.iter().rev().eq(data.iter()) => {}
            Ok(_) => result = Err("echo answered wrongly"),
            Err(_) => result = Err("the echo call failed"),
        }
    }
    let _ = ipc::cap_delete(ep);
    result
}

pub fn run(s: &Servers, cpus: usize, arg: &str) -> bool {
    let seed = number(arg, "fuzz_seed").unwrap_or(DEFAULT_SEED);
    let count = number(arg, "fuzz_count").unwrap_or(DEFAULT_COUNT);
    println!("fuzz: seed {seed}, {count} calls on {cpus} CPUs");
    let Ok(stop) = ipc::notification_create() else { return false };
    let Ok(victim) = spawn("fuzz", "victim", &[s.console, stop], None, None) else { return false };
    let mut workers = [0u64; 64];
    let n = cpus.min(workers.len());
    for (cpu, w) in workers.iter_mut().enumerate().take(n) {
        let share = count / n as u64 + ((cpu as u64) < count % n as u64) as u64;
        let arg = ArgBuf::format(format_args!("worker cpu={cpu} seed={seed} count={share}"));
        match spawn("fuzz", arg.as_str(), &[s.console], Some(cpu), None) {
            Ok(p) => *w = p,
            Err(_) => return false,
        }
    }
    let mut finished = 0;
    for (cpu, &w) in workers.iter().enumerate().take(n) {
        match ipc::process_wait(w) {
            Ok(0) => finished += 1,
            other => println!("fuzz: the worker on cpu {cpu} failed: {other:?}"),
        }
    }
    let _ = ipc::notify_signal(stop, 1);
    let victim_ok = matches!(ipc::process_wait(victim), Ok(0));
    let echo = echo_round_trip(s);
    let ok = finished == n && victim_ok && echo.is_ok();
    println!(
        "fuzz: {finished} of {n} workers finished their calls cleanly; the victim {}; {}",
        if victim_ok { "saw no change" } else { "FAILED" },
        match echo {
            Ok(()) => "echo answered through the name server",
            Err(why) => why,
        }
    );
    ok
}
