//! Fuzzes the guard's request head parsing: any bytes, never a panic, and whatever is
//! forwarded carries at most one framing.
#![no_main]

use ballast::guard::head::{head_end, inspect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = head_end(data);
    let verdict = inspect(data);
    let head = String::from_utf8_lossy(&verdict.head).to_ascii_lowercase();
    let framings = head.matches("\ncontent-length:").count() + head.matches("\ntransfer-encoding:").count();
    assert!(framings <= 1, "two framings forwarded: {head:?}");
});
