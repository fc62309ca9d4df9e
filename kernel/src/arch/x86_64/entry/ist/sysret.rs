//! The opportunistic-SYSRET decision (seed 001): one pure function says whether a return to
//! user space may use SYSRET, or must use IRET.
//!
//! SYSRET restores RIP from RCX and RFLAGS from R11 and loads fixed CS/SS, so it is only the
//! same as IRET when the frame already says exactly that. Each condition below guards a known
//! hazard:
//! - RCX == RIP and R11 == RFLAGS: otherwise SYSRET would return somewhere else.
//! - RIP canonical: on Intel CPUs, SYSRET with a non-canonical RCX raises #GP *in ring 0 with
//!   the user's RSP* (CVE-2012-0217); IRET faults safely instead.
//! - RF and TF clear: SYSRET cannot restore RF, and restoring TF through SYSRET traps right
//!   after the return, which loops forever on a single-stepped SYSCALL (seed 001).
//! - CS and SS are the selectors SYSRET loads, or the frame was changed to another mode.

/// The user half ends at 2^47 with 4-level paging: a RIP at or above it is not canonical in
/// the lower half. Linux checks the same width (`__VIRTUAL_MASK_SHIFT`).
pub const USER_ADDRESS_BITS: u32 = 47;

pub const RFLAGS_TF: u64 = 1 << 8;
pub const RFLAGS_RF: u64 = 1 << 16;

/// What the exit decision looks at: the saved user context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReturnContext {
    pub rip: u64,
    pub rcx: u64,
    pub rflags: u64,
    pub r11: u64,
    pub cs: u64,
    pub ss: u64,
}

/// Why SYSRET was refused, for counters and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IretReason {
    RcxNotRip,
    R11NotRflags,
    NonCanonicalRip,
    TrapOrResumeFlag,
    NotSysretSelectors,
}

/// `Ok(())` when SYSRET returns to exactly the context in `ctx`.
pub fn sysret_allowed(ctx: &ReturnContext, user_cs: u64, user_ss: u64) -> Result<(), IretReason> {
    if ctx.rcx != ctx.rip {
        return Err(IretReason::RcxNotRip);
    }
    if ctx.r11 != ctx.rflags {
        return Err(IretReason::R11NotRflags);
    }
    if ctx.rip >> USER_ADDRESS_BITS != 0 {
        return Err(IretReason::NonCanonicalRip);
    }
    if ctx.rflags & (RFLAGS_TF | RFLAGS_RF) != 0 {
        return Err(IretReason::TrapOrResumeFlag);
    }
    if ctx.cs != user_cs || ctx.ss != user_ss {
        return Err(IretReason::NotSysretSelectors);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: u64 = 0x2b;
    const SS: u64 = 0x23;

    fn clean() -> ReturnContext {
        ReturnContext { rip: 0x40_1000, rcx: 0x40_1000, rflags: 0x202, r11: 0x202, cs: CS, ss: SS }
    }

    #[test]
    fn clean_syscall_return_takes_sysret() {
        assert_eq!(sysret_allowed(&clean(), CS, SS), Ok(()));
    }

    #[test]
    fn sysret_rcx_not_rip_takes_iret() {
        let c = ReturnContext { rip: 0x40_2000, ..clean() };
        assert_eq!(sysret_allowed(&c, CS, SS), Err(IretReason::RcxNotRip));
    }

    #[test]
    fn sysret_r11_not_rflags_takes_iret() {
        let c = ReturnContext { r11: 0x246, ..clean() };
        assert_eq!(sysret_allowed(&c, CS, SS), Err(IretReason::R11NotRflags));
    }

    #[test]
    fn sysret_noncanonical_rcx_takes_iret() {
        for rip in [1 << 47, 0x0000_8000_0000_1000, 0xffff_8000_0000_0000, u64::MAX] {
            let c = ReturnContext { rip, rcx: rip, ..clean() };
            assert_eq!(sysret_allowed(&c, CS, SS), Err(IretReason::NonCanonicalRip), "rip {rip:#x}");
        }
    }

    #[test]
    fn highest_canonical_user_address_still_takes_sysret() {
        let rip = (1 << 47) - 1;
        let c = ReturnContext { rip, rcx: rip, ..clean() };
        assert_eq!(sysret_allowed(&c, CS, SS), Ok(()));
    }

    #[test]
    fn sysret_with_trap_flag_takes_iret() {
        let c = ReturnContext { rflags: 0x302, r11: 0x302, ..clean() };
        assert_eq!(sysret_allowed(&c, CS, SS), Err(IretReason::TrapOrResumeFlag));
    }

    #[test]
    fn sysret_with_resume_flag_takes_iret() {
        let f = 0x202 | RFLAGS_RF;
        let c = ReturnContext { rflags: f, r11: f, ..clean() };
        assert_eq!(sysret_allowed(&c, CS, SS), Err(IretReason::TrapOrResumeFlag));
    }

    #[test]
    fn sysret_to_other_selectors_takes_iret() {
        assert_eq!(sysret_allowed(&ReturnContext { cs: 0x1b, ..clean() }, CS, SS), Err(IretReason::NotSysretSelectors));
        assert_eq!(sysret_allowed(&ReturnContext { ss: 0x2b, ..clean() }, CS, SS), Err(IretReason::NotSysretSelectors));
    }
}
