//! `test=caps`: every way a handle can be wrong is refused with the right error, and nothing
//! else is affected: forged and stale handles, missing rights, rights that cannot be widened,
//! a grant without the GRANT right, revocation of a passed-on capability, a handle of the
//! wrong kind, and bad transfer blocks: one the kernel cannot read, and one it can read but
//! not write (a receive into it must fail without adding anything to the table or losing the
//! message).

use abi::cap::{Kind, Rights};
use abi::ipc::Transfer;
use abi::Error;
use core::sync::atomic::{AtomicU64, Ordering};
use rt::ipc;
use rt::{println, sys};

/// The endpoint the helper thread receives on, and what it received.
static EP: AtomicU64 = AtomicU64::new(0);
static RECEIVED_CAP: AtomicU64 = AtomicU64::new(0);
/// The endpoint the sender thread sends a capability on, what it sends, and how it went.
static EP2: AtomicU64 = AtomicU64::new(0);
static SENT_CAP: AtomicU64 = AtomicU64::new(0);
static SENT: AtomicU64 = AtomicU64::new(0);

/// A transfer block in the read-only data segment: readable, never writable. (A non-zero
/// field keeps it out of `.bss`.)
static READ_ONLY_XFER: Transfer = Transfer {
    send_buf: 0,
    send_len: 0,
    send_cap: 0,
    send_rights: 0,
    _pad: 0x5eed,
    recv_buf: 0,
    recv_cap_len: 0,
    recv_len: 0,
    recv_cap: 0,
    recv_truncated: 0,
};

fn sender(_: usize) {
    let mut t = ipc::transfer(&[], Some((SENT_CAP.load(Ordering::Acquire), Rights::SEND)), &mut []);
    let r = ipc::send(EP2.load(Ordering::Acquire), [7, 0, 0, 0], Some(&mut t));
    SENT.store(if r.is_ok() { 1 } else { 2 }, Ordering::Release);
}

/// Receives into a transfer block the kernel cannot write, 100 times, while a message with a
/// capability waits: every receive fails, the table gains no entry, and the message is then
/// received whole by a proper receive.
fn read_only_transfer_block(f: &mut i32) {
    let Ok(ep2) = ipc::endpoint_create() else { return *f += 1 };
    let passed = ipc::cap_derive(ep2, Rights::SEND | Rights::GRANT, 0).unwrap_or(0);
    EP2.store(ep2, Ordering::Release);
    SENT_CAP.store(passed, Ordering::Release);
    if rt::thread::spawn(sender, 0, None).is_err() {
        println!("utest caps: cannot start the sender thread");
        *f += 1;
        return;
    }
    // The lowest free slot: where a wrongly inserted capability would land.
    let probe = ipc::notification_create().unwrap_or(0);
    let _ = ipc::cap_delete(probe);
    let xfer = &READ_ONLY_XFER as *const Transfer as u64;
    let mut refused = 0;
    for _ in 0..100 {
        refused += (sys_recv_with_xfer(ep2, xfer) == Err(Error::BadAddress)) as u32;
    }
    check(&mut *f, "100 receives into a read-only transfer block fail", if refused == 100 { Ok(()) } else { Err(Error::InvalidArgument) }, Ok(()));
    let after = ipc::notification_create().unwrap_or(0);
    check(
        &mut *f,
        "... and add nothing to the receiver's table",
        if after & 0xffff == probe & 0xffff { Ok(()) } else { Err(Error::NoMemory) },
        Ok(()),
    );
    let _ = ipc::cap_delete(after);
    let mut t = ipc::transfer(&[], None, &mut []);
    let got = ipc::recv(ep2, Some(&mut t));
    check(
        &mut *f,
        "... and lose no message: a proper receive then gets it with its capability",
        match got {
            Ok((_, [7, ..])) if ipc::cap_info(t.recv_cap) == Ok((Kind::Endpoint as u32, Rights::SEND)) => Ok(()),
            _ => Err(Error::InvalidArgument),
        },
        Ok(()),
    );
    let _ = ipc::cap_delete(t.recv_cap);
    while SENT.load(Ordering::Acquire) == 0 {
        let _ = sys::yield_now();
    }
    check(&mut *f, "the sender's send completed", if SENT.load(Ordering::Acquire) == 1 { Ok(()) } else { Err(Error::PeerDied) }, Ok(()));
    check(&mut *f, "the sender still holds its own capability", ipc::cap_info(passed), Ok(()));
    check(&mut *f, "a call with a read-only transfer block fails before it is sent", sys_call_with_xfer(ep2, xfer), Err(Error::BadAddress));
    let _ = ipc::cap_delete(passed);
    let _ = ipc::cap_delete(ep2);
}

fn receiver(_: usize) {
    let ep = EP.load(Ordering::Acquire);
    let mut t = ipc::transfer(&[], None, &mut []);
    if let Ok((_, m)) = ipc::recv(ep, Some(&mut t)) {
        RECEIVED_CAP.store(t.recv_cap, Ordering::Release);
        let _ = m;
    }
}

fn check(failures: &mut i32, what: &str, got: Result<impl core::fmt::Debug, Error>, want: Result<(), Error>) {
    let ok = match (&got, want) {
        (Ok(_), Ok(())) => true,
        (Err(a), Err(b)) => *a == b,
        _ => false,
    };
    if ok {
        println!("utest caps: ok   {what}: {got:?}");
    } else {
        *failures += 1;
        println!("utest caps: FAIL {what}: got {got:?}, want {want:?}");
    }
}

pub fn run() -> i32 {
    let mut f = 0;
    let ep = match ipc::endpoint_create() {
        Ok(h) => h,
        Err(e) => {
            println!("utest caps: endpoint_create: {e:?}");
            return 1;
        }
    };
    // Forged handles: never issued, out of range, slot bits beyond the table.
    for forged in [0u64, 0x1234_5678_9abc, ipc::initial(200), ep + (1 << 16), u64::MAX] {
        check(&mut f, "forged handle", ipc::cap_info(forged), Err(Error::BadHandle));
    }
    check(&mut f, "call on a forged handle", ipc::call(0xdead_0000_0007, [0; 4], None), Err(Error::BadHandle));
    // Stale: deleted, then the slot reused by a new object.
    let old = ipc::endpoint_create().unwrap_or(0);
    check(&mut f, "delete", ipc::cap_delete(old), Ok(()));
    check(&mut f, "deleted handle", ipc::cap_info(old), Err(Error::BadHandle));
    let reuse = ipc::notification_create().unwrap_or(0);
    // The table hands out the lowest free slot, so the new object takes the deleted one's.
    check(
        &mut f,
        "slot reused by a new object",
        if reuse & 0xffff == old & 0xffff && reuse != old { Ok(()) } else { Err(Error::InvalidArgument) },
        Ok(()),
    );
    check(&mut f, "stale handle after reuse", ipc::cap_info(old), Err(Error::BadHandle));
    check(&mut f, "signal through a stale handle", ipc::notify_signal(old, 1), Err(Error::BadHandle));
    // Rights: a send-only copy cannot receive, and rights never widen.
    let send_only = ipc::cap_derive(ep, Rights::SEND, 0).unwrap_or(0);
    check(&mut f, "recv with SEND only", ipc::recv(send_only, None), Err(Error::NoRights));
    let widened = ipc::cap_derive(send_only, Rights::ALL, 0).unwrap_or(0);
    let info = ipc::cap_info(widened);
    check(
        &mut f,
        "a derived copy keeps at most its parent's rights",
        if info == Ok((Kind::Endpoint as u32, Rights::SEND)) { Ok(()) } else { Err(Error::InvalidArgument) },
        Ok(()),
    );
    // Wrong kind of object.
    check(&mut f, "notification call on an endpoint", ipc::notify_signal(ep, 1), Err(Error::BadHandle));
    check(&mut f, "endpoint call on a notification", ipc::send(reuse, [0; 4], None), Err(Error::BadHandle));
    check(&mut f, "spawn without the modules capability", ipc::spawn(ep, "echo", "", &[], None, None), Err(Error::BadHandle));
    check(&mut f, "I/O ports without a capability", ipc::ioport_enable(ep), Err(Error::BadHandle));
    // A bad transfer block is refused before anything is sent.
    check(&mut f, "transfer block at a kernel address", sys_call_with_xfer(ep, 0xffff_8000_0000_0000), Err(Error::BadAddress));
    read_only_transfer_block(&mut f);
    // Grant: passing a capability needs GRANT on it.
    EP.store(ep, Ordering::Release);
    let no_grant = ipc::cap_derive(ep, Rights::SEND, 0).unwrap_or(0);
    let mut t = ipc::transfer(&[], Some((no_grant, Rights::SEND)), &mut []);
    check(&mut f, "grant without the GRANT right", ipc::send(ep, [1, 0, 0, 0], Some(&mut t)), Err(Error::NoRights));
    let grantable = ipc::cap_derive(ep, Rights::SEND | Rights::GRANT, 0).unwrap_or(0);
    let Ok(tid) = rt::thread::spawn(receiver, 0, None) else {
        println!("utest caps: cannot start the receiver thread");
        return f + 1;
    };
    // A thread capability: its kind, and waiting on it for the thread's end.
    let thread = ipc::thread_cap(tid).unwrap_or(0);
    check(
        &mut f,
        "a thread capability names a thread",
        if ipc::cap_info(thread).map(|i| i.0) == Ok(Kind::Thread as u32) { Ok(()) } else { Err(Error::InvalidArgument) },
        Ok(()),
    );
    check(&mut f, "a thread capability for a thread of no one here", ipc::thread_cap(u64::MAX - 1), Err(Error::NotFound));
    check(&mut f, "thread_wait on an endpoint", ipc::thread_wait(ep), Err(Error::BadHandle));
    let mut t = ipc::transfer(&[], Some((grantable, Rights::SEND)), &mut []);
    check(&mut f, "grant with the GRANT right", ipc::send(ep, [1, 0, 0, 0], Some(&mut t)), Ok(()));
    check(&mut f, "thread_wait until the receiver has ended", ipc::thread_wait(thread).map(|e| assert_exited(e)), Ok(()));
    check(&mut f, "thread_cap of a thread that has ended", ipc::thread_cap(tid), Err(Error::NotFound));
    let _ = sys::wait_threads();
    let passed = RECEIVED_CAP.load(Ordering::Acquire);
    check(
        &mut f,
        "the passed capability arrives with the rights granted",
        if ipc::cap_info(passed) == Ok((Kind::Endpoint as u32, Rights::SEND)) { Ok(()) } else { Err(Error::InvalidArgument) },
        Ok(()),
    );
    // Revocation: the passed-on copy dies, the holder's stays.
    check(&mut f, "revoke", ipc::cap_revoke(grantable), Ok(()));
    check(&mut f, "the passed-on copy after revoke", ipc::cap_info(passed), Err(Error::BadHandle));
    check(&mut f, "send through the revoked copy", ipc::send(passed, [0; 4], None), Err(Error::BadHandle));
    check(&mut f, "the holder's capability after revoke", ipc::cap_info(grantable), Ok(()));
    println!("utest caps: {f} failures");
    f
}

/// A `call` whose transfer block pointer is `xfer` (deliberately invalid).
fn sys_call_with_xfer(ep: u64, xfer: u64) -> Result<(), Error> {
    let rax: u64;
    // SAFETY: the kernel must refuse the pointer before touching memory; the message
    // registers are declared clobbered.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") abi::syscall::CALL => rax, in("rdi") ep,
            inout("rsi") 0u64 => _, inout("rdx") 0u64 => _, inout("r10") 0u64 => _, inout("r8") 0u64 => _,
            in("r9") xfer, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    Error::result(rax).map(drop)
}

/// The receiver thread returned normally: `thread_wait` must say it exited.
fn assert_exited(e: abi::thread_exit::ThreadExit) {
    if e != abi::thread_exit::ThreadExit::Exited {
        println!("utest caps: FAIL the receiver thread ended as {e:?}, not by exiting");
        rt::sys::process_exit(1);
    }
}

/// A `recv` whose transfer block pointer is `xfer` (one the kernel cannot write).
fn sys_recv_with_xfer(ep: u64, xfer: u64) -> Result<u64, Error> {
    let rax: u64;
    // SAFETY: the kernel may only read the block; the message registers are declared
    // clobbered.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") abi::syscall::RECV => rax, in("rdi") ep,
            inout("rsi") 0u64 => _, inout("rdx") 0u64 => _, inout("r10") 0u64 => _, inout("r8") 0u64 => _,
            in("r9") xfer, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    Error::result(rax)
}
