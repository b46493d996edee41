"""`monai-deploy run` (holoscan-cli 4.2.0) on a CPU-only Docker engine, for tests/test_exit_status_paths.py.

Run with the packaging venv's Python (.venv-package, which has holoscan-cli):

    .venv-package/bin/python tests/monai_deploy_run_cpu.py [--env NAME ...] [--label K=V] -- MAP -i IN -o OUT --gpus all ...

It runs holoscan-cli's own `monai-deploy run` code (holoscan_cli.__main__.main: the dependency checks, the manifest
read by `docker create`/`docker cp`, the `docker create` + `docker start --attach` and its exit-status handling)
with only what a host without a GPU cannot give replaced, each checked against the source of 4.2.0:
- runner/runner.py:229-248 refuses to run unless a `docker-buildx` plug-in file exists; `run` never calls buildx,
  so the check is answered yes (Debian's docker client has no buildx);
- common/dockerutils.py:394-412 creates the container with `runtime="nvidia"` (an engine without NVIDIA's
  runtime answers "Unknown runtime specified nvidia") and dockerutils.py:330-333 with `--ulimit memlock=-1`
  (refused without CAP_SYS_RESOURCE: "error setting rlimit type 8"): both are left out of that one call,
  every other argument (command, env, user, volumes, workdir, ipc, cap_add, stack ulimit, group_add) is kept;
- dockerutils.py:257-258 counts GPUs with `nvidia-smi -L` unless `--gpus` is given: the caller passes `--gpus all`
  (what 4.2.0 sets anyway when pkg.json asks for no GPU, dockerutils.py:265-266).
`--env NAME` adds the variable NAME, with this process's value, to the container's environment (the CLI has no
option for that); the tests use it only for the app's test hook SPINESEG_TEST_SIGNAL_AT. `--label K=V` labels the
container, so that a test can remove it: 4.2.0 ignores `--name` and leaves a failed run's container behind even
with `--rm` (its exception skips the removal, dockerutils.py:453-459).
"""
from __future__ import annotations

import os
import shutil
import sys


def main(argv: list[str]) -> None:
    extra_env, labels = [], {}
    while argv and argv[0] in ("--env", "--label"):
        if argv[0] == "--env":
            extra_env.append(argv[1])
        else:
            key, _, value = argv[1].partition("=")
            labels[key] = value
        argv = argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]

    from holoscan_cli.common import dockerutils
    from holoscan_cli.runner import runner

    real_which = shutil.which

    class _Shutil:             # runner.py's `shutil`, with the docker-buildx plug-in reported present
        def __getattr__(self, name):
            return getattr(shutil, name)

        @staticmethod
        def which(cmd, *args, **kwargs):
            if os.path.basename(str(cmd)) == "docker-buildx":
                return str(cmd)
            return real_which(cmd, *args, **kwargs)

    runner.shutil = _Shutil()

    container_cli = dockerutils.docker.container
    real_create = container_cli.create

    def create(image, *args, **kwargs):
        if kwargs.get("runtime") == "nvidia":
            del kwargs["runtime"]
        kwargs["ulimit"] = [u for u in kwargs.get("ulimit") or [] if not u.startswith("memlock=")]
        envs = dict(kwargs.get("envs") or {})
        envs.update({name: os.environ[name] for name in extra_env if name in os.environ})
        kwargs["envs"] = envs
        if labels:
            kwargs["labels"] = {**(kwargs.get("labels") or {}), **labels}
        return real_create(image, *args, **kwargs)

    container_cli.create = create

    from holoscan_cli.__main__ import main as cli_main
    sys.argv = ["monai-deploy", "run", *argv]
    cli_main()


if __name__ == "__main__":
    main(sys.argv[1:])
