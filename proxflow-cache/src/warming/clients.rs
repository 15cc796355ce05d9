//! Each client's latest requests, to learn which key follows which for one client.

/// The requests remembered per client: enough for a list and the first details that follow it.
const RECENT: usize = 4;

/// One slot of the table: a client and its latest requests, oldest first.
#[derive(Clone, Default)]
struct Slot {
    client: u64,
    len: u8,
    recent: [(u64, u64); RECENT],
}

/// A direct-mapped table of clients: a client's slot is chosen by its hash, and a client
/// that lands on another's slot takes it over. The table never grows and needs no eviction;
/// a collision loses one client's short history, which only delays learning a little.
pub(super) struct Clients {
    slots: Vec<Slot>,
    mask: usize,
}

impl Clients {
    /// A table of `slots` slots, rounded up to a power of two.
    pub(super) fn new(slots: usize) -> Self {
        let n = slots.max(1).next_power_of_two();
        Self {
            slots: vec![Slot::default(); n],
            mask: n - 1,
        }
    }

    /// Records that `client` requested `key` at `now` (nanoseconds), and calls `followed`
    /// with each key the client requested within `window` before, oldest first, other than
    /// `key` itself.
    pub(super) fn record(
        &mut self,
        client: u64,
        key: u64,
        now: u64,
        window: u64,
        mut followed: impl FnMut(u64),
    ) {
        let slot = &mut self.slots[super::keys::mix(client) as usize & self.mask];
        if slot.client != client || slot.len == 0 {
            *slot = Slot {
                client,
                ..Slot::default()
            };
        }
        let len = usize::from(slot.len);
        for &(earlier, at) in &slot.recent[..len] {
            if earlier != key && now.saturating_sub(at) <= window {
                followed(earlier);
            }
        }
        if len == RECENT {
            slot.recent.rotate_left(1);
            slot.recent[RECENT - 1] = (key, now);
        } else {
            slot.recent[len] = (key, now);
            slot.len += 1;
        }
    }
}

impl Clients {
    /// The bytes the table holds.
    pub(super) fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn followers(clients: &mut Clients, client: u64, key: u64, now: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        clients.record(client, key, now, 2_000, |k| seen.push(k));
        seen
    }

    #[test]
    fn a_key_follows_the_same_clients_recent_keys_within_the_window() {
        let mut clients = Clients::new(64);
        assert!(followers(&mut clients, 1, 10, 0).is_empty());
        assert!(followers(&mut clients, 2, 20, 100).is_empty());
        assert_eq!(followers(&mut clients, 1, 11, 1_000), [10]);
        assert_eq!(followers(&mut clients, 1, 12, 2_500), [11]);
        // A repeated key does not follow itself.
        assert_eq!(followers(&mut clients, 1, 12, 2_600), [11]);
    }

    #[test]
    fn only_the_latest_requests_are_kept() {
        let mut clients = Clients::new(1);
        for k in 0..6 {
            followers(&mut clients, 7, k, k);
        }
        assert_eq!(followers(&mut clients, 7, 99, 10), [2, 3, 4, 5]);
        // Another client on the only slot starts over.
        assert!(followers(&mut clients, 8, 100, 11).is_empty());
    }
}
