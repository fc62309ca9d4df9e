//! client: exercises `echo` through the name service. Its argument is `id=K calls=N` or
//! `id=K crash` or `id=K slow`:
//!
//! - normal: looks `echo` up, makes N calls with a 64-byte buffer, checks every reply word and
//!   byte, and prints `SEQ client-K I` lines through the console as it goes (the boot tests
//!   check that each client's lines appear whole and in order);
//! - crash: one good call, then asks echo to crash with the call open: the call must fail with
//!   `PeerDied`, and so must the next call on the dead endpoint;
//! - slow: one call that echo answers late; init kills the client while it waits;
//! - hostile: tries to register its own endpoint as `echo` and under a new name, also through
//!   a copy of its name capability it badged itself; every attempt must be refused
//!   (`NoRights`), and `echo` must still answer as echo.
//!
//! Start capabilities: `initial(0)` the name service (SEND), `initial(1)` the console (SEND).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("client runs on x86_64-unknown-none as a boot module that init starts");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod program {
    use abi::cap::Rights;
    use abi::Error;
    use rt::ipc::{self, initial};
    use rt::proto::{echo, name};
    use rt::{println, sys};

    const NAME: u64 = initial(0);
    const CONSOLE: u64 = initial(1);

    fn field<'a>(arg: &'a str, key: &str) -> Option<&'a str> {
        arg.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }

    fn lookup(what: &str) -> Result<u64, Error> {
        let mut t = ipc::transfer(what.as_bytes(), None, &mut []);
        let reply = ipc::call(NAME, [name::LOOKUP, 0, 0, 0], Some(&mut t))?;
        Error::result(reply[0])?;
        if t.recv_cap == ipc::NO_CAP {
            return Err(Error::BadHandle);
        }
        Ok(t.recv_cap)
    }

    /// One ECHO call with `i` in the words and a buffer derived from it; checks the reply.
    fn echo_once(ep: u64, i: u64) -> Result<(), &'static str> {
        let mut data = [0u8; 64];
        for (k, b) in data.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(k as u8);
        }
        let mut back = [0u8; 64];
        let mut t = ipc::transfer(&data, None, &mut back);
        let r = ipc::call(ep, [echo::ECHO, i, i ^ 0xa5a5, i * 7], Some(&mut t)).map_err(|_| "call failed")?;
        if r != [0, i, !(i ^ 0xa5a5), i * 7 + 1] {
            return Err("wrong reply words");
        }
        if t.recv_len != 64 || back.iter().rev().ne(data.iter()) {
            return Err("wrong reply buffer");
        }
        Ok(())
    }

    /// REGISTER `what` with a fresh endpoint of ours through `name_cap`.
    fn register(name_cap: u64, what: &str) -> Result<(), Error> {
        let ep = ipc::endpoint_create()?;
        let mut t = ipc::transfer(what.as_bytes(), Some((ep, Rights::SEND | Rights::GRANT)), &mut []);
        let r = ipc::call(name_cap, [name::REGISTER, 0, 0, 0], Some(&mut t)).and_then(|r| Error::result(r[0]).map(drop));
        let _ = ipc::cap_delete(ep);
        r
    }

    fn hostile(id: &str) -> i32 {
        let mut failed = 0;
        let mut expect = |what: &str, got: Result<(), Error>, want: Result<(), Error>| {
            let ok = got == want;
            failed += i32::from(!ok);
            println!("client-{id}: {what} -> {got:?}{}", if ok { "" } else { ", FAIL" });
        };
        expect("register my endpoint as echo", register(NAME, "echo"), Err(Error::NoRights));
        expect("register a new name", register(NAME, "intruder"), Err(Error::NoRights));
        // Our capability carries the lookup-only badge; a copy cannot take echo's badge.
        let minted = ipc::cap_derive(NAME, Rights::SEND, name::register_badge(b"echo")).unwrap_or(NAME);
        expect("register as echo through a self-badged copy", register(minted, "echo"), Err(Error::NoRights));
        expect("look up the name that was refused", lookup("intruder").map(drop), Err(Error::NotFound));
        let echo_answers = lookup("echo").map_err(|_| Error::NotFound).and_then(|ep| {
            let r = echo_once(ep, 3).map_err(|_| Error::InvalidArgument);
            let _ = ipc::cap_delete(ep);
            r
        });
        expect("echo still answers as echo", echo_answers, Ok(()));
        i32::from(failed != 0)
    }

    fn main(arg: &str) -> i32 {
        rt::console::set(CONSOLE, "client");
        let id = field(arg, "id").unwrap_or("?");
        let cpu = sys::cpu_id().unwrap_or(usize::MAX);
        if arg.split_whitespace().any(|w| w == "hostile") {
            return hostile(id);
        }
        let ep = match lookup("echo") {
            Ok(ep) => ep,
            Err(e) => {
                println!("client-{id}: cannot look up echo: {e:?}");
                return 1;
            }
        };
        if arg.split_whitespace().any(|w| w == "slow") {
            // init kills us while this call is open; returning from it is the failure.
            let r = ipc::call(ep, [echo::SLOW, 300, 0, 0], None);
            println!("client-{id}: the slow call returned {r:?}, but should have been cut short by a kill");
            return 1;
        }
        if arg.split_whitespace().any(|w| w == "crash") {
            if let Err(e) = echo_once(ep, 1) {
                println!("client-{id}: echo failed before the crash: {e}");
                return 1;
            }
            let crashed = ipc::call(ep, [echo::CRASH, 0, 0, 0], None);
            let after = ipc::call(ep, [echo::ECHO, 0, 0, 0], None);
            println!("client-{id}: call during the crash -> {:?}; next call -> {:?}", crashed.err(), after.err());
            return if crashed == Err(Error::PeerDied) && after == Err(Error::PeerDied) { 0 } else { 1 };
        }
        let calls: u64 = field(arg, "calls").and_then(|c| c.parse().ok()).unwrap_or(20);
        for i in 0..calls {
            if let Err(e) = echo_once(ep, i) {
                println!("client-{id}: call {i}: {e}");
                return 1;
            }
            if i % 5 == 0 || i + 1 == calls {
                println!("SEQ client-{id} {i} on cpu {cpu}");
            }
        }
        println!("client-{id}: {calls} echo calls from cpu {cpu} answered correctly");
        0
    }

    rt::entry!(main);
}
