//! [`VecMap`]: a map kept as one vector sorted by key, for the agent's few, small maps.
//!
//! It iterates in key order and its methods mean what `BTreeMap`'s of the same name mean, so it
//! replaced `BTreeMap`/`BTreeSet` without changing any order the agent shows or sends. The
//! reason is size: each B-tree instantiation brings its own copy of the node code, and the
//! router build had eight of them; a sorted vector costs a binary search, `Vec::insert` and
//! `Vec::remove`.
//!
//! Lookups are `O(log n)`; an insert or a removal moves the entries after it, which is cheap for
//! what the agent keeps here (the largest map holds at most [`MAX_SERVICES`] boxed services, and
//! services are created rarely).
//!
//! [`MAX_SERVICES`]: lbfo_core::MAX_SERVICES

use std::borrow::Borrow;

/// A map as a vector of `(key, value)` sorted by key, keys unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecMap<K, V>(Vec<(K, V)>);

/// A set: a [`VecMap`] without values.
pub type VecSet<K> = VecMap<K, ()>;

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Vec::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    /// An empty map.
    pub const fn new() -> Self {
        VecMap(Vec::new())
    }

    fn find<Q: Ord + ?Sized>(&self, k: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(x, _)| x.borrow().cmp(k))
    }

    /// The value of `k`.
    pub fn get<Q: Ord + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(k).ok().map(|i| &self.0[i].1)
    }

    /// The value of `k`, to change.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.find(k).ok().map(|i| &mut self.0[i].1)
    }

    /// Whether `k` is in the map.
    pub fn contains_key<Q: Ord + ?Sized>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(k).is_ok()
    }

    /// The value of `k`, inserting `f()` first if `k` is not there.
    pub fn get_or_insert_with(&mut self, k: K, f: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(&k) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (k, f()));
                i
            }
        };
        &mut self.0[i].1
    }

    /// Sets `k` to `v`; the old value, if any.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        match self.find(&k) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, v)),
            Err(i) => {
                self.0.insert(i, (k, v));
                None
            }
        }
    }

    /// Takes `k` out; its value, if it was there.
    pub fn remove<Q: Ord + ?Sized>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.find(k).ok().map(|i| self.0.remove(i).1)
    }

    /// Keeps the entries for which `f` says yes, in order. (Kept entries are swapped forward
    /// and the rest cut off the end: less code per map type than `Vec::retain_mut`.)
    pub fn retain(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        let mut kept = 0;
        for i in 0..self.0.len() {
            let (k, v) = &mut self.0[i];
            if f(k, v) {
                self.0.swap(kept, i);
                kept += 1;
            }
        }
        self.0.truncate(kept);
    }
}

impl<K, V> VecMap<K, V> {
    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The entries in key order, values to change.
    pub fn iter_mut(
        &mut self,
    ) -> impl DoubleEndedIterator<Item = (&K, &mut V)> + ExactSizeIterator {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }

    /// The keys in order, by value.
    pub fn into_keys(self) -> impl DoubleEndedIterator<Item = K> + ExactSizeIterator {
        self.0.into_iter().map(|(k, _)| k)
    }

    /// The entry at index `i` (in key order), to change its value.
    pub fn get_index_mut(&mut self, i: usize) -> Option<(&K, &mut V)> {
        self.0.get_mut(i).map(|(k, v)| (&*k, v))
    }

    /// The values in key order, to change.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.0.iter_mut().map(|(_, v)| v)
    }
}

impl<K: Ord> VecSet<K> {
    /// Whether `k` is in the set.
    pub fn contains<Q: Ord + ?Sized>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.contains_key(k)
    }
}

/// Later entries win, as with `BTreeMap`.
impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = VecMap::new();
        m.extend(iter);
        m
    }
}

impl<K: Ord, V> Extend<(K, V)> for VecMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

type Pair<'a, K, V> = (&'a K, &'a V);

impl<'a, K, V> IntoIterator for &'a VecMap<K, V> {
    type Item = Pair<'a, K, V>;
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> Pair<'a, K, V>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_keys_sorted_and_unique() {
        let mut m: VecMap<String, u32> = [("b", 1), ("a", 2), ("c", 3), ("a", 4)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(
            m.keys().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(m.get("a"), Some(&4), "the later value wins");
        assert_eq!(m.insert("b".to_owned(), 5), Some(1));
        *m.get_or_insert_with("d".to_owned(), || 0) += 7;
        *m.get_or_insert_with("a".to_owned(), || 0) += 1;
        m.retain(|k, _| k != "c");
        assert_eq!(
            m.iter().map(|(k, v)| (k.as_str(), *v)).collect::<Vec<_>>(),
            [("a", 5), ("b", 5), ("d", 7)]
        );
        assert!(m.contains_key("d") && !m.contains_key("c"));
        assert_eq!(m.get_mut("zz"), None);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn retain_keeps_order_and_changes_and_drops_the_rest() {
        for mask in 0u32..256 {
            let mut m: VecMap<u32, String> = (0..8).map(|k| (k, format!("v{k}"))).collect();
            m.retain(|k, v| {
                v.push('!');
                mask & (1 << k) != 0
            });
            let want: Vec<(u32, String)> = (0..8)
                .filter(|k| mask & (1 << k) != 0)
                .map(|k| (k, format!("v{k}!")))
                .collect();
            let got: Vec<(u32, String)> = m.iter().map(|(k, v)| (*k, v.clone())).collect();
            assert_eq!(got, want, "mask {mask:08b}");
        }
    }
}
