"""Real-time sound in and out, on miniaudio: the threads and callbacks that must never stall.

- player.py: the loop player (crossfades, bar grid, limiter, device loss and recovery) and
  the list of outputs;
- capture.py: the room's sound in (an input device or a file played as one) and the list
  of inputs;
- recorder.py: what is heard, to disk, without blocking the audio callback.

The signal code they use lives in immersions/audio/.
"""
