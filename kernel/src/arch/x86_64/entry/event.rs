//! What an event *is*, independent of how it was delivered.
//!
//! Each backend decodes what the CPU handed it (FRED: the event type and vector in the saved SS
//! qword; the IDT: the gate it came through) into one [`Event`], and the shared handlers
//! (`handlers.rs`) match on that, never on a bare vector number. A vector means different
//! things by delivery: vector 2 delivered as an NMI is an NMI, but under FRED a ring-3 `int 2`
//! is a software interrupt with vector 2, which the IDT would have refused with #GP (its gate
//! has DPL 0). Linux makes the same cut: `fred_entry_from_user` (arch/x86/entry/entry_fred.c)
//! switches on the type first.
//!
//! Pure: builds and is tested on the host.

/// Exception vectors (SDM Vol. 3A, Table 6-1) and the vectors the kernel programs for
/// interrupts: every vector number the kernel uses is named here.
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const OF: u8 = 4;
    pub const BR: u8 = 5;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const MF: u8 = 16;
    pub const AC: u8 = 17;
    pub const MC: u8 = 18;
    pub const XM: u8 = 19;
    pub const VE: u8 = 20;
    pub const CP: u8 = 21;

    /// Vectors 0..32 are exceptions; the kernel's interrupts start here.
    pub const FIRST_INTERRUPT: u8 = 0x20;
    pub const TIMER: u8 = 0x20;
    /// The I/O APIC's ISA IRQs 0..16 arrive on `ISA_IRQ_BASE + irq`.
    pub const ISA_IRQ_BASE: u8 = 0x30;
    pub const ISA_IRQS: u8 = 16;
    /// Cross-CPU ping: the receiver answers its sender (the `ipi` scenario, liveness checks).
    pub const IPI_PING: u8 = 0xf0;
    /// Wake an idle CPU to look at its work queue.
    pub const IPI_WAKE: u8 = 0xf1;
    /// Flush this CPU's TLB entries for an address space that changed.
    pub const IPI_TLB_SHOOTDOWN: u8 = 0xf2;
    pub const APIC_ERROR: u8 = 0xfe;
    pub const SPURIOUS: u8 = 0xff;

    /// Exceptions for which the CPU pushes an error code (SDM Vol. 3A, Table 6-1): #DF, #TS,
    /// #NP, #SS, #GP, #PF, #AC, #CP, #VC, #SX.
    pub const ERROR_CODE_EXCEPTIONS: u32 =
        1 << DF | 1 << TS | 1 << NP | 1 << SS | 1 << GP | 1 << PF | 1 << AC | 1 << CP | 1 << 29 | 1 << 30;

    /// The only gate the IDT opens to ring 3 (DPL 3): `int3` and `int 3`. Every other `int n`
    /// from ring 3 is refused with #GP.
    pub const fn open_to_user(v: u8) -> bool {
        v == BP
    }
}

/// The exception names used in log lines, by vector.
pub const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow", "#BR bound range",
    "#UD invalid opcode", "#NM device not available", "#DF double fault", "coprocessor overrun",
    "#TS invalid TSS", "#NP segment not present", "#SS stack fault", "#GP general protection",
    "#PF page fault", "reserved 15", "#MF x87 error", "#AC alignment check", "#MC machine check",
    "#XM SIMD error", "#VE virtualization", "#CP control protection", "reserved 22", "reserved 23",
    "reserved 24", "reserved 25", "reserved 26", "reserved 27", "#HV hypervisor injection",
    "#VC VMM communication", "#SX security", "reserved 31",
];

/// The short name of exception `v` (`#GP`), or `interrupt`.
pub fn exception_name(v: u8) -> &'static str {
    EXCEPTION_NAMES.get(v as usize).map_or("interrupt", |n| n.split(' ').next().unwrap_or("?"))
}

/// How a system call instruction reached the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallKind {
    /// SYSCALL from 64-bit mode: the kernel's one system-call ABI.
    Syscall64,
    /// SYSCALL from compatibility mode. Intel CPUs raise #UD for it themselves; CPUs with AMD
    /// semantics (and QEMU's TCG) enter through IA32_CSTAR instead.
    SyscallCompat,
    /// SYSENTER: under FRED an event of its own (type 7, vector 2).
    Sysenter,
}

/// One event, as the shared handlers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An external or APIC interrupt (vector >= 32).
    Interrupt { vector: u8 },
    Nmi,
    /// An exception the CPU raised, with what it said about it: the error code (0 if the vector
    /// has none), and `info`: the faulting address for #PF (CR2), the DR6 bits for #DB.
    Exception { vector: u8, error_code: u64, info: u64 },
    /// `INT n` (or INTO, or INT3 from compatibility mode's view) executed in ring 3, delivered
    /// as a software interrupt. Only FRED delivers this kind: it has no gate DPL check, so the
    /// shared handler applies the IDT's rule (`vector::open_to_user`).
    SoftwareInterrupt { vector: u8 },
    /// INT1 (ICEBP, F1): a #DB that no debug register caused.
    Int1,
    /// INT3 (CC), or `int 3` through the gate open to ring 3.
    Int3,
    /// A system-call instruction.
    Syscall(SyscallKind),
    /// The return to user space (IRET or ERETU) faulted in ring 0 on an impossible context the
    /// thread asked for; `rip` is the RIP it asked to return to.
    BadUserReturn { error_code: u64, rip: u64 },
    /// A delivery the kernel never expects (an unknown FRED event type, a software event from
    /// ring 0, ...): from ring 3 it kills the thread, from ring 0 it is fatal.
    Unexpected { event_type: u8, vector: u8 },
}

impl Event {
    /// The vector to name in a log line.
    pub fn vector(&self) -> u8 {
        match *self {
            Event::Interrupt { vector } | Event::Exception { vector, .. } | Event::SoftwareInterrupt { vector } => vector,
            Event::Unexpected { vector, .. } => vector,
            Event::Nmi => vector::NMI,
            Event::Int1 => vector::DB,
            Event::Int3 => vector::BP,
            Event::Syscall(_) => 0,
            Event::BadUserReturn { .. } => vector::GP,
        }
    }
}

/// What a ring-3 `INT n` through a gate closed to ring 3 raises: #GP with the error code that
/// names the IDT entry (SDM Vol. 3A §6.13: index * 8, plus 2 for "IDT").
pub const fn int_n_error_code(n: u8) -> u64 {
    (n as u64) * 8 + 2
}

/// The IDT backend's decode: the gate says what arrived. Vectors below 32 are exceptions
/// (except the NMI's); ring 3 can only reach gate 3 by software (`int3`, `int 3`), since every
/// other gate has DPL 0. `info` is CR2 or DR6 where they apply, read by the caller.
pub fn decode_idt(vector: u8, error_code: u64, from_user: bool, info: u64) -> Event {
    match vector {
        vector::NMI => Event::Nmi,
        vector::BP if from_user => Event::Int3,
        v if v < vector::FIRST_INTERRUPT => Event::Exception { vector: v, error_code, info },
        v => Event::Interrupt { vector: v },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_n_error_code_names_the_idt_entry() {
        assert_eq!(int_n_error_code(0x80), 0x402);
        assert_eq!(int_n_error_code(8), 0x42);
        assert_eq!(int_n_error_code(255), 0x7fa);
    }

    #[test]
    fn idt_gate_two_is_always_an_nmi() {
        // A ring-3 `int 2` cannot reach gate 2 (DPL 0: #GP instead), so what arrives there is
        // the NMI.
        assert_eq!(decode_idt(2, 0, false, 0), Event::Nmi);
        assert_eq!(decode_idt(2, 0, true, 0), Event::Nmi);
    }

    #[test]
    fn idt_breakpoint_from_user_is_int3_from_kernel_an_exception() {
        assert_eq!(decode_idt(3, 0, true, 0), Event::Int3);
        assert_eq!(decode_idt(3, 0, false, 0), Event::Exception { vector: 3, error_code: 0, info: 0 });
    }

    #[test]
    fn idt_exceptions_keep_error_code_and_info() {
        assert_eq!(decode_idt(14, 6, true, 0x1234), Event::Exception { vector: 14, error_code: 6, info: 0x1234 });
        assert_eq!(decode_idt(8, 0, false, 0), Event::Exception { vector: 8, error_code: 0, info: 0 });
    }

    #[test]
    fn idt_vectors_from_32_are_interrupts() {
        for v in 32..=255u8 {
            assert_eq!(decode_idt(v, 0, true, 0), Event::Interrupt { vector: v });
        }
    }

    #[test]
    fn only_the_breakpoint_gate_is_open_to_user() {
        let open: Vec<u8> = (0..=255u8).filter(|&v| vector::open_to_user(v)).collect();
        assert_eq!(open, [3]);
    }

    #[test]
    fn exception_names_are_short_names() {
        assert_eq!(exception_name(13), "#GP");
        assert_eq!(exception_name(2), "NMI");
        assert_eq!(exception_name(0x80), "interrupt");
    }
}
