"""The watchdog: keeps an installation alive for weeks without a technician.

Two halves that share one small file:

- the child (the installation: `immersions install --child`, or any program) writes a
  heartbeat about every 0.5 s with `Heartbeat.beat(...)`: a JSON object, replaced
  atomically (written beside it, then renamed), holding its pid, the time, frames drawn,
  a hash and the brightness of a downsampled picture (`picture_summary`), whether it should
  be playing now (inside opening hours), and its audio callbacks and heard clip;
- the supervisor (`Watchdog`) starts the child in a process group of its own and reads
  the heartbeat ten times a second. It restarts the child when it
  * exits, for any reason (an exit code, a crash, SIGKILL);
  * hangs: no new heartbeat for `hang_after` s (the child is killed with SIGKILL at once,
    a stopped or deadlocked process cannot be asked to leave);
  * shows a frozen picture (the same hash for `frozen_after` s while new loops were heard:
    a still scene over a still sound is art, a still picture over moving music is a fault)
    or a black one (nothing lit for `black_after` s), or its audio stops (callbacks stand
    still for `silent_after` s), while it should be playing (the child is asked to stop with
    SIGTERM, then killed);
  * never beats at all within `startup_grace` s of starting.
  A first failure is restarted at once; while each new child fails again within
  `stable_after` s of its start, the next start waits 1, 2, 4 ... up to `max_backoff` s,
  and it keeps trying for ever.
  A configuration error is not restarted: before any child has beaten, a child that exits
  with status 2 (a configuration error: `immersions` exits so after its one-line error,
  argparse after a usage error), or a first start that exits the same way twice. The
  watchdog then stops, logs why in one line and writes it into the heartbeat file (its
  `error`, beside `stopped: true`, where a technician or a health check reads the status),
  and `run()` returns 2. A child that cannot start may say why first: a beat with an
  `error` (one line), which is not a sign of life. Once a child has played, every failure
  is a crash and is restarted (a sound card unplugged at a restart comes back).
  Every restart is logged with its reason to `watchdog.log` in the log folder (rotated, 5 x
  1 MB). SIGTERM or SIGINT to the supervisor stops the child (SIGTERM, then SIGKILL if it
  has not left after `shutdown_wait` s) and ends it cleanly.

Run it around anything: `python -m immersions.install.watchdog --heartbeat HB -- CMD ...`.
This module imports nothing heavy, so the supervisor stays small and starts at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import logging.handlers
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from immersions.errors import ImmersionsError

log = logging.getLogger(__name__)

HEARTBEAT_ENV = "IMMERSIONS_HEARTBEAT"  # the supervisor tells its child where to beat
BEAT_INTERVAL = 0.5
BLACK_PEAK = 10  # a picture whose brightest pixel is at most this (of 255) shows nothing
CONFIGURATION_ERROR = 2  # a child's exit status that says its settings are wrong: no restart can help
LOG_BYTES, LOG_FILES = 1_000_000, 5


# -- the child's half ------------------------------------------------------------------------------

def picture_summary(image: np.ndarray, grid: tuple[int, int] = (32, 18), stride: int = 4) -> dict:
    """Hash, mean brightness and brightest value of an [h, w, 3] uint8 picture, read from
    every `stride`-th pixel each way (a moving map changes thousands of pixels; 1080p costs
    a few ms). The hash is taken over the block sums of a grid: any change of a pixel read
    changes it."""
    image = np.asarray(image)[::stride, ::stride]
    h, w = image.shape[:2]
    gw, gh = min(grid[0], w), min(grid[1], h)
    crop = image[: h - h % gh, : w - w % gw].astype(np.uint32, copy=False)
    blocks = crop.reshape(gh, crop.shape[0] // gh, gw, crop.shape[1] // gw, -1).sum(axis=(1, 3))
    return {"picture": hashlib.blake2b(blocks.tobytes(), digest_size=8).hexdigest(),
            "brightness": round(float(image.mean()), 3) if image.size else 0.0,
            "peak": int(image.max()) if image.size else 0}


class Heartbeat:
    """Writes the heartbeat file: `due()` says when a beat is wanted, `beat(**fields)` writes
    one (atomically) with the pid and the time added."""

    def __init__(self, path: str | os.PathLike, interval: float = BEAT_INTERVAL):
        self.path = Path(path)
        self.interval = float(interval)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._last = -math.inf
        self.beats = 0

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) - self._last >= self.interval

    def beat(self, **fields) -> None:
        self._last = time.monotonic()
        doc = {"pid": os.getpid(), "time": time.time(), "beat": self.beats, **fields}
        self._tmp.write_text(json.dumps(doc))
        os.replace(self._tmp, self.path)  # readers see the old beat or the new one, never half
        self.beats += 1

    def close(self) -> None:
        self._tmp.unlink(missing_ok=True)


def read_heartbeat(path: str | os.PathLike) -> dict | None:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# -- the supervisor ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Restart:
    """One restart, as logged."""

    at: float  # time.time() when the failure was seen
    pid: int
    reason: str
    ran: float  # seconds the child had run
    delay: float  # seconds waited before the next start (the back-off)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class Watchdog:
    """Supervises one child command; see the module docstring. `run()` blocks until `stop()`
    (or SIGTERM / SIGINT when run on the main thread, or `seconds` if given) and returns 0, or
    2 after a configuration error (`error` says it in one line).

    restart_within: the promise, in seconds: a hang must be noticed before it (`hang_after`
    is checked against it), and a child asked to leave gets half of it before SIGKILL.
    The child's own start-up comes on top (the installation plays its saved loop within
    about a second of starting)."""

    def __init__(self, command: list[str], heartbeat_path: str | os.PathLike, restart_within: float = 5.0,
                 hang_after: float = 2.5, frozen_after: float | None = 30.0, black_after: float | None = 20.0,
                 silent_after: float | None = 10.0, startup_grace: float = 120.0, stable_after: float = 60.0,
                 backoff_start: float = 1.0, max_backoff: float = 60.0, shutdown_wait: float = 10.0,
                 log_dir: str | os.PathLike | None = None, poll: float = 0.1, env: dict | None = None,
                 seconds: float | None = None):
        if not command:
            raise ImmersionsError("the watchdog needs a command to supervise")
        if not 0.5 <= hang_after < restart_within:
            raise ImmersionsError(f"hang_after {hang_after} s must be at least 0.5 s and below restart_within "
                                  f"({restart_within} s), or a hang is not restarted in time")
        for name, value in (("frozen_after", frozen_after), ("black_after", black_after),
                            ("silent_after", silent_after)):
            if value is not None and value <= BEAT_INTERVAL:
                raise ImmersionsError(f"{name} {value} s: choose more than one heartbeat ({BEAT_INTERVAL} s), or none")
        self.command = [str(c) for c in command]
        self.heartbeat_path = Path(heartbeat_path)
        self.restart_within, self.hang_after = float(restart_within), float(hang_after)
        self.frozen_after, self.black_after, self.silent_after = frozen_after, black_after, silent_after
        self.startup_grace, self.stable_after = float(startup_grace), float(stable_after)
        self.backoff_start, self.max_backoff = float(backoff_start), float(max_backoff)
        self.shutdown_wait, self.poll = float(shutdown_wait), float(poll)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.env = {**os.environ, **(env or {}), HEARTBEAT_ENV: str(self.heartbeat_path)}
        if seconds is not None and seconds <= 0:
            raise ImmersionsError("--seconds must be positive")
        self.seconds = seconds
        self.restarts: list[Restart] = []
        self.starts = 0
        self.child: subprocess.Popen | None = None
        self.played = False  # a child has beaten: the configuration works, every failure from now is a crash
        self.error: str | None = None  # why it stopped without restarting: a configuration error
        self._stop = threading.Event()
        self._quick = 0  # failures in a row, each within stable_after of its child's start
        self._exit: int | None = None  # how the last child ended by itself (None: it was ended)
        self._said: str | None = None  # the one line the last child wrote into its heartbeat before it exited
        self._first_failure: str | None = None  # how the last start failed, before any child played

    # -- control ----------------------------------------------------------------------------------

    def stop(self, *_signal) -> None:
        """Stop supervising: the child is terminated and `run()` returns (any thread, signal-safe)."""
        self._stop.set()

    def run(self) -> int:
        handler = self._open_log()
        old = self._install_signals()
        timer = None
        if self.seconds is not None:
            timer = threading.Timer(self.seconds, self.stop)
            timer.daemon = True
            timer.start()
        log.info("watchdog %d supervising: %s", os.getpid(), " ".join(self.command))
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                self._exit = self._said = None
                try:
                    self._start_child()
                except OSError as err:  # e.g. the program is on a disk that is not mounted yet
                    pid, reason, ran = 0, f"could not start ({err})", 0.0
                else:
                    reason = self._watch(started)
                    if reason is None:
                        break
                    pid, ran = self.child.pid, time.monotonic() - started
                    self._end_child(hard=reason.startswith(("hung", "no heartbeat")))
                    error = self._configuration_error(reason)
                    if error is not None:
                        self._give_up(f"child {pid} {error}; not restarted: correct the setting and start again")
                        break
                delay = self._backoff(ran)
                self.restarts.append(Restart(time.time(), pid, reason, ran, delay))
                log.warning("restart %d: child %d %s after %.1f s; starting again in %.1f s", len(self.restarts),
                            pid, reason, ran, delay)
                if self._stop.wait(delay):
                    break
        finally:
            if timer is not None:
                timer.cancel()
            self._end_child(hard=False, wait=self.shutdown_wait)
            log.info("watchdog stopped after %d restarts", len(self.restarts))
            self._restore_signals(old)
            if handler is not None:
                log.removeHandler(handler)
                handler.close()
        return CONFIGURATION_ERROR if self.error is not None else 0

    def _configuration_error(self, reason: str) -> str | None:
        """Why this failure is a configuration error, not a crash (None: a crash, to restart).
        Only before any child has played: an exit with status 2, or the same exit twice."""
        if self.played or self._exit is None or self._exit <= 0:
            self._first_failure = None  # killed by a signal, hung, ended: a crash
            return None
        said = f": {self._said}" if self._said else ""
        if self._exit == CONFIGURATION_ERROR:
            return f"{reason} before it played, a configuration error{said}"
        if reason == self._first_failure:
            return f"{reason} at its first two starts, before it played{said}"
        self._first_failure = reason
        return None

    def _give_up(self, why: str) -> None:
        """Stop for good: one line in the log, and in the heartbeat file for whoever reads the status."""
        self.error = why
        log.error("watchdog stopped: %s", why)
        try:
            Heartbeat(self.heartbeat_path).beat(stopped=True, error=why, exit_code=self._exit, starts=self.starts)
        except OSError as err:
            log.warning("cannot write the reason into %s: %s", self.heartbeat_path, err)

    # -- the child ----------------------------------------------------------------------------------

    def _start_child(self) -> None:
        self.heartbeat_path.unlink(missing_ok=True)  # a stale beat must not vouch for the new child
        self.child = None
        self.child = subprocess.Popen(self.command, env=self.env, start_new_session=True)
        self.starts += 1
        log.info("started child %d (start %d)", self.child.pid, self.starts)

    def _watch(self, started: float) -> str | None:
        """Wait until the child must be restarted (the reason) or the watchdog stops (None)."""
        child = self.child
        last_beat = beat_time = None
        picture, picture_since, serial_then, serial = None, started, None, None
        black_since = None
        callbacks, callbacks_since = None, started
        while not self._stop.wait(self.poll):
            code = child.poll()
            if code is not None:
                self._exit = code
                beat = read_heartbeat(self.heartbeat_path)
                if beat is not None and beat.get("pid") == child.pid and isinstance(beat.get("error"), str):
                    self._said = beat["error"]  # why it could not start, in its own words
                return _describe_exit(code)
            now = time.monotonic()
            beat = read_heartbeat(self.heartbeat_path)
            if beat is not None and "error" in beat:
                beat = None  # a child about to leave, saying why: not a sign of life
            if beat is not None and beat.get("pid") == child.pid and beat.get("time") != beat_time:
                self.played = True
                beat_time, last_beat = beat.get("time"), now
                playing = bool(beat.get("should_play", True))
                serial = beat.get("audio_serial")
                if beat.get("picture") is None or beat.get("picture") != picture or not playing:
                    picture, picture_since, serial_then = beat.get("picture"), now, serial
                peak = beat.get("peak")
                if playing and peak is not None and peak <= BLACK_PEAK:
                    black_since = now if black_since is None else black_since
                else:
                    black_since = None
                if beat.get("audio_callbacks") is None or beat.get("audio_callbacks") != callbacks or not playing:
                    callbacks, callbacks_since = beat.get("audio_callbacks"), now
            if last_beat is None:
                if now - started > self.startup_grace:
                    return f"no heartbeat {self.startup_grace:.0f} s after start"
                continue
            if now - last_beat > self.hang_after:
                return f"hung (no heartbeat for {now - last_beat:.1f} s)"
            music_moved = serial is None or serial != serial_then
            if (self.frozen_after is not None and picture is not None and music_moved
                    and now - picture_since > self.frozen_after):
                return f"frozen picture (unchanged for {now - picture_since:.0f} s while the music moved on)"
            if self.black_after is not None and black_since is not None and now - black_since > self.black_after:
                return f"black picture (nothing lit for {now - black_since:.0f} s)"
            if self.silent_after is not None and callbacks is not None and now - callbacks_since > self.silent_after:
                return f"audio stopped (no audio callbacks for {now - callbacks_since:.0f} s)"
        return None

    def _signal_child(self, sig: int) -> None:
        try:
            os.killpg(self.child.pid, sig)  # its own process group: whatever it started goes too
        except (ProcessLookupError, PermissionError):
            pass

    def _end_child(self, hard: bool, wait: float | None = None) -> None:
        """Make sure the child is gone: SIGKILL at once (hard), or SIGTERM, wait, then SIGKILL."""
        child = self.child
        if child is None:
            return
        if child.poll() is None:
            if hard:
                self._signal_child(signal.SIGKILL)
            else:
                self._signal_child(signal.SIGTERM)
                self._signal_child(signal.SIGCONT)  # a stopped child must run to see the SIGTERM
                try:
                    child.wait(wait if wait is not None else self.restart_within / 2)
                except subprocess.TimeoutExpired:
                    log.warning("child %d did not leave on SIGTERM; killing it", child.pid)
                    self._signal_child(signal.SIGKILL)
        try:
            child.wait(5.0)
        except subprocess.TimeoutExpired:
            log.error("child %d survives SIGKILL (uninterruptible?); starting a new one anyway", child.pid)
        self._signal_child(signal.SIGKILL)  # leftovers of its process group

    def _backoff(self, ran: float) -> float:
        """0 for a first failure; then 1, 2, 4 ... s (up to max_backoff) while each new child
        fails within stable_after of its start."""
        self._quick = self._quick + 1 if ran < self.stable_after else 1
        if self._quick <= 1:
            return 0.0
        return min(self.max_backoff, self.backoff_start * 2.0 ** (self._quick - 2))

    # -- plumbing -----------------------------------------------------------------------------------

    def _open_log(self) -> logging.Handler | None:
        if self.log_dir is None:
            return None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(self.log_dir / "watchdog.log", maxBytes=LOG_BYTES,
                                                       backupCount=LOG_FILES, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(logging.INFO)
        log.addHandler(handler)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)
        return handler

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def _restore_signals(old: dict) -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """`python -m immersions.install.watchdog [options] -- COMMAND ...`: supervise any program
    that writes heartbeats to the path in $IMMERSIONS_HEARTBEAT."""
    parser = argparse.ArgumentParser(prog="python -m immersions.install.watchdog", description=main.__doc__)
    parser.add_argument("--heartbeat", required=True, help="heartbeat file the child writes")
    parser.add_argument("--log-dir", help="folder for watchdog.log (rotated)")
    parser.add_argument("--hang-after", type=float, default=2.5)
    parser.add_argument("--frozen-after", type=float, default=30.0)
    parser.add_argument("--black-after", type=float, default=20.0)
    parser.add_argument("--silent-after", type=float, default=10.0)
    parser.add_argument("--startup-grace", type=float, default=120.0)
    parser.add_argument("--stable-after", type=float, default=60.0)
    parser.add_argument("--backoff-start", type=float, default=1.0)
    parser.add_argument("--max-backoff", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, help="stop after this long (default: until stopped)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to supervise")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return Watchdog(command, args.heartbeat, hang_after=args.hang_after, frozen_after=args.frozen_after,
                        black_after=args.black_after, silent_after=args.silent_after,
                        startup_grace=args.startup_grace, stable_after=args.stable_after,
                        backoff_start=args.backoff_start, max_backoff=args.max_backoff, log_dir=args.log_dir,
                        seconds=args.seconds).run()
    except ImmersionsError as err:
        print(f"watchdog: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
