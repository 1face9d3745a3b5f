"""Several worker processes on one port, each with a listening socket of its own.

uvicorn's supervisor hands every worker the same listening socket. On Linux the worker whose
event loop wakes first then accepts every connection waiting in the queue, so a client that
opens its pool of connections at once (boto3, the AWS SDKs, a load balancer) lands on one
worker while the other idles: measured with 32 connections opened together, one worker at 99%
CPU and the other at 0% in one run of two, and ``--workers 2`` gave anywhere from 0.7x to 1.5x
one worker.

Here each worker gets a socket of its own, all bound to the same address with SO_REUSEPORT,
and the kernel spreads new connections over the listening sockets by a hash of their
addresses (how nginx's ``reuseport`` works). The parent keeps every socket open: a worker that
dies and is replaced gets its own socket back, and connections that arrived for it meanwhile
wait in its accept queue rather than being refused. Where SO_REUSEPORT is missing, all workers
share one socket as before.
"""

from __future__ import annotations

import logging
import socket
import sys

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

log = logging.getLogger("uvicorn.error")


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets bound to ``host:port`` with SO_REUSEPORT (the first one picks the
    port when ``port`` is 0); exits like uvicorn when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family=family)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.set_inheritable(True)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        log.error("%s", exc)
        sys.exit(STARTUP_FAILURE)
    return sockets


class PerWorkerSockets(Multiprocess):
    """uvicorn's supervisor, with worker ``i`` always serving ``sockets[i]``."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        if len(sockets) != config.workers:
            raise ValueError("one socket per worker")
        super().__init__(config, sockets)

    def _spawn(self, index: int) -> Process:
        process = Process(self.config, [self.sockets[index]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._spawn(i) for i in range(self.processes_num)]

    def restart_all(self) -> None:
        """As uvicorn's: each replacement is ready before the worker it replaces retires."""
        for index, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._spawn(index)
            timeout = self.config.timeout_worker_healthcheck
            if not new.wait_until_ready(timeout, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error(
                        "New child process [%s] was not ready in time; keeping worker [%s] "
                        "and aborting the restart.",
                        new.pid,
                        old.pid,
                    )
                return
            old.terminate()
            old.join()
            self.processes[index] = new

    def keep_subprocess_alive(self) -> None:
        """As uvicorn's: a hung worker is killed, a dead one replaced on its own socket, and a
        worker that never started stops everything (it would fail the same way again)."""
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                log.error("Child process [%s] failed to start, stopping the parent process.",
                          process.pid)  # fmt: skip
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.info("Child process [%s] died", process.pid)
            self.processes[index] = self._spawn(index)
