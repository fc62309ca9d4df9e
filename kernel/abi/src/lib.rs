//! The one definition of everything that crosses a boundary: kernel <-> user space (system-call
//! numbers, message layout, error codes, added as they are built) and kernel <-> the host tools
//! that boot it (the test-harness exit protocol).
#![no_std]

/// How a kernel test scenario reports its verdict to the emulator that runs it.
pub mod harness {
    /// QEMU's `isa-debug-exit` device: a write of `v` ends QEMU with status `(v << 1) | 1`.
    pub const QEMU_DEBUG_EXIT_PORT: u16 = 0xf4;
    /// Value written for a passing scenario (QEMU exit status 33).
    pub const QEMU_EXIT_PASS: u8 = 0x10;
    /// Value written for a failing scenario (QEMU exit status 35).
    pub const QEMU_EXIT_FAIL: u8 = 0x11;

    /// The QEMU process exit status that a write of `value` to the debug-exit port produces.
    pub const fn qemu_status(value: u8) -> i32 {
        ((value as i32) << 1) | 1
    }

    /// Bochs ends the simulation when this string is written byte by byte to
    /// [`BOCHS_SHUTDOWN_PORT`]; its exit status carries no verdict, the serial log does.
    pub const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;
    pub const BOCHS_SHUTDOWN_STRING: &[u8] = b"Shutdown";

    /// The `mce_inject` scenario prints this line when it is ready for machine checks; the
    /// host then injects one per CPU through QEMU's monitor.
    pub const MCE_INJECT_MARKER: &str = "MCE: inject now";
    /// The scenario that needs the host to inject machine checks.
    pub const MCE_INJECT_SCENARIO: &str = "mce_inject";

    /// How long the kernel lets the `fuzz` scenario run `count` calls before it fails it (with
    /// a backtrace of every CPU), in seconds: room for the slowest emulator (Bochs). The host
    /// waits a little longer, so that the kernel's report comes first.
    pub const fn fuzz_time_limit_secs(count: u64) -> u64 {
        120 + count / 100
    }
}

/// System calls: `SYSCALL` with the number in RAX and arguments in RDI, RSI, RDX, R10, R8, R9
/// (R10 instead of RCX, which SYSCALL overwrites). The result comes back in RAX: a value
/// `>= 0`, or a negated [`Error`] code. RCX and R11 are clobbered; every other register is
/// preserved.
pub mod syscall {
    /// `log(ptr, len) -> bytes`: write a line of UTF-8 (at most 512 bytes) to the kernel log,
    /// tagged with the caller's name. Rate-limited per process (a burst of 64 lines, then 10
    /// a second): a line over the limit is dropped, counted, and `log` returns 0; the kernel
    /// reports the count before the process's next line.
    pub const LOG: u64 = 0;
    /// `yield()`: give the CPU to another ready thread.
    pub const YIELD: u64 = 1;
    /// `sleep(milliseconds)`.
    pub const SLEEP: u64 = 2;
    /// `thread_exit(code) -> !`: end the calling thread.
    pub const THREAD_EXIT: u64 = 3;
    /// `thread_create(entry, stack_top, arg, cpu) -> tid`: a new thread in the caller's
    /// process, starting at `entry(arg)` with RSP = `stack_top`, on CPU `cpu`
    /// (or anywhere with [`ANY_CPU`]).
    pub const THREAD_CREATE: u64 = 4;
    /// `cpu_id() -> index` of the CPU running the caller.
    pub const CPU_ID: u64 = 5;
    /// `map(len) -> addr`: fresh zeroed read-write memory, `len` rounded up to pages (at most
    /// 64 MiB per call; `NoMemory` once the process holds 4096 separate mapped ranges).
    pub const MAP: u64 = 6;
    /// `unmap(addr, len) -> done`: remove pages mapped by `map` in `[addr, addr + len)`
    /// (page-aligned `addr` at or above `layout::USER_MAP_BASE`, `len` rounded up to pages).
    ///
    /// One call does a bounded amount of work, however long the range: it skips unmapped
    /// space a page table at a time and frees at most a fixed number of pages (1024 today),
    /// then returns `done`, the bytes from `addr` it has finished (`0 < done <= len`). The
    /// whole range stops being `map` memory at the first call (an untouched page there now
    /// faults); its pages are freed, and their physical memory returned, only up to
    /// `addr + done`. Call again with `(addr + done, len - done)` until `done == len`
    /// (`rt::sys::unmap` loops). `NoMemory`: cutting a hole would exceed the range limit.
    pub const UNMAP: u64 = 7;
    /// `process_exit(code) -> !`: end every thread of the caller's process.
    pub const PROCESS_EXIT: u64 = 8;
    /// `cpu_count() -> n` CPUs online.
    pub const CPU_COUNT: u64 = 9;
    /// `set_return_context(rip, rsp, rflags)`: this call returns to `rip` with `rsp` and the
    /// user-settable bits of `rflags` (CF PF AF ZF SF TF DF OF, AC, RF, ID; IF is always set),
    /// like a signal return: the part of the ABI a user-level context switch or exception
    /// handler needs. `rsp` must be a user address (else `BadAddress`); a `rip` the thread
    /// cannot run at is not refused: the return leaves by IRET/ERETU (never SYSRET) and the
    /// thread dies of the #GP or #PF it takes there.
    pub const SET_RETURN_CONTEXT: u64 = 10;
    /// `exit_path_counts(out: *mut [u64; 3])`: SYSRET exits, IRET exits, and bad-IRET kills,
    /// summed over all CPUs.
    pub const EXIT_PATH_COUNTS: u64 = 11;
    /// `thread_id() -> tid`.
    pub const THREAD_ID: u64 = 12;
    /// `wait_threads()`: block until every other thread of the caller's process has ended.
    pub const WAIT_THREADS: u64 = 13;

    /// `thread_create`'s `cpu` argument for "let the kernel choose".
    pub const ANY_CPU: u64 = u64::MAX;

    // --- IPC and capabilities (20..=39, 50..=53); see `cap` and `ipc` below. -------------
    /// `endpoint_create() -> handle` with every right.
    pub const ENDPOINT_CREATE: u64 = 20;
    /// `notification_create() -> handle` with every right.
    pub const NOTIFICATION_CREATE: u64 = 21;
    /// `cap_derive(h, rights, badge) -> handle`: a copy of `h` with at most `rights`, and
    /// `badge` if `h` has none. Revoking `h` revokes the copy. A badge has 63 bits (`recv`
    /// returns it in RAX): bit 63 is refused with InvalidArgument.
    pub const CAP_DERIVE: u64 = 22;
    /// `cap_delete(h)`.
    pub const CAP_DELETE: u64 = 23;
    /// `cap_revoke(h)`: every capability derived from `h` stops working; `h` stays.
    pub const CAP_REVOKE: u64 = 24;
    /// `cap_info(h) -> kind << 32 | rights`.
    pub const CAP_INFO: u64 = 25;
    /// `send(ep, m0, m1, m2, m3, xfer)`: blocks until a receiver takes the message.
    pub const SEND: u64 = 26;
    /// `recv(ep, xfer) -> badge`, message in RSI, RDX, R10, R8.
    pub const RECV: u64 = 27;
    /// `call(ep, m0, m1, m2, m3, xfer)`: send with a one-shot reply capability and wait for
    /// the reply (in RSI, RDX, R10, R8).
    pub const CALL: u64 = 28;
    /// `reply(m0, m1, m2, m3, xfer)`: answer the last call this thread received (RDI unused).
    pub const REPLY: u64 = 29;
    /// `reply_recv(ep, m0, m1, m2, m3, xfer) -> badge`: reply, then receive on `ep`.
    pub const REPLY_RECV: u64 = 30;
    /// `notify_signal(n, bits)`. Notifications have 63 bits: wherever bits are given
    /// (here, `notify_timer`, `irq_bind`, `klog_attach`, `spawn`'s `exit_bits`), bit 63 is
    /// refused with InvalidArgument, since `notify_wait` returns them in RAX.
    pub const NOTIFY_SIGNAL: u64 = 31;
    /// `notify_wait(n) -> bits`: blocks until some bit is set, returns and clears them.
    pub const NOTIFY_WAIT: u64 = 32;
    /// `notify_timer(n, bits, milliseconds)`: signal `bits` on `n` from the timer interrupt
    /// once `milliseconds` have passed.
    pub const NOTIFY_TIMER: u64 = 33;
    /// `irq_bind(irq, n, bits)`: the device interrupt `irq` names signals `bits` on `n`;
    /// the line stays masked from each interrupt until `irq_ack`.
    pub const IRQ_BIND: u64 = 34;
    /// `irq_ack(irq)`: unmask the line after handling its interrupt.
    pub const IRQ_ACK: u64 = 35;
    /// `ioport_enable(io)`: the ports an I/O-port capability names become accessible to
    /// the caller's process (through each CPU's TSS I/O bitmap while it runs there).
    pub const IOPORT_ENABLE: u64 = 36;
    /// `spawn(modules, args: *const ipc::SpawnArgs) -> process handle`: start a boot module.
    pub const SPAWN: u64 = 37;
    /// `process_wait(p) -> status`: blocks until the process has ended; its exit status as a
    /// 32-bit pattern (`v as u32 as i32`), so that negative statuses are not errors.
    pub const PROCESS_WAIT: u64 = 38;
    /// `process_kill(p, code)`.
    pub const PROCESS_KILL: u64 = 39;
    /// `klog_attach(klog, n, bits)`: from now on kernel log lines are queued for the caller
    /// (which owns the console) and `bits` signalled on `n` when there are some.
    pub const KLOG_ATTACH: u64 = 50;
    /// `klog_read(klog, buf, len) -> bytes`: whole queued kernel log lines.
    pub const KLOG_READ: u64 = 51;
    /// `servers_ready(modules)`: init reports its servers up; the kernel prints READY.
    pub const SERVERS_READY: u64 = 52;
    /// `ipc_stats(out: *mut [u64; 4])`: calls and replies that took the fastpath (registers
    /// handed over, a direct switch), deliveries of the generic path, of those cross-CPU, and
    /// messages delivered (both paths), over all CPUs.
    pub const IPC_STATS: u64 = 53;
    /// `thread_cap(tid) -> handle`: a capability (CONTROL, GRANT) to a thread of the caller's
    /// own process.
    pub const THREAD_CAP: u64 = 54;
    /// `thread_wait(t)`: blocks until the thread a thread capability names has ended.
    pub const THREAD_WAIT: u64 = 55;
    /// `memory_info(p, out: *mut ipc::MemoryInfo)`: the memory budget of process `p` (a
    /// process handle with CONTROL, or `ipc::NO_CAP` for the caller's own) and the kernel's
    /// totals.
    pub const MEMORY_INFO: u64 = 56;
    /// `budget_revoke(p)`: process `p` (a handle with CONTROL to a process whose budget the
    /// caller carved out of its own) gets `NoMemory` for everything from now on; what it does
    /// not use returns to the caller now, the rest as it frees it or ends.
    pub const BUDGET_REVOKE: u64 = 57;

    // ---- Benchmark calls (40..=49): the `bench` program's view of the entry paths. They are
    // answered before the dispatcher looks up the calling thread (see kernel/src/testing/bench.rs; only test builds answer them).

    /// First and last number of the benchmark block.
    pub const BENCH_FIRST: u64 = 40;
    pub const BENCH_LAST: u64 = 49;
    /// `bench_null() -> 0`: does nothing; the round trip is the entry and exit path alone.
    pub const BENCH_NULL: u64 = 40;
    /// `bench_breakpoints_resume(on)`: with `on` = 1 a #BP (INT3) of the caller's process
    /// resumes after the INT3 (counted) instead of killing the thread; 0 turns that off.
    pub const BENCH_BREAKPOINTS_RESUME: u64 = 41;
    /// `bench_self_nmi(send) -> NMIs taken`: with `send` = 1 sends an NMI to the calling CPU and
    /// waits for it; with 0 runs the same path without the send (the baseline).
    pub const BENCH_SELF_NMI: u64 = 42;
    /// `bench_fault_resume(rip)`: a user #PF of the caller's process that demand paging does not
    /// resolve resumes at `rip` (counted) instead of killing the thread; 0 turns that off.
    pub const BENCH_FAULT_RESUME: u64 = 43;
    /// `bench_counter(which) -> value`: one of the [`bench_counter`] counters.
    pub const BENCH_COUNTER: u64 = 44;
    /// `bench_watch(addr) -> kernel #DBs`: with `addr` != 0 arms a read/write watchpoint on the
    /// 2 user bytes at `addr` on the calling CPU (debug register 0), with 0 disarms it; returns
    /// how many #DB this CPU has taken in ring 0 so far. For the `mov ss` cases of the hazard
    /// suite (CVE-2018-8897: a watchpoint on `mov ss`'s operand delays its #DB into the kernel).
    /// Only the `utest` and `bench` boot modules' processes may call it (else `NoSuchCall`).
    pub const BENCH_WATCH: u64 = 45;
    /// `bench_floor(rip)`: with `rip` != 0 (a user address), the calling CPU's SYSCALL entry
    /// becomes the *floor*: a SYSCALL from 64-bit mode whose return address is `rip` comes
    /// straight back (IST: `cmp rcx`, SYSRET; FRED: the event type and RIP checked, ERETU),
    /// RAX untouched; every other event and system call goes the normal way. 0 restores the
    /// normal entry. One CPU at a time: `InvalidArgument` while another CPU holds the floor.
    /// Only the `utest` and `bench` boot modules' processes may call it (else `NoSuchCall`).
    pub const BENCH_FLOOR: u64 = 46;
    /// `bench_boot_clock(which, cpu) -> TSC`: the TSC at a boot milestone, one of
    /// [`bench_boot_clock`]; `cpu` is a CPU index for the per-CPU ones. `NotFound` for a CPU
    /// that is not online.
    pub const BENCH_BOOT_CLOCK: u64 = 47;

    /// The milestones `bench_boot_clock` reads.
    pub mod bench_boot_clock {
        /// The BSP's first instruction in the kernel (TSC counted from reset: firmware and
        /// bootloader).
        pub const KERNEL_ENTRY: u64 = 0;
        /// The BSP handing the APs their entry point.
        pub const APS_RELEASED: u64 = 1;
        /// CPU `cpu` online (the BSP: when it marked itself online).
        pub const CPU_ONLINE: u64 = 2;
        /// Just after the READY line.
        pub const READY: u64 = 3;
    }

    /// What `bench_counter` reads.
    pub mod bench_counter {
        /// Breakpoints of the caller's process resumed.
        pub const BREAKPOINTS: u64 = 0;
        /// Page faults of the caller's process resumed at the `bench_fault_resume` RIP.
        pub const FAULTS_RESUMED: u64 = 1;
        /// Page faults of the caller's process resolved by demand paging.
        pub const DEMAND_FAULTS: u64 = 2;
        /// Timer interrupts taken by the calling CPU.
        pub const TIMER_TICKS: u64 = 3;
        /// NMIs taken by the calling CPU.
        pub const NMIS: u64 = 4;
    }
}

/// The exit status of a process that ended because a fault killed its threads (and none
/// exited explicitly): this minus the exception vector (#PF: -270).
pub const FAULT_EXIT_BASE: i64 = -256;

/// How a thread ended, as `thread_wait` reports it (a non-negative RAX, so it never reads as
/// an error).
pub mod thread_exit {
    /// The thread exited: `thread_exit`, or a return from its entry function.
    pub const EXITED: u64 = 0;
    /// Bit set when an exception killed the thread; bits 39:32 hold the vector, 31:0 the
    /// error code (for a ring-3 `int n` refused by the kernel: #GP with `n * 8 + 2`).
    pub const KILLED: u64 = 1 << 48;
    /// The thread ended because its process did (`process_exit` or a kill).
    pub const PROCESS_ENDED: u64 = 1 << 49;

    pub const fn killed(vector: u8, error_code: u64) -> u64 {
        KILLED | (vector as u64) << 32 | (error_code & 0xffff_ffff)
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ThreadExit {
        Exited,
        Killed { vector: u8, error_code: u32 },
        ProcessEnded,
        Unknown(u64),
    }

    pub const fn decode(raw: u64) -> ThreadExit {
        if raw == EXITED {
            ThreadExit::Exited
        } else if raw & !0xff_ffff_ffff == KILLED {
            ThreadExit::Killed { vector: (raw >> 32) as u8, error_code: raw as u32 }
        } else if raw == PROCESS_ENDED {
            ThreadExit::ProcessEnded
        } else {
            ThreadExit::Unknown(raw)
        }
    }
}

/// Why a system call failed; returned negated in RAX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Error {
    /// Unknown system-call number.
    NoSuchCall = 1,
    /// An argument is out of range or malformed.
    InvalidArgument = 2,
    /// A user pointer is not mapped, not writable, or not in user space.
    BadAddress = 3,
    /// The kernel ran out of memory (or of a fixed table).
    NoMemory = 4,
    /// The named object (thread, CPU) does not exist.
    NotFound = 5,
    /// The handle is forged, stale or revoked, or names the wrong kind of object.
    BadHandle = 6,
    /// The capability lacks a right the operation needs.
    NoRights = 7,
    /// The other side of an IPC ended (crashed or exited) before the operation completed.
    PeerDied = 8,
    /// `reply` with no call to answer.
    NoCaller = 9,
}

impl Error {
    pub const ALL: [Error; 9] = [
        Error::NoSuchCall,
        Error::InvalidArgument,
        Error::BadAddress,
        Error::NoMemory,
        Error::NotFound,
        Error::BadHandle,
        Error::NoRights,
        Error::PeerDied,
        Error::NoCaller,
    ];

    /// The RAX value that reports this error.
    pub const fn to_raw(self) -> u64 {
        (-(self as i64)) as u64
    }

    /// Decodes a system call's RAX: `Ok(value)` or the error it reports.
    pub fn result(raw: u64) -> Result<u64, Error> {
        let signed = raw as i64;
        if signed >= 0 {
            return Ok(raw);
        }
        Err(Self::ALL.into_iter().find(|e| *e as i64 == -signed).unwrap_or(Error::InvalidArgument))
    }
}

/// Where user programs live: the lower half, below the canonical hole (47-bit addresses).
pub mod layout {
    /// User programs are linked at this address.
    pub const USER_IMAGE_BASE: u64 = 0x40_0000;
    /// One past the highest user address (the canonical lower half ends at 2^47).
    pub const USER_END: u64 = 0x0000_8000_0000_0000;
    /// The initial thread's stack ends here (grows down); `map` hands out memory below it.
    pub const USER_STACK_TOP: u64 = 0x0000_7fff_ff00_0000;
    /// Bytes of the initial thread's stack.
    pub const USER_STACK_SIZE: u64 = 64 * 1024;
    /// `map` allocates from here upwards.
    pub const USER_MAP_BASE: u64 = 0x0000_1000_0000_0000;
}

/// Capabilities: handles, rights and kinds of kernel object.
pub mod cap {
    /// Slots in a process's capability table.
    pub const SLOTS: usize = 256;

    /// A handle: slot index in bits 0..16, the slot's generation (never 0) above. Handle 0 is
    /// never valid.
    pub const fn handle(index: usize, generation: u32) -> u64 {
        (generation as u64) << 16 | index as u64
    }

    /// The handle of the `i`-th capability a new process is started with (`SpawnArgs::caps`).
    pub const fn initial(i: usize) -> u64 {
        handle(i, 1)
    }

    /// What the kernel gives the root task, init, at start.
    pub mod init_caps {
        use super::initial;
        /// Starting boot modules (`spawn`) and reporting servers up.
        pub const MODULES: u64 = initial(0);
        /// COM1's eight I/O ports (0x3f8..0x400).
        pub const COM1_PORTS: u64 = initial(1);
        /// COM1's interrupt line, ISA IRQ 4.
        pub const COM1_IRQ: u64 = initial(2);
        /// The kernel log, for whoever owns the console.
        pub const KERNEL_LOG: u64 = initial(3);
    }

    /// What a capability allows.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct Rights(pub u32);

    impl Rights {
        /// Send or call on an endpoint.
        pub const SEND: Rights = Rights(1);
        /// Receive on an endpoint.
        pub const RECV: Rights = Rights(2);
        /// Pass this capability on in a message or a spawn.
        pub const GRANT: Rights = Rights(4);
        /// Signal a notification.
        pub const SIGNAL: Rights = Rights(8);
        /// Wait on a notification.
        pub const WAIT: Rights = Rights(16);
        /// Control the object: kill or wait for a process, bind or ack an IRQ, enable I/O
        /// ports, spawn boot modules, read the kernel log.
        pub const CONTROL: Rights = Rights(32);
        pub const ALL: Rights = Rights(63);

        pub const fn empty() -> Self {
            Rights(0)
        }
        pub const fn bits(self) -> u32 {
            self.0
        }
        pub const fn contains(self, other: Rights) -> bool {
            self.0 & other.0 == other.0
        }
    }

    impl core::ops::BitOr for Rights {
        type Output = Rights;
        fn bitor(self, rhs: Rights) -> Rights {
            Rights(self.0 | rhs.0)
        }
    }

    impl core::ops::BitAnd for Rights {
        type Output = Rights;
        fn bitand(self, rhs: Rights) -> Rights {
            Rights(self.0 & rhs.0)
        }
    }

    /// Kinds of kernel object (`cap_info`'s upper half).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[repr(u32)]
    pub enum Kind {
        Endpoint = 1,
        Notification = 2,
        /// A process: its address space and threads.
        Process = 3,
        /// A range of I/O ports.
        IoPorts = 4,
        /// A device interrupt line.
        Irq = 5,
        /// The right to start boot modules (init's).
        Modules = 6,
        /// The kernel log (the console's).
        KernelLog = 7,
        /// A thread.
        Thread = 8,
    }
}

/// The message format of synchronous IPC.
///
/// A message is four words in registers (RSI, RDX, R10, R8 both ways), which is all the
/// fastpath carries, plus, through an optional [`Transfer`] block (R9), a byte buffer of up to
/// [`MAX_BUFFER`] bytes and one capability.
pub mod ipc {
    /// Largest buffer one message carries.
    pub const MAX_BUFFER: usize = 1024;
    /// "No capability" in [`Transfer`].
    pub const NO_CAP: u64 = 0;

    /// The optional part of a message, in the caller's memory.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Transfer {
        /// Bytes to send (`send_len <= MAX_BUFFER`).
        pub send_buf: u64,
        pub send_len: u64,
        /// A capability to pass (needs the GRANT right), or `NO_CAP`.
        pub send_cap: u64,
        /// The rights the receiver gets (at most the sender's).
        pub send_rights: u32,
        pub _pad: u32,
        /// Where received bytes go, and room there.
        pub recv_buf: u64,
        pub recv_cap_len: u64,
        /// Written by the kernel: bytes received (truncated to `recv_cap_len`; the excess
        /// is dropped and `recv_truncated` set), and the received capability's new handle.
        ///
        /// These three fields must be writable: `recv`, `call` and `reply_recv` clear them
        /// first and fail with `BadAddress`, before anything is sent or received, if they
        /// cannot. A receive that fails later (the receive buffer faults) has consumed the
        /// message: its bytes and capability are dropped and no handle is added.
        pub recv_len: u64,
        pub recv_cap: u64,
        pub recv_truncated: u64,
    }

    /// How `spawn` starts a boot module.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct SpawnArgs {
        /// The module's name (the file name in limine.cfg's `MODULE_PATH`).
        pub name: u64,
        pub name_len: u64,
        /// Its argument string.
        pub arg: u64,
        pub arg_len: u64,
        /// Handles of the caller's to give it (each needs GRANT); they become its handles
        /// `cap::initial(0..caps_len)`, with the same rights minus GRANT unless `keep_grant`.
        pub caps: u64,
        pub caps_len: u64,
        pub keep_grant: u64,
        /// CPU for its first thread, or `syscall::ANY_CPU`.
        pub cpu: u64,
        /// A notification (SIGNAL right) and bits to signal when the process ends, or 0.
        pub exit_notify: u64,
        pub exit_bits: u64,
        /// Bytes of memory budget to carve out of the caller's for the new process, or 0 for
        /// [`DEFAULT_BUDGET`]. Everything the process (and what it starts) makes the kernel
        /// hold is charged to it; it all returns to the caller when the process has ended.
        pub budget: u64,
    }

    /// The budget `spawn` gives when `SpawnArgs::budget` is 0.
    pub const DEFAULT_BUDGET: u64 = 4 * 1024 * 1024;

    /// What `memory_info` reports: a process's budget, in bytes and objects, and the
    /// kernel's totals at the same moment.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct MemoryInfo {
        pub pid: u64,
        pub limit: u64,
        pub used: u64,
        pub peak: u64,
        /// 1 once revoked or closed: every charge fails.
        pub closed: u64,
        /// Live objects charged: frames (pages and page tables), threads, endpoints,
        /// notifications, the process's own tables (1), budgets carved out for children,
        /// message buffers in flight (sent and not yet received, in `message_bytes` bytes).
        pub frames: u64,
        pub threads: u64,
        pub endpoints: u64,
        pub notifications: u64,
        pub tables: u64,
        pub grants: u64,
        /// Bytes handed to children (part of `used`).
        pub granted: u64,
        pub messages: u64,
        pub message_bytes: u64,
        /// The kernel: free frames, frames it keeps for reuse (pooled kernel stacks, heap
        /// grown beyond its start, the kernel half's page tables), heap bytes in use and
        /// mapped.
        pub free_frames: u64,
        pub cached_frames: u64,
        pub heap_used: u64,
        pub heap_mapped: u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_round_trips_through_rax() {
        for e in Error::ALL {
            assert_eq!(Error::result(e.to_raw()), Err(e));
        }
        assert_eq!(Error::result(42), Ok(42));
    }
}
