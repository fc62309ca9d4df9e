//! The FRED backend's decode: from the saved SS qword's event type and vector (FRED spec
//! 346446 §5.1.1, Linux `struct fred_ss` in arch/x86/include/asm/fred.h) to an [`Event`].
//!
//! FRED has no gate DPL check, so the type decides: a software interrupt with vector 2 is a
//! ring-3 `int 2`, not an NMI, and must never reach the NMI handler. Pure: host-tested.

use crate::arch::x86_64::entry::event::{vector, Event, SyscallKind};

/// Event types, the saved SS qword's bits 51:48.
pub mod event_type {
    pub const EXTERNAL_INTERRUPT: u8 = 0;
    pub const NMI: u8 = 2;
    pub const HARDWARE_EXCEPTION: u8 = 3;
    /// `INT n` (CD ib).
    pub const SOFTWARE_INTERRUPT: u8 = 4;
    /// INT1 (ICEBP, F1).
    pub const PRIVILEGED_SOFTWARE_EXCEPTION: u8 = 5;
    /// INT3 (CC) and INTO (CE).
    pub const SOFTWARE_EXCEPTION: u8 = 6;
    /// SYSCALL (vector 1) and SYSENTER (vector 2).
    pub const OTHER: u8 = 7;
}

/// Vectors of `OTHER` events.
pub const OTHER_SYSCALL: u8 = 1;
pub const OTHER_SYSENTER: u8 = 2;

/// The saved SS qword's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedSs(pub u64);

impl SavedSs {
    pub fn event_type(self) -> u8 {
        ((self.0 >> 48) & 0xf) as u8
    }
    pub fn vector(self) -> u8 {
        (self.0 >> 32) as u8
    }
    /// Bit 57: the event happened in 64-bit mode (clear in compatibility mode).
    pub fn long_mode(self) -> bool {
        self.0 & (1 << 57) != 0
    }
    /// SYSCALL from 64-bit mode: what `decode` calls `Syscall(Syscall64)`, in one compare.
    #[inline(always)]
    pub fn is_syscall64(self) -> bool {
        const MASK: u64 = 0xf << 48 | 0xff << 32 | 1 << 57;
        self.0 & MASK == SavedSs::new(event_type::OTHER, OTHER_SYSCALL, true).0
    }
    /// A page fault (a hardware exception with vector 14, whatever the mode): what `decode`
    /// calls `Exception { vector: PF, .. }`, in one compare.
    #[inline(always)]
    pub fn is_page_fault(self) -> bool {
        const MASK: u64 = 0xf << 48 | 0xff << 32;
        self.0 & MASK == SavedSs::new(event_type::HARDWARE_EXCEPTION, vector::PF, false).0
    }
    pub const fn new(event_type: u8, vector: u8, long_mode: bool) -> SavedSs {
        SavedSs((event_type as u64) << 48 | (vector as u64) << 32 | (long_mode as u64) << 57)
    }
}

/// Decodes one delivery. `event_data` is the qword FRED saved above the frame (CR2 for #PF,
/// DR6-style bits for #DB, 0 otherwise).
pub fn decode(ss: SavedSs, error_code: u64, event_data: u64) -> Event {
    use event_type::*;
    let (t, v) = (ss.event_type(), ss.vector());
    match (t, v) {
        (EXTERNAL_INTERRUPT, v) if v >= vector::FIRST_INTERRUPT => Event::Interrupt { vector: v },
        (NMI, vector::NMI) => Event::Nmi,
        // The CPU pushes an error code only for the vectors that have one; keep the slot
        // honest for the others anyway.
        (HARDWARE_EXCEPTION, v) if v < vector::FIRST_INTERRUPT && v != vector::NMI => {
            let error_code = if vector::ERROR_CODE_EXCEPTIONS & (1 << v) != 0 { error_code } else { 0 };
            let info = match v {
                vector::PF | vector::DB => event_data,
                _ => 0,
            };
            Event::Exception { vector: v, error_code, info }
        }
        (SOFTWARE_INTERRUPT, v) => Event::SoftwareInterrupt { vector: v },
        (PRIVILEGED_SOFTWARE_EXCEPTION, vector::DB) => Event::Int1,
        (SOFTWARE_EXCEPTION, vector::BP) => Event::Int3,
        // INTO (compatibility mode only): through the IDT its gate is closed to ring 3.
        (SOFTWARE_EXCEPTION, vector::OF) => Event::SoftwareInterrupt { vector: vector::OF },
        (OTHER, OTHER_SYSCALL) if ss.long_mode() => Event::Syscall(SyscallKind::Syscall64),
        (OTHER, OTHER_SYSCALL) => Event::Syscall(SyscallKind::SyscallCompat),
        (OTHER, OTHER_SYSENTER) => Event::Syscall(SyscallKind::Sysenter),
        (t, v) => Event::Unexpected { event_type: t, vector: v },
    }
}

#[cfg(test)]
mod tests {
    use super::event_type::*;
    use super::*;

    fn dec(t: u8, v: u8) -> Event {
        decode(SavedSs::new(t, v, true), 0x55, 0x1000)
    }

    #[test]
    fn int_n_from_ring_3_is_a_software_interrupt_for_every_vector() {
        // The bug this module exists for: `int 2`, `int 8`, `int 18` must not look like an NMI,
        // a #DF or a #MC.
        for v in 0..=255u8 {
            assert_eq!(dec(SOFTWARE_INTERRUPT, v), Event::SoftwareInterrupt { vector: v });
        }
    }

    #[test]
    fn the_shortcuts_agree_with_the_full_decode() {
        for t in 0..16u8 {
            for v in 0..=255u8 {
                for long_mode in [false, true] {
                    let ss = SavedSs::new(t, v, long_mode);
                    let full = decode(ss, 0x55, 0x1000);
                    assert_eq!(ss.is_syscall64(), full == Event::Syscall(SyscallKind::Syscall64), "type {t} vector {v}");
                    assert_eq!(
                        ss.is_page_fault(),
                        full == Event::Exception { vector: vector::PF, error_code: 0x55, info: 0x1000 },
                        "type {t} vector {v}"
                    );
                }
            }
        }
        // Bits outside the type and vector (the stack level, the selector) do not matter.
        assert!(SavedSs(SavedSs::new(HARDWARE_EXCEPTION, 14, true).0 | 0x2b | 3 << 52).is_page_fault());
    }

    #[test]
    fn only_the_nmi_type_with_vector_2_is_an_nmi() {
        assert_eq!(dec(NMI, 2), Event::Nmi);
        assert_eq!(dec(NMI, 3), Event::Unexpected { event_type: NMI, vector: 3 });
        assert_eq!(dec(HARDWARE_EXCEPTION, 2), Event::Unexpected { event_type: HARDWARE_EXCEPTION, vector: 2 });
        for t in 0..16u8 {
            if t != NMI {
                assert_ne!(dec(t, 2), Event::Nmi, "type {t}");
            }
        }
    }

    #[test]
    fn hardware_exceptions_carry_error_code_and_event_data() {
        assert_eq!(dec(HARDWARE_EXCEPTION, 14), Event::Exception { vector: 14, error_code: 0x55, info: 0x1000 });
        assert_eq!(dec(HARDWARE_EXCEPTION, 1), Event::Exception { vector: 1, error_code: 0, info: 0x1000 });
        assert_eq!(dec(HARDWARE_EXCEPTION, 13), Event::Exception { vector: 13, error_code: 0x55, info: 0 });
        // #UD has no error code: whatever the slot held is not reported.
        assert_eq!(dec(HARDWARE_EXCEPTION, 6), Event::Exception { vector: 6, error_code: 0, info: 0 });
    }

    #[test]
    fn hardware_exception_type_with_an_interrupt_vector_is_unexpected() {
        assert_eq!(dec(HARDWARE_EXCEPTION, 0x20), Event::Unexpected { event_type: HARDWARE_EXCEPTION, vector: 0x20 });
    }

    #[test]
    fn external_interrupts_below_32_are_unexpected() {
        assert_eq!(dec(EXTERNAL_INTERRUPT, 0x20), Event::Interrupt { vector: 0x20 });
        assert_eq!(dec(EXTERNAL_INTERRUPT, 8), Event::Unexpected { event_type: EXTERNAL_INTERRUPT, vector: 8 });
    }

    #[test]
    fn icebp_int3_into_decode_by_type() {
        assert_eq!(dec(PRIVILEGED_SOFTWARE_EXCEPTION, 1), Event::Int1);
        assert_eq!(dec(SOFTWARE_EXCEPTION, 3), Event::Int3);
        assert_eq!(dec(SOFTWARE_EXCEPTION, 4), Event::SoftwareInterrupt { vector: 4 });
        assert_eq!(dec(PRIVILEGED_SOFTWARE_EXCEPTION, 3), Event::Unexpected { event_type: 5, vector: 3 });
        assert_eq!(dec(SOFTWARE_EXCEPTION, 1), Event::Unexpected { event_type: 6, vector: 1 });
    }

    #[test]
    fn syscall_from_compatibility_mode_is_told_apart() {
        assert_eq!(decode(SavedSs::new(OTHER, 1, true), 0, 0), Event::Syscall(SyscallKind::Syscall64));
        assert_eq!(decode(SavedSs::new(OTHER, 1, false), 0, 0), Event::Syscall(SyscallKind::SyscallCompat));
        assert_eq!(decode(SavedSs::new(OTHER, 2, true), 0, 0), Event::Syscall(SyscallKind::Sysenter));
        assert_eq!(decode(SavedSs::new(OTHER, 3, true), 0, 0), Event::Unexpected { event_type: OTHER, vector: 3 });
    }

    #[test]
    fn the_syscall_shortcut_agrees_with_decode() {
        for t in 0..16u8 {
            for v in 0..=255u8 {
                for lm in [false, true] {
                    let ss = SavedSs(SavedSs::new(t, v, lm).0 | 0x1_0033 | 0xf << 60);
                    assert_eq!(ss.is_syscall64(), decode(ss, 0, 0) == Event::Syscall(SyscallKind::Syscall64), "type {t} vector {v} lm {lm}");
                }
            }
        }
    }

    #[test]
    fn reserved_types_are_unexpected() {
        for t in [1u8, 8, 9, 15] {
            assert_eq!(dec(t, 14), Event::Unexpected { event_type: t, vector: 14 });
        }
    }

    #[test]
    fn saved_ss_fields_match_a_real_frame() {
        // An int3 from ring 0 on Bochs saved this SS qword (EMULATORS.md).
        let ss = SavedSs(0x1206_0003_0000_0030);
        assert_eq!((ss.event_type(), ss.vector(), ss.long_mode()), (6, 3, true));
    }
}
