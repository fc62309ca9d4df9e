//! Threads of this process, each on its own stack from `map` with an unmapped guard page
//! below it, so an overflow faults instead of running into other memory.
//!
//! A thread ends by returning from its function: it then unmaps its stack and exits without
//! touching memory. (The guard stays a hole in the address space; whether a later `map` may
//! reuse it is the kernel's choice.)

use crate::sys::{self, raw};
use crate::PAGE_SIZE;
use abi::syscall::{ANY_CPU, THREAD_CREATE, THREAD_EXIT, UNMAP};
use abi::Error;
use core::arch::{asm, naked_asm};
use core::mem::size_of;

/// Bytes of each spawned thread's stack (the guard page comes on top).
pub const STACK_SIZE: usize = 64 * 1024;
const GUARD_SIZE: usize = PAGE_SIZE;

/// What the new thread needs, written at the top of its own stack; RDI points to it.
#[repr(C)]
struct StartBlock {
    f: fn(usize),
    arg: usize,
    stack_low: usize,
    stack_len: usize,
}

/// Starts `f(arg)` in a new thread of this process, on CPU `cpu` (pinned there) or wherever
/// the kernel likes with `None`. Returns the new thread's id.
pub fn spawn(f: fn(usize), arg: usize, cpu: Option<usize>) -> Result<u64, Error> {
    let region = sys::map(GUARD_SIZE + STACK_SIZE)?;
    // SAFETY: the region is fresh and nothing refers to its first page.
    if let Err(e) = unsafe { sys::unmap(region, GUARD_SIZE) } {
        // SAFETY: nothing refers to any of the region yet.
        let _ = unsafe { sys::unmap(region, GUARD_SIZE + STACK_SIZE) };
        return Err(e);
    }
    let stack_low = region as usize + GUARD_SIZE;
    // The block sits at the top; the thread's RSP starts just below it, 16-byte aligned.
    let block = (stack_low + STACK_SIZE - size_of::<StartBlock>()) & !15;
    // SAFETY: `block` is aligned and inside the stack we just mapped, which only we know of.
    unsafe {
        (block as *mut StartBlock).write(StartBlock {
            f,
            arg,
            stack_low,
            stack_len: STACK_SIZE,
        })
    };
    let cpu = cpu.map_or(ANY_CPU, |c| c as u64);
    // SAFETY: the new thread starts in `thread_entry` on a stack that belongs to it alone.
    let created = Error::result(unsafe {
        raw::syscall4(
            THREAD_CREATE,
            thread_entry as *const () as u64,
            block as u64,
            block as u64,
            cpu,
        )
    });
    if created.is_err() {
        // SAFETY: no thread was created, so no one uses the stack.
        let _ = unsafe { sys::unmap(stack_low as *mut u8, STACK_SIZE) };
    }
    created
}

/// Where a spawned thread starts: RSP = its 16-aligned stack top, RDI = its `StartBlock`, no
/// return address.
#[unsafe(naked)]
unsafe extern "C" fn thread_entry() -> ! {
    // SAFETY: entered only by the kernel for threads `spawn` created (RSP 16-aligned, RDI the
    // StartBlock). RBP = 0 ends the frame-pointer chain; the CALL makes RSP 8 mod 16 at `thread_main`'s
    // entry, as the SysV ABI requires; RDI passes through as its argument.
    naked_asm!(
        "xor ebp, ebp",
        "call {thread_main}",
        "ud2",
        thread_main = sym thread_main,
    )
}

extern "C" fn thread_main(block: *const StartBlock) -> ! {
    // SAFETY: `spawn` wrote the block before creating this thread and never touches it again.
    let StartBlock {
        f,
        arg,
        stack_low,
        stack_len,
    } = unsafe { block.read() };
    f(arg);
    // SAFETY: `f` has returned, so no frame of this thread refers to its stack any more.
    unsafe { exit_freeing_stack(stack_low, stack_len) }
}

/// Unmaps this thread's own stack, then exits, using registers only in between.
///
/// # Safety
/// `low..low + len` is the calling thread's stack and nothing will refer to it again.
unsafe fn exit_freeing_stack(low: usize, len: usize) -> ! {
    // SAFETY: between the SYSCALLs nothing reads or writes the stack; an interrupt in
    // between is taken on the kernel stack (TSS.RSP0), never on the user RSP. UNMAP may stop
    // early and return the bytes done (RDI and RSI survive SYSCALL): go on from there. An
    // error cannot be reported without a stack and only leaks the pages.
    unsafe {
        asm!(
            "2:",
            "mov eax, {unmap}",
            "syscall",
            "test rax, rax",
            "jle 3f",
            "add rdi, rax",
            "sub rsi, rax",
            "ja 2b",
            "3:",
            "mov eax, {thread_exit}",
            "xor edi, edi",
            "syscall",
            "ud2",
            unmap = const UNMAP,
            thread_exit = const THREAD_EXIT,
            in("rdi") low,
            in("rsi") len,
            options(noreturn, nostack),
        )
    }
}
