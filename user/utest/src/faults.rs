//! `user_faults`: one thread per user-mode exception, each of which the kernel must kill (and
//! report), and a control thread that must survive them all.

use core::arch::asm;
use rt::{println, sys, thread};

/// A thread's exception: its vector, how it is raised, and the code that raises it.
struct Fault {
    name: &'static str,
    raise: fn(),
}

const FAULTS: &[Fault] = &[
    Fault {
        name: "#BP int3",
        raise: breakpoint,
    },
    Fault {
        name: "#UD ud2",
        raise: invalid_opcode,
    },
    Fault {
        name: "#GP hlt in ring 3",
        raise: privileged_instruction,
    },
    Fault {
        name: "#PF write to unmapped 0x10",
        raise: write_unmapped,
    },
    Fault {
        name: "#PF write to read-only text",
        raise: write_text,
    },
    Fault {
        name: "#DE divide by zero",
        raise: divide_by_zero,
    },
    Fault {
        name: "#AC unaligned load with RFLAGS.AC",
        raise: unaligned_load,
    },
];

/// How long the control thread waits before it reports, so the faults happen first.
const CONTROL_DELAY_MS: u64 = 100;

pub fn run() -> i32 {
    println!(
        "user_faults: {} faulting threads and one control thread",
        FAULTS.len()
    );
    for (i, fault) in FAULTS.iter().enumerate() {
        if let Err(e) = thread::spawn(faulting_thread, i, None) {
            println!("user_faults: cannot start the {} thread: {e:?}", fault.name);
        }
    }
    if let Err(e) = thread::spawn(control_thread, 0, None) {
        println!("user_faults: cannot start the control thread: {e:?}");
    }
    if let Err(e) = sys::wait_threads() {
        println!("user_faults: wait_threads failed: {e:?}");
        return 1;
    }
    println!("user_faults: all threads ended");
    0
}

fn faulting_thread(i: usize) {
    let fault = &FAULTS[i];
    let tid = sys::thread_id().unwrap_or(u64::MAX);
    println!("user_faults: thread {tid}: raising {}", fault.name);
    (fault.raise)();
    println!(
        "user_faults: thread {tid}: {} survived (expected to be killed)",
        fault.name
    );
}

fn control_thread(_: usize) {
    let _ = sys::sleep_ms(CONTROL_DELAY_MS);
    println!("control thread survived");
}

fn breakpoint() {
    // SAFETY: INT3 only traps; if the kernel resumes, execution continues after it.
    unsafe { asm!("int3", options(nomem, nostack)) };
}

fn invalid_opcode() {
    // SAFETY: UD2 only faults; nothing of the program's state is touched.
    unsafe { asm!("ud2", options(nomem, nostack)) };
}

fn privileged_instruction() {
    // SAFETY: HLT at CPL 3 raises #GP(0) (SDM vol. 2A, HLT) and changes nothing.
    unsafe { asm!("hlt", options(nomem, nostack)) };
}

fn write_unmapped() {
    // SAFETY: address 0x10 is below the image and never mapped (abi::layout), so the store
    // faults; it is in asm, so no Rust pointer to it exists.
    unsafe { asm!("mov qword ptr [{addr}], 1", addr = in(reg) 0x10u64, options(nostack)) };
}

fn write_text() {
    let code = write_text as *const () as u64;
    // SAFETY: the store writes back the byte just read from this function's own code, so
    // even if the text were (wrongly) writable, nothing would change.
    unsafe {
        asm!(
            "mov {b}, byte ptr [{addr}]",
            "mov byte ptr [{addr}], {b}",
            addr = in(reg) code,
            b = out(reg_byte) _,
            options(nostack),
        )
    };
}

fn divide_by_zero() {
    // SAFETY: DIV by a zero register raises #DE; RAX and RDX are declared clobbered.
    unsafe {
        asm!(
            "div {zero}",
            zero = in(reg) 0u64,
            inout("rax") 1u64 => _,
            inout("rdx") 0u64 => _,
            options(nomem, nostack),
        )
    };
}

fn unaligned_load() {
    let words = [0u64; 2];
    // SAFETY: the load reads bytes 1..9 of `words`, in bounds; PUSHFQ/POPFQ use the stack
    // balanced, and AC is cleared again before Rust code runs (should the load not fault).
    // With CR0.AM and RFLAGS.AC at CPL 3, a misaligned 8-byte load raises #AC (SDM vol. 3A,
    // 6.15, interrupt 17).
    unsafe {
        asm!(
            "pushfq",
            "or qword ptr [rsp], {ac}",
            "popfq",
            "mov {tmp}, qword ptr [{p} + 1]",
            "pushfq",
            "and qword ptr [rsp], {not_ac}",
            "popfq",
            p = in(reg) words.as_ptr(),
            tmp = out(reg) _,
            ac = const 1u64 << 18,
            not_ac = const !(1i64 << 18),
        )
    };
}
