"""Run the notebooks under ``pytest --nbmake`` with no network, in the pytest process and in the kernel.

A notebook's code runs in a kernel, a separate process that pytest-socket does not reach (and
pytest-socket skips notebook items anyway: they have no fixtures). So, around each notebook:

- nbclient starts the kernel with the ZMQ ``ipc`` transport (Unix-domain sockets) instead
  of TCP on localhost, so no TCP socket is needed between pytest and the kernel at all;
- the pytest process blocks every socket but Unix-domain ones, as for the other tests;
- the kernel gets a fresh ``IPYTHONDIR`` whose startup file calls pytest-socket's
  ``disable_socket(allow_unix_socket=True)`` before the first cell, and the Hugging Face
  offline variables. A notebook that tries to reach the network fails with ``SocketBlockedError``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import nbmake.nb_run
import pytest
import pytest_socket
from nbclient import NotebookClient
from traitlets.config import Config

KERNEL_STARTUP = '''\
"""Written by notebooks/conftest.py: this kernel runs offline, with internet sockets blocked."""
import pytest_socket

pytest_socket.disable_socket(allow_unix_socket=True)
del pytest_socket
'''
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def ipc_client(socket_dir: str) -> type[NotebookClient]:
    """nbmake's notebook client, with the kernel on Unix-domain (``ipc``) ZMQ sockets in ``socket_dir``."""
    config = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(socket_dir, "kernel"))}})

    class IpcNotebookClient(NotebookClient):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, config=config, **kwargs)

    return IpcNotebookClient


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Around each notebook's run: ipc transport, no sockets here, an offline socket-blocking kernel."""
    if not getattr(item, "nbmake", False):
        yield
        return
    assert nbmake.nb_run.NotebookClient is NotebookClient, "nbmake no longer builds nbclient's NotebookClient"
    with tempfile.TemporaryDirectory(prefix="ipython-offline-") as ipython_dir, pytest.MonkeyPatch.context() as patch:
        startup = Path(ipython_dir, "profile_default", "startup")
        startup.mkdir(parents=True)
        (startup / "00-offline.py").write_text(KERNEL_STARTUP)
        patch.setenv("IPYTHONDIR", ipython_dir)
        for name, value in OFFLINE.items():
            patch.setenv(name, value)
        patch.setattr(nbmake.nb_run, "NotebookClient", ipc_client(ipython_dir))
        pytest_socket.disable_socket(allow_unix_socket=True)
        try:
            yield
        finally:
            pytest_socket.enable_socket()
