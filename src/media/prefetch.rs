//! Cache prefetch hints for the packet path.
//!
//! At 1,000 calls every packet's state (its stream, its call, its channel's place in the
//! timeline ring) was last touched 20 ms and a thousand other calls ago: each is a miss to
//! memory, and the misses, not the arithmetic, were most of the media thread's own CPU. The
//! media thread knows from one poll which sockets it will read next, so it asks for their state
//! a few sockets ahead (`runtime::media`); the loads then arrive during the system calls in
//! between. A hint never faults and changes no result; on targets without SSE it does nothing.

/// Starts loading the cache line holding `x`.
#[inline(always)]
pub fn read<T>(x: &T) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    safe_arch::prefetch_t0(x);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = x;
}

/// Starts loading, for writing, every cache line `slice` spans.
#[inline(always)]
pub fn write_all<T>(slice: &[T]) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    {
        let step = (64 / std::mem::size_of::<T>().max(1)).max(1);
        for x in slice.iter().step_by(step) {
            safe_arch::prefetch_et0(x);
        }
        if let Some(last) = slice.last() {
            safe_arch::prefetch_et0(last);
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = slice;
}
