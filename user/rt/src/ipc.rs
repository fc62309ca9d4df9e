//! IPC and capability system calls (`abi::syscall` 20..=39, 50..=53): typed wrappers.
//!
//! A message is four words ([`Msg`]) in registers, plus an optional [`Transfer`] block for
//! a byte buffer and one capability. Handles are plain `u64`s (`abi::cap`).

use abi::cap::Rights;
use abi::ipc::{SpawnArgs, Transfer};
use abi::{syscall as nr, Error};
use core::arch::asm;

pub use abi::cap::{init_caps, initial, Kind};
pub use abi::ipc::{MAX_BUFFER, NO_CAP};

/// The four message words.
pub type Msg = [u64; 4];

/// One IPC system call with the message registers both ways.
///
/// # Safety
/// `xfer` is null or points at a `Transfer` whose buffers are valid for what call `nr` does
/// with them (read `send_len` bytes, write up to `recv_cap_len` bytes).
unsafe fn ipc_call(nr: u64, h: u64, m: Msg, xfer: *mut Transfer) -> (u64, Msg) {
    let rax;
    let (mut m0, mut m1, mut m2, mut m3) = (m[0], m[1], m[2], m[3]);
    // SAFETY: SYSCALL clobbers RCX and R11; the IPC calls write RAX and the four message
    // registers (declared inout) and, through `xfer`, only memory the caller vouched for.
    unsafe {
        asm!("syscall", inlateout("rax") nr => rax, in("rdi") h, inout("rsi") m0, inout("rdx") m1,
             inout("r10") m2, inout("r8") m3, in("r9") xfer, lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    (rax, [m0, m1, m2, m3])
}

fn xfer_ptr(x: Option<&mut Transfer>) -> *mut Transfer {
    x.map_or(core::ptr::null_mut(), |t| t as *mut Transfer)
}

/// Builds a transfer block that sends `data` (and optionally `cap` with `rights`) and
/// receives into `recv`.
pub fn transfer(data: &[u8], cap: Option<(u64, Rights)>, recv: &mut [u8]) -> Transfer {
    Transfer {
        send_buf: data.as_ptr() as u64,
        send_len: data.len() as u64,
        send_cap: cap.map_or(NO_CAP, |c| c.0),
        send_rights: cap.map_or(0, |c| c.1.bits()),
        recv_buf: recv.as_mut_ptr() as u64,
        recv_cap_len: recv.len() as u64,
        ..Default::default()
    }
}

fn simple(nr: u64, args: [u64; 3]) -> Result<u64, Error> {
    let rax: u64;
    // SAFETY: the calls routed here take handles and integers, and at most a pointer to
    // memory the wrapper keeps live for the call (no asm `nomem`, so the compiler assumes
    // it is read and written).
    unsafe {
        asm!("syscall", inlateout("rax") nr => rax, in("rdi") args[0], in("rsi") args[1],
             in("rdx") args[2], lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    Error::result(rax)
}

pub fn endpoint_create() -> Result<u64, Error> {
    simple(nr::ENDPOINT_CREATE, [0; 3])
}

pub fn notification_create() -> Result<u64, Error> {
    simple(nr::NOTIFICATION_CREATE, [0; 3])
}

/// A copy of `h` with at most `rights`, carrying `badge` unless `h` already has one.
pub fn cap_derive(h: u64, rights: Rights, badge: u64) -> Result<u64, Error> {
    simple(nr::CAP_DERIVE, [h, rights.bits() as u64, badge])
}

pub fn cap_delete(h: u64) -> Result<(), Error> {
    simple(nr::CAP_DELETE, [h, 0, 0]).map(drop)
}

/// Every capability derived from `h` stops working; `h` itself stays.
pub fn cap_revoke(h: u64) -> Result<(), Error> {
    simple(nr::CAP_REVOKE, [h, 0, 0]).map(drop)
}

/// The kind of object `h` names and its rights.
pub fn cap_info(h: u64) -> Result<(u32, Rights), Error> {
    simple(nr::CAP_INFO, [h, 0, 0]).map(|v| ((v >> 32) as u32, Rights(v as u32)))
}

/// Sends `m` on `ep`, blocking until a receiver takes it.
pub fn send(ep: u64, m: Msg, xfer: Option<&mut Transfer>) -> Result<(), Error> {
    // SAFETY: a `Transfer` built by `transfer` borrows live buffers for this call.
    let (rax, _) = unsafe { ipc_call(nr::SEND, ep, m, xfer_ptr(xfer)) };
    Error::result(rax).map(drop)
}

/// Calls `ep` with `m` and returns the reply.
pub fn call(ep: u64, m: Msg, xfer: Option<&mut Transfer>) -> Result<Msg, Error> {
    // SAFETY: as in `send`.
    let (rax, reply) = unsafe { ipc_call(nr::CALL, ep, m, xfer_ptr(xfer)) };
    Error::result(rax).map(|_| reply)
}

/// Receives a message on `ep`: the sender's badge and the words.
pub fn recv(ep: u64, xfer: Option<&mut Transfer>) -> Result<(u64, Msg), Error> {
    // SAFETY: as in `send`.
    let (rax, m) = unsafe { ipc_call(nr::RECV, ep, [0; 4], xfer_ptr(xfer)) };
    Error::result(rax).map(|badge| (badge, m))
}

/// Answers the last call received.
pub fn reply(m: Msg, xfer: Option<&mut Transfer>) -> Result<(), Error> {
    // SAFETY: as in `send`.
    let (rax, _) = unsafe { ipc_call(nr::REPLY, 0, m, xfer_ptr(xfer)) };
    Error::result(rax).map(drop)
}

/// Answers the last call received and waits for the next message on `ep`.
pub fn reply_recv(ep: u64, m: Msg, xfer: Option<&mut Transfer>) -> Result<(u64, Msg), Error> {
    // SAFETY: as in `send`.
    let (rax, m) = unsafe { ipc_call(nr::REPLY_RECV, ep, m, xfer_ptr(xfer)) };
    Error::result(rax).map(|badge| (badge, m))
}

/// The server loop's step: answer the previous request (if there was one) and wait for the
/// next on `ep`.
pub fn serve(ep: u64, reply: Option<Msg>, xfer: Option<&mut Transfer>) -> Result<(u64, Msg), Error> {
    match reply {
        Some(r) => reply_recv(ep, r, xfer),
        None => recv(ep, xfer),
    }
}

pub fn notify_signal(n: u64, bits: u64) -> Result<(), Error> {
    simple(nr::NOTIFY_SIGNAL, [n, bits, 0]).map(drop)
}

/// Blocks until a bit of `n` is set; returns (and clears) them.
pub fn notify_wait(n: u64) -> Result<u64, Error> {
    simple(nr::NOTIFY_WAIT, [n, 0, 0])
}

/// Signals `bits` on `n` after `ms` milliseconds.
pub fn notify_timer(n: u64, bits: u64, ms: u64) -> Result<(), Error> {
    simple(nr::NOTIFY_TIMER, [n, bits, ms]).map(drop)
}

pub fn irq_bind(irq: u64, n: u64, bits: u64) -> Result<(), Error> {
    simple(nr::IRQ_BIND, [irq, n, bits]).map(drop)
}

pub fn irq_ack(irq: u64) -> Result<(), Error> {
    simple(nr::IRQ_ACK, [irq, 0, 0]).map(drop)
}

pub fn ioport_enable(io: u64) -> Result<(), Error> {
    simple(nr::IOPORT_ENABLE, [io, 0, 0]).map(drop)
}

/// Starts boot module `name` with `arg`, handing it `caps` (its handles `initial(0..)`).
pub fn spawn(modules: u64, name: &str, arg: &str, caps: &[u64], cpu: Option<usize>, exit_notify: Option<(u64, u64)>) -> Result<u64, Error> {
    spawn_with_budget(modules, name, arg, caps, cpu, exit_notify, 0)
}

/// Like [`spawn`], with a memory budget of `budget` bytes carved out of the caller's (0:
/// `abi::ipc::DEFAULT_BUDGET`).
pub fn spawn_with_budget(
    modules: u64,
    name: &str,
    arg: &str,
    caps: &[u64],
    cpu: Option<usize>,
    exit_notify: Option<(u64, u64)>,
    budget: u64,
) -> Result<u64, Error> {
    let args = SpawnArgs {
        name: name.as_ptr() as u64,
        name_len: name.len() as u64,
        arg: arg.as_ptr() as u64,
        arg_len: arg.len() as u64,
        caps: caps.as_ptr() as u64,
        caps_len: caps.len() as u64,
        keep_grant: 0,
        cpu: cpu.map_or(nr::ANY_CPU, |c| c as u64),
        exit_notify: exit_notify.map_or(0, |e| e.0),
        exit_bits: exit_notify.map_or(0, |e| e.1),
        budget,
    };
    simple(nr::SPAWN, [modules, &args as *const SpawnArgs as u64, 0])
}

/// The memory budget of process `p` (`NO_CAP`: the caller's own) and the kernel's totals.
pub fn memory_info(p: u64) -> Result<abi::ipc::MemoryInfo, Error> {
    let mut info = abi::ipc::MemoryInfo::default();
    simple(nr::MEMORY_INFO, [p, &mut info as *mut abi::ipc::MemoryInfo as u64, 0])?;
    Ok(info)
}

/// Revokes the budget of child process `p`: it gets `NoMemory` from now on.
pub fn budget_revoke(p: u64) -> Result<(), Error> {
    simple(nr::BUDGET_REVOKE, [p, 0, 0]).map(drop)
}

/// Blocks until process `p` has ended and everything it held is freed; its exit code.
pub fn process_wait(p: u64) -> Result<i64, Error> {
    simple(nr::PROCESS_WAIT, [p, 0, 0]).map(|v| v as u32 as i32 as i64)
}

pub fn process_kill(p: u64, code: i64) -> Result<(), Error> {
    simple(nr::PROCESS_KILL, [p, code as u64, 0]).map(drop)
}

pub fn klog_attach(klog: u64, n: u64, bits: u64) -> Result<(), Error> {
    simple(nr::KLOG_ATTACH, [klog, n, bits]).map(drop)
}

/// Whole queued kernel log lines into `buf`; the byte count.
pub fn klog_read(klog: u64, buf: &mut [u8]) -> Result<usize, Error> {
    simple(nr::KLOG_READ, [klog, buf.as_mut_ptr() as u64, buf.len() as u64]).map(|n| n as usize)
}

pub fn servers_ready(modules: u64) -> Result<(), Error> {
    simple(nr::SERVERS_READY, [modules, 0, 0]).map(drop)
}

/// A capability (CONTROL, GRANT) to thread `tid` of this process.
pub fn thread_cap(tid: u64) -> Result<u64, Error> {
    simple(nr::THREAD_CAP, [tid, 0, 0])
}

/// Blocks until the thread `t` names has ended; tells how it ended.
pub fn thread_wait(t: u64) -> Result<abi::thread_exit::ThreadExit, Error> {
    simple(nr::THREAD_WAIT, [t, 0, 0]).map(abi::thread_exit::decode)
}

/// IPC counters over all CPUs.
#[derive(Clone, Copy, Debug, Default)]
pub struct IpcStats {
    /// Calls and replies the kernel's fastpath delivered: register-only messages to a partner
    /// waiting on the same CPU with no transfer block, handed over with a direct switch.
    pub fastpath: u64,
    /// Deliveries of the generic path (a direct switch to a partner on the same CPU, or its
    /// run queue).
    pub slowpath: u64,
    /// Of those, to another CPU.
    pub cross_cpu: u64,
    /// Messages delivered.
    pub messages: u64,
}

pub fn ipc_stats() -> Result<IpcStats, Error> {
    let mut out = [0u64; 4];
    simple(nr::IPC_STATS, [out.as_mut_ptr() as u64, 0, 0])?;
    Ok(IpcStats { fastpath: out[0], slowpath: out[1], cross_cpu: out[2], messages: out[3] })
}
