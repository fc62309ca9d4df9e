//! The IPC fastpath: `call` and `reply_recv` when the message is four registers and the
//! partner already waits, blocked on this CPU, with no transfer block of its own.
//!
//! Then a call is: look the capability up in the caller's table (borrowed, under the table's
//! lock), take the first receiver off the endpoint's queue, hand it the words, the badge and
//! a reply capability (in its `FastMsg` slot), and switch straight to it (`CpuLock::
//! switch_direct`): its address space, kernel stack, FS/GS and FPU state, no run queue, no
//! heap allocation, and no reference count touched: the caller's own `Arc` moves from the
//! CPU's `current` slot into the reply capability, the receiver's from the queue into
//! `current`. A `reply_recv` is the mirror image: the reply capability's caller is switched to,
//! and the server's `Arc` moves into the endpoint's queue, where the next call finds it.
//!
//! Everything else takes the generic path (`super::ipc`), which stays the reference: transfer
//! blocks (buffers, capabilities), a partner on another CPU, not blocked, already killed or
//! waiting with a transfer block, a closed endpoint, queued senders. The decision is made
//! before anything changes, so a refused fastpath leaves no trace. Both paths interoperate: a
//! thread the fastpath blocked may be woken by the generic path (a kill, a reply with a
//! buffer, a dying server's reply capability), and then finishes its call the generic way;
//! a thread blocked by the generic path in a receive or call without a transfer block may be
//! handed a message by the fastpath, which `ipc::wait_inbox` finds in its `FastMsg` slot.
//!
//! Lock order: the thread's reply-capability slot, the caller's capability table, the
//! endpoint's queue, this CPU's scheduler, then a thread's `FastMsg` slot.

use core::sync::atomic::Ordering;

use crate::arch::x86_64::entry::frame::TrapFrame;
use crate::ipc::{self, FastMsg, KObject, Receiver, ReplyCap, Withdrawal, STATS};
use crate::sched::{self, CpuLock, Thread};
use abi::cap::Rights;
use abi::{syscall as nr, Error};

/// Tries the fastpath for the system call in `frame`; true if it was handled (the result is
/// in `frame`), false if nothing was done and the generic path must run. Called with
/// interrupts on; returns with them off if it handled the call. Inlined into the dispatcher:
/// every other call pays two compares.
#[inline(always)]
pub fn try_fast(frame: &mut TrapFrame) -> bool {
    if frame.r9 != 0 || !(frame.rax == nr::CALL || frame.rax == nr::REPLY_RECV) {
        return false;
    }
    fast(frame)
}

#[inline(never)]
fn fast(frame: &mut TrapFrame) -> bool {
    // SAFETY: used only within this system call of the running thread, which cannot end
    // while it runs here.
    let Some(me) = (unsafe { sched::current_ref() }) else { return false };
    if me.process.is_none() {
        return false;
    }
    x86_64::instructions::interrupts::disable();
    let handled = match frame.rax {
        nr::CALL => call(frame, me),
        nr::REPLY_RECV => reply_recv(frame, me),
        _ => false,
    };
    if !handled {
        x86_64::instructions::interrupts::enable();
    }
    handled
}

fn words(frame: &TrapFrame) -> [u64; 4] {
    [frame.rsi, frame.rdx, frame.r10, frame.r8]
}

fn set_words(frame: &mut TrapFrame, w: [u64; 4]) {
    [frame.rsi, frame.rdx, frame.r10, frame.r8] = w;
}

/// `call(ep, words)` to a receiver blocked on this CPU.
fn call(frame: &mut TrapFrame, me: &Thread) -> bool {
    let Some(p) = me.process.as_deref() else { return false };
    let caps = p.caps.lock();
    let Ok(cap) = caps.lookup(frame.rdi, Rights::SEND) else { return false };
    let KObject::Endpoint(ep) = &cap.object else { return false };
    let badge = cap.badge;
    let mut queue = ep.queue();
    let mut cpu = CpuLock::this();
    match queue.first_receiver() {
        Some(r) if r.regs_only && cpu.blocked_here(&r.thread) => {}
        _ => return false,
    }
    if !cpu.block_current_unless_killed(me) {
        return false;
    }
    // Committed from here on: nothing below refuses.
    let Some(me_ref) = cpu.take_current() else { return cpu.unblock(me) };
    let Some(Receiver { thread: server, .. }) = queue.take_receiver() else { unreachable!("checked above") };
    drop(queue);
    drop(caps);
    STATS.fastpath.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `server` is blocked on this CPU, claimed under `cpu` (held until the switch).
    unsafe { server.ipc.hand_over(FastMsg { badge, words: words(frame), reply: Some(ReplyCap::new(me_ref, true)) }) };
    cpu.switch_direct(me, server);
    // Resumed: by the server's fastpath reply (the words in our slot), or by the generic
    // path (a reply with a buffer, the server gone, our process killed).
    let handed = me.ipc.take_handed();
    match handed {
        Some(reply) => {
            set_words(frame, reply.words);
            frame.rax = 0;
        }
        None => finish_generically(frame, me, |me| ipc::wait_inbox(me, || Withdrawal::NotQueued), false),
    }
    true
}

/// `reply_recv(ep, words)`: the reply to a caller blocked on this CPU, then the wait on `ep`.
fn reply_recv(frame: &mut TrapFrame, me: &Thread) -> bool {
    let Some(p) = me.process.as_deref() else { return false };
    let mut slot = me.ipc.caller.lock();
    match slot.as_ref() {
        Some(rc) if rc.regs_only && !rc.caller_gone() => {}
        _ => return false,
    }
    let caps = p.caps.lock();
    let Ok(cap) = caps.lookup(frame.rdi, Rights::RECV) else { return false };
    let KObject::Endpoint(ep) = &cap.object else { return false };
    let mut queue = ep.queue();
    // A queued sender (or a closed endpoint) is the generic path's: it hands over the reply
    // and takes the message in one go.
    if queue.is_closed() || queue.waiting().0 != 0 {
        return false;
    }
    let mut cpu = CpuLock::this();
    if !slot.as_ref().is_some_and(|rc| cpu.blocked_here(&rc.caller)) || !cpu.block_current_unless_killed(me) {
        return false;
    }
    // Committed. The endpoint stays alive while we wait in its queue: a reference of our own
    // (the one count this path touches), since the capability may be deleted meanwhile.
    let Some(me_ref) = cpu.take_current() else { return cpu.unblock(me) };
    let Some(client) = slot.take().map(ReplyCap::into_caller) else { unreachable!("checked above") };
    drop(slot);
    let ep = ep.clone();
    queue.queue_receiver(Receiver { thread: me_ref, regs_only: true });
    drop(queue);
    drop(caps);
    STATS.fastpath.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `client` is blocked on this CPU, claimed under `cpu` (held until the switch).
    unsafe { client.ipc.hand_over(FastMsg { badge: 0, words: words(frame), reply: None }) };
    cpu.switch_direct(me, client);
    // Resumed: by a caller's fastpath (the message and its reply capability in our slot), or
    // by the generic path (a message delivered to our inbox, the endpoint closed, a kill).
    let handed = me.ipc.take_handed();
    match handed {
        Some(msg) => {
            set_words(frame, msg.words);
            frame.rax = msg.badge;
            // Our caller slot was emptied before the switch and only we touch it.
            let mut slot = me.ipc.caller.lock();
            debug_assert!(slot.is_none());
            *slot = msg.reply;
        }
        None => finish_generically(frame, me, |me| ep.wait_received(me), true),
    }
    drop(ep);
    true
}

/// The end of a fastpath call or receive woken by the generic path: wait for the delivery the
/// way the generic path does (with interrupts on), and put it in the registers; RAX gets the
/// badge for a receive, 0 for a call's reply, or the error.
fn finish_generically(
    frame: &mut TrapFrame,
    me: &Thread,
    wait: impl FnOnce(&alloc::sync::Arc<Thread>) -> Result<ipc::Message, Error>,
    receive: bool,
) {
    x86_64::instructions::interrupts::enable();
    let Some(me_ref) = sched::current() else { unreachable!("resumed outside a thread") };
    debug_assert!(core::ptr::eq(&*me_ref, me));
    let Some(p) = me.process.as_deref() else { unreachable!("a user thread has a process") };
    frame.rax = match wait(&me_ref).and_then(|msg| super::ipc::incoming(p, frame, msg, None)) {
        Ok(badge) if receive => badge,
        Ok(_) => 0,
        Err(e) => e.to_raw(),
    };
}
