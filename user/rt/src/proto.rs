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
pub mod name {
    /// `[REGISTER]` with the name as the buffer and the endpoint as the capability.
    pub const REGISTER: u64 = 1;
    /// `[LOOKUP]` with the name as the buffer -> the endpoint as the reply's capability.
    pub const LOOKUP: u64 = 2;
    /// Longest name.
    pub const MAX_NAME: usize = 32;
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
