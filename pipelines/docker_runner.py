"""``run-local --runner docker``: every step in its component image, as a cluster runs it.

``kfp.local.DockerRunner`` starts one container per step from the image the pipeline was compiled
with. The containers share nothing with the host or with each other but the pipeline root (which
kfp.local bind-mounts at the same absolute path), the folders named in ``DockerOptions.mounts``
and object storage, exactly as pods on a cluster share only their artifact store and volumes.

Facts this module relies on (kfp 2.17.3, Docker 20.10):

* kfp.local mounts only the pipeline root; extra folders go through ``DockerRunner(mounts=...)``
  (``volumes=`` is refused by kfp.local, ``auto_remove`` clashes with its own argument).
* A step writes its outputs inside the pipeline root as the container's user, so that user must be
  able to write there; on a cluster the same holds for a mounted volume.
* With ``network_mode="host"`` a container reaches servers on the host's 127.0.0.1 (a GCS
  emulator, a proxy); on the default bridge network it does not.

Settings each runner ignores: the subprocess runner ignores accelerators (steps run on this
machine's devices); both local runners ignore CPU/memory requests and limits and every Kubernetes
setting (node selectors, tolerations, service accounts). What each does with a cluster profile's
settings (``run-local --profile``) is checked by ``pipelines.local.check_profile_locally``.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import Any

# The uid the component image runs as (docker/Dockerfile's APP_UID).
IMAGE_UID = 10001
DEFAULT_NETWORK = "host"


@dataclasses.dataclass(frozen=True)
class DockerOptions:
    """How each step's container is started.

    Attributes:
        image: The component image (``components.image``); the pipeline is compiled with it.
        mounts: Bind mounts ``HOST_PATH:CONTAINER_PATH`` with an optional ``:ro`` suffix (e.g. a
            data folder, or a folder registry mounted like a PersistentVolumeClaim).
        environment: Variables set in every container (e.g. ``STORAGE_EMULATOR_HOST``,
            ``GOOGLE_APPLICATION_CREDENTIALS`` pointing into a mount).
        user: ``UID[:GID]`` the containers run as; None: the image's own user (uid 10001). Any
            uid works (OpenShift assigns arbitrary ones) as long as it can write the pipeline root.
            ``run-local`` defaults to the invoking user's uid:gid when that user is not root, so
            the files the steps write stay the user's own.
        gpus: GPUs passed to every container through Docker's device requests (the NVIDIA
            container toolkit must be installed); 0: none, -1: all.
        network: Docker network mode; ``host`` lets containers reach services on the host's
            loopback.
    """

    image: str
    mounts: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    gpus: int = 0
    network: str = DEFAULT_NETWORK

    def __post_init__(self) -> None:
        from components.image import check_reference

        check_reference(self.image)
        for spec in self.mounts:
            parse_mount(spec)
        if self.user is not None:
            _parse_user(self.user)
        if self.gpus < -1:
            raise ValueError(f"gpus must be -1 (all), 0 or a count, got {self.gpus}")


def parse_mount(spec: str) -> tuple[str, str, bool]:
    """``HOST:CONTAINER[:ro]`` -> ``(absolute host path, container path, read_only)``.

    Raises:
        ValueError: not of that form, a relative container path, or a host path that does not exist.
    """
    parts = spec.split(":")
    read_only = len(parts) == 3 and parts[2] == "ro"
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")) or not all(parts[:2]):
        raise ValueError(f"mount {spec!r} must be HOST_PATH:CONTAINER_PATH or HOST_PATH:CONTAINER_PATH:ro")
    host, container = os.path.abspath(parts[0]), parts[1]
    if not container.startswith("/"):
        raise ValueError(f"mount {spec!r}: the container path {container!r} must be absolute")
    if not os.path.exists(host):
        raise ValueError(f"mount {spec!r}: the host path {host!r} does not exist")
    return host, container, read_only


def _parse_user(user: str) -> tuple[int, int | None]:
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise ValueError(f"user {user!r} must be UID or UID:GID (numbers)")
    return int(uid), int(gid) if gid else None


def _is_under(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies inside it (both absolute, compared as text)."""
    folder = folder.rstrip("/")
    return path == folder or path.startswith(folder + "/")


def is_mounted(path: str, options: DockerOptions) -> bool:
    """``path`` (absolute, in the containers) lies on one of ``options.mounts``."""
    return any(_is_under(path, parse_mount(m)[1]) for m in options.mounts)


def check_root_writable(pipeline_root: str, user: str | None, what: str = "pipeline root") -> None:
    """Fails before any container starts when the containers' user cannot write a folder (the
    pipeline root, or ``what`` names another output folder).

    Raises:
        PermissionError: names the folder, its owner and mode, the uid, and two ways to fix it.
    """
    uid, gid = _parse_user(user) if user else (IMAGE_UID, IMAGE_UID)
    st = os.stat(pipeline_root)
    mode = stat.S_IMODE(st.st_mode)
    writable = (
        uid == 0
        or (st.st_uid == uid and mode & stat.S_IWUSR and mode & stat.S_IXUSR)
        or (gid is not None and st.st_gid == gid and mode & stat.S_IWGRP and mode & stat.S_IXGRP)
        or (mode & stat.S_IWOTH and mode & stat.S_IXOTH)
    )
    if not writable:
        raise PermissionError(
            f"{what} {pipeline_root!r} (owner uid {st.st_uid}, gid {st.st_gid}, mode {mode:o}) is not writable by "
            f"uid {uid} that the step containers run as: run 'chmod a+rwx {pipeline_root}', or pass "
            f"--docker-user {st.st_uid}:{st.st_gid} to run the containers as its owner"
        )


def check_paths_visible(params: dict[str, Any], options: DockerOptions, pipeline_root: str) -> None:
    """Fails before any container starts when a local path parameter names a host folder the
    containers cannot see (neither under the pipeline root nor under a mount's container path).

    Raises:
        ValueError: names the parameter, the path, and the ``--docker-mount`` that would fix it.
    """
    visible = [pipeline_root] + [parse_mount(m)[1] for m in options.mounts]
    for name in ("data_uri", "registry_uri", "base_weights", "checkpoint_dir"):
        value = str(params.get(name) or "")
        if not value or "://" in value or (name == "base_weights" and value.lower() in ("imagenet", "none")):
            continue
        path = os.path.abspath(value) if not value.startswith("/") else value
        if not any(_is_under(path, v) for v in visible):
            raise ValueError(
                f"{name} {value!r} is a path the step containers cannot see: mount it "
                f"(--docker-mount {path}:{path}{':ro' if name in ('data_uri', 'base_weights') else ''}) or use a gs:// URI"
            )


def host_path(path: str, options: DockerOptions) -> str:
    """Where a container path lies on the host, through the longest matching mount; a path under
    no mount is returned unchanged (the pipeline root is mounted at its own path)."""
    best: tuple[str, str] | None = None
    for spec in options.mounts:
        host, container, _ = parse_mount(spec)
        prefix = container.rstrip("/")
        if _is_under(path, prefix) and (best is None or len(prefix) > len(best[1])):
            best = (host, prefix)
    return path if best is None else best[0] + path[len(best[1]):]


def check_outputs_writable(params: dict[str, Any], options: DockerOptions) -> None:
    """Fails before any container starts when a folder a step writes (``registry_uri``,
    ``checkpoint_dir``) lies on a read-only mount or on a host folder the containers' user cannot
    write; otherwise the run would train for its whole length and fail at push.

    Raises:
        ValueError: the path is on a read-only mount (named).
        PermissionError: see ``check_root_writable`` (for the host folder, or the nearest existing
            folder above it, which the first push creates).
    """
    for name in ("registry_uri", "checkpoint_dir"):
        value = str(params.get(name) or "")
        if not value or "://" in value:
            continue
        for spec in options.mounts:
            _, container, read_only = parse_mount(spec)
            if read_only and _is_under(value, container):
                raise ValueError(f"{name} {value!r} is on the read-only mount {spec!r}: steps write there; drop ':ro'")
        folder = host_path(value, options)
        while not os.path.exists(folder):
            folder = os.path.dirname(folder)
        check_root_writable(folder, options.user, what=name)


def make_runner(options: DockerOptions, extra_environment: dict[str, str], other_images: tuple[str, ...] = ()) -> Any:
    """The ``kfp.local.DockerRunner`` for ``options``; ``extra_environment`` is added to every
    container (the run's error file, for example). ``other_images``: images some steps run in
    besides ``options.image`` (a profile's GPU image of the finetune step), checked alike.

    Raises:
        ValueError: an image is not on this machine's Docker daemon (kfp.local would try to
            pull it from a registry, which can take minutes to fail).
        ConnectionError: no Docker daemon answers.
    """
    import docker
    from docker.types import DeviceRequest, Mount
    from kfp import local

    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # the Docker SDK raises several unrelated types for "no daemon"
        raise ConnectionError(f"no Docker daemon answers ({type(e).__name__}: {e}); start dockerd, or use the subprocess runner") from e
    try:
        for image in dict.fromkeys((options.image, *other_images)):
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                build = "make image-gpu" if image.endswith("-gpu") else "make image-cpu"
                raise ValueError(f"image {image!r} is not on this machine: build it with '{build}' (or docker pull it)") from None
    finally:
        client.close()
    kwargs: dict[str, Any] = {
        "network_mode": options.network,
        "environment": {**dict(options.environment), **extra_environment},
        "mounts": [Mount(target=c, source=h, type="bind", read_only=ro) for h, c, ro in map(parse_mount, options.mounts)],
    }
    if options.user is not None:
        kwargs["user"] = options.user
    if options.gpus:
        kwargs["device_requests"] = [DeviceRequest(count=options.gpus, capabilities=[["gpu"]])]
    return local.DockerRunner(**kwargs)


def options_from_args(args: Any, default_image: str) -> DockerOptions | None:
    """``DockerOptions`` from ``run-local``'s ``--runner docker`` flags; None for the subprocess
    runner. ``default_image``: the image without ``--image`` (a profile's, else the project's).

    Raises:
        ValueError: a flag that belongs to the Docker runner given with the subprocess runner, or
            a malformed ``--docker-env`` / ``--docker-mount`` / ``--docker-user``.
    """
    docker_flags = {"--docker-mount": args.docker_mount, "--docker-env": args.docker_env, "--docker-user": args.docker_user,
                    "--gpus": args.gpus}
    if args.runner != "docker":
        given = [flag for flag, value in docker_flags.items() if value]
        if given:
            raise ValueError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only with --runner docker")
        return None
    environment = []
    for item in args.docker_env or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--docker-env {item!r} must be NAME=VALUE")
        environment.append((name, value))
    user = args.docker_user
    if user is None and os.getuid() != 0:
        user = f"{os.getuid()}:{os.getgid()}"
    return DockerOptions(
        image=args.image or default_image, mounts=tuple(args.docker_mount or ()), environment=tuple(environment),
        user=user, gpus=args.gpus or 0,
    )


def add_arguments(parser: Any, default_image: str) -> None:
    """``run-local``'s runner flags; ``default_image`` is named in ``--image``'s help."""
    group = parser.add_argument_group("runner (see docs: what each runner ignores)")
    group.add_argument("--runner", choices=("subprocess", "docker"), default="subprocess",
                       help="subprocess: steps run in this Python (fastest; accelerators ignored); docker: each step in "
                            "its component image, sharing only the pipeline root and mounts, as on a cluster")
    group.add_argument("--image", metavar="REF",
                       help=f"component image for --runner docker (default: the --profile's image, else {default_image})")
    group.add_argument("--docker-mount", action="append", metavar="HOST:CONTAINER[:ro]",
                       help="bind-mount a host folder into every step container (repeatable), e.g. data or a folder registry")
    group.add_argument("--docker-env", action="append", metavar="NAME=VALUE",
                       help="set a variable in every step container (repeatable), e.g. STORAGE_EMULATOR_HOST")
    group.add_argument("--docker-user", metavar="UID[:GID]",
                       help="run the containers as this user (default: yours, or the image's uid 10001 when you are root)")
    group.add_argument("--gpus", type=int, metavar="N", help="pass N GPUs (-1: all) to every container (NVIDIA container toolkit)")
