"""Command-line glue for remote dreaming: `immersions serve`, `immersions keys generate`, and
the engine factory behind `immersions perform --server ... --keys ...`.

The tests and `immersions bench remote` start servers as `python -m immersions serve ...`,
processes they can kill.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading

from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)


def cmd_serve(args) -> int:
    from immersions.remote.server import DreamServer, worker_devices

    server = DreamServer(args.bind, args.model, worker_devices(args.gpus), args.workers, keys=args.keys,
                         insecure=args.insecure, copies=args.copies)
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C and SIGTERM stop it cleanly, as they stop `immersions train`: handled here, not left to
        # Python's KeyboardInterrupt, which a process started with SIGINT ignored (a background job of a
        # script, as CI runs the tests) never installs: such a server went on after Ctrl-C
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: server.stop())
    try:
        server.serve_forever(args.seconds)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def cmd_keys_generate(args) -> int:
    from immersions.remote.keys import generate_keys

    made = generate_keys(args.dir, args.name)
    print(f"server keys: {made['server_public'].parent} (serve with --keys {made['server_public'].parent}; "
          f"server.key_secret never leaves that machine)")
    print(f"client '{args.name}': copy {made['client_folder']} to the performing laptop and perform with "
          f"--keys FOLDER; the server accepts it through {made['authorized']}")
    return 0


def add_remote_parsers(subparsers) -> None:
    """`serve` and `keys generate`, each with func=(args) -> int."""
    p = subparsers.add_parser("serve", help="dream for a performing laptop: a GPU server (ZeroMQ + CURVE keys)")
    p.add_argument("--bind", default="tcp://127.0.0.1:5555",
                   help="address to listen on, e.g. tcp://0.0.0.0:5555 for the network (default: this machine only)")
    p.add_argument("--gpus", help="all, cpu, or GPU indices like 0,1 (default: every GPU, else the CPU)")
    p.add_argument("--workers", type=int, default=1, help="dream engines per device (each with its own seed)")
    p.add_argument("--model", action="append", help="a model to serve, by name in models/ or folder (repeat; "
                                                   "default: the shipped model)")
    p.add_argument("--keys", help="keys folder from `immersions keys generate DIR` (required unless --insecure)")
    p.add_argument("--insecure", action="store_true", help="no keys, no encryption: only on tcp://127.0.0.1")
    p.add_argument("--copies", type=int, default=4, help="jittered copies per dream step")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser("keys", help="CURVE keys for `serve` and `perform --server`")
    actions = p.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    g = actions.add_parser("generate", help="make the server's key pair (once) and one client's, authorized")
    g.add_argument("dir", help="keys folder (kept on the server)")
    g.add_argument("--name", default="performer", help="the client's name (one per laptop)")
    g.set_defaults(func=cmd_keys_generate)


def remote_engine_factory(server: str, keys: str | None, fallback: bool):
    """An engine_factory for Performance that dreams on `server`; keys and address are checked now."""
    from immersions.remote.client import RemoteEngine
    from immersions.remote.keys import is_loopback, load_client_keys, parse_address

    parse_address(server)
    if keys is None and not is_loopback(server):
        raise ImmersionsError(f"--server {server} needs --keys FOLDER (see docs/remote.md); "
                              "unencrypted links are for 127.0.0.1 only")
    loaded = load_client_keys(keys) if keys else None
    return functools.partial(RemoteEngine, address=server, keys=loaded, fallback=fallback)
