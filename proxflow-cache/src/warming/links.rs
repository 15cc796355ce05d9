//! Follower links in one arena: a key that leads others has a block of `stride` links, and a
//! freed block is reused, so the arena never holds more blocks than keys were tracked at once.

/// A key's block index when it has no links.
pub(super) const NO_LINKS: u32 = u32::MAX;

/// The arena: keys and counts of links in parallel vectors (12 bytes a link, no padding).
pub(super) struct Links {
    keys: Vec<u64>,
    counts: Vec<f32>,
    stride: usize,
    free: Vec<u32>,
}

impl Links {
    /// An empty arena of blocks of `stride` links.
    pub(super) fn new(stride: usize) -> Self {
        Self {
            keys: Vec::new(),
            counts: Vec::new(),
            stride,
            free: Vec::new(),
        }
    }

    /// Links per block.
    pub(super) fn stride(&self) -> usize {
        self.stride
    }

    /// A block for a key's links.
    pub(super) fn alloc(&mut self) -> u32 {
        if let Some(block) = self.free.pop() {
            return block;
        }
        let block = self.keys.len() / self.stride;
        self.keys.resize(self.keys.len() + self.stride, 0);
        self.counts.resize(self.counts.len() + self.stride, 0.0);
        block as u32
    }

    /// Gives a block back.
    pub(super) fn release(&mut self, block: u32) {
        if block != NO_LINKS {
            self.free.push(block);
        }
    }

    /// The first `len` links of `block`: their keys and counts.
    pub(super) fn get(&self, block: u32, len: u8) -> (&[u64], &[f32]) {
        if block == NO_LINKS {
            return (&[], &[]);
        }
        let start = block as usize * self.stride;
        let end = start + usize::from(len);
        (&self.keys[start..end], &self.counts[start..end])
    }

    /// The whole of `block`, to change it.
    pub(super) fn block_mut(&mut self, block: u32) -> (&mut [u64], &mut [f32]) {
        let start = block as usize * self.stride;
        let end = start + self.stride;
        (&mut self.keys[start..end], &mut self.counts[start..end])
    }

    /// The bytes the arena holds.
    pub(super) fn bytes(&self) -> usize {
        self.keys.capacity() * 8 + self.counts.capacity() * 4 + self.free.capacity() * 4
    }
}
