//! The shared table's word: `AtomicU64` where the target has 64-bit atomics, and a stand-in made
//! of two `AtomicU32` halves where it does not (32-bit MIPS, the big router family).
//!
//! Everything else in the crate names `crate::atomic::AtomicU64`, so the layout code is the same
//! on every target. The stand-in has the size, alignment and byte order of a native `u64` (the
//! high half first on big-endian), so a table file maps to the same words either way, and it is
//! address-free: no lock hidden in the process, so it means the same in every process mapping the
//! table.
//!
//! **What the stand-in cannot do** is change both halves in one step. Each half is atomic, so a
//! load that races a store whose high half changes may see the old high half with the new low half
//! for an instant. In lbfo that can happen to a record's or the index's sequence number once
//! every 2^31 writes of it (the seqlock's equality check still refuses the torn read: a torn
//! sequence differs from the values before and after it), to a usage counter after 2^32 lookups of
//! one backend, and to the heartbeat once every ~50 days (`status` may then call the agent late
//! for one read). Every other word is guarded by a seqlock, whose re-check catches torn reads.
//! On musl routers there is no NSS module: the agent and `status` are the only processes that
//! map the table.

#[cfg(target_has_atomic = "64")]
pub use core::sync::atomic::AtomicU64;

#[cfg(not(target_has_atomic = "64"))]
pub use split::AtomicU64;

#[cfg(any(test, not(target_has_atomic = "64")))]
mod split {
    use core::fmt;
    use core::sync::atomic::{AtomicU32, Ordering};

    /// A 64-bit word kept as two atomic 32-bit halves in native byte order; see the module docs
    /// for when a load can see a torn value.
    #[repr(C, align(8))]
    pub struct AtomicU64 {
        /// `[high, low]` on big-endian targets, `[low, high]` on little-endian ones.
        halves: [AtomicU32; 2],
    }

    #[cfg(target_endian = "big")]
    const HI: usize = 0;
    #[cfg(target_endian = "little")]
    const HI: usize = 1;
    const LO: usize = 1 - HI;

    impl AtomicU64 {
        /// A word holding `v`.
        pub const fn new(v: u64) -> AtomicU64 {
            let (hi, lo) = (AtomicU32::new((v >> 32) as u32), AtomicU32::new(v as u32));
            AtomicU64 {
                halves: if HI == 0 { [hi, lo] } else { [lo, hi] },
            }
        }

        fn hi(&self) -> &AtomicU32 {
            &self.halves[HI]
        }

        fn lo(&self) -> &AtomicU32 {
            &self.halves[LO]
        }

        /// Loads the high half, then the low half, each with `order`.
        pub fn load(&self, order: Ordering) -> u64 {
            let hi = self.hi().load(order);
            let lo = self.lo().load(order);
            (u64::from(hi) << 32) | u64::from(lo)
        }

        /// Stores the low half, then the high half, each with `order`.
        pub fn store(&self, v: u64, order: Ordering) {
            self.lo().store(v as u32, order);
            self.hi().store((v >> 32) as u32, order);
        }

        /// Adds `v` (wrapping) and returns the previous value: the low half first, then the high
        /// half with the carry. Concurrent adds never lose an increment.
        pub fn fetch_add(&self, v: u64, order: Ordering) -> u64 {
            let old_lo = self.lo().fetch_add(v as u32, order);
            let carry = u32::from(old_lo.checked_add(v as u32).is_none());
            let old_hi = self
                .hi()
                .fetch_add(((v >> 32) as u32).wrapping_add(carry), order);
            (u64::from(old_hi) << 32) | u64::from(old_lo)
        }

        /// Stores `new` if the word holds `current`: `Ok(current)`, else `Err` with what it
        /// holds. The low half is compared and swapped in one step, the high half checked before
        /// and stored after, so an add that carries into the high half between the two can be
        /// lost. The agent's only use is putting back a usage counter (see the module docs: on
        /// these targets no lookup counts).
        pub fn compare_exchange(
            &self,
            current: u64,
            new: u64,
            success: Ordering,
            failure: Ordering,
        ) -> Result<u64, u64> {
            if self.hi().load(failure) != (current >> 32) as u32 {
                return Err(self.load(failure));
            }
            match self
                .lo()
                .compare_exchange(current as u32, new as u32, success, failure)
            {
                Ok(_) => {
                    self.hi().store((new >> 32) as u32, success);
                    Ok(current)
                }
                Err(_) => Err(self.load(failure)),
            }
        }
    }

    impl Default for AtomicU64 {
        fn default() -> AtomicU64 {
            AtomicU64::new(0)
        }
    }

    impl fmt::Debug for AtomicU64 {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Debug::fmt(&self.load(Ordering::Relaxed), f)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::{AtomicU64, HI};
        use core::sync::atomic::Ordering::Relaxed;

        #[test]
        fn split_word_has_the_native_layout() {
            assert_eq!(core::mem::size_of::<AtomicU64>(), 8);
            assert_eq!(core::mem::align_of::<AtomicU64>(), 8);
            let w = AtomicU64::new(0x0102_0304_0506_0708);
            let halves = w.halves.each_ref().map(|h| h.load(Relaxed).to_ne_bytes());
            assert_eq!(halves.concat(), 0x0102_0304_0506_0708u64.to_ne_bytes());
            assert_eq!(w.halves[HI].load(Relaxed), 0x0102_0304);
        }

        #[test]
        fn split_word_loads_stores_and_carries() {
            let w = AtomicU64::new(u64::from(u32::MAX));
            assert_eq!(w.fetch_add(1, Relaxed), 0xffff_ffff);
            assert_eq!(w.load(Relaxed), 1 << 32);
            assert_eq!(w.fetch_add(0x1_0000_0002, Relaxed), 1 << 32);
            assert_eq!(w.load(Relaxed), 0x2_0000_0002);
            w.store(u64::MAX, Relaxed);
            assert_eq!(w.fetch_add(1, Relaxed), u64::MAX);
            assert_eq!(w.load(Relaxed), 0);
            assert_eq!(format!("{w:?}"), "0");
        }

        #[test]
        fn split_word_compares_and_exchanges_both_halves() {
            let w = AtomicU64::new(0x1_0000_0005);
            assert_eq!(
                w.compare_exchange(5, 7, Relaxed, Relaxed),
                Err(0x1_0000_0005)
            );
            assert_eq!(
                w.compare_exchange(0x2_0000_0005, 7, Relaxed, Relaxed),
                Err(0x1_0000_0005)
            );
            assert_eq!(
                w.compare_exchange(0x1_0000_0005, 0x3_0000_0009, Relaxed, Relaxed),
                Ok(0x1_0000_0005)
            );
            assert_eq!(w.load(Relaxed), 0x3_0000_0009);
        }

        #[test]
        fn split_word_counts_every_concurrent_add() {
            let w = AtomicU64::new(0xffff_f000);
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        for _ in 0..10_000 {
                            w.fetch_add(1, Relaxed);
                        }
                    });
                }
            });
            assert_eq!(w.load(Relaxed), 0xffff_f000 + 40_000);
        }
    }
}
