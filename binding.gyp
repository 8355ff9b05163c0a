# The clip-native addon. Core sources are listed by directory so a new
# core/*.cc file is built without editing this file. CLIP_SANITIZE=1 in the
# environment builds with AddressSanitizer + UndefinedBehaviorSanitizer
# (run node with LD_PRELOAD of libasan to load it; see scripts/test.sh).
{
  "variables": {
    "clip_sanitize%": "<!(node -p \"process.env.CLIP_SANITIZE === '1' ? 1 : 0\")"
  },
  "targets": [
    {
      "target_name": "clip_native",
      "sources": [
        "<!@(node -p \"require('fs').readdirSync('native/core').filter(f => f.endsWith('.cc')).map(f => 'native/core/' + f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('native/binding').filter(f => f.endsWith('.cc')).map(f => 'native/binding/' + f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('native/fuse').filter(f => f.endsWith('.cc')).map(f => 'native/fuse/' + f).join(' ')\")"
      ],
      "defines": [
        "NAPI_VERSION=9",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_CPP_EXCEPTIONS_ALL",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "_FILE_OFFSET_BITS=64"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++14"],
      "cflags_cc": ["-isystem", "<!(node -p \"require('path').resolve(require('node-addon-api').include_dir)\")", "-std=c++20", "-fexceptions", "-Wall", "-Wextra", "-Wshadow", "-fvisibility=hidden", "-O2", "-g", "<!@(pkg-config --cflags fuse3)"],
      # No -lcrypto: node exports its own OpenSSL (and zlib), and those
      # symbols already win over a library's in the process's lookup order.
      # Linking the system libcrypto only loaded a second, unused copy: 1.4
      # MiB of a mount's RSS. native/Makefile's builds, which have no node,
      # link it.
      "libraries": ["-lisal", "-lz", "-lpthread", "<!@(pkg-config --libs fuse3)"],
      "conditions": [
        ["clip_sanitize==1", {
          "cflags_cc": ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1"],
          "ldflags": ["-fsanitize=address,undefined"]
        }]
      ]
    }
  ]
}
