// The per-frame values: the only data the CPU sends each frame, as one uniform-buffer write.
// Twin: FRAME_FIELDS in app/immersions/visual/renderer.py (same order, all vec4).
layout(std140) uniform Frame {
    vec4 u_view;      // camera center x, y (layout units); pixels per unit * cos, * sin of the rotation
    vec4 u_viewport;  // width, height (pixels), 1 / width, 1 / height
    vec4 u_clock;     // playhead in activation frames (0..64), seconds since start, 0, 0
    vec4 u_node;      // brightness, sprite diameter of a quiet neuron (pixels), base glow, 0
    vec4 u_edge;      // brightness, cull level (below it a line is skipped), 0, 0
    vec4 u_halo;      // strength, reach (pixels), size of the halo buffer relative to the view, outline width (field units)
    vec4 u_bloom;     // intensity, scatter (radius, 0..1), threshold, knee
    vec4 u_grade;     // exposure, glow on (bloom or halo), bloom on, halo on (each 0 / 1)
};
