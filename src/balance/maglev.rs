//! Flow hashing with Maglev consistent hashing: every packet of a flow, on every node with
//! the same targets, goes to the same target; a target leaving moves only its own flows.

use super::{Balancer, TargetView};

/// Size of the lookup table: a prime well above any target count, as in the Maglev paper.
pub const TABLE_SIZE: usize = 65_537;

/// A Maglev lookup table over the targets' names.
#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
}

/// 64-bit FNV-1a, then a splitmix finaliser: stable across builds and machines, so two
/// ballast nodes hash alike.
pub fn stable_hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The hash of a flow's 5-tuple: addresses, ports and IP protocol number (6 TCP, 17 UDP).
pub fn flow_hash(client: std::net::SocketAddr, local: std::net::SocketAddr, protocol: u8) -> u64 {
    let mut key = [0u8; 37];
    let ip = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    };
    key[..16].copy_from_slice(&ip(client.ip()));
    key[16..32].copy_from_slice(&ip(local.ip()));
    key[32..34].copy_from_slice(&client.port().to_be_bytes());
    key[34..36].copy_from_slice(&local.port().to_be_bytes());
    key[36] = protocol;
    stable_hash(&key, 0)
}

impl Maglev {
    /// The table for targets named `names` (their addresses), in any order.
    pub fn new(names: &[&str]) -> Self {
        let n = names.len();
        if n == 0 {
            return Maglev { table: Vec::new() };
        }
        let m = TABLE_SIZE as u64;
        // Fill in name order, not registration order, so every node builds the same table.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| names[i]);
        let prefs: Vec<(u64, u64)> = order
            .iter()
            .map(|&i| names[i])
            .map(|name| {
                let offset = stable_hash(name.as_bytes(), 0x6d61_676c) % m;
                let skip = stable_hash(name.as_bytes(), 0x6576_0001) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; n];
        let mut table = vec![u32::MAX; TABLE_SIZE];
        let mut filled = 0;
        'fill: loop {
            for i in 0..n {
                let (offset, skip) = prefs[i];
                let mut c = (offset + next[i] * skip) % m;
                while table[c as usize] != u32::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                table[c as usize] = order[i] as u32;
                next[i] += 1;
                filled += 1;
                if filled == TABLE_SIZE {
                    break 'fill;
                }
            }
        }
        Maglev { table }
    }

    /// The target for a flow hash, before eligibility.
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        (!self.table.is_empty()).then(|| self.table[(hash % TABLE_SIZE as u64) as usize] as usize)
    }
}

impl Balancer for Maglev {
    fn pick(&self, view: &dyn TargetView) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let start = (view.flow_hash() % TABLE_SIZE as u64) as usize;
        // An ineligible target's flows spread over the next entries, which are themselves
        // spread evenly: the rest of the flows stay where they are.
        (0..TABLE_SIZE.min(view.len() * 64 + 64))
            .map(|i| self.table[(start + i) % TABLE_SIZE] as usize)
            .find(|&t| view.eligible(t))
            .or_else(|| (0..view.len()).find(|&t| view.eligible(t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.{}.{}:80", i / 250, i % 250 + 1)).collect()
    }

    fn table(names: &[String]) -> Maglev {
        Maglev::new(&names.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[test]
    fn the_table_spreads_evenly() {
        let t = table(&names(10));
        let mut counts = [0usize; 10];
        for &e in &t.table {
            counts[e as usize] += 1;
        }
        let ideal = TABLE_SIZE / 10;
        assert!(counts.iter().all(|&c| c.abs_diff(ideal) <= ideal / 50), "{counts:?}");
    }

    #[test]
    fn two_nodes_with_the_same_targets_agree_whatever_the_order() {
        let a = names(7);
        let mut b = a.clone();
        b.reverse();
        let (ta, tb) = (table(&a), table(&b));
        for flow in 0..10_000u64 {
            let h = stable_hash(&flow.to_be_bytes(), 0);
            assert_eq!(a[ta.lookup(h).unwrap()], b[tb.lookup(h).unwrap()]);
        }
    }

    #[test]
    fn removing_one_target_of_n_moves_about_one_nth_of_flows() {
        let all = names(10);
        let fewer: Vec<String> = all.iter().filter(|n| *n != &all[3]).cloned().collect();
        let (before, after) = (table(&all), table(&fewer));
        let flows = 100_000u64;
        let moved = (0..flows)
            .filter(|f| {
                let h = stable_hash(&f.to_be_bytes(), 0);
                all[before.lookup(h).unwrap()] != fewer[after.lookup(h).unwrap()]
            })
            .count();
        let share = moved as f64 / flows as f64;
        // The removed target's own tenth must move; Maglev moves little else.
        assert!((0.09..0.13).contains(&share), "{share}");
    }

    #[test]
    fn stable_hash_is_pinned() {
        // Nodes built by different compilers must agree: these values never change.
        assert_eq!(stable_hash(b"10.0.0.1:80", 0), 0xdbbc_907f_2153_1a73);
        assert_eq!(stable_hash(b"", 0), 0xf52a_15e9_a9b5_e89b);
    }
}
