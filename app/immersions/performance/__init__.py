"""The stage: the `Performance` that ties a model and its map, the dream engine, the loop
player, the controls and the renderer together on one clock (performance.py), the typed
parts it drives (protocols.py: `Engine`, `Clock`), the overlay (gui.py), the performance
window (window.py), the monitors it opens on (monitors.py) and the headless runner
(headless.py). It sits above `visual/`,
`dream/`, `devices/` and `control/`; the installation, the remote client's glue, the
benchmarks and the command line build on it."""
