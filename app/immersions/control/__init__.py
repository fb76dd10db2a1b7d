"""Live control: how a performer (or a score) moves the registry's parameters.

- hub.py: the control hub every surface goes through (thread-safe requests, change listeners);
- midi.py: MIDI controllers and their maps (learn, feedback, soft takeover);
- osc.py: OSC in and out; presets.py: presets and journeys; automation.py: MIDI-file replay;
- link.py: Ableton Link (bpm and bar phase shared with other musicians);
- surface.py: all of them wired to one performance.

The parameters themselves are declared in immersions/registry.py; the autopilot that moves
them in a gallery is install/autopilot.py; `immersions midi ...` is cli/midi.py.
"""
