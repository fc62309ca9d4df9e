//! The IPC fastpath: `call` and `reply_recv` when the message is four registers (no transfer
//! block, or one that sends neither bytes nor a capability) and the partner already waits,
//! blocked on this CPU.
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
//! Everything else takes the generic path (`super::ipc`), which stays the reference: bytes or
//! a capability to send, a bad handle, a partner on another CPU or not blocked, a caller
//! whose process is being killed, a closed endpoint, queued senders, a queue that would need
//! more heap. The decision is made before anything changes (but for the clearing of the
//! caller's received fields once its handle is known good, which the generic path does first
//! as well), so a refused fastpath leaves no trace. A receiver whose process is being killed
//! may still be handed a call: it ends on its way back to user space, and its reply
//! capability answers the caller with `PeerDied`, as on the generic path. Both paths interoperate: a thread the fastpath blocked
//! may be woken by the generic path (a kill, a reply with a buffer, a dying server's reply
//! capability), and then finishes its call the generic way; a thread the generic path blocked
//! in a receive or call may be handed a message by the fastpath, which `ipc::wait_inbox`
//! finds in its `FastMsg` slot.
//!
//! A waiting partner's transfer block needs nothing from a register-only message: its
//! received fields were cleared before it waited (`prepare_receive`), which is what a message
//! without bytes or capability writes there. The partner writes them once more itself when it
//! resumes, so that what its block says does not depend on the path.
//!
//! Lock order: the thread's reply-capability slot, the caller's capability table, the
//! endpoint's queue, this CPU's scheduler, then a thread's `FastMsg` slot.

use core::sync::atomic::Ordering;

use crate::arch::x86_64::entry::frame::TrapFrame;
use crate::ipc::{self, FastMsg, KObject, Receiver, ReplyCap, Withdrawal, STATS};
use crate::sched::{self, CpuLock, Thread};
use abi::cap::Rights;
use abi::ipc::{Transfer, MAX_BUFFER, NO_CAP};
use abi::{syscall as nr, Error};

/// Tries the fastpath for the system call in `frame`; true if it was handled (the result is
/// in `frame`), false if nothing was done and the generic path must run. Called with
/// interrupts on; returns with them off if it handled the call. Inlined into the dispatcher:
/// every other call pays two compares.
#[inline(always)]
pub fn try_fast(frame: &mut TrapFrame) -> bool {
    if !(frame.rax == nr::CALL || frame.rax == nr::REPLY_RECV) {
        return false;
    }
    fast(frame)
}

#[inline(never)]
fn fast(frame: &mut TrapFrame) -> bool {
    // SAFETY: used only within this system call of the running thread, which cannot end
    // while it runs here.
    let Some(me) = (unsafe { sched::current_ref() }) else { return false };
    let Some(p) = me.process.as_deref() else { return false };
    let needed = if frame.rax == nr::CALL { Rights::SEND } else { Rights::RECV };
    // With interrupts on: the block is user memory, which may fault in.
    let block = match frame.r9 {
        0 => None,
        xfer => match sends_nothing(p, frame.rdi, needed, xfer) {
            Some(t) => Some(t),
            None => return false,
        },
    };
    x86_64::instructions::interrupts::disable();
    let handled = match frame.rax {
        nr::CALL => call(frame, me, block),
        nr::REPLY_RECV => reply_recv(frame, me, block),
        _ => false,
    };
    if !handled {
        x86_64::instructions::interrupts::enable();
    }
    handled
}

/// The transfer block at `xfer`, if it sends neither bytes nor a capability and is valid as
/// the generic path checks it (`outgoing`), and the endpoint handle `h` is good for `needed`;
/// then its received fields are cleared, as there (`prepare_receive`). `None` for anything
/// the generic path must handle or refuse (it refuses a bad handle before it touches the
/// block, so the handle is checked first here too).
fn sends_nothing(p: &crate::sched::Process, h: u64, needed: Rights, xfer: u64) -> Option<Transfer> {
    let t = super::ipc::read_struct::<Transfer>(xfer).ok()?;
    if t.send_len != 0 || t.send_cap != NO_CAP || t.recv_cap_len as usize > MAX_BUFFER * 64 {
        return None;
    }
    if !matches!(p.caps.lock().lookup(h, needed).map(|c| &c.object), Ok(KObject::Endpoint(_))) {
        return None;
    }
    super::ipc::prepare_receive(xfer).ok()?;
    Some(t)
}

/// After a hand-over: the received fields of our transfer block, if any, say "nothing
/// received" (as `prepare_receive` left them, unless another of our threads wrote there
/// meanwhile). With interrupts on, since the block may fault in; `BadAddress` as on the
/// generic path if it became unwritable (the message is consumed all the same).
fn write_nothing_received(frame: &TrapFrame) -> Result<(), Error> {
    if frame.r9 == 0 {
        return Ok(());
    }
    x86_64::instructions::interrupts::enable();
    super::ipc::write_received(frame.r9, &Transfer::default())
}

/// Drops `x`; a `None` (the fastpath's case every time) costs no destructor call.
#[inline(always)]
fn drop_if_some<T>(x: Option<T>) {
    if x.is_some() {
        drop(x);
    } else {
        core::mem::forget(x);
    }
}

fn words(frame: &TrapFrame) -> [u64; 4] {
    [frame.rsi, frame.rdx, frame.r10, frame.r8]
}

fn set_words(frame: &mut TrapFrame, w: [u64; 4]) {
    [frame.rsi, frame.rdx, frame.r10, frame.r8] = w;
}

/// `call(ep, words)` to a receiver blocked on this CPU.
fn call(frame: &mut TrapFrame, me: &Thread, block: Option<Transfer>) -> bool {
    let Some(p) = me.process.as_deref() else { return false };
    let caps = p.caps.lock();
    let Ok(cap) = caps.lookup(frame.rdi, Rights::SEND) else { return false };
    let KObject::Endpoint(ep) = &cap.object else { return false };
    let badge = cap.badge;
    let mut queue = ep.queue();
    // A receiver on another CPU (or none) is the generic path's: known before the scheduler
    // lock is taken.
    let here = crate::arch::x86_64::percpu::this().cpu_index;
    let mut cpu = match queue.first_receiver() {
        Some(r) if r.thread.cpu == here => {
            let cpu = CpuLock::this();
            if !cpu.blocked_here(&r.thread) {
                return false;
            }
            cpu
        }
        _ => return false,
    };
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
    unsafe { server.ipc.hand_over(FastMsg { badge, words: words(frame), reply: Some(ReplyCap::new(me_ref)) }) };
    cpu.switch_direct(me, server);
    // Resumed: by the server's fastpath reply (the words in our slot), or by the generic
    // path (a reply with a buffer, the server gone, our process killed).
    let handed = me.ipc.take_handed();
    match handed {
        Some(FastMsg { words, reply, .. }) => {
            // A reply carries no reply capability of its own.
            debug_assert!(reply.is_none());
            drop_if_some(reply);
            set_words(frame, words);
            frame.rax = match write_nothing_received(frame) {
                Ok(()) => 0,
                Err(e) => e.to_raw(),
            };
        }
        None => finish_generically(frame, me, block, |me| ipc::wait_inbox(me, || Withdrawal::NotQueued), false),
    }
    true
}

/// `reply_recv(ep, words)`: the reply to a caller blocked on this CPU, then the wait on `ep`.
fn reply_recv(frame: &mut TrapFrame, me: &Thread, block: Option<Transfer>) -> bool {
    let Some(p) = me.process.as_deref() else { return false };
    let mut slot = me.ipc.caller.lock();
    let here = crate::arch::x86_64::percpu::this().cpu_index;
    match slot.as_ref() {
        Some(rc) if rc.caller.cpu == here && !rc.caller_gone() => {}
        _ => return false,
    }
    let caps = p.caps.lock();
    let Ok(cap) = caps.lookup(frame.rdi, Rights::RECV) else { return false };
    let KObject::Endpoint(ep) = &cap.object else { return false };
    let mut queue = ep.queue();
    // A queued sender (or a closed endpoint) is the generic path's: it hands over the reply
    // and takes the message in one go.
    // (And a queue that cannot take us without more heap: the generic path says NoMemory.)
    if queue.is_closed() || queue.waiting().0 != 0 || !queue.room_for_receiver() {
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
    queue.queue_receiver(Receiver { thread: me_ref });
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
            {
                let mut slot = me.ipc.caller.lock();
                let old = core::mem::replace(&mut *slot, msg.reply);
                debug_assert!(old.is_none(), "our caller slot was emptied before the switch");
                drop_if_some(old);
            }
            if let Err(e) = write_nothing_received(frame) {
                frame.rax = e.to_raw();
            }
        }
        None => finish_generically(frame, me, block, |me| ep.wait_received(me), true),
    }
    drop(ep);
    true
}

/// The end of a fastpath call or receive woken by the generic path: wait for the delivery the
/// way the generic path does (with interrupts on), and put it in the registers and `block`
/// (the transfer block as read before the wait, as the generic path reads it); RAX gets the
/// badge for a receive, 0 for a call's reply, or the error.
fn finish_generically(
    frame: &mut TrapFrame,
    me: &Thread,
    block: Option<Transfer>,
    wait: impl FnOnce(&alloc::sync::Arc<Thread>) -> Result<ipc::Message, Error>,
    receive: bool,
) {
    x86_64::instructions::interrupts::enable();
    let Some(me_ref) = sched::current() else { unreachable!("resumed outside a thread") };
    debug_assert!(core::ptr::eq(&*me_ref, me));
    let Some(p) = me.process.as_deref() else { unreachable!("a user thread has a process") };
    frame.rax = match wait(&me_ref).and_then(|msg| super::ipc::incoming(p, frame, msg, block)) {
        Ok(badge) if receive => badge,
        Ok(_) => 0,
        Err(e) => e.to_raw(),
    };
}
