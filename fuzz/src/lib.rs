//! What the fuzz targets share: how they split a stream into reads.

/// Read lengths of 1 to 64 bytes, from a xorshift generator seeded with `seed` (a byte of the
/// fuzz input, so libFuzzer can steer the split too).
pub fn read_lengths(seed: u8) -> impl Iterator<Item = usize> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(seed);
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        1 + (state % 64) as usize
    })
}
