//! ballast's own HTTP/1.1 engine. It forwards the common request — HTTP/1.1 from the client,
//! a plain HTTP/1.1 target group, no upgrade, no chunked upload — in the client connection's
//! own task, over pooled target connections, passing bodies on as they come. HTTP/2 clients'
//! body-less requests to the same targets go over the same pool (`client`). hyper serves
//! everything else (WebSocket, HTTPS and HTTP/2 targets, chunked uploads, `Expect`).
//!
//! Why not hyper for all: measured against HAProxy, hyper's server and client pair spent
//! twice HAProxy's CPU time per small request (`bench/RESULTS.md`), most of it in handing
//! each request between tasks and in building header maps the balancer does not need.

pub mod client;
mod exchange;
pub mod own_answer;
mod pool;
pub mod request;
mod response;
mod spare;

pub use exchange::{forward, AnswerTimeout, Ended};
pub use pool::{IdlePool, TargetConnection};
pub use request::{RequestFacts, MAX_FIELDS};
pub use spare::Spare;

/// Appends `n` in decimal to `out`: the numbers of a head (status, lengths, ports), written
/// without the formatting machinery.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimals_are_written_whole() {
        for n in [0, 7, 10, 443, 65_535, 1 << 40, u64::MAX] {
            let mut out = b"x".to_vec();
            super::push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
