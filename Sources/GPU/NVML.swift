#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The few NVML entry points mcvfs needs, resolved with `dlopen` so one binary runs on hosts with or without the
/// NVIDIA driver (docs/gpu-targets.md). This file is the only place that touches NVML's C types and pointers.
enum NVML {
    /// What enumerating NVIDIA devices produced: one compute capability per device NVML could read, in index order.
    struct Enumeration: Equatable {
        var capabilities: [(major: Int32, minor: Int32)] = []
        var problems: [GPUError] = []

        static func == (lhs: Enumeration, rhs: Enumeration) -> Bool {
            lhs.capabilities.map { [$0.major, $0.minor] } == rhs.capabilities.map { [$0.major, $0.minor] }
                && lhs.problems == rhs.problems
        }
    }

    // nvmlReturn_t is a 4-byte C enum; nvmlDevice_t is an opaque struct pointer.
    private typealias InitFunction = @convention(c) () -> Int32
    private typealias GetCountFunction = @convention(c) (UnsafeMutablePointer<UInt32>) -> Int32
    private typealias GetHandleFunction = @convention(c) (UInt32, UnsafeMutablePointer<OpaquePointer?>) -> Int32
    private typealias GetCapabilityFunction =
        @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Int32
    private typealias ShutdownFunction = @convention(c) () -> Int32
    private typealias ErrorStringFunction = @convention(c) (Int32) -> UnsafePointer<CChar>?

    /// Loads `library`, reads every device's CUDA compute capability, and shuts NVML down again.
    ///
    /// A library that is not installed means "no NVIDIA GPU" and yields an empty, problem-free result. Every other
    /// failure becomes a problem value; a device that fails is skipped and the others are still reported.
    static func enumerate(library: String) -> Enumeration {
        _ = dlerror()  // clear any stale message so the one read below belongs to this dlopen
        guard let handle = dlopen(library, RTLD_NOW) else {
            let reason = dlerror().map { String(cString: $0) } ?? "dlopen failed"
            // glibc: "<name>: cannot open shared object file: No such file or directory".
            if reason.contains("No such file or directory") { return Enumeration() }
            return Enumeration(problems: [.nvmlLoadFailed(library: library, reason: reason)])
        }
        defer { dlclose(handle) }
        do {
            return try Session(handle: handle, library: library).enumerate()
        } catch {
            return Enumeration(problems: [error])
        }
    }

    private struct Session {
        let library: String
        let initialize: InitFunction
        let getCount: GetCountFunction
        let getHandle: GetHandleFunction
        let getCapability: GetCapabilityFunction
        let shutdown: ShutdownFunction
        let errorString: ErrorStringFunction?

        init(handle: UnsafeMutableRawPointer, library: String) throws(GPUError) {
            func symbol<F>(_ name: String, as type: F.Type) throws(GPUError) -> F {
                guard let address = dlsym(handle, name) else {
                    throw .nvmlSymbolMissing(library: library, symbol: name)
                }
                return unsafeBitCast(address, to: type)
            }
            self.library = library
            initialize = try symbol("nvmlInit_v2", as: InitFunction.self)
            getCount = try symbol("nvmlDeviceGetCount_v2", as: GetCountFunction.self)
            getHandle = try symbol("nvmlDeviceGetHandleByIndex_v2", as: GetHandleFunction.self)
            getCapability = try symbol("nvmlDeviceGetCudaComputeCapability", as: GetCapabilityFunction.self)
            shutdown = try symbol("nvmlShutdown", as: ShutdownFunction.self)
            // Only used to word messages; a missing one is no reason to fail.
            errorString = dlsym(handle, "nvmlErrorString").map { unsafeBitCast($0, to: ErrorStringFunction.self) }
        }

        /// Converts an `nvmlReturn_t` into a thrown `GPUError`, worded by NVML itself when it can.
        func check(_ code: Int32, _ function: String) throws(GPUError) {
            guard code != 0 else { return }  // NVML_SUCCESS
            let message = errorString.flatMap { $0(code) }.map { String(cString: $0) } ?? "NVML error"
            throw .nvmlCallFailed(function: function, code: code, message: message)
        }

        func enumerate() throws(GPUError) -> Enumeration {
            try check(initialize(), "nvmlInit_v2")
            // nvmlInit/nvmlShutdown are reference counted, so this pairs with our own init only.
            defer { _ = shutdown() }
            var count: UInt32 = 0
            try check(getCount(&count), "nvmlDeviceGetCount_v2")
            var result = Enumeration()
            for index in 0..<count {
                do {
                    var device: OpaquePointer?
                    try check(getHandle(index, &device), "nvmlDeviceGetHandleByIndex_v2(\(index))")
                    var major: Int32 = 0
                    var minor: Int32 = 0
                    try check(
                        getCapability(device, &major, &minor), "nvmlDeviceGetCudaComputeCapability(\(index))")
                    result.capabilities.append((major, minor))
                } catch {
                    result.problems.append(error)
                }
            }
            return result
        }
    }
}
