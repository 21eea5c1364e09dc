//! A fixed-size bit set and the rotating "next free" pool built on it.
//!
//! A /12 service CIDR has 2^20 addresses: as bits that is 128 KiB, and a
//! search for the next free bit touches at most 16 Ki words. Every allocator
//! in this crate keeps its state in a [`Pool`] and only maps values (IPs,
//! ports, subnets) to and from bit indexes.

/// A fixed-size set of bits packed into `u64` words, with a running count of
/// set bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    len: usize,
    ones: usize,
}

impl Bitmap {
    /// An all-clear bitmap of `len` bits.
    pub fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
            len,
            ones: 0,
        }
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> usize {
        self.ones
    }

    /// Whether bit `i` is set; false for `i >= len`.
    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; returns false if it was already set or `i >= len`.
    pub fn set(&mut self, i: usize) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.words[i / 64] |= 1 << (i % 64);
        self.ones += 1;
        true
    }

    /// Clears bit `i`; returns false if it was already clear or `i >= len`.
    pub fn clear(&mut self, i: usize) -> bool {
        if !self.get(i) {
            return false;
        }
        self.words[i / 64] &= !(1 << (i % 64));
        self.ones -= 1;
        true
    }

    /// The lowest clear bit in `start..end` (end clamped to `len`).
    pub fn first_clear_in(&self, start: usize, end: usize) -> Option<usize> {
        let end = end.min(self.len);
        let mut i = start;
        while i < end {
            let word_index = i / 64;
            // Bits below `i` in this word are outside the search; treat them
            // as set so they are skipped.
            let below = (1u64 << (i % 64)) - 1;
            let free = !(self.words[word_index] | below);
            if free != 0 {
                let found = word_index * 64 + free.trailing_zeros() as usize;
                return (found < end).then_some(found);
            }
            i = (word_index + 1) * 64;
        }
        None
    }

    /// Number of set bits in `start..end` (end clamped to `len`).
    pub fn count_ones_in(&self, start: usize, end: usize) -> usize {
        (start..end.min(self.len)).filter(|&i| self.get(i)).count()
    }

    /// Indexes of the set bits, ascending.
    pub fn iter_ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words
            .iter()
            .enumerate()
            .filter(|(_, word)| **word != 0)
            .flat_map(|(word_index, &word)| {
                let mut rest = word;
                std::iter::from_fn(move || {
                    if rest == 0 {
                        return None;
                    }
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    Some(word_index * 64 + bit)
                })
            })
    }
}

/// Allocation state over `len` indexes: which are held, plus a rotating
/// cursor for dynamic allocation.
///
/// Indexes below `dynamic_start` may be taken only by explicit request
/// ([`Pool::take`]); [`Pool::take_next`] searches `dynamic_start..len` from
/// the cursor, wrapping once, and leaves the cursor just past what it
/// returned. So a released index is handed out again only after the cursor
/// has gone round the whole range, which keeps a just-freed ClusterIP or pod
/// IP out of circulation while stale conntrack entries and caches age out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    bits: Bitmap,
    dynamic_start: usize,
    cursor: usize,
}

impl Pool {
    /// An empty pool of `len` indexes whose first `dynamic_start` are only
    /// explicitly allocatable. `dynamic_start` is clamped to `len`.
    pub fn new(len: usize, dynamic_start: usize) -> Self {
        let dynamic_start = dynamic_start.min(len);
        Self {
            bits: Bitmap::new(len),
            dynamic_start,
            cursor: dynamic_start,
        }
    }

    /// Number of indexes.
    pub fn len(&self) -> usize {
        self.bits.len()
    }

    /// Number of held indexes.
    pub fn used(&self) -> usize {
        self.bits.count_ones()
    }

    /// Number of indexes [`Pool::take_next`] can still return.
    pub fn dynamic_free(&self) -> usize {
        let reserved_held = self.bits.count_ones_in(0, self.dynamic_start);
        (self.len() - self.dynamic_start) - (self.used() - reserved_held)
    }

    /// Whether `i` is held.
    pub fn contains(&self, i: usize) -> bool {
        self.bits.get(i)
    }

    /// Where the next dynamic search starts.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Moves the cursor; returns false (and leaves it) if `i` is outside the
    /// dynamic range.
    pub fn set_cursor(&mut self, i: usize) -> bool {
        if i < self.dynamic_start || i >= self.len() {
            return false;
        }
        self.cursor = i;
        true
    }

    /// Takes the first free dynamic index at or after the cursor, wrapping
    /// round once; None when the dynamic range is full.
    pub fn take_next(&mut self) -> Option<usize> {
        let len = self.len();
        let found = self
            .bits
            .first_clear_in(self.cursor, len)
            .or_else(|| self.bits.first_clear_in(self.dynamic_start, self.cursor))?;
        self.bits.set(found);
        self.cursor = if found + 1 >= len {
            self.dynamic_start
        } else {
            found + 1
        };
        Some(found)
    }

    /// Takes index `i`; false if already held or out of bounds.
    pub fn take(&mut self, i: usize) -> bool {
        self.bits.set(i)
    }

    /// Releases index `i`; false if it was not held.
    pub fn put(&mut self, i: usize) -> bool {
        self.bits.clear(i)
    }

    /// Held indexes, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter_ones()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_get_and_count() {
        let mut b = Bitmap::new(130);
        assert!(b.set(0));
        assert!(b.set(64));
        assert!(b.set(129));
        assert!(!b.set(64), "second set of the same bit reports false");
        assert!(!b.set(130), "out of bounds");
        assert_eq!(b.count_ones(), 3);
        assert!(b.get(129));
        assert!(!b.get(128));
        assert!(b.clear(64));
        assert!(!b.clear(64));
        assert!(!b.clear(500));
        assert_eq!(b.count_ones(), 2);
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![0, 129]);
    }

    #[test]
    fn first_clear_skips_full_words_and_respects_bounds() {
        let mut b = Bitmap::new(200);
        for i in 0..150 {
            b.set(i);
        }
        assert_eq!(b.first_clear_in(0, 200), Some(150));
        assert_eq!(b.first_clear_in(151, 200), Some(151));
        assert_eq!(b.first_clear_in(0, 150), None);
        assert_eq!(b.first_clear_in(0, 151), Some(150));
        // The tail bits of the last word beyond len are never reported.
        for i in 150..200 {
            b.set(i);
        }
        assert_eq!(b.first_clear_in(0, 10_000), None);
        b.clear(3);
        assert_eq!(b.first_clear_in(2, 200), Some(3));
        assert_eq!(b.first_clear_in(4, 200), None);
    }

    #[test]
    fn count_ones_in_counts_only_the_window() {
        let mut b = Bitmap::new(100);
        b.set(1);
        b.set(5);
        b.set(99);
        assert_eq!(b.count_ones_in(0, 2), 1);
        assert_eq!(b.count_ones_in(2, 99), 1);
        assert_eq!(b.count_ones_in(0, 1000), 3);
    }

    #[test]
    fn pool_rotates_and_wraps() {
        let mut p = Pool::new(5, 1);
        assert_eq!(p.take_next(), Some(1));
        assert_eq!(p.take_next(), Some(2));
        assert!(p.put(1));
        // 1 was just released: the cursor moves on to 3 first.
        assert_eq!(p.take_next(), Some(3));
        assert_eq!(p.take_next(), Some(4));
        // Wrapped: 0 is below the dynamic start, so 1 comes back.
        assert_eq!(p.take_next(), Some(1));
        assert_eq!(p.take_next(), None);
        assert_eq!(p.dynamic_free(), 0);
        assert!(!p.contains(0));
        assert!(
            p.take(0),
            "index below dynamic_start is explicitly takeable"
        );
        assert_eq!(p.used(), 5);
    }

    #[test]
    fn pool_dynamic_free_ignores_reserved_indexes() {
        let mut p = Pool::new(4, 1);
        assert_eq!(p.dynamic_free(), 3);
        p.take(0);
        assert_eq!(p.dynamic_free(), 3);
        p.take(2);
        assert_eq!(p.dynamic_free(), 2);
        assert_eq!(p.used(), 2);
    }

    #[test]
    fn pool_cursor_bounds() {
        let mut p = Pool::new(4, 1);
        assert!(!p.set_cursor(0));
        assert!(!p.set_cursor(4));
        assert!(p.set_cursor(3));
        assert_eq!(p.take_next(), Some(3));
        assert_eq!(p.cursor(), 1);
    }
}
