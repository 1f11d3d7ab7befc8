//! NumPy's legacy `np.random.RandomState(seed).shuffle`, bit for bit: the MT19937 generator
//! seeded as `init_genrand(seed)` and NumPy's Fisher-Yates with masked rejection sampling
//! (`random_interval`). Keras shuffles the files of `image_dataset_from_directory` with it
//! before taking the validation split, so the same seed puts the same files in each subset.

/// The Mersenne Twister MT19937.
pub(crate) struct Mt19937 {
    mt: [u32; 624],
    i: usize,
}

impl Mt19937 {
    /// `init_genrand(seed)`, as `RandomState(seed)` for an integer seed below 2^32.
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32.wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_add(i as u32);
        }
        Mt19937 { mt, i: 624 }
    }

    /// `genrand_int32`.
    pub fn next_u32(&mut self) -> u32 {
        if self.i >= 624 {
            for k in 0..624 {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(k + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.mt[k] = v;
            }
            self.i = 0;
        }
        let mut y = self.mt[self.i];
        self.i += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// NumPy's `random_interval(max)`: uniform on `0..=max`, by masked rejection.
    fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> s;
        }
        if max <= 0xffff_ffff {
            loop {
                let v = (self.next_u32() as u64) & mask;
                if v <= max {
                    return v;
                }
            }
        }
        loop {
            let v = (((self.next_u32() as u64) << 32) | self.next_u32() as u64) & mask;
            if v <= max {
                return v;
            }
        }
    }
}

/// `np.random.RandomState(seed).shuffle(items)` for a Python list.
pub(crate) fn shuffle<T>(items: &mut [T], seed: u32) {
    let mut rng = Mt19937::new(seed);
    for i in (1..items.len()).rev() {
        let j = rng.interval(i as u64) as usize;
        items.swap(i, j);
    }
}
