"""Real-time sound in and out, on miniaudio: the threads and callbacks that must never stall.

- player.py: the loop player (the callback's body and its state: clips, crossfades, the hold
  on a shared bar, the limiter; device loss and recovery);
- grid.py: the shared bar the player holds its loop on (`BarGrid`, Ableton Link's clock);
- shell.py: the miniaudio shell the player, a cue output and capture share: backends,
  finding a device by index or name, opening a playback device, the lists of outputs and
  inputs (`immersions devices`);
- capture.py: the room's sound in (an input device or a file played as one);
- recorder.py: what is heard, to disk, without blocking the audio callback.

The signal code they use (the mixing arithmetic included: audio/mixing.py) lives in
immersions/audio/.
"""
