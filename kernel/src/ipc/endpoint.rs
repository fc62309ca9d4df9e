//! Endpoints: synchronous message passing between threads, across CPUs.
//!
//! - `send` blocks until a receiver takes the message; `recv` until a message comes.
//! - `call` is a send that also hands the receiver a one-shot reply capability and waits
//!   for the reply; `reply` answers the last call received; `reply_recv` is the server loop's
//!   reply-then-receive in one system call.
//! - Fastpath: when the partner is already waiting on this CPU, the sender switches to it
//!   directly (no run queue, no scheduler decision) and the partner finds the message in its
//!   inbox. Across CPUs the partner is queued on its own CPU and woken by IPI.
//! - An endpoint belongs to the process that created it; when that process ends, the endpoint
//!   closes: every waiter, and every later caller, gets `PeerDied`.

use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use spin::Mutex;

use super::rendezvous::{Arrival, Rendezvous};
use super::{deliver, deliver_and_switch, prepare_wait, wait_inbox, Message, ReplyCap, Withdrawal, STATS};
use crate::sched::Thread;
use abi::Error;

/// A sender waiting for a receiver.
pub struct Sender {
    thread: Arc<Thread>,
    msg: Message,
    /// A call: the sender waits on for the reply once the message is taken.
    call: bool,
}

/// A receiver waiting for a sender (any receiver can take a register-only message from the
/// fastpath: its transfer block, if any, already says "nothing received", see
/// `syscall::fastpath`).
pub struct Receiver {
    pub thread: Arc<Thread>,
}

pub type Queue = Rendezvous<Sender, Receiver>;

pub struct Endpoint {
    pub owner_pid: u64,
    queue: Mutex<Queue>,
    /// What it costs its creator's budget, given back when it is freed.
    _charge: crate::mm::budget::Charge,
}

impl Endpoint {
    /// `None` if the kernel heap cannot hold it (the charge is given back).
    pub fn new(owner_pid: u64, charge: crate::mm::budget::Charge) -> Option<Arc<Self>> {
        crate::fallible::try_arc(Self { owner_pid, queue: Mutex::new(Rendezvous::new()), _charge: charge }).ok()
    }

    /// The waiting senders and receivers, for the fastpath (`syscall::fastpath`), which pairs
    /// them itself. Lock order: the caller's capability table, then this, then a CPU's
    /// scheduler.
    pub fn queue(&self) -> spin::MutexGuard<'_, Queue> {
        self.queue.lock()
    }

    /// Closes the endpoint: waiting senders and receivers get `PeerDied`.
    pub fn close(&self) {
        let (senders, receivers) = self.queue.lock().close();
        for s in senders {
            deliver(&s.thread, Err(Error::PeerDied));
        }
        for r in receivers {
            deliver(&r.thread, Err(Error::PeerDied));
        }
    }

    /// A sender arrives. For a call, returns the reply; for a send, an empty message once a
    /// receiver has taken it.
    fn arrive(&self, me: &Arc<Thread>, msg: Message, call: bool) -> Result<Message, Error> {
        let arrival = self.queue.lock().send(Sender { thread: me.clone(), msg, call });
        match arrival {
            Arrival::Closed => Err(Error::PeerDied),
            Arrival::Refused => Err(Error::NoMemory),
            Arrival::Paired(s, receiver) => {
                STATS.messages.fetch_add(1, Ordering::Relaxed);
                let mut msg = s.msg;
                if call {
                    msg.reply = Some(ReplyCap::new(me.clone()));
                    prepare_wait(me);
                    deliver_and_switch(&receiver.thread, Ok(msg));
                    drop(receiver);
                    wait_inbox(me, || Withdrawal::NotQueued)
                } else {
                    deliver(&receiver.thread, Ok(msg));
                    Ok(Message::default())
                }
            }
            // The receiver that takes our message delivers to our inbox: the completion of a
            // send, or (through the reply capability) the reply to a call.
            Arrival::Queued => wait_inbox(me, || self.withdraw_sender(me)),
        }
    }

    /// A killed sender leaves the queue. If a receiver took its message already, there is
    /// nothing to wait for: a send's completion carries nothing, and a call's reply capability
    /// finds the caller gone.
    fn withdraw_sender(&self, me: &Arc<Thread>) -> Withdrawal {
        match self.queue.lock().withdraw_sender(|s| Arc::ptr_eq(&s.thread, me)) {
            Some(_) => Withdrawal::Withdrawn,
            None => Withdrawal::NotQueued,
        }
    }

    /// A killed receiver leaves the queue. If a sender took it already, its message (perhaps
    /// with a reply capability) is on its way and is awaited, so that the capability answers
    /// its caller when this thread ends instead of lingering in a dead inbox.
    fn withdraw_receiver(&self, me: &Arc<Thread>) -> Withdrawal {
        match self.queue.lock().withdraw_receiver(|r| Arc::ptr_eq(&r.thread, me)) {
            Some(_) => Withdrawal::Withdrawn,
            None => Withdrawal::Taken,
        }
    }

    /// Waits as a receiver already queued here (by the fastpath) for what a partner delivers:
    /// the fastpath's way back when it was woken without a hand-over.
    pub fn wait_received(&self, me: &Arc<Thread>) -> Result<Message, Error> {
        wait_inbox(me, || self.withdraw_receiver(me)).map(|m| keep_reply(me, m))
    }

    pub fn send(&self, me: &Arc<Thread>, msg: Message) -> Result<(), Error> {
        self.arrive(me, msg, false).map(drop)
    }

    pub fn call(&self, me: &Arc<Thread>, msg: Message) -> Result<Message, Error> {
        self.arrive(me, msg, true)
    }

    /// Receives a message; a call's reply capability is kept in the thread for `reply`.
    pub fn recv(&self, me: &Arc<Thread>) -> Result<Message, Error> {
        let arrival = self.queue.lock().recv(Receiver { thread: me.clone() });
        let msg = match arrival {
            Arrival::Closed => return Err(Error::PeerDied),
            Arrival::Refused => return Err(Error::NoMemory),
            Arrival::Paired(s, _) => take_queued(s),
            Arrival::Queued => wait_inbox(me, || self.withdraw_receiver(me))?,
        };
        Ok(keep_reply(me, msg))
    }
}

/// A queued sender's message, taken by a receiver: a plain sender is released, a caller
/// gets a reply capability in the message.
fn take_queued(s: Sender) -> Message {
    STATS.messages.fetch_add(1, Ordering::Relaxed);
    let mut msg = s.msg;
    if s.call {
        msg.reply = Some(ReplyCap::new(s.thread));
    } else {
        deliver(&s.thread, Ok(Message::default()));
    }
    msg
}

/// Moves a received call's reply capability into the thread (answering an earlier unanswered
/// call with `PeerDied` as that capability drops).
fn keep_reply(me: &Arc<Thread>, mut msg: Message) -> Message {
    let previous = core::mem::replace(&mut *me.ipc.caller.lock(), msg.reply.take());
    drop(previous);
    msg
}

/// The reply capability of the last call `me` received, if its caller is still there.
fn take_caller(me: &Arc<Thread>) -> Result<ReplyCap, Error> {
    let caller = me.ipc.caller.lock().take().ok_or(Error::NoCaller)?;
    if caller.caller_gone() {
        return Err(Error::PeerDied);
    }
    Ok(caller)
}

/// Answers the last call `me` received.
pub fn reply(me: &Arc<Thread>, msg: Message) -> Result<(), Error> {
    let caller = take_caller(me)?;
    STATS.messages.fetch_add(1, Ordering::Relaxed);
    caller.answer(Ok(msg));
    Ok(())
}

/// Replies to the last call, then receives on `ep`. When the caller waits on this CPU and no
/// message is queued on `ep`, the reply switches straight to the caller (fastpath), and the
/// caller's next call finds us already waiting.
pub fn reply_recv(me: &Arc<Thread>, ep: &Endpoint, msg: Message) -> (Result<(), Error>, Result<Message, Error>) {
    let caller = match take_caller(me) {
        Ok(c) => c,
        Err(e) => return (Err(e), ep.recv(me)),
    };
    STATS.messages.fetch_add(1, Ordering::Relaxed);
    let arrival = ep.queue.lock().recv(Receiver { thread: me.clone() });
    let received = match arrival {
        Arrival::Queued => {
            prepare_wait(me);
            caller.answer_switching(Ok(msg));
            wait_inbox(me, || ep.withdraw_receiver(me))
        }
        Arrival::Paired(s, _) => {
            caller.answer(Ok(msg));
            Ok(take_queued(s))
        }
        Arrival::Closed => {
            caller.answer(Ok(msg));
            Err(Error::PeerDied)
        }
        Arrival::Refused => {
            caller.answer(Ok(msg));
            Err(Error::NoMemory)
        }
    };
    (Ok(()), received.map(|m| keep_reply(me, m)))
}
