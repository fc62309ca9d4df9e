//! echo: the test server. It registers "echo" with the name service and answers
//! `proto::echo` requests: ECHO transforms the words and returns the buffer reversed, COUNT
//! says how many it served, SLOW answers late (its caller may be gone by then), and CRASH
//! makes it die of a page fault while the call is open, so that the failure-containment paths
//! can be tested.
//!
//! Start capabilities: `initial(0)` the name service (SEND), `initial(1)` the console (SEND).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("echo runs on x86_64-unknown-none as a boot module that init starts");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod program {
    use abi::cap::Rights;
    use abi::Error;
    use rt::ipc::{self, initial};
    use rt::println;
    use rt::proto::{echo::*, name};

    const NAME: u64 = initial(0);
    const CONSOLE: u64 = initial(1);

    fn main(_arg: &str) -> i32 {
        rt::console::set(CONSOLE, "echo");
        let Ok(ep) = ipc::endpoint_create() else { return 1 };
        let mut t = ipc::transfer(b"echo", Some((ep, Rights::SEND | Rights::GRANT)), &mut []);
        match ipc::call(NAME, [name::REGISTER, 0, 0, 0], Some(&mut t)) {
            Ok([0, ..]) => {}
            other => {
                println!("cannot register: {other:?}");
                return 1;
            }
        }
        let mut served = 0u64;
        let mut lost_replies = 0u64;
        let mut buf = [0u8; ipc::MAX_BUFFER];
        let mut out = [0u8; ipc::MAX_BUFFER];
        let mut out_len = 0;
        let mut reply: Option<ipc::Msg> = None;
        loop {
            let mut t = ipc::transfer(&out[..out_len], None, &mut buf);
            let received = ipc::serve(ep, reply.take(), Some(&mut t));
            out_len = 0;
            let Ok((_badge, m)) = received else { continue };
            served += 1;
            reply = Some(match m[0] {
                ECHO => {
                    out_len = t.recv_len as usize;
                    for (o, b) in out[..out_len].iter_mut().zip(buf[..out_len].iter().rev()) {
                        *o = *b;
                    }
                    [0, m[1], !m[2], m[3].wrapping_add(1)]
                }
                COUNT => [0, served, lost_replies, 0],
                SLOW => {
                    let _ = rt::sys::sleep_ms(m[1].min(5000));
                    // Answer separately, to see whether the caller is still there.
                    if ipc::reply([0, m[1], 0, 0], None) == Err(Error::PeerDied) {
                        lost_replies += 1;
                        println!("the caller of a slow request is gone: reply refused, serving on");
                    }
                    continue;
                }
                CRASH => {
                    println!("crashing with a call open, as asked");
                    // SAFETY: a load from address 0, never mapped in user space: it faults and
                    // the kernel kills this thread, which is the point. No Rust-visible memory
                    // is read, so nothing about the program's state is assumed.
                    unsafe { core::arch::asm!("mov rax, [0]", out("rax") _, options(nostack, readonly)) };
                    [Error::InvalidArgument.to_raw(), 0, 0, 0]
                }
                _ => [Error::InvalidArgument.to_raw(), 0, 0, 0],
            });
        }
    }

    rt::entry!(main);
}
