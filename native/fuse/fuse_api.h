// The one place that pins the libfuse API version for native/fuse, so every
// file sees the same struct layouts and the 3.12+ loop configuration API
// (fuse_loop_cfg_*, fuse_session_loop_mt with a config).
#pragma once

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif

#include <fuse_lowlevel.h>
