//! The only way the kernel touches user memory: copies that check the range is user space,
//! open SMAP for exactly the copy, and turn a fault into an error instead of a kernel crash.

use abi::layout::USER_END;
use abi::Error;
use core::sync::atomic::{AtomicBool, Ordering};

static SMAP: AtomicBool = AtomicBool::new(false);

/// Records whether STAC/CLAC exist (they raise #UD without SMAP).
pub fn init(smap: bool) {
    SMAP.store(smap, Ordering::Relaxed);
}

// user_copy(dst, src, len) -> bytes not copied (0 = success). A fault on either side stops
// the copy; the fixup returns what is left in RCX.
// SAFETY: `kernel_user_copy` is called only by `copy` after the range check; a fault on either
// side of `rep movsb` resumes at the fixup with RCX = bytes not copied, nothing else changed.
core::arch::global_asm!(
    ".pushsection .text.user_copy, \"ax\"",
    ".global kernel_user_copy",
    "kernel_user_copy:",
    "    mov rcx, rdx",
    "1:  rep movsb",
    "2:  mov rax, rcx",
    "    ret",
    ".pushsection .extable, \"a\"",
    ".balign 8",
    ".quad 1b, 2b",
    ".popsection",
    ".popsection",
);

extern "C" {
    fn kernel_user_copy(dst: *mut u8, src: *const u8, len: usize) -> usize;
}

/// Closes the SMAP window on kernel entry. Interrupt and exception delivery keep RFLAGS.AC as
/// the interrupted code had it (only SYSCALL clears it, through SFMASK), and ring 3 may set AC
/// with POPF: without this, the handler, and any thread it switches to, would run with user
/// memory accessible.
pub fn clac_on_entry() {
    if SMAP.load(Ordering::Relaxed) {
        // SAFETY: CLAC exists when SMAP does; it only makes user pages inaccessible again.
        unsafe { core::arch::asm!("clac", options(nomem, nostack)) };
    }
}

/// `[addr, addr+len)` lies entirely in user space.
pub fn is_user_range(addr: u64, len: usize) -> bool {
    addr.checked_add(len as u64).is_some_and(|end| end <= USER_END)
}

fn copy(dst: *mut u8, src: *const u8, len: usize) -> Result<(), Error> {
    let smap = SMAP.load(Ordering::Relaxed);
    // SAFETY: STAC opens user access for the copy only (SMAP); the copy itself may fault only
    // on the user side, which the caller range-checked, and the fixup ends it cleanly.
    let left = unsafe {
        if smap {
            core::arch::asm!("stac", options(nomem, nostack));
        }
        let left = kernel_user_copy(dst, src, len);
        if smap {
            core::arch::asm!("clac", options(nomem, nostack));
        }
        left
    };
    if left == 0 { Ok(()) } else { Err(Error::BadAddress) }
}

/// Copies `dst.len()` bytes from user address `src`.
pub fn copy_from_user(dst: &mut [u8], src: u64) -> Result<(), Error> {
    if !is_user_range(src, dst.len()) {
        return Err(Error::BadAddress);
    }
    copy(dst.as_mut_ptr(), src as *const u8, dst.len())
}

/// Copies `src` to user address `dst`.
pub fn copy_to_user(dst: u64, src: &[u8]) -> Result<(), Error> {
    if !is_user_range(dst, src.len()) {
        return Err(Error::BadAddress);
    }
    copy(dst as *mut u8, src.as_ptr(), src.len())
}
