//! System calls (`abi::syscall`): a raw layer that executes SYSCALL, and one typed wrapper per
//! call. Number in RAX, arguments in RDI, RSI, RDX, R10; the result in RAX, a negated
//! [`Error`] when it failed. SYSCALL itself overwrites RCX (return RIP) and R11 (RFLAGS); the
//! kernel preserves every other register, so the raw calls declare only those two clobbered.

use abi::syscall as nr;
use abi::Error;
use core::arch::asm;

/// Raw system calls. They return RAX as it came back; decode it with [`Error::result`].
pub mod raw {
    use core::arch::asm;

    /// # Safety
    /// `nr` with no arguments must not break an invariant of this program (it is a number
    /// whose call neither frees memory nor redirects control flow).
    #[inline(always)]
    pub unsafe fn syscall0(nr: u64) -> u64 {
        let rax;
        // SAFETY: SYSCALL writes only RAX, RCX and R11 (abi::syscall) and never the user
        // stack; the caller vouches for what call `nr` does.
        unsafe {
            asm!("syscall", inlateout("rax") nr => rax, lateout("rcx") _, lateout("r11") _,
                 options(nostack));
        }
        rax
    }

    /// # Safety
    /// As [`syscall0`]; pointer arguments must be valid for what call `nr` does with them.
    #[inline(always)]
    pub unsafe fn syscall1(nr: u64, a0: u64) -> u64 {
        let rax;
        // SAFETY: as in `syscall0`.
        unsafe {
            asm!("syscall", inlateout("rax") nr => rax, in("rdi") a0,
                 lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        rax
    }

    /// # Safety
    /// As [`syscall1`].
    #[inline(always)]
    pub unsafe fn syscall2(nr: u64, a0: u64, a1: u64) -> u64 {
        let rax;
        // SAFETY: as in `syscall0`.
        unsafe {
            asm!("syscall", inlateout("rax") nr => rax, in("rdi") a0, in("rsi") a1,
                 lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        rax
    }

    /// # Safety
    /// As [`syscall1`].
    #[inline(always)]
    pub unsafe fn syscall4(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> u64 {
        let rax;
        // SAFETY: as in `syscall0`.
        unsafe {
            asm!("syscall", inlateout("rax") nr => rax, in("rdi") a0, in("rsi") a1,
                 in("rdx") a2, in("r10") a3, lateout("rcx") _, lateout("r11") _,
                 options(nostack));
        }
        rax
    }
}

/// Writes one line to the console; the kernel tags it with the caller's pid.
pub fn log(line: &str) -> Result<(), Error> {
    // SAFETY: the kernel only reads `line.len()` bytes at `line.as_ptr()`, which the borrow
    // keeps valid for the call.
    Error::result(unsafe { raw::syscall2(nr::LOG, line.as_ptr() as u64, line.len() as u64) })
        .map(drop)
}

/// Gives the CPU to another ready thread.
pub fn yield_now() -> Result<(), Error> {
    // SAFETY: YIELD touches no memory of ours.
    Error::result(unsafe { raw::syscall0(nr::YIELD) }).map(drop)
}

/// Blocks the calling thread for at least `ms` milliseconds.
pub fn sleep_ms(ms: u64) -> Result<(), Error> {
    // SAFETY: SLEEP touches no memory of ours.
    Error::result(unsafe { raw::syscall1(nr::SLEEP, ms) }).map(drop)
}

/// Ends the calling thread. A thread made by [`crate::thread::spawn`] should rather return
/// from its function, which also frees its stack.
pub fn thread_exit(code: i32) -> ! {
    // SAFETY: THREAD_EXIT does not return, so nothing after it can observe this thread.
    unsafe {
        asm!("syscall", in("rax") nr::THREAD_EXIT, in("rdi") code as i64 as u64,
             options(noreturn, nostack));
    }
}

/// Ends every thread of this process.
pub fn process_exit(code: i32) -> ! {
    // SAFETY: PROCESS_EXIT does not return.
    unsafe {
        asm!("syscall", in("rax") nr::PROCESS_EXIT, in("rdi") code as i64 as u64,
             options(noreturn, nostack));
    }
}

/// The index of the CPU running the caller (which may change right after, unless pinned).
pub fn cpu_id() -> Result<usize, Error> {
    // SAFETY: CPU_ID touches no memory of ours.
    Error::result(unsafe { raw::syscall0(nr::CPU_ID) }).map(|v| v as usize)
}

/// How many CPUs are online; they are numbered `0..cpu_count()`.
pub fn cpu_count() -> Result<usize, Error> {
    // SAFETY: CPU_COUNT touches no memory of ours.
    Error::result(unsafe { raw::syscall0(nr::CPU_COUNT) }).map(|v| v as usize)
}

/// The caller's thread id.
pub fn thread_id() -> Result<u64, Error> {
    // SAFETY: THREAD_ID touches no memory of ours.
    Error::result(unsafe { raw::syscall0(nr::THREAD_ID) })
}

/// Blocks until every other thread of this process has ended.
pub fn wait_threads() -> Result<(), Error> {
    // SAFETY: WAIT_THREADS touches no memory of ours.
    Error::result(unsafe { raw::syscall0(nr::WAIT_THREADS) }).map(drop)
}

/// Fresh zeroed read-write memory of `len` bytes rounded up to pages, at a page-aligned
/// address no other mapping of this process overlaps.
pub fn map(len: usize) -> Result<*mut u8, Error> {
    // SAFETY: MAP only adds memory; nothing we reference changes.
    Error::result(unsafe { raw::syscall1(nr::MAP, len as u64) }).map(|a| a as *mut u8)
}

/// Removes the pages of `addr..addr + len` (page-aligned, from [`map`]). The kernel does a
/// bounded amount of work per call and says how far it got; this repeats the call until the
/// whole range is done.
///
/// # Safety
/// Nothing may use those pages afterwards: no reference, no stack, no heap block in them.
pub unsafe fn unmap(addr: *mut u8, len: usize) -> Result<(), Error> {
    let rounded = (len as u64).checked_next_multiple_of(crate::PAGE_SIZE as u64);
    let (mut at, mut left) = (addr as u64, rounded.ok_or(Error::InvalidArgument)?);
    while left > 0 {
        // SAFETY: the caller guarantees the pages are no longer used.
        let done = Error::result(unsafe { unmap_step(at as *mut u8, left as usize) })?;
        if done == 0 || done > left {
            return Err(Error::InvalidArgument);
        }
        at += done;
        left -= done;
    }
    Ok(())
}

/// One `unmap` system call: the raw result, the bytes done from `addr` or an error.
///
/// # Safety
/// As [`unmap`].
pub unsafe fn unmap_step(addr: *mut u8, len: usize) -> u64 {
    // SAFETY: the caller guarantees the pages are no longer used.
    unsafe { raw::syscall2(nr::UNMAP, addr as u64, len as u64) }
}

/// How threads have left the kernel since boot, summed over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitPathCounts {
    /// Returns by SYSRET (the fast path).
    pub sysret: u64,
    /// Returns by IRET (a context SYSRET cannot restore safely).
    pub iret: u64,
    /// Threads killed because their IRET frame was bad (e.g. a non-canonical RIP).
    pub bad_iret_kills: u64,
}

/// Reads the kernel's exit-path counters (`exit_path_counts(out: *mut [u64; 3])`).
pub fn exit_path_counts() -> Result<ExitPathCounts, Error> {
    let mut out = [0u64; 3];
    // SAFETY: the kernel writes exactly three u64 to `out`, a live, writable local.
    Error::result(unsafe { raw::syscall1(nr::EXIT_PATH_COUNTS, out.as_mut_ptr() as u64) })?;
    let [sysret, iret, bad_iret_kills] = out;
    Ok(ExitPathCounts {
        sysret,
        iret,
        bad_iret_kills,
    })
}

/// `set_return_context(rip, rsp, rflags)`: the kernel returns from this call to `rip` with
/// `rsp` and the user-settable bits of `rflags`, like a signal return. Every other register
/// is kept, except RAX (the result) and RCX, R11. If the call fails it returns here normally
/// with the error.
///
/// # Safety
/// `rip` and `rsp` must form a valid continuation of this thread (see `utest`'s `sysret`
/// scenario for the pattern: a label in the same `asm!` block, and the current RSP); or the
/// thread must expect to be killed (a non-canonical `rip`).
pub unsafe fn set_return_context(rip: u64, rsp: u64, rflags: u64) -> Result<u64, Error> {
    let rax;
    // SAFETY: the caller guarantees the new context continues this thread correctly; since
    // control may come back through another path, every caller-saved register is declared
    // clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") nr::SET_RETURN_CONTEXT => rax, in("rdi") rip,
             in("rsi") rsp, in("rdx") rflags, clobber_abi("C"));
    }
    Error::result(rax)
}
