// Process memory housekeeping for a long-lived mount.
//
// glibc keeps memory that was freed inside its heaps (the main arena's brk
// heap and each thread's arena) for reuse; it gives back only a free tail
// of the main heap on its own. After a burst of misses the freed buffers of
// the inflate and FUSE threads leave whole free pages in the middle of
// those heaps: measured after a cold walk of the demo image, malloc_trim
// returned 3 to 8 MiB that the process would otherwise keep resident while
// it sits idle. TypeScript's memory governor calls this when a mount has
// gone quiet and its garbage has been collected.
#pragma once

#include <napi.h>

namespace clip::binding {

// Adds the functions below to `exports` under the names in their comments.
void RegisterMemoryFunctions(Napi::Env env, Napi::Object exports);

// trimMemory(): boolean
//   malloc_trim(0): returns the free pages of every malloc arena to the
//   kernel; true when some memory was released. Takes a few milliseconds at
//   most (it walks the arenas' free lists) and blocks other threads'
//   malloc calls meanwhile, so call it only when the process is quiet.
Napi::Value TrimMemory(const Napi::CallbackInfo& info);

// releaseBuffer(buffer): boolean
//   Frees a Buffer's memory now instead of at the garbage collection that
//   finds it dead: detaches its ArrayBuffer (napi_detach_arraybuffer), after
//   which the Buffer, and every view of that ArrayBuffer, has length 0. Only
//   for a Buffer that spans its whole ArrayBuffer (never a slice of Node's
//   pool, which other Buffers share) and that nothing else will read: a
//   caller that still holds it sees no bytes, never other bytes. Returns
//   false, doing nothing, when the Buffer is not such a one. Why: the miss
//   path's Buffers live across asynchronous work, are promoted to V8's old
//   generation, and would wait for a full collection (see memory.ts).
Napi::Value ReleaseBuffer(const Napi::CallbackInfo& info);

// tuneMalloc(bytes): boolean
//   mallopt(M_MMAP_THRESHOLD, bytes) and M_TRIM_THRESHOLD 2 * bytes, for
//   the process (the mount daemon calls it at start). Blocks of `bytes` or
//   more are mmap'd on their own and unmapped by free(). Without it glibc's
//   threshold follows the largest block freed so far: once Buffers of a few
//   hundred KiB had been freed, they came from the arenas, and a cold walk
//   of the demo image left 36 MiB free but resident in them (mallinfo2:
//   47 MiB arena, 11 MiB in use; with a 64 KiB threshold 7 MiB and 5 MiB).
Napi::Value TuneMalloc(const Napi::CallbackInfo& info);

// mallocStats(): { arenaBytes, mmappedBytes, inUseBytes, freeBytes }
//   glibc's mallinfo2() over all arenas: bytes of the brk/arena heaps,
//   of chunks mmap'd on their own, allocated, and free but kept. For the
//   memory trace (CLIP_MEMORY_TRACE_MS): it tells native allocations apart
//   from V8's and Buffers' in the process's anonymous memory. Locks every
//   arena while it walks them: a debugging aid, not for a hot path.
Napi::Value MallocStats(const Napi::CallbackInfo& info);

}  // namespace clip::binding
