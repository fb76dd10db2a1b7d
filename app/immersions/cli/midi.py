"""`immersions midi ports | monitor | record | check`: list ports, watch or record a
controller, validate a map. The controller itself lives in control/midi.py."""

from __future__ import annotations

import argparse

from immersions.control.midi import MidiMap, MidiPorts, match_port, monitor, port_names, record, shipped_maps
from immersions.errors import ImmersionsError


def cmd_midi_ports(args) -> int:
    # a backend that cannot start is an error (exit 2), not an empty list: a script that
    # checks for a controller must be able to tell "none plugged in" from "cannot look"
    inputs, outputs = port_names(MidiPorts.from_mido(args.backend))
    if not inputs and not outputs:
        print("no MIDI ports")
        return 0
    maps = [m for m in (_try_map(n) for n in shipped_maps()) if m is not None and m.port]
    for name in inputs:
        fits = [m.path.stem for m in maps if match_port(m.port, [name])]
        print(f"in   {name}" + (f"   (map: {', '.join(fits)})" if fits else ""))
    for name in outputs:
        print(f"out  {name}")
    return 0


def _try_map(name: str) -> MidiMap | None:
    try:
        return MidiMap.named(name)
    except ImmersionsError:
        return None


def cmd_midi_monitor(args) -> int:
    midi_map = MidiMap.named(args.map) if args.map else None  # None: the map made for the port, as perform
    try:
        monitor(MidiPorts.from_mido(args.backend), midi_map, args.port, args.seconds)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_midi_record(args) -> int:
    midi_map = MidiMap.named(args.map) if args.map else None
    record(MidiPorts.from_mido(args.backend), args.out, args.port, args.seconds, midi_map=midi_map)
    return 0


def cmd_midi_check(args) -> int:
    midi_map = MidiMap.named(args.map)
    params = sum(b.parameter is not None for b in midi_map.controls)
    print(f"{midi_map.path}: '{midi_map.name}' for ports matching '{midi_map.port}', channel {midi_map.channel}: "
          f"{params} parameters, {len(midi_map.controls) - params} actions"
          + (f", program change -> {midi_map.program_change}" if midi_map.program_change else ""))
    return 0


def add_midi_parser(subparsers) -> argparse.ArgumentParser:
    """`immersions midi ports | monitor | record | check`."""
    p = subparsers.add_parser("midi", help="MIDI controllers: list ports, watch or record a controller, check a map")
    sub = p.add_subparsers(dest="midi_command", required=True, metavar="SUBCOMMAND")
    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument("--backend", help="mido backend, e.g. mido.backends.rtmidi/UNIX_JACK "
                                           "(default: $MIDO_BACKEND or rtmidi)")
    q = sub.add_parser("ports", parents=[backend], help="list MIDI inputs and outputs")
    q.set_defaults(func=cmd_midi_ports)
    q = sub.add_parser("monitor", parents=[backend], help="print what a controller sends, decoded against a map")
    q.add_argument("--port", help="input name or part of it (default: the one the map is for, else the first "
                                  "a shipped map is made for, else the first)")
    q.add_argument("--map", help="map file or shipped map name (default, as for perform: the shipped map made for "
                                 "the port, else generic8)")
    q.add_argument("--seconds", type=float, help="stop after this many seconds (default: Ctrl-C)")
    q.set_defaults(func=cmd_midi_monitor)
    q = sub.add_parser("record", parents=[backend], help="record a controller to a MIDI file (automation)")
    q.add_argument("out", help="MIDI file to write (.mid)")
    q.add_argument("--port", help="input name or part of it (default: the first a shipped map is made for, "
                                  "else the first)")
    q.add_argument("--map", help="the map the take is replayed through, written into it (default, as for perform: "
                                 "the shipped map made for the port, else generic8)")
    q.add_argument("--seconds", type=float, help="stop after this many seconds (default: Ctrl-C)")
    q.set_defaults(func=cmd_midi_record)
    q = sub.add_parser("check", help="validate a MIDI map file")
    q.add_argument("map", help="map file or shipped map name")
    q.set_defaults(func=cmd_midi_check)
    return p
