#define _GNU_SOURCE
#include "mcvfs_mount.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <linux/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

// Kernel headers older than 6.5 (Debian 12 ships 6.1) lack it; the kernel decides whether it is supported.
#ifndef MOVE_MOUNT_BENEATH
#define MOVE_MOUNT_BENEATH 0x00000200
#endif
#ifndef UMOUNT_NOFOLLOW
#define UMOUNT_NOFOLLOW 0x00000008
#endif
#ifndef MNT_DETACH
#define MNT_DETACH 0x00000002
#endif

int mcvfs_fsopen(const char *fstype) {
    return (int)syscall(SYS_fsopen, fstype, FSOPEN_CLOEXEC);
}

int mcvfs_fsconfig_string(int context, const char *key, const char *value) {
    return (int)syscall(SYS_fsconfig, context, FSCONFIG_SET_STRING, key, value, 0);
}

int mcvfs_fsconfig_flag(int context, const char *key) {
    return (int)syscall(SYS_fsconfig, context, FSCONFIG_SET_FLAG, key, NULL, 0);
}

int mcvfs_fsconfig_create(int context) {
    return (int)syscall(SYS_fsconfig, context, FSCONFIG_CMD_CREATE, NULL, NULL, 0);
}

int mcvfs_fsmount(int context) {
    return (int)syscall(SYS_fsmount, context, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
}

int mcvfs_move_mount(int mount_fd, const char *path, int beneath) {
    unsigned int flags = MOVE_MOUNT_F_EMPTY_PATH | (beneath ? MOVE_MOUNT_BENEATH : 0);
    return (int)syscall(SYS_move_mount, mount_fd, "", AT_FDCWD, path, flags);
}

int mcvfs_mount_id(int fd, uint64_t *id) {
    struct statx buffer;
    int rc = (int)syscall(SYS_statx, fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_MNT_ID, &buffer);
    if (rc == 0) *id = buffer.stx_mnt_id;
    return rc;
}

int mcvfs_mount_id_at(const char *path, uint64_t *id) {
    int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = mcvfs_mount_id(fd, id);
    close(fd);
    return rc;
}

int mcvfs_detach(const char *path) {
    return (int)syscall(SYS_umount2, path, MNT_DETACH | UMOUNT_NOFOLLOW);
}
