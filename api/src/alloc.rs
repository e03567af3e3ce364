//! The allocator setting of the API process.
//!
//! glibc's malloc gives threads separate arenas (up to 8 per core) and keeps freed memory in
//! the arena it came from. The response cache's bodies are allocated by whichever runtime
//! worker missed and freed by whichever evicts them, so the live bytes drift between the
//! workers' arenas and each arena keeps the high-water mark of its share: in the soak an
//! instance's resident memory stepped up 23 to 41 MiB at a random minute while the bytes in
//! use stayed level (glibc's `malloc_stats`, in `results/reliability.md`). With one arena every
//! freed chunk is reused, whichever thread frees it, and resident memory follows the bytes in
//! use.

/// Limit glibc's malloc to one arena, unless the environment sets it (`MALLOC_ARENA_MAX` or
/// `GLIBC_TUNABLES`). Call it before the runtime starts its threads. Other C libraries: nothing.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var_os("GLIBC_TUNABLES").is_some()
        {
            return;
        }
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        /// `M_ARENA_MAX` of glibc's `malloc.h`.
        const M_ARENA_MAX: std::ffi::c_int = -8;
        // SAFETY: mallopt only sets one of malloc's parameters, and glibc has M_ARENA_MAX.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
        }
    }
}
