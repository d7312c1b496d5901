"""`make demo`: the classic EDS tutorial on this machine, without Docker.

Starts eds-server (its own sqlite file in a temporary directory), two hello upstreams on
loopback (each answers with its own name, like the tutorial's containersol/hello-world) and
the real Envoy on `envoy/envoy-local.yaml`, prints the tutorial's steps as curl commands for
these ports, and on Ctrl-C (or SIGTERM) stops every process it started, by PID.

    python -m scripts.demo [--eds-port 8080] [--listener-port 10000] [--admin-port 9901]
                           [--upstream-ports 8001 8002]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from .envoy import LOCAL_BOOTSTRAP, Envoy, Upstream, start_envoy
from .processes import REPO, EdsServer, stop_all

SERVICE = "myservice"  # the bootstrap's eds_cluster_config.service_name
LOOPBACK = "127.0.0.1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--eds-port", type=int, default=8080, help="eds-server (registry API, discovery)")
    parser.add_argument("--listener-port", type=int, default=10000, help="Envoy's listener")
    parser.add_argument("--admin-port", type=int, default=9901, help="Envoy's admin interface")
    parser.add_argument("--upstream-ports", type=int, nargs=2, default=[8001, 8002], metavar="PORT")
    return parser.parse_args(argv)


def ports_in_use(ports: list[tuple[str, int]]) -> list[str]:
    busy = []
    for option, port in ports:
        with socket.socket() as sock:
            # As the servers themselves do: connections of a previous run in TIME_WAIT do not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                busy.append(f"port {port} on {LOOPBACK} is in use (choose another with --{option})")
    return busy


def host(port: int) -> dict:
    """A registry host as the tutorial writes it."""
    return {
        "ip_address": LOOPBACK,
        "port": port,
        "tags": {"az": "us-central1-a", "canary": False, "load_balancing_weight": 50},
    }


def tutorial_steps(eds: str, listener: str, upstreams: list[Upstream]) -> list[tuple[str, list[str]]]:
    """The tutorial as (what you will see, [shell commands]) for these ports."""
    service = f"{eds}/edsservice/{SERVICE}"

    def put(method: str, hosts: list[dict]) -> str:
        body = json.dumps({"hosts": hosts})
        return f"curl -s -X {method} -H 'Content-Type: application/json' -d '{body}' {service}"

    first, second = upstreams
    return [
        (f'Envoy has no endpoints for {SERVICE} yet: 503 "no healthy upstream"', [f"curl -i {listener}/"]),
        (
            f"Register {first.name} (port {first.port}) for {SERVICE}, and read it back",
            [put("POST", [host(first.port)]), f"curl -s {service}"],
        ),
        (
            f"Envoy has it within milliseconds, its poll held until the change "
            f'({LOCAL_BOOTSTRAP.relative_to(REPO)}): "{first.name}"',
            [f"curl -i {listener}/"],
        ),
        ('Empty the host list: "no healthy upstream" again', [put("PUT", []), f"curl -i {listener}/"]),
        (
            f"Register both upstreams: traffic is balanced between {first.name} and {second.name}",
            [put("PUT", [host(u.port) for u in upstreams]), f"for i in 1 2 3 4 5 6; do curl -s {listener}/; done"],
        ),
    ]


def print_guide(server: EdsServer, upstreams: list[Upstream], envoy: Envoy, workdir: Path) -> None:
    listener = f"http://{LOOPBACK}:{envoy.listener_port}"
    lines = [
        "eds-server demo: the classic EDS tutorial on this machine",
        f"  eds-server    {server.url}  (pid {server.process.pid}; Swagger UI at {server.url}/)",
        *(f"  {u.name:<13} http://{LOOPBACK}:{u.port}  (pid {u.process.pid})" for u in upstreams),
        f"  envoy         {listener}  admin http://{LOOPBACK}:{envoy.admin_port}  (pid {envoy.process.pid})",
        f"  logs and the registry's sqlite file: {workdir}",
        "",
        "Follow the tutorial from another terminal:",
    ]
    for number, (outcome, commands) in enumerate(tutorial_steps(server.url, listener, upstreams), 1):
        lines += ["", f"{number}. {outcome}", *(f"  $ {command}" for command in commands)]
    lines += [
        "",
        f"What Envoy holds: curl -s http://{LOOPBACK}:{envoy.admin_port}/clusters | grep targetCluster",
        "Press Ctrl-C to stop everything.",
    ]
    print("\n".join(lines), flush=True)


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    busy = ports_in_use(
        [("eds-port", args.eds_port), ("listener-port", args.listener_port), ("admin-port", args.admin_port)]
        + [("upstream-ports", port) for port in args.upstream_ports]
    )
    if busy:
        print("make demo: " + "; ".join(busy), file=sys.stderr)
        return 2

    # Explicitly: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="eds-demo-"))
    status = 0
    try:
        server = EdsServer(
            tmp=workdir,
            store=f"sqlite:///{workdir}/registry.db",
            host=LOOPBACK,
            port=args.eds_port,
            env={"EDS_ACCESS_LOG_POLLS": "true"},  # the tutorial shows Envoy's every poll in the log
        )
        server.start()
        upstreams = [
            Upstream(f"hello-world{number}", workdir, port).start()
            for number, port in enumerate(args.upstream_ports, 1)
        ]
        envoy = start_envoy(workdir, [server.port], listener_port=args.listener_port, admin_port=args.admin_port)
        print_guide(server, upstreams, envoy, workdir)
        children = {"eds-server": server, **{u.name: u for u in upstreams}, "envoy": envoy}
        while True:
            for name, child in children.items():
                if child.process.poll() is not None:
                    raise RuntimeError(f"{name} exited with status {child.process.returncode}; see {workdir}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as error:
        print(f"make demo: {error}", file=sys.stderr)
        status = 1
    finally:
        # A second Ctrl-C must not cut the clean-up short; stop() escalates to SIGKILL by itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("\nstopping envoy, the upstreams and eds-server ...", flush=True)
        stop_all()
        if status == 0:
            shutil.rmtree(workdir, ignore_errors=True)
        print("stopped." if status == 0 else f"stopped; logs kept in {workdir}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
