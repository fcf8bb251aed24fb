#pragma once
// libfuse 3.14 is what Debian 12 ships; the low-level API of that version is all mcvfs uses.
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <stdlib.h>

// fuse_session_loop_mt is a macro over versioned symbols, and fuse_file_info has bitfields:
// these wrappers give Swift plain functions for both.
static inline int mcvfs_session_loop_mt(struct fuse_session *se, unsigned int max_threads) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) return -1;
    fuse_loop_cfg_set_max_threads(config, max_threads);
    fuse_loop_cfg_set_clone_fd(config, 0);
    int rc = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    return rc;
}

static inline void mcvfs_file_info_set_cache(struct fuse_file_info *fi, int keep_cache, int direct_io) {
    fi->keep_cache = keep_cache ? 1 : 0;
    fi->direct_io = direct_io ? 1 : 0;
}

static inline void mcvfs_file_info_set_cache_readdir(struct fuse_file_info *fi) {
    fi->cache_readdir = 1;
}
