//! The protocols of the user-space servers: message word 0 is the operation, the reply's
//! word 0 a status (0 or a negated `abi::Error` code, as system calls return).

/// Every server's first message to init, on the bootstrap endpoint: word 1 is which server
/// (the values below), and the message carries its service endpoint (SEND and GRANT).
pub mod boot {
    pub const HELLO: u64 = 1;
    pub const CONSOLE: u64 = 1;
    pub const NAME: u64 = 2;
}

/// `console`: writes lines to COM1, each exactly as sent, whole and in arrival order.
pub mod console {
    /// `[WRITE, 0, 0, 0]` with the line (no newline) as the buffer.
    pub const WRITE: u64 = 1;
    /// `[STATS]` -> `[0, lines written, UART interrupts taken, waits that timed out instead]`.
    pub const STATS: u64 = 2;
}

/// `name`: a directory of endpoints by name.
///
/// Anyone holding the service endpoint may look names up; registering a name needs the
/// authority for it, carried by the badge of the caller's capability. init derives each
/// server's capability with the badge [`register_badge`] of the name it may register, and
/// every other one (clients) with [`LOOKUP_ONLY`], so that nobody it starts holds an
/// unbadged copy from which to mint a badge of its own (a badge, once set, is fixed). The
/// name server refuses a registration whose badge does not match the name (`NoRights`).
pub mod name {
    /// `[REGISTER]` with the name as the buffer and the endpoint as the capability.
    pub const REGISTER: u64 = 1;
    /// `[LOOKUP]` with the name as the buffer -> the endpoint as the reply's capability.
    pub const LOOKUP: u64 = 2;
    /// Longest name.
    pub const MAX_NAME: usize = 32;
    /// The badge of a capability that may look names up and register none.
    pub const LOOKUP_ONLY: u64 = 1;

    /// The badge that allows registering `name`: its 64-bit FNV-1a hash with bit 62 set (so
    /// never 0, unbadged, nor [`LOOKUP_ONLY`]) and bit 63 clear (a receive returns the badge
    /// in RAX, where a negative value means an error).
    pub const fn register_badge(name: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut i = 0;
        while i < name.len() {
            h ^= name[i] as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
            i += 1;
        }
        (h & !(1 << 63)) | 1 << 62
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn registration_badges_are_never_a_lookup_badge_and_differ_by_name() {
            for name in [&b""[..], b"echo", b"console", b"name", b"echo2", b"ehco"] {
                let b = register_badge(name);
                assert!(b != 0 && b != LOOKUP_ONLY && (b as i64) > 0, "{name:?}");
            }
            assert_ne!(register_badge(b"echo"), register_badge(b"ehco"));
            assert_ne!(register_badge(b"echo"), register_badge(b"echo\0"));
        }
    }
}

/// `echo`: the test server.
pub mod echo {
    /// `[ECHO, a, b, c]` -> `[0, a, !b, c + 1]`, and the buffer back reversed.
    pub const ECHO: u64 = 1;
    /// Dies with a page fault while holding the call: callers must get `PeerDied`.
    pub const CRASH: u64 = 2;
    /// `[COUNT]` -> `[0, requests served, replies that found their caller gone]`.
    pub const COUNT: u64 = 3;
    /// Replies after `a` milliseconds (so that the caller can die first).
    pub const SLOW: u64 = 4;
}
