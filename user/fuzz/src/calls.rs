//! What the fuzzer knows about each system-call number: a name for the summary, what each
//! argument is (so that most calls get arguments of the right shape, from hostile classes), and
//! how the call is run:
//!
//! - **direct**: from the fuzz loop itself, with every preserved register checked afterwards;
//! - **job**: on a short-lived thread of its own (`worker`), because the call may block for
//!   good (SEND, RECV, CALL, REPLY_RECV, NOTIFY_WAIT, PROCESS_WAIT, THREAD_WAIT,
//!   WAIT_THREADS, SLEEP) or end its thread (THREAD_EXIT, SET_RETURN_CONTEXT to a hostile
//!   RIP). The loop waits a few yields for it; a job still blocked then is *parked* and
//!   reaped later, or by the process exit;
//! - **excluded**: PROCESS_EXIT, which would end the fuzzer (every thread of it) at once.
//!
//! Numbers the ABI does not define get fully random arguments.

use abi::syscall as nr;

/// The shape of one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// Not read by the call: anything at all.
    Any,
    /// A user pointer the kernel reads or writes.
    Ptr,
    /// A byte count.
    Len,
    /// A capability handle.
    Handle,
    /// A plain integer (message word, code, bits).
    Int,
    /// A rights mask.
    Rights,
    /// A CPU index, or `ANY_CPU`.
    Cpu,
    /// Milliseconds (NOTIFY_TIMER; SLEEP's are tamed by the worker).
    Ms,
    /// A thread id.
    Tid,
    /// A pointer to a transfer block (`abi::ipc::Transfer`), or 0.
    Xfer,
    /// A pointer to spawn arguments (`abi::ipc::SpawnArgs`).
    Spawn,
    /// A thread entry point: tamed so that a new thread can only end at once or fault.
    Entry,
    /// A return RIP for SET_RETURN_CONTEXT: tamed the same way.
    Rip,
    /// RFLAGS bits.
    Flags,
    /// A `bench_fault_resume` RIP: 0 or a non-user address only, since a resumable fault at a
    /// user address would loop for ever.
    ResumeRip,
    /// A `bench_watch` address: 0 (disarm) or one the kernel must refuse. An armed watchpoint
    /// is the CPU's, not the caller's: every thread that runs there afterwards and touches the
    /// address dies of #DB, whatever its process (the fuzzer found this: the victim's pattern
    /// reads at the worker arena's address killed it).
    NoWatch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    Direct,
    Job,
    Excluded,
}

#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub name: &'static str,
    pub args: [Arg; 6],
    pub run: Run,
    /// The call is defined by the ABI (an undefined one must answer NoSuchCall, checked for
    /// numbers above 16 bits: a kernel that truncated the number would run some other call).
    pub defined: bool,
}

use Arg::*;

const fn call(name: &'static str, args: [Arg; 6], run: Run) -> Call {
    Call { name, args, run, defined: true }
}

const fn a(first: &[Arg]) -> [Arg; 6] {
    let mut out = [Any; 6];
    let mut i = 0;
    while i < first.len() {
        out[i] = first[i];
        i += 1;
    }
    out
}

/// Words of a message: RSI, RDX, R10, R8 after the handle in RDI, then the transfer block in R9.
const MSG: [Arg; 6] = [Handle, Int, Int, Int, Int, Xfer];

pub fn call_for(n: u64) -> Call {
    use Run::*;
    match n {
        nr::LOG => call("log", a(&[Ptr, Len]), Direct),
        nr::YIELD => call("yield", a(&[]), Direct),
        nr::SLEEP => call("sleep", a(&[Ms]), Job),
        nr::THREAD_EXIT => call("thread_exit", a(&[Int]), Job),
        nr::THREAD_CREATE => call("thread_create", a(&[Entry, Ptr, Int, Cpu]), Direct),
        nr::CPU_ID => call("cpu_id", a(&[]), Direct),
        nr::MAP => call("map", a(&[Len]), Direct),
        nr::UNMAP => call("unmap", a(&[Ptr, Len]), Direct),
        nr::PROCESS_EXIT => call("process_exit", a(&[Int]), Excluded),
        nr::CPU_COUNT => call("cpu_count", a(&[]), Direct),
        nr::SET_RETURN_CONTEXT => call("set_return_context", a(&[Rip, Ptr, Flags]), Job),
        nr::EXIT_PATH_COUNTS => call("exit_path_counts", a(&[Ptr]), Direct),
        nr::THREAD_ID => call("thread_id", a(&[]), Direct),
        nr::WAIT_THREADS => call("wait_threads", a(&[]), Job),
        nr::ENDPOINT_CREATE => call("endpoint_create", a(&[]), Direct),
        nr::NOTIFICATION_CREATE => call("notification_create", a(&[]), Direct),
        nr::CAP_DERIVE => call("cap_derive", a(&[Handle, Rights, Int]), Direct),
        nr::CAP_DELETE => call("cap_delete", a(&[Handle]), Direct),
        nr::CAP_REVOKE => call("cap_revoke", a(&[Handle]), Direct),
        nr::CAP_INFO => call("cap_info", a(&[Handle]), Direct),
        nr::SEND => call("send", MSG, Job),
        nr::RECV => call("recv", [Handle, Any, Any, Any, Any, Xfer], Job),
        nr::CALL => call("call", MSG, Job),
        nr::REPLY => call("reply", [Any, Int, Int, Int, Int, Xfer], Direct),
        nr::REPLY_RECV => call("reply_recv", MSG, Job),
        nr::NOTIFY_SIGNAL => call("notify_signal", a(&[Handle, Int]), Direct),
        nr::NOTIFY_WAIT => call("notify_wait", a(&[Handle]), Job),
        nr::NOTIFY_TIMER => call("notify_timer", a(&[Handle, Int, Ms]), Direct),
        nr::IRQ_BIND => call("irq_bind", a(&[Handle, Handle, Int]), Direct),
        nr::IRQ_ACK => call("irq_ack", a(&[Handle]), Direct),
        nr::IOPORT_ENABLE => call("ioport_enable", a(&[Handle]), Direct),
        nr::SPAWN => call("spawn", a(&[Handle, Spawn]), Direct),
        nr::PROCESS_WAIT => call("process_wait", a(&[Handle]), Job),
        nr::PROCESS_KILL => call("process_kill", a(&[Handle, Int]), Direct),
        nr::BENCH_NULL => call("bench_null", a(&[]), Direct),
        nr::BENCH_BREAKPOINTS_RESUME => call("bench_breakpoints_resume", a(&[Int]), Direct),
        nr::BENCH_SELF_NMI => call("bench_self_nmi", a(&[Int]), Direct),
        nr::BENCH_FAULT_RESUME => call("bench_fault_resume", a(&[ResumeRip]), Direct),
        nr::BENCH_COUNTER => call("bench_counter", a(&[Int]), Direct),
        nr::BENCH_WATCH => call("bench_watch", a(&[NoWatch]), Direct),
        // Like a resume RIP, only 0 or a non-user address: an armed floor answers SYSCALLs
        // returning to its address on that CPU, whichever thread makes them.
        nr::BENCH_FLOOR => call("bench_floor", a(&[ResumeRip]), Direct),
        nr::BENCH_BOOT_CLOCK => call("bench_boot_clock", a(&[Int, Cpu]), Direct),
        nr::KLOG_ATTACH => call("klog_attach", a(&[Handle, Handle, Int]), Direct),
        nr::KLOG_READ => call("klog_read", a(&[Handle, Ptr, Len]), Direct),
        nr::SERVERS_READY => call("servers_ready", a(&[Handle]), Direct),
        nr::IPC_STATS => call("ipc_stats", a(&[Ptr]), Direct),
        nr::THREAD_CAP => call("thread_cap", a(&[Tid]), Direct),
        nr::THREAD_WAIT => call("thread_wait", a(&[Handle]), Job),
        _ => Call { name: "", args: [Any; 6], run: Direct, defined: false },
    }
}

/// Calls whose job, once blocked, only ends with the process (the fuzz loop is one of the
/// threads they wait for): the worker keeps only a few of them in flight.
pub fn parks_for_good(n: u64) -> bool {
    n == nr::WAIT_THREADS || n == nr::THREAD_WAIT
}

/// Every defined number is below this.
pub const DEFINED_BELOW: u64 = 64;

/// Numbers tried besides 0..=127: edges of the number's width, so that a kernel which
/// truncated or sign-extended it would run a real call and be caught.
pub const HUGE_NUMBERS: &[u64] = &[
    128,
    255,
    256,
    0xffff,
    0x1_0000,
    u32::MAX as u64,
    1 << 32,
    (1 << 32) | nr::CPU_ID,
    (1 << 32) | nr::MAP,
    (1 << 63) | nr::YIELD,
    1 << 63,
    u64::MAX,
    u64::MAX - 1,
    0x8000_0000_0000_0005,
    0xffff_ffff_0000_0006,
];

/// Index of a number in the per-number counts: its own below 128, one shared bucket above.
pub const BUCKETS: usize = 129;

pub fn bucket(n: u64) -> usize {
    if n < 128 { n as usize } else { 128 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_abi_call_is_known_by_name() {
        let defined: Vec<u64> = (0..128).filter(|&n| call_for(n).defined).collect();
        for n in [0, 13, 20, 39, 40, 44, 46, 47, 50, 55] {
            assert!(defined.contains(&n), "{n} unknown");
        }
        assert!(defined.iter().all(|&n| !call_for(n).name.is_empty()));
        assert!(!call_for(56).defined && !call_for(14).defined && !call_for(48).defined);
    }

    #[test]
    fn calls_that_can_block_or_end_their_thread_never_run_in_the_fuzz_loop() {
        for n in [
            nr::SEND,
            nr::RECV,
            nr::CALL,
            nr::REPLY_RECV,
            nr::NOTIFY_WAIT,
            nr::PROCESS_WAIT,
            nr::THREAD_WAIT,
            nr::WAIT_THREADS,
            nr::SLEEP,
            nr::THREAD_EXIT,
            nr::SET_RETURN_CONTEXT,
        ] {
            assert_eq!(call_for(n).run, Run::Job, "{}", call_for(n).name);
        }
        assert_eq!(call_for(nr::PROCESS_EXIT).run, Run::Excluded);
    }

    #[test]
    fn every_defined_number_is_below_the_bound_the_generator_draws_from() {
        assert!((DEFINED_BELOW..=0xffff).all(|n| !call_for(n).defined));
    }

    #[test]
    fn huge_numbers_are_undefined_and_share_a_bucket() {
        for &n in HUGE_NUMBERS {
            assert!(!call_for(n).defined);
            assert_eq!(bucket(n), 128);
        }
    }
}
