//! Cache-line padding.

/// Aligns its content to 128 bytes (two cache lines, as adjacent-line prefetchers pair
/// them), so that no other data shares its lines: data written on every call must not sit
/// next to data every call reads.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);
