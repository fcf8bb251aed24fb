// A stand-in for libnvidia-ml.so.1 with the six entry points mcvfs calls, so the dlopen/dlsym/@convention(c)
// path runs in unit tests on machines without an NVIDIA GPU. Behaviour is fixed at compile time by FAKE_MODE:
//   1: eight H100s (9.0) and one A100 (8.0), in the order 9.0 x4, 8.0, 9.0 x4
//   2: nvmlInit_v2 fails with NVML_ERROR_DRIVER_NOT_LOADED (9)
//   3: two devices; device 1 fails with NVML_ERROR_GPU_IS_LOST (15), device 0 is 8.9 (L4)
// Real NVML types: nvmlReturn_t is a C enum, nvmlDevice_t an opaque pointer.
#include <stdint.h>
#include <stddef.h>

typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;
static struct nvmlDevice_st { int index; } devices[9];
static int initialized;

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case 9: return "Driver Not Loaded";
    case 15: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlInit_v2(void) {
#if FAKE_MODE == 2
    return 9;
#else
    initialized++;
    return 0;
#endif
}

nvmlReturn_t nvmlShutdown(void) {
    if (initialized == 0) return 1;  // NVML_ERROR_UNINITIALIZED
    initialized--;
    return 0;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialized) return 1;
#if FAKE_MODE == 1
    *count = 9;
#else
    *count = 2;
#endif
    return 0;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!initialized || index >= 9) return 2;  // NVML_ERROR_INVALID_ARGUMENT
    devices[index].index = (int)index;
    *device = &devices[index];
    return 0;
}

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
    if (!initialized || device == NULL) return 2;
#if FAKE_MODE == 1
    *major = device->index == 4 ? 8 : 9;
    *minor = 0;
#else
    if (device->index == 1) return 15;
    *major = 8;
    *minor = 9;
#endif
    return 0;
}
