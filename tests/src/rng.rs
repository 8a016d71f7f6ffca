//! [`TestRng`]: the one small deterministic generator (xorshift64) of the agent's unit tests and
//! of this crate's tests and tools, so a seed means the same sequence everywhere. Not for keys
//! or anything an attacker may guess: those come from the kernel (`getrandom`).

/// A xorshift64 generator. A zero state stays zero: seed it with [`TestRng::new`] or a nonzero
/// value.
#[derive(Debug, Clone)]
pub struct TestRng(pub u64);

impl TestRng {
    /// A generator from any seed (made odd, so never zero).
    pub fn new(seed: u64) -> TestRng {
        TestRng(seed | 1)
    }

    /// The next 64 bits.
    #[allow(clippy::should_implement_trait)] // not an iterator: it never ends
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (slightly biased; fine for tests).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
