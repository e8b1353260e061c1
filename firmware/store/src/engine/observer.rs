//! The engine's hook for layers above that want to see file content as it arrives (the
//! bundle layer hashes VM files on the way in), so that the engine itself knows nothing of
//! what the files are.

use std::any::Any;

/// Told of new regular files and of every change to their content, in the writer's thread
/// and outside the store lock (keep it cheap: it delays the client's reply).
pub trait WriteObserver: Send + Sync + 'static {
    /// A regular file `name` was created with id `id` (empty).
    fn created(&self, id: u64, name: &[u8]);
    /// `data` was written at `offset` of file `id` (a durable write once it is durable, an
    /// unstable one once it is queued).
    fn wrote(&self, id: u64, offset: u64, data: &[u8]);
    /// File `id` was truncated or extended to `size`.
    fn resized(&self, id: u64, size: u64);
    /// The observer as [`Any`], so that its owner can find it again on the store.
    fn as_any(&self) -> &dyn Any;
}
