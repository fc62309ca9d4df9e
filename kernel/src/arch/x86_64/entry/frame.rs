//! The one trap frame every handler sees, whatever the entry backend.
//!
//! Layout, from the lowest address: the general registers the entry code pushes, the vector
//! and error code (pushed by the stub, or by hardware for the error code), then the frame the
//! CPU pushed on delivery. The assembly reads offsets from here through `offset_of!`.

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    // Pushed by the CPU on event delivery (SDM Vol. 3A §6.14.2).
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Size of the general-register part the entry code pushes (everything below `vector`).
pub const GPR_BYTES: usize = core::mem::offset_of!(TrapFrame, vector);
const _: () = assert!(GPR_BYTES == 15 * 8);
/// The whole frame is a multiple of 16 bytes, so the stack stays ABI-aligned for the handler
/// (the CPU aligns RSP to 16 before pushing its frame in 64-bit mode).
const _: () = assert!(core::mem::size_of::<TrapFrame>() % 16 == 0);

impl TrapFrame {
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}
