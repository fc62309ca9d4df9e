//! The user side of the kernel scenario `memory` (memory budgets): init starts a `steady`
//! process that keeps creating threads, mapping memory and calling echo, then one hostile
//! process after another, each exhausting one kind of kernel memory (maps, touched memory,
//! threads, endpoints, notifications, derivations, message buffers of blocked senders) and
//! ending a different way (exit, kill, crash). Checked, not only logged:
//!
//! - the steady process never gets an error (its own status);
//! - each hostile process got `NoMemory` (its status), and once it has ended init's budget is
//!   exactly as before it started: every byte and object it held, and its grant, came back;
//! - a child whose budget init revokes gets `NoMemory` from then on, and init's budget is whole
//!   again when it has ended;
//! - `spawn` with a budget larger than init's, or too small for the program, is refused with
//!   `NoMemory` and changes nothing;
//! - a process given all that init has left touches all of it while the console and the
//!   steady process carry on (the kernel's reserve is not part of any budget);
//! - at the end the kernel's free frames (plus the frames it keeps for reuse) are as they were
//!   before the first process of the scenario started.

use abi::cap::init_caps::MODULES;
use abi::ipc::MemoryInfo;
use rt::{ipc, println, sys};

use super::{ArgBuf, Servers};

/// What each hostile process may spend, and the steady one.
const HOSTILE_BUDGET: u64 = 24 << 20;
const STEADY_BUDGET: u64 = 8 << 20;
const REVOKED_BUDGET: u64 = 8 << 20;

const KINDS: [&str; 7] = ["maps", "touch", "threads", "endpoints", "notifications", "derive", "buffers"];
const ENDS: [&str; 3] = ["exit", "wait", "crash"];

fn mine() -> MemoryInfo {
    ipc::memory_info(ipc::NO_CAP).unwrap_or_default()
}

/// The parts of init's budget a child's life must leave as they were.
fn same_budget(a: &MemoryInfo, b: &MemoryInfo) -> bool {
    (a.used, a.limit, a.frames, a.threads, a.endpoints, a.notifications, a.grants, a.granted, a.messages, a.message_bytes)
        == (b.used, b.limit, b.frames, b.threads, b.endpoints, b.notifications, b.grants, b.granted, b.messages, b.message_bytes)
}

/// Frames free plus frames the kernel keeps for reuse (pooled stacks, grown heap). The
/// kernel gives stacks of ended threads back from its idle loop: wait (up to 2 s) until the
/// count settles at `want`.
fn kernel_frames_settle(want: Option<u64>) -> u64 {
    let mut last = 0;
    for _ in 0..100 {
        let i = mine();
        last = i.free_frames + i.cached_frames;
        if want.is_none_or(|w| w == last) {
            return last;
        }
        let _ = sys::sleep_ms(20);
    }
    last
}

fn hostile(s: &Servers, kind: &str, end: &str, cpu: usize, budget: u64) -> bool {
    let before = mine();
    let Ok(done) = ipc::notification_create() else { return false };
    let arg = ArgBuf::format(format_args!("hostile {kind} {end}"));
    let child = match ipc::spawn_with_budget(MODULES, "memhog", arg.as_str(), &[s.console, done], Some(cpu), None, budget) {
        Ok(c) => c,
        Err(e) => {
            println!("memory: cannot start hostile {kind}: {e:?}");
            return false;
        }
    };
    let _ = ipc::notify_wait(done);
    if end == "wait" {
        let _ = ipc::process_kill(child, 9);
    }
    let code = ipc::process_wait(child);
    let want = match end {
        "exit" => 0,
        "wait" => 9,
        _ => abi::FAULT_EXIT_BASE - 6,
    };
    let _ = ipc::cap_delete(child);
    let _ = ipc::cap_delete(done);
    let after = mine();
    let whole = same_budget(&before, &after);
    println!(
        "memory: hostile {kind} ({end}) ended with {code:?}; init's budget {}",
        if whole { "is as before" } else { "is NOT as before: FAILED" }
    );
    if !whole {
        println!("memory: before {before:?}");
        println!("memory: after  {after:?}");
    }
    code == Ok(want) && whole
}

fn revoke(s: &Servers, cpu: usize) -> bool {
    let before = mine();
    let child = match ipc::spawn_with_budget(MODULES, "memhog", "revoke", &[s.console], Some(cpu), None, REVOKED_BUDGET) {
        Ok(c) => c,
        Err(e) => {
            println!("memory: cannot start revoke: {e:?}");
            return false;
        }
    };
    let _ = sys::sleep_ms(100);
    let during = mine();
    let revoked = ipc::budget_revoke(child);
    let after_revoke = mine();
    // What the child did not use came back at once.
    let returned_now = during.used > after_revoke.used;
    let code = ipc::process_wait(child);
    let _ = ipc::cap_delete(child);
    let after = mine();
    let whole = same_budget(&before, &after);
    println!(
        "memory: revoked a child's budget ({revoked:?}): {} KiB back at once, the child ended with {code:?}, init's budget {}",
        (during.used - after_revoke.used.min(during.used)) / 1024,
        if whole { "is whole again" } else { "is NOT whole: FAILED" }
    );
    revoked.is_ok() && returned_now && code == Ok(0) && whole
}

/// `spawn` with more than init has, or with too little to start the program: `NoMemory`, and
/// init's budget unchanged.
fn refused_spawns(s: &Servers) -> bool {
    let before = mine();
    let too_much = ipc::spawn_with_budget(MODULES, "memhog", "steady", &[s.console], None, None, before.limit);
    let too_little = ipc::spawn_with_budget(MODULES, "memhog", "steady", &[s.console], None, None, 64 * 1024);
    // Revoking without CONTROL, what is not a process, or a stale handle, is refused.
    let no_rights = ipc::budget_revoke(s.console);
    let not_process = match ipc::endpoint_create() {
        Ok(ep) => {
            let r = ipc::budget_revoke(ep);
            let _ = ipc::cap_delete(ep);
            r
        }
        Err(e) => Err(e),
    };
    let stale = ipc::budget_revoke(abi::cap::handle(200, 7));
    let whole = same_budget(&before, &mine());
    println!(
        "memory: spawn with more than init has: {too_much:?}; with 64 KiB: {too_little:?}; revoke without CONTROL: {no_rights:?}, of an endpoint: {not_process:?}, of a stale handle: {stale:?}; init's budget {}",
        if whole { "unchanged" } else { "CHANGED: FAILED" }
    );
    too_much == Err(abi::Error::NoMemory)
        && too_little == Err(abi::Error::NoMemory)
        && no_rights == Err(abi::Error::NoRights)
        && not_process == Err(abi::Error::BadHandle)
        && stale.is_err()
        && whole
}

pub fn run(s: &Servers, cpus: usize) -> bool {
    let frames_before = kernel_frames_settle(None);
    let start = mine();
    println!("memory: init's budget {} KiB of {} KiB used; kernel frames {frames_before}", start.used / 1024, start.limit / 1024);
    let Ok(stop) = ipc::notification_create() else { return false };
    let steady = match ipc::spawn_with_budget(MODULES, "memhog", "steady", &[s.console, s.name_lookup, stop], Some(cpus - 1), None, STEADY_BUDGET) {
        Ok(p) => p,
        Err(e) => {
            println!("memory: cannot start steady: {e:?}");
            return false;
        }
    };
    let mut ok = true;
    for (i, kind) in KINDS.iter().enumerate() {
        ok &= hostile(s, kind, ENDS[i % ENDS.len()], 0, HOSTILE_BUDGET);
    }
    ok &= refused_spawns(s);
    // Everything init has left, to one process that touches it all: the kernel's reserve keeps
    // the kernel, the console (whose lines say so) and the steady process going meanwhile.
    let all = mine();
    println!("memory: all of init's remaining {} KiB to one hostile process", (all.limit - all.used) / 1024);
    ok &= hostile(s, "touch", "exit", 0, all.limit - all.used - 64 * 1024);
    ok &= revoke(s, 0);
    let _ = ipc::notify_signal(stop, 1);
    let steady_ok = ipc::process_wait(steady) == Ok(0);
    println!("memory: the steady process {}", if steady_ok { "never got an error" } else { "FAILED" });
    let _ = ipc::cap_delete(steady);
    let _ = ipc::cap_delete(stop);
    let end = mine();
    let frames_after = kernel_frames_settle(Some(frames_before));
    let frames_ok = frames_after == frames_before;
    println!(
        "memory: init's budget {}; kernel frames {frames_after} (before {frames_before}){}",
        if same_budget(&start, &end) { "is as at the start" } else { "is NOT as at the start: FAILED" },
        if frames_ok { "" } else { ": FAILED" }
    );
    ok && steady_ok && same_budget(&start, &end) && frames_ok
}
