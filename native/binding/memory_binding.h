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

}  // namespace clip::binding
