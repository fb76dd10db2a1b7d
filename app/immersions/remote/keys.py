"""CURVE keys for remote dreaming: who may dream on the server, and encryption of the link.

`immersions keys generate DIR --name NAME` makes (with `zmq.auth.create_certificates`):

    DIR/server.key                  the server's public key
    DIR/server.key_secret           the server's secret key (0600): it never leaves the server
    DIR/authorized/NAME.key         the public keys of the clients the server accepts
    DIR/clients/NAME/client.key     the client's pair and the server's public key:
    DIR/clients/NAME/client.key_secret   copy this folder to the performing laptop
    DIR/clients/NAME/server.key

The server pair is made once and kept; every further `generate --name OTHER` adds one
client. `immersions serve --keys DIR` accepts exactly the keys in DIR/authorized (delete a
file there and restart the server to revoke a laptop); `immersions perform --keys FOLDER`
takes a client folder (or DIR itself when it holds one client only).

Without keys nothing is encrypted, so plain links are allowed on the loopback interface
only, and the server needs `--insecure` even there.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

SERVER = "server"
CLIENT = "client"
AUTHORIZED = "authorized"
CLIENTS = "clients"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ADDRESS = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.*-]+):(\d{1,5}|\*)$")


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes
    authorized: Path  # folder of accepted client public keys


@dataclass(frozen=True)
class ClientKeys:
    public: bytes
    secret: bytes
    server_public: bytes


# -- addresses ----------------------------------------------------------------------------------

def parse_address(address: str) -> tuple[str, str]:
    """tcp://HOST:PORT -> (host, port); anything else is a one-line error."""
    m = _ADDRESS.match(address or "")
    if m is None:
        raise ImmersionsError(f"'{address}' is not an address like tcp://HOST:PORT (e.g. tcp://192.168.1.20:5555)")
    return m.group(1).strip("[]"), m.group(2)


def is_loopback(address: str) -> bool:
    host, _ = parse_address(address)
    return host in ("localhost", "::1") or re.match(r"^127\.\d+\.\d+\.\d+$", host) is not None


# -- making keys ----------------------------------------------------------------------------------

def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _secret_file(path: Path) -> None:
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def generate_keys(folder: str | os.PathLike, name: str = "performer") -> dict[str, Path]:
    """The server pair (once) and a client pair `name`, authorized; the paths made."""
    if not _NAME.match(name):
        raise ImmersionsError(f"client name '{name}': use letters, digits, '.', '_' or '-' (at most 64)")
    root = Path(folder)
    client_dir = root / CLIENTS / name
    if client_dir.exists():
        raise ImmersionsError(f"keys for client '{name}' exist in {client_dir}; choose another --name or delete it")
    _private_dir(root)
    made: dict[str, Path] = {}
    server_public, server_secret = root / f"{SERVER}.key", root / f"{SERVER}.key_secret"
    if not server_secret.exists():
        zmq.auth.create_certificates(root, SERVER)
        _secret_file(server_secret)
        made["server_secret"] = server_secret
    elif not server_public.exists():
        raise ImmersionsError(f"{server_secret} exists without {server_public.name}; restore it or start a new folder")
    made["server_public"] = server_public
    _private_dir(root / AUTHORIZED)
    _private_dir(root / CLIENTS)
    _private_dir(client_dir)
    public, secret = (Path(p) for p in zmq.auth.create_certificates(client_dir, CLIENT))
    _secret_file(secret)
    shutil.copyfile(public, root / AUTHORIZED / f"{name}.key")
    shutil.copyfile(server_public, client_dir / f"{SERVER}.key")
    made.update(client_folder=client_dir, client_secret=secret, authorized=root / AUTHORIZED / f"{name}.key")
    log.info("made keys for client '%s' in %s", name, client_dir)
    return made


# -- loading keys ---------------------------------------------------------------------------------

def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise ImmersionsError(f"missing key file {path}; make keys with `immersions keys generate DIR`")
    if secret and os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 it", path)
    try:
        public, private = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as err:
        raise ImmersionsError(f"cannot read key file {path} ({err})") from None
    if public is None or (secret and private is None):
        raise ImmersionsError(f"{path} holds no {'secret' if secret else 'public'} key")
    return public, private


def load_server_keys(folder: str | os.PathLike) -> ServerKeys:
    root = Path(folder)
    public, secret = _load(root / f"{SERVER}.key_secret", secret=True)
    authorized = root / AUTHORIZED
    if not authorized.is_dir():
        raise ImmersionsError(f"no {authorized} folder: make client keys with `immersions keys generate {root}`")
    if not any(authorized.glob("*.key")):
        log.warning("no client keys in %s: every client will be refused", authorized)
    return ServerKeys(public, secret, authorized)


def load_client_keys(folder: str | os.PathLike) -> ClientKeys:
    """A client folder (client.key_secret, server.key), or a keys folder holding one client."""
    root = Path(folder)
    if not (root / f"{CLIENT}.key_secret").exists() and (root / CLIENTS).is_dir():
        names = sorted(p.name for p in (root / CLIENTS).iterdir() if (p / f"{CLIENT}.key_secret").exists())
        if len(names) != 1:
            raise ImmersionsError(f"{root} holds keys for {len(names)} clients ({', '.join(names) or 'none'}): "
                                  f"pass --keys {root / CLIENTS}/NAME")
        root = root / CLIENTS / names[0]
    public, secret = _load(root / f"{CLIENT}.key_secret", secret=True)
    server_public, _ = _load(root / f"{SERVER}.key", secret=False)
    return ClientKeys(public, secret, server_public)


# -- applying keys to sockets -------------------------------------------------------------------

def start_authenticator(context: zmq.Context, keys: ServerKeys) -> ThreadAuthenticator:
    """The ZAP handler: accept CURVE clients whose public key is in keys.authorized."""
    auth = ThreadAuthenticator(context, log=logging.getLogger(__name__ + ".auth"))
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized))
    return auth


def secure_server(socket: zmq.Socket, keys: ServerKeys) -> None:
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True


def secure_client(socket: zmq.Socket, keys: ClientKeys) -> None:
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = keys.server_public
