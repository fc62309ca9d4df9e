//! memhog: the user side of the kernel scenario `memory` (memory budgets, `mm::budget`). init
//! starts it in three modes:
//!
//! - `hostile KIND END`: exhausts one kind of kernel memory its budget pays for, until the
//!   kernel says `NoMemory`: `maps` (one-page `map` calls by the hundred thousand), `touch`
//!   (mapped memory touched page by page, in a thread that the kernel kills with a page fault
//!   when the budget is spent), `threads` (threads that sleep), `endpoints`, `notifications`,
//!   `derive` (capability derivations), `buffers` (threads each blocked in a `send` of a full
//!   `MAX_BUFFER` buffer to an endpoint nobody receives from; then, with less than a buffer
//!   left, one more such `send` must be refused). Then it signals init and ends as END says:
//!   `exit` (status 0), `crash` (an invalid opcode: status `FAULT_EXIT_BASE - 6`) or `wait`
//!   (blocks until init kills it). Any error other than `NoMemory`, or no `NoMemory` at all,
//!   is status 1.
//! - `steady`: while the hostile processes run, a worker thread keeps creating a thread and
//!   waiting for it, mapping, touching and unmapping 64 KiB, and calling echo through the name
//!   service, at its own pace; init's stop notification ends it. Status 0 only if every one of
//!   those operations succeeded and it made enough rounds.
//! - `revoke`: allocates and frees kernel objects in a loop; init revokes its budget; from the
//!   first `NoMemory` on, every allocation must fail, even after it has freed what it held.
//!
//! Start capabilities: `initial(0)` the console (SEND); `hostile`: `initial(1)` a notification
//! to signal (bit 1) once exhausted; `steady`: `initial(1)` the name service (lookups),
//! `initial(2)` its stop notification (WAIT).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("memhog runs on x86_64-unknown-none as a boot module that init starts (test=memory)");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod program {
    use abi::cap::{initial, Rights};
    use abi::Error;
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use rt::proto::{echo, name};
    use rt::{ipc, println, sys, thread};

    const CONSOLE: u64 = initial(0);

    /// Each hostile loop gives up (and fails) after this many successful allocations.
    const MAX_TRIES: u64 = 200_000;

    fn main(arg: &str) -> i32 {
        rt::console::set(CONSOLE, "memhog");
        let mut words = arg.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("hostile"), Some(kind), Some(end)) => hostile(kind, end),
            (Some("steady"), ..) => steady(),
            (Some("revoke"), ..) => revoke(),
            _ => {
                println!("usage: hostile KIND END | steady | revoke (got {arg:?})");
                2
            }
        }
    }

    /// Repeats `alloc` until it fails; the number of successes if the failure was `NoMemory`.
    fn exhaust(what: &str, mut alloc: impl FnMut(u64) -> Result<(), Error>) -> Result<u64, ()> {
        for i in 0..MAX_TRIES {
            match alloc(i) {
                Ok(()) => {}
                Err(Error::NoMemory) => return Ok(i),
                Err(e) => {
                    println!("hostile {what}: FAILED: {e:?} after {i}, not NoMemory");
                    return Err(());
                }
            }
        }
        println!("hostile {what}: FAILED: {MAX_TRIES} allocations and never NoMemory");
        Err(())
    }

    /// Set when a `crash` ending starts: every sleeper crashes too (a fault ends only its
    /// own thread; the process ends with its last one).
    static CRASHING: AtomicBool = AtomicBool::new(false);

    fn crash() {
        // SAFETY: ends this thread with #UD on purpose.
        unsafe { core::arch::asm!("ud2") };
    }

    fn sleeper(_: usize) {
        loop {
            let _ = sys::sleep_ms(200);
            if CRASHING.load(Ordering::Acquire) {
                crash();
            }
        }
    }

    static TOUCHED: AtomicU64 = AtomicU64::new(0);

    /// What each sender of `buffers` sends: a full buffer, in memory the process already has
    /// (a sender's stack must not need a new page, which a spent budget cannot back).
    static PAYLOAD: [u8; ipc::MAX_BUFFER] = [0x5a; ipc::MAX_BUFFER];
    /// `buffers`: senders whose `send` was refused, or failed otherwise.
    static SEND_REFUSED: AtomicU64 = AtomicU64::new(0);
    static SEND_FAILED: AtomicU64 = AtomicU64::new(0);
    /// `buffers`: the endpoint the senders wait on, and how many wait (a `crash` ending takes
    /// their messages so that each wakes up and crashes too).
    static BUFFERS_EP: AtomicU64 = AtomicU64::new(0);
    static BLOCKED: AtomicU64 = AtomicU64::new(0);

    /// Blocks in a `send` of a full buffer (charged to this process while it waits).
    fn sender(ep: usize) {
        let mut t = ipc::transfer(&PAYLOAD, None, &mut []);
        match ipc::send(ep as u64, [0; 4], Some(&mut t)) {
            Ok(()) => {}
            Err(Error::NoMemory) => {
                SEND_REFUSED.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                SEND_FAILED.fetch_add(1, Ordering::Relaxed);
            }
        }
        if CRASHING.load(Ordering::Acquire) {
            crash();
        }
    }

    fn available(info: &abi::ipc::MemoryInfo) -> u64 {
        info.limit.saturating_sub(info.used)
    }

    /// Waits until a new sender is blocked (its buffer charged: `messages` reaches `want`) or
    /// was refused; false if neither happens within 2 s.
    fn sender_settled(want: u64) -> bool {
        for i in 0..2_100 {
            let info = ipc::memory_info(ipc::NO_CAP).unwrap_or_default();
            if info.messages >= want || SEND_REFUSED.load(Ordering::Relaxed) + SEND_FAILED.load(Ordering::Relaxed) > 0 {
                return true;
            }
            let _ = if i < 100 { sys::yield_now() } else { sys::sleep_ms(1) };
        }
        false
    }

    /// `buffers`: senders blocked with a full buffer each until the budget refuses a thread or
    /// a buffer; then the rest is spent down below one buffer (pages, then notifications) and
    /// one more full `send` must be refused at once, changing nothing. Returns the senders.
    fn buffers() -> Result<u64, ()> {
        let ep = ipc::endpoint_create().map_err(|e| println!("hostile buffers: FAILED: endpoint: {e:?}"))?;
        BUFFERS_EP.store(ep, Ordering::Release);
        let mut blocked = 0;
        for _ in 0..MAX_TRIES {
            // A new thread's stack page is touched here, before `thread_create`: a page the
            // budget cannot back would be a page fault of this thread.
            if available(&ipc::memory_info(ipc::NO_CAP).unwrap_or_default()) < 16 * 1024 {
                break;
            }
            match thread::spawn(sender, ep as usize, None) {
                Ok(_) => {}
                Err(Error::NoMemory) => break,
                Err(e) => {
                    println!("hostile buffers: FAILED: thread create: {e:?} after {blocked}");
                    return Err(());
                }
            }
            if !sender_settled(blocked + 1) {
                println!("hostile buffers: FAILED: sender {blocked} neither blocked nor was refused");
                return Err(());
            }
            if SEND_REFUSED.load(Ordering::Relaxed) + SEND_FAILED.load(Ordering::Relaxed) > 0 {
                break;
            }
            blocked += 1;
            BLOCKED.store(blocked, Ordering::Release);
        }
        if SEND_FAILED.load(Ordering::Relaxed) > 0 {
            println!("hostile buffers: FAILED: a send failed, not with NoMemory");
            return Err(());
        }
        let info = ipc::memory_info(ipc::NO_CAP).unwrap_or_default();
        if blocked == 0 || info.messages != blocked || info.message_bytes != blocked * ipc::MAX_BUFFER as u64 {
            println!("hostile buffers: FAILED: {blocked} senders blocked, but {} buffers ({} bytes) charged", info.messages, info.message_bytes);
            return Err(());
        }
        // Less than a thread is left: spend it down below one buffer.
        let region = sys::map(1 << 20).map_err(|e| println!("hostile buffers: FAILED: map: {e:?}"))?;
        let mut off = 0;
        while off < 1 << 20 && available(&ipc::memory_info(ipc::NO_CAP).unwrap_or_default()) >= 16 * 1024 {
            // SAFETY: inside the mapping just made, which only this thread uses; the budget
            // can back the page (and its page tables).
            unsafe { core::ptr::write_volatile(region.add(off), 1u8) };
            off += 4096;
        }
        let refused = exhaust("buffers", |_| ipc::notification_create().map(drop))?;
        let before = ipc::memory_info(ipc::NO_CAP).unwrap_or_default();
        if available(&before) >= ipc::MAX_BUFFER as u64 {
            println!("hostile buffers: FAILED: {} bytes left after {refused} notifications", available(&before));
            return Err(());
        }
        let mut t = ipc::transfer(&PAYLOAD, None, &mut []);
        let r = ipc::send(ep, [0; 4], Some(&mut t));
        let after = ipc::memory_info(ipc::NO_CAP).unwrap_or_default();
        let unchanged = (before.used, before.messages, before.message_bytes) == (after.used, after.messages, after.message_bytes);
        println!(
            "hostile buffers: {blocked} senders blocked holding {} bytes; with {} bytes left a full send got {r:?}, budget {}",
            after.message_bytes,
            available(&before),
            if unchanged { "unchanged" } else { "CHANGED: FAILED" }
        );
        if r != Err(Error::NoMemory) || !unchanged {
            return Err(());
        }
        Ok(blocked)
    }

    /// Maps 1 MiB at a time and touches every page until the kernel cannot back one.
    fn toucher(_: usize) {
        loop {
            let Ok(p) = sys::map(1 << 20) else { return };
            for off in (0..1 << 20).step_by(4096) {
                // SAFETY: inside the mapping just made, which only this thread uses.
                unsafe { core::ptr::write_volatile(p.add(off), 1u8) };
                TOUCHED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn hostile(kind: &str, end: &str) -> i32 {
        let n = match kind {
            // The `map` ranges (4,096) run out first; the calls go on to 100,000.
            "maps" => exhaust(kind, |_| sys::map(4096).map(drop)).map(|n| {
                let refused = (n..100_000).filter(|_| sys::map(4096) == Err(Error::NoMemory)).count() as u64;
                println!("hostile maps: {refused} more one-page maps refused");
                n
            }),
            "touch" => (|| {
                let t = thread::spawn(toucher, 0, None).map_err(|_| ())?;
                let cap = ipc::thread_cap(t).map_err(|_| ())?;
                match ipc::thread_wait(cap) {
                    Ok(abi::thread_exit::ThreadExit::Killed { vector: 14, .. }) => Ok(TOUCHED.load(Ordering::Relaxed)),
                    other => {
                        println!("hostile touch: FAILED: the toucher ended with {other:?}, not a #PF");
                        Err(())
                    }
                }
            })(),
            "threads" => exhaust(kind, |_| thread::spawn(sleeper, 0, None).map(drop)),
            "endpoints" => exhaust(kind, |_| ipc::endpoint_create().map(drop)),
            "notifications" => exhaust(kind, |_| ipc::notification_create().map(drop)),
            "derive" => exhaust(kind, |_| ipc::cap_derive(CONSOLE, Rights::SEND, 0).map(drop)),
            "buffers" => buffers(),
            _ => {
                println!("hostile: unknown kind {kind:?}");
                return 2;
            }
        };
        let Ok(n) = n else { return 1 };
        let info = ipc::memory_info(ipc::NO_CAP).unwrap_or_default();
        println!("hostile {kind}: NoMemory after {n}; {} of {} KiB used, {} threads", info.used / 1024, info.limit / 1024, info.threads);
        let _ = ipc::notify_signal(initial(1), 1);
        match end {
            "exit" => 0,
            "crash" => {
                CRASHING.store(true, Ordering::Release);
                // Blocked senders wake (and crash) once their messages are taken.
                for _ in 0..BLOCKED.load(Ordering::Acquire) {
                    let _ = ipc::recv(BUFFERS_EP.load(Ordering::Acquire), None);
                }
                crash();
                1
            }
            _ => loop {
                let _ = sys::sleep_ms(1_000_000);
            },
        }
    }

    static STOP: AtomicBool = AtomicBool::new(false);
    static ROUNDS: AtomicU64 = AtomicU64::new(0);
    static FAILURES: AtomicU64 = AtomicU64::new(0);
    static CHILD_RAN: AtomicU64 = AtomicU64::new(0);

    fn fail(what: &str, e: Error) {
        if FAILURES.fetch_add(1, Ordering::Relaxed) < 8 {
            println!("steady: FAILED: {what}: {e:?}");
        }
    }

    fn child(_: usize) {
        CHILD_RAN.fetch_add(1, Ordering::Relaxed);
    }

    fn lookup_echo() -> Result<u64, Error> {
        let mut t = ipc::transfer(b"echo", None, &mut []);
        let reply = ipc::call(initial(1), [name::LOOKUP, 0, 0, 0], Some(&mut t))?;
        Error::result(reply[0])?;
        if t.recv_cap == ipc::NO_CAP { Err(Error::BadHandle) } else { Ok(t.recv_cap) }
    }

    /// One round: a thread created and waited for, 64 KiB mapped, touched and unmapped, one
    /// echo call.
    fn round(echo_ep: u64, i: u64) {
        match thread::spawn(child, 0, None).map(ipc::thread_cap) {
            Ok(Ok(cap)) => {
                if let Err(e) = ipc::thread_wait(cap) {
                    fail("thread_wait", e);
                }
                let _ = ipc::cap_delete(cap);
            }
            // It ended before we asked for its capability.
            Ok(Err(Error::NotFound)) => {}
            Ok(Err(e)) => fail("thread_cap", e),
            Err(e) => fail("thread create", e),
        }
        match sys::map(64 * 1024) {
            Ok(p) => {
                for off in (0..64 * 1024).step_by(4096) {
                    // SAFETY: inside the mapping just made, used by this thread only.
                    unsafe { core::ptr::write_volatile(p.add(off), i as u8) };
                }
                // SAFETY: nothing refers to the mapping any more.
                if let Err(e) = unsafe { sys::unmap(p, 64 * 1024) } {
                    fail("unmap", e);
                }
            }
            Err(e) => fail("map", e),
        }
        match ipc::call(echo_ep, [echo::ECHO, i, 0, 0], None) {
            Ok(r) if r[0] == 0 && r[1] == i => {}
            Ok(_) => fail("echo", Error::InvalidArgument),
            Err(e) => fail("echo call", e),
        }
    }

    fn worker(echo_ep: usize) {
        let mut i = 0;
        while !STOP.load(Ordering::Acquire) {
            round(echo_ep as u64, i);
            i += 1;
            ROUNDS.fetch_add(1, Ordering::Relaxed);
            let _ = sys::sleep_ms(5);
        }
    }

    fn steady() -> i32 {
        let echo_ep = match lookup_echo() {
            Ok(ep) => ep,
            Err(e) => {
                println!("steady: FAILED: no echo: {e:?}");
                return 1;
            }
        };
        if let Err(e) = thread::spawn(worker, echo_ep as usize, None) {
            println!("steady: FAILED: cannot start the worker: {e:?}");
            return 1;
        }
        let _ = ipc::notify_wait(initial(2));
        STOP.store(true, Ordering::Release);
        let _ = sys::wait_threads();
        let (rounds, failures) = (ROUNDS.load(Ordering::Relaxed), FAILURES.load(Ordering::Relaxed));
        println!("steady: {rounds} rounds, {failures} failures, {} threads ran", CHILD_RAN.load(Ordering::Relaxed));
        if failures == 0 && rounds >= 10 && CHILD_RAN.load(Ordering::Relaxed) == rounds { 0 } else { 1 }
    }

    /// A stack for [`raw_thread_create`], in memory the process already has: touching fresh
    /// memory (a new thread's stack from `map`) with a revoked budget is a page fault, which
    /// is how a process learns it is out of memory when it touches what it only reserved.
    #[repr(align(16))]
    struct Stack(#[allow(dead_code)] [u8; 4096]);
    static mut RAW_STACK: Stack = Stack([0; 4096]);

    extern "C" fn raw_thread_main() -> ! {
        sys::thread_exit(0)
    }

    /// `thread_create` with a stack that needs no new page (so only the kernel's side costs).
    fn raw_thread_create() -> Result<(), Error> {
        let top = core::ptr::addr_of_mut!(RAW_STACK) as u64 + 4096;
        // SAFETY: the new thread (if the kernel made one) runs `raw_thread_main` on RAW_STACK,
        // which nothing else uses, and exits at once without touching memory.
        let r = unsafe { sys::raw::syscall4(abi::syscall::THREAD_CREATE, raw_thread_main as *const () as u64, top, 0, abi::syscall::ANY_CPU) };
        Error::result(r).map(drop)
    }

    /// Allocations before the revocation succeed; from the first `NoMemory` on, every one
    /// fails, also after everything held has been freed.
    fn revoke() -> i32 {
        let mut held = [0u64; 8];
        let mut ok_before = 0u64;
        for _ in 0..100_000 {
            match ipc::endpoint_create() {
                Ok(h) => {
                    ok_before += 1;
                    let slot = &mut held[(ok_before % 8) as usize];
                    if *slot != 0 {
                        let _ = ipc::cap_delete(*slot);
                    }
                    *slot = h;
                    let _ = sys::sleep_ms(2);
                }
                Err(Error::NoMemory) => {
                    // Revoked: free everything, then nothing may succeed any more.
                    for h in held.iter().filter(|&&h| h != 0) {
                        let _ = ipc::cap_delete(*h);
                    }
                    let mut refused = 0;
                    for _ in 0..50 {
                        let e = ipc::endpoint_create().map(drop);
                        let n = ipc::notification_create().map(drop);
                        let t = raw_thread_create();
                        if [e, n, t].iter().all(|r| *r == Err(Error::NoMemory)) {
                            refused += 1;
                        }
                        let _ = sys::sleep_ms(2);
                    }
                    let info = ipc::memory_info(ipc::NO_CAP).unwrap_or_default();
                    println!(
                        "revoke: {ok_before} allocations before, then {refused} of 50 rounds all refused; closed={} used={} limit={}",
                        info.closed, info.used, info.limit
                    );
                    return if refused == 50 && ok_before > 0 && info.closed == 1 { 0 } else { 1 };
                }
                Err(e) => {
                    println!("revoke: FAILED: {e:?}");
                    return 1;
                }
            }
        }
        println!("revoke: FAILED: never revoked");
        1
    }

    rt::entry!(main);
}
