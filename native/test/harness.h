// A minimal test harness for the native core: no Node, no framework to
// install. TEST(name) registers a case; CHECK* throw on failure; main() runs
// every case (or those whose name contains argv[1]) and ends with the line
// "N passed, N failed" that CI reads.
#pragma once

#include <cstdint>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../core/error.h"

namespace clip::test {

struct TestCase {
  const char* name;
  std::function<void()> body;
};

std::vector<TestCase>& Registry();

struct Registrar {
  Registrar(const char* name, std::function<void()> body) { Registry().push_back({name, std::move(body)}); }
};

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void FailCheck(const char* file, int line, const std::string& what) {
  std::ostringstream s;
  s << file << ":" << line << ": " << what;
  throw Failure(s.str());
}

// Directory for files a test makes; removed at exit unless CLIP_KEEP_TMP=1.
const std::string& TempDir();
// Runs `command` with /bin/sh; returns its exit status (0 = success).
int Shell(const std::string& command);
// Reads a whole file; throws Failure if it cannot.
std::vector<uint8_t> ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::vector<uint8_t>& data);

}  // namespace clip::test

#define CLIP_CAT2(a, b) a##b
#define CLIP_CAT(a, b) CLIP_CAT2(a, b)
#define TEST(name)                                                              \
  static void name();                                                           \
  static ::clip::test::Registrar CLIP_CAT(registrar_, name)(#name, name);       \
  static void name()

#define CHECK(cond) \
  do { if (!(cond)) ::clip::test::FailCheck(__FILE__, __LINE__, "CHECK(" #cond ") failed"); } while (0)

#define CHECK_EQ(a, b)                                                                   \
  do {                                                                                   \
    auto&& clip_a_ = (a);                                                                \
    auto&& clip_b_ = (b);                                                                \
    if (!(clip_a_ == clip_b_)) {                                                         \
      std::ostringstream clip_s_;                                                        \
      clip_s_ << "CHECK_EQ(" #a ", " #b ") failed: " << clip_a_ << " != " << clip_b_;    \
      ::clip::test::FailCheck(__FILE__, __LINE__, clip_s_.str());                        \
    }                                                                                    \
  } while (0)

// Runs `expr`, which must throw CoreError with code `expected_code`.
#define CHECK_THROWS_CODE(expr, expected_code)                                               \
  do {                                                                                       \
    bool clip_threw_ = false;                                                                \
    try {                                                                                    \
      expr;                                                                                  \
    } catch (const ::clip::core::CoreError& clip_e_) {                                       \
      clip_threw_ = true;                                                                    \
      if (clip_e_.code() != (expected_code))                                                 \
        ::clip::test::FailCheck(__FILE__, __LINE__,                                          \
                                std::string("wrong error code ") +                           \
                                    ::clip::core::ErrorCodeName(clip_e_.code()) + ": " +     \
                                    clip_e_.what());                                         \
    }                                                                                        \
    if (!clip_threw_) ::clip::test::FailCheck(__FILE__, __LINE__, #expr " did not throw");   \
  } while (0)
