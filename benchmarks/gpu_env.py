"""What a GPU check ran on (benchmarks/gpu_check.sh writes it to OUT/env.txt): versions and the device.

    python benchmarks/gpu_env.py cupy          the CUDA device CuPy sees
    python benchmarks/gpu_env.py fakecupy      a dry run: no device, the stand-in
"""
import importlib
import platform
import sys


def main(backend_name):
    print("python", platform.python_version())
    for name in ("numpy", "cupy", "numba", "numba_cuda", "torch", "sacrebleu"):
        try:
            module = importlib.import_module(name)
            print(name, getattr(module, "__version__", "?"))
        except Exception as error:                          # noqa: BLE001 - reported, not raised
            print(name, "not importable:", type(error).__name__, error)
    from minis2s import backend
    try:
        module = backend.use(backend_name)
    except backend.BackendError as error:
        print("device none:", error)
        return 1
    if backend_name == "cupy":
        props = module.cuda.runtime.getDeviceProperties(0)
        print("device", props["name"].decode(), f"{props['totalGlobalMem'] / 2 ** 30:.0f} GiB")
    else:
        print("device none: the fakecupy stand-in on the CPU (dry run)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "cupy"))
