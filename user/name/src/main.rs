//! name: the name service. Servers register an endpoint under a name; clients look it up and
//! get a copy of the endpoint capability (SEND and GRANT) in the reply.
//!
//! Registering needs authority (`rt::proto::name`): the badge of the caller's capability must
//! be `register_badge(name)`, which only init mints, one per server for its own name. Anyone
//! else, and anyone under another name, is refused with `NoRights`, so no client can take a
//! server's name and receive its clients' calls. The holder of a name may register it again
//! (a restarted server), replacing its endpoint.
//!
//! Start capabilities: `initial(0)` init's bootstrap endpoint (SEND), `initial(1)` the
//! console (SEND).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("name runs on x86_64-unknown-none as a boot module that init starts");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod program {
    use abi::cap::Rights;
    use abi::Error;
    use rt::ipc::{self, initial};
    use rt::proto::{boot, name::*};
    use rt::println;

    const BOOT: u64 = initial(0);
    const CONSOLE: u64 = initial(1);
    const ENTRIES: usize = 16;

    #[derive(Clone, Copy)]
    struct Entry {
        name: [u8; MAX_NAME],
        len: usize,
        endpoint: u64,
    }

    fn main(_arg: &str) -> i32 {
        rt::console::set(CONSOLE, "name");
        let Ok(ep) = ipc::endpoint_create() else { return 1 };
        let mut t = ipc::transfer(&[], Some((ep, Rights::SEND | Rights::GRANT)), &mut []);
        if let Err(e) = ipc::send(BOOT, [boot::HELLO, boot::NAME, 0, 0], Some(&mut t)) {
            println!("cannot reach init: {e:?}");
            return 1;
        }
        let mut table: [Option<Entry>; ENTRIES] = [None; ENTRIES];
        let mut buf = [0u8; MAX_NAME];
        let mut reply: Option<(ipc::Msg, u64)> = None;
        loop {
            // The reply to the previous request (with the looked-up endpoint, if any), then
            // the next request.
            let (previous, cap) = match reply.take() {
                Some((r, cap)) => (Some(r), cap),
                None => (None, 0),
            };
            let mut t = ipc::transfer(&[], (cap != 0).then_some((cap, Rights::SEND | Rights::GRANT)), &mut buf);
            let received = ipc::serve(ep, previous, Some(&mut t));
            let Ok((badge, m)) = received else { continue };
            let name = &buf[..(t.recv_len as usize).min(MAX_NAME)];
            let status = |e: Error| ([e.to_raw(), 0, 0, 0], 0);
            reply = Some(match m[0] {
                REGISTER if t.recv_cap == ipc::NO_CAP => status(Error::InvalidArgument),
                REGISTER if t.recv_truncated != 0 || name.is_empty() => {
                    let _ = ipc::cap_delete(t.recv_cap);
                    status(Error::InvalidArgument)
                }
                REGISTER if badge != register_badge(name) => {
                    // Quietly: a client must not be able to flood the console through us.
                    let _ = ipc::cap_delete(t.recv_cap);
                    status(Error::NoRights)
                }
                REGISTER => {
                    // Only the name's holder gets here: its new registration replaces the old.
                    let slot = table.iter().position(|e| e.is_some_and(|e| &e.name[..e.len] == name));
                    match slot.or_else(|| table.iter().position(Option::is_none)) {
                        Some(i) => {
                            if let Some(old) = table[i] {
                                let _ = ipc::cap_delete(old.endpoint);
                            }
                            let mut entry = Entry { name: [0; MAX_NAME], len: name.len(), endpoint: t.recv_cap };
                            entry.name[..name.len()].copy_from_slice(name);
                            table[i] = Some(entry);
                            println!("registered {:?}", core::str::from_utf8(name).unwrap_or("?"));
                            ([0; 4], 0)
                        }
                        None => {
                            let _ = ipc::cap_delete(t.recv_cap);
                            status(Error::NoMemory)
                        }
                    }
                }
                LOOKUP => match table.iter().flatten().find(|e| &e.name[..e.len] == name) {
                    Some(e) => ([0; 4], e.endpoint),
                    None => status(Error::NotFound),
                },
                _ => status(Error::InvalidArgument),
            });
            if t.recv_cap != ipc::NO_CAP && m[0] != REGISTER {
                let _ = ipc::cap_delete(t.recv_cap);
            }
        }
    }

    rt::entry!(main);
}
