//! Per-index-block bloom filters for sorted bases, kept in one flat bit array.
//!
//! Not exact: a positive means "read the block", a negative means "the key is not in this
//! block" for sure. Invariant: every key inserted into block `b` answers positive for `b`.

use xxhash_rust::xxh3::xxh3_128;

use crate::key::Key;

/// One bloom filter per block, `words_per_block` 64-bit words each.
#[derive(Debug, Default)]
pub(crate) struct BlockBloom {
    words: Vec<u64>,
    words_per_block: usize,
    hashes: u32,
}

impl BlockBloom {
    /// Filters for `blocks` blocks of up to `keys_per_block` keys at `bits_per_key`.
    pub(crate) fn new(blocks: usize, keys_per_block: u32, bits_per_key: u32) -> BlockBloom {
        if bits_per_key == 0 {
            return BlockBloom::default();
        }
        let bits = u64::from(keys_per_block) * u64::from(bits_per_key);
        let words_per_block = bits.div_ceil(64).max(1) as usize;
        // k = bits/key · ln 2 minimises the false-positive rate.
        let hashes =
            ((f64::from(bits_per_key) * std::f64::consts::LN_2).round() as u32).clamp(1, 16);
        BlockBloom {
            words: vec![0; blocks * words_per_block],
            words_per_block,
            hashes,
        }
    }

    fn probes(&self, key: &Key) -> impl Iterator<Item = usize> + '_ {
        let h = xxh3_128(&key.0);
        let (h1, h2) = (h as u64, (h >> 64) as u64 | 1);
        let bits = (self.words_per_block * 64) as u64;
        (0..u64::from(self.hashes))
            .map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % bits) as usize)
    }

    /// Add `key` to block `block`.
    pub(crate) fn insert(&mut self, block: usize, key: &Key) {
        if self.words_per_block == 0 {
            return;
        }
        let base = block * self.words_per_block;
        let probes: Vec<usize> = self.probes(key).collect();
        for bit in probes {
            if let Some(w) = self.words.get_mut(base + bit / 64) {
                *w |= 1 << (bit % 64);
            }
        }
    }

    /// Whether `key` may be in block `block` (always true without filters).
    pub(crate) fn may_contain(&self, block: usize, key: &Key) -> bool {
        if self.words_per_block == 0 {
            return true;
        }
        let base = block * self.words_per_block;
        self.probes(key).all(|bit| {
            self.words
                .get(base + bit / 64)
                .is_some_and(|w| w & (1 << (bit % 64)) != 0)
        })
    }

    /// RAM held by the filters.
    pub(crate) fn ram_bytes(&self) -> u64 {
        (self.words.capacity() * 8) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_keys_are_found_and_most_absent_keys_are_not() {
        let mut bloom = BlockBloom::new(100, 40, 10);
        let key = |i: u32| {
            let mut k = [0u8; 64];
            k[..4].copy_from_slice(&i.to_le_bytes());
            Key(k)
        };
        for i in 0..4000 {
            bloom.insert((i / 40) as usize, &key(i));
        }
        for i in 0..4000 {
            assert!(bloom.may_contain((i / 40) as usize, &key(i)));
        }
        let false_positives = (4000..14000)
            .filter(|i| bloom.may_contain(5, &key(*i)))
            .count();
        // 10 bits/key gives about 1 %; 5 % leaves room for the small sample.
        assert!(
            false_positives < 500,
            "{false_positives} false positives in 10000"
        );
    }
}
