// XXH3 compiled into the including file, for this build's CPU (AVX2/AVX-512
// with HOLDFAST_NATIVE), rather than called in Debian's generic SSE2 build of
// libxxhash: 3.6x the speed on 64 KiB chunks, the same digests. For .cc files
// only: every function becomes static inline there. (GCC 12 warns falsely
// inside its own AVX-512 intrinsics, bug 105593.)
#pragma once

#define XXH_INLINE_ALL
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <xxhash.h>
#pragma GCC diagnostic pop
