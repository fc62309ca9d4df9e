//! The IPC and capability system calls: decode registers and the optional `Transfer` block,
//! check every handle against the caller's table, run the operation, and put the received
//! message back in the caller's registers.

use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use spin::{Mutex, Once};

use super::uaccess;
use crate::arch::x86_64::entry::frame::TrapFrame;
use crate::arch::x86_64::{apic, smp};
use crate::ipc::cap::{CapError, CapNode};
use crate::ipc::{self, Cap, Endpoint, KObject, Message, Notification};
use crate::mm::account;
use crate::mm::budget::{Charge, ChargedBytes, Kind};
use crate::sched::{Process, Thread};
use abi::cap::Rights;
use abi::ipc::{SpawnArgs, Transfer, MAX_BUFFER, NO_CAP};
use abi::{syscall as nr, Error};

/// Most initial capabilities `spawn` hands over.
const MAX_SPAWN_CAPS: usize = 16;

fn cap_error(e: CapError) -> Error {
    match e {
        CapError::NoRights => Error::NoRights,
        CapError::Full | CapError::NoMemory => Error::NoMemory,
        CapError::TooDeep => Error::InvalidArgument,
        CapError::Invalid | CapError::Stale | CapError::Revoked => Error::BadHandle,
    }
}

/// Notification bits (and badges) are the low 63: `notify_wait` (and `recv`) return them in
/// RAX, where a set bit 63 would read as an error code (found by the fuzzer).
fn signal_bits(bits: u64) -> Result<u64, Error> {
    if bits >> 63 == 0 { Ok(bits) } else { Err(Error::InvalidArgument) }
}

fn cap(p: &Process, h: u64, rights: Rights) -> Result<Cap, Error> {
    p.caps.lock().get(h, rights).map_err(cap_error)
}

fn endpoint(p: &Process, h: u64, rights: Rights) -> Result<(Arc<Endpoint>, u64), Error> {
    let c = cap(p, h, rights)?;
    match &c.object {
        KObject::Endpoint(e) => Ok((e.clone(), c.badge)),
        _ => Err(Error::BadHandle),
    }
}

fn notification(p: &Process, h: u64, rights: Rights) -> Result<Arc<Notification>, Error> {
    match &cap(p, h, rights)?.object {
        KObject::Notification(n) => Ok(n.clone()),
        _ => Err(Error::BadHandle),
    }
}

/// `len` zero bytes on the kernel heap, or `NoMemory` (never a panic).
fn zeroed(len: usize) -> Result<Vec<u8>, Error> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::NoMemory)?;
    v.resize(len, 0);
    Ok(v)
}

pub(super) fn read_struct<T: Copy + Default>(addr: u64) -> Result<T, Error> {
    let mut v = T::default();
    // SAFETY: `T` is a plain-old-data `repr(C)` ABI struct (integers only), so any bytes are
    // a valid value; the slice covers exactly `v`.
    let bytes = unsafe { core::slice::from_raw_parts_mut(&mut v as *mut T as *mut u8, core::mem::size_of::<T>()) };
    uaccess::copy_from_user(bytes, addr)?;
    Ok(v)
}

fn write_struct<T: Copy>(addr: u64, v: &T) -> Result<(), Error> {
    // SAFETY: as in `read_struct`; reading the bytes of a plain struct.
    let bytes = unsafe { core::slice::from_raw_parts(v as *const T as *const u8, core::mem::size_of::<T>()) };
    uaccess::copy_to_user(addr, bytes)
}

/// The outgoing message in the caller's registers and transfer block. Its buffer is charged
/// to the caller's budget until the receiver has taken it; a refused call leaves nothing held.
fn outgoing(p: &Process, frame: &TrapFrame, badge: u64) -> Result<(Message, Option<Transfer>), Error> {
    let mut msg = Message { badge, words: [frame.rsi, frame.rdx, frame.r10, frame.r8], ..Default::default() };
    if frame.r9 == 0 {
        return Ok((msg, None));
    }
    let t: Transfer = read_struct(frame.r9)?;
    if t.send_len as usize > MAX_BUFFER || t.recv_cap_len as usize > MAX_BUFFER * 64 {
        return Err(Error::InvalidArgument);
    }
    if t.send_len > 0 {
        msg.data = ChargedBytes::zeroed(&p.budget, t.send_len as usize).map_err(|_| Error::NoMemory)?;
        uaccess::copy_from_user(&mut msg.data, t.send_buf)?;
    }
    if t.send_cap != NO_CAP {
        let c = cap(p, t.send_cap, Rights::GRANT)?;
        msg.cap = Some(c.derive(Rights(t.send_rights), 0).map_err(cap_error)?);
    }
    Ok((msg, Some(t)))
}

/// Where the fields the kernel writes on a receive (`recv_len`, `recv_cap`, `recv_truncated`)
/// sit in a transfer block.
const RECEIVED_AT: u64 = core::mem::offset_of!(Transfer, recv_len) as u64;
const _: () = assert!(
    core::mem::offset_of!(Transfer, recv_cap) as u64 == RECEIVED_AT + 8
        && core::mem::offset_of!(Transfer, recv_truncated) as u64 == RECEIVED_AT + 16
        && core::mem::size_of::<Transfer>() as u64 == RECEIVED_AT + 24
);

pub(super) fn write_received(xfer: u64, t: &Transfer) -> Result<(), Error> {
    write_struct(xfer.checked_add(RECEIVED_AT).ok_or(Error::BadAddress)?, &[t.recv_len, t.recv_cap, t.recv_truncated])
}

/// Before a receive takes a message: the transfer block must take the result. Clearing its
/// received fields now refuses a read-only (or vanished) block while the message still waits
/// in the endpoint, instead of after it was taken.
pub(super) fn prepare_receive(xfer: u64) -> Result<(), Error> {
    if xfer == 0 {
        return Ok(());
    }
    write_received(xfer, &Transfer::default())
}

/// Puts a received message in the caller's registers (and its transfer block, if any).
///
/// A receive that fails here (the buffer or the block became unwritable after
/// `prepare_receive`) returns `BadAddress` and leaves nothing behind: the message is consumed,
/// its bytes and capability dropped, and no handle is added to the receiver's table. (The
/// sender keeps its own capability: the message carried a derived copy.)
pub(super) fn incoming(p: &Process, frame: &mut TrapFrame, mut msg: Message, t: Option<Transfer>) -> Result<u64, Error> {
    [frame.rsi, frame.rdx, frame.r10, frame.r8] = msg.words;
    let Some(mut t) = t else {
        // No transfer block: a buffer or capability sent along is dropped, and said so.
        return Ok(msg.badge);
    };
    let n = msg.data.len().min(t.recv_cap_len as usize);
    uaccess::copy_to_user(t.recv_buf, &msg.data[..n])?;
    t.recv_len = n as u64;
    t.recv_truncated = (msg.data.len() > n) as u64;
    // The handle is written while the table is locked, so that no thread of the receiver sees
    // it before it is known to have reached the block, and it is taken back if it did not.
    let mut table = p.caps.lock();
    t.recv_cap = match msg.cap.take() {
        Some(c) if c.is_valid() => table.insert(c).unwrap_or(NO_CAP),
        _ => NO_CAP,
    };
    if let Err(e) = write_received(frame.r9, &t) {
        if t.recv_cap != NO_CAP {
            let _ = table.delete(t.recv_cap);
        }
        return Err(e);
    }
    Ok(msg.badge)
}

/// Handles IPC and capability calls; `None` if `frame.rax` is not one of them.
pub fn dispatch(frame: &mut TrapFrame, me: &Arc<Thread>, p: &Arc<Process>) -> Option<Result<u64, Error>> {
    let a = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9];
    Some(match frame.rax {
        nr::ENDPOINT_CREATE => (|| {
            let charge = Charge::new(&p.budget, Kind::Endpoints, account::object_cost::<Endpoint>()).map_err(|_| Error::NoMemory)?;
            let ep = Endpoint::new(p.pid, charge).ok_or(Error::NoMemory)?;
            let mut owned = p.owned_endpoints.lock();
            // Endpoints nobody holds any more need no closing: forget them.
            owned.retain(|e| e.strong_count() > 0);
            owned.try_reserve(1).map_err(|_| Error::NoMemory)?;
            let node = CapNode::try_root(KObject::Endpoint(ep.clone()), Rights::ALL).map_err(cap_error)?;
            let h = p.caps.lock().insert(node).map_err(cap_error)?;
            owned.push(Arc::downgrade(&ep));
            Ok(h)
        })(),
        nr::NOTIFICATION_CREATE => Charge::new(&p.budget, Kind::Notifications, account::object_cost::<Notification>())
            .map_err(|_| Error::NoMemory)
            .and_then(|charge| Notification::new(Some(charge)).ok_or(Error::NoMemory))
            .and_then(|n| CapNode::try_root(KObject::Notification(n), Rights::ALL).map_err(cap_error))
            .and_then(|node| p.caps.lock().insert(node).map_err(cap_error)),
        nr::CAP_DERIVE => {
            // Badges come back in RAX from `recv` and `reply_recv`: 63 bits, like notification
            // bits (the fuzzer's badge 0xf643_9d24_d427_8b05 came back as an error code).
            let c = signal_bits(a[2]).and_then(|_| cap(p, a[0], Rights::empty()));
            c.and_then(|c| {
                let copy = c.derive(Rights(a[1] as u32), a[2]).map_err(cap_error)?;
                p.caps.lock().insert(copy).map_err(cap_error)
            })
        }
        nr::CAP_DELETE => p.caps.lock().delete(a[0]).map(|_| 0).map_err(cap_error),
        nr::CAP_REVOKE => p.caps.lock().revoke(a[0]).map(|_| 0).map_err(cap_error),
        nr::CAP_INFO => cap(p, a[0], Rights::empty()).map(|c| (c.object.kind() as u64) << 32 | c.rights.bits() as u64),
        nr::SEND => (|| {
            let (ep, badge) = endpoint(p, a[0], Rights::SEND)?;
            let (msg, _) = outgoing(p, frame, badge)?;
            ep.send(me, msg).map(|_| 0)
        })(),
        nr::CALL => (|| {
            let (ep, badge) = endpoint(p, a[0], Rights::SEND)?;
            let (msg, t) = outgoing(p, frame, badge)?;
            prepare_receive(frame.r9)?;
            let reply = ep.call(me, msg)?;
            incoming(p, frame, reply, t).map(|_| 0)
        })(),
        nr::RECV => (|| {
            let (ep, _) = endpoint(p, a[0], Rights::RECV)?;
            let t = if frame.r9 != 0 { Some(read_struct::<Transfer>(frame.r9)?) } else { None };
            prepare_receive(frame.r9)?;
            let msg = ep.recv(me)?;
            incoming(p, frame, msg, t)
        })(),
        nr::REPLY => (|| {
            let (msg, _) = outgoing(p, frame, 0)?;
            ipc::reply(me, msg).map(|_| 0)
        })(),
        nr::REPLY_RECV => (|| {
            let (ep, _) = endpoint(p, a[0], Rights::RECV)?;
            let (msg, t) = outgoing(p, frame, 0)?;
            prepare_receive(frame.r9)?;
            // A reply that cannot be delivered (the caller died) does not stop the server
            // loop: it receives the next message all the same.
            let (_replied, received) = ipc::reply_recv(me, &ep, msg);
            incoming(p, frame, received?, t)
        })(),
        nr::NOTIFY_SIGNAL => notification(p, a[0], Rights::SIGNAL).and_then(|n| {
            n.signal(signal_bits(a[1])?);
            Ok(0)
        }),
        nr::NOTIFY_WAIT => notification(p, a[0], Rights::WAIT).and_then(|n| n.wait(me)),
        nr::NOTIFY_TIMER => notification(p, a[0], Rights::SIGNAL).and_then(|n| {
            if a[1] == 0 || signal_bits(a[1]).is_err() || a[2] > 3_600_000 {
                return Err(Error::InvalidArgument);
            }
            ipc::timer_after(a[2].div_ceil(1000 / apic::TIMER_HZ), n, a[1]).map(|_| 0)
        }),
        nr::IRQ_BIND => (|| {
            let KObject::Irq(irq) = cap(p, a[0], Rights::CONTROL)?.object else { return Err(Error::BadHandle) };
            let n = notification(p, a[1], Rights::SIGNAL)?;
            if a[2] == 0 {
                return Err(Error::InvalidArgument);
            }
            signal_bits(a[2])?;
            ipc::irq_bind(irq, n, a[2]).map(|_| 0)
        })(),
        nr::IRQ_ACK => match cap(p, a[0], Rights::CONTROL).map(|c| c.object.clone()) {
            Ok(KObject::Irq(irq)) => {
                ipc::irq_ack(irq);
                Ok(0)
            }
            Ok(_) => Err(Error::BadHandle),
            Err(e) => Err(e),
        },
        nr::IOPORT_ENABLE => cap(p, a[0], Rights::CONTROL).and_then(|c| match c.object {
            KObject::IoPorts { base, len } => {
                p.enable_io_ports(base, len, c.clone())?;
                let cpu = me.cpu;
                x86_64::instructions::interrupts::without_interrupts(|| p.load_io_ports(cpu));
                Ok(0)
            }
            _ => Err(Error::BadHandle),
        }),
        nr::SPAWN => spawn(p, a[0], a[1]),
        nr::PROCESS_WAIT => match cap(p, a[0], Rights::CONTROL).map(|c| c.object.clone()) {
            // The status as its 32-bit pattern, so that a negative one is not read as an error.
            Ok(KObject::Process(child)) => child.wait_exit(me).map(|code| code as i32 as u32 as u64),
            Ok(_) => Err(Error::BadHandle),
            Err(e) => Err(e),
        },
        nr::PROCESS_KILL => match cap(p, a[0], Rights::CONTROL).map(|c| c.object.clone()) {
            Ok(KObject::Process(child)) => {
                child.kill(a[1] as i64);
                Ok(0)
            }
            Ok(_) => Err(Error::BadHandle),
            Err(e) => Err(e),
        },
        nr::KLOG_ATTACH => (|| {
            let KObject::KernelLog = cap(p, a[0], Rights::CONTROL)?.object else { return Err(Error::BadHandle) };
            let n = notification(p, a[1], Rights::SIGNAL)?;
            crate::klog::attach(n, signal_bits(a[2])?);
            Ok(0)
        })(),
        nr::KLOG_READ => (|| {
            let KObject::KernelLog = cap(p, a[0], Rights::CONTROL)?.object else { return Err(Error::BadHandle) };
            // Room for the longest line, and a buffer checked before lines leave the queue.
            if a[2] < crate::klog::LINE_MAX as u64 {
                return Err(Error::InvalidArgument);
            }
            if !uaccess::is_user_range(a[1], (a[2] as usize).min(4096)) {
                return Err(Error::BadAddress);
            }
            let mut buf = zeroed((a[2] as usize).min(4096))?;
            let n = crate::klog::read_queued(&mut buf);
            uaccess::copy_to_user(a[1], &buf[..n])?;
            Ok(n as u64)
        })(),
        nr::SERVERS_READY => match cap(p, a[0], Rights::CONTROL).map(|c| c.object.clone()) {
            Ok(KObject::Modules) => {
                servers_ready(p);
                Ok(0)
            }
            Ok(_) => Err(Error::BadHandle),
            Err(e) => Err(e),
        },
        nr::THREAD_CAP => match p.find_thread(|t| t.tid == a[0] && t.state() != crate::sched::State::Dead) {
            Some(t) => CapNode::try_root(KObject::Thread(t), Rights::CONTROL | Rights::GRANT)
                .and_then(|node| p.caps.lock().insert(node))
                .map_err(cap_error),
            None => Err(Error::NotFound),
        },
        nr::THREAD_WAIT => cap(p, a[0], Rights::CONTROL).and_then(|c| match &c.object {
            KObject::Thread(t) => ipc::wait_thread_exit(me, t).map(|_| t.exit_status()),
            _ => Err(Error::BadHandle),
        }),
        nr::MEMORY_INFO => memory_info(p, a[0], a[1]),
        nr::BUDGET_REVOKE => match cap(p, a[0], Rights::CONTROL).map(|c| c.object.clone()) {
            Ok(KObject::Process(child)) if p.budget.is_parent_of(&child.budget) => {
                child.budget.close();
                Ok(0)
            }
            Ok(KObject::Process(_)) => Err(Error::NoRights),
            Ok(_) => Err(Error::BadHandle),
            Err(e) => Err(e),
        },
        nr::IPC_STATS => {
            let s = &ipc::STATS;
            let mut v = [&s.fastpath, &s.slowpath, &s.cross_cpu, &s.messages].map(|c| c.load(Ordering::Relaxed));
            // Every fastpath call or reply is a message too (counted once, not twice per trip).
            v[3] += v[0];
            write_struct(a[0], &v).map(|_| 0)
        }
        _ => return None,
    })
}

/// The processes `spawn` started, in order (for READY's server list).
static SPAWNED: Mutex<Vec<Weak<Process>>> = Mutex::new(Vec::new());
/// READY's `servers=` list, once init has reported its servers up.
static SERVERS: Once<String> = Once::new();

fn spawn(p: &Process, modules: u64, args: u64) -> Result<u64, Error> {
    let KObject::Modules = cap(p, modules, Rights::CONTROL)?.object else { return Err(Error::BadHandle) };
    let s: SpawnArgs = read_struct(args)?;
    if s.name_len > 64 || s.arg_len > 1024 || s.caps_len as usize > MAX_SPAWN_CAPS {
        return Err(Error::InvalidArgument);
    }
    let mut name = zeroed(s.name_len as usize)?;
    uaccess::copy_from_user(&mut name, s.name)?;
    let name = String::from_utf8(name).map_err(|_| Error::InvalidArgument)?;
    let mut arg = zeroed(s.arg_len as usize)?;
    uaccess::copy_from_user(&mut arg, s.arg)?;
    let arg = String::from_utf8(arg).map_err(|_| Error::InvalidArgument)?;
    let mut handles = [0u64; MAX_SPAWN_CAPS];
    for (i, h) in handles.iter_mut().take(s.caps_len as usize).enumerate() {
        *h = read_struct(s.caps.checked_add(8 * i as u64).ok_or(Error::BadAddress)?)?;
    }
    let keep = if s.keep_grant != 0 { Rights::ALL } else { Rights(Rights::ALL.bits() & !Rights::GRANT.bits()) };
    let caps = handles[..s.caps_len as usize]
        .iter()
        .map(|&h| cap(p, h, Rights::GRANT).and_then(|c| c.derive(keep, 0).map_err(cap_error)))
        .collect::<Result<Vec<_>, _>>()?;
    let exit = match s.exit_notify {
        0 => None,
        h => Some((notification(p, h, Rights::SIGNAL)?, signal_bits(s.exit_bits)?)),
    };
    let cpu = match s.cpu {
        nr::ANY_CPU => None,
        c if (c as usize) < smp::online() => Some(c as usize),
        _ => return Err(Error::NotFound),
    };
    let image = crate::boot::module(&name).ok_or(Error::NotFound)?;
    // The child's handle must have a slot: checked before it starts (and if another thread
    // took the last slot meanwhile, the child is ended again below).
    if !p.caps.lock().has_room() {
        return Err(Error::NoMemory);
    }
    let budget = p.budget.grant(if s.budget == 0 { abi::ipc::DEFAULT_BUDGET } else { s.budget }).map_err(|_| Error::NoMemory)?;
    let child = Process::spawn_with(&name, image, &arg, caps, cpu, budget).map_err(|e| {
        if crate::sched::user_log_allowed(p) {
            log::warn!("cannot start {name}: {e}");
        }
        match e {
            crate::sched::SpawnError::NoMemory => Error::NoMemory,
            _ => Error::InvalidArgument,
        }
    })?;
    *child.exit_notify.lock() = exit;
    // It may have ended already (before we set the notification): signal now then.
    if child.is_finished() {
        if let Some((n, bits)) = child.exit_notify.lock().take() {
            n.signal(bits);
        }
    }
    {
        let mut spawned = SPAWNED.lock();
        spawned.retain(|c| c.strong_count() > 0);
        if spawned.try_reserve(1).is_ok() {
            spawned.push(Arc::downgrade(&child));
        }
    }
    let handle = CapNode::try_root(KObject::Process(child.clone()), Rights::CONTROL | Rights::GRANT).and_then(|node| p.caps.lock().insert(node));
    handle.map_err(|e| {
        // Nobody could name it: it ends, and its budget returns to the caller.
        child.kill(-1);
        cap_error(e)
    })
}

/// `memory_info(p, out)`: the budget of `p` (or the caller's, for `NO_CAP`) and the kernel's
/// totals.
fn memory_info(p: &Process, h: u64, out: u64) -> Result<u64, Error> {
    let target = match h {
        NO_CAP => None,
        h => match cap(p, h, Rights::CONTROL)?.object.clone() {
            KObject::Process(child) => Some(child),
            _ => return Err(Error::BadHandle),
        },
    };
    crate::mm::kvm::reclaim_stacks();
    let who = target.as_deref().unwrap_or(p);
    let u = who.budget.usage();
    let (pooled, retired) = crate::mm::kvm::stack_counts();
    let (heap_used, heap_mapped) = crate::mm::heap::usage();
    let stack_frames = crate::mm::kvm::KSTACK_SIZE / 4096;
    let o = |k: Kind| u.objects[k as usize];
    let info = abi::ipc::MemoryInfo {
        pid: who.pid,
        limit: u.limit,
        used: u.used,
        peak: u.peak,
        closed: u.closed as u64,
        frames: o(Kind::Frames),
        threads: o(Kind::Threads),
        endpoints: o(Kind::Endpoints),
        notifications: o(Kind::Notifications),
        tables: o(Kind::Process),
        grants: o(Kind::Grants),
        granted: u.bytes[Kind::Grants as usize],
        messages: o(Kind::Messages),
        message_bytes: u.bytes[Kind::Messages as usize],
        free_frames: crate::mm::phys::free_frames(),
        cached_frames: (pooled + retired) as u64 * stack_frames
            + (heap_mapped - crate::mm::heap::HEAP_INITIAL) / 4096
            + crate::mm::phys::kernel_table_frames(),
        heap_used,
        heap_mapped,
    };
    write_struct(out, &info).map(|_| 0)
}

fn servers_ready(init: &Process) {
    let mut list = String::from(init.name.as_str());
    for child in SPAWNED.lock().iter().filter_map(Weak::upgrade).filter(|c| !c.is_finished()) {
        child.is_server.store(true, Ordering::Relaxed);
        list.push(',');
        list.push_str(&child.name);
    }
    SERVERS.call_once(|| list);
}

/// Waits (up to `ticks` timer ticks) for init to report its servers up; the list for READY.
pub fn wait_servers_ready(ticks: u64) -> Option<&'static str> {
    let cpu = crate::arch::x86_64::percpu::this();
    let start = cpu.ticks.load(Ordering::Relaxed);
    while SERVERS.get().is_none() && cpu.ticks.load(Ordering::Relaxed) - start < ticks {
        crate::sched::idle_once();
    }
    SERVERS.get().map(String::as_str)
}

static INIT: Once<Arc<Process>> = Once::new();

/// Records the root task (for the scenarios that wait for it).
pub fn set_init_process(p: Arc<Process>) {
    INIT.call_once(|| p);
}

pub fn init_process() -> Option<Arc<Process>> {
    INIT.get().cloned()
}

/// The capabilities the kernel gives init (`abi::cap::init_caps` names their handles).
pub fn init_caps() -> Vec<Cap> {
    let mut caps = Vec::new();
    caps.push(CapNode::root(KObject::Modules, Rights::ALL));
    caps.push(CapNode::root(KObject::IoPorts { base: 0x3f8, len: 8 }, Rights::ALL));
    caps.push(CapNode::root(KObject::Irq(4), Rights::ALL));
    caps.push(CapNode::root(KObject::KernelLog, Rights::ALL));
    caps
}
