"""Installation mode: the instrument plays itself in a gallery, for weeks.

- autopilot.py: the autopilot that wanders through the network, the guard that moves on
  from silence, stuck or broken loops, and curated scene lists;
- loudness.py: loudness, noise and change of a loop; the rider that holds the room's level;
- hours.py: opening hours with fades;
- session.py: the per-frame session that runs all of that on a Performance;
- window.py: the installation's window (the performance window, run by a session);
- run.py: the headless runner (its long-run memory bench is bench/soak.py);
- watchdog.py: the heartbeat and the supervisor that restarts a crashed, hung, frozen or
  black installation. `immersions install` is cli/install.py.

Imports stay in the modules, so the watchdog starts without loading torch.
"""

# The installation's audio buffer: 6 periods of 40 ms, so a 200 ms stall plays through. Nobody
# plays an installation live, so latency costs little (the picture allows for it), and a deep
# buffer rides out what a 120 ms one cannot: a shader compiled or a model loaded on a busy machine.
INSTALL_BUFFER_MS = 240.0
