#include "mount_binding.h"

#include <cerrno>
#include <string>

#include "archive_binding.h"
#include "errors.h"
#include "promise_worker.h"

namespace clip::binding {
namespace {

std::string StringOption(Napi::Object options, const char* key, const std::string& fallback, bool required) {
  Napi::Value v = options.Get(key);
  if (v.IsUndefined() || v.IsNull()) {
    if (required) ThrowInvalid(options.Env(), std::string("MountSession: option ") + key + " is required");
    return fallback;
  }
  if (!v.IsString()) ThrowInvalid(options.Env(), std::string("MountSession: option ") + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

double NumberOption(Napi::Object options, const char* key, double fallback, double min, double max) {
  Napi::Value v = options.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsNumber()) ThrowInvalid(options.Env(), std::string("MountSession: option ") + key + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= min && d <= max))
    ThrowInvalid(options.Env(), std::string("MountSession: option ") + key + " is out of range");
  return d;
}

bool BoolOption(Napi::Object options, const char* key, bool fallback) {
  Napi::Value v = options.Get(key);
  if (v.IsUndefined() || v.IsNull()) return fallback;
  return v.ToBoolean().Value();
}

class StartWorker final : public PromiseWorker {
 public:
  StartWorker(Napi::Env env, MountSessionWrap* wrap, Napi::Object self)
      : PromiseWorker(env), wrap_(wrap), self_(Napi::Persistent(self)) {}

 protected:
  void Run() override { wrap_->session().Start(); }
  Napi::Value Resolve(Napi::Env env) override { return env.Undefined(); }

 private:
  MountSessionWrap* wrap_;
  Napi::ObjectReference self_;  // keeps the wrapper alive while mounting
};

class StopWorker final : public PromiseWorker {
 public:
  StopWorker(Napi::Env env, MountSessionWrap* wrap, Napi::Object self)
      : PromiseWorker(env), wrap_(wrap), self_(Napi::Persistent(self)) {}

 protected:
  void Run() override { wrap_->session().Stop(); }
  Napi::Value Resolve(Napi::Env env) override {
    // The session's threads are gone: nothing can call into JS any more.
    wrap_->ReleaseCallbacks();
    return env.Undefined();
  }

 private:
  MountSessionWrap* wrap_;
  Napi::ObjectReference self_;
};

}  // namespace

Napi::Function MountSessionWrap::Define(Napi::Env env) {
  return DefineClass(env, "MountSession",
                     {InstanceMethod<&MountSessionWrap::Start>("start"),
                      InstanceMethod<&MountSessionWrap::Stop>("stop"),
                      InstanceMethod<&MountSessionWrap::Complete>("complete"),
                      InstanceMethod<&MountSessionWrap::Fail>("fail"),
                      InstanceMethod<&MountSessionWrap::Stats>("stats")});
}

MountSessionWrap::MountSessionWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MountSessionWrap>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) ThrowInvalid(env, "MountSession expects an options object");
  if (!info[1].IsFunction() || !info[2].IsFunction())
    ThrowInvalid(env, "MountSession expects onMiss and onEnded functions");
  Napi::Object o = info[0].As<Napi::Object>();
  fuse::MountOptions options;
  options.archive_path = StringOption(o, "archive", "", true);
  // archiveReader: the caller's ArchiveReader of the same file, whose
  // mapping the session then serves from.
  std::shared_ptr<const core::ArchiveView> archive;
  Napi::Value reader = o.Get("archiveReader");
  if (!reader.IsUndefined()) archive = ArchiveReaderWrap::SharedViewOf(env, reader, "archiveReader");
  options.mountpoint = StringOption(o, "mountpoint", "", true);
  options.threads = static_cast<unsigned>(NumberOption(o, "threads", 4, 1, 256));
  options.clone_fd = BoolOption(o, "cloneFd", true);
  options.allow_other = BoolOption(o, "allowOther", true);
  options.fsname = StringOption(o, "fsname", options.fsname, false);
  options.subtype = StringOption(o, "subtype", options.subtype, false);
  options.debug = BoolOption(o, "debug", false);
  options.read_ahead_kb = static_cast<unsigned>(NumberOption(o, "readAheadKb", options.read_ahead_kb, 0, 1 << 20));
  options.fs.cache_dir = StringOption(o, "cacheDir", "", false);
  options.fs.passthrough_min_bytes =
      static_cast<uint64_t>(NumberOption(o, "passthroughMinBytes", static_cast<double>(options.fs.passthrough_min_bytes), 0, 9007199254740991.0));
  options.fs.deadline = std::chrono::milliseconds(static_cast<int64_t>(NumberOption(o, "deadlineMs", 30000, 1, 86400e3)));
  options.fs.entry_timeout = NumberOption(o, "entryTimeout", options.fs.entry_timeout, 0, 1e9);
  for (const std::string* s : {&options.fsname, &options.subtype}) {
    if (s->empty() || s->find_first_of(",=\\ ") != std::string::npos)
      ThrowInvalid(env, "MountSession: fsname and subtype must be non-empty, without commas, '=', spaces");
  }
  try {
    session_ = std::make_unique<fuse::MountSession>(std::move(options), this, std::move(archive));
  } catch (const core::CoreError& e) {
    throw MakeError(env, core::ErrorCodeName(e.code()), e.what());
  }
  on_miss_ = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "clip-native mount miss", 0, 1);
  on_ended_ = Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(), "clip-native mount ended", 0, 1);
  // Unreferenced until start(): a session that never mounts must not keep
  // the process alive.
  on_miss_.Unref(env);
  on_ended_.Unref(env);
  callbacks_live_ = true;
}

MountSessionWrap::~MountSessionWrap() {
  // Collected while mounted (the owner dropped it): unmount now, on the JS
  // thread; the session's threads are joined before the callbacks go.
  session_.reset();
  if (callbacks_live_) {
    on_miss_.Abort();
    on_ended_.Abort();
  }
}

void MountSessionWrap::ReleaseCallbacks() {
  if (!callbacks_live_) return;
  callbacks_live_ = false;
  on_miss_.Release();
  on_ended_.Release();
}

bool MountSessionWrap::Submit(const fuse::MissRequest& miss) noexcept {
  try {
    const napi_status status = on_miss_.NonBlockingCall([miss](Napi::Env env, Napi::Function fn) {
      fn.Call({Napi::Number::New(env, static_cast<double>(miss.id)), Napi::Number::New(env, miss.layer),
               Napi::Number::New(env, static_cast<double>(miss.offset)), Napi::Number::New(env, miss.length)});
    });
    return status == napi_ok;
  } catch (...) {
    return false;  // bad_alloc of the queued call
  }
}

void MountSessionWrap::SessionEnded() noexcept {
  try {
    on_ended_.NonBlockingCall([](Napi::Env, Napi::Function fn) { fn.Call({}); });
  } catch (...) {
  }
}

Napi::Value MountSessionWrap::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (started_) throw MakeError(env, "EBUSY", "this MountSession was already started");
  if (!callbacks_live_) throw MakeError(env, "EINVAL", "this MountSession was stopped");
  started_ = true;
  // Mounted, the session keeps the process alive until stop().
  on_miss_.Ref(env);
  on_ended_.Ref(env);
  auto* worker = new StartWorker(env, this, info.This().As<Napi::Object>());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value MountSessionWrap::Stop(const Napi::CallbackInfo& info) {
  auto* worker = new StopWorker(info.Env(), this, info.This().As<Napi::Object>());
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

Napi::Value MountSessionWrap::Complete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsBuffer()) ThrowInvalid(env, "complete(id, buffer)");
  const auto id = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
  auto buffer = info[1].As<Napi::Buffer<uint8_t>>();
  return Napi::Boolean::New(env, session_->Complete(id, buffer.Data(), buffer.Length()));
}

Napi::Value MountSessionWrap::Fail(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) ThrowInvalid(env, "fail(id, errno)");
  const auto id = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
  const int error = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : EIO;
  return Napi::Boolean::New(env, session_->Fail(id, error));
}

Napi::Value MountSessionWrap::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const fuse::SessionStatsSnapshot s = session_->Stats();
  Napi::Object o = Napi::Object::New(env);
  auto set = [&](const char* key, uint64_t v) { o.Set(key, Napi::Number::New(env, static_cast<double>(v))); };
  set("lookups", s.lookups);
  set("negativeLookups", s.negative_lookups);
  set("getattrs", s.getattrs);
  set("readdirs", s.readdirs);
  set("opens", s.opens);
  set("reads", s.reads);
  set("readBytes", s.read_bytes);
  set("cachedReads", s.cached_reads);
  set("cachedBytes", s.cached_bytes);
  set("misses", s.misses);
  set("missBytes", s.miss_bytes);
  set("missCompleted", s.miss_completed);
  set("missFailed", s.miss_failed);
  set("missTimeouts", s.miss_timeouts);
  set("lateAnswers", s.late_answers);
  set("pending", s.pending);
  set("layersOpen", s.layers_open);
  set("passthroughOpens", s.passthrough_opens);
  set("backingCopies", s.backing_copies);
  set("errors", s.errors);
  set("erofs", s.erofs);
  o.Set("running", Napi::Boolean::New(env, session_->running()));
  return o;
}

}  // namespace clip::binding
