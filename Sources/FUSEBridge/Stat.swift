import Glibc
import ImageFS

extension stat {
    init(_ attributes: Attributes) {
        self.init()
        st_ino = UInt(attributes.ino)
        st_mode = attributes.kind.typeBits | attributes.permissions
        st_nlink = UInt(attributes.links)
        st_size = Int(attributes.size)
        st_blocks = Int((attributes.size + 511) / 512)
        st_blksize = 4096
        st_uid = attributes.uid
        st_gid = attributes.gid
        st_mtim = timespec(tv_sec: Int(attributes.modified), tv_nsec: 0)
        st_ctim = st_mtim
        st_atim = st_mtim
    }
}

extension NodeKind {
    var typeBits: UInt32 {
        switch self {
        case .directory: return S_IFDIR
        case .file: return S_IFREG
        case .symlink: return S_IFLNK
        }
    }
}
