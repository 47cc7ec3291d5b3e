"""GPU readiness: does this environment hold the CUDA libraries TensorFlow opens, and does a step
that asked for GPUs see them?

Two checks, the first of which needs no GPU:

* ``check_cuda_libraries`` loads with ctypes every CUDA library TensorFlow 2.21 opens at run time
  (from the ``nvidia-*`` wheels of ``tensorflow[and-cuda]``, ``site-packages/nvidia/*/lib``, or
  the system loader path), reads each one's version and compares the majors with
  ``tf.sysconfig.get_build_info()``. Only ``libcuda.so.1`` may be absent: the NVIDIA driver
  brings it on a GPU node. ``python -m components.accelerators [--json]`` prints the report and
  exits 0 (a GPU image), 1 (no CUDA libraries: a CPU image) or 2 (some missing or mismatched).
* ``require_accelerators`` is called first by a step that was given accelerators: when
  TensorFlow sees fewer GPUs than requested it raises ``AcceleratorNotFoundError`` within
  seconds, naming the likely cause, instead of letting training run for hours on the CPU.

TensorFlow is imported only inside the functions that need it.
"""

import argparse
import ctypes
import dataclasses
import glob
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

from components.image import GPU_COMPONENT_IMAGE

logger = logging.getLogger(__name__)

# The CUDA major version the library table below is written for: TensorFlow 2.21's Linux wheels
# are built with CUDA 12.5 and cuDNN 9 (tf.sysconfig.get_build_info()).
TABLE_CUDA_MAJOR = 12


@dataclass(frozen=True)
class CudaLibrary:
    """One shared library TensorFlow dlopens on a GPU, and how to read its version.

    Attributes:
        name: NVIDIA's product name, e.g. "cuBLAS".
        soname: the file name TensorFlow asks the loader for, e.g. "libcublas.so.12".
        wheel_dir: its folder under site-packages/nvidia/ in the nvidia-*-cu12 wheels.
        series: what its major version must equal: "cuda" (the CUDA version TensorFlow was
            built with), "cudnn" (the cuDNN version it was built with) or "soname" (the
            library's own series, the soname's last number: cuFFT 11 and cuSOLVER 11 ship with
            CUDA 12, NCCL is 2).
        function: the library's version function; none needs a GPU or the driver.
        call: its C signature: "int_out" (``status f(int*)``), "size_t" (``size_t f(void)``),
            "property" (``status f(libraryPropertyType, int*)``, called for MAJOR_VERSION = 0,
            MINOR_VERSION = 1, PATCH_LEVEL = 2 of library_types.h) or "major_minor"
            (``status f(unsigned*, unsigned*)``).
        scheme: how an integer version code is split (see ``decode_version``); "" when the
            function returns the parts.
    """

    name: str
    soname: str
    wheel_dir: str
    series: str
    function: str
    call: str
    scheme: str = ""


# In dependency order: loading each with RTLD_GLOBAL first lets the later ones (cuSOLVER needs
# cuBLAS, cuSPARSE and nvJitLink) resolve their dependencies by soname, as TensorFlow's own RPATH
# entries to site-packages/nvidia/*/lib do.
TENSORFLOW_CUDA_LIBRARIES: tuple[CudaLibrary, ...] = (
    CudaLibrary("CUDA runtime", "libcudart.so.12", "cuda_runtime", "cuda", "cudaRuntimeGetVersion", "int_out",
                "cudart"),
    CudaLibrary("nvJitLink", "libnvJitLink.so.12", "nvjitlink", "cuda", "nvJitLinkVersion", "major_minor"),
    CudaLibrary("cuBLASLt", "libcublasLt.so.12", "cublas", "cuda", "cublasLtGetVersion", "size_t", "cublasLt"),
    CudaLibrary("cuBLAS", "libcublas.so.12", "cublas", "cuda", "cublasGetProperty", "property"),
    CudaLibrary("cuFFT", "libcufft.so.11", "cufft", "soname", "cufftGetProperty", "property"),
    CudaLibrary("cuSPARSE", "libcusparse.so.12", "cusparse", "cuda", "cusparseGetProperty", "property"),
    CudaLibrary("cuSOLVER", "libcusolver.so.11", "cusolver", "soname", "cusolverGetProperty", "property"),
    CudaLibrary("cuDNN", "libcudnn.so.9", "cudnn", "cudnn", "cudnnGetVersion", "size_t", "cudnn"),
    CudaLibrary("NCCL", "libnccl.so.2", "nccl", "soname", "ncclGetVersion", "int_out", "nccl"),
)
# The driver API's version is the newest CUDA version the installed driver supports.
NVIDIA_DRIVER = CudaLibrary("NVIDIA driver", "libcuda.so.1", "", "cuda", "cuDriverGetVersion", "int_out", "cudart")


class AcceleratorNotFoundError(RuntimeError):
    """A step asked for GPUs that TensorFlow does not see; the message names the likely cause."""


def decode_version(code: int, scheme: str) -> tuple[int, int, int]:
    """Splits a library's integer version code into (major, minor, patch).

    Args:
        code: the integer a version function returned, >= 0.
        scheme: whose encoding, from each library's header: "cudart" (cuda_runtime_api.h:
            1000 * major + 10 * minor, no patch), "cublasLt" (cublasLt.h: major * 10000 +
            minor * 100 + patch), "cudnn" (cudnn_version.h: major * 10000 + minor * 100 + patch
            from 9.0, major * 1000 + minor * 100 + patch before) or "nccl" (nccl.h NCCL_VERSION:
            major * 10000 + minor * 100 + patch from 2.9, major * 1000 + minor * 100 + patch
            before).

    Returns:
        (major, minor, patch); patch is 0 for "cudart".

    Raises:
        ValueError: ``code`` is negative or ``scheme`` is unknown.
    """
    wide_from = {"cudart": None, "cublasLt": 0, "cudnn": 90000, "nccl": 20900}
    if scheme not in wide_from:
        raise ValueError(f"unknown version scheme {scheme!r} (known: {', '.join(wide_from)})")
    if code < 0:
        raise ValueError(f"a {scheme} version code must be >= 0, got {code}")
    if wide_from[scheme] is None:
        return code // 1000, code % 1000 // 10, 0
    if code >= wide_from[scheme]:
        return code // 10000, code // 100 % 100, code % 100
    return code // 1000, code // 100 % 10, code % 100


def major_of(version: str, field_name: str) -> int:
    """The major number of a dotted version string such as "12.5.1" or "9".

    Raises:
        ValueError: ``version`` does not start with a number; the message names ``field_name``.
    """
    head = str(version).split(".", 1)[0]
    if not head.isdigit():
        raise ValueError(f"{field_name} is not a version number: {version!r}")
    return int(head)


def read_version(lib: ctypes.CDLL, spec: CudaLibrary) -> tuple[int, ...]:
    """Calls ``spec.function`` of a loaded library and returns its version parts.

    Raises:
        AttributeError: the library does not export ``spec.function``.
        OSError: the function returned a non-zero status.
    """
    fn = getattr(lib, spec.function)
    if spec.call == "size_t":
        fn.restype = ctypes.c_size_t
        return decode_version(int(fn()), spec.scheme)
    if spec.call == "property":
        parts = [ctypes.c_int() for _ in range(3)]
        statuses = [fn(kind, ctypes.byref(part)) for kind, part in enumerate(parts)]
    else:
        parts = [ctypes.c_uint(), ctypes.c_uint()] if spec.call == "major_minor" else [ctypes.c_int()]
        statuses = [fn(*[ctypes.byref(part) for part in parts])]
    if any(statuses):
        raise OSError(f"{spec.function} returned status {statuses}")
    values = tuple(part.value for part in parts)
    return decode_version(values[0], spec.scheme) if spec.scheme else values


@dataclass(frozen=True)
class LibraryStatus:
    """What loading one library gave.

    Attributes:
        soname: the file name asked for.
        path: the file loaded (symlinks resolved), or None when it did not load.
        version: (major, minor[, patch]) as the library reports it, or None.
        error: why it did not load or its version could not be read, else None.
    """

    soname: str
    path: str | None
    version: tuple[int, ...] | None
    error: str | None = None


def nvidia_wheel_dirs(search_paths: Sequence[str]) -> list[str]:
    """The ``nvidia/*/lib`` folders of the nvidia-* wheels under the given sys.path entries."""
    return sorted(d for entry in search_paths for d in glob.glob(os.path.join(entry, "nvidia", "*", "lib")))


def _loaded_file(soname: str) -> str | None:
    """The file the loader mapped for ``soname``, from /proc/self/maps (Linux), or None."""
    with open("/proc/self/maps") as maps:
        paths = [parts[5].strip() for parts in (line.split(None, 5) for line in maps) if len(parts) == 6]
    return next((p for p in paths if os.path.basename(p).startswith(soname)), None)


def load_library(spec: CudaLibrary, lib_dirs: Sequence[str]) -> LibraryStatus:
    """Loads ``spec.soname`` from the first of ``lib_dirs`` holding it, else through the system
    loader path, with RTLD_GLOBAL (so later libraries resolve it), and reads its version.

    Args:
        spec: the library.
        lib_dirs: folders searched before the loader path (the nvidia wheels' lib folders).

    Returns:
        The status; a library that loads but whose version cannot be read has ``path`` set and
        ``error`` saying why.
    """
    candidates = [os.path.join(d, spec.soname) for d in lib_dirs if os.path.exists(os.path.join(d, spec.soname))]
    target = candidates[0] if candidates else spec.soname
    try:
        lib = ctypes.CDLL(target, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        return LibraryStatus(spec.soname, None, None, str(e))
    # Found through the loader path (LD_LIBRARY_PATH, ld.so.cache): the mapped file says which.
    path = os.path.realpath(target) if candidates else (_loaded_file(spec.soname) or spec.soname)
    try:
        return LibraryStatus(spec.soname, path, read_version(lib, spec))
    except (AttributeError, OSError) as e:
        return LibraryStatus(spec.soname, path, None, f"version unreadable: {e}")


@dataclass(frozen=True)
class CudaVerdict:
    """The judgement on a set of library statuses.

    Attributes:
        kind: "ready" (all load, majors match), "no_cuda_libraries" (none loads: a CPU image),
            "incomplete" (some do not load) or "mismatch" (a major differs from the build).
        message: one line for a person.
        missing: sonames that did not load or whose version could not be read.
        mismatched: "soname: has X, TensorFlow needs Y" for each major that differs.
    """

    kind: str
    message: str
    missing: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """0 ready, 1 no CUDA libraries, 2 incomplete or mismatched."""
        return {"ready": 0, "no_cuda_libraries": 1}.get(self.kind, 2)


def judge(statuses: Sequence[LibraryStatus], build_info: Mapping[str, object]) -> CudaVerdict:
    """Compares the loaded libraries with what TensorFlow was built against.

    Args:
        statuses: one per entry of ``TENSORFLOW_CUDA_LIBRARIES``, in the same order.
        build_info: ``tf.sysconfig.get_build_info()``: "cuda_version" (e.g. "12.5.1") and
            "cudnn_version" (e.g. "9"); both absent in a TensorFlow built without CUDA.

    Returns:
        The verdict; see ``CudaVerdict``.

    Raises:
        ValueError: ``statuses`` does not match the table, or a build version is not a number.
    """
    if [s.soname for s in statuses] != [lib.soname for lib in TENSORFLOW_CUDA_LIBRARIES]:
        raise ValueError(f"statuses must follow TENSORFLOW_CUDA_LIBRARIES, got {[s.soname for s in statuses]}")
    if not build_info.get("is_cuda_build") or "cuda_version" not in build_info:
        return CudaVerdict("mismatch", "this TensorFlow is not a CUDA build: no GPU support whatever the libraries")
    cuda_major = major_of(str(build_info["cuda_version"]), "cuda_version")
    cudnn_major = major_of(str(build_info.get("cudnn_version", "")), "cudnn_version")
    if cuda_major != TABLE_CUDA_MAJOR:
        return CudaVerdict(
            "mismatch",
            f"TensorFlow was built with CUDA {build_info['cuda_version']}; components/accelerators.py lists "
            f"the libraries of CUDA {TABLE_CUDA_MAJOR}: update TENSORFLOW_CUDA_LIBRARIES",
        )
    missing = tuple(s.soname for s in statuses if s.version is None)
    if len(missing) == len(statuses):
        return CudaVerdict(
            "no_cuda_libraries",
            f"not a GPU image: no CUDA libraries (none of {', '.join(missing)} loads)",
            missing,
        )
    expected = {"cuda": cuda_major, "cudnn": cudnn_major}
    mismatched = []
    for lib, status in zip(TENSORFLOW_CUDA_LIBRARIES, statuses):
        want = expected.get(lib.series, int(lib.soname.rsplit(".", 1)[-1]))
        if status.version is not None and status.version[0] != want:
            have = ".".join(map(str, status.version))
            mismatched.append(f"{lib.soname}: has {have}, TensorFlow needs {want}.x")
    if missing:
        return CudaVerdict("incomplete", f"incomplete CUDA libraries: {', '.join(missing)} missing or unreadable",
                           missing, tuple(mismatched))
    if mismatched:
        return CudaVerdict("mismatch", "CUDA library versions differ from the build: " + "; ".join(mismatched),
                           mismatched=tuple(mismatched))
    return CudaVerdict(
        "ready",
        f"GPU image: all {len(statuses)} CUDA libraries load and match CUDA {build_info['cuda_version']}, "
        f"cuDNN {build_info['cudnn_version']}",
    )


@dataclass(frozen=True)
class CudaReport:
    """What ``check_cuda_libraries`` found.

    Attributes:
        libraries: one status per entry of ``TENSORFLOW_CUDA_LIBRARIES``.
        driver: the status of ``libcuda.so.1`` (its version is the CUDA version the driver
            supports, e.g. (12, 4, 0)); absent on a machine without an NVIDIA driver.
        build_info: the CUDA fields of ``tf.sysconfig.get_build_info()``.
        verdict: the judgement of ``libraries`` against ``build_info``.
    """

    libraries: tuple[LibraryStatus, ...]
    driver: LibraryStatus
    build_info: dict[str, object]
    verdict: CudaVerdict

    def to_dict(self) -> dict:
        """A form ``json.dumps`` takes (its tuples become lists)."""
        return dataclasses.asdict(self)


def check_cuda_libraries(build_info: Mapping[str, object] | None = None,
                         search_paths: Sequence[str] | None = None) -> CudaReport:
    """Loads every library of ``TENSORFLOW_CUDA_LIBRARIES`` and the driver's ``libcuda.so.1``.

    Loading a library needs no GPU; this process keeps them loaded (ctypes cannot unload).

    Args:
        build_info: TensorFlow's build information; None reads ``tf.sysconfig.get_build_info()``
            (imports TensorFlow, a few seconds).
        search_paths: where to look for ``nvidia/*/lib`` folders; None uses ``sys.path``.

    Returns:
        The report, with its verdict.
    """
    if build_info is None:
        import tensorflow as tf  # deferred: importing this module must not cost a TensorFlow import

        build_info = tf.sysconfig.get_build_info()
    info = {k: build_info[k] for k in ("is_cuda_build", "cuda_version", "cudnn_version") if k in build_info}
    lib_dirs = nvidia_wheel_dirs(sys.path if search_paths is None else search_paths)
    statuses = tuple(load_library(lib, lib_dirs) for lib in TENSORFLOW_CUDA_LIBRARIES)
    driver = load_library(NVIDIA_DRIVER, [])
    return CudaReport(statuses, driver, info, judge(statuses, info))


def format_report(report: CudaReport) -> str:
    """The report as a table for a person (library, soname, version, file), then the verdict."""

    def row(name: str, status: LibraryStatus) -> str:
        version = ".".join(map(str, status.version)) if status.version else "-"
        where = status.path or f"not loaded: {status.error}"
        if status.path and status.error:
            where += f" ({status.error})"
        return f"{name:<13} {status.soname:<19} {version:<9} {where}"

    info = report.build_info
    lines = [f"TensorFlow built with CUDA {info.get('cuda_version', 'none')}, "
             f"cuDNN {info.get('cudnn_version', 'none')}"]
    lines += [row(lib.name, s) for lib, s in zip(TENSORFLOW_CUDA_LIBRARIES, report.libraries)]
    if report.driver.path is None:
        lines.append(f"{NVIDIA_DRIVER.name:<13} {NVIDIA_DRIVER.soname:<19} {'-':<9} absent (a GPU node's driver has it)")
    else:
        lines.append(row(NVIDIA_DRIVER.name, report.driver))
    advice = "" if report.verdict.kind == "ready" else f"; the GPU image is {GPU_COMPONENT_IMAGE} (make image-gpu)"
    lines.append(report.verdict.message + advice)
    return "\n".join(lines)


# Values with which NVIDIA's container runtime (NVIDIA_VISIBLE_DEVICES) or CUDA
# (CUDA_VISIBLE_DEVICES) hide every GPU from the process.
_HIDING_VALUES = ("", "-1", "none", "void")


def explain_missing_gpu(requested: int, accelerator_type: str, visible: int, report: CudaReport,
                        device_files: Sequence[str], env: Mapping[str, str | None]) -> str:
    """The message of ``AcceleratorNotFoundError``: what was asked, what is seen, the likely causes
    (most likely first) and what to do about each.

    Args:
        requested: GPUs asked for, >= 1.
        accelerator_type: the step's accelerator resource, e.g. "nvidia.com/gpu".
        visible: GPUs TensorFlow sees, < ``requested``.
        report: ``check_cuda_libraries``'s report from this container.
        device_files: the /dev/nvidia<N> device files present.
        env: CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES (None when unset).

    Returns:
        A multi-line message; its last line says how to run on the CPU instead.
    """
    causes = []
    if report.verdict.kind != "ready":
        causes.append(f"the image cannot drive a GPU: {report.verdict.message}. Run this step in the GPU "
                      f"image {GPU_COMPONENT_IMAGE} (make image-gpu; tensorflow[and-cuda] ships the libraries)")
    if report.driver.path is None:
        causes.append(f"no NVIDIA driver in the container ({NVIDIA_DRIVER.soname} does not load): the node "
                      "has no driver, or the container runtime did not mount it (NVIDIA container toolkit; "
                      "on Kubernetes the GPU operator's runtime class)")
    elif report.driver.version and report.driver.version[0] < TABLE_CUDA_MAJOR:
        have = ".".join(map(str, report.driver.version[:2]))
        # NVIDIA's CUDA compatibility guide: CUDA 12.x runs on drivers >= 525 (minor version compatibility).
        causes.append(f"the node's NVIDIA driver supports CUDA {have} only; TensorFlow needs CUDA "
                      f"{TABLE_CUDA_MAJOR}: update the driver (525 or newer)")
    hidden = [f"{k}={v!r}" for k, v in env.items() if v is not None and v.strip().lower() in _HIDING_VALUES]
    if not device_files or hidden:
        seen = "; ".join([", ".join(device_files) or "no /dev/nvidia<N> device files"] + hidden)
        causes.append(f"the device plugin gave this container no GPU ({seen}): the pod must have "
                      f"resources.limits {accelerator_type}: {requested} and run on a node that advertises "
                      f"{accelerator_type} (kubectl describe node)")
    if not causes:
        causes.append("the libraries, driver and device files are present: read TensorFlow's log above for "
                      "the cuInit or device error (e.g. a GPU in exclusive mode already in use)")
    lines = [f"asked for {requested} GPU(s) ({accelerator_type}) but TensorFlow sees {visible}; likely cause(s):"]
    lines += [f"  {i}. {cause}" for i, cause in enumerate(causes, 1)]
    lines.append("To train on the CPU instead, set accelerator_count=0.")
    return "\n".join(lines)


def require_accelerators(requested: int, accelerator_type: str) -> dict:
    """Fails fast when a step that asked for GPUs cannot use them; logs what is visible.

    Call it before any training work. It costs a TensorFlow device listing (well under a second
    once TensorFlow is imported) and, only when GPUs are missing, ``check_cuda_libraries``.

    Args:
        requested: GPUs the step was given (the pipeline's accelerator_count), >= 0; 0 means CPU
            and never fails.
        accelerator_type: the accelerator resource the step asked for, e.g. "nvidia.com/gpu";
            used in the description and the error message.

    Returns:
        {"requested": int, "accelerator_type": str, "visible_gpus": [device names],
         "visible_devices": [device names]}, e.g. visible_devices
         ["/physical_device:CPU:0", "/physical_device:GPU:0"].

    Raises:
        ValueError: ``requested`` is not an int >= 0.
        AcceleratorNotFoundError: TensorFlow sees fewer than ``requested`` GPUs; the message
            names the likely cause (an image without CUDA libraries and which ones are missing,
            no driver, or no device given to the container) and what to do.
    """
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ValueError(f"requested (accelerator_count) must be an int >= 0, got {requested!r}")
    import tensorflow as tf  # deferred: importing this module must not cost a TensorFlow import

    devices = [d.name for d in tf.config.list_physical_devices()]
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    logger.info("accelerators: requested %d %s; TensorFlow sees %s", requested, accelerator_type, devices)
    if len(gpus) < requested:
        report = check_cuda_libraries(tf.sysconfig.get_build_info())
        logger.info("CUDA libraries in this container:\n%s", format_report(report))
        env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES")}
        device_files = sorted(glob.glob("/dev/nvidia[0-9]*"))
        raise AcceleratorNotFoundError(
            explain_missing_gpu(requested, accelerator_type, len(gpus), report, device_files, env))
    return {"requested": requested, "accelerator_type": accelerator_type, "visible_gpus": gpus,
            "visible_devices": devices}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m components.accelerators [--json]``: prints the CUDA library report.

    Returns:
        The verdict's exit code: 0 a GPU image, 1 no CUDA libraries, 2 incomplete or mismatched.
    """
    parser = argparse.ArgumentParser(prog="python -m components.accelerators", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = check_cuda_libraries()
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return report.verdict.exit_code


if __name__ == "__main__":
    sys.exit(main())
