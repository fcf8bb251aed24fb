#pragma once
// libfuse 3.14 is what Debian 12 ships; the low-level API of that version is all mcvfs uses.
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
