#pragma once
// Thin wrappers over Linux's mount API (fsopen, fsconfig, fsmount, move_mount; 5.2+, MOVE_MOUNT_BENEATH 6.5+),
// which glibc 2.36 cannot expose next to <linux/mount.h>. Each returns what the syscall returns (-1 and errno on
// failure), so Swift converts errors at the call site.
#include <stdint.h>

// A superblock context for a filesystem type: fsopen(2).
int mcvfs_fsopen(const char *fstype);
// fsconfig(2) FSCONFIG_SET_STRING, FSCONFIG_SET_FLAG and FSCONFIG_CMD_CREATE.
int mcvfs_fsconfig_string(int context, const char *key, const char *value);
int mcvfs_fsconfig_flag(int context, const char *key);
int mcvfs_fsconfig_create(int context);
// A detached mount of the created superblock, nosuid and nodev as libfuse mounts: fsmount(2).
int mcvfs_fsmount(int context);
// Attaches the detached mount `mount_fd` at `path`; beneath != 0 puts it under the mount on top of `path`
// (move_mount(2) MOVE_MOUNT_BENEATH), so that unmounting that top mount reveals it.
int mcvfs_move_mount(int mount_fd, const char *path, int beneath);
// The ID (as /proc/self/mountinfo's first field) of the mount `fd` lies on, from cached attributes only: works
// on a FUSE mount whose daemon is gone.
int mcvfs_mount_id(int fd, uint64_t *id);
// The same for the mount the path `path` resolves to (the top mount when it is a mountpoint), without following
// a final symlink.
int mcvfs_mount_id_at(const char *path, uint64_t *id);
// umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW).
int mcvfs_detach(const char *path);
