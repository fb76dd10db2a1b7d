"""Live control: the one registry of parameters, and (later) MIDI, OSC, presets, autopilot."""
