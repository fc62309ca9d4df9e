//! init, the root task. The kernel gives it every initial capability (`abi::cap::init_caps`:
//! the right to start boot modules, COM1's ports and IRQ, the kernel log); init starts the
//! servers and hands each only what it needs:
//!
//! | server    | gets                                                   |
//! |-----------|--------------------------------------------------------|
//! | `console` | COM1 ports, COM1 IRQ, kernel log, bootstrap (SEND)     |
//! | `name`    | bootstrap (SEND), console (SEND)                       |
//! | `echo`    | name (SEND, may register "echo"), console (SEND)       |
//! | `client`s | name (SEND, lookups only), console (SEND)              |
//!
//! The right to register a name is the badge of the name capability (`rt::proto::name`):
//! init keeps the only unbadged copy and gives everyone a badged one, a server the badge of
//! its own name, a client the lookup-only badge.
//!
//! Each server creates its own service endpoint and sends it to init on the bootstrap
//! endpoint. When `echo` has registered with `name`, init tells the kernel the servers are up
//! (READY), starts one client per CPU, and waits for them. It watches every server's end
//! through an exit notification and reports it.
//!
//! Argument: the module command line, plus `test=servers`, `test=server_crash`, `test=memory`
//! (`program/memory.rs`) or `test=fuzz`
//! (with the scenario's `fuzz_*` words, see `program/fuzz.rs`) in those kernel scenarios (init's exit
//! status is then the verdict).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("init runs on x86_64-unknown-none as a boot module: build and boot it with `cargo xtask run`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod program {
    use abi::cap::init_caps::*;
    use abi::cap::Rights;
    use abi::Error;
    use rt::ipc;
    use rt::proto::{boot, console, echo, name};
    use rt::{println, sys};

    mod fuzz;
    mod memory;

    /// Exit-notification bits: one per server.
    const CONSOLE_BIT: u64 = 1;
    const NAME_BIT: u64 = 2;
    const ECHO_BIT: u64 = 4;

    struct Servers {
        exits: u64,
        console: u64,
        /// init's own (unbadged) name capability.
        name: u64,
        /// What clients get: lookups only.
        name_lookup: u64,
        echo_process: u64,
        console_process: u64,
        name_process: u64,
    }

    fn spawn(what: &str, arg: &str, caps: &[u64], cpu: Option<usize>, exit: Option<(u64, u64)>) -> Result<u64, Error> {
        ipc::spawn(MODULES, what, arg, caps, cpu, exit).inspect_err(|e| println!("cannot start {what}: {e:?}"))
    }

    /// Waits for a server's HELLO on the bootstrap endpoint: its service endpoint.
    fn hello(boot_ep: u64, which: u64) -> Result<u64, Error> {
        let mut t = ipc::transfer(&[], None, &mut []);
        let (_, m) = ipc::recv(boot_ep, Some(&mut t))?;
        if m[0] != boot::HELLO || m[1] != which || t.recv_cap == ipc::NO_CAP {
            println!("unexpected bootstrap message {m:?}");
            return Err(Error::InvalidArgument);
        }
        Ok(t.recv_cap)
    }

    fn lookup(name_ep: u64, what: &str) -> Result<u64, Error> {
        let mut t = ipc::transfer(what.as_bytes(), None, &mut []);
        let reply = ipc::call(name_ep, [name::LOOKUP, 0, 0, 0], Some(&mut t))?;
        Error::result(reply[0])?;
        Ok(t.recv_cap)
    }

    fn start_servers() -> Result<Servers, Error> {
        let boot_ep = ipc::endpoint_create()?;
        let boot_send = ipc::cap_derive(boot_ep, Rights::SEND | Rights::GRANT, 0)?;
        let exits = ipc::notification_create()?;
        let console_process = spawn("console", "console", &[COM1_PORTS, COM1_IRQ, KERNEL_LOG, boot_send], None, Some((exits, CONSOLE_BIT)))?;
        let console = hello(boot_ep, boot::CONSOLE)?;
        rt::console::set(console, "init");
        let name_process = spawn("name", "name", &[boot_send, console], None, Some((exits, NAME_BIT)))?;
        let name = hello(boot_ep, boot::NAME)?;
        // Spawning passes only what has GRANT; the child gets it without.
        let name_echo = ipc::cap_derive(name, Rights::SEND | Rights::GRANT, name::register_badge(b"echo"))?;
        let name_lookup = ipc::cap_derive(name, Rights::SEND | Rights::GRANT, name::LOOKUP_ONLY)?;
        // echo on the last CPU, where server_crash's victims run: their register-only calls
        // (SLOW, CRASH) reach it through the kernel's fastpath, across address spaces.
        let last_cpu = sys::cpu_count().unwrap_or(1).saturating_sub(1);
        let echo_process = spawn("echo", "echo", &[name_echo, console], Some(last_cpu), Some((exits, ECHO_BIT)))?;
        let _ = ipc::cap_delete(name_echo);
        // echo is up when it has registered.
        let mut tries = 0;
        let echo_ep = loop {
            match lookup(name, "echo") {
                Ok(ep) => break ep,
                Err(Error::NotFound) if tries < 500 => {
                    tries += 1;
                    let _ = sys::sleep_ms(10);
                }
                Err(e) => {
                    println!("echo never registered: {e:?}");
                    return Err(e);
                }
            }
        };
        let _ = ipc::cap_delete(echo_ep);
        Ok(Servers { exits, console, name, name_lookup, echo_process, console_process, name_process })
    }

    /// One line per process of what its budget allows and holds (`memory_info`).
    fn report_memory(s: &Servers) {
        for (what, p) in [("init", ipc::NO_CAP), ("console", s.console_process), ("name", s.name_process), ("echo", s.echo_process)] {
            if let Ok(m) = ipc::memory_info(p) {
                println!(
                    "memory: {what} (pid {}): {} KiB used of {} KiB (peak {} KiB): {} frames, {} threads, {} endpoints, {} notifications, {} KiB to {} children",
                    m.pid,
                    m.used / 1024,
                    m.limit / 1024,
                    m.peak / 1024,
                    m.frames,
                    m.threads,
                    m.endpoints,
                    m.notifications,
                    m.granted / 1024,
                    m.grants
                );
            }
        }
    }

    /// One client per CPU (pinned), `calls` echo calls each; true if all passed.
    fn run_clients(s: &Servers, cpus: usize, calls: u64) -> bool {
        let mut clients = [0u64; 64];
        let n = cpus.min(clients.len());
        for (cpu, c) in clients.iter_mut().enumerate().take(n) {
            let arg = ArgBuf::format(format_args!("id={cpu} calls={calls}"));
            match spawn("client", arg.as_str(), &[s.name_lookup, s.console], Some(cpu), None) {
                Ok(p) => *c = p,
                Err(_) => return false,
            }
        }
        let mut ok = true;
        for (cpu, &c) in clients.iter().enumerate().take(n) {
            match ipc::process_wait(c) {
                Ok(0) => {}
                other => {
                    println!("client {cpu} failed: {other:?}");
                    ok = false;
                }
            }
        }
        ok
    }

    /// Kills a client while its call to echo is open: echo's late reply must fail (and be
    /// counted), and echo must go on serving.
    fn kill_caller(s: &Servers, cpu: usize) -> bool {
        let Ok(victim) = spawn("client", "id=victim slow", &[s.name_lookup, s.console], Some(cpu), None) else { return false };
        let _ = sys::sleep_ms(100);
        let _ = ipc::process_kill(victim, 9);
        let code = ipc::process_wait(victim);
        let Ok(echo_ep) = lookup(s.name, "echo") else { return false };
        for _ in 0..100 {
            if let Ok([0, _, lost, _]) = ipc::call(echo_ep, [echo::COUNT, 0, 0, 0], None) {
                if lost == 1 {
                    println!("client killed mid-call (status {code:?}); echo's late reply was refused and echo serves on");
                    let _ = ipc::cap_delete(echo_ep);
                    return code == Ok(9);
                }
            }
            let _ = sys::sleep_ms(20);
        }
        println!("echo never reported the refused reply");
        false
    }

    /// A client that tries to take over `echo`'s name, and to register one of its own: both
    /// must be refused, and echo must still be what the name service hands out.
    fn hostile(s: &Servers, cpu: usize) -> bool {
        let Ok(client) = spawn("client", "id=hostile hostile", &[s.name_lookup, s.console], Some(cpu), None) else { return false };
        let ok = matches!(ipc::process_wait(client), Ok(0));
        println!("a hostile client's registrations {}", if ok { "were refused" } else { "were NOT all refused: FAILED" });
        ok
    }

    /// Asks echo to crash in the middle of a call from a client: the client must get an
    /// error return and init must see echo end.
    fn crash_echo(s: &Servers, cpu: usize) -> bool {
        let Ok(client) = spawn("client", "id=crash crash", &[s.name_lookup, s.console], Some(cpu), None) else { return false };
        let client_ok = matches!(ipc::process_wait(client), Ok(0));
        let bits = ipc::notify_wait(s.exits).unwrap_or(0);
        let code = ipc::process_wait(s.echo_process);
        println!("server echo ended (exit code {code:?}); the client {}", if client_ok { "got an error return" } else { "FAILED" });
        client_ok && bits & ECHO_BIT != 0 && matches!(code, Ok(c) if c != 0)
    }

    fn main(arg: &str) -> i32 {
        let cpus = sys::cpu_count().unwrap_or(1);
        if arg.trim() == "user" {
            // The `user` scenario runs init without capabilities: only the worker demo.
            return if workers::run_one_per_cpu(cpus).failed == 0 { 0 } else { 1 };
        }
        let test = arg.split_whitespace().find_map(|w| w.strip_prefix("test="));
        let servers = match start_servers() {
            Ok(s) => s,
            Err(e) => {
                println!("servers did not come up: {e:?}");
                return 1;
            }
        };
        if let Err(e) = ipc::servers_ready(MODULES) {
            println!("servers_ready: {e:?}");
        }
        println!("console, name and echo up; {cpus} CPUs");
        report_memory(&servers);
        let ok = match test {
            Some("server_crash") => {
                kill_caller(&servers, cpus - 1) && hostile(&servers, cpus - 1) && crash_echo(&servers, cpus - 1)
            }
            Some("fuzz") => fuzz::run(&servers, cpus, arg),
            Some("memory") => memory::run(&servers, cpus),
            Some(_) => run_clients(&servers, cpus, 40) && hostile(&servers, cpus - 1),
            None => {
                let clients = run_clients(&servers, cpus, 20);
                let workers = workers::run_one_per_cpu(cpus);
                clients && workers.failed == 0
            }
        };
        if let Ok([0, lines, irqs, timeouts]) = ipc::call(servers.console, [console::STATS, 0, 0, 0], None) {
            println!("console wrote {lines} lines, {irqs} UART interrupts, {timeouts} timed-out waits");
        }
        if let Ok(st) = ipc::ipc_stats() {
            println!(
                "IPC: {} messages, {} fastpath switches, {} through the scheduler ({} to another CPU)",
                st.messages, st.fastpath, st.slowpath, st.cross_cpu
            );
        }
        report_memory(&servers);
        if ok {
            println!("done");
            0
        } else {
            println!("FAILED");
            1
        }
    }

    /// A small formatting buffer for argument strings (no allocation needed).
    struct ArgBuf {
        buf: [u8; 64],
        len: usize,
    }

    impl ArgBuf {
        fn format(args: core::fmt::Arguments) -> Self {
            let mut b = ArgBuf { buf: [0; 64], len: 0 };
            let _ = core::fmt::Write::write_fmt(&mut b, args);
            b
        }
        fn as_str(&self) -> &str {
            core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
        }
    }

    impl core::fmt::Write for ArgBuf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let n = s.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }

    rt::entry!(main);
}
