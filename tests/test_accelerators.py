"""components/accelerators.py: version decoding, the verdict, library loading (against small fake
libraries built with the C compiler, so no CUDA is needed) and the fail-fast GPU check."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from components import accelerators as acc
from components.image import GPU_COMPONENT_IMAGE

REPO = Path(__file__).resolve().parents[1]
BUILD_INFO = {"is_cuda_build": True, "cuda_version": "12.5.1", "cudnn_version": "9"}


@pytest.mark.parametrize(
    "code, scheme, expected",
    [
        (12050, "cudart", (12, 5, 0)),  # CUDA 12.5
        (11080, "cudart", (11, 8, 0)),
        (120503, "cublasLt", (12, 5, 3)),
        (90300, "cudnn", (9, 3, 0)),  # cuDNN 9 widened the minor field
        (8902, "cudnn", (8, 9, 2)),
        (22303, "nccl", (2, 23, 3)),  # NCCL 2.9 widened the minor field
        (2804, "nccl", (2, 8, 4)),
    ],
)
def test_decode_version(code, scheme, expected):
    assert acc.decode_version(code, scheme) == expected


def test_decode_version_rejects_unknown_scheme_and_negative_code():
    with pytest.raises(ValueError, match="unknown version scheme 'cufft'"):
        acc.decode_version(11203, "cufft")
    with pytest.raises(ValueError, match="must be >= 0, got -1"):
        acc.decode_version(-1, "nccl")


def test_major_of():
    assert acc.major_of("12.5.1", "cuda_version") == 12
    assert acc.major_of("9", "cudnn_version") == 9
    with pytest.raises(ValueError, match="cudnn_version is not a version number: ''"):
        acc.major_of("", "cudnn_version")


GOOD_VERSIONS = {
    "libcudart.so.12": (12, 5, 0), "libnvJitLink.so.12": (12, 5), "libcublasLt.so.12": (12, 5, 3),
    "libcublas.so.12": (12, 5, 3), "libcufft.so.11": (11, 2, 3), "libcusparse.so.12": (12, 5, 1),
    "libcusolver.so.11": (11, 6, 3), "libcudnn.so.9": (9, 3, 0), "libnccl.so.2": (2, 23, 4),
}


def statuses(versions: dict) -> tuple:
    """One status per table entry; a soname missing from ``versions`` did not load."""
    return tuple(
        acc.LibraryStatus(lib.soname, f"/x/{lib.soname}", versions[lib.soname])
        if lib.soname in versions else acc.LibraryStatus(lib.soname, None, None, "cannot open shared object file")
        for lib in acc.TENSORFLOW_CUDA_LIBRARIES
    )


def test_judge_ready():
    verdict = acc.judge(statuses(GOOD_VERSIONS), BUILD_INFO)
    assert (verdict.kind, verdict.exit_code, verdict.missing, verdict.mismatched) == ("ready", 0, (), ())
    assert verdict.message == "GPU image: all 9 CUDA libraries load and match CUDA 12.5.1, cuDNN 9"


def test_judge_no_cuda_libraries_names_the_gpu_image():
    verdict = acc.judge(statuses({}), BUILD_INFO)
    assert (verdict.kind, verdict.exit_code, len(verdict.missing)) == ("no_cuda_libraries", 1, 9)
    assert verdict.message.startswith("not a GPU image: no CUDA libraries (none of libcudart.so.12, ")
    assert verdict.message.endswith("libnccl.so.2 loads)")


def test_judge_incomplete_lists_the_missing():
    versions = {k: v for k, v in GOOD_VERSIONS.items() if k not in ("libcudnn.so.9", "libnccl.so.2")}
    verdict = acc.judge(statuses(versions), BUILD_INFO)
    assert (verdict.kind, verdict.exit_code) == ("incomplete", 2)
    assert verdict.missing == ("libcudnn.so.9", "libnccl.so.2")
    assert verdict.message == "incomplete CUDA libraries: libcudnn.so.9, libnccl.so.2 missing or unreadable"


def test_judge_mismatched_majors():
    versions = dict(GOOD_VERSIONS, **{"libcudnn.so.9": (8, 9, 7), "libcudart.so.12": (11, 8, 0)})
    verdict = acc.judge(statuses(versions), BUILD_INFO)
    assert (verdict.kind, verdict.exit_code) == ("mismatch", 2)
    assert verdict.mismatched == ("libcudart.so.12: has 11.8.0, TensorFlow needs 12.x",
                                  "libcudnn.so.9: has 8.9.7, TensorFlow needs 9.x")


def test_judge_another_cuda_major_or_a_cpu_build():
    verdict = acc.judge(statuses(GOOD_VERSIONS), dict(BUILD_INFO, cuda_version="13.0.0"))
    assert verdict.kind == "mismatch" and "update TENSORFLOW_CUDA_LIBRARIES" in verdict.message
    verdict = acc.judge(statuses(GOOD_VERSIONS), {"is_cuda_build": False})
    assert verdict.kind == "mismatch" and "not a CUDA build" in verdict.message


def test_judge_refuses_statuses_out_of_table_order():
    with pytest.raises(ValueError, match="statuses must follow TENSORFLOW_CUDA_LIBRARIES"):
        acc.judge(statuses(GOOD_VERSIONS)[::-1], BUILD_INFO)


# Each fake library exports only the version function the check calls, returning the codes of a
# CUDA 12.5 / cuDNN 9.3 / NCCL 2.23 installation.
FAKE_SOURCES = {
    "libcudart.so.12": "int cudaRuntimeGetVersion(int *v) { *v = 12050; return 0; }",
    "libnvJitLink.so.12": "int nvJitLinkVersion(unsigned *a, unsigned *b) { *a = 12; *b = 5; return 0; }",
    "libcublasLt.so.12": "unsigned long cublasLtGetVersion(void) { return 120503; }",
    "libcudnn.so.9": "unsigned long cudnnGetVersion(void) { return {cudnn}; }",
    "libnccl.so.2": "int ncclGetVersion(int *v) { *v = 22304; return 0; }",
}
PROPERTY_SOURCE = "int {p}GetProperty(int t, int *v) {{ static const int x[3] = {{{v}}}; *v = x[t]; return 0; }}"
PROPERTIES = {"libcublas.so.12": ("cublas", "12, 5, 3"), "libcufft.so.11": ("cufft", "11, 2, 3"),
              "libcusparse.so.12": ("cusparse", "12, 5, 1"), "libcusolver.so.11": ("cusolver", "11, 6, 3")}


def build_fake_libraries(root: Path, skip: tuple = (), cudnn: int = 90300, broken: tuple = ()) -> None:
    """Fake nvidia-*-cu12 wheels under ``root``: root/nvidia/<wheel_dir>/lib/<soname>.

    ``skip`` sonames are not built; ``broken`` ones export no version function."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    for lib in acc.TENSORFLOW_CUDA_LIBRARIES:
        if lib.soname in skip:
            continue
        if lib.soname in broken:
            source = "int unrelated(void) { return 0; }"
        elif lib.soname in PROPERTIES:
            prefix, values = PROPERTIES[lib.soname]
            source = PROPERTY_SOURCE.format(p=prefix, v=values)
        else:
            source = FAKE_SOURCES[lib.soname].replace("{cudnn}", str(cudnn))
        folder = root / "nvidia" / lib.wheel_dir / "lib"
        folder.mkdir(parents=True, exist_ok=True)
        c_file = folder / f"{lib.soname}.c"
        c_file.write_text(source + "\n")
        subprocess.run([compiler, "-shared", "-fPIC", "-o", str(folder / lib.soname), str(c_file)], check=True)


def check_in_subprocess(root: Path, ld_library_path: str | None = None) -> dict:
    """Runs check_cuda_libraries in a fresh interpreter: ctypes cannot unload what it loaded, and
    the fake libraries must not stay in the test process where TensorFlow may look for CUDA.

    With ``ld_library_path``, the wheels are not searched: the loader path finds the libraries."""
    search = [] if ld_library_path else [str(root)]
    code = textwrap.dedent(f"""
        import json
        from components.accelerators import check_cuda_libraries
        report = check_cuda_libraries({BUILD_INFO!r}, {search!r})
        print(json.dumps(report.to_dict()))
    """)
    env = dict(os.environ, LD_LIBRARY_PATH=ld_library_path or "")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


needs_cc = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")),
                              reason="no C compiler (cc/gcc) on PATH to build the fake libraries")


@needs_cc
def test_check_loads_wheel_libraries_and_reads_their_versions(tmp_path):
    build_fake_libraries(tmp_path)
    report = check_in_subprocess(tmp_path)
    assert report["verdict"]["kind"] == "ready", report["verdict"]
    found = {s["soname"]: (s["path"], tuple(s["version"])) for s in report["libraries"]}
    assert found["libcudart.so.12"] == (str(tmp_path / "nvidia/cuda_runtime/lib/libcudart.so.12"), (12, 5, 0))
    assert found["libnvJitLink.so.12"][1] == (12, 5)
    assert found["libcublasLt.so.12"][1] == (12, 5, 3)
    assert found["libcusolver.so.11"][1] == (11, 6, 3)
    assert found["libcudnn.so.9"][1] == (9, 3, 0)
    assert found["libnccl.so.2"][1] == (2, 23, 4)
    assert report["driver"]["path"] is None  # no NVIDIA driver on a test machine


@needs_cc
def test_check_finds_libraries_on_the_loader_path(tmp_path):
    build_fake_libraries(tmp_path)
    lib_dirs = [str(tmp_path / "nvidia" / lib.wheel_dir / "lib") for lib in acc.TENSORFLOW_CUDA_LIBRARIES]
    report = check_in_subprocess(tmp_path, ld_library_path=":".join(dict.fromkeys(lib_dirs)))
    assert report["verdict"]["kind"] == "ready", report["verdict"]
    cudnn = next(s for s in report["libraries"] if s["soname"] == "libcudnn.so.9")
    assert cudnn["path"] == str(tmp_path / "nvidia/cudnn/lib/libcudnn.so.9")


@needs_cc
def test_check_reports_missing_unreadable_and_mismatched(tmp_path):
    build_fake_libraries(tmp_path, skip=("libnccl.so.2",), broken=("libcufft.so.11",))
    report = check_in_subprocess(tmp_path)
    assert report["verdict"]["kind"] == "incomplete"
    assert report["verdict"]["missing"] == ["libcufft.so.11", "libnccl.so.2"]
    cufft = next(s for s in report["libraries"] if s["soname"] == "libcufft.so.11")
    assert cufft["path"].endswith("nvidia/cufft/lib/libcufft.so.11")
    assert "version unreadable" in cufft["error"] and "cufftGetProperty" in cufft["error"]

    other = tmp_path / "cudnn8"
    build_fake_libraries(other, cudnn=8907)
    report = check_in_subprocess(other)
    assert report["verdict"]["mismatched"] == ["libcudnn.so.9: has 8.9.7, TensorFlow needs 9.x"]


def report_with(kind: str = "ready", driver_version: tuple | None = (12, 4, 0)) -> acc.CudaReport:
    verdict = acc.judge(statuses(GOOD_VERSIONS if kind == "ready" else {}), BUILD_INFO)
    driver = acc.LibraryStatus("libcuda.so.1", "/usr/lib/libcuda.so.1" if driver_version else None, driver_version)
    return acc.CudaReport(statuses(GOOD_VERSIONS), driver, BUILD_INFO, verdict)


def test_explain_missing_gpu_names_each_cause():
    no_env = {"CUDA_VISIBLE_DEVICES": None, "NVIDIA_VISIBLE_DEVICES": None}
    cpu_image = acc.explain_missing_gpu(1, "nvidia.com/gpu", 0, report_with("none", None), [], no_env)
    assert cpu_image.startswith("asked for 1 GPU(s) (nvidia.com/gpu) but TensorFlow sees 0; likely cause(s):\n  1. ")
    assert "not a GPU image: no CUDA libraries" in cpu_image and GPU_COMPONENT_IMAGE in cpu_image
    assert "2. no NVIDIA driver in the container (libcuda.so.1 does not load)" in cpu_image
    assert cpu_image.endswith("To train on the CPU instead, set accelerator_count=0.")

    hidden = dict(no_env, CUDA_VISIBLE_DEVICES="")
    no_device = acc.explain_missing_gpu(2, "nvidia.com/gpu", 0, report_with(), [], hidden)
    assert ("1. the device plugin gave this container no GPU (no /dev/nvidia<N> device files; "
            "CUDA_VISIBLE_DEVICES='')") in no_device
    assert "resources.limits nvidia.com/gpu: 2" in no_device and "not a GPU image" not in no_device

    old_driver = acc.explain_missing_gpu(1, "nvidia.com/gpu", 0, report_with(driver_version=(11, 4, 0)),
                                         ["/dev/nvidia0"], no_env)
    assert "1. the node's NVIDIA driver supports CUDA 11.4 only; TensorFlow needs CUDA 12" in old_driver

    unknown = acc.explain_missing_gpu(2, "nvidia.com/gpu", 1, report_with(), ["/dev/nvidia0"], no_env)
    assert "sees 1;" in unknown and "read TensorFlow's log above" in unknown


def test_require_accelerators_rejects_a_bad_count():
    with pytest.raises(ValueError, match=r"must be an int >= 0, got -1"):
        acc.require_accelerators(-1, "nvidia.com/gpu")
    with pytest.raises(ValueError, match=r"got True"):
        acc.require_accelerators(True, "nvidia.com/gpu")


@pytest.fixture(scope="module")
def tensorflow_cpu_only():
    """TensorFlow imported (timed checks measure the check, not the import); skips on a GPU host."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU: the no-GPU failure cannot be provoked here")
    return tf


def test_require_accelerators_without_gpu(tensorflow_cpu_only):
    description = acc.require_accelerators(0, "nvidia.com/gpu")
    assert description["requested"] == 0 and description["visible_gpus"] == []
    assert "/physical_device:CPU:0" in description["visible_devices"]

    start = time.monotonic()
    with pytest.raises(acc.AcceleratorNotFoundError) as raised:
        acc.require_accelerators(1, "nvidia.com/gpu")
    elapsed = time.monotonic() - start
    assert elapsed < 10, f"the no-GPU check took {elapsed:.1f} s"
    message = str(raised.value)
    assert message.startswith("asked for 1 GPU(s) (nvidia.com/gpu) but TensorFlow sees 0; likely cause(s):")
    # This test environment has plain tensorflow: the image cause comes first, naming the libraries.
    assert "1. the image cannot drive a GPU: not a GPU image: no CUDA libraries (none of libcudart.so.12" in message
    assert "libcudnn.so.9" in message and GPU_COMPONENT_IMAGE in message


def test_main_exit_code_and_json(capsys, tensorflow_cpu_only):
    assert acc.main(["--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"]["kind"] == "no_cuda_libraries"
    assert report["build_info"]["cuda_version"].startswith("12.")
    assert acc.main([]) == 1
    verdict = capsys.readouterr().out.splitlines()[-1]
    assert verdict.startswith("not a GPU image: no CUDA libraries")
    assert verdict.endswith(f"loads); the GPU image is {GPU_COMPONENT_IMAGE} (make image-gpu)")
