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
}

/// System calls: `SYSCALL` with the number in RAX and arguments in RDI, RSI, RDX, R10, R8, R9
/// (R10 instead of RCX, which SYSCALL overwrites). The result comes back in RAX: a value
/// `>= 0`, or a negated [`Error`] code. RCX and R11 are clobbered; every other register is
/// preserved.
pub mod syscall {
    /// `log(ptr, len)`: write a line of UTF-8 to the console, tagged with the caller's pid.
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
    /// `map(len) -> addr`: fresh zeroed read-write memory, `len` rounded up to pages.
    pub const MAP: u64 = 6;
    /// `unmap(addr, len)`: remove pages mapped by `map`.
    pub const UNMAP: u64 = 7;
    /// `process_exit(code) -> !`: end every thread of the caller's process.
    pub const PROCESS_EXIT: u64 = 8;
    /// `cpu_count() -> n` CPUs online.
    pub const CPU_COUNT: u64 = 9;
    /// `set_return_context(rip, rsp, rflags)`: this call returns to `rip` with `rsp` and the
    /// user-settable bits of `rflags` (like a signal return). Used to test the exit paths.
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

    // ---- Benchmark calls (40..=49): the `bench` program's view of the entry paths. They are
    // answered before the dispatcher looks up the calling thread (see kernel/src/syscall/bench.rs).

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
}

impl Error {
    pub const ALL: [Error; 5] =
        [Error::NoSuchCall, Error::InvalidArgument, Error::BadAddress, Error::NoMemory, Error::NotFound];

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
