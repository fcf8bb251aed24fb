#pragma once
#include <archive.h>
#include <archive_entry.h>
#include <zlib.h>
#include <errno.h>

// zlib's init functions are macros Swift cannot call. windowBits 15 + 16 selects the gzip wrapper (RFC 1952):
// deflate writes a header without name or time, inflate reads exactly one member and stops at its end.
static inline int mcvfs_deflate_init_gzip(z_streamp stream, int level) {
    return deflateInit2(stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}

static inline int mcvfs_inflate_init_gzip(z_streamp stream) {
    return inflateInit2(stream, 15 + 16);
}

// archive_set_error is variadic; Swift passes a message through a fixed format.
static inline void mcvfs_archive_set_error(struct archive *archive, const char *message) {
    archive_set_error(archive, EIO, "%s", message);
}
