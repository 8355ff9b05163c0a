#include "harness.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>

namespace clip::test {

std::vector<TestCase>& Registry() {
  static std::vector<TestCase> cases;
  return cases;
}

const std::string& TempDir() {
  static std::string dir = [] {
    char tmpl[] = "/tmp/clip-core-test.XXXXXX";
    if (!::mkdtemp(tmpl)) throw Failure("mkdtemp failed");
    return std::string(tmpl);
  }();
  return dir;
}

int Shell(const std::string& command) {
  int status = std::system(command.c_str());
  if (status == -1) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Failure("cannot read " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  if (!out) throw Failure("cannot write " + path);
}

}  // namespace clip::test

int main(int argc, char** argv) {
  // argv[1]: run only cases whose name contains it.
  const char* filter = argc > 1 && argv[1][0] ? argv[1] : nullptr;
  int passed = 0, failed = 0;
  for (auto& test : clip::test::Registry()) {
    if (filter && !std::strstr(test.name, filter)) continue;
    try {
      test.body();
      ++passed;
      std::cout << "ok   " << test.name << std::endl;
    } catch (const std::exception& e) {
      ++failed;
      std::cout << "FAIL " << test.name << ": " << e.what() << std::endl;
    }
  }
  const char* keep = std::getenv("CLIP_KEEP_TMP");
  if (!(keep && std::strcmp(keep, "1") == 0)) {
    clip::test::Shell("rm -rf '" + clip::test::TempDir() + "'");
  }
  std::cout << passed << " passed, " << failed << " failed" << std::endl;
  return failed == 0 && passed > 0 ? 0 : 1;
}
