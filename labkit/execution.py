"""Executing notebooks without the ten-minute stall.

nbclient (under Jupyter Book, papermill and our scripts) talks to the kernel
through asyncio ZeroMQ sockets. Their file descriptor is *edge*-triggered: the
event loop is woken once when messages arrive, and a wake-up that is consumed
elsewhere is never repeated. After a cell with an ``ipywidgets`` Output widget
(every ``interact``), nbclient's stand-in for the widget sends ``comm_msg``
updates to the kernel on the same shell socket on which it is waiting for
the cell's ``execute_reply``. Now and then the reply then sits in the socket
unnoticed: the kernel is idle, the socket reports ``POLLIN``, and the event
loop sleeps until the poll's timeout, which nbclient sets to the *cell*
timeout (600 s in ``_config.yml``; none at all for papermill). When the timeout
fires, pyzmq polls the socket once more, finds the reply and the run goes on
as if nothing happened. That was the book test's "idle ten minutes, then
passes" (tests/test_book.py, two of three fresh-clone runs).

Seen here with ``py-spy`` and by reading the client's sockets from inside the
stalled process: shell socket ``EVENTS = POLLIN`` with one registered poll
future, loop idle in ``select``; the kernel idle, its last history entry the
``interact`` cell.

The fix on our side: every wait for a message polls in slices of at most
:data:`POLL_SLICE_S` seconds. Each new poll re-reads the socket's state, so a
missed wake-up costs at most one slice instead of the whole cell timeout,
and the overall timeout still applies. :class:`SlicedPollKernelManager` is
passed to nbclient (``kernel_manager_class=``) or papermill; nbval uses a
blocking client (plain ``zmq_poll``) and is not affected.
"""
from __future__ import annotations

import time
from pathlib import Path
from queue import Empty

from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from traitlets import Type

POLL_SLICE_S = 1.0
"""Longest single wait on a socket; a missed wake-up costs at most this."""


class SlicedPollChannel(AsyncZMQSocketChannel):
    """An asyncio ZeroMQ channel whose ``get_msg`` waits in slices of
    :data:`POLL_SLICE_S` seconds up to ``timeout`` (``None``: for ever)."""

    async def get_msg(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE_S if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await super().get_msg(timeout=min(POLL_SLICE_S, left))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


class SlicedPollKernelClient(AsyncKernelClient):
    """nbclient's kernel client, with :class:`SlicedPollChannel` for every channel it waits on."""

    shell_channel_class = Type(SlicedPollChannel)
    iopub_channel_class = Type(SlicedPollChannel)
    stdin_channel_class = Type(SlicedPollChannel)
    control_channel_class = Type(SlicedPollChannel)


class SlicedPollKernelManager(AsyncKernelManager):
    """Pass as ``kernel_manager_class`` to ``nbclient.NotebookClient`` or
    ``papermill.execute_notebook``."""

    client_class = "labkit.execution.SlicedPollKernelClient"
    client_factory = Type(klass="jupyter_client.asynchronous.AsyncKernelClient",
                          default_value=SlicedPollKernelClient)


def execute_notebook(nb, cwd, timeout: int = 600, allow_errors: bool = False, **kwargs):
    """Execute ``nb`` (an nbformat notebook, changed in place) with its working
    directory ``cwd``, widget state stored, and :class:`SlicedPollKernelManager`.
    Returns the notebook. Per-run cell metadata (execution timestamps) is dropped."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, allow_errors=allow_errors, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(cwd))}}, store_widget_state=True,
                            kernel_manager_class=SlicedPollKernelManager, **kwargs)
    client.execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    return nb
