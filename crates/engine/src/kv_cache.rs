//! Bookkeeping of the paged KV cache: which physical blocks are free, which are shared, and
//! which full blocks hold a cached prefix.
//!
//! The executor owns `num_blocks` physical blocks of `block_size` token slots; this allocator
//! only hands out their ids. A block is in exactly one of three states:
//!
//! - **in use**: `ref_count > 0`; one reference per sequence whose block table holds it (a full
//!   block of a shared prompt prefix is held by several sequences at once);
//! - **cached**: `ref_count == 0` but the block is full and registered under the hash of its
//!   content chain, so a later prompt with the same prefix can take it back without recomputing
//!   it; cached blocks sit in an LRU order and are evicted when no plain free block is left;
//! - **free**: `ref_count == 0` and no content worth keeping.
//!
//! The content hash of block `i` chains the hash of block `i - 1` with the block's tokens (as in
//! vLLM's automatic prefix caching), so equal hashes mean equal *prefixes*, not just equal
//! blocks. The tokens are stored beside the hash and compared on lookup, so a hash collision can
//! only cost a cache miss, never a wrong answer.
//!
//! All operations are O(1) or O(log n) in the number of blocks.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// The hash of a full block's content chain; see the module docs.
pub type BlockHash = u64;

/// Computes the chained hash of a full block whose predecessor has hash `parent` (None for the
/// first block).
pub fn chain_hash(parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
    // `DefaultHasher::new()` uses fixed keys, so hashes are stable within a process, which is
    // all a process-local cache needs.
    let mut hasher = std::hash::DefaultHasher::new();
    parent.hash(&mut hasher);
    tokens.hash(&mut hasher);
    hasher.finish()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvCacheError {
    /// A block was released more often than it was acquired: a scheduler bug.
    #[error("block {0} released while not in use")]
    DoubleFree(u32),
    #[error("block {0} does not exist")]
    UnknownBlock(u32),
}

#[derive(Debug, Clone, Default)]
struct BlockState {
    ref_count: u32,
    /// Set while the block is registered in the prefix cache.
    cached: Option<CachedContent>,
    /// Position in the LRU order while the block is cached and unreferenced.
    lru_tick: Option<u64>,
}

#[derive(Debug, Clone)]
struct CachedContent {
    hash: BlockHash,
    parent: Option<BlockHash>,
    tokens: Vec<u32>,
}

/// Counters for the prefix cache, in blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheCounters {
    pub queried_blocks: u64,
    pub hit_blocks: u64,
}

/// The block allocator with its prefix cache; see the module docs.
#[derive(Debug)]
pub struct BlockAllocator {
    block_size: usize,
    blocks: Vec<BlockState>,
    /// Blocks with no references and no cached content; popped from the end.
    free: Vec<u32>,
    /// Cached, unreferenced blocks by last use (oldest first).
    evictable: BTreeMap<u64, u32>,
    by_hash: HashMap<BlockHash, u32>,
    next_tick: u64,
    counters: PrefixCacheCounters,
}

impl BlockAllocator {
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        // Reverse order so that block 0 is handed out first: easier to read in test snapshots.
        let free = (0..num_blocks as u32).rev().collect();
        Self {
            block_size,
            blocks: vec![BlockState::default(); num_blocks],
            free,
            evictable: BTreeMap::new(),
            by_hash: HashMap::new(),
            next_tick: 0,
            counters: PrefixCacheCounters::default(),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks that an allocation could return right now (free plus evictable cached ones).
    pub fn num_available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Blocks referenced by at least one sequence.
    pub fn num_in_use(&self) -> usize {
        self.num_blocks() - self.num_available()
    }

    /// Cached blocks (referenced or not) that a prompt could reuse.
    pub fn num_cached(&self) -> usize {
        self.by_hash.len()
    }

    pub fn counters(&self) -> PrefixCacheCounters {
        self.counters
    }

    /// Takes a block for a sequence (ref count 1), evicting the least recently used cached block
    /// when no free block is left. None when every block is in use.
    pub fn allocate(&mut self) -> Option<u32> {
        let block = match self.free.pop() {
            Some(block) => block,
            None => {
                let (_, block) = self.evictable.pop_first()?;
                let state = &mut self.blocks[block as usize];
                state.lru_tick = None;
                if let Some(content) = state.cached.take() {
                    self.by_hash.remove(&content.hash);
                }
                block
            }
        };
        self.blocks[block as usize].ref_count = 1;
        Some(block)
    }

    /// Looks up the full block that follows `parent` with content `tokens`; on a hit the caller
    /// holds one more reference to the returned block.
    pub fn acquire_cached(&mut self, parent: Option<BlockHash>, tokens: &[u32]) -> Option<u32> {
        self.counters.queried_blocks += 1;
        let hash = chain_hash(parent, tokens);
        let block = *self.by_hash.get(&hash)?;
        let state = &mut self.blocks[block as usize];
        let content_matches = state
            .cached
            .as_ref()
            .is_some_and(|content| content.parent == parent && content.tokens == tokens);
        if !content_matches {
            return None;
        }
        if let Some(tick) = state.lru_tick.take() {
            self.evictable.remove(&tick);
        }
        state.ref_count += 1;
        self.counters.hit_blocks += 1;
        Some(block)
    }

    /// Registers a full, computed block under its content chain so later prompts can reuse it.
    /// A no-op when an equal block is already registered (two sequences computed the same
    /// prefix at once) or when this block is already registered.
    pub fn register_full_block(
        &mut self,
        block: u32,
        parent: Option<BlockHash>,
        tokens: &[u32],
    ) -> BlockHash {
        let hash = chain_hash(parent, tokens);
        let Some(state) = self.blocks.get_mut(block as usize) else {
            return hash;
        };
        if state.cached.is_some() || self.by_hash.contains_key(&hash) {
            return hash;
        }
        state.cached = Some(CachedContent {
            hash,
            parent,
            tokens: tokens.to_vec(),
        });
        self.by_hash.insert(hash, block);
        hash
    }

    /// Drops one reference; a block nobody references becomes evictable (if cached) or free.
    pub fn release(&mut self, block: u32) -> Result<(), KvCacheError> {
        let state = self
            .blocks
            .get_mut(block as usize)
            .ok_or(KvCacheError::UnknownBlock(block))?;
        if state.ref_count == 0 {
            return Err(KvCacheError::DoubleFree(block));
        }
        state.ref_count -= 1;
        if state.ref_count > 0 {
            return Ok(());
        }
        if state.cached.is_some() {
            let tick = self.next_tick;
            self.next_tick += 1;
            state.lru_tick = Some(tick);
            self.evictable.insert(tick, block);
        } else {
            self.free.push(block);
        }
        Ok(())
    }

    pub fn ref_count(&self, block: u32) -> u32 {
        self.blocks
            .get(block as usize)
            .map_or(0, |state| state.ref_count)
    }

    /// Checks the allocator's internal consistency; used by tests and debug assertions.
    pub fn check_consistency(&self) -> Result<(), String> {
        let mut seen_unreferenced = 0;
        for (index, state) in self.blocks.iter().enumerate() {
            let block = index as u32;
            if state.ref_count == 0 {
                seen_unreferenced += 1;
                let in_free = self.free.contains(&block);
                let in_lru = state
                    .lru_tick
                    .is_some_and(|tick| self.evictable.get(&tick) == Some(&block));
                if in_free == in_lru {
                    return Err(format!("block {block} free={in_free} evictable={in_lru}"));
                }
                if in_lru != state.cached.is_some() {
                    return Err(format!("block {block} evictable without cached content"));
                }
            } else if state.lru_tick.is_some() || self.free.contains(&block) {
                return Err(format!("block {block} referenced but listed as available"));
            }
        }
        if seen_unreferenced != self.num_available() {
            return Err("available count does not match unreferenced blocks".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_until_exhausted_then_release_makes_blocks_available() {
        let mut allocator = BlockAllocator::new(2, 4);
        let first = allocator.allocate().expect("first block");
        let second = allocator.allocate().expect("second block");
        assert_eq!(allocator.allocate(), None);
        assert_eq!(allocator.num_in_use(), 2);
        allocator.release(first).expect("release");
        allocator.release(second).expect("release");
        assert_eq!(allocator.num_available(), 2);
        assert_eq!(
            allocator.release(first),
            Err(KvCacheError::DoubleFree(first))
        );
        allocator.check_consistency().expect("consistent");
    }

    #[test]
    fn cached_block_is_reused_then_evicted_in_lru_order() {
        let mut allocator = BlockAllocator::new(2, 2);
        let older = allocator.allocate().expect("block");
        let older_hash = allocator.register_full_block(older, None, &[1, 2]);
        let newer = allocator.allocate().expect("block");
        allocator.register_full_block(newer, Some(older_hash), &[3, 4]);
        allocator.release(older).expect("release");
        allocator.release(newer).expect("release");
        assert_eq!(allocator.num_available(), 2);

        // A hit takes the block out of the LRU list.
        assert_eq!(allocator.acquire_cached(None, &[1, 2]), Some(older));
        assert_eq!(allocator.acquire_cached(None, &[9, 9]), None);
        // Wrong parent: the same tokens after another prefix are not the same block.
        assert_eq!(allocator.acquire_cached(None, &[3, 4]), None);
        // The only evictable block is `newer`; allocating evicts it.
        assert_eq!(allocator.allocate(), Some(newer));
        assert_eq!(allocator.acquire_cached(Some(older_hash), &[3, 4]), None);
        assert_eq!(allocator.counters().hit_blocks, 1);
        allocator.check_consistency().expect("consistent");
    }
}
