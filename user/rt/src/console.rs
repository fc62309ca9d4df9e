//! Where `println!` goes: the kernel log until the program is given the console server's
//! endpoint ([`set`]), then the console, one `call` per line (tagged `name: `). If the console
//! fails (it died), lines fall back to the kernel log.

use crate::ipc;
use crate::proto::console::WRITE;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

static ENDPOINT: AtomicU64 = AtomicU64::new(0);
static NAME_PTR: AtomicUsize = AtomicUsize::new(0);
static NAME_LEN: AtomicUsize = AtomicUsize::new(0);

/// From now on `println!` writes through the console endpoint `ep`, each line prefixed with
/// `name: `.
pub fn set(ep: u64, name: &'static str) {
    NAME_PTR.store(name.as_ptr() as usize, Ordering::Relaxed);
    NAME_LEN.store(name.len(), Ordering::Relaxed);
    ENDPOINT.store(ep, Ordering::Release);
}

/// The console endpoint, if set.
pub fn endpoint() -> Option<u64> {
    match ENDPOINT.load(Ordering::Acquire) {
        0 => None,
        h => Some(h),
    }
}

fn name() -> &'static str {
    let (ptr, len) = (NAME_PTR.load(Ordering::Relaxed), NAME_LEN.load(Ordering::Relaxed));
    if len == 0 {
        return "";
    }
    // SAFETY: `set` stored the parts of a `&'static str`.
    unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(ptr as *const u8, len)) }
}

/// Writes one line (no newline) through the console; `false` if there is none or it failed.
pub fn write_line(line: &str) -> bool {
    let Some(ep) = endpoint() else { return false };
    let mut buf = [0u8; ipc::MAX_BUFFER];
    let name = name();
    let mut n = 0;
    for part in [name.as_bytes(), b": ", line.as_bytes()] {
        let take = part.len().min(buf.len() - n);
        buf[n..n + take].copy_from_slice(&part[..take]);
        n += take;
    }
    let mut t = ipc::transfer(&buf[..n], None, &mut []);
    matches!(ipc::call(ep, [WRITE, 0, 0, 0], Some(&mut t)), Ok([0, ..]))
}
