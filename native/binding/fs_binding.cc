// See fs_binding.h. Arguments are checked here (a wrong type is a
// programming error, thrown as EINVAL); system call failures are returned
// as errno values for TypeScript to interpret.
#include "fs_binding.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <string>

#include "convert.h"
#include "errors.h"

namespace clip::binding {
namespace {

int64_t ToInt(Napi::Env env, Napi::Value value, const char* what, int64_t min, int64_t max) {
  if (!value.IsNumber()) ThrowInvalid(env, std::string(what) + " must be a number");
  const double d = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d) || d < static_cast<double>(min) || d > static_cast<double>(max)) {
    ThrowInvalid(env, std::string(what) + " is out of range");
  }
  return static_cast<int64_t>(d);
}

std::string ToPath(Napi::Env env, Napi::Value value) {
  std::string path = PathFromJs(env, value, "path");
  if (path.empty() || path.find('\0') != std::string::npos) ThrowInvalid(env, "path must be non-empty and hold no NUL");
  return path;
}

Napi::Value Result(Napi::Env env, int rc) { return Napi::Number::New(env, rc == 0 ? 0 : errno); }

}  // namespace

Napi::Value FsTryFlock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int fd = static_cast<int>(ToInt(env, info[0], "fd", 0, INT32_MAX));
  if (!info[1].IsString()) ThrowInvalid(env, "op must be 'shared', 'exclusive' or 'unlock'");
  const std::string op = info[1].As<Napi::String>().Utf8Value();
  int how;
  if (op == "shared") {
    how = LOCK_SH;
  } else if (op == "exclusive") {
    how = LOCK_EX;
  } else if (op == "unlock") {
    how = LOCK_UN;
  } else {
    ThrowInvalid(env, "op must be 'shared', 'exclusive' or 'unlock'");
  }
  int rc;
  do {
    rc = flock(fd, how | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  return Result(env, rc);
}

Napi::Value FsMknod(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = ToPath(env, info[0]);
  const auto mode = static_cast<mode_t>(ToInt(env, info[1], "mode", 0, 0177777));
  const auto major = static_cast<unsigned>(ToInt(env, info[2], "major", 0, UINT32_MAX));
  const auto minor = static_cast<unsigned>(ToInt(env, info[3], "minor", 0, UINT32_MAX));
  return Result(env, mknod(path.c_str(), mode, makedev(major, minor)));
}

Napi::Value FsLutimens(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = ToPath(env, info[0]);
  struct timespec times[2];
  times[0].tv_sec = static_cast<time_t>(ToInt(env, info[1], "atimeSec", INT64_MIN / 2, INT64_MAX / 2));
  times[0].tv_nsec = static_cast<long>(ToInt(env, info[2], "atimeNsec", 0, 999999999));
  times[1].tv_sec = static_cast<time_t>(ToInt(env, info[3], "mtimeSec", INT64_MIN / 2, INT64_MAX / 2));
  times[1].tv_nsec = static_cast<long>(ToInt(env, info[4], "mtimeNsec", 0, 999999999));
  return Result(env, utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW));
}

Napi::Value FsLsetxattr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = ToPath(env, info[0]);
  if (!info[1].IsString()) ThrowInvalid(env, "xattr name must be a string");
  const std::string name = info[1].As<Napi::String>().Utf8Value();
  if (!info[2].IsBuffer()) ThrowInvalid(env, "xattr value must be a Buffer");
  auto value = info[2].As<Napi::Buffer<uint8_t>>();
  return Result(env, lsetxattr(path.c_str(), name.c_str(), value.Data(), value.Length(), 0));
}

// decodePath(bytes: Buffer): the path string of raw bytes, in the escaped
// form of src/path-bytes.ts (a string, or its UTF-16LE when not UTF-8).
Napi::Value DecodePath(const Napi::CallbackInfo& info) {
  if (!info[0].IsBuffer()) ThrowInvalid(info.Env(), "decodePath(bytes: Buffer)");
  auto b = info[0].As<Napi::Buffer<char>>();
  return PathToJs(info.Env(), std::string_view(b.Data(), b.Length()));
}

void RegisterFsFunctions(Napi::Env env, Napi::Object exports) {
  exports.Set("decodePath", Napi::Function::New<DecodePath>(env, "decodePath"));
  exports.Set("fsTryFlock", Napi::Function::New<FsTryFlock>(env, "fsTryFlock"));
  exports.Set("fsMknod", Napi::Function::New<FsMknod>(env, "fsMknod"));
  exports.Set("fsLutimens", Napi::Function::New<FsLutimens>(env, "fsLutimens"));
  exports.Set("fsLsetxattr", Napi::Function::New<FsLsetxattr>(env, "fsLsetxattr"));
}

}  // namespace clip::binding
