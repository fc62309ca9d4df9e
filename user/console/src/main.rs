//! console: the user-space owner of COM1. It gets the UART's eight I/O ports, its interrupt
//! line and the kernel log from init, and serves `proto::console::WRITE`: each line is written
//! whole, in the order the calls arrive, and kernel log lines (queued by the kernel once we
//! attach) are written between them, never inside one.
//!
//! Transmission is interrupt-driven: after each burst of at most 16 bytes (the FIFO) the
//! writer waits for the UART's transmitter-empty interrupt (IRQ 4 through the I/O APIC, a
//! notification bit here), with a 50 ms timer on the same notification as a safety net should
//! an interrupt never come.
//!
//! Start capabilities: `initial(0)` COM1's ports, `initial(1)` its IRQ, `initial(2)` the
//! kernel log, `initial(3)` init's bootstrap endpoint (SEND).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("console runs on x86_64-unknown-none as a boot module that init starts");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod program {
    use core::arch::asm;
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use rt::ipc::{self, initial};
    use rt::proto::{boot, console};
    use rt::{println, sys};

    const PORTS: u64 = initial(0);
    const IRQ: u64 = initial(1);
    const KLOG: u64 = initial(2);
    const BOOT: u64 = initial(3);

    const COM1: u16 = 0x3f8;
    const IRQ_BIT: u64 = 1;
    const TIMEOUT_BIT: u64 = 2;

    /// The UART notification (IRQ and timeout bits), the one writer's.
    static UART_NOTIFY: AtomicU64 = AtomicU64::new(0);
    static UART_LOCK: AtomicBool = AtomicBool::new(false);
    static LINES: AtomicU64 = AtomicU64::new(0);
    static IRQS: AtomicU64 = AtomicU64::new(0);
    static TIMEOUTS: AtomicU64 = AtomicU64::new(0);

    fn outb(port: u16, v: u8) {
        // SAFETY: only COM1's ports, which the kernel opened to this process
        // (`ioport_enable`); an access outside them would fault and kill only us.
        unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) }
    }

    fn inb(port: u16) -> u8 {
        let v: u8;
        // SAFETY: as in `outb`.
        unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags)) }
        v
    }

    fn thr_empty() -> bool {
        inb(COM1 + 5) & 0x20 != 0
    }

    /// Waits for the transmitter-empty interrupt after a burst.
    fn wait_tx() {
        let n = UART_NOTIFY.load(Ordering::Relaxed);
        loop {
            let _ = ipc::notify_timer(n, TIMEOUT_BIT, 50);
            let bits = ipc::notify_wait(n).unwrap_or(TIMEOUT_BIT);
            if bits & IRQ_BIT != 0 {
                IRQS.fetch_add(1, Ordering::Relaxed);
                // Reading IIR acknowledges the transmitter-empty condition at the UART.
                let _ = inb(COM1 + 2);
                let _ = ipc::irq_ack(IRQ);
            } else {
                TIMEOUTS.fetch_add(1, Ordering::Relaxed);
            }
            if thr_empty() {
                return;
            }
        }
    }

    /// Writes `bytes` (LF as CR LF) to the UART, holding the writer lock for all of them.
    fn write(bytes: &[u8]) {
        while UART_LOCK.swap(true, Ordering::Acquire) {
            let _ = sys::yield_now();
        }
        let mut burst = 0;
        for &b in bytes {
            for c in if b == b'\n' { &b"\r\n"[..] } else { core::slice::from_ref(&b) } {
                if burst == 16 || (burst == 0 && !thr_empty()) {
                    wait_tx();
                    burst = 0;
                }
                outb(COM1, *c);
                burst += 1;
            }
        }
        if burst > 0 {
            wait_tx();
        }
        UART_LOCK.store(false, Ordering::Release);
    }

    /// The kernel-log pump: a thread that copies queued kernel lines to the UART.
    fn klog_pump(notify: usize) {
        let mut buf = [0u8; 2048];
        loop {
            loop {
                match ipc::klog_read(KLOG, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => write(&buf[..n]),
                }
            }
            if ipc::notify_wait(notify as u64).is_err() {
                return;
            }
        }
    }

    fn main(_arg: &str) -> i32 {
        if let Err(e) = ipc::ioport_enable(PORTS) {
            println!("console: cannot open COM1's ports: {e:?}");
            return 1;
        }
        let (Ok(uart_n), Ok(klog_n), Ok(ep)) = (ipc::notification_create(), ipc::notification_create(), ipc::endpoint_create()) else {
            println!("console: out of capability slots");
            return 1;
        };
        UART_NOTIFY.store(uart_n, Ordering::Relaxed);
        // OUT2 gates the UART's interrupt output on PCs; then transmitter-empty interrupts on.
        outb(COM1 + 4, 0x0b);
        outb(COM1 + 1, 0x02);
        if let Err(e) = ipc::irq_bind(IRQ, uart_n, IRQ_BIT) {
            println!("console: cannot bind IRQ 4: {e:?}");
            return 1;
        }
        let _ = inb(COM1 + 2);
        if let Err(e) = ipc::klog_attach(KLOG, klog_n, 1) {
            println!("console: cannot attach the kernel log: {e:?}");
            return 1;
        }
        if rt::thread::spawn(klog_pump, klog_n as usize, None).is_err() {
            println!("console: cannot start the kernel-log thread");
            return 1;
        }
        // Tell init where we serve (it passes the endpoint on to everyone else).
        let mut t = ipc::transfer(&[], Some((ep, abi::cap::Rights::SEND | abi::cap::Rights::GRANT)), &mut []);
        if let Err(e) = ipc::send(BOOT, [boot::HELLO, boot::CONSOLE, 0, 0], Some(&mut t)) {
            println!("console: cannot reach init: {e:?}");
            return 1;
        }
        let mut line = [0u8; ipc::MAX_BUFFER + 1];
        let mut reply: Option<ipc::Msg> = None;
        loop {
            let mut t = ipc::transfer(&[], None, &mut line[..ipc::MAX_BUFFER]);
            let received = ipc::serve(ep, reply.take(), Some(&mut t));
            let Ok((_badge, m)) = received else { continue };
            reply = Some(match m[0] {
                console::WRITE => {
                    let n = t.recv_len as usize;
                    line[n] = b'\n';
                    write(&line[..n + 1]);
                    LINES.fetch_add(1, Ordering::Relaxed);
                    [0; 4]
                }
                console::STATS => [
                    0,
                    LINES.load(Ordering::Relaxed),
                    IRQS.load(Ordering::Relaxed),
                    TIMEOUTS.load(Ordering::Relaxed),
                ],
                _ => [abi::Error::InvalidArgument.to_raw(), 0, 0, 0],
            });
        }
    }

    rt::entry!(main);
}
