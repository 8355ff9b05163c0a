// JavaScript face of fuse::MountSession: one mounted archive.
//
//   new MountSession(options, onMiss, onEnded)
//     options: {archive, mountpoint, threads, cloneFd, allowOther, cacheDir,
//               deadlineMs, entryTimeout, readAheadKb, fsname, subtype, debug}
//     onMiss(id, layer, offset, length): a read the disk cache cannot serve;
//       answer with complete(id, buffer) or fail(id, errno), from the JS thread
//     onEnded(): the mount went away by itself (unmounted from outside)
//   start(): Promise<void>     mounts; resolves when the mount is ready
//   stop(): Promise<void>      unmounts (also with files open) and stops
//   complete(id, buffer) / fail(id, errno): boolean (false: already answered)
//   stats(): plain object of counters
//
// Misses reach JavaScript through a thread-safe function called with
// NonBlockingCall from the FUSE threads: queueing never blocks them, and a
// miss that is not answered within deadlineMs fails with EIO natively.
// start() and stop() run on the libuv pool (mount(2) and the unmount wait
// for the kernel); the session itself runs on its own native threads.
#pragma once

#include <napi.h>

#include <memory>

#include "../fuse/miss_handler.h"
#include "../fuse/mount_session.h"

namespace clip::binding {

class MountSessionWrap : public Napi::ObjectWrap<MountSessionWrap>, public fuse::MissHandler {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit MountSessionWrap(const Napi::CallbackInfo& info);
  ~MountSessionWrap() override;

  // fuse::MissHandler, called on FUSE threads.
  bool Submit(const fuse::MissRequest& miss) noexcept override;
  void SessionEnded() noexcept override;

  fuse::MountSession& session() { return *session_; }
  // Releases the thread-safe functions (after stop; on the JS thread).
  void ReleaseCallbacks();

 private:
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value Stop(const Napi::CallbackInfo& info);
  Napi::Value Complete(const Napi::CallbackInfo& info);
  Napi::Value Fail(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);

  std::unique_ptr<fuse::MountSession> session_;
  Napi::ThreadSafeFunction on_miss_;
  Napi::ThreadSafeFunction on_ended_;
  bool callbacks_live_ = false;  // JS thread only
  bool started_ = false;         // JS thread only
};

}  // namespace clip::binding
