// Filesystem calls Node's fs module lacks, for the storage tiers and
// `extract`: flock (the disk cache's pin and fill locks, shared with the
// FUSE mount's C++ code), mknod (device nodes and fifos), utimensat with
// nanoseconds and no symlink following, and lsetxattr.
//
// Each function is a thin synchronous wrapper over one system call that
// never blocks for long: flock is always LOCK_NB (callers poll, so a
// waiting lock can be given up), the others are metadata calls. Instead of
// throwing, each returns 0 on success or the errno value, so TypeScript can
// turn it into the usual Node-style error (`err.code === 'EPERM'`) and
// decide per call site what a failure means. Bad arguments throw EINVAL.
#pragma once

#include <napi.h>

namespace clip::binding {

// Adds the functions below to `exports` under the names in their comments.
void RegisterFsFunctions(Napi::Env env, Napi::Object exports);

// fsTryFlock(fd: number, op: 'shared' | 'exclusive' | 'unlock'): number
//   flock(fd, LOCK_SH|LOCK_EX|LOCK_UN | LOCK_NB); EWOULDBLOCK means held by another.
Napi::Value FsTryFlock(const Napi::CallbackInfo& info);
// fsMknod(path: string, mode: number, major: number, minor: number): number
//   mknod(path, mode, makedev(major, minor)); mode carries the file type bits.
Napi::Value FsMknod(const Napi::CallbackInfo& info);
// fsLutimens(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec): number
//   utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW).
Napi::Value FsLutimens(const Napi::CallbackInfo& info);
// fsLsetxattr(path: string, name: string, value: Buffer): number
Napi::Value FsLsetxattr(const Napi::CallbackInfo& info);

}  // namespace clip::binding
